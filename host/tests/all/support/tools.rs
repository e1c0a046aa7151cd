//! Tools from PyPI and npm that tests run, each installed once, at a
//! pinned version, in a folder of its own under `target/tools` (a Python
//! virtual environment, or an npm prefix): the one place tests install
//! anything, kept between runs. Programs that Debian packages (Chromium,
//! clang for WebAssembly) are installed with apt where the tests run as
//! root, as on CI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// schemathesis, which checks a running flowhost against its OpenAPI
/// document.
pub const SCHEMATHESIS: (&str, &str) = ("schemathesis", "4.32.5");

/// componentize-py, which builds the Python example flows; the examples'
/// `requirements.txt` pin the same version (checked by a test).
pub const COMPONENTIZE_PY: (&str, &str) = ("componentize-py", "0.25.1");

/// ComponentizeJS, which builds the JavaScript example flows; the
/// examples' `package.json` pin the same version (checked by a test).
pub const COMPONENTIZE_JS: (&str, &str) = ("@bytecodealliance/componentize-js", "0.23.0");

/// The path of the program `package` installs, installing `package` at
/// `version` first if it is not yet. Needs `python3` with `venv`
/// (Debian: `apt-get install python3-venv`).
pub fn python_tool((package, version): (&str, &str)) -> PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = super::repo().join(format!("target/tools/{package}-{version}"));
    let program = venv.join("bin").join(package);
    let installed = venv.join("installed");
    if installed.exists() {
        return program;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("{package}=={version}"),
    ]));
    std::fs::write(&installed, "").unwrap();
    program
}

/// The folder of the programs `package` installs from npm (its
/// `node_modules/.bin`), installing `package` at `version` first if it is
/// not yet. Needs `npm` (Debian: `apt-get install npm`).
pub fn npm_tool((package, version): (&str, &str)) -> PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let name = package.rsplit('/').next().unwrap_or(package);
    let prefix = super::repo().join(format!("target/tools/{name}-{version}"));
    let bin = prefix.join("node_modules/.bin");
    let installed = prefix.join("installed");
    if installed.exists() {
        return bin;
    }
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(&prefix).unwrap();
    std::fs::write(prefix.join("package.json"), "{\"private\": true}\n").unwrap();
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .arg(format!("{package}@{version}"))
        .current_dir(&prefix));
    std::fs::write(&installed, "").unwrap();
    bin
}

/// `PATH` with `bin` first: what a build finds a pinned toolchain by.
pub fn path_with(bin: &Path) -> std::ffi::OsString {
    std::env::join_paths(
        std::iter::once(bin.to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap()
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (are python3 and npm installed?)"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}); a test tool could not be installed (Debian needs python3-venv):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The path of `program`, installing the Debian `packages` that provide
/// it when it is missing and the tests run as root (as on CI); otherwise
/// a failure that says what to install.
pub fn debian_program(program: &str, packages: &[&str]) -> PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
    };
    debian_packages(|| find().is_some(), program, packages);
    find().unwrap_or_else(|| panic!("{program} is still missing after installing {packages:?}"))
}

/// Debian's clang 19 for `wasm32-wasi`, with its linker, its builtins and
/// wasi-libc, which the C example flows build with: the compiler's name,
/// installing the packages first where one is missing (as
/// [`debian_program`] does).
pub fn wasm_c_compiler() -> &'static str {
    const PACKAGES: [&str; 4] = [
        "clang-19",
        "lld-19",
        "wasi-libc",
        "libclang-rt-19-dev-wasm32",
    ];
    let installed = || {
        PACKAGES.iter().all(|package| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .is_ok_and(|out| out.stdout.ends_with(b" installed"))
        })
    };
    debian_packages(installed, "clang-19 for wasm32-wasi", &PACKAGES);
    "clang-19"
}

/// Installs the Debian `packages` unless `present()`, if the tests run as
/// root (as on CI); otherwise a failure that says what to install.
fn debian_packages(present: impl Fn() -> bool, what: &str, packages: &[&str]) {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if present() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    assert!(
        root,
        "{what} is missing: install it with `sudo apt-get install {}`",
        packages.join(" ")
    );
    run(Command::new("apt-get").args(["update", "-qq"]));
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(
        present(),
        "{what} is still missing after installing {packages:?}"
    );
}
