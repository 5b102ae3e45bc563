/* tz.c: IANA time zones read straight from the compiled tz database (TZif files).
 *
 * localtime_r and mktime take their zone from the process-wide TZ variable, so using a zone
 * chosen per schedule would mean setenv and tzset under the feet of other threads. Instead a
 * zone's file is read once into an immutable bt_tz: the table of transition instants with
 * the UT offset that starts at each, and the POSIX TZ rule from the file's footer, which
 * continues the table after its last transition (tzdata stops the table around 2037).
 *
 * Both are looked at the same way: as "periods", spans of instants with one offset. The
 * offset at an instant is its period's, and converting a wall time back walks the few
 * periods within a day of it. */
#include "sched/tz.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "baton.h"
#include "util/err.h"

enum {
    DAY = 86400,
    MAX_OFFSET = 26 * 3600,  /* no zone has been this far from UT; bounds the search below */
    MAX_FILE = 1 << 20,      /* the largest zone file is a few kilobytes */
    HEADER = 44,             /* TZif header: magic, version, 15 reserved bytes, 6 counts */
};

/* ---- calendar -------------------------------------------------------------------------- */

/* The algorithms count in 400-year eras starting on March 1st, where leap days fall last. */
int64_t bt_days_from_civil(int64_t year, int month, int day)
{
    year -= month <= 2;
    int64_t era = bt_floor_div(year, 400);
    int64_t yoe = year - era * 400;
    int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void bt_civil_from_days(int64_t days, int64_t *year, int *month, int *day)
{
    days += 719468;
    int64_t era = bt_floor_div(days, 146097);
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

static int is_leap(int64_t year)
{
    return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
}

int bt_days_in_month(int64_t year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return days[month - 1] + (month == 2 && is_leap(year));
}

int bt_weekday(int64_t days)
{
    return (int)(days - bt_floor_div(days + 4, 7) * 7 + 4); /* 1970-01-01 was a Thursday */
}

int64_t bt_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* ---- POSIX TZ rules (the TZif footer) ----------------------------------------------------- */

/* The day a daylight-saving change happens in a year, and the wall time it happens at. */
typedef struct rule_date {
    char kind;           /* 'J': day 1-365, Feb 29 never counted; 'D': day 0-365; 'M': below */
    int yday;            /* J and D */
    int month, week, wday; /* M: weekday wday (0 = Sunday) of week 1-5 of month; 5 = the last */
    int32_t time;        /* seconds after local midnight; may be negative or beyond a day */
} rule_date;

typedef struct posix_rule {
    int present;         /* the file has a non-empty footer */
    int has_dst;
    int32_t std_off, dst_off;  /* seconds east of UT */
    rule_date start;     /* daylight time starts; the time is on the standard clock */
    rule_date end;       /* daylight time ends; the time is on the daylight clock */
} posix_rule;

static const char *parse_number(const char *p, int max, int *out)
{
    if (!isdigit((unsigned char)*p))
        return NULL;
    int v = 0;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (*p++ - '0');
        if (v > max)
            return NULL;
    }
    *out = v;
    return p;
}

/* [+-]hh[:mm[:ss]]; hours up to max_hours (24 for offsets, 167 for rule times). */
static const char *parse_hms(const char *p, int max_hours, int32_t *out)
{
    int sign = 1, h, m = 0, s = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (!(p = parse_number(p, max_hours, &h)))
        return NULL;
    if (*p == ':') {
        if (!(p = parse_number(p + 1, 59, &m)))
            return NULL;
        if (*p == ':' && !(p = parse_number(p + 1, 59, &s)))
            return NULL;
    }
    *out = sign * (h * 3600 + m * 60 + s);
    return p;
}

/* An abbreviation: three or more letters, or <...> with letters, digits and signs. */
static const char *skip_abbr(const char *p)
{
    const char *start = p;
    if (*p == '<') {
        while (isalnum((unsigned char)*++p) || *p == '+' || *p == '-')
            ;
        return *p == '>' && p - start > 3 ? p + 1 : NULL;
    }
    while (isalpha((unsigned char)*p))
        p++;
    return p - start >= 3 ? p : NULL;
}

static const char *parse_date(const char *p, rule_date *d)
{
    d->kind = *p == 'M' || *p == 'J' ? *p++ : 'D';
    if (d->kind == 'M') {
        if (!(p = parse_number(p, 12, &d->month)) || d->month < 1 || *p != '.' ||
            !(p = parse_number(p + 1, 5, &d->week)) || d->week < 1 || *p != '.' ||
            !(p = parse_number(p + 1, 6, &d->wday)))
            return NULL;
    } else if (!(p = parse_number(p, 365, &d->yday)) || (d->kind == 'J' && d->yday < 1)) {
        return NULL;
    }
    d->time = 2 * 3600;
    if (*p == '/' && !(p = parse_hms(p + 1, 167, &d->time)))
        return NULL;
    return p;
}

/* STDoffset[DST[offset],start[/time],end[/time]]. POSIX offsets count hours west of
 * Greenwich, hence the negations. */
static int parse_posix(const char *s, posix_rule *r)
{
    int32_t west;
    const char *p = skip_abbr(s);
    if (!p || !(p = parse_hms(p, 24, &west)))
        return -1;
    r->present = 1;
    r->std_off = -west;
    if (!*p)
        return 0;
    if (!(p = skip_abbr(p)))
        return -1;
    r->dst_off = r->std_off + 3600;
    if (*p != ',') {
        if (!(p = parse_hms(p, 24, &west)))
            return -1;
        r->dst_off = -west;
    }
    /* Without dates POSIX leaves the change days to the implementation; tzdata always
     * writes them, so a footer without them is refused rather than guessed. */
    if (*p != ',' || !(p = parse_date(p + 1, &r->start)) || *p != ',' ||
        !(p = parse_date(p + 1, &r->end)) || *p)
        return -1;
    r->has_dst = 1;
    return 0;
}

static int64_t rule_day(const rule_date *d, int64_t year)
{
    int64_t jan1 = bt_days_from_civil(year, 1, 1);
    switch (d->kind) {
    case 'J':
        return jan1 + d->yday - 1 + (d->yday >= 60 && is_leap(year));
    case 'D':
        return jan1 + d->yday;
    default: {
        int64_t first = bt_days_from_civil(year, d->month, 1);
        int64_t day = first + (d->wday - bt_weekday(first) + 7) % 7 + (d->week - 1) * 7;
        while (day >= first + bt_days_in_month(year, d->month))
            day -= 7; /* week 5 means the last such weekday, which may be the fourth */
        return day;
    }
    }
}

/* The period of the rule holding instant at. The changes of the years around it are sorted
 * stably, so when one year's end meets the next year's start (the way tzdata writes
 * daylight time all year round) the later one in rule order wins. */
static void rule_period(const posix_rule *r, int64_t at, int64_t *start, int64_t *end,
                        int32_t *off)
{
    *start = INT64_MIN;
    *end = INT64_MAX;
    *off = r->std_off;
    if (!r->has_dst)
        return;
    int64_t year;
    int month, day;
    bt_civil_from_days(bt_floor_div(at, DAY), &year, &month, &day);
    /* Rule times reach a week past their day, so two years either side are enough. */
    struct change { int64_t at; int32_t off; } c[10];
    int n = 0;
    for (int64_t y = year - 2; y <= year + 2; y++) {
        c[n++] = (struct change){rule_day(&r->start, y) * DAY + r->start.time - r->std_off,
                                 r->dst_off};
        c[n++] = (struct change){rule_day(&r->end, y) * DAY + r->end.time - r->dst_off,
                                 r->std_off};
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && c[j - 1].at > c[j].at; j--) {
            struct change t = c[j];
            c[j] = c[j - 1];
            c[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        if (c[i].at > at) {
            *end = c[i].at;
            break;
        }
        *start = c[i].at;
        *off = c[i].off;
    }
}

/* ---- zones -------------------------------------------------------------------------------- */

struct bt_tz {
    struct bt_tz *next;      /* the cache list */
    const char *path;        /* the cache key */
    const char *name;
    size_t ntrans;
    const int64_t *trans;    /* instants, ascending */
    const uint8_t *trans_type; /* the local time type that starts at each */
    const int32_t *type_off; /* UT offset of each type; type 0 also holds before trans[0] */
    posix_rule rule;         /* after the last transition, or always when there is none */
};

static const int32_t utc_offsets[] = {0};
static const bt_tz utc_zone = {.name = "UTC", .type_off = utc_offsets};

const bt_tz *bt_tz_utc(void) { return &utc_zone; }

const char *bt_tz_name(const bt_tz *tz) { return tz->name; }

/* The period [*start, *end) holding instant at, during which the offset is *off. */
static void period(const bt_tz *tz, int64_t at, int64_t *start, int64_t *end, int32_t *off)
{
    size_t n = tz->ntrans;
    if (n == 0 || at < tz->trans[0]) {
        if (n == 0 && tz->rule.present) {
            rule_period(&tz->rule, at, start, end, off);
            return;
        }
        *start = INT64_MIN;
        *end = n ? tz->trans[0] : INT64_MAX;
        *off = tz->type_off[0];
        return;
    }
    size_t lo = 0, hi = n; /* the last transition <= at is in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= at)
            lo = mid;
        else
            hi = mid;
    }
    if (lo == n - 1 && tz->rule.present) {
        rule_period(&tz->rule, at, start, end, off);
        if (*start < tz->trans[lo])
            *start = tz->trans[lo];
        return;
    }
    *start = tz->trans[lo];
    *end = lo + 1 < n ? tz->trans[lo + 1] : INT64_MAX;
    *off = tz->type_off[tz->trans_type[lo]];
}

int32_t bt_tz_offset(const bt_tz *tz, int64_t at)
{
    int64_t start, end;
    int32_t off;
    period(tz, at, &start, &end, &off);
    return off;
}

/* Within a period with offset off the clocks show wall from instant wall - off on, so the
 * first period, in time order, whose span reaches that instant holds the answer. Every
 * instant before wall - MAX_OFFSET shows less than wall, so the walk starts there. */
int64_t bt_tz_wall_to_utc(const bt_tz *tz, int64_t wall)
{
    int64_t at = wall - MAX_OFFSET;
    for (;;) {
        int64_t start, end;
        int32_t off;
        period(tz, at, &start, &end, &off);
        int64_t candidate = wall - off > at ? wall - off : at;
        if (candidate < end)
            return candidate;
        at = end;
    }
}

/* ---- reading TZif files ---------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct counts {
    uint32_t isut, isstd, leap, time, type, chars;
} counts;

static counts read_counts(const unsigned char *header)
{
    const unsigned char *p = header + 20;
    return (counts){be32(p), be32(p + 4), be32(p + 8), be32(p + 12), be32(p + 16), be32(p + 20)};
}

/* The size of a data block with times of timesize bytes; 0 when the counts cannot be right. */
static size_t block_size(const counts *c, size_t timesize)
{
    if (c->time > 100000 || c->type == 0 || c->type > 256 || c->chars > 100000 ||
        c->leap > 100000 || (c->isstd && c->isstd != c->type) || (c->isut && c->isut != c->type))
        return 0;
    return c->time * (timesize + 1) + c->type * 6 + c->chars + c->leap * (timesize + 4) +
           c->isstd + c->isut;
}

static int broken(const char **why, const char *what)
{
    *why = what;
    return -1;
}

/* Builds a zone from a TZif image in one allocation. Returns 0; 1 when buf is not a TZif
 * file at all; -1 with *why when it is broken or unsupported. */
static int parse_tzif(const unsigned char *buf, size_t len, const char *name, const char *path,
                      bt_tz **out, const char **why)
{
    if (len < 4 || memcmp(buf, "TZif", 4) != 0)
        return 1;
    if (len < HEADER)
        return broken(why, "truncated");
    counts c = read_counts(buf);
    size_t size = block_size(&c, 4), timesize = 4;
    const unsigned char *p = buf + HEADER, *stop = buf + len;
    if (buf[4] >= '2') {
        /* Version 2+ repeats everything with 64-bit times after the version 1 block. */
        if (!size || (size_t)(stop - p) < size + HEADER)
            return broken(why, "truncated");
        p += size;
        if (memcmp(p, "TZif", 4) != 0)
            return broken(why, "no second header");
        c = read_counts(p);
        p += HEADER;
        timesize = 8;
        size = block_size(&c, 8);
    }
    if (!size)
        return broken(why, "impossible counts");
    if ((size_t)(stop - p) < size)
        return broken(why, "truncated");
    if (c.leap)
        return broken(why, "it counts leap seconds, which is not supported");

    const unsigned char *times = p, *indices = times + c.time * timesize;
    const unsigned char *types = indices + c.time;
    for (uint32_t i = 0; i < c.time; i++)
        if (indices[i] >= c.type)
            return broken(why, "transition to an undefined local time type");
    for (uint32_t i = 0; i < c.type; i++) {
        int32_t off = (int32_t)be32(types + 6 * i);
        if (off < -MAX_OFFSET || off > MAX_OFFSET)
            return broken(why, "UT offset beyond 26 hours");
    }

    posix_rule rule = {0};
    if (timesize == 8) {
        /* The footer: the rule between two newlines; empty when the table says it all. */
        const char *foot = (const char *)p + size, *end = (const char *)stop, *nl;
        if (foot >= end || *foot != '\n' ||
            !(nl = memchr(foot + 1, '\n', (size_t)(end - foot - 1))))
            return broken(why, "no footer");
        char text[128];
        size_t flen = (size_t)(nl - foot - 1);
        if (flen >= sizeof text)
            return broken(why, "footer too long");
        memcpy(text, foot + 1, flen);
        text[flen] = '\0';
        if (flen && parse_posix(text, &rule) != 0)
            return broken(why, "unsupported TZ rule in the footer");
    }

    size_t namelen = strlen(name) + 1, pathlen = strlen(path) + 1;
    /* Laid out by decreasing alignment: the zone, instants, offsets, type indices, strings. */
    bt_tz *z = malloc(sizeof(bt_tz) + c.time * sizeof(int64_t) + c.type * sizeof(int32_t) +
                      c.time + namelen + pathlen);
    if (!z)
        return broken(why, "out of memory");
    int64_t *trans = (int64_t *)(z + 1);
    int32_t *type_off = (int32_t *)(trans + c.time);
    uint8_t *trans_type = (uint8_t *)(type_off + c.type);
    char *name_copy = (char *)(trans_type + c.time), *path_copy = name_copy + namelen;
    for (uint32_t i = 0; i < c.time; i++) {
        const unsigned char *t = times + i * timesize;
        trans[i] = timesize == 8 ? be64(t) : (int32_t)be32(t);
        if (i > 0 && trans[i] <= trans[i - 1]) {
            free(z);
            return broken(why, "transitions out of order");
        }
    }
    memcpy(trans_type, indices, c.time);
    for (uint32_t i = 0; i < c.type; i++)
        type_off[i] = (int32_t)be32(types + 6 * i);
    memcpy(name_copy, name, namelen);
    memcpy(path_copy, path, pathlen);
    *z = (bt_tz){.path = path_copy, .name = name_copy, .ntrans = c.time, .trans = trans,
                 .trans_type = trans_type, .type_off = type_off, .rule = rule};
    *out = z;
    return 0;
}

/* Reads the whole file. Returns 0; 1 when there is no such regular file; -1 with errno.
 * O_NONBLOCK keeps a stray FIFO in the directory from hanging the open. */
static int read_whole(const char *path, unsigned char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? 1 : -1;
    struct stat st;
    int rc = fstat(fd, &st) != 0 ? -1 : !S_ISREG(st.st_mode) || st.st_size > MAX_FILE ? 1 : 0;
    unsigned char *data = NULL;
    if (rc == 0 && !(data = malloc((size_t)st.st_size + 1))) {
        errno = ENOMEM;
        rc = -1;
    }
    size_t got = 0;
    while (rc == 0 && got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
        if (n == 0)
            break; /* the file shrank meanwhile: parse what there is */
        if (n > 0)
            got += (size_t)n;
        else if (errno != EINTR)
            rc = -1;
    }
    int saved = errno;
    close(fd);
    if (rc != 0) {
        free(data);
        errno = saved;
        return rc;
    }
    *buf = data;
    *len = got;
    return 0;
}

int bt_tz_parse(const unsigned char *buf, size_t len, const char *name, const char *path, bt_tz **out)
{
    *out = NULL;
    const char *why = NULL;
    int rc = parse_tzif(buf, len, name, path, out, &why);
    if (rc > 0)
        return bt_err_set(BATON_EINVALID, "unknown time zone \"%s\"", name);
    if (rc < 0)
        return bt_err_set(BATON_ERROR, "time zone \"%s\": %s: %s", name, path, why);
    return BATON_OK;
}

static int load_file(const char *name, const char *path, bt_tz **out)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = read_whole(path, &buf, &len);
    if (rc < 0)
        return bt_err_set(BATON_ERROR, "time zone \"%s\": cannot read %s: %s", name, path,
                          strerror(errno));
    rc = rc > 0 ? bt_err_set(BATON_EINVALID, "unknown time zone \"%s\"", name)
                : bt_tz_parse(buf, len, name, path, out);
    free(buf);
    return rc;
}

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static bt_tz *cache;

int bt_tz_load(const char *name, const bt_tz **out)
{
    *out = NULL;
    if (!name || !strcmp(name, "UTC")) {
        *out = &utc_zone;
        return BATON_OK;
    }
    const char *dir = getenv("TZDIR");
    if (!dir || !*dir)
        dir = "/usr/share/zoneinfo";
    char path[PATH_MAX];
    if (!*name || name[0] == '/' || strstr(name, "..") ||
        snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return bt_err_set(BATON_EINVALID, "invalid time zone name \"%s\"", name);

    pthread_mutex_lock(&cache_lock);
    bt_tz *z = cache;
    while (z && strcmp(z->path, path) != 0)
        z = z->next;
    int rc = BATON_OK;
    if (!z && (rc = load_file(name, path, &z)) == BATON_OK) {
        z->next = cache;
        cache = z;
    }
    pthread_mutex_unlock(&cache_lock);
    if (rc == BATON_OK)
        *out = z;
    return rc;
}
