// ctest-labels: sqlite
/* test_cli.c: the baton command line as a user drives it, against a real SQLite file:
 * bad input is refused with one "baton: ..." line and the right exit code and leaves the
 * stored jobs alone; the job lifecycle (enqueue, schedule, pause, work, discard, clear);
 * command jobs (success, failure with stderr, timeout, 1 MiB of stdin, environment);
 * retries; inline perform; the order in which one worker thread takes jobs from
 * queues, wildcards, paused queues and priorities; and JSON log lines. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#include "baton.h"
#include "util/clock.h"

enum { MAX_ARGS = 48, MAX_WORKERS = 4, PATH_LEN = 4200 };

/* Per test: a temp dir holding baton.db (or a PostgreSQL database) and baton.yml, plus
 * workers to reap on failure. */
typedef struct fx {
    char *dir;
    char db[PATH_LEN + 16]; /* sqlite:DIR/baton.db, or a PostgreSQL URL */
    char file[PATH_LEN]; /* DIR/baton.db, on SQLite */
    char cfg[PATH_LEN];  /* DIR/baton.yml */
    pid_t workers[MAX_WORKERS];
    char worker_logs[MAX_WORKERS][PATH_LEN];
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tmpdir_make();
    snprintf(f->file, sizeof f->file, "%s/baton.db", f->dir);
    test_db_create(f->db, sizeof f->db, f->dir, "baton");
    snprintf(f->cfg, sizeof f->cfg, "%s/baton.yml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (f->workers[i] > 0) {
            kill(f->workers[i], SIGKILL);
            waitpid(f->workers[i], NULL, 0);
        }
    test_db_drop(f->db);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static const char *in_dir(const fx *f, const char *name)
{
    return path_join(f->dir, name);
}

/* Appends printf-formatted text to a malloc'ed string. */
static char *cat_fmt(char *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *cat_fmt(char *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *add = NULL;
    assert_true(vasprintf(&add, fmt, ap) >= 0);
    va_end(ap);
    size_t old = s ? strlen(s) : 0;
    s = realloc(s, old + strlen(add) + 1);
    memcpy(s + old, add, strlen(add) + 1);
    free(add);
    return s;
}

/* ---- running the CLI ----------------------------------------------------------------- */

/* Runs baton with --db db and --config cfg (each skipped when NULL) before the args. */
static run_result run_with(const char *db, const char *cfg, const char *in, const char *const *rest)
{
    const char *args[MAX_ARGS];
    size_t n = 0;
    if (db) {
        args[n++] = "--db";
        args[n++] = db;
    }
    if (cfg) {
        args[n++] = "--config";
        args[n++] = cfg;
    }
    for (size_t i = 0; rest[i]; i++) {
        assert_true(n < MAX_ARGS - 1);
        args[n++] = rest[i];
    }
    args[n] = NULL;
    return baton_run(in, args);
}

static run_result vcli(fx *f, const char *in, va_list ap)
{
    const char *rest[MAX_ARGS];
    size_t n = 0;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < MAX_ARGS - 1);
        rest[n++] = a;
    }
    rest[n] = NULL;
    return run_with(f->db, f->cfg, in, rest);
}

/* RUN(f, stdin, "jobs", "--json"): runs with the fixture's database and config. */
static run_result cli_run(fx *f, const char *in, ...)
{
    va_list ap;
    va_start(ap, in);
    run_result r = vcli(f, in, ap);
    va_end(ap);
    return r;
}
#define RUN(f, in, ...) cli_run((f), (in), __VA_ARGS__, (const char *)NULL)

static void check_exit(const run_result *r, int code, int line)
{
    if (r->status != code)
        fail_msg("line %d: baton exited %d, expected %d\n  stdout: %s\n  stderr: %s", line,
                 r->status, code, r->out, r->err);
}
#define CHECK_EXIT(r, code) check_exit(&(r), (code), __LINE__)

/* OK(f, args...): runs, insists on exit 0 and returns stdout (caller frees). */
static char *cli_ok(int line, fx *f, ...)
{
    va_list ap;
    va_start(ap, f);
    run_result r = vcli(f, NULL, ap);
    va_end(ap);
    check_exit(&r, 0, line);
    char *out = r.out;
    free(r.err);
    return out;
}
#define OK(f, ...) cli_ok(__LINE__, (f), __VA_ARGS__, (const char *)NULL)

/* Runs a command that must succeed and discards its output. */
#define DO(f, ...) free(OK(f, __VA_ARGS__))

/* stdout must be one integer on a line of its own. */
static int64_t parse_id_line(const char *out, int line)
{
    char *end;
    errno = 0;
    long long id = strtoll(out, &end, 10);
    if (errno || end == out || strcmp(end, "\n") != 0 || id <= 0)
        fail_msg("line %d: expected a job id alone on stdout, got '%s'", line, out);
    return id;
}

static int64_t enqueue_at(int line, fx *f, ...)
{
    va_list ap;
    va_start(ap, f);
    run_result r = vcli(f, NULL, ap);
    va_end(ap);
    check_exit(&r, 0, line);
    int64_t id = parse_id_line(r.out, line);
    run_result_free(&r);
    return id;
}
/* ENQUEUE(f, "Class", options...) returns the new job's id. */
#define ENQUEUE(f, ...) enqueue_at(__LINE__, (f), "enqueue", __VA_ARGS__, (const char *)NULL)

/* The error contract: exit code, nothing on stdout, exactly one stderr line starting
 * "baton: " that contains every word of words (NULL-terminated). Returns NULL when it
 * holds, else a description of the breach (caller frees). */
static char *error_breach(const run_result *r, int code, const char *const *words, const char *what)
{
    char *msg = NULL;
    size_t len = strlen(r->err);
    if (r->status != code)
        msg = cat_fmt(msg, "%s: exit %d, expected %d\n", what, r->status, code);
    if (strncmp(r->err, "baton: ", 7) != 0)
        msg = cat_fmt(msg, "%s: stderr does not start with 'baton: '\n", what);
    if (len < 2 || r->err[len - 1] != '\n' || strchr(r->err, '\n') != r->err + len - 1)
        msg = cat_fmt(msg, "%s: stderr is not exactly one line\n", what);
    for (size_t i = 0; words && words[i]; i++)
        if (!strcasestr(r->err, words[i]))
            msg = cat_fmt(msg, "%s: stderr does not mention '%s'\n", what, words[i]);
    if (*r->out)
        msg = cat_fmt(msg, "%s: expected nothing on stdout\n", what);
    if (msg)
        msg = cat_fmt(msg, "  stdout: %.200s\n  stderr: %.*s\n", r->out,
                      (int)strcspn(r->err, "\n"), r->err); /* the first line is enough */
    return msg;
}

static void check_error(const run_result *r, int code, const char *const *words, const char *what)
{
    char *msg = error_breach(r, code, words, what);
    if (msg)
        fail_msg("%s", msg);
}

/* ---- JSON reports ---------------------------------------------------------------------- */

static json_t *parse_json(const char *text, int line)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("line %d: output is not JSON (%s): %.300s", line, e.text, text);
    return j;
}

static json_t *jobs_at(int line, fx *f)
{
    char *out = cli_ok(line, f, "jobs", "--json", "--limit", "10000", (const char *)NULL);
    json_t *j = parse_json(out, line);
    free(out);
    assert_true(json_is_array(j));
    return j;
}
#define JOBS(f) jobs_at(__LINE__, (f))

static json_t *job_at(int line, fx *f, int64_t id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    char *out = cli_ok(line, f, "job", ids, "--json", (const char *)NULL);
    json_t *j = parse_json(out, line);
    free(out);
    assert_true(json_is_object(j));
    return j;
}
#define JOB(f, id) job_at(__LINE__, (f), (id))

static const char *str_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static long long int_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("field '%s' is not an integer", key);
    return (long long)json_integer_value(v);
}

/* Asserts job id's status (and attempts when >= 0); returns the job for more checks. */
static json_t *expect_job_at(int line, fx *f, int64_t id, const char *status, int attempts)
{
    json_t *j = job_at(line, f, id);
    const char *s = str_of(j, "status");
    if (!s || strcmp(s, status) != 0 || (attempts >= 0 && int_of(j, "attempts") != attempts)) {
        char *dump = json_dumps(j, JSON_COMPACT);
        fail_msg("line %d: job %lld: expected status %s attempts %d, got %s", line, (long long)id,
                 status, attempts, dump);
    }
    return j;
}
#define EXPECT_JOB(f, id, status, attempts) \
    json_decref(expect_job_at(__LINE__, (f), (id), (status), (attempts)))

