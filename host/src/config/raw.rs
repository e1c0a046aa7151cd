//! The raw shape of the file, as serde reads it: every key optional in the
//! file, with `defaults.toml` read first, so an empty file (or none) is a
//! valid configuration with no endpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Auth, DeliveryOrder, EndpointMode, OutputTiming};
use crate::runtime::RawLimits;
use crate::units::{ByteSize, HumanDuration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    #[serde(default)]
    pub(super) public_url: Option<String>,
    pub(super) flows_dir: PathBuf,
    pub(super) data_dir: PathBuf,
    #[serde(default)]
    pub(super) admin_token: Option<String>,
    #[serde(default)]
    pub(super) max_body_size: Option<ByteSize>,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) max_limits: RawLimits,
    #[serde(default)]
    pub(super) runtime: RawRuntime,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    #[serde(default)]
    pub(super) endpoints: BTreeMap<String, RawEndpoint>,
    #[serde(default)]
    pub(super) watch: Option<bool>,
    #[serde(default)]
    pub(super) watch_debounce: Option<HumanDuration>,
    #[serde(default)]
    pub(super) watch_build: Vec<RawWatchBuild>,
}

/// A `watch_build` entry: a flow crate's folder, or a folder and the
/// command that builds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawWatchBuild {
    Crate(PathBuf),
    Command { dir: PathBuf, command: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) header_read_timeout: Option<HumanDuration>,
    pub(super) idle_timeout: Option<HumanDuration>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_header_size: Option<ByteSize>,
    pub(super) max_buffered_body_bytes: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) metrics: Option<bool>,
    pub(super) otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
    pub(super) pool_size: Option<usize>,
    pub(super) lease: Option<HumanDuration>,
    pub(super) fsync: Option<bool>,
    pub(super) retention: Option<HumanDuration>,
    pub(super) session_retention: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    pub(super) max_concurrent_flows: Option<u32>,
    pub(super) warm_instances: Option<u32>,
    pub(super) max_total_flow_memory: Option<ByteSize>,
    pub(super) flow_threads: Option<usize>,
    pub(super) max_flow_memory: Option<ByteSize>,
    pub(super) max_wasm_stack: Option<ByteSize>,
    pub(super) max_component_size: Option<ByteSize>,
    pub(super) compile_timeout: Option<HumanDuration>,
    pub(super) max_compile_memory: Option<ByteSize>,
    #[serde(default)]
    pub(super) private_outbound_hosts: Vec<String>,
    pub(super) fuel_metering: Option<bool>,
    pub(super) max_queued_messages: Option<usize>,
    pub(super) max_queued_per_endpoint: Option<usize>,
    pub(super) max_queued_per_session: Option<usize>,
    pub(super) shutdown_grace: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) timeout: Option<HumanDuration>,
    pub(super) retry_schedule: Option<Vec<HumanDuration>>,
    pub(super) max_concurrent: Option<usize>,
    pub(super) max_concurrent_per_endpoint: Option<usize>,
    pub(super) allow_private_webhooks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) flow: String,
    #[serde(default)]
    pub(super) url_token: Option<String>,
    #[serde(default = "defaults::auth")]
    pub(super) auth: Auth,
    #[serde(default = "defaults::mode")]
    pub(super) mode: EndpointMode,
    #[serde(default)]
    pub(super) rest_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) webhook_url: Option<String>,
    #[serde(default)]
    pub(super) webhook_user: Option<String>,
    #[serde(default)]
    pub(super) webhook_password: Option<String>,
    #[serde(default)]
    pub(super) disable_sensitive_logging: bool,
    #[serde(default)]
    pub(super) webhook_secret: Option<String>,
    #[serde(default = "defaults::delivery_order")]
    pub(super) delivery_order: DeliveryOrder,
    #[serde(default = "defaults::output_timing")]
    pub(super) output_timing: OutputTiming,
    #[serde(default)]
    pub(super) idempotency_window: Option<HumanDuration>,
    #[serde(default)]
    pub(super) session_ttl: Option<HumanDuration>,
    #[serde(default)]
    pub(super) mask_logging: bool,
    #[serde(default)]
    pub(super) transformer: Option<String>,
    #[serde(default = "defaults::abort_on_error")]
    pub(super) transformer_abort_on_error: bool,
    #[serde(default)]
    pub(super) transformer_urls: Vec<String>,
}

mod defaults {
    use super::Auth;

    pub(super) fn auth() -> Auth {
        Auth::None
    }
    pub(super) fn abort_on_error() -> bool {
        true
    }
    pub(super) fn mode() -> super::EndpointMode {
        super::EndpointMode::Webhook
    }
    pub(super) fn delivery_order() -> super::DeliveryOrder {
        super::DeliveryOrder::Session
    }
    pub(super) fn output_timing() -> super::OutputTiming {
        super::OutputTiming::Immediate
    }
}
