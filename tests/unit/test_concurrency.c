// ctest-labels: threads sqlite concurrency
/* test_concurrency.c: per-key concurrency limits through the C API on a real SQLite file:
 * the seed scenario (three syncs for one user), key templates, groups, on_conflict modes,
 * scheduled and retried jobs, promotion order, pruning of dead holders, fencing tokens,
 * inline performs, maintenance, and an enqueue/release race run thousands of times. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baton.h"
#include "core/core.h"
#include "support.h"
#include "util/clock.h"

static const char *error_of(baton_client *c, int64_t id)
{
    static char buf[256];
    json_t *j = job_json(c, id);
    const char *e = json_string_value(json_object_get(j, "error"));
    snprintf(buf, sizeof buf, "%s", e ? e : "");
    json_decref(j);
    return buf;
}

/* ---- a class whose jobs record when they ran ---- */

enum { MAX_RUNS = 4096 };

typedef struct run {
    int64_t job;
    char key[96];
    int64_t start_ns, end_ns;
    int64_t token;
} run;

typedef struct journal {
    pthread_mutex_t lock;
    run runs[MAX_RUNS];
    int nruns;
    double sleep_s;
    int fail_first_attempt;
} journal;

static int journaled(baton_job *job, void *payload)
{
    journal *jr = payload;
    int64_t start = bt_mono_ns();
    bt_sleep(jr->sleep_s);
    pthread_mutex_lock(&jr->lock);
    run *r = &jr->runs[jr->nruns++ % MAX_RUNS];
    r->job = baton_job_id(job);
    snprintf(r->key, sizeof r->key, "%s", baton_job_concurrency_key(job) ? baton_job_concurrency_key(job) : "");
    r->start_ns = start;
    r->end_ns = bt_mono_ns();
    r->token = baton_job_fencing_token(job);
    pthread_mutex_unlock(&jr->lock);
    if (jr->fail_first_attempt && baton_job_attempt(job) == 1) {
        baton_job_set_error(job, "first attempt fails");
        return 1;
    }
    return 0;
}

static void register_limited(baton_client *c, const char *name, const char *key, int limit,
                             const char *group, baton_on_conflict mode, journal *jr)
{
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = journaled;
    o.payload = jr;
    o.concurrency_key = key;
    o.concurrency_limit = limit;
    o.concurrency_group = group;
    o.on_conflict = mode;
    o.max_attempts = 3;
    o.backoff = BATON_BACKOFF_FIXED;
    o.backoff_base = 0;
    assert_int_equal(baton_class_register(c, name, &o), BATON_OK);
}

static baton_enqueued enqueue(baton_client *c, const char *cls, const char *args)
{
    baton_job_spec spec = {cls, args, NULL};
    baton_enqueued e;
    assert_int_equal(baton_enqueue_detailed(c, &e, &spec, 1), BATON_OK);
    return e;
}

typedef struct count_wait {
    journal *jr;
    int n;
} count_wait;

static int runs_at_least(void *p)
{
    count_wait *w = p;
    pthread_mutex_lock(&w->jr->lock);
    int ok = w->jr->nruns >= w->n;
    pthread_mutex_unlock(&w->jr->lock);
    return ok;
}

static void wait_runs(journal *jr, int n)
{
    count_wait w = {jr, n};
    if (!poll_until(runs_at_least, &w, 20000))
        fail_msg("only %d of %d runs happened", jr->nruns, n);
}

static int overlaps(const run *a, const run *b) { return a->start_ns < b->end_ns && b->start_ns < a->end_ns; }

/* max_overlap is the largest number of runs of key running at one instant. */
static int max_overlap(journal *jr, const char *key)
{
    int best = 0;
    for (int i = 0; i < jr->nruns; i++) {
        if (strcmp(jr->runs[i].key, key) != 0)
            continue;
        int n = 0;
        for (int k = 0; k < jr->nruns; k++)
            if (strcmp(jr->runs[k].key, key) == 0 && jr->runs[k].start_ns <= jr->runs[i].start_ns &&
                jr->runs[i].start_ns < jr->runs[k].end_ns)
                n++;
        best = n > best ? n : best;
    }
    return best;
}

/* ---- the seed scenario ---- */

static void test_key_is_group_slash_rendered_template(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "GoogleCalendarSyncJob", "google_calendar_sync_user_{user_id}", 1, NULL,
                     BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued e = enqueue(f->client, "GoogleCalendarSyncJob", "{\"user_id\":123,\"force\":false}");
    json_t *j = job_json(f->client, e.id);
    assert_string_equal(json_string_value(json_object_get(j, "concurrency_key")),
                        "GoogleCalendarSyncJob/google_calendar_sync_user_123");
    json_decref(j);

    register_limited(f->client, "Nested", "u{user.id}-{tags.1}-{0}", 1, "Sync", BATON_ON_CONFLICT_BLOCK, &jr);
    e = enqueue(f->client, "Nested", "{\"user\":{\"id\":\"ab\"},\"tags\":[true,2.5],\"0\":\"zero\"}");
    j = job_json(f->client, e.id);
    assert_string_equal(json_string_value(json_object_get(j, "concurrency_key")), "Sync/uab-2.5-zero");
    json_decref(j);

    register_limited(f->client, "First", "{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    e = enqueue(f->client, "First", "[42, \"x\"]");
    j = job_json(f->client, e.id);
    assert_string_equal(json_string_value(json_object_get(j, "concurrency_key")), "First/42");
    json_decref(j);
}

static void test_key_placeholder_errors_name_the_placeholder(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "user_{user_id}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    static const struct { const char *args, *words; } cases[] = {
        {"{\"user\":1}", "{user_id} is missing"},
        {"{\"user_id\":null}", "{user_id} is missing"},
        {"{\"user_id\":{\"a\":1}}", "{user_id} is an object"},
        {"{\"user_id\":[1]}", "{user_id} is an array"},
        /* A NUL would end the key early: "a\0b" and "a\0c" would share a key. */
        {"{\"user_id\":\"a\\u0000b\"}", "{user_id} holds a control character (byte 0x00)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        baton_job_spec spec = {"Sync", cases[i].args, NULL};
        baton_enqueued e = {0};
        assert_int_equal(baton_enqueue_detailed(f->client, &e, &spec, 1), BATON_EINVALID);
        if (!strstr(baton_error_last(), cases[i].words))
            fail_msg("'%s' lacks '%s'", baton_error_last(), cases[i].words);
    }
    char *jobs;
    baton_job_filter all = {.limit = 10};
    assert_int_equal(baton_jobs_json(f->client, &all, &jobs), BATON_OK);
    assert_string_equal(jobs, "[]"); /* nothing was stored */
    baton_free(jobs);
}

static void test_three_jobs_for_one_user_one_ready_two_blocked(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "GoogleCalendarSyncJob", "google_calendar_sync_user_{user_id}", 1, NULL,
                     BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued j1 = enqueue(f->client, "GoogleCalendarSyncJob", "{\"user_id\":123}");
    baton_enqueued j2 = enqueue(f->client, "GoogleCalendarSyncJob", "{\"user_id\":123}");
    baton_enqueued j3 = enqueue(f->client, "GoogleCalendarSyncJob", "{\"user_id\":123}");
    assert_int_equal(j1.state, BATON_JOB_READY);
    assert_int_equal(j2.state, BATON_JOB_BLOCKED);
    assert_int_equal(j3.state, BATON_JOB_BLOCKED);
    assert_string_equal(job_status(f->client, j2.id), "blocked");
    json_t *b = job_json(f->client, j3.id);
    assert_false(json_is_null(json_object_get(b, "blocked_since")));
    assert_true(json_is_null(json_object_get(b, "fencing_token")));
    json_decref(b);
    char *sems;
    assert_int_equal(baton_semaphores_json(f->client, 0, NULL, &sems), BATON_OK);
    json_t *list = json_loads(sems, 0, NULL);
    baton_free(sems);
    assert_int_equal(json_array_size(list), 1);
    json_t *s = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(s, "key")), "GoogleCalendarSyncJob/google_calendar_sync_user_123");
    assert_int_equal(json_integer_value(json_object_get(s, "value")), 0);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "holders"), 0)), j1.id);
    assert_int_equal(json_integer_value(json_object_get(s, "blocked")), 2);
    json_decref(list);
}

