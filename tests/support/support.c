/* support.c: see support.h. */
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

extern char **environ;

enum { SKIPPED_EXIT = 77 }; /* CTest's SKIP_RETURN_CODE for the .pg tests */

int test_on_postgres(void)
{
    const char *driver = getenv("BATON_TEST_DRIVER");
    return driver && strcmp(driver, "postgres") == 0;
}

/* A .pg test without a server to run against is skipped as a whole, before cmocka starts. */
__attribute__((constructor)) static void skip_without_server(void)
{
    const char *server = getenv("BATON_TEST_PG_URL");
    if (test_on_postgres() && !(server && *server)) {
        fprintf(stderr, "skipped: BATON_TEST_PG_URL names no PostgreSQL server (./run test starts one)\n");
        _exit(SKIPPED_EXIT);
    }
}

static void admin_exec(const char *sql)
{
    bt_store *s = test_db_open(getenv("BATON_TEST_PG_URL"));
    test_db_exec(s, sql);
    bt_store_close(s);
}

void test_db_create(char *url, size_t cap, const char *dir, const char *name)
{
    if (!test_on_postgres()) {
        snprintf(url, cap, "sqlite:%s/%s.db", dir, name);
        return;
    }
    static atomic_int next;
    char db[96], sql[160];
    snprintf(db, sizeof db, "baton_test_%d_%d_%s", (int)getpid(), atomic_fetch_add(&next, 1), name);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    admin_exec(sql);
    bt_url_with_database(url, cap, getenv("BATON_TEST_PG_URL"), db);
}

void test_db_drop(const char *url)
{
    if (!test_on_postgres())
        return;
    const char *db = strrchr(url, '/');
    char sql[160];
    /* FORCE ends the connections of workers a failed test left behind. */
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %.*s WITH (FORCE)", (int)strcspn(db + 1, "?"), db + 1);
    admin_exec(sql);
}


char *tmpdir_make(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/baton-test-XXXXXX", base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return strdup(dir);
}

void tmpdir_remove(char *dir)
{
    if (!dir)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    free(dir);
}

