/* schema.c: the schema as an ordered list of migrations. Each is written once for every
 * driver; {SERIAL} and {REAL} stand for the two type names the dialects spell differently.
 * Times are BIGINT milliseconds since the epoch (UTC). Executions tables hold one row per
 * job in that state, keyed by job id, so each state's hot query is an index range scan.
 * baton_jobs.status is deliberately not indexed: it changes at every transition, and each
 * index it sat in would add pages to every commit of the hot path; listings by state go
 * through the executions tables instead. */
#include "store/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"
#include "util/clock.h"
#include "util/err.h"

static const char migration_1[] =
    "CREATE TABLE baton_jobs ("
    "  id {SERIAL},"
    "  queue_name TEXT NOT NULL,"
    "  class_name TEXT NOT NULL,"
    "  arguments TEXT NOT NULL,"
    "  priority INTEGER NOT NULL DEFAULT 0,"
    "  status TEXT NOT NULL,"
    "  scheduled_at BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL,"
    "  started_at BIGINT,"
    "  finished_at BIGINT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts INTEGER NOT NULL DEFAULT 1,"
    "  backoff INTEGER NOT NULL DEFAULT 0,"
    "  backoff_base {REAL} NOT NULL DEFAULT 1,"
    "  timeout {REAL} NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  concurrency_key TEXT,"
    "  concurrency_limit INTEGER,"
    "  concurrency_duration {REAL},"
    "  on_conflict INTEGER,"
    "  fencing_token BIGINT);"
    "CREATE INDEX baton_jobs_by_class ON baton_jobs (class_name, id);"
    "CREATE INDEX baton_jobs_discarded ON baton_jobs (id) WHERE status = 'discarded';"
    "CREATE INDEX baton_jobs_by_finished ON baton_jobs (finished_at) WHERE finished_at IS NOT NULL;"
    "CREATE TABLE baton_ready_executions ("
    "  job_id BIGINT PRIMARY KEY REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  queue_name TEXT NOT NULL,"
    "  priority INTEGER NOT NULL,"
    "  created_at BIGINT NOT NULL);"
    "CREATE INDEX baton_ready_by_priority ON baton_ready_executions (priority, job_id);"
    "CREATE INDEX baton_ready_by_queue ON baton_ready_executions (queue_name, priority, job_id);"
    "CREATE TABLE baton_processes ("
    "  id {SERIAL},"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  hostname TEXT NOT NULL,"
    "  supervisor_id BIGINT,"
    "  metadata TEXT,"
    "  last_heartbeat_at BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL);"
    "CREATE INDEX baton_processes_by_heartbeat ON baton_processes (last_heartbeat_at);"
    "CREATE INDEX baton_processes_by_supervisor ON baton_processes (supervisor_id);"
    "CREATE TABLE baton_claimed_executions ("
    "  job_id BIGINT PRIMARY KEY REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  process_id BIGINT NOT NULL REFERENCES baton_processes (id),"
    "  claimed_at BIGINT NOT NULL);"
    "CREATE TABLE baton_blocked_executions ("
    "  job_id BIGINT PRIMARY KEY REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  queue_name TEXT NOT NULL,"
    "  priority INTEGER NOT NULL,"
    "  concurrency_key TEXT NOT NULL,"
    "  expires_at BIGINT NOT NULL,"
    "  claim_for BIGINT,"
    "  created_at BIGINT NOT NULL);"
    "CREATE INDEX baton_blocked_by_key ON baton_blocked_executions (concurrency_key, priority, job_id);"
    "CREATE INDEX baton_blocked_by_expiry ON baton_blocked_executions (expires_at, concurrency_key);"
    "CREATE TABLE baton_scheduled_executions ("
    "  job_id BIGINT PRIMARY KEY REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  queue_name TEXT NOT NULL,"
    "  priority INTEGER NOT NULL,"
    "  scheduled_at BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL);"
    "CREATE INDEX baton_scheduled_by_due ON baton_scheduled_executions (scheduled_at, priority, job_id);"
    "CREATE TABLE baton_failed_executions ("
    "  job_id BIGINT PRIMARY KEY REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  error TEXT,"
    "  created_at BIGINT NOT NULL);"
    "CREATE TABLE baton_semaphores ("
    "  key TEXT PRIMARY KEY,"
    "  limit_value INTEGER NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL);"
    /* One row per job holding a slot. The row's id is the job's fencing token: it only
     * grows and is never reused. Release is a delete by job, so it cannot happen twice. */
    "CREATE TABLE baton_semaphore_holders ("
    "  token {SERIAL},"
    "  key TEXT NOT NULL,"
    "  job_id BIGINT NOT NULL UNIQUE REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  acquired_at BIGINT NOT NULL,"
    "  expires_at BIGINT NOT NULL);"
    "CREATE INDEX baton_holders_by_key ON baton_semaphore_holders (key);"
    "CREATE TABLE baton_pauses ("
    "  queue_name TEXT PRIMARY KEY,"
    "  created_at BIGINT NOT NULL);"
    "CREATE TABLE baton_recurring_tasks ("
    "  key TEXT PRIMARY KEY,"
    "  schedule TEXT NOT NULL,"
    "  class_name TEXT NOT NULL,"
    "  arguments TEXT,"
    "  queue_name TEXT,"
    "  priority INTEGER,"
    "  static INTEGER NOT NULL DEFAULT 1,"
    "  description TEXT,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL);"
    "CREATE TABLE baton_recurring_executions ("
    "  id {SERIAL},"
    "  task_key TEXT NOT NULL,"
    "  run_at BIGINT NOT NULL,"
    "  job_id BIGINT,"
    "  created_at BIGINT NOT NULL,"
    "  UNIQUE (task_key, run_at));";

