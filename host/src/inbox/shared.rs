//! The inbox when hosts share a PostgreSQL store: any host accepts a
//! message, and the one host that holds its session runs it.
//!
//! A host holds a session by a claim ([`crate::store::Claim`]): it claims
//! sessions that have work and no live owner, runs their messages one at a
//! time in the order the database numbered them (whichever host accepted
//! them), delivers their outputs, and gives them up once they have nothing
//! left. Its claims hold while its lease does; it renews the lease a few
//! times per lease. Every write it makes under a claim is checked in the
//! database ([`crate::store::StoreError::Fenced`] when another host has
//! taken the session since), so a host that paused past its lease keeps
//! nothing it did after.
//!
//! What wakes a host: a notification from the database for each message
//! accepted and each output queued again by any host (see
//! [`crate::store::Wakeups`]), and a slow timer ([`POLL`]) that looks for
//! what a lost notification or a dead host's lapsed lease left, and gives
//! up the sessions that have nothing left to do. An idle deployment costs
//! the database four small statements per host per [`POLL`].
//!
//! Each session held has at most one task running its messages
//! ([`Shared::drive`]); it reads the next message by number, so messages
//! accepted by other hosts come in their place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TurnRunner;
use crate::store::{Claim, PostgresStore, SessionKey, StoreError, Wake};

/// How often a host looks for sessions to claim and gives up those it is
/// done with, besides when it is woken.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// How long a session this host holds may have nothing to do before it is
/// given up: a conversation's next message usually comes sooner, and finds
/// the session still here, with no claim to make.
const KEEP_IDLE: Duration = Duration::from_secs(10);

/// How many sessions one claim takes at most; a round claims again while
/// it takes this many.
const CLAIM_BATCH: i64 = 256;

/// Runs the sessions this host holds.
pub(crate) struct Shared {
    store: Arc<PostgresStore>,
    runner: Arc<TurnRunner>,
    /// The sessions whose messages a task is running, and whether it was
    /// woken again meanwhile (to look once more before it ends).
    running: Mutex<HashMap<SessionKey, bool>>,
    tasks: TaskTracker,
}

impl Shared {
    /// Renews this host's lease, then starts keeping its claims: returns
    /// the inbox's side and its tasks, one that renews the lease and one
    /// that claims, wakes and tidies, until `runner.shutdown`. Renewing has
    /// a task of its own so that no claim or look, however slow, holds it
    /// up.
    pub(crate) async fn start(
        store: Arc<PostgresStore>,
        runner: Arc<TurnRunner>,
    ) -> Result<(Arc<Shared>, Vec<JoinHandle<()>>), StoreError> {
        store.renew().await?;
        tracing::info!(
            host = store.host_id(),
            lease_ms = store.lease().as_millis() as u64,
            "sharing the store with other hosts"
        );
        let shared = Arc::new(Shared {
            store,
            runner,
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        });
        let tasks = vec![
            tokio::spawn(Arc::clone(&shared).keep_lease()),
            tokio::spawn(Arc::clone(&shared).keep()),
        ];
        Ok((shared, tasks))
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.runner.shutdown
    }

