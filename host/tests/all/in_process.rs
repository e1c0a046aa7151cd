//! The first tier of tests: flowhost in this process, its router called
//! with `oneshot` (no socket, no child process), for what needs neither:
//! the endpoint's validation table. What needs a connection, a signal or a
//! process to kill is tested against the binary in the other modules.

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{assert_problem, invalid_cases};

const TOKEN: &str = "open-endpoint-token-0000";

/// flowhost started in this process on port 0, with one endpoint running
/// `echo` (its outputs go nowhere: nothing here waits for them).
async fn server() -> (tempfile::TempDir, flowhost::Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    std::fs::copy(
        crate::support::flow_file("echo"),
        dir.path().join("flows/echo.wasm"),
    )
    .unwrap();
    let config = format!(
        "flows_dir = \"{flows}\"\ndata_dir = \"{data}\"\nwatch = false\n\
         [delivery]\nallow_private_webhooks = true\n\
         [endpoints.open]\nflow = \"echo\"\nurl_token = \"{TOKEN}\"\n\
         webhook_url = \"http://127.0.0.1:9/hook\"\n",
        flows = dir.path().join("flows").display(),
        data = dir.path().join("data").display(),
    );
    let config = flowhost::Config::from_toml(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = flowhost::Server::start(listener, config).await.unwrap();
    (dir, server)
}

async fn post(app: &axum::Router, content_type: &str, body: String) -> (StatusCode, String, Value) {
    let request = Request::post(format!("/endpoint/{TOKEN}"))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, kind, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_request_gets_its_problem() {
    let (_dir, server) = server().await;
    let app = server.router();
    let cases = invalid_cases();
    for case in cases {
        let (status, media_type, problem) = post(&app, case.0, case.1.clone()).await;
        assert_problem(&case, status.as_u16(), &media_type, &problem);
    }

    // Over max_body_size (1 MiB by default): 413, whatever the body says.
    let big = format!(
        r#"{{"userId":"u","sessionId":"s","data":{{"blob":"{}"}}}}"#,
        "z".repeat(2 << 20)
    );
    let (answer, _, problem) = post(&app, "application/json", big).await;
    assert_eq!(answer, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["type"], "urn:flowhost:problem:too-large");

    // And a valid one is accepted.
    let (answer, _, accepted) = post(
        &app,
        "application/json",
        r#"{"userId":"u","sessionId":"s","text":"valid"}"#.into(),
    )
    .await;
    assert_eq!(answer, StatusCode::ACCEPTED);
    assert!(
        accepted["traceId"]
            .as_str()
            .unwrap()
            .starts_with("endpoint-httpIncomingMessage-")
    );
}
