// ctest-labels: sqlite concurrency
/* test_supervisor.c: `baton start` as real forked processes, signals and a SQLite file.
 *
 * Jobs are tests/support/jobprobe ($BATON_JOBPROBE), which logs `KEY JOB ATTEMPT start|tick|
 * end T ...` lines on CLOCK_MONOTONIC; a run killed mid-way ends at its last tick. The
 * overlap check replays that log: no two runs of one limit-1 key may overlap. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"
#include "support.h"
#include "util/clock.h"

typedef struct fixture {
    char *dir;
    char url[4200], config[4096], log[4096], out[4096], pidfile[4096];
    baton_client *client;
    bt_store *sql;
    pid_t supervisor;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = tmpdir_make();
    test_db_create(f->url, sizeof f->url, f->dir, "baton");
    snprintf(f->config, sizeof f->config, "%s", path_join(f->dir, "baton.yml"));
    snprintf(f->log, sizeof f->log, "%s", path_join(f->dir, "probe.log"));
    snprintf(f->out, sizeof f->out, "%s", path_join(f->dir, "supervisor.log"));
    snprintf(f->pidfile, sizeof f->pidfile, "%s", path_join(f->dir, "baton.pid"));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->supervisor > 0) {
        kill(f->supervisor, SIGQUIT);
        wait_exit(f->supervisor, 10000);
    }
    /* Every child stops with its supervisor, however it died: none is left holding the
     * test's files (an orphan would go on claiming jobs with nobody to stop it). */
    int orphans = wait_none_holding(f->dir, 15000);
    if (orphans)
        fprintf(stderr, "%d processes outlived their supervisor, holding files of %s\n", orphans, f->dir);
    bt_store_close(f->sql);
    baton_close(f->client);
    test_db_drop(f->url);
    const char *keep = getenv("BATON_KEEP_TMP"); /* for a post-mortem of the logs */
    if (keep && *keep == '1')
        fprintf(stderr, "kept %s\n", f->dir), free(f->dir);
    else
        tmpdir_remove(f->dir);
    free(f);
    return orphans ? -1 : 0;
}

/* Liveness for tests that stop or kill children: heartbeat every 0.2 s, dead after 3 s,
 * so the watchdog acts once a heartbeat is 1.5 s late. */
#define FAST_LIVENESS "process_heartbeat_interval: 0.2\nprocess_alive_threshold: 3\n"

static void open_queue(fixture *f, const char *yaml)
{
    write_file(f->config, yaml);
    assert_int_equal(baton_open(&f->client, f->url), BATON_OK);
    assert_int_equal(baton_migrate(f->client), BATON_OK);
    if (baton_load_config(f->client, f->config) != BATON_OK)
        fail_msg("baton.yml refused: %s\n%s", baton_error_last(), yaml);
    f->sql = test_db_open(f->url);
}

static pid_t start_supervisor_as(fixture *f, const char *shutdown_timeout, int own_group)
{
    const char *args[] = {"--db", f->url, "--config", f->config, "start", "--pidfile", f->pidfile,
                          "--shutdown-timeout", shutdown_timeout, NULL};
    f->supervisor = own_group ? baton_spawn_group(f->out, args) : baton_spawn(f->out, args);
    return f->supervisor;
}

static pid_t start_supervisor(fixture *f, const char *shutdown_timeout)
{
    return start_supervisor_as(f, shutdown_timeout, 0);
}

static int stop_supervisor(fixture *f, int sig)
{
    kill(f->supervisor, sig);
    int status = wait_exit(f->supervisor, 30000);
    f->supervisor = 0;
    return status;
}

