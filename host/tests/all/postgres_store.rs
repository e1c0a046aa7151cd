//! The PostgreSQL store, against a real PostgreSQL, with several store
//! instances as the hosts of one deployment: its schema made once by hosts
//! starting together, refused when newer than the host, credentials shared
//! by every host, a database that goes away and comes back, and sessions:
//! numbered across hosts, claimed by one host at a time, fenced.

use std::time::{Duration, Instant};

use flowhost::store::{
    Accepted, ApiKeyInfo, Attempt, AttemptOutcome, Claim, ClaimedMessage, CommittedTurn,
    CredentialStore, IdempotencyKey, InboxMessage, MessageKind, NewApiKey, NewOutput, OutputQuery,
    OutputStatus, PendingOutput, PostgresOptions, PostgresStore, ProfileChange, SessionKey,
    StoreError, TurnOutcome, TurnRecord, Wake,
};

use crate::support::PATIENCE;
use crate::support::postgres::TestPostgres;

fn options(url: String) -> PostgresOptions {
    PostgresOptions {
        acquire_timeout: Duration::from_secs(1),
        ..PostgresOptions::new(url)
    }
}

/// A plain connection to the database, as an operator's `psql` would be.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn schema_steps(url: &str) -> Vec<i32> {
    client(url)
        .await
        .query("SELECT version FROM flowhost_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A cluster with a fresh database, and two hosts' stores on it.
async fn two_hosts(database: &str) -> (TestPostgres, String, PostgresStore, PostgresStore) {
    let postgres = TestPostgres::start();
    let url = postgres.database(database);
    let one = PostgresStore::connect(&options(url.clone())).await.unwrap();
    let two = PostgresStore::connect(&options(url.clone())).await.unwrap();
    (postgres, url, one, two)
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
    assert_eq!(
        schema_steps(&url).await,
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
        "each step applied once"
    );
}

#[tokio::test]
async fn a_host_older_than_the_schema_refuses_to_start() {
    let postgres = TestPostgres::start();
    let url = postgres.database("newer");
    PostgresStore::connect(&options(url.clone())).await.unwrap();
    client(&url)
        .await
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
    let (_postgres, _, one, two) = two_hosts("shared").await;

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

/// The `n`th message of a session, as a caller would send it.
fn message(session: &str, n: usize) -> InboxMessage {
    InboxMessage {
        id: 0,
        session: SessionKey {
            endpoint: "support".to_owned(),
            session_id: session.to_owned(),
        },
        user_id: "u1".to_owned(),
        text: Some(n.to_string()),
        data: None,
        trace_id: format!("trace-{session}-{n}"),
        received_at: 0,
        trace_parent: None,
        kind: MessageKind::User,
    }
}

fn endpoints() -> Vec<String> {
    vec!["support".to_owned()]
}

#[tokio::test]
async fn messages_sent_to_several_hosts_are_numbered_in_one_order_per_session() {
    let postgres = TestPostgres::start();
    let url = postgres.database("numbered");
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(std::sync::Arc::new(
            PostgresStore::connect(&options(url.clone())).await.unwrap(),
        ));
    }
    // Three callers, one per host, each sending 20 messages of one session
    // one after the other, all three at once.
    let callers = hosts.iter().enumerate().map(|(caller, host)| {
        let host = std::sync::Arc::clone(host);
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..20 {
                let (_, seq) = host
                    .accept_message(&message("s1", caller * 100 + n))
                    .await
                    .unwrap();
                seqs.push(seq);
            }
            seqs
        })
    });
    let mut all = Vec::new();
    for seqs in futures::future::join_all(callers).await {
        let seqs = seqs.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a caller's messages keep the order it sent them in: {seqs:?}"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=60).collect::<Vec<i64>>(),
        "numbered 1 to 60, no gap, no repeat"
    );
}

