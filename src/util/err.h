/* err.h: the thread-local "last error" behind baton_error_last(). */
#ifndef BT_ERR_H
#define BT_ERR_H

/* bt_err_set records a one-line message for code on this thread and returns code, so a
 * failure is reported and propagated in one statement: return bt_err_set(...). */
int bt_err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* bt_err_prefix prepends "prefix: " to the current message (adds context on the way up). */
int bt_err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* bt_err_clear forgets the message, for callers that deliberately swallow an error. */
void bt_err_clear(void);

#endif
