/* schedule.c: users enrolled in courses with weekly meetings, all derived from a seed so
 * every run (and every process of a run) computes the same expected calendars. */
#include <stdio.h>

#include "calendar_sync.h"

enum { CATALOG_SIZE = 24, TERM_WEEKS = 14 };

static const char *const course_names[CATALOG_SIZE] = {
    "Calculus 1A", "Calculus 1B", "Linear Algebra", "Discrete Mathematics", "Physics I",
    "Physics II", "General Chemistry", "Organic Chemistry", "Biology", "Genetics",
    "Microeconomics", "Macroeconomics", "Statistics", "Probability", "Algorithms",
    "Operating Systems", "Databases", "Compilers", "World History", "Philosophy",
    "Psychology", "Sociology", "Spanish I", "Academic Writing"};

static const char *const weekday_names[5] = {"MO", "TU", "WE", "TH", "FR"};

/* mix is a small integer hash (splitmix-style): deterministic and well spread. */
static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

int schedule_for_user(uint32_t seed, int user_id, course_meeting *out, int max)
{
    uint32_t h = mix(seed ^ mix((uint32_t)user_id));
    int courses = 1 + (int)(h % 4);
    int first_course = (int)(mix(h) % CATALOG_SIZE);
    int n = 0;
    for (int c = 0; c < courses; c++) {
        /* Consecutive catalog entries keep a user's courses distinct. */
        int course = (first_course + c * 5) % CATALOG_SIZE;
        uint32_t ch = mix(seed + (uint32_t)course * 7919U);
        int meetings = 2 + (int)(ch % 2);
        int hour = 8 + (int)(mix(ch) % 9);
        for (int m = 0; m < meetings && n < max; m++, n++) {
            int weekday = (int)((ch / 3 + (uint32_t)m * 2) % 5);
            /* The term starts on Monday 2026-01-12; day 12 + weekday is that week's day. */
            snprintf(out[n].uid, sizeof out[n].uid, "course-%d-meeting-%d", course, m);
            snprintf(out[n].json, sizeof out[n].json,
                     "{\"iCalUID\":\"%s\",\"summary\":\"%s\","
                     "\"start\":{\"dateTime\":\"2026-01-%02dT%02d:00:00\",\"timeZone\":\"UTC\"},"
                     "\"end\":{\"dateTime\":\"2026-01-%02dT%02d:30:00\",\"timeZone\":\"UTC\"},"
                     "\"recurrence\":[\"RRULE:FREQ=WEEKLY;BYDAY=%s;COUNT=%d\"]}",
                     out[n].uid, course_names[course], 12 + weekday, hour, 12 + weekday,
                     hour + 1, weekday_names[weekday], TERM_WEEKS);
        }
    }
    return n;
}
