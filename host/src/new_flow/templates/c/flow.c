/* {{name}}: a flow. It greets the user, then says back what they say,
 * counting the turns of the session in its context.
 *
 * `bindings/flow.h` declares what the host offers, as wit-bindgen's C for
 * `wit/flow.wit` (`flowhost new` wrote both). Strings cross as
 * `flow_string_t`: UTF-8 bytes and a length, not NUL-terminated. JSON
 * crosses as text.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow.h"

/* One output: text, and data (a JSON object as text) or NULL. */
static void say(const char *text, const char *data) {
    flow_string_t t, d;
    flow_string_set(&t, text);
    if (data) flow_string_set(&d, data);
    flowhost_flow_output_say(&t, data ? &d : NULL);
}

bool exports_flow_handle(flow_message_t *message, flow_string_t *err) {
    /* message: user_id, session_id, text and data (options: .is_some and
     * .val), trace_id, endpoint, source. To fail the message:
     * flow_string_dup(err, "why"); return false; */
    (void)err;

    /* The context is this flow's own: it writes it below as {"turns":N}.
     * To read JSON written by others, bring a JSON library (cJSON is one
     * file). */
    flow_string_t context;
    flowhost_flow_context_get(&context);
    char *state = strndup((const char *)context.ptr, context.len);
    flow_string_free(&context);
    int turns = 0;
    sscanf(state, "{\"turns\":%d}", &turns);
    free(state);
    turns++;

    if (turns == 1) {
        say("Hello! I am {{name}}. Say anything.", NULL);
    } else {
        flow_string_t *text = message->text.is_some ? &message->text.val : NULL;
        int len = text ? (int)text->len : 0;
        char *reply = malloc((size_t)len + sizeof "You said: ");
        sprintf(reply, "You said: %.*s", len, text ? (const char *)text->ptr : "");
        char data[32];
        snprintf(data, sizeof data, "{\"turn\":%d}", turns);
        say(reply, data);
        free(reply);
    }

    char next[32];
    snprintf(next, sizeof next, "{\"turns\":%d}", turns);
    flow_string_t json;
    flow_string_set(&json, next);
    flowhost_flow_context_set(&json);

    /* The message is this function's to free; an error set in `err` is
     * freed by the bindings after the host has read it. */
    flow_message_free(message);
    return true;
}
