//! The routes for what runs beside flowhost: `GET /healthz` and
//! `GET /readyz` for a load balancer or Kubernetes' probes, `GET /metrics`
//! for Prometheus, `GET /openapi.json` for clients and tools. None needs a
//! token: they show counts, names and the API's shape, never a message, a
//! key or a URL token.
//!
//! `/healthz` only says the process answers, so that a liveness probe does
//! not restart a host because its database is away. `/readyz` says whether
//! to send it messages: its store answers, every endpoint's flow is loaded,
//! and it is not stopping.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;

use crate::runtime::Kind;

use super::{AppState, Problem};
use crate::store::EndpointBacklog;
use crate::telemetry::metrics::{self, Levels};

/// The longest `/readyz` and `/metrics` wait for the store: a probe has a
/// timeout of its own (a second, by default, in Kubernetes).
const STORE_TIMEOUT: Duration = Duration::from_millis(800);

/// The API's description (OpenAPI 3.1), kept by hand beside the routes: a
/// test checks that every route is in it and every path in it is routed,
/// and schemathesis checks the answers against it.
pub(super) const OPENAPI: &str = include_str!("openapi.json");

/// What waits in the store, read within [`STORE_TIMEOUT`]; or why it did
/// not answer.
async fn backlog(app: &AppState) -> Result<Vec<EndpointBacklog>, String> {
    match tokio::time::timeout(STORE_TIMEOUT, app.store.backlog()).await {
        Ok(Ok(backlog)) => Ok(backlog),
        Ok(Err(error)) => Err(format!("the store did not answer: {error}")),
        Err(_) => Err(format!(
            "the store did not answer within {} ms",
            STORE_TIMEOUT.as_millis()
        )),
    }
}

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let mut reasons = Vec::new();
    if app.stopping.is_cancelled() {
        reasons.push("flowhost is stopping".to_owned());
    }
    if let Err(reason) = backlog(&app).await {
        reasons.push(reason);
    }
    for endpoint in app.endpoints.load().all() {
        let config = &endpoint.config;
        let components = std::iter::once(("flow", &config.flow, Kind::Flow)).chain(
            config.transformer.iter().map(|name| {
                let any = Kind::Transformer {
                    input: true,
                    output: true,
                };
                ("transformer", name, any)
            }),
        );
        for (role, name, wanted) in components {
            let reason = match app.flows.get(name) {
                Some(loaded) => match (loaded.compiled.kind(), wanted) {
                    (Kind::Flow, Kind::Transformer { .. }) => "is a flow, not a transformer",
                    (Kind::Transformer { .. }, Kind::Flow) => "is a transformer, not a flow",
                    _ => continue,
                }
                .to_owned(),
                None => {
                    let why = match app.flows.failure(name) {
                        Some(failure) => format!("it failed to load: {}", failure.reason),
                        None if app.flows.serves_or_may_serve(name) => "it is loading".to_owned(),
                        None => format!("there is no such {role} file"),
                    };
                    format!("is not loaded ({why})")
                }
            };
            reasons.push(format!(
                "endpoint {:?}: its {role} {name:?} {reason}",
                endpoint.name()
            ));
        }
    }
    if reasons.is_empty() {
        return Json(json!({ "status": "ready" })).into_response();
    }
    not_ready(reasons)
}

/// A `503` problem whose `detail` joins `reasons`, with each in an
/// extension member `reasons`, for a probe's log or an operator's `curl`.
fn not_ready(reasons: Vec<String>) -> Response {
    let problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "Not ready",
        reasons.join("; "),
    );
    let mut body = serde_json::to_value(&problem).expect("a problem is JSON");
    body["reasons"] = json!(reasons);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    if !app.metrics.is_on() {
        return Problem::not_found("metrics are off (telemetry.metrics = false)").into_response();
    }
    let backlog = match backlog(&app).await {
        // Every endpoint in force has a series, 0 when nothing waits.
        Ok(mut backlog) => {
            for endpoint in app.endpoints.load().all() {
                if !backlog.iter().any(|b| b.endpoint == endpoint.name()) {
                    backlog.push(EndpointBacklog {
                        endpoint: endpoint.name().to_owned(),
                        ..EndpointBacklog::default()
                    });
                }
            }
            backlog
        }
        // The counters are still worth scraping; the store's levels are
        // left out rather than reported as zero.
        Err(reason) => {
            tracing::warn!(%reason, "metrics: the store's levels are left out");
            Vec::new()
        }
    };
    let (occupancy, capacity) = (app.runtime.occupancy(), app.runtime.capacity());
    let levels = Levels {
        backlog,
        turns_in_flight: occupancy.turns_in_flight,
        max_turns_in_flight: capacity.turns_in_flight,
        warm_instances_in_use: occupancy.warm_instances_in_use,
        warm_instances: capacity.warm_instances_in_use,
        flows_loaded: app.flows.all().len() as u64,
    };
    let text = app.metrics.render(&levels).unwrap_or_default();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::OPENAPI;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    /// The `(path, method)` of every `.route("path", method(…)…)` in
    /// `source`, under `prefix`.
    fn routes_in(source: &str, prefix: &str) -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for (at, _) in source.match_indices(".route(") {
            let rest = &source[at + ".route(".len()..];
            let start = rest.find('"').unwrap() + 1;
            let path = &rest[start..start + rest[start..].find('"').unwrap()];
            // The route's arguments: up to the parenthesis that closes it.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .unwrap()
                .0;
            let arguments = &rest[..end];
            for method in METHODS {
                let called = arguments
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !arguments.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    routes.insert((format!("{prefix}{path}"), method.to_owned()));
                }
            }
        }
        routes
    }

    #[test]
    fn the_document_describes_every_route_and_nothing_else() {
        let document: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, operations)| {
                operations
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|key| METHODS.contains(&key.as_str()))
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        let mut routed = routes_in(include_str!("mod.rs"), "");
        routed.extend(routes_in(include_str!("admin/mod.rs"), "/admin"));
        assert!(routed.len() >= 13, "the routes were not found: {routed:?}");
        assert_eq!(documented, routed, "openapi.json and the router differ");
    }
}
