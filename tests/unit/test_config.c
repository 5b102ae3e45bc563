/* test_config.c: baton.yml parsing: every field of a full file, the defaults, the queue
 * spellings, and a table of bad files whose messages must name the file, line and key. */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"
#include "config/config.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = tmpdir_make();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(dir);
    return 0;
}

/* load writes text to DIR/baton.yml and loads it; on failure *cfg stays NULL. */
static int load(const char *text, bt_config **cfg)
{
    const char *path = path_join(dir, "baton.yml");
    write_file(path, text);
    return bt_config_load(path, cfg);
}

static bt_config *load_ok(const char *text)
{
    bt_config *cfg = NULL;
    int rc = load(text, &cfg);
    if (rc != 0)
        fail_msg("load failed: %s", baton_error_last());
    assert_non_null(cfg);
    return cfg;
}

static void test_full_file(void **state)
{
    (void)state;
    bt_config *cfg = load_ok(
        "# baton.yml\n"                                                  /* 1 */
        "max_arguments_bytes: 1024\n"                                    /* 2 */
        "shutdown_timeout: 2.5\n"                                        /* 3 */
        "process_heartbeat_interval: 7\n"                                /* 4 */
        "process_alive_threshold: 40\n"                                  /* 5 */
        "jobs:\n"                                                        /* 6 */
        "  GoogleCalendarSyncJob:\n"                                     /* 7 */
        "    queue: high\n"                                              /* 8 */
        "    priority: -3\n"                                             /* 9 */
        "    command: ./bin/sync-calendar\n"                             /* 10 */
        "    timeout: 300\n"                                             /* 11 */
        "    retry: { attempts: 5, backoff: linear, base: 2.5 }\n"       /* 12 */
        "    concurrency:\n"                                             /* 13 */
        "      to: 2\n"                                                  /* 14 */
        "      key: \"google_calendar_sync_user_{user_id}\"\n"           /* 15 */
        "      group: CalendarGroup\n"                                   /* 16 */
        "      duration: 90\n"                                           /* 17 */
        "      on_conflict: coalesce\n"                                  /* 18 */
        "  Other:\n"                                                     /* 19 */
        "    queue: 5\n"                                                 /* 20 */
        "    retry:\n"                                                   /* 21 */
        "      backoff: fixed\n"                                         /* 22 */
        "    concurrency: { key: k, on_conflict: discard }\n"            /* 23 */
        "workers:\n"                                                     /* 24 */
        "  - queues: [high, default, \"*\"]\n"                           /* 25 */
        "    threads: 4\n"                                               /* 26 */
        "    processes: 2\n"                                             /* 27 */
        "    polling_interval: 0.5\n"                                    /* 28 */
        "  - threads: 1\n"                                               /* 29 */
        "dispatchers:\n"                                                 /* 30 */
        "  - polling_interval: 2\n"                                      /* 31 */
        "    batch_size: 100\n"                                          /* 32 */
        "    concurrency_maintenance_interval: 15\n");                   /* 33 */
    assert_string_equal(cfg->path, path_join(dir, "baton.yml"));
    assert_int_equal(cfg->max_arguments_bytes, 1024);
    assert_true(cfg->shutdown_timeout == 2.5);
    assert_true(cfg->process_heartbeat_interval == 7);
    assert_true(cfg->process_alive_threshold == 40);

    assert_int_equal(cfg->nclasses, 2);
    bt_class_config *g = &cfg->classes[0];
    assert_string_equal(g->name, "GoogleCalendarSyncJob");
    assert_int_equal(g->line, 7);
    assert_string_equal(g->queue, "high");
    assert_int_equal(g->priority, -3);
    assert_string_equal(g->command, "./bin/sync-calendar");
    assert_true(g->timeout == 300);
    assert_int_equal(g->max_attempts, 5);
    assert_int_equal(g->backoff, BATON_BACKOFF_LINEAR);
    assert_true(g->backoff_base == 2.5);
    assert_int_equal(g->concurrency.enabled, 1);
    assert_int_equal(g->concurrency.line, 13);
    assert_int_equal(g->concurrency.to, 2);
    assert_string_equal(g->concurrency.key, "google_calendar_sync_user_{user_id}");
    assert_string_equal(g->concurrency.group, "CalendarGroup");
    assert_true(g->concurrency.duration == 90);
    assert_int_equal(g->concurrency.on_conflict, BT_ON_CONFLICT_COALESCE);

    bt_class_config *o = &cfg->classes[1];
    assert_string_equal(o->name, "Other");
    assert_int_equal(o->line, 19);
    assert_string_equal(o->queue, "5");
    assert_null(o->command);
    assert_int_equal(o->max_attempts, 1);
    assert_int_equal(o->backoff, BATON_BACKOFF_FIXED);
    assert_true(o->backoff_base == 1);
    assert_int_equal(o->concurrency.enabled, 1);
    assert_int_equal(o->concurrency.line, 23);
    assert_int_equal(o->concurrency.to, 1);
    assert_string_equal(o->concurrency.key, "k");
    assert_null(o->concurrency.group);
    assert_true(o->concurrency.duration == 180);
    assert_int_equal(o->concurrency.on_conflict, BT_ON_CONFLICT_DISCARD);

    assert_int_equal(cfg->nworkers, 2);
    bt_worker_config *w = &cfg->workers[0];
    assert_int_equal(w->line, 25);
    assert_int_equal(w->nqueues, 3);
    assert_string_equal(w->queues[0], "high");
    assert_string_equal(w->queues[1], "default");
    assert_string_equal(w->queues[2], "*");
    assert_int_equal(w->threads, 4);
    assert_int_equal(w->processes, 2);
    assert_true(w->polling_interval == 0.5);
    w = &cfg->workers[1];
    assert_int_equal(w->line, 29);
    assert_int_equal(w->nqueues, 1);
    assert_string_equal(w->queues[0], "*");
    assert_int_equal(w->threads, 1);
    assert_int_equal(w->processes, 1);
    assert_true(w->polling_interval == 0.1);

    assert_int_equal(cfg->ndispatchers, 1);
    bt_dispatcher_config *d = &cfg->dispatchers[0];
    assert_int_equal(d->line, 31);
    assert_true(d->polling_interval == 2);
    assert_int_equal(d->batch_size, 100);
    assert_true(d->concurrency_maintenance_interval == 15);
    bt_config_free(cfg);
}

