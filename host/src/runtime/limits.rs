//! What one message of a flow may use, and the errors that say which limit a
//! flow ran into.

use std::time::Duration;

use serde::Deserialize;

use super::memory::Held;
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
    /// Turns of this flow in flight at once (running, or waiting on an
    /// API), across sessions, so that one flow cannot take every turn the
    /// host allows.
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
            max_concurrent: 10_800,
        }
    }
}

/// A limit that cannot be used: its key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct LimitProblem {
    /// The limit's key, such as `memory`.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl Limits {
    /// The problems with these limits, each naming its key.
    pub(crate) fn check(&self) -> Vec<LimitProblem> {
        let mut problems = Vec::new();
        let mut refuse = |key, problem: &str| {
            problems.push(LimitProblem {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.memory < 64 << 10 {
            refuse("memory", "at least 64 KiB (one wasm page)");
        }
        if self.deadline.is_zero() {
            refuse("deadline", "must be more than 0s");
        }
        if self.fuel == Some(0) {
            refuse("fuel", "must be more than 0");
        }
        if self.max_state_size < 2 {
            refuse("max_state_size", "must hold at least `{}`");
        }
        if self.max_concurrent == 0 {
            refuse("max_concurrent", "must be at least 1");
        }
        problems
    }
}

impl Limits {
    /// The host's ceilings when `[max_limits]` does not set them: what a
    /// flow's manifest may ask for at most. `memory` and `max_concurrent`
    /// are bounded by the instance pool instead (see `Config`).
    pub fn default_ceilings() -> Limits {
        Limits {
            memory: 1 << 30,
            deadline: Duration::from_secs(60),
            fuel: None,
            max_outputs: 1_000,
            max_output_size: 1 << 20,
            max_state_size: 1 << 20,
            max_log_size: 1 << 20,
            max_http_requests: 100,
            max_http_response_size: 16 << 20,
            max_concurrent: 10_800,
        }
    }

    /// Each of these limits that is over its ceiling, named with both.
    pub(crate) fn over(&self, ceiling: &Limits) -> Vec<LimitProblem> {
        let mut over = Vec::new();
        let mut check = |key: &'static str, value: u64, max: u64, show: &dyn Fn(u64) -> String| {
            if value > max {
                over.push(LimitProblem {
                    key,
                    problem: format!(
                        "{} is over the host's ceiling max_limits.{key} ({})",
                        show(value),
                        show(max)
                    ),
                });
            }
        };
        let bytes = |n: u64| ByteSize(n).to_string();
        let count = |n: u64| n.to_string();
        let millis = |n: u64| HumanDuration(Duration::from_millis(n)).to_string();
        check("memory", self.memory, ceiling.memory, &bytes);
        check(
            "deadline",
            u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
            u64::try_from(ceiling.deadline.as_millis()).unwrap_or(u64::MAX),
            &millis,
        );
        if let (Some(fuel), Some(max)) = (self.fuel, ceiling.fuel) {
            check("fuel", fuel, max, &count);
        }
        check(
            "max_outputs",
            self.max_outputs.into(),
            ceiling.max_outputs.into(),
            &count,
        );
        check(
            "max_output_size",
            self.max_output_size,
            ceiling.max_output_size,
            &bytes,
        );
        check(
            "max_state_size",
            self.max_state_size,
            ceiling.max_state_size,
            &bytes,
        );
        check(
            "max_log_size",
            self.max_log_size,
            ceiling.max_log_size,
            &bytes,
        );
        check(
            "max_http_requests",
            self.max_http_requests.into(),
            ceiling.max_http_requests.into(),
            &count,
        );
        check(
            "max_http_response_size",
            self.max_http_response_size,
            ceiling.max_http_response_size,
            &bytes,
        );
        check(
            "max_concurrent",
            self.max_concurrent.into(),
            ceiling.max_concurrent.into(),
            &count,
        );
        if let (None, Some(max)) = (self.fuel, ceiling.fuel) {
            over.push(LimitProblem {
                key: "fuel",
                problem: format!(
                    "none (unbounded) is over the host's ceiling max_limits.fuel ({max}): set one"
                ),
            });
        }
        over
    }
}

/// A flow went over one of its [`Limits`], or broke the contract of a host
/// call. Raised as a trap: the message ends, and its reason is this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// `memory`
    #[error("memory limit {} exceeded", ByteSize(*.0))]
    Memory(u64),
    /// The flow's running turns together hold its share of
    /// `runtime.max_total_flow_memory`.
    #[error(
        "the flow's running turns together hold {} of linear memory, its share of the host's",
        ByteSize(*.0)
    )]
    FlowMemory(u64),
    /// The host's running turns together hold
    /// `runtime.max_total_flow_memory`.
    #[error(
        "the host's running turns together hold {} of linear memory (runtime.max_total_flow_memory)",
        ByteSize(*.0)
    )]
    HostMemory(u64),
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

