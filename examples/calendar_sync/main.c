/* main.c: the calendar-sync demo. It replays the production bug Baton exists for: a sync
 * job lists a user's calendar, computes the missing events and inserts them one by one,
 * and five code paths trigger it, often for the same user at the same moment. Two syncs
 * of one user that overlap both see an empty calendar and both insert every event.
 *
 * The same workload runs three times, each with a fresh calendar service and a fresh SQLite
 * file (with --db, one after another in that database), with 2 worker processes x 5
 * threads: without a concurrency limit, with "to: 1, key: google_calendar_sync_user_{user_id}",
 * and with on_conflict: coalesce. --paused-host instead stops a worker's process group
 * mid-write until another worker has run that sync again, then lets it resume: the fencing
 * token makes the calendar service refuse its stale writes.
 *
 *   calendar_sync_demo [--users N] [--latency MS|MIN-MAX] [--db URL] [--seed N]
 *                      [--paused-host] [--json]
 */
#include <baton.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "calendar_sync.h"

#define SYNC_CLASS "GoogleCalendarSyncJob"
#define SYNC_KEY "google_calendar_sync_user_{user_id}"

enum { WORKER_PROCESSES = 2, WORKER_THREADS = 5 };

typedef enum sync_mode { MODE_UNLIMITED, MODE_LIMIT, MODE_COALESCE } sync_mode;

static const char *const mode_names[] = {"unlimited", "limit", "coalesce"};

typedef struct demo_config {
    int users;
    int latency_min_ms, latency_max_ms;
    const char *db_url; /* NULL: a fresh SQLite file per run */
    uint32_t seed;
    int paused_host;
    int json;
} demo_config;

/* What the perform callback needs, in every process that performs syncs. */
typedef struct sync_context {
    int port;
    uint32_t seed;
    int log_fd; /* one line per sync: user, start and end (monotonic ns), outcome */
    /* --paused-host: the worker to freeze sends on freeze_fd the id of a job whose sync is
     * about to write, then waits for a byte on resume_fd, which the demo sends once it has
     * stopped that worker, seen the job run again elsewhere and let the worker go on. */
    int freeze_fd, resume_fd;
} sync_context;

typedef struct run_report {
    sync_mode mode;
    int paused_host;
    int users, triggers, jobs_run, api_calls, duplicates, mismatched_calendars;
    int max_concurrent_per_user, max_parallel_users, rejected_writes, stale_runs;
    double seconds, paused_seconds;
} run_report;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t deadline_after(int timeout_ms) { return now_ns() + (int64_t)timeout_ms * 1000000; }

/* The demo's own process, and whether it was asked to stop (SIGINT, SIGTERM). */
static pid_t demo_pid;
static volatile sig_atomic_t interrupted;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------------------------------ */
/* The sync job                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Set in the worker chosen to freeze: its next sync about to write stops there, the worst
 * moment for a host to stall. */
static atomic_int freeze_armed;

enum sync_outcome { SYNC_OK = 'o', SYNC_FAILED = 'f', SYNC_STALE = 's', SYNC_STOPPED = 'x' };

static int contains_uid(json_t *items, const char *uid)
{
    size_t i;
    json_t *event;
    json_array_foreach(items, i, event)
    {
        const char *have = json_string_value(json_object_get(event, "iCalUID"));
        if (have && strcmp(have, uid) == 0)
            return 1;
    }
    return 0;
}

/* wait_for_freeze tells the demo this sync is about to write and blocks until the demo has
 * frozen this process and thawed it again; the write that follows carries the old token. */
static void wait_for_freeze(const sync_context *ctx, const baton_job *job)
{
    int64_t id = baton_job_id(job);
    char byte;
    if (write(ctx->freeze_fd, &id, sizeof id) != (ssize_t)sizeof id)
        return;
    while (read(ctx->resume_fd, &byte, 1) < 0 && errno == EINTR)
        ;
}

/* sync_user is user.sync_course_schedule(force:): read the calendar, then insert what the
 * schedule has and the calendar lacks. Without force, a calendar holding at least as many
 * events as the schedule counts as synced; force re-checks every event. */
