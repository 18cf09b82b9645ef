/*
 * backend/backend.h — the op set the model forward (runtime/runner/runner.c) is written
 * against: a table of function pointers that every backend fills (llama.cpp's ggml_backend
 * style). The forward is written once, token-major over a flat batch of many sequences
 * (lunar/batch.h), for prefill and decode alike; only this table differs between CPU and CUDA.
 *
 * This comment is the spec a backend must meet. The CPU backend (backend/cpu.c over
 * backend/cpu_ops.c) is the reference: tests/c/test_backend.c checks each of its ops against a
 * naive double-precision loop, and a device backend's ops are to be checked against the CPU's.
 *
 * MEMORY. Buffers an op takes are backend memory from alloc() (device memory on a GPU, host
 * memory on the CPU) unless marked "host". Activations are row-major [rows][width] elements of
 * act_dtype (CPU: F32; a GPU backend may use BF16/F16 and computes in f32 inside each op), hence
 * void *. Small f32 vectors (norm weights, biases, the RoPE table) are `const float *` backend
 * memory the runner converted and copied in. Ops are issued in order on one stream and return
 * nothing; a device backend records the first failure and reports it from end_step().
 *
 * WEIGHTS are the model's host lunar_tensor_t (f32/f16/bf16, Linear layout [out][in]).
 * prepare() runs once per model before any op: a device backend uploads every tensor there
 * (converting or fusing as it likes, e.g. q/k/v or gate/up) and later finds its copy by the
 * tensor pointer; the CPU backend reads the host tensor in place and converts f16/bf16 rows to
 * f32 inside the GEMM.
 *
 * THE STEP. begin_step(b) runs once per forward before any op that takes the batch `b` (host
 * memory); a device backend copies token_ids, positions, slot_mapping, query_start, seq_lens,
 * block_tables and logits_indices to the device there, and ops receive `b` afterwards only as
 * the handle of that step's metadata (they read the device copies). end_step() waits for the
 * step's ops and returns 0 or the first error. The runner has checked every index in `b`
 * (token ids, positions, slots, block tables, logits rows) before begin_step, so ops trust them.
 *
 * KV CACHE. Per layer one K and one V buffer, each [num_blocks][block_size][num_kv_heads]
 * [head_dim] elements of kv_dtype (CPU: F32). Token t's K and V rows go to slot
 * b->slot_mapping[t] = block * block_size + offset (-1: nowhere, for padding); sequence s reads position p at slot
 * block_tables[s][p / block_size] * block_size + p % block_size.
 *
 * NUMERICS. The CPU backend computes in f32 with a fixed reduction order per output element,
 * so no output depends on the other rows of the batch: a sequence's logits are the same bits
 * alone, batched, or with its prompt in chunks (tests/c/test_runner.c checks this). A device
 * backend in f32 (TF32 off) should agree with the CPU backend per op within 1e-5 relative to
 * the largest reference value (GEMM and attention 1e-4: their reduction order differs); with
 * bf16 activations within 2e-2; end to end its greedy tokens must match the transformers
 * fixtures the CPU passes (tests/fixtures/runner).
 */
#ifndef LUNAR_BACKEND_H
#define LUNAR_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/batch.h"
#include "lunar/model.h"

typedef struct lunar_backend lunar_backend_t;

typedef struct lunar_backend_params {
    int num_threads;   /* CPU threads including the caller; 0 = every core */
    int max_k;         /* widest GEMM inner dimension the forward will use */
    int max_tokens;    /* most tokens one step carries (max_num_batched_tokens) */
    int head_dim;
    int device;        /* GPU index (CUDA) */
    int enforce_eager; /* CUDA: every step eager, no CUDA graphs */
} lunar_backend_params_t;

struct lunar_backend {
    const char *name;         /* "cpu", "cuda" */
    lunar_dtype_t act_dtype;  /* activation elements between ops */
    lunar_dtype_t kv_dtype;   /* KV cache elements */
    int host_memory;          /* 1: backend memory is host memory (copies are memcpy) */
    uint64_t weight_bytes;    /* bytes prepare() holds for the weights (0: read in place) */
    uint64_t alloc_bytes;     /* bytes alloc() has handed out in all (dealloc does not subtract) */
    int graph_max_tokens;     /* decode steps of up to this many tokens replay CUDA graphs (0: none) */

    /* ---- lifetime, memory, step ---- */
    void (*free)(lunar_backend_t *be);
    /* `bytes` of zeroed backend memory, resident from now on (the CPU touches every page, as
     * a GPU reserves at start-up, so memory use is known before the first request); NULL
     * when out of memory. */
    void *(*alloc)(lunar_backend_t *be, size_t bytes);
    /* Frees p. A device backend also drops whatever it captured that may read p (the CUDA
     * backend's graphs hold buffer addresses), so the runner can free and reallocate its KV
     * cache (lunar_runner_set_kv_blocks). */
    void (*dealloc)(lunar_backend_t *be, void *p);
    void (*copy_in)(lunar_backend_t *be, void *dst, const void *host_src, size_t bytes);
    void (*copy_out)(lunar_backend_t *be, void *host_dst, const void *src, size_t bytes);
    int (*prepare)(lunar_backend_t *be, const lunar_model_t *m);
    int (*begin_step)(lunar_backend_t *be, const lunar_batch_t *b);
    int (*end_step)(lunar_backend_t *be);

