//! A third-party flow can hurt only itself: hostile flows are stopped with
//! the right reason, leave no trace in their session, get nothing they were
//! not granted, and do not slow down other flows.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::support::{HeldApi, Receiver, Site, endpoint, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_flows_are_stopped_with_their_reason_and_leave_no_trace() {
    let receiver = Receiver::start().await;
    // Outputs at the turn's end, so that a failed turn sends nothing at all.
    // With "immediate" (the default), what a turn said more than a few
    // milliseconds before it failed is sent and stands: on a busy machine a
    // million says can take that long, and `waiting.rs` tests that rule.
    let at_end = "output_timing = \"at-end\"\n";
    let site = Site::new(
        &[],
        &format!(
            "{}{at_end}{}{at_end}",
            endpoint("attack", "hostile", &receiver),
            endpoint("starve", "hungry", &receiver)
        ),
    );
    site.add_flow("hostile", "hostile", Some("[limits]\ndeadline = \"1s\"\n"));
    site.add_flow("hungry", "hostile", Some("[limits]\nmemory = \"16 MiB\"\n"));
    let host = site.start().await;

    let attacks = [
        ("loop", "deadline 1 s exceeded"),
        ("sleep", "deadline 1 s exceeded"),
        ("grow", "memory limit 16 MiB exceeded"),
        ("recurse", "wasm stack exhausted"),
        ("panic", "hostile flow panics"),
        ("say-a-million", "output limit 100 exceeded"),
        ("big-say", "output size limit 64 KiB exceeded"),
        ("big-context", "context size limit 64 KiB exceeded"),
        ("big-profile", "profile size limit 64 KiB exceeded"),
        ("log-flood", "log limit 64 KiB exceeded"),
        ("exit", "the flow exited with status"),
    ];
    join_all(attacks.iter().map(|(attack, reason)| {
        let endpoint = if *attack == "grow" {
            "starve"
        } else {
            "attack"
        };
        let (url, host, receiver) = (host.url(endpoint), &host, &receiver);
        async move {
            let url = &url;
            let session = format!("victim-{attack}");
            send(url, &session, "count").await;
            receiver.wait_for_text(&session, |t| t == "count 1").await;
            send(url, &session, attack).await;
            send(url, &session, "count").await;
            // The attack counted itself in the context before it failed:
            // that change was dropped, so the count goes on at 2.
            receiver.wait_for_text(&session, |t| t == "count 2").await;
            let line = host
                .wait_for_log(&["message failed", &format!("session={session}")])
                .await;
            assert!(line.contains(reason), "{attack}: {line}");
            assert!(
                line.contains("flow=") && line.contains("version="),
                "{line}"
            );
        }
    }))
    .await;

    // Nothing the attacks said was delivered: per session, the two counts.
    for (attack, _) in attacks {
        let texts: Vec<_> = receiver
            .received()
            .iter()
            .filter(|r| r.session() == format!("victim-{attack}"))
            .map(|r| r.text().to_owned())
            .collect();
        assert_eq!(texts, ["count 1", "count 2"], "{attack}");
    }
}

