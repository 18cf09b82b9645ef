/*
 * backend/pool.h — a persistent thread pool for the CPU backend's ops.
 *
 * pool_run(p, fn, ctx, n, cost) calls fn(ctx, i, thread) for every i < n across the pool's
 * threads and the caller's, and returns when all are done. Threads are created once; a run
 * allocates nothing. Tasks are handed out through one atomic counter, so uneven tasks balance
 * themselves. `cost` estimates the run's multiply-adds: under POOL_SERIAL_WORK the caller runs
 * every task itself, because waking the workers and waiting for the last costs more than the
 * work (measured: stories260K's 64x64 decode GEMMs ran 5x slower on 2 threads than on 1). The
 * results are the same bits either way: a task computes its outputs the same on any thread.
 */
#ifndef LUNAR_BACKEND_POOL_H
#define LUNAR_BACKEND_POOL_H

typedef struct pool pool_t;
typedef void (*pool_fn)(void *ctx, int task, int thread); /* thread: 0..threads-1 */

int pool_create(int nthreads, pool_t **out); /* nthreads total, caller included; 0 = all cores */
void pool_free(pool_t *p);
int pool_threads(const pool_t *p);
#define POOL_SERIAL_WORK 65536.0
void pool_run(pool_t *p, pool_fn fn, void *ctx, int ntasks, double cost);

#endif
