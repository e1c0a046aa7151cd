//! The body of a webhook delivery, exactly the shape of the seed's Webhook
//! Endpoint:
//!
//! ```json
//! {"userId":"user123","sessionId":"session123",
//!  "AIOutput":{"text":"…","data":{},"traceId":"endpoint-httpIncomingMessage-…",
//!              "disableSensitiveLogging":false,"source":"bot"}}
//! ```
//!
//! Delivery owns the body and the output's `webhook-id`: both are made once,
//! when the turn commits ([`prepare`]), and stored, so that every retry
//! sends the same bytes and id, which is what a signature covers and what a
//! receiver drops duplicates by.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::runtime::Output;
use crate::store::{NewOutput, Origin};

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "userId")]
    user_id: &'a str,
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    #[serde(rename = "AIOutput")]
    ai_output: AiOutput<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AiOutput<'a> {
    text: &'a str,
    data: &'a Map<String, Value>,
    trace_id: &'a str,
    disable_sensitive_logging: bool,
    source: &'static str,
}

/// Whom a message's outputs go to, as the webhook body names them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recipient<'a> {
    /// The message's `userId`.
    pub user_id: &'a str,
    /// Its `sessionId`.
    pub session_id: &'a str,
    /// Its trace id.
    pub trace_id: &'a str,
    /// The endpoint's `disable_sensitive_logging`.
    pub disable_sensitive_logging: bool,
}

/// An output ready for the outbox: its body, and its Standard Webhooks id
/// (`msg_<uuid>`), made once so that every retry sends the same id, which a
/// receiver uses to drop duplicates. `position` is its place among the
/// message's outputs; `origin`, what it keeps of its message.
pub(crate) fn prepare(
    to: Recipient<'_>,
    position: usize,
    output: &Output,
    origin: &Origin,
) -> NewOutput {
    NewOutput {
        position: u32::try_from(position).unwrap_or(u32::MAX),
        webhook_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        body: render(to, output),
        origin: origin.clone(),
    }
}

/// Renders one output's webhook body. A missing text is `""` and missing
/// data is `{}`, as in the seed.
pub(crate) fn render(to: Recipient<'_>, output: &Output) -> String {
    let empty = Map::new();
    let body = Body {
        user_id: to.user_id,
        session_id: to.session_id,
        ai_output: AiOutput {
            text: output.text.as_deref().unwrap_or(""),
            data: output.data.as_ref().unwrap_or(&empty),
            trace_id: to.trace_id,
            disable_sensitive_logging: to.disable_sensitive_logging,
            source: "bot",
        },
    };
    serde_json::to_string(&body).expect("a body of strings and a JSON map always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn is_the_seed_shape_with_defaults_for_missing_fields() {
        let seed = Recipient {
            user_id: "user123",
            session_id: "session123",
            trace_id: "endpoint-httpIncomingMessage-1",
            disable_sensitive_logging: false,
        };
        let body = render(
            seed,
            &Output {
                text: Some("I’d be happy to help.".into()),
                data: None,
            },
        );
        assert_eq!(
            body,
            r#"{"userId":"user123","sessionId":"session123","AIOutput":{"text":"I’d be happy to help.","data":{},"traceId":"endpoint-httpIncomingMessage-1","disableSensitiveLogging":false,"source":"bot"}}"#
        );
        let data = json!({"orderNumber": "A-1"}).as_object().cloned();
        let quiet = Recipient {
            disable_sensitive_logging: true,
            ..seed
        };
        let body: Value =
            serde_json::from_str(&render(quiet, &Output { text: None, data })).unwrap();
        assert_eq!(body["AIOutput"]["text"], "");
        assert_eq!(body["AIOutput"]["data"], json!({"orderNumber": "A-1"}));
        assert_eq!(body["AIOutput"]["disableSensitiveLogging"], true);
    }

    #[test]
    fn an_output_gets_its_own_webhook_id() {
        let to = Recipient {
            user_id: "u",
            session_id: "s",
            trace_id: "t",
            disable_sensitive_logging: false,
        };
        let output = Output {
            text: Some("hi".into()),
            data: None,
        };
        let (one, two) = (
            prepare(to, 0, &output, &Origin::default()),
            prepare(to, 0, &output, &Origin::default()),
        );
        assert!(one.webhook_id.starts_with("msg_"), "{}", one.webhook_id);
        assert_ne!(one.webhook_id, two.webhook_id);
        assert_eq!(one.body, render(to, &output));
    }
}
