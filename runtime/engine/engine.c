/*
 * engine/engine.c — the engine of lunar/engine.h: request intake, the step (schedule, forward,
 * prompt logprobs, logits hook, sampling, outputs), the engine thread and the event queue.
 *
 * Sampling happens on the host (lunar_sampler over the logits the forward returns) or, when the
 * forward offers forward_sample and no row of the step needs host logits, on the forward's
 * side (the GPU): the engine then sends each row's sampler inputs and gets token ids back.
 *
 * Threads: everything in the scheduler, KV pool, sampler and requests belongs to the thread
 * that steps (the engine thread, or the caller of lunar_engine_step). Other threads touch only
 * what `mu` guards: the incoming requests and aborts (submit/abort), the event queue (poll),
 * and the stats. Requests are validated and copied on the submitting thread, so the engine
 * thread never allocates for intake and errors reach the caller at once.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "engine/engine_internal.h"

double lunar_engine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *lunar_finish_reason_name(int reason)
{
    switch (reason) {
    case LUNAR_FINISH_STOP: return "stop";
    case LUNAR_FINISH_LENGTH: return "length";
    case LUNAR_FINISH_ABORT: return "abort";
    case LUNAR_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

void lunar_engine_config_default(lunar_engine_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->block_size = 16;
    c->max_num_seqs = 256;
    c->max_num_batched_tokens = 2048;
    c->enable_chunked_prefill = 1;
    c->enable_prefix_caching = 1;
    c->policy = LUNAR_SCHED_FCFS;
    c->max_logprobs = 20;
    c->stats_interval_s = 5.0;
}

static int check_config(const lunar_engine_config_t *c, const lunar_forward_iface_t *fwd)
{
    if (!fwd || !fwd->forward || fwd->vocab_size <= 0)
        return lunar_error(LUNAR_EINVAL, "engine: a forward with vocab_size > 0 is required");
    if (c->block_size <= 0) return lunar_error(LUNAR_EINVAL, "block_size must be > 0, got %d", c->block_size);
    if (c->num_blocks <= 0) return lunar_error(LUNAR_EINVAL, "num_blocks must be > 0, got %d", c->num_blocks);
    if (c->max_model_len <= 1)
        return lunar_error(LUNAR_EINVAL, "max_model_len must be > 1, got %d", c->max_model_len);
    if (c->max_num_seqs <= 0) return lunar_error(LUNAR_EINVAL, "max_num_seqs must be > 0, got %d", c->max_num_seqs);
    if (c->max_num_batched_tokens < c->max_num_seqs)
        return lunar_error(LUNAR_EINVAL,
                           "max_num_batched_tokens (%d) must be greater than or equal to max_num_seqs (%d)",
                           c->max_num_batched_tokens, c->max_num_seqs);
    if (!c->enable_chunked_prefill && c->max_model_len > c->max_num_batched_tokens)
        return lunar_error(LUNAR_EINVAL,
                           "max_num_batched_tokens (%d) is smaller than max_model_len (%d). This "
                           "effectively limits the maximum sequence length to max_num_batched_tokens "
                           "and makes lunar reject longer sequences. Please increase "
                           "max_num_batched_tokens, decrease max_model_len or enable chunked prefill.",
                           c->max_num_batched_tokens, c->max_model_len);
    if (c->num_eos_token_ids < 0 || c->num_eos_token_ids > 8)
        return lunar_error(LUNAR_EINVAL, "num_eos_token_ids must be in [0, 8], got %d", c->num_eos_token_ids);
    if (c->policy != LUNAR_SCHED_FCFS && c->policy != LUNAR_SCHED_PRIORITY)
        return lunar_error(LUNAR_EINVAL, "policy must be FCFS (0) or PRIORITY (1), got %d", c->policy);
    return LUNAR_OK;
}

/* forward_sample's buffers, sized for max_num_seqs rows (a step that samples on the forward
 * has no prompt-logprobs rows, so at most one row per sequence). */
