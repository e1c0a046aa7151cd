//! Reads a flow's files and compiles it off the async threads, through the
//! compile cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::background;
use super::cache::CompileCache;
use super::compiler::{Compiler, compile_in_child};
use super::manifest::ManifestError;
use super::{LoadedFlow, Manifest, flow_name};
use crate::runtime::{CompiledFlow, LimitProblem, Limits, LoadError, ReadyFlow, Runtime};
use crate::store::now_ms;

/// The size from which a component queues for the compiler apart from the
/// others: Rust and C flows are well under it, Python and JavaScript ones
/// (12–18 MB) well over.
const LARGE_COMPONENT: usize = 4 << 20;

/// The largest manifest read: a manifest is a few lines of TOML.
const MAX_MANIFEST_SIZE: u64 = 64 << 10;

/// Why a flow file could not be loaded. The previous version, if any, stays
/// in service.
#[derive(Debug, thiserror::Error)]
pub enum FlowLoadError {
    /// The file name is not `<name>.wasm` with a valid name.
    #[error("not a flow file name: {}", super::NAME_RULE)]
    NotAFlowFile,
    /// The path is a FIFO, a device, a folder or a socket.
    #[error("{file} is not a regular file")]
    NotARegularFile {
        /// The file's name.
        file: String,
    },
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
    /// The manifest was read but cannot be used.
    #[error("invalid manifest {file}: {error}")]
    InvalidManifest {
        /// The manifest's file name.
        file: String,
        /// What is wrong.
        #[source]
        error: ManifestError,
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
    /// The SHA-256 of the component, computed once as it is read.
    pub content: [u8; 32],
    /// The size and modification time of both files when they were read,
    /// to tell cheaply whether they changed since.
    stamp: FilesStamp,
}

/// The size and modification time of a flow's two files at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesStamp {
    path: PathBuf,
    stamp: Stamp,
}

impl FilesStamp {
    /// Whether either file changed (or went) since.
    pub async fn changed(&self) -> bool {
        let path = self.path.clone();
        let now = tokio::task::spawn_blocking(move || stamp_of(&path)).await;
        now.map_or(true, |now| now != self.stamp)
    }
}

type Stamp = [Option<(u64, std::time::SystemTime)>; 2];

fn stamp_of(path: &Path) -> Stamp {
    let one = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)))
    };
    [one(path), one(&path.with_extension("toml"))]
}

impl FlowFiles {
    /// Reads the flow at `path` (`<name>.wasm`) and its manifest; `None` if
    /// the component is not there. A component over `max_size` bytes is
    /// refused before it is read.
    ///
    /// The flows folder is written by others (a deploy pipeline, a flow
    /// author), so nothing is trusted: only regular files are read (a FIFO
    /// would block for ever), each up to its bound, and a manifest's
    /// content is never quoted back, whatever file it turns out to be.
    pub async fn read(path: &Path, max_size: u64) -> Result<Option<FlowFiles>, FlowLoadError> {
        let name = flow_name(path).ok_or(FlowLoadError::NotAFlowFile)?;
        let path = path.to_owned();
        background::run("reading", move || {
            let Some(wasm) = read_bounded(&path, max_size, |size| {
                LoadError::TooLarge {
                    size,
                    limit: max_size,
                }
                .into()
            })?
            else {
                return Ok(None);
            };
            let manifest_path = path.with_extension("toml");
            let manifest = read_bounded(&manifest_path, MAX_MANIFEST_SIZE, |size| {
                FlowLoadError::Manifest {
                    file: format!("{name}.toml"),
                    problem: format!(
                        "{size} bytes, over the limit of {MAX_MANIFEST_SIZE} for a manifest"
                    ),
                }
            })?
            .map(|bytes| {
                String::from_utf8(bytes)
                    .ok()
                    .filter(|text| !text.contains('\0'))
                    .ok_or_else(|| FlowLoadError::Manifest {
                        file: format!("{name}.toml"),
                        problem: "not a text file".into(),
                    })
            })
            .transpose()?;
            Ok(Some(FlowFiles {
                content: Sha256::digest(&wasm).into(),
                stamp: FilesStamp {
                    stamp: stamp_of(&path),
                    path: path.clone(),
                },
                name,
                path,
                wasm,
                manifest,
            }))
        })
        .await?
    }

    /// The SHA-256 of the component and the manifest together: a flow is
    /// reloaded only when this changes.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.content);
        hasher.update(self.manifest.as_deref().unwrap_or_default());
        hasher.finalize().into()
    }

    /// The size and modification time of both files when they were read.
    pub fn stamp(&self) -> FilesStamp {
        self.stamp.clone()
    }
}

