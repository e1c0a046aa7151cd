//! The routes for what runs beside flowhost: `GET /healthz` and
//! `GET /readyz` for a load balancer or Kubernetes' probes, `GET /metrics`
//! for Prometheus. None needs a
//! token: they show counts, names and the API's shape, never a message,
//! a key or a URL token.
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

use super::{AppState, Problem};
use crate::store::EndpointBacklog;
use crate::telemetry::metrics::{self, Levels};

/// The longest `/readyz` and `/metrics` wait for the store: a probe has a
/// timeout of its own (a second, by default, in Kubernetes).
const STORE_TIMEOUT: Duration = Duration::from_millis(800);

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let mut reasons = Vec::new();
    if app.stopping.is_cancelled() {
        reasons.push("flowhost is stopping".to_owned());
    }
    match tokio::time::timeout(STORE_TIMEOUT, app.store.backlog()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => reasons.push(format!("the store did not answer: {error}")),
        Err(_) => reasons.push(format!(
            "the store did not answer within {} ms",
            STORE_TIMEOUT.as_millis()
        )),
    }
    for endpoint in app.endpoints.load().all() {
        let flow = &endpoint.config.flow;
        if app.flows.get(flow).is_none() {
            let why = match app.flows.failure(flow) {
                Some(failure) => format!("it failed to load: {}", failure.reason),
                None if app.flows.serves_or_may_serve(flow) => "it is loading".to_owned(),
                None => "there is no such flow file".to_owned(),
            };
            reasons.push(format!(
                "endpoint {:?}: its flow {flow:?} is not loaded ({why})",
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
    let backlog = match tokio::time::timeout(STORE_TIMEOUT, app.store.backlog()).await {
        // Every endpoint in force has a series, 0 when nothing waits.
        Ok(Ok(mut backlog)) => {
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
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: the store's levels are left out");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("metrics: the store did not answer in time; its levels are left out");
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
