//! Errors as RFC 9457 `application/problem+json` documents.
//!
//! Every error flowhost answers has a `type` (a stable URN clients can match
//! on), a `title`, the `status`, and a `detail` that says what to fix;
//! validation errors add `errors`, one per field, with a JSON pointer to it.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::store::StoreError;

/// One field's problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// A JSON pointer to the field, such as `/userId`.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

/// An error response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The slug of its type, `urn:flowhost:problem:<slug>`.
    #[serde(rename = "type", serialize_with = "type_urn")]
    pub slug: &'static str,
    /// A short, fixed summary of the problem type.
    pub title: &'static str,
    /// The HTTP status.
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    /// What happened, for this request.
    pub detail: String,
    /// The fields at fault, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The message the problem is about, when it was stored (a REST
    /// endpoint's turn that failed or did not end in time).
    #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<Box<str>>,
    #[serde(skip)]
    /// Boxed, as the other rare members, to keep a `Result<_, Problem>`
    /// small on the paths that succeed.
    headers: Box<[(HeaderName, HeaderValue)]>,
}

fn type_urn<S: serde::Serializer>(slug: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("urn:flowhost:problem:{slug}"))
}

fn status_code<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem of type `urn:flowhost:problem:<slug>`.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            slug,
            title,
            status,
            detail: detail.into(),
            errors: Vec::new(),
            trace_id: None,
            headers: Box::default(),
        }
    }

    /// Names the message the problem is about.
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into().into_boxed_str());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        let mut headers = std::mem::take(&mut self.headers).into_vec();
        headers.push((name, HeaderValue::from_static(value)));
        self.headers = headers.into_boxed_slice();
        self
    }

    /// No endpoint has this URL (or the route does not exist).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// A missing or wrong API key: the same answer for both.
    pub fn unauthorized() -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key",
            "this endpoint requires a valid API key in the X-Webhook-Key header",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            r#"ApiKey realm="flowhost", header="X-Webhook-Key""#,
        )
    }

    /// Something went wrong on flowhost's side; the detail stays in its log.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "flowhost could not handle the request; it has been logged",
        )
    }

    /// Retry later: overloaded, or the flow is not loaded.
    pub fn unavailable(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, title, detail)
            .with_header(header::RETRY_AFTER, "1")
    }
}

/// A store failure, logged here, once: one that passes by itself (a full
/// disk, a busy database) is a 503 with `Retry-After`, which clients retry;
/// any other a 500. Nothing was half-written either way.
impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        if error.is_transient() {
            tracing::error!(%error, "the store failed, for now: 503");
            Problem::unavailable(
                "storage-unavailable",
                "Storage unavailable",
                "the request could not be stored, and nothing of it was kept; retry shortly",
            )
        } else {
            tracing::error!(%error, "the store failed");
            Problem::internal()
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let headers = self.headers.clone();
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in headers.into_vec() {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
