//! The store's contract, tested on SQLite: what each step commits, what a
//! failure leaves, what survives reopening.

use super::*;
use crate::store::*;

fn message(session: &str, text: &str) -> InboxMessage {
    InboxMessage {
        id: 0,
        session: SessionKey {
            endpoint: "support".into(),
            session_id: session.into(),
        },
        user_id: "u1".into(),
        text: Some(text.into()),
        data: None,
        trace_id: format!("endpoint-httpIncomingMessage-{}", uuid::Uuid::new_v4()),
        received_at: now_ms(),
        trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        kind: MessageKind::User,
    }
}

/// Every unfinished message, read a page at a time as the inbox does.
async fn unfinished(store: &SqliteStore) -> Vec<InboxMessage> {
    let mut all = Vec::new();
    let mut after_id = 0;
    loop {
        let page = store.unfinished_messages(after_id, 2).await.unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after_id = last.id;
        for queued in page {
            all.push(store.unfinished_message(queued.id).await.unwrap().unwrap());
        }
    }
}

/// Every pending output (of one endpoint, or all), read a page at a
/// time as delivery does.
async fn pending(store: &SqliteStore, endpoint: Option<&str>) -> Vec<PendingOutput> {
    let mut all = Vec::new();
    let mut after_id = 0;
    loop {
        let page = store.pending_outputs(endpoint, after_id, 2).await.unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after_id = last.id;
        for queued in page {
            let output = store.pending_output(queued.id).await.unwrap().unwrap();
            assert_eq!(Queued::from(&output), queued);
            all.push(output);
        }
    }
}

/// The newest 10 outputs of a status, or all, with their bodies.
fn listing(status: Option<OutputStatus>) -> OutputQuery {
    OutputQuery {
        status,
        before_id: None,
        limit: 10,
        bodies: true,
    }
}

fn done(committed: CommittedTurn) -> Vec<PendingOutput> {
    match committed {
        CommittedTurn::Done(outputs) => outputs,
        CommittedTurn::Failed(reason) => panic!("the turn failed: {reason}"),
    }
}

async fn accept(store: &SqliteStore, message: InboxMessage) -> InboxMessage {
    let (tx, rx) = std::sync::mpsc::channel();
    store
        .accept(message, None, Box::new(move |m| tx.send(m).unwrap()))
        .await
        .unwrap();
    rx.recv().unwrap()
}

