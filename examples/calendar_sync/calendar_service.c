/* calendar_service.c: a stand-in for a calendar events API, as the sync job sees it. Like
 * the real one it lets a client insert the same event twice (no uniqueness constraint)
 * and every call takes tens of milliseconds, which is what leaves room for the race. It
 * serves one request per connection, each on its own thread, and keeps calendars in memory. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "calendar_sync.h"

typedef struct calendar {
    json_t *items;         /* events in insertion order */
    int64_t highest_token; /* highest fencing token seen on any call */
    int64_t next_event_id;
} calendar;

static calendar_service_options options;
static calendar *calendars; /* indexed by user id, 1..options.users */
static pthread_mutex_t calendars_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_llong requests, lists, inserts, rejected;

int calendar_service_listen(int *port_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 512) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        close(fd);
        return -1;
    }
    *port_out = ntohs(addr.sin_port);
    return fd;
}

static void simulate_latency(unsigned *seed)
{
    int spread = options.latency_max_ms - options.latency_min_ms;
    int ms = options.latency_min_ms + (spread > 0 ? (int)(rand_r(seed) % (unsigned)(spread + 1)) : 0);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void respond(int fd, int status, const char *body)
{
    const char *reason = status == 200   ? "OK"
                         : status == 404 ? "Not Found"
                         : status == 409 ? "Conflict"
                                         : "Bad Request";
    char head[256];
    int len = snprintf(head, sizeof head,
                       "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n",
                       status, reason, strlen(body));
    if (send(fd, head, (size_t)len, MSG_NOSIGNAL) == len)
        send(fd, body, strlen(body), MSG_NOSIGNAL);
}

/* observe_token records a call's fencing token; returns 0 when it is older than one seen. */
static int observe_token(calendar *cal, int64_t token)
{
    if (token == 0)
        return 1;
    if (token < cal->highest_token)
        return 0;
    cal->highest_token = token;
    return 1;
}

static void list_events(int fd, calendar *cal, int64_t token)
{
    atomic_fetch_add(&lists, 1);
    pthread_mutex_lock(&calendars_lock);
    observe_token(cal, token);
    json_t *doc = json_pack("{sO}", "items", cal->items);
    char *text = json_dumps(doc, JSON_COMPACT);
    pthread_mutex_unlock(&calendars_lock);
    json_decref(doc);
    respond(fd, 200, text);
    free(text);
}

static void insert_event(int fd, calendar *cal, int64_t token, const char *body)
{
    json_t *event = json_loads(body, 0, NULL);
    if (!json_is_object(event)) {
        json_decref(event);
        respond(fd, 400, "{\"error\":\"the body must be an event object\"}");
        return;
    }
    pthread_mutex_lock(&calendars_lock);
    if (!observe_token(cal, token)) {
        int64_t highest = cal->highest_token;
        pthread_mutex_unlock(&calendars_lock);
        json_decref(event);
        atomic_fetch_add(&rejected, 1);
        char msg[160];
        snprintf(msg, sizeof msg, "{\"error\":\"stale fencing token %lld, calendar has seen %lld\"}",
                 (long long)token, (long long)highest);
        respond(fd, 409, msg);
        return;
    }
    char id[32];
    snprintf(id, sizeof id, "evt%lld", (long long)++cal->next_event_id);
    json_object_set_new(event, "id", json_string(id));
    json_array_append(cal->items, event);
    pthread_mutex_unlock(&calendars_lock);
    atomic_fetch_add(&inserts, 1);
    char *text = json_dumps(event, JSON_COMPACT);
    json_decref(event);
    respond(fd, 200, text);
    free(text);
}

/* export_calendars answers every calendar at once, for checking them after a run: an
 * operator's view, neither slowed down nor counted as an API call. */
static void export_calendars(int fd)
{
    json_t *all = json_array();
    pthread_mutex_lock(&calendars_lock);
    for (int u = 1; u <= options.users; u++)
        json_array_append_new(all, json_deep_copy(calendars[u].items));
    pthread_mutex_unlock(&calendars_lock);
    char *text = json_dumps(all, JSON_COMPACT);
    json_decref(all);
    respond(fd, 200, text);
    free(text);
}

/* read_request reads one request into buf: the head, then Content-Length bytes of body.
 * Returns the body's offset, or -1. */
static int read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    char *head_end = NULL;
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        if (!head_end)
            head_end = strstr(buf, "\r\n\r\n");
        if (head_end) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0;
            size_t body_at = (size_t)(head_end - buf) + 4;
            if (len - body_at >= want)
                return (int)body_at;
        }
        if (len + 1 >= cap)
            return -1;
    }
}

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned seed = (unsigned)fd ^ (unsigned)time(NULL) ^ (unsigned)(uintptr_t)pthread_self();
    char buf[16384];
    int body_at = read_request(fd, buf, sizeof buf);
    char method[8], path[128];
    int user = 0;
    if (body_at < 0 || sscanf(buf, "%7s %127s", method, path) != 2) {
        close(fd);
        return NULL;
    }
    if (strcmp(method, "GET") == 0 && strcmp(path, "/stats") == 0) {
        char stats[256];
        snprintf(stats, sizeof stats, "{\"requests\":%lld,\"lists\":%lld,\"inserts\":%lld,\"rejected\":%lld}",
                 (long long)atomic_load(&requests), (long long)atomic_load(&lists),
                 (long long)atomic_load(&inserts), (long long)atomic_load(&rejected));
        respond(fd, 200, stats);
        close(fd);
        return NULL;
    }
    if (strcmp(method, "GET") == 0 && strcmp(path, "/calendars") == 0) {
        export_calendars(fd);
        close(fd);
        return NULL;
    }
    atomic_fetch_add(&requests, 1);
    int consumed = 0;
    if (sscanf(path, "/calendars/%d/events%n", &user, &consumed) != 1 || path[consumed] != '\0' ||
        user < 1 || user > options.users) {
        respond(fd, 404, "{\"error\":\"no such calendar\"}");
        close(fd);
        return NULL;
    }
    const char *token_header = strcasestr(buf, "\r\nX-Fencing-Token:");
    int64_t token = token_header ? strtoll(token_header + 18, NULL, 10) : 0;
    simulate_latency(&seed);
    if (strcmp(method, "GET") == 0)
        list_events(fd, &calendars[user], token);
    else if (strcmp(method, "POST") == 0)
        insert_event(fd, &calendars[user], token, buf + body_at);
    else
        respond(fd, 400, "{\"error\":\"unsupported method\"}");
    close(fd);
    return NULL;
}

void calendar_service_serve(int listen_fd, const calendar_service_options *opts)
{
    options = *opts;
    calendars = calloc((size_t)options.users + 1, sizeof *calendars);
    for (int u = 0; u <= options.users; u++)
        calendars[u].items = json_array();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_t thread;
        if (pthread_create(&thread, &attr, serve_connection, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}
