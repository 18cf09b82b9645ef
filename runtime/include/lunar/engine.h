/*
 * lunar/engine.h — continuous batching: requests in, token/text events out.
 *
 * The engine owns the scheduler, the paged KV block pool (with prefix caching) and the
 * sampler; the model forward arrives through lunar_forward_iface_t, so tests drive it with a
 * deterministic fake model (lunar_fake_model_*) and production with the CPU or CUDA runner.
 *
 * Two ways to run it, same code underneath:
 *   - threaded: lunar_engine_start() spawns the engine thread; lunar_engine_submit() and
 *     lunar_engine_abort() may be called from any thread; the notify callback fires on the
 *     engine thread whenever events are ready, and the consumer (the server's event loop)
 *     collects them with lunar_engine_poll() on its own thread.
 *   - synchronous: never call start; the caller's thread runs lunar_engine_step() in a loop
 *     (the offline LLM API). This is also the only mode in which a request's logits hook may
 *     be Lua: the hook runs on the thread that runs the step.
 *
 * A step: the scheduler picks running sequences first (decodes, continuing prefill chunks),
 * then waiting ones (FCFS or priority) under --max-num-batched-tokens and --max-num-seqs,
 * preempting the newest by recompute when KV blocks run out; builds one lunar_batch_t; the
 * forward fills logits rows; the sampler draws tokens (or the forward draws them itself where
 * it offers forward_sample: the GPU); stop checks and incremental detokenization turn them
 * into events.
 *
 * Times are seconds on CLOCK_MONOTONIC (lunar_engine_now()).
 */
#ifndef LUNAR_ENGINE_H
#define LUNAR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/batch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the model forward ---------------------------------------------------------------- */
#ifndef LUNAR_FORWARD_IFACE_DECLARED
#define LUNAR_FORWARD_IFACE_DECLARED
/* One step of the model: reads b, writes K/V at b->slot_mapping, fills
 * logits[i * vocab_size ...] for each i < b->num_logits (row i is the token b->logits_indices[i]).
 * Returns 0 or a LUNAR_E* status. The production implementation wraps lunar_runner_forward()
 * (lunar/runner.h); its KV cache must hold the engine's num_blocks blocks of block_size.
 *
 * forward_sample (optional, NULL = not offered): the same step, but the forward also samples
 * row i as s->rows[i] says (lunar/batch.h) and writes the token ids (and logprobs where asked)
 * into s's output buffers instead of handing logits back; s->num_rows == b->num_logits. The
 * CUDA runner offers it so that logits never leave the GPU. The engine uses it for the steps
 * where no row needs host logits (no logits hook, no prompt_logprobs row) and must get the
 * tokens the CPU sampler would draw from the same logits. */
typedef struct lunar_forward_iface {
    void *ctx;
    int vocab_size;
    int (*forward)(void *ctx, const lunar_batch_t *b, float *logits /* [num_logits][vocab] */);
    int (*forward_sample)(void *ctx, const lunar_batch_t *b, const lunar_sample_batch_t *s);
} lunar_forward_iface_t;
#endif

/* ---- detokenization (optional) ----------------------------------------------------------- */
/* Decodes ids[0..n) to UTF-8 into out (at most cap bytes, NUL-terminated when cap > 0) and
 * returns the full length it needs (like snprintf), or a negative LUNAR_E* status. The engine
 * builds text deltas from it incrementally (the prefix/read offset scheme of vLLM), holding
 * back incomplete UTF-8 and any text that could still be the start of a stop string. Without
 * a detokenizer events carry token ids only and stop strings are rejected at submit. */
typedef struct lunar_detok_iface {
    void *ctx;
    int (*decode)(void *ctx, const int32_t *ids, int n, int skip_special_tokens, char *out,
                  size_t cap);
} lunar_detok_iface_t;

struct lunar_tokenizer;
/* The detokenizer of a loaded tokenizer (lunar/tokenizer.h), which must outlive the engine.
 * Ids past the tokenizer's vocabulary (padded embedding rows) decode to nothing. */
void lunar_engine_detok_tokenizer(const struct lunar_tokenizer *tok, lunar_detok_iface_t *out);

/* ---- sampling parameters (vLLM's SamplingParams) ------------------------------------------ */
/* The logits hook of a request that asked for one (lua/lunar/sampling.lua's
 * logits_processors): called on the thread running the step, after the forward and before
 * penalties/temperature, with the sequence's prompt and output ids so far and its logits row
 * (vocab_size floats, modified in place). Return 0, or nonzero to finish that sequence with
 * reason "error". Registered once per engine (lunar_engine_set_logits_hook); requests select
 * it with lunar_sampling_params_t.logits_hook = 1 and are told apart by request_id. */
