// ctest-labels: sqlite
/* test_ops.c: the monitoring commands (blocked, running, processes) against states built
 * by a real `baton work` process running real command jobs, on either driver. */
#include <jansson.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baton.h"
#include "support.h"
#include "util/clock.h"

typedef struct fixture {
    char *dir;
    char url[4200], config[4200];
    pid_t worker;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = tmpdir_make();
    test_db_create(f->url, sizeof f->url, f->dir, "baton");
    snprintf(f->config, sizeof f->config, "%s", path_join(f->dir, "baton.yml"));
    write_file(f->config, "jobs:\n"
                          "  Sync:\n"
                          "    command: \"sleep 30\"\n"
                          "    concurrency: {to: 1, key: \"user_{user.id}\"}\n"
                          "  Other:\n"
                          "    command: \"true\"\n"
                          "    concurrency: {to: 1, key: \"other_{0}\"}\n"
                          "  Flaky:\n"
                          "    command: \"test $BATON_ATTEMPT -ge 2\"\n"
                          "    retry: {attempts: 2, backoff: fixed, base: 0}\n"
                          "    concurrency: {to: 1, key: \"flaky_{0}\"}\n");
    run_result r = baton_runv(NULL, "--db", f->url, "init", NULL);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->worker > 0) {
        kill(f->worker, SIGQUIT);
        wait_exit(f->worker, 10000);
    }
    test_db_drop(f->url);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* cli_json runs a baton command with --json appended and returns the parsed output. */
static json_t *cli_json(fixture *f, const char *const *args)
{
    const char *argv[32] = {"--db", f->url, "--config", f->config};
    size_t n = 4;
    for (size_t i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n++] = "--json";
    argv[n] = NULL;
    run_result r = baton_run(NULL, argv);
    if (r.status != 0)
        fail_msg("baton %s failed (%d): %s", args[0], r.status, r.err);
    json_error_t e;
    json_t *doc = json_loads(r.out, 0, &e);
    if (!doc)
        fail_msg("baton %s printed no JSON (%s): %s", args[0], e.text, r.out);
    run_result_free(&r);
    return doc;
}

static void enqueue(fixture *f, const char *cls, const char *args)
{
    run_result r = baton_runv(NULL, "--db", f->url, "--config", f->config, "enqueue", cls, "--args", args, NULL);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
}

/* job_status_cli reads a job's status through `baton job ID --json` (static buffer). */
static const char *job_status_cli(fixture *f, int id)
{
    static char status[16];
    char ids[16];
    snprintf(ids, sizeof ids, "%d", id);
    json_t *j = cli_json(f, (const char *const[]){"job", ids, NULL});
    snprintf(status, sizeof status, "%s", json_string_value(json_object_get(j, "status")));
    json_decref(j);
    return status;
}

static int one_running(void *p)
{
    fixture *f = p;
    json_t *list = cli_json(f, (const char *const[]){"running", NULL});
    size_t n = json_array_size(list);
    json_decref(list);
    return n == 1;
}

/* Three syncs of user 123 with a worker running the first: one running, two blocked. */
static void start_three_syncs(fixture *f)
{
    for (int i = 0; i < 3; i++)
        enqueue(f, "Sync", "{\"user\": {\"id\": 123}}");
    const char *args[] = {"--db", f->url, "--config", f->config, "work", "--threads", "2", NULL};
    f->worker = baton_spawn(NULL, args);
    assert_true(poll_until(one_running, f, 20000));
}

