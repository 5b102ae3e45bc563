/* core.h: the client, its job classes, and the lifecycle transitions shared by the public
 * API, the worker and the dispatcher. Every transition runs inside a transaction the
 * caller opened, so several can be batched into one commit. */
#ifndef BT_CORE_H
#define BT_CORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "baton.h"
#include "config/config.h"
#include "store/store.h"

typedef struct bt_class {
    char *name;
    char *queue;
    int priority;
    int max_attempts;
    int backoff;
    double backoff_base;
    double timeout;
    char *command;
    baton_perform_fn perform;
    void *payload;
    char *concurrency_key;   /* key template, or NULL */
    baton_key_fn concurrency_key_fn;
    int concurrency_limit;
    char *concurrency_group; /* never NULL: defaults to the class name */
    double concurrency_duration;
    int on_conflict;
    int config_line;         /* line in the config file, 0 when registered from C */
} bt_class;

/* bt_class_limited is nonzero when the class's jobs carry a concurrency key. */
static inline int bt_class_limited(const bt_class *k) { return k->concurrency_key || k->concurrency_key_fn; }

struct json_t;
/* bt_key_render fills template_text's {placeholders} from args; *out is malloc'ed. */
int bt_key_render(const char *template_text, struct json_t *args, char **out);
/* bt_key_values maps each placeholder of template_text to its value in args (null when
 * missing): what a key was built from, for reports. Returns a new reference. */
struct json_t *bt_key_values(const char *template_text, struct json_t *args);

/* bt_json_dump turns a report into the caller's text (compact, ASCII) and releases value. */
int bt_json_dump(struct json_t *value, char **json_out);

typedef struct bt_start bt_start;
typedef struct bt_supervisor bt_supervisor;

typedef struct bt_process_hook_slot {
    baton_process_hook fn;
    void *user_data;
} bt_process_hook_slot;

struct baton_client {
    bt_store *store;         /* NULL while a supervisor forks children (see supervisor.c) */
    char *url;
    char *display_url;       /* url with its password hidden, for messages */
    bt_class *classes;
    size_t nclasses, classes_cap;
    size_t max_arguments_bytes;
    bt_config *config;       /* NULL until baton_load_config() */
    baton_log_fn log_fn;
    void *log_payload;
    baton_log_level log_level;
    baton_log_format log_format;
    baton_job_before_fn job_before;
    baton_job_after_fn job_after;
    void *job_hook_data;
    bt_process_hook_slot process_hooks[BATON_PROCESS_SUPERVISOR + 1][BATON_PROCESS_EXIT + 1];
    double heartbeat_interval;   /* seconds between liveness ticks */
    double alive_threshold;      /* heartbeat age after which a process is pruned */
    _Atomic(bt_start *) running; /* set while baton_start() runs, for baton_start_stop() */
    _Atomic(bt_supervisor *) supervisor; /* set while baton_supervise() runs */
    atomic_int stops_under_way;  /* baton_start_stop/baton_supervisor_stop calls reading those */
    atomic_int perform_stopped;  /* set by baton_perform_stop(), until the perform returns */
    _Atomic(struct baton_job *) performing; /* the inline job running, for baton_perform_stop() */
};

/* bt_check_name refuses a class, queue or key name (what says which) that is empty, not
 * valid UTF-8, or holds a control character: names are shown in tables and reports, and
 * must print as themselves. BATON_OK or BATON_EINVALID. */
int bt_check_name(const char *what, const char *name);

/* bt_class_find returns the class named name, or NULL. */
bt_class *bt_class_find(baton_client *c, const char *name);

/* ---- logging (log.c) ---- */

/* bt_log formats a logfmt line and hands it to the client's logger, in the client's
 * format, when level passes. Text values must go through BT_LOG_VALUE (numbers need not):
 *   bt_log(c, BATON_LOG_ERROR, "event=job.failed job_id=%lld error=%s", id, BT_LOG_VALUE(msg)); */
