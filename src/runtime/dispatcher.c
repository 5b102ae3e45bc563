/* dispatcher.c: moves due scheduled jobs (delayed enqueues, retries) to ready in batches.
 * It sleeps until the earliest scheduled job is due or the polling interval passes,
 * whichever comes first, so a job due in 50 ms does not wait a whole interval. */
#include <stdlib.h>
#include <unistd.h>

#include "runtime/runtime.h"
#include "util/clock.h"
#include "util/err.h"

struct baton_dispatcher {
    baton_client *client;
    bt_store *store;
    double polling_interval;
    int batch_size;
    double maintenance_interval;
    atomic_int stopping;
    bt_waker waker;
    bt_log_limit store_errors; /* repeated lines held back */
};

int baton_dispatcher_new(baton_dispatcher **out, baton_client *client,
                         const baton_dispatcher_options *opts)
{
    *out = NULL;
    baton_dispatcher_options defaults = BATON_DISPATCHER_OPTIONS_INIT;
    const baton_dispatcher_options *o = opts ? opts : &defaults;
    if (o->version != BATON_DISPATCHER_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "unknown dispatcher options version %u", o->version);
    if (!(o->polling_interval > 0) || o->batch_size < 1 || !(o->concurrency_maintenance_interval > 0) ||
        !bt_seconds_valid(o->polling_interval) || !bt_seconds_valid(o->concurrency_maintenance_interval))
        return bt_err_set(BATON_EINVALID, "dispatcher polling interval, batch size and maintenance interval must be"
                                          " positive (intervals at most %.0e seconds)", BATON_SECONDS_MAX);
    baton_dispatcher *d = calloc(1, sizeof *d);
    if (!d)
        return bt_err_set(BATON_ERROR, "out of memory");
    d->client = client;
    d->polling_interval = o->polling_interval;
    d->batch_size = o->batch_size;
    d->maintenance_interval = o->concurrency_maintenance_interval;
    /* Lives as long as the dispatcher: a stop from any thread always finds it open. */
    int rc = bt_waker_init(&d->waker);
    if (rc != BATON_OK) {
        free(d);
        return rc;
    }
    *out = d;
    return BATON_OK;
}

void baton_dispatcher_free(baton_dispatcher *d)
{
    if (!d)
        return;
    bt_waker_close(&d->waker);
    free(d);
}

void baton_dispatcher_stop(baton_dispatcher *d)
{
    atomic_store(&d->stopping, 1);
    bt_waker_signal(&d->waker);
}

/* dispatch_once runs one batch in its own transaction. */
static int dispatch_once(bt_store *s, int batch, int *moved)
{
    int rc = bt_begin(s, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_dispatch(s, bt_now_ms(), batch, moved);
    return bt_end(s, rc);
}

int baton_dispatch_due(baton_client *client, int batch_size, int *moved_out)
{
    int moved = 0;
    int rc = dispatch_once(client->store, batch_size > 0 ? batch_size : 500, &moved);
    if (moved_out)
        *moved_out = moved;
    return rc;
}

int baton_maintain(baton_client *client, int *promoted_out)
{
    return bt_maintain_concurrency(client->store, bt_now_ms(), promoted_out);
}

int baton_dispatcher_run(baton_dispatcher *d)
{
    int64_t process_id = 0;
    int rc = bt_client_open_store(d->client, &d->store);
    if (rc == BATON_OK)
        rc = bt_process_register(d->store, "dispatcher", NULL, d->client->alive_threshold, &process_id);
    if (rc != BATON_OK)
        goto out;
    bt_log(d->client, BATON_LOG_INFO, "event=dispatcher.started process_id=%lld pid=%d",
           (long long)process_id, (int)getpid());
    bt_keepalive beats;
    rc = bt_keepalive_start(&beats, d->client, "dispatcher", NULL, 1, process_id);
    if (rc != BATON_OK) {
        bt_process_deregister(d->store, process_id);
        goto out;
    }
    bt_process_hook(d->client, BATON_PROCESS_DISPATCHER, BATON_PROCESS_START, process_id);
    int64_t next_maintenance = 0;
    while (!atomic_load(&d->stopping)) {
        if (bt_mono_ns() >= next_maintenance) {
            int promoted = 0;
            if (bt_maintain_concurrency(d->store, bt_now_ms(), &promoted) != BATON_OK)
                bt_log(d->client, BATON_LOG_ERROR, "event=maintenance.failed error=%s",
                       BT_LOG_VALUE(baton_error_last()));
            else if (promoted)
                bt_log(d->client, BATON_LOG_WARN, "event=maintenance.promoted count=%d", promoted);
            next_maintenance = bt_mono_ns() + (int64_t)(d->maintenance_interval * 1e9);
        }
        int moved = 0;
        rc = dispatch_once(d->store, d->batch_size, &moved);
        if (rc != BATON_OK)
            bt_log_limited(d->client, &d->store_errors, BATON_LOG_ERROR, "event=dispatcher.store_error error=%s",
                           BT_LOG_VALUE(baton_error_last()));
        else if (moved > 0)
            bt_log(d->client, BATON_LOG_DEBUG, "event=jobs.dispatched count=%d", moved);
        if (rc == BATON_OK && moved == d->batch_size)
            continue;
        double wait = d->polling_interval, maintain = (double)(next_maintenance - bt_mono_ns()) / 1e9;
        wait = maintain < wait ? (maintain > 0.001 ? maintain : 0.001) : wait;
        int64_t next_at = 0;
        if (rc == BATON_OK && bt_next_scheduled_at(d->store, &next_at) == BATON_OK && next_at > 0) {
            double until = (double)(next_at - bt_now_ms()) / 1000.0;
            if (until < wait)
                wait = until > 0.001 ? until : 0.001;
        }
        bt_wait_ready(&d->waker, -1, wait);
    }
    process_id = bt_keepalive_stop(&beats); /* no beat may register it again after this */
    bt_process_hook(d->client, BATON_PROCESS_DISPATCHER, BATON_PROCESS_STOP, process_id);
    rc = bt_process_deregister(d->store, process_id);
    bt_log(d->client, BATON_LOG_INFO, "event=dispatcher.stopped process_id=%lld", (long long)process_id);
    bt_process_hook(d->client, BATON_PROCESS_DISPATCHER, BATON_PROCESS_EXIT, process_id);
out:
    bt_store_close(d->store);
    d->store = NULL;
    return rc;
}
