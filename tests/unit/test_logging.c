// ctest-labels: threads sqlite
/* test_logging.c: log lines and lifecycle hooks through the C API on a real SQLite file:
 * JSON lines that parse and carry typed values, values with quotes, backslashes, control
 * characters and broken UTF-8 in both formats, level filtering, the events of a keyed
 * scenario (blocked, discarded, expired slots, unblocked, retried), hooks around callback,
 * command and inline jobs, and the start, stop and exit hooks of workers and dispatchers. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"
#include "core/core.h"
#include "support.h"
#include "util/clock.h"

/* ---- a logger that keeps every line ---- */

enum { MAX_LINES = 2048 };

typedef struct capture {
    pthread_mutex_t lock;
    char *lines[MAX_LINES];
    baton_log_level levels[MAX_LINES];
    int n;
} capture;

static void capture_line(baton_log_level level, const char *line, void *payload)
{
    capture *c = payload;
    pthread_mutex_lock(&c->lock);
    if (c->n < MAX_LINES) {
        c->levels[c->n] = level;
        c->lines[c->n++] = strdup(line);
    }
    pthread_mutex_unlock(&c->lock);
}

static void capture_free(capture *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->lines[i]);
    c->n = 0;
}

static capture *capture_new(baton_client *client, baton_log_level min, baton_log_format format)
{
    capture *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    assert_int_equal(baton_set_log_format(client, format), BATON_OK);
    baton_set_logger(client, min, capture_line, c);
    return c;
}

/* capture_end detaches the logger from client and frees the capture. */
static void capture_end(baton_client *client, capture *c)
{
    baton_set_logger(client, BATON_LOG_ERROR, NULL, NULL);
    capture_free(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static const char *str_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* "2026-11-24T09:15:06.739Z" */
static int is_iso_ms(const char *s)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (int i = 0; i < 24; i++) {
        char want = "dddd-dd-ddTdd:dd:dd.dddZ"[i];
        if (want == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != want)
            return 0;
    }
    return 1;
}

/* parse_line parses a JSON log line and checks what every line carries: time, level and
 * event first, and the level the logger was called with. */
static json_t *parse_line(const char *line, baton_log_level level)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    json_error_t jerr;
    json_t *obj = json_loads(line, 0, &jerr);
    if (!json_is_object(obj))
        fail_msg("not a JSON object (%s): %s", jerr.text, line);
    if (strncmp(line, "{\"time\":\"", 9) != 0 || !strstr(line, "\",\"level\":\"") ||
        !strstr(line, "\",\"event\":\""))
        fail_msg("time, level and event do not lead: %s", line);
    if (!is_iso_ms(str_of(obj, "time")))
        fail_msg("time is not ISO 8601 UTC with ms: %s", line);
    if (!str_of(obj, "level") || strcmp(str_of(obj, "level"), names[level]) != 0)
        fail_msg("level is not %s: %s", names[level], line);
    return obj;
}

/* find_json returns (a new reference to) the first line with event and, when job_id > 0,
 * that job_id as a JSON integer; NULL when none. Every line must parse. */
