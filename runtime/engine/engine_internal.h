/*
 * engine/engine_internal.h — the engine's private state, shared by engine.c (requests, steps,
 * threads), output.c (stop checks, detokenization, events) and stats.c.
 */
#ifndef LUNAR_ENGINE_INTERNAL_H
#define LUNAR_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "lunar/engine.h"
#include "sampler/sampler.h"
#include "sched/sched.h"

/* One queued event and the buffers it owns; recycled through the engine's pool. */
typedef struct lunar_ev_node {
    lunar_event_t ev;        /* scalars kept current; pointers set at poll */
    int32_t *ids;
    float *lp;
    int32_t *top_ids;
    float *top_lp;
    char *text;
    float *plp;
    int32_t *plp_ids;
    float *plp_top;
    char *stop_str;
    /* capacities, in elements, of the arrays above in order */
    int cap_ids, cap_lp, cap_top_ids, cap_top_lp, cap_text, cap_plp, cap_plp_ids, cap_plp_top,
        cap_stop;
} lunar_ev_node_t;

typedef struct lunar_node_list {
    lunar_ev_node_t **v;
    int n, cap;
} lunar_node_list_t;

struct lunar_engine {
    lunar_engine_config_t cfg;
    lunar_forward_iface_t fwd;
    lunar_detok_iface_t detok;
    int has_detok;
    void (*notify)(void *);
    void *notify_arg;
    lunar_logits_hook_fn hook;
    void *hook_arg;

    /* engine-thread state */
    lunar_sched_t sched;
    lunar_sampler_t sampler;
    float *logits;
    int cap_logit_rows;
    lunar_req_t **live;
    int num_live, cap_live;
    int32_t *suppress;       /* [8 + max stop ids] sampler scratch */
    int cap_suppress;
    struct {                 /* forward_sample's specs and results (lunar/batch.h), when offered */
        lunar_sample_row_t *rows;        /* [cap_rows] */
        int32_t *pen_start;              /* [cap_rows + 1] */
        int32_t *pen_ids, *pen_counts;   /* [cap_pen], grown with prompts and outputs */
        int32_t *tokens;                 /* [cap_rows] */
        float *lp;                       /* [cap_rows] */
        int32_t *top_ids;                /* [cap_rows * max_logprobs] */
        float *top_lp;                   /* [cap_rows * max_logprobs] */
        int cap_rows, cap_pen;
    } fs;
    char *dec, *dec2;        /* detokenizer scratch */
    int cap_dec, cap_dec2;
    int events_this_step;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lunar_req_t **incoming;
    int num_incoming, cap_incoming;
    uint64_t *aborts;
    int num_aborts, cap_aborts;
    lunar_node_list_t pending, delivered, pool;
    uint64_t gen;            /* bumped at each poll: nodes of older gens are out of reach */
    lunar_engine_stats_t stats;
    int stop;
    int threaded;
    pthread_t thread;

    /* consumer side */
    lunar_event_t *out;
    int cap_out;

    uint64_t next_id;        /* atomic */
    uint64_t next_arrival;   /* atomic */
    int num_unfinished;      /* atomic */
    uint64_t seed_state;     /* atomic: seeds of requests without one */

    /* stats log */
    double last_log;
    uint64_t last_log_prompt, last_log_gen;
};

/* engine.c: the sequence is done (its final event already queued): frees its blocks,
 * counts it, and frees the request when it was its last sequence. */
void lunar_engine_seq_done(lunar_engine_t *e, lunar_seq_t *q);

/* output.c */
int lunar_ev_list_push(lunar_node_list_t *l, lunar_ev_node_t *n);
void lunar_ev_node_free(lunar_ev_node_t *n);
/* The node collecting q's output until the next poll; NULL on no memory. Call under mu. */
lunar_ev_node_t *lunar_ev_node_for(lunar_engine_t *e, lunar_seq_t *q);
/* The logprobs of a sampled token, for a request that asked for them: computed from the raw
 * logits row (the host path), or already computed by forward_sample (row NULL). */
typedef struct lunar_token_lp {
    const float *row;        /* [vocab] raw logits, or NULL: */
    float lp;                /* the token's logprob */
    const int32_t *top_ids;  /* [params.logprobs] best first */
    const float *top_lp;     /* [params.logprobs] */
} lunar_token_lp_t;

/* Appends the sampled token to q, runs the stop checks and detokenization, queues its event
 * (with logprobs from `lp` when asked), and finishes q when it stops. */
int lunar_output_token(lunar_engine_t *e, lunar_seq_t *q, int32_t token, const lunar_token_lp_t *lp);
/* Finishes q with `reason` (abort, error) and emits the final event. */
int lunar_output_finish(lunar_engine_t *e, lunar_seq_t *q, int reason);
void lunar_output_detok_init(lunar_engine_t *e, lunar_seq_t *q);

/* stats.c */
void lunar_stats_init(lunar_engine_stats_t *st);
void lunar_hist_observe(lunar_histogram_t *h, double v);
void lunar_stats_maybe_log(lunar_engine_t *e, double now);

#endif
