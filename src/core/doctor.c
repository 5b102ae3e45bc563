/* doctor.c: finds states that the lifecycle never leaves behind by itself but that crashes,
 * outages or hand edits can, explains each, and repairs the ones that can be repaired
 * without running any key past its limit.
 *
 * Every check is one query; a repair goes through the same lifecycle steps as normal work
 * (prune a process, promote a key, readmit a job), so it inherits their guarantees. A key
 * over its limit is reported but not "repaired": the jobs holding it may be running, and
 * only their ends can bring the key back under its limit. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/report.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/grow.h"

typedef struct doctor {
    bt_store *store;
    int64_t now, threshold_ms; /* for processes that carry no threshold of their own */
    int repair;
    json_t *problems, *repaired;
    int rc;
} doctor;

static void problem(doctor *d, const char *kind, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(doctor *d, const char *kind, json_t *fields, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_object_set_new(fields, "kind", json_string(kind));
    json_object_set_new(fields, "detail", json_string(detail));
    json_array_append_new(d->problems, fields);
}

static void repaired(doctor *d, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void repaired(doctor *d, const char *kind, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_array_append_new(d->repaired, json_pack("{s:s, s:s}", "kind", kind, "detail", detail));
}

/* ---- claims of dead processes ---- */

/* Dead as every process judges it, so the doctor prunes nobody a live process would not. */
static const char sql_dead_claimers[] =
    "SELECT p.id, p.pid, p.hostname, baton_clock() - p.beat, COUNT(c.job_id) FROM baton_processes p"
    " JOIN baton_claimed_executions c ON c.process_id = p.id WHERE " BT_SQL_DEAD("p", "?1")
    " GROUP BY p.id, p.pid, p.hostname, p.beat ORDER BY p.id";

static int on_dead_claimer(bt_row *row, void *payload)
{
    doctor *d = payload;
    int64_t id = bt_col_int(row, 0);
    problem(d, "dead_process_claims", json_pack("{s:I}", "process_id", (json_int_t)id),
            "process %lld (pid %lld on %s) has not heartbeat for %.0fs and still claims %lld job(s)",
            (long long)id, (long long)bt_col_int(row, 1), bt_col_text(row, 2),
            (double)bt_col_int(row, 3) / 1000.0, (long long)bt_col_int(row, 4));
    return 0;
}

/* Silent past its threshold, but no live process has beaten for as long: it may be the
 * database that was away (an outage nobody could heartbeat through), so it is not dead yet. */
static const char sql_silent_claimers[] =
    "SELECT p.id, p.pid, p.hostname, baton_clock() - p.beat, COUNT(c.job_id) FROM baton_processes p"
    " JOIN baton_claimed_executions c ON c.process_id = p.id WHERE " BT_SQL_STALE("p", "?1")
    " AND NOT " BT_SQL_DEAD("p", "?1") " GROUP BY p.id, p.pid, p.hostname, p.beat ORDER BY p.id";

static int on_silent_claimer(bt_row *row, void *payload)
{
    doctor *d = payload;
    int64_t id = bt_col_int(row, 0);
    problem(d, "silent_process_claims", json_pack("{s:I}", "process_id", (json_int_t)id),
            "process %lld (pid %lld on %s) has not heartbeat for %.0fs and still claims %lld job(s); no live"
            " process has heartbeat without a break for as long, so the database may have been away: it is"
            " pruned once one has (a running worker, dispatcher or supervisor)",
            (long long)id, (long long)bt_col_int(row, 1), bt_col_text(row, 2),
            (double)bt_col_int(row, 3) / 1000.0, (long long)bt_col_int(row, 4));
    return 0;
}

static const char sql_dead_claimer_ids[] =
    "SELECT DISTINCT p.id FROM baton_processes p JOIN baton_claimed_executions c ON c.process_id = p.id"
    " WHERE " BT_SQL_DEAD("p", "?1");

static void check_dead_claims(doctor *d)
{
    bt_val a[] = {BV_INT(d->threshold_ms)};
    if (!d->repair) {
        d->rc = bt_exec(d->store, sql_dead_claimers, a, 1, on_dead_claimer, d, NULL);
        if (d->rc == BATON_OK)
            d->rc = bt_exec(d->store, sql_silent_claimers, a, 1, on_silent_claimer, d, NULL);
        return;
    }
    /* Read first, then each process pruned in a transaction of its own (bt_prune_if_dead),
     * judged again once its keys are locked: it may have beaten meanwhile. */
    bt_id_list dead = {0};
    d->rc = bt_begin(d->store, BT_TXN_READ);
    if (d->rc == BATON_OK)
        d->rc = bt_exec(d->store, sql_dead_claimer_ids, a, 1, bt_row_collect_id, &dead, NULL);
    d->rc = bt_end(d->store, d->rc);
    for (size_t i = 0; i < dead.len && d->rc == BATON_OK; i++) {
        int pruned = 0;
        d->rc = bt_prune_if_dead(d->store, dead.ids[i], d->threshold_ms, d->now, &pruned);
        if (d->rc == BATON_OK && pruned)
            repaired(d, "dead_process_claims",
                     "pruned process %lld: its jobs failed as \"process pruned\" (retry policy applies)"
                     " and their slots went to the next jobs", (long long)dead.ids[i]);
    }
    free(dead.ids);
}

/* ---- jobs whose status has no execution row ---- */

#define SQL_STATELESS(where)                                                                                      \
    "SELECT j.id, j.status FROM baton_jobs j WHERE " where "("                                                     \
    "(j.status = 'ready' AND NOT EXISTS (SELECT 1 FROM baton_ready_executions e WHERE e.job_id = j.id))"           \
    " OR (j.status = 'claimed' AND NOT EXISTS (SELECT 1 FROM baton_claimed_executions e WHERE e.job_id = j.id))"   \
    " OR (j.status = 'blocked' AND NOT EXISTS (SELECT 1 FROM baton_blocked_executions e WHERE e.job_id = j.id))"   \
    " OR (j.status = 'scheduled' AND NOT EXISTS (SELECT 1 FROM baton_scheduled_executions e WHERE e.job_id = j.id))" \
    " OR (j.status = 'failed' AND NOT EXISTS (SELECT 1 FROM baton_failed_executions e WHERE e.job_id = j.id))"     \
    ") ORDER BY j.id"
static const char sql_stateless[] = SQL_STATELESS("");
static const char sql_stateless_one[] = SQL_STATELESS("j.id = ? AND ");

typedef struct stateless_job {
    int64_t id;
    char status[16];
} stateless_job;

typedef struct stateless_list {
    stateless_job *items;
    size_t len, cap;
} stateless_list;

static int collect_stateless(bt_row *row, void *payload)
{
    stateless_list *l = payload;
    if (bt_grow(&l->items, &l->cap, l->len, sizeof *l->items) != 0)
        return -1;
    stateless_job *j = &l->items[l->len++];
    j->id = bt_col_int(row, 0);
    snprintf(j->status, sizeof j->status, "%s", bt_col_text(row, 1));
    return 0;
}

/* requeue_lost repairs one job found in no list, in a transaction of its own that locks
 * its key first and finds it still in no list. */
static void requeue_lost(doctor *d, int64_t id)
{
    stateless_list l = {0};
    bt_val a[] = {BV_INT(id)};
    d->rc = bt_begin(d->store, BT_TXN_WRITE);
    if (d->rc == BATON_OK)
        d->rc = bt_lock_job_key(d->store, id);
    if (d->rc == BATON_OK)
        d->rc = bt_exec(d->store, sql_stateless_one, a, 1, collect_stateless, &l, NULL);
    /* A failed job stays failed; anything else goes through admission again, like a
     * retry: it waits for a slot if its key is full. */
    if (d->rc == BATON_OK && l.len)
        d->rc = bt_requeue_lost(d->store, id, l.items[0].status, d->now);
    d->rc = bt_end(d->store, d->rc);
    if (d->rc == BATON_OK && l.len)
        repaired(d, "job_in_no_state", "job %lld (%s in no list) %s", (long long)id, l.items[0].status,
                 strcmp(l.items[0].status, "failed") == 0 ? "listed as failed again" : "queued again through admission");
    free(l.items);
}

static void check_stateless_jobs(doctor *d)
{
    stateless_list l = {0};
    if (d->repair)
        d->rc = bt_begin(d->store, BT_TXN_READ);
    if (d->rc == BATON_OK)
        d->rc = bt_exec(d->store, sql_stateless, NULL, 0, collect_stateless, &l, NULL);
    if (d->repair)
        d->rc = bt_end(d->store, d->rc);
    for (size_t i = 0; i < l.len && d->rc == BATON_OK; i++) {
        if (d->repair)
            requeue_lost(d, l.items[i].id);
        else
            problem(d, "job_in_no_state", json_pack("{s:I}", "job_id", (json_int_t)l.items[i].id),
                    "job %lld says %s but is in no %s list: no process will ever run or settle it",
                    (long long)l.items[i].id, l.items[i].status, l.items[i].status);
    }
    free(l.items);
}

/* ---- slots held by jobs that are neither ready nor running ---- */

static const char sql_stale_holders[] =
    "SELECT h.key, h.job_id, j.status FROM baton_semaphore_holders h JOIN baton_jobs j ON j.id = h.job_id"
    " WHERE j.status NOT IN ('ready', 'claimed') ORDER BY h.key, h.job_id";

static int on_stale_holder(bt_row *row, void *payload)
{
    doctor *d = payload;
    problem(d, "stale_holder", json_pack("{s:s, s:I}", "key", bt_col_text(row, 0), "job_id", (json_int_t)bt_col_int(row, 1)),
            "key %s: job %lld is %s but still holds a slot", bt_col_text(row, 0), (long long)bt_col_int(row, 1),
            bt_col_text(row, 2));
    return 0;
}

/* ---- blocked jobs whose key has a free slot ---- */

static const char sql_blocked_with_room[] =
    "SELECT b.concurrency_key, COUNT(*), MIN(j.concurrency_limit),"
    " (SELECT COUNT(*) FROM baton_semaphore_holders h WHERE h.key = b.concurrency_key)"
    " FROM baton_blocked_executions b JOIN baton_jobs j ON j.id = b.job_id GROUP BY b.concurrency_key"
    " HAVING (SELECT COUNT(*) FROM baton_semaphore_holders h WHERE h.key = b.concurrency_key) < MAX(j.concurrency_limit)"
    " ORDER BY b.concurrency_key";

static int on_blocked_with_room(bt_row *row, void *payload)
{
    doctor *d = payload;
    problem(d, "blocked_with_free_slot", json_pack("{s:s}", "key", bt_col_text(row, 0)),
            "key %s: %lld job(s) blocked while only %lld of %lld slots are held", bt_col_text(row, 0),
            (long long)bt_col_int(row, 1), (long long)bt_col_int(row, 3), (long long)bt_col_int(row, 2));
    return 0;
}

/* Both slot checks repair the same way: concurrency maintenance frees stale slots and
 * fills free ones from the blocked jobs, never past a limit. */
static void check_slots(doctor *d)
{
    if (!d->repair) {
        d->rc = bt_exec(d->store, sql_stale_holders, NULL, 0, on_stale_holder, d, NULL);
        if (d->rc == BATON_OK)
            d->rc = bt_exec(d->store, sql_blocked_with_room, NULL, 0, on_blocked_with_room, d, NULL);
        return;
    }
    int64_t stale = 0, waiting = 0;
    d->rc = bt_begin(d->store, BT_TXN_READ);
    if (d->rc == BATON_OK)
        d->rc = bt_exec(d->store, sql_stale_holders, NULL, 0, bt_row_count, &stale, NULL);
    if (d->rc == BATON_OK)
        d->rc = bt_exec(d->store, sql_blocked_with_room, NULL, 0, bt_row_count, &waiting, NULL);
    d->rc = bt_end(d->store, d->rc);
    if (d->rc != BATON_OK || (!stale && !waiting))
        return;
    int promoted = 0;
    d->rc = bt_repair_slots(d->store, d->now, &promoted);
    if (d->rc == BATON_OK)
        repaired(d, "slots", "freed %lld stale slot(s); %d blocked job(s) admitted into free slots", (long long)stale,
                 promoted);
}

/* ---- keys over their limit ---- */

static const char sql_over_limit[] =
    "SELECT h.key, COUNT(*), MIN(j.concurrency_limit) FROM baton_semaphore_holders h"
    " JOIN baton_jobs j ON j.id = h.job_id GROUP BY h.key HAVING COUNT(*) > MIN(j.concurrency_limit)"
    " ORDER BY h.key";

static int on_over_limit(bt_row *row, void *payload)
{
    doctor *d = payload;
    problem(d, "key_over_limit", json_pack("{s:s}", "key", bt_col_text(row, 0)),
            "key %s: %lld jobs hold slots, limit %lld (an operator forced it, or the limit was lowered);"
            " it heals as they end", bt_col_text(row, 0), (long long)bt_col_int(row, 1), (long long)bt_col_int(row, 2));
    return 0;
}

static void diagnose(doctor *d)
{
    check_dead_claims(d);
    if (d->rc == BATON_OK)
        check_stateless_jobs(d);
    if (d->rc == BATON_OK)
        check_slots(d);
    if (d->rc == BATON_OK)
        d->rc = bt_exec(d->store, sql_over_limit, NULL, 0, on_over_limit, d, NULL);
}

/* repair fixes what diagnose would report: dead processes one by one, lost jobs one by
 * one, then the slots key by key (bt_repair_slots), each in a transaction of its own that
 * locks its keys first, so waiting for one key's lock holds up no other. Keys over their
 * limit heal as their jobs end. */
static void repair_all(doctor *d)
{
    d->repair = 1;
    check_dead_claims(d);
    if (d->rc == BATON_OK)
        check_stateless_jobs(d);
    if (d->rc == BATON_OK)
        check_slots(d);
    d->repair = 0;
}

int baton_doctor_json(baton_client *c, int repair, char **json_out, int *problems_left)
{
    *json_out = NULL;
    int64_t now = bt_now_ms();
    doctor d = {c->store, now, (int64_t)(c->alive_threshold * 1000.0), 0, json_array(), json_array(), BATON_OK};
    if (repair)
        repair_all(&d);
    /* What is left after the repairs (or everything, without them). */
    if (d.rc == BATON_OK) {
        d.rc = bt_begin(c->store, BT_TXN_READ);
        if (d.rc == BATON_OK) {
            diagnose(&d);
            bt_rollback(c->store);
        }
    }
    if (d.rc != BATON_OK) {
        json_decref(d.problems);
        json_decref(d.repaired);
        return d.rc;
    }
    if (problems_left)
        *problems_left = (int)json_array_size(d.problems);
    return bt_json_dump(json_pack("{s:o, s:o}", "problems", d.problems, "repaired", d.repaired), json_out);
}