static json_t *find_json(capture *c, const char *event, int64_t job_id)
{
    json_t *found = NULL;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n && !found; i++) {
        json_t *obj = parse_line(c->lines[i], c->levels[i]);
        json_t *id = json_object_get(obj, "job_id");
        if (strcmp(str_of(obj, "event"), event) == 0 &&
            (job_id <= 0 || (json_is_integer(id) && json_integer_value(id) == job_id)))
            found = json_incref(obj);
        json_decref(obj);
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

static json_t *expect_json(capture *c, const char *event, int64_t job_id)
{
    json_t *obj = find_json(c, event, job_id);
    if (!obj)
        fail_msg("no %s line for job %lld", event, (long long)job_id);
    return obj;
}

/* find_line returns a copy of the first line containing every needle (NULL-terminated). */
static char *find_line(capture *c, const char *const *needles)
{
    char *found = NULL;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n && !found; i++) {
        int all = 1;
        for (size_t k = 0; needles[k] && all; k++)
            all = strstr(c->lines[i], needles[k]) != NULL;
        if (all)
            found = strdup(c->lines[i]);
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

/* ---- job classes ---- */

/* An error message that needs every kind of escaping: a quote, a backslash, a newline, a
 * tab, a control character, a byte that is not UTF-8, and a real non-ASCII letter. */
static const char nasty[] = "quote \" backslash \\ newline \n tab \t ctrl \x01 bad \xff caf\xc3\xa9 end";
/* nasty as a logfmt value, and as the JSON string decodes (U+FFFD for the bad byte). */
static const char nasty_logfmt[] =
    "\"quote \\\" backslash \\\\ newline \\n tab \\t ctrl \\u0001 bad \\ufffd caf\xc3\xa9 end\"";
static const char nasty_decoded[] =
    "quote \" backslash \\ newline \n tab \t ctrl \x01 bad \xef\xbf\xbd caf\xc3\xa9 end";

static int succeed(baton_job *job, void *payload)
{
    (void)job;
    (void)payload;
    return 0;
}

static int fail_nastily(baton_job *job, void *payload)
{
    (void)payload;
    baton_job_set_error(job, "%s", nasty);
    return 1;
}

static int fail_first_attempt(baton_job *job, void *payload)
{
    (void)payload;
    if (baton_job_attempt(job) > 1)
        return 0;
    baton_job_set_error(job, "first attempt fails");
    return 1;
}

static void register_class(baton_client *c, const char *name, baton_perform_fn fn, int attempts)
{
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = fn;
    o.max_attempts = attempts;
    o.backoff = BATON_BACKOFF_FIXED;
    o.backoff_base = 0;
    assert_int_equal(baton_class_register(c, name, &o), BATON_OK);
}

static int64_t enqueue(baton_client *c, const char *class_name, const baton_enqueue_options *o)
{
    int64_t id = 0;
    assert_int_equal(baton_enqueue(c, &id, class_name, NULL, o), BATON_OK);
    return id;
}

/* ---- values ---- */

static void test_values_are_quoted_and_escaped_when_needed(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(bt_log_value(buf, sizeof buf, "Mail"), "Mail");
    assert_string_equal(bt_log_value(buf, sizeof buf, "GoogleSync/user_1"), "GoogleSync/user_1");
    assert_string_equal(bt_log_value(buf, sizeof buf, ""), "\"\"");
    assert_string_equal(bt_log_value(buf, sizeof buf, NULL), "\"\"");
    assert_string_equal(bt_log_value(buf, sizeof buf, "two words"), "\"two words\"");
    assert_string_equal(bt_log_value(buf, sizeof buf, "a=b"), "\"a=b\"");
    /* Text that reads as a number is quoted, so JSON keeps it a string. */
    assert_string_equal(bt_log_value(buf, sizeof buf, "42"), "\"42\"");
    assert_string_equal(bt_log_value(buf, sizeof buf, "-1.5e3"), "\"-1.5e3\"");
    assert_string_equal(bt_log_value(buf, sizeof buf, "007"), "007");
    char big[BT_LOG_VALUE_MAX];
    assert_string_equal(bt_log_value(big, sizeof big, nasty), nasty_logfmt);

    /* Too long: cut on a character boundary, still one quoted, valid UTF-8 value. */
    assert_string_equal(bt_log_value(buf, 16, "a very long value indeed"), "\"a very lon...\"");
    const char *accents = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";
    bt_log_value(buf, 16, accents);
    assert_true(strlen(buf) < 16);
    assert_string_equal(buf + strlen(buf) - 4, "...\"");
    json_t *s = json_stringn(buf + 1, strlen(buf) - 2);
    assert_non_null(s); /* jansson refuses invalid UTF-8 */
    json_decref(s);
}

static void test_json_lines_carry_time_level_event_and_typed_values(void **state)
{
    lib_fixture *f = *state;
    register_class(f->client, "Mail", succeed, 1);
    register_class(f->client, "42", succeed, 1);
    capture *cap = capture_new(f->client, BATON_LOG_DEBUG, BATON_LOG_JSON);
    int64_t mail = enqueue(f->client, "Mail", NULL);
    int64_t numeric = enqueue(f->client, "42", NULL);
    running_worker rw = worker_start(f->client, "*", 2);
    wait_status(f->client, mail, "finished");
    wait_status(f->client, numeric, "finished");
    worker_stop(&rw);

    json_t *line = expect_json(cap, "job.finished", mail);
    assert_string_equal(str_of(line, "class"), "Mail");
    assert_string_equal(str_of(line, "queue"), "default");
    assert_true(json_is_number(json_object_get(line, "duration_ms")));
    json_decref(line);
    line = expect_json(cap, "job.finished", numeric);
    assert_string_equal(str_of(line, "class"), "42");
    json_decref(line);
    line = expect_json(cap, "job.claimed", mail);
    json_decref(line);
    line = expect_json(cap, "worker.started", 0);
    assert_true(json_is_integer(json_object_get(line, "process_id")));
    assert_true(json_is_integer(json_object_get(line, "threads")));
    json_decref(line);
    line = expect_json(cap, "worker.stopped", 0);
    json_decref(line);

    /* A value past BT_LOG_VALUE_MAX is cut, and the line still parses. */
    char *huge = malloc(3 * BT_LOG_VALUE_MAX);
    memset(huge, 'x', 3 * BT_LOG_VALUE_MAX - 1);
    huge[3 * BT_LOG_VALUE_MAX - 1] = '\0';
    bt_log(f->client, BATON_LOG_ERROR, "event=test.huge error=%s", BT_LOG_VALUE(huge));
    free(huge);
    line = expect_json(cap, "test.huge", 0);
    const char *error = str_of(line, "error");
    assert_non_null(error);
    assert_true(strlen(error) < BT_LOG_VALUE_MAX);
    assert_string_equal(error + strlen(error) - 3, "...");
    json_decref(line);
    capture_end(f->client, cap);

    assert_int_equal(baton_set_log_format(f->client, (baton_log_format)7), BATON_EINVALID);
}

static void test_nasty_errors_are_escaped_in_both_formats(void **state)
{
    lib_fixture *f = *state;
    register_class(f->client, "Nasty=Class", fail_nastily, 1);

    capture *cap = capture_new(f->client, BATON_LOG_INFO, BATON_LOG_LOGFMT);
    int64_t id = enqueue(f->client, "Nasty=Class", NULL);
    running_worker rw = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "failed");
    worker_stop(&rw);
    /* Stored as valid UTF-8 (the stray byte as U+FFFD), so every driver keeps it and JSON
     * carries it. */
    json_t *job = job_json(f->client, id);
    assert_string_equal(json_string_value(json_object_get(job, "error")), nasty_decoded);
    json_decref(job);
    char needle[64];
    snprintf(needle, sizeof needle, "event=job.failed job_id=%lld ", (long long)id);
    char *line = find_line(cap, (const char *const[]){needle, NULL});
    if (!line)
        fail_msg("no job.failed line for job %lld", (long long)id);
    assert_null(strchr(line, '\n'));
    assert_non_null(strstr(line, " class=\"Nasty=Class\" "));
    const char *error = strstr(line, " error=");
    assert_non_null(error);
    assert_string_equal(error + 7, nasty_logfmt);
    free(line);
    capture_end(f->client, cap);

    cap = capture_new(f->client, BATON_LOG_INFO, BATON_LOG_JSON);
    id = enqueue(f->client, "Nasty=Class", NULL);
    rw = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "failed");
    worker_stop(&rw);
    json_t *obj = expect_json(cap, "job.failed", id);
    assert_string_equal(str_of(obj, "class"), "Nasty=Class");
    assert_string_equal(str_of(obj, "error"), nasty_decoded);
    json_decref(obj);
    capture_end(f->client, cap);
}

