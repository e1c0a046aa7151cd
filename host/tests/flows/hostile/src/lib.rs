//! A flow that attacks its host, one way per message: the message's text
//! names the attack. Every message first counts itself in the session's
//! context, so a test can see that a contained attack left no trace.
//!
//! Attacks the host must stop (the message ends): `loop`, `grow`, `recurse`,
//! `panic`, `say-a-million`, `big-say`, `big-context`, `big-profile`,
//! `log-flood`, `huge-say`, `huge-context`, `huge-log` (50 MB strings),
//! `sleep`, `exit`, `fields-flood` (host memory through
//! `wasi:http` header sets), `random-flood` (a huge `wasi:random` call).
//! `tell <text>` writes the text to the log, stdout and stderr, then panics
//! with it: for what the host lets through to its own log.
//! Attacks that must fail inside the flow, which then says what it got:
//! `read-file <path>`, `tcp <address>`, `env`, `http <url>`.
//! `count` says the count and does nothing else; `nap <ms>` sleeps, then
//! says so; `hoard <MiB> <url>` holds that much memory while it calls the
//! URL.

use std::hint::black_box;

use flowhost_sdk::{Result, context, object, say};

fn handle(message: flowhost_sdk::Message) -> Result<()> {
    let mut state = context().get()?;
    let count = state.get("count").and_then(|c| c.as_u64()).unwrap_or(0) + 1;
    state.insert("count".into(), count.into());
    context().set(state);

    let text = message.text.unwrap_or_default();
    let (attack, argument) = text.split_once(' ').unwrap_or((&text, ""));
    match attack {
        "count" => say(format!("count {count}")),
        "loop" => loop {
            black_box(count);
        },
        "grow" => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "recurse" => say(format!("{}", recurse(black_box(count)))),
        "panic" => panic!("hostile flow panics"),
        "say-a-million" => {
            for n in 0..1_000_000 {
                say(format!("{n}"));
            }
        }
        "big-say" => say("x".repeat(1 << 20)),
        "big-context" => context().set(object!({ "blob": "x".repeat(10 << 20) })),
        "big-profile" => flowhost_sdk::profile().set(object!({ "blob": "x".repeat(1 << 20) })),
        "huge-say" => say("x".repeat(50 << 20)),
        "huge-context" => context().set(object!({ "blob": "x".repeat(50 << 20) })),
        "huge-log" => flowhost_sdk::info!("{}", "x".repeat(50 << 20)),
        "log-flood" => {
            for line in 0..100_000 {
                println!("flooding the log, line {line}");
            }
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(60)),
        "exit" => std::process::exit(3),
        "fields-flood" => {
            // Each header set lives in the host, outside this flow's memory.
            let value = vec![b'x'; 15_000];
            let mut hoard = Vec::new();
            loop {
                let fields = wasip2::http::types::Fields::new();
                let _ = fields.append("x-flood", &value);
                hoard.push(fields);
            }
        }
        "random-flood" => {
            let bytes = wasip2::random::random::get_random_bytes(1 << 28);
            say(format!("got {} random bytes", bytes.len()));
        }
        "tell" => {
            flowhost_sdk::info!("told: {argument}");
            println!("stdout: {argument}");
            eprintln!("stderr: {argument}");
            panic!("panicking with {argument}");
        }
        "hoard" => {
            // Holds `<MiB>` of memory while it waits on `<url>`.
            let (mib, url) = argument.split_once(' ').unwrap_or((argument, ""));
            let hoard = black_box(vec![1u8; mib.parse::<usize>().unwrap_or(1) << 20]);
            let answer = flowhost_sdk::http::get(url).map(|r| r.status);
            say(format!("hoarded {} MiB, then {answer:?}", hoard.len() >> 20));
        }
        "nap" => {
            let millis: u64 = argument.parse().unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(millis));
            say(format!("woke after {millis} ms"));
        }
        "read-file" => say(match std::fs::read_to_string(argument) {
            Ok(text) => format!("read {} bytes", text.len()),
            Err(e) => format!("error: {e}"),
        }),
        "tcp" => say(match std::net::TcpStream::connect(argument) {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("error: {e}"),
        }),
        "env" => say(format!(
            "env: {} variables, {} arguments, cwd {:?}",
            std::env::vars().count(),
            std::env::args().count(),
            std::env::current_dir().ok()
        )),
        "http" => say(match flowhost_sdk::http::get(argument) {
            Ok(response) => format!(
                "status {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
            Err(e) => format!("error: {e}"),
        }),
        other => say(format!("unknown attack {other:?}")),
    }
    Ok(())
}

/// Recurses until the wasm call stack is exhausted. Its frames hold no
/// addressed locals, so Rust's own stack in linear memory stays untouched,
/// and rotate-then-xor keeps LLVM from turning the recursion into a loop.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1).rotate_left(1) ^ depth
}

flowhost_sdk::export!(handle);
