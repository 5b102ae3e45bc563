// ctest-labels: sqlite concurrency
/* test_concurrency_stress.c: per-key concurrency limits seen from outside, with real
 * `baton work` processes on one SQLite file.
 *
 * Every job is tests/support/jobprobe ($BATON_JOBPROBE), which logs its start, a tick every
 * ~5 ms and its end on CLOCK_MONOTONIC, one line per write() on an O_APPEND file. The
 * checker replays that log into runs (job, attempt) -> [start, end or last tick] and
 * asserts the properties the feature promises:
 *   P1  at no instant do more runs of a key overlap than its limit (strict overlap, a
 *       killed run ending at its last logged time), and for limit 1 the fencing tokens grow
 *       in the order the runs started;
 *   P2  at the end no job is blocked, ready, claimed or scheduled;
 *   P3  at the end every key's semaphore is empty: no holders, value == limit, blocked 0;
 *   P4  every job finished exactly once: its recorded attempt has an `end` line, no run
 *       started after it, and an earlier run with an `end` line is only accepted when the
 *       test SIGKILLed its worker after that line (the worker died before recording it:
 *       at-least-once delivery, not a double grant).
 *
 * Tests: a load test (4 workers x 4 threads, 200 keys x 25 jobs of 3 ms, limits 1, 2 and 5;
 * $BATON_STRESS_JOBS_PER_KEY=N sets the jobs per key), a chaos test (random SIGKILLs of
 * workers while jobs of 20-1500 ms run; limits 1 and 2; $BATON_CHAOS_SECONDS overrides the
 * 60 s of kills, $BATON_CHAOS_SEED the random choices), a stopped worker (SIGSTOP until it
 * is pruned, then SIGCONT: its job must stop and it must release nothing twice) and a
 * stopped worker whose job's retry is ready when it resumes (it must not claim it under
 * its pruned process id), faults of the server (restart, an outage past the alive
 * threshold, a silent network path, a lost COMMIT answer, a client silent inside a
 * transaction, through a TCP proxy of the test's own), locks another session holds (a
 * repair or a promotion meeting them), a worker whose wall clock is off, and the fault
 * suite (run_faults): every
 * kind of fault at random for $BATON_FAULT_SECONDS (30; `./run soak` sets more), or only
 * those $BATON_FAULTS names.
 * $BATON_STRESS_FILTER selects tests by cmocka pattern. A failed test keeps its directory
 * (database, baton.yml, probe.log, worker-NNN.log) for a post-mortem; $BATON_KEEP_TMP=1
 * keeps them all. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"
#include "support.h"
#include "tcp_proxy.h"

#define CHAOS_SECONDS 60        /* default length of the kill phase; $BATON_CHAOS_SECONDS */
#define CHAOS_DRAIN_SECONDS 120 /* after the kills, the survivors must finish within this */
#define KILL_GRACE_NS (3LL * 1000000000LL) /* a run that ended this long before its worker
                                              was killed must have been recorded */
#define SHEPHERD_NOTICE_NS (1000000000LL) /* a command may end this long after its worker's
                                             death, before its process group is killed */

enum { MAX_WORKERS = 8 };

/* ------------------------------------------------------------------------------------------ */
/* Fixture                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct kill_rec {
    pid_t pid;
    int64_t at; /* CLOCK_MONOTONIC ns, taken after the worker was reaped */
} kill_rec;

typedef struct discard_rec {
    int64_t job;
    int64_t at; /* CLOCK_MONOTONIC ns, taken before the discard was asked for */
} discard_rec;

typedef struct fixture {
    char *dir;
    char db[4200], url[4300], config[4300], log[4300];
    const char *jobprobe;
    baton_client *client;
    pid_t workers[MAX_WORKERS]; /* 0: free slot */
    int logs[MAX_WORKERS];      /* the number of each slot's worker-NNN.log */
    int nspawned;
    kill_rec *kills;
    size_t nkills;
    discard_rec *discards; /* jobs an operator discarded */
    size_t ndiscards;
    int64_t *ids;
    size_t nids;
    int passed; /* set by a test that got to its end; a failed one keeps its directory */
    char disk[4100];   /* a small tmpfs holding the SQLite database, for the disk-full fault, or "" */
    char pg_ctl[9200]; /* "[runuser -u USER --] BIN/pg_ctl -D DIR": a private server, or "" */
    char pg_start[20000]; /* the command that starts it */
} fixture;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double secs(int64_t ns) { return (double)ns / 1e9; }

static int setup(void **state)
{
    const char *jobprobe = getenv("BATON_JOBPROBE");
    if (!jobprobe || access(jobprobe, X_OK) != 0)
        fail_msg("$BATON_JOBPROBE must name the jobprobe executable (run through ctest)");
    fixture *f = calloc(1, sizeof *f);
    f->dir = tmpdir_make();
    snprintf(f->db, sizeof f->db, "%s/baton.db", f->dir);
    test_db_create(f->url, sizeof f->url, f->dir, "baton");
    snprintf(f->config, sizeof f->config, "%s/baton.yml", f->dir);
    snprintf(f->log, sizeof f->log, "%s/probe.log", f->dir);
    f->jobprobe = jobprobe;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    /* Whatever happened, no worker of this test outlives it (their jobs die with them). */
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] > 0) {
            kill(f->workers[i], SIGKILL);
            waitpid(f->workers[i], NULL, 0);
        }
    baton_close(f->client);
    if (f->pg_ctl[0]) {
        char cmd[9300];
        snprintf(cmd, sizeof cmd, "%s -m immediate stop >/dev/null 2>&1", f->pg_ctl);
        if (system(cmd) != 0)
            print_error("could not stop the private server: %s\n", cmd);
        f->url[0] = '\0'; /* its database goes with its directory */
    }
    const char *keep = getenv("BATON_KEEP_TMP");
    if (!f->passed || (keep && *keep && strcmp(keep, "0") != 0)) {
        print_message("kept %s (%s%s)\n", f->dir, f->url, f->disk[0] ? ", still mounted" : "");
        free(f->dir);
    } else {
        if (f->disk[0] && umount2(f->disk, MNT_DETACH) != 0)
            print_error("could not unmount %s: %s\n", f->disk, strerror(errno));
        if (f->url[0])
            test_db_drop(f->url);
        tmpdir_remove(f->dir);
    }
    free(f->kills);
    free(f->discards);
    free(f->ids);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Queue, classes, workers                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* probe_class appends the YAML of a command class running jobprobe for ms_expr milliseconds
 * (shell text, may use $BATON_JOB_ID...) keyed "k{key}" with the given limit. */
static void probe_class(char *buf, size_t size, const fixture *f, const char *name, int limit,
                        const char *ms_expr, const char *group)
{
    size_t len = strlen(buf);
    char grp[128] = "";
    if (group)
        snprintf(grp, sizeof grp, ", group: %s", group);
    int n = snprintf(buf + len, size - len,
                     "  %s:\n"
                     "    command: \"'%s' '%s' %s\"\n"
                     "    retry: {attempts: 50, backoff: fixed, base: 0}\n"
                     "    concurrency: {to: %d, key: \"k{key}\", duration: 1%s}\n",
                     name, f->jobprobe, f->log, ms_expr, limit, grp);
    if (n < 0 || (size_t)n >= size - len)
        fail_msg("the classes of the test do not fit in %zu bytes", size);
}

/* Liveness of the tests that kill or stop workers: heartbeat every 0.2 s, dead after 1.5 s. */
#define FAST_LIVENESS "process_heartbeat_interval: 0.2\nprocess_alive_threshold: 1.5\n"
/* The load test kills nobody; on a loaded machine a 1.5 s threshold prunes busy workers,
 * which is not what that test is about. */
#define CALM_LIVENESS "process_heartbeat_interval: 0.5\nprocess_alive_threshold: 10\n"

/* open_queue writes baton.yml with the liveness settings and classes and creates the
 * database. */
static void open_queue(fixture *f, const char *liveness_yaml, const char *classes_yaml)
{
    char text[16384];
    snprintf(text, sizeof text, "%sjobs:\n%s", liveness_yaml, classes_yaml);
    write_file(f->config, text);
    assert_int_equal(baton_open(&f->client, f->url), BATON_OK);
    if (baton_load_config(f->client, f->config) != BATON_OK)
        fail_msg("baton.yml refused: %s\n%s", baton_error_last(), text);
    assert_int_equal(baton_migrate(f->client), BATON_OK);
}

/* open_probe_queue opens the queue with one class, Probe, of jobprobe jobs of ms each
 * (a number or a shell expression), limit runs of a key at once, under liveness_yaml. */
static void open_probe_queue(fixture *f, const char *liveness_yaml, int limit, const char *ms)
{
    char classes[4096] = "";
    probe_class(classes, sizeof classes, f, "Probe", limit, ms, NULL);
    open_queue(f, liveness_yaml, classes);
}

/* try_enqueue_probes stores per_key jobs for each of nkeys keys ({"key": K}), keys
 * interleaved, and returns the code of the enqueue (the jobs are counted only when it
 * succeeded). */
static int try_enqueue_probes(fixture *f, const char *class_name, int nkeys, int per_key)
{
    size_t n = (size_t)nkeys * (size_t)per_key;
    baton_job_spec *specs = calloc(n, sizeof *specs);
    char (*args)[32] = calloc(n, sizeof *args);
    for (size_t i = 0; i < n; i++) {
        snprintf(args[i], sizeof args[i], "{\"key\": %d}", (int)(i % (size_t)nkeys));
        specs[i] = (baton_job_spec){class_name, args[i], NULL};
    }
    f->ids = realloc(f->ids, (f->nids + n) * sizeof *f->ids);
    int rc = baton_enqueue_many(f->client, f->ids + f->nids, specs, n);
    if (rc == BATON_OK)
        f->nids += n;
    free(specs);
    free(args);
    return rc;
}

static void enqueue_probes(fixture *f, const char *class_name, int nkeys, int per_key)
{
    if (try_enqueue_probes(f, class_name, nkeys, per_key) != BATON_OK)
        fail_msg("enqueue of %d jobs failed: %s", nkeys * per_key, baton_error_last());
}

/* spawn_worker starts `baton work` in slot, logging to worker-NNN.log; queues NULL: all. */
static pid_t spawn_worker_on(fixture *f, const char *url, int slot, int threads, const char *queues)
{
    char name[64], nthreads[16];
    snprintf(name, sizeof name, "worker-%03d.log", f->nspawned++);
    snprintf(nthreads, sizeof nthreads, "%d", threads);
    f->logs[slot] = f->nspawned - 1;
    const char *args[] = {"--db", url, "--config", f->config, "work", "--threads", nthreads,
                          "--polling-interval", "0.05", "--queues", queues ? queues : "*", NULL};
    f->workers[slot] = baton_spawn(path_join(f->dir, name), args);
    return f->workers[slot];
}

static pid_t spawn_worker(fixture *f, int slot, int threads, const char *queues)
{
    return spawn_worker_on(f, f->url, slot, threads, queues);
}

/* any_log_contains tells whether any worker's log holds needle. */
static int any_log_contains(fixture *f, const char *needle)
{
    int found = 0;
    for (int n = 0; n < f->nspawned && !found; n++) {
        char name[64];
        snprintf(name, sizeof name, "worker-%03d.log", n);
        char *text = read_file(path_join(f->dir, name));
        found = text && strstr(text, needle);
        free(text);
    }
    return found;
}

/* outcome_dropped tells whether a worker logged that it could not record job id's outcome
 * because its claim had been taken away (it was declared dead while busy): the job then
 * runs again, which is the at-least-once contract, not a lost or doubled record. */
static int outcome_dropped(fixture *f, int64_t id)
{
    char needle[96];
    snprintf(needle, sizeof needle, "event=job.outcome_dropped job_id=%lld ", (long long)id);
    return any_log_contains(f, needle);
}

static void kill_worker(fixture *f, int slot)
{
    pid_t pid = f->workers[slot];
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st = wait_exit(pid, 10000);
    f->workers[slot] = 0;
    if (st != 128 + SIGKILL)
        fail_msg("worker %d: expected death by SIGKILL, got status %d", (int)pid, st);
    f->kills = realloc(f->kills, (f->nkills + 1) * sizeof *f->kills);
    f->kills[f->nkills++] = (kill_rec){pid, mono_ns()};
}

typedef struct started_probe {
    fixture *f;
    int slot;
} started_probe;

/* worker_started tells whether the slot's worker has begun to run (its signal handlers are
 * in place from then on), or has already exited. */
