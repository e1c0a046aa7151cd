//! Logging, with `tracing`: human-readable lines on stderr by default, JSON
//! lines with `FLOWHOST_LOG_FORMAT=json`; the filter comes from
//! `FLOWHOST_LOG` (or `RUST_LOG`), `info` when neither is set.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, at start.
pub fn init() {
    let filter = std::env::var("FLOWHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("FLOWHOST_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