static int forward_sample_init(lunar_engine_t *e)
{
    int R = e->cfg.max_num_seqs, L = e->cfg.max_logprobs;
    e->fs.cap_rows = R;
    e->fs.cap_pen = 16 * R;
    e->fs.rows = calloc((size_t)R, sizeof *e->fs.rows);
    e->fs.pen_start = calloc((size_t)R + 1, sizeof *e->fs.pen_start);
    e->fs.pen_ids = malloc((size_t)e->fs.cap_pen * sizeof *e->fs.pen_ids);
    e->fs.pen_counts = malloc((size_t)e->fs.cap_pen * sizeof *e->fs.pen_counts);
    e->fs.tokens = calloc((size_t)R, sizeof *e->fs.tokens);
    e->fs.lp = calloc((size_t)R, sizeof *e->fs.lp);
    e->fs.top_ids = calloc((size_t)R * (size_t)L, sizeof *e->fs.top_ids);
    e->fs.top_lp = calloc((size_t)R * (size_t)L, sizeof *e->fs.top_lp);
    if (!e->fs.rows || !e->fs.pen_start || !e->fs.pen_ids || !e->fs.pen_counts || !e->fs.tokens || !e->fs.lp ||
        !e->fs.top_ids || !e->fs.top_lp)
        return lunar_error(LUNAR_ENOMEM, "engine: no memory for sampling %d rows on the forward", R);
    return LUNAR_OK;
}

int lunar_engine_create(const lunar_engine_config_t *cfg, const lunar_forward_iface_t *fwd,
                        const lunar_detok_iface_t *detok, lunar_engine_t **out)
{
    *out = NULL;
    int rc = check_config(cfg, fwd);
    if (rc) return rc;
    lunar_engine_t *e = calloc(1, sizeof *e);
    if (!e) return lunar_error(LUNAR_ENOMEM, "engine: no memory");
    e->cfg = *cfg;
    if (e->cfg.max_logprobs <= 0) e->cfg.max_logprobs = 20;
    e->fwd = *fwd;
    if (detok && detok->decode) {
        e->detok = *detok;
        e->has_detok = 1;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    lunar_stats_init(&e->stats);
    e->stats.num_blocks = cfg->num_blocks;
    e->stats.num_free_blocks = cfg->num_blocks;
    e->next_id = 1;
    e->seed_state = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)e;
    if ((rc = lunar_sched_init(&e->sched, &e->cfg)) ||
        (rc = lunar_sampler_init(&e->sampler, fwd->vocab_size))) {
        lunar_engine_free(e);
        return rc;
    }
    e->cap_logit_rows = cfg->max_num_seqs;
    e->logits = malloc((size_t)e->cap_logit_rows * (size_t)fwd->vocab_size * sizeof *e->logits);
    if (!e->logits) {
        lunar_engine_free(e);
        return lunar_error(LUNAR_ENOMEM, "engine: no memory for %d logits rows", cfg->max_num_seqs);
    }
    if (fwd->forward_sample && (rc = forward_sample_init(e))) {
        lunar_engine_free(e);
        return rc;
    }
    *out = e;
    return LUNAR_OK;
}