static enum sync_outcome sync_user(baton_job *job, const sync_context *ctx, int user, int force)
{
    int64_t token = baton_job_fencing_token(job);
    char path[64];
    snprintf(path, sizeof path, "/calendars/%d/events", user);
    http_response list = http_request(ctx->port, "GET", path, token, NULL);
    json_t *doc = list.status == 200 ? json_loads(list.body, 0, NULL) : NULL;
    http_response_free(&list);
    json_t *items = json_object_get(doc, "items");
    if (!json_is_array(items)) {
        json_decref(doc);
        baton_job_set_error(job, "listing calendar %d failed (HTTP %d)", user, list.status);
        return SYNC_FAILED;
    }
    course_meeting expected[SCHEDULE_MAX_EVENTS];
    int n = schedule_for_user(ctx->seed, user, expected, SCHEDULE_MAX_EVENTS);
    enum sync_outcome outcome = SYNC_OK;
    if (force || json_array_size(items) < (size_t)n) {
        for (int i = 0; i < n && outcome == SYNC_OK; i++) {
            if (contains_uid(items, expected[i].uid))
                continue;
            if (baton_job_cancelled(job)) {
                baton_job_set_error(job, "stopped: this worker lost its claim");
                outcome = SYNC_STOPPED;
                break;
            }
            if (atomic_exchange(&freeze_armed, 0))
                wait_for_freeze(ctx, job);
            http_response inserted = http_request(ctx->port, "POST", path, token, expected[i].json);
            if (inserted.status == 409) {
                baton_job_set_error(job, "calendar %d refused fencing token %lld: a newer sync owns it",
                                    user, (long long)token);
                outcome = SYNC_STALE;
            } else if (inserted.status != 200) {
                baton_job_set_error(job, "inserting into calendar %d failed (HTTP %d)", user, inserted.status);
                outcome = SYNC_FAILED;
            }
            http_response_free(&inserted);
        }
    }
    json_decref(doc);
    return outcome;
}

/* perform_sync is GoogleCalendarSyncJob#perform(user_id, force). */
static int perform_sync(baton_job *job, void *payload)
{
    const sync_context *ctx = payload;
    int64_t started = now_ns();
    json_t *args = json_loads(baton_job_arguments(job), 0, NULL);
    int user = (int)json_integer_value(json_object_get(args, "user_id"));
    int force = json_is_true(json_object_get(args, "force"));
    json_decref(args);
    enum sync_outcome outcome = sync_user(job, ctx, user, force);
    char line[96];
    int len = snprintf(line, sizeof line, "%d %lld %lld %c\n", user, (long long)started,
                       (long long)now_ns(), (char)outcome);
    /* One write per line on an O_APPEND file: lines of concurrent syncs never interleave. */
    if (write(ctx->log_fd, line, (size_t)len) != len)
        baton_job_set_error(job, "job log write failed");
    return outcome == SYNC_OK ? 0 : 1;
}

static int register_sync_class(baton_client *client, sync_mode mode, sync_context *ctx)
{
    baton_class_options sync = BATON_CLASS_OPTIONS_INIT;
    sync.queue = "high";
    sync.perform = perform_sync;
    sync.payload = ctx;
    sync.max_attempts = 3;
    sync.backoff = BATON_BACKOFF_FIXED;
    sync.backoff_base = 0.2;
    if (mode != MODE_UNLIMITED) {
        sync.concurrency_key = SYNC_KEY;
        sync.concurrency_limit = 1;
        sync.on_conflict = mode == MODE_COALESCE ? BATON_ON_CONFLICT_COALESCE : BATON_ON_CONFLICT_BLOCK;
    }
    return baton_class_register(client, SYNC_CLASS, &sync);
}

/* ------------------------------------------------------------------------------------------ */
/* The five trigger points                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int enqueue_sync(baton_client *client, int user, int force)
{
    char args[64];
    snprintf(args, sizeof args, "{\"user_id\":%d,\"force\":%s}", user, force ? "true" : "false");
    return baton_enqueue(client, NULL, SYNC_CLASS, args, NULL);
}

/* GoogleCalendarService#create_or_get_course_calendar: a new calendar gets its first sync. */
static int on_calendar_created(baton_client *client, int user) { return enqueue_sync(client, user, 1); }

/* CourseProcessorService#call: the user's courses were processed. */
static int on_courses_processed(baton_client *client, int user) { return enqueue_sync(client, user, 0); }

/* UserExtensionConfig after save. */
static int on_extension_config_changed(baton_client *client, int user) { return enqueue_sync(client, user, 1); }

/* Api::CalendarPreferencesController#update. */
static int on_calendar_preferences_updated(baton_client *client, int user) { return enqueue_sync(client, user, 1); }

/* The console or rake task: performed now, inline, recorded like any job. */
static int sync_now(baton_client *client, int user)
{
    char args[64];
    snprintf(args, sizeof args, "{\"user_id\":%d,\"force\":true}", user);
    return baton_perform_wait(client, NULL, SYNC_CLASS, args, 120.0);
}

