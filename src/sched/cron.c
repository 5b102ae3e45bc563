/* cron.c: cron schedules parsed into bitmasks, and the search for the next run.
 *
 * A schedule is six sets of values held as bitmasks, so matching a value is a shift and
 * finding the next matching value of a field is a count of trailing zeros. The next run is
 * found on the wall clock of the zone, from the largest field down: a month that cannot
 * match is skipped whole, then a day, an hour, a minute. Each wall time found becomes an
 * instant through bt_tz_wall_to_utc, whose rule for skipped and repeated wall times is the
 * daylight-saving behaviour documented in cron.h. */
#include "sched/cron.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "baton.h"
#include "util/err.h"

enum {
    DAY = 86400,
    SEARCH_YEARS = 400, /* the Gregorian calendar, weekdays included, repeats every 400 years */
};

/* ---- parsing ------------------------------------------------------------------------------ */

typedef struct field_spec {
    const char *name;
    int lo, hi;               /* accepted values */
    int last;                 /* where '*' and "a/n" end: 6 for weekdays, whose 7 repeats 0 */
    const char *const *names; /* three-letter names of lo, lo + 1, ...; NULL when none */
    const char *named;        /* what the names are, for messages */
} field_spec;

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const weekday_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

enum { F_SEC, F_MIN, F_HOUR, F_DOM, F_MON, F_DOW, NFIELDS };

static const field_spec specs[NFIELDS] = {
    [F_SEC] = {"second", 0, 59, 59, NULL, NULL},
    [F_MIN] = {"minute", 0, 59, 59, NULL, NULL},
    [F_HOUR] = {"hour", 0, 23, 23, NULL, NULL},
    [F_DOM] = {"day-of-month", 1, 31, 31, NULL, NULL},
    [F_MON] = {"month", 1, 12, 12, month_names, "month name"},
    [F_DOW] = {"day-of-week", 0, 7, 6, weekday_names, "weekday name"},
};

