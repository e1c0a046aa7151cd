//! State across messages: the session's context, the user's profile, and
//! both surviving a restart.

use serde_json::json;

use crate::support::{Host, Receiver, Site, post};

fn site(receiver: &Receiver) -> Site {
    Site::new(
        &["order-help", "greeter"],
        &format!(
            r#"
            [endpoints.support]
            flow = "order-help"
            webhook_url = "{url}"

            [endpoints.hello]
            flow = "greeter"
            webhook_url = "{url}"
            "#,
            url = receiver.url()
        ),
    )
}

/// Sends a message and waits for its one output; returns its text and data.
async fn say(
    host: &Host,
    receiver: &Receiver,
    endpoint: &str,
    user: &str,
    session: &str,
    text: &str,
) -> (String, serde_json::Value) {
    let before = receiver.received().len();
    let response = post(
        &host.url(endpoint),
        &json!({"userId": user, "sessionId": session, "text": text}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let received = receiver.wait_for(before + 1).await;
    let last = &received[before];
    (
        last.text().to_owned(),
        last.body["AIOutput"]["data"].clone(),
    )
}

#[tokio::test]
async fn order_help_keeps_the_order_number_across_three_messages() {
    let receiver = Receiver::start().await;
    let site = site(&receiver);
    let host = site.start().await;

    let (text, data) = say(
        &host,
        &receiver,
        "support",
        "u1",
        "s1",
        "Hello, I need help with my order",
    )
    .await;
    assert_eq!(
        text,
        "I’d be happy to help. Could you please provide your order number?"
    );
    assert_eq!(data, json!({}));

    let (text, data) = say(&host, &receiver, "support", "u1", "s1", "It is A-12345.").await;
    assert!(text.contains("Order A-12345"), "{text}");
    assert_eq!(data["orderNumber"], "A-12345");

    let (text, data) = say(
        &host,
        &receiver,
        "support",
        "u1",
        "s1",
        "When will it arrive?",
    )
    .await;
    assert!(text.starts_with("Order A-12345 should arrive in"), "{text}");
    assert_eq!(data["orderNumber"], "A-12345");
    assert!(data["etaDays"].is_u64());

    // Another session of the same user starts afresh: context is per session.
    let (text, _) = say(
        &host,
        &receiver,
        "support",
        "u1",
        "s2",
        "When will it arrive?",
    )
    .await;
    assert!(text.contains("provide your order number"), "{text}");
}

#[tokio::test]
async fn greeter_remembers_the_user_across_sessions() {
    let receiver = Receiver::start().await;
    let site = site(&receiver);
    let host = site.start().await;

    let (text, _) = say(&host, &receiver, "hello", "ada", "monday", "Hi").await;
    assert_eq!(text, "Hello! What's your name?");
    let (text, _) = say(&host, &receiver, "hello", "ada", "monday", "Ada").await;
    assert_eq!(text, "Nice to meet you, Ada!");

    let (text, _) = say(&host, &receiver, "hello", "ada", "tuesday", "Hi again").await;
    assert_eq!(text, "Welcome back, Ada!");

    let (text, _) = say(&host, &receiver, "hello", "bob", "tuesday", "Hi").await;
    assert_eq!(text, "Hello! What's your name?", "profiles are per user");
}

#[tokio::test]
async fn context_and_profile_survive_a_restart() {
    let receiver = Receiver::start().await;
    let site = site(&receiver);

    let host = site.start().await;
    let token = |url: String| url.rsplit('/').next().unwrap().to_owned();
    let tokens = (token(host.url("support")), token(host.url("hello")));
    say(
        &host,
        &receiver,
        "support",
        "u1",
        "s1",
        "Hello, I need help with my order",
    )
    .await;
    say(
        &host,
        &receiver,
        "support",
        "u1",
        "s1",
        "Order 98765 please",
    )
    .await;
    say(&host, &receiver, "hello", "ada", "monday", "My name is Ada").await;
    assert!(host.terminate().await.success());

    let host = site.start().await;
    assert_eq!(
        (token(host.url("support")), token(host.url("hello"))),
        tokens,
        "generated URL tokens are kept"
    );
    let (text, _) = say(
        &host,
        &receiver,
        "support",
        "u1",
        "s1",
        "When will it arrive?",
    )
    .await;
    assert!(text.starts_with("Order 98765 should arrive"), "{text}");
    let (text, _) = say(&host, &receiver, "hello", "ada", "wednesday", "Hi").await;
    assert_eq!(text, "Welcome back, Ada!");
}