static int worker_started(void *p)
{
    started_probe *sp = p;
    char name[64];
    snprintf(name, sizeof name, "worker-%03d.log", sp->f->logs[sp->slot]);
    char *text = read_file(path_join(sp->f->dir, name));
    int started = text && strstr(text, "event=worker.started");
    free(text);
    siginfo_t exited = {0};
    return started || (waitid(P_PID, (id_t)sp->f->workers[sp->slot], &exited, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                       exited.si_pid != 0);
}

/* stop_workers stops every live worker with SIGTERM once it runs (a TERM before it set up
 * its handlers would kill it where it stands); each must exit 0. */
static void stop_workers(fixture *f)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] > 0) {
            started_probe sp = {f, i};
            if (!poll_until(worker_started, &sp, 30000))
                fail_msg("worker %d never started (logs in %s)", (int)f->workers[i], f->dir);
            kill(f->workers[i], SIGTERM);
        }
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] > 0) {
            pid_t pid = f->workers[i];
            int st = wait_exit(pid, 30000);
            f->workers[i] = 0;
            if (st != 0)
                fail_msg("worker %d exited with status %d after SIGTERM (logs in %s)", (int)pid, st, f->dir);
        }
}

/* ------------------------------------------------------------------------------------------ */
/* Reading the queue                                                                           */
/* ------------------------------------------------------------------------------------------ */

static json_t *parse_json(const char *text, const char *what)
{
    json_error_t err;
    json_t *doc = json_loads(text, JSON_DECODE_ANY, &err);
    if (!doc)
        fail_msg("%s: bad JSON at line %d: %s", what, err.line, err.text);
    return doc;
}

static json_t *lib_json(int rc, char *text, const char *what)
{
    if (rc != BATON_OK)
        fail_msg("%s: %s", what, baton_error_last());
    json_t *doc = parse_json(text, what);
    baton_free(text);
    return doc;
}

static json_t *semaphores_now(baton_client *c)
{
    char *text = NULL;
    int rc = baton_semaphores_json(c, 0, NULL, &text);
    return lib_json(rc, text, "baton_semaphores_json");
}

static json_t *job_now(baton_client *c, int64_t id)
{
    char *text = NULL;
    int rc = baton_job_json(c, id, &text);
    return lib_json(rc, text, "baton_job_json");
}

/* pruned_while_running tells whether another process declared the worker of job id's
 * attempt dead (it failed the attempt as "process pruned"): a worker starved of the CPU or
 * of the write lock may be, after its job ended and before it recorded that, and then be
 * killed before it could log the dropped outcome. The job running again is then the
 * at-least-once contract. */
static int pruned_while_running(fixture *f, int64_t id, int attempt)
{
    json_t *job = job_now(f->client, id);
    int pruned = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(job, "history"), i, e)
    {
        const char *error = json_string_value(json_object_get(e, "error"));
        pruned |= json_integer_value(json_object_get(e, "attempt")) == attempt && error &&
                  strcmp(error, "process pruned") == 0;
    }
    json_decref(job);
    return pruned;
}

static const char *jstr(json_t *o, const char *field)
{
    const char *s = json_string_value(json_object_get(o, field));
    return s ? s : "";
}

static int64_t jint(json_t *o, const char *field)
{
    return (int64_t)json_integer_value(json_object_get(o, field));
}

/* cli_json runs `baton --db URL ARGS... --json` and parses its output. */
static json_t *cli_json(fixture *f, const char *command, const char *extra1, const char *extra2)
{
    run_result r = baton_runv(NULL, "--db", f->url, "--config", f->config, command, "--json",
                              extra1, extra2, NULL);
    if (r.status != 0)
        fail_msg("baton %s --json: status %d: %s", command, r.status, r.err);
    json_t *doc = parse_json(r.out, command);
    run_result_free(&r);
    return doc;
}

/* Jobs not yet in a final state (failed counts as final here; the checks catch it);
 * claimed_out (may be NULL) receives how many of them are claimed. */
static int64_t jobs_in_flight_claimed(baton_client *c, int64_t *claimed_out)
{
    char *text = NULL;
    /* -1 while the database cannot be read (the restart test's server is away). */
    if (baton_queues_json(c, &text) != BATON_OK)
        return -1;
    json_t *queues = parse_json(text, "baton_queues_json");
    baton_free(text);
    int64_t n = 0, claimed = 0;
    size_t i;
    json_t *q;
    json_array_foreach(queues, i, q)
    {
        n += jint(q, "ready") + jint(q, "scheduled") + jint(q, "claimed") + jint(q, "blocked");
        claimed += jint(q, "claimed");
    }
    json_decref(queues);
    if (claimed_out)
        *claimed_out = claimed;
    return n;
}

static int64_t jobs_in_flight(baton_client *c) { return jobs_in_flight_claimed(c, NULL); }

/* sample_holders returns the largest holder count of any key right now, naming any key
 * over its limit. */
static int sample_holders(baton_client *c)
{
    json_t *sems = semaphores_now(c);
    int worst = 0;
    size_t i;
    json_t *s;
    json_array_foreach(sems, i, s)
    {
        int holders = (int)json_array_size(json_object_get(s, "holders"));
        if (holders > worst)
            worst = holders;
        if (holders > jint(s, "limit"))
            print_error("semaphore %s has %d holders over its limit %lld\n", jstr(s, "key"), holders,
                        (long long)jint(s, "limit"));
    }
    json_decref(sems);
    return worst;
}

/* ------------------------------------------------------------------------------------------ */
/* The probe log and its checker                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct run {
    int64_t job;
    int attempt;
    char key[64];
    int64_t start, last; /* first and last logged times */
    int started, ended, starts;
    long pid, worker;
    int64_t token;
    int next; /* next run of the same job, -1 */
} run;

typedef struct runlog {
    run *runs;
    size_t n, cap;
    int64_t max_job;
    int *head; /* by job id: first run, -1 */
    int bad_lines;
} runlog;

static void runlog_free(runlog *l)
{
    free(l->runs);
    free(l->head);
}

static run *find_run(runlog *l, int64_t job, int attempt)
{
    for (int i = l->head[job]; i >= 0; i = l->runs[i].next)
        if (l->runs[i].attempt == attempt)
            return &l->runs[i];
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->runs = realloc(l->runs, l->cap * sizeof *l->runs);
    }
    run *r = &l->runs[l->n];
    *r = (run){.job = job, .attempt = attempt, .next = l->head[job]};
    l->head[job] = (int)l->n++;
    return r;
}

/* read_runs parses the probe log; max_job bounds the job ids the test enqueued. */
static runlog read_runs(const char *path, int64_t max_job)
{
    runlog l = {.max_job = max_job};
    l.head = malloc((size_t)(max_job + 1) * sizeof *l.head);
    for (int64_t i = 0; i <= max_job; i++)
        l.head[i] = -1;
    char *text = read_file(path);
    if (!text)
        return l;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) {
            print_error("probe log: unterminated last line '%s'\n", line);
            l.bad_lines++;
            break;
        }
        *nl = '\0';
        char key[64], what[16];
        long long job, t, token = 0;
        int attempt;
        long pid = 0, worker = 0;
        int n = sscanf(line, "%63s %lld %d %15s %lld %ld %lld %ld", key, &job, &attempt, what, &t,
                       &pid, &token, &worker);
        if (n < 5 || job < 1 || job > max_job || attempt < 1) {
            if (l.bad_lines++ < 10)
                print_error("probe log: unexpected line '%s'\n", line);
            continue;
        }
        run *r = find_run(&l, job, attempt);
        if (strcmp(what, "start") == 0) {
            r->starts++;
            if (!r->started) {
                r->started = 1;
                snprintf(r->key, sizeof r->key, "%s", key);
                r->start = r->last = t;
                r->pid = pid;
                r->worker = worker;
                r->token = token;
            }
        } else if (strcmp(what, "tick") == 0 || strcmp(what, "end") == 0) {
            if (t > r->last)
                r->last = t;
            if (what[0] == 'e')
                r->ended++;
        } else if (l.bad_lines++ < 10) {
            print_error("probe log: unexpected line '%s'\n", line);
        }
    }
    free(text);
    return l;
}

typedef struct check_opts {
    int limit;
    int nkeys;                /* keys the semaphores report must list */
    const kill_rec *kills;    /* chaos: workers the test SIGKILLed */
    size_t nkills;
    const discard_rec *discards; /* jobs an operator discarded: ended, never run after */
    size_t ndiscards;
} check_opts;

typedef struct check_stats {
    int max_key_overlap;     /* largest number of runs of one key at one instant */
    int max_parallel;        /* largest number of runs of any keys at one instant */
    size_t runs, interrupted, redone_after_end, max_attempts;
    size_t unexplained; /* interrupted runs whose worker the test did not kill (fenced) */
    size_t dropped_outcomes; /* redone because a busy worker was declared dead and its
                                outcome could no longer be recorded (it logs so, or the
                                attempt shows it was failed as "process pruned") */
    int64_t max_redo_gap; /* longest time from such an end to its worker's kill */
    int errors;
} check_stats;

#define CHECK(st, ...)                           \
    do {                                         \
        if ((st)->errors++ < 25)                 \
            print_error(__VA_ARGS__);            \
    } while (0)

typedef struct event {
    int64_t t;
    int delta; /* +1 start, -1 stop */
    int run;
} event;

static int cmp_event(const void *a, const void *b)
{
    const event *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->delta - y->delta; /* stops first: touching runs do not overlap */
}

static const runlog *sort_log;

static int cmp_run_by_key_start(const void *a, const void *b)
{
    const run *x = &sort_log->runs[*(const int *)a], *y = &sort_log->runs[*(const int *)b];
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return (x->start > y->start) - (x->start < y->start);
}

/* sweep returns the largest number of runs among idx[0..n) overlapping at one instant, and
 * at_out one instant where it happens. Zero-length runs overlap nothing. */
static int sweep(const runlog *l, const int *idx, size_t n, int64_t *at_out)
{
    event *ev = malloc((2 * n + 1) * sizeof *ev);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const run *r = &l->runs[idx[i]];
        if (r->last <= r->start)
            continue;
        ev[m++] = (event){r->start, +1, idx[i]};
        ev[m++] = (event){r->last, -1, idx[i]};
    }
    qsort(ev, m, sizeof *ev, cmp_event);
    int cur = 0, best = 0;
    for (size_t i = 0; i < m; i++) {
        cur += ev[i].delta;
        if (cur > best) {
            best = cur;
            if (at_out)
                *at_out = ev[i].t;
        }
    }
    free(ev);
    return best;
}

static const kill_rec *killed_after(const check_opts *o, long worker, int64_t t)
{
    for (size_t i = 0; i < o->nkills; i++)
        if (o->kills[i].pid == worker && o->kills[i].at >= t)
            return &o->kills[i];
    return NULL;
}

/* check_log_and_queue runs every check of the header comment; failures are printed (the
 * first 25) and counted, and the caller asserts there were none. */
