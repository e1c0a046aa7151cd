//! `cargo xtask bench`: flowhost under load on this machine, against the
//! ceiling of a bare axum server measured in the same run.
//!
//! Everything runs on loopback, on the same cores: a release `flowhost`
//! process, a release ceiling process, and this process as load generator
//! and webhook receiver. Scenarios:
//!
//! - **ack**: closed loop on 64 connections, bare axum vs flowhost (10,000
//!   sessions), requests/s and p50/p99 of the answer;
//! - **end to end**: POST in to output delivered at the receiver: the
//!   throughput of a closed-loop batch, and p50/p99 of an open loop at a
//!   fixed rate; flowhost's CPU seconds per 1,000 messages and peak RSS;
//! - **one hot session**: every message in one session (run one at a time);
//! - **durable inbox off**: the same ack loop with `store.fsync = false`;
//! - **noisy neighbours**: echo's end-to-end latency, idle and beside
//!   flows that spin and hoard memory;
//! - **hostile neighbours**: the same, beside flows that attack one after
//!   another (endless loops, memory grown to 1 GiB, 50 MB strings for
//!   output, context and log) while garbage files land in the flows folder;
//! - **reload**: from a rename into the flows folder to the first message
//!   served by the new version, compiled (cold) and from the compile cache
//!   (warm); start-up with 50 flows, cold and warm; memory per loaded flow.
//!
//! The table is printed and written as JSON to `target/bench/results.json`.

mod ceiling;
mod load;
mod receiver;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use self::load::{Sessions, percentile_ms};
use self::receiver::Deliveries;

pub(crate) use self::ceiling::serve as serve_ceiling;

/// Options of a bench run.
struct Options {
    /// How long each load phase runs.
    duration: Duration,
    /// `--only <scenario>`: run just this one of the neighbour scenarios.
    only: Option<String>,
    /// `--flowhost <path>`: measure this build of flowhost (another
    /// version, kept aside) instead of the one built from this checkout.
    flowhost: Option<std::path::PathBuf>,
}

/// Runs the whole bench. Must run in a release build of xtask (the caller
/// re-executes itself in release).
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let options = Options {
        duration: if args.iter().any(|a| a == "--quick") {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        },
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|at| args.get(at + 1).cloned()),
        flowhost: args
            .iter()
            .position(|a| a == "--flowhost")
            .and_then(|at| args.get(at + 1).map(std::path::PathBuf::from)),
    };
    println!("Building flowhost (release) and the flows…");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "flowhost"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building flowhost failed");
    }
    let flowhost = match &options.flowhost {
        Some(other) => {
            println!(
                "Measuring {} instead of this checkout's build",
                other.display()
            );
            std::fs::canonicalize(other)?
        }
        None => root.join("target/release/flowhost"),
    };
    let flows = root.join("target/bench/flows");
    for workspace in ["example-flows", "host/tests/flows"] {
        flowhost::flows::build::build_crate(
            &root.join(workspace),
            &flows,
            Some(&root.join("target/flows-build")),
        )?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(scenarios(root, &flowhost, &flows, &options))?;

    let out = root.join("target/bench/results.json");
    std::fs::write(&out, serde_json::to_string_pretty(&results)? + "\n")?;
    print_table(&results);
    println!("\nWritten to {}", out.display());
    Ok(())
}

