//! REST mode: the POST waits for its message's turn and is answered with
//! the outputs, in the shape of the product's REST endpoint:
//!
//! ```json
//! {"userId":"…","sessionId":"…","text":"…","data":{…},
//!  "outputStack":[{"text":"…","data":{…},"traceId":"…","disableSensitiveLogging":false,"source":"bot"}]}
//! ```
//!
//! The message is accepted exactly as on a webhook endpoint (durable, in
//! its session's order), and its outputs are kept, as delivered: a request
//! repeated with its `Idempotency-Key` gets the same answer, once the turn
//! has ended, even if the first request timed out.

use axum::Json;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::endpoint::AcceptedMessage;
use super::{AppState, Problem};
use crate::endpoints::Endpoint;
use crate::store::TurnAnswer;

/// Waits for `accepted`'s turn, at most the endpoint's `rest_timeout`, and
/// answers with what the flow said, for `user_id` in `session_id`.
pub(super) async fn answer(
    app: &AppState,
    endpoint: &Endpoint,
    accepted: AcceptedMessage,
    user_id: &str,
    session_id: &str,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let timeout = endpoint.config.rest_timeout;
    let trace_id = accepted.trace_id;
    match app.inbox.answer(accepted.id, timeout).await? {
        TurnAnswer::Done(bodies) => Ok((
            StatusCode::OK,
            Json(response(user_id, session_id, &bodies)),
        )),
        TurnAnswer::Failed(reason) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "flow-failed",
            "Flow failed",
            format!("the flow failed on this message, and nothing of its turn was kept: {reason}"),
        )
        .with_trace_id(trace_id)),
        TurnAnswer::Pending => Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "rest-timeout",
            "No answer in time",
            format!(
                "the message's turn did not end within the endpoint's rest_timeout ({} s); \
                 it is stored and runs in its turn, and its answer is kept: send the request \
                 again with the same Idempotency-Key to get it",
                timeout.as_secs_f64()
            ),
        )
        .with_trace_id(trace_id)),
        TurnAnswer::Unknown => Err(Problem::new(
            StatusCode::GONE,
            "answer-gone",
            "Answer no longer kept",
            "the message this request repeats is no longer kept (pruned after its retention, or erased)",
        )
        .with_trace_id(trace_id)),
    }
}

/// The answer's body: each output as the webhook would have got its
/// `AIOutput`, in order (`outputStack`), and, on top, their texts joined by
/// newlines and their data merged (a later output's keys win); `null`
/// where no output has any.
fn response(user_id: &str, session_id: &str, bodies: &[String]) -> Value {
    let stack: Vec<Value> = bodies
        .iter()
        .filter_map(|body| serde_json::from_str::<Value>(body).ok())
        .map(|mut body| body["AIOutput"].take())
        .collect();
    let texts: Vec<&str> = stack.iter().filter_map(|o| o["text"].as_str()).collect();
    let mut data = Map::new();
    for output in &stack {
        if let Some(object) = output["data"].as_object() {
            data.extend(object.clone());
        }
    }
    let has_data = stack.iter().any(|o| o["data"].is_object());
    json!({
        "userId": user_id,
        "sessionId": session_id,
        "text": if texts.is_empty() { Value::Null } else { texts.join("\n").into() },
        "data": if has_data { Value::Object(data) } else { Value::Null },
        "outputStack": stack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: Option<&str>, data: Value) -> String {
        json!({
            "userId": "u", "sessionId": "s",
            "AIOutput": {"text": text, "data": data, "traceId": "t",
                         "disableSensitiveLogging": false, "source": "bot"},
        })
        .to_string()
    }

    #[test]
    fn texts_are_joined_and_data_merged_in_order() {
        let answer = response(
            "u",
            "s",
            &[
                body(Some("Hello"), json!({"a": 1, "b": 1})),
                body(None, json!({"b": 2})),
                body(Some("How can I help?"), Value::Null),
            ],
        );
        assert_eq!(answer["text"], "Hello\nHow can I help?");
        assert_eq!(answer["data"], json!({"a": 1, "b": 2}));
        assert_eq!(answer["outputStack"].as_array().unwrap().len(), 3);
        assert_eq!(answer["outputStack"][1]["data"], json!({"b": 2}));
        assert_eq!(answer["outputStack"][0]["source"], "bot");
    }

    #[test]
    fn no_outputs_is_nulls_and_an_empty_stack() {
        let answer = response("u", "s", &[]);
        assert_eq!(
            answer,
            json!({"userId": "u", "sessionId": "s", "text": null, "data": null, "outputStack": []})
        );
    }
}