typedef int (*lunar_logits_hook_fn)(void *arg, uint64_t request_id, int seq_index,
                                    const int32_t *prompt_ids, int num_prompt,
                                    const int32_t *output_ids, int num_output, float *logits,
                                    int vocab_size);

/* The most sequences one request may ask for: vLLM's VLLM_MAX_N_SEQUENCES default. Without a
 * bound one request of n = 1e6 queues a million sequences ahead of everyone else. */
#define LUNAR_MAX_N 16384

/* Plain values; pointers are read during lunar_engine_submit() and copied, so the caller may
 * free them on return. lunar_sampling_params_default() gives vLLM's defaults. */
typedef struct lunar_sampling_params {
    int n;                          /* sequences per request (1, at most LUNAR_MAX_N); they
                                     * share the prompt's full KV blocks; each recomputes the
                                     * partial last block (< block_size tokens) instead of
                                     * copying it, since the forward interface has no KV copy */
    float temperature;              /* 1.0; < 1e-5 = greedy */
    float top_p;                    /* 1.0 = off */
    int top_k;                      /* -1 (or 0) = off */
    float min_p;                    /* 0 = off */
    int has_seed;                   /* 0: a seed is drawn at submit */
    uint64_t seed;                  /* per request: same seed, same tokens, any batch */
    int max_tokens;                 /* -1 = up to max_model_len - prompt (vLLM's None) */
    int min_tokens;                 /* EOS and stop ids suppressed before this many (0) */
    float presence_penalty;         /* 0 */
    float frequency_penalty;        /* 0 */
    float repetition_penalty;       /* 1 */
    int logprobs;                   /* -1 none; N >= 0: sampled token's logprob + top N */
    int prompt_logprobs;            /* -1 none; N >= 0: per prompt token (no prefix-cache reuse) */
    int ignore_eos;                 /* 0 */
    int skip_special_tokens;        /* 1 */
    int include_stop_str_in_output; /* 0 */
    int detokenize;                 /* 1: events carry text (needs a detokenizer) */
    const char *const *stop;        /* [num_stop] UTF-8 stop strings */
    int num_stop;
    const int32_t *stop_token_ids;  /* [num_stop_token_ids] */
    int num_stop_token_ids;
    int logits_hook;                /* 1: call the engine's logits hook for this request */
} lunar_sampling_params_t;

void lunar_sampling_params_default(lunar_sampling_params_t *p);
/* Checks every field; the error names it ("temperature must be >= 0, got -1"). LUNAR_EINVAL. */
int lunar_sampling_params_validate(const lunar_sampling_params_t *p);

/* ---- engine configuration ---------------------------------------------------------------- */
typedef enum lunar_sched_policy { LUNAR_SCHED_FCFS = 0, LUNAR_SCHED_PRIORITY = 1 } lunar_sched_policy_t;

typedef struct lunar_engine_config {
    int block_size;              /* tokens per KV block (16) */
    int num_blocks;              /* KV blocks the forward's cache holds (required) */
    int max_model_len;           /* prompt + max_tokens limit (required) */
    int max_num_seqs;            /* sequences per step (256) */
    int max_num_batched_tokens;  /* tokens per step (2048); >= max_num_seqs */
    int enable_chunked_prefill;  /* 1; 0 requires max_model_len <= max_num_batched_tokens */
    int enable_prefix_caching;   /* 1 */
    int policy;                  /* lunar_sched_policy_t: FCFS (default) or PRIORITY */
    int32_t eos_token_ids[8];    /* config.json + generation_config.json eos ids */
    int num_eos_token_ids;
    int max_logprobs;            /* largest logprobs / prompt_logprobs accepted (20) */
    double stats_interval_s;     /* INFO stats line period; <= 0 never (5) */
} lunar_engine_config_t;

void lunar_engine_config_default(lunar_engine_config_t *c);

typedef struct lunar_engine lunar_engine_t;

/* Creates an engine. fwd is copied (its ctx stays the caller's and must outlive the engine);
 * detok may be NULL (then ids only). Buffers are sized here; steps allocate only when a
 * request needs more logits rows than max_num_seqs (prompt_logprobs). Free with
 * lunar_engine_free(). */
int lunar_engine_create(const lunar_engine_config_t *cfg, const lunar_forward_iface_t *fwd,
                        const lunar_detok_iface_t *detok, lunar_engine_t **out);
/* Stops the engine thread if running, drops every request and pending event, frees all. */
void lunar_engine_free(lunar_engine_t *e);

/* Called (on the engine thread, or inside lunar_engine_step) after new events are queued.
 * Keep it short and non-blocking: wake a loop, never call poll from it. Set before start. */
