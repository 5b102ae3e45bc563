/* cmd_report.c: the reports (jobs, job, queues, semaphores, recurring tasks, blocked,
 * running, processes, doctor, stats, metrics) as JSON (--json) or aligned tables, and top. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

void cli_table(const char *const *headers, size_t ncols, char ***rows, size_t nrows)
{
    size_t width[16] = {0};
    for (size_t k = 0; k < ncols; k++) {
        width[k] = strlen(headers[k]);
        for (size_t r = 0; r < nrows; r++)
            if (strlen(rows[r][k]) > width[k])
                width[k] = strlen(rows[r][k]);
    }
    for (size_t r = 0; r <= nrows; r++)
        for (size_t k = 0; k < ncols; k++) {
            const char *text = r == 0 ? headers[k] : rows[r - 1][k];
            if (k + 1 < ncols)
                printf("%-*s  ", (int)width[k], text);
            else
                printf("%s\n", text);
        }
}

/* printable copies text for a terminal (NULL when out of memory): newlines and tabs become
 * spaces, other control characters (C0, DEL, and C1 such as CSI in UTF-8) read "\xNN", so
 * a stored name or a command's stderr can neither move the cursor nor rewrite the screen. */
static char *printable(const char *text)
{
    size_t len = strlen(text);
    char *out = malloc(4 * len + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '\n' || *p == '\t') {
            *o++ = ' ';
        } else if (*p < 0x20 || *p == 0x7f) {
            o += sprintf(o, "\\x%02x", *p);
        } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            o += sprintf(o, "\\x%02x", *++p);
        } else {
            *o++ = (char)*p;
        }
    }
    *o = '\0';
    return out;
}

/* cell renders a JSON value for a table: strings bare, null as "-", long text cut. */
static char *cell(json_t *v, size_t max)
{
    char *raw;
    if (!v || json_is_null(v))
        raw = strdup("-");
    else if (json_is_string(v))
        raw = strdup(json_string_value(v));
    else
        raw = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *text = raw ? printable(raw) : NULL;
    free(raw);
    if (!text)
        return strdup("?");
    if (max && strlen(text) > max)
        strcpy(text + max - 3, "...");
    return text;
}

/* print_rows prints the objects of list as a table of the given fields. */
static void print_rows(json_t *list, const char *const *fields, const char *const *headers,
                       const size_t *max, size_t ncols)
{
    size_t n = json_array_size(list);
    char ***rows = calloc(n ? n : 1, sizeof *rows);
    for (size_t r = 0; r < n; r++) {
        rows[r] = calloc(ncols, sizeof **rows);
        for (size_t k = 0; k < ncols; k++)
            rows[r][k] = cell(json_object_get(json_array_get(list, r), fields[k]), max[k]);
    }
    cli_table(headers, ncols, rows, n);
    for (size_t r = 0; r < n; r++) {
        for (size_t k = 0; k < ncols; k++)
            free(rows[r][k]);
        free(rows[r]);
    }
    free(rows);
}

/* show prints a report: raw JSON, or fn's rendering of the parsed document. */
static int show(cli *c, int rc, char *json, void (*render)(json_t *))
{
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    if (cli_flag(c, "json")) {
        cli_print_json(json);
    } else {
        json_t *doc = json_loads(json, JSON_DECODE_ANY, NULL);
        render(doc);
        json_decref(doc);
    }
    baton_free(json);
    return EXIT_OK;
}

static void render_jobs(json_t *list)
{
    static const char *const fields[] = {"id", "class", "queue", "status", "priority", "attempts", "created_at", "error"};
    static const char *const headers[] = {"ID", "CLASS", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED", "ERROR"};
    static const size_t max[] = {0, 40, 24, 0, 0, 0, 0, 60};
    print_rows(list, fields, headers, max, 8);
}

int cmd_jobs(cli *c)
{
    long long limit = 100;
    if (cli_int(c, "limit", 1, INT_MAX, &limit))
        return EXIT_USAGE;
    baton_job_filter f = {cli_value(c, "status"), cli_value(c, "class"), cli_value(c, "queue"), (int)limit,
                          cli_value(c, "key")};
    char *json = NULL;
    int rc = baton_jobs_json(c->client, &f, &json);
    return show(c, rc, json, render_jobs);
}

static void render_job(json_t *job)
{
    const char *key;
    json_t *value;
    json_object_foreach(job, key, value)
    {
        if (strcmp(key, "history") == 0)
            continue;
        char *text = cell(value, 0);
        printf("%-14s %s\n", key, text);
        free(text);
    }
    printf("history\n");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(job, "history"), i, e)
    {
        printf("  %s  %-11s", json_string_value(json_object_get(e, "at")), json_string_value(json_object_get(e, "event")));
        json_object_foreach(e, key, value)
        {
            if (strcmp(key, "at") == 0 || strcmp(key, "event") == 0 || json_is_null(value))
                continue;
            json_t *name = json_object_get(value, "name"), *id = json_object_get(value, "id");
            char *text;
            if (json_is_object(value) && json_is_string(name))
                text = strdup(json_string_value(name));
            else if (json_is_object(value) && json_is_integer(id)) /* ended before identities were kept */
                text = json_dumps(id, JSON_ENCODE_ANY);
            else
                text = cell(value, 200);
            printf(" %s=%s", key, text);
            free(text);
        }
        printf("\n");
    }
}

