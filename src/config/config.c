/* config.c: reads baton.yml into the plain structs of config.h.
 *
 * libyaml's document API turns the file into a node tree; the tree is then walked with
 * small field tables. Each mapping (the top level, a class, retry, concurrency, a worker,
 * a dispatcher) lists its keys with a kind, the offset of the struct member it fills and
 * the smallest accepted value, so one walker rejects unknown and duplicate keys and one
 * converter checks every scalar. That keeps every message in the same shape,
 * "FILE:LINE: key.path: what is wrong". The irregular parts (the jobs and recurring
 * mappings, the worker and dispatcher lists, queue lists, required keys, a task's args
 * as any YAML value) are handlers called from the tables. */
#include "config/config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "baton.h"
#include "sched/cron.h"
#include "util/clock.h"
#include "util/err.h"

enum { KEYPATH_MAX = 512 };

typedef struct ctx {
    const char *file;
    yaml_document_t *doc;
    /* The free-form value to_json converts, for errors about it as a whole, and the
     * values it made of it so far. */
    const char *json_path;
    yaml_node_t *json_node;
    size_t json_values;
} ctx;

/* A free-form value (recurring args) is bounded: aliases may nest a value in itself or
 * multiply it a billion times, and the conversion would overflow the stack or memory. */
enum { JSON_DEPTH_MAX = 64, JSON_VALUES_MAX = 100000 };

typedef enum { F_INT, F_SIZE, F_NUM, F_STR, F_ENUM, F_MAP, F_FN } field_kind;

typedef struct field field;
/* A handler gets the full key path, the key node (for the line) and the value node. */
typedef int (*field_fn)(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *val, void *base);

struct field {
    const char *name;
    field_kind kind;
    size_t off;                /* member filled in the struct being read */
    double min;                /* smallest accepted value (F_INT, F_SIZE, F_NUM) */
    int above;                 /* 1: the value must be strictly greater than min */
    const char *const *words;  /* F_ENUM: accepted words; the index is the stored value */
    const field *sub;          /* F_MAP: a nested mapping filling the same struct */
    field_fn fn;               /* F_FN */
};

static int walk_map(ctx *c, const char *path, yaml_node_t *map, const field *fields, void *base);

#define FOR_PAIRS(p, map)                                                                 \
    for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start;                          \
         p < (map)->data.mapping.pairs.top; p++)
#define FOR_ITEMS(i, seq)                                                                 \
    for (yaml_node_item_t *i = (seq)->data.sequence.items.start;                         \
         i < (seq)->data.sequence.items.top; i++)

/* ---- nodes and messages ------------------------------------------------------------- */

static yaml_node_t *node(ctx *c, int id) { return yaml_document_get_node(c->doc, id); }
static const char *text(yaml_node_t *n) { return (const char *)n->data.scalar.value; }
static int line(yaml_node_t *n) { return (int)n->start_mark.line + 1; }
static int oom(void) { return bt_err_set(BATON_ERROR, "out of memory"); }

