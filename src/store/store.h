/* store.h: the narrow interface between Baton's lifecycle logic and a database driver.
 *
 * The lifecycle SQL lives in core/ and is written once, in the common subset of SQLite and
 * PostgreSQL: `?` placeholders, integer millisecond times passed as parameters, RETURNING.
 * A driver moves rows: it prepares (and caches) statements, binds values, steps rows to a
 * callback, runs transactions, maps its errors to baton codes and tells the worker when
 * the database may have changed (so idle workers wake without waiting a full poll). */
#ifndef BT_STORE_H
#define BT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "baton.h"

typedef struct bt_store bt_store;
typedef struct bt_row bt_row;

typedef enum { BT_VNULL, BT_VINT, BT_VREAL, BT_VTEXT } bt_vtype;

typedef struct bt_val {
    bt_vtype type;
    int64_t i;
    double d;
    const char *s;
    int len; /* bytes of s, or -1 for NUL-terminated */
} bt_val;

#define BV_NULL ((bt_val){.type = BT_VNULL})
#define BV_INT(x) ((bt_val){.type = BT_VINT, .i = (int64_t)(x)})
#define BV_REAL(x) ((bt_val){.type = BT_VREAL, .d = (double)(x)})
/* A NULL string binds SQL NULL. A function, not a macro, so arrays can be passed. */
static inline bt_val bt_val_text(const char *s)
{
    return (bt_val){.type = s ? BT_VTEXT : BT_VNULL, .s = s, .len = -1};
}
#define BV_TEXT(x) bt_val_text(x)
#define BV_TEXTN(x, n) ((bt_val){.type = BT_VTEXT, .s = (x), .len = (int)(n)})

/* Called for each result row; return 0 to go on, > 0 to ignore the remaining rows, < 0 to
 * fail the statement (out of memory): the caller then rolls its transaction back. */
typedef int (*bt_row_fn)(bt_row *row, void *payload);

typedef enum { BT_TXN_READ, BT_TXN_WRITE } bt_txn_mode;

/* How a statement runs. CACHED: sql is a string literal whose prepared form may be kept for
 * the connection's life. DEFERRED: inside a transaction, the rows may reach on_row later:
 * with the result of the next statement whose rows are read at once, or at commit, in
 * statement order; a failure then fails that statement (or the commit). The payload must
 * stay valid until then; on rollback the rows are dropped unread. Drivers that run each
 * statement at once (SQLite) deliver them at once. */
enum { BT_EXEC_CACHED = 1, BT_EXEC_DEFERRED = 2 };

typedef struct bt_store_ops {
    int (*open)(bt_store **out, const char *target, const char *url);
    void (*close)(bt_store *store);
    int (*begin)(bt_store *store, bt_txn_mode mode);
    int (*commit)(bt_store *store);
    void (*rollback)(bt_store *store);
    /* Runs one statement (flags: BT_EXEC_*). changes_out (may be NULL) receives rows
     * changed. */
    int (*exec)(bt_store *store, const char *sql, int flags, const bt_val *args, int nargs,
                bt_row_fn on_row, void *payload, int64_t *changes_out);
    /* Runs several ';'-separated statements without parameters (schema DDL). */
    int (*exec_script)(bt_store *store, const char *sql);
    /* Row accessors; columns count from 0. Text is borrowed until the callback returns. */
    int64_t (*col_int)(bt_row *row, int col);
    double (*col_real)(bt_row *row, int col);
    const char *(*col_text)(bt_row *row, int col);
    int (*col_null)(bt_row *row, int col);
    /* A file descriptor that becomes readable when the database may have changed (or -1),
     * and the call that consumes that readiness. */
    int (*change_fd)(bt_store *store);
    void (*change_drain)(bt_store *store);
    /* SQL for schema text: the type names of an auto-increment primary key and of a
     * float, and the statement that defines baton_clock() where the schema holds it. */
    const char *ddl_serial;
    const char *ddl_real;
    const char *ddl_clock;
    /* How long a statement of this connection may wait for another's lock before it fails
     * with BATON_EBUSY. */
    void (*set_lock_timeout)(bt_store *store, int ms);
    /* Makes the call another thread has in progress on this store, if any, fail soon (on
     * a server the connection is dropped; the next transaction connects again), so the
     * caller can act on a stall it could not see from inside the call. Callable from any
     * thread while the store is open. */
    void (*interrupt)(bt_store *store);
    /* Wraps a connection the application owns (sqlite3 *, PGconn *): transactions become
     * savepoints inside the application's open transaction, or transactions of their own
     * when it has none; close frees the wrapper only. */
    int (*borrow)(bt_store **out, void *native);
    /* Dialect. row_locks is 1 when writers run side by side and serialise on row locks
     * (PostgreSQL): core/ then locks a key's semaphore row before deciding about its slots
     * and picks rows to work on with FOR UPDATE SKIP LOCKED (see BT_SKIP_LOCKED). It is 0
     * when one writer at a time holds the whole database (SQLite), which serialises every
     * transition already. */
    int row_locks;
    /* 1 when a WITH clause may hold INSERT, UPDATE and DELETE (PostgreSQL): a claim then
     * picks, marks and records its jobs in one statement. */
    int writable_cte;
    /* One row, one integer: nonzero when the table named by the text parameter exists. */
    const char *sql_table_exists;
    /* Run first in the migration transaction so concurrent migrations queue, or NULL. */
    const char *sql_lock_schema;
} bt_store_ops;

