//! Attacks from the two security reviews: hostile components, compile
//! bombs, hostile files in the flows folder. Each test fails on the code
//! the reviews attacked (`cc62e4b`) and passes now.

use std::time::Duration;

use crate::support::{Receiver, Site, endpoint, send};

/// A component whose `handle` answers `Ok(())` and says nothing, with the
/// core modules and instances of `extra` beside it: the shell for hostile
/// shapes that Rust would never produce.
fn flow_with(extra: &str) -> String {
    format!(
        r#"(component
  {extra}
  (core module $main
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    ;; The return area of `result<_, string>` is at 0, where memory is zero: ok.
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      i32.const 0)
    ;; A bump allocator, for the strings of the message.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $i (instantiate $main))
  (type $message' (record
    (field "user-id" string)
    (field "session-id" string)
    (field "text" (option string))
    (field "data" (option string))
    (field "trace-id" string)
    (field "endpoint" string)))
  (export $message "message" (type $message'))
  (func (export "handle") (param "message" $message) (result (result (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))"#
    )
}

/// `count` instances of a core module with one memory of `pages` pages (the
/// instance pool allows one memory per module).
fn memories(count: usize, pages: u32) -> String {
    format!(
        "(core module $hog (memory {pages}))\n{}",
        "(core instance (instantiate $hog))\n".repeat(count)
    )
}

/// A core module of `functions` functions, each with `locals` locals read
/// inside `loops` nested loops: the shape that makes Cranelift slow.
fn loop_bombs(functions: usize, locals: u32, loops: u32) -> String {
    let mut one = format!("(func (local {})", "i64 ".repeat(locals as usize));
    one.push_str(&" (loop".repeat(loops as usize));
    for local in 0..locals {
        one.push_str(&format!(" (drop (local.get {local}))"));
    }
    one.push_str(&")".repeat(loops as usize));
    one.push(')');
    format!("(core module $bomb {})", one.repeat(functions))
}

#[tokio::test]
async fn a_component_over_the_per_flow_maxima_is_refused_and_others_keep_running() {
    // The review's #46: one instance of a component with 200 memories took
    // every memory slot of the pool, and five accepted echo messages failed
    // for good.
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("hog", "hog", &receiver)
        ),
    );
    site.add_wat_text("hog", &flow_with(&memories(200, 1)));
    site.add_wat_text("wide", &flow_with(&memories(5, 1)));
    let host = site.start().await;

    let refused = host.wait_for_log(&["flow not loaded", "hog.wasm"]).await;
    assert!(
        refused.contains("201 core module instances") && refused.contains("maximum of 32"),
        "{refused}"
    );
    let refused = host.wait_for_log(&["flow not loaded", "wide.wasm"]).await;
    assert!(
        refused.contains("6 Wasm linear memories") && refused.contains("maximum of 4"),
        "{refused}"
    );
    for n in 0..5 {
        let text = format!("echo {n}");
        send(&host.url("echo"), "victim", &text).await;
        receiver.wait_for_text("victim", |t| t == text).await;
    }
}

#[tokio::test]
async fn memory_is_bounded_per_message_over_all_its_memories() {
    // The review's #47: 20 memories of 55 MiB each under a 64 MiB limit.
    // Three of 30 MiB each are within the per-flow maximum of memories, and
    // together over the limit.
    let receiver = Receiver::start().await;
    let site = Site::new(&[], &endpoint("hog", "hog", &receiver));
    site.add_wat_text("hog", &flow_with(&memories(3, 480)));
    let host = site.start().await;

    send(&host.url("hog"), "s", "grow").await;
    let failed = host.wait_for_log(&["message failed"]).await;
    assert!(failed.contains("memory limit 64 MiB exceeded"), "{failed}");
}

#[tokio::test]
async fn host_resources_a_flow_creates_are_bounded() {
    // The review's #48: a flow with 256 KiB of memory made the host allocate
    // 1.4 GiB in a second through `wasi:http` header sets.
    let receiver = Receiver::start().await;
    let site = Site::new(&[], &endpoint("attack", "hostile", &receiver));
    site.add_flow("hostile", "hostile", None);
    let host = site.start().await;

    send(&host.url("attack"), "fields", "fields-flood").await;
    let failed = host
        .wait_for_log(&["message failed", "session=fields"])
        .await;
    assert!(
        !failed.contains("deadline"),
        "the flood ends at the resource bound, long before the deadline: {failed}"
    );
    send(&host.url("attack"), "random", "random-flood").await;
    let failed = host
        .wait_for_log(&["message failed", "session=random"])
        .await;
    assert!(failed.contains("exceeds limit 65536"), "{failed}");
    assert!(
        !receiver
            .received()
            .iter()
            .any(|r| r.text().starts_with("got")),
        "no flow got 256 MiB of random bytes"
    );
}

#[tokio::test]
async fn a_compile_bomb_is_refused_before_compiling_and_the_others_serve() {
    // The review's 19 KB file: 4,000 locals read inside 1,000 nested loops
    // compiled for 23 s, and every other flow waited behind it.
    let receiver = Receiver::start().await;
    let site = Site::new(&["echo"], &endpoint("echo", "echo", &receiver));
    site.add_wat_text("bomb", &flow_with(&loop_bombs(1, 4_000, 1_000)));
    let host = site.start().await;

    let refused = host.wait_for_log(&["flow not loaded", "bomb.wasm"]).await;
    assert!(refused.contains("refused before compiling"), "{refused}");
    assert!(
        refused.contains("locals × nested loops 4000000"),
        "{refused}"
    );
    send(&host.url("echo"), "s", "still here").await;
    receiver.wait_for_text("s", |t| t == "still here").await;
}

