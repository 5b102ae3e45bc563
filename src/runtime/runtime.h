/* runtime.h: pieces shared by the worker, the dispatcher and inline performs. */
#ifndef BT_RUNTIME_H
#define BT_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/core.h"

/* Answers baton_job_holds_slot() from executor threads: a connection of its own, opened
 * on first use and shared under a lock (the question is rare; a connection per thread
 * would be waste). process_id follows the worker across re-registrations. */
typedef struct bt_slot_checker {
    baton_client *client;
    pthread_mutex_t lock;
    bt_store *store;
    _Atomic int64_t process_id;
} bt_slot_checker;

void bt_slot_checker_init(bt_slot_checker *ch, baton_client *client, int64_t process_id);
void bt_slot_checker_close(bt_slot_checker *ch);

/* The job handed to a perform callback or a command. */
struct baton_job {
    bt_slot_checker *checker;
    bt_claimed_job claimed;
    const bt_class *klass;     /* NULL when this client does not know the class */
    int succeeded;
    int not_started;           /* this worker could not start its command: hand it back */
    char *error;               /* failure message, malloc'ed */
    atomic_int cancelled;
    atomic_int pgid;           /* process group of a running command job, else 0 */
    const _Atomic int64_t *alive_ns; /* its worker's liveness, for the shepherd (command.h); NULL inline */
    int64_t alive_limit_ns;
    int64_t started_ns;
    int owned;                 /* set when the outcome is recorded: the claim was still ours */
    int refused;               /* the database refused to record its outcome: tried apart */
    int64_t retry_at;          /* set when recorded as retried */
    struct baton_job *next;
};

/* bt_job_perform runs job with its class's callback or command and sets succeeded/error,
 * between client's before and after job hooks. */
void bt_job_perform(baton_client *client, struct baton_job *job);

/* bt_job_free releases a job and everything it owns. */
void bt_job_free(struct baton_job *job);

/* A wake-up channel (eventfd): async-signal-safe to signal, pollable to wait on. */
typedef struct bt_waker {
    int fd;
} bt_waker;

int bt_waker_init(bt_waker *w);
void bt_waker_close(bt_waker *w);
void bt_waker_signal(bt_waker *w);
void bt_waker_drain(bt_waker *w);

/* bt_wait_ready waits until waker fires, change_fd (may be -1) is readable, or timeout_s
 * passes. Returns 1 when the waker fired. */
int bt_wait_ready(bt_waker *w, int change_fd, double timeout_s);

/* A heartbeat on its own thread (keepalive.c): the dispatcher's, the scheduler's and an
 * inline perform's. (A worker beats from its coordinator, beside its fence; a supervisor
 * from its poll loop.) */
typedef struct bt_keepalive {
    baton_client *client;
    const char *kind;     /* of the process's rows */
    const char *metadata; /* of its row when it registers again; the caller's, outlives it */
    int reregister;       /* register again when pruned (a process without claims) */
    _Atomic int64_t process_id;
    bt_log_limit errors;
    bt_waker stop;
    pthread_t thread;
    int started;
} bt_keepalive;

/* bt_keepalive_start starts beating for process_id every heartbeat interval of c, from
 * one interval on: beat, renew leases, prune the dead (bt_liveness_tick), and with
 * reregister, register again under a new id when pruned (bt_liveness_keep), logging as
 * those do (KIND.heartbeat_failed when the database cannot be reached, tried again at the
 * next interval). Returns BATON_ERROR when no thread could be started (then nothing was). */
int bt_keepalive_start(bt_keepalive *k, baton_client *c, const char *kind, const char *metadata, int reregister,
                       int64_t process_id);
/* bt_keepalive_stop stops the beats (no-op when none started) and returns the process's id
 * now: the one it started with, or the one it registered under since. */
int64_t bt_keepalive_stop(bt_keepalive *k);

/* bt_join_queues joins queue names with commas (malloc'ed; NULL when out of memory). */
char *bt_join_queues(char *const *queues, size_t n);

/* bt_split_queues splits "a, b,c*" into a NULL-terminated array (free with bt_strv_free). */
char **bt_split_queues(const char *list, size_t *n_out);
void bt_strv_free(char **v);

#endif
