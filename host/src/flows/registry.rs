//! The flows in service, by name, and the last load failure of each name.
//!
//! A lookup hands out an `Arc` of one version, so a message keeps the
//! version it started with for as long as it runs, whatever replaces it in
//! the meantime; the next lookup sees the replacement.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::LoadedFlow;

/// Why the latest files of a flow did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// The fingerprint of the files that failed, so the same files are not
    /// tried (and reported) again.
    pub fingerprint: [u8; 32],
    /// The component's path.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: i64,
}

/// The flows in service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    flows: Arc<RwLock<HashMap<String, Arc<LoadedFlow>>>>,
    failures: Arc<RwLock<HashMap<String, LoadFailure>>>,
    /// Bumped on every change, to wake messages waiting for a flow.
    changes: watch::Sender<u64>,
    /// Whether the flows folder has been loaded once since the start:
    /// until then a flow that is not in service may still be on its way.
    settled: Arc<AtomicBool>,
    /// The flows whose files were in the folder at the start.
    expected: Arc<RwLock<HashSet<String>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            flows: Arc::default(),
            failures: Arc::default(),
            changes: watch::Sender::new(0),
            settled: Arc::default(),
            expected: Arc::default(),
        }
    }
}

impl Registry {
    /// The current version of the flow `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedFlow>> {
        self.flows.read().unwrap().get(name).cloned()
    }

    /// Puts `flow` in service, replacing any version of the same name, and
    /// forgets the name's load failure. Returns the version it replaced.
    pub fn insert(&self, flow: LoadedFlow) -> Option<Arc<LoadedFlow>> {
        self.failures.write().unwrap().remove(&flow.name);
        let replaced = self
            .flows
            .write()
            .unwrap()
            .insert(flow.name.clone(), Arc::new(flow));
        self.changes.send_modify(|n| *n += 1);
        replaced
    }

    /// Notes the flows whose files are in the folder at the start, before
    /// they are loaded.
    pub fn expect(&self, names: &[String]) {
        self.expected.write().unwrap().extend(names.iter().cloned());
    }

    /// Says that the flows folder has been loaded once: from now on a flow
    /// not in service is not on its way.
    pub fn mark_settled(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// Whether the flow `name` is in service, or may soon be: its file was
    /// in the folder at the start, and the folder is still being loaded. An
    /// endpoint accepts messages for such a flow (they wait for it) and
    /// answers 503 for any other.
    pub fn serves_or_may_serve(&self, name: &str) -> bool {
        self.get(name).is_some()
            || (!self.settled.load(Ordering::Acquire)
                && self.expected.read().unwrap().contains(name))
    }

    /// Takes the flow `name` out of service.
    pub fn remove(&self, name: &str) -> Option<Arc<LoadedFlow>> {
        self.failures.write().unwrap().remove(name);
        let removed = self.flows.write().unwrap().remove(name);
        self.changes.send_modify(|n| *n += 1);
        removed
    }

    /// Records why the latest files of `name` did not load.
    pub fn record_failure(&self, name: &str, failure: LoadFailure) {
        self.failures
            .write()
            .unwrap()
            .insert(name.to_owned(), failure);
    }

    /// Why the latest files of `name` did not load, if they did not.
    pub fn failure(&self, name: &str) -> Option<LoadFailure> {
        self.failures.read().unwrap().get(name).cloned()
    }

    /// Every flow in service, by name.
    pub fn all(&self) -> Vec<Arc<LoadedFlow>> {
        let mut all: Vec<_> = self.flows.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every load failure, by name.
    pub fn failures(&self) -> Vec<(String, LoadFailure)> {
        let mut all: Vec<_> = self
            .failures
            .read()
            .unwrap()
            .iter()
            .map(|(name, failure)| (name.clone(), failure.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The flow `name`, waiting until it is in service; `None` if `stop` is
    /// cancelled first.
    pub async fn wait_for(&self, name: &str, stop: &CancellationToken) -> Option<Arc<LoadedFlow>> {
        let mut changes = self.changes.subscribe();
        loop {
            if let Some(flow) = self.get(name) {
                return Some(flow);
            }
            tokio::select! {
                changed = changes.changed() => changed.ok()?,
                () = stop.cancelled() => return None,
            }
        }
    }
}
