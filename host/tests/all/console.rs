//! The web console at `/console` and the admin routes it stands on: API
//! keys, a message sent as a user, the stream of delivery attempts; then
//! the console itself in a real browser (headless Chromium over
//! WebDriver).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::{Host, Receiver, Site, admin, client, post};

const ADMIN: &str = "console-admin-token-0123456789";

fn site(receiver: &Receiver) -> Site {
    Site::new(
        &["order-help", "echo"],
        &format!(
            r#"
            admin_token = "{ADMIN}"

            [delivery]
            retry_schedule = ["10ms"]

            [endpoints.support]
            flow = "order-help"
            auth = "api-key"
            webhook_url = "{url}"

            [endpoints.echo]
            flow = "echo"
            webhook_url = "{url}"
            "#,
            url = receiver.url()
        ),
    )
}

/// POSTs `text` to the support endpoint with `key`; the status.
async fn with_key(host: &Host, key: &str, text: &str) -> u16 {
    let body = json!({"userId": "u", "sessionId": "with-key", "text": text});
    post(&host.url("support"), &body, &[("X-Webhook-Key", key)])
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn keys_messages_and_the_delivery_stream_through_the_admin_api() {
    let receiver = Receiver::start().await;
    let site = site(&receiver);
    let host = site.start().await;
    let base = format!("http://{}", host.addr);

    // A key, created: shown once, listed by its first characters only.
    let created: Value = client()
        .post(format!("{base}/admin/endpoints/support/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "crm"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("fhk_"), "{created}");
    assert_eq!(with_key(&host, &key, "hi").await, 202);
    let (status, listed) = admin(&host, "GET", "/admin/endpoints/support/keys", ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"][0]["name"], "crm");
    assert!(
        !listed.to_string().contains(&key),
        "the key is never listed"
    );
    // Revoked: refused at once.
    let revoked = client()
        .delete(format!("{base}/admin/endpoints/support/keys/crm"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(with_key(&host, &key, "hi").await, 401);
    let (status, listed) = admin(&host, "GET", "/admin/endpoints/support/keys", ADMIN).await;
    assert_eq!(status, 200);
    assert!(listed["keys"][0]["revokedAt"].is_i64(), "{listed}");

    // The stream of the endpoint's delivery attempts, opened before the
    // message is sent as a user (no key needed behind the admin token).
    let events = client()
        .get(format!("{base}/admin/endpoints/support/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut events = events;
    let sent = client()
        .post(format!("{base}/admin/endpoints/support/messages"))
        .bearer_auth(ADMIN)
        .json(&json!({"userId": "u", "sessionId": "chat-1", "text": "my order is 12345"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let mut text = String::new();
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let chunk = events.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = text
                .lines()
                .find(|line| line.starts_with("data:") && line.contains("chat-1"))
            {
                let data: Value = serde_json::from_str(line["data:".len()..].trim()).unwrap();
                return data;
            }
        }
    })
    .await
    .expect("a delivery event");
    assert_eq!(event["outcome"], "delivered");
    assert_eq!(event["status"], 200);
    assert_eq!(event["sessionId"], "chat-1");
    let said = event["body"]["AIOutput"]["text"].as_str().unwrap();
    assert!(said.starts_with("Thanks! Order 12345 is"), "{said}");
    assert!(text.contains("event: delivery"), "{text}");
    // The receiver got the same output.
    receiver
        .wait_for_text("chat-1", |t| t.starts_with("Thanks! Order 12345"))
        .await;
}

#[tokio::test]
async fn the_console_in_a_browser_signs_in_manages_keys_chats_and_redelivers() {
    let receiver = Receiver::start().await;
    let site = site(&receiver);
    let host = site.start().await;
    let base = format!("http://{}", host.addr);

    // A dead letter to redeliver: the echo endpoint's receiver fails twice.
    receiver.answer_with(&[500, 500]);
    let body = json!({"userId": "u", "sessionId": "dead-1", "text": "lost and found"});
    assert_eq!(post(&host.url("echo"), &body, &[]).await.status(), 202);
    host.wait_for_log(&["the output is a dead letter"]).await;

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{base}/console"))
        .await
        .unwrap();

    // A wrong token is refused; the right one opens the console.
    browser.type_into("#token", "not-the-token").await;
    browser.click("#sign-in").await;
    browser
        .text_until("#login-error", |t| t.contains("not the admin token"))
        .await;
    browser.type_into("#token", ADMIN).await;
    browser.click("#sign-in").await;
    browser
        .text_until("[data-endpoint=support]", |t| {
            t.contains("order-help") && t.contains("API key") && t.contains("/endpoint/")
        })
        .await;
    browser
        .text_until("[data-endpoint=echo]", |t| t.contains("no auth"))
        .await;
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(ADMIN),
        "the token is never in the URL"
    );

    // A key created, shown once, working; then revoked, refused.
    browser.click("[data-endpoint=support]").await;
    browser.type_into("#key-name", "from-the-console").await;
    browser.click("#create-key").await;
    let key = browser
        .text_until("#new-key-value", |t| t.starts_with("fhk_"))
        .await;
    assert_eq!(with_key(&host, &key, "hello").await, 202);
    let row = browser
        .text_until("#key-rows tr", |t| t.contains("from-the-console"))
        .await;
    assert!(row.contains("active"), "{row}");
    browser.click("[data-revoke]").await;
    browser.client.accept_alert().await.unwrap();
    browser
        .text_until("#key-rows tr", |t| t.contains("revoked"))
        .await;
    assert_eq!(with_key(&host, &key, "hello").await, 401);

    // The flows, with their versions.
    browser.click("[data-view=flows]").await;
    browser
        .text_until("[data-flow=order-help]", |t| t.contains("ms"))
        .await;

    // Three turns with order-help, the outputs as they are delivered.
    browser.click("[data-view=chat]").await;
    browser
        .find("#chat-endpoint")
        .await
        .select_by_value("support")
        .await
        .unwrap();
    let turns = [
        (
            "Hello, I need help with my order",
            "Could you please provide your order number?",
        ),
        ("It is 12345", "Thanks! Order 12345 is"),
        (
            "When will it arrive?",
            "Order 12345 should arrive in 2 days.",
        ),
    ];
    for (n, (said, answer)) in turns.iter().enumerate() {
        browser.type_into("#chat-text", said).await;
        browser.click("#chat-send").await;
        // The log: a greeting, then each turn's message and answer.
        let bubbles = format!(
            "#chat-log .bubble.bot[data-outcome=delivered]:nth-child({})",
            2 * n + 3
        );
        let text = browser.text_until(&bubbles, |t| t.contains(answer)).await;
        assert!(text.contains("delivered (200)"), "{text}");
    }
    // For the README: once the last notice has gone.
    browser.text_until("#toast", str::is_empty).await;
    let screenshot = browser.screenshot().await;

    // The dead letter, redelivered from the deliveries view.
    browser.click("[data-view=deliveries]").await;
    browser
        .find("#delivery-endpoint")
        .await
        .select_by_value("echo")
        .await
        .unwrap();
    browser.click("[data-filter=dead]").await;
    browser
        .text_until("#delivery-rows tr[data-status=dead]", |t| {
            t.contains("dead-1")
        })
        .await;
    browser.click("[data-redeliver]").await;
    receiver
        .wait_for_text("dead-1", |t| t == "lost and found")
        .await;
    browser.click("[data-filter=all]").await;
    browser
        .text_until("#delivery-rows tr", |t| t.contains("delivered"))
        .await;

    let shots = crate::support::repo().join("target/console");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("chat.png"), screenshot).unwrap();
    std::fs::write(shots.join("deliveries.png"), browser.screenshot().await).unwrap();
    browser.client.close().await.unwrap();
}