static check_stats check_log_and_queue(fixture *f, const check_opts *o)
{
    check_stats st = {0};
    int64_t max_job = 0;
    for (size_t i = 0; i < f->nids; i++)
        if (f->ids[i] > max_job)
            max_job = f->ids[i];
    runlog l = read_runs(f->log, max_job);
    st.runs = l.n;
    if (l.bad_lines)
        CHECK(&st, "probe log: %d malformed lines\n", l.bad_lines);

    /* Runs on their own. */
    int *idx = malloc((l.n + 1) * sizeof *idx);
    size_t nidx = 0;
    for (size_t i = 0; i < l.n; i++) {
        run *r = &l.runs[i];
        if (!r->started) {
            CHECK(&st, "job %lld attempt %d logged without a start line\n", (long long)r->job, r->attempt);
            continue;
        }
        if (r->starts != 1)
            CHECK(&st, "job %lld attempt %d started %d times\n", (long long)r->job, r->attempt, r->starts);
        if (r->ended > 1)
            CHECK(&st, "job %lld attempt %d ended %d times\n", (long long)r->job, r->attempt, r->ended);
        if (!r->ended) {
            st.interrupted++;
            st.unexplained += killed_after(o, r->worker, r->last) == NULL;
        }
        idx[nidx++] = (int)i;
    }

    /* P1: per key, never more runs at once than the limit; limit 1: tokens in start order. */
    sort_log = &l;
    qsort(idx, nidx, sizeof *idx, cmp_run_by_key_start);
    for (size_t a = 0, b; a < nidx; a = b) {
        const char *key = l.runs[idx[a]].key;
        for (b = a; b < nidx && strcmp(l.runs[idx[b]].key, key) == 0; b++)
            ;
        int64_t at = 0;
        int over = sweep(&l, idx + a, b - a, &at);
        if (over > st.max_key_overlap)
            st.max_key_overlap = over;
        if (over > o->limit) {
            CHECK(&st, "P1: key %s had %d runs at once (limit %d) at t=%lld:\n", key, over, o->limit,
                  (long long)at);
            for (size_t k = a; k < b; k++) {
                const run *r = &l.runs[idx[k]];
                if (r->start <= at && at < r->last)
                    print_error("    job %lld attempt %d token %lld worker %ld: %.3f..%.3f s%s\n",
                                (long long)r->job, r->attempt, (long long)r->token, r->worker,
                                secs(r->start - l.runs[idx[a]].start), secs(r->last - l.runs[idx[a]].start),
                                r->ended ? "" : " (killed)");
            }
        }
        for (size_t k = a + 1; o->limit == 1 && k < b; k++) {
            const run *p = &l.runs[idx[k - 1]], *r = &l.runs[idx[k]];
            if (r->token < p->token || (r->token == p->token && r->job != p->job))
                CHECK(&st, "P1: key %s: job %lld (token %lld) started after job %lld (token %lld)\n", key,
                      (long long)r->job, (long long)r->token, (long long)p->job, (long long)p->token);
        }
    }
    st.max_parallel = sweep(&l, idx, nidx, NULL);

    /* P2 and P4 against the stored jobs, read through the CLI. */
    char limit_text[32];
    snprintf(limit_text, sizeof limit_text, "%zu", f->nids + 100);
    json_t *jobs = cli_json(f, "jobs", "--limit", limit_text);
    json_t **by_id = calloc((size_t)max_job + 1, sizeof *by_id);
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j)
    {
        int64_t id = jint(j, "id");
        if (id >= 1 && id <= max_job)
            by_id[id] = j;
    }
    for (size_t n = 0; n < f->nids; n++) {
        int64_t id = f->ids[n];
        json_t *job = by_id[id];
        if (!job) {
            CHECK(&st, "P4: job %lld is missing from baton jobs --json\n", (long long)id);
            continue;
        }
        const char *status = jstr(job, "status");
        int attempts = (int)jint(job, "attempts");
        if ((size_t)attempts > st.max_attempts)
            st.max_attempts = (size_t)attempts;
        const discard_rec *dr = NULL;
        for (size_t k = 0; k < o->ndiscards && !dr; k++)
            dr = o->discards[k].job == id ? &o->discards[k] : NULL;
        if (dr) {
            if (strcmp(status, "discarded") != 0 || strcmp(jstr(job, "error"), "discarded by operator") != 0)
                CHECK(&st, "P4: job %lld, discarded by the operator, is %s (%s)\n", (long long)id, status,
                      jstr(job, "error"));
            for (int k = l.head[id]; k >= 0; k = l.runs[k].next)
                if (l.runs[k].start > dr->at)
                    CHECK(&st, "P4: job %lld ran (attempt %d) after the operator discarded it\n", (long long)id,
                          l.runs[k].attempt);
            continue;
        }
        if (strcmp(status, "finished") != 0) {
            CHECK(&st, "P2/P4: job %lld is %s (attempts %d, error %s), not finished\n", (long long)id,
                  status, attempts, jstr(job, "error"));
            continue;
        }
        int recorded_end = 0;
        for (int k = l.head[id]; k >= 0; k = l.runs[k].next) {
            const run *r = &l.runs[k];
            if (r->attempt > attempts) {
                CHECK(&st, "P4: job %lld ran attempt %d after finishing with attempt %d\n", (long long)id,
                      r->attempt, attempts);
            } else if (r->attempt == attempts) {
                recorded_end = r->ended;
            } else if (r->ended) {
                /* A run that ended but was not the recorded one: only a worker killed before it
                 * could record the outcome explains it. */
                /* A run may also end just after its worker died: the command lives until
                 * the shepherd learns of the death and kills its group, which on a loaded
                 * machine takes a moment; its outcome can no more be recorded either. */
                const kill_rec *kr = killed_after(o, r->worker, r->last - SHEPHERD_NOTICE_NS);
                if (kr && kr->at - r->last <= KILL_GRACE_NS) {
                    st.redone_after_end++;
                    if (kr->at - r->last > st.max_redo_gap)
                        st.max_redo_gap = kr->at - r->last;
                } else if (outcome_dropped(f, id) || pruned_while_running(f, id, r->attempt)) {
                    st.redone_after_end++;
                    st.dropped_outcomes++;
                }
                else
                    CHECK(&st, "P4: job %lld finished twice: attempt %d ended (worker %ld%s) and attempt %d "
                               "was recorded\n",
                          (long long)id, r->attempt, r->worker, kr ? " killed much later" : " not killed",
                          attempts);
            }
        }
        if (!recorded_end)
            CHECK(&st, "P4: job %lld is finished with attempt %d, which has no end line\n", (long long)id,
                  attempts);
    }
    free(by_id);
    json_decref(jobs);

    /* P2 and P3: the queue is empty and so is every semaphore. */
    if (jobs_in_flight(f->client) != 0)
        CHECK(&st, "P2: %lld jobs still ready/scheduled/claimed/blocked\n", (long long)jobs_in_flight(f->client));
    json_t *sems = cli_json(f, "semaphores", NULL, NULL);
    if ((int)json_array_size(sems) != o->nkeys)
        CHECK(&st, "P3: %zu semaphores listed, expected %d keys\n", json_array_size(sems), o->nkeys);
    json_t *s;
    json_array_foreach(sems, i, s)
    {
        if (json_array_size(json_object_get(s, "holders")) != 0 || jint(s, "blocked") != 0 ||
            jint(s, "value") != jint(s, "limit") || jint(s, "limit") != o->limit) {
            char *dump = json_dumps(s, JSON_COMPACT);
            CHECK(&st, "P3: semaphore not empty at the end: %s\n", dump);
            free(dump);
        }
    }
    json_decref(sems);
    free(idx);
    runlog_free(&l);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Load: 4 workers x 4 threads, 200 keys, 3 ms jobs                                         */
/* ------------------------------------------------------------------------------------------ */

/* wait_drained polls every 100 ms until no job is in flight; left_out: how many are. */
static int wait_drained(fixture *f, int timeout_s, int64_t *left_out)
{
    int64_t deadline = mono_ns() + (int64_t)timeout_s * 1000000000LL;
    int64_t left;
    while ((left = jobs_in_flight(f->client)) != 0 && mono_ns() < deadline)
        sleep_ms(100);
    *left_out = left;
    return left == 0;
}

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    int n = v && *v ? atoi(v) : 0;
    return n > 0 ? n : fallback;
}

/* The load test's size: 200 keys x LOAD_JOBS_PER_KEY jobs. Under AddressSanitizer a
 * command job costs a worker tens of ms (forking a sanitized process, exec, a few
 * transactions): a 2-CPU machine with 4 workers runs some 35 per second, 2-3 minutes per
 * limit. $BATON_STRESS_JOBS_PER_KEY=5 gives a quick run while working on the code. */
#define LOAD_KEYS 200
#define LOAD_JOBS_PER_KEY 25

static void run_load(void **state, int limit)
{
    fixture *f = *state;
    enum { WORKERS = 4, THREADS = 4 };
    int keys = LOAD_KEYS, per_key = env_int("BATON_STRESS_JOBS_PER_KEY", LOAD_JOBS_PER_KEY);
    int njobs = keys * per_key;
    open_probe_queue(f, CALM_LIVENESS, limit, "3");
    enqueue_probes(f, "Probe", keys, per_key);

    int64_t t0 = mono_ns();
    for (int i = 0; i < WORKERS; i++)
        spawn_worker(f, i, THREADS, NULL);
    int64_t left, claimed = 0, most_claimed = 0;
    int held = 0;
    /* Generous: 5 jobs per second would be a machine ten times slower than expected. */
    int64_t deadline = t0 + (int64_t)(30 + njobs / 5) * 1000000000LL;
    while ((left = jobs_in_flight_claimed(f->client, &claimed)) != 0 && mono_ns() < deadline) {
        most_claimed = claimed > most_claimed ? claimed : most_claimed;
        int h = sample_holders(f->client);
        held = h > held ? h : held;
        sleep_ms(100);
    }
    double took = secs(mono_ns() - t0);
    if (left)
        print_error("limit %d: %lld of %d jobs still in flight after %.0f s\n", limit, (long long)left, njobs, took);
    stop_workers(f);

    check_opts o = {.limit = limit, .nkeys = keys};
    check_stats st = check_log_and_queue(f, &o);
    print_message("load limit %d: %d jobs (%d keys) in %.1f s; %zu runs, %zu interrupted, max attempts %zu; "
                  "max runs per key %d, max runs at once %d, max claimed sampled %lld, max holders sampled %d\n",
                  limit, njobs, keys, took, st.runs, st.interrupted, st.max_attempts, st.max_key_overlap,
                  st.max_parallel, (long long)most_claimed, held);
    if (held > limit)
        CHECK(&st, "P1: a key had %d holders in a sample, limit %d\n", held, limit);
    /* Without any kill, every job ran to its end exactly once. */
    if (st.redone_after_end)
        CHECK(&st, "P4: %zu jobs ran to their end twice without any worker being killed\n", st.redone_after_end);
    /* The limit is per key: jobs of distinct keys must have been running side by side.
     * 3 ms probes rarely overlap on a busy machine, so the claims tell (claimed jobs of a
     * limit-1 key are of distinct keys; for any limit, 4+ claims exceed one key). */
    if (most_claimed < 4 && st.max_parallel < 4)
        CHECK(&st, "expected at least 4 jobs running at once across keys, saw %lld claimed (%d runs)\n",
              (long long)most_claimed, st.max_parallel);
    if (left || st.errors)
        fail_msg("load limit %d: %d check failures (see above; logs in %s)", limit, st.errors + (left > 0), f->dir);
    f->passed = 1;
}

static void test_load_limit_1(void **state) { run_load(state, 1); }
static void test_load_limit_2(void **state) { run_load(state, 2); }
static void test_load_limit_5(void **state) { run_load(state, 5); }

/* ------------------------------------------------------------------------------------------ */
/* 2. Chaos: random SIGKILLs of workers running long and short jobs                            */
/* ------------------------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int rng_between(int lo, int hi) { return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1)); }

static int chaos_seconds(void)
{
    const char *v = getenv("BATON_CHAOS_SECONDS");
    int n = v && *v ? atoi(v) : CHAOS_SECONDS;
    return n > 0 ? n : CHAOS_SECONDS;
}

/* chaos_setup seeds the random choices ($BATON_CHAOS_SEED, else the clock) and stores
 * per_key jobs of limit `limit` for each of nkeys keys, each running 20..1500 ms, different
 * for each job and attempt: about a third outlive the 1 s lease and must keep it by
 * renewal. Returns the seed. */
static uint64_t chaos_setup(fixture *f, int limit, int nkeys, int per_key)
{
    const char *seed_env = getenv("BATON_CHAOS_SEED");
    uint64_t seed = seed_env && *seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)mono_ns() ^ (uint64_t)getpid();
    rng_state = seed ? seed : 1;
    const char *ms = "$(( (BATON_JOB_ID * 7919 + BATON_ATTEMPT * 104729) % 1481 + 20 ))";
    open_probe_queue(f, FAST_LIVENESS, limit, ms);
    enqueue_probes(f, "Probe", nkeys, per_key);
    return seed;
}

