/*
 * backend/pool.c — see pool.h. Workers sleep on a condition variable between runs; a run bumps a
 * generation counter and wakes them. The caller works too and returns as soon as every task is
 * done, without waiting for workers that never got a task: on a machine whose other cores are
 * busy a woken worker may not be scheduled for milliseconds, and an op that waited for it to
 * check in took that long even when the caller had done all the work (measured: 2 threads ran
 * TinyStories-656K's decode at 0.6x the 1-thread rate while another job held a core).
 *
 * So a worker that wakes late must not take a task of a later run with the function and context
 * of the run it woke for (the caller's job context is gone by then): tasks are claimed with a
 * compare-and-swap on one 64-bit word holding the run's generation (high half) and the next task
 * (low half), and a claim of a stale generation fails. The caller waits for `finished` to reach
 * the run's task count; every claimed task completes before that, so nothing of a run outlives
 * its pool_run.
 */
#include "backend/pool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/error.h"

struct pool {
    int n;                  /* threads including the caller */
    pthread_t *th;
    void *args;             /* worker_arg_t[n] */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint32_t gen;           /* under mu */
    int quit;
    pool_fn fn;             /* the current run, under mu */
    void *ctx;
    int ntasks;
    uint64_t claim;         /* atomic: gen << 32 | next task */
    int finished;           /* atomic: tasks completed in the current run */
};

/* Runs tasks of generation g until none is left or a later run has begun. */
static void work(pool_t *p, uint32_t g, pool_fn fn, void *ctx, int ntasks, int thread)
{
    uint64_t c = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((uint32_t)(c >> 32) != g || (int)(uint32_t)c >= ntasks) return;
        if (!__atomic_compare_exchange_n(&p->claim, &c, c + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
        fn(ctx, (int)(uint32_t)c, thread);
        if (__atomic_add_fetch(&p->finished, 1, __ATOMIC_ACQ_REL) == ntasks) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
        c = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
    }
}

typedef struct { pool_t *p; int index; } worker_arg_t;

static void *worker(void *arg)
{
    worker_arg_t *wa = arg;
    pool_t *p = wa->p;
    int index = wa->index;
    uint32_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int ntasks = p->ntasks;
        pthread_mutex_unlock(&p->mu);
        work(p, seen, fn, ctx, ntasks, index);
        pthread_mutex_lock(&p->mu);
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
    uint32_t g = ++p->gen;
    if (g == 0) g = p->gen = 1; /* 0 is what a new worker has "seen" */
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    __atomic_store_n(&p->finished, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->claim, (uint64_t)g << 32, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    work(p, g, fn, ctx, ntasks, 0);
    if (__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) < ntasks) {
        pthread_mutex_lock(&p->mu);
        while (__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) < ntasks) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
