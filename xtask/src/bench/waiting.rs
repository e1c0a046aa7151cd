//! Flows that wait: the `waiting` flow says "One moment", calls an API that
//! answers after 2 s (or sleeps 2 s), then says its answer. Two figures:
//! how long 10,000 such turns, one per session and all sent at once, take
//! to be delivered (and what they cost in memory), and how soon the first
//! output of a turn that waits reaches the receiver.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::load::{self, micros_since};
use super::process::{Process, Site};
use super::receiver::Deliveries;
use super::round;

/// How long the slow API takes to answer.
const API_DELAY: Duration = Duration::from_secs(2);

/// Turns in the slow-flow burst.
const TURNS: u64 = 10_000;

/// The API the flow calls: answers every GET after [`API_DELAY`], and
/// counts the requests waiting at once (the turns waiting on it).
struct SlowApi {
    url: String,
    waiting: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl SlowApi {
    async fn start() -> anyhow::Result<SlowApi> {
        let (waiting, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counters = (Arc::clone(&waiting), Arc::clone(&most));
        let app = axum::Router::new().route(
            "/slow",
            axum::routing::get(move || {
                let (waiting, most) = counters.clone();
                async move {
                    let now = waiting.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(API_DELAY).await;
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/slow", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(SlowApi { url, waiting, most })
    }
}

/// Both scenarios, on one flowhost with the default settings.
pub(super) async fn scenarios(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Arc<Deliveries>,
    epoch: Instant,
) -> anyhow::Result<(Value, Value)> {
    let api = SlowApi::start().await?;
    let site = Site::new(flows, hook, &["waiting"], "")?;
    std::fs::write(
        site.dir.path().join("flows/waiting.toml"),
        "allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n",
    )?;
    let host = Process::flowhost(flowhost, &site, &[])?;
    let url = host.url("waiting");

    // A warm-up turn, then the burst.
    let warm_up: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync> =
        Arc::new(|_, sent_at| message("warm-up", sent_at, json!({ "sleep_ms": 0 })));
    let before = deliveries.waits.lock().unwrap().len();
    load::burst(&url, 1, 1, warm_up, epoch).await?;
    finals(deliveries, before, 1, Duration::from_secs(30)).await?;

    let call = api.url.clone();
    let slow: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync> = Arc::new(move |n, sent_at| {
        message(&format!("burst-{n}"), sent_at, json!({ "call": call }))
    });
    let before = deliveries.waits.lock().unwrap().len();
    let started = micros_since(epoch);
    // The most memory mappings flowhost had, sampled while the turns wait.
    let most_mappings = Arc::new(AtomicUsize::new(host.mappings()?));
    let sampler = {
        let (most, pid_maps) = (Arc::clone(&most_mappings), host.maps_path());
        tokio::spawn(async move {
            loop {
                if let Ok(maps) = tokio::fs::read_to_string(&pid_maps).await {
                    most.fetch_max(maps.lines().count(), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let acks = load::burst(&url, TURNS, 64, slow, epoch).await?;
    let last_accepted = micros_since(epoch);
    let arrived = finals(
        deliveries,
        before,
        acks.accepted as usize,
        Duration::from_secs(300),
    )
    .await;
    let last_delivered = deliveries.waits.lock().unwrap()[before..]
        .iter()
        .filter(|(_, first, _)| !first)
        .map(|(_, _, at)| *at)
        .max()
        .unwrap_or(last_accepted);
    sampler.abort();
    let seconds = |micros: u64| round(micros as f64 / 1e6, 2);
    let slow_flow = json!({
        "messages": TURNS,
        "accepted": acks.accepted,
        "delivered": arrived.unwrap_or_else(|e| {
            eprintln!("slow flow: {e}");
            0
        }),
        "send_seconds": seconds(last_accepted - started),
        "last_output_after_last_accepted_s": seconds(last_delivered.saturating_sub(last_accepted)),
        "total_seconds": seconds(last_delivered - started),
        "turns_waiting_at_peak": api.most.load(Ordering::SeqCst),
        "peak_rss_mib": round(host.peak_rss_mib()?, 1),
        "memory_mappings_at_peak": most_mappings.load(Ordering::SeqCst),
    });
    while api.waiting.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Turns that say, wait 2 s, and say again: when does each output arrive?
    let sleeper: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync> = Arc::new(|n, sent_at| {
        message(
            &format!("say-wait-say-{n}"),
            sent_at,
            json!({ "sleep_ms": 2000 }),
        )
    });
    let before = deliveries.waits.lock().unwrap().len();
    let sent = micros_since(epoch);
    load::burst(&url, 20, 20, sleeper, epoch).await?;
    finals(deliveries, before, 20, Duration::from_secs(60)).await?;
    let mut first = HashMap::new();
    let mut last = HashMap::new();
    for (session, is_first, at) in &deliveries.waits.lock().unwrap()[before..] {
        let latency = (at.saturating_sub(sent) / 1000) as u32;
        if *is_first { &mut first } else { &mut last }.insert(session.clone(), latency);
    }
    let mut first: Vec<u32> = first.into_values().collect();
    let mut last: Vec<u32> = last.into_values().collect();
    first.sort_unstable();
    last.sort_unstable();
    let first_output = json!({
        "turns": 20,
        "first_output_p50_ms": first.get(first.len() / 2),
        "first_output_max_ms": first.last(),
        "second_output_p50_ms": last.get(last.len() / 2),
    });
    Ok((slow_flow, first_output))
}

/// A message to the `waiting` flow, in its own session.
fn message(session: &str, sent_at: u64, data: Value) -> Bytes {
    Bytes::from(
        json!({
            "userId": "u",
            "sessionId": format!("wait-{session}"),
            "text": format!("t={sent_at}"),
            "data": data,
        })
        .to_string(),
    )
}

/// Waits until `count` turns have delivered their last output, counting
/// the deliveries to waiting sessions from the `from`th on; returns how
/// many did.
async fn finals(
    deliveries: &Deliveries,
    from: usize,
    count: usize,
    within: Duration,
) -> anyhow::Result<usize> {
    let started = Instant::now();
    loop {
        let done = deliveries.waits.lock().unwrap()[from..]
            .iter()
            .filter(|(_, first, _)| !first)
            .count();
        if done >= count {
            return Ok(done);
        }
        if started.elapsed() > within {
            anyhow::bail!("only {done} of {count} turns delivered their last output");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