static void run_chaos(void **state, int limit)
{
    fixture *f = *state;
    enum { KEYS = 100, PER_KEY = 10, WORKERS = 4, THREADS = 4 };
    uint64_t seed = chaos_setup(f, limit, KEYS, PER_KEY);

    int64_t t0 = mono_ns();
    for (int i = 0; i < WORKERS; i++)
        spawn_worker(f, i, THREADS, NULL);
    int seconds = chaos_seconds();
    int64_t chaos_end = t0 + (int64_t)seconds * 1000000000LL;
    int held = 0, maintained = 0;
    while (mono_ns() < chaos_end && jobs_in_flight(f->client) > 0) {
        /* The workload: wait 0.3..1.5 s, meanwhile running the maintenance safety net and
         * sampling the semaphores, then kill a random worker and start another. */
        int64_t next_kill = mono_ns() + (int64_t)rng_between(300, 1500) * 1000000LL;
        while (mono_ns() < next_kill) {
            int promoted = 0;
            if (baton_maintain(f->client, &promoted) != BATON_OK)
                print_message("baton_maintain: %s\n", baton_error_last());
            maintained += promoted;
            int h = sample_holders(f->client);
            held = h > held ? h : held;
            sleep_ms(100);
        }
        int slot = rng_between(0, WORKERS - 1);
        kill_worker(f, slot);
        spawn_worker(f, slot, THREADS, NULL);
    }
    int64_t left;
    int drained = wait_drained(f, CHAOS_DRAIN_SECONDS, &left);
    double took = secs(mono_ns() - t0);
    if (!drained)
        print_error("chaos limit %d: %lld jobs still in flight %d s after the kills stopped\n", limit,
                    (long long)left, CHAOS_DRAIN_SECONDS);
    stop_workers(f);

    check_opts o = {.limit = limit, .nkeys = KEYS, .kills = f->kills, .nkills = f->nkills};
    check_stats st = check_log_and_queue(f, &o);
    print_message("chaos limit %d (seed %llu): %d jobs in %.1f s with %zu kills over %d s; %zu runs, "
                  "%zu interrupted (%zu not by a kill), %zu redone after their end (kill up to %.3f s "
                  "later; %zu outcomes dropped by workers declared dead), max attempts %zu; max runs per key %d, max runs at once %d, max holders "
                  "sampled %d, promoted by maintenance %d\n",
                  limit, (unsigned long long)seed, KEYS * PER_KEY, took, f->nkills, seconds, st.runs,
                  st.interrupted, st.unexplained, st.redone_after_end, secs(st.max_redo_gap),
                  st.dropped_outcomes, st.max_attempts, st.max_key_overlap, st.max_parallel, held, maintained);
    if (held > limit)
        CHECK(&st, "P1: a key had %d holders in a sample, limit %d\n", held, limit);
    if (f->nkills == 0)
        CHECK(&st, "the chaos phase killed no worker\n");
    if (!drained || st.errors)
        fail_msg("chaos limit %d (seed %llu): %d check failures (see above; logs in %s)", limit,
                 (unsigned long long)seed, st.errors + !drained, f->dir);
    f->passed = 1;
}

static void test_chaos_limit_1(void **state) { run_chaos(state, 1); }
static void test_chaos_limit_2(void **state) { run_chaos(state, 2); }

/* ------------------------------------------------------------------------------------------ */
/* 3. A stopped worker is pruned, then resumes                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct job_cond {
    fixture *f;
    int64_t id;
    int max_holders; /* largest holder count seen while polling */
} job_cond;

/* note_holders samples the semaphores (and paces the polling conditions that call it). */
static void note_holders(job_cond *c)
{
    sleep_ms(5);
    int h = sample_holders(c->f->client);
    if (h > c->max_holders)
        c->max_holders = h;
}

/* The job is claimed and its probe has logged its start. */
static int claimed_and_started(void *arg)
{
    job_cond *c = arg;
    json_t *j = job_now(c->f->client, c->id);
    int claimed = strcmp(jstr(j, "status"), "claimed") == 0;
    json_decref(j);
    if (!claimed)
        return 0;
    runlog l = read_runs(c->f->log, c->f->ids[c->f->nids - 1]);
    int started = l.head[c->id] >= 0 && l.runs[l.head[c->id]].started;
    runlog_free(&l);
    return started;
}

/* The first claim of the job is gone: pruned, the job failed and was queued again. */
static int first_claim_gone(void *arg)
{
    job_cond *c = arg;
    note_holders(c);
    json_t *j = job_now(c->f->client, c->id);
    int gone = strcmp(jstr(j, "status"), "claimed") != 0 || jint(j, "attempts") >= 2;
    json_decref(j);
    return gone;
}

static int job_finished(void *arg)
{
    job_cond *c = arg;
    note_holders(c);
    json_t *j = job_now(c->f->client, c->id);
    int done = strcmp(jstr(j, "status"), "finished") == 0;
    json_decref(j);
    return done;
}

static int file_contains(void *arg)
{
    const char *const *pair = arg;
    char *text = read_file(pair[0]);
    int found = text && strstr(text, pair[1]) != NULL;
    free(text);
    return found;
}

/* A process is gone once it no longer exists or is a zombie. */
static int pid_gone(void *arg)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", *(long *)arg);
    char *text = read_file(path);
    if (!text)
        return 1;
    const char *p = strrchr(text, ')');
    int gone = !p || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
    free(text);
    return gone;
}

/* holds_write_lock tells whether pid holds SQLite's WAL write lock on the database (byte
 * 120 of the -shm file), read from /proc/locks so that no descriptor of ours touches it. */
static int holds_write_lock(const fixture *f, pid_t pid)
{
    char shm[4300];
    snprintf(shm, sizeof shm, "%s-shm", f->db);
    struct stat sb;
    if (stat(shm, &sb) != 0)
        return 0;
    char *locks = read_file("/proc/locks");
    int held = 0;
    for (char *line = locks; line && *line && !held;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char type[16];
        long lpid;
        unsigned long long ino;
        unsigned maj, min;
        long long from;
        if (!strstr(line, "->") &&
            sscanf(line, "%*d: %*s %*s %15s %ld %x:%x:%llu %lld", type, &lpid, &maj, &min, &ino, &from) == 6)
            held = lpid == pid && ino == (unsigned long long)sb.st_ino && from == 120;
        line = nl ? nl + 1 : NULL;
    }
    free(locks);
    return held;
}

/* holds_server_transaction tells, on PostgreSQL, whether a session of the test's database
 * stays inside a transaction while nothing answers it: the process just stopped, holding
 * the row locks it took (a running one finishes its transaction within milliseconds). */
static int holds_server_transaction(const fixture *f)
{
    if (strncmp(f->url, "postgres", 8) != 0)
        return 0;
    sleep_ms(100);
    bt_store *s = test_db_open(f->url);
    int64_t stuck = test_db_int(s, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                                   " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                                   " AND state_change < clock_timestamp() - interval '80 milliseconds'");
    bt_store_close(s);
    return stuck > 0;
}

/* stop_outside_write_lock SIGSTOPs pid at a moment it holds no lock of the database:
 * SQLite's write lock, or PostgreSQL row locks of an open transaction. Stopped holding
 * one, it would stall the processes that need it, which is not what these tests are
 * about. Returns once the process is stopped. */
static void stop_outside_write_lock(const fixture *f, pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int tries = 0;; tries++) {
        assert_int_equal(kill(pid, SIGSTOP), 0);
        for (int i = 0; i < 1000; i++) { /* until the stop has taken effect */
            char *text = read_file(path);
            const char *p = text ? strrchr(text, ')') : NULL;
            int stopped = p && p[1] && p[2] == 'T';
            free(text);
            if (stopped)
                break;
            sleep_ms(1);
        }
        if (!holds_write_lock(f, pid) && !holds_server_transaction(f))
            return;
        assert_true(tries < 50);
        kill(pid, SIGCONT);
        sleep_ms(3);
    }
}

static void test_stopped_worker_is_fenced_and_releases_nothing_twice(void **state)
{
    fixture *f = *state;
    char classes[4096] = "";
    /* Two classes in one group share the key "Probe/k1": a long A and a short B. */
    probe_class(classes, sizeof classes, f, "Slow", 1, "4000", "Probe");
    probe_class(classes, sizeof classes, f, "Fast", 1, "50", "Probe");
    open_queue(f, FAST_LIVENESS, classes);
    int64_t a = 0, b = 0;
    assert_int_equal(baton_enqueue(f->client, &a, "Slow", "{\"key\": 1}", NULL), BATON_OK);
    assert_int_equal(baton_enqueue(f->client, &b, "Fast", "{\"key\": 1}", NULL), BATON_OK);
    f->ids = calloc(2, sizeof *f->ids);
    f->ids[0] = a;
    f->ids[1] = b;
    f->nids = 2;
    json_t *bj = job_now(f->client, b);
    assert_string_equal(jstr(bj, "status"), "blocked");
    json_decref(bj);

    pid_t w1 = spawn_worker(f, 0, 1, NULL);
    job_cond ca = {f, a, 0}, cb = {f, b, 0};
    if (!poll_until(claimed_and_started, &ca, 15000))
        fail_msg("W1 did not claim and start job A (logs in %s)", f->dir);
    runlog l = read_runs(f->log, b);
    run a1 = l.runs[l.head[a]];
    runlog_free(&l);

    pid_t w2 = spawn_worker(f, 1, 1, NULL);
    char w2log[4300];
    snprintf(w2log, sizeof w2log, "%s/worker-001.log", f->dir);
    const char *started[] = {w2log, "event=worker.started"};
    if (!poll_until(file_contains, started, 15000))
        fail_msg("W2 did not start (logs in %s)", f->dir);

    stop_outside_write_lock(f, w1);
    int64_t t_stop = mono_ns();
    note_holders(&ca);

    /* W2 prunes W1 once its heartbeat is older than 1.5 s: A's claim fails with "process
     * pruned" and A waits again (B takes the slot). */
    if (!poll_until(first_claim_gone, &ca, 15000))
        fail_msg("W2 never pruned the stopped W1 (logs in %s)", f->dir);
    double pruned_after = secs(mono_ns() - t_stop);
    json_t *aj = job_now(f->client, a);
    print_message("stopped worker: A's first claim gone %.2f s after SIGSTOP: status %s, attempts %lld, error %s\n",
                  pruned_after, jstr(aj, "status"), (long long)jint(aj, "attempts"), jstr(aj, "error"));
    assert_string_equal(jstr(aj, "error"), "process pruned");
    json_decref(aj);
    /* B runs while W1 is still stopped: A's first run must be over by then. */
    if (!poll_until(job_finished, &cb, 15000))
        fail_msg("B did not run while W1 was stopped (logs in %s)", f->dir);

    assert_int_equal(kill(w1, SIGCONT), 0);
    int64_t t_cont = mono_ns();
    /* W1 finds itself stalled past the point where it may be declared dead: it must stop
     * the job it still runs, promptly. */
    int a1_gone = poll_until(pid_gone, &a1.pid, 5000);
    double gone_after = secs(mono_ns() - t_cont);

    if (!poll_until(job_finished, &cb, 30000) || !poll_until(job_finished, &ca, 30000))
        fail_msg("A and B did not both finish (logs in %s)", f->dir);
    stop_workers(f);

    check_stats st = {0};
    if (!a1_gone)
        CHECK(&st, "A's first run (pid %ld) still ran 5 s after W1 resumed\n", a1.pid);
    l = read_runs(f->log, b);
    const run *r1 = NULL;
    int a_runs = 0, a_ends = 0, b_runs = 0, b_ends = 0;
    for (int k = l.head[a]; k >= 0; k = l.runs[k].next) {
        a_runs++;
        a_ends += l.runs[k].ended;
        if (l.runs[k].attempt == 1)
            r1 = &l.runs[k];
    }
    for (int k = l.head[b]; k >= 0; k = l.runs[k].next) {
        b_runs++;
        b_ends += l.runs[k].ended;
    }
    if (!r1) {
        CHECK(&st, "no run of A's first attempt in the log\n");
    } else {
        print_message("stopped worker: A#1 last logged %.3f s after SIGCONT (%s), gone after %.3f s\n",
                      secs(r1->last - t_cont), r1->ended ? "ended" : "killed", gone_after);
        if (r1->last > t_cont + 1000000000LL)
            CHECK(&st, "A's first run went on %.3f s after W1 resumed (limit 1 s)\n", secs(r1->last - t_cont));
    }
    if (a_ends != 1)
        CHECK(&st, "A ran to its end %d times, expected once\n", a_ends);
    if (b_ends != 1 || b_runs != 1)
        CHECK(&st, "B ran %d times and ended %d times, expected once each\n", b_runs, b_ends);
    if (a_runs != 2)
        CHECK(&st, "A ran %d times, expected 2 (the pruned attempt and its retry)\n", a_runs);
    runlog_free(&l);

    /* W1's late outcome for A#1 must have written nothing: A retried once, B once. */
    aj = job_now(f->client, a);
    bj = job_now(f->client, b);
    if (strcmp(jstr(aj, "status"), "finished") != 0 || jint(aj, "attempts") != 2)
        CHECK(&st, "A is %s with %lld attempts, expected finished with 2\n", jstr(aj, "status"),
              (long long)jint(aj, "attempts"));
    if (strcmp(jstr(bj, "status"), "finished") != 0 || jint(bj, "attempts") != 1)
        CHECK(&st, "B is %s with %lld attempts, expected finished with 1\n", jstr(bj, "status"),
              (long long)jint(bj, "attempts"));
    json_decref(aj);
    json_decref(bj);

    json_t *sems = cli_json(f, "semaphores", NULL, NULL);
    char *dump = json_dumps(sems, JSON_COMPACT);
    json_t *s = json_array_get(sems, 0);
    if (json_array_size(sems) != 1 || strcmp(jstr(s, "key"), "Probe/k1") != 0 ||
        json_array_size(json_object_get(s, "holders")) != 0 || jint(s, "blocked") != 0 || jint(s, "value") != 1)
        CHECK(&st, "semaphores at the end: %s, expected Probe/k1 empty with value 1\n", dump);
    free(dump);
    json_decref(sems);
    int max_holders = ca.max_holders > cb.max_holders ? ca.max_holders : cb.max_holders;
    if (max_holders > 1)
        CHECK(&st, "Probe/k1 had %d holders at once (limit 1)\n", max_holders);
    /* And as the jobs saw it: B never ran beside A's first run, which the shepherd's dead
     * man's switch stopped while W1 itself could do nothing. */
    kill_rec stopped = {w1, t_stop};
    check_opts o = {.limit = 1, .nkeys = 1, .kills = &stopped, .nkills = 1};
    st.errors += check_log_and_queue(f, &o).errors;
    (void)w2;
    if (st.errors)
        fail_msg("stopped worker: %d check failures (see above; logs in %s)", st.errors, f->dir);
    f->passed = 1;
}

