//! The inbox's part: accepted messages, and the contexts and profiles their
//! turns commit.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, session_key};
use crate::store::profile_merge;
use crate::store::{
    Accepted, CommittedTurn, IdempotencyKey, InboxMessage, MessageKind, MessageStore, NewOutput,
    OnAccepted, PendingOutput, Queued, SessionKey, SessionState, StoreError, TurnAnswer,
    TurnOutcome, TurnRecord, now_ms,
};

/// How precisely a context's or profile's `updated_at` tracks its last use
/// when a turn does not change it: a day, which is plenty for a retention
/// of weeks, and spares most turns a write.
const USE_PRECISION_MS: i64 = 86_400_000;

fn inbox_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<InboxMessage> {
    Ok(InboxMessage {
        id: row.get("id")?,
        session: session_key(row)?,
        user_id: row.get("user_id")?,
        text: row.get("text")?,
        data: row.get("data")?,
        trace_id: row.get("trace_id")?,
        received_at: row.get("received_at")?,
        trace_parent: row.get("trace_parent")?,
        // The schema's version keeps an older host off a newer database,
        // so every kind here is known.
        kind: MessageKind::parse(&row.get::<_, String>("kind")?).unwrap_or_default(),
    })
}

#[async_trait::async_trait]
impl MessageStore for SqliteStore {
    async fn accept(
        &self,
        mut message: InboxMessage,
        key: Option<IdempotencyKey>,
        on_accepted: OnAccepted,
    ) -> Result<Accepted, StoreError> {
        self.write_then(
            move |conn| {
                let now = message.received_at;
                if let Some(key) = &key {
                    let remembered: Option<(String, String, i64)> = conn
                        .prepare_cached(
                            "SELECT fingerprint, trace_id, message_id FROM idempotency_keys
                             WHERE endpoint = ? AND key = ? AND expires_at > ?",
                        )?
                        .query_row(params![message.session.endpoint, key.key, now], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()?;
                    if let Some((fingerprint, trace_id, message_id)) = remembered {
                        return Ok(Err(if fingerprint == key.fingerprint {
                            Accepted::Repeated {
                                trace_id,
                                message_id,
                            }
                        } else {
                            Accepted::KeyReused
                        }));
                    }
                }
                message.id = conn
                    .prepare_cached(
                        "INSERT INTO messages
                            (trace_id, endpoint, session_id, user_id, text, data, received_at,
                             trace_parent, kind)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )?
                    .insert(params![
                        message.trace_id,
                        message.session.endpoint,
                        message.session.session_id,
                        message.user_id,
                        message.text,
                        message.data,
                        message.received_at,
                        message.trace_parent,
                        message.kind.as_str(),
                    ])?;
                if let Some(key) = &key {
                    let window = i64::try_from(key.window.as_millis()).unwrap_or(i64::MAX);
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency_keys
                             (endpoint, key, fingerprint, trace_id, message_id, expires_at)
                         VALUES (?, ?, ?, ?, ?, ?)",
                    )?
                    .execute(params![
                        message.session.endpoint,
                        key.key,
                        key.fingerprint,
                        message.trace_id,
                        message.id,
                        now.saturating_add(window),
                    ])?;
                }
                Ok(Ok(message))
            },
            |stored| match stored {
                Ok(message) => {
                    let id = message.id;
                    on_accepted(message);
                    Accepted::Stored { id }
                }
                Err(not_stored) => not_stored,
            },
        )
        .await
    }

    async fn unfinished_messages(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        self.read(move |conn| {
            conn.prepare(
                "SELECT id, endpoint, session_id FROM messages
                 WHERE status = 'pending' AND id > ? ORDER BY id LIMIT ?",
            )?
            .query_map(params![after_id, limit as i64], |row| {
                Ok(Queued {
                    id: row.get("id")?,
                    session: session_key(row)?,
                    attempts: 0,
                    next_attempt_at: None,
                })
            })?
            .collect()
        })
        .await
    }

    async fn unfinished_message(&self, id: i64) -> Result<Option<InboxMessage>, StoreError> {
        self.point_read(|conn| {
            conn.prepare_cached("SELECT * FROM messages WHERE id = ? AND status = 'pending'")?
                .query_row([id], inbox_message)
                .optional()
        })
    }

