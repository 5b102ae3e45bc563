/* lifecycle.c: every state change of a job, written once for all drivers.
 *
 * A job's state is the execution row that holds it (ready, claimed, scheduled, failed,
 * blocked) plus the status column of baton_jobs, which the same transaction updates so
 * reports never have to join five tables. A claim belongs to a process and is named by its
 * job and attempt (attempts grow by one at each claim, see schema.c): completing a run is a
 * delete of its claim row by (process, job, attempt), and a run whose claim is gone (handed
 * back at shutdown, pruned as dead) finds nothing to delete and writes nothing, even when
 * its process has claimed the same job again since. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/grow.h"
#include "util/utf8.h"

/* Rows of several jobs go in one statement each (see bt_sql_list); run_list runs one. */
static bt_sql_list sql_insert_jobs = {
    .head = "INSERT INTO baton_jobs (queue_name, class_name, arguments, priority, status, scheduled_at,"
            " created_at, updated_at, max_attempts, backoff, backoff_base, timeout, concurrency_key,"
            " concurrency_limit, concurrency_duration, on_conflict) VALUES ",
    .item = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    .tail = " RETURNING id"};
enum { JOB_VALUES = 16 };
static bt_sql_list sql_insert_ready = {
    .head = "INSERT INTO baton_ready_executions (job_id, queue_name, priority, created_at) VALUES ",
    .item = "(?, ?, ?, ?)",
    .tail = ""};
static bt_sql_list sql_insert_scheduled = {
    .head = "INSERT INTO baton_scheduled_executions (job_id, queue_name, priority, scheduled_at, created_at)"
            " VALUES ",
    .item = "(?, ?, ?, ?, ?)",
    .tail = ""};
#define CLAIMED_COLUMNS                                                                     \
    "class_name, queue_name, arguments, concurrency_key, attempts, max_attempts, backoff," \
    " backoff_base, timeout, fencing_token, priority"
/* The update that makes jobs claimed, given the placeholders of now and of the process. */
#define MARK_CLAIMED(now, process)                                                          \
    "UPDATE baton_jobs SET status = 'claimed', attempts = attempts + 1, started_at = " now \
    ", updated_at = " now ", claimed_by = " process
/* ?1: now, ?2: the claiming process; then the job ids. */
static bt_sql_list sql_mark_claimed = {
    .head = MARK_CLAIMED("?1", "?2") " WHERE id IN (",
    .item = "?",
    .tail = ") RETURNING id, " CLAIMED_COLUMNS};
static bt_sql_list sql_insert_claimed = {
    .head = "INSERT INTO baton_claimed_executions (job_id, process_id, claimed_at, attempt)"
            " SELECT id, ?2, ?1, attempts FROM baton_jobs WHERE id IN (",
    .item = "?",
    .tail = ")"};
static const char sql_set_status[] =
    "UPDATE baton_jobs SET status = ?2, updated_at = ?3 WHERE id = ?1";

static int run_list_as(bt_store *s, int flags, bt_sql_list *l, int n, const bt_val *args, int nargs,
                       bt_row_fn fn, void *payload, int64_t *changes)
{
    const char *sql = bt_sql_list_text(l, n);
    if (!sql)
        return bt_err_set(BATON_ERROR, "out of memory");
    return s->ops->exec(s, sql, flags, args, nargs, fn, payload, changes);
}

static int run_list(bt_store *s, bt_sql_list *l, int n, const bt_val *args, int nargs, bt_row_fn fn,
                    void *payload, int64_t *changes)
{
    return run_list_as(s, BT_EXEC_CACHED, l, n, args, nargs, fn, payload, changes);
}

/* ---- admission: the only place a job gets a slot of its concurrency key ----
 *
 * DESIGN
 * A key's slots are the rows of baton_semaphore_holders with that key, one per admitted
 * job; the key's baton_semaphores row carries its limit and is what PostgreSQL locks to
 * serialise decisions about the key (SQLite's single writer serialises them already).
 * Admission counts holders; release deletes the holder row of one job, so releasing twice
 * deletes nothing the second time and promotes nobody. Every release promotes the next
 * blocked job of the key (priority, then enqueue order) in the same transaction, so a slot
 * never sits free while a job of its key is blocked. A key's row, once made, is never
 * deleted: an admission waiting for its lock would then lock nothing and count holders
 * beside another admission that did the same. */

/* A job that needs a place to wait or run. */
typedef struct candidate {
    int64_t id;
    const char *queue;
    int priority;
    const char *key;        /* NULL: not limited */
    int limit;
    double duration;
    int on_conflict;
    int64_t claim_for;      /* nonzero: admitted straight into a claim of this process */
    const char *admitted_by; /* how it gets its slot (NULL: "enqueue"), see schema.c */
    int64_t blocked_at;      /* when it began to wait for the slot, or 0 */
} candidate;

static const char sql_upsert_semaphore[] =
    "INSERT INTO baton_semaphores (key, limit_value, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)"
    " ON CONFLICT (key) DO NOTHING";
static const char sql_lock_semaphore[] =
    "SELECT limit_value FROM baton_semaphores WHERE key = ? FOR UPDATE";
static const char sql_count_holders[] =
    "SELECT COUNT(*) FROM baton_semaphore_holders WHERE key = ?";
static bt_sql_list sql_insert_holders = {
    .head = "INSERT INTO baton_semaphore_holders (key, job_id, acquired_at, expires_at) VALUES ",
    .item = "(?, ?, ?, ?)",
    .tail = ""};
/* The token is read in SQL, so no statement of a slot's admission waits for a result. */
static const char sql_set_token[] =
    "UPDATE baton_jobs SET status = ?2, updated_at = ?3, admitted_by = ?4, admitted_at = ?3, blocked_at = ?5,"
    " fencing_token = (SELECT token FROM baton_semaphore_holders h WHERE h.job_id = ?1) WHERE id = ?1";
static const char sql_first_blocked[] =
    "SELECT job_id FROM baton_blocked_executions WHERE concurrency_key = ?"
    " ORDER BY priority, job_id LIMIT 1";
static const char sql_insert_blocked[] =
    "INSERT INTO baton_blocked_executions (job_id, queue_name, priority, concurrency_key,"
    " expires_at, claim_for, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
static const char sql_mark_discarded_reason[] =
    "UPDATE baton_jobs SET status = 'discarded', finished_at = ?2, updated_at = ?2, error = ?3"
    " WHERE id = ?1";

static int64_t lease_end(int64_t now, double duration) { return now + (int64_t)(duration * 1000.0); }

/* claim_rows makes the n jobs ids claimed by process_id (their ready rows, if any, already
 * gone), reading each claimed row through on_row. */
static int claim_rows(bt_store *s, int64_t process_id, const int64_t *ids, int n, int64_t now,
                      bt_row_fn on_row, void *payload)
{
    bt_val a[2 + BT_LIST_MAX];
    a[0] = BV_INT(now);
    a[1] = BV_INT(process_id);
    for (int i = 0; i < n; i++)
        a[2 + i] = BV_INT(ids[i]);
    int rc = run_list(s, &sql_mark_claimed, n, a, 2 + n, on_row, payload, NULL);
    return rc == BATON_OK ? run_list(s, &sql_insert_claimed, n, a, 2 + n, NULL, NULL, NULL) : rc;
}

/* place puts an admitted (or unlimited) job where it runs: ready, or claimed by the inline
 * process waiting for it. */
static int place(bt_store *s, const candidate *c, int holds_slot, int64_t now, bt_landing *landing)
{
    int rc;
    if (c->claim_for) {
        rc = claim_rows(s, c->claim_for, &c->id, 1, now, NULL, NULL);
    } else {
        bt_val a[] = {BV_INT(c->id), BV_TEXT(c->queue), BV_INT(c->priority), BV_INT(now)};
        rc = run_list(s, &sql_insert_ready, 1, a, 4, NULL, NULL, NULL);
        bt_note_ready(s);
    }
    if (rc == BATON_OK && holds_slot) {
        bt_val t[] = {BV_INT(c->id), BV_TEXT(c->claim_for ? "claimed" : "ready"), BV_INT(now),
                      BV_TEXT(c->admitted_by ? c->admitted_by : "enqueue"),
                      c->blocked_at ? BV_INT(c->blocked_at) : BV_NULL};
        rc = bt_exec(s, sql_set_token, t, 5, NULL, NULL, NULL);
    }
    if (landing)
        landing->state = c->claim_for ? BATON_JOB_CLAIMED : BATON_JOB_READY;
    return rc;
}

/* insert_holders makes the n jobs cs holders of their keys. */
static int insert_holders(bt_store *s, const candidate *cs, int n, int64_t now)
{
    bt_val h[4 * BT_LIST_MAX];
    for (int i = 0; i < n; i++) {
        h[4 * i] = BV_TEXT(cs[i].key);
        h[4 * i + 1] = BV_INT(cs[i].id);
        h[4 * i + 2] = BV_INT(now);
        h[4 * i + 3] = BV_INT(lease_end(now, cs[i].duration));
    }
    return run_list(s, &sql_insert_holders, n, h, 4 * n, NULL, NULL, NULL);
}

/* take_slot makes c a holder of its key and places it. */
static int take_slot(bt_store *s, const candidate *c, int64_t now, bt_landing *landing)
{
    int rc = insert_holders(s, c, 1, now);
    return rc == BATON_OK ? place(s, c, 1, now, landing) : rc;
}

/* count_holders counts key's holders; where writers run side by side it first locks the
 * key's semaphore row, which every decision about the key's slots takes, so the count
 * stays true until commit. */
static int lock_semaphore(bt_store *s, const char *key)
{
    bt_val k[] = {BV_TEXT(key)};
    return s->ops->row_locks ? bt_exec(s, sql_lock_semaphore, k, 1, NULL, NULL, NULL) : BATON_OK;
}

