// ctest-labels: threads
/* test_cron.c: cron schedules: next runs from fixed instants, a brute-force check of the
 * field search, the messages of bad schedules, time zones (offsets, daylight-saving gaps and
 * overlaps, rules beyond the zone's table, every installed zone against the C library,
 * hand-made TZif files, TZDIR) and zones loaded from several threads at once. */
#include "support.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"
#include "sched/cron.h"
#include "sched/tz.h"
#include "util/clock.h"

static char *dir;
static char *saved_tzdir; /* the environment's TZDIR, put back after tests that change it */

static int setup(void **state)
{
    (void)state;
    dir = tmpdir_make();
    const char *tzdir = getenv("TZDIR");
    saved_tzdir = tzdir ? strdup(tzdir) : NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(dir);
    free(saved_tzdir);
    return 0;
}

static void restore_tzdir(void)
{
    if (saved_tzdir)
        setenv("TZDIR", saved_tzdir, 1);
    else
        unsetenv("TZDIR");
}

static const char *zoneinfo_dir(void)
{
    return saved_tzdir && *saved_tzdir ? saved_tzdir : "/usr/share/zoneinfo";
}

static int64_t ms_of(const char *iso)
{
    int64_t ms;
    if (bt_parse_iso8601(iso, &ms) != 0)
        fail_msg("bad time in the test: %s", iso);
    return ms;
}

static bt_cron parse_ok(const char *text)
{
    bt_cron c;
    if (bt_cron_parse(text, &c) != BATON_OK)
        fail_msg("parse \"%s\": %s", text, baton_error_last());
    return c;
}

static const bt_tz *zone_ok(const char *name)
{
    const bt_tz *tz = NULL;
    if (bt_tz_load(name, &tz) != BATON_OK)
        fail_msg("load %s: %s", name ? name : "NULL", baton_error_last());
    assert_non_null(tz);
    return tz;
}

/* Checks the runs of schedule in zone after `after`: each expected time in turn, each
 * found from the one before it. want is a NULL-terminated list of ISO times. */
static void check_runs(const char *schedule, const char *zone, const char *after,
                       const char *const *want)
{
    bt_cron c = parse_ok(schedule);
    const bt_tz *tz = zone_ok(zone);
    int64_t from = ms_of(after);
    for (size_t i = 0; want[i]; i++) {
        int64_t next;
        if (bt_cron_next(&c, tz, from, &next) != BATON_OK)
            fail_msg("\"%s\" in %s after run %zu: %s", schedule, zone ? zone : "UTC", i,
                     baton_error_last());
        char got[BT_ISO_LEN], from_text[BT_ISO_LEN];
        bt_iso8601(next, got);
        bt_iso8601(from, from_text);
        if (next != ms_of(want[i]))
            fail_msg("\"%s\" in %s after %s: got %s, want %s", schedule, zone ? zone : "UTC",
                     from_text, got, want[i]);
        from = next;
    }
}

