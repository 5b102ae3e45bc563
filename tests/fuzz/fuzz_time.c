/* fuzz_time: ISO 8601 times (`baton enqueue --at`, baton_parse_time). A time that parses
 * prints as a time that parses back to the same instant. */
#include "fuzz.h"
#include "util/clock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    int64_t ms = 0, again = 0;
    int rc = baton_parse_time(text, &ms);
    FUZZ_CHECK((rc == BATON_OK) == (bt_parse_iso8601(text, &again) == 0));
    if (rc != BATON_OK) {
        fuzz_check_message();
    } else {
        FUZZ_CHECK(again == ms);
        char printed[BT_ISO_LEN];
        bt_iso8601(ms, printed);
        /* Years 0-9999 print in four digits; an offset can move a time outside them. */
        if (printed[0] >= '0' && printed[0] <= '9' && printed[4] == '-') {
            FUZZ_CHECK(bt_parse_iso8601(printed, &again) == 0);
            FUZZ_CHECK(again == ms);
        }
    }
    free(text);
    return 0;
}
