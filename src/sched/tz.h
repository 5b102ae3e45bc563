/* tz.h: IANA time zones read from the compiled tz database, and the calendar arithmetic
 * that goes with them.
 *
 * Times are int64_t seconds. An instant is counted from 1970-01-01T00:00:00Z; a wall time
 * (what a clock on the wall in the zone shows) is counted the same way from 1970-01-01
 * 00:00:00 of the local calendar, so wall = instant + the zone's UT offset at that instant.
 *
 * Nothing here touches TZ or calls tzset, so every function may be called from any thread. */
#ifndef BT_TZ_H
#define BT_TZ_H

#include <stddef.h>
#include <stdint.h>

/* ---- proleptic Gregorian calendar ---------------------------------------------------- */

/* Days from 1970-01-01 to year-month-day (month 1-12, day 1-31); negative before 1970. */
int64_t bt_days_from_civil(int64_t year, int month, int day);

/* The inverse of bt_days_from_civil. */
void bt_civil_from_days(int64_t days, int64_t *year, int *month, int *day);

int bt_days_in_month(int64_t year, int month);

/* 0 = Sunday ... 6 = Saturday, for a day counted as by bt_days_from_civil. */
int bt_weekday(int64_t days);

/* Division rounding towards minus infinity, for splitting negative times into days. */
int64_t bt_floor_div(int64_t a, int64_t b);

/* ---- time zones ----------------------------------------------------------------------- */

/* A loaded zone. Immutable once loaded and never freed, so it may be shared between threads. */
typedef struct bt_tz bt_tz;

/* The built-in UTC zone (no file is read for it). */
const bt_tz *bt_tz_utc(void);

/* bt_tz_load finds the zone named name ("Europe/Berlin") in the directory $TZDIR, or
 * /usr/share/zoneinfo when TZDIR is unset or empty. NULL and "UTC" give bt_tz_utc().
 *
 * The file is a TZif file (RFC 8536) of version 1 to 4. For version 2 and later the 64-bit
 * data and the POSIX TZ rule of the footer are used; the rule covers every instant after
 * the last transition in the table. Files that count leap seconds ("right/...") are refused.
 *
 * Each file is read once: loaded zones are kept, keyed by their path, for the life of the
 * process, so the pointer stays valid and later loads of the same name are a list lookup.
 * TZDIR is read on every call, so a zone of the same name under another TZDIR is another
 * zone. Safe to call from several threads at once (the cache is guarded by a mutex), as long
 * as no thread changes TZDIR meanwhile.
 *
 * Returns BATON_OK and sets *out, or sets *out to NULL and returns
 *   BATON_EINVALID "invalid time zone name "NAME"" for an empty name, one starting with '/'
 *                  or one containing ".." (names never leave the directory), or
 *                  "unknown time zone "NAME"" when no TZif file has that name;
 *   BATON_ERROR    when the file cannot be read, is corrupt or uses what is not supported,
 *                  with a message naming the zone and the file. */
int bt_tz_load(const char *name, const bt_tz **out);

/* bt_tz_parse builds the zone name from buf, the len bytes of a TZif file, as bt_tz_load
 * does from the file at path (named in messages): for bytes that did not come from a file
 * of the zone directory. The zone is not cached: it is the caller's, freed with free().
 * Returns BATON_OK and sets *out, or sets it to NULL and returns BATON_EINVALID (not a
 * TZif file) or BATON_ERROR (broken or unsupported), with bt_tz_load's messages. */
int bt_tz_parse(const unsigned char *buf, size_t len, const char *name, const char *path, bt_tz **out);

/* The name the zone was loaded with ("UTC" for the built-in zone). */
const char *bt_tz_name(const bt_tz *tz);

/* The UT offset, in seconds east of Greenwich, in effect at the instant `at`. */
int32_t bt_tz_offset(const bt_tz *tz, int64_t at);

/* bt_tz_wall_to_utc returns the first instant at which the zone's clocks show `wall` or
 * later. That one rule settles both kinds of daylight-saving change:
 *   - a wall time skipped by a gap (02:30 when clocks jump from 02:00 to 03:00) gives the
 *     instant of the jump, i.e. 03:00 on the new clock;
 *   - a wall time repeated by an overlap (01:30 when clocks fall back from 02:00 to 01:00)
 *     gives its first occurrence, still on the old offset.
 * The result never decreases as `wall` increases. */
int64_t bt_tz_wall_to_utc(const bt_tz *tz, int64_t wall);

#endif
