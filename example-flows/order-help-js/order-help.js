// order-help in JavaScript: the conversation of `example-flows/order-help`,
// line for line, so that both pass `order-help/conversations/`.
//
// It asks for an order number, keeps it in the session's context, and then
// answers questions about that order. The host's interfaces are imported
// by their WIT names (`wit/flow.wit`); `handle` is the world's export. To
// fail a message, throw a string: StarlingMonkey turns a thrown `Error`
// into a trap, which the host reports only as `unreachable`.
import { say as sayRaw } from "flowhost:flow/output@0.3.0";
import * as context from "flowhost:flow/context@0.3.0";

/** One output: text, and data (an object, sent as a JSON object). */
function say(text, data) {
  sayRaw(text, data === undefined ? undefined : JSON.stringify(data));
}

/** The first word with at least three digits, without surrounding punctuation. */
function findOrderNumber(text) {
  for (const raw of text.split(/\s+/)) {
    const word = raw.replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "");
    if ((word.match(/[0-9]/g) ?? []).length >= 3) return word;
  }
  return undefined;
}

/** A made-up but stable status for an order number. */
function statusOf(number) {
  let sum = 0;
  for (const byte of new TextEncoder().encode(number)) sum += byte;
  return ["being packed", "shipped", "out for delivery"][sum % 3];
}

export function handle(message) {
  const conversation = JSON.parse(context.get());
  const text = message.text ?? "";
  const lowered = text.toLowerCase();
  if (lowered.includes("new order")) delete conversation.orderNumber;

  const data = message.data ? JSON.parse(message.data) : {};
  const given = typeof data.orderNumber === "string" ? data.orderNumber : findOrderNumber(text);
  const known = conversation.orderNumber;

  if (given) {
    const status = statusOf(given);
    say(`Thanks! Order ${given} is ${status}. What would you like to know about it?`, {
      orderNumber: given,
      status,
    });
    conversation.orderNumber = given;
  } else if (known === undefined) {
    say("I’d be happy to help. Could you please provide your order number?");
  } else if (["when", "arrive", "deliver"].some((word) => lowered.includes(word))) {
    const days = 1 + (known.length % 4);
    say(`Order ${known} should arrive in ${days} days.`, { orderNumber: known, etaDays: days });
  } else {
    const status = statusOf(known);
    say(`Order ${known} is ${status}. You can ask when it will arrive, or say "new order".`, {
      orderNumber: known,
      status,
    });
  }

  context.set(JSON.stringify(conversation));
}