static void test_runs_in_order_one_at_a_time_users_in_parallel(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER, .sleep_s = 0.08};
    register_limited(f->client, "Sync", "user_{user_id}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    int64_t a[3], other;
    for (int i = 0; i < 3; i++)
        a[i] = enqueue(f->client, "Sync", "{\"user_id\":123}").id;
    other = enqueue(f->client, "Sync", "{\"user_id\":456}").id;
    running_worker w = worker_start(f->client, "*", 4);
    wait_runs(&jr, 4);
    worker_stop(&w);
    run *r123[3];
    int n = 0;
    const run *r456 = NULL;
    for (int i = 0; i < jr.nruns; i++) {
        if (jr.runs[i].job == other)
            r456 = &jr.runs[i];
        else
            r123[n++] = &jr.runs[i];
    }
    assert_int_equal(n, 3);
    /* The journal is appended in end order: with no overlap that is also start order. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(r123[i]->job, a[i]);
    assert_false(overlaps(r123[0], r123[1]));
    assert_false(overlaps(r123[1], r123[2]));
    assert_non_null(r456);
    assert_true(overlaps(r456, r123[0])); /* another user's sync ran alongside */
    assert_true(r123[1]->token > r123[0]->token && r123[2]->token > r123[1]->token);
    for (int i = 0; i < 3; i++)
        assert_string_equal(job_status(f->client, a[i]), "finished");
    /* Each records what gave it its slot: job 2 got job 1's, job 3 got job 2's. */
    const char *expect[3];
    char by1[48], by2[48];
    snprintf(by1, sizeof by1, "release of job %lld", (long long)a[0]);
    snprintf(by2, sizeof by2, "release of job %lld", (long long)a[1]);
    expect[0] = "enqueue", expect[1] = by1, expect[2] = by2;
    for (int i = 0; i < 3; i++) {
        json_t *j = job_json(f->client, a[i]);
        assert_string_equal(json_string_value(json_object_get(j, "admitted_by")), expect[i]);
        json_decref(j);
    }
    json_t *u = job_json(f->client, other);
    assert_string_equal(json_string_value(json_object_get(u, "admitted_by")), "enqueue");
    json_decref(u);
}

static void test_groups_share_slots_across_classes(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "SyncCalendar", "user_{0}", 1, "UserSync", BATON_ON_CONFLICT_BLOCK, &jr);
    register_limited(f->client, "SyncContacts", "user_{0}", 1, "UserSync", BATON_ON_CONFLICT_BLOCK, &jr);
    register_limited(f->client, "Unrelated", "user_{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    assert_int_equal(enqueue(f->client, "SyncCalendar", "[7]").state, BATON_JOB_READY);
    assert_int_equal(enqueue(f->client, "SyncContacts", "[7]").state, BATON_JOB_BLOCKED);
    assert_int_equal(enqueue(f->client, "SyncContacts", "[8]").state, BATON_JOB_READY);
    assert_int_equal(enqueue(f->client, "Unrelated", "[7]").state, BATON_JOB_READY);
}

static void test_limits_admit_exactly_n(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    static const int limits[] = {1, 2, 5};
    for (int l = 0; l < 3; l++) {
        char name[16];
        snprintf(name, sizeof name, "L%d", limits[l]);
        register_limited(f->client, name, "k", limits[l], NULL, BATON_ON_CONFLICT_BLOCK, &jr);
        int ready = 0, blocked = 0;
        for (int i = 0; i < 8; i++) {
            baton_enqueued e = enqueue(f->client, name, "[]");
            ready += e.state == BATON_JOB_READY;
            blocked += e.state == BATON_JOB_BLOCKED;
        }
        assert_int_equal(ready, limits[l]);
        assert_int_equal(blocked, 8 - limits[l]);
    }
}

static void test_discard_records_the_job(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Once", "k", 1, NULL, BATON_ON_CONFLICT_DISCARD, &jr);
    baton_enqueued first = enqueue(f->client, "Once", "[]");
    baton_enqueued second = enqueue(f->client, "Once", "[]");
    assert_int_equal(first.state, BATON_JOB_READY);
    assert_int_equal(second.state, BATON_JOB_DISCARDED);
    assert_string_equal(job_status(f->client, second.id), "discarded");
    assert_string_equal(error_of(f->client, second.id), "concurrency limit");
}

static void test_coalesce_keeps_one_waiter_and_runs_at_most_two(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER, .sleep_s = 0.05};
    register_limited(f->client, "Sync", "user_{0}", 1, NULL, BATON_ON_CONFLICT_COALESCE, &jr);
    baton_enqueued e[5];
    for (int i = 0; i < 5; i++)
        e[i] = enqueue(f->client, "Sync", "[1]");
    assert_int_equal(e[0].state, BATON_JOB_READY);
    assert_int_equal(e[1].state, BATON_JOB_BLOCKED);
    for (int i = 2; i < 5; i++) {
        assert_int_equal(e[i].state, BATON_JOB_DISCARDED);
        assert_int_equal(e[i].coalesced_into, e[1].id);
        char want[64];
        snprintf(want, sizeof want, "coalesced into job %lld", (long long)e[1].id);
        assert_string_equal(error_of(f->client, e[i].id), want);
    }
    running_worker w = worker_start(f->client, "*", 3);
    wait_runs(&jr, 2);
    worker_stop(&w);
    assert_int_equal(jr.nruns, 2);
}

/* A retry of a discard or coalesce job meets its mode again, like a newcomer: when it falls
 * due while another job of its key holds the slot, that job does the same work, so the
 * retry is discarded ("concurrency limit"), or coalesced into the job already waiting. */
static void retry_meets_its_mode(lib_fixture *f, baton_on_conflict mode)
{
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail_first_attempt = 1};
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = journaled;
    o.payload = &jr;
    o.concurrency_key = "k";
    o.on_conflict = mode;
    o.max_attempts = 2;
    o.backoff = BATON_BACKOFF_FIXED;
    o.backoff_base = 0.2;
    assert_int_equal(baton_class_register(f->client, "Sync", &o), BATON_OK);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    running_worker w = worker_start(f->client, "*", 1);
    wait_runs(&jr, 1);
    worker_stop(&w);
    assert_string_equal(job_status(f->client, a.id), "scheduled"); /* its retry, after the backoff */
    baton_enqueued holder = enqueue(f->client, "Sync", "[]");
    assert_int_equal(holder.state, BATON_JOB_READY);
    baton_enqueued waiter = {0};
    if (mode == BATON_ON_CONFLICT_COALESCE) {
        waiter = enqueue(f->client, "Sync", "[]");
        assert_int_equal(waiter.state, BATON_JOB_BLOCKED);
    }
    int moved = 0;
    while (moved == 0) {
        assert_int_equal(baton_dispatch_due(f->client, 10, &moved), BATON_OK);
        if (!moved)
            bt_sleep(0.01); /* waiting for the clock to reach the retry's time */
    }
    assert_string_equal(job_status(f->client, a.id), "discarded");
    char want[64] = "concurrency limit";
    if (mode == BATON_ON_CONFLICT_COALESCE)
        snprintf(want, sizeof want, "coalesced into job %lld", (long long)waiter.id);
    assert_string_equal(error_of(f->client, a.id), want);
    assert_string_equal(job_status(f->client, holder.id), "ready");
}

static void test_discard_retry_meets_its_mode(void **state) { retry_meets_its_mode(*state, BATON_ON_CONFLICT_DISCARD); }
static void test_coalesce_retry_meets_its_mode(void **state) { retry_meets_its_mode(*state, BATON_ON_CONFLICT_COALESCE); }