static int cmp_text(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* lock_keys_of locks the key rows that sql (its one parameter: arg) names, in the order
 * every transaction locks keys in: strcmp's, whatever the database's collation. */
static int lock_keys_of(bt_store *s, const char *sql, int64_t arg)
{
    if (!s->ops->row_locks)
        return BATON_OK;
    bt_text_list keys = {0};
    bt_val a[] = {BV_INT(arg)};
    int rc = bt_exec(s, sql, a, 1, bt_row_collect_text, &keys, NULL);
    if (rc == BATON_OK && keys.len)
        qsort(keys.items, keys.len, sizeof *keys.items, cmp_text);
    for (size_t i = 0; i < keys.len && rc == BATON_OK; i++)
        rc = lock_semaphore(s, keys.items[i]);
    bt_text_list_free(&keys);
    return rc;
}

static const char sql_job_key[] = "SELECT concurrency_key FROM baton_jobs WHERE id = ? AND concurrency_key IS NOT NULL";

int bt_lock_job_key(bt_store *s, int64_t id) { return lock_keys_of(s, sql_job_key, id); }

static int count_holders(bt_store *s, const char *key, int64_t *holders)
{
    bt_val k[] = {BV_TEXT(key)};
    int rc = lock_semaphore(s, key);
    return rc == BATON_OK ? bt_query_int(s, sql_count_holders, k, 1, holders, 0) : rc;
}

static int lock_key(bt_store *s, const char *key, int limit, int64_t now, int64_t *holders)
{
    bt_val u[] = {BV_TEXT(key), BV_INT(limit), BV_INT(now)};
    int rc = bt_exec(s, sql_upsert_semaphore, u, 3, NULL, NULL, NULL);
    return rc == BATON_OK ? count_holders(s, key, holders) : rc;
}

static int discard_with_reason(bt_store *s, int64_t id, const char *reason, int64_t now)
{
    bt_val d[] = {BV_INT(id), BV_INT(now), BV_TEXT(reason)};
    bt_note(s, BATON_LOG_INFO, "event=job.discarded job_id=%lld reason=%s", (long long)id,
            BT_LOG_VALUE(reason));
    return bt_exec(s, sql_mark_discarded_reason, d, 3, NULL, NULL, NULL);
}

/* admit gives c a slot, or lets it wait or go according to its on_conflict mode. */
static int admit(bt_store *s, const candidate *c, int64_t now, bt_landing *landing)
{
    if (landing)
        *landing = (bt_landing){0};
    if (!c->key)
        return place(s, c, 0, now, landing);
    int64_t holders = 0;
    int rc = lock_key(s, c->key, c->limit, now, &holders);
    if (rc != BATON_OK)
        return rc;
    if (holders < c->limit)
        return take_slot(s, c, now, landing);
    if (c->on_conflict == BATON_ON_CONFLICT_DISCARD) {
        if (landing)
            landing->state = BATON_JOB_DISCARDED;
        return discard_with_reason(s, c->id, "concurrency limit", now);
    }
    if (c->on_conflict == BATON_ON_CONFLICT_COALESCE) {
        int64_t waiting = 0;
        bt_val k[] = {BV_TEXT(c->key)};
        rc = bt_query_int(s, sql_first_blocked, k, 1, &waiting, 0);
        if (rc == BATON_OK && waiting) {
            char reason[64];
            snprintf(reason, sizeof reason, "coalesced into job %lld", (long long)waiting);
            if (landing) {
                landing->state = BATON_JOB_DISCARDED;
                landing->coalesced_into = waiting;
            }
            return discard_with_reason(s, c->id, reason, now);
        }
        if (rc != BATON_OK)
            return rc;
    }
    bt_val b[] = {BV_INT(c->id), BV_TEXT(c->queue), BV_INT(c->priority), BV_TEXT(c->key),
                  BV_INT(lease_end(now, c->duration)), c->claim_for ? BV_INT(c->claim_for) : BV_NULL,
                  BV_INT(now)};
    rc = bt_exec(s, sql_insert_blocked, b, 7, NULL, NULL, NULL);
    if (rc == BATON_OK) {
        bt_val st[] = {BV_INT(c->id), BV_TEXT("blocked"), BV_INT(now)};
        rc = bt_exec(s, sql_set_status, st, 3, NULL, NULL, NULL);
    }
    bt_note(s, BATON_LOG_INFO, "event=job.blocked job_id=%lld key=%s", (long long)c->id,
            BT_LOG_VALUE(c->key));
    if (landing)
        landing->state = BATON_JOB_BLOCKED;
    return rc;
}

typedef struct blocked_row {
    candidate c;
    char *queue;
    char *key;
    int rows;       /* rows read: the best blocked job, and whether another follows */
    int next_limit; /* the stored limit of the one after it */
    int64_t holders;
} blocked_row;

/* The best two, with the key's holders counted: the second tells whether a slot left free
 * after the first could go to another job, without asking again. Run with the key's
 * semaphore row locked, so the count stays true. */
#define SQL_NEXT_BLOCKED(lock)                                                           \
    "SELECT b.job_id, b.queue_name, b.priority, b.concurrency_key, b.claim_for,"           \
    " j.concurrency_limit, j.concurrency_duration, b.created_at,"                           \
    " (SELECT COUNT(*) FROM baton_semaphore_holders h WHERE h.key = b.concurrency_key)"     \
    " FROM baton_blocked_executions b JOIN baton_jobs j ON j.id = b.job_id"                 \
    " WHERE b.concurrency_key = ? ORDER BY b.priority, b.job_id LIMIT 2" lock
/* Only the blocked rows are locked: the job's row is not what promotions compete for.
 * Whatever changes a key's waiting jobs takes the key's row first, so this lock hardly ever
 * waits; it must not skip what it finds locked (SKIP LOCKED), though: a transaction that
 * locked a waiting job and then rolls back would leave that job blocked beside a free slot. */
static const char *const sql_next_blocked[] = {SQL_NEXT_BLOCKED(""), SQL_NEXT_BLOCKED(" FOR UPDATE OF b")};
/* The same for several keys in one statement, one arm per key. */
#define SQL_NEXT_BLOCKED_ARM(lock) "SELECT * FROM (" SQL_NEXT_BLOCKED(lock) ") AS next_blocked"
static bt_sql_list sql_next_blocked_of_keys[] = {
    {.head = "", .item = SQL_NEXT_BLOCKED_ARM(""), .tail = "", .sep = " UNION ALL "},
    {.head = "", .item = SQL_NEXT_BLOCKED_ARM(" FOR UPDATE OF b"), .tail = "", .sep = " UNION ALL "}};
static bt_sql_list sql_unblock = {
    .head = "DELETE FROM baton_blocked_executions WHERE job_id IN (", .item = "?", .tail = ")"};
/* ?1: now; then each job's id, what admitted it and when it began to wait. */
static bt_sql_list sql_admit_ready = {
    .head = "UPDATE baton_jobs SET status = 'ready', updated_at = ?1, admitted_at = ?1, admitted_by = v.column2,"
            " blocked_at = v.column3,"
            " fencing_token = (SELECT token FROM baton_semaphore_holders h WHERE h.job_id = baton_jobs.id)"
            " FROM (VALUES ",
    .item = "(?, ?, ?)",
    .tail = ") AS v WHERE baton_jobs.id = v.column1"};

static int read_blocked(bt_row *row, void *payload)
{
    blocked_row *b = payload;
    if (b->rows++ == 1) {
        b->next_limit = (int)bt_col_int(row, 5);
        return 1;
    }
    b->queue = strdup(bt_col_text(row, 1));
    b->key = strdup(bt_col_text(row, 3));
    b->c = (candidate){.id = bt_col_int(row, 0), .queue = b->queue, .priority = (int)bt_col_int(row, 2),
                       .key = b->key, .claim_for = bt_col_int(row, 4),
                       .limit = (int)bt_col_int(row, 5), .duration = bt_col_real(row, 6),
                       .blocked_at = bt_col_int(row, 7)};
    b->holders = bt_col_int(row, 8);
    return b->queue && b->key ? 0 : -1;
}

static void blocked_row_clear(blocked_row *b)
{
    free(b->queue);
    free(b->key);
    *b = (blocked_row){0};
}

/* The best blocked jobs of several keys, read by one statement. */
typedef struct blocked_of_keys {
    const char *const *keys;
    blocked_row *rows; /* by the index of the key */
    int n;
} blocked_of_keys;

static int read_blocked_of_keys(bt_row *row, void *payload)
{
    blocked_of_keys *l = payload;
    const char *key = bt_col_text(row, 3);
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->keys[i], key) == 0)
            return read_blocked(row, &l->rows[i]) < 0 ? -1 : 0;
    return 0;
}

/* lock_keys locks the semaphore rows of n keys in the order given. */
static int lock_keys(bt_store *s, const char *const *keys, int n)
{
    int rc = BATON_OK;
    for (int i = 0; i < n && rc == BATON_OK; i++)
        rc = lock_semaphore(s, keys[i]);
    return rc;
}

/* read_next_blocked reads the best two blocked jobs of each of n distinct keys, locked
 * already, with its holders counted, as promote's first step does for one key. */
static int read_next_blocked(bt_store *s, const char *const *keys, int n, blocked_row *rows)
{
    bt_val a[BT_LIST_MAX];
    for (int i = 0; i < n; i++)
        a[i] = BV_TEXT(keys[i]);
    blocked_of_keys l = {keys, rows, n};
    return run_list(s, &sql_next_blocked_of_keys[s->ops->row_locks], n, a, n, read_blocked_of_keys, &l, NULL);
}

/* admit_blocked gives n <= BT_LIST_MAX blocked jobs slots of their keys, which the caller
 * has locked and counted: the jobs that land ready take four statements for all of them,
 * a job an inline perform waits for is claimed for it. */
static int admit_blocked(bt_store *s, const candidate *cs, int n, int64_t now)
{
    bt_val a[1 + 3 * BT_LIST_MAX];
    for (int i = 0; i < n; i++)
        a[i] = BV_INT(cs[i].id);
    int rc = run_list(s, &sql_unblock, n, a, n, NULL, NULL, NULL);
    if (rc == BATON_OK)
        rc = insert_holders(s, cs, n, now);
    int ready = 0;
    bt_val r[4 * BT_LIST_MAX];
    a[0] = BV_INT(now);
    for (int i = 0; i < n && rc == BATON_OK; i++) {
        bt_note(s, BATON_LOG_INFO, "event=job.unblocked job_id=%lld key=%s", (long long)cs[i].id,
                BT_LOG_VALUE(cs[i].key));
        if (cs[i].claim_for) {
            rc = place(s, &cs[i], 1, now, NULL);
            continue;
        }
        r[4 * ready] = BV_INT(cs[i].id);
        r[4 * ready + 1] = BV_TEXT(cs[i].queue);
        r[4 * ready + 2] = BV_INT(cs[i].priority);
        r[4 * ready + 3] = BV_INT(now);
        a[1 + 3 * ready] = BV_INT(cs[i].id);
        a[2 + 3 * ready] = BV_TEXT(cs[i].admitted_by);
        a[3 + 3 * ready] = cs[i].blocked_at ? BV_INT(cs[i].blocked_at) : BV_NULL;
        ready++;
    }
    if (rc == BATON_OK && ready) {
        rc = run_list(s, &sql_insert_ready, ready, r, 4 * ready, NULL, NULL, NULL);
        bt_note_ready(s);
    }
    return rc == BATON_OK && ready ? run_list(s, &sql_admit_ready, ready, a, 1 + 3 * ready, NULL, NULL, NULL) : rc;
}

/* Blocked jobs to admit together later (admit_blocked), each with what admitted it. */
typedef struct admissions {
    candidate items[BT_LIST_MAX];
    char how[BT_LIST_MAX][48];
    int len;
} admissions;

/* promote fills the free slots of key with its blocked jobs, best first, at most max of
 * them. Each job is admitted under its own stored limit, so the holders are counted once
 * and then tracked. how says what freed the slots, for the admitted jobs' records. first,
 * when not NULL, is the key's first read, already made by read_next_blocked with the key
 * locked. later, when not NULL, takes the job of that first read instead of admitting it
 * at once when no read of the key follows it here: the caller then must not read the key
 * again before it admits later's jobs. */
