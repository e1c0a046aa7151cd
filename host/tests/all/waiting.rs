//! Flows that wait: a turn waiting on an API holds its instance and
//! nothing else, so hundreds of them wait at once (far more than the warm
//! instances), and other flows are served meanwhile; what a flow says
//! before it waits is heard at once, and stands whatever the turn does next.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::support::{HeldApi, Host, Receiver, Site, post, send};

pub(crate) const CHECKING: &str = "One moment, let me check…";

/// A site whose endpoint `waits` runs the `waiting` flow, which may call
/// `api`, and which has `echo` too. `top` adds top-level keys (dotted, such
/// as `runtime.warm_instances = 4`), `rest` goes into the endpoint's table
/// and may add more tables after it, and `manifest` adds to the flow's.
fn waiting_site(receiver: &Receiver, api: &HeldApi, top: &str, rest: &str, manifest: &str) -> Site {
    let port = api.port();
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            runtime.private_outbound_hosts = ["http://127.0.0.1:{port}"]
            {top}

            [endpoints.waits]
            flow = "waiting"
            webhook_url = "{hook}"
            {rest}
            "#,
            hook = receiver.url()
        ),
    );
    site.add_flow(
        "waiting",
        "waiting",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n{manifest}"
        )),
    );
    site
}

/// A receiver, a held API, and a host serving [`waiting_site`].
pub(crate) async fn waiting_host(rest: &str, manifest: &str) -> (Receiver, HeldApi, Site, Host) {
    let receiver = Receiver::start().await;
    let api = HeldApi::start().await;
    let site = waiting_site(&receiver, &api, "", rest, manifest);
    let host = site.start().await;
    (receiver, api, site, host)
}

/// The texts received so far, once each (a redelivery has its output's
/// `webhook-id`).
pub(crate) fn texts(receiver: &Receiver) -> Vec<String> {
    let mut outputs: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|r| {
            let id = r.headers["webhook-id"].to_str().unwrap().to_owned();
            (id, r.text().to_owned())
        })
        .collect();
    outputs.dedup();
    outputs.into_iter().map(|(_, text)| text).collect()
}

/// Posts a message whose turn calls `api`.
async fn call(host: &Host, session: &str, text: &str, api: &HeldApi) {
    let body =
        json!({"userId": "u", "sessionId": session, "text": text, "data": {"call": api.url}});
    assert_eq!(post(&host.url("waits"), &body, &[]).await.status(), 202);
}

#[tokio::test]
async fn turns_waiting_on_an_api_hold_no_scarce_slot_and_hold_back_no_other_flow() {
    const TURNS: usize = 300;
    let receiver = Receiver::start().await;
    let api = HeldApi::start().await;
    let site = waiting_site(
        &receiver,
        &api,
        "runtime.warm_instances = 4\nlimits.deadline = \"60s\"",
        &format!(
            "[endpoints.quick]\nflow = \"echo\"\nwebhook_url = \"{}\"",
            receiver.url()
        ),
        "",
    );
    let host = site.start().await;

    for n in 0..TURNS {
        let body = json!({
            "userId": "u",
            "sessionId": format!("s{n}"),
            "text": format!("turn {n}"),
            "data": {"call": api.url},
        });
        assert_eq!(post(&host.url("waits"), &body, &[]).await.status(), 202);
    }
    // Every turn waits on the API at once: 300, with 4 warm instances (the
    // pool was once the bound, and a flow had half of it).
    api.wait_holding(TURNS).await;

    // Another flow is served while they wait.
    send(&host.url("quick"), "other", "not held back").await;
    receiver
        .wait_for_text("other", |text| text == "not held back")
        .await;
    assert_eq!(api.holding.load(Ordering::SeqCst), TURNS, "still waiting");

    // Released, each turn ends with what the API answered.
    api.release.send(true).unwrap();
    let received = receiver.wait_for(1 + 2 * TURNS).await;
    let answered = received
        .iter()
        .filter(|r| r.text().starts_with("turn "))
        .filter(|r| r.body["AIOutput"]["data"]["status"] == 200)
        .count();
    assert_eq!(answered, TURNS);
}

#[tokio::test]
async fn what_a_flow_says_before_it_waits_is_heard_while_it_waits() {
    let (receiver, api, _site, host) = waiting_host("", "").await;

    call(&host, "s", "order 42", &api).await;
    api.wait_holding(1).await;
    receiver.wait_for_text("s", |text| text == CHECKING).await;
    assert_eq!(
        api.holding.load(Ordering::SeqCst),
        1,
        "the API still holds it"
    );

    api.release.send(true).unwrap();
    let received = receiver.wait_for(2).await;
    assert_eq!(
        texts(&receiver),
        [CHECKING, "order 42"],
        "in the order said"
    );
    assert_eq!(received[1].body["AIOutput"]["data"]["status"], 200);
}

#[tokio::test]
async fn an_at_end_endpoint_sends_a_turns_outputs_when_it_ends() {
    let (receiver, api, _site, host) = waiting_host(r#"output_timing = "at-end""#, "").await;

    call(&host, "s", "order 42", &api).await;
    api.wait_holding(1).await;
    // The flow said its first output before it called the API; as said,
    // it would arrive in milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.received().is_empty(),
        "nothing before the turn ends"
    );

    api.release.send(true).unwrap();
    receiver.wait_for(2).await;
    assert_eq!(texts(&receiver), [CHECKING, "order 42"]);
}

#[tokio::test]
async fn a_turn_that_fails_after_saying_keeps_what_it_said_and_logs_it() {
    let (receiver, api, _site, host) = waiting_host("", "[limits]\ndeadline = \"1s\"\n").await;

    // The API answers after the flow's deadline: the turn fails after its
    // first output went out.
    call(&host, "s", "order 42", &api).await;
    receiver.wait_for_text("s", |text| text == CHECKING).await;
    host.wait_for_log(&["deadline 1 s exceeded"]).await;
    host.wait_for_log(&["the turn failed after some of its outputs were sent; those stand"])
        .await;
    api.release.send(true).unwrap();

    // The session goes on: the next turn runs, and nothing more of the
    // failed one arrives.
    call(&host, "s", "order 43", &api).await;
    receiver.wait_for(3).await;
    assert_eq!(texts(&receiver), [CHECKING, CHECKING, "order 43"]);
}

#[tokio::test]
async fn a_turn_run_again_after_a_crash_does_not_repeat_what_it_said() {
    let (receiver, api, site, host) = waiting_host("", "").await;

    call(&host, "s", "order 42", &api).await;
    receiver.wait_for_text("s", |text| text == CHECKING).await;
    // Killed while the turn waits: the message is unfinished, its first
    // output committed and delivered.
    host.kill().await;
    api.release.send(true).unwrap();

    // The next start runs the message again from the top; the flow says its
    // first output again, which is already kept and sent, so it is not
    // stored or sent twice.
    let host = site.start().await;
    receiver.wait_for_text("s", |text| text == "order 42").await;
    host.wait_for_log(&["message handled"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The kill may have cut off the record of the first delivery: then it
    // is delivered again, under the same id, which receivers drop.
    assert_eq!(texts(&receiver), [CHECKING, "order 42"]);
}