static void assert_top_defaults(const bt_config *cfg)
{
    assert_int_equal(cfg->max_arguments_bytes, 8 * 1024 * 1024);
    assert_true(cfg->shutdown_timeout == 5);
    assert_true(cfg->process_heartbeat_interval == 5);
    assert_true(cfg->process_alive_threshold == 30);
}

static void test_defaults(void **state)
{
    (void)state;
    bt_config def;
    bt_config_defaults(&def);
    assert_top_defaults(&def);
    assert_null(def.path);
    assert_int_equal(def.nclasses + def.nworkers + def.ndispatchers, 0);

    const char *empty[] = {"", "# only a comment\n\n   # another\n", "---\n", "jobs:\nworkers:\n"};
    for (size_t i = 0; i < sizeof empty / sizeof *empty; i++) {
        bt_config *cfg = load_ok(empty[i]);
        assert_top_defaults(cfg);
        assert_int_equal(cfg->nclasses + cfg->nworkers + cfg->ndispatchers, 0);
        bt_config_free(cfg);
    }
    bt_config_free(NULL);
}

static void test_class_defaults(void **state)
{
    (void)state;
    bt_config *cfg = load_ok("jobs:\n  A:\n  B: ~\n  C: {}\nworkers:\n  - {}\ndispatchers:\n  -\n");
    assert_int_equal(cfg->nclasses, 3);
    for (size_t i = 0; i < cfg->nclasses; i++) {
        bt_class_config *cl = &cfg->classes[i];
        assert_int_equal(cl->line, (int)i + 2);
        assert_null(cl->queue);
        assert_null(cl->command);
        assert_int_equal(cl->priority, 0);
        assert_true(cl->timeout == 0);
        assert_int_equal(cl->max_attempts, 1);
        assert_int_equal(cl->backoff, BATON_BACKOFF_EXPONENTIAL);
        assert_true(cl->backoff_base == 1);
        assert_int_equal(cl->concurrency.enabled, 0);
    }
    assert_string_equal(cfg->classes[1].name, "B");
    assert_int_equal(cfg->nworkers, 1);
    assert_int_equal(cfg->workers[0].nqueues, 1);
    assert_string_equal(cfg->workers[0].queues[0], "*");
    assert_int_equal(cfg->workers[0].threads, 3);
    assert_int_equal(cfg->workers[0].processes, 1);
    assert_true(cfg->workers[0].polling_interval == 0.1);
    assert_int_equal(cfg->ndispatchers, 1);
    assert_true(cfg->dispatchers[0].polling_interval == 1);
    assert_int_equal(cfg->dispatchers[0].batch_size, 500);
    assert_true(cfg->dispatchers[0].concurrency_maintenance_interval == 30);
    bt_config_free(cfg);
}

