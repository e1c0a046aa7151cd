//! A claimed session's turns: the state a message runs with, the outputs
//! said while it runs, and how it ended, each write one transaction fenced
//! by the claim.
//!
//! Every write first locks the session's row, and only if this host still
//! holds it at the claim's epoch: a claim by another host then waits for
//! the write to commit, and a write by a host that lost the session finds
//! no row and keeps nothing ([`StoreError::Fenced`]).
//!
//! Profiles are shared by a user's sessions, which other hosts may be
//! running: a turn's profile change is merged into the profile as it is at
//! commit, under the profile row's lock, as on one host.

use deadpool_postgres::Transaction;

use super::{Claim, NOW_MS, PostgresStore};
use crate::store::profile_merge;
use crate::store::{
    CommittedTurn, NewOutput, PendingOutput, SessionKey, SessionState, StoreError, TurnOutcome,
    TurnRecord,
};

impl PostgresStore {
    /// The context of `session` and the profile of `user_id` at its
    /// endpoint (`{}` when new).
    pub async fn session_state(
        &self,
        session: &SessionKey,
        user_id: &str,
    ) -> Result<SessionState, StoreError> {
        let row = self
            .query_one(
                "SELECT s.context, s.updated_at,
                        (SELECT profile FROM profiles WHERE endpoint = $1 AND user_id = $3)
                 FROM (SELECT 1) one
                 LEFT JOIN sessions s ON s.endpoint = $1 AND s.session_id = $2",
                &[&session.endpoint, &session.session_id, &user_id],
            )
            .await?;
        let (context, profile): (Option<String>, Option<String>) = (row.get(0), row.get(2));
        Ok(SessionState {
            // Set at every turn's end, and at the session's first accept.
            context_written_at: row.get(1),
            context: context.unwrap_or_else(|| "{}".to_owned()),
            profile: profile.unwrap_or_else(|| "{}".to_owned()),
        })
    }

