/* cmd_run.c: the long-running commands (work, dispatch, schedule, start) and their signals:
 * TERM/INT stop gracefully, a second TERM/INT or a QUIT stops at once, HUP is ignored.
 * `baton perform` takes the same signals to stop its inline job. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

/* What the signal handler stops; set before handlers are installed, cleared before it is
 * freed (lock-free atomics: the handler may read them while the main thread writes). */
static _Atomic(baton_worker *) running_worker;
static _Atomic(baton_dispatcher *) running_dispatcher;
static _Atomic(baton_client *) running_supervisor;
static _Atomic(baton_scheduler *) running_scheduler;
static _Atomic(baton_client *) running_perform;
static atomic_int stop_requests;

static void on_signal(int sig)
{
    int immediate = sig == SIGQUIT || atomic_fetch_add(&stop_requests, 1) > 0;
    baton_worker *w = atomic_load(&running_worker);
    baton_dispatcher *d = atomic_load(&running_dispatcher);
    baton_client *sv = atomic_load(&running_supervisor), *p = atomic_load(&running_perform);
    baton_scheduler *s = atomic_load(&running_scheduler);
    if (w)
        baton_worker_stop(w, immediate);
    if (d)
        baton_dispatcher_stop(d);
    if (sv)
        baton_supervisor_stop(sv, immediate);
    if (s)
        baton_scheduler_stop(s);
    if (p)
        baton_perform_stop(p);
}

/* More threads than this would only wait on the database and each other. */
enum { WORKER_THREADS_MAX = 1024 };

static void install_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    /* A hangup (the terminal closed, `systemctl reload`) must not kill a process midway,
     * leaving its row and claims to age out: baton.yml is read at start only, so HUP is
     * ignored (commands start with every signal at its default). */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
}

void cli_stop_perform_on_signals(baton_client *client)
{
    running_perform = client;
    install_handlers();
}

static double shutdown_timeout(cli *c, double *out)
{
    const baton_worker_options defaults = BATON_WORKER_OPTIONS_INIT;
    *out = defaults.shutdown_timeout;
    return cli_double(c, "shutdown-timeout", 0, out);
}

int cmd_work(cli *c)
{
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    long long threads = o.threads;
    if (cli_int(c, "threads", 1, WORKER_THREADS_MAX, &threads) || cli_double(c, "polling-interval", 0.001, &o.polling_interval) ||
        shutdown_timeout(c, &o.shutdown_timeout))
        return EXIT_USAGE;
    o.threads = (int)threads;
    if (cli_value(c, "queues"))
        o.queues = cli_value(c, "queues");
    baton_worker *w;
    int rc = baton_worker_new(&w, c->client, &o);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    running_worker = w;
    install_handlers();
    rc = baton_worker_run(w);
    running_worker = NULL; /* before the free: a late signal must find nothing to stop */
    baton_worker_free(w);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_dispatch(cli *c)
{
    baton_dispatcher_options o = BATON_DISPATCHER_OPTIONS_INIT;
    long long batch = o.batch_size;
    if (cli_double(c, "polling-interval", 0.001, &o.polling_interval) || cli_int(c, "batch-size", 1, INT_MAX, &batch))
        return EXIT_USAGE;
    o.batch_size = (int)batch;
    baton_dispatcher *d;
    int rc = baton_dispatcher_new(&d, c->client, &o);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    running_dispatcher = d;
    install_handlers();
    rc = baton_dispatcher_run(d);
    running_dispatcher = NULL; /* before the free: a late signal must find nothing to stop */
    baton_dispatcher_free(d);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_schedule(cli *c)
{
    baton_scheduler_options o = BATON_SCHEDULER_OPTIONS_INIT; /* 0: baton.yml's, else 5 s */
    if (cli_double(c, "polling-interval", 0.001, &o.polling_interval))
        return EXIT_USAGE;
    baton_scheduler *s;
    int rc = baton_scheduler_new(&s, c->client, &o);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    running_scheduler = s;
    install_handlers();
    rc = baton_scheduler_run(s);
    running_scheduler = NULL; /* before the free: a late signal must find nothing to stop */
    baton_scheduler_free(s);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_start(cli *c)
{
    baton_supervisor_options o = BATON_SUPERVISOR_OPTIONS_INIT;
    if (cli_value(c, "shutdown-timeout") && cli_double(c, "shutdown-timeout", 0, &o.shutdown_timeout))
        return EXIT_USAGE;
    o.only = cli_value(c, "only");
    o.pidfile = cli_value(c, "pidfile");
    o.set_titles = 1;
    running_supervisor = c->client;
    install_handlers();
    int rc = baton_supervise(c->client, &o);
    running_supervisor = NULL;
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}
