//! Watching a folder for files that changed and have *settled*: written
//! whole, renamed in, or removed.
//!
//! A folder is watched, not single files: an editor or `mv` that replaces a
//! file gives it a new inode, and a watch on the old one goes quiet. Events
//! from notify are folded per path; a path is reported once it has been
//! quiet for `quiet` (debouncing bursts of events) and is not being
//! written: a file written in place is reported after the writer closes it
//! (inotify's close-after-write), however slowly it was written, and a file
//! renamed into place is whole at once. A writer that neither closes nor
//! writes for `write_grace` is taken to be done, for platforms and writers
//! without close events.
//!
//! What a reported path means is up to the caller, who looks at the file
//! as it is then (present or not): events say only where to look.
//!
//! A tree (a flow's sources, for `--watch-build`) is watched folder by
//! folder, leaving out the folders the caller skips, rather than with
//! notify's recursive mode: that would watch a build's `target/` too, tens
//! of thousands of folders that the build makes and deletes, each a watch
//! to add and remove (and a log line when the removal races the deletion).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a writer may pause without closing before its file is taken to
/// be complete.
pub(crate) const WRITE_GRACE: Duration = Duration::from_secs(2);

/// What an event says about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Data was written; more may follow.
    Written,
    /// The writer closed the file, or it was renamed into place, or removed:
    /// no write is in progress.
    Settled,
    /// Something else (metadata): worth a look once quiet.
    Touched,
}

/// Paths with changes not yet reported, and when each is due.
#[derive(Debug)]
pub(crate) struct Settling {
    quiet: Duration,
    write_grace: Duration,
    pending: HashMap<PathBuf, Pending>,
}

#[derive(Debug)]
struct Pending {
    last: Instant,
    writing: bool,
}

impl Settling {
    pub(crate) fn new(quiet: Duration, write_grace: Duration) -> Self {
        Settling {
            quiet,
            write_grace,
            pending: HashMap::new(),
        }
    }

    /// Records a change of `path` at `now`.
    pub(crate) fn observe(&mut self, path: PathBuf, change: Change, now: Instant) {
        let pending = self.pending.entry(path).or_insert(Pending {
            last: now,
            writing: false,
        });
        pending.last = now;
        match change {
            Change::Written => pending.writing = true,
            Change::Settled => pending.writing = false,
            Change::Touched => {}
        }
    }

    fn due_at(&self, pending: &Pending) -> Instant {
        pending.last
            + if pending.writing {
                self.write_grace.max(self.quiet)
            } else {
                self.quiet
            }
    }

    /// When the next path becomes due, if any is pending.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| self.due_at(p)).min()
    }

    /// Removes and returns the paths due at `now`, in path order.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| self.due_at(p) <= now)
            .map(|(path, _)| path.clone())
            .collect();
        for path in &due {
            self.pending.remove(path);
        }
        due.sort();
        due
    }
}

/// Which folders a [`FolderWatch`] watches.
#[derive(Clone, Copy)]
pub(crate) enum Scope {
    /// The folder's own entries.
    Folder,
    /// The folder and its subfolders at any depth, made before or after the
    /// watch started, except the ones `skip` takes (and what is in them).
    Tree {
        /// Whether a subfolder is left out.
        skip: fn(&Path) -> bool,
    },
}

type Shared = Arc<Mutex<notify::RecommendedWatcher>>;

/// A watched folder: [`FolderWatch::next`] gives the paths that settle.
/// Dropping it stops watching.
pub(crate) struct FolderWatch {
    watcher: Shared,
    settled: mpsc::UnboundedReceiver<PathBuf>,
}

