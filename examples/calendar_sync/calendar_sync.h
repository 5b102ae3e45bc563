/* calendar_sync.h: the pieces of the calendar-sync demo. A fake calendar service (an HTTP
 * server that behaves like a calendar events API: list and insert, no uniqueness, slow),
 * a minimal HTTP client, and the deterministic course schedule of the demo's users. */
#ifndef CALENDAR_SYNC_H
#define CALENDAR_SYNC_H

#include <stddef.h>
#include <stdint.h>

/* ---- the calendar service ---- */

typedef struct calendar_service_options {
    int users;          /* calendars 1..users exist */
    int latency_min_ms; /* every call sleeps a random time in [min, max] */
    int latency_max_ms;
} calendar_service_options;

/* Serves listen_fd until the process is killed. Endpoints:
 *   GET  /calendars/{user}/events   {"items":[event, ...]}
 *   POST /calendars/{user}/events   body: an event; answers the stored event with its "id"
 *   GET  /stats                     {"requests","lists","inserts","rejected"}
 *   GET  /calendars                 every calendar's events: [[event, ...] of user 1, ...]
 * A request may carry "X-Fencing-Token: N". The service remembers the highest token it has
 * seen per calendar (reads included) and answers 409 to a write with a lower one. */
void calendar_service_serve(int listen_fd, const calendar_service_options *opts);

/* A listening socket on 127.0.0.1 on a free port; *port_out receives the port. -1 on error. */
int calendar_service_listen(int *port_out);

/* ---- the HTTP client ---- */

typedef struct http_response {
    int status; /* 0 when the request could not be made */
    char *body; /* NUL-terminated, malloc'ed; NULL when status is 0 */
} http_response;

/* One request on a fresh connection to 127.0.0.1:port. fencing_token 0 sends no token;
 * body may be NULL. */
http_response http_request(int port, const char *method, const char *path, int64_t fencing_token,
                           const char *body);
void http_response_free(http_response *response);

/* ---- the schedule ---- */

typedef struct course_meeting {
    char uid[64];   /* stable identity of the recurring event, e.g. "course-7-meeting-2" */
    char json[512]; /* the event as sent to the calendar service */
} course_meeting;

/* The events user_id's calendar must hold: one weekly recurring event per meeting of each
 * course the user is enrolled in (1-4 courses of 2-3 meetings each), derived from seed.
 * Writes at most max events and returns how many there are. */
int schedule_for_user(uint32_t seed, int user_id, course_meeting *out, int max);

enum { SCHEDULE_MAX_EVENTS = 12 };

#endif
