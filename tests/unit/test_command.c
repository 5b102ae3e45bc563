// ctest-labels: threads
/* test_command.c: bt_command_run runs /bin/sh -c COMMAND in a process group of its own:
 * exit codes and signals, the stderr tail, a large stdin, the environment, timeouts and
 * cancellation with TERM-then-KILL, and that nothing of the job outlives it or its worker. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#include "baton.h"
#include "runtime/command.h"
#include "util/clock.h"

enum { MIB = 1 << 20 };

static bt_command_spec spec_for(const char *command)
{
    bt_command_spec s = {0};
    s.command = command;
    return s;
}

static double seconds_since(int64_t t0) { return (double)(bt_mono_ns() - t0) / 1e9; }

/* A recognisable, non-text payload: a bug that drops, repeats or reorders a chunk shows. */
static char *make_payload(size_t len)
{
    char *p = malloc(len);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = (char)((i * 7 + (i >> 12)) & 0xff);
    return p;
}

static char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

/* A process is gone once it no longer exists or is a zombie: a killed grandchild is
 * reparented and may wait a while for init (or a container's pid 1) to reap it. */
static int pid_gone(void *arg)
{
    pid_t pid = *(pid_t *)arg;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *text = read_file(path);
    if (!text)
        return 1;
    const char *p = strrchr(text, ')');
    int gone = !p || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
    free(text);
    return gone;
}

/* The shell writes "PID\n"; a reader may see the file before the line is complete. */
static int pid_file_written(void *arg)
{
    char *text = read_file(arg);
    int ok = text && strchr(text, '\n') != NULL;
    free(text);
    return ok;
}

static pid_t read_pid(const char *path)
{
    char *text = read_file(path);
    assert_non_null(text);
    pid_t pid = (pid_t)atoi(text);
    free(text);
    assert_true(pid > 1);
    return pid;
}

static void assert_sigpipe_clean(void)
{
    sigset_t set;
    assert_int_equal(sigpending(&set), 0);
    assert_false(sigismember(&set, SIGPIPE));
    assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &set), 0);
    assert_false(sigismember(&set, SIGPIPE));
    struct sigaction sa;
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_ptr_equal(sa.sa_handler, SIG_DFL);
}

/* ------------------------------------------------------------------------------------------ */

static void test_exit_zero(void **state)
{
    (void)state;
    bt_command_spec s = spec_for("exit 0");
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0);
    assert_false(r.signaled);
    assert_false(r.timed_out);
    assert_false(r.cancelled);
    assert_int_equal(r.stderr_len, 0);
    assert_string_equal(r.stderr_tail, "");
}

static void test_exit_status_and_stderr(void **state)
{
    (void)state;
    bt_command_spec s = spec_for("echo 'disk quota exceeded' >&2; exit 3");
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 3);
    assert_string_equal(r.stderr_tail, "disk quota exceeded\n");
    assert_int_equal(r.stderr_len, strlen("disk quota exceeded\n"));
}

static void test_stderr_keeps_last_4k(void **state)
{
    (void)state;
    /* 2048 numbered lines of 10 bytes = 20480 bytes, in many small writes. */
    bt_command_spec s = spec_for("i=0; while [ $i -lt 2048 ]; do printf '%09d\\n' $i >&2; "
                                 "i=$((i+1)); done; exit 1");
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_int_equal(r.exit_status, 1);
    char *all = malloc(2048 * 10 + 1);
    for (int i = 0; i < 2048; i++)
        snprintf(all + i * 10, 11, "%09d\n", i);
    assert_int_equal(r.stderr_len, BT_STDERR_TAIL);
    assert_int_equal(r.stderr_tail[BT_STDERR_TAIL], '\0');
    assert_memory_equal(r.stderr_tail, all + 2048 * 10 - BT_STDERR_TAIL, BT_STDERR_TAIL);
    free(all);
}

static void test_killed_by_signal(void **state)
{
    (void)state;
    bt_command_spec s = spec_for("kill -USR1 $$");
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_false(r.exited);
    assert_true(r.signaled);
    assert_int_equal(r.term_signal, SIGUSR1);

    /* TERM too, although the shepherd itself ignores it while the command runs. */
    s = spec_for("kill -TERM $$");
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.signaled);
    assert_int_equal(r.term_signal, SIGTERM);
    assert_false(r.timed_out);
}