static void test_scheduled_job_meets_its_limit_when_due(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueue_options later = BATON_ENQUEUE_OPTIONS_INIT;
    later.delay = 0.05;
    baton_job_spec spec = {"Sync", "[]", &later};
    baton_enqueued scheduled;
    assert_int_equal(baton_enqueue_detailed(f->client, &scheduled, &spec, 1), BATON_OK);
    assert_int_equal(scheduled.state, BATON_JOB_SCHEDULED);
    baton_enqueued now = enqueue(f->client, "Sync", "[]");
    /* Enqueued later but due first: the slot went to the job that is due now. */
    assert_int_equal(now.state, BATON_JOB_READY);
    int moved = 0;
    while (moved == 0) {
        assert_int_equal(baton_dispatch_due(f->client, 10, &moved), BATON_OK);
        if (!moved)
            bt_sleep(0.005); /* waiting for the clock to reach the scheduled time */
    }
    assert_string_equal(job_status(f->client, scheduled.id), "blocked");
}

static void test_failure_releases_and_retry_queues_again(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail_first_attempt = 1};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued a = enqueue(f->client, "Sync", "[\"a\"]");
    baton_enqueued b = enqueue(f->client, "Sync", "[\"b\"]");
    running_worker w = worker_start(f->client, "*", 2);
    wait_runs(&jr, 4); /* a fails, b fails, then each retried once */
    worker_stop(&w);
    /* a's failure handed the slot to b, and a queued behind it: b ran before a's retry. */
    assert_int_equal(jr.runs[0].job, a.id);
    assert_int_equal(jr.runs[1].job, b.id);
    assert_int_equal(max_overlap(&jr, "Sync/k"), 1);
    assert_string_equal(job_status(f->client, a.id), "finished");
    assert_string_equal(job_status(f->client, b.id), "finished");
}

static void test_blocked_jobs_promoted_by_priority_then_enqueue_order(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    int64_t ids[5];
    static const int priorities[5] = {0, 5, 1, 1, 0};
    for (int i = 0; i < 5; i++) {
        baton_enqueue_options o = BATON_ENQUEUE_OPTIONS_INIT;
        o.has_priority = 1;
        o.priority = priorities[i];
        baton_job_spec spec = {"Sync", "[]", &o};
        baton_enqueued e;
        assert_int_equal(baton_enqueue_detailed(f->client, &e, &spec, 1), BATON_OK);
        ids[i] = e.id;
    }
    running_worker w = worker_start(f->client, "*", 3);
    wait_runs(&jr, 5);
    worker_stop(&w);
    static const int order[5] = {0, 4, 2, 3, 1};
    for (int i = 0; i < 5; i++)
        assert_int_equal(jr.runs[i].job, ids[order[i]]);
}

/* ---- dead holders, zombies and maintenance, driven through the store directly ---- */

static bt_store *raw_store(lib_fixture *f)
{
    bt_store *s;
    assert_int_equal(bt_store_open(&s, f->url), BATON_OK);
    return s;
}

/* prune_workers declares every worker dead, as a live process does once one is silent
 * past its threshold; returns how many it pruned. */
static int prune_workers(bt_store *s)
{
    bt_id_list ids = {0};
    assert_int_equal(bt_exec(s, "SELECT id FROM baton_processes WHERE kind = 'worker'", NULL, 0, bt_row_collect_id,
                             &ids, NULL),
                     BATON_OK);
    for (size_t i = 0; i < ids.len; i++) {
        int pruned = 0;
        assert_int_equal(bt_prune_process(s, ids.ids[i], bt_now_ms(), &pruned), BATON_OK);
        assert_int_equal(pruned, 1);
    }
    free(ids.ids);
    return (int)ids.len;
}

static void exec_sql(bt_store *s, const char *sql)
{
    assert_int_equal(s->ops->exec_script(s, sql), BATON_OK);
}

/* A row the database refuses to update (a broken trigger, a constraint added by hand): the
 * outcome of its job cannot be recorded. That must not stop the worker's other outcomes
 * or its claims: the refused one waits apart while the next job still runs. */
static void test_one_refused_outcome_holds_up_nothing_else(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued broken = enqueue(f->client, "Sync", "[1]");
    bt_store *s = raw_store(f);
    char sql[512];
    if (test_on_postgres())
        snprintf(sql, sizeof sql,
                 "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'broken row'; END $$"
                 " LANGUAGE plpgsql; CREATE TRIGGER refuse BEFORE UPDATE ON baton_jobs FOR EACH ROW"
                 " WHEN (NEW.id = %lld AND NEW.status = 'finished') EXECUTE FUNCTION refuse()", (long long)broken.id);
    else
        snprintf(sql, sizeof sql,
                 "CREATE TRIGGER refuse BEFORE UPDATE OF status ON baton_jobs WHEN NEW.id = %lld"
                 " AND NEW.status = 'finished' BEGIN SELECT RAISE(ABORT, 'broken row'); END", (long long)broken.id);
    exec_sql(s, sql);
    running_worker w = worker_start(f->client, "*", 1);
    wait_runs(&jr, 1);
    baton_enqueued next = enqueue(f->client, "Sync", "[2]");
    wait_runs(&jr, 2);
    wait_status(f->client, next.id, "finished");
    assert_string_equal(job_status(f->client, broken.id), "claimed");
    exec_sql(s, test_on_postgres() ? "DROP TRIGGER refuse ON baton_jobs" : "DROP TRIGGER refuse");
    wait_status(f->client, broken.id, "finished"); /* recorded once the row takes it */
    worker_stop(&w);
    assert_int_equal(jr.nruns, 2);
    bt_store_close(s);
}

/* claim_as registers a worker process on s and claims up to max jobs for it in one
 * transaction, as a worker's round does; returns how many it claimed. */
static int claim_as(bt_store *s, int64_t *process_id, int max, bt_claimed_job *claimed)
{
    assert_int_equal(bt_process_register(s, "worker", NULL, 30, process_id), BATON_OK);
    char *queues[] = {"*", NULL};
    bt_claims claims = {.jobs = claimed, .max = max, .after_end = 1};
    assert_int_equal(bt_begin(s, BT_TXN_WRITE), BATON_OK);
    assert_int_equal(bt_claim(s, *process_id, queues, 1, bt_now_ms(), &claims), BATON_OK);
    assert_int_equal(bt_end(s, BATON_OK), BATON_OK);
    return claims.count;
}

/* complete_as records n outcomes for process_id in one transaction, as a worker's round
 * does. */
static void complete_as(bt_store *s, int64_t process_id, const bt_outcome *outcomes, size_t n, int *owned,
                        int64_t *retry_at)
{
    assert_int_equal(bt_begin(s, BT_TXN_WRITE), BATON_OK);
    assert_int_equal(bt_complete(s, process_id, outcomes, n, bt_now_ms(), owned, retry_at), BATON_OK);
    assert_int_equal(bt_commit(s), BATON_OK);
}

static int64_t holder_count(bt_store *s)
{
    int64_t holders = 0;
    assert_int_equal(bt_query_int(s, "SELECT COUNT(*) FROM baton_semaphore_holders", NULL, 0, &holders, 0), BATON_OK);
    return holders;
}

static void test_dead_holder_is_pruned_once_and_zombie_releases_nothing(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    baton_enqueued b = enqueue(f->client, "Sync", "[]");
    baton_enqueued c = enqueue(f->client, "Sync", "[]");
    bt_store *s = raw_store(f);
    int64_t zombie;
    bt_claimed_job claimed[1];
    assert_int_equal(claim_as(s, &zombie, 1, claimed), 1);
    assert_int_equal(claimed[0].id, a.id);
    bt_claimed_job_free(&claimed[0]);
    /* Silent for an hour, while this process has beaten without a break for a minute. */
    exec_sql(s, "UPDATE baton_processes SET beat = beat - 3600000");
    int64_t self;
    assert_int_equal(bt_process_register(s, "worker", NULL, 30, &self), BATON_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE baton_processes SET beats_since = beats_since - 60000 WHERE id = %lld",
             (long long)self);
    exec_sql(s, sql);
    int alive, pruned;
    assert_int_equal(bt_liveness_tick(s, self, 30, &alive, &pruned), BATON_OK);
    assert_int_equal(pruned, 1);
    /* a failed with "process pruned"; its slot went to b, and its retry queued for a slot
     * again like a new job. */
    assert_string_equal(error_of(f->client, a.id), "process pruned");
    assert_string_equal(job_status(f->client, b.id), "ready");
    assert_string_equal(job_status(f->client, a.id), "blocked");

    /* The zombie wakes up and reports its job finished: it no longer owns the claim, so
     * nothing is written and b's slot is not released a second time. */
    bt_outcome done = {.job_id = a.id, .succeeded = 1, .attempt = 1, .max_attempts = 3};
    int owned = 1;
    complete_as(s, zombie, &done, 1, &owned, NULL);
    assert_int_equal(owned, 0);
    assert_string_equal(job_status(f->client, c.id), "blocked");
    assert_int_equal(holder_count(s), 1);
    bt_store_close(s);
}

