//! `flowhost check`: the configuration and every flow, as `serve` would
//! read them, before a deploy.

use crate::support::{Receiver, Site, endpoint};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_good_site_checks_ok() {
    let receiver = Receiver::start().await;
    let site = Site::on_sqlite(
        &["echo", "order-help"],
        &format!(
            "{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("support", "order-help", &receiver)
        ),
    );
    let output = site.flowhost(&["check"]).await;
    assert!(output.status.success(), "{}", stdout(&output));
    assert_eq!(
        stdout(&output),
        "ok: 2 endpoints, 2 flows (echo, order-help)\n"
    );
    assert!(!site.path().join("data").exists(), "check opens no store");
}

#[tokio::test]
async fn every_problem_is_named_and_fails_the_check() {
    let receiver = Receiver::start().await;
    let site = Site::on_sqlite(
        &["echo"],
        &format!(
            "{}{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("broken", "garbled", &receiver),
            endpoint("lost", "nowhere", &receiver)
        ),
    );
    let flows = site.path().join("flows");
    std::fs::write(flows.join("garbled.wasm"), b"\0asm but not really").unwrap();
    std::fs::copy(flows.join("echo.wasm"), flows.join("echo.v2.wasm")).unwrap();
    std::fs::write(flows.join("echo.toml"), "[limits]\nmemory = \"lots\"\n").unwrap();

    let output = site.flowhost(&["check"]).await;
    assert!(!output.status.success());
    let printed = stdout(&output);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 6, "{printed}");
    for (line, expected) in lines.iter().zip([
        [
            "flows/echo.v2.wasm: not a flow file name",
            "want <name>.wasm",
        ],
        [
            "flows/echo.wasm: invalid manifest echo.toml",
            "\"lots\" is not a size",
        ],
        ["flows/garbled.wasm: ", "not a WebAssembly component"],
        ["endpoints.broken: its flow \"garbled\" does not load", ""],
        ["endpoints.echo: its flow \"echo\" does not load", ""],
        [
            "endpoints.lost: its flow \"nowhere\" has no file flows/nowhere.wasm",
            "",
        ],
    ]) {
        assert!(line.starts_with("problem: "), "{line}");
        for part in expected {
            assert!(line.contains(part), "{line} lacks {part:?}");
        }
    }
    assert!(String::from_utf8_lossy(&output.stderr).contains("6 problems"));

    // A configuration that does not load: each of its problems.
    std::fs::write(
        site.path().join("flowhost.toml"),
        "listen = \"127.0.0.1:0\"\nmax_body_size = \"0 B\"\n\n[endpoints.x]\nflow = \"Not A Name\"\nwebhook_url = \"ftp://example.com\"\n",
    )
    .unwrap();
    let output = site.flowhost(&["check"]).await;
    assert!(!output.status.success());
    let printed = stdout(&output);
    assert!(printed.lines().count() >= 2, "{printed}");
    assert!(
        printed
            .lines()
            .all(|line| line.starts_with("problem: flowhost.toml: ")),
        "{printed}"
    );
    assert!(printed.contains("webhook_url"), "{printed}");
}
