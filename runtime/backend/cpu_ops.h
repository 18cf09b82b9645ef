/*
 * backend/cpu_ops.h — the CPU backend's ops, one per entry of backend.h's table (which states
 * what each must compute); backend/cpu.c puts them in the table. Activations are row-major
 * f32 [tokens][dim]; weights are lunar_tensor_t in f32/f16/bf16, Linear layout [out][in]. The
 * KV cache of a layer is K and V, each [num_blocks][block_size][num_kv_heads][head_dim] f32.
 */
#ifndef LUNAR_BACKEND_CPU_OPS_H
#define LUNAR_BACKEND_CPU_OPS_H

#include <stdint.h>

#include "backend/pool.h"
#include "lunar/batch.h"
#include "lunar/model.h"

typedef struct ops_ctx {
    pool_t *pool;
    float **scratch;      /* per thread: GEMM_NB rows of max_k floats (+ head_dim) */
    float *gather;        /* GEMM_TB rows of max_k floats: the rows op_logits multiplies */
    int max_k;
} ops_ctx_t;

#define GEMM_NB 8         /* weight rows converted and kept hot per task */
#define GEMM_TB 64        /* tokens per task */

/* y[T][N] = x[T][K] · Wᵀ (+ bias[N]); W [N][K] any float dtype; bias f32 or NULL. */
void op_gemm(ops_ctx_t *o, float *y, const float *x, int T, const lunar_tensor_t *W, const float *bias);
/* out[i] = W . x[rows[i]] for i < n (the logits of the wanted rows), through `gather` in
 * GEMM_TB-row chunks. */
void op_logits(ops_ctx_t *o, float *out, const float *x, const int32_t *rows, int n, const lunar_tensor_t *W);
/* x[t] = E[ids[t]] */
void op_embed(ops_ctx_t *o, float *x, const int32_t *ids, int T, const lunar_tensor_t *E);
/* out[t] = x[t] / rms(x[t]) * w, over `dim`; out may equal x. */
void op_rmsnorm(ops_ctx_t *o, float *out, const float *x, int T, int dim, const float *w, float eps);
/* resid += delta; out = rmsnorm(resid) (the fused residual add of every layer boundary). */
void op_add_rmsnorm(ops_ctx_t *o, float *resid, const float *delta, float *out, int T, int dim,
                    const float *w, float eps);
/* RoPE on q [T][nq*hd] and k [T][nk*hd] in place, halves layout (HF rotate_half), the first
 * `rot` dims of each head; cs [T][rot] holds cos then sin (rot/2 each) per token. */
void op_rope(ops_ctx_t *o, float *q, float *k, int T, int nq, int nk, int hd, int rot, const float *cs);
/* out = silu(gate) * up, elementwise over T*n. */
void op_silu_mul(ops_ctx_t *o, float *out, const float *gate, const float *up, long n);
/* Writes k/v [T][nk*hd] into the layer's caches at slots. */
void op_kv_write(ops_ctx_t *o, float *kc, float *vc, const float *k, const float *v, int T,
                 int nk, int hd, const int64_t *slots);
/* Causal attention of every batch token over its sequence's paged context (positions
 * 0..pos, or the last `window` of them), GQA; out [T][nq*hd]. seq_of[t] = t's sequence. */
void op_attention(ops_ctx_t *o, float *out, const float *q, const float *kc, const float *vc,
                  const lunar_batch_t *b, const int32_t *seq_of, int nq, int nk, int hd,
                  int block_size, int window, float scale);

#endif
