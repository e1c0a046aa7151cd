//! {{name}}: a flow. It greets the user, then says back what they say,
//! counting the turns of the session in its context.

use flowhost_sdk::{Message, Output, Result, context, object, say};
use serde::{Deserialize, Serialize};

/// What this flow keeps in the session's context.
#[derive(Default, Serialize, Deserialize)]
struct Conversation {
    #[serde(default)]
    turns: u32,
}

fn handle(message: Message) -> Result<()> {
    let mut conversation: Conversation = context().get_as()?;
    conversation.turns += 1;
    let text = message.text.unwrap_or_default();
    if conversation.turns == 1 {
        say("Hello! I am {{name}}. Say anything.");
    } else {
        say(Output::text(format!("You said: {text}"))
            .with_data(object!({ "turn": conversation.turns })));
    }
    context().set_as(&conversation)
}

flowhost_sdk::export!(handle);