static void req_free(lunar_req_t *r)
{
    if (!r) return;
    for (int i = 0; i < r->params.num_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    if (r->seqs)
        for (int k = 0; k < r->params.n; k++) {
            lunar_seq_t *q = &r->seqs[k];
            free(q->tokens);
            free(q->blocks);
            free(q->hashes);
            free(q->plp);
            free(q->plp_ids);
            free(q->plp_top);
            free(q->text);
            lunar_pen_cache_free(&q->pen);
        }
    free(r->seqs);
    free(r);
}

static void free_nodes(lunar_node_list_t *l)
{
    for (int i = 0; i < l->n; i++) lunar_ev_node_free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

void lunar_engine_free(lunar_engine_t *e)
{
    if (!e) return;
    lunar_engine_stop(e);
    for (int i = 0; i < e->num_live; i++) req_free(e->live[i]);
    for (int i = 0; i < e->num_incoming; i++) req_free(e->incoming[i]);
    free(e->live);
    free(e->incoming);
    free(e->aborts);
    free_nodes(&e->pending);
    free_nodes(&e->delivered);
    free_nodes(&e->pool);
    lunar_sched_destroy(&e->sched);
    lunar_sampler_destroy(&e->sampler);
    free(e->logits);
    free(e->suppress);
    free(e->fs.rows);
    free(e->fs.pen_start);
    free(e->fs.pen_ids);
    free(e->fs.pen_counts);
    free(e->fs.tokens);
    free(e->fs.lp);
    free(e->fs.top_ids);
    free(e->fs.top_lp);
    free(e->dec);
    free(e->dec2);
    free(e->out);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

void lunar_engine_set_notify(lunar_engine_t *e, void (*notify)(void *arg), void *arg)
{
    e->notify = notify;
    e->notify_arg = arg;
}

void lunar_engine_set_logits_hook(lunar_engine_t *e, lunar_logits_hook_fn fn, void *arg)
{
    e->hook = fn;
    e->hook_arg = arg;
}

/* ---- submit / abort ---------------------------------------------------------------------- */

static int validate_request(const lunar_engine_t *e, const lunar_request_t *rq,
                            const lunar_sampling_params_t *p, int *max_tokens)
{
    const lunar_engine_config_t *c = &e->cfg;
    int rc = lunar_sampling_params_validate(p);
    if (rc) return rc;
    int P = rq->num_prompt_ids;
    if (P < 1 || !rq->prompt_ids) return lunar_error(LUNAR_EINVAL, "prompt must contain at least one token");
    for (int i = 0; i < P; i++)
        if (rq->prompt_ids[i] < 0 || rq->prompt_ids[i] >= e->fwd.vocab_size)
            return lunar_error(LUNAR_EINVAL, "prompt token %d at position %d is out of vocabulary (size %d)",
                               (int)rq->prompt_ids[i], i, e->fwd.vocab_size);
    if (p->logprobs > c->max_logprobs)
        return lunar_error(LUNAR_EINVAL, "Requested sample logprobs of %d, which is greater than max allowed: %d",
                           p->logprobs, c->max_logprobs);
    if (p->prompt_logprobs > c->max_logprobs)
        return lunar_error(LUNAR_EINVAL, "Requested prompt logprobs of %d, which is greater than max allowed: %d",
                           p->prompt_logprobs, c->max_logprobs);
    if (p->num_stop > 0 && !(e->has_detok && p->detokenize))
        return lunar_error(LUNAR_EUNSUPPORTED, "stop strings need detokenization (a tokenizer and detokenize=true)");
    if (p->logits_hook && !e->hook)
        return lunar_error(LUNAR_EINVAL, "logits_processors: this engine has no logits hook registered");
    if (P >= c->max_model_len)
        return lunar_error(LUNAR_ERANGE,
                           "This model's maximum context length is %d tokens. However, your request has "
                           "%d input tokens. Please reduce the length of the input messages.",
                           c->max_model_len, P);
    if (p->max_tokens != -1 && (int64_t)P + p->max_tokens > c->max_model_len)
        return lunar_error(LUNAR_ERANGE,
                           "This model's maximum context length is %d tokens. However, you requested %d "
                           "tokens (%d in the messages, %d in the completion). Please reduce the length "
                           "of the messages or completion.",
                           c->max_model_len, P + p->max_tokens, P, p->max_tokens);
    *max_tokens = p->max_tokens == -1 ? c->max_model_len - P : p->max_tokens;
    int blocks = (P + *max_tokens + c->block_size - 1) / c->block_size;
    if (blocks > c->num_blocks)
        return lunar_error(LUNAR_ERANGE,
                           "request needs up to %d tokens (%d KV blocks of %d) but the KV cache holds "
                           "only %d blocks; lower max_tokens or --max-model-len, or give the cache more memory",
                           P + *max_tokens, blocks, c->block_size, c->num_blocks);
    if (!c->enable_chunked_prefill && P + *max_tokens > c->max_num_batched_tokens)
        return lunar_error(LUNAR_ERANGE, "request of %d tokens exceeds max_num_batched_tokens (%d) "
                           "without chunked prefill", P + *max_tokens, c->max_num_batched_tokens);
    return LUNAR_OK;
}

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = __atomic_add_fetch(state, 0x9e3779b97f4a7c15ull, __ATOMIC_RELAXED);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static lunar_req_t *build_request(lunar_engine_t *e, const lunar_request_t *rq,
                                  const lunar_sampling_params_t *p, int max_tokens)
{
    lunar_req_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->params = *p;
    r->params.stop = NULL;
    r->params.stop_token_ids = NULL;
    r->params.num_stop = 0; /* raised as the copies succeed, so req_free frees what exists */
    r->user_data = rq->user_data;
    r->priority = rq->priority;
    r->num_prompt = rq->num_prompt_ids;
    r->max_tokens = max_tokens;
    r->seed = p->has_seed ? p->seed : splitmix(&e->seed_state);
    r->num_unfinished = p->n;
    if (p->num_stop) {
        if (!(r->stop = calloc((size_t)p->num_stop, sizeof *r->stop))) goto fail;
        for (int i = 0; i < p->num_stop; i++) {
            if (!(r->stop[i] = strdup(p->stop[i]))) goto fail;
            r->params.num_stop = i + 1;
        }
        r->params.stop = (const char *const *)r->stop;
    }
    if (p->num_stop_token_ids) {
        if (!(r->stop_ids = malloc((size_t)p->num_stop_token_ids * sizeof *r->stop_ids))) goto fail;
        memcpy(r->stop_ids, p->stop_token_ids, (size_t)p->num_stop_token_ids * sizeof *r->stop_ids);
        r->params.stop_token_ids = r->stop_ids;
    }
    int n = p->n, P = r->num_prompt, B = e->sched.max_blocks_per_seq;
    r->params.n = 0; /* likewise for the sequences */
    if (!(r->seqs = calloc((size_t)n, sizeof *r->seqs))) goto fail;
    r->params.n = n;
    for (int k = 0; k < n; k++) {
        lunar_seq_t *q = &r->seqs[k];
        q->req = r;
        q->seq_index = k;
        q->stop_str_index = -1;
        q->stop_token = -1;
        q->plp_next = 1;
        q->tokens = malloc((size_t)(P + max_tokens) * sizeof *q->tokens);
        q->blocks = malloc((size_t)B * sizeof *q->blocks);
        q->hashes = malloc((size_t)B * sizeof *q->hashes);
        if (!q->tokens || !q->blocks || !q->hashes) goto fail;
        memcpy(q->tokens, rq->prompt_ids, (size_t)P * sizeof *q->tokens);
        q->num_tokens = P;
        if (k == 0 && p->prompt_logprobs >= 0) {
            size_t w = (size_t)P * (size_t)(p->prompt_logprobs > 0 ? p->prompt_logprobs : 1);
            q->plp = malloc((size_t)P * sizeof *q->plp);
            q->plp_ids = calloc(w, sizeof *q->plp_ids);
            q->plp_top = calloc(w, sizeof *q->plp_top);
            if (!q->plp || !q->plp_ids || !q->plp_top) goto fail;
            q->plp[0] = NAN;
        }
        lunar_output_detok_init(e, q);
    }
    return r;
fail:
    req_free(r);
    return NULL;
}

int lunar_engine_submit(lunar_engine_t *e, const lunar_request_t *rq, uint64_t *out_id)
{
    if (out_id) *out_id = 0;
    if (!e || !rq) return lunar_error(LUNAR_EINVAL, "engine_submit: engine and request are required");
    lunar_sampling_params_t defaults;
    const lunar_sampling_params_t *p = rq->params;
    if (!p) {
        lunar_sampling_params_default(&defaults);
        p = &defaults;
    }
    int max_tokens = 0, rc = validate_request(e, rq, p, &max_tokens);
    if (rc) return rc;
    lunar_req_t *r = build_request(e, rq, p, max_tokens);
    if (!r) return lunar_error(LUNAR_ENOMEM, "engine: no memory for a request of %d tokens", rq->num_prompt_ids);
    r->id = __atomic_fetch_add(&e->next_id, 1, __ATOMIC_RELAXED);
    r->arrival_time = lunar_engine_now();
    pthread_mutex_lock(&e->mu);
    if (e->num_incoming == e->cap_incoming) {
        int cap = e->cap_incoming ? e->cap_incoming * 2 : 16;
        lunar_req_t **v = realloc(e->incoming, (size_t)cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&e->mu);
            req_free(r);
            return lunar_error(LUNAR_ENOMEM, "engine: no memory for the submit queue");
        }
        e->incoming = v;
        e->cap_incoming = cap;
    }
    r->arrival_seq = e->next_arrival++; /* under mu: queue order = arrival order */
    uint64_t id = r->id;                /* r belongs to the engine thread from here on */
    e->incoming[e->num_incoming++] = r;
    __atomic_add_fetch(&e->num_unfinished, 1, __ATOMIC_RELAXED);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (out_id) *out_id = id;
    return LUNAR_OK;
}

int lunar_engine_abort(lunar_engine_t *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    if (e->num_aborts == e->cap_aborts) {
        int cap = e->cap_aborts ? e->cap_aborts * 2 : 16;
        uint64_t *v = realloc(e->aborts, (size_t)cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&e->mu);
            return lunar_error(LUNAR_ENOMEM, "engine: no memory for the abort queue");
        }
        e->aborts = v;
        e->cap_aborts = cap;
    }
    e->aborts[e->num_aborts++] = id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return LUNAR_OK;
}

int lunar_engine_num_unfinished(lunar_engine_t *e)
{
    return __atomic_load_n(&e->num_unfinished, __ATOMIC_RELAXED);
}

/* ---- the step ------------------------------------------------------------------------------ */

void lunar_engine_seq_done(lunar_engine_t *e, lunar_seq_t *q)
{
    if (lunar_sched_finish(&e->sched, q))
        lunar_log(LUNAR_LOG_ERROR, "engine", "request %llu: %s", (unsigned long long)q->req->id,
                  lunar_errmsg());
    lunar_req_t *r = q->req;
    pthread_mutex_lock(&e->mu);
    switch (q->finish_reason) {
    case LUNAR_FINISH_STOP: e->stats.request_success_stop++; break;
    case LUNAR_FINISH_LENGTH: e->stats.request_success_length++; break;
    case LUNAR_FINISH_ABORT: e->stats.request_success_abort++; break;
    default: e->stats.requests_errored++; break;
    }
    if (q->finish_reason != LUNAR_FINISH_ABORT)
        lunar_hist_observe(&e->stats.e2e, lunar_engine_now() - r->arrival_time);
    pthread_mutex_unlock(&e->mu);
    if (--r->num_unfinished > 0) return;
    for (int i = 0; i < e->num_live; i++)
        if (e->live[i] == r) {
            e->live[i] = e->live[--e->num_live];
            break;
        }
    req_free(r); /* num_unfinished already dropped with its final event (output.c) */
}

/* Moves submitted requests into the scheduler and applies aborts. */
static int take_inputs(lunar_engine_t *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->num_incoming, na = e->num_aborts, rc = LUNAR_OK;
    if (e->num_live + n > e->cap_live) {
        int cap = e->cap_live ? e->cap_live : 16;
        while (cap < e->num_live + n) cap *= 2;
        lunar_req_t **v = realloc(e->live, (size_t)cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&e->mu);
            return lunar_error(LUNAR_ENOMEM, "engine: no memory for %d requests", cap);
        }
        e->live = v;
        e->cap_live = cap;
    }
    for (int i = 0; i < n; i++) e->live[e->num_live++] = e->incoming[i];
    e->num_incoming = 0;
    uint64_t abort_buf[64];
    if (na > 64) na = 64; /* the rest on the next step */
    if (na) {
        memcpy(abort_buf, e->aborts, (size_t)na * sizeof *abort_buf);
        memmove(e->aborts, e->aborts + na, (size_t)(e->num_aborts - na) * sizeof *e->aborts);
        e->num_aborts -= na;
    }
    pthread_mutex_unlock(&e->mu);
    for (int i = e->num_live - n; i < e->num_live; i++)
        for (int k = 0; k < e->live[i]->params.n; k++) {
            int r = lunar_sched_add(&e->sched, &e->live[i]->seqs[k]);
            if (r) rc = r;
        }
    for (int a = 0; a < na; a++)
        for (int i = 0; i < e->num_live; i++) {
            lunar_req_t *r = e->live[i];
            if (r->id != abort_buf[a]) continue;
            for (int k = 0, left = r->num_unfinished, n_seq = r->params.n; k < n_seq && left > 0; k++) {
                lunar_seq_t *q = &r->seqs[k];
                if (q->state == LUNAR_SEQ_FINISHED) continue;
                left--; /* the last finish frees r: stop counting through it */
                lunar_output_finish(e, q, LUNAR_FINISH_ABORT);
            }
            break;
        }
    return rc;
}

