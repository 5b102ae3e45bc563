/* worker.c: a worker claims ready jobs and performs them on a pool of threads.
 *
 * DESIGN
 * One coordinator (the thread in baton_worker_run) owns the worker's database connection;
 * N executor threads only perform jobs. Each coordinator round is one write transaction
 * that records every outcome reported since the last round and claims as many jobs as
 * there are idle threads. Outcomes and claims thus share commits (group commit), which is
 * what lets one worker process go far beyond one transaction per job. The coordinator
 * sleeps in poll() on an eventfd (executors report, stop requests) and on the store's
 * change notification, with the polling interval as the fallback.
 *
 * Where the database's writers run side by side (PostgreSQL), a helper thread with a
 * second connection runs a round whenever outcomes are waiting while the coordinator's
 * round is in progress, so an executor that finishes waits for at most one round instead
 * of the rest of the current one and then its own. Each round takes the outcomes reported
 * so far and reserves the idle threads it claims for under the worker's lock, so two
 * rounds never claim for the same thread. Both rounds lock their keys in the same order,
 * as rounds of separate processes do. The coordinator alone heartbeats and drains.
 *
 * The fence runs on a thread of its own, on the monotonic clock: once the last heartbeat
 * that reached the database is so old that another process may declare this worker dead,
 * it stops the jobs and interrupts whatever database call is in progress (a server gone
 * silent leaves a call waiting for minutes), whatever the coordinator is doing. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "runtime/command.h"
#include "runtime/runtime.h"
#include "runtime/title.h"
#include "util/clock.h"
#include "util/err.h"

enum { RUNNING = 0, STOP_GRACEFUL = 1, STOP_IMMEDIATE = 2 };

struct baton_worker {
    baton_client *client;
    bt_store *store;
    char **queues;
    size_t nqueues;
    int threads;
    double polling_interval;
    double shutdown_timeout;
    double heartbeat_interval;
    double alive_threshold;
    int64_t process_id;               /* changed under lock, read by the helper under it */
    /* When the last liveness tick that found our row began: in a page shared with the
     * shepherds of command jobs, whose dead man's switch reads it (command.h). */
    _Atomic int64_t *last_alive_ns;
    bt_slot_checker checker;
    bt_claim_ref *unstarted;          /* claims dropped by a fence, to hand back (lock) */
    size_t nunstarted;
    pthread_t fencer;
    pthread_cond_t fence_wake;        /* fence_quit set (monotonic clock) */
    int fence_quit;
    int fencer_started;
    bt_log_limit store_errors, heartbeat_errors, helper_store_errors; /* repeated lines held back */
    atomic_int state;
    bt_waker waker;
    pthread_t *executors;
    int executors_started;

    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    struct baton_job *pending;        /* claimed, waiting for an executor */
    struct baton_job *done;           /* performed, waiting to be recorded */
    struct baton_job **running;       /* by executor index, for cancellation */
    int quit;
    atomic_int in_flight;             /* claimed and not yet recorded; changed under lock */
    int reserved;                     /* jobs the rounds in progress may claim */
    int recording;                    /* outcomes the rounds in progress record */
    int reconcile;                    /* a round's commit went unanswered: claims unknown */
    _Atomic int64_t claim_after_ns;   /* no claims before: a job it could not start went back */

    bt_store *helper_store;           /* NULL when no helper runs */
    pthread_t helper;
    pthread_cond_t helper_wake;       /* outcomes reported, or helper_quit set */
    int helper_quit;
    int coordinator_in_round;

    int shown_busy;                   /* in the process title; -1 before the first */
};

int baton_worker_new(baton_worker **out, baton_client *client, const baton_worker_options *opts)
{
    *out = NULL;
    baton_worker_options defaults = BATON_WORKER_OPTIONS_INIT;
    const baton_worker_options *o = opts ? opts : &defaults;
    if (o->version != BATON_WORKER_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "unknown worker options version %u", o->version);
    if (o->threads < 1)
        return bt_err_set(BATON_EINVALID, "worker threads must be at least 1, got %d", o->threads);
    if (!(o->polling_interval > 0) || !bt_seconds_valid(o->polling_interval))
        return bt_err_set(BATON_EINVALID, "polling interval must be above 0 and at most %.0e seconds", BATON_SECONDS_MAX);
    if (!bt_seconds_valid(o->shutdown_timeout))
        return bt_err_set(BATON_EINVALID, "shutdown timeout must be from 0 to %.0e seconds", BATON_SECONDS_MAX);
    baton_worker *w = calloc(1, sizeof *w);
    if (!w)
        return bt_err_set(BATON_ERROR, "out of memory");
    w->waker.fd = -1;
    void *page = mmap(NULL, sizeof *w->last_alive_ns, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        free(w);
        return bt_err_set(BATON_ERROR, "cannot map the worker's liveness page");
    }
    w->last_alive_ns = page;
    w->queues = bt_split_queues(o->queues ? o->queues : "*", &w->nqueues);
    if (w->nqueues == 0) {
        baton_worker_free(w);
        return bt_err_set(BATON_EINVALID, "worker queue list is empty");
    }
    w->client = client;
    w->threads = o->threads;
    w->polling_interval = o->polling_interval;
    w->shutdown_timeout = o->shutdown_timeout;
    w->heartbeat_interval = client->heartbeat_interval;
    w->alive_threshold = client->alive_threshold;
    w->shown_busy = -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->work_ready, NULL);
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&w->fence_wake, &monotonic);
    pthread_condattr_destroy(&monotonic);
    pthread_cond_init(&w->helper_wake, NULL);
    /* The waker lives as long as the worker, so a stop from any thread or signal handler
     * always has a valid descriptor to write to, even while run() starts or returns. */
    int rc = bt_waker_init(&w->waker);
    if (rc != BATON_OK) {
        baton_worker_free(w);
        return rc;
    }
    *out = w;
    return BATON_OK;
}

