/* command.h: runs a job's shell command in a process group of its own.
 *
 * The command runs as `/bin/sh -c COMMAND` under a small shepherd process that leads a new
 * process group and dies with the thread that started it (PR_SET_PDEATHSIG), taking the
 * whole group with it: a command job never outlives its worker, even after SIGKILL. */
#ifndef BT_COMMAND_H
#define BT_COMMAND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { BT_STDERR_TAIL = 4096 };

typedef struct bt_command_spec {
    const char *command;     /* run with /bin/sh -c */
    const char *stdin_data;  /* written to the command's stdin, then stdin is closed */
    size_t stdin_len;
    char *const *env_extra;  /* "NAME=value" entries added to (or replacing in) environ; NULL-terminated, may be NULL */
    double timeout;          /* seconds; 0 = none. On expiry: TERM to the group, KILL after kill_grace */
    double kill_grace;       /* seconds between TERM and KILL; 0 means 5 */
    atomic_int *cancel;      /* may be NULL; once nonzero the group is stopped as on timeout
                                (TERM, then KILL after kill_grace), at once when it is 2 */
    atomic_int *pgid_out;    /* may be NULL; receives the process group id while it runs, then 0 */
    /* The dead man's switch (may be NULL): the shepherd kills the group once CLOCK_MONOTONIC
     * passes *alive_ns + alive_limit_ns, whether or not the worker runs (a stopped worker
     * cannot fence its jobs). *alive_ns must be in memory the shepherd shares (MAP_SHARED). */
    const _Atomic int64_t *alive_ns;
    int64_t alive_limit_ns;
} bt_command_spec;

typedef struct bt_command_result {
    int exited;           /* 1 when the command exited; exit_status holds its code */
    int exit_status;
    int signaled;         /* 1 when it was killed by a signal; term_signal holds it */
    int term_signal;
    int timed_out;        /* 1 when it was stopped because the timeout passed */
    int cancelled;        /* 1 when it was stopped because *cancel became nonzero */
    int not_started;      /* 1 when bt_command_run failed before the command could start,
                             for want of descriptors, memory or processes (not the job's fault) */
    size_t stderr_len;    /* bytes in stderr_tail */
    char stderr_tail[BT_STDERR_TAIL + 1]; /* the last 4 KiB of stderr, NUL-terminated */
} bt_command_result;

/* bt_command_run runs spec->command to completion and fills *res. Returns 0 when the
 * command ran (whatever its outcome), or a negative baton_error_code with bt_err_set()
 * when it could not be started (res->not_started says when that was the machine's doing
 * rather than the spec's). Thread-safe: any number of threads may run commands. */
int bt_command_run(const bt_command_spec *spec, bt_command_result *res);

/* bt_command_kill ends at once the running command whose group is pgid (as published in
 * *spec->pgid_out; 0 does nothing): everything it started goes, what left its group or
 * session (setsid) too. Async-signal-safe; bt_command_run returns once it is all gone. */
void bt_command_kill(int pgid);

/* bt_command_describe writes a one-line summary of a failed result ("exit status 3",
 * "killed by signal 9 (Killed)", "timed out after 2s") into buf. */
void bt_command_describe(const bt_command_result *res, double timeout, char *buf, size_t len);

#endif
