/* fuzz_config: baton.yml. Any file either loads or is refused with one line; loading twice
 * gives the same verdict. */
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("baton.yml", 0);
        FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size);
    int verdict[2];
    for (int i = 0; i < 2; i++) {
        bt_config *cfg = NULL;
        verdict[i] = bt_config_load(path, &cfg);
        if (verdict[i] == BATON_OK)
            FUZZ_CHECK(cfg);
        else
            fuzz_check_message();
        bt_config_free(cfg);
    }
    FUZZ_CHECK(verdict[0] == verdict[1]);
    return 0;
}