void baton_worker_free(baton_worker *w)
{
    if (!w)
        return;
    free(w->unstarted);
    munmap((void *)w->last_alive_ns, sizeof *w->last_alive_ns);
    bt_strv_free(w->queues);
    bt_waker_close(&w->waker);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->work_ready);
    pthread_cond_destroy(&w->helper_wake);
    pthread_cond_destroy(&w->fence_wake);
    free(w);
}

void baton_worker_stop(baton_worker *w, int immediate)
{
    int want = immediate ? STOP_IMMEDIATE : STOP_GRACEFUL;
    int cur = atomic_load(&w->state);
    while (cur < want && !atomic_compare_exchange_weak(&w->state, &cur, want))
        ;
    bt_waker_signal(&w->waker);
}

typedef struct executor_arg {
    baton_worker *w;
    int index;
} executor_arg;

static int stalled(const baton_worker *w);
static void keep_unstarted(baton_worker *w, bt_claim_ref claim);

static void *executor_main(void *p)
{
    executor_arg *arg = p;
    baton_worker *w = arg->w;
    int index = arg->index;
    free(arg);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->pending && !w->quit)
            pthread_cond_wait(&w->work_ready, &w->lock);
        if (!w->pending)
            break;
        struct baton_job *job = w->pending;
        w->pending = job->next;
        job->next = NULL; /* running[] holds it alone: reconcile_claims walks each as a list */
        if (stalled(w)) {
            /* Claimed before a stall, and past it this process may be pruned at any moment
             * and the job's slot handed on: it does not start here (the fence's sweep may
             * have run before it was handed over). */
            keep_unstarted(w, (bt_claim_ref){job->claimed.id, job->claimed.attempt});
            atomic_fetch_sub(&w->in_flight, 1);
            pthread_mutex_unlock(&w->lock);
            bt_job_free(job);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        w->running[index] = job;
        pthread_mutex_unlock(&w->lock);

        bt_job_perform(w->client, job);

        pthread_mutex_lock(&w->lock);
        w->running[index] = NULL;
        job->next = w->done;
        w->done = job;
        bt_waker_signal(&w->waker);
        pthread_cond_signal(&w->helper_wake);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static struct baton_job *take_done(baton_worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct baton_job *done = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->lock);
    return done;
}

static void log_outcome(baton_worker *w, const struct baton_job *j)
{
    const bt_claimed_job *c = &j->claimed;
    double ms = (double)(bt_mono_ns() - j->started_ns) / 1e6;
    int64_t retry_at = j->retry_at;
    /* Once per job: skip escaping values no logger will read. */
    baton_log_level level = !j->owned || retry_at ? BATON_LOG_WARN : j->succeeded ? BATON_LOG_INFO : BATON_LOG_ERROR;
    if (!bt_log_enabled(w->client, level))
        return;
    if (!j->owned)
        bt_log(w->client, BATON_LOG_WARN,
               "event=job.outcome_dropped job_id=%lld class=%s reason=\"claim no longer held\"",
               (long long)c->id, BT_LOG_VALUE(c->class_name));
    else if (j->succeeded)
        bt_log(w->client, BATON_LOG_INFO, "event=job.finished job_id=%lld class=%s queue=%s duration_ms=%.1f",
               (long long)c->id, BT_LOG_VALUE(c->class_name), BT_LOG_VALUE(c->queue), ms);
    else if (retry_at)
        bt_log(w->client, BATON_LOG_WARN,
               "event=job.retried job_id=%lld class=%s attempt=%d retry_in_ms=%lld error=%s",
               (long long)c->id, BT_LOG_VALUE(c->class_name), c->attempt,
               (long long)(retry_at - bt_now_ms()), BT_LOG_VALUE(j->error));
    else
        bt_log(w->client, BATON_LOG_ERROR, "event=job.failed job_id=%lld class=%s attempt=%d error=%s",
               (long long)c->id, BT_LOG_VALUE(c->class_name), c->attempt, BT_LOG_VALUE(j->error));
}

/* stall_limit_ns is how long after its last heartbeat that reached the database this
 * worker's jobs may run: until others could declare it dead (the database was unreachable,
 * the process was stopped) and hand its slots on. Its jobs must not run past that point;
 * their outcomes, if still owned, are recorded as usual, and if the claims were taken
 * away nothing is written. */
static int64_t stall_limit_ns(const baton_worker *w)
{
    double margin = 2 * w->heartbeat_interval;
    double limit = w->alive_threshold - margin > w->alive_threshold / 2 ? w->alive_threshold - margin
                                                                      : w->alive_threshold / 2;
    return (int64_t)(limit * 1e9);
}

static int stalled(const baton_worker *w)
{
    return bt_mono_ns() - atomic_load(w->last_alive_ns) >= stall_limit_ns(w);
}

/* keep_unstarted (lock held) notes a claim whose job will not run here, to be handed back.
 * Out of memory, it stays one of this live worker's claims nobody knows of: reconciled. */
static void keep_unstarted(baton_worker *w, bt_claim_ref claim)
{
    bt_claim_ref *grown = realloc(w->unstarted, (w->nunstarted + 1) * sizeof *grown);
    if (!grown) {
        w->reconcile = 1;
        return;
    }
    w->unstarted = grown;
    w->unstarted[w->nunstarted++] = claim;
}

/* One round's share of the worker's state, taken and settled under the lock. */
typedef struct round {
    struct baton_job *done; /* outcomes to record */
    int ndone;              /* as taken: what the worker's counts hold for it */
    int nhanded;            /* of those, handed back unstarted and freed */
    int nsettled;           /* recorded apart (settle_apart) and freed */
    struct baton_job *kept; /* refused apart: they wait for a later round, whatever this one does */
    int nkept;
    int want;               /* jobs to claim */
    int64_t process_id;
    int claims_unknown;     /* it failed, but its claims may have been committed */
} round;