static int wants_extension_change(int user) { return user % 3 == 0; }
static int wants_preferences_update(int user) { return user % 4 == 1; }
static int wants_manual_sync(int user) { return user % 5 == 2; }

/* fire_bursts is what the application does when users sign up: for each user, within
 * milliseconds, its calendar is created and its courses processed, and some users change
 * their extension config or calendar preferences at the same time. */
static int fire_bursts(baton_client *client, int users, int *triggers)
{
    for (int user = 1; user <= users; user++) {
        int rc = on_calendar_created(client, user);
        if (rc == BATON_OK)
            rc = on_courses_processed(client, user);
        *triggers += 2;
        if (rc == BATON_OK && wants_extension_change(user)) {
            rc = on_extension_config_changed(client, user);
            ++*triggers;
        }
        if (rc == BATON_OK && wants_preferences_update(user)) {
            rc = on_calendar_preferences_updated(client, user);
            ++*triggers;
        }
        if (rc != BATON_OK)
            return rc;
    }
    return BATON_OK;
}

/* fire_manual_syncs runs the inline trigger for some users while the workers are busy. */
static int fire_manual_syncs(baton_client *client, int users, int *triggers)
{
    for (int user = 1; user <= users && !interrupted; user++) {
        if (!wants_manual_sync(user))
            continue;
        ++*triggers;
        /* A sync that failed is recorded as a failed job; only a database error stops the demo. */
        int rc = sync_now(client, user);
        if (rc != BATON_OK && rc != BATON_ERROR)
            return rc;
    }
    return BATON_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Processes                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static baton_worker *process_worker;
static volatile sig_atomic_t term_requested;

static void on_term(int sig)
{
    (void)sig;
    term_requested = 1;
    if (process_worker)
        baton_worker_stop(process_worker, 0);
}

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* child_setup puts a forked child in its own process group (a stop or kill of the group
 * reaches it alone) and has it killed when the demo dies, so nothing outlives it: SIGKILL,
 * since a worker may be stopped then. */
static void child_setup(void)
{
    setpgid(0, 0);
    /* Ctrl-C is the demo's to handle: it stops its children in order. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != demo_pid)
        _exit(1);
}

static void set_liveness(baton_client *client, const demo_config *cfg)
{
    /* The paused-host run declares a silent worker dead after 2 s instead of 30. */
    if (cfg->paused_host)
        baton_set_liveness(client, 0.5, 2.0);
}

/* worker_process runs one worker with 5 threads in a forked child until SIGTERM; with
 * freeze set, its first sync about to write waits for the demo to freeze it. */
static _Noreturn void worker_process(const demo_config *cfg, const char *url, sync_mode mode,
                                     sync_context *ctx, int freeze)
{
    child_setup();
    signal(SIGTERM, on_term);
    atomic_store(&freeze_armed, freeze);
    baton_client *client = NULL;
    baton_worker_options opts = BATON_WORKER_OPTIONS_INIT;
    opts.threads = WORKER_THREADS;
    opts.polling_interval = 0.05;
    opts.shutdown_timeout = 10;
    int rc = baton_open(&client, url);
    if (rc == BATON_OK) {
        set_liveness(client, cfg);
        rc = register_sync_class(client, mode, ctx);
    }
    baton_worker *worker = NULL;
    if (rc == BATON_OK)
        rc = baton_worker_new(&worker, client, &opts);
    if (rc == BATON_OK) {
        process_worker = worker;
        if (term_requested)
            baton_worker_stop(worker, 0);
        rc = baton_worker_run(worker);
        process_worker = NULL;
    }
    if (rc != BATON_OK)
        fprintf(stderr, "calendar_sync_demo: worker: %s\n", baton_error_last());
    baton_worker_free(worker);
    baton_close(client);
    _exit(rc == BATON_OK ? 0 : 1);
}

static pid_t fork_or_die(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("calendar_sync_demo: fork");
        exit(1);
    }
    return pid;
}

static pid_t start_calendar_service(const demo_config *cfg, int *port)
{
    int fd = calendar_service_listen(port);
    if (fd < 0) {
        perror("calendar_sync_demo: listen");
        exit(1);
    }
    pid_t pid = fork_or_die();
    if (pid == 0) {
        child_setup();
        calendar_service_options opts = {cfg->users, cfg->latency_min_ms, cfg->latency_max_ms};
        calendar_service_serve(fd, &opts);
        _exit(0);
    }
    close(fd);
    return pid;
}

