//! Everything flowhost keeps: the inbox of accepted messages, session
//! contexts and user profiles, the outbox of outputs to deliver, API-key
//! hashes and generated URL tokens.
//!
//! The store is split by who calls it, so that each stage sees only its
//! part and a second implementation can be written one part at a time:
//! [`MessageStore`] for the inbox, [`OutboxStore`] for delivery,
//! [`CredentialStore`] for the HTTP layer and the CLI; [`Store`] is all
//! three, plus the pruning that spans them. [`SqliteStore`] keeps it all in
//! one embedded database (one host); [`PostgresStore`] in a PostgreSQL
//! database that several hosts share, where each turn's and delivery's
//! writes are also fenced by the host's claim on the session ([`Opened`]
//! is whichever the configuration names). Their operations are whole steps
//! of a message's life, each one transaction, so that a crash at any moment
//! leaves either the step done or not done:
//!
//! 1. [`MessageStore::accept`]: the message is durable before the caller
//!    says 202.
//! 2. [`MessageStore::complete_turn`]: the new context and profile, the
//!    outputs and the message's completion commit together.
//! 3. [`OutboxStore::record_attempt`]: each delivery attempt, and the
//!    output's new status, commit together.

mod credentials;
mod messages;
mod outbox;
mod postgres;
mod profile_merge;
mod sqlite;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use self::credentials::{ApiKeyInfo, CredentialStore, NewApiKey};
pub use self::messages::{
    Accepted, CommittedTurn, IdempotencyKey, InboxMessage, MessageKind, MessageStore, NewOutput,
    OnAccepted, Origin, ProfileChange, SessionState, TurnAnswer, TurnOutcome, TurnRecord,
};
pub use self::outbox::{
    Attempt, AttemptOutcome, AttemptRecord, DisabledEndpoint, OutboxStore, OutputQuery,
    OutputRecord, OutputStatus, PendingOutput,
};
pub(crate) use self::postgres::redacted as postgres_url_redacted;
pub use self::postgres::{
    Claim, ClaimedMessage, HeldWork, PostgresOptions, PostgresStore, Wake, Wakeups, new_host_id,
};
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

/// As the log shows it: masked where the endpoint sets `mask_logging`.
impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let session_id = crate::masking::session_id(&self.endpoint, &self.session_id);
        write!(f, "{}/{session_id}", self.endpoint)
    }
}

impl SessionKey {
    /// The session id as the log may show it.
    pub fn logged_id(&self) -> std::borrow::Cow<'_, str> {
        crate::masking::session_id(&self.endpoint, &self.session_id)
    }
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

/// The store failed. Callers treat this as "try again later": nothing was
/// half-written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL reported an error, or could not be reached.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to PostgreSQL could be had from the pool in time.
    #[error("no connection to PostgreSQL: {0}")]
    Unreachable(String),
    /// The commit of the write's group failed: nothing of the write was
    /// kept.
    #[error("the commit failed: {message}")]
    Commit {
        /// What the database said.
        message: String,
        /// Whether it is likely to pass by itself (a full disk, a busy
        /// database, an I/O error).
        transient: bool,
    },
    /// Another host took the session this host was running (this host's
    /// lease ran out, as when it paused): nothing of the write was kept.
    #[error("the session {0} was taken over by another host")]
    Fenced(SessionKey),
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
        match self {
            StoreError::Closed => true,
            StoreError::Commit { transient, .. } => *transient,
            StoreError::Database(error) => {
                error.sqlite_error_code().is_some_and(sqlite::is_transient)
            }
            StoreError::Postgres(error) => postgres::is_transient(error),
            StoreError::Unreachable(_) => true,
            StoreError::Open(_) | StoreError::Fenced(_) => false,
        }
    }
}

/// How the store keeps data.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Whether each commit is fsynced before it counts. Off, flowhost is
    /// faster and still survives its own crash (the data is in the OS), but
    /// not a machine crash or power cut: a 202 may then be lost.
    pub fsync: bool,
    /// How long finished messages and delivered outputs are kept (for the
    /// admin API) before they are deleted. Dead letters are kept until
    /// redelivered.
    pub retention: Duration,
    /// How long a session's context, and a user's profile, are kept after
    /// they were last used; then they are deleted, and the next message of
    /// the session or user starts afresh.
    pub session_retention: Duration,
    /// The PostgreSQL database that several hosts share, when `[store] url`
    /// is set; `None`, the embedded SQLite store in `data_dir`.
    pub postgres: Option<PostgresOptions>,
}

