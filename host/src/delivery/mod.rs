//! Delivers outputs: each one a POST to its endpoint's webhook, retried on
//! failure until delivered or dead.
//!
//! Outputs arrive here already in the store's outbox, so nothing here is
//! the only copy: after a crash the outbox is read again and delivery
//! resumes, each output keeping its `webhook-id`. A receiver may see an
//! output twice (a 2xx lost on the way back), never a different one:
//! at-least-once is the most HTTP allows, and the id lets receivers
//! deduplicate.
//!
//! **Order.** With `delivery_order = "session"` (the default) a session's
//! outputs go through one lane: one that keeps failing holds back the
//! session's later outputs until it is delivered or dead, so a receiver
//! never sees a conversation out of order; other sessions are not held
//! back. With `"none"`, each output has a lane of its own: a failing one
//! holds back nothing, and later outputs may overtake it. Where hosts share
//! the store, a session's outputs go from the host that holds it, and wait
//! in the outbox, in order, while none does ([`queue`]).
//!
//! **Answers.** 2xx is delivered. 410 Gone stops all delivery to the
//! endpoint (its outputs are kept) until an operator resumes it through the
//! admin API. 429 and 503 are retried no sooner than their `Retry-After`
//! (capped). Anything else, including redirects, timeouts and connection
//! errors, is retried on the schedule; after the last attempt the output is
//! a dead letter, kept with its attempts for redelivery.

mod client;
mod courier;
pub(crate) mod guard;
pub(crate) mod payload;
mod queue;
pub(crate) mod retry;
mod transform;

pub(crate) use self::transform::Transformers;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::client::Sender;
use self::courier::{Courier, Left};
use self::queue::{Broken, Queue, Waiting};
use self::retry::RetryPolicy;
use crate::endpoints::SharedEndpoints;
use crate::endpoints::{DeliveryOrder, Endpoints};
use crate::lanes::{Carried, CarryBudget, Lanes, Then};
use crate::store::{
    AttemptRecord, DisabledEndpoint, OutboxStore, OutputQuery, OutputRecord, PendingOutput, Queued,
    SessionKey, StoreError, now_ms,
};
use crate::telemetry::metrics::{DeliveryOutcome, Metrics};

/// How outputs are delivered to webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// How long one POST may take, connecting included.
    pub timeout: Duration,
    /// The waits before each retry of a failed POST; the first attempt is
    /// immediate. An output whose last retry fails becomes a dead letter.
    pub retry_schedule: Vec<Duration>,
    /// POSTs in flight at once, across all endpoints and sessions.
    pub max_concurrent: usize,
    /// POSTs in flight at once to one endpoint, so that a slow receiver
    /// cannot hold every one of `max_concurrent`.
    pub max_concurrent_per_endpoint: usize,
    /// Whether webhooks may be on loopback, private or link-local addresses.
    /// Off, such addresses are refused when the configuration is read and,
    /// for names, on the address actually connected to (so DNS rebinding
    /// does not get through).
    pub allow_private_webhooks: bool,
}

/// How many outputs are read, or dead letters queued again, at a time.
const PAGE: usize = 500;

/// The bytes of outputs just committed that lanes carry to their first
/// attempt at once, so that it need not read back what was just written.
const CARRIED_BYTES: usize = 16 << 20;

/// The delivery service: a handle to queue outputs and manage deliveries.
#[derive(Clone)]
pub struct Delivery {
    courier: Arc<Courier>,
    lanes: Lanes<Lane, Waiting>,
    queue: Arc<Queue>,
    carry: Arc<CarryBudget>,
}

/// An attempt to deliver an output, as [`Delivery::watch`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEvent {
    /// The output's session.
    pub session: SessionKey,
    /// The output's place in the outbox.
    pub output_id: i64,
    /// The webhook body: the output as the receiver got it (or did not).
    pub body: String,
    /// How the attempt ended: delivered, retry, dead or gone.
    pub outcome: DeliveryOutcome,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
}

/// The attempts a slow watcher may fall behind by before it misses some.
const WATCH_BACKLOG: usize = 1024;

/// What orders deliveries: a session, or (unordered) the output alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lane {
    Session(SessionKey),
    Output(i64),
}

/// The lane `output` goes through, as its endpoint orders deliveries.
fn lane_of(endpoints: &Endpoints, output: &Queued) -> Lane {
    let order = endpoints
        .by_name(&output.session.endpoint)
        .map_or(DeliveryOrder::Session, |e| e.config.delivery_order);
    match order {
        DeliveryOrder::Session => Lane::Session(output.session.clone()),
        DeliveryOrder::None => Lane::Output(output.id),
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Session(session) => write!(f, "{session}"),
            Lane::Output(id) => write!(f, "output {id}"),
        }
    }
}

