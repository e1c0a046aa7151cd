//! The inbound message: its body parsed and checked, field by field, as the
//! seed's Webhook Endpoint defines it.
//!
//! - `userId`, `sessionId`: required, non-empty strings of at most 256
//!   characters, without control characters (they end up in logs, where a
//!   newline or an escape sequence would forge or hide lines);
//! - `text`: a string of at most 10,000 characters;
//! - `data`: a JSON object;
//! - at least one of `text` and `data` (`null` counts as absent);
//! - each of these four at most once: JSON leaves duplicate names to the
//!   parser, and a proxy in front that keeps the first while flowhost kept
//!   the last would check one message and pass on another;
//! - other fields are ignored.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Body::Object {
        mut fields,
        repeated,
    } = body
    else {
        return Err(invalid(vec![FieldError {
            pointer: String::new(),
            detail: "the body must be a JSON object".into(),
        }]));
    };
    if !repeated.is_empty() {
        return Err(invalid(
            repeated
                .into_iter()
                .map(|name| field(name, "appears more than once"))
                .collect(),
        ));
    }

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

/// What is wrong with a `userId` or `sessionId`, if anything.
pub fn id_fault(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("must not be empty".into())
    } else if id.chars().count() > MAX_ID_CHARS {
        Some(format!("must be at most {MAX_ID_CHARS} characters"))
    } else if id.chars().any(char::is_control) {
        Some("must not contain control characters (such as NUL, newline or ESC)".into())
    } else {
        None
    }
}

fn id_field(
    fields: &mut Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match fields.remove(name) {
        Some(Value::String(id)) => match id_fault(&id) {
            Some(fault) => {
                errors.push(field(name, fault));
                None
            }
            None => Some(id),
        },
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

/// The fields flowhost reads; the others are skipped unread.
const KNOWN: [&str; 4] = ["userId", "sessionId", "text", "data"];

/// A request body as parsed: an object's known fields, and those of them
/// that appear more than once; or anything else JSON.
enum Body {
    Object {
        fields: Map<String, Value>,
        repeated: Vec<&'static str>,
    },
    NotAnObject,
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut fields = Map::new();
        let mut repeated = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            match KNOWN.iter().find(|known| **known == name) {
                Some(known) if fields.contains_key(*known) => {
                    map.next_value::<IgnoredAny>()?;
                    if !repeated.contains(known) {
                        repeated.push(*known);
                    }
                }
                Some(known) => {
                    fields.insert((*known).to_owned(), map.next_value::<Value>()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Body::Object { fields, repeated })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Body::NotAnObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Body, E> {
        Ok(Body::NotAnObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Body, E> {
        Ok(Body::NotAnObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Body, E> {
        Ok(Body::NotAnObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Body, E> {
        Ok(Body::NotAnObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Body, E> {
        Ok(Body::NotAnObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Body, E> {
        Ok(Body::NotAnObject)
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
    fn refuses_repeated_fields_naming_them() {
        for (body, repeated) in [
            (
                r#"{"userId":"first","userId":"second","sessionId":"s","text":"a"}"#,
                vec!["/userId"],
            ),
            (
                r#"{"userId":"u","sessionId":"s","text":"a","text":"b","sessionId":"t"}"#,
                vec!["/text", "/sessionId"],
            ),
            (
                r#"{"userId":"u","sessionId":"s","data":{},"data":null}"#,
                vec!["/data"],
            ),
            (
                r#"{"userId":"u","sessionId":"s","text":"a","text":"b","text":"c"}"#,
                vec!["/text"],
            ),
        ] {
            let problem = parse(body.as_bytes()).unwrap_err();
            assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let pointers: Vec<_> = problem.errors.iter().map(|e| e.pointer.as_str()).collect();
            assert_eq!(pointers, repeated, "{body}");
            assert!(
                problem.detail.contains("more than once"),
                "{}",
                problem.detail
            );
        }
        // Names that only look alike are different names, and unknown
        // fields may repeat: they are not read.
        let message =
            parse(br#"{"userId":"u","sessionId":"s","text":"a","userid":"x","extra":1,"extra":2}"#)
                .unwrap();
        assert_eq!(message.user_id, "u");
        // An escaped name is the same name.
        assert_eq!(
            pointers(r#"{"userId":"u","sessionId":"s","text":"a","\u0074ext":"b"}"#),
            ["/text"]
        );
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