/* libyaml does not resolve tags, so YAML's null spellings are recognised here. */
static int is_null(yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* A plain scalar is a number candidate; a quoted one is a string even when it looks like one. */
static int is_plain(yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           !is_null(n);
}

static int bad(ctx *c, yaml_node_t *n, const char *path, const char *expected)
{
    char buf[256];
    const char *got = n->type == YAML_MAPPING_NODE ? "a mapping"
                      : n->type == YAML_SEQUENCE_NODE ? "a list"
                      : is_null(n) ? "null" : buf;
    if (got == buf)
        snprintf(buf, sizeof buf, is_plain(n) ? "'%s'" : "the quoted string '%s'", text(n));
    return bt_err_set(BATON_EINVALID, "%s:%d: %s: expected %s, got %s", c->file, line(n),
                      *path ? path : "top level", expected, got);
}

static int invalid(ctx *c, yaml_node_t *n, const char *path, const char *what)
{
    return bt_err_set(BATON_EINVALID, "%s:%d: %s: %s", c->file, line(n), path, what);
}

static int out_of_range(ctx *c, yaml_node_t *n, const char *path, const char *bound, double limit)
{
    return bt_err_set(BATON_EINVALID, "%s:%d: %s: must be %s %.15g, got %s", c->file, line(n),
                      path, bound, limit, text(n));
}

static void join(char *out, const char *path, const char *name)
{
    snprintf(out, KEYPATH_MAX, "%s%s%s", path, *path ? "." : "", name);
}

/* ---- scalars ----------------------------------------------------------------------- */

static int set_value(ctx *c, const char *path, const field *f, yaml_node_t *key, yaml_node_t *n,
                     void *base)
{
    char *dst = (char *)base + f->off;
    const char *s = is_plain(n) ? text(n) : NULL;
    char *end = NULL;
    switch (f->kind) {
    case F_INT:
    case F_SIZE: {
        errno = 0;
        long long v = s ? strtoll(s, &end, 10) : 0;
        if (!s || end == s || *end)
            return bad(c, n, path, "an integer");
        double lo = f->kind == F_INT && f->min < INT_MIN ? INT_MIN : f->min;
        double hi = f->kind == F_INT ? INT_MAX : (double)LLONG_MAX;
        if ((double)v < lo)
            return out_of_range(c, n, path, "at least", lo);
        if (errno == ERANGE || (double)v > hi)
            return out_of_range(c, n, path, "at most", hi);
        if (f->kind == F_INT)
            *(int *)dst = (int)v;
        else
            *(size_t *)dst = (size_t)v;
        return 0;
    }
    case F_NUM: {
        double v = s ? strtod(s, &end) : 0;
        if (!s || end == s || *end || !isfinite(v))
            return bad(c, n, path, "a number");
        if (f->above ? !(v > f->min) : v < f->min)
            return out_of_range(c, n, path, f->above ? "greater than" : "at least", f->min);
        if (v > BATON_SECONDS_MAX) /* every number of the file is a span of seconds */
            return out_of_range(c, n, path, "at most", BATON_SECONDS_MAX);
        *(double *)dst = v;
        return 0;
    }
    case F_STR: {
        if (n->type != YAML_SCALAR_NODE || is_null(n))
            return bad(c, n, path, "a string");
        if (!*text(n))
            return invalid(c, n, path, "must not be empty");
        char *copy = strdup(text(n));
        if (!copy)
            return oom();
        free(*(char **)dst);
        *(char **)dst = copy;
        return 0;
    }
    case F_ENUM: {
        char expected[128] = "one of ";
        for (int i = 0; f->words[i]; i++) {
            if (n->type == YAML_SCALAR_NODE && !strcmp(text(n), f->words[i])) {
                *(int *)dst = i;
                return 0;
            }
            snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s%s",
                     i ? ", " : "", f->words[i]);
        }
        return bad(c, n, path, expected);
    }
    case F_MAP:
        return walk_map(c, path, n, f->sub, base);
    case F_FN:
        break;
    }
    return f->fn(c, path, key, n, base);
}

/* ---- mappings ---------------------------------------------------------------------- */

/* check_map insists on a mapping with string keys given once each: libyaml accepts a
 * repeated key, which would silently override the first. */
static int check_map(ctx *c, const char *path, yaml_node_t *map)
{
    if (map->type != YAML_MAPPING_NODE)
        return bad(c, map, path, "a mapping");
    FOR_PAIRS(p, map) {
        yaml_node_t *k = node(c, p->key);
        if (k->type != YAML_SCALAR_NODE)
            return bt_err_set(BATON_EINVALID, "%s:%d: %s: keys must be strings", c->file,
                              line(k), *path ? path : "top level");
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
            if (!strcmp(text(node(c, q->key)), text(k)))
                return bt_err_set(BATON_EINVALID, "%s:%d: duplicate key '%s'%s%s", c->file,
                                  line(k), text(k), *path ? " in " : "", path);
    }
    return 0;
}

/* walk_map fills base from map by the fields table; null stands for an empty mapping. */
static int walk_map(ctx *c, const char *path, yaml_node_t *map, const field *fields, void *base)
{
    if (is_null(map))
        return 0;
    int rc = check_map(c, path, map);
    if (rc)
        return rc;
    FOR_PAIRS(p, map) {
        yaml_node_t *k = node(c, p->key);
        const field *f = fields;
        while (f->name && strcmp(f->name, text(k)))
            f++;
        if (!f->name)
            return bt_err_set(BATON_EINVALID, "%s:%d: unknown key '%s'%s%s", c->file, line(k),
                              text(k), *path ? " in " : "", path);
        char sub[KEYPATH_MAX];
        join(sub, path, text(k));
        if ((rc = set_value(c, sub, f, k, node(c, p->value), base)))
            return rc;
    }
    return 0;
}

