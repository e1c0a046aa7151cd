//! Write flowhost transformers in Rust.
//!
//! A transformer sits between a channel (Slack, an SMS gateway) and an
//! endpoint's flow. [`Transformer::handle_input`] turns what the channel
//! POSTs to the endpoint into a [`Message`] to run (or an answer of its own,
//! or nothing), and [`Transformer::handle_output`] turns each [`Output`] of
//! the flow into the [`WebhookRequest`] the channel expects (or drops it).
//! Export the type that implements both with
//! [`export_transformer!`](crate::export_transformer).
//!
//! The transformer's settings are the `[config]` table of its manifest, read
//! with [`config`]; it logs with [`info!`](crate::info) and friends, and may
//! call other services with [`http`](crate::http) if its manifest allows
//! them. It has no context, profile or session: those belong to flows.
//!
//! ```no_run
//! use flowhost_sdk::transformer::{
//!     Delivery, Input, Message, Output, Request, Response, Transformer, WebhookRequest,
//! };
//! use flowhost_sdk::{Result, json};
//!
//! struct Chat;
//!
//! impl Transformer for Chat {
//!     fn handle_input(request: Request) -> Result<Input> {
//!         if request.header("x-api-token").is_none() {
//!             return Ok(Input::Respond(Response::problem(401, "Unauthorized", "no token")));
//!         }
//!         let body: flowhost_sdk::Value = request.json()?;
//!         let (Some(user), Some(text)) = (body["from"].as_str(), body["text"].as_str()) else {
//!             return Ok(Input::Ignore);
//!         };
//!         Ok(Input::run(Message::new(user, user).with_text(text)))
//!     }
//!
//!     fn handle_output(output: Output) -> Result<Delivery> {
//!         let Some(text) = output.text else {
//!             return Ok(Delivery::Drop);
//!         };
//!         let request = WebhookRequest::json(&json!({ "to": output.user_id, "text": text }))?;
//!         Ok(Delivery::Send(request))
//!     }
//! }
//!
//! flowhost_sdk::export_transformer!(Chat);
//! ```
//!
//! The module is behind the crate's `transformer` feature:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! flowhost-sdk = { path = "../flowhost/guest-sdk", features = ["transformer"] }
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`, as a flow is built. A
//! component built this way exports both `handle-input` and `handle-output`,
//! and imports `log`, `config` and the types-only `channel` and `types`
//! interfaces (the crate's flow bindings bring the last), besides WASI.
//! The feature is off by default because the `transformer` world's
//! bindings make every component built with the crate import `channel`,
//! flows included; in a Cargo workspace that also builds flows, features
//! are unified, so those flows import it too (harmlessly: the host links it
//! for every component).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Map, Result, Value};

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // in the generated bindings
pub mod __private {
    //! The generated bindings of the `transformer` world and the glue behind
    //! [`export_transformer!`](crate::export_transformer). Not part of the
    //! API.

    wit_bindgen::generate!({
        path: "../wit",
        world: "transformer",
        pub_export_macro: true,
        export_macro_name: "export_transformer_world",
        default_bindings_module: "::flowhost_sdk::transformer::__private",
        runtime_path: "::flowhost_sdk::__private::wit_bindgen::rt",
        // The same `log` interface as a flow's: `info!` and friends call it
        // through the flow bindings, so both worlds share one import.
        with: {
            "flowhost:flow/log@0.3.0": crate::__private::flowhost::flow::log,
        },
    });

    use super::Transformer;
    use flowhost::flow::channel as wit;

    /// Converts the WIT request and runs the author's `handle_input`.
    pub fn handle_input<T: Transformer>(raw: wit::Request) -> Result<wit::Input, String> {
        let request = super::Request {
            method: raw.method,
            path: raw.path,
            query: raw.query,
            headers: raw.headers,
            body: raw.body,
        };
        let input = T::handle_input(request).map_err(|e| e.to_string())?;
        Ok(match input {
            super::Input::Run { message, answer } => wit::Input::Run(wit::Run {
                message: wit::Message {
                    user_id: message.user_id,
                    session_id: message.session_id,
                    text: message.text,
                    data: message
                        .data
                        .map(|map| crate::Value::Object(map).to_string()),
                },
                answer: answer.map(response),
            }),
            super::Input::Respond(answer) => wit::Input::Respond(response(answer)),
            super::Input::Ignore => wit::Input::Ignore,
        })
    }

    /// Converts the WIT output and runs the author's `handle_output`.
    pub fn handle_output<T: Transformer>(raw: wit::Output) -> Result<wit::Delivery, String> {
        let data = match raw.data {
            Some(json) => {
                Some(crate::parse_object("output data", &json).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let output = super::Output {
            user_id: raw.user_id,
            session_id: raw.session_id,
            text: raw.text,
            data,
            trace_id: raw.trace_id,
            endpoint: raw.endpoint,
        };
        Ok(match T::handle_output(output).map_err(|e| e.to_string())? {
            super::Delivery::Send(request) => wit::Delivery::Send(wit::WebhookRequest {
                url: request.url,
                headers: request.headers,
                body: request.body,
            }),
            super::Delivery::Drop => wit::Delivery::Drop,
        })
    }

    fn response(response: super::Response) -> wit::Response {
        wit::Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}

/// A transformer: what turns a channel's requests into messages for the
/// endpoint's flow, and the flow's outputs into requests to the channel.
/// Export it with [`export_transformer!`](crate::export_transformer); the
/// [module](self) has an example.
///
/// An error from either function is the transformer failing: the host logs
/// it, and the endpoint's `transformer_abort_on_error` says what happens
/// next. Answer a request the channel got wrong with
/// [`Input::Respond`] instead, so the channel hears why.
pub trait Transformer {
    /// Turns a request to the endpoint into a message to run, an answer, or
    /// nothing.
    fn handle_input(request: Request) -> Result<Input>;

    /// Turns one output of the flow into the request that carries it to the
    /// channel, or drops it.
    fn handle_output(output: Output) -> Result<Delivery>;
}

/// Exports a type that implements [`Transformer`] as the transformer.
///
/// Use the macro once, at the top level of the transformer crate; the
/// [module](crate::transformer) has an example.
#[macro_export]
macro_rules! export_transformer {
    ($transformer:ty) => {
        const _: () = {
            struct FlowhostTransformerExport;

            impl $crate::transformer::__private::Guest for FlowhostTransformerExport {
                fn handle_input(
                    request: $crate::transformer::__private::flowhost::flow::channel::Request,
                ) -> ::core::result::Result<
                    $crate::transformer::__private::flowhost::flow::channel::Input,
                    ::std::string::String,
                > {
                    $crate::transformer::__private::handle_input::<$transformer>(request)
                }

                fn handle_output(
                    output: $crate::transformer::__private::flowhost::flow::channel::Output,
                ) -> ::core::result::Result<
                    $crate::transformer::__private::flowhost::flow::channel::Delivery,
                    ::std::string::String,
                > {
                    $crate::transformer::__private::handle_output::<$transformer>(output)
                }
            }

            $crate::transformer::__private::export_transformer_world!(
                FlowhostTransformerExport with_types_in $crate::transformer::__private
            );
        };
    };
}

/// The value of `key` in the `[config]` table of the transformer's
/// manifest, if it sets one.
///
/// ```no_run
/// let secret = flowhost_sdk::transformer::config("signing_secret");
/// if secret.is_none() {
///     flowhost_sdk::error!("the manifest sets no signing_secret");
/// }
/// ```
pub fn config(key: &str) -> Option<String> {
    __private::flowhost::flow::config::get(key)
}

