/* supervisor.c: baton_supervise forks the configured workers, dispatchers and scheduler
 * as child processes, watches them and replaces the ones that die.
 *
 * DESIGN
 * The supervisor has one thread and no jobs. It sleeps in poll() on a pidfd per child and
 * on its waker (stop requests), waking at least every watchdog period to heartbeat and to
 * read its children's heartbeats. It holds no database connection while it forks: a
 * SQLite connection must not cross fork, so each of its own visits to the database opens
 * and closes one.
 * A child that dies (or that the watchdog kills because its heartbeat is late by half the
 * alive threshold: stopped, hung, or cut off from the database) is settled before it is
 * replaced: the supervisor is the subreaper of its children's command jobs, so the job
 * process groups orphaned by the dead child are killed and reaped first; only then is the
 * child's process row pruned, failing its claims as "process pruned" and releasing their
 * slots. Nothing of a dead child still runs when its slots are handed on, and no other
 * process has to wait for the alive threshold. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <dirent.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/runtime.h"
#include "runtime/title.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/grow.h"

typedef enum { KIND_WORKER, KIND_DISPATCHER, KIND_SCHEDULER } child_kind;
static const char *const kind_names[] = {"worker", "dispatcher", "scheduler"};

enum { NO_CONFIG = -1 };

typedef struct child {
    child_kind kind;
    int config_index;      /* entry of the config's workers/dispatchers, or NO_CONFIG */
    pid_t pid;             /* 0 while not running */
    int pidfd;             /* -1 when unavailable: the poll timeout covers it */
    int64_t started_ns;
    int64_t beat;          /* newest beat seen (liveness clock), kept when the row is pruned; 0 if none */
    int64_t beat_seen_ns;  /* when that beat was first seen, or the child started */
    int64_t restart_at_ns; /* when a child that died young may be started again */
} child;

struct bt_supervisor {
    baton_client *client;
    child *children;
    size_t nchildren;
    double shutdown_timeout;
    double period;         /* seconds between the supervisor's own heartbeats and watchdog rounds */
    int64_t read_ok_ns;    /* when the watchdog last read the children's rows, or 0 */
    int64_t process_id;    /* replaced when the supervisor registers again after a prune */
    char *metadata;        /* of its row */
    bt_log_limit heartbeat_errors;
    atomic_int stop;       /* 0 running, 1 graceful, 2 immediate */
    bt_waker waker;
    char *pidfile;
    int pidfile_fd;
};

/* A child that lived less than this is restarted only after it: a child that cannot
 * start (database gone) must not turn the supervisor into a fork loop. */
#define RESTART_BACKOFF_NS (1000LL * 1000 * 1000)

/* ---- the database, one short connection per visit ---- */

/* The rows of this host's processes (and this supervisor's, when the host is unknown): a
 * child is known by its pid, which no other live process of the host has. Its row may name
 * an id this supervisor held before it was pruned and registered again. */
static const char sql_children[] =
    "SELECT id, pid, beat, COALESCE(supervisor_id, 0) FROM baton_processes WHERE supervisor_id = ?1 OR host_id = ?2";
static const char sql_adopt[] = "UPDATE baton_processes SET supervisor_id = ?1 WHERE id = ?2";
static const char sql_rows_of_pid[] = "SELECT id FROM baton_processes WHERE supervisor_id = ? AND pid = ?";

static int open_store(bt_supervisor *sv, bt_store **s)
{
    int rc = bt_client_open_store(sv->client, s);
    if (rc != BATON_OK)
        bt_log(sv->client, BATON_LOG_ERROR, "event=supervisor.store_error error=%s", BT_LOG_VALUE(baton_error_last()));
    return rc;
}

/* settle_rows clears what a dead child left in baton_processes: its claims fail as
 * "process pruned" (retry policy applies), or go back to ready when the supervisor
 * itself stopped the child during a shutdown. */
