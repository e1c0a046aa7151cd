//! Configuration reload: `flowhost.toml` is watched, and a change that
//! passes every check takes effect without a restart; one that does not is
//! reported and the running configuration stays.
//!
//! What reloads: endpoints (added, changed, removed; a removed endpoint's
//! waiting messages wait for it to come back), the default flow limits and
//! the admin token.
//! Everything else (addresses, folders, the runtime and delivery settings)
//! is read at start, and a change to it is reported as needing a restart.
//!
//! A generated URL token is rotated here too (`POST
//! /admin/endpoints/{name}/url-token`): under the same lock, so that a
//! reload and a rotation never put an older token back in force.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::Config;
use crate::endpoints::{Endpoint, Endpoints, RotateError, SharedEndpoints};
use crate::flows::FlowFolder;
use crate::http::{AdminToken, UrlTokenRotation};
use crate::store::CredentialStore;

/// Applies new configurations to a running host.
pub struct Reloader {
    /// The configuration in force.
    pub current: tokio::sync::Mutex<Config>,
    /// The endpoints to replace.
    pub endpoints: SharedEndpoints,
    /// The admin token to replace.
    pub admin_token: AdminToken,
    /// For generated URL tokens.
    pub store: Arc<dyn CredentialStore>,
    /// For the default limits.
    pub folder: Arc<FlowFolder>,
}

impl Reloader {
    /// Reads the configuration file again and applies what changed.
    pub async fn reload(&self) {
        let mut current = self.current.lock().await;
        let next = match current.reload() {
            Ok(Some(next)) => next,
            Ok(None) => return,
            Err(error) => {
                tracing::error!("configuration not reloaded; the running one stays: {error}");
                return;
            }
        };
        if next == *current {
            return;
        }

        let endpoints = match resolve_endpoints(&next, self.store.as_ref()).await {
            Ok(resolved) => resolved.endpoints,
            Err(error) => {
                tracing::error!(%error, "configuration not reloaded; the running one stays");
                return;
            }
        };
        let before: BTreeSet<&String> = current.endpoints.keys().collect();
        let after: BTreeSet<&String> = next.endpoints.keys().collect();
        let added: Vec<_> = after.difference(&before).collect();
        let removed: Vec<_> = before.difference(&after).collect();
        let changed: Vec<_> = after
            .intersection(&before)
            .filter(|name| current.endpoints[**name] != next.endpoints[**name])
            .collect();
        if next.endpoints != current.endpoints {
            self.endpoints.replace(Endpoints::new(endpoints));
            tracing::info!(?added, ?changed, ?removed, "endpoints reloaded");
        }
        if next.admin_token != current.admin_token {
            self.admin_token
                .store(next.admin_token.clone().map(Arc::new));
            tracing::info!(
                on = next.admin_token.is_some(),
                "admin token reloaded; the old one is refused from now on"
            );
        }
        if next.limits != current.limits || next.max_limits != current.max_limits {
            self.folder
                .loader()
                .set_limits(next.limits.clone(), next.max_limits.clone());
            self.folder.refresh_limits().await;
            tracing::info!("default flow limits reloaded");
        }

        let restart_only = [
            ("listen", next.listen != current.listen),
            ("public_url", next.public_url != current.public_url),
            ("flows_dir", next.flows_dir != current.flows_dir),
            ("data_dir", next.data_dir != current.data_dir),
            ("max_body_size", next.max_body_size != current.max_body_size),
            ("http", next.http != current.http),
            ("runtime", next.runtime != current.runtime),
            ("delivery", next.delivery != current.delivery),
            ("store", next.store != current.store),
            ("telemetry", next.telemetry != current.telemetry),
            (
                "watch",
                next.watch != current.watch || next.watch_debounce != current.watch_debounce,
            ),
            ("watch_build", next.watch_build != current.watch_build),
        ];
        let pending: Vec<&str> = restart_only
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| *key)
            .collect();
        if !pending.is_empty() {
            tracing::warn!(keys = ?pending, "these settings changed and take effect at the next start");
        }
        *current = next;
    }
}

#[async_trait::async_trait]
impl UrlTokenRotation for Reloader {
    /// Gives the endpoint `name` a new generated URL token, in the store
    /// and in force at once: its old URL is refused from now on. Messages
    /// already accepted through it are not affected.
    async fn rotate_url_token(&self, name: &str) -> Result<Arc<Endpoint>, RotateError> {
        let current = self.current.lock().await;
        let endpoint = current
            .endpoints
            .get(name)
            .ok_or_else(|| RotateError::NoSuchEndpoint(name.to_owned()))?;
        if endpoint.url_token.is_some() {
            return Err(RotateError::Configured(name.to_owned()));
        }
        let url_token = new_url_token();
        self.store
            .replace_url_token(name, url_token.clone())
            .await?;
        let rotated = Endpoint {
            config: endpoint.clone(),
            url_token,
        };
        let table = self.endpoints.load();
        self.endpoints
            .replace(Endpoints::new(table.all().into_iter().map(|e| {
                if e.name() == name {
                    rotated.clone()
                } else {
                    Endpoint::clone(e)
                }
            })));
        tracing::info!(
            endpoint = name,
            "URL token rotated; the old URL is refused from now on"
        );
        Ok(Arc::new(rotated))
    }
}

/// The endpoints of a configuration with their URL tokens.
pub struct ResolvedEndpoints {
    /// Each endpoint, with its token.
    pub endpoints: Vec<Endpoint>,
    /// The names of the endpoints whose tokens were generated just now.
    pub new_tokens: BTreeSet<String>,
}

/// The endpoints of `config`, each with its URL token: configured, or
/// generated once and kept in the store.
pub async fn resolve_endpoints(
    config: &Config,
    store: &dyn CredentialStore,
) -> anyhow::Result<ResolvedEndpoints> {
    let mut resolved = ResolvedEndpoints {
        endpoints: Vec::new(),
        new_tokens: BTreeSet::new(),
    };
    for endpoint in config.endpoints.values() {
        let url_token = match &endpoint.url_token {
            Some(token) => token.clone(),
            None => {
                let new = new_url_token();
                let kept = store.url_token(&endpoint.name, new.clone()).await?;
                if kept == new {
                    resolved.new_tokens.insert(endpoint.name.clone());
                }
                kept
            }
        };
        resolved.endpoints.push(Endpoint {
            config: endpoint.clone(),
            url_token,
        });
    }
    Ok(resolved)
}

/// A new URL token: 32 random bytes as 64 hex digits, like the seed's.
fn new_url_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}
