//! Outbound HTTP for flows: `wasi:http/outgoing-handler`, to the hosts the
//! flow's manifest allows and nowhere else.
//!
//! A flow lists what it may call in `allowed_outbound_hosts`, the way Spin
//! does: `"https://api.example.com"`, `"http://127.0.0.1:8080"`,
//! `"https://*.example.com"`, `"*://example.com:*"`. A request is checked
//! against the list before anything is sent; then its host is resolved and
//! every address that is not public is refused: link-local addresses (where
//! cloud metadata services live) always, loopback and private ones unless
//! the operator lists the host in `runtime.private_outbound_hosts` too. The
//! manifest ships with the (untrusted) flow, and a name it lists may point
//! anywhere, so only the operator can open the inside network. The
//! connection goes to the address that was checked, so DNS cannot change
//! its answer in between. Refusals reach the guest as
//! `wasi:http` errors (`HTTP-request-denied`, `destination-IP-prohibited`),
//! which it can handle like any network error.
//!
//! Each message may make a bounded number of requests, each response body is
//! read up to a bounded size, and no request outlives the message's deadline.
//!
//! `send` is adapted from wasmtime-wasi-http 48.0.8's
//! `default_send_request`: the same hyper HTTP/1.1 client connection and
//! origin-form request, with the address check (`net::resolve_checked`),
//! the host's trust store (`tls::client_config`), the message's deadline on
//! every step, and a bounded response body added.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::AllowedHosts;
use super::allowed_hosts::default_port;
use crate::net::{Reach, Unreachable, resolve_checked};

/// What one message may do over HTTP.
#[derive(Debug, Clone)]
pub(crate) struct HttpBudget {
    pub(crate) allowed: Arc<AllowedHosts>,
    /// The operator's `runtime.private_outbound_hosts`.
    pub(crate) private: Arc<AllowedHosts>,
    pub(crate) max_requests: u32,
    pub(crate) max_response_size: u64,
    pub(crate) deadline: Instant,
}

/// The `wasi:http` hooks of one message's store.
pub(crate) struct Outbound {
    budget: HttpBudget,
    requests: u32,
}

impl Outbound {
    pub(crate) fn new(budget: HttpBudget) -> Self {
        Outbound {
            budget,
            requests: 0,
        }
    }

    /// The checked destination of a request, or why it may not be sent.
    fn admit(&mut self, request: &http::Request<WasiBody>) -> Result<Destination, Error> {
        let uri = request.uri();
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => "https",
            Some(s) if *s == Scheme::HTTP => "http",
            _ => return Err(Error::HttpProtocolError),
        };
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_owned();
        let port = uri.port_u16().unwrap_or(default_port(scheme));
        if !self.budget.allowed.check(scheme, &host, port) {
            tracing::warn!(target: "flow", %uri, "outbound request denied: the host is not in allowed_outbound_hosts");
            return Err(Error::HttpRequestDenied);
        };
        if self.requests >= self.budget.max_requests {
            tracing::warn!(target: "flow", %uri, limit = self.budget.max_requests, "outbound request denied: request limit reached");
            return Err(Error::ConnectionLimitReached);
        }
        self.requests += 1;
        Ok(Destination {
            tls: scheme == "https",
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            may_be_private: self.budget.private.check(scheme, &host, port),
        })
    }
}

struct Destination {
    tls: bool,
    host: String,
    port: u16,
    may_be_private: bool,
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let mut request = request;
        let admitted = self.admit(&request);
        let budget = self.budget.clone();
        // A span of its own in the turn's trace, which the request carries
        // on in its `traceparent`.
        let span = tracing::info_span!(
            "outbound request",
            otel.kind = "client",
            http.request.method = %request.method(),
            server.address = request.uri().host().unwrap_or_default(),
        );
        span.in_scope(|| crate::telemetry::traces::send_on(request.headers_mut()));
        Box::new(async move { send(request, admitted?, options, budget).await }.instrument(span))
    }
}