static void settle_rows(bt_supervisor *sv, pid_t pid, int back_to_ready)
{
    bt_store *s;
    if (open_store(sv, &s) != BATON_OK)
        return; /* the rows age out: any live process prunes them after the threshold */
    bt_id_list rows = {0};
    bt_val a[] = {BV_INT(sv->process_id), BV_INT(pid)};
    int rc = bt_exec(s, sql_rows_of_pid, a, 2, bt_row_collect_id, &rows, NULL);
    for (size_t i = 0; i < rows.len && rc == BATON_OK; i++) {
        int pruned = 1;
        if (back_to_ready)
            rc = bt_process_deregister(s, rows.ids[i]);
        else
            rc = bt_prune_process(s, rows.ids[i], bt_now_ms(), &pruned);
        if (rc == BATON_OK && pruned)
            bt_log(sv->client, BATON_LOG_WARN, "event=process.pruned process_id=%lld child_pid=%d by=supervisor",
                   (long long)rows.ids[i], (int)pid);
    }
    if (rc != BATON_OK)
        bt_log(sv->client, BATON_LOG_ERROR, "event=supervisor.settle_failed child_pid=%d error=%s", (int)pid,
               BT_LOG_VALUE(baton_error_last()));
    free(rows.ids);
    bt_store_close(s);
}

/* ---- orphaned job processes ---- */

/* kill_orphans kills and reaps every process the kernel handed to the supervisor as
 * subreaper: the command jobs (shepherds, each leading its job's process group) of a
 * child that died. They received SIGHUP from their parent's death and are on their way
 * out; this makes sure they are gone before their slots are handed on. */
static void kill_orphans(bt_supervisor *sv)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        char state;
        int ppid;
        if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2 || ppid != self)
            continue;
        int known = 0;
        for (size_t i = 0; i < sv->nchildren; i++)
            known |= sv->children[i].pid == (pid_t)pid;
        if (known)
            continue;
        kill(-(pid_t)pid, SIGKILL); /* the job's whole group */
        kill((pid_t)pid, SIGKILL);
        while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    closedir(d);
}

/* ---- children ---- */

static _Atomic(baton_worker *) child_worker;
static _Atomic(baton_dispatcher *) child_dispatcher;
static _Atomic(baton_scheduler *) child_scheduler;

/* A child stops at once on QUIT only, which is how the supervisor forwards "at once". TERM
 * and INT, however many, stay graceful: Ctrl-C in a terminal and systemd's control-group
 * stop signal every process of the group besides what the supervisor forwards, and that
 * second copy is not the operator asking twice (a second request reaches the supervisor,
 * which then sends QUIT). */
/* The stop a signal asked of this child (1 graceful, 2 at once), kept for a role that did
 * not exist yet when it came: the supervisor may die, and its death signal arrive, at any
 * moment after the fork. */
static atomic_int child_stop;

static void on_child_signal(int sig)
{
    int immediate = sig == SIGQUIT, cur = atomic_load(&child_stop);
    while (cur < 1 + immediate && !atomic_compare_exchange_weak(&child_stop, &cur, 1 + immediate))
        ;
    baton_worker *w = atomic_load(&child_worker);
    baton_dispatcher *d = atomic_load(&child_dispatcher);
    baton_scheduler *s = atomic_load(&child_scheduler);
    if (w)
        baton_worker_stop(w, immediate);
    if (d)
        baton_dispatcher_stop(d);
    if (s)
        baton_scheduler_stop(s);
}

/* stop_if_asked, called once a role's object is where on_child_signal finds it, applies a
 * stop that came before: the handler (on whatever thread) either saw the object and stopped
 * it, or left child_stop for this to see; both atomics are sequentially consistent. */
static void stop_if_asked(void)
{
    int stop = atomic_load(&child_stop);
    if (stop)
        on_child_signal(stop == 2 ? SIGQUIT : SIGTERM);
}

static int run_worker_child(bt_supervisor *sv, const child *ch)
{
    const bt_config *cfg = sv->client->config;
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    char *queues = NULL;
    o.shutdown_timeout = sv->shutdown_timeout;
    if (ch->config_index != NO_CONFIG) {
        const bt_worker_config *wc = &cfg->workers[ch->config_index];
        queues = bt_join_queues(wc->queues, wc->nqueues);
        o.queues = queues;
        o.threads = wc->threads;
        o.polling_interval = wc->polling_interval;
    }
    baton_worker *w = NULL;
    int rc = baton_worker_new(&w, sv->client, &o);
    free(queues);
    child_worker = w;
    stop_if_asked();
    if (rc == BATON_OK)
        rc = baton_worker_run(w);
    child_worker = NULL; /* before the free: a late signal must find nothing to stop */
    baton_worker_free(w);
    return rc;
}

