//! Reads a flow's files and compiles it off the async threads, through the
//! compile cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::cache::CompileCache;
use super::{LoadedFlow, Manifest, flow_name};
use crate::runtime::{CompiledFlow, Limits, LoadError, ReadyFlow, Runtime};
use crate::store::now_ms;

/// Why a flow file could not be loaded. The previous version, if any, stays
/// in service.
#[derive(Debug, thiserror::Error)]
pub enum FlowLoadError {
    /// The file name is not `<name>.wasm` with a valid name.
    #[error("not a flow file name (want <name>.wasm, name of a-z, 0-9, '-', '_')")]
    NotAFlowFile,
    /// Reading the file failed.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// The manifest is invalid.
    #[error("invalid manifest {file}: {problem}")]
    Manifest {
        /// The manifest's file name.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// The component cannot be used.
    #[error("{0}")]
    Component(#[from] LoadError),
}

/// A flow's files, as read at one moment: `<name>.wasm` and, if present,
/// `<name>.toml`.
pub struct FlowFiles {
    /// The flow's name.
    pub name: String,
    /// The component's path.
    pub path: PathBuf,
    /// The component.
    pub wasm: Vec<u8>,
    /// The manifest's text, if there is one.
    pub manifest: Option<String>,
}

impl FlowFiles {
    /// Reads the flow at `path` (`<name>.wasm`) and its manifest; `None` if
    /// the component is not there.
    pub async fn read(path: &Path) -> Result<Option<FlowFiles>, FlowLoadError> {
        let name = flow_name(path).ok_or(FlowLoadError::NotAFlowFile)?;
        let wasm = match tokio::fs::read(path).await {
            Ok(wasm) => wasm,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest = match tokio::fs::read_to_string(path.with_extension("toml")).await {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Some(FlowFiles {
            name,
            path: path.to_owned(),
            wasm,
            manifest,
        }))
    }

    /// The SHA-256 of the component and the manifest together: a flow is
    /// reloaded only when this changes.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(Sha256::digest(&self.wasm));
        hasher.update(self.manifest.as_deref().unwrap_or_default());
        hasher.finalize().into()
    }
}

/// Loads flows: checks, compiles (or takes from the cache), and prepares
/// them with their limits.
pub struct Loader {
    runtime: Arc<Runtime>,
    defaults: RwLock<Limits>,
    /// Compiling takes a core for tens of milliseconds or more: one at a
    /// time, on a blocking thread, so serving goes on meanwhile.
    compiling: Semaphore,
    cache: Option<Arc<CompileCache>>,
}

impl Loader {
    /// A loader compiling with `runtime`, for flows whose manifests override
    /// `defaults`, keeping compiled code in `cache` if given.
    pub fn new(runtime: Arc<Runtime>, defaults: Limits, cache: Option<CompileCache>) -> Loader {
        Loader {
            runtime,
            defaults: RwLock::new(defaults),
            compiling: Semaphore::new(1),
            cache: cache.map(Arc::new),
        }
    }

    /// Replaces the default limits, for flows loaded from now on.
    pub fn set_defaults(&self, defaults: Limits) {
        *self.defaults.write().unwrap() = defaults;
    }

    /// Reads and loads the flow at `path`.
    pub async fn load_path(&self, path: &Path) -> Result<LoadedFlow, FlowLoadError> {
        let files = FlowFiles::read(path)
            .await?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))?;
        self.load(files).await
    }