static void test_queue_spellings(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        size_t n;
        const char *q[3];
    } cases[] = {
        {"workers:\n  - queues: [a, \"b*\", c]\n", 3, {"a", "b*", "c"}},
        {"workers:\n  - queues:\n      - a\n      - b\n", 2, {"a", "b"}},
        {"workers:\n  - queues: solo\n", 1, {"solo"}},
        {"workers:\n  - queues: \"*\"\n", 1, {"*"}},
        {"workers:\n  - queues: a,b\n", 2, {"a", "b"}},
        {"workers:\n  - queues: \"high, default ,low\"\n", 3, {"high", "default", "low"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bt_config *cfg = load_ok(cases[i].yaml);
        assert_int_equal(cfg->nworkers, 1);
        assert_int_equal(cfg->workers[0].nqueues, cases[i].n);
        for (size_t j = 0; j < cases[i].n; j++)
            assert_string_equal(cfg->workers[0].queues[j], cases[i].q[j]);
        bt_config_free(cfg);
    }
}

static void test_bad_files(void **state)
{
    (void)state;
#define BAD(yaml, line, says) {yaml, BATON_EINVALID, line, says}
    static const struct {
        const char *yaml; /* NULL: the file does not exist */
        int code;
        int line;         /* 0: the message has no line */
        const char *says; /* must appear in the message */
    } cases[] = {
        BAD("shutdown_timeout: 1\nfoo: 1\n", 2, "unknown key 'foo'"),
        BAD("jobs:\n  A:\n    queue: q\n    prority: 1\n", 4, "unknown key 'prority' in jobs.A"),
        BAD("jobs:\n  A:\n    retry:\n      attempts: 2\n      bakoff: linear\n", 5,
            "unknown key 'bakoff' in jobs.A.retry"),
        BAD("jobs:\n  A:\n    concurrency: { key: k, limit: 2 }\n", 3,
            "unknown key 'limit' in jobs.A.concurrency"),
        BAD("workers:\n  - {}\n  - thread: 2\n", 3, "unknown key 'thread' in workers[1]"),
        BAD("jobs:\n  A:\n    priority: abc\n", 3,
            "jobs.A.priority: expected an integer, got 'abc'"),
        BAD("jobs:\n  A:\n    priority: 1.5\n", 3, "jobs.A.priority: expected an integer"),
        BAD("jobs:\n  A:\n    priority: \"5\"\n", 3,
            "jobs.A.priority: expected an integer, got the quoted string '5'"),
        BAD("jobs:\n  A:\n    priority: 99999999999\n", 3,
            "jobs.A.priority: must be at most 2147483647"),
        BAD("jobs:\n  A:\n    timeout: -1\n", 3, "jobs.A.timeout: must be at least 0, got -1"),
        BAD("jobs:\n  A:\n    timeout: soon\n", 3, "jobs.A.timeout: expected a number, got 'soon'"),
        BAD("jobs:\n  A:\n    command: [a, b]\n", 3,
            "jobs.A.command: expected a string, got a list"),
        BAD("jobs:\n  A:\n    queue:\n", 3, "jobs.A.queue: expected a string, got null"),
        BAD("jobs:\n  A: 5\n", 2, "jobs.A: expected a mapping, got '5'"),
        BAD("jobs:\n  A:\n    retry: 3\n", 3, "jobs.A.retry: expected a mapping"),
        BAD("jobs:\n  A:\n    retry: { attempts: 0 }\n", 3,
            "jobs.A.retry.attempts: must be at least 1, got 0"),
        BAD("workers:\n  - queues: [a]\n    threads: 0\n", 3,
            "workers[0].threads: must be at least 1, got 0"),
        BAD("workers:\n  - polling_interval: 0\n", 2,
            "workers[0].polling_interval: must be greater than 0, got 0"),
        BAD("workers:\n  - queues: { a: 1 }\n", 2,
            "workers[0].queues: expected a list of strings, got a mapping"),
        BAD("workers:\n  - queues: [a, [b]]\n", 2,
            "workers[0].queues: expected a list of strings, got a list"),
        BAD("workers:\n  - queues: a,,b\n", 2, "workers[0].queues: queue names must not be empty"),
        BAD("workers:\n  - queues: []\n", 2, "workers[0].queues: must name at least one queue"),
        BAD("workers:\n  threads: 2\n", 2, "workers: expected a list, got a mapping"),
        BAD("dispatchers:\n  - batch_size: lots\n", 2,
            "dispatchers[0].batch_size: expected an integer, got 'lots'"),
        BAD("max_arguments_bytes: 0\n", 1, "max_arguments_bytes: must be at least 1, got 0"),
        BAD("jobs:\n  A:\n    retry: { backoff: quadratic }\n", 3,
            "jobs.A.retry.backoff: expected one of exponential, linear, fixed, got 'quadratic'"),
        BAD("jobs:\n  A:\n    concurrency:\n      key: k\n      on_conflict: wait\n", 5,
            "jobs.A.concurrency.on_conflict: expected one of block, discard, coalesce, got 'wait'"),
        BAD("jobs:\n  A:\n    queue: q\n    concurrency:\n      to: 2\n", 4,
            "jobs.A.concurrency: missing key 'key'"),
        BAD("jobs:\n  A:\n    concurrency:\n", 3, "jobs.A.concurrency: missing key 'key'"),
        BAD("jobs:\n  A:\n    queue: [a\n", 4,
            "YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence "
            "started on line 3)"),
        BAD("jobs:\n  A: 1\n B: 2\n", 3, "YAML syntax error: "),
        BAD("- a\n- b\n", 1, "expected a mapping, got a list"),
        BAD("just text\n", 1, "expected a mapping, got 'just text'"),
        {NULL, BATON_ERROR, 0, "cannot read: No such file or directory"},
        BAD("jobs:\n  A:\n    queue: a\n    queue: b\n", 4, "duplicate key 'queue' in jobs.A"),
        BAD("jobs:\n  A: {}\n  B: {}\n  A: {}\n", 4, "duplicate key 'A' in jobs"),
        BAD("jobs: {}\njobs: {}\n", 2, "duplicate key 'jobs'"),
        BAD("jobs: {}\n---\nworkers: []\n", 3, "only one YAML document"),
    };
#undef BAD
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = path_join(dir, cases[i].yaml ? "baton.yml" : "missing.yml");
        static bt_config sentinel;
        bt_config *cfg = &sentinel; /* must be reset to NULL on failure */
        int rc = cases[i].yaml ? load(cases[i].yaml, &cfg) : bt_config_load(path, &cfg);
        const char *msg = baton_error_last();
        char where[4200];
        if (cases[i].line)
            snprintf(where, sizeof where, "%s:%d: ", path, cases[i].line);
        else
            snprintf(where, sizeof where, "%s: ", path);
        if (rc != cases[i].code || strncmp(msg, where, strlen(where)) != 0 ||
            !strstr(msg, cases[i].says))
            fail_msg("case %zu: rc %d (want %d), message \"%s\" (want \"%s...%s\")", i, rc,
                     cases[i].code, msg, where, cases[i].says);
        assert_null(cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_class_defaults),
        cmocka_unit_test(test_queue_spellings),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
