/* scheduler.c: enqueues the runs of recurring tasks when they fall due.
 *
 * Each round reads every task (dynamic ones come and go while it runs), enqueues the runs
 * that are due, and sleeps until the earliest next run or the polling interval, whichever
 * comes first. What the scheduler remembers between rounds is, per task, the instant after
 * which runs are still owed: the database's last run of the task moves it on (another
 * scheduler may have enqueued a run), and so does each run this scheduler handles. A run
 * is due once its time has come; it is enqueued exactly once by whichever scheduler
 * records it first (see recurring.c). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"
#include "util/clock.h"
#include "util/err.h"

/* What this scheduler keeps of one task between rounds. A task whose schedule or time zone
 * changed is planned afresh from the moment of the change. */
typedef struct plan {
    char *key;
    char *schedule;
    char *timezone;          /* NULL: UTC */
    bt_cron cron;
    const bt_tz *tz;
    int usable;              /* 0: the stored schedule or zone is invalid (logged once) */
    int64_t after;           /* runs after this instant are still owed */
    int present;             /* seen in this round's tasks */
} plan;

struct baton_scheduler {
    baton_client *client;
    bt_store *store;
    double polling_interval;
    atomic_int stopping;
    bt_waker waker;
    plan *plans;
    size_t nplans;
    bt_log_limit store_errors; /* repeated lines held back */
};

int baton_scheduler_new(baton_scheduler **out, baton_client *client,
                        const baton_scheduler_options *opts)
{
    *out = NULL;
    baton_scheduler_options defaults = BATON_SCHEDULER_OPTIONS_INIT;
    const baton_scheduler_options *o = opts ? opts : &defaults;
    if (o->version != BATON_SCHEDULER_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "unknown scheduler options version %u", o->version);
    if (!bt_seconds_valid(o->polling_interval))
        return bt_err_set(BATON_EINVALID, "scheduler polling interval must be from 0 to %.0e seconds", BATON_SECONDS_MAX);
    baton_scheduler *s = calloc(1, sizeof *s);
    if (!s)
        return bt_err_set(BATON_ERROR, "out of memory");
    s->client = client;
    s->polling_interval = o->polling_interval > 0 ? o->polling_interval
                          : client->config       ? client->config->scheduler_polling_interval
                                                 : 5.0;
    /* Lives as long as the scheduler: a stop from any thread always finds it open. */
    int rc = bt_waker_init(&s->waker);
    if (rc != BATON_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return BATON_OK;
}

static void plan_clear(plan *p)
{
    free(p->key);
    free(p->schedule);
    free(p->timezone);
}

void baton_scheduler_free(baton_scheduler *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nplans; i++)
        plan_clear(&s->plans[i]);
    free(s->plans);
    bt_waker_close(&s->waker);
    free(s);
}

void baton_scheduler_stop(baton_scheduler *s)
{
    atomic_store(&s->stopping, 1);
    bt_waker_signal(&s->waker);
}

static int same_text(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* plan_for finds the plan of task t, making a new one when there is none or t's schedule
 * or zone changed. A new plan owes the runs after t's last run (the runs missed before it
 * started are then settled by bt_recurring_next), or after now for a task that never ran
 * or whose schedule changed. Returns NULL when out of memory; the plans stay as they were. */
static plan *plan_for(baton_scheduler *s, const bt_task *t, int64_t now)
{
    plan *p = NULL;
    for (size_t i = 0; i < s->nplans && !p; i++)
        if (!strcmp(s->plans[i].key, t->def.key))
            p = &s->plans[i];
    if (p && same_text(p->schedule, t->def.schedule) && same_text(p->timezone, t->def.timezone))
        return p;
    plan fresh = {.key = strdup(t->def.key),
                  .schedule = strdup(t->def.schedule),
                  .timezone = t->def.timezone ? strdup(t->def.timezone) : NULL,
                  .after = p || !t->last_run_at ? now : t->last_run_at};
    if (!fresh.key || !fresh.schedule || (t->def.timezone && !fresh.timezone)) {
        plan_clear(&fresh);
        return NULL;
    }
    if (p) {
        plan_clear(p);
    } else {
        plan *grown = realloc(s->plans, (s->nplans + 1) * sizeof *grown);
        if (!grown) {
            plan_clear(&fresh);
            return NULL;
        }
        s->plans = grown;
        p = &s->plans[s->nplans++];
    }
    *p = fresh;
    p->usable = bt_schedule_parse(p->schedule, &p->cron) == BATON_OK &&
                bt_tz_load(p->timezone, &p->tz) == BATON_OK;
    if (!p->usable)
        bt_log(s->client, BATON_LOG_ERROR, "event=recurring.invalid task=%s error=%s", BT_LOG_VALUE(p->key),
               BT_LOG_VALUE(baton_error_last()));
    return p;
}

/* forget_removed drops the plans of tasks that are gone. */
static void forget_removed(baton_scheduler *s)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->nplans; i++) {
        if (s->plans[i].present)
            s->plans[kept++] = s->plans[i];
        else
            plan_clear(&s->plans[i]);
    }
    s->nplans = kept;
}

/* enqueue_run enqueues the run of t at run_at unless another scheduler did. Returns a
 * store error to retry the run later; a job the class refuses is logged and the run is
 * given up, as every later attempt would be refused too. */