void lunar_engine_set_notify(lunar_engine_t *e, void (*notify)(void *arg), void *arg);
/* The hook for requests with logits_hook = 1. Set before start / the first step. */
void lunar_engine_set_logits_hook(lunar_engine_t *e, lunar_logits_hook_fn fn, void *arg);

/* ---- requests (thread-safe) ---------------------------------------------------------------- */
typedef struct lunar_request {
    const int32_t *prompt_ids;   /* [num_prompt_ids], copied */
    int num_prompt_ids;          /* >= 1 */
    const lunar_sampling_params_t *params;  /* copied; NULL = defaults */
    int priority;                /* PRIORITY policy: lower runs first (vLLM); ties FCFS */
    void *user_data;             /* handed back in every event of this request */
} lunar_request_t;

/* Validates and queues a request; *out_id identifies it in events and abort. Errors (EINVAL,
 * ERANGE) are immediate and name the cause, e.g. vLLM's "This model's maximum context length
 * is 2048 tokens. However, you requested 2100 tokens (100 in the messages, 2000 in the
 * completion). Please reduce the length of the messages or completion." Thread-safe. */
int lunar_engine_submit(lunar_engine_t *e, const lunar_request_t *req, uint64_t *out_id);
/* Asks the engine to stop request id: every unfinished sequence ends with an event whose
 * finish_reason is ABORT and its blocks are freed. Unknown or finished ids are ignored.
 * Asynchronous and thread-safe; returns 0. */
int lunar_engine_abort(lunar_engine_t *e, uint64_t id);

/* ---- running ------------------------------------------------------------------------------- */
/* Threaded mode: spawns the engine thread. LUNAR_ESTATE if already started. */
int lunar_engine_start(lunar_engine_t *e);
/* Joins the engine thread (unfinished requests stay queued). Idempotent. */
void lunar_engine_stop(lunar_engine_t *e);
/* Synchronous mode: takes submitted/aborted requests, runs at most one scheduled forward and
 * queues its events. Returns the number of tokens computed (0 when idle), or a negative
 * status (the forward failed: the step's sequences finish with reason ERROR). LUNAR_ESTATE in
 * threaded mode. */
int lunar_engine_step(lunar_engine_t *e);
/* Requests not yet finished (queued, waiting or running). Thread-safe. */
int lunar_engine_num_unfinished(lunar_engine_t *e);

/* ---- events ---------------------------------------------------------------------------------- */
typedef enum lunar_finish_reason {
    LUNAR_FINISH_NONE = 0,   /* not finished */
    LUNAR_FINISH_STOP = 1,   /* "stop": EOS, a stop token id or a stop string */
    LUNAR_FINISH_LENGTH = 2, /* "length": max_tokens or max_model_len */
    LUNAR_FINISH_ABORT = 3,  /* "abort" */
    LUNAR_FINISH_ERROR = 4,  /* "error": the forward or the logits hook failed */
} lunar_finish_reason_t;

/* "stop", "length", "abort", "error" or NULL for NONE. Static string. */
const char *lunar_finish_reason_name(int reason);

/* New output of one sequence since its previous event. Consecutive outputs not yet polled
 * are merged into one event. All pointers are owned by the engine and valid until the next
 * lunar_engine_poll() or lunar_engine_free(). */
typedef struct lunar_event {
    uint64_t request_id;
    void *user_data;
    int seq_index;               /* 0 .. n-1 */
    int num_tokens;              /* new token ids */
    const int32_t *token_ids;    /* [num_tokens] */
    const char *text;            /* UTF-8 delta, NUL-terminated ("" without a detokenizer) */
    int text_len;
    /* logprobs requested (N = num_top_logprobs >= 0), else NULL: */
    const float *logprobs;       /* [num_tokens] logprob of each new token, from the model's
                                  * row (after a logits hook; before penalties/temperature) */
    int num_top_logprobs;        /* N */
    const int32_t *top_ids;      /* [num_tokens * N], best first */
    const float *top_logprobs;   /* [num_tokens * N] */
    /* prompt_logprobs requested: present once, in the first event of seq_index 0 */
    int num_prompt_logprobs;     /* prompt length, or 0 */
    const float *prompt_logprobs;      /* [num_prompt_logprobs]; [0] is NAN (no context) */
    int num_prompt_top;          /* N of prompt_logprobs */
    const int32_t *prompt_top_ids;     /* [num_prompt_logprobs * N] ([0..N) unused) */
    const float *prompt_top_logprobs;  /* [num_prompt_logprobs * N] */
    /* finish */
    int finish_reason;           /* lunar_finish_reason_t; NONE while running */
    const char *stop_str;        /* the matched stop string, else NULL */
    int32_t stop_token_id;       /* the matched stop_token_ids entry, else -1 (EOS: -1, as vLLM) */
    /* counts and timing of the sequence (every event, current values) */
    int num_prompt_tokens;
    int num_cached_tokens;       /* prompt tokens served from the prefix cache at first schedule */
    int num_output_tokens;       /* generated so far, including these */
    double arrival_time;         /* submit */
    double first_scheduled_time; /* first step that computed any of its tokens (0: not yet) */
    double first_token_time;     /* first output token (0: not yet) */
    double last_token_time;      /* latest output token */
} lunar_event_t;