/* ---- handlers for the irregular keys ------------------------------------------------ */

static void free_queues(bt_worker_config *w)
{
    for (size_t i = 0; i < w->nqueues; i++)
        free(w->queues[i]);
    free(w->queues);
    w->queues = NULL;
    w->nqueues = 0;
}

static int add_queue(bt_worker_config *w, const char *name, size_t len)
{
    char **q = realloc(w->queues, (w->nqueues + 1) * sizeof *q);
    if (!q)
        return oom();
    w->queues = q;
    if (!(q[w->nqueues] = strndup(name, len)))
        return oom();
    w->nqueues++;
    return 0;
}

/* queues: a list of names, or one string split on commas (the CLI's --queues a,b form). */
static int parse_queues(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    bt_worker_config *w = base;
    int rc = 0;
    (void)key;
    free_queues(w); /* drops the default "*" */
    if (v->type == YAML_SEQUENCE_NODE) {
        FOR_ITEMS(i, v) {
            yaml_node_t *n = node(c, *i);
            if (n->type != YAML_SCALAR_NODE || is_null(n))
                return bad(c, n, path, "a list of strings");
            if (!*text(n))
                return invalid(c, n, path, "queue names must not be empty");
            if ((rc = add_queue(w, text(n), strlen(text(n)))))
                return rc;
        }
    } else if (v->type == YAML_SCALAR_NODE && !is_null(v)) {
        for (const char *s = text(v);; s++) {
            size_t len = strcspn(s, ",");
            const char *b = s, *e = s + len;
            while (b < e && (*b == ' ' || *b == '\t'))
                b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e == b)
                return invalid(c, v, path, "queue names must not be empty");
            if ((rc = add_queue(w, b, (size_t)(e - b))) || !s[len])
                break;
            s += len;
        }
    } else {
        return bad(c, v, path, "a list of strings");
    }
    if (!rc && w->nqueues == 0)
        return invalid(c, v, path, "must name at least one queue");
    return rc;
}

/* Rows name the key, its kind and its member; optional parts are designated after. */
#define ROW(n, k, o) .name = (n), .kind = (k), .off = (o)

static const char *const backoffs[] = {"exponential", "linear", "fixed", NULL}; /* baton_backoff */
static const char *const conflicts[] = {"block", "discard", "coalesce", NULL};  /* bt_on_conflict */
_Static_assert(sizeof(bt_on_conflict) == sizeof(int), "on_conflict is stored as an int");

#define CC(m) offsetof(bt_concurrency_config, m)
static const field concurrency_fields[] = {
    {ROW("to", F_INT, CC(to)), .min = 1},
    {ROW("key", F_STR, CC(key))},
    {ROW("group", F_STR, CC(group))},
    {ROW("duration", F_NUM, CC(duration)), .min = 0, .above = 1},
    {ROW("on_conflict", F_ENUM, CC(on_conflict)), .words = conflicts},
    {.name = NULL},
};

/* concurrency: present means enabled; its key template is the one thing without a default. */
static int parse_concurrency(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    bt_concurrency_config *cc = &((bt_class_config *)base)->concurrency;
    *cc = (bt_concurrency_config){.enabled = 1, .line = line(key), .to = 1, .duration = 180};
    int rc = walk_map(c, path, v, concurrency_fields, cc);
    if (!rc && !cc->key)
        rc = bt_err_set(BATON_EINVALID, "%s:%d: %s: missing key 'key'", c->file, cc->line, path);
    return rc;
}

#define CL(m) offsetof(bt_class_config, m)
static const field retry_fields[] = { /* fills the class struct too */
    {ROW("attempts", F_INT, CL(max_attempts)), .min = 1},
    {ROW("backoff", F_ENUM, CL(backoff)), .words = backoffs},
    {ROW("base", F_NUM, CL(backoff_base)), .min = 0},
    {.name = NULL},
};
static const field class_fields[] = {
    {ROW("queue", F_STR, CL(queue))},
    {ROW("priority", F_INT, CL(priority)), .min = INT_MIN},
    {ROW("command", F_STR, CL(command))},
    {ROW("timeout", F_NUM, CL(timeout)), .min = 0},
    {ROW("retry", F_MAP, 0), .sub = retry_fields},
    {ROW("concurrency", F_FN, 0), .fn = parse_concurrency},
    {.name = NULL},
};