const char *path_join(const char *dir, const char *name)
{
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

int poll_until(int (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t deadline = bt_mono_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (cond(arg))
            return 1;
        if (bt_mono_ns() > deadline)
            return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* holding counts the processes other than this one with a file open whose path begins
 * with prefix. */
static int holding(const char *prefix)
{
    int n = 0;
    DIR *procs = opendir("/proc");
    for (struct dirent *e; procs && (e = readdir(procs));) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == getpid())
            continue;
        char fds[300];
        snprintf(fds, sizeof fds, "/proc/%s/fd", e->d_name);
        DIR *d = opendir(fds);
        int holds = 0;
        for (struct dirent *fd; d && !holds && (fd = readdir(d));) {
            char link[600], target[4200];
            snprintf(link, sizeof link, "%s/%s", fds, fd->d_name);
            ssize_t len = readlink(link, target, sizeof target - 1);
            holds = len > 0 && (target[len] = '\0', strncmp(target, prefix, strlen(prefix)) == 0);
        }
        if (d)
            closedir(d);
        n += holds;
    }
    if (procs)
        closedir(procs);
    return n;
}

int wait_none_holding(const char *prefix, int timeout_ms)
{
    int64_t deadline = bt_mono_ns() + (int64_t)timeout_ms * 1000000;
    int n;
    while ((n = holding(prefix)) && bt_mono_ns() < deadline) { /* a scan of /proc is not free */
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return n;
}

static const char *baton_bin(void)
{
    const char *bin = getenv("BATON_BIN");
    return bin && *bin ? bin : "baton";
}

static void exec_baton(const char *const *args)
{
    size_t n = 0;
    while (args[n])
        n++;
    const char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = baton_bin();
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = args[i];
    execve(argv[0], (char *const *)argv, environ);
    _exit(127);
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static int decode_status(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

run_result baton_run(const char *stdin_text, const char *const *args)
{
    int in[2], out[2], err[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(err), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(in[0]); close(in[1]); close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        exec_baton(args);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    signal(SIGPIPE, SIG_IGN);
    size_t in_len = stdin_text ? strlen(stdin_text) : 0, in_off = 0;
    if (in_len == 0) {
        close(in[1]);
        in[1] = -1;
    } else {
        fcntl(in[1], F_SETFL, O_NONBLOCK);
    }
    run_result r = {0};
    size_t out_len = 0, err_len = 0;
    append(&r.out, &out_len, "", 0);
    append(&r.err, &err_len, "", 0);
    int open_fds = 2;
    while (open_fds > 0 || in[1] >= 0) {
        struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        char buf[65536];
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t n = read(fds[i].fd, buf, sizeof buf);
                if (n > 0) {
                    if (i == 0)
                        append(&r.out, &out_len, buf, (size_t)n);
                    else
                        append(&r.err, &err_len, buf, (size_t)n);
                } else if (n == 0 || errno != EINTR) {
                    close(fds[i].fd);
                    if (i == 0)
                        out[0] = -1;
                    else
                        err[0] = -1;
                    open_fds--;
                }
            }
        }
        if (in[1] >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(in[1], stdin_text + in_off, in_len - in_off);
            if (n > 0)
                in_off += (size_t)n;
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                in_off = in_len;
            if (in_off >= in_len) {
                close(in[1]);
                in[1] = -1;
            }
        }
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r.status = decode_status(st);
    return r;
}

run_result baton_runv(const char *stdin_text, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, stdin_text);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 63)
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return baton_run(stdin_text, args);
}

void run_result_free(run_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

static pid_t spawn(const char *log_path, const char *const *args, int own_group)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (own_group)
            setpgid(0, 0);
        int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        exec_baton(args);
    }
    return pid;
}

pid_t baton_spawn(const char *log_path, const char *const *args) { return spawn(log_path, args, 0); }

pid_t baton_spawn_group(const char *log_path, const char *const *args) { return spawn(log_path, args, 1); }

int wait_exit(pid_t pid, int timeout_ms)
{
    int64_t deadline = bt_mono_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return decode_status(st);
        if (bt_mono_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    char chunk[65536];
    size_t n;
    append(&buf, &len, "", 0);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        append(&buf, &len, chunk, n);
    fclose(f);
    return buf;
}

void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

int count_lines(const char *path)
{
    char *text = read_file(path);
    if (!text)
        return 0;
    int n = 0;
    for (char *p = text; *p; p++)
        n += *p == '\n';
    free(text);
    return n;
}

bt_store *test_db_open(const char *url)
{
    bt_store *s = NULL;
    if (bt_store_open(&s, url) != BATON_OK)
        fail_msg("cannot open %s: %s", url, baton_error_last());
    return s;
}

void test_db_exec(bt_store *s, const char *sql)
{
    if (s->ops->exec_script(s, sql) != BATON_OK)
        fail_msg("%s: %s", sql, baton_error_last());
}

int64_t test_db_int(bt_store *s, const char *sql)
{
    int64_t v = 0;
    if (bt_exec_dynamic(s, sql, NULL, 0, bt_row_first_int, &v, NULL) != BATON_OK)
        fail_msg("%s: %s", sql, baton_error_last());
    return v;
}

typedef struct lines {
    char *text;
    size_t len;
} lines;

static int append_line(bt_row *row, void *payload)
{
    lines *l = payload;
    const char *v = bt_col_null(row, 0) ? "NULL" : bt_col_text(row, 0);
    append(&l->text, &l->len, v, strlen(v));
    append(&l->text, &l->len, "\n", 1);
    return 0;
}

char *test_db_lines(bt_store *s, const char *sql)
{
    lines l = {NULL, 0};
    append(&l.text, &l.len, "", 0);
    if (bt_exec_dynamic(s, sql, NULL, 0, append_line, &l, NULL) != BATON_OK)
        fail_msg("%s: %s", sql, baton_error_last());
    return l.text;
}

int lib_setup(void **state)
{
    lib_fixture *f = calloc(1, sizeof *f);
    f->dir = tmpdir_make();
    test_db_create(f->url, sizeof f->url, f->dir, "baton");
    assert_int_equal(baton_open(&f->client, f->url), BATON_OK);
    assert_int_equal(baton_migrate(f->client), BATON_OK);
    *state = f;
    return 0;
}

int lib_teardown(void **state)
{
    lib_fixture *f = *state;
    baton_close(f->client);
    test_db_drop(f->url);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

json_t *job_json(baton_client *c, int64_t id)
{
    char *text;
    assert_int_equal(baton_job_json(c, id, &text), BATON_OK);
    json_t *j = json_loads(text, 0, NULL);
    baton_free(text);
    assert_non_null(j);
    return j;
}

const char *job_status(baton_client *c, int64_t id)
{
    static _Thread_local char buf[32];
    json_t *j = job_json(c, id);
    snprintf(buf, sizeof buf, "%s", json_string_value(json_object_get(j, "status")));
    json_decref(j);
    return buf;
}

typedef struct status_wait {
    baton_client *c;
    int64_t id;
    const char *status;
} status_wait;

static int has_status(void *p)
{
    status_wait *w = p;
    return strcmp(job_status(w->c, w->id), w->status) == 0;
}

void wait_status(baton_client *c, int64_t id, const char *status)
{
    status_wait w = {c, id, status};
    if (!poll_until(has_status, &w, 10000))
        fail_msg("job %lld did not become %s (is %s)", (long long)id, status, job_status(c, id));
}

static void *worker_main(void *w) { return (void *)(intptr_t)baton_worker_run(w); }

running_worker worker_start_with(baton_client *c, const baton_worker_options *o)
{
    running_worker rw;
    assert_int_equal(baton_worker_new(&rw.worker, c, o), BATON_OK);
    assert_int_equal(pthread_create(&rw.thread, NULL, worker_main, rw.worker), 0);
    return rw;
}

running_worker worker_start(baton_client *c, const char *queues, int threads)
{
    baton_worker_options o = BATON_WORKER_OPTIONS_INIT;
    o.queues = queues;
    o.threads = threads;
    o.polling_interval = 0.01;
    return worker_start_with(c, &o);
}

void worker_stop(running_worker *rw)
{
    baton_worker_stop(rw->worker, 0);
    void *result;
    pthread_join(rw->thread, &result);
    assert_int_equal((int)(intptr_t)result, BATON_OK);
    baton_worker_free(rw->worker);
}
