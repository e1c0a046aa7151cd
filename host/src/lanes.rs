//! One lane per key: jobs of a key run one at a time in the order they were
//! pushed; jobs of different keys run concurrently.
//!
//! The inbox runs messages in lanes keyed by session, and delivery sends
//! outputs in lanes keyed by session, which is how both keep a session's
//! order without a lock per session or a task per idle session: a lane
//! exists only while it has work, as one task that drains its queue and
//! then removes itself.
//!
//! A lane holds ids, so that a backlog costs a few dozen bytes per entry;
//! its job reads the rest when its turn comes. But a message just accepted,
//! or an output just committed, is in memory already, and most turns come
//! within milliseconds: reading it back would cost a read of what was just
//! written, once per message and once per output. So a job may also carry
//! its value, [`Carried`], while a [`CarryBudget`] of bytes allows; past it,
//! jobs carry ids only and are read as before, so a backlog still costs
//! ids.
//!
//! A job may also end its lane ([`Then::Clear`]): delivery does so when an
//! output cannot be sent in its turn, so that none behind it goes first.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

type Work<K, J> = Arc<dyn Fn(K, J) -> Pin<Box<dyn Future<Output = Then> + Send>> + Send + Sync>;

/// What a lane does once a job is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Runs the next job, if there is one.
    Next,
    /// Drops the jobs waiting behind this one and ends the lane: whoever
    /// pushed them pushes them again, in order, once what this job left
    /// undone can be done.
    Clear,
}

/// Per-key FIFO lanes over a shared worker function.
pub(crate) struct Lanes<K, J> {
    inner: Arc<Inner<K, J>>,
}

struct Inner<K, J> {
    /// The jobs waiting behind the running one, per key with a running job.
    queues: Mutex<HashMap<K, VecDeque<J>>>,
    work: Work<K, J>,
    runtime: Handle,
    tasks: TaskTracker,
}

impl<K, J> Clone for Lanes<K, J> {
    fn clone(&self) -> Self {
        Lanes {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, J> Lanes<K, J>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + Sync + 'static,
    J: Send + 'static,
{
    /// Lanes that run `work` for each job, on `runtime`.
    pub(crate) fn new<F, Fut>(runtime: Handle, work: F) -> Self
    where
        F: Fn(K, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Then> + Send + 'static,
    {
        Lanes {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::new()),
                work: Arc::new(move |key, job| Box::pin(work(key, job))),
                runtime,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Queues `job` behind the jobs of `key`, starting the lane if idle. May
    /// be called from any thread.
    pub(crate) fn push(&self, key: K, job: J) {
        let mut queues = self.inner.queues.lock().unwrap();
        match queues.entry(key) {
            Entry::Occupied(mut waiting) => waiting.get_mut().push_back(job),
            Entry::Vacant(idle) => {
                let key = idle.key().clone();
                idle.insert(VecDeque::new());
                drop(queues);
                let inner = Arc::clone(&self.inner);
                self.inner
                    .tasks
                    .spawn_on(run_lane(inner, key, job), &self.inner.runtime);
            }
        }
    }

    /// Resolves once no lane is running. Lanes started later are not waited
    /// for, so stop pushing first.
    pub(crate) async fn idle(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.tasks.reopen();
    }
}

async fn run_lane<K, J>(inner: Arc<Inner<K, J>>, key: K, mut job: J)
where
    K: Clone + Eq + Hash + std::fmt::Display,
{
    loop {
        // A panicking job must not wedge its lane: log it and go on.
        let run = (inner.work)(key.clone(), job);
        let then = match AssertUnwindSafe(run).catch_unwind().await {
            Ok(then) => then,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(lane = %key, panic = %message, "a job panicked; its lane goes on");
                Then::Next
            }
        };
        let mut queues = inner.queues.lock().unwrap();
        if then == Then::Clear {
            let dropped = queues.remove(&key);
            // Dropped outside the lock: a job's drop may take locks of its
            // own.
            drop(queues);
            drop(dropped);
            return;
        }
        let next = queues.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(next) => job = next,
            None => {
                queues.remove(&key);
                return;
            }
        }
    }
}

/// The bytes that jobs may carry in memory at once, shared by the lanes of
/// one kind.
pub(crate) struct CarryBudget {
    left: AtomicUsize,
}

impl CarryBudget {
    pub(crate) fn new(bytes: usize) -> Arc<CarryBudget> {
        Arc::new(CarryBudget {
            left: AtomicUsize::new(bytes),
        })
    }

    /// `value`, taking `bytes` of the budget until it is taken back out or
    /// dropped; `None` when the budget has not that many left.
    pub(crate) fn carry<T>(self: &Arc<Self>, value: T, bytes: usize) -> Option<Carried<T>> {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .ok()?;
        Some(Carried {
            value: Some(value),
            bytes,
            budget: Arc::clone(self),
        })
    }
}

/// A value a job carries, holding its bytes of a [`CarryBudget`].
pub(crate) struct Carried<T> {
    /// `Some` until taken.
    value: Option<T>,
    bytes: usize,
    budget: Arc<CarryBudget>,
}

impl<T> Carried<T> {
    /// The value; its bytes go back to the budget.
    pub(crate) fn take(mut self) -> T {
        self.value.take().expect("taken only once")
    }
}

impl<T> Drop for Carried<T> {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_order_per_key_and_runs_keys_concurrently() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lanes = {
            let (log, running, most) = (log.clone(), running.clone(), most.clone());
            Lanes::new(Handle::current(), move |key: String, n: u32| {
                let (log, running, most) = (log.clone(), running.clone(), most.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    log.lock().unwrap().push((key, n));
                    running.fetch_sub(1, SeqCst);
                    Then::Next
                }
            })
        };
        for n in 0..20 {
            for key in ["a", "b", "c"] {
                lanes.push(key.to_string(), n);
            }
        }
        lanes.idle().await;
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 60);
        for key in ["a", "b", "c"] {
            let order: Vec<u32> = log
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(order, (0..20).collect::<Vec<_>>());
        }
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "one job per key at a time, keys concurrently"
        );
        assert!(
            lanes.inner.queues.lock().unwrap().is_empty(),
            "idle lanes remove themselves"
        );
    }

