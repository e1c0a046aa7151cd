//! A flow's manifest, `<name>.toml` beside `<name>.wasm`: what the flow may
//! use, overriding the host's defaults, and whom it may call.
//!
//! ```toml
//! allowed_outbound_hosts = ["https://api.example.com"]
//!
//! [limits]
//! memory = "128 MiB"
//! deadline = "10s"
//! ```
//!
//! Without a manifest, a flow gets the host's limits and no network.

use serde::Deserialize;

use crate::config::RawLimits;
use crate::runtime::{AllowedHosts, Limits};

/// A flow's manifest.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
}

impl Manifest {
    /// Parses a manifest.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The hosts the flow may send HTTP requests to.
    pub fn allowed_hosts(&self) -> Result<AllowedHosts, String> {
        AllowedHosts::parse(&self.allowed_outbound_hosts)
            .map_err(|e| format!("allowed_outbound_hosts: {e}"))
    }

    /// The flow's limits: the host's defaults with the manifest's own.
    pub fn limits(&self, defaults: &Limits) -> Result<Limits, String> {
        let limits = self.limits.apply(defaults);
        let problems = limits.check();
        if problems.is_empty() {
            Ok(limits)
        } else {
            Err(format!("limits.{}", problems.join(", limits.")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overrides_only_what_it_names() {
        let manifest = Manifest::parse("[limits]\ndeadline = \"10s\"\n").unwrap();
        let limits = manifest.limits(&Limits::default()).unwrap();
        assert_eq!(limits.deadline, Duration::from_secs(10));
        assert_eq!(limits.memory, Limits::default().memory);
    }

    #[test]
    fn reads_allowed_hosts() {
        let manifest =
            Manifest::parse("allowed_outbound_hosts = [\"https://api.example.com\"]\n").unwrap();
        assert!(manifest.allowed_hosts().is_ok());
        let bad = Manifest::parse("allowed_outbound_hosts = [\"api.example.com\"]\n").unwrap();
        assert!(bad.allowed_hosts().unwrap_err().contains("api.example.com"));
        assert_eq!(
            Manifest::default().allowed_hosts(),
            Ok(AllowedHosts::default())
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(
            Manifest::parse("[limits]\nmemroy = 1\n")
                .unwrap_err()
                .contains("memroy")
        );
        let zero = Manifest::parse("[limits]\ndeadline = \"0s\"\n").unwrap();
        assert!(
            zero.limits(&Limits::default())
                .unwrap_err()
                .contains("deadline")
        );
    }
}
