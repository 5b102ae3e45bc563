/* admin.c: operator reports (JSON) and actions. Reports read in one read transaction so
 * they see one consistent state; actions run in one write transaction each. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/report.h"
#include "util/clock.h"
#include "util/err.h"

static const char *const statuses[] = {"scheduled", "ready", "blocked", "claimed",
                                       "finished", "failed", "discarded"};

json_t *bt_json_time(bt_row *row, int col)
{
    if (bt_col_null(row, col))
        return json_null();
    char buf[BT_ISO_LEN];
    bt_iso8601(bt_col_int(row, col), buf);
    return json_string(buf);
}

json_t *bt_json_text(bt_row *row, int col)
{
    return bt_col_null(row, col) ? json_null() : json_string(bt_col_text(row, col));
}

#define JOB_COLUMNS                                                                              \
    "id, class_name, queue_name, priority, status, arguments, concurrency_key, attempts, error," \
    " scheduled_at, created_at, finished_at, started_at, updated_at, max_attempts,"              \
    " fencing_token, (SELECT b.created_at FROM baton_blocked_executions b WHERE b.job_id = baton_jobs.id),"  \
    " admitted_by"

static int append_job(bt_row *row, void *payload)
{
    json_t *list = payload;
    const char *args = bt_col_text(row, 5);
    json_t *parsed = json_loads(args ? args : "null", JSON_DECODE_ANY, NULL);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(bt_col_int(row, 0)));
    json_object_set_new(o, "class", bt_json_text(row, 1));
    json_object_set_new(o, "queue", bt_json_text(row, 2));
    json_object_set_new(o, "priority", json_integer(bt_col_int(row, 3)));
    json_object_set_new(o, "status", bt_json_text(row, 4));
    json_object_set_new(o, "arguments", parsed ? parsed : bt_json_text(row, 5));
    json_object_set_new(o, "concurrency_key", bt_json_text(row, 6));
    json_object_set_new(o, "attempts", json_integer(bt_col_int(row, 7)));
    json_object_set_new(o, "max_attempts", json_integer(bt_col_int(row, 14)));
    json_object_set_new(o, "error", bt_json_text(row, 8));
    json_object_set_new(o, "fencing_token", bt_col_null(row, 15) ? json_null() : json_integer(bt_col_int(row, 15)));
    json_object_set_new(o, "blocked_since", bt_json_time(row, 16));
    json_object_set_new(o, "admitted_by", bt_json_text(row, 17));
    json_object_set_new(o, "scheduled_at", bt_json_time(row, 9));
    json_object_set_new(o, "created_at", bt_json_time(row, 10));
    json_object_set_new(o, "started_at", bt_json_time(row, 12));
    json_object_set_new(o, "updated_at", bt_json_time(row, 13));
    json_object_set_new(o, "finished_at", bt_json_time(row, 11));
    json_array_append_new(list, o);
    return 0;
}

int bt_json_dump(json_t *value, char **json_out)
{
    /* Nine digits keep milliseconds of any duration without binary noise. */
    *json_out = json_dumps(value, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(9));
    json_decref(value);
    return *json_out ? BATON_OK : bt_err_set(BATON_ERROR, "out of memory");
}

int bt_read_report(baton_client *c, int (*fn)(bt_store *, void *), void *arg)
{
    int rc = bt_begin(c->store, BT_TXN_READ);
    if (rc != BATON_OK)
        return rc;
    rc = fn(c->store, arg);
    bt_rollback(c->store);
    return rc;
}

/* state_filter picks the cheapest way to find jobs in a state: through its executions
 * table where it has one (small, indexed by job), else the status column. The status
 * parameter is always bound so both forms take the same arguments. */
static const char *state_filter(const char *status)
{
    static const char *const by_table[][2] = {
        {"ready", " AND id IN (SELECT job_id FROM baton_ready_executions) AND status = ?"},
        {"claimed", " AND id IN (SELECT job_id FROM baton_claimed_executions) AND status = ?"},
        {"scheduled", " AND id IN (SELECT job_id FROM baton_scheduled_executions) AND status = ?"},
        {"blocked", " AND id IN (SELECT job_id FROM baton_blocked_executions) AND status = ?"},
        {"failed", " AND id IN (SELECT job_id FROM baton_failed_executions) AND status = ?"},
    };
    for (size_t i = 0; i < sizeof by_table / sizeof *by_table; i++)
        if (strcmp(by_table[i][0], status) == 0)
            return by_table[i][1];
    return " AND status = ?";
}

