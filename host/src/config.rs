//! Configuration: built-in defaults, then `flowhost.toml`, then `FLOWHOST_*`
//! environment variables, then command-line flags, later ones winning.
//!
//! The merged result is deserialized into raw structs that mirror the file
//! and then checked once, here, into a [`Config`] that the rest of the host
//! can trust: addresses parsed, names and URLs validated, sizes and durations
//! in their units. Nothing else in the host reads configuration text.
//!
//! Config is on top: each stage owns its settings type
//! ([`HttpConfig`], [`RuntimeConfig`], [`StoreConfig`], [`DeliveryConfig`],
//! [`EndpointConfig`]), and this module only reads and checks the file into
//! them (they are re-exported here for its callers). No stage imports it.
//!
//! Environment variables use `__` to reach into tables:
//! `FLOWHOST_LIMITS__DEADLINE=2s`,
//! `FLOWHOST_ENDPOINTS__SUPPORT__WEBHOOK_URL=https://…`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use reqwest::Url;
use serde::Deserialize;

pub use crate::delivery::DeliveryConfig;
pub use crate::endpoints::{Auth, BasicAuth, DeliveryOrder, EndpointConfig};
pub use crate::http::HttpConfig;
pub use crate::runtime::RuntimeConfig;
pub use crate::store::StoreConfig;

use crate::runtime::{Limits, RawLimits};
use crate::units::{ByteSize, HumanDuration};

/// The configuration file read when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "flowhost.toml";

/// The checked configuration of one flowhost process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// The base URL that endpoint URLs are printed with, when flowhost is
    /// reached through a proxy; `http://<listen>` when not set.
    pub public_url: Option<Url>,
    /// The folder of `<name>.wasm` flow files.
    pub flows_dir: PathBuf,
    /// The folder of the store (SQLite database) and the compile cache.
    pub data_dir: PathBuf,
    /// Bearer token for the `/admin` routes; they are disabled without one.
    pub admin_token: Option<String>,
    /// The largest request body an endpoint accepts.
    pub max_body_size: u64,
    /// How the HTTP server treats connections and request heads and bodies.
    pub http: HttpConfig,
    /// Limits applied to every flow unless its own manifest says otherwise.
    pub limits: Limits,
    /// The most a flow's manifest may ask for (`[max_limits]`): a manifest
    /// ships with the flow, so it is as untrusted as the flow itself.
    pub max_limits: Limits,
    /// How flows are executed.
    pub runtime: RuntimeConfig,
    /// How outputs are delivered.
    pub delivery: DeliveryConfig,
    /// How the store keeps data.
    pub store: StoreConfig,
    /// The endpoints, by name.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Whether the flows folder and the configuration file are watched and
    /// reloaded when they change.
    pub watch: bool,
    /// How long a changed file must be quiet before it is reloaded.
    pub watch_debounce: Duration,
    /// Flow crates rebuilt into the flows folder whenever their sources
    /// change (`--watch-build`): the flow author's loop.
    pub watch_build: Vec<PathBuf>,
    /// Where this configuration came from, to read it again on reload.
    pub origin: Option<ConfigOrigin>,
    /// The `flowhost` executable that compiles flows in a child process
    /// (`flowhost compile-flow`), bounded by `runtime.compile_timeout` and
    /// `runtime.max_compile_memory`; `None` compiles in this process,
    /// unbounded. Not read from the file: `flowhost serve` sets it to
    /// itself.
    pub compiler_program: Option<PathBuf>,
}

/// The file and command-line values a configuration was loaded from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigOrigin {
    /// The configuration file.
    pub path: PathBuf,
    /// The command-line values given with it.
    pub overrides: Overrides,
}