impl LimitExceeded {
    /// The limit's name, as the turn outcome metric labels it.
    pub fn name(&self) -> &'static str {
        match self {
            LimitExceeded::Memory(_) => "memory",
            LimitExceeded::FlowMemory(_) => "flow_memory",
            LimitExceeded::HostMemory(_) => "host_memory",
            LimitExceeded::TableElements(_) => "tables",
            LimitExceeded::Deadline(_) => "deadline",
            LimitExceeded::Fuel(_) => "fuel",
            LimitExceeded::Outputs(_) => "outputs",
            LimitExceeded::OutputSize(_) => "output_size",
            LimitExceeded::StateSize { .. } => "state_size",
            LimitExceeded::Log(_) => "log",
        }
    }
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
///
/// Both are counted over the whole instance, not per memory or table: a
/// component may hold several core instances, each with memories and tables
/// of its own, and `limits.memory` bounds what one message may take of the
/// host, however the component divides it.
pub(crate) struct StoreLimiter {
    /// The most linear memory, in bytes, of all memories together.
    memory: u64,
    /// Bytes of linear memory granted so far: what `held` holds of the
    /// flow's share and the host's budget.
    held: Held,
    /// The last growth granted, given back if wasmtime then fails it.
    last_granted: u64,
    /// The most table elements, of all tables together.
    table_elements: usize,
    /// Table elements granted so far.
    elements_used: usize,
}

impl StoreLimiter {
    pub(crate) fn new(memory: u64, held: Held, table_elements: usize) -> StoreLimiter {
        StoreLimiter {
            memory,
            held,
            last_granted: 0,
            table_elements,
            elements_used: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = (desired as u64).saturating_sub(current as u64);
        if self.held.bytes().saturating_add(more) > self.memory {
            // Failing with an error (rather than refusing the growth) traps at
            // once with this reason, instead of leaving the guest's allocator
            // to report a vaguer "allocation failed".
            return Err(LimitExceeded::Memory(self.memory).into());
        }
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.held.grow(more)?;
        self.last_granted = more;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Granted above, then refused by wasmtime (past the pool's slot):
        // the memory did not grow, so nothing of it is held.
        self.held.shrink(std::mem::take(&mut self.last_granted));
        tracing::debug!(%error, "a flow's memory could not grow");
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.elements_used - current).saturating_add(desired);
        if total > self.table_elements {
            return Err(LimitExceeded::TableElements(self.table_elements).into());
        }
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.elements_used = total;
        Ok(true)
    }
}

/// Flow limits as written in `flowhost.toml` and in a flow's manifest; every
/// field is optional so that a manifest can override just one.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) memory: Option<ByteSize>,
    pub(crate) deadline: Option<HumanDuration>,
    pub(crate) fuel: Option<u64>,
    pub(crate) max_outputs: Option<u32>,
    pub(crate) max_output_size: Option<ByteSize>,
    pub(crate) max_state_size: Option<ByteSize>,
    pub(crate) max_log_size: Option<ByteSize>,
    pub(crate) max_http_requests: Option<u32>,
    pub(crate) max_http_response_size: Option<ByteSize>,
    pub(crate) max_concurrent: Option<u32>,
}

