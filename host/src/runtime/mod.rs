//! Runs flows: one fresh, sandboxed WebAssembly instance per message.
//!
//! A flow is compiled once into a [`CompiledFlow`], which holds wasmtime's
//! `InstancePre`: its imports already resolved against the host, so that
//! each message only has to instantiate (microseconds, from a pooling
//! allocator whose slots stay warm) and call `handle`. A fresh instance per
//! message means a message can never see another's memory, and a trap
//! leaves nothing behind to clean up.
//!
//! Flows run on their own threads (a tokio runtime of their own), never on
//! the threads that serve HTTP and deliver outputs: even a flow that spins
//! takes CPU only from other flows. Within those threads a flow yields at
//! every epoch tick, so flows share them fairly, and a message that reaches
//! its deadline is stopped there, in wasm code by the epoch check, in a host
//! call by dropping its future.
//!
//! Some work cannot yield: one `memory.fill` of 50 MB, the page faults of a
//! memory grown to its limit, giving that memory back when the instance is
//! dropped. So that such work by one flow never holds every flow thread, a
//! flow runs on at most all but one of them at any instant (see
//! `OnThreads`); the last is always free for the other flows.
//!
//! This module knows nothing of files, endpoints or storage: it takes bytes
//! and JSON text in, and gives outputs and JSON text back.

mod bindings;
mod epoch;
mod imports;
mod limits;
mod outbound;
pub mod precheck;
mod settings;
mod state;
mod stdio;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::PollSemaphore;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

pub(crate) use self::limits::RawLimits;
pub use self::limits::{ContractViolation, LimitExceeded, Limits};
pub use self::outbound::AllowedHosts;
pub use self::settings::RuntimeConfig;

use self::bindings::{Flow, FlowPre};
use self::epoch::EpochTicker;
use self::outbound::HttpBudget;
use self::state::HostState;

/// How often the epoch advances: how often a running flow yields its thread
/// and has its deadline checked. Short, so that a flow that spins delays
/// the messages sharing its thread by a couple of milliseconds at most; the
/// check itself costs a compare at loop heads whatever the tick.
const EPOCH_TICK: Duration = Duration::from_millis(2);

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

/// The engine, the linker with every host import, and the threads that run
/// flows.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// One permit per slot of the instance pool, so that a burst of messages
    /// waits for a slot instead of failing to instantiate.
    slots: Arc<Semaphore>,
    fuel_metering: bool,
    settings: EngineSettings,
    /// `runtime.private_outbound_hosts`: hosts flows may reach on private
    /// addresses.
    private_hosts: Arc<AllowedHosts>,
    max_component_size: u64,
    flow_threads: usize,
    executor: Executor,
    _ticker: EpochTicker,
}

/// A flow compiled and linked, ready to instantiate once per message. Cheap
/// to clone.
#[derive(Clone)]
pub struct CompiledFlow {
    pre: FlowPre<HostState>,
    component: Component,
    /// `runtime.flow_threads` of the runtime that linked it.
    flow_threads: usize,
}

/// A compiled flow with what it may use: ready to run.
#[derive(Clone)]
pub struct ReadyFlow {
    compiled: CompiledFlow,
    limits: Limits,
    allowed_hosts: Arc<AllowedHosts>,
    /// Bounds the flow's messages running at once (`limits.max_concurrent`).
    running: Arc<Semaphore>,
    /// Bounds the flow threads the flow's messages are on at any instant.
    threads: Arc<Semaphore>,
}

impl ReadyFlow {
    /// `compiled`, to run within `limits`, calling only `allowed_hosts`.
    pub fn new(compiled: CompiledFlow, limits: Limits, allowed_hosts: AllowedHosts) -> Self {
        ReadyFlow {
            threads: Arc::new(Semaphore::new(
                compiled.flow_threads.saturating_sub(1).max(1),
            )),
            compiled,
            running: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            limits,
            allowed_hosts: Arc::new(allowed_hosts),
        }
    }

    /// The flow's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// One message for a flow, and the state it runs with.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The endpoint that received the message.
    pub endpoint: String,
    /// `userId`
    pub user_id: String,
    /// `sessionId`
    pub session_id: String,
    /// `text`
    pub text: Option<String>,
    /// `data`, as JSON object text.
    pub data: Option<String>,
    /// The message's trace id.
    pub trace_id: String,
    /// The session's context, as JSON object text.
    pub context: String,
    /// The user's profile, as JSON object text.
    pub profile: String,
    /// The endpoint's `disable_sensitive_logging`: what the flow logs or
    /// prints is counted, not written to the host's log.
    pub sensitive: bool,
}