static void test_lines_below_the_level_are_not_written(void **state)
{
    lib_fixture *f = *state;
    capture *cap = capture_new(f->client, BATON_LOG_WARN, BATON_LOG_JSON);
    bt_log(f->client, BATON_LOG_DEBUG, "event=test.debug");
    bt_log(f->client, BATON_LOG_INFO, "event=test.info");
    bt_log(f->client, BATON_LOG_WARN, "event=test.warn");
    bt_log(f->client, BATON_LOG_ERROR, "event=test.error");
    /* Lifecycle notes are filtered the same way: job.blocked is info. */
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.concurrency_key = "k";
    assert_int_equal(baton_class_register(f->client, "Keyed", &o), BATON_OK);
    enqueue(f->client, "Keyed", NULL);
    enqueue(f->client, "Keyed", NULL);
    pthread_mutex_lock(&cap->lock);
    assert_int_equal(cap->n, 2);
    assert_int_equal(cap->levels[0], BATON_LOG_WARN);
    assert_int_equal(cap->levels[1], BATON_LOG_ERROR);
    pthread_mutex_unlock(&cap->lock);
    json_t *line = expect_json(cap, "test.warn", 0);
    json_decref(line);
    line = expect_json(cap, "test.error", 0);
    json_decref(line);

    /* Every level's name, at debug. */
    baton_set_logger(f->client, BATON_LOG_DEBUG, capture_line, cap);
    bt_log(f->client, BATON_LOG_DEBUG, "event=test.debug");
    bt_log(f->client, BATON_LOG_INFO, "event=test.info");
    line = expect_json(cap, "test.debug", 0); /* parse_line checks "level" against the call */
    json_decref(line);
    line = expect_json(cap, "test.info", 0);
    json_decref(line);
    capture_end(f->client, cap);
}