/* wait_exit waits up to timeout_ms for pid to exit, then kills its group. */
static void wait_exit(pid_t pid, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    while (now_ns() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        sleep_ms(20);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void *run_dispatcher(void *dispatcher) { return (void *)(intptr_t)baton_dispatcher_run(dispatcher); }

/* ------------------------------------------------------------------------------------------ */
/* Watching the queue                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* unfinished_jobs counts jobs that are ready, scheduled, claimed or blocked; -1 on error. */
static int unfinished_jobs(baton_client *client)
{
    char *queues = NULL, *blocked = NULL;
    if (baton_queues_json(client, &queues) != BATON_OK || baton_blocked_json(client, NULL, NULL, &blocked) != BATON_OK) {
        baton_free(queues);
        return -1;
    }
    json_t *q = json_loads(queues, 0, NULL), *b = json_loads(blocked, 0, NULL);
    baton_free(queues);
    baton_free(blocked);
    int count = (int)json_array_size(b);
    size_t i;
    json_t *entry;
    json_array_foreach(q, i, entry)
    {
        count += (int)(json_integer_value(json_object_get(entry, "ready")) +
                       json_integer_value(json_object_get(entry, "scheduled")) +
                       json_integer_value(json_object_get(entry, "claimed")));
    }
    json_decref(q);
    json_decref(b);
    return count;
}

/* wait_until_idle polls until no job is left to run; -1 after timeout_ms or an interrupt. */
static int wait_until_idle(baton_client *client, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    while (!interrupted && now_ns() < deadline) {
        if (unfinished_jobs(client) == 0)
            return 0;
        sleep_ms(20);
    }
    if (!interrupted)
        fprintf(stderr, "calendar_sync_demo: jobs still unfinished after %d s\n", timeout_ms / 1000);
    return -1;
}

/* process_heartbeat writes to beat (cap bytes) the last heartbeat of the process with this
 * pid, an ISO 8601 time (so a later one sorts later). Returns 0 when no such process is
 * registered any more, 1 when it is (or when the list cannot be read). */
static int process_heartbeat(baton_client *client, pid_t pid, char *beat, size_t cap)
{
    char *text = NULL;
    snprintf(beat, cap, "%s", "");
    if (baton_processes_json(client, &text) != BATON_OK)
        return 1;
    json_t *list = json_loads(text, 0, NULL);
    baton_free(text);
    int found = 0;
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        if (json_integer_value(json_object_get(p, "pid")) == pid) {
            found = 1;
            const char *at = json_string_value(json_object_get(p, "last_heartbeat_at"));
            snprintf(beat, cap, "%s", at ? at : "");
        }
    }
    json_decref(list);
    return found;
}

/* wait_job_done polls until job id has ended (finished, failed or discarded); 0 on timeout. */
static int wait_job_done(baton_client *client, int64_t id, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    while (!interrupted && now_ns() < deadline) {
        char *text = NULL;
        json_t *job = NULL;
        if (baton_job_json(client, id, &text) == BATON_OK)
            job = json_loads(text, 0, NULL);
        baton_free(text);
        const char *status = json_string_value(json_object_get(job, "status"));
        int done = status && (strcmp(status, "finished") == 0 || strcmp(status, "failed") == 0 ||
                              strcmp(status, "discarded") == 0);
        json_decref(job);
        if (done)
            return 1;
        sleep_ms(20);
    }
    return 0;
}

/* wait_pruned polls until the other processes have declared victim dead; 0 on timeout. */
static int wait_pruned(baton_client *client, pid_t victim, int timeout_ms)
{
    char beat[64];
    int64_t deadline = deadline_after(timeout_ms);
    while (!interrupted && now_ns() < deadline) {
        if (!process_heartbeat(client, victim, beat, sizeof beat))
            return 1;
        sleep_ms(50);
    }
    return 0;
}

/* wait_heartbeat_after polls until victim has written a heartbeat later than beat. */
static void wait_heartbeat_after(baton_client *client, pid_t victim, const char *beat, int timeout_ms)
{
    char now[64];
    int64_t deadline = deadline_after(timeout_ms);
    while (!interrupted && now_ns() < deadline) {
        if (process_heartbeat(client, victim, now, sizeof now) && strcmp(now, beat) > 0)
            return;
        sleep_ms(50);
    }
}

/* pause_worker waits until victim's sync is about to write, stops victim's process group
 * (SIGSTOP) and keeps it stopped until the other processes have declared it dead and run
 * that sync's job again, then resumes it (SIGCONT) and lets the sync write. Returns how
 * long it was stopped, in seconds; 0 when it could not be paused. */
static double pause_worker(baton_client *client, pid_t victim, int freeze_fd, int resume_fd)
{
    double paused = 0;
    struct pollfd about_to_write = {freeze_fd, POLLIN, 0};
    int64_t job_id;
    if (poll(&about_to_write, 1, 20000) != 1 || read(freeze_fd, &job_id, sizeof job_id) != (ssize_t)sizeof job_id) {
        if (!interrupted)
            fprintf(stderr, "calendar_sync_demo: the worker to pause never wrote\n");
    } else {
        int pruned = 0;
        for (int attempt = 0; attempt < 5 && !pruned && !interrupted; attempt++) {
            char beat[64];
            int status;
            process_heartbeat(client, victim, beat, sizeof beat);
            kill(-victim, SIGSTOP);
            if (waitpid(victim, &status, WUNTRACED) != victim || !WIFSTOPPED(status))
                break;
            int64_t since = now_ns();
            /* Declared dead 2 s after its last heartbeat, by a process that heartbeats every 0.5 s. */
            pruned = wait_pruned(client, victim, 5000);
            if (pruned && wait_job_done(client, job_id, 60000))
                paused = (double)(now_ns() - since) / 1e9;
            kill(-victim, SIGCONT);
            /* Not declared dead: it froze inside a database transaction, and the lock it
             * holds keeps everyone from doing so. Let it get past that and freeze it again. */
            if (!pruned)
                wait_heartbeat_after(client, victim, beat, 5000);
        }
        if (!pruned && !interrupted)
            fprintf(stderr, "calendar_sync_demo: the paused worker was never declared dead\n");
    }
    /* The sync goes on in any case, so the run can finish. */
    if (write(resume_fd, "g", 1) != 1)
        perror("calendar_sync_demo: resuming the paused sync");
    return paused;
}

/* ------------------------------------------------------------------------------------------ */
/* Measuring                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct sync_run {
    int user;
    int64_t start, end;
    char outcome;
} sync_run;

typedef struct edge {
    int64_t at;
    int user;
    int delta; /* +1 start, -1 end */
} edge;

