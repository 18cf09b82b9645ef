/*
 * backend/cpu.c — the CPU backend: backend.h's table filled with the ops of cpu_ops.c.
 *
 * Backend memory is host memory, so copies are memcpy and the runner's buffers go to the ops
 * as they are. alloc touches every page at once (see backend.h), so a KV cache is resident
 * from start-up, as `lunar memory` plans it, rather than creeping up as blocks are first used.
 * The thread pool, the per-thread GEMM/attention scratch and the step's token -> sequence map
 * are made here once; no op allocates.
 */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu_ops.h"
#include "core/error.h"

typedef struct cpu_backend {
    lunar_backend_t be;   /* first: a lunar_backend_t* is a cpu_backend_t* */
    ops_ctx_t ops;
    int nthreads;
    int max_tokens;
    int32_t *seq_of;      /* [max_tokens]: the sequence of each token of the current step */
} cpu_backend_t;

#define CPU(be) (&((cpu_backend_t *)(be))->ops)

static void cpu_free(lunar_backend_t *be)
{
    cpu_backend_t *c = (cpu_backend_t *)be;
    if (!c) return;
    if (c->ops.pool) pool_free(c->ops.pool);
    if (c->ops.scratch)
        for (int i = 0; i < c->nthreads; i++) free(c->ops.scratch[i]);
    free(c->ops.scratch);
    free(c->seq_of);
    free(c->ops.gather);
    free(c);
}

static void *cpu_alloc(lunar_backend_t *be, size_t bytes)
{
    char *p = calloc(bytes ? bytes : 1, 1);
    if (p) be->alloc_bytes += bytes;
    /* calloc's fresh pages are mapped lazily; writing one byte per page makes them resident
     * (through a volatile pointer, which the compiler may not drop) */
    volatile char *v = p;
    if (p)
        for (size_t i = 0; i < bytes; i += 4096) v[i] = 0;
    return p;
}

static void cpu_dealloc(lunar_backend_t *be, void *p) { (void)be, free(p); }
static void cpu_copy(lunar_backend_t *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (dst != src && bytes) memcpy(dst, src, bytes);
}
/* The CPU reads the host tensors in place; a model whose dummy matrices were left for a GPU to
 * make (dummy_on_device) has none to read. */
static int cpu_prepare(lunar_backend_t *be, const lunar_model_t *m)
{
    (void)be;
    lunar_dummy_params_t p;
    for (int i = 0; m && i < lunar_model_tensor_count(m); i++)
        if (lunar_model_dummy_params(m, lunar_model_tensor(m, i), &p))
            return lunar_error(LUNAR_EINVAL, "cpu backend: tensor %s has no host data (dummy weights made on the "
                               "GPU); load without dummy_on_device to run on the CPU", lunar_model_tensor(m, i)->name);
    return 0;
}
static int cpu_end_step(lunar_backend_t *be) { (void)be; return 0; }

static int cpu_begin_step(lunar_backend_t *be, const lunar_batch_t *b)
{
    cpu_backend_t *c = (cpu_backend_t *)be;
    if (b->num_tokens > c->max_tokens)
        return lunar_error(LUNAR_ERANGE, "cpu backend: %d tokens in a step sized for %d", b->num_tokens, c->max_tokens);
    for (int s = 0; s < b->num_seqs; s++)
        for (int t = b->query_start[s]; t < b->query_start[s + 1]; t++) c->seq_of[t] = s;
    return 0;
}

static void cpu_embed(lunar_backend_t *be, void *x, const lunar_batch_t *b, const lunar_tensor_t *E)
{
    op_embed(CPU(be), x, b->token_ids, b->num_tokens, E);
}
static void cpu_rmsnorm(lunar_backend_t *be, void *out, const void *x, int R, int dim, const float *w, float eps)
{
    op_rmsnorm(CPU(be), out, x, R, dim, w, eps);
}
static void cpu_add_rmsnorm(lunar_backend_t *be, void *resid, const void *delta, void *out, int R, int dim,
                            const float *w, float eps)
{
    op_add_rmsnorm(CPU(be), resid, delta, out, R, dim, w, eps);
}
static void cpu_gemm(lunar_backend_t *be, void *y, const void *x, int T, const lunar_tensor_t *W, const float *bias)
{
    op_gemm(CPU(be), y, x, T, W, bias);
}
static void cpu_rope(lunar_backend_t *be, void *q, void *k, int T, int nq, int nk, int hd, int rot, const float *cs)
{
    op_rope(CPU(be), q, k, T, nq, nk, hd, rot, cs);
}
static void cpu_silu_mul(lunar_backend_t *be, void *out, const void *gate, const void *up, long n)
{
    op_silu_mul(CPU(be), out, gate, up, n);
}
static void cpu_kv_write(lunar_backend_t *be, void *kc, void *vc, const void *k, const void *v,
                         const lunar_batch_t *b, int nk, int hd)
{
    op_kv_write(CPU(be), kc, vc, k, v, b->num_tokens, nk, hd, b->slot_mapping);
}
static void cpu_attention(lunar_backend_t *be, void *out, const void *q, const void *kc, const void *vc,
                          const lunar_batch_t *b, int nq, int nk, int hd, int block_size, int window, float scale)
{
    op_attention(CPU(be), out, q, kc, vc, b, ((cpu_backend_t *)be)->seq_of, nq, nk, hd, block_size, window, scale);
}

