// ctest-labels: sqlite
/* test_shutdown.c: `baton work` processes sharing one SQLite file and the ways they stop.
 * Two workers run 2,000 jobs exactly once between them; a graceful TERM lets a short job
 * finish; past --shutdown-timeout a long job is stopped, its processes are gone and the job
 * is ready again; QUIT and a second TERM stop at once with the same outcome. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

#include "baton.h"
#include "util/clock.h"

enum { MAX_ARGS = 32, MAX_WORKERS = 2, PATH_LEN = 4200, NJOBS = 2000 };

typedef struct fx {
    char *dir;
    char db[PATH_LEN];  /* sqlite:DIR/baton.db, or a PostgreSQL database */
    char cfg[PATH_LEN]; /* DIR/baton.yml */
    pid_t workers[MAX_WORKERS];
    char worker_logs[MAX_WORKERS][PATH_LEN];
    char pidfile[PATH_LEN]; /* processes of a long job, killed on teardown if still there */
} fx;

static void kill_recorded(const char *pidfile)
{
    char *text = read_file(pidfile);
    if (!text)
        return;
    for (char *p = text; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 1)
            kill((pid_t)pid, SIGKILL);
        p = end;
    }
    free(text);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tmpdir_make();
    test_db_create(f->db, sizeof f->db, f->dir, "baton");
    snprintf(f->cfg, sizeof f->cfg, "%s/baton.yml", f->dir);
    snprintf(f->pidfile, sizeof f->pidfile, "%s/pids", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] > 0) {
            kill(f->workers[i], SIGKILL);
            waitpid(f->workers[i], NULL, 0);
        }
    kill_recorded(f->pidfile);
    test_db_drop(f->db);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static const char *in_dir(const fx *f, const char *name)
{
    return path_join(f->dir, name);
}

/* ---- CLI ------------------------------------------------------------------------------ */

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

static json_t *parse_json(const char *text, int line)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("line %d: output is not JSON (%s): %.300s", line, e.text, text);
    return j;
}

static json_t *job_at(int line, fx *f, int64_t id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    run_result r = RUN(f, "job", ids, "--json");
    check_exit(&r, 0, line);
    json_t *j = parse_json(r.out, line);
    run_result_free(&r);
    return j;
}

static const char *str_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void expect_job_at(int line, fx *f, int64_t id, const char *status, int attempts)
{
    json_t *j = job_at(line, f, id);
    const char *s = str_of(j, "status");
    json_t *att = json_object_get(j, "attempts");
    if (!s || strcmp(s, status) != 0 || !json_is_integer(att) ||
        json_integer_value(att) != attempts) {
        char *dump = json_dumps(j, JSON_COMPACT);
        fail_msg("line %d: job %lld: expected status %s attempts %d, got %s", line, (long long)id,
                 status, attempts, dump);
    }
    json_decref(j);
}
#define EXPECT_JOB(f, id, status, attempts) expect_job_at(__LINE__, (f), (id), (status), (attempts))

static int64_t enqueue_at(int line, fx *f, const char *klass)
{
    run_result r = RUN(f, "enqueue", klass);
    check_exit(&r, 0, line);
    char *end;
    long long id = strtoll(r.out, &end, 10);
    if (end == r.out || strcmp(end, "\n") != 0)
        fail_msg("line %d: enqueue printed '%s'", line, r.out);
    run_result_free(&r);
    return id;
}
#define ENQUEUE(f, klass) enqueue_at(__LINE__, (f), (klass))

typedef struct job_wait {
    fx *f;
    int64_t id;
    const char *status;
} job_wait;

