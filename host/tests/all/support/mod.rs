//! What the integration tests share: the flows built from source, a real
//! webhook receiver, and flowhost itself as a child process.

#![allow(dead_code)] // each test module uses part of it

pub mod browser;
pub mod languages;
pub mod postgres;
pub mod tools;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// How long a test waits for something that should happen within a moment.
/// Generous, because CI machines are slow and shared; a correct run never
/// waits this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The example flows and the test flows, built once per test run from
/// source, as `<name>.wasm` in one folder.
pub fn built_flows() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = repo().join("target/test-flows");
        let target = repo().join("target/flows-build");
        for workspace in [
            repo().join("example-flows"),
            repo().join("host/tests/flows"),
        ] {
            flowhost::flows::build::build_crate(&workspace, &out, Some(&target))
                .unwrap_or_else(|e| panic!("building the flows in {}: {e:#}", workspace.display()));
        }
        out
    })
}

/// Whether the suite runs against PostgreSQL (`TEST_STORE=postgres`)
/// rather than the embedded SQLite store.
pub fn on_postgres() -> bool {
    std::env::var("TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// The path of a built flow.
pub fn flow_file(name: &str) -> PathBuf {
    let path = built_flows().join(format!("{name}.wasm"));
    assert!(path.exists(), "no flow {name} was built");
    path
}

/// An `[endpoints.<name>]` table running `flow`, delivering to `receiver`.
pub fn endpoint(name: &str, flow: &str, receiver: &Receiver) -> String {
    format!(
        "[endpoints.{name}]\nflow = \"{flow}\"\nwebhook_url = \"{}\"\n",
        receiver.url()
    )
}

/// A folder with a flows folder, a data folder and a `flowhost.toml`.
///
/// With `TEST_STORE=postgres` in the environment, a site whose
/// configuration names no `[store]` gets a PostgreSQL cluster of its own
/// and keeps its store there: the suite runs against either store.
pub struct Site {
    pub dir: tempfile::TempDir,
    /// The site's own PostgreSQL, under `TEST_STORE=postgres`.
    pub postgres: Option<postgres::TestPostgres>,
    /// The URL of its database.
    store_url: Option<String>,
    endpoints: Vec<String>,
    /// The receivers in tests are on loopback, which webhooks may only use
    /// when private webhooks are allowed; the SSRF tests turn this off.
    pub private_webhooks: bool,
}

impl Site {
    /// A site with these flows and this configuration (without `listen`,
    /// `flows_dir` and `data_dir`, which the site sets).
    pub fn new(flows: &[&str], config: &str) -> Site {
        Site::with_store(flows, config, on_postgres())
    }

    /// Like [`new`](Self::new), on the embedded SQLite store whatever
    /// `TEST_STORE` says: for what only one host has.
    pub fn on_sqlite(flows: &[&str], config: &str) -> Site {
        Site::with_store(flows, config, false)
    }

    fn with_store(flows: &[&str], config: &str, postgres: bool) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("flows")).unwrap();
        for flow in flows {
            std::fs::copy(
                flow_file(flow),
                dir.path().join("flows").join(format!("{flow}.wasm")),
            )
            .unwrap();
        }
        let mut full = format!(
            "listen = \"127.0.0.1:0\"\nflows_dir = \"flows\"\ndata_dir = \"data\"\n{config}"
        );
        let postgres = (postgres && !config.contains("[store]")).then(|| {
            let postgres = postgres::TestPostgres::start();
            let url = postgres.database("flowhost");
            full.push_str(&format!("\n[store]\nurl = \"{url}\"\n"));
            (postgres, url)
        });
        let (postgres, store_url) = postgres.unzip();
        std::fs::write(dir.path().join("flowhost.toml"), full).unwrap();
        let endpoints = config
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("[endpoints.")?
                    .strip_suffix(']')
                    .map(str::to_owned)
            })
            .collect();
        Site {
            dir,
            postgres,
            store_url,
            endpoints,
            private_webhooks: true,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store the site's hosts use, opened here: SQLite in the data
    /// folder (while no host of the site runs), or the site's PostgreSQL.
    pub async fn store(&self) -> flowhost::store::Opened {
        use flowhost::store::{Opened, PostgresOptions, PostgresStore, SqliteStore};
        match &self.store_url {
            Some(url) => Opened::Postgres(Arc::new(
                PostgresStore::connect(&PostgresOptions::new(url.clone()))
                    .await
                    .unwrap(),
            )),
            None => Opened::Sqlite(Arc::new(
                SqliteStore::open_with(&self.path().join("data"), false).unwrap(),
            )),
        }
    }

    /// Adds the built flow `built` as `<name>.wasm`, with `manifest` as its
    /// `<name>.toml`.
    pub fn add_flow(&self, name: &str, built: &str, manifest: Option<&str>) {
        let flows = self.path().join("flows");
        std::fs::copy(flow_file(built), flows.join(format!("{name}.wasm"))).unwrap();
        if let Some(manifest) = manifest {
            std::fs::write(flows.join(format!("{name}.toml")), manifest).unwrap();
        }
    }

    /// Adds a component written as WebAssembly text, as `<name>.wasm`.
    pub fn add_wat_text(&self, name: &str, wat: &str) {
        let binary = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::write(
            self.path().join("flows").join(format!("{name}.wasm")),
            binary,
        )
        .unwrap();
    }

    /// Adds the component written in `host/tests/flows/wat/<file>.wat` as
    /// `<name>.wasm`.
    pub fn add_wat(&self, name: &str, file: &str) {
        let source = repo().join(format!("host/tests/flows/wat/{file}.wat"));
        let binary =
            wat::parse_file(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        std::fs::write(
            self.path().join("flows").join(format!("{name}.wasm")),
            binary,
        )
        .unwrap();
    }

    /// Each endpoint's name and URL path (`/endpoint/<token>`), as
    /// `flowhost endpoints` lists them.
    pub async fn endpoint_paths(&self, env: &[(&str, &str)]) -> Vec<(String, String)> {
        let listed = Command::new(env!("CARGO_BIN_EXE_flowhost"))
            .arg("endpoints")
            .envs(env.iter().copied())
            .env(
                "FLOWHOST_DELIVERY__ALLOW_PRIVATE_WEBHOOKS",
                self.private_webhooks.to_string(),
            )
            .current_dir(self.path())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8(listed.stdout).unwrap();
        assert!(
            listed.status.success(),
            "flowhost endpoints: {stdout}{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        stdout
            .lines()
            .skip(1)
            .map(|line| {
                let name = line.split_whitespace().next().unwrap().to_owned();
                let url = line.rsplit(' ').next().unwrap();
                let path = &url[url.find("/endpoint/").unwrap()..];
                (name, path.to_owned())
            })
            .collect()
    }

    /// Runs `flowhost test <component> <conversations…>` here, asserts that
    /// every conversation passed, and returns what it printed.
    pub async fn flowhost_test(&self, component: &Path, conversations: &[PathBuf]) -> String {
        let mut args = vec!["test", component.to_str().unwrap()];
        args.extend(conversations.iter().map(|c| c.to_str().unwrap()));
        let out = self.flowhost(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}: {stdout}{}",
            component.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for conversation in conversations {
            assert!(
                stdout.contains(&format!("ok      {}: ", conversation.display())),
                "{}: {stdout}",
                component.display()
            );
        }
        stdout
    }

    /// Runs `flowhost <args…>` here, to completion.
    pub async fn flowhost(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_flowhost"))
            .args(args)
            .current_dir(self.path())
            .env(
                "FLOWHOST_DELIVERY__ALLOW_PRIVATE_WEBHOOKS",
                self.private_webhooks.to_string(),
            )
            .output()
            .await
            .unwrap()
    }

    /// Starts `flowhost serve` here, and waits until its flows folder is
    /// loaded (it serves before: a test that wants that uses
    /// [`start_serving`](Self::start_serving)).
    pub async fn start(&self) -> Host {
        let host = Host::start(self, &[], &[]).await;
        host.wait_for_log(&["flows folder loaded"]).await;
        host
    }

    /// Starts `flowhost serve` here and returns once it serves, whether or
    /// not its flows are loaded yet.
    pub async fn start_serving(&self) -> Host {
        Host::start(self, &[], &[]).await
    }

    /// Starts `flowhost serve` here with more arguments and environment,
    /// and waits until its flows folder is loaded.
    pub async fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Host {
        let host = Host::start(self, args, env).await;
        host.wait_for_log(&["flows folder loaded"]).await;
        host
    }

    /// Starts `flowhost serve` here under a wrapper command, such as
    /// `prlimit --nofile=…`, which runs the rest of its arguments.
    pub async fn start_under(&self, wrapper: &[&str]) -> Host {
        Host::start_command(self, wrapper, &[], &[]).await
    }
}

/// `flowhost serve`, running as a child process.
pub struct Host {
    child: Child,
    /// The server's address.
    pub addr: String,
    urls: HashMap<String, String>,
    /// The lines it printed on stdout as it started.
    pub printed: Vec<String>,
    log: Arc<Mutex<String>>,
}

impl Host {
    async fn start(site: &Site, args: &[&str], env: &[(&str, &str)]) -> Host {
        Host::start_command(site, &[], args, env).await
    }

    async fn start_command(
        site: &Site,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Host {
        let mut command = match wrapper {
            [] => Command::new(env!("CARGO_BIN_EXE_flowhost")),
            [program, rest @ ..] => {
                let mut command = Command::new(program);
                command.args(rest).arg(env!("CARGO_BIN_EXE_flowhost"));
                command
            }
        };
        let mut child = command
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(site.path())
            .env("FLOWHOST_LOG", "info")
            .env(
                "FLOWHOST_DELIVERY__ALLOW_PRIVATE_WEBHOOKS",
                site.private_webhooks.to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }

        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        let mut urls = HashMap::new();
        let mut printed = Vec::new();
        let started = tokio::time::timeout(PATIENCE, async {
            while addr.is_none() || urls.len() < site.endpoints.len() {
                let Some(line) = stdout.next_line().await.unwrap() else {
                    return false;
                };
                match flowhost::StartLine::parse(&line) {
                    Some(flowhost::StartLine::Listening(at)) => addr = Some(at),
                    Some(flowhost::StartLine::Endpoint { name, url }) => {
                        urls.insert(name, url);
                    }
                    None => {}
                }
                printed.push(line);
            }
            true
        })
        .await;
        if started != Ok(true) {
            panic!("flowhost did not start:\n{}", log.lock().unwrap());
        }
        let addr = addr.unwrap();
        // A URL whose token is not new is printed cut; `flowhost endpoints`
        // lists it whole.
        if urls.values().any(|url| url.ends_with('…')) {
            for (name, path) in site.endpoint_paths(env).await {
                urls.insert(name, format!("http://{addr}{path}"));
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Host {
            child,
            addr,
            urls,
            printed,
            log,
        }
    }

    /// The URL of an endpoint.
    pub fn url(&self, endpoint: &str) -> String {
        self.urls
            .get(endpoint)
            .unwrap_or_else(|| panic!("no endpoint {endpoint}"))
            .clone()
    }

    /// What the host has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line with every one of `parts`, and returns
    /// that line.
    pub async fn wait_for_log(&self, parts: &[&str]) -> String {
        self.wait_for_logs(1, parts).await
    }

    /// Waits for the `n`th log line holding every one of `parts`, and
    /// returns it.
    pub async fn wait_for_logs(&self, n: usize, parts: &[&str]) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(line) = self
                    .log()
                    .lines()
                    .filter(|line| parts.iter().all(|part| line.contains(part)))
                    .nth(n - 1)
                {
                    return line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("not {n} log lines with {parts:?} in:\n{}", self.log()))
    }

    /// Sends SIGTERM, without waiting for the host to exit.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// Stops the host with SIGTERM and waits for it to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm();
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("flowhost did not stop after SIGTERM")
            .unwrap()
    }

    /// Kills the host with SIGKILL, as a crash would.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub raw: String,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    /// `AIOutput.text`
    pub fn text(&self) -> &str {
        self.body["AIOutput"]["text"].as_str().unwrap_or_default()
    }

    /// `sessionId`
    pub fn session(&self) -> &str {
        self.body["sessionId"].as_str().unwrap_or_default()
    }
}

/// A webhook receiver on a real socket, recording every POST.
#[derive(Clone)]
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    inner: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    /// Every request, answered 2xx or not.
    attempts: Mutex<Vec<Received>>,
    /// The requests answered 2xx: the deliveries.
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    /// Answers (status and headers) to give, in turn; 200 once they run out.
    answers: Mutex<VecDeque<Answer>>,
}

/// A status, headers and a body to answer a request with.
type Answer = (StatusCode, Vec<(String, String)>, String);

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    /// A receiver on this port of 127.0.0.1.
    pub async fn start_on(port: u16) -> Receiver {
        let inner = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hook", routing::post(receive))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, inner }
    }

    /// The webhook URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with these statuses.
    pub fn answer_with(&self, statuses: &[u16]) {
        for status in statuses {
            self.answer_with_headers(*status, &[]);
        }
    }

    /// Answers the next request with this status and these headers.
    pub fn answer_with_headers(&self, status: u16, headers: &[(&str, &str)]) {
        self.inner.answers.lock().unwrap().push_back((
            StatusCode::from_u16(status).unwrap(),
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            String::new(),
        ));
    }

    /// Answers the next request with this status and this body.
    pub fn answer_with_body(&self, status: u16, body: &str) {
        self.inner.answers.lock().unwrap().push_back((
            StatusCode::from_u16(status).unwrap(),
            Vec::new(),
            body.to_owned(),
        ));
    }

    /// Every request so far, failed ones included.
    pub fn attempts(&self) -> Vec<Received> {
        self.inner.attempts.lock().unwrap().clone()
    }

    /// Every delivery (request answered 2xx) so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Checks `found` whenever a request arrives, until it gives a value;
    /// `None` after [`PATIENCE`].
    async fn when_arrived<T>(&self, found: impl Fn(&Self) -> Option<T>) -> Option<T> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let arrived = self.inner.arrived.notified();
                if let Some(value) = found(self) {
                    return value;
                }
                arrived.await;
            }
        })
        .await
        .ok()
    }

    /// Waits until a delivery of `session` has text for which `matches` is
    /// true; returns that text.
    pub async fn wait_for_text(&self, session: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = self
            .when_arrived(|receiver| {
                receiver
                    .received()
                    .iter()
                    .find(|r| r.session() == session && matches(r.text()))
                    .map(|r| r.text().to_owned())
            })
            .await;
        found.unwrap_or_else(|| {
            let texts: Vec<_> = self
                .received()
                .iter()
                .filter(|r| r.session() == session)
                .map(|r| r.text().to_owned())
                .collect();
            panic!("no matching delivery for session {session}; it got {texts:?}")
        })
    }

    /// Waits until at least `count` requests (answered 2xx or not) have
    /// arrived; returns them all.
    pub async fn wait_for_attempts(&self, count: usize) -> Vec<Received> {
        let waited = self
            .when_arrived(|receiver| (receiver.attempts().len() >= count).then_some(()))
            .await;
        assert!(
            waited.is_some(),
            "expected {count} attempts, got {}",
            self.attempts().len()
        );
        self.attempts()
    }

    /// Waits until at least `count` requests have arrived; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let waited = self
            .when_arrived(|receiver| (receiver.received().len() >= count).then_some(()))
            .await;
        let received = self.received();
        if waited.is_none() {
            panic!(
                "expected {count} deliveries, got {}:\n{:#?}",
                received.len(),
                received.iter().map(|r| &r.raw).collect::<Vec<_>>()
            );
        }
        received
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let (status, answer_headers, answer_body) = state
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((StatusCode::OK, Vec::new(), String::new()));
    let request = Received {
        headers,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        raw: body,
        at: std::time::Instant::now(),
    };
    state.attempts.lock().unwrap().push(request.clone());
    if status.is_success() {
        state.received.lock().unwrap().push(request);
    }
    state.arrived.notify_waiters();
    let mut response = axum::response::IntoResponse::into_response((status, answer_body));
    for (name, value) in answer_headers {
        response.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

/// The HTTP client the tests send with.
pub fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            flowhost::tls::install_crypto_provider();
            reqwest::Client::new()
        })
        .clone()
}