async fn scenarios(
    root: &Path,
    flowhost: &Path,
    flows: &Path,
    options: &Options,
) -> anyhow::Result<Value> {
    let epoch = Instant::now();
    let (hook, deliveries) = receiver::start(epoch).await?;
    let mut results = BTreeMap::new();
    results.insert("machine", machine(root));
    match options.only.as_deref() {
        None => {}
        Some("noisy_neighbours") => {
            let figures = noisy_neighbours(flowhost, flows, &hook, &deliveries, options, epoch);
            results.insert("noisy_neighbours", figures.await?);
            return Ok(json!(results));
        }
        Some("hostile_neighbours") => {
            let figures = hostile_neighbours(flowhost, flows, &hook, &deliveries, options, epoch);
            results.insert("hostile_neighbours", figures.await?);
            return Ok(json!(results));
        }
        Some(other) => bail!("--only takes noisy_neighbours or hostile_neighbours, not {other}"),
    }

    // The ceiling.
    let ceiling = Process::ceiling()?;
    let url = format!("http://{}/endpoint/ceiling", ceiling.addr);
    warm_up(&url, epoch).await?;
    let mut acks = ack_loop(&url, options, epoch).await?;
    let ceiling_rate = acks.accepted as f64 / acks.elapsed.as_secs_f64();
    results.insert("ack_bare_axum", ack_figures(&mut acks));
    drop(ceiling);

    // flowhost: acks, end to end, CPU and memory.
    let site = Site::new(flows, &hook, &["echo"], "")?;
    let host = Process::flowhost(flowhost, &site, &[])?;
    let echo = host.url("echo");
    warm_up(&echo, epoch).await?;
    wait_delivered(&deliveries, Duration::from_secs(30)).await;
    let before = deliveries.count();
    let cpu_before = host.cpu_seconds()?;
    let started = Instant::now();
    let mut acks = ack_loop(&echo, options, epoch).await?;
    let rate = acks.accepted as f64 / acks.elapsed.as_secs_f64();
    let mut ack = ack_figures(&mut acks);
    ack["ratio_to_bare_axum"] = json!(round(rate / ceiling_rate, 2));
    results.insert("ack_flowhost", ack);
    let mut latencies = deliveries.latencies_after(before, acks.accepted).await?;
    let took = started.elapsed();
    let cpu = host.cpu_seconds()? - cpu_before;
    results.insert(
        "end_to_end_closed_loop",
        json!({
            "messages": acks.accepted,
            "messages_per_second": round(acks.accepted as f64 / took.as_secs_f64(), 0),
            "p50_ms": round(percentile_ms(&mut latencies, 50.0), 2),
            "p99_ms": round(percentile_ms(&mut latencies, 99.0), 2),
            "cpu_seconds_per_1000_messages": round(cpu / acks.accepted as f64 * 1000.0, 3),
            "peak_rss_mib": round(host.peak_rss_mib()?, 1),
        }),
    );

    for rate in [1000, 5000] {
        let before = deliveries.count();
        let mut acks = load::open(
            &echo,
            rate,
            256,
            options.duration,
            Sessions::Distinct(10_000),
            epoch,
        )
        .await?;
        let mut latencies = deliveries.latencies_after(before, acks.accepted).await?;
        results.insert(
            if rate == 1000 {
                "end_to_end_open_loop_1000"
            } else {
                "end_to_end_open_loop_5000"
            },
            json!({
                "rate": rate,
                "accepted": acks.accepted,
                "ack_p99_ms": round(percentile_ms(&mut acks.latencies, 99.0), 2),
                "p50_ms": round(percentile_ms(&mut latencies, 50.0), 2),
                "p99_ms": round(percentile_ms(&mut latencies, 99.0), 2),
            }),
        );
    }

    let before = deliveries.count();
    let started = Instant::now();
    let acks = load::closed(&echo, 8, options.duration, Sessions::One, epoch).await?;
    deliveries.latencies_after(before, acks.accepted).await?;
    let took = started.elapsed();
    // A closed loop outruns one session (its messages run one at a time), so
    // its latency would only measure the queue: latency is measured below
    // capacity, with an open loop.
    let before_open = deliveries.count();
    let open = load::open(&echo, 500, 8, options.duration, Sessions::One, epoch).await?;
    let mut latencies = deliveries
        .latencies_after(before_open, open.accepted)
        .await?;
    results.insert(
        "one_hot_session",
        json!({
            "messages": acks.accepted,
            "messages_per_second": round(acks.accepted as f64 / took.as_secs_f64(), 0),
            "open_loop_500_p50_ms": round(percentile_ms(&mut latencies, 50.0), 2),
            "open_loop_500_p99_ms": round(percentile_ms(&mut latencies, 99.0), 2),
        }),
    );
    drop(host);

    // The durable inbox turned off: no fsync.
    let site = Site::new(flows, &hook, &["echo"], "")?;
    let host = Process::flowhost(flowhost, &site, &[("FLOWHOST_STORE__FSYNC", "false")])?;
    let echo = host.url("echo");
    warm_up(&echo, epoch).await?;
    let mut acks = ack_loop(&echo, options, epoch).await?;
    let unsynced = acks.accepted as f64 / acks.elapsed.as_secs_f64();
    let mut figures = ack_figures(&mut acks);
    figures["durable_over_not_durable"] = json!(round(rate / unsynced, 2));
    results.insert("ack_flowhost_without_fsync", figures);
    wait_delivered(&deliveries, Duration::from_secs(60)).await;
    drop(host);

    results.insert(
        "noisy_neighbours",
        noisy_neighbours(flowhost, flows, &hook, &deliveries, options, epoch).await?,
    );
    results.insert(
        "hostile_neighbours",
        hostile_neighbours(flowhost, flows, &hook, &deliveries, options, epoch).await?,
    );
    results.insert("reload", reload(flowhost, flows, &hook, &deliveries).await?);
    Ok(json!(results))
}

