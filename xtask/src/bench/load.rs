//! The load generator: HTTP/1.1 keep-alive connections on hyper, sending
//! the seed's message shape to one URL, closed loop (each connection sends
//! as soon as it has its answer) or open loop (sends scheduled at a fixed
//! rate, latency counted from the scheduled time, so a slow server cannot
//! hide its queueing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How sessions are chosen for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sessions {
    /// Messages spread over this many sessions.
    Distinct(usize),
    /// Every message in one session.
    One,
}

/// What a load run measured of the acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
    pub(crate) failed: u64,
    pub(crate) elapsed: Duration,
    /// Microseconds from (scheduled) send to answer, of accepted requests.
    pub(crate) latencies: Vec<u32>,
}

/// Microseconds since `epoch`, the clock shared with the receiver.
pub(crate) fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

fn body(n: u64, sessions: Sessions, sent_at: u64) -> Bytes {
    let session = match sessions {
        Sessions::Distinct(count) => n % count as u64,
        Sessions::One => 0,
    };
    Bytes::from(format!(
        r#"{{"userId":"user{session}","sessionId":"session{session}","text":"t={sent_at}","data":{{"n":{n}}}}}"#
    ))
}

/// Closed loop: `connections` connections, each sending its next request
/// once it has the answer to the last, for `duration`.
pub(crate) async fn closed(
    url: &str,
    connections: usize,
    duration: Duration,
    sessions: Sessions,
    epoch: Instant,
) -> anyhow::Result<Acks> {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = AtomicU64::new(0);
    let next = {
        let stop = Arc::clone(&stop);
        move || (!stop.load(Ordering::Relaxed)).then(|| counter.fetch_add(1, Ordering::Relaxed))
    };
    let seed_body = move |n, sent_at| body(n, sessions, sent_at);
    let started = Instant::now();
    let workers = each_on_answer(url, connections, Arc::new(next), Arc::new(seed_body), epoch)?;
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    merge(workers, started).await
}

/// Open loop: requests scheduled `rate` per second for `duration`, sent on
/// up to `connections` connections; latency counts from the schedule.
pub(crate) async fn open(
    url: &str,
    rate: u64,
    connections: usize,
    duration: Duration,
    sessions: Sessions,
    epoch: Instant,
) -> anyhow::Result<Acks> {
    let (addr, path) = split(url)?;
    let total = rate * duration.as_secs().max(1);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tickets, receiver) = async_channel(total as usize);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (addr, path, receiver) = (addr.clone(), path.clone(), receiver.clone());
        workers.push(tokio::spawn(async move {
            let mut acks = Acks::default();
            let mut sender = connect(&addr).await?;
            while let Ok((n, due)) = receiver.recv().await {
                send_one(
                    &mut sender,
                    &addr,
                    &path,
                    body(n, sessions, due),
                    due,
                    epoch,
                    &mut acks,
                )
                .await?;
            }
            anyhow::Ok(acks)
        }));
    }
    let first = micros_since(epoch);
    for n in 0..total {
        let due = first + (interval * n as u32).as_micros() as u64;
        let wait = due.saturating_sub(micros_since(epoch));
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        tickets.send((n, due)).await.ok();
    }
    drop(tickets);
    merge(workers, started).await
}

/// A burst: `count` messages sent as fast as `connections` connections
/// allow, the body of message `n` sent at `sent_at` made by `body`.
pub(crate) async fn burst(
    url: &str,
    count: u64,
    connections: usize,
    body: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync>,
    epoch: Instant,
) -> anyhow::Result<Acks> {
    let counter = AtomicU64::new(0);
    let next = move || Some(counter.fetch_add(1, Ordering::Relaxed)).filter(|n| *n < count);
    let started = Instant::now();
    let workers = each_on_answer(url, connections, Arc::new(next), body, epoch)?;
    merge(workers, started).await
}

/// Starts `connections` connections, each sending message number `next()`
/// (with the body `body(n, sent_at)`) as soon as it has the answer to its
/// last, until `next` gives none.
fn each_on_answer(
    url: &str,
    connections: usize,
    next: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
    body: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync>,
    epoch: Instant,
) -> anyhow::Result<Vec<Worker>> {
    let (addr, path) = split(url)?;
    Ok((0..connections)
        .map(|_| {
            let (addr, path, next, body) = (addr.clone(), path.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                let mut acks = Acks::default();
                let mut sender = connect(&addr).await?;
                while let Some(n) = next() {
                    let sent_at = micros_since(epoch);
                    let body = body(n, sent_at);
                    send_one(&mut sender, &addr, &path, body, sent_at, epoch, &mut acks).await?;
                }
                anyhow::Ok(acks)
            })
        })
        .collect())
}

/// A connection sending requests, and what it measured.
type Worker = tokio::task::JoinHandle<anyhow::Result<Acks>>;

/// Sends one request and counts its answer in `acks`, with its latency
/// from `sent_at`; reconnects if the connection broke.
async fn send_one(
    sender: &mut Sender,
    addr: &str,
    path: &str,
    body: Bytes,
    sent_at: u64,
    epoch: Instant,
    acks: &mut Acks,
) -> anyhow::Result<()> {
    let request = Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    acks.sent += 1;
    match sender.send_request(request).await {
        Ok(response) => {
            // 202 from a webhook endpoint, 200 from a REST one.
            let accepted = response.status().is_success();
            let _ = response.into_body().collect().await;
            if accepted {
                acks.accepted += 1;
                acks.latencies
                    .push(micros_since(epoch).saturating_sub(sent_at) as u32);
            } else {
                acks.failed += 1;
            }
        }
        Err(_) => {
            acks.failed += 1;
            *sender = connect(addr).await?;
        }
    }
    Ok(())
}

async fn merge(workers: Vec<Worker>, started: Instant) -> anyhow::Result<Acks> {
    let mut all = Acks::default();
    for worker in workers {
        let acks = worker.await??;
        all.sent += acks.sent;
        all.accepted += acks.accepted;
        all.failed += acks.failed;
        all.latencies.extend(acks.latencies);
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn split(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: http only"))?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((addr.to_owned(), format!("/{path}")))
}

/// A small multi-consumer channel over a tokio mutex: the open loop's
/// tickets.
fn async_channel<T: Send + 'static>(capacity: usize) -> (tokio::sync::mpsc::Sender<T>, Shared<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    (tx, Shared(Arc::new(tokio::sync::Mutex::new(rx))))
}

pub(crate) struct Shared<T>(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    async fn recv(&self) -> Result<T, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

/// The `p`th percentile (0–100) of microsecond samples, in milliseconds.
pub(crate) fn percentile_ms(samples: &mut [u32], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank] as f64 / 1000.0
}