typedef struct jobs_query {
    const baton_job_filter *filter;
    json_t *list;
} jobs_query;

static int query_jobs(bt_store *s, void *arg)
{
    jobs_query *q = arg;
    const baton_job_filter *f = q->filter;
    char sql[1024] = "SELECT " JOB_COLUMNS " FROM baton_jobs WHERE 1 = 1";
    bt_val a[5];
    int n = 0;
    if (f && f->status) {
        strcat(sql, state_filter(f->status));
        a[n++] = BV_TEXT(f->status);
    }
    if (f && f->class_name) {
        strcat(sql, " AND class_name = ?");
        a[n++] = BV_TEXT(f->class_name);
    }
    if (f && f->queue) {
        strcat(sql, " AND queue_name = ?");
        a[n++] = BV_TEXT(f->queue);
    }
    if (f && f->concurrency_key) {
        strcat(sql, " AND concurrency_key = ?");
        a[n++] = BV_TEXT(f->concurrency_key);
    }
    strcat(sql, " ORDER BY id DESC LIMIT ?");
    a[n++] = BV_INT(f && f->limit > 0 ? f->limit : 100);
    return bt_exec_dynamic(s, sql, a, n, append_job, q->list, NULL);
}

int baton_jobs_json(baton_client *c, const baton_job_filter *filter, char **json_out)
{
    *json_out = NULL;
    if (filter && filter->status) {
        size_t i = 0;
        while (i < sizeof statuses / sizeof *statuses && strcmp(statuses[i], filter->status) != 0)
            i++;
        if (i == sizeof statuses / sizeof *statuses)
            return bt_err_set(BATON_EINVALID,
                              "unknown status '%s' (expected scheduled, ready, blocked, claimed, "
                              "finished, failed or discarded)", filter->status);
    }
    jobs_query q = {filter, json_array()};
    int rc = bt_read_report(c, query_jobs, &q);
    if (rc != BATON_OK) {
        json_decref(q.list);
        return rc;
    }
    return bt_json_dump(q.list, json_out);
}

static const char sql_one_job[] = "SELECT " JOB_COLUMNS " FROM baton_jobs WHERE id = ?";

typedef struct one_job {
    int64_t id;
    json_t *list, *history;
} one_job;

static int query_one_job(bt_store *s, void *arg)
{
    one_job *q = arg;
    bt_val a[] = {BV_INT(q->id)};
    int rc = bt_exec(s, sql_one_job, a, 1, append_job, q->list, NULL);
    if (rc == BATON_OK && json_array_size(q->list) == 0)
        rc = bt_err_set(BATON_ENOTFOUND, "job %lld not found", (long long)q->id);
    return rc == BATON_OK ? bt_job_history(s, q->id, &q->history) : rc;
}

int baton_job_json(baton_client *c, int64_t id, char **json_out)
{
    *json_out = NULL;
    one_job q = {id, json_array(), NULL};
    int rc = bt_read_report(c, query_one_job, &q);
    if (rc != BATON_OK) {
        json_decref(q.list);
        return rc;
    }
    json_t *job = json_incref(json_array_get(q.list, 0));
    json_decref(q.list);
    json_object_set_new(job, "history", q.history);
    return bt_json_dump(job, json_out);
}

/* in_write_txn runs one action in its own write transaction. */
static int in_write_txn(baton_client *c, int rc_action(bt_store *, void *), void *arg)
{
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = rc_action(c->store, arg);
    return bt_end(c->store, rc);
}

static int retry_one(bt_store *s, void *arg) { return bt_retry_failed(s, (int64_t *)arg, 1, bt_now_ms()); }

int baton_job_retry(baton_client *c, int64_t id)
{
    int rc = in_write_txn(c, retry_one, &id);
    if (rc == BATON_OK)
        bt_log(c, BATON_LOG_INFO, "event=job.retried_by_operator job_id=%lld", (long long)id);
    return rc;
}

typedef struct retry_all_arg {
    const char *class_name;
    int64_t count;
} retry_all_arg;

/* CAST gives the optional parameter a type: PostgreSQL infers none from IS NULL alone. */
static const char sql_failed_ids[] =
    "SELECT j.id FROM baton_failed_executions f JOIN baton_jobs j ON j.id = f.job_id"
    " WHERE CAST(?1 AS TEXT) IS NULL OR j.class_name = ?1 ORDER BY j.id";

