//! The repository's own tasks, run with `cargo xtask <task>`:
//!
//! - `demo`: builds the example flows and serves them with
//!   `demo/flowhost.toml`, beside a webhook receiver that prints every
//!   delivery.
//! - `bench [--quick] [--only fast_path|waiting|noisy_neighbours|hostile_neighbours]
//!   [--flowhost PATH]`: the load bench (see `bench/mod.rs`), in release.
//! - `code-shape <file.wasm>…`: what each component takes of the instance
//!   pool and how complex its code is, against flowhost's bounds.
//! - `module-graph [CHECKOUT]`: which host modules use which, and any
//!   cycle (in this checkout, or another one, such as an older version).

mod bench;
mod flow_costs;
mod modules;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask demo | cargo xtask bench [--quick] [--only SCENARIO] [--flowhost PATH] | cargo xtask code-shape <file.wasm>… | cargo xtask flow-costs [--flowhost PATH] <file.wasm>… | cargo xtask module-graph [CHECKOUT]";

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the xtask crate lives in the repository")?
        .to_owned();
    std::env::set_current_dir(&root)?;
    let rest: Vec<String> = std::env::args().skip(2).collect();
    match task.as_str() {
        "demo" => demo(&root),
        "bench" if cfg!(debug_assertions) => {
            // Measure optimised code: run this task again from a release build.
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
                .args(&rest)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        "bench" => bench::run(&root, &rest),
        "bench-ceiling" => {
            let listen = rest
                .first()
                .map_or("127.0.0.1:0", String::as_str)
                .to_owned();
            tokio::runtime::Runtime::new()?.block_on(bench::serve_ceiling(&listen))
        }
        "code-shape" if !rest.is_empty() => code_shape(&rest),
        "flow-costs" if !rest.is_empty() => flow_costs::run(&root, &rest),
        "module-graph" => modules::run(&rest.first().map_or(root.clone(), PathBuf::from)),
        _ => bail!("{USAGE}"),
    }
}

/// Prints, for each component, what it takes of the instance pool and the
/// shape of its most complex function, beside flowhost's bounds.
fn code_shape(files: &[String]) -> anyhow::Result<()> {
    use flowhost::runtime::{self, precheck};
    let bounds = precheck::CodeBounds::default();
    println!(
        "bounds: {} core instances, {} memories, {} tables; {} locals, nesting {}, locals x loops {}",
        runtime::MAX_CORE_INSTANCES_PER_FLOW,
        runtime::MAX_MEMORIES_PER_FLOW,
        runtime::MAX_TABLES_PER_FLOW,
        bounds.max_locals,
        bounds.max_nesting,
        bounds.max_locals_times_loops
    );
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let unbounded = precheck::CodeBounds {
            max_locals: u32::MAX,
            max_nesting: u32::MAX,
            max_locals_times_loops: u64::MAX,
        };
        let shape = precheck::check(&bytes, &unbounded)?;
        let [instances, memories, tables] = runtime::pool_footprint(&bytes)?;
        println!(
            "{file}: {} bytes; {instances} core instances, {memories} memories, {tables} tables; \
             {} functions, at most {} locals, nesting {}, locals x loops {}",
            bytes.len(),
            shape.functions,
            shape.max_locals,
            shape.max_nesting,
            shape.max_locals_times_loops
        );
    }
    Ok(())
}

/// Builds the example flows, starts the receiver and flowhost, and prints
/// commands to try.
fn demo(root: &Path) -> anyhow::Result<()> {
    add_wasm_target();
    let flows = root.join("target/demo/flows");
    println!("Building the example flows (the first build takes a minute)…");
    for built in flowhost::flows::build::build_crate(&root.join("example-flows"), &flows, None)? {
        println!("  built {}", relative(root, &built).display());
    }

    let config_path = root.join("demo/flowhost.toml");
    let config = flowhost::Config::load(Some(&config_path), &Default::default())?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let telemetry = flowhost::telemetry::init(None, "info")?;
        let key = demo_api_key(&config).await?;
        let receiver = tokio::net::TcpListener::bind("127.0.0.1:9000")
            .await
            .context("starting the demo receiver on 127.0.0.1:9000")?;
        tokio::spawn(receive(receiver));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let admin_token = config.admin_token.clone();
        let server = flowhost::Server::start(listener, config).await?;
        println!("{}", flowhost::StartLine::listening(server.local_addr()));
        // The demo's URL tokens are fixed in its configuration, and
        // printed whole for the tour.
        for url in server.endpoint_urls() {
            println!("  endpoint {} (flow {}): {}", url.name, url.flow, url.url);
        }
        print_tour(
            &format!("http://{}", server.local_addr()),
            &key,
            admin_token.as_deref(),
        );
        let served = server.serve(flowhost::shutdown::signal()).await;
        telemetry.shutdown().await;
        served
    })
}

fn add_wasm_target() {
    let added = Command::new("rustup")
        .args(["target", "add", flowhost::flows::build::TARGET])
        .output();
    if !added.is_ok_and(|out| out.status.success()) {
        eprintln!(
            "note: could not run `rustup target add {}`; the build says whether it is needed",
            flowhost::flows::build::TARGET
        );
    }
}

/// A fresh API key for the `support` endpoint, which requires one; the
/// previous run's key is revoked.
async fn demo_api_key(config: &flowhost::Config) -> anyhow::Result<String> {
    use flowhost::store::{CredentialStore, SqliteStore};
    let store = SqliteStore::open(&config.data_dir)?;
    while store.revoke_api_key("support", "demo").await? {}
    let key = flowhost::keys::generate("support", Some("demo".into()));
    store.add_api_key(key.record).await?;
    store.close();
    Ok(key.secret)
}

fn print_tour(base: &str, key: &str, admin_token: Option<&str>) {
    let seed = r#"'{"userId": "user123", "sessionId": "session123", "text": "Hello, I need help with my order", "data": {"exampleKey": "exampleValue"}}'"#;
    println!();
    println!("The demo receiver on http://127.0.0.1:9000/hook prints every delivery below.");
    println!("Try, in another terminal:");
    println!();
    println!("  curl -X POST {base}/endpoint/demo-echo-0000000000000000 \\");
    println!("    -H \"Content-Type: application/json\" -d {seed}");
    println!();
    println!("  curl -X POST {base}/endpoint/demo-support-000000000000 \\");
    println!("    -H \"Content-Type: application/json\" -H \"X-Webhook-Key: {key}\" -d {seed}");
    println!();
    println!("  curl -X POST {base}/endpoint/demo-sms-0000000000000000 \\");
    println!(
        "    --data-urlencode 'From=+15551234567' --data-urlencode 'Body=Where is my order 12345?'"
    );
    println!();
    if let Some(token) = admin_token {
        println!("The console: {base}/console (sign in with the admin token {token}).");
        println!();
    }
    println!("Stop with Ctrl-C.");
    println!();
}

/// The demo's webhook receiver: prints each delivery's body as it came,
/// answers 200.
async fn receive(listener: tokio::net::TcpListener) {
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|headers: HeaderMap, body: String| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            println!("delivery (Authorization: {auth}):\n  {body}");
        }),
    );
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("the demo receiver stopped: {error}");
    }
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_owned()
}
