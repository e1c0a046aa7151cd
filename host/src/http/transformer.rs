//! An endpoint's input transformer: the channel's request, whatever its
//! shape, turned into the message the endpoint stores and runs, or into an
//! answer of the transformer's own.
//!
//! It runs after the checks that protect the host (the token, the API key,
//! the body's size) and before anything is stored: what it makes is checked
//! as the seed's JSON is, and what is stored is what it made, so a `202`
//! still means the message is durable. When it fails (an error, a trap, a
//! limit, a message that does not pass the checks), the endpoint's
//! `transformer_abort_on_error` says whether the request is refused (`422`)
//! or read as the seed's JSON, as if there were no transformer.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Map, Value};

use super::endpoint::API_KEY_HEADER;
use super::message::{self, ValidMessage};
use super::{AppState, Problem};
use crate::endpoints::Endpoint;
use crate::runtime::{channel, transformer_headers};

/// What the transformer made of a request.
pub(super) enum Transformed {
    /// A message to store and run; once stored, the answer is this, or the
    /// endpoint's own when none.
    Run {
        message: ValidMessage,
        answer: Option<Response>,
    },
    /// The answer, now; nothing runs.
    Respond(Response),
    /// Nothing: read the request as the seed's JSON (no `handle-input`, or
    /// it failed and the endpoint does not abort on error).
    Seed,
}

/// Headers a transformer's answer may not set: they frame the response,
/// which is the host's to do.
const FRAMING: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Runs the endpoint's transformer `name` on the request.
pub(super) async fn transform(
    app: &AppState,
    endpoint: &Endpoint,
    name: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Transformed, Problem> {
    let Some(transformer) = loaded(app, name).await else {
        return Err(Problem::unavailable(
            "transformer-not-loaded",
            "Transformer not loaded",
            format!("the endpoint's transformer {name:?} is not loaded; retry once it is"),
        ));
    };
    let request = channel::Request {
        method: "POST".into(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .filter(|(name, _)| *name != API_KEY_HEADER)
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: body.to_vec(),
    };
    let input = app
        .runtime
        .transform_input(
            &transformer.ready,
            endpoint.name(),
            endpoint.config.withholds_content(),
            request,
        )
        .await;
    let (made, outcome) = match input {
        Ok(None) => return Ok(Transformed::Seed),
        Ok(Some(input)) => {
            let asked = match &input {
                channel::Input::Run(_) => "run",
                channel::Input::Respond(_) => "respond",
                channel::Input::Ignore => "ignore",
            };
            let made = made(input);
            let outcome = if made.is_ok() { asked } else { "refused" };
            (made, outcome)
        }
        Err(failure) => (Err(failure.reason), failure.kind.label()),
    };
    app.metrics
        .transform(endpoint.name(), name, "handle-input", outcome);
    match made {
        Ok(transformed) => Ok(transformed),
        Err(reason) if endpoint.config.transformer_abort_on_error => {
            tracing::warn!(endpoint = endpoint.name(), transformer = name, %reason, "the transformer failed; the request is refused");
            Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "transformer-failed",
                "Transformer failed",
                format!("the endpoint's transformer {name} failed: {reason}"),
            ))
        }
        Err(reason) => {
            tracing::warn!(endpoint = endpoint.name(), transformer = name, %reason, "the transformer failed; the request is read as the seed's JSON (transformer_abort_on_error = false)");
            Ok(Transformed::Seed)
        }
    }
}

/// How long a request waits for a transformer that is loading (at the
/// start, its file in the flows folder but not compiled yet): the request's
/// body is in memory meanwhile, so not long.
const LOADING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The transformer `name`, waiting a little for it while it is loading.
async fn loaded(app: &AppState, name: &str) -> Option<std::sync::Arc<crate::flows::LoadedFlow>> {
    if let Some(loaded) = app.flows.get(name) {
        return Some(loaded);
    }
    if !app.flows.serves_or_may_serve(name) {
        return None;
    }
    tokio::time::timeout(LOADING_PATIENCE, app.flows.wait_for(name, &app.stopping))
        .await
        .ok()
        .flatten()
}