int cmd_job(cli *c)
{
    int64_t id;
    if (cli_job_id(c, "job ID [--json]", &id))
        return EXIT_USAGE;
    char *json = NULL;
    int rc = baton_job_json(c->client, id, &json);
    return show(c, rc, json, render_job);
}

static void render_queues(json_t *list)
{
    static const char *const fields[] = {"name", "ready", "scheduled", "claimed", "blocked", "failed", "paused"};
    static const char *const headers[] = {"QUEUE", "READY", "SCHEDULED", "CLAIMED", "BLOCKED", "FAILED", "PAUSED"};
    static const size_t max[] = {0, 0, 0, 0, 0, 0, 0};
    print_rows(list, fields, headers, max, 7);
}

int cmd_queues(cli *c)
{
    char *json = NULL;
    int rc = baton_queues_json(c->client, &json);
    return show(c, rc, json, render_queues);
}

static void render_semaphores(json_t *list)
{
    static const char *const fields[] = {"key", "limit", "value", "holders", "blocked", "expires_at"};
    static const char *const headers[] = {"KEY", "LIMIT", "FREE", "HOLDERS", "BLOCKED", "EXPIRES"};
    static const size_t max[] = {60, 0, 0, 40, 0, 0};
    print_rows(list, fields, headers, max, 6);
}

int cmd_semaphores(cli *c)
{
    char *json = NULL;
    int rc = baton_semaphores_json(c->client, cli_flag(c, "expired"), cli_value(c, "key"), &json);
    return show(c, rc, json, render_semaphores);
}

/* duration_text renders seconds as "45s", "3m12s" or "2h05m" for tables. */
static json_t *duration_text(json_t *seconds)
{
    double exact = json_number_value(seconds);
    long s = (long)exact;
    char buf[32];
    if (exact < 10)
        snprintf(buf, sizeof buf, "%.1fs", exact);
    else if (s < 60)
        snprintf(buf, sizeof buf, "%lds", s);
    else if (s < 3600)
        snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s / 60 % 60);
    return json_string(buf);
}

/* key_values_text renders {"user_id": 123} as "user_id=123". */
static json_t *key_values_text(json_t *values)
{
    char buf[256] = "";
    const char *name;
    json_t *v;
    json_object_foreach(values, name, v)
    {
        char *text = cell(v, 40);
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s=%s", len ? " " : "", name, text);
        free(text);
    }
    return json_string(buf);
}

static void render_blocked(json_t *list)
{
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
    {
        json_object_set_new(o, "waiting", duration_text(json_object_get(o, "waiting_seconds")));
        json_t *kv = json_object_get(o, "key_values");
        if (kv)
            json_object_set_new(o, "built_from", key_values_text(kv));
    }
    static const char *const fields[] = {"job_id", "class", "concurrency_key", "built_from", "waiting", "blocked_since"};
    static const char *const headers[] = {"JOB", "CLASS", "KEY", "BUILT FROM", "WAITING", "SINCE"};
    static const size_t max[] = {0, 40, 60, 40, 0, 0};
    print_rows(list, fields, headers, max, 6);
}

int cmd_blocked(cli *c)
{
    char *json = NULL;
    int rc = baton_blocked_json(c->client, cli_value(c, "class"), cli_value(c, "key"), &json);
    return show(c, rc, json, render_blocked);
}

static void render_running(json_t *list)
{
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
        json_object_set_new(o, "running", duration_text(json_object_get(o, "running_seconds")));
    static const char *const fields[] = {"job_id", "class", "concurrency_key", "process_id", "pid", "hostname", "running", "started_at"};
    static const char *const headers[] = {"JOB", "CLASS", "KEY", "PROCESS", "PID", "HOST", "RUNNING", "STARTED"};
    static const size_t max[] = {0, 40, 60, 0, 0, 30, 0, 0};
    print_rows(list, fields, headers, max, 8);
}