static int job_has_status(void *p)
{
    job_wait *w = p;
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)w->id);
    run_result r = RUN(w->f, "jobs", "--json", "--limit", "10000");
    int hit = 0;
    json_t *list = r.status == 0 ? json_loads(r.out, 0, NULL) : NULL;
    size_t i;
    json_t *j;
    json_array_foreach(list, i, j)
    {
        json_t *id = json_object_get(j, "id");
        if (json_is_integer(id) && json_integer_value(id) == w->id && str_of(j, "status"))
            hit = strcmp(str_of(j, "status"), w->status) == 0;
    }
    json_decref(list);
    run_result_free(&r);
    return hit;
}

static void wait_job_at(int line, fx *f, int64_t id, const char *status)
{
    job_wait w = {f, id, status};
    if (!poll_until(job_has_status, &w, 30000)) {
        json_t *j = job_at(line, f, id);
        fail_msg("line %d: job %lld never became %s: %s", line, (long long)id, status,
                 json_dumps(j, JSON_COMPACT));
    }
}
#define WAIT_JOB(f, id, status) wait_job_at(__LINE__, (f), (id), (status))

/* ---- workers ------------------------------------------------------------------------- */

static pid_t start_worker_v(fx *f, const char *cfg, ...)
{
    int slot = 0;
    while (slot < MAX_WORKERS && f->workers[slot] > 0)
        slot++;
    assert_true(slot < MAX_WORKERS);
    const char *args[MAX_ARGS] = {"--db", f->db, "--config", cfg ? cfg : f->cfg, "work"};
    size_t n = 5;
    va_list ap;
    va_start(ap, cfg);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_ARGS - 1)
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    char name[32];
    snprintf(name, sizeof name, "worker-%d.log", slot);
    snprintf(f->worker_logs[slot], PATH_LEN, "%s", in_dir(f, name));
    f->workers[slot] = baton_spawn(f->worker_logs[slot], args);
    return f->workers[slot];
}
/* START_WORKER(f, cfg or NULL, work options...) */
#define START_WORKER(f, cfg, ...) start_worker_v((f), (cfg), __VA_ARGS__, (const char *)NULL)

static int slot_of(fx *f, pid_t pid)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] == pid)
            return i;
    fail_msg("pid %d is not a worker of this test", (int)pid);
    return -1;
}

/* Waits for the worker to exit; returns its status and how long it took in seconds. */
static int reap_worker(fx *f, pid_t pid, int timeout_ms, int64_t since_ns, double *took)
{
    int slot = slot_of(f, pid);
    int status = wait_exit(pid, timeout_ms);
    *took = (double)(bt_mono_ns() - since_ns) / 1e9;
    f->workers[slot] = 0;
    return status;
}

static void fail_worker(fx *f, int slot_log, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_worker(fx *f, int slot_log, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* cmocka truncates long messages: the log's tail goes to stderr directly. */
    char *log = read_file(f->worker_logs[slot_log]);
    size_t len = log ? strlen(log) : 0;
    fprintf(stderr, "worker log (tail):\n%s\n", log ? log + (len > 3000 ? len - 3000 : 0) : "");
    free(log);
    fail_msg("%s", msg);
}

/* ---- processes ----------------------------------------------------------------------- */

/* Gone: no such process, or a zombie (an orphan that this container's init never reaps). */
static int process_gone(pid_t pid)
{
    if (kill(pid, 0) == -1 && errno == ESRCH)
        return 1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *stat = read_file(path);
    if (!stat)
        return 1;
    char *close_paren = strrchr(stat, ')');
    int gone = close_paren && (close_paren[2] == 'Z' || close_paren[2] == 'X');
    free(stat);
    return gone;
}

typedef struct pid_list {
    pid_t pids[8];
    int n;
} pid_list;

static int process_gone_p(void *p) { return process_gone(*(pid_t *)p); }

static int all_gone(void *p)
{
    pid_list *l = p;
    for (int i = 0; i < l->n; i++)
        if (!process_gone(l->pids[i]))
            return 0;
    return 1;
}

/* The long job writes its shell's pid and its sleep's pid, one per line. */
static int pidfile_complete(void *p)
{
    return count_lines(((fx *)p)->pidfile) >= 2;
}

static pid_list read_pids(fx *f)
{
    pid_list l = {{0}, 0};
    char *text = read_file(f->pidfile);
    assert_non_null(text);
    char *p = text, *end;
    long v;
    while (l.n < 8 && (v = strtol(p, &end, 10), end != p)) {
        assert_true(v > 1);
        l.pids[l.n++] = (pid_t)v;
        p = end;
    }
    free(text);
    assert_int_equal(l.n, 2);
    for (int i = 0; i < l.n; i++)
        assert_false(process_gone(l.pids[i]));
    return l;
}

/* Is sig pending for the whole process (sent but not yet taken by a handler)? */
static int signal_pending(pid_t pid, int sig)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *status = read_file(path);
    if (!status)
        return 0;
    const char *line = strstr(status, "\nShdPnd:");
    unsigned long long mask = line ? strtoull(line + 8, NULL, 16) : 0;
    free(status);
    return (mask >> (sig - 1)) & 1;
}

