//! Micro benchmarks of a message's costs inside flowhost, with the `echo`
//! example flow: `cargo bench -p flowhost`.
//!
//! - `instantiate_and_call`: a fresh instance from the cached `InstancePre`
//!   (pooling allocator, WASI linked) and one call of `handle`: what every
//!   message pays;
//! - `call_warm_instance`: a call on an instance kept warm, for comparison
//!   (flowhost never reuses instances);
//! - `compile` and `load_from_cache`: what loading a flow costs, without and
//!   with the compile cache (the cache's file mapped, as the host does; and
//!   `load_from_cache_copied`, read and copied into each engine, before);
//! - `validate_request`: parsing and checking one inbound body;
//! - `transformer`: what an endpoint's transformer adds to a message, with
//!   the `slack` example: `handle_input` (a signed `event_callback`, its
//!   signature checked) and `handle_output` (a `chat.postMessage` body), each
//!   in a fresh instance on the flow threads, beside `echo_turn`, a turn of
//!   `echo` run the same way, as the baseline;
//! - `languages`: the `order-help` conversation's first turn in Rust (the
//!   baseline), Python, JavaScript and C, each a fresh instance on the flow
//!   threads, and each loaded from the compile cache (its code mapped).
//!   The Python, JavaScript and C flows are the ones the test suite builds
//!   (`cargo test --workspace --test languages` first); without them the
//!   group measures Rust alone and says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flowhost::flows::{CompileCache, Loader};
use flowhost::runtime::{Invocation, Runtime, channel};

/// The example flows, built; the folder they are in.
fn built() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let out = root.join("target/bench-flows");
    flowhost::flows::build::build_crate(
        &root.join("example-flows"),
        &out,
        Some(&root.join("target/flows-build")),
    )
    .expect("building the example flows");
    out
}

