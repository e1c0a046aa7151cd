//! Checking the raw configuration into a [`Config`]: every value parsed
//! into its unit, every problem collected, so that one run reports them all.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use super::raw::{RawConfig, RawHttp, RawWatchBuild};
use super::{
    BasicAuth, Config, ConfigError, DeliveryConfig, EndpointConfig, EndpointMode, HttpConfig,
    RuntimeConfig, StoreConfig, TelemetryConfig, without_credentials,
};
use crate::flows::watch_build::WatchBuild;
use crate::runtime::Limits;
use crate::store::PostgresOptions;
use crate::units::{ByteSize, HumanDuration};

impl RawHttp {
    fn check(self, max_body_size: u64, problems: &mut Vec<String>) -> HttpConfig {
        let http = HttpConfig {
            header_read_timeout: given(self.header_read_timeout).0,
            idle_timeout: given(self.idle_timeout).0,
            max_connections: given(self.max_connections),
            max_header_size: given(self.max_header_size).0,
            max_buffered_body_bytes: given(self.max_buffered_body_bytes).0,
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

impl RawConfig {
    /// Checks every value and collects every problem, so that one run of
    /// `flowhost serve` reports them all.
    pub(super) fn check(self) -> Result<Config, ConfigError> {
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

        let max_body_size = given(self.max_body_size).0;
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

        let max_queued_messages = given(self.runtime.max_queued_messages);
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
        let max_concurrent_flows = given(self.runtime.max_concurrent_flows);
        let runtime = RuntimeConfig {
            max_concurrent_flows,
            warm_instances: self
                .runtime
                .warm_instances
                .unwrap_or(DEFAULT_WARM_INSTANCES.min(max_concurrent_flows)),
            max_total_flow_memory: self
                .runtime
                .max_total_flow_memory
                .map_or_else(half_the_memory, |size| size.0),
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
            max_flow_memory: given(self.runtime.max_flow_memory).0,
            max_wasm_stack: given(self.runtime.max_wasm_stack).0,
            max_component_size: given(self.runtime.max_component_size).0,
            compile_timeout: given(self.runtime.compile_timeout).0,
            max_compile_memory: given(self.runtime.max_compile_memory).0,
            private_outbound_hosts: self.runtime.private_outbound_hosts.clone(),
            fuel_metering: given(self.runtime.fuel_metering),
            max_queued_messages,
            max_queued_per_endpoint,
            max_queued_per_session,
            shutdown_grace: given(self.runtime.shutdown_grace).0,
        };
        // By default one flow may have nine tenths of the turns in flight,
        // so that a flow under attack (or waiting on a dead API) leaves a
        // tenth for the others.
        let limits = self.limits.apply(&Limits {
            max_concurrent: flow_share(runtime.max_concurrent_flows),
            ..Limits::default()
        });
        problems.extend(limits.check().into_iter().map(|p| format!("limits.{p}")));
        if runtime.max_concurrent_flows == 0 {
            problems.push("runtime.max_concurrent_flows: must be at least 1".into());
        }
        if runtime.warm_instances == 0 || runtime.warm_instances > runtime.max_concurrent_flows {
            problems.push(format!(
                "runtime.warm_instances: must be from 1 to runtime.max_concurrent_flows ({})",
                runtime.max_concurrent_flows
            ));
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
            max_concurrent: flow_share(runtime.max_concurrent_flows),
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

        let max_concurrent = given(self.delivery.max_concurrent);
        let delivery = DeliveryConfig {
            timeout: given(self.delivery.timeout).0,
            retry_schedule: given(self.delivery.retry_schedule)
                .into_iter()
                .map(|d| d.0)
                .collect(),
            max_concurrent,
            // A quarter of the POSTs per endpoint: a receiver that answers
            // slowly (or not at all, until the timeout) holds at most that.
            max_concurrent_per_endpoint: self
                .delivery
                .max_concurrent_per_endpoint
                .unwrap_or((max_concurrent / 4).max(1)),
            allow_private_webhooks: given(self.delivery.allow_private_webhooks),
        };
        let postgres = self.store.url.map(|url| {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(format!(
                    "store.url: {} is not a PostgreSQL URL (postgres://user:password@host:port/database)",
                    crate::store::postgres_url_redacted(&url)
                ));
            }
            PostgresOptions {
                pool_size: given(self.store.pool_size),
                lease: given(self.store.lease).0,
                ..PostgresOptions::new(url)
            }
        });
        if let Some(options) = &postgres {
            if options.pool_size < 2 {
                problems.push("store.pool_size: must be at least 2".into());
            }
            if options.lease < Duration::from_secs(1) {
                problems.push("store.lease: must be at least 1s".into());
            }
        }
        let store = StoreConfig {
            fsync: given(self.store.fsync),
            retention: given(self.store.retention).0,
            session_retention: given(self.store.session_retention).0,
            postgres,
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
            if let Some(transformer) = &raw.transformer {
                if !crate::flows::is_name(transformer) {
                    problems.push(format!(
                        "{at}.transformer: {transformer:?} is not a transformer name (a-z, 0-9, '-', '_')"
                    ));
                } else if *transformer == raw.flow {
                    problems.push(format!(
                        "{at}.transformer: {transformer:?} is the endpoint's flow; a component is a flow or a transformer"
                    ));
                }
                if raw.mode == EndpointMode::Rest {
                    problems.push(format!(
                        "{at}.transformer: only for mode = \"webhook\" (a REST endpoint answers in the seed's JSON)"
                    ));
                }
            } else {
                if !raw.transformer_urls.is_empty() {
                    problems.push(format!("{at}.transformer_urls: set transformer too"));
                }
                if !raw.transformer_abort_on_error {
                    problems.push(format!(
                        "{at}.transformer_abort_on_error: set transformer too"
                    ));
                }
            }
            let allow_private = delivery.allow_private_webhooks;
            let transformer_urls: Vec<Url> = raw
                .transformer_urls
                .iter()
                .enumerate()
                .filter_map(|(n, raw_url)| {
                    let key = format!("{at}.transformer_urls[{n}]");
                    check_webhook_url(&key, raw_url, allow_private)
                        .map_err(|p| problems.push(p))
                        .ok()
                })
                .collect();
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
            let webhook_url = match (raw.mode, &raw.webhook_url) {
                (EndpointMode::Webhook, None) => {
                    problems.push(format!(
                        "{at}.webhook_url: required (or mode = \"rest\" to answer the POST itself)"
                    ));
                    None
                }
                (EndpointMode::Rest, Some(_)) => {
                    problems.push(format!(
                        "{at}.webhook_url: a REST endpoint answers the POST itself; remove webhook_url or set mode = \"webhook\""
                    ));
                    None
                }
                (EndpointMode::Rest, None) => None,
                (EndpointMode::Webhook, Some(url)) => Some(url),
            };
            if raw.mode == EndpointMode::Rest {
                for (key, set) in [
                    ("webhook_user", raw.webhook_user.is_some()),
                    ("webhook_password", raw.webhook_password.is_some()),
                    ("webhook_secret", raw.webhook_secret.is_some()),
                ] {
                    if set {
                        problems.push(format!("{at}.{key}: a REST endpoint has no webhook"));
                    }
                }
            } else if raw.rest_timeout.is_some() {
                problems.push(format!("{at}.rest_timeout: only for mode = \"rest\""));
            }
            let webhook_url = webhook_url.and_then(|raw_url| {
                check_webhook_url(&format!("{at}.webhook_url"), raw_url, allow_private)
                    .map_err(|p| problems.push(p))
                    .ok()
            });
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
            let session_ttl = match raw.session_ttl {
                Some(HumanDuration(ttl)) if ttl.is_zero() => {
                    problems.push(format!(
                        "{at}.session_ttl: must be more than 0 (leave it out for sessions that last)"
                    ));
                    None
                }
                ttl => ttl.map(|ttl| ttl.0),
            };
            // A webhook endpoint whose URL failed its check is left out:
            // the problem is reported.
            if raw.mode == EndpointMode::Rest || webhook_url.is_some() {
                endpoints.insert(
                    name.clone(),
                    EndpointConfig {
                        name,
                        flow: raw.flow,
                        url_token: raw.url_token,
                        auth: raw.auth,
                        mode: raw.mode,
                        rest_timeout: raw
                            .rest_timeout
                            .map_or(DEFAULT_REST_TIMEOUT, |timeout| timeout.0),
                        webhook_url,
                        webhook_auth,
                        disable_sensitive_logging: raw.disable_sensitive_logging,
                        webhook_secret,
                        delivery_order: raw.delivery_order,
                        output_timing: raw.output_timing,
                        idempotency_window: raw
                            .idempotency_window
                            .map_or(DEFAULT_IDEMPOTENCY_WINDOW, |window| window.0),
                        session_ttl,
                        mask_logging: raw.mask_logging,
                        transformer: raw.transformer,
                        transformer_abort_on_error: raw.transformer_abort_on_error,
                        transformer_urls,
                    },
                );
            }
        }

        let telemetry = TelemetryConfig {
            metrics: given(self.telemetry.metrics),
            otlp_endpoint: self.telemetry.otlp_endpoint.filter(|url| !url.is_empty()),
        };
        if let Some(url) = &telemetry.otlp_endpoint
            && let Err(problem) = check_http_url("telemetry.otlp_endpoint", url)
        {
            problems.push(problem);
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
            telemetry,
            endpoints,
            watch: given(self.watch),
            watch_debounce: given(self.watch_debounce).0,
            watch_build: self
                .watch_build
                .into_iter()
                .map(|entry| match entry {
                    RawWatchBuild::Crate(dir) => WatchBuild { dir, command: None },
                    RawWatchBuild::Command { dir, command } => WatchBuild {
                        dir,
                        command: Some(command),
                    },
                })
                .collect(),
            origin: None,
            compiler_program: None,
        })
    }
}

/// Instances kept warm when `runtime.warm_instances` is not set (fewer if
/// `max_concurrent_flows` is smaller): enough for the turns that come and
/// go in microseconds, few enough that their stacks and memories stay in
/// the CPU's caches (the pool hands out the least recently used stack, so
/// a larger pool cycles through more memory). Measured with `cargo xtask
/// bench --only fast_path`, end to end: 0.283 CPU-seconds per 1,000
/// messages with 16 or 32, 0.317 with 100, 0.324 with 256.
const DEFAULT_WARM_INSTANCES: u32 = 32;

/// How long a REST endpoint's POST waits for its turn by default: longer
/// than the default flow deadline (5 s), with room for a few turns ahead.
const DEFAULT_REST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long an `Idempotency-Key` is remembered by default: a day, as
/// Stripe's and the IETF draft's examples keep them, longer than any
/// caller's retry schedule.
const DEFAULT_IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The turns in flight one flow may have by default: nine tenths of the
/// host's, at least one.
fn flow_share(max_concurrent_flows: u32) -> u32 {
    (max_concurrent_flows - max_concurrent_flows / 10).max(1)
}

/// `runtime.max_total_flow_memory` when it is not set: half the machine's
/// memory (4 GiB where it cannot be read: half of 8).
fn half_the_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(8 << 30);
    total / 2
}

/// A value that `defaults.toml` gives, and so is set whatever the file
/// and the environment say (neither can unset a key).
fn given<T>(value: Option<T>) -> T {
    value.expect("defaults.toml gives every key without a worked-out default a value")
}

/// A URL outputs may be sent to, as `key` names it: http(s), and public
/// unless `allow_private` (`delivery.allow_private_webhooks`).
fn check_webhook_url(key: &str, raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = check_http_url(key, raw)?;
    match crate::delivery::guard::private_host(&url) {
        Some(reason) if !allow_private => Err(format!(
            "{key}: {url} is {reason}; set delivery.allow_private_webhooks = true to allow it"
        )),
        _ => Ok(url),
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
