/*
 * baton.h: the whole public API of libbaton, a durable, database-backed job queue.
 *
 * Conventions
 * - Every handle is opaque and freed by its own baton_<type>_free/close function; each of
 *   those accepts NULL as a no-op.
 * - Functions that can fail return an int: BATON_OK (0) or a negative baton_error_code.
 *   The message of the last failure on the calling thread is baton_error_last().
 * - Strings passed in are copied; the caller may reuse its buffers after the call returns.
 * - Strings the library allocates for the caller (JSON reports) are released with baton_free().
 * - Threads: a handle is used by one thread at a time unless its documentation says
 *   otherwise. Different handles may be used concurrently from different threads; the
 *   library keeps no global mutable state.
 * - Times are milliseconds since the Unix epoch, UTC.
 */
#ifndef BATON_H
#define BATON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BATON_BUILDING)
#define BATON_API __attribute__((visibility("default")))
#else
#define BATON_API
#endif

/** Result codes. Values never change; new codes are only appended. */
typedef enum baton_error_code {
    BATON_OK = 0,
    BATON_ERROR = -1,     /**< anything not listed below */
    BATON_ENOTFOUND = -2, /**< no such job, class or queue */
    BATON_EINVALID = -3,  /**< bad input: malformed JSON, unknown option, bad time... */
    BATON_EBUSY = -4,     /**< the database stayed locked past the busy timeout */
    BATON_ESTORE = -5,    /**< the database is unreachable, full, read-only or corrupt */
    BATON_ESCHEMA = -6,   /**< the schema is missing or newer than this library */
    BATON_ESTATE = -7,    /**< the job is in a state that does not allow the operation */
} baton_error_code;

/**
 * The longest span of seconds any option, setting or argument accepts (about 31 years).
 * Longer spans, negative ones, NaN and infinities are refused with BATON_EINVALID.
 */
#define BATON_SECONDS_MAX 1e9

/**
 * The message of the last error on the calling thread: one line naming what is wrong.
 * Never NULL (empty when there was none). Valid until the next failing call on this thread.
 */
BATON_API const char *baton_error_last(void);

/** Static text for a result code. Never NULL. */
BATON_API const char *baton_strerror(int code);

/** Releases memory the library allocated for the caller (JSON reports). NULL is a no-op. */
BATON_API void baton_free(void *ptr);

/* ------------------------------------------------------------------------------------------ */
/* Clients                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/** A connection to a queue database plus the job classes registered on it. */
typedef struct baton_client baton_client;

/**
 * Opens the queue database at url ("sqlite:PATH"; NULL means "sqlite:baton.db").
 * SQLite files are opened in WAL mode with a busy timeout and foreign keys on; several
 * processes may share one file. Opening does not create or upgrade the schema: call
 * baton_migrate() for that (or `baton init`).
 *
 * @param out receives the client; the caller owns it and frees it with baton_close().
 * @return BATON_OK; BATON_EINVALID for a malformed URL; BATON_ESTORE when the database
 *         cannot be opened; BATON_ESCHEMA when its schema is newer than this library.
 * Thread-safety: the new client belongs to the calling thread until handed on.
 */
BATON_API int baton_open(baton_client **out, const char *url);

/** Closes the database and frees the client and its classes. NULL is a no-op. */
BATON_API void baton_close(baton_client *client);

/**
 * Creates the schema or upgrades it to this library's version. Idempotent.
 * @return BATON_OK; BATON_ESCHEMA when the database is newer than this library (it is not
 *         modified); BATON_ESTORE or BATON_EBUSY on database failure.
 */
BATON_API int baton_migrate(baton_client *client);

/**
 * Checks that the database holds this library's schema version.
 * @return BATON_OK; BATON_ESCHEMA with "run 'baton init'" when it is missing or older, or a
 *         refusal when it is newer.
 */
BATON_API int baton_check_schema(baton_client *client);

/** The schema version this library writes and understands. */
BATON_API int baton_schema_version(void);

/** The URL the client was opened with. Borrowed; valid until baton_close(). */
BATON_API const char *baton_client_url(const baton_client *client);

/** The same URL with any password replaced by "***" (user:PASSWORD@host, or a password=
 *  parameter): what to show in messages and reports. Borrowed; valid until baton_close(). */
BATON_API const char *baton_client_display_url(const baton_client *client);

/**
 * Sets the largest accepted arguments document in bytes (default 8 MiB).
 * @return BATON_OK, or BATON_EINVALID for 0.
 */
BATON_API int baton_set_max_arguments_bytes(baton_client *client, size_t max_bytes);

/**
 * Sets how often workers and dispatchers of this client heartbeat (default 5 s) and the
 * heartbeat age after which any live process declares another dead (default 30 s),
 * failing its running jobs with "process pruned" and releasing their slots. baton.yml's
 * process_heartbeat_interval and process_alive_threshold set the same.
 * @return BATON_OK, or BATON_EINVALID unless 0 < heartbeat_interval, both are at most 1e9 s,
 *         and alive_threshold >= 4 * heartbeat_interval (a worker stops its jobs once half
 *         the threshold passed without a heartbeat, so that half must outlast a late one).
 */
BATON_API int baton_set_liveness(baton_client *client, double heartbeat_interval,
                                 double alive_threshold);

/** Severity of a log line. */
typedef enum baton_log_level {
    BATON_LOG_DEBUG = 0,
    BATON_LOG_INFO = 1,
    BATON_LOG_WARN = 2,
    BATON_LOG_ERROR = 3,
} baton_log_level;

/**
 * Receives one log line, without a trailing newline, in the client's format (see
 * baton_set_log_format). Called from worker, dispatcher and executor threads, possibly
 * several at once: it must be thread-safe. The line is borrowed for the call.
 */
typedef void (*baton_log_fn)(baton_log_level level, const char *line, void *payload);