/* sql_int runs a query returning one integer (0 when no row). */
static int64_t sql_int(fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int64_t sql_int(fixture *f, const char *fmt, ...)
{
    char q[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    return test_db_int(f->sql, q);
}

typedef struct count_query {
    fixture *f;
    const char *sql;
    int64_t want;
} count_query;

static int count_reached(void *p)
{
    count_query *q = p;
    return sql_int(q->f, "%s", q->sql) >= q->want;
}

/* wait_count fails unless the query's count reaches want within timeout_ms. */
static void wait_count(fixture *f, const char *sql, int64_t want, int timeout_ms)
{
    count_query q = {f, sql, want};
    if (!poll_until(count_reached, &q, timeout_ms))
        fail_msg("waited %d ms for %s to reach %lld, it is %lld (log: %s)", timeout_ms, sql, (long long)want,
                 (long long)sql_int(f, "%s", sql), f->out);
}

static int64_t supervisor_row(fixture *f)
{
    return sql_int(f, "SELECT id FROM baton_processes WHERE kind = 'supervisor' AND pid = %d", (int)f->supervisor);
}

/* worker_running returns the pid of the worker whose claim holds job id (0 when none). */
static pid_t worker_running(fixture *f, int64_t id)
{
    return (pid_t)sql_int(f, "SELECT p.pid FROM baton_claimed_executions c JOIN baton_processes p"
                             " ON p.id = c.process_id WHERE c.job_id = %lld", (long long)id);
}

/* ---- the probe log: runs and overlaps ---- */

typedef struct probe_run {
    char key[64];
    long long job, attempt, start, last;
    int pid, ended;
} probe_run;

static probe_run *read_runs(fixture *f, size_t *n_out)
{
    char *text = read_file(f->log);
    probe_run *runs = NULL;
    size_t n = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char key[64], what[16];
        long long job, attempt, t;
        int pid = 0;
        if (sscanf(line, "%63s %lld %lld %15s %lld %d", key, &job, &attempt, what, &t, &pid) < 5)
            continue;
        size_t i = 0;
        while (i < n && !(runs[i].job == job && runs[i].attempt == attempt))
            i++;
        if (i == n) {
            runs = realloc(runs, (n + 1) * sizeof *runs);
            runs[n] = (probe_run){.job = job, .attempt = attempt, .start = t, .last = t};
            snprintf(runs[n].key, sizeof runs[n].key, "%s", key);
            n++;
        }
        if (strcmp(what, "start") == 0)
            runs[i].pid = pid;
        if (t > runs[i].last)
            runs[i].last = t;
        runs[i].ended |= strcmp(what, "end") == 0;
    }
    free(text);
    *n_out = n;
    return runs;
}

/* assert_no_overlap fails when two runs of one key were alive at the same instant. */
static void assert_no_overlap(fixture *f)
{
    size_t n;
    probe_run *runs = read_runs(f, &n);
    for (size_t i = 0; i < n; i++)
        for (size_t k = i + 1; k < n; k++)
            if (strcmp(runs[i].key, runs[k].key) == 0 && runs[i].start < runs[k].last &&
                runs[k].start < runs[i].last)
                fail_msg("key %s: job %lld attempt %lld [%lld, %lld] overlaps job %lld attempt %lld [%lld, %lld]",
                         runs[i].key, runs[i].job, runs[i].attempt, runs[i].start, runs[i].last, runs[k].job,
                         runs[k].attempt, runs[k].start, runs[k].last);
    free(runs);
}

/* probe_pid returns the pid of the probe running job id's attempt (0 when not logged). */
static int probe_pid(fixture *f, int64_t id, int attempt)
{
    size_t n;
    probe_run *runs = read_runs(f, &n);
    int pid = 0;
    for (size_t i = 0; i < n; i++)
        if (runs[i].job == id && runs[i].attempt == attempt)
            pid = runs[i].pid;
    free(runs);
    return pid;
}

typedef struct probe_wait {
    fixture *f;
    int64_t id;
    int attempt;
} probe_wait;

static int probe_started(void *p)
{
    probe_wait *w = p;
    return probe_pid(w->f, w->id, w->attempt) != 0;
}

static int process_gone(void *p)
{
    pid_t pid = *(pid_t *)p;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

typedef struct log_wait {
    const char *path, *needle;
} log_wait;

/* The supervisor logs a killed child just after reaping it, so the line may trail the
 * child's disappearance. */
static int log_contains(void *p)
{
    log_wait *w = p;
    char *out = read_file(w->path);
    int found = out && strstr(out, w->needle);
    free(out);
    return found;
}

static void probe_classes(fixture *f, char *yaml, size_t size, const char *liveness, const char *workers,
                          int ms)
{
    int n = snprintf(yaml, size,
                     "%s%s"
                     "jobs:\n"
                     "  Probe:\n"
                     "    command: \"'%s' '%s' %d\"\n"
                     "    retry: {attempts: 5, backoff: fixed, base: 0}\n"
                     "    concurrency: {to: 1, key: \"k{key}\", duration: 1}\n",
                     liveness, workers, getenv("BATON_JOBPROBE"), f->log, ms);
    if (n < 0 || (size_t)n >= size)
        fail_msg("the configuration of the test does not fit in %zu bytes", size);
}

static int64_t enqueue_probe(fixture *f, int key)
{
    char args[32];
    snprintf(args, sizeof args, "{\"key\": %d}", key);
    int64_t id = 0;
    assert_int_equal(baton_enqueue(f->client, &id, "Probe", args, NULL), BATON_OK);
    return id;
}

/* ---- tests ---- */

typedef struct title_wait {
    pid_t pid;
    const char *text;
} title_wait;

static int title_shows(void *p)
{
    title_wait *t = p;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)t->pid);
    char *cmdline = read_file(path);
    int shows = cmdline && strstr(cmdline, t->text) != NULL;
    free(cmdline);
    return shows;
}