static void test_one_mib_stdin(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *payload = make_payload(MIB);
    char cmd[4200];
    /* 200 000 bytes of stderr before reading stdin: both pipes fill up, so this only ends
     * if the caller reads stderr while stdin is still being written. */
    snprintf(cmd, sizeof cmd, "yes err | head -c 200000 >&2; cat > '%s'", path_join(dir, "in.bin"));
    bt_command_spec s = spec_for(cmd);
    s.stdin_data = payload;
    s.stdin_len = MIB;
    s.timeout = 60; /* a deadlock shows as a timeout rather than a hung suite */
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_false(r.timed_out);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0);
    size_t len = 0;
    char *got = read_bytes(path_join(dir, "in.bin"), &len);
    assert_non_null(got);
    assert_int_equal(len, MIB);
    assert_memory_equal(got, payload, MIB);
    assert_int_equal(r.stderr_len, BT_STDERR_TAIL);
    for (size_t i = 0; i < BT_STDERR_TAIL; i += 4)
        assert_memory_equal(r.stderr_tail + i, "err\n", 4);
    free(got);

    /* Counting it in the shell as well: exit 0 only when wc saw every byte. */
    s.command = "test \"$(wc -c | tr -d ' ')\" = 1048576";
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0);
    free(payload);
    tmpdir_remove(dir);
}

static void test_stdin_not_read(void **state)
{
    (void)state;
    char *payload = make_payload(MIB);
    bt_command_spec s = spec_for("exit 0");
    s.stdin_data = payload;
    s.stdin_len = MIB;
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0);
    assert_sigpipe_clean();

    /* Closing stdin and then staying busy (1 MB of stderr to drain) makes the caller's
     * pending write fail with EPIPE for certain while the command still runs. */
    s.command = "exec 0<&-; yes x | head -c 1000000 >&2; exit 4";
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 4);
    assert_memory_equal(r.stderr_tail + BT_STDERR_TAIL - 4, "x\nx\n", 4);
    assert_sigpipe_clean();

    /* A caller that keeps SIGPIPE blocked itself gets its mask back as it was. */
    sigset_t pipe_set, mask;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &pipe_set, NULL), 0);
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_int_equal(r.exit_status, 4);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &mask), 0);
    assert_true(sigismember(&mask, SIGPIPE));
    assert_int_equal(sigpending(&mask), 0);
    assert_false(sigismember(&mask, SIGPIPE));
    assert_int_equal(pthread_sigmask(SIG_UNBLOCK, &pipe_set, NULL), 0);
    free(payload);
}

static void test_environment(void **state)
{
    (void)state;
    unsetenv("BATON_JOB_ID");
    setenv("BATON_TEST_OVERRIDE", "old", 1);
    setenv("BATON_TEST_KEEP", "kept", 1);
    const char *cmd = "test \"$BATON_JOB_ID\" = 42 || exit 11; "
                      "test \"$BATON_TEST_OVERRIDE\" = new || exit 12; "
                      "test \"$BATON_TEST_KEEP\" = kept || exit 13; "
                      "test \"$(env | grep -c '^BATON_TEST_OVERRIDE=')\" = 1 || exit 14; "
                      "exit 0";
    char *extra[] = {"BATON_JOB_ID=42", "BATON_TEST_OVERRIDE=new", NULL};
    bt_command_spec s = spec_for(cmd);
    s.env_extra = extra;
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0);

    /* The same check without the extras fails on the first line: the test is not vacuous. */
    s.env_extra = NULL;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_int_equal(r.exit_status, 11);
    /* The caller's own environment is left alone. */
    assert_string_equal(getenv("BATON_TEST_OVERRIDE"), "old");

    char *bad[] = {"NO_EQUALS_SIGN", NULL};
    s.env_extra = bad;
    assert_int_equal(bt_command_run(&s, &r), BATON_EINVALID);
    unsetenv("BATON_TEST_OVERRIDE");
    unsetenv("BATON_TEST_KEEP");
}

static void test_timeout(void **state)
{
    (void)state;
    bt_command_spec s = spec_for("sleep 30");
    s.timeout = 0.3;
    bt_command_result r;
    int64_t t0 = bt_mono_ns();
    assert_int_equal(bt_command_run(&s, &r), 0);
    double took = seconds_since(t0);
    assert_true(r.timed_out);
    assert_false(r.cancelled);
    assert_true(r.signaled);
    assert_int_equal(r.term_signal, SIGTERM);
    assert_true(took >= 0.3);
    assert_true(took < 5);
}

/* Under load the shell may not reach its `trap` before a short timeout fires, and then TERM
 * kills it as it should; these tests need the trap in place, so they retry with a doubled
 * timeout until the command reports that it got that far. */
enum { TRAP_ATTEMPTS = 6 };

