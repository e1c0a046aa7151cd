//! REST mode: the POST answered with the turn's outputs, request to answer
//! (p50/p99), against its baseline in the same run: a webhook endpoint at
//! the same rate, POST to output delivered at the receiver. Both run the
//! echo flow on one host, in one session (one connection: each message
//! waits for the one before) and in 10,000 sessions (64 connections).
//!
//! The REST loop is closed (a client sends its next message once answered),
//! so it runs at what the host sustains; the webhook side is offered the
//! same rate in an open loop. (A closed loop on a webhook endpoint outruns
//! its turns, since a 202 comes before the turn: its latency would measure
//! the queue it builds, not the host.)

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{self, Sessions, percentile_ms};
use super::process::{Process, Site};
use super::receiver::Deliveries;
use super::{Options, round, wait_delivered, warm_up};

pub(super) async fn scenario(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Deliveries,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Value> {
    let site = Site::new(
        flows,
        hook,
        &["echo"],
        "[endpoints.rest]\nflow = \"echo\"\nmode = \"rest\"\n",
    )?;
    let host = Process::flowhost(flowhost, &site, &[])?;
    let (rest, webhook) = (host.url("rest"), host.url("echo"));
    warm_up(&webhook, epoch).await?;
    wait_delivered(deliveries, Duration::from_secs(30)).await;
    let mut figures = serde_json::Map::new();
    for (name, connections, sessions) in [
        ("one_session", 1, Sessions::One),
        ("many_sessions", 64, Sessions::Distinct(10_000)),
    ] {
        // REST: the answer is the output.
        let mut answered =
            load::closed(&rest, connections, options.duration, sessions, epoch).await?;
        let rate = answered.accepted as f64 / answered.elapsed.as_secs_f64();
        // Webhook, offered the same rate: 202, then the output at the
        // receiver.
        let before = deliveries.count();
        let acks = load::open(
            &webhook,
            rate.max(1.0) as u64,
            connections.max(8),
            options.duration,
            sessions,
            epoch,
        )
        .await?;
        let mut delivered = deliveries.latencies_after(before, acks.accepted).await?;
        let webhook_rate = acks.accepted as f64 / options.duration.as_secs_f64();
        figures.insert(
            name.to_owned(),
            json!({
                "rest_messages_per_second": round(rate, 0),
                "rest_p50_ms": round(percentile_ms(&mut answered.latencies, 50.0), 2),
                "rest_p99_ms": round(percentile_ms(&mut answered.latencies, 99.0), 2),
                "rest_failed": answered.failed,
                "webhook_messages_per_second": round(webhook_rate, 0),
                "webhook_p50_ms": round(percentile_ms(&mut delivered, 50.0), 2),
                "webhook_p99_ms": round(percentile_ms(&mut delivered, 99.0), 2),
            }),
        );
    }
    Ok(Value::Object(figures))
}
