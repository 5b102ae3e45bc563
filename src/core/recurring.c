/* recurring.c: recurring tasks in baton_recurring_tasks and their runs in
 * baton_recurring_executions.
 *
 * A run is the pair (task, run time), unique in the executions table. The scheduler that
 * inserts the pair enqueues the run's job in the same transaction; one that finds the pair
 * there already (another scheduler was first) enqueues nothing. That makes a run enqueued
 * exactly once however many schedulers share the database, without locks of their own. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/clock.h"
#include "util/err.h"

static const char sql_load_tasks[] =
    "SELECT t.key, t.class_name, t.arguments, t.schedule, t.queue_name, t.priority, t.timezone,"
    " t.description, t.static,"
    " (SELECT MAX(e.run_at) FROM baton_recurring_executions e WHERE e.task_key = t.key)"
    " FROM baton_recurring_tasks t ORDER BY t.key";

static char *dup_col(bt_row *row, int col, int *failed)
{
    if (bt_col_null(row, col))
        return NULL;
    char *s = strdup(bt_col_text(row, col));
    *failed |= !s;
    return s;
}

static int read_task(bt_row *row, void *payload)
{
    bt_task_list *l = payload;
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        bt_task *grown = realloc(l->items, cap * sizeof *grown);
        if (!grown)
            return -1;
        l->items = grown;
        l->cap = cap;
    }
    int failed = 0;
    bt_task *t = &l->items[l->len++];
    *t = (bt_task){
        .def = {.key = dup_col(row, 0, &failed),
                .class_name = dup_col(row, 1, &failed),
                .arguments = bt_col_null(row, 2) ? strdup("[]") : dup_col(row, 2, &failed),
                .schedule = dup_col(row, 3, &failed),
                .queue = dup_col(row, 4, &failed),
                .has_priority = !bt_col_null(row, 5),
                .priority = (int)bt_col_int(row, 5),
                .timezone = dup_col(row, 6, &failed),
                .description = dup_col(row, 7, &failed)},
        .is_static = bt_col_int(row, 8) != 0,
        .last_run_at = bt_col_int(row, 9),
    };
    return failed || !t->def.arguments ? -1 : 0;
}

int bt_recurring_load(bt_store *s, bt_task_list *out)
{
    *out = (bt_task_list){0};
    int rc = bt_exec(s, sql_load_tasks, NULL, 0, read_task, out, NULL);
    if (rc != BATON_OK)
        bt_task_list_free(out);
    return rc;
}

void bt_task_list_free(bt_task_list *l)
{
    for (size_t i = 0; i < l->len; i++)
        bt_recurring_config_clear(&l->items[i].def);
    free(l->items);
    *l = (bt_task_list){0};
}

int bt_recurring_next(const bt_cron *c, const bt_tz *tz, int64_t after, int64_t now, int64_t *next)
{
    int64_t following;
    int rc = bt_cron_next(c, tz, after, next);
    if (rc == BATON_OK && *next <= now && (rc = bt_cron_next(c, tz, *next, &following)) == BATON_OK &&
        following <= now)
        rc = bt_cron_next(c, tz, now, next);
    return rc;
}

/* ---- writing tasks ---- */

#define TASK_VALUES                                                                         \
    "(key, schedule, class_name, arguments, queue_name, priority, timezone, description,"  \
    " static, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)" \
    " ON CONFLICT (key) DO UPDATE SET schedule = excluded.schedule,"                        \
    " class_name = excluded.class_name, arguments = excluded.arguments,"                    \
    " queue_name = excluded.queue_name, priority = excluded.priority,"                      \
    " timezone = excluded.timezone, description = excluded.description,"                    \
    " static = excluded.static, updated_at = excluded.updated_at"

/* The configuration wins over a dynamic task of the same name; a dynamic task never
 * replaces a static one. */
static const char sql_upsert_static[] = "INSERT INTO baton_recurring_tasks " TASK_VALUES;
static const char sql_upsert_dynamic[] =
    "INSERT INTO baton_recurring_tasks " TASK_VALUES " WHERE baton_recurring_tasks.static = 0";
static const char sql_static_keys[] = "SELECT key FROM baton_recurring_tasks WHERE static = 1";
static const char sql_remove_static[] = "DELETE FROM baton_recurring_tasks WHERE key = ? AND static = 1";
static const char sql_remove_dynamic[] = "DELETE FROM baton_recurring_tasks WHERE key = ? AND static = 0";
static const char sql_task_exists[] = "SELECT COUNT(*) FROM baton_recurring_tasks WHERE key = ?";

