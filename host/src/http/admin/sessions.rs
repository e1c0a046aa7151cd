//! Conversations, for an operator: a session reset, and (with the store's
//! help) a user erased.

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
    if let Some(fault) = message::id_fault(&session_id) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid parameter",
            format!("the session id {fault}"),
        ));
    }
    let reset = message::ValidMessage {
        user_id: String::new(),
        session_id,
        text: None,
        data: None,
    };
    let trace_id = endpoint::accept(&app, &endpoint, MessageKind::Reset, reset, None).await?;
    tracing::info!(endpoint = %name, %trace_id, "session reset through the admin API");
    Ok((StatusCode::ACCEPTED, Json(json!({ "traceId": trace_id }))))
}
