//! The configuration's checks: what is refused, and how it is said.

use super::*;

const FULL: &str = r#"
    listen = "127.0.0.1:9999"
    flows_dir = "my-flows"
    data_dir = "my-data"

    [limits]
    memory = "32 MiB"
    deadline = "2s"

    [delivery]
    retry_schedule = ["10ms", "20ms"]
    allow_private_webhooks = true
    max_concurrent_per_endpoint = 8

    [runtime]
    max_queued_per_endpoint = 300
    max_queued_per_session = 30

    [store]
    session_retention = "90d"

    [endpoints.support]
    flow = "order-help"
    url_token = "0123456789abcdef0123456789abcdef"
    auth = "api-key"
    webhook_url = "http://127.0.0.1:9000/hook"
    webhook_user = "bot"
    webhook_password = "s3cret"
    disable_sensitive_logging = true
    output_timing = "at-end"
    idempotency_window = "1h"
    session_ttl = "30m"

    [endpoints.chat]
    flow = "order-help"
    webhook_url = "http://127.0.0.1:9000/chat"
"#;

#[test]
fn reads_every_documented_key() {
    let config = Config::from_toml(FULL).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(config.flows_dir, PathBuf::from("my-flows"));
    assert_eq!(config.limits.memory, 32 << 20);
    assert_eq!(config.limits.deadline, Duration::from_secs(2));
    assert_eq!(
        config.store.session_retention,
        Duration::from_secs(90 * 86400)
    );
    assert_eq!(config.runtime.max_queued_per_endpoint, 300);
    assert_eq!(config.runtime.max_queued_per_session, 30);
    assert_eq!(config.delivery.max_concurrent_per_endpoint, 8);
    assert_eq!(
        config.delivery.retry_schedule,
        [Duration::from_millis(10), Duration::from_millis(20)]
    );
    let support = &config.endpoints["support"];
    assert_eq!(support.flow, "order-help");
    assert_eq!(support.auth, Auth::ApiKey);
    assert_eq!(
        support.webhook_url.as_ref().map(|url| url.as_str()),
        Some("http://127.0.0.1:9000/hook")
    );
    assert_eq!(support.mode, EndpointMode::Webhook, "the default");
    assert_eq!(
        support.webhook_auth,
        Some(BasicAuth {
            user: "bot".into(),
            password: "s3cret".into()
        })
    );
    assert!(support.disable_sensitive_logging);
    assert_eq!(support.output_timing, OutputTiming::AtEnd);
    let chat = &config.endpoints["chat"];
    assert_eq!(chat.output_timing, OutputTiming::Immediate, "the default");
    assert_eq!(support.idempotency_window, Duration::from_secs(3600));
    assert_eq!(support.session_ttl, Some(Duration::from_secs(1800)));
    assert_eq!(chat.session_ttl, None, "the default");
    assert_eq!(
        chat.idempotency_window,
        Duration::from_secs(86_400),
        "the default"
    );

    let Err(error) = Config::from_toml(
        "[endpoints.e]\nflow = \"f\"\nwebhook_url = \"http://x/\"\noutput_timing = \"soon\"\n",
    ) else {
        panic!("an unknown output_timing is refused");
    };
    assert!(
        error.to_string().contains("`immediate` or `at-end`"),
        "{error}"
    );
}

#[test]
fn a_rest_endpoint_has_a_timeout_and_no_webhook() {
    let config = Config::from_toml(
        "[endpoints.api]\nflow = \"f\"\nmode = \"rest\"\nrest_timeout = \"12s\"\n\
         [endpoints.quick]\nflow = \"f\"\nmode = \"rest\"\n",
    )
    .unwrap();
    let api = &config.endpoints["api"];
    assert_eq!(api.mode, EndpointMode::Rest);
    assert_eq!(api.rest_timeout, Duration::from_secs(12));
    assert_eq!(api.webhook_url, None);
    assert_eq!(
        config.endpoints["quick"].rest_timeout,
        Duration::from_secs(30),
        "the default"
    );

    for (table, expected) in [
        (
            "mode = \"rest\"\nwebhook_url = \"http://x/\"",
            "endpoints.e.webhook_url: a REST endpoint answers the POST itself",
        ),
        (
            "mode = \"rest\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            "endpoints.e.webhook_secret: a REST endpoint has no webhook",
        ),
        ("", "endpoints.e.webhook_url: required (or mode = \"rest\""),
        (
            "webhook_url = \"http://x/\"\nrest_timeout = \"5s\"",
            "endpoints.e.rest_timeout: only for mode = \"rest\"",
        ),
    ] {
        let Err(error) = Config::from_toml(&format!("[endpoints.e]\nflow = \"f\"\n{table}\n"))
        else {
            panic!("{table:?} is refused");
        };
        assert!(error.to_string().contains(expected), "{table:?}: {error}");
    }
}