/// The request a channel sent to the endpoint's URL, after the endpoint
/// checked its size and API key.
///
/// ```
/// use flowhost_sdk::transformer::Request;
///
/// let request = Request::post("/endpoints/sms", "From=%2B15550100&Body=hi")
///     .with_header("Content-Type", "application/x-www-form-urlencoded");
/// assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
/// assert_eq!(request.form_value("From").as_deref(), Some("+15550100"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method: `POST`.
    pub method: String,
    /// The path, such as `/endpoints/slack`.
    pub path: String,
    /// The query string without its `?`, if the URL had one.
    pub query: Option<String>,
    /// Every header, in the order received; names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as sent.
    pub body: Vec<u8>,
}

impl Request {
    /// A `POST` to `path` with this body, no query and no headers: for
    /// tests.
    pub fn post(path: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request {
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header (its name lower-cased, as the host passes them).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the query string (without its `?`).
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the `content-type` header, lower case and without
    /// its parameters: `application/json` for
    /// `Application/JSON; charset=utf-8`.
    pub fn media_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        let essence = value.split(';').next().unwrap_or("").trim();
        (!essence.is_empty()).then(|| essence.to_ascii_lowercase())
    }

    /// The body as UTF-8 text.
    pub fn body_text(&self) -> Result<&str> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body, deserialized from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body decoded as an HTML form
    /// (`application/x-www-form-urlencoded`): every name and value, in
    /// order. See [`form_decode`].
    pub fn form(&self) -> Vec<(String, String)> {
        form_decode(&self.body)
    }

    /// The first value of the form field `name` (see [`Request::form`]).
    pub fn form_value(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// A message for the endpoint to run: it checks it as it checks the
/// endpoint's own JSON (ids of 1 to 256 characters, text of at most 10,000).
///
/// ```
/// use flowhost_sdk::object;
/// use flowhost_sdk::transformer::Message;
///
/// let message = Message::new("+15550100", "+15550100")
///     .with_text("hi")
///     .with_data(object!({ "sms": { "to": "+15550199" } }));
/// assert_eq!(message.text.as_deref(), Some("hi"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The end user's id.
    pub user_id: String,
    /// The conversation's id.
    pub session_id: String,
    /// The user's text.
    pub text: Option<String>,
    /// The message's data: a JSON object.
    pub data: Option<Map<String, Value>>,
}

impl Message {
    /// A message from `user_id` in the conversation `session_id`, with no
    /// text and no data yet.
    pub fn new(user_id: impl Into<String>, session_id: impl Into<String>) -> Self {
        Message {
            user_id: user_id.into(),
            session_id: session_id.into(),
            text: None,
            data: None,
        }
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets the data.
    pub fn with_data(mut self, data: Map<String, Value>) -> Self {
        self.data = Some(data);
        self
    }
}

/// An HTTP response to the channel, sent as it is.
///
/// ```
/// use flowhost_sdk::json;
/// use flowhost_sdk::transformer::Response;
///
/// let ok = Response::json(200, &json!({ "challenge": "3eZbrw1a" }))?;
/// assert_eq!(ok.body, br#"{"challenge":"3eZbrw1a"}"#);
/// let refused = Response::problem(401, "Unauthorized", "bad signature");
/// assert_eq!(refused.status, 401);
/// # Ok::<(), flowhost_sdk::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status, 200 to 599.
    pub status: u16,
    /// Headers to send, such as `content-type`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no headers and no body.
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: text.into().into_bytes(),
        }
    }