static int promote(bt_store *s, const char *key, const char *how, int64_t now, int max,
                   const blocked_row *first, int *promoted, admissions *later)
{
    bt_val k[] = {BV_TEXT(key)};
    int64_t holders = 0;
    int rc = first ? BATON_OK : lock_semaphore(s, key);
    for (int done = 0, more = 1; rc == BATON_OK && more && done < max; done++) {
        blocked_row fetched = {0};
        const blocked_row *b = done == 0 && first ? first : &fetched;
        if (b == &fetched)
            rc = bt_exec(s, sql_next_blocked[s->ops->row_locks], k, 1, read_blocked, &fetched, NULL);
        holders = done == 0 ? b->holders : holders; /* later, the count includes this loop's own */
        more = rc == BATON_OK && b->key && holders < b->c.limit;
        if (more) {
            holders++;
            more = b->rows > 1 && holders < b->next_limit;
            candidate c = b->c;
            c.admitted_by = how;
            if (later && b == first && !(more && done + 1 < max)) {
                c.admitted_by = strcpy(later->how[later->len], how);
                later->items[later->len++] = c;
            } else {
                rc = admit_blocked(s, &c, 1, now);
            }
            if (rc == BATON_OK && promoted)
                (*promoted)++;
        }
        blocked_row_clear(&fetched);
    }
    return rc;
}

static bt_sql_list sql_release_holders = {
    .head = "DELETE FROM baton_semaphore_holders WHERE job_id IN (", .item = "?", .tail = ") RETURNING job_id, key"};

static int read_released_key(bt_row *row, void *payload)
{
    *(char **)payload = strdup(bt_col_text(row, 1));
    return 1;
}

/* release_slot frees the slot job id holds, if any, and promotes the next of its key. */
static int release_slot(bt_store *s, int64_t id, int64_t now)
{
    char *key = NULL;
    bt_val a[] = {BV_INT(id)};
    int rc = run_list(s, &sql_release_holders, 1, a, 1, read_released_key, &key, NULL);
    char how[48];
    snprintf(how, sizeof how, "release of job %lld", (long long)id);
    if (rc == BATON_OK && key)
        rc = promote(s, key, how, now, INT_MAX, NULL, NULL, NULL);
    free(key);
    return rc;
}

static const char sql_candidate[] =
    "SELECT queue_name, priority, concurrency_key, concurrency_limit, concurrency_duration,"
    " on_conflict FROM baton_jobs WHERE id = ?";

typedef struct loaded_candidate {
    candidate c;
    char *queue;
    char *key;
    int found;
} loaded_candidate;

