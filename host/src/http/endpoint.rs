//! `POST /endpoint/{url_token}`: one user message in, `202 {traceId}` out;
//! and beside it, for a backend, `…/inject` (a message run as if the user
//! had said it) and `…/notify` (an output sent as the bot's, without
//! running the flow). All three are the same request, queued in the
//! session's order behind everything the session has waiting.
//!
//! The checks run cheapest first, and nothing is read that a failed check
//! makes unnecessary: the token (404), the API key (401, before the body is
//! read), the content type (415), the size (413), the JSON (400), the fields
//! (422), the flow being in service (503). Then the message is made durable
//! and queued, and only then is it acknowledged. An endpoint with a
//! transformer hands the body to it in place of the content type and JSON
//! checks (see `transformer`); what it makes is checked field by field.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri, header};
use http_body_util::BodyExt;
use serde_json::json;
use tracing::Instrument;

use super::extract::Path;
use super::transformer::{self, Transformed};
use super::{AppState, Problem};
use super::{message, rest};
use crate::endpoints::{Auth, Endpoint, EndpointMode};
use crate::inbox::AcceptError;
use crate::store::{Accepted, IdempotencyKey, InboxMessage, MessageKind, SessionKey, now_ms};
use crate::telemetry::traces;

/// The header that carries an endpoint's API key.
pub(super) const API_KEY_HEADER: &str = "x-webhook-key";

/// `POST /endpoint/{url_token}`: a user's message.
pub(super) async fn receive(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_as(MessageKind::User, app, token, &uri, headers, body).await
}

/// `POST /endpoint/{url_token}/inject`: a backend's event, run by the flow
/// as if the user had said it.
pub(super) async fn inject(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_as(MessageKind::Inject, app, token, &uri, headers, body).await
}

/// `POST /endpoint/{url_token}/notify`: a backend's output, sent to the
/// webhook as the bot's.
pub(super) async fn notify(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_as(MessageKind::Notify, app, token, &uri, headers, body).await
}

/// Answers the POST, and counts the answer in `flowhost_messages_total`.
/// Its span, `accept`, is the root of the message's trace (or a child of
/// the caller's `traceparent`).
async fn receive_as(
    kind: MessageKind,
    app: Arc<AppState>,
    token: String,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = tracing::info_span!(
        "accept",
        otel.kind = "server",
        endpoint = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    traces::set_parent(&span, traces::parent_in(&headers));
    let answered = async {
        let Some(endpoint) = app.endpoints.load().by_token(&token).cloned() else {
            // Counted under no endpoint: the token is the caller's to choose.
            app.metrics
                .message_answered("", StatusCode::NOT_FOUND.as_u16());
            return Problem::not_found("no endpoint has this URL").into_response();
        };
        tracing::Span::current().record("endpoint", endpoint.name());
        let response = answer(&app, &endpoint, kind, uri, &headers, body)
            .await
            .into_response();
        app.metrics
            .message_answered(endpoint.name(), response.status().as_u16());
        response
    };
    let response = answered.instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn answer(
    app: &AppState,
    endpoint: &Endpoint,
    kind: MessageKind,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    if kind != MessageKind::User && endpoint.config.mode == EndpointMode::Rest {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-a-webhook-endpoint",
            "Not a webhook endpoint",
            "inject and notify push into a conversation through its webhook; this endpoint answers each POST itself (mode = \"rest\")",
        ));
    }
    if endpoint.config.auth == Auth::ApiKey {
        let presented = headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if presented.is_empty() {
            return Err(Problem::unauthorized());
        }
        let active = app
            .keys
            .is_active_key(endpoint.name(), crate::keys::hash(presented))
            .await
            .map_err(|error| {
                tracing::error!(%error, endpoint = endpoint.name(), "cannot read API keys");
                Problem::internal()
            })?;
        if !active {
            return Err(Problem::unauthorized());
        }
    }

    // A channel's transformer reads what the channel sends, JSON or not;
    // backends inject and notify in the seed's JSON.
    let transformer = endpoint
        .config
        .transformer
        .as_deref()
        .filter(|_| kind == MessageKind::User);
    if transformer.is_none() {
        expect_json(headers)?;
    }
    let key = idempotency_key(headers)?;
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Body too large",
            format!("the body is over the limit of {} bytes", app.max_body_size),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > app.max_body_size as u64) {
        return Err(too_large());
    }
    // Held until the request is answered: the body is in memory until then.
    let _budget = app
        .body_budget
        .try_reserve(declared.unwrap_or(app.max_body_size as u64))
        .ok_or_else(|| {
            tracing::debug!(endpoint = endpoint.name(), "request body budget spent: 503");
            Problem::unavailable(
                "busy",
                "Too many requests in progress",
                "flowhost is reading too many request bodies at once; retry shortly",
            )
        })?;
    // A client that sends its body slowly (or not at all) holds a
    // connection: it gets 30 seconds.
    let collected = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        http_body_util::Limited::new(body, app.max_body_size).collect(),
    )
    .await
    .map_err(|_| {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            "the request body did not arrive within 30 seconds",
        )
    })?;
    let bytes = collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "Unreadable body",
                    "the request body could not be read to its end",
                )
            }
        })?
        .to_bytes();
    let (valid, answer) = match transformer {
        None => (message::parse(&bytes)?, None),
        Some(name) => {
            match transformer::transform(app, endpoint, name, uri, headers, &bytes).await? {
                Transformed::Run { message, answer } => (message, answer),
                Transformed::Respond(response) => return Ok(response),
                Transformed::Seed => {
                    expect_json(headers)?;
                    (message::parse(&bytes)?, None)
                }
            }
        }
    };
    let key = key.map(|key| IdempotencyKey {
        fingerprint: fingerprint(kind.as_str(), &valid),
        key,
        window: endpoint.config.idempotency_window,
    });
    let accepted = accept_and_answer(app, endpoint, kind, valid, key).await?;
    Ok(answer.unwrap_or_else(|| accepted.into_response()))
}

