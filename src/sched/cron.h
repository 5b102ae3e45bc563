/* cron.h: cron schedules ("30 9 * * mon-fri") and the next time one runs, in a time zone.
 *
 * Syntax. Five fields, minute hour day-of-month month day-of-week, or six with a leading
 * second field. Each field is a comma-separated list of items:
 *   *       every value              a       one value
 *   a-b     a range, a <= b          a-b/n   every n-th value of a-b
 *   a/n     every n-th value from a to the end of the field
 * and a star followed by "/n", every n-th value from the start of the field (these two
 * characters cannot be written together inside this comment). Months may be named jan..dec
 * and weekdays sun..sat, in any case, also as range ends ("mon-fri"). Weekdays run 0-7,
 * where both 0 and 7 are Sunday; Sunday ending a range is 7, so "fri-sun" is 5-7. A step runs from 1 to the number of values of its field
 * (60 for minutes). Instead of fields, a macro may stand alone: @yearly (@annually) is
 * "0 0 1 1 *", @monthly "0 0 1 * *", @weekly "0 0 * * 0", @daily (@midnight) "0 0 * * *"
 * and @hourly "0 * * * *". Names and macros ignore case; any whitespace separates fields.
 *
 * Days. As in Vixie cron, when both day fields are restricted, i.e. neither starts with
 * '*', a day matches when EITHER matches ("0 0 13 * fri": every 13th and every Friday);
 * otherwise both must match, so a stepped star in the day of month still narrows the
 * weekdays rather than adding days.
 *
 * Time zones. Fields match the wall time of the schedule's zone. At daylight-saving changes:
 *   - spring forward: a wall time the clocks skip (02:30 when they jump from 02:00 to 03:00)
 *     runs once, at the first instant after the gap, which is 03:00 on the new clock;
 *     several skipped times all run then, once;
 *   - fall back: a wall time the clocks show twice (01:30 when they go back from 02:00 to
 *     01:00) runs once, at its first occurrence. The repeated hour runs nothing, so even a
 *     schedule every five minutes pauses for that hour.
 * This is Vixie cron's rule for jobs at fixed times, applied to every schedule.
 *
 * bt_cron is a plain value: no allocation, nothing to free, copy it freely. Parsing and
 * computing depend only on their arguments and are safe from any thread. */
#ifndef BT_CRON_H
#define BT_CRON_H

#include <stdint.h>

#include "sched/tz.h"

enum {
    BT_CRON_TEXT_MAX = 128,      /* longest schedule text kept, with its terminating NUL */
    BT_CRON_DOM_STAR = 1 << 0,   /* the day-of-month field starts with '*' */
    BT_CRON_DOW_STAR = 1 << 1,   /* the day-of-week field starts with '*' */
};

typedef struct bt_cron {
    uint64_t sec;        /* bit s: second s (0-59) matches; bit 0 only for 5-field schedules */
    uint64_t min;        /* bits 0-59 */
    uint32_t hour;       /* bits 0-23 */
    uint32_t dom;        /* bits 1-31 */
    uint16_t mon;        /* bits 1-12 */
    uint8_t dow;         /* bits 0-6, 0 = Sunday (7 is folded into 0) */
    uint8_t flags;       /* BT_CRON_DOM_STAR | BT_CRON_DOW_STAR */
    /* The schedule as written, trimmed, with runs of whitespace made one space: for
     * listings and messages. */
    char text[BT_CRON_TEXT_MAX];
} bt_cron;

/* bt_cron_parse reads text (not NULL) into *out. Returns BATON_OK, or BATON_EINVALID with a
 * one-line message naming the field, e.g.
 *   invalid schedule "61 * * * *": minute: 61 is out of range 0-59
 *   invalid schedule "* x * * *": hour: "x" is not a number
 *   invalid schedule "* * *": expected 5 or 6 fields, got 3
 *   invalid schedule "@often": unknown macro @often
 * Empty list items, step 0, reversed ranges, trailing characters and texts longer than
 * BT_CRON_TEXT_MAX - 1 (after collapsing whitespace) are refused too. *out is only written
 * on success. */
int bt_cron_parse(const char *text, bt_cron *out);

/* bt_cron_next finds the first time strictly after after_ms (milliseconds since the epoch)
 * at which c runs in zone tz (NULL = UTC), and sets *next_ms to it; runs fall on whole
 * seconds. The search goes field by field, skipping whole months, days, hours and minutes
 * that cannot match, so a schedule that runs once in eight years is found as quickly as
 * one that runs every second.
 *
 * Returns BATON_OK, or BATON_EINVALID when after_ms is outside the years 1-9999, or
 * "schedule "0 0 31 2 *" never matches" when no run exists: the search covers 400 years,
 * after which the Gregorian calendar repeats, so such a schedule matches no date at all. */
int bt_cron_next(const bt_cron *c, const bt_tz *tz, int64_t after_ms, int64_t *next_ms);

#endif