/// What a message produced: outputs, and the state to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// The outputs, in the order they were said.
    pub outputs: Vec<Output>,
    /// The new context, if the flow set one.
    pub context: Option<String>,
    /// The new profile, if the flow set one.
    pub profile: Option<String>,
}

/// One output of a flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The output's text.
    pub text: Option<String>,
    /// The output's data, a JSON object.
    pub data: Option<Map<String, Value>>,
}

/// Why a flow could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is over the configured size.
    #[error("the component is {size} bytes, over the limit of {limit}")]
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
    /// wasmtime could not compile it.
    #[error("does not compile: {0}")]
    Compile(String),
    /// It imports something the host does not provide.
    #[error("imports what flowhost does not provide: {0}")]
    Link(String),
    /// It does not export the `flow` world's `handle`.
    #[error("does not implement the flowhost:flow/flow world: {0}")]
    NotAFlow(String),
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

/// Why a message ended without a turn.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct FlowFailure {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// One line saying why.
    pub reason: String,
    /// What the flow wrote to stderr: for a Rust flow that panicked, the
    /// panic message.
    pub stderr: String,
}

/// The kinds of [`FlowFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `handle` returned an error.
    Returned,
    /// The flow went over a limit.
    Limit,
    /// The flow passed a host call something that breaks the contract.
    Contract,
    /// The flow trapped (a panic, an out-of-bounds access, …).
    Trap,
    /// The flow could not be instantiated.
    Instantiate,
}

impl FlowFailure {
    /// The panic message in the flow's stderr, if it has one: the lines from
    /// Rust's "panicked at" on.
    pub fn panic_message(&self) -> Option<String> {
        let at = self.stderr.find("panicked at")?;
        let text = self.stderr[at..]
            .lines()
            .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
            .collect::<Vec<_>>()
            .join(" ");
        Some(text.trim().to_owned())
    }
}

impl Runtime {
    /// Creates the engine, its instance pool, the linker and the flow threads.
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Runtime> {
        let slots = config.max_concurrent_flows;
        let mut pool = PoolingAllocationConfig::new();
        // A component over the per-flow maxima is refused when it is
        // compiled; one within them always finds room in a free slot, since
        // the totals are the maxima times the slots. So no flow can take what
        // another flow's instance needs, however many memories it declares.
        pool.total_component_instances(slots)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_FLOW)
            .max_memories_per_component(MAX_MEMORIES_PER_FLOW)
            .max_tables_per_component(MAX_TABLES_PER_FLOW)
            .total_core_instances(slots * MAX_CORE_INSTANCES_PER_FLOW)
            .total_memories(slots * MAX_MEMORIES_PER_FLOW)
            .total_tables(slots * MAX_TABLES_PER_FLOW)
            .total_stacks(slots)
            .max_memory_size(usize::try_from(config.max_flow_memory)?)
            .table_elements(100_000)
            // Keeping the first pages of each memory and table resident, and
            // zeroing them with memset, is much cheaper than giving them back
            // to the kernel and faulting them in again on the next message.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(256 << 10);

        let mut wasm = engine_config(&EngineSettings::of(config))?;
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(anyhow::Error::from)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        imports::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;