/* A mapping of named entries (jobs, recurring) read into an array of size-byte items. Each
 * entry starts from init (its defaults, name and line), is filled by fields and then
 * checked by done (may be NULL) for what has no default. */
typedef struct named_entries {
    const char *noun;       /* "class names must not be empty" */
    size_t size;
    const field *fields;
    int (*init)(void *item, const char *name, int line);
    int (*done)(ctx *c, const char *path, void *item);
} named_entries;

/* parse_named updates *arr and *count as entries are added, like parse_list. */
static int parse_named(ctx *c, const char *path, yaml_node_t *map, const named_entries *e,
                       void **arr, size_t *count)
{
    if (is_null(map))
        return 0;
    int rc = check_map(c, path, map);
    if (rc)
        return rc;
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (n == 0)
        return 0;
    if (!(*arr = calloc(n, e->size)))
        return oom();
    FOR_PAIRS(p, map) {
        yaml_node_t *k = node(c, p->key);
        void *item = (char *)*arr + *count * e->size;
        if (!*text(k)) {
            char what[64];
            snprintf(what, sizeof what, "%s names must not be empty", e->noun);
            return invalid(c, k, path, what);
        }
        (*count)++;
        char sub[KEYPATH_MAX];
        join(sub, path, text(k));
        if ((rc = e->init(item, text(k), line(k))) ||
            (rc = walk_map(c, sub, node(c, p->value), e->fields, item)) ||
            (e->done && (rc = e->done(c, sub, item))))
            return rc;
    }
    return 0;
}

static int init_class(void *item, const char *name, int at)
{
    bt_class_config *cl = item;
    *cl = (bt_class_config){.line = at, .max_attempts = 1, .backoff = BATON_BACKOFF_EXPONENTIAL,
                            .backoff_base = 1, .name = strdup(name)};
    return cl->name ? 0 : oom();
}

static const named_entries classes = {"class", sizeof(bt_class_config), class_fields, init_class, NULL};

/* jobs: class name -> settings; each class starts from the defaults of config.h. */
static int parse_jobs(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *map, void *base)
{
    bt_config *cfg = base;
    void *arr = NULL;
    (void)key;
    int rc = parse_named(c, path, map, &classes, &arr, &cfg->nclasses);
    cfg->classes = arr;
    return rc;
}

/* ---- recurring tasks ---------------------------------------------------------------- */

/* scalar_json reads a scalar as YAML's core schema would: plain null, true, false and
 * numbers (in JSON's spelling) keep their type; everything else is a string. */
static json_t *scalar_json(yaml_node_t *n)
{
    static const char *const truths[] = {"true", "True", "TRUE"};
    static const char *const lies[] = {"false", "False", "FALSE"};
    if (is_null(n))
        return json_null();
    if (is_plain(n)) {
        for (int i = 0; i < 3; i++)
            if (!strcmp(text(n), truths[i]) || !strcmp(text(n), lies[i]))
                return json_boolean(!strcmp(text(n), truths[i]));
        json_t *number = json_loads(text(n), JSON_DECODE_ANY, NULL);
        if (json_is_number(number))
            return number;
        json_decref(number);
    }
    return json_string(text(n));
}

static int to_json(ctx *c, const char *path, yaml_node_t *n, int depth, json_t **out)
{
    if (depth > JSON_DEPTH_MAX)
        return invalid(c, c->json_node, c->json_path, "nested deeper than 64 levels (an alias inside itself?)");
    if (++c->json_values > JSON_VALUES_MAX)
        return invalid(c, c->json_node, c->json_path, "more than 100000 values once its aliases are expanded");
    if (n->type == YAML_SCALAR_NODE)
        return (*out = scalar_json(n)) ? 0 : oom();
    int list = n->type == YAML_SEQUENCE_NODE;
    int rc = list ? 0 : check_map(c, path, n);
    json_t *whole = rc ? NULL : list ? json_array() : json_object();
    if (!rc && !whole)
        rc = oom();
    char sub[KEYPATH_MAX];
    json_t *part;
    size_t i = 0;
    if (list) {
        FOR_ITEMS(it, n) {
            if (rc)
                break;
            snprintf(sub, sizeof sub, "%s[%zu]", path, i++);
            if (!(rc = to_json(c, sub, node(c, *it), depth + 1, &part)) && json_array_append_new(whole, part))
                rc = oom();
        }
    } else {
        FOR_PAIRS(p, n) {
            if (rc)
                break;
            const char *name = text(node(c, p->key));
            join(sub, path, name);
            if (!(rc = to_json(c, sub, node(c, p->value), depth + 1, &part)) &&
                json_object_set_new(whole, name, part))
                rc = oom();
        }
    }
    if (rc)
        json_decref(whole);
    else
        *out = whole;
    return rc;
}