static int read_candidate(bt_row *row, void *payload)
{
    loaded_candidate *l = payload;
    l->found = 1;
    l->queue = strdup(bt_col_text(row, 0));
    l->key = bt_col_null(row, 2) ? NULL : strdup(bt_col_text(row, 2));
    l->c.queue = l->queue;
    l->c.priority = (int)bt_col_int(row, 1);
    l->c.key = l->key;
    l->c.limit = (int)bt_col_int(row, 3);
    l->c.duration = bt_col_real(row, 4);
    l->c.on_conflict = (int)bt_col_int(row, 5);
    return 1;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Keys in a round's lock order (NULL as ""), each key's jobs by id (enqueue order). */
static int cmp_candidate(const void *a, const void *b)
{
    const loaded_candidate *x = a, *y = b;
    int c = strcmp(x->key ? x->key : "", y->key ? y->key : "");
    return c ? c : cmp_id(&x->c.id, &y->c.id);
}

/* readmit_all sends n jobs that just left their previous execution rows (scheduled,
 * failed) through admission again, like new jobs: keys locked in the order a worker's
 * round locks them, so on a database with row locks the two never deadlock. */
static int readmit_all(bt_store *s, const int64_t *ids, size_t n, int64_t now)
{
    loaded_candidate *l = calloc(n ? n : 1, sizeof *l);
    int rc = l ? BATON_OK : bt_err_set(BATON_ERROR, "out of memory");
    for (size_t i = 0; i < n && rc == BATON_OK; i++) {
        l[i].c = (candidate){.id = ids[i], .admitted_by = "retry"};
        bt_val a[] = {BV_INT(ids[i])};
        rc = bt_exec(s, sql_candidate, a, 1, read_candidate, &l[i], NULL);
    }
    if (rc == BATON_OK && n > 1)
        qsort(l, n, sizeof *l, cmp_candidate);
    for (size_t i = 0; i < n && rc == BATON_OK; i++)
        if (l[i].found) {
            bt_val st[] = {BV_INT(l[i].c.id), BV_TEXT("ready"), BV_INT(now)};
            rc = bt_exec(s, sql_set_status, st, 3, NULL, NULL, NULL);
            if (rc == BATON_OK)
                rc = admit(s, &l[i].c, now, NULL);
        }
    for (size_t i = 0; l && i < n; i++) {
        free(l[i].queue);
        free(l[i].key);
    }
    free(l);
    return rc;
}

static int readmit(bt_store *s, int64_t id, int64_t now) { return readmit_all(s, &id, 1, now); }

/* insert_jobs stores the rows of n jobs (n <= BT_LIST_MAX) in one statement and writes
 * their ids to ids, in the jobs' order. */
static int insert_jobs(bt_store *s, const bt_new_job *jobs, int n, int64_t now, int64_t *ids)
{
    bt_val *a = malloc((size_t)n * JOB_VALUES * sizeof *a);
    if (!a)
        return bt_err_set(BATON_ERROR, "out of memory");
    for (int i = 0; i < n; i++) {
        const bt_new_job *j = &jobs[i];
        bt_val row[JOB_VALUES] = {BV_TEXT(j->queue), BV_TEXT(j->class_name),
                                  BV_TEXTN(j->arguments, j->arguments_len), BV_INT(j->priority),
                                  BV_TEXT(j->run_at <= now ? "ready" : "scheduled"), BV_INT(j->run_at),
                                  BV_INT(now), BV_INT(now), BV_INT(j->max_attempts), BV_INT(j->backoff),
                                  BV_REAL(j->backoff_base), BV_REAL(j->timeout), BV_TEXT(j->concurrency_key),
                                  BV_INT(j->concurrency_limit), BV_REAL(j->concurrency_duration),
                                  BV_INT(j->on_conflict)};
        memcpy(&a[i * JOB_VALUES], row, sizeof row);
    }
    bt_id_list made = {0};
    int rc = run_list(s, &sql_insert_jobs, n, a, n * JOB_VALUES, bt_row_collect_id, &made, NULL);
    free(a);
    if (rc == BATON_OK && made.len != (size_t)n)
        rc = bt_err_set(BATON_ERROR, "inserting %d jobs returned %zu ids", n, made.len);
    if (rc == BATON_OK) {
        /* Both databases draw ids row by row in the order of the VALUES list, so the
         * ascending ids are the jobs' ids in order, whatever order RETURNING used. */
        qsort(made.ids, made.len, sizeof *made.ids, cmp_id);
        memcpy(ids, made.ids, (size_t)n * sizeof *ids);
    }
    free(made.ids);
    return rc;
}

/* needs_admission: a job due now goes through admission when it has a key or a process
 * waits to claim it. */
static int needs_admission(const bt_new_job *j, int64_t now, int64_t claim_for)
{
    return j->run_at <= now && (j->concurrency_key || claim_for);
}

/* place_new puts n just-inserted jobs that need no admission where they start: scheduled
 * or ready, one statement for each kind. */
static int place_new(bt_store *s, const bt_new_job *jobs, const int64_t *ids, int n, int64_t now,
                     int64_t claim_for, bt_landing *landings)
{
    bt_val ready[4 * BT_LIST_MAX], scheduled[5 * BT_LIST_MAX];
    int nready = 0, nscheduled = 0, rc = BATON_OK;
    for (int i = 0; i < n; i++) {
        const bt_new_job *j = &jobs[i];
        landings[i] = (bt_landing){.state = BATON_JOB_READY};
        if (j->run_at > now) {
            landings[i].state = BATON_JOB_SCHEDULED;
            bt_val row[] = {BV_INT(ids[i]), BV_TEXT(j->queue), BV_INT(j->priority), BV_INT(j->run_at), BV_INT(now)};
            memcpy(&scheduled[5 * nscheduled++], row, sizeof row);
        } else if (!needs_admission(j, now, claim_for)) {
            bt_val row[] = {BV_INT(ids[i]), BV_TEXT(j->queue), BV_INT(j->priority), BV_INT(now)};
            memcpy(&ready[4 * nready++], row, sizeof row);
        }
    }
    if (nscheduled)
        rc = run_list(s, &sql_insert_scheduled, nscheduled, scheduled, 5 * nscheduled, NULL, NULL, NULL);
    if (rc == BATON_OK && nready) {
        rc = run_list(s, &sql_insert_ready, nready, ready, 4 * nready, NULL, NULL, NULL);
        bt_note_ready(s);
    }
    return rc;
}

typedef struct keyed_index {
    const char *key;
    size_t index;
} keyed_index;

static int cmp_keyed_index(const void *a, const void *b)
{
    const keyed_index *x = a, *y = b;
    int c = strcmp(x->key ? x->key : "", y->key ? y->key : "");
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* admit_new admits the new jobs that need it. A worker's round locks its keys in sorted
 * order; so does this, each key's jobs in their given order, so a bulk enqueue of several
 * keys never deadlocks with a round on a database with row locks. */
static int admit_new(bt_store *s, const bt_new_job *jobs, const int64_t *ids, size_t n, int64_t now,
                     int64_t claim_for, bt_landing *landings)
{
    keyed_index *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return bt_err_set(BATON_ERROR, "out of memory");
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (needs_admission(&jobs[i], now, claim_for))
            order[count++] = (keyed_index){jobs[i].concurrency_key, i};
    qsort(order, count, sizeof *order, cmp_keyed_index);
    int rc = BATON_OK;
    for (size_t k = 0; k < count && rc == BATON_OK; k++) {
        size_t i = order[k].index;
        const bt_new_job *j = &jobs[i];
        candidate c = {ids[i], j->queue, j->priority, j->concurrency_key, j->concurrency_limit,
                       j->concurrency_duration, j->on_conflict, claim_for, "enqueue", 0};
        rc = admit(s, &c, now, &landings[i]);
    }
    free(order);
    return rc;
}

int bt_enqueue_rows(bt_store *s, const bt_new_job *jobs, size_t n, int64_t now, int64_t claim_for,
                    int64_t *ids, bt_landing *landings)
{
    int rc = BATON_OK;
    for (size_t at = 0; at < n && rc == BATON_OK; at += BT_LIST_MAX) {
        int chunk = n - at < BT_LIST_MAX ? (int)(n - at) : BT_LIST_MAX;
        rc = insert_jobs(s, jobs + at, chunk, now, ids + at);
        if (rc == BATON_OK)
            rc = place_new(s, jobs + at, ids + at, chunk, now, claim_for, landings + at);
    }
    return rc == BATON_OK ? admit_new(s, jobs, ids, n, now, claim_for, landings) : rc;
}

/* ---- claiming ---- */

/* Each picks the ready rows of one queue entry (a name, "prefix*", "*"): ?1 the name or
 * prefix, ?2 how many. */
#define SQL_CLAIM_QUEUE(open, close)                                                        \
    "DELETE FROM baton_ready_executions WHERE job_id" open                                  \
    " SELECT job_id FROM baton_ready_executions WHERE queue_name = ?1"                      \
    " AND NOT EXISTS (SELECT 1 FROM baton_pauses p WHERE p.queue_name = ?1)"                \
    " ORDER BY priority, job_id LIMIT ?2" close " RETURNING job_id"
#define SQL_CLAIM_PREFIX(open, close)                                                       \
    "DELETE FROM baton_ready_executions WHERE job_id" open                                  \
    " SELECT job_id FROM baton_ready_executions WHERE substr(queue_name, 1, length(?1)) = ?1" \
    " AND queue_name NOT IN (SELECT queue_name FROM baton_pauses)"                          \
    " ORDER BY priority, job_id LIMIT ?2" close " RETURNING job_id"
#define SQL_CLAIM_ALL(open, close)                                                          \
    "DELETE FROM baton_ready_executions WHERE job_id" open                                  \
    " SELECT job_id FROM baton_ready_executions"                                            \
    " WHERE queue_name NOT IN (SELECT queue_name FROM baton_pauses)"                        \
    " ORDER BY priority, job_id LIMIT ?2" close " RETURNING job_id"
/* One set of statements for each kind of queue entry: for a queue, a prefix, all. */
typedef struct entry_sql {
    const char *queue, *prefix, *all;
} entry_sql;
static const char *const sql_claim_queue[] = BT_PICK_SKIP_LOCKED(SQL_CLAIM_QUEUE);
static const char *const sql_claim_prefix[] = BT_PICK_SKIP_LOCKED(SQL_CLAIM_PREFIX);
static const char *const sql_claim_all[] = BT_PICK_SKIP_LOCKED(SQL_CLAIM_ALL);
/* Where a WITH clause may write, one statement picks the ready rows (as above), records the
 * claims and marks the jobs, returning them as sql_mark_claimed does. ?3: now, ?4: the
 * claiming process. Every part of the statement reads the jobs as they were before it, so
 * a claim's attempt is the job's attempts plus one, as the update sets it. */
#define SQL_CLAIM_IN_ONE(PICK)                                                              \
    "WITH picked AS (" BT_PICK_LOCKED(PICK) "), held AS (INSERT INTO baton_claimed_executions" \
    " (job_id, process_id, claimed_at, attempt) SELECT p.job_id, ?4, ?3, j.attempts + 1"     \
    " FROM picked p JOIN baton_jobs j ON j.id = p.job_id) "                                  \
    MARK_CLAIMED("?3", "?4") " WHERE id IN (SELECT job_id FROM picked) RETURNING id, " CLAIMED_COLUMNS
static const entry_sql sql_claim_in_one = {SQL_CLAIM_IN_ONE(SQL_CLAIM_QUEUE), SQL_CLAIM_IN_ONE(SQL_CLAIM_PREFIX),
                                           SQL_CLAIM_IN_ONE(SQL_CLAIM_ALL)};
static const char sql_read_claim[] =
    "SELECT j.id, " CLAIMED_COLUMNS " FROM baton_jobs j JOIN baton_claimed_executions c ON c.job_id = j.id"
    " WHERE j.id = ?1 AND c.process_id = ?2";

static char *dup_col(bt_row *row, int col)
{
    const char *t = bt_col_null(row, col) ? NULL : bt_col_text(row, col);
    return t ? strdup(t) : NULL;
}

static int read_text_col0(bt_row *row, void *payload)
{
    *(char **)payload = dup_col(row, 0);
    return 1;
}

/* read_claimed reads a claimed job's row: its id, then CLAIMED_COLUMNS. */
static void read_claimed(bt_row *row, bt_claimed_job *j)
{
    j->id = bt_col_int(row, 0);
    j->class_name = dup_col(row, 1);
    j->queue = dup_col(row, 2);
    j->arguments = dup_col(row, 3);
    j->concurrency_key = dup_col(row, 4);
    j->attempt = (int)bt_col_int(row, 5);
    j->max_attempts = (int)bt_col_int(row, 6);
    j->backoff = (int)bt_col_int(row, 7);
    j->backoff_base = bt_col_real(row, 8);
    j->timeout = bt_col_real(row, 9);
    j->fencing_token = bt_col_int(row, 10);
    j->priority = (int)bt_col_int(row, 11);
}

static int fill_claimed(bt_row *row, void *payload)
{
    read_claimed(row, payload);
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

int bt_read_claim(bt_store *s, int64_t process_id, int64_t id, bt_claimed_job *job, int *found)
{
    memset(job, 0, sizeof *job);
    job->id = id;
    bt_val a[] = {BV_INT(id), BV_INT(process_id)};
    int rc = bt_exec(s, sql_read_claim, a, 2, fill_claimed, job, NULL);
    *found = job->class_name != NULL;
    return rc;
}

static int cmp_claimed(const bt_claimed_job *x, const bt_claimed_job *y)
{
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return cmp_id(&x->id, &y->id);
}

/* fill_claimed_sorted adds a claimed job's row to claims. Rows come in any order; the jobs
 * of one queue entry (from batch_from on) are kept in priority, then id order. */
static int fill_claimed_sorted(bt_row *row, void *payload)
{
    bt_claims *c = payload;
    if (c->count == c->max)
        return 1;
    bt_claimed_job job = {0};
    read_claimed(row, &job);
    int at = c->count++;
    for (; at > c->batch_from && cmp_claimed(&job, &c->jobs[at - 1]) < 0; at--)
        c->jobs[at] = c->jobs[at - 1];
    c->jobs[at] = job;
    return 0;
}

/* entry_statement picks the statement of one queue entry and the text it binds: the
 * entry, or the prefix of a "prefix*" entry (malloc'ed into *prefix; NULL when out of
 * memory). */
static const char *entry_statement(const entry_sql *sql, const char *entry, char **prefix, const char **bound)
{
    size_t len = strlen(entry);
    *prefix = NULL;
    *bound = entry;
    if (strcmp(entry, "*") == 0)
        return sql->all;
    if (len < 2 || entry[len - 1] != '*')
        return sql->queue;
    *bound = *prefix = strndup(entry, len - 1);
    return *bound ? sql->prefix : NULL;
}

/* claim_entry claims up to claims->max - claims->count ready jobs of one queue entry. With
 * a writable WITH clause it takes one statement, whose rows may arrive at commit when no
 * entry comes after (last) and the caller reads them after bt_end; otherwise the picked
 * rows are claimed in lists. */
static int claim_entry(bt_store *s, int64_t process_id, const char *entry, int last, int64_t now,
                       bt_claims *claims)
{
    int in_one = s->ops->writable_cte, locks = s->ops->row_locks;
    entry_sql picks = {sql_claim_queue[locks], sql_claim_prefix[locks], sql_claim_all[locks]};
    char *prefix;
    const char *bound;
    const char *sql = entry_statement(in_one ? &sql_claim_in_one : &picks, entry, &prefix, &bound);
    if (!sql)
        return bt_err_set(BATON_ERROR, "out of memory");
    bt_val a[] = {BV_TEXT(bound), BV_INT(claims->max - claims->count), BV_INT(now), BV_INT(process_id)};
    claims->batch_from = claims->count;
    int rc;
    if (in_one) {
        int flags = BT_EXEC_CACHED | (last && claims->after_end ? BT_EXEC_DEFERRED : 0);
        rc = s->ops->exec(s, sql, flags, a, 4, fill_claimed_sorted, claims, NULL);
        free(prefix);
        return rc;
    }
    bt_id_list picked = {0};
    rc = bt_exec(s, sql, a, 2, bt_row_collect_id, &picked, NULL);
    free(prefix);
    for (size_t at = 0; at < picked.len && rc == BATON_OK; at += BT_LIST_MAX) {
        int n = picked.len - at < BT_LIST_MAX ? (int)(picked.len - at) : BT_LIST_MAX;
        rc = claim_rows(s, process_id, picked.ids + at, n, now, fill_claimed_sorted, claims);
    }
    free(picked.ids);
    return rc;
}

int bt_claim(bt_store *s, int64_t process_id, char *const *queues, size_t nqueues, int64_t now,
             bt_claims *claims)
{
    claims->count = 0;
    int rc = BATON_OK;
    for (size_t q = 0; q < nqueues && claims->count < claims->max && rc == BATON_OK; q++)
        rc = claim_entry(s, process_id, queues[q], q + 1 == nqueues, now, claims);
    return rc;
}

/* ---- completing ---- */

/* ?1: the process whose claims end; then each claim's job id and attempt. */
#define CLAIM_ITEM "(job_id = ? AND attempt = ?)"
static bt_sql_list sql_delete_claims = {
    .head = "DELETE FROM baton_claimed_executions WHERE process_id = ?1 AND (",
    .item = CLAIM_ITEM,
    .sep = " OR ",
    .tail = ") RETURNING job_id, attempt"};
/* ?1: now; then the job ids. */
static bt_sql_list sql_mark_finished = {
    .head = "UPDATE baton_jobs SET status = 'finished', finished_at = ?1, updated_at = ?1, error = NULL"
            " WHERE id IN (",
    .item = "?",
    .tail = ")"};
static const char sql_mark_retry[] =
    "UPDATE baton_jobs SET status = 'scheduled', scheduled_at = ?2, updated_at = ?3, error = ?4"
    " WHERE id = ?1 RETURNING queue_name, priority";
static const char sql_record_retry_error[] =
    "UPDATE baton_jobs SET error = ?2 WHERE id = ?1";
static const char sql_mark_failed[] =
    "UPDATE baton_jobs SET status = 'failed', updated_at = ?2, error = ?3 WHERE id = ?1";
static const char sql_insert_failed[] =
    "INSERT INTO baton_failed_executions (job_id, error, created_at) VALUES (?, ?, ?)";
static const char sql_record_attempt[] =
    "INSERT INTO baton_job_attempts (job_id, attempt, process_id, process_name, started_at, ended_at, outcome, error,"
    " admitted_by, admitted_at, blocked_at)"
    " SELECT j.id, j.attempts, ?2, (SELECT p.name FROM baton_processes p WHERE p.id = ?2), j.started_at, ?3, ?4, ?5,"
    " j.admitted_by, j.admitted_at, j.blocked_at FROM baton_jobs j WHERE j.id = ?1";

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
    return (int64_t)((secs < BATON_SECONDS_MAX ? secs : BATON_SECONDS_MAX) * 1000.0);
}

/* schedule_retry queues a failed attempt again: at the backoff time, or through admission
 * at once when there is no backoff (it then waits for a slot like a new job). */
static int schedule_retry(bt_store *s, const bt_outcome *o, int64_t now, int64_t *retry_at_out)
{
    int64_t run_at = now + bt_backoff_ms(o->backoff, o->backoff_base, o->attempt);
    if (retry_at_out)
        *retry_at_out = run_at;
    if (run_at <= now) {
        bt_val e[] = {BV_INT(o->job_id), BV_TEXT(o->error)};
        int rc = bt_exec(s, sql_record_retry_error, e, 2, NULL, NULL, NULL);
        return rc == BATON_OK ? readmit(s, o->job_id, now) : rc;
    }
    bt_val a[] = {BV_INT(o->job_id), BV_INT(run_at), BV_INT(now), BV_TEXT(o->error)};
    queue_priority qp = {0};
    int rc = bt_exec(s, sql_mark_retry, a, 4, read_queue_priority, &qp, NULL);
    if (rc == BATON_OK && qp.queue) {
        bt_val b[] = {BV_INT(o->job_id), BV_TEXT(qp.queue), BV_INT(qp.priority), BV_INT(run_at), BV_INT(now)};
        rc = run_list(s, &sql_insert_scheduled, 1, b, 5, NULL, NULL, NULL);
    }
    free(qp.queue);
    return rc;
}

/* record_failure stores a failed attempt (its error already valid UTF-8) and either queues
 * the job again or fails it for good. */
static int record_failure(bt_store *s, int64_t process_id, const bt_outcome *o, int64_t now,
                          int64_t *retry_at_out)
{
    int retry = o->attempt < o->max_attempts;
    bt_val h[] = {BV_INT(o->job_id), BV_INT(process_id), BV_INT(now), BV_TEXT(retry ? "retried" : "failed"),
                  BV_TEXT(o->error)};
    int rc = bt_exec(s, sql_record_attempt, h, 5, NULL, NULL, NULL);
    if (rc != BATON_OK)
        return rc;
    if (retry)
        return schedule_retry(s, o, now, retry_at_out);
    bt_val a[] = {BV_INT(o->job_id), BV_INT(now), BV_TEXT(o->error)};
    rc = bt_exec(s, sql_mark_failed, a, 3, NULL, NULL, NULL);
    if (rc == BATON_OK) {
        bt_val f[] = {BV_INT(o->job_id), BV_TEXT(o->error), BV_INT(now)};
        rc = bt_exec(s, sql_insert_failed, f, 3, NULL, NULL, NULL);
    }
    return rc;
}

/* One owned outcome of a bt_complete call, in the order its key locks are taken. */
typedef struct settle {
    const bt_outcome *o;
    int index;     /* in the caller's arrays */
    char *released; /* key of the slot this run gave back, or NULL */
} settle;

static int cmp_settle(const void *a, const void *b)
{
    const settle *x = a, *y = b;
    const char *kx = x->o->concurrency_key, *ky = y->o->concurrency_key;
    int c = strcmp(kx ? kx : "", ky ? ky : "");
    return c ? c : cmp_id(&x->o->job_id, &y->o->job_id);
}

typedef struct settle_list {
    settle *items;
    int len;
} settle_list;

static int read_released(bt_row *row, void *payload)
{
    settle_list *l = payload;
    int64_t id = bt_col_int(row, 0);
    for (int i = 0; i < l->len; i++)
        if (l->items[i].o->job_id == id && !(l->items[i].released = strdup(bt_col_text(row, 1))))
            return -1;
    return 0;
}

/* ?1: the process whose claims end; then each claim's job id and attempt. It runs before
 * those claims end, so a slot is freed only for a run whose claim is still the process's. */
static bt_sql_list sql_release_claimed_holders = {
    .head = "DELETE FROM baton_semaphore_holders WHERE job_id IN (SELECT job_id FROM baton_claimed_executions"
            " WHERE process_id = ?1 AND (",
    .item = CLAIM_ITEM,
    .sep = " OR ",
    .tail = ")) RETURNING job_id, key"};

/* A chunk's runs, and which of them still held their claims. */
typedef struct ended_claims {
    const settle *items;
    int n;
    int *owned; /* by the caller's index */
} ended_claims;

static int read_ended_claim(bt_row *row, void *payload)
{
    ended_claims *e = payload;
    int64_t id = bt_col_int(row, 0), attempt = bt_col_int(row, 1);
    for (int i = 0; i < e->n; i++)
        if (e->items[i].o->job_id == id && e->items[i].o->attempt == attempt)
            e->owned[e->items[i].index] = 1;
    return 0;
}

/* claim_args puts after a[0] the (job id, attempt) of each run in l; only of runs with a
 * key when keyed. Returns how many claims it put. */
static int claim_args(bt_val *a, const settle_list *l, int keyed)
{
    int n = 0;
    for (int i = 0; i < l->len; i++) {
        const bt_outcome *o = l->items[i].o;
        if (keyed && !o->concurrency_key)
            continue;
        a[1 + 2 * n] = BV_INT(o->job_id);
        a[2 + 2 * n++] = BV_INT(o->attempt);
    }
    return n;
}

/* release_slots frees the slots the runs in l held, if process_id still holds their
 * claims, noting each one's key in l (the rows may arrive with a later statement's). Rows
 * of keyless jobs are not looked for: they never hold one. */
static int release_slots(bt_store *s, int64_t process_id, settle_list *l)
{
    bt_val a[1 + 2 * BT_LIST_MAX];
    a[0] = BV_INT(process_id);
    int n = claim_args(a, l, 1);
    return n ? run_list_as(s, BT_EXEC_CACHED | BT_EXEC_DEFERRED, &sql_release_claimed_holders, n, a, 1 + 2 * n,
                           read_released, l, NULL)
             : BATON_OK;
}

/* record_failed_run records the failure of a run, its error made valid UTF-8 first. */
static int record_failed_run(bt_store *s, int64_t process_id, const bt_outcome *o, int64_t now,
                             int64_t *retry_at_out)
{
    bt_outcome failed = *o;
    char *error = bt_utf8_repaired(o->error ? o->error : "");
    if (!error)
        return bt_err_set(BATON_ERROR, "out of memory");
    failed.error = error;
    int rc = record_failure(s, process_id, &failed, now, retry_at_out);
    free(error);
    return rc;
}

/* hand_over gives the slot the run t released to the next blocked job of its key, from
 * the key's first read (first) when t is the first run of the batch to release the key.
 * When the next run releases the same key, one job is admitted at once, so each promotion
 * names the release that made room and the next run's read sees it; otherwise the job may
 * join admit, admitted with the other keys' jobs. */
static int hand_over(bt_store *s, const settle *t, const settle *next, const blocked_row *first, int64_t now,
                     admissions *admit)
{
    char how[48];
    snprintf(how, sizeof how, "release of job %lld", (long long)t->o->job_id);
    int more = next && next->released && strcmp(next->released, t->released) == 0;
    return promote(s, t->released, how, now, more ? 1 : INT_MAX, first, NULL, more ? NULL : admit);
}

/* complete_chunk records n <= BT_LIST_MAX outcomes. The outcomes' keys are locked first,
 * then one statement frees the slots, one ends the claims and one reads the next blocked
 * jobs of every key (on a server, all in one round trip); the freed slots go to those
 * jobs, admitted together, then the failures are recorded (a retry due at once is admitted
 * again after the jobs that were waiting), and one statement marks the successes
 * finished. */
static int complete_chunk(bt_store *s, int64_t process_id, const bt_outcome *os, int n, int64_t now,
                          int *owned, int64_t *retry_at)
{
    settle items[BT_LIST_MAX];
    for (int i = 0; i < n; i++)
        items[i] = (settle){&os[i], i, NULL};
    /* Every process locks keys in one order, before it touches any holder or claim row, so
     * two rounds, or a round and the prune of its process, never wait on each other in a
     * deadlock. */
    qsort(items, (size_t)n, sizeof *items, cmp_settle);
    const char *keys[BT_LIST_MAX];
    int nkeys = 0;
    for (int i = 0; i < n; i++) {
        const char *key = items[i].o->concurrency_key;
        if (key && (nkeys == 0 || strcmp(keys[nkeys - 1], key) != 0))
            keys[nkeys++] = key;
    }
    settle_list l = {items, n};
    for (int i = 0; i < n; i++)
        owned[i] = 0;
    ended_claims mine = {items, n, owned};
    blocked_row firsts[BT_LIST_MAX] = {0};
    bt_val a[1 + 2 * BT_LIST_MAX];
    a[0] = BV_INT(process_id);
    claim_args(a, &l, 0);
    int rc = lock_keys(s, keys, nkeys);
    if (rc == BATON_OK)
        rc = release_slots(s, process_id, &l);
    if (rc == BATON_OK)
        rc = run_list_as(s, BT_EXEC_CACHED | (nkeys ? BT_EXEC_DEFERRED : 0), &sql_delete_claims, n, a, 1 + 2 * n,
                         read_ended_claim, &mine, NULL);
    if (rc == BATON_OK && nkeys)
        rc = read_next_blocked(s, keys, nkeys, firsts);
    l.len = 0;
    for (int i = 0; i < n; i++) {
        if (owned[items[i].index])
            items[l.len++] = items[i];
        else
            free(items[i].released);
    }
    admissions admit;
    admit.len = 0;
    for (int i = 0, k = 0, read = -1; i < l.len && rc == BATON_OK; i++) {
        const settle *t = &items[i];
        if (!t->released)
            continue;
        /* The key's first read serves the first run of the batch that released it. */
        const blocked_row *first = NULL;
        while (k < nkeys && strcmp(keys[k], t->released) < 0)
            k++;
        if (k < nkeys && k != read && strcmp(keys[k], t->released) == 0)
            first = &firsts[read = k];
        rc = hand_over(s, t, i + 1 < l.len ? &items[i + 1] : NULL, first, now, &admit);
    }
    if (rc == BATON_OK && admit.len)
        rc = admit_blocked(s, admit.items, admit.len, now);
    int finished = 0;
    a[0] = BV_INT(now);
    for (int i = 0; i < l.len && rc == BATON_OK; i++) {
        const settle *t = &items[i];
        if (t->o->succeeded)
            a[1 + finished++] = BV_INT(t->o->job_id);
        else
            rc = record_failed_run(s, process_id, t->o, now, retry_at ? &retry_at[t->index] : NULL);
    }
    if (rc == BATON_OK && finished)
        rc = run_list(s, &sql_mark_finished, finished, a, 1 + finished, NULL, NULL, NULL);
    for (int i = 0; i < nkeys; i++)
        blocked_row_clear(&firsts[i]);
    for (int i = 0; i < l.len; i++)
        free(items[i].released);
    return rc;
}

static int complete_chunks(bt_store *s, int64_t process_id, const bt_outcome *outcomes, size_t n, int64_t now,
                           int *owned, int64_t *retry_at)
{
    int rc = BATON_OK;
    for (size_t at = 0; at < n && rc == BATON_OK; at += BT_LIST_MAX) {
        int chunk = n - at < BT_LIST_MAX ? (int)(n - at) : BT_LIST_MAX;
        rc = complete_chunk(s, process_id, outcomes + at, chunk, now, owned + at, retry_at ? retry_at + at : NULL);
    }
    return rc;
}

int bt_complete(bt_store *s, int64_t process_id, const bt_outcome *outcomes, size_t n, int64_t now,
                int *owned, int64_t *retry_at)
{
    if (retry_at)
        memset(retry_at, 0, n * sizeof *retry_at);
    if (n <= BT_LIST_MAX) /* one chunk sorts its own keys */
        return complete_chunks(s, process_id, outcomes, n, now, owned, retry_at);
    /* Chunks in key order too, so the keys of all of them are locked in one order. */
    settle *order = malloc(n * sizeof *order);
    bt_outcome *sorted = malloc(n * sizeof *sorted);
    int *sorted_owned = malloc(n * sizeof *sorted_owned);
    int64_t *sorted_retry = calloc(n, sizeof *sorted_retry);
    int rc = order && sorted && sorted_owned && sorted_retry ? BATON_OK : bt_err_set(BATON_ERROR, "out of memory");
    if (rc == BATON_OK) {
        for (size_t i = 0; i < n; i++)
            order[i] = (settle){.o = &outcomes[i], .index = (int)i};
        qsort(order, n, sizeof *order, cmp_settle);
        for (size_t i = 0; i < n; i++)
            sorted[i] = *order[i].o;
        rc = complete_chunks(s, process_id, sorted, n, now, sorted_owned, sorted_retry);
    }
    for (size_t i = 0; rc == BATON_OK && i < n; i++) {
        owned[order[i].index] = sorted_owned[i];
        if (retry_at)
            retry_at[order[i].index] = sorted_retry[i];
    }
    free(order);
    free(sorted);
    free(sorted_owned);
    free(sorted_retry);
    return rc;
}

/* ---- handing claims back ---- */

static const char sql_back_to_ready[] =
    "UPDATE baton_jobs SET status = 'ready', updated_at = ?2,"
    " fencing_token = (SELECT token FROM baton_semaphore_holders h WHERE h.job_id = ?1) WHERE id = ?1"
    " RETURNING queue_name, priority";
static const char sql_take_holder[] =
    "DELETE FROM baton_semaphore_holders WHERE job_id = ? RETURNING key, acquired_at, expires_at";
static const char sql_put_holder[] =
    "INSERT INTO baton_semaphore_holders (job_id, key, acquired_at, expires_at) VALUES (?, ?, ?, ?)";

typedef struct held_slot {
    char *key;
    int64_t acquired_at, expires_at;
} held_slot;

static int read_held_slot(bt_row *row, void *payload)
{
    held_slot *h = payload;
    h->key = strdup(bt_col_text(row, 0));
    h->acquired_at = bt_col_int(row, 1);
    h->expires_at = bt_col_int(row, 2);
    return h->key ? 0 : -1;
}

/* renew_token gives job id's slot a new holder row, so its next run carries a fencing
 * token of its own: an outside system can then tell it from the run handed back. The
 * key's count of holders does not change. */
static int renew_token(bt_store *s, int64_t id)
{
    held_slot h = {0};
    bt_val a[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_take_holder, a, 1, read_held_slot, &h, NULL);
    if (rc == BATON_OK && h.key) {
        bt_val p[] = {BV_INT(id), BV_TEXT(h.key), BV_INT(h.acquired_at), BV_INT(h.expires_at)};
        rc = bt_exec(s, sql_put_holder, p, 4, NULL, NULL, NULL);
    }
    free(h.key);
    return rc;
}

/* back_to_ready returns a job whose run was stopped and has ended to the ready table. It
 * keeps its slot, under a new token: the run it held the slot for is over, nothing else
 * ran. */
static int back_to_ready(bt_store *s, int64_t id, int64_t now)
{
    queue_priority qp = {0};
    bt_val a[] = {BV_INT(id), BV_INT(now)};
    int rc = renew_token(s, id);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_back_to_ready, a, 2, read_queue_priority, &qp, NULL);
    if (rc == BATON_OK && qp.queue) {
        bt_val r[] = {BV_INT(id), BV_TEXT(qp.queue), BV_INT(qp.priority), BV_INT(now)};
        rc = run_list(s, &sql_insert_ready, 1, r, 4, NULL, NULL, NULL);
        bt_note_ready(s);
    }
    free(qp.queue);
    return rc;
}

static const char sql_release_all[] =
    "DELETE FROM baton_claimed_executions WHERE process_id = ? RETURNING job_id";
static const char sql_release_one[] =
    "DELETE FROM baton_claimed_executions WHERE process_id = ? AND job_id = ? AND attempt = ? RETURNING job_id";

static const char sql_claimed_keys[] =
    "SELECT DISTINCT j.concurrency_key FROM baton_claimed_executions c JOIN baton_jobs j ON j.id = c.job_id"
    " WHERE c.process_id = ? AND j.concurrency_key IS NOT NULL";

/* lock_claimed_keys locks the keys of process_id's claims before a hand-back touches
 * their claim and holder rows: a prune of the same process (bt_complete) takes the same
 * keys in the same order first, so the two wait for each other instead of deadlocking. */
static int lock_claimed_keys(bt_store *s, int64_t process_id) { return lock_keys_of(s, sql_claimed_keys, process_id); }

int bt_release_claims(bt_store *s, int64_t process_id, const bt_claim_ref *claims, size_t n,
                      int64_t now, int64_t *released_out)
{
    bt_id_list l = {0};
    int rc = lock_claimed_keys(s, process_id);
    if (rc == BATON_OK && !claims) {
        bt_val a[] = {BV_INT(process_id)};
        rc = bt_exec(s, sql_release_all, a, 1, bt_row_collect_id, &l, NULL);
    }
    for (size_t i = 0; claims && i < n && rc == BATON_OK; i++) {
        bt_val a[] = {BV_INT(process_id), BV_INT(claims[i].job_id), BV_INT(claims[i].attempt)};
        rc = bt_exec(s, sql_release_one, a, 3, bt_row_collect_id, &l, NULL);
    }
    for (size_t i = 0; i < l.len && rc == BATON_OK; i++) {
        bt_val h[] = {BV_INT(l.ids[i]), BV_INT(process_id), BV_INT(now), BV_TEXT("handed back"), BV_NULL};
        rc = bt_exec(s, sql_record_attempt, h, 5, NULL, NULL, NULL);
        if (rc == BATON_OK)
            rc = back_to_ready(s, l.ids[i], now);
    }
    if (released_out)
        *released_out = (int64_t)l.len;
    free(l.ids);
    return rc;
}

/* ---- scheduled jobs falling due ---- */

#define SQL_TAKE_DUE(open, close)                                                           \
    "DELETE FROM baton_scheduled_executions WHERE job_id" open                              \
    " SELECT job_id FROM baton_scheduled_executions WHERE scheduled_at <= ?1"               \
    " ORDER BY scheduled_at, priority, job_id LIMIT ?2" close " RETURNING job_id"
static const char *const sql_take_due[] = BT_PICK_SKIP_LOCKED(SQL_TAKE_DUE);

int bt_dispatch(bt_store *s, int64_t now, int batch, int *moved_out)
{
    bt_id_list l = {0};
    bt_val a[] = {BV_INT(now), BV_INT(batch)};
    int rc = bt_exec(s, sql_take_due[s->ops->row_locks], a, 2, bt_row_collect_id, &l, NULL);
    /* Scheduled jobs meet their limits now, each key's in enqueue order. */
    if (rc == BATON_OK)
        rc = readmit_all(s, l.ids, l.len, now);
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

/* ---- liveness: leases, pruning, maintenance ---- */

static const char sql_renew[] =
    "UPDATE baton_semaphore_holders SET expires_at = ?1 + (SELECT CAST(j.concurrency_duration * 1000 AS BIGINT)"
    " FROM baton_jobs j WHERE j.id = baton_semaphore_holders.job_id)"
    " WHERE job_id IN (SELECT job_id FROM baton_claimed_executions WHERE process_id = ?2)";

int bt_renew_leases(bt_store *s, int64_t process_id, int64_t now)
{
    bt_val a[] = {BV_INT(now), BV_INT(process_id)};
    return bt_exec(s, sql_renew, a, 2, NULL, NULL, NULL);
}

static const char sql_dead_processes[] =
    "SELECT p.id FROM baton_processes p WHERE p.id <> ?2 AND " BT_SQL_DEAD("p", "?1");
static const char sql_claims_of[] =
    "SELECT c.job_id, c.attempt, j.max_attempts, j.backoff, j.backoff_base, j.concurrency_key"
    " FROM baton_claimed_executions c JOIN baton_jobs j ON j.id = c.job_id WHERE c.process_id = ?";
static const char sql_forget_process[] = "DELETE FROM baton_processes WHERE id = ?";

typedef struct claim_list {
    bt_outcome *items;
    size_t len, cap;
} claim_list;

static int collect_claim(bt_row *row, void *payload)
{
    claim_list *l = payload;
    if (bt_grow(&l->items, &l->cap, l->len, sizeof *l->items) != 0)
        return -1;
    const char *key = bt_col_null(row, 5) ? NULL : bt_col_text(row, 5);
    char *owned_key = key ? strdup(key) : NULL;
    if (key && !owned_key)
        return -1;
    l->items[l->len++] = (bt_outcome){.job_id = bt_col_int(row, 0), .succeeded = 0,
                                      .error = "process pruned", .attempt = (int)bt_col_int(row, 1),
                                      .max_attempts = (int)bt_col_int(row, 2),
                                      .backoff = (int)bt_col_int(row, 3),
                                      .backoff_base = bt_col_real(row, 4), .concurrency_key = owned_key};
    return 0;
}

/* A row a promotion took meanwhile is gone by the time the delete gets its lock: that job
 * is claimed, and settled with the process's claims. */
static const char sql_take_inline_waiters[] =
    "DELETE FROM baton_blocked_executions WHERE claim_for = ? RETURNING job_id";

static const char sql_inline_waiter_keys[] =
    "SELECT DISTINCT concurrency_key FROM baton_blocked_executions WHERE claim_for = ?";

int bt_discard_inline_waiters(bt_store *s, int64_t process_id, int64_t now)
{
    bt_id_list l = {0};
    bt_val a[] = {BV_INT(process_id)};
    int rc = lock_keys_of(s, sql_inline_waiter_keys, process_id);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_take_inline_waiters, a, 1, bt_row_collect_id, &l, NULL);
    for (size_t i = 0; i < l.len && rc == BATON_OK; i++)
        rc = discard_with_reason(s, l.ids[i], "its inline perform ended before a slot was free", now);
    free(l.ids);
    return rc;
}

static int is_known(const bt_outcome *claim, const bt_claim_ref *known, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (known[i].job_id == claim->job_id && known[i].attempt == claim->attempt)
            return 1;
    return 0;
}

int bt_release_unknown_claims(bt_store *s, int64_t process_id, const bt_claim_ref *known, size_t n, int64_t now,
                              int64_t *released_out)
{
    claim_list claims = {0};
    bt_val p[] = {BV_INT(process_id)};
    int rc = bt_exec(s, sql_claims_of, p, 1, collect_claim, &claims, NULL);
    bt_claim_ref *unknown = calloc(claims.len ? claims.len : 1, sizeof *unknown);
    if (rc == BATON_OK && !unknown)
        rc = bt_err_set(BATON_ERROR, "out of memory");
    size_t m = 0;
    for (size_t k = 0; k < claims.len && rc == BATON_OK; k++)
        if (!is_known(&claims.items[k], known, n))
            unknown[m++] = (bt_claim_ref){claims.items[k].job_id, claims.items[k].attempt};
    if (released_out)
        *released_out = 0;
    if (rc == BATON_OK && m)
        rc = bt_release_claims(s, process_id, unknown, m, now, released_out);
    for (size_t k = 0; k < claims.len; k++)
        free((char *)claims.items[k].concurrency_key);
    free(claims.items);
    free(unknown);
    return rc;
}

/* ---- pruning dead processes ----
 *
 * A process is pruned in a transaction of its own, its keys locked before its row: every
 * transaction that locks several keys locks them in strcmp order before it touches a
 * process row (a promotion into an inline waiter's claim needs that process's row), so a
 * prune waits for rounds in flight instead of deadlocking with them, and a prune waiting
 * for one process's key holds up no key of another. The row lock then keeps the process,
 * should it be alive after all, from claiming anything more until its row is gone; a claim
 * it made between the two reads is settled too, its key locked late (at worst a deadlock
 * the server detects, and the prune is tried again at the next tick). */

/* The keys a process holds or waits for: its claims' and its inline performs' waiting jobs'. */
static const char sql_process_keys[] =
    "SELECT j.concurrency_key FROM baton_claimed_executions c JOIN baton_jobs j ON j.id = c.job_id"
    " WHERE c.process_id = ?1 AND j.concurrency_key IS NOT NULL"
    " UNION SELECT concurrency_key FROM baton_blocked_executions WHERE claim_for = ?1";

int bt_lock_process_keys(bt_store *s, int64_t id) { return lock_keys_of(s, sql_process_keys, id); }

/* settle_process fails the claims of process id, whose keys and row are locked, discards
 * the jobs its inline performs wait for, and forgets it. */
static int settle_process(bt_store *s, int64_t id, int64_t now)
{
    claim_list claims = {0};
    bt_val p[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_claims_of, p, 1, collect_claim, &claims, NULL);
    size_t n = claims.len;
    int *owned = calloc(n ? n : 1, sizeof *owned);
    int64_t *retry_at = calloc(n ? n : 1, sizeof *retry_at);
    if (rc == BATON_OK && (!owned || !retry_at))
        rc = bt_err_set(BATON_ERROR, "out of memory");
    if (rc == BATON_OK)
        rc = bt_complete(s, id, claims.items, n, now, owned, retry_at);
    for (size_t k = 0; k < n && rc == BATON_OK; k++) {
        const bt_outcome *o = &claims.items[k];
        /* The dead process can no longer say what became of its jobs. */
        if (retry_at[k])
            bt_note(s, BATON_LOG_WARN, "event=job.retried job_id=%lld attempt=%d retry_in_ms=%lld error=%s",
                    (long long)o->job_id, o->attempt, (long long)(retry_at[k] - now), BT_LOG_VALUE(o->error));
        else
            bt_note(s, BATON_LOG_ERROR, "event=job.failed job_id=%lld attempt=%d error=%s", (long long)o->job_id,
                    o->attempt, BT_LOG_VALUE(o->error));
    }
    if (rc == BATON_OK)
        rc = bt_discard_inline_waiters(s, id, now);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_forget_process, p, 1, NULL, NULL, NULL);
    for (size_t k = 0; k < n; k++)
        free((char *)claims.items[k].concurrency_key);
    free(claims.items);
    free(owned);
    free(retry_at);
    return rc;
}

