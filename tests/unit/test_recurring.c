// ctest-labels: threads sqlite
/* test_recurring.c: recurring tasks through the library: the scheduler and recurring
 * sections of baton.yml, good and bad, with their exact messages; the rule for runs missed
 * while no scheduler ran; static tasks written from the configuration; dynamic tasks added,
 * replaced, listed and removed; and a scheduler on a thread enqueueing a job every second
 * with the task's and the class's options, following tasks added and removed while it
 * runs, and not replaying runs missed while stopped. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdatomic.h>
#include <stdint.h>

#include "baton.h"
#include "config/config.h"
#include "core/core.h"
#include "support.h"
#include "util/clock.h"

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
        /* Aliases bounded: a value inside itself, and one multiplied a billion times. */
        {"recurring:\n  t:\n    args: &a [1, *a]\n", 3,
         "recurring.t.args: nested deeper than 64 levels (an alias inside itself?)"},
        {"recurring:\n  t:\n    args: [&a [l, l, l, l, l, l, l, l, l, l], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a],\n"
         "      &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c],\n"
         "      &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]]\n",
         3, "recurring.t.args: more than 100000 values once its aliases are expanded"},
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

/* Hostile files are refused with a line, not a crash: 10,000 nesting levels, and a file
 * larger than any configuration. */
static void test_hostile_config_files_are_refused(void **state)
{
    lib_fixture *f = *state;
    enum { LEVELS = 10000 };
    const char head[] = "recurring:\n  t:\n    args: ";
    char *text = malloc(sizeof head + 2 * LEVELS + 2);
    assert_non_null(text);
    char *p = stpcpy(text, head);
    memset(p, '[', LEVELS);
    memset(p + LEVELS, ']', LEVELS);
    strcpy(p + 2 * LEVELS, "\n");
    const char *path = write_config(f->dir, text);
    free(text);
    assert_int_equal(baton_load_config(f->client, path), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "recurring.t.args: nested deeper than 64 levels"));
    size_t big = (16u << 20) + 2;
    text = malloc(big + 1);
    assert_non_null(text);
    memset(text, '#', big);
    text[big] = '\0';
    path = write_config(f->dir, text);
    free(text);
    assert_int_equal(baton_load_config(f->client, path), BATON_ERROR);
    assert_non_null(strstr(baton_error_last(), "larger than 16 MiB"));
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

/* ---- helpers ---- */

static int64_t parse_time(const char *iso)
{
    int64_t ms = 0;
    assert_int_equal(baton_parse_time(iso, &ms), BATON_OK);
    return ms;
}

static json_t *recurring_list(baton_client *c)
{
    char *text;
    assert_int_equal(baton_recurring_json(c, &text), BATON_OK);
    json_t *list = json_loads(text, 0, NULL);
    baton_free(text);
    assert_true(json_is_array(list));
    return list;
}

/* task_named returns the listed task key (borrowed from list), or NULL. */
static json_t *task_named(json_t *list, const char *key)
{
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t)
        if (!strcmp(json_string_value(json_object_get(t, "key")), key))
            return t;
    return NULL;
}

static const char *jstr(json_t *o, const char *field)
{
    json_t *v = json_object_get(o, field);
    if (!json_is_string(v))
        fail_msg("field %s is not a string", field);
    return json_string_value(v);
}

static int64_t db_int(const lib_fixture *f, const char *sql)
{
    bt_store *db = test_db_open(f->url);
    int64_t v = test_db_int(db, sql);
    bt_store_close(db);
    return v;
}

/* A run as recorded: its time and its job. */
typedef struct run_row {
    int64_t run_at;
    int64_t job_id;
} run_row;

enum { MAX_RUNS = 64 };

typedef struct run_list {
    run_row *items;
    size_t len;
} run_list;

static int collect_run(bt_row *row, void *payload)
{
    run_list *l = payload;
    if (l->len < MAX_RUNS)
        l->items[l->len++] = (run_row){bt_col_int(row, 0), bt_col_int(row, 1)};
    return 0;
}

/* runs_of reads the runs of task key in time order into runs; returns how many. */
static size_t runs_of(const lib_fixture *f, const char *key, run_row *runs)
{
    bt_store *db = test_db_open(f->url);
    run_list l = {runs, 0};
    bt_val k[] = {BV_TEXT(key)};
    if (bt_exec_dynamic(db, "SELECT run_at, COALESCE(job_id, 0) FROM baton_recurring_executions"
                            " WHERE task_key = ? ORDER BY run_at", k, 1, collect_run, &l, NULL) != BATON_OK)
        fail_msg("runs of %s: %s", key, baton_error_last());
    bt_store_close(db);
    return l.len;
}

