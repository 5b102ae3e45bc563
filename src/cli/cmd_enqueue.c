/* cmd_enqueue.c: baton enqueue and baton perform. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* read_stream reads the arguments from f (named what in errors) whole. JSON text holds no
 * NUL byte: one would cut the stored arguments short, so it is refused. */
static char *read_stream(FILE *f, const char *what)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
        }
    }
    if (!buf) {
        cli_fail(BATON_ERROR, "--args %s: out of memory", what);
    } else if (ferror(f)) {
        cli_fail(BATON_EINVALID, "--args %s: cannot read: %s", what, strerror(errno));
    } else if (memchr(buf, '\0', len)) {
        cli_fail(BATON_EINVALID, "--args %s: holds a NUL byte, which JSON text never does", what);
    } else {
        buf[len] = '\0';
        return buf;
    }
    free(buf);
    return NULL;
}

char *cli_read_args(const char *value)
{
    if (!value)
        return strdup("[]");
    if (strcmp(value, "-") == 0)
        return read_stream(stdin, value);
    if (value[0] == '@') {
        FILE *f = fopen(value + 1, "rb");
        if (!f) {
            cli_fail(BATON_EINVALID, "--args %s: cannot read: %s", value, strerror(errno));
            return NULL;
        }
        char *text = read_stream(f, value);
        fclose(f);
        return text;
    }
    return strdup(value);
}

static int need_class(cli *c, const char *what)
{
    if (c->nargs != 1)
        return cli_fail(BATON_EINVALID, "usage: baton %s CLASS [--args JSON]", what);
    return EXIT_OK;
}

int cmd_enqueue(cli *c)
{
    int status = need_class(c, "enqueue");
    if (status != EXIT_OK)
        return status;
    baton_enqueue_options o = BATON_ENQUEUE_OPTIONS_INIT;
    o.queue = cli_value(c, "queue");
    long long priority;
    if (cli_int(c, "priority", -INT_MAX, INT_MAX, &priority) != 0)
        return EXIT_USAGE;
    if (cli_value(c, "priority")) {
        o.has_priority = 1;
        o.priority = (int)priority;
    }
    const char *at = cli_value(c, "at");
    if (at && cli_value(c, "in"))
        return cli_fail(BATON_EINVALID, "give --at or --in, not both");
    if (at) {
        if (baton_parse_time(at, &o.run_at_ms) != BATON_OK)
            return cli_fail_last(BATON_EINVALID);
    }
    if (cli_double(c, "in", 0, &o.delay) != 0)
        return EXIT_USAGE;
    long long limit = 0;
    if (cli_int(c, "limit", 1, INT_MAX, &limit) || cli_double(c, "duration", 0.001, &o.concurrency_duration))
        return EXIT_USAGE;
    o.concurrency_limit = (int)limit;
    o.concurrency_key = cli_value(c, "concurrency-key");
    const char *mode = cli_value(c, "on-conflict");
    if (mode) {
        static const char *const modes[] = {"block", "discard", "coalesce"};
        for (int i = 0; i < 3; i++)
            if (strcmp(mode, modes[i]) == 0)
                o.on_conflict = i;
        if (o.on_conflict < 0)
            return cli_fail(BATON_EINVALID, "--on-conflict: expected block, discard or coalesce, got '%s'", mode);
    }
    char *args = cli_read_args(cli_value(c, "args"));
    if (!args)
        return EXIT_USAGE;
    baton_job_spec spec = {c->args[0], args, &o};
    baton_enqueued e;
    int rc = baton_enqueue_detailed(c->client, &e, &spec, 1);
    free(args);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    printf("%lld\n", (long long)e.id);
    if (e.coalesced_into)
        fprintf(stderr, "baton: job %lld discarded: coalesced into job %lld\n", (long long)e.id,
                (long long)e.coalesced_into);
    else if (e.state == BATON_JOB_DISCARDED)
        fprintf(stderr, "baton: job %lld discarded: concurrency limit\n", (long long)e.id);
    return EXIT_OK;
}

int cmd_perform(cli *c)
{
    int status = need_class(c, "perform");
    if (status != EXIT_OK)
        return status;
    char *args = cli_read_args(cli_value(c, "args"));
    if (!args)
        return EXIT_USAGE;
    double wait_timeout = 60;
    if (cli_double(c, "wait-timeout", 0, &wait_timeout)) {
        free(args);
        return EXIT_USAGE;
    }
    int64_t id = 0;
    cli_stop_perform_on_signals(c->client);
    int rc = baton_perform_wait(c->client, &id, c->args[0], args, wait_timeout);
    free(args);
    if (id)
        printf("%lld\n", (long long)id);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}
