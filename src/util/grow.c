#include "util/grow.h"

#include <stdlib.h>
#include <string.h>

int bt_grow(void *items, size_t *cap, size_t len, size_t elem)
{
    if (len < *cap)
        return 0;
    size_t want = *cap ? *cap * 2 : 16;
    void *old;
    memcpy(&old, items, sizeof old);
    void *grown = realloc(old, want * elem);
    if (!grown)
        return -1;
    memcpy(items, &grown, sizeof grown);
    *cap = want;
    return 0;
}
