//! flowhost: a self-hosted webhook endpoint whose conversational flows are
//! WebAssembly components.
//!
//! An external system POSTs a user message to an endpoint; flowhost answers
//! `202` once the message is durable, runs the endpoint's flow in a fresh
//! sandboxed instance, and POSTs each of the flow's outputs to the
//! endpoint's webhook.
//!
//! # Layout
//!
//! The modules follow a message's path:
//!
//! - [`http`]: `POST /endpoint/{token}`: authentication, the endpoint's
//!   input transformer if it has one, validation, 202; connections served
//!   within timeouts and caps.
//! - `inbox`: accepted messages, run one at a time per session, in order.
//! - [`flows`]: flow (and transformer) files, compiled and kept in a
//!   registry by name.
//! - [`runtime`]: wasmtime: one fresh instance per message (or transformer
//!   call), within limits.
//! - [`store`]: what must survive a restart, split by who calls it: messages
//!   (the inbox), the outbox (delivery), credentials (HTTP); SQLite by default.
//! - `delivery`: outputs POSTed to webhooks (through the endpoint's output
//!   transformer if it has one), in order, with retries.
//!
//! Around them: [`config`] (reads and checks the file into each stage's
//! settings; no stage imports it), `endpoints` (the endpoints in force),
//! [`keys`] (API keys), `signature` (Standard Webhooks signing),
//! `private` (files only flowhost may read), [`reload`] (configuration
//! changes while running), `server` (starting and stopping it all),
//! `banner` (the start-up lines and their parser), [`shutdown`],
//! [`telemetry`] and [`tls`] (the one trust store for outgoing HTTPS).
//! Beneath those: `lanes` (per-key queues run one at a time, for the inbox
//! and delivery), `net` (which addresses are public, and the one resolver
//! check for flows and webhooks), `units` (sizes and durations as written
//! in the file), `watch` (the folder watcher behind hot reload). [`local`]
//! runs a flow on the author's machine, for `flowhost run` and `flowhost
//! test`; [`new_flow`] writes a flow project, for `flowhost new`;
//! [`preflight`] checks a configuration and its flows, for `flowhost check`.

mod banner;
pub mod config;
mod delivery;
mod endpoints;
pub mod flows;
pub mod http;
mod inbox;
pub mod keys;
mod lanes;
pub mod local;
pub(crate) mod masking;
mod net;
pub mod new_flow;
pub mod preflight;
mod private;
pub mod reload;
pub mod runtime;
mod server;
pub mod shutdown;
mod signature;
pub mod store;
pub mod telemetry;
pub mod tls;
mod units;
mod watch;

pub use self::banner::StartLine;
pub use self::config::Config;
pub use self::server::Server;

/// Runs flowhost on `listener` until `shutdown` resolves: starts every part,
/// prints each endpoint's URL, serves, and stops gracefully.
///
/// A URL token is the only credential of an endpoint without an API key, and
/// what a service prints ends up in logs: a URL is printed whole only at the
/// start that generated its token, and with its token cut after that
/// (`flowhost endpoints` and `GET /admin/endpoints` show it whole).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = Server::start(listener, config).await?;
    println!("{}", StartLine::listening(server.local_addr()));
    let urls = server.endpoint_urls();
    for url in &urls {
        println!("{}", StartLine::endpoint(url));
    }
    if urls.iter().any(|url| !url.new_token) {
        println!("{}", StartLine::WHOLE_URLS);
    }
    server.serve(shutdown).await
}