/* Recurring tasks run in a time zone of their own (NULL: UTC). */
static const char migration_2[] =
    "ALTER TABLE baton_recurring_tasks ADD COLUMN timezone TEXT;";

/* What a job's history needs, written by statements the lifecycle runs anyway: how and
 * when a limited job got its slot ("enqueue", "retry", "release of job N", "expiry",
 * "repair", "operator"), which process claimed its latest attempt, and one row per attempt
 * that did not succeed (a failure path, never the hot one). */
static const char migration_3[] =
    "ALTER TABLE baton_jobs ADD COLUMN admitted_by TEXT;"
    "ALTER TABLE baton_jobs ADD COLUMN admitted_at BIGINT;"
    "ALTER TABLE baton_jobs ADD COLUMN claimed_by BIGINT;"
    "CREATE TABLE baton_job_attempts ("
    "  id {SERIAL},"
    "  job_id BIGINT NOT NULL REFERENCES baton_jobs (id) ON DELETE CASCADE,"
    "  attempt INTEGER NOT NULL,"
    "  process_id BIGINT,"
    "  process_name TEXT,"
    "  started_at BIGINT,"
    "  ended_at BIGINT NOT NULL,"
    "  outcome TEXT NOT NULL,"
    "  error TEXT,"
    "  admitted_by TEXT,"
    "  admitted_at BIGINT);"
    "CREATE INDEX baton_job_attempts_by_job ON baton_job_attempts (job_id, attempt);";

/* When a limited job began to wait for the slot it was given (its latest attempt's, and
 * each failed attempt's), written by the statements that admit and record it anyway. */
static const char migration_4[] =
    "ALTER TABLE baton_jobs ADD COLUMN blocked_at BIGINT;"
    "ALTER TABLE baton_job_attempts ADD COLUMN blocked_at BIGINT;";

/* Who a process was (its id is the baton_processes id), kept after its registration row
 * is deleted so a job's history still names the process and host that ran its latest
 * attempt. Written once per registration, never on a job's path; the processes registered
 * when this migration runs are copied. */
static const char migration_5[] =
    "CREATE TABLE baton_process_identities ("
    "  id BIGINT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  hostname TEXT NOT NULL);"
    "INSERT INTO baton_process_identities (id, kind, name, pid, hostname)"
    " SELECT id, kind, name, pid, hostname FROM baton_processes;";

/* A claim's identity is its job and attempt (a job's attempts only grow, one per claim):
 * whatever ends, releases or hands back a claim names both, so a run whose claim was
 * taken away (its process pruned) never ends a later claim of the same job, even one its
 * own worker made after registering again. */
static const char migration_6[] =
    "ALTER TABLE baton_claimed_executions ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;"
    "UPDATE baton_claimed_executions SET attempt ="
    " (SELECT j.attempts FROM baton_jobs j WHERE j.id = baton_claimed_executions.job_id);";

/* Liveness is judged by one clock, baton_clock() in SQL, never by the clocks of the hosts
 * that heartbeat: the PostgreSQL server's (defined here, {CLOCK}), or on SQLite, where
 * every process runs on one host, that host's boot clock (a function each connection
 * adds). A process row carries the clock's value at its latest heartbeat (beat), when its
 * current run of heartbeats without a break began (beats_since), and its own alive
 * threshold in ms, by which every other process judges it (core.h, BT_SQL_DEAD). */
static const char migration_7[] =
    "{CLOCK}"
    "ALTER TABLE baton_processes ADD COLUMN beat BIGINT;"
    "ALTER TABLE baton_processes ADD COLUMN beats_since BIGINT;"
    "ALTER TABLE baton_processes ADD COLUMN alive_threshold BIGINT;"
    "UPDATE baton_processes SET beat = baton_clock(), beats_since = baton_clock();";