static int enqueue_run(baton_scheduler *s, const bt_task *t, int64_t run_at)
{
    char iso[BT_ISO_LEN];
    bt_iso8601(run_at, iso);
    baton_enqueue_options o = BATON_ENQUEUE_OPTIONS_INIT;
    o.queue = t->def.queue;
    o.has_priority = t->def.has_priority;
    o.priority = t->def.priority;
    baton_job_spec spec = {t->def.class_name, t->def.arguments, &o};
    int64_t now = bt_now_ms(), job_id = 0;
    bt_new_job job;
    int rc = bt_prepare_job(s->client, &spec, now, &job);
    if (rc != BATON_OK) {
        bt_log(s->client, BATON_LOG_ERROR, "event=recurring.refused task=%s run_at=%s error=%s",
               BT_LOG_VALUE(t->def.key), iso, BT_LOG_VALUE(baton_error_last()));
        return BATON_OK;
    }
    rc = bt_begin(s->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_recurring_enqueue(s->store, t->def.key, run_at, &job, now, &job_id);
    rc = bt_end(s->store, rc);
    bt_new_job_clear(&job);
    if (rc != BATON_OK)
        bt_err_prefix(rc, "task %s, run at %s", t->def.key, iso);
    else if (job_id)
        bt_log(s->client, BATON_LOG_INFO, "event=recurring.enqueued task=%s job_id=%lld run_at=%s",
               BT_LOG_VALUE(t->def.key), (long long)job_id, iso);
    return rc;
}

/* round enqueues every due run once and sets *earliest to the soonest next run (0: none). */
static int round_once(baton_scheduler *s, int64_t *earliest)
{
    bt_task_list tasks;
    *earliest = 0;
    int rc = bt_recurring_load(s->store, &tasks);
    if (rc != BATON_OK)
        return rc;
    for (size_t i = 0; i < s->nplans; i++)
        s->plans[i].present = 0;
    for (size_t i = 0; i < tasks.len && rc == BATON_OK; i++) {
        const bt_task *t = &tasks.items[i];
        int64_t now = bt_now_ms(), next = 0;
        plan *p = plan_for(s, t, now);
        if (!p) {
            rc = bt_err_set(BATON_ERROR, "out of memory");
            break;
        }
        p->present = 1;
        if (!p->usable)
            continue;
        if (t->last_run_at > p->after)
            p->after = t->last_run_at;
        while (rc == BATON_OK && bt_recurring_next(&p->cron, p->tz, p->after, now, &next) == BATON_OK) {
            if (next > now) {
                p->after = now; /* settles skipped runs: the next round finds the same run */
                if (!*earliest || next < *earliest)
                    *earliest = next;
                break;
            }
            if ((rc = enqueue_run(s, t, next)) == BATON_OK)
                p->after = next;
        }
    }
    forget_removed(s);
    bt_task_list_free(&tasks);
    return rc;
}

static char *metadata(const baton_scheduler *s)
{
    json_t *m = json_pack("{s:f}", "polling_interval", s->polling_interval);
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    return text;
}

/* sync_static writes the configuration's tasks, when there is a configuration. */
static int sync_static(baton_scheduler *s)
{
    const bt_config *cfg = s->client->config;
    if (!cfg)
        return BATON_OK;
    size_t removed = 0;
    int rc = bt_begin(s->store, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_recurring_sync_static(s->store, cfg, bt_now_ms(), &removed);
    rc = bt_end(s->store, rc);
    if (rc == BATON_OK)
        bt_log(s->client, BATON_LOG_INFO, "event=recurring.static_written count=%zu removed=%zu",
               cfg->nrecurring, removed);
    return rc;
}

int baton_scheduler_run(baton_scheduler *s)
{
    int64_t process_id = 0;
    char *meta = metadata(s);
    int rc = meta ? bt_client_open_store(s->client, &s->store) : bt_err_set(BATON_ERROR, "out of memory");
    if (rc == BATON_OK)
        rc = bt_process_register(s->store, "scheduler", meta, s->client->alive_threshold, &process_id);
    if (rc == BATON_OK)
        rc = sync_static(s);
    bt_keepalive beats;
    if (rc == BATON_OK)
        rc = bt_keepalive_start(&beats, s->client, "scheduler", meta, 1, process_id);
    if (rc != BATON_OK)
        goto out;
    bt_log(s->client, BATON_LOG_INFO, "event=scheduler.started process_id=%lld pid=%d",
           (long long)process_id, (int)getpid());
    bt_process_hook(s->client, BATON_PROCESS_SCHEDULER, BATON_PROCESS_START, process_id);
    while (!atomic_load(&s->stopping)) {
        int64_t earliest = 0;
        int round_rc = round_once(s, &earliest);
        if (round_rc != BATON_OK)
            bt_log_limited(s->client, &s->store_errors, BATON_LOG_ERROR, "event=scheduler.store_error error=%s",
                           BT_LOG_VALUE(baton_error_last()));
        double wait = s->polling_interval;
        if (round_rc == BATON_OK && earliest) {
            double until = (double)(earliest - bt_now_ms()) / 1000.0;
            if (until < wait)
                wait = until > 0.001 ? until : 0.001;
        }
        bt_wait_ready(&s->waker, -1, wait);
    }
    process_id = bt_keepalive_stop(&beats); /* no beat may register it again after this */
    bt_process_hook(s->client, BATON_PROCESS_SCHEDULER, BATON_PROCESS_STOP, process_id);
    rc = bt_process_deregister(s->store, process_id);
    bt_log(s->client, BATON_LOG_INFO, "event=scheduler.stopped process_id=%lld", (long long)process_id);
    bt_process_hook(s->client, BATON_PROCESS_SCHEDULER, BATON_PROCESS_EXIT, process_id);
    process_id = 0;
out:
    if (process_id) { /* registered, but could not start */
        int dereg = bt_process_deregister(s->store, process_id);
        rc = rc == BATON_OK ? dereg : rc;
    }
    free(meta);
    bt_store_close(s->store);
    s->store = NULL;
    return rc;
}
