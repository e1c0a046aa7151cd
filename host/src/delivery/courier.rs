//! The courier: one output's attempts, each under the endpoint's and the
//! host's concurrency bounds, recorded with what follows it (a verdict of
//! the retry policy), and an endpoint stopped on 410 Gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::DeliveryEvent;
use super::client::{Answer, Sender};
use super::retry::{RetryPolicy, Verdict};
use super::transform::{Shaped, Transformers, WebhookRequest};
use crate::endpoints::SharedEndpoints;
use crate::store::{Attempt, AttemptOutcome, OutboxStore, PendingOutput, Queued, now_ms};
use crate::telemetry::metrics::{DeliveryOutcome, Metrics};
use crate::telemetry::traces;

pub(super) struct Courier {
    pub(super) store: Arc<dyn OutboxStore>,
    pub(super) endpoints: SharedEndpoints,
    pub(super) sender: Sender,
    pub(super) policy: RetryPolicy,
    /// Bounds the POSTs in flight, whatever the number of sessions.
    pub(super) in_flight: Semaphore,
    /// Bounds the POSTs in flight to each endpoint (taken before a place in
    /// `in_flight`), so that a receiver that answers slowly, or only at the
    /// timeout, holds a share of `in_flight` and never all of it.
    pub(super) per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The size of each endpoint's share.
    pub(super) max_per_endpoint: usize,
    /// Endpoints whose receiver answered 410 Gone.
    pub(super) stopped: Mutex<HashSet<String>>,
    pub(super) metrics: Metrics,
    /// Told of every attempt, when anyone listens.
    pub(super) watchers: tokio::sync::broadcast::Sender<DeliveryEvent>,
    /// Counts the times outputs were removed from the store, so that those
    /// waiting for a retry check that they are still there.
    pub(super) removals: tokio::sync::watch::Sender<u64>,
    /// Runs endpoints' transformers on outputs, when the host has them.
    pub(super) transformers: Option<Transformers>,
    pub(super) shutdown: CancellationToken,
}

/// How an output's time in its lane ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Left {
    /// Delivered, dead, no longer in the outbox, or kept there for a
    /// reason that holds for the outputs behind it too (delivery stopped,
    /// the endpoint gone, the host stopping): the lane goes on.
    Done,
    /// Kept pending because this host did not hold its session when it was
    /// due (its lease lapsed by its own clock, or another host took the
    /// session): the outputs behind it must not go before it.
    NotHeld,
}

/// What follows an attempt.
enum Step {
    /// Another attempt, at this time (milliseconds since the epoch).
    RetryAt(i64),
    Done(Left),
}

impl Courier {
    /// Delivers one output, attempt after attempt. Its body is read when an
    /// attempt is due (unless `carried` to its first), and dropped while the
    /// next one waits: a backlog of retries waiting (after a receiver's
    /// outage, say) costs ids, not bodies.
    pub(super) async fn deliver(&self, queued: Queued, mut carried: Option<PendingOutput>) -> Left {
        let id = queued.id;
        let mut due = queued.next_attempt_at;
        let mut removals = self.removals.subscribe();
        loop {
            while let Some(at) = due {
                let wait = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
                tokio::select! {
                    () = tokio::time::sleep(wait) => break,
                    () = self.shutdown.cancelled() => return Left::Done,
                    Ok(()) = removals.changed() => {
                        // Gone from the store: nothing to wait for.
                        if let Ok(None) = self.store.pending_output(id).await {
                            return Left::Done;
                        }
                    }
                }
            }
            let output = match carried.take() {
                Some(output) => output,
                None => {
                    let read =
                        crate::store::retrying("read an output to deliver", &self.shutdown, || {
                            self.store.pending_output(id)
                        })
                        .await;
                    // Not pending any more (delivered or dead meanwhile): done.
                    let Some(Some(output)) = read else {
                        return Left::Done;
                    };
                    output
                }
            };
            let span = tracing::info_span!(
                "delivery",
                otel.name = "deliver",
                otel.kind = "client",
                endpoint = %output.session.endpoint,
                session = %output.session.logged_id(),
                output = output.id,
                webhook_id = %output.webhook_id,
                http.response.status_code = tracing::field::Empty,
                outcome = tracing::field::Empty,
            );
            // A child of its message's accept.
            traces::set_parent(
                &span,
                output
                    .origin
                    .as_ref()
                    .and_then(|origin| origin.trace_parent.as_deref())
                    .and_then(traces::parent_of),
            );
            match self.attempt(output).instrument(span).await {
                Step::RetryAt(next) => due = Some(next),
                Step::Done(left) => return left,
            }
        }
    }

