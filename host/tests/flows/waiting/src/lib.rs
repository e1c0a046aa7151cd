//! A flow that waits, as most real flows do: it says it is checking, calls
//! the API named in the message's `data.call` (or sleeps for `data.sleep_ms`
//! milliseconds), then says what the message said, with what the API
//! answered in its data. For the tests and the bench of flows that wait.

use flowhost_sdk::{Message, Output, Result, object, say};

fn handle(message: Message) -> Result<()> {
    let data = message.data.unwrap_or_default();
    say("One moment, let me check…");
    let answer = if let Some(url) = data.get("call").and_then(|url| url.as_str()) {
        match flowhost_sdk::http::get(url) {
            Ok(response) => object!({ "status": response.status }),
            Err(error) => object!({ "error": error.to_string() }),
        }
    } else {
        let millis = data.get("sleep_ms").and_then(|ms| ms.as_u64()).unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(millis));
        object!({ "slept_ms": millis })
    };
    say(Output::text(message.text.unwrap_or_default()).with_data(answer));
    Ok(())
}

flowhost_sdk::export!(handle);
