//! The inbox: accepted messages, run one at a time per session, in order.
//!
//! A message is accepted when the store has it durably; the store then
//! queues its id in its session's lane, in the order it numbered the
//! messages, and the caller answers 202. Lanes hold ids only, so that a
//! backlog costs memory per message, not per byte of text and data. Each
//! lane runs its messages one by one:
//!
//! 1. read the message, and find the endpoint's flow, waiting if it is not loaded (a flow being
//!    replaced or re-added), so that an accepted message is never dropped;
//! 2. read the session's context and the user's profile;
//! 3. run the flow in a fresh instance;
//! 4. commit the outcome (new state, outputs, the message done; or the
//!    failure, with nothing else) in one transaction;
//! 5. hand the outputs to delivery.
//!
//! A crash anywhere before step 4 leaves the message unfinished in the
//! store, and [`Inbox::recover`] runs it again at the next start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::delivery::{Delivery, payload};
use crate::endpoints::SharedEndpoints;
use crate::flows::Registry;
use crate::lanes::Lanes;
use crate::runtime::{Invocation, Runtime};
use crate::store::{
    CommittedTurn, InboxMessage, MessageStore, ProfileChange, Queued, SessionKey, StoreError,
    TurnOutcome, TurnRecord, retrying,
};

/// A new message's trace id, in the seed's form:
/// `endpoint-httpIncomingMessage-<uuid>`. It names the message in the 202,
/// in every output's body and in the log.
pub fn new_trace_id() -> String {
    format!("endpoint-httpIncomingMessage-{}", uuid::Uuid::new_v4())
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Too many messages are waiting; the caller should retry later.
    #[error("too many messages {0} are waiting to run")]
    Overloaded(Crowded),
    /// The store could not keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which cap on unfinished messages a message would have gone over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// `max_queued_messages`: the host's.
    Host,
    /// `max_queued_per_endpoint`: its endpoint's.
    Endpoint,
    /// `max_queued_per_session`: its session's.
    Session,
}

impl std::fmt::Display for Crowded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Crowded::Host => "of all endpoints",
            Crowded::Endpoint => "of this endpoint",
            Crowded::Session => "of this session",
        })
    }
}

/// The caps on messages accepted and not yet finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// In all.
    pub total: usize,
    /// Of one endpoint.
    pub per_endpoint: usize,
    /// Of one session.
    pub per_session: usize,
}

/// Counts unfinished messages in all, per endpoint and per session, and
/// admits a message only if none of the three is at its cap. One cap for
/// all let one flooded session or slow flow fill the queue and make every
/// other endpoint answer 503. The three counts sit under one lock, so
/// that checking all three and counting the message is one step: with
/// separate counters, two requests could both pass a cap that had room for
/// one.
struct Admission {
    limits: QueueLimits,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only endpoints and sessions with unfinished messages have an entry.
    endpoints: HashMap<String, usize>,
    sessions: HashMap<SessionKey, usize>,
}

impl Admission {
    fn new(limits: QueueLimits) -> Admission {
        Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Counts a message of `session` if every cap has room for it.
    fn admit(&self, session: &SessionKey) -> Result<(), Crowded> {
        let mut counts = self.counts.lock().unwrap();
        if counts.total >= self.limits.total {
            return Err(Crowded::Host);
        }
        if counts
            .endpoints
            .get(&session.endpoint)
            .copied()
            .unwrap_or(0)
            >= self.limits.per_endpoint
        {
            return Err(Crowded::Endpoint);
        }
        if counts.sessions.get(session).copied().unwrap_or(0) >= self.limits.per_session {
            return Err(Crowded::Session);
        }
        counts.add(session);
        Ok(())
    }

    /// Counts a message of `session` whatever the caps: one accepted by an
    /// earlier run, which must run.
    fn count(&self, session: &SessionKey) {
        self.counts.lock().unwrap().add(session);
    }

    /// A message of `session` finished (or was not kept after all).
    fn release(&self, session: &SessionKey) {
        let mut counts = self.counts.lock().unwrap();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.endpoints.get_mut(&session.endpoint) {
            *n -= 1;
            if *n == 0 {
                counts.endpoints.remove(&session.endpoint);
            }
        }
        if let Some(n) = counts.sessions.get_mut(session) {
            *n -= 1;
            if *n == 0 {
                counts.sessions.remove(session);
            }
        }
    }

    fn total(&self) -> usize {
        self.counts.lock().unwrap().total
    }
}

/// A message counted by [`Admission`], given back when this is dropped:
/// however its run ends (finished, not stored after all, panicked, or left
/// for the next start), the counts cannot leak into a cap that answers 503
/// for good.
struct Admitted {
    admission: Arc<Admission>,
    session: SessionKey,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(&self.session);
    }
}