typedef struct runs_wait {
    const lib_fixture *f;
    const char *key;
    size_t at_least;
} runs_wait;

static int has_runs(void *p)
{
    runs_wait *w = p;
    run_row runs[MAX_RUNS];
    return runs_of(w->f, w->key, runs) >= w->at_least;
}

/* wait_runs fails the test unless task key has n runs within timeout_ms. */
static void wait_runs(const lib_fixture *f, const char *key, size_t n, int timeout_ms)
{
    runs_wait w = {f, key, n};
    if (!poll_until(has_runs, &w, timeout_ms))
        fail_msg("task %s did not reach %zu runs in %d ms", key, n, timeout_ms);
}

typedef struct running_scheduler {
    baton_scheduler *scheduler;
    pthread_t thread;
} running_scheduler;

static void *scheduler_main(void *s) { return (void *)(intptr_t)baton_scheduler_run(s); }

static running_scheduler scheduler_start_with(baton_client *c, const baton_scheduler_options *o)
{
    running_scheduler rs;
    assert_int_equal(baton_scheduler_new(&rs.scheduler, c, o), BATON_OK);
    assert_int_equal(pthread_create(&rs.thread, NULL, scheduler_main, rs.scheduler), 0);
    return rs;
}

static running_scheduler scheduler_start(baton_client *c) { return scheduler_start_with(c, NULL); }

static void scheduler_stop(running_scheduler *rs)
{
    baton_scheduler_stop(rs->scheduler);
    void *result;
    pthread_join(rs->thread, &result);
    assert_int_equal((int)(intptr_t)result, BATON_OK);
    baton_scheduler_free(rs->scheduler);
}

/* Log lines of a client, kept for inspection. */
typedef struct log_capture {
    pthread_mutex_t lock;
    char text[65536];
} log_capture;

static void capture_line(baton_log_level level, const char *line, void *payload)
{
    log_capture *l = payload;
    (void)level;
    pthread_mutex_lock(&l->lock);
    size_t used = strlen(l->text);
    snprintf(l->text + used, sizeof l->text - used, "%s\n", line);
    pthread_mutex_unlock(&l->lock);
}

/* ---- the rule for missed runs ---- */

static void test_next_run_skips_runs_missed_for_more_than_a_period(void **state)
{
    (void)state;
    bt_cron every_minute;
    assert_int_equal(bt_cron_parse("* * * * *", &every_minute), BATON_OK);
    int64_t last = parse_time("2026-11-24T10:00:00Z"), next = 0;
    /* Not yet due. */
    assert_int_equal(bt_recurring_next(&every_minute, NULL, last, last + 30000, &next), BATON_OK);
    assert_true(next == parse_time("2026-11-24T10:01:00Z"));
    /* Due now, or a little late: the one owed run is enqueued. */
    assert_int_equal(bt_recurring_next(&every_minute, NULL, last, parse_time("2026-11-24T10:01:00Z"), &next), BATON_OK);
    assert_true(next == parse_time("2026-11-24T10:01:00Z"));
    assert_int_equal(bt_recurring_next(&every_minute, NULL, last, parse_time("2026-11-24T10:01:59Z"), &next), BATON_OK);
    assert_true(next == parse_time("2026-11-24T10:01:00Z"));
    /* Two runs past: nothing is replayed, the next run is the first in the future. */
    assert_int_equal(bt_recurring_next(&every_minute, NULL, last, parse_time("2026-11-24T10:02:00Z"), &next), BATON_OK);
    assert_true(next == parse_time("2026-11-24T10:03:00Z"));
    assert_int_equal(bt_recurring_next(&every_minute, NULL, last, parse_time("2026-11-25T08:30:10Z"), &next), BATON_OK);
    assert_true(next == parse_time("2026-11-25T08:31:00Z"));
}

/* ---- storage ---- */

