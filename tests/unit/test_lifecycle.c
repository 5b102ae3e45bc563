// ctest-labels: threads sqlite
/* test_lifecycle.c: a job's life through the public C API on a real database: every
 * state, queue order, wildcards, pauses, priorities, scheduling, retries and backoff,
 * operator actions, bulk enqueue and bad input that must leave stored jobs intact. */
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"
#include "core/core.h"
#include "store/schema.h"
#include "faulty_store.h"
#include "support.h"
#include "util/clock.h"

static int count_jobs(baton_client *c, const char *status)
{
    baton_job_filter f = {.status = status, .limit = 100000};
    char *text;
    assert_int_equal(baton_jobs_json(c, &f, &text), BATON_OK);
    json_t *list = json_loads(text, 0, NULL);
    baton_free(text);
    int n = (int)json_array_size(list);
    json_decref(list);
    return n;
}

/* A recorder class: appends "queue:args" of each job it performs, in order. */
typedef struct recorder {
    pthread_mutex_t lock;
    char log[8192];
    int performed;
    int fail_until_attempt; /* fail while attempt < this */
} recorder;

static int record_job(baton_job *job, void *payload)
{
    recorder *r = payload;
    pthread_mutex_lock(&r->lock);
    char entry[128];
    snprintf(entry, sizeof entry, "%s:%s ", baton_job_queue(job), baton_job_arguments(job));
    strncat(r->log, entry, sizeof r->log - strlen(r->log) - 1);
    r->performed++;
    pthread_mutex_unlock(&r->lock);
    if (baton_job_attempt(job) < r->fail_until_attempt) {
        baton_job_set_error(job, "attempt %d failed on purpose", baton_job_attempt(job));
        return 1;
    }
    return 0;
}

static void register_recorder(baton_client *c, const char *name, recorder *r, int max_attempts,
                              baton_backoff backoff, double base)
{
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = record_job;
    o.payload = r;
    o.max_attempts = max_attempts;
    o.backoff = backoff;
    o.backoff_base = base;
    assert_int_equal(baton_class_register(c, name, &o), BATON_OK);
}

static int64_t enqueue(baton_client *c, const char *cls, const char *args, const char *queue, int priority)
{
    baton_enqueue_options o = BATON_ENQUEUE_OPTIONS_INIT;
    o.queue = queue;
    o.has_priority = 1;
    o.priority = priority;
    int64_t id = 0;
    assert_int_equal(baton_enqueue(c, &id, cls, args, &o), BATON_OK);
    return id;
}

typedef struct performed_at_least {
    recorder *r;
    int n;
} performed_at_least;

static int has_performed(void *p)
{
    performed_at_least *a = p;
    pthread_mutex_lock(&a->r->lock);
    int ok = a->r->performed >= a->n;
    pthread_mutex_unlock(&a->r->lock);
    return ok;
}

/* ---- tests ---- */

static void test_enqueue_makes_ready_job_with_documented_fields(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    int64_t id;
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", "{\"to\":\"ada\"}", NULL), BATON_OK);
    json_t *j = job_json(f->client, id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ready");
    assert_string_equal(json_string_value(json_object_get(j, "class")), "Mail");
    assert_string_equal(json_string_value(json_object_get(j, "queue")), "default");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "arguments"), "to")), "ada");
    assert_true(json_is_null(json_object_get(j, "concurrency_key")));
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_true(json_is_null(json_object_get(j, "finished_at")));
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 0);
    const char *created = json_string_value(json_object_get(j, "created_at"));
    assert_non_null(created);
    assert_int_equal(strlen(created), 24); /* 2026-11-24T09:15:06.739Z */
    assert_int_equal(created[23], 'Z');
    json_decref(j);
}

static void test_bulk_enqueue_is_all_or_nothing(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    enum { N = 1000 };
    baton_job_spec *specs = calloc(N, sizeof *specs);
    int64_t *ids = calloc(N, sizeof *ids);
    for (int i = 0; i < N; i++)
        specs[i] = (baton_job_spec){"Mail", "[1]", NULL};
    assert_int_equal(baton_enqueue_many(f->client, ids, specs, N), BATON_OK);
    for (int i = 1; i < N; i++)
        assert_true(ids[i] > ids[i - 1]);
    assert_int_equal(count_jobs(f->client, "ready"), N);

    specs[500].args_json = "[1,";
    assert_int_equal(baton_enqueue_many(f->client, ids, specs, N), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "job 500"));
    assert_int_equal(count_jobs(f->client, NULL), N);
    free(specs);
    free(ids);
}

/* One batch mixing every landing, longer than the rows the store writes per statement:
 * each spec's id must name the job built from that spec, and each landing its state. */