/* ---- events of a keyed scenario ---- */

static void exec_sql(lib_fixture *f, const char *sql)
{
    bt_store *db = test_db_open(f->url);
    test_db_exec(db, sql);
    bt_store_close(db);
}

static int lines_with(capture *c, const char *needle)
{
    pthread_mutex_lock(&c->lock);
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += strstr(c->lines[i], needle) != NULL;
    pthread_mutex_unlock(&c->lock);
    return n;
}

static int worker_registered(void *p) { return test_db_int(p, "SELECT COUNT(*) FROM baton_processes") == 1; }

/* While the database stays locked, a worker's failing rounds and heartbeats log a line
 * per kind and interval, not one per attempt (every 30 ms here). */
static void test_a_lasting_store_fault_logs_a_line_per_interval(void **state)
{
    SKIP_UNLESS(!test_on_postgres(), "a database-wide write lock is SQLite's");
    lib_fixture *f = *state;
    char url[4300];
    snprintf(url, sizeof url, "%s?busy_timeout=20", f->url);
    baton_client *c = NULL;
    assert_int_equal(baton_open(&c, url), BATON_OK);
    assert_int_equal(baton_set_liveness(c, 0.05, 5), BATON_OK);
    capture *cap = capture_new(c, BATON_LOG_ERROR, BATON_LOG_LOGFMT);
    register_class(c, "Mail", succeed, 1);
    running_worker w = worker_start(c, "*", 1);
    bt_store *lock = test_db_open(f->url);
    assert_true(poll_until(worker_registered, lock, 10000));
    test_db_exec(lock, "BEGIN EXCLUSIVE");
    bt_sleep(1.5); /* the fault's length: about 50 failed rounds and 30 failed heartbeats */
    test_db_exec(lock, "COMMIT");
    bt_store_close(lock);
    /* The worker recovers: it runs a job enqueued after the fault. */
    int64_t after = enqueue(c, "Mail", NULL);
    wait_status(c, after, "finished");
    worker_stop(&w);
    int errors = lines_with(cap, "event=worker.store_error"), beats = lines_with(cap, "event=worker.heartbeat_failed");
    if (errors < 1 || errors > 2 || beats > 2)
        fail_msg("%d store_error and %d heartbeat_failed lines for one 1.5 s fault", errors, beats);
    capture_end(c, cap);
    baton_close(c);
}