/* prune_one prunes process id in a transaction of its own if row_sql (with args; it
 * selects and locks the row) still finds it once the process's keys are locked. */
static int prune_one(bt_store *s, int64_t id, const char *row_sql, const bt_val *args, int nargs, int64_t now,
                     int *pruned)
{
    bt_id_list found = {0};
    int rc = bt_begin(s, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_lock_process_keys(s, id);
    if (rc == BATON_OK)
        rc = bt_exec(s, row_sql, args, nargs, bt_row_collect_id, &found, NULL);
    if (rc == BATON_OK && found.len)
        rc = settle_process(s, id, now);
    rc = bt_end(s, rc);
    if (pruned)
        *pruned = rc == BATON_OK && found.len;
    free(found.ids);
    return rc;
}

#define SQL_LOCK_PROCESS(lock) "SELECT id FROM baton_processes WHERE id = ?1" lock
static const char *const sql_lock_process[] = {SQL_LOCK_PROCESS(""), SQL_LOCK_PROCESS(" FOR UPDATE")};
/* Two live processes never prune the same dead one: the second skips its locked row. */
static const char *const sql_lock_gone_process[] = BT_SKIP_LOCKED(SQL_LOCK_PROCESS);
#define SQL_DEAD_PROCESS(lock) "SELECT p.id FROM baton_processes p WHERE p.id = ?2 AND " BT_SQL_DEAD("p", "?1") lock
static const char *const sql_lock_dead_process[] = BT_SKIP_LOCKED(SQL_DEAD_PROCESS);

int bt_prune_process(bt_store *s, int64_t id, int64_t now, int *pruned)
{
    bt_val a[] = {BV_INT(id)};
    return prune_one(s, id, sql_lock_process[s->ops->row_locks], a, 1, now, pruned);
}

int bt_prune_if_dead(bt_store *s, int64_t id, int64_t threshold_ms, int64_t now, int *pruned)
{
    bt_val a[] = {BV_INT(threshold_ms), BV_INT(id)};
    return prune_one(s, id, sql_lock_dead_process[s->ops->row_locks], a, 2, now, pruned);
}

/* Processes of this host (its boot, its pid namespace) other than self, with their pids. */
static const char sql_processes_here[] = "SELECT id, pid FROM baton_processes WHERE host_id = ?1 AND id <> ?2";

/* add_if_gone adds a process of this host to the dead when its pid no longer exists: no
 * heartbeat needs to age for that proof (a crash-looping worker's predecessors, say). A
 * pid reused since only delays it to the witness rule. */
static int add_if_gone(bt_row *row, void *payload)
{
    int64_t pid = bt_col_int(row, 1);
    if (pid <= 0 || pid > INT_MAX || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
        return 0;
    return bt_row_collect_id(row, payload);
}

static int is_listed(const bt_id_list *l, int64_t id)
{
    for (size_t i = 0; i < l->len; i++)
        if (l->ids[i] == id)
            return 1;
    return 0;
}

int bt_prune_dead(bt_store *s, int64_t self_id, int64_t threshold_ms, int64_t now, int *pruned_out)
{
    bt_id_list dead = {0}, gone = {0};
    bt_val a[] = {BV_INT(threshold_ms), BV_INT(self_id)};
    int rc = bt_begin(s, BT_TXN_READ);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_dead_processes, a, 2, bt_row_collect_id, &dead, NULL);
    const char *here = bt_host_id();
    if (rc == BATON_OK && here) {
        bt_val h[] = {BV_TEXT(here), BV_INT(self_id)};
        rc = bt_exec(s, sql_processes_here, h, 2, add_if_gone, &gone, NULL);
    }
    rc = bt_end(s, rc);
    int count = 0, first_rc = rc;
    /* One process's failure (a lock it waited too long for, a row refused) stops the
     * pruning of no other; a database out of reach stops it all. */
    for (size_t i = 0; i < dead.len + gone.len && rc != BATON_ESTORE; i++) {
        int from_gone = i >= dead.len, pruned = 0;
        int64_t id = from_gone ? gone.ids[i - dead.len] : dead.ids[i];
        if (from_gone && is_listed(&dead, id))
            continue;
        bt_val one[] = {BV_INT(id)};
        if (from_gone)
            rc = prune_one(s, id, sql_lock_gone_process[s->ops->row_locks], one, 1, now, &pruned);
        else
            rc = bt_prune_if_dead(s, id, threshold_ms, now, &pruned);
        count += pruned;
        if (rc != BATON_OK && first_rc == BATON_OK)
            first_rc = rc;
    }
    free(dead.ids);
    free(gone.ids);
    if (pruned_out)
        *pruned_out = first_rc == BATON_OK ? count : 0;
    return first_rc;
}

static const char sql_orphan_keys[] =
    "SELECT DISTINCT h.key FROM baton_semaphore_holders h JOIN baton_jobs j ON j.id = h.job_id"
    " WHERE j.status NOT IN ('ready', 'claimed')";
static const char sql_orphan_holders[] =
    "DELETE FROM baton_semaphore_holders WHERE key = ?1 AND job_id IN (SELECT h.job_id FROM baton_semaphore_holders h"
    " JOIN baton_jobs j ON j.id = h.job_id WHERE h.key = ?1 AND j.status NOT IN ('ready', 'claimed'))";
static const char sql_overdue_keys[] =
    "SELECT DISTINCT concurrency_key FROM baton_blocked_executions WHERE expires_at < ?";
static const char sql_blocked_keys[] = "SELECT DISTINCT concurrency_key FROM baton_blocked_executions";
static const char sql_extend_blocked[] =
    "UPDATE baton_blocked_executions SET expires_at = ?2 + (SELECT CAST(j.concurrency_duration * 1000 AS BIGINT)"
    " FROM baton_jobs j WHERE j.id = baton_blocked_executions.job_id)"
    " WHERE concurrency_key = ?1 AND expires_at < ?2";

/* visit_key repairs one key in a transaction of its own, so that waiting for one key's
 * lock (its holder stopped mid-round) holds up no other key: it frees the key's slots
 * whose job is neither ready nor running and promotes its blocked jobs into its free
 * slots; with extend, the jobs still blocked are checked again one duration later. */
static int visit_key(bt_store *s, const char *key, int64_t now, int extend, int *promoted)
{
    bt_val k[] = {BV_TEXT(key), BV_INT(now)};
    int64_t freed = 0;
    int before = *promoted;
    int rc = bt_begin(s, BT_TXN_WRITE);
    if (rc == BATON_OK) /* the key's row first, as admission takes it, then its holders */
        rc = lock_semaphore(s, key);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_orphan_holders, k, 1, NULL, NULL, &freed);
    if (rc == BATON_OK)
        rc = promote(s, key, extend ? "expiry" : "repair", now, INT_MAX, NULL, promoted, NULL);
    if (rc == BATON_OK && extend)
        rc = bt_exec(s, sql_extend_blocked, k, 2, NULL, NULL, NULL);
    if (rc == BATON_OK && (freed || *promoted > before))
        bt_note(s, BATON_LOG_WARN, "event=semaphore.expired key=%s released=%lld promoted=%d", BT_LOG_VALUE(key),
                (long long)freed, *promoted - before);
    rc = bt_end(s, rc);
    if (rc != BATON_OK)
        *promoted = before;
    return rc;
}

