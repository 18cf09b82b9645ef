/*
 * lunar/runner.h — runs the model forward for one engine step on a backend.
 *
 * A runner owns everything a forward needs besides the weights: the paged KV cache
 * (per layer, K and V as [num_blocks][block_size][num_kv_heads][head_dim]), the RoPE tables,
 * scratch buffers sized once for max_num_batched_tokens (the hot path allocates nothing) and
 * the backend's threads. The engine drives it through lunar_forward_iface_t (lunar/engine.h).
 */
#ifndef LUNAR_RUNNER_H
#define LUNAR_RUNNER_H

#include <stdint.h>

#include "lunar/batch.h"
#include "lunar/engine.h"
#include "lunar/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lunar_runner_options {
    const char *backend;         /* "cpu" (default); "cuda" when built with CUDA */
    int num_kv_blocks;           /* KV blocks to allocate (required, >= 1) */
    int block_size;              /* tokens per block (16) */
    int max_num_batched_tokens;  /* tokens one forward may carry (2048) */
    int max_num_seqs;            /* sequences one forward may carry (256) */
    int num_threads;             /* CPU threads; 0 = every core */
    int enforce_eager;           /* CUDA: no CUDA graphs (--enforce-eager) */
} lunar_runner_options_t;

void lunar_runner_options_default(lunar_runner_options_t *o);

typedef struct lunar_runner lunar_runner_t;

/* The model must outlive the runner. Free with lunar_runner_free(). */
int lunar_runner_create(const lunar_model_t *m, const lunar_runner_options_t *o, lunar_runner_t **out);
void lunar_runner_free(lunar_runner_t *r);

/* One step: writes the K/V of every batch token at its slot, attends over each sequence's
 * paged context, and fills logits[i * vocab_size ...] (f32, caller-owned) for the rows
 * b->logits_indices. Invalid ids, slots or block tables are LUNAR_ERANGE naming the token. */
int lunar_runner_forward(lunar_runner_t *r, const lunar_batch_t *b, float *logits);
/* The same step, but the logits stay in backend memory and the backend samples them
 * (backend.h's sample op): s->tokens (and the logprobs s asks for) are filled, host memory
 * owned by the caller, as lunar/batch.h describes. s->num_rows must equal b->num_logits (sampled
 * max_num_seqs rows at a time). LUNAR_EUNSUPPORTED on a backend without the op (the CPU). */
int lunar_runner_forward_sample(lunar_runner_t *r, const lunar_batch_t *b, const lunar_sample_batch_t *s);

/* Bytes of KV cache one token takes on `backend` ("cpu": f32 K and V for every layer;
 * "cuda": the model's dtype). */
uint64_t lunar_runner_kv_bytes_per_token(const lunar_model_t *m, const char *backend);
/* The engine's view of this runner: forward, and forward_sample when the backend samples
 * (CUDA) unless the environment has LUNAR_GPU_SAMPLING=0 (read at this call), which keeps
 * sampling on the host for comparison. */
void lunar_runner_forward_iface(lunar_runner_t *r, lunar_forward_iface_t *out);
/* Tokens run through the forward since creation (prefill + decode). */
uint64_t lunar_runner_tokens_computed(const lunar_runner_t *r);
/* Dummy tokens the forward added to decode steps to give them a CUDA graph's batch size. */
uint64_t lunar_runner_padding_tokens(const lunar_runner_t *r);

/* Where memory went, in bytes: the start-up breakdown (`why does a 14 GB model take 33 GB`).
 * On a device backend each figure comes from the device's free memory (cudaMemGetInfo through
 * lunar_device_get_info) read before the weights, after them, after the runner's buffers and
 * around each profiling step, except weights, KV cache and the runner's own buffers, which are
 * exact byte counts; on a host-memory backend (cpu) every figure is the bytes allocated. */
typedef struct lunar_runner_memory {
    uint64_t device_total;       /* the device's memory; 0 on a host-memory backend */
    uint64_t device_used;        /* device_total - free now: every process's use; 0 on the host */
    uint64_t weights;            /* the weights as the backend holds them (cpu: the model's host
                                  * tensors, read in place) and the runner's f32 copies of norm
                                  * weights and biases (the CUDA backend uploads only matrices) */
    uint64_t activations;        /* activation and workspace peak: the runner's step buffers (sized
                                  * for max_num_batched_tokens), the backend's scratch from prepare()
                                  * and the device allocator's rounding, and what the profiling steps
                                  * added (step metadata, lazily loaded kernels and cuBLAS state) */
    uint64_t cuda_graphs;        /* what capturing and replaying one decode graph took: about 0,
                                  * since every buffer a graph reads is preallocated; 0 without graphs */
    uint64_t kv_cache;           /* the KV cache now: num_kv_blocks x block_size x kv_bytes_per_token */
    uint64_t other;              /* device_used - all of the above: CUDA context, cuBLAS, allocator
                                  * rounding, other processes; 0 on the host */
    uint64_t kv_bytes_per_token;
    int num_kv_blocks, block_size;
    int profiled;                /* 1 once lunar_runner_profile() has run */
    int profile_tokens, profile_seqs;  /* its largest step: tokens over sequences */
    int graph_seqs;              /* the decode batch its graph step captured (0: none) */
} lunar_runner_memory_t;

/* The breakdown now (the profile's figures once it has run). */
int lunar_runner_memory(const lunar_runner_t *r, lunar_runner_memory_t *out);

/* The profiling forward: runs the runner's largest step (max_num_batched_tokens tokens over
 * as few sequences as the KV cache and max_seq_len allow: max_seq_len is the engine's
 * max_model_len, 0 = no limit but the cache; at most max_num_seqs sequences), an eager decode
 * step of max_num_seqs sequences, and, when the backend replays CUDA graphs, a decode step of
 * min(max_num_seqs, the largest graph batch) twice (capture, replay), then a decode of
 * max_num_seqs with every logits row, reading device memory around each, and fills `out` (may
 * be NULL). Decode sequences get blocks of their own while the cache has a block per sequence,
 * else distinct slots of shared blocks; a prefill sequence longer than the cache shares blocks. Whatever these steps create lazily (cuBLAS state, kernels loaded on first use,
 * step metadata) exists afterwards, so the figures are the peak a served step reaches. The
 * steps write garbage into the KV cache: run it before any sequence is in the cache. */
int lunar_runner_profile(lunar_runner_t *r, int max_seq_len, lunar_runner_memory_t *out);

/* Resizes the KV cache to num_kv_blocks blocks: frees both caches (K and V, every layer) and
 * allocates the new ones, zeroed. Anything the backend captured that reads the old caches is
 * dropped with them (the CUDA backend's graphs: their kernels hold the cache addresses; they are
 * captured again on first use). The cache's contents are lost: call it before any sequence is
 * in the cache. When the new size does not fit, the old size is restored and LUNAR_ENOMEM
 * says how much was asked. */
int lunar_runner_set_kv_blocks(lunar_runner_t *r, int num_kv_blocks);

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_RUNNER_H */