/* args: any YAML value, stored as the JSON text a job of the task receives. */
static int parse_args(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    bt_recurring_config *t = base;
    json_t *value = NULL;
    (void)key;
    if (is_null(v))
        return 0;
    c->json_path = path;
    c->json_node = v;
    c->json_values = 0;
    int rc = to_json(c, path, v, 0, &value);
    char *dumped = rc ? NULL : json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(value);
    if (rc)
        return rc;
    if (!dumped)
        return oom();
    free(t->arguments);
    t->arguments = dumped;
    return 0;
}

#define RT(m) offsetof(bt_recurring_config, m)
static const field task_priority = {ROW("priority", F_INT, RT(priority)), .min = INT_MIN};

/* priority: given means it overrides the class's, even when it equals the default 0. */
static int parse_task_priority(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    int rc = set_value(c, path, &task_priority, key, v, base);
    if (!rc)
        ((bt_recurring_config *)base)->has_priority = 1;
    return rc;
}

/* invalid_because reports the last library message (a schedule's, a zone's) at n. */
static int invalid_because(ctx *c, yaml_node_t *n, const char *path)
{
    char why[1024];
    snprintf(why, sizeof why, "%s", baton_error_last());
    return invalid(c, n, path, why);
}

int bt_schedule_parse(const char *text, bt_cron *out)
{
    int64_t first;
    int rc = bt_cron_parse(text, out);
    return rc == BATON_OK ? bt_cron_next(out, NULL, 0, &first) : rc;
}

/* schedule and timezone are checked here so a bad one names its line, not a failed run. */
static int parse_schedule(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    static const field as_text = {ROW("schedule", F_STR, RT(schedule))};
    bt_cron cron;
    int rc = set_value(c, path, &as_text, key, v, base);
    if (!rc && bt_schedule_parse(text(v), &cron) != BATON_OK)
        rc = invalid_because(c, v, path);
    return rc;
}

static int parse_timezone(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    static const field as_text = {ROW("timezone", F_STR, RT(timezone))};
    const bt_tz *tz;
    int rc = set_value(c, path, &as_text, key, v, base);
    if (!rc && bt_tz_load(text(v), &tz) != BATON_OK)
        rc = invalid_because(c, v, path);
    return rc;
}

static const field task_fields[] = {
    {ROW("class", F_STR, RT(class_name))},
    {ROW("args", F_FN, 0), .fn = parse_args},
    {ROW("schedule", F_FN, 0), .fn = parse_schedule},
    {ROW("queue", F_STR, RT(queue))},
    {ROW("priority", F_FN, 0), .fn = parse_task_priority},
    {ROW("timezone", F_FN, 0), .fn = parse_timezone},
    {ROW("description", F_STR, RT(description))},
    {.name = NULL},
};

static int init_task(void *item, const char *name, int at)
{
    bt_recurring_config *t = item;
    *t = (bt_recurring_config){.line = at, .key = strdup(name), .arguments = strdup("[]")};
    return t->key && t->arguments ? 0 : oom();
}

static int check_task(ctx *c, const char *path, void *item)
{
    bt_recurring_config *t = item;
    const char *missing = !t->class_name ? "class" : !t->schedule ? "schedule" : NULL;
    if (missing)
        return bt_err_set(BATON_EINVALID, "%s:%d: %s: missing key '%s'", c->file, t->line, path,
                          missing);
    return 0;
}

static const named_entries tasks = {"task", sizeof(bt_recurring_config), task_fields, init_task,
                                    check_task};