/* visit_keys reads, in one snapshot, the keys with slots to free and those that sql names
 * (with the time as parameter when nargs is 1), then visits each once. A key that fails
 * does not stop the others; the first failure is returned. */
static int visit_keys(bt_store *s, const char *sql, int nargs, int64_t now, int extend, int *promoted_out)
{
    bt_text_list keys = {0};
    bt_val a[] = {BV_INT(now)};
    int rc = bt_begin(s, BT_TXN_READ);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_orphan_keys, NULL, 0, bt_row_collect_text, &keys, NULL);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql, a, nargs, bt_row_collect_text, &keys, NULL);
    const int read = rc = bt_end(s, rc);
    int promoted = 0;
    if (keys.len)
        qsort(keys.items, keys.len, sizeof *keys.items, cmp_text);
    for (size_t i = 0; read == BATON_OK && i < keys.len; i++) {
        if (i > 0 && strcmp(keys.items[i], keys.items[i - 1]) == 0)
            continue;
        int krc = visit_key(s, keys.items[i], now, extend, &promoted);
        rc = rc == BATON_OK ? krc : rc;
    }
    bt_text_list_free(&keys);
    if (promoted_out)
        *promoted_out = promoted;
    return rc;
}

int bt_maintain_concurrency(bt_store *s, int64_t now, int *promoted_out)
{
    /* Jobs still blocked after the wait of their duration wait for a slot that is really
     * taken: they are checked again one duration later. */
    return visit_keys(s, sql_overdue_keys, 1, now, 1, promoted_out);
}

