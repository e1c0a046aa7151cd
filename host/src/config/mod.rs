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

mod check;
mod raw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use reqwest::Url;

pub use crate::delivery::DeliveryConfig;
pub use crate::endpoints::{
    Auth, BasicAuth, DeliveryOrder, EndpointConfig, EndpointMode, OutputTiming,
};
pub use crate::http::HttpConfig;
pub use crate::runtime::RuntimeConfig;
pub use crate::store::StoreConfig;

use crate::flows::watch_build::WatchBuild;
use crate::runtime::Limits;

use self::raw::RawConfig;

/// Every default, read before anything else (and quoted by the README).
pub const DEFAULTS: &str = include_str!("defaults.toml");

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
    /// What the host tells its operator besides its log.
    pub telemetry: TelemetryConfig,
    /// The endpoints, by name.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Whether the flows folder and the configuration file are watched and
    /// reloaded when they change.
    pub watch: bool,
    /// How long a changed file must be quiet before it is reloaded.
    pub watch_debounce: Duration,
    /// Flows rebuilt into the flows folder whenever their sources change
    /// (`--watch-build`): the flow author's loop.
    pub watch_build: Vec<WatchBuild>,
    /// Where this configuration came from, to read it again on reload.
    pub origin: Option<ConfigOrigin>,
    /// The `flowhost` executable that compiles flows in a child process
    /// (`flowhost compile-flow`), bounded by `runtime.compile_timeout` and
    /// `runtime.max_compile_memory`; `None` compiles in this process,
    /// unbounded. Not read from the file: `flowhost serve` sets it to
    /// itself.
    pub compiler_program: Option<PathBuf>,
}

/// What the host tells its operator besides its log (`[telemetry]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Whether Prometheus metrics are counted and served at `GET /metrics`.
    pub metrics: bool,
    /// The OTLP/HTTP collector traces are exported to (its base URL, such
    /// as `http://collector:4318`); without it, the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` decides, and traces are off without
    /// either.
    pub otlp_endpoint: Option<String>,
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
    pub watch_build: Vec<WatchBuild>,
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
        let mut figment = Figment::from(Toml::string(DEFAULTS));
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
        let raw: RawConfig = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string(text))
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
        let raw: RawConfig = figment.extract().map_err(ConfigError::parse)?;
        let mut config = raw.check()?;
        config
            .watch_build
            .extend(overrides.watch_build.iter().cloned());
        Ok(config)
    }

    /// The base of the URLs printed for endpoints.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
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

#[cfg(test)]
mod tests;
