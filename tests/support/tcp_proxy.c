/* tcp_proxy.c: see tcp_proxy.h. One thread polls the listening socket and both ends of
 * every connection; frozen, it polls only the listening socket (new connections are
 * accepted and then stay silent too). */
#include "tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_PAIRS = 64 };

struct tcp_proxy {
    int listen_fd, port;
    struct sockaddr_in target;
    int pairs[MAX_PAIRS][2]; /* client side, server side; -1 when free */
    atomic_int frozen, quit, cuts;
    _Atomic(const char *) cut_first, cut_then;       /* cut_first NULL once it was seen */
    _Atomic(const char *) freeze_first, freeze_then; /* the same */
    _Atomic(const char *) end_first, end_then;       /* the same */
    pthread_t thread;
};

static void close_pair(tcp_proxy *p, int i)
{
    for (int k = 0; k < 2; k++) {
        if (p->pairs[i][k] >= 0)
            close(p->pairs[i][k]);
        p->pairs[i][k] = -1;
    }
}

static void accept_one(tcp_proxy *p)
{
    int client = accept(p->listen_fd, NULL, NULL);
    if (client < 0)
        return;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    if (server < 0 || connect(server, (struct sockaddr *)&p->target, sizeof p->target) != 0) {
        close(client);
        if (server >= 0)
            close(server);
        return;
    }
    for (int i = 0; i < MAX_PAIRS; i++)
        if (p->pairs[i][0] < 0) {
            p->pairs[i][0] = client;
            p->pairs[i][1] = server;
            return;
        }
    close(client);
    close(server);
}

static int holds(const char *buf, ssize_t n, const char *needle)
{
    size_t len = strlen(needle);
    for (ssize_t i = 0; i + (ssize_t)len <= n; i++)
        if (memcmp(buf + i, needle, len) == 0)
            return 1;
    return 0;
}

/* seen_then tells, once, that a chunk holding *then came after one holding *first (or is
 * that chunk, unless later is set). */
static int seen_then(const char *buf, ssize_t n, _Atomic(const char *) *first, _Atomic(const char *) *then,
                     int later)
{
    const char *f = atomic_load(first), *t = atomic_load(then);
    if (f && holds(buf, n, f)) {
        atomic_store(first, NULL);
        if (later)
            return 0;
        f = NULL;
    }
    return t && !f && holds(buf, n, t) && atomic_exchange(then, NULL);
}

/* end_after_answer passes on the server's answer to what the client just sent but for its
 * last message (ReadyForQuery), then what a server says when it terminates a session (an
 * ErrorResponse, FATAL 57P01), and ends the connection a moment later: the session was
 * terminated after it executed the last statement, before it said it was idle. */
