#include "util/utf8.h"

#include <stdlib.h>
#include <string.h>

size_t bt_utf8_length(const unsigned char *s, size_t avail)
{
    size_t n = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
             : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    if (n == 0 || avail < n)
        return 0;
    for (size_t k = 1; k < n; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

int bt_utf8_valid(const char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        const unsigned char *at = (const unsigned char *)s + i;
        size_t n = *at < 0x80 ? 1 : bt_utf8_length(at, len - i);
        if (!n)
            return 0;
        i += n;
    }
    return 1;
}

char *bt_utf8_repaired(const char *s)
{
    static const char replacement[] = "\xef\xbf\xbd";
    size_t len = strlen(s);
    /* Each invalid byte grows to three. */
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        const unsigned char *at = (const unsigned char *)s + i;
        size_t n = *at < 0x80 ? 1 : bt_utf8_length(at, len - i);
        if (n) {
            memcpy(out + o, at, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, replacement, 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}
