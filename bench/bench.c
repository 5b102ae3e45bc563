/* bench.c: Baton's throughput and latency on this machine, printed as a table.
 *
 *   ./run bench [--jobs N]
 *
 * Every figure comes from a fresh SQLite file in a temporary directory, default settings
 * (WAL, synchronous=NORMAL), the public C API, and a no-op C callback unless said. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "baton.h"
#include "util/clock.h"

static char dir[4096];
static int bench_jobs = 20000;
static const char *only; /* run just the benchmarks whose name contains this */

static int selected(const char *name) { return !only || strstr(name, only); }

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, baton_error_last());
    exit(1);
}

static baton_client *fresh_client(const char *name, baton_perform_fn perform, void *payload)
{
    char url[4200];
    snprintf(url, sizeof url, "sqlite:%s/%s.db", dir, name);
    baton_client *c;
    if (baton_open(&c, url) != BATON_OK || baton_migrate(c) != BATON_OK)
        die("open");
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = perform;
    o.payload = payload;
    if (baton_class_register(c, "Noop", &o) != BATON_OK)
        die("register");
    return c;
}

static double seconds_since(int64_t start_ns) { return (double)(bt_mono_ns() - start_ns) / 1e9; }

static void row(const char *metric, double value, const char *unit, const char *target)
{
    printf("| %-52s | %12.1f %-7s | %-16s |\n", metric, value, unit, target);
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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bench_latency(void)
{
    latency l = {0};
    baton_client *c = fresh_client("latency", mark_start, &l);
    /* The producer uses its own connection, as a separate application would. */
    char url[4200];
    snprintf(url, sizeof url, "sqlite:%s/latency.db", dir);
    baton_client *producer;
    if (baton_open(&producer, url) != BATON_OK)
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

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
            bench_jobs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: baton_bench [--jobs N] [--only enqueue|processing|latency]\n");
            return 2;
        }
    }
    if (bench_jobs < 1000)
        bench_jobs = 1000;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/baton-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench: mkdtemp");
        return 1;
    }
    printf("Baton benchmark, SQLite (WAL, synchronous=NORMAL), %ld cores, %d jobs per run\n\n",
           sysconf(_SC_NPROCESSORS_ONLN), bench_jobs);
    printf("| %-52s | %20s | %-16s |\n", "metric", "measured", "target");
    printf("|%s|%s|%s|\n", "------------------------------------------------------",
           "----------------------", "------------------");
    if (selected("enqueue"))
        bench_enqueue();
    if (selected("processing")) {
        bench_processing(3);
        bench_processing(10);
    }
    if (selected("latency"))
        bench_latency();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
