//! The noisy and hostile neighbour scenarios: echo's end-to-end latency
//! idle, then beside flows that spin, hoard memory or attack.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Client;
use super::load::{self, Sessions, percentile_ms};
use super::process::{Process, Site};
use super::receiver::Deliveries;
use super::{Options, round};

/// Echo's end-to-end latency (open loop, 500/s) idle, then beside a flow
/// attacked by 4 clients cycling through every attack, while 20 MB garbage
/// files and truncated components are dropped into the flows folder.
pub(super) async fn hostile_neighbours(
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
                let client = Client::new();
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
pub(super) async fn noisy_neighbours(
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
                let client = Client::new();
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
