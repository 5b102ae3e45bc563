/* perform.c: baton_perform_now, the inline run. The job is stored and claimed by a
 * short-lived "inline" process, so it shows in the history like any other job and a crash
 * mid-run leaves a claim that pruning can recover. */
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "util/clock.h"
#include "util/err.h"

static int store_and_claim(baton_client *c, int64_t process_id, const bt_new_job *nj,
                           bt_claimed_job *claimed)
{
    int64_t now = bt_now_ms(), id = 0;
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_enqueue_row(c->store, nj, now, &id);
    if (rc == BATON_OK)
        rc = bt_claim_job(c->store, process_id, id, now, claimed);
    if (rc == BATON_OK)
        return bt_commit(c->store);
    bt_rollback(c->store);
    return rc;
}

static int record(baton_client *c, int64_t process_id, const struct baton_job *job)
{
    const bt_claimed_job *cj = &job->claimed;
    bt_outcome o = {cj->id, job->succeeded, job->error, cj->attempt, cj->max_attempts, cj->backoff,
                    cj->backoff_base};
    int owned;
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_complete(c->store, process_id, &o, bt_now_ms(), &owned, NULL);
    if (rc == BATON_OK)
        return bt_commit(c->store);
    bt_rollback(c->store);
    return rc;
}

int baton_perform_now(baton_client *c, int64_t *id_out, const char *class_name, const char *args_json)
{
    baton_job_spec spec = {class_name, args_json, NULL};
    bt_new_job nj;
    int rc = bt_prepare_job(c, &spec, bt_now_ms(), &nj);
    int64_t process_id = 0;
    if (rc == BATON_OK)
        rc = bt_process_register(c->store, "inline", NULL, &process_id);
    if (rc != BATON_OK)
        return rc;
    struct baton_job *job = calloc(1, sizeof *job);
    rc = store_and_claim(c, process_id, &nj, &job->claimed);
    if (rc == BATON_OK) {
        if (id_out)
            *id_out = job->claimed.id;
        job->klass = bt_class_find(c, class_name);
        bt_job_perform(job);
        rc = record(c, process_id, job);
        if (rc == BATON_OK && !job->succeeded)
            rc = bt_err_set(BATON_ERROR, "job %lld failed: %s", (long long)job->claimed.id,
                            job->error ? job->error : "unknown error");
    }
    int drc = bt_process_deregister(c->store, process_id);
    bt_job_free(job);
    return rc != BATON_OK ? rc : drc;
}
