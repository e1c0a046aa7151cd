//! `Idempotency-Key`: a caller that repeats a POST (after a timeout, say)
//! gets the first answer back and runs nothing again, whether the first is
//! still running or long done; the key with another request is refused.

use serde_json::json;

use crate::support::{post, send};
use crate::waiting::{CHECKING, texts, waiting_host};

#[tokio::test]
async fn a_post_repeated_with_its_key_runs_once_while_running_and_after() {
    let (receiver, api, _site, host) = waiting_host("", "").await;
    let url = host.url("waits");
    let body = json!({"userId": "u", "sessionId": "s1", "text": "where is my order?", "data": {"call": api.url}});
    let key = [("Idempotency-Key", "order-42-attempt")];

    let first = post(&url, &body, &key).await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    let trace_id = first["traceId"].as_str().unwrap().to_owned();
    api.wait_holding(1).await;

    // The caller retries while the turn still waits on the API: the same
    // answer, written differently (key order), and nothing queued.
    let retry =
        r#"{"data":{"call":"URL"},"text":"where is my order?","sessionId":"s1","userId":"u"}"#
            .replace("URL", &api.url);
    let repeated = crate::support::client()
        .post(&url)
        .header("content-type", "application/json")
        .header("idempotency-key", "order-42-attempt")
        .body(retry)
        .send()
        .await
        .unwrap();
    assert_eq!(repeated.status(), 202);
    let repeated: serde_json::Value = repeated.json().await.unwrap();
    assert_eq!(repeated["traceId"], trace_id.as_str());

    // The key with something else: refused, nothing kept.
    let other = json!({"userId": "u", "sessionId": "s1", "text": "cancel it"});
    let refused = post(&url, &other, &key).await;
    assert_eq!(refused.status(), 422);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:flowhost:problem:idempotency-key-reused"
    );

    api.release.send(true).unwrap();
    receiver
        .wait_for_text("s1", |text| text == "where is my order?")
        .await;
    // And once it has run, a repeat is still answered as the first.
    let late = post(&url, &body, &key).await;
    assert_eq!(late.status(), 202);
    let late: serde_json::Value = late.json().await.unwrap();
    assert_eq!(late["traceId"], trace_id.as_str());

    // A message after them all: the session runs in order, so anything
    // queued by a repeat would have been heard before it.
    send(&url, "s1", "last").await;
    receiver.wait_for_text("s1", |text| text == "last").await;
    assert_eq!(
        texts(&receiver),
        [CHECKING, "where is my order?", CHECKING, "last"],
        "the first POST ran once, the repeats not at all"
    );
}

#[tokio::test]
async fn a_malformed_key_is_a_400_and_the_longest_allowed_is_taken() {
    let (_receiver, _api, _site, host) = waiting_host("", "").await;
    let url = host.url("waits");
    let body = json!({"userId": "u", "sessionId": "s1", "text": "hi"});
    let long = "k".repeat(256);
    for bad in ["", long.as_str(), "with space"] {
        let response = post(&url, &body, &[("Idempotency-Key", bad)]).await;
        assert_eq!(response.status(), 400, "{bad:?}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"],
            "urn:flowhost:problem:invalid-idempotency-key"
        );
    }
    let longest = "k".repeat(255);
    let response = post(&url, &body, &[("Idempotency-Key", longest.as_str())]).await;
    assert_eq!(response.status(), 202);
}
