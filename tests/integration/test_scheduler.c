// ctest-labels: sqlite
/* test_scheduler.c: `baton schedule` and `baton recurring` as real processes on one
 * database, SQLite or PostgreSQL. Two schedulers running an every-second task side by side
 * enqueue each run exactly once; `baton recurring add/remove` refuse bad input with one
 * line and the right exit code; a bad schedule in baton.yml names the file and line. */
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#include "baton.h"

enum { MAX_ARGS = 32, MAX_SCHEDULERS = 2, PATH_LEN = 4200 };

typedef struct fx {
    char *dir;
    char db[PATH_LEN + 16]; /* sqlite:DIR/baton.db, or a PostgreSQL URL */
    char cfg[PATH_LEN];     /* DIR/baton.yml */
    bt_store *sql;          /* direct access, once init_with made the schema */
    pid_t schedulers[MAX_SCHEDULERS];
    char logs[MAX_SCHEDULERS][PATH_LEN];
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tmpdir_make();
    test_db_create(f->db, sizeof f->db, f->dir, "baton");
    snprintf(f->cfg, sizeof f->cfg, "%s/baton.yml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    for (int i = 0; i < MAX_SCHEDULERS; i++)
        if (f->schedulers[i] > 0) {
            kill(f->schedulers[i], SIGKILL);
            waitpid(f->schedulers[i], NULL, 0);
        }
    bt_store_close(f->sql);
    test_db_drop(f->db);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* ---- running the CLI ----------------------------------------------------------------- */

static run_result cli_run(fx *f, ...)
{
    const char *args[MAX_ARGS] = {"--db", f->db, "--config", f->cfg};
    size_t n = 4;
    va_list ap;
    va_start(ap, f);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < MAX_ARGS - 1);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return baton_run(NULL, args);
}
#define RUN(f, ...) cli_run((f), __VA_ARGS__, (const char *)NULL)

static void check_exit(const run_result *r, int code, int line)
{
    if (r->status != code)
        fail_msg("line %d: baton exited %d, expected %d\n  stdout: %s\n  stderr: %s", line,
                 r->status, code, r->out, r->err);
}

/* OK(f, args...): runs, insists on exit 0 and discards the output. */
#define OK(f, ...)                                \
    do {                                          \
        run_result r_ = RUN(f, __VA_ARGS__);      \
        check_exit(&r_, 0, __LINE__);             \
        run_result_free(&r_);                     \
    } while (0)

/* The error contract: exit code, nothing on stdout, and stderr exactly "baton: MESSAGE\n". */
static void expect_error(run_result r, int code, const char *message, int line)
{
    char want[8400];
    snprintf(want, sizeof want, "baton: %s\n", message);
    check_exit(&r, code, line);
    if (*r.out || strcmp(r.err, want) != 0)
        fail_msg("line %d:\n  stdout: %s\n  stderr: %s  wanted: %s", line, r.out, r.err, want);
    run_result_free(&r);
}
#define EXPECT_ERROR(code, message, f, ...) expect_error(RUN(f, __VA_ARGS__), (code), (message), __LINE__)

static json_t *tasks_json(fx *f)
{
    run_result r = RUN(f, "recurring", "--json");
    check_exit(&r, 0, __LINE__);
    json_t *list = json_loads(r.out, 0, NULL);
    if (!json_is_array(list))
        fail_msg("baton recurring --json printed %s", r.out);
    run_result_free(&r);
    return list;
}

static void init_with(fx *f, const char *config)
{
    write_file(f->cfg, config);
    OK(f, "init");
    f->sql = test_db_open(f->db);
}

static pid_t start_scheduler(fx *f, int slot)
{
    const char *args[] = {"--db", f->db, "--config", f->cfg, "schedule", NULL};
    snprintf(f->logs[slot], PATH_LEN, "%s/scheduler-%d.log", f->dir, slot);
    return f->schedulers[slot] = baton_spawn(f->logs[slot], args);
}

/* Sends TERM and insists the scheduler exits 0 within 10 s. */
static void stop_scheduler(fx *f, int slot)
{
    assert_int_equal(kill(f->schedulers[slot], SIGTERM), 0);
    int status = wait_exit(f->schedulers[slot], 10000);
    f->schedulers[slot] = 0;
    if (status != 0) {
        char *log = read_file(f->logs[slot]);
        fail_msg("scheduler %d exited %d after TERM (-1: still running after 10 s)\n%s", slot, status,
                 log ? log : "");
    }
}

/* ---- direct database access ------------------------------------------------------------ */

typedef struct sql_wait {
    fx *f;
    const char *sql;
    int64_t at_least;
} sql_wait;

static int sql_reached(void *p)
{
    sql_wait *w = p;
    return test_db_int(w->f->sql, w->sql) >= w->at_least;
}

/* wait_sql fails the test unless the query's integer reaches at_least within timeout_ms. */
static void wait_sql(fx *f, const char *sql, int64_t at_least, int timeout_ms)
{
    sql_wait w = {f, sql, at_least};
    if (!poll_until(sql_reached, &w, timeout_ms))
        fail_msg("%s stayed below %lld for %d ms (is %lld)", sql, (long long)at_least, timeout_ms,
                 (long long)test_db_int(f->sql, sql));
}

static int count_in_file(const char *path, const char *needle)
{
    char *text = read_file(path);
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)); p++)
        n++;
    free(text);
    return n;
}

