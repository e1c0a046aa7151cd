//! `flowhost run` and `flowhost test`: a flow run from the command line,
//! once (its outputs as webhook bodies, its state carried over by a state
//! file) or through conversation files; both with `flowhost.toml`'s
//! settings and `serve`'s compile cache.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{Site, flow_file, repo};

/// The conversation files kept beside an example flow's sources.
fn conversations_of(flow: &str) -> Vec<PathBuf> {
    let dir = repo()
        .join("example-flows")
        .join(flow)
        .join("conversations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_example_flows_pass_their_own_conversations() {
    let site = Site::on_sqlite(&[], "");
    for flow in ["echo", "greeter", "order-help"] {
        let files = conversations_of(flow);
        assert!(!files.is_empty(), "{flow} has conversations");
        site.flowhost_test(&flow_file(flow), &files).await;
    }
}

#[tokio::test]
async fn a_conversation_that_goes_otherwise_fails_showing_each_difference() {
    let site = Site::on_sqlite(&[], "");
    std::fs::write(
        site.path().join("wrong.toml"),
        r#"
[[turn]]
text = "Hello"
[[turn.expect]]
text = "Good morning"

[[turn]]
text = "It's 12345."
[[turn.expect]]
matches = "^Thanks!"
data = { orderNumber = "54321" }
[turn.context]
orderNumber = "54321"

[[turn]]
text = "When will it arrive?"
expect = []

[[turn]]
text = "and then?"
fails = "deadline"
"#,
    )
    .unwrap();
    let good = conversations_of("order-help");
    let out = site
        .flowhost(&[
            "test",
            flow_file("order-help").to_str().unwrap(),
            "wrong.toml",
            good[0].to_str().unwrap(),
        ])
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expected in [
        "FAILED  wrong.toml: 4 of 4 turns\n",
        "  turn 1 (\"Hello\"):\n    - output 1 text\n      expected \"Good morning\"\n      \
         got      \"I’d be happy to help. Could you please provide your order number?\"\n",
        "  turn 2 (\"It's 12345.\"):\n    - output 1 data.orderNumber: expected \"54321\", got \"12345\"\n    \
         - context.orderNumber: expected \"54321\", got \"12345\"\n",
        "    - expected 0 outputs, got 1\n        1: \"Order 12345 should arrive in 2 days.\" data ",
        "  turn 4 (\"and then?\"):\n    - expected the turn to fail (\"deadline\"), but it succeeded with 1 outputs",
        &format!("ok      {}: 5 turns, 5 outputs", good[0].display()),
        "1 of 2 conversations failed",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }

    // A turn expected to fail passes when it does, by its panic message.
    std::fs::write(
        site.path().join("panics.toml"),
        "[[turn]]\ntext = \"panic\"\nfails = \"the faulty flow panics on request\"\n\n\
         [[turn]]\ntext = \"panic\"\nexpect = []\n",
    )
    .unwrap();
    let out = site
        .flowhost(&["test", flow_file("faulty").to_str().unwrap(), "panics.toml"])
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED  panics.toml: 1 of 2 turns"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  turn 2 (\"panic\"):\n    - the flow failed: wasm trap"),
        "{stdout}"
    );

    // A file that is not a conversation is named, before anything runs.
    std::fs::write(site.path().join("typo.toml"), "[[turns]]\ntext = \"hi\"\n").unwrap();
    let out = site
        .flowhost(&["test", flow_file("echo").to_str().unwrap(), "typo.toml"])
        .await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("typo.toml is not a conversation file") && stderr.contains("turns"),
        "{stderr}"
    );
}

#[tokio::test]
async fn local_runs_read_flowhost_toml_and_share_the_compile_cache_with_serve() {
    let site = Site::on_sqlite(&[], "[runtime]\nmax_component_size = \"1 KiB\"\n");
    std::fs::copy(
        flow_file("order-help"),
        site.path().join("flows/order-help.wasm"),
    )
    .unwrap();
    let conversation = conversations_of("order-help").remove(0);
    let conversation = conversation.to_str().unwrap();
    let args = ["test", "flows/order-help.wasm", conversation];
    let test = || site.flowhost(&args);

    // The size limit of flowhost.toml applies, and the refusal names it.
    let refused = test().await;
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("over the limit of 1024 bytes (runtime.max_component_size)"),
        "{stderr}"
    );

    std::fs::write(
        site.path().join("flowhost.toml"),
        "listen = \"127.0.0.1:0\"\nflows_dir = \"flows\"\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let first = text(&test().await.stdout);
    assert!(
        first.contains("(compiled, and cached for the next run)"),
        "{first}"
    );
    assert!(first.contains("ok      "), "{first}");
    let second = text(&test().await.stdout);
    assert!(second.contains("from the compile cache"), "{second}");
    assert!(second.contains("ok      "), "{second}");

    // `serve` finds the code `test` compiled.
    let host = site.start().await;
    host.wait_for_log(&["flow loaded", "flow=order-help", "from_cache=true"])
        .await;
}

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
