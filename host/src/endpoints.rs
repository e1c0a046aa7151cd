//! The endpoints in force: each one's configuration with its URL token
//! resolved, looked up by token (HTTP) and by name (inbox, delivery).
//!
//! The table is replaced as a whole when the configuration changes, so a
//! reader always sees one consistent version of it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use reqwest::Url;
use serde::Deserialize;

/// One webhook endpoint: a URL token, the flow that handles its messages and
/// the webhook that receives the flow's outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// The endpoint's name, the key of its `[endpoints.<name>]` table.
    pub name: String,
    /// The flow that runs each message: `<flows_dir>/<flow>.wasm`.
    pub flow: String,
    /// The secret path segment of the endpoint's URL; generated and kept in
    /// the store when not configured.
    pub url_token: Option<String>,
    /// Whether callers must present an API key.
    pub auth: Auth,
    /// Whether the flow's outputs go to the webhook, or answer the POST.
    pub mode: EndpointMode,
    /// In REST mode, how long a POST waits for its message's turn (the
    /// turns queued ahead of it included) before it is answered `504`.
    pub rest_timeout: std::time::Duration,
    /// Where outputs are POSTed: set in webhook mode, `None` in REST mode.
    pub webhook_url: Option<Url>,
    /// Basic auth for the webhook, when set.
    pub webhook_auth: Option<BasicAuth>,
    /// Copied into every output's `disableSensitiveLogging`; when true,
    /// flowhost also keeps message content out of its own logs.
    pub disable_sensitive_logging: bool,
    /// The Standard Webhooks signing secret (`whsec_…`), when deliveries are
    /// signed.
    pub webhook_secret: Option<crate::signature::Secret>,
    /// Whether a session's outputs are delivered strictly in order.
    pub delivery_order: DeliveryOrder,
    /// Whether outputs go out while the turn runs or when it ends.
    pub output_timing: OutputTiming,
    /// How long a request's `Idempotency-Key` is remembered: a repeat
    /// within it runs nothing again.
    pub idempotency_window: std::time::Duration,
    /// A session idle for longer than this starts again with an empty
    /// context; `None`, sessions last until `session_retention`.
    pub session_ttl: Option<std::time::Duration>,
    /// Session ids are logged and traced as hashes, and message content
    /// (what the flow logs or prints, panic text) is kept out of the log,
    /// without telling the receiver anything (see `crate::masking`).
    pub mask_logging: bool,
    /// The transformer between the channel and the flow:
    /// `<flows_dir>/<transformer>.wasm`, when set.
    pub transformer: Option<String>,
    /// When the transformer fails: refuse the message (`422`) or make the
    /// output a dead letter (`true`), or go on as if there were no
    /// transformer and log the failure (`false`).
    pub transformer_abort_on_error: bool,
    /// The URLs besides `webhook_url` a transformer may send outputs to.
    pub transformer_urls: Vec<Url>,
}

impl EndpointConfig {
    /// Whether what may quote a message (a flow's log lines and output,
    /// panic text) is kept out of flowhost's log and traces.
    pub fn withholds_content(&self) -> bool {
        self.disable_sensitive_logging || self.mask_logging
    }
}

/// How an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointMode {
    /// `202` at once; each output is POSTed to the webhook.
    Webhook,
    /// The POST waits for its message's turn and is answered `200` with
    /// the outputs (the product's REST endpoint); nothing goes to a
    /// webhook.
    Rest,
}

/// When a turn's outputs are committed and handed to delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputTiming {
    /// Each output goes out while the turn still runs: a flow that says
    /// "One moment…" and then waits on an API is heard at once. An output
    /// is committed by itself before it is sent, so a turn that fails later
    /// keeps what it sent; its context and profile still commit only at its
    /// end.
    Immediate,
    /// A turn's outputs are committed with its end, in one transaction with
    /// its context and profile, and sent then: a turn that fails sends
    /// nothing.
    AtEnd,
}

/// How a session's outputs are ordered on delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryOrder {
    /// Outputs of a session are delivered in order: one that keeps failing
    /// holds back the later ones until it is delivered or dead. The
    /// receiver never sees a conversation out of order.
    Session,
    /// Each output is delivered on its own: a failing one does not hold
    /// back the others, which may then arrive out of order.
    None,
}

/// How callers of an endpoint authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// Anyone who knows the URL may post.
    None,
    /// Callers must send a valid `X-Webhook-Key`.
    ApiKey,
}