typedef struct sig_wait {
    pid_t pid;
    int sig;
} sig_wait;

static int signal_taken(void *p)
{
    sig_wait *s = p;
    return !signal_pending(s->pid, s->sig);
}

/* ====================================================================================== */
/* 1. Two workers, 2,000 jobs, each exactly once                                           */
/* ====================================================================================== */

typedef struct log_wait {
    const char *path;
    int lines;
} log_wait;

/* Checked every 20 ms or so: polling every millisecond would take CPU from the workers. */
static void throttle(void)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static int log_has_lines(void *p)
{
    log_wait *w = p;
    throttle();
    return count_lines(w->path) >= w->lines;
}

static int log_mentions(void *p)
{
    log_wait *w = p;
    char *text = read_file(w->path);
    int hit = text && strstr(text, "event=worker.started");
    free(text);
    return hit;
}

/* No job left to run: every queue has nothing ready, scheduled, claimed or failed. */
static int queues_idle(void *p)
{
    fx *f = p;
    run_result r = RUN(f, "queues", "--json");
    json_t *list = r.status == 0 ? json_loads(r.out, 0, NULL) : NULL;
    int idle = json_is_array(list);
    size_t i;
    json_t *q;
    json_array_foreach(list, i, q)
    {
        const char *counts[] = {"ready", "scheduled", "claimed", "failed"};
        for (int k = 0; k < 4; k++) {
            json_t *c = json_object_get(q, counts[k]);
            if (!json_is_integer(c) || json_integer_value(c) != 0)
                idle = 0;
        }
    }
    json_decref(list);
    run_result_free(&r);
    return idle;
}