/* "2026-11-24T09:15:06.739Z" */
static int is_iso_ms(const char *s)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (int i = 0; i < 24; i++) {
        char want = "dddd-dd-ddTdd:dd:dd.dddZ"[i];
        if (want == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != want)
            return 0;
    }
    return 1;
}

static int64_t time_of(json_t *obj, const char *key)
{
    const char *s = str_of(obj, key);
    if (!is_iso_ms(s))
        fail_msg("field '%s' is not an ISO 8601 UTC time with ms: %s", key, s ? s : "(null)");
    int64_t ms = 0;
    assert_int_equal(baton_parse_time(s, &ms), BATON_OK);
    return ms;
}

/* ---- waiting ------------------------------------------------------------------------- */

typedef struct job_wait {
    fx *f;
    int64_t id;
    const char *statuses; /* "finished|failed" */
} job_wait;

static int job_status_in(void *p)
{
    job_wait *w = p;
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)w->id);
    run_result r = RUN(w->f, NULL, "job", ids, "--json");
    int hit = 0;
    json_t *j = r.status == 0 ? json_loads(r.out, 0, NULL) : NULL;
    const char *s = j ? str_of(j, "status") : NULL;
    if (s) {
        size_t len = strlen(s);
        for (const char *p2 = w->statuses; (p2 = strstr(p2, s)) != NULL; p2 += len)
            if ((p2 == w->statuses || p2[-1] == '|') && (p2[len] == '|' || p2[len] == '\0'))
                hit = 1;
    }
    json_decref(j);
    run_result_free(&r);
    return hit;
}

static void wait_job_at(int line, fx *f, int64_t id, const char *statuses, int timeout_ms)
{
    job_wait w = {f, id, statuses};
    if (!poll_until(job_status_in, &w, timeout_ms)) {
        json_t *j = job_at(line, f, id);
        char *dump = json_dumps(j, JSON_COMPACT);
        fail_msg("line %d: job %lld did not reach %s within %d ms: %s", line, (long long)id,
                 statuses, timeout_ms, dump);
    }
}
/* Waits until the job's status is one of "a|b|c". */
#define WAIT_JOB(f, id, statuses) wait_job_at(__LINE__, (f), (id), (statuses), 60000)
#define WAIT_DONE(f, id) WAIT_JOB(f, id, "finished|failed")

/* ---- workers ------------------------------------------------------------------------- */

/* Starts `baton work ARGS...` in the background with its output in DIR/worker-N.log. */
static pid_t start_worker_v(fx *f, ...)
{
    int slot = 0;
    while (slot < MAX_WORKERS && f->workers[slot] > 0)
        slot++;
    assert_true(slot < MAX_WORKERS);
    const char *args[MAX_ARGS] = {"--db", f->db, "--config", f->cfg, "work"};
    size_t n = 5;
    va_list ap;
    va_start(ap, f);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_ARGS - 1)
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    static int serial;
    char name[64];
    snprintf(name, sizeof name, "worker-%d.log", ++serial);
    snprintf(f->worker_logs[slot], PATH_LEN, "%s", in_dir(f, name));
    f->workers[slot] = baton_spawn(f->worker_logs[slot], args);
    return f->workers[slot];
}
#define START_WORKER(f, ...) start_worker_v((f), __VA_ARGS__, (const char *)NULL)

/* Sends sig and insists the worker exits 0 within 15 s. */
static void stop_worker_at(int line, fx *f, pid_t pid)
{
    int slot = 0;
    while (slot < MAX_WORKERS && f->workers[slot] != pid)
        slot++;
    assert_true(slot < MAX_WORKERS);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = wait_exit(pid, 15000);
    f->workers[slot] = 0;
    if (status != 0) {
        char *log = read_file(f->worker_logs[slot]);
        fail_msg("line %d: worker exited %d after TERM (-1: still running after 15 s)\n%s", line,
                 status, log ? log : "");
    }
}
#define STOP_WORKER(f, pid) stop_worker_at(__LINE__, (f), (pid))

static void write_config(fx *f, const char *text)
{
    write_file(f->cfg, text);
}

/* Writes the config then creates the schema. */
static void init_with(fx *f, const char *config)
{
    write_config(f, config);
    char *out = OK(f, "init");
    assert_non_null(strstr(out, "schema version"));
    free(out);
}

/* ---- direct database access (SQLite locks, schema versions) ---------------------------- */

static sqlite3 *sql_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void sql_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err ? err : "?");
}

/* The first column of a query's rows, one per line (caller frees). */
static char *sql_lines(const char *url, const char *sql)
{
    bt_store *db = test_db_open(url);
    char *lines = test_db_lines(db, sql);
    bt_store_close(db);
    return lines;
}

/* ====================================================================================== */
/* 1. Bad input                                                                            */
/* ====================================================================================== */

typedef struct bad_case {
    const char *what;
    const char *db;  /* NULL: the fixture's */
    const char *cfg; /* NULL: the fixture's */
    const char *args[10];
    int code;
    const char *words[4];
} bad_case;

/* db_dump is every row of every Baton table, one JSON text per row, sorted: what a refused
 * command must leave as it was. */
