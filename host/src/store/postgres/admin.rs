//! What the admin API reads and changes in the outbox, shared by every
//! host: outputs and their attempts, dead letters sent again, and
//! endpoints stopped by a `410 Gone`.
//!
//! An output queued again makes its session wait for delivery again
//! (`undelivered`), so that whichever host claims the session sends it, in
//! its place in the session's order; the other hosts are woken.

use super::deliveries::{PENDING_OUTPUT, count, pending_output};
use super::wakeups::notify;
use super::{NOW_MS, PostgresStore};
use crate::store::{
    AttemptRecord, DisabledEndpoint, OutputQuery, OutputRecord, OutputStatus, PendingOutput,
    Queued, SessionKey, StoreError,
};

fn status(row: &tokio_postgres::Row) -> OutputStatus {
    let word: &str = row.get("status");
    OutputStatus::from_word(word).unwrap_or(OutputStatus::Pending)
}

/// Makes an output pending again, counted in its session's undelivered
/// outputs, and wakes the hosts: `$1` the endpoint, and the outputs to
/// queue again chosen by the `chosen` query (of `id`s).
fn requeue_sql(chosen: &str) -> String {
    format!(
        "WITH chosen AS ({chosen}),
         queued AS (
             UPDATE outputs o
             SET status = 'pending', attempts = 0, finished_at = NULL, next_attempt_at = NULL
             FROM chosen WHERE o.id = chosen.id AND o.endpoint = $1 AND o.status <> 'pending'
             RETURNING o.*
         ),
         counted AS (
             UPDATE sessions s SET undelivered = s.undelivered + n.added
             FROM (SELECT session_id, count(*)::INTEGER AS added FROM queued GROUP BY session_id) n
             WHERE s.endpoint = $1 AND s.session_id = n.session_id
         )
         SELECT queued.*,
                (SELECT received_at FROM messages WHERE messages.id = queued.message_id) AS accepted_at,
                (SELECT trace_parent FROM messages WHERE messages.id = queued.message_id) AS trace_parent,
                {}
         FROM queued ORDER BY id",
        notify('o', "$1", "queued.session_id")
    )
}

impl PostgresStore {
    /// A page of an endpoint's outputs, newest first.
    pub async fn outputs(
        &self,
        endpoint: &str,
        query: OutputQuery,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT id, session_id, webhook_id, status, attempts, last_error, created_at,
                        finished_at, next_attempt_at, CASE WHEN $5 THEN body END AS body
                 FROM outputs
                 WHERE endpoint = $1 AND ($2::TEXT IS NULL OR status = $2)
                   AND ($3::BIGINT IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4",
                &[
                    &endpoint,
                    &query.status.map(OutputStatus::as_str),
                    &query.before_id,
                    &limit,
                    &query.bodies,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| OutputRecord {
                id: row.get("id"),
                session_id: row.get("session_id"),
                webhook_id: row.get("webhook_id"),
                status: status(row),
                attempts: count(row, "attempts"),
                last_error: row.get("last_error"),
                created_at: row.get("created_at"),
                finished_at: row.get("finished_at"),
                next_attempt_at: row.get("next_attempt_at"),
                body: row.get("body"),
            })
            .collect())
    }

    /// An output's attempts, in the order they were made.
    pub async fn attempts(&self, output_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT started_at, duration_ms, status, error FROM delivery_attempts
                 WHERE output_id = $1 ORDER BY id",
                &[&output_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| AttemptRecord {
                started_at: row.get("started_at"),
                duration_ms: row.get("duration_ms"),
                status: row
                    .get::<_, Option<i32>>("status")
                    .and_then(|s| u16::try_from(s).ok()),
                error: row.get("error"),
            })
            .collect())
    }

    /// Queues an endpoint's delivered or dead output again, with its
    /// attempts counted afresh; returns it (also when it was pending
    /// already), or `None` if the endpoint has no such output.
    pub async fn requeue_output(
        &self,
        endpoint: &str,
        output_id: i64,
    ) -> Result<Option<PendingOutput>, StoreError> {
        let queued = self
            .query_opt(
                &requeue_sql("SELECT $2::BIGINT AS id"),
                &[&endpoint, &output_id],
            )
            .await?;
        let row = match queued {
            Some(row) => Some(row),
            // Pending already: nothing to do, and it is still there to show.
            None => {
                self.query_opt(
                    &format!(
                        "SELECT {PENDING_OUTPUT} FROM outputs
                         WHERE id = $2 AND endpoint = $1 AND status = 'pending'"
                    ),
                    &[&endpoint, &output_id],
                )
                .await?
            }
        };
        Ok(row.map(|row| {
            let session = SessionKey {
                endpoint: endpoint.to_owned(),
                session_id: row.get("session_id"),
            };
            pending_output(&row, session)
        }))
    }

    /// Queues a page of an endpoint's dead letters again (ids above
    /// `after_id`, at most `limit`); returns them.
    pub async fn requeue_dead(
        &self,
        endpoint: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &requeue_sql(
                    "SELECT id FROM outputs WHERE endpoint = $1 AND status = 'dead' AND id > $2
                     ORDER BY id LIMIT $3",
                ),
                &[&endpoint, &after_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Queued {
                id: row.get("id"),
                session: SessionKey {
                    endpoint: endpoint.to_owned(),
                    session_id: row.get("session_id"),
                },
                attempts: 0,
                next_attempt_at: None,
            })
            .collect())
    }

    /// Stops delivery to `endpoint` on every host, for `reason`.
    pub async fn disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        self.execute(
            &format!(
                "INSERT INTO disabled_endpoints (endpoint, reason, since) VALUES ($1, $2, {NOW_MS})
                 ON CONFLICT (endpoint) DO NOTHING"
            ),
            &[&endpoint, &reason],
        )
        .await?;
        Ok(())
    }

    /// Resumes delivery to `endpoint`; returns whether it was stopped.
    pub async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, StoreError> {
        let removed = self
            .execute(
                "DELETE FROM disabled_endpoints WHERE endpoint = $1",
                &[&endpoint],
            )
            .await?;
        Ok(removed > 0)
    }

    /// The endpoints whose delivery is stopped.
    pub async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        let rows = self
            .query(
                "SELECT endpoint, reason, since FROM disabled_endpoints ORDER BY endpoint",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| DisabledEndpoint {
                endpoint: row.get("endpoint"),
                reason: row.get("reason"),
                since: row.get("since"),
            })
            .collect())
    }
}
