//! A flow that traps or fails ends that message only: nothing of the
//! message is kept or sent, its session goes on from the state before it,
//! and other sessions never notice.

use serde_json::json;

use crate::support::{Receiver, Site, endpoint, post};

#[tokio::test]
async fn a_trap_or_an_error_ends_that_message_only() {
    let receiver = Receiver::start().await;
    // Outputs at the turn's end, so that a failed turn sends nothing: with
    // "immediate" (the default) what a turn said more than a few
    // milliseconds before it failed is sent and stands, as `waiting.rs`
    // tests, and on a busy machine a say and a panic can be that far apart.
    let config = format!(
        "{}output_timing = \"at-end\"\n",
        endpoint("count", "faulty", &receiver)
    );
    let site = Site::new(&["faulty"], &config);
    let host = site.start().await;
    let url = host.url("count");
    let send = |session: &'static str, text: &'static str| {
        let url = url.clone();
        async move {
            let body = json!({"userId": "u", "sessionId": session, "text": text});
            assert_eq!(post(&url, &body, &[]).await.status(), 202);
        }
    };

    send("victim", "one").await;
    send("victim", "panic").await;
    send("bystander", "one").await;
    send("victim", "error").await;
    send("bystander", "two").await;
    send("victim", "two").await;

    let received = receiver.wait_for(4).await;
    let texts = |session: &str| -> Vec<String> {
        received
            .iter()
            .filter(|r| r.session() == session)
            .map(|r| r.text().to_owned())
            .collect()
    };
    // "panic" and "error" each said something and changed the context before
    // failing: none of it was sent or kept, so the count goes 1, 2.
    assert_eq!(texts("victim"), ["1: one", "2: two"]);
    assert_eq!(texts("bystander"), ["1: one", "2: two"]);

    let trap = host.wait_for_log(&["message failed", "victim"]).await;
    assert!(trap.contains("wasm trap"), "{trap}");
    assert!(
        trap.contains("the faulty flow panics on request"),
        "the panic message is reported: {trap}"
    );
    assert!(trap.contains("flow=faulty"), "{trap}");
    assert!(
        trap.contains("trace_id=endpoint-httpIncomingMessage-"),
        "{trap}"
    );
    let error = host
        .wait_for_log(&["message failed", "returned an error"])
        .await;
    assert!(
        error.contains("the faulty flow fails on request"),
        "{error}"
    );

    // Nothing more arrives for the failed messages.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 4);
}

#[tokio::test]
async fn the_flows_logs_and_output_reach_the_host_log_tagged_with_the_message() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint("count", "faulty", &receiver));
    let host = site.start().await;
    let body = json!({"userId": "u", "sessionId": "chatty", "text": "log"});
    let answer: serde_json::Value = post(&host.url("count"), &body, &[])
        .await
        .json()
        .await
        .unwrap();
    let trace_id = answer["traceId"].as_str().unwrap();
    receiver.wait_for(1).await;
    for line in [
        "logged by the flow at info",
        "logged by the flow at warn",
        "printed by the flow on stdout",
        "printed by the flow on stderr",
    ] {
        let logged = host.wait_for_log(&[line]).await;
        assert!(logged.contains(trace_id), "{logged}");
        assert!(logged.contains("flow=faulty"), "{logged}");
        assert!(logged.contains("session=chatty"), "{logged}");
    }
    assert!(
        host.wait_for_log(&["logged by the flow at warn"])
            .await
            .contains("WARN")
    );
}
