//! A tiny client for the bench's side requests (attacks and probes), apart
//! from the load generator because it sends one request per connection.

use std::sync::Arc;
use std::time::Duration;

use super::receiver::Deliveries;

pub(super) struct Client;

impl Client {
    pub(super) fn new() -> Self {
        Client
    }

    /// POSTs a text message; ignores the answer.
    pub(super) async fn post(&self, url: &str, session: &str, text: &str) -> Option<u16> {
        let body = format!(r#"{{"userId":"u","sessionId":"{session}","text":"{text}"}}"#);
        let (addr, path) = url.strip_prefix("http://")?.split_once('/')?;
        let request = hyper::Request::post(format!("/{path}"))
            .header("host", addr)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .ok()?;
        Some(one_shot(addr, request).await?.status().as_u16())
    }

    /// POSTs a probe and waits (briefly) for its delivery; returns the
    /// delivered text.
    pub(super) async fn post_and_wait(
        &self,
        url: &str,
        session: &str,
        deliveries: &Arc<Deliveries>,
    ) -> Option<String> {
        let before = deliveries.texts.lock().unwrap().len();
        if self.post(url, session, "t=0").await != Some(202) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            return None;
        }
        for _ in 0..2000 {
            if let Some(text) = deliveries.texts.lock().unwrap()[before..]
                .iter()
                .find(|(s, _)| s == session)
                .map(|(_, t)| t.clone())
            {
                return Some(text);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        None
    }
}

/// Sends `request` to `addr` on a connection of its own.
pub(super) async fn one_shot(
    addr: &str,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Option<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    sender.send_request(request).await.ok()
}
