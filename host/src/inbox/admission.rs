//! Admission: how many accepted messages may wait, in all, per endpoint and
//! per session, so that one flooded endpoint or session cannot make the
//! others refuse messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::SessionKey;

/// Which cap on unfinished messages a message would have gone over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// `max_queued_messages`: the host's.
    Host,
    /// `max_queued_per_endpoint`: its endpoint's.
    Endpoint,
    /// `max_queued_per_session`: its session's.
    Session,
}

impl std::fmt::Display for Crowded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Crowded::Host => "of all endpoints",
            Crowded::Endpoint => "of this endpoint",
            Crowded::Session => "of this session",
        })
    }
}

/// The caps on messages accepted and not yet finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// In all.
    pub total: usize,
    /// Of one endpoint.
    pub per_endpoint: usize,
    /// Of one session.
    pub per_session: usize,
}

/// Counts unfinished messages in all, per endpoint and per session, and
/// admits a message only if none of the three is at its cap. One cap for
/// all let one flooded session or slow flow fill the queue and make every
/// other endpoint answer 503. The three counts sit under one lock, so
/// that checking all three and counting the message is one step: with
/// separate counters, two requests could both pass a cap that had room for
/// one.
pub(super) struct Admission {
    limits: QueueLimits,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only endpoints and sessions with unfinished messages have an entry.
    endpoints: HashMap<String, usize>,
    sessions: HashMap<SessionKey, usize>,
}

impl Admission {
    pub(super) fn new(limits: QueueLimits) -> Admission {
        Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Counts a message of `session` if every cap has room for it.
    pub(super) fn admit(&self, session: &SessionKey) -> Result<(), Crowded> {
        let mut counts = self.counts.lock().unwrap();
        if counts.total >= self.limits.total {
            return Err(Crowded::Host);
        }
        if counts
            .endpoints
            .get(&session.endpoint)
            .copied()
            .unwrap_or(0)
            >= self.limits.per_endpoint
        {
            return Err(Crowded::Endpoint);
        }
        if counts.sessions.get(session).copied().unwrap_or(0) >= self.limits.per_session {
            return Err(Crowded::Session);
        }
        counts.add(session);
        Ok(())
    }

    /// Counts a message of `session` whatever the caps: one accepted by an
    /// earlier run, which must run.
    pub(super) fn count(&self, session: &SessionKey) {
        self.counts.lock().unwrap().add(session);
    }

    /// A message of `session` finished (or was not kept after all).
    pub(super) fn release(&self, session: &SessionKey) {
        let mut counts = self.counts.lock().unwrap();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.endpoints.get_mut(&session.endpoint) {
            *n -= 1;
            if *n == 0 {
                counts.endpoints.remove(&session.endpoint);
            }
        }
        if let Some(n) = counts.sessions.get_mut(session) {
            *n -= 1;
            if *n == 0 {
                counts.sessions.remove(session);
            }
        }
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.counts.lock().unwrap().total
    }
}

/// A message counted by [`Admission`], given back when this is dropped:
/// however its run ends (finished, not stored after all, panicked, or left
/// for the next start), the counts cannot leak into a cap that answers 503
/// for good.
pub(super) struct Admitted {
    pub(super) admission: Arc<Admission>,
    pub(super) session: SessionKey,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(&self.session);
    }
}

impl Counts {
    fn add(&mut self, session: &SessionKey) {
        self.total += 1;
        *self.endpoints.entry(session.endpoint.clone()).or_default() += 1;
        *self.sessions.entry(session.clone()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(endpoint: &str, id: &str) -> SessionKey {
        SessionKey {
            endpoint: endpoint.into(),
            session_id: id.into(),
        }
    }

    #[test]
    fn a_crowded_session_or_endpoint_leaves_room_for_the_others() {
        let admission = Admission::new(QueueLimits {
            total: 5,
            per_endpoint: 3,
            per_session: 2,
        });
        let (a1, a2, a3, b1) = (
            session("a", "1"),
            session("a", "2"),
            session("a", "3"),
            session("b", "1"),
        );
        assert_eq!(admission.admit(&a1), Ok(()));
        assert_eq!(admission.admit(&a1), Ok(()));
        assert_eq!(admission.admit(&a1), Err(Crowded::Session));
        assert_eq!(admission.admit(&a2), Ok(()));
        assert_eq!(admission.admit(&a3), Err(Crowded::Endpoint));
        assert_eq!(admission.admit(&b1), Ok(()), "another endpoint has room");
        assert_eq!(admission.admit(&b1), Ok(()));
        assert_eq!(admission.admit(&session("c", "1")), Err(Crowded::Host));
        assert_eq!(admission.total(), 5);

        admission.release(&a1);
        assert_eq!(
            admission.admit(&a3),
            Ok(()),
            "a finished message frees its place"
        );
        for key in [&a1, &a2, &a3, &b1, &b1] {
            admission.release(key);
        }
        assert_eq!(admission.total(), 0);
        let counts = admission.counts.lock().unwrap();
        assert!(counts.endpoints.is_empty() && counts.sessions.is_empty());
    }

    #[test]
    fn recovered_messages_count_whatever_the_caps() {
        let admission = Admission::new(QueueLimits {
            total: 1,
            per_endpoint: 1,
            per_session: 1,
        });
        let a1 = session("a", "1");
        admission.count(&a1);
        admission.count(&a1);
        assert_eq!(admission.total(), 2);
        assert_eq!(admission.admit(&session("b", "1")), Err(Crowded::Host));
    }
}
