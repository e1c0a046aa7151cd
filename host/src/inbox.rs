//! The inbox: accepted messages, run one at a time per session, in order.
//!
//! A message is accepted when the store has it durably; the store then
//! queues it in its session's lane, in the order it numbered the messages,
//! and the caller answers 202. Each lane runs its messages one by one:
//!
//! 1. find the endpoint's flow, waiting if it is not loaded (a flow being
//!    replaced or re-added), so that an accepted message is never dropped;
//! 2. read the session's context and the user's profile;
//! 3. run the flow in a fresh instance;
//! 4. commit the outcome (new state, outputs, the message done; or the
//!    failure, with nothing else) in one transaction;
//! 5. hand the outputs to delivery.
//!
//! A crash anywhere before step 4 leaves the message unfinished in the
//! store, and [`Inbox::recover`] runs it again at the next start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    CommittedTurn, InboxMessage, NewOutput, ProfileChange, SessionKey, Store, StoreError,
    TurnOutcome, TurnRecord, retrying,
};

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Too many messages are waiting; the caller should retry later.
    #[error("too many messages are waiting to run")]
    Overloaded,
    /// The store could not keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The inbox: accepts messages and runs them.
#[derive(Clone)]
pub struct Inbox {
    lanes: Lanes<SessionKey, InboxMessage>,
    store: Arc<dyn Store>,
    /// Messages accepted and not yet finished.
    unfinished: Arc<AtomicUsize>,
    max_unfinished: usize,
}

/// What running a message needs.
pub struct TurnRunner {
    /// Where state and outputs are kept.
    pub store: Arc<dyn Store>,
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
    /// `max_unfinished` are waiting or running.
    pub fn new(runtime: Handle, runner: TurnRunner, max_unfinished: usize) -> Inbox {
        let store = Arc::clone(&runner.store);
        let unfinished = Arc::new(AtomicUsize::new(0));
        let runner = Arc::new(runner);
        let lanes = {
            let unfinished = Arc::clone(&unfinished);
            Lanes::new(runtime, move |_session, message| {
                let runner = Arc::clone(&runner);
                let unfinished = Arc::clone(&unfinished);
                async move {
                    runner.run(message).await;
                    unfinished.fetch_sub(1, Ordering::Relaxed);
                }
            })
        };
        Inbox {
            lanes,
            store,
            unfinished,
            max_unfinished,
        }
    }

    /// Accepts a message: returns once it is durable and queued.
    pub async fn accept(&self, message: InboxMessage) -> Result<(), AcceptError> {
        if self.unfinished.load(Ordering::Relaxed) >= self.max_unfinished {
            return Err(AcceptError::Overloaded);
        }
        self.unfinished.fetch_add(1, Ordering::Relaxed);
        let lanes = self.lanes.clone();
        let accepted = self
            .store
            .accept(
                message,
                Box::new(move |message| lanes.push(message.session.clone(), message)),
            )
            .await;
        if accepted.is_err() {
            self.unfinished.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(accepted?)
    }

    /// Queues the messages that were accepted but had not finished when the
    /// host last stopped. Call before accepting new ones.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let messages = self.store.unfinished_messages().await?;
        let count = messages.len();
        self.unfinished.fetch_add(count, Ordering::Relaxed);
        for message in messages {
            self.lanes.push(message.session.clone(), message);
        }
        Ok(count)
    }

    /// Messages accepted and not yet finished.
    pub fn unfinished(&self) -> usize {
        self.unfinished.load(Ordering::Relaxed)
    }

    /// Resolves once no message is running. After shutdown, lanes stop
    /// before their next message, so this waits for the running ones only.
    pub async fn idle(&self) {
        self.lanes.idle().await;
    }
}

impl TurnRunner {
    async fn run(&self, message: InboxMessage) {
        if self.shutdown.is_cancelled() {
            return; // It stays unfinished in the store, for the next start.
        }
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
        };
        let outcome = match self.runtime.run(&flow.ready, invocation).await {
            Ok(turn) => {
                let sensitive = endpoint.config.disable_sensitive_logging;
                let outputs = turn
                    .outputs
                    .iter()
                    .map(|output| NewOutput {
                        webhook_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                        body: payload::render(
                            &message.user_id,
                            &message.session.session_id,
                            &message.trace_id,
                            sensitive,
                            output,
                        ),
                    })
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
                tracing::error!(
                    reason = %failure.reason,
                    panic = panic.as_deref().unwrap_or_default(),
                    stderr = %failure.stderr.trim(),
                    "message failed; the session's state is unchanged"
                );
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
                self.delivery.enqueue(outputs);
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
