//! Loading work off the serving path, at low priority.
//!
//! Reading and hashing a 20 MB file, checking its code, loading compiled
//! code: whatever lands in the flows folder (a big flow, or garbage dropped
//! there on purpose) costs CPU, and serving the flows already loaded comes
//! first. So each such job runs on a thread of its own at nice 10, and the
//! kernel gives the threads that serve the CPU before it. A thread costs
//! microseconds to start, nothing next to the work.

use std::io;

/// How much lower than serving loading runs (a nice value; compiles in a
/// child process run at the same).
pub(super) const NICENESS: i32 = 10;

/// Runs `job` on a new low-priority thread and waits for its result.
/// `what` names the work in the error a panic becomes.
pub(super) async fn run<T, F>(what: &str, job: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("flowhost-load".into())
        .spawn(move || {
            lower_priority();
            // The receiver is gone only if the caller gave up.
            let _ = done.send(job());
        })?;
    result
        .await
        .map_err(|_| io::Error::other(format!("the {what} thread failed")))
}

/// Lowers this thread's priority (on Linux, a thread's nice value is its
/// own; elsewhere it would be the whole process's, so it is left alone).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_runs_at_a_lower_priority_and_returns_its_result() {
        let (niceness, answer) = run("test", || {
            let niceness = rustix::process::getpriority_process(None);
            (niceness, 6 * 7)
        })
        .await
        .unwrap();
        assert_eq!(answer, 42);
        if cfg!(target_os = "linux") {
            let serving = rustix::process::getpriority_process(None).unwrap();
            assert_eq!(niceness.unwrap(), (serving + NICENESS).min(19));
        }
    }

    #[tokio::test]
    async fn a_job_that_panics_is_an_error() {
        let error = run("test", || -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(
            error.to_string().contains("the test thread failed"),
            "{error}"
        );
    }
}
