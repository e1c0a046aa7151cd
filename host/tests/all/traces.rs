//! OpenTelemetry traces, exported to a fake OTLP/HTTP collector that
//! decodes what flowhost sends (protobuf), as a real one would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value as Json, json};

use crate::support::{PATIENCE, Receiver, Site, post as post_json};

/// The caller's trace, sent in `traceparent`.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A collector: every span it was sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

async fn collect(State(collector): State<Collector>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = collector.spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| text(&r.attributes, "service.name"));
        assert_eq!(service.as_deref(), Some("flowhost"));
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
    StatusCode::OK
}

impl Collector {
    /// A collector on a port of its own; its base URL.
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let app = Router::new()
            .route("/v1/traces", post(collect))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, url)
    }

    /// Waits until a span of `trace` named `name` has come; returns it.
    async fn span(&self, trace: &str, name: &str) -> Span {
        self.span_where(&format!("{name} in {trace}"), |s| {
            hex::encode(&s.trace_id) == trace && s.name == name
        })
        .await
    }

    /// Waits until a span that `matches` has come; returns it.
    async fn span_where(&self, what: &str, matches: impl Fn(&Span) -> bool) -> Span {
        let started = Instant::now();
        loop {
            let found = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| matches(s))
                .cloned();
            if let Some(span) = found {
                return span;
            }
            assert!(started.elapsed() < PATIENCE, "no span {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything sent, as text, to search for what must not be there.
    fn everything(&self) -> String {
        format!("{:?}", self.spans.lock().unwrap())
    }
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()
        .and_then(|AnyValue { value }| value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The trace id and span id of a `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// POSTs `body` to `url` as the caller's span.
async fn post_traced(url: &str, body: &Json) -> reqwest::Response {
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    post_json(url, body, &[("traceparent", &parent)]).await
}

/// An API for the flow to call, which keeps the `traceparent` it gets.
async fn api() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    let app = Router::new().route(
        "/",
        get(move |headers: HeaderMap| async move {
            if let Some(parent) = headers.get("traceparent") {
                kept.lock()
                    .unwrap()
                    .push(parent.to_str().unwrap().to_owned());
            }
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

#[tokio::test]
async fn a_message_is_one_trace_from_the_callers_span_through_its_turn_to_each_delivery() {
    let (collector, otlp) = Collector::start().await;
    let receiver = Receiver::start().await;
    let (port, api_saw) = api().await;
    let site = Site::new(
        &["echo"],
        &format!(
            r#"
            [runtime]
            private_outbound_hosts = ["http://127.0.0.1:{port}"]

            [telemetry]
            otlp_endpoint = "{otlp}"

            [endpoints.echo]
            flow = "echo"
            webhook_url = "{url}"

            [endpoints.rough]
            flow = "hostile"
            webhook_url = "{url}"

            [endpoints.quiet]
            flow = "hostile"
            webhook_url = "{url}"
            disable_sensitive_logging = true
            "#,
            url = receiver.url()
        ),
    );
    site.add_flow(
        "hostile",
        "hostile",
        Some(&format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
        )),
    );
    let host = site
        .start_with(&[], &[("OTEL_BSP_SCHEDULE_DELAY", "100")])
        .await;

    // A caller's traced request: the accept is a child of its span.
    let body = json!({"userId": "u1", "sessionId": "s1", "text": "traced hello"});
    let accepted = post_traced(&host.url("echo"), &body).await;
    assert_eq!(accepted.status(), 202);
    let trace_id = accepted.json::<Json>().await.unwrap()["traceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let accept = collector.span(CALLER_TRACE, "accept").await;
    assert_eq!(hex::encode(&accept.parent_span_id), CALLER_SPAN);
    assert_eq!(accept.kind, SpanKind::Server as i32);
    assert_eq!(text(&accept.attributes, "trace_id"), Some(trace_id.clone()));
    assert_eq!(
        text(&accept.attributes, "endpoint").as_deref(),
        Some("echo")
    );
    assert_eq!(
        text(&accept.attributes, "http.response.status_code").as_deref(),
        Some("202")
    );

    // The turn, its child, names the flow, its version and the outcome.
    let turn = collector.span(CALLER_TRACE, "turn").await;
    assert_eq!(turn.parent_span_id, accept.span_id);
    assert_eq!(text(&turn.attributes, "flow").as_deref(), Some("echo"));
    assert_eq!(text(&turn.attributes, "version").unwrap().len(), 16);
    assert_eq!(
        text(&turn.attributes, "outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(text(&turn.attributes, "trace_id"), Some(trace_id));

    // The delivery: a client span, whose context the webhook POST carries.
    let delivered = receiver.wait_for(1).await;
    let sent = delivered[0].headers["traceparent"].to_str().unwrap();
    let (trace, span) = ids(sent);
    assert_eq!(trace, CALLER_TRACE);
    let deliver = collector.span(CALLER_TRACE, "deliver").await;
    assert_eq!(hex::encode(&deliver.span_id), span);
    assert_eq!(deliver.parent_span_id, accept.span_id);
    assert_eq!(deliver.kind, SpanKind::Client as i32);
    assert_eq!(
        text(&deliver.attributes, "outcome").as_deref(),
        Some("delivered")
    );
    assert_eq!(
        text(&deliver.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );

    // A flow's outbound request, in a message of its own trace (no caller
    // span: the accept is a root), carries the trace on.
    let call = format!("http http://127.0.0.1:{port}/");
    crate::support::send(&host.url("rough"), "s2", &call).await;
    receiver
        .wait_for_text("s2", |t| t.starts_with("status 200"))
        .await;
    let parent = api_saw
        .lock()
        .unwrap()
        .pop()
        .expect("the API got a traceparent");
    let (trace, span) = ids(&parent);
    let request = collector.span(&trace, "outbound request").await;
    assert_eq!(hex::encode(&request.span_id), span);
    let turn = collector.span(&trace, "turn").await;
    assert_eq!(request.parent_span_id, turn.span_id, "a child of the turn");
    assert_eq!(request.kind, SpanKind::Client as i32);
    let accept = collector.span(&trace, "accept").await;
    assert!(accept.parent_span_id.is_empty(), "a root");

    // What a flow logs is a span event, as it is a log line; with
    // disable_sensitive_logging it is neither.
    crate::support::send(&host.url("rough"), "s3", "tell visible-words-41").await;
    crate::support::send(&host.url("quiet"), "s4", "tell secret-words-42").await;
    let started = Instant::now();
    while !collector.everything().contains("visible-words-41") {
        assert!(
            started.elapsed() < PATIENCE,
            "the flow's log is no span event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The quiet turn's span has come too.
    let quiet_turn = collector
        .span_where("of the quiet endpoint's turn", |s| {
            s.name == "turn" && text(&s.attributes, "endpoint").as_deref() == Some("quiet")
        })
        .await;
    // (`tell` logs, prints, then panics with the words.)
    assert_eq!(
        text(&quiet_turn.attributes, "outcome").as_deref(),
        Some("trap")
    );
    assert!(
        !collector.everything().contains("secret-words-42"),
        "what a user said on a sensitive endpoint is in a span"
    );
    host.terminate().await;
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_and_nothing_carries_a_traceparent() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &crate::support::endpoint("echo", "echo", &receiver),
    );
    let host = site.start().await;
    let body = json!({"userId": "u1", "sessionId": "s1", "text": "hello"});
    let accepted = post_traced(&host.url("echo"), &body).await;
    assert_eq!(accepted.status(), 202);
    let delivered = receiver.wait_for(1).await;
    assert!(!delivered[0].headers.contains_key("traceparent"));
}