static void test_two_workers_exactly_once(void **state)
{
    fx *f = *state;
    char log_path[PATH_LEN], cfg_a[PATH_LEN], cfg_b[PATH_LEN];
    snprintf(log_path, sizeof log_path, "%s", in_dir(f, "ran.log"));
    snprintf(cfg_a, sizeof cfg_a, "%s", in_dir(f, "a.yml"));
    snprintf(cfg_b, sizeof cfg_b, "%s", in_dir(f, "b.yml"));
    /* Same class in both configs; each worker's command says which worker ran the job. */
    const char *names[2] = {"A", "B"};
    const char *cfgs[2] = {cfg_a, cfg_b};
    for (int i = 0; i < 2; i++) {
        char text[PATH_LEN + 200];
        snprintf(text, sizeof text,
                 "jobs:\n"
                 "  Note:\n"
                 "    command: 'echo \"$BATON_JOB_ID %s\" >> %s'\n",
                 names[i], log_path);
        write_file(cfgs[i], text);
    }
    write_file(f->cfg, "{}\n");
    run_result r = RUN(f, "init");
    check_exit(&r, 0, __LINE__);
    run_result_free(&r);

    pid_t wa = START_WORKER(f, cfg_a, "--threads", "3");
    pid_t wb = START_WORKER(f, cfg_b, "--threads", "3");
    /* Both are up before the jobs exist, so neither can have drained the queue alone. */
    for (int i = 0; i < 2; i++) {
        log_wait lw = {f->worker_logs[i], 0};
        if (!poll_until(log_mentions, &lw, 20000))
            fail_worker(f, i, "worker %s did not start", names[i]);
    }

    baton_client *client = NULL;
    assert_int_equal(baton_open(&client, f->db), BATON_OK);
    assert_int_equal(baton_load_config(client, cfg_a), BATON_OK);
    baton_job_spec *specs = calloc(NJOBS, sizeof *specs);
    int64_t *ids = calloc(NJOBS, sizeof *ids);
    char (*args)[32] = calloc(NJOBS, sizeof *args);
    for (int i = 0; i < NJOBS; i++) {
        snprintf(args[i], sizeof args[i], "[%d]", i);
        specs[i] = (baton_job_spec){"Note", args[i], NULL};
    }
    int64_t t0 = bt_mono_ns();
    if (baton_enqueue_many(client, ids, specs, NJOBS) != BATON_OK)
        fail_msg("enqueue_many: %s", baton_error_last());
    baton_close(client);
    free(specs);
    free(args);

    /* A busy machine runs the jobs slowly: fail on a stall (no job done for 30 s), not on
     * a fixed total, within a cap below ctest's timeout. */
    log_wait lw = {log_path, NJOBS};
    for (int done = 0;;) {
        if (poll_until(log_has_lines, &lw, 30000))
            break;
        int now = count_lines(log_path);
        if (now == done)
            fail_worker(f, 0, "stalled: no job ran in 30 s, %d of %d done", now, NJOBS);
        if ((double)(bt_mono_ns() - t0) / 1e9 > 420)
            fail_worker(f, 0, "only %d of %d jobs ran within 420 s", now, NJOBS);
        done = now;
    }
    if (!poll_until(queues_idle, f, 30000))
        fail_worker(f, 0, "jobs still outstanding after all %d ran", NJOBS);
    double took = (double)(bt_mono_ns() - t0) / 1e9;

    pid_t ws[2] = {wa, wb};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kill(ws[i], SIGTERM), 0);
        double t;
        int st = reap_worker(f, ws[i], 15000, bt_mono_ns(), &t);
        if (st != 0)
            fail_worker(f, i, "worker %s exited %d after TERM", names[i], st);
    }

    /* Every id exactly once, and both workers did some of the work. */
    char *text = read_file(log_path);
    assert_non_null(text);
    unsigned char *seen = calloc(NJOBS, 1);
    int per_worker[2] = {0, 0}, lines = 0;
    int64_t first = ids[0];
    for (int i = 0; i < NJOBS; i++)
        assert_int_equal(ids[i], first + i);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        long long id;
        char who;
        if (sscanf(line, "%lld %c", &id, &who) != 2 || id < first || id >= first + NJOBS ||
            (who != 'A' && who != 'B'))
            fail_msg("unexpected log line '%s'", line);
        if (seen[id - first]++)
            fail_msg("job %lld ran more than once", id);
        per_worker[who - 'A']++;
    }
    assert_int_equal(lines, NJOBS);
    for (int i = 0; i < NJOBS; i++)
        if (!seen[i])
            fail_msg("job %lld never ran", (long long)(first + i));
    free(seen);
    free(text);
    print_message("2000 jobs in %.1f s: worker A ran %d, worker B ran %d\n", took,
                  per_worker[0], per_worker[1]);
    assert_true(per_worker[0] > 0);
    assert_true(per_worker[1] > 0);

    /* The database agrees: all finished, each after one attempt. */
    r = RUN(f, "jobs", "--status", "finished", "--limit", "10000", "--json");
    check_exit(&r, 0, __LINE__);
    json_t *list = parse_json(r.out, __LINE__);
    run_result_free(&r);
    assert_int_equal(json_array_size(list), NJOBS);
    size_t i;
    json_t *j;
    json_array_foreach(list, i, j)
    {
        assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 1);
    }
    json_decref(list);
    free(ids);
}

