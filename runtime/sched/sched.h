/*
 * sched/sched.h — requests, sequences and the continuous-batching scheduler.
 *
 * A request holds n sequences; each sequence is the unit the scheduler moves between the
 * waiting and running lists. A sequence's state is all in `tokens` (prompt + output so far)
 * and `num_computed` (how many of them have K/V in its blocks): a step computes the next
 * tokens[num_computed ..] up to the token budget, so decodes (1 token), prefill chunks and the
 * recompute of a preempted sequence (prompt + output again) are the same thing.
 *
 * Scheduling (vLLM V1's shape): running sequences first, in admission order, each taking the
 * tokens it needs from the budget; when blocks run out the newest running sequence (PRIORITY:
 * the lowest priority, newest among equals, even if already scheduled this step) is preempted
 * (blocks freed, num_computed = 0, back to the front of waiting) until the current one fits or
 * is itself the one preempted. Then, if nothing was preempted, waiting sequences
 * are admitted in order (FCFS, or priority then arrival), reusing every cached full block of
 * their tokens, while a sequence slot, budget and blocks remain; the head of the queue is never
 * skipped for a later one, so nobody starves.
 */
#ifndef LUNAR_SCHED_SCHED_H
#define LUNAR_SCHED_SCHED_H

#include <stdint.h>

#include "kv/kv.h"
#include "lunar/engine.h"
#include "sampler/sampler.h"

enum { LUNAR_SEQ_WAITING = 0, LUNAR_SEQ_RUNNING = 1, LUNAR_SEQ_FINISHED = 2 };

struct lunar_req;

typedef struct lunar_seq {
    struct lunar_req *req;
    int seq_index;
    int state;
    int32_t *tokens;        /* [capacity: prompt + max_tokens] prompt then output */
    int num_tokens;
    int num_computed;       /* tokens whose K/V are in blocks */
    int32_t *blocks;        /* [max_blocks_per_seq] */
    int num_blocks;
    uint64_t *hashes;       /* memo of the full-block hash chain, [max_blocks_per_seq] */
    int num_hashes;
    int num_registered;     /* blocks [0, this) are in the prefix cache (registered or hits) */
    int admitted;           /* has been admitted at least once */
    int preempted;          /* waiting after a preemption */
    int num_cached_tokens;  /* prefix hits at first admission */
    int step_new;           /* tokens scheduled this step */
    /* prompt logprobs (seq 0 of a request that asked): [j] for prompt token j */
    int plp_next;           /* first prompt index not yet filled (starts at 1) */
    float *plp;
    int32_t *plp_ids;
    float *plp_top;
    /* timing */
    double first_scheduled, first_token, last_token;
    /* incremental detokenization and the output text */
    int prefix_off, read_off;
    char *text;
    int text_len, text_cap, text_sent;
    /* finish */
    int finish_reason;
    int stop_str_index;     /* into req->stop, or -1 */
    int32_t stop_token;
    lunar_pen_cache_t pen;  /* penalty entries kept across steps (sampler.h) */
    /* the event not yet polled, to merge into */
    void *ev_node;
    uint64_t ev_gen;
} lunar_seq_t;

typedef struct lunar_req {
    uint64_t id;
    void *user_data;
    lunar_sampling_params_t params; /* stop / stop_token_ids point at the copies below */
    char **stop;
    int32_t *stop_ids;
    int priority;
    uint64_t arrival_seq;
    double arrival_time;
    int num_prompt;
    int max_tokens;                 /* resolved: never past max_model_len */
    uint64_t seed;
    int num_unfinished;
    lunar_seq_t *seqs;              /* [params.n] */
} lunar_req_t;

typedef struct lunar_sched {
    lunar_engine_config_t cfg;
    lunar_kv_pool_t pool;
    int max_blocks_per_seq;
    lunar_seq_t **running;
    int num_running;
    lunar_seq_t **waiting;
    int num_waiting, cap_waiting;
    /* this step */
    lunar_seq_t **sched;            /* scheduled sequences in batch order */
    int num_sched;
    int32_t *token_ids, *positions, *query_start, *seq_lens, *block_tables;
    int64_t *slots;
    int32_t *logits_indices;
    int32_t *row_seq;               /* logits row -> index into sched */
    int32_t *row_pos;               /* logits row -> position of its token */
    int32_t *hit_blocks;            /* admission scratch */
    lunar_batch_t batch;
    /* counters */
    uint64_t num_preemptions, prefix_queries, prefix_hits;
} lunar_sched_t;

int lunar_sched_init(lunar_sched_t *s, const lunar_engine_config_t *cfg);
void lunar_sched_destroy(lunar_sched_t *s);

/* Queues a new sequence (num_computed 0) by the policy's order. */
int lunar_sched_add(lunar_sched_t *s, lunar_seq_t *q);
/* Chooses this step's sequences and fills s->batch. Returns the number of tokens (0: idle). */
int lunar_sched_schedule(lunar_sched_t *s);
/* After a successful forward: advances num_computed and caches the blocks it filled. */
void lunar_sched_computed(lunar_sched_t *s);
/* Takes q out of running/waiting and frees its blocks (tail first, so the blocks least
 * likely to be shared are reused first). Returns 0, or LUNAR_ESTATE on a refcount error. */
int lunar_sched_finish(lunar_sched_t *s, lunar_seq_t *q);

/* Blocks a sequence of `tokens` tokens occupies. */
static inline int lunar_sched_blocks_for(const lunar_sched_t *s, int tokens)
{
    return (tokens + s->cfg.block_size - 1) / s->cfg.block_size;
}

#endif
