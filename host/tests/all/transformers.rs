//! Transformers: components between an endpoint's channel and its flow,
//! which turn what the channel sends into a message and each output into
//! what the channel expects. Here with `shaper` (a test transformer written
//! against the WIT, with misbehaviour on request) and the two examples,
//! `slack` and `sms`, each against the flow it serves.

use serde_json::{Value, json};

use crate::support::{Host, Receiver, Site, admin, client, post};

const ADMIN: &str = "transformers-admin-token";

/// A `[endpoints.<name>]` table running `flow` behind `transformer`.
fn endpoint(name: &str, flow: &str, transformer: &str, receiver: &Receiver, extra: &str) -> String {
    format!(
        "[endpoints.{name}]\nflow = \"{flow}\"\ntransformer = \"{transformer}\"\n\
         url_token = \"{name}-endpoint-token-000000\"\nwebhook_url = \"{}\"\n{extra}\n",
        receiver.url()
    )
}

/// The URL of endpoint `name` as [`endpoint`] configures it.
fn url(host: &Host, name: &str) -> String {
    format!("http://{}/endpoint/{name}-endpoint-token-000000", host.addr)
}

/// What the shaper takes: the seed's fields, and what to do.
fn shaper_body(session: &str, text: &str, what: Option<&str>) -> Value {
    let mut body = json!({"userId": "u", "sessionId": session, "text": text});
    if let Some(what) = what {
        body["do"] = what.into();
    }
    body
}