static const struct macro {
    const char *name, *fields;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* A field being parsed: the whole schedule and the field's text, for messages. */
typedef struct field_ctx {
    const char *schedule;
    const field_spec *spec;
    const char *text;
} field_ctx;

static int field_error(const field_ctx *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int field_error(const field_ctx *f, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return bt_err_set(BATON_EINVALID, "invalid schedule \"%s\": %s: %s", f->schedule,
                      f->spec->name, what);
}

/* Reads one value (a number, or a name where the field has names) at *p, before end. */
static int parse_value(const field_ctx *f, const char **p, const char *item, const char *end,
                       int *out)
{
    const char *s = *p, *e = s;
    while (e < end && isalnum((unsigned char)*e))
        e++;
    int len = (int)(e - s), itemlen = (int)(end - item);
    if (len == 0)
        return s == end ? field_error(f, "missing value in \"%.*s\"", itemlen, item)
                        : field_error(f, "unexpected \"%.*s\" in \"%.*s\"", (int)(end - s), s,
                                      itemlen, item);
    int v = 0, digits = 0;
    while (digits < len && isdigit((unsigned char)s[digits])) {
        if (v <= f->spec->hi)
            v = v * 10 + (s[digits] - '0'); /* stops growing once out of range */
        digits++;
    }
    if (digits < len) {
        const char *const *names = f->spec->names;
        for (int i = 0; names && len == 3 && i <= f->spec->last - f->spec->lo; i++)
            if (strncasecmp(s, names[i], 3) == 0) {
                *out = f->spec->lo + i;
                *p = e;
                return BATON_OK;
            }
        return names ? field_error(f, "\"%.*s\" is not a number or %s", len, s, f->spec->named)
                     : field_error(f, "\"%.*s\" is not a number", len, s);
    }
    if (v < f->spec->lo || v > f->spec->hi)
        return field_error(f, "%.*s is out of range %d-%d", len, s, f->spec->lo, f->spec->hi);
    *out = v;
    *p = e;
    return BATON_OK;
}

static int parse_step(const field_ctx *f, const char **p, const char *item, const char *end,
                      int *out)
{
    const char *s = *p, *e = s;
    while (e < end && isalnum((unsigned char)*e))
        e++;
    int len = (int)(e - s), max = f->spec->last - f->spec->lo + 1, v = 0;
    if (len == 0)
        return field_error(f, "missing step in \"%.*s\"", (int)(end - item), item);
    for (const char *d = s; d < e; d++) {
        if (!isdigit((unsigned char)*d))
            return field_error(f, "step \"%.*s\" is not a number", len, s);
        if (v <= max)
            v = v * 10 + (*d - '0');
    }
    if (v < 1 || v > max)
        return field_error(f, "step %.*s is out of range 1-%d", len, s, max);
    *out = v;
    *p = e;
    return BATON_OK;
}

/* One list item: "*", "a", "a-b", each optionally followed by "/n". */
static int parse_item(const field_ctx *f, const char *item, const char *end, uint64_t *mask)
{
    const char *p = item;
    int lo, hi, step = 1, spans = 1, rc;
    if (*p == '*') {
        lo = f->spec->lo;
        hi = f->spec->last;
        p++;
    } else {
        if ((rc = parse_value(f, &p, item, end, &lo)) != BATON_OK)
            return rc;
        hi = lo;
        spans = 0;
        if (p < end && *p == '-') {
            p++;
            if ((rc = parse_value(f, &p, item, end, &hi)) != BATON_OK)
                return rc;
            spans = 1;
            if (f->spec == &specs[F_DOW] && hi == 0 && lo > 0)
                hi = 7; /* "fri-sun" ends on the Sunday that follows */
            if (lo > hi)
                return field_error(f, "range %.*s is reversed", (int)(p - item), item);
        }
    }
    if (p < end && *p == '/') {
        p++;
        if ((rc = parse_step(f, &p, item, end, &step)) != BATON_OK)
            return rc;
        if (!spans)
            hi = f->spec->last;
    }
    if (p < end)
        return field_error(f, "unexpected \"%.*s\" in \"%.*s\"", (int)(end - p), p,
                           (int)(end - item), item);
    for (int v = lo; v <= hi; v += step)
        *mask |= (uint64_t)1 << v;
    return BATON_OK;
}

static int parse_field(const char *schedule, int which, const char *text, uint64_t *mask)
{
    field_ctx f = {schedule, &specs[which], text};
    *mask = 0;
    for (const char *item = text;;) {
        const char *end = strchr(item, ',');
        if (!end)
            end = item + strlen(item);
        if (end == item)
            return field_error(&f, "empty item in \"%s\"", text);
        int rc = parse_item(&f, item, end, mask);
        if (rc != BATON_OK)
            return rc;
        if (!*end)
            return BATON_OK;
        item = end + 1;
    }
}

/* Parses fields (one space between them) into *c; schedule is what messages quote. */
static int parse_fields(const char *schedule, const char *fields, bt_cron *c)
{
    char buf[BT_CRON_TEXT_MAX];
    char *field[NFIELDS];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", fields);
    for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (n < NFIELDS)
            field[n] = tok;
        n++;
    }
    if (n != NFIELDS && n != NFIELDS - 1)
        return bt_err_set(BATON_EINVALID,
                          "invalid schedule \"%s\": expected 5 or 6 fields, got %d", schedule, n);
    uint64_t mask[NFIELDS] = {[F_SEC] = 1}; /* five fields: at second 0 */
    for (int i = 0; i < n; i++) {
        int which = i + (NFIELDS - n);
        int rc = parse_field(schedule, which, field[i], &mask[which]);
        if (rc != BATON_OK)
            return rc;
    }
    c->sec = mask[F_SEC];
    c->min = mask[F_MIN];
    c->hour = (uint32_t)mask[F_HOUR];
    c->dom = (uint32_t)mask[F_DOM];
    c->mon = (uint16_t)mask[F_MON];
    c->dow = (uint8_t)((mask[F_DOW] | mask[F_DOW] >> 7) & 0x7f); /* 7 is Sunday too */
    c->flags = (field[n - 3][0] == '*' ? BT_CRON_DOM_STAR : 0) |
               (field[n - 1][0] == '*' ? BT_CRON_DOW_STAR : 0);
    return BATON_OK;
}

int bt_cron_parse(const char *text, bt_cron *out)
{
    bt_cron c = {0};
    size_t len = 0;
    for (const char *p = text; *p;) {
        while (isspace((unsigned char)*p))
            p++;
        const char *word = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        size_t n = (size_t)(p - word);
        if (n == 0)
            break;
        if (len + (len > 0) + n >= sizeof c.text)
            return bt_err_set(BATON_EINVALID,
                              "invalid schedule \"%.32s...\": longer than %d characters", text,
                              BT_CRON_TEXT_MAX - 1);
        if (len > 0)
            c.text[len++] = ' ';
        memcpy(c.text + len, word, n);
        len += n;
    }
    const char *fields = c.text;
    if (c.text[0] == '@') {
        size_t namelen = strcspn(c.text, " ");
        fields = NULL;
        for (size_t i = 0; i < sizeof macros / sizeof *macros && !fields; i++)
            if (strlen(macros[i].name) == namelen &&
                strncasecmp(c.text, macros[i].name, namelen) == 0)
                fields = macros[i].fields;
        if (!fields)
            return bt_err_set(BATON_EINVALID, "invalid schedule \"%s\": unknown macro %.*s",
                              c.text, (int)namelen, c.text);
        if (c.text[namelen])
            return bt_err_set(BATON_EINVALID, "invalid schedule \"%s\": %.*s takes no fields",
                              c.text, (int)namelen, c.text);
    }
    int rc = parse_fields(c.text, fields, &c);
    if (rc == BATON_OK)
        *out = c;
    return rc;
}

/* ---- the next run --------------------------------------------------------------------- */

/* The smallest value >= from whose bit is set, or -1. */
static int next_bit(uint64_t mask, int from)
{
    if (from > 63)
        return -1;
    uint64_t rest = mask & (~(uint64_t)0 << from);
    return rest ? __builtin_ctzll(rest) : -1;
}

static int day_matches(const bt_cron *c, int64_t year, int month, int day)
{
    int dom = (int)(c->dom >> day & 1);
    int dow = c->dow >> bt_weekday(bt_days_from_civil(year, month, day)) & 1;
    return (c->flags & (BT_CRON_DOM_STAR | BT_CRON_DOW_STAR)) ? dom && dow : dom || dow;
}

/* The first wall time >= *wall that matches every field, into *wall; -1 when there is none
 * up to the end of last_year. */
static int next_wall(const bt_cron *c, int64_t *wall, int64_t last_year)
{
    int64_t days = bt_floor_div(*wall, DAY), year;
    int second = (int)(*wall - days * DAY), month, day;
    int hour = second / 3600, minute = second / 60 % 60;
    second %= 60;
    bt_civil_from_days(days, &year, &month, &day);
    for (;;) {
        if (year > last_year)
            return -1;
        if (!(c->mon >> month & 1) || day > bt_days_in_month(year, month)) {
            int next = next_bit(c->mon, month + 1);
            if (next < 0) {
                year++;
                next = next_bit(c->mon, 1);
            }
            month = next;
            day = 1;
            hour = minute = second = 0;
            continue;
        }
        if (!day_matches(c, year, month, day)) {
            /* When the weekday does not matter only the dates in the mask can match. */
            int next = (c->flags & BT_CRON_DOW_STAR) ? next_bit(c->dom, day + 1) : day + 1;
            day = next < 0 ? 32 : next;
            hour = minute = second = 0;
            continue;
        }
        int next = next_bit(c->hour, hour);
        if (next < 0) {
            day++;
            hour = minute = second = 0;
            continue;
        }
        if (next != hour) {
            hour = next;
            minute = second = 0;
        }
        if ((next = next_bit(c->min, minute)) < 0) {
            hour++;
            minute = second = 0;
            continue;
        }
        if (next != minute) {
            minute = next;
            second = 0;
        }
        if ((next = next_bit(c->sec, second)) < 0) {
            minute++;
            second = 0;
            continue;
        }
        *wall = bt_days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + next;
        return 0;
    }
}

int bt_cron_next(const bt_cron *c, const bt_tz *tz, int64_t after_ms, int64_t *next_ms)
{
    static const int64_t first_ms = -62135596800000; /* 0001-01-01T00:00:00Z */
    static const int64_t end_ms = 253402300800000;   /* 10000-01-01T00:00:00Z */
    if (after_ms < first_ms || after_ms >= end_ms)
        return bt_err_set(BATON_EINVALID, "time %lld ms is outside the years 1-9999",
                          (long long)after_ms);
    if (!tz)
        tz = bt_tz_utc();
    if (!c->sec || !c->min || !c->hour || !c->mon || !(c->dom | c->dow))
        return bt_err_set(BATON_EINVALID, "schedule \"%s\" never matches", c->text); /* unparsed */
    int64_t after = bt_floor_div(after_ms, 1000), year;
    int64_t wall = after + bt_tz_offset(tz, after) + 1;
    int month, day;
    bt_civil_from_days(bt_floor_div(wall, DAY), &year, &month, &day);
    /* A wall time can map to an instant at or before `after` only when the clocks went back
     * and `after` is in the repeated hour; the loop then moves past that hour's matches. */
    for (;; wall++) {
        if (next_wall(c, &wall, year + SEARCH_YEARS) != 0)
            return bt_err_set(BATON_EINVALID, "schedule \"%s\" never matches", c->text);
        int64_t at = bt_tz_wall_to_utc(tz, wall);
        if (at > after) {
            *next_ms = at * 1000;
            return BATON_OK;
        }
    }
}
