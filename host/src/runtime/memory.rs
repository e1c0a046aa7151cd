//! The linear memory that running turns hold together, bounded for the host
//! and for each flow.
//!
//! `limits.memory` bounds one turn. With thousands of turns in flight (most
//! of them waiting on an API), that alone would let one flow's turns
//! together take the machine: 10,000 turns of 64 MiB each. So every byte a
//! turn's memories are given is also taken from its flow's share and from
//! the host's budget (`runtime.max_total_flow_memory`), and given back when
//! the turn ends. A flow's share is half the budget: a flow that exhausts
//! it fails its own turns (a memory limit), and the other half is left for
//! the other flows.
//!
//! What is counted is the memory a flow was given (its memories' sizes),
//! which is an upper bound on what it can have touched: an honest budget,
//! not a guess at resident pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::LimitExceeded;

/// A number of bytes shared by many turns, never given out past its limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` if they are left.
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The bytes given out now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// What one turn holds of its flow's share and of the host's budget; all
/// of it is given back when the turn's store is dropped.
#[derive(Debug)]
pub(crate) struct Held {
    host: Arc<MemoryBudget>,
    flow: Arc<MemoryBudget>,
    bytes: u64,
}

impl Held {
    pub(crate) fn new(host: Arc<MemoryBudget>, flow: Arc<MemoryBudget>) -> Held {
        Held {
            host,
            flow,
            bytes: 0,
        }
    }

    /// Takes `bytes` more from the flow's share, then from the host's budget.
    pub(crate) fn grow(&mut self, bytes: u64) -> Result<(), LimitExceeded> {
        if !self.flow.take(bytes) {
            return Err(LimitExceeded::FlowMemory(self.flow.limit));
        }
        if !self.host.take(bytes) {
            self.flow.give_back(bytes);
            return Err(LimitExceeded::HostMemory(self.host.limit));
        }
        self.bytes += bytes;
        Ok(())
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back `bytes` taken by [`grow`](Self::grow) (a growth that
    /// failed after it was allowed).
    pub(crate) fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.flow.give_back(bytes);
        self.host.give_back(bytes);
        self.bytes -= bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_takes_at_most_its_share_and_the_host_at_most_its_budget() {
        let host = MemoryBudget::new(100);
        let (a, b) = (MemoryBudget::new(50), MemoryBudget::new(50));
        let mut first = Held::new(host.clone(), a.clone());
        first.grow(30).unwrap();
        let mut second = Held::new(host.clone(), a.clone());
        // Flow a's turns together hold at most its share.
        assert!(matches!(
            second.grow(30),
            Err(LimitExceeded::FlowMemory(50))
        ));
        second.grow(20).unwrap();
        // Flow b has its own share, and the host its budget.
        let mut third = Held::new(host.clone(), b.clone());
        third.grow(50).unwrap();
        let mut c = Held::new(host.clone(), MemoryBudget::new(50));
        assert!(matches!(c.grow(1), Err(LimitExceeded::HostMemory(100))));
        assert_eq!(host.used(), 100);
        // A refused growth took nothing; an ended turn gives all back.
        drop(second);
        assert_eq!((host.used(), a.used()), (80, 30));
        third.shrink(10);
        drop(first);
        assert_eq!((host.used(), a.used(), b.used()), (40, 0, 40));
        drop(third);
        drop(c);
        assert_eq!(host.used(), 0);
    }
}
