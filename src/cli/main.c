/* main.c: global options, command dispatch and the exit-code contract
 * (0 ok, 1 error, 2 bad usage or bad input, 3 not found). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static const char *const no_opts[] = {NULL};
static const char *const enqueue_opts[] = {"args=", "queue=", "priority=", "at=", "in=", "concurrency-key=",
                                           "limit=", "duration=", "on-conflict=", NULL};
static const char *const perform_opts[] = {"args=", "wait-timeout=", NULL};
static const char *const work_opts[] = {"queues=", "threads=", "polling-interval=", "shutdown-timeout=", NULL};
static const char *const dispatch_opts[] = {"polling-interval=", "batch-size=", NULL};
static const char *const schedule_opts[] = {"polling-interval=", NULL};
static const char *const start_opts[] = {"shutdown-timeout=", "only=", "pidfile=", NULL};
static const char *const jobs_opts[] = {"status=", "class=", "queue=", "key=", "limit=", "json", NULL};
static const char *const semaphores_opts[] = {"expired", "key=", "json", NULL};
static const char *const json_opts[] = {"json", NULL};
static const char *const blocked_opts[] = {"class=", "key=", "json", NULL};
static const char *const unblock_opts[] = {"force", "key=", NULL};
static const char *const force_opts[] = {"force", NULL};
static const char *const doctor_opts[] = {"repair", "json", NULL};
static const char *const stats_opts[] = {"class=", "since=", "json", NULL};
static const char *const running_opts[] = {"class=", "longer-than=", "json", NULL};
static const char *const retry_opts[] = {"all-failed", "class=", NULL};
static const char *const clear_opts[] = {"older-than=", NULL};
static const char *const recurring_opts[] = {"json", "class=", "schedule=", "args=", "queue=", "priority=",
                                             "timezone=", "description=", NULL};

static const cli_command commands[] = {
    {"init", no_opts, "init", 0, cmd_init},
    {"enqueue", enqueue_opts, "enqueue CLASS [--args JSON|-|@FILE] [--queue Q] [--priority N] [--at ISO8601 | --in SECONDS]\n"
                              "                [--concurrency-key K] [--limit N] [--duration S] [--on-conflict block|discard|coalesce]", CLI_SCHEMA | CLI_ARGS, cmd_enqueue},
    {"perform", perform_opts, "perform CLASS [--args JSON|-|@FILE] [--wait-timeout S]", CLI_SCHEMA | CLI_ARGS, cmd_perform},
    {"work", work_opts, "work [--queues LIST] [--threads N] [--polling-interval S] [--shutdown-timeout S]", CLI_SCHEMA, cmd_work},
    {"dispatch", dispatch_opts, "dispatch [--polling-interval S] [--batch-size N]", CLI_SCHEMA, cmd_dispatch},
    {"schedule", schedule_opts, "schedule [--polling-interval S]", CLI_SCHEMA, cmd_schedule},
    {"start", start_opts, "start [--only workers,dispatchers,scheduler] [--pidfile FILE] [--shutdown-timeout S]", CLI_SCHEMA, cmd_start},
    {"jobs", jobs_opts, "jobs [--status S] [--class C] [--queue Q] [--key K] [--limit N] [--json]", CLI_SCHEMA, cmd_jobs},
    {"job", json_opts, "job ID [--json]", CLI_SCHEMA | CLI_ARGS, cmd_job},
    {"retry", retry_opts, "retry ID | --all-failed [--class C]", CLI_SCHEMA | CLI_ARGS, cmd_retry},
    {"discard", no_opts, "discard ID", CLI_SCHEMA | CLI_ARGS, cmd_discard},
    {"clear-finished", clear_opts, "clear-finished [--older-than SECONDS]", CLI_SCHEMA, cmd_clear_finished},
    {"pause", no_opts, "pause QUEUE", CLI_SCHEMA | CLI_ARGS, cmd_pause},
    {"resume", no_opts, "resume QUEUE", CLI_SCHEMA | CLI_ARGS, cmd_resume},
    {"queues", json_opts, "queues [--json]", CLI_SCHEMA, cmd_queues},
    {"semaphores", semaphores_opts, "semaphores [--expired] [--key K] [--json]", CLI_SCHEMA, cmd_semaphores},
    {"blocked", blocked_opts, "blocked [--class C] [--key K] [--json]", CLI_SCHEMA, cmd_blocked},
    {"running", running_opts, "running [--longer-than SECONDS] [--class C] [--json]", CLI_SCHEMA, cmd_running},
    {"processes", json_opts, "processes [--json]", CLI_SCHEMA, cmd_processes},
    {"unblock", unblock_opts, "unblock JOB_ID [--force] | --key K", CLI_SCHEMA | CLI_ARGS, cmd_unblock},
    {"semaphore", force_opts, "semaphore clear KEY [--force]", CLI_SCHEMA | CLI_ARGS, cmd_semaphore},
    {"doctor", doctor_opts, "doctor [--repair] [--json]", CLI_SCHEMA, cmd_doctor},
    {"stats", stats_opts, "stats [--class C] [--since SECONDS] [--json]", CLI_SCHEMA, cmd_stats},
    {"metrics", no_opts, "metrics", CLI_SCHEMA, cmd_metrics},
    {"top", no_opts, "top", CLI_SCHEMA, cmd_top},
    {"recurring", recurring_opts, "recurring [--json]\n"
                                  "  baton recurring add KEY --class C --schedule CRON [--args JSON|-|@FILE] [--queue Q] [--priority N]\n"
                                  "                [--timezone TZ] [--description TEXT]\n"
                                  "  baton recurring remove KEY", CLI_SCHEMA | CLI_ARGS, cmd_recurring},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *out)
{
    fprintf(out, "usage: baton [--db URL] [--config FILE] [--log-level debug|info|warn|error]\n"
                 "             [--log-format logfmt|json] COMMAND ...\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  baton %s\n", commands[i].usage);
    fprintf(out, "\nDatabase: --db, else $BATON_DATABASE_URL, else sqlite:baton.db.\n"
                 "Config: --config, else $BATON_CONFIG, else ./baton.yml when present.\n");
}

const char *cli_value(const cli *c, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < c->nopts; i++)
        if (strcmp(c->opts[i].name, name) == 0)
            v = c->opts[i].value; /* the last occurrence wins */
    return v;
}

