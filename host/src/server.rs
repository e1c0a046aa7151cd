//! A running flowhost: every part started, recovered, and serving.
//!
//! [`Server::start`] opens the store, resolves the endpoints, queues what
//! the last run left unfinished (messages to run, outputs to deliver), and
//! starts watching the flows folder and the configuration file, all before
//! the first new request is served. Flows load beside serving (from the
//! compile cache when they can), so that a flow that is slow to compile
//! holds up no start: messages for it are accepted and wait. [`Server::serve`] serves until its shutdown
//! future resolves, then stops in order: no new requests, no new messages
//! started, the running ones given `shutdown_grace` to finish, the store
//! closed. Whatever did not finish is still in the store for the next start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreConfig};
use crate::delivery::{Delivery, Transformers};
use crate::endpoints::{EndpointTable, EndpointUrl, Endpoints, SharedEndpoints};
use crate::flows::{CompileCache, Compiler, FlowFolder, Loader, Registry};
use crate::http::{AdminToken, AppState, router};
use crate::inbox::{Inbox, QueueLimits, TurnRunner};
use crate::reload::{Reloader, resolve_endpoints};
use crate::runtime::Runtime;
use crate::store::{Opened, Store};
use crate::telemetry::metrics::Metrics;

/// A started flowhost.
pub struct Server {
    listener: TcpListener,
    config: Config,
    endpoints: SharedEndpoints,
    /// The endpoints whose URL tokens were generated at this start.
    new_tokens: std::collections::BTreeSet<String>,
    /// Applies configuration changes and URL-token rotations.
    reloader: Arc<Reloader>,
    /// The admin token in force, which a reload may change.
    admin_token: AdminToken,
    flows: Registry,
    inbox: Inbox,
    delivery: Delivery,
    store: Opened,
    /// Kept alive while serving (dropping it stops the flow threads), and
    /// read by `/metrics`.
    runtime: Arc<Runtime>,
    metrics: Metrics,
    /// The watchers and the pruner, stopped when serving ends.
    background: Vec<JoinHandle<()>>,
    stopping: CancellationToken,
}