#[tokio::test]
async fn an_idempotency_key_is_remembered_for_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let key = |key: &str, fingerprint: &str, window_ms: u64| IdempotencyKey {
        key: key.into(),
        fingerprint: fingerprint.into(),
        window: std::time::Duration::from_millis(window_ms),
    };
    let try_accept = |message: InboxMessage, key: IdempotencyKey| {
        let store = &store;
        async move {
            store
                .accept(message, Some(key), Box::new(|_| {}))
                .await
                .unwrap()
        }
    };
    let stored = |accepted: Accepted| match accepted {
        Accepted::Stored { id } => id,
        other => panic!("not stored: {other:?}"),
    };
    let first = message("s1", "hi");
    let day = 86_400_000;
    let first_id = stored(try_accept(first.clone(), key("k1", "a", day)).await);
    // The same request again: the first's trace id and message, nothing
    // stored.
    assert_eq!(
        try_accept(message("s1", "hi"), key("k1", "a", day)).await,
        Accepted::Repeated {
            trace_id: first.trace_id.clone(),
            message_id: first_id,
        }
    );
    // Another request with the key: refused.
    assert_eq!(
        try_accept(message("s1", "other"), key("k1", "b", day)).await,
        Accepted::KeyReused
    );
    // Keys are the endpoint's: another endpoint may use the same one.
    let mut elsewhere = message("s1", "hi");
    elsewhere.session.endpoint = "sales".into();
    stored(try_accept(elsewhere, key("k1", "a", day)).await);
    assert_eq!(unfinished(&store).await.len(), 2);

    // A key whose window has passed is free again, and goes when pruned.
    let mut short = message("s2", "hi");
    short.received_at -= 10_000;
    stored(try_accept(short, key("k2", "a", 5_000)).await);
    stored(try_accept(message("s2", "new"), key("k2", "b", day)).await);
    let mut expired = message("s3", "hi");
    expired.received_at -= 10_000;
    stored(try_accept(expired, key("k3", "a", 5_000)).await);
    let keys = |store: &SqliteStore| {
        store
            .point_read(|conn| {
                conn.query_row("SELECT count(*) FROM idempotency_keys", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap()
    };
    assert_eq!(keys(&store), 4);
    store.prune(0, 0).await.unwrap();
    assert_eq!(keys(&store), 3, "the expired k3 goes; k1 twice and k2 stay");
}

#[tokio::test]
async fn a_turn_commits_state_and_outputs_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let first = accept(&store, message("s1", "hi")).await;
    let second = accept(&store, message("s1", "again")).await;
    assert!(first.id < second.id);
    assert_eq!(unfinished(&store).await, [first.clone(), second]);

    let outputs = store
        .complete_turn(record(
            &first,
            TurnOutcome::Completed {
                context: Some(r#"{"n":1}"#.into()),
                profile: Some(ProfileChange {
                    before: "{}".into(),
                    after: r#"{"name":"Ada"}"#.into(),
                    max_size: 64 << 10,
                }),
                outputs: vec![NewOutput {
                    position: 0,
                    webhook_id: "msg_1".into(),
                    body: "{}".into(),
                    origin: first.origin(),
                }],
            },
        ))
        .await
        .unwrap();
    let outputs = done(outputs);
    assert_eq!(outputs.len(), 1);
    assert_eq!(unfinished(&store).await.len(), 1);
    assert_eq!(pending(&store, None).await, outputs);
    let state = store.session_state(&first.session, "u1").await.unwrap();
    assert_eq!(state.context, r#"{"n":1}"#);
    assert_eq!(state.profile, r#"{"name":"Ada"}"#);

    store
        .record_attempt(Attempt {
            output_id: outputs[0].id,
            session: outputs[0].session.clone(),
            started_at: now_ms(),
            duration_ms: 1,
            status: Some(200),
            error: None,
            outcome: AttemptOutcome::Delivered,
            next_attempt_at: None,
        })
        .await
        .unwrap();
    assert!(pending(&store, None).await.is_empty());
    let records = store.outputs("support", listing(None)).await.unwrap();
    assert_eq!(records[0].status, OutputStatus::Delivered);
    assert_eq!(
        store.attempts(outputs[0].id).await.unwrap()[0].status,
        Some(200)
    );

    // Replay: a delivered output can be queued again, with its id.
    let again = store
        .requeue_output("support", outputs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.webhook_id, "msg_1");
    assert_eq!(pending(&store, Some("support")).await, [again]);
    assert!(
        store
            .requeue_output("other", outputs[0].id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn dead_letters_are_kept_and_requeued_and_old_records_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let m = accept(&store, message("s1", "hi")).await;
    let outputs = store
        .complete_turn(record(
            &m,
            TurnOutcome::Completed {
                context: None,
                profile: None,
                outputs: (0..2)
                    .map(|n| NewOutput {
                        position: n,
                        webhook_id: format!("msg_{n}"),
                        body: "{}".into(),
                        origin: m.origin(),
                    })
                    .collect(),
            },
        ))
        .await
        .unwrap();
    let outputs = done(outputs);
    for (output, outcome) in outputs
        .iter()
        .zip([AttemptOutcome::Dead, AttemptOutcome::Delivered])
    {
        store
            .record_attempt(Attempt {
                output_id: output.id,
                session: output.session.clone(),
                started_at: now_ms(),
                duration_ms: 3,
                status: Some(500),
                error: Some("the receiver answered 500".into()),
                outcome,
                next_attempt_at: None,
            })
            .await
            .unwrap();
    }
    let dead = store
        .outputs("support", listing(Some(OutputStatus::Dead)))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("the receiver answered 500")
    );

    // Pruning keeps dead letters and recent records.
    assert_eq!(store.prune(now_ms() - 60_000, 0).await.unwrap(), 0);
    assert_eq!(
        store.prune(now_ms() + 60_000, 0).await.unwrap(),
        2,
        "the delivered output and its attempt"
    );
    assert_eq!(
        store.outputs("support", listing(None)).await.unwrap().len(),
        1
    );

    let requeued = store.requeue_dead("support", 0, 500).await.unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].id, dead[0].id);
    assert!(
        store
            .outputs("support", listing(Some(OutputStatus::Dead)))
            .await
            .unwrap()
            .is_empty()
    );

    store.disable_endpoint("support", "410 Gone").await.unwrap();
    assert_eq!(
        store.disabled_endpoints().await.unwrap()[0].reason,
        "410 Gone"
    );
    assert!(store.enable_endpoint("support").await.unwrap());
    assert!(!store.enable_endpoint("support").await.unwrap());
}

#[tokio::test]
async fn a_failed_turn_changes_nothing_but_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let m = accept(&store, message("s1", "boom")).await;
    let outputs = store
        .complete_turn(record(
            &m,
            TurnOutcome::Failed {
                reason: "wasm trap".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(outputs, CommittedTurn::Failed("wasm trap".into()));
    assert!(unfinished(&store).await.is_empty());
    let state = store.session_state(&m.session, "u1").await.unwrap();
    assert_eq!(state.context, "{}");
}

/// How `message` ended, run by `echo`.
fn record(message: &InboxMessage, outcome: TurnOutcome) -> TurnRecord {
    TurnRecord {
        message_id: message.id,
        session: message.session.clone(),
        user_id: "u1".into(),
        flow: "echo".into(),
        flow_version: "abc".into(),
        outcome,
        answered: false,
    }
}

/// The output `m`'s turn said at `position`.
fn said(m: &InboxMessage, position: u32) -> NewOutput {
    NewOutput {
        position,
        webhook_id: format!("msg_{position}"),
        body: format!("{{\"n\":{position}}}"),
        origin: m.origin(),
    }
}

#[tokio::test]
async fn what_a_turn_said_while_running_is_kept_once_however_often_it_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let m = accept(&store, message("s1", "hi")).await;

    let early = store
        .commit_said(m.id, &m.session, vec![said(&m, 0)])
        .await
        .unwrap();
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].webhook_id, "msg_0");
    // Repeated after an unclear commit, or said again by a second run of
    // the message after a crash: nothing new.
    assert!(
        store
            .commit_said(m.id, &m.session, vec![said(&m, 0)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(unfinished(&store).await.len(), 1, "the turn still runs");

    // The turn's end brings its other outputs; place 0 is taken.
    let mut again = said(&m, 0);
    again.webhook_id = "msg_again".into();
    let rest = done(
        store
            .complete_turn(record(
                &m,
                TurnOutcome::Completed {
                    context: None,
                    profile: None,
                    outputs: vec![again, said(&m, 1)],
                },
            ))
            .await
            .unwrap(),
    );
    assert_eq!(
        rest.iter().map(|o| &o.webhook_id).collect::<Vec<_>>(),
        ["msg_1"]
    );
    let all = pending(&store, None).await;
    assert_eq!(
        all.iter().map(|o| &o.webhook_id).collect::<Vec<_>>(),
        ["msg_0", "msg_1"],
        "in the order said"
    );

    // A message that has ended takes no more.
    assert!(
        store
            .commit_said(m.id, &m.session, vec![said(&m, 2)])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_turn_that_fails_after_saying_keeps_what_it_said_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let m = accept(&store, message("s1", "hi")).await;
    let early = store
        .commit_said(m.id, &m.session, vec![said(&m, 0)])
        .await
        .unwrap();
    let failed = store
        .complete_turn(record(
            &m,
            TurnOutcome::Failed {
                reason: "deadline".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(failed, CommittedTurn::Failed("deadline".into()));
    assert!(unfinished(&store).await.is_empty());
    assert_eq!(pending(&store, None).await, early, "what was said stands");
    let state = store.session_state(&m.session, "u1").await.unwrap();
    assert_eq!(state.context, "{}");
}

#[tokio::test]
async fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let m = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let token = store.url_token("support", "t1".repeat(10)).await.unwrap();
        assert_eq!(token, "t1".repeat(10));
        accept(&store, message("s1", "hi")).await
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(unfinished(&store).await, [m]);
    let token = store.url_token("support", "other".into()).await.unwrap();
    assert_eq!(token, "t1".repeat(10), "the first token is kept");
}

#[tokio::test]
async fn a_replaced_url_token_is_the_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.url_token("support", "t1".repeat(10)).await.unwrap();
    store
        .replace_url_token("support", "t2".repeat(10))
        .await
        .unwrap();
    let token = store.url_token("support", "other".into()).await.unwrap();
    assert_eq!(token, "t2".repeat(10));
}

#[tokio::test]
async fn a_merged_profile_past_the_limit_fails_the_turn_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // Two sessions of one user read the empty profile, each sets a key
    // of 600 bytes: each fits 1 KiB, both together do not.
    let turn = |m: &InboxMessage, key: &str| {
        record(
            m,
            TurnOutcome::Completed {
                context: Some(r#"{"seen":true}"#.into()),
                profile: Some(ProfileChange {
                    before: "{}".into(),
                    after: serde_json::json!({ key: "x".repeat(600) }).to_string(),
                    max_size: 1024,
                }),
                outputs: vec![NewOutput {
                    position: 0,
                    webhook_id: format!("msg_{key}"),
                    body: "{}".into(),
                    origin: m.origin(),
                }],
            },
        )
    };
    let first = accept(&store, message("s1", "hi")).await;
    let second = accept(&store, message("s2", "hi")).await;
    let kept = done(store.complete_turn(turn(&first, "a")).await.unwrap());
    assert_eq!(kept.len(), 1);
    let refused = store.complete_turn(turn(&second, "b")).await.unwrap();
    let CommittedTurn::Failed(reason) = refused else {
        panic!("the merge past the limit was kept: {refused:?}");
    };
    assert!(
        reason.contains("profile size limit 1 KiB exceeded after merging concurrent changes"),
        "{reason}"
    );

    let profile = store.session_state(&second.session, "u1").await.unwrap();
    assert_eq!(
        profile.profile,
        turn(&first, "a").profile_after(),
        "only the first turn's profile"
    );
    assert_eq!(
        profile.context, "{}",
        "the failed turn's context is not kept"
    );
    assert_eq!(pending(&store, None).await, kept, "nor its outputs");
    assert!(unfinished(&store).await.is_empty());
}

#[tokio::test]
async fn contexts_and_profiles_unused_for_the_retention_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let day = 86_400_000;
    let turn = |m: &InboxMessage, user: &str, changes: bool| TurnRecord {
        message_id: m.id,
        session: m.session.clone(),
        user_id: user.into(),
        flow: "greeter".into(),
        flow_version: "abc".into(),
        outcome: TurnOutcome::Completed {
            context: changes.then(|| r#"{"n":1}"#.into()),
            profile: changes.then(|| ProfileChange {
                before: "{}".into(),
                after: format!(r#"{{"name":"{user}"}}"#),
                max_size: 1024,
            }),
            outputs: Vec::new(),
        },
        answered: false,
    };
    for (session, user) in [("old", "u-old"), ("used", "u-used"), ("new", "u-new")] {
        let m = accept(&store, message(session, "hi")).await;
        done(store.complete_turn(turn(&m, user, true)).await.unwrap());
    }
    // "old" and "used" were last changed 40 days ago; "used" has been
    // used since (a turn that changed nothing).
    store
        .write(move |conn| {
            conn.execute(
                "UPDATE sessions SET updated_at = updated_at - 40 * ?1 WHERE session_id != 'new'",
                [day],
            )?;
            conn.execute(
                "UPDATE profiles SET updated_at = updated_at - 40 * ?1 WHERE user_id != 'u-new'",
                [day],
            )
        })
        .await
        .unwrap();
    let m = accept(&store, message("used", "again")).await;
    done(
        store
            .complete_turn(turn(&m, "u-used", false))
            .await
            .unwrap(),
    );

    let pruned = store.prune(0, now_ms() - 30 * day).await.unwrap();
    assert_eq!(
        pruned, 2,
        "the old session's context and its user's profile"
    );
    let store = &store;
    let state = |session: &str, user: &str| {
        let key = SessionKey {
            endpoint: "support".into(),
            session_id: session.into(),
        };
        let user = user.to_owned();
        async move { store.session_state(&key, &user).await.unwrap() }
    };
    assert_eq!(
        state("old", "u-old").await,
        SessionState {
            context: "{}".into(),
            profile: "{}".into(),
            context_written_at: None,
        }
    );
    assert_eq!(state("used", "u-used").await.context, r#"{"n":1}"#);
    assert_eq!(
        state("used", "u-used").await.profile,
        r#"{"name":"u-used"}"#
    );
    assert_eq!(state("new", "u-new").await.context, r#"{"n":1}"#);
}

#[tokio::test]
async fn dead_letters_are_requeued_page_by_page_and_listed_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let output = one_output(&store, &format!("s{n}")).await;
        let outcome = if n == 2 {
            AttemptOutcome::Delivered
        } else {
            AttemptOutcome::Dead
        };
        store
            .record_attempt(Attempt {
                output_id: output.id,
                session: output.session.clone(),
                started_at: now_ms(),
                duration_ms: 1,
                status: Some(500),
                error: None,
                outcome,
                next_attempt_at: None,
            })
            .await
            .unwrap();
        ids.push(output.id);
    }

    // Listed newest first, two at a time, without bodies unless asked.
    let page = |before_id, bodies| OutputQuery {
        status: None,
        before_id,
        limit: 2,
        bodies,
    };
    let first = store.outputs("support", page(None, false)).await.unwrap();
    assert_eq!(
        first.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    assert!(first.iter().all(|o| o.body.is_none()));
    let next = store
        .outputs("support", page(Some(ids[3]), true))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    assert_eq!(next[0].body.as_deref(), Some("{}"));

    // The four dead ones are requeued two at a time, oldest first.
    let requeued = store.requeue_dead("support", 0, 2).await.unwrap();
    assert_eq!(
        requeued.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[0], ids[1]]
    );
    assert!(requeued.iter().all(|o| o.attempts == 0));
    let requeued = store.requeue_dead("support", ids[1], 2).await.unwrap();
    assert_eq!(
        requeued.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[3], ids[4]]
    );
    assert!(
        store
            .requeue_dead("support", ids[4], 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(pending(&store, None).await.len(), 4);
}

impl TurnRecord {
    fn profile_after(&self) -> String {
        match &self.outcome {
            TurnOutcome::Completed {
                profile: Some(change),
                ..
            } => change.after.clone(),
            _ => unreachable!(),
        }
    }
}

/// One output of a completed turn of a new message of `session`.
async fn one_output(store: &SqliteStore, session: &str) -> PendingOutput {
    let m = accept(store, message(session, "hi")).await;
    let outputs = store
        .complete_turn(record(
            &m,
            TurnOutcome::Completed {
                context: None,
                profile: None,
                outputs: vec![NewOutput {
                    position: 0,
                    webhook_id: format!("msg_{session}"),
                    body: "{}".into(),
                    origin: m.origin(),
                }],
            },
        ))
        .await
        .unwrap();
    done(outputs).pop().unwrap()
}

#[tokio::test]
async fn a_retry_keeps_its_due_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let due = now_ms() + 600_000;
    let output = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let output = one_output(&store, "s1").await;
        store
            .record_attempt(Attempt {
                output_id: output.id,
                session: output.session.clone(),
                started_at: now_ms(),
                duration_ms: 2,
                status: Some(500),
                error: Some("the receiver answered 500".into()),
                outcome: AttemptOutcome::Retrying,
                next_attempt_at: Some(due),
            })
            .await
            .unwrap();
        output
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    let pending = pending(&store, None).await;
    assert_eq!(
        pending,
        [PendingOutput {
            attempts: 1,
            next_attempt_at: Some(due),
            ..output.clone()
        }]
    );
    assert_eq!(
        store.outputs("support", listing(None)).await.unwrap()[0].next_attempt_at,
        Some(due)
    );
    // Queued again by hand: due at once.
    let again = store.requeue_output("support", output.id).await.unwrap();
    assert_eq!(again.unwrap().next_attempt_at, None);
}

#[tokio::test]
async fn a_database_of_the_first_schema_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = Connection::open(dir.path().join("flowhost.db")).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(schema::FIRST).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute(
            "INSERT INTO messages (trace_id, endpoint, session_id, user_id, received_at, status)
             VALUES ('t', 'support', 's1', 'u1', 1, 'done')",
            [],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO outputs (message_id, endpoint, session_id, webhook_id, body, attempts, created_at)
             VALUES (1, 'support', 's1', 'msg_old', '{}', 2, 1)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let pending = pending(&store, None).await;
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].attempts, pending[0].next_attempt_at), (2, None));
    one_output(&store, "s2").await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_and_its_folder_are_private() {
    use crate::private::tests::{common_umask, mode};
    common_umask();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let store = SqliteStore::open(&dir).unwrap();
    accept(&store, message("s1", "hi")).await;
    assert_eq!(mode(&dir), 0o700);
    for file in ["flowhost.db", "flowhost.db-wal", "flowhost.db-shm"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    drop(store);

    // A database left readable by an older flowhost is made private.
    for file in ["flowhost.db", "flowhost.db-wal", "flowhost.db-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let _store = SqliteStore::open(&dir).unwrap();
    assert_eq!(mode(&dir.join("flowhost.db")), 0o600);
}

#[tokio::test]
async fn keys_are_listed_and_revoked_by_id_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for (id, name) in [("k1", Some("ci")), ("k2", None)] {
        store
            .add_api_key(NewApiKey {
                info: ApiKeyInfo {
                    id: id.into(),
                    endpoint: "support".into(),
                    name: name.map(Into::into),
                    prefix: "fhk_abc".into(),
                    created_at: now_ms(),
                    revoked_at: None,
                },
                hash: [id.as_bytes()[1]; 32],
            })
            .await
            .unwrap();
    }
    assert!(store.is_active_key("support", [b'1'; 32]).await.unwrap());
    assert!(store.is_active_key("support", [b'2'; 32]).await.unwrap());
    assert!(store.revoke_api_key("support", "ci").await.unwrap());
    assert!(!store.revoke_api_key("support", "ci").await.unwrap());
    assert!(!store.revoke_api_key("other", "k2").await.unwrap());
    assert!(!store.is_active_key("support", [b'1'; 32]).await.unwrap());
    assert!(store.is_active_key("support", [b'2'; 32]).await.unwrap());
    assert!(
        !store.is_active_key("other", [b'2'; 32]).await.unwrap(),
        "a key is good for its own endpoint only"
    );
    assert_eq!(store.api_keys(Some("support")).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_key_is_found_by_its_hash_among_thousands() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(dir.path(), false).unwrap();
    let mut secrets = Vec::new();
    for i in 0..2000 {
        let endpoint = if i % 2 == 0 { "support" } else { "sales" };
        let key = crate::keys::generate(endpoint, Some(format!("k{i}")));
        store.add_api_key(key.record).await.unwrap();
        secrets.push((endpoint, key.secret));
    }
    for (endpoint, secret) in secrets.iter().step_by(97) {
        let hash = crate::keys::hash(secret);
        assert!(store.is_active_key(endpoint, hash).await.unwrap());
        let other = if *endpoint == "support" {
            "sales"
        } else {
            "support"
        };
        assert!(!store.is_active_key(other, hash).await.unwrap());
    }
    let wrong = crate::keys::hash("fhk_wrong");
    assert!(!store.is_active_key("support", wrong).await.unwrap());

    // One search of the unique index on the hash, not a scan of the
    // endpoint's keys.
    let plan: Vec<String> = store
        .point_read(|conn| {
            conn.prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::credentials::ACTIVE_KEY
            ))?
            .query_map(params![&wrong[..], "support"], |row| {
                row.get::<_, String>(3)
            })?
            .collect()
        })
        .unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert!(
        plan[0].contains("USING INDEX sqlite_autoindex_api_keys") && plan[0].contains("(hash=?)"),
        "{plan:?}"
    );
}

#[tokio::test]
async fn a_full_database_is_a_failure_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(dir.path(), false).unwrap();
    // Cap the database at its size: the next page it needs is past a
    // full disk, as SQLite sees it.
    store
        .write(|conn| {
            let pages: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        })
        .await
        .unwrap();
    let mut big = message("s1", "");
    big.text = Some("x".repeat(200_000));
    let error = store
        .accept(big, None, Box::new(|_| panic!("not accepted")))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(store.unfinished_messages(0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reads_take_turns_on_a_bounded_number_of_connections() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let reads: Vec<_> = (0..4 * MAX_READS)
        .map(|_| {
            let (store, running, most) =
                (Arc::clone(&store), Arc::clone(&running), Arc::clone(&most));
            tokio::spawn(async move {
                store
                    .read(move |conn| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Long enough for the others to pile up.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap(), 1);
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= MAX_READS, "{most} reads at once");
    assert!(store.readers.idle.lock().unwrap().len() <= MAX_READS);
}
