//! A claimed session's deliveries: its owner sends its outputs in order and
//! records each attempt, fenced by the claim like every write of a turn.
//!
//! Deliveries ride on the session's claim, so what holds for turns holds
//! for them: one host at a time sends a session's outputs (never two
//! POSTing one output at once), in order; a host that dies mid-delivery
//! leaves the output pending, and the session's next owner sends it again
//! with the same `webhook-id`.

use super::turns::hold;
use super::{Claim, NOW_MS, PostgresStore};
use crate::store::{Attempt, OutputStatus, PendingOutput, StoreError};

impl PostgresStore {
    /// The claimed session's outputs not yet delivered (nor dead), in the
    /// order they are to be sent.
    pub async fn undelivered_outputs(
        &self,
        claim: &Claim,
    ) -> Result<Vec<PendingOutput>, StoreError> {
        let rows = self
            .query(
                "SELECT id, webhook_id, body, attempts, next_attempt_at FROM outputs
                 WHERE endpoint = $1 AND session_id = $2 AND status = 'pending'
                 ORDER BY id",
                &[&claim.session.endpoint, &claim.session.session_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| PendingOutput {
                id: row.get("id"),
                session: claim.session.clone(),
                webhook_id: row.get("webhook_id"),
                body: row.get("body"),
                attempts: u32::try_from(row.get::<_, i32>("attempts")).unwrap_or(0),
                next_attempt_at: row.get("next_attempt_at"),
            })
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
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        hold(&tx, host, claim).await?;
        let status = attempt.outcome.status();
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO delivery_attempts (output_id, started_at, duration_ms, status, error)
             VALUES ($1, $2, $3, $4, $5)",
            )
            .await?,
            &[
                &attempt.output_id,
                &attempt.started_at,
                &attempt.duration_ms,
                &attempt.status.map(i32::from),
                &attempt.error,
            ],
        )
        .await?;
        let finished = tx
            .execute(
                &tx.prepare_cached(&format!(
                    "UPDATE outputs
                     SET status = $4, attempts = attempts + 1, last_error = $5,
                         next_attempt_at = $6,
                         finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE {NOW_MS} END
                     WHERE id = $1 AND endpoint = $2 AND session_id = $3
                       AND status = 'pending'"
                ))
                .await?,
                &[
                    &attempt.output_id,
                    &claim.session.endpoint,
                    &claim.session.session_id,
                    &status.as_str(),
                    &attempt.error,
                    &attempt.next_attempt_at,
                ],
            )
            .await?
            == 1
            && status != OutputStatus::Pending;
        if finished {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE sessions SET undelivered = undelivered - 1
                 WHERE endpoint = $1 AND session_id = $2",
                )
                .await?,
                &[&claim.session.endpoint, &claim.session.session_id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
