/* monitor.c: what operators look at while the queue runs: blocked jobs and what they wait
 * for, running jobs and where, and the registered processes. Each report reads one state
 * in one read transaction, like the reports of admin.c. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/report.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/grow.h"

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

/* Optional filters read CAST(?N AS TEXT) IS NULL OR ...: PostgreSQL infers no type for a
 * parameter from IS NULL alone, and a NULL is bound without one. */
static const char sql_blocked[] =
    "SELECT j.id, j.class_name, b.concurrency_key, b.created_at, j.arguments, b.expires_at"
    " FROM baton_blocked_executions b JOIN baton_jobs j ON j.id = b.job_id"
    " WHERE (CAST(?1 AS TEXT) IS NULL OR j.class_name = ?1)"
    " AND (CAST(?2 AS TEXT) IS NULL OR b.concurrency_key = ?2)"
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
    " WHERE (CAST(?1 AS TEXT) IS NULL OR j.class_name = ?1) AND c.claimed_at <= ?2"
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
    json_t *list;
    json_t *by_id; /* process id (as text) -> its object, to attach running jobs */
} processes_query;

static const char sql_processes[] =
    "SELECT id, kind, name, pid, hostname, supervisor_id, metadata, last_heartbeat_at, created_at,"
    " baton_clock() - beat FROM baton_processes ORDER BY id";
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
    /* By the clock liveness is judged by, not the wall clocks of the two hosts. */
    json_object_set_new(o, "heartbeat_age_seconds", json_real((double)bt_col_int(row, 9) / 1000.0));
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
    processes_query q = {json_array(), json_object()};
    int rc = bt_read_report(c, query_processes, &q);
    json_decref(q.by_id);
    if (rc != BATON_OK) {
        json_decref(q.list);
        return rc;
    }
    return bt_json_dump(q.list, json_out);
}

/* ---- stats ---- */