static const char *admitted_by(baton_client *c, int64_t id)
{
    static char buf[64];
    json_t *j = job_json(c, id);
    const char *how = json_string_value(json_object_get(j, "admitted_by"));
    snprintf(buf, sizeof buf, "%s", how ? how : "");
    json_decref(j);
    return buf;
}

/* A worker records a round's outcomes together: each run's slot still goes to the next
 * blocked job, named after the run that made room, and an outcome whose claim is not the
 * process's own changes nothing. */
/* repairs_by_doctor runs `doctor --repair` with the client's liveness (the default 30 s)
 * and returns how many repairs it made. */
static int repairs_by_doctor(baton_client *c)
{
    char *text;
    int left;
    assert_int_equal(baton_doctor_json(c, 1, &text, &left), BATON_OK);
    json_t *j = json_loads(text, 0, NULL);
    baton_free(text);
    int n = (int)json_array_size(json_object_get(j, "repaired"));
    json_decref(j);
    return n;
}

static void set_process(bt_store *s, int64_t id, const char *assignments)
{
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE baton_processes SET %s WHERE id = %lld", assignments, (long long)id);
    exec_sql(s, sql);
}

/* A process is judged dead by its own threshold, not the judge's, and only once a live
 * process has beaten without a break for that long (it shows the database was there to
 * beat to). A doctor run with the default 30 s prunes neither a worker configured for 60 s
 * and silent for 40 s, nor anyone just after an outage that broke every run of beats. */
static void test_dead_is_judged_by_its_own_threshold_with_a_witness(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    bt_store *s = raw_store(f);
    int64_t slow, witness;
    bt_claimed_job claimed[1];
    assert_int_equal(claim_as(s, &slow, 1, claimed), 1);
    bt_claimed_job_free(&claimed[0]);
    assert_int_equal(bt_process_register(s, "worker", NULL, 30, &witness), BATON_OK);
    set_process(s, slow, "alive_threshold = 60000, beat = beat - 40000");
    set_process(s, witness, "beats_since = beats_since - 120000");
    assert_int_equal(repairs_by_doctor(f->client), 0);
    assert_string_equal(job_status(f->client, a.id), "claimed");
    /* Silent for 70 s, but the only live process began beating again a moment ago. */
    set_process(s, slow, "beat = beat - 30000");
    set_process(s, witness, "beats_since = beat");
    assert_int_equal(repairs_by_doctor(f->client), 0);
    assert_string_equal(job_status(f->client, a.id), "claimed");
    /* The witness has beaten for a minute since: now the silence is the slow one's own. */
    set_process(s, witness, "beats_since = beats_since - 60000");
    assert_int_equal(repairs_by_doctor(f->client), 1);
    assert_string_equal(error_of(f->client, a.id), "process pruned");
    bt_store_close(s);
}

/* tick_prunes runs one liveness tick of process self (30 s threshold) and returns how many
 * processes it pruned. */
static int tick_prunes(bt_store *s, int64_t self)
{
    int alive = 0, pruned = -1;
    assert_int_equal(bt_liveness_tick(s, self, 30, &alive, &pruned), BATON_OK);
    assert_int_equal(alive, 1);
    return pruned;
}

/* witness_case registers p (30 s threshold), w (w_threshold) and q, the pruner, which
 * has just come back; p_set and w_before age p and w (SQL assignments). One tick of q
 * prunes expect_before processes; after w_after, another prunes expect_after. */
static void witness_case(lib_fixture *f, double w_threshold, const char *p_set, const char *w_before,
                         int expect_before, const char *w_after, int expect_after)
{
    bt_store *s = raw_store(f);
    int64_t p, w, q;
    assert_int_equal(bt_process_register(s, "worker", NULL, 30, &p), BATON_OK);
    assert_int_equal(bt_process_register(s, "worker", NULL, w_threshold, &w), BATON_OK);
    assert_int_equal(bt_process_register(s, "worker", NULL, 30, &q), BATON_OK);
    set_process(s, p, p_set);
    set_process(s, w, w_before);
    assert_int_equal(tick_prunes(s, q), expect_before);
    set_process(s, w, w_after);
    assert_int_equal(tick_prunes(s, q), expect_after);
    bt_store_close(s);
}

/* The witness must have beaten through the silence it vouches for. After an outage, p
 * went quiet 30.4 s ago and w 29.6 s ago, after a long run of beats; q is the first back.
 * w's run says nothing of the 30 s after p's last beat: nobody is pruned. Once w beats
 * again, with no gap over 15 s, 30 s of p's silence are covered, and p is dead. */
static void test_a_witness_covers_the_silence_it_vouches_for(void **state)
{
    witness_case(*state, 30, "beat = beat - 30400", "beat = beat - 29600, beats_since = beats_since - 600000", 0,
                 "beat = beat + 29600, beat_gap = 14000", 1);
}

/* A process whose run of beats had a gap over half of p's threshold (it may, with a
 * threshold of 120 s) cannot vouch for p: the database may have been away for that long. */
static void test_a_witness_with_long_gaps_vouches_for_nobody(void **state)
{
    witness_case(*state, 120, "beat = beat - 35000", "beats_since = beats_since - 600000, beat_gap = 40000", 0,
                 "beat_gap = 15000", 1);
}

/* A process of this host whose pid is gone is dead at once: no heartbeat has to age (a
 * worker restarted after a crash frees its predecessor's slots as it starts). */
static void test_a_process_whose_pid_is_gone_is_pruned_at_once(void **state)
{
    lib_fixture *f = *state;
    SKIP_UNLESS(bt_host_id(), "this host does not tell its boot and pid namespace");
    bt_store *s = raw_store(f);
    int64_t gone, self;
    bt_claimed_job claimed[1];
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    assert_int_equal(claim_as(s, &gone, 1, claimed), 1);
    bt_claimed_job_free(&claimed[0]);
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    char sql[64];
    snprintf(sql, sizeof sql, "pid = %d", (int)child);
    set_process(s, gone, sql);
    assert_int_equal(bt_process_register(s, "worker", NULL, 30, &self), BATON_OK);
    assert_int_equal(tick_prunes(s, self), 1);
    assert_string_equal(error_of(f->client, a.id), "process pruned");
    bt_store_close(s);
}

static void test_one_round_of_outcomes_releases_each_slot_once(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 2, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    baton_enqueued b = enqueue(f->client, "Sync", "[]");
    baton_enqueued c = enqueue(f->client, "Sync", "[]");
    baton_enqueued d = enqueue(f->client, "Sync", "[]");
    baton_enqueued e = enqueue(f->client, "Sync", "[]");
    bt_store *s = raw_store(f);
    int64_t worker;
    bt_claimed_job claimed[2];
    assert_int_equal(claim_as(s, &worker, 2, claimed), 2);
    assert_int_equal(claimed[0].id, a.id);
    assert_int_equal(claimed[1].id, b.id);

    /* b fails for good; c is blocked, claimed by nobody. */
    bt_outcome outcomes[] = {
        {.job_id = b.id, .error = "broken", .attempt = 1, .max_attempts = 1, .concurrency_key = claimed[1].concurrency_key},
        {.job_id = c.id, .succeeded = 1, .attempt = 1, .max_attempts = 3, .concurrency_key = claimed[0].concurrency_key},
        {.job_id = a.id, .succeeded = 1, .attempt = 1, .max_attempts = 3, .concurrency_key = claimed[0].concurrency_key},
    };
    int owned[3];
    int64_t retry_at[3];
    complete_as(s, worker, outcomes, 3, owned, retry_at);
    assert_int_equal(owned[0], 1);
    assert_int_equal(owned[1], 0);
    assert_int_equal(owned[2], 1);
    assert_int_equal(retry_at[0], 0);
    assert_string_equal(job_status(f->client, a.id), "finished");
    assert_string_equal(job_status(f->client, b.id), "failed");
    assert_string_equal(error_of(f->client, b.id), "broken");
    /* Releases are taken in job order, whatever order the outcomes came in. */
    assert_string_equal(job_status(f->client, c.id), "ready");
    assert_string_equal(job_status(f->client, d.id), "ready");
    assert_string_equal(job_status(f->client, e.id), "blocked");
    char want[48];
    snprintf(want, sizeof want, "release of job %lld", (long long)a.id);
    assert_string_equal(admitted_by(f->client, c.id), want);
    snprintf(want, sizeof want, "release of job %lld", (long long)b.id);
    assert_string_equal(admitted_by(f->client, d.id), want);
    assert_int_equal(holder_count(s), 2);
    bt_claimed_job_free(&claimed[0]);
    bt_claimed_job_free(&claimed[1]);
    bt_store_close(s);
}

