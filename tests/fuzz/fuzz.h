/* fuzz.h: what the fuzz targets share. Each tests/fuzz/fuzz_*.c defines
 * LLVMFuzzerTestOneInput and checks properties that hold for every input; a broken one
 * aborts, which libFuzzer and the sanitizers report with the input. */
#ifndef BATON_FUZZ_H
#define BATON_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK aborts with the condition when it does not hold. */
#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* fuzz_text returns data as a NUL-terminated copy (the caller frees it). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    return text;
}

/* fuzz_check_message: bad input is refused with one line that says something. */
static inline void fuzz_check_message(void)
{
    const char *m = baton_error_last();
    FUZZ_CHECK(m && *m && !strchr(m, '\n'));
}

#endif