static int upsert(bt_store *s, const char *sql, const bt_recurring_config *t, int is_static,
                  int64_t now, int64_t *changes)
{
    bt_val a[] = {BV_TEXT(t->key), BV_TEXT(t->schedule), BV_TEXT(t->class_name),
                  BV_TEXT(t->arguments), BV_TEXT(t->queue),
                  t->has_priority ? BV_INT(t->priority) : BV_NULL, BV_TEXT(t->timezone),
                  BV_TEXT(t->description), BV_INT(is_static), BV_INT(now)};
    return bt_exec(s, sql, a, 10, NULL, NULL, changes);
}

static int in_config(const bt_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->nrecurring; i++)
        if (strcmp(cfg->recurring[i].key, key) == 0)
            return 1;
    return 0;
}

int bt_recurring_sync_static(bt_store *s, const bt_config *cfg, int64_t now, size_t *removed_out)
{
    bt_text_list stale = {0};
    size_t removed = 0;
    int rc = bt_exec(s, sql_static_keys, NULL, 0, bt_row_collect_text, &stale, NULL);
    for (size_t i = 0; i < stale.len && rc == BATON_OK; i++)
        if (!in_config(cfg, stale.items[i])) {
            bt_val a[] = {BV_TEXT(stale.items[i])};
            rc = bt_exec(s, sql_remove_static, a, 1, NULL, NULL, NULL);
            removed++;
        }
    for (size_t i = 0; i < cfg->nrecurring && rc == BATON_OK; i++)
        rc = upsert(s, sql_upsert_static, &cfg->recurring[i], 1, now, NULL);
    bt_text_list_free(&stale);
    if (removed_out)
        *removed_out = removed;
    return rc;
}

int baton_recurring_add(baton_client *c, const char *key, const char *class_name,
                        const char *schedule, const char *args_json,
                        const baton_recurring_options *opts)
{
    baton_recurring_options defaults = BATON_RECURRING_OPTIONS_INIT;
    const baton_recurring_options *o = opts ? opts : &defaults;
    if (o->version != BATON_RECURRING_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "unknown recurring options version %u", o->version);
    if (!key || !*key)
        return bt_err_set(BATON_EINVALID, "recurring task name must not be empty");
    if (!schedule)
        return bt_err_set(BATON_EINVALID, "recurring task %s: missing schedule", key);
    bt_cron cron;
    const bt_tz *tz;
    int rc = bt_schedule_parse(schedule, &cron);
    if (rc == BATON_OK)
        rc = bt_tz_load(o->timezone, &tz);
    /* The task's jobs must be ones baton_enqueue() accepts: try one without storing it. */
    baton_enqueue_options eo = BATON_ENQUEUE_OPTIONS_INIT;
    eo.queue = o->queue;
    eo.has_priority = o->has_priority;
    eo.priority = o->priority;
    baton_job_spec spec = {class_name, args_json, &eo};
    bt_new_job job;
    if (rc == BATON_OK && (rc = bt_prepare_job(c, &spec, bt_now_ms(), &job)) == BATON_OK)
        bt_new_job_clear(&job);
    if (rc != BATON_OK)
        return rc;
    /* Borrowed strings for the upsert only; never freed through t. */
    bt_recurring_config t = {.key = (char *)key,
                             .class_name = (char *)class_name,
                             .arguments = (char *)(args_json ? args_json : "[]"),
                             .schedule = (char *)schedule,
                             .queue = (char *)o->queue,
                             .has_priority = o->has_priority,
                             .priority = o->priority,
                             .timezone = (char *)o->timezone,
                             .description = (char *)o->description};
    int64_t changes = 0;
    rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = upsert(c->store, sql_upsert_dynamic, &t, 0, bt_now_ms(), &changes);
    if (rc == BATON_OK && changes == 0)
        rc = bt_err_set(BATON_ESTATE,
                        "recurring task '%s' comes from the configuration; change it there", key);
    rc = bt_end(c->store, rc);
    if (rc == BATON_OK)
        bt_log(c, BATON_LOG_INFO, "event=recurring.added task=%s schedule=%s", BT_LOG_VALUE(key), BT_LOG_VALUE(cron.text));
    return rc;
}

