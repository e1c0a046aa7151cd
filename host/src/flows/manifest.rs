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
//!
//! A transformer's manifest may also hold its settings, which it reads with
//! `config.get` (a signing secret, an API token):
//!
//! ```toml
//! [config]
//! signing_secret = "8f742231b10e8888abcd99yyyzzz85a5"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::runtime::{AllowedHosts, BadHostEntry, LimitProblem, Limits, RawLimits};

/// Why a manifest was refused. It never quotes the file: a manifest may be
/// a link to something secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// It is not TOML of the manifest's shape.
    #[error("{message}{}", at.map(|(line, column)| format!(" (line {line}, column {column})")).unwrap_or_default())]
    Syntax {
        /// What the parser said, at most 200 characters.
        message: String,
        /// Where: line and column, from 1.
        at: Option<(usize, usize)>,
    },
    /// An entry of `allowed_outbound_hosts` does not parse.
    #[error("allowed_outbound_hosts: {0}")]
    Hosts(#[from] BadHostEntry),
    /// Limits that cannot be used, or are over the host's ceilings.
    #[error("limits.{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", limits."))]
    Limits(Vec<LimitProblem>),
}

/// A flow's manifest.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    /// Settings the component reads with `config.get`.
    #[serde(default)]
    config: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses a manifest. An error says what is wrong and where, without
    /// quoting the text: the file may be a link to something secret.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
                (line, column)
            });
            let message = e.message().trim().chars().take(200).collect();
            ManifestError::Syntax { message, at }
        })
    }

    /// The `[config]` table: settings the component reads.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// The hosts the flow may send HTTP requests to.
    pub fn allowed_hosts(&self) -> Result<AllowedHosts, ManifestError> {
        Ok(AllowedHosts::parse(&self.allowed_outbound_hosts)?)
    }

    /// The flow's limits: the host's defaults with the manifest's own, none
    /// over the host's `ceilings`.
    pub fn limits(&self, defaults: &Limits, ceilings: &Limits) -> Result<Limits, ManifestError> {
        let limits = self.limits.apply(defaults);
        let mut problems = limits.check();
        problems.extend(limits.over(ceilings));
        if problems.is_empty() {
            Ok(limits)
        } else {
            Err(ManifestError::Limits(problems))
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
        let limits = manifest
            .limits(&Limits::default(), &Limits::default_ceilings())
            .unwrap();
        assert_eq!(limits.deadline, Duration::from_secs(10));
        assert_eq!(limits.memory, Limits::default().memory);
    }

    #[test]
    fn reads_allowed_hosts() {
        let manifest =
            Manifest::parse("allowed_outbound_hosts = [\"https://api.example.com\"]\n").unwrap();
        assert!(manifest.allowed_hosts().is_ok());
        let bad = Manifest::parse("allowed_outbound_hosts = [\"api.example.com\"]\n").unwrap();
        assert!(
            bad.allowed_hosts()
                .unwrap_err()
                .to_string()
                .contains("api.example.com")
        );
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
                .to_string()
                .contains("memroy")
        );
        let zero = Manifest::parse("[limits]\ndeadline = \"0s\"\n").unwrap();
        assert!(
            zero.limits(&Limits::default(), &Limits::default_ceilings())
                .unwrap_err()
                .to_string()
                .contains("deadline")
        );
    }

    #[test]
    fn refuses_limits_over_the_host_ceilings() {
        // The manifest of the security review's #57: every limit lifted.
        let greedy = Manifest::parse(
            "[limits]\ndeadline = \"9999h\"\nmax_concurrent = 100000\n\
             max_log_size = \"16 GiB\"\nmax_outputs = 4000000000\nmemory = \"8 GiB\"\n",
        )
        .unwrap();
        let problem = greedy
            .limits(&Limits::default(), &Limits::default_ceilings())
            .unwrap_err()
            .to_string();
        for key in [
            "memory",
            "deadline",
            "max_outputs",
            "max_log_size",
            "max_concurrent",
        ] {
            assert!(
                problem.contains(&format!("max_limits.{key}")),
                "{key}: {problem}"
            );
        }
        // Within the ceilings, a manifest may still raise a limit.
        let raised = Manifest::parse("[limits]\ndeadline = \"30s\"\n").unwrap();
        assert!(
            raised
                .limits(&Limits::default(), &Limits::default_ceilings())
                .is_ok()
        );
    }

    #[test]
    fn reads_config_strings_only() {
        let manifest = Manifest::parse("[config]\nsigning_secret = \"abc\"\n").unwrap();
        assert_eq!(manifest.config()["signing_secret"], "abc");
        let problem = Manifest::parse("[config]\nport = 8080\n")
            .unwrap_err()
            .to_string();
        assert!(problem.contains("line 2"), "{problem}");
    }

    #[test]
    fn errors_never_quote_the_file() {
        // A manifest that is a link to a secret: the error says where, not what.
        let secret = "FLOWHOST_ADMIN_TOKEN=s3cret-admin-token-value\nPATH=/usr/bin\n";
        let problem = Manifest::parse(secret).unwrap_err().to_string();
        assert!(!problem.contains("s3cret"), "{problem}");
        assert!(problem.contains("line 1"), "{problem}");
    }
}
