//! The `flowhost` command: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use flowhost::config::{Config, Overrides};
use flowhost::flows::watch_build::WatchBuild;
use flowhost::local::conversation::Conversation;
use flowhost::local::{self, LocalFlow, LocalMessage, LocalOutcome};
use flowhost::new_flow;
use flowhost::preflight;
use flowhost::store::Opened;

/// jemalloc rather than the system's allocator: a message's path allocates
/// and frees on many threads (HTTP, flows, store, delivery), where glibc's
/// malloc spent about a seventh of flowhost's CPU. Measured with `cargo
/// xtask bench` on the same machine, one run after the other: end to end
/// 9.2–9.5k messages/s at 0.16 CPU-s per 1,000 against 6.0–7.1k at
/// 0.22–0.27; 10,000 waiting turns peaked at 858 MiB against 841 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A self-hosted webhook endpoint whose flows are WebAssembly components.
#[derive(Parser)]
#[command(name = "flowhost", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the configured endpoints until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Creates, lists and revokes endpoint API keys (live: no restart needed).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Erases what is kept of a user (data protection).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Lists the endpoints with their flows and whole URLs (the lines
    /// `serve` prints at start cut the URL tokens, which are secrets).
    Endpoints(ConfigArgs),
    /// Runs a flow once, locally, and prints the webhook bodies it would send,
    /// one JSON document per line.
    Run(RunArgs),
    /// Runs conversation files against a flow, locally, and shows every
    /// turn that went otherwise than its file expects; exits non-zero if
    /// any did. The file format is in the README ("Testing a flow").
    Test(TestArgs),
    /// Writes a new flow project: its sources, a build that pins its
    /// toolchain, a conversation for `flowhost test`, and a README.
    New(NewArgs),
    /// Makes a flow component of a core WebAssembly module, such as a C
    /// compiler makes for wasm32-wasi: what `wasm-tools component embed`
    /// and `component new` do, with this host's WASI adapter.
    Componentize(ComponentizeArgs),
    /// Checks the configuration and every flow as `serve` would, prints each
    /// problem, and exits non-zero if there is any: for a deploy pipeline.
    Check(ConfigArgs),
    /// Compiles a component read on stdin and writes its code on stdout:
    /// what `serve` runs in a child process for each flow it compiles.
    #[command(name = "compile-flow", hide = true)]
    CompileFlow(CompileFlowArgs),
}

#[derive(Args)]
struct CompileFlowArgs {
    /// The most memory the compiler may use, in bytes.
    #[arg(long)]
    max_memory: u64,
    /// The most CPU seconds the compiler may use on each core.
    #[arg(long)]
    max_seconds: u64,
    /// `runtime.max_wasm_stack`, in bytes.
    #[arg(long)]
    max_wasm_stack: u64,
    /// `runtime.fuel_metering`.
    #[arg(long)]
    fuel_metering: bool,
}