impl Counts {
    fn add(&mut self, session: &SessionKey) {
        self.total += 1;
        *self.endpoints.entry(session.endpoint.clone()).or_default() += 1;
        *self.sessions.entry(session.clone()).or_default() += 1;
    }
}

/// How many unfinished messages are read at a time at start.
const RECOVERY_PAGE: usize = 1000;

/// The inbox: accepts messages and runs them.
#[derive(Clone)]
pub struct Inbox {
    /// Each session's lane holds message ids: a message is read when its
    /// turn comes, so that a backlog costs a few bytes per message, not its
    /// text and data.
    lanes: Lanes<SessionKey, (i64, Admitted)>,
    store: Arc<dyn MessageStore>,
    /// Messages accepted and not yet finished.
    admission: Arc<Admission>,
}

/// What running a message needs.
pub struct TurnRunner {
    /// Where state and outputs are kept.
    pub store: Arc<dyn MessageStore>,
    /// Runs flows.
    pub runtime: Arc<Runtime>,
    /// The flows in service.
    pub flows: Registry,
    /// The endpoints in force.
    pub endpoints: SharedEndpoints,
    /// Takes the outputs.
    pub delivery: Delivery,
    /// Cancelled at shutdown: no new message starts after it.
    pub shutdown: CancellationToken,
}

impl Inbox {
    /// An inbox whose lanes run on `runtime`, refusing new messages while
    /// `limits` are reached by the messages waiting or running.
    pub fn new(runtime: Handle, runner: TurnRunner, limits: QueueLimits) -> Inbox {
        let store = Arc::clone(&runner.store);
        let admission = Arc::new(Admission::new(limits));
        let runner = Arc::new(runner);
        let lanes = Lanes::new(
            runtime,
            move |_session: SessionKey, (id, admitted): (i64, Admitted)| {
                let runner = Arc::clone(&runner);
                async move {
                    let _counted_until_done = admitted;
                    runner.run(id).await;
                }
            },
        );
        Inbox {
            lanes,
            store,
            admission,
        }
    }

    /// Accepts a message: returns once it is durable and queued.
    pub async fn accept(&self, message: InboxMessage) -> Result<(), AcceptError> {
        let session = message.session.clone();
        self.admission
            .admit(&session)
            .map_err(AcceptError::Overloaded)?;
        let admitted = Admitted {
            admission: Arc::clone(&self.admission),
            session,
        };
        let lanes = self.lanes.clone();
        // If the message is not stored, the callback is dropped uncalled,
        // and the count with it.
        self.store
            .accept(
                message,
                Box::new(move |message| lanes.push(message.session, (message.id, admitted))),
            )
            .await?;
        Ok(())
    }