/// Basic auth credentials for a webhook.
#[derive(Clone, PartialEq)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password, possibly empty.
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a URL token was not rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No endpoint has this name.
    #[error("no endpoint named {0:?}")]
    NoSuchEndpoint(String),
    /// The token is set in the configuration, which only the operator
    /// changes.
    #[error(
        "the URL token of endpoint {0:?} is set in the configuration (url_token); change it there"
    )]
    Configured(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// An endpoint in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Its configuration.
    pub config: EndpointConfig,
    /// Its URL token: configured, or generated and kept in the store.
    pub url_token: String,
}

impl Endpoint {
    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its URL, below `base` (such as `http://127.0.0.1:8080`).
    pub fn url(&self, base: &str) -> String {
        format!("{base}/endpoint/{}", self.url_token)
    }
}

/// An endpoint's URL, for the lines `flowhost serve` prints at start.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointUrl {
    /// The endpoint's name.
    pub name: String,
    /// Its flow.
    pub flow: String,
    /// Its full URL.
    pub url: String,
    /// Whether its token was generated at this start.
    pub new_token: bool,
}

impl EndpointUrl {
    /// The URL with all but the first 4 characters of its token cut: what
    /// goes where others may read it (a log, a shared terminal). The URL
    /// token is the only credential of an endpoint without an API key.
    pub fn redacted(&self) -> String {
        match self.url.split_once("/endpoint/") {
            Some((base, token)) => {
                let shown: String = token.chars().take(4).collect();
                format!("{base}/endpoint/{shown}…")
            }
            None => self.url.clone(),
        }
    }
}

/// A consistent set of endpoints.
#[derive(Debug, Default)]
pub struct Endpoints {
    by_name: HashMap<String, Arc<Endpoint>>,
    by_token: HashMap<String, Arc<Endpoint>>,
}

impl Endpoints {
    /// The table of `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let mut table = Endpoints::default();
        for endpoint in endpoints {
            let endpoint = Arc::new(endpoint);
            table
                .by_token
                .insert(endpoint.url_token.clone(), Arc::clone(&endpoint));
            table.by_name.insert(endpoint.name().to_owned(), endpoint);
        }
        table
    }

    /// The endpoint with this URL token.
    pub fn by_token(&self, token: &str) -> Option<&Arc<Endpoint>> {
        self.by_token.get(token)
    }

    /// The endpoint with this name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.by_name.get(name)
    }

    /// Masks, in the log, the sessions of those that set `mask_logging`.
    fn mask_logging(&self) {
        crate::masking::set_masked(
            self.by_name
                .values()
                .filter(|endpoint| endpoint.config.mask_logging)
                .map(|endpoint| endpoint.name().to_owned()),
        );
    }

    /// Every endpoint, in name order.
    pub fn all(&self) -> Vec<&Arc<Endpoint>> {
        let mut all: Vec<_> = self.by_name.values().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }
}

/// The endpoints in force, replaced as a whole (atomically) on reload.
pub struct EndpointTable {
    current: ArcSwap<Endpoints>,
    /// Bumped on every replacement, to wake messages waiting for an endpoint.
    changes: watch::Sender<u64>,
}

impl EndpointTable {
    /// A table holding `endpoints`.
    pub fn new(endpoints: Endpoints) -> Self {
        endpoints.mask_logging();
        EndpointTable {
            current: ArcSwap::from_pointee(endpoints),
            changes: watch::Sender::new(0),
        }
    }

    /// The endpoints now.
    pub fn load(&self) -> Arc<Endpoints> {
        self.current.load_full()
    }

    /// Puts `endpoints` in force.
    pub fn replace(&self, endpoints: Endpoints) {
        endpoints.mask_logging();
        self.current.store(Arc::new(endpoints));
        self.changes.send_modify(|n| *n += 1);
    }

    /// The endpoint `name`, waiting until it is configured; `None` if `stop`
    /// is cancelled first.
    pub async fn wait_for(&self, name: &str, stop: &CancellationToken) -> Option<Arc<Endpoint>> {
        let mut changes = self.changes.subscribe();
        loop {
            if let Some(endpoint) = self.load().by_name(name) {
                return Some(Arc::clone(endpoint));
            }
            tokio::select! {
                changed = changes.changed() => changed.ok()?,
                () = stop.cancelled() => return None,
            }
        }
    }
}

/// The endpoints in force, shared by every part of the host.
pub(crate) type SharedEndpoints = Arc<EndpointTable>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_url_shows_four_characters_of_the_token() {
        let url = EndpointUrl {
            name: "support".into(),
            flow: "order-help".into(),
            url: "http://127.0.0.1:8080/endpoint/3f9a0c1d2e3f4a5b6c7d8e9f".into(),
            new_token: false,
        };
        assert_eq!(url.redacted(), "http://127.0.0.1:8080/endpoint/3f9a…");
    }
}