/* take_round (lock held) takes every reported outcome and reserves the idle threads the
 * round claims for, when it may claim. */
static void take_round(baton_worker *w, int may_claim, round *r)
{
    r->done = w->done;
    w->done = NULL;
    r->ndone = 0;
    for (struct baton_job *j = r->done; j; j = j->next)
        r->ndone++;
    w->recording += r->ndone;
    /* Threads whose jobs are being recorded are idle already. */
    int idle = w->threads - (atomic_load(&w->in_flight) - w->recording) - w->reserved;
    may_claim = may_claim && !w->reconcile && bt_mono_ns() >= atomic_load(&w->claim_after_ns);
    r->want = may_claim && idle > 0 ? idle : 0;
    r->claims_unknown = 0;
    r->nhanded = r->nsettled = r->nkept = 0;
    r->kept = NULL;
    w->reserved += r->want;
    r->process_id = w->process_id;
}

/* put_back_outcomes (lock held) returns the outcomes of a round that failed to w->done,
 * for the next round to record. */
static void put_back_outcomes(baton_worker *w, struct baton_job *done)
{
    struct baton_job *tail = done;
    while (tail && tail->next)
        tail = tail->next;
    if (tail) {
        tail->next = w->done;
        w->done = done;
    }
}

/* settle_round (lock held) ends a round: got jobs claimed go to the executors, or, when
 * the round failed (got < 0), its outcomes wait for the next round. */
static void settle_round(baton_worker *w, round *r, bt_claimed_job *claimed, int got)
{
    w->reserved -= r->want;
    w->recording -= r->ndone;
    put_back_outcomes(w, r->kept);
    if (got < 0) {
        put_back_outcomes(w, r->done);
        w->reconcile |= r->claims_unknown;
        atomic_fetch_sub(&w->in_flight, r->nhanded + r->nsettled); /* gone back to the queue, or recorded */
        return;
    }
    atomic_fetch_sub(&w->in_flight, r->ndone - r->nkept);
    int queued = 0;
    for (int i = got - 1; i >= 0; i--) {
        struct baton_job *job = calloc(1, sizeof *job);
        if (!job) { /* out of memory: the claim goes back at the next heartbeat */
            keep_unstarted(w, (bt_claim_ref){claimed[i].id, claimed[i].attempt});
            bt_claimed_job_free(&claimed[i]);
            continue;
        }
        queued++;
        job->claimed = claimed[i];
        job->klass = bt_class_find(w->client, claimed[i].class_name);
        job->checker = &w->checker;
        job->alive_ns = w->last_alive_ns;
        job->alive_limit_ns = stall_limit_ns(w);
        job->next = w->pending;
        w->pending = job;
        bt_log(w->client, BATON_LOG_DEBUG, "event=job.claimed job_id=%lld class=%s queue=%s",
               (long long)job->claimed.id, BT_LOG_VALUE(job->claimed.class_name),
               BT_LOG_VALUE(job->claimed.queue));
    }
    atomic_fetch_add(&w->in_flight, queued);
    /* Wake one executor per job: a broadcast would wake idle threads only to sleep again. */
    for (int i = 0; i < queued; i++)
        pthread_cond_signal(&w->work_ready);
}

/* round_trip runs one transaction on store: record the round's outcomes, claim up to its
 * want. Returns how many were claimed, with the outcomes logged and freed, or a negative
 * code (the outcomes are then kept). */
/* hand_back returns the jobs of process_id's claims (all of them when claims is NULL) to
 * the queue, in a transaction of its own. */
