/* clockskew.c: an LD_PRELOAD shim that sets one process's wall clock apart from its
 * host's, as on a host whose clock is off: CLOCK_REALTIME (and gettimeofday, time) read
 * $BATON_TEST_CLOCK_SKEW seconds ahead (negative: behind). Monotonic clocks are left
 * alone: no setting of the wall clock moves them. Test equipment, built without
 * sanitizers; a sanitized program loads it with ASAN_OPTIONS=verify_asan_link_order=0. */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);

static long long skew_ns(void)
{
    const char *s = getenv("BATON_TEST_CLOCK_SKEW");
    return s ? (long long)(strtod(s, NULL) * 1e9) : 0;
}

static void shift(struct timespec *ts)
{
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + skew_ns();
    ts->tv_sec = (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (!real_clock_gettime)
        real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        shift(ts);
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
