//! Building flow crates: `cargo build --release --target wasm32-wasip2`,
//! then each component copied into a flows folder as `<package>.wasm`.
//!
//! The copy is written beside its destination and renamed into place, so a
//! host watching the folder never reads half a file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The target flows are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Builds the flow crate (or workspace of flow crates) in `dir` and copies
/// every component it produces into `out`. Returns the paths written.
///
/// `target_dir` overrides the crate's own `target/`, so that several flow
/// workspaces can share their compiled dependencies.
pub fn build_crate(
    dir: &Path,
    out: &Path,
    target_dir: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    ensure_target_installed()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        // The flow crates' own .cargo/config.toml sets their rustflags (the
        // stack size); flags meant for the host must not replace them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(target_dir) = target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    let output = command
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    if !output.status.success() {
        bail!(
            "building the flows in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(name) = message["package_id"].as_str().and_then(package_name) else {
            continue;
        };
        let components = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .filter(|f| f.ends_with(".wasm"));
        for component in components {
            let destination = out.join(format!("{name}.wasm"));
            copy_atomically(Path::new(component), &destination)?;
            written.push(destination);
        }
    }
    if written.is_empty() {
        bail!(
            "{} built no component: is it a `cdylib` crate?",
            dir.display()
        );
    }
    Ok(written)
}

/// Copies `from` to a temporary file beside `to`, then renames it over `to`.
pub fn copy_atomically(from: &Path, to: &Path) -> anyhow::Result<()> {
    let temporary = to.with_extension("wasm.partial");
    std::fs::copy(from, &temporary)
        .with_context(|| format!("copying {} to {}", from.display(), temporary.display()))?;
    std::fs::rename(&temporary, to)
        .with_context(|| format!("renaming {} to {}", temporary.display(), to.display()))?;
    Ok(())
}

fn ensure_target_installed() -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(TARGET).exists() {
        bail!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}

/// The package name in a cargo package id, in either of its forms:
/// `path+file:///…/order-help#0.1.0` or `path+file:///…/dir#order-help@0.1.0`
/// (and the older `order-help 0.1.0 (path+file:///…)`).
fn package_name(id: &str) -> Option<String> {
    if let Some((name, rest)) = id.split_once(' ')
        && rest.contains('(')
    {
        return Some(name.to_owned());
    }
    let (url, fragment) = id.rsplit_once('#')?;
    match fragment.split_once('@') {
        Some((name, _version)) => Some(name.to_owned()),
        None => url.rsplit('/').next().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn reads_package_names_from_every_id_form() {
        for id in [
            "path+file:///work/example-flows/order-help#0.1.0",
            "path+file:///work/example-flows/somewhere#order-help@0.1.0",
            "order-help 0.1.0 (path+file:///work/example-flows/order-help)",
        ] {
            assert_eq!(package_name(id).as_deref(), Some("order-help"), "{id}");
        }
    }
}

/// Rebuilds the flow crate in `dir` into `out` now and whenever one of its
/// sources changes (`.rs`, `.wit`, `Cargo.toml`, `.cargo/config.toml`),
/// until the handle is dropped or aborted: `flowhost serve --watch-build`.
///
/// The build's own output never triggers a build: `target/` folders, the
/// lock file (which cargo may rewrite) and `out` are not watched for
/// changes, so saving a file builds once.
pub fn watch_and_build(
    dir: PathBuf,
    out: PathBuf,
    quiet: std::time::Duration,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let root = dir.clone();
    let output = out.clone();
    let mut watch = crate::watch::FolderWatch::start(&dir, true, quiet, move |path| {
        is_source(&root, &output, path)
    })?;
    Ok(tokio::spawn(async move {
        let mut changed = Some(dir.join("Cargo.toml"));
        while let Some(first) = changed.take() {
            // Several files saved together build once.
            while let Some(more) = watch.try_next() {
                tracing::debug!(path = %more.display(), "also changed");
            }
            tracing::info!(crate_dir = %dir.display(), changed = %first.display(), "building the flow crate");
            let (dir_, out_) = (dir.clone(), out.clone());
            match tokio::task::spawn_blocking(move || build_crate(&dir_, &out_, None)).await {
                Ok(Ok(written)) => {
                    for path in written {
                        tracing::info!(component = %path.display(), "built; the flows folder reloads it");
                    }
                }
                Ok(Err(error)) => tracing::error!(crate_dir = %dir.display(), "{error:#}"),
                Err(error) => tracing::error!(%error, "the build thread failed"),
            }
            changed = watch.next().await;
        }
    }))
}

/// Whether `path`, under the crate folder `root`, is a source whose change
/// calls for a rebuild.
fn is_source(root: &Path, out: &Path, path: &Path) -> bool {
    if path.starts_with(out) {
        return false;
    }
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    if relative.components().any(|c| c.as_os_str() == "target") {
        return false;
    }
    let name = relative
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == "Cargo.toml"
        || name == "config.toml"
        || (!name.starts_with('.') && (name.ends_with(".rs") || name.ends_with(".wit")))
}

#[cfg(test)]
mod source_tests {
    use super::is_source;
    use std::path::Path;

    #[test]
    fn only_sources_trigger_a_rebuild() {
        let (root, out) = (Path::new("/w/my-flow"), Path::new("/w/flows"));
        for source in [
            "src/lib.rs",
            "src/deep/mod.rs",
            "Cargo.toml",
            ".cargo/config.toml",
            "wit/world.wit",
        ] {
            assert!(is_source(root, out, &root.join(source)), "{source}");
        }
        for output in [
            "target/wasm32-wasip2/release/my_flow.wasm",
            "target/release/build/x/out.rs",
            "Cargo.lock",
            "src/.lib.rs.swp",
            "src/lib.rs~",
        ] {
            assert!(!is_source(root, out, &root.join(output)), "{output}");
        }
        assert!(!is_source(
            root,
            Path::new("/w/my-flow/flows"),
            Path::new("/w/my-flow/flows/x.rs")
        ));
    }
}