static char *db_dump(const fx *f)
{
    int pg = test_on_postgres();
    char *tables = sql_lines(f->db, pg ? "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                                         " current_schema() AND table_name LIKE 'baton%' ORDER BY 1"
                                       : "SELECT name FROM sqlite_master WHERE type = 'table'"
                                         " AND name LIKE 'baton%' ORDER BY 1");
    char *dump = NULL, *save = NULL;
    for (char *t = strtok_r(tables, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        char *sql;
        if (pg) {
            sql = cat_fmt(NULL, "SELECT row_to_json(r)::text FROM %s r ORDER BY 1", t);
        } else {
            char *q = cat_fmt(NULL, "SELECT name FROM pragma_table_info('%s')", t), *cols = sql_lines(f->db, q);
            size_t n = strlen(cols);
            if (n)
                cols[n - 1] = '\0'; /* the last newline; the others become commas */
            for (char *p = cols; (p = strchr(p, '\n'));)
                *p = ',';
            sql = cat_fmt(NULL, "SELECT json_array(%s) FROM %s ORDER BY 1", cols, t);
            free(cols);
            free(q);
        }
        char *rows = sql_lines(f->db, sql);
        dump = cat_fmt(dump, "%s:\n%s", t, rows);
        free(rows);
        free(sql);
    }
    free(tables);
    return dump;
}

static void expect_db_unchanged(const fx *f, const char *before, const char *after)
{
    char *now = db_dump(f);
    if (strcmp(now, before) != 0) {
        fprintf(stderr, "the database changed after %s\n  before:\n%s  after:\n%s", after, before, now);
        fail_msg("the database changed after %s (both listed above)", after);
    }
    free(now);
}

static void test_bad_input(void **state)
{
    fx *f = *state;
    init_with(f, "max_arguments_bytes: 1000\n"
                 "jobs:\n"
                 "  Echo:\n"
                 "    command: 'cat > /dev/null'\n");
    int64_t a = ENQUEUE(f, "Echo", "--args", "{\"n\": 1}");
    int64_t b = ENQUEUE(f, "Echo", "--args", "[2]", "--queue", "other", "--priority", "3");
    /* A finished job, for "discard of a finished job". */
    run_result p = RUN(f, NULL, "perform", "Echo");
    CHECK_EXIT(p, 0);
    int64_t done = parse_id_line(p.out, __LINE__);
    run_result_free(&p);
    EXPECT_JOB(f, a, "ready", 0);
    EXPECT_JOB(f, b, "ready", 0);
    EXPECT_JOB(f, done, "finished", 1);
    json_t *jobs = JOBS(f);
    assert_int_equal(json_array_size(jobs), 3);
    json_decref(jobs);
    char *baseline = db_dump(f);
    /* Arguments may hold secrets: the database and its WAL (while there is one) are the
     * owner's alone. */
    if (!test_on_postgres()) {
        char wal[PATH_LEN + 8];
        snprintf(wal, sizeof wal, "%s-wal", f->file);
        const char *files[] = {f->file, wal};
        for (size_t i = 0; i < 2; i++) {
            struct stat st;
            if (stat(files[i], &st) != 0) {
                assert_true(i == 1 && errno == ENOENT);
                continue;
            }
            if (st.st_mode & 077)
                fail_msg("%s is readable by others (mode %o)", files[i], (unsigned)(st.st_mode & 0777));
        }
    }

    char bad_cfg[PATH_LEN], bad_cfg_line[PATH_LEN + 8], big[2100], args_file[PATH_LEN];
    char done_id[32], ready_id[32], missing_cfg[PATH_LEN];
    snprintf(missing_cfg, sizeof missing_cfg, "%s", in_dir(f, "no-such.yml"));
    snprintf(bad_cfg, sizeof bad_cfg, "%s", in_dir(f, "bad.yml"));
    write_file(bad_cfg, "jobs:\n"
                        "  Echo:\n"
                        "    command: 'true'\n"
                        "    colour: red\n");
    snprintf(bad_cfg_line, sizeof bad_cfg_line, "%s:4", bad_cfg);
    /* Liveness a worker cannot keep (it would stop its own jobs between heartbeats), and a
     * backoff too long to compute. */
    char beat_at_threshold[PATH_LEN], beat_near_threshold[PATH_LEN], huge_base[PATH_LEN];
    snprintf(beat_at_threshold, sizeof beat_at_threshold, "%s", in_dir(f, "beat-at-threshold.yml"));
    write_file(beat_at_threshold, "process_heartbeat_interval: 30\nprocess_alive_threshold: 30\n");
    snprintf(beat_near_threshold, sizeof beat_near_threshold, "%s", in_dir(f, "beat-near-threshold.yml"));
    write_file(beat_near_threshold, "process_heartbeat_interval: 2\nprocess_alive_threshold: 3.5\n");
    snprintf(huge_base, sizeof huge_base, "%s", in_dir(f, "huge-base.yml"));
    write_file(huge_base, "jobs:\n  Echo:\n    command: 'true'\n    retry: {base: 1e300}\n");
    snprintf(args_file, sizeof args_file, "%s", in_dir(f, "no-such-args.json"));
    char args_at[PATH_LEN + 2];
    snprintf(args_at, sizeof args_at, "@%s", args_file);
    /* ["a", then a NUL byte: stored as far as the NUL it would be valid JSON of another job. */
    char nul_at[PATH_LEN + 2];
    snprintf(nul_at, sizeof nul_at, "@%s", in_dir(f, "nul-args.json"));
    FILE *nul_file = fopen(nul_at + 1, "wb");
    assert_non_null(nul_file);
    fwrite("[1]\0[2]", 1, 7, nul_file);
    fclose(nul_file);
    /* ["xxx...x"]: 2000 bytes of JSON */
    memset(big, 'x', sizeof big);
    big[0] = '[';
    big[1] = '"';
    big[1998] = '"';
    big[1999] = ']';
    big[2000] = '\0';
    snprintf(done_id, sizeof done_id, "%lld", (long long)done);
    snprintf(ready_id, sizeof ready_id, "%lld", (long long)a);

    const bad_case cases[] = {
        {"malformed JSON", NULL, NULL, {"enqueue", "Echo", "--args", "{\"n\": "}, 2, {"JSON"}},
        {"unknown class", NULL, NULL, {"enqueue", "NoSuchClass"}, 2, {"NoSuchClass"}},
        {"unknown option", NULL, NULL, {"enqueue", "Echo", "--bogus"}, 2, {"bogus"}},
        {"option without its value", NULL, NULL, {"enqueue", "Echo", "--queue"}, 2, {"queue"}},
        {"bad --at", NULL, NULL, {"enqueue", "Echo", "--at", "yesterday"}, 2, {"yesterday"}},
        {"negative --in", NULL, NULL, {"enqueue", "Echo", "--in", "-5"}, 2, {"--in"}},
        {"--at and --in", NULL, NULL, {"enqueue", "Echo", "--at", "2030-01-01", "--in", "5"}, 2, {"--in"}},
        {"bad --priority", NULL, NULL, {"enqueue", "Echo", "--priority", "high"}, 2, {"priority", "high"}},
        {"missing --args file", NULL, NULL, {"enqueue", "Echo", "--args", args_at}, 2, {"no-such-args.json"}},
        {"NUL byte in --args file", NULL, NULL, {"enqueue", "Echo", "--args", nul_at}, 2, {"nul-args.json", "NUL"}},
        /* Names are shown in tables and reports: text that prints as itself. */
        {"queue not UTF-8", NULL, NULL, {"enqueue", "Echo", "--queue", "caf\xe9"}, 2, {"queue name", "UTF-8"}},
        {"queue with ESC", NULL, NULL, {"enqueue", "Echo", "--queue", "q\x1b[2J"}, 2, {"queue name", "control"}},
        {"key with CR", NULL, NULL, {"enqueue", "Echo", "--concurrency-key", "k\rk"}, 2, {"concurrency key", "control"}},
        {"queue with C1 CSI", NULL, NULL, {"enqueue", "Echo", "--queue", "q\xc2\x9b" "2J"}, 2, {"queue name", "control"}},
        {"key with a bidi override", NULL, NULL, {"enqueue", "Echo", "--concurrency-key", "k\xe2\x80\xae" "gpj"}, 2,
         {"concurrency key", "control"}},
        {"paused queue not UTF-8", NULL, NULL, {"pause", "\xff"}, 2, {"queue name", "UTF-8"}},
        {"oversized arguments", NULL, NULL, {"enqueue", "Echo", "--args", big}, 2, {"max_arguments_bytes"}},
        {"unknown command", NULL, NULL, {"frobnicate"}, 2, {"frobnicate"}},
        {"unknown --log-format", NULL, NULL, {"--log-format", "xml", "jobs"}, 2, {"--log-format", "xml"}},
        {"unknown --log-format (work)", NULL, NULL, {"work", "--log-format", "text"}, 2, {"--log-format", "text"}},
        {"unknown --log-level", NULL, NULL, {"--log-level", "loud", "jobs"}, 2, {"--log-level", "loud"}},
        {"job not found", NULL, NULL, {"job", "999999"}, 3, {"999999", "not found"}},
        {"job id not a number", NULL, NULL, {"job", "abc"}, 2, {"abc"}},
        {"unknown status", NULL, NULL, {"jobs", "--status", "nonsense"}, 2, {"nonsense"}},
        {"bad --limit", NULL, NULL, {"jobs", "--limit", "0"}, 2, {"limit"}},
        {"unknown config key", NULL, bad_cfg, {"jobs"}, 2, {bad_cfg_line, "colour"}},
        {"missing config file", NULL, missing_cfg, {"jobs"}, 1, {missing_cfg}},
        {"unreadable database", "sqlite:/nonexistent-dir/x.db", NULL, {"jobs"}, 1, {"/nonexistent-dir/x.db"}},
        /* A password in a URL is never shown (the loop below checks for it). */
        {"unknown scheme with a password", "mysql://u:s3cret@h/db", NULL, {"jobs"}, 2, {"mysql"}},
        {"unreachable server with a password", "postgres://u:s3cret@127.0.0.1:1/db", NULL, {"jobs"}, 1,
         {"127.0.0.1"}},
        {"unreadable database (enqueue)", "sqlite:/nonexistent-dir/x.db", NULL, {"enqueue", "Echo"}, 1, {"/nonexistent-dir/x.db"}},
        {"discard a finished job", NULL, NULL, {"discard", done_id}, 1, {"finished"}},
        {"retry a job that did not fail", NULL, NULL, {"retry", ready_id}, 1, {"failed"}},
        {"retry of a missing job", NULL, NULL, {"retry", "999999"}, 3, {"999999"}},
        {"retry with an id and --all-failed", NULL, NULL, {"retry", ready_id, "--all-failed"}, 2, {"all-failed"}},
        /* Numbers out of range: refused, never wrapped, clamped to something else or overflowed. */
        {"--in 1e300", NULL, NULL, {"enqueue", "Echo", "--in", "1e300"}, 2, {"--in", "1e300"}},
        {"--in inf", NULL, NULL, {"enqueue", "Echo", "--in", "inf"}, 2, {"--in", "inf"}},
        {"--in nan", NULL, NULL, {"enqueue", "Echo", "--in", "nan"}, 2, {"--in", "nan"}},
        {"--duration 1e300", NULL, NULL, {"enqueue", "Echo", "--duration", "1e300"}, 2, {"--duration"}},
        {"--limit 2^32 + 1", NULL, NULL, {"enqueue", "Echo", "--limit", "4294967297"}, 2, {"--limit", "4294967297"}},
        {"--priority 2^31", NULL, NULL, {"enqueue", "Echo", "--priority", "2147483648"}, 2, {"--priority"}},
        {"--priority -2^31", NULL, NULL, {"enqueue", "Echo", "--priority", "-2147483648"}, 2, {"--priority"}},
        {"--priority 2^63", NULL, NULL, {"enqueue", "Echo", "--priority", "9223372036854775808"}, 2, {"--priority"}},
        {"perform --wait-timeout inf", NULL, NULL, {"perform", "Echo", "--wait-timeout", "inf"}, 2, {"--wait-timeout"}},
        {"work --shutdown-timeout inf", NULL, NULL, {"work", "--shutdown-timeout", "inf"}, 2, {"--shutdown-timeout"}},
        {"start --shutdown-timeout inf", NULL, NULL, {"start", "--shutdown-timeout", "inf"}, 2, {"--shutdown-timeout"}},
        {"work --threads 2^32 + 1", NULL, NULL, {"work", "--threads", "4294967297"}, 2, {"--threads"}},
        {"work --polling-interval 1e300", NULL, NULL, {"work", "--polling-interval", "1e300"}, 2, {"--polling-interval"}},
        {"jobs --limit 2^32 + 1", NULL, NULL, {"jobs", "--limit", "4294967297"}, 2, {"--limit"}},
        {"heartbeat as long as the threshold", NULL, beat_at_threshold, {"jobs"}, 2,
         {beat_at_threshold, "process_alive_threshold"}},
        {"threshold under 4 heartbeats", NULL, beat_near_threshold, {"work"}, 2,
         {beat_near_threshold, "process_alive_threshold", "3.5"}},
        {"retry base 1e300", NULL, huge_base, {"enqueue", "Echo"}, 2, {"huge-base.yml", "base", "at most"}},
        /* Every command and option: empty values, numbers out of range, extra arguments. */
        {"empty --db", NULL, NULL, {"--db", "", "jobs"}, 2, {"--db", "empty"}},
        {"empty --config", NULL, NULL, {"--config", "", "jobs"}, 2, {"--config", "empty"}},
        {"empty --args", NULL, NULL, {"enqueue", "Echo", "--args", ""}, 2, {"--args", "empty"}},
        {"empty --class filter", NULL, NULL, {"jobs", "--class", ""}, 2, {"--class", "empty"}},
        {"empty --key filter", NULL, NULL, {"semaphores", "--key", ""}, 2, {"--key", "empty"}},
        {"empty --key to unblock", NULL, NULL, {"unblock", "--key", ""}, 2, {"--key", "empty"}},
        {"empty --pidfile", NULL, NULL, {"start", "--pidfile", ""}, 2, {"--pidfile", "empty"}},
        {"init with an argument", NULL, NULL, {"init", "extra"}, 2, {"init", "no arguments"}},
        {"top with an argument", NULL, NULL, {"top", "extra"}, 2, {"top", "no arguments"}},
        {"negative job id", NULL, NULL, {"job", "-1"}, 2, {"-1", "positive"}},
        {"job id 2^63", NULL, NULL, {"job", "9223372036854775808"}, 2, {"9223372036854775808"}},
        {"discard id not a number", NULL, NULL, {"discard", "abc"}, 2, {"abc"}},
        {"discard without an id", NULL, NULL, {"discard"}, 2, {"usage"}},
        {"pause without a queue", NULL, NULL, {"pause"}, 2, {"usage"}},
        {"resume not UTF-8", NULL, NULL, {"resume", "\xff"}, 2, {"queue name", "UTF-8"}},
        {"--class without --all-failed", NULL, NULL, {"retry", "--class", "Echo"}, 2, {"--all-failed"}},
        {"unblock id not a number", NULL, NULL, {"unblock", "abc"}, 2, {"abc"}},
        {"semaphore without clear", NULL, NULL, {"semaphore", "bogus"}, 2, {"usage"}},
        {"perform unknown class", NULL, NULL, {"perform", "NoSuchClass"}, 2, {"NoSuchClass"}},
        {"perform --wait-timeout nan", NULL, NULL, {"perform", "Echo", "--wait-timeout", "nan"}, 2, {"--wait-timeout"}},
        {"--on-conflict unknown", NULL, NULL, {"enqueue", "Echo", "--on-conflict", "sometimes"}, 2, {"sometimes"}},
        {"--limit 0", NULL, NULL, {"enqueue", "Echo", "--limit", "0"}, 2, {"--limit", "'0'"}},
        {"--duration nan", NULL, NULL, {"enqueue", "Echo", "--duration", "nan"}, 2, {"--duration", "nan"}},
        {"arguments not UTF-8", NULL, NULL, {"enqueue", "Echo", "--args", "[\"\xff\"]"}, 2, {"JSON"}},
        {"work --queues of nothing", NULL, NULL, {"work", "--queues", ","}, 2, {"queue"}},
        {"work --threads 0", NULL, NULL, {"work", "--threads", "0"}, 2, {"--threads", "'0'"}},
        {"dispatch --batch-size 0", NULL, NULL, {"dispatch", "--batch-size", "0"}, 2, {"--batch-size", "'0'"}},
        {"dispatch --polling-interval nan", NULL, NULL, {"dispatch", "--polling-interval", "nan"}, 2,
         {"--polling-interval", "nan"}},
        {"dispatch unknown option", NULL, NULL, {"dispatch", "--bogus"}, 2, {"bogus"}},
        {"schedule --polling-interval -1", NULL, NULL, {"schedule", "--polling-interval", "-1"}, 2,
         {"--polling-interval", "-1"}},
        {"start --only unknown", NULL, NULL, {"start", "--only", "bogus"}, 2, {"--only", "bogus"}},
        {"clear-finished --older-than nan", NULL, NULL, {"clear-finished", "--older-than", "nan"}, 2, {"--older-than"}},
        {"clear-finished with an argument", NULL, NULL, {"clear-finished", "extra"}, 2, {"no arguments"}},
        {"running --longer-than -1", NULL, NULL, {"running", "--longer-than", "-1"}, 2, {"--longer-than"}},
        {"stats --since nan", NULL, NULL, {"stats", "--since", "nan"}, 2, {"--since", "nan"}},
        {"queues unknown option", NULL, NULL, {"queues", "--bogus"}, 2, {"bogus"}},
        {"processes unknown option", NULL, NULL, {"processes", "--bogus"}, 2, {"bogus"}},
        {"doctor unknown option", NULL, NULL, {"doctor", "--bogus"}, 2, {"bogus"}},
        {"metrics unknown option", NULL, NULL, {"metrics", "--bogus"}, 2, {"bogus"}},
        {"recurring add bad schedule", NULL, NULL, {"recurring", "add", "k", "--class", "Echo", "--schedule", "61 * * * *"},
         2, {"minute", "61"}},
        {"recurring add schedule that never runs", NULL, NULL,
         {"recurring", "add", "k", "--class", "Echo", "--schedule", "0 0 31 2 *"}, 2, {"never"}},
        {"recurring add zone outside the zone directory", NULL, NULL,
         {"recurring", "add", "k", "--class", "Echo", "--schedule", "* * * * *", "--timezone", "../etc/passwd"}, 2,
         {"time zone"}},
        {"recurring add unknown zone", NULL, NULL,
         {"recurring", "add", "k", "--class", "Echo", "--schedule", "* * * * *", "--timezone", "Mars/Olympus"}, 2,
         {"Mars/Olympus"}},
        {"recurring add --priority 2^40", NULL, NULL,
         {"recurring", "add", "k", "--class", "Echo", "--schedule", "* * * * *", "--priority", "1099511627776"}, 2,
         {"--priority"}},
        {"recurring add unknown class", NULL, NULL, {"recurring", "add", "k", "--class", "Nope", "--schedule", "* * * * *"},
         2, {"Nope"}},
        {"recurring add without --schedule", NULL, NULL, {"recurring", "add", "k", "--class", "Echo"}, 2, {"usage"}},
        {"recurring remove without a key", NULL, NULL, {"recurring", "remove"}, 2, {"usage"}},
        {"recurring unknown subcommand", NULL, NULL, {"recurring", "bogus"}, 2, {"bogus"}},
    };
    /* Every case runs, so one report lists every breach. */
    char *breaches = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        run_result r = run_with(c->db ? c->db : f->db, c->cfg ? c->cfg : f->cfg, NULL, c->args);
        char *msg = error_breach(&r, c->code, c->words, c->what);
        if (strstr(r.err, "s3cret") || strstr(r.out, "s3cret"))
            msg = cat_fmt(msg, "%s: the URL's password is shown: %s\n", c->what, r.err);
        if (msg) {
            breaches = cat_fmt(breaches, "%s", msg);
            free(msg);
        }
        run_result_free(&r);
        expect_db_unchanged(f, baseline, c->what);
    }

    /* Where the URL is shown on success, its password is not. */
    if (test_on_postgres()) {
        const char *at = strchr(f->db, '@'), *scheme_end = strstr(f->db, "://");
        assert_non_null(at);
        assert_true(scheme_end && !memchr(scheme_end + 3, ':', (size_t)(at - scheme_end - 3)));
        char with_password[PATH_LEN + 64], with_param[PATH_LEN + 64];
        snprintf(with_password, sizeof with_password, "%.*s:s3cret%s", (int)(at - f->db), f->db, at);
        snprintf(with_param, sizeof with_param, "%s%cpassword=s3cret", f->db, strchr(f->db, '?') ? '&' : '?');
        const char *urls[] = {with_password, with_param};
        const char *init[] = {"init", NULL};
        for (size_t i = 0; i < 2; i++) {
            run_result r = run_with(urls[i], f->cfg, NULL, init);
            CHECK_EXIT(r, 0);
            if (strstr(r.out, "s3cret") || !strstr(r.out, "***"))
                fail_msg("baton init shows the URL's password: %s", r.out);
            run_result_free(&r);
        }
    }

    /* A locked database: another connection holds the write lock past the busy timeout. */
    if (test_on_postgres()) {
        print_message("[  SKIPPED ] locked database: SQLite only (PostgreSQL has no database-wide write lock)\n");
    } else {
        char url[PATH_LEN + 64];
        snprintf(url, sizeof url, "%s?busy_timeout=200", f->db);
        sqlite3 *db = sql_open(f->file);
        sql_exec(db, "BEGIN EXCLUSIVE");
        const char *args[] = {"enqueue", "Echo", NULL};
        int64_t t0 = bt_mono_ns();
        run_result r = run_with(url, f->cfg, NULL, args);
        double took = (double)(bt_mono_ns() - t0) / 1e9;
        check_error(&r, 1, (const char *const[]){"locked", NULL}, "locked database");
        run_result_free(&r);
        /* busy_timeout=200 was honoured, not the 10 s default. */
        if (took > 5.0)
            fail_msg("enqueue on a locked database took %.1f s with busy_timeout=200", took);
        sql_exec(db, "ROLLBACK");
        sqlite3_close(db);
        expect_db_unchanged(f, baseline, "locked database");
    }
    free(baseline);

    /* A schema newer than this Baton: refused by every command, init included, untouched. */
    {
        char newer[PATH_LEN + 8];
        test_db_create(newer, sizeof newer, f->dir, "newer");
        const char *init[] = {"init", NULL};
        run_result r = run_with(newer, f->cfg, NULL, init);
        CHECK_EXIT(r, 0);
        run_result_free(&r);
        bt_store *db = test_db_open(newer);
        test_db_exec(db, "INSERT INTO baton_schema_migrations VALUES (99, 0)");
        bt_store_close(db);
        const char *list_tables = test_on_postgres()
            ? "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
            : "SELECT name FROM sqlite_master ORDER BY type, name";
        char *tables = sql_lines(newer, list_tables);

        const char *cmds[][3] = {{"jobs", NULL}, {"enqueue", "Echo", NULL}, {"init", NULL}};
        for (size_t i = 0; i < 3; i++) {
            r = run_with(newer, f->cfg, NULL, cmds[i]);
            check_error(&r, 1, (const char *const[]){"newer", NULL}, cmds[i][0]);
            run_result_free(&r);
        }
        char *version = sql_lines(newer, "SELECT MAX(version) FROM baton_schema_migrations");
        assert_string_equal(version, "99\n");
        char *count = sql_lines(newer, "SELECT COUNT(*) FROM baton_jobs");
        assert_string_equal(count, "0\n");
        char *tables_after = sql_lines(newer, list_tables);
        assert_string_equal(tables_after, tables);
        test_db_drop(newer);
        free(version);
        free(count);
        free(tables);
        free(tables_after);
    }

    /* No schema at all: told to run 'baton init'. */
    {
        char fresh[PATH_LEN + 8];
        test_db_create(fresh, sizeof fresh, f->dir, "fresh");
        const char *cmds[][3] = {{"jobs", NULL}, {"enqueue", "Echo", NULL}};
        for (size_t i = 0; i < 2; i++) {
            run_result r = run_with(fresh, f->cfg, NULL, cmds[i]);
            check_error(&r, 1, (const char *const[]){"baton init", NULL}, cmds[i][0]);
            run_result_free(&r);
        }
        test_db_drop(fresh);
    }

    /* The table's breaches, reported last so the checks above ran too. */
    if (breaches) {
        /* cmocka truncates long messages: print the whole list first. */
        fprintf(stderr, "bad input not refused as it should be:\n%s", breaches);
        free(breaches);
        fail_msg("%s", "bad input not refused as it should be (listed above)");
    }
}