static void test_starts_configured_processes_and_titles(void **state)
{
    fixture *f = *state;
    open_queue(f, "workers:\n"
                  "  - queues: [high, default]\n    threads: 2\n    processes: 2\n"
                  "  - queues: [\"*\"]\n    threads: 1\n"
                  "dispatchers:\n  - polling_interval: 0.5\n");
    start_supervisor(f, "5");
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'worker' AND supervisor_id IS NOT NULL", 3,
               20000);
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'dispatcher' AND supervisor_id IS NOT NULL",
               1, 20000);
    int64_t sup = supervisor_row(f);
    assert_true(sup > 0);
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'scheduler' AND supervisor_id IS NOT NULL",
               1, 20000);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE supervisor_id = %lld", (long long)sup), 5);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE supervisor_id IS NOT NULL AND"
                                " supervisor_id <> %lld", (long long)sup), 0);
    /* ps shows each child's role and state. */
    /* A worker registers before its first round sets its title. */
    title_wait t = {(pid_t)sql_int(f, "SELECT pid FROM baton_processes WHERE kind = 'worker' LIMIT 1"),
                    "baton-worker: queues="};
    assert_true(poll_until(title_shows, &t, 5000));
    t.text = " busy=0";
    assert_true(poll_until(title_shows, &t, 5000));
    /* The supervisor retitles itself once it has seen every child start. */
    t = (title_wait){f->supervisor, "baton-supervisor: running workers=3 dispatchers=1 scheduler=1"};
    if (!poll_until(title_shows, &t, 5000)) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)f->supervisor);
        char *cmdline = read_file(path);
        fail_msg("the supervisor's title is '%s'", cmdline ? cmdline : "(none)");
    }

    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);
    assert_int_equal(access(f->pidfile, F_OK), -1); /* removed at exit */
}

static void test_only_runs_the_named_kinds(void **state)
{
    fixture *f = *state;
    open_queue(f, "");
    const char *args[] = {"--db", f->url, "--config", f->config, "start", "--only", "scheduler,dispatchers", NULL};
    f->supervisor = baton_spawn(f->out, args);
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'scheduler'", 1, 20000);
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'dispatcher'", 1, 20000);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'worker'"), 0);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    run_result r = baton_runv(NULL, "--db", f->url, "--config", f->config, "start", "--only", "workers,cooks", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown process kind \"cooks\""));
    run_result_free(&r);
}

