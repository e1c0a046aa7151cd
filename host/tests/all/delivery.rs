//! Delivery to a receiver that fails: retried with backoff until it
//! answers 2xx, a session's outputs never overtaking each other.

use std::time::Duration;

use serde_json::json;

use crate::support::{Receiver, Site, admin, endpoint, post, send};

#[tokio::test]
async fn failed_posts_are_retried_and_a_session_stays_in_order() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &format!(
            r#"
            [delivery]
            retry_schedule = ["50ms", "100ms", "100ms", "100ms"]

            [endpoints.count]
            flow = "faulty"
            webhook_url = "{}"
            "#,
            receiver.url()
        ),
    );
    let host = site.start().await;
    // The first output fails three times before it gets through.
    receiver.answer_with(&[500, 503, 502]);
    for text in ["a", "b", "c"] {
        let body = json!({"userId": "u", "sessionId": "s", "text": text});
        assert_eq!(post(&host.url("count"), &body, &[]).await.status(), 202);
    }

    let received = receiver.wait_for(3).await;
    let texts: Vec<&str> = received.iter().map(|r| r.text()).collect();
    assert_eq!(texts, ["1: a", "2: b", "3: c"], "b and c waited behind a");
    assert_eq!(
        receiver.attempts().len(),
        6,
        "three failures, then three deliveries"
    );
    let ids: Vec<_> = receiver
        .attempts()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(
        ids[0], ids[3],
        "every attempt of an output carries the same webhook-id"
    );
    host.wait_for_log(&["delivery failed; will retry", "attempts=3"])
        .await;
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_until_it_listens() {
    // Reserve a port, then free it: nothing listens there for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            [delivery]
            retry_schedule = ["100ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]

            [endpoints.echo]
            flow = "echo"
            webhook_url = "http://127.0.0.1:{port}/hook"
            "#
        ),
    );
    let host = site.start().await;
    let body = json!({"userId": "u", "sessionId": "s", "text": "hold on"});
    assert_eq!(post(&host.url("echo"), &body, &[]).await.status(), 202);
    host.wait_for_log(&["delivery failed; will retry", "could not connect"])
        .await;

    let receiver = Receiver::start_on(port).await;
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].text(), "hold on");
}

fn endpoint_config(receiver: &Receiver, extra_endpoint: &str, extra_top: &str) -> String {
    format!(
        r#"
        admin_token = "admin-token-for-tests"
        {extra_top}

        [endpoints.count]
        flow = "faulty"
        webhook_url = "{}"
        {extra_endpoint}
        "#,
        receiver.url()
    )
}

const ADMIN: &str = "admin-token-for-tests";

#[tokio::test]
async fn retry_after_is_honoured_and_redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &endpoint_config(
            &receiver,
            "",
            "[delivery]\nretry_schedule = [\"50ms\", \"50ms\", \"50ms\"]",
        ),
    );
    let host = site.start().await;
    receiver.answer_with_headers(429, &[("retry-after", "1")]);
    receiver.answer_with_headers(302, &[("location", &elsewhere.url())]);
    send(&host.url("count"), "s", "hello").await;

    let attempts = receiver.wait_for_attempts(3).await;
    assert_eq!(receiver.wait_for(1).await[0].text(), "1: hello");
    let waited = attempts[1].at - attempts[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 was honoured over a 50 ms schedule: {waited:?}"
    );
    assert!(
        attempts[2].at - attempts[1].at < Duration::from_millis(900),
        "the 302 was retried on the schedule"
    );
    assert!(
        elsewhere.attempts().is_empty(),
        "the redirect was not followed"
    );
    host.wait_for_log(&["delivery failed; will retry", "302"])
        .await;
}