/// Accepts a checked message of `endpoint` and answers as the endpoint
/// does: `202` with its trace id, or, in REST mode, `200` with the outputs
/// once its turn has ended. Also for the admin API's messages.
pub(super) async fn accept_and_answer(
    app: &AppState,
    endpoint: &Endpoint,
    kind: MessageKind,
    valid: message::ValidMessage,
    key: Option<IdempotencyKey>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    // The answer names them in REST mode only.
    let ids = (endpoint.config.mode == EndpointMode::Rest)
        .then(|| (valid.user_id.clone(), valid.session_id.clone()));
    let accepted = accept(app, endpoint, kind, valid, key).await?;
    match ids {
        None => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "traceId": accepted.trace_id })),
        )),
        Some((user_id, session_id)) => {
            rest::answer(app, endpoint, accepted, &user_id, &session_id).await
        }
    }
}

/// The header by which a caller makes a POST safe to repeat.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The request's `Idempotency-Key`, if it has one: 1 to 255 visible ASCII
/// characters, or a `400`.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// What a request asks for, as a digest: which route (a message, an
/// injected one, a notification) and the message's fields. Two requests
/// that differ only in their JSON's spacing or key order ask for the same.
fn fingerprint(route: &str, message: &message::ValidMessage) -> String {
    use sha2::Digest;
    let canonical = json!({
        "route": route,
        "userId": message.user_id,
        "sessionId": message.session_id,
        "text": message.text,
        "data": message.data,
    });
    hex::encode(sha2::Sha256::digest(canonical.to_string()))
}

/// Stores a checked message of `endpoint` and queues it; returns its trace
/// id. Also for the admin API's messages (the console's chat).
/// With an idempotency `key` remembered already, nothing is stored: the
/// answer is the first request's message, or a `422` if the key came with
/// a different request.
pub(super) async fn accept(
    app: &AppState,
    endpoint: &Endpoint,
    kind: MessageKind,
    valid: message::ValidMessage,
    key: Option<IdempotencyKey>,
) -> Result<AcceptedMessage, Problem> {
    // Where hosts share the store, another host may have the flow: the
    // message waits for one that has. A notification runs no flow.
    if kind.runs_flow()
        && !app.inbox.is_shared()
        && !app.flows.serves_or_may_serve(&endpoint.config.flow)
    {
        return Err(Problem::unavailable(
            "flow-not-loaded",
            "Flow not loaded",
            format!(
                "the endpoint's flow {:?} is not loaded; retry once it is",
                endpoint.config.flow
            ),
        ));
    }

    let trace_id = crate::inbox::new_trace_id();
    tracing::Span::current().record("trace_id", &trace_id);
    let message = InboxMessage {
        id: 0,
        session: SessionKey {
            endpoint: endpoint.name().to_owned(),
            session_id: valid.session_id,
        },
        user_id: valid.user_id,
        text: valid.text,
        data: valid.data,
        trace_id: trace_id.clone(),
        received_at: now_ms(),
        // The accept's span: its turn and deliveries are its children.
        trace_parent: traces::current_traceparent(),
        kind,
    };
    let accepted = app
        .inbox
        .accept(message, key)
        .await
        .map_err(|error| not_accepted(error, endpoint.name()))?;
    match accepted {
        Accepted::Stored { id } => Ok(AcceptedMessage { trace_id, id }),
        Accepted::Repeated {
            trace_id,
            message_id,
        } => {
            tracing::Span::current().record("trace_id", &trace_id);
            tracing::debug!(endpoint = endpoint.name(), %trace_id, "a repeated request: answered as the first, nothing run");
            Ok(AcceptedMessage {
                trace_id,
                id: message_id,
            })
        }
        Accepted::KeyReused => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )),
    }
}