static void test_blocked_unblocked_discarded_expired_and_retried_are_logged(void **state)
{
    lib_fixture *f = *state;
    capture *cap = capture_new(f->client, BATON_LOG_DEBUG, BATON_LOG_JSON);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = succeed;
    o.concurrency_key = "k";
    assert_int_equal(baton_class_register(f->client, "Sync", &o), BATON_OK);
    register_class(f->client, "Flaky", fail_first_attempt, 2);

    /* a holds the slot; b waits; c finds the key full and is discarded. */
    int64_t a = enqueue(f->client, "Sync", NULL);
    int64_t b = enqueue(f->client, "Sync", NULL);
    baton_enqueue_options discard = BATON_ENQUEUE_OPTIONS_INIT;
    discard.on_conflict = BATON_ON_CONFLICT_DISCARD;
    int64_t c = enqueue(f->client, "Sync", &discard);
    json_t *line = expect_json(cap, "job.blocked", b);
    assert_string_equal(str_of(line, "key"), "Sync/k");
    json_decref(line);
    assert_null(find_json(cap, "job.blocked", a));
    line = expect_json(cap, "job.discarded", c);
    assert_string_equal(str_of(line, "reason"), "concurrency limit");
    json_decref(line);

    /* a vanishes without releasing its slot: maintenance frees it and promotes b. */
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE baton_jobs SET status = 'finished' WHERE id = %lld;"
             "DELETE FROM baton_ready_executions WHERE job_id = %lld;"
             "UPDATE baton_blocked_executions SET expires_at = 0;", (long long)a, (long long)a);
    exec_sql(f, sql);
    int promoted = 0;
    assert_int_equal(baton_maintain(f->client, &promoted), BATON_OK);
    assert_int_equal(promoted, 1);
    line = expect_json(cap, "semaphore.expired", 0);
    assert_string_equal(str_of(line, "key"), "Sync/k");
    assert_int_equal(json_integer_value(json_object_get(line, "released")), 1);
    assert_int_equal(json_integer_value(json_object_get(line, "promoted")), 1);
    json_decref(line);
    line = expect_json(cap, "job.unblocked", b);
    assert_string_equal(str_of(line, "key"), "Sync/k");
    json_decref(line);

    /* d waits behind b; the worker finishing b promotes it. */
    int64_t d = enqueue(f->client, "Sync", NULL);
    int64_t flaky = enqueue(f->client, "Flaky", NULL);
    running_worker rw = worker_start(f->client, "*", 2);
    wait_status(f->client, d, "finished");
    wait_status(f->client, flaky, "finished");
    worker_stop(&rw);
    line = expect_json(cap, "job.unblocked", d);
    json_decref(line);
    line = expect_json(cap, "job.retried", flaky);
    assert_int_equal(json_integer_value(json_object_get(line, "attempt")), 1);
    assert_string_equal(str_of(line, "error"), "first attempt fails");
    json_decref(line);
    line = expect_json(cap, "job.finished", flaky);
    json_decref(line);

    /* An operator's discard. */
    baton_enqueue_options later = BATON_ENQUEUE_OPTIONS_INIT;
    later.delay = 3600;
    int64_t e = enqueue(f->client, "Flaky", &later);
    assert_int_equal(baton_job_discard(f->client, e), BATON_OK);
    line = expect_json(cap, "job.discarded", e);
    assert_string_equal(str_of(line, "reason"), "discarded by operator");
    json_decref(line);
    capture_end(f->client, cap);
}

/* A rolled-back transaction's transitions never happened: their lines are not written. */
static void test_lines_of_a_rolled_back_transaction_are_dropped(void **state)
{
    lib_fixture *f = *state;
    capture *cap = capture_new(f->client, BATON_LOG_DEBUG, BATON_LOG_LOGFMT);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.concurrency_key = "k";
    assert_int_equal(baton_class_register(f->client, "Keyed", &o), BATON_OK);
    enqueue(f->client, "Keyed", NULL);
    /* A job that blocks, in a transaction that then fails. */
    baton_job_spec spec = {"Keyed", NULL, NULL};
    bt_store *s = f->client->store;
    bt_new_job nj;
    assert_int_equal(bt_prepare_job(f->client, &spec, bt_now_ms(), &nj), BATON_OK);
    assert_int_equal(bt_begin(s, BT_TXN_WRITE), BATON_OK);
    bt_landing landing;
    int64_t blocked_id;
    assert_int_equal(bt_enqueue_rows(s, &nj, 1, bt_now_ms(), 0, &blocked_id, &landing), BATON_OK);
    assert_int_equal(landing.state, BATON_JOB_BLOCKED);
    assert_int_equal(bt_end(s, BATON_ESTORE), BATON_ESTORE); /* as if a statement failed */
    bt_new_job_clear(&nj);
    assert_null(find_line(cap, (const char *const[]){"event=job.blocked", NULL}));
    /* The same, committed, is written. */
    int64_t id = enqueue(f->client, "Keyed", NULL);
    char needle[64];
    snprintf(needle, sizeof needle, "event=job.blocked job_id=%lld key=Keyed/k", (long long)id);
    char *line = find_line(cap, (const char *const[]){needle, NULL});
    assert_non_null(line);
    free(line);
    capture_end(f->client, cap);
}

