/* http_client.c: just enough HTTP/1.1 to talk to the calendar service: one request per
 * connection, the response read until the server closes. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "calendar_sync.h"

static int send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno == EINTR)
            continue;
        close(fd);
        return -1;
    }
    return fd;
}

http_response http_request(int port, const char *method, const char *path, int64_t fencing_token,
                           const char *body)
{
    http_response response = {0, NULL};
    int fd = connect_local(port);
    if (fd < 0)
        return response;
    size_t body_len = body ? strlen(body) : 0;
    char token_header[64] = "";
    if (fencing_token > 0)
        snprintf(token_header, sizeof token_header, "X-Fencing-Token: %lld\r\n", (long long)fencing_token);
    char head[512];
    int head_len = snprintf(head, sizeof head,
                            "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
                            "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n",
                            method, path, port, token_header, body_len);
    if (send_all(fd, head, (size_t)head_len) != 0 || (body_len && send_all(fd, body, body_len) != 0)) {
        close(fd);
        return response;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    char *body_start = strstr(buf, "\r\n\r\n");
    int status = 0;
    if (!body_start || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return response;
    }
    body_start += 4;
    memmove(buf, body_start, strlen(body_start) + 1);
    response.status = status;
    response.body = buf;
    return response;
}

void http_response_free(http_response *response)
{
    free(response->body);
    response->body = NULL;
}
