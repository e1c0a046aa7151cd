//! The example flows written in languages other than Rust, built as their
//! authors build them (`build.sh`, `npm run build`, `make`) with the
//! toolchains that [`tools`](super::tools) installs at pinned versions.
//!
//! A Python or JavaScript build takes tens of seconds, so its result is
//! kept in `target/test-flows` with a stamp of everything it was built
//! from, and built again only when one of those changed. A C build takes
//! a second, and runs the `flowhost componentize` under test: it is made
//! every time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::repo;
use super::tools::{self, COMPONENTIZE_JS, COMPONENTIZE_PY};

/// The language of an example: how it is built.
#[derive(Debug, Clone, Copy)]
pub enum Language {
    /// `build.sh`, with componentize-py.
    Python,
    /// `npm run build`, with ComponentizeJS.
    JavaScript,
    /// `make`, with Debian's clang for wasm32-wasi and this flowhost.
    C,
}

impl Language {
    /// The language of the example (or project) in `dir`.
    pub fn of(dir: &Path) -> Language {
        if dir.join("package.json").exists() {
            Language::JavaScript
        } else if dir.join("Makefile").exists() {
            Language::C
        } else {
            assert!(
                dir.join("requirements.txt").exists(),
                "{}: which language?",
                dir.display()
            );
            Language::Python
        }
    }

    /// Builds the project in `dir` with its own build command, the pinned
    /// toolchain first on `PATH`.
    pub fn build(self, dir: &Path) {
        let (tool_bin, mut command) = match self {
            Language::Python => {
                let program = tools::python_tool(COMPONENTIZE_PY);
                (program.parent().unwrap().to_owned(), Command::new("sh"))
            }
            Language::JavaScript => (tools::npm_tool(COMPONENTIZE_JS), Command::new("npm")),
            Language::C => {
                let flowhost = Path::new(env!("CARGO_BIN_EXE_flowhost"));
                (flowhost.parent().unwrap().to_owned(), Command::new("make"))
            }
        };
        match self {
            Language::Python => command.arg("build.sh"),
            Language::JavaScript => command.args(["run", "build"]),
            Language::C => command.arg(format!("CC={}", tools::wasm_c_compiler())),
        };
        let output = command
            .current_dir(dir)
            .env("PATH", tools::path_with(&tool_bin))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "building {} failed: {}\n{}{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `example-flows/<example>` built, as `target/test-flows/<example>.wasm`.
pub fn built_example(example: &str) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo().join("example-flows").join(example);
    let out = repo().join("target/test-flows");
    let built = out.join(format!("{example}.wasm"));
    let stamp_file = out.join(format!("{example}.stamp"));
    let stamp = stamp_of(&dir);
    let language = Language::of(&dir);
    let cheap = matches!(language, Language::C);
    if !cheap && built.exists() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return built;
    }
    language.build(&dir);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::rename(dir.join(format!("{example}.wasm")), &built).unwrap();
    std::fs::write(&stamp_file, stamp).unwrap();
    built
}

/// A hash of what a build of `dir` reads: its sources, the WIT and the
/// toolchains' versions.
fn stamp_of(dir: &Path) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{COMPONENTIZE_PY:?}{COMPONENTIZE_JS:?}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.extension().is_none_or(|e| e != "wasm"))
        .collect();
    files.push(repo().join("wit/flow.wit"));
    files.sort();
    for file in files {
        hasher.update(file.file_name().unwrap().as_encoded_bytes());
        hasher.update(std::fs::read(&file).unwrap());
    }
    hex::encode(hasher.finalize())
}