    async fn turn_answer(&self, id: i64) -> Result<TurnAnswer, StoreError> {
        self.point_read(|conn| {
            let ended: Option<(String, Option<String>)> = conn
                .prepare_cached("SELECT status, error FROM messages WHERE id = ?")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(match ended {
                None => TurnAnswer::Unknown,
                Some((status, _)) if status == "pending" => TurnAnswer::Pending,
                Some((status, error)) if status == "failed" => {
                    TurnAnswer::Failed(error.unwrap_or_default())
                }
                Some(_) => TurnAnswer::Done(
                    conn.prepare_cached(
                        "SELECT body FROM outputs WHERE message_id = ? ORDER BY id",
                    )?
                    .query_map([id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
                ),
            })
        })
    }

    fn erased_since(&self, at: i64) -> bool {
        self.last_erasure.load(std::sync::atomic::Ordering::SeqCst) >= at
    }

    async fn session_state(
        &self,
        session: &SessionKey,
        user_id: &str,
    ) -> Result<SessionState, StoreError> {
        // One statement for both: each statement costs a lookup in the
        // statement cache, a step and a reset, more than the row itself.
        self.point_read(|conn| {
            let (context, written_at, profile): (Option<String>, Option<i64>, Option<String>) =
                conn.prepare_cached(
                    "SELECT (SELECT context FROM sessions WHERE endpoint = ?1 AND session_id = ?2),
                            (SELECT updated_at FROM sessions WHERE endpoint = ?1 AND session_id = ?2),
                            (SELECT profile FROM profiles WHERE endpoint = ?1 AND user_id = ?3)",
                )?
                .query_row(
                    params![session.endpoint, session.session_id, user_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
            Ok(SessionState {
                context: context.unwrap_or_else(|| "{}".to_owned()),
                profile: profile.unwrap_or_else(|| "{}".to_owned()),
                context_written_at: written_at,
            })
        })
    }

    async fn complete_turn(&self, turn: TurnRecord) -> Result<CommittedTurn, StoreError> {
        self.write(move |conn| {
            let now = now_ms();
            let session = &turn.session;
            let mut outcome = turn.outcome;
            // The profile as it will be stored, before anything is written:
            // other sessions' keys merged in may take it past the flow's
            // limit, and then the turn fails instead.
            let mut merged_profile = None;
            if let TurnOutcome::Completed {
                profile: Some(change),
                ..
            } = &outcome
            {
                let current: Option<String> = conn
                    .prepare_cached(
                        "SELECT profile FROM profiles WHERE endpoint = ? AND user_id = ?",
                    )?
                    .query_row(params![session.endpoint, turn.user_id], |r| r.get(0))
                    .optional()?;
                match profile_merge::apply(current.as_deref().unwrap_or("{}"), change) {
                    Ok(merged) => merged_profile = Some(merged),
                    Err(reason) => outcome = TurnOutcome::Failed { reason },
                }
            }
            let (status, error) = match &outcome {
                TurnOutcome::Completed { .. } => ("done", None),
                TurnOutcome::Failed { reason } => ("failed", Some(reason.as_str())),
            };
            // `outputs_kept` is how many of its outputs the message has
            // already: committed while its turn ran, by this run or an
            // earlier one cut off by a crash. Read, then updated: an
            // `UPDATE … RETURNING` would build a temporary table for its one
            // row, which cost more than the update itself.
            let finished: Option<u32> = conn
                .prepare_cached(
                    "SELECT outputs_kept FROM messages WHERE id = ? AND status = 'pending'",
                )?
                .query_row([turn.message_id], |row| row.get(0))
                .optional()?;
            if finished.is_some() {
                conn.prepare_cached(
                    "UPDATE messages
                     SET status = ?, flow = ?, flow_version = ?, error = ?, finished_at = ?
                     WHERE id = ?",
                )?
                .execute(params![
                    status,
                    turn.flow,
                    turn.flow_version,
                    error,
                    now,
                    turn.message_id
                ])?;
            }
            let (context, outputs) = match outcome {
                TurnOutcome::Completed {
                    context, outputs, ..
                } => (context, outputs),
                TurnOutcome::Failed { reason } => return Ok(CommittedTurn::Failed(reason)),
            };
            let Some(kept) = finished else {
                // Already recorded (a retry after an unclear commit): keep the
                // first record and send nothing twice.
                return Ok(CommittedTurn::Done(Vec::new()));
            };
            match context {
                Some(context) => conn
                    .prepare_cached(
                        "INSERT INTO sessions (endpoint, session_id, context, updated_at, user_id)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (endpoint, session_id)
                         DO UPDATE SET context = ?3, updated_at = ?4, user_id = ?5",
                    )?
                    .execute(params![
                        session.endpoint,
                        session.session_id,
                        context,
                        now,
                        turn.user_id
                    ])?,
                // Used but unchanged: `updated_at` says when it was last used,
                // for retention, to within a day (so that a turn that changes
                // nothing rarely writes).
                None => conn
                    .prepare_cached(
                        "UPDATE sessions SET updated_at = ?3
                         WHERE endpoint = ?1 AND session_id = ?2 AND updated_at < ?3 - ?4",
                    )?
                    .execute(params![
                        session.endpoint,
                        session.session_id,
                        now,
                        USE_PRECISION_MS
                    ])?,
            };
            match merged_profile {
                Some(merged) => conn
                    .prepare_cached(
                        "INSERT INTO profiles (endpoint, user_id, profile, updated_at)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (endpoint, user_id)
                         DO UPDATE SET profile = ?3, updated_at = ?4",
                    )?
                    .execute(params![session.endpoint, turn.user_id, merged, now])?,
                None => conn
                    .prepare_cached(
                        "UPDATE profiles SET updated_at = ?3
                         WHERE endpoint = ?1 AND user_id = ?2 AND updated_at < ?3 - ?4",
                    )?
                    .execute(params![
                        session.endpoint,
                        turn.user_id,
                        now,
                        USE_PRECISION_MS
                    ])?,
            };
            insert_outputs(
                conn,
                turn.message_id,
                session,
                kept,
                outputs,
                now,
                turn.answered,
            )
            .map(CommittedTurn::Done)
        })
        .await
    }

    async fn commit_said(
        &self,
        message_id: i64,
        session: &SessionKey,
        outputs: Vec<NewOutput>,
    ) -> Result<Vec<PendingOutput>, StoreError> {
        let session = session.clone();
        self.write(move |conn| {
            let kept: Option<u32> = conn
                .prepare_cached(
                    "SELECT outputs_kept FROM messages WHERE id = ? AND status = 'pending'",
                )?
                .query_row([message_id], |r| r.get(0))
                .optional()?;
            let Some(kept) = kept else {
                return Ok(Vec::new()); // The message has ended.
            };
            let stored =
                insert_outputs(conn, message_id, &session, kept, outputs, now_ms(), false)?;
            let places = stored.len() as u32;
            if places > 0 {
                conn.prepare_cached(
                    "UPDATE messages SET outputs_kept = outputs_kept + ? WHERE id = ?",
                )?
                .execute(params![places, message_id])?;
            }
            Ok(stored)
        })
        .await
    }
}

/// Stores a message's outputs, but those at a place below `kept` (the
/// outputs it has already); returns those stored. Outputs come in order of
/// place, with no gap.
fn insert_outputs(
    conn: &rusqlite::Connection,
    message_id: i64,
    session: &SessionKey,
    kept: u32,
    outputs: Vec<NewOutput>,
    now: i64,
    answered: bool,
) -> rusqlite::Result<Vec<PendingOutput>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO outputs
             (message_id, endpoint, session_id, webhook_id, body, created_at, status, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                 CASE WHEN ?7 THEN 'delivered' ELSE 'pending' END, CASE WHEN ?7 THEN ?6 END)",
    )?;
    outputs
        .into_iter()
        .filter(|output| output.position >= kept)
        .map(|output| {
            let id = insert.insert(params![
                message_id,
                session.endpoint,
                session.session_id,
                output.webhook_id,
                output.body,
                now,
                answered
            ])?;
            Ok(PendingOutput {
                id,
                session: session.clone(),
                webhook_id: output.webhook_id,
                body: output.body,
                attempts: 0,
                next_attempt_at: None,
                origin: Some(output.origin),
            })
        })
        .collect()
}
