//! The body of a webhook delivery, exactly the shape of the seed's Webhook
//! Endpoint:
//!
//! ```json
//! {"userId":"user123","sessionId":"session123",
//!  "AIOutput":{"text":"…","data":{},"traceId":"endpoint-httpIncomingMessage-…",
//!              "disableSensitiveLogging":false,"source":"bot"}}
//! ```
//!
//! The body is rendered once, when the turn commits, and stored: every
//! retry sends the same bytes, which is what a signature covers.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::runtime::Output;

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

/// Renders one output's webhook body. A missing text is `""` and missing
/// data is `{}`, as in the seed.
pub fn render(
    user_id: &str,
    session_id: &str,
    trace_id: &str,
    disable_sensitive_logging: bool,
    output: &Output,
) -> String {
    let empty = Map::new();
    let body = Body {
        user_id,
        session_id,
        ai_output: AiOutput {
            text: output.text.as_deref().unwrap_or(""),
            data: output.data.as_ref().unwrap_or(&empty),
            trace_id,
            disable_sensitive_logging,
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
        let body = render(
            "user123",
            "session123",
            "endpoint-httpIncomingMessage-1",
            false,
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
        let body: Value =
            serde_json::from_str(&render("u", "s", "t", true, &Output { text: None, data }))
                .unwrap();
        assert_eq!(body["AIOutput"]["text"], "");
        assert_eq!(body["AIOutput"]["data"], json!({"orderNumber": "A-1"}));
        assert_eq!(body["AIOutput"]["disableSensitiveLogging"], true);
    }
}
