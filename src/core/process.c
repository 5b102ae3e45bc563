/* process.c: registration and heartbeats of workers, dispatchers and inline performs in
 * baton_processes. Claims point at a process row, so deregistering a process is also the
 * moment its remaining claims go back to the queue. Each registration also records the
 * process's identity in baton_process_identities, which outlives the row (schema.c). */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "util/clock.h"
#include "util/err.h"

static const char sql_register[] =
    "INSERT INTO baton_processes (kind, name, pid, hostname, supervisor_id, metadata, last_heartbeat_at, created_at,"
    " alive_threshold, beat, beats_since, beat_gap, host_id)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, baton_clock(), baton_clock(), 0, ?9) RETURNING id";
static const char sql_record_identity[] =
    "INSERT INTO baton_process_identities (id, kind, name, pid, hostname) VALUES (?, ?, ?, ?, ?)";
/* last_heartbeat_at is for people (the writer's wall clock); beat is for liveness. A gap
 * of more than half the threshold since the last beat begins a new run of beats; a
 * shorter one may be the run's largest. */
#define GAP "ABS(baton_clock() - beat)"
static const char sql_heartbeat[] =
    "UPDATE baton_processes SET last_heartbeat_at = ?1, alive_threshold = ?3,"
    " beats_since = CASE WHEN " GAP " > ?3 / 2 THEN baton_clock() ELSE beats_since END,"
    " beat_gap = CASE WHEN " GAP " > ?3 / 2 THEN 0 WHEN " GAP " > COALESCE(beat_gap, 0) THEN " GAP
    " ELSE beat_gap END,"
    " beat = baton_clock() WHERE id = ?2";
static const char sql_deregister[] = "DELETE FROM baton_processes WHERE id = ?";

/* A child forked by a supervisor belongs to it for its whole life, and only the child
 * itself runs in that process: one value per process is the truth, not a shortcut. */
static int64_t supervisor_id;

static char host_id[128];

static void read_host_id(void)
{
    char boot[64] = "", ns[64] = "";
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, boot, sizeof boot - 1) : -1;
    if (fd >= 0)
        close(fd);
    while (n > 0 && (boot[n - 1] == '\n' || boot[n - 1] == ' '))
        boot[--n] = '\0';
    ssize_t m = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    if (n > 0 && m > 0) {
        ns[m] = '\0';
        snprintf(host_id, sizeof host_id, "%s %s", boot, ns);
    }
}

void bt_process_set_supervisor(int64_t id) { supervisor_id = id; }

/* The boot of this host and its pid namespace: processes that share it see each other's
 * pids. NULL when /proc does not tell. */
const char *bt_host_id(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_host_id);
    return host_id[0] ? host_id : NULL;
}

static int64_t threshold_ms(double alive_threshold) { return (int64_t)(alive_threshold * 1000.0); }

int bt_process_register(bt_store *s, const char *kind, const char *metadata_json, double alive_threshold,
                        int64_t *id_out)
{
    char host[256] = "unknown", name[400];
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "%s-%s-%d", kind, host, (int)getpid());
    int64_t now = bt_now_ms();
    bt_val a[] = {BV_TEXT(kind), BV_TEXT(name), BV_INT(getpid()), BV_TEXT(host),
                  supervisor_id ? BV_INT(supervisor_id) : BV_NULL, BV_TEXT(metadata_json), BV_INT(now),
                  BV_INT(threshold_ms(alive_threshold)), BV_TEXT(bt_host_id())};
    int rc = bt_begin(s, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_query_int(s, sql_register, a, 9, id_out, 0);
    if (rc == BATON_OK) {
        bt_val identity[] = {BV_INT(*id_out), a[0], a[1], a[2], a[3]};
        rc = bt_exec(s, sql_record_identity, identity, 5, NULL, NULL, NULL);
    }
    return bt_end(s, rc);
}

int bt_process_heartbeat(bt_store *s, int64_t id, double alive_threshold, int *alive)
{
    int64_t changes = 0;
    bt_val a[] = {BV_INT(bt_now_ms()), BV_INT(id), BV_INT(threshold_ms(alive_threshold))};
    int rc = bt_exec(s, sql_heartbeat, a, 3, NULL, NULL, &changes);
    *alive = rc != BATON_OK || changes > 0;
    return rc;
}

int bt_process_deregister(bt_store *s, int64_t id)
{
    int rc = bt_begin(s, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_lock_process_keys(s, id);
    if (rc == BATON_OK)
        rc = bt_release_claims(s, id, NULL, 0, bt_now_ms(), NULL);
    if (rc == BATON_OK)
        rc = bt_discard_inline_waiters(s, id, bt_now_ms());
    if (rc == BATON_OK) {
        bt_val a[] = {BV_INT(id)};
        rc = bt_exec(s, sql_deregister, a, 1, NULL, NULL, NULL);
    }
    return bt_end(s, rc);
}

int bt_liveness_beat(bt_store *s, int64_t process_id, double alive_threshold, int *alive)
{
    int rc = bt_begin(s, BT_TXN_WRITE);
    if (rc == BATON_OK)
        rc = bt_process_heartbeat(s, process_id, alive_threshold, alive);
    if (rc == BATON_OK && *alive)
        rc = bt_renew_leases(s, process_id, bt_now_ms());
    return bt_end(s, rc);
}

/* Pruning others never shares a transaction with the heartbeat: whatever fails in it (a
 * row it cannot settle, a lock it waits too long for) must not undo this process's beat. */
void bt_liveness_prune(bt_store *s, int64_t process_id, double alive_threshold, int *pruned)
{
    if (bt_prune_dead(s, process_id, threshold_ms(alive_threshold), bt_now_ms(), pruned) != BATON_OK)
        *pruned = -1;
}

int bt_liveness_tick(bt_store *s, int64_t process_id, double alive_threshold, int *alive, int *pruned)
{
    *pruned = 0;
    int rc = bt_liveness_beat(s, process_id, alive_threshold, alive);
    if (rc == BATON_OK && *alive)
        bt_liveness_prune(s, process_id, alive_threshold, pruned);
    return rc;
}

void bt_liveness_keep(baton_client *c, bt_store *s, const char *kind, const char *metadata_json,
                      double alive_threshold, int64_t *id, bt_log_limit *errors)
{
    int alive = 1, pruned = 0;
    if (bt_liveness_tick(s, *id, alive_threshold, &alive, &pruned) != BATON_OK) {
        bt_log_limited(c, errors, BATON_LOG_ERROR, "event=%s.heartbeat_failed error=%s", kind,
                       BT_LOG_VALUE(baton_error_last()));
        return;
    }
    bt_log_pruned(c, errors, pruned);
    if (alive)
        return;
    int64_t fresh = 0;
    if (bt_process_register(s, kind, metadata_json, alive_threshold, &fresh) != BATON_OK) { /* again next tick */
        bt_log_limited(c, errors, BATON_LOG_ERROR, "event=%s.register_failed error=%s", kind,
                       BT_LOG_VALUE(baton_error_last()));
        return;
    }
    bt_log(c, BATON_LOG_ERROR, "event=%s.was_pruned old_process_id=%lld process_id=%lld", kind, (long long)*id,
           (long long)fresh);
    *id = fresh;
}

void bt_log_pruned(baton_client *c, bt_log_limit *errors, int pruned)
{
    if (pruned < 0)
        bt_log_limited(c, errors, BATON_LOG_ERROR, "event=processes.prune_failed error=%s",
                       BT_LOG_VALUE(baton_error_last()));
    else if (pruned)
        bt_log(c, BATON_LOG_WARN, "event=processes.pruned count=%d", pruned);
}
