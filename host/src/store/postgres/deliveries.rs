//! A claimed session's deliveries: its owner sends its outputs in order and
//! records each attempt, fenced by the claim like every write of a turn.
//!
//! Deliveries ride on the session's claim, so what holds for turns holds
//! for them: one host at a time sends a session's outputs (never two
//! POSTing one output at once), in order; a host that dies mid-delivery
//! leaves the output pending, and the session's next owner sends it again
//! with the same `webhook-id`.

use super::{Claim, NOW_MS, PostgresStore};
use crate::store::{Attempt, Origin, PendingOutput, SessionKey, StoreError};

/// An output of `session` as a row of `outputs` has it.
pub(super) fn pending_output(row: &tokio_postgres::Row, session: SessionKey) -> PendingOutput {
    PendingOutput {
        id: row.get("id"),
        session,
        webhook_id: row.get("webhook_id"),
        body: row.get("body"),
        attempts: count(row, "attempts"),
        next_attempt_at: row.get("next_attempt_at"),
        origin: row
            .get::<_, Option<i64>>("accepted_at")
            .map(|accepted_at| Origin {
                accepted_at,
                trace_parent: row.get("trace_parent"),
            }),
    }
}

/// The columns of [`pending_output`]: the output's, and what it keeps of
/// its message.
pub(super) const PENDING_OUTPUT: &str = "outputs.*,
    (SELECT received_at FROM messages WHERE messages.id = outputs.message_id) AS accepted_at,
    (SELECT trace_parent FROM messages WHERE messages.id = outputs.message_id) AS trace_parent";

/// A count the database keeps as an `INTEGER`.
pub(super) fn count(row: &tokio_postgres::Row, column: &str) -> u32 {
    u32::try_from(row.get::<_, i32>(column)).unwrap_or(0)
}

impl PostgresStore {
    /// The claimed session's outputs not yet delivered (nor dead), in the
    /// order they are to be sent.
    pub async fn undelivered_outputs(
        &self,
        claim: &Claim,
    ) -> Result<Vec<PendingOutput>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {PENDING_OUTPUT} FROM outputs
                     WHERE endpoint = $1 AND session_id = $2 AND status = 'pending'
                     ORDER BY id"
                ),
                &[&claim.session.endpoint, &claim.session.session_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| pending_output(row, claim.session.clone()))
            .collect())
    }

    /// Records an attempt to deliver one of the claimed session's outputs,
    /// and the output's new status, if `host` still holds the session.
    pub async fn record_attempt(
        &self,
        host: &str,
        claim: &Claim,
        attempt: Attempt,
    ) -> Result<(), StoreError> {
        // One statement, its own transaction: the claim's check (which locks
        // the session's row), the attempt, the output's new status, and the
        // session's count of outputs to deliver when this one is done.
        let held: i64 = self
            .query_one(
                &format!(
                    "WITH held AS (
                         SELECT 1 FROM sessions
                         WHERE endpoint = $1 AND session_id = $2 AND owner = $3 AND epoch = $4
                         FOR UPDATE
                     ), recorded AS (
                         INSERT INTO delivery_attempts
                             (output_id, started_at, duration_ms, status, error)
                         SELECT $5, $6, $7, $8, $9 FROM held
                         -- An output erased meanwhile has nothing to record.
                         WHERE EXISTS (SELECT 1 FROM outputs WHERE id = $5)
                     ), updated AS (
                         UPDATE outputs
                         SET status = $10, attempts = attempts + 1, last_error = $9,
                             next_attempt_at = $11,
                             finished_at = CASE WHEN $10 = 'pending' THEN NULL ELSE {NOW_MS} END
                         WHERE id = $5 AND endpoint = $1 AND session_id = $2
                           AND status = 'pending' AND EXISTS (SELECT 1 FROM held)
                         RETURNING status
                     ), counted AS (
                         UPDATE sessions SET undelivered = undelivered - 1
                         WHERE endpoint = $1 AND session_id = $2
                           AND EXISTS (SELECT 1 FROM updated WHERE status <> 'pending')
                     )
                     SELECT count(*) FROM held"
                ),
                &[
                    &claim.session.endpoint,
                    &claim.session.session_id,
                    &host,
                    &claim.epoch,
                    &attempt.output_id,
                    &attempt.started_at,
                    &attempt.duration_ms,
                    &attempt.status.map(i32::from),
                    &attempt.error,
                    &attempt.outcome.status().as_str(),
                    &attempt.next_attempt_at,
                ],
            )
            .await?
            .get(0);
        if held == 0 {
            return Err(StoreError::Fenced(claim.session.clone()));
        }
        Ok(())
    }
}