static void test_mixed_bulk_enqueue_maps_each_spec_to_its_job(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.concurrency_key = "{user}";
    o.concurrency_limit = 1;
    assert_int_equal(baton_class_register(f->client, "Sync", &o), BATON_OK);
    enum { N = 150 };
    baton_job_spec specs[N];
    baton_enqueue_options later = BATON_ENQUEUE_OPTIONS_INIT;
    later.delay = 3600;
    char args[N][32];
    for (int i = 0; i < N; i++) {
        int keyed = i % 3 == 0;
        snprintf(args[i], sizeof args[i], keyed ? "{\"user\":%d}" : "[%d]", keyed ? i % 2 : i);
        specs[i] = (baton_job_spec){keyed ? "Sync" : "Mail", args[i], i % 5 == 1 ? &later : NULL};
    }
    baton_enqueued out[N];
    assert_int_equal(baton_enqueue_detailed(f->client, out, specs, N), BATON_OK);
    for (int i = 0; i < N; i++) {
        json_t *j = job_json(f->client, out[i].id);
        char *stored = json_dumps(json_object_get(j, "arguments"), JSON_COMPACT);
        assert_string_equal(stored, args[i]);
        free(stored);
        /* Sync jobs of user 0 and of user 1 alternate: the first of each takes the slot. */
        baton_job_state want = i % 5 == 1 ? BATON_JOB_SCHEDULED
                             : i % 3 != 0 ? BATON_JOB_READY
                             : i < 6      ? BATON_JOB_READY
                                          : BATON_JOB_BLOCKED;
        assert_int_equal(out[i].state, want);
        assert_string_equal(json_string_value(json_object_get(j, "status")),
                            want == BATON_JOB_SCHEDULED ? "scheduled" : want == BATON_JOB_READY ? "ready" : "blocked");
        json_decref(j);
    }
}

static void test_bad_input_is_refused_and_stored_jobs_stay(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    int64_t kept = enqueue(f->client, "Mail", "[1]", NULL, 0);
    int64_t id = 0;
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", "{\"a\":", NULL), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "JSON"));
    assert_int_equal(baton_enqueue(f->client, &id, "Nope", "[]", NULL), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "Nope"));
    assert_int_equal(baton_set_max_arguments_bytes(f->client, 16), BATON_OK);
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", "[\"0123456789abcdef\"]", NULL), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "max_arguments_bytes"));
    baton_enqueue_options empty_queue = BATON_ENQUEUE_OPTIONS_INIT;
    empty_queue.queue = "";
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", "[]", &empty_queue), BATON_EINVALID);
    /* Spans of seconds past BATON_SECONDS_MAX, infinite or NaN overflow deadlines: refused. */
    const double bad_spans[] = {1e300, INFINITY, NAN, -1};
    for (size_t i = 0; i < sizeof bad_spans / sizeof bad_spans[0]; i++) {
        baton_enqueue_options later = BATON_ENQUEUE_OPTIONS_INIT;
        later.delay = bad_spans[i];
        assert_int_equal(baton_enqueue(f->client, &id, "Mail", "[]", &later), BATON_EINVALID);
        baton_enqueue_options held = BATON_ENQUEUE_OPTIONS_INIT;
        held.concurrency_key = "k";
        held.concurrency_duration = bad_spans[i];
        assert_int_equal(baton_enqueue(f->client, &id, "Mail", "[]", &held), BATON_EINVALID);
        baton_class_options k = BATON_CLASS_OPTIONS_INIT;
        k.backoff_base = bad_spans[i];
        assert_int_equal(baton_class_register(f->client, "Slow", &k), BATON_EINVALID);
        assert_int_equal(baton_set_liveness(f->client, 1, bad_spans[i]), BATON_EINVALID);
        assert_int_equal(baton_perform_wait(f->client, &id, "Mail", "[]", bad_spans[i]), BATON_EINVALID);
    }
    /* A worker stops its jobs after half the threshold without a heartbeat: a threshold
     * under four heartbeats would make one late heartbeat stop healthy jobs. */
    assert_int_equal(baton_set_liveness(f->client, 2, 3.5), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "at least 4 times"));
    assert_int_equal(baton_set_liveness(f->client, 2, 7.9), BATON_EINVALID);
    assert_int_equal(baton_set_liveness(f->client, 2, 8), BATON_OK);
    assert_int_equal(count_jobs(f->client, NULL), 1);
    assert_string_equal(job_status(f->client, kept), "ready");
}

static void test_queue_list_order_wildcards_and_priority(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    enqueue(f->client, "Rec", "1", "other", 0);
    enqueue(f->client, "Rec", "2", "mail_b", 5);
    enqueue(f->client, "Rec", "3", "mail_a", 1);
    enqueue(f->client, "Rec", "4", "urgent", 9);
    enqueue(f->client, "Rec", "5", "urgent", 0);
    enqueue(f->client, "Rec", "6", "mail_a", 1);
    /* One thread makes the claim order observable: urgent first (by priority, then id),
     * then every mail* queue together by priority then id; "other" is never polled. */
    running_worker w = worker_start(f->client, "urgent, mail*", 1);
    performed_at_least want = {&r, 5};
    assert_true(poll_until(has_performed, &want, 10000));
    worker_stop(&w);
    assert_string_equal(r.log, "urgent:5 urgent:4 mail_a:3 mail_a:6 mail_b:2 ");
    assert_int_equal(count_jobs(f->client, "ready"), 1);
}

