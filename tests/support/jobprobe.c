/* jobprobe.c: a command job that records when it runs, for the concurrency tests.
 *
 * usage: jobprobe LOGFILE MILLISECONDS
 *
 * Appends to LOGFILE, each line with one write() on an O_APPEND descriptor so that lines
 * of concurrent probes never interleave:
 *   KEY JOB_ID ATTEMPT start T PID TOKEN WORKER_PID
 *   KEY JOB_ID ATTEMPT tick T        (every ~5 ms while it runs)
 *   KEY JOB_ID ATTEMPT end T         (when MILLISECONDS have passed)
 * KEY, JOB_ID, ATTEMPT and TOKEN come from BATON_CONCURRENCY_KEY, BATON_JOB_ID,
 * BATON_ATTEMPT and BATON_FENCING_TOKEN; T is CLOCK_MONOTONIC in nanoseconds, the same
 * clock for every process of the machine. A probe killed mid-run leaves its last tick as
 * the proof of how long it ran. WORKER_PID is the parent of the process group's leader
 * (Baton's shepherd), i.e. the worker that runs the job, or 0 when unknown.
 * Standalone: uses no Baton code. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { TICK_NS = 5 * 1000 * 1000 };

static int log_fd = -1;
static char prefix[256];

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* say appends "PREFIX WHAT T[ EXTRA]\n"; a failed write fails the job. */
static void say(const char *what, long long t, const char *extra)
{
    char line[512];
    int n = snprintf(line, sizeof line, "%s %s %lld%s%s\n", prefix, what, t, extra ? " " : "",
                     extra ? extra : "");
    if (n < 0 || n >= (int)sizeof line || write(log_fd, line, (size_t)n) != n)
        exit(3);
}

/* The worker: our group is led by the shepherd Baton forked, whose parent is the worker. */
static long worker_pid(void)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)getpgrp());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
    char state;
    long ppid;
    return p && sscanf(p + 1, " %c %ld", &state, &ppid) == 2 ? ppid : 0;
}

int main(int argc, char **argv)
{
    char *end = NULL;
    long ms = argc == 3 ? strtol(argv[2], &end, 10) : -1;
    if (argc != 3 || !end || *end || ms < 0) {
        fprintf(stderr, "usage: jobprobe LOGFILE MILLISECONDS\n");
        return 2;
    }
    log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        perror(argv[1]);
        return 3;
    }
    snprintf(prefix, sizeof prefix, "%s %s %s", env_or("BATON_CONCURRENCY_KEY", "-"),
             env_or("BATON_JOB_ID", "0"), env_or("BATON_ATTEMPT", "0"));
    long long start = mono_ns(), stop = start + ms * 1000000LL;
    char extra[96];
    snprintf(extra, sizeof extra, "%d %s %ld", (int)getpid(), env_or("BATON_FENCING_TOKEN", "0"),
             worker_pid());
    say("start", start, extra);
    for (long long now = mono_ns(); now < stop; now = mono_ns()) {
        long long nap = stop - now < TICK_NS ? stop - now : TICK_NS;
        struct timespec ts = {(time_t)(nap / 1000000000LL), (long)(nap % 1000000000LL)};
        nanosleep(&ts, NULL);
        long long t = mono_ns();
        if (t < stop)
            say("tick", t, NULL);
    }
    say("end", mono_ns(), NULL);
    return 0;
}
