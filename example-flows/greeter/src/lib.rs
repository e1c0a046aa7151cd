//! Remembers the user's name in their profile.
//!
//! The first time, it asks for the name; from then on, every new session of
//! the same user starts with "Welcome back, <name>!". "My name is …" renames.

use flowhost_sdk::{Message, Result, context, profile, say};
use serde::{Deserialize, Serialize};

/// What this flow keeps about the user, across sessions.
#[derive(Default, Serialize, Deserialize)]
struct User {
    #[serde(default)]
    name: Option<String>,
}

/// What this flow keeps about the conversation.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conversation {
    #[serde(default)]
    greeted: bool,
    #[serde(default)]
    asked_name: bool,
}

fn handle(message: Message) -> Result<()> {
    let mut user: User = profile().get_as()?;
    let mut conversation: Conversation = context().get_as()?;
    let text = message.text.as_deref().unwrap_or_default().trim();

    let told = name_in(text)
        .or_else(|| (conversation.asked_name && !text.is_empty()).then(|| text.to_owned()));

    if let Some(name) = told {
        say(match user.name {
            Some(_) => format!("Got it, I'll call you {name}."),
            None => format!("Nice to meet you, {name}!"),
        });
        user.name = Some(name);
        conversation.asked_name = false;
        profile().set_as(&user)?;
    } else {
        match &user.name {
            Some(name) if !conversation.greeted => say(format!("Welcome back, {name}!")),
            Some(name) => say(format!("{name}, you said: {text}")),
            None => {
                say("Hello! What's your name?");
                conversation.asked_name = true;
            }
        }
    }
    conversation.greeted = true;
    context().set_as(&conversation)
}

/// The name in "my name is Ada", "I'm Ada" or "I am Ada".
fn name_in(text: &str) -> Option<String> {
    let lowered = text.to_lowercase();
    ["my name is ", "i'm ", "i am ", "call me "]
        .iter()
        .find_map(|prefix| lowered.find(prefix).map(|at| at + prefix.len()))
        .map(|start| {
            text[start..]
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_owned()
        })
        .filter(|name| !name.is_empty())
}

flowhost_sdk::export!(handle);
