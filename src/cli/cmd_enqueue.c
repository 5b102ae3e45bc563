/* cmd_enqueue.c: baton enqueue and baton perform. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static char *read_stream(FILE *f)
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
                return NULL;
            }
            buf = grown;
        }
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

char *cli_read_args(const char *value)
{
    if (!value)
        return strdup("[]");
    if (strcmp(value, "-") == 0)
        return read_stream(stdin);
    if (value[0] == '@') {
        FILE *f = fopen(value + 1, "rb");
        if (!f) {
            cli_fail(BATON_EINVALID, "--args %s: cannot read: %s", value, strerror(errno));
            return NULL;
        }
        char *text = read_stream(f);
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
    if (cli_int(c, "priority", -2147483647LL, &priority) != 0)
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
    char *args = cli_read_args(cli_value(c, "args"));
    if (!args)
        return EXIT_USAGE;
    int64_t id;
    int rc = baton_enqueue(c->client, &id, c->args[0], args, &o);
    free(args);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    printf("%lld\n", (long long)id);
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
    int64_t id = 0;
    int rc = baton_perform_now(c->client, &id, c->args[0], args);
    free(args);
    if (id)
        printf("%lld\n", (long long)id);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}
