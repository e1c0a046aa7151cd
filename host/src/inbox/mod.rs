//! The inbox: accepted messages, run one at a time per session, in order.
//!
//! A message is accepted when the store has it durably; the store then
//! queues its id in its session's lane, in the order it numbered the
//! messages, and the caller answers 202. Lanes hold ids, so that a backlog
//! costs memory per message, not per byte of text and data; while the lanes
//! are short, a message also carries itself to its turn (within
//! [`CARRIED_BYTES`]), so that its turn need not read back what was just
//! written. Each lane runs its messages one by one:
//!
//! 1. read the message (unless it was carried), and find the endpoint's
//!    flow, waiting if it is not loaded (a flow being replaced or re-added),
//!    so that an accepted message is never dropped;
//! 2. read the session's context and the user's profile;
//! 3. run the flow in a fresh instance; with `output_timing = "immediate"`,
//!    what it says while it still runs is committed and handed to delivery
//!    at once (after a hold of a few milliseconds, so that a quick turn's
//!    outputs wait for its end instead);
//! 4. commit the outcome (new state, the other outputs, the message done;
//!    or the failure, with nothing else) in one transaction;
//! 5. hand the outputs to delivery.
//!
//! A crash anywhere before step 4 leaves the message unfinished in the
//! store, and [`Inbox::recover`] runs it again at the next start. Outputs
//! are kept one per place in their message (first, second, …), so what a
//! first run committed in step 3 is not stored or sent again by the next.
//!
//! Where hosts share a PostgreSQL store, a message accepted here may run at
//! another host, and this host runs messages other hosts accepted: the
//! lanes give way to the sessions this host holds ([`shared`]), with the
//! same turn (steps 1 to 5) for each message.

mod admission;
mod answers;
pub(crate) mod shared;
mod turn;

pub(crate) use self::admission::{Crowded, QueueLimits};
pub(crate) use self::answers::Answers;

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use self::admission::{Admission, Admitted};
use self::shared::Shared;
use crate::delivery::Delivery;
use crate::endpoints::SharedEndpoints;
use crate::flows::Registry;
use crate::lanes::{Carried, CarryBudget, Lanes, Then};
use crate::runtime::Runtime;
use crate::store::{
    Accepted, IdempotencyKey, InboxMessage, MessageStore, PostgresStore, SessionKey, StoreError,
};

