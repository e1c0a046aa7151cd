//! The inbound message: its body parsed and checked, field by field, as the
//! seed's Webhook Endpoint defines it.
//!
//! - `userId`, `sessionId`: required, non-empty strings of at most 256
//!   characters, without control characters (they end up in logs, where a
//!   newline or an escape sequence would forge or hide lines);
//! - `text`: a string of at most 10,000 characters;
//! - `data`: a JSON object;
//! - at least one of `text` and `data` (`null` counts as absent);
//! - other fields are ignored.

use serde_json::{Map, Value};

use super::problem::{FieldError, Problem};
use http::StatusCode;

/// The most characters in `userId` and `sessionId`.
pub const MAX_ID_CHARS: usize = 256;
/// The most characters in `text`.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidMessage {
    /// `userId`
    pub user_id: String,
    /// `sessionId`
    pub session_id: String,
    /// `text`
    pub text: Option<String>,
    /// `data`, as compact JSON object text.
    pub data: Option<String>,
}

/// Parses and checks a request body (whose content type was checked).
pub fn parse(body: &[u8]) -> Result<ValidMessage, Problem> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut fields) = value else {
        return Err(invalid(vec![FieldError {
            pointer: String::new(),
            detail: "the body must be a JSON object".into(),
        }]));
    };

    let mut errors = Vec::new();
    let user_id = id_field(&mut fields, "userId", &mut errors);
    let session_id = id_field(&mut fields, "sessionId", &mut errors);
    let text = match fields.remove("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.chars().count() <= MAX_TEXT_CHARS => Some(text),
        Some(Value::String(_)) => {
            errors.push(field(
                "text",
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            ));
            None
        }
        Some(_) => {
            errors.push(field("text", "must be a string"));
            None
        }
    };
    let data = match fields.remove("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => Some(Value::Object(data).to_string()),
        Some(_) => {
            errors.push(field("data", "must be a JSON object"));
            None
        }
    };
    if text.is_none()
        && data.is_none()
        && errors
            .iter()
            .all(|e| e.pointer != "/text" && e.pointer != "/data")
    {
        errors.push(FieldError {
            pointer: String::new(),
            detail: "give at least one of text and data".into(),
        });
    }
    match (user_id, session_id) {
        (Some(user_id), Some(session_id)) if errors.is_empty() => Ok(ValidMessage {
            user_id,
            session_id,
            text,
            data,
        }),
        _ => Err(invalid(errors)),
    }
}

fn id_field(
    fields: &mut Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match fields.remove(name) {
        Some(Value::String(id)) if id.is_empty() => {
            errors.push(field(name, "must not be empty"));
            None
        }
        Some(Value::String(id)) if id.chars().count() > MAX_ID_CHARS => {
            errors.push(field(
                name,
                format!("must be at most {MAX_ID_CHARS} characters"),
            ));
            None
        }
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            errors.push(field(
                name,
                "must not contain control characters (such as NUL, newline or ESC)",
            ));
            None
        }
        Some(Value::String(id)) => Some(id),
        None | Some(Value::Null) => {
            errors.push(field(name, "is required"));
            None
        }
        Some(_) => {
            errors.push(field(name, "must be a string"));
            None
        }
    }
}

fn field(name: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        pointer: format!("/{name}"),
        detail: detail.into(),
    }
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    let detail = errors
        .iter()
        .map(|e| match e.pointer.strip_prefix('/') {
            Some(name) => format!("{name} {}", e.detail),
            None => e.detail.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut problem = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-message",
        "Invalid message",
        detail,
    );
    problem.errors = errors;
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(body: &str) -> Vec<String> {
        let problem = parse(body.as_bytes()).unwrap_err();
        assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        problem.errors.into_iter().map(|e| e.pointer).collect()
    }

    #[test]
    fn accepts_the_seed_example() {
        let message = parse(
            br#"{"userId":"user123","sessionId":"session123","text":"Hello, I need help with my order","data":{"exampleKey":"exampleValue"}}"#,
        )
        .unwrap();
        assert_eq!(message.user_id, "user123");
        assert_eq!(
            message.text.as_deref(),
            Some("Hello, I need help with my order")
        );
        assert_eq!(
            message.data.as_deref(),
            Some(r#"{"exampleKey":"exampleValue"}"#)
        );
    }

    #[test]
    fn either_text_or_data_is_enough() {
        assert!(parse(br#"{"userId":"u","sessionId":"s","text":"hi"}"#).is_ok());
        assert!(parse(br#"{"userId":"u","sessionId":"s","data":{}}"#).is_ok());
        assert_eq!(pointers(r#"{"userId":"u","sessionId":"s"}"#), [""]);
        assert_eq!(
            pointers(r#"{"userId":"u","sessionId":"s","text":null,"data":null}"#),
            [""]
        );
    }

    #[test]
    fn names_every_bad_field() {
        assert_eq!(pointers(r#"{"text":"hi"}"#), ["/userId", "/sessionId"]);
        assert_eq!(
            pointers(r#"{"userId":"","sessionId":7,"text":"hi"}"#),
            ["/userId", "/sessionId"]
        );
        assert_eq!(
            pointers(r#"{"userId":"u","sessionId":"s","text":5}"#),
            ["/text"]
        );
        assert_eq!(
            pointers(r#"{"userId":"u","sessionId":"s","data":[1]}"#),
            ["/data"]
        );
        assert_eq!(pointers(r#"[1,2]"#), [""]);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let id = "é".repeat(MAX_ID_CHARS);
        let ok = format!(r#"{{"userId":"{id}","sessionId":"s","text":"hi"}}"#);
        assert!(parse(ok.as_bytes()).is_ok());
        let long = format!(
            r#"{{"userId":"{id}x","sessionId":"s","text":"{}"}}"#,
            "ü".repeat(MAX_TEXT_CHARS + 1)
        );
        assert_eq!(pointers(&long), ["/userId", "/text"]);
    }

    #[test]
    fn refuses_control_characters_in_ids() {
        for bad in [
            "\\n",
            "\\r",
            "\\u001b[31m",
            "\\u0000",
            "\\t",
            "\\u007f",
            "\\u0085",
        ] {
            // `bad` is a JSON escape: a backslash and its letters.
            let user = format!(r#"{{"userId":"a{bad}b","sessionId":"s","text":"hi"}}"#);
            assert_eq!(pointers(&user), ["/userId"], "{user}");
            let session = format!(r#"{{"userId":"u","sessionId":"FAKE{bad}ERROR","text":"hi"}}"#);
            let problem = parse(session.as_bytes()).unwrap_err();
            assert_eq!(problem.errors[0].pointer, "/sessionId");
            assert!(
                problem.detail.contains("control characters"),
                "{}",
                problem.detail
            );
        }
        // Control characters in text are the user's business.
        assert!(parse(br#"{"userId":"u","sessionId":"s","text":"line\nnext"}"#).is_ok());
        assert!(
            parse("{\"userId\":\"ü-ß ok\",\"sessionId\":\"s\",\"text\":\"hi\"}".as_bytes()).is_ok()
        );
    }

    #[test]
    fn broken_json_is_a_400() {
        let problem = parse(b"{\"userId\": ").unwrap_err();
        assert_eq!(problem.status, StatusCode::BAD_REQUEST);
        assert!(problem.detail.contains("line 1"), "{}", problem.detail);
    }
}
