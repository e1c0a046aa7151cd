//! A transformer for an SMS gateway shaped like Twilio's Messaging API.
//!
//! In: the gateway POSTs each incoming SMS to the endpoint's URL as a form
//! (`From`, `To`, `Body`, `MessageSid`, …). With `auth_token` and
//! `public_url` set, the request's `X-Twilio-Signature` is checked and a
//! request that fails is refused with `403`. The SMS runs as a message from
//! the sender's number, in one session per number, with data
//! `{"sms": {"to", "messageSid"}}`, and the gateway is answered with an
//! empty TwiML document, so that it sends no reply of its own.
//!
//! Out: each output with text becomes a request to the gateway's messages
//! API: by default a form `To=<user id>&From=<from_number>&Body=<text>`, as
//! Twilio's `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` takes it
//! (set the endpoint's `webhook_url` to that), or with `format = "json"` a
//! JSON body `{"to", "from", "body"}`. With `account_sid` and `auth_token`
//! set it carries `authorization: Basic base64(account_sid:auth_token)`.
//!
//! Settings (`[config]` in `sms.toml`): `auth_token`, `public_url`,
//! `account_sid`, `from_number`, `format`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use flowhost_sdk::transformer::{
    Delivery, Input, Message, Output, Request, Response, Transformer, WebhookRequest, config,
};
use flowhost_sdk::{Map, Result, Value, warn};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The answer to the gateway once the message is stored: TwiML that says
/// nothing, so the gateway sends no reply itself.
const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

const FORM: &str = "application/x-www-form-urlencoded";

struct Sms;

