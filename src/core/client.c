/* client.c: the baton_client handle: its connection, job classes, configuration and
 * logger, and the public enqueue entry points. */
#include <jansson.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "store/schema.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/utf8.h"

enum { DEFAULT_MAX_ARGUMENTS = 8 * 1024 * 1024 };

int baton_schema_version(void) { return BT_SCHEMA_VERSION; }

void baton_free(void *ptr) { free(ptr); }

int baton_open(baton_client **out, const char *url)
{
    *out = NULL;
    baton_client *c = calloc(1, sizeof *c);
    if (!c)
        return bt_err_set(BATON_ERROR, "out of memory");
    c->max_arguments_bytes = DEFAULT_MAX_ARGUMENTS;
    c->heartbeat_interval = 5.0;
    c->alive_threshold = 30.0;
    c->url = strdup(url ? url : "sqlite:baton.db");
    c->display_url = c->url ? bt_url_redact(c->url) : NULL;
    if (!c->display_url) {
        free(c->url);
        free(c);
        return bt_err_set(BATON_ERROR, "out of memory");
    }
    int rc = bt_store_open(&c->store, c->url);
    int version = 0;
    if (rc == BATON_OK)
        rc = bt_schema_current(c->store, &version);
    if (rc == BATON_OK && version > BT_SCHEMA_VERSION)
        rc = bt_schema_check(c->store);
    if (rc != BATON_OK) {
        baton_close(c);
        return rc;
    }
    bt_log_attach(c, c->store);
    *out = c;
    return BATON_OK;
}

static void class_clear(bt_class *k)
{
    free(k->name);
    free(k->queue);
    free(k->command);
    free(k->concurrency_key);
    free(k->concurrency_group);
}

void baton_close(baton_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nclasses; i++)
        class_clear(&c->classes[i]);
    free(c->classes);
    bt_config_free(c->config);
    bt_store_close(c->store);
    free(c->url);
    free(c->display_url);
    free(c);
}

int baton_migrate(baton_client *c) { return bt_schema_migrate(c->store); }

const char *baton_client_url(const baton_client *c) { return c->url; }

const char *baton_client_display_url(const baton_client *c) { return c->display_url; }

int baton_set_max_arguments_bytes(baton_client *c, size_t max_bytes)
{
    if (max_bytes == 0)
        return bt_err_set(BATON_EINVALID, "max_arguments_bytes must be positive");
    c->max_arguments_bytes = max_bytes;
    return BATON_OK;
}

/* check_liveness is the one rule for liveness settings, wherever they come from. A worker
 * fences its jobs once half the alive threshold passed without a heartbeat, so that half
 * must outlast one late or failed heartbeat: the threshold is at least four heartbeat
 * intervals. */
static int check_liveness(double heartbeat_interval, double alive_threshold)
{
    if (!(heartbeat_interval > 0) || !bt_seconds_valid(heartbeat_interval) || !bt_seconds_valid(alive_threshold))
        return bt_err_set(BATON_EINVALID,
                          "process_heartbeat_interval and process_alive_threshold must be above 0 and at most %.0e "
                          "seconds", BATON_SECONDS_MAX);
    if (alive_threshold < 4 * heartbeat_interval)
        return bt_err_set(BATON_EINVALID,
                          "process_alive_threshold (%g s) must be at least 4 times process_heartbeat_interval (%g s):"
                          " a worker stops its jobs after half the threshold without a heartbeat",
                          alive_threshold, heartbeat_interval);
    return BATON_OK;
}

int baton_set_liveness(baton_client *c, double heartbeat_interval, double alive_threshold)
{
    int rc = check_liveness(heartbeat_interval, alive_threshold);
    if (rc != BATON_OK)
        return rc;
    c->heartbeat_interval = heartbeat_interval;
    c->alive_threshold = alive_threshold;
    return BATON_OK;
}

void bt_client_wait_stops(baton_client *c)
{
    while (atomic_load(&c->stops_under_way) > 0)
        sched_yield();
}

int bt_client_open_store(baton_client *c, bt_store **out)
{
    int rc = bt_store_open(out, c->url);
    if (rc == BATON_OK && (rc = bt_schema_check(*out)) != BATON_OK) {
        bt_store_close(*out);
        *out = NULL;
    }
    if (rc == BATON_OK)
        bt_log_attach(c, *out);
    return rc;
}