/// The store a host opened: the one-host SQLite store, or the PostgreSQL
/// store that hosts share.
#[derive(Clone)]
pub enum Opened {
    /// SQLite, in the data folder.
    Sqlite(Arc<SqliteStore>),
    /// PostgreSQL, shared.
    Postgres(Arc<PostgresStore>),
}

impl Opened {
    /// Opens the store `config` names (SQLite in `data_dir` unless a
    /// PostgreSQL URL is set), creating or migrating its schema.
    pub async fn open(config: &StoreConfig, data_dir: &Path) -> Result<Opened, StoreError> {
        match &config.postgres {
            Some(options) => Ok(Opened::Postgres(Arc::new(
                PostgresStore::connect(options).await?,
            ))),
            None => {
                let dir = data_dir.to_owned();
                let fsync = config.fsync;
                let store =
                    tokio::task::spawn_blocking(move || SqliteStore::open_with(&dir, fsync))
                        .await
                        .map_err(|e| StoreError::Open(e.to_string()))??;
                Ok(Opened::Sqlite(Arc::new(store)))
            }
        }
    }

    /// The store, for every part.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Opened::Sqlite(store) => store.clone(),
            Opened::Postgres(store) => store.clone(),
        }
    }

    /// Closes it: waits for the writes taken to commit (SQLite), or closes
    /// the connections (PostgreSQL).
    pub fn close(&self) {
        match self {
            Opened::Sqlite(store) => store.close(),
            Opened::Postgres(store) => store.close(),
        }
    }
}

/// Where flowhost keeps what must survive a restart: each part for the
/// stage that calls it, and the pruning that spans them.
#[async_trait::async_trait]
pub trait Store: MessageStore + OutboxStore + CredentialStore {
    /// Deletes finished messages and delivered outputs that finished before
    /// `before`, and the contexts and profiles last used before
    /// `idle_before` (both in milliseconds since the Unix epoch). Returns
    /// how many rows went.
    async fn prune(&self, before: i64, idle_before: i64) -> Result<usize, StoreError>;

    /// What waits, per endpoint that has anything waiting: for the metrics'
    /// levels, and to tell that the store answers (readiness). On a store
    /// shared by several hosts, what waits at all of them.
    async fn backlog(&self) -> Result<Vec<EndpointBacklog>, StoreError>;

    /// Removes everything kept of `user_id` at `endpoint`, in one
    /// transaction: their profile, the contexts of their sessions (those
    /// they wrote last, and those they sent messages to), their messages,
    /// pending or not, with their idempotency keys, and those messages'
    /// outputs, pending or not, with their delivery attempts. A turn of
    /// theirs running meanwhile commits nothing, and what is queued of
    /// theirs is not run. Returns what went.
    async fn erase_user(&self, endpoint: &str, user_id: &str) -> Result<ErasedUser, StoreError>;
}

/// What [`Store::erase_user`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasedUser {
    /// Profiles (0 or 1).
    pub profiles: u64,
    /// Session contexts.
    pub sessions: u64,
    /// Messages, pending or not.
    pub messages: u64,
    /// Outputs, pending, delivered or dead.
    pub outputs: u64,
}

/// What waits at one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointBacklog {
    /// The endpoint's name.
    pub endpoint: String,
    /// Messages accepted and not yet run to the end.
    pub unfinished_messages: u64,
    /// Outputs neither delivered nor dead.
    pub pending_outputs: u64,
    /// Outputs whose delivery failed for the last time.
    pub dead_letters: u64,
}

/// Runs a store operation until it succeeds, waiting longer after each
/// failure (up to 5 s), or until `shutdown`; `None` then. The store's
/// failures are passing (a full disk, a locked database); giving up would
/// lose a message or reorder a session. But a write fenced off (another
/// host has taken the session) never passes: `None` at once, and the
/// session's work is left to its new owner.
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
            Err(StoreError::Fenced(session)) => {
                tracing::warn!(%session, "could not {what}: another host has taken the session; it carries on from there");
                return None;
            }
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
