/* postgres.c: the PostgreSQL driver, over libpq.
 *
 * One connection per bt_store (and a listening one for a worker, see below). core/ writes
 * SQL once with `?` and `?N` placeholders; a literal statement is translated to `$N` and
 * prepared once per connection, under a name kept in the pointer-keyed statement cache.
 * Values travel as text with their types declared (bigint, double precision, text), so a
 * parameter the statement does not use still has a type.
 *
 * Transactions: writes run at READ COMMITTED, the usual design for a queue. Every
 * statement sees what committed before it started, and the lifecycle takes explicit row
 * locks where decisions must not interleave: a key's baton_semaphores row before counting
 * its holders, FOR UPDATE SKIP LOCKED where workers pick rows (claims, due jobs, blocked
 * jobs, dead processes) so they never wait on each other. Serialization failures,
 * deadlocks and lock timeouts come back as BATON_EBUSY, which callers already retry.
 * Reports read at REPEATABLE READ, READ ONLY: one snapshot for the whole report.
 *
 * Round trips: a transaction runs in libpq's pipeline mode. BEGIN and every statement
 * whose result the caller does not read (no rows, no change count) are only queued; they
 * travel with the next statement that returns something, or with COMMIT, and their results
 * are checked then. A failed queued statement fails the statement it travelled with, and
 * the caller rolls back as after any failure, so nothing commits past an error. A deferred
 * statement (BT_EXEC_DEFERRED) is queued the same way and its rows are handed to its reader
 * when they arrive, so a transaction can send several statements that return rows in one
 * round trip.
 *
 * Wake-ups: a transaction that made a job ready sends NOTIFY with its COMMIT (same round
 * trip). Idle workers watch a second connection that LISTENs, through an epoll descriptor
 * that stays the same when that connection is replaced after a drop. Every transaction
 * also reads what has arrived, so a busy worker never lets notifications pile up on the
 * server; an eventfd in the same epoll set keeps the wake-up they carry. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "baton.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"

/* Type OIDs from pg_type.h, which is not part of libpq's public headers. */
enum { INT8OID = 20, TEXTOID = 25, FLOAT8OID = 701 };
/* How long a lost listening connection waits before the next reconnect attempt. */
enum { LISTEN_RETRY_NS = 1000000000 };
/* Reconnect attempts of the main connection back off from 50 ms to 5 s between tries. */
/* A process must be back within its alive threshold once the server is (others judge it
 * then, core.h BT_SQL_DEAD): attempts back off to once a second, no slower. */
static const int64_t RECONNECT_FIRST_NS = 50000000, RECONNECT_MAX_NS = 1000000000;
/* Bytes of the text of one integer or float parameter. */
enum { NUM_TEXT = 32 };
/* Deferred statements one pipeline flush carries at most; one more is read at once. */
enum { MAX_DEFERRED = 8 };

#define READY_CHANNEL "baton_ready"

/* A queued statement whose rows go to on_row when the pipeline is read. */
typedef struct deferred_read {
    int index; /* among the queued statements */
    bt_row_fn on_row;
    void *payload;
} deferred_read;

typedef struct pg_store {
    bt_store base;
    PGconn *conn;
    char *conninfo;
    char *display;          /* host:port/db, for messages: never the password */
    bt_stmt_cache cache;    /* literal SQL -> malloc'ed statement name */
    unsigned next_stmt;
    int in_txn;
    int pipelined;          /* the open transaction runs in pipeline mode */
    int queued;             /* statements sent whose results are not read yet */
    deferred_read deferred[MAX_DEFERRED];
    int ndeferred;
    int borrowed;           /* conn is the application's: never reset or closed here, no prepared statements */
    int in_savepoint;       /* the open "transaction" is a savepoint in the application's */
    int lock_timeout_ms;    /* set by set_lock_timeout, kept across reconnects; 0: the default */
    int broken;             /* the session ended though libpq still calls it open: reconnect */
    int64_t reconnect_at_ns, reconnect_backoff_ns;
    pthread_mutex_t sock_lock; /* guards sock, which pg_interrupt reads from other threads */
    int sock;                  /* conn's socket while connected, else -1 */
    PGconn *listener;
    int listen_fd;          /* epoll over the listener's socket, or -1 */
    int listener_sock;      /* socket currently registered in listen_fd, or -1 */
    int pending_fd;         /* eventfd in listen_fd: notifications read early, not yet seen */
    int64_t listen_retry_ns;
} pg_store;