static int hand_back(bt_store *store, int64_t process_id, const bt_claim_ref *claims, size_t n, int64_t *released)
{
    int rc = bt_begin(store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_release_claims(store, process_id, claims, n, bt_now_ms(), released);
    return bt_end(store, rc);
}

/* hand_back_not_started returns to the queue, in a transaction of their own, the jobs of
 * the round whose commands this worker could not start (out of descriptors, memory or
 * processes: its failure, not the job's), and takes them out of the round. */
static int hand_back_not_started(baton_worker *w, bt_store *store, round *r)
{
    size_t n = 0;
    for (struct baton_job *j = r->done; j; j = j->next)
        n += j->not_started;
    if (!n)
        return BATON_OK;
    bt_claim_ref *refs = malloc(n * sizeof *refs);
    if (!refs)
        return bt_err_set(BATON_ERROR, "out of memory"); /* the round fails and is tried again */
    n = 0;
    for (struct baton_job *j = r->done; j; j = j->next)
        if (j->not_started)
            refs[n++] = (bt_claim_ref){j->claimed.id, j->claimed.attempt};
    int rc = hand_back(store, r->process_id, refs, n, NULL);
    free(refs);
    if (rc != BATON_OK)
        return rc;
    for (struct baton_job **at = &r->done; *at;) {
        struct baton_job *j = *at;
        if (!j->not_started || n == 0) {
            at = &j->next;
            continue;
        }
        n--;
        *at = j->next;
        r->nhanded++;
        bt_log(w->client, BATON_LOG_ERROR, "event=job.not_started job_id=%lld class=%s error=%s handed_back=1",
               (long long)j->claimed.id, BT_LOG_VALUE(j->claimed.class_name), BT_LOG_VALUE(j->error));
        bt_job_free(j);
        atomic_store(&w->claim_after_ns, bt_mono_ns() + (int64_t)(w->polling_interval * 1e9));
    }
    return BATON_OK;
}

static bt_outcome outcome_of(const struct baton_job *j)
{
    const bt_claimed_job *c = &j->claimed;
    return (bt_outcome){c->id, j->succeeded, j->error, c->attempt, c->max_attempts, c->backoff, c->backoff_base,
                        c->concurrency_key};
}

/* settle_apart records outcomes of the round one per transaction (only those refused
 * before, when refused_only): a row the database refuses (BATON_ERROR: a constraint or a
 * trigger, not a lost connection or a lock wait) must not hold up the others, nor the
 * claims they are recorded with. Each refused one moves to r->kept, to be tried apart
 * again later. Returns the first failure that was not such a refusal. */
static int settle_apart(baton_worker *w, bt_store *store, round *r, int refused_only)
{
    for (struct baton_job **at = &r->done; *at;) {
        struct baton_job *j = *at;
        if (refused_only && !j->refused) {
            at = &j->next;
            continue;
        }
        bt_outcome o = outcome_of(j);
        int64_t retry_at = 0;
        int owned = 0, rc = bt_begin(store, BT_TXN_WRITE);
        if (rc == BATON_OK)
            rc = bt_complete(store, r->process_id, &o, 1, bt_now_ms(), &owned, &retry_at);
        rc = bt_end(store, rc);
        if (rc != BATON_OK && rc != BATON_ERROR)
            return rc;
        *at = j->next;
        if (rc == BATON_ERROR) {
            bt_log_limited(w->client, store == w->store ? &w->store_errors : &w->helper_store_errors, BATON_LOG_ERROR,
                           "event=job.outcome_refused job_id=%lld error=%s", (long long)j->claimed.id,
                           BT_LOG_VALUE(baton_error_last()));
            j->refused = 1;
            j->next = r->kept;
            r->kept = j;
            r->nkept++;
            continue;
        }
        j->owned = owned;
        j->retry_at = retry_at;
        log_outcome(w, j);
        bt_job_free(j);
        r->nsettled++;
    }
    return BATON_OK;
}

static int round_trip(baton_worker *w, bt_store *store, round *r, bt_claimed_job *claimed)
{
    int rc = hand_back_not_started(w, store, r);
    if (rc == BATON_OK)
        rc = settle_apart(w, store, r, 1);
    if (rc != BATON_OK)
        return rc;
    int64_t now = bt_now_ms();
    bt_claims claims = {.jobs = claimed, .max = r->want, .after_end = 1};
    size_t n = (size_t)r->ndone;
    bt_outcome *outcomes = malloc((n ? n : 1) * sizeof *outcomes);
    int *owned = malloc((n ? n : 1) * sizeof *owned);
    int64_t *retry_at = malloc((n ? n : 1) * sizeof *retry_at);
    rc = outcomes && owned && retry_at ? BATON_OK : bt_err_set(BATON_ERROR, "out of memory");
    n = 0;
    for (struct baton_job *j = r->done; j && rc == BATON_OK; j = j->next)
        outcomes[n++] = outcome_of(j);
    if (rc == BATON_OK && (rc = bt_begin(store, BT_TXN_WRITE)) == BATON_OK) {
        if (n)
            rc = bt_complete(store, r->process_id, outcomes, n, now, owned, retry_at);
        if (rc == BATON_OK && r->want > 0)
            rc = bt_claim(store, r->process_id, w->queues, w->nqueues, now, &claims);
        rc = bt_end(store, rc);
    }
    free(outcomes);
    if (rc != BATON_OK) {
        r->claims_unknown = r->want > 0 && store->commit_unknown;
        for (int k = 0; k < claims.count; k++)
            bt_claimed_job_free(&claimed[k]);
        free(owned);
        free(retry_at);
        /* Refused, not failed: some row would not take its outcome. The outcomes go apart,
         * and the next round claims without the one that is refused. */
        if (rc == BATON_ERROR && n > 0 && !r->claims_unknown && (rc = settle_apart(w, store, r, 0)) == BATON_OK)
            return 0;
        return rc;
    }
    for (size_t k = 0; r->done; k++) {
        struct baton_job *j = r->done;
        r->done = j->next;
        j->owned = owned[k];
        j->retry_at = retry_at[k];
        log_outcome(w, j);
        bt_job_free(j);
    }
    free(owned);
    free(retry_at);
    return claims.count;
}

/* stop_running cancels every job in progress (killing command jobs' groups at once when
 * kill_now) and drops the claimed jobs no executor has started. Their claims go to
 * w->unstarted, which the coordinator settles, and leave in_flight. Any thread. */
static void stop_running(baton_worker *w, int kill_now)
{
    pthread_mutex_lock(&w->lock);
    /* No executors yet when the first liveness tick finds this worker already pruned. */
    for (int i = 0; w->running && i < w->threads; i++) {
        struct baton_job *j = w->running[i];
        if (!j)
            continue;
        atomic_store(&j->cancelled, kill_now ? 2 : 1); /* 2: its run kills it at once too */
        int pgid = atomic_load(&j->pgid);
        if (kill_now)
            bt_command_kill(pgid);
    }
    struct baton_job *pending = w->pending;
    w->pending = NULL;
    int dropped = 0;
    for (struct baton_job *j = pending; j; j = j->next)
        dropped++;
    for (struct baton_job *j = pending; j; j = j->next)
        keep_unstarted(w, (bt_claim_ref){j->claimed.id, j->claimed.attempt});
    atomic_fetch_sub(&w->in_flight, dropped);
    pthread_mutex_unlock(&w->lock);
    while (pending) {
        struct baton_job *next = pending->next;
        bt_job_free(pending);
        pending = next;
    }
}

static void liveness_tick(baton_worker *w);

/* wait_for_runs returns once no executor runs a job (command groups reaped, callbacks
 * returned), heartbeating meanwhile: the claims of runs still going stay this live
 * process's, so nobody starts their jobs beside them. A callback that never returns keeps
 * its claim until the process exits; an immediate stop request kills what still runs. */
static void wait_for_runs(baton_worker *w, int killed)
{
    int64_t next_heartbeat = bt_mono_ns() + (int64_t)(w->heartbeat_interval * 1e9);
    for (;;) {
        int running = 0;
        pthread_mutex_lock(&w->lock);
        for (int i = 0; w->running && i < w->threads; i++)
            running += w->running[i] != NULL;
        pthread_mutex_unlock(&w->lock);
        if (!running)
            return;
        if (!killed && atomic_load(&w->state) == STOP_IMMEDIATE) {
            stop_running(w, 1);
            killed = 1;
        }
        if (bt_mono_ns() >= next_heartbeat) {
            liveness_tick(w);
            next_heartbeat = bt_mono_ns() + (int64_t)(w->heartbeat_interval * 1e9);
        }
        double beat = (double)(next_heartbeat - bt_mono_ns()) / 1e9;
        bt_wait_ready(&w->waker, -1, beat < w->polling_interval ? beat : w->polling_interval);
    }
}

/* record_finished records the outcomes of runs that ended on their own (reported before
 * the stop, or successful although asked to stop): handing those back would run a
 * finished job again. The runs the stop cut short stay in w->done, to be handed back. */
static void record_finished(baton_worker *w)
{
    round r = {.process_id = w->process_id};
    struct baton_job *stopped = NULL;
    pthread_mutex_lock(&w->lock);
    while (w->done) {
        struct baton_job *j = w->done;
        w->done = j->next;
        struct baton_job **to = atomic_load(&j->cancelled) && !j->succeeded ? &stopped : &r.done;
        j->next = *to;
        *to = j;
        r.ndone += to == &r.done;
    }
    w->done = stopped;
    pthread_mutex_unlock(&w->lock);
    if (!r.done)
        return;
    bt_claimed_job unused;
    if (round_trip(w, w->store, &r, &unused) < 0) {
        bt_log(w->client, BATON_LOG_ERROR, "event=worker.store_error error=%s", BT_LOG_VALUE(baton_error_last()));
        pthread_mutex_lock(&w->lock); /* their claims go back with the rest: they run again */
        put_back_outcomes(w, r.done);
        pthread_mutex_unlock(&w->lock);
    }
}

/* Past the shutdown timeout (or on an immediate stop): stop what still runs, wait until
 * those runs have ended, record what finished on its own, and only then hand every other
 * claim of this process back to the queue so the jobs run again elsewhere. */
static void abandon_in_flight(baton_worker *w, int kill_now)
{
    stop_running(w, kill_now);
    wait_for_runs(w, kill_now);
    record_finished(w);
    int64_t released = 0;
    if (hand_back(w->store, w->process_id, NULL, 0, &released) != BATON_OK) {
        bt_log(w->client, BATON_LOG_ERROR, "event=worker.release_failed error=%s",
               BT_LOG_VALUE(baton_error_last()));
    } else if (released) {
        bt_log(w->client, BATON_LOG_WARN, "event=worker.jobs_released count=%lld", (long long)released);
    }
}

static char *metadata_json(baton_worker *w)
{
    json_t *q = json_array();
    for (size_t i = 0; i < w->nqueues; i++)
        json_array_append_new(q, json_string(w->queues[i]));
    json_t *m = json_pack("{s:o, s:i, s:f}", "queues", q, "threads", w->threads,
                          "polling_interval", w->polling_interval);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return text;
}

/* check_descriptors makes sure every thread can start a command: each running one holds
 * three pipe ends in the worker (six while it starts), besides the connections, listener
 * and eventfds. Out of descriptors, commands would fail to start one after another, so a
 * worker raises its soft limit as far as needed, or refuses to run. */
static int check_descriptors(baton_worker *w)
{
    rlim_t need = (rlim_t)w->threads * 8 + 64;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return BATON_OK;
    struct rlimit raised = {need, rl.rlim_max};
    if ((rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) && setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        bt_log(w->client, BATON_LOG_INFO, "event=worker.descriptor_limit_raised from=%llu to=%llu",
               (unsigned long long)rl.rlim_cur, (unsigned long long)need);
        return BATON_OK;
    }
    return bt_err_set(BATON_EINVALID,
                      "worker: %d threads need about %llu open files, but the limit is %llu (hard limit %llu):"
                      " raise it (ulimit -n) or use fewer threads",
                      w->threads, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                      (unsigned long long)rl.rlim_max);
}

static int start_executors(baton_worker *w)
{
    w->running = calloc((size_t)w->threads, sizeof *w->running);
    w->executors = calloc((size_t)w->threads, sizeof *w->executors);
    for (int i = 0; i < w->threads; i++) {
        executor_arg *arg = malloc(sizeof *arg);
        *arg = (executor_arg){w, i};
        if (pthread_create(&w->executors[i], NULL, executor_main, arg) != 0) {
            free(arg);
            return bt_err_set(BATON_ERROR, "cannot start worker thread %d", i);
        }
        w->executors_started++;
    }
    return BATON_OK;
}

static void stop_executors(baton_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    pthread_cond_broadcast(&w->work_ready);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->executors_started; i++)
        pthread_join(w->executors[i], NULL);
    struct baton_job *done = take_done(w);
    while (done) {
        struct baton_job *next = done->next;
        bt_job_free(done);
        done = next;
    }
    free(w->executors);
    free(w->running);
    w->executors = NULL;
    w->running = NULL;
    w->executors_started = 0;
}

