//! Flows in Python, JavaScript and C: the `order-help` examples, built with
//! their own build commands and pinned toolchains, serve the Rust example's
//! conversation through an endpoint and hold to it under `flowhost test`;
//! what jco's QuickJS backend makes by default is refused saying why.

use crate::support::languages::built_example;
use crate::support::tools::{COMPONENTIZE_JS, COMPONENTIZE_PY};
use crate::support::{Host, Receiver, Site, endpoint, repo, send};

const EXAMPLES: [&str; 3] = ["order-help-python", "order-help-js", "order-help-c"];
/// The examples whose components are large (an interpreter inside).
const LARGE: [&str; 2] = ["order-help-python", "order-help-js"];

/// Waits, up to five minutes, for a log line holding all of `parts`: what
/// a compile of a large component may take on a machine running other
/// tests.
async fn wait_long_for_log(host: &Host, parts: &[&str]) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    while !host
        .log()
        .lines()
        .any(|l| parts.iter().all(|p| l.contains(p)))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {parts:?} in:\n{}",
            host.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn order_help_in_python_javascript_and_c_is_served_and_holds_the_rust_conversation() {
    // Built side by side: each toolchain takes seconds.
    let builds =
        EXAMPLES.map(|example| tokio::task::spawn_blocking(move || built_example(example)));
    let receiver = Receiver::start().await;
    let site = Site::on_sqlite(
        &[],
        &EXAMPLES
            .iter()
            .map(|example| endpoint(example, example, &receiver))
            .collect::<String>(),
    );
    for (example, build) in EXAMPLES.iter().zip(builds) {
        let built = build.await.unwrap();
        std::fs::copy(built, site.path().join(format!("flows/{example}.wasm"))).unwrap();
    }
    // Served from cold: the large two compile for seconds each. A small
    // flow dropped in meanwhile loads at once, not after them.
    let host = site.start_serving().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    site.add_flow("tiny", "echo", None);
    let tiny = host.wait_for_log(&["flow loaded", "flow=tiny"]).await;
    for example in LARGE {
        assert!(
            !host.log().contains(&format!("flow={example} ")),
            "the small flow loaded first: {tiny}\n{}",
            host.log()
        );
    }
    for example in EXAMPLES {
        // One at a time, each tens of seconds on a busy machine.
        wait_long_for_log(
            &host,
            &[
                "flow loaded",
                &format!("flow={example} "),
                "from_cache=false",
            ],
        )
        .await;
        let url = host.url(example);
        let session = format!("{example}-session");
        send(&url, &session, "Hello, I need help with my order").await;
        receiver
            .wait_for_text(&session, |t| t.contains("provide your order number"))
            .await;
        send(&url, &session, "It's 12345.").await;
        receiver
            .wait_for_text(&session, |t| {
                t.starts_with("Thanks! Order 12345 is being packed.")
            })
            .await;
        send(&url, &session, "When will it arrive?").await;
        receiver
            .wait_for_text(&session, |t| t == "Order 12345 should arrive in 2 days.")
            .await;
    }

    // `flowhost test` holds each to the Rust example's conversation, with
    // the code `serve` compiled.
    let conversation = repo().join("example-flows/order-help/conversations/order-status.toml");
    for example in EXAMPLES {
        let path = std::path::PathBuf::from(format!("flows/{example}.wasm"));
        let stdout = site
            .flowhost_test(&path, std::slice::from_ref(&conversation))
            .await;
        assert!(
            stdout.contains("from the compile cache"),
            "{}: {stdout}",
            path.display()
        );
    }
}

#[test]
fn the_examples_pin_the_toolchains_the_tests_install() {
    let requirements =
        std::fs::read_to_string(repo().join("example-flows/order-help-python/requirements.txt"))
            .unwrap();
    let (package, version) = COMPONENTIZE_PY;
    assert!(
        requirements.contains(&format!("{package}=={version}")),
        "{requirements}"
    );

    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("example-flows/order-help-js/package.json")).unwrap(),
    )
    .unwrap();
    let (package, version) = COMPONENTIZE_JS;
    assert_eq!(manifest["devDependencies"][package], version, "{manifest}");
}

#[tokio::test]
async fn a_component_using_async_features_is_refused_saying_how_to_build_it() {
    // What jco's QuickJS backend makes by default: a component using the
    // component model's async builtins (here `task.cancel`).
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (core func $cancel (canon task.cancel))
        )"#,
    )
    .unwrap();
    let site = Site::on_sqlite(&[], "");
    std::fs::write(site.path().join("qjs.wasm"), component).unwrap();
    std::fs::write(site.path().join("hello.toml"), "[[turn]]\ntext = \"hi\"\n").unwrap();
    let out = site.flowhost(&["test", "qjs.wasm", "hello.toml"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("requires the component model async feature")
            && stderr.contains("--backend-qjs-disable-async"),
        "{stderr}"
    );
}
