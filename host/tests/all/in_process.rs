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
    server_with("").await
}

/// The same, with `more` configuration, and the hostile flow too.
async fn server_with(more: &str) -> (tempfile::TempDir, flowhost::Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    for flow in ["echo", "hostile"] {
        std::fs::copy(
            crate::support::flow_file(flow),
            dir.path().join(format!("flows/{flow}.wasm")),
        )
        .unwrap();
    }
    let config = format!(
        "flows_dir = \"{flows}\"\ndata_dir = \"{data}\"\nwatch = false\n\
         [delivery]\nallow_private_webhooks = true\n\
         [endpoints.open]\nflow = \"echo\"\nurl_token = \"{TOKEN}\"\n\
         webhook_url = \"http://127.0.0.1:9/hook\"\n{more}",
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

/// `GET path` on the router: the status and the body.
async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_stopping_is_not_ready() {
    let (_dir, server) = server_with(
        "[endpoints.slow]\nflow = \"hostile\"\nurl_token = \"slow-endpoint-token-0000\"\n\
         webhook_url = \"http://127.0.0.1:9/hook\"\n",
    )
    .await;
    let app = server.router();
    let started = std::time::Instant::now();
    while get(&app, "/readyz").await.0 != StatusCode::OK {
        assert!(started.elapsed() < crate::support::PATIENCE, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A turn that sleeps keeps the host stopping (for its deadline, 5 s).
    let request = Request::post("/endpoint/slow-endpoint-token-0000")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"userId":"u","sessionId":"s","text":"sleep"}"#,
        ))
        .unwrap();
    let accepted = app.clone().oneshot(request).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    while !get(&app, "/metrics")
        .await
        .1
        .contains("flowhost_turns_in_flight 1\n")
    {
        assert!(
            started.elapsed() < crate::support::PATIENCE,
            "never running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    loop {
        let (status, body) = get(&app, "/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let problem: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["reasons"][0], "flowhost is stopping", "{problem}");
            break;
        }
        assert!(
            started.elapsed() < crate::support::PATIENCE,
            "ready while stopping"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    serving.await.unwrap().unwrap();
}