        let executor = Executor::new(config.flow_threads)?;
        Ok(Runtime {
            _ticker: EpochTicker::start(engine.clone(), EPOCH_TICK),
            engine,
            linker,
            slots: Arc::new(Semaphore::new(slots as usize)),
            fuel_metering: config.fuel_metering,
            settings: EngineSettings::of(config),
            private_hosts: Arc::new(
                AllowedHosts::parse(&config.private_outbound_hosts)
                    .map_err(|e| anyhow::anyhow!("runtime.private_outbound_hosts: {e}"))?,
            ),
            max_component_size: config.max_component_size,
            flow_threads: config.flow_threads,
            executor,
        })
    }

    /// Whether flows are metered with fuel (`runtime.fuel_metering`).
    pub fn fuel_metering(&self) -> bool {
        self.fuel_metering
    }

    /// The settings a compiler must share with this runtime for its code
    /// to load here.
    pub fn engine_settings(&self) -> EngineSettings {
        self.settings
    }

    /// Compiles a component with an engine of these settings and returns
    /// its serialized code, without linking it: what `flowhost compile-flow`
    /// does in a child process. [`deserialize`](Self::deserialize) on a
    /// runtime with the same settings loads the result (and links it).
    pub fn compile_only(settings: &EngineSettings, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        // The compiler needs no instance pool: it never instantiates.
        let config = engine_config(settings).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let engine = Engine::new(&config).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        check_component(bytes)?;
        let component =
            Component::new(&engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        component
            .serialize()
            .map_err(|e| LoadError::Compile(format!("cannot serialize: {e:#}")))
    }

    /// The largest component accepted, in bytes.
    pub fn max_component_size(&self) -> u64 {
        self.max_component_size
    }

    /// Compiles and links a component. This is CPU work (tens of
    /// milliseconds or more): call it from a blocking thread.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledFlow, LoadError> {
        self.check_size(bytes.len() as u64)?;
        check_component(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        self.link(&component)
    }

    fn link(&self, component: &Component) -> Result<CompiledFlow, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = FlowPre::new(pre).map_err(|e| LoadError::NotAFlow(format!("{e:#}")))?;
        Ok(CompiledFlow {
            pre,
            component: component.clone(),
            flow_threads: self.flow_threads,
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
        flow.component
            .serialize()
            .map_err(|e| LoadError::Compile(format!("cannot serialize: {e:#}")))
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
        // compatible engine; wasmtime checks its own header and version too.
        let component = unsafe { Component::deserialize(&self.engine, bytes) }
            .map_err(|e| LoadError::Compile(format!("cannot load the compiled code: {e:#}")))?;
        self.link(&component)
    }

    /// Runs one message in a fresh instance of `flow`, on the flow threads.
    ///
    /// Log lines of the flow are emitted inside the caller's current span,
    /// which should name the flow and the message.
    pub async fn run(&self, flow: &ReadyFlow, invocation: Invocation) -> Result<Turn, FlowFailure> {
        let run = self.run_here(flow, invocation);
        // Safe to move: it owns clones of everything it needs.
        let task = self.executor.spawn(run.in_current_span());
        // If our caller gives up (shutdown), the flow is stopped too.
        match AbortOnDropHandle::new(task).await {
            Ok(result) => result,
            Err(e) => Err(FlowFailure {
                kind: FailureKind::Trap,
                reason: format!("the host failed while running the flow: {e}"),
                stderr: String::new(),
            }),
        }
    }
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
    fn of(config: &RuntimeConfig) -> EngineSettings {
        EngineSettings {
            max_wasm_stack: config.max_wasm_stack,
            fuel_metering: config.fuel_metering,
        }
    }
}

/// wasmtime's configuration for flows, apart from the instance allocator.
fn engine_config(settings: &EngineSettings) -> anyhow::Result<wasmtime::Config> {
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
        .consume_fuel(settings.fuel_metering);
    Ok(wasm)
}

/// Refuses what is not a component, and code of a shape that would take
/// the compiler too long or too much memory.
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
            Err(LoadError::Compile(malformed.to_string()))
        }
        Err(refused) => Err(refused.into()),
    }
}

/// A store for one message, with its limits, fuel and deadline in force.
fn new_store(
    pre: &FlowPre<HostState>,
    invocation: &Invocation,
    limits: &Limits,
    hosts: &Hosts,
    fuel: Option<u64>,
    deadline: Instant,
) -> Store<HostState> {
    let http = HttpBudget {
        allowed: Arc::clone(&hosts.allowed),
        private: Arc::clone(&hosts.private),
        max_requests: limits.max_http_requests,
        max_response_size: limits.max_http_response_size,
        deadline,
    };
    let state = HostState::new(
        limits,
        http,
        invocation.context.clone(),
        invocation.profile.clone(),
        invocation.sensitive,
    );
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|state| &mut state.limiter);
    if let Some(fuel) = fuel {
        store
            .set_fuel(fuel)
            .expect("fuel is metered when the engine consumes it");
    }
    store.set_epoch_deadline(1);
    let allowed = limits.deadline;
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(LimitExceeded::Deadline(allowed).into())
        } else {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
    store
}