/* Outcomes of more jobs than one statement lists (over several chunks, keys locked in one
 * order across them) each land on their own job, however they came. */
static void test_outcomes_over_several_chunks_land_on_their_jobs(void **state)
{
    enum { N = 150 };
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    for (int i = 0; i < N; i++) {
        char args[16];
        snprintf(args, sizeof args, "[%d]", (i * 37) % N); /* keys in no order by id */
        enqueue(f->client, "Sync", args);
    }
    bt_store *s = raw_store(f);
    int64_t worker;
    bt_claimed_job *claimed = calloc(N, sizeof *claimed);
    assert_int_equal(claim_as(s, &worker, N, claimed), N);
    bt_outcome outcomes[N];
    for (int i = 0; i < N; i++) /* every third fails for good; in reverse claim order */
        outcomes[i] = (bt_outcome){.job_id = claimed[N - 1 - i].id, .succeeded = i % 3 != 0, .error = "broken",
                                   .attempt = 1, .max_attempts = 1,
                                   .concurrency_key = claimed[N - 1 - i].concurrency_key};
    int owned[N];
    int64_t retry_at[N];
    complete_as(s, worker, outcomes, N, owned, retry_at);
    for (int i = 0; i < N; i++) {
        assert_int_equal(owned[i], 1);
        assert_string_equal(job_status(f->client, outcomes[i].job_id), i % 3 ? "finished" : "failed");
    }
    assert_int_equal(holder_count(s), 0);
    for (int i = 0; i < N; i++)
        bt_claimed_job_free(&claimed[i]);
    free(claimed);
    bt_store_close(s);
}

/* An inline perform waiting for a slot whose process ends (pruned as dead, or gone
 * without a word) must not leave its blocked job behind, pointing at that process: the
 * release that promotes it would fail on it, and with it every other outcome of the
 * round. The job is discarded (an inline job never runs later). */
static void inline_waiter_outlives_its_process(lib_fixture *f, int pruned)
{
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued holder = enqueue(f->client, "Sync", "[]");
    bt_store *s = raw_store(f);
    int64_t inline_process = 0, waiter = 0;
    assert_int_equal(bt_process_register(s, "inline", NULL, 30, &inline_process), BATON_OK);
    baton_job_spec spec = {"Sync", "[]", NULL};
    bt_new_job nj;
    bt_landing landing;
    assert_int_equal(bt_prepare_job(f->client, &spec, bt_now_ms(), &nj), BATON_OK);
    assert_int_equal(bt_begin(s, BT_TXN_WRITE), BATON_OK);
    assert_int_equal(bt_enqueue_rows(s, &nj, 1, bt_now_ms(), inline_process, &waiter, &landing), BATON_OK);
    assert_int_equal(bt_commit(s), BATON_OK);
    bt_new_job_clear(&nj);
    assert_string_equal(job_status(f->client, waiter), "blocked");
    if (pruned) {
        assert_int_equal(bt_prune_process(s, inline_process, bt_now_ms(), NULL), BATON_OK);
    } else {
        assert_int_equal(bt_process_deregister(s, inline_process), BATON_OK);
    }
    assert_string_equal(job_status(f->client, waiter), "discarded");
    /* The holder's release promotes nobody, and its round records it. */
    int64_t worker;
    bt_claimed_job claimed;
    assert_int_equal(claim_as(s, &worker, 1, &claimed), 1);
    assert_int_equal(claimed.id, holder.id);
    bt_outcome done = {.job_id = holder.id, .succeeded = 1, .attempt = 1, .max_attempts = 3,
                       .concurrency_key = claimed.concurrency_key};
    int owned;
    int64_t retry_at;
    complete_as(s, worker, &done, 1, &owned, &retry_at);
    assert_string_equal(job_status(f->client, holder.id), "finished");
    assert_int_equal(holder_count(s), 0);
    bt_claimed_job_free(&claimed);
    bt_store_close(s);
}

static void test_pruned_inline_waiter_is_discarded(void **state) { inline_waiter_outlives_its_process(*state, 1); }
static void test_deregistered_inline_waiter_is_discarded(void **state) { inline_waiter_outlives_its_process(*state, 0); }

static void test_maintenance_repairs_without_exceeding_limit(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 2, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued e[5];
    for (int i = 0; i < 5; i++)
        e[i] = enqueue(f->client, "Sync", "[]");
    bt_store *s = raw_store(f);
    /* A holder whose job ended without releasing (as if a release were lost), and every
     * blocked job overdue. */
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE baton_jobs SET status = 'finished' WHERE id = %lld;"
             "DELETE FROM baton_ready_executions WHERE job_id = %lld;"
             "UPDATE baton_blocked_executions SET expires_at = 0;", (long long)e[0].id, (long long)e[0].id);
    exec_sql(s, sql);
    int promoted = -1;
    assert_int_equal(baton_maintain(f->client, &promoted), BATON_OK);
    assert_int_equal(promoted, 1); /* one freed slot, one promotion: the limit holds */
    assert_string_equal(job_status(f->client, e[2].id), "ready");
    assert_string_equal(job_status(f->client, e[3].id), "blocked");
    assert_int_equal(baton_maintain(f->client, &promoted), BATON_OK);
    assert_int_equal(promoted, 0);
    bt_store_close(s);
}

typedef struct fence_probe {
    atomic_int phase;       /* 1: callback running, 2: claim taken away, 3: callback done */
    atomic_int held_before, held_after;
} fence_probe;

static int probe_slot(baton_job *job, void *payload)
{
    fence_probe *p = payload;
    if (atomic_load(&p->phase) != 0)
        return 0; /* only the first job is probed */
    atomic_store(&p->held_before, baton_job_holds_slot(job));
    atomic_store(&p->phase, 1);
    while (atomic_load(&p->phase) != 2)
        bt_sleep(0.001);
    atomic_store(&p->held_after, baton_job_holds_slot(job));
    atomic_store(&p->phase, 3);
    return 0;
}

static int phase_is(void *p) { return atomic_load(&((fence_probe *)p)->phase) == 1; }
static int phase_done(void *p) { return atomic_load(&((fence_probe *)p)->phase) == 3; }

static void test_job_learns_it_lost_its_slot(void **state)
{
    lib_fixture *f = *state;
    fence_probe probe = {0};
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = probe_slot;
    o.payload = &probe;
    o.concurrency_key = "k";
    assert_int_equal(baton_class_register(f->client, "Sync", &o), BATON_OK);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    baton_enqueued b = enqueue(f->client, "Sync", "[]");
    running_worker w = worker_start(f->client, "*", 1);
    assert_true(poll_until(phase_is, &probe, 10000));
    /* Another process declares this worker dead while the job runs. */
    bt_store *s = raw_store(f);
    assert_int_equal(prune_workers(s), 1);
    atomic_store(&probe.phase, 2);
    assert_true(poll_until(phase_done, &probe, 10000));
    worker_stop(&w);
    assert_int_equal(atomic_load(&probe.held_before), 1);
    assert_int_equal(atomic_load(&probe.held_after), 0);
    /* Its success was not recorded: the job failed as pruned, and b got the slot. */
    assert_string_equal(error_of(f->client, a.id), "process pruned");
    json_t *jb = job_json(f->client, b.id);
    assert_false(json_is_null(json_object_get(jb, "fencing_token")));
    json_decref(jb);
    bt_store_close(s);
}