impl Delivery {
    /// Starts the service on `runtime` and, with `resume`, queues every
    /// pending output (where hosts share the store, each host queues those
    /// of the sessions it claims instead). Cancelling `shutdown` stops it
    /// between attempts; what is not delivered stays in the outbox. Each
    /// attempt is counted in `metrics`.
    #[allow(clippy::too_many_arguments)] // each is named at the two call sites
    pub async fn start(
        runtime: Handle,
        store: Arc<dyn OutboxStore>,
        endpoints: SharedEndpoints,
        config: &DeliveryConfig,
        resume: bool,
        metrics: Metrics,
        transformers: Option<Transformers>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Delivery> {
        let stopped = store
            .disabled_endpoints()
            .await?
            .into_iter()
            .map(|disabled| {
                tracing::warn!(
                    endpoint = %disabled.endpoint,
                    reason = %disabled.reason,
                    "delivery to this endpoint is stopped; resume it with POST /admin/endpoints/{}/resume",
                    disabled.endpoint
                );
                disabled.endpoint
            })
            .collect();
        let courier = Arc::new(Courier {
            store: Arc::clone(&store),
            endpoints,
            sender: Sender::new(config.timeout, config.allow_private_webhooks)?,
            policy: RetryPolicy::new(config.retry_schedule.clone()),
            in_flight: Semaphore::new(config.max_concurrent),
            per_endpoint: Mutex::new(HashMap::new()),
            max_per_endpoint: config.max_concurrent_per_endpoint,
            stopped: Mutex::new(stopped),
            metrics,
            watchers: tokio::sync::broadcast::channel(WATCH_BACKLOG).0,
            removals: tokio::sync::watch::channel(0).0,
            transformers,
            shutdown,
        });
        let queue = Arc::new(Queue::default());
        let lanes = {
            let (courier, queue) = (Arc::clone(&courier), Arc::clone(&queue));
            Lanes::new(runtime, move |lane, waiting: Waiting| {
                let (courier, queue) = (Arc::clone(&courier), Arc::clone(&queue));
                async move {
                    let carried = waiting.carried.map(Carried::take);
                    // Removed meanwhile, perhaps: read it from the store.
                    let carried =
                        carried.filter(|_| *courier.removals.borrow() == waiting.removals);
                    let left = courier.deliver(waiting.queued, carried).await;
                    match (left, lane) {
                        (Left::NotHeld, Lane::Session(session)) => {
                            queue.break_lane(session);
                            Then::Clear
                        }
                        _ => Then::Next,
                    }
                }
            })
        };
        let delivery = Delivery {
            courier,
            lanes,
            queue,
            carry: CarryBudget::new(CARRIED_BYTES),
        };
        if !resume {
            return Ok(delivery);
        }
        // Read a page at a time, and only what orders each output: its body
        // is read when its turn comes.
        let mut pending = Vec::new();
        delivery
            .for_each_pending(None, |page| pending.extend(page))
            .await?;
        if !pending.is_empty() {
            let spread = spread_resumed(&mut pending, now_ms());
            tracing::info!(
                outputs = pending.len(),
                overdue_retries_spread_over_ms = spread.as_millis() as u64,
                "resuming delivery of outputs left from the last run, each retry when it is due"
            );
        }
        delivery.enqueue(pending);
        Ok(delivery)
    }

    /// Calls `each` with every page of the pending outputs, of `endpoint` or
    /// of all.
    async fn for_each_pending(
        &self,
        endpoint: Option<&str>,
        mut each: impl FnMut(Vec<Queued>),
    ) -> Result<(), StoreError> {
        let mut after_id = 0;
        loop {
            let page = self
                .courier
                .store
                .pending_outputs(endpoint, after_id, PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after_id = last.id;
            let full = page.len() == PAGE;
            each(page);
            if !full {
                return Ok(());
            }
        }
    }

    /// Every delivery attempt this host makes from now on, as it is
    /// recorded (for the console's chat). A watcher that falls more than
    /// 1,024 attempts behind misses the oldest ones.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<DeliveryEvent> {
        self.courier.watchers.subscribe()
    }

    /// Queues outputs for delivery, in their lanes. An output already queued
    /// is not queued again. Lanes hold the output's id and session only; the
    /// body is read when the output's turn comes.
    pub fn enqueue(&self, outputs: impl IntoIterator<Item = Queued>) {
        self.push(outputs.into_iter().map(|queued| (queued, None)));
    }

    /// Queues outputs just committed, carrying their bodies to their first
    /// attempt while the budget allows.
    pub fn enqueue_committed(&self, outputs: Vec<PendingOutput>) {
        self.push(outputs.into_iter().map(|output| {
            let bytes = output.footprint();
            (Queued::from(&output), self.carry.carry(output, bytes))
        }));
    }

    fn push(&self, outputs: impl Iterator<Item = (Queued, Option<Carried<PendingOutput>>)>) {
        let removals = *self.courier.removals.borrow();
        let endpoints = self.courier.endpoints.load();
        let mut broken = self.queue.broken();
        for (queued, carried) in outputs {
            let lane = lane_of(&endpoints, &queued);
            let parked = match &lane {
                Lane::Session(session) => broken.get_mut(session),
                Lane::Output(_) => None,
            };
            // Its lane broke: it is in the outbox, for the take-up to read.
            if let Some(Broken::Dropping) = parked {
                continue;
            }
            let Some(waiting) = self.queue.waiting(queued, carried, removals) else {
                continue;
            };
            match parked {
                Some(Broken::Reading(parked)) => parked.push(waiting),
                _ => self.lanes.push(lane, waiting),
            }
        }
    }

    /// Queues every pending output of `session` that `read` finds in the
    /// outbox, behind those already queued: for a host that has just
    /// claimed the session, or holds it again. If the session's lane broke
    /// ([`queue`]), its outputs go again from here, in order, with those
    /// queued while `read` ran.
    ///
    /// What `read` found is not carried to the attempt: an output it found
    /// pending may have been delivered by its lane since (the read ran
    /// while it was on its way), and each is read again when its turn
    /// comes, so that it is not sent twice.
    pub(crate) async fn take_up<E>(
        &self,
        session: &SessionKey,
        read: impl Future<Output = Result<Vec<PendingOutput>, E>>,
    ) -> Result<(), E> {
        if let Some(broken @ Broken::Dropping) = self.queue.broken().get_mut(session) {
            *broken = Broken::Reading(Vec::new());
        }
        let outputs = read.await;
        let removals = *self.courier.removals.borrow();
        let mut broken = self.queue.broken();
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                if let Some(state @ Broken::Reading(_)) = broken.get_mut(session) {
                    *state = Broken::Dropping;
                }
                return Err(error);
            }
        };
        let parked = match broken.remove(session) {
            None => Vec::new(),
            Some(Broken::Reading(parked)) => parked,
            // Broken again since (a read taking it up meanwhile queued it,
            // and it broke): the next look takes it up.
            Some(Broken::Dropping) => {
                broken.insert(session.clone(), Broken::Dropping);
                return Ok(());
            }
        };
        let mut waiting: Vec<Waiting> = outputs
            .iter()
            .filter_map(|output| self.queue.waiting(Queued::from(output), None, removals))
            .chain(parked)
            .collect();
        waiting.sort_by_key(|waiting| waiting.queued.id);
        let endpoints = self.courier.endpoints.load();
        for waiting in waiting {
            self.lanes
                .push(lane_of(&endpoints, &waiting.queued), waiting);
        }
        Ok(())
    }

    /// The sessions whose lane broke, to be taken up again
    /// ([`take_up`](Self::take_up)) if this host holds them, or
    /// [forgotten](Self::forget_broken) if it does not.
    pub(crate) fn broken_sessions(&self) -> Vec<SessionKey> {
        self.queue.to_take_up()
    }

    /// Forgets that `session`'s lane broke: another host holds it now.
    pub(crate) fn forget_broken(&self, session: &SessionKey) {
        self.queue.forget(session);
    }

    /// Tells the outputs waiting for a retry that some outputs were removed
    /// from the store (a user erased): each checks it is still there, and
    /// those gone leave their lane at once rather than hold back their
    /// session until their retry was due.
    pub fn outputs_removed(&self) {
        self.courier.removals.send_modify(|removals| *removals += 1);
    }

    /// Queues an output of `endpoint` again, delivered or dead, with a fresh
    /// schedule and its own `webhook-id`. Returns whether it exists.
    pub async fn redeliver(&self, endpoint: &str, output_id: i64) -> Result<bool, StoreError> {
        let output = self
            .courier
            .store
            .requeue_output(endpoint, output_id)
            .await?;
        let found = output.is_some();
        self.enqueue(output.as_ref().map(Queued::from));
        Ok(found)
    }

    /// Queues every dead letter of `endpoint` again, a page at a time (each
    /// page its own write, so that a large dead-letter queue neither holds
    /// the store's writer nor is read whole). Returns how many.
    pub async fn redeliver_dead(&self, endpoint: &str) -> Result<usize, StoreError> {
        let mut after_id = 0;
        let mut count = 0;
        loop {
            let page = self
                .courier
                .store
                .requeue_dead(endpoint, after_id, PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after_id = last.id;
            count += page.len();
            let full = page.len() == PAGE;
            self.enqueue(page);
            if !full {
                break;
            }
        }
        Ok(count)
    }

    /// Resumes delivery to an endpoint stopped by a 410, and queues its
    /// pending outputs. Returns whether it was stopped.
    pub async fn resume(&self, endpoint: &str) -> Result<bool, StoreError> {
        let was_stopped = self.courier.store.enable_endpoint(endpoint).await?;
        self.courier.stopped.lock().unwrap().remove(endpoint);
        self.for_each_pending(Some(endpoint), |page| self.enqueue(page))
            .await?;
        if was_stopped {
            tracing::info!(endpoint, "delivery resumed");
        }
        Ok(was_stopped)
    }

    /// Takes up what other hosts sharing the store decided: delivery stops
    /// to the endpoints they stopped (a receiver answered them 410), and
    /// resumes, with their pending outputs queued, to those an operator
    /// resumed through another host.
    pub async fn follow_stopped(&self) -> Result<(), StoreError> {
        let stopped: HashSet<String> = self
            .courier
            .store
            .disabled_endpoints()
            .await?
            .into_iter()
            .map(|d| d.endpoint)
            .collect();
        let resumed: Vec<String> = {
            let mut here = self.courier.stopped.lock().unwrap();
            let resumed = here.difference(&stopped).cloned().collect();
            *here = stopped;
            resumed
        };
        for endpoint in resumed {
            tracing::info!(%endpoint, "delivery resumed (at another host)");
            self.for_each_pending(Some(&endpoint), |page| self.enqueue(page))
                .await?;
        }
        Ok(())
    }

    /// The outputs of `endpoint` that `query` asks for, newest first: for
    /// the admin API, which reads the outbox only through delivery.
    pub async fn outputs(
        &self,
        endpoint: &str,
        query: OutputQuery,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        self.courier.store.outputs(endpoint, query).await
    }

    /// The attempts made to deliver an output, oldest first.
    pub async fn attempts(&self, output_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        self.courier.store.attempts(output_id).await
    }

    /// Why delivery to `endpoint` is stopped, if it is.
    pub async fn stopped(&self, endpoint: &str) -> Result<Option<DisabledEndpoint>, StoreError> {
        let stopped = self.courier.store.disabled_endpoints().await?;
        Ok(stopped.into_iter().find(|d| d.endpoint == endpoint))
    }

    /// Resolves once no delivery is running (after shutdown was cancelled,
    /// that is soon).
    pub async fn idle(&self) {
        self.lanes.idle().await;
    }
}

