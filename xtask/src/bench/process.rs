//! The processes the bench measures: a flowhost or ceiling child process,
//! killed when dropped, and the folder with flows and config it runs in.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serde_json::Value;

/// A folder with flows and a `flowhost.toml` for a bench run.
pub(super) struct Site {
    pub(super) dir: tempfile::TempDir,
    /// How many endpoints it has, whose URLs flowhost prints at start.
    endpoints: usize,
}

impl Site {
    pub(super) fn new(
        flows: &Path,
        hook: &str,
        flow_names: &[&str],
        extra: &str,
    ) -> anyhow::Result<Site> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("flows"))?;
        for name in flow_names {
            std::fs::copy(
                flows.join(format!("{name}.wasm")),
                dir.path().join(format!("flows/{name}.wasm")),
            )?;
        }
        let mut config = format!(
            "listen = \"127.0.0.1:0\"\nflows_dir = \"flows\"\ndata_dir = \"data\"\n{extra}\n\
             [runtime]\nmax_queued_messages = 1000000\n\
             private_outbound_hosts = [\"http://127.0.0.1:*\"]\n\
             max_queued_per_endpoint = 1000000\nmax_queued_per_session = 1000000\n\
             [delivery]\nallow_private_webhooks = true\nretry_schedule = [\"100ms\", \"1s\"]\n\
             max_concurrent_per_endpoint = 256\n"
        );
        for endpoint in ["echo", "hostile", "swap", "waiting"] {
            config.push_str(&format!(
                "[endpoints.{endpoint}]\nflow = \"{endpoint}\"\nwebhook_url = \"{hook}\"\n"
            ));
        }
        let endpoints = config.matches("[endpoints.").count();
        std::fs::write(dir.path().join("flowhost.toml"), config)?;
        Ok(Site { dir, endpoints })
    }
}

/// A child process serving HTTP, killed when dropped.
pub(super) struct Process {
    child: Child,
    pub(super) addr: String,
    urls: BTreeMap<String, String>,
}

impl Process {
    /// Starts flowhost and returns once it serves and its flows are loaded
    /// (it serves before they are: a start is measured to both).
    pub(super) fn flowhost(
        binary: &Path,
        site: &Site,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Process> {
        let mut child = Command::new(binary)
            .arg("serve")
            .current_dir(site.dir.path())
            .env("FLOWHOST_LOG", "warn,flowhost::flows::folder=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting flowhost")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let process = Process::read_start(child, site.endpoints)?;
        let mut log = BufReader::new(stderr).lines();
        loop {
            let line = log
                .next()
                .context("flowhost stopped before its flows were loaded")??;
            if line.contains("flows folder loaded") {
                break;
            }
        }
        // The rest of the log (warnings and errors) goes to the file named
        // by `BENCH_FLOWHOST_LOG`, if set, for a look at what went wrong.
        let mut keep = std::env::var_os("BENCH_FLOWHOST_LOG").and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        std::thread::spawn(move || {
            for line in log.map_while(Result::ok) {
                if let Some(file) = keep.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        Ok(process)
    }

    pub(super) fn ceiling() -> anyhow::Result<Process> {
        let child = Command::new(std::env::current_exe()?)
            .args(["bench-ceiling", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()?;
        Process::read_start(child, 0)
    }

    /// Reads the address (and the endpoints' URLs) that the process prints.
    fn read_start(mut child: Child, endpoints: usize) -> anyhow::Result<Process> {
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut urls = BTreeMap::new();
        while addr.is_none() || urls.len() < endpoints {
            let line = lines
                .next()
                .context("the process stopped before it was ready")??;
            match flowhost::StartLine::parse(&line) {
                Some(flowhost::StartLine::Listening(at)) => addr = Some(at),
                Some(flowhost::StartLine::Endpoint { name, url }) => {
                    urls.insert(name, url);
                }
                None => {}
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Process {
            child,
            addr: addr.unwrap_or_default(),
            urls,
        })
    }

    pub(super) fn url(&self, endpoint: &str) -> String {
        self.urls.get(endpoint).cloned().unwrap_or_default()
    }

    /// How long flowhost took to compile (or load) the current version of
    /// `flow`, from its admin API.
    pub(super) async fn load_ms(&self, flow: &str) -> Option<f64> {
        let (addr, _) = self.addr.split_once('/').unwrap_or((&self.addr, ""));
        let request = hyper::Request::get("/admin/flows")
            .header("host", addr)
            .header("authorization", "Bearer bench-admin-token-000")
            .body(http_body_util::Full::default())
            .ok()?;
        let response = super::client::one_shot(addr, request).await?;
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .ok()?
            .to_bytes();
        let flows: Value = serde_json::from_slice(&body).ok()?;
        flows["flows"]
            .as_array()?
            .iter()
            .find(|f| f["name"] == flow)?["loadMs"]
            .as_f64()
    }

    fn status(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(format!(
            "/proc/{}/status",
            self.child.id()
        ))?)
    }

    fn field_kib(&self, name: &str) -> anyhow::Result<f64> {
        let status = self.status()?;
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .context("no such field")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse::<f64>()?)
    }

    pub(super) fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        Ok(self.field_kib("VmHWM:")? / 1024.0)
    }

    pub(super) fn rss_mib(&self) -> anyhow::Result<f64> {
        Ok(self.field_kib("VmRSS:")? / 1024.0)
    }

    /// The memory mappings the process has now (`vm.max_map_count` bounds
    /// them).
    pub(super) fn mappings(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_to_string(self.maps_path())?.lines().count())
    }

    /// Where the process's memory mappings are listed.
    pub(super) fn maps_path(&self) -> String {
        format!("/proc/{}/maps", self.child.id())
    }

    /// User plus system CPU time so far.
    pub(super) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let after_name = stat.rsplit_once(')').context("bad stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime), counted after the name.
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
