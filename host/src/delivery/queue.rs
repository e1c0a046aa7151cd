//! What delivery's lanes hold, and the sessions whose lane broke.
//!
//! An output is in one lane at most, once: a [`Waiting`] holds its place
//! in [`Queue`] until it leaves its lane, delivered or dropped.
//!
//! A session's lane **breaks** when one of its outputs cannot be sent in
//! its turn because this host does not hold the session when it is due:
//! its lease lapsed by its own clock (a pause, a slow database), or another
//! host took the session. That output stays pending in the outbox, and so
//! must every output behind it: were the lane to go on, a later output
//! would reach the receiver now and the earlier one only once the session
//! is taken up again, out of order. So the lane drops what waits in it,
//! and outputs queued for the session afterwards are dropped too (each is
//! in the outbox), until the session is taken up again: its pending
//! outputs are read from the outbox and queued in order
//! ([`Delivery::take_up`](super::Delivery::take_up)). Outputs queued while
//! that read runs wait beside it, and join what it read, in order.
//!
//! Only hosts that share a store hold sessions, so only their lanes break.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::lanes::Carried;
use crate::store::{PendingOutput, Queued, SessionKey};

/// An output in its lane: what orders it, and the output itself when it
/// was just committed and the budget let it be carried.
pub(super) struct Waiting {
    pub(super) queued: Queued,
    pub(super) carried: Option<Carried<PendingOutput>>,
    /// The courier's count of removals when it was queued: a carried
    /// output is read again if outputs were removed since.
    pub(super) removals: u64,
    /// Its place in the queue, given back when it is dropped.
    _in_lane: InLane,
}

/// The outputs in lanes, and the sessions whose lane broke.
#[derive(Default)]
pub(super) struct Queue {
    /// The outputs in a lane, or waiting to join one.
    queued: Mutex<HashSet<i64>>,
    broken: Mutex<HashMap<SessionKey, Broken>>,
}

/// A session whose lane broke.
pub(super) enum Broken {
    /// Outputs queued for it are dropped: the read that takes the session
    /// up again finds them in the outbox.
    Dropping,
    /// Its pending outputs are being read again; outputs queued meanwhile
    /// wait here, to join them in order.
    Reading(Vec<Waiting>),
}

impl Queue {
    /// `queued` in its lane, unless it is in one already.
    pub(super) fn waiting(
        self: &Arc<Self>,
        queued: Queued,
        carried: Option<Carried<PendingOutput>>,
        removals: u64,
    ) -> Option<Waiting> {
        if !self.queued.lock().unwrap().insert(queued.id) {
            return None;
        }
        Some(Waiting {
            _in_lane: InLane {
                id: queued.id,
                queue: Arc::clone(self),
            },
            queued,
            carried,
            removals,
        })
    }

    /// The broken sessions, locked: hold it while pushing into lanes, so
    /// that a lane breaking meanwhile drops what was pushed.
    pub(super) fn broken(&self) -> MutexGuard<'_, HashMap<SessionKey, Broken>> {
        self.broken.lock().unwrap()
    }

    /// Marks `session`'s lane broken (its lane drops what waits in it).
    pub(super) fn break_lane(&self, session: SessionKey) {
        tracing::info!(
            session = %session.logged_id(),
            "this host does not hold the session now; its outputs wait in the outbox until it is taken up again"
        );
        self.broken().insert(session, Broken::Dropping);
    }

    /// The sessions whose lane broke and that no read is taking up.
    pub(super) fn to_take_up(&self) -> Vec<SessionKey> {
        self.broken()
            .iter()
            .filter(|(_, broken)| matches!(broken, Broken::Dropping))
            .map(|(session, _)| session.clone())
            .collect()
    }

    /// Forgets that `session`'s lane broke, if no read is taking it up:
    /// another host holds it now.
    pub(super) fn forget(&self, session: &SessionKey) {
        let mut broken = self.broken();
        if matches!(broken.get(session), Some(Broken::Dropping)) {
            broken.remove(session);
        }
    }
}

/// An output's place in [`Queue`].
struct InLane {
    id: i64,
    queue: Arc<Queue>,
}

impl Drop for InLane {
    fn drop(&mut self) {
        self.queue.queued.lock().unwrap().remove(&self.id);
    }
}
