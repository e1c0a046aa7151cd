//! What an attempt sends: the seed's JSON to the endpoint's webhook, or
//! what the endpoint's transformer makes of the output.
//!
//! The transformer runs at every attempt, not once before the first, and
//! its request is never stored. The outbox keeps what the flow said (the
//! seed's JSON, made when the turn committed) and its `webhook-id`, so a
//! retry carries the same id whatever the transformer says; a transformer
//! fixed by a hot reload applies to the retries of outputs it had failed,
//! and a redelivered dead letter is transformed afresh. The cost is a call
//! per attempt, and attempts after the first are rare.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use reqwest::Url;
use serde_json::Value;

use super::client::Answer;
use crate::endpoints::EndpointConfig;
use crate::flows::Registry;
use crate::runtime::{Runtime, channel, transformer_headers};
use crate::store::PendingOutput;
use crate::telemetry::metrics::Metrics;

/// What runs endpoints' transformers: the runtime and the components in
/// service.
#[derive(Clone)]
pub struct Transformers {
    /// Runs them.
    pub runtime: Arc<Runtime>,
    /// Where they are found by name.
    pub flows: Registry,
    /// Where their calls are counted.
    pub metrics: Metrics,
}

/// One POST of an output: where, with which headers of the flow's or
/// transformer's, and what body. The host adds its own headers (see
/// `client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookRequest {
    pub(crate) url: Url,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Vec<u8>,
}

impl WebhookRequest {
    /// The seed's request: its JSON, to the endpoint's webhook.
    pub(crate) fn seed(webhook: &Url, output: &PendingOutput) -> WebhookRequest {
        WebhookRequest {
            url: webhook.clone(),
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: output.body.clone().into_bytes(),
        }
    }
}

/// What an attempt does.
#[derive(Debug)]
pub(super) enum Shaped {
    /// Send this.
    Send(WebhookRequest),
    /// Nothing: the transformer dropped the output, which is done.
    Dropped,
    /// The transformer failed and the endpoint aborts on error: the output
    /// is a dead letter, for this reason.
    Failed(String),
    /// The transformer is not in service (yet): try again later.
    Unavailable(String),
}

impl Shaped {
    /// The request to send, or the answer the attempt comes to without
    /// sending anything.
    pub(super) fn into_request(self) -> Result<WebhookRequest, Answer> {
        match self {
            Shaped::Send(request) => Ok(request),
            Shaped::Dropped => Err(Answer::Dropped),
            Shaped::Failed(reason) => Err(Answer::Refused(reason)),
            Shaped::Unavailable(error) => Err(Answer::Failed {
                status: None,
                error,
                body: String::new(),
                body_bytes: 0,
                retry_after: None,
            }),
        }
    }
}

/// Headers a transformer may not set: the host's own, and those that
/// frame the request.
const HOST_HEADERS: [&str; 9] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
];

impl Transformers {
    /// What an attempt to deliver `output` sends, for `endpoint`.
    pub(super) async fn shape(
        &self,
        endpoint: &EndpointConfig,
        webhook: &Url,
        output: &PendingOutput,
    ) -> Shaped {
        let seed = || Shaped::Send(WebhookRequest::seed(webhook, output));
        let Some(name) = &endpoint.transformer else {
            return seed();
        };
        let failed = |reason: String| {
            if endpoint.transformer_abort_on_error {
                tracing::warn!(transformer = %name, %reason, "the transformer failed; the output is a dead letter");
                Shaped::Failed(format!("the transformer {name} failed: {reason}"))
            } else {
                tracing::warn!(transformer = %name, %reason, "the transformer failed; the output is sent in the seed's JSON (transformer_abort_on_error = false)");
                seed()
            }
        };
        let Some(transformer) = self.flows.get(name) else {
            return Shaped::Unavailable(format!("the transformer {name} is not loaded"));
        };
        let said = match said(output) {
            Ok(said) => said,
            Err(reason) => return failed(reason),
        };
        let delivery = self
            .runtime
            .transform_output(&transformer.ready, endpoint.withholds_content(), said)
            .await;
        let count = |outcome| {
            self.metrics
                .transform(&endpoint.name, name, "handle-output", outcome);
        };
        match delivery {
            Ok(None) => seed(),
            Ok(Some(channel::Delivery::Drop)) => {
                count("drop");
                Shaped::Dropped
            }
            Ok(Some(channel::Delivery::Send(request))) => {
                match checked(request, endpoint, webhook) {
                    Ok(request) => {
                        count("send");
                        Shaped::Send(request)
                    }
                    Err(reason) => {
                        count("refused");
                        failed(reason)
                    }
                }
            }
            Err(failure) => {
                count(failure.kind.label());
                failed(failure.reason)
            }
        }
    }
}

