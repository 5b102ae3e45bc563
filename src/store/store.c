/* store.c: choosing a driver by URL, and row helpers every driver shares. */
#include "store/store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "baton.h"
#include "util/err.h"
#include "util/grow.h"

static const struct {
    const char *scheme;
    const bt_store_ops *ops;
} drivers[] = {{"sqlite", &bt_sqlite_ops}, {"postgres", &bt_postgres_ops}, {"postgresql", &bt_postgres_ops}};

void (*bt_store_open_hook)(bt_store *store);

int bt_store_open(bt_store **out, const char *url)
{
    *out = NULL;
    const char *colon = strchr(url, ':');
    if (!colon || colon == url)
        return bt_err_set(BATON_EINVALID, "database URL '%s': expected SCHEME:TARGET, e.g. sqlite:baton.db", url);
    size_t scheme_len = (size_t)(colon - url);
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
        const bt_store_ops *ops = drivers[i].ops;
        if (strlen(drivers[i].scheme) == scheme_len && strncmp(drivers[i].scheme, url, scheme_len) == 0) {
            const char *target = colon + 1;
            if (strncmp(target, "//", 2) == 0)
                target += 2; /* sqlite://path is accepted too */
            int rc = ops->open(out, target, url);
            if (rc == BATON_OK && !((*out)->url = bt_url_redact(url))) {
                bt_store_close(*out);
                *out = NULL;
                rc = bt_err_set(BATON_ERROR, "out of memory");
            }
            if (rc == BATON_OK && bt_store_open_hook)
                bt_store_open_hook(*out);
            return rc;
        }
    }
    return bt_err_set(BATON_EINVALID, "database URL: unknown scheme '%.*s' (supported: sqlite, postgres, postgresql)",
                      (int)scheme_len, url);
}

int bt_store_borrow(bt_store **out, const bt_store_ops *ops, void *native, const char *url)
{
    int rc = ops->borrow(out, native);
    if (rc == BATON_OK && !((*out)->url = bt_url_redact(url))) {
        bt_store_close(*out);
        *out = NULL;
        rc = bt_err_set(BATON_ERROR, "out of memory");
    }
    return rc;
}

struct bt_note_line {
    baton_log_level level;
    char *line;
    bt_note_line *next;
};

void bt_notes_add(bt_store *s, baton_log_level level, char *line)
{
    bt_note_line *n = malloc(sizeof *n);
    if (!n) {
        free(line); /* a log line is not worth failing a transition for */
        return;
    }
    *n = (bt_note_line){level, line, NULL};
    if (s->notes.last)
        s->notes.last->next = n;
    else
        s->notes.first = n;
    s->notes.last = n;
}

void bt_notes_settle(bt_store *s, int committed)
{
    bt_note_line *n = s->notes.first;
    s->notes.first = s->notes.last = NULL;
    while (n) {
        bt_note_line *next = n->next;
        if (committed)
            s->notes.deliver(s->notes.client, n->level, n->line);
        free(n->line);
        free(n);
        n = next;
    }
}

void bt_store_close(bt_store *store)
{
    if (!store)
        return;
    bt_notes_settle(store, 0);
    char *url = store->url;
    store->ops->close(store);
    free(url);
}

int bt_row_first_int(bt_row *row, void *payload)
{
    *(int64_t *)payload = bt_col_int(row, 0);
    return 1;
}

int bt_row_count(bt_row *row, void *payload)
{
    (void)row;
    (*(int64_t *)payload)++;
    return 0;
}

int bt_row_collect_id(bt_row *row, void *payload)
{
    bt_id_list *l = payload;
    if (bt_grow(&l->ids, &l->cap, l->len, sizeof *l->ids) != 0)
        return -1;
    l->ids[l->len++] = bt_col_int(row, 0);
    return 0;
}

int bt_row_collect_text(bt_row *row, void *payload)
{
    bt_text_list *l = payload;
    if (bt_grow(&l->items, &l->cap, l->len, sizeof *l->items) != 0)
        return -1;
    char *text = strdup(bt_col_text(row, 0));
    if (!text)
        return -1;
    l->items[l->len++] = text;
    return 0;
}

void bt_text_list_free(bt_text_list *l)
{
    for (size_t i = 0; i < l->len; i++)
        free(l->items[i]);
    free(l->items);
    *l = (bt_text_list){0};
}

/* password_end is where the value of a password= starting at v ends: at '&' or '#' in a
 * URI's query; at white space in libpq's "key=value" form, or at the closing quote of a
 * quoted value there. */
static const char *password_end(const char *v, int in_query)
{
    if (in_query)
        return v + strcspn(v, "&#");
    if (*v != '\'')
        return v + strcspn(v, " \t");
    for (v++; *v && *v != '\''; v++)
        if (*v == '\\' && v[1])
            v++;
    return *v ? v + 1 : v;
}