static void test_paused_queue_is_skipped_until_resumed(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    assert_int_equal(baton_queue_pause(f->client, "slow"), BATON_OK);
    assert_int_equal(baton_queue_pause(f->client, "slow"), BATON_OK); /* idempotent */
    int64_t paused = enqueue(f->client, "Rec", "1", "slow", 0);
    int64_t other = enqueue(f->client, "Rec", "2", "fast", 0);
    running_worker w = worker_start(f->client, "*", 2);
    wait_status(f->client, other, "finished");
    /* The worker polled (it finished the other job) yet left the paused one alone. */
    assert_string_equal(job_status(f->client, paused), "ready");
    char *queues;
    assert_int_equal(baton_queues_json(f->client, &queues), BATON_OK);
    assert_non_null(strstr(queues, "\"name\":\"slow\",\"ready\":1,\"scheduled\":0,\"claimed\":0,\"blocked\":0,\"failed\":0,\"paused\":true"));
    baton_free(queues);
    assert_int_equal(baton_queue_resume(f->client, "slow"), BATON_OK);
    wait_status(f->client, paused, "finished");
    worker_stop(&w);
}

static void test_scheduled_job_becomes_ready_when_due(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    baton_enqueue_options o = BATON_ENQUEUE_OPTIONS_INIT;
    o.delay = 0.3;
    int64_t id;
    int64_t before = bt_now_ms();
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", NULL, &o), BATON_OK);
    assert_string_equal(job_status(f->client, id), "scheduled");
    int moved = -1;
    assert_int_equal(baton_dispatch_due(f->client, 10, &moved), BATON_OK);
    if (bt_now_ms() < before + 300)
        assert_int_equal(moved, 0);
    while (moved == 0 || moved == -1) {
        assert_int_equal(baton_dispatch_due(f->client, 10, &moved), BATON_OK);
        if (moved == 0) {
            assert_true(bt_now_ms() < before + 5000);
            bt_sleep(0.01); /* waiting for the clock, not for another thread */
        }
    }
    assert_true(bt_now_ms() >= before + 300);
    assert_int_equal(moved, 1);
    assert_string_equal(job_status(f->client, id), "ready");

    o.delay = 0;
    o.run_at_ms = bt_now_ms() - 1000; /* a time in the past is due now */
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", NULL, &o), BATON_OK);
    assert_string_equal(job_status(f->client, id), "ready");
}

static void test_failed_job_retries_until_success(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail_until_attempt = 3};
    register_recorder(f->client, "Flaky", &r, 3, BATON_BACKOFF_FIXED, 0);
    int64_t id = enqueue(f->client, "Flaky", "[]", NULL, 0);
    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "finished");
    worker_stop(&w);
    json_t *j = job_json(f->client, id);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 3);
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_false(json_is_null(json_object_get(j, "finished_at")));
    json_decref(j);
}

static void test_last_attempt_fails_then_operator_retries(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail_until_attempt = 100};
    register_recorder(f->client, "Broken", &r, 2, BATON_BACKOFF_FIXED, 0);
    int64_t id = enqueue(f->client, "Broken", "[]", NULL, 0);
    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "failed");
    worker_stop(&w);
    json_t *j = job_json(f->client, id);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "attempt 2 failed on purpose");
    json_decref(j);

    assert_int_equal(baton_job_retry(f->client, id), BATON_OK);
    assert_string_equal(job_status(f->client, id), "ready");
    assert_int_equal(baton_job_retry(f->client, id), BATON_ESTATE);
    assert_int_equal(baton_job_retry(f->client, 987654), BATON_ENOTFOUND);
}

static void test_backoff_schedules_the_retry(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail_until_attempt = 100};
    register_recorder(f->client, "Slow", &r, 5, BATON_BACKOFF_EXPONENTIAL, 60);
    int64_t id = enqueue(f->client, "Slow", "[]", NULL, 0);
    int64_t before = bt_now_ms();
    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "scheduled");
    worker_stop(&w);
    json_t *j = job_json(f->client, id);
    int64_t at;
    assert_int_equal(baton_parse_time(json_string_value(json_object_get(j, "scheduled_at")), &at), BATON_OK);
    /* First retry: base 60 s, plus at most 15% jitter. */
    assert_true(at >= before + 60000);
    assert_true(at <= bt_now_ms() + 69000 + 10);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "attempt 1 failed on purpose");
    json_decref(j);
}

/* Every form of database URL libpq reads shows *** where its password is. */
static void test_database_urls_hide_their_passwords(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"postgres://u:s3cret@h:5432/db", "postgres://u:***@h:5432/db"},
        {"postgres://u:pa?ss@h/db", "postgres://u:***@h/db"},
        {"postgres://u:p@ss@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"},
        {"postgres://u@h/db?password=s3cret&application_name=a", "postgres://u@h/db?password=***&application_name=a"},
        {"postgres://h/db?sslmode=disable&PASSWORD=s3cret", "postgres://h/db?sslmode=disable&PASSWORD=***"},
        {"postgres:host=h password=s3cret dbname=d", "postgres:host=h password=*** dbname=d"},
        {"postgres:password='s3 \\' cret' host=h", "postgres:password=*** host=h"},
        {"postgres://u@h/d@b", "postgres://u@h/d@b"},
        {"postgres://h:5432/db", "postgres://h:5432/db"},
        {"sqlite:/tmp/a:b@c.db", "sqlite:/tmp/a:b@c.db"},
        {"postgres://u:@h/db", "postgres://u:***@h/db"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *shown = bt_url_redact(cases[i][0]);
        assert_non_null(shown);
        if (strcmp(shown, cases[i][1]) != 0)
            fail_msg("%s shows as %s, expected %s", cases[i][0], shown, cases[i][1]);
        free(shown);
    }
}