/* 4. A worker stopped while its job ran to its end is pruned meanwhile; its job's retry is
 * ready when it resumes (the other worker serves another queue). Resumed, the worker must
 * not claim that retry, or anything, under the process id it was pruned as: nobody would
 * ever prune such a claim again. Expected: the job runs again and finishes, its key ends
 * empty. W1 has 2 threads so that it has an idle one at once when it resumes (with 1, it
 * claims only if its finished job is reported before its first round, a race). */
static void test_worker_resumed_after_prune_leaves_no_orphan_claim(void **state)
{
    fixture *f = *state;
    open_probe_queue(f, FAST_LIVENESS, 1, "1000");
    int64_t a = 0;
    assert_int_equal(baton_enqueue(f->client, &a, "Probe", "{\"key\": 1}", NULL), BATON_OK);
    f->ids = calloc(1, sizeof *f->ids);
    f->ids[0] = a;
    f->nids = 1;

    pid_t w1 = spawn_worker(f, 0, 2, NULL);
    job_cond ca = {f, a, 0};
    if (!poll_until(claimed_and_started, &ca, 15000))
        fail_msg("W1 did not claim and start the job (logs in %s)", f->dir);
    /* W2 serves another queue: it only heartbeats and prunes. */
    spawn_worker(f, 1, 1, "elsewhere");
    char w2log[4300];
    snprintf(w2log, sizeof w2log, "%s/worker-001.log", f->dir);
    const char *started[] = {w2log, "event=worker.started"};
    if (!poll_until(file_contains, started, 15000))
        fail_msg("W2 did not start (logs in %s)", f->dir);

    stop_outside_write_lock(f, w1);
    if (!poll_until(first_claim_gone, &ca, 15000))
        fail_msg("W2 never pruned the stopped W1 (logs in %s)", f->dir);
    char end_line[64];
    snprintf(end_line, sizeof end_line, " %lld 1 end ", (long long)a);
    const char *ended[] = {f->log, end_line};
    assert_true(poll_until(file_contains, ended, 5000)); /* the 1 s probe ran to its end */
    json_t *j = job_now(f->client, a);
    print_message("resumed worker: before SIGCONT the job is %s, attempts %lld, error %s\n", jstr(j, "status"),
                  (long long)jint(j, "attempts"), jstr(j, "error"));
    json_decref(j);
    assert_int_equal(kill(w1, SIGCONT), 0);
    int64_t t_cont = mono_ns();

    int finished = poll_until(job_finished, &ca, 20000);
    j = job_now(f->client, a);
    json_t *sems = semaphores_now(f->client);
    char *jd = json_dumps(j, JSON_COMPACT), *sd = json_dumps(sems, JSON_COMPACT);
    if (!finished)
        print_error("20 s after SIGCONT: job %s\nsemaphores %s\n", jd, sd);
    free(jd);
    free(sd);
    json_decref(j);
    json_decref(sems);
    if (!finished)
        fail_msg("the job did not finish within 20 s of W1's resumption (job and semaphores above; logs "
                 "in %s)", f->dir);
    stop_workers(f);
    check_opts o = {.limit = 1, .nkeys = 1};
    /* The first run ended while its worker was stopped and then pruned: its outcome is
     * rightly lost, as if the worker had been killed then. */
    kill_rec stopped = {w1, t_cont};
    o.kills = &stopped;
    o.nkills = 1;
    check_stats st = check_log_and_queue(f, &o);
    if (st.errors)
        fail_msg("resumed worker: %d check failures (see above; logs in %s)", st.errors, f->dir);
    f->passed = 1;
}

/* ------------------------------------------------------------------------------------------ */
/* 4. PostgreSQL restarted under load                                                          */
/* ------------------------------------------------------------------------------------------ */

/* free_port asks the kernel for a port on 127.0.0.1 that nothing listens on. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void shell(const char *cmd)
{
    int st = system(cmd);
    if (st != 0)
        fail_msg("'%s' failed with status %d", cmd, st);
}

/* start_private_server runs a PostgreSQL server of this test's own in its directory, from
 * the binaries in $BATON_TEST_PG_BIN (as $BATON_TEST_PG_USER when set: initdb refuses
 * root), so restarting it disturbs no other test; f->url then names a database there. */
static void start_private_server(fixture *f)
{
    const char *bin = getenv("BATON_TEST_PG_BIN"), *user = getenv("BATON_TEST_PG_USER");
    SKIP_UNLESS(test_on_postgres() && bin && *bin, "a server restart needs PostgreSQL and $BATON_TEST_PG_BIN");
    char as[128] = "", pgdir[4400], cmd[20000];
    snprintf(pgdir, sizeof pgdir, "%s/pg", f->dir);
    assert_int_equal(mkdir(pgdir, 0700), 0);
    if (user && *user) {
        /* The server's user must reach its directory inside this test's private one. */
        assert_int_equal(chmod(f->dir, 0711), 0);
        snprintf(as, sizeof as, "runuser -u %s --", user);
        snprintf(cmd, sizeof cmd, "chown %s '%s'", user, pgdir);
        shell(cmd);
    }
    snprintf(cmd, sizeof cmd, "%s '%s/initdb' -D '%s/data' -U postgres -A trust -E UTF8 --no-sync >/dev/null", as,
             bin, pgdir);
    shell(cmd);
    snprintf(f->pg_ctl, sizeof f->pg_ctl, "%s '%s/pg_ctl' -D '%s/data'", as, bin, pgdir);
    int port = free_port();
    snprintf(f->pg_start, sizeof f->pg_start,
             "%s -w -l '%s/server.log' -o \"-p %d -k '%s' -h 127.0.0.1 -c fsync=off\" start >/dev/null", f->pg_ctl,
             pgdir, port, pgdir);
    shell(f->pg_start);
    test_db_drop(f->url); /* the shared server's database of setup is not used */
    char admin[128];
    snprintf(admin, sizeof admin, "postgres://postgres@127.0.0.1:%d/postgres", port);
    bt_store *s = test_db_open(admin);
    test_db_exec(s, "CREATE DATABASE baton");
    bt_store_close(s);
    snprintf(f->url, sizeof f->url, "postgres://postgres@127.0.0.1:%d/baton", port);
}

static int finished_at_least(void *p)
{
    fixture *f = p;
    int64_t claimed = 0, left = jobs_in_flight_claimed(f->client, &claimed);
    return left >= 0 && (int64_t)f->nids - left >= (int64_t)f->nids / 3 && claimed > 0;
}

/* load_private_server starts a server of the test's own, stores per_key jobs of limit 1
 * (each running ms) for each of nkeys keys and has two workers of 4 threads run them, until
 * a third is done and others run: a fault of the server then catches some mid-run. */
static void load_private_server(fixture *f, const char *liveness_yaml, int nkeys, int per_key, const char *ms)
{
    start_private_server(f);
    open_probe_queue(f, liveness_yaml, 1, ms);
    enqueue_probes(f, "Probe", nkeys, per_key);
    for (int i = 0; i < 2; i++)
        spawn_worker(f, i, 4, NULL);
    assert_true(poll_until(finished_at_least, f, 120000));
}

/* check_after_server_fault waits for the jobs to drain after a fault of the server, then
 * checks that every worker lived through it, none was pruned, no key went over its limit
 * and no job that ran to its end ran again. */
static void check_after_server_fault(fixture *f, const char *fault, int nkeys, int njobs)
{
    int64_t left;
    if (!wait_drained(f, 120, &left))
        fail_msg("%lld jobs still in flight 120 s after the %s (logs in %s)", (long long)left, fault, f->dir);
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] > 0 && kill(f->workers[i], 0) != 0)
            fail_msg("worker %d did not survive the %s (logs in %s)", (int)f->workers[i], fault, f->dir);
    stop_workers(f);
    check_opts o = {.limit = 1, .nkeys = nkeys};
    check_stats st = check_log_and_queue(f, &o);
    print_message("%s: %zu runs of %d jobs, %zu interrupted, max runs of a key at once %d\n", fault, st.runs, njobs,
                  st.interrupted, st.max_key_overlap);
    if (any_log_contains(f, "event=processes.pruned"))
        CHECK(&st, "a live worker was pruned across the %s\n", fault);
    if (st.redone_after_end)
        CHECK(&st, "%zu jobs ran to their end twice across the %s\n", st.redone_after_end, fault);
    if (st.errors)
        fail_msg("%s: %d check failures (see above; logs in %s)", fault, st.errors, f->dir);
    f->passed = 1;
}

/* The server restarts (pg_ctl restart: every connection dropped, in-flight transactions
 * rolled back) while workers run jobs of limit 1: nothing is lost, no job that ran to its
 * end runs again because of the outage, no key goes over its limit, and the work resumes
 * by itself. */
static void test_postgres_restart_under_load(void **state)
{
    fixture *f = *state;
    enum { KEYS = 20, PER_KEY = 10 };
    load_private_server(f, CALM_LIVENESS, KEYS, PER_KEY, "100");
    char cmd[9300];
    snprintf(cmd, sizeof cmd, "%s -w -m fast restart >/dev/null", f->pg_ctl);
    shell(cmd);
    check_after_server_fault(f, "restart", KEYS, KEYS * PER_KEY);
}

/* The database is down for three alive thresholds while workers run jobs of limit 1
 * (pg_ctl stop, a wait, start). Nobody could heartbeat through it, so nobody is dead when
 * it ends: whoever reaches the server first (here a worker started as it comes back) must
 * not prune the others, whose jobs that ran to their end meanwhile would then fail as
 * "process pruned" and run again. */
static void test_postgres_outage_longer_than_the_threshold(void **state)
{
    fixture *f = *state;
    enum { KEYS = 8, PER_KEY = 6 };
    load_private_server(f, "process_heartbeat_interval: 0.25\nprocess_alive_threshold: 3\n", KEYS, PER_KEY, "400");
    char cmd[9300];
    snprintf(cmd, sizeof cmd, "%s -w -m fast stop >/dev/null", f->pg_ctl);
    shell(cmd);
    sleep_ms(9000); /* the fault itself: three thresholds without a database */
    shell(f->pg_start);
    spawn_worker(f, 2, 1, "elsewhere");
    check_after_server_fault(f, "outage", KEYS, KEYS * PER_KEY);
}

/* spawn_skewed_worker starts a worker on url whose wall clock reads skew seconds off its
 * host's (the shim $BATON_CLOCKSKEW names, loaded with LD_PRELOAD). */
static pid_t spawn_skewed_worker(fixture *f, const char *url, int slot, int threads, const char *skew)
{
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan ? strdup(asan) : NULL, options[512];
    snprintf(options, sizeof options, "%s%sverify_asan_link_order=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", options, 1);
    setenv("LD_PRELOAD", getenv("BATON_CLOCKSKEW"), 1);
    setenv("BATON_TEST_CLOCK_SKEW", skew, 1);
    pid_t pid = spawn_worker_on(f, url, slot, threads, NULL);
    unsetenv("LD_PRELOAD");
    unsetenv("BATON_TEST_CLOCK_SKEW");
    if (saved)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
    return pid;
}

/* A worker whose host's wall clock is 40 s ahead joins a worker running a job of a limit-1
 * key. Judged by each host's wall clock, every other heartbeat looks 40 s old to it: it
 * prunes the live worker and runs the key's next job beside the one still running. Judged
 * by one clock, nobody is pruned and the key's jobs run one at a time. */
