/*
 * lunar/batch.h — one engine step as the model forward sees it: a flat, token-major list of
 * tokens from many sequences, prefill chunks and decodes mixed.
 *
 * The scheduler (runtime/sched) builds it; the forward (runtime/model) and every backend
 * consume it. Nothing in it is per-architecture. KV cache slots: the cache of each layer is
 * [num_blocks][block_size][num_kv_heads][head_dim] for K and the same for V; token t writes
 * its K/V at slot_mapping[t] = block_id * block_size + offset, and sequence s reads its
 * context through block_tables[s * max_blocks_per_seq + i] for i < ceil(seq_lens[s]/block_size).
 */
#ifndef LUNAR_BATCH_H
#define LUNAR_BATCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lunar_batch {
    int num_tokens;               /* tokens computed this step, over all sequences */
    int num_seqs;
    const int32_t *token_ids;     /* [num_tokens] */
    const int32_t *positions;     /* [num_tokens] position of each token in its sequence */
    const int64_t *slot_mapping;  /* [num_tokens] where each token's K/V is written */
    const int32_t *query_start;   /* [num_seqs + 1] offsets into the flat tokens (cumulative) */
    const int32_t *seq_lens;      /* [num_seqs] context length after this step (cached + new) */
    const int32_t *block_tables;  /* [num_seqs * max_blocks_per_seq], -1 past the end */
    int max_blocks_per_seq;
    /* Rows of logits wanted, as indices into the flat tokens: the last token of each sequence
     * that samples this step, and every prompt token of a request asking prompt_logprobs. */
    const int32_t *logits_indices; /* [num_logits] */
    int num_logits;
} lunar_batch_t;

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_BATCH_H */
