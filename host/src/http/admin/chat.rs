//! What the console's chat needs: a message sent to an endpoint as if a
//! user had POSTed it (behind the admin token instead of the endpoint's
//! own auth, so that an endpoint with API keys can be tried without one;
//! a REST endpoint's answer is the response), and a server-sent event
//! stream of the endpoint's delivery attempts, to see the flow's outputs
//! as its webhook gets them.
//!
//! The stream shows the attempts this host makes: where hosts share a
//! store, a session's outputs are sent by the host that holds it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::delivery::DeliveryEvent;
use crate::http::extract::{Body, Path};
use crate::http::{AppState, Problem, endpoint, message};
use crate::store::MessageKind;

pub(super) async fn send(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let endpoint = super::known_endpoint(&app, &name)?;
    endpoint::expect_json(&headers)?;
    let valid = message::parse(&body)?;
    // A REST endpoint's outputs go to no webhook, so the stream will not
    // show them: they are the answer.
    endpoint::accept_and_answer(&app, &endpoint, MessageKind::User, valid, None).await
}

/// One attempt as the stream tells it: the webhook body as JSON (the
/// output, with its user and session), how the attempt ended, and the
/// receiver's status.
fn attempt_event(attempt: &DeliveryEvent) -> Event {
    let body: Value = serde_json::from_str(&attempt.body).unwrap_or(Value::Null);
    let data = json!({
        "outputId": attempt.output_id,
        "sessionId": attempt.session.session_id,
        "outcome": attempt.outcome.label(),
        "status": attempt.status,
        "body": body,
    });
    Event::default().event("delivery").data(data.to_string())
}

pub(super) async fn events(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    super::known_endpoint(&app, &name)?;
    let watch = app.delivery.watch();
    let stopping = app.stopping.clone();
    // Ends when the host stops, so that an open console does not hold up
    // a graceful stop.
    let stream = futures::stream::unfold(watch, move |mut watch| {
        let (name, stopping) = (name.clone(), stopping.clone());
        async move {
            loop {
                let received = tokio::select! {
                    received = watch.recv() => received,
                    () = stopping.cancelled() => return None,
                };
                let event = match received {
                    Ok(attempt) if attempt.session.endpoint == name => attempt_event(&attempt),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        Event::default().event("lagged").data(missed.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), watch));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