    /// Queues the messages that were accepted but had not finished when the
    /// host last stopped, read a page at a time (ids and sessions only: each
    /// message is read when its turn comes). Call before accepting new ones.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut after_id = 0;
        loop {
            let page = self
                .store
                .unfinished_messages(after_id, RECOVERY_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(count);
            };
            after_id = last.id;
            count += page.len();
            let full = page.len() == RECOVERY_PAGE;
            for queued in page {
                self.admission.count(&queued.session);
                let admitted = Admitted {
                    admission: Arc::clone(&self.admission),
                    session: queued.session.clone(),
                };
                self.lanes.push(queued.session, (queued.id, admitted));
            }
            if !full {
                return Ok(count);
            }
        }
    }

    /// Messages accepted and not yet finished.
    pub fn unfinished(&self) -> usize {
        self.admission.total()
    }

    /// Resolves once no message is running. After shutdown, lanes stop
    /// before their next message, so this waits for the running ones only.
    pub async fn idle(&self) {
        self.lanes.idle().await;
    }
}

impl TurnRunner {
    async fn run(&self, id: i64) {
        if self.shutdown.is_cancelled() {
            return; // It stays unfinished in the store, for the next start.
        }
        let Some(read) = retrying("read a message to run", &self.shutdown, || {
            self.store.unfinished_message(id)
        })
        .await
        else {
            return;
        };
        let Some(message) = read else {
            return; // Already finished.
        };
        let span = tracing::info_span!(
            "message",
            trace_id = %message.trace_id,
            endpoint = %message.session.endpoint,
            session = %message.session.session_id,
            flow = tracing::field::Empty,
            version = tracing::field::Empty,
        );
        self.run_in_span(message).instrument(span).await;
    }

    async fn run_in_span(&self, message: InboxMessage) {
        let started = Instant::now();
        // An endpoint removed from the configuration, or a flow unloaded,
        // makes its messages wait, not fail: the next configuration or flow
        // file may bring it back, and an accepted message is never dropped.
        let name = &message.session.endpoint;
        if self.endpoints.load().by_name(name).is_none() {
            tracing::warn!("the endpoint is no longer configured; the message waits for it");
        }
        let Some(endpoint) = self.endpoints.wait_for(name, &self.shutdown).await else {
            return;
        };
        if self.flows.get(&endpoint.config.flow).is_none() {
            tracing::warn!(flow = %endpoint.config.flow, "the flow is not loaded; the message waits for it");
        }
        let Some(flow) = self
            .flows
            .wait_for(&endpoint.config.flow, &self.shutdown)
            .await
        else {
            return;
        };
        let span = tracing::Span::current();
        span.record("flow", tracing::field::display(&flow.name));
        span.record("version", tracing::field::display(&flow.version));

        let Some(state) = retrying("read the session state", &self.shutdown, || {
            self.store.session_state(&message.session, &message.user_id)
        })
        .await
        else {
            return;
        };

        let invocation = Invocation {
            endpoint: message.session.endpoint.clone(),
            user_id: message.user_id.clone(),
            session_id: message.session.session_id.clone(),
            text: message.text.clone(),
            data: message.data.clone(),
            trace_id: message.trace_id.clone(),
            context: state.context,
            profile: state.profile.clone(),
            sensitive: endpoint.config.disable_sensitive_logging,
        };
        let outcome = match self.runtime.run(&flow.ready, invocation).await {
            Ok(turn) => {
                let recipient = payload::Recipient {
                    user_id: &message.user_id,
                    session_id: &message.session.session_id,
                    trace_id: &message.trace_id,
                    disable_sensitive_logging: endpoint.config.disable_sensitive_logging,
                };
                let outputs = turn
                    .outputs
                    .iter()
                    .map(|output| payload::prepare(recipient, output))
                    .collect();
                TurnOutcome::Completed {
                    context: turn.context,
                    profile: turn.profile.map(|after| ProfileChange {
                        before: state.profile,
                        after,
                        max_size: flow.ready.limits().max_state_size,
                    }),
                    outputs,
                }
            }
            Err(failure) => {
                let panic = failure.panic_message();
                if endpoint.config.disable_sensitive_logging {
                    // A panic message or stderr may quote what the user
                    // said; the admin API still shows the stored reason.
                    tracing::error!(
                        reason = %crate::telemetry::printable(&failure.reason),
                        "message failed; the session's state is unchanged (its panic text and stderr are withheld: disable_sensitive_logging)"
                    );
                } else {
                    tracing::error!(
                        reason = %crate::telemetry::printable(&failure.reason),
                        panic = %crate::telemetry::printable(panic.as_deref().unwrap_or_default()),
                        stderr = %crate::telemetry::printable(failure.stderr.trim()),
                        "message failed; the session's state is unchanged"
                    );
                }
                let reason = match panic {
                    Some(panic) => format!("{} ({panic})", failure.reason),
                    None => failure.reason,
                };
                TurnOutcome::Failed { reason }
            }
        };
        let ran = matches!(outcome, TurnOutcome::Completed { .. });
        let Some(committed) = self
            .commit(&message, &flow.name, &flow.version, outcome)
            .await
        else {
            return;
        };
        match committed {
            CommittedTurn::Done(outputs) => {
                tracing::info!(
                    outputs = outputs.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "message handled"
                );
                self.delivery.enqueue(outputs.iter().map(Queued::from));
            }
            // The flow ran, but what it changed could not be kept.
            CommittedTurn::Failed(reason) if ran => {
                tracing::error!(%reason, "message failed; the session's state is unchanged");
            }
            CommittedTurn::Failed(_) => {}
        }
    }