static void test_clock_ahead_prunes_nobody(void **state)
{
    fixture *f = *state;
    const char *shim = getenv("BATON_CLOCKSKEW");
    SKIP_UNLESS(shim && *shim, "a skewed clock needs the shim $BATON_CLOCKSKEW names");
    open_probe_queue(f, FAST_LIVENESS, 1, "1500");
    enqueue_probes(f, "Probe", 1, 3);
    spawn_worker(f, 0, 1, NULL);
    job_cond first = {f, f->ids[0], 0};
    if (!poll_until(claimed_and_started, &first, 15000))
        fail_msg("the first job did not start (logs in %s)", f->dir);
    spawn_skewed_worker(f, f->url, 1, 1, "40");
    int64_t left;
    if (!wait_drained(f, 60, &left))
        fail_msg("%lld jobs still in flight after 60 s (logs in %s)", (long long)left, f->dir);
    stop_workers(f);
    check_opts o = {.limit = 1, .nkeys = 1};
    check_stats st = check_log_and_queue(f, &o);
    if (any_log_contains(f, "event=processes.pruned"))
        CHECK(&st, "the worker whose clock is ahead pruned a live worker\n");
    if (st.errors)
        fail_msg("clock ahead: %d check failures (see above; logs in %s)", st.errors, f->dir);
    f->passed = 1;
}

/* start_proxy puts a TCP proxy of the test's own in front of f's server and writes to via
 * the URL of f's database through it (f->url is "postgres://USER@HOST:PORT/DB"). */
static tcp_proxy *start_proxy(const fixture *f, char *via, size_t cap)
{
    const char *at = strchr(f->url, '@'), *colon = at ? strchr(at, ':') : NULL, *slash = colon ? strchr(colon, '/') : NULL;
    if (!slash)
        fail_msg("cannot find HOST:PORT in %s", f->url);
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - at - 1), at + 1);
    tcp_proxy *proxy = tcp_proxy_start(host, atoi(colon + 1));
    assert_non_null(proxy);
    snprintf(via, cap, "%.*s127.0.0.1:%d%s", (int)(at + 1 - f->url), f->url, tcp_proxy_port(proxy), slash);
    return proxy;
}

/* A worker's path to the server goes silent (a TCP proxy of the test's own, frozen: no
 * FIN, no RST) while it runs a job of a limit-1 key: its next database call waits on the
 * path. Another worker prunes it once its threshold has passed and starts the key's next
 * job. The first job must be stopped before that: the fence runs on a clock of its own,
 * not between database calls. Thawed, the worker finds it was pruned and goes on. */
static void test_silent_network_path_fences_the_worker(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "a network path needs a server");
    char via[4400];
    tcp_proxy *proxy = start_proxy(f, via, sizeof via);
    open_probe_queue(f, FAST_LIVENESS, 1, "4000");
    enqueue_probes(f, "Probe", 1, 2);
    pid_t cut_off = spawn_worker_on(f, via, 0, 1, NULL);
    job_cond first = {f, f->ids[0], 0};
    if (!poll_until(claimed_and_started, &first, 15000))
        fail_msg("the first job did not start (logs in %s)", f->dir);
    spawn_worker(f, 1, 1, NULL);
    started_probe sp = {f, 1};
    if (!poll_until(worker_started, &sp, 15000))
        fail_msg("the second worker did not start (logs in %s)", f->dir);
    tcp_proxy_freeze(proxy, 1);
    kill_rec cut = {cut_off, mono_ns()};
    job_cond second = {f, f->ids[1], 0};
    if (!poll_until(job_finished, &second, 30000))
        fail_msg("the key's next job did not run while the path was silent (logs in %s)", f->dir);
    tcp_proxy_freeze(proxy, 0);
    int64_t left;
    if (!wait_drained(f, 60, &left))
        fail_msg("%lld jobs still in flight 60 s after the path came back (logs in %s)", (long long)left, f->dir);
    stop_workers(f);
    tcp_proxy_stop(proxy);
    check_opts o = {.limit = 1, .nkeys = 1, .kills = &cut, .nkills = 1};
    check_stats st = check_log_and_queue(f, &o);
    if (st.errors)
        fail_msg("silent path: %d check failures (see above; logs in %s)", st.errors, f->dir);
    f->passed = 1;
}

/* check_after_cut stops the workers once the jobs drained after the proxy cut one
 * connection at a COMMIT (njobs jobs of a key each, limit 1) and checks that every job ran
 * once and that the worker reconciled its claims if, and only if, it could not know the
 * COMMIT's outcome (must_reconcile). */
static void check_after_cut(fixture *f, tcp_proxy *proxy, int njobs, int must_reconcile)
{
    stop_workers(f);
    assert_int_equal(tcp_proxy_cuts(proxy), 1);
    tcp_proxy_stop(proxy);
    check_opts o = {.limit = 1, .nkeys = njobs};
    check_stats st = check_log_and_queue(f, &o);
    int reconciled = any_log_contains(f, "event=worker.claims_reconciled");
    if (must_reconcile && !reconciled)
        CHECK(&st, "the worker never reconciled its claims\n");
    if (!must_reconcile && (reconciled || any_log_contains(f, "(pipeline end)")))
        CHECK(&st, "the worker took an answered COMMIT for a failed one\n");
    if (st.runs != (size_t)njobs)
        CHECK(&st, "%d jobs ran %zu times, expected once each\n", njobs, st.runs);
    if (st.errors)
        fail_msg("cut at a COMMIT: %d check failures (see above; logs in %s)", st.errors, f->dir);
    f->passed = 1;
}

/* The network breaks just after the server received the COMMIT of the round that claimed
 * a job (a proxy of the test's own forwards it, then ends the connection before the
 * answer): the server committed the claim, the worker never heard. It must find the claim
 * and hand it back, so the job runs, once, instead of staying claimed by a live worker. */
static void test_lost_commit_answer_on_the_wire(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "a lost answer needs a server on the other end of a connection");
    char via[4400];
    tcp_proxy *proxy = start_proxy(f, via, sizeof via);
    open_probe_queue(f, CALM_LIVENESS, 1, "100");
    enqueue_probes(f, "Probe", 1, 1);
    tcp_proxy_cut_after(proxy, "INSERT INTO baton_claimed_executions", "COMMIT");
    spawn_worker_on(f, via, 0, 1, NULL);
    int64_t left;
    if (!wait_drained(f, 60, &left))
        fail_msg("the job was not done 60 s after its claim's answer was lost (logs in %s)", f->dir);
    check_after_cut(f, proxy, 1, 1);
}

/* A client goes silent inside a transaction that holds a key's lock (its host froze, its
 * path went dead: the server sees no FIN): here `baton enqueue` through a proxy that
 * freezes once the key's semaphore row is locked. Another enqueue of the key waits for
 * that lock. The server must end the silent session before the waiter's lock timeout, so
 * the waiter's job is stored; thawed, the silent client fails with one line and stores
 * nothing. */
/* wait_for_count polls db until sql counts a row, or fails after 30 s saying what. */
static void wait_for_count(bt_store *db, const char *sql, const char *what)
{
    for (int waited = 0; !test_db_int(db, sql); waited += 20) {
        if (waited > 30000)
            fail_msg("%s never happened", what);
        sleep_ms(20);
    }
}

static void test_silent_client_inside_a_transaction_frees_its_keys(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "a silent session needs a server");
    char via[4400];
    tcp_proxy *proxy = start_proxy(f, via, sizeof via);
    open_probe_queue(f, CALM_LIVENESS, 1, "100");
    enqueue_probes(f, "Probe", 1, 1); /* the key's semaphore row exists from here on */
    tcp_proxy_freeze_after(proxy, "limit_value FROM baton_semaphores", "Probe/k0");
    const char *args[] = {"--db", via, "--config", f->config, "enqueue", "Probe", "--args", "{\"key\": 0}", NULL};
    char log[4200];
    snprintf(log, sizeof log, "%s/silent-enqueue.log", f->dir);
    pid_t silent = baton_spawn(log, args);
    bt_store *db = test_db_open(f->url);
    wait_for_count(db, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                       " AND datname = current_database() AND query LIKE '%baton_semaphore%'",
                   "the enqueue through the proxy locking its key");
    if (try_enqueue_probes(f, "Probe", 1, 1) != BATON_OK)
        fail_msg("an enqueue waiting on the silent session's lock failed: %s", baton_error_last());
    tcp_proxy_freeze(proxy, 0);
    int status = wait_exit(silent, 30000);
    char *out = read_file(log);
    if (status <= 0 || !out || !strchr(out, '\n') || strchr(out, '\n')[1])
        fail_msg("the silent enqueue ended with status %d and said: %s", status, out ? out : "(nothing)");
    free(out);
    assert_int_equal(test_db_int(db, "SELECT count(*) FROM baton_jobs"), 2);
    bt_store_close(db);
    tcp_proxy_stop(proxy);
    f->passed = 1;
}

/* The server answers the COMMIT of the round that claimed a job, then its session ends
 * before it said it was idle (the server terminated it: pg_terminate_backend, a restart
 * under way). The claim was committed and the worker was told so: it must run the job as
 * claimed. Taking the session's end for a failed commit, it either reconciled (handing
 * the claim back) or, when libpq did not yet call the connection bad, took it for a
 * rollback and forgot a claim the database holds for it: the job never ran. */
static void test_session_ended_after_the_commit_was_answered(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "a session's end needs a server on the other end of a connection");
    char via[4400];
    tcp_proxy *proxy = start_proxy(f, via, sizeof via);
    open_probe_queue(f, CALM_LIVENESS, 1, "100");
    enqueue_probes(f, "Probe", 1, 1);
    tcp_proxy_end_after_answer(proxy, "INSERT INTO baton_claimed_executions", "COMMIT");
    spawn_worker_on(f, via, 0, 1, NULL);
    int64_t left;
    if (!wait_drained(f, 30, &left))
        fail_msg("the job was not done 30 s after its claim's session ended (logs in %s)", f->dir);
    check_after_cut(f, proxy, 1, 0);
}

/* A round's COMMIT answer is lost while one job runs long and another has been recorded
 * since it started (two threads; jobs 1 and 3 long, 2 and 4 short, each of its own key).
 * The worker reconciles what it knows with the database, walking the jobs in progress:
 * none of them may lead it to a job it has already recorded and let go (under
 * AddressSanitizer, the worker aborted on a freed job). The statements of a connection are
 * prepared once, so the worker's sessions are ended first, to make it send the text of the
 * claim again on a new one. */
static void test_lost_commit_answer_while_a_job_runs(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "a lost answer needs a server on the other end of a connection");
    char via[4400];
    tcp_proxy *proxy = start_proxy(f, via, sizeof via);
    open_probe_queue(f, CALM_LIVENESS, 1, "$(( BATON_JOB_ID == 1 ? 6000 : BATON_JOB_ID == 3 ? 2500 : 50 ))");
    enqueue_probes(f, "Probe", 4, 1);
    assert_int_equal(f->ids[0], 1);
    spawn_worker_on(f, via, 0, 2, NULL);
    bt_store *db = test_db_open(f->url);
    wait_for_count(db, "SELECT count(*) FROM baton_jobs WHERE id = 2 AND status = 'finished'",
                   "the second job recorded while the first runs");
    wait_for_count(db, "SELECT count(*) FROM baton_claimed_executions WHERE job_id = 3", "the third job claimed");
    test_db_exec(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    tcp_proxy_cut_after(proxy, "INSERT INTO baton_claimed_executions", "COMMIT");
    int64_t left;
    if (!wait_drained(f, 60, &left))
        fail_msg("%lld jobs left 60 s after the lost answer (logs in %s)", (long long)left, f->dir);
    if (kill(f->workers[0], 0) != 0)
        fail_msg("the worker died (logs in %s)", f->dir);
    bt_store_close(db);
    check_after_cut(f, proxy, 4, 1);
}

/* An operator's `doctor --repair` (or the dispatcher's maintenance) meets a key whose lock
 * another session holds, as a worker stopped in the middle of a round does. It must wait
 * for that key alone: the keys it repaired before are free for everyone meanwhile. Here
 * Probe/k0's slot needs repair and Probe/k1 is locked by the test; while the repair waits
 * for k1, an enqueue of k0 must be stored, not time out. */