/// Reads a regular file of at most `limit` bytes; `None` if there is none.
fn read_bounded(
    path: &Path,
    limit: u64,
    too_large: impl FnOnce(u64) -> FlowLoadError,
) -> Result<Option<Vec<u8>>, FlowLoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO returns at once instead of
    // waiting for a writer; `fstat` then refuses it.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(FlowLoadError::NotARegularFile {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    }
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    // The size may be wrong (files in /proc say 0) or change while reading:
    // read one byte past the limit to know.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Loads flows: checks, compiles (or takes from the cache), and prepares
/// them with their limits.
pub struct Loader {
    runtime: Arc<Runtime>,
    /// The limits every flow gets unless its manifest says otherwise, and
    /// the most a manifest may ask for.
    limits: RwLock<(Limits, Limits)>,
    /// A compile takes a core (or all of them) for tens of milliseconds to
    /// seconds: a bounded number at a time, so serving goes on meanwhile.
    /// Loading from the cache needs no permit, so a slow compile holds up
    /// no cached flow.
    compiling: Semaphore,
    /// Components of [`LARGE_COMPONENT`] bytes or more (a Python or
    /// JavaScript flow: an interpreter inside, 10–20 s to compile) queue
    /// here, one at a time, apart from the others: a Rust flow dropped in
    /// beside two of them loads in milliseconds, not after them.
    compiling_large: Semaphore,
    cache: Option<Arc<CompileCache>>,
    compiler: Compiler,
}

impl Loader {
    /// A loader compiling with `runtime` in this process, for flows whose
    /// manifests override `defaults` (up to the same values: see
    /// [`with_ceilings`](Self::with_ceilings)), keeping compiled code in
    /// `cache` if given.
    pub fn new(runtime: Arc<Runtime>, defaults: Limits, cache: Option<CompileCache>) -> Loader {
        Loader {
            runtime,
            limits: RwLock::new((defaults, Limits::default_ceilings())),
            compiling: Semaphore::new(1),
            compiling_large: Semaphore::new(1),
            cache: cache.map(Arc::new),
            compiler: Compiler::InProcess,
        }
    }

    /// The same loader, compiling with `compiler`. Compiles in child
    /// processes, each bounded in time and memory, run two at a time (and
    /// a large one beside them), so that one slow file leaves room for the
    /// others.
    pub fn with_compiler(mut self, compiler: Compiler) -> Loader {
        if matches!(compiler, Compiler::ChildProcess { .. }) {
            self.compiling = Semaphore::new(2);
        }
        self.compiler = compiler;
        self
    }

    /// The same loader, refusing manifests that ask for more than
    /// `ceilings`.
    pub fn with_ceilings(self, ceilings: Limits) -> Loader {
        self.limits.write().unwrap().1 = ceilings;
        self
    }

    /// Replaces the default limits and the ceilings, for flows loaded from
    /// now on.
    pub fn set_limits(&self, defaults: Limits, ceilings: Limits) {
        *self.limits.write().unwrap() = (defaults, ceilings);
    }

    /// Reads the files of the flow at `path` (`<name>.wasm`), with this
    /// host's size limit.
    pub async fn read(&self, path: &Path) -> Result<Option<FlowFiles>, FlowLoadError> {
        FlowFiles::read(path, self.runtime.max_component_size()).await
    }

