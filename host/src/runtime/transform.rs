//! Transformers: a channel's request turned into a message, and an output
//! turned into the channel's request, each in a fresh instance.
//!
//! A transformer runs as a flow does (see the module above): on the flow
//! threads, within its manifest's limits and the runtime's bounds, stopped
//! at its deadline; only the call differs. It is told nothing of a session:
//! it has no context or profile, and its store's are left empty.

use http::{HeaderName, HeaderValue};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::bindings::{Answer, Call, channel};
use super::{FailureKind, FlowFailure, Invocation, Kind, ReadyFlow, Runtime, Source};

impl Runtime {
    /// Runs `transformer`'s `handle-input` on `request`, a request to
    /// `endpoint`; `None` when the transformer does not export it.
    pub async fn transform_input(
        &self,
        transformer: &ReadyFlow,
        endpoint: &str,
        sensitive: bool,
        request: channel::Request,
    ) -> Result<Option<channel::Input>, FlowFailure> {
        match transformer.kind() {
            Kind::Flow => return Err(not_a_transformer()),
            Kind::Transformer { input: false, .. } => return Ok(None),
            Kind::Transformer { input: true, .. } => {}
        }
        let invocation = invocation(endpoint, "", sensitive);
        match self
            .call(transformer, invocation, Call::Input(request))
            .await?
        {
            Answer::Input(input) => Ok(Some(input)),
            Answer::Handled | Answer::Output(_) => unreachable!("handle-input answers an input"),
        }
    }

    /// Runs `transformer`'s `handle-output` on `output`; `None` when the
    /// transformer does not export it.
    pub async fn transform_output(
        &self,
        transformer: &ReadyFlow,
        sensitive: bool,
        output: channel::Output,
    ) -> Result<Option<channel::Delivery>, FlowFailure> {
        match transformer.kind() {
            Kind::Flow => return Err(not_a_transformer()),
            Kind::Transformer { output: false, .. } => return Ok(None),
            Kind::Transformer { output: true, .. } => {}
        }
        let invocation = invocation(&output.endpoint, &output.trace_id, sensitive);
        match self
            .call(transformer, invocation, Call::Output(output))
            .await?
        {
            Answer::Output(delivery) => Ok(Some(delivery)),
            Answer::Handled | Answer::Input(_) => {
                unreachable!("handle-output answers a delivery")
            }
        }
    }

    /// Makes `call` on the flow threads, as [`run`](Self::run) does a turn.
    async fn call(
        &self,
        transformer: &ReadyFlow,
        invocation: Invocation,
        call: Call,
    ) -> Result<Answer, FlowFailure> {
        let run = self.call_here(transformer, invocation, call);
        let task = self.executor.spawn(run.in_current_span());
        match AbortOnDropHandle::new(task).await {
            Ok(result) => result.map(|(_, answer)| answer),
            Err(e) => Err(FlowFailure {
                kind: FailureKind::Trap,
                reason: format!("the host failed while running the transformer: {e}"),
                stderr: String::new(),
            }),
        }
    }
}

/// A transformer's headers as HTTP headers: each name and value checked,
/// and none of `reserved` (the host's to set).
pub fn headers(
    pairs: Vec<channel::Header>,
    reserved: &[&str],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("{name:?} is not a header name"))?;
            if reserved.contains(&name.as_str()) {
                return Err(format!(
                    "it may not set the header {name}: the host sets it"
                ));
            }
            let value = HeaderValue::try_from(value)
                .map_err(|_| format!("the value of its header {name} is not a header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// What a transformer's store is made from: no session, no state.
fn invocation(endpoint: &str, trace_id: &str, sensitive: bool) -> Invocation {
    Invocation {
        endpoint: endpoint.to_owned(),
        user_id: String::new(),
        session_id: String::new(),
        text: None,
        data: None,
        trace_id: trace_id.to_owned(),
        source: Source::User,
        context: "{}".into(),
        profile: "{}".into(),
        sensitive,
        said: None,
    }
}

/// Why a flow cannot serve as a transformer.
fn not_a_transformer() -> FlowFailure {
    FlowFailure {
        kind: FailureKind::Instantiate,
        reason:
            "it is a flow, not a transformer: it exports neither handle-input nor handle-output"
                .into(),
        stderr: String::new(),
    }
}