static int cmp_ms(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *const stat_statuses[] = {"ready", "blocked", "scheduled", "claimed", "failed", "finished",
                                            "discarded"};
enum { NSTATUSES = sizeof stat_statuses / sizeof *stat_statuses, TOP_KEYS = 5 };

typedef struct waits {
    double *ms;
    size_t len, cap;
} waits;

/* One class's or queue's figures while they are gathered. */
typedef struct tally {
    char *name;
    int64_t counts[NSTATUSES];
    waits wait;
    int64_t finished_in_window, failed, timed_out, by_expiry;
    json_t *keys; /* class: key -> blocked jobs */
} tally;

typedef struct tallies {
    tally *items;
    size_t len, cap;
} tallies;

typedef struct stats_query {
    const char *class_name;
    int64_t cutoff;
    tallies classes, queues;
} stats_query;

static tally *tally_of(tallies *t, const char *name)
{
    for (size_t i = 0; i < t->len; i++)
        if (strcmp(t->items[i].name, name) == 0)
            return &t->items[i];
    if (bt_grow(&t->items, &t->cap, t->len, sizeof *t->items) != 0)
        return NULL;
    tally *n = &t->items[t->len];
    *n = (tally){.name = strdup(name), .keys = json_object()};
    if (!n->name) {
        json_decref(n->keys);
        return NULL;
    }
    t->len++;
    return n;
}

static void tallies_free(tallies *t)
{
    for (size_t i = 0; i < t->len; i++) {
        free(t->items[i].name);
        free(t->items[i].wait.ms);
        json_decref(t->items[i].keys);
    }
    free(t->items);
}

static int status_index(const char *status)
{
    for (int i = 0; i < NSTATUSES; i++)
        if (strcmp(stat_statuses[i], status) == 0)
            return i;
    return -1;
}

static const char sql_stat_counts[] =
    "SELECT class_name, queue_name, status, COUNT(*) FROM baton_jobs"
    " WHERE CAST(?1 AS TEXT) IS NULL OR class_name = ?1"
    " GROUP BY class_name, queue_name, status";

static int on_stat_count(bt_row *row, void *payload)
{
    stats_query *q = payload;
    int k = status_index(bt_col_text(row, 2));
    tally *c = tally_of(&q->classes, bt_col_text(row, 0)), *qu = tally_of(&q->queues, bt_col_text(row, 1));
    if (!c || !qu)
        return -1;
    if (k >= 0) {
        c->counts[k] += bt_col_int(row, 3);
        qu->counts[k] += bt_col_int(row, 3);
    }
    return 0;
}

static const char sql_stat_blocked_keys[] =
    "SELECT j.class_name, b.concurrency_key, COUNT(*) FROM baton_blocked_executions b"
    " JOIN baton_jobs j ON j.id = b.job_id WHERE CAST(?1 AS TEXT) IS NULL OR j.class_name = ?1"
    " GROUP BY j.class_name, b.concurrency_key";

static int on_stat_key(bt_row *row, void *payload)
{
    stats_query *q = payload;
    tally *c = tally_of(&q->classes, bt_col_text(row, 0));
    if (!c)
        return -1;
    json_object_set_new(c->keys, bt_col_text(row, 1), json_integer(bt_col_int(row, 2)));
    return 0;
}

/* Jobs touched within the window: when they started, how they ended, what freed them. */
static const char sql_stat_window[] =
    "SELECT class_name, queue_name, status, created_at, scheduled_at, started_at, finished_at, admitted_by, error"
    " FROM baton_jobs WHERE updated_at >= ?2 AND (CAST(?1 AS TEXT) IS NULL OR class_name = ?1)";

static int on_stat_window(bt_row *row, void *payload)
{
    stats_query *q = payload;
    tally *c = tally_of(&q->classes, bt_col_text(row, 0)), *qu = tally_of(&q->queues, bt_col_text(row, 1));
    if (!c || !qu)
        return -1;
    const char *status = bt_col_text(row, 2);
    if (!bt_col_null(row, 5) && bt_col_int(row, 5) >= q->cutoff) {
        /* Waiting starts when the job could first run: enqueue, or its due time. */
        int64_t from = bt_col_int(row, 3) > bt_col_int(row, 4) ? bt_col_int(row, 3) : bt_col_int(row, 4);
        if (bt_grow(&c->wait.ms, &c->wait.cap, c->wait.len, sizeof *c->wait.ms) != 0)
            return -1;
        double ms = (double)(bt_col_int(row, 5) - from);
        c->wait.ms[c->wait.len++] = ms < 0 ? 0 : ms;
    }
    if (strcmp(status, "finished") == 0 && !bt_col_null(row, 6) && bt_col_int(row, 6) >= q->cutoff) {
        c->finished_in_window++;
        qu->finished_in_window++;
    }
    if (strcmp(status, "failed") == 0)
        c->failed++;
    if (!bt_col_null(row, 8) && strncmp(bt_col_text(row, 8), "timed out", 9) == 0)
        c->timed_out++;
    if (!bt_col_null(row, 7) && strcmp(bt_col_text(row, 7), "expiry") == 0)
        c->by_expiry++;
    return 0;
}

static int query_stats(bt_store *s, void *arg)
{
    stats_query *q = arg;
    bt_val a[] = {BV_TEXT(q->class_name), BV_INT(q->cutoff)};
    int rc = bt_exec(s, sql_stat_counts, a, 1, on_stat_count, q, NULL);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_stat_blocked_keys, a, 1, on_stat_key, q, NULL);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_stat_window, a, 2, on_stat_window, q, NULL);
    return rc;
}

static json_t *counts_json(const int64_t *counts)
{
    json_t *o = json_object();
    for (int i = 0; i < NSTATUSES; i++)
        json_object_set_new(o, stat_statuses[i], json_integer(counts[i]));
    return o;
}

