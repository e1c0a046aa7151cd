//! A multi-turn conversation about an order.
//!
//! It asks for an order number, keeps it in the session's context, and then
//! answers questions about that order with text and data:
//!
//! 1. "Hello, I need help with my order" → asks for the order number.
//! 2. "It's A-12345" (or data `{"orderNumber": "A-12345"}`) → confirms the
//!    order and its status.
//! 3. "When will it arrive?" → answers about the order it remembers.
//!
//! "new order" forgets the number and starts over.

use flowhost_sdk::{Message, Output, Result, context, object, say};
use serde::{Deserialize, Serialize};

/// What this flow keeps in the session's context.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conversation {
    #[serde(default)]
    order_number: Option<String>,
}

fn handle(message: Message) -> Result<()> {
    let mut conversation: Conversation = context().get_as()?;
    let text = message.text.as_deref().unwrap_or_default();
    let lowered = text.to_lowercase();

    if lowered.contains("new order") {
        conversation.order_number = None;
    }

    let given = message
        .data
        .as_ref()
        .and_then(|data| data.get("orderNumber"))
        .and_then(|number| number.as_str())
        .map(str::to_owned)
        .or_else(|| find_order_number(text));

    match (given, &conversation.order_number) {
        (Some(number), _) => {
            let status = status_of(&number);
            say(Output::text(format!(
                "Thanks! Order {number} is {status}. What would you like to know about it?"
            ))
            .with_data(object!({ "orderNumber": number, "status": status })));
            conversation.order_number = Some(number);
        }
        (None, None) => {
            say("I’d be happy to help. Could you please provide your order number?");
        }
        (None, Some(number)) => {
            let status = status_of(number);
            if ["when", "arrive", "deliver"]
                .iter()
                .any(|w| lowered.contains(w))
            {
                let days = 1 + number.len() % 4;
                say(
                    Output::text(format!("Order {number} should arrive in {days} days."))
                        .with_data(object!({ "orderNumber": number, "etaDays": days })),
                );
            } else {
                say(Output::text(format!(
                    "Order {number} is {status}. You can ask when it will arrive, or say \"new order\"."
                ))
                .with_data(object!({ "orderNumber": number, "status": status })));
            }
        }
    }

    context().set_as(&conversation)
}

/// The first word with at least three digits, without surrounding punctuation.
fn find_order_number(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|word| word.chars().filter(char::is_ascii_digit).count() >= 3)
        .map(str::to_owned)
}

/// A made-up but stable status for an order number.
fn status_of(number: &str) -> &'static str {
    let sum: u32 = number.bytes().map(u32::from).sum();
    ["being packed", "shipped", "out for delivery"][sum as usize % 3]
}

flowhost_sdk::export!(handle);