int cli_flag(const cli *c, const char *name)
{
    for (size_t i = 0; i < c->nopts; i++)
        if (strcmp(c->opts[i].name, name) == 0)
            return 1;
    return 0;
}

int cli_int(const cli *c, const char *name, long long min, long long max, long long *out)
{
    const char *v = cli_value(c, name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max) {
        cli_fail(BATON_EINVALID, "--%s: expected an integer from %lld to %lld, got '%s'", name, min, max, v);
        return -1;
    }
    *out = n;
    return 0;
}

int cli_double(const cli *c, const char *name, double min, double *out)
{
    const char *v = cli_value(c, name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= min) || !(d <= BATON_SECONDS_MAX)) {
        cli_fail(BATON_EINVALID, "--%s: expected seconds from %g to %.0e, got '%s'", name, min, BATON_SECONDS_MAX, v);
        return -1;
    }
    *out = d;
    return 0;
}

int cli_reject_options(const cli *c, const char *const *allowed, const char *what)
{
    for (size_t i = 0; i < c->nopts; i++) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, c->opts[i].name) != 0)
            a++;
        if (!*a) {
            cli_fail(BATON_EINVALID, "option '--%s' does not go with '%s'", c->opts[i].name, what);
            return -1;
        }
    }
    return 0;
}

int cli_job_id(cli *c, const char *usage, int64_t *id)
{
    if (c->nargs != 1) {
        cli_fail(BATON_EINVALID, "usage: baton %s", usage);
        return -1;
    }
    char *end;
    errno = 0;
    long long v = strtoll(c->args[0], &end, 10);
    if (errno || *end || end == c->args[0] || v <= 0) {
        cli_fail(BATON_EINVALID, "job id must be a positive integer, got '%s'", c->args[0]);
        return -1;
    }
    *id = v;
    return 0;
}

