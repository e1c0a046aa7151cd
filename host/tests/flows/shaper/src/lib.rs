//! A transformer that exists to test the host: written against the WIT
//! directly (no SDK), as an author in another language would.
//!
//! In: a JSON body `{userId, sessionId, text, do?}`, run as the message it
//! names; `do` makes it misbehave on purpose: `loop` (spins for ever),
//! `memory` (grows until refused), `trap` (panics), `error` (returns an
//! error), `respond` (answers `200 pong` itself), `ignore`, `bad-message`
//! (a message with an empty userId).
//!
//! Out: `{"shaped": <config tag>, "to": <session>, "text": <text>}` as JSON;
//! an output whose text contains `trap` makes it panic, one containing
//! `drop` is dropped.

wit_bindgen::generate!({
    path: "../../../../wit",
    world: "transformer",
});

use flowhost::flow::channel::{Message, Response, Run, WebhookRequest};
use flowhost::flow::{config, log};

struct Shaper;

impl Guest for Shaper {
    fn handle_input(request: Request) -> Result<Input, String> {
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).map_err(|e| format!("not JSON: {e}"))?;
        let field = |name: &str| body[name].as_str().map(str::to_owned);
        match field("do").as_deref() {
            Some("loop") => {
                log::log(log::Level::Info, "shaper: spinning");
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("memory") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("trap") => panic!("the shaper was asked to trap"),
            Some("error") => return Err("asked to fail".into()),
            Some("respond") => {
                return Ok(Input::Respond(Response {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: b"pong".to_vec(),
                }));
            }
            Some("ignore") => return Ok(Input::Ignore),
            _ => {}
        }
        let user_id = if field("do").as_deref() == Some("bad-message") {
            String::new()
        } else {
            field("userId").unwrap_or_default()
        };
        Ok(Input::Run(Run {
            message: Message {
                user_id,
                session_id: field("sessionId").unwrap_or_default(),
                text: field("text"),
                data: None,
            },
            answer: None,
        }))
    }

    fn handle_output(output: Output) -> Result<Delivery, String> {
        let text = output.text.unwrap_or_default();
        if text.contains("trap") {
            panic!("the shaper was asked to trap on output");
        }
        if text.contains("drop") {
            return Ok(Delivery::Drop);
        }
        let body = serde_json::json!({
            "shaped": config::get("tag").unwrap_or_else(|| "untagged".into()),
            "to": output.session_id,
            "text": text,
        });
        Ok(Delivery::Send(WebhookRequest {
            url: None,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }))
    }
}

export!(Shaper);