/**
 * Sends the client's log lines at or above min_level to fn (NULL: no logging, the
 * default). The library itself never writes to stdout or stderr.
 * Thread-safety: call before starting workers or dispatchers on the client.
 */
BATON_API void baton_set_logger(baton_client *client, baton_log_level min_level, baton_log_fn fn,
                                void *payload);

/**
 * How log lines are written. Both carry the same keys, led by "event"; a text value
 * (error messages included) can hold anything and is escaped the same way in both: "\"",
 * "\\", "\n", "\r", "\t", "\u00XX" for other control characters, and "\ufffd" for
 * bytes that are not UTF-8, so every line is one line of valid UTF-8. A value past 4 KiB
 * is cut and ends in "...".
 */
typedef enum baton_log_format {
    /** The default: key=value pairs, e.g.
     *  event=job.failed job_id=7 class=Mail attempt=1 error="smtp said \"no\""
     *  A value is double-quoted when it is empty, holds a space, '=', '"', '\\', a control
     *  or non-ASCII character, or is text that reads as a number. Lines carry no time or
     *  level: the callback receives the level, and adds the time if it wants one. */
    BATON_LOG_LOGFMT = 0,
    /** One JSON object per line, led by "time" (ISO 8601 UTC with milliseconds) and
     *  "level" ("debug", "info", "warn", "error"), then the logfmt keys in order:
     *  {"time":"2026-11-24T09:02:41.123Z","level":"error","event":"job.failed","job_id":7,...}
     *  Numbers are JSON numbers; everything else is a string. */
    BATON_LOG_JSON = 1,
} baton_log_format;

/**
 * Sets the format of the lines the client's logger receives (default BATON_LOG_LOGFMT).
 * @return BATON_OK, or BATON_EINVALID for an unknown format.
 * Thread-safety: call before starting workers or dispatchers on the client.
 */
BATON_API int baton_set_log_format(baton_client *client, baton_log_format format);

/* ------------------------------------------------------------------------------------------ */
/* Job classes                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/** A job being performed, as seen by a perform callback. Borrowed for the callback's length. */
typedef struct baton_job baton_job;

/**
 * Performs one job. Return 0 when it succeeded; any other value fails it (call
 * baton_job_set_error() first to store a message). Runs on a worker thread; the payload
 * given at registration is passed back unchanged.
 */
typedef int (*baton_perform_fn)(baton_job *job, void *payload);

typedef enum baton_backoff {
    BATON_BACKOFF_EXPONENTIAL = 0, /**< base * 2^(attempt-1) seconds, with up to 15% jitter */
    BATON_BACKOFF_LINEAR = 1,      /**< base * attempt seconds */
    BATON_BACKOFF_FIXED = 2,       /**< base seconds */
} baton_backoff;

/** What a job does when its concurrency key has no free slot. */
typedef enum baton_on_conflict {
    BATON_ON_CONFLICT_BLOCK = 0,    /**< wait as a blocked job; promoted when a slot frees */
    BATON_ON_CONFLICT_DISCARD = 1,  /**< recorded as discarded, reason "concurrency limit" */
    BATON_ON_CONFLICT_COALESCE = 2, /**< block, unless a job of the key already waits: then
                                         discarded as "coalesced into job N" */
} baton_on_conflict;

/**
 * Computes a job's concurrency key (without the group prefix) from its arguments JSON.
 * Writes a NUL-terminated key of at most key_size bytes into key_out and returns 0, or
 * returns nonzero to refuse the enqueue (with baton_enqueue returning BATON_EINVALID).
 */
typedef int (*baton_key_fn)(const char *arguments_json, char *key_out, size_t key_size,
                            void *payload);

/** How a class's jobs are enqueued and performed. Initialise with BATON_CLASS_OPTIONS_INIT. */
typedef struct baton_class_options {
    unsigned version;         /**< BATON_CLASS_OPTIONS_VERSION */
    const char *queue;        /**< default queue of the class's jobs; NULL means "default" */
    int priority;             /**< smaller runs first; default 0 */
    int max_attempts;         /**< attempts before a job stays failed; 1 (default) = no retry */
    baton_backoff backoff;    /**< delay between attempts */
    double backoff_base;      /**< seconds; default 1 */
    double timeout;           /**< seconds a command job may run; 0 (default) = no limit */
    const char *command;      /**< shell command performing the job, or NULL */
    baton_perform_fn perform; /**< C callback performing the job, or NULL */
    void *payload;            /**< handed to perform and concurrency_key_fn unchanged */
    /* Concurrency control: at most concurrency_limit jobs with the same key run at once.
     * A class is limited when it has a key template or a key function. */
    const char *concurrency_key;      /**< template over the arguments: "user_{user_id}",
                                           "{user.id}", "{0}" (first array element) */
    baton_key_fn concurrency_key_fn;  /**< or: computes the key from the arguments */
    int concurrency_limit;            /**< slots per key; default 1 */
    const char *concurrency_group;    /**< key prefix; NULL means the class name. Classes
                                           with the same group share their keys' slots. */
    double concurrency_duration;      /**< seconds; default 180: a slot's lease, renewed
                                           while its job runs, and the wait after which
                                           maintenance re-checks a blocked job */
    baton_on_conflict on_conflict;    /**< default BATON_ON_CONFLICT_BLOCK */
} baton_class_options;

#define BATON_CLASS_OPTIONS_VERSION 1
#define BATON_CLASS_OPTIONS_INIT                                                                \
    { BATON_CLASS_OPTIONS_VERSION, NULL, 0, 1, BATON_BACKOFF_EXPONENTIAL, 1.0, 0.0, NULL, NULL, \
      NULL, NULL, NULL, 1, NULL, 180.0, BATON_ON_CONFLICT_BLOCK }