/// Echo's end-to-end latency (open loop, 500/s) idle, then beside a flow
/// attacked by 4 clients cycling through every attack, while 20 MB garbage
/// files and truncated components are dropped into the flows folder.
async fn hostile_neighbours(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Arc<Deliveries>,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Value> {
    let (site, host) = echo_and_hostile(flowhost, flows, hook, "1 GiB")?;
    let flows_dir = site.dir.path().join("flows");
    let echo = host.url("echo");
    let measure = || echo_latencies(&echo, deliveries, options, epoch);
    let mut idle = measure().await?;

    let attack = host.url("hostile");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers: Vec<_> = (0..4)
        .map(|n| {
            let (attack, stop) = (attack.clone(), stop.clone());
            tokio::spawn(async move {
                let attacks = ["loop", "grow", "huge-say", "huge-context", "huge-log"];
                let client = reqwest_like::Client::new();
                for text in attacks.iter().cycle().skip(n) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    client.post(&attack, &format!("attacker{n}"), text).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let echo_wasm = std::fs::read(flows.join("echo.wasm"))?;
    attackers.push({
        let stop = stop.clone();
        tokio::spawn(async move {
            let garbage: Vec<u8> = (0..20u32 << 20)
                .map(|n| (n.wrapping_mul(7919) >> 3) as u8)
                .collect();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (name, bytes) = if n.is_multiple_of(2) {
                    ("junk", &garbage[..])
                } else {
                    ("torn", &echo_wasm[..echo_wasm.len() / 2])
                };
                let _ = std::fs::write(flows_dir.join(format!("{name}-{}.wasm", n % 8)), bytes);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut loaded = measure().await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for attacker in attackers {
        attacker.await?;
    }
    let mut figures = neighbour_figures(&mut idle, &mut loaded);
    figures["peak_rss_mib"] = json!(round(host.peak_rss_mib()?, 1));
    Ok(figures)
}

/// Echo's end-to-end latency idle, then beside 4 spinning and 4
/// memory-hungry flows.
async fn noisy_neighbours(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Arc<Deliveries>,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Value> {
    let (_site, host) = echo_and_hostile(flowhost, flows, hook, "32 MiB")?;
    let echo = host.url("echo");
    let measure = || echo_latencies(&echo, deliveries, options, epoch);
    let mut idle = measure().await?;
    let attack = host.url("hostile");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..8)
        .map(|n| {
            let (attack, stop) = (attack.clone(), stop.clone());
            tokio::spawn(async move {
                let text = if n % 2 == 0 { "loop" } else { "grow" };
                let client = reqwest_like::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client.post(&attack, &format!("attacker{n}"), text).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut loaded = measure().await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for attacker in attackers {
        attacker.await?;
    }
    Ok(neighbour_figures(&mut idle, &mut loaded))
}

/// flowhost serving `echo` and `hostile`, the hostile flow with a 2 s
/// deadline and `memory`.
fn echo_and_hostile(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    memory: &str,
) -> anyhow::Result<(Site, Process)> {
    let site = Site::new(flows, hook, &["echo", "hostile"], "")?;
    std::fs::write(
        site.dir.path().join("flows/hostile.toml"),
        format!("[limits]\ndeadline = \"2s\"\nmemory = \"{memory}\"\n"),
    )?;
    let host = Process::flowhost(flowhost, &site, &[])?;
    Ok((site, host))
}

/// Echo's end-to-end latencies in an open loop at 500 messages a second,
/// for three times the bench's duration: a p99 of 7,500 messages, so that
/// one stall of the machine (they happen on shared VMs, idle or not) does
/// not decide it.
async fn echo_latencies(
    echo: &str,
    deliveries: &Arc<Deliveries>,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Vec<u32>> {
    let before = deliveries.count();
    let acks = load::open(
        echo,
        500,
        32,
        options.duration * 3,
        Sessions::Distinct(1000),
        epoch,
    )
    .await?;
    deliveries.latencies_after(before, acks.accepted).await
}

/// Echo's latencies idle and beside its neighbours, and their ratios.
fn neighbour_figures(idle: &mut [u32], loaded: &mut [u32]) -> Value {
    let (idle_p50, loaded_p50) = (percentile_ms(idle, 50.0), percentile_ms(loaded, 50.0));
    let (idle_p99, loaded_p99) = (percentile_ms(idle, 99.0), percentile_ms(loaded, 99.0));
    json!({
        "rate": 500,
        "idle_p50_ms": round(idle_p50, 2),
        "idle_p99_ms": round(idle_p99, 2),
        "beside_hostile_p50_ms": round(loaded_p50, 2),
        "beside_hostile_p99_ms": round(loaded_p99, 2),
        "p50_ratio": round(loaded_p50 / idle_p50, 2),
        "p99_ratio": round(loaded_p99 / idle_p99, 2),
    })
}

/// Rename-to-served times, cold and warm; start-up with 50 flows; memory
/// per flow.
async fn reload(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Arc<Deliveries>,
) -> anyhow::Result<Value> {
    let site = Site::new(
        flows,
        hook,
        &[],
        "admin_token = \"bench-admin-token-000\"\n",
    )?;
    std::fs::copy(
        flows.join("faulty.wasm"),
        site.dir.path().join("flows/swap.wasm"),
    )?;
    let host = Process::flowhost(flowhost, &site, &[])?;
    let url = host.url("swap");
    let client = reqwest_like::Client::new();
    let mut swaps = BTreeMap::new();
    for flow in ["echo", "order-help", "greeter"] {
        let mut times = Vec::new();
        let mut compile_ms = 0.0;
        for round_ in ["cold", "warm"] {
            let took = swap_in(&site, flows, flow, &url, &client, deliveries).await?;
            times.push(round(took.as_secs_f64() * 1000.0, 1));
            if round_ == "cold" {
                compile_ms = host.load_ms("swap").await.unwrap_or(f64::NAN);
            }
            swap_in(&site, flows, "faulty", &url, &client, deliveries).await?;
        }
        swaps.insert(
            flow,
            json!({
                "cold_ms": times[0],
                "compile_ms": round(compile_ms, 1),
                "cold_over_compile_ms": round(times[0] - compile_ms, 1),
                "warm_ms": times[1],
            }),
        );
    }
    drop(host);

    // Fifty distinct flows: echo with a custom section each, so each has its
    // own content hash and its own compile.
    let site = Site::new(flows, hook, &[], "")?;
    let echo = std::fs::read(flows.join("echo.wasm"))?;
    for n in 0..50 {
        std::fs::write(
            site.dir.path().join(format!("flows/echo-{n}.wasm")),
            with_custom_section(&echo, n),
        )?;
    }
    let started = Instant::now();
    let cold = Process::flowhost(flowhost, &site, &[])?;
    let cold_start = started.elapsed();
    let with_50 = cold.rss_mib()?;
    drop(cold);
    let started = Instant::now();
    let warm = Process::flowhost(flowhost, &site, &[])?;
    let warm_start = started.elapsed();
    drop(warm);
    let empty = Site::new(flows, hook, &[], "")?;
    let none = Process::flowhost(flowhost, &empty, &[])?;
    let with_0 = none.rss_mib()?;
    drop(none);
    Ok(json!({
        "rename_to_first_served": swaps,
        "start_50_flows_cold_ms": round(cold_start.as_secs_f64() * 1000.0, 0),
        "start_50_flows_warm_ms": round(warm_start.as_secs_f64() * 1000.0, 0),
        "rss_per_loaded_flow_mib": round((with_50 - with_0) / 50.0, 2),
    }))
}

/// Renames `flow` in as `swap.wasm` and sends probes until one is answered
/// by it; returns the time from the rename to that answer.
async fn swap_in(
    site: &Site,
    flows: &Path,
    flow: &str,
    url: &str,
    client: &reqwest_like::Client,
    deliveries: &Arc<Deliveries>,
) -> anyhow::Result<Duration> {
    let incoming = site.dir.path().join("flows/.incoming");
    std::fs::copy(flows.join(format!("{flow}.wasm")), &incoming)?;
    let renamed = Instant::now();
    std::fs::rename(&incoming, site.dir.path().join("flows/swap.wasm"))?;
    for probe in 0.. {
        let session = format!("probe-{flow}-{probe}-{}", renamed.elapsed().as_nanos());
        let answered = client.post_and_wait(url, &session, deliveries).await;
        if answered.is_some_and(|text| served_by(flow, &text)) {
            return Ok(renamed.elapsed());
        }
        if renamed.elapsed() > Duration::from_secs(60) {
            bail!("{flow} never served");
        }
    }
    unreachable!()
}

fn served_by(flow: &str, text: &str) -> bool {
    match flow {
        "echo" => text.starts_with("t="),
        "order-help" => text.contains("order number"),
        "greeter" => text.contains("What's your name"),
        _ => text.starts_with("1: "),
    }
}

/// A component with one more custom section: the same code, a new hash.
fn with_custom_section(component: &[u8], n: u32) -> Vec<u8> {
    let name = b"flowhost-bench";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8);
    out.extend_from_slice(&section);
    out
}

/// The ack loop: 64 connections, 10,000 sessions, closed loop for the
/// bench's duration.
async fn ack_loop(url: &str, options: &Options, epoch: Instant) -> anyhow::Result<load::Acks> {
    load::closed(url, 64, options.duration, Sessions::Distinct(10_000), epoch).await
}

/// Half a second of the ack loop, so that connections, caches and the JIT'd
/// flows are warm before measuring.
async fn warm_up(url: &str, epoch: Instant) -> anyhow::Result<()> {
    load::closed(
        url,
        64,
        Duration::from_millis(500),
        Sessions::Distinct(10_000),
        epoch,
    )
    .await?;
    Ok(())
}

fn ack_figures(acks: &mut load::Acks) -> Value {
    json!({
        "requests_per_second": round(acks.accepted as f64 / acks.elapsed.as_secs_f64(), 0),
        "accepted": acks.accepted,
        "refused_or_failed": acks.failed,
        "p50_ms": round(percentile_ms(&mut acks.latencies, 50.0), 2),
        "p99_ms": round(percentile_ms(&mut acks.latencies, 99.0), 2),
    })
}

async fn wait_delivered(deliveries: &Deliveries, quiet: Duration) {
    let mut last = usize::MAX;
    let started = Instant::now();
    while started.elapsed() < quiet {
        let now = deliveries.count();
        if now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn machine(root: &Path) -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": cores,
        "cpu": cpu,
        "commit": commit,
        "load_average_at_start": load.split_whitespace().next().unwrap_or(""),
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

fn print_table(results: &Value) {
    let m = &results["machine"];
    println!(
        "\nflowhost load bench: {} cores ({}), commit {}, load average {} at start\n",
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["commit"].as_str().unwrap_or(""),
        m["load_average_at_start"].as_str().unwrap_or("")
    );
    let rows: &[(&str, &str, &[&str])] = &[
        (
            "ack, bare axum (closed loop, 64 connections)",
            "ack_bare_axum",
            &["requests_per_second", "p50_ms", "p99_ms"],
        ),
        (
            "ack, flowhost (closed loop, 64 connections, 10,000 sessions)",
            "ack_flowhost",
            &[
                "requests_per_second",
                "p50_ms",
                "p99_ms",
                "ratio_to_bare_axum",
            ],
        ),
        (
            "ack, flowhost without fsync",
            "ack_flowhost_without_fsync",
            &[
                "requests_per_second",
                "p50_ms",
                "p99_ms",
                "durable_over_not_durable",
            ],
        ),
        (
            "end to end, closed loop (10,000 sessions)",
            "end_to_end_closed_loop",
            &[
                "messages_per_second",
                "p50_ms",
                "p99_ms",
                "cpu_seconds_per_1000_messages",
                "peak_rss_mib",
            ],
        ),
        (
            "end to end, open loop 1,000/s",
            "end_to_end_open_loop_1000",
            &["accepted", "p50_ms", "p99_ms", "ack_p99_ms"],
        ),
        (
            "end to end, open loop 5,000/s",
            "end_to_end_open_loop_5000",
            &["accepted", "p50_ms", "p99_ms", "ack_p99_ms"],
        ),
        (
            "end to end, one hot session (all messages in one session)",
            "one_hot_session",
            &[
                "messages_per_second",
                "open_loop_500_p50_ms",
                "open_loop_500_p99_ms",
            ],
        ),
        (
            "echo beside 8 hostile flows (open loop 500/s)",
            "noisy_neighbours",
            &[
                "idle_p50_ms",
                "beside_hostile_p50_ms",
                "p50_ratio",
                "idle_p99_ms",
                "beside_hostile_p99_ms",
                "p99_ratio",
            ],
        ),
        (
            "echo beside attacks one after another and garbage files (open loop 500/s)",
            "hostile_neighbours",
            &[
                "idle_p50_ms",
                "beside_hostile_p50_ms",
                "p50_ratio",
                "idle_p99_ms",
                "beside_hostile_p99_ms",
                "p99_ratio",
                "peak_rss_mib",
            ],
        ),
        (
            "reload",
            "reload",
            &[
                "start_50_flows_cold_ms",
                "start_50_flows_warm_ms",
                "rss_per_loaded_flow_mib",
            ],
        ),
    ];
    for (title, key, fields) in rows {
        if results[key].is_null() {
            continue; // Not run (`--only`).
        }
        let figures: Vec<String> = fields
            .iter()
            .map(|f| format!("{f} {}", results[key][f]))
            .collect();
        println!("| {title} | {} |", figures.join(", "));
    }
    if let Some(swaps) = results["reload"]["rename_to_first_served"].as_object() {
        for (flow, times) in swaps {
            println!(
                "| rename to first served: {flow} | cold_ms {} (compile_ms {}, over compile {}), warm_ms {} |",
                times["cold_ms"],
                times["compile_ms"],
                times["cold_over_compile_ms"],
                times["warm_ms"]
            );
        }
    }
}

/// A folder with flows and a `flowhost.toml` for a bench run.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(flows: &Path, hook: &str, flow_names: &[&str], extra: &str) -> anyhow::Result<Site> {
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
             max_queued_per_endpoint = 1000000\nmax_queued_per_session = 1000000\n\
             [delivery]\nallow_private_webhooks = true\nretry_schedule = [\"100ms\", \"1s\"]\n\
             max_concurrent_per_endpoint = 256\n"
        );
        for endpoint in ["echo", "hostile", "swap"] {
            config.push_str(&format!(
                "[endpoints.{endpoint}]\nflow = \"{endpoint}\"\nwebhook_url = \"{hook}\"\n"
            ));
        }
        std::fs::write(dir.path().join("flowhost.toml"), config)?;
        Ok(Site { dir })
    }
}

/// A child process serving HTTP, killed when dropped.
struct Process {
    child: Child,
    addr: String,
    urls: BTreeMap<String, String>,
}

impl Process {
    /// Starts flowhost and returns once it serves and its flows are loaded
    /// (it serves before they are: a start is measured to both).
    fn flowhost(binary: &Path, site: &Site, env: &[(&str, &str)]) -> anyhow::Result<Process> {
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
        let process = Process::read_start(child, 3)?;
        let mut log = BufReader::new(stderr).lines();
        loop {
            let line = log
                .next()
                .context("flowhost stopped before its flows were loaded")??;
            if line.contains("flows folder loaded") {
                break;
            }
        }
        std::thread::spawn(move || log.for_each(drop));
        Ok(process)
    }

    fn ceiling() -> anyhow::Result<Process> {
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

    fn url(&self, endpoint: &str) -> String {
        self.urls.get(endpoint).cloned().unwrap_or_default()
    }

    /// How long flowhost took to compile (or load) the current version of
    /// `flow`, from its admin API.
    async fn load_ms(&self, flow: &str) -> Option<f64> {
        let (addr, _) = self.addr.split_once('/').unwrap_or((&self.addr, ""));
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/admin/flows")
            .header("host", addr)
            .header("authorization", "Bearer bench-admin-token-000")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
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

    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        Ok(self.field_kib("VmHWM:")? / 1024.0)
    }

    fn rss_mib(&self) -> anyhow::Result<f64> {
        Ok(self.field_kib("VmRSS:")? / 1024.0)
    }

    /// User plus system CPU time so far.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
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

/// A tiny client for the bench's side requests (attacks and probes).
mod reqwest_like {
    use std::sync::Arc;
    use std::time::Duration;

    use super::receiver::Deliveries;

    pub(super) struct Client;

    impl Client {
        pub(super) fn new() -> Self {
            Client
        }

        /// POSTs a text message; ignores the answer.
        pub(super) async fn post(&self, url: &str, session: &str, text: &str) -> Option<u16> {
            let body = format!(r#"{{"userId":"u","sessionId":"{session}","text":"{text}"}}"#);
            let (addr, path) = url.strip_prefix("http://")?.split_once('/')?;
            let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(connection);
            let request = hyper::Request::post(format!("/{path}"))
                .header("host", addr)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .ok()?;
            Some(sender.send_request(request).await.ok()?.status().as_u16())
        }

        /// POSTs a probe and waits (briefly) for its delivery; returns the
        /// delivered text.
        pub(super) async fn post_and_wait(
            &self,
            url: &str,
            session: &str,
            deliveries: &Arc<Deliveries>,
        ) -> Option<String> {
            let before = deliveries.texts.lock().unwrap().len();
            if self.post(url, session, "t=0").await != Some(202) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                return None;
            }
            for _ in 0..2000 {
                if let Some(text) = deliveries.texts.lock().unwrap()[before..]
                    .iter()
                    .find(|(s, _)| s == session)
                    .map(|(_, t)| t.clone())
                {
                    return Some(text);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            None
        }
    }
}
