//! Several `flowhost serve` processes sharing one PostgreSQL: any host
//! takes any message, each session's messages run once each and in order
//! whichever hosts they were sent to, and a host that dies or pauses loses
//! nothing and keeps nothing stale.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::postgres::TestPostgres;
use crate::support::{Host, PATIENCE, Received, Receiver, Site, endpoint};

/// How long a host's claims hold in these tests: short, so that a dead
/// host's sessions pass on quickly; long enough that a host starved of CPU
/// by the rest of the suite (a browser, schemathesis) keeps its lease.
const LEASE: &str = "3s";

/// `hosts` sites on the database at `url`, each with the counting flow at
/// endpoint `count`, delivering to `receiver`, retrying failed deliveries
/// within a second or so.
fn sites(hosts: usize, url: &str, receiver: &Receiver) -> Vec<Site> {
    (0..hosts)
        .map(|_| {
            Site::new(
                &["faulty"],
                &format!(
                    "[store]\nurl = \"{url}\"\nlease = \"{LEASE}\"\n\
                     [delivery]\nretry_schedule = [{}]\n{}",
                    vec!["\"200ms\""; 30].join(", "),
                    endpoint("count", "faulty", receiver)
                ),
            )
        })
        .collect()
}

/// A deployment for a test: a PostgreSQL with one database, a receiver,
/// and the sites of its hosts.
struct Deployment {
    postgres: TestPostgres,
    receiver: Receiver,
    sites: Vec<Site>,
}

impl Deployment {
    /// `hosts` sites (see [`sites`]) on a fresh database `name`.
    async fn new(name: &str, hosts: usize) -> Deployment {
        let postgres = TestPostgres::start();
        let url = postgres.database(name);
        let receiver = Receiver::start().await;
        let sites = sites(hosts, &url, &receiver);
        Deployment {
            postgres,
            receiver,
            sites,
        }
    }
}

async fn start_all(sites: &[Site]) -> Vec<Host> {
    let mut hosts = Vec::new();
    for site in sites {
        hosts.push(site.start().await);
    }
    hosts
}

/// Message `n` of a session, as the counting flow's n-th answer quotes it.
fn body(session: &str, n: usize) -> serde_json::Value {
    json!({"userId": "u", "sessionId": session, "text": format!("m{n}")})
}

/// What the callers sent: how many messages were accepted, and which may
/// have been accepted twice (a host that died after committing, before its
/// 202 reached the caller; a database that went away after the commit and
/// before its answer, so that the host said 503; either way the caller sent
/// the message again: only an idempotency key, which flowhost does not
/// have yet, tells the two apart).
#[derive(Default)]
struct Sent {
    accepted: AtomicUsize,
    unsure: Mutex<HashSet<(String, usize)>>,
}

