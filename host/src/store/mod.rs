//! Everything flowhost keeps: the inbox of accepted messages, session
//! contexts and user profiles, the outbox of outputs to deliver, API-key
//! hashes and generated URL tokens.
//!
//! The [`Store`] trait is the seam: [`SqliteStore`] keeps it all in one
//! embedded database (one host); a PostgreSQL implementation can take its
//! place when several hosts share the work. Its operations are whole steps
//! of a message's life, each one transaction, so that a crash at any moment
//! leaves either the step done or not done:
//!
//! 1. [`Store::accept`]: the message is durable before the caller says 202.
//! 2. [`Store::complete_turn`]: the new context and profile, the outputs and
//!    the message's completion commit together.
//! 3. [`Store::record_attempt`]: each delivery attempt, and the output's new
//!    status, commit together.

mod profile_merge;
mod sqlite;

use std::fmt;

pub use self::sqlite::SqliteStore;

/// The messages of one session run one at a time, in order: a session is an
/// endpoint plus the caller's `sessionId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The endpoint's name.
    pub endpoint: String,
    /// The caller's `sessionId`.
    pub session_id: String,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.endpoint, self.session_id)
    }
}

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

/// What [`Store::complete_turn`] recorded.
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
    /// The id receivers use to spot a redelivery; the same on every attempt.
    pub webhook_id: String,
    /// The exact body to POST.
    pub body: String,
}

/// A message or output as a queue holds it: what orders it, not what it
/// carries. The rest is read when its turn comes, so that a long queue
/// (a backlog, or everything left by the last run) costs a few dozen bytes
/// per entry rather than its text, data or body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The message's or output's id.
    pub id: i64,
    /// Its session.
    pub session: SessionKey,
    /// For an output, the attempts made so far (0 for a message).
    pub attempts: u32,
    /// For an output, when its next attempt is due, if it waits for one.
    pub next_attempt_at: Option<i64>,
}

impl From<&PendingOutput> for Queued {
    fn from(output: &PendingOutput) -> Queued {
        Queued {
            id: output.id,
            session: output.session.clone(),
            attempts: output.attempts,
            next_attempt_at: output.next_attempt_at,
        }
    }
}

impl From<&InboxMessage> for Queued {
    fn from(message: &InboxMessage) -> Queued {
        Queued {
            id: message.id,
            session: message.session.clone(),
            attempts: 0,
            next_attempt_at: None,
        }
    }
}

/// An output waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOutput {
    /// Its place in the outbox: the order outputs are delivered in.
    pub id: i64,
    /// The session it belongs to.
    pub session: SessionKey,
    /// The id receivers use to spot a redelivery.
    pub webhook_id: String,
    /// The exact body to POST.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, in milliseconds since the Unix epoch:
    /// set while a failed output waits for its retry; `None` when due at
    /// once.
    pub next_attempt_at: Option<i64>,
}

/// One attempt to deliver an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The output.
    pub output_id: i64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// What the output's status is after this attempt.
    pub outcome: AttemptOutcome,
    /// When the next attempt is due, in milliseconds since the Unix epoch,
    /// when another will follow.
    pub next_attempt_at: Option<i64>,
}

/// An output's status after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered: the receiver answered 2xx.
    Delivered,
    /// Failed; another attempt will follow.
    Retrying,
    /// Failed for the last time: the output is a dead letter.
    Dead,
}

/// Where an output is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStatus {
    /// Not delivered yet; attempts go on.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed: a dead letter, kept for redelivery.
    Dead,
}

impl OutputStatus {
    fn as_str(self) -> &'static str {
        match self {
            OutputStatus::Pending => "pending",
            OutputStatus::Delivered => "delivered",
            OutputStatus::Dead => "dead",
        }
    }
}

/// An output as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputRecord {
    /// Its place in the outbox.
    pub id: i64,
    /// Its session's id.
    pub session_id: String,
    /// The id every attempt carried.
    pub webhook_id: String,
    /// Its status.
    pub status: OutputStatus,
    /// Attempts made since it was last queued.
    pub attempts: u32,
    /// What went wrong last, if anything.
    pub last_error: Option<String>,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it was delivered or died.
    pub finished_at: Option<i64>,
    /// When its next attempt is due, while it waits for a retry.
    pub next_attempt_at: Option<i64>,
    /// The body POSTed, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Which outputs of an endpoint to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputQuery {
    /// Of one status, or all.
    pub status: Option<OutputStatus>,
    /// Only those older than this one (the cursor of the next page).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: usize,
    /// Whether to read their bodies (up to 64 KiB each, by default).
    pub bodies: bool,
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRecord {
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// An endpoint whose deliveries are stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DisabledEndpoint {
    /// The endpoint's name.
    pub endpoint: String,
    /// Why: what the receiver answered.
    pub reason: String,
    /// Since when, in milliseconds since the Unix epoch.
    pub since: i64,
}

/// An API key of an endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// The key's id, shown by `keys list` and used by `keys revoke`.
    pub id: String,
    /// Its endpoint.
    pub endpoint: String,
    /// An optional name.
    pub name: Option<String>,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A new API key: its SHA-256 hash, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Its description.
    pub info: ApiKeyInfo,
    /// The SHA-256 of the key.
    pub hash: [u8; 32],
}

