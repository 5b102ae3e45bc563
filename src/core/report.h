/* report.h: what the JSON reports of admin.c and monitor.c share. */
#ifndef BT_REPORT_H
#define BT_REPORT_H

#include <jansson.h>

#include "core/core.h"

/* A column of milliseconds as an ISO 8601 string, or null. */
json_t *bt_json_time(bt_row *row, int col);
/* A text column as a string, or null. */
json_t *bt_json_text(bt_row *row, int col);
/* bt_json_dump serialises value (taking the reference) into *json_out for the caller. */
int bt_json_dump(json_t *value, char **json_out);
/* bt_read_report runs fn inside a read transaction so a report sees one state. */
int bt_read_report(baton_client *c, int (*fn)(bt_store *, void *), void *arg);

/* bt_job_history lists job id's events in time order: enqueued, scheduled, blocked,
 * unblocked (key, by what, fencing token), each attempt claimed (process) and how it ended
 * (retried, failed, handed back, with the error), finished, discarded. */
int bt_job_history(bt_store *s, int64_t id, json_t **out);

#endif