/* Log lines noted during a transaction (bt_note) wait for its end: bt_end hands them to
 * the client's logger when it commits and drops them when it rolls back, because a
 * rolled-back transition never happened. */
typedef struct bt_note_line bt_note_line;
typedef struct bt_notes {
    baton_client *client;  /* whose logger gets the lines; NULL: nothing is noted */
    void (*deliver)(baton_client *client, baton_log_level level, const char *line);
    bt_note_line *first, *last;
} bt_notes;

/* Every driver's handle starts with this header, so generic code reaches the ops. */
struct bt_store {
    const bt_store_ops *ops;
    char *url; /* for messages: the URL with any password hidden (bt_url_redact) */
    int lost;  /* set by the driver when the database is gone for good (its file deleted) */
    /* Set by a failed commit whose outcome is unknown (the connection broke once COMMIT
     * was sent: the server may have committed); cleared by the next begin. */
    int commit_unknown;
    bt_notes notes;
    int jobs_made_ready; /* set during a transaction that made jobs ready */
};

/* bt_notes_add queues line (malloc'ed; the store takes it) until the transaction ends. */
void bt_notes_add(bt_store *s, baton_log_level level, char *line);
/* bt_notes_settle delivers the queued lines when committed, else drops them. */
void bt_notes_settle(bt_store *s, int committed);

/* BT_SKIP_LOCKED(MAKE) is the pair of variants of a statement MAKE(lock) that picks rows
 * to work on: without a lock clause, and with the clause that skips rows other
 * transactions hold. Index it with the store's row_locks. */
#define BT_SKIP_LOCKED(MAKE) {MAKE(""), MAKE(" FOR UPDATE SKIP LOCKED")}
/* BT_PICK_SKIP_LOCKED(MAKE) does the same for "... WHERE col" MAKE(open, close) "..."
 * statements that act on the rows a subquery picks. With row locks the subquery is
 * evaluated once, as an array: as an IN list the planner may run it again, and SKIP
 * LOCKED can then pick other rows the second time, beyond its LIMIT. */
#define BT_PICK_SKIP_LOCKED(MAKE) {MAKE(" IN (", ")"), BT_PICK_LOCKED(MAKE)}
#define BT_PICK_LOCKED(MAKE) MAKE(" = ANY(ARRAY(", " FOR UPDATE SKIP LOCKED))")

/* bt_note_ready tells the driver the open transaction made jobs ready, so it can wake idle
 * workers elsewhere when it commits (drivers whose change_fd sees every commit ignore it). */
static inline void bt_note_ready(bt_store *s) { s->jobs_made_ready = 1; }

/* bt_store_open picks the driver from the URL scheme ("sqlite:PATH", "postgres://...",
 * "postgresql://..."). */
int bt_store_open(bt_store **out, const char *url);
/* A test seam: when set, bt_store_open hands every store it opened to it, so a test can
 * wrap the driver's calls and inject faults (as SQLite's test VFS does). Set it before
 * any thread opens a store. */
extern void (*bt_store_open_hook)(bt_store *store);
void bt_store_close(bt_store *store);
/* bt_store_borrow wraps a connection the application owns (see bt_store_ops.borrow); url
 * names the database in messages. bt_store_close frees the wrapper, not the connection. */
int bt_store_borrow(bt_store **out, const bt_store_ops *ops, void *native, const char *url);

static inline int bt_begin(bt_store *s, bt_txn_mode m) { return s->ops->begin(s, m); }
static inline void bt_set_lock_timeout(bt_store *s, int ms) { s->ops->set_lock_timeout(s, ms); }
static inline void bt_interrupt(bt_store *s) { s->ops->interrupt(s); }
static inline int bt_commit(bt_store *s) { return s->ops->commit(s); }
static inline void bt_rollback(bt_store *s) { s->ops->rollback(s); }

/* bt_end closes the transaction a function opened: commits when rc is BATON_OK, rolls
 * back otherwise (a failed commit included), then settles the transaction's notes.
 * Returns the final code. */
static inline int bt_end(bt_store *s, int rc)
{
    if (rc == BATON_OK)
        rc = bt_commit(s);
    if (rc != BATON_OK)
        bt_rollback(s);
    if (s->notes.first)
        bt_notes_settle(s, rc == BATON_OK);
    return rc;
}

