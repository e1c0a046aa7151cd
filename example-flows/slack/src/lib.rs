//! A transformer for Slack: the Events API in, `chat.postMessage` out.
//!
//! In: Slack POSTs each event to the endpoint's URL (the app's "Request
//! URL"), signed with the app's signing secret. A request whose signature
//! or timestamp is wrong is refused with `401`. The URL check
//! (`url_verification`) is answered with its challenge. A user's message in
//! a channel or a DM runs as a message from that user (`userId` = the Slack
//! user id), in a session per channel, or per thread for a reply in one
//! (`sessionId` = `C0123` or `C0123:1700000000.000100`), with data
//! `{"slack": {"team", "channel", "ts", "thread_ts"}}`. Bot messages
//! (including the app's own), edits, deletions and every other event are
//! answered `200` and run nothing.
//!
//! Out: each output becomes a `chat.postMessage` body, `{"channel", "text"}`
//! plus `thread_ts` in a thread and the output data's `blocks` if it has
//! some, with the bot token as a bearer token. Set the endpoint's
//! `webhook_url` to `https://slack.com/api/chat.postMessage`.
//!
//! Settings (`[config]` in `slack.toml`): `signing_secret` (required: without
//! it every request is refused) and `bot_token`.

use std::time::{SystemTime, UNIX_EPOCH};

use flowhost_sdk::transformer::{
    Delivery, Input, Message, Output, Request, Response, Transformer, WebhookRequest, config,
};
use flowhost_sdk::{Map, Result, Value, error, json, warn};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way (Slack's
/// advice, against replayed requests).
const MAX_SKEW_SECS: u64 = 5 * 60;

struct Slack;

impl Transformer for Slack {
    fn handle_input(request: Request) -> Result<Input> {
        let secret = config("signing_secret").filter(|s| !s.is_empty());
        if secret.is_none() {
            error!("slack: [config] sets no signing_secret, so every request is refused");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if let Err(reason) = authenticate(&request, secret.as_deref(), now) {
            if secret.is_some() {
                warn!("slack: refused a request: {reason}");
            }
            return Ok(Input::Respond(unauthorized(reason)));
        }
        Ok(input_for(&request))
    }

    fn handle_output(output: Output) -> Result<Delivery> {
        let token = config("bot_token").filter(|t| !t.is_empty());
        delivery_for(&output, token.as_deref())
    }
}

flowhost_sdk::export_transformer!(Slack);

/// Whether `request` comes from Slack, given the signing secret (none:
/// nothing does) and the time now in seconds since the Unix epoch; the
/// error says why not, without the secret.
fn authenticate(
    request: &Request,
    secret: Option<&str>,
    now: i64,
) -> std::result::Result<(), &'static str> {
    let secret = secret.ok_or("the transformer has no signing secret")?;
    verify_signature(
        secret,
        request.header("x-slack-request-timestamp"),
        request.header("x-slack-signature"),
        &request.body,
        now,
    )
}

/// A `401` in `application/problem+json`, saying why.
fn unauthorized(detail: &str) -> Response {
    Response::problem(401, "Unauthorized", detail)
}

/// What to do with a request that came from Slack.
fn input_for(request: &Request) -> Input {
    // Slash commands and interactivity post forms: this transformer handles
    // the Events API only.
    if request.media_type().as_deref() == Some("application/x-www-form-urlencoded") {
        return Input::Ignore;
    }
    match request.json::<Value>() {
        Ok(payload) => input_for_payload(&payload),
        Err(e) => Input::Respond(Response::problem(
            400,
            "Bad Request",
            &format!("the body is not JSON: {e}"),
        )),
    }
}

/// Checks Slack's request signature: `x-slack-signature` is `v0=` and the
/// hex HMAC-SHA256, keyed with the signing secret, of
/// `v0:{x-slack-request-timestamp}:{body}`, and the timestamp is within
/// five minutes of `now`. The error says what is wrong, without the secret.
fn verify_signature(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> std::result::Result<(), &'static str> {
    let timestamp = timestamp.ok_or("no X-Slack-Request-Timestamp header")?;
    let signature = signature.ok_or("no X-Slack-Signature header")?;
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "X-Slack-Request-Timestamp is not a number")?;
    if now.abs_diff(seconds) > MAX_SKEW_SECS {
        return Err("X-Slack-Request-Timestamp is more than 5 minutes from now");
    }
    let digest = signature
        .strip_prefix("v0=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or("X-Slack-Signature is not v0= and a hex digest")?;
    // `verify_slice` compares in constant time.
    signing_mac(secret, timestamp, body)
        .verify_slice(&digest)
        .map_err(|_| "X-Slack-Signature does not match the body")
}

/// The HMAC-SHA256 of Slack's base string, `v0:{timestamp}:{body}`.
fn signing_mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// What to do with a verified Events API payload.
fn input_for_payload(payload: &Value) -> Input {
    match payload["type"].as_str() {
        Some("url_verification") => {
            let challenge = payload["challenge"].as_str().unwrap_or_default();
            Input::Respond(Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: json!({ "challenge": challenge }).to_string().into_bytes(),
            })
        }
        Some("event_callback") => message_event(payload).map_or(Input::Ignore, Input::run),
        _ => Input::Ignore,
    }
}

