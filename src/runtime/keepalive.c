/* keepalive.c: a process's heartbeat on a thread and a connection of its own, on its own
 * schedule whatever the process's own loop is doing: a dispatcher's maintenance waiting
 * for a key's lock, a long batch, an inline job. A beat late by half the alive threshold
 * makes a supervisor kill its child, so the beat must not wait for the work. */
#include "runtime/runtime.h"
#include "util/err.h"

static void *keepalive_main(void *p)
{
    bt_keepalive *k = p;
    bt_store *s = NULL;
    while (!bt_wait_ready(&k->stop, -1, k->client->heartbeat_interval)) {
        if (!s) {
            if (bt_client_open_store(k->client, &s) != BATON_OK) { /* the database may come back */
                bt_log_limited(k->client, &k->errors, BATON_LOG_ERROR, "event=%s.heartbeat_failed error=%s",
                               k->kind, BT_LOG_VALUE(baton_error_last()));
                s = NULL;
                continue;
            }
            /* Pruning after the beat may wait for a dead process's keys: never past half an
             * interval, so the next beat keeps its time (the prune is tried again then). */
            if (s->ops->row_locks)
                bt_set_lock_timeout(s, (int)(k->client->heartbeat_interval * 500.0) + 1);
        }
        int64_t id = atomic_load(&k->process_id);
        if (k->reregister) {
            bt_liveness_keep(k->client, s, k->kind, k->metadata, k->client->alive_threshold, &id, &k->errors);
            atomic_store(&k->process_id, id);
        } else {
            int alive, pruned;
            if (bt_liveness_tick(s, id, k->client->alive_threshold, &alive, &pruned) != BATON_OK)
                bt_log_limited(k->client, &k->errors, BATON_LOG_ERROR, "event=%s.heartbeat_failed error=%s", k->kind,
                               BT_LOG_VALUE(baton_error_last()));
            else
                bt_log_pruned(k->client, &k->errors, pruned);
        }
    }
    bt_store_close(s);
    return NULL;
}

int bt_keepalive_start(bt_keepalive *k, baton_client *c, const char *kind, const char *metadata, int reregister,
                       int64_t process_id)
{
    *k = (bt_keepalive){.client = c, .kind = kind, .metadata = metadata, .reregister = reregister};
    atomic_store(&k->process_id, process_id);
    int rc = bt_waker_init(&k->stop);
    if (rc != BATON_OK)
        return rc;
    if (pthread_create(&k->thread, NULL, keepalive_main, k) != 0) {
        bt_waker_close(&k->stop);
        return bt_err_set(BATON_ERROR, "cannot start the heartbeat thread");
    }
    k->started = 1;
    return BATON_OK;
}

int64_t bt_keepalive_stop(bt_keepalive *k)
{
    if (k->started) {
        bt_waker_signal(&k->stop);
        pthread_join(k->thread, NULL);
        bt_waker_close(&k->stop);
        k->started = 0;
    }
    return atomic_load(&k->process_id);
}