#[tokio::test]
async fn fuel_bounds_a_flow_when_the_host_meters_it() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &[],
        &format!(
            "[runtime]\nfuel_metering = true\n{}",
            endpoint("attack", "hostile", &receiver)
        ),
    );
    site.add_flow("hostile", "hostile", Some("[limits]\nfuel = 50_000_000\n"));
    let host = site.start().await;
    send(&host.url("attack"), "fuelled", "count").await;
    receiver.wait_for_text("fuelled", |t| t == "count 1").await;
    send(&host.url("attack"), "fuelled", "loop").await;
    let line = host
        .wait_for_log(&["message failed", "session=fuelled"])
        .await;
    assert!(line.contains("fuel limit 50000000 exceeded"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_gets_no_files_environment_sockets_or_hosts_it_was_not_granted() {
    // A local server the network flow is allowed to call by exact address.
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let hits = hits.clone();
        let app = axum::Router::new().route(
            "/hello",
            axum::routing::get(move || {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "hello from the test server" }
            }),
        );
        tokio::spawn(async move { axum::serve(allowed, app).await.unwrap() });
    }

    let receiver = Receiver::start().await;
    let other_port = receiver.addr.port();
    // Only the operator opens private addresses, and never link-local ones.
    let site = Site::new(
        &[],
        &format!(
            "[runtime]\nprivate_outbound_hosts = [\"http://127.0.0.1:{allowed_port}\", \"http://169.254.169.254\"]\n{}{}{}",
            endpoint("sealed", "hostile", &receiver),
            endpoint("net", "net", &receiver),
            endpoint("named", "named", &receiver)
        ),
    );
    site.add_flow("hostile", "hostile", None);
    site.add_flow(
        "net",
        "hostile",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://*:*\", \"http://127.0.0.1:{allowed_port}\"]\n"
        )),
    );
    // A manifest that names private hosts exactly gets no further: it ships
    // with the flow, and its names may point anywhere.
    site.add_flow(
        "named",
        "hostile",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{other_port}\", \"http://169.254.169.254\"]\n"
        )),
    );
    let host = site.start().await;

    let cases: Vec<(&str, String, &str)> = vec![
        ("sealed", "read-file /etc/passwd".into(), "error:"),
        ("sealed", "env".into(), "env: 0 variables, 0 arguments"),
        ("sealed", format!("tcp 127.0.0.1:{other_port}"), "error:"),
        (
            "sealed",
            format!("http http://127.0.0.1:{allowed_port}/hello"),
            "HttpRequestDenied",
        ),
        (
            "sealed",
            "http https://example.com/".into(),
            "HttpRequestDenied",
        ),
        (
            "net",
            format!("http http://127.0.0.1:{allowed_port}/hello"),
            "status 200: hello from the test server",
        ),
        (
            "net",
            "http http://169.254.169.254/latest/meta-data/".into(),
            "DestinationIpProhibited",
        ),
        (
            "net",
            format!("http http://127.0.0.1:{other_port}/hook"),
            "DestinationIpProhibited",
        ),
        (
            "net",
            format!("http http://localhost:{allowed_port}/hello"),
            "DestinationIpProhibited",
        ),
        (
            "net",
            "http https://example.com/".into(),
            "HttpRequestDenied",
        ),
        (
            "named",
            format!("http http://127.0.0.1:{other_port}/hook"),
            "DestinationIpProhibited",
        ),
        (
            "named",
            "http http://169.254.169.254/latest/meta-data/".into(),
            "DestinationIpProhibited",
        ),
    ];
    join_all(
        cases
            .iter()
            .enumerate()
            .map(|(n, (endpoint, attack, expected))| {
                let (host, receiver) = (&host, &receiver);
                async move {
                    let session = format!("case-{n}");
                    send(&host.url(endpoint), &session, attack).await;
                    let text = receiver.wait_for_text(&session, |_| true).await;
                    assert!(text.contains(expected), "{endpoint} {attack}: {text}");
                }
            }),
    )
    .await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the one allowed request reached the server"
    );
    host.wait_for_log(&["outbound request denied", "169.254.169.254"])
        .await;
}

