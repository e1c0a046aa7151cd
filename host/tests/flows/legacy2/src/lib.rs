//! A flow as flowhost 0.2 had them built: against the frozen
//! `flowhost:flow@0.2.0` world (`wit/released/flow-0.2.0.wit`), from before
//! transformers. Hosts that speak newer versions must go on running it
//! unchanged.
//!
//! It says back what it got and who sent it, numbered by a count kept in
//! the session's context, and ends the session when told "bye".

wit_bindgen::generate!({
    path: "../../../../wit/released/flow-0.2.0.wit",
    world: "flow",
});

use flowhost::flow::types::Source;
use flowhost::flow::{context, log, output, session};

struct Legacy2;

impl Guest for Legacy2 {
    fn handle(message: Message) -> Result<(), String> {
        let mut state: serde_json::Value =
            serde_json::from_str(&context::get()).map_err(|e| e.to_string())?;
        let count = state["count"].as_u64().unwrap_or(0) + 1;
        state["count"] = count.into();
        context::set(&state.to_string());
        log::log(log::Level::Info, "a 0.2.0 flow, running");
        let text = message.text.unwrap_or_default();
        let from = match message.source {
            Source::User => "user",
            Source::Inject => "inject",
        };
        output::say(Some(&format!("{count}: {text} from {from} (0.2.0)")), None);
        if text == "bye" {
            session::end();
        }
        Ok(())
    }
}

export!(Legacy2);
