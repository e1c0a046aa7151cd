//! Reads a flow's file and manifest, and compiles it off the async threads.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{LoadedFlow, Manifest, flow_name};
use crate::runtime::{Limits, LoadError, ReadyFlow, Runtime};
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

/// Loads flow files.
pub struct Loader {
    runtime: Arc<Runtime>,
    defaults: Limits,
    /// Compiling takes a core for tens of milliseconds or more: one at a
    /// time, on a blocking thread, so serving goes on meanwhile.
    compiling: Semaphore,
}

impl Loader {
    /// A loader compiling with `runtime`, for flows whose manifests override
    /// `defaults`.
    pub fn new(runtime: Arc<Runtime>, defaults: Limits) -> Loader {
        Loader {
            runtime,
            defaults,
            compiling: Semaphore::new(1),
        }
    }

    /// Loads `<name>.wasm` at `path`, with `<name>.toml` beside it if there
    /// is one.
    pub async fn load(&self, path: &Path) -> Result<LoadedFlow, FlowLoadError> {
        let name = flow_name(path).ok_or(FlowLoadError::NotAFlowFile)?;
        let manifest_path = path.with_extension("toml");
        let manifest = match tokio::fs::read_to_string(&manifest_path).await {
            Ok(text) => Manifest::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => return Err(e.into()),
        };
        let invalid = |problem| FlowLoadError::Manifest {
            file: format!("{name}.toml"),
            problem,
        };
        let manifest = manifest.map_err(invalid)?;
        let limits = manifest.limits(&self.defaults).map_err(invalid)?;
        if limits.fuel.is_some() && !self.runtime.fuel_metering() {
            return Err(invalid(
                "limits.fuel: the host does not meter fuel (runtime.fuel_metering)".into(),
            ));
        }
        let allowed_hosts = manifest.allowed_hosts().map_err(invalid)?;

        let size = tokio::fs::metadata(path).await?.len();
        let limit = self.runtime.max_component_size();
        if size > limit {
            return Err(LoadError::TooLarge { size, limit }.into());
        }
        let bytes = tokio::fs::read(path).await?;
        let size = bytes.len() as u64;
        let version = hex::encode(&Sha256::digest(&bytes)[..8]);
        let _compiling = self.compiling.acquire().await.expect("never closed");
        let runtime = Arc::clone(&self.runtime);
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|e| std::io::Error::other(format!("the compiler thread failed: {e}")))??;
        Ok(LoadedFlow {
            name,
            version,
            ready: ReadyFlow::new(compiled, limits, allowed_hosts),
            path: path.to_owned(),
            size,
            loaded_at: now_ms(),
        })
    }
}
