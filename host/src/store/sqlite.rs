//! The [`Store`] in one SQLite database, `<data_dir>/flowhost.db`.
//!
//! **Durability.** The database runs in WAL mode with `synchronous = FULL`:
//! a commit returns only once it is fsynced, so a 202 survives a crash or a
//! power cut.
//!
//! **Group commit.** Every write goes to one writer thread. It takes all the
//! writes waiting for it, runs each in its own savepoint inside one
//! transaction, commits once (one fsync for the whole group), and only then
//! answers each caller. Under load many writes share an fsync; when idle a
//! write commits alone, at once. A write that fails rolls back its own
//! savepoint and leaves the others of its group alone.
//!
//! **Reads** use a small pool of connections on blocking threads; WAL lets
//! them run while the writer writes.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::profile_merge;
use super::{
    ApiKeyInfo, Attempt, AttemptOutcome, AttemptRecord, CommittedTurn, DisabledEndpoint,
    InboxMessage, NewApiKey, OnAccepted, OutputQuery, OutputRecord, OutputStatus, PendingOutput,
    Queued, SessionKey, SessionState, Store, StoreError, TurnOutcome, TurnRecord, now_ms,
};
use crate::units::ByteSize;

/// The most writes committed together.
const MAX_GROUP: usize = 512;

/// Reads run on blocking threads at once ([`SqliteStore::read`]: listings
/// and scans), each on its own connection. Point reads run on the async
/// worker threads, at most one per thread, so together these bound the
/// reader connections.
const MAX_READS: usize = 8;

/// Whether a key hash is an active key of an endpoint.
const ACTIVE_KEY: &str =
    "SELECT 1 FROM api_keys WHERE hash = ? AND endpoint = ? AND revoked_at IS NULL";
/// How precisely a context's or profile's `updated_at` tracks its last use
/// when a turn does not change it: a day, which is plenty for a retention
/// of weeks, and spares most turns a write.
const USE_PRECISION_MS: i64 = 86_400_000;

/// The schema, applied in order; `PRAGMA user_version` counts the steps
/// applied to a database.
const MIGRATIONS: &[&str] = &[
    r#"
    -- The inbox: every accepted message, until and after it ran.
    CREATE TABLE messages (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        -- Random ids are not indexed: an insert into an index on random keys
        -- dirties a random page, and every dirty page is a WAL frame to
        -- write. Nothing looks messages or outputs up by them.
        trace_id     TEXT NOT NULL,
        endpoint     TEXT NOT NULL,
        session_id   TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        text         TEXT,
        data         TEXT,
        received_at  INTEGER NOT NULL,
        status       TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'done', 'failed')),
        flow         TEXT,
        flow_version TEXT,
        error        TEXT,
        finished_at  INTEGER
    );
    CREATE INDEX messages_pending ON messages (id) WHERE status = 'pending';

    CREATE TABLE sessions (
        endpoint   TEXT NOT NULL,
        session_id TEXT NOT NULL,
        context    TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (endpoint, session_id)
    ) WITHOUT ROWID;

    CREATE TABLE profiles (
        endpoint   TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        profile    TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (endpoint, user_id)
    ) WITHOUT ROWID;

    -- The outbox: every output, until and after it was delivered.
    CREATE TABLE outputs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id   INTEGER NOT NULL REFERENCES messages (id),
        endpoint     TEXT NOT NULL,
        session_id   TEXT NOT NULL,
        webhook_id   TEXT NOT NULL,
        body         TEXT NOT NULL,
        status       TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        created_at   INTEGER NOT NULL,
        finished_at  INTEGER
    );
    CREATE INDEX outputs_pending ON outputs (id) WHERE status = 'pending';
    CREATE INDEX outputs_endpoint ON outputs (endpoint, id);

    CREATE TABLE delivery_attempts (
        output_id   INTEGER NOT NULL REFERENCES outputs (id),
        started_at  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status      INTEGER,
        error       TEXT
    );
    CREATE INDEX delivery_attempts_output ON delivery_attempts (output_id);

    CREATE TABLE endpoints (
        name       TEXT PRIMARY KEY,
        url_token  TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );

    CREATE TABLE api_keys (
        id         TEXT PRIMARY KEY,
        endpoint   TEXT NOT NULL,
        name       TEXT,
        prefix     TEXT NOT NULL,
        hash       BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE INDEX api_keys_endpoint ON api_keys (endpoint);

    -- Endpoints whose receiver answered 410 Gone: delivery stops until an
    -- operator resumes it.
    CREATE TABLE disabled_endpoints (
        endpoint TEXT PRIMARY KEY,
        reason   TEXT NOT NULL,
        since    INTEGER NOT NULL
    );
"#,
    r#"
    -- When a retried output is next due, in milliseconds since the Unix
    -- epoch (NULL: at once), so that a restart keeps the retry schedule
    -- instead of retrying every output at once.
    ALTER TABLE outputs ADD COLUMN next_attempt_at INTEGER;
"#,
];

/// A write for the writer thread. It runs inside a savepoint and says
/// whether to keep it, and what to do once the group's commit is known.
type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(Result<(), CommitError>) + Send>;

/// Why a group's commit failed, for each of its writers: SQLite's error
/// code (so that a full disk can be told from a bug) and its message.
#[derive(Debug, Clone)]
struct CommitError {
    code: Option<rusqlite::ffi::Error>,
    message: String,
}

