/* fuzz_enqueue: a job's arguments and its class's concurrency key template, through the
 * public API into a real SQLite database. The input's first line is the template, the
 * rest the arguments. Whatever they are, the enqueue stores one job whose key is valid
 * text that names the class's group (no byte of it lost), or stores nothing and says why
 * in one line. Each input's job is rolled back, so the database stays small. */
#include <jansson.h>
#include <sqlite3.h>
#include <unistd.h>

#include "fuzz.h"
#include "util/utf8.h"

static baton_client *client;
static sqlite3 *db;
static char path[] = "/tmp/baton-fuzz-XXXXXX";

static void remove_database(void)
{
    sqlite3_close(db);
    baton_close(client);
    char name[sizeof path + 8];
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s%s", path, suffixes[i]);
        unlink(name);
    }
}

static void open_database(void)
{
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "sqlite:%s", path);
    FUZZ_CHECK(baton_open(&client, url) == BATON_OK && baton_migrate(client) == BATON_OK);
    FUZZ_CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    atexit(remove_database);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!client)
        open_database();
    char *text = fuzz_text(data, size), *args = strchr(text, '\n');
    if (args)
        *args++ = '\0';
    baton_class_options o = BATON_CLASS_OPTIONS_INIT;
    o.concurrency_key = text;
    o.command = "true";
    FUZZ_CHECK(baton_class_register(client, "Fuzz", &o) == BATON_OK);
    baton_job_spec spec = {.class_name = "Fuzz", .args_json = args};
    baton_enqueued out = {0};
    FUZZ_CHECK(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK);
    int rc = baton_enqueue_on_sqlite(client, db, &out, &spec, 1);
    if (rc != BATON_OK) {
        FUZZ_CHECK(rc == BATON_EINVALID);
        fuzz_check_message();
    } else {
        sqlite3_stmt *st;
        FUZZ_CHECK(sqlite3_prepare_v2(db, "SELECT concurrency_key, length(CAST(concurrency_key AS BLOB))"
                                          " FROM baton_jobs WHERE id = ?", -1, &st, NULL) == SQLITE_OK);
        sqlite3_bind_int64(st, 1, out.id);
        FUZZ_CHECK(sqlite3_step(st) == SQLITE_ROW);
        const char *key = (const char *)sqlite3_column_text(st, 0);
        FUZZ_CHECK(key && strncmp(key, "Fuzz/", 5) == 0 && bt_utf8_valid(key));
        FUZZ_CHECK(strlen(key) == (size_t)sqlite3_column_int64(st, 1));
        if (!strchr(text, '{'))
            FUZZ_CHECK(!strcmp(key + 5, text));
        /* A template of one top-level placeholder keeps all of a text value. */
        size_t n = strlen(text);
        if (n > 2 && text[0] == '{' && text[n - 1] == '}' && strcspn(text + 1, "{}.") == n - 2) {
            json_t *all = json_loads(args, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            text[n - 1] = '\0';
            json_t *v = json_object_get(all, text + 1);
            if (json_is_string(v))
                FUZZ_CHECK(strlen(key + 5) == json_string_length(v) && !strcmp(key + 5, json_string_value(v)));
            json_decref(all);
        }
        sqlite3_finalize(st);
    }
    FUZZ_CHECK(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    free(text);
    return 0;
}
