//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! Each running host has a registry of its own, not a process-wide one, so
//! that two hosts in one process (tests, an embedder) count apart. Events
//! are counted where they happen: an answer to a message, a turn, a
//! delivery attempt, a flow load. What is a level rather than an event
//! (messages waiting, outputs pending, dead letters, turns in flight,
//! flows loaded) is read when Prometheus scrapes, from the store and the
//! runtime, so that it is right after a restart and, on PostgreSQL, counts
//! what every host sharing the store holds.
//!
//! Label values are endpoint and flow names (from the configuration and the
//! flows folder), HTTP status codes and outcome words: never a user or
//! session id, so the number of series is bounded by the configuration.
//!
//! With `telemetry.metrics = false`, [`Metrics::off`] counts nothing and
//! `/metrics` answers 404; `cargo xtask bench` measures both.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::store::EndpointBacklog;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a host's metrics are counted; cheap to clone. Counting on a
/// [`Metrics::off`] does nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Registered>>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointStatus {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TurnLabels {
    endpoint: String,
    flow: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransformLabels {
    endpoint: String,
    transformer: String,
    function: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointOutcome {
    endpoint: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowOutcome {
    flow: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    wasmtime: &'static str,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// Turns and webhook POSTs: from half a millisecond to about a minute.
fn short_timings() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// From accept to delivered, which retries stretch to hours: 1 ms to
/// about 9 hours.
fn long_timings() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 3.0, 19))
}

/// Compiles: 10 ms to about 10 minutes.
fn compile_timings() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

struct Registered {
    registry: Registry,
    messages: Family<EndpointStatus, Counter>,
    turns: Family<TurnLabels, Counter>,
    transforms: Family<TransformLabels, Counter>,
    turn_duration: Timings<FlowLabel>,
    deliveries: Family<EndpointOutcome, Counter>,
    delivery_duration: Timings<EndpointLabel>,
    delivery_latency: Timings<EndpointLabel>,
    flow_loads: Family<FlowOutcome, Counter>,
    compile_duration: Timings<FlowLabel>,
    inbox_messages: Family<EndpointLabel, Gauge>,
    outputs_pending: Family<EndpointLabel, Gauge>,
    dead_letters: Family<EndpointLabel, Gauge>,
    turns_in_flight: Gauge,
    max_turns_in_flight: Gauge,
    warm_instances_in_use: Gauge,
    warm_instances: Gauge,
    flows_loaded: Gauge,
}

/// How a delivery attempt ended, as `flowhost_deliveries_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver took it (2xx).
    Delivered,
    /// It failed and will be tried again.
    Retry,
    /// It failed for the last time: a dead letter.
    Dead,
    /// The receiver answered 410 Gone: the endpoint's delivery stopped.
    Gone,
}

impl DeliveryOutcome {
    /// The outcome as the metric's label (and the console) names it.
    pub fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Dead => "dead",
            DeliveryOutcome::Gone => "gone",
        }
    }
}

/// The levels read when scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Levels {
    /// Per endpoint: messages accepted and not yet run to the end, outputs
    /// not yet delivered (nor dead), dead letters.
    pub backlog: Vec<EndpointBacklog>,
    /// Turns running or waiting on a host call, and the most allowed.
    pub turns_in_flight: u64,
    /// `runtime.max_concurrent_flows`.
    pub max_turns_in_flight: u64,
    /// Instances of the warm pool in use, and its size.
    pub warm_instances_in_use: u64,
    /// `runtime.warm_instances`.
    pub warm_instances: u64,
    /// Flows in service.
    pub flows_loaded: u64,
}