static int cmp_edges(const void *a, const void *b)
{
    const edge *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->delta - y->delta; /* an end before a start at the same instant */
}

/* measure_job_log reads the job log: runs, stale runs, and the most syncs that overlapped
 * for one user and the most users that were being synced at one instant. */
static void measure_job_log(const char *path, int users, run_report *r)
{
    FILE *f = fopen(path, "r");
    size_t n = 0, cap = 256;
    sync_run *runs = malloc(cap * sizeof *runs);
    long long start, end;
    int user;
    char outcome;
    while (f && fscanf(f, "%d %lld %lld %c", &user, &start, &end, &outcome) == 4) {
        if (n == cap)
            runs = realloc(runs, (cap *= 2) * sizeof *runs);
        runs[n++] = (sync_run){user, start, end, outcome};
    }
    if (f)
        fclose(f);
    edge *edges = malloc((2 * n + 1) * sizeof *edges);
    for (size_t i = 0; i < n; i++) {
        edges[2 * i] = (edge){runs[i].start, runs[i].user, +1};
        edges[2 * i + 1] = (edge){runs[i].end, runs[i].user, -1};
        if (runs[i].outcome == SYNC_STALE)
            r->stale_runs++;
    }
    qsort(edges, 2 * n, sizeof *edges, cmp_edges);
    int *active = calloc((size_t)users + 1, sizeof *active);
    int active_users = 0;
    for (size_t i = 0; i < 2 * n; i++) {
        int u = edges[i].user;
        if (u < 1 || u > users)
            continue;
        if (edges[i].delta > 0 && active[u]++ == 0)
            active_users++;
        if (edges[i].delta < 0 && --active[u] == 0)
            active_users--;
        if (active[u] > r->max_concurrent_per_user)
            r->max_concurrent_per_user = active[u];
        if (active_users > r->max_parallel_users)
            r->max_parallel_users = active_users;
    }
    r->jobs_run = (int)n;
    free(active);
    free(edges);
    free(runs);
}

/* scan_calendars reads every calendar back: events beyond the first of each meeting are
 * duplicates, and a calendar matches when it holds exactly its schedule. */