static void test_blocked_lists_waiting_jobs_longest_first_with_key_values(void **state)
{
    fixture *f = *state;
    start_three_syncs(f);
    enqueue(f, "Other", "[7]");
    json_t *list = cli_json(f, (const char *const[]){"blocked", NULL});
    assert_int_equal(json_array_size(list), 2);
    json_t *first = json_array_get(list, 0), *second = json_array_get(list, 1);
    assert_int_equal(json_integer_value(json_object_get(first, "job_id")), 2);
    assert_int_equal(json_integer_value(json_object_get(second, "job_id")), 3);
    assert_string_equal(json_string_value(json_object_get(first, "class")), "Sync");
    assert_string_equal(json_string_value(json_object_get(first, "concurrency_key")), "Sync/user_123");
    assert_true(json_is_string(json_object_get(first, "blocked_since")));
    double w1 = json_number_value(json_object_get(first, "waiting_seconds"));
    double w2 = json_number_value(json_object_get(second, "waiting_seconds"));
    assert_true(w1 >= w2 && w2 >= 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(first, "key_values"), "user.id")), 123);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(first, "arguments"), "user"),
                                                        "id")), 123);
    json_decref(list);

    list = cli_json(f, (const char *const[]){"blocked", "--key", "Sync/user_999", NULL});
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    list = cli_json(f, (const char *const[]){"blocked", "--class", "Other", NULL});
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    /* The table says what the key was built from and how long it waited. */
    run_result r = baton_runv(NULL, "--db", f->url, "--config", f->config, "blocked", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "user.id=123"));
    assert_non_null(strstr(r.out, "WAITING"));
    run_result_free(&r);
}

static void test_running_and_processes_show_where_jobs_run(void **state)
{
    fixture *f = *state;
    start_three_syncs(f);
    json_t *list = cli_json(f, (const char *const[]){"running", NULL});
    json_t *job = json_array_get(list, 0);
    assert_int_equal(json_integer_value(json_object_get(job, "job_id")), 1);
    assert_int_equal(json_integer_value(json_object_get(job, "pid")), f->worker);
    assert_string_equal(json_string_value(json_object_get(job, "process_kind")), "worker");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    assert_string_equal(json_string_value(json_object_get(job, "hostname")), host);
    assert_true(json_number_value(json_object_get(job, "running_seconds")) >= 0);
    assert_true(json_is_string(json_object_get(job, "started_at")));
    int64_t process_id = json_integer_value(json_object_get(job, "process_id"));
    json_decref(list);

    list = cli_json(f, (const char *const[]){"running", "--longer-than", "3600", NULL});
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    list = cli_json(f, (const char *const[]){"processes", NULL});
    assert_int_equal(json_array_size(list), 1);
    json_t *p = json_array_get(list, 0);
    assert_int_equal(json_integer_value(json_object_get(p, "id")), process_id);
    assert_string_equal(json_string_value(json_object_get(p, "kind")), "worker");
    assert_int_equal(json_integer_value(json_object_get(p, "pid")), f->worker);
    assert_true(json_number_value(json_object_get(p, "heartbeat_age_seconds")) < 30);
    json_t *running = json_object_get(p, "running");
    assert_int_equal(json_array_size(running), 1);
    assert_int_equal(json_integer_value(json_array_get(running, 0)), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "metadata"), "threads")), 2);
    json_decref(list);

    run_result r = baton_runv(NULL, "--db", f->url, "running", "--longer-than", "-1", NULL);
    assert_int_equal(r.status, 2);
    run_result_free(&r);
}

