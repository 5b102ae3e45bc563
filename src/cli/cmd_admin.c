/* cmd_admin.c: init, retry, discard, clear-finished, pause, resume, unblock, semaphore clear,
 * and adding and removing recurring tasks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int cmd_init(cli *c)
{
    int rc = baton_migrate(c->client);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    printf("%s: schema version %d\n", baton_client_display_url(c->client), baton_schema_version());
    return EXIT_OK;
}

int cmd_retry(cli *c)
{
    if (cli_flag(c, "all-failed")) {
        if (c->nargs)
            return cli_fail(BATON_EINVALID, "give a job id or --all-failed, not both");
        int64_t count;
        int rc = baton_retry_all_failed(c->client, cli_value(c, "class"), &count);
        if (rc != BATON_OK)
            return cli_fail_last(rc);
        printf("%lld\n", (long long)count);
        return EXIT_OK;
    }
    if (cli_value(c, "class"))
        return cli_fail(BATON_EINVALID, "--class goes with --all-failed");
    int64_t id;
    if (cli_job_id(c, "retry ID | --all-failed [--class C]", &id))
        return EXIT_USAGE;
    int rc = baton_job_retry(c->client, id);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_discard(cli *c)
{
    int64_t id;
    if (cli_job_id(c, "discard ID", &id))
        return EXIT_USAGE;
    int rc = baton_job_discard(c->client, id);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_clear_finished(cli *c)
{
    double older_than = 86400;
    if (cli_double(c, "older-than", 0, &older_than))
        return EXIT_USAGE;
    int64_t count;
    int rc = baton_clear_finished(c->client, older_than, &count);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    printf("%lld\n", (long long)count);
    return EXIT_OK;
}

static int pause_or_resume(cli *c, int pause)
{
    if (c->nargs != 1)
        return cli_fail(BATON_EINVALID, "usage: baton %s QUEUE", pause ? "pause" : "resume");
    int rc = pause ? baton_queue_pause(c->client, c->args[0]) : baton_queue_resume(c->client, c->args[0]);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_pause(cli *c) { return pause_or_resume(c, 1); }
int cmd_resume(cli *c) { return pause_or_resume(c, 0); }

int cmd_unblock(cli *c)
{
    const char *key = cli_value(c, "key");
    if (key) {
        if (c->nargs)
            return cli_fail(BATON_EINVALID, "baton unblock takes a job id or --key, not both");
        int promoted = 0;
        int rc = baton_unblock_key(c->client, key, &promoted);
        if (rc != BATON_OK)
            return cli_fail_last(rc);
        printf("%d job%s of %s admitted\n", promoted, promoted == 1 ? "" : "s", key);
        return EXIT_OK;
    }
    int64_t id;
    if (cli_job_id(c, "unblock JOB_ID [--force] | --key K", &id))
        return EXIT_USAGE;
    int over = 0;
    int rc = baton_unblock(c->client, id, cli_flag(c, "force"), &over);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    printf("job %lld admitted\n", (long long)id);
    if (over)
        fprintf(stderr, "baton: job %lld was admitted past its key's limit (--force)\n", (long long)id);
    return EXIT_OK;
}

int cmd_semaphore(cli *c)
{
    if (c->nargs != 2 || strcmp(c->args[0], "clear") != 0)
        return cli_fail(BATON_EINVALID, "usage: baton semaphore clear KEY [--force]");
    int cleared = 0, promoted = 0;
    int rc = baton_semaphore_clear(c->client, c->args[1], cli_flag(c, "force"), &cleared, &promoted);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    printf("%s: %d slot%s cleared, %d blocked job%s admitted\n", c->args[1], cleared, cleared == 1 ? "" : "s",
           promoted, promoted == 1 ? "" : "s");
    return EXIT_OK;
}

int cmd_recurring_add(cli *c)
{
    static const char *const add_opts[] = {"class", "schedule", "args", "queue", "priority", "timezone",
                                           "description", NULL};
    if (cli_reject_options(c, add_opts, "baton recurring add"))
        return EXIT_USAGE;
    if (c->nargs != 2 || !cli_value(c, "class") || !cli_value(c, "schedule"))
        return cli_fail(BATON_EINVALID, "usage: baton recurring add KEY --class C --schedule CRON [--args JSON]"
                                        " [--queue Q] [--priority N] [--timezone TZ] [--description TEXT]");
    baton_recurring_options o = BATON_RECURRING_OPTIONS_INIT;
    o.queue = cli_value(c, "queue");
    o.timezone = cli_value(c, "timezone");
    o.description = cli_value(c, "description");
    long long priority;
    if (cli_int(c, "priority", -INT_MAX, INT_MAX, &priority) != 0)
        return EXIT_USAGE;
    if (cli_value(c, "priority")) {
        o.has_priority = 1;
        o.priority = (int)priority;
    }
    char *args = cli_read_args(cli_value(c, "args"));
    if (!args)
        return EXIT_USAGE;
    int rc = baton_recurring_add(c->client, c->args[1], cli_value(c, "class"), cli_value(c, "schedule"),
                                 args, &o);
    free(args);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}

int cmd_recurring_remove(cli *c)
{
    static const char *const no_options[] = {NULL};
    if (cli_reject_options(c, no_options, "baton recurring remove"))
        return EXIT_USAGE;
    if (c->nargs != 2)
        return cli_fail(BATON_EINVALID, "usage: baton recurring remove KEY");
    int rc = baton_recurring_remove(c->client, c->args[1]);
    return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
}
