//! `POST /endpoint/{url_token}`: one user message in, `202 {traceId}` out.
//!
//! The checks run cheapest first, and nothing is read that a failed check
//! makes unnecessary: the token (404), the API key (401, before the body is
//! read), the content type (415), the size (413), the JSON (400), the fields
//! (422), the flow being in service (503). Then the message is made durable
//! and queued, and only then is it acknowledged.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;

use super::message;
use super::{AppState, Problem};
use crate::config::Auth;
use crate::inbox::AcceptError;
use crate::store::{InboxMessage, SessionKey, now_ms};

/// The header that carries an endpoint's API key.
pub(super) const API_KEY_HEADER: &str = "x-webhook-key";

pub(super) async fn receive(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    let endpoint = app
        .endpoints
        .load()
        .by_token(&token)
        .cloned()
        .ok_or_else(|| Problem::not_found("no endpoint has this URL"))?;

    if endpoint.config.auth == Auth::ApiKey {
        let presented = headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let active = app
            .store
            .active_key_hashes(endpoint.name())
            .await
            .map_err(|error| {
                tracing::error!(%error, endpoint = endpoint.name(), "cannot read API keys");
                Problem::internal()
            })?;
        if presented.is_empty() || !crate::keys::matches(presented, &active) {
            return Err(Problem::unauthorized());
        }
    }

    if !is_json(&headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the message as JSON, with Content-Type: application/json",
        ));
    }
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
    let valid = message::parse(&bytes)?;

    if app.flows.get(&endpoint.config.flow).is_none() {
        return Err(Problem::unavailable(
            "flow-not-loaded",
            "Flow not loaded",
            format!(
                "the endpoint's flow {:?} is not loaded; retry once it is",
                endpoint.config.flow
            ),
        ));
    }

    let trace_id = format!("endpoint-httpIncomingMessage-{}", uuid::Uuid::new_v4());
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
    };
    app.inbox
        .accept(message)
        .await
        .map_err(|error| match error {
            AcceptError::Overloaded(crowded) => Problem::unavailable(
                "overloaded",
                "Overloaded",
                format!("too many messages {crowded} are waiting to run; retry shortly"),
            ),
            AcceptError::Store(error) => {
                tracing::error!(%error, endpoint = endpoint.name(), "cannot store a message");
                Problem::internal()
            }
        })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "traceId": trace_id }))))
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
