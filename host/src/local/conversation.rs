//! `flowhost test`: a conversation file run turn by turn against a flow,
//! each turn's outputs, context and profile checked against what the file
//! expects.
//!
//! A conversation is TOML, the language of flowhost's other files:
//!
//! ```toml
//! user = "u1"          # optional: "test-user"
//! session = "s1"       # optional: "test-session"; a turn may name another
//! [profile]            # optional: the user's profile before the first turn
//! plan = "gold"
//!
//! [[turn]]
//! text = "Hello, I need help with my order"
//! [[turn.expect]]                      # the outputs, all of them, in order
//! matches = "order number"             # a regular expression on the text
//!
//! [[turn]]
//! data = { orderNumber = "12345" }
//! [[turn.expect]]
//! text = "Thanks! Order 12345 is being packed."   # the exact text
//! data = { orderNumber = "12345" }                # keys the data must hold
//! [turn.context]                                  # keys the context must hold
//! orderNumber = "12345"
//! ```
//!
//! A turn without `expect` does not check its outputs (`expect = []`
//! expects none); `fails = "…"` expects the turn to fail with a reason (or
//! a Rust panic's message) containing the text. Data, context and profile are checked as subsets:
//! every key given must be there with that value (objects recursively), and
//! other keys may be there too. A failed check does not stop the
//! conversation: the next turn runs with the state the flow left, and every
//! difference is reported.

use std::fmt::Write as _;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{LocalFlow, LocalMessage, LocalState};
use crate::runtime::Output;

/// A conversation file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// The user every turn comes from.
    #[serde(default = "default_user")]
    pub user: String,
    /// The session of turns that name none.
    #[serde(default = "default_session")]
    pub session: String,
    /// The user's profile before the first turn.
    #[serde(default)]
    pub profile: Map<String, Value>,
    /// The first session's context before the first turn.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// The turns, in order.
    #[serde(rename = "turn")]
    pub turns: Vec<Turn>,
}

fn default_user() -> String {
    "test-user".into()
}

fn default_session() -> String {
    "test-session".into()
}

/// One message and what it should bring about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// The message's text.
    pub text: Option<String>,
    /// The message's data.
    pub data: Option<Map<String, Value>>,
    /// The session, if not the conversation's.
    pub session: Option<String>,
    /// The outputs expected, all of them, in order; `None`: not checked.
    pub expect: Option<Vec<Expected>>,
    /// Keys the session's context must hold after the turn.
    pub context: Option<Map<String, Value>>,
    /// Keys the user's profile must hold after the turn.
    pub profile: Option<Map<String, Value>>,
    /// The turn is expected to fail, with a reason containing this.
    pub fails: Option<String>,
}

/// What one output should be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The exact text.
    pub text: Option<String>,
    /// A regular expression the text matches.
    #[serde(default, with = "pattern")]
    pub matches: Option<Regex>,
    /// Keys the data must hold.
    pub data: Option<Map<String, Value>>,
}

mod pattern {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, de::Error};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Regex>, D::Error> {
        let text = String::deserialize(deserializer)?;
        Regex::new(&text).map(Some).map_err(D::Error::custom)
    }
}

impl Conversation {
    /// Parses a conversation file's text.
    pub fn parse(text: &str) -> Result<Conversation, toml::de::Error> {
        toml::from_str(text)
    }
}

/// The outcome of one turn: what differed from what was expected (nothing
/// if the turn passed).
#[derive(Debug)]
pub struct TurnReport {
    /// The turn's number, from 1.
    pub number: usize,
    /// What the user said, for the report.
    pub said: String,
    /// Each difference, one line (or a few) each.
    pub differences: Vec<String>,
}

/// The outcome of a conversation.
#[derive(Debug)]
pub struct Report {
    /// One per turn, in order.
    pub turns: Vec<TurnReport>,
    /// How many outputs the flow said in all.
    pub outputs: usize,
}

impl Report {
    /// Whether every turn went as expected.
    pub fn passed(&self) -> bool {
        self.turns.iter().all(|turn| turn.differences.is_empty())
    }