    async fn commit(
        &self,
        message: &InboxMessage,
        flow: &str,
        version: &str,
        outcome: TurnOutcome,
    ) -> Option<CommittedTurn> {
        let record = TurnRecord {
            message_id: message.id,
            session: message.session.clone(),
            user_id: message.user_id.clone(),
            flow: flow.to_owned(),
            flow_version: version.to_owned(),
            outcome,
        };
        retrying("record the message's outcome", &self.shutdown, || {
            self.store.complete_turn(record.clone())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(endpoint: &str, id: &str) -> SessionKey {
        SessionKey {
            endpoint: endpoint.into(),
            session_id: id.into(),
        }
    }

    #[test]
    fn a_crowded_session_or_endpoint_leaves_room_for_the_others() {
        let admission = Admission::new(QueueLimits {
            total: 5,
            per_endpoint: 3,
            per_session: 2,
        });
        let (a1, a2, a3, b1) = (
            session("a", "1"),
            session("a", "2"),
            session("a", "3"),
            session("b", "1"),
        );
        assert_eq!(admission.admit(&a1), Ok(()));
        assert_eq!(admission.admit(&a1), Ok(()));
        assert_eq!(admission.admit(&a1), Err(Crowded::Session));
        assert_eq!(admission.admit(&a2), Ok(()));
        assert_eq!(admission.admit(&a3), Err(Crowded::Endpoint));
        assert_eq!(admission.admit(&b1), Ok(()), "another endpoint has room");
        assert_eq!(admission.admit(&b1), Ok(()));
        assert_eq!(admission.admit(&session("c", "1")), Err(Crowded::Host));
        assert_eq!(admission.total(), 5);

        admission.release(&a1);
        assert_eq!(
            admission.admit(&a3),
            Ok(()),
            "a finished message frees its place"
        );
        for key in [&a1, &a2, &a3, &b1, &b1] {
            admission.release(key);
        }
        assert_eq!(admission.total(), 0);
        let counts = admission.counts.lock().unwrap();
        assert!(counts.endpoints.is_empty() && counts.sessions.is_empty());
    }

    #[test]
    fn recovered_messages_count_whatever_the_caps() {
        let admission = Admission::new(QueueLimits {
            total: 1,
            per_endpoint: 1,
            per_session: 1,
        });
        let a1 = session("a", "1");
        admission.count(&a1);
        admission.count(&a1);
        assert_eq!(admission.total(), 2);
        assert_eq!(admission.admit(&session("b", "1")), Err(Crowded::Host));
    }
}