void bt_log(baton_client *c, baton_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A rate limit for a line that repeats while a fault lasts (the database away or locked):
 * bt_log_limited writes at most one line per BT_LOG_REPEAT_S seconds through it, and the
 * next line it writes ends with "repeated=N", the lines held back meanwhile. One limit
 * per thread that logs through it; zero-initialised. */
enum { BT_LOG_REPEAT_S = 10 };
typedef struct bt_log_limit {
    int64_t next_ns;
    long held;
} bt_log_limit;
void bt_log_limited(baton_client *c, bt_log_limit *limit, baton_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* bt_note is bt_log for lifecycle code holding only a store: the line waits for the
 * store's transaction to commit (see bt_notes in store.h). No-op for a store the client
 * did not attach. */
void bt_note(bt_store *s, baton_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* bt_log_value writes value (NULL reads as "") into buf as one logfmt value: bare when it
 * is a plain token, else double-quoted with JSON escapes (invalid UTF-8 becomes \ufffd;
 * text that looks like a number is quoted so it stays text in JSON). A value longer than
 * size allows is cut and ends in "...". Returns buf. */
const char *bt_log_value(char *buf, size_t size, const char *value);

/* BT_LOG_VALUE(s) is bt_log_value in the next of BT_LOG_VALUE_SLOTS thread-local buffers,
 * for use as a printf argument: valid until as many more uses on this thread, so one log
 * call may hold up to that many values. Nothing is cleared, so it costs nothing much on
 * paths whose lines no logger wants. */
enum { BT_LOG_VALUE_MAX = 4096, BT_LOG_VALUE_SLOTS = 8 };
char *bt_log_value_slot(void);
#define BT_LOG_VALUE(s) bt_log_value(bt_log_value_slot(), BT_LOG_VALUE_MAX, (s))

/* bt_log_enabled: the client has a logger that wants lines of level. */
int bt_log_enabled(const baton_client *c, baton_log_level level);

/* bt_log_attach makes the lifecycle notes of store s go to c's logger. */
void bt_log_attach(baton_client *c, bt_store *s);

/* ---- hooks (hooks.c) ---- */

/* bt_process_hook runs the hook registered for (kind, event), if any, on the calling
 * thread. Every process kind calls it: START once registered and before its first unit
 * of work, STOP when it notices a stop request (before draining), EXIT after it
 * deregistered, just before its run function returns; EXIT only follows a START. */
void bt_process_hook(baton_client *c, baton_process_kind kind, baton_process_event event,
                     int64_t process_id);

/* bt_client_wait_stops waits until no stop call can still use a run the caller has just
 * unpublished (set running or supervisor to NULL), so the run can be freed. A stop called
 * from a signal handler on the waiting thread finds NULL and returns at once. */
void bt_client_wait_stops(baton_client *c);

/* bt_client_open_store opens another connection to the client's database (workers and
 * dispatchers each have their own) and checks its schema. */
int bt_client_open_store(baton_client *c, bt_store **out);

/* ---- lifecycle (lifecycle.c); each runs inside the caller's write transaction ---- */

/* A job as a worker claimed it. */
typedef struct bt_claimed_job {
    int64_t id;
    char *class_name;
    char *queue;
    char *arguments;
    char *concurrency_key;
    int64_t fencing_token;
    int priority;
    int attempt;
    int max_attempts;
    int backoff;
    double backoff_base;
    double timeout;
} bt_claimed_job;

void bt_claimed_job_free(bt_claimed_job *job);

/* A job about to be stored. */
typedef struct bt_new_job {
    const char *class_name;
    const char *queue;
    const char *arguments;
    size_t arguments_len;
    int priority;
    int64_t run_at;
    int max_attempts;
    int backoff;
    double backoff_base;
    double timeout;
    char *concurrency_key;   /* "GROUP/KEY" (malloc'ed, owned), or NULL */
    int concurrency_limit;
    double concurrency_duration;
    int on_conflict;
} bt_new_job;

/* Where a job landed after enqueue or admission. */
typedef struct bt_landing {
    baton_job_state state;
    int64_t coalesced_into;
} bt_landing;

/* bt_enqueue_rows stores n jobs, writing their ids and landings to the n-element arrays:
 * each scheduled when its run_at is later than now, else admitted (ready, or
 * blocked/discarded by its concurrency key). claim_for, when nonzero, makes admitted jobs
 * claimed by that process instead of ready (inline performs). */
int bt_enqueue_rows(bt_store *s, const bt_new_job *jobs, size_t n, int64_t now, int64_t claim_for,
                    int64_t *ids, bt_landing *landings);

/* bt_prepare_job validates one spec against c's classes (class known, arguments valid JSON
 * within the size limit, concurrency key computable) and fills *job; strings stay borrowed
 * from spec and the class except the key (free with bt_new_job_clear). */
int bt_prepare_job(baton_client *c, const baton_job_spec *spec, int64_t now, bt_new_job *job);
void bt_new_job_clear(bt_new_job *job);

/* bt_lock_job_key locks the row of job id's concurrency key (nothing for a job without
 * one, or on a driver without row locks). Everything that changes a key's waiting or
 * running jobs takes it first: a key's row is the key's lock. */
int bt_lock_job_key(bt_store *s, int64_t id);

/* bt_read_claim loads the job id claimed by process_id (an inline perform) into *job. */
int bt_read_claim(bt_store *s, int64_t process_id, int64_t id, bt_claimed_job *job, int *found);

/* bt_job_state_of reads a job's status; BATON_ENOTFOUND when there is no such job. */
int bt_job_state_of(bt_store *s, int64_t id, baton_job_state *state);

/* The jobs one bt_claim takes: jobs has room for max; count says how many are filled. */
typedef struct bt_claims {
    bt_claimed_job *jobs;
    int max;
    int after_end;  /* the caller reads the jobs only after bt_end: a server may send them
                     * with the commit (claims must then stay valid until bt_end) */
    int count;
    int batch_from; /* where the jobs of the statement being read begin */
} bt_claims;

/* bt_claim claims up to claims->max ready jobs from the queue list (entries: name,
 * "prefix*", "*"), in list order, then priority, then id, skipping paused queues, into
 * claims (count set to 0 first). After a failure the count jobs filled so far are the
 * caller's to free. */
int bt_claim(bt_store *s, int64_t process_id, char *const *queues, size_t nqueues, int64_t now,
             bt_claims *claims);

/* Outcome of a performed job, as reported by the worker. job_id and attempt name the
 * claim it ran under. */
typedef struct bt_outcome {
    int64_t job_id;
    int succeeded;
    const char *error;       /* when failed */
    int attempt;
    int max_attempts;
    int backoff;
    double backoff_base;
    const char *concurrency_key; /* the job's key as claimed, NULL when it has none */
} bt_outcome;

/* bt_complete records the outcomes of n jobs claimed by process_id: each finished, retried
 * (scheduled at the backoff) or failed. owned[i] says whether outcome i was recorded: when
 * process_id no longer holds its claim, the job's claim of that attempt (handed back at
 * shutdown, pruned), nothing is written for it. retry_at (may be NULL) receives each retry
 * time, else 0. */
int bt_complete(bt_store *s, int64_t process_id, const bt_outcome *outcomes, size_t n, int64_t now,
                int *owned, int64_t *retry_at);

/* A claim, named by its job and the attempt it was made for. */
typedef struct bt_claim_ref {
    int64_t job_id;
    int attempt;
} bt_claim_ref;

/* bt_release_claims hands the jobs of process_id's claims back to ready: all of them when
 * claims is NULL, else those of the n listed that it still holds. */
int bt_release_claims(bt_store *s, int64_t process_id, const bt_claim_ref *claims, size_t n,
                      int64_t now, int64_t *released_out);
/* bt_release_unknown_claims hands back the jobs of process_id's claims that are none of
 * the n known ones: claims its process lost track of (a commit whose answer never came). */
int bt_release_unknown_claims(bt_store *s, int64_t process_id, const bt_claim_ref *known, size_t n, int64_t now,
                              int64_t *released_out);

/* bt_maintain_concurrency is the safety net behind the normal release path: it frees
 * slots whose job is neither ready nor running and promotes blocked jobs waiting longer
 * than their duration into keys with free slots. Each key is a transaction of its own
 * (call it with none open), so a wait for one key's lock holds up no other key.
 * *promoted_out (may be NULL) counts promotions. */
int bt_maintain_concurrency(bt_store *s, int64_t now, int *promoted_out);

/* bt_renew_leases extends the slot leases of the jobs process_id runs. */
int bt_renew_leases(bt_store *s, int64_t process_id, int64_t now);

/* bt_prune_dead fails the claimed jobs of dead processes (BT_SQL_DEAD; threshold_ms for
 * rows without a threshold), and of those of this host whose pid is gone, as "process
 * pruned" (retry policy applies), releasing their slots once, and deregisters them. Never
 * prunes self_id. Each process is a transaction of its own (call it with none open), and
 * one that fails stops the pruning of no other: the first error is returned. *pruned_out
 * counts processes. */
int bt_prune_dead(bt_store *s, int64_t self_id, int64_t threshold_ms, int64_t now, int *pruned_out);
/* bt_prune_if_dead does the same for process id alone, if it is still dead once its keys
 * are locked. *pruned (may be NULL) tells whether it was. */
int bt_prune_if_dead(bt_store *s, int64_t id, int64_t threshold_ms, int64_t now, int *pruned);
/* bt_prune_process does the same for one process known to be dead (a supervisor reaped
 * it), without waiting for its heartbeat to age; *pruned is 0 when its row was gone. */
int bt_prune_process(bt_store *s, int64_t id, int64_t now, int *pruned);
/* bt_lock_process_keys locks the keys process id's claims hold and its inline performs
 * wait for, in the one order every transaction locks keys in, before anything touches the
 * process's rows (a prune, a deregistration). */
int bt_lock_process_keys(bt_store *s, int64_t id);
/* bt_discard_inline_waiters discards the blocked jobs an inline perform of process_id
 * still waits for: the process is gone (pruned, deregistered), an inline job never runs
 * later, and a promotion into the claim of a process that no longer exists would fail the
 * whole transaction that released the slot. */
int bt_discard_inline_waiters(bt_store *s, int64_t process_id, int64_t now);

/* bt_retry_failed puts the n failed jobs ids back through admission, keys locked in a
 * round's order. BATON_ENOTFOUND / BATON_ESTATE when one is missing or not failed. */
int bt_retry_failed(bt_store *s, const int64_t *ids, size_t n, int64_t now);

/* bt_discard discards a job that is not running or over, recording reason as its error. */
int bt_discard(bt_store *s, int64_t id, const char *reason, int64_t now);

/* bt_repair_slots frees slots held by jobs that are neither ready nor running and fills
 * every key's free slots from its blocked jobs, never past a limit: key by key, as
 * bt_maintain_concurrency does. */
int bt_repair_slots(bt_store *s, int64_t now, int *promoted_out);
/* bt_requeue_lost puts a job whose status has no execution row back in a list: failed and
 * scheduled jobs in theirs, the others through admission (giving up any slot first). */
int bt_requeue_lost(bt_store *s, int64_t id, const char *status, int64_t now);

/* bt_unblock admits blocked job id now: into a free slot of its key, or with force past
 * the limit (*over_limit says so). BATON_ESTATE when it is not blocked, or the key is full
 * without force. */
int bt_unblock(bt_store *s, int64_t id, int force, int64_t now, int *over_limit);
/* bt_unblock_key admits as many blocked jobs of key as its free slots allow. */
int bt_unblock_key(bt_store *s, const char *key, int64_t now, int *promoted);
/* bt_semaphore_clear drops every holder of key and admits its blocked jobs into the freed
 * slots. Without force it refuses (BATON_ESTATE, naming the job) while a holder's job is
 * ready, or running in a process that is not stale (BT_SQL_STALE; threshold_ms for rows
 * without a threshold). */
int bt_semaphore_clear(bt_store *s, const char *key, int force, int64_t threshold_ms, int64_t now, int *cleared,
                       int *promoted);

/* bt_dispatch moves up to batch due scheduled jobs to ready. */
int bt_dispatch(bt_store *s, int64_t now, int batch, int *moved_out);

/* bt_next_scheduled_at returns the earliest scheduled time, or 0 when none. */
int bt_next_scheduled_at(bt_store *s, int64_t *at_out);

/* bt_backoff_ms is the delay before attempt + 1 after attempt failed. */
int64_t bt_backoff_ms(int backoff, double base, int attempt);

/* ---- recurring tasks (recurring.c) ---- */

/* A task as stored, with its last recorded run. */
typedef struct bt_task {
    bt_recurring_config def;   /* def.line is unused */
    int is_static;
    int64_t last_run_at;       /* 0 when it never ran */
} bt_task;

typedef struct bt_task_list {
    bt_task *items;
    size_t len, cap;
} bt_task_list;

/* bt_recurring_load reads every task, by key. Free with bt_task_list_free. */
int bt_recurring_load(bt_store *s, bt_task_list *out);
void bt_task_list_free(bt_task_list *l);

/* bt_recurring_next sets *next to the run of schedule c in zone tz still owed after the
 * instant `after` (a task's last run, or when it was first seen): the first run after it,
 * unless that run and the following one are both no later than now, i.e. runs were missed
 * while no scheduler ran; those are not replayed and *next is the first run after now. */
int bt_recurring_next(const bt_cron *c, const bt_tz *tz, int64_t after, int64_t now, int64_t *next);

/* bt_recurring_sync_static makes the static tasks those of cfg: upserts each (a dynamic task
 * of the same name becomes static) and deletes static tasks cfg no longer lists. Dynamic
 * tasks stay. *removed_out (may be NULL) counts deletions. Runs in the caller's transaction. */
int bt_recurring_sync_static(bt_store *s, const bt_config *cfg, int64_t now, size_t *removed_out);

/* bt_recurring_enqueue records the run (key, run_at) and enqueues job for it, in the
 * caller's write transaction. When the run was recorded already (another scheduler enqueued
 * it) nothing is written and *job_id_out is 0. */
int bt_recurring_enqueue(bt_store *s, const char *key, int64_t run_at, const bt_new_job *job,
                         int64_t now, int64_t *job_id_out);

/* ---- liveness, judged in SQL by one clock, baton_clock() (schema.c, migrations 7, 8) ----
 * A process is stale once the clock is further than its own alive threshold from its
 * latest beat, either way (a beat ahead of the clock was written before the clock began
 * again: the host rebooted); a row without a beat is. dflt: the threshold in ms of rows
 * that carry none. */
#define BT_SQL_THRESHOLD(p, dflt) "COALESCE(" p ".alive_threshold, " dflt ")"
#define BT_SQL_STALE(p, dflt) "ABS(baton_clock() - COALESCE(" p ".beat, 0)) > " BT_SQL_THRESHOLD(p, dflt)
/* A stale process is dead only when another process (the witness) beat without a gap
 * over half the stale one's threshold for a whole threshold of its silence: the database
 * was reachable all that time, so the silence is the stale process's own. After an outage
 * nobody could heartbeat through, nobody is dead before one that came back has beaten for
 * a whole threshold, and by then every live process has beaten again. */
#define BT_SQL_DEAD(p, dflt)                                                                                   \
    "(" BT_SQL_STALE(p, dflt) " AND EXISTS (SELECT 1 FROM baton_processes w WHERE w.id <> " p ".id AND NOT "   \
    BT_SQL_STALE("w", dflt) " AND COALESCE(w.beat_gap, 0) <= " BT_SQL_THRESHOLD(p, dflt) " / 2"               \
    " AND w.beat - CASE WHEN w.beats_since > COALESCE(" p ".beat, 0) THEN w.beats_since ELSE COALESCE(" p    \
    ".beat, 0) END >= " BT_SQL_THRESHOLD(p, dflt) "))"

/* ---- processes (process.c) ---- */
/* bt_process_set_supervisor makes every later registration of this process name the
 * supervisor process id as its supervisor_id (called in a supervisor's forked child). */
void bt_process_set_supervisor(int64_t id);
/* bt_host_id names this host's boot and pid namespace (NULL when unknown). */
const char *bt_host_id(void);
/* bt_process_register records a new process whose alive threshold (seconds) is the one
 * every other process judges it by. */
int bt_process_register(bt_store *s, const char *kind, const char *metadata_json, double alive_threshold,
                        int64_t *id_out);
/* bt_process_heartbeat records a heartbeat; *alive is 0 when the row is gone (pruned). */
int bt_process_heartbeat(bt_store *s, int64_t id, double alive_threshold, int *alive);
/* bt_liveness_tick is a process's periodic duty: bt_liveness_beat, then, alive,
 * bt_liveness_prune. Returns the beat's code. */
int bt_liveness_tick(bt_store *s, int64_t process_id, double alive_threshold, int *alive, int *pruned);
/* bt_liveness_beat heartbeats (*alive is 0 when the row is gone: this process was pruned)
 * and renews its jobs' slot leases, in one transaction. */
int bt_liveness_beat(bt_store *s, int64_t process_id, double alive_threshold, int *alive);
/* bt_liveness_prune prunes dead processes (BT_SQL_DEAD; alive_threshold seconds for rows
 * without one), each in a transaction of its own, which may wait on locks: a process that must
 * know it is alive (the worker's fence) learns it from the beat before. *pruned counts
 * them, or is -1 when pruning failed (the error is baton_error_last()). */
void bt_liveness_prune(bt_store *s, int64_t process_id, double alive_threshold, int *pruned);
/* bt_liveness_keep is the whole liveness tick of a process that holds no claims (a
 * dispatcher, a scheduler, a supervisor): bt_liveness_tick, and when the process finds
 * itself pruned, a registration under a new id that replaces *id (kept when it fails: the
 * next tick tries again). Logs KIND.heartbeat_failed and KIND.register_failed through
 * errors, KIND.was_pruned, and what pruning did. */
void bt_liveness_keep(baton_client *c, bt_store *s, const char *kind, const char *metadata_json,
                      double alive_threshold, int64_t *id, bt_log_limit *errors);
/* bt_log_pruned logs what a tick's pruning did (pruned as bt_liveness_tick set it); a
 * failure through errors, so one repeating is not logged at every tick. */
void bt_log_pruned(baton_client *c, bt_log_limit *errors, int pruned);

/* Deregisters and hands the process's claimed jobs back to ready. */
int bt_process_deregister(bt_store *s, int64_t id);

#endif
