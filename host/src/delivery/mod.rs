//! Delivers outputs: each one a POST to its endpoint's webhook, in order per
//! session, retried on failure until delivered or dead.
//!
//! Outputs arrive here already in the store's outbox, so nothing here is
//! the only copy: after a crash, the outbox is read again and delivery
//! resumes, each output keeping its `webhook-id` (receivers may see an
//! output twice, never a different one; at-least-once is the most HTTP
//! allows).
//!
//! A session's outputs go through one lane: an output that keeps failing
//! holds back the session's later outputs, so a receiver never sees them out
//! of order. Other sessions are not held back.

mod client;
pub mod payload;
pub mod retry;

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::client::{Answer, Sender};
use self::retry::RetryPolicy;
use crate::config::DeliveryConfig;
use crate::endpoints::SharedEndpoints;
use crate::lanes::Lanes;
use crate::store::{Attempt, AttemptOutcome, PendingOutput, SessionKey, Store, now_ms};

/// The delivery service: a handle to queue outputs.
#[derive(Clone)]
pub struct Delivery {
    lanes: Lanes<SessionKey, PendingOutput>,
}

struct Courier {
    store: Arc<dyn Store>,
    endpoints: SharedEndpoints,
    sender: Sender,
    policy: RetryPolicy,
    /// Bounds the POSTs in flight, whatever the number of sessions.
    in_flight: Semaphore,
    shutdown: CancellationToken,
}

impl Delivery {
    /// Starts the service on `runtime`. Cancelling `shutdown` stops it
    /// between attempts; what is not delivered stays in the outbox.
    pub fn new(
        runtime: Handle,
        store: Arc<dyn Store>,
        endpoints: SharedEndpoints,
        config: &DeliveryConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Delivery> {
        let courier = Arc::new(Courier {
            store,
            endpoints,
            sender: Sender::new(config.timeout)?,
            policy: RetryPolicy::new(config.retry_schedule.clone()),
            in_flight: Semaphore::new(config.max_concurrent),
            shutdown,
        });
        let lanes = Lanes::new(runtime, move |_session, output| {
            let courier = Arc::clone(&courier);
            async move { courier.deliver(output).await }
        });
        Ok(Delivery { lanes })
    }

    /// Queues outputs for delivery, behind the earlier outputs of their
    /// sessions.
    pub fn enqueue(&self, outputs: impl IntoIterator<Item = PendingOutput>) {
        for output in outputs {
            self.lanes.push(output.session.clone(), output);
        }
    }

    /// Resolves once no delivery is running (after shutdown was cancelled,
    /// that is soon).
    pub async fn idle(&self) {
        self.lanes.idle().await;
    }
}

impl Courier {
    async fn deliver(&self, output: PendingOutput) {
        let span = tracing::info_span!(
            "delivery",
            endpoint = %output.session.endpoint,
            output = output.id,
            webhook_id = %output.webhook_id,
        );
        self.attempt_until_done(output).instrument(span).await;
    }

    async fn attempt_until_done(&self, output: PendingOutput) {
        let mut attempts = output.attempts;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let endpoint = self
                .endpoints
                .load()
                .by_name(&output.session.endpoint)
                .cloned();
            let Some(endpoint) = endpoint else {
                tracing::warn!(
                    "the endpoint is no longer configured; the output stays in the outbox"
                );
                return;
            };

            let answer = {
                let _permit = self.in_flight.acquire().await.expect("never closed");
                let started = Instant::now();
                let started_at = now_ms();
                let answer = self.sender.send(&endpoint.config, &output).await;
                (answer, started_at, started.elapsed())
            };
            let (answer, started_at, took) = answer;
            attempts += 1;

            let (status, error, outcome, wait) = match answer {
                Answer::Delivered { status } => {
                    (Some(status), None, AttemptOutcome::Delivered, None)
                }
                Answer::Failed {
                    status,
                    error,
                    retry_after,
                } => match self.policy.next_wait(attempts, retry_after) {
                    Some(wait) => (status, Some(error), AttemptOutcome::Retrying, Some(wait)),
                    None => (status, Some(error), AttemptOutcome::Dead, None),
                },
            };
            let attempt = Attempt {
                output_id: output.id,
                started_at,
                duration_ms: took.as_millis() as i64,
                status,
                error: error.clone(),
                outcome,
            };
            let recorded =
                crate::store::retrying("record a delivery attempt", &self.shutdown, || {
                    self.store.record_attempt(attempt.clone())
                })
                .await;
            if recorded.is_none() {
                return;
            }

            match (outcome, wait) {
                (AttemptOutcome::Delivered, _) => {
                    tracing::debug!(attempts, took_ms = took.as_millis() as u64, "delivered");
                    return;
                }
                (AttemptOutcome::Retrying, Some(wait)) => {
                    tracing::warn!(
                        attempts,
                        error = error.as_deref().unwrap_or_default(),
                        retry_in_ms = wait.as_millis() as u64,
                        "delivery failed; will retry"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                }
                _ => {
                    tracing::error!(
                        attempts,
                        error = error.as_deref().unwrap_or_default(),
                        "delivery failed for the last time; the output is a dead letter"
                    );
                    return;
                }
            }
        }
    }
}
