/*
 * kernels/cuda_backend_ops.h — the kernels behind the CUDA backend's op table
 * (runtime/cuda/backend.c), one launcher per op of backend/backend.h with exactly that op's
 * semantics (f32 RoPE table, separate gate and up, f32 norm weights, positions from the batch).
 *
 * They are written for correctness first: simple grids, f32 arithmetic inside every kernel,
 * activations stored as `dt` (F32, F16 or BF16); 8-wide forms where a step's profile showed
 * the need (see cuda_backend_ops.cu). Attention is kernels/attention.cu's
 * (kernels.h); the plain attention kernel here is the fallback for other head sizes. Launchers take device
 * pointers and a cudaStream_t as void *, and return 0 or a cudaError_t as int
 * (LUNAR_CUDA_BE_EARG for arguments outside what a kernel supports).
 */
#ifndef LUNAR_CUDA_BACKEND_OPS_H
#define LUNAR_CUDA_BACKEND_OPS_H

#include <stdint.h>

#include "lunar/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LUNAR_CUDA_BE_EARG (-1)

/* x[t] = E[ids[t]], E [vocab][dim] and x both of dtype dt. */
int lunar_cuda_be_embed(void *x, const void *E, const int32_t *ids, int T, int dim, lunar_dtype_t dt, void *stream);
/* resid == NULL: out = rmsnorm(x) * w. Else resid += x (rounded to dt), out = rmsnorm(resid) * w.
 * R rows of dim; w f32 [dim]; out may equal x. */
int lunar_cuda_be_rmsnorm(void *out, const void *x, void *resid, const float *w, int R, int dim, float eps,
                          lunar_dtype_t dt, void *stream);
/* RoPE in place with the runner's table cs [T][rot] (rot/2 cosines, then rot/2 sines). */
int lunar_cuda_be_rope(void *q, void *k, const float *cs, int T, int nq, int nk, int hd, int rot, lunar_dtype_t dt,
                       void *stream);
/* out[i] = silu(gate[i]) * up[i]. */
int lunar_cuda_be_silu_mul(void *out, const void *gate, const void *up, long n, lunar_dtype_t dt, void *stream);
/* y[t][n] += bias[n] over T rows of N. */
int lunar_cuda_be_add_bias(void *y, const float *bias, int T, int N, lunar_dtype_t dt, void *stream);
/* k/v rows [T][nk*hd] (dt) to the caches (kv_dt) at slot[t]; a negative slot is skipped. */
int lunar_cuda_be_kv_write(void *kc, void *vc, const void *k, const void *v, const int64_t *slot, int T, int nk,
                           int hd, lunar_dtype_t dt, lunar_dtype_t kv_dt, void *stream);
/* backend.h's attention over the paged cache, the plain kernel (any head_dim up to 256): the
 * fallback for head_dim not a multiple of 8; seq_of[t] is token t's sequence. */
int lunar_cuda_be_attention(void *out, const void *q, const void *kc, const void *vc, const int32_t *seq_of,
                            const int32_t *positions, const int32_t *block_tables, int max_blocks, int T, int nq,
                            int nk, int hd, int block_size, int window, float scale, lunar_dtype_t dt,
                            lunar_dtype_t kv_dt, void *stream);
/* Segment i of a stacked GEMM's output: columns [sum n[<i], + n[i]) of each row, to y[i]
 * ([rows][n[i]]) plus bias[i] (f32 [n[i]] or NULL). */
#define LUNAR_CUDA_BE_SEGS 3
typedef struct lunar_cuda_be_segs {
    void *y[LUNAR_CUDA_BE_SEGS];
    const float *bias[LUNAR_CUDA_BE_SEGS];
    int n[LUNAR_CUDA_BE_SEGS];
    int count;
} lunar_cuda_be_segs_t;
/* src [T][Ntot] (Ntot = sum of n[i]) to the segments of out. */
int lunar_cuda_be_split_cols(const lunar_cuda_be_segs_t *out, const void *src, int T, int Ntot, lunar_dtype_t dt,
                             void *stream);
/* n elements of a dummy tensor (lunar_model_dummy_params' generator) in dt at dst. */
/* y[N] = W[N][K] . x[K] (one token), 16-bit x and W, f32 accumulation, y in the act dtype or
 * f32 (y_f32). K % 8 == 0 and 16-byte aligned x and W, else LUNAR_CUDA_BE_EARG. */
int lunar_cuda_be_gemv(void *y, int y_f32, const void *x, const void *W, int N, int K, lunar_dtype_t dt,
                       void *stream);
int lunar_cuda_be_dummy_fill(void *dst, lunar_dtype_t dt, uint64_t hash, size_t n, float scale, int is_norm,
                             void *stream);
/* dst[i] = src[idx[i]] for n rows of `dim` elements of dt. */
int lunar_cuda_be_gather_rows(void *dst, const void *src, const int32_t *idx, int n, int dim, lunar_dtype_t dt,
                              void *stream);

#ifdef __cplusplus
}
#endif
#endif
