/* order-help in C: the conversation of `example-flows/order-help`, line for
 * line, so that both pass `order-help/conversations/`.
 *
 * It asks for an order number, keeps it in the session's context, and then
 * answers questions about that order.
 *
 * `bindings/` is wit-bindgen's C for `wit/flow.wit`, as `flowhost new --lang c`
 * writes it. Strings cross as `flow_string_t` (UTF-8, not NUL-terminated);
 * every JSON value crosses as text, so this file carries the little JSON it
 * needs: reading one string member of an object, and writing strings.
 * A flow that reads more JSON than that wants a library (cJSON is one file).
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow.h"

/* --- Text --------------------------------------------------------------- */

/* `s` as a NUL-terminated string of its own. */
static char *c_string(const flow_string_t *s) {
    char *out = malloc(s->len + 1);
    memcpy(out, s->ptr, s->len);
    out[s->len] = '\0';
    return out;
}

/* printf into a string of its own. */
static char *format(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int len = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    char *out = malloc((size_t)len + 1);
    va_start(args, fmt);
    vsnprintf(out, (size_t)len + 1, fmt, args);
    va_end(args);
    return out;
}

/* `s` with its ASCII letters in lower case. */
static char *lowered(const char *s) {
    char *out = strdup(s);
    for (char *p = out; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') *p += 'a' - 'A';
    }
    return out;
}

/* --- JSON --------------------------------------------------------------- */