/// Command-line values that override the file and the environment.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--flows-dir`
    pub flows_dir: Option<PathBuf>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--watch-build`, added to the file's `watch_build`.
    pub watch_build: Vec<PathBuf>,
}

/// A configuration that cannot be used, with every reason found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or a flag could not be read into the
    /// expected shape. The text never quotes the value of a secret key.
    #[error("{0}")]
    Parse(String),
    /// The configuration file named with `--config` does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// Values that are well-formed but wrong.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads the configuration: `path` if given (it must exist), else
    /// `flowhost.toml` if present, else the built-in defaults; then the
    /// environment and `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let mut figment = Figment::new();
        if let Some(file) = &file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let mut config = Self::from_figment(figment, overrides)?;
        config.origin = file.map(|path| ConfigOrigin {
            path,
            overrides: overrides.clone(),
        });
        Ok(config)
    }

    /// Reads the configuration again from where it came from (the same file
    /// and command-line values, the environment as it is now).
    pub fn reload(&self) -> Result<Option<Config>, ConfigError> {
        match &self.origin {
            Some(origin) => Config::load(Some(&origin.path), &origin.overrides).map(Some),
            None => Ok(None),
        }
    }

    /// Parses and checks configuration text in TOML, with no environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::from(Toml::string(text))
            .extract()
            .map_err(ConfigError::parse)?;
        raw.check()
    }

    fn from_figment(figment: Figment, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = figment.merge(
            Env::prefixed("FLOWHOST_")
                // These variables configure the command line and logging,
                // not the host.
                .ignore(&["config", "log", "log_format"])
                .split("__"),
        );
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::global("listen", listen));
        }
        if let Some(dir) = &overrides.flows_dir {
            figment = figment.merge(Serialized::global("flows_dir", dir));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::global("data_dir", dir));
        }
        let mut raw: RawConfig = figment.extract().map_err(ConfigError::parse)?;
        raw.watch_build
            .extend(overrides.watch_build.iter().cloned());
        raw.check()
    }

    /// The base of the URLs printed for endpoints.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The raw shape of the file. Every field has a default, so an empty file (or
// none) is a valid configuration with no endpoints.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "defaults::listen")]
    listen: String,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default = "defaults::flows_dir")]
    flows_dir: PathBuf,
    #[serde(default = "defaults::data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    admin_token: Option<String>,
    #[serde(default)]
    max_body_size: Option<ByteSize>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    max_limits: RawLimits,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    endpoints: BTreeMap<String, RawEndpoint>,
    #[serde(default)]
    watch: Option<bool>,
    #[serde(default)]
    watch_debounce: Option<HumanDuration>,
    #[serde(default)]
    watch_build: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_read_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    max_connections: Option<usize>,
    max_header_size: Option<ByteSize>,
    max_buffered_body_bytes: Option<ByteSize>,
}

impl RawHttp {
    fn check(self, max_body_size: u64, problems: &mut Vec<String>) -> HttpConfig {
        let default = HttpConfig::default();
        let http = HttpConfig {
            header_read_timeout: self
                .header_read_timeout
                .map_or(default.header_read_timeout, |d| d.0),
            idle_timeout: self.idle_timeout.map_or(default.idle_timeout, |d| d.0),
            max_connections: self.max_connections.unwrap_or(default.max_connections),
            max_header_size: self
                .max_header_size
                .map_or(default.max_header_size, |s| s.0),
            max_buffered_body_bytes: self
                .max_buffered_body_bytes
                .map_or(default.max_buffered_body_bytes, |s| s.0),
        };
        if http.header_read_timeout.is_zero() {
            problems.push("http.header_read_timeout: must be more than 0s".into());
        }
        if http.idle_timeout.is_zero() {
            problems.push("http.idle_timeout: must be more than 0s".into());
        }
        if http.max_connections == 0 {
            problems.push("http.max_connections: must be at least 1".into());
        }
        // hyper's smallest read buffer.
        if !(8 << 10..=16 << 20).contains(&http.max_header_size) {
            problems.push("http.max_header_size: must be between 8 KiB and 16 MiB".into());
        }
        if http.max_buffered_body_bytes < max_body_size {
            problems.push(format!(
                "http.max_buffered_body_bytes: {} is less than max_body_size ({}): no body of the largest size could ever be read",
                ByteSize(http.max_buffered_body_bytes),
                ByteSize(max_body_size)
            ));
        }
        http
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    fsync: Option<bool>,
    retention: Option<HumanDuration>,
    session_retention: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    max_concurrent_flows: Option<u32>,
    flow_threads: Option<usize>,
    max_flow_memory: Option<ByteSize>,
    max_wasm_stack: Option<ByteSize>,
    max_component_size: Option<ByteSize>,
    compile_timeout: Option<HumanDuration>,
    max_compile_memory: Option<ByteSize>,
    #[serde(default)]
    private_outbound_hosts: Vec<String>,
    fuel_metering: Option<bool>,
    max_queued_messages: Option<usize>,
    max_queued_per_endpoint: Option<usize>,
    max_queued_per_session: Option<usize>,
    shutdown_grace: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    timeout: Option<HumanDuration>,
    retry_schedule: Option<Vec<HumanDuration>>,
    max_concurrent: Option<usize>,
    max_concurrent_per_endpoint: Option<usize>,
    allow_private_webhooks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    flow: String,
    #[serde(default)]
    url_token: Option<String>,
    #[serde(default = "defaults::auth")]
    auth: Auth,
    webhook_url: String,
    #[serde(default)]
    webhook_user: Option<String>,
    #[serde(default)]
    webhook_password: Option<String>,
    #[serde(default)]
    disable_sensitive_logging: bool,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default = "defaults::delivery_order")]
    delivery_order: DeliveryOrder,
}

