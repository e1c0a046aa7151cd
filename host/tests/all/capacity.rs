//! Capacity is shared fairly: a flooded session, a slow flow or a slow
//! receiver of one endpoint cannot make another endpoint's messages be
//! refused or wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::support::{PATIENCE, Receiver, Site, post, send};

#[tokio::test]
async fn a_flooded_session_cannot_make_other_sessions_or_endpoints_refuse_messages() {
    let receiver = Receiver::start().await;
    // 40 queued messages in all: 10 per endpoint and 2 per session by
    // default. Each nap holds its session's lane for 20 s. The caps are the
    // one-host inbox's (where hosts share PostgreSQL, the database is the
    // queue).
    let site = Site::on_sqlite(
        &["hostile", "echo"],
        &format!(
            r#"
            [runtime]
            max_queued_messages = 40

            [limits]
            deadline = "30s"

            [endpoints.slow]
            flow = "hostile"
            webhook_url = "{url}"

            [endpoints.other]
            flow = "echo"
            webhook_url = "{url}"
            "#,
            url = receiver.url()
        ),
    );
    let host = site.start().await;

    let mut accepted = 0;
    let mut refused = Vec::new();
    for _ in 0..41 {
        let body = json!({"userId": "u", "sessionId": "flood", "text": "nap 20000"});
        let response = post(&host.url("slow"), &body, &[]).await;
        match response.status().as_u16() {
            202 => accepted += 1,
            503 => refused.push(response),
            other => panic!("unexpected {other}"),
        }
    }
    // Another session of the same endpoint, and another endpoint, still get in.
    let body = json!({"userId": "u", "sessionId": "calm", "text": "count"});
    assert_eq!(post(&host.url("slow"), &body, &[]).await.status(), 202);
    send(&host.url("other"), "victim", "still served").await;
    receiver
        .wait_for_text("victim", |text| text == "still served")
        .await;

    assert!(
        (2..41).contains(&accepted),
        "the flooding session is capped: {accepted} accepted"
    );
    let refusal = refused.pop().unwrap();
    assert_eq!(refusal.headers()["retry-after"], "1");
    assert_eq!(
        refusal.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(problem["type"], "urn:flowhost:problem:overloaded");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("of this session"),
        "{problem}"
    );
}

/// A webhook that accepts connections and never answers; counts them.
async fn silent_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, connections)
}

#[tokio::test]
async fn a_receiver_that_never_answers_cannot_hold_every_delivery_slot() {
    let receiver = Receiver::start().await;
    let (silent, connections) = silent_receiver().await;
    // 4 POSTs in flight in all, 1 per endpoint by default; the silent
    // receiver would hold a POST for longer than the test waits.
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            [delivery]
            max_concurrent = 4
            timeout = "300s"

            [endpoints.stuck]
            flow = "echo"
            webhook_url = "{silent}"

            [endpoints.fine]
            flow = "echo"
            webhook_url = "{}"
            "#,
            receiver.url()
        ),
    );
    let host = site.start().await;
    for session in ["s1", "s2", "s3", "s4"] {
        send(&host.url("stuck"), session, "hello?").await;
    }
    // All four outputs are made (and queued for delivery) and the silent
    // receiver holds at least one POST.
    tokio::time::timeout(PATIENCE, async {
        while host.log().matches("message handled").count() < 4
            || connections.load(Ordering::SeqCst) == 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stuck endpoint's outputs were made and one POST started");

    send(&host.url("fine"), "s", "not stuck").await;
    receiver
        .wait_for_text("s", |text| text == "not stuck")
        .await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one POST in flight to the stuck endpoint, its share"
    );
}