static int retry_all(bt_store *s, void *p)
{
    retry_all_arg *arg = p;
    bt_id_list l = {0};
    bt_val a[] = {BV_TEXT(arg->class_name)};
    int rc = bt_exec(s, sql_failed_ids, a, 1, bt_row_collect_id, &l, NULL);
    if (rc == BATON_OK)
        rc = bt_retry_failed(s, l.ids, l.len, bt_now_ms());
    arg->count = (int64_t)l.len;
    free(l.ids);
    return rc;
}

int baton_retry_all_failed(baton_client *c, const char *class_name, int64_t *count_out)
{
    retry_all_arg arg = {class_name, 0};
    int rc = in_write_txn(c, retry_all, &arg);
    if (count_out)
        *count_out = rc == BATON_OK ? arg.count : 0;
    return rc;
}

static int discard_one(bt_store *s, void *arg)
{
    return bt_discard(s, *(int64_t *)arg, "discarded by operator", bt_now_ms());
}

int baton_job_discard(baton_client *c, int64_t id) { return in_write_txn(c, discard_one, &id); }

typedef struct clear_arg {
    int64_t cutoff;
    int64_t changes;
} clear_arg;

enum { CLEAR_BATCH = 10000 };

static const char sql_clear_finished[] =
    "DELETE FROM baton_jobs WHERE id IN (SELECT id FROM baton_jobs WHERE finished_at < ?"
    " AND status = 'finished' LIMIT ?)";

static int clear_batch(bt_store *s, void *p)
{
    clear_arg *arg = p;
    bt_val a[] = {BV_INT(arg->cutoff), BV_INT(CLEAR_BATCH)};
    return bt_exec(s, sql_clear_finished, a, 2, NULL, NULL, &arg->changes);
}

/* A process identity (schema.c) is dropped once its process is no longer registered and
 * no job or attempt names it: for a process that ran jobs, only clearing them brings that
 * about. A process that is no longer registered can claim nothing more, so identities found
 * unreferenced in one read stay so, and the scan of the jobs holds no write lock. */
static const char sql_unreferenced_identities[] =
    "SELECT id FROM baton_process_identities EXCEPT SELECT id FROM baton_processes"
    " EXCEPT SELECT claimed_by FROM baton_jobs EXCEPT SELECT process_id FROM baton_job_attempts";
static const char sql_drop_identity[] = "DELETE FROM baton_process_identities WHERE id = ?";

static int find_unreferenced_identities(bt_store *s, void *ids)
{
    return bt_exec(s, sql_unreferenced_identities, NULL, 0, bt_row_collect_id, ids, NULL);
}

typedef struct id_slice {
    const int64_t *ids;
    size_t len;
} id_slice;

static int drop_identities(bt_store *s, void *p)
{
    const id_slice *slice = p;
    int rc = BATON_OK;
    for (size_t i = 0; i < slice->len && rc == BATON_OK; i++) {
        bt_val a[] = {BV_INT(slice->ids[i])};
        rc = bt_exec(s, sql_drop_identity, a, 1, NULL, NULL, NULL);
    }
    return rc;
}

static int prune_identities(baton_client *c)
{
    bt_id_list gone = {0};
    int rc = bt_read_report(c, find_unreferenced_identities, &gone);
    for (size_t i = 0; i < gone.len && rc == BATON_OK; i += CLEAR_BATCH) {
        id_slice slice = {gone.ids + i, gone.len - i < CLEAR_BATCH ? gone.len - i : CLEAR_BATCH};
        rc = in_write_txn(c, drop_identities, &slice);
    }
    free(gone.ids);
    return rc;
}

int baton_clear_finished(baton_client *c, double older_than_seconds, int64_t *count_out)
{
    clear_arg arg = {bt_now_ms() - (int64_t)(older_than_seconds * 1000.0), 0};
    int64_t total = 0;
    int rc;
    /* Small batches keep the write lock short so workers are not stalled by a big purge. */
    do {
        rc = in_write_txn(c, clear_batch, &arg);
        total += rc == BATON_OK ? arg.changes : 0;
    } while (rc == BATON_OK && arg.changes == CLEAR_BATCH);
    if (rc == BATON_OK)
        rc = prune_identities(c);
    if (count_out)
        *count_out = total;
    return rc;
}

static const char sql_pause[] =
    "INSERT INTO baton_pauses (queue_name, created_at) VALUES (?, ?) ON CONFLICT (queue_name) DO NOTHING";
static const char sql_resume[] = "DELETE FROM baton_pauses WHERE queue_name = ?";

static int check_queue_name(const char *queue) { return bt_check_name("queue name", queue); }