static void test_pidfile_refuses_second_supervisor(void **state)
{
    fixture *f = *state;
    open_queue(f, "");
    start_supervisor(f, "5");
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'worker'", 1, 20000);
    run_result r = baton_runv(NULL, "--db", f->url, "--config", f->config, "start", "--pidfile", f->pidfile, NULL);
    assert_int_not_equal(r.status, 0);
    char expect[128];
    snprintf(expect, sizeof expect, "is held by a running supervisor (pid %d)\n", (int)f->supervisor);
    if (!strstr(r.err, expect) || strchr(r.err, '\n') != r.err + strlen(r.err) - 1)
        fail_msg("unexpected stderr: %s", r.err);
    run_result_free(&r);
    /* Nothing of the refused one was started. */
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'supervisor'"), 1);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    /* A pidfile left by a supervisor that is gone does not block the next one. */
    write_file(f->pidfile, "999999\n");
    start_supervisor(f, "5");
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'worker'", 1, 20000);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
}

/* A worker killed with SIGKILL is replaced at once; its job is failed as "process pruned"
 * and retried per its policy, never left claimed by the dead process. */
static void test_killed_worker_is_replaced_and_its_job_retried(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, "", "workers:\n  - queues: [\"*\"]\n    threads: 2\n", 30000);
    open_queue(f, yaml);
    int64_t id = enqueue_probe(f, 1);
    start_supervisor(f, "5");
    probe_wait pw = {f, id, 1};
    assert_true(poll_until(probe_started, &pw, 20000));
    pid_t worker = worker_running(f, id);
    pid_t probe = probe_pid(f, id, 1);
    assert_true(worker > 0);
    kill(worker, SIGKILL);
    /* The second attempt runs at once: no alive threshold (30 s by default) was waited for. */
    pw.attempt = 2;
    assert_true(poll_until(probe_started, &pw, 10000));
    assert_true(poll_until(process_gone, &probe, 5000));
    pid_t replacement = worker_running(f, id);
    assert_true(replacement > 0 && replacement != worker);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE pid = %d", (int)worker), 0);
    json_t *j = job_json(f->client, id);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "process pruned");
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    json_decref(j);
    assert_int_equal(stop_supervisor(f, SIGQUIT), 0);
    assert_no_overlap(f);
}

/* A stopped worker (SIGSTOP) keeps its command jobs running; the watchdog kills it and its
 * jobs once its heartbeat is late by half the alive threshold, and the next jobs of the
 * key start only after that. */
static void test_watchdog_kills_stopped_worker_and_its_jobs(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, FAST_LIVENESS, "workers:\n  - queues: [\"*\"]\n    threads: 2\n    processes: 2\n",
                  3000);
    open_queue(f, yaml);
    int64_t first = enqueue_probe(f, 1);
    for (int i = 0; i < 3; i++)
        enqueue_probe(f, 1);
    start_supervisor(f, "5");
    probe_wait pw = {f, first, 1};
    assert_true(poll_until(probe_started, &pw, 20000));
    pid_t worker = worker_running(f, first);
    pid_t probe = probe_pid(f, first, 1);
    assert_true(worker > 0);
    kill(worker, SIGSTOP);
    assert_true(poll_until(process_gone, &probe, 10000));
    pid_t w = worker;
    assert_true(poll_until(process_gone, &w, 10000));
    char needle[96];
    snprintf(needle, sizeof needle, "kind=worker child_pid=%d signal=9 reason=\"no heartbeat for", (int)worker);
    log_wait lw = {f->out, needle};
    assert_true(poll_until(log_contains, &lw, 5000));
    /* Every job, the interrupted one included, ends finished, one at a time. */
    wait_count(f, "SELECT COUNT(*) FROM baton_jobs WHERE status = 'finished'", 4, 60000);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_no_overlap(f);
}

/* A supervisor and its worker child, both stopped past the alive threshold, are pruned by
 * the dispatcher child, which beats on. The supervisor continues first and registers again
 * under a new id; then the worker continues and registers again too, naming the id its
 * supervisor had when it forked it. The supervisor must still know the worker as its child
 * (its row is made to name the new id), not kill it for a heartbeat it cannot see. */