static void test_backoff_formulas(void **state)
{
    (void)state;
    assert_int_equal(bt_backoff_ms(BATON_BACKOFF_FIXED, 2, 1), 2000);
    assert_int_equal(bt_backoff_ms(BATON_BACKOFF_FIXED, 2, 7), 2000);
    assert_int_equal(bt_backoff_ms(BATON_BACKOFF_LINEAR, 2, 3), 6000);
    for (int attempt = 1; attempt <= 5; attempt++) {
        int64_t ms = bt_backoff_ms(BATON_BACKOFF_EXPONENTIAL, 1, attempt);
        int64_t base = 1000LL << (attempt - 1);
        assert_true(ms >= base && ms <= base + base * 15 / 100);
    }
    /* However long the base and however many the attempts, the delay stays a real time. */
    assert_int_equal(bt_backoff_ms(BATON_BACKOFF_LINEAR, 1e9, 1000000), (int64_t)(BATON_SECONDS_MAX * 1000));
    assert_int_equal(bt_backoff_ms(BATON_BACKOFF_EXPONENTIAL, 1e9, 60), (int64_t)(BATON_SECONDS_MAX * 1000));
}

static void test_discard_rules(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    int64_t ready = enqueue(f->client, "Mail", "[]", NULL, 0);
    baton_enqueue_options later = BATON_ENQUEUE_OPTIONS_INIT;
    later.delay = 3600;
    int64_t scheduled;
    assert_int_equal(baton_enqueue(f->client, &scheduled, "Mail", NULL, &later), BATON_OK);
    assert_int_equal(baton_job_discard(f->client, ready), BATON_OK);
    assert_int_equal(baton_job_discard(f->client, scheduled), BATON_OK);
    assert_string_equal(job_status(f->client, ready), "discarded");
    assert_string_equal(job_status(f->client, scheduled), "discarded");
    assert_int_equal(baton_job_discard(f->client, ready), BATON_ESTATE);
    assert_int_equal(baton_job_discard(f->client, 424242), BATON_ENOTFOUND);
    /* Nothing is left in any execution table for a worker to pick up. */
    int moved = 0;
    assert_int_equal(baton_dispatch_due(f->client, 10, &moved), BATON_OK);
    assert_int_equal(count_jobs(f->client, "ready") + count_jobs(f->client, "scheduled"), 0);
}

static int block_until_cancelled(baton_job *job, void *payload)
{
    atomic_int *started = payload;
    atomic_store(started, 1);
    while (!baton_job_cancelled(job))
        bt_sleep(0.001);
    return 1;
}

static int flag_set(void *p) { return atomic_load((atomic_int *)p); }

/* start_one_job runs a job of a class performed by fn (whose payload is a flag it sets
 * once it runs) under a worker with a 50 ms shutdown timeout, and returns once it runs. */
static int64_t start_one_job(lib_fixture *f, baton_perform_fn fn, running_worker *w)
{
    static atomic_int started;
    atomic_store(&started, 0);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = fn;
    o.payload = &started;
    assert_int_equal(baton_class_register(f->client, "Long", &o), BATON_OK);
    int64_t id = enqueue(f->client, "Long", "[]", NULL, 0);
    baton_worker_options wo = BATON_WORKER_OPTIONS_INIT;
    wo.shutdown_timeout = 0.05;
    wo.polling_interval = 0.01;
    *w = worker_start_with(f->client, &wo);
    assert_true(poll_until(flag_set, &started, 10000));
    return id;
}

/* Asked to stop, finishes its work anyway (half a second) and succeeds. */
static int finish_regardless(baton_job *job, void *payload)
{
    (void)job;
    atomic_store((atomic_int *)payload, 1);
    bt_sleep(0.5);
    return 0;
}

/* A run that succeeds after the shutdown timeout asked it to stop is recorded finished:
 * handing it back would run a finished job again. */
static void test_run_that_finishes_after_the_stop_is_recorded(void **state)
{
    lib_fixture *f = *state;
    running_worker w;
    int64_t id = start_one_job(f, finish_regardless, &w);
    worker_stop(&w);
    assert_string_equal(job_status(f->client, id), "finished");
}

/* The database committed a round that claimed a job, but the worker never heard back (the
 * connection broke after the server received COMMIT). The claim is there, held by a live
 * worker that heartbeats: unless the worker settles it, the job never runs. */
static void test_claim_whose_commit_answer_was_lost_still_runs(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Work", &r, 3, BATON_BACKOFF_FIXED, 0);
    faulty_store_install();
    faulty_store_lose_next_claim_commit();
    int64_t id = enqueue(f->client, "Work", "[1]", NULL, 0);
    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "finished");
    worker_stop(&w);
    faulty_store_remove();
    assert_int_equal(faulty_store_commits_lost(), 1);
    assert_int_equal(r.performed, 1);
    /* The claim nobody knew of went back to the queue, and the next claim ran the job. */
    json_t *j = job_json(f->client, id);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    json_decref(j);
}

/* Runs for 2 s, through several alive thresholds of 0.5 s. */
static int run_two_seconds(baton_job *job, void *payload)
{
    (void)payload;
    for (int i = 0; i < 200 && !baton_job_cancelled(job); i++)
        bt_sleep(0.01);
    return baton_job_cancelled(job);
}