static int exit_code_for(int code)
{
    switch (code) {
    case BATON_OK: return EXIT_OK;
    case BATON_EINVALID: return EXIT_USAGE;
    case BATON_ENOTFOUND: return EXIT_NOT_FOUND;
    default: return EXIT_ERROR;
    }
}

int cli_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("baton: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return exit_code_for(code);
}

int cli_fail_last(int code) { return cli_fail(code, "%s", baton_error_last()); }

void cli_print_json(const char *text) { printf("%s\n", text); }

/* Indexed by baton_log_level and baton_log_format. */
static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const format_names[] = {"logfmt", "json"};

/* write_line writes a line made by asprintf (n < 0: none was) and frees it. One write
 * per line: lines from several threads never interleave. */
static void write_line(char *buf, int n)
{
    if (n < 0)
        return;
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
    free(buf);
}

/* logfmt lines get the time, level and pid in front. */
static void log_logfmt_to_stderr(baton_log_level level, const char *line, void *payload)
{
    (void)payload;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char *buf;
    int n = asprintf(&buf, "time=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s pid=%d %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], (int)getpid(), line);
    write_line(buf, n);
}

/* JSON lines carry the time and level already. */
static void log_json_to_stderr(baton_log_level level, const char *line, void *payload)
{
    (void)level;
    (void)payload;
    char *buf;
    int n = asprintf(&buf, "%s\n", line);
    write_line(buf, n);
}

/* parse_choice finds v among names; -1 when it is none of them. */
static int parse_choice(const char *v, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0)
            return i;
    return -1;
}

static int accepts(const cli_command *cmd, const char *name, int *takes_value)
{
    for (const char *const *o = cmd->options; *o; o++) {
        size_t len = strlen(*o);
        int valued = (*o)[len - 1] == '=';
        if (strlen(name) == len - (size_t)valued && strncmp(*o, name, len - (size_t)valued) == 0) {
            *takes_value = valued;
            return 1;
        }
    }
    return 0;
}

enum { PARSE_OK = 0, PARSE_DONE = 1, PARSE_BAD = -1 };

/* parse splits argv into the command, its positional arguments and its options; global
 * options may stand anywhere. Returns PARSE_BAD (after printing) on bad usage, PARSE_DONE
 * when --help or --version answered already. */