#[tokio::test]
async fn gone_stops_the_endpoint_until_an_operator_resumes_it() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint_config(&receiver, "", ""));
    let host = site.start().await;
    receiver.answer_with(&[410]);
    send(&host.url("count"), "s1", "first").await;
    host.wait_for_log(&["410 Gone", "STOPPED"]).await;
    send(&host.url("count"), "s1", "second").await;
    send(&host.url("count"), "s2", "other").await;

    // Nothing more is tried while stopped; everything is kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.attempts().len(), 1);
    let (status, listing) = admin(&host, "GET", "/admin/endpoints/count/deliveries", ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(
        listing["stopped"]["reason"],
        "the receiver answered 410 Gone"
    );
    let deliveries = listing["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|d| d["status"] == "pending"),
        "{listing}"
    );

    // It stays stopped across a restart.
    assert!(host.terminate().await.success());
    let host = site.start().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.attempts().len(), 1);

    let (status, resumed) = admin(&host, "POST", "/admin/endpoints/count/resume", ADMIN).await;
    assert_eq!((status, resumed["wasStopped"].as_bool()), (200, Some(true)));
    let received = receiver.wait_for(3).await;
    let texts = |session: &str| -> Vec<String> {
        received
            .iter()
            .filter(|r| r.session() == session)
            .map(|r| r.text().to_owned())
            .collect()
    };
    assert_eq!(texts("s1"), ["1: first", "2: second"]);
    assert_eq!(texts("s2"), ["1: other"]);
}

#[tokio::test]
async fn dead_letters_are_kept_with_their_attempts_and_can_be_redelivered() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &endpoint_config(
            &receiver,
            "",
            "[delivery]\nretry_schedule = [\"20ms\", \"20ms\"]",
        ),
    );
    let host = site.start().await;
    receiver.answer_with(&[500, 502, 500]);
    send(&host.url("count"), "s", "doomed").await;
    host.wait_for_log(&["dead letter", "attempts=3"]).await;

    let (status, listing) = admin(&host, "GET", "/admin/endpoints/count/dead-letters", ADMIN).await;
    assert_eq!(status, 200);
    let dead = &listing["deliveries"][0];
    assert_eq!(dead["status"], "dead");
    let statuses: Vec<_> = dead["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, [500, 502, 500]);
    let id = dead["id"].as_i64().unwrap();

    let (status, _) = admin(
        &host,
        "POST",
        &format!("/admin/endpoints/count/deliveries/{id}/redeliver"),
        ADMIN,
    )
    .await;
    assert_eq!(status, 202);
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].text(), "1: doomed");
    assert_eq!(
        received[0].headers["webhook-id"],
        dead["webhook_id"].as_str().unwrap()
    );
    let (_, listing) = admin(&host, "GET", "/admin/endpoints/count/dead-letters", ADMIN).await;
    assert!(listing["deliveries"].as_array().unwrap().is_empty());

    // Redelivering all the dead letters of an endpoint.
    receiver.answer_with(&[500, 500, 500, 500, 500, 500]);
    send(&host.url("count"), "s", "a").await;
    send(&host.url("count"), "t", "b").await;
    // Both dead, after the first one (outputs are numbered as their turns
    // commit, which on PostgreSQL may be t's first).
    host.wait_for_logs(3, &["the output is a dead letter"])
        .await;
    let (status, queued) = admin(
        &host,
        "POST",
        "/admin/endpoints/count/dead-letters/redeliver",
        ADMIN,
    )
    .await;
    assert_eq!((status, queued["queued"].as_u64()), (202, Some(2)));
    assert_eq!(receiver.wait_for(3).await.len(), 3);
}