bt_class *bt_class_find(baton_client *c, const char *name)
{
    for (size_t i = 0; i < c->nclasses; i++)
        if (strcmp(c->classes[i].name, name) == 0)
            return &c->classes[i];
    return NULL;
}

int bt_check_name(const char *what, const char *name)
{
    if (!name || !*name)
        return bt_err_set(BATON_EINVALID, "%s must not be empty", what);
    if (!bt_utf8_valid(name))
        return bt_err_set(BATON_EINVALID, "%s is not valid UTF-8", what);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return bt_err_set(BATON_EINVALID, "%s holds a control character (byte 0x%02x)", what, *p);
        /* C1 controls (a terminal's CSI among them) and the bidirectional embeddings,
         * overrides and isolates, which make a name read other than it is. */
        unsigned cp = p[0] == 0xc2 ? p[1] : p[0] == 0xe2 && p[1] == 0x80 ? 0x2000u | (p[2] & 0x3fu)
                                         : p[0] == 0xe2 && p[1] == 0x81 ? 0x2040u | (p[2] & 0x3fu) : 0;
        if ((p[0] == 0xc2 && cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
            (cp >= 0x2066 && cp <= 0x2069))
            return bt_err_set(BATON_EINVALID, "%s holds a control character (U+%04X)", what, cp);
    }
    return BATON_OK;
}

static int register_class(baton_client *c, const char *name, const baton_class_options *o,
                          int config_line)
{
    int rc = bt_check_name("class name", name);
    if (rc != BATON_OK)
        return rc;
    if ((o->queue && (rc = bt_check_name("queue name", o->queue)) != BATON_OK) ||
        (o->concurrency_group && (rc = bt_check_name("concurrency group", o->concurrency_group)) != BATON_OK))
        return bt_err_prefix(rc, "class %s", name);
    if (o->version != BATON_CLASS_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "class %s: unknown options version %u", name, o->version);
    if (o->command && o->perform)
        return bt_err_set(BATON_EINVALID, "class %s: give a command or a perform callback, not both", name);
    if (o->max_attempts < 1)
        return bt_err_set(BATON_EINVALID, "class %s: max_attempts must be at least 1", name);
    if (!bt_seconds_valid(o->timeout) || !bt_seconds_valid(o->backoff_base))
        return bt_err_set(BATON_EINVALID, "class %s: timeout and backoff base must be from 0 to %.0e seconds", name,
                          BATON_SECONDS_MAX);
    if (o->backoff < BATON_BACKOFF_EXPONENTIAL || o->backoff > BATON_BACKOFF_FIXED)
        return bt_err_set(BATON_EINVALID, "class %s: unknown backoff %d", name, (int)o->backoff);
    if (o->concurrency_key && o->concurrency_key_fn)
        return bt_err_set(BATON_EINVALID, "class %s: give a concurrency key template or a key function, not both", name);
    if (o->concurrency_limit < 1)
        return bt_err_set(BATON_EINVALID, "class %s: concurrency limit must be at least 1", name);
    if (!(o->concurrency_duration > 0) || !bt_seconds_valid(o->concurrency_duration))
        return bt_err_set(BATON_EINVALID, "class %s: concurrency duration must be above 0 and at most %.0e seconds",
                          name, BATON_SECONDS_MAX);
    if (o->on_conflict < BATON_ON_CONFLICT_BLOCK || o->on_conflict > BATON_ON_CONFLICT_COALESCE)
        return bt_err_set(BATON_EINVALID, "class %s: unknown on_conflict %d", name, (int)o->on_conflict);
    bt_class *k = bt_class_find(c, name);
    if (k) {
        class_clear(k); /* o's strings are the caller's, never k's own */
    } else {
        if (c->nclasses == c->classes_cap) {
            size_t cap = c->classes_cap ? c->classes_cap * 2 : 8;
            bt_class *grown = realloc(c->classes, cap * sizeof *grown);
            if (!grown)
                return bt_err_set(BATON_ERROR, "out of memory");
            c->classes = grown;
            c->classes_cap = cap;
        }
        k = &c->classes[c->nclasses++];
    }
    *k = (bt_class){
        .name = strdup(name),
        .queue = strdup(o->queue ? o->queue : "default"),
        .priority = o->priority,
        .max_attempts = o->max_attempts,
        .backoff = (int)o->backoff,
        .backoff_base = o->backoff_base,
        .timeout = o->timeout,
        .command = o->command ? strdup(o->command) : NULL,
        .perform = o->perform,
        .payload = o->payload,
        .concurrency_key = o->concurrency_key ? strdup(o->concurrency_key) : NULL,
        .concurrency_key_fn = o->concurrency_key_fn,
        .concurrency_limit = o->concurrency_limit,
        .concurrency_group = strdup(o->concurrency_group ? o->concurrency_group : name),
        .concurrency_duration = o->concurrency_duration,
        .on_conflict = (int)o->on_conflict,
        .config_line = config_line,
    };
    return BATON_OK;
}

