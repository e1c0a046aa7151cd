//! The endpoints in force: each one's configuration with its URL token
//! resolved, looked up by token (HTTP) and by name (inbox, delivery).
//!
//! The table is replaced as a whole when the configuration changes, so a
//! reader always sees one consistent version of it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

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

/// The endpoints in force, shared by every part of the host; replaced
/// atomically on reload.
pub type SharedEndpoints = Arc<ArcSwap<Endpoints>>;