static void test_repair_waiting_on_one_key_holds_up_no_other(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "SQLite has one lock for the whole database");
    open_probe_queue(f, CALM_LIVENESS, 1, "100");
    enqueue_probes(f, "Probe", 2, 2); /* each key: one job ready in its slot, one blocked */
    bt_store *db = test_db_open(f->url);
    test_db_exec(db, "DELETE FROM baton_semaphore_holders WHERE key = 'Probe/k0'"); /* k0: a free slot */
    bt_store *holder = test_db_open(f->url);
    test_db_exec(holder, "SET idle_in_transaction_session_timeout = 0; BEGIN;"
                         " SELECT limit_value FROM baton_semaphores WHERE key = 'Probe/k1' FOR UPDATE");
    const char *args[] = {"--db", f->url, "--config", f->config, "doctor", "--repair", NULL};
    char log[4200];
    snprintf(log, sizeof log, "%s/doctor.log", f->dir);
    pid_t doctor = baton_spawn(log, args);
    const char *waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                          " AND datname = current_database() AND query LIKE '%baton_semaphores%'";
    wait_for_count(db, waiting, "the repair waiting for Probe/k1's lock");
    if (try_enqueue_probes(f, "Probe", 1, 1) != BATON_OK)
        fail_msg("an enqueue of Probe/k0 while the repair waits for Probe/k1 failed: %s", baton_error_last());
    /* Stored while the repair still waits, not once it gave up (a lock timeout ends both). */
    if (test_db_int(db, waiting) != 1)
        fail_msg("the enqueue of Probe/k0 was stored only after the repair stopped waiting for Probe/k1");
    test_db_exec(holder, "ROLLBACK");
    int status = wait_exit(doctor, 30000);
    if (status != 0) {
        char *out = read_file(log);
        fail_msg("doctor --repair ended with status %d: %s", status, out ? out : "(nothing)");
    }
    /* k0's blocked job took the free slot; the new one waits behind it. */
    assert_int_equal(test_db_int(db, "SELECT count(*) FROM baton_semaphore_holders WHERE key = 'Probe/k0'"), 1);
    assert_int_equal(test_db_int(db, "SELECT count(*) FROM baton_blocked_executions WHERE concurrency_key = 'Probe/k0'"), 1);
    bt_store_close(holder);
    bt_store_close(db);
    f->passed = 1;
}

/* Two workers died (SIGKILL), each claiming a job of a key of its own; a third worker
 * prunes them while the test holds both keys' locks, as rounds in flight do. Once the
 * prune waits for one key, the test lets that key go: the prune settles that process and
 * then waits for the other key. Meanwhile the first key must be free (an enqueue of it is
 * stored): each dead process is pruned in a transaction of its own, so a wait for one
 * process's keys holds up nothing of another's, and keys are never locked out of order
 * across processes (which deadlocks against a round that locks them in order). */
static void test_prune_waiting_on_one_process_holds_up_no_other(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "SQLite has one lock for the whole database");
    open_probe_queue(f, CALM_LIVENESS, 1, "30000");
    bt_store *db = test_db_open(f->url);
    for (int k = 0; k < 2; k++) {
        spawn_worker(f, k, 1, NULL);
        char args[32], sql[160];
        snprintf(args, sizeof args, "{\"key\": %d}", k);
        assert_int_equal(baton_enqueue(f->client, NULL, "Probe", args, NULL), BATON_OK);
        snprintf(sql, sizeof sql, "SELECT (count(DISTINCT process_id) = %d)::int FROM baton_claimed_executions", k + 1);
        wait_for_count(db, sql, "each worker claiming a job of its own key");
    }
    kill_worker(f, 0);
    kill_worker(f, 1);
    bt_store *holder[2];
    int64_t backend[2];
    for (int k = 0; k < 2; k++) {
        char sql[200];
        holder[k] = test_db_open(f->url);
        snprintf(sql, sizeof sql, "SET idle_in_transaction_session_timeout = 0; BEGIN;"
                 " SELECT limit_value FROM baton_semaphores WHERE key = 'Probe/k%d' FOR UPDATE", k);
        test_db_exec(holder[k], sql);
        backend[k] = test_db_int(holder[k], "SELECT pg_backend_pid()");
    }
    spawn_worker(f, 2, 1, NULL);
    const char *waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                          " AND datname = current_database() AND query LIKE '%baton_semaphores%'";
    wait_for_count(db, waiting, "the prune waiting for a key's lock");
    int64_t blocker = test_db_int(db, "SELECT (pg_blocking_pids(pid))[1] FROM pg_stat_activity"
                                      " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                                      " AND query LIKE '%baton_semaphores%'");
    int first = blocker == backend[0] ? 0 : 1;
    assert_int_equal(blocker, backend[first]);
    test_db_exec(holder[first], "ROLLBACK");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
             " AND datname = current_database() AND %lld = ANY(pg_blocking_pids(pid))", (long long)backend[!first]);
    wait_for_count(db, sql, "the prune waiting for the other key's lock");
    char args[32];
    snprintf(args, sizeof args, "{\"key\": %d}", first);
    if (baton_enqueue(f->client, NULL, "Probe", args, NULL) != BATON_OK)
        fail_msg("an enqueue of a pruned process's key while the prune waits for another's failed: %s",
                 baton_error_last());
    if (test_db_int(db, sql) != 1)
        fail_msg("the enqueue of Probe/k%d was stored only after the prune stopped waiting for Probe/k%d", first,
                 !first);
    test_db_exec(holder[!first], "ROLLBACK");
    wait_for_count(db, "SELECT (count(*) = 1)::int FROM baton_processes", "both dead workers pruned");
    for (int k = 0; k < 2; k++)
        bt_store_close(holder[k]);
    bt_store_close(db);
    f->passed = 1;
}

/* A promotion meets a waiting job whose row another transaction has locked (one that is
 * discarding it and will roll back). It must wait for that transaction, not skip the job:
 * skipped, the job would stay blocked beside a free slot until maintenance. Here `baton
 * discard` of the key's running job frees its slot while the test holds the waiting job's
 * row, then rolls back. */
static void test_promotion_never_skips_a_locked_waiter(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS(test_on_postgres(), "SQLite has one lock for the whole database");
    open_probe_queue(f, CALM_LIVENESS, 1, "100");
    enqueue_probes(f, "Probe", 1, 2); /* the first ready in its slot, the second blocked */
    int64_t holder = f->ids[0], waiter = f->ids[1];
    bt_store *db = test_db_open(f->url);
    bt_store *other = test_db_open(f->url);
    char sql[160];
    snprintf(sql, sizeof sql, "SET idle_in_transaction_session_timeout = 0; BEGIN;"
             " SELECT job_id FROM baton_blocked_executions WHERE job_id = %lld FOR UPDATE", (long long)waiter);
    test_db_exec(other, sql);
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)holder);
    const char *args[] = {"--db", f->url, "--config", f->config, "discard", id, NULL};
    char log[4200];
    snprintf(log, sizeof log, "%s/discard.log", f->dir);
    pid_t discard = baton_spawn(log, args);
    /* The discard either waits for the locked row or, skipping it, is done. */
    int ended = 0, st = 0;
    for (int waited = 0; !(ended = waitpid(discard, &st, WNOHANG) == discard); waited += 20) {
        if (test_db_int(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"))
            break;
        if (waited > 30000)
            fail_msg("baton discard neither waited nor ended");
        sleep_ms(20);
    }
    test_db_exec(other, "ROLLBACK");
    int status = ended ? (WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)) : wait_exit(discard, 30000);
    if (status != 0) {
        char *out = read_file(log);
        fail_msg("baton discard ended with status %d: %s", status, out ? out : "(nothing)");
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM baton_jobs WHERE id = %lld AND status = 'ready'", (long long)waiter);
    if (test_db_int(db, sql) != 1)
        fail_msg("the waiting job stayed blocked beside its key's free slot");
    bt_store_close(other);
    bt_store_close(db);
    f->passed = 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The fault suite: every kind of fault at random, judged from what the jobs saw               */
/* ------------------------------------------------------------------------------------------ */

#define FAULT_SECONDS 30 /* the short run of ./run test; ./run soak sets $BATON_FAULT_SECONDS */

enum { NEMESIS_KILL, NEMESIS_STOP, NEMESIS_RESTART, NEMESIS_SKEW, NEMESIS_OPERATOR, NEMESIS_OPERATOR_JOBS,
       NEMESIS_BACKENDS, NEMESIS_FREEZE, NEMESIS_DISK_FULL, NEMESIS_SUPERVISOR_KILL, NEMESIS_SUPERVISOR_STOP,
       NEMESIS_DISPATCHER_KILL, NEMESIS_SERVER_RESTART, NEMESES };
static const char *const nemesis_names[NEMESES] = {
    "kill -9",         "stop/cont",         "graceful restart",    "clock off by 40 s",
    "operator repair", "operator discard/unblock", "backends terminated", "network path frozen",
    "disk full",       "supervisor kill -9", "supervisor stop/cont", "dispatcher kill -9",
    "server restart"};

/* What `baton start` runs in the fault suite, beside the bare workers: a worker process
 * and a dispatcher (its concurrency maintenance and due jobs), under its supervisor. */
#define SUPERVISED_YAML                                                                    \
    "workers:\n  - queues: [\"*\"]\n    threads: 4\n    polling_interval: 0.05\n"           \
    "dispatchers:\n  - polling_interval: 0.2\n    concurrency_maintenance_interval: 1\n"

/* spawn_supervisor starts `baton start` in slot, logging to worker-NNN.log like a worker. */
static void spawn_supervisor(fixture *f, int slot)
{
    char name[64];
    snprintf(name, sizeof name, "worker-%03d.log", f->nspawned++);
    f->logs[slot] = f->nspawned - 1;
    const char *args[] = {"--db", f->url, "--config", f->config, "start", NULL};
    f->workers[slot] = baton_spawn(path_join(f->dir, name), args);
}

/* children_of lists up to max processes whose parent is pid (from /proc). */
static int children_of(pid_t pid, pid_t *out, int max)
{
    int n = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) && n < max;) {
        char path[300], buf[512];
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        const char *tail = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
        char state;
        int ppid;
        if (tail && sscanf(tail + 1, " %c %d", &state, &ppid) == 2 && ppid == pid)
            out[n++] = (pid_t)atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* excuse_children lets the checker excuse what pid's child processes could not record: the
 * fault struck their supervisor, and through it them (they stop when it dies; its watchdog
 * may stop them when it wakes). */
static void excuse_children(fixture *f, const pid_t *children, int n)
{
    for (int i = 0; i < n; i++) {
        f->kills = realloc(f->kills, (f->nkills + 1) * sizeof *f->kills);
        f->kills[f->nkills++] = (kill_rec){children[i], mono_ns()};
    }
}

/* strike_supervisor kills the supervisor in slot (-9: its children stop, as they do when
 * it dies, and another supervisor takes its place) or stops it for ms and continues it
 * (its watchdog may then stop children). Its children are excused either way. */
static void strike_supervisor(fixture *f, int slot, int stop_ms)
{
    pid_t pid = f->workers[slot], children[16];
    int n = children_of(pid, children, 16);
    if (stop_ms) {
        assert_int_equal(kill(pid, SIGSTOP), 0);
        sleep_ms(stop_ms); /* the fault itself */
        assert_int_equal(kill(pid, SIGCONT), 0);
    } else {
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(wait_exit(pid, 10000), 128 + SIGKILL);
        spawn_supervisor(f, slot);
    }
    excuse_children(f, children, n);
}

/* kill_dispatcher kills the dispatcher the supervisor in slot runs (it starts another, a
 * second after one that died young); 0 when there was none to kill. */
static int kill_dispatcher(fixture *f, int slot)
{
    pid_t children[16];
    int n = children_of(f->workers[slot], children, 16), killed = 0;
    for (int i = 0; i < n; i++) {
        char path[64], *cmdline;
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)children[i]);
        if ((cmdline = read_file(path)) && strncmp(cmdline, "baton-dispatcher", 16) == 0)
            killed += kill(children[i], SIGKILL) == 0;
        free(cmdline);
    }
    return killed;
}

/* restart_server restarts the test's own PostgreSQL server, fast (sessions ended, their
 * transactions rolled back) or immediate (no shutdown checkpoint: recovery at start). */
static void restart_server(fixture *f)
{
    char cmd[9300];
    snprintf(cmd, sizeof cmd, "%s -w -m %s restart >/dev/null", f->pg_ctl, rng_between(0, 1) ? "fast" : "immediate");
    shell(cmd);
}

/* mount_small_disk moves the (not yet created) SQLite database onto a tmpfs of its own, so
 * that a fault can fill it. Mounting needs root: elsewhere it says it skipped and returns 0. */
static int mount_small_disk(fixture *f)
{
    snprintf(f->disk, sizeof f->disk, "%s/disk", f->dir);
    if (geteuid() != 0 || mkdir(f->disk, 0700) != 0 || mount("tmpfs", f->disk, "tmpfs", 0, "size=64m,mode=0700") != 0) {
        print_message("[  SKIPPED ] the disk-full fault: mounting a tmpfs needs root (%s)\n", strerror(errno));
        f->disk[0] = '\0';
        return 0;
    }
    snprintf(f->db, sizeof f->db, "%s/baton.db", f->disk);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->db);
    return 1;
}

/* fill_disk fills the database's disk for ms, then frees it: meanwhile every write fails
 * (SQLITE_FULL), the heartbeats' among them, as when a log file fills the volume. */
