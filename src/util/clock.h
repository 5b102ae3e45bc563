/* clock.h: wall-clock and monotonic time, and ISO 8601 formatting/parsing. */
#ifndef BT_CLOCK_H
#define BT_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "baton.h"

/* Milliseconds since the Unix epoch (CLOCK_REALTIME): what the database stores. */
int64_t bt_now_ms(void);

/* Nanoseconds of CLOCK_MONOTONIC: for deadlines and durations. */
int64_t bt_mono_ns(void);

/* Milliseconds of CLOCK_BOOTTIME: one clock for every process of the host, which no
 * setting of the wall clock moves (and which counts while the host is suspended). */
int64_t bt_boot_ms(void);

/* Writes ms as "2026-11-24T09:02:41.123Z" into buf (at least BT_ISO_LEN bytes). */
enum { BT_ISO_LEN = 32 };
void bt_iso8601(int64_t ms, char *buf);

/* Parses an ISO 8601 UTC time or a time with a numeric offset ("2026-11-24T09:02:41Z",
 * "2026-11-24 09:02:41.5+01:00", "2026-11-24"). Returns 0 and sets *ms, or -1. */
int bt_parse_iso8601(const char *text, int64_t *ms);

/* bt_seconds_valid tells whether s is a span of seconds Baton accepts: from 0 to
 * BATON_SECONDS_MAX (NaN and infinities are not). That bound is beyond any real schedule,
 * and as milliseconds or nanoseconds far inside int64_t, so no deadline made from it
 * overflows. */
static inline int bt_seconds_valid(double s) { return s >= 0 && s <= BATON_SECONDS_MAX; }

/* bt_poll_ms turns a wait of seconds into poll()'s milliseconds: rounded up, 0 for none,
 * and at most INT_MAX (about 24 days), since spans of settings go far beyond it. */
int bt_poll_ms(double seconds);

/* Sleeps for the given seconds (fractions allowed), restarting after signals. */
void bt_sleep(double seconds);

#endif
