/* test_recurring.c: recurring tasks through the library: the scheduler and recurring
 * sections of baton.yml, good and bad, with their exact messages. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"
#include "config/config.h"
#include "support.h"

/* write_config writes text to DIR/baton.yml and returns that path (a rotating buffer). */
static const char *write_config(const char *dir, const char *text)
{
    const char *path = path_join(dir, "baton.yml");
    write_file(path, text);
    return path;
}

static bt_config *load_ok(const char *dir, const char *text)
{
    bt_config *cfg = NULL;
    if (bt_config_load(write_config(dir, text), &cfg) != BATON_OK)
        fail_msg("load failed: %s", baton_error_last());
    return cfg;
}

/* ---- configuration ---- */

static void test_config_reads_tasks_and_scheduler(void **state)
{
    lib_fixture *f = *state;
    bt_config *cfg = load_ok(f->dir,
        "scheduler:\n"                                                              /* 1 */
        "  polling_interval: 0.5\n"                                                 /* 2 */
        "recurring:\n"                                                              /* 3 */
        "  nightly_full_sync:\n"                                                    /* 4 */
        "    class: GoogleCalendarSyncAllJob\n"                                     /* 5 */
        "    args: { force: true, users: [1, 2.5], note: x, none: ~, word: yes, quoted: \"5\" }\n"
        "    schedule: \"0 3 * * *\"\n"                                             /* 7 */
        "    queue: low\n"                                                          /* 8 */
        "    priority: 5\n"                                                         /* 9 */
        "    timezone: Europe/Berlin\n"                                             /* 10 */
        "    description: Every night\n"                                            /* 11 */
        "  minimal:\n"                                                              /* 12 */
        "    class: Ping\n"                                                         /* 13 */
        "    schedule: \"*/5 * * * *\"\n"                                           /* 14 */
        "  scalar_args:\n"                                                          /* 15 */
        "    class: Ping\n"                                                         /* 16 */
        "    schedule: \"@hourly\"\n"                                               /* 17 */
        "    args: 42\n"                                                            /* 18 */
        "    priority: 0\n"                                                         /* 19 */
        "  list_args:\n"                                                            /* 20 */
        "    class: Ping\n"                                                         /* 21 */
        "    schedule: \"0 0 * * mon\"\n"                                           /* 22 */
        "    args:\n"                                                               /* 23 */
        "      - a\n"                                                               /* 24 */
        "      - { n: -1, flag: False }\n"                                          /* 25 */
        "  null_args:\n"                                                            /* 26 */
        "    class: Ping\n"                                                         /* 27 */
        "    schedule: \"0 0 1 1 *\"\n"                                             /* 28 */
        "    args: ~\n");                                                           /* 29 */
    assert_true(cfg->scheduler_polling_interval == 0.5);
    assert_int_equal(cfg->nrecurring, 5);
    bt_recurring_config *t = &cfg->recurring[0];
    assert_string_equal(t->key, "nightly_full_sync");
    assert_int_equal(t->line, 4);
    assert_string_equal(t->class_name, "GoogleCalendarSyncAllJob");
    assert_string_equal(t->arguments, "{\"force\":true,\"users\":[1,2.5],\"note\":\"x\",\"none\":null,"
                                      "\"word\":\"yes\",\"quoted\":\"5\"}");
    assert_string_equal(t->schedule, "0 3 * * *");
    assert_string_equal(t->queue, "low");
    assert_int_equal(t->has_priority, 1);
    assert_int_equal(t->priority, 5);
    assert_string_equal(t->timezone, "Europe/Berlin");
    assert_string_equal(t->description, "Every night");

    t = &cfg->recurring[1];
    assert_string_equal(t->key, "minimal");
    assert_int_equal(t->line, 12);
    assert_string_equal(t->arguments, "[]");
    assert_null(t->queue);
    assert_int_equal(t->has_priority, 0);
    assert_null(t->timezone);
    assert_null(t->description);

    assert_string_equal(cfg->recurring[2].arguments, "42");
    assert_int_equal(cfg->recurring[2].has_priority, 1);
    assert_int_equal(cfg->recurring[2].priority, 0);
    assert_string_equal(cfg->recurring[3].arguments, "[\"a\",{\"n\":-1,\"flag\":false}]");
    assert_string_equal(cfg->recurring[4].arguments, "[]");
    bt_config_free(cfg);

    cfg = load_ok(f->dir, "jobs: {}\n");
    assert_true(cfg->scheduler_polling_interval == 5);
    assert_int_equal(cfg->nrecurring, 0);
    assert_null(cfg->recurring);
    bt_config_free(cfg);
}