/* A worker pruned while a callback ran (it ignores cancellation), registered again under
 * a new id, claims the job's retry on its other thread. When the old run returns, its
 * outcome belongs to the old claim: it must not finish the new one, free the slot and let
 * the key's next job start beside the run still going. */
typedef struct reclaim_probe {
    atomic_int runs;
    atomic_int go[2];         /* run i may return */
    atomic_int attempt[2];
    atomic_int held_after[2];
    atomic_int overlapped;    /* a third run started while the second still ran */
    pthread_mutex_t lock;
    char seen[4096];          /* outcome lines of the worker's log */
} reclaim_probe;

static int held_runs(baton_job *job, void *payload)
{
    reclaim_probe *p = payload;
    int i = atomic_fetch_add(&p->runs, 1);
    if (i >= 2) {
        atomic_store(&p->overlapped, atomic_load(&p->go[1]) == 0);
        return 0;
    }
    atomic_store(&p->attempt[i], baton_job_attempt(job));
    while (!atomic_load(&p->go[i]))
        bt_sleep(0.001);
    atomic_store(&p->held_after[i], baton_job_holds_slot(job));
    return 0;
}

static void note_outcomes(baton_log_level level, const char *line, void *payload)
{
    (void)level;
    reclaim_probe *p = payload;
    if (!strstr(line, "event=job.outcome_dropped") && !strstr(line, "event=job.finished"))
        return;
    pthread_mutex_lock(&p->lock);
    size_t len = strlen(p->seen);
    snprintf(p->seen + len, sizeof p->seen - len, "%s\n", line);
    pthread_mutex_unlock(&p->lock);
}

static int outcome_seen(void *payload)
{
    reclaim_probe *p = payload;
    pthread_mutex_lock(&p->lock);
    int seen = p->seen[0] != 0;
    pthread_mutex_unlock(&p->lock);
    return seen;
}

static int runs_are(void *payload) { return atomic_load(&((reclaim_probe *)payload)->runs) >= 2; }

static void test_old_runs_outcome_leaves_the_new_claim_alone(void **state)
{
    lib_fixture *f = *state;
    reclaim_probe probe = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(baton_set_liveness(f->client, 0.05, 1.0), BATON_OK);
    baton_set_logger(f->client, BATON_LOG_INFO, note_outcomes, &probe);
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = held_runs;
    o.payload = &probe;
    o.concurrency_key = "k";
    o.max_attempts = 2;
    o.backoff = BATON_BACKOFF_FIXED;
    o.backoff_base = 0;
    assert_int_equal(baton_class_register(f->client, "Sync", &o), BATON_OK);
    baton_enqueued a = enqueue(f->client, "Sync", "[]");
    running_worker w = worker_start(f->client, "*", 2);
    wait_status(f->client, a.id, "claimed");
    bt_store *s = raw_store(f);
    assert_int_equal(prune_workers(s), 1);
    /* Registered again, the worker claims the retry on its idle thread. */
    if (!poll_until(runs_are, &probe, 10000))
        fail_msg("the pruned worker never ran the retry (job %s)", job_status(f->client, a.id));
    baton_enqueued b = enqueue(f->client, "Sync", "[]");
    assert_string_equal(job_status(f->client, b.id), "blocked");
    atomic_store(&probe.go[0], 1);
    assert_true(poll_until(outcome_seen, &probe, 10000));
    print_message("the old run's outcome: %s", probe.seen);
    assert_int_equal(atomic_load(&probe.held_after[0]), 0);
    assert_string_equal(job_status(f->client, a.id), "claimed");
    assert_string_equal(job_status(f->client, b.id), "blocked");
    atomic_store(&probe.go[1], 1);
    wait_status(f->client, b.id, "finished");
    worker_stop(&w);
    assert_int_equal(atomic_load(&probe.attempt[0]), 1);
    assert_int_equal(atomic_load(&probe.attempt[1]), 2);
    assert_int_equal(atomic_load(&probe.held_after[1]), 1);
    assert_int_equal(atomic_load(&probe.overlapped), 0);
    assert_string_equal(job_status(f->client, a.id), "finished");
    bt_store_close(s);
}

/* ---- inline performs ---- */

static void test_inline_perform_takes_a_slot_or_gives_up(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    int64_t id = 0;
    assert_int_equal(baton_perform_now(f->client, &id, "Sync", "[]"), BATON_OK);
    assert_int_equal(jr.nruns, 1);
    assert_true(jr.runs[0].token > 0);
    assert_string_equal(job_status(f->client, id), "finished");

    baton_enqueued holder = enqueue(f->client, "Sync", "[]"); /* ready, holds the only slot */
    assert_int_equal(holder.state, BATON_JOB_READY);
    assert_int_equal(baton_perform_wait(f->client, &id, "Sync", "[]", 0.2), BATON_ERROR);
    assert_non_null(strstr(baton_error_last(), "no free slot"));
    assert_int_equal(jr.nruns, 1);
    assert_string_equal(job_status(f->client, id), "discarded");
}

static void test_long_inline_run_keeps_its_slot(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER, .sleep_s = 2.5};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    assert_int_equal(baton_set_liveness(f->client, 0.05, 1.0), BATON_OK);
    /* A worker prunes every 50 ms anything silent for 1 s (the run lasts 2.5 s), and waits
     * for the slot. */
    running_worker w = worker_start(f->client, "*", 1);
    baton_enqueued waiting_id = {0};
    int64_t id = 0;
    int64_t t = bt_mono_ns();
    assert_int_equal(baton_perform_wait(f->client, &id, "Sync", "[]", 5), BATON_OK);
    waiting_id = enqueue(f->client, "Sync", "[]");
    assert_true(bt_mono_ns() - t > 2400000000);
    assert_string_equal(job_status(f->client, id), "finished");
    wait_status(f->client, waiting_id.id, "finished");
    worker_stop(&w);
    assert_int_equal(max_overlap(&jr, "Sync/k"), 1);
}

/* ---- the race between enqueues and releases ---- */

typedef struct race {
    lib_fixture *f;
    atomic_int done;
    int violations;
    int samples;
} race;

static int check_invariant(bt_row *row, void *payload)
{
    race *r = payload;
    r->violations += (int)bt_col_int(row, 0);
    return 1;
}

/* A key with a blocked job and a free slot is a lost wake-up; a key over its limit is a
 * broken limit. Read in one snapshot, thousands of times while jobs churn. */
static void *sample_invariant(void *p)
{
    race *r = p;
    bt_store *s = raw_store(r->f);
    static const char sql[] =
        "SELECT COUNT(*) FROM baton_semaphores s WHERE"
        " (SELECT COUNT(*) FROM baton_semaphore_holders h WHERE h.key = s.key) > s.limit_value OR"
        " ((SELECT COUNT(*) FROM baton_semaphore_holders h WHERE h.key = s.key) < s.limit_value AND"
        "  EXISTS (SELECT 1 FROM baton_blocked_executions b WHERE b.concurrency_key = s.key))";
    while (!atomic_load(&r->done)) {
        assert_int_equal(bt_begin(s, BT_TXN_READ), BATON_OK);
        assert_int_equal(bt_exec(s, sql, NULL, 0, check_invariant, r, NULL), BATON_OK);
        bt_rollback(s);
        r->samples++;
    }
    bt_store_close(s);
    return NULL;
}

