// {{name}}: a flow. It greets the user, then says back what they say,
// counting the turns of the session in its context.
//
// The host's interfaces are imported by their WIT names (wit/flow.wit);
// `handle` is the world's export. To fail a message, throw a string:
// StarlingMonkey turns a thrown `Error` into a trap that the host can
// only report as `unreachable`.
import { say as sayRaw } from "flowhost:flow/output@0.3.0";
import * as context from "flowhost:flow/context@0.3.0";

/**
 * One output: text, and data (an object, sent as a JSON object).
 * @param {string} text
 * @param {object} [data]
 */
function say(text, data) {
  sayRaw(text, data === undefined ? undefined : JSON.stringify(data));
}

/**
 * One message: `userId`, `sessionId`, `text` and `data` (JSON text), both
 * optional, `traceId`, `endpoint`, and `source` ("user" or "inject").
 * (`types/flowhost.d.ts` declares them, from the WIT: `npm run check`.)
 * @param {import("flowhost:flow/exports").Message} message
 */
export function handle(message) {
  const conversation = JSON.parse(context.get());
  conversation.turns = (conversation.turns ?? 0) + 1;
  if (conversation.turns === 1) {
    say("Hello! I am {{name}}. Say anything.");
  } else {
    say(`You said: ${message.text ?? ""}`, { turn: conversation.turns });
  }
  context.set(JSON.stringify(conversation));
}
