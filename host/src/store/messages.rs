//! What the inbox keeps: accepted messages, until and after they ran, and
//! the contexts and profiles their turns read and write.

use super::{PendingOutput, Queued, SessionKey, StoreError};

/// An accepted message, as the inbox keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxMessage {
    /// Its place in the inbox: messages are numbered in the order the store
    /// accepted them (0 until then).
    pub id: i64,
    /// The endpoint and session.
    pub session: SessionKey,
    /// `userId`
    pub user_id: String,
    /// `text`
    pub text: Option<String>,
    /// `data`, as JSON object text.
    pub data: Option<String>,
    /// `endpoint-httpIncomingMessage-<uuid>`
    pub trace_id: String,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub received_at: i64,
    /// The W3C `traceparent` of its accept, when traces are exported: the
    /// parent of its turn's and its deliveries' spans.
    pub trace_parent: Option<String>,
    /// What it asks for: a turn of the flow, or an output sent as is.
    pub kind: MessageKind,
}

/// What a message in the inbox asks for. Every kind waits its turn in the
/// session's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// A user's message: the flow runs it.
    #[default]
    User,
    /// A backend's event, pushed into the conversation through `/inject`:
    /// the flow runs it as if the user had said it, and is told it was
    /// injected.
    Inject,
    /// A backend's output through `/notify`: its text and data are sent to
    /// the webhook as the bot's, without running the flow.
    Notify,
    /// The admin API's session reset: the session's context is emptied, in
    /// its place in the session's order (after the turns accepted before
    /// it, before those accepted after).
    Reset,
}

impl MessageKind {
    /// As the store keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::User => "user",
            MessageKind::Inject => "inject",
            MessageKind::Notify => "notify",
            MessageKind::Reset => "reset",
        }
    }

    /// Whether the flow runs it.
    pub fn runs_flow(self) -> bool {
        matches!(self, MessageKind::User | MessageKind::Inject)
    }

    /// From the store's text; an unknown kind (from a newer flowhost) is
    /// `None`.
    pub fn parse(kind: &str) -> Option<MessageKind> {
        match kind {
            "user" => Some(MessageKind::User),
            "inject" => Some(MessageKind::Inject),
            "notify" => Some(MessageKind::Notify),
            "reset" => Some(MessageKind::Reset),
            _ => None,
        }
    }
}

impl InboxMessage {
    /// What its outputs keep of it.
    pub fn origin(&self) -> Origin {
        Origin {
            accepted_at: self.received_at,
            trace_parent: self.trace_parent.clone(),
        }
    }
}

impl InboxMessage {
    /// The bytes it takes in memory, to count it against a budget.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<InboxMessage>()
            + self.session.endpoint.len()
            + self.session.session_id.len()
            + self.user_id.len()
            + self.text.as_ref().map_or(0, String::len)
            + self.data.as_ref().map_or(0, String::len)
            + self.trace_id.len()
    }
}

/// A caller's `Idempotency-Key` on a message: while it is remembered, the
/// same request with the same key is not accepted again, and another
/// request with it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key, as the caller sent it (1 to 255 characters).
    pub key: String,
    /// A digest of what the request asked for: the same key with a request
    /// that asks for something else is refused.
    pub fingerprint: String,
    /// How long the key is remembered from the request that first used it.
    pub window: std::time::Duration,
}

/// What [`MessageStore::accept`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// It is durable, and `on_accepted` was called with it.
    Stored {
        /// Its id.
        id: i64,
    },
    /// Its idempotency key was used for the same request within the key's
    /// window: nothing was stored, and the request's answer is the first
    /// one's.
    Repeated {
        /// The trace id the first request was given.
        trace_id: String,
        /// The first request's message.
        message_id: i64,
    },
    /// Its idempotency key was used for a different request within the
    /// key's window: nothing was stored.
    KeyReused,
}

/// Called once a message is durable, on the store's writer, in the order
/// messages are numbered. The inbox queues the message here, so that the
/// messages of a session run in exactly the store's order.
pub type OnAccepted = Box<dyn FnOnce(InboxMessage) + Send>;

/// The context and profile a message runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The session's context, JSON object text (`{}` when new).
    pub context: String,
    /// The user's profile, JSON object text (`{}` when new).
    pub profile: String,
    /// When the session's context was last written, in milliseconds since
    /// the Unix epoch (`None` when new): exact when the last turn wrote it,
    /// otherwise the store may have left it up to a day behind the last
    /// use. For `session_ttl`, whose turns always write it.
    pub context_written_at: Option<i64>,
}

/// How a message ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// The message.
    pub message_id: i64,
    /// Its session.
    pub session: SessionKey,
    /// Its user.
    pub user_id: String,
    /// The flow that ran it.
    pub flow: String,
    /// The version (content hash) of the flow that ran it.
    pub flow_version: String,
    /// What happened.
    pub outcome: TurnOutcome,
    /// The outputs answer the request that brought the message (REST
    /// mode) instead of going to the webhook: they are kept as delivered.
    pub answered: bool,
}

