/* start.c: baton_start runs the configured workers, dispatchers and scheduler on threads of one
 * process, each with its own connection, until baton_start_stop(). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "util/err.h"

struct bt_start {
    baton_worker **workers;
    size_t nworkers;
    baton_dispatcher **dispatchers;
    size_t ndispatchers;
    baton_scheduler *scheduler;
};

static void *run_worker(void *p) { return (void *)(intptr_t)baton_worker_run(p); }
static void *run_dispatcher(void *p) { return (void *)(intptr_t)baton_dispatcher_run(p); }
static void *run_scheduler(void *p) { return (void *)(intptr_t)baton_scheduler_run(p); }

static void free_start(bt_start *st)
{
    for (size_t i = 0; i < st->nworkers; i++)
        baton_worker_free(st->workers[i]);
    for (size_t i = 0; i < st->ndispatchers; i++)
        baton_dispatcher_free(st->dispatchers[i]);
    free(st->workers);
    free(st->dispatchers);
    baton_scheduler_free(st->scheduler);
    free(st);
}

static int build(baton_client *c, double shutdown_timeout, bt_start *st)
{
    const bt_config *cfg = c->config;
    size_t nw = cfg && cfg->nworkers ? cfg->nworkers : 1;
    size_t nd = cfg && cfg->ndispatchers ? cfg->ndispatchers : 1;
    st->workers = calloc(nw, sizeof *st->workers);
    st->dispatchers = calloc(nd, sizeof *st->dispatchers);
    int rc = BATON_OK;
    for (size_t i = 0; i < nw && rc == BATON_OK; i++) {
        baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
        char *queues = NULL;
        o.shutdown_timeout = shutdown_timeout;
        if (cfg && cfg->nworkers) {
            const bt_worker_config *wc = &cfg->workers[i];
            queues = bt_join_queues(wc->queues, wc->nqueues);
            o.queues = queues;
            o.threads = wc->threads;
            o.polling_interval = wc->polling_interval;
        }
        rc = baton_worker_new(&st->workers[i], c, &o);
        free(queues);
        if (rc == BATON_OK)
            st->nworkers++;
    }
    for (size_t i = 0; i < nd && rc == BATON_OK; i++) {
        baton_dispatcher_options o = BATON_DISPATCHER_OPTIONS_INIT;
        if (cfg && cfg->ndispatchers) {
            o.polling_interval = cfg->dispatchers[i].polling_interval;
            o.batch_size = cfg->dispatchers[i].batch_size;
            o.concurrency_maintenance_interval = cfg->dispatchers[i].concurrency_maintenance_interval;
        }
        rc = baton_dispatcher_new(&st->dispatchers[i], c, &o);
        if (rc == BATON_OK)
            st->ndispatchers++;
    }
    if (rc == BATON_OK)
        rc = baton_scheduler_new(&st->scheduler, c, NULL);
    return rc;
}

int baton_start(baton_client *c, double shutdown_timeout)
{
    bt_start *st = calloc(1, sizeof *st);
    if (!st)
        return bt_err_set(BATON_ERROR, "out of memory");
    int rc = build(c, shutdown_timeout, st);
    bt_start *expected = NULL;
    if (rc == BATON_OK && !atomic_compare_exchange_strong(&c->running, &expected, st))
        rc = bt_err_set(BATON_ESTATE, "baton_start is already running on this client");
    if (rc != BATON_OK) {
        free_start(st);
        return rc;
    }
    size_t n = st->nworkers + st->ndispatchers + 1;
    pthread_t *threads = calloc(n, sizeof *threads);
    size_t started = 0;
    for (size_t i = 0; i < st->nworkers; i++)
        if (pthread_create(&threads[started], NULL, run_worker, st->workers[i]) == 0)
            started++;
    for (size_t i = 0; i < st->ndispatchers; i++)
        if (pthread_create(&threads[started], NULL, run_dispatcher, st->dispatchers[i]) == 0)
            started++;
    if (pthread_create(&threads[started], NULL, run_scheduler, st->scheduler) == 0)
        started++;
    if (started < n) {
        rc = bt_err_set(BATON_ERROR, "cannot start all worker and dispatcher threads");
        baton_start_stop(c, 1);
    }
    for (size_t i = 0; i < started; i++) {
        void *result;
        pthread_join(threads[i], &result);
        if ((int)(intptr_t)result != BATON_OK && rc == BATON_OK)
            rc = (int)(intptr_t)result;
    }
    free(threads);
    atomic_store(&c->running, NULL);
    bt_client_wait_stops(c);
    free_start(st);
    return rc;
}

void baton_start_stop(baton_client *c, int immediate)
{
    atomic_fetch_add(&c->stops_under_way, 1);
    bt_start *st = atomic_load(&c->running);
    for (size_t i = 0; st && i < st->nworkers; i++)
        baton_worker_stop(st->workers[i], immediate);
    for (size_t i = 0; st && i < st->ndispatchers; i++)
        baton_dispatcher_stop(st->dispatchers[i]);
    if (st && st->scheduler)
        baton_scheduler_stop(st->scheduler);
    atomic_fetch_sub(&c->stops_under_way, 1);
}