#[tokio::test]
async fn a_restart_keeps_the_retry_schedule() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &endpoint_config(&receiver, "", "[delivery]\nretry_schedule = [\"10m\"]"),
    );
    let host = site.start().await;
    receiver.answer_with(&[500]);
    send(&host.url("count"), "s", "later").await;
    host.wait_for_log(&["delivery failed; will retry"]).await;
    assert!(host.terminate().await.success());

    let host = site.start().await;
    // Delivery runs after the restart (a new output gets through) while the
    // failed one waits for its retry, 10 minutes (±20 %) after it failed.
    send(&host.url("count"), "t", "now").await;
    receiver.wait_for_text("t", |text| text == "1: now").await;
    let texts: Vec<String> = receiver
        .attempts()
        .iter()
        .map(|r| r.text().to_owned())
        .collect();
    assert_eq!(
        texts,
        ["1: later", "1: now"],
        "the retry was not sent early"
    );
    let (status, listing) = admin(
        &host,
        "GET",
        "/admin/endpoints/count/deliveries?status=pending",
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    // (The new output may be listed as pending too, until its delivery is
    // recorded.)
    let waiting = listing["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["session_id"] == "s")
        .unwrap();
    assert_eq!(waiting["attemptCount"], 1);
    let due = waiting["next_attempt_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(due > now + 5 * 60_000, "due in {} ms", due - now);
}

#[tokio::test]
async fn listings_page_with_a_cursor_and_leave_bodies_out_unless_asked() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint_config(&receiver, "", ""));
    let host = site.start().await;
    for text in ["a", "b", "c"] {
        send(&host.url("count"), "s", text).await;
    }
    receiver.wait_for(3).await;
    let ids = |listing: &serde_json::Value| -> Vec<i64> {
        listing["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    let path = "/admin/endpoints/count/deliveries";

    let (status, first) = admin(&host, "GET", &format!("{path}?limit=2"), ADMIN).await;
    assert_eq!(status, 200);
    let newest = ids(&first);
    assert_eq!(newest.len(), 2);
    assert!(newest[0] > newest[1], "newest first");
    assert!(
        first["deliveries"][0].get("body").is_none(),
        "no bodies unless asked: {first}"
    );
    let cursor = first["nextBeforeId"].as_i64().unwrap();
    assert_eq!(cursor, newest[1]);

    let (status, rest) = admin(
        &host,
        "GET",
        &format!("{path}?limit=2&before_id={cursor}&body=true"),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&rest).len(), 1);
    assert!(ids(&rest)[0] < cursor);
    let body: serde_json::Value =
        serde_json::from_str(rest["deliveries"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["AIOutput"]["text"], "1: a");
    assert!(rest["nextBeforeId"].is_null(), "the last page: {rest}");

    // An unknown parameter is refused, not silently ignored.
    let (status, problem) = admin(&host, "GET", &format!("{path}?offset=2"), ADMIN).await;
    assert_eq!(status, 400);
    assert_eq!(problem["type"], "urn:flowhost:problem:invalid-parameter");
    assert!(
        problem["detail"].as_str().unwrap().contains("offset"),
        "{problem}"
    );
    let (status, problem) = admin(
        &host,
        "POST",
        "/admin/endpoints/count/deliveries/not-a-number/redeliver",
        ADMIN,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(problem["type"], "urn:flowhost:problem:invalid-parameter");
}

#[tokio::test]
async fn receivers_bodies_are_kept_for_the_admin_api_and_not_logged() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &endpoint_config(&receiver, "", "[delivery]\nretry_schedule = [\"20ms\"]"),
    );
    let host = site.start().await;
    let echoed = "rejected: card 4111111111111111 of sessionId s";
    receiver.answer_with_body(500, echoed);
    receiver.answer_with_body(422, echoed);
    send(&host.url("count"), "s", "pay").await;
    host.wait_for_log(&["dead letter", "422"]).await;
    assert!(
        !host.log().contains("4111111111111111"),
        "the receiver's body is not logged:\n{}",
        host.log()
    );
    // The log says how long the body was.
    host.wait_for_log(&["delivery failed; will retry", "500", "body_bytes=46"])
        .await;
    host.wait_for_log(&["dead letter", "422", "body_bytes=46"])
        .await;

    let (status, listing) = admin(&host, "GET", "/admin/endpoints/count/dead-letters", ADMIN).await;
    assert_eq!(status, 200);
    let errors: Vec<&str> = listing["deliveries"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        [
            format!("the receiver answered 500 Internal Server Error: {echoed}"),
            format!("the receiver answered 422 Unprocessable Entity: {echoed}"),
        ]
    );
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_exists_only_with_one() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint_config(&receiver, "", ""));
    let host = site.start().await;
    let (status, problem) = admin(&host, "GET", "/admin/flows", "wrong").await;
    assert_eq!(status, 401);
    assert_eq!(problem["type"], "urn:flowhost:problem:unauthorized");
    let (status, flows) = admin(&host, "GET", "/admin/flows", ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(flows["flows"][0]["name"], "faulty");
    let (status, _) = admin(&host, "GET", "/admin/endpoints/nope/deliveries", ADMIN).await;
    assert_eq!(status, 404);

    let without = Site::new(&["faulty"], &endpoint("count", "faulty", &receiver));
    let host = without.start().await;
    let (status, _) = admin(&host, "GET", "/admin/flows", ADMIN).await;
    assert_eq!(status, 404, "no admin_token, no admin API");
    let response = crate::support::client()
        .post(format!("http://{}/admin/flows", host.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        !response.headers().contains_key("allow"),
        "Allow tells there is a route"
    );
}

#[tokio::test]
async fn nothing_under_admin_answers_without_the_token() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["faulty"], &endpoint_config(&receiver, "", ""));
    let host = site.start().await;
    let client = crate::support::client();
    let base = format!("http://{}", host.addr);

    // Wrong methods and unknown paths: 401 without the token, so that a
    // caller without it learns nothing of the routes.
    for (method, path) in [
        ("PUT", "/admin/flows"),
        ("DELETE", "/admin/endpoints/count/resume"),
        ("GET", "/admin/endpoints/count/deliveries/1/redeliver"),
        ("GET", "/admin/no-such-route"),
    ] {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(response.headers().contains_key("www-authenticate"));
        assert!(
            !response.headers().contains_key("allow"),
            "{method} {path}: Allow names the route's methods"
        );

        // With the token, the honest answer.
        let response = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let expected = if path.ends_with("no-such-route") {
            404
        } else {
            405
        };
        assert_eq!(
            response.status(),
            expected,
            "{method} {path} with the token"
        );
    }

    // The scheme is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = client
            .get(format!("{base}/admin/flows"))
            .header("authorization", format!("{scheme} {ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let response = client
        .get(format!("{base}/admin/flows"))
        .header("authorization", format!("Basic {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn unordered_endpoints_let_later_outputs_pass_a_failing_one() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &endpoint_config(
            &receiver,
            "delivery_order = \"none\"",
            "[delivery]\nretry_schedule = [\"1s\"]",
        ),
    );
    let host = site.start().await;
    receiver.answer_with(&[500]);
    send(&host.url("count"), "s", "first").await;
    receiver.wait_for_attempts(1).await;
    send(&host.url("count"), "s", "second").await;
    let received = receiver.wait_for(2).await;
    let texts: Vec<_> = received.iter().map(|r| r.text()).collect();
    assert_eq!(
        texts,
        ["2: second", "1: first"],
        "the retry of the first came after the second"
    );
}

#[tokio::test]
async fn signed_deliveries_verify_with_the_standard_webhooks_library() {
    let receiver = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let site = Site::new(
        &["faulty"],
        &endpoint_config(
            &receiver,
            &format!("webhook_secret = \"{secret}\""),
            "[delivery]\nretry_schedule = [\"20ms\"]",
        ),
    );
    let host = site.start().await;
    receiver.answer_with(&[503]);
    send(&host.url("count"), "s", "sign me").await;
    let attempts = receiver.wait_for_attempts(2).await;
    assert_eq!(
        attempts[0].headers["webhook-id"],
        attempts[1].headers["webhook-id"]
    );

    // The Standard Webhooks reference library verifies what was received.
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    let verify = |request: &crate::support::Received, body: &str| {
        webhook.verify(body.as_bytes(), &request.headers)
    };
    for attempt in &attempts {
        verify(attempt, &attempt.raw).expect("a delivery verifies");
        assert!(
            attempt.headers["webhook-signature"]
                .to_str()
                .unwrap()
                .starts_with("v1,")
        );
    }
    let tampered = attempts[1].raw.replace("sign me", "sign you");
    assert!(
        verify(&attempts[1], &tampered).is_err(),
        "a changed body does not"
    );
}

#[tokio::test]
async fn private_webhooks_are_refused_unless_allowed() {
    let receiver = Receiver::start().await;
    let mut site = Site::new(
        &["echo"],
        &format!(
            "[endpoints.echo]\nflow = \"echo\"\nwebhook_url = \"{}\"\n",
            receiver.url()
        ),
    );
    site.private_webhooks = false;
    let out = site.flowhost(&["serve"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("endpoints.echo.webhook_url") && stderr.contains("loopback"),
        "{stderr}"
    );

    // The same site with private webhooks allowed delivers to loopback.
    site.private_webhooks = true;
    let host = site.start().await;
    send(&host.url("echo"), "s", "allowed").await;
    assert_eq!(receiver.wait_for(1).await[0].text(), "allowed");
}