/* run_cli runs a baton command (without --json) and returns its result. */
static run_result run_cli(fixture *f, const char *const *args)
{
    const char *argv[32] = {"--db", f->url, "--config", f->config};
    size_t n = 4;
    for (size_t i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return baton_run(NULL, argv);
}

static void expect_refusal(fixture *f, const char *const *args, const char *words)
{
    run_result r = run_cli(f, args);
    if (r.status != 1 || !strstr(r.err, words))
        fail_msg("baton %s: expected exit 1 and \"%s\", got %d: %s", args[0], words, r.status, r.err);
    run_result_free(&r);
}

static json_t *semaphore(fixture *f, const char *key)
{
    json_t *list = cli_json(f, (const char *const[]){"semaphores", "--key", key, NULL});
    json_t *s = json_incref(json_array_get(list, 0));
    json_decref(list);
    return s;
}

/* quick_liveness makes processes heartbeat every 0.2 s and count as dead after 2 s. */
static void quick_liveness(fixture *f)
{
    char *yaml = read_file(f->config);
    char text[1024];
    snprintf(text, sizeof text, "process_heartbeat_interval: 0.2\nprocess_alive_threshold: 2\n%s", yaml);
    write_file(f->config, text);
    free(yaml);
}

static int heartbeat_older_than_threshold(void *p)
{
    fixture *f = p;
    json_t *list = cli_json(f, (const char *const[]){"processes", NULL});
    double age = json_number_value(json_object_get(json_array_get(list, 0), "heartbeat_age_seconds"));
    json_decref(list);
    return age > 2.0;
}

/* A worker killed with SIGKILL leaves its slot held until it is pruned; semaphore clear
 * refuses while the holder's process could still be alive, then frees the key and admits
 * the next job, never more than the limit. */
static void test_semaphore_clear_frees_a_dead_workers_slot(void **state)
{
    fixture *f = *state;
    quick_liveness(f);
    start_three_syncs(f);
    expect_refusal(f, (const char *const[]){"semaphore", "clear", "Sync/user_123", NULL}, "job 1 runs in process");
    kill(f->worker, SIGKILL);
    wait_exit(f->worker, 10000);
    f->worker = 0;
    /* The dead worker's heartbeat ages past the threshold: now the slot is stale. */
    assert_true(poll_until(heartbeat_older_than_threshold, f, 10000));
    run_result r = run_cli(f, (const char *const[]){"semaphore", "clear", "Sync/user_123", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "1 slot cleared, 1 blocked job admitted"));
    run_result_free(&r);
    json_t *s = semaphore(f, "Sync/user_123");
    assert_int_equal(json_array_size(json_object_get(s, "holders")), 1);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "holders"), 0)), 2);
    assert_int_equal(json_integer_value(json_object_get(s, "blocked")), 1);
    json_decref(s);
    assert_string_equal(job_status_cli(f, 2), "ready");
    /* A ready holder is a real slot: clearing again needs --force. */
    expect_refusal(f, (const char *const[]){"semaphore", "clear", "Sync/user_123", NULL}, "job 2 is ready");
}

static void test_unblock_respects_the_limit_unless_forced(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 3; i++)
        enqueue(f, "Sync", "{\"user\": {\"id\": 5}}");
    expect_refusal(f, (const char *const[]){"unblock", "2", NULL}, "key Sync/user_5 is full (1 of 1 slots held)");
    expect_refusal(f, (const char *const[]){"unblock", "1", NULL}, "job 1 is ready, not blocked");
    run_result r = run_cli(f, (const char *const[]){"unblock", "--key", "Sync/user_5", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "0 jobs of Sync/user_5 admitted"));
    run_result_free(&r);
    assert_string_equal(job_status_cli(f, 2), "blocked");
    r = run_cli(f, (const char *const[]){"unblock", "2", "--force", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "past its key's limit"));
    run_result_free(&r);
    assert_string_equal(job_status_cli(f, 2), "ready");
    json_t *s = semaphore(f, "Sync/user_5");
    assert_int_equal(json_array_size(json_object_get(s, "holders")), 2);
    json_decref(s);
    r = run_cli(f, (const char *const[]){"unblock", "77", NULL});
    assert_int_equal(r.status, 3);
    run_result_free(&r);
}

static json_t *doctor(fixture *f, int repair, int expect_status)
{
    const char *argv[] = {"--db", f->url, "--config", f->config, "doctor", "--json", repair ? "--repair" : NULL, NULL};
    run_result r = baton_run(NULL, argv);
    if (r.status != expect_status)
        fail_msg("baton doctor%s: exit %d, expected %d: %s %s", repair ? " --repair" : "", r.status, expect_status,
                 r.out, r.err);
    json_t *doc = json_loads(r.out, 0, NULL);
    assert_non_null(doc);
    run_result_free(&r);
    return doc;
}