static void test_enqueue_release_race_never_loses_a_wakeup(void **state)
{
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k{0}", 2, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    race r = {.f = f};
    pthread_t sampler;
    pthread_create(&sampler, NULL, sample_invariant, &r);
    running_worker w = worker_start(f->client, "*", 4);
    enum { JOBS = 3000, KEYS = 5 };
    for (int i = 0; i < JOBS; i++) {
        char args[16];
        snprintf(args, sizeof args, "[%d]", i % KEYS);
        enqueue(f->client, "Sync", args);
    }
    wait_runs(&jr, JOBS);
    atomic_store(&r.done, 1);
    pthread_join(sampler, NULL);
    worker_stop(&w);
    assert_int_equal(r.violations, 0);
    assert_true(r.samples > 10);
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        snprintf(key, sizeof key, "Sync/k%d", k);
        assert_true(max_overlap(&jr, key) <= 2);
    }
    char *sems;
    assert_int_equal(baton_semaphores_json(f->client, 0, NULL, &sems), BATON_OK);
    assert_null(strstr(sems, "\"blocked\":1"));
    assert_non_null(strstr(sems, "\"holders\":[]"));
    baton_free(sems);
}

/* ---- a worker's two rounds (PostgreSQL) ---- */

static int gate_is_open(void *gate) { return atomic_load((atomic_int *)gate); }

/* A job that ends when the test opens its gate. */
static int wait_for_gate(baton_job *job, void *gate)
{
    (void)job;
    return poll_until(gate_is_open, gate, 20000) ? 0 : 1;
}

static int a_session_waits_for_a_lock(void *store)
{
    return test_db_int(store, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND wait_event_type = 'Lock'") > 0;
}

static void test_outcomes_are_recorded_while_a_round_waits_for_its_key(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "rounds run side by side only where writers do");
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    atomic_int gate = 0;
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = wait_for_gate;
    o.payload = &gate;
    assert_int_equal(baton_class_register(f->client, "Gated", &o), BATON_OK);
    baton_enqueued keyed = enqueue(f->client, "Sync", "[1]");
    baton_enqueued gated = enqueue(f->client, "Gated", "[]");
    /* Another host holds the key: the round that records the keyed job waits for it. */
    bt_store *host = raw_store(f);
    exec_sql(host, "BEGIN; SELECT key FROM baton_semaphores WHERE key = 'Sync/k1' FOR UPDATE");
    running_worker w = worker_start(f->client, "*", 3);
    bt_store *watch = raw_store(f);
    assert_true(poll_until(a_session_waits_for_a_lock, watch, 10000));
    atomic_store(&gate, 1);
    /* The gated job's outcome goes out in the worker's other round meanwhile. */
    wait_status(f->client, gated.id, "finished");
    assert_string_equal(job_status(f->client, keyed.id), "claimed");
    exec_sql(host, "COMMIT");
    wait_status(f->client, keyed.id, "finished");
    worker_stop(&w);
    bt_store_close(watch);
    bt_store_close(host);
}

/* keys_a_and_b makes keys Sync/ka and Sync/kb (5 slots each), one job of each admitted. */
static void keys_a_and_b(lib_fixture *f, journal *jr)
{
    register_limited(f->client, "Sync", "k{0}", 5, NULL, BATON_ON_CONFLICT_BLOCK, jr);
    enqueue(f->client, "Sync", "[\"a\"]");
    enqueue(f->client, "Sync", "[\"b\"]");
}

static int64_t ready_jobs(lib_fixture *f)
{
    bt_store *s = raw_store(f);
    int64_t n = test_db_int(s, "SELECT COUNT(*) FROM baton_ready_executions");
    bt_store_close(s);
    return n;
}

/* race_a_round runs fn(arg) on a thread while a session, as a worker's round would, holds
 * key Sync/ka and then takes Sync/kb: had fn taken Sync/kb first, each would wait for the
 * other and the server would abort one of them. */
static void race_a_round(lib_fixture *f, void *(*fn)(void *), void *arg)
{
    bt_store *round = raw_store(f);
    exec_sql(round, "BEGIN; SELECT key FROM baton_semaphores WHERE key = 'Sync/ka' FOR UPDATE");
    pthread_t t;
    pthread_create(&t, NULL, fn, arg);
    bt_store *watch = raw_store(f);
    assert_true(poll_until(a_session_waits_for_a_lock, watch, 10000));
    exec_sql(round, "SELECT key FROM baton_semaphores WHERE key = 'Sync/kb' FOR UPDATE; COMMIT");
    pthread_join(t, NULL);
    bt_store_close(watch);
    bt_store_close(round);
}

typedef struct bulk_enqueue {
    baton_client *client;
    const baton_job_spec *specs;
    int n;
    int rc;
} bulk_enqueue;

static void *enqueue_in_bulk(void *p)
{
    bulk_enqueue *b = p;
    baton_enqueued out[4];
    b->rc = baton_enqueue_detailed(b->client, out, b->specs, (size_t)b->n);
    return NULL;
}

static void test_bulk_enqueue_locks_keys_in_a_rounds_order(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "only writers that run side by side can deadlock");
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    keys_a_and_b(f, &jr);
    baton_job_spec specs[] = {{"Sync", "[\"b\"]", NULL}, {"Sync", "[\"a\"]", NULL}};
    bulk_enqueue b = {f->client, specs, 2, -1};
    race_a_round(f, enqueue_in_bulk, &b);
    assert_int_equal(b.rc, BATON_OK);
    assert_int_equal(ready_jobs(f), 4);
}

/* in_own_transaction runs op in one write transaction on a connection of its own, as
 * another process would, and returns the transaction's code. */
static int in_own_transaction(const char *url, int (*op)(bt_store *s, void *arg), void *arg)
{
    bt_store *s = NULL;
    int rc = bt_store_open(&s, url);
    if (rc == BATON_OK && (rc = bt_begin(s, BT_TXN_WRITE)) == BATON_OK)
        rc = bt_end(s, op(s, arg));
    bt_store_close(s);
    return rc;
}

typedef struct hand_back {
    const char *url;
    int64_t process_id;
    int rc;
} hand_back;

static int release_all(bt_store *s, void *p)
{
    int64_t released = 0;
    return bt_release_claims(s, ((hand_back *)p)->process_id, NULL, 0, bt_now_ms(), &released);
}

static void *hand_back_all(void *p)
{
    hand_back *h = p;
    h->rc = in_own_transaction(h->url, release_all, h);
    return NULL;
}

/* A worker's hand-back and a prune of the same worker by another process take the key,
 * then the slot, then the claim, in that order: otherwise each holds a row the other
 * waits for and the server aborts one of them. */
static void test_hand_back_and_prune_lock_in_one_order(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "only writers that run side by side can deadlock");
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    baton_enqueued job = enqueue(f->client, "Sync", "[]");
    bt_store *s = raw_store(f);
    int64_t worker;
    bt_claimed_job claimed;
    assert_int_equal(claim_as(s, &worker, 1, &claimed), 1);
    bt_claimed_job_free(&claimed);
    /* The pruner: key, then slot, held; its claim delete comes after the hand-back started. */
    bt_store *pruner = raw_store(f);
    exec_sql(pruner, "BEGIN; SELECT key FROM baton_semaphores WHERE key = 'Sync/k' FOR UPDATE;"
                     " DELETE FROM baton_semaphore_holders WHERE key = 'Sync/k'");
    hand_back h = {f->url, worker, -1};
    pthread_t t;
    pthread_create(&t, NULL, hand_back_all, &h);
    assert_true(poll_until(a_session_waits_for_a_lock, s, 10000));
    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM baton_claimed_executions WHERE job_id = %lld; COMMIT", (long long)job.id);
    exec_sql(pruner, sql);
    pthread_join(t, NULL);
    assert_int_equal(h.rc, BATON_OK);
    bt_store_close(pruner);
    bt_store_close(s);
}

typedef struct dispatch_run {
    const char *url;
    int rc, moved;
} dispatch_run;

static int dispatch_due(bt_store *s, void *p) { return bt_dispatch(s, bt_now_ms(), 10, &((dispatch_run *)p)->moved); }

static void *dispatch_once(void *p)
{
    dispatch_run *d = p;
    d->rc = in_own_transaction(d->url, dispatch_due, d);
    return NULL;
}

static int is_due(void *at_ms) { return bt_now_ms() > *(int64_t *)at_ms; }

/* Due scheduled jobs meet their limits with their keys locked in the order a round locks
 * them, whatever their ids: otherwise the dispatcher and a round each hold a key the other
 * waits for, and the server aborts one of them. */
