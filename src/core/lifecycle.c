/* lifecycle.c: every state change of a job, written once for all drivers.
 *
 * A job's state is the execution row that holds it (ready, claimed, scheduled, failed,
 * blocked) plus the status column of baton_jobs, which the same transaction updates so
 * reports never have to join five tables. Claims belong to a process: completing a job is
 * a delete of its claim row by (job, process), and a process that lost its claim (handed
 * back at shutdown, pruned as dead) finds nothing to delete and writes nothing. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "util/err.h"

static const char sql_insert_job[] =
    "INSERT INTO baton_jobs (queue_name, class_name, arguments, priority, status, scheduled_at,"
    " created_at, updated_at, max_attempts, backoff, backoff_base, timeout)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11) RETURNING id";
static const char sql_insert_ready[] =
    "INSERT INTO baton_ready_executions (job_id, queue_name, priority, created_at) VALUES (?, ?, ?, ?)";
static const char sql_insert_scheduled[] =
    "INSERT INTO baton_scheduled_executions (job_id, queue_name, priority, scheduled_at, created_at)"
    " VALUES (?, ?, ?, ?, ?)";

static int insert_execution(bt_store *s, int64_t id, const char *queue, int priority,
                            int64_t run_at, int64_t now)
{
    if (run_at <= now) {
        bt_val a[] = {BV_INT(id), BV_TEXT(queue), BV_INT(priority), BV_INT(now)};
        return bt_exec(s, sql_insert_ready, a, 4, NULL, NULL, NULL);
    }
    bt_val a[] = {BV_INT(id), BV_TEXT(queue), BV_INT(priority), BV_INT(run_at), BV_INT(now)};
    return bt_exec(s, sql_insert_scheduled, a, 5, NULL, NULL, NULL);
}

int bt_enqueue_row(bt_store *s, const bt_new_job *j, int64_t now, int64_t *id_out)
{
    int ready = j->run_at <= now;
    bt_val a[] = {BV_TEXT(j->queue), BV_TEXT(j->class_name),
                  BV_TEXTN(j->arguments, j->arguments_len), BV_INT(j->priority),
                  BV_TEXT(ready ? "ready" : "scheduled"), BV_INT(j->run_at), BV_INT(now),
                  BV_INT(j->max_attempts), BV_INT(j->backoff), BV_REAL(j->backoff_base),
                  BV_REAL(j->timeout)};
    int64_t id = 0;
    int rc = bt_query_int(s, sql_insert_job, a, 11, &id, 0);
    if (rc == BATON_OK)
        rc = insert_execution(s, id, j->queue, j->priority, j->run_at, now);
    if (rc == BATON_OK && id_out)
        *id_out = id;
    return rc;
}

/* ---- claiming ---- */

static const char sql_claim_queue[] =
    "DELETE FROM baton_ready_executions WHERE job_id IN ("
    " SELECT job_id FROM baton_ready_executions WHERE queue_name = ?1"
    " AND NOT EXISTS (SELECT 1 FROM baton_pauses p WHERE p.queue_name = ?1)"
    " ORDER BY priority, job_id LIMIT ?2) RETURNING job_id, priority";
static const char sql_claim_prefix[] =
    "DELETE FROM baton_ready_executions WHERE job_id IN ("
    " SELECT job_id FROM baton_ready_executions WHERE substr(queue_name, 1, length(?1)) = ?1"
    " AND queue_name NOT IN (SELECT queue_name FROM baton_pauses)"
    " ORDER BY priority, job_id LIMIT ?2) RETURNING job_id, priority";
static const char sql_claim_all[] =
    "DELETE FROM baton_ready_executions WHERE job_id IN ("
    " SELECT job_id FROM baton_ready_executions"
    " WHERE queue_name NOT IN (SELECT queue_name FROM baton_pauses)"
    " ORDER BY priority, job_id LIMIT ?2) RETURNING job_id, priority";
static const char sql_mark_claimed[] =
    "UPDATE baton_jobs SET status = 'claimed', attempts = attempts + 1, started_at = ?2,"
    " updated_at = ?2 WHERE id = ?1 RETURNING class_name, queue_name, arguments,"
    " concurrency_key, attempts, max_attempts, backoff, backoff_base, timeout";
static const char sql_insert_claimed[] =
    "INSERT INTO baton_claimed_executions (job_id, process_id, claimed_at) VALUES (?, ?, ?)";

typedef struct picked {
    int64_t id;
    int64_t priority;
} picked;

typedef struct pick_list {
    picked *items;
    int len;
} pick_list;

static int collect_pick(bt_row *row, void *payload)
{
    pick_list *l = payload;
    l->items[l->len++] = (picked){bt_col_int(row, 0), bt_col_int(row, 1)};
    return 0;
}

