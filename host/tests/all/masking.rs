//! `mask_logging`: what a user sent, and the session it came in, never
//! reach flowhost's log in clear; the receiver is told nothing (unlike
//! `disable_sensitive_logging`, which is copied into every output).

use serde_json::json;

use crate::support::{Receiver, Site, endpoint, post};

#[tokio::test]
async fn a_masked_endpoint_logs_no_session_id_and_no_content() {
    const SESSION: &str = "+4915112345678";
    const USER: &str = "user-secret-42";
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["faulty"],
        &format!(
            "{}mask_logging = true\n{}",
            endpoint("masked", "hostile", &receiver),
            endpoint("plain", "faulty", &receiver)
        ),
    );
    site.add_flow("hostile", "hostile", None);
    let host = site.start().await;

    // The hostile flow writes what it was told to its log, stdout and
    // stderr, then panics with it.
    let body = json!({"userId": USER, "sessionId": SESSION, "text": "tell CARD-4111-1111"});
    assert_eq!(post(&host.url("masked"), &body, &[]).await.status(), 202);
    let failed = host.wait_for_log(&["message failed", "session=~"]).await;
    assert!(failed.contains("withheld"), "{failed}");
    // A message that runs to the end and is delivered.
    let hello = json!({"userId": USER, "sessionId": SESSION, "text": "hello"});
    assert_eq!(post(&host.url("masked"), &hello, &[]).await.status(), 202);
    let delivered = receiver.wait_for(1).await;
    assert_eq!(
        delivered[0].body["AIOutput"]["disableSensitiveLogging"],
        false
    );
    assert_eq!(
        delivered[0].body["sessionId"], SESSION,
        "the receiver gets it all"
    );
    host.wait_for_log(&["message handled", "session=~"]).await;
    // Beside it, an endpoint without: its session is logged as it is.
    let plain = json!({"userId": USER, "sessionId": "plain-session", "text": "hi"});
    assert_eq!(post(&host.url("plain"), &plain, &[]).await.status(), 202);
    host.wait_for_log(&["message handled", "session=plain-session"])
        .await;

    let log = host.log();
    for secret in [SESSION, "4915112345678", USER, "CARD-4111"] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}
