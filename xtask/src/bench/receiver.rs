//! The webhook receiver of the load bench: answers 200 at once and records,
//! for each delivery, the time since its message was sent (the message text
//! carries `t=<microseconds>` on the bench's clock, and echo says it back).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;

use super::load::micros_since;

/// The deliveries seen so far.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// (arrival, microseconds since the message was sent), per delivery.
    pub(crate) seen: Mutex<Vec<(u64, u32)>>,
    /// (session, text) of the deliveries to `probe-…` sessions, which the
    /// reload bench waits for.
    pub(crate) texts: Mutex<Vec<(String, String)>>,
    /// (session, whether it is the turn's first output, arrival) of the
    /// deliveries to `wait-…` sessions, which the waiting-flow bench counts.
    pub(crate) waits: Mutex<Vec<(String, bool, u64)>>,
}

impl Deliveries {
    /// How many deliveries have arrived.
    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits (up to two minutes) until `expected` more deliveries than
    /// `before` have arrived; returns the latencies of those after `before`.
    pub(crate) async fn latencies_after(
        &self,
        before: usize,
        expected: u64,
    ) -> anyhow::Result<Vec<u32>> {
        let started = std::time::Instant::now();
        while self.count() < before + expected as usize {
            if started.elapsed() > std::time::Duration::from_secs(120) {
                anyhow::bail!(
                    "only {} of {} deliveries arrived",
                    self.count() - before,
                    expected
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(self.seen.lock().unwrap()[before..]
            .iter()
            .map(|d| d.1)
            .collect())
    }
}

/// Starts the receiver; returns its URL and what it records.
pub(crate) async fn start(epoch: Instant) -> anyhow::Result<(String, Arc<Deliveries>)> {
    let deliveries = Arc::new(Deliveries::default());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state((Arc::clone(&deliveries), epoch));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, deliveries))
}

async fn receive(State((deliveries, epoch)): State<(Arc<Deliveries>, Instant)>, body: Bytes) {
    let now = micros_since(epoch);
    // Find `"text":"t=123"` without parsing the whole body: the receiver must
    // cost as little as it can, since it shares the machine.
    if contains(&body, br#""sessionId":"probe-"#) {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
            let session = value["sessionId"].as_str().unwrap_or_default().to_owned();
            let text = value["AIOutput"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            deliveries.texts.lock().unwrap().push((session, text));
        }
        return;
    }
    if contains(&body, br#""sessionId":"wait-"#)
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
    {
        let session = value["sessionId"].as_str().unwrap_or_default().to_owned();
        let first = value["AIOutput"]["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("One moment"));
        deliveries.waits.lock().unwrap().push((session, first, now));
    }
    let sent = find_sent_at(&body);
    if let Some(sent) = sent {
        deliveries
            .seen
            .lock()
            .unwrap()
            .push((now, now.saturating_sub(sent) as u32));
    }
}

fn find_sent_at(body: &[u8]) -> Option<u64> {
    let marker = b"\"text\":\"t=";
    let at = body.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
