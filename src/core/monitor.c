/* monitor.c: what operators look at while the queue runs: blocked jobs and what they wait
 * for, running jobs and where, and the registered processes. Each report reads one state
 * in one read transaction, like the reports of admin.c. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/report.h"
#include "util/clock.h"
#include "util/err.h"

static double seconds_between(int64_t from_ms, int64_t to_ms) { return (double)(to_ms - from_ms) / 1000.0; }

static json_t *parse_arguments(bt_row *row, int col)
{
    const char *text = bt_col_null(row, col) ? NULL : bt_col_text(row, col);
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : bt_json_text(row, col);
}

/* ---- blocked ---- */

typedef struct blocked_query {
    baton_client *client;
    const char *class_name, *key;
    int64_t now;
    json_t *list;
} blocked_query;

static const char sql_blocked[] =
    "SELECT j.id, j.class_name, b.concurrency_key, b.created_at, j.arguments, b.expires_at"
    " FROM baton_blocked_executions b JOIN baton_jobs j ON j.id = b.job_id"
    " WHERE (?1 IS NULL OR j.class_name = ?1) AND (?2 IS NULL OR b.concurrency_key = ?2)"
    " ORDER BY b.created_at, j.id";

static int append_blocked(bt_row *row, void *payload)
{
    blocked_query *q = payload;
    json_t *args = parse_arguments(row, 4);
    json_t *o = json_object();
    json_object_set_new(o, "job_id", json_integer(bt_col_int(row, 0)));
    json_object_set_new(o, "class", bt_json_text(row, 1));
    json_object_set_new(o, "concurrency_key", bt_json_text(row, 2));
    json_object_set_new(o, "blocked_since", bt_json_time(row, 3));
    json_object_set_new(o, "waiting_seconds", json_real(seconds_between(bt_col_int(row, 3), q->now)));
    json_object_set_new(o, "recheck_at", bt_json_time(row, 5));
    /* The values the key was built from, when this program knows the class's template. */
    const bt_class *k = bt_class_find(q->client, bt_col_text(row, 1));
    if (k && k->concurrency_key)
        json_object_set_new(o, "key_values", bt_key_values(k->concurrency_key, args));
    json_object_set_new(o, "arguments", args);
    json_array_append_new(q->list, o);
    return 0;
}

static int query_blocked(bt_store *s, void *arg)
{
    blocked_query *q = arg;
    bt_val a[] = {BV_TEXT(q->class_name), BV_TEXT(q->key)};
    return bt_exec(s, sql_blocked, a, 2, append_blocked, q, NULL);
}

int baton_blocked_json(baton_client *c, const char *class_name, const char *concurrency_key, char **json_out)
{
    *json_out = NULL;
    blocked_query q = {c, class_name, concurrency_key, bt_now_ms(), json_array()};
    int rc = bt_read_report(c, query_blocked, &q);
    if (rc != BATON_OK) {
        json_decref(q.list);
        return rc;
    }
    return bt_json_dump(q.list, json_out);
}

/* ---- running ---- */

typedef struct running_query {
    const char *class_name;
    int64_t now, started_before;
    json_t *list;
} running_query;

static const char sql_running[] =
    "SELECT j.id, j.class_name, j.concurrency_key, c.process_id, p.pid, p.hostname, c.claimed_at,"
    " j.attempts, j.fencing_token, p.kind"
    " FROM baton_claimed_executions c JOIN baton_jobs j ON j.id = c.job_id"
    " LEFT JOIN baton_processes p ON p.id = c.process_id"
    " WHERE (?1 IS NULL OR j.class_name = ?1) AND c.claimed_at <= ?2"
    " ORDER BY c.claimed_at, j.id";