/// How a message's turn ended, for the request waiting on it (REST mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnAnswer {
    /// It has not run to the end yet.
    Pending,
    /// It ran: the webhook bodies of its outputs, in order.
    Done(Vec<String>),
    /// Its turn failed, for this reason.
    Failed(String),
    /// No such message: pruned since, or erased.
    Unknown,
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnOutcome {
    /// The flow returned `Ok`.
    Completed {
        /// The new context, when the flow set one.
        context: Option<String>,
        /// The profile the flow read and the one it set, when it set one.
        profile: Option<ProfileChange>,
        /// Its outputs, in order, ready to send.
        outputs: Vec<NewOutput>,
    },
    /// The flow failed; nothing of the turn is kept.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A profile the flow changed. Other sessions of the same user may have
/// changed the profile while this message ran; the store applies only the
/// keys this message changed, so that neither change is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChange {
    /// The profile the message read.
    pub before: String,
    /// The profile the message set.
    pub after: String,
    /// The flow's `max_state_size`, in bytes. The runtime checked `after`
    /// against it, but concurrent sessions' keys merged in can make the
    /// stored profile larger: past this, the turn fails at commit.
    pub max_size: u64,
}

/// What [`MessageStore::complete_turn`] recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedTurn {
    /// The turn's changes are kept; these outputs are to be delivered.
    Done(Vec<PendingOutput>),
    /// The message is recorded as failed, for this reason, and nothing else
    /// of the turn is kept: the flow failed, or what it changed broke a
    /// limit that only the commit can check.
    Failed(String),
}

/// An output to deliver, as the turn produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutput {
    /// Its place among the message's outputs, from 0, in the order said.
    /// The store keeps one output per place: a turn run again after a crash
    /// does not store again what its first run committed.
    pub position: u32,
    /// The id receivers use to spot a redelivery; the same on every attempt.
    pub webhook_id: String,
    /// The exact body to POST.
    pub body: String,
    /// What it keeps of its message.
    pub origin: Origin,
}

/// What an output keeps of its message: when it was accepted (for the
/// delivery latency metric) and its trace (for the delivery's spans).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// When the message was accepted, in milliseconds since the Unix epoch.
    pub accepted_at: i64,
    /// The message's W3C `traceparent`, when it is traced.
    pub trace_parent: Option<String>,
}

/// The inbox's part of the store: a message is accepted (durable before
/// the 202), queued again after a restart until it has run, and its turn
/// committed with everything it changed in one transaction.
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Makes `message` durable, numbers it, and calls `on_accepted` with it.
    /// Returns once it is durable. With `key`, the key is remembered with
    /// the message in the same transaction, unless it is remembered already:
    /// then nothing is stored (see [`Accepted`]).
    async fn accept(
        &self,
        message: InboxMessage,
        key: Option<IdempotencyKey>,
        on_accepted: OnAccepted,
    ) -> Result<Accepted, StoreError>;

    /// The first `limit` accepted messages with an id above `after_id` that
    /// have not run to the end, in order: a page of the inbox to queue.
    async fn unfinished_messages(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError>;

    /// The accepted message `id`, if it has not run to the end.
    async fn unfinished_message(&self, id: i64) -> Result<Option<InboxMessage>, StoreError>;

    /// Whether a user was erased through this store at or after `at` (in
    /// milliseconds since the Unix epoch): a message accepted before then
    /// and queued in memory may be gone from the store, and is read again
    /// before it runs.
    fn erased_since(&self, at: i64) -> bool {
        let _ = at;
        false
    }

    /// How message `id`'s turn ended, with its outputs.
    async fn turn_answer(&self, id: i64) -> Result<TurnAnswer, StoreError>;

    /// The context of `session` and the profile of `user_id` at its endpoint.
    async fn session_state(
        &self,
        session: &SessionKey,
        user_id: &str,
    ) -> Result<SessionState, StoreError>;

    /// Records how a message ended, with everything it changed, in one
    /// transaction. Returns the outputs to deliver, or why the message
    /// failed. Outputs at a place already taken (committed by
    /// [`commit_said`](Self::commit_said), or by an earlier run of the
    /// message) are not stored again.
    async fn complete_turn(&self, turn: TurnRecord) -> Result<CommittedTurn, StoreError>;

    /// Commits outputs that a message's turn said while it still runs, so
    /// that they are sent before it ends. They stand whatever becomes of
    /// the turn. Returns those to deliver: none if the message has ended,
    /// and none at a place already taken, so that a call repeated after an
    /// unclear commit, or a turn run again, sends nothing twice. `outputs`
    /// are in order of place, with no gap, following the places committed
    /// before.
    async fn commit_said(
        &self,
        message_id: i64,
        session: &SessionKey,
        outputs: Vec<NewOutput>,
    ) -> Result<Vec<PendingOutput>, StoreError>;
}
