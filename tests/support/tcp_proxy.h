/* tcp_proxy.h: a TCP proxy of the test's own between Baton and a server, for network
 * faults: it forwards bytes both ways until frozen, then forwards nothing and closes
 * nothing (a partition, a dead NAT or proxy: no FIN, no RST), until thawed. */
#ifndef BT_TEST_TCP_PROXY_H
#define BT_TEST_TCP_PROXY_H

typedef struct tcp_proxy tcp_proxy;

/* tcp_proxy_start listens on 127.0.0.1 (a free port) and forwards each connection to
 * host:port, on a thread of its own. NULL when it cannot listen. */
tcp_proxy *tcp_proxy_start(const char *host, int port);
int tcp_proxy_port(const tcp_proxy *p);
/* While frozen, bytes sent either way stay unread in the proxy's sockets. */
void tcp_proxy_freeze(tcp_proxy *p, int frozen);
/* tcp_proxy_cut_after arms one fault: once a client has sent bytes holding first, the
 * next chunk it sends that holds then (e.g. "COMMIT") reaches the server, which then sees
 * the connection end, while the client's side is closed before any answer: the server did
 * what it was asked, the client never hears. Both texts must outlive the fault. */
void tcp_proxy_cut_after(tcp_proxy *p, const char *first, const char *then);
/* tcp_proxy_freeze_after arms another: once a client has sent bytes holding first, the
 * next chunk after those that holds then reaches the server, and the proxy then freezes as
 * tcp_proxy_freeze does, so the server's answer stays in the proxy. Both texts must
 * outlive the fault. (A prepared statement's text goes in its Parse message, its
 * parameters in a later Bind: first can be the text, then a parameter.) */
void tcp_proxy_freeze_after(tcp_proxy *p, const char *first, const char *then);
/* tcp_proxy_end_after_answer arms a third: once a client has sent bytes holding first,
 * the next chunk it sends that holds then reaches the server, whose answer reaches the
 * client but for its last message (ReadyForQuery), followed by the FATAL error a server
 * sends when it terminates a session; the connection ends a second later. A COMMIT the
 * server executed and answered, in a session that ended before it said it was idle.
 * Counted as a cut. */
void tcp_proxy_end_after_answer(tcp_proxy *p, const char *first, const char *then);
/* How many connections were cut so. */
int tcp_proxy_cuts(const tcp_proxy *p);
/* Stops the thread and closes every connection. */
void tcp_proxy_stop(tcp_proxy *p);

#endif