static int parse(int argc, char **argv, cli *c, const cli_command **cmd_out)
{
    c->args = calloc((size_t)argc, sizeof *c->args);
    c->opts = calloc((size_t)argc, sizeof *c->opts);
    const cli_command *cmd = NULL;
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        /* "-1" is a (bad) job id or number, not an option named "1". */
        int number = a[0] == '-' && a[1] >= '0' && a[1] <= '9';
        if (only_positional || a[0] != '-' || strcmp(a, "-") == 0 || number) {
            if (!cmd) {
                for (size_t k = 0; k < NCOMMANDS && !cmd; k++)
                    if (strcmp(commands[k].name, a) == 0)
                        cmd = &commands[k];
                if (!cmd) {
                    cli_fail(BATON_EINVALID, "unknown command '%s' (see 'baton --help')", a);
                    return PARSE_BAD;
                }
                c->command = cmd->name;
            } else {
                c->args[c->nargs++] = a;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = 1;
            continue;
        }
        const char *name = a + (a[1] == '-' ? 2 : 1);
        const char *eq = strchr(name, '=');
        char *key = eq ? strndup(name, (size_t)(eq - name)) : strdup(name);
        const char *value = eq ? eq + 1 : NULL;
        int global = strcmp(key, "db") == 0 || strcmp(key, "config") == 0 ||
                     strcmp(key, "log-level") == 0 || strcmp(key, "log-format") == 0;
        int takes_value = global;
        if (!global && !(cmd && accepts(cmd, key, &takes_value))) {
            int help = strcmp(key, "help") == 0 || strcmp(key, "h") == 0;
            if (help || strcmp(key, "version") == 0) {
                if (help)
                    usage(stdout);
                else
                    printf("baton 0.1.0 (schema %d)\n", baton_schema_version());
                free(key);
                return PARSE_DONE;
            }
            cli_fail(BATON_EINVALID, "unknown option '--%s'%s%s", key, cmd ? " for baton " : "",
                     cmd ? cmd->name : "");
            free(key);
            return PARSE_BAD;
        }
        if (takes_value && !value) {
            if (i + 1 >= argc) {
                cli_fail(BATON_EINVALID, "option '--%s' needs a value", key);
                free(key);
                return PARSE_BAD;
            }
            value = argv[++i];
        } else if (!takes_value && value) {
            cli_fail(BATON_EINVALID, "option '--%s' takes no value", key);
            free(key);
            return PARSE_BAD;
        }
        /* An empty value names nothing (a file, a URL, a filter that matches no row);
         * only a description may be empty. */
        if (value && !*value && strcmp(key, "description") != 0) {
            cli_fail(BATON_EINVALID, "option '--%s' must not be empty", key);
            free(key);
            return PARSE_BAD;
        }
        if (strcmp(key, "db") == 0) {
            c->db_url = value;
        } else if (strcmp(key, "config") == 0) {
            c->config_path = value;
        } else if (strcmp(key, "log-level") == 0) {
            int level = parse_choice(value, level_names, 4);
            if (level < 0) {
                cli_fail(BATON_EINVALID, "--log-level: expected debug, info, warn or error, got '%s'", value);
                free(key);
                return PARSE_BAD;
            }
            c->log_level = (baton_log_level)level;
        } else if (strcmp(key, "log-format") == 0) {
            int format = parse_choice(value, format_names, 2);
            if (format < 0) {
                cli_fail(BATON_EINVALID, "--log-format: expected logfmt or json, got '%s'", value);
                free(key);
                return PARSE_BAD;
            }
            c->log_format = (baton_log_format)format;
        } else {
            /* Keys stay allocated for the process's life, like argv itself. */
            c->opts[c->nopts++] = (cli_opt){key, value};
            continue;
        }
        free(key);
    }
    if (!cmd) {
        usage(stderr);
        return PARSE_BAD;
    }
    *cmd_out = cmd;
    return PARSE_OK;
}

static void free_cli(cli *c)
{
    free(c->args);
    for (size_t i = 0; i < c->nopts; i++)
        free((char *)c->opts[i].name);
    free(c->opts);
}

int main(int argc, char **argv)
{
    cli c = {0};
    c.log_level = BATON_LOG_INFO;
    const cli_command *cmd = NULL;
    int parsed = parse(argc, argv, &c, &cmd);
    if (parsed != PARSE_OK) {
        free_cli(&c);
        return parsed == PARSE_DONE ? EXIT_OK : EXIT_USAGE;
    }
    if (!c.db_url)
        c.db_url = getenv("BATON_DATABASE_URL");
    if (!c.db_url || !*c.db_url)
        c.db_url = "sqlite:baton.db";
    if (!c.config_path) {
        const char *env = getenv("BATON_CONFIG");
        if (env && *env)
            c.config_path = env;
        else if (access("baton.yml", F_OK) == 0)
            c.config_path = "baton.yml";
    }
    if (c.nargs && !(cmd->flags & CLI_ARGS)) {
        cli_fail(BATON_EINVALID, "baton %s takes no arguments", cmd->name);
        free_cli(&c);
        return EXIT_USAGE;
    }
    int rc = baton_open(&c.client, c.db_url);
    if (rc == BATON_OK && (cmd->flags & CLI_SCHEMA))
        rc = baton_check_schema(c.client);
    if (rc == BATON_OK)
        rc = baton_load_config(c.client, c.config_path);
    int status;
    if (rc != BATON_OK) {
        status = cli_fail_last(rc);
    } else {
        baton_set_log_format(c.client, c.log_format);
        baton_set_logger(c.client, c.log_level,
                         c.log_format == BATON_LOG_JSON ? log_json_to_stderr : log_logfmt_to_stderr, NULL);
        status = cmd->run(&c);
    }
    baton_close(c.client);
    free_cli(&c);
    return status;
}