/// Calls the admin API: `method` `path` with the bearer `token`; returns
/// the status and the JSON body.
pub async fn admin(host: &Host, method: &str, path: &str, token: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", host.addr);
    let request = match method {
        "POST" => client().post(url),
        "DELETE" => client().delete(url),
        _ => client().get(url),
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends a text message of `session` (user `u`) and checks it was accepted.
pub async fn send(url: &str, session: &str, text: &str) {
    let body = serde_json::json!({"userId": "u", "sessionId": session, "text": text});
    let response = post(url, &body, &[]).await;
    assert_eq!(response.status(), 202, "{text}");
}

/// POSTs a JSON body to an endpoint URL, with extra headers.
pub async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// One row of the endpoint's validation table: the content type and body
/// sent, the status expected, the problem type, and a phrase its detail says.
pub type InvalidCase<'a> = (&'a str, String, u16, &'a str, &'a str);

/// The endpoint's validation table: one row per way a request can be
/// invalid.
pub fn invalid_cases() -> Vec<InvalidCase<'static>> {
    let long_id = "x".repeat(257);
    let long_text = "y".repeat(10_001);

    vec![
        (
            "text/plain",
            r#"{"userId":"u","sessionId":"s","text":"hi"}"#.into(),
            415,
            "unsupported-media-type",
            "Content-Type",
        ),
        (
            "application/json",
            r#"{"userId":"u","#.into(),
            400,
            "malformed-json",
            "JSON",
        ),
        (
            "application/json",
            r#"[1,2,3]"#.into(),
            422,
            "invalid-message",
            "object",
        ),
        (
            "application/json",
            r#"{"sessionId":"s","text":"hi"}"#.into(),
            422,
            "invalid-message",
            "userId",
        ),
        (
            "application/json",
            r#"{"userId":"u","text":"hi"}"#.into(),
            422,
            "invalid-message",
            "sessionId",
        ),
        (
            "application/json",
            r#"{"userId":"","sessionId":"s","text":"hi"}"#.into(),
            422,
            "invalid-message",
            "userId",
        ),
        (
            "application/json",
            r#"{"userId":42,"sessionId":"s","text":"hi"}"#.into(),
            422,
            "invalid-message",
            "userId",
        ),
        (
            "application/json",
            format!(r#"{{"userId":"{long_id}","sessionId":"s","text":"hi"}}"#),
            422,
            "invalid-message",
            "userId",
        ),
        (
            "application/json",
            format!(r#"{{"userId":"u","sessionId":"{long_id}","text":"hi"}}"#),
            422,
            "invalid-message",
            "sessionId",
        ),
        (
            "application/json",
            r#"{"userId":"u","sessionId":"s","text":["hi"]}"#.into(),
            422,
            "invalid-message",
            "text",
        ),
        (
            "application/json",
            format!(r#"{{"userId":"u","sessionId":"s","text":"{long_text}"}}"#),
            422,
            "invalid-message",
            "text",
        ),
        (
            "application/json",
            r#"{"userId":"u","sessionId":"s","data":"str"}"#.into(),
            422,
            "invalid-message",
            "data",
        ),
        (
            "application/json",
            r#"{"userId":"u","sessionId":"s"}"#.into(),
            422,
            "invalid-message",
            "text and data",
        ),
        (
            "application/json",
            r#"{"userId":"u","sessionId":"s","text":"a","userId":"v"}"#.into(),
            422,
            "invalid-message",
            "userId appears more than once",
        ),
        (
            "application/json",
            r#"{"userId":"u","sessionId":"s\n2026 ERROR forged","text":"a"}"#.into(),
            422,
            "invalid-message",
            "sessionId must not contain control characters",
        ),
    ]
}

/// Checks an answer to an invalid request against its row: the status, an
/// RFC 9457 `application/problem+json` body of the right type, with a
/// title, and a detail that says what is wrong.
pub fn assert_problem(case: &InvalidCase<'_>, status: u16, media_type: &str, problem: &Value) {
    let (content_type, body, expected, kind, names) = case;
    let summary = format!("{content_type} {}", &body[..body.len().min(80)]);
    assert_eq!(status, *expected, "{summary}");
    assert_eq!(media_type, "application/problem+json", "{summary}");
    assert_eq!(
        problem["type"],
        format!("urn:flowhost:problem:{kind}"),
        "{summary}"
    );
    assert_eq!(problem["status"], *expected, "{summary}");
    assert!(problem["title"].is_string(), "{summary}");
    assert!(
        problem["detail"].as_str().unwrap().contains(names),
        "{summary}: {problem}"
    );
}

/// An API that holds every request until released; counts those it holds.
pub struct HeldApi {
    pub url: String,
    pub holding: Arc<std::sync::atomic::AtomicUsize>,
    pub release: tokio::sync::watch::Sender<bool>,
}

impl HeldApi {
    pub async fn start() -> HeldApi {
        let holding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let counted = Arc::clone(&holding);
        let app = axum::Router::new().route(
            "/api",
            axum::routing::get(move || {
                let (counted, mut released) = (Arc::clone(&counted), released.clone());
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    released.wait_for(|go| *go).await.unwrap();
                    counted.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    "answered"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        HeldApi {
            url,
            holding,
            release,
        }
    }

    /// Its port, for a flow's `allowed_outbound_hosts`.
    pub fn port(&self) -> u16 {
        self.url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Waits until it holds `count` requests.
    pub async fn wait_holding(&self, count: usize) {
        let holding = || self.holding.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(PATIENCE, async {
            while holding() < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the API holds {} requests, not {count}", holding()));
    }
}
