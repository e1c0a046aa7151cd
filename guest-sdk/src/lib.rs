//! Write flowhost flows in Rust.
//!
//! A flow is one function that handles one message, exported with
//! [`export!`]. It answers with [`say`], remembers the conversation in the
//! session's [`context()`] and the user in their [`profile()`], and logs with
//! [`info!`] and friends. Errors travel with `?`: any error type converts into
//! [`Error`], and an error returned from the flow ends that message without
//! sending its outputs or keeping its state changes.
//!
//! ```no_run
//! use flowhost_sdk::{Message, Result, say};
//!
//! fn handle(message: Message) -> Result<()> {
//!     let name = message.text.as_deref().unwrap_or("stranger");
//!     say(format!("Hello, {name}!"));
//!     Ok(())
//! }
//!
//! flowhost_sdk::export!(handle);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; the README's "Writing a flow"
//! section has the `Cargo.toml` and `.cargo/config.toml` to start from.
//!
//! The host runs every message in a fresh instance of the flow, so statics do
//! not survive from one message to the next: keep what must last in
//! [`context()`] or [`profile()`].
//!
//! `http` (the `http` feature, on by default) calls other services, if the
//! flow's manifest allows them.
//!
//! `transformer` (the `transformer` feature, off by default) writes
//! transformers: components that turn what a channel such as Slack sends
//! into messages for a flow, and the flow's outputs into the requests the
//! channel expects.

#![deny(missing_docs)]

// The generated bindings name their runtime by absolute path, so that the
// `export!` macro expands the same inside this crate and in a flow.
extern crate self as flowhost_sdk;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use serde_json::{Map, Value, json};

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "transformer")]
pub mod transformer;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // in the generated bindings
pub mod __private {
    //! The generated bindings and the glue behind [`export!`](crate::export).
    //! Not part of the API.

    pub use wit_bindgen;

    wit_bindgen::generate!({
        path: "../wit",
        world: "flow",
        pub_export_macro: true,
        export_macro_name: "export_flow_world",
        default_bindings_module: "::flowhost_sdk::__private",
        runtime_path: "::flowhost_sdk::__private::wit_bindgen::rt",
    });

    /// Converts the WIT message and runs the author's function.
    pub fn run(
        raw: flowhost::flow::types::Message,
        handle: fn(crate::Message) -> crate::Result<()>,
    ) -> Result<(), String> {
        let message = crate::Message::from_wit(raw).map_err(|e| e.to_string())?;
        handle(message).map_err(|e| e.to_string())
    }
}

use __private::flowhost::flow as wit;

/// Exports a function as the flow.
///
/// The function takes a [`Message`] and returns [`Result<()>`](Result). Use
/// the macro once, at the top level of the flow crate.
///
/// ```no_run
/// fn handle(message: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
///     flowhost_sdk::say(message.text.unwrap_or_default());
///     Ok(())
/// }
///
/// flowhost_sdk::export!(handle);
/// ```
#[macro_export]
macro_rules! export {
    ($handle:path) => {
        const _: () = {
            struct FlowhostExport;

            impl $crate::__private::Guest for FlowhostExport {
                fn handle(
                    message: $crate::__private::flowhost::flow::types::Message,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::run(message, $handle)
                }
            }

    $crate::__private::export_flow_world!(FlowhostExport with_types_in $crate::__private);
        };
    };
}

/// One inbound user message.
///
/// ```no_run
/// use flowhost_sdk::{Message, Result, say};
///
/// fn handle(message: Message) -> Result<()> {
///     if let Some(text) = &message.text {
///         say(format!("{} said: {text}", message.user_id));
///     }
///     if let Some(order) = message.data.as_ref().and_then(|d| d.get("orderId")) {
///         say(format!("About order {order}"));
///     }
///     Ok(())
/// }
/// # flowhost_sdk::export!(handle);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The end user's id (`userId`).
    pub user_id: String,
    /// The conversation's id (`sessionId`).
    pub session_id: String,
    /// The user's text, when the message has one.
    pub text: Option<String>,
    /// The message's data, when it has some: a JSON object.
    pub data: Option<Map<String, Value>>,
    /// The id shared by this message and all of its outputs.
    pub trace_id: String,
    /// The name of the endpoint that received the message.
    pub endpoint: String,
    /// Who sent it: the user, or a backend through the endpoint's `/inject`.
    pub source: Source,
}

/// Who sent a [`Message`].
///
/// ```no_run
/// use flowhost_sdk::{Message, Result, Source, say};
///
/// fn handle(message: Message) -> Result<()> {
///     match message.source {
///         // A backend pushed an event into the conversation.
///         Source::Inject => say("Your parcel has shipped."),
///         _ => say("How can I help?"),
///     }
///     Ok(())
/// }
/// # flowhost_sdk::export!(handle);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The user, through the endpoint.
    User,
    /// A backend, through the endpoint's `/inject`: run in the session's
    /// order as if the user had said it.
    Inject,
}

