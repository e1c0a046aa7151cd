//! What the store costs a message, SQLite beside PostgreSQL, in one run:
//! `cargo bench -p flowhost --bench store`. Every commit is fsynced in both.
//!
//! A message's store work, without HTTP or a flow: accepted, run (its
//! state read, its turn committed with one output), its output delivered
//! (the attempt recorded). On PostgreSQL, as a host of several runs it: the
//! session claimed, its next message read, the turn and the attempt fenced
//! by the claim, the session released.
//!
//! - `one_message`: one message at a time, one session: the latency of the
//!   chain of round trips;
//! - `64_sessions_at_once`: 64 messages of 64 sessions at once, as a busy
//!   host has them: throughput, with group commit (SQLite) and concurrent
//!   transactions (PostgreSQL, a pool of 16 connections).
//!
//! PostgreSQL runs in a throwaway cluster started here (as the integration
//! tests start theirs), on the same two cores: its CPU counts.

// The integration tests' cluster, shared; the bench uses part of it.
#[path = "../tests/all/support/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowhost::store::{
    Attempt, AttemptOutcome, Claim, CommittedTurn, InboxMessage, MessageKind, MessageStore,
    NewOutput, OutboxStore, PendingOutput, PostgresOptions, PostgresStore, SessionKey, SqliteStore,
    TurnOutcome, TurnRecord,
};

const HOST: &str = "bench-host";

fn message(session: &str) -> InboxMessage {
    InboxMessage {
        id: 0,
        session: SessionKey {
            endpoint: "bench".to_owned(),
            session_id: session.to_owned(),
        },
        user_id: "user123".to_owned(),
        text: Some("Hello, I need help with my order".to_owned()),
        data: Some(r#"{"exampleKey":"exampleValue"}"#.to_owned()),
        trace_id: "endpoint-httpIncomingMessage-00000000-0000-0000-0000-000000000000".to_owned(),
        received_at: 0,
        trace_parent: None,
        kind: MessageKind::User,
    }
}

fn turn(message: &InboxMessage) -> TurnRecord {
    TurnRecord {
        message_id: message.id,
        session: message.session.clone(),
        user_id: message.user_id.clone(),
        flow: "echo".to_owned(),
        flow_version: "v1".to_owned(),
        outcome: TurnOutcome::Completed {
            context: Some(r#"{"turns":1}"#.to_owned()),
            profile: None,
            outputs: vec![NewOutput {
                position: 0,
                webhook_id: format!("msg_{}", message.id),
                body: r#"{"userId":"user123","sessionId":"s","AIOutput":{"text":"Hello"}}"#
                    .to_owned(),
                origin: message.origin(),
            }],
        },
        answered: false,
    }
}

fn delivered(output: &PendingOutput) -> Attempt {
    Attempt {
        output_id: output.id,
        session: output.session.clone(),
        started_at: 0,
        duration_ms: 1,
        status: Some(200),
        error: None,
        outcome: AttemptOutcome::Delivered,
        next_attempt_at: None,
    }
}

/// One message of `session` through the SQLite store.
async fn sqlite_message(store: &SqliteStore, session: &str) {
    let (sender, accepted) = tokio::sync::oneshot::channel();
    store
        .accept(
            message(session),
            None,
            Box::new(move |m| {
                let _ = sender.send(m);
            }),
        )
        .await
        .unwrap();
    let message = accepted.await.unwrap();
    store
        .session_state(&message.session, &message.user_id)
        .await
        .unwrap();
    let CommittedTurn::Done(outputs) = store.complete_turn(turn(&message)).await.unwrap() else {
        panic!("the turn failed");
    };
    store.record_attempt(delivered(&outputs[0])).await.unwrap();
}

/// The claimed session's next message, run and delivered, through the
/// PostgreSQL store; then the session released.
async fn postgres_turn(store: &PostgresStore, claim: &Claim) {
    let next = store.next_message(HOST, claim).await.unwrap().unwrap();
    store
        .session_state(&claim.session, &next.message.user_id)
        .await
        .unwrap();
    let CommittedTurn::Done(outputs) = store
        .complete_turn(HOST, claim, turn(&next.message))
        .await
        .unwrap()
    else {
        panic!("the turn failed");
    };
    store
        .record_attempt(HOST, claim, delivered(&outputs[0]))
        .await
        .unwrap();
    assert!(store.release(HOST, claim).await.unwrap());
}

fn benches(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(data.path()).unwrap());
    let cluster = postgres::TestPostgres::start_durable();
    let url = cluster.database("bench");
    let pg = Arc::new(
        tokio
            .block_on(PostgresStore::connect(&PostgresOptions::new(url)))
            .unwrap(),
    );
    tokio
        .block_on(pg.renew_host(HOST, Duration::from_secs(3600)))
        .unwrap();
    let endpoints = vec!["bench".to_owned()];

    let mut group = c.benchmark_group("one_message");
    group.bench_function("sqlite", |b| {
        b.to_async(&tokio).iter(|| sqlite_message(&sqlite, "s1"));
    });
    group.bench_function("postgres", |b| {
        b.to_async(&tokio).iter(|| async {
            pg.accept_message(&message("s1")).await.unwrap();
            let claims = pg.claim_sessions(HOST, &endpoints, 1).await.unwrap();
            postgres_turn(&pg, &claims[0]).await;
        });
    });
    group.finish();

    let mut group = c.benchmark_group("64_sessions_at_once");
    group.throughput(Throughput::Elements(64));
    let sessions: Vec<String> = (0..64).map(|n| format!("s{n}")).collect();
    group.bench_function("sqlite", |b| {
        b.to_async(&tokio).iter(|| {
            futures::future::join_all(sessions.iter().map(|s| {
                let sqlite = Arc::clone(&sqlite);
                async move { sqlite_message(&sqlite, s).await }
            }))
        });
    });
    group.bench_function("postgres", |b| {
        b.to_async(&tokio).iter(|| async {
            futures::future::join_all(sessions.iter().map(|s| {
                let pg = Arc::clone(&pg);
                async move { pg.accept_message(&message(s)).await.unwrap() }
            }))
            .await;
            let claims = pg.claim_sessions(HOST, &endpoints, 64).await.unwrap();
            assert_eq!(claims.len(), 64);
            futures::future::join_all(claims.iter().map(|claim| postgres_turn(&pg, claim))).await;
        });
    });
    group.finish();
}

criterion_group! {
    name = store;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(20);
    targets = benches
}
criterion_main!(store);