/// How far apart overdue retries resumed at start are spread, per output.
const RESUME_SPREAD_PER_OUTPUT: Duration = Duration::from_millis(10);

/// The longest time overdue retries resumed at start are spread over.
const MAX_RESUME_SPREAD: Duration = Duration::from_secs(60);

/// Gives each output left from the last run its time: a retry not yet due
/// keeps its stored time; a retry already overdue (its time passed while
/// flowhost was down, or it was stored by a flowhost that kept no times)
/// gets a random time over the next few seconds, so that a restart after an
/// outage does not hit receivers with every retry at once. Outputs never
/// tried go at once. Returns the spread used.
fn spread_resumed(outputs: &mut [Queued], now: i64) -> Duration {
    let overdue = |output: &Queued| {
        output.attempts > 0 && output.next_attempt_at.is_none_or(|due| due <= now)
    };
    let count = outputs.iter().filter(|o| overdue(o)).count();
    let spread = RESUME_SPREAD_PER_OUTPUT
        .saturating_mul(u32::try_from(count).unwrap_or(u32::MAX))
        .min(MAX_RESUME_SPREAD);
    let spread_ms = spread.as_millis() as i64;
    for output in outputs.iter_mut().filter(|o| overdue(o)) {
        let offset = if spread_ms > 0 {
            rand::Rng::random_range(&mut rand::rng(), 0..spread_ms)
        } else {
            0
        };
        output.next_attempt_at = Some(now + offset);
    }
    spread
}

#[cfg(test)]
mod tests;