/* ====================================================================================== */
/* 2. Lifecycle                                                                            */
/* ====================================================================================== */

static int queue_paused(fx *f, const char *queue)
{
    char *out = OK(f, "queues", "--json");
    json_t *list = parse_json(out, __LINE__);
    free(out);
    int paused = -1;
    size_t i;
    json_t *q;
    json_array_foreach(list, i, q)
    {
        if (str_of(q, "name") && strcmp(str_of(q, "name"), queue) == 0) {
            json_t *p = json_object_get(q, "paused");
            assert_true(json_is_boolean(p));
            paused = json_is_true(p);
        }
    }
    json_decref(list);
    return paused;
}

static void test_lifecycle(void **state)
{
    fx *f = *state;
    init_with(f, "jobs:\n"
                 "  Echo:\n"
                 "    command: 'cat > /dev/null'\n");
    int64_t now_id = ENQUEUE(f, "Echo", "--args", "{\"to\": \"ann\"}");
    int64_t later = ENQUEUE(f, "Echo", "--in", "60");
    assert_true(later > now_id);

    json_t *j = JOB(f, now_id);
    assert_string_equal(str_of(j, "status"), "ready");
    assert_string_equal(str_of(j, "class"), "Echo");
    assert_string_equal(str_of(j, "queue"), "default");
    assert_int_equal(int_of(j, "priority"), 0);
    assert_int_equal(int_of(j, "attempts"), 0);
    json_t *expected_args = json_pack("{s:s}", "to", "ann");
    assert_true(json_equal(json_object_get(j, "arguments"), expected_args));
    json_decref(expected_args);
    assert_true(json_is_null(json_object_get(j, "finished_at")));
    assert_true(json_is_null(json_object_get(j, "error")));
    int64_t created = time_of(j, "created_at");
    int64_t wall = bt_now_ms();
    assert_true(created <= wall && created > wall - 60000);
    json_decref(j);

    j = JOB(f, later);
    assert_string_equal(str_of(j, "status"), "scheduled");
    int64_t delay = time_of(j, "scheduled_at") - time_of(j, "created_at");
    if (delay < 59000 || delay > 61000)
        fail_msg("--in 60 scheduled the job %lld ms after its creation", (long long)delay);
    json_decref(j);

    /* jobs lists newest first and filters by status. */
    json_t *all = JOBS(f);
    assert_int_equal(json_array_size(all), 2);
    assert_int_equal(int_of(json_array_get(all, 0), "id"), later);
    assert_int_equal(int_of(json_array_get(all, 1), "id"), now_id);
    json_decref(all);
    char *out = OK(f, "jobs", "--status", "scheduled", "--json");
    all = parse_json(out, __LINE__);
    free(out);
    assert_int_equal(json_array_size(all), 1);
    assert_int_equal(int_of(json_array_get(all, 0), "id"), later);
    json_decref(all);

    assert_int_equal(queue_paused(f, "default"), 0);
    DO(f, "pause", "default");
    assert_int_equal(queue_paused(f, "default"), 1);
    DO(f, "pause", "default"); /* idempotent */
    assert_int_equal(queue_paused(f, "default"), 1);
    DO(f, "resume", "default");
    assert_int_equal(queue_paused(f, "default"), 0);

    pid_t w = START_WORKER(f, "--queues", "default", "--threads", "2");
    WAIT_DONE(f, now_id);
    j = JOB(f, now_id);
    assert_string_equal(str_of(j, "status"), "finished");
    assert_int_equal(int_of(j, "attempts"), 1);
    assert_true(time_of(j, "finished_at") >= created);
    json_decref(j);
    EXPECT_JOB(f, later, "scheduled", 0);

    char later_id[32];
    snprintf(later_id, sizeof later_id, "%lld", (long long)later);
    DO(f, "discard", later_id);
    EXPECT_JOB(f, later, "discarded", 0);

    out = OK(f, "clear-finished", "--older-than", "0");
    assert_string_equal(out, "1\n");
    free(out);
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)now_id);
    run_result r = RUN(f, NULL, "job", ids);
    check_error(&r, 3, (const char *const[]){"not found", NULL}, "job after clear-finished");
    run_result_free(&r);
    EXPECT_JOB(f, later, "discarded", 0);
    STOP_WORKER(f, w);
}