impl Sent {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends `messages` messages in each of `sessions` sessions, the sessions
/// at once and each one's messages one after another, message `n` to host
/// `n % urls.len()` (round robin), skipping hosts that do not answer (as a
/// caller would retry elsewhere). Returns once every message got its 202.
async fn send_round_robin(urls: Vec<String>, sessions: usize, messages: usize, sent: Arc<Sent>) {
    let senders: Vec<_> = (0..sessions)
        .map(|s| {
            let urls = urls.clone();
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                for n in 0..messages {
                    send_to_any(&urls, n, &format!("s{s}"), n, &sent).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
}

/// Waits until `what` is true, checking every 20 ms.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends message `n` of `session` to `urls[first % len]`, or the next host
/// that answers 202.
async fn send_to_any(urls: &[String], first: usize, session: &str, n: usize, sent: &Sent) {
    let body = body(session, n);
    let started = Instant::now();
    for attempt in 0.. {
        let url = &urls[(first + attempt) % urls.len()];
        let posted = crate::support::client().post(url).json(&body).send();
        let answer = tokio::time::timeout(PATIENCE, posted)
            .await
            .unwrap_or_else(|_| panic!("{url} did not answer {body}"));
        match answer {
            Ok(response) if response.status() == 202 => {
                sent.accepted.fetch_add(1, Ordering::SeqCst);
                return;
            }
            // 503: the database was away. If it went in the middle of the
            // commit, the message may be kept all the same: the host could
            // not know.
            Ok(response) => {
                assert_eq!(
                    response.status(),
                    503,
                    "only 202, or 503 while the database is away"
                );
                sent.unsure.lock().unwrap().insert((session.to_owned(), n));
            }
            // A host that is gone: it may have kept the message. Try the
            // next.
            Err(_) => {
                sent.unsure.lock().unwrap().insert((session.to_owned(), n));
            }
        }
        assert!(started.elapsed() < PATIENCE, "no host accepted {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each session's delivered texts in the order they arrived, once per
/// `webhook-id` (a redelivery carries its output's id, and is checked to
/// carry the same body).
fn per_session(received: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut sessions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for delivery in received {
        let id = delivery.headers["webhook-id"].to_str().unwrap().to_owned();
        if let Some(first) = seen.get(&id) {
            assert_eq!(first, &delivery.raw, "a redelivery carries the same body");
            continue;
        }
        seen.insert(id, delivery.raw.clone());
        sessions
            .entry(delivery.session().to_owned())
            .or_default()
            .push(delivery.text().to_owned());
    }
    sessions
}

/// Each session's outputs as `(count, n)`: the flow's count of the turn,
/// and the number of the message it answered.
fn counted(received: &[Received]) -> BTreeMap<String, Vec<(usize, usize)>> {
    per_session(received)
        .into_iter()
        .map(|(session, texts)| {
            let turns = texts
                .iter()
                .map(|text| {
                    let (count, message) = text.split_once(": m").expect("count: mN");
                    (count.parse().unwrap(), message.parse().unwrap())
                })
                .collect();
            (session, turns)
        })
        .collect()
}

/// Waits until every session's outputs answer all its `messages`, then
/// checks that each session's turns counted 1, 2, … with no gap and no
/// repeat (each accepted message ran once, one at a time, and its output
/// was delivered in order), answering messages 0, 1, … in the order sent;
/// a message answered twice in a row only where `sent` is unsure whether
/// the first copy was accepted.
async fn expect_counted(receiver: &Receiver, sessions: usize, messages: usize, sent: &Sent) {
    let answered = |turns: &[(usize, usize)]| {
        let mut numbers: Vec<usize> = turns.iter().map(|(_, n)| *n).collect();
        numbers.dedup();
        numbers
    };
    let complete = tokio::time::timeout(PATIENCE, async {
        loop {
            let got = counted(&receiver.received());
            if got.len() == sessions && got.values().all(|t| answered(t).len() >= messages) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let got = complete.unwrap_or_else(|_| {
        let got = counted(&receiver.received());
        let counts: BTreeMap<_, _> = got.iter().map(|(s, t)| (s.clone(), t.len())).collect();
        panic!("not every output arrived: {counts:?}")
    });
    let unsure = sent.unsure.lock().unwrap();
    for (session, turns) in got {
        let counts: Vec<usize> = turns.iter().map(|(count, _)| *count).collect();
        assert_eq!(
            counts,
            (1..=turns.len()).collect::<Vec<_>>(),
            "session {session}: {turns:?}"
        );
        assert_eq!(
            answered(&turns),
            (0..messages).collect::<Vec<_>>(),
            "session {session}: {turns:?}"
        );
        for pair in turns.windows(2) {
            if pair[0].1 == pair[1].1 {
                assert!(
                    unsure.contains(&(session.clone(), pair[0].1)),
                    "session {session}: message {} ran twice though sent once",
                    pair[0].1
                );
            }
        }
    }
}

fn handled(host: &Host) -> usize {
    host.log().matches("message handled").count()
}

/// The turns each host logged, once their count reaches `total`: a turn's
/// line may still be on its way through the pipe when its output has
/// reached the receiver.
async fn handled_by(hosts: &[Host], total: usize) -> (usize, usize) {
    until("every turn's log line read", || {
        hosts.iter().map(handled).sum::<usize>() >= total
    })
    .await;
    (handled(&hosts[0]), handled(&hosts[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_run_each_session_once_in_order_whichever_host_took_its_messages() {
    const SESSIONS: usize = 30;
    const MESSAGES: usize = 40;
    let Deployment {
        postgres: _postgres,
        receiver,
        sites,
    } = Deployment::new("three", 3).await;
    let hosts = start_all(&sites).await;
    let urls: Vec<String> = hosts.iter().map(|h| h.url("count")).collect();
    let paths: Vec<&str> = urls
        .iter()
        .map(|u| &u[u.find("/endpoint/").unwrap()..])
        .collect();
    assert!(
        paths.iter().all(|p| p == &paths[0]),
        "the generated URL token is the same on every host: {urls:?}"
    );

    let sent = Arc::new(Sent::default());
    send_round_robin(urls, SESSIONS, MESSAGES, Arc::clone(&sent)).await;
    expect_counted(&receiver, SESSIONS, MESSAGES, &sent).await;
    let ran: Vec<usize> = hosts.iter().map(handled).collect();
    assert_eq!(ran.iter().sum::<usize>(), SESSIONS * MESSAGES, "{ran:?}");
    eprintln!("turns run per host: {ran:?}");
}

/// The longest any session waited for its next delivery across `moment`:
/// for the sessions a killed host held, how long they waited for another
/// host to take them.
fn longest_wait_across(received: &[Received], moment: Instant) -> Duration {
    let mut last_before: HashMap<&str, Instant> = HashMap::new();
    let mut first_after: HashMap<&str, Instant> = HashMap::new();
    for delivery in received {
        if delivery.at <= moment {
            last_before.insert(delivery.session(), delivery.at);
        } else {
            first_after.entry(delivery.session()).or_insert(delivery.at);
        }
    }
    last_before
        .iter()
        .filter_map(|(session, before)| Some(*first_after.get(session)? - *before))
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_killed_during_turns_and_during_deliveries_lose_nothing() {
    const SESSIONS: usize = 30;
    const MESSAGES: usize = 40;
    let Deployment {
        postgres: _postgres,
        receiver,
        sites,
    } = Deployment::new("killed", 3).await;
    let mut hosts: Vec<Option<Host>> = start_all(&sites).await.into_iter().map(Some).collect();
    let urls: Vec<String> = hosts.iter().flatten().map(|h| h.url("count")).collect();
    let sent = Arc::new(Sent::default());
    let sending = tokio::spawn(send_round_robin(
        urls,
        SESSIONS,
        MESSAGES,
        Arc::clone(&sent),
    ));

    // During turns: a third of the way in, while every host runs some.
    until("a third of the messages accepted", || {
        sent.accepted() >= SESSIONS * MESSAGES / 3
    })
    .await;
    let first_kill = Instant::now();
    hosts[1].take().unwrap().kill().await;

    // During deliveries: the receiver refuses for a while, so each host
    // holds outputs waiting for their retry, and one of them dies.
    until("two thirds of the messages accepted", || {
        sent.accepted() >= SESSIONS * MESSAGES * 2 / 3
    })
    .await;
    receiver.answer_with(&[503; 300]);
    let refused = receiver.attempts().len();
    until("outputs refused and waiting for a retry", || {
        receiver.attempts().len() >= refused + 100
    })
    .await;
    let second_kill = Instant::now();
    hosts[2].take().unwrap().kill().await;

    sending.await.unwrap();
    expect_counted(&receiver, SESSIONS, MESSAGES, &sent).await;
    let received = receiver.received();
    eprintln!(
        "longest wait of a session for its next delivery: across the kill during turns {} ms, \
         across the kill during deliveries {} ms (lease {LEASE})",
        longest_wait_across(&received, first_kill).as_millis(),
        longest_wait_across(&received, second_kill).as_millis(),
    );
    let ids = received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect::<std::collections::HashSet<_>>()
        .len();
    eprintln!(
        "deliveries: {} for {ids} outputs (the rest redeliveries, same webhook-id)",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_past_its_lease_keeps_nothing_stale_when_it_wakes() {
    const SESSIONS: usize = 10;
    const MESSAGES: usize = 20;
    let Deployment {
        postgres: _postgres,
        receiver,
        sites,
    } = Deployment::new("paused", 2).await;
    // The first half of every session goes to the host about to pause,
    // alone, while the receiver refuses: it holds every session, with
    // outputs waiting for their retry.
    let paused = &sites[0].start().await;
    receiver.answer_with(&[503; 40]);
    let sent = &Sent::default();
    let first_half = (0..SESSIONS).map(|s| {
        let url = paused.url("count");
        async move {
            for n in 0..MESSAGES / 2 {
                send_to_any(std::slice::from_ref(&url), 0, &format!("s{s}"), n, sent).await;
            }
        }
    });
    futures::future::join_all(first_half).await;
    let other = &sites[1].start().await;
    paused.signal("STOP");
    let stopped = Instant::now();

    // The other host takes the sessions once the lease has run out, and
    // gets the second half.
    let second_half = (0..SESSIONS).map(|s| {
        let url = other.url("count");
        async move {
            for n in MESSAGES / 2..MESSAGES {
                send_to_any(std::slice::from_ref(&url), 0, &format!("s{s}"), n, sent).await;
            }
        }
    });
    futures::future::join_all(second_half).await;
    expect_counted(&receiver, SESSIONS, MESSAGES, sent).await;
    assert!(
        stopped.elapsed() > Duration::from_secs(2),
        "the sessions passed on only once the paused host's lease ran out"
    );

    // Woken, the paused host finds its claims gone: what it was doing
    // (retries due long ago, a turn if one ran) is refused or not begun.
    paused.signal("CONT");
    paused.wait_for_log(&["lease had lapsed"]).await;
    let before = receiver.received().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: Vec<Received> = receiver.received()[before..].to_vec();
    assert!(
        late.is_empty(),
        "the woken host sent nothing more: {:?}",
        late.iter().map(|r| &r.raw).collect::<Vec<_>>()
    );
    expect_counted(&receiver, SESSIONS, MESSAGES, sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_restarts_hosts_answer_503_then_carry_on() {
    const SESSIONS: usize = 10;
    const MESSAGES: usize = 30;
    let Deployment {
        postgres,
        receiver,
        sites,
    } = Deployment::new("restarted", 2).await;
    let hosts = start_all(&sites).await;
    let urls: Vec<String> = hosts.iter().map(|h| h.url("count")).collect();
    let sent = Arc::new(Sent::default());
    let sending = tokio::spawn(send_round_robin(
        urls.clone(),
        SESSIONS,
        MESSAGES,
        Arc::clone(&sent),
    ));
    until("a third of the messages accepted", || {
        sent.accepted() >= SESSIONS * MESSAGES / 3
    })
    .await;

    postgres.stop();
    let response = crate::support::client()
        .post(&urls[0])
        .json(&body("probe", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    // A load balancer's probe says the same: not ready, because of the
    // store; alive all the same.
    let ready = format!("http://{}/readyz", hosts[1].addr);
    let readyz = crate::support::client().get(&ready).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    let problem: serde_json::Value = readyz.json().await.unwrap();
    assert!(
        problem["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("the store did"),
        "{problem}"
    );
    let healthz = format!("http://{}/healthz", hosts[1].addr);
    let alive = crate::support::client().get(&healthz).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    postgres.start_again();

    sending.await.unwrap();
    expect_counted(&receiver, SESSIONS, MESSAGES, &sent).await;
    let readyz = crate::support::client().get(&ready).send().await.unwrap();
    assert_eq!(readyz.status(), 200, "ready again");
}

#[tokio::test]
async fn a_key_created_at_one_host_works_at_every_host_and_revoked_at_none() {
    let postgres = TestPostgres::start();
    let url = postgres.database("keys");
    let receiver = Receiver::start().await;
    let sites: Vec<Site> = (0..2)
        .map(|_| {
            Site::new(
                &["faulty"],
                &format!(
                    "[store]\nurl = \"{url}\"\n{}auth = \"api-key\"\n",
                    endpoint("count", "faulty", &receiver)
                ),
            )
        })
        .collect();
    let hosts = start_all(&sites).await;
    let created = sites[0].flowhost(&["keys", "create", "count"]).await;
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let post_with_key = async |host: &Host| {
        crate::support::client()
            .post(host.url("count"))
            .header("X-Webhook-Key", &key)
            .json(&body("s", 0))
            .send()
            .await
            .unwrap()
            .status()
    };
    for host in &hosts {
        assert_eq!(post_with_key(host).await, 202, "accepted at every host");
    }
    let id = String::from_utf8(sites[1].flowhost(&["keys", "list", "count"]).await.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let revoked = sites[1].flowhost(&["keys", "revoke", "count", &id]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    for host in &hosts {
        assert_eq!(post_with_key(host).await, 401, "refused at every host");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_host_that_has_the_flow_runs_its_messages_whichever_host_took_them() {
    const SESSIONS: usize = 3;
    let Deployment {
        postgres: _postgres,
        receiver,
        sites,
    } = Deployment::new("flows", 2).await;
    // The second host has no flow yet.
    std::fs::remove_file(sites[1].path().join("flows/faulty.wasm")).unwrap();
    let hosts = start_all(&sites).await;
    let sent = Sent::default();
    let send_to = async |host: &Host, messages: std::ops::Range<usize>| {
        let url = [host.url("count")];
        for n in messages {
            for s in 0..SESSIONS {
                send_to_any(&url, 0, &format!("s{s}"), n, &sent).await;
            }
        }
    };

    send_to(&hosts[1], 0..5).await;
    let received = receiver.wait_for(SESSIONS * 5).await;
    assert_eq!(received.len(), SESSIONS * 5);
    assert_eq!(
        handled_by(&hosts, SESSIONS * 5).await,
        (SESSIONS * 5, 0),
        "the host with the flow ran what the other accepted"
    );

    // The flow moves from the first host to the second: the sessions follow.
    std::fs::copy(
        sites[0].path().join("flows/faulty.wasm"),
        sites[1].path().join("flows/faulty.wasm"),
    )
    .unwrap();
    hosts[1].wait_for_log(&["flow loaded", "faulty"]).await;
    std::fs::remove_file(sites[0].path().join("flows/faulty.wasm")).unwrap();
    hosts[0].wait_for_log(&["the flow is unloaded"]).await;
    send_to(&hosts[0], 5..10).await;
    expect_counted(&receiver, SESSIONS, 10, &sent).await;
    assert_eq!(
        handled_by(&hosts, SESSIONS * 10).await,
        (SESSIONS * 5, SESSIONS * 5),
        "the host that has the flow now ran the rest, and the counts went on"
    );
}

#[tokio::test]
async fn with_sslmode_require_a_host_talks_tls_and_verifies_the_server() {
    let (postgres, ca) = TestPostgres::start_tls();
    let url = format!("{}?sslmode=require", postgres.database("tls"));
    let receiver = Receiver::start().await;
    let config = format!(
        "[store]\nurl = \"{url}\"\n{}",
        endpoint("count", "faulty", &receiver)
    );
    let site = Site::new(&["faulty"], &config);

    // The server's certificate is from a CA the system does not trust:
    // refused, and said why.
    let refused = site.flowhost(&["keys", "list"]).await;
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("certificate"), "{said}");

    // Trusting the CA, every connection the host makes is TLS.
    let ca = ca.to_str().unwrap();
    let host = site.start_with(&[], &[("SSL_CERT_FILE", ca)]).await;
    crate::support::send(&host.url("count"), "s", "hello").await;
    receiver.wait_for_text("s", |t| t == "1: hello").await;
    let connections = postgres.psql(
        "tls",
        "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*)
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = 'tls' AND a.application_name <> 'psql'
           AND a.backend_type = 'client backend'",
    );
    let counts = connections.lines().nth(2).unwrap().trim().to_owned();
    let (tls, all) = counts.split_once('/').unwrap();
    assert!(all != "0" && tls == all, "TLS connections / all: {counts}");
}