/* Pruning other processes fails at every tick (a row it cannot settle, a lock timeout on
 * a dead process's key): that must not take the worker's own heartbeat with it, or the
 * worker fences itself and stops a healthy job. */
static void test_failed_pruning_keeps_the_heartbeat(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_set_liveness(f->client, 0.1, 0.5), BATON_OK);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = run_two_seconds;
    assert_int_equal(baton_class_register(f->client, "Long", &o), BATON_OK);
    int64_t id = enqueue(f->client, "Long", "[]", NULL, 0);
    faulty_store_install();
    faulty_store_fail_statements("FROM baton_processes p WHERE p.id <>");
    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "finished");
    worker_stop(&w);
    faulty_store_fail_statements(NULL);
    faulty_store_remove();
    json_t *j = job_json(f->client, id);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 1);
    json_decref(j);
}

static void test_running_job_cannot_be_discarded_and_returns_on_stop(void **state)
{
    lib_fixture *f = *state;
    running_worker w;
    int64_t id = start_one_job(f, block_until_cancelled, &w);
    assert_string_equal(job_status(f->client, id), "claimed");
    assert_int_equal(baton_job_discard(f->client, id), BATON_ESTATE);
    assert_non_null(strstr(baton_error_last(), "running"));
    worker_stop(&w);
    /* Past the shutdown timeout the job went back to the queue, and the failure the
     * cancelled callback returned afterwards was not recorded. */
    assert_string_equal(job_status(f->client, id), "ready");
}

static void test_clear_finished_keeps_recent_and_unfinished(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    int64_t a = enqueue(f->client, "Rec", "1", NULL, 0);
    int64_t b = enqueue(f->client, "Rec", "2", NULL, 0);
    running_worker w = worker_start(f->client, "*", 2);
    wait_status(f->client, a, "finished");
    wait_status(f->client, b, "finished");
    worker_stop(&w);
    int64_t pending = enqueue(f->client, "Rec", "3", "paused-nowhere", 0);
    int64_t n = -1;
    assert_int_equal(baton_clear_finished(f->client, 3600, &n), BATON_OK);
    assert_int_equal(n, 0);
    assert_int_equal(baton_clear_finished(f->client, 0, &n), BATON_OK);
    assert_int_equal(n, 2);
    char *text;
    assert_int_equal(baton_job_json(f->client, a, &text), BATON_ENOTFOUND);
    assert_string_equal(job_status(f->client, pending), "ready");
}

static int64_t identities_of(bt_store *db, int64_t process_id)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM baton_process_identities WHERE id = %lld", (long long)process_id);
    return test_db_int(db, sql);
}

/* A process's identity outlives its registration while a job or an attempt names it, and
 * clear-finished drops it once none does; a registered process keeps its own. */
static void test_clear_finished_drops_identities_no_job_names(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail_until_attempt = 2};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    int64_t id = enqueue(f->client, "Rec", "1", NULL, 0);
    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "failed");
    worker_stop(&w);
    assert_int_equal(baton_job_retry(f->client, id), BATON_OK);
    w = worker_start(f->client, "*", 1);
    wait_status(f->client, id, "finished");
    worker_stop(&w);
    bt_store *db = test_db_open(f->url);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT process_id FROM baton_job_attempts WHERE job_id = %lld", (long long)id);
    int64_t failed_in = test_db_int(db, sql);
    snprintf(sql, sizeof sql, "SELECT claimed_by FROM baton_jobs WHERE id = %lld", (long long)id);
    int64_t finished_in = test_db_int(db, sql);
    assert_true(failed_in != finished_in);
    int64_t live, ended;
    assert_int_equal(bt_process_register(db, "worker", NULL, 30, &live), BATON_OK);
    assert_int_equal(bt_process_register(db, "dispatcher", NULL, 30, &ended), BATON_OK);
    assert_int_equal(bt_process_deregister(db, ended), BATON_OK);

    int64_t n = -1;
    assert_int_equal(baton_clear_finished(f->client, 3600, &n), BATON_OK);
    assert_int_equal(n, 0);
    assert_int_equal(identities_of(db, failed_in), 1);   /* named by the failed attempt */
    assert_int_equal(identities_of(db, finished_in), 1); /* named by the job */
    assert_int_equal(identities_of(db, live), 1);
    assert_int_equal(identities_of(db, ended), 0);

    assert_int_equal(baton_clear_finished(f->client, 0, &n), BATON_OK);
    assert_int_equal(n, 1);
    assert_int_equal(identities_of(db, failed_in), 0);
    assert_int_equal(identities_of(db, finished_in), 0);
    assert_int_equal(identities_of(db, live), 1);
    assert_int_equal(bt_process_deregister(db, live), BATON_OK);
    bt_store_close(db);
}

/* Runs until it is cancelled (10 s at most); *payload is 1 while it runs. */
static int until_cancelled(baton_job *job, void *payload)
{
    atomic_store((atomic_int *)payload, 1);
    for (int i = 0; i < 1000 && !baton_job_cancelled(job); i++)
        bt_sleep(0.01);
    baton_job_set_error(job, baton_job_cancelled(job) ? "cancelled" : "never cancelled");
    return 1;
}

