/* hooks.c: the lifecycle hooks a program sets on its client: around each job (run by
 * bt_job_perform) and at the start, stop and exit of each process (bt_process_hook). */
#include "core/core.h"
#include "util/err.h"

void baton_on_job(baton_client *c, baton_job_before_fn before, baton_job_after_fn after,
                  void *user_data)
{
    c->job_before = before;
    c->job_after = after;
    c->job_hook_data = user_data;
}

int baton_on_process(baton_client *c, baton_process_kind kind, baton_process_event event,
                     baton_process_hook fn, void *user_data)
{
    if (kind < BATON_PROCESS_WORKER || kind > BATON_PROCESS_SUPERVISOR)
        return bt_err_set(BATON_EINVALID, "unknown process kind %d", (int)kind);
    if (event < BATON_PROCESS_START || event > BATON_PROCESS_EXIT)
        return bt_err_set(BATON_EINVALID, "unknown process event %d", (int)event);
    c->process_hooks[kind][event] = (bt_process_hook_slot){fn, user_data};
    return BATON_OK;
}

void bt_process_hook(baton_client *c, baton_process_kind kind, baton_process_event event,
                     int64_t process_id)
{
    const bt_process_hook_slot *slot = &c->process_hooks[kind][event];
    if (slot->fn)
        slot->fn(kind, event, process_id, slot->user_data);
}