static int has_kind(json_t *list, const char *kind)
{
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o) if (strcmp(json_string_value(json_object_get(o, "kind")), kind) == 0) return 1;
    return 0;
}

/* A SIGKILLed worker leaves a claim and a slot behind. Silent past its threshold with
 * nobody else beating, it may be the database that was away: doctor says so and repairs
 * nothing. Once a live process has beaten for a whole threshold, doctor explains it and
 * --repair prunes the dead process, which fails its job and hands the slot to the next
 * one only. */
static void test_doctor_repairs_a_dead_workers_claims_within_the_limit(void **state)
{
    fixture *f = *state;
    quick_liveness(f);
    json_t *doc = doctor(f, 0, 0);
    assert_int_equal(json_array_size(json_object_get(doc, "problems")), 0);
    json_decref(doc);
    start_three_syncs(f);
    kill(f->worker, SIGKILL);
    wait_exit(f->worker, 10000);
    f->worker = 0;
    assert_true(poll_until(heartbeat_older_than_threshold, f, 10000));
    doc = doctor(f, 0, 1);
    assert_true(has_kind(json_object_get(doc, "problems"), "silent_process_claims"));
    assert_false(has_kind(json_object_get(doc, "problems"), "dead_process_claims"));
    json_decref(doc);
    doc = doctor(f, 1, 1);
    assert_int_equal(json_array_size(json_object_get(doc, "repaired")), 0);
    json_decref(doc);
    /* A process that has beaten without a break for a minute (one that prunes nobody
     * itself, so the repair is the doctor's). */
    bt_store *db = test_db_open(f->url);
    test_db_exec(db, "INSERT INTO baton_processes (kind, name, pid, hostname, last_heartbeat_at, created_at,"
                     " alive_threshold, beat, beats_since)"
                     " VALUES ('worker', 'witness', 1, 'here', 0, 0, 600000, baton_clock(), baton_clock() - 60000)");
    bt_store_close(db);
    doc = doctor(f, 0, 1);
    assert_true(has_kind(json_object_get(doc, "problems"), "dead_process_claims"));
    json_decref(doc);
    doc = doctor(f, 1, 0);
    assert_true(has_kind(json_object_get(doc, "repaired"), "dead_process_claims"));
    assert_int_equal(json_array_size(json_object_get(doc, "problems")), 0);
    json_decref(doc);
    assert_string_equal(job_status_cli(f, 1), "failed");
    assert_string_equal(job_status_cli(f, 2), "ready");
    assert_string_equal(job_status_cli(f, 3), "blocked");
    json_t *s = semaphore(f, "Sync/user_123");
    assert_int_equal(json_array_size(json_object_get(s, "holders")), 1);
    json_decref(s);
    run_result r = run_cli(f, (const char *const[]){"doctor", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "no problems found"));
    run_result_free(&r);
}

/* A key an operator forced past its limit is reported, and left to heal by itself. */
static void test_doctor_reports_a_key_over_its_limit_without_touching_it(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 2; i++)
        enqueue(f, "Sync", "{\"user\": {\"id\": 5}}");
    run_result r = run_cli(f, (const char *const[]){"unblock", "2", "--force", NULL});
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    json_t *doc = doctor(f, 1, 1);
    assert_true(has_kind(json_object_get(doc, "problems"), "key_over_limit"));
    assert_int_equal(json_array_size(json_object_get(doc, "repaired")), 0);
    json_decref(doc);
    assert_string_equal(job_status_cli(f, 1), "ready");
    assert_string_equal(job_status_cli(f, 2), "ready");
}

static int other_finished(void *p) { return strcmp(job_status_cli(p, 4), "finished") == 0; }

static json_t *find_named(json_t *list, const char *field, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o) if (strcmp(json_string_value(json_object_get(o, field)), name) == 0) return o;
    return NULL;
}

