//! Order per session under concurrency: many sessions at once, each one's
//! messages run and delivered in the order they were accepted.

use std::collections::HashMap;

use serde_json::json;

use crate::support::{Receiver, Site, endpoint, post};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sessions_of_twenty_messages_stay_in_order() {
    const SESSIONS: usize = 50;
    const MESSAGES: usize = 20;
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint("count", "faulty", &receiver));
    let host = site.start().await;
    let url = host.url("count");

    let senders: Vec<_> = (0..SESSIONS)
        .map(|session| {
            let url = url.clone();
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    let body = json!({"userId": "u", "sessionId": format!("s{session}"), "text": format!("m{n}")});
                    let response = post(&url, &body, &[]).await;
                    assert_eq!(response.status(), 202);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }

    let received = receiver.wait_for(SESSIONS * MESSAGES).await;
    assert_eq!(
        received.len(),
        SESSIONS * MESSAGES,
        "each message delivered once"
    );
    let mut per_session: HashMap<&str, Vec<&str>> = HashMap::new();
    for delivery in &received {
        per_session
            .entry(delivery.session())
            .or_default()
            .push(delivery.text());
    }
    assert_eq!(per_session.len(), SESSIONS);
    for (session, texts) in per_session {
        // The faulty flow counts messages in the session's context, so the
        // n-th output says "n: m(n-1)" only if the messages ran in order, one
        // at a time, and were delivered in order.
        let expected: Vec<String> = (0..MESSAGES).map(|n| format!("{}: m{n}", n + 1)).collect();
        assert_eq!(texts, expected, "session {session}");
    }
}