/* ====================================================================================== */
/* 2-5. Stopping a worker with a job in flight                                             */
/* ====================================================================================== */

static void write_long_job_config(fx *f)
{
    char text[4 * PATH_LEN];
    /* Short waits for the test's go-ahead, so it is surely still running when TERM comes. */
    snprintf(text, sizeof text,
             "jobs:\n"
             "  Short:\n"
             "    command: 'while [ ! -e %s ]; do sleep 0.02; done; echo done >> %s'\n"
             "  Long:\n"
             "    command: 'echo $$ > %s; sleep 30 & echo $! >> %s; wait'\n",
             in_dir(f, "go"), in_dir(f, "short.log"), f->pidfile, f->pidfile);
    write_file(f->cfg, text);
    run_result r = RUN(f, "init");
    check_exit(&r, 0, __LINE__);
    run_result_free(&r);
}

static void test_term_lets_short_job_finish(void **state)
{
    fx *f = *state;
    write_long_job_config(f);
    int64_t id = ENQUEUE(f, "Short");
    pid_t w = START_WORKER(f, NULL, "--threads", "2", "--shutdown-timeout", "20");
    WAIT_JOB(f, id, "claimed");
    assert_int_equal(kill(w, SIGTERM), 0);
    sig_wait sw = {w, SIGTERM};
    assert_true(poll_until(signal_taken, &sw, 5000));
    /* Draining: the worker waits for its job, which is still claimed. */
    assert_true(waitpid(w, NULL, WNOHANG) == 0);
    EXPECT_JOB(f, id, "claimed", 1);
    int64_t t0 = bt_mono_ns();
    write_file(in_dir(f, "go"), "");
    double took;
    int st = reap_worker(f, w, 15000, t0, &took);
    if (st != 0)
        fail_worker(f, 0, "worker exited %d after TERM", st);
    if (took > 10)
        fail_msg("graceful stop took %.1f s after the job could end", took);
    char *log = read_file(in_dir(f, "short.log"));
    if (!log || strcmp(log, "done\n") != 0)
        fail_msg("the in-flight job did not complete: log '%s'", log ? log : "(none)");
    free(log);
    EXPECT_JOB(f, id, "finished", 1);
}

/* Starts a worker, enqueues Long and waits until its processes are running. */
static pid_t start_long_job(fx *f, const char *shutdown_timeout, int64_t *id, pid_list *pids)
{
    *id = ENQUEUE(f, "Long");
    pid_t w = START_WORKER(f, NULL, "--threads", "2", "--shutdown-timeout", shutdown_timeout);
    if (!poll_until(pidfile_complete, f, 30000))
        fail_worker(f, 0, "the long job never started");
    *pids = read_pids(f);
    EXPECT_JOB(f, *id, "claimed", 1);
    return w;
}

/* After a stop: exited 0 promptly, job ready again after one attempt, processes gone. */
static void expect_stopped(fx *f, pid_t w, int64_t t0, int64_t id, pid_list *pids, const char *how)
{
    double took;
    int st = reap_worker(f, w, 10000, t0, &took);
    if (st != 0)
        fail_worker(f, 0, "%s: worker exited %d (-1: still running after 10 s)", how, st);
    if (took > 10)
        fail_msg("%s: the worker took %.1f s to stop", how, took);
    EXPECT_JOB(f, id, "ready", 1);
    if (!poll_until(all_gone, pids, 5000))
        fail_msg("%s: the job's processes (%d, %d) outlived the worker", how, (int)pids->pids[0],
                 (int)pids->pids[1]);
}

/* signal_long_job starts a long job under a worker with shutdown_timeout, sends it sig
 * once, and checks that the worker stopped promptly and handed the job back. */