/**
 * Registers (or replaces) the job class name on client. A class with neither command nor
 * perform may still be enqueued; a worker of this client fails its jobs as unperformable.
 * @return BATON_OK; BATON_EINVALID for an empty name, both command and perform set,
 *         max_attempts < 1, a negative timeout or an unknown options version.
 */
BATON_API int baton_class_register(baton_client *client, const char *name,
                                   const baton_class_options *opts);

/**
 * Reads a baton.yml file: registers its job classes and keeps its worker and dispatcher
 * sections for baton_start() and its scheduler and recurring sections for schedulers.
 * NULL path reads nothing and succeeds. The class of a recurring task must be declared in
 * the file or registered on client before.
 * @return BATON_OK; BATON_EINVALID with a message "FILE:LINE: ..." naming the bad key;
 *         BATON_ERROR when the file cannot be read.
 */
BATON_API int baton_load_config(baton_client *client, const char *path);

/* ------------------------------------------------------------------------------------------ */
/* Enqueueing                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/** Per-job overrides. Initialise with BATON_ENQUEUE_OPTIONS_INIT; zero fields mean "class default". */
typedef struct baton_enqueue_options {
    unsigned version;    /**< BATON_ENQUEUE_OPTIONS_VERSION */
    const char *queue;   /**< NULL: the class's queue */
    int has_priority;    /**< nonzero: use priority below instead of the class's */
    int priority;
    int64_t run_at_ms;   /**< > 0: run at this time (ms since epoch); a future time schedules */
    double delay;        /**< > 0: run this many seconds from now (ignored when run_at_ms > 0) */
    const char *concurrency_key; /**< the key (without group prefix) instead of the class's */
    int concurrency_limit;       /**< > 0: instead of the class's limit */
    double concurrency_duration; /**< > 0: instead of the class's duration */
    int on_conflict;             /**< a baton_on_conflict, or -1 for the class's */
} baton_enqueue_options;

#define BATON_ENQUEUE_OPTIONS_VERSION 1
#define BATON_ENQUEUE_OPTIONS_INIT \
    { BATON_ENQUEUE_OPTIONS_VERSION, NULL, 0, 0, 0, 0.0, NULL, 0, 0.0, -1 }

/**
 * Stores one job of class class_name with JSON arguments (NULL means "[]"). A job due now
 * is ready at once; a job due later is scheduled.
 * @param id_out receives the new job's id (may be NULL).
 * @param opts may be NULL for the class defaults.
 * @return BATON_OK; BATON_EINVALID for an unregistered class or malformed or oversized
 *         arguments; BATON_EBUSY/BATON_ESTORE on database failure (nothing stored).
 */
BATON_API int baton_enqueue(baton_client *client, int64_t *id_out, const char *class_name,
                            const char *args_json, const baton_enqueue_options *opts);

/**
 * Parses an ISO 8601 time ("2026-11-24T09:30:00Z", "2026-11-24 10:30:00+01:00",
 * "2026-11-24") into milliseconds since the epoch, for baton_enqueue_options.run_at_ms.
 * @return BATON_OK, or BATON_EINVALID naming the text.
 */
BATON_API int baton_parse_time(const char *text, int64_t *ms_out);

/** The state of a job. */
typedef enum baton_job_state {
    BATON_JOB_SCHEDULED = 1,
    BATON_JOB_READY = 2,
    BATON_JOB_BLOCKED = 3,
    BATON_JOB_CLAIMED = 4,
    BATON_JOB_FINISHED = 5,
    BATON_JOB_FAILED = 6,
    BATON_JOB_DISCARDED = 7,
} baton_job_state;

/** What became of one enqueued job. */
typedef struct baton_enqueued {
    int64_t id;
    baton_job_state state;   /**< scheduled, ready, blocked or discarded */
    int64_t coalesced_into;  /**< for a job discarded by coalescing: the waiting job, else 0 */
} baton_enqueued;

/** One job of a bulk enqueue. */
typedef struct baton_job_spec {
    const char *class_name;
    const char *args_json;               /**< NULL means "[]" */
    const baton_enqueue_options *opts;   /**< NULL for class defaults */
} baton_job_spec;

/**
 * Stores n jobs in one transaction: all of them or, on any error, none.
 * @param ids_out receives n ids in order (may be NULL).
 * @return as baton_enqueue(); the error message names the index of the bad spec.
 */
BATON_API int baton_enqueue_many(baton_client *client, int64_t *ids_out,
                                 const baton_job_spec *specs, size_t n);

/**
 * As baton_enqueue_many(), reporting for each job its id and the state it landed in: a
 * concurrency-limited job may be blocked, or discarded by its on_conflict mode.
 * @param out receives n entries (may be NULL).
 */
BATON_API int baton_enqueue_detailed(baton_client *client, baton_enqueued *out,
                                     const baton_job_spec *specs, size_t n);

/* libsqlite3's and libpq's handle types, declared so this header needs neither library. */
struct sqlite3;
struct pg_conn;

/**
 * Transactional enqueue: as baton_enqueue_detailed(), but the jobs are written through a
 * connection the application already holds (to the client's own database), so they exist
 * if and only if the application's transaction commits.
 *
 * When the connection has a transaction open, the jobs join it inside a savepoint: on an
 * error the savepoint is rolled back and the application's transaction stays usable (the
 * jobs of this call are then absent). When it has none, the call runs in a transaction of
 * its own. Idle workers on PostgreSQL are woken when the application's transaction commits.
 * The connection stays the application's: it is neither closed nor reconfigured, and no
 * prepared statements are left on it.
 *
 * @param db / conn an open `sqlite3 *` or `PGconn *`; it must match the client's driver.
 * @return as baton_enqueue(); BATON_EINVALID when the connection is NULL or of the other
 *         driver; BATON_ESTATE when the application's PostgreSQL transaction has already
 *         failed. Thread-safety: as the client; the connection must not be used by another
 *         thread during the call.
 */
