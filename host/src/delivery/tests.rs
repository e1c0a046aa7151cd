//! Delivery's own tests: the spread of retries resumed at start, the
//! retry timing itself, with tokio's clock paused, and a session's order
//! when this host stops holding it. The courier, its lanes
//! and a real HTTP receiver run on one paused runtime, over an outbox kept
//! in memory (so no thread outside the runtime moves the clock): the real
//! schedule (5 s, 5 min, … 10 h) and `Retry-After` play out in
//! milliseconds, and each wait is checked to the second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::endpoints::{Endpoint, EndpointTable, Endpoints};
use crate::store::{Attempt, OutputStatus, PendingOutput};

fn output(id: i64, attempts: u32, next_attempt_at: Option<i64>) -> Queued {
    Queued {
        id,
        session: SessionKey {
            endpoint: "support".into(),
            session_id: format!("s{id}"),
        },
        attempts,
        next_attempt_at,
    }
}

#[test]
fn resumed_retries_keep_their_time_and_overdue_ones_are_spread() {
    let now = 1_000_000;
    let later = now + 600_000;
    let mut outputs = vec![output(1, 0, None), output(2, 1, Some(later))];
    outputs.extend((3..103).map(|id| output(id, 2, Some(now - 5))));
    outputs.push(output(103, 1, None));
    let spread = spread_resumed(&mut outputs, now);

    assert_eq!(spread, Duration::from_millis(101 * 10));
    assert_eq!(outputs[0].next_attempt_at, None, "never tried: at once");
    assert_eq!(outputs[1].next_attempt_at, Some(later), "not yet due: kept");
    let times: Vec<i64> = outputs[2..]
        .iter()
        .map(|o| o.next_attempt_at.unwrap())
        .collect();
    assert!(
        times.iter().all(|t| (now..now + 1010).contains(t)),
        "{times:?}"
    );
    assert!(
        times.iter().collect::<HashSet<_>>().len() > 10,
        "overdue retries are spread, not all at one time: {times:?}"
    );
}

#[test]
fn the_spread_is_capped() {
    let now = 5;
    let mut outputs: Vec<_> = (0..100_000).map(|id| output(id, 1, None)).collect();
    assert_eq!(spread_resumed(&mut outputs, now), MAX_RESUME_SPREAD);
}

/// An outbox kept in memory: delivery's part of the store, no more.
#[derive(Default)]
struct MemoryOutbox {
    state: Mutex<Outbox>,
    /// Whether this host does not hold the sessions now (as where hosts
    /// share a store and its lease lapsed).
    not_held: AtomicBool,
}

#[derive(Default)]
struct Outbox {
    outputs: BTreeMap<i64, (PendingOutput, OutputStatus)>,
    attempts: Vec<Attempt>,
    disabled: Vec<DisabledEndpoint>,
}

impl MemoryOutbox {
    fn with(outputs: impl IntoIterator<Item = PendingOutput>) -> Arc<MemoryOutbox> {
        let outbox = MemoryOutbox::default();
        let mut state = outbox.state.lock().unwrap();
        for output in outputs {
            state
                .outputs
                .insert(output.id, (output, OutputStatus::Pending));
        }
        drop(state);
        Arc::new(outbox)
    }

    fn insert(&self, output: PendingOutput) {
        let mut state = self.state.lock().unwrap();
        state
            .outputs
            .insert(output.id, (output, OutputStatus::Pending));
    }

    /// The pending outputs, as a host taking up their session reads them.
    fn pending(&self) -> Vec<PendingOutput> {
        let state = self.state.lock().unwrap();
        state
            .outputs
            .values()
            .filter(|(_, status)| *status == OutputStatus::Pending)
            .map(|(output, _)| output.clone())
            .collect()
    }

    fn status(&self, id: i64) -> (OutputStatus, u32) {
        let state = self.state.lock().unwrap();
        let (output, status) = &state.outputs[&id];
        (*status, output.attempts)
    }
}

