"""{{name}}: a flow. It greets the user, then says back what they say,
counting the turns of the session in its context.

`wit_world` is made from `wit/flow.wit` by componentize-py as it builds.
For an editor's type hints, write it out once:
`componentize-py -d wit -w flow bindings .` (and keep it out of git).
"""

import json

import wit_world
from wit_world.imports import context, output


def say(text, data=None):
    """One output: text, and data (a dict, sent as a JSON object)."""
    output.say(text, None if data is None else json.dumps(data))


class WitWorld(wit_world.WitWorld):
    def handle(self, message):
        # message: user_id, session_id, text, data (JSON text), trace_id,
        # endpoint, source. To fail the message, raise
        # componentize_py_types.Err("why"); any other exception fails it too.
        conversation = json.loads(context.get())
        conversation["turns"] = conversation.get("turns", 0) + 1
        if conversation["turns"] == 1:
            say("Hello! I am {{name}}. Say anything.")
        else:
            say(f"You said: {message.text or ''}", {"turn": conversation["turns"]})
        context.set(json.dumps(conversation))
