/* perform.c: baton_perform_now, the inline run. The job is stored and claimed by a
 * short-lived "inline" process, so it shows in the history like any other job, and it
 * takes a slot of its concurrency key like any other job: when the key is full it waits
 * as a blocked job that is promoted straight into this process's claim. */
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "util/clock.h"
#include "util/err.h"

static int store_job(baton_client *c, int64_t process_id, const bt_new_job *nj, int64_t *id,
                     bt_landing *landing)
{
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_enqueue_rows(c->store, nj, 1, bt_now_ms(), process_id, id, landing);
    return bt_end(c->store, rc);
}

/* claim_or_give_up reads the claim once the job was promoted, or, past the deadline,
 * discards the still-blocked job so no worker runs it later. Giving up, it takes the key's
 * lock before it looks: a promotion into this claim in progress then commits first and is
 * found, instead of meeting a discard of a job that is claimed by then. */
static int claim_or_give_up(baton_client *c, int64_t process_id, int64_t id, int give_up,
                            bt_claimed_job *claimed, int *found)
{
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK && give_up)
        rc = bt_lock_job_key(c->store, id);
    if (rc == BATON_OK)
        rc = bt_read_claim(c->store, process_id, id, claimed, found);
    if (rc == BATON_OK && !*found && give_up)
        rc = bt_discard(c->store, id, "inline perform gave up waiting for a slot", bt_now_ms());
    return bt_end(c->store, rc);
}

static int record(baton_client *c, int64_t process_id, const struct baton_job *job)
{
    const bt_claimed_job *cj = &job->claimed;
    /* A run its caller stopped is not retried later: an inline job runs now or never. */
    int stopped = atomic_load(&c->perform_stopped) && !job->succeeded;
    bt_outcome o = {cj->id, job->succeeded, job->error, cj->attempt, stopped ? cj->attempt : cj->max_attempts,
                    cj->backoff, cj->backoff_base, cj->concurrency_key};
    int owned = 0;
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_complete(c->store, process_id, &o, 1, bt_now_ms(), &owned, NULL);
    rc = bt_end(c->store, rc);
    if (rc == BATON_OK && !owned) /* declared dead meanwhile: the pruner settled the job */
        rc = bt_err_set(BATON_ESTATE, "job %lld: this run lost its claim (its process was declared dead);"
                                      " its outcome was not recorded", (long long)cj->id);
    return rc;
}

/* wait_for_claim polls until the blocked job id is promoted into this process's claim.
 * Heartbeats keep the waiting process alive in the eyes of pruning. */
static int wait_for_claim(baton_client *c, int64_t process_id, int64_t id, double wait_timeout,
                          bt_claimed_job *claimed)
{
    int64_t deadline = bt_mono_ns() + (int64_t)(wait_timeout * 1e9);
    double interval = 0.002;
    for (;;) {
        int stopped = atomic_load(&c->perform_stopped);
        int give_up = stopped || bt_mono_ns() >= deadline, found = 0, alive;
        int rc = claim_or_give_up(c, process_id, id, give_up, claimed, &found);
        if (rc != BATON_OK || found)
            return rc;
        if (stopped)
            return bt_err_set(BATON_ERROR, "job %lld: stopped while waiting for a slot; discarded", (long long)id);
        if (give_up)
            return bt_err_set(BATON_ERROR, "job %lld: no free slot for its concurrency key within %gs",
                              (long long)id, wait_timeout);
        bt_process_heartbeat(c->store, process_id, c->alive_threshold, &alive);
        bt_sleep(interval);
        interval = interval < 0.05 ? interval * 2 : 0.05;
    }
}

int baton_perform_wait(baton_client *c, int64_t *id_out, const char *class_name,
                       const char *args_json, double wait_timeout)
{
    if (!bt_seconds_valid(wait_timeout))
        return bt_err_set(BATON_EINVALID, "wait timeout must be from 0 to %.0e seconds", BATON_SECONDS_MAX);
    baton_job_spec spec = {class_name, args_json, NULL};
    bt_new_job nj;
    int rc = bt_prepare_job(c, &spec, bt_now_ms(), &nj);
    int64_t process_id = 0;
    if (rc == BATON_OK)
        rc = bt_process_register(c->store, "inline", NULL, c->alive_threshold, &process_id);
    if (rc != BATON_OK) {
        bt_new_job_clear(&nj);
        return rc;
    }
    struct baton_job *job = calloc(1, sizeof *job);
    int64_t id = 0;
    bt_landing landing;
    rc = store_job(c, process_id, &nj, &id, &landing);
    bt_new_job_clear(&nj);
    if (rc == BATON_OK && id_out)
        *id_out = id;
    if (rc == BATON_OK && landing.state == BATON_JOB_DISCARDED)
        rc = bt_err_set(BATON_ERROR, "job %lld discarded: no free slot for its concurrency key", (long long)id);
    if (rc == BATON_OK)
        rc = wait_for_claim(c, process_id, id, wait_timeout, &job->claimed);
    if (rc == BATON_OK) {
        bt_slot_checker checker;
        bt_slot_checker_init(&checker, c, process_id);
        /* A long inline run must not look dead, nor its slot be handed on while it runs:
         * the beats renew its lease too. No beats (no thread) leaves the job to its lease. */
        bt_keepalive k;
        bt_keepalive_start(&k, c, "inline", NULL, 0, process_id);
        job->klass = bt_class_find(c, class_name);
        job->checker = &checker;
        atomic_store(&c->performing, job);
        if (atomic_load(&c->perform_stopped)) /* a stop that came while it was claimed */
            atomic_store(&job->cancelled, 1);
        bt_job_perform(c, job);
        atomic_store(&c->performing, NULL);
        bt_client_wait_stops(c);
        bt_keepalive_stop(&k);
        bt_slot_checker_close(&checker);
        rc = record(c, process_id, job);
        if (rc == BATON_OK && !job->succeeded)
            rc = bt_err_set(BATON_ERROR, "job %lld failed: %s", (long long)id,
                            job->error ? job->error : "unknown error");
    }
    int drc = bt_process_deregister(c->store, process_id);
    bt_job_free(job);
    atomic_store(&c->perform_stopped, 0);
    return rc != BATON_OK ? rc : drc;
}

void baton_perform_stop(baton_client *c)
{
    atomic_fetch_add(&c->stops_under_way, 1);
    atomic_store(&c->perform_stopped, 1);
    struct baton_job *job = atomic_load(&c->performing);
    if (job)
        atomic_store(&job->cancelled, 1);
    atomic_fetch_sub(&c->stops_under_way, 1);
}

int baton_perform_now(baton_client *c, int64_t *id_out, const char *class_name, const char *args_json)
{
    return baton_perform_wait(c, id_out, class_name, args_json, 60.0);
}
