/* job.c: performing one job (C callback or shell command) and the accessors a perform
 * callback uses. Shared by workers and inline performs so both behave the same. */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "runtime/command.h"
#include "runtime/runtime.h"
#include "util/clock.h"
#include "util/err.h"

int64_t baton_job_id(const baton_job *job) { return job->claimed.id; }
const char *baton_job_class(const baton_job *job) { return job->claimed.class_name; }
const char *baton_job_queue(const baton_job *job) { return job->claimed.queue; }
const char *baton_job_arguments(const baton_job *job) { return job->claimed.arguments; }
const char *baton_job_concurrency_key(const baton_job *job) { return job->claimed.concurrency_key; }
int baton_job_attempt(const baton_job *job) { return job->claimed.attempt; }
int64_t baton_job_fencing_token(const baton_job *job) { return job->claimed.fencing_token; }
int baton_job_cancelled(const baton_job *job) { return atomic_load(&job->cancelled) != 0; }

void bt_slot_checker_init(bt_slot_checker *ch, baton_client *client, int64_t process_id)
{
    ch->client = client;
    pthread_mutex_init(&ch->lock, NULL);
    ch->store = NULL;
    atomic_store(&ch->process_id, process_id);
}

void bt_slot_checker_close(bt_slot_checker *ch)
{
    bt_store_close(ch->store);
    ch->store = NULL;
    pthread_mutex_destroy(&ch->lock);
}

static const char sql_holds_slot[] =
    "SELECT COUNT(*) FROM baton_claimed_executions c WHERE c.job_id = ?1 AND c.process_id = ?2 AND c.attempt = ?4"
    " AND (?3 = 0 OR EXISTS (SELECT 1 FROM baton_semaphore_holders h WHERE h.job_id = ?1 AND h.token = ?3))";

int baton_job_holds_slot(const baton_job *job)
{
    bt_slot_checker *ch = job->checker;
    if (!ch)
        return bt_err_set(BATON_ESTATE, "job %lld is not being performed", (long long)job->claimed.id);
    pthread_mutex_lock(&ch->lock);
    int rc = ch->store ? BATON_OK : bt_client_open_store(ch->client, &ch->store);
    int64_t held = 0;
    if (rc == BATON_OK) {
        bt_val a[] = {BV_INT(job->claimed.id), BV_INT(atomic_load(&ch->process_id)),
                      BV_INT(job->claimed.fencing_token), BV_INT(job->claimed.attempt)};
        rc = bt_query_int(ch->store, sql_holds_slot, a, 4, &held, 0);
    }
    pthread_mutex_unlock(&ch->lock);
    return rc == BATON_OK ? held > 0 : rc;
}

void baton_job_set_error(baton_job *job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(job->error);
    if (vasprintf(&job->error, fmt, ap) < 0)
        job->error = NULL;
    va_end(ap);
}

static void set_error_text(struct baton_job *job, const char *text)
{
    free(job->error);
    job->error = strdup(text);
}