static int scan_calendars(const demo_config *cfg, int port, run_report *r)
{
    http_response export = http_request(port, "GET", "/calendars", 0, NULL);
    json_t *all = export.status == 200 ? json_loads(export.body, 0, NULL) : NULL;
    http_response_free(&export);
    if (json_array_size(all) != (size_t)cfg->users) {
        json_decref(all);
        return -1;
    }
    for (int user = 1; user <= cfg->users; user++) {
        json_t *items = json_array_get(all, (size_t)user - 1);
        course_meeting expected[SCHEDULE_MAX_EVENTS];
        int n = schedule_for_user(cfg->seed, user, expected, SCHEDULE_MAX_EVENTS);
        int present = 0;
        for (int i = 0; i < n; i++)
            present += contains_uid(items, expected[i].uid);
        int total = (int)json_array_size(items);
        int distinct = 0;
        for (int i = 0; i < total; i++) {
            const char *uid = json_string_value(json_object_get(json_array_get(items, (size_t)i), "iCalUID"));
            int seen_before = 0;
            for (int j = 0; j < i && !seen_before; j++) {
                const char *other = json_string_value(json_object_get(json_array_get(items, (size_t)j), "iCalUID"));
                seen_before = uid && other && strcmp(uid, other) == 0;
            }
            distinct += !seen_before;
        }
        r->duplicates += total - distinct;
        if (present != n || total != n)
            r->mismatched_calendars++;
    }
    json_decref(all);
    return 0;
}

