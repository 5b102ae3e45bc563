/* sqlite.c: the embedded SQLite driver.
 *
 * One connection per bt_store. Statements written as literals in core/ are prepared once
 * and kept in a small pointer-keyed cache, so the hot path (claim, finish) never re-parses
 * SQL. Write transactions use BEGIN IMMEDIATE: SQLite has one writer at a time, and taking
 * the lock up front turns every lifecycle transition into a serialised critical section
 * (the property PostgreSQL gets from row locks). Busy waits use a short-step handler of our
 * own instead of SQLite's default, whose sleeps grow to 100 ms and would show up as latency.
 * Other processes' commits are noticed through inotify on the WAL file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"

enum { BUSY_TIMEOUT_MS = 10000 };

typedef struct sqlite_store {
    bt_store base;
    sqlite3 *db;
    char *path;
    bt_stmt_cache cache;
    int64_t busy_started_ns;
    int busy_timeout_ms;
    atomic_int interrupted; /* set by sqlite_interrupt: stop waiting for the lock */
    int inotify_fd;
    int borrowed;     /* db is the application's: never closed here */
    int in_savepoint; /* the open "transaction" is a savepoint in the application's */
    dev_t dev;        /* the opened file, while path still names it (see still_ours) */
    ino_t ino;
    int watch_file;
} sqlite_store;

typedef struct sqlite_row {
    bt_row base;
    sqlite3_stmt *stmt;
} sqlite_row;

static int map_error(sqlite_store *s, int rc, const char *what)
{
    const char *msg = sqlite3_errmsg(s->db);
    int code;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return bt_err_set(BATON_EBUSY, "sqlite:%s: database is locked (%s)", s->path, what);
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PERM:
        code = BATON_ESTORE;
        break;
    default:
        code = BATON_ERROR;
    }
    return bt_err_set(code, "sqlite:%s: %s (%s)", s->path, msg, what);
}

/* Short sleeps first: another Baton transaction usually holds the lock for well under a
 * millisecond, so waking every 50-1000 us keeps latency low without spinning. */
static int busy_handler(void *arg, int count)
{
    sqlite_store *s = arg;
    int64_t now = bt_mono_ns();
    if (count == 0)
        s->busy_started_ns = now;
    if (now - s->busy_started_ns > (int64_t)s->busy_timeout_ms * 1000000 || atomic_load(&s->interrupted))
        return 0;
    long step_us = count < 4 ? 50L << count : 1000;
    struct timespec ts = {0, step_us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

static int run_simple(sqlite_store *s, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        int code = map_error(s, rc, err ? err : sql);
        sqlite3_free(err);
        return code;
    }
    return BATON_OK;
}

/* parse_params reads "busy_timeout=MS&synchronous=normal|full" after the path. */
static int parse_params(sqlite_store *s, const char *query, const char **synchronous)
{
    char *copy = strdup(query), *save = NULL;
    int rc = BATON_OK;
    for (char *kv = strtok_r(copy, "&", &save); kv && rc == BATON_OK; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '='), *end = NULL;
        const char *value = eq ? eq + 1 : "";
        if (eq)
            *eq = '\0';
        if (strcmp(kv, "busy_timeout") == 0) {
            long ms = strtol(value, &end, 10);
            if (!*value || *end || ms < 0 || ms > 3600000)
                rc = bt_err_set(BATON_EINVALID, "sqlite:%s: busy_timeout must be milliseconds, got '%s'", s->path, value);
            s->busy_timeout_ms = (int)ms;
        } else if (strcmp(kv, "synchronous") == 0) {
            if (strcasecmp(value, "normal") == 0)
                *synchronous = "NORMAL";
            else if (strcasecmp(value, "full") == 0)
                *synchronous = "FULL";
            else
                rc = bt_err_set(BATON_EINVALID, "sqlite:%s: synchronous must be normal or full, got '%s'", s->path, value);
        } else {
            rc = bt_err_set(BATON_EINVALID, "sqlite:%s: unknown parameter '%s' (known: busy_timeout, synchronous)", s->path, kv);
        }
    }
    free(copy);
    return rc;
}

static void finalize_stmt(void *stmt) { sqlite3_finalize(stmt); }

static void sqlite_close(bt_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    bt_stmt_cache_clear(&s->cache, finalize_stmt);
    if (!s->borrowed)
        sqlite3_close(s->db);
    if (s->inotify_fd >= 0)
        close(s->inotify_fd);
    free(s->path);
    free(s);
}

/* baton_clock() is the liveness clock of schema.c: on one host, CLOCK_BOOTTIME, which
 * every process shares and no wall-clock step moves. */
static void clock_function(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, bt_boot_ms());
}

static int add_clock(sqlite_store *s)
{
    int rc = sqlite3_create_function_v2(s->db, "baton_clock", 0, SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL,
                                        clock_function, NULL, NULL, NULL);
    return rc == SQLITE_OK ? BATON_OK
                           : bt_err_set(BATON_ESTORE, "sqlite:%s: cannot add baton_clock(): %s", s->path,
                                        sqlite3_errmsg(s->db));
}

