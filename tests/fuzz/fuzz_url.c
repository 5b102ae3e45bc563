/* fuzz_url: database URLs as every message and report shows them. The password of a
 * "scheme://user:password@host" URL shows no more often than the rest of the URL holds it,
 * and naming another database fits the buffer it is given. */
#include "fuzz.h"
#include "store/store.h"

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_text(data, size);
    char *shown = bt_url_redact(url);
    FUZZ_CHECK(shown);
    /* libpq's user information: up to the last '@' before the first '/' after "://". */
    const char *scheme = strstr(url, "://");
    if (scheme) {
        const char *auth = scheme + 3, *end = auth + strcspn(auth, "/");
        const char *at = memrchr(auth, '@', (size_t)(end - auth));
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        /* A password with '*' in it could be spelt by the "***" that hides it. */
        if (colon && at - colon > 4 && !memchr(colon, '*', (size_t)(at - colon))) {
            char *secret = strndup(colon + 1, (size_t)(at - colon - 1)), *rest = NULL;
            FUZZ_CHECK(secret);
            FUZZ_CHECK(asprintf(&rest, "%.*s***%s", (int)(colon + 1 - url), url, at) > 0);
            FUZZ_CHECK(count(shown, secret) <= count(rest, secret));
            free(rest);
            free(secret);
        }
    }
    char other[512];
    bt_url_with_database(other, sizeof other, url, "baton_fuzz");
    FUZZ_CHECK(strlen(other) < sizeof other);
    free(shown);
    free(url);
    return 0;
}