static void publish_gauges(lunar_engine_t *e)
{
    const lunar_sched_t *s = &e->sched;
    int preempted = 0;
    for (int i = 0; i < s->num_waiting; i++) preempted += s->waiting[i]->preempted;
    pthread_mutex_lock(&e->mu);
    lunar_engine_stats_t *st = &e->stats;
    st->num_running = s->num_running;
    st->num_waiting = s->num_waiting;
    st->num_preempted_waiting = preempted;
    st->num_free_blocks = s->pool.num_free;
    st->num_cached_free_blocks = s->pool.num_cached_free;
    st->kv_cache_usage = (double)lunar_kv_num_used(&s->pool) / (double)s->pool.num_blocks;
    st->num_preemptions_total = s->num_preemptions;
    st->prefix_cache_queries = s->prefix_queries;
    st->prefix_cache_hits = s->prefix_hits;
    pthread_mutex_unlock(&e->mu);
}

/* The ids sampling must not produce yet: EOS and stop ids before min_tokens. */
static int suppressed(lunar_engine_t *e, const lunar_seq_t *q)
{
    const lunar_req_t *r = q->req;
    if (q->num_tokens - r->num_prompt >= r->params.min_tokens) return 0;
    int want = 8 + r->params.num_stop_token_ids, n = 0;
    if (want > e->cap_suppress) {
        int32_t *v = realloc(e->suppress, (size_t)want * sizeof *v);
        if (!v) return 0;
        e->suppress = v;
        e->cap_suppress = want;
    }
    for (int i = 0; i < e->cfg.num_eos_token_ids; i++) e->suppress[n++] = e->cfg.eos_token_ids[i];
    for (int i = 0; i < r->params.num_stop_token_ids; i++) e->suppress[n++] = r->stop_ids[i];
    return n;
}