static int sqlite_open(bt_store **out, const char *target, const char *url)
{
    if (*target == '\0')
        return bt_err_set(BATON_EINVALID, "database URL '%s': missing path", url);
    sqlite_store *s = calloc(1, sizeof *s);
    if (!s)
        return bt_err_set(BATON_ERROR, "out of memory");
    s->base.ops = &bt_sqlite_ops;
    s->inotify_fd = -1;
    s->busy_timeout_ms = BUSY_TIMEOUT_MS;
    const char *query = strchr(target, '?');
    s->path = query ? strndup(target, (size_t)(query - target)) : strdup(target);
    const char *synchronous = "NORMAL";
    int rc = query ? parse_params(s, query + 1, &synchronous) : BATON_OK;
    if (rc != BATON_OK) {
        sqlite_close(&s->base);
        return rc;
    }
    /* A new database file is the owner's alone: job arguments may hold secrets. SQLite
     * gives its -wal and -shm files the main file's permissions. */
    if (strcmp(s->path, ":memory:") != 0) {
        int fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    rc = sqlite3_open_v2(s->path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int code = bt_err_set(BATON_ESTORE, "sqlite:%s: cannot open: %s", s->path,
                              s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sqlite_close(&s->base);
        return code;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_handler(s->db, busy_handler, s);
    if ((rc = add_clock(s)) != BATON_OK) {
        sqlite_close(&s->base);
        return rc;
    }
    /* WAL lets readers (CLI reports, dashboards) run beside the single writer; NORMAL
     * syncs at checkpoints, not every commit: a committed job survives a process crash,
     * and only an OS crash can lose the last few commits. */
    char pragmas[128];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;", synchronous);
    rc = run_simple(s, pragmas);
    if (rc != BATON_OK) {
        sqlite_close(&s->base);
        return rc;
    }
    struct stat st;
    if (strcmp(s->path, ":memory:") != 0 && stat(s->path, &st) == 0) {
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->watch_file = 1;
    }
    *out = &s->base;
    return BATON_OK;
}

/* still_ours fails a transaction once the path no longer names the file this store
 * opened (deleted, or replaced by another): SQLite would go on writing to the old file,
 * which nobody else reads, or mix its WAL into the new one. The store is then lost. */
static int still_ours(sqlite_store *s)
{
    struct stat st;
    if (!s->watch_file || (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino))
        return BATON_OK;
    s->base.lost = 1;
    return bt_err_set(BATON_ESTORE, "sqlite:%s: the database file was deleted or replaced while in use;"
                                    " nothing more is written to the old one", s->path);
}

static int prepare(sqlite_store *s, const char *sql, int cached, sqlite3_stmt **out)
{
    if (cached) {
        bt_stmt_slot *slot = bt_stmt_cache_find(&s->cache, sql);
        if (!slot)
            return bt_err_set(BATON_ERROR, "out of memory");
        if (slot->sql) {
            *out = slot->stmt;
            return BATON_OK;
        }
        int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
        if (rc != SQLITE_OK)
            return map_error(s, rc, "prepare");
        bt_stmt_cache_fill(&s->cache, slot, sql, *out);
        return BATON_OK;
    }
    int rc = sqlite3_prepare_v2(s->db, sql, -1, out, NULL);
    return rc == SQLITE_OK ? BATON_OK : map_error(s, rc, "prepare");
}

static int bind_all(sqlite_store *s, sqlite3_stmt *st, const bt_val *args, int nargs)
{
    for (int i = 0; i < nargs; i++) {
        int rc;
        switch (args[i].type) {
        case BT_VINT: rc = sqlite3_bind_int64(st, i + 1, args[i].i); break;
        case BT_VREAL: rc = sqlite3_bind_double(st, i + 1, args[i].d); break;
        case BT_VTEXT: rc = sqlite3_bind_text(st, i + 1, args[i].s, args[i].len, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(st, i + 1);
        }
        if (rc != SQLITE_OK)
            return map_error(s, rc, "bind");
    }
    return BATON_OK;
}

static int sqlite_exec(bt_store *base, const char *sql, int flags, const bt_val *args, int nargs,
                       bt_row_fn on_row, void *payload, int64_t *changes_out)
{
    sqlite_store *s = (sqlite_store *)base;
    int cached = flags & BT_EXEC_CACHED;
    sqlite3_stmt *st;
    int code = prepare(s, sql, cached, &st);
    if (code != BATON_OK)
        return code;
    code = bind_all(s, st, args, nargs);
    sqlite_row row = {{&bt_sqlite_ops}, st};
    int stopped = 0;
    while (code == BATON_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            /* Stopping early leaves the rest unstepped; a RETURNING statement has already
             * applied every change at its first row, so nothing is lost. */
            int verdict = !stopped && on_row ? on_row(&row.base, payload) : 0;
            if (verdict < 0) {
                code = bt_err_set(BATON_ERROR, "sqlite:%s: out of memory reading rows", s->path);
                break;
            }
            stopped = stopped || verdict > 0;
            continue;
        }
        if (rc != SQLITE_DONE)
            code = map_error(s, rc, "step");
        break;
    }
    if (code == BATON_OK && changes_out)
        *changes_out = sqlite3_changes64(s->db);
    if (cached) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
    return code;
}

static void sqlite_rollback(bt_store *base);

/* A wait for another process's write lock (up to the busy timeout) ends at once, and so
 * does a statement in progress; the application's handle is never touched. */
static void sqlite_interrupt(bt_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->borrowed)
        return;
    atomic_store(&s->interrupted, 1);
    sqlite3_interrupt(s->db);
}

static int sqlite_begin(bt_store *base, bt_txn_mode mode)
{
    static const char begin_write[] = "BEGIN IMMEDIATE", begin_read[] = "BEGIN", savepoint[] = "SAVEPOINT baton";
    sqlite_store *s = (sqlite_store *)base;
    atomic_store(&s->interrupted, 0);
    s->in_savepoint = s->borrowed && !sqlite3_get_autocommit(s->db);
    int rc = sqlite_exec(base, s->in_savepoint ? savepoint : mode == BT_TXN_WRITE ? begin_write : begin_read,
                         BT_EXEC_CACHED, NULL, 0, NULL, NULL, NULL);
    if (rc == BATON_OK && (rc = still_ours(s)) != BATON_OK)
        sqlite_rollback(base);
    return rc;
}

static int sqlite_commit(bt_store *base)
{
    static const char commit[] = "COMMIT", release[] = "RELEASE baton";
    sqlite_store *s = (sqlite_store *)base;
    return sqlite_exec(base, s->in_savepoint ? release : commit, BT_EXEC_CACHED, NULL, 0, NULL, NULL, NULL);
}

static void sqlite_rollback(bt_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->in_savepoint)
        sqlite3_exec(s->db, "ROLLBACK TO baton; RELEASE baton", NULL, NULL, NULL);
    else if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* The application's handle keeps its own settings (busy handler, pragmas); it gains the
 * liveness clock. */
static int sqlite_borrow(bt_store **out, void *native)
{
    sqlite_store *s = calloc(1, sizeof *s);
    if (!s)
        return bt_err_set(BATON_ERROR, "out of memory");
    s->base.ops = &bt_sqlite_ops;
    s->db = native;
    s->borrowed = 1;
    s->inotify_fd = -1;
    s->busy_timeout_ms = BUSY_TIMEOUT_MS;
    const char *file = sqlite3_db_filename(s->db, "main");
    s->path = strdup(file && *file ? file : "(application connection)");
    int rc = s->path ? add_clock(s) : bt_err_set(BATON_ERROR, "out of memory");
    if (rc != BATON_OK) {
        free(s->path);
        free(s);
        return rc;
    }
    *out = &s->base;
    return BATON_OK;
}

static int sqlite_exec_script(bt_store *base, const char *sql)
{
    return run_simple((sqlite_store *)base, sql);
}

static int64_t col_int(bt_row *r, int c) { return sqlite3_column_int64(((sqlite_row *)r)->stmt, c); }
static double col_real(bt_row *r, int c) { return sqlite3_column_double(((sqlite_row *)r)->stmt, c); }
static const char *col_text(bt_row *r, int c)
{
    return (const char *)sqlite3_column_text(((sqlite_row *)r)->stmt, c);
}
static int col_null(bt_row *r, int c)
{
    return sqlite3_column_type(((sqlite_row *)r)->stmt, c) == SQLITE_NULL;
}

/* Every commit by any process appends to the WAL file, so a watch on it wakes idle
 * workers as soon as a job may have become ready. */
static int sqlite_change_fd(bt_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->inotify_fd >= 0)
        return s->inotify_fd;
    char wal[PATH_MAX];
    if (snprintf(wal, sizeof wal, "%s-wal", s->path) >= (int)sizeof wal)
        return -1;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return -1;
    if (inotify_add_watch(fd, wal, IN_MODIFY) < 0) {
        close(fd);
        return -1;
    }
    s->inotify_fd = fd;
    return fd;
}

static void sqlite_change_drain(bt_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    char buf[4096];
    while (s->inotify_fd >= 0 && read(s->inotify_fd, buf, sizeof buf) > 0)
        ;
}

static void sqlite_set_lock_timeout(bt_store *store, int ms) { ((sqlite_store *)store)->busy_timeout_ms = ms; }

const bt_store_ops bt_sqlite_ops = {
    .open = sqlite_open,
    .close = sqlite_close,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .exec = sqlite_exec,
    .exec_script = sqlite_exec_script,
    .col_int = col_int,
    .col_real = col_real,
    .col_text = col_text,
    .col_null = col_null,
    .change_fd = sqlite_change_fd,
    .change_drain = sqlite_change_drain,
    .ddl_serial = "INTEGER PRIMARY KEY AUTOINCREMENT",
    .ddl_real = "REAL",
    .ddl_clock = "", /* a function of each connection: add_clock */
    .set_lock_timeout = sqlite_set_lock_timeout,
    .interrupt = sqlite_interrupt,
    .borrow = sqlite_borrow,
    .sql_table_exists = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
};
