//! The flows folder, kept in step with the registry: every `<name>.wasm`
//! (with its `<name>.toml`) loaded, replaced when it changes, unloaded when
//! it goes.
//!
//! The watcher only says which flow to look at; [`FlowFolder::reconcile`]
//! looks at the files as they are and makes the registry match: nothing
//! new (same fingerprint) does nothing; a new version is compiled and swapped
//! in (messages running on the old one finish on it); a file that fails to
//! load is reported once, in one log line, and the previous version keeps
//! serving; a missing file unloads the flow, and messages for it wait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{LoadFailure, Loader, Registry, flow_of};
use crate::store::now_ms;
use crate::telemetry::metrics::Metrics;
use crate::watch::{FolderWatch, Scope};

/// The flows folder and what is loaded from it.
pub struct FlowFolder {
    dir: PathBuf,
    loader: Arc<Loader>,
    registry: Registry,
    /// One reconcile at a time per flow, so a flow is never loaded twice at
    /// once; different flows load side by side, so that one slow file holds
    /// up no other.
    reconciling: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Counts loads.
    metrics: Metrics,
}

impl FlowFolder {
    /// The folder `dir`, loading with `loader` into `registry`.
    pub fn new(dir: PathBuf, loader: Arc<Loader>, registry: Registry) -> Self {
        FlowFolder {
            dir,
            loader,
            registry,
            reconciling: Default::default(),
            metrics: Metrics::off(),
        }
    }

    /// The same, counting its loads in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The loader, to change its defaults.
    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    /// The flows in the folder (`<name>.wasm` files), which the registry
    /// then expects: until they are loaded (or fail to), their endpoints
    /// accept messages, which wait for them. Cheap: call it before serving,
    /// then [`load`](Self::load) them while serving.
    pub async fn list(&self) -> std::io::Result<Vec<String>> {
        if !self.dir.exists() {
            tracing::warn!(folder = %self.dir.display(), "the flows folder does not exist; no flows loaded");
            return Ok(Vec::new());
        }
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if let Some(name) = super::flow_name(&path) {
                names.push(name);
            } else if super::is_misnamed_flow(&path) {
                warn_misnamed(&path);
            }
        }
        names.sort();
        self.registry.expect(&names);
        Ok(names)
    }

    /// Loads the flows `names` side by side (cached ones at once; compiles
    /// wait their turn for the compiler), then marks the registry settled.
    pub async fn load(&self, names: &[String]) {
        futures::future::join_all(names.iter().map(|name| self.reconcile(name))).await;
        self.registry.mark_settled();
        tracing::info!(
            flows = self.registry.all().len(),
            failed = self.registry.failures().len(),
            "flows folder loaded"
        );
    }

    /// The lock of one flow's reconciles.
    fn lock_of(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.reconciling.lock().unwrap();
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    /// Makes the registry match the files of the flow `name`.
    pub async fn reconcile(&self, name: &str) {
        let lock = self.lock_of(name);
        let _one_at_a_time = lock.lock().await;
        let path = self.dir.join(format!("{name}.wasm"));
        let files = match self.loader.read(&path).await {
            Ok(Some(files)) => files,
            Ok(None) => {
                if let Some(gone) = self.registry.remove(name) {
                    tracing::warn!(
                        flow = %name,
                        version = %gone.version,
                        "flow file removed: the flow is unloaded; its endpoints answer 503 and accepted messages wait for it"
                    );
                }
                return;
            }
            Err(error) => {
                tracing::error!(flow = %name, path = %path.display(), %error, "flow not loaded");
                return;
            }
        };
        let fingerprint = files.fingerprint();
        let current = self.registry.get(name);
        if current
            .as_ref()
            .is_some_and(|f| f.fingerprint == fingerprint)
            || self
                .registry
                .failure(name)
                .is_some_and(|f| f.fingerprint == fingerprint)
        {
            return; // Nothing new.
        }
        let size = files.wasm.len();
        let stamp = files.stamp();
        match self.loader.load(files).await {
            Ok(flow) => {
                let (version, cached, took) =
                    (flow.version.clone(), flow.from_cache, flow.load_time);
                let world = flow.compiled.world();
                self.metrics.flow_loaded(name, cached, took);
                let previous = self.registry.insert(flow);
                tracing::info!(
                    flow = %name,
                    version = %version,
                    %world,
                    replaced = %previous.as_ref().map(|p| p.version.as_str()).unwrap_or("-"),
                    from_cache = cached,
                    took_ms = took.as_millis() as u64,
                    size,
                    "flow loaded"
                );
            }
            Err(error) => {
                // A file still being written fails too; if it has changed
                // since it was read, its next change brings it back here.
                if stamp.changed().await {
                    return;
                }
                match &current {
                    Some(serving) => tracing::error!(
                        flow = %name,
                        path = %path.display(),
                        reason = %error,
                        serving = %serving.version,
                        "flow not loaded; the previous version keeps serving"
                    ),
                    None => tracing::error!(
                        flow = %name,
                        path = %path.display(),
                        reason = %error,
                        "flow not loaded; its endpoints answer 503 until a file that loads replaces it"
                    ),
                }
                self.metrics.flow_load_failed(name);
                self.registry.record_failure(
                    name,
                    LoadFailure {
                        fingerprint,
                        path,
                        reason: error.to_string(),
                        at: now_ms(),
                    },
                );
            }
        }
    }

    /// Works out every loaded flow's limits again (after the default limits
    /// changed). Nothing is recompiled.
    pub async fn refresh_limits(&self) {
        for name in self.registry.all().iter().map(|flow| flow.name.clone()) {
            let lock = self.lock_of(&name);
            let _one_at_a_time = lock.lock().await;
            // Looked up under the lock: a reload may have replaced it.
            let Some(flow) = self.registry.get(&name) else {
                continue;
            };
            match self.loader.refresh(&flow) {
                Ok(refreshed) => {
                    self.registry.insert(refreshed);
                }
                Err(error) => {
                    tracing::error!(flow = %flow.name, %error, "the flow keeps its old limits")
                }
            }
        }
    }

    /// Watches the folder, reconciling each flow whose files settle, until
    /// the handle is dropped or aborted.
    pub fn watch(self: &Arc<Self>, quiet: Duration) -> notify::Result<JoinHandle<()>> {
        let mut watch = FolderWatch::start(&self.dir, Scope::Folder, quiet, |path| {
            flow_of(path).is_some() || super::is_misnamed_flow(path)
        })?;
        let folder = Arc::clone(self);
        Ok(tokio::spawn(async move {
            // Each change is reconciled in a task of its own, so that a flow
            // that is slow to compile holds up no other flow's reload (the
            // flow's own lock keeps its changes in order). Dropping the set,
            // when this task is aborted at shutdown, aborts them all.
            let mut reconciling = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    path = watch.next() => {
                        let Some(path) = path else { break };
                        if let Some(name) = flow_of(&path) {
                            let folder = Arc::clone(&folder);
                            reconciling.spawn(async move { folder.reconcile(&name).await });
                        } else if path.exists() {
                            warn_misnamed(&path);
                        }
                    }
                    Some(_) = reconciling.join_next() => {}
                }
            }
        }))
    }
}

fn warn_misnamed(path: &Path) {
    tracing::warn!(
        path = %path.display(),
        rule = super::NAME_RULE,
        "not loaded: the file name is not a flow name; rename it"
    );
}