/// The store failed. Callers treat this as "try again later": nothing was
/// half-written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
    /// Opening the store failed.
    #[error("cannot open the store: {0}")]
    Open(String),
}

impl StoreError {
    /// Whether the failure is likely to pass by itself, so that the caller
    /// may be told to retry: a full disk, a busy or locked database, an I/O
    /// error, or a store that is closing (or could not start a write).
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            StoreError::Closed => true,
            StoreError::Database(error) => error.sqlite_error_code().is_some_and(|code| {
                matches!(
                    code,
                    DiskFull
                        | DatabaseBusy
                        | DatabaseLocked
                        | SystemIoFailure
                        | OutOfMemory
                        | CannotOpen
                )
            }),
            StoreError::Open(_) => false,
        }
    }
}

/// Where flowhost keeps what must survive a restart.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Makes `message` durable, numbers it, and calls `on_accepted` with it.
    /// Returns once it is durable.
    async fn accept(
        &self,
        message: InboxMessage,
        on_accepted: OnAccepted,
    ) -> Result<(), StoreError>;

    /// The first `limit` accepted messages with an id above `after_id` that
    /// have not run to the end, in order: a page of the inbox to queue.
    async fn unfinished_messages(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError>;

    /// The accepted message `id`, if it has not run to the end.
    async fn unfinished_message(&self, id: i64) -> Result<Option<InboxMessage>, StoreError>;

    /// The context of `session` and the profile of `user_id` at its endpoint.
    async fn session_state(
        &self,
        session: &SessionKey,
        user_id: &str,
    ) -> Result<SessionState, StoreError>;

    /// Records how a message ended, with everything it changed, in one
    /// transaction. Returns the outputs to deliver, or why the message
    /// failed.
    async fn complete_turn(&self, turn: TurnRecord) -> Result<CommittedTurn, StoreError>;

    /// The first `limit` outputs with an id above `after_id` not yet
    /// delivered nor dead, in order, of one endpoint or of all: a page of
    /// the outbox to queue.
    async fn pending_outputs(
        &self,
        endpoint: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError>;

    /// The output `id`, if it is not yet delivered nor dead.
    async fn pending_output(&self, id: i64) -> Result<Option<PendingOutput>, StoreError>;

    /// Records a delivery attempt and the output's new status.
    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError>;

    /// The outputs of an endpoint that `query` asks for, newest first.
    async fn outputs(
        &self,
        endpoint: &str,
        query: OutputQuery,
    ) -> Result<Vec<OutputRecord>, StoreError>;

    /// The attempts made to deliver an output, oldest first.
    async fn attempts(&self, output_id: i64) -> Result<Vec<AttemptRecord>, StoreError>;

    /// Queues an output of `endpoint` for delivery again, whatever its
    /// status, with a fresh retry schedule. Returns it, or `None` if the
    /// endpoint has no such output.
    async fn requeue_output(
        &self,
        endpoint: &str,
        output_id: i64,
    ) -> Result<Option<PendingOutput>, StoreError>;

    /// Queues again the first `limit` dead outputs of `endpoint` whose id is
    /// above `after_id`, in one transaction. Returns them, in order. Callers
    /// go through a large dead-letter queue page by page, so that no write
    /// holds the store for long and no page is large.
    async fn requeue_dead(
        &self,
        endpoint: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError>;

    /// Stops delivery to `endpoint` (its receiver answered 410 Gone).
    async fn disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError>;

    /// Resumes delivery to `endpoint`. Returns whether it was stopped.
    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, StoreError>;

    /// The endpoints whose delivery is stopped.
    async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>, StoreError>;

    /// Deletes finished messages and delivered outputs that finished before
    /// `before`, and the contexts and profiles last used before
    /// `idle_before` (both in milliseconds since the Unix epoch). Returns
    /// how many rows went.
    async fn prune(&self, before: i64, idle_before: i64) -> Result<usize, StoreError>;

    /// The URL token of `endpoint`: the stored one, or `new_token`, stored.
    async fn url_token(&self, endpoint: &str, new_token: String) -> Result<String, StoreError>;

    /// Replaces the stored URL token of `endpoint` with `new_token`.
    async fn replace_url_token(&self, endpoint: &str, new_token: String) -> Result<(), StoreError>;

    /// Adds an API key.
    async fn add_api_key(&self, key: NewApiKey) -> Result<(), StoreError>;

    /// The API keys, of one endpoint or of all, revoked ones included.
    async fn api_keys(&self, endpoint: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError>;

    /// Revokes the key of `endpoint` with this id or name. Returns whether a
    /// key was revoked.
    async fn revoke_api_key(&self, endpoint: &str, id_or_name: &str) -> Result<bool, StoreError>;

    /// Whether `hash` is the SHA-256 of a key of `endpoint` that is not
    /// revoked: one lookup by hash, whatever the number of keys.
    async fn is_active_key(&self, endpoint: &str, hash: [u8; 32]) -> Result<bool, StoreError>;
}

/// Runs a store operation until it succeeds, waiting longer after each
/// failure (up to 5 s), or until `shutdown`; `None` then. The store's
/// failures are passing (a full disk, a locked database); giving up would
/// lose a message or reorder a session.
pub(crate) async fn retrying<T, F, Fut>(
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut operation: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        match operation().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "could not {what}");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return None,
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Milliseconds since the Unix epoch, as the store keeps time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
