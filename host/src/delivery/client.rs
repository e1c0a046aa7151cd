//! One POST of one output, and what its answer means.
//!
//! Only a 2xx is a delivery. Redirects are not followed (a 3xx is a failed
//! attempt, like any other status), response bodies are read only up to a
//! small cap so that a receiver cannot make flowhost buffer without end, and
//! each attempt is bounded by the configured timeout, connecting included.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use http::header::{AUTHORIZATION, RETRY_AFTER, USER_AGENT};

use super::retry::parse_retry_after;
use super::transform::WebhookRequest;
use crate::endpoints::EndpointConfig;

/// How much of a response body is read, to quote in the attempt's record
/// (never in the log).
const BODY_CAP: usize = 16 << 10;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The receiver answered 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Nothing was sent: the endpoint's transformer dropped the output.
    Dropped,
    /// Nothing was sent: the endpoint's transformer failed, and the
    /// endpoint aborts on a transformer's error. The reason.
    Refused(String),
    /// Anything else.
    Failed {
        /// The status, if the receiver answered.
        status: Option<u16>,
        /// What went wrong, in words, without the receiver's body: fit for
        /// the log.
        error: String,
        /// The start of the receiver's response body (at most 512 bytes,
        /// trimmed), for the attempt's record only: receivers often echo
        /// the request back, so it is never logged.
        body: String,
        /// How many bytes of the body were read (at most 16 KiB).
        body_bytes: usize,
        /// When the receiver asked to be retried (429 and 503 only).
        retry_after: Option<Duration>,
    },
}

/// Sends outputs over HTTP.
#[derive(Clone)]
pub(crate) struct Sender {
    client: reqwest::Client,
}

impl Sender {
    /// A sender whose POSTs take at most `timeout`; unless
    /// `allow_private`, names are resolved to public addresses only.
    pub(crate) fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Sender> {
        let tls = crate::tls::client_config(&[b"h2", b"http/1.1"])
            .context("reading the system's trust store for HTTPS webhooks")?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would be connected to instead of
            // the checked address.
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(super::guard::PublicOnly));
        }
        Ok(Sender {
            client: builder.build()?,
        })
    }

    /// POSTs `request`, one attempt of the output `webhook_id`, with the
    /// host's headers: its user agent, the Standard Webhooks id, timestamp
    /// and signature, the trace, and the endpoint's Basic auth unless the
    /// request has an `Authorization` of its own.
    pub(crate) async fn send(
        &self,
        endpoint: &EndpointConfig,
        webhook_id: &str,
        request: WebhookRequest,
    ) -> Answer {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let own_authorization = request
            .headers
            .iter()
            .any(|(name, _)| name == AUTHORIZATION);
        let signature = endpoint
            .webhook_secret
            .as_ref()
            .map(|secret| secret.sign(webhook_id, timestamp, &request.body));
        let mut headers: http::HeaderMap = request.headers.into_iter().collect();
        // The attempt's span, for the receiver's traces.
        crate::telemetry::traces::send_on(&mut headers);
        let mut request = self
            .client
            .post(request.url)
            .headers(headers)
            .header(USER_AGENT, concat!("flowhost/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(request.body);
        if let Some(auth) = endpoint
            .webhook_auth
            .as_ref()
            .filter(|_| !own_authorization)
        {
            request = request.basic_auth(&auth.user, Some(&auth.password));
        }
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Answer::Failed {
                    status: None,
                    error: describe(&e),
                    body: String::new(),
                    body_bytes: 0,
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then(|| response.headers().get(RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Read (a little of) the body: it tells the operator why a receiver
        // refused, and reading it to the end lets the connection be reused.
        let mut body = Vec::new();
        while body.len() < BODY_CAP {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        if status.is_success() {
            return Answer::Delivered {
                status: status.as_u16(),
            };
        }
        let body_bytes = body.len();
        body.truncate(512);
        Answer::Failed {
            status: Some(status.as_u16()),
            error: format!("the receiver answered {status}"),
            body: String::from_utf8_lossy(&body).trim().to_owned(),
            body_bytes,
            retry_after,
        }
    }
}

/// A reqwest error with its causes, which say what actually failed.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