/// A [`Store`] in a SQLite database.
pub struct SqliteStore {
    writes: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    /// Turns for [`read`](Self::read); see [`MAX_READS`].
    reads: tokio::sync::Semaphore,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/flowhost.db` and brings its
    /// schema up to date; every commit is fsynced.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(data_dir, true)
    }

    /// Like [`open`](Self::open); with `fsync` false, commits are not
    /// fsynced: they survive a crash of flowhost, not of the machine.
    pub fn open_with(data_dir: &Path, fsync: bool) -> Result<SqliteStore, StoreError> {
        let io_error =
            |path: &Path, e: std::io::Error| StoreError::Open(format!("{}: {e}", path.display()));
        crate::private::create_dir(data_dir).map_err(|e| io_error(data_dir, e))?;
        let path = data_dir.join("flowhost.db");
        // SQLite creates the WAL and shared-memory files with the database
        // file's permissions, so a private database keeps them private; one
        // made by an older flowhost (under the umask) is made private here.
        crate::private::file_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        for suffix in ["", "-wal", "-shm"] {
            let file = data_dir.join(format!("flowhost.db{suffix}"));
            crate::private::restrict_file(&file).map_err(|e| io_error(&file, e))?;
        }
        let mut conn = open_connection(&path)?;
        if !fsync {
            conn.pragma_update(None, "synchronous", "OFF")?;
        }
        migrate(&mut conn)?;

        let (sender, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("flowhost-store".into())
            .spawn(move || write_loop(conn, receiver))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(SqliteStore {
            writes: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(ReaderPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            reads: tokio::sync::Semaphore::new(MAX_READS),
        })
    }

    /// Stops taking writes, waits for the writes already taken to commit,
    /// and closes the writer. Later writes fail with [`StoreError::Closed`].
    pub fn close(&self) {
        drop(self.writes.lock().unwrap().take());
        if let Some(writer) = self.writer.lock().unwrap().take() {
            let _ = writer.join();
        }
    }

    fn submit(&self, job: WriteJob) -> Result<(), StoreError> {
        let writes = self.writes.lock().unwrap();
        let sender = writes.as_ref().ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)
    }

    /// Runs `write` on the writer inside a group's transaction; returns its
    /// value once the group has committed.
    async fn write<R, F>(&self, write: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_then(write, |value| value).await
    }

    /// Like [`write`](Self::write), and once the group has committed, calls
    /// `then` with the value, on the writer, in commit order, before the
    /// caller hears of it; returns what `then` returns.
    async fn write_then<R, T, F, C>(&self, write: F, then: C) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        C: FnOnce(R) -> T + Send + 'static,
        R: Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(move |conn| match write(conn) {
            Ok(value) => (
                true,
                Box::new(move |committed: Result<(), CommitError>| {
                    let result = committed.map(|()| then(value)).map_err(commit_error);
                    let _ = reply.send(result);
                }) as Finish,
            ),
            Err(e) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(StoreError::Database(e)));
                }),
            ),
        }))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `read` on a pooled connection on a blocking thread: for reads
    /// that may take a while (listings, scans).
    async fn read<R, F>(&self, read: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let _turn = self.reads.acquire().await.map_err(|_| StoreError::Closed)?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs a point read (rows by their key) on the calling thread. It takes
    /// a few microseconds, a fraction of the cost of handing it to a
    /// blocking thread and back, and in WAL mode a read never waits for the
    /// writer.
    fn point_read<R>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        self.readers.with(read)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_error(error: CommitError) -> StoreError {
    StoreError::Database(match error.code {
        Some(code) => rusqlite::Error::SqliteFailure(code, Some(error.message)),
        None => rusqlite::Error::ToSqlConversionFailure(error.message.into()),
    })
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is fsynced before it returns, in WAL mode too.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 32 MiB of page cache (negative: KiB), so that the pages the writer
    // touches over and over (the ends of the tables and indexes) stay in
    // memory.
    conn.pragma_update(None, "cache_size", -32768)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

/// The writer thread: takes every waiting write, commits them as one group.
fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut finishes = Vec::with_capacity(group.len());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for job in group.drain(..) {
                let savepoint = tx.savepoint()?;
                let (keep, finish) = job(&savepoint);
                if keep {
                    savepoint.commit()?;
                } else {
                    // Dropping an uncommitted savepoint rolls it back.
                    drop(savepoint);
                }
                finishes.push(finish);
            }
            tx.commit()
        })();
        let committed = committed.map_err(|e| {
            tracing::error!(error = %e, "store commit failed");
            CommitError {
                code: e.sqlite_error().copied(),
                message: e.to_string(),
            }
        });
        // Jobs that never ran (the transaction failed to start) are answered
        // by dropping them: their callers see the store as closed for this
        // write, and retry.
        drop(group);
        for finish in finishes {
            finish(committed.clone());
        }
    }
}

/// Read connections, opened on demand and reused.
struct ReaderPool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < 2 * MAX_READS {
            idle.push(conn);
        }
    }

    fn with<R>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let conn = self.take()?;
        let result = read(&conn);
        self.give_back(conn);
        Ok(result?)
    }
}

fn session_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionKey> {
    Ok(SessionKey {
        endpoint: row.get("endpoint")?,
        session_id: row.get("session_id")?,
    })
}

fn inbox_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<InboxMessage> {
    Ok(InboxMessage {
        id: row.get("id")?,
        session: session_key(row)?,
        user_id: row.get("user_id")?,
        text: row.get("text")?,
        data: row.get("data")?,
        trace_id: row.get("trace_id")?,
        received_at: row.get("received_at")?,
    })
}

fn pending_output(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingOutput> {
    Ok(PendingOutput {
        id: row.get("id")?,
        session: session_key(row)?,
        webhook_id: row.get("webhook_id")?,
        body: row.get("body")?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
    })
}

fn queued_output(row: &rusqlite::Row<'_>) -> rusqlite::Result<Queued> {
    Ok(Queued {
        id: row.get("id")?,
        session: session_key(row)?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
    })
}

fn api_key_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: row.get("id")?,
        endpoint: row.get("endpoint")?,
        name: row.get("name")?,
        prefix: row.get("prefix")?,
        created_at: row.get("created_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn accept(
        &self,
        mut message: InboxMessage,
        on_accepted: OnAccepted,
    ) -> Result<(), StoreError> {
        self.write_then(
            move |conn| {
                message.id = conn
                    .prepare_cached(
                        "INSERT INTO messages
                            (trace_id, endpoint, session_id, user_id, text, data, received_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )?
                    .insert(params![
                        message.trace_id,
                        message.session.endpoint,
                        message.session.session_id,
                        message.user_id,
                        message.text,
                        message.data,
                        message.received_at,
                    ])?;
                Ok(message)
            },
            on_accepted,
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

    async fn session_state(
        &self,
        session: &SessionKey,
        user_id: &str,
    ) -> Result<SessionState, StoreError> {
        self.point_read(|conn| {
            let context = conn
                .prepare_cached(
                    "SELECT context FROM sessions WHERE endpoint = ? AND session_id = ?",
                )?
                .query_row(params![session.endpoint, session.session_id], |r| r.get(0))
                .optional()?;
            let profile = conn
                .prepare_cached("SELECT profile FROM profiles WHERE endpoint = ? AND user_id = ?")?
                .query_row(params![session.endpoint, user_id], |r| r.get(0))
                .optional()?;
            Ok(SessionState {
                context: context.unwrap_or_else(|| "{}".to_owned()),
                profile: profile.unwrap_or_else(|| "{}".to_owned()),
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
                    .prepare_cached("SELECT profile FROM profiles WHERE endpoint = ? AND user_id = ?")?
                    .query_row(params![session.endpoint, turn.user_id], |r| r.get(0))
                    .optional()?;
                let merged = profile_merge::merge(
                    current.as_deref().unwrap_or("{}"),
                    &change.before,
                    &change.after,
                );
                if merged.len() as u64 > change.max_size {
                    outcome = TurnOutcome::Failed {
                        reason: format!(
                            "profile size limit {} exceeded after merging concurrent changes \
                             ({} bytes): nothing of the message was kept",
                            ByteSize(change.max_size),
                            merged.len()
                        ),
                    };
                } else {
                    merged_profile = Some(merged);
                }
            }
            let (status, error) = match &outcome {
                TurnOutcome::Completed { .. } => ("done", None),
                TurnOutcome::Failed { reason } => ("failed", Some(reason.as_str())),
            };
            let finished = conn
                .prepare_cached(
                    "UPDATE messages
                     SET status = ?, flow = ?, flow_version = ?, error = ?, finished_at = ?
                     WHERE id = ? AND status = 'pending'",
                )?
                .execute(params![
                    status,
                    turn.flow,
                    turn.flow_version,
                    error,
                    now,
                    turn.message_id
                ])?;
            let (context, outputs) = match outcome {
                TurnOutcome::Completed {
                    context, outputs, ..
                } => (context, outputs),
                TurnOutcome::Failed { reason } => return Ok(CommittedTurn::Failed(reason)),
            };
            if finished == 0 {
                // Already recorded (a retry after an unclear commit): keep the
                // first record and send nothing twice.
                return Ok(CommittedTurn::Done(Vec::new()));
            }
            match context {
                Some(context) => conn
                    .prepare_cached(
                        "INSERT INTO sessions (endpoint, session_id, context, updated_at)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (endpoint, session_id)
                         DO UPDATE SET context = ?3, updated_at = ?4",
                    )?
                    .execute(params![session.endpoint, session.session_id, context, now])?,
                // Used but unchanged: `updated_at` says when it was last used,
                // for retention, to within a day (so that a turn that changes
                // nothing rarely writes).
                None => conn
                    .prepare_cached(
                        "UPDATE sessions SET updated_at = ?3
                         WHERE endpoint = ?1 AND session_id = ?2 AND updated_at < ?3 - ?4",
                    )?
                    .execute(params![session.endpoint, session.session_id, now, USE_PRECISION_MS])?,
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
                    .execute(params![session.endpoint, turn.user_id, now, USE_PRECISION_MS])?,
            };
            let mut insert = conn.prepare_cached(
                "INSERT INTO outputs (message_id, endpoint, session_id, webhook_id, body, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?;
            outputs
                .into_iter()
                .map(|output| {
                    let id = insert.insert(params![
                        turn.message_id,
                        session.endpoint,
                        session.session_id,
                        output.webhook_id,
                        output.body,
                        now
                    ])?;
                    Ok(PendingOutput {
                        id,
                        session: session.clone(),
                        webhook_id: output.webhook_id,
                        body: output.body,
                        attempts: 0,
                        next_attempt_at: None,
                    })
                })
                .collect::<rusqlite::Result<_>>()
                .map(CommittedTurn::Done)
        })
        .await
    }

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
            conn.prepare_cached("SELECT * FROM outputs WHERE id = ? AND status = 'pending'")?
                .query_row([id], pending_output)
                .optional()
        })
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO delivery_attempts (output_id, started_at, duration_ms, status, error)
                 VALUES (?, ?, ?, ?, ?)",
            )?
            .execute(params![
                attempt.output_id,
                attempt.started_at,
                attempt.duration_ms,
                attempt.status,
                attempt.error
            ])?;
            let (status, finished_at) = match attempt.outcome {
                AttemptOutcome::Delivered => ("delivered", Some(now_ms())),
                AttemptOutcome::Retrying => ("pending", None),
                AttemptOutcome::Dead => ("dead", Some(now_ms())),
            };
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
        let status = query.status.map(OutputStatus::as_str);
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
                    status,
                    query.before_id,
                    query.limit as i64,
                    query.bodies
                ],
                |row| {
                    let status: String = row.get("status")?;
                    Ok(OutputRecord {
                        id: row.get("id")?,
                        session_id: row.get("session_id")?,
                        webhook_id: row.get("webhook_id")?,
                        status: match status.as_str() {
                            "delivered" => OutputStatus::Delivered,
                            "dead" => OutputStatus::Dead,
                            _ => OutputStatus::Pending,
                        },
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
                "SELECT * FROM outputs WHERE id = ? AND endpoint = ?",
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

    async fn prune(&self, before: i64, idle_before: i64) -> Result<usize, StoreError> {
        // Rows are numbered in time order, so the rows made before `before`
        // are those below the first id made after it: found by walking from
        // the oldest row, which visits only rows about to go. No index on
        // time is needed, and none slows every write down.
        self.write(move |conn| {
            let first_kept = |table: &str, column: &str| -> rusqlite::Result<i64> {
                conn.query_row(
                    &format!(
                        "SELECT COALESCE((SELECT id FROM {table} WHERE {column} >= ?1 ORDER BY id LIMIT 1),
                                         (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}))"
                    ),
                    [before],
                    |r| r.get(0),
                )
            };
            let outputs_below = first_kept("outputs", "created_at")?;
            let attempts = conn.execute(
                "DELETE FROM delivery_attempts WHERE output_id IN
                    (SELECT id FROM outputs WHERE id < ?1 AND status = 'delivered' AND finished_at < ?2)",
                params![outputs_below, before],
            )?;
            let outputs = conn.execute(
                "DELETE FROM outputs WHERE id < ?1 AND status = 'delivered' AND finished_at < ?2",
                params![outputs_below, before],
            )?;
            let messages_below = first_kept("messages", "received_at")?;
            let messages = conn.execute(
                "DELETE FROM messages WHERE id < ?1 AND status != 'pending' AND finished_at < ?2
                 AND NOT EXISTS (SELECT 1 FROM outputs WHERE outputs.message_id = messages.id)",
                params![messages_below, before],
            )?;
            // Contexts and profiles have no order to walk, and an index on
            // their time would cost every turn a write: this scans them, once
            // an hour.
            let sessions = conn.execute("DELETE FROM sessions WHERE updated_at < ?", [idle_before])?;
            let profiles = conn.execute("DELETE FROM profiles WHERE updated_at < ?", [idle_before])?;
            Ok(attempts + outputs + messages + sessions + profiles)
        })
        .await
    }

    async fn url_token(&self, endpoint: &str, new_token: String) -> Result<String, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO endpoints (name, url_token, created_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO NOTHING",
                params![endpoint, new_token, now_ms()],
            )?;
            conn.query_row(
                "SELECT url_token FROM endpoints WHERE name = ?",
                [&endpoint],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn replace_url_token(&self, endpoint: &str, new_token: String) -> Result<(), StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO endpoints (name, url_token, created_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET url_token = excluded.url_token",
                params![endpoint, new_token, now_ms()],
            )
            .map(drop)
        })
        .await
    }

    async fn add_api_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (id, endpoint, name, prefix, hash, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    key.info.id,
                    key.info.endpoint,
                    key.info.name,
                    key.info.prefix,
                    &key.hash[..],
                    key.info.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn api_keys(&self, endpoint: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let endpoint = endpoint.map(str::to_owned);
        self.read(move |conn| {
            conn.prepare(
                "SELECT * FROM api_keys WHERE ?1 IS NULL OR endpoint = ?1
                 ORDER BY endpoint, created_at",
            )?
            .query_map([endpoint], api_key_info)?
            .collect()
        })
        .await
    }

    async fn revoke_api_key(&self, endpoint: &str, id_or_name: &str) -> Result<bool, StoreError> {
        let (endpoint, id_or_name) = (endpoint.to_owned(), id_or_name.to_owned());
        self.write(move |conn| {
            let revoked = conn.execute(
                "UPDATE api_keys SET revoked_at = ?
                 WHERE endpoint = ? AND (id = ?3 OR name = ?3) AND revoked_at IS NULL",
                params![now_ms(), endpoint, id_or_name],
            )?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn is_active_key(&self, endpoint: &str, hash: [u8; 32]) -> Result<bool, StoreError> {
        // `hash` is UNIQUE, so this is one search of its index, the same
        // cost with one key or a million. The search runs on the SHA-256
        // of what the caller sent, so its timing tells nothing usable: a
        // hash prefix that matches gives no way to a key that has it.
        self.point_read(|conn| {
            conn.prepare_cached(ACTIVE_KEY)?
                .exists(params![&hash[..], endpoint])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewOutput, ProfileChange};

    fn message(session: &str, text: &str) -> InboxMessage {
        InboxMessage {
            id: 0,
            session: SessionKey {
                endpoint: "support".into(),
                session_id: session.into(),
            },
            user_id: "u1".into(),
            text: Some(text.into()),
            data: None,
            trace_id: format!("endpoint-httpIncomingMessage-{}", uuid::Uuid::new_v4()),
            received_at: now_ms(),
        }
    }

    /// Every unfinished message, read a page at a time as the inbox does.
    async fn unfinished(store: &SqliteStore) -> Vec<InboxMessage> {
        let mut all = Vec::new();
        let mut after_id = 0;
        loop {
            let page = store.unfinished_messages(after_id, 2).await.unwrap();
            let Some(last) = page.last() else {
                return all;
            };
            after_id = last.id;
            for queued in page {
                all.push(store.unfinished_message(queued.id).await.unwrap().unwrap());
            }
        }
    }

    /// Every pending output (of one endpoint, or all), read a page at a
    /// time as delivery does.
    async fn pending(store: &SqliteStore, endpoint: Option<&str>) -> Vec<PendingOutput> {
        let mut all = Vec::new();
        let mut after_id = 0;
        loop {
            let page = store.pending_outputs(endpoint, after_id, 2).await.unwrap();
            let Some(last) = page.last() else {
                return all;
            };
            after_id = last.id;
            for queued in page {
                let output = store.pending_output(queued.id).await.unwrap().unwrap();
                assert_eq!(Queued::from(&output), queued);
                all.push(output);
            }
        }
    }

    /// The newest 10 outputs of a status, or all, with their bodies.
    fn listing(status: Option<OutputStatus>) -> OutputQuery {
        OutputQuery {
            status,
            before_id: None,
            limit: 10,
            bodies: true,
        }
    }

    fn done(committed: CommittedTurn) -> Vec<PendingOutput> {
        match committed {
            CommittedTurn::Done(outputs) => outputs,
            CommittedTurn::Failed(reason) => panic!("the turn failed: {reason}"),
        }
    }

    async fn accept(store: &SqliteStore, message: InboxMessage) -> InboxMessage {
        let (tx, rx) = std::sync::mpsc::channel();
        store
            .accept(message, Box::new(move |m| tx.send(m).unwrap()))
            .await
            .unwrap();
        rx.recv().unwrap()
    }

    #[tokio::test]
    async fn a_turn_commits_state_and_outputs_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let first = accept(&store, message("s1", "hi")).await;
        let second = accept(&store, message("s1", "again")).await;
        assert!(first.id < second.id);
        assert_eq!(unfinished(&store).await, [first.clone(), second]);

        let outputs = store
            .complete_turn(TurnRecord {
                message_id: first.id,
                session: first.session.clone(),
                user_id: "u1".into(),
                flow: "echo".into(),
                flow_version: "abc".into(),
                outcome: TurnOutcome::Completed {
                    context: Some(r#"{"n":1}"#.into()),
                    profile: Some(ProfileChange {
                        before: "{}".into(),
                        after: r#"{"name":"Ada"}"#.into(),
                        max_size: 64 << 10,
                    }),
                    outputs: vec![NewOutput {
                        webhook_id: "msg_1".into(),
                        body: "{}".into(),
                    }],
                },
            })
            .await
            .unwrap();
        let outputs = done(outputs);
        assert_eq!(outputs.len(), 1);
        assert_eq!(unfinished(&store).await.len(), 1);
        assert_eq!(pending(&store, None).await, outputs);
        let state = store.session_state(&first.session, "u1").await.unwrap();
        assert_eq!(state.context, r#"{"n":1}"#);
        assert_eq!(state.profile, r#"{"name":"Ada"}"#);

        store
            .record_attempt(Attempt {
                output_id: outputs[0].id,
                started_at: now_ms(),
                duration_ms: 1,
                status: Some(200),
                error: None,
                outcome: AttemptOutcome::Delivered,
                next_attempt_at: None,
            })
            .await
            .unwrap();
        assert!(pending(&store, None).await.is_empty());
        let records = store.outputs("support", listing(None)).await.unwrap();
        assert_eq!(records[0].status, OutputStatus::Delivered);
        assert_eq!(
            store.attempts(outputs[0].id).await.unwrap()[0].status,
            Some(200)
        );

        // Replay: a delivered output can be queued again, with its id.
        let again = store
            .requeue_output("support", outputs[0].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.webhook_id, "msg_1");
        assert_eq!(pending(&store, Some("support")).await, [again]);
        assert!(
            store
                .requeue_output("other", outputs[0].id)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn dead_letters_are_kept_and_requeued_and_old_records_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let m = accept(&store, message("s1", "hi")).await;
        let outputs = store
            .complete_turn(TurnRecord {
                message_id: m.id,
                session: m.session.clone(),
                user_id: "u1".into(),
                flow: "echo".into(),
                flow_version: "abc".into(),
                outcome: TurnOutcome::Completed {
                    context: None,
                    profile: None,
                    outputs: (0..2)
                        .map(|n| NewOutput {
                            webhook_id: format!("msg_{n}"),
                            body: "{}".into(),
                        })
                        .collect(),
                },
            })
            .await
            .unwrap();
        let outputs = done(outputs);
        for (output, outcome) in outputs
            .iter()
            .zip([AttemptOutcome::Dead, AttemptOutcome::Delivered])
        {
            store
                .record_attempt(Attempt {
                    output_id: output.id,
                    started_at: now_ms(),
                    duration_ms: 3,
                    status: Some(500),
                    error: Some("the receiver answered 500".into()),
                    outcome,
                    next_attempt_at: None,
                })
                .await
                .unwrap();
        }
        let dead = store
            .outputs("support", listing(Some(OutputStatus::Dead)))
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("the receiver answered 500")
        );

        // Pruning keeps dead letters and recent records.
        assert_eq!(store.prune(now_ms() - 60_000, 0).await.unwrap(), 0);
        assert_eq!(
            store.prune(now_ms() + 60_000, 0).await.unwrap(),
            2,
            "the delivered output and its attempt"
        );
        assert_eq!(
            store.outputs("support", listing(None)).await.unwrap().len(),
            1
        );

        let requeued = store.requeue_dead("support", 0, 500).await.unwrap();
        assert_eq!(requeued.len(), 1);
        assert_eq!(requeued[0].id, dead[0].id);
        assert!(
            store
                .outputs("support", listing(Some(OutputStatus::Dead)))
                .await
                .unwrap()
                .is_empty()
        );

        store.disable_endpoint("support", "410 Gone").await.unwrap();
        assert_eq!(
            store.disabled_endpoints().await.unwrap()[0].reason,
            "410 Gone"
        );
        assert!(store.enable_endpoint("support").await.unwrap());
        assert!(!store.enable_endpoint("support").await.unwrap());
    }

    #[tokio::test]
    async fn a_failed_turn_changes_nothing_but_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let m = accept(&store, message("s1", "boom")).await;
        let outputs = store
            .complete_turn(TurnRecord {
                message_id: m.id,
                session: m.session.clone(),
                user_id: "u1".into(),
                flow: "echo".into(),
                flow_version: "abc".into(),
                outcome: TurnOutcome::Failed {
                    reason: "wasm trap".into(),
                },
            })
            .await
            .unwrap();
        assert_eq!(outputs, CommittedTurn::Failed("wasm trap".into()));
        assert!(unfinished(&store).await.is_empty());
        let state = store.session_state(&m.session, "u1").await.unwrap();
        assert_eq!(state.context, "{}");
    }

    #[tokio::test]
    async fn everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let m = {
            let store = SqliteStore::open(dir.path()).unwrap();
            let token = store.url_token("support", "t1".repeat(10)).await.unwrap();
            assert_eq!(token, "t1".repeat(10));
            accept(&store, message("s1", "hi")).await
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(unfinished(&store).await, [m]);
        let token = store.url_token("support", "other".into()).await.unwrap();
        assert_eq!(token, "t1".repeat(10), "the first token is kept");
    }

    #[tokio::test]
    async fn a_replaced_url_token_is_the_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.url_token("support", "t1".repeat(10)).await.unwrap();
        store
            .replace_url_token("support", "t2".repeat(10))
            .await
            .unwrap();
        let token = store.url_token("support", "other".into()).await.unwrap();
        assert_eq!(token, "t2".repeat(10));
    }

    #[tokio::test]
    async fn a_merged_profile_past_the_limit_fails_the_turn_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        // Two sessions of one user read the empty profile, each sets a key
        // of 600 bytes: each fits 1 KiB, both together do not.
        let turn = |m: &InboxMessage, key: &str| TurnRecord {
            message_id: m.id,
            session: m.session.clone(),
            user_id: "u1".into(),
            flow: "greeter".into(),
            flow_version: "abc".into(),
            outcome: TurnOutcome::Completed {
                context: Some(r#"{"seen":true}"#.into()),
                profile: Some(ProfileChange {
                    before: "{}".into(),
                    after: serde_json::json!({ key: "x".repeat(600) }).to_string(),
                    max_size: 1024,
                }),
                outputs: vec![NewOutput {
                    webhook_id: format!("msg_{key}"),
                    body: "{}".into(),
                }],
            },
        };
        let first = accept(&store, message("s1", "hi")).await;
        let second = accept(&store, message("s2", "hi")).await;
        let kept = done(store.complete_turn(turn(&first, "a")).await.unwrap());
        assert_eq!(kept.len(), 1);
        let refused = store.complete_turn(turn(&second, "b")).await.unwrap();
        let CommittedTurn::Failed(reason) = refused else {
            panic!("the merge past the limit was kept: {refused:?}");
        };
        assert!(
            reason.contains("profile size limit 1 KiB exceeded after merging concurrent changes"),
            "{reason}"
        );

        let profile = store.session_state(&second.session, "u1").await.unwrap();
        assert_eq!(
            profile.profile,
            turn(&first, "a").profile_after(),
            "only the first turn's profile"
        );
        assert_eq!(
            profile.context, "{}",
            "the failed turn's context is not kept"
        );
        assert_eq!(pending(&store, None).await, kept, "nor its outputs");
        assert!(unfinished(&store).await.is_empty());
    }

    #[tokio::test]
    async fn contexts_and_profiles_unused_for_the_retention_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let day = 86_400_000;
        let turn = |m: &InboxMessage, user: &str, changes: bool| TurnRecord {
            message_id: m.id,
            session: m.session.clone(),
            user_id: user.into(),
            flow: "greeter".into(),
            flow_version: "abc".into(),
            outcome: TurnOutcome::Completed {
                context: changes.then(|| r#"{"n":1}"#.into()),
                profile: changes.then(|| ProfileChange {
                    before: "{}".into(),
                    after: format!(r#"{{"name":"{user}"}}"#),
                    max_size: 1024,
                }),
                outputs: Vec::new(),
            },
        };
        for (session, user) in [("old", "u-old"), ("used", "u-used"), ("new", "u-new")] {
            let m = accept(&store, message(session, "hi")).await;
            done(store.complete_turn(turn(&m, user, true)).await.unwrap());
        }
        // "old" and "used" were last changed 40 days ago; "used" has been
        // used since (a turn that changed nothing).
        store
            .write(move |conn| {
                conn.execute(
                    "UPDATE sessions SET updated_at = updated_at - 40 * ?1 WHERE session_id != 'new'",
                    [day],
                )?;
                conn.execute(
                    "UPDATE profiles SET updated_at = updated_at - 40 * ?1 WHERE user_id != 'u-new'",
                    [day],
                )
            })
            .await
            .unwrap();
        let m = accept(&store, message("used", "again")).await;
        done(
            store
                .complete_turn(turn(&m, "u-used", false))
                .await
                .unwrap(),
        );

        let pruned = store.prune(0, now_ms() - 30 * day).await.unwrap();
        assert_eq!(
            pruned, 2,
            "the old session's context and its user's profile"
        );
        let store = &store;
        let state = |session: &str, user: &str| {
            let key = SessionKey {
                endpoint: "support".into(),
                session_id: session.into(),
            };
            let user = user.to_owned();
            async move { store.session_state(&key, &user).await.unwrap() }
        };
        assert_eq!(
            state("old", "u-old").await,
            SessionState {
                context: "{}".into(),
                profile: "{}".into()
            }
        );
        assert_eq!(state("used", "u-used").await.context, r#"{"n":1}"#);
        assert_eq!(
            state("used", "u-used").await.profile,
            r#"{"name":"u-used"}"#
        );
        assert_eq!(state("new", "u-new").await.context, r#"{"n":1}"#);
    }

    #[tokio::test]
    async fn dead_letters_are_requeued_page_by_page_and_listed_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for n in 0..5 {
            let output = one_output(&store, &format!("s{n}")).await;
            let outcome = if n == 2 {
                AttemptOutcome::Delivered
            } else {
                AttemptOutcome::Dead
            };
            store
                .record_attempt(Attempt {
                    output_id: output.id,
                    started_at: now_ms(),
                    duration_ms: 1,
                    status: Some(500),
                    error: None,
                    outcome,
                    next_attempt_at: None,
                })
                .await
                .unwrap();
            ids.push(output.id);
        }

        // Listed newest first, two at a time, without bodies unless asked.
        let page = |before_id, bodies| OutputQuery {
            status: None,
            before_id,
            limit: 2,
            bodies,
        };
        let first = store.outputs("support", page(None, false)).await.unwrap();
        assert_eq!(
            first.iter().map(|o| o.id).collect::<Vec<_>>(),
            [ids[4], ids[3]]
        );
        assert!(first.iter().all(|o| o.body.is_none()));
        let next = store
            .outputs("support", page(Some(ids[3]), true))
            .await
            .unwrap();
        assert_eq!(
            next.iter().map(|o| o.id).collect::<Vec<_>>(),
            [ids[2], ids[1]]
        );
        assert_eq!(next[0].body.as_deref(), Some("{}"));

        // The four dead ones are requeued two at a time, oldest first.
        let requeued = store.requeue_dead("support", 0, 2).await.unwrap();
        assert_eq!(
            requeued.iter().map(|o| o.id).collect::<Vec<_>>(),
            [ids[0], ids[1]]
        );
        assert!(requeued.iter().all(|o| o.attempts == 0));
        let requeued = store.requeue_dead("support", ids[1], 2).await.unwrap();
        assert_eq!(
            requeued.iter().map(|o| o.id).collect::<Vec<_>>(),
            [ids[3], ids[4]]
        );
        assert!(
            store
                .requeue_dead("support", ids[4], 2)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(pending(&store, None).await.len(), 4);
    }

    impl TurnRecord {
        fn profile_after(&self) -> String {
            match &self.outcome {
                TurnOutcome::Completed {
                    profile: Some(change),
                    ..
                } => change.after.clone(),
                _ => unreachable!(),
            }
        }
    }

    /// One output of a completed turn of a new message of `session`.
    async fn one_output(store: &SqliteStore, session: &str) -> PendingOutput {
        let m = accept(store, message(session, "hi")).await;
        let outputs = store
            .complete_turn(TurnRecord {
                message_id: m.id,
                session: m.session.clone(),
                user_id: "u1".into(),
                flow: "echo".into(),
                flow_version: "abc".into(),
                outcome: TurnOutcome::Completed {
                    context: None,
                    profile: None,
                    outputs: vec![NewOutput {
                        webhook_id: format!("msg_{session}"),
                        body: "{}".into(),
                    }],
                },
            })
            .await
            .unwrap();
        done(outputs).pop().unwrap()
    }

    #[tokio::test]
    async fn a_retry_keeps_its_due_time_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let due = now_ms() + 600_000;
        let output = {
            let store = SqliteStore::open(dir.path()).unwrap();
            let output = one_output(&store, "s1").await;
            store
                .record_attempt(Attempt {
                    output_id: output.id,
                    started_at: now_ms(),
                    duration_ms: 2,
                    status: Some(500),
                    error: Some("the receiver answered 500".into()),
                    outcome: AttemptOutcome::Retrying,
                    next_attempt_at: Some(due),
                })
                .await
                .unwrap();
            output
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        let pending = pending(&store, None).await;
        assert_eq!(
            pending,
            [PendingOutput {
                attempts: 1,
                next_attempt_at: Some(due),
                ..output.clone()
            }]
        );
        assert_eq!(
            store.outputs("support", listing(None)).await.unwrap()[0].next_attempt_at,
            Some(due)
        );
        // Queued again by hand: due at once.
        let again = store.requeue_output("support", output.id).await.unwrap();
        assert_eq!(again.unwrap().next_attempt_at, None);
    }

    #[tokio::test]
    async fn a_database_of_the_first_schema_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut conn = Connection::open(dir.path().join("flowhost.db")).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.execute(
                "INSERT INTO messages (trace_id, endpoint, session_id, user_id, received_at, status)
                 VALUES ('t', 'support', 's1', 'u1', 1, 'done')",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO outputs (message_id, endpoint, session_id, webhook_id, body, attempts, created_at)
                 VALUES (1, 'support', 's1', 'msg_old', '{}', 2, 1)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let pending = pending(&store, None).await;
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].attempts, pending[0].next_attempt_at), (2, None));
        one_output(&store, "s2").await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_its_folder_are_private() {
        use crate::private::tests::{common_umask, mode};
        common_umask();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let store = SqliteStore::open(&dir).unwrap();
        accept(&store, message("s1", "hi")).await;
        assert_eq!(mode(&dir), 0o700);
        for file in ["flowhost.db", "flowhost.db-wal", "flowhost.db-shm"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        drop(store);

        // A database left readable by an older flowhost is made private.
        for file in ["flowhost.db", "flowhost.db-wal", "flowhost.db-shm"] {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(file);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let _store = SqliteStore::open(&dir).unwrap();
        assert_eq!(mode(&dir.join("flowhost.db")), 0o600);
    }

    #[tokio::test]
    async fn keys_are_listed_and_revoked_by_id_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        for (id, name) in [("k1", Some("ci")), ("k2", None)] {
            store
                .add_api_key(NewApiKey {
                    info: ApiKeyInfo {
                        id: id.into(),
                        endpoint: "support".into(),
                        name: name.map(Into::into),
                        prefix: "fhk_abc".into(),
                        created_at: now_ms(),
                        revoked_at: None,
                    },
                    hash: [id.as_bytes()[1]; 32],
                })
                .await
                .unwrap();
        }
        assert!(store.is_active_key("support", [b'1'; 32]).await.unwrap());
        assert!(store.is_active_key("support", [b'2'; 32]).await.unwrap());
        assert!(store.revoke_api_key("support", "ci").await.unwrap());
        assert!(!store.revoke_api_key("support", "ci").await.unwrap());
        assert!(!store.revoke_api_key("other", "k2").await.unwrap());
        assert!(!store.is_active_key("support", [b'1'; 32]).await.unwrap());
        assert!(store.is_active_key("support", [b'2'; 32]).await.unwrap());
        assert!(
            !store.is_active_key("other", [b'2'; 32]).await.unwrap(),
            "a key is good for its own endpoint only"
        );
        assert_eq!(store.api_keys(Some("support")).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_key_is_found_by_its_hash_among_thousands() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(dir.path(), false).unwrap();
        let mut secrets = Vec::new();
        for i in 0..2000 {
            let endpoint = if i % 2 == 0 { "support" } else { "sales" };
            let key = crate::keys::generate(endpoint, Some(format!("k{i}")));
            store.add_api_key(key.record).await.unwrap();
            secrets.push((endpoint, key.secret));
        }
        for (endpoint, secret) in secrets.iter().step_by(97) {
            let hash = crate::keys::hash(secret);
            assert!(store.is_active_key(endpoint, hash).await.unwrap());
            let other = if *endpoint == "support" {
                "sales"
            } else {
                "support"
            };
            assert!(!store.is_active_key(other, hash).await.unwrap());
        }
        let wrong = crate::keys::hash("fhk_wrong");
        assert!(!store.is_active_key("support", wrong).await.unwrap());

        // One search of the unique index on the hash, not a scan of the
        // endpoint's keys.
        let plan: Vec<String> = store
            .point_read(|conn| {
                conn.prepare(&format!("EXPLAIN QUERY PLAN {ACTIVE_KEY}"))?
                    .query_map(params![&wrong[..], "support"], |row| {
                        row.get::<_, String>(3)
                    })?
                    .collect()
            })
            .unwrap();
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(
            plan[0].contains("USING INDEX sqlite_autoindex_api_keys")
                && plan[0].contains("(hash=?)"),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn a_full_database_is_a_failure_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(dir.path(), false).unwrap();
        // Cap the database at its size: the next page it needs is past a
        // full disk, as SQLite sees it.
        store
            .write(|conn| {
                let pages: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
                conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            })
            .await
            .unwrap();
        let mut big = message("s1", "");
        big.text = Some("x".repeat(200_000));
        let error = store
            .accept(big, Box::new(|_| panic!("not accepted")))
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(store.unfinished_messages(0, 10).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_reads_take_turns_on_a_bounded_number_of_connections() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads: Vec<_> = (0..4 * MAX_READS)
            .map(|_| {
                let (store, running, most) =
                    (Arc::clone(&store), Arc::clone(&running), Arc::clone(&most));
                tokio::spawn(async move {
                    store
                        .read(move |conn| {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            // Long enough for the others to pile up.
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap(), 1);
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= MAX_READS, "{most} reads at once");
        assert!(store.readers.idle.lock().unwrap().len() <= MAX_READS);
    }
}