/* bt_exec runs a cached (literal) statement; bt_exec_dynamic one built at run time.
 * Other flags (BT_EXEC_DEFERRED) go through ops->exec. */
static inline int bt_exec(bt_store *s, const char *sql, const bt_val *args, int nargs,
                          bt_row_fn fn, void *payload, int64_t *changes)
{
    return s->ops->exec(s, sql, BT_EXEC_CACHED, args, nargs, fn, payload, changes);
}
static inline int bt_exec_dynamic(bt_store *s, const char *sql, const bt_val *args, int nargs,
                                  bt_row_fn fn, void *payload, int64_t *changes)
{
    return s->ops->exec(s, sql, 0, args, nargs, fn, payload, changes);
}

/* Row accessors reach the driver through the row's store. */
struct bt_row {
    const bt_store_ops *ops;
};
static inline int64_t bt_col_int(bt_row *r, int c) { return r->ops->col_int(r, c); }
static inline double bt_col_real(bt_row *r, int c) { return r->ops->col_real(r, c); }
static inline const char *bt_col_text(bt_row *r, int c) { return r->ops->col_text(r, c); }
static inline int bt_col_null(bt_row *r, int c) { return r->ops->col_null(r, c); }

/* Common row callbacks: store column 0 as int64 (into *(int64_t *)payload), count rows,
 * or append column 0 of every row to a bt_id_list (free ids when done). */
int bt_row_first_int(bt_row *row, void *payload);
int bt_row_count(bt_row *row, void *payload);

typedef struct bt_id_list {
    int64_t *ids;
    size_t len, cap;
} bt_id_list;

int bt_row_collect_id(bt_row *row, void *payload);

/* A list of column-0 texts (NOT NULL columns only), collected by bt_row_collect_text. */
typedef struct bt_text_list {
    char **items;
    size_t len, cap;
} bt_text_list;

int bt_row_collect_text(bt_row *row, void *payload);
void bt_text_list_free(bt_text_list *l);

/* bt_url_with_database writes to out (cap bytes) the server URL url
 * ("SCHEME://AUTHORITY/DB?QUERY") naming database db instead, for programs that create
 * databases of their own on one server (the tests, the benchmark). */
void bt_url_with_database(char *out, size_t cap, const char *url, const char *db);

/* bt_url_redact returns a copy of url (caller frees; NULL when out of memory) whose
 * password, in "SCHEME://USER:PASSWORD@HOST" or a "password=" query parameter, reads
 * "***": what every message and report shows of a database URL. */
char *bt_url_redact(const char *url);

/* bt_query_int runs a cached statement returning one integer; *out keeps fallback when no row. */
int bt_query_int(bt_store *s, const char *sql, const bt_val *args, int nargs, int64_t *out,
                 int64_t fallback);

/* A statement over a list of up to BT_LIST_MAX items: head, then item n times separated by
 * sep (", " when NULL), then tail, e.g. {"UPDATE ... WHERE id IN (", "?", ")"}. Batching the rows of one
 * transition into one statement saves a round trip per row where the database is a server.
 * The text for each n is built once per process and kept, so its address names a cached
 * prepared statement the way a literal's does. Placeholders: the head may number shared
 * parameters (?1, ?2) and the items use bare ?, which continue after them. */
enum { BT_LIST_MAX = 64 };
typedef struct bt_sql_list {
    const char *head, *item, *tail, *sep;
    _Atomic(char *) texts[BT_LIST_MAX];
} bt_sql_list;

/* bt_sql_list_text returns l's text for n items (1 <= n <= BT_LIST_MAX), or NULL when out
 * of memory. Thread-safe. */
const char *bt_sql_list_text(bt_sql_list *l, int n);

/* A pointer-keyed cache of prepared statements: core/ writes its SQL as string literals,
 * so the address of the text names the statement for the connection's life. */
typedef struct bt_stmt_slot {
    const char *sql;
    void *stmt;
} bt_stmt_slot;

typedef struct bt_stmt_cache {
    bt_stmt_slot *slots;
    size_t cap, len;
} bt_stmt_cache;

/* bt_stmt_cache_find returns sql's slot (NULL when out of memory). A slot whose sql is
 * NULL is new: the caller prepares the statement and fills it with bt_stmt_cache_fill. */
bt_stmt_slot *bt_stmt_cache_find(bt_stmt_cache *c, const char *sql);
void bt_stmt_cache_fill(bt_stmt_cache *c, bt_stmt_slot *slot, const char *sql, void *stmt);
/* bt_stmt_cache_clear releases every statement with free_stmt and empties the cache. */
void bt_stmt_cache_clear(bt_stmt_cache *c, void (*free_stmt)(void *stmt));

extern const bt_store_ops bt_sqlite_ops;
extern const bt_store_ops bt_postgres_ops;

#endif