    /// Commits outputs that message `message_id` of the claimed session said
    /// while its turn still runs; returns those stored (none of a place
    /// already kept, none once the message has ended).
    pub async fn commit_said(
        &self,
        host: &str,
        claim: &Claim,
        message_id: i64,
        outputs: Vec<NewOutput>,
    ) -> Result<Vec<PendingOutput>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let Some(message) = hold(&tx, host, claim, message_id).await? else {
            return Ok(Vec::new()); // The message has ended.
        };
        let stored = insert_outputs(
            &tx,
            message_id,
            &claim.session,
            message.outputs_kept,
            outputs,
            false,
        )
        .await?;
        if !stored.is_empty() {
            let count = i32::try_from(stored.len()).unwrap_or(i32::MAX);
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE messages SET outputs_kept = outputs_kept + $1 WHERE id = $2",
                )
                .await?,
                &[&count, &message_id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Records how a message of the claimed session ended, with its new
    /// context and profile and its outputs, in one transaction, if this host
    /// still holds the session; returns the outputs to deliver, or why the
    /// message failed. A message already recorded (a retry after a commit
    /// whose answer was lost) is left as it is, and nothing is sent twice.
    pub async fn complete_turn(
        &self,
        host: &str,
        claim: &Claim,
        turn: TurnRecord,
    ) -> Result<CommittedTurn, StoreError> {
        let changes_profile = matches!(
            &turn.outcome,
            TurnOutcome::Completed {
                profile: Some(_),
                ..
            }
        );
        if !changes_profile {
            return self.complete_turn_at_once(host, claim, turn).await;
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let Some(message) = hold(&tx, host, claim, turn.message_id).await? else {
            return Ok(CommittedTurn::Done(Vec::new())); // Recorded already.
        };
        let session = &claim.session;
        let mut outcome = turn.outcome;
        // The profile as it will be stored, merged under its row's lock:
        // other sessions' keys merged in may take it past the flow's limit,
        // and then the turn fails instead.
        let mut merged_profile = None;
        if let TurnOutcome::Completed {
            profile: Some(change),
            ..
        } = &outcome
        {
            tx.execute(
                &tx.prepare_cached(&format!(
                    "INSERT INTO profiles (endpoint, user_id, profile, updated_at)
                     VALUES ($1, $2, '{{}}', {NOW_MS}) ON CONFLICT DO NOTHING"
                ))
                .await?,
                &[&session.endpoint, &turn.user_id],
            )
            .await?;
            let current: String = tx
                .query_one(
                    &tx.prepare_cached(
                        "SELECT profile FROM profiles WHERE endpoint = $1 AND user_id = $2
                     FOR UPDATE",
                    )
                    .await?,
                    &[&session.endpoint, &turn.user_id],
                )
                .await?
                .get(0);
            match profile_merge::apply(&current, change) {
                Ok(merged) => merged_profile = Some(merged),
                Err(reason) => outcome = TurnOutcome::Failed { reason },
            }
        }
        let (status, error, context) = match &outcome {
            TurnOutcome::Completed { context, .. } => ("done", None, context.as_deref()),
            TurnOutcome::Failed { reason } => ("failed", Some(reason.as_str()), None),
        };
        tx.execute(
            &tx.prepare_cached(&format!(
                "UPDATE messages
                 SET status = $1, flow = $2, flow_version = $3, error = $4,
                     finished_at = {NOW_MS}
                 WHERE id = $5"
            ))
            .await?,
            &[
                &status,
                &turn.flow,
                &turn.flow_version,
                &error,
                &turn.message_id,
            ],
        )
        .await?;
        tx.execute(
            &tx.prepare_cached(&format!(
                "UPDATE sessions
                 SET finished = $3, context = COALESCE($4, context), updated_at = {NOW_MS},
                     user_id = CASE WHEN $4::TEXT IS NULL THEN user_id ELSE $5 END
                 WHERE endpoint = $1 AND session_id = $2"
            ))
            .await?,
            &[
                &session.endpoint,
                &session.session_id,
                &message.seq,
                &context,
                &turn.user_id,
            ],
        )
        .await?;
        let outputs = match outcome {
            TurnOutcome::Completed { outputs, .. } => outputs,
            TurnOutcome::Failed { reason } => {
                tx.commit().await?;
                return Ok(CommittedTurn::Failed(reason));
            }
        };
        if let Some(merged) = merged_profile {
            tx.execute(
                &tx.prepare_cached(&format!(
                    "UPDATE profiles SET profile = $3, updated_at = {NOW_MS}
                     WHERE endpoint = $1 AND user_id = $2"
                ))
                .await?,
                &[&session.endpoint, &turn.user_id, &merged],
            )
            .await?;
        }
        let stored = insert_outputs(
            &tx,
            turn.message_id,
            session,
            message.outputs_kept,
            outputs,
            turn.answered,
        )
        .await?;
        tx.commit().await?;
        Ok(CommittedTurn::Done(stored))
    }
}

impl PostgresStore {
    /// [`complete_turn`](Self::complete_turn) for a turn that leaves the
    /// profile as it is, which is most: one statement, so one round trip
    /// and its own transaction, instead of one per step. (A profile change
    /// is merged with the stored profile by flowhost, between statements.)
    async fn complete_turn_at_once(
        &self,
        host: &str,
        claim: &Claim,
        turn: TurnRecord,
    ) -> Result<CommittedTurn, StoreError> {
        let (status, error, context, outputs) = match turn.outcome {
            TurnOutcome::Completed {
                context, outputs, ..
            } => ("done", None, context, outputs),
            TurnOutcome::Failed { reason } => ("failed", Some(reason), None, Vec::new()),
        };
        let positions: Vec<i32> = outputs
            .iter()
            .map(|o| i32::try_from(o.position).unwrap_or(i32::MAX))
            .collect();
        let webhook_ids: Vec<&str> = outputs.iter().map(|o| o.webhook_id.as_str()).collect();
        let bodies: Vec<&str> = outputs.iter().map(|o| o.body.as_str()).collect();
        // The same for every output of the message.
        let origin = outputs.first().map(|o| o.origin.clone());
        let session = &claim.session;
        // `held`: the session's row, locked, if this host holds it (none:
        // fenced), with the message if still pending (NULL: recorded
        // already). The other steps happen only for a pending message; the
        // outputs are inserted in order of place, those kept before
        // skipped.
        let rows = self
            .query(
                &format!(
                    "WITH held AS ({HOLD}), ended AS (
                         UPDATE messages
                         SET status = $6, flow = $7, flow_version = $8, error = $9,
                             finished_at = {NOW_MS}
                         WHERE id = $5 AND EXISTS (SELECT 1 FROM held WHERE seq IS NOT NULL)
                         RETURNING outputs_kept
                     ), stored AS (
                         INSERT INTO outputs
                             (message_id, endpoint, session_id, webhook_id, body, created_at,
                              status, finished_at)
                         SELECT $5, $1, $2, o.webhook_id, o.body, {NOW_MS},
                                CASE WHEN $15 THEN 'delivered' ELSE 'pending' END,
                                CASE WHEN $15 THEN {NOW_MS} END
                         FROM unnest($10::INTEGER[], $11::TEXT[], $12::TEXT[])
                                  AS o(place, webhook_id, body),
                              ended
                         WHERE o.place >= ended.outputs_kept
                         ORDER BY o.place
                         RETURNING id, webhook_id, body
                     ), counted AS (
                         UPDATE sessions
                         SET finished = (SELECT seq FROM held),
                             context = COALESCE($13, context), updated_at = {NOW_MS},
                             user_id = CASE WHEN $13::TEXT IS NULL THEN user_id ELSE $14 END,
                             undelivered = undelivered
                                 + CASE WHEN $15 THEN 0 ELSE (SELECT count(*) FROM stored) END
                         WHERE endpoint = $1 AND session_id = $2 AND EXISTS (SELECT 1 FROM ended)
                     )
                     SELECT (SELECT count(*) FROM held) AS held,
                            (SELECT count(*) FROM ended) AS ended,
                            stored.id, stored.webhook_id, stored.body
                     FROM (SELECT 1) one LEFT JOIN stored ON true
                     ORDER BY stored.id"
                ),
                &[
                    &session.endpoint,
                    &session.session_id,
                    &host,
                    &claim.epoch,
                    &turn.message_id,
                    &status,
                    &turn.flow,
                    &turn.flow_version,
                    &error,
                    &positions,
                    &webhook_ids,
                    &bodies,
                    &context,
                    &turn.user_id,
                    &turn.answered,
                ],
            )
            .await?;
        let first = rows.first().expect("the statement returns a row");
        if first.get::<_, i64>("held") == 0 {
            return Err(StoreError::Fenced(session.clone()));
        }
        if first.get::<_, i64>("ended") == 0 {
            return Ok(CommittedTurn::Done(Vec::new())); // Recorded already.
        }
        if let Some(reason) = error {
            return Ok(CommittedTurn::Failed(reason));
        }
        Ok(CommittedTurn::Done(
            rows.iter()
                .filter_map(|row| {
                    Some(PendingOutput {
                        id: row.get::<_, Option<i64>>("id")?,
                        session: session.clone(),
                        webhook_id: row.get("webhook_id"),
                        body: row.get("body"),
                        attempts: 0,
                        next_attempt_at: None,
                        origin: origin.clone(),
                    })
                })
                .collect(),
        ))
    }
}

/// Locks the session's row (`$1`, `$2`) if host `$3` holds it at epoch
/// `$4`, and gives message `$5`'s number and outputs kept if it is still
/// pending (NULL: it has ended). No row: the claim is lost.
const HOLD: &str = "SELECT m.seq, m.outputs_kept FROM sessions s
     LEFT JOIN messages m
       ON m.id = $5 AND m.status = 'pending'
      AND m.endpoint = s.endpoint AND m.session_id = s.session_id
     WHERE s.endpoint = $1 AND s.session_id = $2 AND s.owner = $3 AND s.epoch = $4
     FOR UPDATE OF s";

/// A pending message, as a write of its turn finds it.
struct Pending {
    /// Its number in its session.
    seq: i64,
    /// How many of its outputs are kept already.
    outputs_kept: i32,
}

/// Locks the claimed session's row if `host` still holds it at the claim's
/// epoch, and returns message `message_id` of the session if it is still
/// pending (`None`: it has ended); [`StoreError::Fenced`] if another host
/// has taken the session.
async fn hold(
    tx: &Transaction<'_>,
    host: &str,
    claim: &Claim,
    message_id: i64,
) -> Result<Option<Pending>, StoreError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(HOLD).await?,
            &[
                &claim.session.endpoint,
                &claim.session.session_id,
                &host,
                &claim.epoch,
                &message_id,
            ],
        )
        .await?;
    let row = row.ok_or_else(|| StoreError::Fenced(claim.session.clone()))?;
    Ok(row.get::<_, Option<i64>>(0).map(|seq| Pending {
        seq,
        outputs_kept: row.get(1),
    }))
}