static void test_timeout_escalates_to_kill(void **state)
{
    (void)state;
    bt_command_spec s = spec_for("trap '' TERM; echo trapped >&2; sleep 30");
    s.kill_grace = 0.3;
    bt_command_result r;
    int trapped = 0;
    for (int i = 0; i < TRAP_ATTEMPTS && !trapped; i++) {
        s.timeout = 0.3 * (1 << i);
        int64_t t0 = bt_mono_ns();
        assert_int_equal(bt_command_run(&s, &r), 0);
        double took = seconds_since(t0);
        assert_true(r.timed_out);
        assert_true(r.signaled);
        assert_true(took < s.timeout + 5);
        trapped = strstr(r.stderr_tail, "trapped") != NULL;
        if (trapped) {
            /* TERM was ignored: only the KILL after the grace period ended it. */
            assert_int_equal(r.term_signal, SIGKILL);
            assert_true(took >= s.timeout + s.kill_grace);
        }
    }
    assert_true(trapped);
}

static void test_group_killed_after_timeout(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char pidfile[4096];
    snprintf(pidfile, sizeof pidfile, "%s", path_join(dir, "pid"));
    char cmd[4200];
    /* The background shell ignores TERM before it writes its pid (and keeps that pid as
     * sleep), so once the pid file exists only the final sweep of the group can end it. */
    snprintf(cmd, sizeof cmd, "sh -c \"trap '' TERM; echo \\$\\$ > '%s'; exec sleep 60\" & wait",
             pidfile);
    bt_command_spec s = spec_for(cmd);
    s.kill_grace = 10; /* the shell dies of TERM; the 10 s would only pass if we waited on the sleep */
    bt_command_result r;
    int written = 0;
    for (int i = 0; i < TRAP_ATTEMPTS && !written; i++) {
        unlink(pidfile);
        s.timeout = 0.3 * (1 << i);
        int64_t t0 = bt_mono_ns();
        assert_int_equal(bt_command_run(&s, &r), 0);
        assert_true(seconds_since(t0) < s.timeout + 5);
        assert_true(r.timed_out);
        written = pid_file_written(pidfile);
    }
    assert_true(written);
    pid_t pid = read_pid(pidfile);
    assert_true(poll_until(pid_gone, &pid, 5000));
    tmpdir_remove(dir);
}

static void test_group_killed_after_exit(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    const char *pidfile = path_join(dir, "pid");
    char cmd[4200];
    /* The shell exits at once, leaving a sleep that also holds the stderr pipe open: the
     * call must still return promptly, and the sleep must not survive it. */
    snprintf(cmd, sizeof cmd, "sleep 60 & echo $! > '%s'; kill -0 $! || exit 9; exit 0", pidfile);
    bt_command_spec s = spec_for(cmd);
    bt_command_result r;
    int64_t t0 = bt_mono_ns();
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(seconds_since(t0) < 5);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0); /* the sleep was alive when the shell left */
    pid_t pid = read_pid(pidfile);
    assert_true(poll_until(pid_gone, &pid, 5000));
    tmpdir_remove(dir);
}

/* A descendant that left the job's process group and session (setsid) still ends with
 * the job: the shepherd is its subreaper and sweeps what is left. */
static void test_setsid_descendant_killed_after_exit(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    const char *pidfile = path_join(dir, "pid");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "setsid sleep 60 > /dev/null 2>&1 & echo $! > '%s'; sleep 0.2; exit 0", pidfile);
    bt_command_spec s = spec_for(cmd);
    bt_command_result r;
    assert_int_equal(bt_command_run(&s, &r), 0);
    assert_true(r.exited);
    assert_int_equal(r.exit_status, 0);
    pid_t pid = read_pid(pidfile);
    if (!poll_until(pid_gone, &pid, 5000)) {
        kill(pid, SIGKILL);
        fail_msg("the setsid'ed sleep %d outlived its job", (int)pid);
    }
    tmpdir_remove(dir);
}

typedef struct threaded_run {
    bt_command_spec spec;
    bt_command_result res;
    int rc;
    atomic_int cancel;
    atomic_int pgid;
    atomic_int finished;
} threaded_run;

static void *run_in_thread(void *arg)
{
    threaded_run *t = arg;
    t->rc = bt_command_run(&t->spec, &t->res);
    atomic_store(&t->finished, 1);
    return NULL;
}

static int run_finished(void *arg) { return atomic_load(&((threaded_run *)arg)->finished); }

static int pgid_published(void *arg) { return atomic_load(&((threaded_run *)arg)->pgid) != 0; }

