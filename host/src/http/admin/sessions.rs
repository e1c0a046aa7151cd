//! Conversations, for an operator: a session reset, and a user erased.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Value, json};

use crate::http::extract::Path;
use crate::http::{AppState, Problem, endpoint, message};
use crate::store::MessageKind;

/// `DELETE /admin/endpoints/{endpoint}/sessions/{session}`: the session's
/// context is emptied, in its place in the session's order: a turn running
/// finishes first, and so do the messages accepted before the reset; the
/// next one starts afresh. `202` with the reset's trace id.
pub(super) async fn reset(
    State(app): State<Arc<AppState>>,
    Path((name, session_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let endpoint = super::known_endpoint(&app, &name)?;
    valid_id("session id", &session_id)?;
    let reset = message::ValidMessage {
        user_id: String::new(),
        session_id,
        text: None,
        data: None,
    };
    let accepted = endpoint::accept(&app, &endpoint, MessageKind::Reset, reset, None).await?;
    let trace_id = accepted.trace_id;
    tracing::info!(endpoint = %name, %trace_id, "session reset through the admin API");
    Ok((StatusCode::ACCEPTED, Json(json!({ "traceId": trace_id }))))
}

/// `DELETE /admin/endpoints/{endpoint}/users/{user}`: everything kept of
/// the user at the endpoint is removed (see [`Store::erase_user`]); the
/// answer says how much.
///
/// [`Store::erase_user`]: crate::store::Store::erase_user
pub(super) async fn erase_user(
    State(app): State<Arc<AppState>>,
    Path((name, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    super::known_endpoint(&app, &name)?;
    valid_id("user id", &user_id)?;
    let erased = app.store.erase_user(&name, &user_id).await?;
    if erased.outputs > 0 {
        app.delivery.outputs_removed();
    }
    // The user's id stays out of the log: it is what was just erased.
    tracing::info!(
        endpoint = %name,
        profiles = erased.profiles,
        sessions = erased.sessions,
        messages = erased.messages,
        outputs = erased.outputs,
        "a user was erased through the admin API"
    );
    Ok(Json(
        json!({ "endpoint": name, "userId": user_id, "erased": erased }),
    ))
}

/// A `400` unless `id` is a valid `userId` or `sessionId` (`what`).
fn valid_id(what: &str, id: &str) -> Result<(), Problem> {
    match message::id_fault(id) {
        None => Ok(()),
        Some(fault) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid parameter",
            format!("the {what} {fault}"),
        )),
    }
}
