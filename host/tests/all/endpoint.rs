//! The endpoint's contract: the seed's two cURL requests, every validation
//! error, and API keys managed while the server runs.

use serde_json::{Value, json};

use crate::support::{Receiver, Site, admin, assert_problem, invalid_cases, post, send};

const SEED_BODY: &str = r#"{
    "userId": "user123",
    "sessionId": "session123",
    "text": "Hello, I need help with my order",
    "data": {
        "exampleKey": "exampleValue"
    }
}"#;

fn echo_site(receiver: &Receiver) -> Site {
    Site::new(
        &["echo"],
        &format!(
            r#"
            [endpoints.open]
            flow = "echo"
            webhook_url = "{url}"
            webhook_user = "bot"
            webhook_password = "s3cret"

            [endpoints.locked]
            flow = "echo"
            auth = "api-key"
            webhook_url = "{url}"
            disable_sensitive_logging = true
            "#,
            url = receiver.url()
        ),
    )
}

/// The seed's cURL request, byte for byte, with curl itself.
async fn curl(url: &str, extra: &[&str]) -> (u16, Value) {
    let mut args = vec![
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        url,
        "-H",
        "Content-Type: application/json",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-d", SEED_BODY]);
    let output = tokio::process::Command::new("curl")
        .args(&args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn assert_trace_id(answer: &Value) -> String {
    let trace_id = answer["traceId"].as_str().expect("a traceId").to_owned();
    let uuid = trace_id
        .strip_prefix("endpoint-httpIncomingMessage-")
        .expect("the seed's traceId prefix");
    uuid::Uuid::parse_str(uuid).expect("a UUID after the prefix");
    trace_id
}

#[tokio::test]
async fn the_seed_curl_without_a_key_reaches_the_webhook_in_the_seed_shape() {
    let receiver = Receiver::start().await;
    let site = echo_site(&receiver);
    let host = site.start().await;

    let (status, answer) = curl(&host.url("open"), &[]).await;
    assert_eq!(status, 202, "{answer}");
    let trace_id = assert_trace_id(&answer);

    let received = receiver.wait_for(1).await;
    let expected = json!({
        "userId": "user123",
        "sessionId": "session123",
        "AIOutput": {
            "text": "Hello, I need help with my order",
            "data": { "exampleKey": "exampleValue" },
            "traceId": trace_id,
            "disableSensitiveLogging": false,
            "source": "bot"
        }
    });
    assert_eq!(received[0].body, expected);
    // The keys in the seed's order, nothing more.
    let keys: Vec<&str> = received[0]
        .raw
        .split('"')
        .skip(1)
        .step_by(2)
        .take(2)
        .collect();
    assert_eq!(keys, ["userId", "user123"]);
    assert_eq!(
        received[0].headers["authorization"],
        "Basic Ym90OnMzY3JldA==", // bot:s3cret
    );
    assert_eq!(received[0].headers["content-type"], "application/json");
}

#[tokio::test]
async fn the_seed_curl_with_a_key_needs_a_valid_key() {
    let receiver = Receiver::start().await;
    let site = echo_site(&receiver);
    let host = site.start().await;
    let url = host.url("locked");

    let created = site
        .flowhost(&["keys", "create", "locked", "--name", "ci"])
        .await;
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("fhk_"), "{key}");

    for wrong in [vec![], vec!["-H", "X-Webhook-Key: fhk_wrong"]] {
        let (status, problem) = curl(&url, &wrong).await;
        assert_eq!(status, 401, "{problem}");
        assert_eq!(problem["type"], "urn:flowhost:problem:unauthorized");
    }
    let header = format!("X-Webhook-Key: {key}");
    let (status, answer) = curl(&url, &["-H", &header]).await;
    assert_eq!(status, 202, "{answer}");
    let trace_id = assert_trace_id(&answer);

    let received = receiver.wait_for(1).await;
    assert_eq!(received.len(), 1, "refused requests deliver nothing");
    assert_eq!(received[0].body["AIOutput"]["traceId"], trace_id);
    assert_eq!(
        received[0].body["AIOutput"]["disableSensitiveLogging"],
        true
    );
    assert!(
        received[0].headers.get("authorization").is_none(),
        "no Basic auth configured"
    );
}

#[tokio::test]
async fn missing_and_wrong_keys_get_the_same_401_with_www_authenticate() {
    let receiver = Receiver::start().await;
    let site = echo_site(&receiver);
    let host = site.start().await;
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"});

    let missing = post(&host.url("locked"), &body, &[]).await;
    let wrong = post(
        &host.url("locked"),
        &body,
        &[("X-Webhook-Key", "fhk_not-a-key")],
    )
    .await;
    for response in [&missing, &wrong] {
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("X-Webhook-Key"),
            "{:?}",
            response.headers()
        );
    }
    assert_eq!(missing.text().await.unwrap(), wrong.text().await.unwrap());
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_while_the_server_runs() {
    let receiver = Receiver::start().await;
    let site = echo_site(&receiver);
    let host = site.start().await;
    let url = host.url("locked");
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"});

    let create = |name: &'static str| {
        let site = &site;
        async move {
            let out = site
                .flowhost(&["keys", "create", "locked", "--name", name])
                .await;
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        }
    };
    let old = create("old").await;
    let new = create("new").await;
    for key in [&old, &new] {
        let response = post(&url, &body, &[("X-Webhook-Key", key)]).await;
        assert_eq!(response.status(), 202, "both keys of the endpoint work");
    }

    let listed = site.flowhost(&["keys", "list", "locked"]).await;
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.matches("active").count(), 2, "{listed}");
    assert!(
        !listed.contains(&old) && !listed.contains(&new),
        "keys are never shown again"
    );

    let revoked = site.flowhost(&["keys", "revoke", "locked", "old"]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    let response = post(&url, &body, &[("X-Webhook-Key", &old)]).await;
    assert_eq!(
        response.status(),
        401,
        "a revoked key is refused at once, no restart"
    );
    let response = post(&url, &body, &[("X-Webhook-Key", &new)]).await;
    assert_eq!(response.status(), 202, "the other key still works");

    let unknown = site.flowhost(&["keys", "create", "nope"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no endpoint named"));
}

/// A guard more than a regression test: the key check looks one hash up
/// (see the store's unit tests), and must still tell keys apart among
/// thousands, each for its own endpoint.
#[tokio::test]
async fn among_thousands_of_keys_only_a_right_one_gets_in() {
    let receiver = Receiver::start().await;
    let site = echo_site(&receiver);
    let mut keys = Vec::new();
    {
        let opened = site.store().await;
        let store = opened.store();
        for i in 0..2000 {
            let endpoint = if i % 2 == 0 { "locked" } else { "open" };
            let key = flowhost::keys::generate(endpoint, Some(format!("k{i}")));
            store.add_api_key(key.record).await.unwrap();
            keys.push(key.secret);
        }
        opened.close();
    }
    let host = site.start().await;
    let url = host.url("locked");
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"});

    let wrong = format!("{}x", &keys[0][..keys[0].len() - 1]);
    for refused in [wrong.as_str(), keys[1].as_str(), "fhk_wrong"] {
        let response = post(&url, &body, &[("X-Webhook-Key", refused)]).await;
        assert_eq!(response.status(), 401, "{refused}");
    }
    for right in [&keys[0], &keys[1998]] {
        let response = post(&url, &body, &[("X-Webhook-Key", right)]).await;
        assert_eq!(response.status(), 202);
    }
}

#[tokio::test]
async fn invalid_requests_get_their_problems_over_the_wire_and_run_nothing() {
    let receiver = Receiver::start().await;
    let site = echo_site(&receiver);
    let host = site.start().await;
    let url = host.url("open");
    let client = crate::support::client();
    // The whole table runs in `in_process`; over the wire, the first row of
    // each problem type.
    let mut cases = invalid_cases();
    cases.dedup_by_key(|case| case.3);
    for case in cases {
        let response = client
            .post(&url)
            .header("content-type", case.0)
            .body(case.1.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let media_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let problem: Value = response.json().await.unwrap();
        assert_problem(&case, status, &media_type, &problem);
    }

    // Too large: flowhost answers 413 without reading the body. curl sends
    // `Expect: 100-continue` for a body this size, so it is told before it
    // sends the body, as HTTP/1.1 intends.
    let big = site.path().join("big.json");
    std::fs::write(
        &big,
        format!(
            r#"{{"userId":"u","sessionId":"s","data":{{"blob":"{}"}}}}"#,
            "z".repeat(2 << 20)
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-i",
            "-X",
            "POST",
            &url,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
        ])
        .arg(format!("@{}", big.display()))
        .output()
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("413 Payload Too Large"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("urn:flowhost:problem:too-large"),
        "{answer}"
    );

    let unknown = post(
        &format!("http://{}/endpoint/{}", host.addr, "0".repeat(64)),
        &json!({}),
        &[],
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    let wrong_method = client.get(&url).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);

    // Nothing invalid ran: the only message ever accepted is this one.
    let ok = post(
        &url,
        &json!({"userId": "u", "sessionId": "s", "text": "valid"}),
        &[],
    )
    .await;
    assert_eq!(ok.status(), 202);
    let received = receiver.wait_for(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].text(), "valid");
}

#[tokio::test]
async fn a_url_token_is_printed_whole_once_and_can_be_rotated() {
    const ADMIN: &str = "admin-token-0123456789";
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "admin_token = \"{ADMIN}\"\n\
             [endpoints.open]\nflow = \"echo\"\nwebhook_url = \"{url}\"\n\
             [endpoints.fixed]\nflow = \"echo\"\nurl_token = \"fixed-token-0123456789\"\n\
             webhook_url = \"{url}\"\n",
            url = receiver.url()
        ),
    );
    let host = site.start().await;
    let first_url = host.url("open");
    let token = first_url.rsplit('/').next().unwrap().to_owned();
    assert!(
        host.printed
            .iter()
            .any(|l| l.contains(&first_url) && l.contains("new URL")),
        "the start that generated the token prints the URL whole: {:?}",
        host.printed
    );
    send(&first_url, "s1", "one").await;
    receiver.wait_for_text("s1", |t| t == "one").await;
    drop(host);

    // Every later start prints it cut, and logs nothing of it.
    let host = site.start().await;
    let printed = host.printed.join("\n");
    assert!(!printed.contains(&token), "{printed}");
    assert!(
        printed.contains(&format!("/endpoint/{}…", &token[..4])),
        "{printed}"
    );
    assert!(!printed.contains("fixed-token-0123456789"), "{printed}");
    assert!(!host.log().contains(&token));
    let (status, listed) = admin(&host, "GET", "/admin/endpoints", ADMIN).await;
    assert_eq!(status, 200);
    let open = listed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "open")
        .unwrap()
        .clone();
    assert_eq!(open["url"], host.url("open"));

    // Rotating: the old URL is refused at once, the new one works, and it
    // is the one kept.
    let (status, rotated) = admin(&host, "POST", "/admin/endpoints/open/url-token", ADMIN).await;
    assert_eq!(status, 200, "{rotated}");
    let new_url = rotated["url"].as_str().unwrap().to_owned();
    assert_ne!(new_url, host.url("open"));
    let old = post(
        &host.url("open"),
        &json!({"userId": "u", "sessionId": "s2"}),
        &[],
    )
    .await;
    assert_eq!(old.status(), 404);
    send(&new_url, "s3", "three").await;
    receiver.wait_for_text("s3", |t| t == "three").await;

    // A token set in the configuration is the operator's to change.
    let (status, problem) = admin(&host, "POST", "/admin/endpoints/fixed/url-token", ADMIN).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("url_token"));
    drop(host);

    let listed = site.endpoint_paths(&[]).await;
    let path = &listed.iter().find(|(name, _)| name == "open").unwrap().1;
    assert!(new_url.ends_with(path.as_str()), "{new_url} {path}");
}
