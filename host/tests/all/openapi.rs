//! The OpenAPI document at `/openapi.json` against the running host:
//! schemathesis (from PyPI) generates requests from it, for every
//! operation, and checks each answer: no 5xx, and status, content type,
//! headers and body as the document says.

use std::process::Command;

use crate::support::tools::{SCHEMATHESIS, python_tool};
use crate::support::{Receiver, Site};

const ADMIN_TOKEN: &str = "admintoken-0123456789abcdef0123456789abcdef";
const ECHO_TOKEN: &str = "test-echo-00000000000000000";

#[tokio::test]
async fn every_answer_matches_the_openapi_document() {
    let schemathesis = tokio::task::spawn_blocking(|| python_tool(SCHEMATHESIS))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            admin_token = "{ADMIN_TOKEN}"

            [delivery]
            retry_schedule = ["10ms"]

            [endpoints.echo]
            flow = "echo"
            url_token = "{ECHO_TOKEN}"
            webhook_url = "{url}"

            [endpoints.keyed]
            flow = "echo"
            auth = "api-key"
            webhook_url = "{url}"
            "#,
            url = receiver.url()
        ),
    );
    // Some deliveries fail for good: dead letters to list and redeliver.
    receiver.answer_with(&[500; 20]);
    // The admin token for the admin API's security scheme; the echo
    // endpoint's token, so that messages reach a flow (a fuzzed token is a
    // 404); the one endpoint whose deliveries are worth listing.
    std::fs::write(
        site.path().join("schemathesis.toml"),
        format!(
            r#"
            [auth.openapi.adminToken]
            bearer = "{ADMIN_TOKEN}"

            [[operations]]
            include-path-regex = "^/endpoint/\\{{url_token\\}}"
            parameters = {{ url_token = "{ECHO_TOKEN}" }}

            [[operations]]
            include-path-regex = "^/admin/endpoints/\\{{endpoint\\}}/"
            parameters = {{ endpoint = "echo" }}

            # A stream that lasts as long as the host: its answer never ends.
            [[operations]]
            include-path = "/admin/endpoints/{{endpoint}}/events"
            enabled = false
            "#
        ),
    )
    .unwrap();
    let host = site.start().await;

    let base = format!("http://{}", host.addr);
    let site_dir = site.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .current_dir(&site_dir)
            .args(["run", &format!("{base}/openapi.json"), "--url", &base])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,\
                 content_type_conformance,response_headers_conformance",
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--generation-deterministic",
                "--no-color",
                "--report",
                "junit",
                "--report-junit-path",
                "junit.xml",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found answers that break the document ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // It tried every operation the document has (its JUnit report counts
    // one test per operation).
    let junit = std::fs::read_to_string(site.path().join("junit.xml")).unwrap();
    let document: serde_json::Value = crate::support::client()
        .get(format!("http://{}/openapi.json", host.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .filter(|key| ["get", "post", "put", "patch", "delete"].contains(&key.as_str()))
        .count();
    // All but the event stream.
    let tested = format!(
        r#"errors="0" failures="0" skipped="0" tests="{}""#,
        operations - 1
    );
    assert!(
        junit.contains(&tested),
        "not every one of the {operations} operations was tested:\n{junit}"
    );
    eprintln!("{report}");
}
