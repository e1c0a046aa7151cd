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