#[test]
fn ceilings_default_to_the_built_in_ones_or_the_limits_above_them() {
    let config = Config::from_toml("[limits]\ndeadline = \"2m\"\n").unwrap();
    assert_eq!(config.max_limits.deadline, Duration::from_secs(120));
    assert_eq!(config.max_limits.max_log_size, 1 << 20);
    assert_eq!(config.max_limits.memory, config.runtime.max_flow_memory);

    let set = Config::from_toml(
        "[runtime]\nfuel_metering = true\n[limits]\nfuel = 500\n\
         [max_limits]\ndeadline = \"20s\"\nfuel = 1000\n",
    )
    .unwrap();
    assert_eq!(set.max_limits.deadline, Duration::from_secs(20));
    assert_eq!(set.max_limits.fuel, Some(1000));

    let Err(ConfigError::Invalid(problems)) = Config::from_toml(
        "[limits]\ndeadline = \"30s\"\n[max_limits]\ndeadline = \"10s\"\nmemory = \"2 GiB\"\n\
         [runtime]\ncompile_timeout = \"0s\"\nprivate_outbound_hosts = [\"127.0.0.1\"]\n",
    ) else {
        panic!("limits over their ceilings are refused");
    };
    let all = problems.join("\n");
    for expected in [
        "limits.deadline: 30 s is over the host's ceiling max_limits.deadline (10 s)",
        "max_limits.memory: 2 GiB is more than runtime.max_flow_memory",
        "runtime.compile_timeout",
        "runtime.private_outbound_hosts",
    ] {
        assert!(all.contains(expected), "{expected}: {all}");
    }
}

#[test]
fn a_weak_admin_token_is_refused() {
    for weak in [
        "short-token",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "1212121212121212",
    ] {
        let Err(ConfigError::Invalid(problems)) =
            Config::from_toml(&format!("admin_token = \"{weak}\"\n"))
        else {
            panic!("{weak} is refused");
        };
        assert!(problems[0].starts_with("admin_token:"), "{problems:?}");
    }
    let strong = "9f86d081884c7d659a2feaa0c55ad015";
    assert!(Config::from_toml(&format!("admin_token = \"{strong}\"\n")).is_ok());
}

#[test]
fn errors_never_quote_a_secret() {
    let syntax = Config::from_toml("admin_token = 31337313373133731337\n")
        .unwrap_err()
        .to_string();
    assert!(!syntax.contains("31337"), "{syntax}");
    assert!(syntax.contains("line 1, column 15"), "{syntax}");
    let error = Config::from_toml(
        "admin_token = 313373133731337\n\
         [endpoints.x]\nflow = \"echo\"\nwebhook_url = \"http://user:pa55word@[::1\"\n\
         webhook_user = \"bot\"\nwebhook_password = 4242424242\n",
    )
    .unwrap_err()
    .to_string();
    assert!(!error.contains("31337"), "{error}");
    assert!(error.contains("admin_token"), "{error}");
    let bad_url = Config::from_toml(
        "[endpoints.x]\nflow = \"echo\"\nwebhook_url = \"http://user:pa55word@[::1\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(!bad_url.contains("pa55word"), "{bad_url}");
    assert!(bad_url.contains("webhook_url"), "{bad_url}");
    let password = Config::from_toml(
        "[endpoints.x]\nflow = \"echo\"\nwebhook_url = \"http://127.0.0.1/\"\n\
         webhook_user = \"bot\"\nwebhook_password = 4242424242\n",
    )
    .unwrap_err()
    .to_string();
    assert!(!password.contains("4242424242"), "{password}");
    assert!(password.contains("webhook_password"), "{password}");
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.delivery.retry_schedule.len(), 7);
    assert_eq!(
        (
            config.runtime.max_queued_per_endpoint,
            config.runtime.max_queued_per_session,
            config.delivery.max_concurrent_per_endpoint
        ),
        (25_000, 6_250, 64)
    );
    assert_eq!(
        config.store.session_retention,
        Duration::from_secs(30 * 86400)
    );
    assert!(config.endpoints.is_empty());
}

#[test]
fn reports_every_problem_at_once() {
    let err = Config::from_toml(
        r#"
        listen = "nowhere"
        [endpoints.Bad]
        flow = "../etc"
        url_token = "short"
        webhook_url = "ftp://example.com"
        webhook_password = "x"
        "#,
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "listen:",
        "endpoints.Bad: an endpoint name",
        "endpoints.Bad.flow:",
        "endpoints.Bad.url_token:",
        "endpoints.Bad.webhook_url:",
        "endpoints.Bad.webhook_password: set webhook_user too",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
}

#[test]
fn refuses_private_webhooks_unless_allowed() {
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
        "http://10.1.2.3/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://[::ffff:0:7f00:1]/",
        "http://[2002:7f00:1::]/",
    ] {
        let config = format!("[endpoints.a]\nflow = \"echo\"\nwebhook_url = \"{url}\"\n");
        let err = Config::from_toml(&config).unwrap_err().to_string();
        assert!(err.contains("allow_private_webhooks"), "{url}: {err}");
        let allowed = format!("[delivery]\nallow_private_webhooks = true\n{config}");
        assert!(Config::from_toml(&allowed).is_ok(), "{url}");
    }
    let public = "[endpoints.a]\nflow = \"echo\"\nwebhook_url = \"https://example.com/hook\"\n";
    assert!(Config::from_toml(public).is_ok());
}

