//! The ceiling: a bare axum server that parses the same JSON and answers
//! 202, run as its own process like flowhost. flowhost does more per
//! request (a durable write, a flow, a delivery); the ratio of the two is
//! the cost of that work.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)] // parsed, as flowhost parses it, then dropped
struct Message {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(rename = "sessionId")]
    session_id: String,
    text: Option<String>,
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Serves `POST /endpoint/ceiling` on `listen` until killed; prints the
/// address.
pub(crate) async fn serve(listen: &str) -> anyhow::Result<()> {
    let app = Router::new().route(
        "/endpoint/ceiling",
        post(|Json(_message): Json<Message>| async {
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "traceId": "endpoint-httpIncomingMessage-0" })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
