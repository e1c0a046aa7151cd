//! This host's side of the claims: its id, its lease as it last renewed it,
//! and the sessions it holds, with the epoch each was claimed at.
//!
//! The parts of the store that the inbox and delivery call
//! ([`claimed`](super::claimed)) know only a session, not a claim: they find
//! the claim here, so the traits stay the same for SQLite and for
//! PostgreSQL. The database stays the judge: every write checks the claim
//! there, and a write refused ([`StoreError::Fenced`]) drops the claim here
//! too.
//!
//! The lease is also kept by this host's clock, from the moment it asked
//! for a renewal: a renewal answered at the database's time `t` runs to
//! `t + lease`, and `t` is after the moment asked, so this host's reckoning
//! ends first. A host that paused (or lost the database) past it starts no
//! turn and no delivery until it has renewed and learnt which of its
//! sessions other hosts took meanwhile, so it does not send what another
//! host may be sending now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Claim, NOW_MS, PostgresStore};
use crate::store::{SessionKey, StoreError};

/// This host, as the database knows it.
pub(super) struct ThisHost {
    pub(super) id: String,
    pub(super) lease: Duration,
    /// Until when this host's lease surely holds, by its own clock.
    lease_holds_until: Mutex<Option<Instant>>,
    /// The sessions this host holds, and the epoch of each claim.
    held: Mutex<HashMap<SessionKey, i64>>,
}

impl ThisHost {
    pub(super) fn new(id: String, lease: Duration) -> ThisHost {
        ThisHost {
            id,
            lease,
            lease_holds_until: Mutex::new(None),
            held: Mutex::new(HashMap::new()),
        }
    }
}

/// A name for this host that is new at every start: the machine's name and
/// a random part. A host that restarts does not take up its old claims as
/// if it had never stopped; they pass to whichever host claims them next,
/// once its old lease has run out (or at once, after a clean stop).
pub fn new_host_id() -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{machine}-{}", &random[..8])
}

impl PostgresStore {
    /// This host's id in the `hosts` table.
    pub fn host_id(&self) -> &str {
        &self.me.id
    }

    /// How long this host's claims hold without a renewal.
    pub fn lease(&self) -> Duration {
        self.me.lease
    }

    /// Renews this host's lease. Returns whether it had lapsed (by this
    /// host's clock) by the time it was renewed: meanwhile, turns and
    /// deliveries of its sessions were not begun, and are to be taken up.
    pub async fn renew(&self) -> Result<bool, StoreError> {
        let asked = Instant::now();
        self.renew_host(&self.me.id, self.me.lease).await?;
        let lapsed = self
            .me
            .lease_holds_until
            .lock()
            .unwrap()
            .is_some_and(|until| until <= Instant::now());
        if lapsed {
            // Other hosts may have taken some of its sessions meanwhile:
            // forget those before the lease holds again, or a delivery due
            // now would send an output another host is sending.
            self.held_with_work().await?;
        }
        *self.me.lease_holds_until.lock().unwrap() = Some(asked + self.me.lease);
        Ok(lapsed)
    }

