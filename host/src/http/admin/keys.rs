//! An endpoint's API keys: listed (never the keys themselves: only their
//! first characters), created (the key shown in this answer only; the
//! store keeps its SHA-256), and revoked; live, as `flowhost keys` does.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::known_endpoint;
use crate::http::extract::{Body, Path};
use crate::http::{AppState, Problem};
use crate::store::ApiKeyInfo;

/// A key as listed.
fn listed(key: &ApiKeyInfo) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "createdAt": key.created_at,
        "revokedAt": key.revoked_at,
    })
}

pub(super) async fn list(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
) -> Result<Json<Value>, Problem> {
    known_endpoint(&app, &endpoint)?;
    let keys = app.keys.api_keys(Some(&endpoint)).await?;
    Ok(Json(json!({
        "endpoint": endpoint,
        "keys": keys.iter().map(listed).collect::<Vec<_>>(),
    })))
}

/// What creating a key may say about it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// A name, to tell keys apart (1–64 characters).
    name: Option<String>,
}

pub(super) async fn create(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    known_endpoint(&app, &endpoint)?;
    let invalid = |detail: &str| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-key-request",
            "Invalid key request",
            detail.to_owned(),
        )
    };
    let request: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| invalid(&format!("the body is not {{\"name\": \"…\"}}: {e}")))?
    };
    if let Some(name) = &request.name
        && (name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control))
    {
        return Err(invalid("name: 1 to 64 characters, no control characters"));
    }
    let key = crate::keys::generate(&endpoint, request.name);
    app.keys.add_api_key(key.record.clone()).await?;
    tracing::info!(endpoint = %endpoint, key = %key.record.info.id, "API key created through the admin API");
    let mut created = listed(&key.record.info);
    created["key"] = json!(key.secret);
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn revoke(
    State(app): State<Arc<AppState>>,
    Path((endpoint, key)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    known_endpoint(&app, &endpoint)?;
    if !app.keys.revoke_api_key(&endpoint, &key).await? {
        return Err(Problem::not_found(format!(
            "endpoint {endpoint:?} has no active key {key:?}"
        )));
    }
    tracing::info!(endpoint = %endpoint, key = %key, "API key revoked through the admin API");
    Ok(Json(json!({ "endpoint": endpoint, "revoked": key })))
}