/// The output as the flow said it, read back from its stored body (the
/// seed's JSON, in which a missing text is `""` and missing data `{}`).
fn said(output: &PendingOutput) -> Result<channel::Output, String> {
    let body: Value = serde_json::from_str(&output.body)
        .map_err(|e| format!("the stored output is not JSON: {e}"))?;
    let field = |pointer: &str| body.pointer(pointer).and_then(Value::as_str);
    let ai = &body["AIOutput"];
    Ok(channel::Output {
        user_id: field("/userId").unwrap_or_default().to_owned(),
        session_id: field("/sessionId").unwrap_or_default().to_owned(),
        text: field("/AIOutput/text")
            .filter(|text| !text.is_empty())
            .map(str::to_owned),
        data: ai["data"]
            .as_object()
            .filter(|data| !data.is_empty())
            .map(|data| Value::Object(data.clone()).to_string()),
        trace_id: field("/AIOutput/traceId").unwrap_or_default().to_owned(),
        endpoint: output.session.endpoint.clone(),
    })
}

/// The transformer's request, if the endpoint allows where it goes and its
/// headers are headers.
fn checked(
    request: channel::WebhookRequest,
    endpoint: &EndpointConfig,
    webhook: &Url,
) -> Result<WebhookRequest, String> {
    let url = match request.url {
        None => webhook.clone(),
        Some(raw) => {
            let url = Url::parse(&raw).map_err(|e| format!("its URL {raw:?} is not a URL: {e}"))?;
            if url != *webhook && !endpoint.transformer_urls.contains(&url) {
                return Err(format!(
                    "its URL {url} is neither the endpoint's webhook_url nor one of its transformer_urls"
                ));
            }
            url
        }
    };
    let headers = transformer_headers(request.headers, &HOST_HEADERS)?;
    Ok(WebhookRequest {
        url,
        headers,
        body: request.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionKey;

    fn config(urls: &[&str]) -> EndpointConfig {
        let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        let config = crate::Config::from_toml(&format!(
            "[endpoints.slack]\nflow = \"echo\"\ntransformer = \"slack\"\n\
             webhook_url = \"https://hooks.example.com/in\"\ntransformer_urls = [{}]\n",
            urls.join(", ")
        ))
        .unwrap();
        config.endpoints["slack"].clone()
    }

    fn request(url: Option<&str>, headers: &[(&str, &str)]) -> channel::WebhookRequest {
        channel::WebhookRequest {
            url: url.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_transformer_sends_only_where_the_endpoint_allows() {
        let webhook = Url::parse("https://hooks.example.com/in").unwrap();
        let endpoint = config(&["https://slack.com/api/chat.postMessage"]);
        let to = |url| checked(request(url, &[]), &endpoint, &webhook).map(|r| r.url.to_string());
        assert_eq!(to(None).unwrap(), "https://hooks.example.com/in");
        assert_eq!(
            to(Some("https://slack.com/api/chat.postMessage")).unwrap(),
            "https://slack.com/api/chat.postMessage"
        );
        let refused = to(Some("https://attacker.example/steal")).unwrap_err();
        assert!(refused.contains("transformer_urls"), "{refused}");
        assert!(to(Some("not a url")).is_err());
    }

    #[test]
    fn a_transformer_may_not_set_the_hosts_headers() {
        let webhook = Url::parse("https://hooks.example.com/in").unwrap();
        let endpoint = config(&[]);
        let ok = checked(
            request(
                None,
                &[
                    ("Authorization", "Bearer xoxb"),
                    ("content-type", "text/plain"),
                ],
            ),
            &endpoint,
            &webhook,
        )
        .unwrap();
        assert_eq!(ok.headers.len(), 2);
        for forged in ["webhook-signature", "Webhook-Id", "host", "content-length"] {
            let refused = checked(request(None, &[(forged, "x")]), &endpoint, &webhook);
            assert!(refused.is_err(), "{forged}");
        }
        assert!(checked(request(None, &[("bad name", "x")]), &endpoint, &webhook).is_err());
        assert!(
            checked(
                request(None, &[("x-a", "line\nbreak")]),
                &endpoint,
                &webhook
            )
            .is_err()
        );
    }

    #[test]
    fn the_output_is_read_back_as_the_flow_said_it() {
        let output = PendingOutput {
            id: 1,
            session: SessionKey {
                endpoint: "slack".into(),
                session_id: "C1".into(),
            },
            webhook_id: "msg_1".into(),
            body: r#"{"userId":"U1","sessionId":"C1","AIOutput":{"text":"","data":{"a":1},"traceId":"t","disableSensitiveLogging":false,"source":"bot"}}"#.into(),
            attempts: 0,
            next_attempt_at: None,
            origin: None,
        };
        let said = said(&output).unwrap();
        assert_eq!(said.user_id, "U1");
        assert_eq!(said.session_id, "C1");
        assert_eq!(said.text, None);
        assert_eq!(said.data.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(said.trace_id, "t");
        assert_eq!(said.endpoint, "slack");
    }
}