static void test_stopped_supervisor_registers_again_and_keeps_its_children(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, FAST_LIVENESS,
                  "workers:\n  - queues: [\"*\"]\n    threads: 1\ndispatchers:\n  - polling_interval: 0.2\n", 100);
    open_queue(f, yaml);
    start_supervisor(f, "5");
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE supervisor_id IS NOT NULL", 3, 20000);
    /* Two more rounds of the supervisor (each ends with its heartbeat): its watchdog has
     * seen every child's beat, as it has in any supervisor that ran for a while. */
    for (int round = 0; round < 2; round++) {
        char beat[160];
        snprintf(beat, sizeof beat, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'supervisor' AND beat <> %lld",
                 (long long)sql_int(f, "SELECT beat FROM baton_processes WHERE kind = 'supervisor'"));
        wait_count(f, beat, 1, 10000);
    }
    int64_t first = supervisor_row(f), children = sql_int(f, "SELECT COUNT(*) FROM baton_processes"
                                                             " WHERE supervisor_id = %lld", (long long)first);
    pid_t worker = (pid_t)sql_int(f, "SELECT pid FROM baton_processes WHERE kind = 'worker'");
    assert_true(first > 0 && worker > 0);
    assert_int_equal(kill(f->supervisor, SIGSTOP), 0);
    assert_int_equal(kill(worker, SIGSTOP), 0);
    wait_count(f, "SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END FROM baton_processes"
                  " WHERE kind IN ('supervisor', 'worker')", 1, 20000);
    assert_int_equal(kill(f->supervisor, SIGCONT), 0);
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'supervisor'", 1, 10000);
    int64_t again = supervisor_row(f);
    assert_true(again > first);
    assert_int_equal(kill(worker, SIGCONT), 0);
    char adopted[128];
    snprintf(adopted, sizeof adopted, "SELECT COUNT(*) FROM baton_processes WHERE supervisor_id = %lld", (long long)again);
    wait_count(f, adopted, children, 10000);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE pid = %d", (int)worker), 1);
    /* Jobs still run, on the same worker, and the stop is clean: every row goes. */
    int64_t id = enqueue_probe(f, 1);
    char finished[128];
    snprintf(finished, sizeof finished, "SELECT COUNT(*) FROM baton_jobs WHERE id = %lld AND status = 'finished'",
             (long long)id);
    wait_count(f, finished, 1, 20000);
    assert_int_equal(kill(worker, 0), 0);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);
    char *out = read_file(f->out);
    assert_non_null(out);
    const char *once = strstr(out, "event=supervisor.was_pruned");
    if (!once || strstr(once + 1, "event=supervisor.was_pruned"))
        fail_msg("the supervisor said it was pruned %s (log: %s)", once ? "more than once" : "never", f->out);
    free(out);
}

/* A dispatcher's concurrency maintenance waits for a key whose lock another session holds
 * (a worker stopped in the middle of a round, say) for longer than half the alive
 * threshold. Its heartbeat must keep its schedule meanwhile: its supervisor's watchdog
 * must not take the wait for a hang and kill it. */
static void test_dispatcher_waiting_on_a_lock_keeps_its_heartbeat(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "SQLite has one lock for the whole database, heartbeats included");
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, FAST_LIVENESS,
                  "dispatchers:\n  - polling_interval: 0.2\n    concurrency_maintenance_interval: 0.5\n", 100);
    open_queue(f, yaml);
    enqueue_probe(f, 1); /* holds the key's slot, ready: no worker runs */
    enqueue_probe(f, 1); /* blocked for its duration (1 s), then overdue: maintenance visits the key */
    bt_store *holder = test_db_open(f->url);
    test_db_exec(holder, "SET idle_in_transaction_session_timeout = 0; BEGIN;"
                         " SELECT limit_value FROM baton_semaphores WHERE key = 'Probe/k1' FOR UPDATE");
    const char *args[] = {"--db", f->url, "--config", f->config, "start", "--only", "dispatchers", NULL};
    f->supervisor = baton_spawn(f->out, args);
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'dispatcher'", 1, 20000);
    pid_t dispatcher = (pid_t)sql_int(f, "SELECT pid FROM baton_processes WHERE kind = 'dispatcher'");
    wait_count(f, "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                  " AND datname = current_database() AND query LIKE '%baton_semaphores%'", 1, 20000);
    /* Three times the watchdog's patience (half the threshold) into the wait: it waits on. */
    char beat[200];
    for (int k = 0; k < 3; k++) {
        snprintf(beat, sizeof beat, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'dispatcher' AND beat > %lld",
                 (long long)sql_int(f, "SELECT beat FROM baton_processes WHERE kind = 'dispatcher'") + 1500);
        wait_count(f, beat, 1, 10000);
    }
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                " AND datname = current_database() AND query LIKE '%%baton_semaphores%%'"), 1);
    assert_int_equal(sql_int(f, "SELECT pid FROM baton_processes WHERE kind = 'dispatcher'"), dispatcher);
    test_db_exec(holder, "ROLLBACK");
    bt_store_close(holder);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    char *out = read_file(f->out);
    if (out && strstr(out, "kind=dispatcher") && strstr(out, "signal=9"))
        fail_msg("the watchdog killed the dispatcher while it waited for a lock (log: %s)", f->out);
    free(out);
}

