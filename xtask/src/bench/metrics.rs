//! What the Prometheus metrics cost: the end-to-end closed loop with
//! metrics on (and `/metrics` scraped every second, fifteen times as often
//! as Prometheus does by default) against the same loop with
//! `telemetry.metrics = false`, turn about, three rounds each, in the same
//! run. The medians are compared; the rounds show the noise.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{self, Sessions};
use super::process::{Process, Site};
use super::receiver::Deliveries;
use super::{Options, round, wait_delivered, warm_up};

const ROUNDS: usize = 3;

pub(super) async fn scenario(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Deliveries,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Value> {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for metrics in [true, false] {
            let site = Site::new(flows, hook, &["echo"], "")?;
            let env: &[(&str, &str)] = if metrics {
                &[]
            } else {
                &[("FLOWHOST_TELEMETRY__METRICS", "false")]
            };
            let host = Process::flowhost(flowhost, &site, env)?;
            let figures = measure(&host, metrics, deliveries, options, epoch).await?;
            if metrics { &mut on } else { &mut off }.push(figures);
        }
    }
    let rate = |rounds: &[(f64, f64)]| median(rounds.iter().map(|r| r.0));
    let cpu = |rounds: &[(f64, f64)]| median(rounds.iter().map(|r| r.1));
    let side = |rounds: &[(f64, f64)]| {
        json!({
            "messages_per_second": round(rate(rounds), 0),
            "cpu_seconds_per_1000_messages": round(cpu(rounds), 3),
            "rounds_messages_per_second": rounds.iter().map(|r| round(r.0, 0)).collect::<Vec<_>>(),
        })
    };
    Ok(json!({
        "on": side(&on),
        "off": side(&off),
        "on_over_off": round(rate(&on) / rate(&off), 3),
        "cpu_on_over_off": round(cpu(&on) / cpu(&off), 3),
    }))
}

/// One round: messages per second end to end, and CPU seconds per 1,000.
async fn measure(
    host: &Process,
    scraped: bool,
    deliveries: &Deliveries,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<(f64, f64)> {
    let echo = host.url("echo");
    warm_up(&echo, epoch).await?;
    wait_delivered(deliveries, Duration::from_secs(30)).await;
    let before = deliveries.count();
    let cpu_before = host.cpu_seconds()?;
    let scrapes = Arc::new(AtomicUsize::new(0));
    let scraping =
        scraped.then(|| tokio::spawn(scrape_every_second(host.addr.clone(), Arc::clone(&scrapes))));
    let started = Instant::now();
    let acks = load::closed(
        &echo,
        64,
        options.duration,
        Sessions::Distinct(10_000),
        epoch,
    )
    .await?;
    deliveries.latencies_after(before, acks.accepted).await?;
    let took = started.elapsed();
    let cpu = host.cpu_seconds()? - cpu_before;
    if let Some(scraping) = scraping {
        scraping.abort();
        anyhow::ensure!(
            scrapes.load(Ordering::Relaxed) > 0,
            "/metrics was never scraped"
        );
    }
    let messages = acks.accepted as f64;
    Ok((messages / took.as_secs_f64(), cpu / messages * 1000.0))
}

/// Scrapes `/metrics` each second, as Prometheus would, counting the
/// scrapes that answered 200 with their whole body.
async fn scrape_every_second(addr: String, scrapes: Arc<AtomicUsize>) {
    let (authority, _) = addr.split_once('/').unwrap_or((&addr, ""));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let Ok(request) = hyper::Request::get("/metrics")
            .header("host", authority)
            .body(http_body_util::Full::default())
        else {
            return;
        };
        let Some(response) = super::client::one_shot(authority, request).await else {
            continue;
        };
        if response.status() == 200
            && http_body_util::BodyExt::collect(response.into_body())
                .await
                .is_ok()
        {
            scrapes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