/// The time left for a step: the guest's own timeout, if any, cut to what
/// remains of the message's deadline.
fn time_left(asked: Option<Duration>, deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    asked.map_or(left, |asked| asked.min(left))
}

async fn send(
    mut request: http::Request<WasiBody>,
    to: Destination,
    options: Option<RequestOptions>,
    budget: HttpBudget,
) -> wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)> {
    let connect_timeout = time_left(options.and_then(|o| o.connect_timeout), budget.deadline);
    let first_byte_timeout = time_left(options.and_then(|o| o.first_byte_timeout), budget.deadline);
    let between_bytes = time_left(
        options.and_then(|o| o.between_bytes_timeout),
        budget.deadline,
    )
    .max(Duration::from_millis(1));

    let reach = if to.may_be_private {
        Reach::Private
    } else {
        Reach::Public
    };
    let addresses = match resolve_checked(&to.host, to.port, reach, connect_timeout).await {
        Ok(addresses) => addresses,
        Err(Unreachable::Timeout { .. }) => return Err(Error::DnsTimeout),
        Err(Unreachable::Lookup { source, .. }) => {
            return Err(Error::DnsError {
                rcode: Some(source.to_string()),
                info_code: None,
            });
        }
        Err(Unreachable::NotFound { .. }) => return Err(Error::DestinationNotFound),
        Err(Unreachable::Refused {
            address, reason, ..
        }) => {
            tracing::warn!(target: "flow", host = %to.host, %address, reason, "outbound request denied: not a public address");
            return Err(Error::DestinationIpProhibited);
        }
    };
    let mut failed = None;
    let mut stream = None;
    for address in addresses {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(connected)) => {
                stream = Some(connected);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                failed = Some(Error::ConnectionRefused);
            }
            Ok(Err(e)) => failed = Some(Error::Connect(e)),
            Err(_) => failed = Some(Error::ConnectionTimeout),
        }
    }
    let Some(stream) = stream else {
        return Err(failed.unwrap_or(Error::DestinationNotFound));
    };
    let _ = stream.set_nodelay(true);

    let io: Box<dyn Io> = if to.tls {
        let server_name = match to.host.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(to.host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = tokio::time::timeout(connect_timeout, connector.connect(server_name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request carries the full URL; on the wire it is origin-form.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let mut connection = Box::pin(connection);
    let mut respond = Box::pin(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request),
    ));
    let mut driving = true;
    // Wait for the response head while driving the connection's I/O.
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = respond.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if driving && let Poll::Ready(result) = connection.as_mut().poll(cx) {
            driving = false;
            if let Err(e) = result {
                return Poll::Ready(Ok(Err(e)));
            }
        }
        Poll::Pending
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;

    let (head, incoming) = response.into_parts();
    let body = LimitedBody {
        incoming,
        read: 0,
        limit: budget.max_response_size,
        idle: Box::pin(tokio::time::sleep(between_bytes)),
        between_bytes,
    };
    let response = http::Response::from_parts(head, body.boxed_unsync());
    let rest: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
        if driving {
            connection.await.map_err(Error::from)?;
        }
        Ok(())
    });
    Ok((response, rest))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static> Io for T {}

/// The TLS configuration of flows' requests: the host's trust store (see
/// `crate::tls`), HTTP/1.1 only.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            crate::tls::client_config(&[b"http/1.1"])
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| {
            tracing::error!(error = %e, "the system's trust store cannot be read: no HTTPS for flows");
            Error::TlsCertificateError
        })
}

/// A response body read up to a size limit, failing if it pauses longer
/// than the between-bytes timeout.
struct LimitedBody {
    incoming: hyper::body::Incoming,
    read: u64,
    limit: u64,
    idle: Pin<Box<tokio::time::Sleep>>,
    between_bytes: Duration,
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    if self.read > self.limit {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            self.limit,
                        )))));
                    }
                }
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
