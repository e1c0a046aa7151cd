//! Compiling a flow in a child process, with a time and a memory bound.
//!
//! A flow file is untrusted input to a compiler whose cost is not linear in
//! it: a few hundred KB of carefully nested loops can make Cranelift run for
//! minutes and take gigabytes on every core. `runtime::precheck` refuses the
//! shapes known to do that; this is the guard for the ones it does not
//! know. `flowhost serve` runs each compile as `flowhost compile-flow`: the
//! component goes in on stdin, the compiled code comes back on stdout, and
//! the child runs under `RLIMIT_DATA` (`runtime.max_compile_memory`) and is
//! killed at `runtime.compile_timeout`, or when the load is abandoned (a
//! shutdown, a newer file). The host's memory never holds the compiler's.
//!
//! The compiled code is loaded as native code, so it must come from this
//! very executable: the child is `std::env::current_exe()` (or the program
//! the caller names), and the code travels on a pipe only the two hold.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::{EngineSettings, LoadError, Runtime};
use crate::units::{ByteSize, HumanDuration};

/// Where flows are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, on a blocking thread: for tools and tests that are
    /// not the `flowhost` executable.
    InProcess,
    /// In a child process running `program compile-flow`.
    ChildProcess {
        /// The `flowhost` executable.
        program: PathBuf,
        /// How long one compile may take.
        timeout: Duration,
        /// The most memory (`RLIMIT_DATA`) the compiler may use.
        max_memory: u64,
    },
}

/// The subcommand the child runs.
pub const SUBCOMMAND: &str = "compile-flow";

/// Compiles `wasm` in a child process; returns the serialized code, to load
/// with `Runtime::deserialize`.
pub(super) async fn compile_in_child(
    program: &std::path::Path,
    settings: EngineSettings,
    timeout: Duration,
    max_memory: u64,
    wasm: Vec<u8>,
) -> Result<Vec<u8>, LoadError> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg(SUBCOMMAND)
        .arg("--max-memory")
        .arg(max_memory.to_string())
        .arg("--max-seconds")
        .arg(timeout.as_secs().max(1).to_string())
        .arg("--max-wasm-stack")
        .arg(settings.max_wasm_stack.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // It parses hostile input: it gets none of the host's secrets.
        .env_clear()
        // Dropping the load (a timeout, a shutdown) kills the compiler.
        .kill_on_drop(true);
    if settings.fuel_metering {
        command.arg("--fuel-metering");
    }
    let mut child = command.spawn().map_err(|e| {
        LoadError::CompilerFailed(format!("cannot start the compiler process: {e}"))
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");

    let run = async {
        let feed = async {
            // A compiler that dies early closes its stdin; its exit status
            // then says why.
            let _ = stdin.write_all(&wasm).await;
            drop(stdin);
        };
        let mut code = Vec::new();
        let mut errors = Vec::new();
        let mut said = (&mut stderr).take(64 << 10);
        let (_, out, err) = tokio::join!(
            feed,
            stdout.read_to_end(&mut code),
            said.read_to_end(&mut errors),
        );
        out.and(err).map_err(|e| {
            LoadError::CompilerFailed(format!("reading the compiler's answer: {e}"))
        })?;
        let status = child
            .wait()
            .await
            .map_err(|e| LoadError::CompilerFailed(format!("waiting for the compiler: {e}")))?;
        Ok::<_, LoadError>((status, code, errors))
    };
    let (status, code, errors) = match tokio::time::timeout(timeout, run).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(LoadError::OverBound(format!(
                "compiling took longer than runtime.compile_timeout ({}); the compiler was stopped",
                HumanDuration(timeout)
            )));
        }
    };
    if status.success() {
        return Ok(code);
    }
    let said = String::from_utf8_lossy(&errors);
    let said = said.trim();
    if !said.is_empty() && status.code() == Some(EXIT_REFUSED) {
        return Err(LoadError::Refused(said.to_owned()));
    }
    // Out of memory shows as an abort (Rust's allocation failure handler)
    // or a failed allocation reported on stderr.
    Err(LoadError::OverBound(format!(
        "the compiler stopped ({status}), most likely at runtime.max_compile_memory ({}){}",
        ByteSize(max_memory),
        if said.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::telemetry::printable(said))
        }
    )))
}

/// The exit status of a child that refused the component (the reason is on
/// stderr), as opposed to one that crashed.
const EXIT_REFUSED: i32 = 3;

/// The child's side: reads a component on stdin, writes its compiled code
/// on stdout. `flowhost compile-flow` calls this.
pub fn child_main(settings: EngineSettings, max_memory: u64, max_seconds: u64) -> ExitCode {
    // The bound first, before the compiler allocates anything. The
    // address space is not bounded: wasmtime reserves much more of it than
    // it ever touches.
    use rustix::process::{Resource, Rlimit, setrlimit};
    let bound = |at: u64| Rlimit {
        current: Some(at),
        maximum: Some(at),
    };
    if let Err(e) = setrlimit(Resource::Data, bound(max_memory)) {
        eprintln!("cannot bound the compiler's memory: {e}");
        return ExitCode::FAILURE;
    }
    // A backstop for a parent that died without killing its compiler: the
    // kernel stops it once it has used its time on every core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    if let Err(e) = setrlimit(
        Resource::Cpu,
        bound(max_seconds.saturating_mul(cores).max(1)),
    ) {
        eprintln!("cannot bound the compiler's time: {e}");
        return ExitCode::FAILURE;
    }
    // Serving comes first: the compiler takes what CPU is left.
    let _ = rustix::process::setpriority_process(None, super::background::NICENESS);
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {e}");
        return ExitCode::FAILURE;
    }
    let code = match Runtime::compile_only(&settings, &wasm) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_REFUSED as u8);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&code).and_then(|()| stdout.flush()) {
        eprintln!("cannot write the compiled code: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
