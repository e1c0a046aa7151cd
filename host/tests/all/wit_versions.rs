//! The WIT package is versioned, and the host keeps every released world:
//! a flow built against `flowhost:flow@0.1.0`, before the message had a
//! `source` and flows could end a session, or against 0.2.0, from before
//! transformers, loads and runs unchanged beside flows of the current
//! version.

use serde_json::Value;

use crate::support::{Receiver, Site, admin, endpoint, send};

const TOKEN: &str = "wit-versions-admin-token";

#[tokio::test]
async fn a_flow_built_against_0_1_0_runs_beside_current_ones() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{TOKEN}\"\n{}{}",
        endpoint("old", "legacy", &receiver),
        endpoint("new", "faulty", &receiver)
    );
    let site = Site::new(&["legacy", "faulty"], &config);
    let host = site.start().await;

    // Three turns: its context, its log and its outputs all work.
    for text in ["hello", "again", "third"] {
        send(&host.url("old"), "s1", text).await;
    }
    send(&host.url("new"), "s1", "hi").await;
    receiver.wait_for(4).await;
    let old: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| {
            r.body["AIOutput"]["text"]
                .as_str()
                .unwrap()
                .contains("0.1.0")
        })
        .map(|r| r.text().to_owned())
        .collect();
    assert_eq!(
        old,
        ["1: hello (0.1.0)", "2: again (0.1.0)", "3: third (0.1.0)"]
    );
    receiver.wait_for_text("s1", |t| t == "1: hi").await;
    host.wait_for_log(&["a 0.1.0 flow, running"]).await;

    // The operator sees which world each flow implements.
    let (status, flows) = admin(&host, "GET", "/admin/flows", TOKEN).await;
    assert_eq!(status, 200, "{flows}");
    let world = |name: &str| -> Value {
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no flow {name} in {flows}"))["world"]
            .clone()
    };
    assert_eq!(world("legacy"), "flowhost:flow@0.1.0");
    assert_eq!(world("faulty"), "flowhost:flow@0.3.0");
}

#[tokio::test]
async fn a_flow_built_against_0_2_0_runs_with_its_source_and_session_end() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{TOKEN}\"\n{}",
        endpoint("two", "legacy2", &receiver)
    );
    let site = Site::new(&["legacy2"], &config);
    let host = site.start().await;

    for text in ["hello", "bye", "again"] {
        send(&host.url("two"), "s1", text).await;
    }
    let received = receiver.wait_for(3).await;
    let texts: Vec<&str> = received.iter().map(|r| r.text()).collect();
    // `session.end` on "bye": the count starts afresh.
    assert_eq!(
        texts,
        [
            "1: hello from user (0.2.0)",
            "2: bye from user (0.2.0)",
            "1: again from user (0.2.0)"
        ]
    );
    host.wait_for_log(&["a 0.2.0 flow, running"]).await;
    let (_, flows) = admin(&host, "GET", "/admin/flows", TOKEN).await;
    let two = &flows["flows"][0];
    assert_eq!(two["world"], "flowhost:flow@0.2.0", "{flows}");
    assert_eq!(two["kind"], "flow");
}
