//! `cargo xtask flow-costs <file.wasm>…`: what each flow costs a running
//! host to load and to keep loaded, measured on a real `flowhost serve`.
//!
//! For each component: a host is started on an empty flows folder; the
//! component is copied in; the host's log gives the cold load time (a
//! compile), and its memory (`/proc/<pid>/status`) before and after gives
//! what the loaded flow holds: anonymous memory (the host's own) and file
//! pages (the compile cache's code, mapped: shared and reclaimable). A
//! second host on the same folder gives the load time from the cache, and
//! the same two figures for a start after the first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `flowhost serve`, its log lines arriving on a channel.
struct Host {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Host {
    fn start(flowhost: &Path, dir: &Path) -> anyhow::Result<Host> {
        let mut child = Command::new(flowhost)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("FLOWHOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", flowhost.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Host { child, lines })
    }

    /// The first log line holding all of `parts`.
    fn wait_for(&self, parts: &[&str]) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self.lines.recv_timeout(left)?;
            if parts.iter().all(|part| line.contains(part)) {
                return Ok(line);
            }
        }
        bail!("no log line with {parts:?}")
    }

    /// Anonymous and file-backed resident memory, in KiB.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc/…/status"))
        };
        Ok((field("RssAnon:")?, field("RssFile:")?))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `took_ms=…` of a "flow loaded" line.
fn took_ms(line: &str) -> &str {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("took_ms="))
        .unwrap_or("?")
}

pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let (flowhost, files) = match args {
        [flag, path, files @ ..] if flag == "--flowhost" => (PathBuf::from(path), files),
        files => (root.join("target/release/flowhost"), files),
    };
    // The hosts run in folders of their own.
    let flowhost = std::path::absolute(&flowhost)?;
    if !flowhost.exists() {
        bail!(
            "{} is not built: `cargo build --release -p flowhost`, or give --flowhost PATH",
            flowhost.display()
        );
    }
    println!(
        "{:<20} {:>10} {:>11} {:>9} {:>12} {:>12} {:>12} {:>12}",
        "FLOW", "SIZE", "COLD LOAD", "CACHED", "OWN (COLD)", "MAPPED", "OWN (CACHED)", "MAPPED"
    );
    for file in files {
        let file = Path::new(file);
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("a component's file name")?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("flows"))?;
        let host = Host::start(&flowhost, dir.path())?;
        host.wait_for(&["flows folder loaded"])?;
        // A moment for the start's own allocations to settle.
        std::thread::sleep(Duration::from_millis(500));
        let (anon_before, file_before) = host.memory()?;
        std::fs::copy(file, dir.path().join("flows").join(format!("{name}.wasm")))?;
        let cold = host.wait_for(&["flow loaded", &format!("flow={name} ")])?;
        std::thread::sleep(Duration::from_millis(500));
        let (anon_after, file_after) = host.memory()?;
        drop(host);

        // A restart: the flow loads from the cache, and what the host
        // holds is what every start after the first holds.
        let host = Host::start(&flowhost, dir.path())?;
        let cached = host.wait_for(&["flow loaded", &format!("flow={name} ")])?;
        std::thread::sleep(Duration::from_millis(500));
        let (anon_cached, file_cached) = host.memory()?;
        drop(host);
        let mib = |after: u64, before: u64| after.saturating_sub(before) as f64 / 1024.0;
        println!(
            "{:<20} {:>7.1} MB {:>8} ms {:>6} ms {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB",
            name,
            std::fs::metadata(file)?.len() as f64 / 1e6,
            took_ms(&cold),
            took_ms(&cached),
            mib(anon_after, anon_before),
            mib(file_after, file_before),
            mib(anon_cached, anon_before),
            mib(file_cached, file_before),
        );
    }
    Ok(())
}