mod defaults {
    use super::Auth;
    use std::path::PathBuf;

    pub(super) fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub(super) fn flows_dir() -> PathBuf {
        "flows".into()
    }
    pub(super) fn data_dir() -> PathBuf {
        "data".into()
    }
    pub(super) fn auth() -> Auth {
        Auth::None
    }
    pub(super) fn delivery_order() -> super::DeliveryOrder {
        super::DeliveryOrder::Session
    }
}

impl RawConfig {
    /// Checks every value and collects every problem, so that one run of
    /// `flowhost serve` reports them all.
    fn check(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();

        let listen = self.listen.parse().unwrap_or_else(|e| {
            problems.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:8080 ({e})",
                self.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });

        let public_url = self.public_url.as_deref().and_then(|url| {
            check_http_url("public_url", url)
                .map_err(|p| problems.push(p))
                .ok()
        });

        let max_body_size = self.max_body_size.map_or(1 << 20, |s| s.0);
        let http = self.http.check(max_body_size, &mut problems);

        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| !is_strong_token(t))
        {
            problems.push(
                "admin_token: use at least 16 characters, at least 10 of them different \
                 (a random one, such as the output of `openssl rand -hex 32`)"
                    .into(),
            );
        }

        let max_queued_messages = self.runtime.max_queued_messages.unwrap_or(100_000);
        // A quarter of the queue per endpoint, a quarter of that per session:
        // a flooded endpoint or session leaves room for the others.
        let max_queued_per_endpoint = self
            .runtime
            .max_queued_per_endpoint
            .unwrap_or((max_queued_messages / 4).max(1));
        let max_queued_per_session = self
            .runtime
            .max_queued_per_session
            .unwrap_or((max_queued_per_endpoint / 4).max(1));
        let runtime = RuntimeConfig {
            max_concurrent_flows: self.runtime.max_concurrent_flows.unwrap_or(100),
            // Half the cores, and at least two: the other half serves HTTP,
            // the store and deliveries. Two at least, because a flow can
            // hold a thread in host code that does not yield (copying a
            // 50 MB string out of its memory, giving back a gigabyte of
            // it): with one thread every other flow waits behind it (echo's
            // p99 beside hostile flows was 23x its idle p99 with one thread
            // in `cargo xtask bench`, 8x with two), though one thread
            // delivered a quarter more messages on 2 cores.
            flow_threads: self.runtime.flow_threads.unwrap_or_else(|| {
                (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(2)
            }),
            max_flow_memory: self.runtime.max_flow_memory.map_or(1 << 30, |s| s.0),
            max_wasm_stack: self.runtime.max_wasm_stack.map_or(512 << 10, |s| s.0),
            max_component_size: self.runtime.max_component_size.map_or(32 << 20, |s| s.0),
            compile_timeout: self
                .runtime
                .compile_timeout
                .map_or(Duration::from_secs(120), |d| d.0),
            max_compile_memory: self.runtime.max_compile_memory.map_or(4 << 30, |s| s.0),
            private_outbound_hosts: self.runtime.private_outbound_hosts.clone(),
            fuel_metering: self.runtime.fuel_metering.unwrap_or(false),
            max_queued_messages,
            max_queued_per_endpoint,
            max_queued_per_session,
            shutdown_grace: self
                .runtime
                .shutdown_grace
                .map_or(Duration::from_secs(10), |d| d.0),
        };
        // By default one flow may take half the instance pool, so that a
        // flow under attack (or stuck) leaves room for the others.
        let limits = self.limits.apply(&Limits {
            max_concurrent: (runtime.max_concurrent_flows / 2).max(1),
            ..Limits::default()
        });
        problems.extend(limits.check().into_iter().map(|p| format!("limits.{p}")));
        if runtime.max_concurrent_flows == 0 {
            problems.push("runtime.max_concurrent_flows: must be at least 1".into());
        }
        for (key, value) in [
            ("max_queued_messages", runtime.max_queued_messages),
            ("max_queued_per_endpoint", runtime.max_queued_per_endpoint),
            ("max_queued_per_session", runtime.max_queued_per_session),
        ] {
            if value == 0 {
                problems.push(format!("runtime.{key}: must be at least 1"));
            }
        }
        if runtime.flow_threads == 0 {
            problems.push("runtime.flow_threads: must be at least 1".into());
        }
        if limits.fuel.is_some() && !runtime.fuel_metering {
            problems.push("limits.fuel: set runtime.fuel_metering = true to meter fuel".into());
        }
        if limits.memory > runtime.max_flow_memory {
            problems.push(format!(
                "limits.memory: {} is more than runtime.max_flow_memory ({})",
                ByteSize(limits.memory),
                ByteSize(runtime.max_flow_memory)
            ));
        }
        // Each ceiling is the operator's, or else the larger of the built-in
        // one and the operator's default for every flow.
        let built_in = Limits {
            memory: runtime.max_flow_memory,
            max_concurrent: (runtime.max_concurrent_flows / 2).max(1),
            ..Limits::default_ceilings()
        };
        let max_limits = self.max_limits.apply(&Limits {
            memory: built_in.memory.max(limits.memory),
            deadline: built_in.deadline.max(limits.deadline),
            // Unbounded unless `[max_limits]` sets it: the deadline bounds a
            // flow's time either way.
            fuel: None,
            max_outputs: built_in.max_outputs.max(limits.max_outputs),
            max_output_size: built_in.max_output_size.max(limits.max_output_size),
            max_state_size: built_in.max_state_size.max(limits.max_state_size),
            max_log_size: built_in.max_log_size.max(limits.max_log_size),
            max_http_requests: built_in.max_http_requests.max(limits.max_http_requests),
            max_http_response_size: built_in
                .max_http_response_size
                .max(limits.max_http_response_size),
            max_concurrent: built_in.max_concurrent.max(limits.max_concurrent),
        });
        problems.extend(
            limits
                .over(&max_limits)
                .into_iter()
                .map(|p| format!("limits.{p}")),
        );
        if max_limits.memory > runtime.max_flow_memory {
            problems.push(format!(
                "max_limits.memory: {} is more than runtime.max_flow_memory ({}), the size of a slot of the instance pool",
                ByteSize(max_limits.memory),
                ByteSize(runtime.max_flow_memory)
            ));
        }
        if max_limits.max_concurrent > runtime.max_concurrent_flows {
            problems.push(format!(
                "max_limits.max_concurrent: {} is more than runtime.max_concurrent_flows ({})",
                max_limits.max_concurrent, runtime.max_concurrent_flows
            ));
        }
        if runtime.compile_timeout.is_zero() {
            problems.push("runtime.compile_timeout: must be more than 0s".into());
        }
        if runtime.max_compile_memory < 64 << 20 {
            problems.push("runtime.max_compile_memory: at least 64 MiB".into());
        }
        if let Err(e) = crate::runtime::AllowedHosts::parse(&runtime.private_outbound_hosts) {
            problems.push(format!("runtime.private_outbound_hosts: {e}"));
        }

        let max_concurrent = self.delivery.max_concurrent.unwrap_or(256);
        let delivery = DeliveryConfig {
            timeout: self
                .delivery
                .timeout
                .map_or(Duration::from_secs(15), |d| d.0),
            retry_schedule: self
                .delivery
                .retry_schedule
                .map_or_else(defaults_retry_schedule, |s| {
                    s.into_iter().map(|d| d.0).collect()
                }),
            max_concurrent,
            // A quarter of the POSTs per endpoint: a receiver that answers
            // slowly (or not at all, until the timeout) holds at most that.
            max_concurrent_per_endpoint: self
                .delivery
                .max_concurrent_per_endpoint
                .unwrap_or((max_concurrent / 4).max(1)),
            allow_private_webhooks: self.delivery.allow_private_webhooks.unwrap_or(false),
        };
        let store = StoreConfig {
            fsync: self.store.fsync.unwrap_or(true),
            retention: self
                .store
                .retention
                .map_or(Duration::from_secs(7 * 86400), |d| d.0),
            session_retention: self
                .store
                .session_retention
                .map_or(Duration::from_secs(30 * 86400), |d| d.0),
        };
        if store.session_retention < Duration::from_secs(3600) {
            problems.push("store.session_retention: must be at least 1h".into());
        }
        if delivery.max_concurrent == 0 {
            problems.push("delivery.max_concurrent: must be at least 1".into());
        }
        if delivery.max_concurrent_per_endpoint == 0 {
            problems.push("delivery.max_concurrent_per_endpoint: must be at least 1".into());
        }
        if delivery.timeout.is_zero() {
            problems.push("delivery.timeout: must be more than 0s".into());
        }

        let mut endpoints = BTreeMap::new();
        let mut tokens = HashSet::new();
        for (name, raw) in self.endpoints {
            let at = format!("endpoints.{name}");
            if !crate::flows::is_name(&name) {
                problems.push(format!(
                    "{at}: an endpoint name uses a-z, 0-9, '-' and '_' (at most 64)"
                ));
            }
            if !crate::flows::is_name(&raw.flow) {
                problems.push(format!(
                    "{at}.flow: {:?} is not a flow name (a-z, 0-9, '-', '_')",
                    raw.flow
                ));
            }
            if let Some(token) = &raw.url_token {
                if !is_url_token(token) {
                    problems.push(format!(
                        "{at}.url_token: use 16 to 128 characters of A-Z, a-z, 0-9, '-' and '_'"
                    ));
                } else if !tokens.insert(token.clone()) {
                    problems.push(format!(
                        "{at}.url_token: another endpoint has the same token"
                    ));
                }
            }
            let webhook_url = check_http_url(&format!("{at}.webhook_url"), &raw.webhook_url)
                .and_then(|url| {
                    if delivery.allow_private_webhooks {
                        return Ok(url);
                    }
                    match crate::delivery::guard::private_host(&url) {
                        Some(reason) => Err(format!(
                            "{at}.webhook_url: {url} is {reason}; set delivery.allow_private_webhooks = true to allow it"
                        )),
                        None => Ok(url),
                    }
                })
                .map_err(|p| problems.push(p))
                .ok();
            let webhook_secret = raw.webhook_secret.as_deref().and_then(|secret| {
                crate::signature::Secret::parse(secret)
                    .map_err(|e| problems.push(format!("{at}.webhook_secret: {e}")))
                    .ok()
            });
            let webhook_auth = match (raw.webhook_user, raw.webhook_password) {
                (Some(user), password) => Some(BasicAuth {
                    user,
                    password: password.unwrap_or_default(),
                }),
                (None, Some(_)) => {
                    problems.push(format!("{at}.webhook_password: set webhook_user too"));
                    None
                }
                (None, None) => None,
            };
            if let Some(webhook_url) = webhook_url {
                endpoints.insert(
                    name.clone(),
                    EndpointConfig {
                        name,
                        flow: raw.flow,
                        url_token: raw.url_token,
                        auth: raw.auth,
                        webhook_url,
                        webhook_auth,
                        disable_sensitive_logging: raw.disable_sensitive_logging,
                        webhook_secret,
                        delivery_order: raw.delivery_order,
                    },
                );
            }
        }

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            listen,
            public_url,
            flows_dir: self.flows_dir,
            data_dir: self.data_dir,
            admin_token: self.admin_token,
            max_body_size,
            http,
            limits,
            max_limits,
            runtime,
            delivery,
            store,
            endpoints,
            watch: self.watch.unwrap_or(true),
            watch_debounce: self
                .watch_debounce
                // Renames and closed writes are whole at once: the quiet
                // period only gathers an editor's burst of events.
                .map_or(Duration::from_millis(20), |d| d.0),
            watch_build: self.watch_build,
            origin: None,
            compiler_program: None,
        })
    }
}