static void test_stats_and_metrics_count_what_runs_and_waits(void **state)
{
    fixture *f = *state;
    start_three_syncs(f);
    enqueue(f, "Other", "[1]");
    assert_true(poll_until(other_finished, f, 20000));
    json_t *doc = cli_json(f, (const char *const[]){"stats", "--since", "600", NULL});
    assert_int_equal((int)json_number_value(json_object_get(doc, "window_seconds")), 600);
    json_t *sync = find_named(json_object_get(doc, "classes"), "class", "Sync");
    assert_non_null(sync);
    json_t *counts = json_object_get(sync, "counts");
    assert_int_equal(json_integer_value(json_object_get(counts, "claimed")), 1);
    assert_int_equal(json_integer_value(json_object_get(counts, "blocked")), 2);
    assert_int_equal(json_integer_value(json_object_get(sync, "blocked_keys")), 1);
    json_t *top = json_array_get(json_object_get(sync, "top_blocked_keys"), 0);
    assert_string_equal(json_string_value(json_object_get(top, "key")), "Sync/user_123");
    assert_int_equal(json_integer_value(json_object_get(top, "blocked")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sync, "wait_seconds"), "samples")), 1);
    json_t *other = find_named(json_object_get(doc, "classes"), "class", "Other");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(other, "counts"), "finished")), 1);
    assert_int_equal(json_integer_value(json_object_get(other, "finished")), 1);
    assert_true(json_number_value(json_object_get(other, "per_minute")) > 0);
    assert_true(json_number_value(json_object_get(json_object_get(other, "wait_seconds"), "max")) >= 0);
    json_t *queue = find_named(json_object_get(doc, "queues"), "queue", "default");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(queue, "counts"), "blocked")), 2);
    json_decref(doc);

    run_result r = run_cli(f, (const char *const[]){"metrics", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "# TYPE baton_jobs gauge\n"));
    assert_non_null(strstr(r.out, "baton_jobs{class=\"Sync\",status=\"blocked\"} 2\n"));
    assert_non_null(strstr(r.out, "baton_blocked_keys{class=\"Sync\"} 1\n"));
    assert_non_null(strstr(r.out, "baton_jobs_finished_5m{class=\"Other\"} 1\n"));
    char running[128];
    snprintf(running, sizeof running, "baton_process_running_jobs{kind=\"worker\",process_id=\"1\"");
    assert_non_null(strstr(r.out, running));
    run_result_free(&r);

    r = run_cli(f, (const char *const[]){"stats", "--since", "0", NULL});
    assert_int_equal(r.status, 2);
    run_result_free(&r);
}

/* top in a pseudo-terminal renders its sections, refreshes, and quits on q; without a
 * terminal it prints one picture as plain tables. */