impl Transformer for Sms {
    fn handle_input(request: Request) -> Result<Input> {
        let auth_token = setting("auth_token");
        let public_url = setting("public_url");
        let verification = match (&auth_token, &public_url) {
            (Some(token), Some(url)) => Some(Verification {
                auth_token: token,
                public_url: url,
            }),
            (None, None) => None,
            _ => {
                warn!("sms: signatures are not checked: set both auth_token and public_url");
                None
            }
        };
        let input = input_for(&request, verification.as_ref());
        if let Input::Respond(response) = &input {
            warn!(
                "sms: refused a request with {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        Ok(input)
    }

    fn handle_output(output: Output) -> Result<Delivery> {
        let gateway = Gateway {
            from_number: setting("from_number"),
            json: setting("format").is_some_and(|f| f.eq_ignore_ascii_case("json")),
            basic_auth: setting("account_sid").zip(setting("auth_token")),
        };
        delivery_for(&output, &gateway)
    }
}

flowhost_sdk::export_transformer!(Sms);

/// A `[config]` value, if it is set and not empty.
fn setting(key: &str) -> Option<String> {
    config(key).filter(|value| !value.is_empty())
}

/// What checking `X-Twilio-Signature` takes.
struct Verification<'a> {
    /// The account's auth token: the HMAC key.
    auth_token: &'a str,
    /// The scheme and host (and any path prefix) the gateway posts to, such
    /// as `https://bots.example.com`; the request's path and query follow.
    public_url: &'a str,
}

/// What to do with a request from the gateway; `verification` when
/// signatures are to be checked.
fn input_for(request: &Request, verification: Option<&Verification<'_>>) -> Input {
    if request.media_type().as_deref() != Some(FORM) {
        return Input::Respond(Response::problem(
            415,
            "Unsupported Media Type",
            "the body must be a form (application/x-www-form-urlencoded)",
        ));
    }
    let fields = request.form();
    if let Some(verification) = verification {
        let url = signed_url(
            verification.public_url,
            &request.path,
            request.query.as_deref(),
        );
        let signature = request.header("x-twilio-signature");
        if !signature_matches(verification.auth_token, &url, &fields, signature) {
            let detail = match signature {
                None => "no X-Twilio-Signature header",
                Some(_) => "X-Twilio-Signature does not match the request",
            };
            return Input::Respond(Response::problem(403, "Forbidden", detail));
        }
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(from), Some(body)) = (field("From").filter(|f| !f.is_empty()), field("Body")) else {
        return Input::Respond(Response::problem(
            400,
            "Bad Request",
            "the form needs From and Body",
        ));
    };
    let mut sms = Map::new();
    if let Some(to) = field("To") {
        sms.insert("to".into(), to.into());
    }
    if let Some(sid) = field("MessageSid") {
        sms.insert("messageSid".into(), sid.into());
    }
    let mut data = Map::new();
    data.insert("sms".into(), Value::Object(sms));
    let message = Message::new(from, from).with_text(body).with_data(data);
    let answer = Response {
        status: 200,
        headers: vec![("content-type".into(), "text/xml".into())],
        body: EMPTY_TWIML.as_bytes().to_vec(),
    };
    Input::run_with_answer(message, answer)
}

/// The URL the gateway signed: `public_url` (without a trailing `/`), the
/// path, and `?query` if there is one.
fn signed_url(public_url: &str, path: &str, query: Option<&str>) -> String {
    let mut url = public_url.trim_end_matches('/').to_string();
    url.push_str(path);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The HMAC-SHA1 of Twilio's base string, keyed with the auth token: the
/// full URL, then every POST parameter's name and value, sorted by name
/// (and, for a name given twice, by value).
fn signature_mac(auth_token: &str, url: &str, fields: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = fields.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Whether `signature` (base64, as `X-Twilio-Signature` carries it) is the
/// request's; compared in constant time.
fn signature_matches(
    auth_token: &str,
    url: &str,
    fields: &[(String, String)],
    signature: Option<&str>,
) -> bool {
    let Some(digest) = signature.and_then(|s| BASE64.decode(s.trim()).ok()) else {
        return false;
    };
    signature_mac(auth_token, url, fields)
        .verify_slice(&digest)
        .is_ok()
}

/// How to reach the gateway's messages API.
struct Gateway {
    /// The number (or sender id) messages come from.
    from_number: Option<String>,
    /// A JSON body instead of a form.
    json: bool,
    /// The account sid and auth token, for Basic auth.
    basic_auth: Option<(String, String)>,
}

/// The gateway's request for `output`, or `Drop` when it has no text.
fn delivery_for(output: &Output, gateway: &Gateway) -> Result<Delivery> {
    let Some(text) = output.text.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(Delivery::Drop);
    };
    let to = output.user_id.as_str();
    let from = gateway.from_number.as_deref();
    let mut request = if gateway.json {
        let mut body = Map::new();
        body.insert("to".into(), to.into());
        if let Some(from) = from {
            body.insert("from".into(), from.into());
        }
        body.insert("body".into(), text.into());
        WebhookRequest::json(&body)?
    } else {
        let mut fields = vec![("To", to)];
        if let Some(from) = from {
            fields.push(("From", from));
        }
        fields.push(("Body", text));
        WebhookRequest::form(&fields)
    };
    if let Some((account_sid, auth_token)) = &gateway.basic_auth {
        let credentials = BASE64.encode(format!("{account_sid}:{auth_token}"));
        request = request.with_header("authorization", format!("Basic {credentials}"));
    }
    Ok(Delivery::Send(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::{json, object};

    /// Twilio's documented example ("Webhooks security"), checked with
    /// Python's `hmac`: `base64(hmac.new(b"12345", url + "CallSid…To+18005551212",
    /// hashlib.sha1).digest())`.
    const TWILIO_TOKEN: &str = "12345";
    const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const TWILIO_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    fn twilio_fields() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    fn sms_body() -> String {
        flowhost_sdk::transformer::form_encode(&[
            ("ToCountry", "US"),
            ("MessageSid", "SM0000000000000000000000000000000a"),
            ("From", "+15550100"),
            ("To", "+15550199"),
            ("Body", "Where is my order?"),
            ("NumMedia", "0"),
        ])
    }

    fn sms_request(body: &str) -> Request {
        Request::post("/endpoints/sms", body).with_header("content-type", FORM)
    }

    fn signed(request: Request, token: &str, public_url: &str) -> Request {
        let url = signed_url(public_url, &request.path, request.query.as_deref());
        let mac = signature_mac(token, &url, &request.form());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        request.with_header("X-Twilio-Signature", signature)
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
                let body: Value = serde_json::from_slice(&response.body).unwrap();
                assert_eq!(body["type"], "about:blank");
                assert_eq!(body["status"], response.status);
                (response.status, body)
            }
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn twilios_documented_signature_verifies() {
        let fields = twilio_fields();
        let computed = signature_mac(TWILIO_TOKEN, TWILIO_URL, &fields);
        assert_eq!(
            BASE64.encode(computed.finalize().into_bytes()),
            TWILIO_SIGNATURE
        );
        assert!(signature_matches(
            TWILIO_TOKEN,
            TWILIO_URL,
            &fields,
            Some(TWILIO_SIGNATURE)
        ));

        // The order the fields came in does not matter.
        let mut reversed = fields.clone();
        reversed.reverse();
        assert!(signature_matches(
            TWILIO_TOKEN,
            TWILIO_URL,
            &reversed,
            Some(TWILIO_SIGNATURE)
        ));

        let mut changed = fields.clone();
        changed[2].1 = "1235".into();
        assert!(!signature_matches(
            TWILIO_TOKEN,
            TWILIO_URL,
            &changed,
            Some(TWILIO_SIGNATURE)
        ));
        assert!(!signature_matches(
            "54321",
            TWILIO_URL,
            &fields,
            Some(TWILIO_SIGNATURE)
        ));
        assert!(!signature_matches(
            TWILIO_TOKEN,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &fields,
            Some(TWILIO_SIGNATURE)
        ));
        assert!(!signature_matches(TWILIO_TOKEN, TWILIO_URL, &fields, None));
        assert!(!signature_matches(
            TWILIO_TOKEN,
            TWILIO_URL,
            &fields,
            Some("not base64!")
        ));
    }

    #[test]
    fn the_signed_url_is_the_public_url_path_and_query() {
        assert_eq!(
            signed_url("https://mycompany.com/", "/myapp.php", Some("foo=1&bar=2")),
            TWILIO_URL
        );
        assert_eq!(
            signed_url("https://bots.example.com", "/endpoints/sms", None),
            "https://bots.example.com/endpoints/sms"
        );
        // The documented example, through a request to the endpoint.
        let body = flowhost_sdk::transformer::form_encode(
            &twilio_fields()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        let request = sms_request(&body)
            .with_query("foo=1&bar=2")
            .with_header("x-twilio-signature", TWILIO_SIGNATURE);
        let request = Request {
            path: "/myapp.php".into(),
            ..request
        };
        let verification = Verification {
            auth_token: TWILIO_TOKEN,
            public_url: "https://mycompany.com",
        };
        // It verifies; it then lacks a Body, so it is a bad request, not a
        // forbidden one.
        let (status, _) = problem(&input_for(&request, Some(&verification)));
        assert_eq!(status, 400);
    }

    #[test]
    fn an_sms_runs_in_the_senders_session_and_is_answered_with_empty_twiml() {
        let verification = Verification {
            auth_token: "fake-token",
            public_url: "https://bots.example.com",
        };
        let request = signed(
            sms_request(&sms_body()),
            "fake-token",
            "https://bots.example.com",
        );
        let expected_message = Message::new("+15550100", "+15550100")
            .with_text("Where is my order?")
            .with_data(object!({
                "sms": { "to": "+15550199", "messageSid": "SM0000000000000000000000000000000a" }
            }));
        for input in [
            input_for(&request, Some(&verification)),
            input_for(&sms_request(&sms_body()), None),
        ] {
            let Input::Run { message, answer } = input else {
                panic!("expected a run, got {input:?}");
            };
            assert_eq!(message, expected_message);
            let answer = answer.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(
                answer.headers,
                vec![("content-type".to_string(), "text/xml".to_string())]
            );
            assert_eq!(
                answer.body,
                br#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#
            );
        }
    }

    #[test]
    fn a_bad_signature_is_forbidden() {
        let verification = Verification {
            auth_token: "fake-token",
            public_url: "https://bots.example.com",
        };
        let (status, body) = problem(&input_for(&sms_request(&sms_body()), Some(&verification)));
        assert_eq!((status, body["title"].as_str()), (403, Some("Forbidden")));
        assert_eq!(body["detail"], "no X-Twilio-Signature header");

        let other_key = signed(
            sms_request(&sms_body()),
            "other-token",
            "https://bots.example.com",
        );
        let (status, _) = problem(&input_for(&other_key, Some(&verification)));
        assert_eq!(status, 403);

        let other_url = signed(
            sms_request(&sms_body()),
            "fake-token",
            "https://evil.example.com",
        );
        let (status, _) = problem(&input_for(&other_url, Some(&verification)));
        assert_eq!(status, 403);

        let mut tampered = signed(
            sms_request(&sms_body()),
            "fake-token",
            "https://bots.example.com",
        );
        tampered.body = sms_body().replace("order", "ordre").into_bytes();
        let (status, body) = problem(&input_for(&tampered, Some(&verification)));
        assert_eq!(status, 403);
        assert!(!body.to_string().contains("fake-token"));
    }

    #[test]
    fn a_form_without_from_or_body_is_a_bad_request() {
        for body in ["From=%2B15550100", "Body=hi", "From=&Body=hi", ""] {
            let (status, _) = problem(&input_for(&sms_request(body), None));
            assert_eq!(status, 400, "{body}");
        }
        // An empty Body (a picture alone, say) is a message without words.
        assert!(matches!(
            input_for(&sms_request("From=%2B15550100&Body="), None),
            Input::Run { .. }
        ));
    }

    #[test]
    fn a_body_that_is_not_a_form_is_unsupported() {
        let json = Request::post("/endpoints/sms", r#"{"From":"+15550100","Body":"hi"}"#)
            .with_header("content-type", "application/json");
        let (status, _) = problem(&input_for(&json, None));
        assert_eq!(status, 415);
        let (status, _) = problem(&input_for(
            &Request::post("/endpoints/sms", sms_body()),
            None,
        ));
        assert_eq!(status, 415);
        let with_charset = Request::post("/endpoints/sms", sms_body()).with_header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        );
        assert!(matches!(input_for(&with_charset, None), Input::Run { .. }));
    }

    fn sent(delivery: Delivery) -> WebhookRequest {
        match delivery {
            Delivery::Send(request) => request,
            Delivery::Drop => panic!("expected a request, got Drop"),
        }
    }

    #[test]
    fn an_output_becomes_a_form_for_the_messages_api() {
        let gateway = Gateway {
            from_number: Some("+15550199".into()),
            json: false,
            basic_auth: Some(("ACfake".into(), "fake-token".into())),
        };
        let output = Output::new("+15550100", "+15550100")
            .with_text("Your order ships today & arrives Friday.");
        let request = sent(delivery_for(&output, &gateway).unwrap());
        assert_eq!(request.url, None);
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            "To=%2B15550100&From=%2B15550199&Body=Your+order+ships+today+%26+arrives+Friday."
        );
        assert_eq!(
            request.headers,
            vec![
                ("content-type".to_string(), FORM.to_string()),
                // base64("ACfake:fake-token")
                (
                    "authorization".to_string(),
                    "Basic QUNmYWtlOmZha2UtdG9rZW4=".to_string()
                ),
            ]
        );
    }

    #[test]
    fn an_output_becomes_json_when_configured() {
        let gateway = Gateway {
            from_number: Some("+15550199".into()),
            json: true,
            basic_auth: None,
        };
        let output = Output::new("+15550100", "+15550100").with_text("Hi");
        let request = sent(delivery_for(&output, &gateway).unwrap());
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({ "to": "+15550100", "from": "+15550199", "body": "Hi" })
        );
        assert_eq!(
            request.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );

        // Without a from_number, the gateway's default sender.
        let gateway = Gateway {
            from_number: None,
            json: false,
            basic_auth: None,
        };
        let request = sent(delivery_for(&output, &gateway).unwrap());
        assert_eq!(request.body, b"To=%2B15550100&Body=Hi");
    }

    #[test]
    fn an_output_without_text_is_dropped() {
        let gateway = Gateway {
            from_number: Some("+15550199".into()),
            json: false,
            basic_auth: None,
        };
        let data_only = Output::new("+15550100", "+15550100").with_data(object!({ "buttons": [] }));
        assert_eq!(delivery_for(&data_only, &gateway).unwrap(), Delivery::Drop);
        let empty = Output::new("+15550100", "+15550100").with_text("");
        assert_eq!(delivery_for(&empty, &gateway).unwrap(), Delivery::Drop);
    }
}
