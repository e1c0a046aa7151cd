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

use crate::config::EndpointConfig;

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
pub type SharedEndpoints = Arc<EndpointTable>;

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