static void end_after_answer(tcp_proxy *p, int i)
{
    static const char fatal[] = "SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0";
    char buf[65536];
    size_t n = 0;
    struct pollfd pf = {.fd = p->pairs[i][1], .events = POLLIN};
    /* The answer ends with ReadyForQuery: 'Z', length 5, a status byte. */
    while (!(n >= 6 && buf[n - 6] == 'Z' && memcmp(buf + n - 5, "\0\0\0\5", 4) == 0) && n < sizeof buf - 200 &&
           poll(&pf, 1, 2000) > 0) {
        ssize_t got = read(p->pairs[i][1], buf + n, sizeof buf - 200 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    if (n >= 6 && buf[n - 6] == 'Z')
        n -= 6;
    uint32_t len = htonl((uint32_t)(4 + sizeof fatal)); /* the fields, each NUL-ended, and a last NUL */
    buf[n++] = 'E';
    memcpy(buf + n, &len, 4);
    n += 4;
    memcpy(buf + n, fatal, sizeof fatal); /* sizeof counts the terminating NUL */
    n += sizeof fatal;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(p->pairs[i][0], buf + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    /* The end of the connection comes a moment later, as from a server busy exiting: the
     * client has read the error by then, and still holds a connection it thinks open. */
    struct pollfd none = {.fd = -1};
    poll(&none, 1, 1000);
    atomic_fetch_add(&p->cuts, 1);
}

/* forward moves what from has to the other side of pair i; 0 when the pair ended. */
static int forward(tcp_proxy *p, int i, int from)
{
    char buf[16384];
    ssize_t n = read(p->pairs[i][from], buf, sizeof buf);
    if (n <= 0)
        return 0;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(p->pairs[i][1 - from], buf + off, (size_t)(n - off));
        if (w <= 0)
            return 0;
        off += w;
    }
    if (from == 0 && seen_then(buf, n, &p->freeze_first, &p->freeze_then, 1))
        atomic_store(&p->frozen, 1);
    if (from == 0 && seen_then(buf, n, &p->end_first, &p->end_then, 0)) {
        end_after_answer(p, i);
        return 0;
    }
    if (from == 0 && seen_then(buf, n, &p->cut_first, &p->cut_then, 0)) {
        /* The server reads what it was sent, then the end; its answer goes nowhere. */
        shutdown(p->pairs[i][1], SHUT_WR);
        char sink[4096];
        struct pollfd pf = {.fd = p->pairs[i][1], .events = POLLIN};
        while (poll(&pf, 1, 2000) > 0 && read(p->pairs[i][1], sink, sizeof sink) > 0)
            ;
        atomic_fetch_add(&p->cuts, 1);
        return 0;
    }
    return 1;
}

static void *proxy_main(void *arg)
{
    tcp_proxy *p = arg;
    while (!atomic_load(&p->quit)) {
        struct pollfd fds[1 + 2 * MAX_PAIRS];
        int where[1 + 2 * MAX_PAIRS][2], n = 0;
        fds[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        int frozen = atomic_load(&p->frozen);
        for (int i = 0; i < MAX_PAIRS && !frozen; i++)
            for (int k = 0; k < 2 && p->pairs[i][0] >= 0; k++) {
                where[n][0] = i;
                where[n][1] = k;
                fds[n++] = (struct pollfd){.fd = p->pairs[i][k], .events = POLLIN};
            }
        if (poll(fds, (nfds_t)n, 20) <= 0)
            continue;
        if (fds[0].revents & POLLIN)
            accept_one(p);
        for (int j = 1; j < n && !atomic_load(&p->frozen); j++)
            if (fds[j].revents && p->pairs[where[j][0]][0] >= 0 && !forward(p, where[j][0], where[j][1]))
                close_pair(p, where[j][0]);
    }
    return NULL;
}

tcp_proxy *tcp_proxy_start(const char *host, int port)
{
    tcp_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    for (int i = 0; i < MAX_PAIRS; i++)
        p->pairs[i][0] = p->pairs[i][1] = -1;
    p->target = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in self = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof self;
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (inet_pton(AF_INET, host, &p->target.sin_addr) != 1 || p->listen_fd < 0 ||
        bind(p->listen_fd, (struct sockaddr *)&self, sizeof self) != 0 || listen(p->listen_fd, 16) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&self, &len) != 0 ||
        pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
        if (p->listen_fd >= 0)
            close(p->listen_fd);
        free(p);
        return NULL;
    }
    p->port = ntohs(self.sin_port);
    return p;
}

int tcp_proxy_port(const tcp_proxy *p) { return p->port; }

void tcp_proxy_freeze(tcp_proxy *p, int frozen) { atomic_store(&p->frozen, frozen); }

void tcp_proxy_cut_after(tcp_proxy *p, const char *first, const char *then)
{
    atomic_store(&p->cut_first, first);
    atomic_store(&p->cut_then, then);
}

void tcp_proxy_end_after_answer(tcp_proxy *p, const char *first, const char *then)
{
    atomic_store(&p->end_first, first);
    atomic_store(&p->end_then, then);
}

void tcp_proxy_freeze_after(tcp_proxy *p, const char *first, const char *then)
{
    atomic_store(&p->freeze_first, first);
    atomic_store(&p->freeze_then, then);
}

int tcp_proxy_cuts(const tcp_proxy *p) { return atomic_load(&p->cuts); }

void tcp_proxy_stop(tcp_proxy *p)
{
    if (!p)
        return;
    atomic_store(&p->quit, 1);
    pthread_join(p->thread, NULL);
    for (int i = 0; i < MAX_PAIRS; i++)
        close_pair(p, i);
    close(p->listen_fd);
    free(p);
}