static int cmp_picked(const void *a, const void *b)
{
    const picked *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static char *dup_col(bt_row *row, int col)
{
    const char *t = bt_col_null(row, col) ? NULL : bt_col_text(row, col);
    return t ? strdup(t) : NULL;
}

static int fill_claimed(bt_row *row, void *payload)
{
    bt_claimed_job *j = payload;
    j->class_name = dup_col(row, 0);
    j->queue = dup_col(row, 1);
    j->arguments = dup_col(row, 2);
    j->concurrency_key = dup_col(row, 3);
    j->attempt = (int)bt_col_int(row, 4);
    j->max_attempts = (int)bt_col_int(row, 5);
    j->backoff = (int)bt_col_int(row, 6);
    j->backoff_base = bt_col_real(row, 7);
    j->timeout = bt_col_real(row, 8);
    return 1;
}

void bt_claimed_job_free(bt_claimed_job *j)
{
    free(j->class_name);
    free(j->queue);
    free(j->arguments);
    free(j->concurrency_key);
    memset(j, 0, sizeof *j);
}

/* claim_picked turns a job just deleted from the ready table into a claim of process_id. */
static int claim_picked(bt_store *s, int64_t process_id, int64_t id, int64_t now, bt_claimed_job *j)
{
    memset(j, 0, sizeof *j);
    j->id = id;
    bt_val m[] = {BV_INT(id), BV_INT(now)};
    int rc = bt_exec(s, sql_mark_claimed, m, 2, fill_claimed, j, NULL);
    if (rc == BATON_OK) {
        bt_val c[] = {BV_INT(id), BV_INT(process_id), BV_INT(now)};
        rc = bt_exec(s, sql_insert_claimed, c, 3, NULL, NULL, NULL);
    }
    return rc;
}

static const char sql_take_ready[] = "DELETE FROM baton_ready_executions WHERE job_id = ?";

int bt_claim_job(bt_store *s, int64_t process_id, int64_t id, int64_t now, bt_claimed_job *job)
{
    int64_t changes = 0;
    bt_val a[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_take_ready, a, 1, NULL, NULL, &changes);
    if (rc == BATON_OK && changes == 0)
        return bt_err_set(BATON_ESTATE, "job %lld is not ready", (long long)id);
    return rc == BATON_OK ? claim_picked(s, process_id, id, now, job) : rc;
}

int bt_claim(bt_store *s, int64_t process_id, char *const *queues, size_t nqueues, int max,
             int64_t now, bt_claimed_job *jobs, int *count)
{
    *count = 0;
    picked *buf = calloc((size_t)max, sizeof *buf);
    if (!buf)
        return bt_err_set(BATON_ERROR, "out of memory");
    int rc = BATON_OK;
    for (size_t q = 0; q < nqueues && *count < max && rc == BATON_OK; q++) {
        const char *entry = queues[q];
        size_t len = strlen(entry);
        const char *sql = sql_claim_queue;
        bt_val a[] = {BV_TEXT(entry), BV_INT(max - *count)};
        char *prefix = NULL;
        if (strcmp(entry, "*") == 0) {
            sql = sql_claim_all;
        } else if (len > 1 && entry[len - 1] == '*') {
            sql = sql_claim_prefix;
            prefix = strndup(entry, len - 1);
            a[0] = BV_TEXT(prefix);
        }
        pick_list picks = {buf, 0};
        rc = bt_exec(s, sql, a, 2, collect_pick, &picks, NULL);
        free(prefix);
        qsort(picks.items, (size_t)picks.len, sizeof *picks.items, cmp_picked);
        for (int i = 0; i < picks.len && rc == BATON_OK; i++)
            rc = claim_picked(s, process_id, picks.items[i].id, now, &jobs[(*count)++]);
    }
    free(buf);
    return rc;
}

/* ---- completing ---- */

static const char sql_delete_claim[] =
    "DELETE FROM baton_claimed_executions WHERE job_id = ? AND process_id = ?";
static const char sql_mark_finished[] =
    "UPDATE baton_jobs SET status = 'finished', finished_at = ?2, updated_at = ?2, error = NULL"
    " WHERE id = ?1";
static const char sql_mark_retry[] =
    "UPDATE baton_jobs SET status = ?2, scheduled_at = ?3, updated_at = ?4, error = ?5"
    " WHERE id = ?1 RETURNING queue_name, priority";
static const char sql_mark_failed[] =
    "UPDATE baton_jobs SET status = 'failed', updated_at = ?2, error = ?3 WHERE id = ?1";
static const char sql_insert_failed[] =
    "INSERT INTO baton_failed_executions (job_id, error, created_at) VALUES (?, ?, ?)";

typedef struct queue_priority {
    char *queue;
    int priority;
} queue_priority;

static int read_queue_priority(bt_row *row, void *payload)
{
    queue_priority *qp = payload;
    qp->queue = dup_col(row, 0);
    qp->priority = (int)bt_col_int(row, 1);
    return 1;
}

/* Thread-local xorshift: jitter needs no quality, only no shared state between threads. */
static double jitter_fraction(void)
{
    static _Thread_local uint64_t state;
    if (state == 0)
        state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid() ^ (uintptr_t)&state;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state % 10000) / 10000.0;
}

