/* support.h: helpers shared by the cmocka suites: temporary directories, polling with a
 * deadline instead of sleeping, and running the baton CLI as a real process. */
#ifndef BT_TEST_SUPPORT_H
#define BT_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sys/types.h>

/* A fresh directory under $TMPDIR (or /tmp), removed with everything in it by tmpdir_remove. */
char *tmpdir_make(void);
void tmpdir_remove(char *dir);

/* path_join returns "dir/name" in a static rotating buffer (enough for a few at once). */
const char *path_join(const char *dir, const char *name);

/* Polls cond(arg) every millisecond or so until it returns nonzero or timeout_ms passes.
 * Returns 1 when the condition held. Use with assert_true and a descriptive condition. */
int poll_until(int (*cond)(void *), void *arg, int timeout_ms);
/* wait_none_holding waits up to timeout_ms until no process but this one has a file open
 * whose path begins with prefix (a test's directory, or its logs: nothing a test started
 * may outlive it) and returns 0, or how many still do. */
int wait_none_holding(const char *prefix, int timeout_ms);

/* Output of a finished CLI run. */
typedef struct run_result {
    int status;        /* exit code, or 128+signal */
    char *out;         /* whole stdout, NUL-terminated */
    char *err;         /* whole stderr, NUL-terminated */
} run_result;

/* Runs the baton binary ($BATON_BIN) with the NULL-terminated argv (without argv[0]),
 * feeding stdin_text (may be NULL) and waiting for it to exit. */
run_result baton_run(const char *stdin_text, const char *const *args);
/* Variadic form: baton_runv(NULL, "--db", url, "init", NULL). */
run_result baton_runv(const char *stdin_text, ...);
void run_result_free(run_result *r);

/* Starts the baton binary in the background with stdout/stderr sent to log_path (may be
 * NULL for /dev/null). Returns its pid. */
pid_t baton_spawn(const char *log_path, const char *const *args);
/* The same, leading a process group of its own (whose id is the pid), as a shell's job. */
pid_t baton_spawn_group(const char *log_path, const char *const *args);
/* Waits for pid to exit within timeout_ms; returns its exit code or 128+signal, or -1 on
 * timeout (the process is then killed). */
int wait_exit(pid_t pid, int timeout_ms);

/* Reads a whole file into a malloc'ed NUL-terminated string (NULL when unreadable). */
char *read_file(const char *path);
/* Writes text to path, replacing it. */
void write_file(const char *path, const char *text);
/* Counts lines in a file (0 when missing). */
int count_lines(const char *path);

/* ---- the database under test ----
 * SQLite files by default. A test registered a second time with the suffix .pg runs with
 * $BATON_TEST_DRIVER=postgres against the server whose admin database $BATON_TEST_PG_URL
 * names (postgres://USER@HOST:PORT/postgres): every database is then a fresh one created
 * there and dropped at the end. Without that URL the .pg tests skip. */

#include "store/store.h"

/* test_on_postgres is nonzero when this run tests the PostgreSQL driver. */
int test_on_postgres(void);

/* test_db_create writes to url (cap bytes) the URL of a fresh, empty database: a new
 * PostgreSQL database, or sqlite:DIR/NAME.db. test_db_drop removes a PostgreSQL one (and
 * leaves SQLite files to tmpdir_remove). */
void test_db_create(char *url, size_t cap, const char *dir, const char *name);
void test_db_drop(const char *url);

/* SKIP_UNLESS ends the current test as skipped, saying why, unless condition holds (a
 * test of one driver's own behaviour, for instance). */
#define SKIP_UNLESS(condition, why)                                                          \
    do {                                                                                     \
        if (!(condition)) {                                                                  \
            print_message("[  SKIPPED ] %s\n", why);                                         \
            skip();                                                                          \
        }                                                                                    \
    } while (0)

/* Direct access behind the library's back, through the same drivers: test_db_open,
 * test_db_exec (';'-separated statements), test_db_int (first column of the first row, 0
 * when none) and test_db_lines (the first column of every row, one per line, NULL as
 * "NULL"; free it). */
bt_store *test_db_open(const char *url);
void test_db_exec(bt_store *s, const char *sql);
int64_t test_db_int(bt_store *s, const char *sql);
char *test_db_lines(bt_store *s, const char *sql);

/* ---- library fixtures: a fresh database per test, and workers on threads ---- */

#include <jansson.h>
#include <pthread.h>

#include "baton.h"

typedef struct lib_fixture {
    char *dir;
    char url[4200];
    baton_client *client;
} lib_fixture;

/* cmocka setup/teardown: *state becomes a lib_fixture with a migrated database. */
int lib_setup(void **state);
int lib_teardown(void **state);

/* job_json returns the job as parsed JSON (json_decref it); job_status its status, in a
 * thread-local buffer. */
json_t *job_json(baton_client *c, int64_t id);
const char *job_status(baton_client *c, int64_t id);
/* wait_status fails the test unless job id reaches status within 10 s. */
void wait_status(baton_client *c, int64_t id, const char *status);

typedef struct running_worker {
    baton_worker *worker;
    pthread_t thread;
} running_worker;

/* worker_start runs a worker (polling every 10 ms) on a thread; worker_stop stops it
 * gracefully, joins it and checks it ended cleanly. */
running_worker worker_start(baton_client *c, const char *queues, int threads);
running_worker worker_start_with(baton_client *c, const baton_worker_options *o);
void worker_stop(running_worker *rw);

#endif
