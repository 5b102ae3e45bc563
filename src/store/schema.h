/* schema.h: versioned migrations shared by every driver. */
#ifndef BT_SCHEMA_H
#define BT_SCHEMA_H

#include "store/store.h"

enum { BT_SCHEMA_VERSION = 8 };

/* bt_schema_current reads the applied version into *version (0 for an empty database). */
int bt_schema_current(bt_store *store, int *version);

/* bt_schema_check fails with BATON_ESCHEMA unless the database is at this library's
 * version: "run baton init" when older or empty, a refusal when newer. */
int bt_schema_check(bt_store *store);

/* bt_schema_expand returns sql (malloc'ed; NULL when out of memory) with the driver's
 * text in place of {SERIAL}, {REAL} and {CLOCK} (see bt_store_ops). */
char *bt_schema_expand(const bt_store_ops *ops, const char *sql);

/* bt_schema_migrate applies the missing migrations, each in its own transaction.
 * Refuses (BATON_ESCHEMA) without touching anything when the database is newer. */
int bt_schema_migrate(bt_store *store);

#endif