    /// An `application/json` response with `value` as its body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self> {
        Ok(Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(value)?,
        })
    }

    /// An `application/problem+json` response (RFC 9457):
    /// `{"type":"about:blank","title":..,"status":..,"detail":..}`.
    pub fn problem(status: u16, title: &str, detail: &str) -> Self {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
        });
        Response {
            status,
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What to do with a request to the endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Run a message: the endpoint stores it and runs it in the session's
    /// order.
    Run {
        /// The message.
        message: Message,
        /// The answer once the message is stored, a `2xx`; when `None`, the
        /// endpoint's own `202`.
        answer: Option<Response>,
    },
    /// Answer now with this, and run nothing: a channel's verification
    /// handshake, or a request refused.
    Respond(Response),
    /// Answer `200` and run nothing: an event the flow has no use for.
    Ignore,
}

impl Input {
    /// Runs `message`, answered with the endpoint's own `202`.
    pub fn run(message: Message) -> Self {
        Input::Run {
            message,
            answer: None,
        }
    }

    /// Runs `message`, answered with `answer` (a `2xx`) once it is stored.
    pub fn run_with_answer(message: Message, answer: Response) -> Self {
        Input::Run {
            message,
            answer: Some(answer),
        }
    }
}

/// One output of the flow, to be sent to the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The end user's id.
    pub user_id: String,
    /// The conversation's id.
    pub session_id: String,
    /// The output's text.
    pub text: Option<String>,
    /// The output's data: a JSON object.
    pub data: Option<Map<String, Value>>,
    /// The trace id of the message that caused it.
    pub trace_id: String,
    /// The endpoint's name.
    pub endpoint: String,
}