/* ---- job hooks ---- */

enum { MAX_CALLS = 64 };

typedef struct hook_call {
    int after;               /* 0: before, 1: after */
    int64_t job_id;
    char class_name[32];
    int succeeded;
    char error[256];
    pthread_t thread;
    int seq;
} hook_call;

typedef struct hook_log {
    pthread_mutex_t lock;
    hook_call calls[MAX_CALLS];
    int n;
    atomic_int seq;          /* orders job and process hook calls */
} hook_log;

static hook_call *next_call(hook_log *h, const baton_job *job, int after)
{
    hook_call *c = h->n < MAX_CALLS ? &h->calls[h->n++] : &h->calls[MAX_CALLS - 1];
    *c = (hook_call){.after = after, .job_id = baton_job_id(job), .thread = pthread_self(),
                     .seq = atomic_fetch_add(&h->seq, 1)};
    snprintf(c->class_name, sizeof c->class_name, "%s", baton_job_class(job));
    return c;
}

static void before_job(const baton_job *job, void *user_data)
{
    hook_log *h = user_data;
    pthread_mutex_lock(&h->lock);
    next_call(h, job, 0);
    pthread_mutex_unlock(&h->lock);
}

static void after_job(const baton_job *job, int succeeded, const char *error, void *user_data)
{
    hook_log *h = user_data;
    pthread_mutex_lock(&h->lock);
    hook_call *c = next_call(h, job, 1);
    c->succeeded = succeeded;
    snprintf(c->error, sizeof c->error, "%s", error ? error : "(null)");
    pthread_mutex_unlock(&h->lock);
}

/* calls_of checks job id got exactly one before call and then one after call and returns
 * the after call. */
static hook_call calls_of(hook_log *h, int64_t id, const char *class_name)
{
    pthread_mutex_lock(&h->lock);
    const hook_call *before = NULL, *after = NULL;
    int befores = 0, afters = 0;
    for (int i = 0; i < h->n; i++) {
        if (h->calls[i].job_id != id)
            continue;
        if (h->calls[i].after) {
            after = &h->calls[i];
            afters++;
        } else {
            before = &h->calls[i];
            befores++;
        }
    }
    if (befores != 1 || afters != 1)
        fail_msg("job %lld: %d before and %d after calls", (long long)id, befores, afters);
    assert_true(before->seq < after->seq);
    assert_true(pthread_equal(before->thread, after->thread));
    assert_string_equal(before->class_name, class_name);
    assert_string_equal(after->class_name, class_name);
    hook_call copy = *after;
    pthread_mutex_unlock(&h->lock);
    return copy;
}

static void test_job_hooks_run_once_around_callback_command_and_inline_jobs(void **state)
{
    lib_fixture *f = *state;
    hook_log h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    baton_on_job(f->client, before_job, after_job, &h);
    register_class(f->client, "Callback", succeed, 1);
    register_class(f->client, "Failing", fail_nastily, 1);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.command = "echo oops >&2; exit 3";
    assert_int_equal(baton_class_register(f->client, "Command", &o), BATON_OK);

    int64_t callback = enqueue(f->client, "Callback", NULL);
    int64_t failing = enqueue(f->client, "Failing", NULL);
    int64_t command = enqueue(f->client, "Command", NULL);
    running_worker rw = worker_start(f->client, "*", 3);
    wait_status(f->client, callback, "finished");
    wait_status(f->client, failing, "failed");
    wait_status(f->client, command, "failed");
    worker_stop(&rw);
    int64_t inline_id = 0;
    assert_int_equal(baton_perform_now(f->client, &inline_id, "Callback", NULL), BATON_OK);

    hook_call c = calls_of(&h, callback, "Callback");
    assert_int_equal(c.succeeded, 1);
    assert_string_equal(c.error, "(null)");
    assert_false(pthread_equal(c.thread, pthread_self()));
    c = calls_of(&h, failing, "Failing");
    assert_int_equal(c.succeeded, 0);
    assert_string_equal(c.error, nasty);
    c = calls_of(&h, command, "Command");
    assert_int_equal(c.succeeded, 0);
    assert_non_null(strstr(c.error, "exit status 3"));
    assert_non_null(strstr(c.error, "oops"));
    c = calls_of(&h, inline_id, "Callback");
    assert_int_equal(c.succeeded, 1);
    assert_true(pthread_equal(c.thread, pthread_self())); /* inline: the caller's thread */
    assert_int_equal(h.n, 8);
}

