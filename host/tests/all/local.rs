//! `flowhost run`: a flow run once from the command line, its outputs as
//! webhook bodies, its state carried over by a state file.

use serde_json::Value;

use crate::support::{Site, flow_file};

#[tokio::test]
async fn runs_a_multi_turn_conversation_one_command_at_a_time() {
    let site = Site::new(&[], "");
    let flow = flow_file("order-help");
    let flow = flow.to_str().unwrap();
    let run = |text: &'static str| {
        let site = &site;
        async move {
            let out = site
                .flowhost(&[
                    "run",
                    flow,
                    "--user",
                    "u1",
                    "--session",
                    "s1",
                    "--text",
                    text,
                    "--state",
                    "state.json",
                ])
                .await;
            assert!(out.status.success(), "{out:?}");
            let stdout = String::from_utf8(out.stdout).unwrap();
            stdout
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .collect::<Vec<_>>()
        }
    };

    let first = run("Hello, I need help with my order").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["userId"], "u1");
    assert_eq!(first[0]["AIOutput"]["source"], "bot");
    assert!(
        first[0]["AIOutput"]["text"]
            .as_str()
            .unwrap()
            .contains("order number")
    );

    run("A-777").await;
    let third = run("When will it arrive?").await;
    assert!(
        third[0]["AIOutput"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Order A-777 should arrive")
    );

    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(site.path().join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["context"]["orderNumber"], "A-777");
}

#[tokio::test]
async fn a_failing_flow_exits_non_zero_with_its_reason() {
    let site = Site::new(&[], "");
    let flow = flow_file("faulty");
    let out = site
        .flowhost(&[
            "run",
            flow.to_str().unwrap(),
            "--user",
            "u",
            "--session",
            "s",
            "--text",
            "panic",
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "no output of a failed message is printed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wasm trap"), "{stderr}");
    assert!(
        stderr.contains("the faulty flow panics on request"),
        "{stderr}"
    );

    let bad = site
        .flowhost(&[
            "run",
            flow.to_str().unwrap(),
            "--user",
            "u",
            "--session",
            "s",
            "--data",
            "[1]",
        ])
        .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--data must be a JSON object"));
}
