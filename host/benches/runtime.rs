//! Micro benchmarks of a message's costs inside flowhost, with the `echo`
//! example flow: `cargo bench -p flowhost`.
//!
//! - `instantiate_and_call`: a fresh instance from the cached `InstancePre`
//!   (pooling allocator, WASI linked) and one call of `handle`: what every
//!   message pays;
//! - `call_warm_instance`: a call on an instance kept warm, for comparison
//!   (flowhost never reuses instances);
//! - `compile` and `load_from_cache`: what loading a flow costs, without and
//!   with the compile cache;
//! - `validate_request`: parsing and checking one inbound body.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flowhost::flows::{CompileCache, Loader};
use flowhost::runtime::{Invocation, Runtime};

fn echo_wasm() -> PathBuf {
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
    out.join("echo.wasm")
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

fn benches(c: &mut Criterion) {
    let wasm_path = echo_wasm();
    let wasm = std::fs::read(&wasm_path).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = flowhost::Config::from_toml("").unwrap();
    let runtime = Arc::new(Runtime::new(&config.runtime).unwrap());
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
            let code = cache.get(&content).unwrap();
            // SAFETY: the cache verified that this host wrote the entry.
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

criterion_group!(runtime_benches, benches);
criterion_main!(runtime_benches);