int cmd_running(cli *c)
{
    double longer_than = 0;
    if (cli_double(c, "longer-than", 0, &longer_than))
        return EXIT_USAGE;
    char *json = NULL;
    int rc = baton_running_json(c->client, cli_value(c, "class"), longer_than, &json);
    return show(c, rc, json, render_running);
}

static void render_processes(json_t *list)
{
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
        json_object_set_new(o, "heartbeat", duration_text(json_object_get(o, "heartbeat_age_seconds")));
    static const char *const fields[] = {"id", "kind", "hostname", "pid", "supervisor_id", "heartbeat", "running"};
    static const char *const headers[] = {"ID", "KIND", "HOST", "PID", "SUPERVISOR", "HEARTBEAT AGE", "RUNNING JOBS"};
    static const size_t max[] = {0, 0, 30, 0, 0, 0, 60};
    print_rows(list, fields, headers, max, 7);
}

int cmd_processes(cli *c)
{
    char *json = NULL;
    int rc = baton_processes_json(c->client, &json);
    return show(c, rc, json, render_processes);
}

int cmd_doctor(cli *c)
{
    char *json = NULL;
    int left = 0;
    int rc = baton_doctor_json(c->client, cli_flag(c, "repair"), &json, &left);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    if (cli_flag(c, "json")) {
        cli_print_json(json);
    } else {
        json_t *doc = json_loads(json, 0, NULL);
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(doc, "repaired"), i, o)
            printf("repaired  %s: %s\n", json_string_value(json_object_get(o, "kind")),
                   json_string_value(json_object_get(o, "detail")));
        json_array_foreach(json_object_get(doc, "problems"), i, o)
            printf("problem   %s: %s\n", json_string_value(json_object_get(o, "kind")),
                   json_string_value(json_object_get(o, "detail")));
        if (!left)
            printf("no problems found\n");
        json_decref(doc);
    }
    baton_free(json);
    return left ? EXIT_ERROR : EXIT_OK;
}

static void render_recurring(json_t *list)
{
    static const char *const fields[] = {"key", "class", "schedule", "timezone", "queue", "priority",
                                         "static", "last_run_at", "next_run_at"};
    static const char *const headers[] = {"KEY", "CLASS", "SCHEDULE", "TIMEZONE", "QUEUE", "PRIORITY",
                                          "STATIC", "LAST RUN", "NEXT RUN"};
    static const size_t max[] = {40, 40, 0, 0, 24, 0, 0, 0, 0};
    print_rows(list, fields, headers, max, 9);
}

int cmd_recurring(cli *c)
{
    static const char *const list_opts[] = {"json", NULL};
    const char *sub = c->nargs ? c->args[0] : NULL;
    if (sub && strcmp(sub, "add") == 0)
        return cmd_recurring_add(c);
    if (sub && strcmp(sub, "remove") == 0)
        return cmd_recurring_remove(c);
    if (sub)
        return cli_fail(BATON_EINVALID, "unknown subcommand 'baton recurring %s' (expected add or remove)", sub);
    if (cli_reject_options(c, list_opts, "baton recurring"))
        return EXIT_USAGE;
    char *json = NULL;
    int rc = baton_recurring_json(c->client, &json);
    return show(c, rc, json, render_recurring);
}

static json_t *seconds_text(json_t *v)
{
    return json_is_number(v) ? duration_text(v) : json_string("-");
}

