/* keys.c: concurrency key templates. "{path}" is replaced by the value at path in the
 * job's arguments: "user_id", "user.id", "0" (first array element), "users.2.id". Only
 * strings, numbers and booleans can become part of a key; a placeholder that is missing,
 * null, an object or an array refuses the enqueue, naming the placeholder. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/err.h"

static json_t *lookup(json_t *root, const char *path, size_t len)
{
    json_t *node = root;
    const char *p = path, *end = path + len;
    while (node && p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t seg = dot ? (size_t)(dot - p) : (size_t)(end - p);
        char name[256];
        if (seg == 0 || seg >= sizeof name)
            return NULL;
        memcpy(name, p, seg);
        name[seg] = '\0';
        if (json_is_array(node)) {
            char *num_end;
            long idx = strtol(name, &num_end, 10);
            node = *num_end || idx < 0 ? NULL : json_array_get(node, (size_t)idx);
        } else {
            node = json_is_object(node) ? json_object_get(node, name) : NULL;
        }
        p += seg + (dot ? 1 : 0);
    }
    return node;
}

/* append adds n bytes to the growing key. */
static void append(char **buf, size_t *len, const char *text, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, text, n);
    *len += n;
    (*buf)[*len] = '\0';
}

int bt_key_render(const char *template_text, json_t *args, char **out)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = BATON_OK;
    append(&buf, &len, "", 0);
    for (const char *p = template_text; *p && rc == BATON_OK;) {
        const char *open = strchr(p, '{');
        if (!open) {
            append(&buf, &len, p, strlen(p));
            break;
        }
        append(&buf, &len, p, (size_t)(open - p));
        const char *close = strchr(open, '}');
        if (!close) {
            rc = bt_err_set(BATON_EINVALID, "concurrency key '%s': unclosed '{'", template_text);
            break;
        }
        size_t plen = (size_t)(close - open - 1);
        json_t *v = lookup(args, open + 1, plen);
        char text[64];
        if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v)) {
            /* A NUL would end the key early, so "a\u0000b" and "a\u0000c" would share it. */
            rc = bt_err_set(BATON_EINVALID, "concurrency key placeholder {%.*s} holds a control character (byte 0x00)",
                            (int)plen, open + 1);
        } else if (json_is_string(v)) {
            append(&buf, &len, json_string_value(v), json_string_length(v));
        } else if (json_is_integer(v)) {
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            append(&buf, &len, text, strlen(text));
        } else if (json_is_real(v)) {
            snprintf(text, sizeof text, "%.17g", json_real_value(v));
            append(&buf, &len, text, strlen(text));
        } else if (json_is_boolean(v)) {
            append(&buf, &len, json_is_true(v) ? "true" : "false", json_is_true(v) ? 4 : 5);
        } else {
            rc = bt_err_set(BATON_EINVALID, "concurrency key placeholder {%.*s} is %s in the arguments",
                            (int)plen, open + 1,
                            !v || json_is_null(v) ? "missing" : json_is_object(v) ? "an object" : "an array");
        }
        p = close + 1;
    }
    if (rc != BATON_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return BATON_OK;
}

json_t *bt_key_values(const char *template_text, json_t *args)
{
    json_t *values = json_object();
    for (const char *p = template_text; p && (p = strchr(p, '{'));) {
        const char *close = strchr(p, '}');
        if (!close)
            break;
        char name[256];
        size_t plen = (size_t)(close - p - 1);
        if (plen < sizeof name) {
            memcpy(name, p + 1, plen);
            name[plen] = '\0';
            json_t *v = lookup(args, p + 1, plen);
            json_object_set(values, name, v ? v : json_null());
        }
        p = close + 1;
    }
    return values;
}