int64_t bt_backoff_ms(int backoff, double base, int attempt)
{
    double secs;
    switch (backoff) {
    case BATON_BACKOFF_LINEAR: secs = base * attempt; break;
    case BATON_BACKOFF_FIXED: secs = base; break;
    default: {
        int shift = attempt > 1 ? attempt - 1 : 0;
        secs = base * (double)(1ull << (shift > 40 ? 40 : shift));
        secs += secs * 0.15 * jitter_fraction();
    }
    }
    return (int64_t)(secs * 1000.0);
}

int bt_complete(bt_store *s, int64_t process_id, const bt_outcome *o, int64_t now, int *owned,
                int64_t *retry_at_out)
{
    int64_t changes = 0;
    *owned = 0;
    if (retry_at_out)
        *retry_at_out = 0;
    bt_val d[] = {BV_INT(o->job_id), BV_INT(process_id)};
    int rc = bt_exec(s, sql_delete_claim, d, 2, NULL, NULL, &changes);
    if (rc != BATON_OK || changes == 0)
        return rc;
    *owned = 1;
    if (o->succeeded) {
        bt_val a[] = {BV_INT(o->job_id), BV_INT(now)};
        return bt_exec(s, sql_mark_finished, a, 2, NULL, NULL, NULL);
    }
    if (o->attempt < o->max_attempts) {
        int64_t run_at = now + bt_backoff_ms(o->backoff, o->backoff_base, o->attempt);
        bt_val a[] = {BV_INT(o->job_id), BV_TEXT(run_at <= now ? "ready" : "scheduled"),
                      BV_INT(run_at), BV_INT(now), BV_TEXT(o->error)};
        queue_priority qp = {0};
        rc = bt_exec(s, sql_mark_retry, a, 5, read_queue_priority, &qp, NULL);
        if (rc == BATON_OK)
            rc = insert_execution(s, o->job_id, qp.queue, qp.priority, run_at, now);
        free(qp.queue);
        if (retry_at_out)
            *retry_at_out = run_at;
        return rc;
    }
    bt_val a[] = {BV_INT(o->job_id), BV_INT(now), BV_TEXT(o->error)};
    rc = bt_exec(s, sql_mark_failed, a, 3, NULL, NULL, NULL);
    if (rc == BATON_OK) {
        bt_val f[] = {BV_INT(o->job_id), BV_TEXT(o->error), BV_INT(now)};
        rc = bt_exec(s, sql_insert_failed, f, 3, NULL, NULL, NULL);
    }
    return rc;
}

/* ---- becoming ready again ---- */

static const char sql_mark_ready[] =
    "UPDATE baton_jobs SET status = 'ready', scheduled_at = ?2, updated_at = ?2 WHERE id = ?1"
    " RETURNING queue_name, priority";

/* make_ready turns a job that just left its previous execution row into a ready one. */
static int make_ready(bt_store *s, int64_t id, int64_t now)
{
    queue_priority qp = {0};
    bt_val a[] = {BV_INT(id), BV_INT(now)};
    int rc = bt_exec(s, sql_mark_ready, a, 2, read_queue_priority, &qp, NULL);
    if (rc == BATON_OK && qp.queue)
        rc = insert_execution(s, id, qp.queue, qp.priority, now, now);
    free(qp.queue);
    return rc;
}

typedef struct id_list {
    int64_t *ids;
    size_t len, cap;
} id_list;

static int collect_id(bt_row *row, void *payload)
{
    id_list *l = payload;
    if (l->len == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->ids = realloc(l->ids, l->cap * sizeof *l->ids);
    }
    l->ids[l->len++] = bt_col_int(row, 0);
    return 0;
}

static int make_all_ready(bt_store *s, id_list *l, int64_t now)
{
    int rc = BATON_OK;
    for (size_t i = 0; i < l->len && rc == BATON_OK; i++)
        rc = make_ready(s, l->ids[i], now);
    return rc;
}

static const char sql_release_all[] =
    "DELETE FROM baton_claimed_executions WHERE process_id = ? RETURNING job_id";
static const char sql_release_one[] =
    "DELETE FROM baton_claimed_executions WHERE process_id = ? AND job_id = ? RETURNING job_id";