/* ====================================================================================== */

#define TICK_CONFIG                                                    \
    "jobs:\n"                                                          \
    "  Tick: { queue: ticks }\n"                                       \
    "recurring:\n"                                                     \
    "  tick:\n"                                                        \
    "    class: Tick\n"                                                \
    "    schedule: \"*/1 * * * * *\"\n"                                \
    "    args: { n: 1 }\n"

static void test_two_schedulers_enqueue_each_run_once(void **state)
{
    fx *f = *state;
    init_with(f, TICK_CONFIG);
    OK(f, "recurring", "add", "dyn", "--class", "Tick", "--schedule", "* * * * * *", "--args", "[2]");
    start_scheduler(f, 0);
    start_scheduler(f, 1);
    wait_sql(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'scheduler'", 2, 10000);
    /* About four seconds with both running. */
    wait_sql(f, "SELECT COUNT(*) FROM baton_recurring_executions e WHERE task_key = 'tick' AND"
                " run_at > (SELECT MAX(created_at) FROM baton_processes WHERE kind = 'scheduler')", 4, 15000);
    stop_scheduler(f, 0);
    stop_scheduler(f, 1);

    int64_t runs = test_db_int(f->sql, "SELECT COUNT(*) FROM baton_recurring_executions");
    assert_true(runs >= 8);
    assert_int_equal(test_db_int(f->sql, "SELECT COUNT(*) FROM (SELECT task_key, run_at"
                                         " FROM baton_recurring_executions"
                                         " GROUP BY task_key, run_at HAVING COUNT(*) > 1) AS doubled"),
                     0);
    /* One job per run, each recorded with its run, and no other job. */
    assert_int_equal(test_db_int(f->sql, "SELECT COUNT(DISTINCT job_id) FROM baton_recurring_executions"), runs);
    assert_int_equal(test_db_int(f->sql, "SELECT COUNT(*) FROM baton_jobs"), runs);
    assert_int_equal(test_db_int(f->sql, "SELECT COUNT(*) FROM baton_recurring_executions e JOIN baton_jobs j"
                                         " ON j.id = e.job_id AND j.class_name = 'Tick' AND j.queue_name = 'ticks'"
                                         " AND j.arguments = CASE e.task_key WHEN 'tick' THEN '{\"n\":1}'"
                                         " ELSE '[2]' END"),
                     runs);
    /* Every second ran, once, for both tasks. */
    assert_int_equal(test_db_int(f->sql, "SELECT COUNT(*) FROM baton_recurring_executions"
                                         " WHERE run_at % 1000 != 0"),
                     0);
    assert_int_equal(test_db_int(f->sql, "SELECT SUM(n) FROM (SELECT (MAX(run_at) - MIN(run_at)) / 1000 + 1"
                                         " - COUNT(*) AS n FROM baton_recurring_executions GROUP BY task_key)"
                                         " AS gaps"),
                     0);
    /* Each run was logged as enqueued by exactly one of the two. */
    int logged = count_in_file(f->logs[0], "event=recurring.enqueued ") +
                 count_in_file(f->logs[1], "event=recurring.enqueued ");
    assert_int_equal(logged, runs);
    assert_int_equal(test_db_int(f->sql, "SELECT COUNT(*) FROM baton_processes"), 0);
}

static void test_recurring_add_and_remove_errors(void **state)
{
    fx *f = *state;
    init_with(f, TICK_CONFIG);
    /* A scheduler writes the static task of the configuration. */
    start_scheduler(f, 0);
    wait_sql(f, "SELECT COUNT(*) FROM baton_recurring_tasks WHERE static = 1", 1, 10000);
    stop_scheduler(f, 0);

    EXPECT_ERROR(2, "invalid schedule \"61 * * * *\": minute: 61 is out of range 0-59",
                 f, "recurring", "add", "t", "--class", "Tick", "--schedule", "61 * * * *");
    EXPECT_ERROR(2, "schedule \"0 0 30 2 *\" never matches",
                 f, "recurring", "add", "t", "--class", "Tick", "--schedule", "0 0 30 2 *");
    EXPECT_ERROR(2, "unknown class 'Tock'", f, "recurring", "add", "t", "--class", "Tock", "--schedule", "@daily");
    EXPECT_ERROR(2, "unknown time zone \"Nowhere/Town\"",
                 f, "recurring", "add", "t", "--class", "Tick", "--schedule", "@daily", "--timezone", "Nowhere/Town");
    EXPECT_ERROR(2, "--priority: expected an integer from -2147483647 to 2147483647, got 'high'",
                 f, "recurring", "add", "t", "--class", "Tick", "--schedule", "@daily", "--priority", "high");
    EXPECT_ERROR(2, "usage: baton recurring add KEY --class C --schedule CRON [--args JSON] [--queue Q]"
                    " [--priority N] [--timezone TZ] [--description TEXT]",
                 f, "recurring", "add", "t", "--class", "Tick");
    EXPECT_ERROR(2, "option '--json' does not go with 'baton recurring add'",
                 f, "recurring", "add", "t", "--class", "Tick", "--schedule", "@daily", "--json");
    EXPECT_ERROR(1, "recurring task 'tick' comes from the configuration; change it there",
                 f, "recurring", "add", "tick", "--class", "Tick", "--schedule", "@daily");
    EXPECT_ERROR(1, "recurring task 'tick' comes from the configuration; remove it there",
                 f, "recurring", "remove", "tick");
    EXPECT_ERROR(3, "no recurring task 't'", f, "recurring", "remove", "t");
    EXPECT_ERROR(2, "usage: baton recurring remove KEY", f, "recurring", "remove");
    EXPECT_ERROR(2, "unknown subcommand 'baton recurring rm' (expected add or remove)", f, "recurring", "rm", "t");
    json_t *list = tasks_json(f);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    OK(f, "recurring", "add", "t", "--class", "Tick", "--schedule", "0 9 * * mon-fri", "--args", "{\"a\":1}",
       "--queue", "q", "--priority", "-2", "--timezone", "America/New_York", "--description", "weekday mornings");
    list = tasks_json(f);
    assert_int_equal(json_array_size(list), 2);
    json_t *t = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(t, "key")), "t");
    assert_string_equal(json_string_value(json_object_get(t, "schedule")), "0 9 * * mon-fri");
    assert_string_equal(json_string_value(json_object_get(t, "timezone")), "America/New_York");
    assert_string_equal(json_string_value(json_object_get(t, "queue")), "q");
    assert_int_equal(json_integer_value(json_object_get(t, "priority")), -2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(t, "args"), "a")), 1);
    assert_true(json_is_false(json_object_get(t, "static")));
    assert_true(json_is_null(json_object_get(t, "last_run_at")));
    assert_non_null(json_string_value(json_object_get(t, "next_run_at")));
    json_decref(list);

    OK(f, "recurring", "remove", "t");
    EXPECT_ERROR(3, "no recurring task 't'", f, "recurring", "remove", "t");
}

static void test_bad_schedule_in_config_names_file_and_line(void **state)
{
    fx *f = *state;
    init_with(f, TICK_CONFIG);
    write_file(f->cfg, "jobs:\n  Tick: {}\nrecurring:\n  t:\n    class: Tick\n    schedule: \"* 25 * * *\"\n");
    char want[PATH_LEN + 200];
    snprintf(want, sizeof want, "%s:6: recurring.t.schedule: invalid schedule \"* 25 * * *\": hour: 25 is out"
                                " of range 0-23", f->cfg);
    EXPECT_ERROR(2, want, f, "schedule");
    EXPECT_ERROR(2, want, f, "recurring");
    write_file(f->cfg, "scheduler:\n  polling_interval: -1\n");
    snprintf(want, sizeof want, "%s:2: scheduler.polling_interval: must be greater than 0, got -1", f->cfg);
    EXPECT_ERROR(2, want, f, "schedule");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_schedulers_enqueue_each_run_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recurring_add_and_remove_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_schedule_in_config_names_file_and_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