/* `s` as a JSON string, quotes included. */
static char *json_string(const char *s) {
    size_t cap = strlen(s) * 6 + 3, n = 0;
    char *out = malloc(cap);
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Appends code point `c` to `out` as UTF-8. */
static size_t put_utf8(char *out, unsigned c) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | c >> 6);
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | c >> 12);
        out[1] = (char)(0x80 | (c >> 6 & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | c >> 18);
    out[1] = (char)(0x80 | (c >> 12 & 0x3f));
    out[2] = (char)(0x80 | (c >> 6 & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

static unsigned hex4(const char *p) {
    unsigned c = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        c = c * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return c;
}

/* Reads the JSON string at `p` (its opening quote): its value, unescaped,
 * into `*value` when `value` is not NULL. Returns where the string ends, or
 * NULL if it is not a string. The host checks that JSON is well formed, so
 * this trusts its escapes. */
static const char *read_string(const char *p, char **value) {
    if (*p != '"') return NULL;
    const char *start = ++p;
    while (*p != '"') {
        if (*p == '\0') return NULL;
        p += *p == '\\' ? 2 : 1;
    }
    if (value) {
        char *out = malloc((size_t)(p - start) + 1), *o = out;
        for (const char *q = start; q < p; q++) {
            if (*q != '\\') {
                *o++ = *q;
                continue;
            }
            switch (*++q) {
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                unsigned c = hex4(q + 1);
                q += 4;
                if (c >= 0xd800 && c < 0xdc00 && q[1] == '\\' && q[2] == 'u') {
                    c = 0x10000 + ((c - 0xd800) << 10) + (hex4(q + 3) - 0xdc00);
                    q += 6;
                }
                o += put_utf8(o, c);
                break;
            }
            default: *o++ = *q; /* " \ / */
            }
        }
        *o = '\0';
        *value = out;
    }
    return p + 1;
}

/* Skips the JSON value at `p`. Returns where it ends, or NULL. */
static const char *skip_value(const char *p) {
    if (*p == '"') return read_string(p, NULL);
    if (*p != '{' && *p != '[') {
        while (*p && !strchr(",}] \t\n\r", *p)) p++;
        return p;
    }
    int depth = 0;
    do {
        if (*p == '"') {
            p = read_string(p, NULL);
            if (!p) return NULL;
            continue;
        }
        if (*p == '{' || *p == '[') depth++;
        if (*p == '}' || *p == ']') depth--;
        if (*p == '\0') return NULL;
        p++;
    } while (depth > 0);
    return p;
}

/* The string member `key` of the JSON object `json`: a string of its own,
 * or NULL when there is none or it is not a string. */
static char *string_member(const char *json, const char *key) {
    const char *p = skip_space(json);
    if (*p++ != '{') return NULL;
    for (;;) {
        p = skip_space(p);
        char *name;
        p = read_string(p, &name);
        if (!p) return NULL;
        p = skip_space(p);
        bool wanted = *p == ':' && strcmp(name, key) == 0;
        free(name);
        if (*p++ != ':') return NULL;
        p = skip_space(p);
        if (wanted) {
            char *value = NULL;
            read_string(p, &value);
            return value;
        }
        p = skip_value(p);
        if (!p) return NULL;
        p = skip_space(p);
        if (*p++ != ',') return NULL;
    }
}

/* --- The host ----------------------------------------------------------- */

/* One output: text, and data (a JSON object as text) or NULL. */
static void say(const char *text, const char *data) {
    flow_string_t t, d;
    flow_string_set(&t, text);
    if (data) flow_string_set(&d, data);
    flowhost_flow_output_say(&t, data ? &d : NULL);
}

static char *context_get(void) {
    flow_string_t json;
    flowhost_flow_context_get(&json);
    char *out = c_string(&json);
    flow_string_free(&json);
    return out;
}

static void context_set(const char *json) {
    flow_string_t s;
    flow_string_set(&s, json);
    flowhost_flow_context_set(&s);
}

/* --- The flow ----------------------------------------------------------- */

/* Whether `b` starts one of the quotes “ ” ‘ ’ (three bytes in UTF-8). */
static bool curly_quote(const unsigned char *b) {
    return b[0] == 0xe2 && b[1] == 0x80 &&
           (b[2] == 0x98 || b[2] == 0x99 || b[2] == 0x9c || b[2] == 0x9d);
}

static bool punctuation(char c) {
    return c > ' ' && c < 0x7f && !(c >= '0' && c <= '9') &&
           !((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* The first word of `text` with at least three digits, without the
 * punctuation around it; NULL if there is none. */
static char *find_order_number(const char *text) {
    const char *p = text;
    for (;;) {
        while (*p == ' ' || (*p >= '\t' && *p <= '\r')) p++;
        if (!*p) return NULL;
        const char *start = p;
        while (*p && *p != ' ' && !(*p >= '\t' && *p <= '\r')) p++;
        const char *end = p;
        for (;;) {
            if (start < end && punctuation(*start)) start++;
            else if (end - start >= 3 && curly_quote((const unsigned char *)start)) start += 3;
            else break;
        }
        for (;;) {
            if (start < end && punctuation(end[-1])) end--;
            else if (end - start >= 3 && curly_quote((const unsigned char *)end - 3)) end -= 3;
            else break;
        }
        int digits = 0;
        for (const char *q = start; q < end; q++) digits += *q >= '0' && *q <= '9';
        if (digits >= 3) return strndup(start, (size_t)(end - start));
    }
}

/* A made-up but stable status for an order number. */
static const char *status_of(const char *number) {
    static const char *const statuses[] = {"being packed", "shipped", "out for delivery"};
    unsigned sum = 0;
    for (const unsigned char *p = (const unsigned char *)number; *p; p++) sum += *p;
    return statuses[sum % 3];
}

bool exports_flow_handle(flow_message_t *message, flow_string_t *err) {
    (void)err; /* this flow does not fail: flow_string_dup(err, "why") and return false */
    char *context = context_get();
    char *text = message->text.is_some ? c_string(&message->text.val) : strdup("");
    char *lower = lowered(text);
    char *known = strstr(lower, "new order") ? NULL : string_member(context, "orderNumber");

    char *given = NULL;
    if (message->data.is_some) {
        char *data = c_string(&message->data.val);
        given = string_member(data, "orderNumber");
        free(data);
    }
    if (!given) given = find_order_number(text);

    const char *number = given ? given : known;
    char *quoted = number ? json_string(number) : NULL;
    char *reply = NULL, *data = NULL;
    if (given) {
        const char *status = status_of(given);
        reply = format("Thanks! Order %s is %s. What would you like to know about it?", given, status);
        data = format("{\"orderNumber\":%s,\"status\":\"%s\"}", quoted, status);
    } else if (!known) {
        say("I\u2019d be happy to help. Could you please provide your order number?", NULL);
    } else if (strstr(lower, "when") || strstr(lower, "arrive") || strstr(lower, "deliver")) {
        int days = 1 + (int)(strlen(known) % 4);
        reply = format("Order %s should arrive in %d days.", known, days);
        data = format("{\"orderNumber\":%s,\"etaDays\":%d}", quoted, days);
    } else {
        const char *status = status_of(known);
        reply = format("Order %s is %s. You can ask when it will arrive, or say \"new order\".", known, status);
        data = format("{\"orderNumber\":%s,\"status\":\"%s\"}", quoted, status);
    }
    if (reply) say(reply, data);

    char *state = number ? format("{\"orderNumber\":%s}", quoted) : strdup("{}");
    context_set(state);

    free(state), free(reply), free(data), free(quoted), free(given), free(known);
    free(lower), free(text), free(context);
    flow_message_free(message);
    return true;
}