/* ---- process hooks ---- */

typedef struct process_call {
    baton_process_kind kind;
    baton_process_event event;
    int64_t process_id;
    int registered;          /* the process row existed when the hook ran */
    int job_done;            /* the blocking job had ended when the hook ran */
    int seq;
} process_call;

typedef struct process_log {
    pthread_mutex_t lock;
    process_call calls[16];
    int n;
    const char *db_url;
    hook_log *jobs;
    atomic_int job_started, release_job, job_done;
    pthread_mutex_t job_lock;
    pthread_cond_t job_cond;
} process_log;

static int registered(const char *db_url, int64_t id)
{
    bt_store *db = test_db_open(db_url);
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM baton_processes WHERE id = %lld", (long long)id);
    int n = (int)test_db_int(db, sql);
    bt_store_close(db);
    return n;
}

static void on_process(baton_process_kind kind, baton_process_event event, int64_t process_id,
                       void *user_data)
{
    process_log *p = user_data;
    int row = registered(p->db_url, process_id);
    pthread_mutex_lock(&p->lock);
    if (p->n < 16)
        p->calls[p->n++] = (process_call){kind, event, process_id, row, atomic_load(&p->job_done),
                                          atomic_fetch_add(&p->jobs->seq, 1)};
    pthread_mutex_unlock(&p->lock);
}

/* A job that runs until the test releases it. */
static int wait_for_release(baton_job *job, void *payload)
{
    (void)job;
    process_log *p = payload;
    pthread_mutex_lock(&p->job_lock);
    atomic_store(&p->job_started, 1);
    while (!atomic_load(&p->release_job))
        pthread_cond_wait(&p->job_cond, &p->job_lock);
    pthread_mutex_unlock(&p->job_lock);
    atomic_store(&p->job_done, 1);
    return 0;
}

static int job_started(void *p) { return atomic_load(&((process_log *)p)->job_started); }

static int process_calls(process_log *p)
{
    pthread_mutex_lock(&p->lock);
    int n = p->n;
    pthread_mutex_unlock(&p->lock);
    return n;
}

static int has_three_calls(void *p) { return process_calls(p) >= 3; }
static int has_two_calls(void *p) { return process_calls(p) >= 2; }
static int has_one_call(void *p) { return process_calls(p) >= 1; }

/* expect_start_stop_exit checks the three calls of kind, in order, for one process. */
static void expect_start_stop_exit(process_log *p, baton_process_kind kind)
{
    pthread_mutex_lock(&p->lock);
    assert_int_equal(p->n, 3);
    const baton_process_event order[] = {BATON_PROCESS_START, BATON_PROCESS_STOP, BATON_PROCESS_EXIT};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(p->calls[i].kind, kind);
        assert_int_equal(p->calls[i].event, order[i]);
        assert_true(p->calls[i].process_id > 0);
        assert_int_equal(p->calls[i].process_id, p->calls[0].process_id);
    }
    assert_int_equal(p->calls[0].registered, 1); /* START: registered */
    assert_int_equal(p->calls[1].registered, 1);
    assert_int_equal(p->calls[2].registered, 0); /* EXIT: deregistered */
    pthread_mutex_unlock(&p->lock);
}