impl Message {
    fn from_wit(raw: wit::types::Message) -> Result<Self> {
        let data = match raw.data {
            Some(json) => Some(parse_object("message data", &json)?),
            None => None,
        };
        Ok(Message {
            user_id: raw.user_id,
            session_id: raw.session_id,
            text: raw.text,
            data,
            trace_id: raw.trace_id,
            endpoint: raw.endpoint,
            source: match raw.source {
                wit::types::Source::User => Source::User,
                wit::types::Source::Inject => Source::Inject,
            },
        })
    }

    /// Deserializes the message's data into your own type; `Ok(None)` when the
    /// message has no data.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Order {
    ///     #[serde(rename = "orderId")]
    ///     order_id: String,
    /// }
    ///
    /// fn handle(message: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
    ///     if let Some(order) = message.data_as::<Order>()? {
    ///         flowhost_sdk::say(format!("Looking up {}", order.order_id));
    ///     }
    ///     Ok(())
    /// }
    /// # flowhost_sdk::export!(handle);
    /// ```
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match &self.data {
            Some(data) => Ok(Some(T::deserialize(data)?)),
            None => Ok(None),
        }
    }
}

/// One output to the user: text, data, or both.
///
/// Plain text converts into an output, so `say("hi")` works; build anything
/// richer with [`Output::text`] and [`Output::with_data`]. Data is a JSON
/// object: write one with [`object!`], which cannot fail, or give your own
/// type to [`Output::with_data_as`].
///
/// ```no_run
/// use flowhost_sdk::{Output, object, say};
///
/// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
/// say("Plain text");
/// say(Output::default().with_data(object!({ "buttons": ["Yes", "No"] })));
/// say(Output::text("Your order").with_data(object!({ "orderId": "A-17" })));
/// # Ok(())
/// # }
/// # flowhost_sdk::export!(handle);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    text: Option<String>,
    data: Option<Map<String, Value>>,
}

impl Output {
    /// An output with text only.
    pub fn text(text: impl Into<String>) -> Self {
        Output {
            text: Some(text.into()),
            data: None,
        }
    }

    /// Sets the output's data.
    pub fn with_data(mut self, data: Map<String, Value>) -> Self {
        self.data = Some(data);
        self
    }

    /// Sets the output's data from your own type, which must serialize to
    /// a JSON object.
    ///
    /// ```no_run
    /// #[derive(serde::Serialize)]
    /// struct Order {
    ///     #[serde(rename = "orderId")]
    ///     order_id: String,
    /// }
    ///
    /// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
    /// let order = Order { order_id: "A-17".into() };
    /// flowhost_sdk::say(flowhost_sdk::Output::text("Found it").with_data_as(&order)?);
    /// # Ok(())
    /// # }
    /// # flowhost_sdk::export!(handle);
    /// ```
    pub fn with_data_as<T: Serialize>(self, data: &T) -> Result<Self> {
        Ok(self.with_data(to_object("output data", data)?))
    }
}

/// A JSON object, written as [`json!`] writes one, as a
/// `Map<String, Value>`: what [`Output::with_data`] and [`State::set`]
/// take. Only an object literal is accepted, so it cannot fail.
///
/// ```
/// let data = flowhost_sdk::object!({ "orderNumber": "A-17", "etaDays": 3 });
/// assert_eq!(data["etaDays"], 3);
/// ```
#[macro_export]
macro_rules! object {
    ({ $($fields:tt)* }) => {
        match $crate::json!({ $($fields)* }) {
            $crate::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal is an object"),
        }
    };
}

impl From<&str> for Output {
    fn from(text: &str) -> Self {
        Output::text(text)
    }
}

impl From<String> for Output {
    fn from(text: String) -> Self {
        Output::text(text)
    }
}

/// Sends one output to the user.
///
/// Outputs reach the endpoint's webhook in the order they were said, once
/// the flow has returned `Ok`. If the flow fails, none of the message's
/// outputs are sent.
///
/// ```no_run
/// # fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
/// flowhost_sdk::say("Could you give me your order number?");
/// # Ok(())
/// # }
/// # flowhost_sdk::export!(handle);
/// ```
pub fn say(output: impl Into<Output>) {
    let output = output.into();
    let data = output.data.map(|map| Value::Object(map).to_string());
    wit::output::say(output.text.as_deref(), data.as_deref());
}

/// A JSON object the host keeps for the flow: the session's [`context()`]
/// or the user's [`profile()`]. Changes are kept only if the message ends
/// `Ok`, together with its outputs.
///
/// Read it into your own type with [`State::get_as`], change it, and write
/// it back with [`State::set_as`]; a new session or user starts with `{}`,
/// so give your fields defaults.
///
/// ```no_run
/// use flowhost_sdk::{context, say};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Conversation {
///     #[serde(default)]
///     turns: u32,
/// }
///
/// fn handle(_: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
///     let mut conversation: Conversation = context().get_as()?;
///     conversation.turns += 1;
///     say(format!("This is turn {}", conversation.turns));
///     context().set_as(&conversation)
/// }
/// # flowhost_sdk::export!(handle);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    kind: StateKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateKind {
    Context,
    Profile,
}