static void test_static_tasks_are_written_and_stale_ones_removed(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Ping", NULL), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "dynamic", "Ping", "0 * * * *", NULL, NULL), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "b", "Ping", "0 * * * *", "[\"was dynamic\"]", NULL), BATON_OK);
    bt_config *cfg = load_ok(f->dir,
        "recurring:\n"
        "  a: { class: Ping, schedule: \"0 3 * * *\", args: [1], queue: low, priority: 2 }\n"
        "  b: { class: Ping, schedule: \"0 4 * * *\", timezone: Europe/Berlin }\n"
        "  gone: { class: Ping, schedule: \"0 5 * * *\" }\n");
    size_t removed = 99;
    assert_int_equal(bt_begin(f->client->store, BT_TXN_WRITE), BATON_OK);
    assert_int_equal(bt_recurring_sync_static(f->client->store, cfg, bt_now_ms(), &removed), BATON_OK);
    assert_int_equal(bt_end(f->client->store, BATON_OK), BATON_OK);
    assert_int_equal(removed, 0);
    bt_config_free(cfg);

    json_t *list = recurring_list(f->client);
    assert_int_equal(json_array_size(list), 4);
    json_t *a = task_named(list, "a");
    assert_string_equal(jstr(a, "schedule"), "0 3 * * *");
    assert_true(json_is_true(json_object_get(a, "static")));
    assert_string_equal(jstr(a, "queue"), "low");
    assert_int_equal(json_integer_value(json_object_get(a, "priority")), 2);
    json_t *b = task_named(list, "b"); /* the configuration took the name over */
    assert_true(json_is_true(json_object_get(b, "static")));
    assert_string_equal(jstr(b, "schedule"), "0 4 * * *");
    assert_string_equal(jstr(b, "timezone"), "Europe/Berlin");
    assert_int_equal(json_array_size(json_object_get(b, "args")), 0);
    assert_true(json_is_false(json_object_get(task_named(list, "dynamic"), "static")));
    json_decref(list);

    /* The next configuration changes a, drops b and gone: the dynamic task stays. */
    cfg = load_ok(f->dir, "recurring:\n  a: { class: Ping, schedule: \"30 3 * * *\" }\n");
    assert_int_equal(bt_begin(f->client->store, BT_TXN_WRITE), BATON_OK);
    assert_int_equal(bt_recurring_sync_static(f->client->store, cfg, bt_now_ms(), &removed), BATON_OK);
    assert_int_equal(bt_end(f->client->store, BATON_OK), BATON_OK);
    assert_int_equal(removed, 2);
    bt_config_free(cfg);
    list = recurring_list(f->client);
    assert_int_equal(json_array_size(list), 2);
    a = task_named(list, "a");
    assert_string_equal(jstr(a, "schedule"), "30 3 * * *");
    assert_true(json_is_null(json_object_get(a, "queue")));
    assert_true(json_is_null(json_object_get(a, "priority")));
    assert_non_null(task_named(list, "dynamic"));
    json_decref(list);

    /* Static tasks belong to the configuration. */
    assert_int_equal(baton_recurring_add(f->client, "a", "Ping", "* * * * *", NULL, NULL), BATON_ESTATE);
    assert_string_equal(baton_error_last(), "recurring task 'a' comes from the configuration; change it there");
    assert_int_equal(baton_recurring_remove(f->client, "a"), BATON_ESTATE);
    assert_string_equal(baton_error_last(), "recurring task 'a' comes from the configuration; remove it there");
    list = recurring_list(f->client);
    assert_string_equal(jstr(task_named(list, "a"), "schedule"), "30 3 * * *");
    json_decref(list);
}