#[tokio::test]
async fn a_compile_over_its_time_bound_is_stopped_and_remembered() {
    // Within the shape bounds, but 500 such functions take minutes: the
    // child compiler is stopped at `compile_timeout`, and the refusal is
    // remembered, so the next start does not pay it again.
    let receiver = Receiver::start().await;
    let site = Site::new(
        &[],
        &format!(
            "[runtime]\ncompile_timeout = \"1s\"\n{}",
            endpoint("slow", "slow", &receiver)
        ),
    );
    site.add_wat_text("slow", &flow_with(&loop_bombs(500, 1_000, 100)));
    let host = site.start().await;
    let refused = host.wait_for_log(&["flow not loaded", "slow.wasm"]).await;
    assert!(
        refused.contains("compiling took longer than runtime.compile_timeout (1 s)"),
        "{refused}"
    );
    host.terminate().await;

    let again = site.start().await;
    let remembered = again.wait_for_log(&["flow not loaded", "slow.wasm"]).await;
    assert!(
        remembered.contains("remembered from an earlier try"),
        "{remembered}"
    );
}

#[tokio::test]
async fn the_host_serves_while_a_flow_compiles_and_stops_without_waiting_for_it() {
    // The review's #2 and #3: a start did not serve for 24 s behind one
    // compile, and SIGTERM waited for it.
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "{}{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("slow", "slow", &receiver),
            endpoint("late", "late", &receiver)
        ),
    );
    site.add_wat_text("slow", &flow_with(&loop_bombs(500, 1_000, 100)));
    let host = site.start_serving().await;

    send(&host.url("echo"), "s", "served").await;
    receiver.wait_for_text("s", |t| t == "served").await;
    // The slow flow is still compiling: accepted, waiting for it.
    send(&host.url("slow"), "waits", "for its flow").await;
    // A flow dropped in meanwhile loads beside it (the review's #1: hot
    // reload waited 23 s behind one compile).
    site.add_flow("late", "echo", None);
    host.wait_for_log(&["flow loaded", "flow=late"]).await;
    send(&host.url("late"), "l", "hot reloaded").await;
    receiver.wait_for_text("l", |t| t == "hot reloaded").await;
    assert!(
        !host.log().contains("flows folder loaded"),
        "the slow flow finished compiling already:\n{}",
        host.log()
    );
    let status = host.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn hostile_files_in_the_flows_folder_are_refused_without_reading_them() {
    // The review's #41 to #45: a FIFO wedged hot reload for good, a manifest
    // linked to a secret file was quoted in the log, a 2 GiB file was read
    // whole before its size was checked.
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "{}{}",
            endpoint("echo", "echo", &receiver),
            endpoint("after", "after", &receiver)
        ),
    );
    let flows = site.path().join("flows");
    let status = std::process::Command::new("mkfifo")
        .arg(flows.join("fifo.wasm"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::File::create(flows.join("big.wasm"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let secret = site.path().join("environ");
    std::fs::write(&secret, "FLOWHOST_ADMIN_TOKEN=the-admin-token-itself\n").unwrap();
    std::fs::copy(crate::support::flow_file("echo"), flows.join("leak.wasm")).unwrap();
    std::os::unix::fs::symlink(&secret, flows.join("leak.toml")).unwrap();
    let host = site.start().await;

    let fifo = host.wait_for_log(&["flow not loaded", "fifo.wasm"]).await;
    assert!(fifo.contains("not a regular file"), "{fifo}");
    let big = host.wait_for_log(&["flow not loaded", "big.wasm"]).await;
    assert!(
        big.contains("2147483648 bytes, over the limit of 33554432"),
        "{big}"
    );
    let leak = host.wait_for_log(&["flow not loaded", "leak.wasm"]).await;
    assert!(leak.contains("invalid manifest leak.toml"), "{leak}");
    assert!(
        !host.log().contains("the-admin-token-itself"),
        "{}",
        host.log()
    );

    // Hot reload goes on: a flow dropped in now loads and serves.
    std::fs::copy(crate::support::flow_file("echo"), flows.join("after.wasm")).unwrap();
    host.wait_for_log(&["flow loaded", "flow=after"]).await;
    send(&host.url("after"), "s", "after the fifo").await;
    receiver.wait_for_text("s", |t| t == "after the fifo").await;
    let stopped = tokio::time::timeout(Duration::from_secs(60), host.terminate()).await;
    assert!(stopped.is_ok(), "SIGTERM stopped the host");
}

#[tokio::test]
async fn what_flows_log_is_escaped_and_kept_out_when_the_endpoint_asks() {
    // The review's #49 and #50: a card number in the log under
    // `disable_sensitive_logging`, forged log lines through newlines.
    let receiver = Receiver::start().await;
    let site = Site::new(
        &[],
        &format!(
            "{}disable_sensitive_logging = true\n{}",
            endpoint("private", "hostile", &receiver),
            endpoint("open", "hostile", &receiver)
        ),
    );
    site.add_flow("hostile", "hostile", None);
    let host = site.start().await;

    send(&host.url("private"), "p", "tell CONFIDENTIAL-card-4111").await;
    host.wait_for_log(&["message failed", "session=p"]).await;
    send(
        &host.url("open"),
        "o",
        "tell visible\n2026-01-01 ERROR FORGED",
    )
    .await;
    host.wait_for_log(&["message failed", "session=o"]).await;
    let log = host.log();
    assert!(!log.contains("CONFIDENTIAL"), "{log}");
    assert!(
        log.contains("withheld (disable_sensitive_logging or mask_logging)"),
        "{log}"
    );
    assert!(log.contains("told: visible"), "{log}");
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-01-01 ERROR FORGED")),
        "{log}"
    );
}