static void test_cancel(void **state)
{
    (void)state;
    threaded_run *t = calloc(1, sizeof *t);
    t->spec = spec_for("sleep 30");
    t->spec.cancel = &t->cancel;
    t->spec.pgid_out = &t->pgid;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_in_thread, t), 0);
    assert_true(poll_until(pgid_published, t, 10000));
    pid_t pgid = atomic_load(&t->pgid);
    assert_true(pgid != getpgrp());
    assert_int_equal(kill(-pgid, 0), 0); /* the group exists while it runs */
    int64_t t0 = bt_mono_ns();
    atomic_store(&t->cancel, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(seconds_since(t0) < 3);
    assert_int_equal(t->rc, 0);
    assert_true(t->res.cancelled);
    assert_false(t->res.timed_out);
    assert_true(t->res.signaled);
    assert_int_equal(t->res.term_signal, SIGTERM);
    assert_int_equal(atomic_load(&t->pgid), 0);

    /* Cancelled before it starts: it does not run at all. */
    t->spec.command = "exit 5";
    assert_int_equal(bt_command_run(&t->spec, &t->res), 0);
    assert_true(t->res.cancelled);
    assert_false(t->res.exited);
    free(t);
}

static int file_written(void *path)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* A command that ignores TERM is killed after its grace, and what it started with setsid
 * goes with it: the kill reaches the job through its shepherd, which sweeps every
 * descendant, not only the group. */
static void test_kill_after_grace_sweeps_setsid_descendants(void **state)
{
    (void)state;
#ifdef __SANITIZE_THREAD__
    /* Under ThreadSanitizer the shepherd, a fork of a threaded process, did not run its
     * SIGHUP handler, so only the group kill after SWEEP_NS reached the job. */
    print_message("[  SKIPPED ] the shepherd's sweep on SIGHUP, under ThreadSanitizer\n");
    skip();
#endif
    char *dir = tmpdir_make();
    const char *pidfile = path_join(dir, "pid");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "trap '' TERM; setsid sleep 60 > /dev/null 2>&1 & echo $! > '%s'; while :; do sleep 0.05; done",
             pidfile);
    threaded_run *t = calloc(1, sizeof *t);
    t->spec = spec_for(cmd);
    t->spec.cancel = &t->cancel;
    t->spec.kill_grace = 0.2;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_in_thread, t), 0);
    assert_true(poll_until(file_written, (void *)pidfile, 10000));
    atomic_store(&t->cancel, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(t->res.cancelled);
    assert_true(t->res.signaled);
    pid_t pid = read_pid(pidfile);
    if (!poll_until(pid_gone, &pid, 5000)) {
        kill(pid, SIGKILL);
        fail_msg("the setsid'ed sleep %d outlived its job, killed after its grace", (int)pid);
    }
    free(t);
    tmpdir_remove(dir);
}

/* group_gone tells that no live process is left in the group *arg. */
static int group_gone(void *arg)
{
    pid_t pgid = *(pid_t *)arg;
    char path[64], *text;
    int alive = 0;
    DIR *proc = opendir("/proc");
    for (struct dirent *e; proc && !alive && (e = readdir(proc));) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        if (!(text = read_file(path)))
            continue;
        const char *p = strrchr(text, ')');
        char state = 0;
        int ppid = 0, group = 0;
        if (p && sscanf(p + 1, " %c %d %d", &state, &ppid, &group) == 3)
            alive = group == pgid && state != 'Z';
        free(text);
    }
    if (proc)
        closedir(proc);
    return !alive;
}

/* A command that stops its own shepherd (kill -STOP $PPID) and ignores TERM is still
 * killed once its grace is over: the kill wakes the shepherd, and if it cannot sweep in
 * time, the group goes anyway. */
static void test_kill_reaches_a_stopped_shepherd(void **state)
{
    (void)state;
    threaded_run *t = calloc(1, sizeof *t);
    t->spec = spec_for("trap '' TERM; kill -STOP $PPID; while :; do sleep 0.05; done");
    t->spec.cancel = &t->cancel;
    t->spec.pgid_out = &t->pgid;
    t->spec.kill_grace = 0.2;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_in_thread, t), 0);
    assert_true(poll_until(pgid_published, t, 10000));
    pid_t pgid = atomic_load(&t->pgid);
    bt_sleep(0.3); /* long enough for the command to stop its shepherd: the fault itself */
    atomic_store(&t->cancel, 1);
    if (!poll_until(run_finished, t, 20000)) {
        kill(-pgid, SIGKILL);
        pthread_join(th, NULL);
        fail_msg("the command that stopped its shepherd was never killed");
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(t->res.cancelled);
    /* Gone (or dead, waiting to be reaped), whether its shepherd said "ready" before it
     * was stopped or not. */
    assert_true(poll_until(group_gone, &pgid, 5000));
    free(t);
}