typedef struct pg_row {
    bt_row base;
    PGresult *res;
    int row;
} pg_row;

const bt_store_ops bt_postgres_ops;

static int sqlstate_code(const char *state)
{
    if (!state)
        return BATON_ESTORE; /* no server answer: the connection failed */
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 ||
        strcmp(state, "57014") == 0)
        return BATON_EBUSY;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "3D000") == 0 || strcmp(state, "28000") == 0 || strcmp(state, "28P01") == 0)
        return BATON_ESTORE;
    return BATON_ERROR;
}

/* One line: libpq messages end in a newline and may carry DETAIL lines. */
static int set_error(pg_store *s, int code, const char *msg, const char *what)
{
    size_t len = strcspn(msg ? msg : "", "\n");
    return bt_err_set(code, "postgres:%s: %.*s (%s)", s->display, (int)len, msg ? msg : "", what);
}

static int result_error(pg_store *s, PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int code = PQstatus(s->conn) == CONNECTION_BAD ? BATON_ESTORE : sqlstate_code(state);
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn);
    return set_error(s, code, msg && *msg ? msg : PQerrorMessage(s->conn), what);
}

/* translate rewrites `?` and `?N` as `$N`, the way SQLite numbers them: a bare `?` takes
 * the number after the largest seen so far. Quoted text is copied untouched. */
static char *translate(const char *sql)
{
    size_t cap = strlen(sql) * 4 + 1, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    long max = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            quote = *p == quote ? 0 : quote;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '?') {
            char *end;
            long n = strtol(p + 1, &end, 10);
            if (end == p + 1)
                n = max + 1;
            max = n > max ? n : max;
            len += (size_t)sprintf(out + len, "$%ld", n);
            p = end - 1;
            continue;
        }
        out[len++] = *p;
    }
    out[len] = '\0';
    return out;
}

static void free_stmt_name(void *name) { free(name); }

static void close_listener(pg_store *s)
{
    if (s->listener_sock >= 0)
        epoll_ctl(s->listen_fd, EPOLL_CTL_DEL, s->listener_sock, NULL);
    s->listener_sock = -1;
    PQfinish(s->listener);
    s->listener = NULL;
}

/* set_sock publishes a duplicate of conn's socket (or none: -1, around a reconnect and at
 * close) for pg_interrupt. A duplicate of its own: libpq closes its descriptor by itself
 * when it finds the connection broken, and the number may then name another file of the
 * process; the duplicate still names the same socket until it is replaced here. */
static void set_sock(pg_store *s, int sock)
{
    int dup = sock >= 0 ? fcntl(sock, F_DUPFD_CLOEXEC, 3) : -1;
    pthread_mutex_lock(&s->sock_lock);
    int old = s->sock;
    s->sock = dup;
    pthread_mutex_unlock(&s->sock_lock);
    if (old >= 0)
        close(old);
}

/* Shutting the socket down wakes a libpq call waiting on it (a server that went silent:
 * no FIN, no RST), which then fails as a lost connection. The application's connection
 * is never touched. */
static void pg_interrupt(bt_store *base)
{
    pg_store *s = (pg_store *)base;
    pthread_mutex_lock(&s->sock_lock);
    if (s->sock >= 0 && !s->borrowed)
        shutdown(s->sock, SHUT_RDWR);
    pthread_mutex_unlock(&s->sock_lock);
}

static void pg_close(bt_store *base)
{
    pg_store *s = (pg_store *)base;
    bt_stmt_cache_clear(&s->cache, free_stmt_name);
    set_sock(s, -1);
    pthread_mutex_destroy(&s->sock_lock);
    if (!s->borrowed)
        PQfinish(s->conn);
    close_listener(s);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->pending_fd >= 0)
        close(s->pending_fd);
    free(s->conninfo);
    free(s->display);
    free(s);
}