int bt_repair_slots(bt_store *s, int64_t now, int *promoted_out)
{
    return visit_keys(s, sql_blocked_keys, 0, now, 0, promoted_out);
}

/* ---- operator actions ---- */

static const char sql_job_status[] = "SELECT status FROM baton_jobs WHERE id = ?";

/* job_status reads a job's status (malloc'ed) or fails with BATON_ENOTFOUND. */
static int job_status(bt_store *s, int64_t id, char **status)
{
    *status = NULL;
    bt_val a[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_job_status, a, 1, read_text_col0, status, NULL);
    if (rc == BATON_OK && !*status)
        rc = bt_err_set(BATON_ENOTFOUND, "job %lld not found", (long long)id);
    return rc;
}

static const char *const state_names[] = {NULL, "scheduled", "ready", "blocked", "claimed",
                                          "finished", "failed", "discarded"};

int bt_job_state_of(bt_store *s, int64_t id, baton_job_state *state)
{
    char *status;
    int rc = job_status(s, id, &status);
    if (rc != BATON_OK)
        return rc;
    *state = 0;
    for (int i = 1; i < 8; i++)
        if (strcmp(state_names[i], status) == 0)
            *state = (baton_job_state)i;
    free(status);
    return BATON_OK;
}

static const char sql_delete_failed[] = "DELETE FROM baton_failed_executions WHERE job_id = ?";