int baton_queue_pause(baton_client *c, const char *queue)
{
    int rc = check_queue_name(queue);
    bt_val a[] = {BV_TEXT(queue), BV_INT(bt_now_ms())};
    return rc == BATON_OK ? bt_exec(c->store, sql_pause, a, 2, NULL, NULL, NULL) : rc;
}

int baton_queue_resume(baton_client *c, const char *queue)
{
    int rc = check_queue_name(queue);
    bt_val a[] = {BV_TEXT(queue)};
    return rc == BATON_OK ? bt_exec(c->store, sql_resume, a, 1, NULL, NULL, NULL) : rc;
}

static const char sql_queue_counts[] =
    "SELECT queue_name, status, COUNT(*) FROM baton_jobs"
    " WHERE status IN ('ready', 'scheduled', 'claimed', 'blocked', 'failed')"
    " GROUP BY queue_name, status";
static const char sql_paused[] = "SELECT queue_name FROM baton_pauses";

static json_t *queue_entry(json_t *by_name, const char *name)
{
    json_t *q = json_object_get(by_name, name);
    if (!q) {
        q = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:b}", "name", name, "ready", 0, "scheduled",
                      0, "claimed", 0, "blocked", 0, "failed", 0, "paused", 0);
        json_object_set_new(by_name, name, q);
    }
    return q;
}

static int add_count(bt_row *row, void *payload)
{
    json_t *q = queue_entry(payload, bt_col_text(row, 0));
    json_object_set_new(q, bt_col_text(row, 1), json_integer(bt_col_int(row, 2)));
    return 0;
}

static int add_paused(bt_row *row, void *payload)
{
    json_object_set_new(queue_entry(payload, bt_col_text(row, 0)), "paused", json_true());
    return 0;
}

static int query_queues(bt_store *s, void *by_name)
{
    int rc = bt_exec(s, sql_queue_counts, NULL, 0, add_count, by_name, NULL);
    return rc == BATON_OK ? bt_exec(s, sql_paused, NULL, 0, add_paused, by_name, NULL) : rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int baton_queues_json(baton_client *c, char **json_out)
{
    *json_out = NULL;
    json_t *by_name = json_object();
    int rc = bt_read_report(c, query_queues, by_name);
    if (rc != BATON_OK) {
        json_decref(by_name);
        return rc;
    }
    size_t n = json_object_size(by_name), i = 0;
    const char **names = calloc(n + 1, sizeof *names);
    const char *key;
    json_t *value;
    json_object_foreach(by_name, key, value) names[i++] = key;
    qsort(names, n, sizeof *names, cmp_names);
    json_t *list = json_array();
    for (i = 0; i < n; i++)
        json_array_append(list, json_object_get(by_name, names[i]));
    free(names);
    json_decref(by_name);
    return bt_json_dump(list, json_out);
}

int baton_classes_json(baton_client *c, char **json_out)
{
    json_t *list = json_array();
    for (size_t i = 0; i < c->nclasses; i++) {
        const bt_class *k = &c->classes[i];
        json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:o, s:i, s:f}", "name", k->name,
                                              "queue", k->queue, "priority", k->priority, "command",
                                              k->command ? json_string(k->command) : json_null(),
                                              "max_attempts", k->max_attempts, "timeout", k->timeout));
    }
    return bt_json_dump(list, json_out);
}

/* The CAST types the optional key, as in sql_failed_ids. */
static const char sql_semaphores[] =
    "SELECT s.key, s.limit_value, h.job_id, h.token, h.expires_at,"
    " (SELECT COUNT(*) FROM baton_blocked_executions b WHERE b.concurrency_key = s.key)"
    " FROM baton_semaphores s LEFT JOIN baton_semaphore_holders h ON h.key = s.key"
    " WHERE CAST(?1 AS TEXT) IS NULL OR s.key = ?1 ORDER BY s.key, h.token";

typedef struct semaphore_report {
    json_t *list;
    json_t *current;
    int64_t now;
    int expired_only;
} semaphore_report;

