//! The state of one message's store: what the flow was given, what it said,
//! and the WASI context that grants it nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::log;
use super::limits::{ContractViolation, LimitExceeded, Limits, StoreLimiter};
use super::memory::Held;
use super::outbound::{HttpBudget, Outbound};
use super::stdio::{Capture, LogBudget};
use super::{Output, Said, Turn};

/// The most elements all of an instance's tables may have together; a guest
/// that asks for more traps.
const TABLE_ELEMENTS: usize = 100_000;

/// The most host resources (streams, pollables, `wasi:http` fields, requests,
/// …) one message may hold at once. Each lives in host memory, outside the
/// flow's `limits.memory`: a guest with a few KiB of its own could otherwise
/// make the host allocate gigabytes. Real flows hold a handful.
pub(crate) const MAX_RESOURCES: usize = 1024;

/// The most bytes of one `wasi:http` header set (`fields`), as wasmtime
/// counts them. With [`MAX_RESOURCES`], header sets alone hold at most
/// 16 MiB of host memory per message.
pub(crate) const MAX_FIELDS_SIZE: usize = 16 << 10;

/// The most random bytes one `wasi:random` call may ask for.
const MAX_RANDOM_SIZE: u64 = 64 << 10;

/// The data of one message's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: Outbound,
    table: ResourceTable,
    pub(crate) limiter: StoreLimiter,
    limits: Limits,
    log_budget: LogBudget,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    outputs: Vec<Output>,
    /// Where outputs go as they are said, when the caller listens.
    said: Option<Said>,
    /// Outputs said so far, wherever they went.
    said_count: usize,
    context: String,
    context_changed: bool,
    profile: String,
    profile_changed: bool,
    /// `disable_sensitive_logging`: keep the flow's log text out of the
    /// host's log.
    sensitive: bool,
    /// The flow called `session.end`.
    end_session: bool,
    /// The `[config]` of the component's manifest (`config.get`).
    config: Arc<BTreeMap<String, String>>,
}

impl HostState {
    pub(crate) fn new(
        limits: &Limits,
        memory: Held,
        http: HttpBudget,
        context: String,
        profile: String,
        sensitive: bool,
        said: Option<Said>,
    ) -> Self {
        let log_budget = LogBudget::new(limits.max_log_size);
        let stdout = Capture::new(log_budget.clone());
        let stderr = Capture::new(log_budget.clone());
        // Nothing is granted: no preopened directories, no environment, no
        // arguments, no network (wasmtime-wasi denies sockets unless allowed),
        // stdin closed. Clocks and randomness are harmless and many language
        // runtimes need them to start.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .max_random_size(MAX_RANDOM_SIZE)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http_ctx = WasiHttpCtx::new();
        http_ctx.set_field_size_limit(MAX_FIELDS_SIZE);
        HostState {
            wasi,
            http: http_ctx,
            outbound: Outbound::new(http),
            table,
            limiter: StoreLimiter::new(limits.memory, memory, TABLE_ELEMENTS),
            limits: limits.clone(),
            log_budget,
            stdout,
            stderr,
            outputs: Vec::new(),
            said,
            said_count: 0,
            context,
            context_changed: false,
            profile,
            profile_changed: false,
            sensitive,
            end_session: false,
            config: Arc::default(),
        }
    }

    /// The state, with `config` for `config.get`.
    pub(crate) fn with_config(mut self, config: Arc<BTreeMap<String, String>>) -> Self {
        self.config = config;
        self
    }

    /// `config.get`: a value of the manifest's `[config]`.
    pub(crate) fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    /// `session.end`: the session starts afresh after this message.
    pub(crate) fn end_session(&mut self) {
        self.end_session = true;
    }

    /// Forgets the outputs said so far (for a reused instance in benches).
    pub(crate) fn clear_outputs(&mut self) {
        self.outputs.clear();
        self.said_count = 0;
    }

    /// What the message produced, once the flow returned `Ok`.
    pub(crate) fn into_turn(self) -> Turn {
        Turn {
            outputs: self.outputs,
            context: self.context_changed.then_some(self.context),
            profile: self.profile_changed.then_some(self.profile),
            end_session: self.end_session,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Parses JSON that the contract says must be an object.
fn parse_object(call: &'static str, json: &str) -> Result<Map<String, Value>, ContractViolation> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ContractViolation {
            call,
            problem: "the JSON is not an object".into(),
        }),
        Err(e) => Err(ContractViolation {
            call,
            problem: format!("not JSON: {e}"),
        }),
    }
}

/// What the imports of the `flow` world do; `imports` links them.
impl HostState {
    /// The message's limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes the flow may still log.
    pub(crate) fn log_left(&self) -> u64 {
        self.log_budget.left()
    }

    /// `say`
    pub(crate) fn say(
        &mut self,
        text: Option<String>,
        data: Option<String>,
    ) -> wasmtime::Result<()> {
        if self.said_count >= self.limits.max_outputs as usize {
            return Err(LimitExceeded::Outputs(self.limits.max_outputs).into());
        }
        let size = text.as_ref().map_or(0, String::len) + data.as_ref().map_or(0, String::len);
        if size as u64 > self.limits.max_output_size {
            return Err(LimitExceeded::OutputSize(self.limits.max_output_size).into());
        }
        let data = data.map(|json| parse_object("say", &json)).transpose()?;
        let output = Output { text, data };
        self.said_count += 1;
        match &self.said {
            // A caller that stopped listening has given up on the turn.
            Some(said) => _ = said.send(output),
            None => self.outputs.push(output),
        }
        Ok(())
    }

    /// `context.get` and `profile.get`.
    pub(crate) fn state(&self, which: State) -> &str {
        match which {
            State::Context => &self.context,
            State::Profile => &self.profile,
        }
    }

    /// `context.set` and `profile.set`.
    pub(crate) fn set_state(&mut self, which: State, json: String) -> wasmtime::Result<()> {
        if json.len() as u64 > self.limits.max_state_size {
            return Err(LimitExceeded::StateSize {
                what: which.name(),
                limit: self.limits.max_state_size,
            }
            .into());
        }
        parse_object(which.setter(), &json)?;
        let (state, changed) = match which {
            State::Context => (&mut self.context, &mut self.context_changed),
            State::Profile => (&mut self.profile, &mut self.profile_changed),
        };
        *state = json;
        *changed = true;
        Ok(())
    }

    /// `log`
    pub(crate) fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.log_budget.take(message.len())?;
        if self.sensitive {
            tracing::debug!(target: "flow", bytes = message.len(), "log line withheld (disable_sensitive_logging or mask_logging)");
            return Ok(());
        }
        let message = crate::telemetry::printable(&message);
        // The span around the message's run carries the flow, version, trace
        // id and session.
        match level {
            log::Level::Trace => tracing::trace!(target: "flow", "{message}"),
            log::Level::Debug => tracing::debug!(target: "flow", "{message}"),
            log::Level::Info => tracing::info!(target: "flow", "{message}"),
            log::Level::Warn => tracing::warn!(target: "flow", "{message}"),
            log::Level::Error => tracing::error!(target: "flow", "{message}"),
        }
        Ok(())
    }
}

/// The two JSON objects a flow keeps: the session's context and the user's
/// profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Context,
    Profile,
}

impl State {
    /// "context" or "profile".
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Context => "context",
            State::Profile => "profile",
        }
    }

    /// The host call that sets it, as errors name it.
    fn setter(self) -> &'static str {
        match self {
            State::Context => "context.set",
            State::Profile => "profile.set",
        }
    }
}
