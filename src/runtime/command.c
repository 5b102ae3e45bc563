/* command.c: runs a job's shell command to completion (see command.h).
 *
 * This module owns everything between "here is a command line" and "here is how it
 * ended": the child's argv and environment, the two forks (a shepherd that leads a new
 * process group and dies with its worker thread, then /bin/sh under it), the stdin and
 * stderr pipes, the timeout and cancel escalation (TERM to the group, KILL after the grace
 * period) and the final sweeps that kill whatever the command left behind: in its group,
 * and, since the shepherd is the subreaper of the command's orphans, those that left it.
 * It is a library routine called from many threads at once, so it never changes
 * process-wide state (signal dispositions); it only adjusts the calling thread's signal
 * mask, and restores it before returning. */
#include "runtime/command.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"
#include "util/clock.h"
#include "util/err.h"

extern char **environ;

/* Where the shepherd keeps the ends it hands down: fixed numbers, so that after one
 * close_range nothing else of the (multithreaded) worker leaks into the command. */
enum { FD_IN = 3, FD_ERR = 4, FD_ALIVE = 5 };

/* The cancel flag is checked at least this often while the command runs. */
enum { CANCEL_POLL_NS = 20 * 1000 * 1000 };
/* How long a killed job's shepherd has to sweep it before its group is killed anyway. */
enum { SWEEP_NS = 1000 * 1000 * 1000 };

/* Everything the children need, prepared before fork: after fork only async-signal-safe
 * calls are allowed, so no allocation, no stdio, no locks. */
typedef struct child_setup {
    char *const *argv;
    char *const *envp;
    pid_t parent;        /* the worker process, to detect that it died before prctl */
    const _Atomic int64_t *alive_ns; /* the dead man's switch (bt_command_spec), or NULL */
    int64_t alive_limit_ns;
    int in_r, err_w, alive_w;
    int pipe_fds[6];     /* all six pipe ends, none of which may reach the command as 0-2 */
    int max_fd;          /* bound for the close loop when close_range is unavailable */
} child_setup;

/* ------------------------------------------------------------------------------------------ */
/* Child side (after fork: async-signal-safe calls only)                                      */
/* ------------------------------------------------------------------------------------------ */

static void close_from(int lowfd, int max_fd)
{
    if (close_range((unsigned)lowfd, ~0U, 0) == 0)
        return;
    /* Kernels before 5.9 lack close_range: close one by one. */
    for (int fd = lowfd; fd < max_fd; fd++)
        close(fd);
}

/* The shepherd's PR_SET_PDEATHSIG handler: the worker thread is gone, so the job must go
 * too, including anything it started in the background. SIGKILL cannot be trapped. */
/* kill_listed_children sends KILL to every child of the shepherd /proc lists (path is
 * its "children" file); returns how many it found, or -1 when /proc cannot tell. */
static int kill_listed_children(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    int found = 0;
    for (ssize_t i = 0; i < n;) {
        long pid = 0;
        while (i < n && buf[i] >= '0' && buf[i] <= '9')
            pid = pid * 10 + (buf[i++] - '0');
        if (pid > 1) {
            kill((pid_t)pid, SIGKILL);
            found++;
        }
        while (i < n && (buf[i] < '0' || buf[i] > '9'))
            i++;
    }
    return found;
}

/* sweep_descendants kills and reaps everything left under the shepherd. Its group alone
 * would miss a descendant that left it (setsid); as their subreaper the shepherd inherits
 * every orphan of the command, and /proc lists them as its children, until none is left.
 * Async-signal-safe: open, read, kill, waitpid, nanosleep. */
static void sweep_descendants(void)
{
    char path[64] = "/proc/self/task/";
    char digits[16];
    int len = 0;
    for (pid_t pid = getpid(); pid > 0; pid /= 10)
        digits[len++] = (char)('0' + pid % 10);
    size_t at = strlen(path);
    while (len > 0)
        path[at++] = digits[--len];
    memcpy(path + at, "/children", sizeof "/children");
    for (int round = 0; round < 10000; round++) {
        int listed = kill_listed_children(path);
        if (listed < 0)
            return; /* no list to sweep by (no /proc): the group's kill is all there is */
        pid_t reaped = waitpid(-1, NULL, listed ? 0 : WNOHANG);
        if (reaped < 0 && errno == ECHILD)
            return;
        if (reaped == 0 && !listed) { /* a child not listed yet: it is being reparented */
            struct timespec pause = {0, 1000000};
            nanosleep(&pause, NULL);
        }
    }
}