/// The session's context: a JSON object that lives as long as the
/// conversation (the endpoint and `sessionId`).
pub fn context() -> State {
    State {
        kind: StateKind::Context,
    }
}

/// The user's profile: a JSON object that lives with the user (the endpoint
/// and `userId`), across all of their sessions.
///
/// ```no_run
/// use flowhost_sdk::{Value, profile, say};
///
/// fn handle(message: flowhost_sdk::Message) -> flowhost_sdk::Result<()> {
///     let mut me = profile().get()?;
///     match me.get("name").and_then(Value::as_str) {
///         Some(name) => say(format!("Welcome back, {name}!")),
///         None => {
///             me.insert("name".into(), message.text.unwrap_or_default().into());
///             profile().set(me);
///         }
///     }
///     Ok(())
/// }
/// # flowhost_sdk::export!(handle);
/// ```
pub fn profile() -> State {
    State {
        kind: StateKind::Profile,
    }
}

impl State {
    fn name(self) -> &'static str {
        match self.kind {
            StateKind::Context => "context",
            StateKind::Profile => "profile",
        }
    }

    fn text(self) -> String {
        match self.kind {
            StateKind::Context => wit::context::get(),
            StateKind::Profile => wit::profile::get(),
        }
    }

    /// The object.
    pub fn get(self) -> Result<Map<String, Value>> {
        parse_object(self.name(), &self.text())
    }

    /// Replaces the object.
    pub fn set(self, value: Map<String, Value>) {
        let text = Value::Object(value).to_string();
        match self.kind {
            StateKind::Context => wit::context::set(&text),
            StateKind::Profile => wit::profile::set(&text),
        }
    }

    /// The object, deserialized into your own type.
    pub fn get_as<T: DeserializeOwned>(self) -> Result<T> {
        Ok(serde_json::from_str(&self.text())?)
    }

    /// Replaces the object with your own type, which must serialize to a
    /// JSON object.
    pub fn set_as<T: Serialize>(self, value: &T) -> Result<()> {
        self.set(to_object(self.name(), value)?);
        Ok(())
    }
}

/// Ends the session once this message is handled without error: its
/// context is cleared, whatever [`context()`] was set to, so the session's
/// next message starts afresh. The user's [`profile()`] stays, and this
/// message's outputs are sent as usual.
///
/// ```no_run
/// use flowhost_sdk::{Message, Result, end_session, say};
///
/// fn handle(message: Message) -> Result<()> {
///     if message.text.as_deref() == Some("bye") {
///         say("Goodbye!");
///         end_session();
///     }
///     Ok(())
/// }
/// # flowhost_sdk::export!(handle);
/// ```
pub fn end_session() {
    wit::session::end();
}

fn parse_object(what: &str, text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text)? {
        Value::Object(map) => Ok(map),
        other => Err(Error::msg(format!(
            "the host sent {what} that is {}, not an object",
            kind_of(&other)
        ))),
    }
}

fn to_object<T: Serialize>(what: &str, value: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(value)? {
        Value::Object(map) => Ok(map),
        other => Err(Error::msg(format!(
            "the {what} must be a JSON object, not {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How important a log line is; see [`log()`] and the [`info!`] family.
pub use wit::log::Level;

/// Writes one log line to the host's log, tagged with the flow, trace id and
/// session. The [`trace!`], [`debug!`], [`info!`], [`warn!`] and [`error!`]
/// macros format and call this.
///
/// ```no_run
/// flowhost_sdk::log(flowhost_sdk::Level::Info, "looking up the order");
/// ```
pub fn log(level: Level, message: &str) {
    wit::log::log(level, message);
}

/// Logs a formatted line at trace level.
///
/// ```no_run
/// # let items = 3;
/// flowhost_sdk::trace!("parsed {items} items");
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log($crate::Level::Trace, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at debug level.
///
/// ```no_run
/// # let state = "asking";
/// flowhost_sdk::debug!("conversation state: {state}");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at info level.
///
/// ```no_run
/// # let number = "A-17";
/// flowhost_sdk::info!("looking up order {number}");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::Level::Info, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at warn level.
///
/// ```no_run
/// # let status = 503;
/// flowhost_sdk::warn!("the order service answered {status}; answering without it");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at error level.
///
/// ```no_run
/// # let error = "timeout";
/// flowhost_sdk::error!("could not reach the order service: {error}");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::Level::Error, &::std::format!($($arg)+)) };
}

/// The error a flow returns; anything that implements
/// [`std::error::Error`] converts into it with `?`.
///
/// Its text, with the chain of causes, is what the host logs when the flow
/// fails.
///
/// ```no_run
/// use flowhost_sdk::{Error, Message, Result};
///
/// fn handle(message: Message) -> Result<()> {
///     let count: u32 = message.text.as_deref().unwrap_or("").parse()?;
///     if count > 10 {
///         return Err(Error::msg("at most 10, please"));
///     }
///     Ok(())
/// }
/// # flowhost_sdk::export!(handle);
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error { message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

/// `Result<T, flowhost_sdk::Error>`, the return type of a flow.
pub type Result<T, E = Error> = std::result::Result<T, E>;
