/* hello_worker.c: the smallest complete Baton program. It registers a C job class,
 * enqueues a few jobs, performs them on a worker thread and stops once all are done.
 *
 *   ./example_hello_worker [sqlite:hello.db]
 */
#include <baton.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

enum { JOBS = 5 };

static atomic_int performed;

static int greet(baton_job *job, void *payload)
{
    baton_worker **worker = payload;
    printf("job %lld says hello to %s\n", (long long)baton_job_id(job), baton_job_arguments(job));
    if (atomic_fetch_add(&performed, 1) + 1 == JOBS)
        baton_worker_stop(*worker, 0);
    return 0;
}

static void *work(void *worker) { return (void *)(intptr_t)baton_worker_run(worker); }

int main(int argc, char **argv)
{
    baton_client *client;
    baton_worker *worker = NULL;
    if (baton_open(&client, argc > 1 ? argv[1] : "sqlite:hello.db") != BATON_OK ||
        baton_migrate(client) != BATON_OK) {
        fprintf(stderr, "hello_worker: %s\n", baton_error_last());
        return 1;
    }
    baton_class_options greet_class = BATON_CLASS_OPTIONS_INIT;
    greet_class.perform = greet;
    greet_class.payload = &worker;
    baton_class_register(client, "Greet", &greet_class);

    baton_job_spec specs[JOBS];
    static const char *const names[JOBS] = {"[\"ada\"]", "[\"grace\"]", "[\"edsger\"]", "[\"barbara\"]", "[\"ken\"]"};
    for (int i = 0; i < JOBS; i++)
        specs[i] = (baton_job_spec){"Greet", names[i], NULL};
    int64_t ids[JOBS];
    if (baton_enqueue_many(client, ids, specs, JOBS) != BATON_OK ||
        baton_worker_new(&worker, client, NULL) != BATON_OK) {
        fprintf(stderr, "hello_worker: %s\n", baton_error_last());
        return 1;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, work, worker);
    void *result;
    pthread_join(thread, &result);
    baton_worker_free(worker);
    baton_close(client);
    return (int)(intptr_t)result == BATON_OK ? 0 : 1;
}