static double percentile(const double *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

static json_t *wait_json(waits *w)
{
    if (!w->len)
        return json_pack("{s:n, s:n, s:n, s:n, s:i}", "avg", "p50", "p95", "max", "samples", 0);
    qsort(w->ms, w->len, sizeof *w->ms, cmp_ms);
    double sum = 0;
    for (size_t i = 0; i < w->len; i++)
        sum += w->ms[i];
    return json_pack("{s:f, s:f, s:f, s:f, s:I}", "avg", sum / (double)w->len / 1000.0, "p50",
                     percentile(w->ms, w->len, 0.5) / 1000.0, "p95", percentile(w->ms, w->len, 0.95) / 1000.0, "max",
                     w->ms[w->len - 1] / 1000.0, "samples", (json_int_t)w->len);
}

/* top_keys lists a class's keys with the most blocked jobs, most first. */
static json_t *top_keys(json_t *keys)
{
    json_t *top = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(keys, key, v)
    {
        size_t at = json_array_size(top);
        while (at > 0 && json_integer_value(json_object_get(json_array_get(top, at - 1), "blocked")) <
                             json_integer_value(v))
            at--;
        if (at < TOP_KEYS)
            json_array_insert_new(top, at, json_pack("{s:s, s:I}", "key", key, "blocked", json_integer_value(v)));
        if (json_array_size(top) > TOP_KEYS)
            json_array_remove(top, TOP_KEYS);
    }
    return top;
}

int baton_stats_json(baton_client *c, const char *class_name, double since_seconds, char **json_out)
{
    *json_out = NULL;
    if (!(since_seconds > 0))
        return bt_err_set(BATON_EINVALID, "since must be a positive number of seconds");
    stats_query q = {class_name, bt_now_ms() - (int64_t)(since_seconds * 1000.0), {0}, {0}};
    int rc = bt_read_report(c, query_stats, &q);
    json_t *classes = json_array(), *queues = json_array();
    double minutes = since_seconds / 60.0;
    for (size_t i = 0; rc == BATON_OK && i < q.classes.len; i++) {
        tally *t = &q.classes.items[i];
        json_array_append_new(
            classes, json_pack("{s:s, s:o, s:I, s:o, s:o, s:I, s:I, s:I, s:I, s:f}", "class", t->name, "counts",
                               counts_json(t->counts), "blocked_keys", (json_int_t)json_object_size(t->keys),
                               "top_blocked_keys", top_keys(t->keys), "wait_seconds", wait_json(&t->wait),
                               "released_by_expiry", (json_int_t)t->by_expiry, "failed", (json_int_t)t->failed,
                               "timed_out", (json_int_t)t->timed_out, "finished", (json_int_t)t->finished_in_window,
                               "per_minute", (double)t->finished_in_window / minutes));
    }
    for (size_t i = 0; rc == BATON_OK && i < q.queues.len; i++) {
        tally *t = &q.queues.items[i];
        json_array_append_new(queues, json_pack("{s:s, s:o, s:I, s:f}", "queue", t->name, "counts",
                                                counts_json(t->counts), "finished", (json_int_t)t->finished_in_window,
                                                "per_minute", (double)t->finished_in_window / minutes));
    }
    tallies_free(&q.classes);
    tallies_free(&q.queues);
    json_t *doc = json_pack("{s:f, s:o, s:o}", "window_seconds", since_seconds, "classes", classes, "queues", queues);
    if (rc != BATON_OK) {
        json_decref(doc);
        return rc;
    }
    return bt_json_dump(doc, json_out);
}

/* ---- Prometheus metrics ---- */

typedef struct text_buf {
    char *text;
    size_t len, cap;
    int failed;
} text_buf;

static void put(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->failed || n < 0)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->len + (size_t)n + 1) * 2;
        char *grown = realloc(b->text, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->text = grown;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->text + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* label escapes a label value as the exposition format wants (\\, \", \n). */
static const char *label(const char *value, char *buf, size_t len)
{
    size_t o = 0;
    for (const char *p = value; *p && o + 3 < len; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n') {
            buf[o++] = '\\';
            buf[o++] = *p == '\n' ? 'n' : *p;
        } else {
            buf[o++] = *p;
        }
    }
    buf[o] = '\0';
    return buf;
}

static void family(text_buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Over the last five minutes, like a typical scrape-to-alert window. */
#define METRICS_WINDOW_SECONDS 300.0

int baton_metrics_text(baton_client *c, char **text_out)
{
    *text_out = NULL;
    char *stats_text = NULL, *procs_text = NULL;
    int rc = baton_stats_json(c, NULL, METRICS_WINDOW_SECONDS, &stats_text);
    if (rc == BATON_OK)
        rc = baton_processes_json(c, &procs_text);
    json_t *stats = rc == BATON_OK ? json_loads(stats_text, 0, NULL) : NULL;
    json_t *procs = rc == BATON_OK ? json_loads(procs_text, 0, NULL) : NULL;
    free(stats_text);
    free(procs_text);
    if (rc != BATON_OK || !stats || !procs) {
        json_decref(stats);
        json_decref(procs);
        return rc != BATON_OK ? rc : bt_err_set(BATON_ERROR, "out of memory");
    }
    text_buf b = {0};
    char l1[512], l2[512];
    size_t i;
    json_t *o;
    json_t *classes = json_object_get(stats, "classes"), *queues = json_object_get(stats, "queues");

    family(&b, "baton_jobs", "gauge", "Stored jobs by class and status.");
    json_array_foreach(classes, i, o) for (int k = 0; k < NSTATUSES; k++)
        put(&b, "baton_jobs{class=\"%s\",status=\"%s\"} %lld\n",
            label(json_string_value(json_object_get(o, "class")), l1, sizeof l1), stat_statuses[k],
            (long long)json_integer_value(json_object_get(json_object_get(o, "counts"), stat_statuses[k])));
    family(&b, "baton_queue_jobs", "gauge", "Stored jobs by queue and status.");
    json_array_foreach(queues, i, o) for (int k = 0; k < NSTATUSES; k++)
        put(&b, "baton_queue_jobs{queue=\"%s\",status=\"%s\"} %lld\n",
            label(json_string_value(json_object_get(o, "queue")), l1, sizeof l1), stat_statuses[k],
            (long long)json_integer_value(json_object_get(json_object_get(o, "counts"), stat_statuses[k])));
    family(&b, "baton_blocked_keys", "gauge", "Concurrency keys with blocked jobs, by class.");
    json_array_foreach(classes, i, o)
        put(&b, "baton_blocked_keys{class=\"%s\"} %lld\n", label(json_string_value(json_object_get(o, "class")), l1, sizeof l1),
            (long long)json_integer_value(json_object_get(o, "blocked_keys")));
    family(&b, "baton_job_wait_seconds", "gauge",
           "Wait from enqueue (or due time) to start over the last 5 minutes, by class and quantile.");
    static const char *const quantiles[][2] = {{"0.5", "p50"}, {"0.95", "p95"}, {"1", "max"}};
    json_array_foreach(classes, i, o)
    {
        json_t *w = json_object_get(o, "wait_seconds");
        for (int k = 0; k < 3; k++)
            if (json_is_number(json_object_get(w, quantiles[k][1])))
                put(&b, "baton_job_wait_seconds{class=\"%s\",quantile=\"%s\"} %.6f\n",
                    label(json_string_value(json_object_get(o, "class")), l1, sizeof l1), quantiles[k][0],
                    json_number_value(json_object_get(w, quantiles[k][1])));
    }
    static const char *const window_counts[][2] = {
        {"finished", "Jobs finished in the last 5 minutes, by class."},
        {"failed", "Jobs that failed for good in the last 5 minutes, by class."},
        {"timed_out", "Runs stopped by their timeout in the last 5 minutes, by class."},
        {"released_by_expiry", "Jobs admitted by concurrency maintenance rather than a finishing holder, last 5 minutes."},
    };
    for (int k = 0; k < 4; k++) {
        char name[64];
        snprintf(name, sizeof name, "baton_jobs_%s_5m", window_counts[k][0]);
        family(&b, name, "gauge", window_counts[k][1]);
        json_array_foreach(classes, i, o)
            put(&b, "%s{class=\"%s\"} %lld\n", name, label(json_string_value(json_object_get(o, "class")), l1, sizeof l1),
                (long long)json_integer_value(json_object_get(o, window_counts[k][0])));
    }
    family(&b, "baton_process_heartbeat_age_seconds", "gauge", "Seconds since each registered process's heartbeat.");
    json_array_foreach(procs, i, o)
    {
        snprintf(l2, sizeof l2, "%lld", (long long)json_integer_value(json_object_get(o, "id")));
        put(&b, "baton_process_heartbeat_age_seconds{kind=\"%s\",process_id=\"%s\",hostname=\"%s\"} %.3f\n",
            json_string_value(json_object_get(o, "kind")), l2,
            label(json_string_value(json_object_get(o, "hostname")), l1, sizeof l1),
            json_number_value(json_object_get(o, "heartbeat_age_seconds")));
    }
    family(&b, "baton_process_running_jobs", "gauge", "Jobs each registered process has claimed.");
    json_array_foreach(procs, i, o)
    {
        snprintf(l2, sizeof l2, "%lld", (long long)json_integer_value(json_object_get(o, "id")));
        put(&b, "baton_process_running_jobs{kind=\"%s\",process_id=\"%s\",hostname=\"%s\"} %zu\n",
            json_string_value(json_object_get(o, "kind")), l2,
            label(json_string_value(json_object_get(o, "hostname")), l1, sizeof l1),
            json_array_size(json_object_get(o, "running")));
    }
    json_decref(stats);
    json_decref(procs);
    if (b.failed || !b.text) {
        free(b.text);
        return bt_err_set(BATON_ERROR, "out of memory");
    }
    *text_out = b.text;
    return BATON_OK;
}

/* ---- a job's history ---- */

/* Processes are named through their identities, which outlive their registrations: the
 * process that ran a job's latest attempt is known after it exited (schema.c). */
static const char sql_history_job[] =
    "SELECT j.created_at, j.scheduled_at, j.status, j.started_at, j.finished_at, j.claimed_by,"
    " i.name, j.admitted_by, j.admitted_at,"
    " j.concurrency_key, (SELECT b.created_at FROM baton_blocked_executions b WHERE b.job_id = j.id),"
    " j.error, j.attempts, j.updated_at, j.fencing_token, j.blocked_at, i.kind, i.hostname, i.pid"
    " FROM baton_jobs j LEFT JOIN baton_process_identities i ON i.id = j.claimed_by WHERE j.id = ?";
static const char sql_history_attempts[] =
    "SELECT a.attempt, a.process_id, a.process_name, a.started_at, a.ended_at, a.outcome, a.error,"
    " a.admitted_by, a.admitted_at, a.blocked_at, i.kind, i.hostname, i.pid FROM baton_job_attempts a"
    " LEFT JOIN baton_process_identities i ON i.id = a.process_id WHERE a.job_id = ? ORDER BY a.id";

static void event(json_t *list, int64_t at, const char *what, json_t *details)
{
    char iso[BT_ISO_LEN];
    bt_iso8601(at, iso);
    json_t *e = details ? details : json_object();
    json_object_set_new(e, "at", json_string(iso));
    json_object_set_new(e, "at_ms", json_integer(at));
    json_object_set_new(e, "event", json_string(what));
    json_array_append_new(list, e);
}

/* A process by id and name, then kind, hostname and pid from the three columns from
 * identity_col on (null for a process that ended before identities were kept). */
static json_t *process_json(bt_row *row, int id_col, int name_col, int identity_col)
{
    if (bt_col_null(row, id_col))
        return json_null();
    return json_pack("{s:I, s:o, s:o, s:o, s:o}", "id", (json_int_t)bt_col_int(row, id_col), "name",
                     bt_json_text(row, name_col), "kind", bt_json_text(row, identity_col), "hostname",
                     bt_json_text(row, identity_col + 1), "pid",
                     bt_col_null(row, identity_col + 2) ? json_null() : json_integer(bt_col_int(row, identity_col + 2)));
}

/* A slot given by something else than the job's own enqueue or retry means it waited. */
static int waited(bt_row *row, int by_col, int at_col)
{
    if (bt_col_null(row, at_col))
        return 0;
    const char *by = bt_col_text(row, by_col);
    return strcmp(by, "enqueue") != 0 && strcmp(by, "retry") != 0;
}

typedef struct history {
    json_t *list;
    json_t *latest; /* events of the latest attempt, added after the recorded ones */
} history;

static int on_history_attempt(bt_row *row, void *payload)
{
    history *h = payload;
    json_t *list = h->list;
    if (waited(row, 7, 8) && !bt_col_null(row, 9))
        event(list, bt_col_int(row, 9), "blocked", json_pack("{s:I}", "attempt", (json_int_t)bt_col_int(row, 0)));
    if (waited(row, 7, 8))
        event(list, bt_col_int(row, 8), "unblocked",
              json_pack("{s:I, s:o}", "attempt", (json_int_t)bt_col_int(row, 0), "by", bt_json_text(row, 7)));
    json_t *process = process_json(row, 1, 2, 10);
    if (!bt_col_null(row, 3))
        event(list, bt_col_int(row, 3), "claimed",
              json_pack("{s:I, s:O}", "attempt", (json_int_t)bt_col_int(row, 0), "process", process));
    event(list, bt_col_int(row, 4), bt_col_text(row, 5),
          json_pack("{s:I, s:O, s:o}", "attempt", (json_int_t)bt_col_int(row, 0), "process", process, "error",
                    bt_json_text(row, 6)));
    json_decref(process);
    return 0;
}

static int on_history_job(bt_row *row, void *payload)
{
    history *h = payload;
    json_t *list = h->list;
    int64_t created = bt_col_int(row, 0), scheduled = bt_col_int(row, 1);
    const char *status = bt_col_text(row, 2);
    event(list, created, "enqueued", NULL);
    if (scheduled > created)
        event(list, created, "scheduled", json_pack("{s:o}", "run_at", bt_json_time(row, 1)));
    /* Events of one instant keep the order they are added in (see bt_job_history): the
     * latest attempt's come after the recorded attempts'. */
    list = h->latest;
    /* The slot of the latest attempt (failed attempts carry theirs in their rows). */
    int latest_ran = strcmp(status, "claimed") == 0 || strcmp(status, "finished") == 0 || strcmp(status, "ready") == 0;
    if (latest_ran && waited(row, 7, 8)) {
        if (!bt_col_null(row, 15))
            event(list, bt_col_int(row, 15), "blocked", json_pack("{s:o}", "key", bt_json_text(row, 9)));
        event(list, bt_col_int(row, 8), "unblocked",
              json_pack("{s:o, s:o, s:o}", "key", bt_json_text(row, 9), "by", bt_json_text(row, 7), "fencing_token",
                        bt_col_null(row, 14) ? json_null() : json_integer(bt_col_int(row, 14))));
    }
    if (!bt_col_null(row, 10))
        event(list, bt_col_int(row, 10), "blocked", json_pack("{s:o}", "key", bt_json_text(row, 9)));
    /* The latest attempt, when it is running or succeeded (failed ones have their rows). */
    int running = strcmp(status, "claimed") == 0, finished = strcmp(status, "finished") == 0;
    if ((running || finished) && !bt_col_null(row, 3))
        event(list, bt_col_int(row, 3), "claimed",
              json_pack("{s:I, s:o}", "attempt", (json_int_t)bt_col_int(row, 12), "process", process_json(row, 5, 6, 16)));
    if (finished && !bt_col_null(row, 4))
        event(list, bt_col_int(row, 4), "finished", json_pack("{s:I}", "attempt", (json_int_t)bt_col_int(row, 12)));
    if (strcmp(status, "discarded") == 0)
        event(list, bt_col_null(row, 4) ? bt_col_int(row, 13) : bt_col_int(row, 4), "discarded",
              json_pack("{s:o}", "reason", bt_json_text(row, 11)));
    return 0;
}

static int cmp_event(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "at_ms"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "at_ms"));
    return (x > y) - (x < y);
}

int bt_job_history(bt_store *s, int64_t id, json_t **out)
{
    json_t *list = json_array();
    history h = {list, json_array()};
    bt_val a[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_history_job, a, 1, on_history_job, &h, NULL);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_history_attempts, a, 1, on_history_attempt, &h, NULL);
    json_array_extend(list, h.latest);
    json_decref(h.latest);
    if (rc != BATON_OK) {
        json_decref(list);
        return rc;
    }
    /* In time order; events of one instant keep the order they were added in. */
    size_t n = json_array_size(list);
    json_t **items = calloc(n ? n : 1, sizeof *items);
    for (size_t i = 0; i < n; i++)
        items[i] = json_incref(json_array_get(list, i));
    for (size_t i = 1; i < n; i++) /* insertion sort: stable, and histories are short */
        for (size_t k = i; k > 0 && cmp_event(&items[k - 1], &items[k]) > 0; k--) {
            json_t *t = items[k - 1];
            items[k - 1] = items[k];
            items[k] = t;
        }
    json_array_clear(list);
    for (size_t i = 0; i < n; i++) {
        json_object_del(items[i], "at_ms");
        json_array_append_new(list, items[i]);
    }
    free(items);
    *out = list;
    return BATON_OK;
}