/* Ctrl-C in a terminal, or systemd's KillMode=control-group, signals every process of the
 * group at once: each child gets the signal besides the one the supervisor forwards. A
 * graceful stop must stay graceful: the running job ends on its own and is recorded. */
static void test_signal_to_the_whole_group_stops_gracefully(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, "", "", 1500);
    open_queue(f, yaml);
    int64_t id = enqueue_probe(f, 1);
    start_supervisor_as(f, "10", 1);
    probe_wait pw = {f, id, 1};
    assert_true(poll_until(probe_started, &pw, 20000));
    assert_int_equal(kill(-f->supervisor, SIGINT), 0);
    int status = wait_exit(f->supervisor, 30000);
    f->supervisor = 0;
    assert_int_equal(status, 0);
    assert_string_equal(job_status(f->client, id), "finished");
    assert_int_equal(sql_int(f, "SELECT attempts FROM baton_jobs WHERE id = %lld", (long long)id), 1);
}

typedef struct beat_after {
    fixture *f;
    int64_t beat;
} beat_after;

static int supervisor_beat_since(void *p)
{
    beat_after *b = p;
    return sql_int(b->f, "SELECT beat FROM baton_processes WHERE kind = 'supervisor'") > b->beat;
}

/* A hangup (the terminal closed, systemctl reload) neither kills the supervisor nor its
 * children: it goes on heartbeating, and stops cleanly when asked. */
static void test_hangup_is_ignored(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, FAST_LIVENESS, "", 1500);
    open_queue(f, yaml);
    start_supervisor(f, "5");
    wait_count(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'worker'", 1, 20000);
    assert_int_equal(kill(f->supervisor, SIGHUP), 0);
    beat_after b = {f, sql_int(f, "SELECT beat FROM baton_processes WHERE kind = 'supervisor'")};
    assert_true(poll_until(supervisor_beat_since, &b, 10000));
    assert_int_equal(kill(f->supervisor, 0), 0);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes WHERE kind = 'worker'"), 1);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);
}

/* A graceful stop with a job longer than the shutdown timeout: the job is stopped and
 * returned to ready, and runs again after a restart. */
static void test_graceful_stop_returns_long_job_to_ready(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, "", "", 30000);
    open_queue(f, yaml);
    int64_t id = enqueue_probe(f, 1);
    start_supervisor(f, "0.5");
    probe_wait pw = {f, id, 1};
    assert_true(poll_until(probe_started, &pw, 20000));
    pid_t probe = probe_pid(f, id, 1);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_true(process_gone(&probe));
    assert_string_equal(job_status(f->client, id), "ready");
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);
    start_supervisor(f, "0.5");
    pw.attempt = 2;
    assert_true(poll_until(probe_started, &pw, 20000));
    assert_int_equal(stop_supervisor(f, SIGQUIT), 0);
    assert_no_overlap(f);
}

/* Forced shutdowns (the shutdown timeout cut jobs short; a supervisor killed with its
 * children) followed by restarts never let two jobs of a limit-1 key run at once. */
