/* grow.h: room for one more element in a doubling array. */
#ifndef BT_GROW_H
#define BT_GROW_H

#include <stddef.h>

/* bt_grow makes *items (of elem-byte elements, *cap allocated) hold at least len + 1,
 * doubling from 16. Returns 0, or -1 when out of memory (the array is left as it was). */
int bt_grow(void *items, size_t *cap, size_t len, size_t elem);

#endif