#[tokio::test]
async fn one_idempotency_key_sent_to_several_hosts_at_once_stores_one_message() {
    let postgres = TestPostgres::start();
    let url = postgres.database("idempotent");
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(std::sync::Arc::new(
            PostgresStore::connect(&options(url.clone())).await.unwrap(),
        ));
    }
    let key = |fingerprint: &str| IdempotencyKey {
        key: "retry-1".to_owned(),
        fingerprint: fingerprint.to_owned(),
        window: Duration::from_secs(60),
    };
    // Ten tries of one request, spread over the hosts, all at once: as a
    // caller retrying through a load balancer.
    let tries = (0..10).map(|n| {
        let host = std::sync::Arc::clone(&hosts[n % hosts.len()]);
        let message = message("s1", n);
        tokio::spawn(async move { host.accept_message_once(&message, &key("a")).await })
    });
    let mut stored = Vec::new();
    let mut repeated = Vec::new();
    for answer in futures::future::join_all(tries).await {
        match answer.unwrap().unwrap() {
            Ok((id, _)) => stored.push(id),
            Err(Accepted::Repeated {
                trace_id,
                message_id,
            }) => repeated.push((trace_id, message_id)),
            Err(other) => panic!("the same request was refused: {other:?}"),
        }
    }
    assert_eq!(stored.len(), 1, "one message stored: {stored:?}");
    assert_eq!(repeated.len(), 9);
    let row = client(&url)
        .await
        .query_one("SELECT trace_id, id FROM messages", &[])
        .await
        .unwrap();
    let first: (String, i64) = (row.get(0), row.get(1));
    assert!(
        repeated.iter().all(|repeat| *repeat == first),
        "every repeat answers with the first's trace id and message"
    );
    // The key with another request is refused; nothing more is stored.
    assert_eq!(
        hosts[0]
            .accept_message_once(&message("s1", 99), &key("b"))
            .await
            .unwrap(),
        Err(Accepted::KeyReused)
    );
    let count: i64 = client(&url)
        .await
        .query_one("SELECT count(*) FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn hosts_claiming_together_take_different_sessions() {
    let (_postgres, _, one, two) = two_hosts("claims").await;
    for session in 0..40 {
        one.accept_message(&message(&format!("s{session}"), 0))
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    one.renew_host("one", lease).await.unwrap();
    two.renew_host("two", lease).await.unwrap();

    let endpoints = endpoints();
    let (a, b) = tokio::join!(
        one.claim_sessions("one", &endpoints, 40),
        two.claim_sessions("two", &endpoints, 40)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut sessions: Vec<_> = a.iter().chain(&b).map(|c| c.session.clone()).collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(
        sessions.len(),
        a.len() + b.len(),
        "no session claimed twice"
    );
    assert_eq!(sessions.len(), 40, "every waiting session claimed");
    assert!(
        one.claim_sessions("one", &endpoints, 40)
            .await
            .unwrap()
            .is_empty()
            && two
                .claim_sessions("two", &endpoints, 40)
                .await
                .unwrap()
                .is_empty(),
        "a session a live host runs is not claimed again"
    );
    assert!(
        one.claim_sessions("one", &["echo".to_owned()], 40)
            .await
            .unwrap()
            .is_empty(),
        "a host claims sessions of the endpoints it serves only"
    );
}

#[tokio::test]
async fn a_host_that_paused_past_its_lease_commits_nothing_after_another_took_over() {
    let (_postgres, url, paused, other) = two_hosts("fenced").await;
    let endpoints = endpoints();
    let lease = Duration::from_millis(500);
    for n in 1..=2 {
        paused.accept_message(&message("s1", n)).await.unwrap();
    }
    paused.renew_host("paused", lease).await.unwrap();
    other
        .renew_host("other", Duration::from_secs(30))
        .await
        .unwrap();
    let [claim] = <[Claim; 1]>::try_from(
        paused
            .claim_sessions("paused", &endpoints, 10)
            .await
            .unwrap(),
    )
    .unwrap();
    let first = paused
        .next_message("paused", &claim)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.seq, first.message.text.as_deref()), (1, Some("1")));
    assert!(
        other
            .claim_sessions("other", &endpoints, 10)
            .await
            .unwrap()
            .is_empty(),
        "held while the lease lasts"
    );

    // The host pauses past its lease (no renewal); another takes over.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let [taken] =
        <[Claim; 1]>::try_from(other.claim_sessions("other", &endpoints, 10).await.unwrap())
            .unwrap();
    assert_eq!(taken.session, claim.session);
    assert!(taken.epoch > claim.epoch);

    // The paused host wakes and tries to go on with the turn it was
    // running: say something, then finish it.
    let said = paused
        .commit_said(
            "paused",
            &claim,
            first.message.id,
            outputs(&first, &["stale"]),
        )
        .await;
    assert!(
        matches!(said, Err(StoreError::Fenced(ref key)) if *key == claim.session),
        "{said:?}"
    );
    let stale = paused
        .complete_turn(
            "paused",
            &claim,
            completed(&first, r#"{"by":"paused"}"#, &["stale"]),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");
    // Renewing its lease does not give the session back.
    paused.renew_host("paused", lease).await.unwrap();
    let again = paused
        .complete_turn(
            "paused",
            &claim,
            completed(&first, r#"{"by":"paused"}"#, &[]),
        )
        .await;
    assert!(matches!(again, Err(StoreError::Fenced(_))), "{again:?}");
    assert!(!paused.release("paused", &claim).await.unwrap());

    // The new owner runs the message again, and the next.
    let rerun = other.next_message("other", &taken).await.unwrap().unwrap();
    assert_eq!(rerun, first, "the unfinished message runs again, once");
    let CommittedTurn::Done(sent) = other
        .complete_turn(
            "other",
            &taken,
            completed(&rerun, r#"{"turns":1}"#, &["one"]),
        )
        .await
        .unwrap()
    else {
        panic!("the turn failed");
    };
    assert_eq!(bodies(&sent), ["one"]);
    assert_eq!(
        other
            .complete_turn(
                "other",
                &taken,
                completed(&rerun, r#"{"turns":9}"#, &["again"])
            )
            .await
            .unwrap(),
        CommittedTurn::Done(Vec::new()),
        "a message is recorded once: a retry keeps the first record and sends nothing"
    );
    assert!(
        !other.release("other", &taken).await.unwrap(),
        "not released with a message left"
    );
    let second = other.next_message("other", &taken).await.unwrap().unwrap();
    assert_eq!(second.seq, 2);
    other
        .complete_turn(
            "other",
            &taken,
            completed(&second, r#"{"turns":2}"#, &["two"]),
        )
        .await
        .unwrap();
    assert!(other.next_message("other", &taken).await.unwrap().is_none());
    assert!(
        !other.release("other", &taken).await.unwrap(),
        "held while its outputs wait to be sent"
    );
    let state = other.session_state(&taken.session, "u1").await.unwrap();
    assert_eq!(state.context, r#"{"turns":2}"#);
    assert_eq!(
        stored_outputs(&url).await,
        ["one", "two"],
        "nothing of the paused host's turn was kept"
    );
}

#[tokio::test]
async fn erasing_a_user_mid_turn_keeps_nothing_of_theirs_and_the_session_runs_on() {
    use flowhost::store::Store;
    let (_postgres, url, host, _) = two_hosts("erase").await;
    let endpoints = endpoints();
    // One session, two users, taking turns: Ada's, Bob's, Ada's, Bob's.
    for (n, user) in ["ada", "bob", "ada", "bob"].iter().enumerate() {
        let mut message = message("s1", n);
        message.user_id = (*user).to_owned();
        host.accept_message(&message).await.unwrap();
    }
    host.renew_host("host", Duration::from_secs(30))
        .await
        .unwrap();
    let [claim] =
        <[Claim; 1]>::try_from(host.claim_sessions("host", &endpoints, 10).await.unwrap()).unwrap();
    let running = host.next_message("host", &claim).await.unwrap().unwrap();
    assert_eq!(running.message.user_id, "ada");

    let erased = host.erase_user("support", "ada").await.unwrap();
    assert_eq!((erased.messages, erased.sessions), (2, 1));

    // Ada's turn ends after the erasure: nothing of it is kept.
    let ended = host
        .complete_turn(
            "host",
            &claim,
            completed(&running, r#"{"ada":1}"#, &["to ada"]),
        )
        .await
        .unwrap();
    assert_eq!(ended, CommittedTurn::Done(Vec::new()));
    assert!(
        host.commit_said(
            "host",
            &claim,
            running.message.id,
            outputs(&running, &["x"])
        )
        .await
        .unwrap()
        .is_empty()
    );
    // Bob's messages run next, in order, and the session is then done.
    let mut ran = Vec::new();
    while let Some(next) = host.next_message("host", &claim).await.unwrap() {
        ran.push(next.message.text.clone().unwrap());
        let context = format!(r#"{{"bob":{}}}"#, ran.len());
        host.complete_turn("host", &claim, completed(&next, &context, &["to bob"]))
            .await
            .unwrap();
    }
    assert_eq!(ran, ["1", "3"]);
    assert_eq!(stored_outputs(&url).await, ["to bob", "to bob"]);
    let state = host.session_state(&claim.session, "bob").await.unwrap();
    assert_eq!(state.context, r#"{"bob":2}"#);
}

#[tokio::test]
async fn a_turn_keeps_what_it_said_once_and_a_failed_turn_changes_nothing_else() {
    let (_postgres, url, host, _) = two_hosts("turns").await;
    let endpoints = endpoints();
    for n in 1..=2 {
        host.accept_message(&message("s1", n)).await.unwrap();
    }
    host.renew_host("host", Duration::from_secs(30))
        .await
        .unwrap();
    let [claim] =
        <[Claim; 1]>::try_from(host.claim_sessions("host", &endpoints, 10).await.unwrap()).unwrap();

    // Said while the turn runs: committed at once; the turn's end stores
    // only what came after.
    let first = host.next_message("host", &claim).await.unwrap().unwrap();
    let said = host
        .commit_said("host", &claim, first.message.id, outputs(&first, &["wait"]))
        .await
        .unwrap();
    assert_eq!(bodies(&said), ["wait"]);
    let CommittedTurn::Done(rest) = host
        .complete_turn(
            "host",
            &claim,
            completed(&first, r#"{"n":1}"#, &["wait", "done"]),
        )
        .await
        .unwrap()
    else {
        panic!("the turn failed");
    };
    assert_eq!(bodies(&rest), ["done"]);

    // A failed turn: the message is finished as failed, the context stays.
    let second = host.next_message("host", &claim).await.unwrap().unwrap();
    let failed = TurnRecord {
        outcome: TurnOutcome::Failed {
            reason: "trapped".to_owned(),
        },
        ..completed(&second, r#"{"n":2}"#, &["never"])
    };
    assert_eq!(
        host.complete_turn("host", &claim, failed).await.unwrap(),
        CommittedTurn::Failed("trapped".to_owned())
    );
    assert!(host.next_message("host", &claim).await.unwrap().is_none());
    let state = host.session_state(&claim.session, "u1").await.unwrap();
    assert_eq!(state.context, r#"{"n":1}"#);
    assert_eq!(stored_outputs(&url).await, ["wait", "done"]);
}

#[tokio::test]
async fn one_users_sessions_on_two_hosts_keep_both_profile_changes() {
    let (_postgres, _, one, two) = two_hosts("profiles").await;
    let endpoints = endpoints();
    one.renew_host("one", Duration::from_secs(30))
        .await
        .unwrap();
    two.renew_host("two", Duration::from_secs(30))
        .await
        .unwrap();
    let with_profile = |message: &ClaimedMessage, before: &str, after: &str| TurnRecord {
        outcome: TurnOutcome::Completed {
            context: None,
            profile: Some(ProfileChange {
                before: before.to_owned(),
                after: after.to_owned(),
                max_size: 1024,
            }),
            outputs: Vec::new(),
        },
        ..completed(message, "{}", &[])
    };
    // The user has a profile already (so that no insert orders the two
    // turns below: only the profile row's lock can).
    one.accept_message(&message("s0", 1)).await.unwrap();
    let first = one.claim_sessions("one", &endpoints, 1).await.unwrap();
    let m0 = one.next_message("one", &first[0]).await.unwrap().unwrap();
    one.complete_turn(
        "one",
        &first[0],
        with_profile(&m0, "{}", r#"{"seen":true}"#),
    )
    .await
    .unwrap();

    one.accept_message(&message("s1", 1)).await.unwrap();
    one.accept_message(&message("s2", 1)).await.unwrap();
    let a = one.claim_sessions("one", &endpoints, 1).await.unwrap();
    let b = two.claim_sessions("two", &endpoints, 1).await.unwrap();
    let (a, b) = (&a[0], &b[0]);
    let (ma, mb) = (
        one.next_message("one", a).await.unwrap().unwrap(),
        two.next_message("two", b).await.unwrap().unwrap(),
    );
    // Both turns read the profile before either commits.
    let before = one.session_state(&a.session, "u1").await.unwrap().profile;
    assert_eq!(before, r#"{"seen":true}"#);
    let (ra, rb) = tokio::join!(
        one.complete_turn(
            "one",
            a,
            with_profile(&ma, &before, r#"{"seen":true,"plan":"gold"}"#)
        ),
        two.complete_turn(
            "two",
            b,
            with_profile(&mb, &before, r#"{"seen":true,"city":"Oslo"}"#)
        ),
    );
    ra.unwrap();
    rb.unwrap();
    let profile: serde_json::Value =
        serde_json::from_str(&one.session_state(&a.session, "u1").await.unwrap().profile).unwrap();
    assert_eq!(
        profile,
        serde_json::json!({"seen": true, "plan": "gold", "city": "Oslo"})
    );
}

/// Outputs of `message`, one per body, in order.
fn outputs(message: &ClaimedMessage, bodies: &[&str]) -> Vec<NewOutput> {
    bodies
        .iter()
        .enumerate()
        .map(|(position, body)| NewOutput {
            position: position as u32,
            webhook_id: format!("msg_{}_{position}", message.message.id),
            body: (*body).to_owned(),
            origin: message.message.origin(),
        })
        .collect()
}

/// A turn of `message` that completed with `context` and said `bodies`.
fn completed(message: &ClaimedMessage, context: &str, bodies: &[&str]) -> TurnRecord {
    TurnRecord {
        message_id: message.message.id,
        session: message.message.session.clone(),
        user_id: message.message.user_id.clone(),
        flow: "counter".to_owned(),
        flow_version: "v1".to_owned(),
        outcome: TurnOutcome::Completed {
            context: Some(context.to_owned()),
            profile: None,
            outputs: outputs(message, bodies),
        },
        answered: false,
    }
}

fn bodies(outputs: &[PendingOutput]) -> Vec<&str> {
    outputs.iter().map(|o| o.body.as_str()).collect()
}

/// Every output stored, in order.
async fn stored_outputs(url: &str) -> Vec<String> {
    client(url)
        .await
        .query("SELECT body FROM outputs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn an_accept_on_one_host_wakes_the_others_also_after_the_database_restarted() {
    let (postgres, _, one, two) = two_hosts("wakeups").await;
    let mut wakeups = two.wakeups();
    let mut woken = async |what: &str| -> Wake {
        tokio::time::timeout(PATIENCE, wakeups.next())
            .await
            .unwrap_or_else(|_| panic!("not woken {what}"))
    };
    assert_eq!(
        woken("when listening began, to look for what came before").await,
        Wake::Reconnected
    );
    one.accept_message(&message("s1", 1)).await.unwrap();
    assert_eq!(
        woken("by an accept at another host").await,
        Wake::Message(message("s1", 1).session),
        "the wake names the session, and nothing came before it without a cause"
    );

    postgres.stop();
    postgres.start_again();
    assert_eq!(
        woken("when listening began again, to look for what was missed").await,
        Wake::Reconnected
    );
    let started = Instant::now();
    while let Err(error) = one
        .accept_message(&message("s 2\nwith a line break", 2))
        .await
    {
        assert!(
            error.is_transient() && started.elapsed() < PATIENCE,
            "{error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        woken("by an accept after the restart").await,
        Wake::Message(message("s 2\nwith a line break", 2).session)
    );
}

#[tokio::test]
async fn a_host_that_dies_mid_delivery_leaves_the_rest_to_the_next_owner() {
    let (_postgres, _, dead, next) = two_hosts("deliveries").await;
    let endpoints = endpoints();
    let lease = Duration::from_millis(500);
    dead.accept_message(&message("s1", 1)).await.unwrap();
    dead.renew_host("dead", lease).await.unwrap();
    next.renew_host("next", Duration::from_secs(30))
        .await
        .unwrap();
    let [claim] =
        <[Claim; 1]>::try_from(dead.claim_sessions("dead", &endpoints, 10).await.unwrap()).unwrap();
    let first = dead.next_message("dead", &claim).await.unwrap().unwrap();
    dead.complete_turn("dead", &claim, completed(&first, "{}", &["a", "b"]))
        .await
        .unwrap();
    let outputs = dead.undelivered_outputs(&claim).await.unwrap();
    assert_eq!(bodies(&outputs), ["a", "b"]);
    dead.record_attempt(
        "dead",
        &claim,
        attempt(&outputs[0], AttemptOutcome::Delivered),
    )
    .await
    .unwrap();
    assert!(
        !dead.release("dead", &claim).await.unwrap(),
        "held while an output waits"
    );

    // The host dies before it sends "b"; once its lease has run out, the
    // session's next owner sends it, with the webhook id it was stored with.
    assert!(
        next.claim_sessions("next", &endpoints, 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let [taken] =
        <[Claim; 1]>::try_from(next.claim_sessions("next", &endpoints, 10).await.unwrap()).unwrap();
    let left = next.undelivered_outputs(&taken).await.unwrap();
    assert_eq!(left, outputs[1..], "the same output, the same webhook id");
    let stale = dead
        .record_attempt(
            "dead",
            &claim,
            attempt(&outputs[1], AttemptOutcome::Delivered),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");

    next.record_attempt("next", &taken, attempt(&left[0], AttemptOutcome::Retrying))
        .await
        .unwrap();
    let retried = next.undelivered_outputs(&taken).await.unwrap();
    assert_eq!(retried[0].attempts, 1, "a retry keeps it waiting");
    assert!(!next.release("next", &taken).await.unwrap());
    next.record_attempt("next", &taken, attempt(&left[0], AttemptOutcome::Dead))
        .await
        .unwrap();
    assert!(next.undelivered_outputs(&taken).await.unwrap().is_empty());
    assert!(
        next.release("next", &taken).await.unwrap(),
        "nothing left to run or deliver"
    );
    assert!(
        next.claim_sessions("next", &endpoints, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An attempt at `output` that ended so.
fn attempt(output: &PendingOutput, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        output_id: output.id,
        session: output.session.clone(),
        started_at: 1_700_000_000_000,
        duration_ms: 3,
        status: Some(if outcome == AttemptOutcome::Delivered {
            200
        } else {
            503
        }),
        error: (outcome != AttemptOutcome::Delivered).then(|| "503".to_owned()),
        outcome,
        next_attempt_at: None,
    }
}

#[tokio::test]
async fn dead_letters_sent_again_go_to_whichever_host_claims_their_session() {
    let (_postgres, _, one, two) = two_hosts("admin").await;
    let endpoints = endpoints();
    let lease = Duration::from_secs(30);
    one.renew_host("one", lease).await.unwrap();
    two.renew_host("two", lease).await.unwrap();
    one.accept_message(&message("s1", 1)).await.unwrap();
    let [claim] =
        <[Claim; 1]>::try_from(one.claim_sessions("one", &endpoints, 1).await.unwrap()).unwrap();
    let first = one.next_message("one", &claim).await.unwrap().unwrap();
    let CommittedTurn::Done(outputs) = one
        .complete_turn("one", &claim, completed(&first, "{}", &["a"]))
        .await
        .unwrap()
    else {
        panic!("the turn failed");
    };
    one.record_attempt("one", &claim, attempt(&outputs[0], AttemptOutcome::Dead))
        .await
        .unwrap();
    assert!(one.release("one", &claim).await.unwrap());

    // Every host sees the dead letter and its attempt.
    let query = |status| OutputQuery {
        status,
        before_id: None,
        limit: 10,
        bodies: true,
    };
    let dead = two
        .outputs("support", query(Some(OutputStatus::Dead)))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].body.as_deref()), (1, Some("a")));
    let attempts = two.attempts(outputs[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(503));
    assert!(
        two.outputs("echo", query(None)).await.unwrap().is_empty(),
        "an endpoint sees its own outputs only"
    );

    // Sent again through the other host; whichever host claims the session
    // delivers it, with its webhook id.
    let requeued = two.requeue_dead("support", 0, 10).await.unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].id, outputs[0].id);
    let [taken] =
        <[Claim; 1]>::try_from(two.claim_sessions("two", &endpoints, 1).await.unwrap()).unwrap();
    let waiting = two.undelivered_outputs(&taken).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].webhook_id, outputs[0].webhook_id);
    assert_eq!(waiting[0].attempts, 0, "attempts counted afresh");
    // Queued again while pending: shown, not counted twice.
    let again = two.requeue_output("support", outputs[0].id).await.unwrap();
    assert_eq!(again.map(|o| o.id), Some(outputs[0].id));
    assert_eq!(
        two.requeue_output("echo", outputs[0].id).await.unwrap(),
        None
    );
    two.record_attempt(
        "two",
        &taken,
        attempt(&waiting[0], AttemptOutcome::Delivered),
    )
    .await
    .unwrap();
    assert!(
        two.release("two", &taken).await.unwrap(),
        "delivered once, nothing left"
    );

    // A delivered output sent again makes its session wait again.
    one.requeue_output("support", outputs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        one.claim_sessions("one", &endpoints, 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_endpoint_stopped_by_one_host_is_stopped_for_all() {
    let (_postgres, _, one, two) = two_hosts("disabled").await;
    one.disable_endpoint("support", "410 Gone").await.unwrap();
    one.disable_endpoint("support", "later").await.unwrap();
    let disabled = two.disabled_endpoints().await.unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!(
        (disabled[0].endpoint.as_str(), disabled[0].reason.as_str()),
        ("support", "410 Gone"),
        "the first reason stays"
    );
    assert!(two.enable_endpoint("support").await.unwrap());
    assert!(!one.enable_endpoint("support").await.unwrap());
    assert!(one.disabled_endpoints().await.unwrap().is_empty());
}

#[tokio::test]
async fn pruning_forgets_what_is_done_and_keeps_what_waits() {
    use flowhost::store::Store;
    let (_postgres, url, one, _) = two_hosts("pruned").await;
    one.renew_host("one", Duration::from_secs(30))
        .await
        .unwrap();
    one.accept_message(&message("done", 1)).await.unwrap();
    one.accept_message(&message("waiting", 1)).await.unwrap();
    let claims = one.claim_sessions("one", &endpoints(), 10).await.unwrap();
    let done = claims
        .iter()
        .find(|c| c.session.session_id == "done")
        .unwrap();
    let first = one.next_message("one", done).await.unwrap().unwrap();
    let CommittedTurn::Done(outputs) = one
        .complete_turn("one", done, completed(&first, r#"{"n":1}"#, &["a"]))
        .await
        .unwrap()
    else {
        panic!("the turn failed");
    };
    one.record_attempt("one", done, attempt(&outputs[0], AttemptOutcome::Delivered))
        .await
        .unwrap();
    assert!(one.release("one", done).await.unwrap());
    let db = client(&url).await;
    // A host gone two hours ago, still named the owner of a session.
    db.batch_execute(
        "INSERT INTO hosts VALUES ('gone', now() - INTERVAL '2 hours');
         UPDATE sessions SET owner = 'gone' WHERE session_id = 'waiting'",
    )
    .await
    .unwrap();

    let later = flowhost::store::now_ms() + 60_000;
    let pruned = one.prune(later, later).await.unwrap();
    let count = async |sql: &str| -> i64 { db.query_one(sql, &[]).await.unwrap().get(0) };
    assert_eq!(
        count("SELECT count(*) FROM messages WHERE session_id = 'done'").await
            + count("SELECT count(*) FROM outputs").await
            + count("SELECT count(*) FROM delivery_attempts").await
            + count("SELECT count(*) FROM sessions WHERE session_id = 'done'").await,
        0,
        "the finished message, its delivered output and attempt, and the idle session are gone"
    );
    assert_eq!(
        count("SELECT count(*) FROM messages WHERE session_id = 'waiting' AND status = 'pending'")
            .await,
        1,
        "a message still to run stays"
    );
    assert_eq!(
        count("SELECT count(*) FROM sessions WHERE session_id = 'waiting' AND owner IS NULL").await,
        1,
        "its session stays, no longer claimed by the host long gone"
    );
    assert_eq!(
        count("SELECT count(*) FROM hosts WHERE id = 'gone'").await,
        0
    );
    assert_eq!(pruned, 5, "message, output, attempt, session and host rows");
}