static void test_top_renders_in_a_terminal_and_quits_on_q(void **state)
{
    fixture *f = *state;
    enqueue(f, "Sync", "{\"user\": {\"id\": 9}}");
    enqueue(f, "Sync", "{\"user\": {\"id\": 9}}");
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(getenv("BATON_BIN"), "baton", "--db", f->url, "--config", f->config, "top", (char *)NULL);
        _exit(127);
    }
    char out[65536];
    size_t len = 0;
    int frames = 0;
    int64_t deadline = bt_mono_ns() + 30LL * 1000000000LL;
    /* Two frames: the picture is redrawn, not printed once. */
    while (frames < 2 && bt_mono_ns() < deadline && len < sizeof out - 1) {
        struct pollfd p = {master, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(master, out + len, sizeof out - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        out[len] = '\0';
        frames = 0;
        for (const char *q = out; (q = strstr(q, "Processes")); q++)
            frames++;
    }
    assert_int_equal(frames, 2);
    assert_non_null(strstr(out, "(q quits)"));
    assert_non_null(strstr(out, "Sync/user_9"));
    assert_int_equal(write(master, "q", 1), 1);
    /* Drain the rest so the child never blocks writing its last frame. */
    int status = -1;
    while (bt_mono_ns() < deadline) {
        char sink[4096];
        struct pollfd p = {master, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
            ssize_t drained = read(master, sink, sizeof sink);
            (void)drained; /* EOF or EIO once the child is gone: waitpid tells */
        }
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
    }
    close(master);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    run_result r = run_cli(f, (const char *const[]){"top", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "Queues\nQUEUE"));
    assert_null(strstr(r.out, "\033["));
    run_result_free(&r);
}

static int both_finished(void *p)
{
    return strcmp(job_status_cli(p, 1), "finished") == 0 && strcmp(job_status_cli(p, 2), "finished") == 0;
}

static int first_finished(void *p) { return strcmp(job_status_cli(p, 1), "finished") == 0; }

/* expect_latest_claimer checks that job id's history names the worker with that pid, on
 * this host, as the process that claimed its latest attempt, in JSON and in text. */
static void expect_latest_claimer(fixture *f, int id, pid_t worker)
{
    char ids[16], host[256] = "", name[400];
    snprintf(ids, sizeof ids, "%d", id);
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "worker-%s-%d", host, (int)worker);
    json_t *job = cli_json(f, (const char *const[]){"job", ids, NULL});
    json_t *process = NULL, *e;
    size_t i;
    json_array_foreach(json_object_get(job, "history"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "event")), "claimed") == 0)
            process = json_object_get(e, "process");
    }
    if (!json_is_string(json_object_get(process, "name")))
        fail_msg("job %d: the latest claim names no process", id);
    assert_string_equal(json_string_value(json_object_get(process, "name")), name);
    assert_string_equal(json_string_value(json_object_get(process, "hostname")), host);
    assert_string_equal(json_string_value(json_object_get(process, "kind")), "worker");
    assert_int_equal(json_integer_value(json_object_get(process, "pid")), worker);
    json_decref(job);
    run_result r = run_cli(f, (const char *const[]){"job", ids, NULL});
    assert_int_equal(r.status, 0);
    char shown[420];
    snprintf(shown, sizeof shown, "process=%s\n", name);
    if (!strstr(r.out, shown))
        fail_msg("baton job %d does not show %s: %s", id, shown, r.out);
    run_result_free(&r);
}

static size_t registered_processes(fixture *f)
{
    json_t *list = cli_json(f, (const char *const[]){"processes", NULL});
    size_t n = json_array_size(list);
    json_decref(list);
    return n;
}

static int only_the_worker(void *p)
{
    fixture *f = p;
    json_t *list = cli_json(f, (const char *const[]){"processes", NULL});
    int only = json_array_size(list) == 1 &&
               json_integer_value(json_object_get(json_array_get(list, 0), "pid")) == f->worker;
    json_decref(list);
    return only;
}

/* A job's history tells how it waited, where each attempt ran and how it ended. */
static void test_job_history_tells_waits_attempts_and_ends(void **state)
{
    fixture *f = *state;
    enqueue(f, "Flaky", "[1]");
    enqueue(f, "Flaky", "[1]");
    const char *args[] = {"--db", f->url, "--config", f->config, "work", "--threads", "2", NULL};
    f->worker = baton_spawn(NULL, args);
    assert_true(poll_until(both_finished, f, 30000));
    /* The worker stops and deregisters: its history stays whole. */
    pid_t worker = f->worker;
    kill(worker, SIGTERM);
    assert_int_equal(wait_exit(worker, 10000), 0);
    f->worker = 0;
    assert_int_equal(registered_processes(f), 0);
    json_t *job = cli_json(f, (const char *const[]){"job", "2", NULL});
    json_t *history = json_object_get(job, "history");
    char names[256] = "";
    size_t i;
    json_t *e;
    json_array_foreach(history, i, e)
    {
        strcat(names, json_string_value(json_object_get(e, "event")));
        strcat(names, " ");
    }
    /* Job 2 waited for job 1's slot from its enqueue, failed once, waited again (job 1's
     * retry held the key, or not: then it was admitted at once), and finished on its
     * second attempt. */
    const char *first = "enqueued blocked unblocked claimed retried ";
    if (strncmp(names, first, strlen(first)) != 0 || !strstr(names, "claimed finished "))
        fail_msg("unexpected history: %s", names);
    /* When the last attempt waited, its wait shows too: blocked, then unblocked. */
    const char *last_wait = strstr(names + strlen(first), "unblocked");
    if (last_wait && strncmp(last_wait - 8, "blocked ", 8) != 0)
        fail_msg("the last attempt's wait has no blocked event: %s", names);
    json_t *enqueued = json_array_get(history, 0), *blocked = json_array_get(history, 1);
    assert_int_equal(json_integer_value(json_object_get(blocked, "at_ms")),
                     json_integer_value(json_object_get(enqueued, "at_ms")));
    json_t *unblocked = json_array_get(history, 2);
    assert_string_equal(json_string_value(json_object_get(unblocked, "by")), "release of job 1");
    json_t *retried = json_array_get(history, 4);
    assert_string_equal(json_string_value(json_object_get(retried, "error")), "exit status 1");
    assert_int_equal(json_integer_value(json_object_get(retried, "attempt")), 1);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(retried, "process"), "name")), "worker-"));
    json_decref(job);
    expect_latest_claimer(f, 2, worker);
}