static void test_dynamic_tasks_are_added_replaced_listed_and_removed(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Ping", NULL), BATON_OK);
    baton_recurring_options o = BATON_RECURRING_OPTIONS_INIT;
    o.queue = "low";
    o.has_priority = 1;
    o.priority = -4;
    o.timezone = "Europe/Berlin";
    o.description = "morning ping";
    int64_t before = bt_now_ms();
    assert_int_equal(baton_recurring_add(f->client, "ping", "Ping", "0 7 * * *", "{\"loud\":true}", &o), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "plain", "Ping", "@hourly", NULL, NULL), BATON_OK);

    json_t *list = recurring_list(f->client);
    assert_int_equal(json_array_size(list), 2);
    json_t *t = json_array_get(list, 0);
    static const char *const fields[] = {"key", "class", "schedule", "timezone", "args", "queue", "priority",
                                         "static", "description", "last_run_at", "next_run_at"};
    assert_int_equal(json_object_size(t), sizeof fields / sizeof *fields);
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (!json_object_get(t, fields[i]))
            fail_msg("field %s missing", fields[i]);
    assert_string_equal(jstr(t, "key"), "ping");
    assert_string_equal(jstr(t, "class"), "Ping");
    assert_string_equal(jstr(t, "schedule"), "0 7 * * *");
    assert_string_equal(jstr(t, "timezone"), "Europe/Berlin");
    assert_true(json_is_true(json_object_get(json_object_get(t, "args"), "loud")));
    assert_string_equal(jstr(t, "queue"), "low");
    assert_int_equal(json_integer_value(json_object_get(t, "priority")), -4);
    assert_true(json_is_false(json_object_get(t, "static")));
    assert_string_equal(jstr(t, "description"), "morning ping");
    assert_true(json_is_null(json_object_get(t, "last_run_at")));
    /* 07:00 in Berlin is 06:00 UTC in winter, 05:00 in summer. */
    const char *next = jstr(t, "next_run_at");
    assert_int_equal(strlen(next), 24);
    assert_true(strstr(next, "T06:00:00.000Z") || strstr(next, "T05:00:00.000Z"));
    assert_true(parse_time(next) > before && parse_time(next) <= before + 86400000);

    t = json_array_get(list, 1);
    assert_string_equal(jstr(t, "timezone"), "UTC");
    assert_int_equal(json_array_size(json_object_get(t, "args")), 0);
    assert_true(json_is_null(json_object_get(t, "queue")));
    assert_true(json_is_null(json_object_get(t, "priority")));
    assert_true(json_is_null(json_object_get(t, "description")));
    assert_non_null(strstr(jstr(t, "next_run_at"), ":00:00.000Z"));
    json_decref(list);

    /* Adding under the same name replaces the task. */
    assert_int_equal(baton_recurring_add(f->client, "ping", "Ping", "*/10 * * * * *", "[2]", NULL), BATON_OK);
    list = recurring_list(f->client);
    t = task_named(list, "ping");
    assert_string_equal(jstr(t, "schedule"), "*/10 * * * * *");
    assert_string_equal(jstr(t, "timezone"), "UTC");
    assert_true(json_is_null(json_object_get(t, "description")));
    assert_int_equal(json_integer_value(json_array_get(json_object_get(t, "args"), 0)), 2);
    json_decref(list);

    assert_int_equal(baton_recurring_remove(f->client, "ping"), BATON_OK);
    assert_int_equal(baton_recurring_remove(f->client, "ping"), BATON_ENOTFOUND);
    assert_string_equal(baton_error_last(), "no recurring task 'ping'");
    list = recurring_list(f->client);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
}