static int run_dispatcher_child(bt_supervisor *sv, const child *ch)
{
    const bt_config *cfg = sv->client->config;
    baton_dispatcher_options o = BATON_DISPATCHER_OPTIONS_INIT;
    if (ch->config_index != NO_CONFIG) {
        const bt_dispatcher_config *dc = &cfg->dispatchers[ch->config_index];
        o.polling_interval = dc->polling_interval;
        o.batch_size = dc->batch_size;
        o.concurrency_maintenance_interval = dc->concurrency_maintenance_interval;
    }
    bt_title_set("baton-dispatcher: polling_interval=%g batch_size=%d", o.polling_interval, o.batch_size);
    baton_dispatcher *x = NULL;
    int rc = baton_dispatcher_new(&x, sv->client, &o);
    child_dispatcher = x;
    stop_if_asked();
    if (rc == BATON_OK)
        rc = baton_dispatcher_run(x);
    child_dispatcher = NULL; /* before the free: a late signal must find nothing to stop */
    baton_dispatcher_free(x);
    return rc;
}

static int run_scheduler_child(bt_supervisor *sv)
{
    baton_scheduler_options o = BATON_SCHEDULER_OPTIONS_INIT; /* the config's polling interval */
    bt_title_set("baton-scheduler");
    baton_scheduler *x = NULL;
    int rc = baton_scheduler_new(&x, sv->client, &o);
    child_scheduler = x;
    stop_if_asked();
    if (rc == BATON_OK)
        rc = baton_scheduler_run(x);
    child_scheduler = NULL; /* before the free: a late signal must find nothing to stop */
    baton_scheduler_free(x);
    return rc;
}

/* child_main runs in the forked child and never returns. */
static _Noreturn void child_main(bt_supervisor *sv, const child *ch, pid_t supervisor_pid)
{
    /* A supervisor that dies (even by SIGKILL) takes its children down gracefully: they
     * stop claiming, finish or hand back their jobs, and deregister. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != supervisor_pid)
        _exit(0);
    if (sv->pidfile_fd >= 0)
        close(sv->pidfile_fd); /* the lock belongs to the supervisor alone */
    bt_waker_close(&sv->waker);
    for (size_t i = 0; i < sv->nchildren; i++)
        if (sv->children[i].pidfd >= 0)
            close(sv->children[i].pidfd);
    struct sigaction sa = {0};
    sa.sa_handler = on_child_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    bt_process_set_supervisor(sv->process_id);
    /* The client's own connection was closed before fork; jobs that enqueue use it. */
    int rc = bt_store_open(&sv->client->store, sv->client->url);
    if (rc == BATON_OK)
        rc = ch->kind == KIND_WORKER       ? run_worker_child(sv, ch)
             : ch->kind == KIND_DISPATCHER ? run_dispatcher_child(sv, ch)
                                           : run_scheduler_child(sv);
    if (rc != BATON_OK)
        bt_log(sv->client, BATON_LOG_ERROR, "event=%s.failed error=%s", kind_names[ch->kind],
               BT_LOG_VALUE(baton_error_last()));
    _exit(rc == BATON_OK ? 0 : 1);
}

static int pidfd_for(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

static void start_child(bt_supervisor *sv, child *ch)
{
    pid_t self = getpid();
    sigset_t all, old;
    sigfillset(&all);
    /* Blocked across fork so that the child installs its own handlers before any signal
     * meant for it can run the supervisor's. */
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_main(sv, ch, self);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        bt_log(sv->client, BATON_LOG_ERROR, "event=supervisor.fork_failed kind=%s error=%s",
               kind_names[ch->kind], BT_LOG_VALUE(strerror(errno)));
        ch->restart_at_ns = bt_mono_ns() + RESTART_BACKOFF_NS;
        return;
    }
    ch->pid = pid;
    ch->pidfd = pidfd_for(pid);
    ch->started_ns = bt_mono_ns();
    ch->beat = 0;
    ch->beat_seen_ns = ch->started_ns;
    bt_log(sv->client, BATON_LOG_INFO, "event=process.started kind=%s child_pid=%d supervisor_pid=%d",
           kind_names[ch->kind], (int)pid, (int)self);
}