/* A worker killed after it finished a job, and pruned by another worker, is still named as
 * the process that ran the job. */
static void test_job_history_names_a_killed_and_pruned_worker(void **state)
{
    fixture *f = *state;
    quick_liveness(f);
    enqueue(f, "Other", "[1]");
    const char *args[] = {"--db", f->url, "--config", f->config, "work", NULL};
    pid_t killed = baton_spawn(NULL, args);
    assert_true(poll_until(first_finished, f, 30000));
    kill(killed, SIGKILL);
    assert_int_equal(wait_exit(killed, 10000), 128 + SIGKILL);
    f->worker = baton_spawn(NULL, args);
    assert_true(poll_until(only_the_worker, f, 20000));
    expect_latest_claimer(f, 1, killed);
}

static int one_blocked(void *p)
{
    json_t *list = cli_json(p, (const char *const[]){"blocked", NULL});
    size_t n = json_array_size(list);
    json_decref(list);
    return n == 1;
}

/* A `baton perform` stopped by TERM (Ctrl-C, a deploy) while its job waits for a slot
 * discards that job, so it never runs later, and leaves no process row behind. */
static void test_perform_stopped_while_waiting_discards_its_job(void **state)
{
    fixture *f = *state;
    enqueue(f, "Sync", "{\"user\": {\"id\": 9}}"); /* holds the key's slot: nobody runs it */
    char log[4300];
    snprintf(log, sizeof log, "%s", path_join(f->dir, "perform.log"));
    const char *args[] = {"--db", f->url, "--config", f->config, "perform", "Sync", "--args",
                          "{\"user\": {\"id\": 9}}", "--wait-timeout", "60", NULL};
    f->worker = baton_spawn(log, args);
    assert_true(poll_until(one_blocked, f, 20000));
    assert_int_equal(kill(f->worker, SIGTERM), 0);
    int st = wait_exit(f->worker, 10000);
    f->worker = 0;
    char *out = read_file(log);
    if (st != 1 || !out || !strstr(out, "stopped"))
        fail_msg("baton perform after TERM: exit %d, output: %s", st, out ? out : "(none)");
    free(out);
    assert_string_equal(job_status_cli(f, 2), "discarded");
    assert_int_equal(registered_processes(f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_blocked_lists_waiting_jobs_longest_first_with_key_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running_and_processes_show_where_jobs_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_clear_frees_a_dead_workers_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perform_stopped_while_waiting_discards_its_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unblock_respects_the_limit_unless_forced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doctor_repairs_a_dead_workers_claims_within_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_and_metrics_count_what_runs_and_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_top_renders_in_a_terminal_and_quits_on_q, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_history_tells_waits_attempts_and_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_history_names_a_killed_and_pruned_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doctor_reports_a_key_over_its_limit_without_touching_it, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