#[async_trait::async_trait]
impl OutboxStore for MemoryOutbox {
    async fn pending_outputs(
        &self,
        endpoint: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .outputs
            .range(after_id + 1..)
            .filter(|(_, (o, status))| {
                *status == OutputStatus::Pending && endpoint.is_none_or(|e| e == o.session.endpoint)
            })
            .take(limit)
            .map(|(_, (o, _))| Queued::from(o))
            .collect())
    }

    async fn pending_output(&self, id: i64) -> Result<Option<PendingOutput>, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .outputs
            .get(&id)
            .filter(|(_, status)| *status == OutputStatus::Pending)
            .map(|(o, _)| o.clone()))
    }

    fn may_deliver(&self, _: &SessionKey) -> bool {
        !self.not_held.load(Ordering::SeqCst)
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        let (output, status) = state.outputs.get_mut(&attempt.output_id).unwrap();
        output.attempts += 1;
        output.next_attempt_at = attempt.next_attempt_at;
        *status = attempt.outcome.status();
        state.attempts.push(attempt);
        Ok(())
    }

    async fn outputs(&self, _: &str, _: OutputQuery) -> Result<Vec<OutputRecord>, StoreError> {
        unimplemented!("not used by these tests")
    }

    async fn attempts(&self, _: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        unimplemented!("not used by these tests")
    }

    async fn requeue_output(&self, _: &str, _: i64) -> Result<Option<PendingOutput>, StoreError> {
        unimplemented!("not used by these tests")
    }

    async fn requeue_dead(&self, _: &str, _: i64, _: usize) -> Result<Vec<Queued>, StoreError> {
        unimplemented!("not used by these tests")
    }

    async fn disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        self.state.lock().unwrap().disabled.push(DisabledEndpoint {
            endpoint: endpoint.into(),
            reason: reason.into(),
            since: now_ms(),
        });
        Ok(())
    }

    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, StoreError> {
        let mut state = self.state.lock().unwrap();
        let before = state.disabled.len();
        state.disabled.retain(|d| d.endpoint != endpoint);
        Ok(state.disabled.len() < before)
    }

    async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        Ok(self.state.lock().unwrap().disabled.clone())
    }
}

/// A POST the receiver got: when, by the paused clock, and its output's
/// `webhook-id`.
struct Arrival {
    at: Instant,
    webhook_id: String,
}