/* ====================================================================================== */
/* 3. Command jobs                                                                         */
/* ====================================================================================== */

enum { BIG = 1 << 20 };

static void test_command_jobs(void **state)
{
    fx *f = *state;
    char *cfg = cat_fmt(NULL,
                        "jobs:\n"
                        "  Ok:\n"
                        "    queue: cmd\n"
                        "    command: 'cat > /dev/null'\n"
                        "  Bad:\n"
                        "    queue: cmd\n"
                        "    command: 'cat > /dev/null; echo \"disk on fire\" >&2; exit 7'\n"
                        "  Slow:\n"
                        "    queue: cmd\n"
                        "    command: 'sleep 30'\n"
                        "    timeout: 0.5\n"
                        "  Copy:\n"
                        "    queue: cmd\n"
                        "    command: 'cat > %s'\n"
                        "  Env:\n"
                        "    queue: cmd\n"
                        "    command: 'printf \"%%s|%%s|%%s|%%s|%%s\\n\" \"$BATON_JOB_ID\" "
                        "\"$BATON_JOB_CLASS\" \"$BATON_QUEUE\" \"$BATON_ATTEMPT\" "
                        "\"$BATON_CONCURRENCY_KEY\" > %s'\n",
                        in_dir(f, "stdin.out"), in_dir(f, "env.out"));
    init_with(f, cfg);
    free(cfg);

    /* ~1 MiB JSON string with a pattern that shows dropped or reordered chunks. */
    char *payload = malloc(BIG + 3);
    assert_non_null(payload);
    payload[0] = '"';
    for (size_t i = 1; i <= BIG; i++)
        payload[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + (i >> 10)) % 36];
    payload[BIG + 1] = '"';
    payload[BIG + 2] = '\0';
    char args_at[PATH_LEN + 2];
    snprintf(args_at, sizeof args_at, "@%s", in_dir(f, "big.json"));
    write_file(args_at + 1, payload);

    int64_t ok = ENQUEUE(f, "Ok", "--args", "{\"a\": [1, 2]}");
    int64_t bad = ENQUEUE(f, "Bad");
    int64_t slow = ENQUEUE(f, "Slow");
    int64_t copy = ENQUEUE(f, "Copy", "--args", args_at);
    int64_t env = ENQUEUE(f, "Env", "--queue", "envq");

    int64_t t0 = bt_mono_ns();
    pid_t w = START_WORKER(f, "--queues", "cmd,envq", "--threads", "5");
    int64_t ids[] = {ok, bad, slow, copy, env};
    for (size_t i = 0; i < 5; i++)
        WAIT_DONE(f, ids[i]);
    double took = (double)(bt_mono_ns() - t0) / 1e9;
    STOP_WORKER(f, w);
    if (took > 20)
        fail_msg("the timed-out job held its thread for %.1f s", took);

    EXPECT_JOB(f, ok, "finished", 1);

    json_t *j = expect_job_at(__LINE__, f, bad, "failed", 1);
    const char *err = str_of(j, "error");
    assert_non_null(err);
    if (!strstr(err, "exit status 7") || !strstr(err, "disk on fire"))
        fail_msg("failed job's error lacks the exit status or stderr: %s", err);
    json_decref(j);

    j = expect_job_at(__LINE__, f, slow, "failed", 1);
    err = str_of(j, "error");
    if (!err || !strstr(err, "timed out"))
        fail_msg("timed-out job's error: %s", err ? err : "(null)");
    json_decref(j);

    EXPECT_JOB(f, copy, "finished", 1);
    char *got = read_file(in_dir(f, "stdin.out"));
    assert_non_null(got);
    if (strlen(got) != BIG + 2)
        fail_msg("the command read %zu bytes of arguments, expected %d", strlen(got), BIG + 2);
    assert_true(memcmp(got, payload, BIG + 2) == 0);
    free(got);
    free(payload);

    EXPECT_JOB(f, env, "finished", 1);
    got = read_file(in_dir(f, "env.out"));
    assert_non_null(got);
    char want[128];
    snprintf(want, sizeof want, "%lld|Env|envq|1|\n", (long long)env);
    assert_string_equal(got, want);
    free(got);
}