static int is_set(void *p) { return atomic_load((atomic_int *)p) != 0; }

typedef struct perform_call {
    baton_client *client;
    int64_t id;
    int rc;
} perform_call;

static void *perform_in_thread(void *p)
{
    perform_call *pc = p;
    pc->rc = baton_perform_now(pc->client, &pc->id, "Stoppable", "[]");
    return NULL;
}

/* baton_perform_stop cancels the inline job running, whose outcome is recorded. */
static void test_perform_stop_cancels_the_running_job(void **state)
{
    lib_fixture *f = *state;
    atomic_int running = 0;
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = until_cancelled;
    o.payload = &running;
    o.max_attempts = 3;
    assert_int_equal(baton_class_register(f->client, "Stoppable", &o), BATON_OK);
    perform_call pc = {f->client, 0, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, perform_in_thread, &pc), 0);
    assert_true(poll_until(is_set, &running, 10000));
    baton_perform_stop(f->client);
    pthread_join(t, NULL);
    assert_int_equal(pc.rc, BATON_ERROR);
    /* Failed for good, attempts left or not: a stopped inline job never runs later. */
    assert_string_equal(job_status(f->client, pc.id), "failed");
    json_t *j = job_json(f->client, pc.id);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "cancelled");
    json_decref(j);
}

static void test_perform_now_records_the_job(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    int64_t id = 0;
    assert_int_equal(baton_perform_now(f->client, &id, "Rec", "[7]"), BATON_OK);
    assert_int_equal(r.performed, 1);
    assert_string_equal(job_status(f->client, id), "finished");
    r.fail_until_attempt = 2;
    assert_int_equal(baton_perform_now(f->client, &id, "Rec", "[8]"), BATON_ERROR);
    assert_non_null(strstr(baton_error_last(), "failed on purpose"));
    assert_string_equal(job_status(f->client, id), "failed");
}

static void test_schema_newer_than_library_is_refused_untouched(void **state)
{
    lib_fixture *f = *state;
    bt_store *db = test_db_open(f->url);
    test_db_exec(db, "INSERT INTO baton_schema_migrations VALUES (99, 0)");
    bt_store_close(db);
    baton_client *c = NULL;
    assert_int_equal(baton_open(&c, f->url), BATON_ESCHEMA);
    assert_null(c);
    assert_non_null(strstr(baton_error_last(), "newer"));
    assert_int_equal(baton_migrate(f->client), BATON_ESCHEMA);
    assert_int_equal(baton_check_schema(f->client), BATON_ESCHEMA);
}

static int performed_once(void *p)
{
    recorder *r = p;
    pthread_mutex_lock(&r->lock);
    int done = r->performed > 0;
    pthread_mutex_unlock(&r->lock);
    return done;
}

/* An idle worker wakes as soon as another connection makes a job ready, long before its
 * next poll: inotify on SQLite's WAL file, LISTEN/NOTIFY on PostgreSQL. */
static void test_idle_worker_wakes_when_a_job_becomes_ready(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    o.threads = 1;
    o.polling_interval = 60;
    running_worker w = worker_start_with(f->client, &o);
    bt_sleep(0.3); /* its first look found nothing: it sleeps now */
    baton_client *producer;
    assert_int_equal(baton_open(&producer, f->url), BATON_OK);
    assert_int_equal(baton_class_register(producer, "Rec", NULL), BATON_OK);
    int64_t id;
    assert_int_equal(baton_enqueue(producer, &id, "Rec", "[1]", NULL), BATON_OK);
    if (!poll_until(performed_once, &r, 5000))
        fail_msg("the idle worker did not wake for job %lld", (long long)id);
    baton_close(producer);
    worker_stop(&w);
}

/* The application's own connection, as it would hold one: a plain libsqlite3 handle or
 * libpq connection to the database under test. */
typedef struct app_conn {
    sqlite3 *db;
    PGconn *pg;
} app_conn;

static app_conn app_connect(const char *url)
{
    app_conn a = {0};
    if (test_on_postgres()) {
        a.pg = PQconnectdb(url);
        assert_int_equal(PQstatus(a.pg), CONNECTION_OK);
    } else {
        assert_int_equal(sqlite3_open(strchr(url, ':') + 1, &a.db), SQLITE_OK);
        sqlite3_busy_timeout(a.db, 10000);
    }
    return a;
}