static void render_stats(json_t *doc)
{
    json_t *classes = json_object_get(doc, "classes");
    size_t i;
    json_t *o;
    json_array_foreach(classes, i, o)
    {
        json_t *counts = json_object_get(o, "counts"), *w = json_object_get(o, "wait_seconds");
        static const char *const statuses[] = {"ready", "blocked", "scheduled", "claimed", "failed", "finished"};
        for (size_t k = 0; k < 6; k++)
            json_object_set(o, statuses[k], json_object_get(counts, statuses[k]));
        char wait[96];
        json_t *p50 = seconds_text(json_object_get(w, "p50")), *p95 = seconds_text(json_object_get(w, "p95")),
               *max = seconds_text(json_object_get(w, "max"));
        snprintf(wait, sizeof wait, "%s / %s / %s", json_string_value(p50), json_string_value(p95),
                 json_string_value(max));
        json_decref(p50);
        json_decref(p95);
        json_decref(max);
        json_object_set_new(o, "wait", json_string(wait));
        char per[32];
        snprintf(per, sizeof per, "%.1f", json_number_value(json_object_get(o, "per_minute")));
        json_object_set_new(o, "rate", json_string(per));
    }
    static const char *const fields[] = {"class", "ready", "blocked", "scheduled", "claimed", "failed", "finished",
                                         "blocked_keys", "wait", "released_by_expiry", "rate"};
    static const char *const headers[] = {"CLASS", "READY", "BLOCKED", "SCHEDULED", "RUNNING", "FAILED", "FINISHED",
                                          "KEYS BLOCKED", "WAIT p50/p95/max", "BY EXPIRY", "PER MIN"};
    static const size_t max[] = {40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    print_rows(classes, fields, headers, max, 11);
    json_array_foreach(classes, i, o)
    {
        json_t *top = json_object_get(o, "top_blocked_keys");
        size_t k;
        json_t *t;
        json_array_foreach(top, k, t)
            printf("%s %s: %lld blocked\n", k == 0 ? "\nbusiest keys of" : "               ",
                   json_string_value(json_object_get(t, "key")), (long long)json_integer_value(json_object_get(t, "blocked")));
    }
}

int cmd_stats(cli *c)
{
    double since = 3600;
    if (cli_double(c, "since", 0.001, &since))
        return EXIT_USAGE;
    char *json = NULL;
    int rc = baton_stats_json(c->client, cli_value(c, "class"), since, &json);
    return show(c, rc, json, render_stats);
}

int cmd_metrics(cli *c)
{
    char *text = NULL;
    int rc = baton_metrics_text(c->client, &text);
    if (rc != BATON_OK)
        return cli_fail_last(rc);
    fputs(text, stdout);
    baton_free(text);
    return EXIT_OK;
}

/* ---- top ---- */

static volatile sig_atomic_t top_stop;

static void on_top_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

/* top_section prints a titled report (taking json), or that it could not be read. */
static void top_section(const char *title, int rc, char *json, void (*render)(json_t *))
{
    printf("\n%s\n", title);
    if (rc != BATON_OK) {
        printf("  (could not be read)\n");
        return;
    }
    json_t *doc = json_loads(json, 0, NULL);
    render(doc);
    json_decref(doc);
    baton_free(json);
}

static void render_busiest_keys(json_t *stats)
{
    json_t *keys = json_array();
    size_t i, k;
    json_t *o, *t;
    json_array_foreach(json_object_get(stats, "classes"), i, o)
        json_array_foreach(json_object_get(o, "top_blocked_keys"), k, t) json_array_append(keys, t);
    static const char *const fields[] = {"key", "blocked"};
    static const char *const headers[] = {"KEY", "BLOCKED"};
    static const size_t max[] = {70, 0};
    print_rows(keys, fields, headers, max, 2);
    json_decref(keys);
}

/* top_frame prints one picture of the queue: counts per queue, the busiest keys, what runs
 * (longest first) and the processes. Returns the first error met. */
static int top_frame(cli *c, int live)
{
    char now[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    printf("baton top  %s  %s%s\n", baton_client_display_url(c->client), now, live ? "  (q quits)" : "");
    char *queues = NULL, *stats = NULL, *running = NULL, *processes = NULL;
    int rc[4] = {baton_queues_json(c->client, &queues), baton_stats_json(c->client, NULL, 300, &stats),
                 baton_running_json(c->client, NULL, 0, &running), baton_processes_json(c->client, &processes)};
    top_section("Queues", rc[0], queues, render_queues);
    top_section("Busiest keys (most blocked jobs)", rc[1], stats, render_busiest_keys);
    top_section("Running", rc[2], running, render_running);
    top_section("Processes", rc[3], processes, render_processes);
    for (int i = 0; i < 4; i++)
        if (rc[i] != BATON_OK)
            return rc[i];
    return BATON_OK;
}

int cmd_top(cli *c)
{
    /* Not a terminal (a pipe, a file, a log): one picture, as plain tables. */
    if (!isatty(STDOUT_FILENO) || !isatty(STDIN_FILENO)) {
        int rc = top_frame(c, 0);
        return rc == BATON_OK ? EXIT_OK : cli_fail_last(rc);
    }
    struct termios saved, raw;
    if (tcgetattr(STDIN_FILENO, &saved) != 0)
        return cli_fail(BATON_ERROR, "top: cannot read the terminal's settings");
    raw = saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    struct sigaction sa = {0};
    sa.sa_handler = on_top_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("\033[?25l"); /* no cursor blinking over the tables */
    while (!top_stop) {
        printf("\033[H\033[2J");
        top_frame(c, 1); /* a failed section says so in place, and the next second may do better */
        fflush(stdout);
        struct pollfd in = {STDIN_FILENO, POLLIN, 0};
        if (poll(&in, 1, 1000) > 0) {
            char key;
            if (read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q'))
                break;
        }
    }
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    printf("\033[?25h\n");
    return EXIT_OK;
}
