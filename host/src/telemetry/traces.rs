//! OpenTelemetry traces: the `tracing` spans of a message's path exported
//! over OTLP/HTTP (protobuf), off unless `[telemetry] otlp_endpoint` or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set.
//!
//! One trace per message, across time and hosts: the accept (a child of
//! the caller's W3C `traceparent`, when it sent one) keeps its own
//! `traceparent` in the store with the message; the turn and each delivery
//! attempt, whenever and on whichever host they run, are its children. The
//! webhook POST and the flow's outbound HTTP requests carry `traceparent`
//! onward. Every span carries the message's `traceId` as
//! `flowhost.trace_id`.
//!
//! Spans hold names, ids, statuses and outcomes, never what a user said;
//! a flow's own log lines become span events as they become log lines, so
//! `disable_sensitive_logging`, which keeps them out of the log, keeps
//! them out of traces too.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::Registry;

/// The layer that turns `tracing` spans into OpenTelemetry spans.
pub type TracesLayer = OpenTelemetryLayer<Registry, SdkTracer>;

/// The environment variables that turn traces on without the file.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The exporting layer and its provider (to flush at exit), when traces
/// are on: `configured` is the collector's base URL (`http://host:4318`);
/// without it, the standard variables decide, read by the exporter.
pub fn layer(configured: Option<&str>) -> anyhow::Result<Option<(TracesLayer, SdkTracerProvider)>> {
    let configured = configured.map(str::trim).filter(|url| !url.is_empty());
    let from_environment = ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    if configured.is_none() && !from_environment {
        return Ok(None);
    }
    // The exporter's HTTP client is reqwest on rustls, without a provider
    // of its own.
    crate::tls::install_crypto_provider();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(base) = configured {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(Resource::builder().with_service_name("flowhost").build())
        .build();
    let layer = OpenTelemetryLayer::new(provider.tracer("flowhost"))
        .with_threads(false)
        .with_location(false);
    Ok(Some((layer, provider)))
}

/// The parent a request names in its `traceparent` header, if it names a
/// valid one.
pub fn parent_in(headers: &http::HeaderMap) -> Option<Context> {
    let context = TraceContextPropagator::new()
        .extract_with_context(&Context::new(), &HeaderExtractor(headers));
    context.has_active_span().then_some(context)
}

/// The parent a stored `traceparent` names.
pub fn parent_of(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
    context.has_active_span().then_some(context)
}

/// Makes `parent` the parent of `span`, which must not have been entered
/// yet. Nothing when traces are off.
pub fn set_parent(span: &tracing::Span, parent: Option<Context>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of the current span, to store or send on; `None`
/// when traces are off.
pub fn current_traceparent() -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Puts the current span's `traceparent` on an outgoing request, replacing
/// any there; nothing when traces are off.
pub fn send_on(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    if !context.has_active_span() {
        return;
    }
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    if headers.get("tracestate").is_some_and(|v| v.is_empty()) {
        headers.remove("tracestate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_from_headers_and_from_the_store() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", valid.parse().unwrap());
        let parent = parent_in(&headers).expect("a parent");
        let span = parent.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(parent_of(valid).is_some());
        for invalid in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "not a traceparent",
        ] {
            assert!(parent_of(invalid).is_none(), "{invalid}");
        }
        assert!(parent_in(&http::HeaderMap::new()).is_none());
    }

    #[test]
    fn nothing_is_sent_on_when_traces_are_off() {
        let mut headers = http::HeaderMap::new();
        send_on(&mut headers);
        assert!(headers.is_empty());
        assert_eq!(current_traceparent(), None);
    }
}
