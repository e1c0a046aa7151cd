//! A flow as flowhost 0.1 had them built: against the frozen
//! `flowhost:flow@0.1.0` world (`wit/released/flow-0.1.0.wit`), which the
//! SDK of that release generated its bindings from. Hosts that speak newer
//! versions must go on running it unchanged.
//!
//! It says back what it got, numbered by a count kept in the session's
//! context, and logs a line: every import of the old world in use.

wit_bindgen::generate!({
    path: "../../../../wit/released/flow-0.1.0.wit",
    world: "flow",
});

use flowhost::flow::{context, log, output};

struct Legacy;

impl Guest for Legacy {
    fn handle(message: Message) -> Result<(), String> {
        let mut state: serde_json::Value =
            serde_json::from_str(&context::get()).map_err(|e| e.to_string())?;
        let count = state["count"].as_u64().unwrap_or(0) + 1;
        state["count"] = count.into();
        context::set(&state.to_string());
        log::log(log::Level::Info, "a 0.1.0 flow, running");
        let text = message.text.unwrap_or_default();
        output::say(Some(&format!("{count}: {text} (0.1.0)")), None);
        Ok(())
    }
}

export!(Legacy);
