/* replay.c: runs a fuzz target over files, for builds without libFuzzer. Each argument is
 * an input file or a directory of them (a seed corpus); every input is run once, so the
 * corpus of every target is a regression test in every build. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    uint8_t *data = NULL;
    size_t size = 0, cap = 0, n;
    do {
        if (size == cap && !(data = realloc(data, cap = cap ? 2 * cap : 4096))) {
            fclose(f);
            return -1;
        }
        n = fread(data + size, 1, cap - size, f);
        size += n;
    } while (n > 0);
    fclose(f);
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 1;
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: no such input: %s\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort), runs = 0;
    for (int i = 0; i < n; i++) {
        char child[4096];
        if (names[i]->d_name[0] != '.' && snprintf(child, sizeof child, "%s/%s", path, names[i]->d_name) < (int)sizeof child) {
            int r = run_path(child);
            runs = runs < 0 || r < 0 ? -1 : runs + r;
        }
        free(names[i]);
    }
    free(names);
    return n < 0 ? -1 : runs;
}

int main(int argc, char **argv)
{
    int runs = 0;
    for (int i = 1; i < argc; i++) {
        int r = run_path(argv[i]);
        if (r < 0)
            return 1;
        runs += r;
    }
    printf("replay: %d inputs run\n", runs);
    return runs > 0 ? 0 : 1;
}