impl Output {
    /// An output to `user_id` in `session_id` with no text or data, and
    /// empty trace id and endpoint: for tests.
    pub fn new(user_id: impl Into<String>, session_id: impl Into<String>) -> Self {
        Output {
            user_id: user_id.into(),
            session_id: session_id.into(),
            text: None,
            data: None,
            trace_id: String::new(),
            endpoint: String::new(),
        }
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets the data.
    pub fn with_data(mut self, data: Map<String, Value>) -> Self {
        self.data = Some(data);
        self
    }
}

/// What to do with an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Send this request.
    Send(WebhookRequest),
    /// Send nothing: the output is done.
    Drop,
}

/// The request that carries an output to the channel: always a `POST`.
///
/// The host adds its own headers (the Standard Webhooks signature,
/// `traceparent`, the endpoint's Basic auth).
///
/// ```
/// use flowhost_sdk::transformer::WebhookRequest;
///
/// let request = WebhookRequest::form(&[("To", "+15550100"), ("Body", "Hi there")])
///     .with_header("authorization", "Basic QUM6dG9rZW4=");
/// assert_eq!(request.body, b"To=%2B15550100&Body=Hi+there");
/// assert_eq!(request.url, None); // the endpoint's webhook_url
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Where to: the endpoint's `webhook_url` when `None`, or one of its
    /// `transformer_urls`.
    pub url: Option<String>,
    /// Headers to send, such as `content-type` or `authorization`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl WebhookRequest {
    /// A request with this body and no headers, to the endpoint's
    /// `webhook_url`.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        WebhookRequest {
            url: None,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A request with `value` as its JSON body
    /// (`content-type: application/json`).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(WebhookRequest::new(serde_json::to_vec(value)?)
            .with_header("content-type", "application/json"))
    }

    /// A request with these fields as its form body
    /// (`content-type: application/x-www-form-urlencoded`); see
    /// [`form_encode`].
    pub fn form<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> Self {
        WebhookRequest::new(form_encode(fields))
            .with_header("content-type", "application/x-www-form-urlencoded")
    }

    /// Adds a header, or replaces the value of one with the same
    /// (case-insensitive) name: `content-type`, say.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Sends it to `url` (one of the endpoint's `transformer_urls`) instead
    /// of the endpoint's `webhook_url`.
    pub fn to(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its names and
/// values, in order: `+` is a space, `%XX` a byte, and bytes that are not
/// UTF-8 become U+FFFD. Empty pieces (`a=1&&b=2`) are skipped, and a piece
/// without `=` is a name with an empty value.
///
/// ```
/// let fields = flowhost_sdk::transformer::form_decode(b"Body=Hi+there%21&From=%2B15550100");
/// assert_eq!(fields[0], ("Body".to_string(), "Hi there!".to_string()));
/// assert_eq!(fields[1], ("From".to_string(), "+15550100".to_string()));
/// ```
pub fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &[][..]),
            };
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => bytes.push(b' '),
            b'%' => match (
                input.get(i + 1).and_then(hex_value),
                input.get(i + 2).and_then(hex_value),
            ) {
                (Some(high), Some(low)) => {
                    bytes.push(high << 4 | low);
                    i += 2;
                }
                _ => bytes.push(b'%'),
            },
            byte => bytes.push(byte),
        }
        i += 1;
    }
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex_value(digit: &u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Encodes names and values as an `application/x-www-form-urlencoded`
/// body, as browsers do: letters, digits and `*-._` stay, a space becomes
/// `+`, and every other byte of the UTF-8 becomes `%XX`.
///
/// ```
/// let body = flowhost_sdk::transformer::form_encode(&[("To", "+15550100"), ("Body", "é & ü")]);
/// assert_eq!(body, "To=%2B15550100&Body=%C3%A9+%26+%C3%BC");
/// ```
pub fn form_encode<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode(name.as_ref(), &mut out);
        out.push('=');
        percent_encode(value.as_ref(), &mut out);
    }
    out
}

fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0xf)] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_handles_plus_percent_and_odd_pieces() {
        let fields = form_decode(b"a=1+2&b=%41%2b%2F&&c&d=&=e&f=100%&g=%zz&h=%E2%82%AC");
        let expected = [
            ("a", "1 2"),
            ("b", "A+/"),
            ("c", ""),
            ("d", ""),
            ("", "e"),
            ("f", "100%"),
            ("g", "%zz"),
            ("h", "€"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn form_decode_replaces_invalid_utf8() {
        assert_eq!(
            form_decode(b"x=%FF"),
            vec![("x".to_string(), "\u{fffd}".to_string())]
        );
    }

    #[test]
    fn form_decode_keeps_equals_in_values() {
        assert_eq!(
            form_decode(b"k=a=b"),
            vec![("k".to_string(), "a=b".to_string())]
        );
    }

    #[test]
    fn form_encode_round_trips() {
        let fields = [
            ("To", "+1 (555) 0100"),
            ("Body", "Ça va? 100% & \"ok\" 🙂\n"),
            ("a*b-c.d_e", "~!"),
        ];
        let body = form_encode(&fields);
        assert_eq!(
            body,
            "To=%2B1+%28555%29+0100&Body=%C3%87a+va%3F+100%25+%26+%22ok%22+%F0%9F%99%82%0A&a*b-c.d_e=%7E%21"
        );
        let decoded = form_decode(body.as_bytes());
        let expected: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(form_encode::<&str, &str>(&[]), "");
    }

    #[test]
    fn request_helpers() {
        let request = Request::post("/endpoints/sms", "From=%2B15550100&Body=hi&From=other")
            .with_header(
                "Content-Type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            )
            .with_header("X-Twilio-Signature", "abc");
        assert_eq!(request.header("x-twilio-signature"), Some("abc"));
        assert_eq!(request.header("X-TWILIO-SIGNATURE"), Some("abc"));
        assert_eq!(request.header("missing"), None);
        assert_eq!(
            request.media_type().as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(request.form_value("From").as_deref(), Some("+15550100"));
        assert_eq!(request.form_value("Body").as_deref(), Some("hi"));
        assert_eq!(request.form_value("body"), None);
        assert_eq!(
            request.body_text().unwrap(),
            "From=%2B15550100&Body=hi&From=other"
        );
    }

    #[test]
    fn request_json_and_text_errors() {
        let request = Request::post("/", r#"{"type":"url_verification","challenge":"x"}"#);
        let value: Value = request.json().unwrap();
        assert_eq!(value["challenge"], "x");
        assert!(request.media_type().is_none());
        assert!(Request::post("/", vec![0xff, 0xfe]).body_text().is_err());
        assert!(Request::post("/", "not json").json::<Value>().is_err());
    }

    #[test]
    fn responses_and_webhook_requests() {
        let problem = Response::problem(401, "Unauthorized", "bad signature");
        assert_eq!(
            problem.headers,
            vec![(
                "content-type".to_string(),
                "application/problem+json".to_string()
            )]
        );
        let body: Value = serde_json::from_slice(&problem.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "bad signature"})
        );
        assert_eq!(Response::empty(204).body, b"");
        assert_eq!(Response::text(200, "ok").body, b"ok");

        let request = WebhookRequest::json(&serde_json::json!({"a": 1}))
            .unwrap()
            .with_header("Content-Type", "application/json; charset=utf-8")
            .to("https://example.com/hook");
        assert_eq!(request.body, br#"{"a":1}"#);
        assert_eq!(
            request.headers,
            vec![(
                "Content-Type".to_string(),
                "application/json; charset=utf-8".to_string()
            )]
        );
        assert_eq!(request.url.as_deref(), Some("https://example.com/hook"));
        let form = WebhookRequest::form(&[("To", "+15550100")]);
        assert_eq!(
            form.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(form.body, b"To=%2B15550100");
    }
}