async fn problem_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_transformer_shapes_what_comes_in_and_what_goes_out() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{ADMIN}\"\n{}",
        endpoint("shaped", "echo", "shaper", &receiver, "")
    );
    let site = Site::new(&["echo"], &config);
    site.add_flow("shaper", "shaper", Some("[config]\ntag = \"v1\"\n"));
    let host = site.start().await;

    // A message it runs: the flow's output comes back in the shaper's shape.
    let response = post(
        &url(&host, "shaped"),
        &shaper_body("s1", "hello", None),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let received = receiver.wait_for(1).await;
    assert_eq!(
        received[0].body,
        json!({"shaped": "v1", "to": "s1", "text": "hello"})
    );
    assert_eq!(received[0].headers["content-type"], "application/json");
    assert!(received[0].headers.contains_key("webhook-id"));

    // An answer of its own, at once, and nothing run.
    let response = post(
        &url(&host, "shaped"),
        &shaper_body("s1", "x", Some("respond")),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.text().await.unwrap(), "pong");
    let response = post(
        &url(&host, "shaped"),
        &shaper_body("s1", "x", Some("ignore")),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);

    // An output it drops is done, and the session's next one follows it.
    post(
        &url(&host, "shaped"),
        &shaper_body("s1", "drop me", None),
        &[],
    )
    .await;
    post(
        &url(&host, "shaped"),
        &shaper_body("s1", "after", None),
        &[],
    )
    .await;
    receiver.wait_for(2).await;
    let texts: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.body["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["hello", "after"], "the dropped output is not sent");

    // A message that does not pass the endpoint's checks is the
    // transformer failing.
    let response = post(
        &url(&host, "shaped"),
        &shaper_body("s1", "x", Some("bad-message")),
        &[],
    )
    .await;
    let (status, problem) = problem_of(response).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "urn:flowhost:problem:transformer-failed");
    assert!(
        problem["detail"].as_str().unwrap().contains("userId"),
        "{problem}"
    );

    // The operator sees it as a transformer.
    let (_, flows) = admin(&host, "GET", "/admin/flows", ADMIN).await;
    let shaper = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "shaper")
        .unwrap()
        .clone();
    assert_eq!(shaper["kind"], "transformer", "{flows}");
    assert_eq!(shaper["world"], "flowhost:flow/transformer@0.3.0");
    let (_, endpoints) = admin(&host, "GET", "/admin/endpoints", ADMIN).await;
    assert_eq!(
        endpoints["endpoints"][0]["transformer"], "shaper",
        "{endpoints}"
    );

    // And counts its calls, by what they came to.
    let metrics = client()
        .get(format!("http://{}/metrics", host.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (function, outcome, count) in [
        ("handle-input", "run", 3),
        ("handle-input", "respond", 1),
        ("handle-input", "ignore", 1),
        ("handle-input", "refused", 1),
        ("handle-output", "send", 2),
        ("handle-output", "drop", 1),
    ] {
        let line = format!(
            "flowhost_transformer_calls_total{{endpoint=\"shaped\",transformer=\"shaper\",\
             function=\"{function}\",outcome=\"{outcome}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_failing_transformer_refuses_or_steps_aside_as_the_endpoint_says() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{ADMIN}\"\n{}{}",
        endpoint("strict", "echo", "shaper", &receiver, ""),
        endpoint(
            "lenient",
            "echo",
            "shaper",
            &receiver,
            "transformer_abort_on_error = false"
        ),
    );
    let site = Site::new(&["echo", "shaper"], &config);
    let host = site.start().await;

    // In: with abort on, the request is refused and nothing is stored.
    let response = post(
        &url(&host, "strict"),
        &shaper_body("in", "hello", Some("trap")),
        &[],
    )
    .await;
    let (status, problem) = problem_of(response).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "urn:flowhost:problem:transformer-failed");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the endpoint's transformer shaper failed"),
        "{problem}"
    );
    host.wait_for_log(&["the transformer failed; the request is refused"])
        .await;
    // With abort off, the request is read as the seed's JSON.
    let response = post(
        &url(&host, "lenient"),
        &shaper_body("in", "hello", Some("trap")),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let received = receiver.wait_for(1).await;
    assert_eq!(
        received[0].body,
        json!({"shaped": "untagged", "to": "in", "text": "hello"})
    );
    host.wait_for_log(&["the request is read as the seed's JSON"])
        .await;

    // Out: the shaper traps on an output that says "trap". With abort
    // off, the output goes in the seed's JSON.
    let response = post(
        &url(&host, "lenient"),
        &shaper_body("out", "a trap", None),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let text = receiver.wait_for_text("out", |t| t == "a trap").await;
    assert_eq!(text, "a trap");
    // With abort on, it is a dead letter that says why.
    let response = post(
        &url(&host, "strict"),
        &shaper_body("out", "a trap", None),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    host.wait_for_log(&["the output is a dead letter"]).await;
    let (status, listing) =
        admin(&host, "GET", "/admin/endpoints/strict/dead-letters", ADMIN).await;
    assert_eq!(status, 200, "{listing}");
    let dead = &listing["deliveries"][0];
    assert_eq!(dead["status"], "dead", "{listing}");
    let error = dead["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("the transformer shaper failed"), "{error}");
    // Nothing of it reached the receiver.
    assert!(
        receiver
            .attempts()
            .iter()
            .all(|r| r.body["to"] != "out" || r.body["shaped"].is_null()),
        "{:?}",
        receiver.attempts()
    );
}

#[tokio::test]
async fn the_sandbox_holds_for_transformers() {
    let receiver = Receiver::start().await;
    let config = endpoint("boxed", "echo", "shaper", &receiver, "");
    let site = Site::new(&["echo"], &config);
    site.add_flow(
        "shaper",
        "shaper",
        Some("[limits]\ndeadline = \"1s\"\nmemory = \"16 MiB\"\n"),
    );
    let host = site.start().await;

    for (what, reason) in [
        ("loop", "deadline"),
        ("memory", "memory"),
        ("trap", "unreachable"),
        ("error", "asked to fail"),
    ] {
        let response = post(
            &url(&host, "boxed"),
            &shaper_body("s", what, Some(what)),
            &[],
        )
        .await;
        let (status, problem) = problem_of(response).await;
        assert_eq!(status, 422, "{what}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{what}: {detail}");
        host.wait_for_log(&["the transformer failed", reason]).await;
    }
    // The host and the endpoint are fine: the next message runs.
    let response = post(
        &url(&host, "boxed"),
        &shaper_body("s", "still here", None),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].body["text"], "still here");
    let health = client()
        .get(format!("http://{}/readyz", host.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

// --- Slack -----------------------------------------------------------------

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// The Slack endpoint: `order-help` behind the `slack` example, posting to
/// the receiver as if it were `chat.postMessage`.
async fn slack_site(receiver: &Receiver) -> (Site, Host) {
    let site = Site::new(
        &["order-help"],
        &endpoint("slack", "order-help", "slack", receiver, ""),
    );
    site.add_flow(
        "slack",
        "slack",
        Some(&format!(
            "[config]\nsigning_secret = \"{SLACK_SECRET}\"\nbot_token = \"xoxb-test-token\"\n"
        )),
    );
    let host = site.start().await;
    (site, host)
}

/// POSTs `body` to the Slack endpoint as Slack does: JSON, signed with
/// `secret` at the time now.
async fn slack_post(host: &Host, body: &Value, secret: &str) -> reqwest::Response {
    use hmac::{Hmac, Mac};
    let body = body.to_string();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    client()
        .post(url(host, "slack"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A Slack `event_callback` of a user's message in a channel.
fn slack_message(user: &str, channel: &str, text: &str) -> Value {
    json!({
        "token": "unused-verification-token",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "type": "event_callback",
        "event_id": "Ev0001",
        "event_time": 1_700_000_000,
        "event": {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": "1700000000.000100",
            "channel_type": "channel"
        }
    })
}

#[tokio::test]
async fn a_signed_slack_event_reaches_the_flow_and_its_answer_goes_back_as_slack_expects() {
    let receiver = Receiver::start().await;
    let (_site, host) = slack_site(&receiver).await;

    let response = slack_post(
        &host,
        &slack_message("U123", "C456", "Where is order 12345?"),
        SLACK_SECRET,
    )
    .await;
    assert_eq!(response.status(), 202);

    let received = receiver.wait_for(1).await;
    let posted = &received[0];
    assert_eq!(posted.body["channel"], "C456", "{}", posted.raw);
    let text = posted.body["text"].as_str().unwrap();
    assert!(text.starts_with("Thanks! Order 12345 is"), "{text}");
    assert_eq!(posted.headers["authorization"], "Bearer xoxb-test-token");
    assert!(
        posted.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        posted.headers
    );
    // The host's own headers still come with it.
    assert!(posted.headers.contains_key("webhook-id"));

    // The same conversation goes on in the channel: order-help remembers.
    slack_post(
        &host,
        &slack_message("U123", "C456", "when will it arrive?"),
        SLACK_SECRET,
    )
    .await;
    let received = receiver.wait_for(2).await;
    let text = received[1].body["text"].as_str().unwrap();
    assert!(text.starts_with("Order 12345 should arrive in"), "{text}");

    // A bot's message (the app's own, say) runs nothing.
    let mut from_a_bot = slack_message("U999", "C456", "I am a bot");
    from_a_bot["event"]["bot_id"] = "B0001".into();
    let response = slack_post(&host, &from_a_bot, SLACK_SECRET).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn slacks_url_verification_is_answered_at_once_and_a_bad_signature_is_refused() {
    let receiver = Receiver::start().await;
    let (_site, host) = slack_site(&receiver).await;

    let challenge = json!({
        "token": "unused-verification-token",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification"
    });
    let response = slack_post(&host, &challenge, SLACK_SECRET).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );

    // Signed with another secret, or not at all: 401, nothing run.
    let forged = slack_post(
        &host,
        &slack_message("U123", "C456", "order 12345"),
        "not-the-secret",
    )
    .await;
    assert_eq!(forged.status(), 401);
    let unsigned = post(
        &url(&host, "slack"),
        &slack_message("U123", "C456", "order 12345"),
        &[],
    )
    .await;
    assert_eq!(unsigned.status(), 401);
    let problem: Value = unsigned.json().await.unwrap();
    assert!(!problem.to_string().contains(SLACK_SECRET), "{problem}");

    // Only the signed message runs.
    slack_post(&host, &slack_message("U1", "C9", "hello"), SLACK_SECRET).await;
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].body["channel"], "C9");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.attempts().len(), 1, "{:?}", receiver.attempts());
}

// --- SMS -------------------------------------------------------------------

const SMS_TOKEN: &str = "twilio-auth-token-for-tests";
const SMS_PUBLIC_URL: &str = "https://sms.flowhost.test";

/// The manifest of the `sms` example: signatures checked, a form out.
fn sms_manifest() -> String {
    format!(
        "[config]\nfrom_number = \"+15550001111\"\naccount_sid = \"AC0001\"\n\
         auth_token = \"{SMS_TOKEN}\"\npublic_url = \"{SMS_PUBLIC_URL}\"\n"
    )
}

/// POSTs an SMS from `from` to endpoint `name` as a Twilio-style gateway
/// does: form-encoded, signed over the public URL and the sorted fields.
async fn sms_post(host: &Host, name: &str, from: &str, body: &str) -> reqwest::Response {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut fields = vec![
        ("Body", body.to_owned()),
        ("From", from.to_owned()),
        ("MessageSid", "SM0001".to_owned()),
        ("To", "+15550001111".to_owned()),
    ];
    fields.sort();
    let path = format!("/endpoint/{name}-endpoint-token-000000");
    let mut signed = format!("{SMS_PUBLIC_URL}{path}");
    for (name, value) in &fields {
        signed.push_str(name);
        signed.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SMS_TOKEN.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(n, v)| (*n, v.as_str())))
        .finish();
    client()
        .post(url(host, name))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(form)
        .send()
        .await
        .unwrap()
}

/// The form fields of a delivery.
fn form_of(raw: &str) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn an_sms_conversation_of_three_turns_goes_through_a_form_encoded_gateway() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["order-help"],
        &endpoint("sms", "order-help", "sms", &receiver, ""),
    );
    site.add_flow("sms", "sms", Some(&sms_manifest()));
    let host = site.start().await;

    let turns = [
        ("hi", "I’d be happy to help"),
        ("it is 12345", "Thanks! Order 12345 is"),
        ("when does it arrive?", "Order 12345 should arrive in"),
    ];
    for (n, (text, _)) in turns.iter().enumerate() {
        let response = sms_post(&host, "sms", "+15557654321", text).await;
        assert_eq!(response.status(), 200, "{text}");
        assert_eq!(response.headers()["content-type"], "text/xml");
        let twiml = response.text().await.unwrap();
        assert!(twiml.contains("<Response></Response>"), "{twiml}");
        // One turn at a time, so that the receiver sees them in order.
        receiver.wait_for(n + 1).await;
    }
    let received = receiver.received();
    for ((_, expected), posted) in turns.iter().zip(&received) {
        let form = form_of(&posted.raw);
        assert_eq!(form["To"], "+15557654321", "{}", posted.raw);
        assert_eq!(form["From"], "+15550001111");
        assert!(form["Body"].starts_with(expected), "{}", form["Body"]);
        assert_eq!(
            posted.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        // Basic auth of the account, from the manifest.
        assert!(
            posted.headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("Basic "),
            "{:?}",
            posted.headers
        );
    }

    // A forged signature is refused, and nothing runs.
    let forged = client()
        .post(url(&host, "sms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body("From=%2B15557654321&Body=hi&To=%2B15550001111")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test]
async fn a_transformer_swapped_by_hot_reload_mid_conversation_takes_the_next_message() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{ADMIN}\"\nwatch_debounce = \"50ms\"\n{}",
        endpoint("phone", "order-help", "channel", &receiver, "")
    );
    let site = Site::new(&["order-help"], &config);
    site.add_flow("channel", "sms", Some(&sms_manifest()));
    let host = site.start().await;

    // Two turns by SMS.
    assert_eq!(
        sms_post(&host, "phone", "+15557654321", "hi")
            .await
            .status(),
        200
    );
    receiver.wait_for(1).await;
    assert_eq!(
        sms_post(&host, "phone", "+15557654321", "order 12345")
            .await
            .status(),
        200
    );
    let received = receiver.wait_for(2).await;
    assert!(form_of(&received[1].raw)["Body"].starts_with("Thanks! Order 12345"));

    // The channel's transformer is replaced, the safe way: beside it, then
    // renamed over it; its old manifest goes.
    let flows = site.path().join("flows");
    std::fs::remove_file(flows.join("channel.toml")).unwrap();
    let incoming = flows.join(".channel.wasm.incoming");
    std::fs::copy(crate::support::flow_file("shaper"), &incoming).unwrap();
    std::fs::rename(&incoming, flows.join("channel.wasm")).unwrap();
    let swapped = tokio::time::timeout(crate::support::PATIENCE, async {
        loop {
            let (_, listing) = admin(&host, "GET", "/admin/flows", ADMIN).await;
            let channel = listing["flows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == "channel")
                .cloned();
            let size = std::fs::metadata(crate::support::flow_file("shaper"))
                .unwrap()
                .len();
            if channel.is_some_and(|c| c["size"] == size) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(swapped.is_ok(), "the new transformer never served");

    // The same conversation, through the new transformer: the flow kept its
    // context (it knows the order), and the answer is in the new shape.
    let response = post(
        &url(&host, "phone"),
        &json!({"userId": "+15557654321", "sessionId": "+15557654321", "text": "when does it arrive?"}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let received = receiver.wait_for(3).await;
    assert_eq!(
        received[2].body["shaped"], "untagged",
        "{}",
        received[2].raw
    );
    assert_eq!(received[2].body["to"], "+15557654321");
    let text = received[2].body["text"].as_str().unwrap();
    assert!(text.starts_with("Order 12345 should arrive in"), "{text}");
}

#[tokio::test]
async fn a_transformer_may_export_one_function_and_the_seeds_json_does_the_rest() {
    let receiver = Receiver::start().await;
    let config = endpoint("stamped", "echo", "stamp", &receiver, "");
    let site = Site::new(&["echo", "stamp"], &config);
    let host = site.start().await;

    // No handle-input: the endpoint takes the seed's JSON, and only that.
    let response = post(
        &url(&host, "stamped"),
        &shaper_body("s1", "hello", None),
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    let form = client()
        .post(url(&host, "stamped"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("userId=u&sessionId=s1&text=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);

    // Its handle-output shapes what goes out.
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].raw, "s1: hello");
    assert_eq!(received[0].headers["content-type"], "text/plain");
}

#[tokio::test]
async fn an_endpoint_whose_transformer_is_missing_or_a_flow_is_not_ready_and_says_why() {
    let receiver = Receiver::start().await;
    let config = format!(
        "{}{}",
        endpoint("missing", "echo", "nowhere", &receiver, ""),
        endpoint("confused", "echo", "greeter", &receiver, "")
    );
    let site = Site::new(&["echo", "greeter"], &config);
    let host = site.start().await;

    let ready = client()
        .get(format!("http://{}/readyz", host.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let problem: Value = ready.json().await.unwrap();
    let reasons = problem["reasons"].to_string();
    assert!(
        reasons.contains(
            r#"endpoint \"missing\": its transformer \"nowhere\" is not loaded (there is no such transformer file)"#
        ),
        "{reasons}"
    );
    assert!(
        reasons.contains(
            r#"endpoint \"confused\": its transformer \"greeter\" is a flow, not a transformer"#
        ),
        "{reasons}"
    );

    // A message waits for nothing that is not coming: 503, nothing stored.
    let response = post(&url(&host, "missing"), &shaper_body("s", "hi", None), &[]).await;
    let (status, problem) = problem_of(response).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:flowhost:problem:transformer-not-loaded"
    );
    // A flow named as a transformer is the transformer failing.
    let response = post(&url(&host, "confused"), &shaper_body("s", "hi", None), &[]).await;
    let (status, problem) = problem_of(response).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("it is a flow, not a transformer"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_transformer_that_imports_a_flows_context_is_refused_at_load() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{ADMIN}\"\n{}",
        endpoint("nosy", "echo", "nosy", &receiver, "")
    );
    let site = Site::new(&["echo", "nosy"], &config);
    let host = site.start().await;

    host.wait_for_log(&["nosy", "a transformer may not import `context`"])
        .await;
    let (_, flows) = admin(&host, "GET", "/admin/flows", ADMIN).await;
    let nosy = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "nosy")
        .unwrap()
        .clone();
    assert_eq!(nosy["loaded"], false, "{flows}");
    assert!(
        nosy["lastError"]["reason"]
            .as_str()
            .unwrap()
            .contains("a transformer may not import `context`"),
        "{flows}"
    );
    let response = post(&url(&host, "nosy"), &shaper_body("s", "hi", None), &[]).await;
    assert_eq!(response.status(), 503);
}
