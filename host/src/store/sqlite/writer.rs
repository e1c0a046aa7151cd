//! The writer thread and its group commit.
//!
//! Every write goes to one thread. It takes all the writes waiting for it,
//! runs each in its own savepoint inside one transaction, commits once (one
//! fsync for the whole group), and only then answers each caller. Under
//! load many writes share an fsync; when idle a write commits alone, at
//! once. A write that fails rolls back its own savepoint and leaves the
//! others of its group alone.

use std::sync::mpsc;

use rusqlite::{Connection, TransactionBehavior};

/// The most writes committed together.
const MAX_GROUP: usize = 512;

/// A write for the writer thread. It runs inside a savepoint and says
/// whether to keep it, and what to do once the group's commit is known.
pub(super) type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
pub(super) type Finish = Box<dyn FnOnce(Result<(), CommitError>) + Send>;

/// Why a group's commit failed, for each of its writers: SQLite's error
/// code (so that a full disk can be told from a bug) and its message.
#[derive(Debug, Clone)]
pub(super) struct CommitError {
    pub(super) code: Option<rusqlite::ffi::Error>,
    pub(super) message: String,
}

/// The writer thread: takes every waiting write, commits them as one group.
pub(super) fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
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
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Cached statements rather than rusqlite's `Savepoint`, which
            // parses its SQL anew for every write.
            let run = |sql: &str| tx.prepare_cached(sql)?.execute([]);
            for job in group.drain(..) {
                run("SAVEPOINT write")?;
                let (keep, finish) = job(&tx);
                if !keep {
                    run("ROLLBACK TO write")?;
                }
                run("RELEASE write")?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the writes' callers heard, in the order they heard it.
    type Heard = Arc<Mutex<Vec<(String, Result<(), CommitError>)>>>;

    /// A write that inserts `value` into `t`, and keeps it if `keep`.
    fn insert(value: &str, keep: bool, heard: &Heard) -> WriteJob {
        let (value, heard) = (value.to_owned(), Arc::clone(heard));
        Box::new(move |conn| {
            conn.execute("INSERT INTO t (v) VALUES (?)", [&value])
                .unwrap();
            let finish: Finish = Box::new(move |committed| {
                heard.lock().unwrap().push((value, committed));
            });
            (keep, finish)
        })
    }

    /// Runs `jobs`, all waiting before the writer starts (so one group),
    /// on a database with `schema` and foreign keys enforced, as the store's
    /// are; returns it and what the callers heard.
    fn run(
        schema: &str,
        jobs: impl Fn(&Heard) -> Vec<WriteJob>,
    ) -> (tempfile::TempDir, Connection, Heard) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(schema)
            .unwrap();
        let heard = Heard::default();
        let (sender, receiver) = mpsc::channel();
        for job in jobs(&heard) {
            sender.send(job).unwrap();
        }
        drop(sender);
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "foreign_keys", "ON").unwrap();
        write_loop(writer, receiver);
        let conn = Connection::open(&path).unwrap();
        (dir, conn, heard)
    }

    fn values(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT v FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_write_that_fails_leaves_the_others_of_its_group() {
        let (_dir, conn, heard) = run("CREATE TABLE t (v TEXT);", |heard| {
            vec![
                insert("a", true, heard),
                insert("b", false, heard),
                insert("c", true, heard),
            ]
        });
        assert_eq!(values(&conn), ["a", "c"]);
        let heard = heard.lock().unwrap();
        let order: Vec<_> = heard.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            order,
            ["a", "b", "c"],
            "callers hear in the order they wrote"
        );
        assert!(heard.iter().all(|(_, committed)| committed.is_ok()));
    }

    #[test]
    fn a_failed_commit_reaches_every_writer_of_the_group_and_keeps_nothing() {
        // A deferred foreign key is checked at commit: the group's commit
        // fails after every write of it ran.
        let schema = "CREATE TABLE parent (id INTEGER PRIMARY KEY);
            CREATE TABLE t (v TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);";
        let (_dir, conn, heard) = run(schema, |heard| {
            vec![insert("1", true, heard), insert("2", true, heard)]
        });
        assert!(values(&conn).is_empty());
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 2);
        for (_, committed) in heard.iter() {
            let error = committed.as_ref().unwrap_err();
            assert_eq!(
                error.code.map(|c| c.code),
                Some(rusqlite::ErrorCode::ConstraintViolation),
                "{}",
                error.message
            );
        }
    }
}