    /// Reads and loads the flow at `path`.
    pub async fn load_path(&self, path: &Path) -> Result<LoadedFlow, FlowLoadError> {
        let files = self
            .read(path)
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

        // Within `max_component_size`: `FlowFiles::read` refused it otherwise.
        let size = files.wasm.len() as u64;
        let content = files.content;
        let started = Instant::now();
        let (compiled, cached) = self.compile(content, files.wasm).await?;
        Ok(LoadedFlow {
            name: files.name,
            version: hex::encode(&content[..8]),
            ready: ReadyFlow::new(compiled.clone(), ready_parts.0, ready_parts.1)
                .with_config(manifest.config().clone()),
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
            ready: ReadyFlow::new(flow.compiled.clone(), limits, allowed)
                .with_config(flow.manifest.config().clone()),
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

    fn invalid(&self, name: &str, error: ManifestError) -> FlowLoadError {
        FlowLoadError::InvalidManifest {
            file: format!("{name}.toml"),
            error,
        }
    }

    fn check_manifest(
        &self,
        name: &str,
        manifest: &Manifest,
    ) -> Result<(Limits, crate::runtime::AllowedHosts), FlowLoadError> {
        let (defaults, ceilings) = self.limits.read().unwrap().clone();
        let limits = manifest
            .limits(&defaults, &ceilings)
            .map_err(|p| self.invalid(name, p))?;
        if limits.fuel.is_some() && !self.runtime.fuel_metering() {
            return Err(self.invalid(
                name,
                ManifestError::Limits(vec![LimitProblem {
                    key: "fuel",
                    problem: "the host does not meter fuel (runtime.fuel_metering)".into(),
                }]),
            ));
        }
        let allowed = manifest
            .allowed_hosts()
            .map_err(|p| self.invalid(name, p))?;
        Ok((limits, allowed))
    }

    /// Compiled code for the component with this content hash: from the
    /// cache if it holds a verified entry, compiled (and cached) otherwise.
    /// A component refused before is refused again without compiling.
    async fn compile(
        &self,
        content: [u8; 32],
        wasm: Vec<u8>,
    ) -> Result<(CompiledFlow, bool), FlowLoadError> {
        if let Some(cache) = &self.cache {
            if let Some(compiled) = self.mapped(cache, content, None).await? {
                return Ok((compiled, true));
            }
            if let Some(reason) = cache.refusal(&self.refusal_key(&content)) {
                return Err(LoadError::Remembered(reason).into());
            }
        }
        let queue = if wasm.len() >= LARGE_COMPONENT {
            &self.compiling_large
        } else {
            &self.compiling
        };
        let _compiling = queue.acquire().await.expect("never closed");
        let compiled = match &self.compiler {
            Compiler::InProcess => {
                let runtime = Arc::clone(&self.runtime);
                background::run("compiler", move || {
                    let compiled = runtime.compile(&wasm)?;
                    let code = runtime.serialize(&compiled)?;
                    Ok::<_, LoadError>((compiled, code))
                })
                .await?
            }
            Compiler::ChildProcess {
                program,
                timeout,
                max_memory,
            } => {
                let settings = self.runtime.engine_settings();
                match compile_in_child(program, settings, *timeout, *max_memory, wasm).await {
                    Ok(code) => {
                        let runtime = Arc::clone(&self.runtime);
                        background::run("loading", move || {
                            // SAFETY: the code was compiled by this very
                            // executable, for an engine of this runtime's
                            // settings, and came back on a pipe only the two
                            // processes hold.
                            #[allow(unsafe_code)]
                            let compiled = unsafe { runtime.deserialize(&code) }?;
                            Ok::<_, LoadError>((compiled, code))
                        })
                        .await?
                    }
                    Err(error) => Err(error),
                }
            }
        };
        let (compiled, code) = match compiled {
            Ok(done) => done,
            Err(error) => {
                if let (Some(cache), Some(remember_for)) = (&self.cache, error.remember_for()) {
                    let key = self.refusal_key(&content);
                    if let Err(e) = cache.remember_refusal(&key, &error.to_string(), remember_for) {
                        tracing::warn!(error = %e, "could not remember the refusal in the compile cache");
                    }
                }
                return Err(error.into());
            }
        };
        if let Some(cache) = self.cache.clone() {
            // Kept for the next start, then loaded back from the cache's
            // file, mapped: the code just compiled is a copy in this
            // process's memory, twice over (once per engine). The file is
            // the one just written, so its tag is not checked again.
            let kept = {
                let cache = Arc::clone(&cache);
                tokio::task::spawn_blocking(move || cache.put(&content, &code)).await
            };
            match kept {
                Ok(Ok(file)) => {
                    if let Some(mapped) = self.mapped(&cache, content, Some(file)).await? {
                        return Ok((mapped, false));
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not keep the compiled flow in the cache")
                }
                Err(error) => tracing::warn!(%error, "the cache's writer failed"),
            }
        }
        Ok((compiled, false))
    }

    /// The compiled code of the cache's entry for `content` mapped into the
    /// runtime: from `written`, the entry's file this process has just
    /// written, or else from the entry's file once its tag is checked;
    /// `None` if the cache has no good entry.
    async fn mapped(
        &self,
        cache: &Arc<CompileCache>,
        content: [u8; 32],
        written: Option<PathBuf>,
    ) -> Result<Option<CompiledFlow>, FlowLoadError> {
        let (runtime, cache) = (Arc::clone(&self.runtime), Arc::clone(cache));
        background::run("loading", move || {
            let file = written.or_else(|| cache.verified_file(&content))?;
            // SAFETY: the cache holds only code that this host compiled and
            // serialized with an engine of the same compatibility key:
            // checked with an HMAC under a key only this host holds, or just
            // written by this process; its files are replaced by renames,
            // never changed in place.
            #[allow(unsafe_code)]
            match unsafe { runtime.deserialize_file(&file) } {
                Ok(compiled) => Some(compiled),
                Err(error) => {
                    tracing::warn!(%error, "a cached compile was refused; recompiling");
                    cache.remove(&content);
                    None
                }
            }
        })
        .await
        .map_err(Into::into)
    }

    /// What a remembered refusal of this component depends on: the
    /// component, the engine, this build of flowhost (its host imports and
    /// bounds), and the compile bounds in force.
    fn refusal_key(&self, content: &[u8; 32]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(content);
        hasher.update(self.runtime.compatibility_key().to_le_bytes());
        hasher.update(env!("CARGO_PKG_VERSION"));
        hasher.update(format!("{:?}", self.compiler));
        hasher.finalize().into()
    }
}