/* ====================================================================================== */
/* 4. Retries                                                                              */
/* ====================================================================================== */

static void test_retries(void **state)
{
    fx *f = *state;
    char *cfg = cat_fmt(NULL,
                        "jobs:\n"
                        "  Flaky:\n"
                        "    command: 'echo \"attempt $BATON_ATTEMPT\" >> %s; test \"$BATON_ATTEMPT\" = 3'\n"
                        "    retry: {attempts: 3, backoff: fixed, base: 0}\n"
                        "  Doomed:\n"
                        "    command: 'echo \"no luck\" >&2; exit 1'\n"
                        "    retry:\n"
                        "      attempts: 2\n"
                        "      backoff: fixed\n"
                        "      base: 0\n",
                        in_dir(f, "flaky.log"));
    init_with(f, cfg);
    free(cfg);
    int64_t flaky = ENQUEUE(f, "Flaky");
    int64_t d1 = ENQUEUE(f, "Doomed");
    int64_t d2 = ENQUEUE(f, "Doomed");

    pid_t w = START_WORKER(f, "--threads", "2");
    WAIT_DONE(f, flaky);
    WAIT_DONE(f, d1);
    WAIT_DONE(f, d2);
    STOP_WORKER(f, w);

    json_t *j = expect_job_at(__LINE__, f, flaky, "finished", 3);
    assert_true(json_is_null(json_object_get(j, "error")));
    json_decref(j);
    char *log = read_file(in_dir(f, "flaky.log"));
    assert_non_null(log);
    assert_string_equal(log, "attempt 1\nattempt 2\nattempt 3\n");
    free(log);
    int64_t doomed[] = {d1, d2};
    for (int i = 0; i < 2; i++) {
        j = expect_job_at(__LINE__, f, doomed[i], "failed", 2);
        const char *err = str_of(j, "error");
        if (!err || !strstr(err, "exit status 1") || !strstr(err, "no luck"))
            fail_msg("error of job %lld: %s", (long long)doomed[i], err ? err : "(null)");
        json_decref(j);
    }

    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)d1);
    char *out = OK(f, "retry", ids);
    assert_string_equal(out, "");
    free(out);
    EXPECT_JOB(f, d1, "ready", -1);
    EXPECT_JOB(f, d2, "failed", 2);

    out = OK(f, "retry", "--all-failed", "--class", "Flaky");
    assert_string_equal(out, "0\n");
    free(out);
    EXPECT_JOB(f, d2, "failed", 2);
    out = OK(f, "retry", "--all-failed");
    assert_string_equal(out, "1\n");
    free(out);
    EXPECT_JOB(f, d2, "ready", -1);
    out = OK(f, "retry", "--all-failed");
    assert_string_equal(out, "0\n");
    free(out);

    /* Retried jobs really run again. */
    w = START_WORKER(f, "--threads", "2");
    WAIT_DONE(f, d1);
    WAIT_DONE(f, d2);
    STOP_WORKER(f, w);
    EXPECT_JOB(f, d1, "failed", -1);
    EXPECT_JOB(f, d2, "failed", -1);
    EXPECT_JOB(f, flaky, "finished", 3);
}

