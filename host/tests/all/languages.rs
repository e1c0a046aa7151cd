//! Flows in Python and JavaScript: the `order-help` examples, built with
//! their own build commands and pinned toolchains, hold the Rust example's
//! conversation under `flowhost test` and serve it through an endpoint.

use crate::support::languages::built_example;
use crate::support::tools::{COMPONENTIZE_JS, COMPONENTIZE_PY};
use crate::support::{Receiver, Site, endpoint, repo, send};

const EXAMPLES: [&str; 2] = ["order-help-python", "order-help-js"];

#[tokio::test]
async fn order_help_in_python_and_javascript_holds_the_rust_conversation_and_serves_it() {
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

    let conversation = repo().join("example-flows/order-help/conversations/order-status.toml");
    let conversation = conversation.to_str().unwrap();
    let paths = EXAMPLES.map(|example| format!("flows/{example}.wasm"));
    // The first run of each compiles it (seconds: both at once); the second
    // loads it from the compile cache.
    let args = paths
        .iter()
        .map(|path| ["test", path.as_str(), conversation])
        .collect::<Vec<_>>();
    let first = futures::future::join_all(args.iter().map(|args| site.flowhost(args))).await;
    for (path, out) in paths.iter().zip(first) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ok      "),
            "{path}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = site.flowhost(&["test", path, conversation]).await;
        let stdout = String::from_utf8_lossy(&again.stdout);
        assert!(again.status.success(), "{path}: {stdout}");
        assert!(
            stdout.contains("from the compile cache"),
            "{path}: {stdout}"
        );
    }

    // Served, from the same cache, through the webhook.
    let host = site.start().await;
    for example in EXAMPLES {
        host.wait_for_log(&["flow loaded", &format!("flow={example}"), "from_cache=true"])
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
