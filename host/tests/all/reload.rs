//! Hot reload: flow files dropped into the watched folder serve the next
//! message; broken ones never replace a working one; the configuration
//! reloads too; and nothing is lost or mixed up while flows are swapped.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{Host, PATIENCE, Receiver, Site, admin, client, flow_file, post, send};

const ADMIN: &str = "admin-token-for-tests";

fn site(receiver: &Receiver, extra: &str) -> Site {
    site_with_debounce(receiver, extra, "50ms")
}

fn site_with_debounce(receiver: &Receiver, extra: &str, debounce: &str) -> Site {
    Site::new(&[], &config(receiver, extra, debounce))
}

fn config(receiver: &Receiver, extra: &str, debounce: &str) -> String {
    format!(
        r#"
            admin_token = "{ADMIN}"
            watch_debounce = "{debounce}"
            {extra}

            [endpoints.live]
            flow = "live"
            url_token = "live-endpoint-token-0000"
            webhook_url = "{}"
            "#,
        receiver.url()
    )
}

/// The version flowhost gives a component: its SHA-256, first 16 hex digits.
fn version_of(built: &str) -> String {
    hex::encode(&Sha256::digest(std::fs::read(flow_file(built)).unwrap())[..8])
}

/// Writes `built` as `flows/live.wasm` the safe way: beside it, then renamed.
fn rename_in(site: &Site, built: &str) {
    let temporary = site.path().join("flows/.live.wasm.incoming");
    std::fs::copy(flow_file(built), &temporary).unwrap();
    std::fs::rename(&temporary, site.path().join("flows/live.wasm")).unwrap();
}

/// Waits until the admin API says `live` runs `version`.
async fn serving(host: &Host, version: &str) {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let (_, flows) = admin(host, "GET", "/admin/flows", ADMIN).await;
            let live = flows["flows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == "live")
                .cloned();
            if live.as_ref().is_some_and(|f| f["version"] == version) {
                return live.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "live never served {version}:\n{}",
        host.log()
    );
}

fn log_lines(host: &Host, parts: &[&str]) -> usize {
    host.log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

#[tokio::test]
async fn a_dropped_in_flow_serves_the_next_message_and_a_new_version_replaces_it() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    let host = site.start().await;
    let url = host.url("live");

    let early = post(
        &url,
        &json!({"userId": "u", "sessionId": "s", "text": "early"}),
        &[],
    )
    .await;
    if crate::support::on_postgres() {
        // Another host sharing the store may have the flow: the message is
        // accepted, and waits for a host that has it.
        assert_eq!(early.status(), 202, "no flow here yet, but maybe elsewhere");
    } else {
        assert_eq!(early.status(), 503, "no flow yet");
        let problem: serde_json::Value = early.json().await.unwrap();
        assert_eq!(problem["type"], "urn:flowhost:problem:flow-not-loaded");
    }

    rename_in(&site, "echo");
    serving(&host, &version_of("echo")).await;
    if crate::support::on_postgres() {
        assert_eq!(receiver.wait_for_text("s", |t| t == "early").await, "early");
    }
    send(&url, "s", "hello").await;
    assert_eq!(receiver.wait_for_text("s", |t| t == "hello").await, "hello");

    rename_in(&site, "faulty");
    serving(&host, &version_of("faulty")).await;
    send(&url, "s", "again").await;
    receiver.wait_for_text("s", |t| t == "1: again").await;
    let line = host
        .wait_for_log(&["flow loaded", "flow=live", &version_of("faulty")])
        .await;
    assert!(
        line.contains(&format!("replaced={}", version_of("echo"))),
        "{line}"
    );
}

#[tokio::test]
async fn a_removed_flow_answers_503_and_accepted_messages_wait_for_it() {
    let receiver = Receiver::start().await;
    // Where hosts share PostgreSQL, another host may have the flow: a host
    // without it accepts (several_hosts.rs). The 503 is one host's.
    let site = Site::on_sqlite(&[], &config(&receiver, "", "50ms"));
    rename_in(&site, "hostile");
    let host = site.start().await;
    let url = host.url("live");

    // A nap in flight, and a message queued behind it in the same session.
    send(&url, "s", "nap 600").await;
    send(&url, "s", "count").await;
    std::fs::remove_file(site.path().join("flows/live.wasm")).unwrap();
    host.wait_for_log(&["flow file removed", "flow=live"]).await;

    let refused = post(
        &url,
        &json!({"userId": "u", "sessionId": "t", "text": "count"}),
        &[],
    )
    .await;
    assert_eq!(refused.status(), 503);
    // The nap finished on the version it started with; the count waits.
    receiver
        .wait_for_text("s", |t| t == "woke after 600 ms")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the queued message waits for the flow"
    );

    rename_in(&site, "hostile");
    receiver.wait_for_text("s", |t| t == "count 2").await;
}

