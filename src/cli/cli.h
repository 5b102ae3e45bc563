/* cli.h: the baton command line. Commands use only the public API (baton.h), so every
 * need of the CLI is a need any program linking libbaton can meet too. */
#ifndef BT_CLI_H
#define BT_CLI_H

#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "baton.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_NOT_FOUND = 3 };

/* Parsed command line: global options plus the command's own, by name. */
typedef struct cli_opt {
    const char *name;   /* without the leading dashes */
    const char *value;  /* NULL for flags */
} cli_opt;

typedef struct cli {
    const char *command;
    const char **args;  /* positional arguments after the command */
    size_t nargs;
    cli_opt *opts;
    size_t nopts;
    const char *db_url;
    const char *config_path;
    baton_log_level log_level;
    baton_log_format log_format;
    baton_client *client;
} cli;

/* What a command needs: the current schema (all but init), positional arguments (a
 * command without CLI_ARGS refuses any before it opens the database). */
enum { CLI_SCHEMA = 1, CLI_ARGS = 2 };

/* A command: name, the options it accepts ("name" for flags, "name=" for valued options),
 * usage text, CLI_ flags and the function that runs it, returning an exit code. */
typedef struct cli_command {
    const char *name;
    const char *const *options;
    const char *usage;
    unsigned flags;
    int (*run)(cli *c);
} cli_command;

/* Option access. cli_int/cli_double print an error and return -1 for bad numbers: an
 * integer outside [min, max]; seconds below min, above 1e9 or not finite (every
 * fractional option is a span of seconds). */
const char *cli_value(const cli *c, const char *name);
int cli_flag(const cli *c, const char *name);
int cli_int(const cli *c, const char *name, long long min, long long max, long long *out);
int cli_double(const cli *c, const char *name, double min, double *out);

/* cli_stop_perform_on_signals makes TERM, INT and QUIT stop client's inline perform (see
 * baton_perform_stop) instead of killing the process. */
void cli_stop_perform_on_signals(baton_client *client);

/* cli_reject_options fails (after printing) when an option given is not among allowed
 * (names without dashes, NULL-terminated): for subcommands that take fewer options than
 * their command. Returns 0 or -1. */
int cli_reject_options(const cli *c, const char *const *allowed, const char *what);

/* cli_job_id parses the single positional JOB_ID; returns -1 after printing on error. */
int cli_job_id(cli *c, const char *usage, int64_t *id);

/* cli_fail prints "baton: MESSAGE" and returns the exit code for a baton error code. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* cli_fail_last reports baton_error_last() for code. */
int cli_fail_last(int code);

/* cli_print_json prints a JSON document (one line) to stdout. */
void cli_print_json(const char *text);

/* cli_table prints rows of cells as an aligned table with a header row. */
void cli_table(const char *const *headers, size_t ncols, char ***rows, size_t nrows);

/* Commands, by file. */
int cmd_init(cli *c);
int cmd_enqueue(cli *c);
int cmd_perform(cli *c);
int cmd_work(cli *c);
int cmd_dispatch(cli *c);
int cmd_schedule(cli *c);
int cmd_start(cli *c);
int cmd_jobs(cli *c);
int cmd_job(cli *c);
int cmd_retry(cli *c);
int cmd_discard(cli *c);
int cmd_clear_finished(cli *c);
int cmd_pause(cli *c);
int cmd_resume(cli *c);
int cmd_queues(cli *c);
int cmd_semaphores(cli *c);
int cmd_blocked(cli *c);
int cmd_running(cli *c);
int cmd_processes(cli *c);
int cmd_unblock(cli *c);
int cmd_semaphore(cli *c);
int cmd_doctor(cli *c);
int cmd_stats(cli *c);
int cmd_metrics(cli *c);
int cmd_top(cli *c);
int cmd_recurring(cli *c);
/* The subcommands of baton recurring that change tasks (cmd_admin.c). */
int cmd_recurring_add(cli *c);
int cmd_recurring_remove(cli *c);

/* Reads the arguments JSON given as text, "-" (stdin) or "@FILE". Caller frees. */
char *cli_read_args(const char *value);

#endif