/* What the sampler needs for q's next token (the suppressed ids in e->suppress until the
 * next call). */
static lunar_sample_input_t sample_input(lunar_engine_t *e, lunar_seq_t *q)
{
    const lunar_req_t *r = q->req;
    int P = r->num_prompt, num_suppress = suppressed(e, q); /* may grow e->suppress */
    return (lunar_sample_input_t){
        .params = &r->params, .prompt = q->tokens, .num_prompt = P, .output = q->tokens + P,
        .num_output = q->num_tokens - P, .suppress = e->suppress, .num_suppress = num_suppress,
        .seed = r->seed, .seq_index = q->seq_index, .pen = &q->pen,
    };
}

static int sample_row(lunar_engine_t *e, lunar_seq_t *q, float *row)
{
    lunar_req_t *r = q->req;
    int P = r->num_prompt, V = e->fwd.vocab_size;
    if (r->params.logits_hook &&
        e->hook(e->hook_arg, r->id, q->seq_index, q->tokens, P, q->tokens + P, q->num_tokens - P, row, V)) {
        lunar_log(LUNAR_LOG_WARN, "engine", "request %llu: logits hook failed", (unsigned long long)r->id);
        return lunar_output_finish(e, q, LUNAR_FINISH_ERROR);
    }
    lunar_sample_input_t in = sample_input(e, q);
    int token = lunar_sampler_sample(&e->sampler, row, &in);
    return lunar_output_token(e, q, token, &(lunar_token_lp_t){.row = row});
}