    /// The failed turns, each with its differences, for a terminal.
    pub fn render_failures(&self) -> String {
        let mut out = String::new();
        for turn in self.turns.iter().filter(|t| !t.differences.is_empty()) {
            let _ = writeln!(out, "  turn {} ({}):", turn.number, turn.said);
            for difference in &turn.differences {
                for (i, line) in difference.lines().enumerate() {
                    let indent = if i == 0 { "    - " } else { "      " };
                    let _ = writeln!(out, "{indent}{line}");
                }
            }
        }
        out
    }
}

/// Runs `conversation` through `flow`, checking every turn.
pub async fn run(flow: &LocalFlow, conversation: &Conversation) -> Report {
    let mut state = LocalState {
        profile: conversation.profile.clone(),
        ..LocalState::default()
    };
    state
        .contexts
        .insert(conversation.session.clone(), conversation.context.clone());
    let mut report = Report {
        turns: Vec::new(),
        outputs: 0,
    };
    for (index, turn) in conversation.turns.iter().enumerate() {
        let message = LocalMessage {
            user_id: conversation.user.clone(),
            session_id: turn
                .session
                .clone()
                .unwrap_or_else(|| conversation.session.clone()),
            text: turn.text.clone(),
            data: turn.data.clone(),
        };
        let mut differences = Vec::new();
        match (flow.turn(&message, &mut state).await, &turn.fails) {
            (Ok(done), None) => {
                report.outputs += done.outputs.len();
                if let Some(expected) = &turn.expect {
                    differences.extend(compare_outputs(expected, &done.outputs));
                }
            }
            (Ok(done), Some(reason)) => differences.push(format!(
                "expected the turn to fail ({reason:?}), but it succeeded with {} outputs{}",
                done.outputs.len(),
                listing(&done.outputs)
            )),
            (Err(failure), None) => {
                let mut line = format!("the flow failed: {}", failure.reason);
                if let Some(panic) = failure.panic_message() {
                    line.push('\n');
                    line.push_str(&panic);
                }
                differences.push(line);
            }
            (Err(failure), Some(reason)) => {
                let panic = failure.panic_message().unwrap_or_default();
                if !failure.reason.contains(reason.as_str()) && !panic.contains(reason.as_str()) {
                    differences.push(format!(
                        "the turn failed, but not as expected\nexpected a reason containing {reason:?}\ngot      {:?}",
                        failure.reason
                    ));
                }
            }
        }
        if let Some(expected) = &turn.context {
            let context = state
                .contexts
                .get(&message.session_id)
                .cloned()
                .unwrap_or_default();
            differences.extend(subset("context", expected, &context));
        }
        if let Some(expected) = &turn.profile {
            differences.extend(subset("profile", expected, &state.profile));
        }
        report.turns.push(TurnReport {
            number: index + 1,
            said: said(turn),
            differences,
        });
    }
    report
}

/// How a turn is named in the report: its text, or its data.
fn said(turn: &Turn) -> String {
    match (&turn.text, &turn.data) {
        (Some(text), _) => format!("{text:?}"),
        (None, Some(data)) => format!("data {}", Value::Object(data.clone())),
        (None, None) => "an empty message".into(),
    }
}

fn compare_outputs(expected: &[Expected], got: &[Output]) -> Vec<String> {
    let mut differences = Vec::new();
    if expected.len() != got.len() {
        differences.push(format!(
            "expected {} outputs, got {}{}",
            expected.len(),
            got.len(),
            listing(got)
        ));
    }
    for (i, (want, output)) in expected.iter().zip(got).enumerate() {
        let at = format!("output {}", i + 1);
        let text = output.text.as_deref();
        if let Some(want_text) = &want.text
            && text != Some(want_text.as_str())
        {
            differences.push(format!(
                "{at} text\nexpected {want_text:?}\ngot      {}",
                shown(text)
            ));
        }
        if let Some(pattern) = &want.matches
            && !text.is_some_and(|t| pattern.is_match(t))
        {
            differences.push(format!(
                "{at} text does not match /{pattern}/\ngot {}",
                shown(text)
            ));
        }
        if let Some(want_data) = &want.data {
            let data = output.data.clone().unwrap_or_default();
            differences.extend(subset(&format!("{at} data"), want_data, &data));
        }
    }
    differences
}

