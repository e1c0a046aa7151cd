//! The reload scenario: from a rename into the flows folder to the first
//! message served by the new version; start-up with 50 flows; memory per
//! loaded flow.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use super::client::Client;
use super::process::{Process, Site};
use super::receiver::Deliveries;
use super::round;

/// Rename-to-served times, cold and warm; start-up with 50 flows; memory
/// per flow.
pub(super) async fn reload(
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
    let client = Client::new();
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
    client: &Client,
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