/* 1 when the forward may sample this step itself (forward_sample): no row needs the logits on
 * the host, that is no prompt-logprobs row and no request with a logits hook. */
static int forward_samples(const lunar_engine_t *e)
{
    const lunar_sched_t *s = &e->sched;
    if (!e->fwd.forward_sample || s->batch.num_logits > e->fs.cap_rows) return 0;
    for (int i = 0; i < s->batch.num_logits; i++) {
        const lunar_seq_t *q = s->sched[s->row_seq[i]];
        if (s->row_pos[i] + 1 < q->num_tokens || q->req->params.logits_hook) return 0;
    }
    return 1;
}

static int grow_pen(lunar_engine_t *e, int want)
{
    int cap = e->fs.cap_pen;
    while (cap < want) cap *= 2;
    int32_t *ids = realloc(e->fs.pen_ids, (size_t)cap * sizeof *ids);
    if (ids) e->fs.pen_ids = ids;
    int32_t *counts = ids ? realloc(e->fs.pen_counts, (size_t)cap * sizeof *counts) : NULL;
    if (!counts) return lunar_error(LUNAR_ENOMEM, "engine: no memory for %d penalty entries", cap);
    e->fs.pen_counts = counts;
    e->fs.cap_pen = cap;
    return LUNAR_OK;
}

/* The step's rows as forward_sample takes them: the CPU sampler's inputs of each row, with the
 * prompt/output/suppressed ids turned into penalty entries (lunar_sampler_penalty_list). */
