//! The store's traits on PostgreSQL, as the inbox and delivery call them:
//! each write of a turn or a delivery is made under this host's claim on
//! the message's session ([`host`](super::host)), and refused
//! ([`StoreError::Fenced`]) when this host holds no claim on it, or holds
//! one the database no longer knows; the claim is then forgotten.
//!
//! The reads that list the inbox and the outbox list the whole deployment's
//! (for the admin API); which of it this host runs is decided by its claims,
//! not by these lists.

use super::deliveries::{PENDING_OUTPUT, pending_output};
use super::sessions::{inbox_message, session_of};
use super::{Claim, NOW_MS, PostgresStore};
use crate::store::{
    Accepted, Attempt, AttemptRecord, CommittedTurn, DisabledEndpoint, EndpointBacklog, ErasedUser,
    IdempotencyKey, InboxMessage, MessageStore, NewOutput, OnAccepted, OutboxStore, OutputQuery,
    OutputRecord, PendingOutput, Queued, SessionKey, SessionState, Store, StoreError, TurnAnswer,
    TurnRecord,
};

impl PostgresStore {
    /// This host's claim on `session`, or [`StoreError::Fenced`].
    fn claim_for(&self, session: &SessionKey) -> Result<Claim, StoreError> {
        self.claim_on(session)
            .ok_or_else(|| StoreError::Fenced(session.clone()))
    }

    /// `result`, forgetting `claim` if the database refused it.
    fn under<T>(&self, claim: &Claim, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Fenced(_)) = &result {
            self.forget(claim);
        }
        result
    }
}

fn queued(row: &tokio_postgres::Row) -> Queued {
    Queued {
        id: row.get("id"),
        session: session_of(row),
        attempts: u32::try_from(row.get::<_, i32>("attempts")).unwrap_or(0),
        next_attempt_at: row.get("next_attempt_at"),
    }
}

#[async_trait::async_trait]
impl MessageStore for PostgresStore {
    async fn accept(
        &self,
        mut message: InboxMessage,
        key: Option<IdempotencyKey>,
        on_accepted: OnAccepted,
    ) -> Result<Accepted, StoreError> {
        let stored = match &key {
            None => self.accept_message(&message).await?,
            Some(key) => match self.accept_message_once(&message, key).await? {
                Ok(stored) => stored,
                Err(not_stored) => return Ok(not_stored),
            },
        };
        message.id = stored.0;
        on_accepted(message);
        Ok(Accepted::Stored { id: stored.0 })
    }

    async fn unfinished_messages(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT id, endpoint, session_id, 0 AS attempts, NULL::BIGINT AS next_attempt_at
                 FROM messages WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT $2",
                &[&after_id, &limit],
            )
            .await?;
        Ok(rows.iter().map(queued).collect())
    }

    async fn unfinished_message(&self, id: i64) -> Result<Option<InboxMessage>, StoreError> {
        let row = self
            .query_opt(
                "SELECT * FROM messages WHERE id = $1 AND status = 'pending'",
                &[&id],
            )
            .await?;
        Ok(row.map(|row| inbox_message(&row, session_of(&row))))
    }

    async fn session_state(
        &self,
        session: &SessionKey,
        user_id: &str,
    ) -> Result<SessionState, StoreError> {
        PostgresStore::session_state(self, session, user_id).await
    }

    async fn turn_answer(&self, id: i64) -> Result<TurnAnswer, StoreError> {
        let Some(message) = self
            .query_opt("SELECT status, error FROM messages WHERE id = $1", &[&id])
            .await?
        else {
            return Ok(TurnAnswer::Unknown);
        };
        let status: &str = message.get("status");
        Ok(match status {
            "pending" => TurnAnswer::Pending,
            "failed" => TurnAnswer::Failed(
                message
                    .get::<_, Option<String>>("error")
                    .unwrap_or_default(),
            ),
            _ => TurnAnswer::Done(
                self.query(
                    "SELECT body FROM outputs WHERE message_id = $1 ORDER BY id",
                    &[&id],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect(),
            ),
        })
    }

    async fn complete_turn(&self, turn: TurnRecord) -> Result<CommittedTurn, StoreError> {
        let claim = self.claim_for(&turn.session)?;
        let result = PostgresStore::complete_turn(self, self.host_id(), &claim, turn).await;
        self.under(&claim, result)
    }

    async fn commit_said(
        &self,
        message_id: i64,
        session: &SessionKey,
        outputs: Vec<NewOutput>,
    ) -> Result<Vec<PendingOutput>, StoreError> {
        let claim = self.claim_for(session)?;
        let result =
            PostgresStore::commit_said(self, self.host_id(), &claim, message_id, outputs).await;
        self.under(&claim, result)
    }
}