static int describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        return snprintf(buf, len, "signal=%d", WTERMSIG(status));
    return snprintf(buf, len, "exit_status=%d", WEXITSTATUS(status));
}

/* child_exited settles a reaped child and plans its replacement. */
static void child_exited(bt_supervisor *sv, child *ch, int status, const char *why)
{
    pid_t pid = ch->pid;
    if (ch->pidfd >= 0)
        close(ch->pidfd);
    ch->pid = 0;
    ch->pidfd = -1;
    char how[32];
    describe_exit(status, how, sizeof how);
    int stopping = atomic_load(&sv->stop) != 0;
    bt_log(sv->client, stopping ? BATON_LOG_INFO : BATON_LOG_ERROR, "event=process.exited kind=%s child_pid=%d %s%s%s",
           kind_names[ch->kind], (int)pid, how, why ? " reason=" : "", why ? BT_LOG_VALUE(why) : "");
    kill_orphans(sv);
    settle_rows(sv, pid, stopping);
    int64_t now = bt_mono_ns();
    ch->restart_at_ns = now - ch->started_ns < RESTART_BACKOFF_NS ? now + RESTART_BACKOFF_NS : now;
}

static child *child_of(bt_supervisor *sv, pid_t pid)
{
    for (size_t i = 0; i < sv->nchildren; i++)
        if (sv->children[i].pid == pid)
            return &sv->children[i];
    return NULL;
}

/* reap collects every exited child (and any orphan that ended on its own). */
static void reap(bt_supervisor *sv)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        child *ch = child_of(sv, pid);
        if (ch)
            child_exited(sv, ch, status, NULL);
    }
}

/* kill_child ends a child that cannot end itself and settles it. */
static void kill_child(bt_supervisor *sv, child *ch, const char *why)
{
    int status = 0;
    kill(ch->pid, SIGKILL);
    while (waitpid(ch->pid, &status, 0) < 0 && errno == EINTR)
        ;
    child_exited(sv, ch, status, why);
}

/* ---- watchdog ---- */

typedef struct heartbeat_row {
    int64_t id, pid, at, supervisor_id;
} heartbeat_row;

typedef struct heartbeat_rows {
    heartbeat_row *items;
    size_t len, cap;
} heartbeat_rows;

static int collect_heartbeat(bt_row *row, void *payload)
{
    heartbeat_rows *l = payload;
    if (bt_grow(&l->items, &l->cap, l->len, sizeof *l->items) != 0)
        return -1;
    l->items[l->len++] = (heartbeat_row){bt_col_int(row, 0), bt_col_int(row, 1), bt_col_int(row, 2), bt_col_int(row, 3)};
    return 0;
}

/* heartbeat writes the supervisor's own heartbeat (and prunes the dead, like every
 * process), then makes the rows of its children that name another id (one it held before
 * it was pruned and registered again) name its own. */
static void heartbeat(bt_supervisor *sv, const bt_id_list *strays)
{
    bt_store *s;
    if (open_store(sv, &s) != BATON_OK)
        return;
    /* A child stopped while it held the write lock must not stall the watchdog: better a
     * heartbeat skipped than a round missed. */
    bt_set_lock_timeout(s, (int)(sv->period * 1000.0));
    bt_liveness_keep(sv->client, s, "supervisor", sv->metadata, sv->client->alive_threshold, &sv->process_id,
                     &sv->heartbeat_errors);
    for (size_t i = 0; i < strays->len; i++) {
        bt_val a[] = {BV_INT(sv->process_id), BV_INT(strays->ids[i])};
        if (bt_exec(s, sql_adopt, a, 2, NULL, NULL, NULL) != BATON_OK) /* again at the next round */
            bt_log_limited(sv->client, &sv->heartbeat_errors, BATON_LOG_ERROR, "event=supervisor.store_error error=%s",
                           BT_LOG_VALUE(baton_error_last()));
    }
    bt_store_close(s);
}

/* read_heartbeats reads the children's rows. A read never waits for the write lock, so a
 * stopped child that holds it cannot keep the watchdog from seeing that child. */