int baton_class_register(baton_client *c, const char *name, const baton_class_options *opts)
{
    baton_class_options defaults = BATON_CLASS_OPTIONS_INIT;
    return register_class(c, name, opts ? opts : &defaults, 0);
}

int baton_load_config(baton_client *c, const char *path)
{
    if (!path)
        return BATON_OK;
    bt_config *cfg;
    int rc = bt_config_load(path, &cfg);
    if (rc != BATON_OK)
        return rc;
    for (size_t i = 0; i < cfg->nclasses && rc == BATON_OK; i++) {
        const bt_class_config *cc = &cfg->classes[i];
        bt_class *existing = bt_class_find(c, cc->name);
        baton_class_options o = BATON_CLASS_OPTIONS_INIT;
        o.queue = cc->queue;
        o.priority = cc->priority;
        o.max_attempts = cc->max_attempts;
        o.backoff = (baton_backoff)cc->backoff;
        o.backoff_base = cc->backoff_base;
        o.timeout = cc->timeout;
        o.command = cc->command;
        if (cc->concurrency.enabled) {
            o.concurrency_key = cc->concurrency.key;
            o.concurrency_limit = cc->concurrency.to;
            o.concurrency_group = cc->concurrency.group;
            o.concurrency_duration = cc->concurrency.duration;
            o.on_conflict = (baton_on_conflict)cc->concurrency.on_conflict;
        }
        /* A program may register a callback (and a key function) before loading the file
         * that tunes its class. */
        if (existing && !cc->command) {
            o.perform = existing->perform;
            o.payload = existing->payload;
        }
        if (existing && !cc->concurrency.enabled && existing->concurrency_key_fn) {
            o.concurrency_key_fn = existing->concurrency_key_fn;
            o.concurrency_limit = existing->concurrency_limit;
            o.concurrency_group = existing->concurrency_group;
            o.concurrency_duration = existing->concurrency_duration;
            o.on_conflict = (baton_on_conflict)existing->on_conflict;
        }
        char *group = o.concurrency_group ? strdup(o.concurrency_group) : NULL;
        o.concurrency_group = group;
        rc = register_class(c, cc->name, &o, cc->line);
        free(group);
        if (rc != BATON_OK)
            bt_err_prefix(rc, "%s:%d", path, cc->line);
    }
    /* A task whose class nobody can enqueue would fail at every run; say so now. */
    for (size_t i = 0; i < cfg->nrecurring && rc == BATON_OK; i++)
        if (!bt_class_find(c, cfg->recurring[i].class_name))
            rc = bt_err_set(BATON_EINVALID, "%s:%d: recurring.%s: unknown class '%s'", path,
                            cfg->recurring[i].line, cfg->recurring[i].key,
                            cfg->recurring[i].class_name);
    if (rc == BATON_OK && check_liveness(cfg->process_heartbeat_interval, cfg->process_alive_threshold) != BATON_OK)
        rc = bt_err_prefix(BATON_EINVALID, "%s", path);
    if (rc != BATON_OK) {
        bt_config_free(cfg);
        return rc;
    }
    c->max_arguments_bytes = cfg->max_arguments_bytes;
    c->heartbeat_interval = cfg->process_heartbeat_interval;
    c->alive_threshold = cfg->process_alive_threshold;
    bt_config_free(c->config);
    c->config = cfg;
    return BATON_OK;
}

