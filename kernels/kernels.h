/*
 * kernels/kernels.h — the CUDA kernels of the GPU backend, behind a plain C ABI.
 *
 * Every launcher takes device pointers, sizes, the activation dtype (F32, F16 or BF16; all
 * arithmetic is f32) and a cudaStream_t passed as void * so that C callers need no CUDA
 * header. Launchers return 0 or a CUDA error code (cudaError_t as int), or LUNAR_CUDA_EARG
 * when the arguments are outside what the kernel supports; the backend turns a non-zero
 * return into an engine error naming the op. Nothing here allocates: scratch comes from the
 * caller, sized by the *_workspace_size() functions, so every launch can be captured in a
 * CUDA graph. Row strides are in elements. Layouts follow lunar/batch.h: the KV cache of a
 * layer is [num_blocks][block_size][num_kv_heads][head_dim] for K and the same for V.
 */
#ifndef LUNAR_KERNELS_H
#define LUNAR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/batch.h"
#include "lunar/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LUNAR_CUDA_EARG (-1)

/* out[t] = table[ids[t]] ([vocab][hidden]); an id outside [0, vocab) gives a zero row. */
int lunar_cuda_embedding(void *out, const void *table, const int32_t *ids, int num_tokens,
                         int hidden, int vocab, lunar_dtype_t dt, void *stream);

/* RMSNorm over rows of `hidden`, HF Llama rounding (normalize in f32, round, times weight).
 * residual == NULL: out = norm(x). Otherwise the fused residual add of a layer boundary:
 * residual = x + residual (rounded to dt), out = norm(residual). out may equal x. */
int lunar_cuda_rmsnorm(void *out, const void *x, void *residual, const void *weight, int rows,
                       int hidden, float eps, lunar_dtype_t dt, void *stream);

/* RoPE in place on q [T][q_stride] (num_heads heads of head_dim from column 0) and k
 * [T][k_stride] (num_kv_heads heads), HF rotate_half layout over the first rotary_dim dims of
 * each head. angle = (float)positions[t] * inv_freq[i]; cos and sin are scaled by attn_factor.
 * inv_freq [rotary_dim/2] carries every scaling variant (computed on the host). k may be NULL. */
int lunar_cuda_rope(void *q, void *k, const int32_t *positions, const float *inv_freq,
                    int num_tokens, int num_heads, int num_kv_heads, int head_dim, int rotary_dim,
                    int q_stride, int k_stride, float attn_factor, lunar_dtype_t dt, void *stream);

/* out[t][i] = silu(x[t][i]) * x[t][inter + i]: x is the fused gate|up GEMM output [T][2*inter]. */
int lunar_cuda_silu_and_mul(void *out, const void *x, int num_tokens, int inter, lunar_dtype_t dt,
                            void *stream);

/* Writes token t's K and V rows (num_kv_heads*head_dim elements at k + t*k_stride) into slot
 * slot_mapping[t] of the caches; a negative slot (padding) is skipped. */
int lunar_cuda_kv_write(void *k_cache, void *v_cache, const void *k, const void *v,
                        const int64_t *slot_mapping, int num_tokens, int num_kv_heads,
                        int head_dim, int k_stride, int v_stride, lunar_dtype_t dt, void *stream);

/* Causal attention of a flat varlen batch over the paged KV cache (the new tokens' K/V already
 * written). Sequence s owns query rows [query_start[s], query_start[s+1]); its context is
 * seq_lens[s] tokens and query i of it sits at position seq_lens[s] - qlen + i. Prefills,
 * chunked prefills and decodes mix freely. q [T][q_stride], out [T][out_stride], head h at
 * column h*head_dim. GQA: query head h reads kv head h / (num_heads / num_kv_heads).
 * sliding_window > 0 limits each query to its last `sliding_window` keys.
 * head_dim must be a multiple of 8 and at most 256; q, out and the caches 16-byte aligned.
 * While the batch alone would not fill the GPU, contexts are split into partitions of at least
 * LUNAR_ATTN_PARTITION keys (flash-decoding) and merged; max_seq_len bounds seq_lens and sizes
 * the split (a CUDA graph passes the largest it will replay). workspace must hold
 * lunar_cuda_attention_workspace_size() bytes for the same sizes. */
#define LUNAR_ATTN_PARTITION 128
size_t lunar_cuda_attention_workspace_size(int num_tokens, int num_seqs, int num_heads,
                                           int num_kv_heads, int head_dim, int max_seq_len);
int lunar_cuda_attention(void *out, const void *q, const void *k_cache, const void *v_cache,
                         const int32_t *query_start, const int32_t *seq_lens,
                         const int32_t *block_tables, int max_blocks_per_seq, int num_seqs,
                         int num_tokens, int max_seq_len, int num_heads, int num_kv_heads,
                         int head_dim, int block_size, float scale, int sliding_window,
                         int q_stride, int out_stride, void *workspace, lunar_dtype_t dt,
                         void *stream);

/* out[r] = the first index of the largest value of logits row r ([rows][vocab], f32). */
int lunar_cuda_argmax(int32_t *out, const float *logits, int rows, int vocab, void *stream);

/* Samples one token per logits row, bit-for-bit the CPU sampler's algorithm: suppression and
 * penalties, greedy below temperature 1e-5, else probabilities relative to the best, min-p,
 * top-k and top-p in (probability desc, id asc) order, one uniform draw from
 * (seed, seq_index, position). Penalty entries of row r are pen_ids/pen_counts
 * [pen_start[r], pen_start[r+1]): each token of prompt ∪ output ∪ suppressed once, with its
 * count in the output so far, or -1 to suppress it (-inf). logits [rows][vocab] f32 is read
 * only; work [rows][vocab] f32 is scratch. params [rows] on the device: the engine's rows
 * (lunar/batch.h) as they are, their logprobs field unused here. */
int lunar_cuda_sample(int32_t *tokens, const float *logits, float *work, int rows, int vocab,
                      const lunar_sample_row_t *params, const int32_t *pen_start,
                      const int32_t *pen_ids, const int32_t *pen_counts, void *stream);

/* log_softmax of raw logits rows: lp[r] = logprob of tokens[r] (tokens/lp may be NULL), and the
 * top_n best (ids, logprobs) in (value desc, id asc) order into top_ids/top_lp [rows][top_n]. */
int lunar_cuda_logprobs(float *lp, int32_t *top_ids, float *top_lp, const float *logits,
                        const int32_t *tokens, int rows, int vocab, int top_n, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_KERNELS_H */
