//! What one message of a flow may use, and the errors that say which limit a
//! flow ran into.

use std::time::Duration;

use crate::units::{ByteSize, HumanDuration};

/// What one message of a flow may use. Defaults come from `[limits]` in
/// `flowhost.toml`; a flow's own `<name>.toml` may override each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes.
    pub memory: u64,
    /// Wall-clock time for one message, host calls included.
    pub deadline: Duration,
    /// Fuel (roughly, wasm instructions) for one message, when metered.
    pub fuel: Option<u64>,
    /// Outputs one message may `say`.
    pub max_outputs: u32,
    /// Bytes of one output: its text plus its data's JSON.
    pub max_output_size: u64,
    /// Bytes of the session context, and of the user profile, as JSON.
    pub max_state_size: u64,
    /// Bytes one message may write to stdout, stderr and `log` together.
    pub max_log_size: u64,
    /// Outbound HTTP requests one message may make.
    pub max_http_requests: u32,
    /// Bytes of one HTTP response body a flow may read.
    pub max_http_response_size: u64,
    /// Messages of this flow that may run at once, across sessions, so that
    /// one flow cannot take every slot of the instance pool.
    pub max_concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_secs(5),
            fuel: None,
            max_outputs: 100,
            max_output_size: 64 << 10,
            max_state_size: 64 << 10,
            max_log_size: 64 << 10,
            max_http_requests: 10,
            max_http_response_size: 1 << 20,
            max_concurrent: 50,
        }
    }
}

impl Limits {
    /// The problems with these limits, each naming its key.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.memory < 64 << 10 {
            problems.push("memory: at least 64 KiB (one wasm page)".to_owned());
        }
        if self.deadline.is_zero() {
            problems.push("deadline: must be more than 0s".to_owned());
        }
        if self.fuel == Some(0) {
            problems.push("fuel: must be more than 0".to_owned());
        }
        if self.max_state_size < 2 {
            problems.push("max_state_size: must hold at least `{}`".to_owned());
        }
        if self.max_concurrent == 0 {
            problems.push("max_concurrent: must be at least 1".to_owned());
        }
        problems
    }
}

/// A flow went over one of its [`Limits`], or broke the contract of a host
/// call. Raised as a trap: the message ends, and its reason is this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// `memory`
    #[error("memory limit {} exceeded", ByteSize(*.0))]
    Memory(u64),
    /// A table grew past what the host allows.
    #[error("table limit of {0} elements exceeded")]
    TableElements(usize),
    /// `deadline`
    #[error("deadline {} exceeded", HumanDuration(*.0))]
    Deadline(Duration),
    /// `fuel`
    #[error("fuel limit {0} exceeded")]
    Fuel(u64),
    /// `max_outputs`
    #[error("output limit {0} exceeded")]
    Outputs(u32),
    /// `max_output_size`
    #[error("output size limit {} exceeded", ByteSize(*.0))]
    OutputSize(u64),
    /// `max_state_size`, for the context or the profile.
    #[error("{what} size limit {} exceeded", ByteSize(*.limit))]
    StateSize {
        /// "context" or "profile".
        what: &'static str,
        /// The limit, in bytes.
        limit: u64,
    },
    /// `max_log_size`
    #[error("log limit {} exceeded", ByteSize(*.0))]
    Log(u64),
}

/// A host call given values that break the WIT contract, such as output
/// data that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {problem}")]
pub struct ContractViolation {
    /// The host call, such as `say` or `context.set`.
    pub call: &'static str,
    /// What was wrong.
    pub problem: String,
}

/// Enforces the memory limit and bounds tables; installed on every store.
pub(crate) struct StoreLimiter {
    pub(crate) memory: u64,
    pub(crate) table_elements: usize,
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            // Failing with an error (rather than refusing the growth) traps at
            // once with this reason, instead of leaving the guest's allocator
            // to report a vaguer "allocation failed".
            return Err(LimitExceeded::Memory(self.memory).into());
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(LimitExceeded::TableElements(self.table_elements).into());
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}