impl Server {
    /// Starts every part of the host on `listener`.
    pub async fn start(listener: TcpListener, config: Config) -> anyhow::Result<Server> {
        if let Some(open_files) = crate::http::serve::raise_open_files_limit() {
            // Connections, the store, flows' sockets and the watcher share
            // the limit: a cap above it would never be reached.
            let wanted = config.http.max_connections as u64 + 256;
            if open_files < wanted {
                tracing::warn!(
                    open_files,
                    max_connections = config.http.max_connections,
                    "the open files limit is below http.max_connections plus a reserve of 256: \
                     connections past it fail to be accepted; raise the limit (LimitNOFILE=) or \
                     lower http.max_connections"
                );
            } else {
                tracing::debug!(open_files, "open files limit");
            }
        }
        let store = Opened::open(&config.store, &config.data_dir)
            .await
            .with_context(|| match &config.store.postgres {
                Some(options) => format!(
                    "opening the store in PostgreSQL at {}",
                    crate::store::postgres_url_redacted(&options.url)
                ),
                None => format!("opening the store in {}", config.data_dir.display()),
            })?;
        let shared_store: Arc<dyn Store> = store.store();
        let runtime = Arc::new(Runtime::new(&config.runtime).context("starting the runtime")?);

        let cache = CompileCache::open(&config.data_dir.join("cache"), runtime.compatibility_key())
            .map_err(
                |error| tracing::warn!(%error, "no compile cache: every start compiles every flow"),
            )
            .ok();
        let flows = Registry::default();
        let compiler = match &config.compiler_program {
            Some(program) => Compiler::ChildProcess {
                program: program.clone(),
                timeout: config.runtime.compile_timeout,
                max_memory: config.runtime.max_compile_memory,
            },
            None => Compiler::InProcess,
        };
        let metrics = if config.telemetry.metrics {
            Metrics::new(crate::runtime::WASMTIME_VERSION)
        } else {
            Metrics::off()
        };
        let folder = Arc::new(
            FlowFolder::new(
                config.flows_dir.clone(),
                Arc::new(
                    Loader::new(Arc::clone(&runtime), config.limits.clone(), cache)
                        .with_ceilings(config.max_limits.clone())
                        .with_compiler(compiler),
                ),
                flows.clone(),
            )
            .with_metrics(metrics.clone()),
        );
        // A folder not made yet is made, so that a deploy pipeline or
        // `--watch-build` may fill it later and the watch sees it.
        if config.watch && !config.flows_dir.exists() {
            std::fs::create_dir_all(&config.flows_dir).with_context(|| {
                format!("creating the flows folder {}", config.flows_dir.display())
            })?;
            tracing::info!(folder = %config.flows_dir.display(), "created the flows folder, empty");
        }
        // Flows load while the host serves: a flow that takes long to
        // compile (or never does) delays no other and no start. Messages
        // for a flow still loading are accepted and wait for it.
        let names = folder
            .list()
            .await
            .with_context(|| format!("reading {}", config.flows_dir.display()))?;
        let loading = {
            let folder = Arc::clone(&folder);
            tokio::spawn(async move { folder.load(&names).await })
        };

        let resolved = resolve_endpoints(&config, shared_store.as_ref()).await?;
        let endpoints: SharedEndpoints =
            Arc::new(EndpointTable::new(Endpoints::new(resolved.endpoints)));
        let admin_token: AdminToken = Arc::new(arc_swap::ArcSwapOption::new(
            config.admin_token.clone().map(Arc::new),
        ));
        let reloader = Arc::new(Reloader {
            current: tokio::sync::Mutex::new(config.clone()),
            endpoints: Arc::clone(&endpoints),
            admin_token: Arc::clone(&admin_token),
            store: shared_store.clone(),
            folder: Arc::clone(&folder),
        });

        let stopping = CancellationToken::new();
        let delivery = Delivery::start(
            Handle::current(),
            shared_store.clone(),
            Arc::clone(&endpoints),
            &config.delivery,
            matches!(store, Opened::Sqlite(_)),
            metrics.clone(),
            Some(Transformers {
                runtime: Arc::clone(&runtime),
                flows: flows.clone(),
                metrics: metrics.clone(),
            }),
            stopping.clone(),
        )
        .await?;
        let runner = TurnRunner {
            store: shared_store.clone(),
            runtime: Arc::clone(&runtime),
            flows: flows.clone(),
            endpoints: Arc::clone(&endpoints),
            delivery: delivery.clone(),
            metrics: metrics.clone(),
            answers: Arc::default(),
            shutdown: stopping.clone(),
        };
        let mut background = Vec::new();
        let inbox = match &store {
            Opened::Sqlite(_) => {
                let inbox = Inbox::new(
                    Handle::current(),
                    runner,
                    QueueLimits {
                        total: config.runtime.max_queued_messages,
                        per_endpoint: config.runtime.max_queued_per_endpoint,
                        per_session: config.runtime.max_queued_per_session,
                    },
                );
                let recovered = inbox.recover().await?;
                if recovered > 0 {
                    tracing::info!(
                        messages = recovered,
                        "running messages left unfinished by the last run"
                    );
                }
                inbox
            }
            Opened::Postgres(postgres) => {
                let (inbox, keepers) = Inbox::shared(runner, Arc::clone(postgres))
                    .await
                    .context("joining the hosts that share the store")?;
                background.extend(keepers);
                inbox
            }
        };

        background.extend([
            loading,
            tokio::spawn(prune(
                Arc::clone(&shared_store),
                config.store.clone(),
                stopping.clone(),
            )),
        ]);
        if config.watch {
            background.push(
                folder
                    .watch(config.watch_debounce)
                    .with_context(|| format!("watching {}", config.flows_dir.display()))?,
            );
            if let Some(origin) = &config.origin {
                background.push(watch_config(
                    origin.path.clone(),
                    config.watch_debounce,
                    Arc::clone(&reloader),
                )?);
            }
        }
        for build in &config.watch_build {
            background.push(
                crate::flows::watch_build::watch_and_build(
                    build.clone(),
                    config.flows_dir.clone(),
                    config
                        .watch_debounce
                        .max(std::time::Duration::from_millis(300)),
                )
                .with_context(|| format!("watching {}", build.dir.display()))?,
            );
        }

        Ok(Server {
            listener,
            config,
            endpoints,
            new_tokens: resolved.new_tokens,
            reloader,
            admin_token,
            flows,
            inbox,
            delivery,
            store,
            runtime,
            metrics,
            background,
            stopping,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Each endpoint's URL, in name order.
    pub fn endpoint_urls(&self) -> Vec<EndpointUrl> {
        let base = self.config.base_url(self.local_addr());
        self.endpoints
            .load()
            .all()
            .into_iter()
            .map(|e| EndpointUrl {
                name: e.name().to_owned(),
                flow: e.config.flow.clone(),
                url: e.url(&base),
                new_token: self.new_tokens.contains(e.name()),
            })
            .collect()
    }

    /// The router that [`serve`](Self::serve) serves, for calling in
    /// process (with `tower::ServiceExt::oneshot`, say): no socket, no
    /// child process.
    pub fn router(&self) -> axum::Router {
        router(AppState {
            endpoints: Arc::clone(&self.endpoints),
            inbox: self.inbox.clone(),
            keys: self.store.store(),
            store: self.store.store(),
            runtime: Arc::clone(&self.runtime),
            metrics: self.metrics.clone(),
            stopping: self.stopping.clone(),
            flows: self.flows.clone(),
            max_body_size: usize::try_from(self.config.max_body_size).unwrap_or(usize::MAX),
            body_budget: crate::http::BodyBudget::new(self.config.http.max_buffered_body_bytes),
            delivery: self.delivery.clone(),
            admin_token: Arc::clone(&self.admin_token),
            url_tokens: self.reloader.clone(),
            base_url: self.config.base_url(self.local_addr()),
        })
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.router();
        let grace = self.config.runtime.shutdown_grace;
        let http_stop = CancellationToken::new();
        let mut http = tokio::spawn(crate::http::serve::serve(
            self.listener,
            app,
            self.config.http.clone(),
            http_stop.clone(),
        ));
        tokio::select! {
            served = &mut http => {
                served.context("the HTTP server failed")?;
            }
            () = shutdown => {}
        }

        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: no new requests"
        );
        for task in &self.background {
            task.abort();
        }
        http_stop.cancel();
        self.stopping.cancel();
        // Side by side: a slow client finishing its request must not use up
        // the grace that running flows and deliveries have.
        let drained = tokio::time::timeout(grace, async {
            tokio::join!(
                async {
                    let _ = (&mut http).await;
                },
                self.inbox.idle(),
                self.delivery.idle(),
            )
        })
        .await;
        if drained.is_err() {
            tracing::warn!("running work did not finish in time; it resumes at the next start");
            http.abort();
        } else {
            self.inbox.leave().await;
        }
        self.store.close();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Watches the configuration file's folder and reloads when the file
/// settles.
fn watch_config(
    path: std::path::PathBuf,
    quiet: std::time::Duration,
    reloader: Arc<Reloader>,
) -> anyhow::Result<JoinHandle<()>> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_owned());
    let mut watch = crate::watch::FolderWatch::start(
        &folder,
        crate::watch::Scope::Folder,
        quiet,
        move |changed| changed.file_name().map(|n| n.to_owned()) == name,
    )
    .with_context(|| format!("watching {}", folder.display()))?;
    Ok(tokio::spawn(async move {
        while watch.next().await.is_some() {
            reloader.reload().await;
        }
    }))
}

/// Deletes finished records older than `retention`, and contexts and
/// profiles unused for `session_retention`, hourly, until `stop`.
async fn prune(store: Arc<dyn Store>, config: StoreConfig, stop: CancellationToken) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every_hour.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = crate::store::now_ms();
        let before = now - config.retention.as_millis() as i64;
        let idle_before = now - config.session_retention.as_millis() as i64;
        match store.prune(before, idle_before).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                "pruned finished messages, delivered outputs, and unused contexts and profiles"
            ),
            Err(error) => tracing::warn!(%error, "could not prune old records"),
        }
    }
}
