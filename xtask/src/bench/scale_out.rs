//! The store shared by hosts: one host on SQLite, one host on PostgreSQL,
//! and two hosts on one PostgreSQL, in the same run, each with the same
//! closed loop of echo messages end to end. PostgreSQL runs on this
//! machine, fsynced as in production; its CPU is counted beside
//! flowhost's.
//!
//! With `BENCH_PG_STATEMENTS=1`, PostgreSQL also keeps `pg_stat_statements`
//! (a diagnostic; flowhost's own SQL uses no extension), and the statements
//! of the one-host run are printed by their total time: where the
//! database's time goes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{self, Sessions, percentile_ms};
use super::process::{Process, Site};
use super::receiver::Deliveries;
use super::{Options, round, wait_delivered, warm_up};

#[path = "../../../host/tests/all/support/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres;

/// Connections of the closed loop, shared by the hosts measured.
const CONNECTIONS: usize = 64;

pub(super) async fn scenarios(
    flowhost: &Path,
    flows: &Path,
    hook: &str,
    deliveries: &Deliveries,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let statements = std::env::var_os("BENCH_PG_STATEMENTS").is_some();
    let cluster = if statements {
        postgres::TestPostgres::start_durable_with(
            "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all",
        )
    } else {
        postgres::TestPostgres::start_durable()
    };

    let site = Site::new(flows, hook, &["echo"], "")?;
    let sqlite = vec![Process::flowhost(flowhost, &site, &[])?];
    let one_sqlite = measure(&sqlite, None, deliveries, options, epoch).await?;
    drop(sqlite);

    let url = cluster.database("one_host");
    let store = format!("[store]\nurl = \"{url}\"\n");
    let site = Site::new(flows, hook, &["echo"], &store)?;
    let one = vec![Process::flowhost(flowhost, &site, &[])?];
    if statements {
        cluster.psql(
            "one_host",
            "CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset()",
        );
    }
    let one_postgres = measure(&one, Some(&cluster), deliveries, options, epoch).await?;
    drop(one);
    if statements {
        println!(
            "{}",
            cluster.psql(
                "one_host",
                "SELECT calls, round(total_exec_time) AS total_ms,
                        round((total_exec_time / calls)::numeric, 3) AS mean_ms,
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS statement
                 FROM pg_stat_statements WHERE calls > 100
                 ORDER BY total_exec_time DESC LIMIT 15",
            )
        );
    }

    let url = cluster.database("two_hosts");
    let store = format!("[store]\nurl = \"{url}\"\n");
    let sites = [
        Site::new(flows, hook, &["echo"], &store)?,
        Site::new(flows, hook, &["echo"], &store)?,
    ];
    let two: Vec<Process> = sites
        .iter()
        .map(|site| Process::flowhost(flowhost, site, &[]))
        .collect::<anyhow::Result<_>>()?;
    let two_postgres = measure(&two, Some(&cluster), deliveries, options, epoch).await?;
    drop(two);

    let sqlite_rate = one_sqlite["messages_per_second"].as_f64().unwrap_or(1.0);
    let over_sqlite = |mut figures: Value| {
        let rate = figures["messages_per_second"].as_f64().unwrap_or(0.0);
        figures["over_sqlite"] = json!(round(rate / sqlite_rate, 2));
        figures
    };
    Ok(vec![
        ("store_sqlite_one_host", one_sqlite),
        ("store_postgres_one_host", over_sqlite(one_postgres)),
        ("store_postgres_two_hosts", over_sqlite(two_postgres)),
    ])
}

/// The closed loop over `hosts` (the connections split between them),
/// end to end: messages per second, latency from send to delivery, and
/// CPU per 1,000 messages of flowhost and of PostgreSQL.
async fn measure(
    hosts: &[Process],
    cluster: Option<&postgres::TestPostgres>,
    deliveries: &Deliveries,
    options: &Options,
    epoch: Instant,
) -> anyhow::Result<Value> {
    for host in hosts {
        warm_up(&host.url("echo"), epoch).await?;
    }
    wait_delivered(deliveries, Duration::from_secs(60)).await;
    let before = deliveries.count();
    let cpu =
        |hosts: &[Process]| -> anyhow::Result<f64> { hosts.iter().map(Process::cpu_seconds).sum() };
    let (flowhost_before, database_before) = (cpu(hosts)?, cluster.map(|c| c.cpu_seconds()));
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    let (connections, duration) = (CONNECTIONS / hosts.len(), options.duration);
    for host in hosts {
        let url = host.url("echo");
        running.spawn(async move {
            load::closed(
                &url,
                connections,
                duration,
                Sessions::Distinct(10_000),
                epoch,
            )
            .await
        });
    }
    let mut accepted = 0;
    while let Some(acks) = running.join_next().await {
        accepted += acks??.accepted;
    }
    let mut latencies = deliveries.latencies_after(before, accepted).await?;
    let took = started.elapsed();
    let per_1000 = |seconds: f64| round(seconds / accepted as f64 * 1000.0, 3);
    let mut figures = json!({
        "hosts": hosts.len(),
        "messages": accepted,
        "messages_per_second": round(accepted as f64 / took.as_secs_f64(), 0),
        "p50_ms": round(percentile_ms(&mut latencies, 50.0), 2),
        "p99_ms": round(percentile_ms(&mut latencies, 99.0), 2),
        "flowhost_cpu_seconds_per_1000_messages": per_1000(cpu(hosts)? - flowhost_before),
    });
    if let (Some(cluster), Some(before)) = (cluster, database_before) {
        figures["postgres_cpu_seconds_per_1000_messages"] =
            json!(per_1000(cluster.cpu_seconds() - before));
    }
    Ok(figures)
}