/* Notices (e.g. "relation already exists, skipping") are expected, not news. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Session defaults, unless the URL, the role or the server set their own: waiting for a
 * row lock fails like SQLite's busy timeout (BATON_EBUSY after 10 s), and a client silent
 * inside a transaction (SIGSTOP, a frozen host, a dead path) loses its session and its
 * locks after 5 s. Baton's own transactions never wait on the client between statements,
 * and 5 s is below the lock timeout: whoever waits for a silent session's key outlasts
 * it instead of failing. */
static const char session_defaults[] =
    "SELECT set_config('lock_timeout', '10s', false) WHERE current_setting('lock_timeout') = '0';"
    "SELECT set_config('idle_in_transaction_session_timeout', '5s', false)"
    " WHERE current_setting('idle_in_transaction_session_timeout') = '0'";

static void configure(PGconn *conn)
{
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    PQclear(PQexec(conn, session_defaults));
}

static void apply_lock_timeout(pg_store *s)
{
    if (s->lock_timeout_ms <= 0)
        return;
    char sql[64];
    snprintf(sql, sizeof sql, "SET lock_timeout = %d", s->lock_timeout_ms);
    PQclear(PQexec(s->conn, sql));
}

/* Connection defaults, unless the URL (which comes last, so its values win) or libpq's
 * environment sets its own: a server that stops answering (a partition, a dead NAT or
 * proxy, no FIN or RST) costs a connection attempt 5 s, and a connection about 10 s, idle
 * (keepalives) or waiting for an answer (tcp_user_timeout), instead of the kernel's
 * minutes. */
static const char *const connect_defaults[][3] = {
    {"connect_timeout", "5", "PGCONNECT_TIMEOUT"}, {"keepalives", "1", NULL}, {"keepalives_idle", "5", NULL},
    {"keepalives_interval", "2", NULL}, {"keepalives_count", "3", NULL}, {"tcp_user_timeout", "10000", NULL}};
enum { NDEFAULTS = sizeof connect_defaults / sizeof connect_defaults[0] };

static PGconn *connect_quietly(const char *conninfo)
{
    const char *keys[NDEFAULTS + 2], *values[NDEFAULTS + 2];
    int n = 0;
    for (int i = 0; i < NDEFAULTS; i++)
        if (!connect_defaults[i][2] || !getenv(connect_defaults[i][2])) {
            keys[n] = connect_defaults[i][0];
            values[n++] = connect_defaults[i][1];
        }
    keys[n] = "dbname";
    values[n++] = conninfo;
    keys[n] = values[n] = NULL;
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (conn && PQstatus(conn) == CONNECTION_OK)
        configure(conn);
    return conn;
}

/* describe fills s->display from the connection; 0 when out of memory. */
static int describe(pg_store *s)
{
    const char *host = PQhost(s->conn), *db = PQdb(s->conn);
    return asprintf(&s->display, "//%s:%s/%s", host && *host ? host : "localhost", PQport(s->conn), db ? db : "") >= 0;
}

/* The application's connection keeps its own session settings. */
static int pg_borrow(bt_store **out, void *native)
{
    pg_store *s = calloc(1, sizeof *s);
    if (!s)
        return bt_err_set(BATON_ERROR, "out of memory");
    s->base.ops = &bt_postgres_ops;
    s->conn = native;
    s->borrowed = 1;
    pthread_mutex_init(&s->sock_lock, NULL);
    s->sock = -1;
    s->listen_fd = -1;
    s->listener_sock = -1;
    s->pending_fd = -1;
    if (!describe(s)) {
        free(s);
        return bt_err_set(BATON_ERROR, "out of memory");
    }
    if (PQtransactionStatus(s->conn) == PQTRANS_INERROR) {
        int code = bt_err_set(BATON_ESTATE, "postgres:%s: the application's transaction has failed; roll it back first",
                              s->display);
        pg_close(&s->base);
        return code;
    }
    *out = &s->base;
    return BATON_OK;
}

/* URLs go to libpq whole; "postgres:KEY=VALUE ..." hands libpq a keyword string, and an
 * empty one leaves everything to its defaults and PG* environment variables. */