/* ====================================================================================== */
/* 5. perform                                                                              */
/* ====================================================================================== */

static void test_perform(void **state)
{
    fx *f = *state;
    char *cfg = cat_fmt(NULL,
                        "jobs:\n"
                        "  Ok:\n"
                        "    command: 'cat > %s'\n"
                        "  Bad:\n"
                        "    command: 'echo \"disk on fire\" >&2; exit 7'\n",
                        in_dir(f, "perform.out"));
    init_with(f, cfg);
    free(cfg);

    run_result r = RUN(f, NULL, "perform", "Ok", "--args", "{\"x\":1}");
    CHECK_EXIT(r, 0);
    int64_t ok = parse_id_line(r.out, __LINE__);
    run_result_free(&r);
    json_t *j = expect_job_at(__LINE__, f, ok, "finished", 1);
    json_t *want = json_pack("{s:i}", "x", 1);
    assert_true(json_equal(json_object_get(j, "arguments"), want));
    json_decref(want);
    assert_true(is_iso_ms(str_of(j, "finished_at")));
    json_decref(j);
    char *got = read_file(in_dir(f, "perform.out"));
    assert_non_null(got);
    assert_string_equal(got, "{\"x\":1}");
    free(got);

    r = RUN(f, NULL, "perform", "Bad");
    check_exit(&r, 1, __LINE__);
    int64_t bad = parse_id_line(r.out, __LINE__);
    /* stdout carries the id, so check the stderr line by hand. */
    assert_true(strncmp(r.err, "baton: ", 7) == 0);
    assert_true(strchr(r.err, '\n') == r.err + strlen(r.err) - 1);
    if (!strstr(r.err, "exit status 7") || !strstr(r.err, "disk on fire"))
        fail_msg("perform's stderr lacks the job's error: %s", r.err);
    run_result_free(&r);
    j = expect_job_at(__LINE__, f, bad, "failed", 1);
    const char *err = str_of(j, "error");
    if (!err || !strstr(err, "exit status 7") || !strstr(err, "disk on fire"))
        fail_msg("performed job's error: %s", err ? err : "(null)");
    json_decref(j);

    r = RUN(f, NULL, "perform", "Missing");
    check_error(&r, 2, (const char *const[]){"Missing", NULL}, "perform of an unknown class");
    run_result_free(&r);
    json_t *all = JOBS(f);
    assert_int_equal(json_array_size(all), 2);
    json_decref(all);
}

/* ====================================================================================== */
/* 6. Queue order, wildcards, pauses and priorities with one worker thread                 */
/* ====================================================================================== */

typedef struct qjob {
    const char *queue;
    int64_t id;
} qjob;

static int64_t enqueue_in(fx *f, const char *queue, const char *priority)
{
    if (priority)
        return ENQUEUE(f, "Log", "--queue", queue, "--priority", priority);
    return ENQUEUE(f, "Log", "--queue", queue);
}

/* The log must read exactly the given jobs in order. */
static void expect_log(fx *f, const qjob *jobs, size_t n, const char *what)
{
    char *want = cat_fmt(NULL, "%s", "");
    for (size_t i = 0; i < n; i++)
        want = cat_fmt(want, "%s %lld\n", jobs[i].queue, (long long)jobs[i].id);
    char *got = read_file(in_dir(f, "order.log"));
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s: jobs ran in the wrong order\n  expected:\n%s  got:\n%s", what, want,
                 got ? got : "(no log)\n");
    free(got);
    free(want);
}

static void test_queue_order(void **state)
{
    fx *f = *state;
    char *cfg = cat_fmt(NULL,
                        "jobs:\n"
                        "  Log:\n"
                        "    command: 'echo \"$BATON_QUEUE $BATON_JOB_ID\" >> %s'\n",
                        in_dir(f, "order.log"));
    init_with(f, cfg);
    free(cfg);

    int64_t b1 = enqueue_in(f, "b", NULL);
    int64_t a1 = enqueue_in(f, "a", NULL);
    int64_t xmail = enqueue_in(f, "x_mail", NULL);
    int64_t mail = enqueue_in(f, "mail_x", NULL);
    int64_t other = enqueue_in(f, "other", NULL);
    int64_t b2 = enqueue_in(f, "b", NULL);
    int64_t a2 = enqueue_in(f, "a", NULL);

    /* "a,b": every ready job of a before any of b, whatever the ids. */
    pid_t w = START_WORKER(f, "--queues", "a,b", "--threads", "1");
    int64_t ab[] = {a1, a2, b1, b2};
    for (int i = 0; i < 4; i++)
        WAIT_DONE(f, ab[i]);
    STOP_WORKER(f, w);
    qjob order[16] = {{"a", a1}, {"a", a2}, {"b", b1}, {"b", b2}};
    size_t n = 4;
    expect_log(f, order, n, "--queues a,b");
    int64_t untouched[] = {xmail, mail, other};
    for (int i = 0; i < 3; i++)
        EXPECT_JOB(f, untouched[i], "ready", 0);

    /* "mail*" is a prefix: mail_x runs, x_mail (an older job) does not. */
    w = START_WORKER(f, "--queues", "mail*", "--threads", "1");
    WAIT_DONE(f, mail);
    STOP_WORKER(f, w);
    order[n++] = (qjob){"mail_x", mail};
    expect_log(f, order, n, "--queues mail*");
    EXPECT_JOB(f, mail, "finished", 1);
    EXPECT_JOB(f, xmail, "ready", 0);
    EXPECT_JOB(f, other, "ready", 0);

    /* A paused queue is skipped: "other" is older than a3, so it would run first. */
    DO(f, "pause", "other");
    int64_t a3 = enqueue_in(f, "a", NULL);
    w = START_WORKER(f, "--queues", "*", "--threads", "1");
    WAIT_DONE(f, xmail);
    WAIT_DONE(f, a3);
    order[n++] = (qjob){"x_mail", xmail};
    order[n++] = (qjob){"a", a3};
    expect_log(f, order, n, "other paused");
    EXPECT_JOB(f, other, "ready", 0);
    DO(f, "resume", "other");
    WAIT_DONE(f, other);
    STOP_WORKER(f, w);
    order[n++] = (qjob){"other", other};
    expect_log(f, order, n, "other resumed");
    EXPECT_JOB(f, other, "finished", 1);

    /* Within a queue: smaller priority first, ties by id. */
    int64_t p5 = enqueue_in(f, "p", "5");
    int64_t p1a = enqueue_in(f, "p", "1");
    int64_t p3 = enqueue_in(f, "p", "3");
    int64_t p1b = enqueue_in(f, "p", "1");
    int64_t pm2 = enqueue_in(f, "p", "-2");
    w = START_WORKER(f, "--queues", "p", "--threads", "1");
    int64_t ps[] = {p5, p1a, p3, p1b, pm2};
    for (int i = 0; i < 5; i++)
        WAIT_DONE(f, ps[i]);
    STOP_WORKER(f, w);
    order[n++] = (qjob){"p", pm2};
    order[n++] = (qjob){"p", p1a};
    order[n++] = (qjob){"p", p1b};
    order[n++] = (qjob){"p", p3};
    order[n++] = (qjob){"p", p5};
    expect_log(f, order, n, "priorities");
}

/* ====================================================================================== */
/* 7. Log formats                                                                          */
/* ====================================================================================== */

static int is_level(const char *s)
{
    const char *const levels[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; s && i < 4; i++)
        if (strcmp(s, levels[i]) == 0)
            return 1;
    return 0;
}

/* json_log_line parses one line of a JSON log and checks the keys every line has. */
static json_t *json_log_line(const char *line, size_t len)
{
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(obj))
        fail_msg("log line is not a JSON object (%s): %.*s", jerr.text, (int)len, line);
    if (!is_iso_ms(str_of(obj, "time")) || !is_level(str_of(obj, "level")) || !str_of(obj, "event"))
        fail_msg("log line lacks time, level or event: %.*s", (int)len, line);
    return obj;
}