/* concurrency_key builds "GROUP/KEY" for a limited job, or leaves *out NULL. */
static int concurrency_key(const bt_class *k, const baton_enqueue_options *o, json_t *args,
                           const char *args_text, char **out)
{
    *out = NULL;
    char *key = NULL;
    int rc = BATON_OK;
    if (o && o->concurrency_key) {
        if (!*o->concurrency_key)
            return bt_err_set(BATON_EINVALID, "concurrency key must not be empty");
        key = strdup(o->concurrency_key);
    } else if (k->concurrency_key_fn) {
        char buf[1024];
        if (k->concurrency_key_fn(args_text, buf, sizeof buf, k->payload) != 0)
            return bt_err_set(BATON_EINVALID, "class %s: the concurrency key function refused the arguments", k->name);
        buf[sizeof buf - 1] = '\0';
        key = strdup(buf);
    } else if (k->concurrency_key) {
        rc = bt_key_render(k->concurrency_key, args, &key);
    } else {
        return BATON_OK;
    }
    if (rc == BATON_OK && !key)
        rc = bt_err_set(BATON_ERROR, "out of memory");
    if (rc == BATON_OK && *key) /* an empty rendered key is a key like any other */
        rc = bt_check_name("concurrency key", key);
    if (rc == BATON_OK && asprintf(out, "%s/%s", k->concurrency_group, key) < 0)
        rc = bt_err_set(BATON_ERROR, "out of memory");
    free(key);
    return rc;
}

int bt_prepare_job(baton_client *c, const baton_job_spec *spec, int64_t now, bt_new_job *job)
{
    memset(job, 0, sizeof *job);
    if (!spec->class_name)
        return bt_err_set(BATON_EINVALID, "missing class name");
    bt_class *k = bt_class_find(c, spec->class_name);
    if (!k)
        return bt_err_set(BATON_EINVALID, "unknown class '%s'", spec->class_name);
    const char *args = spec->args_json ? spec->args_json : "[]";
    size_t len = strlen(args);
    if (len > c->max_arguments_bytes)
        return bt_err_set(BATON_EINVALID, "arguments of %zu bytes exceed max_arguments_bytes (%zu)",
                          len, c->max_arguments_bytes);
    const baton_enqueue_options *o = spec->opts;
    if (o && o->version != BATON_ENQUEUE_OPTIONS_VERSION)
        return bt_err_set(BATON_EINVALID, "unknown enqueue options version %u", o->version);
    if (o && o->queue && bt_check_name("queue name", o->queue) != BATON_OK)
        return BATON_EINVALID;
    if (o && (o->concurrency_limit < 0 || !bt_seconds_valid(o->concurrency_duration) || o->on_conflict < -1 ||
              o->on_conflict > BATON_ON_CONFLICT_COALESCE))
        return bt_err_set(BATON_EINVALID, "concurrency limit, duration or on_conflict out of range");
    if (o && !bt_seconds_valid(o->delay))
        return bt_err_set(BATON_EINVALID, "delay must be from 0 to %.0e seconds", BATON_SECONDS_MAX);
    json_error_t jerr;
    json_t *parsed = json_loadb(args, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!parsed)
        return bt_err_set(BATON_EINVALID, "arguments are not valid JSON: %s at line %d column %d",
                          jerr.text, jerr.line, jerr.column);
    char *key = NULL;
    int rc = concurrency_key(k, o, parsed, args, &key);
    json_decref(parsed);
    if (rc != BATON_OK)
        return rc;
    int64_t run_at = now;
    if (o && o->run_at_ms > 0)
        run_at = o->run_at_ms;
    else if (o && o->delay > 0)
        run_at = now + (int64_t)(o->delay * 1000.0);
    *job = (bt_new_job){
        .class_name = k->name,
        .queue = o && o->queue ? o->queue : k->queue,
        .arguments = args,
        .arguments_len = len,
        .priority = o && o->has_priority ? o->priority : k->priority,
        .run_at = run_at,
        .max_attempts = k->max_attempts,
        .backoff = k->backoff,
        .backoff_base = k->backoff_base,
        .timeout = k->timeout,
        .concurrency_key = key,
        .concurrency_limit = o && o->concurrency_limit > 0 ? o->concurrency_limit : k->concurrency_limit,
        .concurrency_duration = o && o->concurrency_duration > 0 ? o->concurrency_duration : k->concurrency_duration,
        .on_conflict = o && o->on_conflict >= 0 ? o->on_conflict : k->on_conflict,
    };
    return BATON_OK;
}