#define RUNS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_next_utc(void **state)
{
    (void)state;
    static const struct {
        const char *schedule, *after, *want;
    } cases[] = {
        {"* * * * *", "2026-03-14T10:20:30Z", "2026-03-14T10:21:00Z"},
        {"* * * * *", "2026-03-14T10:20:00Z", "2026-03-14T10:21:00Z"}, /* strictly after */
        {"* * * * *", "2026-03-14T10:20:59.999Z", "2026-03-14T10:21:00Z"},
        {"*/15 * * * *", "2026-03-14T10:20:00Z", "2026-03-14T10:30:00Z"},
        {"*/15 * * * *", "2026-12-31T23:50:00Z", "2027-01-01T00:00:00Z"},
        {"0 3 * * *", "2026-03-14T03:00:00Z", "2026-03-15T03:00:00Z"},
        {"0 3 * * *", "2026-03-14T02:59:59Z", "2026-03-14T03:00:00Z"},
        {"30 9 * * mon-fri", "2026-03-13T10:00:00Z", "2026-03-16T09:30:00Z"}, /* Fri -> Mon */
        {"30 9 * * mon-fri", "2026-03-16T09:29:00Z", "2026-03-16T09:30:00Z"},
        {"0 0 1 * *", "2026-01-31T12:00:00Z", "2026-02-01T00:00:00Z"},
        {"0 0 1 * *", "2026-12-15T00:00:00Z", "2027-01-01T00:00:00Z"},
        {"0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00Z"}, /* April has 30 */
        {"0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"},
        {"0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z"}, /* 2100 is no leap year */
        {"0 0 13 * fri", "2026-04-10T12:00:00Z", "2026-04-13T00:00:00Z"}, /* Monday the 13th */
        {"0 0 13 * fri", "2026-04-13T12:00:00Z", "2026-04-17T00:00:00Z"}, /* a Friday */
        {"0 0 */2 * mon", "2026-03-14T00:00:00Z", "2026-03-23T00:00:00Z"}, /* both: odd Monday */
        {"*/10 * * * * *", "2026-03-14T10:20:35Z", "2026-03-14T10:20:40Z"},
        {"*/10 * * * * *", "2026-03-14T10:20:59.5Z", "2026-03-14T10:21:00Z"},
        {"30 0 12 * * *", "2026-03-14T10:20:00Z", "2026-03-14T12:00:30Z"},
        {"@hourly", "2026-03-14T10:20:00Z", "2026-03-14T11:00:00Z"},
        {"@daily", "2026-03-14T10:20:00Z", "2026-03-15T00:00:00Z"},
        {"@midnight", "2026-03-14T10:20:00Z", "2026-03-15T00:00:00Z"},
        {"@weekly", "2026-03-14T10:20:00Z", "2026-03-15T00:00:00Z"}, /* Sunday */
        {"@monthly", "2026-03-14T10:20:00Z", "2026-04-01T00:00:00Z"},
        {"@yearly", "2026-03-14T10:20:00Z", "2027-01-01T00:00:00Z"},
        {"@annually", "2026-03-14T10:20:00Z", "2027-01-01T00:00:00Z"},
        {"@DAILY", "2026-03-14T10:20:00Z", "2026-03-15T00:00:00Z"},
        {"0 0 * * 7", "2026-03-14T10:00:00Z", "2026-03-15T00:00:00Z"},
        {"0 0 * * 0", "2026-03-14T10:00:00Z", "2026-03-15T00:00:00Z"},
        {"0 0 * * SUN", "2026-03-14T10:00:00Z", "2026-03-15T00:00:00Z"},
        {"0 0 * * Sat-Sun", "2026-03-13T10:00:00Z", "2026-03-14T00:00:00Z"},
        {"0 0 * * 5-7", "2026-03-14T10:00:00Z", "2026-03-15T00:00:00Z"},
        {"0 0 * * 6-0", "2026-03-15T10:00:00Z", "2026-03-21T00:00:00Z"},
        {"0 0 * * sun-sun", "2026-03-14T10:00:00Z", "2026-03-15T00:00:00Z"},
        {"0 0 * * sun-sun", "2026-03-15T10:00:00Z", "2026-03-22T00:00:00Z"},
        {"0 12 * JAN,Jul *", "2026-03-14T10:00:00Z", "2026-07-01T12:00:00Z"},
        {"0 12 1 jan-mar/2 *", "2026-01-02T00:00:00Z", "2026-03-01T12:00:00Z"},
        {"0-10/5 * * * *", "2026-03-14T10:06:00Z", "2026-03-14T10:10:00Z"},
        {"0-10/5 * * * *", "2026-03-14T10:10:00Z", "2026-03-14T11:00:00Z"},
        {"5/20 * * * *", "2026-03-14T10:46:00Z", "2026-03-14T11:05:00Z"},
        {"0 9-17/4 * * *", "2026-03-14T13:00:00Z", "2026-03-14T17:00:00Z"},
        {"1,2,58 * * * *", "2026-03-14T10:02:00Z", "2026-03-14T10:58:00Z"},
        {"0 0 * * mon/2", "2026-03-16T00:00:00Z", "2026-03-18T00:00:00Z"}, /* Mon, Wed, Fri */
        {"  0   0\t1 1 *  ", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"},
        {"0 0 1 1 *", "1969-06-01T00:00:00Z", "1970-01-01T00:00:00Z"},
        {"59 23 31 12 *", "1969-12-31T23:59:00Z", "1970-12-31T23:59:00Z"},
        {"0 0 1 1 *", "9998-06-01T00:00:00Z", "9999-01-01T00:00:00Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_runs(cases[i].schedule, NULL, cases[i].after, RUNS(cases[i].want));

    check_runs("0 0 29 2 *", "UTC", "2023-01-01T00:00:00Z",
               RUNS("2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"));
    check_runs("0 22 * * 1-5", NULL, "2026-03-12T12:00:00Z",
               RUNS("2026-03-12T22:00:00Z", "2026-03-13T22:00:00Z", "2026-03-16T22:00:00Z"));
}

static void test_parse_masks(void **state)
{
    (void)state;
    bt_cron c = parse_ok("0,30 */20 1-3 2 jan,DEC 1-7");
    assert_true(c.sec == (1ULL << 0 | 1ULL << 30));
    assert_true(c.min == (1ULL << 0 | 1ULL << 20 | 1ULL << 40));
    assert_int_equal(c.hour, 0xe);
    assert_int_equal(c.dom, 1 << 2);
    assert_int_equal(c.mon, 1 << 1 | 1 << 12);
    assert_int_equal(c.dow, 0x7f); /* 7 is Sunday, bit 0 */
    assert_int_equal(c.flags, 0);
    assert_string_equal(c.text, "0,30 */20 1-3 2 jan,DEC 1-7");

    c = parse_ok("15 10 * * *");
    assert_int_equal(c.sec, 1); /* five fields run at second 0 */
    assert_int_equal(c.dom, 0xfffffffe);
    assert_int_equal(c.mon, 0x1ffe);

    c = parse_ok(" @Weekly ");
    assert_string_equal(c.text, "@Weekly");
    assert_int_equal(c.dow, 1);
    assert_int_equal(c.flags, BT_CRON_DOM_STAR);

    c = parse_ok("0 0 */2 * *");
    assert_int_equal(c.flags, BT_CRON_DOM_STAR | BT_CRON_DOW_STAR);
    c = parse_ok("0 0 1-31 * 0-7");
    assert_int_equal(c.flags, 0);
    assert_int_equal(c.dow, 0x7f);
}

/* The field search against the obvious method: try every minute, reading the calendar
 * with gmtime_r. Schedules here run at least every few weeks to keep the walk short. */
static int brute_matches(const bt_cron *c, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (!(c->min >> tm.tm_min & 1) || !(c->hour >> tm.tm_hour & 1) ||
        !(c->mon >> (tm.tm_mon + 1) & 1))
        return 0;
    int dom = c->dom >> tm.tm_mday & 1, dow = c->dow >> tm.tm_wday & 1;
    return (c->flags & (BT_CRON_DOM_STAR | BT_CRON_DOW_STAR)) ? dom && dow : dom || dow;
}

static void test_next_against_brute_force(void **state)
{
    (void)state;
    static const char *const schedules[] = {
        "* * * * *",        "*/7 * * * *",    "13 */5 * * *",   "0 0 * * *",
        "30 9 * * mon-fri", "0 0 13 * fri",   "0 0 */3 * sun",  "15 4 29-31 * *",
        "0 12 1,15 * *",    "5-10/2 22 * * 6", "0 0 * * 0,7",   "45 23 28-31 * 1",
    };
    uint64_t seed = 42;
    for (size_t s = 0; s < sizeof schedules / sizeof *schedules; s++) {
        bt_cron c = parse_ok(schedules[s]);
        for (int n = 0; n < 20; n++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            /* Between 1960 and 2100, at any second. */
            int64_t after = -315619200 + (int64_t)(seed >> 33) % 4417977600;
            int64_t next;
            if (bt_cron_next(&c, NULL, after * 1000 + 500, &next) != BATON_OK)
                fail_msg("\"%s\": %s", schedules[s], baton_error_last());
            int64_t t = bt_floor_div(after, 60) * 60 + 60;
            while (!brute_matches(&c, t))
                t += 60;
            if (next != t * 1000)
                fail_msg("\"%s\" after %lld: got %lld, want %lld", schedules[s],
                         (long long)after, (long long)next / 1000, (long long)t);
        }
    }
}

static void test_never_matches(void **state)
{
    (void)state;
    static const char *const impossible[] = {"0 0 31 2 *", "0 0 30 2 *", "* * 31 4,6,9,11 *"};
    for (size_t i = 0; i < sizeof impossible / sizeof *impossible; i++) {
        bt_cron c = parse_ok(impossible[i]);
        int64_t next = -1;
        assert_int_equal(bt_cron_next(&c, NULL, ms_of("2026-01-01T00:00:00Z"), &next),
                         BATON_EINVALID);
        char want[128];
        snprintf(want, sizeof want, "schedule \"%s\" never matches", impossible[i]);
        assert_string_equal(baton_error_last(), want);
        assert_int_equal(next, -1);
    }
    bt_cron c = parse_ok("* * * * *");
    int64_t next;
    assert_int_equal(bt_cron_next(&c, NULL, ms_of("9999-12-31T23:59:59.999Z") + 1, &next),
                     BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "outside the years 1-9999"));
}

static void test_bad_schedules(void **state)
{
    (void)state;
    static const struct {
        const char *text, *says; /* says follows "invalid schedule \"TEXT\": " */
    } cases[] = {
        {"61 * * * *", "minute: 61 is out of range 0-59"},
        {"* x * * *", "hour: \"x\" is not a number"},
        {"* * *", "expected 5 or 6 fields, got 3"},
        {"", "expected 5 or 6 fields, got 0"},
        {"   ", "expected 5 or 6 fields, got 0"},
        {"* * * * * * *", "expected 5 or 6 fields, got 7"},
        {"@often", "unknown macro @often"},
        {"@reboot", "unknown macro @reboot"},
        {"@daily *", "@daily takes no fields"},
        {"60 * * * * *", "second: 60 is out of range 0-59"},
        {"* 24 * * *", "hour: 24 is out of range 0-23"},
        {"* * 0 * *", "day-of-month: 0 is out of range 1-31"},
        {"* * 32 * *", "day-of-month: 32 is out of range 1-31"},
        {"* * * 13 *", "month: 13 is out of range 1-12"},
        {"* * * 0 *", "month: 0 is out of range 1-12"},
        {"* * * foo *", "month: \"foo\" is not a number or month name"},
        {"* * * jan-dex *", "month: \"dex\" is not a number or month name"},
        {"* * * * 8", "day-of-week: 8 is out of range 0-7"},
        {"* * * * funday", "day-of-week: \"funday\" is not a number or weekday name"},
        {"mon * * * *", "minute: \"mon\" is not a number"},
        {"5x * * * *", "minute: \"5x\" is not a number"},
        {"99999999999 * * * *", "minute: 99999999999 is out of range 0-59"},
        {"*/0 * * * *", "minute: step 0 is out of range 1-60"},
        {"*/61 * * * *", "minute: step 61 is out of range 1-60"},
        {"* */25 * * *", "hour: step 25 is out of range 1-24"},
        {"* * * * */8", "day-of-week: step 8 is out of range 1-7"},
        {"*/x * * * *", "minute: step \"x\" is not a number"},
        {"* 5-1 * * *", "hour: range 5-1 is reversed"},
        {"* * * * fri-mon", "day-of-week: range fri-mon is reversed"},
        {"1,,2 * * * *", "minute: empty item in \"1,,2\""},
        {"1, * * * *", "minute: empty item in \"1,\""},
        {"* * ,1 * *", "day-of-month: empty item in \",1\""},
        {"5- * * * *", "minute: missing value in \"5-\""},
        {"*/ * * * *", "minute: missing step in \"*/\""},
        {"*/5/2 * * * *", "minute: unexpected \"/2\" in \"*/5/2\""},
        {"*-5 * * * *", "minute: unexpected \"-5\" in \"*-5\""},
        {"1-2-3 * * * *", "minute: unexpected \"-3\" in \"1-2-3\""},
        {"? * * * *", "minute: unexpected \"?\" in \"?\""},
        {"* * L * *", "day-of-month: \"L\" is not a number"},
        {"* * * * 5#3", "day-of-week: unexpected \"#3\" in \"5#3\""},
        {"-5 * * * *", "minute: unexpected \"-5\" in \"-5\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bt_cron c = {.sec = 7};
        int rc = bt_cron_parse(cases[i].text, &c);
        char want[512];
        /* The message quotes the text with its whitespace collapsed. */
        snprintf(want, sizeof want, "invalid schedule \"%s\": %s",
                 strcmp(cases[i].text, "   ") ? cases[i].text : "", cases[i].says);
        if (rc != BATON_EINVALID || strcmp(baton_error_last(), want) != 0)
            fail_msg("case %zu: rc %d, message\n  \"%s\", want\n  \"%s\"", i, rc,
                     baton_error_last(), want);
        assert_int_equal(c.sec, 7); /* untouched */
    }

    char longer[200];
    memset(longer, '1', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    bt_cron c;
    assert_int_equal(bt_cron_parse(longer, &c), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "longer than 127 characters"));
}

static void test_zones(void **state)
{
    (void)state;
    /* Europe/Berlin: CET (+1) in winter, CEST (+2) in summer. */
    check_runs("0 3 * * *", "Europe/Berlin", "2026-01-15T00:00:00Z", RUNS("2026-01-15T02:00:00Z"));
    check_runs("0 3 * * *", "Europe/Berlin", "2026-07-15T00:00:00Z", RUNS("2026-07-15T01:00:00Z"));
    /* Clocks go 02:00 -> 03:00 on 2026-03-29 and 03:00 -> 02:00 on 2026-10-25. */
    check_runs("0 3 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z",
               RUNS("2026-03-28T02:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"));

    /* America/New_York springs forward at 2026-03-08 07:00Z (02:00 EST -> 03:00 EDT):
     * 02:30 does not exist that day and runs at the jump, 03:00 EDT. */
    check_runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
               RUNS("2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"));
    /* The skipped hour's times all run once at the jump, then the clock goes on. */
    check_runs("*/20 * * * *", "America/New_York", "2026-03-08T06:30:00Z",
               RUNS("2026-03-08T06:40:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:20:00Z"));
    check_runs("0 3 * * *", "America/New_York", "2026-03-08T06:00:00Z",
               RUNS("2026-03-08T07:00:00Z", "2026-03-09T07:00:00Z"));

    /* It falls back at 2026-11-01 06:00Z (02:00 EDT -> 01:00 EST): 01:30 happens twice and
     * runs once, at the first (05:30Z); the next run is the next day's 01:30 EST. */
    check_runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
               RUNS("2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"));
    /* Asked from inside the repeated hour, the repeated times are not run again. */
    check_runs("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z",
               RUNS("2026-11-02T06:30:00Z"));
    check_runs("*/30 * * * *", "America/New_York", "2026-11-01T04:45:00Z",
               RUNS("2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z",
                    "2026-11-01T07:30:00Z"));
    check_runs("0 2 * * *", "America/New_York", "2026-10-31T12:00:00Z",
               RUNS("2026-11-01T07:00:00Z", "2026-11-02T07:00:00Z"));

    /* 2100 is beyond Berlin's table: the footer rule M3.5.0,M10.5.0/3 gives the changes on
     * 2100-03-28 and 2100-10-31. */
    check_runs("0 3 * * *", "Europe/Berlin", "2100-01-10T00:00:00Z", RUNS("2100-01-10T02:00:00Z"));
    check_runs("0 3 * * *", "Europe/Berlin", "2100-07-01T00:00:00Z", RUNS("2100-07-01T01:00:00Z"));
    check_runs("30 2 * * *", "Europe/Berlin", "2100-03-27T12:00:00Z",
               RUNS("2100-03-28T01:00:00Z", "2100-03-29T00:30:00Z"));
    check_runs("30 2 * * *", "Europe/Berlin", "2100-10-30T12:00:00Z",
               RUNS("2100-10-31T00:30:00Z", "2100-11-01T01:30:00Z"));
    /* The southern hemisphere's rule spans the new year (AEDT from October to April). */
    check_runs("0 12 1 * *", "Australia/Sydney", "2200-01-15T00:00:00Z",
               RUNS("2200-02-01T01:00:00Z", "2200-03-01T01:00:00Z", "2200-04-01T01:00:00Z",
                    "2200-05-01T02:00:00Z"));

    /* Half-hour offsets. */
    check_runs("0 9 * * *", "Asia/Kolkata", "2026-03-14T00:00:00Z", RUNS("2026-03-14T03:30:00Z"));
    check_runs("30 * * * *", "Asia/Kolkata", "2026-03-14T00:10:00Z",
               RUNS("2026-03-14T01:00:00Z", "2026-03-14T02:00:00Z"));
    /* A day boundary in the zone, not in UTC: 23:30 on 2026-03-14 in Kolkata is 18:00Z. */
    check_runs("30 23 14 3 *", "Asia/Kolkata", "2026-01-01T00:00:00Z",
               RUNS("2026-03-14T18:00:00Z"));

    assert_string_equal(bt_tz_name(zone_ok("Europe/Berlin")), "Europe/Berlin");
    assert_ptr_equal(zone_ok("Europe/Berlin"), zone_ok("Europe/Berlin")); /* cached */
    assert_ptr_equal(zone_ok(NULL), bt_tz_utc());
    assert_ptr_equal(zone_ok("UTC"), bt_tz_utc());
    assert_string_equal(bt_tz_name(bt_tz_utc()), "UTC");
    assert_int_equal(bt_tz_offset(zone_ok("Asia/Kolkata"), 0), 19800);
}

/* Around daylight-saving changes, against a walk over every minute: the wall times that run
 * at instant u are those shown at u and never before, i.e. above `top`, the latest wall
 * time shown before u (tracked from three hours earlier, longer than these zones repeat). */
static int64_t brute_next_in_zone(const bt_cron *c, const bt_tz *tz, int64_t after)
{
    int64_t top = INT64_MIN;
    for (int64_t u = after - 3 * 3600;; u += 60) {
        int64_t wall = u + bt_tz_offset(tz, u);
        for (int64_t w = top == INT64_MIN ? wall : top + 60; u > after && w <= wall; w += 60)
            if (brute_matches(c, w))
                return u;
        if (wall > top)
            top = wall;
    }
}

static void test_next_in_zones_against_brute_force(void **state)
{
    (void)state;
    static const char *const zones[] = {
        "America/New_York", "Europe/Berlin",   "Australia/Sydney", "Europe/Dublin",
        "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago", "America/Nuuk",
    };
    static const char *const schedules[] = {"* * * * *", "*/20 * * * *", "30 2 * * *",
                                            "15,45 0-3 * * *"};
    static const int years[] = {2026, 2090}; /* from the table, and from the footer rule */
    for (size_t z = 0; z < sizeof zones / sizeof *zones; z++) {
        const bt_tz *tz = zone_ok(zones[z]);
        for (size_t y = 0; y < sizeof years / sizeof *years; y++) {
            int64_t t = bt_days_from_civil(years[y], 1, 1) * 86400;
            int64_t end = bt_days_from_civil(years[y] + 1, 1, 1) * 86400;
            int changes = 0;
            for (; t < end; t += 900) {
                if (bt_tz_offset(tz, t) == bt_tz_offset(tz, t + 900))
                    continue;
                changes++;
                /* Starts from three hours before the change to three hours after it. */
                for (int64_t after = t - 3 * 3600; after < t + 3 * 3600; after += 37 * 60)
                    for (size_t s = 0; s < sizeof schedules / sizeof *schedules; s++) {
                        bt_cron c = parse_ok(schedules[s]);
                        int64_t next, want = brute_next_in_zone(&c, tz, after);
                        assert_int_equal(bt_cron_next(&c, tz, after * 1000, &next), BATON_OK);
                        if (next != want * 1000)
                            fail_msg("\"%s\" in %s after %lld: got %lld, want %lld", schedules[s],
                                     zones[z], (long long)after, (long long)next / 1000,
                                     (long long)want);
                    }
            }
            assert_int_equal(changes, 2);
        }
    }
}

static void test_bad_zones(void **state)
{
    (void)state;
    static const struct {
        const char *name, *says;
    } cases[] = {
        {"Mars/Base", "unknown time zone \"Mars/Base\""},
        {"Europe", "unknown time zone \"Europe\""},          /* a directory */
        {"zone.tab", "unknown time zone \"zone.tab\""},      /* not a TZif file */
        {"Europe/Berlin/x", "unknown time zone \"Europe/Berlin/x\""},
        {"", "invalid time zone name \"\""},
        {"../zoneinfo/UTC", "invalid time zone name \"../zoneinfo/UTC\""},
        {"Europe/../UTC", "invalid time zone name \"Europe/../UTC\""},
        {"/etc/localtime", "invalid time zone name \"/etc/localtime\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bt_tz *tz = bt_tz_utc();
        assert_int_equal(bt_tz_load(cases[i].name, &tz), BATON_EINVALID);
        assert_string_equal(baton_error_last(), cases[i].says);
        assert_null(tz);
    }

    /* Every zone, even one already loaded from the usual directory, comes from TZDIR. */
    zone_ok("Europe/Berlin");
    char *empty = strdup(path_join(dir, "empty"));
    assert_int_equal(mkdir(empty, 0755), 0);
    setenv("TZDIR", empty, 1);
    const bt_tz *tz;
    assert_int_equal(bt_tz_load("Europe/Berlin", &tz), BATON_EINVALID);
    assert_string_equal(baton_error_last(), "unknown time zone \"Europe/Berlin\"");
    assert_ptr_equal(zone_ok("UTC"), bt_tz_utc()); /* built in */
    restore_tzdir();
    zone_ok("Europe/Berlin");
    free(empty);
}

/* ---- hand-made TZif files ---- */

typedef struct tzif_spec {
    char version;          /* '\0' for version 1, or '2', '3' */
    int ntrans;
    int64_t trans[4];
    uint8_t idx[4];
    int ntypes;
    int32_t off[4];
    int leap;              /* adds one leap second record */
    const char *footer;    /* versions 2+ */
} tzif_spec;

static unsigned char *put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

static unsigned char *put_block(unsigned char *p, const tzif_spec *s, int timesize)
{
    memcpy(p, "TZif", 4);
    p[4] = (unsigned char)s->version;
    memset(p + 5, 0, 15);
    p += 20;
    uint32_t counts[6] = {0, 0, (uint32_t)s->leap, (uint32_t)s->ntrans, (uint32_t)s->ntypes, 4};
    for (int i = 0; i < 6; i++)
        p = put32(p, counts[i]);
    for (int i = 0; i < s->ntrans; i++) {
        if (timesize == 8)
            p = put32(p, (uint32_t)((uint64_t)s->trans[i] >> 32));
        p = put32(p, (uint32_t)s->trans[i]);
    }
    for (int i = 0; i < s->ntrans; i++)
        *p++ = s->idx[i];
    for (int i = 0; i < s->ntypes; i++) {
        p = put32(p, (uint32_t)s->off[i]);
        *p++ = 0; /* isdst */
        *p++ = 0; /* abbreviation index */
    }
    memcpy(p, "ZZZ", 4);
    p += 4;
    if (s->leap) {
        memset(p, 0, (size_t)timesize + 4);
        p += timesize + 4;
    }
    return p;
}

static void write_tzif(const char *name, const tzif_spec *s)
{
    unsigned char buf[1024], *p = put_block(buf, s, 4);
    if (s->version) {
        p = put_block(p, s, 8);
        p += sprintf((char *)p, "\n%s\n", s->footer);
    }
    FILE *f = fopen(path_join(dir, name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, (size_t)(p - buf), f), (size_t)(p - buf));
    fclose(f);
}

static void test_tzif_files(void **state)
{
    (void)state;
    /* Version 1: 32-bit times and no footer, so the last offset holds for ever. */
    write_tzif("v1", &(tzif_spec){.ntrans = 2, .trans = {0, 1000000000}, .idx = {1, 0},
                                  .ntypes = 2, .off = {7200, 3600}});
    /* Version 2 without transitions: the footer rule covers all time. */
    write_tzif("rule", &(tzif_spec){.version = '2', .ntypes = 1, .off = {-18000},
                                    .footer = "EST5EDT,M3.2.0,M11.1.0"});
    write_tzif("fixed", &(tzif_spec){.version = '3', .ntypes = 1, .off = {10800},
                                     .footer = "<+03>-3"});
    write_tzif("julian", &(tzif_spec){.version = '2', .ntypes = 1, .off = {0},
                                      .footer = "XST0XDT-1,J60/0,300/0"});
    write_tzif("leap", &(tzif_spec){.version = '2', .ntypes = 1, .off = {0}, .leap = 1,
                                    .footer = "UTC0"});
    write_tzif("badrule", &(tzif_spec){.version = '2', .ntypes = 1, .off = {0},
                                       .footer = "EST5EDT"});
    write_tzif("badtype", &(tzif_spec){.version = '2', .ntrans = 1, .trans = {0}, .idx = {3},
                                       .ntypes = 1, .off = {0}, .footer = ""});
    write_file(path_join(dir, "short"), "TZif2");
    setenv("TZDIR", dir, 1);

    const bt_tz *v1 = zone_ok("v1");
    assert_int_equal(bt_tz_offset(v1, -1), 7200); /* type 0 before the first transition */
    assert_int_equal(bt_tz_offset(v1, 0), 3600);
    assert_int_equal(bt_tz_offset(v1, 999999999), 3600);
    assert_int_equal(bt_tz_offset(v1, 1000000000), 7200);
    assert_int_equal(bt_tz_offset(v1, 4000000000), 7200);
    /* The clocks went back an hour at 0: wall -1800 (23:30 on 1969-12-31) first happened
     * at -9000 on the old offset. */
    assert_int_equal(bt_tz_wall_to_utc(v1, -1800), -9000);

    check_runs("30 2 * * *", "rule", "2026-03-07T12:00:00Z",
               RUNS("2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"));
    check_runs("0 0 * * *", "fixed", "2026-03-14T12:00:00Z", RUNS("2026-03-14T21:00:00Z"));
    const bt_tz *julian = zone_ok("julian");
    /* J60 is March 1st in every year; day 300 counts from 0 and includes Feb 29. */
    int64_t mar1 = bt_days_from_civil(2028, 3, 1) * 86400;
    int64_t oct27 = bt_days_from_civil(2028, 10, 27) * 86400;
    assert_int_equal(bt_tz_offset(julian, mar1 - 1), 0);
    assert_int_equal(bt_tz_offset(julian, mar1), 3600);
    assert_int_equal(bt_tz_offset(julian, oct27 - 3601), 3600);
    assert_int_equal(bt_tz_offset(julian, oct27 - 3600), 0);

    static const struct {
        const char *name, *says;
    } broken[] = {
        {"leap", "it counts leap seconds, which is not supported"},
        {"badrule", "unsupported TZ rule in the footer"},
        {"badtype", "transition to an undefined local time type"},
        {"short", "truncated"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
        const bt_tz *tz;
        char want[4200];
        snprintf(want, sizeof want, "time zone \"%s\": %s: %s", broken[i].name,
                 path_join(dir, broken[i].name), broken[i].says);
        assert_int_equal(bt_tz_load(broken[i].name, &tz), BATON_ERROR);
        assert_string_equal(baton_error_last(), want);
    }
    restore_tzdir();
}

/* ---- every installed zone against the C library ---- */

static long zones_checked;

static int check_zone_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    const char *name = path + strlen(zoneinfo_dir()) + 1;
    if (type != FTW_F || !strncmp(name, "right/", 6) || !strncmp(name, "posix/", 6))
        return 0;
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    if (f) {
        if (fread(magic, 1, 4, f) != 4)
            magic[0] = 0;
        fclose(f);
    }
    if (memcmp(magic, "TZif", 4) != 0)
        return 0;
    const bt_tz *tz = zone_ok(name);
    char tzvar[4200];
    snprintf(tzvar, sizeof tzvar, ":%s", path);
    setenv("TZ", tzvar, 1);
    tzset();
    /* 1900 to 2150, at odd times of day so that every hour is seen. */
    for (int64_t t = -2208988800; t < 5680281600; t += 37 * 86400 + 3593) {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        int32_t off = bt_tz_offset(tz, t);
        if (off != tm.tm_gmtoff)
            fail_msg("%s at %lld: offset %d, the C library says %ld", name, (long long)t, off,
                     tm.tm_gmtoff);
        /* The first instant showing each wall time: shows it or later, the one before less. */
        int64_t wall = t + off + 1800, u = bt_tz_wall_to_utc(tz, wall);
        if (u + bt_tz_offset(tz, u) < wall || u - 1 + bt_tz_offset(tz, u - 1) >= wall)
            fail_msg("%s: wall %lld gave %lld", name, (long long)wall, (long long)u);
    }
    zones_checked++;
    return 0;
}

static void test_all_zones_agree_with_libc(void **state)
{
    (void)state;
    const char *tz = getenv("TZ");
    char *saved_tz = tz ? strdup(tz) : NULL;
    assert_int_equal(nftw(zoneinfo_dir(), check_zone_file, 16, FTW_PHYS), 0);
    if (saved_tz)
        setenv("TZ", saved_tz, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved_tz);
    assert_true(zones_checked > 300);
}

/* ---- threads ---- */

enum { NTHREADS = 4, NRUNS = 12 };

static const char *const thread_zones[] = {
    "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney",
    "America/Sao_Paulo", "Pacific/Chatham", "Europe/Dublin", "Asia/Tokyo",
};
#define NZONES (sizeof thread_zones / sizeof *thread_zones)

typedef struct worker {
    int index;
    pthread_barrier_t *start;
    const bt_tz *zones[NZONES];
    int64_t runs[NZONES][NRUNS];
    char error[256];
} worker;

/* The first NRUNS runs in zone tz from 2026-03-01 of a schedule every 37 minutes of the
 * hours 1 to 3, the hours daylight-saving changes pick. */
static int runs_in(const bt_tz *tz, int64_t *runs)
{
    bt_cron c;
    if (bt_cron_parse("*/37 1-3 * * *", &c) != BATON_OK)
        return -1;
    int64_t from = 1772323200000; /* 2026-03-01T00:00:00Z */
    for (int i = 0; i < NRUNS; i++) {
        if (bt_cron_next(&c, tz, from, &runs[i]) != BATON_OK)
            return -1;
        from = runs[i];
    }
    return 0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (size_t k = 0; k < NZONES && !w->error[0]; k++) {
        size_t z = (k + (size_t)w->index) % NZONES; /* each thread in its own order */
        if (bt_tz_load(thread_zones[z], &w->zones[z]) != BATON_OK ||
            runs_in(w->zones[z], w->runs[z]) != 0)
            snprintf(w->error, sizeof w->error, "%s: %s", thread_zones[z], baton_error_last());
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    /* Through a link the zone files have new paths, so the threads load them afresh. */
    char *link = strdup(path_join(dir, "zoneinfo"));
    assert_int_equal(symlink(zoneinfo_dir(), link), 0);
    setenv("TZDIR", link, 1);
    static worker workers[NTHREADS];
    pthread_t threads[NTHREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++) {
        workers[i] = (worker){.index = i, .start = &start};
        assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    restore_tzdir();

    for (size_t z = 0; z < NZONES; z++) {
        int64_t want[NRUNS];
        assert_int_equal(runs_in(zone_ok(thread_zones[z]), want), 0);
        for (int i = 0; i < NTHREADS; i++) {
            if (workers[i].error[0])
                fail_msg("thread %d: %s", i, workers[i].error);
            assert_ptr_equal(workers[i].zones[z], workers[0].zones[z]); /* loaded once */
            assert_ptr_not_equal(workers[i].zones[z], zone_ok(thread_zones[z]));
            assert_memory_equal(workers[i].runs[z], want, sizeof want);
        }
    }
    free(link);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_utc),
        cmocka_unit_test(test_parse_masks),
        cmocka_unit_test(test_next_against_brute_force),
        cmocka_unit_test(test_never_matches),
        cmocka_unit_test(test_bad_schedules),
        cmocka_unit_test(test_zones),
        cmocka_unit_test(test_next_in_zones_against_brute_force),
        cmocka_unit_test(test_bad_zones),
        cmocka_unit_test(test_tzif_files),
        cmocka_unit_test(test_all_zones_agree_with_libc),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