/* fence_if_stalled returns 0 when the worker may claim. A stalled worker's jobs are the
 * fence thread's to stop (fence_main); it must prove it is alive (or register again)
 * before it claims anything: a claim made under an id that was pruned meanwhile would
 * belong to no live process. */
static int fence_if_stalled(baton_worker *w)
{
    if (!stalled(w))
        return 0;
    liveness_tick(w);
    return stalled(w);
}

/* fence stops every job of a stalled worker and interrupts its database calls. */
static void fence(baton_worker *w, int first)
{
    int running = atomic_load(&w->in_flight);
    if (running > 0)
        stop_running(w, 1);
    if (first && running > 0) {
        pthread_mutex_lock(&w->lock);
        int64_t process_id = w->process_id;
        pthread_mutex_unlock(&w->lock);
        bt_log(w->client, BATON_LOG_ERROR,
               "event=worker.fenced process_id=%lld reason=\"no heartbeat for %.1fs\" stopped_jobs=%d",
               (long long)process_id, (double)(bt_mono_ns() - atomic_load(w->last_alive_ns)) / 1e9, running);
    }
    pthread_mutex_lock(&w->lock); /* the helper's store is closed under it */
    bt_interrupt(w->store);
    if (w->helper_store)
        bt_interrupt(w->helper_store);
    pthread_mutex_unlock(&w->lock);
}