/// A new message's trace id, in the seed's form:
/// `endpoint-httpIncomingMessage-<uuid>`. It names the message in the 202,
/// in every output's body and in the log.
pub(crate) fn new_trace_id() -> String {
    format!("endpoint-httpIncomingMessage-{}", uuid::Uuid::new_v4())
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Too many messages are waiting; the caller should retry later.
    #[error("too many messages {0} are waiting to run")]
    Overloaded(Crowded),
    /// The store could not keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many unfinished messages are read at a time at start.
const RECOVERY_PAGE: usize = 1000;

/// The bytes of messages that lanes carry to their turns at once. A
/// message is at most a request body (`max_body_size`, 1 MiB by default);
/// a few hundred bytes is usual, so this carries tens of thousands.
const CARRIED_BYTES: usize = 16 << 20;

/// A message in its session's lane.
struct Waiting {
    id: i64,
    /// Counts the message as unfinished until its turn ends.
    admitted: Admitted,
    /// The message, when the budget let it be carried.
    carried: Option<Carried<InboxMessage>>,
}

/// The inbox: accepts messages and runs them.
#[derive(Clone)]
pub struct Inbox {
    store: Arc<dyn MessageStore>,
    runs: Runs,
    /// Requests waiting on their message's turn (REST endpoints).
    answers: Arc<Answers>,
}

/// Who runs the messages accepted.
#[derive(Clone)]
enum Runs {
    /// This host, in lanes.
    Here(Local),
    /// Whichever host holds the message's session (the store is shared).
    Shared(Arc<Shared>),
}

/// The inbox of one host.
#[derive(Clone)]
struct Local {
    /// Each session's lane holds message ids: a message is read when its
    /// turn comes, unless it carries itself, so that a backlog costs a few
    /// bytes per message, not its text and data.
    lanes: Lanes<SessionKey, Waiting>,
    carry: Arc<CarryBudget>,
    /// Messages accepted and not yet finished.
    admission: Arc<Admission>,
}

/// What running a message needs.
pub struct TurnRunner {
    /// Where state and outputs are kept.
    pub store: Arc<dyn MessageStore>,
    /// Runs flows.
    pub runtime: Arc<Runtime>,
    /// The flows in service.
    pub flows: Registry,
    /// The endpoints in force.
    pub endpoints: SharedEndpoints,
    /// Takes the outputs.
    pub delivery: Delivery,
    /// Counts turns.
    pub metrics: crate::telemetry::metrics::Metrics,
    /// Told when a REST endpoint's message has ended.
    pub answers: Arc<Answers>,
    /// Cancelled at shutdown: no new message starts after it.
    pub shutdown: CancellationToken,
}

impl Inbox {
    /// An inbox whose lanes run on `runtime`, refusing new messages while
    /// `limits` are reached by the messages waiting or running.
    pub fn new(runtime: Handle, runner: TurnRunner, limits: QueueLimits) -> Inbox {
        let store = Arc::clone(&runner.store);
        let answers = Arc::clone(&runner.answers);
        let runner = Arc::new(runner);
        let lanes = Lanes::new(runtime, move |_session: SessionKey, waiting: Waiting| {
            let runner = Arc::clone(&runner);
            async move {
                let _counted_until_done = waiting.admitted;
                let carried = waiting.carried.map(Carried::take);
                runner.run(waiting.id, carried).await;
                Then::Next
            }
        });
        Inbox {
            store,
            runs: Runs::Here(Local {
                lanes,
                carry: CarryBudget::new(CARRIED_BYTES),
                admission: Arc::new(Admission::new(limits)),
            }),
            answers,
        }
    }

    /// An inbox whose store other hosts share: it runs the sessions this
    /// host claims, whichever host accepted their messages. Returns it and
    /// the tasks that keep its lease and claims (until `runner.shutdown`).
    /// The queue limits are the one-host inbox's: here the database is the
    /// queue.
    pub async fn shared(
        runner: TurnRunner,
        store: Arc<PostgresStore>,
    ) -> Result<(Inbox, Vec<tokio::task::JoinHandle<()>>), StoreError> {
        let runner = Arc::new(runner);
        let (shared, tasks) = Shared::start(store, Arc::clone(&runner)).await?;
        let inbox = Inbox {
            store: Arc::clone(&runner.store),
            runs: Runs::Shared(shared),
            answers: Arc::clone(&runner.answers),
        };
        Ok((inbox, tasks))
    }

    /// Whether hosts share the store, so that another host may run what
    /// this one accepts.
    pub fn is_shared(&self) -> bool {
        matches!(self.runs, Runs::Shared(_))
    }

    /// Accepts a message: returns once it is durable and queued, or once
    /// the store found its idempotency `key` remembered (nothing is queued
    /// then).
    pub async fn accept(
        &self,
        message: InboxMessage,
        key: Option<IdempotencyKey>,
    ) -> Result<Accepted, AcceptError> {
        let local = match &self.runs {
            Runs::Here(local) => local,
            Runs::Shared(_) => {
                // The database tells the host that holds (or claims) the
                // session, this one included, once the message commits.
                return Ok(self.store.accept(message, key, Box::new(|_| {})).await?);
            }
        };
        let session = message.session.clone();
        local
            .admission
            .admit(&session)
            .map_err(AcceptError::Overloaded)?;
        let admitted = Admitted {
            admission: Arc::clone(&local.admission),
            session,
        };
        let lanes = local.lanes.clone();
        let carry = Arc::clone(&local.carry);
        // If the message is not stored, the callback is dropped uncalled,
        // and the count with it.
        let accepted = self
            .store
            .accept(
                message,
                key,
                Box::new(move |message| {
                    let (id, session) = (message.id, message.session.clone());
                    let bytes = message.footprint();
                    let waiting = Waiting {
                        id,
                        admitted,
                        carried: carry.carry(message, bytes),
                    };
                    lanes.push(session, waiting);
                }),
            )
            .await?;
        Ok(accepted)
    }

    /// Queues the messages that were accepted but had not finished when the
    /// host last stopped, read a page at a time (ids and sessions only: each
    /// message is read when its turn comes). Call before accepting new ones.
    /// Where the store is shared, they are claimed like the rest: none here.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let Runs::Here(local) = &self.runs else {
            return Ok(0);
        };
        let mut count = 0;
        let mut after_id = 0;
        loop {
            let page = self
                .store
                .unfinished_messages(after_id, RECOVERY_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(count);
            };
            after_id = last.id;
            count += page.len();
            let full = page.len() == RECOVERY_PAGE;
            for queued in page {
                local.admission.count(&queued.session);
                let admitted = Admitted {
                    admission: Arc::clone(&local.admission),
                    session: queued.session.clone(),
                };
                let waiting = Waiting {
                    id: queued.id,
                    admitted,
                    carried: None,
                };
                local.lanes.push(queued.session, waiting);
            }
            if !full {
                return Ok(count);
            }
        }
    }

    /// Resolves once no message is running. After shutdown, lanes stop
    /// before their next message, so this waits for the running ones only.
    pub async fn idle(&self) {
        match &self.runs {
            Runs::Here(local) => local.lanes.idle().await,
            Runs::Shared(shared) => shared.idle().await,
        }
    }

    /// Where hosts share the store: gives up this host's sessions and
    /// lease, so that the others carry on at once. Call once idle.
    pub async fn leave(&self) {
        if let Runs::Shared(shared) = &self.runs {
            shared.leave().await;
        }
    }
}