static void test_config_errors_name_file_line_and_key(void **state)
{
    lib_fixture *f = *state;
    static const struct {
        const char *yaml;
        int line;
        const char *says; /* the whole message after "FILE:LINE: " */
    } cases[] = {
        {"scheduler:\n  polling_interval: 0\n", 2,
         "scheduler.polling_interval: must be greater than 0, got 0"},
        {"scheduler:\n  interval: 1\n", 2, "unknown key 'interval' in scheduler"},
        {"scheduler: 5\n", 1, "scheduler: expected a mapping, got '5'"},
        {"recurring: [a]\n", 1, "recurring: expected a mapping, got a list"},
        {"recurring:\n  t: 5\n", 2, "recurring.t: expected a mapping, got '5'"},
        {"recurring:\n  \"\": {}\n", 2, "recurring: task names must not be empty"},
        {"recurring:\n  t:\n    class: A\n", 2, "recurring.t: missing key 'schedule'"},
        {"recurring:\n  t:\n    schedule: \"* * * * *\"\n", 2, "recurring.t: missing key 'class'"},
        {"recurring:\n  t:\n    class: A\n    schedule: \"* * * * *\"\n    cron: x\n", 5,
         "unknown key 'cron' in recurring.t"},
        {"recurring:\n  t:\n    class: A\n    priority: high\n", 4,
         "recurring.t.priority: expected an integer, got 'high'"},
        {"recurring:\n  t:\n    class: A\n    queue: \"\"\n", 4, "recurring.t.queue: must not be empty"},
        {"recurring:\n  t:\n    schedule: [1]\n", 3, "recurring.t.schedule: expected a string, got a list"},
        {"recurring:\n  t:\n    args: { a: 1, a: 2 }\n", 3, "duplicate key 'a' in recurring.t.args"},
        {"recurring:\n  t:\n    args: [1, { [x]: 2 }]\n", 3, "recurring.t.args[1]: keys must be strings"},
        {"recurring:\n  t:\n    args: { a: { b: 1, b: 2 } }\n", 3, "duplicate key 'b' in recurring.t.args.a"},
        {"recurring:\n  t:\n    class: A\n    schedule: \"61 * * * *\"\n", 4,
         "recurring.t.schedule: invalid schedule \"61 * * * *\": minute: 61 is out of range 0-59"},
        {"recurring:\n  t:\n    schedule: \"* * x * *\"\n", 3,
         "recurring.t.schedule: invalid schedule \"* * x * *\": day-of-month: \"x\" is not a number"},
        {"recurring:\n  t:\n    schedule: \"0 0 31 2 *\"\n", 3,
         "recurring.t.schedule: schedule \"0 0 31 2 *\" never matches"},
        {"recurring:\n  t:\n    timezone: Mars/Olympus_Mons\n", 3,
         "recurring.t.timezone: unknown time zone \"Mars/Olympus_Mons\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = write_config(f->dir, cases[i].yaml);
        bt_config *cfg = NULL;
        char want[4400];
        snprintf(want, sizeof want, "%s:%d: %s", path, cases[i].line, cases[i].says);
        int rc = bt_config_load(path, &cfg);
        if (rc != BATON_EINVALID || strcmp(baton_error_last(), want) != 0)
            fail_msg("case %zu: rc %d, message \"%s\", want \"%s\"", i, rc, baton_error_last(), want);
        assert_null(cfg);
    }
}

/* The class of a task must be known when the file is loaded: declared in it, or registered
 * from C before. */
static void test_config_task_class_must_be_known(void **state)
{
    lib_fixture *f = *state;
    const char *path = write_config(f->dir,
        "jobs:\n  Known: {}\n"
        "recurring:\n"
        "  a: { class: Known, schedule: \"* * * * *\" }\n"
        "  b: { class: FromC, schedule: \"* * * * *\" }\n"
        "  c: { class: Nobody, schedule: \"* * * * *\" }\n");
    char want[4400];
    snprintf(want, sizeof want, "%s:5: recurring.b: unknown class 'FromC'", path);
    assert_int_equal(baton_load_config(f->client, path), BATON_EINVALID);
    assert_string_equal(baton_error_last(), want);
    assert_int_equal(baton_class_register(f->client, "FromC", NULL), BATON_OK);
    snprintf(want, sizeof want, "%s:6: recurring.c: unknown class 'Nobody'", path);
    assert_int_equal(baton_load_config(f->client, path), BATON_EINVALID);
    assert_string_equal(baton_error_last(), want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_reads_tasks_and_scheduler, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_config_errors_name_file_line_and_key, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_config_task_class_must_be_known, lib_setup, lib_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
