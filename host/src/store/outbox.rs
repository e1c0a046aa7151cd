//! What delivery keeps: the outbox of outputs, every attempt to deliver
//! them, and the endpoints whose receivers said they are gone.

use super::{Origin, Queued, SessionKey, StoreError};

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
    /// What it keeps of its message; `None` if the message's record is
    /// gone.
    pub origin: Option<Origin>,
}

impl PendingOutput {
    /// The bytes it takes in memory, to count it against a budget.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<PendingOutput>()
            + self.session.endpoint.len()
            + self.session.session_id.len()
            + self.webhook_id.len()
            + self.body.len()
    }
}

/// One attempt to deliver an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The output.
    pub output_id: i64,
    /// The output's session.
    pub session: SessionKey,
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

impl AttemptOutcome {
    /// The output's status after such an attempt.
    pub fn status(self) -> OutputStatus {
        match self {
            AttemptOutcome::Delivered => OutputStatus::Delivered,
            AttemptOutcome::Retrying => OutputStatus::Pending,
            AttemptOutcome::Dead => OutputStatus::Dead,
        }
    }
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
    /// The word the stores keep it as.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStatus::Pending => "pending",
            OutputStatus::Delivered => "delivered",
            OutputStatus::Dead => "dead",
        }
    }

    /// The status a store's word stands for.
    pub fn from_word(word: &str) -> Option<OutputStatus> {
        [
            OutputStatus::Pending,
            OutputStatus::Delivered,
            OutputStatus::Dead,
        ]
        .into_iter()
        .find(|status| status.as_str() == word)
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

/// Delivery's part of the store: outputs are read a page at a time, each
/// attempt commits with the output's new status, and dead letters are kept
/// for an operator to send again.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync + 'static {
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

    /// Whether this host may make an attempt for `session` now. Always, on
    /// one host; where hosts share the store, only while this host holds
    /// the session, so that two hosts never send the same output at once.
    fn may_deliver(&self, _session: &SessionKey) -> bool {
        true
    }

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
}
