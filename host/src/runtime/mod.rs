//! Runs flows: one fresh, sandboxed WebAssembly instance per message.
//!
//! A flow is compiled once into a [`CompiledFlow`], which holds wasmtime's
//! `InstancePre`: its imports already resolved against the host, so that
//! each message only has to instantiate (microseconds, from a pooling
//! allocator whose slots stay warm) and call `handle`. A fresh instance per
//! message means a message can never see another's memory, and a trap
//! leaves nothing behind to clean up.
//!
//! **Turns that wait.** Most of a conversational flow's time is spent
//! waiting on an API. A waiting turn holds its instance (its memory and
//! stack) and nothing else: no thread, and no scarce slot. Instances come
//! from two places: a pool of `runtime.warm_instances` kept warm, for the
//! turns that come and go in microseconds, and, when the pool (or the
//! flow's half of it) is taken, an instance of the turn's own, a few tens
//! of microseconds slower to start, whose memory goes back to the system
//! when it ends. What bounds the turns in flight is
//! `runtime.max_concurrent_flows` (a flow may have nine tenths of them, by
//! default) and the linear memory they hold together (see `memory`).
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
//! The parts: `engine` compiles and links, `turn` runs one message,
//! `executor` holds the flow threads; `imports` and `state` are what a flow
//! may call, `limits` what bounds it (`memory`: all its turns together),
//! `outbound` its HTTP.
//!
//! This module knows nothing of files, endpoints or storage: it takes bytes
//! and JSON text in, and gives outputs and JSON text back.

mod allowed_hosts;
mod bindings;
mod engine;
mod epoch;
mod executor;
mod imports;
mod limits;
mod memory;
mod outbound;
pub mod precheck;
mod settings;
mod state;
mod stdio;
mod transform;
mod turn;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::allowed_hosts::{AllowedHosts, BadHostEntry};
pub use self::engine::{
    EngineSettings, LoadError, MAX_CORE_INSTANCES_PER_FLOW, MAX_MEMORIES_PER_FLOW,
    MAX_TABLES_PER_FLOW, pool_footprint,
};
pub(crate) use self::limits::RawLimits;
pub use self::limits::{ContractViolation, LimitExceeded, LimitProblem, Limits};
pub use self::settings::RuntimeConfig;
pub use self::turn::{
    FailureKind, FlowFailure, Invocation, Output, Said, Source, Turn, WarmInstance,
};

use self::bindings::FlowPre;
pub use self::bindings::{Kind, channel};
use self::engine::engine_config;
use self::epoch::EpochTicker;
use self::executor::Executor;
use self::memory::MemoryBudget;
use self::state::HostState;
pub use self::transform::headers as transformer_headers;

/// How often the epoch advances: how often a running flow yields its thread
/// and has its deadline checked. Short, so that a flow that spins delays
/// the messages sharing its thread by a couple of milliseconds at most; the
/// check itself costs a compare at loop heads whatever the tick.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Memory mappings one turn in flight takes: its linear memory (reserved,
/// and the part in use) and its stack (and the stack's guard page), plus
/// one to spare. Measured: 49,911 mappings with 10,000 turns in flight, in
/// `cargo xtask bench`'s slow-flow scenario.
const MAPPINGS_PER_TURN: u64 = 5;

/// Says so at start if `vm.max_map_count` would stop `max_concurrent_flows`
/// turns from being in flight at once: past it, instances wait for room
/// (no turn fails), so the host runs, at fewer turns in flight than asked.
fn warn_if_mappings_run_short(max_concurrent_flows: u32) {
    let Some(allowed) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return;
    };
    // The pool, the code of loaded flows, threads and libraries: a few
    // thousand.
    let needed = u64::from(max_concurrent_flows) * MAPPINGS_PER_TURN + 4096;
    if needed > allowed {
        tracing::warn!(
            max_concurrent_flows,
            vm_max_map_count = allowed,
            needed,
            "vm.max_map_count is too low for runtime.max_concurrent_flows turns in flight; \
             past about {} turns, new ones wait for room: raise it (sysctl vm.max_map_count) \
             or lower runtime.max_concurrent_flows",
            allowed.saturating_sub(4096) / MAPPINGS_PER_TURN
        );
    }
}

/// A linker for `engine` with every host import.
fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)?;
    imports::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
    Ok(linker)
}

/// The engines, the linkers with every host import, and the threads that
/// run flows.
pub struct Runtime {
    /// The engine whose instances come from the pool of warm ones.
    engine: Engine,
    linker: Linker<HostState>,
    /// The engine whose instances are made for their turn alone, for turns
    /// beyond the pool; same settings, so the same compiled code loads in
    /// both.
    own_engine: Engine,
    own_linker: Linker<HostState>,
    /// Turns in flight, host-wide (`runtime.max_concurrent_flows`).
    in_flight: Arc<Semaphore>,
    /// One permit per warm instance in the pool; taken only when free.
    warm: Arc<Semaphore>,
    /// The permits of `in_flight` and `warm` when none is taken.
    capacity: Occupancy,
    /// What each flow gets of the threads, warm instances and memory.
    shares: Shares,
    /// The linear memory all turns in flight hold together.
    memory: Arc<MemoryBudget>,
    fuel_metering: bool,
    settings: EngineSettings,
    /// `runtime.private_outbound_hosts`: hosts flows may reach on private
    /// addresses.
    private_hosts: Arc<AllowedHosts>,
    max_component_size: u64,
    executor: Executor,
    _ticker: EpochTicker,
}