/* recurring: task name -> class, schedule and how its jobs are enqueued. */
static int parse_recurring(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *map, void *base)
{
    bt_config *cfg = base;
    void *arr = NULL;
    (void)key;
    int rc = parse_named(c, path, map, &tasks, &arr, &cfg->nrecurring);
    cfg->recurring = arr;
    return rc;
}

#define WK(m) offsetof(bt_worker_config, m)
static const field worker_fields[] = {
    {ROW("queues", F_FN, 0), .fn = parse_queues},
    {ROW("threads", F_INT, WK(threads)), .min = 1},
    {ROW("processes", F_INT, WK(processes)), .min = 1},
    {ROW("polling_interval", F_NUM, WK(polling_interval)), .min = 0, .above = 1},
    {.name = NULL},
};

#define DS(m) offsetof(bt_dispatcher_config, m)
static const field dispatcher_fields[] = {
    {ROW("polling_interval", F_NUM, DS(polling_interval)), .min = 0, .above = 1},
    {ROW("batch_size", F_INT, DS(batch_size)), .min = 1},
    {ROW("concurrency_maintenance_interval", F_NUM, DS(concurrency_maintenance_interval)),
     .min = 0, .above = 1},
    {.name = NULL},
};

static int init_worker(void *item, int at)
{
    bt_worker_config *w = item;
    *w = (bt_worker_config){.threads = 3, .processes = 1, .polling_interval = 0.1, .line = at};
    return add_queue(w, "*", 1);
}

static int init_dispatcher(void *item, int at)
{
    *(bt_dispatcher_config *)item = (bt_dispatcher_config){
        .polling_interval = 1, .batch_size = 500, .concurrency_maintenance_interval = 30,
        .line = at};
    return 0;
}

/* parse_list reads a list of mappings into a new array of size-byte items. *arr and *count
 * are updated as items are added, so bt_config_free can release a half-read list. */
static int parse_list(ctx *c, const char *path, yaml_node_t *seq, size_t size, const field *fields,
                      int (*init)(void *, int), void **arr, size_t *count)
{
    if (is_null(seq))
        return 0;
    if (seq->type != YAML_SEQUENCE_NODE)
        return bad(c, seq, path, "a list");
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (n == 0)
        return 0;
    if (!(*arr = calloc(n, size)))
        return oom();
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        yaml_node_t *item = node(c, seq->data.sequence.items.start[i]);
        void *dst = (char *)*arr + i * size;
        char sub[KEYPATH_MAX];
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        (*count)++;
        if (!(rc = init(dst, line(item))))
            rc = walk_map(c, sub, item, fields, dst);
    }
    return rc;
}

static int parse_workers(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    bt_config *cfg = base;
    void *arr = NULL;
    (void)key;
    int rc = parse_list(c, path, v, sizeof *cfg->workers, worker_fields, init_worker, &arr,
                        &cfg->nworkers);
    cfg->workers = arr;
    return rc;
}

static int parse_dispatchers(ctx *c, const char *path, yaml_node_t *key, yaml_node_t *v, void *base)
{
    bt_config *cfg = base;
    void *arr = NULL;
    (void)key;
    int rc = parse_list(c, path, v, sizeof *cfg->dispatchers, dispatcher_fields, init_dispatcher,
                        &arr, &cfg->ndispatchers);
    cfg->dispatchers = arr;
    return rc;
}

#define TOP(m) offsetof(bt_config, m)
static const field scheduler_fields[] = { /* fills the top-level struct */
    {ROW("polling_interval", F_NUM, TOP(scheduler_polling_interval)), .min = 0, .above = 1},
    {.name = NULL},
};
static const field top_fields[] = {
    {ROW("max_arguments_bytes", F_SIZE, TOP(max_arguments_bytes)), .min = 1},
    {ROW("shutdown_timeout", F_NUM, TOP(shutdown_timeout)), .min = 0},
    {ROW("process_heartbeat_interval", F_NUM, TOP(process_heartbeat_interval)),
     .min = 0, .above = 1},
    {ROW("process_alive_threshold", F_NUM, TOP(process_alive_threshold)), .min = 0, .above = 1},
    {ROW("jobs", F_FN, 0), .fn = parse_jobs},
    {ROW("workers", F_FN, 0), .fn = parse_workers},
    {ROW("dispatchers", F_FN, 0), .fn = parse_dispatchers},
    {ROW("scheduler", F_MAP, 0), .sub = scheduler_fields},
    {ROW("recurring", F_FN, 0), .fn = parse_recurring},
    {.name = NULL},
};