static void signal_long_job(fx *f, const char *shutdown_timeout, int sig, const char *how)
{
    write_long_job_config(f);
    int64_t id;
    pid_list pids;
    pid_t w = start_long_job(f, shutdown_timeout, &id, &pids);
    int64_t t0 = bt_mono_ns();
    assert_int_equal(kill(w, sig), 0);
    expect_stopped(f, w, t0, id, &pids, how);
}

static void test_term_past_shutdown_timeout(void **state)
{
    signal_long_job(*state, "0.5", SIGTERM, "TERM with --shutdown-timeout 0.5");
}

static void test_quit_is_immediate(void **state)
{
    signal_long_job(*state, "60", SIGQUIT, "QUIT");
}

/* A job that ended just before an immediate stop, its outcome waiting for a round that
 * cannot commit yet (the database is locked), is recorded as it ended: handed back, it
 * would run a second time. Two QUITs, as an impatient operator sends them. */
static void test_quit_records_what_already_finished(void **state)
{
    fx *f = *state;
    char text[4 * PATH_LEN];
    snprintf(text, sizeof text,
             "jobs:\n"
             "  Short:\n"
             "    command: 'echo $PPID > %s; while [ ! -e %s ]; do sleep 0.02; done; echo done >> %s'\n",
             f->pidfile, in_dir(f, "go"), in_dir(f, "short.log"));
    write_file(f->cfg, text);
    run_result init = RUN(f, "init");
    check_exit(&init, 0, __LINE__);
    run_result_free(&init);
    int64_t id = ENQUEUE(f, "Short");
    pid_t w = START_WORKER(f, NULL, "--threads", "1", "--polling-interval", "0.05");
    WAIT_JOB(f, id, "claimed");
    /* The round that records the job's end waits for this lock. */
    bt_store *db = test_db_open(f->db);
    char lock[128];
    snprintf(lock, sizeof lock, test_on_postgres() ? "BEGIN; SELECT id FROM baton_jobs WHERE id = %lld FOR UPDATE"
                                                   : "BEGIN IMMEDIATE", (long long)id);
    test_db_exec(db, lock);
    char *pid_text = NULL;
    for (int waited = 0; !(pid_text = read_file(f->pidfile)) || !strchr(pid_text, '\n'); waited += 20) {
        free(pid_text);
        if (waited > 10000)
            fail_worker(f, 0, "the job never started");
        throttle();
    }
    pid_t shepherd = (pid_t)atoi(pid_text);
    free(pid_text);
    write_file(in_dir(f, "go"), "");
    /* Ended: its shepherd has exited, passing on the command's exit 0, so the outcome is
     * the worker's to record (a kill now would reach nothing). */
    pid_t gone = shepherd;
    if (!poll_until(process_gone_p, &gone, 10000))
        fail_worker(f, 0, "the job never ended");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kill(w, SIGQUIT), 0);
        sig_wait sw = {w, SIGQUIT};
        assert_true(poll_until(signal_taken, &sw, 5000));
    }
    test_db_exec(db, "ROLLBACK");
    bt_store_close(db);
    double took;
    int st = reap_worker(f, w, 20000, bt_mono_ns(), &took);
    if (st != 0)
        fail_worker(f, 0, "worker exited %d after QUIT", st);
    EXPECT_JOB(f, id, "finished", 1);
    assert_int_equal(count_lines(in_dir(f, "short.log")), 1);
}

static void test_second_term_is_immediate(void **state)
{
    fx *f = *state;
    write_long_job_config(f);
    int64_t id;
    pid_list pids;
    pid_t w = start_long_job(f, "60", &id, &pids);
    int64_t t0 = bt_mono_ns();
    assert_int_equal(kill(w, SIGTERM), 0);
    /* The first TERM must have been taken, or the two could merge into one. */
    sig_wait sw = {w, SIGTERM};
    assert_true(poll_until(signal_taken, &sw, 5000));
    /* Draining: still running, the job still claimed. */
    assert_true(waitpid(w, NULL, WNOHANG) == 0);
    EXPECT_JOB(f, id, "claimed", 1);
    assert_false(process_gone(pids.pids[1]));
    assert_int_equal(kill(w, SIGTERM), 0);
    expect_stopped(f, w, t0, id, &pids, "second TERM");
}

