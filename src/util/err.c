/* err.c: one message buffer per thread, so concurrent handles never overwrite each other's
 * errors and no global state is shared. */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "baton.h"

enum { ERR_MAX = 1024 };
static _Thread_local char last_error[ERR_MAX];

/* one_line keeps the promise of one line whatever text a message quotes (a time with a
 * newline in it, a server's "ERROR: ...\nDETAIL: ..."): line breaks become spaces, and
 * those at the end go. */
static void one_line(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    for (char *p = s; (p = strpbrk(p, "\r\n"));)
        *p = ' ';
}

int bt_err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    one_line(last_error);
    return code;
}

int bt_err_prefix(int code, const char *fmt, ...)
{
    char prefix[ERR_MAX], old[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    if (snprintf(last_error, sizeof last_error, "%s: %s", prefix, old) >= (int)sizeof last_error)
        memcpy(last_error + sizeof last_error - 4, "...", 4); /* show that it was cut */
    one_line(last_error);
    return code;
}

void bt_err_clear(void) { last_error[0] = '\0'; }

const char *baton_error_last(void) { return last_error; }

const char *baton_strerror(int code)
{
    switch (code) {
    case BATON_OK: return "ok";
    case BATON_ENOTFOUND: return "not found";
    case BATON_EINVALID: return "invalid input";
    case BATON_EBUSY: return "database busy";
    case BATON_ESTORE: return "database failure";
    case BATON_ESCHEMA: return "schema version mismatch";
    case BATON_ESTATE: return "operation not allowed in the job's state";
    default: return "error";
    }
}
