//! A flow run on the author's machine, with no server, store or webhook:
//! `flowhost run` (one message) and `flowhost test` (a conversation file,
//! see [`conversation`]).
//!
//! Both load the flow as `serve` does: with the settings of `flowhost.toml`
//! when there is one (so a big component may be allowed by
//! `runtime.max_component_size`), with the flow's manifest, and through
//! `serve`'s compile cache (`<data_dir>/cache`), so that only the first run
//! of a component compiles it: a Python or JavaScript flow takes seconds to
//! compile and milliseconds to load once compiled.
//!
//! The outputs are the exact bodies the webhook would receive. With a state
//! file, `run` carries the context and profile over from one run to the
//! next, so a multi-turn conversation can be tried one command at a time.

pub mod conversation;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::delivery::payload;
use crate::flows::{CompileCache, LoadedFlow, Loader};
use crate::runtime::{FlowFailure, Invocation, Output, Runtime};

/// One message to run.
#[derive(Debug, Clone, Default)]
pub struct LocalMessage {
    /// `userId`
    pub user_id: String,
    /// `sessionId`
    pub session_id: String,
    /// `text`
    pub text: Option<String>,
    /// `data`, a JSON object.
    pub data: Option<Map<String, Value>>,
}

/// A user's state between local turns: their profile, and the context of
/// each of their sessions.
#[derive(Debug, Default, Clone)]
pub struct LocalState {
    /// The user's profile.
    pub profile: Map<String, Value>,
    /// Each session's context.
    pub contexts: HashMap<String, Map<String, Value>>,
}

/// What one local turn produced.
#[derive(Debug)]
pub struct LocalTurn {
    /// The outputs, in the order the flow said them.
    pub outputs: Vec<Output>,
    /// The trace id the turn ran under (it is in each webhook body).
    pub trace_id: String,
}

/// A flow loaded for local runs.
pub struct LocalFlow {
    runtime: Arc<Runtime>,
    flow: LoadedFlow,
}

impl LocalFlow {
    /// Loads the flow at `path` (`<name>.wasm`, with its `<name>.toml`) with
    /// `config`'s runtime settings and limits, through the compile cache in
    /// `config.data_dir`.
    pub async fn load(path: &Path, config: &Config) -> anyhow::Result<LocalFlow> {
        let mut settings = config.runtime.clone();
        // One turn at a time: no need to reserve room for thousands.
        settings.max_concurrent_flows = 2;
        let runtime = Arc::new(Runtime::new(&settings)?);
        let cache_dir = config.data_dir.join("cache");
        let cache = CompileCache::open(&cache_dir, runtime.compatibility_key())
            .map_err(|error| {
                tracing::warn!(folder = %cache_dir.display(), %error, "no compile cache: every run compiles the flow");
            })
            .ok();
        let loader = Loader::new(Arc::clone(&runtime), config.limits.clone(), cache)
            .with_ceilings(config.max_limits.clone());
        let flow = loader
            .load_path(path)
            .await
            .with_context(|| format!("loading {}", path.display()))?;
        tracing::info!(
            flow = %flow.name,
            version = %flow.version,
            from_cache = flow.from_cache,
            took_ms = flow.load_time.as_millis() as u64,
            "flow loaded"
        );
        Ok(LocalFlow { runtime, flow })
    }

    /// How long loading took, and whether the code came from the cache.
    pub fn load_time(&self) -> (Duration, bool) {
        (self.flow.load_time, self.flow.from_cache)
    }

    /// Runs `message` with the user's `state`, which it updates as `serve`
    /// would: the session's context and the profile the flow set, the
    /// context cleared when the flow ends the session. A failed turn
    /// changes nothing.
    pub async fn turn(
        &self,
        message: &LocalMessage,
        state: &mut LocalState,
    ) -> Result<LocalTurn, FlowFailure> {
        let trace_id = crate::inbox::new_trace_id();
        let context = state
            .contexts
            .get(&message.session_id)
            .cloned()
            .unwrap_or_default();
        let invocation = Invocation {
            endpoint: "local".into(),
            user_id: message.user_id.clone(),
            session_id: message.session_id.clone(),
            text: message.text.clone(),
            data: message
                .data
                .as_ref()
                .map(|data| Value::Object(data.clone()).to_string()),
            trace_id: trace_id.clone(),
            source: crate::runtime::Source::User,
            context: Value::Object(context).to_string(),
            profile: Value::Object(state.profile.clone()).to_string(),
            sensitive: false,
            said: None,
        };
        let turn = self.runtime.run(&self.flow.ready, invocation).await?;
        // The host checked both are JSON objects before the turn ended.
        let object = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        if turn.end_session {
            state.contexts.remove(&message.session_id);
        } else if let Some(context) = &turn.context {
            state
                .contexts
                .insert(message.session_id.clone(), object(context));
        }
        if let Some(profile) = &turn.profile {
            state.profile = object(profile);
        }
        Ok(LocalTurn {
            outputs: turn.outputs,
            trace_id,
        })
    }
}

/// The context and profile kept in `flowhost run --state`'s file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
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
/// succeeds): `flowhost run`.
pub async fn run_flow(
    path: &Path,
    config: &Config,
    message: LocalMessage,
    state_file: Option<&PathBuf>,
) -> anyhow::Result<LocalOutcome> {
    let saved: StateFile = match state_file {
        Some(file) if file.exists() => serde_json::from_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{} is not a state file", file.display()))?,
        _ => StateFile::default(),
    };
    let mut state = LocalState {
        profile: saved.profile,
        contexts: HashMap::from([(message.session_id.clone(), saved.context)]),
    };
    let flow = LocalFlow::load(path, config).await?;
    let turn = match flow.turn(&message, &mut state).await {
        Ok(turn) => turn,
        Err(failure) => return Ok(LocalOutcome::Failed(failure)),
    };
    if let Some(file) = state_file {
        let saved = StateFile {
            context: state
                .contexts
                .remove(&message.session_id)
                .unwrap_or_default(),
            profile: state.profile,
        };
        std::fs::write(file, serde_json::to_string_pretty(&saved)? + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(LocalOutcome::Outputs(
        turn.outputs
            .iter()
            .map(|output| webhook_body(&message, &turn.trace_id, output))
            .collect(),
    ))
}

/// The body the webhook would receive for `output`.
fn webhook_body(message: &LocalMessage, trace_id: &str, output: &Output) -> String {
    let to = payload::Recipient {
        user_id: &message.user_id,
        session_id: &message.session_id,
        trace_id,
        disable_sensitive_logging: false,
    };
    payload::render(to, output)
}

/// Parses `--data`: a JSON object.
pub fn parse_data(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(data)) => Ok(data),
        _ => bail!("--data must be a JSON object"),
    }
}
