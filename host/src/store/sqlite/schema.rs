//! The schema: the `.sql` files in `migrations/`, applied in order, one
//! transaction each; `PRAGMA user_version` counts the steps applied to a
//! database, and a database from a newer flowhost is refused.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// The schema's steps, in order.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_next_attempt_at.sql"),
    include_str!("migrations/0003_outputs_kept.sql"),
    include_str!("migrations/0004_dead_letters.sql"),
    include_str!("migrations/0005_trace_parent.sql"),
    include_str!("migrations/0006_idempotency_keys.sql"),
    include_str!("migrations/0007_message_kind.sql"),
    include_str!("migrations/0008_session_user.sql"),
    include_str!("migrations/0009_outputs_message.sql"),
];

/// The first step alone: a database as the first flowhost made it.
#[cfg(test)]
pub(super) const FIRST: &str = MIGRATIONS[0];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Open(format!(
            "the database has schema version {applied}, newer than this flowhost ({})",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", step as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