/// Stores a message's outputs but those at a place below `kept`; returns
/// those stored. Outputs come in order of place, with no gap.
async fn insert_outputs(
    tx: &Transaction<'_>,
    message_id: i64,
    session: &SessionKey,
    kept: i32,
    outputs: Vec<NewOutput>,
    answered: bool,
) -> Result<Vec<PendingOutput>, StoreError> {
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO outputs
                 (message_id, endpoint, session_id, webhook_id, body, created_at, status,
                  finished_at)
             VALUES ($1, $2, $3, $4, $5, {NOW_MS},
                     CASE WHEN $6 THEN 'delivered' ELSE 'pending' END,
                     CASE WHEN $6 THEN {NOW_MS} END)
             RETURNING id"
        ))
        .await?;
    let mut stored = Vec::with_capacity(outputs.len());
    for output in outputs {
        if i64::from(output.position) < i64::from(kept) {
            continue;
        }
        let id: i64 = tx
            .query_one(
                &insert,
                &[
                    &message_id,
                    &session.endpoint,
                    &session.session_id,
                    &output.webhook_id,
                    &output.body,
                    &answered,
                ],
            )
            .await?
            .get(0);
        stored.push(PendingOutput {
            id,
            session: session.clone(),
            webhook_id: output.webhook_id,
            body: output.body,
            attempts: 0,
            next_attempt_at: None,
            origin: Some(output.origin),
        });
    }
    if !stored.is_empty() && !answered {
        // The session's row is held (see `hold`).
        let count = i32::try_from(stored.len()).unwrap_or(i32::MAX);
        tx.execute(
            &tx.prepare_cached(
                "UPDATE sessions SET undelivered = undelivered + $3
             WHERE endpoint = $1 AND session_id = $2",
            )
            .await?,
            &[&session.endpoint, &session.session_id, &count],
        )
        .await?;
    }
    Ok(stored)
}