    /* ---- ops (T = b->num_tokens where a batch is passed) ---- */
    /* x[t] = E[b->token_ids[t]] for every batch token; E [vocab][dim]. */
    void (*embed)(lunar_backend_t *be, void *x, const lunar_batch_t *b, const lunar_tensor_t *E);
    /* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w over R rows of `dim` (out may equal x). Also
     * the per-head q/k norm of qwen3: R = tokens * heads, dim = head_dim, w [head_dim]. */
    void (*rmsnorm)(lunar_backend_t *be, void *out, const void *x, int R, int dim, const float *w, float eps);
    /* resid[r] += delta[r], then out[r] = rmsnorm(resid[r]): the residual add and the next
     * norm at every layer boundary, fused. */
    void (*add_rmsnorm)(lunar_backend_t *be, void *resid, const void *delta, void *out, int R, int dim,
                        const float *w, float eps);
    /* y[t][n] = sum_k x[t][k] * W[n][k] (+ bias[n]) for t < T; W [N][K] (N = W->shape[0],
     * K = W->shape[1]) f32/f16/bf16; bias f32 [N] or NULL. */
    void (*gemm)(lunar_backend_t *be, void *y, const void *x, int T, const lunar_tensor_t *W, const float *bias);
    /* The same GEMM for n (<= 3) weights with one input: ys[i] = x . Ws[i]^T (+ biases[i]), each
     * Ws[i] [N_i][K] with the same K: the q/k/v and the gate/up projections. A backend that
     * fused the group at prepare() runs it as one GEMM; NULL: the runner calls gemm() per
     * weight. Same numerics as gemm(). */
    void (*gemm_multi)(lunar_backend_t *be, void *const *ys, const void *x, int T, const lunar_tensor_t *const *Ws,
                       const float *const *biases, int n);
    /* RoPE in place on q [T][nq*hd] and k [T][nk*hd], HF rotate_half layout: for i < rot/2,
     * (v[i], v[i + rot/2]) <- (v[i]*c - v[i+rot/2]*s, v[i+rot/2]*c + v[i]*s) over the first `rot`
     * dims of each head; dims past rot are left alone. cs [T][rot] f32: rot/2 cosines then rot/2
     * sines per token, already scaled by the variant's attention factor (the runner computes them
     * on the host for every rope_scaling type: default, linear, dynamic, yarn, llama3). */
    void (*rope)(lunar_backend_t *be, void *q, void *k, int T, int nq, int nk, int hd, int rot, const float *cs);
    /* The MLP activation: out[i] = silu(gate[i]) * up[i] over n elements, silu(g) = g / (1 + e^-g)
     * (out may equal gate). */
    void (*silu_mul)(lunar_backend_t *be, void *out, const void *gate, const void *up, long n);
    /* K/V cache write: k and v rows [T][nk*hd] to kc/vc at b->slot_mapping[t]. */
    void (*kv_write)(lunar_backend_t *be, void *kc, void *vc, const void *k, const void *v, const lunar_batch_t *b,
                     int nk, int hd);
    /* Attention over the paged KV: token t of sequence s (query_start[s] <= t < query_start[s+1])
     * at position p = b->positions[t] attends to positions max(0, p - window + 1) .. p of s
     * (window 0 = all) through s's block table; query head h uses kv head h / (nq / nk) (GQA,
     * MQA); out[t][h] = softmax_j(q[t][h] . K[j] * scale) . V[j], out [T][nq*hd]. The step's own
     * K/V are already in the cache (kv_write ran first), so a prefill chunk is causal within
     * itself and over its cached prefix alike, and prefills and decodes mix in one batch. */
    void (*attention)(lunar_backend_t *be, void *out, const void *q, const void *kc, const void *vc,
                      const lunar_batch_t *b, int nq, int nk, int hd, int block_size, int window, float scale);
    /* Logits: out[i][n] = sum_k x[b->logits_indices[i0 + i]][k] * W[n][k] for i < n_rows, as f32
     * [n_rows][vocab] whatever act_dtype is; x [T][dim] is the final-normed hidden state, W the
     * lm_head [vocab][dim]. */
    void (*logits)(lunar_backend_t *be, float *out, const void *x, const lunar_batch_t *b, int i0, int n_rows,
                   const lunar_tensor_t *W);

    /* ---- optional (NULL when the backend does not offer it) ---- */
    /* Sampling where the logits are (lunar_forward_iface_t.forward_sample): logits [num_rows]
     * [vocab] f32 backend memory, as the logits op wrote them, read only. Row i becomes
     * s->tokens[i] by the CPU sampler's algorithm (runtime/sampler, lunar/batch.h's
     * lunar_sample_row_t: penalty entries, greedy, min-p, top-k, top-p, the seeded draw of
     * (seed, seq_index, position)), and a row with logprobs >= 0 gets the log_softmax of its raw
     * logits at that token and its top `logprobs` (value desc, id asc) in s's host arrays. Runs
     * inside the step, after logits and before end_step(); s and its arrays (host memory, the
     * caller's) must stay valid until end_step(), which returns the op's failure if any, after
     * which the outputs are written. The CPU backend leaves it NULL: the engine samples its
     * host logits itself. */
    void (*sample)(lunar_backend_t *be, const float *logits, int vocab, const lunar_sample_batch_t *s);
};

/* Creates backend `name` ("cpu"; a CUDA backend in runtime/cuda joins here as
 * lunar_backend_cuda_create under LUNAR_HAVE_CUDA). Free with be->free(be). */
int lunar_backend_create(const char *name, const lunar_backend_params_t *p, lunar_backend_t **out);
int lunar_backend_cpu_create(const lunar_backend_params_t *p, lunar_backend_t **out);
#ifdef LUNAR_HAVE_CUDA
/* The CUDA backend (runtime/cuda/backend.c): activations and KV in the model's dtype. */
int lunar_backend_cuda_create(const lunar_backend_params_t *p, lunar_backend_t **out);
#endif

#endif
