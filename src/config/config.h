/* config.h: baton.yml, read into plain structs. Every value keeps the line it came from so
 * later checks (a class without a command, say) can name the file and line too. */
#ifndef BT_CONFIG_H
#define BT_CONFIG_H

#include <stddef.h>

#include "sched/cron.h"

typedef enum { BT_ON_CONFLICT_BLOCK = 0, BT_ON_CONFLICT_DISCARD, BT_ON_CONFLICT_COALESCE } bt_on_conflict;

typedef struct bt_concurrency_config {
    int enabled;            /* 1 when a concurrency: block is present */
    int line;
    int to;                 /* default 1, >= 1 */
    char *key;              /* template, e.g. "user_{user_id}"; required */
    char *group;            /* NULL means the class name */
    double duration;        /* seconds, default 180, > 0 */
    bt_on_conflict on_conflict;
} bt_concurrency_config;

typedef struct bt_class_config {
    char *name;
    int line;               /* line of the class's key under jobs: */
    char *queue;            /* NULL when not given */
    int priority;           /* default 0 */
    char *command;          /* NULL when not given */
    double timeout;         /* seconds; 0 = none */
    int max_attempts;       /* retry.attempts, default 1 */
    int backoff;            /* baton_backoff value; default exponential */
    double backoff_base;    /* retry.base seconds, default 1 */
    bt_concurrency_config concurrency;
} bt_class_config;

typedef struct bt_worker_config {
    char **queues;          /* in polling order; default one entry "*" */
    size_t nqueues;
    int threads;            /* default 3 */
    int processes;          /* default 1 */
    double polling_interval;/* default 0.1 */
    int line;
} bt_worker_config;

typedef struct bt_dispatcher_config {
    double polling_interval;                  /* default 1 */
    int batch_size;                           /* default 500 */
    double concurrency_maintenance_interval;  /* default 30 */
    int line;
} bt_dispatcher_config;

/* A recurring task of the recurring: section: a job enqueued on a cron schedule. */
typedef struct bt_recurring_config {
    char *key;              /* the task's name under recurring: */
    int line;               /* line of that name */
    char *class_name;       /* class: required */
    char *arguments;        /* args: as JSON text; "[]" when not given or null */
    char *schedule;         /* required; a valid cron schedule */
    char *queue;            /* NULL: the class's queue */
    int has_priority;       /* 0: the class's priority */
    int priority;
    char *timezone;         /* IANA name; NULL means UTC */
    char *description;      /* NULL when not given */
} bt_recurring_config;

typedef struct bt_config {
    char *path;
    bt_class_config *classes;
    size_t nclasses;
    bt_worker_config *workers;
    size_t nworkers;
    bt_dispatcher_config *dispatchers;
    size_t ndispatchers;
    size_t max_arguments_bytes;          /* default 8 MiB */
    double shutdown_timeout;             /* default 5 */
    double process_heartbeat_interval;   /* default 5 */
    double process_alive_threshold;      /* default 30 */
    double scheduler_polling_interval;   /* scheduler.polling_interval, default 5 */
    bt_recurring_config *recurring;
    size_t nrecurring;
} bt_config;

/* bt_config_defaults fills *cfg with the defaults of an absent file (no classes, no
 * workers, no dispatchers, no recurring tasks). */
void bt_config_defaults(bt_config *cfg);

/* bt_config_load reads path. On success returns 0 and *out (free with bt_config_free).
 * On failure returns BATON_EINVALID (bad content) or BATON_ERROR (unreadable file) with a
 * one-line message "PATH:LINE: what is wrong" naming the key. */
int bt_config_load(const char *path, bt_config **out);

void bt_config_free(bt_config *cfg);

/* bt_recurring_config_clear frees a task's strings (the struct itself is the caller's). */
void bt_recurring_config_clear(bt_recurring_config *t);

/* bt_schedule_parse reads a recurring task's schedule like bt_cron_parse and also refuses
 * one that never runs ("0 0 31 2 *"). BATON_EINVALID with a message naming the field. */
int bt_schedule_parse(const char *text, bt_cron *out);

#endif