static int read_heartbeats(bt_supervisor *sv, heartbeat_rows *rows)
{
    bt_store *s;
    if (open_store(sv, &s) != BATON_OK)
        return -1;
    const char *here = bt_host_id();
    bt_val a[] = {BV_INT(sv->process_id), here ? BV_TEXT(here) : BV_NULL};
    int rc = bt_exec(s, sql_children, a, 2, collect_heartbeat, rows, NULL);
    bt_store_close(s);
    if (rc != BATON_OK)
        bt_log(sv->client, BATON_LOG_ERROR, "event=supervisor.store_error error=%s", BT_LOG_VALUE(baton_error_last()));
    return rc == BATON_OK ? 0 : -1;
}

/* watchdog kills a child whose heartbeat is late by half the alive threshold, or that has
 * not registered within that time: well before any process could declare it dead and
 * hand its slots on. One child per round, the most overdue: a stopped child holding the
 * database's write lock makes every other heartbeat late too, and those others write
 * theirs again as soon as it is gone. */
static void watchdog(bt_supervisor *sv)
{
    heartbeat_rows rows = {0};
    bt_id_list strays = {0};
    if (read_heartbeats(sv, &rows) == 0) {
        int64_t late_ns = (int64_t)(sv->client->alive_threshold * 5e8), now_ns = bt_mono_ns();
        /* Time the database could not be read counts for no child: after an outage they
         * beat again as they reconnect, and a child that cannot is stopped by its own
         * fence and its jobs by their shepherds (worker.c, command.h), not by this. */
        int64_t blind = sv->read_ok_ns ? now_ns - sv->read_ok_ns - (int64_t)(sv->period * 1e9) : 0;
        for (size_t i = 0; i < sv->nchildren && blind > 0; i++) {
            child *ch = &sv->children[i];
            ch->beat_seen_ns = ch->beat_seen_ns + blind < now_ns ? ch->beat_seen_ns + blind : now_ns;
        }
        sv->read_ok_ns = now_ns;
        child *worst = NULL;
        double worst_age = 0;
        int registered = 0;
        for (size_t i = 0; i < sv->nchildren; i++) {
            child *ch = &sv->children[i];
            if (!ch->pid)
                continue;
            /* A child's age is how long, by this process's monotonic clock, its newest
             * beat has stayed the same: no host's wall clock is read, so none that steps
             * makes a healthy child look late. A row another process pruned is gone from
             * the table, yet the child was registered: its age still counts. */
            int64_t newest = 0;
            for (size_t k = 0; k < rows.len; k++) {
                const heartbeat_row *r = &rows.items[k];
                if (r->pid != ch->pid)
                    continue;
                newest = r->at > newest ? r->at : newest;
                if (r->supervisor_id != sv->process_id && bt_grow(&strays.ids, &strays.cap, strays.len,
                                                                   sizeof *strays.ids) == 0)
                    strays.ids[strays.len++] = r->id;
            }
            if (newest && newest != ch->beat) {
                ch->beat = newest;
                ch->beat_seen_ns = now_ns;
            }
            double age = (double)(now_ns - ch->beat_seen_ns) / 1e9;
            if (now_ns - ch->beat_seen_ns > late_ns && (!worst || age > worst_age)) {
                worst = ch;
                worst_age = age;
                registered = ch->beat != 0;
            }
        }
        if (worst) {
            char why[96];
            snprintf(why, sizeof why, registered ? "no heartbeat for %.1fs" : "not registered after %.1fs", worst_age);
            kill_child(sv, worst, why);
        }
    }
    free(rows.items);
    heartbeat(sv, &strays);
    free(strays.ids);
}

/* ---- the supervisor's own lifecycle ---- */