static int pg_open(bt_store **out, const char *target, const char *url)
{
    pg_store *s = calloc(1, sizeof *s);
    if (!s)
        return bt_err_set(BATON_ERROR, "out of memory");
    s->base.ops = &bt_postgres_ops;
    pthread_mutex_init(&s->sock_lock, NULL);
    s->sock = -1;
    s->listen_fd = -1;
    s->listener_sock = -1;
    s->pending_fd = -1;
    int is_url = strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0;
    s->conninfo = strdup(is_url ? url : target);
    s->conn = connect_quietly(s->conninfo);
    if (s->conn && !describe(s))
        s->display = NULL;
    if (!s->conninfo || !s->conn || !s->display) {
        pg_close(&s->base);
        return bt_err_set(BATON_ERROR, "out of memory");
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        int code = set_error(s, BATON_ESTORE, PQerrorMessage(s->conn), "connect");
        pg_close(&s->base);
        return code;
    }
    set_sock(s, PQsocket(s->conn));
    *out = &s->base;
    return BATON_OK;
}

/* params holds one statement's values as libpq wants them: text, with declared types. A
 * statement over a list of rows has up to a thousand, so they live in one allocation. */
typedef struct params {
    const char **values;
    char **copies;
    Oid *types;
    char (*numbers)[NUM_TEXT];
} params;

static int fill_params(params *p, const bt_val *args, int nargs)
{
    size_t n = (size_t)(nargs > 0 ? nargs : 1);
    char *block = calloc(n, 2 * sizeof(char *) + sizeof(Oid) + NUM_TEXT);
    if (!block)
        return bt_err_set(BATON_ERROR, "out of memory");
    p->values = (const char **)(void *)block;
    p->copies = (char **)(void *)(block + n * sizeof(char *));
    p->types = (Oid *)(void *)(block + 2 * n * sizeof(char *));
    p->numbers = (char(*)[NUM_TEXT])(block + n * (2 * sizeof(char *) + sizeof(Oid)));
    for (int i = 0; i < nargs; i++) {
        const bt_val *v = &args[i];
        switch (v->type) {
        case BT_VINT:
            p->types[i] = INT8OID;
            snprintf(p->numbers[i], NUM_TEXT, "%" PRId64, v->i);
            p->values[i] = p->numbers[i];
            break;
        case BT_VREAL:
            p->types[i] = FLOAT8OID;
            snprintf(p->numbers[i], NUM_TEXT, "%.17g", v->d);
            p->values[i] = p->numbers[i];
            break;
        case BT_VTEXT:
            p->types[i] = TEXTOID;
            /* libpq reads text values up to a NUL, which a counted string need not have. */
            if (v->len >= 0) {
                p->copies[i] = strndup(v->s, (size_t)v->len);
                if (!p->copies[i])
                    return bt_err_set(BATON_ERROR, "out of memory");
            }
            p->values[i] = p->copies[i] ? p->copies[i] : v->s;
            break;
        default:
            p->types[i] = 0; /* a NULL takes the type its place in the statement implies */
            p->values[i] = NULL;
        }
    }
    return BATON_OK;
}

static void free_params(params *p, int nargs)
{
    for (int i = 0; p->copies && i < nargs; i++)
        free(p->copies[i]);
    free(p->values);
}

/* run_statement sends one statement and returns its result (NULL only when out of memory). */
static int run_statement(pg_store *s, const char *sql, int cached, const params *p, int nargs,
                         PGresult **res)
{
    *res = NULL;
    /* Named statements would outlive a borrowed wrapper on the application's connection. */
    cached = cached && !s->borrowed;
    bt_stmt_slot *slot = cached ? bt_stmt_cache_find(&s->cache, sql) : NULL;
    if (slot && slot->sql) {
        *res = PQexecPrepared(s->conn, slot->stmt, nargs, p->values, NULL, NULL, 0);
        return BATON_OK;
    }
    char *text = cached && !slot ? NULL : translate(sql), *name = NULL;
    if (text && !cached) {
        *res = PQexecParams(s->conn, text, nargs, p->types, p->values, NULL, NULL, 0);
        free(text);
        return BATON_OK;
    }
    if (!text || asprintf(&name, "bt%u", s->next_stmt++) < 0) {
        free(text);
        return bt_err_set(BATON_ERROR, "out of memory");
    }
    PGresult *prep = PQprepare(s->conn, name, text, nargs, p->types);
    free(text);
    if (PQresultStatus(prep) != PGRES_COMMAND_OK) {
        free(name);
        *res = prep;
        return BATON_OK;
    }
    PQclear(prep);
    bt_stmt_cache_fill(&s->cache, slot, sql, name);
    *res = PQexecPrepared(s->conn, name, nargs, p->values, NULL, NULL, 0);
    return BATON_OK;
}