char *bt_url_redact(const char *url)
{
    size_t len = strlen(url);
    char *out = malloc(len + 4 * (len / 8 + 1) + 1); /* room for "***" per hidden span */
    if (!out)
        return NULL;
    /* libpq reads the user information up to the last '@' before the first '/' after "//"
     * (a raw '?' or '@' may sit in the password). */
    const char *authority = strstr(url, "://"), *at = NULL, *colon = NULL;
    if (authority) {
        authority += 3;
        for (const char *p = authority; *p && *p != '/'; p++)
            if (*p == '@')
                at = p;
        colon = at ? memchr(authority, ':', (size_t)(at - authority)) : NULL;
    }
    const char *query = strchr(at ? at : url, '?');
    size_t n = 0;
    for (const char *p = url; *p;) {
        if (colon && p == colon + 1) {
            memcpy(out + n, "***", 3), n += 3;
            p = at;
            colon = NULL; /* once: an empty password leaves p where it was */
            continue;
        }
        int in_query = query && p > query;
        int starts = p > url && (in_query ? (p[-1] == '?' || p[-1] == '&') : (p[-1] == ' ' || p[-1] == ':'));
        if (starts && (!at || p > at) && strncasecmp(p, "password=", 9) == 0) {
            memcpy(out + n, p, 9), n += 9;
            memcpy(out + n, "***", 3), n += 3;
            p = password_end(p + 9, in_query);
            continue;
        }
        out[n++] = *p++;
    }
    out[n] = '\0';
    return out;
}

void bt_url_with_database(char *out, size_t cap, const char *url, const char *db)
{
    const char *authority = strstr(url, "://");
    authority = authority ? authority + 3 : url;
    size_t prefix = (size_t)(authority - url) + strcspn(authority, "/?");
    const char *query = strchr(authority, '?');
    snprintf(out, cap, "%.*s/%s%s", (int)prefix, url, db, query ? query : "");
}

enum { STMT_CACHE_MIN = 64 };

static size_t stmt_slot_index(const bt_stmt_cache *c, const char *sql)
{
    size_t h = ((uintptr_t)sql >> 3) * 11400714819323198485ull;
    size_t mask = c->cap - 1, i = h & mask;
    while (c->slots[i].sql && c->slots[i].sql != sql)
        i = (i + 1) & mask;
    return i;
}

bt_stmt_slot *bt_stmt_cache_find(bt_stmt_cache *c, const char *sql)
{
    if (c->len * 2 >= c->cap) {
        size_t cap = c->cap ? c->cap * 2 : STMT_CACHE_MIN;
        bt_stmt_slot *grown = calloc(cap, sizeof *grown);
        if (!grown)
            return NULL;
        bt_stmt_cache old = *c;
        c->slots = grown;
        c->cap = cap;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].sql)
                c->slots[stmt_slot_index(c, old.slots[i].sql)] = old.slots[i];
        free(old.slots);
    }
    return &c->slots[stmt_slot_index(c, sql)];
}

void bt_stmt_cache_fill(bt_stmt_cache *c, bt_stmt_slot *slot, const char *sql, void *stmt)
{
    slot->sql = sql;
    slot->stmt = stmt;
    c->len++;
}

void bt_stmt_cache_clear(bt_stmt_cache *c, void (*free_stmt)(void *stmt))
{
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].sql)
            free_stmt(c->slots[i].stmt);
    free(c->slots);
    *c = (bt_stmt_cache){0};
}

int bt_query_int(bt_store *s, const char *sql, const bt_val *args, int nargs, int64_t *out,
                 int64_t fallback)
{
    *out = fallback;
    return bt_exec(s, sql, args, nargs, bt_row_first_int, out, NULL);
}

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;

const char *bt_sql_list_text(bt_sql_list *l, int n)
{
    _Atomic(char *) *slot = &l->texts[n - 1];
    char *text = atomic_load_explicit(slot, memory_order_acquire);
    if (text)
        return text;
    pthread_mutex_lock(&list_lock);
    text = atomic_load_explicit(slot, memory_order_relaxed);
    if (!text) {
        const char *sep_text = l->sep ? l->sep : ", ";
        size_t head = strlen(l->head), item = strlen(l->item), tail = strlen(l->tail);
        size_t sep = strlen(sep_text);
        text = malloc(head + (size_t)n * (item + sep) + tail + 1);
        if (text) {
            char *p = text;
            memcpy(p, l->head, head);
            p += head;
            for (int i = 0; i < n; i++) {
                if (i > 0) {
                    memcpy(p, sep_text, sep);
                    p += sep;
                }
                memcpy(p, l->item, item);
                p += item;
            }
            memcpy(p, l->tail, tail + 1);
            atomic_store_explicit(slot, text, memory_order_release);
        }
    }
    pthread_mutex_unlock(&list_lock);
    return text;
}