#[derive(Args)]
struct ConfigArgs {
    /// The configuration file [default: flowhost.toml, if present].
    #[arg(long, short, env = "FLOWHOST_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The address to listen on, such as 127.0.0.1:8080 (port 0: any free port).
    #[arg(long)]
    listen: Option<String>,
    /// The folder of flow files.
    #[arg(long)]
    flows_dir: Option<PathBuf>,
    /// The folder of the store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A flow's folder to rebuild into the flows folder whenever its
    /// sources change: a crate, built with cargo, or any folder with the
    /// command that builds it (`--watch-build ../my-flow "npm run build"`);
    /// may be given several times.
    #[arg(long, num_args = 1..=2, value_names = ["DIR", "COMMAND"])]
    watch_build: Vec<String>,
    /// `--watch-build`, each occurrence's values together (clap's derive
    /// flattens them; see [`watch_builds`]).
    #[arg(skip)]
    builds: Vec<WatchBuild>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key for an endpoint and prints it, once.
    Create {
        /// The endpoint's name.
        endpoint: String,
        /// A name for the key, to tell keys apart.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Lists the keys of one endpoint, or of all.
    List {
        /// The endpoint's name.
        endpoint: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revokes a key, by id or name.
    Revoke {
        /// The endpoint's name.
        endpoint: String,
        /// The key's id (key_…) or name.
        key: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Removes the user's profile, the contexts of their sessions, their
    /// messages and their outputs (pending ones too) at one endpoint, and
    /// prints how many of each went.
    Erase {
        /// The endpoint's name.
        endpoint: String,
        /// The user's id (`userId`).
        user: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Args)]
struct NewArgs {
    /// The flow's name (a-z, 0-9, '-', '_'): the folder made, and the
    /// component built.
    name: String,
    /// The language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: new_flow::Language,
    /// Where to write it [default: ./<name>].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// For Rust: a local flowhost-sdk crate to depend on, instead of the
    /// flowhost repository's.
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Args)]
struct ComponentizeArgs {
    /// The core module.
    module: PathBuf,
    /// The WIT the module was built against, a file or a folder (a C
    /// project's `wit`). Not needed if the module carries its type already.
    #[arg(long)]
    wit: Option<PathBuf>,
    /// The world of that WIT which the module implements.
    #[arg(long, default_value = "flow")]
    world: String,
    /// Where to write the component.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
struct TestArgs {
    /// The flow's component (`<name>.wasm`); its `<name>.toml` is read too.
    flow: PathBuf,
    /// Conversation files (TOML), each run from a fresh state.
    #[arg(required = true)]
    conversations: Vec<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The flow's component (`<name>.wasm`); its `<name>.toml` is read too.
    flow: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
    /// The message's userId.
    #[arg(long)]
    user: String,
    /// The message's sessionId.
    #[arg(long)]
    session: String,
    /// The message's text.
    #[arg(long)]
    text: Option<String>,
    /// The message's data, a JSON object.
    #[arg(long)]
    data: Option<String>,
    /// A JSON file holding the context and profile: read before the run,
    /// written after a successful one, for multi-turn conversations.
    #[arg(long)]
    state: Option<PathBuf>,
}

/// How long the process waits, once done, for threads still busy (a flow's
/// blocking file read, say) before it exits anyway.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let Command::Serve(args) = &mut cli.command {
        args.builds = watch_builds(&matches);
    }
    if let Command::CompileFlow(args) = cli.command {
        // The child of `serve`: no runtime, no log, just the compiler.
        let settings = flowhost::runtime::EngineSettings {
            max_wasm_stack: args.max_wasm_stack,
            fuel_metering: args.fuel_metering,
        };
        return flowhost::flows::compiler::child_main(settings, args.max_memory, args.max_seconds);
    }
    // `serve` starts its log once it has read the configuration, which may
    // turn traces on.
    // (Without an endpoint there is no exporter to shut down.)
    // `run` and `test` print what the author asked for; their log says
    // only what went wrong.
    let level = match cli.command {
        Command::Run(_) | Command::Test(_) | Command::Componentize(_) => "warn",
        _ => "info",
    };
    if !matches!(cli.command, Command::Serve(_))
        && let Err(error) = flowhost::telemetry::init(None, level)
    {
        eprintln!("error: cannot start the log: {error:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(execute(cli.command));
    // Dropping the runtime would wait for every blocking thread to finish.
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Each `--watch-build DIR [COMMAND]` of `serve`, its values kept together.
fn watch_builds(matches: &clap::ArgMatches) -> Vec<WatchBuild> {
    let Some(("serve", serve)) = matches.subcommand() else {
        return Vec::new();
    };
    serve
        .get_occurrences::<String>("watch_build")
        .into_iter()
        .flatten()
        .map(|mut values| WatchBuild {
            dir: PathBuf::from(values.next().expect("at least one value")),
            command: values.next().cloned(),
        })
        .collect()
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen,
                flows_dir: args.flows_dir,
                data_dir: args.data_dir,
                watch_build: args.builds,
            };
            let mut config = Config::load(args.config.config.as_deref(), &overrides)?;
            let telemetry =
                flowhost::telemetry::init(config.telemetry.otlp_endpoint.as_deref(), "info")
                    .context("starting the trace exporter")?;
            // Flows are compiled by this executable in a child process,
            // bounded in time and memory.
            config.compiler_program =
                Some(std::env::current_exe().context("finding the flowhost executable")?);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            let served = flowhost::run(listener, config, flowhost::shutdown::signal()).await;
            telemetry.shutdown().await;
            served?;
        }
        Command::Keys(command) => keys(command).await?,
        Command::Users(UsersCommand::Erase {
            endpoint,
            user,
            config,
        }) => {
            let config = Config::load(config.config.as_deref(), &Overrides::default())?;
            if !config.endpoints.contains_key(&endpoint) {
                bail!("no endpoint named {endpoint:?} in the configuration");
            }
            let opened = Opened::open(&config.store, &config.data_dir).await?;
            let erased = opened.store().erase_user(&endpoint, &user).await;
            opened.close();
            let erased = erased?;
            println!(
                "erased from {endpoint}: {} profile, {} sessions, {} messages, {} outputs",
                erased.profiles, erased.sessions, erased.messages, erased.outputs
            );
        }
        Command::Endpoints(args) => {
            let config = Config::load(args.config.as_deref(), &Overrides::default())?;
            let store = Opened::open(&config.store, &config.data_dir).await?;
            let resolved =
                flowhost::reload::resolve_endpoints(&config, store.store().as_ref()).await;
            store.close();
            let resolved = resolved?;
            let base = config.base_url(config.listen);
            println!("{:<16} {:<16} URL", "ENDPOINT", "FLOW");
            for endpoint in resolved.endpoints {
                println!(
                    "{:<16} {:<16} {}",
                    endpoint.name(),
                    endpoint.config.flow,
                    endpoint.url(&base)
                );
            }
        }
        Command::Check(args) => return check(args.config.as_deref()).await,
        Command::CompileFlow(_) => unreachable!("handled before the runtime starts"),
        Command::Run(args) => {
            let config = Config::load(args.config.config.as_deref(), &Overrides::default())?;
            let message = LocalMessage {
                user_id: args.user,
                session_id: args.session,
                text: args.text,
                data: args.data.as_deref().map(local::parse_data).transpose()?,
            };
            match local::run_flow(&args.flow, &config, message, args.state.as_ref()).await? {
                LocalOutcome::Outputs(bodies) => {
                    for body in bodies {
                        println!("{body}");
                    }
                }
                LocalOutcome::Failed(failure) => {
                    eprintln!("the flow failed: {}", failure.reason);
                    if let Some(panic) = failure.panic_message() {
                        eprintln!("  {panic}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Test(args) => return test(args).await,
        Command::New(args) => {
            let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
            let new = new_flow::NewFlow {
                name: args.name,
                language: args.lang,
                sdk: args.sdk,
            };
            new.write(&dir)?;
            println!("Created the flow {} in {}. Next:", new.name, dir.display());
            for step in new.next_steps() {
                println!("  {step}");
            }
        }
        Command::Componentize(args) => {
            let module = std::fs::read(&args.module)
                .with_context(|| format!("reading {}", args.module.display()))?;
            let component = new_flow::c::componentize(&module, args.wit.as_deref(), &args.world)
                .with_context(|| format!("componentizing {}", args.module.display()))?;
            std::fs::write(&args.output, component)
                .with_context(|| format!("writing {}", args.output.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.config.as_deref(), &Overrides::default())?;
    // Every file is read first: a typo shows before a slow first compile.
    let mut conversations = Vec::new();
    for path in &args.conversations {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let conversation = Conversation::parse(&text)
            .with_context(|| format!("{} is not a conversation file", path.display()))?;
        conversations.push((path, conversation));
    }
    let flow = LocalFlow::load(&args.flow, &config).await?;
    let (took, from_cache) = flow.load_time();
    println!(
        "{}: loaded in {} ms{}",
        args.flow.display(),
        took.as_millis(),
        if from_cache {
            " from the compile cache"
        } else {
            " (compiled, and cached for the next run)"
        }
    );
    let mut failed = 0;
    for (path, conversation) in &conversations {
        let report = local::conversation::run(&flow, conversation).await;
        let turns = report.turns.len();
        if report.passed() {
            println!(
                "ok      {}: {turns} turns, {} outputs",
                path.display(),
                report.outputs
            );
        } else {
            failed += 1;
            let bad = report.turns.iter().filter(|t| !t.differences.is_empty());
            println!(
                "FAILED  {}: {} of {turns} turns\n{}",
                path.display(),
                bad.count(),
                report.render_failures()
            );
        }
    }
    if failed > 0 {
        println!("{failed} of {} conversations failed", conversations.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(path: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let file = path.unwrap_or(std::path::Path::new(flowhost::config::DEFAULT_CONFIG_FILE));
    let (findings, summary) = match Config::load(path, &Overrides::default()) {
        Err(error) => (preflight::config_findings(&error, file), None),
        Ok(config) => {
            let report = preflight::check(&config).await?;
            let summary = format!(
                "{} endpoints, {} flows ({})",
                report.endpoints,
                report.flows.len(),
                report.flows.join(", ")
            );
            (report.findings, Some(summary))
        }
    };
    for finding in &findings {
        println!("problem: {finding}");
    }
    match summary {
        Some(summary) if findings.is_empty() => {
            println!("ok: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{} problems", findings.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let config_path = match &command {
        KeysCommand::Create { config, .. }
        | KeysCommand::List { config, .. }
        | KeysCommand::Revoke { config, .. } => config.config.clone(),
    };
    let config = Config::load(config_path.as_deref(), &Overrides::default())?;
    let opened = Opened::open(&config.store, &config.data_dir).await?;
    let store = opened.store();
    let known = |endpoint: &str| -> anyhow::Result<()> {
        if !config.endpoints.contains_key(endpoint) {
            bail!("no endpoint named {endpoint:?} in the configuration");
        }
        Ok(())
    };
    match command {
        KeysCommand::Create { endpoint, name, .. } => {
            known(&endpoint)?;
            let key = flowhost::keys::generate(&endpoint, name);
            store.add_api_key(key.record.clone()).await?;
            eprintln!(
                "Created {} for endpoint {endpoint}. Keep the key now: it cannot be shown again.",
                key.record.info.id
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { endpoint, .. } => {
            if let Some(endpoint) = &endpoint {
                known(endpoint)?;
            }
            println!(
                "{:<18} {:<16} {:<16} {:<12} STATUS",
                "ID", "ENDPOINT", "NAME", "PREFIX"
            );
            for key in store.api_keys(endpoint.as_deref()).await? {
                println!(
                    "{:<18} {:<16} {:<16} {:<12} {}",
                    key.id,
                    key.endpoint,
                    key.name.as_deref().unwrap_or("-"),
                    key.prefix,
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        KeysCommand::Revoke { endpoint, key, .. } => {
            known(&endpoint)?;
            if !store.revoke_api_key(&endpoint, &key).await? {
                bail!("endpoint {endpoint} has no active key {key:?}");
            }
            eprintln!("Revoked {key} of endpoint {endpoint}; it is refused from now on.");
        }
    }
    opened.close();
    Ok(())
}
