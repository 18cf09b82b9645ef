/*
 * backend/pool.c — see pool.h. Workers sleep on a condition variable between runs; a run bumps a
 * generation counter, and the last finisher wakes the caller.
 */
#include "backend/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/error.h"

struct pool {
    int n;                  /* threads including the caller */
    pthread_t *th;
    void *args;             /* worker_arg_t[n] */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen;
    int quit;
    pool_fn fn;
    void *ctx;
    int ntasks;
    int next;               /* atomic: next task */
    int active;             /* workers still in this run */
};

static void work(pool_t *p, pool_fn fn, void *ctx, int ntasks, int thread)
{
    for (;;) {
        int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= ntasks) break;
        fn(ctx, i, thread);
    }
}

typedef struct { pool_t *p; int index; } worker_arg_t;

static void *worker(void *arg)
{
    worker_arg_t *wa = arg;
    pool_t *p = wa->p;
    int index = wa->index;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int ntasks = p->ntasks;
        pthread_mutex_unlock(&p->mu);
        work(p, fn, ctx, ntasks, index);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pool_create(int nthreads, pool_t **out)
{
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    pool_t *p = calloc(1, sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "thread pool: out of memory");
    p->n = nthreads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->th = calloc((size_t)nthreads, sizeof *p->th);
    worker_arg_t *args = calloc((size_t)nthreads, sizeof *args);
    p->args = args;
    if (!p->th || !args) { p->n = 1; pool_free(p); return lunar_error(LUNAR_ENOMEM, "thread pool: out of memory"); }
    for (int i = 1; i < nthreads; i++) {
        args[i].p = p;
        args[i].index = i;
        if (pthread_create(&p->th[i], NULL, worker, &args[i]) != 0) {
            p->n = i;
            pool_free(p);
            return lunar_error(LUNAR_ENOMEM, "thread pool: cannot start thread %d", i);
        }
    }
    *out = p;
    return 0;
}

void pool_free(pool_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->th && p->th[i]) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->th);
    free(p->args);
    free(p);
}

int pool_threads(const pool_t *p) { return p->n; }

void pool_run(pool_t *p, pool_fn fn, void *ctx, int ntasks, double cost)
{
    if (ntasks <= 0) return;
    if (p->n == 1 || ntasks == 1 || cost < POOL_SERIAL_WORK) {
        for (int i = 0; i < ntasks; i++) fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->next = 0;
    p->active = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    work(p, fn, ctx, ntasks, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
