//! `flowhost serve --watch-build`: a flow's sources rebuilt into the flows
//! folder on every save, the flow author's loop.
//!
//! A folder with a `Cargo.toml` and no command is built with cargo
//! ([`build_crate`]); any other is built by the command given with it
//! (`--watch-build ../my-flow "npm run build"`), after which every `.wasm`
//! file the command wrote is copied into the flows folder, renamed into
//! place.
//!
//! Saves are seen however an editor writes (in place, or a new file renamed
//! over the old), and only sources count: the watch leaves out build
//! outputs and tools' folders (`target/`, `node_modules/`, `dist/`,
//! `__pycache__/`, hidden ones), and a file whose content is what it was at
//! the last build (a touch, an editor's save of an unchanged buffer, a
//! generated file written again the same) builds nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::build::{build_crate, copy_atomically};
use crate::watch::{FolderWatch, Scope};

/// One `--watch-build`: a folder to watch, and how to build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBuild {
    /// The folder of the flow's sources.
    pub dir: PathBuf,
    /// The build command, run with `sh -c` in `dir`; `None`: the folder is
    /// a flow crate, built with cargo.
    pub command: Option<String>,
}

impl WatchBuild {
    /// Builds once, now, and returns the components written into `out`.
    pub fn build(&self, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
        match &self.command {
            None => build_crate(&self.dir, out, None),
            Some(command) => build_with_command(&self.dir, command, out),
        }
    }
}

/// Folders never watched: builds' outputs, package managers' stores,
/// caches, version control, and hidden folders (but `.cargo`, whose
/// `config.toml` sets a crate's build flags).
fn skipped(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    matches!(name, "target" | "node_modules" | "dist" | "__pycache__")
        || (name.starts_with('.') && name != ".cargo")
}

/// Whether a change of `path`, in the folder `root`, may call for a build:
/// not in a skipped folder, not an editor's dropping, not a build's output
/// (`.wasm`), not a lock file that tools rewrite, and not in `out`. For a
/// crate, only what cargo reads: `.rs`, `.wit`, `Cargo.toml` and
/// `.cargo/config.toml`.
fn is_source(root: &Path, out: &Path, path: &Path, crate_only: bool) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    if path.starts_with(out)
        || relative
            .parent()
            .is_some_and(|p| p.iter().any(|f| skipped(Path::new(f))))
    {
        return false;
    }
    let name = relative
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if crate_only {
        return name == "Cargo.toml"
            || name == "config.toml"
            || (!name.starts_with('.') && (name.ends_with(".rs") || name.ends_with(".wit")));
    }
    // Vim's `4913` probe file and Emacs's `#file#` are droppings too.
    !(name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || [".swp", ".swx", ".tmp", ".wasm", ".partial", ".lock"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        || name == "package-lock.json"
        || name.chars().all(|c| c.is_ascii_digit()))
}

/// Rebuilds `what` into `out` now and whenever one of its sources changes,
/// until the handle is dropped or aborted.
pub fn watch_and_build(
    what: WatchBuild,
    out: PathBuf,
    quiet: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Events name absolute paths: so must the folder they are matched to.
    let dir = std::fs::canonicalize(&what.dir)
        .with_context(|| format!("finding the folder {}", what.dir.display()))?;
    let out = std::path::absolute(&out).unwrap_or(out);
    let what = WatchBuild {
        dir: dir.clone(),
        ..what
    };
    let crate_only = what.command.is_none();
    let accept = {
        let (dir, out) = (dir.clone(), out.clone());
        move |path: &Path| is_source(&dir, &out, path, crate_only)
    };
    let mut watch = FolderWatch::start(&dir, Scope::Tree { skip: skipped }, quiet, accept.clone())?;
    let mut contents = Contents::of_tree(&dir, accept);
    Ok(tokio::spawn(async move {
        let mut reason = String::from("start");
        loop {
            tracing::info!(folder = %dir.display(), changed = %reason, "building the flow");
            let (build, out_) = (what.clone(), out.clone());
            match tokio::task::spawn_blocking(move || build.build(&out_)).await {
                Ok(Ok(written)) if written.is_empty() => {
                    tracing::info!(folder = %dir.display(), "built; no component changed");
                }
                Ok(Ok(written)) => {
                    for path in written {
                        tracing::info!(component = %path.display(), "built; the flows folder reloads it");
                    }
                }
                Ok(Err(error)) => tracing::error!(folder = %dir.display(), "{error:#}"),
                Err(error) => tracing::error!(%error, "the build thread failed"),
            }
            // Waits for a source whose content changed; several saved
            // together build once.
            let mut changed = Vec::new();
            while changed.is_empty() {
                let Some(path) = watch.next().await else {
                    return;
                };
                changed.push(path);
                while let Some(more) = watch.try_next() {
                    changed.push(more);
                }
                changed.retain(|path| contents.changed(path));
            }
            reason = changed
                .iter()
                .map(|p| p.strip_prefix(&dir).unwrap_or(p).display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
        }
    }))
}

/// The content each source had when it was last seen, to tell a save that
/// changed something from one that did not.
#[derive(Default)]
struct Contents {
    seen: HashMap<PathBuf, Option<[u8; 32]>>,
}

/// Sources larger than this are taken to have changed whenever touched,
/// rather than read to find out.
const MAX_HASHED: u64 = 16 << 20;

impl Contents {
    /// The sources in the tree at `root` as they are now.
    fn of_tree(root: &Path, is_source: impl Fn(&Path) -> bool) -> Contents {
        let mut contents = Contents::default();
        walk_files(
            root,
            |folder| !skipped(folder),
            |file| {
                if is_source(&file.path()) {
                    contents.changed(&file.path());
                }
            },
        );
        contents
    }

    /// Whether the file at `path` differs from when it was last seen (a
    /// new file, a removed one, other bytes), remembering it as it is now.
    /// Folders are not files: their changes are their files'.
    fn changed(&mut self, path: &Path) -> bool {
        let now = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return false,
            Ok(meta) if meta.len() > MAX_HASHED => return true,
            Ok(_) => std::fs::read(path)
                .ok()
                .map(|bytes| Sha256::digest(bytes).into()),
            Err(_) => None,
        };
        match self.seen.insert(path.to_owned(), now) {
            Some(before) => before != now,
            None => now.is_some(),
        }
    }
}