static int build_sample_batch(lunar_engine_t *e, lunar_sample_batch_t *sb)
{
    const lunar_sched_t *s = &e->sched;
    int R = s->batch.num_logits, np = 0, top = 0, any_lp = 0;
    e->fs.pen_start[0] = 0;
    for (int i = 0; i < R; i++) {
        lunar_seq_t *q = s->sched[s->row_seq[i]];
        const lunar_sampling_params_t *p = &q->req->params;
        lunar_sample_input_t in = sample_input(e, q);
        int rc, want = np + lunar_sampler_penalty_max(&in);
        if (want > e->fs.cap_pen && (rc = grow_pen(e, want))) return rc;
        np += lunar_sampler_penalty_list(&e->sampler, &in, e->fs.pen_ids + np, e->fs.pen_counts + np);
        e->fs.pen_start[i + 1] = np;
        e->fs.rows[i] = (lunar_sample_row_t){
            .temperature = p->temperature, .top_p = p->top_p, .min_p = p->min_p,
            .presence_penalty = p->presence_penalty, .frequency_penalty = p->frequency_penalty,
            .repetition_penalty = p->repetition_penalty, .top_k = p->top_k, .seq_index = in.seq_index,
            .position = in.num_output, .logprobs = p->logprobs, .seed = in.seed,
        };
        if (p->logprobs >= 0) any_lp = 1;
        if (p->logprobs > top) top = p->logprobs;
    }
    *sb = (lunar_sample_batch_t){
        .num_rows = R, .rows = e->fs.rows, .pen_start = np ? e->fs.pen_start : NULL,
        .pen_ids = e->fs.pen_ids, .pen_counts = e->fs.pen_counts, .top_stride = top, .tokens = e->fs.tokens,
        .logprobs = any_lp ? e->fs.lp : NULL, .top_ids = any_lp ? e->fs.top_ids : NULL,
        .top_logprobs = any_lp ? e->fs.top_lp : NULL,
    };
    return LUNAR_OK;
}

/* The tokens forward_sample drew, through the same outputs as the host path. */
static int output_sampled(lunar_engine_t *e, const lunar_sample_batch_t *sb)
{
    const lunar_sched_t *s = &e->sched;
    int rc = 0;
    for (int i = 0; i < sb->num_rows; i++) {
        lunar_seq_t *q = s->sched[s->row_seq[i]];
        int32_t t = sb->tokens[i];
        int r;
        if (t < 0 || t >= e->fwd.vocab_size) {
            r = lunar_error(LUNAR_ERANGE, "engine: forward_sample drew token %d for row %d (vocab %d)", (int)t, i,
                            e->fwd.vocab_size);
            lunar_log(LUNAR_LOG_ERROR, "engine", "%s", lunar_errmsg());
            lunar_output_finish(e, q, LUNAR_FINISH_ERROR);
        } else {
            lunar_token_lp_t lp = {0};
            if (sb->logprobs)
                lp = (lunar_token_lp_t){NULL, sb->logprobs[i], sb->top_ids + (size_t)i * sb->top_stride,
                                        sb->top_logprobs + (size_t)i * sb->top_stride};
            r = lunar_output_token(e, q, t, &lp);
        }
        if (r && !rc) rc = r;
    }
    return rc;
}

static int step_once(lunar_engine_t *e)
{
    e->events_this_step = 0;
    int rc = take_inputs(e);
    lunar_sched_t *s = &e->sched;
    int ntok = rc ? 0 : lunar_sched_schedule(s);
    const lunar_batch_t *b = &s->batch;
    double now = lunar_engine_now();
    if (ntok > 0) {
        int V = e->fwd.vocab_size;
        if (b->num_logits > e->cap_logit_rows) { /* prompt_logprobs rows past max_num_seqs */
            float *l = realloc(e->logits, (size_t)b->num_logits * (size_t)V * sizeof *l);
            if (!l) return lunar_error(LUNAR_ENOMEM, "engine: no memory for %d logits rows", b->num_logits);
            e->logits = l;
            e->cap_logit_rows = b->num_logits;
        }
        pthread_mutex_lock(&e->mu);
        for (int k = 0; k < s->num_sched; k++)
            if (!s->sched[k]->first_scheduled) {
                s->sched[k]->first_scheduled = now;
                lunar_hist_observe(&e->stats.queue, now - s->sched[k]->req->arrival_time);
            }
        pthread_mutex_unlock(&e->mu);
        lunar_sample_batch_t sb;
        int on_forward = forward_samples(e);
        if (on_forward) rc = build_sample_batch(e, &sb);
        if (!rc) rc = on_forward ? e->fwd.forward_sample(e->fwd.ctx, b, &sb) : e->fwd.forward(e->fwd.ctx, b, e->logits);
        if (rc) {
            lunar_log(LUNAR_LOG_ERROR, "engine", "forward of %d tokens failed: %s", ntok, lunar_errmsg());
            for (int k = 0; k < s->num_sched; k++) lunar_output_finish(e, s->sched[k], LUNAR_FINISH_ERROR);
        } else {
            lunar_sched_computed(s);
            pthread_mutex_lock(&e->mu);
            e->stats.num_steps++;
            e->stats.forward_tokens_total += (uint64_t)ntok;
            pthread_mutex_unlock(&e->mu);
            if (on_forward) rc = output_sampled(e, &sb);
            for (int i = 0; i < b->num_logits && !on_forward; i++) {
                lunar_seq_t *q = s->sched[s->row_seq[i]];
                float *row = e->logits + (size_t)i * V;
                int pos = s->row_pos[i];
                if (pos + 1 < q->num_tokens) { /* a prompt-logprobs row */
                    int NP = q->req->params.prompt_logprobs, j = pos + 1;
                    lunar_sampler_logprobs(row, V, q->tokens[j], NP, &q->plp[j],
                                           q->plp_ids + (size_t)j * NP, q->plp_top + (size_t)j * NP);
                    q->plp_next = j + 1;
                } else {
                    int r = sample_row(e, q, row);
                    if (r && !rc) rc = r;
                }
            }
        }
    }
    publish_gauges(e);
    lunar_stats_maybe_log(e, now);
    if (e->events_this_step && e->notify) e->notify(e->notify_arg);
    return rc ? rc : ntok;
}