/// What the transformer's answer asks for, checked.
fn made(input: channel::Input) -> Result<Transformed, String> {
    match input {
        channel::Input::Run(run) => {
            let message = checked(run.message)?;
            let answer = run
                .answer
                .map(|answer| {
                    if !(200..300).contains(&answer.status) {
                        return Err(format!(
                            "the answer to a message it runs must be a 2xx, not {}",
                            answer.status
                        ));
                    }
                    response(answer)
                })
                .transpose()?;
            Ok(Transformed::Run { message, answer })
        }
        channel::Input::Respond(answer) => response(answer).map(Transformed::Respond),
        channel::Input::Ignore => Ok(Transformed::Respond(StatusCode::OK.into_response())),
    }
}

/// The message, checked as the seed's JSON is.
fn checked(message: channel::Message) -> Result<ValidMessage, String> {
    let data = message
        .data
        .map(|data| {
            serde_json::from_str::<Value>(&data)
                .map_err(|e| format!("its message's data is not JSON: {e}"))
        })
        .transpose()?;
    let mut fields = Map::new();
    fields.insert("userId".into(), message.user_id.into());
    fields.insert("sessionId".into(), message.session_id.into());
    fields.insert("text".into(), message.text.into());
    fields.insert("data".into(), data.unwrap_or(Value::Null));
    let body = Value::Object(fields).to_string();
    message::parse(body.as_bytes()).map_err(|problem| {
        let faults: Vec<String> = problem
            .errors
            .iter()
            .map(|e| format!("{} {}", e.pointer.trim_start_matches('/'), e.detail))
            .collect();
        format!(
            "its message does not pass the endpoint's checks: {}",
            if faults.is_empty() {
                problem.detail
            } else {
                faults.join("; ")
            }
        )
    })
}

/// The transformer's HTTP response, if it is one.
fn response(answer: channel::Response) -> Result<Response, String> {
    let status = StatusCode::from_u16(answer.status)
        .ok()
        .filter(|status| (200..600).contains(&status.as_u16()))
        .ok_or_else(|| format!("its answer's status {} is not 200 to 599", answer.status))?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    for (name, value) in transformer_headers(answer.headers, &FRAMING)? {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(user: &str, text: Option<&str>, data: Option<&str>) -> channel::Message {
        channel::Message {
            user_id: user.into(),
            session_id: "s".into(),
            text: text.map(str::to_owned),
            data: data.map(str::to_owned),
        }
    }

    #[test]
    fn a_transformers_message_is_checked_as_the_seeds_json_is() {
        let ok = checked(message("u", Some("hi"), Some(r#"{"a":1}"#))).unwrap();
        assert_eq!(ok.user_id, "u");
        assert_eq!(ok.data.as_deref(), Some(r#"{"a":1}"#));
        for (bad, why) in [
            (message("", Some("hi"), None), "userId"),
            (message("u\n", Some("hi"), None), "control"),
            (message("u", None, None), "at least one"),
            (message("u", None, Some("[1]")), "data"),
            (message("u", None, Some("{not json")), "not JSON"),
        ] {
            let reason = checked(bad).unwrap_err();
            assert!(reason.contains(why), "{why}: {reason}");
        }
    }

    #[test]
    fn a_transformers_answer_is_a_response_the_host_frames() {
        let answer = |status, headers: &[(&str, &str)]| channel::Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: b"challenge".to_vec(),
        };
        let ok = response(answer(200, &[("content-type", "text/plain")])).unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["content-type"], "text/plain");
        assert!(response(answer(99, &[])).is_err());
        assert!(response(answer(700, &[])).is_err());
        assert!(response(answer(200, &[("content-length", "1")])).is_err());
        assert!(response(answer(200, &[("x-a", "a\r\nb")])).is_err());
        let run = channel::Input::Run(channel::Run {
            message: message("u", Some("hi"), None),
            answer: Some(answer(302, &[])),
        });
        assert!(made(run).is_err());
    }
}
