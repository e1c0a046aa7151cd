//! Delivery to a receiver that fails: retried with backoff until it
//! answers 2xx, a session's outputs never overtaking each other.

use serde_json::json;

use crate::support::{Receiver, Site, post};

#[tokio::test]
async fn failed_posts_are_retried_and_a_session_stays_in_order() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &format!(
            r#"
            [delivery]
            retry_schedule = ["50ms", "100ms", "100ms", "100ms"]

            [endpoints.count]
            flow = "faulty"
            webhook_url = "{}"
            "#,
            receiver.url()
        ),
    );
    let host = site.start().await;
    // The first output fails three times before it gets through.
    receiver.answer_with(&[500, 503, 502]);
    for text in ["a", "b", "c"] {
        let body = json!({"userId": "u", "sessionId": "s", "text": text});
        assert_eq!(post(&host.url("count"), &body, &[]).await.status(), 202);
    }

    let received = receiver.wait_for(3).await;
    let texts: Vec<&str> = received.iter().map(|r| r.text()).collect();
    assert_eq!(texts, ["1: a", "2: b", "3: c"], "b and c waited behind a");
    assert_eq!(
        receiver.attempts().len(),
        6,
        "three failures, then three deliveries"
    );
    let ids: Vec<_> = receiver
        .attempts()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(
        ids[0], ids[3],
        "every attempt of an output carries the same webhook-id"
    );
    host.wait_for_log(&["delivery failed; will retry", "attempts=3"])
        .await;
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_until_it_listens() {
    // Reserve a port, then free it: nothing listens there for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            [delivery]
            retry_schedule = ["100ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]

            [endpoints.echo]
            flow = "echo"
            webhook_url = "http://127.0.0.1:{port}/hook"
            "#
        ),
    );
    let host = site.start().await;
    let body = json!({"userId": "u", "sessionId": "s", "text": "hold on"});
    assert_eq!(post(&host.url("echo"), &body, &[]).await.status(), 202);
    host.wait_for_log(&["delivery failed; will retry", "could not connect"])
        .await;

    let receiver = Receiver::start_on(port).await;
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].text(), "hold on");
}
