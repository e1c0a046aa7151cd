//! The [`Store`] in one SQLite database, `<data_dir>/flowhost.db`: the
//! connection handling here, the writer in [`writer`], the schema in
//! `migrations/`, and each part of the store in a file of its own.
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

mod credentials;
mod messages;
mod outbox;
mod readers;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use self::readers::{MAX_READS, ReaderPool};
use self::writer::{CommitError, Finish, WriteJob};
use super::{EndpointBacklog, ErasedUser, SessionKey, Store, StoreError, now_ms};

/// A [`Store`] in a SQLite database.
pub struct SqliteStore {
    writes: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    /// Turns for [`read`](Self::read); see [`MAX_READS`].
    reads: tokio::sync::Semaphore,
    /// When a user was last erased (ms since the Unix epoch; 0: never).
    pub(super) last_erasure: std::sync::atomic::AtomicI64,
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
        schema::migrate(&mut conn)?;

        let (sender, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("flowhost-store".into())
            .spawn(move || writer::write_loop(conn, receiver))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(SqliteStore {
            writes: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(ReaderPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            reads: tokio::sync::Semaphore::new(MAX_READS),
            last_erasure: std::sync::atomic::AtomicI64::new(0),
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

    /// Moves the write-ahead log into the database and empties it: the log
    /// keeps pages as they were before a write (an erased user's among
    /// them) until then. Tried for a while if readers hold the log; a log
    /// still in use is left to SQLite's next checkpoint, and logged.
    async fn purge_wal(&self) {
        for _ in 0..50 {
            // On a connection of its own: the readers' are read-only, and
            // the writer's is always in a group's transaction.
            let path = self.readers.path.clone();
            let checkpoint = tokio::task::spawn_blocking(move || {
                let conn = open_connection(&path)?;
                let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })?;
                Ok::<_, StoreError>(busy)
            })
            .await
            .unwrap_or(Err(StoreError::Closed));
            match checkpoint {
                Ok(0) => return,
                Ok(_busy) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(error) => {
                    tracing::warn!(%error, "could not empty the write-ahead log");
                    return;
                }
            }
        }
        tracing::warn!(
            "the write-ahead log stayed in use; SQLite empties it at a later checkpoint"
        );
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

/// Whether SQLite's error `code` is likely to pass by itself.
pub(super) fn is_transient(code: rusqlite::ErrorCode) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        code,
        DiskFull | DatabaseBusy | DatabaseLocked | SystemIoFailure | OutOfMemory | CannotOpen
    )
}

fn commit_error(error: CommitError) -> StoreError {
    StoreError::Commit {
        transient: error.code.is_some_and(|code| is_transient(code.code)),
        message: error.message,
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is fsynced before it returns, in WAL mode too.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // What is deleted or overwritten is zeroed in the file, not only
    // unlinked, so that a user erased (or a context replaced) is gone from
    // the bytes on disk too. It costs a write of each page freed whole.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // 32 MiB of page cache (negative: KiB), so that the pages the writer
    // touches over and over (the ends of the tables and indexes) stay in
    // memory.
    conn.pragma_update(None, "cache_size", -32768)?;
    Ok(conn)
}

fn session_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionKey> {
    Ok(SessionKey {
        endpoint: row.get("endpoint")?,
        session_id: row.get("session_id")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
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
            let keys = conn.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= ?",
                [now_ms()],
            )?;
            Ok(attempts + outputs + messages + sessions + profiles + keys)
        })
        .await
    }

    async fn backlog(&self) -> Result<Vec<EndpointBacklog>, StoreError> {
        // Each part found through its partial index: what waits, not
        // everything kept.
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT endpoint, SUM(messages), SUM(pending), SUM(dead) FROM (
                     SELECT endpoint, 1 AS messages, 0 AS pending, 0 AS dead
                       FROM messages WHERE status = 'pending'
                     UNION ALL SELECT endpoint, 0, 1, 0 FROM outputs WHERE status = 'pending'
                     UNION ALL SELECT endpoint, 0, 0, 1 FROM outputs WHERE status = 'dead'
                 ) GROUP BY endpoint ORDER BY endpoint",
            )?
            .query_map([], |row| {
                let count = |column| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(row.get::<_, i64>(column)?).unwrap_or(0))
                };
                Ok(EndpointBacklog {
                    endpoint: row.get(0)?,
                    unfinished_messages: count(1)?,
                    pending_outputs: count(2)?,
                    dead_letters: count(3)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn erase_user(&self, endpoint: &str, user_id: &str) -> Result<ErasedUser, StoreError> {
        // Before the delete: a message queued before this is read again.
        self.last_erasure
            .fetch_max(now_ms(), std::sync::atomic::Ordering::SeqCst);
        let (endpoint, user) = (endpoint.to_owned(), user_id.to_owned());
        let erased = self
            .write(move |conn| {
                let run = |sql: &str| -> rusqlite::Result<u64> {
                    Ok(conn.prepare(sql)?.execute(params![endpoint, user])? as u64)
                };
                // In this order: what refers to a message goes before it.
                let sessions = run("DELETE FROM sessions WHERE endpoint = ?1 AND (user_id = ?2
                     OR session_id IN (SELECT session_id FROM messages
                                       WHERE endpoint = ?1 AND user_id = ?2))")?;
                run("DELETE FROM delivery_attempts WHERE output_id IN
                     (SELECT o.id FROM outputs o JOIN messages m ON m.id = o.message_id
                      WHERE m.endpoint = ?1 AND m.user_id = ?2)")?;
                let outputs = run("DELETE FROM outputs WHERE message_id IN
                     (SELECT id FROM messages WHERE endpoint = ?1 AND user_id = ?2)")?;
                run(
                    "DELETE FROM idempotency_keys WHERE endpoint = ?1 AND trace_id IN
                     (SELECT trace_id FROM messages WHERE endpoint = ?1 AND user_id = ?2)",
                )?;
                let messages = run("DELETE FROM messages WHERE endpoint = ?1 AND user_id = ?2")?;
                let profiles = run("DELETE FROM profiles WHERE endpoint = ?1 AND user_id = ?2")?;
                Ok(ErasedUser {
                    profiles,
                    sessions,
                    messages,
                    outputs,
                })
            })
            .await?;
        self.purge_wal().await;
        Ok(erased)
    }
}