fn invocation() -> Invocation {
    Invocation {
        endpoint: "bench".into(),
        user_id: "user123".into(),
        session_id: "session123".into(),
        text: Some("Hello, I need help with my order".into()),
        data: Some(r#"{"exampleKey":"exampleValue"}"#.into()),
        trace_id: "endpoint-httpIncomingMessage-00000000-0000-0000-0000-000000000000".into(),
        source: flowhost::runtime::Source::User,
        context: "{}".into(),
        profile: "{}".into(),
        sensitive: false,
        said: None,
    }
}

/// The default configuration, and a runtime of its settings.
fn defaults() -> (flowhost::Config, Arc<Runtime>) {
    let config = flowhost::Config::from_toml("").unwrap();
    let runtime = Arc::new(Runtime::new(&config.runtime).unwrap());
    (config, runtime)
}

fn benches(c: &mut Criterion) {
    let wasm_path = built().join("echo.wasm");
    let wasm = std::fs::read(&wasm_path).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (config, runtime) = defaults();
    let loader = Loader::new(Arc::clone(&runtime), config.limits.clone(), None);
    let echo = tokio.block_on(loader.load_path(&wasm_path)).unwrap();

    c.bench_function("instantiate_and_call", |b| {
        b.to_async(&tokio).iter(|| async {
            runtime.run_here(&echo.ready, invocation()).await.unwrap();
        })
    });

    let mut warm = tokio.block_on(runtime.warm_instance(&echo.ready)).unwrap();
    c.bench_function("call_warm_instance", |b| {
        b.iter(|| {
            tokio
                .block_on(warm.call("Hello, I need help with my order"))
                .unwrap()
        })
    });

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("compile", |b| b.iter(|| runtime.compile(&wasm).unwrap()));
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::open(cache_dir.path(), runtime.compatibility_key()).unwrap();
    let content: [u8; 32] =
        sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), &wasm)).into();
    cache
        .put(
            &content,
            &runtime.serialize(&runtime.compile(&wasm).unwrap()).unwrap(),
        )
        .unwrap();
    group.bench_function("load_from_cache", |b| {
        b.iter(|| {
            let file = cache.verified_file(&content).unwrap();
            // SAFETY: the cache verified that this host wrote the entry.
            #[allow(unsafe_code)]
            unsafe { runtime.deserialize_file(&file) }.unwrap()
        })
    });
    // The code read into memory and copied into each engine, as before
    // the cache's code was mapped: the baseline of the one above.
    group.bench_function("load_from_cache_copied", |b| {
        b.iter(|| {
            let code = cache.get(&content).unwrap();
            // SAFETY: as above.
            #[allow(unsafe_code)]
            unsafe { runtime.deserialize(&code) }.unwrap()
        })
    });
    group.finish();

    let body = br#"{"userId":"user123","sessionId":"session123","text":"Hello, I need help with my order","data":{"exampleKey":"exampleValue"}}"#;
    c.bench_function("validate_request", |b| {
        b.iter(|| flowhost::http::message::parse(body).unwrap())
    });
}

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A Slack `event_callback`, signed now, as the Events API sends it.
fn slack_request() -> channel::Request {
    use hmac::{Hmac, Mac};
    let body = r#"{"type":"event_callback","team_id":"T0001","event":{"type":"message","channel":"C456","user":"U123","text":"Where is order 12345?","ts":"1700000000.000100"}}"#;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    channel::Request {
        method: "POST".into(),
        path: "/endpoint/bench".into(),
        query: None,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-slack-request-timestamp".into(), timestamp),
            ("x-slack-signature".into(), signature),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn transformer_benches(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (config, runtime) = defaults();
    let loader = Loader::new(Arc::clone(&runtime), config.limits.clone(), None);
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(built().join("slack.wasm"), folder.path().join("slack.wasm")).unwrap();
    std::fs::write(
        folder.path().join("slack.toml"),
        format!("[config]\nsigning_secret = \"{SLACK_SECRET}\"\n"),
    )
    .unwrap();
    let slack = tokio
        .block_on(loader.load_path(&folder.path().join("slack.wasm")))
        .unwrap();
    let echo = tokio
        .block_on(loader.load_path(&built().join("echo.wasm")))
        .unwrap();
    // The request is signed once: the transformer refuses one older than
    // five minutes, and a run is shorter than that.
    let request = slack_request();
    let runs = tokio
        .block_on(runtime.transform_input(&slack.ready, "bench", false, request.clone()))
        .unwrap();
    assert!(
        matches!(runs, Some(channel::Input::Run(_))),
        "the signed event is run"
    );
    let output = channel::Output {
        user_id: "U123".into(),
        session_id: "C456".into(),
        text: Some("Thanks! Order 12345 is on its way.".into()),
        data: Some(r#"{"orderNumber":"12345"}"#.into()),
        trace_id: "endpoint-httpIncomingMessage-00000000-0000-0000-0000-000000000000".into(),
        endpoint: "bench".into(),
    };

    let mut group = c.benchmark_group("transformer");
    group.bench_function("echo_turn", |b| {
        b.to_async(&tokio).iter(|| async {
            runtime.run(&echo.ready, invocation()).await.unwrap();
        })
    });
    group.bench_function("slack_handle_input", |b| {
        b.to_async(&tokio).iter(|| async {
            runtime
                .transform_input(&slack.ready, "bench", false, request.clone())
                .await
                .unwrap()
                .unwrap();
        })
    });
    group.bench_function("slack_handle_output", |b| {
        b.to_async(&tokio).iter(|| async {
            runtime
                .transform_output(&slack.ready, false, output.clone())
                .await
                .unwrap()
                .unwrap();
        })
    });
    group.finish();
}

fn language_benches(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut flows = vec![("rust", built().join("order-help.wasm"))];
    for (language, example) in [
        ("python", "order-help-python"),
        ("javascript", "order-help-js"),
        ("c", "order-help-c"),
    ] {
        let path = root.join(format!("target/test-flows/{example}.wasm"));
        if path.exists() {
            flows.push((language, path));
        } else {
            eprintln!(
                "languages: no {} (run `cargo test --workspace --test languages` to build it)",
                path.display()
            );
        }
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (config, runtime) = defaults();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = || CompileCache::open(cache_dir.path(), runtime.compatibility_key()).unwrap();
    let loader = Loader::new(Arc::clone(&runtime), config.limits.clone(), Some(cache()));

    let mut group = c.benchmark_group("languages");
    for (language, path) in &flows {
        // Compiled once, into the cache; every load below is from it.
        let flow = tokio.block_on(loader.load_path(path)).unwrap();
        group.bench_function(format!("order_help_turn/{language}"), |b| {
            b.to_async(&tokio).iter(|| async {
                runtime.run(&flow.ready, invocation()).await.unwrap();
            })
        });
    }
    group.sample_size(20);
    for (language, path) in &flows {
        let wasm = std::fs::read(path).unwrap();
        let content: [u8; 32] =
            sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), &wasm))
                .into();
        let cache = cache();
        group.bench_function(format!("load_from_cache/{language}"), |b| {
            b.iter(|| {
                let file = cache.verified_file(&content).unwrap();
                // SAFETY: the cache verified that this host wrote the entry.
                #[allow(unsafe_code)]
                unsafe { runtime.deserialize_file(&file) }.unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(
    runtime_benches,
    benches,
    transformer_benches,
    language_benches
);
criterion_main!(runtime_benches);