/// The message to run for an `event_callback`, if it is a user's message:
/// not a bot's (the app's own replies come back as events too), and of no
/// subtype (edits, deletions, joins, bot messages…).
fn message_event(payload: &Value) -> Option<Message> {
    let event = payload.get("event")?;
    if event["type"] != "message" || event.get("bot_id").is_some() || event.get("subtype").is_some()
    {
        return None;
    }
    let user = event["user"].as_str().filter(|u| !u.is_empty())?;
    let channel = event["channel"].as_str().filter(|c| !c.is_empty())?;
    let thread_ts = event["thread_ts"].as_str();

    let mut slack = Map::new();
    let team = payload["team_id"].as_str().or(event["team"].as_str());
    if let Some(team) = team {
        slack.insert("team".into(), team.into());
    }
    slack.insert("channel".into(), channel.into());
    if let Some(ts) = event["ts"].as_str() {
        slack.insert("ts".into(), ts.into());
    }
    if let Some(thread_ts) = thread_ts {
        slack.insert("thread_ts".into(), thread_ts.into());
    }
    let mut data = Map::new();
    data.insert("slack".into(), Value::Object(slack));

    let mut message = Message::new(user, session_id(channel, thread_ts)).with_data(data);
    if let Some(text) = event["text"].as_str() {
        message = message.with_text(text);
    }
    Some(message)
}

/// A conversation per channel, or per thread: `C0123`, `C0123:1700000000.000100`.
fn session_id(channel: &str, thread_ts: Option<&str>) -> String {
    match thread_ts {
        Some(thread_ts) => format!("{channel}:{thread_ts}"),
        None => channel.to_string(),
    }
}

/// The channel and thread of a session id made by [`session_id`].
fn channel_and_thread(session_id: &str) -> (&str, Option<&str>) {
    match session_id.split_once(':') {
        Some((channel, thread_ts)) => (channel, Some(thread_ts)),
        None => (session_id, None),
    }
}

