//! The schema: the `.sql` files in `migrations/`, applied in order, all in
//! one transaction; the `flowhost_schema` table lists the steps applied.
//!
//! Hosts of a deployment start together and may differ in version (a
//! rolling deploy). The migration runs under a transaction-scoped advisory
//! lock, so one host at a time brings the schema up to date and the others
//! find it done; a host older than the schema refuses to start, since it
//! would not know what the newer steps mean.

use deadpool_postgres::Object;

use crate::store::StoreError;

/// The schema's steps, in order.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_credentials.sql"),
    include_str!("migrations/0002_inbox.sql"),
    include_str!("migrations/0003_admin.sql"),
    include_str!("migrations/0004_hosts.sql"),
    include_str!("migrations/0005_dead_letters.sql"),
    include_str!("migrations/0006_trace_parent.sql"),
    include_str!("migrations/0007_idempotency_keys.sql"),
    include_str!("migrations/0008_message_kind.sql"),
    include_str!("migrations/0009_session_user.sql"),
];

/// The advisory lock that migrations take: "flowhost" in ASCII.
const MIGRATION_LOCK: i64 = 0x666c_6f77_686f_7374;

pub(super) async fn migrate(conn: &mut Object) -> Result<(), StoreError> {
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS flowhost_schema (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: i32 = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM flowhost_schema", &[])
        .await?
        .get(0);
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Open(format!(
            "the database has schema version {applied}, newer than this flowhost knows ({}): \
             another host runs a newer flowhost; upgrade this one",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(step + 1).expect("fewer steps than i32::MAX");
        tx.execute(
            "INSERT INTO flowhost_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL schema step applied");
    }
    tx.commit().await?;
    Ok(())
}
