//! The inbox's part, shared by hosts: messages numbered in their session's
//! order whichever host accepted them, sessions claimed by one host at a
//! time, and turns fenced by the claim's epoch.
//!
//! The steps, each one transaction:
//!
//! 1. [`accept_message`](PostgresStore::accept_message): any host stores a
//!    message; the session's row, updated in the same transaction, gives it
//!    the next number (`seq`). Its row lock makes two hosts accepting for
//!    one session take turns, so numbers follow commit order.
//! 2. [`claim_sessions`](PostgresStore::claim_sessions): a host whose lease
//!    holds takes sessions with unfinished messages or undelivered outputs
//!    that no live host runs,
//!    `FOR UPDATE SKIP LOCKED`, so hosts claiming together take different
//!    ones; each claim adds one to the session's epoch.
//! 3. [`next_message`](PostgresStore::next_message), then the turn's
//!    writes ([`turns`](super::turns)), each made only if the session is
//!    still this host's at this epoch; otherwise [`StoreError::Fenced`], and
//!    nothing of the write is kept.
//! 4. The session's outputs, delivered by its owner in order, each attempt
//!    fenced the same way ([`deliveries`](super::deliveries)).
//! 5. [`release`](PostgresStore::release): a host gives a session up once it
//!    has nothing left to run or deliver.
//!
//! A host's claims last while its lease does ([`renew_host`](PostgresStore::renew_host)):
//! a host that dies is passed over once its lease runs out, and one that
//! only paused finds, when it wakes, that every write it tries is fenced.
//! Leases are compared with the database's clock, never a host's.
//!
//! The inbox's side of this, the loop that claims, renews and takes
//! sessions up, is `inbox::shared`.

use std::time::Duration;

use super::wakeups::notify;
use super::{NOW_MS, PostgresStore};
use crate::store::{Accepted, IdempotencyKey, InboxMessage, MessageKind, SessionKey, StoreError};

/// A `messages` row of `session` (its columns under their own names) as
/// the inbox runs it.
pub(super) fn inbox_message(row: &tokio_postgres::Row, session: SessionKey) -> InboxMessage {
    InboxMessage {
        id: row.get("id"),
        session,
        user_id: row.get("user_id"),
        text: row.get("text"),
        data: row.get("data"),
        trace_id: row.get("trace_id"),
        received_at: row.get("received_at"),
        trace_parent: row.get("trace_parent"),
        // The schema's version keeps an older host off a newer database,
        // so every kind here is known.
        kind: MessageKind::parse(row.get("kind")).unwrap_or_default(),
    }
}

/// The session of a row with `endpoint` and `session_id` columns.
pub(super) fn session_of(row: &tokio_postgres::Row) -> SessionKey {
    SessionKey {
        endpoint: row.get("endpoint"),
        session_id: row.get("session_id"),
    }
}

/// A session this host runs, as claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The session.
    pub session: SessionKey,
    /// The epoch of the claim, checked by every write made under it.
    pub epoch: i64,
}

/// A message as its session's owner runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedMessage {
    /// Its number in its session, from 1.
    pub seq: i64,
    /// Whether the session had messages after it when it was read.
    pub more: bool,
    /// The message.
    pub message: InboxMessage,
}

impl PostgresStore {
    /// Registers `host`, or renews its lease: its claims hold for `lease`
    /// from now (the database's now).
    pub async fn renew_host(&self, host: &str, lease: Duration) -> Result<(), StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.execute(
            "INSERT INTO hosts (id, lease_until)
                 VALUES ($1, clock_timestamp() + $2::FLOAT8 * INTERVAL '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
            &[&host, &(lease_ms as f64)],
        )
        .await?;
        Ok(())
    }

    /// Stores a message, numbered next in its session; returns its id and
    /// number. Hosts that share the database may call it for one session at
    /// once: they take turns on the session's row.
    pub async fn accept_message(&self, message: &InboxMessage) -> Result<(i64, i64), StoreError> {
        let conn = self.conn().await?;
        insert_message(&conn, message).await
    }