/// Svix's schedule: retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
/// 10 h, about 27 hours in all.
fn defaults_retry_schedule() -> Vec<Duration> {
    [5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// The keys whose values are credentials: never quoted in an error.
const SECRET_KEYS: &[&str] = &[
    "admin_token",
    "webhook_password",
    "webhook_secret",
    "url_token",
];

impl ConfigError {
    /// figment's errors, one per line, each naming its key; for a secret
    /// key, without the value it found.
    fn parse(error: figment::Error) -> ConfigError {
        let lines: Vec<String> = error
            .into_iter()
            .map(|error| {
                let secret = error
                    .path
                    .last()
                    .is_some_and(|key| SECRET_KEYS.contains(&key.as_str()));
                if !secret {
                    // A TOML syntax error quotes the line it is on, which
                    // may hold a secret: keep the line and column only.
                    return error
                        .to_string()
                        .lines()
                        .filter(|line| {
                            !line
                                .trim_start()
                                .trim_start_matches(|c: char| c.is_ascii_digit())
                                .trim_start()
                                .starts_with('|')
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                let expected = match &error.kind {
                    figment::error::Kind::InvalidType(_, expected)
                    | figment::error::Kind::InvalidValue(_, expected) => expected.clone(),
                    _ => "another value".to_owned(),
                };
                format!(
                    "{}: invalid value (not shown: it is a secret), expected {expected}",
                    error.path.join(".")
                )
            })
            .collect();
        ConfigError::Parse(lines.join("\n"))
    }
}

/// `text` with the credentials of a URL (`user:password@`) left out.
fn without_credentials(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &text[..scheme], &text[at + 1..])
        }
        _ => text.to_owned(),
    }
}

fn check_http_url(at: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text)
        .map_err(|e| format!("{at}: {:?} is not a URL ({e})", without_credentials(text)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{at}: {:?} is not an http(s) URL",
            without_credentials(text)
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{at}: put credentials in webhook_user and webhook_password, not in the URL"
        ));
    }
    Ok(url)
}