void bt_new_job_clear(bt_new_job *job)
{
    free(job->concurrency_key);
    job->concurrency_key = NULL;
}

/* enqueue_on stores the jobs in one transaction of store (a savepoint inside the
 * application's transaction when store is borrowed). */
static int enqueue_on(baton_client *c, bt_store *store, baton_enqueued *out, const baton_job_spec *specs, size_t n)
{
    int64_t now = bt_now_ms();
    bt_new_job *jobs = calloc(n ? n : 1, sizeof *jobs);
    int64_t *ids = calloc(n ? n : 1, sizeof *ids);
    bt_landing *landings = calloc(n ? n : 1, sizeof *landings);
    int rc = jobs && ids && landings ? BATON_OK : bt_err_set(BATON_ERROR, "out of memory");
    /* Validate everything before taking the write lock: parsing JSON under the lock would
     * stall every other writer. */
    for (size_t i = 0; i < n && rc == BATON_OK; i++)
        if ((rc = bt_prepare_job(c, &specs[i], now, &jobs[i])) != BATON_OK && n > 1)
            bt_err_prefix(rc, "job %zu", i);
    if (rc == BATON_OK)
        rc = bt_begin(store, BT_TXN_WRITE);
    if (rc == BATON_OK) {
        rc = bt_end(store, bt_enqueue_rows(store, jobs, n, now, 0, ids, landings));
        for (size_t i = 0; out && rc == BATON_OK && i < n; i++)
            out[i] = (baton_enqueued){ids[i], landings[i].state, landings[i].coalesced_into};
    }
    for (size_t i = 0; jobs && i < n; i++)
        bt_new_job_clear(&jobs[i]);
    free(jobs);
    free(ids);
    free(landings);
    if (rc == BATON_OK)
        bt_log(c, BATON_LOG_DEBUG, "event=job.enqueued count=%zu", n);
    return rc;
}

int baton_enqueue_detailed(baton_client *c, baton_enqueued *out, const baton_job_spec *specs, size_t n)
{
    return enqueue_on(c, c->store, out, specs, n);
}

/* enqueue_borrowed runs enqueue_on over the application's connection. Its log lines are
 * not noted: the application's transaction may still roll the jobs back. */
static int enqueue_borrowed(baton_client *c, const bt_store_ops *driver, void *native, baton_enqueued *out,
                            const baton_job_spec *specs, size_t n)
{
    if (c->store->ops != driver)
        return bt_err_set(BATON_EINVALID, "%s: the application's connection is not of this client's database driver",
                          c->display_url);
    if (!native)
        return bt_err_set(BATON_EINVALID, "no application connection given");
    bt_store *store;
    int rc = bt_store_borrow(&store, driver, native, c->url);
    if (rc != BATON_OK)
        return rc;
    rc = enqueue_on(c, store, out, specs, n);
    bt_store_close(store);
    return rc;
}

int baton_enqueue_on_sqlite(baton_client *c, struct sqlite3 *db, baton_enqueued *out, const baton_job_spec *specs,
                            size_t n)
{
    return enqueue_borrowed(c, &bt_sqlite_ops, db, out, specs, n);
}

int baton_enqueue_on_postgres(baton_client *c, struct pg_conn *conn, baton_enqueued *out,
                              const baton_job_spec *specs, size_t n)
{
    return enqueue_borrowed(c, &bt_postgres_ops, conn, out, specs, n);
}

int baton_enqueue_many(baton_client *c, int64_t *ids_out, const baton_job_spec *specs, size_t n)
{
    baton_enqueued *out = ids_out ? calloc(n ? n : 1, sizeof *out) : NULL;
    int rc = baton_enqueue_detailed(c, out, specs, n);
    for (size_t i = 0; out && i < n; i++)
        ids_out[i] = out[i].id;
    free(out);
    return rc;
}

int baton_enqueue(baton_client *c, int64_t *id_out, const char *class_name, const char *args_json,
                  const baton_enqueue_options *opts)
{
    baton_job_spec spec = {class_name, args_json, opts};
    return baton_enqueue_many(c, id_out, &spec, 1);
}

int baton_check_schema(baton_client *c) { return bt_schema_check(c->store); }