impl FolderWatch {
    /// Watches `folder` (its `scope`) for paths that `accept` takes; each
    /// is reported once it has settled (see the module documentation),
    /// after `quiet`.
    pub(crate) fn start(
        folder: &Path,
        scope: Scope,
        quiet: Duration,
        accept: impl Fn(&Path) -> bool + Send + 'static,
    ) -> notify::Result<FolderWatch> {
        let (events, mut incoming) = mpsc::unbounded_channel();
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    let _ = events.send(event);
                }
                Err(error) => tracing::warn!(%error, "file watching reported an error"),
            })?;
        let watcher: Shared = Arc::new(Mutex::new(watcher));
        watch_folders(&watcher, folder, scope)?;

        // The task holds the watcher weakly: dropping the `FolderWatch`
        // drops the watcher, which ends the events, which ends the task.
        let weak = Arc::downgrade(&watcher);
        let (report, settled) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut settling = Settling::new(quiet, WRITE_GRACE);
            loop {
                let due = settling.next_due();
                tokio::select! {
                    event = incoming.recv() => {
                        let Some(event) = event else { return };
                        if let Scope::Tree { .. } = scope {
                            watch_new_folders(&weak, &event, scope);
                        }
                        let Some(change) = classify(&event.kind) else { continue };
                        for path in event.paths.into_iter().filter(|p| accept(p)) {
                            settling.observe(path, change, Instant::now());
                        }
                    }
                    () = sleep_until(due) => {
                        for path in settling.take_due(Instant::now()) {
                            if report.send(path).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(FolderWatch { watcher, settled })
    }

    /// The next path that settled; `None` once watching has stopped.
    pub(crate) async fn next(&mut self) -> Option<PathBuf> {
        // The watcher must live as long as paths are awaited: it is the
        // watch. (Naming it here also keeps a task that moves this struct
        // from moving the receiver alone and dropping the watcher.)
        let _watching = &self.watcher;
        self.settled.recv().await
    }

    /// A path that has settled already, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<PathBuf> {
        self.settled.try_recv().ok()
    }
}

/// Watches `folder` and, for a tree, each subfolder not skipped.
fn watch_folders(watcher: &Shared, folder: &Path, scope: Scope) -> notify::Result<()> {
    let mut watcher = watcher.lock().expect("never poisoned");
    let skip = match scope {
        Scope::Folder => return watcher.watch(folder, RecursiveMode::NonRecursive),
        Scope::Tree { skip } => skip,
    };
    let mut folders = vec![folder.to_owned()];
    while let Some(folder) = folders.pop() {
        watcher.watch(&folder, RecursiveMode::NonRecursive)?;
        // A folder that cannot be read (gone already, say) has nothing to
        // add; its parent's watch still sees it come back.
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && !skip(&path) {
                folders.push(path);
            }
        }
    }
    Ok(())
}

/// Watches the folders an event shows made or moved in.
fn watch_new_folders(
    watcher: &Weak<Mutex<notify::RecommendedWatcher>>,
    event: &notify::Event,
    scope: Scope,
) {
    let Scope::Tree { skip } = scope else { return };
    if !matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
    ) {
        return;
    }
    let Some(watcher) = watcher.upgrade() else {
        return;
    };
    for path in &event.paths {
        if path.is_dir()
            && !skip(path)
            && let Err(error) = watch_folders(&watcher, path, scope)
        {
            tracing::warn!(folder = %path.display(), %error, "cannot watch a new folder");
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn classify(kind: &EventKind) -> Option<Change> {
    Some(match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Settled,
        EventKind::Access(_) => return None,
        EventKind::Create(_) => Change::Written,
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
            Change::Written
        }
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Change::Settled,
        _ => Change::Touched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_reported_once_after_the_quiet_period() {
        let mut settling = Settling::new(Duration::from_millis(100), WRITE_GRACE);
        let start = Instant::now();
        for _ in 0..10 {
            settling.observe(path("a.wasm"), Change::Touched, Instant::now());
            tokio::time::advance(Duration::from_millis(30)).await;
        }
        assert!(
            settling.take_due(Instant::now()).is_empty(),
            "still within the quiet period"
        );
        assert_eq!(
            settling.next_due(),
            Some(start + Duration::from_millis(370))
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(settling.take_due(Instant::now()), [path("a.wasm")]);
        assert_eq!(settling.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_write_waits_for_the_close_however_long_the_pauses() {
        let mut settling = Settling::new(Duration::from_millis(100), WRITE_GRACE);
        for _ in 0..20 {
            settling.observe(path("a.wasm"), Change::Written, Instant::now());
            tokio::time::advance(Duration::from_millis(500)).await;
            assert!(
                settling.take_due(Instant::now()).is_empty(),
                "a pause is not the end"
            );
        }
        settling.observe(path("a.wasm"), Change::Settled, Instant::now());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(settling.take_due(Instant::now()), [path("a.wasm")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_never_closes_is_done_after_the_grace() {
        let mut settling = Settling::new(Duration::from_millis(100), WRITE_GRACE);
        settling.observe(path("a.wasm"), Change::Written, Instant::now());
        tokio::time::advance(WRITE_GRACE - Duration::from_millis(1)).await;
        assert!(settling.take_due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(settling.take_due(Instant::now()), [path("a.wasm")]);
    }

    #[tokio::test(start_paused = true)]
    async fn paths_settle_independently() {
        let mut settling = Settling::new(Duration::from_millis(100), WRITE_GRACE);
        settling.observe(path("a.wasm"), Change::Settled, Instant::now());
        settling.observe(path("b.wasm"), Change::Written, Instant::now());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(settling.take_due(Instant::now()), [path("a.wasm")]);
        settling.observe(path("b.wasm"), Change::Settled, Instant::now());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(settling.take_due(Instant::now()), [path("b.wasm")]);
    }
}
