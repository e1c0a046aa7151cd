//! The store in PostgreSQL, shared by every host of a deployment: the
//! connection pool here, the schema in [`schema`] and `migrations/`, each
//! part of the store in a file of its own.
//!
//! **The parts.** The credentials ([`CredentialStore`]): URL tokens and
//! API-key hashes, which every host must see alike. The sessions
//! ([`sessions`]): messages numbered in session order whichever host
//! accepted them, claimed by one live host at a time. A claimed session's
//! turns ([`turns`]) and deliveries ([`deliveries`]), every write fenced by
//! the claim. Wake-ups between hosts ([`wakeups`]), and what the admin API
//! reads and changes ([`admin`]). This host's own claims, and its lease as
//! it reckons it ([`host`]); the store's traits over them ([`claimed`]), as
//! the inbox and delivery call them.
//!
//! **Round trips.** On a machine where a process wake-up is dear, what a
//! message costs here is mostly the kernel's work for each round trip to
//! the database (see `benches/store.rs`): statements are prepared once per
//! connection, and a step that can be one statement is one.
//!
//! **Connections.** A pool ([deadpool-postgres]) of `pool_size`
//! connections; an operation waits for one at most `acquire_timeout`, and
//! then fails as [`StoreError::Unreachable`], a passing failure: the HTTP
//! layer answers `503` with `Retry-After`, and the pool connects again by
//! itself when the database is back. TLS is rustls with the system's trust
//! store (as for webhook deliveries), negotiated as the URL's `sslmode`
//! says: `disable`, `prefer` (the default) or `require`. A server
//! certificate is always verified when TLS is used.
//!
//! **Time** is the database's, never a host's: hosts' clocks may differ.
//! A host also reckons its lease by its own clock, but only to stop sooner
//! than the database would let it ([`host`]).
//!
//! [deadpool-postgres]: https://docs.rs/deadpool-postgres
//! [`CredentialStore`]: crate::store::CredentialStore

mod admin;
mod claimed;
mod credentials;
mod deliveries;
mod host;
mod schema;
mod sessions;
mod turns;
mod wakeups;

pub use self::host::{HeldWork, new_host_id};
pub use self::sessions::{Claim, ClaimedMessage};
pub use self::wakeups::{Wake, Wakeups};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::StoreError;

/// How to reach PostgreSQL, and how many connections to keep.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database?sslmode=…`
    pub url: String,
    /// The most connections this host keeps open.
    pub pool_size: usize,
    /// How long an operation waits for a connection before it fails.
    pub acquire_timeout: Duration,
    /// This host's id among the hosts sharing the database; `None`, a new
    /// one at every start ([`new_host_id`]).
    pub host_id: Option<String>,
    /// How long this host's claims on sessions hold unless it renews them:
    /// how long the sessions of a host that died wait for another.
    pub lease: Duration,
}

impl PostgresOptions {
    /// Options for `url`, with the default pool.
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            pool_size: 16,
            acquire_timeout: Duration::from_secs(5),
            host_id: None,
            lease: Duration::from_secs(8),
        }
    }
}

/// The URL without its password, for logs and errors.
impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("host_id", &self.host_id)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Now, in milliseconds since the Unix epoch, by the database's clock.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// `url` with its password, if it has one, replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The store in a PostgreSQL database that several hosts may share.
pub struct PostgresStore {
    pool: Pool,
    /// For connections outside the pool (the listener's).
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// This host, and the sessions it holds.
    me: host::ThisHost,
}

impl PostgresStore {
    /// Connects, and brings the database's schema up to date: one host at a
    /// time, so hosts starting together do not race; a database whose schema
    /// is newer than this flowhost is refused.
    pub async fn connect(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&options.url).map_err(|e| {
            StoreError::Open(format!(
                "{} is not a PostgreSQL URL: {e}",
                redacted(&options.url)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.acquire_timeout);
        }
        // A host that pauses (or loses the network) in the middle of a
        // transaction holds its session's row lock, and every host that
        // accepts a message for that session would wait on it: the server
        // ends such a transaction once it has idled for half a lease, well
        // before another host may take the session over.
        let idle_limit_ms = (options.lease / 2).as_millis().max(100);
        let mut startup = config.get_options().unwrap_or_default().to_owned();
        startup.push_str(&format!(
            " -c idle_in_transaction_session_timeout={idle_limit_ms}"
        ));
        config.options(startup.trim());
        let tls = crate::tls::client_config(&[])
            .map_err(|e| StoreError::Open(format!("TLS for PostgreSQL: {e}")))?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(options.acquire_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Open(format!("PostgreSQL pool: {e}")))?;
        let store = PostgresStore {
            pool,
            config,
            tls,
            me: host::ThisHost::new(
                options.host_id.clone().unwrap_or_else(new_host_id),
                options.lease,
            ),
        };
        let mut conn = store.conn().await.map_err(|e| {
            StoreError::Open(format!("cannot reach {}: {e}", redacted(&options.url)))
        })?;
        schema::migrate(&mut conn).await?;
        Ok(store)
    }

    /// Closes the pool's connections; later operations fail.
    pub fn close(&self) {
        self.pool.close();
    }

    /// `sql` on a connection from the pool, prepared once per connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        Ok(conn.query(&conn.prepare_cached(sql).await?, params).await?)
    }

    /// Like [`query`](Self::query), for a statement that returns one row.
    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let conn = self.conn().await?;
        Ok(conn
            .query_one(&conn.prepare_cached(sql).await?, params)
            .await?)
    }

    /// Like [`query`](Self::query), for a statement that returns a row or none.
    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let conn = self.conn().await?;
        Ok(conn
            .query_opt(&conn.prepare_cached(sql).await?, params)
            .await?)
    }

    /// Like [`query`](Self::query); returns how many rows it changed.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        Ok(conn
            .execute(&conn.prepare_cached(sql).await?, params)
            .await?)
    }

    /// A connection from the pool.
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => StoreError::Postgres(error),
            other => StoreError::Unreachable(other.to_string()),
        })
    }
}

/// Whether a PostgreSQL failure is likely to pass by itself: the connection
/// was lost or refused, the server is starting, stopping or out of
/// resources, or a transaction lost a race it may win on a retry.
pub(super) fn is_transient(error: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if error.is_closed() || error.source().is_some_and(|e| e.is::<std::io::Error>()) {
        return true;
    }
    let Some(code) = error.code() else {
        return false;
    };
    // 08: connection exception; 53: insufficient resources; 57: operator
    // intervention (shutdown, restart); 40: transaction rollback
    // (serialization failure, deadlock).
    matches!(&code.code()[..2], "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let options = PostgresOptions::new("postgres://flowhost:s3cret@db:5432/flowhost");
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://flowhost:***@db:5432/flowhost"),
            "{shown}"
        );
        assert_eq!(
            redacted("postgres://db/flowhost?sslmode=require"),
            "postgres://db/flowhost?sslmode=require"
        );
    }
}
