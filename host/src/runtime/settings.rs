//! The `[runtime]` settings: how flows are executed, and the queue in front
//! of them. The configuration reads them; the runtime, the flows folder and
//! the inbox use them.

use std::time::Duration;

/// How flows are executed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Turns that may be in flight at once, host-wide: running, or waiting
    /// on a host call (an API, a sleep). A waiting turn costs memory only
    /// (its instance), not a thread.
    pub max_concurrent_flows: u32,
    /// Instances kept warm in a pool, for the turns that come and go in
    /// microseconds; turns beyond them get an instance of their own (a few
    /// tens of microseconds more to start, and memory given back to the
    /// system when they end).
    pub warm_instances: u32,
    /// The most linear memory all turns in flight may hold together; each
    /// flow's turns may hold at most half of it.
    pub max_total_flow_memory: u64,
    /// Threads that run flows, apart from the threads that serve HTTP
    /// (default: half the cores, at least one).
    pub flow_threads: usize,
    /// The most linear memory any flow may be given, whatever its manifest
    /// says: the size of each slot in the instance pool.
    pub max_flow_memory: u64,
    /// The WebAssembly stack of every flow (host-wide: wasmtime sets it per
    /// engine, not per instance).
    pub max_wasm_stack: u64,
    /// The largest component file loaded.
    pub max_component_size: u64,
    /// How long compiling one flow may take before the compiler is stopped.
    pub compile_timeout: Duration,
    /// The most memory the compiler of one flow may use.
    pub max_compile_memory: u64,
    /// Hosts (as `allowed_outbound_hosts` patterns) that flows may reach on
    /// loopback and private addresses, when their manifest allows them too.
    /// Link-local and cloud metadata addresses are refused whatever this
    /// says.
    pub private_outbound_hosts: Vec<String>,
    /// Whether flows are metered with fuel, so that `limits.fuel` can bound
    /// them deterministically. Costs every flow some speed, so it is off
    /// unless asked for; the wall-clock deadline applies either way.
    pub fuel_metering: bool,
    /// Accepted messages that may wait for their turn before new ones are
    /// refused with 503: a bound on the work (and memory) queued up.
    pub max_queued_messages: usize,
    /// The share of `max_queued_messages` one endpoint may take, so that a
    /// slow or flooded endpoint cannot make the others refuse messages.
    pub max_queued_per_endpoint: usize,
    /// The share one session may take, so that one caller cannot fill its
    /// endpoint's share (a session runs one message at a time, so a long
    /// queue of one session only waits).
    pub max_queued_per_session: usize,
    /// How long running flows get to finish when the host shuts down.
    pub shutdown_grace: Duration,
}