#[tokio::test]
async fn a_broken_file_is_rejected_in_one_line_and_the_working_version_keeps_serving() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    rename_in(&site, "echo");
    let host = site.start().await;
    let url = host.url("live");

    let flows = site.path().join("flows");
    std::fs::write(
        flows.join(".incoming"),
        b"\0asm\x0d\0\x01\0 not really a component",
    )
    .unwrap();
    std::fs::rename(flows.join(".incoming"), flows.join("live.wasm")).unwrap();
    let line = host.wait_for_log(&["flow not loaded", "flow=live"]).await;
    assert!(
        line.contains("live.wasm") && line.contains("does not compile"),
        "{line}"
    );
    assert!(
        line.contains(&format!("serving={}", version_of("echo"))),
        "{line}"
    );

    send(&url, "s", "still echo").await;
    receiver.wait_for_text("s", |t| t == "still echo").await;

    // A component that imports what the host does not provide.
    site.add_wat("incoming-evil", "unknown-import");
    std::fs::rename(flows.join("incoming-evil.wasm"), flows.join("live.wasm")).unwrap();
    let line = host
        .wait_for_log(&["flow not loaded", "acme:evil/steal"])
        .await;
    assert!(line.contains("flow=live"), "{line}");

    // A good component with a bad manifest.
    rename_in(&site, "faulty");
    serving(&host, &version_of("faulty")).await;
    std::fs::write(flows.join("live.toml"), "[limits]\nmemory = \"lots\"\n").unwrap();
    host.wait_for_log(&["flow not loaded", "invalid manifest live.toml"])
        .await;
    send(&url, "s", "still faulty").await;
    receiver
        .wait_for_text("s", |t| t == "1: still faulty")
        .await;

    // Each bad state was reported once, however long it stays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(log_lines(&host, &["flow not loaded"]), 3, "{}", host.log());
    let (_, listed) = admin(&host, "GET", "/admin/flows", ADMIN).await;
    let live = &listed["flows"][0];
    assert_eq!(live["version"], version_of("faulty"));
    assert!(
        live["lastError"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid manifest"),
        "{listed}"
    );
}