    /// Renews the lease four times per lease, until shutdown.
    async fn keep_lease(self: Arc<Self>) {
        let mut renew = tokio::time::interval(self.store.lease() / 4);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown().cancelled() => return,
                _ = renew.tick() => self.renew().await,
            }
        }
    }

    /// Claims and wakes sessions, until shutdown.
    async fn keep(self: Arc<Self>) {
        let mut wakeups = self.store.wakeups();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown().cancelled() => return,
                _ = poll.tick() => {
                    self.claim().await;
                    self.tidy().await;
                }
                wake = wakeups.next() => {
                    // Everything that came meanwhile, at once: one claim
                    // for a burst of messages of sessions nobody holds.
                    let mut wakes = vec![wake];
                    while let Some(more) = wakeups.try_next() {
                        wakes.push(more);
                    }
                    self.woken(wakes).await;
                }
            }
        }
    }

    async fn renew(self: &Arc<Self>) {
        match self.store.renew().await {
            Ok(true) => {
                tracing::warn!(
                    "this host's lease had lapsed; renewed, it takes up its sessions again"
                );
                self.catch_up().await;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "could not renew this host's lease"),
        }
    }

    async fn woken(self: &Arc<Self>, wakes: Vec<Wake>) {
        let mut claim = false;
        for wake in wakes {
            match wake {
                Wake::Message(session) if self.store.claim_on(&session).is_some() => {
                    self.wake(session);
                }
                Wake::Output(session) => match self.store.claim_on(&session) {
                    Some(held) => self.enqueue_outputs(&held).await,
                    None => claim = true,
                },
                Wake::Message(_) => claim = true,
                Wake::Reconnected => {
                    self.catch_up().await;
                    claim = true;
                }
            }
        }
        if claim {
            self.claim().await;
        }
    }

    /// Claims what no live host holds, of the endpoints whose flow is
    /// loaded here, and takes it up.
    async fn claim(self: &Arc<Self>) {
        let endpoints: Vec<String> = {
            let table = self.runner.endpoints.load();
            table
                .all()
                .into_iter()
                .filter(|e| self.runner.flows.get(&e.config.flow).is_some())
                .map(|e| e.name().to_owned())
                .collect()
        };
        if endpoints.is_empty() {
            return;
        }
        loop {
            let claims = match self.store.claim(&endpoints, CLAIM_BATCH).await {
                Ok(claims) => claims,
                Err(error) => {
                    tracing::warn!(%error, "could not claim sessions");
                    return;
                }
            };
            let full = claims.len() as i64 == CLAIM_BATCH;
            for claim in claims {
                tracing::debug!(session = %claim.session, epoch = claim.epoch, "claimed");
                self.take_up(claim);
            }
            if !full {
                return;
            }
        }
    }

    /// Starts on a session just claimed: first the outputs its last owner
    /// left (so that they go before any new turn's), then its messages.
    fn take_up(self: &Arc<Self>, claim: Claim) {
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            this.enqueue_outputs(&claim).await;
            this.wake(claim.session);
        });
    }

    /// Queues the held session's outputs for delivery (delivery skips those
    /// it has queued already).
    async fn enqueue_outputs(&self, claim: &Claim) {
        let read = self.store.undelivered_outputs(claim);
        if let Err(error) = self.runner.delivery.take_up(&claim.session, read).await {
            tracing::warn!(%error, session = %claim.session, "could not read the outputs to deliver; the next look finds them");
        }
    }

    /// Gives up what this host is done with, wakes the sessions it holds
    /// that have messages (in case a wake was lost), takes up again the
    /// deliveries of those whose outputs could not go in their turn (see
    /// [`crate::delivery`]), and follows the endpoints whose deliveries other
    /// hosts stopped or resumed.
    async fn tidy(self: &Arc<Self>) {
        match self.store.release_idle(KEEP_IDLE).await {
            Ok(0) => {}
            Ok(released) => tracing::debug!(released, "gave up sessions with nothing left to do"),
            Err(error) => tracing::warn!(%error, "could not give up idle sessions"),
        }
        match self.store.held_with_work().await {
            Ok(work) => {
                for claim in work.messages {
                    self.wake_if_idle(claim.session);
                }
            }
            Err(error) => tracing::warn!(%error, "could not list the sessions this host holds"),
        }
        for session in self.runner.delivery.broken_sessions() {
            match self.store.claim_on(&session) {
                Some(claim) if self.store.holds(&session) => self.enqueue_outputs(&claim).await,
                // Held, once the lease is renewed (which takes it up).
                Some(_) => {}
                None => self.runner.delivery.forget_broken(&session),
            }
        }
        if let Err(error) = self.runner.delivery.follow_stopped().await {
            tracing::warn!(%error, "could not read which endpoints' deliveries are stopped");
        }
    }

    /// After the lease lapsed or notifications were lost: takes up again
    /// every session this host still holds, outputs and messages.
    async fn catch_up(self: &Arc<Self>) {
        match self.store.held_with_work().await {
            Ok(work) => {
                for claim in work.outputs {
                    self.enqueue_outputs(&claim).await;
                }
                for claim in work.messages {
                    self.wake(claim.session);
                }
            }
            Err(error) => tracing::warn!(%error, "could not list the sessions this host holds"),
        }
    }

    /// Makes sure a task runs the held session's messages: starts one, or
    /// tells the running one to look once more before it ends.
    fn wake(self: &Arc<Self>, session: SessionKey) {
        let mut running = self.running.lock().unwrap();
        match running.get_mut(&session) {
            Some(again) => *again = true,
            None => {
                running.insert(session.clone(), false);
                drop(running);
                self.tasks.spawn(Arc::clone(self).drive(session));
            }
        }
    }

    /// Like [`wake`](Self::wake), but leaves a running task be.
    fn wake_if_idle(self: &Arc<Self>, session: SessionKey) {
        if !self.running.lock().unwrap().contains_key(&session) {
            self.wake(session);
        }
    }

    /// Runs the held session's messages one by one, in their numbered
    /// order, until it has none, the claim is lost, or the host stops.
    async fn drive(self: Arc<Self>, session: SessionKey) {
        let mut wait = Duration::from_millis(50);
        // Whether the session may have a message to run: after a message
        // read with none behind it, only a wake says so.
        let mut look = true;
        loop {
            if !look && !self.woken_again(&session) {
                return;
            }
            look = true;
            if self.shutdown().is_cancelled() || !self.store.holds(&session) {
                break; // Taken up again once the lease is renewed.
            }
            let Some(claim) = self.store.claim_on(&session) else {
                break;
            };
            if !self.can_run(&session) {
                // Its flow was unloaded here (or its endpoint removed): a
                // host that has it takes the session; this one no longer
                // claims it.
                match self.store.give_up(&claim).await {
                    Ok(()) => {
                        tracing::info!(%session, "gave the session up: its flow is not loaded here")
                    }
                    Err(error) => {
                        tracing::warn!(%error, %session, "could not give the session up; it passes on when this host's lease runs out")
                    }
                }
                break;
            }
            match self.store.next_message(self.store.host_id(), &claim).await {
                Ok(Some(next)) => {
                    look = next.more;
                    self.runner.run(next.message.id, Some(next.message)).await;
                    wait = Duration::from_millis(50);
                }
                Ok(None) => look = false,
                Err(StoreError::Fenced(_)) => {
                    tracing::info!(%session, "another host has taken the session");
                    self.store.forget(&claim);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, %session, retry_in_ms = wait.as_millis() as u64, "could not read the session's next message");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shutdown().cancelled() => break,
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.running.lock().unwrap().remove(&session);
    }

    /// Whether the session's task was woken since it last looked (and
    /// resets that); if not, the task ends, in the same step, so that a
    /// wake after it starts a new one.
    fn woken_again(&self, session: &SessionKey) -> bool {
        let mut running = self.running.lock().unwrap();
        match running.get_mut(session) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(session);
                false
            }
        }
    }

    /// Whether this host can run the session's messages: its endpoint is
    /// configured and its flow loaded.
    fn can_run(&self, session: &SessionKey) -> bool {
        self.runner
            .endpoints
            .load()
            .by_name(&session.endpoint)
            .is_some_and(|endpoint| self.runner.flows.get(&endpoint.config.flow).is_some())
    }

    /// Resolves once no session's task is running.
    pub(crate) async fn idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// Gives up every session and the lease, so that other hosts carry on
    /// at once: for a clean stop, once nothing runs.
    pub(crate) async fn leave(&self) {
        match self.store.leave().await {
            Ok(()) => tracing::info!("gave up this host's sessions to the other hosts"),
            Err(error) => {
                tracing::warn!(%error, "could not give up this host's sessions; other hosts take them when its lease runs out")
            }
        }
    }
}