static int append_running(bt_row *row, void *payload)
{
    running_query *q = payload;
    json_t *o = json_object();
    json_object_set_new(o, "job_id", json_integer(bt_col_int(row, 0)));
    json_object_set_new(o, "class", bt_json_text(row, 1));
    json_object_set_new(o, "concurrency_key", bt_json_text(row, 2));
    json_object_set_new(o, "process_id", json_integer(bt_col_int(row, 3)));
    json_object_set_new(o, "process_kind", bt_json_text(row, 9));
    json_object_set_new(o, "pid", bt_col_null(row, 4) ? json_null() : json_integer(bt_col_int(row, 4)));
    json_object_set_new(o, "hostname", bt_json_text(row, 5));
    json_object_set_new(o, "started_at", bt_json_time(row, 6));
    json_object_set_new(o, "running_seconds", json_real(seconds_between(bt_col_int(row, 6), q->now)));
    json_object_set_new(o, "attempt", json_integer(bt_col_int(row, 7)));
    json_object_set_new(o, "fencing_token", bt_col_null(row, 8) ? json_null() : json_integer(bt_col_int(row, 8)));
    json_array_append_new(q->list, o);
    return 0;
}

static int query_running(bt_store *s, void *arg)
{
    running_query *q = arg;
    bt_val a[] = {BV_TEXT(q->class_name), BV_INT(q->started_before)};
    return bt_exec(s, sql_running, a, 2, append_running, q, NULL);
}

int baton_running_json(baton_client *c, const char *class_name, double longer_than_seconds, char **json_out)
{
    *json_out = NULL;
    if (longer_than_seconds < 0)
        return bt_err_set(BATON_EINVALID, "longer-than must not be negative");
    int64_t now = bt_now_ms();
    running_query q = {class_name, now, now - (int64_t)(longer_than_seconds * 1000.0), json_array()};
    int rc = bt_read_report(c, query_running, &q);
    if (rc != BATON_OK) {
        json_decref(q.list);
        return rc;
    }
    return bt_json_dump(q.list, json_out);
}

/* ---- processes ---- */

typedef struct processes_query {
    int64_t now;
    json_t *list;
    json_t *by_id; /* process id (as text) -> its object, to attach running jobs */
} processes_query;

static const char sql_processes[] =
    "SELECT id, kind, name, pid, hostname, supervisor_id, metadata, last_heartbeat_at, created_at"
    " FROM baton_processes ORDER BY id";
static const char sql_claims[] =
    "SELECT process_id, job_id FROM baton_claimed_executions ORDER BY job_id";

static int append_process(bt_row *row, void *payload)
{
    processes_query *q = payload;
    const char *meta = bt_col_null(row, 6) ? NULL : bt_col_text(row, 6);
    json_t *metadata = meta ? json_loads(meta, 0, NULL) : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(bt_col_int(row, 0)));
    json_object_set_new(o, "kind", bt_json_text(row, 1));
    json_object_set_new(o, "name", bt_json_text(row, 2));
    json_object_set_new(o, "pid", json_integer(bt_col_int(row, 3)));
    json_object_set_new(o, "hostname", bt_json_text(row, 4));
    json_object_set_new(o, "supervisor_id", bt_col_null(row, 5) ? json_null() : json_integer(bt_col_int(row, 5)));
    json_object_set_new(o, "metadata", metadata ? metadata : json_null());
    json_object_set_new(o, "last_heartbeat_at", bt_json_time(row, 7));
    json_object_set_new(o, "heartbeat_age_seconds", json_real(seconds_between(bt_col_int(row, 7), q->now)));
    json_object_set_new(o, "started_at", bt_json_time(row, 8));
    json_object_set_new(o, "running", json_array());
    json_array_append(q->list, o);
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)bt_col_int(row, 0));
    json_object_set_new(q->by_id, id, o);
    return 0;
}

static int attach_claim(bt_row *row, void *payload)
{
    processes_query *q = payload;
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)bt_col_int(row, 0));
    json_t *o = json_object_get(q->by_id, id);
    if (o)
        json_array_append_new(json_object_get(o, "running"), json_integer(bt_col_int(row, 1)));
    return 0;
}

static int query_processes(bt_store *s, void *arg)
{
    processes_query *q = arg;
    int rc = bt_exec(s, sql_processes, NULL, 0, append_process, q, NULL);
    return rc == BATON_OK ? bt_exec(s, sql_claims, NULL, 0, attach_claim, q, NULL) : rc;
}

int baton_processes_json(baton_client *c, char **json_out)
{
    *json_out = NULL;
    processes_query q = {bt_now_ms(), json_array(), json_object()};
    int rc = bt_read_report(c, query_processes, &q);
    json_decref(q.by_id);
    if (rc != BATON_OK) {
        json_decref(q.list);
        return rc;
    }
    return bt_json_dump(q.list, json_out);
}
