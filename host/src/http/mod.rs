//! The HTTP surface: `POST /endpoint/{url_token}`, the admin API, the web
//! console over it, and the routes for operators' tools (`/healthz`,
//! `/readyz`, `/metrics`, `/openapi.json`); and [`serve`], the accept loop that bounds what each
//! connection, and all of them, may hold.
//!
//! Handlers only check and translate: every error is a [`Problem`], every
//! accepted message goes to the inbox.

mod admin;
mod console;
mod endpoint;
mod extract;
pub mod message;
mod ops;
pub mod problem;
mod rest;
pub mod serve;
mod transformer;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use self::problem::Problem;
pub use self::serve::HttpConfig;

use crate::delivery::Delivery;
use crate::endpoints::SharedEndpoints;
use crate::endpoints::{Endpoint, RotateError};
use crate::flows::Registry;
use crate::inbox::Inbox;
use crate::runtime::Runtime;
use crate::store::{CredentialStore, Store};
use crate::telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The endpoints in force.
    pub endpoints: SharedEndpoints,
    /// Takes accepted messages.
    pub inbox: Inbox,
    /// For API-key checks.
    pub keys: Arc<dyn CredentialStore>,
    /// For `/readyz` and `/metrics`: whether the store answers, and what
    /// waits in it.
    pub store: Arc<dyn Store>,
    /// For `/metrics`: the turns in flight.
    pub runtime: Arc<Runtime>,
    /// Counts answers, and renders `/metrics`.
    pub metrics: Metrics,
    /// Cancelled when the host starts to stop: `/readyz` says so.
    pub stopping: CancellationToken,
    /// The flows in service, to refuse messages for a flow that is not.
    pub flows: Registry,
    /// The largest request body accepted.
    pub max_body_size: usize,
    /// Room for the request bodies being read at once.
    pub body_budget: BodyBudget,
    /// For the admin API's redeliveries.
    pub delivery: Delivery,
    /// The admin API's bearer token; no admin API without one.
    pub admin_token: AdminToken,
    /// For the admin API's URL-token rotation.
    pub url_tokens: Arc<dyn UrlTokenRotation>,
    /// What endpoint URLs start with (`public_url`, or the bound address).
    pub base_url: String,
}

/// The request body bytes that may be buffered at once, across requests.
///
/// Each request buffers its body whole (up to `max_body_size`) before it is
/// parsed, and a slow client makes that last: without a shared bound, many
/// slow bodies hold memory in proportion to their number. A request
/// reserves its declared length (or `max_body_size` when chunked) before
/// reading, and gives it back when answered.
#[derive(Clone)]
pub struct BodyBudget {
    /// Counted in KiB, so that any budget fits the semaphore's count and
    /// any one body a `u32` request.
    kib: Arc<Semaphore>,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> BodyBudget {
        let kib = usize::try_from(bytes / 1024)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            kib: Arc::new(Semaphore::new(kib)),
        }
    }

    /// Room for a body of up to `bytes`, held until dropped; `None` when
    /// the budget is spent.
    pub fn try_reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024)).ok()?;
        Arc::clone(&self.kib).try_acquire_many_owned(kib).ok()
    }
}

/// The admin token in force, which a configuration reload replaces;
/// `None` turns the admin API off.
pub type AdminToken = Arc<arc_swap::ArcSwapOption<String>>;

/// Rotates generated URL tokens for the admin API. The reloader does it,
/// under the lock it reloads the configuration with, so that a reload and
/// a rotation never put an older token back in force.
#[async_trait::async_trait]
pub trait UrlTokenRotation: Send + Sync {
    /// Gives the endpoint `name` a new generated URL token, in force at once.
    async fn rotate_url_token(&self, name: &str) -> Result<Arc<Endpoint>, RotateError>;
}

/// The router, without a server, so that tests can call it directly.
pub fn router(state: AppState) -> Router {
    // Shared behind one `Arc`: axum clones the state for every request.
    let state = Arc::new(state);
    let admin = admin::routes(Arc::clone(&state), Arc::clone(&state.admin_token));
    let app = Router::new()
        .merge(admin)
        .route("/endpoint/{url_token}", post(endpoint::receive))
        .route("/endpoint/{url_token}/inject", post(endpoint::inject))
        .route("/endpoint/{url_token}/notify", post(endpoint::notify))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/console", get(console::page))
        .route("/console/console.css", get(console::style))
        .route("/console/console.js", get(console::script))
        .fallback(|| async { Problem::not_found("there is nothing at this path") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this path does not take this method; Allow lists those it takes",
            )
        })
        // The endpoint handler reads the body itself, after authentication,
        // with its own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    // Around the whole router, so that it sees what axum adds last.
    Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn(admin::hide_allowed_methods))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(2 << 20);
        let one = budget.try_reserve(1 << 20).expect("room for one");
        let two = budget
            .clone()
            .try_reserve((1 << 20) - 4096)
            .expect("room for two");
        assert!(budget.try_reserve(4096).is_some(), "4 KiB are left");
        assert!(budget.try_reserve(4097).is_none(), "spent");
        drop(one);
        assert!(budget.try_reserve(1 << 20).is_some(), "given back");
        drop(two);
        assert!(
            budget.try_reserve(3 << 20).is_none(),
            "never more than the whole"
        );
        assert!(budget.try_reserve(u64::MAX).is_none());
    }
}