/* ensure_connected replaces a lost connection between transactions, never inside one:
 * the statements before the loss are gone with it. Attempts back off while the server is
 * away; meanwhile calls fail at once with BATON_ESTORE, and callers retry as they do
 * after any store error. */
static int ensure_connected(pg_store *s)
{
    if ((PQstatus(s->conn) == CONNECTION_OK && !s->broken) || s->in_txn)
        return BATON_OK;
    if (s->borrowed)
        return set_error(s, BATON_ESTORE, PQerrorMessage(s->conn), "application connection");
    int64_t now = bt_mono_ns();
    if (now < s->reconnect_at_ns)
        return set_error(s, BATON_ESTORE, "connection lost, reconnecting", "reconnect");
    bt_stmt_cache_clear(&s->cache, free_stmt_name); /* prepared statements died with it */
    s->pipelined = s->queued = s->ndeferred = 0;      /* and the pipeline state */
    set_sock(s, -1);
    PQreset(s->conn);
    if (PQstatus(s->conn) == CONNECTION_OK) {
        s->broken = 0;
        set_sock(s, PQsocket(s->conn));
        configure(s->conn);
        apply_lock_timeout(s);
        s->reconnect_backoff_ns = 0;
        return BATON_OK;
    }
    int64_t backoff = s->reconnect_backoff_ns ? s->reconnect_backoff_ns * 2 : RECONNECT_FIRST_NS;
    s->reconnect_backoff_ns = backoff < RECONNECT_MAX_NS ? backoff : RECONNECT_MAX_NS;
    s->reconnect_at_ns = now + s->reconnect_backoff_ns;
    return set_error(s, BATON_ESTORE, PQerrorMessage(s->conn), "reconnect");
}

/* read_rows hands a successful result's rows to on_row (may be NULL) and its change count
 * to changes_out (may be NULL). */
static int read_rows(pg_store *s, PGresult *res, bt_row_fn on_row, void *payload, int64_t *changes_out)
{
    int code = BATON_OK;
    pg_row row = {{&bt_postgres_ops}, res, 0};
    int rows = PQntuples(res);
    for (; on_row && row.row < rows; row.row++) {
        int verdict = on_row(&row.base, payload);
        if (verdict < 0)
            code = bt_err_set(BATON_ERROR, "postgres:%s: out of memory reading rows", s->display);
        if (verdict != 0)
            break;
    }
    if (code == BATON_OK && changes_out) {
        const char *n = PQcmdTuples(res);
        *changes_out = *n ? strtoll(n, NULL, 10) : 0;
    }
    return code;
}

/* flush sends the queued statements' sync and reads their results in order, handing the
 * rows of deferred statements to their readers when deliver is set. Returns the first
 * failure; *last (may be NULL) receives the last statement's result when all succeeded
 * (the caller clears it). */