int bt_release_claims(bt_store *s, int64_t process_id, const int64_t *job_ids, size_t n,
                      int64_t now, int64_t *released_out)
{
    id_list l = {0};
    int rc = BATON_OK;
    if (!job_ids) {
        bt_val a[] = {BV_INT(process_id)};
        rc = bt_exec(s, sql_release_all, a, 1, collect_id, &l, NULL);
    }
    for (size_t i = 0; job_ids && i < n && rc == BATON_OK; i++) {
        bt_val a[] = {BV_INT(process_id), BV_INT(job_ids[i])};
        rc = bt_exec(s, sql_release_one, a, 2, collect_id, &l, NULL);
    }
    if (rc == BATON_OK)
        rc = make_all_ready(s, &l, now);
    if (released_out)
        *released_out = (int64_t)l.len;
    free(l.ids);
    return rc;
}

static const char sql_take_due[] =
    "DELETE FROM baton_scheduled_executions WHERE job_id IN ("
    " SELECT job_id FROM baton_scheduled_executions WHERE scheduled_at <= ?1"
    " ORDER BY scheduled_at, priority, job_id LIMIT ?2) RETURNING job_id";

int bt_dispatch(bt_store *s, int64_t now, int batch, int *moved_out)
{
    id_list l = {0};
    bt_val a[] = {BV_INT(now), BV_INT(batch)};
    int rc = bt_exec(s, sql_take_due, a, 2, collect_id, &l, NULL);
    if (rc == BATON_OK)
        rc = make_all_ready(s, &l, now);
    if (moved_out)
        *moved_out = (int)l.len;
    free(l.ids);
    return rc;
}

static const char sql_next_scheduled[] = "SELECT MIN(scheduled_at) FROM baton_scheduled_executions";

int bt_next_scheduled_at(bt_store *s, int64_t *at_out)
{
    return bt_query_int(s, sql_next_scheduled, NULL, 0, at_out, 0);
}

/* ---- operator actions ---- */

static const char sql_job_status[] = "SELECT status FROM baton_jobs WHERE id = ?";

static int read_text0(bt_row *row, void *payload)
{
    *(char **)payload = dup_col(row, 0);
    return 1;
}

/* job_status reads a job's status (malloc'ed) or fails with BATON_ENOTFOUND. */
static int job_status(bt_store *s, int64_t id, char **status)
{
    *status = NULL;
    bt_val a[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_job_status, a, 1, read_text0, status, NULL);
    if (rc == BATON_OK && !*status)
        rc = bt_err_set(BATON_ENOTFOUND, "job %lld not found", (long long)id);
    return rc;
}

static const char sql_delete_failed[] = "DELETE FROM baton_failed_executions WHERE job_id = ?";

int bt_retry_failed(bt_store *s, int64_t id, int64_t now)
{
    char *status;
    int rc = job_status(s, id, &status);
    if (rc != BATON_OK)
        return rc;
    if (strcmp(status, "failed") != 0)
        rc = bt_err_set(BATON_ESTATE, "job %lld is %s, not failed", (long long)id, status);
    free(status);
    bt_val a[] = {BV_INT(id)};
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_delete_failed, a, 1, NULL, NULL, NULL);
    return rc == BATON_OK ? make_ready(s, id, now) : rc;
}

static const char *const sql_delete_waiting[] = {
    "DELETE FROM baton_ready_executions WHERE job_id = ?",
    "DELETE FROM baton_scheduled_executions WHERE job_id = ?",
    "DELETE FROM baton_blocked_executions WHERE job_id = ?",
    "DELETE FROM baton_failed_executions WHERE job_id = ?",
};
static const char sql_mark_discarded[] =
    "UPDATE baton_jobs SET status = 'discarded', finished_at = ?2, updated_at = ?2, error = ?3"
    " WHERE id = ?1";

int bt_discard(bt_store *s, int64_t id, const char *reason, int64_t now)
{
    char *status;
    int rc = job_status(s, id, &status);
    if (rc != BATON_OK)
        return rc;
    if (strcmp(status, "claimed") == 0)
        rc = bt_err_set(BATON_ESTATE, "job %lld is running; it can be discarded once it has failed",
                        (long long)id);
    else if (strcmp(status, "finished") == 0 || strcmp(status, "discarded") == 0)
        rc = bt_err_set(BATON_ESTATE, "job %lld is already %s", (long long)id, status);
    free(status);
    bt_val a[] = {BV_INT(id)};
    for (size_t i = 0; rc == BATON_OK && i < sizeof sql_delete_waiting / sizeof *sql_delete_waiting; i++)
        rc = bt_exec(s, sql_delete_waiting[i], a, 1, NULL, NULL, NULL);
    if (rc == BATON_OK) {
        bt_val d[] = {BV_INT(id), BV_INT(now), BV_TEXT(reason)};
        rc = bt_exec(s, sql_mark_discarded, d, 3, NULL, NULL, NULL);
    }
    return rc;
}
