//! Delivery's part: outputs, their attempts, dead letters and stopped
//! endpoints.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, session_key};
use crate::store::{
    Attempt, AttemptRecord, DisabledEndpoint, Origin, OutboxStore, OutputQuery, OutputRecord,
    OutputStatus, PendingOutput, Queued, StoreError, now_ms,
};

/// An output's status as the `outputs` table keeps it (its `CHECK` lists
/// the same three words).
impl ToSql for OutputStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for OutputStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let word = value.as_str()?;
        OutputStatus::from_word(word)
            .ok_or_else(|| FromSqlError::Other(format!("{word:?} is not an output status").into()))
    }
}

fn pending_output(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingOutput> {
    Ok(PendingOutput {
        id: row.get("id")?,
        session: session_key(row)?,
        webhook_id: row.get("webhook_id")?,
        body: row.get("body")?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
        origin: match row.get::<_, Option<i64>>("accepted_at")? {
            Some(accepted_at) => Some(Origin {
                accepted_at,
                trace_parent: row.get("trace_parent")?,
            }),
            None => None,
        },
    })
}

/// The columns of [`pending_output`]: the output's, and what it keeps of
/// its message.
const PENDING_OUTPUT: &str = "outputs.*,
    (SELECT received_at FROM messages WHERE messages.id = outputs.message_id) AS accepted_at,
    (SELECT trace_parent FROM messages WHERE messages.id = outputs.message_id) AS trace_parent";

fn queued_output(row: &rusqlite::Row<'_>) -> rusqlite::Result<Queued> {
    Ok(Queued {
        id: row.get("id")?,
        session: session_key(row)?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
    })
}

#[async_trait::async_trait]
impl OutboxStore for SqliteStore {
    async fn pending_outputs(
        &self,
        endpoint: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let endpoint = endpoint.map(str::to_owned);
        self.read(move |conn| {
            conn.prepare(
                "SELECT id, endpoint, session_id, attempts, next_attempt_at FROM outputs
                 WHERE status = 'pending' AND (?1 IS NULL OR endpoint = ?1) AND id > ?2
                 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![endpoint, after_id, limit as i64], queued_output)?
            .collect()
        })
        .await
    }

    async fn pending_output(&self, id: i64) -> Result<Option<PendingOutput>, StoreError> {
        self.point_read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {PENDING_OUTPUT} FROM outputs WHERE id = ? AND status = 'pending'"
            ))?
            .query_row([id], pending_output)
            .optional()
        })
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        self.write(move |conn| {
            // An output erased meanwhile has nothing to record.
            conn.prepare_cached(
                "INSERT INTO delivery_attempts (output_id, started_at, duration_ms, status, error)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM outputs WHERE id = ?1)",
            )?
            .execute(params![
                attempt.output_id,
                attempt.started_at,
                attempt.duration_ms,
                attempt.status,
                attempt.error
            ])?;
            let status = attempt.outcome.status();
            let finished_at = (status != OutputStatus::Pending).then(now_ms);
            conn.prepare_cached(
                "UPDATE outputs
                 SET status = ?, attempts = attempts + 1, last_error = ?, finished_at = ?,
                     next_attempt_at = ?
                 WHERE id = ?",
            )?
            .execute(params![
                status,
                attempt.error,
                finished_at,
                attempt.next_attempt_at,
                attempt.output_id
            ])?;
            Ok(())
        })
        .await
    }

    async fn outputs(
        &self,
        endpoint: &str,
        query: OutputQuery,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        let endpoint = endpoint.to_owned();
        self.read(move |conn| {
            conn.prepare(
                "SELECT id, session_id, webhook_id, status, attempts, last_error, created_at,
                        finished_at, next_attempt_at, CASE WHEN ?5 THEN body END AS body
                 FROM outputs
                 WHERE endpoint = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3)
                 ORDER BY id DESC LIMIT ?4",
            )?
            .query_map(
                params![
                    endpoint,
                    query.status,
                    query.before_id,
                    query.limit as i64,
                    query.bodies
                ],
                |row| {
                    Ok(OutputRecord {
                        id: row.get("id")?,
                        session_id: row.get("session_id")?,
                        webhook_id: row.get("webhook_id")?,
                        status: row.get("status")?,
                        attempts: row.get("attempts")?,
                        last_error: row.get("last_error")?,
                        created_at: row.get("created_at")?,
                        finished_at: row.get("finished_at")?,
                        next_attempt_at: row.get("next_attempt_at")?,
                        body: row.get("body")?,
                    })
                },
            )?
            .collect()
        })
        .await
    }

    async fn attempts(&self, output_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare(
                "SELECT started_at, duration_ms, status, error FROM delivery_attempts
                 WHERE output_id = ? ORDER BY rowid",
            )?
            .query_map([output_id], |row| {
                Ok(AttemptRecord {
                    started_at: row.get(0)?,
                    duration_ms: row.get(1)?,
                    status: row.get(2)?,
                    error: row.get(3)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn requeue_output(
        &self,
        endpoint: &str,
        output_id: i64,
    ) -> Result<Option<PendingOutput>, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            conn.execute(
                "UPDATE outputs
                 SET status = 'pending', attempts = 0, finished_at = NULL, next_attempt_at = NULL
                 WHERE id = ? AND endpoint = ?",
                params![output_id, endpoint],
            )?;
            conn.query_row(
                &format!("SELECT {PENDING_OUTPUT} FROM outputs WHERE id = ? AND endpoint = ?"),
                params![output_id, endpoint],
                pending_output,
            )
            .optional()
        })
        .await
    }

    async fn requeue_dead(
        &self,
        endpoint: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            let page: Vec<Queued> = conn
                .prepare_cached(
                    "SELECT id, endpoint, session_id, attempts, next_attempt_at FROM outputs
                     WHERE endpoint = ? AND status = 'dead' AND id > ? ORDER BY id LIMIT ?",
                )?
                .query_map(params![endpoint, after_id, limit as i64], queued_output)?
                .collect::<rusqlite::Result<_>>()?;
            let mut requeue = conn.prepare_cached(
                "UPDATE outputs
                 SET status = 'pending', attempts = 0, finished_at = NULL, next_attempt_at = NULL
                 WHERE id = ?",
            )?;
            for output in &page {
                requeue.execute([output.id])?;
            }
            Ok(page
                .into_iter()
                .map(|output| Queued {
                    attempts: 0,
                    next_attempt_at: None,
                    ..output
                })
                .collect())
        })
        .await
    }

    async fn disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        let (endpoint, reason) = (endpoint.to_owned(), reason.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO disabled_endpoints (endpoint, reason, since) VALUES (?, ?, ?)
                 ON CONFLICT (endpoint) DO NOTHING",
                params![endpoint, reason, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM disabled_endpoints WHERE endpoint = ?",
                [endpoint],
            )? > 0)
        })
        .await
    }

    async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        self.read(|conn| {
            conn.prepare(
                "SELECT endpoint, reason, since FROM disabled_endpoints ORDER BY endpoint",
            )?
            .query_map([], |row| {
                Ok(DisabledEndpoint {
                    endpoint: row.get(0)?,
                    reason: row.get(1)?,
                    since: row.get(2)?,
                })
            })?
            .collect()
        })
        .await
    }
}
