/* utf8.h: telling valid UTF-8 from bytes that only look like text. */
#ifndef BT_UTF8_H
#define BT_UTF8_H

#include <stddef.h>

/* bt_utf8_length is the length of the valid multi-byte UTF-8 sequence starting s (2 to 4
 * bytes, at most avail), or 0 when it is invalid, overlong, a surrogate or past U+10FFFF. */
size_t bt_utf8_length(const unsigned char *s, size_t avail);

/* bt_utf8_valid tells whether all of s is valid UTF-8. */
int bt_utf8_valid(const char *s);

/* bt_utf8_repaired returns a malloc'ed copy of s in which every byte that is not part of
 * valid UTF-8 became U+FFFD, or NULL when out of memory. Text stored for people (a job's
 * error, which a command may fill with any bytes) must be valid UTF-8: PostgreSQL refuses
 * anything else, and JSON cannot carry it. */
char *bt_utf8_repaired(const char *s);

#endif
