//! Compiling and linking: the engine's settings, the pool's per-flow
//! maxima, the checks a component passes before it is compiled, and
//! compiled code kept and loaded again.

use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::FlowPre;
use super::state::HostState;
use super::{CompiledFlow, Runtime, RuntimeConfig, precheck};

/// The most core instances one component may hold. Measured with `cargo
/// xtask code-shape`: a Rust flow has 3 (the program and two shims), a
/// componentize-js flow 4, a componentize-py flow 14 (Python, its libraries
/// and libc, each a module of its own).
pub const MAX_CORE_INSTANCES_PER_FLOW: u32 = 32;

/// The most linear memories one component may hold. All three kinds of flow
/// above have one (the pool allows one per module).
pub const MAX_MEMORIES_PER_FLOW: u32 = 4;

/// The most tables one component may hold. All three kinds of flow above
/// have two.
pub const MAX_TABLES_PER_FLOW: u32 = 16;

/// Why a flow could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is over the configured size.
    #[error(
        "the component is {size} bytes, over the limit of {limit} bytes (runtime.max_component_size)"
    )]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not a WebAssembly component (perhaps a core module, or
    /// a file still being written).
    #[error("not a WebAssembly component{0}")]
    NotAComponent(&'static str),
    /// Its code has a shape that would take the compiler too long or too
    /// much memory.
    #[error("refused before compiling: {0}")]
    TooComplex(#[from] precheck::CodeRefused),
    /// wasmtime could not compile it (or load its compiled code).
    #[error("does not compile: {0:#}")]
    Compile(#[source] anyhow::Error),
    /// It imports something the host does not provide.
    #[error("imports what flowhost does not provide: {0:#}")]
    Link(#[source] anyhow::Error),
    /// It is neither a flow (it does not export the `flow` world's `handle`)
    /// nor a transformer.
    #[error("is neither a flow (the flowhost:flow/flow world) nor a transformer: {0:#}")]
    NotAFlow(#[source] anyhow::Error),
    /// The compiler's child process refused it; this is what it said.
    #[error("{0}")]
    Refused(String),
    /// The compiler was stopped at its time or memory bound.
    #[error("{0}")]
    OverBound(String),
    /// The host could not run the compiler (no process could be started,
    /// a pipe failed): nothing is known of the component.
    #[error("{0}")]
    CompilerFailed(String),
    /// It was refused when it was compiled before (the reason is that
    /// refusal's), and is not compiled again.
    #[error("{0} (remembered from an earlier try)")]
    Remembered(String),
}

impl LoadError {
    /// How long a refusal of the same bytes is worth remembering, so that a
    /// file that takes the compiler its whole bound costs that once, not at
    /// every start: for good (`Duration::MAX`) when the bytes decide it (a
    /// refused shape, a compile error, a missing import); for an hour when
    /// the host's bounds did (a busier moment or a bigger bound may pass);
    /// not at all when the host failed, or the file may still be written.
    pub fn remember_for(&self) -> Option<Duration> {
        match self {
            LoadError::TooComplex(_)
            | LoadError::Compile(_)
            | LoadError::Refused(_)
            | LoadError::Link(_)
            | LoadError::NotAFlow(_) => Some(Duration::MAX),
            LoadError::OverBound(_) => Some(Duration::from_secs(3600)),
            LoadError::TooLarge { .. }
            | LoadError::NotAComponent(_)
            | LoadError::CompilerFailed(_)
            | LoadError::Remembered(_) => None,
        }
    }
}

impl Runtime {
    /// Compiles a component with an engine of these settings and returns
    /// its serialized code, without linking it: what `flowhost compile-flow`
    /// does in a child process. [`deserialize`](Self::deserialize) on a
    /// runtime with the same settings loads the result (and links it).
    pub fn compile_only(settings: &EngineSettings, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        // The compiler needs no instance pool: it never instantiates.
        let config = engine_config(settings).map_err(LoadError::Compile)?;
        let engine = Engine::new(&config).map_err(|e| LoadError::Compile(e.into()))?;
        check_component(bytes)?;
        let component = Component::new(&engine, bytes).map_err(compile_error)?;
        component
            .serialize()
            .map_err(|e| LoadError::Compile(anyhow::Error::from(e).context("cannot serialize")))
    }

    /// Compiles and links a component. This is CPU work (tens of
    /// milliseconds or more): call it from a blocking thread.
    #[allow(unsafe_code)]
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledFlow, LoadError> {
        self.check_size(bytes.len() as u64)?;
        check_component(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(compile_error)?;
        let code = self.serialize_component(&component)?;
        // SAFETY: `code` was just serialized by the pool's engine, whose
        // settings are the other engine's (`Runtime::new` makes both from
        // one configuration).
        let own = unsafe { self.load(&self.own_engine, &code) }?;
        self.link(&component, &own)
    }

    /// Links a component for both kinds of instance: `component` (of the
    /// pool's engine) and `own`, the same code loaded into the other engine.
    fn link(&self, component: &Component, own: &Component) -> Result<CompiledFlow, LoadError> {
        Ok(CompiledFlow {
            pre: link(&self.linker, component)?,
            own_pre: link(&self.own_linker, own)?,
            component: component.clone(),
            shares: self.shares,
        })
    }

    /// Refuses a component over `runtime.max_component_size`.
    pub fn check_size(&self, size: u64) -> Result<(), LoadError> {
        if size > self.max_component_size {
            return Err(LoadError::TooLarge {
                size,
                limit: self.max_component_size,
            });
        }
        Ok(())
    }

    /// A key that differs between engines whose compiled code is not
    /// interchangeable (another wasmtime build, other settings): part of the
    /// compile cache's key.
    pub fn compatibility_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        hasher.finish()
    }

    /// The compiled code of a flow, to keep in the compile cache.
    pub fn serialize(&self, flow: &CompiledFlow) -> Result<Vec<u8>, LoadError> {
        self.serialize_component(&flow.component)
    }

    fn serialize_component(&self, component: &Component) -> Result<Vec<u8>, LoadError> {
        component
            .serialize()
            .map_err(|e| LoadError::Compile(anyhow::Error::from(e).context("cannot serialize")))
    }

    /// Loads compiled code that [`serialize`](Self::serialize) produced.
    ///
    /// # Safety
    ///
    /// Loading compiled code runs it as native code: `bytes` must be exactly
    /// what `serialize` returned on an engine with the same
    /// [`compatibility_key`](Self::compatibility_key). The compile cache
    /// checks this with a key only this host holds before calling.
    #[allow(unsafe_code)]
    pub unsafe fn deserialize(&self, bytes: &[u8]) -> Result<CompiledFlow, LoadError> {
        // SAFETY: the caller guarantees the bytes came from `serialize` on a
        // compatible engine, and both engines here have the same settings.
        let (component, own) = unsafe {
            (
                self.load(&self.engine, bytes)?,
                self.load(&self.own_engine, bytes)?,
            )
        };
        self.link(&component, &own)
    }

    /// Loads the serialized code in the file at `path` into both engines,
    /// mapping the file rather than copying it: the code's pages are the
    /// page cache's, shared by the two engines and by other processes.
    ///
    /// # Safety
    ///
    /// As for [`deserialize`](Self::deserialize), for the file's content;
    /// and the file is never changed in place while the flow is loaded.
    #[allow(unsafe_code)]
    pub unsafe fn deserialize_file(
        &self,
        path: &std::path::Path,
    ) -> Result<CompiledFlow, LoadError> {
        let load = |engine: &Engine| {
            // SAFETY: passed on to the caller.
            unsafe { Component::deserialize_file(engine, path) }.map_err(|e| {
                LoadError::Compile(anyhow::Error::from(e).context("cannot load the compiled code"))
            })
        };
        let (component, own) = (load(&self.engine)?, load(&self.own_engine)?);
        self.link(&component, &own)
    }

    /// Loads serialized code into `engine`.
    ///
    /// # Safety
    ///
    /// As for [`deserialize`](Self::deserialize).
    #[allow(unsafe_code)]
    unsafe fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
        // SAFETY: passed on to the caller; wasmtime checks its own header
        // and version too.
        unsafe { Component::deserialize(engine, bytes) }.map_err(|e| {
            LoadError::Compile(anyhow::Error::from(e).context("cannot load the compiled code"))
        })
    }
}

fn link(linker: &Linker<HostState>, component: &Component) -> Result<FlowPre, LoadError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::Link(e.into()))?;
    FlowPre::new(pre).map_err(|e| LoadError::NotAFlow(e.into()))
}

/// The engine settings that compiled code depends on: a compiler (in a
/// child process, say) with the same settings makes code that loads here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// `runtime.max_wasm_stack`
    pub max_wasm_stack: u64,
    /// `runtime.fuel_metering`
    pub fuel_metering: bool,
}

impl EngineSettings {
    pub(super) fn of(config: &RuntimeConfig) -> EngineSettings {
        EngineSettings {
            max_wasm_stack: config.max_wasm_stack,
            fuel_metering: config.fuel_metering,
        }
    }
}

/// wasmtime's configuration for flows, apart from the instance allocator.
pub(super) fn engine_config(settings: &EngineSettings) -> anyhow::Result<wasmtime::Config> {
    let stack = usize::try_from(settings.max_wasm_stack)?;
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        // Concurrent component-model calls are not used; without them a
        // call costs half as much.
        .concurrency_support(false)
        .max_wasm_stack(stack)
        // The async stack holds the wasm stack plus host frames.
        .async_stack_size(stack + (1 << 20))
        .consume_fuel(settings.fuel_metering)
        // Initial memory is copied in, not mapped from an image: mapping it
        // takes each instance of a turn's own a few more of the process's
        // memory mappings, which `vm.max_map_count` bounds (10,000 waiting
        // turns hit its default of 65,530 with images, and take 49,911
        // without, in `cargo xtask bench`). Both engines must agree: the
        // setting is part of the compiled code's compatibility.
        .memory_init_cow(false);
    Ok(wasm)
}

/// Refuses what is not a component, and code of a shape that would take
/// the compiler too long or too much memory.
/// wasmtime's refusal to compile a component, with a way out where one is
/// known: jco's QuickJS backend uses the component model's async features
/// unless told not to, and flowhost runs synchronous components only.
fn compile_error(error: wasmtime::Error) -> LoadError {
    let error = anyhow::Error::from(error);
    if format!("{error:#}").contains("component model async feature") {
        return LoadError::Compile(error.context(
            "the component uses the component model's async features, which flowhost does not \
             run; jco's QuickJS backend does so by default: build with \
             `jco componentize --backend qjs --backend-qjs-disable-async`, or with the default \
             StarlingMonkey backend (ComponentizeJS)",
        ));
    }
    LoadError::Compile(error)
}

fn check_component(bytes: &[u8]) -> Result<(), LoadError> {
    // A wasm binary starts with `\0asm` and a version: 1 for a core
    // module, 0x0d plus layer 1 for a component.
    if !bytes.starts_with(b"\0asm\x0d\0\x01\0") {
        let hint = if bytes.starts_with(b"\0asm\x01\0\0\0") {
            " (it is a core module: build for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
        } else {
            ""
        };
        return Err(LoadError::NotAComponent(hint));
    }
    match precheck::check(bytes, &precheck::CodeBounds::default()) {
        Ok(_) => Ok(()),
        // Not the shape: the bytes themselves. The compiler says it as well.
        Err(malformed @ precheck::CodeRefused::Malformed(_)) => {
            Err(LoadError::Compile(malformed.into()))
        }
        Err(refused) => Err(refused.into()),
    }
}

/// What a component takes of the instance pool: its core instances, linear
/// memories and tables, as wasmtime counts them. For measuring real
/// components against the per-flow maxima (`cargo xtask code-shape`); it
/// compiles the component once per count.
#[doc(hidden)]
pub fn pool_footprint(bytes: &[u8]) -> anyhow::Result<[u32; 3]> {
    let settings = EngineSettings {
        max_wasm_stack: 512 << 10,
        fuel_metering: false,
    };
    let mut counts = [0; 3];
    for (which, count) in counts.iter_mut().enumerate() {
        let cap = |this: usize| if this == which { 0 } else { 100_000 };
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(1)
            .total_stacks(1)
            .max_core_instances_per_component(cap(0))
            .max_memories_per_component(cap(1))
            .max_tables_per_component(cap(2));
        let mut config = engine_config(&settings)?;
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        // The pool refuses the component with its count: "… contains N …".
        *count = match Component::new(&engine, bytes) {
            Ok(_) => 0,
            Err(error) => {
                let text = format!("{error:#}");
                text.split_once("contains ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("{text}"))?
            }
        };
    }
    Ok(counts)
}
