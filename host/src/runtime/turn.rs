//! One turn: a fresh store and instance for one message, its `handle`
//! called within the flow's limits, and the outcome classified.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::AllowedHosts;
use super::bindings::{self, Answer, Call, Flow, FlowPre};
use super::executor::OnThreads;
use super::memory::{Held, MemoryBudget};
use super::outbound::HttpBudget;
use super::state::HostState;
use super::{ContractViolation, LimitExceeded, Limits, ReadyFlow, Runtime};

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
    /// Who sent the message.
    pub source: Source,
    /// The session's context, as JSON object text.
    pub context: String,
    /// The user's profile, as JSON object text.
    pub profile: String,
    /// The endpoint's `disable_sensitive_logging`: what the flow logs or
    /// prints is counted, not written to the host's log.
    pub sensitive: bool,
    /// When set, each output is sent here the moment it is said, instead of
    /// into [`Turn::outputs`], so that the caller can pass it on before the
    /// turn ends.
    pub said: Option<Said>,
}

/// Who sent a message, as the flow is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// The user, through the endpoint.
    #[default]
    User,
    /// A backend, through the endpoint's `/inject`.
    Inject,
}

/// Where a turn's outputs go as they are said. Unbounded, but a turn says
/// at most `limits.max_outputs` of at most `limits.max_output_size` each.
pub type Said = tokio::sync::mpsc::UnboundedSender<Output>;

/// What a message produced: outputs, and the state to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// The outputs, in the order they were said (none when they were sent
    /// to [`Invocation::said`]).
    pub outputs: Vec<Output>,
    /// The new context, if the flow set one.
    pub context: Option<String>,
    /// The new profile, if the flow set one.
    pub profile: Option<String>,
    /// The flow ended the session (`session.end`): its context is to be
    /// cleared, whatever [`context`](Self::context) says.
    pub end_session: bool,
}

/// One output of a flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The output's text.
    pub text: Option<String>,
    /// The output's data, a JSON object.
    pub data: Option<Map<String, Value>>,
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
    /// The flow went over a limit: this one (see
    /// [`LimitExceeded::name`]; `stack` for the wasm stack).
    Limit(&'static str),
    /// The flow passed a host call something that breaks the contract.
    Contract,
    /// The flow trapped (a panic, an out-of-bounds access, …).
    Trap,
    /// The flow could not be instantiated.
    Instantiate,
}

impl FailureKind {
    /// The turn's outcome as `flowhost_turns_total` labels it.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Returned => "error",
            FailureKind::Limit(limit) => limit,
            FailureKind::Contract => "contract",
            FailureKind::Trap => "trap",
            FailureKind::Instantiate => "instantiate",
        }
    }
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

/// A store for one message, with its limits, fuel and deadline in force.
fn new_store(
    pre: &FlowPre,
    invocation: &Invocation,
    limits: &Limits,
    hosts: &Hosts,
    fuel: Option<u64>,
    deadline: Instant,
) -> Store<HostState> {
    let memory = Held::new(Arc::clone(&hosts.memory.0), Arc::clone(&hosts.memory.1));
    let http = HttpBudget {
        allowed: Arc::clone(&hosts.allowed),
        private: Arc::clone(&hosts.private),
        max_requests: limits.max_http_requests,
        max_response_size: limits.max_http_response_size,
        deadline,
    };
    let state = HostState::new(
        limits,
        memory,
        http,
        invocation.context.clone(),
        invocation.profile.clone(),
        invocation.sensitive,
        invocation.said.clone(),
    )
    .with_config(Arc::clone(&hosts.config));
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

/// A fresh instance of the flow in a fresh store. When there is no room
/// for it (see [`no_room`]), it waits and tries again: a full host is a
/// reason to wait, never a failed turn.
async fn instantiate(
    pre: &FlowPre,
    invocation: &Invocation,
    limits: &Limits,
    hosts: &Hosts,
    fuel: Option<u64>,
) -> (Store<HostState>, Instant, wasmtime::Result<Flow>) {
    let mut pause = FIRST_PAUSE;
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
            Err(error) if no_room(&error) => {
                if pause == FIRST_PAUSE {
                    tracing::warn!(%error, "no room for another instance; waiting for a turn to end");
                }
                drop(store);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            instance => return (store, deadline, instance),
        }
    }
}

const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// Whether instantiating failed for want of room, which the end of another
/// turn makes: a full pool (which the permits should prevent), or memory
/// the system would not map (every instance of a turn's own takes a few of
/// the process's mappings, which `vm.max_map_count` bounds).
fn no_room(error: &wasmtime::Error) -> bool {
    error.is::<wasmtime::PoolConcurrencyLimitError>()
        || error.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::OutOfMemory)
        })
}

/// Whom a message may call: the flow's manifest's hosts, and the
/// operator's hosts that may be on private addresses; and the budgets its
/// memory comes out of: the host's and the flow's.
struct Hosts {
    /// The `[config]` of the component's manifest.
    config: Arc<BTreeMap<String, String>>,
    allowed: Arc<AllowedHosts>,
    private: Arc<AllowedHosts>,
    memory: (Arc<MemoryBudget>, Arc<MemoryBudget>),
}

/// The call a flow's turn makes: `handle`, with the invocation's message,
/// moved out of it; what is left is what the turn's store is made from.
fn handle(invocation: &mut Invocation) -> Call {
    use std::mem::take;
    Call::Handle(bindings::types::Message {
        user_id: take(&mut invocation.user_id),
        session_id: take(&mut invocation.session_id),
        text: invocation.text.take(),
        data: invocation.data.take(),
        trace_id: take(&mut invocation.trace_id),
        endpoint: take(&mut invocation.endpoint),
        source: match invocation.source {
            Source::User => bindings::types::Source::User,
            Source::Inject => bindings::types::Source::Inject,
        },
    })
}

