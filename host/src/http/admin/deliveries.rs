//! Deliveries and dead letters: listed a page at a time with their
//! attempts, sent again, and an endpoint stopped by a 410 resumed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::known_endpoint;
use crate::http::extract::{Path, Query};
use crate::http::{AppState, Problem};
use crate::store::{OutputQuery, OutputStatus};

/// The most bytes of outputs one listing returns (at least one output is
/// always listed): bodies of up to 64 KiB each would otherwise make a
/// listing of 1,000 tens of megabytes.
const MAX_LISTING_BYTES: usize = 4 << 20;

/// A listing's query. Unknown parameters are refused rather than ignored,
/// so that a client paging with a parameter flowhost does not know (such as
/// `offset`) does not get the first page over and over.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listing {
    status: Option<OutputStatus>,
    limit: Option<usize>,
    /// Only outputs older than this one: the `nextBeforeId` of the previous
    /// page.
    before_id: Option<i64>,
    /// Whether to include each output's body.
    #[serde(default)]
    body: bool,
}

pub(super) async fn deliveries(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Json<Value>, Problem> {
    list(&app, &endpoint, listing).await
}

pub(super) async fn dead_letters(
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

pub(super) async fn redeliver_one(
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

pub(super) async fn redeliver_dead(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    known_endpoint(&app, &endpoint)?;
    let queued = app.delivery.redeliver_dead(&endpoint).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))))
}

pub(super) async fn resume(
    State(app): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
) -> Result<Json<Value>, Problem> {
    known_endpoint(&app, &endpoint)?;
    let was_stopped = app.delivery.resume(&endpoint).await?;
    Ok(Json(
        json!({ "endpoint": endpoint, "wasStopped": was_stopped }),
    ))
}
