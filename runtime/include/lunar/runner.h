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

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_RUNNER_H */