/* fence_main is the fence on its own clock. Stalled, it fences at once, then again every
 * heartbeat interval while the stall lasts (a call made since may wait as long). */
static void *fence_main(void *p)
{
    baton_worker *w = p;
    int64_t fenced_for = -1, beat_ns = (int64_t)(w->heartbeat_interval * 1e9);
    pthread_mutex_lock(&w->lock);
    while (!w->fence_quit) {
        int64_t now = bt_mono_ns(), alive = atomic_load(w->last_alive_ns), until;
        if (stalled(w)) {
            pthread_mutex_unlock(&w->lock);
            fence(w, fenced_for != alive);
            pthread_mutex_lock(&w->lock);
            fenced_for = alive;
            until = now + beat_ns;
        } else {
            until = alive + stall_limit_ns(w);
        }
        struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
        if (!w->fence_quit)
            pthread_cond_timedwait(&w->fence_wake, &w->lock, &ts);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* A worker without its fence could run jobs past the point others prune it: none runs. */
static int start_fencer(baton_worker *w)
{
    w->fencer_started = pthread_create(&w->fencer, NULL, fence_main, w) == 0;
    return w->fencer_started ? BATON_OK : bt_err_set(BATON_ERROR, "cannot start the worker's fence thread");
}

static void stop_fencer(baton_worker *w)
{
    if (!w->fencer_started)
        return;
    pthread_mutex_lock(&w->lock);
    w->fence_quit = 1;
    pthread_cond_signal(&w->fence_wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->fencer, NULL);
    w->fencer_started = 0;
}

/* hand_back_unstarted returns to the queue the claims a fence dropped before their jobs
 * started; the fence thread may add more meanwhile, which stay for the next tick. */
static int hand_back_unstarted(baton_worker *w)
{
    pthread_mutex_lock(&w->lock);
    size_t n = w->nunstarted;
    bt_claim_ref *claims = n ? malloc(n * sizeof *claims) : NULL;
    if (claims)
        memcpy(claims, w->unstarted, n * sizeof *claims);
    pthread_mutex_unlock(&w->lock);
    if (!claims)
        return n ? bt_err_set(BATON_ERROR, "out of memory") : BATON_OK;
    int rc = hand_back(w->store, w->process_id, claims, n, NULL);
    free(claims);
    if (rc == BATON_OK) {
        pthread_mutex_lock(&w->lock);
        memmove(w->unstarted, w->unstarted + n, (w->nunstarted - n) * sizeof *w->unstarted);
        w->nunstarted -= n;
        pthread_mutex_unlock(&w->lock);
    }
    return rc;
}

/* liveness_tick heartbeats, renews leases and prunes the dead. A worker that finds itself
 * pruned has lost every claim: it registers again under a new id and goes on. */
static void liveness_tick(baton_worker *w)
{
    int alive = 1, pruned = 0;
    /* Others judge this heartbeat by when it reached the database, at the earliest now. */
    int64_t started = bt_mono_ns();
    if (bt_liveness_beat(w->store, w->process_id, w->alive_threshold, &alive) != BATON_OK) {
        bt_log_limited(w->client, &w->heartbeat_errors, BATON_LOG_ERROR, "event=worker.heartbeat_failed error=%s",
                       BT_LOG_VALUE(baton_error_last()));
        return;
    }
    if (alive) {
        /* Alive since the beat went in, whatever becomes of the pruning and the hand-back
         * after it (either may wait on locks, or fail): neither may fence healthy jobs.
         * What could not be handed back waits for the next tick. */
        atomic_store(w->last_alive_ns, started);
        bt_liveness_prune(w->store, w->process_id, w->alive_threshold, &pruned);
        bt_log_pruned(w->client, &w->heartbeat_errors, pruned);
        hand_back_unstarted(w);
        return;
    }
    /* Pruned: every claim is gone. */
    pthread_mutex_lock(&w->lock);
    w->nunstarted = 0; /* the pruner settled those claims */
    pthread_mutex_unlock(&w->lock);
    int64_t old = w->process_id;
    stop_running(w, 1);
    char *meta = metadata_json(w);
    int64_t id = old;
    if (bt_process_register(w->store, "worker", meta, w->alive_threshold, &id) != BATON_OK)
        id = old; /* try again at the next tick */
    free(meta);
    pthread_mutex_lock(&w->lock);
    w->process_id = id;
    pthread_mutex_unlock(&w->lock);
    atomic_store(&w->checker.process_id, w->process_id);
    bt_log(w->client, BATON_LOG_ERROR, "event=worker.was_pruned old_process_id=%lld process_id=%lld",
           (long long)old, (long long)w->process_id);
    if (w->process_id == old)
        return;
    atomic_store(w->last_alive_ns, started);
}

/* show_title keeps the process title (when the supervisor enabled titles) in step with
 * the number of jobs in flight. */
static void show_title(baton_worker *w)
{
    int busy = atomic_load(&w->in_flight);
    if (busy == w->shown_busy)
        return;
    w->shown_busy = busy;
    char *queues = bt_join_queues(w->queues, w->nqueues);
    bt_title_set("baton-worker: queues=%s threads=%d busy=%d", queues ? queues : "?", w->threads, busy);
    free(queues);
}

/* add_known (lock held) appends the claims of a list of jobs to known. */
static void add_known(bt_claim_ref *known, size_t *n, const struct baton_job *j)
{
    for (; j; j = j->next)
        known[(*n)++] = (bt_claim_ref){j->claimed.id, j->claimed.attempt};
}

/* reconcile_claims settles what a round whose commit went unanswered may have claimed:
 * the database may hold claims of this live worker that no thread of it knows, whose jobs
 * would otherwise never run. Once no round is in progress (none claims while reconcile
 * is set), every claim the worker knows is in its lists; the others go back to the queue. */
static void reconcile_claims(baton_worker *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->reserved || w->recording) {
        pthread_mutex_unlock(&w->lock);
        return;
    }
    size_t n = 0, cap = (size_t)atomic_load(&w->in_flight) + w->nunstarted + 1;
    bt_claim_ref *known = malloc(cap * sizeof *known);
    if (known) {
        for (int i = 0; i < w->threads; i++)
            add_known(known, &n, w->running[i]);
        add_known(known, &n, w->pending);
        add_known(known, &n, w->done);
        for (size_t i = 0; i < w->nunstarted; i++)
            known[n++] = w->unstarted[i];
    }
    int64_t process_id = w->process_id;
    pthread_mutex_unlock(&w->lock);
    int64_t back = 0;
    int rc = known ? bt_begin(w->store, BT_TXN_WRITE) : bt_err_set(BATON_ERROR, "out of memory");
    if (rc == BATON_OK)
        rc = bt_release_unknown_claims(w->store, process_id, known, n, bt_now_ms(), &back);
    rc = known ? bt_end(w->store, rc) : rc;
    free(known);
    if (rc != BATON_OK) {
        bt_log_limited(w->client, &w->store_errors, BATON_LOG_ERROR, "event=worker.store_error error=%s",
                       BT_LOG_VALUE(baton_error_last()));
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->reconcile = 0;
    pthread_mutex_unlock(&w->lock);
    bt_log(w->client, BATON_LOG_WARN, "event=worker.claims_reconciled process_id=%lld handed_back=%lld",
           (long long)process_id, (long long)back);
}

/* serve is the coordinator loop while the worker runs, then drains in-flight jobs. */
static int serve(baton_worker *w)
{
    bt_claimed_job *claimed = calloc((size_t)w->threads, sizeof *claimed);
    int change_fd = w->store->ops->change_fd(w->store);
    int64_t next_heartbeat = bt_mono_ns() + (int64_t)(w->heartbeat_interval * 1e9);
    int64_t drain_deadline = 0;
    int rc = BATON_OK, stop_seen = 0;
    for (;;) {
        int state = atomic_load(&w->state);
        if (state != RUNNING && !stop_seen) {
            stop_seen = 1;
            bt_process_hook(w->client, BATON_PROCESS_WORKER, BATON_PROCESS_STOP, w->process_id);
        }
        if (state == STOP_IMMEDIATE)
            break;
        if (state == STOP_GRACEFUL && drain_deadline == 0)
            drain_deadline = bt_mono_ns() + (int64_t)(w->shutdown_timeout * 1e9);
        if (drain_deadline && (atomic_load(&w->in_flight) == 0 || bt_mono_ns() >= drain_deadline))
            break;
        if (w->store->lost) { /* nothing more can be recorded: stop the jobs, and stop */
            stop_running(w, 1);
            rc = BATON_ESTORE;
            break;
        }
        /* The heartbeat keeps its schedule whatever the rounds do: rounds that keep failing
         * (a key locked past lock_timeout) must not make a live worker fence itself. */
        if (bt_mono_ns() >= next_heartbeat) {
            liveness_tick(w);
            next_heartbeat = bt_mono_ns() + (int64_t)(w->heartbeat_interval * 1e9);
        }

        int may_claim = state == RUNNING && !fence_if_stalled(w);
        pthread_mutex_lock(&w->lock);
        int reconcile = w->reconcile;
        pthread_mutex_unlock(&w->lock);
        if (reconcile)
            reconcile_claims(w);
        round r;
        pthread_mutex_lock(&w->lock);
        take_round(w, may_claim, &r);
        int in_round = r.done || r.want > 0;
        w->coordinator_in_round = in_round;
        pthread_mutex_unlock(&w->lock);
        int got = 0;
        if (in_round) {
            if (change_fd >= 0)
                w->store->ops->change_drain(w->store);
            got = round_trip(w, w->store, &r, claimed);
            pthread_mutex_lock(&w->lock);
            w->coordinator_in_round = 0;
            settle_round(w, &r, claimed, got);
            pthread_mutex_unlock(&w->lock);
            if (got < 0) {
                rc = got;
                bt_log_limited(w->client, &w->store_errors, BATON_LOG_ERROR, "event=worker.store_error error=%s",
                               BT_LOG_VALUE(baton_error_last()));
                /* The outcomes wait for the next round; the database may come back. */
                bt_wait_ready(&w->waker, -1, w->polling_interval);
                continue;
            }
            rc = BATON_OK;
            show_title(w);
        }
        if (got > 0 && got == r.want)
            continue; /* a full batch: more may be waiting */
        /* Never sleep past a heartbeat: a silent worker looks dead to the supervisor. */
        double timeout = w->polling_interval, beat = (double)(next_heartbeat - bt_mono_ns()) / 1e9;
        timeout = beat < timeout ? (beat > 0.001 ? beat : 0.001) : timeout;
        if (drain_deadline) {
            double left = (double)(drain_deadline - bt_mono_ns()) / 1e9;
            timeout = left < timeout ? left : timeout;
        }
        /* Only a worker that would claim cares whether new jobs arrived: one that may not
         * (stalled, stopping, reconciling, pausing after a command it could not start)
         * would find the notification undrained and spin. */
        bt_wait_ready(&w->waker, r.want > 0 ? change_fd : -1, timeout);
    }
    free(claimed);
    return rc;
}

/* helper_main runs rounds on the helper's connection while the coordinator's round is in
 * progress and outcomes wait. */
static void *helper_main(void *p)
{
    baton_worker *w = p;
    bt_claimed_job *claimed = calloc((size_t)w->threads, sizeof *claimed);
    pthread_mutex_lock(&w->lock);
    while (!w->helper_quit) {
        if (!w->done || !w->coordinator_in_round) {
            pthread_cond_wait(&w->helper_wake, &w->lock);
            continue;
        }
        round r;
        take_round(w, atomic_load(&w->state) == RUNNING && !stalled(w), &r);
        pthread_mutex_unlock(&w->lock);
        int got = round_trip(w, w->helper_store, &r, claimed);
        if (got < 0)
            bt_log_limited(w->client, &w->helper_store_errors, BATON_LOG_ERROR, "event=worker.store_error error=%s",
                           BT_LOG_VALUE(baton_error_last()));
        pthread_mutex_lock(&w->lock);
        settle_round(w, &r, claimed, got);
        /* Failed outcomes are the coordinator's again; a stall found meanwhile is its to fence. */
        if (got < 0 || stalled(w))
            bt_waker_signal(&w->waker);
        if (got < 0) {
            int64_t until_ms = bt_now_ms() + (int64_t)(w->polling_interval * 1000);
            struct timespec until = {(time_t)(until_ms / 1000), (long)(until_ms % 1000) * 1000000};
            pthread_cond_timedwait(&w->helper_wake, &w->lock, &until);
        }
    }
    pthread_mutex_unlock(&w->lock);
    free(claimed);
    return NULL;
}

/* start_helper gives the worker a second round runner where writers run side by side and
 * the worker has a thread for each connection (the coordinator's, the helper's and the
 * listening one). Without it the worker only runs slower. */
static void start_helper(baton_worker *w)
{
    if (!w->store->ops->row_locks || w->threads < 3)
        return;
    bt_store *store;
    if (bt_client_open_store(w->client, &store) != BATON_OK) {
        bt_log(w->client, BATON_LOG_WARN, "event=worker.helper_unavailable error=%s",
               BT_LOG_VALUE(baton_error_last()));
        return;
    }
    pthread_mutex_lock(&w->lock); /* the fence thread reads it */
    w->helper_store = store;
    pthread_mutex_unlock(&w->lock);
    if (pthread_create(&w->helper, NULL, helper_main, w) != 0) {
        pthread_mutex_lock(&w->lock);
        w->helper_store = NULL;
        pthread_mutex_unlock(&w->lock);
        bt_store_close(store);
    }
}

static void stop_helper(baton_worker *w)
{
    if (!w->helper_store)
        return;
    pthread_mutex_lock(&w->lock);
    w->helper_quit = 1;
    pthread_cond_signal(&w->helper_wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->helper, NULL);
    pthread_mutex_lock(&w->lock);
    bt_store *store = w->helper_store;
    w->helper_store = NULL;
    pthread_mutex_unlock(&w->lock);
    bt_store_close(store);
}

int baton_worker_run(baton_worker *w)
{
    show_title(w);
    int rc = check_descriptors(w);
    if (rc == BATON_OK)
        rc = bt_client_open_store(w->client, &w->store);
    char *meta = rc == BATON_OK ? metadata_json(w) : NULL;
    if (rc == BATON_OK)
        rc = bt_process_register(w->store, "worker", meta, w->alive_threshold, &w->process_id);
    free(meta);
    if (rc == BATON_OK) {
        /* Prune before the first claim: after a crash or a forced shutdown, the dead
         * predecessor's slots must be freed, never shared. */
        atomic_store(w->last_alive_ns, bt_mono_ns());
        bt_slot_checker_init(&w->checker, w->client, w->process_id);
        liveness_tick(w);
        bt_log(w->client, BATON_LOG_INFO, "event=worker.started process_id=%lld threads=%d pid=%d",
               (long long)w->process_id, w->threads, (int)getpid());
        bt_process_hook(w->client, BATON_PROCESS_WORKER, BATON_PROCESS_START, w->process_id);
        rc = start_executors(w);
        if (rc == BATON_OK)
            rc = start_fencer(w);
        if (rc == BATON_OK) {
            start_helper(w);
            rc = serve(w);
            stop_helper(w);
        }
        if (atomic_load(&w->in_flight) > 0 || atomic_load(&w->state) == STOP_IMMEDIATE)
            abandon_in_flight(w, atomic_load(&w->state) == STOP_IMMEDIATE);
        stop_fencer(w);
        stop_executors(w);
        bt_slot_checker_close(&w->checker);
        atomic_store(&w->in_flight, 0);
        if (bt_process_deregister(w->store, w->process_id) != BATON_OK && rc == BATON_OK)
            rc = BATON_ESTORE;
        bt_log(w->client, BATON_LOG_INFO, "event=worker.stopped process_id=%lld", (long long)w->process_id);
        bt_process_hook(w->client, BATON_PROCESS_WORKER, BATON_PROCESS_EXIT, w->process_id);
    }
    bt_store_close(w->store);
    w->store = NULL;
    return rc;
}