int lunar_engine_step(lunar_engine_t *e)
{
    if (e->threaded) return lunar_error(LUNAR_ESTATE, "engine_step: the engine thread is running");
    return step_once(e);
}

/* ---- threaded mode ------------------------------------------------------------------------- */

static int has_work_locked(lunar_engine_t *e)
{
    return e->num_incoming || e->num_aborts || e->sched.num_running || e->sched.num_waiting;
}

static void *engine_main(void *arg)
{
    lunar_engine_t *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !has_work_locked(e)) pthread_cond_wait(&e->cv, &e->mu);
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        int n = step_once(e);
        if (n == 0) { /* work exists but nothing could run this step: do not spin */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int lunar_engine_start(lunar_engine_t *e)
{
    if (e->threaded) return lunar_error(LUNAR_ESTATE, "engine_start: already started");
    e->stop = 0;
    if (pthread_create(&e->thread, NULL, engine_main, e))
        return lunar_error(LUNAR_ENOMEM, "engine_start: cannot create the engine thread");
    e->threaded = 1;
    return LUNAR_OK;
}

void lunar_engine_stop(lunar_engine_t *e)
{
    if (!e->threaded) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    e->threaded = 0;
}

/* ---- consumer side --------------------------------------------------------------------------- */

int lunar_engine_poll(lunar_engine_t *e, const lunar_event_t **out)
{
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->delivered.n; i++)
        if (lunar_ev_list_push(&e->pool, e->delivered.v[i])) lunar_ev_node_free(e->delivered.v[i]);
    e->delivered.n = 0;
    lunar_node_list_t t = e->delivered;
    e->delivered = e->pending;
    e->pending = t;
    e->gen++;
    pthread_mutex_unlock(&e->mu);
    int n = e->delivered.n;
    if (n > e->cap_out) {
        lunar_event_t *v = realloc(e->out, (size_t)n * sizeof *v);
        if (!v) {
            *out = NULL;
            return lunar_error(LUNAR_ENOMEM, "engine_poll: no memory for %d events", n);
        }
        e->out = v;
        e->cap_out = n;
    }
    for (int i = 0; i < n; i++) {
        lunar_ev_node_t *nd = e->delivered.v[i];
        lunar_event_t *ev = &e->out[i];
        *ev = nd->ev;
        ev->token_ids = nd->ids;
        ev->text = nd->text && ev->text_len ? nd->text : "";
        if (ev->num_top_logprobs >= 0 && ev->num_tokens) {
            ev->logprobs = nd->lp;
            ev->top_ids = nd->top_ids;
            ev->top_logprobs = nd->top_lp;
        }
        if (ev->num_prompt_logprobs) {
            ev->prompt_logprobs = nd->plp;
            ev->prompt_top_ids = nd->plp_ids;
            ev->prompt_top_logprobs = nd->plp_top;
        }
    }
    *out = e->out;
    return n;
}

void lunar_engine_get_stats(lunar_engine_t *e, lunar_engine_stats_t *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}
