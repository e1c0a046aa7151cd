//! Outbound HTTP, through `wasi:http`: blocking, small, and enough for
//! calling an API from a flow.
//!
//! A flow may only call the hosts its manifest lists in
//! `allowed_outbound_hosts` (`<flow>.toml` beside `<flow>.wasm`); any other
//! request fails with an [`Error`](crate::Error) saying it was denied, which
//! the flow can handle like any failed request. The host bounds how many
//! requests a message makes, how large a response may be, and how long it
//! may take.
//!
//! ```no_run
//! use flowhost_sdk::{http, json, say};
//!
//! fn handle(message: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
//!     let response = http::get("https://api.example.com/orders/A-17")?;
//!     if response.status == 200 {
//!         let order: serde_json::Value = response.json()?;
//!         say(format!("Your order is {}", order["status"]));
//!     }
//!     let created = http::post_json("https://api.example.com/tickets", &json!({"user": message.user_id}))?;
//!     say(format!("Ticket request answered {}", created.status));
//!     Ok(())
//! }
//! # flowhost_sdk::export!(handle);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::{Error, Result};

/// A response: its status, headers and whole body.
///
/// ```no_run
/// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
/// let response = flowhost_sdk::http::get("https://api.example.com/status")?;
/// if response.status == 200 && response.header("content-type") == Some("text/plain") {
///     flowhost_sdk::say(response.text()?);
/// }
/// # Ok(())
/// # }
/// # flowhost_sdk::export!(handle);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (case-insensitive) name; see [`Response`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text; see [`Response`].
    pub fn text(&self) -> Result<&str> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body, deserialized from JSON.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Order {
    ///     status: String,
    /// }
    ///
    /// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
    /// let order: Order = flowhost_sdk::http::get("https://api.example.com/orders/A-17")?.json()?;
    /// flowhost_sdk::say(format!("Your order is {}", order.status));
    /// # Ok(())
    /// # }
    /// # flowhost_sdk::export!(handle);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// Sends a GET request.
///
/// ```no_run
/// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
/// match flowhost_sdk::http::get("https://api.example.com/weather") {
///     Ok(response) => flowhost_sdk::say(response.text()?),
///     // Not in allowed_outbound_hosts, unreachable, too slow…: handle it.
///     Err(error) => flowhost_sdk::say(format!("The weather service is away ({error})")),
/// }
/// # Ok(())
/// # }
/// # flowhost_sdk::export!(handle);
/// ```
pub fn get(url: &str) -> Result<Response> {
    send("GET", url, &[], None)
}

/// Sends a POST request with a JSON body.
///
/// ```no_run
/// # fn handle(message: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
/// let body = flowhost_sdk::json!({ "user": message.user_id, "topic": "refund" });
/// let response = flowhost_sdk::http::post_json("https://api.example.com/tickets", &body)?;
/// flowhost_sdk::say(format!("Ticket service answered {}", response.status));
/// # Ok(())
/// # }
/// # flowhost_sdk::export!(handle);
/// ```
pub fn post_json(url: &str, body: &impl Serialize) -> Result<Response> {
    let body = serde_json::to_vec(body)?;
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(&body),
    )
}

/// Sends a request with any method, headers and body.
///
/// ```no_run
/// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
/// let response = flowhost_sdk::http::send(
///     "PUT",
///     "https://api.example.com/profile/42",
///     &[("content-type", "text/plain"), ("authorization", "Bearer …")],
///     Some(b"hello"),
/// )?;
/// # Ok(())
/// # }
/// # flowhost_sdk::export!(handle);
/// ```
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    let (scheme, authority, path) = split_url(url)?;
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    let fields =
        Fields::from_list(&fields).map_err(|e| Error::msg(format!("invalid header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| Error::msg(format!("{url}: invalid {what}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| invalid("path"))?;

    let outgoing = request
        .body()
        .map_err(|()| Error::msg("the request body was taken"))?;
    if let Some(body) = body {
        let stream = outgoing
            .write()
            .map_err(|()| Error::msg("cannot write the request body"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error::msg(format!("{url}: sending the body failed: {e:?}")))?;
        }
    }
    let pending =
        outgoing_handler::handle(request, None).map_err(|e| Error::msg(format!("{url}: {e}")))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| Error::msg(format!("{url}: {e}")))?;

    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| Error::msg("the response was taken"))?
        .map_err(|e| Error::msg(format!("{url}: {e}")))?;

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| Error::msg("the body was taken"))?;
    let stream = incoming
        .stream()
        .map_err(|()| Error::msg("the body was taken"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::msg(format!(
                    "{url}: reading the response failed: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `https://host:port/path?query` into its scheme, authority and path.
fn split_url(url: &str) -> Result<(Scheme, &str, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::msg(format!("{url:?} is not an absolute URL")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(Error::msg(format!("{url:?}: unsupported scheme {other}"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(Error::msg(format!("{url:?} has no host")));
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok((scheme, authority, path))
}