/* What a witness must show (core.h, BT_SQL_DEAD): the largest gap between two beats of a
 * process's current run (beat_gap), so a process that may go long between beats cannot
 * vouch for one that may not. And where a process runs (host_id: the host's boot and pid
 * namespace), so a peer there can prove it dead at once: its pid no longer exists. */
static const char migration_8[] =
    "ALTER TABLE baton_processes ADD COLUMN beat_gap BIGINT;"
    "ALTER TABLE baton_processes ADD COLUMN host_id TEXT;"
    "UPDATE baton_processes SET beat_gap = 0;";

static const char *const migrations[BT_SCHEMA_VERSION] = {migration_1, migration_2, migration_3, migration_4,
                                                          migration_5, migration_6, migration_7, migration_8};

static const char create_versions[] =
    "CREATE TABLE IF NOT EXISTS baton_schema_migrations ("
    "  version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)";
static const char select_version[] = "SELECT COALESCE(MAX(version), 0) FROM baton_schema_migrations";
static const char insert_version[] =
    "INSERT INTO baton_schema_migrations (version, applied_at) VALUES (?, ?)";

int bt_schema_current(bt_store *store, int *version)
{
    int64_t exists = 0, v = 0;
    *version = 0;
    bt_val name[] = {BV_TEXT("baton_schema_migrations")};
    int rc = bt_query_int(store, store->ops->sql_table_exists, name, 1, &exists, 0);
    if (rc == BATON_OK && exists)
        rc = bt_query_int(store, select_version, NULL, 0, &v, 0);
    if (rc == BATON_OK)
        *version = (int)v;
    return rc;
}

int bt_schema_check(bt_store *store)
{
    int v;
    int rc = bt_schema_current(store, &v);
    if (rc != BATON_OK)
        return rc;
    if (v > BT_SCHEMA_VERSION)
        return bt_err_set(BATON_ESCHEMA,
                          "%s: schema version %d is newer than this Baton (%d); upgrade Baton",
                          store->url, v, BT_SCHEMA_VERSION);
    if (v < BT_SCHEMA_VERSION)
        return bt_err_set(BATON_ESCHEMA, "%s: %s (run 'baton init')", store->url,
                          v == 0 ? "no Baton schema" : "schema is older than this Baton");
    return BATON_OK;
}

/* expand_into writes sql with its placeholders replaced into out (when not NULL) and
 * returns the length of the result. */
static size_t expand_into(const bt_store_ops *ops, const char *sql, char *out)
{
    static const char *const names[] = {"{SERIAL}", "{REAL}", "{CLOCK}"};
    const char *reps[] = {ops->ddl_serial, ops->ddl_real, ops->ddl_clock};
    size_t len = 0;
    for (const char *p = sql; *p;) {
        size_t i = 0, name = 0;
        while (i < 3 && strncmp(p, names[i], name = strlen(names[i])) != 0)
            i++;
        const char *from = i < 3 ? reps[i] : p;
        size_t n = i < 3 ? strlen(reps[i]) : 1;
        if (out)
            memcpy(out + len, from, n);
        len += n;
        p += i < 3 ? name : 1;
    }
    if (out)
        out[len] = '\0';
    return len;
}

char *bt_schema_expand(const bt_store_ops *ops, const char *sql)
{
    char *out = malloc(expand_into(ops, sql, NULL) + 1);
    if (out)
        expand_into(ops, sql, out);
    return out;
}

int bt_schema_migrate(bt_store *store)
{
    int rc = bt_begin(store, BT_TXN_WRITE);
    if (rc != BATON_OK)
        return rc;
    if (store->ops->sql_lock_schema)
        rc = bt_exec(store, store->ops->sql_lock_schema, NULL, 0, NULL, NULL, NULL);
    int v = 0;
    if (rc == BATON_OK)
        rc = bt_schema_current(store, &v);
    if (rc == BATON_OK && v > BT_SCHEMA_VERSION) {
        bt_rollback(store);
        return bt_schema_check(store);
    }
    if (rc == BATON_OK)
        rc = store->ops->exec_script(store, create_versions);
    /* One write transaction for all steps: two `baton init` racing on a new file serialise
     * on the write lock and the second finds nothing to do. */
    for (int next = v + 1; rc == BATON_OK && next <= BT_SCHEMA_VERSION; next++) {
        char *sql = bt_schema_expand(store->ops, migrations[next - 1]);
        rc = sql ? store->ops->exec_script(store, sql) : bt_err_set(BATON_ERROR, "out of memory");
        free(sql);
        if (rc == BATON_OK) {
            bt_val args[] = {BV_INT(next), BV_INT(bt_now_ms())};
            rc = bt_exec(store, insert_version, args, 2, NULL, NULL, NULL);
        }
        if (rc != BATON_OK)
            bt_err_prefix(rc, "migration %d", next);
    }
    return bt_end(store, rc);
}
