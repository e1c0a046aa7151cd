//! The results printed as a table, one row per scenario, after they are
//! written as JSON.

use serde_json::Value;

pub(super) fn print_table(results: &Value) {
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
            "slow flow: 10,000 turns at once, each calling a 2 s API",
            "slow_flow",
            &[
                "accepted",
                "delivered",
                "send_seconds",
                "last_output_after_last_accepted_s",
                "turns_waiting_at_peak",
                "peak_rss_mib",
                "memory_mappings_at_peak",
            ],
        ),
        (
            "say, wait 2 s, say (20 turns at once)",
            "first_output",
            &[
                "first_output_p50_ms",
                "first_output_max_ms",
                "second_output_p50_ms",
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
            "metrics on (scraped every second), end to end, median of 3 rounds",
            "metrics.on",
            &["messages_per_second", "cpu_seconds_per_1000_messages"],
        ),
        (
            "metrics off, the same loop, turn about with the rounds above",
            "metrics.off",
            &["messages_per_second", "cpu_seconds_per_1000_messages"],
        ),
        (
            "metrics on over off (medians)",
            "metrics",
            &["on_over_off", "cpu_on_over_off"],
        ),
        (
            "REST vs webhook, one session (1 connection): answer vs delivery",
            "rest.one_session",
            &[
                "rest_messages_per_second",
                "rest_p50_ms",
                "rest_p99_ms",
                "webhook_messages_per_second",
                "webhook_p50_ms",
                "webhook_p99_ms",
            ],
        ),
        (
            "REST vs webhook, 10,000 sessions (64 connections)",
            "rest.many_sessions",
            &[
                "rest_messages_per_second",
                "rest_p50_ms",
                "rest_p99_ms",
                "webhook_messages_per_second",
                "webhook_p50_ms",
                "webhook_p99_ms",
            ],
        ),
        (
            "store: one host on SQLite (closed loop, 64 connections, 10,000 sessions)",
            "store_sqlite_one_host",
            &[
                "messages_per_second",
                "p50_ms",
                "p99_ms",
                "flowhost_cpu_seconds_per_1000_messages",
            ],
        ),
        (
            "store: one host on PostgreSQL (same loop; PostgreSQL on this machine, fsynced)",
            "store_postgres_one_host",
            &[
                "messages_per_second",
                "p50_ms",
                "p99_ms",
                "over_sqlite",
                "flowhost_cpu_seconds_per_1000_messages",
                "postgres_cpu_seconds_per_1000_messages",
            ],
        ),
        (
            "store: two hosts on one PostgreSQL (the loop's connections split between them)",
            "store_postgres_two_hosts",
            &[
                "messages_per_second",
                "p50_ms",
                "p99_ms",
                "over_sqlite",
                "flowhost_cpu_seconds_per_1000_messages",
                "postgres_cpu_seconds_per_1000_messages",
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
        // A key may be a path: `metrics.on`.
        let scenario = key.split('.').fold(results, |at, part| &at[part]);
        if scenario.is_null() {
            continue; // Not run (`--only`).
        }
        let figures: Vec<String> = fields
            .iter()
            .map(|f| format!("{f} {}", scenario[f]))
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
