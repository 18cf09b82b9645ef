/*
 * backend/pool.h — a persistent thread pool for the CPU backend's ops.
 *
 * pool_run(p, fn, ctx, n) calls fn(ctx, i, thread) for every i < n across the pool's threads and the
 * caller's, and returns when all are done. Threads are created once; a run allocates nothing.
 * Tasks are handed out through one atomic counter, so uneven tasks balance themselves.
 */
#ifndef LUNAR_BACKEND_POOL_H
#define LUNAR_BACKEND_POOL_H

typedef struct pool pool_t;
typedef void (*pool_fn)(void *ctx, int task, int thread); /* thread: 0..threads-1 */

int pool_create(int nthreads, pool_t **out); /* nthreads total, caller included; 0 = all cores */
void pool_free(pool_t *p);
int pool_threads(const pool_t *p);
void pool_run(pool_t *p, pool_fn fn, void *ctx, int ntasks);

#endif
