//! The admin API, under `/admin`, for operators: the endpoints with their
//! URLs, rotating a generated URL token, deliveries and dead letters,
//! redelivery, resuming an endpoint stopped by a 410, and the flows in
//! service. Everything under `/admin` requires `Authorization:
//! Bearer <admin_token>`, including wrong methods and unknown paths, so that
//! nothing tells a caller without the token which routes exist (a 405 or a
//! 404 would); without an `admin_token` in the configuration everything
//! under `/admin` answers `404`, as a path with nothing there does. The
//! token is read on each request, so a configuration reload changes it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AdminToken;
use super::extract::{Path, Query};
use super::{AppState, Problem};
use crate::store::{OutputQuery, OutputStatus};

/// The admin routes, guarded by `token`.
pub(super) fn routes(state: Arc<AppState>, token: AdminToken) -> Router<Arc<AppState>> {
    let admin = Router::new()
        .route("/flows", get(flows))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{endpoint}/url-token", post(rotate_url_token))
        .route("/endpoints/{endpoint}/deliveries", get(deliveries))
        .route("/endpoints/{endpoint}/dead-letters", get(dead_letters))
        .route(
            "/endpoints/{endpoint}/deliveries/{id}/redeliver",
            post(redeliver_one),
        )
        .route(
            "/endpoints/{endpoint}/dead-letters/redeliver",
            post(redeliver_dead),
        )
        .route("/endpoints/{endpoint}/resume", post(resume))
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

fn known_endpoint(app: &AppState, endpoint: &str) -> Result<(), Problem> {
    app.endpoints
        .load()
        .by_name(endpoint)
        .map(|_| ())
        .ok_or_else(|| Problem::not_found(format!("no endpoint named {endpoint:?}")))
}

/// Every endpoint with its flow and full URL: the one place besides
/// `flowhost endpoints` that shows URL tokens whole.
async fn endpoints(State(app): State<Arc<AppState>>) -> Json<Value> {
    let endpoints: Vec<Value> = app
        .endpoints
        .load()
        .all()
        .into_iter()
        .map(|e| {
            json!({
                "name": e.name(),
                "flow": e.config.flow,
                "url": e.url(&app.base_url),
                "urlTokenConfigured": e.config.url_token.is_some(),
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

/// The most bytes of outputs one listing returns (at least one output is
/// always listed): bodies of up to 64 KiB each would otherwise make a
/// listing of 1,000 tens of megabytes.
const MAX_LISTING_BYTES: usize = 4 << 20;

/// A listing's query. Unknown parameters are refused rather than ignored,
/// so that a client paging with a parameter flowhost does not know (such as
/// `offset`) does not get the first page over and over.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Listing {
    status: Option<OutputStatus>,
    limit: Option<usize>,
    /// Only outputs older than this one: the `nextBeforeId` of the previous
    /// page.
    before_id: Option<i64>,
    /// Whether to include each output's body.
    #[serde(default)]
    body: bool,
}

async fn deliveries(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Json<Value>, Problem> {
    list(&app, &endpoint, listing).await
}

async fn dead_letters(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Json<Value>, Problem> {
    let listing = Listing {
        status: Some(OutputStatus::Dead),
        ..listing
    };
    list(&app, &endpoint, listing).await
}

/// Outputs of an endpoint, newest first, each with its attempts, a page at
/// a time: `nextBeforeId`, when set, is the `before_id` of the next page.
async fn list(app: &AppState, endpoint: &str, listing: Listing) -> Result<Json<Value>, Problem> {
    known_endpoint(app, endpoint)?;
    let limit = listing.limit.unwrap_or(50).clamp(1, 1000);
    let outputs = app
        .delivery
        .outputs(
            endpoint,
            OutputQuery {
                status: listing.status,
                before_id: listing.before_id,
                limit,
                bodies: listing.body,
            },
        )
        .await?;
    let mut more = outputs.len() == limit;
    let mut listed = Vec::with_capacity(outputs.len());
    let mut bytes = 0;
    for output in outputs {
        let attempts = app.delivery.attempts(output.id).await?;
        let mut record = serde_json::to_value(&output).expect("records serialize");
        record["attempts"] = serde_json::to_value(attempts).expect("records serialize");
        record["attemptCount"] = json!(output.attempts);
        bytes += record.to_string().len();
        if bytes > MAX_LISTING_BYTES && !listed.is_empty() {
            more = true;
            break;
        }
        listed.push(record);
    }
    let next_before_id = listed
        .last()
        .filter(|_| more)
        .and_then(|last| last["id"].as_i64());
    let stopped = app.delivery.stopped(endpoint).await?;
    Ok(Json(json!({
        "endpoint": endpoint,
        "stopped": stopped,
        "deliveries": listed,
        "nextBeforeId": next_before_id,
    })))
}

async fn redeliver_one(
    State(app): State<Arc<AppState>>,
    Path((endpoint, id)): Path<(String, i64)>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    known_endpoint(&app, &endpoint)?;
    if !app.delivery.redeliver(&endpoint, id).await? {
        return Err(Problem::not_found(format!(
            "endpoint {endpoint} has no output {id}"
        )));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": 1 }))))
}

async fn redeliver_dead(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    known_endpoint(&app, &endpoint)?;
    let queued = app.delivery.redeliver_dead(&endpoint).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))))
}

async fn resume(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
) -> Result<Json<Value>, Problem> {
    known_endpoint(&app, &endpoint)?;
    let was_stopped = app.delivery.resume(&endpoint).await?;
    Ok(Json(
        json!({ "endpoint": endpoint, "wasStopped": was_stopped }),
    ))
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