#[async_trait::async_trait]
impl OutboxStore for PostgresStore {
    async fn pending_outputs(
        &self,
        endpoint: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT id, endpoint, session_id, attempts, next_attempt_at FROM outputs
                 WHERE status = 'pending' AND ($1::TEXT IS NULL OR endpoint = $1) AND id > $2
                 ORDER BY id LIMIT $3",
                &[&endpoint, &after_id, &limit],
            )
            .await?;
        Ok(rows.iter().map(queued).collect())
    }

    async fn pending_output(&self, id: i64) -> Result<Option<PendingOutput>, StoreError> {
        let row = self
            .query_opt(
                &format!(
                    "SELECT {PENDING_OUTPUT} FROM outputs WHERE id = $1 AND status = 'pending'"
                ),
                &[&id],
            )
            .await?;
        Ok(row.map(|row| pending_output(&row, session_of(&row))))
    }

    fn may_deliver(&self, session: &SessionKey) -> bool {
        self.holds(session)
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        let claim = self.claim_for(&attempt.session)?;
        let result = PostgresStore::record_attempt(self, self.host_id(), &claim, attempt).await;
        self.under(&claim, result)
    }

    async fn outputs(
        &self,
        endpoint: &str,
        query: OutputQuery,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        PostgresStore::outputs(self, endpoint, query).await
    }

    async fn attempts(&self, output_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        PostgresStore::attempts(self, output_id).await
    }

    async fn requeue_output(
        &self,
        endpoint: &str,
        output_id: i64,
    ) -> Result<Option<PendingOutput>, StoreError> {
        PostgresStore::requeue_output(self, endpoint, output_id).await
    }

    async fn requeue_dead(
        &self,
        endpoint: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        PostgresStore::requeue_dead(self, endpoint, after_id, limit).await
    }

    async fn disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        PostgresStore::disable_endpoint(self, endpoint, reason).await
    }

    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, StoreError> {
        PostgresStore::enable_endpoint(self, endpoint).await
    }

    async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        PostgresStore::disabled_endpoints(self).await
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn erase_user(&self, endpoint: &str, user_id: &str) -> Result<ErasedUser, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let user: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&endpoint, &user_id];
        // The sessions concerned, locked: their turns' writes, accepts and
        // claims wait for this to commit, and a turn of the user's running
        // meanwhile then finds its message gone and keeps nothing.
        let sessions: Vec<String> = tx
            .query(
                "SELECT session_id FROM sessions
                 WHERE endpoint = $1 AND (user_id = $2 OR session_id IN
                     (SELECT session_id FROM messages WHERE endpoint = $1 AND user_id = $2))
                 ORDER BY session_id FOR UPDATE",
                &user,
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        // In this order: what refers to a message goes before it.
        tx.execute(
            "DELETE FROM delivery_attempts WHERE output_id IN
                 (SELECT o.id FROM outputs o JOIN messages m ON m.id = o.message_id
                  WHERE m.endpoint = $1 AND m.user_id = $2)",
            &user,
        )
        .await?;
        let outputs = tx
            .execute(
                "DELETE FROM outputs WHERE message_id IN
                     (SELECT id FROM messages WHERE endpoint = $1 AND user_id = $2)",
                &user,
            )
            .await?;
        tx.execute(
            "DELETE FROM idempotency_keys WHERE endpoint = $1 AND trace_id IN
                 (SELECT trace_id FROM messages WHERE endpoint = $1 AND user_id = $2)",
            &user,
        )
        .await?;
        let messages = tx
            .execute(
                "DELETE FROM messages WHERE endpoint = $1 AND user_id = $2",
                &user,
            )
            .await?;
        let profiles = tx
            .execute(
                "DELETE FROM profiles WHERE endpoint = $1 AND user_id = $2",
                &user,
            )
            .await?;
        // A turn finds its session's next message by number: the pending
        // messages left are numbered again from the last finished, with no
        // gap (in two steps, numbers being unique), and the session's
        // counts made true again.
        let concerned: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&endpoint, &sessions];
        tx.execute(
            "UPDATE messages SET seq = -seq
             WHERE endpoint = $1 AND session_id = ANY($2) AND status = 'pending'",
            &concerned,
        )
        .await?;
        tx.execute(
            "UPDATE messages m SET seq = s.finished + r.n
             FROM (SELECT id, row_number() OVER (PARTITION BY session_id ORDER BY seq DESC) AS n
                   FROM messages
                   WHERE endpoint = $1 AND session_id = ANY($2) AND status = 'pending') r,
                  sessions s
             WHERE m.id = r.id AND s.endpoint = m.endpoint AND s.session_id = m.session_id",
            &concerned,
        )
        .await?;
        let sessions = tx
            .execute(
                "UPDATE sessions s
                 SET context = '{}', user_id = NULL,
                     accepted = s.finished + (SELECT count(*) FROM messages m
                         WHERE m.endpoint = s.endpoint AND m.session_id = s.session_id
                           AND m.status = 'pending'),
                     undelivered = (SELECT count(*) FROM outputs o
                         WHERE o.endpoint = s.endpoint AND o.session_id = s.session_id
                           AND o.status = 'pending')
                 WHERE s.endpoint = $1 AND s.session_id = ANY($2)",
                &concerned,
            )
            .await?;
        tx.commit().await?;
        Ok(ErasedUser {
            profiles,
            sessions,
            messages,
            outputs,
        })
    }

    async fn prune(&self, before: i64, idle_before: i64) -> Result<usize, StoreError> {
        // One transaction, so that what goes is consistent. Sessions keep
        // their row (and its numbering) while they have messages or work;
        // an idle session's row goes with its context once nothing of it
        // is left, so its next message starts again from 1.
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let mut rows = 0;
        for sql in [
            "DELETE FROM delivery_attempts WHERE output_id IN
                 (SELECT id FROM outputs WHERE status = 'delivered' AND finished_at < $1)"
                .to_owned(),
            "DELETE FROM outputs WHERE status = 'delivered' AND finished_at < $1".to_owned(),
            "DELETE FROM messages m WHERE status <> 'pending' AND finished_at < $1
                 AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.message_id = m.id)"
                .to_owned(),
        ] {
            rows += tx.execute(&sql, &[&before]).await?;
        }
        rows += tx
            .execute(
                "DELETE FROM sessions s
                 WHERE updated_at < $1 AND owner IS NULL
                   AND finished = accepted AND undelivered = 0
                   AND NOT EXISTS (SELECT 1 FROM messages m
                                   WHERE m.endpoint = s.endpoint AND m.session_id = s.session_id)",
                &[&idle_before],
            )
            .await?;
        rows += tx
            .execute(
                "DELETE FROM profiles WHERE updated_at < $1",
                &[&idle_before],
            )
            .await?;
        rows += tx
            .execute(
                &format!("DELETE FROM idempotency_keys WHERE expires_at <= {NOW_MS}"),
                &[],
            )
            .await?;
        // Hosts gone for an hour: their claims are void already (their
        // lease ran out); the rows go, and the sessions they held are
        // nobody's.
        tx.execute(
            "UPDATE sessions s SET owner = NULL
             FROM hosts h
             WHERE s.owner = h.id AND h.lease_until < clock_timestamp() - INTERVAL '1 hour'",
            &[],
        )
        .await?;
        rows += tx
            .execute(
                "DELETE FROM hosts WHERE lease_until < clock_timestamp() - INTERVAL '1 hour'",
                &[],
            )
            .await?;
        // A session kept for its messages still forgets its context.
        rows += tx
            .execute(
                "UPDATE sessions SET context = '{}'
                 WHERE updated_at < $1 AND context <> '{}' AND finished = accepted",
                &[&idle_before],
            )
            .await?;
        tx.commit().await?;
        Ok(usize::try_from(rows).unwrap_or(usize::MAX))
    }

    async fn backlog(&self) -> Result<Vec<EndpointBacklog>, StoreError> {
        // Unfinished messages and undelivered outputs from the sessions'
        // counters (through `sessions_waiting`), dead letters through
        // `outputs_dead`.
        let rows = self
            .query(
                "SELECT endpoint, SUM(messages)::BIGINT AS messages, SUM(pending)::BIGINT AS pending,
                        SUM(dead)::BIGINT AS dead FROM (
                     SELECT endpoint, accepted - finished AS messages, undelivered AS pending, 0 AS dead
                       FROM sessions WHERE finished < accepted OR undelivered > 0
                     UNION ALL SELECT endpoint, 0, 0, 1 FROM outputs WHERE status = 'dead'
                 ) AS waiting GROUP BY endpoint ORDER BY endpoint",
                &[],
            )
            .await?;
        let count = |row: &tokio_postgres::Row, column: &str| {
            u64::try_from(row.get::<_, i64>(column)).unwrap_or(0)
        };
        Ok(rows
            .iter()
            .map(|row| EndpointBacklog {
                endpoint: row.get("endpoint"),
                unfinished_messages: count(row, "messages"),
                pending_outputs: count(row, "pending"),
                dead_letters: count(row, "dead"),
            })
            .collect())
    }
}