/* On SIGHUP: the worker died (PR_SET_PDEATHSIG), or it asks for the job to end at once
 * (bt_command_kill). Either way nothing of the job may stay. */
static void on_parent_death(int sig)
{
    (void)sig;
    sweep_descendants();
    kill(0, SIGKILL);
}

static _Noreturn void exec_command(const child_setup *cs)
{
    /* The shepherd reset every disposition to the default except these two; SIG_IGN would
     * survive execve and make the command immune to the TERM of a timeout. */
    struct sigaction sa = {0};
    sa.sa_handler = SIG_DFL;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (dup2(FD_IN, 0) < 0 || dup2(FD_ERR, 2) < 0)
        _exit(127);
    close_from(3, cs->max_fd);
    /* Signals sent while still blocked (a quick TERM) stay pending and arrive here. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve("/bin/sh", cs->argv, cs->envp);
    static const char msg[] = "baton: cannot execute /bin/sh\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do: the exit status says it */
    }
    _exit(127);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* wait_for_command reaps the command into *st. With a dead man's switch it wakes when the
 * command ends (SIGCHLD, blocked and waited for) or its worker's liveness runs out, and
 * then kills the whole group, itself included: the worker may be declared dead at any
 * moment and its slots handed on. Async-signal-safe: waitpid, sigtimedwait (a system
 * call), clock_gettime, kill. */
static void wait_for_command(const child_setup *cs, pid_t cmd, int *st)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        pid_t r = waitpid(cmd, st, cs->alive_ns ? WNOHANG : 0);
        if (r == cmd)
            return;
        if (r < 0 && errno != EINTR)
            kill(0, SIGKILL);
        if (r != 0)
            continue;
        int64_t left = atomic_load(cs->alive_ns) + cs->alive_limit_ns - mono_ns();
        if (left <= 0) {
            sweep_descendants();
            kill(0, SIGKILL);
        }
        struct timespec wait = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        sigtimedwait(&chld, NULL, &wait);
    }
}

static _Noreturn void shepherd(const child_setup *cs)
{
    /* Lead a group of our own before anything else: every kill(0, ...) below must stay in
     * it and never reach the worker's group. */
    if (setpgid(0, 0) != 0)
        _exit(127);
    /* Orphans of the command, even those that left the group, become ours to sweep. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);

    /* The worker's handlers would run worker code in this copy of it: start from the
     * defaults. The command inherits these, so it also starts like a fresh process (an
     * ignored SIGPIPE in the worker, say, does not leak into it). */
    struct sigaction sa = {0};
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL); /* fails harmlessly for the C library's own signals */
    /* A timeout sends TERM to the whole group; the shepherd must outlive the command to
     * report how it ended. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_parent_death;
    sigfillset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    if (prctl(PR_SET_PDEATHSIG, SIGHUP) != 0)
        _exit(127);
    /* The worker may have died between fork and prctl, and then no signal will come. */
    if (getppid() != cs->parent)
        kill(0, SIGKILL);
    /* Only the death signal may interrupt the shepherd (everything was blocked across
     * fork); the rest stays blocked so that only the command's own fate decides ours. */
    sigset_t mask;
    sigfillset(&mask);
    sigdelset(&mask, SIGHUP);
    sigprocmask(SIG_SETMASK, &mask, NULL);

    /* Move the three ends we need to fixed numbers (via copies above any of them), then
     * close everything else: other threads' pipes must not be held open by this job. */
    int in_r = fcntl(cs->in_r, F_DUPFD, 10);
    int err_w = fcntl(cs->err_w, F_DUPFD, 10);
    int alive_w = fcntl(cs->alive_w, F_DUPFD, 10);
    if (in_r < 0 || err_w < 0 || alive_w < 0)
        _exit(127);
    if (dup2(in_r, FD_IN) < 0 || dup2(err_w, FD_ERR) < 0 || dup2(alive_w, FD_ALIVE) < 0)
        _exit(127);
    close_from(FD_ALIVE + 1, cs->max_fd);
    /* A worker running with 0-2 closed got pipe ends there; the command would inherit them
     * as stdout. Better closed than a pipe back into ourselves. */
    for (int fd = 0; fd <= 2; fd++)
        for (int i = 0; i < 6; i++)
            if (cs->pipe_fds[i] == fd)
                close(fd);

    /* The shepherd is a copy of the whole worker; a second full copy only to exec would
     * cost as much again. vfork shares the shepherd's memory until execve, which is safe
     * here: the shepherd has one thread and waits, and the child writes nothing of it. */
    pid_t cmd = vfork();
    if (cmd == 0)
        exec_command(cs);
    int fork_errno = cmd < 0 ? errno : 0;
    /* Only the command may hold these: the worker sees EOF/EPIPE when the command closes them. */
    close(FD_IN);
    close(FD_ERR);
    /* "Ready" (0) or the fork's errno: the worker waits for it before signalling the group,
     * since a TERM sent before the command exists would be lost. A failed write means the
     * worker is gone (its end of the pipe closes before the kernel sends the death
     * signal): the command must not outlive it, so the whole group goes now. */
    if (write(FD_ALIVE, &fork_errno, sizeof fork_errno) < 0)
        kill(0, SIGKILL);
    if (cmd < 0)
        _exit(127);

    int st;
    wait_for_command(cs, cmd, &st);
    sweep_descendants();
    if (WIFEXITED(st))
        _exit(WEXITSTATUS(st));
    /* Die of the same signal, so the worker sees exactly what the command saw; without a
     * core file, which would be a useless copy of the worker. */
    int sig = WTERMSIG(st);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_DUMPABLE, 0);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigemptyset(&mask);
    sigaddset(&mask, sig);
    sigprocmask(SIG_UNBLOCK, &mask, NULL);
    kill(getpid(), sig);
    _exit(128 + sig);
}