/* ---- loading ----------------------------------------------------------------------- */

void bt_config_defaults(bt_config *cfg)
{
    *cfg = (bt_config){.max_arguments_bytes = 8u << 20,
                       .shutdown_timeout = 5,
                       .process_heartbeat_interval = 5,
                       .process_alive_threshold = 30,
                       .scheduler_polling_interval = 5};
}

/* No configuration comes near this; a larger file is a mistake or an attack. */
enum { CONFIG_BYTES_MAX = 16 << 20 };

/* slurp reads the whole file first so a read failure is told apart from bad YAML; past
 * CONFIG_BYTES_MAX it fails with EFBIG. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    errno = 0;
    for (;;) {
        if (*len > CONFIG_BYTES_MAX) {
            errno = EFBIG;
            break;
        }
        if (*len == cap) {
            char *b = realloc(buf, cap = cap ? cap * 2 : 4096);
            if (!b)
                break;
            buf = b;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0) {
            if (!ferror(f)) {
                fclose(f);
                return buf;
            }
            break;
        }
    }
    int saved = errno ? errno : ENOMEM;
    fclose(f);
    free(buf);
    errno = saved;
    return NULL;
}

/* The problem is reported where libyaml noticed it; the context ("while parsing a flow
 * sequence") points back at the construct left open, often the real mistake. */
static int syntax_error(const char *path, yaml_parser_t *parser)
{
    if (parser->error == YAML_MEMORY_ERROR || !parser->problem)
        return oom();
    char context[160] = "";
    if (parser->context && parser->context_mark.line != parser->problem_mark.line)
        snprintf(context, sizeof context, " (%s started on line %d)", parser->context,
                 (int)parser->context_mark.line + 1);
    return bt_err_set(BATON_EINVALID, "%s:%d: YAML syntax error: %s%s", path,
                      (int)parser->problem_mark.line + 1, parser->problem, context);
}

/* parse runs the parser over text and fills cfg; a second document is refused rather than
 * silently ignored. */
static int parse(const char *path, const char *text, size_t len, bt_config *cfg)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return oom();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    for (int ndocs = 0, more = 1; !rc && more; ndocs++) {
        if (!yaml_parser_load(&parser, &doc)) {
            rc = syntax_error(path, &parser);
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        ctx c = {.file = path, .doc = &doc};
        more = root != NULL; /* an empty document marks the end of the stream */
        if (root && ndocs > 0)
            rc = bt_err_set(BATON_EINVALID, "%s:%d: only one YAML document is allowed", path,
                            line(root));
        else if (root)
            rc = walk_map(&c, "", root, top_fields, cfg);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

int bt_config_load(const char *path, bt_config **out)
{
    size_t len = 0;
    *out = NULL;
    char *text = slurp(path, &len);
    if (!text)
        return bt_err_set(BATON_ERROR, "%s: cannot read: %s", path,
                          errno == EFBIG ? "larger than 16 MiB, which no configuration is" : strerror(errno));
    bt_config *cfg = malloc(sizeof *cfg);
    int rc = cfg ? 0 : oom();
    if (cfg) {
        bt_config_defaults(cfg);
        rc = (cfg->path = strdup(path)) ? parse(path, text, len, cfg) : oom();
    }
    free(text);
    if (rc) {
        bt_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

void bt_recurring_config_clear(bt_recurring_config *t)
{
    free(t->key);
    free(t->class_name);
    free(t->arguments);
    free(t->schedule);
    free(t->queue);
    free(t->timezone);
    free(t->description);
    *t = (bt_recurring_config){0};
}

void bt_config_free(bt_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nclasses; i++) {
        bt_class_config *cl = &cfg->classes[i];
        free(cl->name);
        free(cl->queue);
        free(cl->command);
        free(cl->concurrency.key);
        free(cl->concurrency.group);
    }
    for (size_t i = 0; i < cfg->nworkers; i++)
        free_queues(&cfg->workers[i]);
    for (size_t i = 0; i < cfg->nrecurring; i++)
        bt_recurring_config_clear(&cfg->recurring[i]);
    free(cfg->recurring);
    free(cfg->classes);
    free(cfg->workers);
    free(cfg->dispatchers);
    free(cfg->path);
    free(cfg);
}
