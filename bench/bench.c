/* bench.c: Baton's throughput and latency on this machine, printed as a table.
 *
 *   ./run bench [--jobs N] [--runs N] [--only NAME] [--growth N] [--db postgres://USER@HOST:PORT/DB]
 *
 * Every figure comes from a fresh SQLite file in a temporary directory, default settings
 * (WAL, synchronous=NORMAL), the public C API, and a no-op C callback unless said. With
 * --db, each benchmark runs on SQLite and then on a fresh database baton_bench_NAME created
 * (and replaced) on that PostgreSQL server, and the table shows both side by side; DB is
 * the one the benchmark connects to for creating them.
 * --only growth, run only when selected (filling its queues takes minutes), times single
 * worker rounds through the lifecycle calls against N ready jobs (default 1,000,000) and
 * against 11 limited jobs on each of N / 100 keys, all but one per key blocked. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baton.h"
#include "core/core.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"

static char dir[4096];
static int bench_jobs = 20000;
static const char *only; /* run just the benchmarks whose name contains this */
static int runs = 3;
static const char *pg_server; /* --db: benchmark PostgreSQL databases on this server too */

enum { SQLITE, POSTGRES, DRIVERS };
static const char *const driver_names[DRIVERS] = {"SQLite", "PostgreSQL"};
static int driver; /* the driver of the databases being measured */

static int selected(const char *name) { return !only || strstr(name, only); }

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, baton_error_last());
    exit(1);
}