impl RawLimits {
    /// `base` with the values set here replacing its own.
    pub(crate) fn apply(&self, base: &Limits) -> Limits {
        Limits {
            memory: self.memory.map_or(base.memory, |m| m.0),
            deadline: self.deadline.map_or(base.deadline, |d| d.0),
            fuel: self.fuel.or(base.fuel),
            max_outputs: self.max_outputs.unwrap_or(base.max_outputs),
            max_output_size: self.max_output_size.map_or(base.max_output_size, |s| s.0),
            max_state_size: self.max_state_size.map_or(base.max_state_size, |s| s.0),
            max_log_size: self.max_log_size.map_or(base.max_log_size, |s| s.0),
            max_http_requests: self.max_http_requests.unwrap_or(base.max_http_requests),
            max_http_response_size: self
                .max_http_response_size
                .map_or(base.max_http_response_size, |s| s.0),
            max_concurrent: self.max_concurrent.unwrap_or(base.max_concurrent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::memory::MemoryBudget;
    use wasmtime::ResourceLimiter;

    fn unshared() -> Held {
        Held::new(MemoryBudget::new(u64::MAX), MemoryBudget::new(u64::MAX))
    }

    #[test]
    fn names_each_limit_over_its_ceiling() {
        let ceilings = Limits::default_ceilings();
        assert!(Limits::default().over(&ceilings).is_empty());
        let greedy = Limits {
            deadline: Duration::from_secs(9999 * 3600),
            memory: 8 << 30,
            max_log_size: 16 << 30,
            max_outputs: 4_000_000_000,
            max_concurrent: 100_000,
            ..Limits::default()
        };
        let over = greedy.over(&ceilings);
        assert_eq!(over.len(), 5, "{over:?}");
        assert!(
            over[0].to_string().starts_with("memory: 8 GiB is over"),
            "{over:?}"
        );
        assert_eq!(over[1].key, "deadline");
        assert!(
            over[1].problem.contains("max_limits.deadline (60 s)"),
            "{over:?}"
        );
        let metered = Limits {
            fuel: Some(10),
            ..Limits::default_ceilings()
        };
        assert!(
            Limits::default()
                .over(&metered)
                .iter()
                .any(|p| p.key == "fuel")
        );
    }

    #[test]
    fn memory_is_counted_over_all_memories() {
        let mut limiter = StoreLimiter::new(10 << 20, unshared(), 100);
        // Two memories of 4 MiB fit; a third does not, though each alone is
        // under the limit.
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        let error = limiter.memory_growing(0, 4 << 20, None).unwrap_err();
        assert_eq!(
            error.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::Memory(10 << 20))
        );
        // Growing one of them counts only the difference.
        assert!(limiter.memory_growing(4 << 20, 6 << 20, None).unwrap());
        assert!(limiter.memory_growing(6 << 20, 7 << 20, None).is_err());
    }

    #[test]
    fn memory_comes_out_of_the_flows_share_and_goes_back_when_the_turn_ends() {
        let (host, flow) = (MemoryBudget::new(64 << 20), MemoryBudget::new(8 << 20));
        let limiter = || StoreLimiter::new(10 << 20, Held::new(host.clone(), flow.clone()), 100);
        let (mut one, mut two) = (limiter(), limiter());
        assert!(one.memory_growing(0, 4 << 20, None).unwrap());
        // Within the turn's own limit, but over what its flow has left.
        let error = two.memory_growing(0, 5 << 20, None).unwrap_err();
        assert_eq!(
            error.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::FlowMemory(8 << 20))
        );
        assert!(two.memory_growing(0, 2 << 20, None).unwrap());
        // A growth that wasmtime fails after it was allowed holds nothing.
        assert!(two.memory_growing(2 << 20, 4 << 20, None).unwrap());
        two.memory_grow_failed(wasmtime::format_err!("past the slot"))
            .unwrap();
        assert_eq!((flow.used(), host.used()), (6 << 20, 6 << 20));
        assert!(one.memory_growing(4 << 20, 6 << 20, None).unwrap());
        // An ended turn gives back all it held.
        drop(one);
        drop(two);
        assert_eq!((flow.used(), host.used()), (0, 0));
    }

    #[test]
    fn table_elements_are_counted_over_all_tables() {
        let mut limiter = StoreLimiter::new(1 << 20, unshared(), 100);
        assert!(limiter.table_growing(0, 60, None).unwrap());
        assert!(limiter.table_growing(0, 41, None).is_err());
        assert!(limiter.table_growing(0, 40, None).unwrap());
    }

    #[test]
    fn a_declared_maximum_refuses_growth_without_counting_it() {
        let mut limiter = StoreLimiter::new(10 << 20, unshared(), 100);
        assert!(!limiter.memory_growing(0, 2 << 20, Some(1 << 20)).unwrap());
        assert!(limiter.memory_growing(0, 10 << 20, None).unwrap());
    }
}
