/* fuzz_cron: recurring schedules. A schedule that parses has a next run strictly after any
 * time, on a whole second, in UTC and in a zone with daylight-saving changes; one refused
 * is refused with one line; one the configuration accepts always runs again. The input's first eight bytes choose the time to start from. */
#include "fuzz.h"
#include "config/config.h"
#include "sched/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0;
    size_t skip = size < 8 ? size : 8;
    memcpy(&seed, data, skip);
    char *text = fuzz_text(data + skip, size - skip);
    bt_cron c;
    int rc = bt_cron_parse(text, &c);
    if (rc != BATON_OK) {
        fuzz_check_message();
        FUZZ_CHECK(bt_schedule_parse(text, &c) != BATON_OK);
        free(text);
        return 0;
    }
    static const bt_tz *berlin;
    if (!berlin && bt_tz_load("Europe/Berlin", &berlin) != BATON_OK)
        berlin = bt_tz_utc(); /* no tz database: UTC twice */
    /* From 1970 to 2200, to the millisecond. */
    int64_t after = (int64_t)(seed % (INT64_C(7258118400000)));
    const bt_tz *zones[] = {NULL, berlin};
    int never = 0;
    for (int z = 0; z < 2; z++) {
        int64_t next = 0;
        if (bt_cron_next(&c, zones[z], after, &next) != BATON_OK) {
            fuzz_check_message();
            never = 1;
            continue;
        }
        FUZZ_CHECK(next > after && next % 1000 == 0);
        int64_t then = 0;
        if (bt_cron_next(&c, zones[z], next, &then) == BATON_OK)
            FUZZ_CHECK(then > next && then % 1000 == 0);
    }
    /* A schedule the config accepts runs after any time: the calendar repeats every 400
     * years, and a run skipped by a daylight-saving gap runs at the jump. */
    if (bt_schedule_parse(text, &c) == BATON_OK)
        FUZZ_CHECK(!never);
    else
        fuzz_check_message();
    free(text);
    return 0;
}