/// A fresh instance of the flow in a fresh store. When the instance pool
/// has no room (which the per-flow maxima and the slot permits should make
/// impossible), it waits and tries again: a full pool is a reason to wait,
/// never a failed turn.
async fn instantiate(
    pre: &FlowPre<HostState>,
    invocation: &Invocation,
    limits: &Limits,
    hosts: &Hosts,
    fuel: Option<u64>,
) -> (Store<HostState>, Instant, wasmtime::Result<Flow>) {
    let mut pause = Duration::from_millis(1);
    loop {
        // Deadlines are bounded by `max_limits.deadline`; an absurd one set
        // by the operator is as good as none, not a panic.
        let now = Instant::now();
        let deadline = now
            .checked_add(limits.deadline)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86400));
        let mut store = new_store(pre, invocation, limits, hosts, fuel, deadline);
        let instance = tokio::time::timeout_at(deadline, pre.instantiate_async(&mut store))
            .await
            .unwrap_or_else(|_elapsed| Err(LimitExceeded::Deadline(limits.deadline).into()));
        match instance {
            Err(error) if error.is::<wasmtime::PoolConcurrencyLimitError>() => {
                tracing::warn!(%error, "the instance pool is full; waiting for room");
                drop(store);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            instance => return (store, deadline, instance),
        }
    }
}

/// Whom a message may call: the flow's manifest's hosts, and the
/// operator's hosts that may be on private addresses.
struct Hosts {
    allowed: Arc<AllowedHosts>,
    private: Arc<AllowedHosts>,
}

async fn execute(
    pre: FlowPre<HostState>,
    invocation: Invocation,
    limits: Limits,
    hosts: Hosts,
    fuel: Option<u64>,
) -> Result<Turn, FlowFailure> {
    let (mut store, deadline, instance) =
        instantiate(&pre, &invocation, &limits, &hosts, fuel).await;

    let message = bindings::types::Message {
        user_id: invocation.user_id,
        session_id: invocation.session_id,
        text: invocation.text,
        data: invocation.data,
        trace_id: invocation.trace_id,
        endpoint: invocation.endpoint,
    };
    // The epoch callback stops wasm code at the deadline; this timeout stops
    // a flow that waits in a host call (a sleep, a slow HTTP response).
    let result = tokio::time::timeout_at(deadline, async {
        let flow = instance.map_err(|e| (FailureKind::Instantiate, e))?;
        flow.call_handle(&mut store, &message)
            .await
            .map_err(|e| (FailureKind::Trap, e))
    })
    .await;

    let state = store.into_data();
    let stdout = state.stdout.contents();
    let stderr = state.stderr.contents();
    let sensitive = invocation.sensitive;
    log_lines("stdout", &stdout, sensitive);
    log_lines("stderr", &stderr, sensitive);

    let failure = |kind, reason: String| FlowFailure {
        kind,
        reason,
        stderr: stderr.clone(),
    };
    match result {
        Ok(Ok(Ok(()))) => Ok(state.into_turn()),
        Ok(Ok(Err(error))) => Err(failure(
            FailureKind::Returned,
            format!("the flow returned an error: {error}"),
        )),
        Ok(Err((kind, error))) => {
            let (kind, reason) = classify(kind, &error, &limits);
            Err(failure(kind, reason))
        }
        Err(_elapsed) => Err(failure(
            FailureKind::Limit,
            LimitExceeded::Deadline(limits.deadline).to_string(),
        )),
    }
}

impl Runtime {
    /// Runs one message on the calling task rather than on the flow
    /// threads: for callers that are on a thread of their own already
    /// (`flowhost run`, benchmarks). [`run`](Self::run) is this, moved onto
    /// the flow threads.
    pub fn run_here(
        &self,
        flow: &ReadyFlow,
        invocation: Invocation,
    ) -> impl Future<Output = Result<Turn, FlowFailure>> + Send + 'static {
        let (running, slots) = (Arc::clone(&flow.running), Arc::clone(&self.slots));
        let threads = Arc::clone(&flow.threads);
        let pre = flow.compiled.pre.clone();
        let limits = flow.limits.clone();
        let hosts = Hosts {
            allowed: Arc::clone(&flow.allowed_hosts),
            private: Arc::clone(&self.private_hosts),
        };
        let fuel = self.fuel_metering.then(|| limits.fuel.unwrap_or(u64::MAX));
        async move {
            // The flow's own bound first, so that a flow at its bound waits
            // without holding a pool slot that another flow could use.
            let _running = running.acquire_owned().await.expect("never closed");
            let _slot = slots.acquire_owned().await.expect("never closed");
            OnThreads::new(execute(pre, invocation, limits, hosts, fuel), threads).await
        }
    }

    /// One instance of `flow`, kept to be called again and again: only for
    /// measuring the cost of a call apart from instantiation. flowhost itself
    /// never reuses an instance.
    #[doc(hidden)]
    pub async fn warm_instance(&self, flow: &ReadyFlow) -> anyhow::Result<WarmInstance> {
        let http = HttpBudget {
            allowed: Arc::clone(&flow.allowed_hosts),
            private: Arc::clone(&self.private_hosts),
            max_requests: 0,
            max_response_size: 0,
            deadline: Instant::now() + Duration::from_secs(3600),
        };
        let state = HostState::new(&flow.limits, http, "{}".into(), "{}".into(), false);
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = flow
            .compiled
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(WarmInstance { store, instance })
    }
}