static void test_bad_tasks_are_refused(void **state)
{
    lib_fixture *f = *state;
    baton_class_options keyed = BATON_CLASS_OPTIONS_INIT;
    keyed.concurrency_key = "user_{user_id}";
    assert_int_equal(baton_class_register(f->client, "Ping", NULL), BATON_OK);
    assert_int_equal(baton_class_register(f->client, "Keyed", &keyed), BATON_OK);
    baton_recurring_options zone = BATON_RECURRING_OPTIONS_INIT, queue = BATON_RECURRING_OPTIONS_INIT;
    zone.timezone = "Atlantis/Capital";
    queue.queue = "";
    const struct {
        const char *key, *class_name, *schedule, *args;
        const baton_recurring_options *opts;
        int code;
        const char *message; /* the whole message, or its start when it ends with ": " */
    } cases[] = {
        {"t", "Ping", "61 * * * *", NULL, NULL, BATON_EINVALID,
         "invalid schedule \"61 * * * *\": minute: 61 is out of range 0-59"},
        {"t", "Ping", "0 0 30 2 *", NULL, NULL, BATON_EINVALID, "schedule \"0 0 30 2 *\" never matches"},
        {"t", "Nope", "* * * * *", NULL, NULL, BATON_EINVALID, "unknown class 'Nope'"},
        {"t", "Ping", "* * * * *", "[1,", NULL, BATON_EINVALID, "arguments are not valid JSON: "},
        {"t", "Keyed", "* * * * *", "{}", NULL, BATON_EINVALID,
         "concurrency key placeholder {user_id} is missing in the arguments"},
        {"t", "Ping", "* * * * *", NULL, &zone, BATON_EINVALID, "unknown time zone \"Atlantis/Capital\""},
        {"t", "Ping", "* * * * *", NULL, &queue, BATON_EINVALID, "queue name must not be empty"},
        {"", "Ping", "* * * * *", NULL, NULL, BATON_EINVALID, "recurring task name must not be empty"},
        {"t", "Ping", NULL, NULL, NULL, BATON_EINVALID, "recurring task t: missing schedule"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = baton_recurring_add(f->client, cases[i].key, cases[i].class_name, cases[i].schedule,
                                     cases[i].args, cases[i].opts);
        size_t len = strlen(cases[i].message);
        int prefix = len > 2 && !strcmp(cases[i].message + len - 2, ": ");
        if (rc != cases[i].code || strncmp(baton_error_last(), cases[i].message, prefix ? len : len + 1))
            fail_msg("case %zu: rc %d, message \"%s\"", i, rc, baton_error_last());
    }
    assert_int_equal(baton_recurring_remove(f->client, ""), BATON_EINVALID);
    json_t *list = recurring_list(f->client);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
}

/* ---- the scheduler ---- */

/* A job as the scheduler enqueued it. */
static json_t *job_of(const lib_fixture *f, const run_row *r)
{
    assert_true(r->job_id > 0);
    return job_json(f->client, r->job_id);
}

static void test_scheduler_enqueues_one_job_per_second(void **state)
{
    lib_fixture *f = *state;
    log_capture log = {.lock = PTHREAD_MUTEX_INITIALIZER};
    baton_set_logger(f->client, BATON_LOG_INFO, capture_line, &log);
    assert_int_equal(baton_class_register(f->client, "Tick", NULL), BATON_OK);
    baton_recurring_options o = BATON_RECURRING_OPTIONS_INIT;
    o.queue = "ticks";
    o.has_priority = 1;
    o.priority = 7;
    assert_int_equal(baton_recurring_add(f->client, "tick", "Tick", "*/1 * * * * *", "{\"n\":1}", &o), BATON_OK);

    running_scheduler rs = scheduler_start(f->client);
    wait_runs(f, "tick", 3, 10000);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'scheduler'"
                               " AND metadata = '{\"polling_interval\":5.0}'"), 1);
    scheduler_stop(&rs);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);

    run_row runs[MAX_RUNS];
    size_t n = runs_of(f, "tick", runs);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM baton_jobs"), n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(runs[i].run_at % 1000, 0);
        if (i > 0)
            assert_int_equal(runs[i].run_at - runs[i - 1].run_at, 1000);
        json_t *j = job_of(f, &runs[i]);
        assert_string_equal(jstr(j, "class"), "Tick");
        assert_string_equal(jstr(j, "queue"), "ticks");
        assert_int_equal(json_integer_value(json_object_get(j, "priority")), 7);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "arguments"), "n")), 1);
        assert_string_equal(jstr(j, "status"), "ready");
        int64_t created = parse_time(jstr(j, "created_at"));
        assert_true(created >= runs[i].run_at && created < runs[i].run_at + 1000);
        json_decref(j);

        char iso[BT_ISO_LEN], line[128];
        bt_iso8601(runs[i].run_at, iso);
        snprintf(line, sizeof line, "event=recurring.enqueued task=tick job_id=%lld run_at=%s\n",
                 (long long)runs[i].job_id, iso);
        if (!strstr(log.text, line))
            fail_msg("no log line %s in:\n%s", line, log.text);
    }
    json_t *list = recurring_list(f->client);
    json_t *t = task_named(list, "tick");
    assert_true(parse_time(jstr(t, "last_run_at")) == runs[n - 1].run_at);
    assert_true(parse_time(jstr(t, "next_run_at")) > runs[n - 1].run_at);
    json_decref(list);
}

static void test_restarted_scheduler_does_not_replay_missed_runs(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Tick", NULL), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "tick", "Tick", "* * * * * *", NULL, NULL), BATON_OK);
    running_scheduler rs = scheduler_start(f->client);
    wait_runs(f, "tick", 1, 5000);
    scheduler_stop(&rs);
    run_row runs[MAX_RUNS];
    size_t before = runs_of(f, "tick", runs);
    int64_t last = runs[before - 1].run_at;

    bt_sleep(3); /* the downtime: three runs fall due while no scheduler runs */
    int64_t restarted = bt_now_ms();
    rs = scheduler_start(f->client);
    wait_runs(f, "tick", before + 2, 5000);
    scheduler_stop(&rs);
    size_t after = runs_of(f, "tick", runs);
    assert_true(runs[before].run_at > restarted);
    assert_true(runs[before].run_at > last + 3000);
    for (size_t i = before + 1; i < after; i++)
        assert_int_equal(runs[i].run_at - runs[i - 1].run_at, 1000);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM baton_jobs"), after);
}