/// Makes `call` in a fresh instance: a flow's turn, or a transformer's
/// call. What the instance was given and said is in the returned state.
async fn execute(
    pre: FlowPre,
    invocation: Invocation,
    call: Call,
    limits: Limits,
    hosts: Hosts,
    fuel: Option<u64>,
) -> Result<(HostState, Answer), FlowFailure> {
    let (mut store, deadline, instance) =
        instantiate(&pre, &invocation, &limits, &hosts, fuel).await;
    let what = match call {
        Call::Handle(_) => "flow",
        Call::Input(_) | Call::Output(_) => "transformer",
    };

    // The epoch callback stops wasm code at the deadline; this timeout stops
    // a flow that waits in a host call (a sleep, a slow HTTP response).
    let result = tokio::time::timeout_at(deadline, async {
        let flow = instance.map_err(|e| (FailureKind::Instantiate, e))?;
        flow.call(&mut store, call)
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
        Ok(Ok(Ok(answer))) => Ok((state, answer)),
        Ok(Ok(Err(error))) => Err(failure(
            FailureKind::Returned,
            format!("the {what} returned an error: {error}"),
        )),
        Ok(Err((kind, error))) => {
            let (kind, reason) = classify(kind, &error, &limits);
            Err(failure(kind, reason))
        }
        Err(_elapsed) => {
            let limit = LimitExceeded::Deadline(limits.deadline);
            Err(failure(FailureKind::Limit(limit.name()), limit.to_string()))
        }
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
        mut invocation: Invocation,
    ) -> impl Future<Output = Result<Turn, FlowFailure>> + Send + 'static {
        let call = handle(&mut invocation);
        let turn = self.call_here(flow, invocation, call);
        async move { turn.await.map(|(state, _)| state.into_turn()) }
    }

    /// Makes `call` in a fresh instance of `flow` on the calling task,
    /// within the flow's bounds and the runtime's.
    pub(super) fn call_here(
        &self,
        flow: &ReadyFlow,
        invocation: Invocation,
        call: Call,
    ) -> impl Future<Output = Result<(HostState, Answer), FlowFailure>> + Send + 'static {
        let (running, in_flight) = (Arc::clone(&flow.running), Arc::clone(&self.in_flight));
        let (flow_warm, warm) = (Arc::clone(&flow.warm), Arc::clone(&self.warm));
        let threads = Arc::clone(&flow.threads);
        let (pre, own_pre) = (flow.compiled.pre.clone(), flow.compiled.own_pre.clone());
        let limits = flow.limits.clone();
        let hosts = Hosts {
            config: Arc::clone(&flow.config),
            allowed: Arc::clone(&flow.allowed_hosts),
            private: Arc::clone(&self.private_hosts),
            memory: (Arc::clone(&self.memory), Arc::clone(&flow.memory)),
        };
        let fuel = self.fuel_metering.then(|| limits.fuel.unwrap_or(u64::MAX));
        async move {
            // The flow's own bound first, so that a flow at its bound waits
            // without holding a place that another flow could use.
            let _running = running.acquire_owned().await.expect("never closed");
            let _in_flight = in_flight.acquire_owned().await.expect("never closed");
            let turn = async move {
                // Chosen once the turn is on a flow thread, so that turns
                // queued for a thread hold no warm instance: those are held
                // only by turns running, or waiting on a host call. A warm
                // instance if the flow's half of the pool has one free, else
                // one of the turn's own: never a wait.
                let warm = flow_warm
                    .try_acquire_owned()
                    .ok()
                    .and_then(|share| Some((share, warm.try_acquire_owned().ok()?)));
                let pre = if warm.is_some() { pre } else { own_pre };
                execute(pre, invocation, call, limits, hosts, fuel).await
            };
            OnThreads::new(turn, threads).await
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
        let memory = Held::new(Arc::clone(&self.memory), Arc::clone(&flow.memory));
        let state = HostState::new(
            &flow.limits,
            memory,
            http,
            "{}".into(),
            "{}".into(),
            false,
            None,
        );
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
            source: bindings::types::Source::User,
        };
        self.instance
            .call_handle(&mut self.store, message)
            .await
            .map_err(anyhow::Error::from)?
            .map_err(anyhow::Error::msg)
    }
}

/// Turns wasmtime's error into a kind and a one-line reason.
fn classify(kind: FailureKind, error: &wasmtime::Error, limits: &Limits) -> (FailureKind, String) {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return (FailureKind::Limit(limit.name()), limit.to_string());
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
        Some(Trap::OutOfFuel) => {
            let limit = LimitExceeded::Fuel(limits.fuel.unwrap_or_default());
            (FailureKind::Limit(limit.name()), limit.to_string())
        }
        Some(Trap::StackOverflow) => (
            FailureKind::Limit("stack"),
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
            tracing::info!(target: "flow", stream, bytes = text.len(), "output withheld (disable_sensitive_logging or mask_logging)");
        }
        return;
    }
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let line = crate::telemetry::printable(line);
        tracing::info!(target: "flow", stream, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_host_is_a_reason_to_wait_and_nothing_else_is() {
        let unmapped = wasmtime::Error::new(std::io::Error::from_raw_os_error(12))
            .context("failed to reserve a linear memory");
        assert!(no_room(&unmapped));
        let missing = wasmtime::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!no_room(&missing));
        assert!(!no_room(&wasmtime::format_err!("wasm trap: unreachable")));
    }
}