static int lock_pidfile(bt_supervisor *sv, const char *path)
{
    sv->pidfile_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (sv->pidfile_fd < 0)
        return bt_err_set(BATON_ERROR, "pidfile %s: %s", path, strerror(errno));
    if (flock(sv->pidfile_fd, LOCK_EX | LOCK_NB) != 0) {
        char holder[32] = "";
        ssize_t n = pread(sv->pidfile_fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(sv->pidfile_fd);
        sv->pidfile_fd = -1;
        return bt_err_set(BATON_ESTATE, "pidfile %s is held by a running supervisor (pid %s)", path,
                          *holder ? holder : "unknown");
    }
    char text[32];
    int len = snprintf(text, sizeof text, "%d\n", (int)getpid());
    if (ftruncate(sv->pidfile_fd, 0) != 0 || pwrite(sv->pidfile_fd, text, (size_t)len, 0) != len) {
        int e = errno;
        close(sv->pidfile_fd);
        sv->pidfile_fd = -1;
        return bt_err_set(BATON_ERROR, "pidfile %s: %s", path, strerror(e));
    }
    sv->pidfile = strdup(path);
    return BATON_OK;
}

static void unlock_pidfile(bt_supervisor *sv)
{
    if (sv->pidfile_fd < 0)
        return;
    unlink(sv->pidfile);
    close(sv->pidfile_fd);
    sv->pidfile_fd = -1;
    free(sv->pidfile);
    sv->pidfile = NULL;
}

static int wanted(const char *only, const char *what)
{
    if (!only)
        return 1;
    size_t n = 0;
    char **parts = bt_split_queues(only, &n);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(parts[i], what) == 0;
    bt_strv_free(parts);
    return found;
}

static int check_only(const char *only)
{
    if (!only)
        return BATON_OK;
    size_t n = 0;
    char **parts = bt_split_queues(only, &n);
    int rc = n ? BATON_OK : bt_err_set(BATON_EINVALID, "--only: empty list");
    for (size_t i = 0; i < n && rc == BATON_OK; i++)
        if (strcmp(parts[i], "workers") && strcmp(parts[i], "dispatchers") && strcmp(parts[i], "scheduler"))
            rc = bt_err_set(BATON_EINVALID,
                            "--only: unknown process kind \"%s\" (workers, dispatchers, scheduler)", parts[i]);
    bt_strv_free(parts);
    return rc;
}

static void add_child(bt_supervisor *sv, child_kind kind, int config_index)
{
    sv->children[sv->nchildren++] = (child){.kind = kind, .config_index = config_index, .pidfd = -1};
}

static int plan_children(bt_supervisor *sv, const char *only)
{
    const bt_config *cfg = sv->client->config;
    size_t nw = cfg && cfg->nworkers ? cfg->nworkers : 0;
    size_t nd = cfg && cfg->ndispatchers ? cfg->ndispatchers : 0;
    size_t cap = 3 + nd;
    for (size_t i = 0; i < nw; i++)
        cap += (size_t)cfg->workers[i].processes;
    sv->children = calloc(cap, sizeof *sv->children);
    if (!sv->children)
        return bt_err_set(BATON_ERROR, "out of memory");
    if (wanted(only, "workers")) {
        for (size_t i = 0; i < nw; i++)
            for (int p = 0; p < cfg->workers[i].processes; p++)
                add_child(sv, KIND_WORKER, (int)i);
        if (!nw)
            add_child(sv, KIND_WORKER, NO_CONFIG);
    }
    if (wanted(only, "dispatchers")) {
        for (size_t i = 0; i < nd; i++)
            add_child(sv, KIND_DISPATCHER, (int)i);
        if (!nd)
            add_child(sv, KIND_DISPATCHER, NO_CONFIG);
    }
    if (wanted(only, "scheduler"))
        add_child(sv, KIND_SCHEDULER, NO_CONFIG);
    return BATON_OK;
}

static void show_title(bt_supervisor *sv, const char *state)
{
    size_t counts[3] = {0, 0, 0};
    for (size_t i = 0; i < sv->nchildren; i++)
        counts[sv->children[i].kind] += sv->children[i].pid != 0;
    bt_title_set("baton-supervisor: %s workers=%zu dispatchers=%zu scheduler=%zu", state, counts[KIND_WORKER],
                 counts[KIND_DISPATCHER], counts[KIND_SCHEDULER]);
}

static size_t running_children(const bt_supervisor *sv)
{
    size_t n = 0;
    for (size_t i = 0; i < sv->nchildren; i++)
        n += sv->children[i].pid != 0;
    return n;
}

/* wait_events sleeps until a child changes state, a stop is requested or timeout_s. */
static void wait_events(bt_supervisor *sv, double timeout_s)
{
    struct pollfd *fds = calloc(sv->nchildren + 1, sizeof *fds);
    nfds_t n = 0;
    int blind = 0; /* a child without pidfd: poll more often to notice its exit */
    fds[n++] = (struct pollfd){sv->waker.fd, POLLIN, 0};
    for (size_t i = 0; i < sv->nchildren; i++) {
        if (!sv->children[i].pid)
            continue;
        if (sv->children[i].pidfd >= 0)
            fds[n++] = (struct pollfd){sv->children[i].pidfd, POLLIN, 0};
        else
            blind = 1;
    }
    if (blind && timeout_s > 0.1)
        timeout_s = 0.1;
    int ms = bt_poll_ms(timeout_s);
    if (poll(fds, n, ms) > 0 && (fds[0].revents & POLLIN))
        bt_waker_drain(&sv->waker);
    free(fds);
}

/* shut_down stops every child: TERM (graceful; they finish or hand back their jobs within
 * the shutdown timeout) or QUIT (immediate), then SIGKILL for those still there, whose
 * claims the supervisor hands back to the queue itself. */
static void shut_down(bt_supervisor *sv)
{
    int immediate = atomic_load(&sv->stop) == 2;
    bt_log(sv->client, BATON_LOG_INFO, "event=supervisor.stopping mode=%s", immediate ? "immediate" : "graceful");
    show_title(sv, "stopping");
    for (size_t i = 0; i < sv->nchildren; i++)
        if (sv->children[i].pid)
            kill(sv->children[i].pid, immediate ? SIGQUIT : SIGTERM);
    /* The children enforce the timeout themselves; the margin covers their last commit. */
    int64_t deadline = bt_mono_ns() + (int64_t)(((immediate ? 0 : sv->shutdown_timeout) + 2.0) * 1e9);
    int64_t next_tick = bt_mono_ns() + (int64_t)(sv->period * 1e9);
    while (running_children(sv) && bt_mono_ns() < deadline) {
        if (bt_mono_ns() >= next_tick) { /* still alive: nobody may prune us meanwhile */
            bt_id_list none = {0};
            heartbeat(sv, &none);
            next_tick = bt_mono_ns() + (int64_t)(sv->period * 1e9);
        }
        if (!immediate && atomic_load(&sv->stop) == 2) {
            immediate = 1;
            for (size_t i = 0; i < sv->nchildren; i++)
                if (sv->children[i].pid)
                    kill(sv->children[i].pid, SIGQUIT);
            int64_t soon = bt_mono_ns() + (int64_t)2e9;
            deadline = soon < deadline ? soon : deadline;
        }
        double left = (double)(deadline - bt_mono_ns()) / 1e9;
        wait_events(sv, left < sv->period ? left : sv->period);
        reap(sv);
    }
    for (size_t i = 0; i < sv->nchildren; i++)
        if (sv->children[i].pid)
            kill_child(sv, &sv->children[i], "did not stop in time");
}

static int register_self(bt_supervisor *sv)
{
    bt_store *s;
    int rc = bt_client_open_store(sv->client, &s);
    if (rc != BATON_OK)
        return rc;
    json_t *m = json_pack("{s:i, s:f}", "children", (int)sv->nchildren, "shutdown_timeout", sv->shutdown_timeout);
    sv->metadata = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    rc = sv->metadata ? bt_process_register(s, "supervisor", sv->metadata, sv->client->alive_threshold, &sv->process_id)
                      : bt_err_set(BATON_ERROR, "out of memory");
    bt_store_close(s);
    return rc;
}

static void deregister_self(bt_supervisor *sv)
{
    bt_store *s;
    if (open_store(sv, &s) != BATON_OK)
        return;
    if (bt_process_deregister(s, sv->process_id) != BATON_OK)
        bt_log(sv->client, BATON_LOG_ERROR, "event=supervisor.deregister_failed error=%s", BT_LOG_VALUE(baton_error_last()));
    bt_store_close(s);
}

static void supervise(bt_supervisor *sv)
{
    int64_t next_watch = 0;
    while (!atomic_load(&sv->stop)) {
        int64_t now = bt_mono_ns();
        for (size_t i = 0; i < sv->nchildren; i++) {
            child *ch = &sv->children[i];
            if (!ch->pid && now >= ch->restart_at_ns)
                start_child(sv, ch);
        }
        show_title(sv, "running");
        if (now >= next_watch) {
            watchdog(sv);
            next_watch = bt_mono_ns() + (int64_t)(sv->period * 1e9);
        }
        double timeout = (double)(next_watch - bt_mono_ns()) / 1e9;
        for (size_t i = 0; i < sv->nchildren; i++)
            if (!sv->children[i].pid) {
                double wait = (double)(sv->children[i].restart_at_ns - bt_mono_ns()) / 1e9;
                timeout = wait < timeout ? wait : timeout;
            }
        wait_events(sv, timeout);
        reap(sv);
    }
}

int baton_supervise(baton_client *c, const baton_supervisor_options *opts)
{
    baton_supervisor_options defaults = BATON_SUPERVISOR_OPTIONS_INIT;
    const baton_supervisor_options *o = opts ? opts : &defaults;
    if (o->version != BATON_SUPERVISOR_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "unknown supervisor options version %u", o->version);
    if (o->shutdown_timeout > BATON_SECONDS_MAX || isnan(o->shutdown_timeout))
        return bt_err_set(BATON_EINVALID, "shutdown timeout must be at most %.0e seconds (negative: baton.yml's)",
                          BATON_SECONDS_MAX);
    int rc = check_only(o->only);
    if (rc != BATON_OK)
        return rc;
    bt_supervisor *sv = calloc(1, sizeof *sv);
    if (!sv)
        return bt_err_set(BATON_ERROR, "out of memory");
    sv->client = c;
    sv->pidfile_fd = -1;
    sv->waker.fd = -1;
    sv->shutdown_timeout = o->shutdown_timeout >= 0 ? o->shutdown_timeout
                           : c->config                ? c->config->shutdown_timeout
                                                      : 5.0;
    sv->period = c->heartbeat_interval / 2;
    sv->period = sv->period > 1.0 ? 1.0 : sv->period < 0.05 ? 0.05 : sv->period;
    rc = plan_children(sv, o->only);
    if (rc == BATON_OK && o->pidfile)
        rc = lock_pidfile(sv, o->pidfile);
    if (rc == BATON_OK)
        rc = bt_waker_init(&sv->waker);
    if (rc == BATON_OK)
        rc = register_self(sv);
    bt_supervisor *expected = NULL;
    if (rc == BATON_OK && !atomic_compare_exchange_strong(&c->supervisor, &expected, sv))
        rc = bt_err_set(BATON_ESTATE, "baton_supervise is already running on this client");
    if (rc == BATON_OK) {
        /* Jobs of children that die are reparented here, to be killed with certainty. */
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        if (o->set_titles)
            bt_title_init();
        /* No connection may cross fork (see DESIGN); the children open their own. */
        bt_store_close(c->store);
        c->store = NULL;
        bt_log(c, BATON_LOG_INFO, "event=supervisor.started process_id=%lld pid=%d children=%zu",
               (long long)sv->process_id, (int)getpid(), sv->nchildren);
        bt_process_hook(c, BATON_PROCESS_SUPERVISOR, BATON_PROCESS_START, sv->process_id);
        supervise(sv);
        bt_process_hook(c, BATON_PROCESS_SUPERVISOR, BATON_PROCESS_STOP, sv->process_id);
        shut_down(sv);
        deregister_self(sv);
        atomic_store(&c->supervisor, NULL);
        bt_client_wait_stops(c);
        rc = bt_store_open(&c->store, c->url);
        bt_log(c, BATON_LOG_INFO, "event=supervisor.stopped process_id=%lld", (long long)sv->process_id);
        bt_process_hook(c, BATON_PROCESS_SUPERVISOR, BATON_PROCESS_EXIT, sv->process_id);
    }
    unlock_pidfile(sv);
    bt_waker_close(&sv->waker);
    free(sv->children);
    free(sv->metadata);
    free(sv);
    return rc;
}

void baton_supervisor_stop(baton_client *c, int immediate)
{
    atomic_fetch_add(&c->stops_under_way, 1);
    bt_supervisor *sv = atomic_load(&c->supervisor);
    if (sv) {
        int want = immediate ? 2 : 1;
        int cur = atomic_load(&sv->stop);
        while (cur < want && !atomic_compare_exchange_weak(&sv->stop, &cur, want))
            ;
        bt_waker_signal(&sv->waker);
    }
    atomic_fetch_sub(&c->stops_under_way, 1);
}