static void test_worker_hooks_start_stop_exit_in_order(void **state)
{
    lib_fixture *f = *state;
    hook_log jobs = {.lock = PTHREAD_MUTEX_INITIALIZER};
    process_log p = {.lock = PTHREAD_MUTEX_INITIALIZER, .db_url = f->url,
                     .jobs = &jobs, .job_lock = PTHREAD_MUTEX_INITIALIZER,
                     .job_cond = PTHREAD_COND_INITIALIZER};
    baton_on_job(f->client, before_job, after_job, &jobs);
    for (int e = BATON_PROCESS_START; e <= BATON_PROCESS_EXIT; e++)
        assert_int_equal(baton_on_process(f->client, BATON_PROCESS_WORKER, (baton_process_event)e,
                                          on_process, &p), BATON_OK);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = wait_for_release;
    o.payload = &p;
    assert_int_equal(baton_class_register(f->client, "Long", &o), BATON_OK);
    int64_t id = enqueue(f->client, "Long", NULL);

    running_worker rw = worker_start(f->client, "*", 1);
    assert_true(poll_until(job_started, &p, 10000));
    baton_worker_stop(rw.worker, 0);
    /* STOP runs before draining: the job is still running. */
    assert_true(poll_until(has_two_calls, &p, 10000));
    pthread_mutex_lock(&p.job_lock);
    atomic_store(&p.release_job, 1);
    pthread_cond_broadcast(&p.job_cond);
    pthread_mutex_unlock(&p.job_lock);
    worker_stop(&rw);
    assert_string_equal(job_status(f->client, id), "finished");

    expect_start_stop_exit(&p, BATON_PROCESS_WORKER);
    assert_int_equal(p.calls[1].job_done, 0);
    assert_int_equal(p.calls[2].job_done, 1);
    /* START comes before the job's hooks; EXIT after them. */
    hook_call after = calls_of(&jobs, id, "Long");
    assert_int_equal(p.calls[0].seq, 0);
    assert_true(p.calls[2].seq > after.seq);
    pthread_cond_destroy(&p.job_cond);
}

static void *dispatcher_main(void *d) { return (void *)(intptr_t)baton_dispatcher_run(d); }

static void test_dispatcher_hooks_start_stop_exit_in_order(void **state)
{
    lib_fixture *f = *state;
    hook_log seq = {.lock = PTHREAD_MUTEX_INITIALIZER};
    process_log p = {.lock = PTHREAD_MUTEX_INITIALIZER, .db_url = f->url,
                     .jobs = &seq};
    for (int e = BATON_PROCESS_START; e <= BATON_PROCESS_EXIT; e++)
        assert_int_equal(baton_on_process(f->client, BATON_PROCESS_DISPATCHER,
                                          (baton_process_event)e, on_process, &p), BATON_OK);
    /* A worker hook must not fire for a dispatcher. */
    assert_int_equal(baton_on_process(f->client, BATON_PROCESS_WORKER, BATON_PROCESS_START,
                                      on_process, &p), BATON_OK);
    baton_dispatcher_options o = BATON_DISPATCHER_OPTIONS_INIT;
    o.polling_interval = 0.01;
    baton_dispatcher *d;
    assert_int_equal(baton_dispatcher_new(&d, f->client, &o), BATON_OK);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, dispatcher_main, d), 0);
    assert_true(poll_until(has_one_call, &p, 10000));
    baton_dispatcher_stop(d);
    void *result;
    pthread_join(thread, &result);
    assert_int_equal((int)(intptr_t)result, BATON_OK);
    baton_dispatcher_free(d);
    assert_true(has_three_calls(&p));
    expect_start_stop_exit(&p, BATON_PROCESS_DISPATCHER);

    assert_int_equal(baton_on_process(f->client, (baton_process_kind)9, BATON_PROCESS_START,
                                      on_process, &p), BATON_EINVALID);
    assert_int_equal(baton_on_process(f->client, BATON_PROCESS_SCHEDULER, (baton_process_event)-1,
                                      on_process, &p), BATON_EINVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_are_quoted_and_escaped_when_needed),
        cmocka_unit_test_setup_teardown(test_json_lines_carry_time_level_event_and_typed_values, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_nasty_errors_are_escaped_in_both_formats, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_lines_below_the_level_are_not_written, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_a_lasting_store_fault_logs_a_line_per_interval, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_blocked_unblocked_discarded_expired_and_retried_are_logged, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_lines_of_a_rolled_back_transaction_are_dropped, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_job_hooks_run_once_around_callback_command_and_inline_jobs, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_worker_hooks_start_stop_exit_in_order, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_dispatcher_hooks_start_stop_exit_in_order, lib_setup, lib_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
