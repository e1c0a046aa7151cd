//! What an operator sees of a running host: its log, its [`metrics`] and
//! its [`traces`].
//!
//! The log is written with `tracing`: human-readable lines on stderr by
//! default, JSON lines with `FLOWHOST_LOG_FORMAT=json`; the filter comes
//! from `FLOWHOST_LOG` (or `RUST_LOG`), `info` when neither is set (`warn` for
//! `flowhost run` and `test`, whose output is their report). The
//! same spans, exported, are the traces.

pub mod metrics;
pub mod traces;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The installed subscriber's exporter, to flush at exit.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn traces_on(&self) -> bool {
        self.traces.is_some()
    }

    /// Exports the spans not yet sent (waiting at most 5 s for the
    /// collector), and stops exporting.
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = stopped {
                tracing::warn!(%error, "the last spans may not have been exported");
            }
        }
    }
}

/// Installs the global subscriber: the log, at `default_level` unless
/// `FLOWHOST_LOG` says otherwise, and traces exported to `otlp_endpoint` (or
/// where the standard variables say) when set. Call once, at start.
pub fn init(otlp_endpoint: Option<&str>, default_level: &str) -> anyhow::Result<Telemetry> {
    let filter = std::env::var("FLOWHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .map(EnvFilter::new)
        // notify logs at info when a watched folder's removal races its
        // deletion: its own business, not the operator's.
        .unwrap_or_else(|| EnvFilter::new(format!("{default_level},notify=warn")));
    let (traces, provider) = match traces::layer(otlp_endpoint)? {
        Some((layer, provider)) => (Some(layer), Some(provider)),
        None => (None, None),
    };
    let subscriber = tracing_subscriber::registry().with(traces).with(filter);
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("FLOWHOST_LOG_FORMAT").is_ok_and(|f| f == "json") {
        subscriber.with(log.json()).init();
    } else {
        subscriber.with(log).init();
    }
    Ok(Telemetry { traces: provider })
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