/* ------------------------------------------------------------------------------------------ */
/* Parent side                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Whether entry ("NAME=value" or a bare "NAME") sets the variable that def ("NAME=value",
 * validated) sets. */
static int same_name(const char *entry, const char *def)
{
    size_t n = (size_t)(strchr(def, '=') - def);
    return strncmp(entry, def, n) == 0 && entry[n] == '=';
}

static int overridden(const char *entry, char *const *extra, size_t from, size_t count)
{
    for (size_t i = from; i < count; i++)
        if (same_name(entry, extra[i]))
            return 1;
    return 0;
}

/* environ plus extra, an extra NAME replacing an inherited one (and a later extra an
 * earlier one), so the command never sees the same name twice. The strings are borrowed. */
static int build_env(char *const *extra, char ***out)
{
    size_t n_env = 0, n_extra = 0;
    while (environ && environ[n_env])
        n_env++;
    for (; extra && extra[n_extra]; n_extra++) {
        const char *eq = strchr(extra[n_extra], '=');
        if (!eq || eq == extra[n_extra])
            return bt_err_set(BATON_EINVALID, "command: environment entry '%s' is not NAME=value",
                              extra[n_extra]);
    }
    char **envp = calloc(n_env + n_extra + 1, sizeof *envp);
    if (!envp)
        return bt_err_set(BATON_ERROR, "command: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (!overridden(environ[i], extra, 0, n_extra))
            envp[k++] = environ[i];
    for (size_t i = 0; i < n_extra; i++)
        if (!overridden(extra[i], extra, i + 1, n_extra))
            envp[k++] = extra[i];
    envp[k] = NULL;
    *out = envp;
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Keeps the last BT_STDERR_TAIL bytes: older output slides out at the front. */
static void tail_append(bt_command_result *res, const char *data, size_t n)
{
    if (n >= BT_STDERR_TAIL) {
        memcpy(res->stderr_tail, data + n - BT_STDERR_TAIL, BT_STDERR_TAIL);
        res->stderr_len = BT_STDERR_TAIL;
    } else {
        size_t keep = res->stderr_len;
        if (keep + n > BT_STDERR_TAIL) {
            size_t drop = keep + n - BT_STDERR_TAIL;
            memmove(res->stderr_tail, res->stderr_tail + drop, keep - drop);
            keep -= drop;
        }
        memcpy(res->stderr_tail + keep, data, n);
        res->stderr_len = keep + n;
    }
    res->stderr_tail[res->stderr_len] = '\0';
}

/* Reads the stderr pipe up to max_reads times (bounded, so a chatty command cannot keep
 * the loop from checking its deadlines); closes it at EOF. */
static void read_stderr(int *fd, bt_command_result *res, int max_reads)
{
    char buf[16384];
    for (int i = 0; *fd >= 0 && i < max_reads; i++) {
        ssize_t n = read(*fd, buf, sizeof buf);
        if (n > 0) {
            tail_append(res, buf, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            if (n == 0 || errno != EAGAIN)
                close_fd(fd);
            return;
        }
    }
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Seconds to nanoseconds, saturating so that absurd timeouts mean "practically never". */
static int64_t seconds_ns(double s)
{
    return s >= 9e9 ? INT64_MAX / 2 : (int64_t)(s * 1e9);
}

/* State of the parent's loop while the command runs. */
typedef struct run_state {
    const bt_command_spec *spec;
    bt_command_result *res;
    pid_t pgid;
    int in_w, err_r, alive_r;
    size_t in_off;
    int epipe;            /* a write failed with EPIPE, so SIGPIPE may be pending */
    int ready;            /* the shepherd reported that the command was forked */
    int start_errno;      /* or why it could not be */
    unsigned char msg[sizeof(int)];
    size_t msg_len;
    int stop;             /* 0 running, 1 stop wanted, 2 TERM sent, 3 KILL sent */
    int64_t deadline, kill_at, grace;
} run_state;

static void write_stdin(run_state *rs)
{
    ssize_t n = write(rs->in_w, rs->spec->stdin_data + rs->in_off, rs->spec->stdin_len - rs->in_off);
    if (n > 0)
        rs->in_off += (size_t)n;
    else if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    else if (n < 0 && errno == EPIPE)
        rs->epipe = 1; /* the command closed stdin or ended: it does not want the rest */
    if (n <= 0 || rs->in_off >= rs->spec->stdin_len)
        close_fd(&rs->in_w); /* all written (EOF for the command), or nobody reads */
}

/* Reads the shepherd's status pipe; returns 1 at EOF, i.e. once the shepherd has exited
 * (only it holds the write end: the command closed its copy before exec). */
static int read_alive(run_state *rs)
{
    for (;;) {
        unsigned char buf[64];
        ssize_t n = read(rs->alive_r, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno != EAGAIN; /* a real error: treat as gone, waitpid will tell */
        if (n == 0)
            return 1;
        for (ssize_t i = 0; i < n && rs->msg_len < sizeof rs->msg; i++)
            rs->msg[rs->msg_len++] = buf[i];
        if (rs->msg_len == sizeof rs->msg && !rs->ready && !rs->start_errno) {
            int v;
            memcpy(&v, rs->msg, sizeof v);
            if (v == 0)
                rs->ready = 1;
            else
                rs->start_errno = v;
        }
    }
}

/* Starts or advances the TERM-then-KILL escalation; signals go to the whole group. */
static void check_stop(run_state *rs, int64_t now)
{
    if (rs->stop == 0) {
        if (rs->spec->cancel && atomic_load(rs->spec->cancel)) {
            rs->res->cancelled = 1;
            rs->stop = 1;
        } else if (now >= rs->deadline) {
            rs->res->timed_out = 1;
            rs->stop = 1;
        }
        if (rs->stop == 1)
            rs->kill_at = now + rs->grace;
    }
    /* Asked to stop at once (2): no TERM, no grace. */
    if ((rs->stop == 1 || rs->stop == 2) && rs->spec->cancel && atomic_load(rs->spec->cancel) >= 2 &&
        rs->kill_at > now)
        rs->kill_at = now;
    if (rs->stop == 1 && rs->ready && now < rs->kill_at) {
        kill(-rs->pgid, SIGTERM);
        rs->stop = 2;
        rs->kill_at = now + rs->grace;
    }
    /* Past the grace, or never told "ready" within it (the command stopped its shepherd
     * before the shepherd could say so): the job goes at once. */
    if ((rs->stop == 1 || rs->stop == 2) && now >= rs->kill_at) {
        bt_command_kill(rs->pgid);
        rs->stop = 3;
        rs->kill_at = now + SWEEP_NS;
    }
    /* The shepherd could not sweep in time (something keeps stopping it): kill the group. */
    if (rs->stop == 3 && now >= rs->kill_at) {
        kill(-rs->pgid, SIGKILL);
        rs->stop = 4;
    }
}

/* Milliseconds poll may sleep before the next deadline or cancel check (-1: no limit). */
static int poll_timeout(const run_state *rs, int64_t now)
{
    int64_t wake = INT64_MAX;
    if (rs->stop == 0) {
        wake = rs->deadline;
        if (rs->spec->cancel && now + CANCEL_POLL_NS < wake)
            wake = now + CANCEL_POLL_NS;
    } else if (rs->stop <= 3) {
        wake = rs->kill_at;
        if (rs->stop <= 2 && rs->spec->cancel && now + CANCEL_POLL_NS < wake)
            wake = now + CANCEL_POLL_NS; /* a stop at once may come during the grace */
    }
    if (wake >= INT64_MAX / 2)
        return -1;
    if (wake <= now)
        return 0;
    int64_t ms = (wake - now + 999999) / 1000000; /* round up: never spin on a 0 ms wait */
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Runs until the shepherd has exited, feeding stdin and collecting stderr meanwhile. */
static void supervise(run_state *rs)
{
    for (;;) {
        int64_t now = bt_mono_ns();
        check_stop(rs, now);
        struct pollfd fds[3] = {
            {rs->alive_r, POLLIN, 0},
            {rs->err_r, POLLIN, 0},  /* a negative fd is ignored by poll */
            {rs->in_w, POLLOUT, 0},
        };
        int n = poll(fds, 3, poll_timeout(rs, now));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* Cannot wait any more: make sure the shepherd ends, so waitpid cannot hang. */
            bt_command_kill(rs->pgid);
            return;
        }
        if (fds[1].revents)
            read_stderr(&rs->err_r, rs->res, 4);
        if (rs->in_w >= 0 && fds[2].revents)
            write_stdin(rs);
        if (fds[0].revents && read_alive(rs))
            return;
    }
}

void bt_command_kill(int pgid)
{
    /* Not SIGKILL to the group: the shepherd would die with it, and descendants that left
     * the group (setsid) would outlive the job. The shepherd's SIGHUP handler sweeps them,
     * then kills the group; CONT, in case the job stopped the shepherd. Until it is reaped,
     * its pid names no other process. */
    if (pgid > 0) {
        kill((pid_t)pgid, SIGHUP);
        kill((pid_t)pgid, SIGCONT);
    }
}

static void fill_status(bt_command_result *res, int st)
{
    if (WIFEXITED(st)) {
        res->exited = 1;
        res->exit_status = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        res->signaled = 1;
        res->term_signal = WTERMSIG(st);
    }
}

int bt_command_run(const bt_command_spec *spec, bt_command_result *res)
{
    memset(res, 0, sizeof *res);
    if (!spec || !spec->command)
        return bt_err_set(BATON_EINVALID, "command: no command line given");
    if (spec->stdin_len > 0 && !spec->stdin_data)
        return bt_err_set(BATON_EINVALID, "command: stdin_len without stdin_data");
    /* Already cancelled: starting it would only run its first steps for nothing. */
    if (spec->cancel && atomic_load(spec->cancel)) {
        res->cancelled = 1;
        return 0;
    }

    char **envp = NULL;
    int rc = build_env(spec->env_extra, &envp);
    if (rc) {
        res->not_started = rc != BATON_EINVALID; /* out of memory */
        return rc;
    }
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)spec->command, NULL};

    /* O_CLOEXEC: a concurrent fork+exec elsewhere in the worker must not carry our ends
     * along, which would keep the command's stdin from ever reaching EOF. */
    int in[2] = {-1, -1}, err[2] = {-1, -1}, alive[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || pipe2(alive, O_CLOEXEC) != 0 ||
        set_nonblock(in[1]) != 0 || set_nonblock(err[0]) != 0 || set_nonblock(alive[0]) != 0) {
        int e = errno;
        for (int i = 0; i < 2; i++) {
            close_fd(&in[i]);
            close_fd(&err[i]);
            close_fd(&alive[i]);
        }
        free(envp);
        res->not_started = 1;
        return bt_err_set(BATON_ERROR, "command: pipe: %s", strerror(e));
    }

    struct rlimit rl;
    int max_fd = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        max_fd = rl.rlim_cur > (1u << 20) ? 1 << 20 : (int)rl.rlim_cur;
    child_setup cs = {
        .argv = argv,
        .envp = envp,
        .parent = getpid(),
        .alive_ns = spec->alive_ns,
        .alive_limit_ns = spec->alive_limit_ns,
        .in_r = in[0],
        .err_w = err[1],
        .alive_w = alive[1],
        .pipe_fds = {in[0], in[1], err[0], err[1], alive[0], alive[1]},
        .max_fd = max_fd,
    };

    /* SIGPIPE stays blocked in this thread while we write stdin, so a command that does not
     * read it cannot kill the worker; the process-wide disposition is the caller's. */
    sigset_t pipe_set, all, caller_mask, run_mask, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &caller_mask);
    int pipe_was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    /* Everything blocked across fork: the shepherd must not run any of the worker's
     * handlers before it has reset them. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &run_mask);
    pid_t pid = fork();
    if (pid == 0)
        shepherd(&cs);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &run_mask, NULL);
    close_fd(&in[0]);
    close_fd(&err[1]);
    close_fd(&alive[1]);
    free(envp); /* the parent's copy only; the children have theirs */
    if (pid < 0) {
        close_fd(&in[1]);
        close_fd(&err[0]);
        close_fd(&alive[0]);
        pthread_sigmask(SIG_SETMASK, &caller_mask, NULL);
        res->not_started = 1;
        return bt_err_set(BATON_ERROR, "command: fork: %s", strerror(fork_errno));
    }
    /* The shepherd does the same; whichever runs first, the group exists before anyone
     * (we, or a worker reading pgid_out) signals it. */
    setpgid(pid, pid);
    if (spec->pgid_out)
        atomic_store(spec->pgid_out, (int)pid);

    run_state rs = {
        .spec = spec,
        .res = res,
        .pgid = pid,
        .in_w = in[1],
        .err_r = err[0],
        .alive_r = alive[0],
        .deadline = spec->timeout > 0 ? bt_mono_ns() + seconds_ns(spec->timeout) : INT64_MAX,
        .grace = seconds_ns(spec->kill_grace > 0 ? spec->kill_grace : 5),
        .kill_at = INT64_MAX,
    };
    if (spec->stdin_len == 0)
        close_fd(&rs.in_w);
    supervise(&rs);
    close_fd(&rs.in_w);
    /* What the command wrote is all in the pipe by now. */
    read_stderr(&rs.err_r, res, 64);

    /* Wait for the shepherd without reaping it: as long as it is an unreaped zombie its pid,
     * and so the group id, cannot be reused, so the sweep below hits only our leftovers. */
    siginfo_t si;
    while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    kill(-pid, SIGKILL); /* background children of the command must not outlive the job */
    int st = 0;
    pid_t w;
    while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    int wait_errno = errno;
    read_stderr(&rs.err_r, res, 64); /* late words of the leftovers, if any */
    close_fd(&rs.err_r);
    close_fd(&rs.alive_r);
    if (spec->pgid_out)
        atomic_store(spec->pgid_out, 0);

    /* Swallow the SIGPIPE our own writes raised (never one that was pending before), then
     * give the caller its mask back. */
    if (rs.epipe && !pipe_was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &caller_mask, NULL);

    if (w < 0)
        return bt_err_set(BATON_ERROR, "command: waitpid: %s%s", strerror(wait_errno),
                          wait_errno == ECHILD ? " (is SIGCHLD ignored?)" : "");
    if (!rs.ready) {
        res->not_started = 1;
        if (rs.start_errno)
            return bt_err_set(BATON_ERROR, "command: fork: %s", strerror(rs.start_errno));
        return bt_err_set(BATON_ERROR, "command: the shepherd process ended before starting the "
                          "command (%s %d)", WIFEXITED(st) ? "exit status" : "signal",
                          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    fill_status(res, st);
    return 0;
}

void bt_command_describe(const bt_command_result *res, double timeout, char *buf, size_t len)
{
    if (!buf || len == 0)
        return;
    if (res->cancelled)
        snprintf(buf, len, "cancelled");
    else if (res->timed_out)
        snprintf(buf, len, "timed out after %gs", timeout);
    else if (res->signaled)
        snprintf(buf, len, "killed by signal %d (%s)", res->term_signal, strsignal(res->term_signal));
    else if (res->exited)
        snprintf(buf, len, "exit status %d", res->exit_status);
    else
        snprintf(buf, len, "did not run");
}