/* runs_log_has counts the lines of the stubborn job's log that start with a word. */
typedef struct log_word {
    const char *path, *word;
    int at_least;
} log_word;

static int runs_log_has(void *p)
{
    const log_word *lw = p;
    char *text = read_file(lw->path);
    int n = 0;
    size_t len = strlen(lw->word);
    for (char *line = text; line && *line;) {
        if (strncmp(line, lw->word, len) == 0 && line[len] == ' ')
            n++;
        char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : line + strlen(line);
    }
    free(text);
    return n >= lw->at_least;
}

/* A job stopped past --shutdown-timeout goes back to the queue only once its run has
 * ended: a command that handles TERM and needs a moment to finish must not overlap the
 * next run of its key, and that next run gets a fencing token of its own. The job's log,
 * written by the runs themselves, is the judge. */
static void test_hand_back_waits_for_the_run_to_end(void **state)
{
    fx *f = *state;
    char text[4 * PATH_LEN];
    const char *log = in_dir(f, "runs.log");
    char log_path[PATH_LEN];
    snprintf(log_path, sizeof log_path, "%s", log);
    snprintf(text, sizeof text,
             "jobs:\n"
             "  Stubborn:\n"
             "    command: >-\n"
             "      trap 'echo \"term $BATON_FENCING_TOKEN\" >> %s; sleep 1.5;\n"
             "      echo \"end $BATON_FENCING_TOKEN\" >> %s; exit 1' TERM;\n"
             "      echo \"start $BATON_FENCING_TOKEN\" >> %s;\n"
             "      while :; do sleep 0.05; done\n"
             "    concurrency: {to: 1, key: \"one\"}\n",
             log_path, log_path, log_path);
    write_file(f->cfg, text);
    run_result r = RUN(f, "init");
    check_exit(&r, 0, __LINE__);
    run_result_free(&r);
    int64_t id = ENQUEUE(f, "Stubborn");
    pid_t a = START_WORKER(f, NULL, "--threads", "1", "--shutdown-timeout", "0.3", "--polling-interval", "0.05");
    log_word started = {log_path, "start", 1};
    if (!poll_until(runs_log_has, &started, 30000))
        fail_worker(f, 0, "the job never started");
    pid_t b = START_WORKER(f, NULL, "--threads", "1", "--shutdown-timeout", "0.3", "--polling-interval", "0.05");
    int64_t t0 = bt_mono_ns();
    assert_int_equal(kill(a, SIGTERM), 0);
    double took;
    int st = reap_worker(f, a, 20000, t0, &took);
    if (st != 0)
        fail_worker(f, 0, "worker exited %d after TERM", st);
    /* The other worker runs the job again. */
    log_word restarted = {log_path, "start", 2};
    if (!poll_until(runs_log_has, &restarted, 20000))
        fail_worker(f, 1, "the handed-back job never ran again");
    assert_int_equal(kill(b, SIGTERM), 0);
    st = reap_worker(f, b, 20000, bt_mono_ns(), &took);
    if (st != 0)
        fail_worker(f, 1, "second worker exited %d after TERM", st);
    char *runs = read_file(log_path);
    long long t1 = 0, t2 = 0;
    char first_end[64];
    int n = sscanf(runs, "start %lld\nterm %*d\n%63s %lld\n", &t1, first_end, &t2);
    if (n != 3 || strcmp(first_end, "end") != 0)
        fail_msg("the second run started before the first ended (job %lld):\n%s", (long long)id, runs);
    if (t1 <= 0 || t2 != t1) /* the end line names the first run's token */
        fail_msg("the first run's lines do not agree on its token:\n%s", runs);
    const char *second = strstr(runs, "\nstart ");
    long long t3 = second ? strtoll(second + 7, NULL, 10) : 0;
    if (!(t3 > t1))
        fail_msg("the run after the hand-back kept the first run's fencing token %lld (got %lld):\n%s", t1, t3, runs);
    free(runs);
}

