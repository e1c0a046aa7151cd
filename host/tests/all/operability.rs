//! What an operator's tools read: Prometheus metrics at `/metrics`, the
//! probes `/healthz` and `/readyz`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, Receiver, Site, client, post};

/// The scraped text, after checking its content type.
async fn scrape(host: &Host) -> String {
    let response = client()
        .get(format!("http://{}/metrics", host.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the sample `series` (a name with its labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Waits until the sample `series` reaches `at_least`.
async fn until_sample(host: &Host, series: &str, at_least: f64) -> String {
    for _ in 0..200 {
        let text = scrape(host).await;
        if sample(&text, series).is_some_and(|value| value >= at_least) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {at_least}:\n{}", scrape(host).await);
}

#[tokio::test]
async fn metrics_count_answers_turns_deliveries_and_loads_by_endpoint_and_flow() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo", "hostile"],
        &format!(
            r#"
            [limits]
            deadline = "300ms"

            [delivery]
            retry_schedule = ["20ms"]

            [endpoints.echo]
            flow = "echo"
            webhook_url = "{url}"

            [endpoints.rough]
            flow = "hostile"
            webhook_url = "{url}"

            [endpoints.keyed]
            flow = "echo"
            auth = "api-key"
            webhook_url = "{url}"
            "#,
            url = receiver.url()
        ),
    );
    let host = site.start().await;
    let message = |session: &str, text: &str| json!({"userId": "user-7a1f", "sessionId": session, "text": text});

    // Delivered at the second attempt.
    receiver.answer_with(&[500]);
    let accepted = post(&host.url("echo"), &message("session-c3d9", "hello"), &[]).await;
    assert_eq!(accepted.status(), 202);
    receiver.wait_for(1).await;
    // Failed at both attempts: a dead letter.
    receiver.answer_with(&[500, 500]);
    let accepted = post(&host.url("echo"), &message("session-e5b2", "hi"), &[]).await;
    assert_eq!(accepted.status(), 202);
    host.wait_for_log(&["the output is a dead letter"]).await;
    // Stopped at its deadline, and trapped.
    for text in ["loop", "panic"] {
        let accepted = post(&host.url("rough"), &message("session-9f0a", text), &[]).await;
        assert_eq!(accepted.status(), 202);
    }
    // Refused: no key; no such endpoint.
    let refused = post(&host.url("keyed"), &message("session-1", "hi"), &[]).await;
    assert_eq!(refused.status(), 401);
    let unknown = format!("http://{}/endpoint/no-such-token-000000000000", host.addr);
    assert_eq!(
        post(&unknown, &message("session-1", "hi"), &[])
            .await
            .status(),
        404
    );

    let text = until_sample(
        &host,
        r#"flowhost_turns_total{endpoint="rough",flow="hostile",outcome="trap"}"#,
        1.0,
    )
    .await;
    let expected = [
        (
            r#"flowhost_messages_total{endpoint="echo",status="202"}"#,
            2.0,
        ),
        (
            r#"flowhost_messages_total{endpoint="rough",status="202"}"#,
            2.0,
        ),
        (
            r#"flowhost_messages_total{endpoint="keyed",status="401"}"#,
            1.0,
        ),
        (r#"flowhost_messages_total{endpoint="",status="404"}"#, 1.0),
        (
            r#"flowhost_turns_total{endpoint="echo",flow="echo",outcome="completed"}"#,
            2.0,
        ),
        (
            r#"flowhost_turns_total{endpoint="rough",flow="hostile",outcome="deadline"}"#,
            1.0,
        ),
        (
            r#"flowhost_turns_total{endpoint="rough",flow="hostile",outcome="trap"}"#,
            1.0,
        ),
        (r#"flowhost_turn_duration_seconds_count{flow="echo"}"#, 2.0),
        (
            r#"flowhost_turn_duration_seconds_count{flow="hostile"}"#,
            2.0,
        ),
        (
            r#"flowhost_deliveries_total{endpoint="echo",outcome="delivered"}"#,
            1.0,
        ),
        (
            r#"flowhost_deliveries_total{endpoint="echo",outcome="retry"}"#,
            2.0,
        ),
        (
            r#"flowhost_deliveries_total{endpoint="echo",outcome="dead"}"#,
            1.0,
        ),
        (
            r#"flowhost_delivery_duration_seconds_count{endpoint="echo"}"#,
            4.0,
        ),
        (
            r#"flowhost_delivery_latency_seconds_count{endpoint="echo"}"#,
            1.0,
        ),
        (r#"flowhost_dead_letters{endpoint="echo"}"#, 1.0),
        (r#"flowhost_outputs_pending{endpoint="echo"}"#, 0.0),
        (r#"flowhost_inbox_messages{endpoint="echo"}"#, 0.0),
        (
            r#"flowhost_flow_loads_total{flow="echo",outcome="compiled"}"#,
            1.0,
        ),
        (
            r#"flowhost_flow_loads_total{flow="hostile",outcome="compiled"}"#,
            1.0,
        ),
        (
            r#"flowhost_flow_compile_duration_seconds_count{flow="echo"}"#,
            1.0,
        ),
        ("flowhost_flows_loaded", 2.0),
        ("flowhost_turns_in_flight", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // Accept to delivered took at least the retry's wait.
    let latency = sample(
        &text,
        r#"flowhost_delivery_latency_seconds_sum{endpoint="echo"}"#,
    )
    .unwrap();
    assert!(latency >= 0.02, "{latency}");
    assert!(
        text.contains(&format!(
            "flowhost_build_info{{version=\"{}\",wasmtime=\"48.0.8\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for private in ["user-7a1f", "session-c3d9", "hello"] {
        assert!(!text.contains(private), "{private} is in the metrics");
    }

    // Restarted, the counters start again; the levels come from the store,
    // and the flows from the compile cache.
    host.terminate().await;
    let host = site.start().await;
    let text = scrape(&host).await;
    assert_eq!(
        sample(&text, r#"flowhost_dead_letters{endpoint="echo"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"flowhost_messages_total{endpoint="echo",status="202"}"#
        ),
        None
    );
    assert_eq!(
        sample(
            &text,
            r#"flowhost_flow_loads_total{flow="echo",outcome="cached"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_turned_off_are_neither_counted_nor_served() {
    let site = Site::new(&["echo"], "[telemetry]\nmetrics = false\n");
    let host = site.start().await;
    let response = client()
        .get(format!("http://{}/metrics", host.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("telemetry.metrics = false"),
        "{problem}"
    );
}

#[tokio::test]
async fn readiness_waits_for_every_endpoints_flow_while_health_only_says_it_runs() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "{}{}",
            crate::support::endpoint("echo", "echo", &receiver),
            crate::support::endpoint("later", "late", &receiver)
        ),
    );
    let host = site.start().await;
    let get = |path: &str| client().get(format!("http://{}{path}", host.addr)).send();

    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    let problem: Value = ready.json().await.unwrap();
    assert_eq!(problem["type"], "urn:flowhost:problem:not-ready");
    assert_eq!(
        problem["reasons"],
        json!(["endpoint \"later\": its flow \"late\" is not loaded (there is no such flow file)"])
    );

    // A flow file that does not load is named with its reason.
    std::fs::write(site.path().join("flows/late.wasm"), b"not wasm").unwrap();
    host.wait_for_log(&["flow not loaded", "flow=late"]).await;
    let problem: Value = get("/readyz").await.unwrap().json().await.unwrap();
    let reason = problem["reasons"][0].as_str().unwrap();
    assert!(reason.contains("it failed to load: "), "{reason}");

    // Loaded: ready.
    std::fs::copy(
        crate::support::flow_file("echo"),
        site.path().join("flows/late.wasm"),
    )
    .unwrap();
    for _ in 0..200 {
        let ready = get("/readyz").await.unwrap();
        if ready.status() == 200 {
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body, json!({"status": "ready"}));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "never ready: {}",
        get("/readyz").await.unwrap().text().await.unwrap()
    );
}