static void perform_command(struct baton_job *job)
{
    const bt_claimed_job *c = &job->claimed;
    char *env[7];
    int n = 0;
    if (asprintf(&env[n++], "BATON_JOB_ID=%lld", (long long)c->id) < 0 ||
        asprintf(&env[n++], "BATON_JOB_CLASS=%s", c->class_name) < 0 ||
        asprintf(&env[n++], "BATON_QUEUE=%s", c->queue) < 0 ||
        asprintf(&env[n++], "BATON_ATTEMPT=%d", c->attempt) < 0 ||
        asprintf(&env[n++], "BATON_CONCURRENCY_KEY=%s", c->concurrency_key ? c->concurrency_key : "") < 0 ||
        asprintf(&env[n++], "BATON_FENCING_TOKEN=%lld", (long long)c->fencing_token) < 0) {
        set_error_text(job, "out of memory");
        job->not_started = 1;
        for (int i = 0; i < n - 1; i++)
            free(env[i]);
        return;
    }
    env[n] = NULL;
    bt_command_spec spec = {
        .command = job->klass->command,
        .stdin_data = c->arguments,
        .stdin_len = strlen(c->arguments),
        .env_extra = env,
        .timeout = c->timeout,
        .cancel = &job->cancelled,
        .pgid_out = &job->pgid,
        .alive_ns = job->alive_ns,
        .alive_limit_ns = job->alive_limit_ns,
    };
    bt_command_result *res = calloc(1, sizeof *res);
    if (!res || bt_command_run(&spec, res) != BATON_OK) {
        set_error_text(job, res ? baton_error_last() : "out of memory");
        job->not_started = !res || res->not_started;
    } else if (res->exited && res->exit_status == 0 && !res->timed_out && !res->cancelled) {
        job->succeeded = 1;
    } else {
        char summary[256];
        bt_command_describe(res, c->timeout, summary, sizeof summary);
        /* Trailing newlines of stderr add nothing to a one-line error. */
        while (res->stderr_len > 0 && (res->stderr_tail[res->stderr_len - 1] == '\n' ||
                                       res->stderr_tail[res->stderr_len - 1] == '\r'))
            res->stderr_tail[--res->stderr_len] = '\0';
        free(job->error);
        if (asprintf(&job->error, res->stderr_len ? "%s: %s" : "%s", summary, res->stderr_tail) < 0)
            job->error = NULL;
    }
    free(res);
    for (int i = 0; i < n; i++)
        free(env[i]);
}

void bt_job_perform(baton_client *client, struct baton_job *job)
{
    job->succeeded = 0;
    if (client->job_before)
        client->job_before(job, client->job_hook_data);
    job->started_ns = bt_mono_ns();
    if (!job->klass) {
        baton_job_set_error(job, "unknown class '%s': this worker has no command or callback for it",
                            job->claimed.class_name);
    } else if (job->klass->perform) {
        job->succeeded = job->klass->perform(job, job->klass->payload) == 0;
        if (!job->succeeded && !job->error)
            set_error_text(job, "perform callback returned failure");
    } else if (job->klass->command) {
        perform_command(job);
    } else {
        baton_job_set_error(job, "class '%s' has no command or perform callback",
                            job->klass->name);
    }
    if (job->succeeded) {
        free(job->error);
        job->error = NULL;
    }
    if (client->job_after)
        client->job_after(job, job->succeeded, job->error, client->job_hook_data);
}

void bt_job_free(struct baton_job *job)
{
    if (!job)
        return;
    bt_claimed_job_free(&job->claimed);
    free(job->error);
    free(job);
}

int bt_waker_init(bt_waker *w)
{
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return w->fd < 0 ? bt_err_set(BATON_ERROR, "eventfd: %m") : BATON_OK;
}

void bt_waker_close(bt_waker *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

void bt_waker_signal(bt_waker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->fd, &one, sizeof one);
    (void)r; /* a full counter already means "wake up" */
}

void bt_waker_drain(bt_waker *w)
{
    uint64_t v;
    ssize_t r = read(w->fd, &v, sizeof v);
    (void)r;
}

int bt_wait_ready(bt_waker *w, int change_fd, double timeout_s)
{
    struct pollfd fds[2] = {{w->fd, POLLIN, 0}, {change_fd, POLLIN, 0}};
    int ms = bt_poll_ms(timeout_s);
    int n = poll(fds, change_fd >= 0 ? 2 : 1, ms);
    if (n > 0 && (fds[0].revents & POLLIN)) {
        bt_waker_drain(w);
        return 1;
    }
    return 0;
}

char *bt_join_queues(char *const *queues, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(queues[i]) + 1;
    char *out = calloc(1, len);
    for (size_t i = 0; out && i < n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, queues[i]);
    }
    return out;
}

char **bt_split_queues(const char *list, size_t *n_out)
{
    size_t cap = 4, n = 0;
    char **v = calloc(cap + 1, sizeof *v);
    const char *p = list ? list : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            if (n == cap) {
                cap *= 2;
                v = realloc(v, (cap + 1) * sizeof *v);
            }
            v[n++] = strndup(a, (size_t)(b - a));
        }
        p = end ? end + 1 : p + len;
    }
    v[n] = NULL;
    *n_out = n;
    return v;
}

void bt_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}