/* spawn_with_nofile starts `baton ARGS` (NULL-terminated) with RLIMIT_NOFILE set to
 * soft/hard in its own process, output to log. */
static pid_t spawn_with_nofile(rlim_t soft, rlim_t hard, const char *log, const char *const *args)
{
    const char *argv[MAX_ARGS] = {getenv("BATON_BIN")};
    size_t n = 1;
    while (args[n - 1] && n < MAX_ARGS - 1) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {soft, hard};
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* A worker with 50 threads and a soft limit of 40 open files would fail job after job
 * with "Too many open files": it raises the soft limit it needs, and runs them all. With
 * a hard limit of 40 it cannot: it refuses to start, saying why, and fails no job. */
static void test_descriptor_limit(void **state)
{
    fx *f = *state;
    init_with(f, "jobs:\n  Ok:\n    command: 'cat > /dev/null'\n");
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    SKIP_UNLESS(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= 1024, "the hard limit of open files is below 1024");
    enum { JOBS = 100 };
    baton_client *c;
    assert_int_equal(baton_open(&c, f->db), BATON_OK);
    assert_int_equal(baton_load_config(c, f->cfg), BATON_OK);
    baton_job_spec specs[JOBS];
    int64_t ids[JOBS];
    for (int i = 0; i < JOBS; i++)
        specs[i] = (baton_job_spec){"Ok", "[]", NULL};
    assert_int_equal(baton_enqueue_many(c, ids, specs, JOBS), BATON_OK);
    baton_close(c);

    const char *args[] = {"--db", f->db, "--config", f->cfg, "work", "--threads", "50", NULL};
    char log[PATH_LEN];
    snprintf(log, sizeof log, "%s", in_dir(f, "hard.log"));
    pid_t refused = spawn_with_nofile(40, 40, log, args);
    int status = wait_exit(refused, 30000);
    char *text = read_file(log);
    if (status == 0 || !text || !strstr(text, "open files"))
        fail_msg("with a hard limit of 40 open files: exit %d, output: %s", status, text ? text : "(none)");
    free(text);
    EXPECT_JOB(f, ids[0], "ready", 0);

    snprintf(log, sizeof log, "%s", in_dir(f, "soft.log"));
    pid_t w = spawn_with_nofile(40, rl.rlim_max, log, args);
    for (int i = 0; i < JOBS; i++)
        WAIT_DONE(f, ids[i]);
    kill(w, SIGTERM);
    assert_int_equal(wait_exit(w, 30000), 0);
    for (int i = 0; i < JOBS; i++)
        EXPECT_JOB(f, ids[i], "finished", 1);
}

/* A command's stderr (the job's error) or a name stored by an SQL enqueuer may hold
 * control characters: tables show them as \xNN, never raw, so a report cannot clear the
 * screen or rewrite what the operator reads. */
static void test_tables_escape_control_characters(void **state)
{
    fx *f = *state;
    init_with(f, "jobs:\n  Esc:\n    command: \"printf '\\\\033[2J\\\\rgone' >&2; exit 1\"\n");
    int64_t id = ENQUEUE(f, "Esc");
    pid_t w = START_WORKER(f, "--threads", "1");
    WAIT_DONE(f, id);
    STOP_WORKER(f, w);
    char *out = OK(f, "jobs");
    if (strchr(out, '\033') || strchr(out, '\r') || !strstr(out, "\\x1b[2J\\x0dgone"))
        fail_msg("baton jobs shows the error raw or mangled: %s", out);
    free(out);
    char id_text[24];
    snprintf(id_text, sizeof id_text, "%lld", (long long)id);
    out = OK(f, "job", id_text);
    if (strchr(out, '\033') || strchr(out, '\r'))
        fail_msg("baton job shows the error raw: %s", out);
    free(out);
}

/* open_fds counts the descriptors process pid has open. */
static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* log_tells_a_start_failed: the worker's log (path) shows a command it could not start,
 * handed back or (wrongly) failed. */
static int log_tells_a_start_failed(void *path)
{
    char *text = read_file(path);
    int found = text && (strstr(text, "event=job.not_started") || strstr(text, "event=job.failed"));
    free(text);
    return found;
}

/* A running worker runs out of descriptors (its limit lowered under it, as when other
 * work of the process takes them): its commands cannot start. That is the worker's
 * failure, not the jobs': each goes back to the queue, and runs once the descriptors are
 * back, none failed. */
static void test_job_the_worker_could_not_start_goes_back(void **state)
{
    fx *f = *state;
    init_with(f, "jobs:\n  Ok:\n    command: 'cat > /dev/null'\n");
    pid_t w = START_WORKER(f, "--threads", "2");
    struct rlimit old, tight;
    assert_int_equal(prlimit(w, RLIMIT_NOFILE, NULL, &old), 0);
    int64_t warm = ENQUEUE(f, "Ok");
    WAIT_DONE(f, warm); /* every connection of the worker is open by now */
    tight.rlim_cur = (rlim_t)open_fds(w) + 1;
    tight.rlim_max = old.rlim_max;
    assert_int_equal(prlimit(w, RLIMIT_NOFILE, &tight, NULL), 0);
    int64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = ENQUEUE(f, "Ok");
    if (!poll_until(log_tells_a_start_failed, f->worker_logs[0], 20000))
        fail_msg("the worker never failed to start a command (log %s)", f->worker_logs[0]);
    assert_int_equal(prlimit(w, RLIMIT_NOFILE, &old, NULL), 0);
    for (int i = 0; i < 4; i++)
        WAIT_DONE(f, ids[i]);
    STOP_WORKER(f, w);
    for (int i = 0; i < 4; i++)
        EXPECT_JOB(f, ids[i], "finished", -1);
}

/* `baton work --log-format json` writes one JSON object per line; ids are numbers and a
 * command's stderr with quotes, a backslash, a tab and a newline survives as one string. */
static void test_json_log(void **state)
{
    fx *f = *state;
    const char *nasty = "she said \"no\"\n\\ back\tslash";
    write_file(in_dir(f, "nasty.txt"), nasty);
    char *cfg = cat_fmt(NULL,
                        "jobs:\n"
                        "  Fine:\n"
                        "    command: 'true'\n"
                        "  Nasty:\n"
                        "    command: 'cat %s >&2; exit 4'\n",
                        in_dir(f, "nasty.txt"));
    init_with(f, cfg);
    free(cfg);
    int64_t fine = ENQUEUE(f, "Fine");
    int64_t bad = ENQUEUE(f, "Nasty");
    pid_t w = START_WORKER(f, "--log-format", "json", "--threads", "2");
    WAIT_DONE(f, fine);
    WAIT_DONE(f, bad);
    STOP_WORKER(f, w);

    char *log = read_file(f->worker_logs[0]);
    assert_non_null(log);
    char want_error[128];
    snprintf(want_error, sizeof want_error, "exit status 4: %s", nasty);
    int started = 0, finished = 0, failed = 0;
    for (char *line = log; *line;) {
        size_t len = strcspn(line, "\n");
        json_t *obj = json_log_line(line, len);
        const char *event = str_of(obj, "event");
        json_t *job_id = json_object_get(obj, "job_id");
        started += strcmp(event, "worker.started") == 0;
        if (strcmp(event, "job.finished") == 0) {
            assert_true(json_is_integer(job_id) && json_integer_value(job_id) == fine);
            assert_string_equal(str_of(obj, "class"), "Fine");
            assert_true(json_is_number(json_object_get(obj, "duration_ms")));
            finished++;
        }
        if (strcmp(event, "job.failed") == 0) {
            assert_true(json_is_integer(job_id) && json_integer_value(job_id) == bad);
            assert_string_equal(str_of(obj, "level"), "error");
            assert_string_equal(str_of(obj, "error"), want_error);
            failed++;
        }
        json_decref(obj);
        line += len + (line[len] == '\n');
    }
    free(log);
    assert_int_equal(started, 1);
    assert_int_equal(finished, 1);
    assert_int_equal(failed, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perform, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tables_escape_control_characters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_descriptor_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_the_worker_could_not_start_goes_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
