//! What an operator sees of a running host: its log and its [`metrics`].
//!
//! The log is written with `tracing`: human-readable lines on stderr by
//! default, JSON lines with `FLOWHOST_LOG_FORMAT=json`; the filter comes
//! from `FLOWHOST_LOG` (or `RUST_LOG`), `info` when neither is set.

pub mod metrics;

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

/// `text` with control characters (newlines, carriage returns, escape
/// sequences, NUL, …) written as `\u{…}`: for text a flow or a client chose,
/// so that it cannot forge log lines or drive the operator's terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_unicode());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_or_colours() {
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            printable("ok\n2026-01-01 ERROR forged\r\u{1b}[31mred\0"),
            "ok\\u{a}2026-01-01 ERROR forged\\u{d}\\u{1b}[31mred\\u{0}"
        );
    }
}