int baton_recurring_remove(baton_client *c, const char *key)
{
    if (!key || !*key)
        return bt_err_set(BATON_EINVALID, "recurring task name must not be empty");
    bt_val a[] = {BV_TEXT(key)};
    int64_t changes = 0, exists = 0;
    int rc = bt_begin(c->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_exec(c->store, sql_remove_dynamic, a, 1, NULL, NULL, &changes);
    if (rc == BATON_OK && changes == 0 &&
        (rc = bt_query_int(c->store, sql_task_exists, a, 1, &exists, 0)) == BATON_OK)
        rc = exists ? bt_err_set(BATON_ESTATE,
                                 "recurring task '%s' comes from the configuration; remove it there", key)
                    : bt_err_set(BATON_ENOTFOUND, "no recurring task '%s'", key);
    rc = bt_end(c->store, rc);
    if (rc == BATON_OK)
        bt_log(c, BATON_LOG_INFO, "event=recurring.removed task=%s", BT_LOG_VALUE(key));
    return rc;
}

/* ---- runs ---- */

static const char sql_insert_run[] =
    "INSERT INTO baton_recurring_executions (task_key, run_at, created_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (task_key, run_at) DO NOTHING";
static const char sql_set_run_job[] =
    "UPDATE baton_recurring_executions SET job_id = ?3 WHERE task_key = ?1 AND run_at = ?2";

int bt_recurring_enqueue(bt_store *s, const char *key, int64_t run_at, const bt_new_job *job,
                         int64_t now, int64_t *job_id_out)
{
    int64_t taken = 0;
    *job_id_out = 0;
    bt_val a[] = {BV_TEXT(key), BV_INT(run_at), BV_INT(now)};
    int rc = bt_exec(s, sql_insert_run, a, 3, NULL, NULL, &taken);
    if (rc != BATON_OK || taken == 0)
        return rc;
    bt_landing landing;
    rc = bt_enqueue_rows(s, job, 1, now, 0, job_id_out, &landing);
    if (rc == BATON_OK) {
        bt_val b[] = {BV_TEXT(key), BV_INT(run_at), BV_INT(*job_id_out)};
        rc = bt_exec(s, sql_set_run_job, b, 3, NULL, NULL, NULL);
    }
    return rc;
}

/* ---- listing ---- */

static json_t *json_time_or_null(int64_t ms)
{
    char buf[BT_ISO_LEN];
    if (!ms)
        return json_null();
    bt_iso8601(ms, buf);
    return json_string(buf);
}

static json_t *json_text_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *task_json(const bt_task *task, int64_t now)
{
    const bt_recurring_config *t = &task->def;
    bt_cron cron;
    const bt_tz *tz;
    int64_t next = 0;
    if (bt_cron_parse(t->schedule, &cron) != BATON_OK || bt_tz_load(t->timezone, &tz) != BATON_OK ||
        bt_recurring_next(&cron, tz, task->last_run_at ? task->last_run_at : now, now, &next) != BATON_OK)
        next = 0; /* a task stored by something else that no scheduler can run */
    json_t *args = json_loads(t->arguments, JSON_DECODE_ANY, NULL);
    json_t *o = json_object();
    json_object_set_new(o, "key", json_string(t->key));
    json_object_set_new(o, "class", json_string(t->class_name));
    json_object_set_new(o, "schedule", json_string(t->schedule));
    json_object_set_new(o, "timezone", json_string(t->timezone ? t->timezone : "UTC"));
    json_object_set_new(o, "args", args ? args : json_string(t->arguments));
    json_object_set_new(o, "queue", json_text_or_null(t->queue));
    json_object_set_new(o, "priority", t->has_priority ? json_integer(t->priority) : json_null());
    json_object_set_new(o, "static", json_boolean(task->is_static));
    json_object_set_new(o, "description", json_text_or_null(t->description));
    json_object_set_new(o, "last_run_at", json_time_or_null(task->last_run_at));
    json_object_set_new(o, "next_run_at", json_time_or_null(next));
    return o;
}

int baton_recurring_json(baton_client *c, char **json_out)
{
    *json_out = NULL;
    bt_task_list tasks;
    int rc = bt_recurring_load(c->store, &tasks);
    if (rc != BATON_OK)
        return rc;
    int64_t now = bt_now_ms();
    json_t *list = json_array();
    for (size_t i = 0; i < tasks.len; i++)
        json_array_append_new(list, task_json(&tasks.items[i], now));
    bt_task_list_free(&tasks);
    return bt_json_dump(list, json_out);
}
