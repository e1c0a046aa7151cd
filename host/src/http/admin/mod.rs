//! The admin API, under `/admin`, for operators and the console: the
//! endpoints with their URLs, rotating a generated URL token, API keys,
//! deliveries and dead letters (`deliveries`), a message sent as a user and
//! the stream of delivery attempts (`chat`), session resets and erasing a
//! user (`sessions`), and the flows in service. Everything under `/admin` requires `Authorization:
//! Bearer <admin_token>`, including wrong methods and unknown paths, so that
//! nothing tells a caller without the token which routes exist (a 405 or a
//! 404 would); without an `admin_token` in the configuration everything
//! under `/admin` answers `404`, as a path with nothing there does. The
//! token is read on each request, so a configuration reload changes it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use http::{StatusCode, header};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

mod chat;
mod deliveries;
mod keys;
mod sessions;

use super::AdminToken;
use super::extract::Path;
use super::{AppState, Problem};
use crate::endpoints::Auth;

/// The admin routes, guarded by `token`.
pub(super) fn routes(state: Arc<AppState>, token: AdminToken) -> Router<Arc<AppState>> {
    let admin = Router::new()
        .route("/flows", get(flows))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{endpoint}/url-token", post(rotate_url_token))
        .route(
            "/endpoints/{endpoint}/keys",
            get(keys::list).post(keys::create),
        )
        .route("/endpoints/{endpoint}/keys/{key}", delete(keys::revoke))
        .route("/endpoints/{endpoint}/messages", post(chat::send))
        .route("/endpoints/{endpoint}/events", get(chat::events))
        .route(
            "/endpoints/{endpoint}/deliveries",
            get(deliveries::deliveries),
        )
        .route(
            "/endpoints/{endpoint}/dead-letters",
            get(deliveries::dead_letters),
        )
        .route(
            "/endpoints/{endpoint}/deliveries/{id}/redeliver",
            post(deliveries::redeliver_one),
        )
        .route(
            "/endpoints/{endpoint}/dead-letters/redeliver",
            post(deliveries::redeliver_dead),
        )
        .route("/endpoints/{endpoint}/resume", post(deliveries::resume))
        .route(
            "/endpoints/{endpoint}/sessions/{session}",
            delete(sessions::reset),
        )
        .route(
            "/endpoints/{endpoint}/users/{user}",
            delete(sessions::erase_user),
        )
        // Both fallbacks are set here, before the layer, so that the layer
        // guards them too (`route_layer` would not, and the outer router's
        // fallbacks replace only default ones, which are not layered).
        .fallback(|| async { Problem::not_found("there is no admin route at this path") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this admin route does not take this method",
            )
        })
        // Bodies (a key's name, a message) are read whole: at most a
        // message's size. The layer closest to the handlers wins.
        .layer(DefaultBodyLimit::max(state.max_body_size))
        .layer(middleware::from_fn_with_state(token, authorize));
    Router::new().nest("/admin", admin).with_state(state)
}