static int read_service_stats(int port, run_report *r)
{
    http_response stats = http_request(port, "GET", "/stats", 0, NULL);
    json_t *doc = stats.status == 200 ? json_loads(stats.body, 0, NULL) : NULL;
    http_response_free(&stats);
    if (!doc)
        return -1;
    r->api_calls = (int)json_integer_value(json_object_get(doc, "requests"));
    r->rejected_writes = (int)json_integer_value(json_object_get(doc, "rejected"));
    json_decref(doc);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* One run                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void remove_run_dir(const char *dir)
{
    static const char *const files[] = {"baton.db", "baton.db-wal", "baton.db-shm", "jobs.log"};
    char path[4200];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int fail(const char *what)
{
    fprintf(stderr, "calendar_sync_demo: %s: %s\n", what, baton_error_last());
    return -1;
}

/* drive_run fires the triggers (pausing victim on the way with --paused-host) and waits
 * until every sync has run; 0 when it got there. */
static int drive_run(const demo_config *cfg, baton_client *client, pid_t victim, int freeze_fd, int resume_fd,
                     run_report *r)
{
    if (fire_bursts(client, cfg->users, &r->triggers) != BATON_OK)
        return fail("enqueue");
    if (cfg->paused_host) {
        r->paused_seconds = pause_worker(client, victim, freeze_fd, resume_fd);
        if (r->paused_seconds == 0)
            return -1; /* pause_worker said why */
    }
    if (fire_manual_syncs(client, cfg->users, &r->triggers) != BATON_OK)
        return fail("perform");
    return wait_until_idle(client, 300000);
}

static int run_workload(const demo_config *cfg, sync_mode mode, run_report *r)
{
    *r = (run_report){.mode = mode, .paused_host = cfg->paused_host, .users = cfg->users};
    const char *tmp = getenv("TMPDIR");
    char dir[4096], url[4200], log_path[4200];
    snprintf(dir, sizeof dir, "%s/baton-calendar-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("calendar_sync_demo: mkdtemp");
        return -1;
    }
    snprintf(url, sizeof url, "sqlite:%s/baton.db", dir);
    snprintf(log_path, sizeof log_path, "%s/jobs.log", dir);
    const char *db = cfg->db_url ? cfg->db_url : url;

    /* The schema first, from one process, before any worker opens the database. */
    baton_client *client = NULL;
    if (baton_open(&client, db) != BATON_OK || baton_migrate(client) != BATON_OK) {
        baton_close(client);
        remove_run_dir(dir);
        return fail(db);
    }
    baton_close(client);
    client = NULL;

    sync_context ctx = {0, cfg->seed, -1, -1, -1};
    int freeze_pipe[2] = {-1, -1}, resume_pipe[2] = {-1, -1};
    ctx.log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (ctx.log_fd < 0 || (cfg->paused_host && (pipe(freeze_pipe) != 0 || pipe(resume_pipe) != 0))) {
        perror("calendar_sync_demo: job log");
        exit(1);
    }
    ctx.freeze_fd = freeze_pipe[1];
    ctx.resume_fd = resume_pipe[0];
    pid_t service = start_calendar_service(cfg, &ctx.port);
    pid_t workers[WORKER_PROCESSES];
    for (int i = 0; i < WORKER_PROCESSES; i++) {
        workers[i] = fork_or_die();
        if (workers[i] == 0)
            worker_process(cfg, db, mode, &ctx, cfg->paused_host && i == 0);
        setpgid(workers[i], workers[i]);
    }

    int rc = -1;
    baton_dispatcher *dispatcher = NULL;
    pthread_t dispatcher_thread;
    baton_dispatcher_options dopts = BATON_DISPATCHER_OPTIONS_INIT;
    dopts.polling_interval = 0.1;
    dopts.concurrency_maintenance_interval = 1.0;
    if (baton_open(&client, db) != BATON_OK)
        fail("open");
    else {
        set_liveness(client, cfg);
        if (register_sync_class(client, mode, &ctx) != BATON_OK || baton_dispatcher_new(&dispatcher, client, &dopts) != BATON_OK)
            fail("setup");
    }
    if (dispatcher && pthread_create(&dispatcher_thread, NULL, run_dispatcher, dispatcher) == 0) {
        int64_t started = now_ns();
        rc = drive_run(cfg, client, workers[0], freeze_pipe[0], resume_pipe[1], r);
        r->seconds = (double)(now_ns() - started) / 1e9;
        for (int i = 0; i < WORKER_PROCESSES; i++)
            kill(workers[i], SIGTERM);
        for (int i = 0; i < WORKER_PROCESSES; i++)
            wait_exit(workers[i], 20000);
        baton_dispatcher_stop(dispatcher);
        pthread_join(dispatcher_thread, NULL);
    } else {
        for (int i = 0; i < WORKER_PROCESSES; i++) {
            kill(-workers[i], SIGKILL);
            waitpid(workers[i], NULL, 0);
        }
    }
    baton_dispatcher_free(dispatcher);
    baton_close(client);

    if (rc == 0 && (read_service_stats(ctx.port, r) != 0 || scan_calendars(cfg, ctx.port, r) != 0)) {
        fprintf(stderr, "calendar_sync_demo: the calendar service did not answer\n");
        rc = -1;
    }
    kill(-service, SIGKILL);
    waitpid(service, NULL, 0);
    close(ctx.log_fd);
    for (int i = 0; i < 2; i++) {
        if (freeze_pipe[i] >= 0)
            close(freeze_pipe[i]);
        if (resume_pipe[i] >= 0)
            close(resume_pipe[i]);
    }
    if (rc == 0)
        measure_job_log(log_path, cfg->users, r);
    remove_run_dir(dir);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reports                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static json_t *report_json(const run_report *r)
{
    return json_pack("{s:s, s:b, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f}", "mode",
                     mode_names[r->mode], "paused_host", r->paused_host, "users", r->users, "triggers",
                     r->triggers, "jobs_run", r->jobs_run, "api_calls", r->api_calls, "duplicates",
                     r->duplicates, "mismatched_calendars", r->mismatched_calendars,
                     "max_concurrent_per_user", r->max_concurrent_per_user, "max_parallel_users",
                     r->max_parallel_users, "rejected_writes", r->rejected_writes, "stale_runs",
                     r->stale_runs, "seconds", r->seconds, "paused_seconds", r->paused_seconds);
}

static void print_row(const run_report *r)
{
    printf("%-10s %8d %8d %9d %10d %13d %14d %9d %7.1f\n", mode_names[r->mode], r->triggers, r->jobs_run,
           r->api_calls, r->duplicates, r->max_concurrent_per_user, r->max_parallel_users,
           r->mismatched_calendars, r->seconds);
    fflush(stdout);
}

static void print_header(const demo_config *cfg)
{
    printf("GoogleCalendarSyncJob: %d users, %d worker processes x %d threads, calendar API latency %d-%d ms, %s\n",
           cfg->users, WORKER_PROCESSES, WORKER_THREADS, cfg->latency_min_ms, cfg->latency_max_ms,
           cfg->db_url ? cfg->db_url : "a fresh SQLite file per run");
    printf("Per user, in one burst: calendar created (force), courses processed, and for some users the\n"
           "extension config or calendar preferences changed (force) and a manual inline sync.\n\n");
    printf("%-10s %8s %8s %9s %10s %13s %14s %9s %7s\n", "mode", "triggers", "jobs run", "API calls",
           "duplicates", "max syncs of", "users synced", "calendars", "seconds");
    printf("%-10s %8s %8s %9s %10s %13s %14s %9s %7s\n", "", "", "", "", "", "one user", "in parallel",
           "wrong", "");
    fflush(stdout);
}

static void print_summary(const run_report *runs, int n)
{
    printf("\n");
    for (int i = 0; i < n; i++) {
        const run_report *r = &runs[i];
        switch (r->mode) {
        case MODE_UNLIMITED:
            printf("unlimited: syncs of one user overlapped (up to %d at once), each saw a calendar without\n"
                   "           the events and inserted them: %d duplicate events in %d of %d calendars.\n",
                   r->max_concurrent_per_user, r->duplicates, r->mismatched_calendars, r->users);
            break;
        case MODE_LIMIT:
            printf("limit:     concurrency to: 1, key: " SYNC_KEY "; at most %d sync per user at\n"
                   "           a time, %d users in parallel, %d duplicates, %d calendars differ from the schedule.\n",
                   r->max_concurrent_per_user, r->max_parallel_users, r->duplicates, r->mismatched_calendars);
            break;
        case MODE_COALESCE:
            printf("coalesce:  on_conflict: coalesce keeps one waiting sync per user: %d of %d triggers ran,\n"
                   "           %d API calls, %d duplicates.\n",
                   r->jobs_run, r->triggers, r->api_calls, r->duplicates);
            break;
        }
    }
}

static void print_paused_summary(const run_report *r)
{
    printf("\npaused host: a worker's process group was stopped (SIGSTOP) just before one of its syncs\n"
           "inserted an event, and kept stopped %.1f s: the other processes declared it dead (2 s\n"
           "without a heartbeat) and ran that sync again with a newer fencing token. Resumed\n"
           "(SIGCONT), its syncs went on beside the ones that took them over (up to %d syncs of one\n"
           "user at once) and sent their inserts with their old tokens: the calendar service\n"
           "refused %d stale write(s) with 409; %d duplicates, %d calendars differ from the schedule.\n",
           r->paused_seconds, r->max_concurrent_per_user, r->rejected_writes, r->duplicates,
           r->mismatched_calendars);
}

/* ------------------------------------------------------------------------------------------ */
/* main                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: calendar_sync_demo [--users N] [--latency MS|MIN-MAX] [--db URL] [--seed N]\n"
                    "                          [--paused-host] [--json]\n");
    exit(2);
}

static int parse_int(const char *text, int min, int max)
{
    char *end;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || *end || end == text || v < min || v > max)
        usage();
    return (int)v;
}

static void parse_latency(const char *text, demo_config *cfg)
{
    if (!text)
        usage();
    int lo, hi, consumed = 0;
    if (sscanf(text, "%d-%d%n", &lo, &hi, &consumed) == 2 && text[consumed] == '\0' && 0 <= lo && lo <= hi &&
        hi <= 10000) {
        cfg->latency_min_ms = lo;
        cfg->latency_max_ms = hi;
    } else
        cfg->latency_min_ms = cfg->latency_max_ms = parse_int(text, 0, 10000);
}

int main(int argc, char **argv)
{
    demo_config cfg = {.users = 200, .latency_min_ms = 20, .latency_max_ms = 50, .seed = 2025};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--users") == 0)
            cfg.users = parse_int(value, 1, 100000), i++;
        else if (strcmp(arg, "--latency") == 0)
            parse_latency(value, &cfg), i++;
        else if (strcmp(arg, "--db") == 0 && value)
            cfg.db_url = value, i++;
        else if (strcmp(arg, "--seed") == 0)
            cfg.seed = (uint32_t)parse_int(value, 0, 1 << 30), i++;
        else if (strcmp(arg, "--paused-host") == 0)
            cfg.paused_host = 1;
        else if (strcmp(arg, "--json") == 0)
            cfg.json = 1;
        else
            usage();
    }
    signal(SIGPIPE, SIG_IGN);
    /* Interrupted, a run still stops its processes and removes its files. */
    demo_pid = getpid();
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);

    static const sync_mode all_modes[] = {MODE_UNLIMITED, MODE_LIMIT, MODE_COALESCE};
    static const sync_mode paused_modes[] = {MODE_LIMIT};
    const sync_mode *modes = cfg.paused_host ? paused_modes : all_modes;
    int nmodes = cfg.paused_host ? 1 : 3;
    run_report runs[3];
    if (!cfg.json)
        print_header(&cfg);
    for (int i = 0; i < nmodes; i++) {
        if (run_workload(&cfg, modes[i], &runs[i]) != 0) {
            if (interrupted)
                fprintf(stderr, "calendar_sync_demo: interrupted\n");
            return 1;
        }
        if (!cfg.json)
            print_row(&runs[i]);
    }
    if (cfg.json) {
        json_t *list = json_array();
        for (int i = 0; i < nmodes; i++)
            json_array_append_new(list, report_json(&runs[i]));
        json_t *doc = json_pack("{s:o}", "runs", list);
        char *text = json_dumps(doc, JSON_COMPACT);
        puts(text);
        free(text);
        json_decref(doc);
    } else if (cfg.paused_host)
        print_paused_summary(&runs[0]);
    else
        print_summary(runs, nmodes);
    return 0;
}