BATON_API int baton_enqueue_on_sqlite(baton_client *client, struct sqlite3 *db, baton_enqueued *out,
                                      const baton_job_spec *specs, size_t n);
BATON_API int baton_enqueue_on_postgres(baton_client *client, struct pg_conn *conn, baton_enqueued *out,
                                        const baton_job_spec *specs, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Inside a perform callback                                                                   */
/* ------------------------------------------------------------------------------------------ */

BATON_API int64_t baton_job_id(const baton_job *job);
/** Borrowed strings, valid while the callback runs. */
BATON_API const char *baton_job_class(const baton_job *job);
BATON_API const char *baton_job_queue(const baton_job *job);
BATON_API const char *baton_job_arguments(const baton_job *job);
/** The job's concurrency key, or NULL when it has none. */
BATON_API const char *baton_job_concurrency_key(const baton_job *job);
/**
 * The job's fencing token: a number that only grows for each admission to a key's slot,
 * or 0 for a job without a concurrency key. Send it with writes to an outside system that
 * remembers the highest token per key and rejects lower ones.
 */
BATON_API int64_t baton_job_fencing_token(const baton_job *job);
/**
 * Asks the database whether this run still owns the job: 1 when it is still claimed by
 * this worker and, for a limited job, still holds its slot with its fencing token; 0 when
 * the claim was taken away (the worker was declared dead, or shut down past its timeout);
 * a negative baton_error_code when the database cannot be asked.
 * Thread-safety: may be called from the callback's thread; it takes a lock shared with the
 * worker's other executor threads.
 */
BATON_API int baton_job_holds_slot(const baton_job *job);
/** 1 on the first attempt, 2 on the first retry, ... */
BATON_API int baton_job_attempt(const baton_job *job);
/** Stores a message for the failure the callback is about to return. */
BATON_API void baton_job_set_error(baton_job *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/**
 * Nonzero once the worker is shutting down past its shutdown timeout: the job has been
 * handed back to the queue and will run again, so a long callback should return soon.
 * Thread-safety: may be called from any thread.
 */
BATON_API int baton_job_cancelled(const baton_job *job);

/* ------------------------------------------------------------------------------------------ */
/* Workers and dispatchers                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct baton_worker baton_worker;

/** Initialise with BATON_WORKER_OPTIONS_INIT. */
typedef struct baton_worker_options {
    unsigned version;        /**< BATON_WORKER_OPTIONS_VERSION */
    const char *queues;      /**< comma-separated, in polling order: names, "prefix*", "*" */
    int threads;             /**< jobs performed at once; default 3 */
    double polling_interval; /**< seconds between polls when idle; default 0.1 */
    double shutdown_timeout; /**< seconds in-flight jobs get after a graceful stop; default 5 */
} baton_worker_options;

#define BATON_WORKER_OPTIONS_VERSION 1
#define BATON_WORKER_OPTIONS_INIT { BATON_WORKER_OPTIONS_VERSION, "*", 3, 0.1, 5.0 }

/**
 * Creates a worker that performs jobs with client's classes. It opens its own database
 * connection; client must outlive it.
 * @return BATON_OK; BATON_EINVALID for bad options (threads < 1, empty queue list);
 *         BATON_ERROR when out of memory or file descriptors.
 */
BATON_API int baton_worker_new(baton_worker **out, baton_client *client,
                               const baton_worker_options *opts);

/**
 * Registers the worker as a process and claims and performs jobs until stopped.
 * Blocks the calling thread. After a graceful stop, jobs still running when the
 * shutdown timeout ends are handed back to the queue (ready) and will run again.
 * @return BATON_OK after a stop; BATON_ESTORE/BATON_ESCHEMA when the database fails for
 *         good.
 */
BATON_API int baton_worker_run(baton_worker *worker);

/**
 * Asks a running worker to stop: gracefully (immediate = 0: no new claims, in-flight jobs
 * get the shutdown timeout) or at once (immediate != 0: command jobs are killed and every
 * claimed job is handed back to the queue).
 * Thread-safety: async-signal-safe; may be called from any thread or a signal handler.
 */
BATON_API void baton_worker_stop(baton_worker *worker, int immediate);

/** Frees a worker that is not running. NULL is a no-op. */
BATON_API void baton_worker_free(baton_worker *worker);

typedef struct baton_dispatcher baton_dispatcher;

typedef struct baton_dispatcher_options {
    unsigned version;        /**< BATON_DISPATCHER_OPTIONS_VERSION */
    double polling_interval; /**< seconds; default 1 */
    int batch_size;          /**< scheduled jobs moved per transaction; default 500 */
    double concurrency_maintenance_interval; /**< seconds between concurrency maintenance
                                                  runs (baton_maintain()); default 30 */
} baton_dispatcher_options;

#define BATON_DISPATCHER_OPTIONS_VERSION 1
#define BATON_DISPATCHER_OPTIONS_INIT { BATON_DISPATCHER_OPTIONS_VERSION, 1.0, 500, 30.0 }

/** Creates a dispatcher with its own connection; client must outlive it.
 *  @return BATON_OK; BATON_EINVALID for bad options; BATON_ERROR when out of memory or
 *          file descriptors. */
BATON_API int baton_dispatcher_new(baton_dispatcher **out, baton_client *client,
                                   const baton_dispatcher_options *opts);
/** Moves due scheduled jobs to ready until stopped. Blocks the calling thread. */
BATON_API int baton_dispatcher_run(baton_dispatcher *dispatcher);
/** Async-signal-safe, like baton_worker_stop(). */
BATON_API void baton_dispatcher_stop(baton_dispatcher *dispatcher);
BATON_API void baton_dispatcher_free(baton_dispatcher *dispatcher);

/**
 * A scheduler enqueues the jobs of recurring tasks (see baton_recurring_add()) when their
 * cron schedules fall due. Several schedulers may share a database: each run of a task is
 * enqueued exactly once between them.
 */
typedef struct baton_scheduler baton_scheduler;

/** Initialise with BATON_SCHEDULER_OPTIONS_INIT. */
typedef struct baton_scheduler_options {
    unsigned version;        /**< BATON_SCHEDULER_OPTIONS_VERSION */
    double polling_interval; /**< seconds between looks at the tasks when no run falls due
                                  sooner; 0 (default) means the loaded configuration's
                                  scheduler.polling_interval, else 5 */
} baton_scheduler_options;

#define BATON_SCHEDULER_OPTIONS_VERSION 1
#define BATON_SCHEDULER_OPTIONS_INIT { BATON_SCHEDULER_OPTIONS_VERSION, 0.0 }

/**
 * Creates a scheduler with its own connection; client must outlive it. opts may be NULL
 * for the defaults.
 * @return BATON_OK; BATON_EINVALID for a negative polling interval or an unknown options
 *         version; BATON_ERROR when out of memory or file descriptors.
 */
BATON_API int baton_scheduler_new(baton_scheduler **out, baton_client *client,
                                  const baton_scheduler_options *opts);

/**
 * Registers the scheduler as a process (kind "scheduler") and enqueues due runs until
 * stopped. Blocks the calling thread. When client has a configuration loaded, its recurring
 * tasks are first written as the static tasks (replacing static tasks it no longer lists;
 * tasks added with baton_recurring_add() are left alone).
 * Each run is recorded with its task and time in the same transaction that enqueues its
 * job, so a run is enqueued once even with several schedulers. A task's next run is the
 * first after its last recorded run; when the run after that one is past too (no scheduler
 * ran for longer than a period), the missed runs are not replayed and the next run is the
 * first in the future. Task changes made while it runs are seen at the next look.
 * @return BATON_OK after a stop; BATON_ESTORE/BATON_ESCHEMA when the database fails at
 *         start.
 */
BATON_API int baton_scheduler_run(baton_scheduler *scheduler);

/** Asks a running scheduler to stop; it returns at once. Async-signal-safe. */
BATON_API void baton_scheduler_stop(baton_scheduler *scheduler);

/** Frees a scheduler that is not running. NULL is a no-op. */
BATON_API void baton_scheduler_free(baton_scheduler *scheduler);

/**
 * Moves due scheduled jobs to ready once, at most batch_size of them.
 * @param moved_out receives how many were moved (may be NULL).
 */
BATON_API int baton_dispatch_due(baton_client *client, int batch_size, int *moved_out);

/**
 * Concurrency maintenance, once: frees slots held by jobs that are neither ready nor
 * running and promotes blocked jobs that waited longer than their duration into keys
 * with free slots, never beyond a key's limit. The normal path (a finishing job promotes
 * the next of its key in the same transaction) makes this a safety net.
 * @param promoted_out receives how many blocked jobs were promoted (may be NULL).
 */
BATON_API int baton_maintain(baton_client *client, int *promoted_out);

/**
 * Runs the workers, dispatchers and scheduler of the loaded configuration (one worker on
 * "*" and one dispatcher when it has none) on threads of the calling process until stopped with
 * baton_start_stop(). Blocks the calling thread.
 */
BATON_API int baton_start(baton_client *client, double shutdown_timeout);
/** Stops a running baton_start(). Async-signal-safe. */
BATON_API void baton_start_stop(baton_client *client, int immediate);

/** Options of baton_supervise(). */
typedef struct baton_supervisor_options {
    unsigned version;        /**< BATON_SUPERVISOR_OPTIONS_VERSION */
    double shutdown_timeout; /**< seconds children get to finish in-flight jobs on a graceful
                                  stop; negative: the config's shutdown_timeout (default 5) */
    const char *only;        /**< NULL: every process; else a comma-separated subset of
                                  "workers", "dispatchers", "scheduler" */
    const char *pidfile;     /**< NULL: none; else a file locked for the supervisor's life */
    int set_titles;          /**< nonzero: show role and state in the process titles (rewrites
                                  the argv area; for programs that own their main()) */
} baton_supervisor_options;

#define BATON_SUPERVISOR_OPTIONS_VERSION 1
#define BATON_SUPERVISOR_OPTIONS_INIT { BATON_SUPERVISOR_OPTIONS_VERSION, -1.0, NULL, NULL, 0 }

/**
 * Runs the configured workers (each config entry times its `processes`), dispatchers
 * (one worker on "*" with 3 threads and one dispatcher without a config) and the scheduler
 * of recurring tasks as forked child processes, and keeps them running until baton_supervisor_stop(). Blocks the calling
 * thread, which must be the process's only thread (it forks).
 *
 * The supervisor registers in baton_processes as kind "supervisor"; its children name it
 * as their supervisor_id. A child that dies is replaced, and its claimed jobs fail at once
 * as "process pruned" (their retry policy applies) with their slots released. A child whose
 * heartbeat is late by half the alive threshold is killed with its jobs and replaced. The
 * supervisor becomes the subreaper of its children's jobs, so orphaned jobs are killed.
 * While it runs, the client's own connection is closed (no connection may cross fork);
 * it is opened again before returning. Logs go to the client's logger, from each process.
 *
 * On a graceful stop children stop claiming and finish in-flight jobs up to the shutdown
 * timeout, then hand the rest back to the queue; children still running past it are
 * killed and their claims handed back by the supervisor. An immediate stop does the same
 * without waiting.
 * @return BATON_OK after a stop; BATON_EINVALID for bad options; BATON_ESTATE when the
 *         pidfile is held by another running supervisor (the message names its pid) or a
 *         supervisor already runs on this client; BATON_ESTORE/BATON_ERROR when the
 *         database or the system refused.
 */
BATON_API int baton_supervise(baton_client *client, const baton_supervisor_options *opts);
/** Stops a running baton_supervise(): gracefully, or at once when immediate (a graceful
 *  stop in progress becomes immediate). Async-signal-safe. */
BATON_API void baton_supervisor_stop(baton_client *client, int immediate);

/**
 * Performs one job of class_name now, in the calling thread, and records it as a job
 * (claimed by this process, then finished or failed). A concurrency-limited job takes a
 * slot of its key like any other and, when the key is full, waits up to 60 seconds for
 * one (see baton_perform_wait()).
 * @param id_out receives the job's id (may be NULL).
 * @return BATON_OK when the job succeeded; BATON_ERROR when it failed (the message is the
 *         job's error) or found no slot in time; BATON_ESTATE when the calling process was
 *         declared dead during the run (it could not heartbeat for the alive threshold):
 *         the run's outcome was not recorded and the job was settled as a pruned process's
 *         job; other codes as baton_enqueue().
 */
BATON_API int baton_perform_now(baton_client *client, int64_t *id_out, const char *class_name,
                                const char *args_json);

/**
 * As baton_perform_now(), waiting at most wait_timeout seconds for a slot. A job that got
 * none in time is discarded (it never runs later) and BATON_ERROR is returned.
 */
BATON_API int baton_perform_wait(baton_client *client, int64_t *id_out, const char *class_name,
                                 const char *args_json, double wait_timeout);

/**
 * Stops the baton_perform_now()/baton_perform_wait() in progress on this client, or the
 * next one when none is (e.g. TERM arrived just before it began): a job still waiting for
 * its slot is discarded (it never runs later) and the call returns BATON_ERROR saying it
 * was stopped; a job already running is cancelled (a command's process group gets TERM,
 * then KILL after 5 s; a callback sees baton_job_cancelled()) and its outcome recorded,
 * failed for good unless it succeeded (no retry runs it later). Async-signal-safe;
 * callable from any thread.
 */
BATON_API void baton_perform_stop(baton_client *client);

/* ------------------------------------------------------------------------------------------ */
/* Recurring tasks                                                                             */
/* ------------------------------------------------------------------------------------------ */

/*
 * A recurring task enqueues a job of its class on a cron schedule ("0 3 * * *"; five fields
 * minute hour day-of-month month day-of-week, or six with a leading second field, or a
 * macro such as "@daily"), evaluated in its time zone. Static tasks come from baton.yml's
 * recurring section (written by a starting scheduler); dynamic ones are added here.
 */

/** Optional parts of a task. Initialise with BATON_RECURRING_OPTIONS_INIT. */
typedef struct baton_recurring_options {
    unsigned version;        /**< BATON_RECURRING_OPTIONS_VERSION */
    const char *queue;       /**< NULL: the class's queue */
    int has_priority;        /**< nonzero: use priority below instead of the class's */
    int priority;
    const char *timezone;    /**< IANA name ("Europe/Berlin"); NULL means UTC */
    const char *description; /**< free text, may be NULL */
} baton_recurring_options;

#define BATON_RECURRING_OPTIONS_VERSION 1
#define BATON_RECURRING_OPTIONS_INIT { BATON_RECURRING_OPTIONS_VERSION, NULL, 0, 0, NULL, NULL }

/**
 * Adds the dynamic task key, or replaces the dynamic task of that name. Its jobs are
 * enqueued like baton_enqueue(class_name, args_json) with the task's queue and priority.
 * @param args_json NULL means "[]".
 * @param opts may be NULL for the defaults.
 * @return BATON_OK; BATON_EINVALID for an empty key, an unregistered class, arguments that
 *         baton_enqueue() would refuse, an invalid schedule (the message names the field:
 *         'invalid schedule "61 * * * *": minute: 61 is out of range 0-59') or one that
 *         never runs, or an unknown time zone; BATON_ESTATE when key is a static task (it
 *         comes from the configuration).
 */
BATON_API int baton_recurring_add(baton_client *client, const char *key, const char *class_name,
                                  const char *schedule, const char *args_json,
                                  const baton_recurring_options *opts);

/**
 * Removes the dynamic task key. Runs already enqueued stay.
 * @return BATON_OK; BATON_ENOTFOUND when there is no such task; BATON_ESTATE for a static
 *         task (remove it from the configuration instead).
 */
BATON_API int baton_recurring_remove(baton_client *client, const char *key);

/**
 * Lists the tasks, by key, as a JSON array of {key, class, schedule, timezone ("UTC" when
 * none was given), args (the JSON value), queue and priority (null: the class's), static
 * (true for tasks of the configuration), description, last_run_at (the last run enqueued,
 * or null), next_run_at (when a scheduler will enqueue the next run)}, times in ISO 8601
 * UTC with milliseconds. The caller frees *json_out with baton_free().
 */
BATON_API int baton_recurring_json(baton_client *client, char **json_out);

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle hooks                                                                             */
/* ------------------------------------------------------------------------------------------ */

/**
 * Runs just before a job is performed, after it was claimed (its status is "claimed").
 * The job handle may be read with the baton_job_* accessors; the hook cannot change or
 * veto the run. Typical uses: tracing spans, metrics, per-job context.
 */
typedef void (*baton_job_before_fn)(const baton_job *job, void *user_data);

/**
 * Runs just after a job was performed, before its outcome is recorded (the job still
 * shows as "claimed"). succeeded is 1 when the callback returned 0 or the command exited
 * with status 0; otherwise error is the job's error message (NULL when it succeeded). The
 * outcome is final: the hook cannot change it.
 */
typedef void (*baton_job_after_fn)(const baton_job *job, int succeeded, const char *error,
                                   void *user_data);

/**
 * Sets hooks run around every job performed with client's classes: by its workers (C
 * callback and command jobs alike, including jobs of a class the worker does not know,
 * which fail at once) and by baton_perform_now()/baton_perform_wait(). Each job run gets
 * exactly one before and one after call, on the thread that performs it: a worker's
 * executor threads, several at once, or the caller's thread for inline performs. Either
 * hook may be NULL; calling again replaces both; NULL, NULL removes them.
 * The hooks must be thread-safe, should be quick (the job's thread waits for them), and
 * must not use client or a worker or dispatcher handle, which belong to other threads;
 * open a client of their own for database work.
 * Thread-safety: call before starting workers or dispatchers on the client.
 */
BATON_API void baton_on_job(baton_client *client, baton_job_before_fn before,
                            baton_job_after_fn after, void *user_data);

/** The kinds of long-running processes. */
typedef enum baton_process_kind {
    BATON_PROCESS_WORKER = 0,
    BATON_PROCESS_DISPATCHER = 1,
    BATON_PROCESS_SCHEDULER = 2,   /**< enqueues recurring tasks */
    BATON_PROCESS_SUPERVISOR = 3,  /**< runs and watches the others (baton start) */
} baton_process_kind;

/** The moments of a process's life a hook can run at. */
typedef enum baton_process_event {
    BATON_PROCESS_START = 0, /**< registered (it has its process id), before its first claim,
                                  dispatch or enqueue */
    BATON_PROCESS_STOP = 1,  /**< a stop was requested (graceful or immediate) and the run
                                  thread noticed it; before draining running jobs. Runs once,
                                  and not at all when the run ends on an error */
    BATON_PROCESS_EXIT = 2,  /**< deregistered, just before its run function returns; runs
                                  after every START, whatever ended the run */
} baton_process_event;

/**
 * A process hook. process_id is the process's row in baton_processes (it changes when a
 * process that was declared dead registers again; EXIT gets the last one).
 */
typedef void (*baton_process_hook)(baton_process_kind kind, baton_process_event event,
                                   int64_t process_id, void *user_data);

/**
 * Sets the hook run at event for every process of kind run on client (one hook per kind
 * and event; calling again replaces it, NULL removes it). It runs on the process's run
 * thread (the one in baton_worker_run(), baton_dispatcher_run(), ...): never in a signal
 * handler, so it may log, allocate and take locks. It should be quick, since the process
 * waits for it (a slow START delays the first claim, a slow STOP the shutdown), and must
 * not use client or stop or free the process; several processes of one client (as in
 * baton_start()) may run hooks at once, so a hook shared between them must be
 * thread-safe.
 * @return BATON_OK, or BATON_EINVALID for an unknown kind or event.
 * Thread-safety: call before starting workers or dispatchers on the client.
 */
BATON_API int baton_on_process(baton_client *client, baton_process_kind kind,
                               baton_process_event event, baton_process_hook fn, void *user_data);

/* ------------------------------------------------------------------------------------------ */
/* Administration: reports are JSON text owned by the caller (release with baton_free)        */
/* ------------------------------------------------------------------------------------------ */

/** Filter for baton_jobs_json(). Zero/NULL fields do not filter. */
typedef struct baton_job_filter {
    const char *status;     /**< scheduled ready blocked claimed finished failed discarded */
    const char *class_name;
    const char *queue;
    int limit;              /**< at most this many, newest first; 0 means 100 */
    const char *concurrency_key; /**< the stored key, "GROUP/KEY" */
} baton_job_filter;

/**
 * Lists jobs as a JSON array of objects with id, class, queue, priority, status, arguments,
 * concurrency_key, attempts, max_attempts, error, fencing_token (null unless admitted to a
 * slot), blocked_since (null unless blocked), admitted_by (how a limited job got its slot:
 * "enqueue", "retry", "release of job N", "expiry", "repair" or "operator"; null otherwise), scheduled_at, created_at, started_at,
 * finished_at (times in ISO 8601 UTC with milliseconds).
 * @return BATON_OK; BATON_EINVALID for an unknown status.
 */
BATON_API int baton_jobs_json(baton_client *client, const baton_job_filter *filter, char **json_out);

/** One job as a JSON object (the fields of baton_jobs_json). BATON_ENOTFOUND if none. */
BATON_API int baton_job_json(baton_client *client, int64_t id, char **json_out);

/**
 * Puts a failed job back to ready. BATON_ENOTFOUND for no such job; BATON_ESTATE when the
 * job is not failed.
 */
BATON_API int baton_job_retry(baton_client *client, int64_t id);

/**
 * Puts every failed job (of class_name, when not NULL) back to ready.
 * @param count_out receives how many (may be NULL).
 */
BATON_API int baton_retry_all_failed(baton_client *client, const char *class_name, int64_t *count_out);

/**
 * Discards a failed, ready, blocked or scheduled job. BATON_ESTATE for a running (claimed),
 * finished or already discarded job; BATON_ENOTFOUND for no such job.
 */
BATON_API int baton_job_discard(baton_client *client, int64_t id);

/**
 * Deletes finished jobs whose finished_at is older than older_than_seconds, then the
 * identities of processes that are gone and that no remaining job names.
 * @param count_out receives how many were deleted (may be NULL).
 */
BATON_API int baton_clear_finished(baton_client *client, double older_than_seconds,
                                   int64_t *count_out);

/** Pauses a queue: workers skip it until baton_queue_resume(). Idempotent. */
BATON_API int baton_queue_pause(baton_client *client, const char *queue);
/** Resumes a paused queue. Idempotent. */
BATON_API int baton_queue_resume(baton_client *client, const char *queue);

/**
 * Admits blocked job id now, into a free slot of its key. With force it is admitted even
 * when the key is full, past the limit (*over_limit_out is then 1): an operator's decision.
 * @return BATON_OK; BATON_ENOTFOUND for no such job; BATON_ESTATE when the job is not
 *         blocked, or its key is full and force is 0 (the message says how many hold it).
 */
BATON_API int baton_unblock(baton_client *client, int64_t id, int force, int *over_limit_out);

/** Admits as many blocked jobs of the stored key ("GROUP/KEY") as its free slots allow,
 *  best first. *promoted_out (may be NULL) receives how many. */
BATON_API int baton_unblock_key(baton_client *client, const char *key, int *promoted_out);

/**
 * Clears a key's semaphore: drops every slot holder and admits blocked jobs into the freed
 * slots. Without force it refuses with BATON_ESTATE, naming the job, while a holder is
 * ready to run or running in a process whose heartbeat is younger than the alive threshold
 * (clearing would let the next job run beside it). With force those holders lose their slots (baton_job_holds_slot() turns 0
 * for a running one, and its end releases nothing).
 * @param cleared_out, promoted_out receive the holders dropped and jobs admitted (may be NULL).
 */
BATON_API int baton_semaphore_clear(baton_client *client, const char *key, int force, int *cleared_out,
                                    int *promoted_out);

/**
 * Checks the database for states the lifecycle never leaves by itself but crashes, outages
 * or hand edits can: claims of processes whose heartbeat is older than the alive threshold
 * (dead_process_claims), jobs whose status has no execution row (job_in_no_state), slots
 * held by jobs that are neither ready nor running (stale_holder), blocked jobs whose key has
 * a free slot (blocked_with_free_slot), keys held by more jobs than their limit
 * (key_over_limit). With repair, fixes each in one transaction through the normal lifecycle
 * steps (pruning, readmission, promotion), never running a key past its limit; a key over
 * its limit is left to heal as its jobs end.
 * @param json_out receives {problems: [{kind, detail, job_id?, key?, process_id?}],
 *        repaired: [{kind, detail}]}, problems being those left after any repair; free
 *        with baton_free().
 * @param problems_left receives how many problems remain (may be NULL).
 */
BATON_API int baton_doctor_json(baton_client *client, int repair, char **json_out, int *problems_left);

/**
 * Lists blocked jobs, longest waiting first, as a JSON array of {job_id, class,
 * concurrency_key, blocked_since, waiting_seconds, recheck_at (when maintenance looks at it
 * again), arguments, key_values (the values of the key template's placeholders, present
 * when this client knows the class's template)}. class_name and concurrency_key (the stored
 * "GROUP/KEY"; both may be NULL) filter. The caller frees *json_out with baton_free().
 * Thread-safe like the other reports: one client per thread.
 */
BATON_API int baton_blocked_json(baton_client *client, const char *class_name,
                                 const char *concurrency_key, char **json_out);

/**
 * Lists running (claimed) jobs, longest running first, as a JSON array of {job_id, class,
 * concurrency_key, process_id, process_kind, pid, hostname, started_at, running_seconds,
 * attempt, fencing_token}. class_name (may be NULL) filters; longer_than_seconds keeps jobs
 * running at least that long. BATON_EINVALID for a negative duration.
 */
BATON_API int baton_running_json(baton_client *client, const char *class_name,
                                 double longer_than_seconds, char **json_out);

/**
 * The figures operators track, as {window_seconds, classes: [{class, counts: {ready,
 * blocked, scheduled, claimed, failed, finished, discarded}, blocked_keys, top_blocked_keys:
 * [{key, blocked}] (at most 5, most first), wait_seconds: {avg, p50, p95, max, samples} (from
 * enqueue or due time to start, over the jobs started within the window; nulls without
 * samples), released_by_expiry (jobs that got their slot from concurrency maintenance rather
 * than from a finishing holder), failed, timed_out, finished, per_minute}], queues: [{queue,
 * counts, finished, per_minute}]}. Counts are of all stored jobs; the other figures cover
 * jobs updated within the last since_seconds. class_name (may be NULL) keeps one class.
 * BATON_EINVALID unless since_seconds > 0.
 */
BATON_API int baton_stats_json(baton_client *client, const char *class_name, double since_seconds,
                               char **json_out);

/**
 * The figures of baton_stats_json() (over the last 5 minutes) and baton_processes_json() in
 * the Prometheus text exposition format (version 0.0.4): baton_jobs{class,status},
 * baton_queue_jobs{queue,status}, baton_blocked_keys{class},
 * baton_job_wait_seconds{class,quantile}, baton_jobs_{finished,failed,timed_out,
 * released_by_expiry}_5m{class}, baton_process_heartbeat_age_seconds{kind,process_id,
 * hostname} and baton_process_running_jobs{...}. The caller frees *text_out with baton_free().
 */
BATON_API int baton_metrics_text(baton_client *client, char **text_out);

/**
 * Lists registered processes as a JSON array of {id, kind, name, pid, hostname,
 * supervisor_id, metadata, last_heartbeat_at, heartbeat_age_seconds, started_at, running
 * (ids of the jobs it has claimed)}.
 */
BATON_API int baton_processes_json(baton_client *client, char **json_out);

/**
 * Lists concurrency keys as a JSON array of {key, limit, value (free slots), holders (job
 * ids), tokens (their fencing tokens), blocked (jobs waiting), expires_at (latest lease
 * end, or null)}, keys in order. expired_only keeps keys with a lease past its end;
 * key (may be NULL) keeps that one key.
 */
BATON_API int baton_semaphores_json(baton_client *client, int expired_only, const char *key,
                                    char **json_out);

/** Lists queues as a JSON array of {name, ready, scheduled, claimed, failed, paused}. */
BATON_API int baton_queues_json(baton_client *client, char **json_out);

/**
 * The class names registered on client, as a JSON array of {name, queue, priority,
 * command, max_attempts, timeout}.
 */
BATON_API int baton_classes_json(baton_client *client, char **json_out);

#ifdef __cplusplus
}
#endif
#endif /* BATON_H */