/// Removes `Allow` from every admin answer but a 405, which only a caller
/// with the token gets. axum adds `Allow` to a route's answer to a method
/// it does not take after every layer of the route, the token's check
/// included, so a caller without the token would learn from a 401 (or,
/// without an admin token, a 404) that the route exists: this wraps the
/// whole router.
pub(super) async fn hide_allowed_methods(request: Request, next: Next) -> Response {
    let admin = request.uri().path().starts_with("/admin");
    let mut response = next.run(request).await;
    if admin && response.status() != StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().remove(header::ALLOW);
    }
    response
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive, and may be followed by more than one space (RFC 9110,
/// section 11.1).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

async fn authorize(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Result<Response, Problem> {
    let Some(token) = token.load_full() else {
        return Err(Problem::not_found("there is nothing at this path"));
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or_default();
    // Compare hashes, so that the time taken says nothing about the token,
    // not even its length.
    let matches: bool = crate::keys::hash(presented)
        .ct_eq(&crate::keys::hash(&token))
        .into();
    if presented.is_empty() || !matches {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid admin token",
            "the admin API requires Authorization: Bearer <admin_token>",
        )
        .with_header(header::WWW_AUTHENTICATE, r#"Bearer realm="flowhost admin""#));
    }
    Ok(next.run(request).await)
}

/// The endpoint named `endpoint`, or a `404` problem.
pub(super) fn known_endpoint(
    app: &AppState,
    endpoint: &str,
) -> Result<Arc<crate::endpoints::Endpoint>, Problem> {
    app.endpoints
        .load()
        .by_name(endpoint)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no endpoint named {endpoint:?}")))
}

/// Every endpoint with its flow, full URL, auth and webhook: the one place
/// besides `flowhost endpoints` that shows URL tokens whole.
async fn endpoints(State(app): State<Arc<AppState>>) -> Json<Value> {
    let endpoints: Vec<Value> = app
        .endpoints
        .load()
        .all()
        .into_iter()
        .map(|e| {
            // Without any credentials a URL may carry.
            let webhook = e.config.webhook_url.clone().map(|mut webhook| {
                let _ = webhook.set_password(None);
                let _ = webhook.set_username("");
                webhook.to_string()
            });
            json!({
                "name": e.name(),
                "flow": e.config.flow,
                "url": e.url(&app.base_url),
                "urlTokenConfigured": e.config.url_token.is_some(),
                "auth": match e.config.auth {
                    Auth::None => "none",
                    Auth::ApiKey => "api-key",
                },
                "mode": e.config.mode,
                "webhookUrl": webhook,
                "webhookAuth": e.config.webhook_auth.is_some(),
                "transformer": e.config.transformer,
            })
        })
        .collect();
    Json(json!({ "endpoints": endpoints }))
}

/// Gives an endpoint a new generated URL token; its old URL is refused
/// from now on.
async fn rotate_url_token(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
) -> Result<Json<Value>, Problem> {
    use crate::endpoints::RotateError;
    match app.url_tokens.rotate_url_token(&endpoint).await {
        Ok(rotated) => Ok(Json(json!({
            "name": rotated.name(),
            "url": rotated.url(&app.base_url),
        }))),
        Err(error @ RotateError::NoSuchEndpoint(_)) => Err(Problem::not_found(error.to_string())),
        Err(error @ RotateError::Configured(_)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "url-token-configured",
            "The URL token is configured",
            error.to_string(),
        )),
        Err(RotateError::Store(error)) => Err(error.into()),
    }
}

/// The flows in service, each with its version, size, when it was loaded
/// and the last load error of its name (a newer file that failed); and the
/// names whose files failed with no version in service.
async fn flows(State(app): State<Arc<AppState>>) -> Json<Value> {
    let failure = |name: &str| {
        app.flows
            .failure(name)
            .map(|f| json!({ "reason": f.reason, "at": f.at, "path": f.path }))
    };
    let mut flows: Vec<Value> = app
        .flows
        .all()
        .iter()
        .map(|flow| {
            json!({
                "name": flow.name,
                "loaded": true,
                "version": flow.version,
                "world": flow.compiled.world(),
                "kind": match flow.compiled.kind() {
                    crate::runtime::Kind::Flow => "flow",
                    crate::runtime::Kind::Transformer { .. } => "transformer",
                },
                "size": flow.size,
                "path": flow.path,
                "loadedAt": flow.loaded_at,
                "fromCache": flow.from_cache,
                "loadMs": flow.load_time.as_secs_f64() * 1000.0,
                "lastError": failure(&flow.name),
            })
        })
        .collect();
    for (name, failed) in app.flows.failures() {
        if app.flows.get(&name).is_none() {
            flows.push(json!({
                "name": name,
                "loaded": false,
                "lastError": { "reason": failed.reason, "at": failed.at, "path": failed.path },
            }));
        }
    }
    Json(json!({ "flows": flows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer t0ken",
            "bearer t0ken",
            "BEARER t0ken",
            "bEaReR   t0ken",
        ] {
            assert_eq!(bearer_token(value), Some("t0ken"), "{value}");
        }
        for value in ["Basic t0ken", "Bearert0ken", "t0ken", "Bearer", ""] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
        assert_eq!(bearer_token("Bearer "), Some(""));
    }
}