/* Operator actions take the job's execution row first and read its status after: where
 * writers run side by side, the delete waits for a transition in flight (a claim, a
 * dispatch) and the status read then sees where the job went. */
int bt_retry_failed(bt_store *s, const int64_t *ids, size_t n, int64_t now)
{
    int rc = BATON_OK;
    for (size_t i = 0; i < n && rc == BATON_OK; i++) {
        int64_t taken = 0;
        bt_val a[] = {BV_INT(ids[i])};
        rc = bt_exec(s, sql_delete_failed, a, 1, NULL, NULL, &taken);
        if (rc != BATON_OK || taken)
            continue;
        char *status;
        rc = job_status(s, ids[i], &status);
        if (rc != BATON_OK)
            return rc;
        rc = bt_err_set(BATON_ESTATE, "job %lld is %s, not failed", (long long)ids[i], status);
        free(status);
    }
    return rc == BATON_OK ? readmit_all(s, ids, n, now) : rc;
}

/* A job's rows in the lists of jobs that hold no slot, then in those of its key's waiting
 * and running jobs. The dispatcher and retries take a job from the first kind before they
 * lock its key, so a discard must too, or each would wait for the other. */
static const char *const sql_take_slotless[] = {
    "DELETE FROM baton_scheduled_executions WHERE job_id = ?",
    "DELETE FROM baton_failed_executions WHERE job_id = ?",
};
static const char *const sql_take_keyed[] = {
    "DELETE FROM baton_ready_executions WHERE job_id = ?",
    "DELETE FROM baton_blocked_executions WHERE job_id = ?",
};

/* take_rows runs the two deletes of sql for job id, adding the rows they took to *taken. */
static int take_rows(bt_store *s, const char *const sql[2], int64_t id, int64_t *taken)
{
    bt_val a[] = {BV_INT(id)};
    int rc = BATON_OK;
    for (int i = 0; rc == BATON_OK && i < 2; i++) {
        int64_t changes = 0;
        rc = bt_exec(s, sql[i], a, 1, NULL, NULL, &changes);
        *taken += changes;
    }
    return rc;
}

int bt_discard(bt_store *s, int64_t id, const char *reason, int64_t now)
{
    int64_t taken = 0;
    int rc = take_rows(s, sql_take_slotless, id, &taken);
    if (rc == BATON_OK)
        rc = bt_lock_job_key(s, id);
    if (rc == BATON_OK)
        rc = take_rows(s, sql_take_keyed, id, &taken);
    char *status = NULL;
    if (rc == BATON_OK)
        rc = job_status(s, id, &status);
    if (rc != BATON_OK)
        return rc;
    if (strcmp(status, "claimed") == 0)
        rc = bt_err_set(BATON_ESTATE, "job %lld is running; it can be discarded once it has failed",
                        (long long)id);
    else if (strcmp(status, "finished") == 0 || strcmp(status, "discarded") == 0)
        rc = bt_err_set(BATON_ESTATE, "job %lld is already %s", (long long)id, status);
    else if (!taken) /* it moved between execution rows while we looked: nothing was taken */
        rc = bt_err_set(BATON_EBUSY, "job %lld changed state while being discarded; try again", (long long)id);
    free(status);
    if (rc == BATON_OK)
        rc = release_slot(s, id, now); /* a ready job gives its slot to the next in line */
    return rc == BATON_OK ? discard_with_reason(s, id, reason, now) : rc;
}

/* The columns of SQL_NEXT_BLOCKED, for read_blocked. */
static const char sql_blocked_job[] =
    "SELECT b.job_id, b.queue_name, b.priority, b.concurrency_key, b.claim_for,"
    " j.concurrency_limit, j.concurrency_duration, b.created_at,"
    " (SELECT COUNT(*) FROM baton_semaphore_holders h WHERE h.key = b.concurrency_key)"
    " FROM baton_blocked_executions b JOIN baton_jobs j ON j.id = b.job_id WHERE b.job_id = ?";
/* ?1: the key; ?2: the threshold in ms of processes that carry none. */
static const char sql_holders_of_key[] =
    "SELECT h.job_id, j.status, c.process_id, p.pid, p.hostname,"
    " CASE WHEN p.id IS NOT NULL AND NOT " BT_SQL_STALE("p", "?2") " THEN 1 ELSE 0 END FROM baton_semaphore_holders h"
    " JOIN baton_jobs j ON j.id = h.job_id LEFT JOIN baton_claimed_executions c ON c.job_id = h.job_id"
    " LEFT JOIN baton_processes p ON p.id = c.process_id WHERE h.key = ?1 ORDER BY h.job_id";
static const char sql_drop_holder[] = "DELETE FROM baton_semaphore_holders WHERE job_id = ?";

/* A job holding a slot of a key, and where it runs (process_id 0: nowhere). */
typedef struct holder {
    int64_t job_id, process_id, pid;
    int heartbeats; /* its process is not stale */
    char status[16];
    char host[64];
} holder;

typedef struct holder_list {
    holder *items;
    size_t len, cap;
} holder_list;

static int collect_holder(bt_row *row, void *payload)
{
    holder_list *l = payload;
    if (bt_grow(&l->items, &l->cap, l->len, sizeof *l->items) != 0)
        return -1;
    holder *h = &l->items[l->len++];
    *h = (holder){.job_id = bt_col_int(row, 0), .process_id = bt_col_null(row, 2) ? 0 : bt_col_int(row, 2),
                  .pid = bt_col_null(row, 3) ? 0 : bt_col_int(row, 3),
                  .heartbeats = bt_col_int(row, 5) != 0};
    snprintf(h->status, sizeof h->status, "%s", bt_col_text(row, 1));
    snprintf(h->host, sizeof h->host, "%s", bt_col_null(row, 4) ? "" : bt_col_text(row, 4));
    return 0;
}

/* A holder whose job will still run (ready) or runs in a process that heartbeats: its
 * slot is real, and giving it away would put two jobs of the key past its limit. */
static int holder_is_live(const holder *h)
{
    return strcmp(h->status, "ready") == 0 || (strcmp(h->status, "claimed") == 0 && h->heartbeats);
}

static void describe_holder(const holder *h, char *buf, size_t len)
{
    if (strcmp(h->status, "claimed") == 0)
        snprintf(buf, len, "job %lld runs in process %lld (pid %lld on %s)", (long long)h->job_id,
                 (long long)h->process_id, (long long)h->pid, h->host);
    else
        snprintf(buf, len, "job %lld is %s", (long long)h->job_id, h->status);
}

int bt_unblock(bt_store *s, int64_t id, int force, int64_t now, int *over_limit)
{
    *over_limit = 0;
    blocked_row b = {0};
    bt_val a[] = {BV_INT(id)};
    int rc = bt_exec(s, sql_blocked_job, a, 1, read_blocked, &b, NULL);
    if (rc == BATON_OK && !b.key) {
        char *status = NULL;
        rc = job_status(s, id, &status);
        if (rc == BATON_OK)
            rc = bt_err_set(BATON_ESTATE, "job %lld is %s, not blocked", (long long)id, status);
        free(status);
    }
    int64_t holders = 0;
    if (rc == BATON_OK)
        rc = lock_key(s, b.key, b.c.limit, now, &holders);
    if (rc == BATON_OK && holders >= b.c.limit && !force)
        rc = bt_err_set(BATON_ESTATE, "key %s is full (%lld of %d slots held); --force admits job %lld past the limit",
                        b.key, (long long)holders, b.c.limit, (long long)id);
    b.c.admitted_by = "operator";
    if (rc == BATON_OK) {
        *over_limit = holders >= b.c.limit;
        rc = admit_blocked(s, &b.c, 1, now);
    }
    free(b.queue);
    free(b.key);
    return rc;
}

int bt_unblock_key(bt_store *s, const char *key, int64_t now, int *promoted)
{
    *promoted = 0;
    return promote(s, key, "operator", now, INT_MAX, NULL, promoted, NULL);
}

int bt_semaphore_clear(bt_store *s, const char *key, int force, int64_t threshold_ms, int64_t now, int *cleared,
                       int *promoted)
{
    *cleared = *promoted = 0;
    holder_list l = {0};
    bt_val k[] = {BV_TEXT(key), BV_INT(threshold_ms)};
    int rc = lock_semaphore(s, key);
    if (rc == BATON_OK)
        rc = bt_exec(s, sql_holders_of_key, k, 2, collect_holder, &l, NULL);
    for (size_t i = 0; i < l.len && rc == BATON_OK && !force; i++)
        if (holder_is_live(&l.items[i])) {
            char what[160];
            describe_holder(&l.items[i], what, sizeof what);
            rc = bt_err_set(BATON_ESTATE, "key %s: %s and holds a slot; --force clears it anyway", key, what);
        }
    for (size_t i = 0; i < l.len && rc == BATON_OK; i++) {
        bt_val h[] = {BV_INT(l.items[i].job_id)};
        rc = bt_exec(s, sql_drop_holder, h, 1, NULL, NULL, NULL);
        (*cleared)++;
    }
    if (rc == BATON_OK)
        rc = promote(s, key, "operator", now, INT_MAX, NULL, promoted, NULL);
    free(l.items);
    return rc;
}

static const char sql_relist_failed[] =
    "INSERT INTO baton_failed_executions (job_id, error, created_at) SELECT id, error, ?2 FROM baton_jobs"
    " WHERE id = ?1";
static const char sql_relist_scheduled[] =
    "INSERT INTO baton_scheduled_executions (job_id, queue_name, priority, scheduled_at, created_at)"
    " SELECT id, queue_name, priority, scheduled_at, ?2 FROM baton_jobs WHERE id = ?1";

int bt_requeue_lost(bt_store *s, int64_t id, const char *status, int64_t now)
{
    bt_val a[] = {BV_INT(id), BV_INT(now)};
    if (strcmp(status, "failed") == 0)
        return bt_exec(s, sql_relist_failed, a, 2, NULL, NULL, NULL);
    if (strcmp(status, "scheduled") == 0)
        return bt_exec(s, sql_relist_scheduled, a, 2, NULL, NULL, NULL);
    /* Not running anywhere: whatever slot it held is given up, and it queues for one. */
    int rc = bt_lock_job_key(s, id);
    if (rc == BATON_OK)
        rc = release_slot(s, id, now);
    return rc == BATON_OK ? readmit(s, id, now) : rc;
}