/// Whether `token` is long and varied enough not to be guessed: a length
/// alone would let `aaaaaaaaaaaaaaaa` or `1212121212121212` through.
fn is_strong_token(token: &str) -> bool {
    let distinct: HashSet<char> = token.chars().collect();
    token.chars().count() >= 16 && distinct.len() >= 10
}

fn is_url_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        listen = "127.0.0.1:9999"
        flows_dir = "my-flows"
        data_dir = "my-data"

        [limits]
        memory = "32 MiB"
        deadline = "2s"

        [delivery]
        retry_schedule = ["10ms", "20ms"]
        allow_private_webhooks = true
        max_concurrent_per_endpoint = 8

        [runtime]
        max_queued_per_endpoint = 300
        max_queued_per_session = 30

        [store]
        session_retention = "90d"

        [endpoints.support]
        flow = "order-help"
        url_token = "0123456789abcdef0123456789abcdef"
        auth = "api-key"
        webhook_url = "http://127.0.0.1:9000/hook"
        webhook_user = "bot"
        webhook_password = "s3cret"
        disable_sensitive_logging = true
    "#;

    #[test]
    fn reads_every_documented_key() {
        let config = Config::from_toml(FULL).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(config.flows_dir, PathBuf::from("my-flows"));
        assert_eq!(config.limits.memory, 32 << 20);
        assert_eq!(config.limits.deadline, Duration::from_secs(2));
        assert_eq!(
            config.store.session_retention,
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(config.runtime.max_queued_per_endpoint, 300);
        assert_eq!(config.runtime.max_queued_per_session, 30);
        assert_eq!(config.delivery.max_concurrent_per_endpoint, 8);
        assert_eq!(
            config.delivery.retry_schedule,
            [Duration::from_millis(10), Duration::from_millis(20)]
        );
        let support = &config.endpoints["support"];
        assert_eq!(support.flow, "order-help");
        assert_eq!(support.auth, Auth::ApiKey);
        assert_eq!(support.webhook_url.as_str(), "http://127.0.0.1:9000/hook");
        assert_eq!(
            support.webhook_auth,
            Some(BasicAuth {
                user: "bot".into(),
                password: "s3cret".into()
            })
        );
        assert!(support.disable_sensitive_logging);
    }

    #[test]
    fn ceilings_default_to_the_built_in_ones_or_the_limits_above_them() {
        let config = Config::from_toml("[limits]\ndeadline = \"2m\"\n").unwrap();
        assert_eq!(config.max_limits.deadline, Duration::from_secs(120));
        assert_eq!(config.max_limits.max_log_size, 1 << 20);
        assert_eq!(config.max_limits.memory, config.runtime.max_flow_memory);

        let set = Config::from_toml(
            "[runtime]\nfuel_metering = true\n[limits]\nfuel = 500\n\
             [max_limits]\ndeadline = \"20s\"\nfuel = 1000\n",
        )
        .unwrap();
        assert_eq!(set.max_limits.deadline, Duration::from_secs(20));
        assert_eq!(set.max_limits.fuel, Some(1000));

        let Err(ConfigError::Invalid(problems)) = Config::from_toml(
            "[limits]\ndeadline = \"30s\"\n[max_limits]\ndeadline = \"10s\"\nmemory = \"2 GiB\"\n\
             [runtime]\ncompile_timeout = \"0s\"\nprivate_outbound_hosts = [\"127.0.0.1\"]\n",
        ) else {
            panic!("limits over their ceilings are refused");
        };
        let all = problems.join("\n");
        for expected in [
            "limits.deadline: 30 s is over the host's ceiling max_limits.deadline (10 s)",
            "max_limits.memory: 2 GiB is more than runtime.max_flow_memory",
            "runtime.compile_timeout",
            "runtime.private_outbound_hosts",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
    }

    #[test]
    fn a_weak_admin_token_is_refused() {
        for weak in [
            "short-token",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "1212121212121212",
        ] {
            let Err(ConfigError::Invalid(problems)) =
                Config::from_toml(&format!("admin_token = \"{weak}\"\n"))
            else {
                panic!("{weak} is refused");
            };
            assert!(problems[0].starts_with("admin_token:"), "{problems:?}");
        }
        let strong = "9f86d081884c7d659a2feaa0c55ad015";
        assert!(Config::from_toml(&format!("admin_token = \"{strong}\"\n")).is_ok());
    }

    #[test]
    fn errors_never_quote_a_secret() {
        let syntax = Config::from_toml("admin_token = 31337313373133731337\n")
            .unwrap_err()
            .to_string();
        assert!(!syntax.contains("31337"), "{syntax}");
        assert!(syntax.contains("line 1, column 15"), "{syntax}");
        let error = Config::from_toml(
            "admin_token = 313373133731337\n\
             [endpoints.x]\nflow = \"echo\"\nwebhook_url = \"http://user:pa55word@[::1\"\n\
             webhook_user = \"bot\"\nwebhook_password = 4242424242\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains("31337"), "{error}");
        assert!(error.contains("admin_token"), "{error}");
        let bad_url = Config::from_toml(
            "[endpoints.x]\nflow = \"echo\"\nwebhook_url = \"http://user:pa55word@[::1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!bad_url.contains("pa55word"), "{bad_url}");
        assert!(bad_url.contains("webhook_url"), "{bad_url}");
        let password = Config::from_toml(
            "[endpoints.x]\nflow = \"echo\"\nwebhook_url = \"http://127.0.0.1/\"\n\
             webhook_user = \"bot\"\nwebhook_password = 4242424242\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!password.contains("4242424242"), "{password}");
        assert!(password.contains("webhook_password"), "{password}");
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.delivery.retry_schedule.len(), 7);
        assert_eq!(
            (
                config.runtime.max_queued_per_endpoint,
                config.runtime.max_queued_per_session,
                config.delivery.max_concurrent_per_endpoint
            ),
            (25_000, 6_250, 64)
        );
        assert_eq!(
            config.store.session_retention,
            Duration::from_secs(30 * 86400)
        );
        assert!(config.endpoints.is_empty());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = Config::from_toml(
            r#"
            listen = "nowhere"
            [endpoints.Bad]
            flow = "../etc"
            url_token = "short"
            webhook_url = "ftp://example.com"
            webhook_password = "x"
            "#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "listen:",
            "endpoints.Bad: an endpoint name",
            "endpoints.Bad.flow:",
            "endpoints.Bad.url_token:",
            "endpoints.Bad.webhook_url:",
            "endpoints.Bad.webhook_password: set webhook_user too",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
        }
    }

    #[test]
    fn refuses_private_webhooks_unless_allowed() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest",
            "http://10.1.2.3/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://[::ffff:0:7f00:1]/",
            "http://[2002:7f00:1::]/",
        ] {
            let config = format!("[endpoints.a]\nflow = \"echo\"\nwebhook_url = \"{url}\"\n");
            let err = Config::from_toml(&config).unwrap_err().to_string();
            assert!(err.contains("allow_private_webhooks"), "{url}: {err}");
            let allowed = format!("[delivery]\nallow_private_webhooks = true\n{config}");
            assert!(Config::from_toml(&allowed).is_ok(), "{url}");
        }
        let public = "[endpoints.a]\nflow = \"echo\"\nwebhook_url = \"https://example.com/hook\"\n";
        assert!(Config::from_toml(public).is_ok());
    }

    #[test]
    fn checks_webhook_secrets() {
        let with = |secret: &str| {
            Config::from_toml(&format!(
                "[endpoints.a]\nflow = \"echo\"\nwebhook_url = \"https://example.com/\"\nwebhook_secret = \"{secret}\"\n"
            ))
        };
        assert!(with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(
            with("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap_err()
                .to_string()
                .contains("whsec_")
        );
        assert!(
            with("whsec_c2hvcnQ=")
                .unwrap_err()
                .to_string()
                .contains("24")
        );
    }

    #[test]
    fn reads_the_http_table_with_defaults_for_what_is_not_set() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.http, HttpConfig::default());
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
        let config = Config::from_toml(
            r#"
            [http]
            header_read_timeout = "2s"
            idle_timeout = "30s"
            max_connections = 10
            max_header_size = "16 KiB"
            max_buffered_body_bytes = "8 MiB"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.http,
            HttpConfig {
                header_read_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30),
                max_connections: 10,
                max_header_size: 16 << 10,
                max_buffered_body_bytes: 8 << 20,
            }
        );
        let err = Config::from_toml(
            "max_body_size = \"2 MiB\"\n[http]\nheader_read_timeout = \"0s\"\nmax_connections = 0\nmax_header_size = 100\nmax_buffered_body_bytes = \"1 MiB\"\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "http.header_read_timeout",
            "http.max_connections",
            "http.max_header_size",
            "http.max_buffered_body_bytes",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
        }
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = Config::from_toml("[endpoints.a]\nflow = \"echo\"\nwebhok_url = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhok_url"), "{err}");
    }

    #[test]
    fn rejects_duplicate_tokens_and_credentials_in_urls() {
        let err = Config::from_toml(
            r#"
            [endpoints.a]
            flow = "echo"
            url_token = "0123456789abcdef0123456789abcdef"
            webhook_url = "http://u:p@example.com/"
            [endpoints.b]
            flow = "echo"
            url_token = "0123456789abcdef0123456789abcdef"
            webhook_url = "http://example.com/"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("same token"), "{err}");
        assert!(err.contains("credentials"), "{err}");
    }
}