/// The outputs, one per line, to show what the flow did say.
fn listing(outputs: &[Output]) -> String {
    outputs
        .iter()
        .enumerate()
        .map(|(i, output)| {
            let data = output
                .data
                .as_ref()
                .map(|d| format!(" data {}", Value::Object(d.clone())))
                .unwrap_or_default();
            format!("\n  {}: {}{data}", i + 1, shown(output.text.as_deref()))
        })
        .collect()
}

fn shown(text: Option<&str>) -> String {
    text.map_or_else(|| "no text".into(), |t| format!("{t:?}"))
}

/// Where `got` lacks a key of `expected` or holds another value: one line
/// per difference, named by its path (`context.order.number`).
fn subset(at: &str, expected: &Map<String, Value>, got: &Map<String, Value>) -> Vec<String> {
    let mut differences = Vec::new();
    for (key, want) in expected {
        let path = format!("{at}.{key}");
        match (want, got.get(key)) {
            (_, None) => differences.push(format!("{path}: expected {want}, missing")),
            (Value::Object(want), Some(Value::Object(have))) => {
                differences.extend(subset(&path, want, have));
            }
            (want, Some(have)) if want != have => {
                differences.push(format!("{path}: expected {want}, got {have}"));
            }
            _ => {}
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_subset_names_each_missing_or_different_key_by_its_path() {
        let got = object(json!({"a": 1, "b": {"c": "x", "d": true}, "extra": 0}));
        assert!(subset("data", &object(json!({"a": 1, "b": {"c": "x"}})), &got).is_empty());
        assert_eq!(
            subset(
                "data",
                &object(json!({"a": 2, "b": {"c": "y"}, "z": null})),
                &got
            ),
            [
                "data.a: expected 2, got 1",
                "data.b.c: expected \"y\", got \"x\"",
                "data.z: expected null, missing",
            ]
        );
    }

    #[test]
    fn outputs_are_compared_in_order_by_text_pattern_and_data() {
        let conversation = Conversation::parse(
            r#"
            [[turn]]
            text = "hi"
            [[turn.expect]]
            text = "Hello"
            [[turn.expect]]
            matches = "^Order \\d+"
            data = { status = "shipped" }
            "#,
        )
        .unwrap();
        let expected = conversation.turns[0].expect.as_ref().unwrap();
        let good = [
            Output {
                text: Some("Hello".into()),
                data: None,
            },
            Output {
                text: Some("Order 12 is shipped".into()),
                data: Some(object(json!({"status": "shipped", "id": 12}))),
            },
        ];
        assert!(compare_outputs(expected, &good).is_empty());

        let bad = [
            Output {
                text: Some("Hi".into()),
                data: None,
            },
            Output {
                text: None,
                data: Some(object(json!({"status": "packed"}))),
            },
        ];
        assert_eq!(
            compare_outputs(expected, &bad),
            [
                "output 1 text\nexpected \"Hello\"\ngot      \"Hi\"",
                "output 2 text does not match /^Order \\d+/\ngot no text",
                "output 2 data.status: expected \"shipped\", got \"packed\"",
            ]
        );
        let counted = compare_outputs(expected, &good[..1]);
        assert_eq!(counted[0], "expected 2 outputs, got 1\n  1: \"Hello\"");
    }

    #[test]
    fn a_conversation_file_with_an_unknown_key_or_a_bad_pattern_is_refused() {
        let unknown = Conversation::parse("[[turn]]\ntext = \"hi\"\nexpects = []\n").unwrap_err();
        assert!(unknown.to_string().contains("expects"), "{unknown}");
        let pattern =
            Conversation::parse("[[turn]]\n[[turn.expect]]\nmatches = \"(\"\n").unwrap_err();
        assert!(pattern.to_string().contains("regex"), "{pattern}");
        let defaults = Conversation::parse("[[turn]]\ntext = \"hi\"\n").unwrap();
        assert_eq!(
            (defaults.user.as_str(), defaults.session.as_str()),
            ("test-user", "test-session")
        );
    }
}