/* A second TERM during a graceful stop makes it immediate: the job does not get its
 * 60 s of shutdown timeout, and goes back to ready at once. */
static void test_second_term_stops_at_once(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, "", "", 30000);
    open_queue(f, yaml);
    int64_t id = enqueue_probe(f, 1);
    start_supervisor(f, "60");
    probe_wait pw = {f, id, 1};
    assert_true(poll_until(probe_started, &pw, 20000));
    pid_t probe = probe_pid(f, id, 1);
    kill(f->supervisor, SIGTERM);
    /* The graceful stop is under way once the worker has stopped claiming: it waits. */
    assert_false(poll_until(process_gone, &probe, 300));
    int64_t t0 = bt_mono_ns();
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_true(bt_mono_ns() - t0 < 20LL * 1000000000LL);
    assert_true(process_gone(&probe));
    assert_string_equal(job_status(f->client, id), "ready");
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM baton_processes"), 0);
}

typedef struct round_wait {
    fixture *f;
    const char *claims_sql;
    int64_t total;
} round_wait;

/* A round can begin its shutdown once this supervisor's children claimed a job, or there
 * is nothing left to claim. */
static int claimed_or_done(void *p)
{
    round_wait *r = p;
    return sql_int(r->f, "%s", r->claims_sql) > 0 ||
           sql_int(r->f, "SELECT COUNT(*) FROM baton_jobs WHERE status = 'finished'") == r->total;
}

static void test_forced_shutdown_and_restart_keep_limits(void **state)
{
    fixture *f = *state;
    char yaml[4096];
    probe_classes(f, yaml, sizeof yaml, FAST_LIVENESS,
                  "workers:\n  - queues: [\"*\"]\n    threads: 3\n    processes: 2\n", 400);
    open_queue(f, yaml);
    enum { KEYS = 3, PER_KEY = 8 };
    for (int i = 0; i < KEYS * PER_KEY; i++)
        enqueue_probe(f, i % KEYS);
    for (int round = 0; round < 4; round++) {
        start_supervisor(f, "0.1");
        /* Claims of this supervisor's children: the killed round may have left others. */
        char q[256];
        snprintf(q, sizeof q, "SELECT COUNT(*) FROM baton_claimed_executions c JOIN baton_processes p ON"
                 " p.id = c.process_id JOIN baton_processes s ON s.id = p.supervisor_id WHERE s.pid = %d",
                 (int)f->supervisor);
        round_wait rw = {f, q, KEYS * PER_KEY};
        assert_true(poll_until(claimed_or_done, &rw, 30000));
        if (round % 2 == 0) {
            assert_int_equal(stop_supervisor(f, SIGTERM), 0);
        } else {
            /* Kill everything at once, as a crash of the machine's process tree would. */
            int64_t sup = supervisor_row(f);
            snprintf(q, sizeof q, "SELECT pid FROM baton_processes WHERE supervisor_id = %lld", (long long)sup);
            char *pids = test_db_lines(f->sql, q);
            kill(f->supervisor, SIGKILL);
            for (char *p = pids, *end; (end = strchr(p, '\n')) != NULL; p = end + 1)
                kill((pid_t)strtol(p, NULL, 10), SIGKILL);
            free(pids);
            wait_exit(f->supervisor, 10000);
            f->supervisor = 0;
        }
    }
    start_supervisor(f, "5");
    wait_count(f, "SELECT COUNT(*) FROM baton_jobs WHERE status = 'finished'", KEYS * PER_KEY, 120000);
    assert_int_equal(stop_supervisor(f, SIGTERM), 0);
    assert_no_overlap(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_starts_configured_processes_and_titles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_runs_the_named_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pidfile_refuses_second_supervisor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_worker_is_replaced_and_its_job_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_kills_stopped_worker_and_its_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signal_to_the_whole_group_stops_gracefully, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hangup_is_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graceful_stop_returns_long_job_to_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_term_stops_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forced_shutdown_and_restart_keep_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_supervisor_registers_again_and_keeps_its_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatcher_waiting_on_a_lock_keeps_its_heartbeat, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