    /// Whether this host's lease surely still holds, by its own clock.
    pub fn lease_holds(&self) -> bool {
        self.me
            .lease_holds_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Claims up to `limit` sessions of `endpoints` that have work and no
    /// live owner, for this host.
    pub async fn claim(&self, endpoints: &[String], limit: i64) -> Result<Vec<Claim>, StoreError> {
        if !self.lease_holds() {
            return Ok(Vec::new());
        }
        let claims = self.claim_sessions(&self.me.id, endpoints, limit).await?;
        let mut held = self.me.held.lock().unwrap();
        for claim in &claims {
            held.insert(claim.session.clone(), claim.epoch);
        }
        Ok(claims)
    }

    /// This host's claim on `session`, if it holds one.
    pub fn claim_on(&self, session: &SessionKey) -> Option<Claim> {
        let epoch = *self.me.held.lock().unwrap().get(session)?;
        Some(Claim {
            session: session.clone(),
            epoch,
        })
    }

    /// Whether this host holds `session` and its lease surely holds: what
    /// a turn or a delivery attempt needs before it starts.
    pub fn holds(&self, session: &SessionKey) -> bool {
        self.lease_holds() && self.me.held.lock().unwrap().contains_key(session)
    }

    /// Forgets `claim` (lost to another host, or released), unless the
    /// session was claimed again since.
    pub fn forget(&self, claim: &Claim) {
        let mut held = self.me.held.lock().unwrap();
        if held.get(&claim.session) == Some(&claim.epoch) {
            held.remove(&claim.session);
        }
    }

    /// Gives up `claim` whatever the session has left, for another host to
    /// take (this host cannot run it: its flow is not loaded here).
    pub async fn give_up(&self, claim: &Claim) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET owner = NULL
             WHERE endpoint = $1 AND session_id = $2 AND owner = $3 AND epoch = $4",
            &[
                &claim.session.endpoint,
                &claim.session.session_id,
                &self.me.id,
                &claim.epoch,
            ],
        )
        .await?;
        self.forget(claim);
        Ok(())
    }

    /// Gives up every session this host holds that has had nothing to run
    /// or deliver for `idle` (a session in a conversation keeps its host
    /// between messages, rather than being given up and claimed again for
    /// each); returns how many.
    pub async fn release_idle(&self, idle: Duration) -> Result<usize, StoreError> {
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "UPDATE sessions SET owner = NULL
                     WHERE owner = $1 AND finished = accepted AND undelivered = 0
                       AND updated_at < {NOW_MS} - $2
                     RETURNING endpoint, session_id, epoch"
                ),
                &[&self.me.id, &idle_ms],
            )
            .await?;
        for row in &rows {
            self.forget(&claim_of(row));
        }
        Ok(rows.len())
    }

    /// The sessions this host holds in the database that have messages to
    /// run, and those that have outputs to deliver; the claims this host
    /// knows and the database does not are forgotten.
    pub async fn held_with_work(&self) -> Result<HeldWork, StoreError> {
        let rows = self
            .query(
                "SELECT endpoint, session_id, epoch, finished < accepted, undelivered > 0
                 FROM sessions WHERE owner = $1",
                &[&self.me.id],
            )
            .await?;
        let mut work = HeldWork::default();
        let mut in_database = HashMap::with_capacity(rows.len());
        for row in &rows {
            let claim = claim_of(row);
            if row.get::<_, bool>(3) {
                work.messages.push(claim.clone());
            }
            if row.get::<_, bool>(4) {
                work.outputs.push(claim.clone());
            }
            in_database.insert(claim.session, claim.epoch);
        }
        let mut held = self.me.held.lock().unwrap();
        held.retain(|session, epoch| in_database.get(session) == Some(epoch));
        Ok(work)
    }

    /// Gives up every session this host holds, and its lease, so that
    /// other hosts take its work at once: for a clean stop.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET owner = NULL WHERE owner = $1",
            &[&self.me.id],
        )
        .await?;
        self.execute("DELETE FROM hosts WHERE id = $1", &[&self.me.id])
            .await?;
        self.me.held.lock().unwrap().clear();
        *self.me.lease_holds_until.lock().unwrap() = None;
        Ok(())
    }
}

/// The sessions a host holds that have work, by kind.
#[derive(Debug, Default)]
pub struct HeldWork {
    /// Sessions with messages to run.
    pub messages: Vec<Claim>,
    /// Sessions with outputs to deliver.
    pub outputs: Vec<Claim>,
}

fn claim_of(row: &tokio_postgres::Row) -> Claim {
    Claim {
        session: SessionKey {
            endpoint: row.get(0),
            session_id: row.get(1),
        },
        epoch: row.get(2),
    }
}