    /// The places for POSTs to `endpoint`.
    fn endpoint_slots(&self, endpoint: &str) -> Arc<Semaphore> {
        let mut slots = self.per_endpoint.lock().unwrap();
        match slots.get(endpoint) {
            Some(slots) => Arc::clone(slots),
            None => {
                let new = Arc::new(Semaphore::new(self.max_per_endpoint));
                slots.insert(endpoint.to_owned(), Arc::clone(&new));
                new
            }
        }
    }

    fn is_stopped(&self, endpoint: &str) -> bool {
        self.stopped.lock().unwrap().contains(endpoint)
    }

    /// Makes one attempt to deliver `output`, and records it. Returns when
    /// the next attempt is due, if there is to be one.
    async fn attempt(&self, output: PendingOutput) -> Step {
        // In each case, it stays pending in the outbox.
        if self.shutdown.is_cancelled() || self.is_stopped(&output.session.endpoint) {
            return Step::Done(Left::Done);
        }
        if !self.store.may_deliver(&output.session) {
            return Step::Done(Left::NotHeld);
        }
        let endpoint = self
            .endpoints
            .load()
            .by_name(&output.session.endpoint)
            .cloned();
        let Some(endpoint) = endpoint else {
            tracing::warn!("the endpoint is no longer configured; the output stays in the outbox");
            return Step::Done(Left::Done);
        };
        let Some(webhook) = endpoint.config.webhook_url.clone() else {
            tracing::warn!("the endpoint answers in REST mode now; the output stays in the outbox");
            return Step::Done(Left::Done);
        };

        let request = match &self.transformers {
            Some(transformers) => {
                transformers
                    .shape(&endpoint.config, &webhook, &output)
                    .await
            }
            None => Shaped::Send(WebhookRequest::seed(&webhook, &output)),
        };
        let request = match request.into_request() {
            Ok(request) => request,
            // Nothing to send: the attempt is settled as it is.
            Err(answer) => return self.settle(output, answer, now_ms(), Duration::ZERO).await,
        };

        let (answer, started_at, took) = {
            let _endpoint_permit = self
                .endpoint_slots(&output.session.endpoint)
                .acquire_owned()
                .await
                .expect("never closed");
            let _permit = self.in_flight.acquire().await.expect("never closed");
            if !self.store.may_deliver(&output.session) {
                return Step::Done(Left::NotHeld); // Lost while it waited for a place.
            }
            let started = Instant::now();
            let started_at = now_ms();
            let answer = self
                .sender
                .send(&endpoint.config, &output.webhook_id, request)
                .await;
            (answer, started_at, started.elapsed())
        };
        self.settle(output, answer, started_at, took).await
    }

