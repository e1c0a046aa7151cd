//! The threads flows run on, apart from the ones serving HTTP, and the
//! bound on how many of them one flow holds at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;

/// A flow's turn that is polled only while it holds one of its flow's
/// thread permits, and gives it back between polls: a flow is on no more
/// threads at once than it has permits, however many of its turns are
/// running. Its turns take the permits in turn (the semaphore is fair), and
/// one waiting for a host call holds none.
pub(super) struct OnThreads<F> {
    turn: Pin<Box<F>>,
    permits: PollSemaphore,
}

impl<F: Future> OnThreads<F> {
    pub(super) fn new(turn: F, permits: Arc<Semaphore>) -> Self {
        OnThreads {
            turn: Box::pin(turn),
            permits: PollSemaphore::new(permits),
        }
    }
}

impl<F: Future> Future for OnThreads<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(_permit) = std::task::ready!(self.permits.poll_acquire(cx)) else {
            unreachable!("a flow's thread permits are never closed")
        };
        self.turn.as_mut().poll(cx)
    }
}

/// The tokio runtime that flows run on, apart from the one serving HTTP.
pub(super) struct Executor {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Executor {
    pub(super) fn new(threads: usize) -> anyhow::Result<Executor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("flowhost-flow")
            .enable_all()
            .build()?;
        Ok(Executor {
            runtime: Some(runtime),
        })
    }

    pub(super) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the executor runs until dropped")
            .spawn(future)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks finish, which is not
        // allowed inside another runtime; running flows were already
        // cancelled by their callers.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct Counts {
        on_threads: AtomicUsize,
        most_on_threads: AtomicUsize,
        finished: AtomicUsize,
    }

    /// A turn that does work which cannot yield (like one `memory.fill` of
    /// 50 MB): it blocks its thread for a while in one poll, counting how
    /// many of its flow's turns are on a thread at once.
    async fn blocking_turn(counts: Arc<Counts>) {
        let now = counts.on_threads.fetch_add(1, Ordering::SeqCst) + 1;
        counts.most_on_threads.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        counts.on_threads.fetch_sub(1, Ordering::SeqCst);
        counts.finished.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_flow_never_holds_every_flow_thread() {
        let executor = Executor::new(2).unwrap();
        // What `ReadyFlow::new` gives a flow on two flow threads.
        let permits = Arc::new(Semaphore::new(1));
        let counts = Arc::new(Counts::default());
        let hostile: Vec<_> = (0..4)
            .map(|_| {
                let turn = blocking_turn(Arc::clone(&counts));
                executor.spawn(OnThreads::new(turn, Arc::clone(&permits)))
            })
            .collect();
        // Another flow's turn, started while the first flow's are blocking,
        // runs beside them instead of after them.
        std::thread::sleep(Duration::from_millis(20));
        let beside = executor.spawn(OnThreads::new(
            {
                let counts = Arc::clone(&counts);
                async move { counts.finished.load(Ordering::SeqCst) }
            },
            Arc::new(Semaphore::new(1)),
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(
                beside.await.unwrap(),
                0,
                "the other flow waited for the first flow's turns"
            );
            for turn in hostile {
                turn.await.unwrap();
            }
        });
        assert_eq!(
            counts.most_on_threads.load(Ordering::SeqCst),
            1,
            "the flow was on both threads at once"
        );
    }
}
