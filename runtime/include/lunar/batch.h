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

/* Sampling on the forward's side (lunar_forward_iface_t.forward_sample, the backend's sample
 * op): how each logits row of a step becomes a token, so that a GPU forward hands back token
 * ids instead of [num_logits][vocab] logits. The semantics are the CPU sampler's
 * (runtime/sampler/sampler.h): suppression and penalties, greedy below temperature 1e-5, else
 * min-p, top-k, top-p in (probability desc, id asc) order and one uniform draw from the
 * counter-based generator keyed by (seed, seq_index, position). */
typedef struct lunar_sample_row {
    float temperature;        /* < 1e-5: greedy */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float presence_penalty, frequency_penalty, repetition_penalty;
    int top_k;                /* <= 0: off */
    int seq_index;            /* the generator's stream: (seed, seq_index, position) */
    int position;             /* output tokens of the sequence so far */
    int logprobs;             /* -1: none; N >= 0: the token's logprob and the top N */
    uint64_t seed;
} lunar_sample_row_t;

/* One step's sampling: inputs and output buffers, all host memory owned by the caller and
 * read or written only during the call. */
typedef struct lunar_sample_batch {
    int num_rows;                    /* = the batch's num_logits */
    const lunar_sample_row_t *rows;  /* [num_rows] */
    /* Penalties and suppression of row i: entries [pen_start[i], pen_start[i+1]) of
     * pen_ids/pen_counts, each id of prompt ∪ output ∪ suppressed at most once, with its count
     * in the output so far, or -1 to suppress it (logit -inf). Ids the row's penalties leave
     * unchanged may be left out. pen_start NULL: no row has entries. */
    const int32_t *pen_start;        /* [num_rows + 1] */
    const int32_t *pen_ids;          /* [pen_start[num_rows]] */
    const int32_t *pen_counts;       /* [pen_start[num_rows]] */
    int top_stride;                  /* >= every rows[i].logprobs: the row stride of the top arrays */
    /* outputs */
    int32_t *tokens;                 /* [num_rows] */
    float *logprobs;                 /* [num_rows] log_softmax of the raw row at the token, for rows
                                      * with logprobs >= 0; NULL when no row asks */
    int32_t *top_ids;                /* [num_rows * top_stride]: the row's best `logprobs` ids */
    float *top_logprobs;             /*   (value desc, id asc) and their logprobs; NULL likewise */
} lunar_sample_batch_t;

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_BATCH_H */
