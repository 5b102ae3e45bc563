// ctest-labels: sqlite
/* test_calendar_demo.c: the calendar-sync demo (examples/calendar_sync) at a small size, on
 * a fresh database of the driver under test. The race must be real without a limit, and
 * gone with it: no duplicates, one sync per user at a time, every calendar exactly its
 * schedule, users still synced in parallel. A worker stopped mid-write and declared dead
 * must have its stale writes refused. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* run_demo runs the demo binary with --json and the given flags on a fresh database and
 * returns its runs. */
static json_t *run_demo(const char *flags)
{
    const char *demo = getenv("BATON_CALENDAR_DEMO");
    assert_non_null(demo);
    char *dir = tmpdir_make();
    char url[4200], command[9000];
    test_db_create(url, sizeof url, dir, "calendar");
    snprintf(command, sizeof command, "'%s' --json --db '%s' %s", demo, url, flags);
    FILE *out = popen(command, "r");
    assert_non_null(out);
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    size_t n;
    while ((n = fread(text + len, 1, cap - len - 1, out)) > 0) {
        len += n;
        if (len + 1 == cap)
            text = realloc(text, cap *= 2);
    }
    text[len] = '\0';
    int status = pclose(out);
    test_db_drop(url);
    tmpdir_remove(dir);
    assert_int_equal(status, 0);
    json_error_t error;
    json_t *doc = json_loads(text, 0, &error);
    if (!doc)
        fail_msg("demo output is not JSON (%s): %s", error.text, text);
    free(text);
    json_t *runs = json_incref(json_object_get(doc, "runs"));
    json_decref(doc);
    assert_true(json_is_array(runs));
    return runs;
}

static json_t *run_of_mode(json_t *runs, const char *mode)
{
    size_t i;
    json_t *run;
    json_array_foreach(runs, i, run)
    {
        if (strcmp(json_string_value(json_object_get(run, "mode")), mode) == 0)
            return run;
    }
    fail_msg("no %s run", mode);
    return NULL;
}

static long long field(json_t *run, const char *name)
{
    json_t *value = json_object_get(run, name);
    if (!json_is_integer(value))
        fail_msg("run has no integer %s", name);
    return json_integer_value(value);
}

static void test_the_limit_removes_the_duplicates_the_race_creates(void **state)
{
    (void)state;
    json_t *runs = run_demo("--users 16 --latency 20-40");
    assert_int_equal(json_array_size(runs), 3);

    json_t *unlimited = run_of_mode(runs, "unlimited");
    assert_true(field(unlimited, "duplicates") > 0);
    assert_true(field(unlimited, "max_concurrent_per_user") > 1);

    json_t *limit = run_of_mode(runs, "limit");
    assert_int_equal(field(limit, "duplicates"), 0);
    assert_int_equal(field(limit, "mismatched_calendars"), 0);
    assert_int_equal(field(limit, "max_concurrent_per_user"), 1);
    assert_true(field(limit, "max_parallel_users") >= 2);
    assert_int_equal(field(limit, "jobs_run"), field(limit, "triggers"));

    json_t *coalesce = run_of_mode(runs, "coalesce");
    assert_int_equal(field(coalesce, "duplicates"), 0);
    assert_int_equal(field(coalesce, "mismatched_calendars"), 0);
    assert_true(field(coalesce, "max_concurrent_per_user") <= 1);
    assert_true(field(coalesce, "max_parallel_users") >= 2);
    assert_true(field(coalesce, "jobs_run") < field(coalesce, "triggers"));
    assert_true(field(coalesce, "api_calls") < field(limit, "api_calls"));
    json_decref(runs);
}

static void test_a_paused_hosts_stale_write_is_refused(void **state)
{
    (void)state;
    json_t *runs = run_demo("--users 16 --latency 20-40 --paused-host");
    assert_int_equal(json_array_size(runs), 1);
    json_t *paused = run_of_mode(runs, "limit");
    assert_true(json_is_true(json_object_get(paused, "paused_host")));
    assert_true(field(paused, "rejected_writes") > 0);
    assert_true(field(paused, "stale_runs") > 0);
    assert_int_equal(field(paused, "duplicates"), 0);
    assert_int_equal(field(paused, "mismatched_calendars"), 0);
    json_decref(runs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_limit_removes_the_duplicates_the_race_creates),
        cmocka_unit_test(test_a_paused_hosts_stale_write_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