    /// Records an attempt that came to `answer`, and says what follows.
    async fn settle(
        &self,
        output: PendingOutput,
        answer: Answer,
        started_at: i64,
        took: Duration,
    ) -> Step {
        let attempts = output.attempts + 1;

        // The receiver's body goes into the attempt's record, for the
        // admin API, and never into the log: receivers often echo the
        // request, and the log is not the place for message content.
        let (mut recorded_error, mut body_bytes) = (None, 0);
        let (status, error, verdict) = match answer {
            Answer::Delivered { status } => (Some(status), None, Verdict::Delivered),
            Answer::Dropped => {
                recorded_error = Some("dropped by the endpoint's transformer: nothing sent".into());
                (None, None, Verdict::Delivered)
            }
            Answer::Refused(reason) => {
                recorded_error = Some(reason.clone());
                (None, Some(reason), Verdict::Dead)
            }
            Answer::Failed {
                status,
                error,
                body,
                body_bytes: read,
                retry_after,
            } => {
                body_bytes = read;
                recorded_error = Some(if body.is_empty() {
                    error.clone()
                } else {
                    format!("{error}: {body}")
                });
                let verdict = self.policy.after_failure(status, attempts, retry_after);
                (status, Some(error), verdict)
            }
        };
        // What the store records, and what the metrics count.
        let (outcome, wait, counted) = match verdict {
            Verdict::Delivered => (AttemptOutcome::Delivered, None, DeliveryOutcome::Delivered),
            Verdict::RetryAfter(wait) => {
                (AttemptOutcome::Retrying, Some(wait), DeliveryOutcome::Retry)
            }
            Verdict::Dead => (AttemptOutcome::Dead, None, DeliveryOutcome::Dead),
            // It stays pending, due whenever delivery resumes.
            Verdict::Gone => (AttemptOutcome::Retrying, None, DeliveryOutcome::Gone),
        };
        let attempt = Attempt {
            output_id: output.id,
            session: output.session.clone(),
            started_at,
            duration_ms: took.as_millis() as i64,
            status,
            error: recorded_error,
            outcome,
            next_attempt_at: wait.map(|wait| now_ms() + wait.as_millis() as i64),
        };
        let recorded = crate::store::retrying("record a delivery attempt", &self.shutdown, || {
            self.store.record_attempt(attempt.clone())
        })
        .await;
        if recorded.is_none() {
            // Stopping, or another host has taken the session (and sends
            // this output again, with the same `webhook-id`).
            return Step::Done(if self.shutdown.is_cancelled() {
                Left::Done
            } else {
                Left::NotHeld
            });
        }
        // From the message's accept, for a delivered output.
        let latency = output
            .origin
            .as_ref()
            .filter(|_| counted == DeliveryOutcome::Delivered)
            .map(|origin| {
                Duration::from_millis(u64::try_from(now_ms() - origin.accepted_at).unwrap_or(0))
            });
        self.metrics
            .delivery(&output.session.endpoint, counted, took, latency);
        let span = tracing::Span::current();
        span.record("outcome", counted.label());
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        if self.watchers.receiver_count() > 0 {
            let _ = self.watchers.send(DeliveryEvent {
                session: output.session.clone(),
                output_id: output.id,
                body: output.body.clone(),
                outcome: counted,
                status,
            });
        }

        match verdict {
            Verdict::Gone => {
                self.stop(&output.session.endpoint).await;
                Step::Done(Left::Done)
            }
            Verdict::Delivered => {
                tracing::debug!(attempts, took_ms = took.as_millis() as u64, "delivered");
                Step::Done(Left::Done)
            }
            Verdict::RetryAfter(wait) => {
                tracing::warn!(
                    attempts,
                    error = error.as_deref().unwrap_or_default(),
                    body_bytes,
                    retry_in_ms = wait.as_millis() as u64,
                    "delivery failed; will retry"
                );
                match attempt.next_attempt_at {
                    Some(at) => Step::RetryAt(at),
                    None => Step::Done(Left::Done),
                }
            }
            Verdict::Dead => {
                tracing::error!(
                    attempts,
                    error = error.as_deref().unwrap_or_default(),
                    body_bytes,
                    "delivery failed for the last time; the output is a dead letter"
                );
                Step::Done(Left::Done)
            }
        }
    }

    /// Stops delivery to `endpoint` after a 410 Gone, loudly.
    async fn stop(&self, endpoint: &str) {
        self.stopped.lock().unwrap().insert(endpoint.to_owned());
        let reason = "the receiver answered 410 Gone";
        let stored = crate::store::retrying("stop delivery to an endpoint", &self.shutdown, || {
            self.store.disable_endpoint(endpoint, reason)
        })
        .await;
        if stored.is_some() {
            tracing::error!(
                endpoint,
                "the receiver answered 410 Gone: delivery to this endpoint is STOPPED; its outputs \
                 are kept; resume with POST /admin/endpoints/{endpoint}/resume"
            );
        }
    }
}