/* Tasks added and removed while a scheduler runs are seen at its next look. */
static void test_running_scheduler_follows_added_and_removed_tasks(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Tick", NULL), BATON_OK);
    baton_scheduler_options o = BATON_SCHEDULER_OPTIONS_INIT;
    o.polling_interval = 0.1;
    running_scheduler rs = scheduler_start_with(f->client, &o);
    assert_int_equal(baton_recurring_add(f->client, "a", "Tick", "* * * * * *", NULL, NULL), BATON_OK);
    wait_runs(f, "a", 1, 5000);
    assert_int_equal(baton_recurring_remove(f->client, "a"), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "b", "Tick", "* * * * * *", NULL, NULL), BATON_OK);
    /* Once b has run twice, a whole round has passed since a was removed. */
    wait_runs(f, "b", 1, 5000);
    run_row runs[MAX_RUNS];
    size_t runs_of_a = runs_of(f, "a", runs);
    wait_runs(f, "b", 2, 5000);
    assert_int_equal(runs_of(f, "a", runs), runs_of_a);
    scheduler_stop(&rs);
}

static void test_class_options_apply_to_recurring_jobs(void **state)
{
    lib_fixture *f = *state;
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.queue = "sync";
    o.priority = 3;
    o.max_attempts = 4;
    o.concurrency_key = "user_{user_id}";
    o.concurrency_limit = 1;
    assert_int_equal(baton_class_register(f->client, "Sync", &o), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "sync", "Sync", "* * * * * *", "{\"user_id\":7}", NULL), BATON_OK);
    running_scheduler rs = scheduler_start(f->client);
    wait_runs(f, "sync", 2, 5000);
    scheduler_stop(&rs);
    run_row runs[MAX_RUNS];
    size_t n = runs_of(f, "sync", runs);
    for (size_t i = 0; i < n; i++) {
        json_t *j = job_of(f, &runs[i]);
        assert_string_equal(jstr(j, "queue"), "sync");
        assert_int_equal(json_integer_value(json_object_get(j, "priority")), 3);
        assert_int_equal(json_integer_value(json_object_get(j, "max_attempts")), 4);
        assert_string_equal(jstr(j, "concurrency_key"), "Sync/user_7");
        /* One slot: the first run holds it, the later ones wait for it. */
        assert_string_equal(jstr(j, "status"), i == 0 ? "ready" : "blocked");
        json_decref(j);
    }
}

/* baton_start runs a scheduler beside its workers and dispatchers: a recurring task's jobs
 * are enqueued and performed without anything else running. */
static int count_tick(baton_job *job, void *payload)
{
    (void)job;
    atomic_fetch_add((atomic_int *)payload, 1);
    return 0;
}

static void *run_start(void *client) { return (void *)(intptr_t)baton_start(client, 5.0); }

static int two_ticks(void *p) { return atomic_load((atomic_int *)p) >= 2; }

static void test_baton_start_runs_the_scheduler_too(void **state)
{
    lib_fixture *f = *state;
    static atomic_int ticks;
    atomic_store(&ticks, 0);
    baton_class_options co = BATON_CLASS_OPTIONS_INIT;
    co.perform = count_tick;
    co.payload = &ticks;
    assert_int_equal(baton_class_register(f->client, "Tick", &co), BATON_OK);
    assert_int_equal(baton_recurring_add(f->client, "tick", "Tick", "*/1 * * * * *", NULL, NULL), BATON_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_start, f->client), 0);
    assert_true(poll_until(two_ticks, &ticks, 10000));
    baton_start_stop(f->client, 0);
    void *rc;
    pthread_join(t, &rc);
    assert_int_equal((int)(intptr_t)rc, BATON_OK);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_baton_start_runs_the_scheduler_too, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_config_reads_tasks_and_scheduler, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_config_errors_name_file_line_and_key, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_config_task_class_must_be_known, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_config_files_are_refused, lib_setup, lib_teardown),
        cmocka_unit_test(test_next_run_skips_runs_missed_for_more_than_a_period),
        cmocka_unit_test_setup_teardown(test_static_tasks_are_written_and_stale_ones_removed, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_dynamic_tasks_are_added_replaced_listed_and_removed, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_bad_tasks_are_refused, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_enqueues_one_job_per_second, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_restarted_scheduler_does_not_replay_missed_runs, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_running_scheduler_follows_added_and_removed_tasks, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_class_options_apply_to_recurring_jobs, lib_setup, lib_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
