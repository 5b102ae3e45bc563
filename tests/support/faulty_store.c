/* faulty_store.c: a fault-injecting wrapper over the real store drivers (see
 * faulty_store.h). Each store bt_store_open opens gets a copy of its driver's operations
 * with begin, exec and commit wrapped; everything else is the driver's own. */
#include "faulty_store.h"

#include <stdatomic.h>
#include <string.h>

#include "util/err.h"

enum { MAX_DRIVERS = 4, MAX_CLAIMS_PER_TXN = 64 };

/* One wrapped copy per real driver, made once before any worker thread opens a store. */
static struct {
    const bt_store_ops *real;
    bt_store_ops wrapped;
} drivers[MAX_DRIVERS];
static int ndrivers;

static atomic_int armed, lost;
static _Atomic(const char *) failing; /* statements holding this text fail */

/* What the transaction in progress on this thread claimed: rows of claim statements go
 * through count_claimed on their way to the caller's callback. */
typedef struct counted {
    bt_row_fn fn;
    void *payload;
} counted;
static _Thread_local counted claim_callbacks[MAX_CLAIMS_PER_TXN];
static _Thread_local int nclaim_callbacks, claimed_rows;

static const bt_store_ops *real_ops(const bt_store *s)
{
    for (int i = 0; i < ndrivers; i++)
        if (&drivers[i].wrapped == s->ops)
            return drivers[i].real;
    return s->ops;
}

static int count_claimed(bt_row *row, void *payload)
{
    counted *c = payload;
    claimed_rows++;
    return c->fn ? c->fn(row, c->payload) : 0;
}

static int faulty_begin(bt_store *s, bt_txn_mode mode)
{
    nclaim_callbacks = claimed_rows = 0;
    return real_ops(s)->begin(s, mode);
}

static int faulty_exec(bt_store *s, const char *sql, int flags, const bt_val *args, int nargs, bt_row_fn on_row,
                       void *payload, int64_t *changes)
{
    const char *needle = atomic_load(&failing);
    if (needle && strstr(sql, needle))
        return bt_err_set(BATON_ERROR, "a statement failed (injected)");
    /* Every claim, in one statement or several, marks its jobs claimed and returns them. */
    if (strstr(sql, "SET status = 'claimed'") && nclaim_callbacks < MAX_CLAIMS_PER_TXN) {
        counted *c = &claim_callbacks[nclaim_callbacks++];
        *c = (counted){on_row, payload};
        return real_ops(s)->exec(s, sql, flags, args, nargs, count_claimed, c, changes);
    }
    return real_ops(s)->exec(s, sql, flags, args, nargs, on_row, payload, changes);
}

static int faulty_commit(bt_store *s)
{
    int rc = real_ops(s)->commit(s);
    if (rc == BATON_OK && claimed_rows > 0 && atomic_exchange(&armed, 0)) {
        atomic_fetch_add(&lost, 1);
        s->commit_unknown = 1;
        return bt_err_set(BATON_ESTORE, "connection lost waiting for the commit's answer (injected)");
    }
    return rc;
}

static void wrap(bt_store *s)
{
    for (int i = 0; i < ndrivers; i++)
        if (drivers[i].real == s->ops) {
            s->ops = &drivers[i].wrapped;
            return;
        }
    if (ndrivers == MAX_DRIVERS)
        return;
    drivers[ndrivers].real = s->ops;
    drivers[ndrivers].wrapped = *s->ops;
    drivers[ndrivers].wrapped.begin = faulty_begin;
    drivers[ndrivers].wrapped.exec = faulty_exec;
    drivers[ndrivers].wrapped.commit = faulty_commit;
    s->ops = &drivers[ndrivers++].wrapped;
}

void faulty_store_install(void) { bt_store_open_hook = wrap; }

void faulty_store_remove(void) { bt_store_open_hook = NULL; }

void faulty_store_lose_next_claim_commit(void) { atomic_store(&armed, 1); }

void faulty_store_fail_statements(const char *needle) { atomic_store(&failing, needle); }

int faulty_store_commits_lost(void) { return atomic_load(&lost); }
