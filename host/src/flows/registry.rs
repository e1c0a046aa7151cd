//! The flows in service, by name.
//!
//! A lookup hands out an `Arc` of one version, so a message keeps the
//! version it started with for as long as it runs, whatever replaces it in
//! the meantime; the next lookup sees the replacement.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::LoadedFlow;

/// The flows in service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    flows: Arc<RwLock<HashMap<String, Arc<LoadedFlow>>>>,
    /// Bumped on every change, to wake messages waiting for a flow.
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            flows: Arc::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl Registry {
    /// The current version of the flow `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedFlow>> {
        self.flows.read().unwrap().get(name).cloned()
    }

    /// Puts `flow` in service, replacing any version of the same name.
    /// Returns the version it replaced.
    pub fn insert(&self, flow: LoadedFlow) -> Option<Arc<LoadedFlow>> {
        let replaced = self
            .flows
            .write()
            .unwrap()
            .insert(flow.name.clone(), Arc::new(flow));
        self.changes.send_modify(|n| *n += 1);
        replaced
    }

    /// Takes the flow `name` out of service.
    pub fn remove(&self, name: &str) -> Option<Arc<LoadedFlow>> {
        let removed = self.flows.write().unwrap().remove(name);
        self.changes.send_modify(|n| *n += 1);
        removed
    }

    /// Every flow in service, by name.
    pub fn all(&self) -> Vec<Arc<LoadedFlow>> {
        let mut all: Vec<_> = self.flows.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
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
