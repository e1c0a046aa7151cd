//! Nothing accepted is lost: kill -9 in the middle of traffic, restart, and
//! every 202 is kept, every output delivered, in order per session; a
//! graceful stop finishes what runs and keeps the rest for the next start.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::{PATIENCE, Receiver, Site, client, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_flight_loses_nothing_and_keeps_each_session_in_order() {
    const SESSIONS: usize = 20;
    const MESSAGES: usize = 50;
    const KILLS: usize = 3;
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &format!(
            "[delivery]\nretry_schedule = [\"50ms\", \"100ms\", \"200ms\", \"400ms\", \"800ms\", \"1s\", \"1s\", \"1s\"]\n\
             [endpoints.count]\nflow = \"faulty\"\nwebhook_url = \"{}\"\n",
            receiver.url()
        ),
    );
    let mut host = site.start().await;
    let url = Arc::new(Mutex::new(host.url("count")));
    // The traceIds answered with a 202, per session, in the order answered.
    let accepted: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let cut_off = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let senders: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let (url, accepted, cut_off) = (url.clone(), accepted.clone(), cut_off.clone());
            tokio::spawn(async move {
                let session = format!("s{s}");
                for n in 0..MESSAGES {
                    let body =
                        json!({"userId": "u", "sessionId": session, "text": format!("m{n}")});
                    // A request cut off by a kill gets no 202 and is sent
                    // again (it may have been accepted: then it runs twice).
                    loop {
                        let target = url.lock().unwrap().clone();
                        if let Ok(response) = client().post(&target).json(&body).send().await
                            && response.status() == 202
                        {
                            let answer: serde_json::Value = response.json().await.unwrap();
                            let trace_id = answer["traceId"].as_str().unwrap().to_owned();
                            accepted
                                .lock()
                                .unwrap()
                                .entry(session.clone())
                                .or_default()
                                .push(trace_id);
                            break;
                        }
                        cut_off.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    // Kill when a quarter, a half and three quarters of the messages are
    // in: always in the middle of traffic, however fast the machine.
    for kill in 1..=KILLS {
        let due = SESSIONS * MESSAGES * kill / (KILLS + 1);
        while accepted
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum::<usize>()
            < due
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        host.kill().await;
        host = site.start().await;
        *url.lock().unwrap() = host.url("count");
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let all_accepted: HashSet<&String> = accepted.values().flatten().collect();
    assert_eq!(all_accepted.len(), SESSIONS * MESSAGES);

    // Wait until every accepted message's output has arrived.
    let arrived = tokio::time::timeout(PATIENCE, async {
        loop {
            let delivered: HashSet<String> = receiver
                .received()
                .iter()
                .map(|r| r.body["AIOutput"]["traceId"].as_str().unwrap().to_owned())
                .collect();
            if all_accepted.iter().all(|t| delivered.contains(*t)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "not every accepted message was delivered:\n{}",
        host.log()
    );

    // Receivers deduplicate by webhook-id; a duplicate is the same output.
    let mut first_by_id: HashMap<String, String> = HashMap::new();
    let mut per_session: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut duplicates = 0;
    for delivery in receiver.received() {
        let id = delivery.headers["webhook-id"].to_str().unwrap().to_owned();
        match first_by_id.get(&id) {
            Some(body) => {
                assert_eq!(
                    body, &delivery.raw,
                    "a redelivery carries the same body under the same id"
                );
                duplicates += 1;
            }
            None => {
                first_by_id.insert(id, delivery.raw.clone());
                let trace_id = delivery.body["AIOutput"]["traceId"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                per_session
                    .entry(delivery.session().to_owned())
                    .or_default()
                    .push((delivery.text().to_owned(), trace_id));
            }
        }
    }
    let cut_off = cut_off.load(std::sync::atomic::Ordering::Relaxed);
    println!("{KILLS} kills: {cut_off} requests cut off and sent again, {duplicates} redeliveries");
    assert!(
        cut_off > 0 && duplicates + receiver.attempts().len() > all_accepted.len(),
        "the kills must land in the middle of traffic"
    );

    for (session, deliveries) in &per_session {
        // The flow counts its turns in the session's context: counts 1, 2,
        // 3… with no gap or repeat mean each turn ran once, alone, in order,
        // and committed whole; the message numbers never go back.
        let mut last_message = 0;
        for (position, (text, _)) in deliveries.iter().enumerate() {
            let (count, message) = text.split_once(": m").unwrap();
            assert_eq!(
                count.parse::<usize>().unwrap(),
                position + 1,
                "session {session}: {deliveries:?}"
            );
            let message: usize = message.parse().unwrap();
            assert!(
                message >= last_message,
                "session {session} went back: {deliveries:?}"
            );
            last_message = message;
        }
        // The accepted messages were delivered in the order they were accepted.
        let delivered_order: Vec<&String> = deliveries
            .iter()
            .map(|(_, trace_id)| trace_id)
            .filter(|t| accepted[session].contains(t))
            .collect();
        let accepted_order: Vec<&String> = accepted[session].iter().collect();
        assert_eq!(delivered_order, accepted_order, "session {session}");
    }
}

#[tokio::test]
async fn a_graceful_stop_finishes_running_flows_and_keeps_the_rest() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &[],
        &format!(
            "[endpoints.slow]\nflow = \"hostile\"\nwebhook_url = \"{}\"\n",
            receiver.url()
        ),
    );
    site.add_flow("hostile", "hostile", None);
    let host = site.start().await;
    let url = host.url("slow");
    send(&url, "s", "nap 800").await;
    send(&url, "s", "count").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // SIGTERM while the nap runs: it finishes; the next message waits.
    let stopped = std::time::Instant::now();
    let log = {
        let status = host.terminate().await;
        assert!(status.success(), "{status:?}");
        stopped.elapsed()
    };
    assert!(
        log >= Duration::from_millis(400),
        "the running flow was waited for ({log:?})"
    );

    let host = site.start().await;
    let received = receiver.wait_for(2).await;
    let texts: Vec<_> = received.iter().map(|r| r.text()).collect();
    assert_eq!(
        texts,
        ["woke after 800 ms", "count 2"],
        "the nap ran once; the count ran after the restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "nothing ran twice");
    drop(host);
}
