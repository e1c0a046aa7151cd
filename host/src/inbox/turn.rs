//! One message's turn: read it, find its flow, run it with the session's
//! context and the user's profile, commit the outcome, hand the outputs to
//! delivery.

use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::TurnRunner;
use crate::delivery::payload;
use crate::endpoints::{Endpoint, EndpointMode, OutputTiming};
use crate::runtime::{FailureKind, Invocation, Output, Source};
use crate::store::{
    CommittedTurn, InboxMessage, MessageKind, NewOutput, Origin, ProfileChange, TurnOutcome,
    TurnRecord, now_ms, retrying,
};
use crate::telemetry::traces;

impl TurnRunner {
    /// Runs message `id`: the one `carried` to its lane, or else the one
    /// read from the store.
    pub(super) async fn run(&self, id: i64, carried: Option<InboxMessage>) {
        if self.shutdown.is_cancelled() {
            return; // It stays unfinished in the store, for the next start.
        }
        let message = match carried {
            Some(message) if !self.store.erased_since(message.received_at) => message,
            _ => {
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
                message
            }
        };
        let span = tracing::info_span!(
            "message",
            otel.name = "turn",
            trace_id = %message.trace_id,
            endpoint = %message.session.endpoint,
            session = %message.session.logged_id(),
            flow = tracing::field::Empty,
            version = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        // A child of the message's accept, whenever and wherever it ran.
        traces::set_parent(
            &span,
            message.trace_parent.as_deref().and_then(traces::parent_of),
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
        match message.kind {
            MessageKind::Notify => return self.notify(&message, &endpoint, started).await,
            MessageKind::Reset => return self.reset(&message).await,
            MessageKind::User | MessageKind::Inject => {}
        }
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

        let Some(mut state) = retrying("read the session state", &self.shutdown, || {
            self.store.session_state(&message.session, &message.user_id)
        })
        .await
        else {
            return;
        };
        // With a `session_ttl`, every turn writes the context (changed or
        // not), so that when it was written says when the session was last
        // used.
        let ttl = endpoint.config.session_ttl;
        if let (Some(ttl), Some(written_at)) = (ttl, state.context_written_at) {
            let idle = Duration::from_millis(u64::try_from(now_ms() - written_at).unwrap_or(0));
            if idle > ttl {
                tracing::info!(
                    idle_s = idle.as_secs(),
                    "the session was idle past its session_ttl: it starts afresh"
                );
                state.context = EMPTY_CONTEXT.to_owned();
            }
        }
        let context_given = ttl.is_some().then(|| state.context.clone());

        let recipient = payload::Recipient {
            user_id: &message.user_id,
            session_id: &message.session.session_id,
            trace_id: &message.trace_id,
            disable_sensitive_logging: endpoint.config.disable_sensitive_logging,
        };
        // A REST endpoint answers once the turn has ended: its outputs wait
        // for the end, whatever `output_timing` says.
        let rest = endpoint.config.mode == EndpointMode::Rest;
        let timing = if rest {
            OutputTiming::AtEnd
        } else {
            endpoint.config.output_timing
        };
        let (said, heard) = match timing {
            OutputTiming::Immediate => {
                let (said, heard) = mpsc::unbounded_channel();
                (Some(said), Some(heard))
            }
            OutputTiming::AtEnd => (None, None),
        };
        let invocation = Invocation {
            endpoint: message.session.endpoint.clone(),
            user_id: message.user_id.clone(),
            session_id: message.session.session_id.clone(),
            text: message.text.clone(),
            data: message.data.clone(),
            trace_id: message.trace_id.clone(),
            source: match message.kind {
                MessageKind::Inject => Source::Inject,
                _ => Source::User,
            },
            context: state.context,
            profile: state.profile.clone(),
            sensitive: endpoint.config.withholds_content(),
            said,
        };
        let run = self.runtime.run(&flow.ready, invocation);
        let (result, early) = match heard {
            Some(heard) => match self.run_as_said(&message, recipient, run, heard).await {
                Some(ran) => ran,
                None => return,
            },
            None => (run.await, Early::default()),
        };
        let mut counted_as = match &result {
            Ok(_) => "completed",
            Err(failure) => failure.kind.label(),
        };
        let outcome = match result {
            Ok(turn) => {
                let outputs = early.prepare(
                    recipient,
                    &message.origin(),
                    early.unsent.iter().chain(&turn.outputs),
                );
                TurnOutcome::Completed {
                    // A session ended starts again from an empty context,
                    // as a new one does.
                    context: if turn.end_session {
                        Some(EMPTY_CONTEXT.to_owned())
                    } else {
                        turn.context.or(context_given)
                    },
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
                if endpoint.config.withholds_content() {
                    // A panic message, stderr or the flow's own error may
                    // quote what the user said; the admin API still shows
                    // the stored reason.
                    let reason = match failure.kind {
                        FailureKind::Returned => "the flow returned an error",
                        _ => failure.reason.as_str(),
                    };
                    tracing::error!(
                        reason = %crate::telemetry::printable(reason),
                        "message failed; the session's state is unchanged (the flow's error text, panic text and stderr are withheld: disable_sensitive_logging or mask_logging)"
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
                warn_if_sent(early.sent);
                TurnOutcome::Failed { reason }
            }
        };
        let ran = matches!(outcome, TurnOutcome::Completed { .. });
        let Some(committed) = self
            .commit(&message, &flow.name, &flow.version, outcome, rest)
            .await
        else {
            return;
        };
        if rest {
            self.answers.ended(message.id);
        }
        match committed {
            CommittedTurn::Done(outputs) => {
                tracing::info!(
                    outputs = outputs.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "message handled"
                );
                // A REST endpoint's outputs answered the request instead.
                if !rest {
                    self.delivery.enqueue_committed(outputs);
                }
            }
            // The flow ran, but what it changed could not be kept.
            CommittedTurn::Failed(reason) if ran => {
                tracing::error!(%reason, "message failed; the session's state is unchanged");
                warn_if_sent(early.sent);
                // The only limit checked at the commit: a profile grown
                // past it by other sessions' keys merged in.
                counted_as = "state_size";
            }
            CommittedTurn::Failed(_) => {}
        }
        self.metrics
            .turn(name, &flow.name, counted_as, started.elapsed());
        tracing::Span::current().record("outcome", counted_as);
    }

    /// Sends a notification's text and data to the webhook as the bot's
    /// output, in the session's order, without running the flow.
    async fn notify(&self, message: &InboxMessage, endpoint: &Endpoint, started: Instant) {
        let data = message.data.as_deref().and_then(|data| {
            match serde_json::from_str::<serde_json::Value>(data) {
                Ok(serde_json::Value::Object(data)) => Some(data),
                _ => None, // Checked at the POST: always an object.
            }
        });
        let output = Output {
            text: message.text.clone(),
            data,
        };
        let recipient = payload::Recipient {
            user_id: &message.user_id,
            session_id: &message.session.session_id,
            trace_id: &message.trace_id,
            disable_sensitive_logging: endpoint.config.disable_sensitive_logging,
        };
        let outcome = TurnOutcome::Completed {
            context: None,
            profile: None,
            outputs: vec![payload::prepare(recipient, 0, &output, &message.origin())],
        };
        let Some(committed) = self.commit(message, NOTIFY, "", outcome, false).await else {
            return;
        };
        if let CommittedTurn::Done(outputs) = committed {
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "notification queued for the webhook"
            );
            tracing::Span::current().record("outcome", "notified");
            self.delivery.enqueue_committed(outputs);
        }
    }

    /// Empties the session's context, in its place in the session's order.
    async fn reset(&self, message: &InboxMessage) {
        let outcome = TurnOutcome::Completed {
            context: Some(EMPTY_CONTEXT.to_owned()),
            profile: None,
            outputs: Vec::new(),
        };
        if self
            .commit(message, RESET, "", outcome, false)
            .await
            .is_some()
        {
            tracing::info!("the session was reset: it starts afresh");
            tracing::Span::current().record("outcome", "reset");
        }
    }

    /// Records how `message` ended; with `answered`, its outputs answer
    /// the request (REST mode) rather than go to the webhook.
    async fn commit(
        &self,
        message: &InboxMessage,
        flow: &str,
        version: &str,
        outcome: TurnOutcome,
        answered: bool,
    ) -> Option<CommittedTurn> {
        let record = TurnRecord {
            message_id: message.id,
            session: message.session.clone(),
            user_id: message.user_id.clone(),
            flow: flow.to_owned(),
            flow_version: version.to_owned(),
            outcome,
            answered,
        };
        retrying("record the message's outcome", &self.shutdown, || {
            self.store.complete_turn(record.clone())
        })
        .await
    }

    /// Runs `turn` while committing and handing to delivery what it says,
    /// for `output_timing = "immediate"`. An output heard is held for
    /// [`HOLD`]: if the turn ends sooner, the output is committed with the
    /// turn's end (one transaction, as for `at-end`); otherwise it, and
    /// whatever the flow says meanwhile, is committed by itself and sent.
    /// `None` if the host shut down before an early commit could be made.
    async fn run_as_said<T>(
        &self,
        message: &InboxMessage,
        recipient: payload::Recipient<'_>,
        turn: impl Future<Output = T>,
        mut heard: mpsc::UnboundedReceiver<Output>,
    ) -> Option<(T, Early)> {
        let mut turn = pin!(turn);
        let mut hold = pin!(tokio::time::sleep(HOLD));
        let mut early = Early::default();
        loop {
            tokio::select! {
                biased;
                result = &mut turn => {
                    // Said before the turn returned: all in the channel.
                    while let Ok(output) = heard.try_recv() {
                        early.unsent.push(output);
                    }
                    return Some((result, early));
                }
                Some(output) = heard.recv() => {
                    if early.unsent.is_empty() {
                        hold.as_mut().reset(tokio::time::Instant::now() + HOLD);
                    }
                    early.unsent.push(output);
                }
                () = &mut hold, if !early.unsent.is_empty() => {
                    let unsent = std::mem::take(&mut early.unsent);
                    let outputs = early.prepare(recipient, &message.origin(), &unsent);
                    early.sent += outputs.len();
                    let stored = retrying("commit what the flow said", &self.shutdown, || {
                        self.store
                            .commit_said(message.id, &message.session, outputs.clone())
                    })
                    .await?;
                    tracing::debug!(outputs = stored.len(), "sent while the turn runs");
                    self.delivery.enqueue_committed(stored);
                }
            }
        }
    }
}

/// A new session's context.
const EMPTY_CONTEXT: &str = "{}";

/// What a notification's record names as its flow: none ran.
const NOTIFY: &str = "(notify)";

/// What a session reset's record names as its flow: none ran.
const RESET: &str = "(reset)";

/// How long an output said is held before it is committed by itself, when
/// the turn has not ended. A quick turn ends well within it, and its
/// outputs are committed with its end: they cost no write of their own.
const HOLD: Duration = Duration::from_millis(5);

/// What a turn said while it ran, for `output_timing = "immediate"`.
#[derive(Default)]
struct Early {
    /// Outputs committed (and sent) before the turn ended: the places
    /// `0..sent`.
    sent: usize,
    /// Outputs heard and not committed yet, from place `sent` on.
    unsent: Vec<Output>,
}

impl Early {
    /// `outputs`, ready for the outbox at the places after those sent.
    fn prepare<'a>(
        &self,
        to: payload::Recipient<'_>,
        origin: &Origin,
        outputs: impl IntoIterator<Item = &'a Output>,
    ) -> Vec<NewOutput> {
        outputs
            .into_iter()
            .enumerate()
            .map(|(n, output)| payload::prepare(to, self.sent + n, output, origin))
            .collect()
    }
}

/// A turn that fails keeps what it already sent: an output delivered
/// cannot be taken back.
fn warn_if_sent(sent: usize) {
    if sent > 0 {
        tracing::warn!(
            sent,
            "the turn failed after some of its outputs were sent; those stand"
        );
    }
}
