//! Says back the text and the data it got, in one output.

use flowhost_sdk::{Message, Output, Result, say};

fn handle(message: Message) -> Result<()> {
    let mut output = Output::default();
    if let Some(text) = message.text {
        output = Output::text(text);
    }
    if let Some(data) = message.data {
        output = output.with_data(data);
    }
    say(output);
    Ok(())
}

flowhost_sdk::export!(handle);