/// A flow compiled and linked, ready to instantiate once per message. Cheap
/// to clone.
#[derive(Clone)]
pub struct CompiledFlow {
    /// Linked for warm instances, from the pool.
    pre: FlowPre,
    /// Linked for instances of a turn's own.
    own_pre: FlowPre,
    component: Component,
    /// What each flow gets of the runtime that linked it.
    shares: Shares,
}

impl CompiledFlow {
    /// The world it implements, such as `flowhost:flow@0.3.0` (flows built
    /// against an older version run as that version), or
    /// `flowhost:flow/transformer@0.3.0`.
    pub fn world(&self) -> String {
        self.pre.world()
    }

    /// Whether it is a flow or a transformer.
    pub fn kind(&self) -> Kind {
        self.pre.kind()
    }
}

/// The wasmtime this host runs flows with (pinned in `host/Cargo.toml`).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// How much of the runtime is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Turns running, or waiting on a host call.
    pub turns_in_flight: u64,
    /// Instances of the warm pool held by turns.
    pub warm_instances_in_use: u64,
}

/// What each flow gets of a runtime's threads, warm instances and memory.
#[derive(Debug, Clone, Copy)]
struct Shares {
    /// All the flow threads but one, at least one.
    threads: usize,
    /// Half the warm instances, at least one.
    warm: usize,
    /// Half of `runtime.max_total_flow_memory`.
    memory: u64,
}

/// A compiled flow with what it may use: ready to run.
#[derive(Clone)]
pub struct ReadyFlow {
    compiled: CompiledFlow,
    limits: Limits,
    allowed_hosts: Arc<AllowedHosts>,
    /// Bounds the flow's turns in flight (`limits.max_concurrent`).
    running: Arc<Semaphore>,
    /// Bounds the flow threads the flow's turns are on at any instant.
    threads: Arc<Semaphore>,
    /// The flow's share of the warm instances; taken only when free.
    warm: Arc<Semaphore>,
    /// The flow's share of the linear memory of all turns in flight.
    memory: Arc<MemoryBudget>,
    /// The `[config]` of its manifest, for `config.get`.
    config: Arc<BTreeMap<String, String>>,
}

impl ReadyFlow {
    /// `compiled`, to run within `limits`, calling only `allowed_hosts`.
    pub fn new(compiled: CompiledFlow, limits: Limits, allowed_hosts: AllowedHosts) -> Self {
        let shares = compiled.shares;
        ReadyFlow {
            threads: Arc::new(Semaphore::new(shares.threads)),
            warm: Arc::new(Semaphore::new(shares.warm)),
            memory: MemoryBudget::new(shares.memory),
            compiled,
            running: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            limits,
            allowed_hosts: Arc::new(allowed_hosts),
            config: Arc::default(),
        }
    }

    /// The flow, with the `[config]` of its manifest for `config.get`.
    pub fn with_config(mut self, config: BTreeMap<String, String>) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// Whether it is a flow or a transformer.
    pub fn kind(&self) -> Kind {
        self.compiled.kind()
    }

    /// The flow's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Runtime {
    /// Creates the engines, the pool of warm instances, the linkers and the
    /// flow threads.
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Runtime> {
        let slots = config.warm_instances;
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
        // Instances of their own are made on demand and given back whole.
        let own_engine = Engine::new(&engine_config(&EngineSettings::of(config))?)
            .map_err(anyhow::Error::from)?;

        let executor = Executor::new(config.flow_threads)?;
        warn_if_mappings_run_short(config.max_concurrent_flows);
        Ok(Runtime {
            _ticker: EpochTicker::start(vec![engine.clone(), own_engine.clone()], EPOCH_TICK),
            linker: linker(&engine)?,
            own_linker: linker(&own_engine)?,
            engine,
            own_engine,
            in_flight: Arc::new(Semaphore::new(config.max_concurrent_flows as usize)),
            warm: Arc::new(Semaphore::new(slots as usize)),
            capacity: Occupancy {
                turns_in_flight: u64::from(config.max_concurrent_flows),
                warm_instances_in_use: u64::from(slots),
            },
            shares: Shares {
                threads: config.flow_threads.saturating_sub(1).max(1),
                warm: (slots as usize / 2).max(1),
                memory: config.max_total_flow_memory / 2,
            },
            memory: MemoryBudget::new(config.max_total_flow_memory),
            fuel_metering: config.fuel_metering,
            settings: EngineSettings::of(config),
            private_hosts: Arc::new(
                AllowedHosts::parse(&config.private_outbound_hosts)
                    .map_err(|e| anyhow::anyhow!("runtime.private_outbound_hosts: {e}"))?,
            ),
            max_component_size: config.max_component_size,
            executor,
        })
    }

    /// What is taken now: turns in flight and warm instances in use.
    pub fn occupancy(&self) -> Occupancy {
        let taken = |semaphore: &Semaphore, capacity: u64| {
            capacity.saturating_sub(semaphore.available_permits() as u64)
        };
        Occupancy {
            turns_in_flight: taken(&self.in_flight, self.capacity.turns_in_flight),
            warm_instances_in_use: taken(&self.warm, self.capacity.warm_instances_in_use),
        }
    }

    /// The most [`occupancy`](Self::occupancy) can be:
    /// `runtime.max_concurrent_flows` and `runtime.warm_instances`.
    pub fn capacity(&self) -> Occupancy {
        self.capacity
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

    /// The largest component accepted, in bytes.
    pub fn max_component_size(&self) -> u64 {
        self.max_component_size
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_wasmtime_version_named_is_the_one_pinned() {
        let manifest = include_str!("../../Cargo.toml");
        let pinned = format!("wasmtime = {{ version = \"={}\"", super::WASMTIME_VERSION);
        assert!(
            manifest.contains(&pinned),
            "host/Cargo.toml does not pin {pinned}"
        );
    }
}