#[tokio::test]
async fn a_slow_copy_in_place_and_a_rename_each_load_exactly_once() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    rename_in(&site, "echo");
    let host = site.start().await;
    let url = host.url("live");

    // In place, 64 KiB at a time, pausing longer than the debounce.
    let bytes = std::fs::read(flow_file("hostile")).unwrap();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(site.path().join("flows/live.wasm")).unwrap();
        for chunk in bytes.chunks(64 << 10) {
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    serving(&host, &version_of("hostile")).await;
    send(&url, "s", "count").await;
    receiver.wait_for_text("s", |t| t == "count 1").await;

    rename_in(&site, "faulty");
    serving(&host, &version_of("faulty")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let loaded = |built: &str| {
        log_lines(
            &host,
            &["flow loaded", &format!("version={} ", version_of(built))],
        )
    };
    assert_eq!(loaded("hostile"), 1);
    assert_eq!(loaded("faulty"), 1);
    assert_eq!(
        log_lines(&host, &["flow not loaded"]),
        0,
        "no half file was ever tried:\n{}",
        host.log()
    );
}

#[tokio::test]
async fn editor_droppings_and_temporary_files_are_ignored() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    rename_in(&site, "echo");
    let host = site.start().await;
    let flows = site.path().join("flows");
    for dropping in [
        ".live.wasm.swp",
        "live.wasm~",
        "4913",
        "live.wasm.tmp",
        "#live.wasm#",
        "notes.txt",
    ] {
        std::fs::write(flows.join(dropping), b"garbage").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every line but the store's says the flow loaded, the folder loaded,
    // or where the host listens: nothing about the droppings.
    let store_lines =
        log_lines(&host, &["flowhost::store"]) + log_lines(&host, &["flowhost::inbox::shared"]);
    assert_eq!(
        log_lines(&host, &["flow"]) - store_lines,
        log_lines(&host, &["flow loaded"])
            + log_lines(&host, &["flows folder loaded"])
            + log_lines(&host, &["listening"]),
        "{}",
        host.log()
    );
    assert_eq!(log_lines(&host, &["flow not loaded"]), 0);
    send(&host.url("live"), "s", "fine").await;
    receiver.wait_for_text("s", |t| t == "fine").await;
}

#[tokio::test]
async fn compiled_flows_are_cached_and_a_bad_cache_entry_is_rebuilt() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    rename_in(&site, "echo");

    let host = site.start().await;
    let first = host.wait_for_log(&["flow loaded", "flow=live"]).await;
    assert!(first.contains("from_cache=false"), "{first}");
    host.terminate().await;

    let host = site.start().await;
    let warm = host.wait_for_log(&["flow loaded", "flow=live"]).await;
    assert!(warm.contains("from_cache=true"), "{warm}");
    host.terminate().await;

    let entries: Vec<_> = std::fs::read_dir(site.path().join("data/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1);
    for damage in [Damage::Truncate, Damage::Flip] {
        damage.apply(&entries[0]);
        let host = site.start().await;
        host.wait_for_log(&["discarding a compile cache entry"])
            .await;
        let loaded = host.wait_for_log(&["flow loaded", "flow=live"]).await;
        assert!(loaded.contains("from_cache=false"), "{loaded}");
        send(&host.url("live"), &format!("{damage:?}"), "works").await;
        receiver
            .wait_for_text(&format!("{damage:?}"), |t| t == "works")
            .await;
        host.terminate().await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    Flip,
}

impl Damage {
    fn apply(self, path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        match self {
            Damage::Truncate => bytes.truncate(bytes.len() / 2),
            Damage::Flip => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
            }
        }
        std::fs::write(path, bytes).unwrap();
    }
}

#[tokio::test]
async fn configuration_changes_apply_without_a_restart_and_bad_ones_are_refused() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    rename_in(&site, "echo");
    let host = site.start().await;
    let config_path = site.path().join("flowhost.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();

    let added = format!(
        "{original}\n[endpoints.extra]\nflow = \"live\"\nurl_token = \"extra-endpoint-token-000\"\nwebhook_url = \"{}\"\n",
        receiver.url()
    );
    std::fs::write(&config_path, &added).unwrap();
    host.wait_for_log(&["endpoints reloaded", "extra"]).await;
    let extra = format!("http://{}/endpoint/extra-endpoint-token-000", host.addr);
    send(&extra, "x", "new endpoint").await;
    receiver.wait_for_text("x", |t| t == "new endpoint").await;

    std::fs::write(&config_path, format!("{added}\nunknown_key = 1\n")).unwrap();
    let refused = host.wait_for_log(&["configuration not reloaded"]).await;
    assert!(refused.contains("unknown_key"), "{refused}");
    send(&extra, "x", "still there").await;
    receiver.wait_for_text("x", |t| t == "still there").await;

    std::fs::write(&config_path, &original).unwrap();
    host.wait_for_log(&["endpoints reloaded", r#"removed=["extra"]"#])
        .await;
    let gone = post(
        &extra,
        &json!({"userId": "u", "sessionId": "x", "text": "hi"}),
        &[],
    )
    .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn the_admin_token_is_rotated_by_a_reload() {
    const NEW: &str = "9f86d081884c7d659a2feaa0c55ad015";
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    let host = site.start().await;
    assert_eq!(admin(&host, "GET", "/admin/flows", ADMIN).await.0, 200);

    let config_path = site.path().join("flowhost.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, original.replace(ADMIN, NEW)).unwrap();
    host.wait_for_log(&["admin token reloaded"]).await;
    assert_eq!(admin(&host, "GET", "/admin/flows", ADMIN).await.0, 401);
    assert_eq!(admin(&host, "GET", "/admin/flows", NEW).await.0, 200);

    // Without a token, the admin API is off.
    let without: String = original
        .lines()
        .filter(|line| !line.contains("admin_token"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config_path, without).unwrap();
    host.wait_for_log(&["admin token reloaded", "on=false"])
        .await;
    assert_eq!(admin(&host, "GET", "/admin/flows", NEW).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_swaps_under_traffic_lose_nothing_and_mix_nothing() {
    const SWAPS: usize = 200;
    const SESSIONS: usize = 20;
    let receiver = Receiver::start().await;
    // Swaps 30 ms apart, past a 10 ms debounce: each one is loaded (from
    // the compile cache) while messages run.
    let site = site_with_debounce(&receiver, "", "10ms");
    rename_in(&site, "echo");
    let host = site.start().await;
    let url = host.url("live");
    let (echo, faulty) = (version_of("echo"), version_of("faulty"));

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let senders: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let (url, running) = (url.clone(), running.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut n = 0;
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = format!("s{s}-m{n}");
                    let response = client()
                        .post(&url)
                        .json(&json!({"userId": "u", "sessionId": format!("s{s}"), "text": text}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 202, "the flow is always in service");
                    let answer: serde_json::Value = response.json().await.unwrap();
                    sent.push((answer["traceId"].as_str().unwrap().to_owned(), text));
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                sent
            })
        })
        .collect();

    for swap in 0..SWAPS {
        rename_in(&site, if swap % 2 == 0 { "faulty" } else { "echo" });
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // The last write was echo (swap 199): it must be what serves now.
    serving(&host, &echo).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut sent: HashMap<String, String> = HashMap::new();
    for sender in senders {
        sent.extend(sender.await.unwrap());
    }
    let total = sent.len();
    receiver.wait_for(total).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = receiver.received();
    assert_eq!(
        received.len(),
        total,
        "every message delivered exactly once"
    );

    // Which version ran each message, as the host logged it.
    let log = host.log();
    let ran: HashMap<&str, &str> = log
        .lines()
        .filter(|l| l.contains("message handled"))
        .filter_map(|l| {
            let trace = l.split("trace_id=").nth(1)?.split(' ').next()?;
            let version = l.split("version=").nth(1)?.split(['}', ' ']).next()?;
            Some((trace, version))
        })
        .collect();
    let mut by_version: HashMap<&str, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for delivery in &received {
        let trace = delivery.body["AIOutput"]["traceId"].as_str().unwrap();
        assert!(seen.insert(trace.to_owned()), "one output per message");
        let text = &sent[trace];
        let version = ran[trace];
        *by_version.entry(version).or_default() += 1;
        // The output is wholly the work of the version that ran the message.
        if version == echo {
            assert_eq!(delivery.text(), text);
        } else {
            assert_eq!(version, faulty);
            let (count, said) = delivery.text().split_once(": ").unwrap();
            assert_eq!(said, text);
            assert_eq!(
                delivery.body["AIOutput"]["data"]["count"],
                count.parse::<u64>().unwrap()
            );
        }
    }
    println!("{total} messages during {SWAPS} swaps: {by_version:?}");
    assert!(
        by_version.len() == 2,
        "both versions served messages: {by_version:?}"
    );
    let loads = log_lines(&host, &["flow loaded", "flow=live"]);
    println!("{loads} versions swapped in");
    // Most swaps load (195 of 200 here); a slow machine coalesces more of
    // them, which is the debounce doing its job. Enough must still land
    // between messages for the checks above to mean something.
    assert!(
        loads >= 20,
        "the swaps happened while messages ran ({loads} loads)"
    );
    send(&url, "after", "the end").await;
    receiver.wait_for_text("after", |t| t == "the end").await;
}

#[tokio::test]
async fn a_missing_flows_folder_is_made_and_a_failed_first_load_or_a_misnamed_file_is_told() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    std::fs::remove_dir(site.path().join("flows")).unwrap();
    let host = site.start().await;
    host.wait_for_log(&["created the flows folder"]).await;

    // A first version that fails: nothing was serving, and the log says so.
    std::fs::write(site.path().join("flows/live.wasm"), b"\0asm not really").unwrap();
    let failed = host
        .wait_for_log(&[
            "flow not loaded; its endpoints answer 503 until a file that loads replaces it",
        ])
        .await;
    assert!(failed.contains("flow=live"), "{failed}");
    assert!(!host.log().contains("keeps serving"), "{}", host.log());

    let misnamed = site.path().join("flows/Live.v2.wasm");
    std::fs::copy(flow_file("echo"), &misnamed).unwrap();
    host.wait_for_log(&[
        "not loaded: the file name is not a flow name",
        "Live.v2.wasm",
        "no dots or capitals",
    ])
    .await;
    std::fs::rename(&misnamed, site.path().join("flows/live.wasm")).unwrap();
    host.wait_for_log(&["flow loaded", "flow=live"]).await;
    send(&host.url("live"), "s", "renamed").await;
    receiver.wait_for_text("s", |t| t == "renamed").await;
}

#[tokio::test]
async fn watch_build_rebuilds_a_flow_crate_given_by_a_relative_path_on_save_once() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    let repo = crate::support::repo();
    // A flow crate of one's own, outside the repository's workspaces.
    let crate_dir = site.path().join("my-flow");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    std::fs::create_dir_all(crate_dir.join(".cargo")).unwrap();
    std::fs::copy(
        repo.join("example-flows/.cargo/config.toml"),
        crate_dir.join(".cargo/config.toml"),
    )
    .unwrap();
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"live\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nflowhost-sdk = {{ path = {:?} }}\n\n[workspace]\n\n\
             [profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\nstrip = true\npanic = \"abort\"\n",
            repo.join("guest-sdk")
        ),
    )
    .unwrap();
    let source = |greeting: &str| {
        format!(
            "fn handle(m: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {{\n    \
             flowhost_sdk::say(format!(\"{greeting} {{}}\", m.text.unwrap_or_default()));\n    Ok(())\n}}\n\
             flowhost_sdk::export!(handle);\n"
        )
    };
    std::fs::write(crate_dir.join("src/lib.rs"), source("first")).unwrap();

    // Given as the README gives it, relative, through `..`.
    let relative = format!(
        "../{}/my-flow",
        site.path().file_name().unwrap().to_str().unwrap()
    );
    let host = site
        .start_with(
            &["--watch-build", &relative],
            &[(
                "CARGO_TARGET_DIR",
                repo.join("target/flows-build").to_str().unwrap(),
            )],
        )
        .await;
    host.wait_for_log(&["flow loaded", "flow=live"]).await;
    send(&host.url("live"), "s", "build").await;
    receiver.wait_for_text("s", |t| t == "first build").await;

    std::fs::write(crate_dir.join("src/lib.rs"), source("second")).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while log_lines(&host, &["flow loaded", "flow=live"]) < 2
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&host.url("live"), "t", "build").await;
    receiver.wait_for_text("t", |t| t == "second build").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        log_lines(&host, &["building the flow"]),
        2,
        "one build at start, one per save:\n{}",
        host.log()
    );
}

/// Waits until `host` has logged `count` lines with all of `parts`.
async fn wait_for_count(host: &Host, count: usize, parts: &[&str]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while log_lines(host, parts) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} lines with {parts:?}:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn watch_build_with_a_command_rebuilds_however_the_editor_saves() {
    let receiver = Receiver::start().await;
    let site = site(&receiver, "");
    // A flow "built" by a command: `flow.txt` names the component the build
    // makes, and the build churns a `target/` of its own as cargo does.
    let project = site.path().join("my-flow");
    std::fs::create_dir_all(project.join("node_modules/tool")).unwrap();
    let source = project.join("flow.txt");
    let says = |built: &str| flow_file(built).display().to_string();
    std::fs::write(&source, says("echo")).unwrap();
    let build = "rm -rf target/tmp && mkdir -p target/tmp/a/b/c target/release dist \
                 && cp \"$(cat flow.txt)\" dist/live.wasm";
    let host = site
        .start_with(&["--watch-build", "my-flow", build], &[])
        .await;
    let builds = |n| wait_for_count(&host, n, &["building the flow"]);
    let loads = |n| wait_for_count(&host, n, &["flow loaded", "flow=live"]);
    loads(1).await;
    send(&host.url("live"), "s1", "echo here").await;
    receiver.wait_for_text("s1", |t| t == "echo here").await;

    // Written in place.
    std::fs::write(&source, says("greeter")).unwrap();
    loads(2).await;
    send(&host.url("live"), "s2", "hi").await;
    receiver
        .wait_for_text("s2", |t| t == "Hello! What's your name?")
        .await;

    // Written beside, then renamed over, as many editors save.
    let swap = project.join(".flow.txt.swp");
    std::fs::write(&swap, says("echo")).unwrap();
    std::fs::rename(&swap, &source).unwrap();
    loads(3).await;
    send(&host.url("live"), "s3", "echo again").await;
    receiver.wait_for_text("s3", |t| t == "echo again").await;

    // Appended to: a change, so a build (of the same component).
    std::fs::OpenOptions::new()
        .append(true)
        .open(&source)
        .unwrap()
        .write_all(b"\n")
        .unwrap();
    builds(4).await;

    // Saved unchanged, or changed where no source lives: no build.
    std::fs::write(&source, says("echo") + "\n").unwrap();
    std::fs::write(project.join("node_modules/tool/index.js"), "x").unwrap();
    std::fs::write(project.join("target/release/out.txt"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = host.log();
    assert_eq!(log_lines(&host, &["building the flow"]), 4, "{log}");
    assert!(!log.contains("watch descriptor"), "no watch noise:\n{log}");
}