/// The `chat.postMessage` request for `output`, or `Drop` when it has
/// neither text nor `blocks`.
fn delivery_for(output: &Output, bot_token: Option<&str>) -> Result<Delivery> {
    let text = output.text.as_deref().filter(|t| !t.is_empty());
    let blocks = output
        .data
        .as_ref()
        .and_then(|data| data.get("blocks"))
        .filter(|blocks| blocks.is_array());
    if text.is_none() && blocks.is_none() {
        return Ok(Delivery::Drop);
    }
    let (channel, thread_ts) = channel_and_thread(&output.session_id);
    let mut body = Map::new();
    body.insert("channel".into(), channel.into());
    if let Some(text) = text {
        body.insert("text".into(), text.into());
    }
    if let Some(thread_ts) = thread_ts {
        body.insert("thread_ts".into(), thread_ts.into());
    }
    if let Some(blocks) = blocks {
        body.insert("blocks".into(), blocks.clone());
    }
    let mut request =
        WebhookRequest::json(&body)?.with_header("content-type", "application/json; charset=utf-8");
    if let Some(token) = bot_token {
        request = request.with_header("authorization", format!("Bearer {token}"));
    }
    Ok(Delivery::Send(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::object;

    /// Slack's own example ("Verifying requests from Slack"): its signing
    /// secret, timestamp, body and signature; checked with Python's `hmac`.
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TIMESTAMP: &str = "1531420618";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIGNATURE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    /// An event signed with a made-up secret; the signature computed with
    /// Python: `hmac.new(b"not-a-real-secret", b"v0:1700000000:" + body,
    /// hashlib.sha256).hexdigest()`.
    const SECRET: &str = "not-a-real-secret";
    const NOW: i64 = 1_700_000_000;
    const EVENT: &str = r#"{"type":"event_callback","team_id":"T0001","event":{"type":"message","user":"U0001","channel":"C0001","text":"hello","ts":"1700000000.000100"}}"#;
    const EVENT_SIGNATURE: &str =
        "v0=d826ae8021bf9d60dfa866648dcbf577835a59ba7d397656c741822ce9ec1612";

    fn signed(body: &str, timestamp: i64) -> Request {
        let mac = signing_mac(SECRET, &timestamp.to_string(), body.as_bytes());
        let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        Request::post("/endpoints/slack", body)
            .with_header("content-type", "application/json")
            .with_header("x-slack-request-timestamp", timestamp.to_string())
            .with_header("x-slack-signature", signature)
    }

    fn problem(input: &Input) -> (u16, Value) {
        match input {
            Input::Respond(response) => {
                assert_eq!(
                    response.headers,
                    vec![(
                        "content-type".to_string(),
                        "application/problem+json".to_string()
                    )]
                );
                let body = serde_json::from_slice(&response.body).unwrap();
                (response.status, body)
            }
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn slacks_documented_signature_verifies() {
        let now = SLACK_TIMESTAMP.parse().unwrap();
        let check = |signature: &str| {
            verify_signature(
                SLACK_SECRET,
                Some(SLACK_TIMESTAMP),
                Some(signature),
                SLACK_BODY.as_bytes(),
                now,
            )
        };
        assert_eq!(check(SLACK_SIGNATURE), Ok(()));
        let computed = signing_mac(SLACK_SECRET, SLACK_TIMESTAMP, SLACK_BODY.as_bytes());
        assert_eq!(
            format!("v0={}", hex::encode(computed.finalize().into_bytes())),
            SLACK_SIGNATURE
        );
        let mut wrong = SLACK_SIGNATURE.to_string();
        wrong.replace_range(wrong.len() - 1.., "4");
        assert!(check(&wrong).is_err());
        assert!(check(&SLACK_SIGNATURE.replace("v0=", "v1=")).is_err());
        assert!(check("v0=not-hex").is_err());
        assert!(check("v0=").is_err());
    }

    #[test]
    fn independently_computed_signature_verifies() {
        let check = |body: &str, now| {
            verify_signature(
                SECRET,
                Some("1700000000"),
                Some(EVENT_SIGNATURE),
                body.as_bytes(),
                now,
            )
        };
        assert_eq!(check(EVENT, NOW), Ok(()));
        assert_eq!(check(EVENT, NOW + 300), Ok(()));
        assert_eq!(check(EVENT, NOW - 300), Ok(()));
        assert!(check(EVENT, NOW + 301).is_err());
        assert!(check(EVENT, NOW - 301).is_err());
        for timestamp in ["-9223372036854775808", "9223372036854775807", "1e9", ""] {
            let checked = verify_signature(
                SECRET,
                Some(timestamp),
                Some(EVENT_SIGNATURE),
                EVENT.as_bytes(),
                NOW,
            );
            assert!(checked.is_err(), "{timestamp}");
        }
        assert!(check(&EVENT.replace("hello", "hellO"), NOW).is_err());
        let other_secret = verify_signature(
            "other",
            Some("1700000000"),
            Some(EVENT_SIGNATURE),
            EVENT.as_bytes(),
            NOW,
        );
        assert!(other_secret.is_err());
        let request = Request::post("/endpoints/slack", EVENT)
            .with_header("X-Slack-Request-Timestamp", "1700000000")
            .with_header("X-Slack-Signature", EVENT_SIGNATURE);
        assert_eq!(authenticate(&request, Some(SECRET), NOW), Ok(()));
    }

    #[test]
    fn unsigned_or_badly_signed_requests_are_refused() {
        let missing = Request::post("/endpoints/slack", EVENT);
        assert_eq!(
            authenticate(&missing, Some(SECRET), NOW),
            Err("no X-Slack-Request-Timestamp header")
        );
        let no_signature = Request::post("/endpoints/slack", EVENT)
            .with_header("x-slack-request-timestamp", "1700000000");
        assert_eq!(
            authenticate(&no_signature, Some(SECRET), NOW),
            Err("no X-Slack-Signature header")
        );
        assert!(authenticate(&signed(EVENT, NOW - 301), Some(SECRET), NOW).is_err());
        assert!(authenticate(&signed(EVENT, NOW + 301), Some(SECRET), NOW).is_err());
        let mut tampered = signed(EVENT, NOW);
        tampered.body = EVENT.replace("hello", "goodbye").into_bytes();
        assert!(authenticate(&tampered, Some(SECRET), NOW).is_err());
        // No signing secret configured: everything is refused, even a
        // request that would verify.
        assert!(authenticate(&signed(EVENT, NOW), None, NOW).is_err());

        let (status, body) = problem(&Input::Respond(unauthorized("no X-Slack-Signature header")));
        assert_eq!(status, 401);
        assert_eq!(
            body,
            json!({
                "type": "about:blank", "title": "Unauthorized", "status": 401,
                "detail": "no X-Slack-Signature header"
            })
        );
    }

    #[test]
    fn url_verification_is_answered_with_its_challenge() {
        let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        match input_for(&signed(body, NOW)) {
            Input::Respond(response) => {
                assert_eq!(response.status, 200);
                assert_eq!(
                    response.headers,
                    vec![("content-type".to_string(), "application/json".to_string())]
                );
                let answer: Value = serde_json::from_slice(&response.body).unwrap();
                assert_eq!(
                    answer,
                    json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
                );
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn a_channel_message_runs_in_the_channels_session() {
        let expected = Message::new("U0001", "C0001")
            .with_text("hello")
            .with_data(object!({
                "slack": { "team": "T0001", "channel": "C0001", "ts": "1700000000.000100" }
            }));
        assert_eq!(input_for(&signed(EVENT, NOW)), Input::run(expected));
    }

    #[test]
    fn a_thread_reply_runs_in_the_threads_session() {
        let payload = json!({
            "type": "event_callback",
            "team_id": "T0001",
            "event": {
                "type": "message", "user": "U0002", "channel": "C0001", "text": "and then?",
                "ts": "1700000100.000200", "thread_ts": "1700000000.000100"
            }
        });
        let expected = Message::new("U0002", "C0001:1700000000.000100")
            .with_text("and then?")
            .with_data(object!({
                "slack": {
                    "team": "T0001", "channel": "C0001",
                    "ts": "1700000100.000200", "thread_ts": "1700000000.000100"
                }
            }));
        assert_eq!(input_for_payload(&payload), Input::run(expected));
    }

    #[test]
    fn bots_subtypes_and_other_events_are_ignored() {
        let message = |extra: Value| {
            let mut event = json!({
                "type": "message", "user": "U0001", "channel": "C0001", "text": "hi", "ts": "1.2"
            });
            event
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({ "type": "event_callback", "team_id": "T0001", "event": event })
        };
        assert!(matches!(
            input_for_payload(&message(json!({}))),
            Input::Run { .. }
        ));
        for extra in [
            json!({ "bot_id": "B0001" }),
            json!({ "subtype": "bot_message" }),
            json!({ "subtype": "message_changed" }),
            json!({ "subtype": "message_deleted" }),
            json!({ "type": "app_mention" }),
            json!({ "user": null }),
        ] {
            assert_eq!(
                input_for_payload(&message(extra.clone())),
                Input::Ignore,
                "{extra}"
            );
        }
        assert_eq!(
            input_for_payload(&json!({ "type": "app_rate_limited" })),
            Input::Ignore
        );
        assert_eq!(
            input_for_payload(&json!({ "type": "event_callback" })),
            Input::Ignore
        );

        let form = Request::post("/endpoints/slack", "command=%2Fweather&text=")
            .with_header("content-type", "application/x-www-form-urlencoded");
        assert_eq!(input_for(&form), Input::Ignore);
    }

    #[test]
    fn a_signed_body_that_is_not_json_is_a_bad_request() {
        let (status, _) = problem(&input_for(&signed("{", NOW)));
        assert_eq!(status, 400);
    }

    fn sent(delivery: Delivery) -> (Vec<(String, String)>, Value, Option<String>) {
        match delivery {
            Delivery::Send(request) => (
                request.headers,
                serde_json::from_slice(&request.body).unwrap(),
                request.url,
            ),
            Delivery::Drop => panic!("expected a request, got Drop"),
        }
    }

    #[test]
    fn an_output_becomes_a_post_message() {
        let output = Output::new("U0001", "C0001").with_text("Hi there");
        let (headers, body, url) = sent(delivery_for(&output, Some("xoxb-fake")).unwrap());
        assert_eq!(body, json!({ "channel": "C0001", "text": "Hi there" }));
        assert_eq!(url, None);
        assert_eq!(
            headers,
            vec![
                (
                    "content-type".to_string(),
                    "application/json; charset=utf-8".to_string()
                ),
                ("authorization".to_string(), "Bearer xoxb-fake".to_string()),
            ]
        );

        let (headers, _, _) = sent(delivery_for(&output, None).unwrap());
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn an_output_in_a_thread_replies_in_it_with_its_blocks() {
        let blocks = json!([{ "type": "section", "text": { "type": "mrkdwn", "text": "*Hi*" } }]);
        let output = Output::new("U0001", "C0001:1700000000.000100")
            .with_text("Hi")
            .with_data(object!({ "blocks": blocks.clone(), "other": 1 }));
        let (_, body, _) = sent(delivery_for(&output, None).unwrap());
        assert_eq!(
            body,
            json!({
                "channel": "C0001", "text": "Hi",
                "thread_ts": "1700000000.000100", "blocks": blocks
            })
        );

        // Blocks alone are enough.
        let output = Output::new("U0001", "D0001").with_data(object!({ "blocks": blocks.clone() }));
        let (_, body, _) = sent(delivery_for(&output, None).unwrap());
        assert_eq!(body, json!({ "channel": "D0001", "blocks": blocks }));
    }

    #[test]
    fn an_output_with_nothing_to_say_is_dropped() {
        let output = Output::new("U0001", "C0001");
        assert_eq!(delivery_for(&output, None).unwrap(), Delivery::Drop);
        let output = Output::new("U0001", "C0001")
            .with_text("")
            .with_data(object!({ "blocks": "not an array" }));
        assert_eq!(delivery_for(&output, None).unwrap(), Delivery::Drop);
    }

    #[test]
    fn session_ids_round_trip() {
        assert_eq!(channel_and_thread(&session_id("C1", None)), ("C1", None));
        assert_eq!(
            channel_and_thread(&session_id("C1", Some("1.2"))),
            ("C1", Some("1.2"))
        );
    }
}