    /// Loads a flow from its files.
    pub async fn load(&self, files: FlowFiles) -> Result<LoadedFlow, FlowLoadError> {
        let fingerprint = files.fingerprint();
        let manifest = match &files.manifest {
            Some(text) => Manifest::parse(text),
            None => Ok(Manifest::default()),
        }
        .map_err(|problem| self.invalid(&files.name, problem))?;
        let ready_parts = self.check_manifest(&files.name, &manifest)?;

        let size = files.wasm.len() as u64;
        let limit = self.runtime.max_component_size();
        if size > limit {
            return Err(LoadError::TooLarge { size, limit }.into());
        }
        let content: [u8; 32] = Sha256::digest(&files.wasm).into();
        let started = Instant::now();
        let (compiled, cached) = self.compile(content, files.wasm).await?;
        Ok(LoadedFlow {
            name: files.name,
            version: hex::encode(&content[..8]),
            ready: ReadyFlow::new(compiled.clone(), ready_parts.0, ready_parts.1),
            compiled,
            manifest,
            fingerprint,
            path: files.path,
            size,
            loaded_at: now_ms(),
            from_cache: cached,
            load_time: started.elapsed(),
        })
    }

    /// The same flow with its limits worked out again from the current
    /// defaults (after a configuration change); nothing is recompiled.
    pub fn refresh(&self, flow: &LoadedFlow) -> Result<LoadedFlow, FlowLoadError> {
        let (limits, allowed) = self.check_manifest(&flow.name, &flow.manifest)?;
        Ok(LoadedFlow {
            ready: ReadyFlow::new(flow.compiled.clone(), limits, allowed),
            compiled: flow.compiled.clone(),
            manifest: flow.manifest.clone(),
            name: flow.name.clone(),
            version: flow.version.clone(),
            fingerprint: flow.fingerprint,
            path: flow.path.clone(),
            size: flow.size,
            loaded_at: flow.loaded_at,
            from_cache: flow.from_cache,
            load_time: flow.load_time,
        })
    }

    fn invalid(&self, name: &str, problem: String) -> FlowLoadError {
        FlowLoadError::Manifest {
            file: format!("{name}.toml"),
            problem,
        }
    }

    fn check_manifest(
        &self,
        name: &str,
        manifest: &Manifest,
    ) -> Result<(Limits, crate::runtime::AllowedHosts), FlowLoadError> {
        let defaults = self.defaults.read().unwrap().clone();
        let limits = manifest
            .limits(&defaults)
            .map_err(|p| self.invalid(name, p))?;
        if limits.fuel.is_some() && !self.runtime.fuel_metering() {
            return Err(self.invalid(
                name,
                "limits.fuel: the host does not meter fuel (runtime.fuel_metering)".into(),
            ));
        }
        let allowed = manifest
            .allowed_hosts()
            .map_err(|p| self.invalid(name, p))?;
        Ok((limits, allowed))
    }

    /// Compiled code for the component with this content hash: from the
    /// cache if it holds a verified entry, compiled (and cached) otherwise.
    async fn compile(
        &self,
        content: [u8; 32],
        wasm: Vec<u8>,
    ) -> Result<(CompiledFlow, bool), FlowLoadError> {
        let _compiling = self.compiling.acquire().await.expect("never closed");
        let runtime = Arc::clone(&self.runtime);
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(code) = cache.as_ref().and_then(|c| c.get(&content)) {
                // SAFETY: the cache returns only code that this host compiled
                // and serialized with an engine of the same compatibility key,
                // checked with an HMAC under a key only this host holds.
                #[allow(unsafe_code)]
                match unsafe { runtime.deserialize(&code) } {
                    Ok(compiled) => return Ok((compiled, true)),
                    Err(error) => {
                        tracing::warn!(%error, "a cached compile was refused; recompiling");
                        if let Some(cache) = &cache {
                            cache.remove(&content);
                        }
                    }
                }
            }
            let compiled = runtime.compile(&wasm)?;
            if let Some(cache) = cache {
                // Keeping the code for the next start is not on the way to
                // serving it now.
                let (runtime, compiled) = (Arc::clone(&runtime), compiled.clone());
                tokio::task::spawn_blocking(move || match runtime.serialize(&compiled) {
                    Ok(code) => {
                        if let Err(error) = cache.put(&content, &code) {
                            tracing::warn!(%error, "could not keep the compiled flow in the cache");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not serialize the compiled flow"),
                });
            }
            Ok((compiled, false))
        })
        .await
        .map_err(|e| std::io::Error::other(format!("the compiler thread failed: {e}")))?
    }
}
