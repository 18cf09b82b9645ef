/*
 * sampler/sampler.h — the CPU sampler over f32 logits rows, vLLM's semantics and order:
 * min_tokens suppression, repetition/frequency/presence penalties, temperature (greedy below
 * 1e-5), min-p, top-k, top-p, then one draw.
 *
 * The draw is a single uniform number from a counter-based generator keyed by (seed,
 * sequence index, output position): a sequence's tokens depend on its seed and its logits only,
 * never on which other sequences share the step or on preemption and recompute.
 */
#ifndef LUNAR_SAMPLER_SAMPLER_H
#define LUNAR_SAMPLER_SAMPLER_H

#include <stdint.h>

#include "lunar/engine.h"

typedef struct lunar_sampler {
    int vocab;
    float *x;        /* [vocab] the working copy of the row */
    int32_t *idx;    /* [vocab] candidate ids */
    uint32_t *count; /* [vocab] output-token counts, zero between calls */
    uint8_t *mark;   /* [vocab] repetition-penalty set, zero between calls */
    int32_t *pen_ids, *pen_counts; /* [vocab] the penalty list of the row being sampled */
} lunar_sampler_t;

/* A sequence's penalty entries kept from step to step (the engine holds one per sequence): the
 * distinct prompt ids (with the repetition penalty) and output ids (with any penalty), sorted by
 * id, with output counts. Built from the prompt once, then brought up to date with the output
 * ids sampled since, so a step copies the list instead of rescanning a long prompt: that rescan
 * cost ~0.5 ms a step at batch 64 with 512-token prompts on the H100's host. Zeroed = not built;
 * free with lunar_pen_cache_free. */
typedef struct lunar_pen_cache {
    int32_t *ids, *counts;
    int n, cap;
    int built, num_output; /* num_output: the output ids counted so far */
} lunar_pen_cache_t;

void lunar_pen_cache_free(lunar_pen_cache_t *c);

typedef struct lunar_sample_input {
    const lunar_sampling_params_t *params;
    const int32_t *prompt;   /* prompt ids (repetition penalty) */
    int num_prompt;
    const int32_t *output;   /* output ids so far */
    int num_output;
    const int32_t *suppress; /* ids masked to -inf (EOS and stop ids before min_tokens) */
    int num_suppress;
    uint64_t seed;
    int seq_index;
    lunar_pen_cache_t *pen;  /* optional: the sequence's cached penalty entries, updated here */
} lunar_sample_input_t;

int lunar_sampler_init(lunar_sampler_t *s, int vocab);
void lunar_sampler_destroy(lunar_sampler_t *s);

/* Draws the next token from row (left unchanged). */
int lunar_sampler_sample(lunar_sampler_t *s, const float *row, const lunar_sample_input_t *in);

/* The suppression and penalties of `in` as a list (lunar_sample_batch_t's pen_ids/pen_counts):
 * each in-vocabulary id that changes its logit once, with its count in in->output, or -1 when
 * suppressed. Ids are listed only as the penalties need them: the suppressed ids always, the
 * output ids when any penalty is on, the prompt ids with repetition_penalty != 1. ids and
 * counts must hold lunar_sampler_penalty_max(in) entries. Returns the number written. With
 * in->pen the list comes from (and updates) the cache, or from a full scan when the cache
 * cannot grow; the order of the entries is unspecified (each id appears once). */
int lunar_sampler_penalty_max(const lunar_sample_input_t *in);
int lunar_sampler_penalty_list(lunar_sampler_t *s, const lunar_sample_input_t *in, int32_t *ids, int32_t *counts);

/* log_softmax of row: *lp = logprob of `token` (if token >= 0), and the top_n best ids and
 * logprobs in descending order (ties: lower id first) into top_ids/top_lp. */
void lunar_sampler_logprobs(const float *row, int vocab, int token, int top_n, float *lp,
                            int32_t *top_ids, float *top_lp);

/* The uniform [0,1) number of (seed, seq_index, position). */
double lunar_sampler_uniform(uint64_t seed, int seq_index, int position);

#endif
