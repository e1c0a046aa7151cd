//! Sessions that end: reset by an operator (in its place in the session's
//! order), ended by the flow, or expired after `session_ttl` of idleness.
//! Each starts the session again from an empty context; the user's
//! profile stays.

use std::time::Duration;

use crate::support::{Receiver, Site, admin, endpoint, send};

const TOKEN: &str = "sessions-admin-token";

#[tokio::test]
async fn an_operator_resets_a_session_after_what_came_before() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{TOKEN}\"\n{}",
        endpoint("shop", "faulty", &receiver)
    );
    let site = Site::new(&["faulty"], &config);
    let host = site.start().await;
    let url = host.url("shop");

    send(&url, "s1", "one").await;
    send(&url, "s1", "two").await;
    send(&url, "other", "one").await;
    let (status, answer) = admin(&host, "DELETE", "/admin/endpoints/shop/sessions/s1", TOKEN).await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["traceId"].as_str().is_some(), "{answer}");
    send(&url, "s1", "three").await;
    send(&url, "other", "two").await;

    assert_eq!(
        receiver.wait_for_text("s1", |t| t.ends_with("three")).await,
        "1: three",
        "the reset ran after two and before three"
    );
    assert_eq!(
        receiver
            .wait_for_text("other", |t| t.ends_with("two"))
            .await,
        "2: two",
        "other sessions keep theirs"
    );
    let texts: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.session() == "s1")
        .map(|r| r.text().to_owned())
        .collect();
    assert_eq!(texts, ["1: one", "2: two", "1: three"]);

    let (status, problem) =
        admin(&host, "DELETE", "/admin/endpoints/nope/sessions/s1", TOKEN).await;
    assert_eq!(status, 404, "{problem}");
}

#[tokio::test]
async fn a_flow_ends_its_session_and_the_next_message_starts_afresh() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint("shop", "faulty", &receiver));
    let host = site.start().await;
    let url = host.url("shop");
    for text in ["one", "end", "two", "three"] {
        send(&url, "s1", text).await;
    }
    let received = receiver.wait_for(4).await;
    let texts: Vec<&str> = received.iter().map(|r| r.text()).collect();
    assert_eq!(texts, ["1: one", "2: end", "1: two", "2: three"]);
}

#[tokio::test]
async fn a_session_idle_past_its_ttl_starts_afresh() {
    let receiver = Receiver::start().await;
    let config = format!(
        "{}session_ttl = \"3s\"\n",
        endpoint("shop", "faulty", &receiver)
    );
    let site = Site::new(&["faulty"], &config);
    let host = site.start().await;
    let url = host.url("shop");

    // Used more often than the TTL: it lasts, however long in all.
    for n in 1..=4 {
        send(&url, "s1", &format!("m{n}")).await;
        receiver.wait_for(n).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // Then idle for longer: it starts again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    send(&url, "s1", "back").await;
    receiver.wait_for(5).await;
    let texts: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.text().to_owned())
        .collect();
    assert_eq!(texts, ["1: m1", "2: m2", "3: m3", "4: m4", "1: back"]);
    host.wait_for_log(&["session_ttl", "starts afresh"]).await;
}