static void test_dispatch_locks_keys_in_a_rounds_order(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "only writers that run side by side can deadlock");
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    keys_a_and_b(f, &jr);
    /* Due soon, in the order b (lower id), then a. */
    baton_enqueue_options later = BATON_ENQUEUE_OPTIONS_INIT;
    int64_t due = bt_now_ms() + 300;
    later.run_at_ms = due;
    baton_job_spec specs[] = {{"Sync", "[\"b\"]", &later}, {"Sync", "[\"a\"]", &later}};
    baton_enqueued out[2];
    assert_int_equal(baton_enqueue_detailed(f->client, out, specs, 2), BATON_OK);
    assert_true(poll_until(is_due, &due, 5000));
    dispatch_run d = {f->url, -1, 0};
    race_a_round(f, dispatch_once, &d);
    assert_int_equal(d.rc, BATON_OK);
    assert_int_equal(d.moved, 2);
    assert_int_equal(ready_jobs(f), 4);
}

/* A job that runs for four seconds unless it is stopped; *payload becomes 1 when it ran
 * them all, 2 when it was stopped. */
static int runs_four_seconds(baton_job *job, void *payload)
{
    int64_t end = bt_mono_ns() + 4000000000LL;
    while (bt_mono_ns() < end && !baton_job_cancelled(job))
        bt_sleep(0.01);
    atomic_store((atomic_int *)payload, baton_job_cancelled(job) ? 2 : 1);
    return baton_job_cancelled(job) ? 1 : 0;
}

static int has_ended(void *p) { return atomic_load((atomic_int *)p) != 0; }

/* A round that fails again and again (its key's row is held past lock_timeout by an
 * application's transaction) must not silence the worker's heartbeat: a silent worker
 * fences itself and stops every other job it runs. */
static void test_failing_rounds_do_not_stop_the_heartbeat(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "a round waits for a key's lock only where writers run side by side");
    lib_fixture *f = *state;
    char url[4300];
    snprintf(url, sizeof url, "%s%coptions=-c%%20lock_timeout%%3D300", f->url, strchr(f->url, '?') ? '&' : '?');
    baton_client *c = NULL;
    assert_int_equal(baton_open(&c, url), BATON_OK);
    assert_int_equal(baton_set_liveness(c, 0.2, 3), BATON_OK);
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(c, "Sync", "k{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    atomic_int ended = 0;
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.perform = runs_four_seconds;
    o.payload = &ended;
    assert_int_equal(baton_class_register(c, "Long", &o), BATON_OK);
    baton_enqueued keyed = enqueue(c, "Sync", "[1]");
    baton_enqueued unrelated = enqueue(c, "Long", "[]");
    bt_store *app = raw_store(f);
    exec_sql(app, "BEGIN; SELECT key FROM baton_semaphores WHERE key = 'Sync/k1' FOR UPDATE");
    running_worker w = worker_start(c, "*", 2);
    /* The keyed job ends at once; every round that records it times out on the key, for
     * longer than the 1.5 s after which a worker without a heartbeat stops its jobs. */
    wait_runs(&jr, 1);
    assert_true(poll_until(has_ended, &ended, 10000));
    assert_int_equal(atomic_load(&ended), 1);
    exec_sql(app, "COMMIT");
    wait_status(c, unrelated.id, "finished");
    wait_status(c, keyed.id, "finished");
    worker_stop(&w);
    bt_store_close(app);
    baton_close(c);
}

typedef struct racing_enqueue {
    const char *url;
    int rc;
} racing_enqueue;

static void *enqueue_on_own_client(void *p)
{
    racing_enqueue *r = p;
    baton_client *c = NULL;
    r->rc = baton_open(&c, r->url);
    if (r->rc == BATON_OK) {
        baton_class_options o = BATON_CLASS_OPTIONS_INIT;
        o.concurrency_key = "k{0}";
        o.concurrency_limit = 1;
        r->rc = baton_class_register(c, "Sync", &o);
    }
    if (r->rc == BATON_OK)
        r->rc = baton_enqueue(c, NULL, "Sync", "[\"x\"]", NULL);
    baton_close(c);
    return NULL;
}

static int two_sessions_wait_for_a_lock(void *store)
{
    return test_db_int(store, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND wait_event_type = 'Lock'") >= 2;
}

/* An operator clears a key nobody holds while two enqueues of it wait for its row's lock:
 * when the clear commits, each admission must still find a row to lock, or both count
 * no holder and both take the one slot. */
static void test_semaphore_clear_racing_enqueues_admits_one(void **state)
{
    SKIP_UNLESS(test_on_postgres(), "only writers that run side by side can race a clear");
    lib_fixture *f = *state;
    journal jr = {.lock = PTHREAD_MUTEX_INITIALIZER};
    register_limited(f->client, "Sync", "k{0}", 1, NULL, BATON_ON_CONFLICT_BLOCK, &jr);
    bt_store *op = raw_store(f);
    bt_store *watch = raw_store(f);
    exec_sql(watch, "INSERT INTO baton_semaphores (key, limit_value, created_at, updated_at)"
                    " VALUES ('Sync/kx', 1, 0, 0)");
    assert_int_equal(bt_begin(op, BT_TXN_WRITE), BATON_OK);
    exec_sql(op, "SELECT key FROM baton_semaphores WHERE key = 'Sync/kx' FOR UPDATE");
    racing_enqueue r[2] = {{f->url, -1}, {f->url, -1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, enqueue_on_own_client, &r[i]);
    assert_true(poll_until(two_sessions_wait_for_a_lock, watch, 10000));
    int cleared = -1, promoted = -1;
    assert_int_equal(bt_semaphore_clear(op, "Sync/kx", 0, 0, bt_now_ms(), &cleared, &promoted), BATON_OK);
    assert_int_equal(bt_commit(op), BATON_OK);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].rc, BATON_OK);
    }
    assert_int_equal(test_db_int(watch, "SELECT COUNT(*) FROM baton_semaphore_holders WHERE key = 'Sync/kx'"), 1);
    assert_int_equal(test_db_int(watch, "SELECT COUNT(*) FROM baton_blocked_executions"), 1);
    bt_store_close(watch);
    bt_store_close(op);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_is_group_slash_rendered_template, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_key_placeholder_errors_name_the_placeholder, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_three_jobs_for_one_user_one_ready_two_blocked, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_runs_in_order_one_at_a_time_users_in_parallel, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_groups_share_slots_across_classes, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_limits_admit_exactly_n, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_discard_records_the_job, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_one_refused_outcome_holds_up_nothing_else, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_discard_retry_meets_its_mode, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_coalesce_retry_meets_its_mode, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_coalesce_keeps_one_waiter_and_runs_at_most_two, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_scheduled_job_meets_its_limit_when_due, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_failure_releases_and_retry_queues_again, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_blocked_jobs_promoted_by_priority_then_enqueue_order, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_dead_holder_is_pruned_once_and_zombie_releases_nothing, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_dead_is_judged_by_its_own_threshold_with_a_witness, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_a_witness_covers_the_silence_it_vouches_for, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_a_witness_with_long_gaps_vouches_for_nobody, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_a_process_whose_pid_is_gone_is_pruned_at_once, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_one_round_of_outcomes_releases_each_slot_once, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_outcomes_over_several_chunks_land_on_their_jobs, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_pruned_inline_waiter_is_discarded, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_deregistered_inline_waiter_is_discarded, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_maintenance_repairs_without_exceeding_limit, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_job_learns_it_lost_its_slot, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_old_runs_outcome_leaves_the_new_claim_alone, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_inline_perform_takes_a_slot_or_gives_up, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_long_inline_run_keeps_its_slot, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_release_race_never_loses_a_wakeup, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_outcomes_are_recorded_while_a_round_waits_for_its_key, lib_setup,
                                        lib_teardown),
        cmocka_unit_test_setup_teardown(test_bulk_enqueue_locks_keys_in_a_rounds_order, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_clear_racing_enqueues_admits_one, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_failing_rounds_do_not_stop_the_heartbeat, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_locks_keys_in_a_rounds_order, lib_setup, lib_teardown),
        cmocka_unit_test_setup_teardown(test_hand_back_and_prune_lock_in_one_order, lib_setup, lib_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
