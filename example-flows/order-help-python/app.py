"""order-help in Python: the conversation of `example-flows/order-help`,
line for line, so that both pass `order-help/conversations/`.

It asks for an order number, keeps it in the session's context, and then
answers questions about that order.

`wit_world` is generated from `wit/flow.wit` by componentize-py as it
builds (`componentize-py -d ../../wit -w flow bindings .` writes it out,
with type hints, for an editor to read).
"""

import json
import string

import wit_world
from wit_world.imports import context, output


def say(text, data=None):
    """One output: text, and data (a dict, sent as a JSON object)."""
    output.say(text, None if data is None else json.dumps(data))


def find_order_number(text):
    """The first word with at least three digits, without surrounding punctuation."""
    outside = string.punctuation + "“”‘’"
    for word in text.split():
        word = word.strip(outside)
        if sum(c.isdigit() for c in word) >= 3:
            return word
    return None


def status_of(number):
    """A made-up but stable status for an order number."""
    return ["being packed", "shipped", "out for delivery"][sum(number.encode()) % 3]


class WitWorld(wit_world.WitWorld):
    def handle(self, message):
        conversation = json.loads(context.get())
        text = message.text or ""
        lowered = text.lower()
        if "new order" in lowered:
            conversation.pop("orderNumber", None)

        data = json.loads(message.data) if message.data else {}
        given = data.get("orderNumber")
        if not isinstance(given, str):
            given = find_order_number(text)
        known = conversation.get("orderNumber")

        if given:
            status = status_of(given)
            say(
                f"Thanks! Order {given} is {status}. What would you like to know about it?",
                {"orderNumber": given, "status": status},
            )
            conversation["orderNumber"] = given
        elif known is None:
            say("I’d be happy to help. Could you please provide your order number?")
        elif any(word in lowered for word in ("when", "arrive", "deliver")):
            days = 1 + len(known) % 4
            say(
                f"Order {known} should arrive in {days} days.",
                {"orderNumber": known, "etaDays": days},
            )
        else:
            status = status_of(known)
            say(
                f'Order {known} is {status}. You can ask when it will arrive, or say "new order".',
                {"orderNumber": known, "status": status},
            )

        context.set(json.dumps(conversation))