/// A message in the inbox: the one just stored, or the one a repeated
/// request was first stored as.
pub(super) struct AcceptedMessage {
    /// Its trace id, for the answer.
    pub(super) trace_id: String,
    /// Its id in the store.
    pub(super) id: i64,
}

/// The answer to a message the inbox did not accept. Nothing of it was
/// kept, so whatever passes by itself (a full queue, a full disk, a busy
/// database) is a 503 with `Retry-After`, which senders retry; a 500 many
/// do not.
fn not_accepted(error: AcceptError, endpoint: &str) -> Problem {
    match error {
        AcceptError::Overloaded(crowded) => Problem::unavailable(
            "overloaded",
            "Overloaded",
            format!("too many messages {crowded} are waiting to run; retry shortly"),
        ),
        AcceptError::Store(error) => {
            let _endpoint = tracing::info_span!("accept", endpoint).entered();
            error.into()
        }
    }
}

/// A `415` problem unless the body is JSON. Also for the admin API's
/// messages.
pub(super) fn expect_json(headers: &HeaderMap) -> Result<(), Problem> {
    if is_json(headers) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        "send the message as JSON, with Content-Type: application/json",
    ))
}

/// `application/json`, with or without parameters, or any `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use rusqlite::ffi;

    fn sqlite(code: std::ffi::c_int) -> AcceptError {
        AcceptError::Store(StoreError::Database(rusqlite::Error::SqliteFailure(
            ffi::Error::new(code),
            Some("from the test".into()),
        )))
    }

    #[test]
    fn a_fingerprint_is_what_the_request_asks_for_not_how_it_is_written() {
        let parse = |body: &str| message::parse(body.as_bytes()).unwrap();
        let one = parse(r#"{"userId":"u","sessionId":"s","text":"hi","data":{"a":1,"b":2}}"#);
        let same =
            parse(r#"{ "data": {"b": 2, "a": 1}, "text": "hi", "sessionId": "s", "userId": "u" }"#);
        assert_eq!(fingerprint("user", &one), fingerprint("user", &same));
        let other = parse(r#"{"userId":"u","sessionId":"s","text":"hi!","data":{"a":1,"b":2}}"#);
        assert_ne!(fingerprint("user", &one), fingerprint("user", &other));
        assert_ne!(fingerprint("user", &one), fingerprint("notify", &one));
    }

    #[test]
    fn a_store_failure_that_passes_is_a_503_to_retry() {
        for error in [
            sqlite(ffi::SQLITE_FULL),
            sqlite(ffi::SQLITE_BUSY),
            sqlite(ffi::SQLITE_LOCKED),
            sqlite(ffi::SQLITE_IOERR),
            sqlite(ffi::SQLITE_IOERR_WRITE),
            sqlite(ffi::SQLITE_IOERR_FSYNC),
            AcceptError::Store(StoreError::Closed),
            AcceptError::Overloaded(crate::inbox::Crowded::Endpoint),
        ] {
            let summary = format!("{error:?}");
            let problem = not_accepted(error, "support");
            assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE, "{summary}");
            let response = axum::response::IntoResponse::into_response(problem);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1", "{summary}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
        }
    }

    #[test]
    fn other_store_failures_stay_a_500() {
        for error in [
            sqlite(ffi::SQLITE_CORRUPT),
            sqlite(ffi::SQLITE_CONSTRAINT),
            AcceptError::Store(StoreError::Database(rusqlite::Error::InvalidQuery)),
            AcceptError::Store(StoreError::Open("no such folder".into())),
        ] {
            let summary = format!("{error:?}");
            let problem = not_accepted(error, "support");
            assert_eq!(
                problem.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{summary}"
            );
        }
    }
}