static int flush(pg_store *s, PGresult **last, int deliver)
{
    if (last)
        *last = NULL;
    int n = s->queued, ndeferred = s->ndeferred;
    s->queued = s->ndeferred = 0;
    if (n == 0)
        return BATON_OK;
    if (!PQpipelineSync(s->conn))
        return result_error(s, NULL, "pipeline sync");
    int code = BATON_OK;
    for (int i = 0; i < n; i++) {
        /* After a failure the server skips the rest up to the sync: each of them still
         * yields one result (aborted), read here so the sync comes next. */
        PGresult *res = PQgetResult(s->conn);
        if (!res) { /* the connection is gone */
            code = code == BATON_OK ? result_error(s, NULL, "exec") : code;
            break;
        }
        ExecStatusType st = PQresultStatus(res);
        if (code == BATON_OK && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            code = result_error(s, res, "exec");
        for (int d = 0; d < ndeferred && code == BATON_OK && deliver; d++)
            if (s->deferred[d].index == i)
                code = read_rows(s, res, s->deferred[d].on_row, s->deferred[d].payload, NULL);
        if (code == BATON_OK && last && i == n - 1)
            *last = res;
        else
            PQclear(res);
        PQclear(PQgetResult(s->conn)); /* the NULL that ends each statement's results */
    }
    if (PQstatus(s->conn) == CONNECTION_OK)
        PQclear(PQgetResult(s->conn)); /* the sync's own result */
    return code;
}

/* queue sends one statement of the pipelined transaction without waiting for its result. */
static int queue(pg_store *s, int sent)
{
    if (!sent)
        return result_error(s, NULL, "send");
    s->queued++;
    return BATON_OK;
}

/* leave_pipeline reads what is queued (delivering deferred rows when deliver is set) and
 * ends pipeline mode; the connection then takes simple queries again. */
static int leave_pipeline(pg_store *s, int deliver)
{
    if (!s->pipelined)
        return BATON_OK;
    int code = flush(s, NULL, deliver);
    s->pipelined = 0;
    /* Every result in, the session may still end before pipeline mode does (the server
     * terminated it just after a COMMIT it answered): what was asked was done, and said
     * so. Reporting a failure here would make a committed transaction look rolled back. */
    if (PQstatus(s->conn) == CONNECTION_OK && !PQexitPipelineMode(s->conn))
        s->broken = 1;
    return code;
}

/* pipelined_statement queues a statement of the pipelined transaction (a new literal one is
 * prepared first, at the cost of one round trip for the connection's life) and, when the
 * caller reads its result, sends everything queued and returns that result. */
static int pipelined_statement(pg_store *s, const char *sql, int cached, const params *p, int nargs,
                               int wanted, PGresult **res)
{
    *res = NULL;
    bt_stmt_slot *slot = cached ? bt_stmt_cache_find(&s->cache, sql) : NULL;
    if (cached && !slot)
        return bt_err_set(BATON_ERROR, "out of memory");
    int code = BATON_OK;
    if (!slot || !slot->sql) {
        char *text = translate(sql), *name = NULL;
        if (!text || (slot && asprintf(&name, "bt%u", s->next_stmt++) < 0)) {
            free(text);
            return bt_err_set(BATON_ERROR, "out of memory");
        }
        if (!slot) {
            code = queue(s, PQsendQueryParams(s->conn, text, nargs, p->types, p->values, NULL, NULL, 0));
            free(text);
            return code != BATON_OK || !wanted ? code : flush(s, res, 1);
        }
        code = queue(s, PQsendPrepare(s->conn, name, text, nargs, p->types));
        free(text);
        if (code == BATON_OK)
            code = flush(s, NULL, 1);
        if (code != BATON_OK) {
            free(name);
            return code;
        }
        bt_stmt_cache_fill(&s->cache, slot, sql, name);
    }
    code = queue(s, PQsendQueryPrepared(s->conn, slot->stmt, nargs, p->values, NULL, NULL, 0));
    return code != BATON_OK || !wanted ? code : flush(s, res, 1);
}

static int pg_exec(bt_store *base, const char *sql, int flags, const bt_val *args, int nargs,
                   bt_row_fn on_row, void *payload, int64_t *changes_out)
{
    pg_store *s = (pg_store *)base;
    params p = {0};
    int code = ensure_connected(s);
    if (code != BATON_OK)
        return code;
    code = fill_params(&p, args, nargs);
    PGresult *res = NULL;
    int cached = flags & BT_EXEC_CACHED;
    int deferred = (flags & BT_EXEC_DEFERRED) && s->pipelined && on_row && !changes_out &&
                   s->ndeferred < MAX_DEFERRED;
    int wanted = (on_row || changes_out) && !deferred;
    if (code == BATON_OK && s->pipelined)
        code = pipelined_statement(s, sql, cached, &p, nargs, wanted, &res);
    else if (code == BATON_OK)
        code = run_statement(s, sql, cached, &p, nargs, &res);
    free_params(&p, nargs);
    if (code == BATON_OK && deferred)
        s->deferred[s->ndeferred++] = (deferred_read){s->queued - 1, on_row, payload};
    if (code != BATON_OK || (s->pipelined && !wanted))
        return code;
    ExecStatusType st = PQresultStatus(res);
    code = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ? read_rows(s, res, on_row, payload, changes_out)
                                                           : result_error(s, res, "exec");
    PQclear(res);
    return code;
}

/* run_simple runs statements without parameters through the simple query protocol. */
static int run_simple(pg_store *s, const char *sql)
{
    PGresult *res = PQexec(s->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int code = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? BATON_OK : result_error(s, res, sql);
    PQclear(res);
    return code;
}

/* read_notifications empties the listener's socket: the number of notifications it held,
 * or -1 when the listener is gone. */
static int read_notifications(pg_store *s)
{
    if (!s->listener || !PQconsumeInput(s->listener))
        return -1;
    int n = 0;
    PGnotify *note;
    while ((note = PQnotifies(s->listener)) != NULL) {
        PQfreemem(note);
        n++;
    }
    return n;
}

static void pg_rollback(bt_store *base);

static int pg_begin(bt_store *base, bt_txn_mode mode)
{
    pg_store *s = (pg_store *)base;
    base->jobs_made_ready = 0;
    base->commit_unknown = 0;
    /* A busy worker does not watch change_fd, and the server queues what it does not read
     * without bound: every transaction reads them, and the eventfd keeps the wake-up. */
    if (read_notifications(s) > 0)
        eventfd_write(s->pending_fd, 1);
    int code = ensure_connected(s);
    if (code != BATON_OK)
        return code;
    s->in_savepoint = s->borrowed && PQtransactionStatus(s->conn) != PQTRANS_IDLE;
    const char *begin = s->in_savepoint ? "SAVEPOINT baton"
                        : mode == BT_TXN_WRITE ? "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    /* The application's connection keeps the protocol the application uses. */
    if (!s->borrowed && PQenterPipelineMode(s->conn)) {
        s->pipelined = 1;
        s->in_txn = 1;
        code = queue(s, PQsendQueryParams(s->conn, begin, 0, NULL, NULL, NULL, NULL, 0));
        if (code != BATON_OK)
            pg_rollback(base);
        return code;
    }
    code = run_simple(s, begin);
    s->in_txn = code == BATON_OK;
    return code;
}

static int pg_commit(bt_store *base)
{
    pg_store *s = (pg_store *)base;
    int notify = base->jobs_made_ready;
    base->jobs_made_ready = 0;
    s->in_txn = 0;
    /* Notifications are delivered at commit, so one round trip carries both; inside the
     * application's transaction they wait for its commit, as its jobs do. */
    if (s->in_savepoint)
        return run_simple(s, notify ? "NOTIFY " READY_CHANNEL "; RELEASE SAVEPOINT baton" : "RELEASE SAVEPOINT baton");
    int code;
    if (!s->pipelined) {
        code = run_simple(s, notify ? "NOTIFY " READY_CHANNEL "; COMMIT" : "COMMIT");
    } else {
        code = notify ? queue(s, PQsendQueryParams(s->conn, "NOTIFY " READY_CHANNEL, 0, NULL, NULL, NULL, NULL, 0))
                      : BATON_OK;
        if (code == BATON_OK)
            code = queue(s, PQsendQueryParams(s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0));
        int left = leave_pipeline(s, 1);
        code = code == BATON_OK ? left : code;
    }
    /* No answer: the server may have received the COMMIT and committed. */
    base->commit_unknown = code != BATON_OK && PQstatus(s->conn) == CONNECTION_BAD;
    return code;
}

static void pg_rollback(bt_store *base)
{
    pg_store *s = (pg_store *)base;
    base->jobs_made_ready = 0;
    s->in_txn = 0;
    leave_pipeline(s, 0);
    if (s->in_savepoint)
        PQclear(PQexec(s->conn, "ROLLBACK TO SAVEPOINT baton; RELEASE SAVEPOINT baton"));
    else if (PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        PQclear(PQexec(s->conn, "ROLLBACK"));
}

/* Scripts (schema DDL) take the simple protocol, which pipeline mode refuses: the rest of
 * their transaction runs without it. */
static int pg_exec_script(bt_store *base, const char *sql)
{
    pg_store *s = (pg_store *)base;
    int code = ensure_connected(s);
    if (code == BATON_OK)
        code = leave_pipeline(s, 1);
    return code == BATON_OK ? run_simple(s, sql) : code;
}

static int64_t col_int(bt_row *r, int c)
{
    pg_row *row = (pg_row *)r;
    return strtoll(PQgetvalue(row->res, row->row, c), NULL, 10);
}
static double col_real(bt_row *r, int c)
{
    pg_row *row = (pg_row *)r;
    return strtod(PQgetvalue(row->res, row->row, c), NULL);
}
static int col_null(bt_row *r, int c)
{
    pg_row *row = (pg_row *)r;
    return PQgetisnull(row->res, row->row, c);
}
static const char *col_text(bt_row *r, int c)
{
    pg_row *row = (pg_row *)r;
    return col_null(r, c) ? NULL : PQgetvalue(row->res, row->row, c);
}

/* listen_connect opens the listening connection and registers its socket; on failure the
 * worker falls back to polling until the next attempt. */
static void listen_connect(pg_store *s)
{
    s->listen_retry_ns = bt_mono_ns() + LISTEN_RETRY_NS;
    PGconn *conn = connect_quietly(s->conninfo);
    PGresult *res = PQstatus(conn) == CONNECTION_OK ? PQexec(conn, "LISTEN " READY_CHANNEL) : NULL;
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK && PQsetnonblocking(conn, 1) == 0;
    PQclear(res);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = PQsocket(conn)};
    if (!ok || epoll_ctl(s->listen_fd, EPOLL_CTL_ADD, ev.data.fd, &ev) != 0) {
        PQfinish(conn);
        return;
    }
    s->listener = conn;
    s->listener_sock = ev.data.fd;
}

static int pg_change_fd(bt_store *base)
{
    pg_store *s = (pg_store *)base;
    if (s->listen_fd >= 0)
        return s->listen_fd;
    s->listen_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->pending_fd < 0)
        s->pending_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->pending_fd};
    if (s->listen_fd < 0 || s->pending_fd < 0 ||
        epoll_ctl(s->listen_fd, EPOLL_CTL_ADD, s->pending_fd, &ev) != 0) {
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        s->listen_fd = -1;
        return -1;
    }
    listen_connect(s);
    return s->listen_fd;
}