/* fresh_database writes the URL of an empty database called name to url. */
static void fresh_database(const char *name, char *url, size_t cap)
{
    if (driver == SQLITE) {
        char path[4200];
        static const char *const suffixes[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s.db%s", dir, name, suffixes[i]);
            unlink(path);
        }
        snprintf(url, cap, "sqlite:%s/%s.db", dir, name);
        return;
    }
    char db[96], drop[160], create[160];
    snprintf(db, sizeof db, "baton_bench_%s", name);
    snprintf(drop, sizeof drop, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", db);
    snprintf(create, sizeof create, "CREATE DATABASE \"%s\"", db);
    bt_store *admin;
    if (bt_store_open(&admin, pg_server) != BATON_OK)
        die(pg_server);
    /* One call each: in one call they would share a transaction, which CREATE DATABASE refuses. */
    if (admin->ops->exec_script(admin, drop) != BATON_OK || admin->ops->exec_script(admin, create) != BATON_OK)
        die("create database");
    bt_store_close(admin);
    bt_url_with_database(url, cap, pg_server, db);
}

/* open_client opens a client on url with the class Noop performed by perform. */
static baton_client *open_client(const char *url, baton_perform_fn perform, void *payload)
{
    baton_client *c;
    if (baton_open(&c, url) != BATON_OK)
        die("open");
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = perform;
    o.payload = payload;
    if (baton_class_register(c, "Noop", &o) != BATON_OK)
        die("register");
    return c;
}

static baton_client *fresh_client(const char *name, baton_perform_fn perform, void *payload)
{
    char url[4200];
    fresh_database(name, url, sizeof url);
    baton_client *c = open_client(url, perform, payload);
    if (baton_migrate(c) != BATON_OK)
        die("migrate");
    return c;
}

static double seconds_since(int64_t start_ns) { return (double)(bt_mono_ns() - start_ns) / 1e9; }

/* Every figure is measured once per run and driver; the table shows the median and the
 * spread of each driver's. */
enum { MAX_METRICS = 64, MAX_RUNS = 9 };

typedef struct figure {
    char name[96];
    const char *unit, *target;
    double values[DRIVERS][MAX_RUNS];
    int n[DRIVERS];
} figure;

static figure metrics[MAX_METRICS];
static int nmetrics;

static void row(const char *name, double value, const char *unit, const char *target)
{
    figure *m = NULL;
    for (int i = 0; i < nmetrics && !m; i++)
        if (strcmp(metrics[i].name, name) == 0)
            m = &metrics[i];
    if (!m) {
        if (nmetrics == MAX_METRICS)
            return;
        m = &metrics[nmetrics++];
        snprintf(m->name, sizeof m->name, "%s", name);
        m->unit = unit;
        m->target = target;
    }
    if (m->n[driver] < MAX_RUNS)
        m->values[driver][m->n[driver]++] = value;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A figure below 10 gets two decimals: sub-millisecond latencies and ratios need them. */
static int decimals(double v) { return v < 10 && v > -10 ? 2 : 1; }

static void print_column(int width, int left, const char *text)
{
    printf(" %*s |", left ? -width : width, text);
}

static void print_dashes(int width)
{
    printf("%.*s|", width + 2, "------------------------------------------------------------");
}

/* print_table shows, for each driver measured, the median and the spread of every figure;
 * side by side, a single run's spread says nothing and is left out. */
static void print_table(void)
{
    enum { NAME = 56, MEDIAN = 10, SPREAD = 21, UNIT = 7, TARGET = 16 };
    int drivers = pg_server ? DRIVERS : 1, spreads = drivers == 1 || runs > 1;
    printf("|");
    print_column(NAME, 1, "metric");
    for (int d = 0; d < drivers; d++) {
        print_column(MEDIAN, 0, drivers == 1 ? "median" : driver_names[d]);
        if (spreads)
            print_column(SPREAD, 1, "spread");
    }
    print_column(UNIT, 1, "unit");
    print_column(TARGET, 1, "target");
    printf("\n|");
    print_dashes(NAME);
    for (int d = 0; d < drivers; d++) {
        print_dashes(MEDIAN);
        if (spreads)
            print_dashes(SPREAD);
    }
    print_dashes(UNIT);
    print_dashes(TARGET);
    printf("\n");
    for (int i = 0; i < nmetrics; i++) {
        figure *m = &metrics[i];
        printf("|");
        print_column(NAME, 1, m->name);
        for (int d = 0; d < drivers; d++) {
            char median[32] = "-", spread[64] = "-";
            double *v = m->values[d];
            int n = m->n[d];
            qsort(v, (size_t)n, sizeof *v, cmp_double);
            if (n > 0) {
                snprintf(median, sizeof median, "%.*f", decimals(v[n / 2]), v[n / 2]);
                snprintf(spread, sizeof spread, "%.*f - %.*f", decimals(v[0]), v[0], decimals(v[n - 1]), v[n - 1]);
            }
            print_column(MEDIAN, 0, median);
            if (spreads)
                print_column(SPREAD, 1, spread);
        }
        print_column(UNIT, 1, m->unit);
        print_column(TARGET, 1, m->target);
        printf("\n");
    }
}

static void enqueue_bulk(baton_client *c, int n)
{
    enum { BATCH = 1000 };
    baton_job_spec specs[BATCH];
    for (int i = 0; i < BATCH; i++)
        specs[i] = (baton_job_spec){"Noop", "[]", NULL};
    for (int done = 0; done < n; done += BATCH)
        if (baton_enqueue_many(c, NULL, specs, (size_t)(n - done < BATCH ? n - done : BATCH)) != BATON_OK)
            die("enqueue_many");
}

static void bench_enqueue(void)
{
    baton_client *c = fresh_client("enqueue", NULL, NULL);
    int single = bench_jobs / 4;
    int64_t t = bt_mono_ns();
    for (int i = 0; i < single; i++)
        if (baton_enqueue(c, NULL, "Noop", "[]", NULL) != BATON_OK)
            die("enqueue");
    row("enqueue, one job per transaction", single / seconds_since(t), "jobs/s", ">= 5,000");
    t = bt_mono_ns();
    enqueue_bulk(c, bench_jobs * 2);
    row("enqueue, bulk (1,000 jobs per transaction)", bench_jobs * 2 / seconds_since(t), "jobs/s", ">= 50,000");
    baton_close(c);
}

typedef struct counter {
    atomic_int done;
    int target;
    baton_worker *worker;
} counter;

static int count_and_stop(baton_job *job, void *payload)
{
    (void)job;
    counter *k = payload;
    if (atomic_fetch_add(&k->done, 1) + 1 == k->target)
        baton_worker_stop(k->worker, 0);
    return 0;
}

static void *run_worker(void *w)
{
    if (baton_worker_run(w) != BATON_OK)
        die("worker");
    return NULL;
}

static void bench_processing(int threads)
{
    counter k = {.target = bench_jobs};
    char name[32];
    snprintf(name, sizeof name, "process%d", threads);
    baton_client *c = fresh_client(name, count_and_stop, &k);
    enqueue_bulk(c, bench_jobs);
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    o.threads = threads;
    if (baton_worker_new(&k.worker, c, &o) != BATON_OK)
        die("worker_new");
    int64_t t = bt_mono_ns();
    pthread_t th;
    pthread_create(&th, NULL, run_worker, k.worker);
    pthread_join(th, NULL); /* returns once the last outcome is committed */
    char metric[80];
    snprintf(metric, sizeof metric, "no-op jobs processed, one worker, %d threads", threads);
    row(metric, bench_jobs / seconds_since(t), "jobs/s", ">= 10,000");
    baton_worker_free(k.worker);
    baton_close(c);
}

/* ---- several worker processes on one database, as `baton start` runs them ---- */

static int count_shared(baton_job *job, void *payload)
{
    (void)job;
    atomic_fetch_add((atomic_int *)payload, 1);
    return 0;
}

/* work_until_done is one worker process: a client of its own on url and a worker of
 * threads threads, stopped once the processes together performed target jobs (the last
 * may run in another process, so each watches the shared count). Never returns. */
static void work_until_done(const char *url, atomic_int *done, int target, int threads)
{
    baton_client *c = open_client(url, count_shared, done);
    baton_worker *w;
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    o.threads = threads;
    if (baton_worker_new(&w, c, &o) != BATON_OK)
        die("worker_new");
    pthread_t th;
    pthread_create(&th, NULL, run_worker, w);
    while (atomic_load(done) < target)
        bt_sleep(0.0005);
    baton_worker_stop(w, 0);
    pthread_join(th, NULL); /* returns once this process's last outcome is committed */
    baton_worker_free(w);
    baton_close(c);
    _exit(0);
}

static const char sql_unfinished[] = "SELECT COUNT(*) FROM baton_jobs WHERE status <> 'finished'";

/* bench_worker_processes times PROCESSES worker processes of THREADS threads each, from
 * their fork until every job is finished and they have exited. */
static void bench_worker_processes(void)
{
    enum { PROCESSES = 2, THREADS = 10 };
    char url[4200];
    baton_client *c = fresh_client("worker_processes", NULL, NULL);
    enqueue_bulk(c, bench_jobs);
    snprintf(url, sizeof url, "%s", baton_client_url(c));
    baton_close(c); /* each child opens its own connection: none is shared across the fork */
    atomic_int *done = mmap(NULL, sizeof *done, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (done == MAP_FAILED) {
        perror("bench: mmap");
        exit(1);
    }
    atomic_init(done, 0);
    pid_t pids[PROCESSES];
    int64_t t = bt_mono_ns();
    for (int i = 0; i < PROCESSES; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("bench: fork");
            exit(1);
        }
        if (pids[i] == 0)
            work_until_done(url, done, bench_jobs, THREADS);
    }
    int failed = 0;
    for (int i = 0; i < PROCESSES; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    double secs = seconds_since(t);
    munmap(done, sizeof *done);
    if (failed) {
        fprintf(stderr, "bench: a worker process failed\n");
        exit(1);
    }
    /* A figure counts only jobs recorded as finished. */
    bt_store *s;
    int64_t unfinished = -1;
    if (bt_store_open(&s, url) != BATON_OK || bt_query_int(s, sql_unfinished, NULL, 0, &unfinished, -1) != BATON_OK)
        die("count unfinished jobs");
    bt_store_close(s);
    if (unfinished != 0) {
        fprintf(stderr, "bench: %lld jobs left unfinished by the worker processes\n", (long long)unfinished);
        exit(1);
    }
    char metric[96];
    snprintf(metric, sizeof metric, "no-op jobs processed, %d worker processes x %d threads", PROCESSES, THREADS);
    row(metric, bench_jobs / secs, "jobs/s", ">= 5,000");
}

enum { PROBES = 200 };

typedef struct latency {
    atomic_llong started_ns;
} latency;

static int mark_start(baton_job *job, void *payload)
{
    (void)job;
    atomic_store(&((latency *)payload)->started_ns, bt_mono_ns());
    return 0;
}


static void bench_latency(void)
{
    latency l = {0};
    baton_client *c = fresh_client("latency", mark_start, &l);
    /* The producer uses its own connection, as a separate application would. */
    baton_client *producer;
    if (baton_open(&producer, baton_client_url(c)) != BATON_OK)
        die("open producer");
    baton_class_register(producer, "Noop", NULL);
    baton_worker *w;
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    if (baton_worker_new(&w, c, &o) != BATON_OK)
        die("worker_new");
    pthread_t th;
    pthread_create(&th, NULL, run_worker, w);
    double ms[PROBES];
    for (int i = 0; i < PROBES; i++) {
        bt_sleep(0.002 + (double)(i % 7) / 1000.0); /* let the worker go idle between probes */
        atomic_store(&l.started_ns, 0);
        int64_t t = bt_mono_ns();
        if (baton_enqueue(producer, NULL, "Noop", "[]", NULL) != BATON_OK)
            die("enqueue");
        while (atomic_load(&l.started_ns) == 0)
            bt_sleep(0.00005);
        ms[i] = (double)(atomic_load(&l.started_ns) - t) / 1e6;
    }
    baton_worker_stop(w, 0);
    pthread_join(th, NULL);
    qsort(ms, PROBES, sizeof *ms, cmp_double);
    row("enqueue -> start latency p50, idle worker (poll 0.1 s)", ms[PROBES / 2], "ms", "");
    row("enqueue -> start latency p99, idle worker (poll 0.1 s)", ms[PROBES * 99 / 100], "ms", "<= 200 ms");
    baton_worker_free(w);
    baton_close(producer);
    baton_close(c);
}

/* ---- keyed workloads: jobs of 2 ms, limit 1 per key, one worker of 10 threads ---- */

enum { MAX_KEYS = 500, MAX_PER_KEY = 200 };

typedef struct keyed {
    int keys, per_key;
    int64_t start_ns[MAX_KEYS][MAX_PER_KEY];
    int64_t end_ns[MAX_KEYS][MAX_PER_KEY];
    atomic_int done;
    baton_worker *worker;
} keyed;

static int keyed_job(baton_job *job, void *payload)
{
    keyed *k = payload;
    int key = 0, seq = 0;
    sscanf(baton_job_arguments(job), "[%d,%d]", &key, &seq);
    k->start_ns[key][seq] = bt_mono_ns();
    bt_sleep(0.002);
    k->end_ns[key][seq] = bt_mono_ns();
    if (atomic_fetch_add(&k->done, 1) + 1 == k->keys * k->per_key)
        baton_worker_stop(k->worker, 0);
    return 0;
}

static void register_keyed(baton_client *c, keyed *k)
{
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = keyed_job;
    o.payload = k;
    o.concurrency_key = "{0}";
    if (baton_class_register(c, "Keyed", &o) != BATON_OK)
        die("register");
}

/* enqueue_keyed stores every key's jobs either round by round (one job of each key, then
 * the next of each: triggers arriving for many users) or key by key (all of one key's
 * jobs, then the next key's: a backfill per user), 1,000 per transaction. */
static void enqueue_keyed(baton_client *c, const char *cls, int keys, int per_key, int by_key)
{
    enum { BATCH = 1000 };
    char args[BATCH][32];
    baton_job_spec specs[BATCH];
    int total = keys * per_key, inners = by_key ? per_key : keys, n = 0;
    for (int i = 0; i < total; i++) {
        int outer = i / inners, inner = i % inners;
        int key = by_key ? outer : inner, seq = by_key ? inner : outer;
        snprintf(args[n], sizeof args[n], "[%d,%d]", key, seq);
        specs[n] = (baton_job_spec){cls, args[n], NULL};
        if (++n == BATCH || i == total - 1) {
            if (baton_enqueue_many(c, NULL, specs, (size_t)n) != BATON_OK)
                die("enqueue keyed");
            n = 0;
        }
    }
}

/* bench_keyed runs keys x per_key jobs and reports throughput and the delay from the end
 * of a job to the start of the next job of its key. */
static void bench_keyed(int keys, int per_key, int by_key)
{
    keyed *k = calloc(1, sizeof *k);
    k->keys = keys;
    k->per_key = per_key;
    baton_client *c = fresh_client("keyed", NULL, NULL);
    register_keyed(c, k);
    enqueue_keyed(c, "Keyed", keys, per_key, by_key);
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    o.threads = 10;
    if (baton_worker_new(&k->worker, c, &o) != BATON_OK)
        die("worker_new");
    int64_t t = bt_mono_ns();
    pthread_t th;
    pthread_create(&th, NULL, run_worker, k->worker);
    pthread_join(th, NULL);
    double secs = seconds_since(t);
    double *delays = calloc((size_t)(keys * per_key), sizeof *delays);
    int n = 0, overlaps = 0;
    for (int key = 0; key < keys; key++)
        for (int seq = 1; seq < per_key; seq++) {
            double d = (double)(k->start_ns[key][seq] - k->end_ns[key][seq - 1]) / 1e6;
            overlaps += d < 0;
            delays[n++] = d;
        }
    qsort(delays, (size_t)n, sizeof *delays, cmp_double);
    char name[96];
    const char *order = by_key ? "by key" : "by round";
    snprintf(name, sizeof name, "keyed %d keys x %d jobs of 2 ms, enqueued %s", keys, per_key, order);
    row(name, keys * per_key / secs, "jobs/s", keys >= 100 ? ">= 2,500" : "");
    /* Round by round, a promoted job is ready behind one job of every other key: its wait
     * is the time to run those, queueing rather than promotion. */
    const char *target = by_key || keys < 100 ? "<= 20 ms" : "(queueing)";
    snprintf(name, sizeof name, "  %d keys %s: end -> next start, p50", keys, order);
    row(name, delays[n / 2], "ms", "");
    snprintf(name, sizeof name, "  %d keys %s: end -> next start, p99", keys, order);
    row(name, delays[n * 99 / 100], "ms", target);
    snprintf(name, sizeof name, "  %d keys %s: runs of one key that overlapped", keys, order);
    row(name, overlaps, "", "0");
    baton_worker_free(k->worker);
    baton_close(c);
    free(delays);
    free(k);
}

/* keyed_enqueue_rate enqueues 500 keys x 40 jobs of cls into a fresh database, so
 * neither class pays alone for growing the file. */
static double keyed_enqueue_rate(const char *cls)
{
    keyed *k = calloc(1, sizeof *k);
    char name[48];
    snprintf(name, sizeof name, "keyed_enqueue_%s", cls);
    baton_client *c = fresh_client(name, NULL, NULL);
    register_keyed(c, k);
    int64_t t = bt_mono_ns();
    enqueue_keyed(c, cls, 500, 40, 0);
    double rate = 500 * 40 / seconds_since(t);
    baton_close(c);
    free(k);
    return rate;
}

static void bench_keyed_enqueue(void)
{
    row("enqueue, bulk, unlimited class", keyed_enqueue_rate("Noop"), "jobs/s", "");
    row("enqueue, bulk, limited class, 500 keys", keyed_enqueue_rate("Keyed"), "jobs/s", ">= half of above");
}

/* ---- cost growth: a worker's round of work against a full queue ----
 * A round is one transaction as a busy worker runs it, on a connection of its own: record
 * outcomes, claim jobs. Rounds here are run one at a time through the lifecycle calls the
 * worker uses (bt_claim, bt_complete), so each is timed alone, without executors around it.
 * The queue is filled through the public bulk API, so its rows are those real use makes. */

enum { GROWTH_PROBES = 500, GROWTH_PER_KEY = 11 };
static int growth_jobs = 1000000; /* --growth: ready jobs of the full queue */

typedef struct prober {
    baton_client *c;    /* enqueues, as an application does */
    bt_store *s;        /* runs the rounds, as a worker's connection does */
    int64_t process_id; /* the registered process the claims belong to */
} prober;

static prober open_prober(const char *name)
{
    prober p = {fresh_client(name, NULL, NULL), NULL, 0};
    register_keyed(p.c, NULL); /* its jobs are recorded finished, never performed */
    if (bt_client_open_store(p.c, &p.s) != BATON_OK ||
        bt_process_register(p.s, "worker", NULL, p.c->alive_threshold, &p.process_id) != BATON_OK)
        die("register the probing process");
    return p;
}

static void close_prober(prober *p)
{
    bt_store_close(p->s);
    baton_close(p->c);
}

/* Every job of the benchmark is claimed once, so its claim is its first attempt. */
static int record_finished(prober *p, int64_t id, const char *key, int64_t now)
{
    bt_outcome o = {.job_id = id, .succeeded = 1, .attempt = 1, .concurrency_key = key};
    int owned = 0;
    int rc = bt_complete(p->s, p->process_id, &o, 1, now, &owned, NULL);
    return rc == BATON_OK && !owned ? bt_err_set(BATON_ESTATE, "job %lld was not claimed", (long long)id) : rc;
}

/* round_ms times one round: record job finish (0: none; of key finish_key) finished, claim
 * want jobs into claimed, and with finish_claimed record those finished too. Dies unless it
 * claimed exactly want jobs. */
static double round_ms(prober *p, int64_t finish, const char *finish_key, int want, int finish_claimed,
                       bt_claimed_job *claimed)
{
    static char every_queue[] = "*";
    char *queues[] = {every_queue};
    bt_claims claims = {.jobs = claimed, .max = want};
    int64_t t = bt_mono_ns(), now = bt_now_ms();
    int rc = bt_begin(p->s, BT_TXN_WRITE);
    if (rc == BATON_OK && finish)
        rc = record_finished(p, finish, finish_key, now);
    if (rc == BATON_OK && want)
        rc = bt_claim(p->s, p->process_id, queues, 1, now, &claims);
    int count = claims.count;
    for (int i = 0; i < count && finish_claimed && rc == BATON_OK; i++)
        rc = record_finished(p, claimed[i].id, claimed[i].concurrency_key, now);
    rc = bt_end(p->s, rc);
    double ms = (double)(bt_mono_ns() - t) / 1e6;
    if (rc != BATON_OK)
        die("round");
    if (count != want) {
        fprintf(stderr, "bench: a round claimed %d jobs, not %d\n", count, want);
        exit(1);
    }
    return ms;
}

/* claim_probes times GROWTH_PROBES claim rounds into ms: each claims the next ready job and
 * records it finished. A no-op job is enqueued before each, so the queue keeps its size. */
static void claim_probes(prober *p, double *ms)
{
    for (int i = 0; i < GROWTH_PROBES; i++) {
        bt_claimed_job j = {0};
        if (baton_enqueue(p->c, NULL, "Noop", "[]", NULL) != BATON_OK)
            die("enqueue");
        ms[i] = round_ms(p, 0, NULL, 1, 1, &j);
        bt_claimed_job_free(&j);
    }
}

/* release_probe times one release round: record *holder, the running job of key with jobs
 * blocked behind it, finished (the next of the key is promoted into its slot) and claim the
 * promoted job, which becomes *holder. */
static double release_probe(prober *p, int64_t *holder, int key)
{
    bt_claimed_job j = {0};
    char key_text[32];
    snprintf(key_text, sizeof key_text, "Keyed/%d", key);
    double ms = round_ms(p, *holder, key_text, 1, 0, &j);
    int claimed_key = -1;
    sscanf(j.arguments, "[%d", &claimed_key);
    if (claimed_key != key) {
        fprintf(stderr, "bench: finishing a job of key %d promoted one of key %d\n", key, claimed_key);
        exit(1);
    }
    *holder = j.id;
    bt_claimed_job_free(&j);
    return ms;
}

/* await_autovacuum waits, on PostgreSQL, until autovacuum has been through the ready table
 * again and left fewer than dead dead rows, as it does within a minute or so on a live
 * server: until then each claim steps over the index entries of every job claimed since
 * its previous visit. */
static void await_autovacuum(prober *p, int dead)
{
    static const char sql_visits[] =
        "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'baton_ready_executions'";
    static const char sql_cleaned[] =
        "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = 'baton_ready_executions'"
        " AND autovacuum_count > ? AND n_dead_tup < ?";
    if (driver != POSTGRES)
        return;
    int64_t visits = 0, cleaned = 0, start = bt_mono_ns();
    if (bt_query_int(p->s, sql_visits, NULL, 0, &visits, 0) != BATON_OK)
        die("read autovacuum visits");
    for (;;) {
        bt_val a[] = {BV_INT(visits), BV_INT(dead)};
        if (bt_query_int(p->s, sql_cleaned, a, 2, &cleaned, 0) != BATON_OK)
            die("read autovacuum visits");
        if (cleaned || seconds_since(start) > 300)
            break;
        bt_sleep(0.5);
    }
    if (!cleaned)
        fprintf(stderr, "bench: autovacuum did not clean baton_ready_executions within 300 s; probing anyway\n");
}

/* growth_rows adds the p50 and p99 of ms, the rounds of kind round in a queue in state, as
 * figures and, given the empty queue's (base), their ratios to it, aiming at target. Sorts
 * ms. */
static void growth_rows(const char *round, const char *state, double *ms, double *base, const char *target)
{
    qsort(ms, GROWTH_PROBES, sizeof *ms, cmp_double);
    const char *at[] = {"p50", "p99"};
    int index[] = {GROWTH_PROBES / 2, GROWTH_PROBES * 99 / 100};
    char name[96];
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "%s round, %s: %s", round, state, at[i]);
        row(name, ms[index[i]], "ms", "");
    }
    for (int i = 0; i < 2 && base; i++) {
        snprintf(name, sizeof name, "  %s, %s: %s / empty", round, state, at[i]);
        row(name, ms[index[i]] / base[index[i]], "x", target);
    }
}

/* with_commas writes n (>= 0) with thousands separators into buf. */
static const char *with_commas(char *buf, size_t cap, int n)
{
    char digits[16];
    int len = snprintf(digits, sizeof digits, "%d", n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* bench_growth probes the empty queue, growth_jobs ready jobs, and GROWTH_PER_KEY limited
 * jobs on each of growth_jobs / 100 keys, all but one per key blocked behind a running one. Every state is filled before any is probed, so the probes of each
 * run in a process with the same past: a young process's heap gives memory back to the
 * kernel after each transaction (glibc trims it until a larger block was once freed), and
 * that costs more than a round on this machine. */
static void bench_growth(void)
{
    static double empty_claim[GROWTH_PROBES], empty_release[GROWTH_PROBES], just_claimed[GROWTH_PROBES],
        ms[GROWTH_PROBES];
    prober empty = open_prober("growth_empty"), ready = open_prober("growth_ready"),
           blocked = open_prober("growth_blocked");
    enqueue_bulk(ready.c, growth_jobs);
    /* Limited jobs, GROWTH_PER_KEY per key, limit 1: the first of each key holds its slot
     * and runs (claimed), the others are blocked behind it. */
    int keys = growth_jobs / 100;
    enqueue_keyed(blocked.c, "Keyed", keys, GROWTH_PER_KEY, 0);
    int64_t *holder = calloc((size_t)keys, sizeof *holder);
    bt_claimed_job *batch = calloc(1000, sizeof *batch);
    for (int got = 0; got < keys;) {
        int want = keys - got < 1000 ? keys - got : 1000;
        round_ms(&blocked, 0, NULL, want, 0, batch);
        for (int i = 0; i < want; i++) {
            int key = -1;
            sscanf(batch[i].arguments, "[%d", &key);
            holder[key] = batch[i].id;
            bt_claimed_job_free(&batch[i]);
        }
        got += want;
    }
    free(batch);
    /* The slot holders were claimed moments ago: on PostgreSQL their index entries stay in
     * the ready table's index until autovacuum, and each claim steps over them. */
    claim_probes(&blocked, just_claimed);

    /* Empty: the probes' own jobs only. A release probe's key gets a running job with one
     * job blocked behind it, and the promoted job is recorded finished after the probe. */
    claim_probes(&empty, empty_claim);
    for (int i = 0; i < GROWTH_PROBES; i++) {
        bt_claimed_job j = {0};
        enqueue_keyed(empty.c, "Keyed", 1, 2, 1);
        round_ms(&empty, 0, NULL, 1, 0, &j);
        int64_t running = j.id;
        bt_claimed_job_free(&j);
        empty_release[i] = release_probe(&empty, &running, 0);
        round_ms(&empty, running, "Keyed/0", 0, 0, NULL);
    }
    close_prober(&empty);
    growth_rows("claim", "empty queue", empty_claim, NULL, "");

    char state[96], count[16], keys_text[16];
    claim_probes(&ready, ms);
    close_prober(&ready);
    snprintf(state, sizeof state, "%s ready", with_commas(count, sizeof count, growth_jobs));
    growth_rows("claim", state, ms, empty_claim, "<= 2");

    snprintf(state, sizeof state, "just after %s claims", with_commas(keys_text, sizeof keys_text, keys));
    growth_rows("claim", state, just_claimed, empty_claim, "");
    await_autovacuum(&blocked, keys / 10 + 1);
    snprintf(state, sizeof state, "%s blocked on %s keys", with_commas(count, sizeof count, keys * (GROWTH_PER_KEY - 1)),
             with_commas(keys_text, sizeof keys_text, keys));
    claim_probes(&blocked, ms);
    growth_rows("claim", state, ms, empty_claim, "<= 2");
    growth_rows("release", "empty queue", empty_release, NULL, "");
    for (int i = 0; i < GROWTH_PROBES; i++)
        ms[i] = release_probe(&blocked, &holder[i % keys], i % keys);
    free(holder);
    close_prober(&blocked);
    growth_rows("release", state, ms, empty_release, "<= 2");
}

/* ---- the CLI's processes: `baton work` and the supervisor of `baton start` ----
 * Jobs here are command jobs running `true`, the cheapest job a process can run: their
 * cost is mostly fork and exec, the same in both, so a difference is the supervisor's. */

static pid_t spawn_baton(const char *url, const char *config, const char *mode)
{
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        if (strcmp(mode, "start") == 0)
            execl(BATON_BIN, BATON_BIN, "--db", url, "--config", config, "start", (char *)NULL);
        else
            execl(BATON_BIN, BATON_BIN, "--db", url, "--config", config, "work", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* job_times reads a job's status, and its created and started times in ms. */
static const char *job_times(baton_client *c, int64_t id, int64_t *created, int64_t *started)
{
    static char status[16];
    char *text = NULL;
    if (baton_job_json(c, id, &text) != BATON_OK)
        die("job_json");
    json_t *j = json_loads(text, 0, NULL);
    const char *st = json_string_value(json_object_get(j, "status"));
    const char *cr = json_string_value(json_object_get(j, "created_at"));
    const char *sa = json_string_value(json_object_get(j, "started_at"));
    snprintf(status, sizeof status, "%s", st ? st : "");
    if (created && cr)
        bt_parse_iso8601(cr, created);
    if (started)
        *started = sa ? (bt_parse_iso8601(sa, started), *started) : 0;
    json_decref(j);
    baton_free(text);
    return status;
}

static void wait_finished(baton_client *c, int64_t id)
{
    while (strcmp(job_times(c, id, NULL, NULL), "finished") != 0)
        bt_sleep(0.002);
}

static void bench_cli_processes(const char *mode)
{
    enum { JOBS = 1000, CLI_PROBES = 50 };
    char name[48], config[4200];
    snprintf(name, sizeof name, "cli_%s", mode);
    baton_client *c = fresh_client(name, NULL, NULL);
    snprintf(config, sizeof config, "%s/%s.yml", dir, name);
    FILE *f = fopen(config, "w");
    fputs("jobs:\n  True:\n    command: \"true\"\n", f);
    fclose(f);
    if (baton_load_config(c, config) != BATON_OK)
        die("load_config");
    pid_t pid = spawn_baton(baton_client_url(c), config, mode);
    /* Latency first, with idle processes: one job at a time. */
    double ms[CLI_PROBES];
    for (int i = 0; i < CLI_PROBES + 1; i++) {
        int64_t id, created = 0, started = 0;
        if (baton_enqueue(c, &id, "True", "[]", NULL) != BATON_OK)
            die("enqueue");
        wait_finished(c, id);
        job_times(c, id, &created, &started);
        if (i > 0) /* the first waits for the processes to start */
            ms[i - 1] = (double)(started - created);
    }
    qsort(ms, CLI_PROBES, sizeof *ms, cmp_double);
    int64_t *ids = calloc(JOBS, sizeof *ids);
    baton_job_spec specs[JOBS];
    for (int i = 0; i < JOBS; i++)
        specs[i] = (baton_job_spec){"True", "[]", NULL};
    int64_t t = bt_mono_ns();
    if (baton_enqueue_many(c, ids, specs, JOBS) != BATON_OK)
        die("enqueue_many");
    for (int i = 0; i < JOBS; i++)
        wait_finished(c, ids[i]);
    double rate = JOBS / seconds_since(t);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    const char *who = strcmp(mode, "start") == 0 ? "baton start (supervisor, default config)"
                                                 : "baton work (one process, 3 threads)";
    char label[96];
    snprintf(label, sizeof label, "command jobs `true`, %s", who);
    row(label, rate, "jobs/s", "");
    snprintf(label, sizeof label, "  %s: enqueue -> start p50", mode);
    row(label, ms[CLI_PROBES / 2], "ms", "");
    snprintf(label, sizeof label, "  %s: enqueue -> start p99", mode);
    row(label, ms[CLI_PROBES * 99 / 100], "ms", "");
    free(ids);
    baton_close(c);
}

static void bench_processing_all(void)
{
    bench_processing(3);
    bench_processing(10);
    bench_worker_processes();
}

static void bench_keyed_all(void)
{
    bench_keyed_enqueue();
    /* Limit 1 per key, one worker of 10 threads. With 10 keys nothing queues, and the
     * delay is the promotion path itself. */
    bench_keyed(500, 20, 1);
    bench_keyed(500, 20, 0);
    bench_keyed(10, 200, 0);
}

static void bench_cli_all(void)
{
    bench_cli_processes("work");
    bench_cli_processes("start");
}

static const struct {
    const char *name;
    void (*run)(void);
    int when_asked; /* runs only when --only selects it */
} benchmarks[] = {
    {"enqueue", bench_enqueue, 0},     {"processing", bench_processing_all, 0}, {"latency", bench_latency, 0},
    {"keyed", bench_keyed_all, 0},     {"processes", bench_cli_all, 0},
    {"growth", bench_growth, 1}, /* minutes */
};

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
            bench_jobs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
            runs = runs < 1 ? 1 : runs > MAX_RUNS ? MAX_RUNS : runs;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--growth") == 0 && i + 1 < argc) {
            growth_jobs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            pg_server = argv[++i];
        } else {
            fprintf(stderr, "usage: baton_bench [--jobs N] [--runs N]"
                            " [--only enqueue|processing|latency|keyed|processes|growth] [--growth N]"
                            " [--db postgres://USER@HOST:PORT/DB]\n");
            return 2;
        }
    }
    if (bench_jobs < 1000)
        bench_jobs = 1000;
    /* Release probes go round the growth_jobs / 100 keys, each with GROWTH_PER_KEY - 1 jobs to
     * promote: 100 keys are enough for GROWTH_PROBES. */
    if (growth_jobs < 10000)
        growth_jobs = 10000;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/baton-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench: mkdtemp");
        return 1;
    }
    printf("Baton benchmark, %s, %ld cores, %d jobs per measurement, %d runs\n\n",
           pg_server ? "SQLite (WAL, synchronous=NORMAL) and PostgreSQL" : "SQLite (WAL, synchronous=NORMAL)",
           sysconf(_SC_NPROCESSORS_ONLN), bench_jobs, runs);
    fflush(stdout); /* before any fork, or children print it again when stdout is a file */
    int drivers = pg_server ? DRIVERS : 1;
    for (int run = 0; run < runs; run++)
        for (size_t b = 0; b < sizeof benchmarks / sizeof *benchmarks; b++)
            if (selected(benchmarks[b].name) && (only || !benchmarks[b].when_asked))
                for (driver = 0; driver < drivers; driver++)
                    benchmarks[b].run();
    print_table();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