#[tokio::test]
async fn components_that_overreach_are_refused_at_load_by_name() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "[runtime]\nmax_component_size = \"64 KiB\"\n{}",
            endpoint("echo", "echo", &receiver)
        ),
    );
    site.add_wat("huge-table", "huge-table");
    site.add_wat("evil", "unknown-import");
    let host = site.start().await;

    let evil = host.wait_for_log(&["flow not loaded", "evil.wasm"]).await;
    assert!(evil.contains("acme:evil/steal@1.0.0"), "{evil}");
    let table = host
        .wait_for_log(&["flow not loaded", "huge-table.wasm"])
        .await;
    assert!(table.contains("table"), "{table}");
    let big = host.wait_for_log(&["flow not loaded", "echo.wasm"]).await;
    assert!(big.contains("over the limit of 65536"), "{big}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_under_attack_do_not_stall_other_flows() {
    const ROUND_TRIPS: usize = 20;
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("attack", "hostile", &receiver)
        ),
    );
    site.add_flow(
        "hostile",
        "hostile",
        Some("[limits]\ndeadline = \"2s\"\nmemory = \"32 MiB\"\n"),
    );
    let host = site.start().await;
    let echo = host.url("echo");

    // One round trip: accepted, run, delivered.
    let round_trips = |label: &'static str| {
        let (echo, receiver) = (&echo, &receiver);
        async move {
            let mut took = Vec::new();
            for n in 0..ROUND_TRIPS {
                let text = format!("{label} {n}");
                let started = Instant::now();
                send(echo, label, &text).await;
                receiver.wait_for_text(label, |t| t == text).await;
                took.push(started.elapsed());
            }
            took.sort();
            took[ROUND_TRIPS / 2]
        }
    };
    let idle = round_trips("idle").await;

    let attacking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let attackers: Vec<_> = (0..8)
        .map(|n| {
            let (url, attacking) = (host.url("attack"), attacking.clone());
            tokio::spawn(async move {
                let attack = if n % 2 == 0 { "loop" } else { "grow" };
                while attacking.load(std::sync::atomic::Ordering::Relaxed) {
                    send(&url, &format!("attacker-{n}"), attack).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    // Let the attacks get going before measuring.
    host.wait_for_log(&["message failed", "memory limit 32 MiB exceeded"])
        .await;
    let loaded = round_trips("loaded").await;
    attacking.store(false, std::sync::atomic::Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.unwrap();
    }

    println!(
        "echo round trip p50: idle {idle:?}, beside 4 spinning and 4 memory-hungry flows {loaded:?} ({:.1}x)",
        loaded.as_secs_f64() / idle.as_secs_f64()
    );
    // Generous: the point is that echo keeps going, not how fast.
    let bound = (idle * 50).max(Duration::from_millis(500));
    assert!(loaded < bound, "idle {idle:?}, under attack {loaded:?}");
}

#[tokio::test]
async fn a_flows_turns_together_hold_at_most_its_share_of_memory() {
    let receiver = Receiver::start().await;
    let api = HeldApi::start().await;
    let port = api.port();
    // 96 MiB for all turns, so 48 MiB for one flow's; 32 MiB for one turn.
    let site = Site::new(
        &["echo"],
        &format!(
            "[runtime]\nmax_total_flow_memory = \"96 MiB\"\n\
             private_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("hoard", "hostile", &receiver)
        ),
    );
    site.add_flow(
        "hostile",
        "hostile",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n\
             [limits]\nmemory = \"32 MiB\"\ndeadline = \"30s\"\n"
        )),
    );
    let host = site.start().await;
    let hoard = host.url("hoard");

    // One turn holds 24 MiB while it waits on the API.
    send(&hoard, "first", &format!("hoard 24 {}", api.url)).await;
    api.wait_holding(1).await;
    // A second would take the flow past 48 MiB: it fails, on its own limit
    // of 32 MiB it would have passed.
    send(&hoard, "second", &format!("hoard 24 {}", api.url)).await;
    let failed = host
        .wait_for_log(&["message failed", "session=second"])
        .await;
    assert!(
        failed.contains("the flow's running turns together hold 48 MiB of linear memory"),
        "{failed}"
    );
    // Another flow has memory of its own.
    send(&host.url("echo"), "other", "still served").await;
    receiver
        .wait_for_text("other", |text| text == "still served")
        .await;

    // Once the first turn ends, its memory is the flow's again.
    api.release.send(true).unwrap();
    receiver
        .wait_for_text("first", |text| text.starts_with("hoarded 24 MiB"))
        .await;
    send(&hoard, "third", &format!("hoard 24 {}", api.url)).await;
    receiver
        .wait_for_text("third", |text| text.starts_with("hoarded 24 MiB"))
        .await;
}
