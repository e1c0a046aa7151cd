//! REST mode: the POST waits for its message's turn and is answered with
//! the flow's outputs, in the product's REST shape; nothing goes to a
//! webhook. The turn is the same durable, session-ordered turn as a
//! webhook endpoint's.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{HeldApi, Site, client};
use crate::waiting::CHECKING;

/// POSTs `body` to `url` with `headers`; the status and the JSON answer.
async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let response = crate::support::post(url, body, headers).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

const ADMIN_TOKEN: &str = "rest-admin-token-0123456789";

fn rest_site(flows: &[&str], rest: &str) -> Site {
    Site::new(
        flows,
        &format!(
            "admin_token = \"{ADMIN_TOKEN}\"\n\
             [endpoints.api]\nflow = \"order-help\"\nmode = \"rest\"\n{rest}\n"
        ),
    )
}

#[tokio::test]
async fn a_conversation_of_three_turns_is_answered_in_the_rest_shape() {
    let site = rest_site(&["order-help"], "");
    let host = site.start().await;
    let url = host.url("api");
    let say = |text: &str| json!({"userId": "user123", "sessionId": "session123", "text": text});

    let (status, first) = post(&url, &say("Hello, I need help with my order"), &[]).await;
    assert_eq!(status, 200, "{first}");
    let trace_id = first["outputStack"][0]["traceId"].as_str().unwrap();
    assert!(trace_id.starts_with("endpoint-httpIncomingMessage-"));
    assert_eq!(
        first,
        json!({
            "userId": "user123",
            "sessionId": "session123",
            "text": "I’d be happy to help. Could you please provide your order number?",
            "data": {},
            "outputStack": [{
                "text": "I’d be happy to help. Could you please provide your order number?",
                "data": {},
                "traceId": trace_id,
                "disableSensitiveLogging": false,
                "source": "bot",
            }],
        })
    );

    let (status, second) = post(&url, &say("It is A-12345"), &[]).await;
    assert_eq!(status, 200, "{second}");
    assert!(
        second["text"]
            .as_str()
            .unwrap()
            .starts_with("Thanks! Order A-12345 is"),
        "{second}"
    );
    assert_eq!(second["data"]["orderNumber"], "A-12345");

    let (status, third) = post(&url, &say("When will it arrive?"), &[]).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["text"], "Order A-12345 should arrive in 4 days.");
    assert_eq!(
        third["data"],
        json!({"orderNumber": "A-12345", "etaDays": 4})
    );
    assert_ne!(
        third["outputStack"][0]["traceId"], trace_id,
        "a trace id per message"
    );
    // The console's chat gets a REST endpoint's answer the same way.
    let chat = client()
        .post(format!("http://{}/admin/endpoints/api/messages", host.addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(&say("new order"))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let chat: Value = chat.json().await.unwrap();
    assert_eq!(chat["outputStack"].as_array().unwrap().len(), 1, "{chat}");
    host.wait_for_log(&["message handled", "session=session123"])
        .await;
}

#[tokio::test]
async fn a_failed_turn_is_a_problem_naming_its_trace_id() {
    let site = Site::new(
        &["faulty"],
        "[endpoints.api]\nflow = \"faulty\"\nmode = \"rest\"\n",
    );
    let host = site.start().await;
    let body = json!({"userId": "u", "sessionId": "s", "text": "error"});
    let (status, problem) = post(&host.url("api"), &body, &[]).await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["type"], "urn:flowhost:problem:flow-failed");
    assert!(
        problem["traceId"]
            .as_str()
            .unwrap()
            .starts_with("endpoint-httpIncomingMessage-"),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the faulty flow fails on request"),
        "{problem}"
    );
    // Nothing of the failed turn was kept: the count starts at 1.
    let body = json!({"userId": "u", "sessionId": "s", "text": "next"});
    let (status, answer) = post(&host.url("api"), &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["text"], "1: next");
    // Inject and notify push through a webhook, which this endpoint has not.
    for route in ["inject", "notify"] {
        let url = format!("{}/{route}", host.url("api"));
        let (status, problem) = post(&url, &body, &[]).await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(
            problem["type"],
            "urn:flowhost:problem:not-a-webhook-endpoint"
        );
    }
}

#[tokio::test]
async fn past_rest_timeout_a_504_and_the_same_key_later_gets_the_answer() {
    let api = HeldApi::start().await;
    let port = api.port();
    let site = Site::new(
        &[],
        &format!(
            "runtime.private_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n\
             limits.deadline = \"60s\"\n\
             [endpoints.api]\nflow = \"waiting\"\nmode = \"rest\"\nrest_timeout = \"1s\"\n"
        ),
    );
    site.add_flow(
        "waiting",
        "waiting",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]"
        )),
    );
    let host = site.start().await;
    let url = host.url("api");
    let body =
        json!({"userId": "u", "sessionId": "s", "text": "my order?", "data": {"call": api.url}});
    let key = [("Idempotency-Key", "order-7")];

    let (status, problem) = post(&url, &body, &key).await;
    assert_eq!(status, 504, "{problem}");
    assert_eq!(problem["type"], "urn:flowhost:problem:rest-timeout");
    let trace_id = problem["traceId"].as_str().unwrap().to_owned();
    // A second message of the session waits behind the first.
    let later = {
        let url = url.clone();
        tokio::spawn(async move {
            let body = json!({"userId": "u", "sessionId": "s", "text": "and now?", "data": {}});
            let started = std::time::Instant::now();
            let (status, answer) = post(&url, &body, &[]).await;
            (status, answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.release.send(true).unwrap();

    let (status, answer) = post(&url, &body, &key).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["text"], format!("{CHECKING}\nmy order?"));
    assert_eq!(answer["data"], json!({"status": 200}));
    assert_eq!(answer["outputStack"][0]["traceId"], trace_id.as_str());
    let (status, second, waited) = later.await.unwrap();
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["text"], format!("{CHECKING}\nand now?"));
    assert!(waited >= Duration::from_millis(300), "it waited its turn");
    // Nothing waits to be sent: the outputs were answered, not queued for
    // a webhook, and no delivery was attempted.
    let metrics = client()
        .get(format!("http://{}/metrics", host.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("flowhost_turns_total{endpoint=\"api\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("flowhost_deliveries_total{endpoint=\"api\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowhost_outputs_pending{endpoint=\"api\"} 0\n"),
        "{metrics}"
    );
}
