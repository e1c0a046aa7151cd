//! Several `flowhost serve` processes sharing one PostgreSQL: any host
//! takes any message, each session's messages run once each and in order
//! whichever hosts they were sent to, and a host that dies or pauses loses
//! nothing and keeps nothing stale.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::postgres::TestPostgres;
use crate::support::{Host, PATIENCE, Received, Receiver, Site, endpoint};

/// How long a host's claims hold in these tests: short, so that a dead
/// host's sessions pass on quickly.
const LEASE: &str = "2s";

/// `hosts` sites on the database at `url`, each with the counting flow at
/// endpoint `count`, delivering to `receiver`.
fn sites(hosts: usize, url: &str, receiver: &Receiver) -> Vec<Site> {
    (0..hosts)
        .map(|_| {
            Site::new(
                &["faulty"],
                &format!(
                    "[store]\nurl = \"{url}\"\nlease = \"{LEASE}\"\n{}",
                    endpoint("count", "faulty", receiver)
                ),
            )
        })
        .collect()
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

/// Sends `messages` messages in each of `sessions` sessions, one session
/// after another message by message, message `n` to host `n % urls.len()`
/// (round robin), skipping hosts that do not answer (as a caller would
/// retry elsewhere). Returns once every message got its 202.
async fn send_round_robin(urls: Vec<String>, sessions: usize, messages: usize) {
    let senders: Vec<_> = (0..sessions)
        .map(|s| {
            let urls = urls.clone();
            tokio::spawn(async move {
                let session = format!("s{s}");
                for n in 0..messages {
                    send_to_any(&urls, n, &body(&session, n)).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
}

/// Sends `body` to `urls[first % len]`, or the next host that answers 202.
async fn send_to_any(urls: &[String], first: usize, body: &serde_json::Value) {
    let started = Instant::now();
    for attempt in 0.. {
        let url = &urls[(first + attempt) % urls.len()];
        match crate::support::client().post(url).json(body).send().await {
            Ok(response) if response.status() == 202 => return,
            Ok(response) => assert_eq!(
                response.status(),
                503,
                "only 202, or 503 while the database is away"
            ),
            Err(_) => {} // A host that is gone: try the next.
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

/// Waits until every session has all its `messages` outputs (once each by
/// `webhook-id`), then checks that each went 1, 2, … in order: every
/// message ran once, in the order accepted, and was delivered in order.
async fn expect_counted(receiver: &Receiver, sessions: usize, messages: usize) {
    let complete = tokio::time::timeout(PATIENCE, async {
        loop {
            let got = per_session(&receiver.received());
            if got.len() == sessions && got.values().all(|texts| texts.len() >= messages) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let got = complete.unwrap_or_else(|_| {
        let got = per_session(&receiver.received());
        let counts: BTreeMap<_, _> = got.iter().map(|(s, t)| (s.clone(), t.len())).collect();
        panic!("not every output arrived: {counts:?}")
    });
    for (session, texts) in got {
        let expected: Vec<String> = (0..messages).map(|n| format!("{}: m{n}", n + 1)).collect();
        assert_eq!(texts, expected, "session {session}");
    }
}

fn handled(host: &Host) -> usize {
    host.log().matches("message handled").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_run_each_session_once_in_order_whichever_host_took_its_messages() {
    const SESSIONS: usize = 30;
    const MESSAGES: usize = 40;
    let postgres = TestPostgres::start();
    let url = postgres.database("three");
    let receiver = Receiver::start().await;
    let sites = sites(3, &url, &receiver);
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

    send_round_robin(urls, SESSIONS, MESSAGES).await;
    expect_counted(&receiver, SESSIONS, MESSAGES).await;
    let ran: Vec<usize> = hosts.iter().map(handled).collect();
    assert_eq!(ran.iter().sum::<usize>(), SESSIONS * MESSAGES, "{ran:?}");
    eprintln!("turns run per host: {ran:?}");
}
