//! Flows that wait: a turn waiting on an API holds its instance and
//! nothing else, so hundreds of them wait at once (far more than the warm
//! instances), and other flows are served meanwhile.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::support::{HeldApi, Receiver, Site, post, send};

#[tokio::test]
async fn turns_waiting_on_an_api_hold_no_scarce_slot_and_hold_back_no_other_flow() {
    const TURNS: usize = 300;
    let receiver = Receiver::start().await;
    let api = HeldApi::start().await;
    let port = api
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            [runtime]
            warm_instances = 4
            private_outbound_hosts = ["http://127.0.0.1:{port}"]

            [limits]
            deadline = "60s"

            [endpoints.waits]
            flow = "waiting"
            webhook_url = "{hook}"

            [endpoints.quick]
            flow = "echo"
            webhook_url = "{hook}"
            "#,
            hook = receiver.url()
        ),
    );
    site.add_flow(
        "waiting",
        "waiting",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
        )),
    );
    let host = site.start().await;

    for n in 0..TURNS {
        let body = json!({
            "userId": "u",
            "sessionId": format!("s{n}"),
            "text": format!("turn {n}"),
            "data": {"call": api.url},
        });
        assert_eq!(post(&host.url("waits"), &body, &[]).await.status(), 202);
    }
    // Every turn waits on the API at once: 300, with 4 warm instances (the
    // pool was once the bound, and a flow had half of it).
    api.wait_holding(TURNS).await;

    // Another flow is served while they wait.
    send(&host.url("quick"), "other", "not held back").await;
    receiver
        .wait_for_text("other", |text| text == "not held back")
        .await;
    assert_eq!(api.holding.load(Ordering::SeqCst), TURNS, "still waiting");

    // Released, each turn ends with what the API answered.
    api.release.send(true).unwrap();
    let received = receiver.wait_for(1 + 2 * TURNS).await;
    let answered = received
        .iter()
        .filter(|r| r.text().starts_with("turn "))
        .filter(|r| r.body["AIOutput"]["data"]["status"] == 200)
        .count();
    assert_eq!(answered, TURNS);
}