    /// Like [`accept_message`](Self::accept_message), remembering `key`
    /// in the same transaction; nothing is stored if the key is remembered
    /// already. Two hosts given the same key at once take turns on its row:
    /// the second sees the first's.
    pub async fn accept_message_once(
        &self,
        message: &InboxMessage,
        key: &IdempotencyKey,
    ) -> Result<Result<(i64, i64), Accepted>, StoreError> {
        let endpoint = &message.session.endpoint;
        let window_ms = i64::try_from(key.window.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        // Taken if new, or if what is remembered has expired; its message
        // is numbered below, in the same transaction.
        let taken = tx
            .query_opt(
                &format!(
                    "INSERT INTO idempotency_keys
                         (endpoint, key, fingerprint, trace_id, message_id, expires_at)
                     VALUES ($1, $2, $3, $4, 0, {NOW_MS} + $5)
                     ON CONFLICT (endpoint, key) DO UPDATE
                         SET fingerprint = excluded.fingerprint, trace_id = excluded.trace_id,
                             expires_at = excluded.expires_at
                         WHERE idempotency_keys.expires_at <= {NOW_MS}
                     RETURNING 1"
                ),
                &[
                    endpoint,
                    &key.key,
                    &key.fingerprint,
                    &message.trace_id,
                    &window_ms,
                ],
            )
            .await?;
        if taken.is_none() {
            let row = tx
                .query_one(
                    "SELECT fingerprint, trace_id, message_id FROM idempotency_keys
                     WHERE endpoint = $1 AND key = $2",
                    &[endpoint, &key.key],
                )
                .await?;
            let fingerprint: String = row.get("fingerprint");
            return Ok(Err(if fingerprint == key.fingerprint {
                Accepted::Repeated {
                    trace_id: row.get("trace_id"),
                    message_id: row.get("message_id"),
                }
            } else {
                Accepted::KeyReused
            }));
        }
        let stored = insert_message(&tx, message).await?;
        tx.execute(
            "UPDATE idempotency_keys SET message_id = $3 WHERE endpoint = $1 AND key = $2",
            &[endpoint, &key.key, &stored.0],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(stored))
    }

    /// Claims up to `limit` sessions of `endpoints` that have unfinished
    /// messages or undelivered outputs and no live owner, for `host`, whose
    /// lease must hold.
    pub async fn claim_sessions(
        &self,
        host: &str,
        endpoints: &[String],
        limit: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        let rows = self
            .query(
                "UPDATE sessions s SET owner = $1, epoch = s.epoch + 1
                 FROM (
                     SELECT endpoint, session_id FROM sessions w
                     WHERE (w.finished < w.accepted OR w.undelivered > 0) AND w.endpoint = ANY($2)
                       AND (w.owner IS NULL OR NOT EXISTS (
                           SELECT 1 FROM hosts h
                           WHERE h.id = w.owner AND h.lease_until > clock_timestamp()))
                       AND EXISTS (
                           SELECT 1 FROM hosts me
                           WHERE me.id = $1 AND me.lease_until > clock_timestamp())
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 ) free
                 WHERE s.endpoint = free.endpoint AND s.session_id = free.session_id
                 RETURNING s.endpoint, s.session_id, s.epoch",
                &[&host, &endpoints, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Claim {
                session: SessionKey {
                    endpoint: row.get(0),
                    session_id: row.get(1),
                },
                epoch: row.get(2),
            })
            .collect())
    }

    /// The claimed session's next message to run, if it has one;
    /// [`StoreError::Fenced`] if `host` no longer holds the session.
    pub async fn next_message(
        &self,
        host: &str,
        claim: &Claim,
    ) -> Result<Option<ClaimedMessage>, StoreError> {
        let row = self
            .query_opt(
                "SELECT s.owner IS NOT DISTINCT FROM $3 AND s.epoch = $4 AS held,
                        s.accepted AS last, m.*
                 FROM sessions s
                 LEFT JOIN messages m
                   ON m.endpoint = s.endpoint AND m.session_id = s.session_id
                  AND m.seq = s.finished + 1
                 WHERE s.endpoint = $1 AND s.session_id = $2",
                &[
                    &claim.session.endpoint,
                    &claim.session.session_id,
                    &host,
                    &claim.epoch,
                ],
            )
            .await?;
        let Some(row) = row.filter(|row| row.get::<_, bool>("held")) else {
            return Err(StoreError::Fenced(claim.session.clone()));
        };
        if row.get::<_, Option<i64>>("id").is_none() {
            return Ok(None);
        }
        let seq: i64 = row.get("seq");
        Ok(Some(ClaimedMessage {
            seq,
            more: seq < row.get::<_, i64>("last"),
            message: inbox_message(&row, claim.session.clone()),
        }))
    }

    /// Gives up the claimed session if it has nothing left to run or
    /// deliver; returns whether it did (`false`: a message came meanwhile,
    /// an output waits, or the claim was lost).
    pub async fn release(&self, host: &str, claim: &Claim) -> Result<bool, StoreError> {
        let released = self
            .execute(
                "UPDATE sessions SET owner = NULL
                 WHERE endpoint = $1 AND session_id = $2 AND owner = $3 AND epoch = $4
                   AND finished = accepted AND undelivered = 0",
                &[
                    &claim.session.endpoint,
                    &claim.session.session_id,
                    &host,
                    &claim.epoch,
                ],
            )
            .await?;
        Ok(released > 0)
    }
}

/// Stores `message`, numbered next in its session, on `client` (the pool's
/// connection, or a transaction); returns its id and number.
async fn insert_message(
    client: &impl deadpool_postgres::GenericClient,
    message: &InboxMessage,
) -> Result<(i64, i64), StoreError> {
    // One statement, so one round trip and its own transaction (unless in
    // one): the session's row (its lock orders the session's accepts), the
    // message, and the notification that wakes the other hosts once this
    // commits (see `wakeups`).
    let session = &message.session;
    let sql = format!(
        "WITH numbered AS (
             INSERT INTO sessions (endpoint, session_id, updated_at, accepted)
             VALUES ($1, $2, {NOW_MS}, 1)
             ON CONFLICT (endpoint, session_id)
             DO UPDATE SET accepted = sessions.accepted + 1
             RETURNING accepted
         ), stored AS (
             INSERT INTO messages
                 (endpoint, session_id, seq, trace_id, user_id, text, data,
                  received_at, trace_parent, kind)
             SELECT $1, $2, accepted, $3, $4, $5, $6, $7, $8, $9 FROM numbered
             RETURNING id, seq
         )
         SELECT id, seq, {} FROM stored",
        notify('m', "$1", "$2")
    );
    let row = client
        .query_one(
            &client.prepare_cached(&sql).await?,
            &[
                &session.endpoint,
                &session.session_id,
                &message.trace_id,
                &message.user_id,
                &message.text,
                &message.data,
                &message.received_at,
                &message.trace_parent,
                &message.kind.as_str(),
            ],
        )
        .await?;
    Ok((row.get("id"), row.get("seq")))
}
