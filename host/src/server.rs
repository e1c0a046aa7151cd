//! A running flowhost: every part started, recovered, and serving.
//!
//! [`Server::start`] opens the store, compiles the flows, resolves the
//! endpoints, and queues what the last run left unfinished (messages to
//! run, outputs to deliver) before the first new request is served.
//! [`Server::serve`] serves until its shutdown future resolves, then stops
//! in order: no new requests, no new messages started, the running ones
//! given `shutdown_grace` to finish, the store closed. Whatever did not
//! finish is still in the store for the next start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::endpoints::{Endpoint, Endpoints, SharedEndpoints};
use crate::flows::{Loader, Registry, flow_name};
use crate::http::{AppState, router};
use crate::inbox::{Inbox, TurnRunner};
use crate::runtime::Runtime;
use crate::store::{SqliteStore, Store};

/// A started flowhost.
pub struct Server {
    listener: TcpListener,
    config: Config,
    endpoints: SharedEndpoints,
    flows: Registry,
    inbox: Inbox,
    delivery: Delivery,
    store: Arc<SqliteStore>,
    /// Kept alive while serving; dropping it stops the flow threads.
    _runtime: Arc<Runtime>,
    stopping: CancellationToken,
}

impl Server {
    /// Starts every part of the host on `listener`.
    pub async fn start(listener: TcpListener, config: Config) -> anyhow::Result<Server> {
        let store = Arc::new(
            SqliteStore::open_with(&config.data_dir, config.store.fsync)
                .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
        );
        let runtime = Arc::new(Runtime::new(&config.runtime).context("starting the runtime")?);

        let flows = Registry::default();
        let loader = Loader::new(Arc::clone(&runtime), config.limits.clone());
        load_folder(&loader, &flows, &config.flows_dir).await?;

        let mut resolved = Vec::new();
        for endpoint in config.endpoints.values() {
            let url_token = match &endpoint.url_token {
                Some(token) => token.clone(),
                None => store.url_token(&endpoint.name, new_url_token()).await?,
            };
            if flows.get(&endpoint.flow).is_none() {
                tracing::warn!(
                    endpoint = %endpoint.name,
                    flow = %endpoint.flow,
                    "the endpoint's flow is not loaded; the endpoint answers 503 until it is"
                );
            }
            resolved.push(Endpoint {
                config: endpoint.clone(),
                url_token,
            });
        }
        let endpoints: SharedEndpoints = Arc::new(ArcSwap::from_pointee(Endpoints::new(resolved)));

        let stopping = CancellationToken::new();
        let shared_store: Arc<dyn Store> = store.clone();
        let delivery = Delivery::start(
            Handle::current(),
            Arc::clone(&shared_store),
            Arc::clone(&endpoints),
            &config.delivery,
            stopping.clone(),
        )
        .await?;

        let inbox = Inbox::new(
            Handle::current(),
            TurnRunner {
                store: Arc::clone(&shared_store),
                runtime: Arc::clone(&runtime),
                flows: flows.clone(),
                endpoints: Arc::clone(&endpoints),
                delivery: delivery.clone(),
                shutdown: stopping.clone(),
            },
            config.runtime.max_queued_messages,
        );
        let recovered = inbox.recover().await?;
        if recovered > 0 {
            tracing::info!(
                messages = recovered,
                "running messages left unfinished by the last run"
            );
        }
        tokio::spawn(prune(
            Arc::clone(&shared_store),
            config.store.retention,
            stopping.clone(),
        ));

        Ok(Server {
            listener,
            config,
            endpoints,
            flows,
            inbox,
            delivery,
            store,
            _runtime: runtime,
            stopping,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Each endpoint's name, full URL and flow.
    pub fn endpoint_urls(&self) -> Vec<(String, String, String)> {
        let base = self.config.base_url(self.local_addr());
        self.endpoints
            .load()
            .all()
            .into_iter()
            .map(|e| (e.name().to_owned(), e.url(&base), e.config.flow.clone()))
            .collect()
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = router(AppState {
            endpoints: Arc::clone(&self.endpoints),
            inbox: self.inbox.clone(),
            store: self.store.clone(),
            flows: self.flows.clone(),
            max_body_size: usize::try_from(self.config.max_body_size).unwrap_or(usize::MAX),
            delivery: self.delivery.clone(),
            admin_token: self.config.admin_token.clone(),
        });
        let grace = self.config.runtime.shutdown_grace;
        let http_stop = CancellationToken::new();
        let listener = self.listener;
        let mut http = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(http_stop.clone().cancelled_owned())
                .into_future(),
        );
        tokio::select! {
            served = &mut http => {
                served.context("the HTTP server failed")?.context("the HTTP server failed")?;
            }
            () = shutdown => {}
        }

        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: no new requests"
        );
        http_stop.cancel();
        self.stopping.cancel();
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut http).await;
            self.inbox.idle().await;
            self.delivery.idle().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("running work did not finish in time; it resumes at the next start");
            http.abort();
        }
        self.store.close();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Loads every flow file in `folder`. A file that fails is logged and
/// skipped: one bad flow does not keep the others from serving.
async fn load_folder(
    loader: &Loader,
    registry: &Registry,
    folder: &std::path::Path,
) -> anyhow::Result<()> {
    if !folder.exists() {
        tracing::warn!(folder = %folder.display(), "the flows folder does not exist; no flows loaded");
        return Ok(());
    }
    let mut entries = tokio::fs::read_dir(folder)
        .await
        .with_context(|| format!("reading {}", folder.display()))?;
    let mut paths = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if flow_name(&path).is_some() {
            paths.push(path);
        }
    }
    paths.sort();
    for path in paths {
        match loader.load(&path).await {
            Ok(flow) => {
                tracing::info!(flow = %flow.name, version = %flow.version, size = flow.size, "flow loaded");
                registry.insert(flow);
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "flow not loaded");
            }
        }
    }
    Ok(())
}

/// Deletes finished records older than `retention`, hourly, until `stop`.
async fn prune(store: Arc<dyn Store>, retention: std::time::Duration, stop: CancellationToken) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every_hour.tick() => {}
            () = stop.cancelled() => return,
        }
        let before = crate::store::now_ms() - retention.as_millis() as i64;
        match store.prune(before).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned finished messages and delivered outputs"),
            Err(error) => tracing::warn!(%error, "could not prune old records"),
        }
    }
}

/// A new URL token: 32 random bytes as 64 hex digits, like the seed's.
fn new_url_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}