static void test_concurrent_runs(void **state)
{
    (void)state;
    enum { THREADS = 4, LEN = 256 * 1024 };
    char *dir = tmpdir_make();
    char *payload = make_payload(LEN);
    threaded_run *t = calloc(THREADS, sizeof *t);
    char cmds[THREADS][4200];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        char name[32];
        snprintf(name, sizeof name, "out%d", i);
        snprintf(cmds[i], sizeof cmds[i], "cat > '%s'; echo done %d >&2", path_join(dir, name), i);
        t[i].spec = spec_for(cmds[i]);
        t[i].spec.stdin_data = payload;
        t[i].spec.stdin_len = LEN;
        t[i].spec.timeout = 60;
        assert_int_equal(pthread_create(&th[i], NULL, run_in_thread, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(t[i].rc, 0);
        assert_false(t[i].res.timed_out);
        assert_int_equal(t[i].res.exit_status, 0);
        char want[32], name[32];
        snprintf(want, sizeof want, "done %d\n", i);
        assert_string_equal(t[i].res.stderr_tail, want);
        snprintf(name, sizeof name, "out%d", i);
        size_t len = 0;
        char *got = read_bytes(path_join(dir, name), &len);
        assert_int_equal(len, LEN);
        assert_memory_equal(got, payload, LEN);
        free(got);
    }
    free(t);
    free(payload);
    tmpdir_remove(dir);
}

static void test_parent_death_kills_group(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char pidfile[4096];
    snprintf(pidfile, sizeof pidfile, "%s", path_join(dir, "pid"));
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "sleep 60 & echo $! > '%s'; wait", pidfile);
    pid_t worker = fork();
    assert_true(worker >= 0);
    if (worker == 0) {
        bt_command_spec s = spec_for(cmd);
        bt_command_result r;
        bt_command_run(&s, &r);
        _exit(0);
    }
    assert_true(poll_until(pid_file_written, pidfile, 10000));
    pid_t pid = read_pid(pidfile);
    assert_false(pid_gone(&pid)); /* alive while its worker lives */
    assert_int_equal(kill(worker, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(worker, &st, 0), worker);
    assert_true(WIFSIGNALED(st));
    assert_true(poll_until(pid_gone, &pid, 5000));
    tmpdir_remove(dir);
}

static void test_describe(void **state)
{
    (void)state;
    char buf[128];
    bt_command_result r = {0};
    r.exited = 1;
    r.exit_status = 3;
    bt_command_describe(&r, 0, buf, sizeof buf);
    assert_string_equal(buf, "exit status 3");

    r = (bt_command_result){0};
    r.signaled = 1;
    r.term_signal = SIGKILL;
    bt_command_describe(&r, 0, buf, sizeof buf);
    assert_string_equal(buf, "killed by signal 9 (Killed)");

    r.timed_out = 1;
    bt_command_describe(&r, 2, buf, sizeof buf);
    assert_string_equal(buf, "timed out after 2s");
    bt_command_describe(&r, 0.5, buf, sizeof buf);
    assert_string_equal(buf, "timed out after 0.5s");

    r = (bt_command_result){0};
    r.cancelled = 1;
    r.signaled = 1;
    r.term_signal = SIGTERM;
    bt_command_describe(&r, 2, buf, sizeof buf);
    assert_string_equal(buf, "cancelled");

    /* A short buffer is truncated, still terminated. */
    r = (bt_command_result){0};
    r.exited = 1;
    r.exit_status = 3;
    bt_command_describe(&r, 0, buf, 5);
    assert_string_equal(buf, "exit");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_zero),
        cmocka_unit_test(test_exit_status_and_stderr),
        cmocka_unit_test(test_stderr_keeps_last_4k),
        cmocka_unit_test(test_killed_by_signal),
        cmocka_unit_test(test_one_mib_stdin),
        cmocka_unit_test(test_stdin_not_read),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_timeout_escalates_to_kill),
        cmocka_unit_test(test_group_killed_after_timeout),
        cmocka_unit_test(test_group_killed_after_exit),
        cmocka_unit_test(test_setsid_descendant_killed_after_exit),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_kill_after_grace_sweeps_setsid_descendants),
        cmocka_unit_test(test_kill_reaches_a_stopped_shepherd),
        cmocka_unit_test(test_concurrent_runs),
        cmocka_unit_test(test_parent_death_kills_group),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
