//! Counts messages in its context, and fails on request:
//!
//! - "panic": says something, then panics (nothing may be delivered);
//! - "error": changes the context, then returns an error (nothing kept);
//! - "log": logs through the host and prints to stdout and stderr;
//! - "end": counts it, says so, and ends the session (the count starts
//!   again);
//! - anything else: counts it and says the count and the text, marked
//!   "(injected)" when a backend injected it.

use flowhost_sdk::{Error, Message, Output, Result, Source, context, object, say};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    #[serde(default)]
    count: u32,
}

fn handle(message: Message) -> Result<()> {
    let mut counter: Counter = context().get_as()?;
    counter.count += 1;
    let text = message.text.unwrap_or_default();
    match text.as_str() {
        "panic" => {
            say("this output must never be delivered");
            context().set_as(&counter)?;
            panic!("the faulty flow panics on request");
        }
        "error" => {
            say("this output must never be delivered");
            context().set_as(&counter)?;
            Err(Error::msg("the faulty flow fails on request"))
        }
        "log" => {
            flowhost_sdk::info!("logged by the flow at info");
            flowhost_sdk::warn!("logged by the flow at warn");
            println!("printed by the flow on stdout");
            eprintln!("printed by the flow on stderr");
            say("logged");
            context().set_as(&counter)
        }
        "end" => {
            say(format!("{}: end", counter.count));
            context().set_as(&counter)?;
            flowhost_sdk::end_session();
            Ok(())
        }
        _ => {
            let text = match message.source {
                Source::Inject => format!("{text} (injected)"),
                _ => text,
            };
            say(Output::text(format!("{}: {text}", counter.count))
                .with_data(object!({ "count": counter.count })));
            context().set_as(&counter)
        }
    }
}

flowhost_sdk::export!(handle);
