//! `flowhost check`: what `serve` would refuse, found before a deploy. It
//! reads the configuration as `serve` does, loads every flow file in the
//! flows folder with the configuration's limits (compiled, as `serve`
//! compiles them), and checks that every endpoint's flow is there and
//! loads. It opens no store and binds no port: a deploy pipeline seldom
//! reaches the production database, and the host it checks for may be
//! running.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::flows::{Loader, flow_name};
use crate::runtime::Kind;
use crate::runtime::Runtime;

/// One thing `serve` would refuse or not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about: a configuration key, a file, an endpoint.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}

/// What [`check`] found, and what it looked at.
#[derive(Debug, Default)]
pub struct Report {
    /// Every problem, in the order found.
    pub findings: Vec<Finding>,
    /// The flows that load.
    pub flows: Vec<String>,
    /// The endpoints checked.
    pub endpoints: usize,
}

/// The findings of a configuration that did not load: one per problem.
pub fn config_findings(error: &ConfigError, file: &Path) -> Vec<Finding> {
    let subject = file.display().to_string();
    match error {
        ConfigError::Invalid(problems) => problems
            .iter()
            .map(|problem| Finding {
                subject: subject.clone(),
                problem: problem.clone(),
            })
            .collect(),
        other => vec![Finding {
            subject,
            problem: other.to_string(),
        }],
    }
}

/// Loads every flow of `config`'s flows folder and checks its endpoints.
pub async fn check(config: &Config) -> anyhow::Result<Report> {
    let mut report = Report {
        endpoints: config.endpoints.len(),
        ..Report::default()
    };
    let dir = &config.flows_dir;
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                files.push(entry?.path());
            }
        }
        Err(error) => report.findings.push(Finding {
            subject: dir.display().to_string(),
            problem: format!("the flows folder cannot be read: {error}"),
        }),
    }
    files.sort();

    let runtime = Arc::new(Runtime::new(&config.runtime)?);
    let loader =
        Loader::new(runtime, config.limits.clone(), None).with_ceilings(config.max_limits.clone());
    let mut broken = Vec::new();
    let mut transformers = Vec::new();
    for path in files
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
    {
        let Some(name) = flow_name(path) else {
            report.findings.push(Finding {
                subject: path.display().to_string(),
                problem: "not a flow file name, so serve ignores it (want <name>.wasm, the name \
                          of a-z, 0-9, '-' and '_', at most 64)"
                    .to_owned(),
            });
            continue;
        };
        match loader.load_path(path).await {
            Ok(loaded) => {
                if loaded.compiled.kind() != Kind::Flow {
                    transformers.push(name.clone());
                }
                report.flows.push(name);
            }
            Err(error) => {
                report.findings.push(Finding {
                    subject: path.display().to_string(),
                    problem: error.to_string(),
                });
                broken.push(name);
            }
        }
    }

    for (name, endpoint) in &config.endpoints {
        let components = std::iter::once(("flow", &endpoint.flow))
            .chain(endpoint.transformer.iter().map(|t| ("transformer", t)));
        for (role, component) in components {
            let is_transformer = transformers.contains(component);
            let problem = if broken.contains(component) {
                format!(
                    "its {role} {component:?} does not load (above); its messages would wait for it"
                )
            } else if !report.flows.contains(component) {
                format!(
                    "its {role} {component:?} has no file {}; its messages would wait for one",
                    dir.join(format!("{component}.wasm")).display()
                )
            } else if role == "flow" && is_transformer {
                format!("its flow {component:?} is a transformer, not a flow")
            } else if role == "transformer" && !is_transformer {
                format!("its transformer {component:?} is a flow, not a transformer")
            } else {
                continue;
            };
            report.findings.push(Finding {
                subject: format!("endpoints.{name}"),
                problem,
            });
        }
    }
    Ok(report)
}
