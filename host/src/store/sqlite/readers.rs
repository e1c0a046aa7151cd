//! Read connections: a small pool, reused, on blocking threads for scans
//! and on the calling thread for point reads. WAL lets them read while the
//! writer writes.

use std::sync::Mutex;

use rusqlite::Connection;

use crate::store::StoreError;

/// Reads run on blocking threads at once ([`SqliteStore::read`]: listings
/// and scans), each on its own connection. Point reads run on the async
/// worker threads, at most one per thread, so together these bound the
/// reader connections.
pub(super) const MAX_READS: usize = 8;

/// Read connections, opened on demand and reused.
pub(super) struct ReaderPool {
    pub(super) path: std::path::PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
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

    pub(super) fn with<R>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let conn = self.take()?;
        let result = read(&conn);
        self.give_back(conn);
        Ok(result?)
    }
}
