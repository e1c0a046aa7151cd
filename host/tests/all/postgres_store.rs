//! The PostgreSQL store, against a real PostgreSQL: its schema made once by
//! hosts starting together, refused when newer than the host, credentials
//! shared by every host, and a database that goes away and comes back.

use std::time::{Duration, Instant};

use flowhost::store::{
    ApiKeyInfo, CredentialStore, NewApiKey, PostgresOptions, PostgresStore, StoreError,
};

use crate::support::PATIENCE;
use crate::support::postgres::TestPostgres;

fn options(url: String) -> PostgresOptions {
    PostgresOptions {
        acquire_timeout: Duration::from_secs(1),
        ..PostgresOptions::new(url)
    }
}

async fn schema_steps(url: &str) -> Vec<i32> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query("SELECT version FROM flowhost_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn key(endpoint: &str, id: &str, secret: &[u8]) -> NewApiKey {
    use sha2::Digest;
    NewApiKey {
        info: ApiKeyInfo {
            id: id.to_owned(),
            endpoint: endpoint.to_owned(),
            name: Some(format!("{id}-name")),
            prefix: "fhk_test".to_owned(),
            created_at: 1_700_000_000_000,
            revoked_at: None,
        },
        hash: sha2::Sha256::digest(secret).into(),
    }
}

#[tokio::test]
async fn hosts_starting_together_make_the_schema_once() {
    let postgres = TestPostgres::start();
    let url = postgres.database("together");
    let starts = (0..4).map(|_| {
        let options = options(url.clone());
        tokio::spawn(async move { PostgresStore::connect(&options).await })
    });
    for start in futures::future::join_all(starts).await {
        start.unwrap().expect("every host starts");
    }
    assert_eq!(schema_steps(&url).await, [1], "each step applied once");
}

#[tokio::test]
async fn a_host_older_than_the_schema_refuses_to_start() {
    let postgres = TestPostgres::start();
    let url = postgres.database("newer");
    PostgresStore::connect(&options(url.clone())).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("INSERT INTO flowhost_schema (version) VALUES (99)", &[])
        .await
        .unwrap();

    let refused = PostgresStore::connect(&options(url)).await;
    let Err(error) = refused else {
        panic!("a host older than the schema started");
    };
    let message = error.to_string();
    assert!(
        message.contains("schema version 99, newer than this flowhost"),
        "{message}"
    );
    assert!(!error.is_transient(), "retrying will not help: {message}");
}

#[tokio::test]
async fn keys_and_tokens_are_the_same_on_every_host() {
    let postgres = TestPostgres::start();
    let url = postgres.database("shared");
    let one = PostgresStore::connect(&options(url.clone())).await.unwrap();
    let two = PostgresStore::connect(&options(url)).await.unwrap();

    // The first host to store a token for an endpoint sets it for all.
    let token = one.url_token("support", "token-one".into()).await.unwrap();
    assert_eq!(token, "token-one");
    let token = two.url_token("support", "token-two".into()).await.unwrap();
    assert_eq!(token, "token-one", "the second host serves the same URL");
    two.replace_url_token("support", "rotated".into())
        .await
        .unwrap();
    let token = one.url_token("support", "unused".into()).await.unwrap();
    assert_eq!(token, "rotated");

    // A key added through one host is active at the other, and revoked
    // through the other, refused at both.
    let secret = b"fhk_test_secret";
    let hash = key("support", "k1", secret).hash;
    one.add_api_key(key("support", "k1", secret)).await.unwrap();
    assert!(two.is_active_key("support", hash).await.unwrap());
    assert!(
        !two.is_active_key("echo", hash).await.unwrap(),
        "a key opens its own endpoint only"
    );
    assert!(two.revoke_api_key("support", "k1-name").await.unwrap());
    assert!(!one.is_active_key("support", hash).await.unwrap());
    assert!(!two.is_active_key("support", hash).await.unwrap());
    assert!(
        !one.revoke_api_key("support", "k1").await.unwrap(),
        "revoked once"
    );

    let listed = one.api_keys(Some("support")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "k1");
    assert!(listed[0].revoked_at.is_some());
    assert!(one.api_keys(Some("echo")).await.unwrap().is_empty());
    assert_eq!(two.api_keys(None).await.unwrap(), listed);
}

#[tokio::test]
async fn a_database_that_goes_away_is_a_passing_failure_and_is_found_again() {
    let postgres = TestPostgres::start();
    let url = postgres.database("restarted");
    let store = PostgresStore::connect(&options(url)).await.unwrap();
    let hash = key("support", "k1", b"secret").hash;
    store
        .add_api_key(key("support", "k1", b"secret"))
        .await
        .unwrap();

    postgres.stop();
    let error: StoreError = store
        .is_active_key("support", hash)
        .await
        .expect_err("the database is down");
    assert!(error.is_transient(), "{error}");

    postgres.start_again();
    // The pool drops its dead connections and makes new ones by itself; a
    // call may still meet a connection that died with the server, and
    // that failure, too, must be a passing one.
    let started = Instant::now();
    loop {
        match store.is_active_key("support", hash).await {
            Ok(active) => {
                assert!(active, "the key survived the restart");
                break;
            }
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(started.elapsed() < PATIENCE, "not back: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