/* Takes every queued event: *out points at n events (n returned, 0 when none), valid until
 * the next poll. One consumer thread at a time; any thread. */
int lunar_engine_poll(lunar_engine_t *e, const lunar_event_t **out);

/* ---- stats (vLLM metric names in comments) ----------------------------------------------------- */
#define LUNAR_HIST_MAX_BUCKETS 32
/* Cumulative buckets as Prometheus exposes them: counts[i] = observations <= bounds[i];
 * count = all observations (+Inf), sum = their sum. Bounds are vLLM's. */
typedef struct lunar_histogram {
    int num_buckets;
    double bounds[LUNAR_HIST_MAX_BUCKETS];
    uint64_t counts[LUNAR_HIST_MAX_BUCKETS];
    uint64_t count;
    double sum;
} lunar_histogram_t;

typedef struct lunar_engine_stats {
    int num_running;                 /* vllm:num_requests_running (sequences) */
    int num_waiting;                 /* vllm:num_requests_waiting (sequences, incl. preempted) */
    int num_preempted_waiting;       /* of the waiting, those preempted and not yet resumed */
    double kv_cache_usage;           /* vllm:kv_cache_usage_perc / gpu_cache_usage_perc, 0..1 */
    int num_blocks, num_free_blocks, num_cached_free_blocks;
    uint64_t num_preemptions_total;  /* vllm:num_preemptions_total */
    uint64_t prompt_tokens_total;    /* vllm:prompt_tokens_total (prompt length of each sequence
                                      * at its first token, as vLLM V1 counts) */
    uint64_t generation_tokens_total;/* vllm:generation_tokens_total */
    uint64_t prefix_cache_queries;   /* vllm:prefix_cache_queries (prompt tokens looked up) */
    uint64_t prefix_cache_hits;      /* vllm:prefix_cache_hits (tokens found) */
    uint64_t request_success_stop;   /* vllm:request_success_total{finished_reason="stop"} */
    uint64_t request_success_length; /* ...{finished_reason="length"} */
    uint64_t request_success_abort;  /* ...{finished_reason="abort"} */
    uint64_t requests_errored;
    uint64_t num_steps;
    uint64_t forward_tokens_total;   /* every token the forward computed (prefill + decode) */
    lunar_histogram_t ttft;          /* vllm:time_to_first_token_seconds */
    lunar_histogram_t tpot;          /* vllm:time_per_output_token_seconds (inter-token) */
    lunar_histogram_t e2e;           /* vllm:e2e_request_latency_seconds */
    lunar_histogram_t queue;         /* vllm:request_queue_time_seconds */
} lunar_engine_stats_t;

/* A consistent snapshot. Thread-safe. */
void lunar_engine_get_stats(lunar_engine_t *e, lunar_engine_stats_t *out);

double lunar_engine_now(void);

/* ---- fake model (tests, server tests, benchmarks of the engine alone) ------------------------- */
/* A deterministic stand-in for a model: it stores each token id in a KV "cache" at its
 * slot, reads the context back through the block tables, and makes logits that depend only on
 * (the sequence's tokens so far, position) — so wrong slots, block tables or prefix reuse
 * change its output, and "same output as running alone" is a real check. eos_token_id >= 0
 * gets a logit that rises with position so sequences end on their own. Counts tokens run. */
typedef struct lunar_fake_model lunar_fake_model_t;
int lunar_fake_model_create(int vocab_size, int num_blocks, int block_size, int eos_token_id,
                            uint64_t seed, lunar_fake_model_t **out);
void lunar_fake_model_free(lunar_fake_model_t *m);
/* Fills *out to drive an engine; m must outlive it. */
void lunar_fake_model_iface(lunar_fake_model_t *m, lunar_forward_iface_t *out);
uint64_t lunar_fake_model_tokens_computed(const lunar_fake_model_t *m);
/* A detokenizer for the fake vocabulary: ids 0..2 are special ("<s>", "</s>", "<unk>",
 * dropped by skip_special_tokens); in bytes_mode ids 3..255 decode to the byte of that value
 * (so multi-byte UTF-8 spans tokens) and larger ids to "<id>"; otherwise every id k decodes
 * to "w<k> ". */
void lunar_fake_detok_iface(int bytes_mode, lunar_detok_iface_t *out);

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_ENGINE_H */