    #[test]
    fn what_is_carried_is_bounded_and_given_back() {
        let budget = CarryBudget::new(100);
        let first = budget.carry("first", 60).expect("within the budget");
        assert!(
            budget.carry("second", 60).is_none(),
            "60 more bytes are past the budget"
        );
        let small = budget.carry("small", 40).expect("the rest of the budget");
        assert_eq!(first.take(), "first");
        drop(small);
        let again = budget.carry("again", 100);
        assert!(
            again.is_some(),
            "taken and dropped values give their bytes back"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_stop_its_lane() {
        let done = Arc::new(Mutex::new(Vec::new()));
        let lanes = {
            let done = done.clone();
            Lanes::new(Handle::current(), move |_key: String, n: u32| {
                let done = done.clone();
                async move {
                    assert_ne!(n, 1, "job 1 panics");
                    done.lock().unwrap().push(n);
                    Then::Next
                }
            })
        };
        for n in 0..3 {
            lanes.push("a".to_string(), n);
        }
        lanes.idle().await;
        assert_eq!(*done.lock().unwrap(), [0, 2]);
    }

    #[tokio::test]
    async fn a_job_that_clears_its_lane_drops_the_jobs_behind_it() {
        let done = Arc::new(Mutex::new(Vec::new()));
        // The first job of each lane tells it runs, and waits to be let end.
        let (runs, mut running) = tokio::sync::mpsc::unbounded_channel();
        let (let_end, may_end) = tokio::sync::watch::channel(false);
        let lanes = {
            let done = done.clone();
            Lanes::new(Handle::current(), move |key: String, n: u32| {
                let (done, runs, mut may_end) = (done.clone(), runs.clone(), may_end.clone());
                async move {
                    done.lock().unwrap().push((key.clone(), n));
                    if n == 0 {
                        runs.send(()).unwrap();
                        may_end.wait_for(|may| *may).await.unwrap();
                    }
                    if key == "a" && n == 0 {
                        Then::Clear
                    } else {
                        Then::Next
                    }
                }
            })
        };
        lanes.push("a".to_string(), 0);
        lanes.push("b".to_string(), 0);
        running.recv().await.unwrap();
        running.recv().await.unwrap();
        for n in 1..3 {
            lanes.push("a".to_string(), n);
            lanes.push("b".to_string(), n);
        }
        let_end.send(true).unwrap();
        lanes.idle().await;
        // Pushed after the clear: a lane of its own.
        lanes.push("a".to_string(), 3);
        lanes.idle().await;
        let mut done = done.lock().unwrap().clone();
        done.sort();
        let expected = [("a", 0), ("a", 3), ("b", 0), ("b", 1), ("b", 2)];
        assert_eq!(done, expected.map(|(k, n)| (k.to_string(), n)));
    }
}
