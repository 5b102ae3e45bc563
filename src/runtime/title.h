/* title.h: the process title that ps and top show, e.g.
 * "baton-worker: queues=high,default threads=5 busy=3". */
#ifndef BT_TITLE_H
#define BT_TITLE_H

/* bt_title_init takes over the memory of the process's argv and environment strings
 * (the environment is copied elsewhere first) so bt_title_set can rewrite them. Call it
 * once, while the process has one thread, after everything that pointed into argv was
 * copied. Returns 0, or -1 when the layout is not the expected one (titles then stay). */
int bt_title_init(void);

/* bt_title_set shows the formatted title; does nothing before bt_title_init. Titles
 * longer than the original argv and environment are cut. Not thread-safe: callers are
 * the supervisor and each child's single coordinating thread. */
void bt_title_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