static void cpu_logits(lunar_backend_t *be, float *out, const void *x, const lunar_batch_t *b, int i0, int n_rows,
                       const lunar_tensor_t *W)
{
    op_logits(CPU(be), out, x, b->logits_indices + i0, n_rows, W);
}

int lunar_backend_cpu_create(const lunar_backend_params_t *p, lunar_backend_t **out)
{
    *out = NULL;
    if (p->max_k < 1 || p->head_dim < 1 || p->max_tokens < 1)
        return lunar_error(LUNAR_EINVAL, "cpu backend: max_k %d, max_tokens %d and head_dim %d must be >= 1", p->max_k,
                           p->max_tokens, p->head_dim);
    cpu_backend_t *c = calloc(1, sizeof *c);
    if (!c) return lunar_error(LUNAR_ENOMEM, "cpu backend: out of memory");
    c->be = (lunar_backend_t){
        .name = "cpu", .act_dtype = LUNAR_DTYPE_F32, .kv_dtype = LUNAR_DTYPE_F32, .host_memory = 1,
        .free = cpu_free, .alloc = cpu_alloc, .dealloc = cpu_dealloc, .copy_in = cpu_copy, .copy_out = cpu_copy,
        .prepare = cpu_prepare, .begin_step = cpu_begin_step, .end_step = cpu_end_step,
        .embed = cpu_embed, .rmsnorm = cpu_rmsnorm, .add_rmsnorm = cpu_add_rmsnorm, .gemm = cpu_gemm,
        .rope = cpu_rope, .silu_mul = cpu_silu_mul, .kv_write = cpu_kv_write, .attention = cpu_attention,
        .logits = cpu_logits,
    };
    /* For tests: claim CUDA graphs up to N tokens, so the runner gives decode steps their graph
     * shape (pad_decode) and CI checks the padding on the CPU. */
    const char *g = getenv("LUNAR_CPU_GRAPH_MAX_TOKENS");
    if (g) c->be.graph_max_tokens = atoi(g);
    c->max_tokens = p->max_tokens;
    int rc = pool_create(p->num_threads, &c->ops.pool);
    if (rc) {
        free(c);
        return rc;
    }
    c->nthreads = pool_threads(c->ops.pool);
    c->ops.max_k = p->max_k;
    c->seq_of = calloc((size_t)p->max_tokens, sizeof(int32_t));
    c->ops.scratch = calloc((size_t)c->nthreads, sizeof(float *));
    c->ops.gather = calloc((size_t)GEMM_TB * p->max_k, sizeof(float));
    int ok = c->seq_of && c->ops.scratch && c->ops.gather;
    for (int i = 0; ok && i < c->nthreads; i++) {
        /* GEMM: GEMM_NB converted weight rows; attention: one head's accumulator */
        c->ops.scratch[i] = calloc((size_t)GEMM_NB * p->max_k + p->head_dim, sizeof(float));
        ok = c->ops.scratch[i] != NULL;
    }
    if (!ok) {
        cpu_free(&c->be);
        return lunar_error(LUNAR_ENOMEM, "cpu backend: out of memory for scratch");
    }
    *out = &c->be;
    return 0;
}

int lunar_backend_create(const char *name, const lunar_backend_params_t *p, lunar_backend_t **out)
{
    *out = NULL;
    if (!name || !strcmp(name, "cpu")) return lunar_backend_cpu_create(p, out);
#ifdef LUNAR_HAVE_CUDA
    if (!strcmp(name, "cuda")) return lunar_backend_cuda_create(p, out);
    return lunar_error(LUNAR_EUNSUPPORTED, "backend \"%s\" is not available (cpu and cuda are)", name);
#else
    return lunar_error(LUNAR_EUNSUPPORTED, "backend \"%s\" is not available in this build (cpu is)", name);
#endif
}
