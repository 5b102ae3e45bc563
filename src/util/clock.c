/* clock.c: time helpers. Times cross the database as integer milliseconds so every driver
 * stores and compares them the same way. */
#include "util/clock.h"

#include "baton.h"
#include "util/err.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t bt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t bt_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bt_boot_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bt_iso8601(int64_t ms, char *buf)
{
    time_t secs = (time_t)(ms / 1000);
    int millis = (int)(ms % 1000);
    if (millis < 0) {
        millis += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* Only years beyond 9999 could overflow; they are cut rather than overrun. */
    if (snprintf(buf, BT_ISO_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis) >= BT_ISO_LEN)
        buf[BT_ISO_LEN - 1] = '\0';
}

static int read_digits(const char **p, int count, int *value)
{
    int v = 0;
    for (int i = 0; i < count; i++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *value = v;
    return 0;
}

int bt_parse_iso8601(const char *text, int64_t *ms)
{
    const char *p = text;
    int year, mon, day, hour = 0, min = 0, sec = 0, millis = 0;
    if (read_digits(&p, 4, &year) || *p++ != '-' || read_digits(&p, 2, &mon) || *p++ != '-' ||
        read_digits(&p, 2, &day))
        return -1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (read_digits(&p, 2, &hour) || *p++ != ':' || read_digits(&p, 2, &min))
            return -1;
        if (*p == ':') {
            p++;
            if (read_digits(&p, 2, &sec))
                return -1;
            if (*p == '.' || *p == ',') {
                p++;
                int scale = 100, digits = 0;
                while (isdigit((unsigned char)*p)) {
                    millis += (*p - '0') * scale;
                    scale /= 10;
                    p++;
                    digits++;
                }
                if (digits == 0)
                    return -1;
            }
        }
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
        if (read_digits(&p, 2, &oh))
            return -1;
        if (*p == ':')
            p++;
        if (*p && read_digits(&p, 2, &om))
            return -1;
        offset_min = sign * (oh * 60 + om);
    }
    if (*p != '\0' || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60)
        return -1;
    /* A leap second (:60) is added after, so that only a day that does not exist moves
     * the date; tm_wday tells success, as -1 is also the instant before 1970. */
    int leap = sec == 60;
    struct tm tm = {.tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day,
                    .tm_hour = hour, .tm_min = min, .tm_sec = sec - leap, .tm_wday = -1};
    time_t t = timegm(&tm);
    if (tm.tm_wday < 0 || tm.tm_mday != day)
        return -1; /* timegm normalises 2026-02-31 to March: reject it */
    *ms = ((int64_t)t + leap - (int64_t)offset_min * 60) * 1000 + millis;
    return 0;
}

void bt_sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

int baton_parse_time(const char *text, int64_t *ms_out)
{
    if (!text || bt_parse_iso8601(text, ms_out) != 0)
        return bt_err_set(BATON_EINVALID,
                          "time '%s': expected ISO 8601, e.g. 2026-11-24T09:30:00Z", text ? text : "");
    return BATON_OK;
}

int bt_poll_ms(double seconds)
{
    double ms = seconds * 1000.0 + 0.999;
    return !(seconds > 0) ? 0 : ms >= INT_MAX ? INT_MAX : (int)ms;
}