/// Runs `command` in `dir` and copies every `.wasm` file it wrote into
/// `out`. Returns the paths written.
fn build_with_command(dir: &Path, command: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // File times come from a coarse clock: a file written just after the
    // start may carry a time just before it.
    let started = SystemTime::now() - Duration::from_millis(100);
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running `{command}` in {}", dir.display()))?;
    if !output.status.success() {
        bail!(
            "`{command}` in {} failed ({}):\n{}{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let components = components_in(dir);
    if components.is_empty() {
        bail!(
            "`{command}` in {} wrote no component (.wasm): a build command must write the \
             component somewhere in the folder (node_modules, deps and hidden folders aside)",
            dir.display()
        );
    }
    // Components older than the build were not made by it: a `make` that
    // found everything up to date (a README saved, say) copies nothing.
    let built: Vec<PathBuf> = components
        .into_iter()
        .filter(|(modified, _)| *modified >= started)
        .map(|(_, path)| path)
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for component in built {
        let Some(name) = super::flow_name(&component) else {
            bail!(
                "`{command}` wrote {}, which the flows folder would not load: {}",
                component.display(),
                super::NAME_RULE
            );
        };
        let destination = out.join(format!("{name}.wasm"));
        copy_atomically(&component, &destination)?;
        written.push(destination);
    }
    Ok(written)
}

/// The components under `dir` with their modification times, oldest
/// first, the newest of each file name; not looking in `node_modules`,
/// cargo's `deps` (copies of what it puts beside them) or hidden folders.
/// A `.wasm` file that is not a component (the core module a C build makes
/// on the way) is not a flow.
fn components_in(dir: &Path) -> Vec<(SystemTime, PathBuf)> {
    let mut found: HashMap<std::ffi::OsString, (SystemTime, PathBuf)> = HashMap::new();
    let enter = |folder: &Path| {
        let name = folder.file_name().unwrap_or_default();
        !(name == "node_modules" || name == "deps" || name.to_string_lossy().starts_with('.'))
    };
    walk_files(dir, enter, |file| {
        let (path, name) = (file.path(), file.file_name());
        if path.extension().is_some_and(|e| e == "wasm")
            && let Ok(modified) = file.metadata().and_then(|m| m.modified())
            && found.get(&name).is_none_or(|(at, _)| modified > *at)
            && is_component(&path)
        {
            found.insert(name, (modified, path));
        }
    });
    let mut found: Vec<(SystemTime, PathBuf)> = found.into_values().collect();
    found.sort();
    found
}

/// Whether the file at `path` starts as a component does.
fn is_component(path: &Path) -> bool {
    let mut header = [0; 8];
    std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
        .is_ok_and(|()| wasmparser::Parser::is_component(&header))
}

/// Calls `visit` with every file under `root`, going into the folders that
/// `enter` lets in.
fn walk_files(
    root: &Path,
    enter: impl Fn(&Path) -> bool,
    mut visit: impl FnMut(&std::fs::DirEntry),
) {
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && enter(&entry.path()) => folders.push(entry.path()),
                Ok(kind) if kind.is_file() => visit(&entry),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_trigger_a_build() {
        let (root, out) = (Path::new("/w/my-flow"), Path::new("/w/flows"));
        for source in [
            "src/lib.rs",
            "src/deep/mod.rs",
            "Cargo.toml",
            ".cargo/config.toml",
            "wit/world.wit",
        ] {
            assert!(is_source(root, out, &root.join(source), true), "{source}");
        }
        for output in [
            "target/wasm32-wasip2/release/my_flow.wasm",
            "target/release/build/x/out.rs",
            "Cargo.lock",
            "src/.lib.rs.swp",
            "src/lib.rs~",
            "notes.md",
        ] {
            assert!(!is_source(root, out, &root.join(output), true), "{output}");
        }
        assert!(!is_source(
            root,
            Path::new("/w/my-flow/flows"),
            Path::new("/w/my-flow/flows/x.rs"),
            true
        ));
    }

    #[test]
    fn a_folder_may_live_anywhere_even_in_a_hidden_one() {
        let root = Path::new("/home/ada/.projects/my-flow");
        let out = Path::new("/home/ada/flows");
        assert!(is_source(root, out, &root.join("src/lib.rs"), true));
        assert!(is_source(root, out, &root.join("app.py"), false));
        assert!(!is_source(
            root,
            out,
            Path::new("/home/ada/other/app.py"),
            false
        ));
    }

    #[test]
    fn with_a_command_any_file_but_droppings_outputs_and_tools_folders_is_a_source() {
        let (root, out) = (Path::new("/w/my-flow"), Path::new("/w/flows"));
        for source in [
            "app.py",
            "src/flow.js",
            "package.json",
            "wit/flow.wit",
            "Makefile",
        ] {
            assert!(is_source(root, out, &root.join(source), false), "{source}");
        }
        for other in [
            "order-help.wasm",
            "dist/order-help.wasm",
            "node_modules/x/index.js",
            "__pycache__/app.cpython-312.pyc",
            ".git/index",
            "package-lock.json",
            ".app.py.swp",
            "app.py~",
            "4913",
            "#app.py#",
        ] {
            assert!(!is_source(root, out, &root.join(other), false), "{other}");
        }
    }

    #[test]
    fn a_save_that_changes_nothing_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.py");
        let mut contents = Contents::of_tree(dir.path(), |_| true);
        assert!(!contents.changed(&file), "never there");
        std::fs::write(&file, "say('hi')").unwrap();
        assert!(contents.changed(&file), "new");
        std::fs::write(&file, "say('hi')").unwrap();
        assert!(!contents.changed(&file), "same bytes");
        std::fs::write(&file, "say('hello')").unwrap();
        assert!(contents.changed(&file));
        std::fs::remove_file(&file).unwrap();
        assert!(contents.changed(&file), "removed");
        assert!(!contents.changed(&file), "still removed");
        assert!(!contents.changed(dir.path()), "a folder");
        std::fs::write(dir.path().join("known.py"), "x").unwrap();
        let contents = &mut Contents::of_tree(dir.path(), |_| true);
        assert!(
            !contents.changed(&dir.path().join("known.py")),
            "seen at the start"
        );
    }

    #[test]
    fn a_command_build_copies_the_components_it_wrote_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("flow"), dir.path().join("flows"));
        std::fs::create_dir_all(src.join("node_modules")).unwrap();
        std::fs::write(src.join("old.wasm"), "old").unwrap();
        std::fs::write(src.join("node_modules/tool.wasm"), "tool").unwrap();
        // An old file, written before the build: not the build's.
        let long_ago = SystemTime::now() - Duration::from_secs(60);
        for old in ["old.wasm", "node_modules/tool.wasm"] {
            std::fs::File::options()
                .write(true)
                .open(src.join(old))
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        // A component's header, then a core module's (as a C build makes
        // on the way to its component).
        let component = r"printf '\000asm\015\000\001\000built'";
        let core_module = r"printf '\000asm\001\000\000\000'";
        let written = build_with_command(
            &src,
            &format!(
                "mkdir -p dist && {component} > dist/my-flow.wasm && \
                 {core_module} > dist/my-flow.core.wasm && touch node_modules/tool.wasm"
            ),
            &out,
        )
        .unwrap();
        assert_eq!(written, [out.join("my-flow.wasm")]);
        assert_eq!(
            std::fs::read(out.join("my-flow.wasm")).unwrap(),
            b"\0asm\x0d\0\x01\0built"
        );
        assert!(!out.join("old.wasm").exists() && !out.join("tool.wasm").exists());

        // A build that finds everything up to date writes nothing, and
        // copies nothing.
        std::fs::File::options()
            .write(true)
            .open(src.join("dist/my-flow.wasm"))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        std::fs::remove_file(out.join("my-flow.wasm")).unwrap();
        let up_to_date = build_with_command(&src, "echo nothing to be done", &out).unwrap();
        assert!(up_to_date.is_empty(), "{up_to_date:?}");
        assert!(!out.join("my-flow.wasm").exists());

        let misnamed =
            build_with_command(&src, &format!("{component} > My.Flow.wasm"), &out).unwrap_err();
        assert!(
            format!("{misnamed:#}").contains("no dots or capitals"),
            "{misnamed:#}"
        );
        let elsewhere = dir.path().join("empty");
        std::fs::create_dir(&elsewhere).unwrap();
        let none = build_with_command(&elsewhere, "true", &out).unwrap_err();
        assert!(
            format!("{none:#}").contains("wrote no component"),
            "{none:#}"
        );
        let failed = build_with_command(&src, "echo oops >&2; exit 3", &out).unwrap_err();
        assert!(format!("{failed:#}").contains("oops"), "{failed:#}");
    }
}