/* A worker whose SQLite file is deleted under it stops (its jobs with it) with an error
 * naming the file, instead of writing on into a file nobody else reads. */
static void test_worker_stops_when_its_database_file_is_deleted(void **state)
{
    fx *f = *state;
    SKIP_UNLESS(!test_on_postgres(), "a database file is SQLite's");
    write_long_job_config(f);
    int64_t id;
    pid_list pids;
    pid_t w = start_long_job(f, "5", &id, &pids);
    const char *path = f->db + strlen("sqlite:");
    char wal[PATH_LEN + 8], shm[PATH_LEN + 8];
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    assert_int_equal(unlink(path), 0);
    unlink(wal);
    unlink(shm);
    double took;
    int st = reap_worker(f, w, 20000, bt_mono_ns(), &took);
    char *log = read_file(f->worker_logs[0]);
    if (st != 1 || !log || !strstr(log, "deleted or replaced"))
        fail_worker(f, 0, "worker exited %d (-1: still running after 20 s) after its database file was deleted", st);
    free(log);
    if (!poll_until(all_gone, &pids, 5000))
        fail_msg("the job's processes outlived the worker whose database was deleted");
}

/* A worker killed while it is starting command jobs takes every one of them with it, even
 * one whose shepherd was still being set up: nothing may append to the log afterwards. */
static void test_sigkill_during_job_start_leaves_no_job_behind(void **state)
{
    fx *f = *state;
    char cfg[8192];
    const char *log = in_dir(f, "survivors");
    snprintf(cfg, sizeof cfg,
             "jobs:\n  Slow:\n    command: 'sleep 1; echo \"$BATON_JOB_ID\" >> %s'\n", log);
    write_file(f->cfg, cfg);
    run_result r = RUN(f, "init");
    check_exit(&r, 0, __LINE__);
    run_result_free(&r);
    baton_client *c;
    assert_int_equal(baton_open(&c, f->db), BATON_OK);
    assert_int_equal(baton_load_config(c, f->cfg), BATON_OK);
    baton_job_spec specs[400];
    for (int i = 0; i < 400; i++)
        specs[i] = (baton_job_spec){"Slow", "[]", NULL};
    for (int batch = 0; batch < 3; batch++)
        assert_int_equal(baton_enqueue_many(c, NULL, specs, 400), BATON_OK);
    baton_close(c);
    /* Kill each worker a few milliseconds into its life, while it forks its first jobs. */
    for (int round = 0; round < 60; round++) {
        const char *args[] = {"--db", f->db, "--config", f->cfg, "work", "--threads", "8",
                              "--polling-interval", "0.01", "--log-level", "error", NULL};
        f->workers[0] = baton_spawn(NULL, args);
        bt_sleep(0.02 + 0.02 * (round % 10)); /* the workload: kills at varied moments */
        kill(f->workers[0], SIGKILL);
        assert_int_equal(wait_exit(f->workers[0], 10000), 128 + SIGKILL);
        f->workers[0] = 0;
    }
    /* Every job started was killed within its first second; give a survivor time to show. */
    bt_sleep(1.5);
    char *text = read_file(log);
    if (text && *text)
        fail_msg("command jobs outlived their killed worker: %s", text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_workers_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_term_lets_short_job_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_term_past_shutdown_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quit_is_immediate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_term_is_immediate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quit_records_what_already_finished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hand_back_waits_for_the_run_to_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_stops_when_its_database_file_is_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_during_job_start_leaves_no_job_behind, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
