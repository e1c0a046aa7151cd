//! The accept loop and each connection's bounds.
//!
//! `axum::serve` sets no timer, so hyper's header-read timeout is off and a
//! connection that never finishes its request head (slowloris), or never
//! sends one, is kept for ever with what it sent buffered (up to hyper's
//! ~400 KB read buffer). Here every connection is served by hyper directly,
//! with:
//!
//! - a timer, and `header_read_timeout` for each HTTP/1.1 request head;
//! - a watchdog that closes a connection with no request in progress: one
//!   that has sent no request `header_read_timeout` after it opened (this
//!   also covers the bytes hyper reads to tell HTTP/1.1 from HTTP/2, which
//!   no hyper timer covers), or none for `idle_timeout` since its last one;
//! - a cap on the request head (`max_header_size`, [`MAX_HEADERS`]) and on
//!   HTTP/2 streams per connection ([`MAX_STREAMS`]), with HTTP/2 pings to
//!   find dead peers;
//! - a cap on connections (`max_connections`): past it the loop stops
//!   accepting, so new connections wait in the kernel's listen backlog
//!   until one closes, and the process keeps file descriptors for its
//!   database, flows and deliveries;
//! - accept errors (such as running out of file descriptors) logged once
//!   per run of failures, with a short pause before the next try instead of
//!   a busy loop.
//!
//! Stopping: the loop stops accepting and closes the listener, every
//! connection is asked to close once its requests in progress are answered,
//! and [`serve`] returns when they all have.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// The most header fields in an HTTP/1.1 request head; more is answered 431.
pub const MAX_HEADERS: usize = 64;
/// The most HTTP/2 streams (requests) open at once on one connection: each
/// may be reading a body, so this bounds what one connection can hold.
pub const MAX_STREAMS: u32 = 32;
/// How often an HTTP/2 connection is pinged, and how long the answer may
/// take before the connection is closed as dead.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// The pause after an accept error that is not about one connection (such
/// as running out of file descriptors), before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `stop` is cancelled, within `config`'s
/// bounds; returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: HttpConfig,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(usize::try_from(config.max_header_size).unwrap_or(usize::MAX))
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let connections = TaskTracker::new();
    let mut at_limit = false;
    let mut failing: u64 = 0;

    loop {
        // Logged once per burst: when the limit is reached, not again until
        // a connection finds a free slot at once.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                at_limit = false;
                slot
            }
            Err(_) => {
                if !at_limit {
                    tracing::warn!(
                        max_connections = config.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                    at_limit = true;
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = stop.cancelled() => break,
                }
            }
        };
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_about_one_connection(&error) => continue,
                Err(error) => {
                    if failing == 0 {
                        tracing::error!(
                            %error,
                            "cannot accept connections; retrying every {} ms",
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    failing += 1;
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            },
            () = stop.cancelled() => break,
        };
        if failing > 0 {
            tracing::info!(failed = failing, "accepting connections again");
            failing = 0;
        }
        connections.spawn(connection(
            Arc::clone(&builder),
            socket,
            remote,
            app.clone(),
            config.clone(),
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Accept errors that concern the connection being accepted, not the
/// listener: the next accept is unaffected.
fn is_about_one_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes, is closed as idle, or the server
/// stops. Holds its `_slot` of `max_connections` until then.
async fn connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    socket: TcpStream,
    remote: SocketAddr,
    app: Router,
    config: HttpConfig,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    // Responses are small and written whole: do not let Nagle hold them.
    let _ = socket.set_nodelay(true);
    let activity = Arc::new(Mutex::new(Activity {
        in_progress: 0,
        since: Instant::now(),
        served: false,
    }));
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let started = Started::new(&activity);
            let mut app = app.clone();
            async move {
                let response = app.call(request).await;
                drop(started);
                response
            }
        })
    };
    let served = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(served);
    // Set once the connection has been asked to close: then only its end is
    // awaited, for at most `closing_limit` when it was idle.
    let mut closing = false;
    let mut closing_limit = None::<Instant>;
    loop {
        let check_at = activity.lock().unwrap().idle_deadline(&config);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%remote, %error, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(check_at), if !closing => {
                if activity.lock().unwrap().is_idle_past(&config) {
                    tracing::debug!(%remote, "closing an idle connection");
                    served.as_mut().graceful_shutdown();
                    closing = true;
                    closing_limit = Some(Instant::now() + config.header_read_timeout);
                }
            }
            () = sleep_until_some(closing_limit) => {
                tracing::debug!(%remote, "dropping an idle connection that did not close");
                return;
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its idle watchdog.
struct Activity {
    /// Requests whose response is not yet produced.
    in_progress: usize,
    /// When the connection opened, or its last request ended.
    since: Instant,
    /// Whether it has sent a request.
    served: bool,
}

impl Activity {
    /// How long the connection may stay without a request in progress.
    fn allowed(&self, config: &HttpConfig) -> Duration {
        if self.served {
            config.idle_timeout
        } else {
            config.header_read_timeout
        }
    }

    /// When to look again: when the allowed time runs out, or, with a
    /// request in progress, one allowance from now.
    fn idle_deadline(&self, config: &HttpConfig) -> Instant {
        if self.in_progress > 0 {
            Instant::now() + self.allowed(config)
        } else {
            self.since + self.allowed(config)
        }
    }

    fn is_idle_past(&self, config: &HttpConfig) -> bool {
        self.in_progress == 0 && self.since.elapsed() >= self.allowed(config)
    }
}

/// A request in progress on a connection; its drop ends it.
struct Started(Arc<Mutex<Activity>>);

impl Started {
    fn new(activity: &Arc<Mutex<Activity>>) -> Started {
        let mut now = activity.lock().unwrap();
        now.in_progress += 1;
        now.served = true;
        Started(Arc::clone(activity))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let mut now = self.0.lock().unwrap();
        now.in_progress -= 1;
        now.since = Instant::now();
    }
}

/// Raises the soft limit on open files to the hard limit, so that the
/// connection cap, not the often low default soft limit (1024), is what
/// bounds connections. Returns the soft limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current == limit.maximum {
            return limit.current;
        }
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => limit.maximum,
            Err(error) => {
                tracing::warn!(%error, soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open files limit");
                limit.current
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// How the HTTP server treats connections: the bounds that keep slow,
/// idle and oversized clients from holding memory and file descriptors.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// How long a client has to send a whole request head (request line and
    /// headers), counted from when the server starts waiting for it: from
    /// the connection's opening, or from the end of the previous response
    /// on a kept-alive HTTP/1.1 connection, which is therefore closed after
    /// this long without a new request.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in progress,
    /// once it has sent one; what bounds idle HTTP/2 connections.
    pub idle_timeout: Duration,
    /// Connections served at once. Past it, new connections wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// The largest HTTP/1.1 request head (hyper's read buffer) and HTTP/2
    /// header list; a larger one is answered 431 or the connection closed.
    pub max_header_size: u64,
    /// Request bytes that may be buffered, across all requests being read
    /// at once. A request whose body does not fit is answered 503 with
    /// `Retry-After` before its body is read.
    pub max_buffered_body_bytes: u64,
}

impl Default for HttpConfig {
    /// The defaults of the `[http]` table, in one place.
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_header_size: 64 << 10,
            max_buffered_body_bytes: 64 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn raises_the_soft_open_files_limit_to_the_hard_one() {
        use rustix::process::{Resource, getrlimit};
        let in_force = raise_open_files_limit();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum);
        assert_eq!(in_force, limit.current);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_progress() {
        let config = HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..HttpConfig::default()
        };
        let activity = Arc::new(Mutex::new(Activity {
            in_progress: 0,
            since: Instant::now(),
            served: false,
        }));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!activity.lock().unwrap().is_idle_past(&config));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            activity.lock().unwrap().is_idle_past(&config),
            "no first request within the header timeout"
        );

        let started = Started::new(&activity);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!activity.lock().unwrap().is_idle_past(&config), "busy");
        drop(started);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!activity.lock().unwrap().is_idle_past(&config));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(activity.lock().unwrap().is_idle_past(&config));
    }
}