impl Metrics {
    /// A registry with every metric, and `flowhost_build_info` set to this
    /// version and `wasmtime`'s.
    pub fn new(wasmtime: &'static str) -> Metrics {
        let mut m = Registered {
            registry: Registry::with_prefix("flowhost"),
            messages: Family::default(),
            turns: Family::default(),
            transforms: Family::default(),
            turn_duration: Family::new_with_constructor(short_timings),
            deliveries: Family::default(),
            delivery_duration: Family::new_with_constructor(short_timings),
            delivery_latency: Family::new_with_constructor(long_timings),
            flow_loads: Family::default(),
            compile_duration: Family::new_with_constructor(compile_timings),
            inbox_messages: Family::default(),
            outputs_pending: Family::default(),
            dead_letters: Family::default(),
            turns_in_flight: Gauge::default(),
            max_turns_in_flight: Gauge::default(),
            warm_instances_in_use: Gauge::default(),
            warm_instances: Gauge::default(),
            flows_loaded: Gauge::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            "build",
            "The flowhost and wasmtime versions of this host",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                wasmtime,
            }),
        );
        registry.register(
            "messages",
            "Answers to POST /endpoint/{token}, by endpoint and HTTP status",
            m.messages.clone(),
        );
        registry.register(
            "turns",
            "Turns run, by endpoint, flow and outcome (completed, error, trap, contract, \
             instantiate, or the limit that stopped it: deadline, memory, fuel, outputs, …)",
            m.turns.clone(),
        );
        registry.register(
            "transformer_calls",
            "Calls of endpoints' transformers, by endpoint, transformer, function \
             (handle-input, handle-output) and outcome (run, respond, ignore, send, drop, or \
             the failure: error, trap, refused, the limit that stopped it, …)",
            m.transforms.clone(),
        );
        registry.register(
            "turn_duration_seconds",
            "How long turns took, from reading the message to recording the outcome",
            m.turn_duration.clone(),
        );
        registry.register(
            "deliveries",
            "Webhook POSTs, by endpoint and outcome (delivered, retry, dead, gone)",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "How long webhook POSTs took, each attempt",
            m.delivery_duration.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From a message's 202 to the webhook's 2xx for each of its outputs, retries included",
            m.delivery_latency.clone(),
        );
        registry.register(
            "flow_loads",
            "Flow files loaded, by flow and outcome (compiled, cached: from the compile cache, \
             failed)",
            m.flow_loads.clone(),
        );
        registry.register(
            "flow_compile_duration_seconds",
            "How long compiling a flow took (loads from the compile cache are not counted)",
            m.compile_duration.clone(),
        );
        registry.register(
            "inbox_messages",
            "Messages accepted and not yet run to the end, by endpoint (read from the store)",
            m.inbox_messages.clone(),
        );
        registry.register(
            "outputs_pending",
            "Outputs not yet delivered nor dead, by endpoint (read from the store)",
            m.outputs_pending.clone(),
        );
        registry.register(
            "dead_letters",
            "Outputs whose delivery failed for the last time, by endpoint (read from the store)",
            m.dead_letters.clone(),
        );
        registry.register(
            "turns_in_flight",
            "Turns running, or waiting on a host call",
            m.turns_in_flight.clone(),
        );
        registry.register(
            "turns_in_flight_max",
            "The most turns in flight at once (runtime.max_concurrent_flows)",
            m.max_turns_in_flight.clone(),
        );
        registry.register(
            "warm_instances_in_use",
            "Instances of the warm pool held by turns",
            m.warm_instances_in_use.clone(),
        );
        registry.register(
            "warm_instances",
            "The size of the warm pool (runtime.warm_instances)",
            m.warm_instances.clone(),
        );
        registry.register("flows_loaded", "Flows in service", m.flows_loaded.clone());
        Metrics(Some(Arc::new(m)))
    }

    /// Counts nothing (`telemetry.metrics = false`).
    pub fn off() -> Metrics {
        Metrics(None)
    }

    /// Whether metrics are counted and served.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// An answer to a message POSTed to `endpoint`.
    pub fn message_answered(&self, endpoint: &str, status: u16) {
        if let Some(m) = &self.0 {
            m.messages
                .get_or_create(&EndpointStatus {
                    endpoint: endpoint.to_owned(),
                    status,
                })
                .inc();
        }
    }

    /// A turn of `flow` for `endpoint` that ended with `outcome` after
    /// `took`.
    pub fn turn(&self, endpoint: &str, flow: &str, outcome: &'static str, took: Duration) {
        if let Some(m) = &self.0 {
            m.turns
                .get_or_create(&TurnLabels {
                    endpoint: endpoint.to_owned(),
                    flow: flow.to_owned(),
                    outcome,
                })
                .inc();
            m.turn_duration
                .get_or_create(&FlowLabel {
                    flow: flow.to_owned(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// A call of `endpoint`'s `transformer`: its `function`
    /// (`handle-input`, `handle-output`) and how it came out.
    pub fn transform(
        &self,
        endpoint: &str,
        transformer: &str,
        function: &'static str,
        outcome: &'static str,
    ) {
        if let Some(m) = &self.0 {
            m.transforms
                .get_or_create(&TransformLabels {
                    endpoint: endpoint.to_owned(),
                    transformer: transformer.to_owned(),
                    function,
                    outcome,
                })
                .inc();
        }
    }

    /// A delivery attempt to `endpoint`'s webhook that took `took`;
    /// `latency`, from the message's accept, when it was delivered.
    pub fn delivery(
        &self,
        endpoint: &str,
        outcome: DeliveryOutcome,
        took: Duration,
        latency: Option<Duration>,
    ) {
        if let Some(m) = &self.0 {
            m.deliveries
                .get_or_create(&EndpointOutcome {
                    endpoint: endpoint.to_owned(),
                    outcome: outcome.label(),
                })
                .inc();
            let endpoint = EndpointLabel {
                endpoint: endpoint.to_owned(),
            };
            m.delivery_duration
                .get_or_create(&endpoint)
                .observe(took.as_secs_f64());
            if let Some(latency) = latency {
                m.delivery_latency
                    .get_or_create(&endpoint)
                    .observe(latency.as_secs_f64());
            }
        }
    }

    /// A flow loaded: from the compile cache, or compiled in `took`.
    pub fn flow_loaded(&self, flow: &str, from_cache: bool, took: Duration) {
        if let Some(m) = &self.0 {
            let outcome = if from_cache { "cached" } else { "compiled" };
            m.flow_loads
                .get_or_create(&FlowOutcome {
                    flow: flow.to_owned(),
                    outcome,
                })
                .inc();
            if !from_cache {
                m.compile_duration
                    .get_or_create(&FlowLabel {
                        flow: flow.to_owned(),
                    })
                    .observe(took.as_secs_f64());
            }
        }
    }

    /// A flow file that failed to load.
    pub fn flow_load_failed(&self, flow: &str) {
        if let Some(m) = &self.0 {
            m.flow_loads
                .get_or_create(&FlowOutcome {
                    flow: flow.to_owned(),
                    outcome: "failed",
                })
                .inc();
        }
    }

    /// The text Prometheus scrapes, with the gauges set to `levels`; `None`
    /// when metrics are off.
    pub fn render(&self, levels: &Levels) -> Option<String> {
        let m = self.0.as_ref()?;
        // Set whole, so that an endpoint gone from the store's counts shows
        // 0, and one removed from the configuration disappears.
        type Count = fn(&EndpointBacklog) -> u64;
        for (family, count) in [
            (&m.inbox_messages, (|b| b.unfinished_messages) as Count),
            (&m.outputs_pending, |b| b.pending_outputs),
            (&m.dead_letters, |b| b.dead_letters),
        ] {
            family.clear();
            for backlog in &levels.backlog {
                family
                    .get_or_create(&EndpointLabel {
                        endpoint: backlog.endpoint.clone(),
                    })
                    .set(i64::try_from(count(backlog)).unwrap_or(i64::MAX));
            }
        }
        let gauge = |gauge: &Gauge, value: u64| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        gauge(&m.turns_in_flight, levels.turns_in_flight);
        gauge(&m.max_turns_in_flight, levels.max_turns_in_flight);
        gauge(&m.warm_instances_in_use, levels.warm_instances_in_use);
        gauge(&m.warm_instances, levels.warm_instances);
        gauge(&m.flows_loaded, levels.flows_loaded);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry)
            .expect("writing to a String does not fail");
        Some(text)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_on() {
            "Metrics(on)"
        } else {
            "Metrics(off)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'t>(text: &'t str, starts: &str) -> &'t str {
        text.lines()
            .find(|line| line.starts_with(starts))
            .unwrap_or_else(|| panic!("no line starting {starts:?} in\n{text}"))
    }

    #[test]
    fn events_are_counted_by_their_labels() {
        let metrics = Metrics::new("48.0.8");
        metrics.message_answered("support", 202);
        metrics.message_answered("support", 202);
        metrics.message_answered("support", 401);
        metrics.turn(
            "support",
            "order-help",
            "completed",
            Duration::from_millis(3),
        );
        metrics.turn("support", "order-help", "deadline", Duration::from_secs(5));
        metrics.delivery(
            "support",
            DeliveryOutcome::Delivered,
            Duration::from_millis(2),
            Some(Duration::from_millis(40)),
        );
        metrics.delivery(
            "support",
            DeliveryOutcome::Retry,
            Duration::from_millis(2),
            None,
        );
        metrics.flow_loaded("order-help", false, Duration::from_millis(900));
        metrics.flow_loaded("order-help", true, Duration::from_millis(9));
        metrics.flow_load_failed("broken");
        let text = metrics.render(&Levels::default()).unwrap();

        let count =
            |prefix: &str| -> String { line(&text, prefix).rsplit(' ').next().unwrap().to_owned() };
        assert_eq!(
            count(r#"flowhost_messages_total{endpoint="support",status="202"}"#),
            "2"
        );
        assert_eq!(
            count(r#"flowhost_messages_total{endpoint="support",status="401"}"#),
            "1"
        );
        assert_eq!(
            count(
                r#"flowhost_turns_total{endpoint="support",flow="order-help",outcome="deadline"}"#
            ),
            "1"
        );
        assert_eq!(
            count(r#"flowhost_turn_duration_seconds_count{flow="order-help"}"#),
            "2"
        );
        assert_eq!(
            count(r#"flowhost_deliveries_total{endpoint="support",outcome="retry"}"#),
            "1"
        );
        assert_eq!(
            count(r#"flowhost_delivery_duration_seconds_count{endpoint="support"}"#),
            "2"
        );
        assert_eq!(
            count(r#"flowhost_delivery_latency_seconds_count{endpoint="support"}"#),
            "1",
            "only a delivered output has a latency"
        );
        assert_eq!(
            count(r#"flowhost_flow_loads_total{flow="order-help",outcome="cached"}"#),
            "1"
        );
        assert_eq!(
            count(r#"flowhost_flow_compile_duration_seconds_count{flow="order-help"}"#),
            "1",
            "a load from the cache is no compile"
        );
        assert_eq!(
            count(r#"flowhost_flow_loads_total{flow="broken",outcome="failed"}"#),
            "1"
        );
        assert!(line(&text, "flowhost_build_info{").contains(r#"wasmtime="48.0.8""#));
        assert_eq!(text.lines().last(), Some("# EOF"));
    }

    #[test]
    fn levels_are_set_whole_at_each_render() {
        let metrics = Metrics::new("48.0.8");
        let backlog = |endpoint: &str, n| EndpointBacklog {
            endpoint: endpoint.into(),
            unfinished_messages: n,
            pending_outputs: n + 1,
            dead_letters: n + 2,
        };
        let levels = Levels {
            backlog: vec![backlog("a", 1), backlog("b", 5)],
            turns_in_flight: 3,
            max_turns_in_flight: 12000,
            warm_instances_in_use: 2,
            warm_instances: 64,
            flows_loaded: 2,
        };
        let text = metrics.render(&levels).unwrap();
        assert!(text.contains("flowhost_inbox_messages{endpoint=\"b\"} 5\n"));
        assert!(text.contains("flowhost_outputs_pending{endpoint=\"b\"} 6\n"));
        assert!(text.contains("flowhost_dead_letters{endpoint=\"a\"} 3\n"));
        assert!(text.contains("flowhost_turns_in_flight 3\n"));
        assert!(text.contains("flowhost_turns_in_flight_max 12000\n"));
        assert!(text.contains("flowhost_flows_loaded 2\n"));

        let text = metrics
            .render(&Levels {
                backlog: vec![backlog("b", 0)],
                ..levels
            })
            .unwrap();
        assert!(!text.contains("endpoint=\"a\""), "a is gone:\n{text}");
        assert!(text.contains("flowhost_inbox_messages{endpoint=\"b\"} 0\n"));
    }

    #[test]
    fn off_counts_nothing_and_renders_nothing() {
        let metrics = Metrics::off();
        metrics.message_answered("support", 202);
        assert!(!metrics.is_on());
        assert_eq!(metrics.render(&Levels::default()), None);
    }
}
