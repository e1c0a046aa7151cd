//! Erasing a user: their profile, the contexts of their sessions, their
//! messages and their outputs (pending ones too) go, through the admin API
//! or `flowhost users erase`, and nothing of them is left in the store's
//! files (SQLite), or in any row (PostgreSQL, whose files keep dead rows
//! until it vacuums). Another user's data stays.

use std::path::Path;

use serde_json::json;

use crate::support::{Receiver, Site, admin, endpoint, send};

const TOKEN: &str = "erasure-admin-token";
const ADA: &str = "ada-7f3e91";
const BOB: &str = "bob-5c1d42";

/// Whether any file under `dir` holds `needle`, byte for byte.
fn any_file_holds(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    })
}

/// Whether the store still holds `needle`: in the SQLite store's files, or
/// in any row of any table of the PostgreSQL store.
fn store_holds(site: &Site, needle: &str) -> bool {
    match &site.postgres {
        None => any_file_holds(&site.path().join("data"), needle),
        Some(postgres) => {
            let tables = postgres.psql(
                "flowhost",
                "SELECT string_agg(tablename, ' ') FROM pg_tables WHERE schemaname = 'public'",
            );
            let tables = tables.lines().nth(2).unwrap().trim().to_owned();
            tables.split_whitespace().any(|table| {
                let found = postgres.psql(
                    "flowhost",
                    &format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%{needle}%'"),
                );
                found.lines().nth(2).unwrap().trim() != "0"
            })
        }
    }
}

#[tokio::test]
async fn an_erased_user_is_gone_from_the_store_and_others_stay() {
    let receiver = Receiver::start().await;
    let config = format!(
        "admin_token = \"{TOKEN}\"\ndelivery.retry_schedule = [\"1h\"]\n{}",
        endpoint("shop", "greeter", &receiver)
    );
    let site = Site::new(&["greeter"], &config);
    let host = site.start().await;
    let url = host.url("shop");

    // Ada's first output fails once, and waits an hour for its retry: it
    // and the one after it stay pending.
    receiver.answer_with(&[500]);
    let ada = |text: &str| json!({"userId": ADA, "sessionId": "ada-session", "text": text});
    let post = |body: serde_json::Value| {
        let url = url.clone();
        async move {
            let response = crate::support::post(&url, &body, &[]).await;
            assert_eq!(response.status(), 202);
        }
    };
    post(ada("my name is Ada Quixotica")).await;
    receiver.wait_for_attempts(1).await;
    post(ada("I live at 12 Zebra Lane")).await;
    let bob = json!({"userId": BOB, "sessionId": "bob-session", "text": "call me Roberto Bobbins"});
    post(bob).await;
    receiver
        .wait_for_text("bob-session", |t| t.contains("Roberto"))
        .await;
    // Ada's second message has run (its output waits behind the first).
    host.wait_for_logs(2, &["message handled", "ada-session"])
        .await;

    let path = format!("/admin/endpoints/shop/users/{ADA}");
    let (status, answer) = admin(&host, "DELETE", &path, TOKEN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({
            "endpoint": "shop",
            "userId": ADA,
            "erased": {"profiles": 1, "sessions": 1, "messages": 2, "outputs": 2},
        })
    );
    // The user's id is not logged with the erasure.
    let erased = host.wait_for_log(&["a user was erased"]).await;
    assert!(!erased.contains(ADA), "{erased}");

    // Ada, back: a new user, with nothing remembered.
    send(&url, "ada-session", "hello").await;
    receiver
        .wait_for_text("ada-session", |t| t == "Hello! What's your name?")
        .await;
    host.terminate().await;

    for gone in [ADA, "Quixotica", "Zebra Lane"] {
        assert!(!store_holds(&site, gone), "{gone:?} is still in the store");
    }
    assert!(
        store_holds(&site, "Roberto Bobbins"),
        "the search finds what is there"
    );

    // The same from the command line, with the host stopped.
    let erased = site.flowhost(&["users", "erase", "shop", BOB]).await;
    assert!(erased.status.success(), "{erased:?}");
    assert_eq!(
        String::from_utf8_lossy(&erased.stdout).trim(),
        "erased from shop: 1 profile, 1 sessions, 1 messages, 1 outputs"
    );
    for gone in [BOB, "Roberto Bobbins"] {
        assert!(!store_holds(&site, gone), "{gone:?} is still in the store");
    }
}