static void fill_disk(fixture *f, int ms)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/filler", f->disk);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    static const char chunk[1 << 16];
    for (size_t n = sizeof chunk; n > 0; n /= 2) /* to the last byte */
        while (write(fd, chunk, n) > 0)
            ;
    sleep_ms(ms); /* the fault itself */
    close(fd);
    unlink(path);
}

/* stop_worker_for SIGSTOPs a worker for ms (past its alive threshold or not), then SIGCONTs
 * it; the checker may then excuse a run it could not record, as for a kill. */
static void stop_worker_for(fixture *f, int slot, int ms)
{
    pid_t pid = f->workers[slot];
    assert_int_equal(kill(pid, SIGSTOP), 0);
    sleep_ms(ms); /* the fault itself */
    assert_int_equal(kill(pid, SIGCONT), 0);
    f->kills = realloc(f->kills, (f->nkills + 1) * sizeof *f->kills);
    f->kills[f->nkills++] = (kill_rec){pid, mono_ns()};
}

/* restart_worker stops a worker gracefully (TERM: its jobs finish or go back) and starts
 * another in its place, skewed or not. Returns 1 when the stop was unclean: the worker
 * exited 1 because the database refused its last writes (a lock timeout, a connection cut
 * by another fault), leaving its row for the others to prune, as after a kill. */
static int restart_worker(fixture *f, int slot, const char *url, const char *skew)
{
    pid_t pid = f->workers[slot];
    assert_int_equal(kill(pid, SIGTERM), 0);
    int st = wait_exit(pid, 30000);
    if (st != 0 && st != 1)
        fail_msg("worker %d: graceful stop ended with status %d (logs in %s)", (int)pid, st, f->dir);
    if (st == 1) {
        f->kills = realloc(f->kills, (f->nkills + 1) * sizeof *f->kills);
        f->kills[f->nkills++] = (kill_rec){pid, mono_ns()};
    }
    f->workers[slot] = 0;
    if (skew && getenv("BATON_CLOCKSKEW") && *getenv("BATON_CLOCKSKEW"))
        spawn_skewed_worker(f, url, slot, 4, skew);
    else
        spawn_worker_on(f, url, slot, 4, NULL);
    return st == 1;
}

/* operator_repair does what an operator might in the middle of it all: doctor --repair and
 * a semaphore clear (which refuses while a holder's process is alive). */
static void operator_repair(fixture *f, int nkeys)
{
    char *json = NULL;
    int left = 0;
    if (baton_doctor_json(f->client, 1, &json, &left) != BATON_OK)
        print_message("doctor --repair: %s\n", baton_error_last());
    baton_free(json);
    char key[32];
    snprintf(key, sizeof key, "Probe/k%d", rng_between(0, nkeys - 1));
    int cleared = 0, promoted = 0;
    baton_semaphore_clear(f->client, key, 0, &cleared, &promoted);
}

/* operator_jobs discards a waiting job and admits a blocked one into a free slot, as an
 * operator clearing a backlog might. The checker holds the discarded job to never running
 * after; a refusal (the job moved on, its key is full or locked) is the operator's lot. */
static void operator_jobs(fixture *f)
{
    bt_store *s = test_db_open(f->url);
    int64_t waiting = test_db_int(s, "SELECT id FROM baton_jobs WHERE status IN ('ready', 'blocked')"
                                     " ORDER BY random() LIMIT 1");
    int64_t blocked = test_db_int(s, "SELECT id FROM baton_jobs WHERE status = 'blocked' ORDER BY random() LIMIT 1");
    bt_store_close(s);
    int64_t at = mono_ns();
    if (waiting && baton_job_discard(f->client, waiting) == BATON_OK) {
        f->discards = realloc(f->discards, (f->ndiscards + 1) * sizeof *f->discards);
        f->discards[f->ndiscards++] = (discard_rec){waiting, at};
    }
    int over = 0;
    if (blocked && blocked != waiting)
        baton_unblock(f->client, blocked, 0, &over);
}

/* terminate_backends ends every server session of the database but the test's own. */
static void terminate_backends(fixture *f)
{
    bt_store *s = test_db_open(f->url);
    test_db_exec(s, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    bt_store_close(s);
}

/* run_faults runs jobs of limit `limit` (20..1500 ms each, more enqueued as they run out) on
 * four bare workers, one of them through a TCP proxy of the test's own on PostgreSQL, and
 * a `baton start` (a worker and a dispatcher under their supervisor), while a nemesis
 * picked at random every 0.3..1.5 s strikes for $BATON_FAULT_SECONDS (default 30): kill
 * -9, stop and continue (past the alive threshold or not), graceful restarts, a worker
 * whose clock is 40 s off, the supervisor killed or stopped and continued, its dispatcher
 * killed, an operator's doctor --repair and semaphore clear, an operator's discard of a
 * waiting job and unblock of a blocked one, on SQLite (as root) its disk full, and on
 * PostgreSQL the server's sessions terminated, the proxied worker's path frozen and (on a
 * server of the test's own, given $BATON_TEST_PG_BIN) the server restarted. Then the
 * faults stop and every key must drain; the checker judges from the jobs' own log (P1-P4). */
static void run_faults(void **state, int limit)
{
    fixture *f = *state;
    enum { KEYS = 60, PER_KEY = 10, WORKERS = 4, THREADS = 4, SUPERVISED = WORKERS /* the slot of `baton start` */ };
    int on_pg = test_on_postgres(), small_disk = !on_pg && mount_small_disk(f);
    const char *pg_bin = getenv("BATON_TEST_PG_BIN");
    int own_server = on_pg && pg_bin && *pg_bin; /* one the test may restart */
    if (own_server)
        start_private_server(f);
    uint64_t seed = chaos_setup(f, limit, KEYS, PER_KEY);
    FILE *yml = fopen(f->config, "a");
    assert_non_null(yml);
    fputs(SUPERVISED_YAML, yml);
    fclose(yml);
    /* The faults this driver and machine allow ($BATON_FAULTS: only those whose names it
     * holds, e.g. "disk full,kill -9"). */
    const char *only = getenv("BATON_FAULTS");
    int kinds[NEMESES], nkinds = 0;
    for (int k = 0; k < NEMESES; k++)
        if (((k != NEMESIS_BACKENDS && k != NEMESIS_FREEZE) || on_pg) && (k != NEMESIS_DISK_FULL || small_disk) &&
            (k != NEMESIS_SERVER_RESTART || own_server) &&
            (!only || !*only || strstr(only, nemesis_names[k])))
            kinds[nkinds++] = k;
    if (!nkinds)
        fail_msg("$BATON_FAULTS names no fault this run can inject: %s", only);
    char via[4400];
    snprintf(via, sizeof via, "%s", f->url);
    tcp_proxy *proxy = on_pg ? start_proxy(f, via, sizeof via) : NULL;
    int64_t t0 = mono_ns();
    for (int i = 0; i < WORKERS; i++)
        spawn_worker_on(f, i == 0 ? via : f->url, i, THREADS, NULL);
    spawn_supervisor(f, SUPERVISED);
    const char *span = getenv("BATON_FAULT_SECONDS");
    int seconds = span && atoi(span) > 0 ? atoi(span) : FAULT_SECONDS, struck[NEMESES] = {0}, unclean = 0;
    int64_t end = t0 + (int64_t)seconds * 1000000000LL;
    while (mono_ns() < end) {
        sleep_ms(rng_between(300, 1500));
        /* Work for as long as the faults last (-1: the test's own session was cut). */
        int64_t in_flight = jobs_in_flight(f->client);
        /* An enqueue may wait past its lock timeout on a key a stopped worker's open
         * transaction holds: it fails (BATON_EBUSY) as an application's would, and the
         * next turn tries again. */
        if (in_flight >= 0 && in_flight < KEYS && try_enqueue_probes(f, "Probe", KEYS, 3) != BATON_OK)
            print_message("enqueue during the faults: %s\n", baton_error_last());
        int slot = rng_between(0, WORKERS - 1), kind = kinds[rng_between(0, nkinds - 1)];
        const char *url = slot == 0 ? via : f->url;
        switch (kind) {
        case NEMESIS_KILL:
            kill_worker(f, slot);
            spawn_worker_on(f, url, slot, THREADS, NULL);
            break;
        case NEMESIS_STOP:
            stop_worker_for(f, slot, rng_between(200, 3000));
            break;
        case NEMESIS_RESTART:
            unclean += restart_worker(f, slot, url, NULL);
            break;
        case NEMESIS_SKEW:
            unclean += restart_worker(f, slot, url, rng_between(0, 1) ? "40" : "-40");
            break;
        case NEMESIS_OPERATOR:
            operator_repair(f, KEYS);
            break;
        case NEMESIS_OPERATOR_JOBS:
            operator_jobs(f);
            break;
        case NEMESIS_BACKENDS:
            terminate_backends(f);
            break;
        case NEMESIS_DISK_FULL:
            fill_disk(f, rng_between(200, 3000));
            break;
        case NEMESIS_SUPERVISOR_KILL:
            strike_supervisor(f, SUPERVISED, 0);
            break;
        case NEMESIS_SUPERVISOR_STOP:
            strike_supervisor(f, SUPERVISED, rng_between(200, 3000));
            break;
        case NEMESIS_DISPATCHER_KILL:
            if (!kill_dispatcher(f, SUPERVISED))
                continue; /* it is being replaced: not a fault struck */
            break;
        case NEMESIS_SERVER_RESTART:
            restart_server(f);
            break;
        case NEMESIS_FREEZE:
            tcp_proxy_freeze(proxy, 1);
            sleep_ms(rng_between(200, 3000)); /* the fault itself */
            tcp_proxy_freeze(proxy, 0);
            f->kills = realloc(f->kills, (f->nkills + 1) * sizeof *f->kills);
            f->kills[f->nkills++] = (kill_rec){f->workers[0], mono_ns()};
            break;
        }
        struck[kind]++;
    }
    int64_t calm = mono_ns(), left;
    int drained = wait_drained(f, CHAOS_DRAIN_SECONDS, &left);
    double drain_s = secs(mono_ns() - calm);
    stop_workers(f);
    tcp_proxy_stop(proxy);
    check_opts o = {.limit = limit, .nkeys = KEYS, .kills = f->kills, .nkills = f->nkills,
                    .discards = f->discards, .ndiscards = f->ndiscards};
    check_stats st = check_log_and_queue(f, &o);
    /* Every process of Baton's writes to a log of the test's: none may outlive it (the
     * children of a killed supervisor stop with it). */
    int outlived = wait_none_holding(path_join(f->dir, "worker-"), 30000);
    if (outlived)
        CHECK(&st, "%d processes outlived the test's workers and supervisors\n", outlived);
    char faults[512] = "";
    for (int k = 0; k < NEMESES; k++)
        if (struck[k])
            snprintf(faults + strlen(faults), sizeof faults - strlen(faults), "%s%s %d", faults[0] ? ", " : "",
                     nemesis_names[k], struck[k]);
    print_message("faults limit %d (seed %llu, %s, %d s): faults injected: %s; %zu jobs, %zu runs (%zu interrupted, "
                  "%zu redone after their end as the at-least-once rules allow); %zu discarded by the operator; "
                  "graceful stops that could not deregister %d; violations %d; jobs left %lld; drained in %.1f s\n",
                  limit, (unsigned long long)seed, on_pg ? "postgres" : "sqlite", seconds, faults, f->nids,
                  st.runs, st.interrupted, st.redone_after_end, f->ndiscards, unclean, st.errors,
                  (long long)(drained ? 0 : left), drain_s);
    if (!drained || st.errors)
        fail_msg("faults limit %d (seed %llu): %d check failures (see above; logs in %s)", limit,
                 (unsigned long long)seed, st.errors + !drained, f->dir);
    f->passed = 1;
}

static void test_faults_limit_1(void **state) { run_faults(state, 1); }
static void test_faults_limit_2(void **state) { run_faults(state, 2); }

int main(void)
{
    const char *filter = getenv("BATON_STRESS_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stopped_worker_is_fenced_and_releases_nothing_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_resumed_after_prune_leaves_no_orphan_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_limit_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_limit_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_limit_5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chaos_limit_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chaos_limit_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_postgres_restart_under_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_postgres_outage_longer_than_the_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_ahead_prunes_nobody, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_network_path_fences_the_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_commit_answer_on_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_commit_answer_while_a_job_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_ended_after_the_commit_was_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_client_inside_a_transaction_frees_its_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_waiting_on_one_key_holds_up_no_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_promotion_never_skips_a_locked_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_waiting_on_one_process_holds_up_no_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults_limit_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults_limit_2, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
