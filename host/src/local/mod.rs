//! `flowhost run`: one message through a flow, locally, with no server,
//! store or webhook: the flow author's quick loop.
//!
//! The outputs are printed as the exact bodies the webhook would receive.
//! With a state file, the context and profile carry over from one run to the
//! next, so a multi-turn conversation can be tried one command at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::delivery::payload;
use crate::flows::Loader;
use crate::runtime::{FlowFailure, Invocation, Runtime};

/// One message to run.
#[derive(Debug, Clone)]
pub struct LocalMessage {
    /// `userId`
    pub user_id: String,
    /// `sessionId`
    pub session_id: String,
    /// `text`
    pub text: Option<String>,
    /// `data`, JSON object text.
    pub data: Option<String>,
}

/// The context and profile kept between local runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalState {
    context: Map<String, Value>,
    profile: Map<String, Value>,
}

/// What a local run produced.
#[derive(Debug)]
pub enum LocalOutcome {
    /// The flow returned `Ok`: the webhook bodies it would send.
    Outputs(Vec<String>),
    /// The flow failed.
    Failed(FlowFailure),
}

/// Runs `message` through the flow at `path` (with its manifest, if any),
/// with the context and profile in `state_file` (kept there if the flow
/// succeeds).
pub async fn run_flow(
    path: &Path,
    message: LocalMessage,
    state_file: Option<&PathBuf>,
) -> anyhow::Result<LocalOutcome> {
    if let Some(data) = &message.data {
        match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(_)) => {}
            _ => bail!("--data must be a JSON object"),
        }
    }
    let mut state: LocalState = match state_file {
        Some(file) if file.exists() => serde_json::from_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{} is not a state file", file.display()))?,
        _ => LocalState::default(),
    };

    let mut config = Config::from_toml("")?;
    config.runtime.max_concurrent_flows = 2;
    let runtime = Arc::new(Runtime::new(&config.runtime)?);
    let loader = Loader::new(Arc::clone(&runtime), config.limits.clone(), None);
    let flow = loader
        .load_path(path)
        .await
        .with_context(|| format!("loading {}", path.display()))?;

    let trace_id = crate::inbox::new_trace_id();
    let invocation = Invocation {
        endpoint: "local".into(),
        user_id: message.user_id.clone(),
        session_id: message.session_id.clone(),
        text: message.text,
        data: message.data,
        trace_id: trace_id.clone(),
        source: crate::runtime::Source::User,
        context: Value::Object(state.context.clone()).to_string(),
        profile: Value::Object(state.profile.clone()).to_string(),
        sensitive: false,
        said: None,
    };
    let turn = match runtime.run(&flow.ready, invocation).await {
        Ok(turn) => turn,
        Err(failure) => return Ok(LocalOutcome::Failed(failure)),
    };
    if let Some(file) = state_file {
        if let Some(context) = &turn.context {
            state.context = serde_json::from_str(context)?;
        }
        if let Some(profile) = &turn.profile {
            state.profile = serde_json::from_str(profile)?;
        }
        std::fs::write(file, serde_json::to_string_pretty(&state)? + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(LocalOutcome::Outputs(
        turn.outputs
            .iter()
            .map(|output| {
                let to = payload::Recipient {
                    user_id: &message.user_id,
                    session_id: &message.session_id,
                    trace_id: &trace_id,
                    disable_sensitive_logging: false,
                };
                payload::render(to, output)
            })
            .collect(),
    ))
}
