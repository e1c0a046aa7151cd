//! The HTTP surface: `POST /endpoint/{url_token}` and `GET /healthz`.
//!
//! Handlers only check and translate: every error is a [`Problem`], every
//! accepted message goes to the [`Inbox`].

mod admin;
mod endpoint;
pub mod message;
pub mod problem;
pub mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use http::StatusCode;

pub use self::problem::Problem;

use crate::delivery::Delivery;
use crate::endpoints::SharedEndpoints;
use crate::flows::Registry;
use crate::inbox::Inbox;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The endpoints in force.
    pub endpoints: SharedEndpoints,
    /// Takes accepted messages.
    pub inbox: Inbox,
    /// For API-key checks.
    pub store: Arc<dyn Store>,
    /// The flows in service, to refuse messages for a flow that is not.
    pub flows: Registry,
    /// The largest request body accepted.
    pub max_body_size: usize,
    /// For the admin API's redeliveries.
    pub delivery: Delivery,
    /// The admin API's bearer token; no admin API without one.
    pub admin_token: Option<String>,
}

/// The router, without a server, so that tests can call it directly.
pub fn router(state: AppState) -> Router {
    let admin = match state.admin_token.clone() {
        Some(token) => admin::routes(state.clone(), token),
        None => Router::new(),
    };
    Router::new()
        .merge(admin)
        .route("/endpoint/{url_token}", post(endpoint::receive))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { Problem::not_found("there is nothing at this path") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "POST messages to an endpoint's URL",
            )
        })
        // The endpoint handler reads the body itself, after authentication,
        // with its own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
