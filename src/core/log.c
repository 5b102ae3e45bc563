/* log.c: the client's log lines. Callers build a logfmt line ("event=job.finished
 * job_id=7 class=Mail"); text values go through bt_log_value, which quotes them with JSON
 * escapes when needed. Because logfmt's quoted values and JSON strings share that one
 * escaping, a JSON line is made from the logfmt line by copying quoted values as they
 * are and typing bare ones: plain numbers stay numbers, anything else becomes a string. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/utf8.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void baton_set_logger(baton_client *c, baton_log_level min_level, baton_log_fn fn, void *payload)
{
    c->log_fn = fn;
    c->log_payload = payload;
    c->log_level = min_level;
}

int baton_set_log_format(baton_client *c, baton_log_format format)
{
    if (format != BATON_LOG_LOGFMT && format != BATON_LOG_JSON)
        return bt_err_set(BATON_EINVALID, "unknown log format %d", (int)format);
    c->log_format = format;
    return BATON_OK;
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* is_json_number: s[0..len) is a number in JSON's grammar ("7", "-3.25", "1e9"). */
static int is_json_number(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    if (i == len || !is_digit(s[i]))
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (i < len && is_digit(s[i]))
            i++;
    if (i < len && s[i] == '.') {
        if (++i == len || !is_digit(s[i]))
            return 0;
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i == len || !is_digit(s[i]))
            return 0;
        while (i < len && is_digit(s[i]))
            i++;
    }
    return i == len;
}

/* escape_quoted writes s[0..len) into out (cap >= 6 bytes) as a double-quoted string with
 * JSON escapes; invalid UTF-8 becomes \ufffd, so every line is valid UTF-8. A value that
 * does not fit is cut at a character boundary and ends in "...". Returns the length
 * written, without the terminating NUL. */
static size_t escape_quoted(char *out, size_t cap, const char *s, size_t len)
{
    size_t o = 0, i = 0;
    out[o++] = '"';
    while (i < len) {
        unsigned char ch = (unsigned char)s[i];
        char unit[8];
        size_t n = 0, used = 1;
        if (ch == '"' || ch == '\\') {
            unit[n++] = '\\';
            unit[n++] = (char)ch;
        } else if (ch == '\n' || ch == '\r' || ch == '\t') {
            unit[n++] = '\\';
            unit[n++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            n = (size_t)snprintf(unit, sizeof unit, "\\u%04x", ch);
        } else if (ch < 0x80) {
            unit[n++] = (char)ch;
        } else if ((used = bt_utf8_length((const unsigned char *)s + i, len - i)) > 0) {
            memcpy(unit, s + i, used);
            n = used;
        } else {
            memcpy(unit, "\\ufffd", 6);
            n = 6;
            used = 1;
        }
        /* Keep room for a cut's "..." besides the closing quote and the NUL. */
        if (o + n + 5 > cap) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(out + o, unit, n);
        o += n;
        i += used;
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

/* needs_quotes: a bare value must be a single token that reads back as the same text. */
static int needs_quotes(const char *s, size_t len)
{
    if (len == 0 || is_json_number(s, len))
        return 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == '"' || ch == '=' || ch == '\\' || ch >= 0x7f)
            return 1;
    }
    return 0;
}

char *bt_log_value_slot(void)
{
    static _Thread_local char slots[BT_LOG_VALUE_SLOTS][BT_LOG_VALUE_MAX];
    static _Thread_local unsigned next;
    return slots[next++ % BT_LOG_VALUE_SLOTS];
}

const char *bt_log_value(char *buf, size_t size, const char *value)
{
    if (!value)
        value = "";
    size_t len = strlen(value);
    if (len < size && !needs_quotes(value, len))
        memcpy(buf, value, len + 1);
    else
        escape_quoted(buf, size, value, len);
    return buf;
}

/* to_json turns a logfmt line into a JSON object led by time and level. A quoted value
 * is already a JSON string; a key without a value (logfmt's flag) becomes true. */
static char *to_json(baton_log_level level, const char *line)
{
    size_t len = strlen(line);
    /* Escaping turns a byte into at most 6; each pair adds at most 8 bytes of quotes and
     * punctuation for its 2 or more bytes of input. */
    size_t cap = 12 * len + 128;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    char time[BT_ISO_LEN];
    bt_iso8601(bt_now_ms(), time);
    size_t o = (size_t)snprintf(out, cap, "{\"time\":\"%s\",\"level\":\"%s\"", time, level_names[level]);
    const char *p = line;
    for (;;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *key = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        out[o++] = ',';
        o += escape_quoted(out + o, cap - o, key, (size_t)(p - key));
        out[o++] = ':';
        if (*p != '=') {
            memcpy(out + o, "true", 4);
            o += 4;
            continue;
        }
        const char *value = ++p;
        int bare = *value != '"';
        if (bare) {
            while (*p && *p != ' ')
                p++;
        } else {
            for (p = value + 1; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p == '"') {
                p++;
                memcpy(out + o, value, (size_t)(p - value));
                o += (size_t)(p - value);
                continue;
            }
            value++; /* an unterminated quote: the rest of the line is the text */
        }
        size_t vlen = (size_t)(p - value);
        if (bare && is_json_number(value, vlen)) {
            memcpy(out + o, value, vlen);
            o += vlen;
        } else {
            o += escape_quoted(out + o, cap - o, value, vlen);
        }
    }
    out[o++] = '}';
    out[o] = '\0';
    return out;
}

int bt_log_enabled(const baton_client *c, baton_log_level level)
{
    return c->log_fn && level >= c->log_level;
}

static void deliver(baton_client *c, baton_log_level level, const char *line)
{
    if (!bt_log_enabled(c, level))
        return;
    if (c->log_format != BATON_LOG_JSON) {
        c->log_fn(level, line, c->log_payload);
        return;
    }
    char *json = to_json(level, line);
    if (json)
        c->log_fn(level, json, c->log_payload);
    free(json);
}

/* log_line formats and delivers one line; held > 0 adds how many like it were held back. */
__attribute__((format(printf, 4, 0))) static void log_line(baton_client *c, baton_log_level level, long held,
                                                           const char *fmt, va_list ap)
{
    char *line, *counted = NULL;
    if (vasprintf(&line, fmt, ap) < 0)
        return;
    if (held && asprintf(&counted, "%s repeated=%ld", line, held) < 0)
        counted = NULL;
    deliver(c, level, counted ? counted : line);
    free(counted);
    free(line);
}

void bt_log(baton_client *c, baton_log_level level, const char *fmt, ...)
{
    if (!bt_log_enabled(c, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(c, level, 0, fmt, ap);
    va_end(ap);
}

void bt_log_limited(baton_client *c, bt_log_limit *limit, baton_log_level level, const char *fmt, ...)
{
    if (!bt_log_enabled(c, level))
        return;
    int64_t now = bt_mono_ns();
    if (now < limit->next_ns) {
        limit->held++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    log_line(c, level, limit->held, fmt, ap);
    va_end(ap);
    limit->held = 0;
    limit->next_ns = now + (int64_t)BT_LOG_REPEAT_S * 1000000000;
}

void bt_note(bt_store *s, baton_log_level level, const char *fmt, ...)
{
    if (!s->notes.client || !bt_log_enabled(s->notes.client, level))
        return;
    char *line;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n >= 0)
        bt_notes_add(s, level, line);
}

void bt_log_attach(baton_client *c, bt_store *s)
{
    s->notes.client = c;
    s->notes.deliver = deliver;
}