/// A receiver that answers each POST with the next of `answers` (then 200),
/// and reports each arrival.
async fn receiver(
    answers: Vec<(u16, Option<&'static str>)>,
) -> (String, mpsc::UnboundedReceiver<Arrival>) {
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let (answers, arrived) = (Arc::clone(&answers), arrived.clone());
            async move {
                let webhook_id = headers["webhook-id"].to_str().unwrap().to_owned();
                arrived
                    .send(Arrival {
                        at: Instant::now(),
                        webhook_id,
                    })
                    .unwrap();
                let (status, retry_after) = answers.lock().unwrap().next().unwrap_or((200, None));
                let mut headers = HeaderMap::new();
                if let Some(after) = retry_after {
                    headers.insert("retry-after", after.parse().unwrap());
                }
                (StatusCode::from_u16(status).unwrap(), headers)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, arrivals)
}

/// Output `id` of session `s`, never tried.
fn pending(id: i64) -> PendingOutput {
    PendingOutput {
        id,
        session: SessionKey {
            endpoint: "support".into(),
            session_id: "s".into(),
        },
        webhook_id: format!("msg_{id}"),
        body: "{}".into(),
        attempts: 0,
        next_attempt_at: None,
        origin: None,
    }
}

/// Delivery, on the default settings, of one output to `webhook_url`.
async fn deliver_one(webhook_url: &str) -> (Delivery, Arc<MemoryOutbox>) {
    deliver(webhook_url, [pending(1)]).await
}

/// Delivery, on the default settings, of `outputs` to `webhook_url`.
async fn deliver(
    webhook_url: &str,
    outputs: impl IntoIterator<Item = PendingOutput>,
) -> (Delivery, Arc<MemoryOutbox>) {
    crate::tls::install_crypto_provider();
    let config = crate::Config::from_toml(&format!(
        "[delivery]\nallow_private_webhooks = true\n\
         [endpoints.support]\nflow = \"echo\"\nwebhook_url = \"{webhook_url}\"\n"
    ))
    .unwrap();
    let endpoint = Endpoint {
        config: config.endpoints["support"].clone(),
        url_token: "token".into(),
    };
    let endpoints = Arc::new(EndpointTable::new(Endpoints::new([endpoint])));
    let outbox = MemoryOutbox::with(outputs);
    let delivery = Delivery::start(
        Handle::current(),
        Arc::clone(&outbox) as Arc<dyn OutboxStore>,
        endpoints,
        &config.delivery,
        true,
        crate::telemetry::metrics::Metrics::off(),
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    (delivery, outbox)
}

/// The waits between consecutive arrivals.
async fn gaps(arrivals: &mut mpsc::UnboundedReceiver<Arrival>, count: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..count {
        times.push(arrivals.recv().await.unwrap().at);
    }
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn assert_within(gap: Duration, wait: Duration, jitter: f64) {
    let (low, high) = (wait.mul_f64(1.0 - jitter), wait.mul_f64(1.0 + jitter));
    assert!(
        low <= gap && gap <= high + Duration::from_secs(1),
        "waited {gap:?}, expected {wait:?} ± {:.0} %",
        jitter * 100.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_output_is_retried_on_the_schedule_then_dead() {
    let (url, mut arrivals) = receiver(vec![(500, None); 8]).await;
    let (delivery, outbox) = deliver_one(&url).await;
    let gaps = gaps(&mut arrivals, 8).await;
    delivery.idle().await;

    let schedule = [5, 300, 1800, 7200, 18_000, 36_000, 36_000].map(Duration::from_secs);
    assert_eq!(gaps.len(), schedule.len());
    for (gap, wait) in gaps.iter().zip(schedule) {
        assert_within(*gap, wait, 0.2);
    }
    assert_eq!(outbox.status(1), (OutputStatus::Dead, 8));
    tokio::time::sleep(Duration::from_secs(7 * 86_400)).await;
    assert!(
        arrivals.try_recv().is_err(),
        "a dead letter is not tried again"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_believed_but_never_sooner_than_the_schedule() {
    let (url, mut arrivals) = receiver(vec![
        (503, Some("900")),    // The schedule says 5 s: the receiver's 15 min wins.
        (429, Some("1")),      // The schedule says 5 min: it wins.
        (503, Some("999999")), // Capped at 6 h.
    ])
    .await;
    let (delivery, outbox) = deliver_one(&url).await;
    let gaps = gaps(&mut arrivals, 4).await;
    delivery.idle().await;

    assert_within(gaps[0], Duration::from_secs(900), 0.0);
    assert_within(gaps[1], Duration::from_secs(300), 0.2);
    assert_within(gaps[2], retry::MAX_RETRY_AFTER, 0.0);
    assert_eq!(outbox.status(1), (OutputStatus::Delivered, 4));
}

#[tokio::test(start_paused = true)]
async fn gone_stops_the_endpoint_and_keeps_the_output() {
    let (url, mut arrivals) = receiver(vec![(410, None)]).await;
    let (delivery, outbox) = deliver_one(&url).await;
    arrivals.recv().await.unwrap();
    delivery.idle().await;

    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert!(
        arrivals.try_recv().is_err(),
        "nothing is sent to a gone receiver"
    );
    assert_eq!(outbox.status(1), (OutputStatus::Pending, 1));
    let stopped = delivery.stopped("support").await.unwrap().unwrap();
    assert!(stopped.reason.contains("410"), "{stopped:?}");

    assert!(delivery.resume("support").await.unwrap());
    arrivals.recv().await.unwrap();
    delivery.idle().await;
    assert_eq!(outbox.status(1), (OutputStatus::Delivered, 2));
}

/// Starts taking up `session`, with a read of the outbox that finds what
/// it is told to, when it is told.
async fn take_up(
    delivery: &Delivery,
    session: &SessionKey,
) -> (
    tokio::sync::oneshot::Sender<Vec<PendingOutput>>,
    tokio::task::JoinHandle<()>,
) {
    let (found, read) = tokio::sync::oneshot::channel();
    let (delivery, session) = (delivery.clone(), session.clone());
    let taking_up = tokio::spawn(async move {
        let read = async { Ok::<_, StoreError>(read.await.unwrap()) };
        delivery.take_up(&session, read).await.unwrap();
    });
    // The take-up has begun, and waits for its read.
    tokio::time::sleep(Duration::from_millis(10)).await;
    (found, taking_up)
}

#[tokio::test(start_paused = true)]
async fn outputs_behind_one_this_host_could_not_send_wait_for_it() {
    // Output 1 fails and waits 5 s for its retry, output 2 behind it; the
    // host stops holding the session before the retry is due.
    let (url, mut arrivals) = receiver(vec![(500, None)]).await;
    let (delivery, outbox) = deliver(&url, [pending(1), pending(2)]).await;
    assert_eq!(arrivals.recv().await.unwrap().webhook_id, "msg_1");
    outbox.not_held.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;

    // It holds it again (its lease renewed), and a turn commits output 3
    // before the session is taken up: nothing goes ahead of output 1.
    outbox.not_held.store(false, Ordering::SeqCst);
    outbox.insert(pending(3));
    delivery.enqueue_committed(vec![pending(3)]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    if let Ok(arrival) = arrivals.try_recv() {
        panic!("{} went before msg_1", arrival.webhook_id);
    }
    let session = pending(1).session;
    assert_eq!(delivery.broken_sessions(), std::slice::from_ref(&session));

    // Taken up: the outbox is read again, and output 4, committed while
    // the read runs, joins what it read.
    let (read_done, taking_up) = take_up(&delivery, &session).await;
    let before_output_4 = outbox.pending();
    outbox.insert(pending(4));
    delivery.enqueue_committed(vec![pending(4)]);
    read_done.send(before_output_4).unwrap();
    taking_up.await.unwrap();

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(arrivals.recv().await.unwrap().webhook_id);
    }
    assert_eq!(ids, ["msg_1", "msg_2", "msg_3", "msg_4"]);
    delivery.idle().await;
    for id in 1..=4 {
        assert_eq!(outbox.status(id).0, OutputStatus::Delivered, "output {id}");
    }
    assert!(delivery.broken_sessions().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_output_found_pending_by_a_take_up_is_not_sent_again_once_delivered() {
    // A take-up reads the outbox while output 1 is on its way; by the time
    // the read answers, output 1 has been delivered.
    let (url, mut arrivals) = receiver(Vec::new()).await;
    let (delivery, outbox) = deliver(&url, []).await;
    let (read_done, taking_up) = take_up(&delivery, &pending(1).session).await;
    outbox.insert(pending(1));
    let found_pending = outbox.pending();
    delivery.enqueue_committed(vec![pending(1)]);
    assert_eq!(arrivals.recv().await.unwrap().webhook_id, "msg_1");
    delivery.idle().await;
    assert_eq!(outbox.status(1).0, OutputStatus::Delivered);

    read_done.send(found_pending).unwrap();
    taking_up.await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    delivery.idle().await;
    if let Ok(again) = arrivals.try_recv() {
        panic!("{} was sent again", again.webhook_id);
    }
    assert_eq!(outbox.status(1), (OutputStatus::Delivered, 1));
}