static int add_semaphore_row(bt_row *row, void *payload)
{
    semaphore_report *r = payload;
    const char *key = bt_col_text(row, 0);
    if (!r->current || strcmp(json_string_value(json_object_get(r->current, "key")), key) != 0) {
        r->current = json_pack("{s:s, s:I, s:I, s:[], s:[], s:I, s:n}", "key", key, "limit",
                               (json_int_t)bt_col_int(row, 1), "value", (json_int_t)bt_col_int(row, 1),
                               "holders", "tokens", "blocked", (json_int_t)bt_col_int(row, 5),
                               "expires_at");
        json_array_append_new(r->list, r->current);
    }
    if (bt_col_null(row, 2))
        return 0;
    json_array_append_new(json_object_get(r->current, "holders"), json_integer(bt_col_int(row, 2)));
    json_array_append_new(json_object_get(r->current, "tokens"), json_integer(bt_col_int(row, 3)));
    json_object_set_new(r->current, "value", json_integer(json_integer_value(json_object_get(r->current, "value")) - 1));
    json_t *latest = json_object_get(r->current, "expires_at");
    int64_t expires = bt_col_int(row, 4);
    if (json_is_null(latest) || expires > json_integer_value(json_object_get(r->current, "expires_ms")))
    {
        json_object_set_new(r->current, "expires_ms", json_integer(expires));
        json_object_set_new(r->current, "expires_at", bt_json_time(row, 4));
    }
    return 0;
}

typedef struct semaphore_query {
    const char *key;
    semaphore_report *report;
} semaphore_query;

static int query_semaphores(bt_store *s, void *arg)
{
    semaphore_query *q = arg;
    bt_val a[] = {BV_TEXT(q->key)};
    return bt_exec(s, sql_semaphores, a, 1, add_semaphore_row, q->report, NULL);
}

int baton_semaphores_json(baton_client *c, int expired_only, const char *key, char **json_out)
{
    *json_out = NULL;
    semaphore_report r = {json_array(), NULL, bt_now_ms(), expired_only};
    semaphore_query q = {key, &r};
    int rc = bt_read_report(c, query_semaphores, &q);
    if (rc != BATON_OK) {
        json_decref(r.list);
        return rc;
    }
    json_t *out = json_array();
    size_t i;
    json_t *sem;
    json_array_foreach(r.list, i, sem)
    {
        json_t *ms = json_object_get(sem, "expires_ms");
        int expired = ms && json_integer_value(ms) < r.now;
        json_object_del(sem, "expires_ms");
        if (!expired_only || expired)
            json_array_append(out, sem);
    }
    json_decref(r.list);
    return bt_json_dump(out, json_out);
}

typedef struct unblock_arg {
    int64_t id, threshold_ms;
    const char *key;
    int force;
    int over_limit, promoted, cleared;
} unblock_arg;

static int unblock_one(bt_store *s, void *p)
{
    unblock_arg *a = p;
    return bt_unblock(s, a->id, a->force, bt_now_ms(), &a->over_limit);
}

int baton_unblock(baton_client *c, int64_t id, int force, int *over_limit_out)
{
    unblock_arg a = {.id = id, .force = force};
    int rc = in_write_txn(c, unblock_one, &a);
    if (over_limit_out)
        *over_limit_out = rc == BATON_OK && a.over_limit;
    if (rc == BATON_OK)
        bt_log(c, a.over_limit ? BATON_LOG_WARN : BATON_LOG_INFO,
               "event=job.unblocked_by_operator job_id=%lld over_limit=%d", (long long)id, a.over_limit);
    return rc;
}

static int unblock_key(bt_store *s, void *p)
{
    unblock_arg *a = p;
    return bt_unblock_key(s, a->key, bt_now_ms(), &a->promoted);
}

int baton_unblock_key(baton_client *c, const char *key, int *promoted_out)
{
    unblock_arg a = {.key = key};
    int rc = in_write_txn(c, unblock_key, &a);
    if (promoted_out)
        *promoted_out = rc == BATON_OK ? a.promoted : 0;
    return rc;
}

static int clear_key(bt_store *s, void *p)
{
    unblock_arg *a = p;
    return bt_semaphore_clear(s, a->key, a->force, a->threshold_ms, bt_now_ms(), &a->cleared, &a->promoted);
}

int baton_semaphore_clear(baton_client *c, const char *key, int force, int *cleared_out, int *promoted_out)
{
    unblock_arg a = {.key = key, .force = force,
                     .threshold_ms = (int64_t)(c->alive_threshold * 1000.0)};
    int rc = in_write_txn(c, clear_key, &a);
    if (cleared_out)
        *cleared_out = rc == BATON_OK ? a.cleared : 0;
    if (promoted_out)
        *promoted_out = rc == BATON_OK ? a.promoted : 0;
    if (rc == BATON_OK)
        bt_log(c, BATON_LOG_WARN, "event=semaphore.cleared_by_operator key=%s holders=%d promoted=%d force=%d",
               BT_LOG_VALUE(key), a.cleared, a.promoted, force);
    return rc;
}
