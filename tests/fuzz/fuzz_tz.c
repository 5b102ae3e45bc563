/* fuzz_tz: TZif zone files (the tz database a recurring task's timezone names). A file
 * that loads gives offsets within 26 hours, and wall times map to instants that never go
 * back as the wall time goes forward. The input's first sixteen bytes choose two wall
 * times; the rest is the file. */
#include "fuzz.h"
#include "sched/tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t walls[2] = {0, 0};
    size_t skip = size < sizeof walls ? size : sizeof walls;
    memcpy(walls, data, skip);
    bt_tz *z = NULL;
    if (bt_tz_parse(data + skip, size - skip, "Fuzz/Zone", "fuzz", &z) != BATON_OK) {
        FUZZ_CHECK(!z);
        fuzz_check_message();
        return 0;
    }
    /* Within 10,000 years either side of 1970, as the scheduler asks. */
    const int64_t span = INT64_C(315569520000);
    for (int i = 0; i < 2; i++)
        walls[i] %= span;
    if (walls[0] > walls[1]) {
        int64_t t = walls[0];
        walls[0] = walls[1];
        walls[1] = t;
    }
    int64_t first = bt_tz_wall_to_utc(z, walls[0]), second = bt_tz_wall_to_utc(z, walls[1]);
    FUZZ_CHECK(first <= second);
    for (int i = 0; i < 2; i++) {
        int32_t off = bt_tz_offset(z, walls[i]);
        FUZZ_CHECK(off >= -26 * 3600 && off <= 26 * 3600);
    }
    FUZZ_CHECK(!strcmp(bt_tz_name(z), "Fuzz/Zone"));
    free(z);
    return 0;
}