#[test]
fn checks_webhook_secrets() {
    let with = |secret: &str| {
        Config::from_toml(&format!(
            "[endpoints.a]\nflow = \"echo\"\nwebhook_url = \"https://example.com/\"\nwebhook_secret = \"{secret}\"\n"
        ))
    };
    assert!(with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    assert!(
        with("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_err()
            .to_string()
            .contains("whsec_")
    );
    assert!(
        with("whsec_c2hvcnQ=")
            .unwrap_err()
            .to_string()
            .contains("24")
    );
}

#[test]
fn reads_the_http_table_with_defaults_for_what_is_not_set() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.http, HttpConfig::default());
    assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
    let config = Config::from_toml(
        r#"
        [http]
        header_read_timeout = "2s"
        idle_timeout = "30s"
        max_connections = 10
        max_header_size = "16 KiB"
        max_buffered_body_bytes = "8 MiB"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.http,
        HttpConfig {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10,
            max_header_size: 16 << 10,
            max_buffered_body_bytes: 8 << 20,
        }
    );
    let err = Config::from_toml(
        "max_body_size = \"2 MiB\"\n[http]\nheader_read_timeout = \"0s\"\nmax_connections = 0\nmax_header_size = 100\nmax_buffered_body_bytes = \"1 MiB\"\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "http.header_read_timeout",
        "http.max_connections",
        "http.max_header_size",
        "http.max_buffered_body_bytes",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
}

#[test]
fn rejects_unknown_keys() {
    let err = Config::from_toml("[endpoints.a]\nflow = \"echo\"\nwebhok_url = \"http://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("webhok_url"), "{err}");
}

#[test]
fn rejects_duplicate_tokens_and_credentials_in_urls() {
    let err = Config::from_toml(
        r#"
        [endpoints.a]
        flow = "echo"
        url_token = "0123456789abcdef0123456789abcdef"
        webhook_url = "http://u:p@example.com/"
        [endpoints.b]
        flow = "echo"
        url_token = "0123456789abcdef0123456789abcdef"
        webhook_url = "http://example.com/"
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("same token"), "{err}");
    assert!(err.contains("credentials"), "{err}");
}

#[test]
fn every_default_comes_from_defaults_toml() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.max_body_size, 1 << 20);
    assert_eq!(config.http, HttpConfig::default());
    assert_eq!(
        config.limits,
        Limits::default(),
        "defaults.toml's [limits] are the runtime's own defaults"
    );
    assert_eq!(config.runtime.max_concurrent_flows, 12_000);
    assert_eq!(config.runtime.warm_instances, 32);
    assert!(config.runtime.max_total_flow_memory >= 512 << 20);
    // A smaller host keeps the pool within it.
    let small = Config::from_toml("[runtime]\nmax_concurrent_flows = 10\n").unwrap();
    assert_eq!(small.runtime.warm_instances, 10);
    assert_eq!(small.limits.max_concurrent, 9);
    assert_eq!(config.runtime.max_queued_per_endpoint, 25_000);
    assert_eq!(config.delivery.retry_schedule.len(), 7);
    assert_eq!(config.delivery.max_concurrent_per_endpoint, 64);
    assert_eq!(
        config.store.session_retention,
        Duration::from_secs(30 * 86400)
    );
    assert!(config.watch);

    // A file sets one key of a table; the table's other keys keep theirs.
    let config = Config::from_toml("[http]\nmax_connections = 10\n").unwrap();
    assert_eq!(config.http.max_connections, 10);
    assert_eq!(config.http.idle_timeout, HttpConfig::default().idle_timeout);
}

#[test]
fn watch_build_takes_a_crate_folder_or_a_folder_and_its_command() {
    use crate::flows::watch_build::WatchBuild;
    let config = Config::from_toml(
        r#"watch_build = ["../order-help", { dir = "../js-flow", command = "npm run build" }]"#,
    )
    .unwrap();
    assert_eq!(
        config.watch_build,
        [
            WatchBuild {
                dir: "../order-help".into(),
                command: None,
            },
            WatchBuild {
                dir: "../js-flow".into(),
                command: Some("npm run build".into()),
            },
        ]
    );
}