/// An instance kept for repeated calls; see [`Runtime::warm_instance`].
#[doc(hidden)]
pub struct WarmInstance {
    store: Store<HostState>,
    instance: Flow,
}

impl WarmInstance {
    /// Calls `handle` with a message, dropping what it said.
    pub async fn call(&mut self, text: &str) -> anyhow::Result<()> {
        self.store.data_mut().clear_outputs();
        let message = bindings::types::Message {
            user_id: "u".into(),
            session_id: "s".into(),
            text: Some(text.into()),
            data: None,
            trace_id: "t".into(),
            endpoint: "e".into(),
        };
        self.instance
            .call_handle(&mut self.store, &message)
            .await
            .map_err(anyhow::Error::from)?
            .map_err(anyhow::Error::msg)
    }
}

/// Turns wasmtime's error into a kind and a one-line reason.
fn classify(kind: FailureKind, error: &wasmtime::Error, limits: &Limits) -> (FailureKind, String) {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return (FailureKind::Limit, limit.to_string());
    }
    if let Some(violation) = error.downcast_ref::<ContractViolation>() {
        return (FailureKind::Contract, violation.to_string());
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            FailureKind::Trap,
            format!("the flow exited with status {}", exit.0),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (
            FailureKind::Limit,
            LimitExceeded::Fuel(limits.fuel.unwrap_or_default()).to_string(),
        ),
        Some(Trap::StackOverflow) => (
            FailureKind::Limit,
            "wasm stack exhausted (recursion too deep)".to_owned(),
        ),
        // Rust puts its stack at the bottom of linear memory, so recursing
        // past it reads below address 0: an out-of-bounds access.
        Some(Trap::MemoryOutOfBounds) => (
            FailureKind::Trap,
            format!(
                "{} (often a stack overflow in the flow's own stack)",
                Trap::MemoryOutOfBounds
            ),
        ),
        Some(trap) => (FailureKind::Trap, trap.to_string()),
        // The cause, without the wasm backtrace wasmtime wraps it in.
        None => (kind, error.root_cause().to_string()),
    }
}

/// Writes what a flow printed to the host's log, a line at a time, with
/// control characters escaped; or, for an endpoint with
/// `disable_sensitive_logging`, only how much it printed.
fn log_lines(stream: &'static str, text: &str, sensitive: bool) {
    if sensitive {
        if !text.is_empty() {
            tracing::info!(target: "flow", stream, bytes = text.len(), "output withheld (disable_sensitive_logging)");
        }
        return;
    }
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let line = crate::telemetry::printable(line);
        tracing::info!(target: "flow", stream, "{line}");
    }
}

/// A flow's turn that is polled only while it holds one of its flow's
/// thread permits, and gives it back between polls: a flow is on no more
/// threads at once than it has permits, however many of its turns are
/// running. Its turns take the permits in turn (the semaphore is fair), and
/// one waiting for a host call holds none.
struct OnThreads<F> {
    turn: Pin<Box<F>>,
    permits: PollSemaphore,
}

impl<F: Future> OnThreads<F> {
    fn new(turn: F, permits: Arc<Semaphore>) -> Self {
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
struct Executor {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Executor {
    fn new(threads: usize) -> anyhow::Result<Executor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("flowhost-flow")
            .enable_all()
            .build()?;
        Ok(Executor {
            runtime: Some(runtime),
        })
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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
