/* title.c: rewrites the argv area, which is what ps reads from /proc/PID/cmdline.
 *
 * The kernel reports where the argv and environment strings lie (/proc/self/stat fields
 * arg_start..env_end). Once the environment strings are copied to the heap, that whole
 * stretch is free to hold a title; the kernel reads past arg_end into it when the byte
 * before arg_end is not a NUL. The short name in /proc/PID/comm (what top shows by
 * default) is set too. */
#include "runtime/title.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char *area;
static size_t area_len;

/* read_layout fills the four addresses from /proc/self/stat (fields 48 to 51). */
static int read_layout(unsigned long v[4])
{
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -1;
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return -1;
    p++;
    /* Field 3 follows the name; arg_start is field 48. */
    for (int field = 3; field < 48; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -1;
    }
    for (int i = 0; i < 4; i++) {
        errno = 0;
        char *end;
        v[i] = strtoul(p, &end, 10);
        if (errno || end == p)
            return -1;
        p = end;
    }
    return 0;
}

int bt_title_init(void)
{
    if (area)
        return 0;
    unsigned long v[4]; /* arg_start, arg_end, env_start, env_end */
    if (read_layout(v) != 0 || v[1] <= v[0])
        return -1;
    size_t len = v[1] - v[0];
    if (v[2] == v[1]) { /* the environment strings follow: take them too */
        size_t n = 0;
        while (environ[n])
            n++;
        char **copy = calloc(n + 1, sizeof *copy);
        for (size_t i = 0; copy && i < n; i++)
            if (!(copy[i] = strdup(environ[i]))) {
                while (i--)
                    free(copy[i]);
                free(copy);
                copy = NULL;
            }
        if (!copy)
            return -1;
        environ = copy;
        len = v[3] - v[0];
    }
    /* glibc's name for error messages points into argv[0]: keep it readable. */
    program_invocation_name = strdup(program_invocation_name);
    program_invocation_short_name = strdup(program_invocation_short_name);
    area = (char *)v[0];
    area_len = len;
    return 0;
}

void bt_title_set(const char *fmt, ...)
{
    if (!area)
        return;
    char title[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(title, sizeof title, fmt, ap);
    va_end(ap);
    size_t n = strlen(title);
    if (n >= area_len)
        n = area_len - 1;
    memcpy(area, title, n);
    memset(area + n, 0, area_len - n);
    char comm[16];
    snprintf(comm, sizeof comm, "%.*s", (int)strcspn(title, ":"), title);
    prctl(PR_SET_NAME, comm, 0, 0, 0);
}
