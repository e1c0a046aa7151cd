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
//! - **slow flow**: 10,000 turns sent at once, each calling an API that
//!   answers after 2 s: until the last output, peak RSS, turns waiting at
//!   once; and **first output**: how soon a turn that says, waits 2 s and
//!   says again gets its first output to the receiver;
//! - **reload**: from a rename into the flows folder to the first message
//!   served by the new version, compiled (cold) and from the compile cache
//!   (warm); start-up with 50 flows, cold and warm; memory per loaded flow;
//! - **metrics**: the end-to-end closed loop with Prometheus metrics on
//!   (scraped every second) and off, turn about;
//! - **rest**: a REST endpoint's request-to-answer latency, in one session
//!   and in many, beside the same loops' POST-to-delivery on a webhook
//!   endpoint.
//!
//! The table is printed and written as JSON to `target/bench/results.json`.

mod ceiling;
mod client;
mod load;
mod metrics;
mod neighbours;
mod process;
mod receiver;
mod reload;
mod rest;
mod scale_out;
mod table;
mod waiting;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use self::load::{Sessions, percentile_ms};
use self::neighbours::{hostile_neighbours, noisy_neighbours};
use self::process::{Process, Site};
use self::receiver::Deliveries;
use self::reload::reload;
use self::table::print_table;

pub(crate) use self::ceiling::serve as serve_ceiling;

/// Options of a bench run.
struct Options {
    /// How long each load phase runs.
    duration: Duration,
    /// `--only <scenario>`: run just the fast path (ack, end to end, hot
    /// session, without fsync), the waiting flows, one of the neighbour
    /// scenarios, the cost of metrics (`metrics`), REST mode (`rest`), or
    /// the store shared by hosts (`scale_out`).
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
    let flowhost = match &options.flowhost {
        Some(other) => {
            println!(
                "Measuring {} instead of this checkout's build",
                other.display()
            );
            std::fs::canonicalize(other)?
        }
        None => {
            println!("Building flowhost (release)…");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "--quiet", "-p", "flowhost"])
                .current_dir(root)
                .status()?;
            if !status.success() {
                bail!("building flowhost failed");
            }
            root.join("target/release/flowhost")
        }
    };
    println!("Building the flows…");
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
        None | Some("fast_path") => {}
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
        Some("waiting") => {
            let (slow, first) =
                waiting::scenarios(flowhost, flows, &hook, &deliveries, epoch).await?;
            results.insert("slow_flow", slow);
            results.insert("first_output", first);
            return Ok(json!(results));
        }
        Some("metrics") => {
            let figures = metrics::scenario(flowhost, flows, &hook, &deliveries, options, epoch);
            results.insert("metrics", figures.await?);
            return Ok(json!(results));
        }
        Some("rest") => {
            let figures = rest::scenario(flowhost, flows, &hook, &deliveries, options, epoch);
            results.insert("rest", figures.await?);
            return Ok(json!(results));
        }
        Some("scale_out") => {
            let figures =
                scale_out::scenarios(flowhost, flows, &hook, &deliveries, options, epoch).await?;
            results.extend(figures);
            return Ok(json!(results));
        }
        Some(other) => {
            bail!(
                "--only takes fast_path, waiting, noisy_neighbours, hostile_neighbours, \
                 metrics, rest or scale_out, not {other}"
            )
        }
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
    if options.only.as_deref() == Some("fast_path") {
        return Ok(json!(results));
    }

    let (slow, first) = waiting::scenarios(flowhost, flows, &hook, &deliveries, epoch).await?;
    results.insert("slow_flow", slow);
    results.insert("first_output", first);
    results.insert(
        "noisy_neighbours",
        noisy_neighbours(flowhost, flows, &hook, &deliveries, options, epoch).await?,
    );
    results.insert(
        "hostile_neighbours",
        hostile_neighbours(flowhost, flows, &hook, &deliveries, options, epoch).await?,
    );
    results.insert("reload", reload(flowhost, flows, &hook, &deliveries).await?);
    results.insert(
        "metrics",
        metrics::scenario(flowhost, flows, &hook, &deliveries, options, epoch).await?,
    );
    results.insert(
        "rest",
        rest::scenario(flowhost, flows, &hook, &deliveries, options, epoch).await?,
    );
    results
        .extend(scale_out::scenarios(flowhost, flows, &hook, &deliveries, options, epoch).await?);
    Ok(json!(results))
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