static void pg_change_drain(bt_store *base)
{
    pg_store *s = (pg_store *)base;
    if (s->listen_fd < 0)
        return;
    eventfd_t pending;
    eventfd_read(s->pending_fd, &pending);
    if (read_notifications(s) >= 0)
        return;
    /* The listener is gone (server restart, dropped connection): its socket would stay
     * readable forever, so take it out and reconnect now and then. */
    if (s->listener)
        close_listener(s);
    if (bt_mono_ns() >= s->listen_retry_ns)
        listen_connect(s);
}

static void pg_set_lock_timeout(bt_store *base, int ms)
{
    pg_store *s = (pg_store *)base;
    s->lock_timeout_ms = ms > 0 ? ms : 1;
    if (PQstatus(s->conn) == CONNECTION_OK)
        apply_lock_timeout(s);
}

const bt_store_ops bt_postgres_ops = {
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .exec_script = pg_exec_script,
    .col_int = col_int,
    .col_real = col_real,
    .col_text = col_text,
    .col_null = col_null,
    .change_fd = pg_change_fd,
    .change_drain = pg_change_drain,
    .set_lock_timeout = pg_set_lock_timeout,
    .interrupt = pg_interrupt,
    .borrow = pg_borrow,
    /* Identity values only grow: the fencing token relies on it. */
    .ddl_serial = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    .ddl_real = "DOUBLE PRECISION",
    .ddl_clock = "CREATE OR REPLACE FUNCTION baton_clock() RETURNS BIGINT LANGUAGE SQL VOLATILE"
                 " AS 'SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)';",
    .row_locks = 1,
    .writable_cte = 1,
    .sql_table_exists = "SELECT COUNT(*) FROM information_schema.tables"
                        " WHERE table_schema = current_schema() AND table_name = ?",
    .sql_lock_schema = "SELECT pg_advisory_xact_lock(7355608)",
};