static void app_exec(app_conn *a, const char *sql)
{
    if (a->pg) {
        PGresult *res = PQexec(a->pg, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fail_msg("%s: %s", sql, PQerrorMessage(a->pg));
        PQclear(res);
    } else if (sqlite3_exec(a->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(a->db));
    }
}

static int app_enqueue(baton_client *c, app_conn *a, const char *args, int64_t *id)
{
    baton_job_spec spec = {"Rec", args, NULL};
    baton_enqueued out = {0};
    int rc = a->pg ? baton_enqueue_on_postgres(c, a->pg, &out, &spec, 1) : baton_enqueue_on_sqlite(c, a->db, &out, &spec, 1);
    *id = out.id;
    return rc;
}

static void app_close(app_conn *a)
{
    if (a->pg)
        PQfinish(a->pg);
    else
        sqlite3_close(a->db);
}

static int64_t jobs_with_args(const char *url, const char *args)
{
    bt_store *db = test_db_open(url);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM baton_jobs WHERE arguments = '%s'", args);
    int64_t n = test_db_int(db, sql);
    bt_store_close(db);
    return n;
}

/* A job enqueued through the application's connection exists if and only if the
 * application's transaction commits, and a failed enqueue leaves that transaction usable. */
static void test_enqueue_joins_the_applications_transaction(void **state)
{
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    app_conn a = app_connect(f->url);
    app_exec(&a, "CREATE TABLE orders (id INTEGER PRIMARY KEY)");
    int64_t id;

    app_exec(&a, "BEGIN");
    app_exec(&a, "INSERT INTO orders VALUES (1)");
    assert_int_equal(app_enqueue(f->client, &a, "[1]", &id), BATON_OK);
    assert_true(id > 0);
    app_exec(&a, "ROLLBACK");
    assert_int_equal(jobs_with_args(f->url, "[1]"), 0);

    app_exec(&a, "BEGIN");
    app_exec(&a, "INSERT INTO orders VALUES (2)");
    assert_int_equal(app_enqueue(f->client, &a, "[2]", &id), BATON_OK);
    /* A bad job fails alone; the transaction and the job before it go on. */
    assert_int_equal(app_enqueue(f->client, &a, "{not json", &id), BATON_EINVALID);
    app_exec(&a, "INSERT INTO orders VALUES (3)");
    if (a.pg) /* on SQLite the open write transaction would keep the other connection waiting */
        assert_int_equal(jobs_with_args(f->url, "[2]"), 0);
    app_exec(&a, "COMMIT");
    assert_int_equal(jobs_with_args(f->url, "[2]"), 1);

    /* Outside a transaction the call commits on its own. */
    int64_t alone;
    assert_int_equal(app_enqueue(f->client, &a, "[3]", &alone), BATON_OK);
    assert_int_equal(jobs_with_args(f->url, "[3]"), 1);

    running_worker w = worker_start(f->client, "*", 1);
    wait_status(f->client, alone, "finished");
    worker_stop(&w);

    /* The other driver's connection is refused. */
    baton_job_spec spec = {"Rec", "[4]", NULL};
    assert_int_equal(a.pg ? baton_enqueue_on_sqlite(f->client, (struct sqlite3 *)a.pg, NULL, &spec, 1)
                          : baton_enqueue_on_postgres(f->client, (struct pg_conn *)a.db, NULL, &spec, 1),
                     BATON_EINVALID);
    app_close(&a);
}

static int process_registered(void *store)
{
    return test_db_int(store, "SELECT COUNT(*) FROM baton_processes") > 0;
}

/* A server that drops every connection (a restart, a failover) costs a failed call and a
 * retried round, not the client or the worker. */
static void test_lost_connections_are_replaced(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "reconnecting is the PostgreSQL driver's (an SQLite file has no connection to lose)");
    lib_fixture *f = *state;
    recorder r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_recorder(f->client, "Rec", &r, 1, BATON_BACKOFF_FIXED, 0);
    running_worker w = worker_start(f->client, "*", 2);
    bt_store *admin = test_db_open(f->url);
    /* Once the worker is up: a worker that cannot register at all does not start. */
    assert_true(poll_until(process_registered, admin, 5000));
    test_db_exec(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    bt_store_close(admin);
    /* The client learns of the loss from the call it makes next; the one after reconnects. */
    int64_t id;
    int rc = baton_enqueue(f->client, &id, "Rec", "[1]", NULL);
    if (rc != BATON_OK) {
        assert_int_equal(rc, BATON_ESTORE);
        assert_int_equal(baton_enqueue(f->client, &id, "Rec", "[1]", NULL), BATON_OK);
    }
    wait_status(f->client, id, "finished");
    worker_stop(&w);
}

static void test_migrate_is_idempotent(void **state)
{
    lib_fixture *f = *state;
    assert_int_equal(baton_migrate(f->client), BATON_OK);
    assert_int_equal(baton_migrate(f->client), BATON_OK);
    assert_int_equal(baton_check_schema(f->client), BATON_OK);
}

/* A database left at version 1 is refused until `baton init` upgrades it in place; the
 * processes registered then keep their identities. */
/* Placeholders may expand to text far longer than themselves (a short migration using
 * {SERIAL} on PostgreSQL): the expansion is sized by what it writes. */
static void test_schema_placeholders_expand_to_any_length(void **state)
{
    (void)state;
    bt_store_ops ops = {.ddl_serial = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", .ddl_real = "DOUBLE PRECISION",
                        .ddl_clock = ""};
    char *sql = bt_schema_expand(&ops, "{SERIAL}{REAL},{CLOCK}{");
    assert_string_equal(sql, "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEYDOUBLE PRECISION,{");
    free(sql);
}

static void test_older_schema_is_upgraded_in_place(void **state)
{
    lib_fixture *f = *state;
    int64_t id, process_id;
    assert_int_equal(baton_class_register(f->client, "Mail", NULL), BATON_OK);
    assert_int_equal(baton_enqueue(f->client, &id, "Mail", "[1]", NULL), BATON_OK);
    bt_store *db = test_db_open(f->url);
    assert_int_equal(bt_process_register(db, "worker", NULL, 30, &process_id), BATON_OK);
    char *queues[] = {"*"};
    bt_claimed_job claimed = {0};
    bt_claims claims = {.jobs = &claimed, .max = 1};
    assert_int_equal(bt_begin(db, BT_TXN_WRITE), BATON_OK);
    assert_int_equal(bt_claim(db, process_id, queues, 1, bt_now_ms(), &claims), BATON_OK);
    assert_int_equal(bt_commit(db), BATON_OK);
    assert_int_equal(claims.count, 1);
    bt_claimed_job_free(&claimed);
    test_db_exec(db, "DROP TABLE baton_process_identities;"
                     "ALTER TABLE baton_claimed_executions DROP COLUMN attempt;"
                     "ALTER TABLE baton_processes DROP COLUMN beat;"
                     "ALTER TABLE baton_processes DROP COLUMN beats_since;"
                     "ALTER TABLE baton_processes DROP COLUMN alive_threshold;"
                     "ALTER TABLE baton_processes DROP COLUMN beat_gap;"
                     "ALTER TABLE baton_processes DROP COLUMN host_id;"
                     "ALTER TABLE baton_recurring_tasks DROP COLUMN timezone;"
                     "ALTER TABLE baton_jobs DROP COLUMN admitted_by;"
                     "ALTER TABLE baton_jobs DROP COLUMN admitted_at;"
                     "ALTER TABLE baton_jobs DROP COLUMN claimed_by;"
                     "ALTER TABLE baton_jobs DROP COLUMN blocked_at;"
                     "DROP TABLE baton_job_attempts;"
                     "DELETE FROM baton_schema_migrations WHERE version > 1");
    assert_int_equal(baton_check_schema(f->client), BATON_ESCHEMA);
    assert_non_null(strstr(baton_error_last(), "older"));
    assert_int_equal(baton_migrate(f->client), BATON_OK);
    assert_int_equal(baton_check_schema(f->client), BATON_OK);
    /* Each statement fails the test if a column or table is still missing. */
    test_db_exec(db, "SELECT timezone FROM baton_recurring_tasks;"
                     "SELECT admitted_by, admitted_at, claimed_by, blocked_at FROM baton_jobs;"
                     "SELECT outcome, blocked_at FROM baton_job_attempts");
    /* The claim made before the upgrade is named by the attempt it was made for. */
    assert_int_equal(test_db_int(db, "SELECT attempt FROM baton_claimed_executions"), 1);
    /* Processes registered before the upgrade beat by the liveness clock from then on. */
    assert_int_equal(test_db_int(db, "SELECT COUNT(*) FROM baton_processes WHERE beat IS NULL OR beats_since IS NULL OR beat_gap IS NULL"), 0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM baton_process_identities i JOIN baton_processes p ON p.id = i.id"
             " WHERE i.id = %lld AND i.name = p.name AND i.kind = 'worker' AND i.hostname = p.hostname AND i.pid = p.pid",
             (long long)process_id);
    assert_int_equal(test_db_int(db, sql), 1);
    assert_int_equal(bt_process_deregister(db, process_id), BATON_OK);
    bt_store_close(db);
    assert_string_equal(job_status(f->client, id), "ready");
}

static void test_bad_urls(void **state)
{
    (void)state;
    baton_client *c = NULL;
    assert_int_equal(baton_open(&c, "mysql://x"), BATON_EINVALID);
    assert_non_null(strstr(baton_error_last(), "mysql"));
    assert_int_equal(baton_open(&c, "sqlite:/nonexistent-dir/sub/x.db"), BATON_ESTORE);
    assert_non_null(strstr(baton_error_last(), "/nonexistent-dir/sub/x.db"));
    assert_int_equal(baton_open(&c, "sqlite:x.db?bogus=1"), BATON_EINVALID);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_enqueue_makes_ready_job_with_documented_fields, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_bulk_enqueue_is_all_or_nothing, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_mixed_bulk_enqueue_maps_each_spec_to_its_job, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_is_refused_and_stored_jobs_stay, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_queue_list_order_wildcards_and_priority, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_paused_queue_is_skipped_until_resumed, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_scheduled_job_becomes_ready_when_due, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_failed_job_retries_until_success, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_last_attempt_fails_then_operator_retries, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_backoff_schedules_the_retry, lib_setup, lib_teardown),
        cmocka_unit_test(test_backoff_formulas),
        cmocka_unit_test(test_database_urls_hide_their_passwords),
        cmocka_unit_test_setup_teardown(test_discard_rules, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_claim_whose_commit_answer_was_lost_still_runs, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_failed_pruning_keeps_the_heartbeat, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_running_job_cannot_be_discarded_and_returns_on_stop, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_run_that_finishes_after_the_stop_is_recorded, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_clear_finished_keeps_recent_and_unfinished, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_clear_finished_drops_identities_no_job_names, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_perform_now_records_the_job, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_perform_stop_cancels_the_running_job, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_schema_newer_than_library_is_refused_untouched, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_is_idempotent, lib_setup, lib_teardown),
        cmocka_unit_test(test_schema_placeholders_expand_to_any_length),
        cmocka_unit_test_setup_teardown(test_older_schema_is_upgraded_in_place, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_idle_worker_wakes_when_a_job_becomes_ready, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_lost_connections_are_replaced, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_joins_the_applications_transaction, lib_setup, lib_teardown),
        cmocka_unit_test(test_bad_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
