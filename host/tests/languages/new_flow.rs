//! `flowhost new`: a project in each language builds with its own command
//! into a flow that passes the project's own conversation.

use std::path::Path;

use crate::support::languages::Language as Build;
use crate::support::{Receiver, Site, endpoint, repo, send};

/// `flowhost new <name> --lang <lang>` in the site, then the project built
/// as its README says, then its conversation under `flowhost test`.
async fn new_project_passes_its_own_test(site: &Site, name: &str, lang: &str) {
    let dir = site.path().join(name);
    let sdk = repo().join("guest-sdk");
    let mut args = vec!["new", name, "--lang", lang];
    if lang == "rust" {
        // The repository's own SDK, not its published source.
        args.extend(["--sdk", sdk.to_str().unwrap()]);
    }
    let made = site.flowhost(&args).await;
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(
        stdout.contains("flowhost test "),
        "the next steps are printed: {stdout}"
    );

    let component = {
        let dir = dir.clone();
        let name = name.to_owned();
        let lang = lang.to_owned();
        tokio::task::spawn_blocking(move || build(&dir, &name, &lang))
            .await
            .unwrap()
    };
    if lang == "js" {
        // `flow.js` checked against the declarations made from the WIT.
        let checked = npm_run_check(&dir);
        assert!(checked.status.success(), "npm run check: {checked:?}");
        // A call the WIT does not allow is caught.
        let source = dir.join("flow.js");
        let good = std::fs::read_to_string(&source).unwrap();
        std::fs::write(
            &source,
            format!("{good}\nexport function bad() {{ context.set(42); }}\n"),
        )
        .unwrap();
        let checked = npm_run_check(&dir);
        let said = String::from_utf8_lossy(&checked.stdout);
        assert!(
            !checked.status.success()
                && said.contains("not assignable to parameter of type 'string'"),
            "{checked:?}"
        );
        std::fs::write(&source, good).unwrap();
    }
    site.flowhost_test(&component, &[dir.join("conversations/hello.toml")])
        .await;
}

/// `npm run check` in `dir`, with the tests' TypeScript.
fn npm_run_check(dir: &Path) -> std::process::Output {
    let bin = crate::support::tools::npm_tool(crate::support::tools::COMPONENTIZE_JS);
    std::process::Command::new("npm")
        .args(["run", "--silent", "check"])
        .env("PATH", crate::support::tools::path_with(&bin))
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Builds the project in `dir` and returns its component.
fn build(dir: &Path, name: &str, lang: &str) -> std::path::PathBuf {
    if lang != "rust" {
        Build::of(dir).build(dir);
        return dir.join(format!("{name}.wasm"));
    }
    // `cargo build --release`, sharing the tests' target folder so that the
    // SDK's dependencies are built once.
    let target = repo().join("target/flows-build");
    let output = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ))
}

#[tokio::test]
async fn a_new_rust_project_passes_its_own_test() {
    let site = Site::on_sqlite(&[], "");
    new_project_passes_its_own_test(&site, "hello-rust", "rust").await;
}

#[tokio::test]
async fn a_new_python_project_passes_its_own_test() {
    let site = Site::on_sqlite(&[], "");
    new_project_passes_its_own_test(&site, "hello-python", "python").await;
}

#[tokio::test]
async fn a_new_javascript_project_passes_its_own_test() {
    let site = Site::on_sqlite(&[], "");
    new_project_passes_its_own_test(&site, "hello-js", "js").await;
}

#[tokio::test]
async fn a_new_c_project_passes_its_own_test() {
    let site = Site::on_sqlite(&[], "");
    new_project_passes_its_own_test(&site, "hello-c", "c").await;
}

#[tokio::test]
async fn a_new_c_project_is_rebuilt_and_served_on_save_under_watch_build() {
    let receiver = Receiver::start().await;
    let site = Site::on_sqlite(&[], &endpoint("hello", "hello-c", &receiver));
    let made = site.flowhost(&["new", "hello-c", "--lang", "c"]).await;
    assert!(made.status.success(), "{made:?}");
    // The README's command, with the compiler and this flowhost named.
    let build = format!(
        "make CC={} FLOWHOST={}",
        crate::support::tools::wasm_c_compiler(),
        env!("CARGO_BIN_EXE_flowhost")
    );
    let host = site
        .start_with(&["--watch-build", "hello-c", &build], &[])
        .await;
    host.wait_for_log(&["flow loaded", "flow=hello-c"]).await;
    send(&host.url("hello"), "s1", "Hi").await;
    receiver
        .wait_for_text("s1", |t| t == "Hello! I am hello-c. Say anything.")
        .await;

    // Saved as an editor does, by rename.
    let source = site.path().join("hello-c/flow.c");
    let edited = std::fs::read_to_string(&source)
        .unwrap()
        .replace("Say anything.", "Say something.");
    std::fs::write(site.path().join("hello-c/.flow.c.swp"), edited).unwrap();
    std::fs::rename(site.path().join("hello-c/.flow.c.swp"), &source).unwrap();
    host.wait_for_logs(2, &["flow loaded", "flow=hello-c"])
        .await;
    send(&host.url("hello"), "s2", "Hi").await;
    receiver
        .wait_for_text("s2", |t| t == "Hello! I am hello-c. Say something.")
        .await;
    // The core module the build made on the way is not taken for a flow.
    let log = host.log();
    assert!(!log.contains("hello-c.core"), "{log}");
    assert!(!site.path().join("flows/hello-c.core.wasm").exists());
}

#[test]
fn the_templates_pin_the_toolchains_the_tests_install() {
    use crate::support::tools::{COMPONENTIZE_JS, COMPONENTIZE_PY};
    assert_eq!(flowhost::new_flow::COMPONENTIZE_PY, COMPONENTIZE_PY.1);
    assert_eq!(flowhost::new_flow::COMPONENTIZE_JS, COMPONENTIZE_JS.1);
}
