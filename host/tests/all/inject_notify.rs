//! Inject & Notify: a backend pushes into a conversation, with the
//! endpoint's own auth. An injected message runs the flow, which is told
//! it was injected; a notification is sent to the webhook as the bot's
//! output without running anything. Both wait their turn in the session's
//! order, among the user's messages.

use serde_json::{Value, json};

use crate::support::{Receiver, Site, endpoint, post};

/// A POST to `url` + `route` (`""`, `/inject` or `/notify`); its trace id.
async fn send(url: &str, route: &str, session: &str, text: &str) -> String {
    let body = json!({"userId": "u", "sessionId": session, "text": text});
    let response = post(&format!("{url}{route}"), &body, &[]).await;
    assert_eq!(response.status(), 202, "{route} {text}");
    let answer: Value = response.json().await.unwrap();
    answer["traceId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn injected_messages_and_notifications_keep_their_place_among_the_users() {
    const ROUNDS: usize = 10;
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint("shop", "faulty", &receiver));
    let host = site.start().await;
    let url = host.url("shop");

    // Four at a time into one session, as fast as they go: each waits for
    // those before it.
    let mut expected = Vec::new();
    for round in 0..ROUNDS {
        let count = 2 * round;
        send(&url, "", "s1", &format!("a{round}")).await;
        expected.push(format!("{}: a{round}", count + 1));
        send(&url, "/inject", "s1", &format!("shipped{round}")).await;
        expected.push(format!("{}: shipped{round} (injected)", count + 2));
        send(&url, "/notify", "s1", &format!("note{round}")).await;
        expected.push(format!("note{round}"));
    }
    let received = receiver.wait_for(expected.len()).await;
    let texts: Vec<&str> = received.iter().map(|r| r.text()).collect();
    assert_eq!(texts, expected, "in the order sent, each once");
}

#[tokio::test]
async fn a_notification_is_the_bots_output_in_the_seeds_shape() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint("shop", "faulty", &receiver));
    let host = site.start().await;
    let body = json!({
        "userId": "user123",
        "sessionId": "session123",
        "text": "Your parcel left the warehouse",
        "data": {"tracking": "X1"},
    });
    let response = post(&format!("{}/notify", host.url("shop")), &body, &[]).await;
    assert_eq!(response.status(), 202);
    let trace_id = response.json::<Value>().await.unwrap()["traceId"].clone();
    let received = receiver.wait_for(1).await;
    assert_eq!(
        received[0].body,
        json!({
            "userId": "user123",
            "sessionId": "session123",
            "AIOutput": {
                "text": "Your parcel left the warehouse",
                "data": {"tracking": "X1"},
                "traceId": trace_id,
                "disableSensitiveLogging": false,
                "source": "bot",
            },
        })
    );
    // The flow did not run: its count starts at 1 with the next message.
    send(&host.url("shop"), "", "session123", "hi").await;
    assert_eq!(
        receiver
            .wait_for_text("session123", |t| t.ends_with("hi"))
            .await,
        "1: hi"
    );
}

#[tokio::test]
async fn inject_and_notify_take_the_endpoints_auth_and_checks() {
    let receiver = Receiver::start().await;
    let config = format!(
        "{}auth = \"api-key\"\n",
        endpoint("shop", "faulty", &receiver)
    );
    let site = Site::new(&["faulty"], &config);
    let host = site.start().await;
    let created = site.flowhost(&["keys", "create", "shop"]).await;
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let url = host.url("shop");
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"});
    for route in ["/inject", "/notify"] {
        let without = post(&format!("{url}{route}"), &body, &[]).await;
        assert_eq!(without.status(), 401, "{route}");
        let with = post(
            &format!("{url}{route}"),
            &body,
            &[("X-Webhook-Key", key.as_str())],
        )
        .await;
        assert_eq!(with.status(), 202, "{route}");
        let empty = json!({"userId": "u", "sessionId": "s"});
        let invalid = post(
            &format!("{url}{route}"),
            &empty,
            &[("X-Webhook-Key", key.as_str())],
        )
        .await;
        assert_eq!(invalid.status(), 422, "{route}: text or data is required");
    }
    receiver.wait_for(2).await;
}
