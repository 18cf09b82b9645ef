/* test_engine.c — the engine under random interleavings of submit / abort / step with a tiny
 * KV pool: no block leaks or double frees (the pool's refcounts equal the block tables of the
 * live sequences after every step), every request that was not aborted finishes, and each
 * one's tokens equal those of the same request run alone on a big pool — through preemption,
 * chunked prefill, prefix caching, n > 1 sharing and both policies. The reference is the
 * request alone: nothing shared, never preempted.
 * Also: prefix caching computes only the suffix, n > 1 shares the prompt, max_model_len. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "lunar.h"

enum { VOCAB = 48, EOS = 1, MAXREQ = 64, MAXN = 3, MAXOUT = 160 };

typedef struct {
    int32_t prompt[120];
    int num_prompt;
    lunar_sampling_params_t p;
    int priority;
    uint64_t id;
    int aborted, submitted;
    int32_t out[MAXN][MAXOUT];
    int num_out[MAXN];
    int finish[MAXN];
    int finish_events[MAXN];
    int cached[MAXN];
    char text[MAXN][1024];
    int text_len[MAXN];
    char stop_buf[2][16];
    const char *stop[2];
    float plp[120];
    int num_plp;
} req_t;

static int stop_string_finishes;

/* Drains events into the requests (matched by user_data). Returns events seen. */
static int drain(lunar_engine_t *e)
{
    const lunar_event_t *ev;
    int n = lunar_engine_poll(e, &ev);
    for (int i = 0; i < n; i++) {
        req_t *r = ev[i].user_data;
        int k = ev[i].seq_index;
        CHECK_MSG(r->finish[k] == 0, "event after finish (req %llu seq %d)", (unsigned long long)r->id, k);
        for (int t = 0; t < ev[i].num_tokens && r->num_out[k] < MAXOUT; t++)
            r->out[k][r->num_out[k]++] = ev[i].token_ids[t];
        CHECK_EQ_INT(ev[i].num_output_tokens, r->num_out[k]);
        r->cached[k] = ev[i].num_cached_tokens;
        if (r->text_len[k] + ev[i].text_len < 1024) {
            memcpy(r->text[k] + r->text_len[k], ev[i].text, (size_t)ev[i].text_len);
            r->text_len[k] += ev[i].text_len;
        }
        if (ev[i].num_prompt_logprobs) {
            CHECK_MSG(r->num_plp == 0, "prompt logprobs delivered twice");
            r->num_plp = ev[i].num_prompt_logprobs;
            memcpy(r->plp, ev[i].prompt_logprobs, (size_t)r->num_plp * sizeof(float));
        }
        if (ev[i].finish_reason) {
            if (ev[i].stop_str) stop_string_finishes++;
            r->finish[k] = ev[i].finish_reason;
            r->finish_events[k]++;
        }
    }
    return n;
}

/* The pool agrees with the live sequences: refcount of each block = number of block tables
 * holding it, the free list holds exactly the unreferenced blocks, once each. */
static int pool_consistent(lunar_engine_t *e)
{
    lunar_sched_t *s = &e->sched;
    lunar_kv_pool_t *p = &s->pool;
    int *want = calloc((size_t)p->num_blocks, sizeof *want), ok = 1;
    for (int i = 0; i < e->num_live; i++)
        for (int k = 0; k < e->live[i]->params.n; k++) {
            lunar_seq_t *q = &e->live[i]->seqs[k];
            if (q->state == LUNAR_SEQ_WAITING && q->num_blocks) ok = 0;
            for (int b = 0; b < q->num_blocks; b++) want[q->blocks[b]]++;
        }
    int nfree = 0, ncached = 0;
    for (int b = p->head, prev = -1; b >= 0; prev = b, b = p->next[b]) {
        if (p->prev[b] != prev || !p->in_free[b] || p->ref[b] != 0 || nfree > p->num_blocks) ok = 0;
        nfree++;
        ncached += p->hashed[b];
        if (nfree > p->num_blocks) break;
    }
    for (int b = 0; b < p->num_blocks; b++)
        if (p->ref[b] != want[b] || p->in_free[b] != (want[b] == 0)) ok = 0;
    if (nfree != p->num_free || ncached != p->num_cached_free) ok = 0;
    free(want);
    return ok;
}

static lunar_engine_t *make_engine(lunar_engine_config_t *c, lunar_fake_model_t **fm)
{
    CHECK_EQ_INT(lunar_fake_model_create(VOCAB, c->num_blocks, c->block_size, EOS, 42, fm), 0);
    lunar_forward_iface_t f;
    lunar_fake_model_iface(*fm, &f);
    lunar_detok_iface_t d;
    lunar_fake_detok_iface(0, &d); /* "w<id> " per token: stop strings can match */
    lunar_engine_t *e = NULL;
    CHECK_EQ_INT(lunar_engine_create(c, &f, &d, &e), 0);
    return e;
}

static int submit(lunar_engine_t *e, req_t *r)
{
    for (int i = 0; i < r->p.num_stop; i++) r->stop[i] = r->stop_buf[i];
    r->p.stop = r->p.num_stop ? r->stop : NULL;
    lunar_request_t rq = {r->prompt, r->num_prompt, &r->p, r->priority, r};
    int rc = lunar_engine_submit(e, &rq, &r->id);
    r->submitted = rc == 0;
    return rc;
}

/* The reference: r alone on a pool big enough for anything, no prefix cache. */
static void run_alone(const req_t *r, req_t *out, int block_size)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.block_size = block_size;
    c.num_blocks = 512;
    c.max_model_len = 200;
    c.enable_prefix_caching = 0;
    c.eos_token_ids[0] = EOS;
    c.num_eos_token_ids = 1;
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    lunar_engine_t *e = make_engine(&c, &fm);
    memset(out, 0, sizeof *out);
    memcpy(out->prompt, r->prompt, sizeof r->prompt);
    memcpy(out->stop_buf, r->stop_buf, sizeof r->stop_buf);
    out->num_prompt = r->num_prompt;
    out->p = r->p;
    CHECK_EQ_INT(submit(e, out), 0);
    for (int guard = 0; lunar_engine_num_unfinished(e) && guard < 10000; guard++) {
        lunar_engine_step(e);
        drain(e);
    }
    lunar_engine_free(e);
    lunar_fake_model_free(fm);
}

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

static int prefixes[4][40];

static void random_request(req_t *r, int with_n)
{
    memset(r, 0, sizeof *r);
    int P = 1 + (int)rnd(40);
    int shared = rnd(3) ? (int)rnd((uint32_t)P + 1) : 0; /* a shared prefix of this length */
    int which = (int)rnd(4);
    for (int i = 0; i < P; i++) r->prompt[i] = i < shared ? prefixes[which][i] : 3 + (int)rnd(VOCAB - 3);
    r->num_prompt = P;
    lunar_sampling_params_default(&r->p);
    r->p.max_tokens = 1 + (int)rnd(40);
    r->p.n = with_n && rnd(4) == 0 ? 2 + (int)rnd(2) : 1;
    if (rnd(2)) {
        r->p.temperature = 0; /* greedy */
    } else {
        r->p.temperature = 0.8f;
        r->p.top_k = rnd(2) ? 8 : -1;
        r->p.top_p = rnd(2) ? 0.9f : 1.0f;
        r->p.has_seed = 1;
        r->p.seed = rnd(1000);
    }
    if (rnd(4) == 0) r->p.min_tokens = (int)rnd((uint32_t)r->p.max_tokens + 1);
    if (rnd(5) == 0) r->p.repetition_penalty = 1.3f;
    if (rnd(8) == 0) r->p.prompt_logprobs = (int)rnd(3);
    if (rnd(8) == 0) r->p.logprobs = (int)rnd(3);
    if (rnd(4) == 0) { /* a stop string: some token's text, or a piece of two */
        r->p.num_stop = 1 + (int)rnd(2);
        snprintf(r->stop_buf[0], 16, "w%d ", 3 + (int)rnd(VOCAB - 3));
        snprintf(r->stop_buf[1], 16, "%d w%d", (int)rnd(10), 3 + (int)rnd(VOCAB - 3));
    }
    r->priority = (int)rnd(3);
}

static int scenario(int index, uint64_t *preemptions, uint64_t *hits)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.block_size = 4;
    c.num_blocks = 24 + (int)rnd(24); /* 96..188 slots: a few requests at a time */
    c.max_model_len = 90;
    c.max_num_seqs = 2 + (int)rnd(8);
    c.max_num_batched_tokens = c.max_num_seqs + (int)rnd(24);
    c.enable_chunked_prefill = rnd(4) != 0;
    if (!c.enable_chunked_prefill) c.max_num_batched_tokens = 90;
    c.enable_prefix_caching = rnd(4) != 0;
    c.policy = rnd(3) == 0 ? LUNAR_SCHED_PRIORITY : LUNAR_SCHED_FCFS;
    c.eos_token_ids[0] = EOS;
    c.num_eos_token_ids = 1;
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    lunar_engine_t *e = make_engine(&c, &fm);
    static req_t reqs[MAXREQ];
    int nreq = 0, ok = 1, actions = 40 + (int)rnd(120);
    for (int a = 0; a < actions; a++) {
        int act = (int)rnd(100);
        if (act < 30 && nreq < MAXREQ) {
            req_t *r = &reqs[nreq];
            random_request(r, 1);
            if (submit(e, r) == 0) nreq++;
        } else if (act < 36 && nreq > 0) {
            req_t *r = &reqs[rnd((uint32_t)nreq)];
            r->aborted = 1;
            lunar_engine_abort(e, r->id);
        } else {
            if (lunar_engine_step(e) < 0) ok = 0;
            drain(e);
        }
        if (!pool_consistent(e)) {
            ok = 0;
            break;
        }
    }
    int guard = 0;
    for (; lunar_engine_num_unfinished(e) && guard < 20000; guard++) {
        if (lunar_engine_step(e) < 0) ok = 0;
        drain(e);
        if (!pool_consistent(e)) {
            ok = 0;
            break;
        }
    }
    CHECK_MSG(guard < 20000, "scenario %d: requests never finished (starved)", index);
    lunar_engine_stats_t st;
    lunar_engine_get_stats(e, &st);
    *preemptions += st.num_preemptions_total;
    *hits += st.prefix_cache_hits;
    /* nothing leaked: every block free once all requests are done */
    CHECK_EQ_INT(e->sched.pool.num_free, c.num_blocks);
    for (int i = 0; i < nreq; i++) {
        req_t *r = &reqs[i];
        static req_t alone;
        if (!r->aborted) run_alone(r, &alone, c.block_size);
        for (int k = 0; k < r->p.n; k++) {
            if (r->finish_events[k] != 1) ok = 0;
            if (r->aborted) continue; /* its output so far may be anything up to the abort */
            if (r->finish[k] == LUNAR_FINISH_ABORT || r->num_out[k] != alone.num_out[k] ||
                memcmp(r->out[k], alone.out[k], (size_t)r->num_out[k] * sizeof(int32_t)) ||
                r->finish[k] != alone.finish[k] || r->text_len[k] != alone.text_len[k] ||
                memcmp(r->text[k], alone.text[k], (size_t)r->text_len[k]) ||
                r->num_plp != alone.num_plp ||
                (r->num_plp > 1 && memcmp(r->plp + 1, alone.plp + 1, (size_t)(r->num_plp - 1) * sizeof(float)))) {
                CHECK_MSG(0, "scenario %d request %d seq %d: %d tokens (finish %d), alone %d (finish %d)",
                          index, i, k, r->num_out[k], r->finish[k], alone.num_out[k], alone.finish[k]);
                ok = 0;
            }
        }
    }
    lunar_engine_free(e);
    lunar_fake_model_free(fm);
    return ok;
}

static void test_interleavings(void)
{
    rng_state = 20261125;
    for (int w = 0; w < 4; w++)
        for (int i = 0; i < 40; i++) prefixes[w][i] = 3 + (int)rnd(VOCAB - 3);
    uint64_t preemptions = 0, hits = 0;
    int failed = 0, n = 2000;
    for (int i = 0; i < n; i++)
        if (!scenario(i, &preemptions, &hits)) failed++;
    printf("interleavings: %d scenarios, %d failed, %llu preemptions, %llu prefix-hit tokens, "
           "%d stop-string finishes\n", n, failed, (unsigned long long)preemptions,
           (unsigned long long)hits, stop_string_finishes);
    CHECK_EQ_INT(failed, 0);
    CHECK(preemptions > 100); /* the tiny pools really did preempt */
    CHECK(hits > 1000);       /* and the shared prefixes were reused */
    CHECK(stop_string_finishes > 100);
}

/* Request 2 shares a 1,000-token prefix with request 1: the forward computes only its
 * suffix (and its decodes), and reports the cached tokens. */
static void test_prefix_caching(void)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = 200;
    c.max_model_len = 2048;
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    lunar_engine_t *e = make_engine(&c, &fm);
    static req_t a, b, alone;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int32_t big[1030];
    for (int i = 0; i < 1030; i++) big[i] = 3 + (i * 7919) % (VOCAB - 3);
    lunar_request_t rq;
    lunar_sampling_params_t p;
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = 5;
    p.ignore_eos = 1;
    memcpy(a.prompt, big, 0); /* prompts longer than req_t holds: submit directly */
    rq = (lunar_request_t){big, 1020, &p, 0, &a};
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &a.id), 0);
    while (lunar_engine_num_unfinished(e)) {
        lunar_engine_step(e);
        drain(e);
    }
    uint64_t before = lunar_fake_model_tokens_computed(fm);
    CHECK_EQ_INT(before, 1020 + 4);
    int32_t second[1024];
    memcpy(second, big, 1000 * sizeof *second);
    for (int i = 1000; i < 1024; i++) second[i] = 3 + (i * 31) % (VOCAB - 3);
    rq = (lunar_request_t){second, 1024, &p, 0, &b};
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &b.id), 0);
    while (lunar_engine_num_unfinished(e)) {
        lunar_engine_step(e);
        drain(e);
    }
    uint64_t computed = lunar_fake_model_tokens_computed(fm) - before;
    /* 62 full blocks (992 tokens) of the shared 1,000 are cached; 32 prompt tokens + 4 decodes */
    printf("prefix caching: second request computed %llu tokens (prompt 1024, cached %d)\n",
           (unsigned long long)computed, b.cached[0]);
    CHECK_EQ_INT(b.cached[0], 992);
    CHECK_EQ_INT(computed, 1024 - 992 + 4);
    lunar_engine_stats_t st;
    lunar_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_cache_queries, 1020 + 1024);
    CHECK_EQ_INT(st.prefix_cache_hits, 992);
    lunar_engine_free(e);
    lunar_fake_model_free(fm);
    /* same tokens as computing it all */
    c.enable_prefix_caching = 0;
    e = make_engine(&c, &fm);
    memset(&alone, 0, sizeof alone);
    rq.user_data = &alone;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &alone.id), 0);
    while (lunar_engine_num_unfinished(e)) {
        lunar_engine_step(e);
        drain(e);
    }
    CHECK_EQ_INT(lunar_fake_model_tokens_computed(fm), 1024 + 4);
    CHECK_EQ_INT(alone.num_out[0], 5);
    CHECK(!memcmp(alone.out[0], b.out[0], 5 * sizeof(int32_t)));
    lunar_engine_free(e);
    lunar_fake_model_free(fm);
}

/* n = 3 computes the prompt's full blocks once; with or without the prefix cache the three
 * sequences are the same (seeded), and differ from each other. */
static void test_n_shares_prompt(void)
{
    int32_t prompt[50];
    for (int i = 0; i < 50; i++) prompt[i] = 3 + (i * 13) % (VOCAB - 3);
    static req_t r[2];
    uint64_t computed[2];
    for (int caching = 0; caching < 2; caching++) {
        lunar_engine_config_t c;
        lunar_engine_config_default(&c);
        c.num_blocks = 64;
        c.max_model_len = 128;
        c.enable_prefix_caching = caching;
        c.stats_interval_s = 0;
        lunar_fake_model_t *fm;
        lunar_engine_t *e = make_engine(&c, &fm);
        memset(&r[caching], 0, sizeof r[caching]);
        lunar_sampling_params_t p;
        lunar_sampling_params_default(&p);
        p.n = 3;
        p.has_seed = 1;
        p.seed = 77;
        p.max_tokens = 10;
        p.ignore_eos = 1;
        lunar_request_t rq = {prompt, 50, &p, 0, &r[caching]};
        CHECK_EQ_INT(lunar_engine_submit(e, &rq, &r[caching].id), 0);
        while (lunar_engine_num_unfinished(e)) {
            lunar_engine_step(e);
            drain(e);
        }
        computed[caching] = lunar_fake_model_tokens_computed(fm);
        CHECK_EQ_INT(r[caching].cached[1], 48); /* 3 full blocks of 16 of the 49 before the last */
        CHECK_EQ_INT(r[caching].cached[2], 48);
        lunar_engine_free(e);
        lunar_fake_model_free(fm);
    }
    /* 50 + 2 * 2 prompt tokens, and 3 * 9 decodes */
    CHECK_EQ_INT(computed[0], 50 + 2 * 2 + 27);
    CHECK_EQ_INT(computed[1], 50 + 2 * 2 + 27);
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_INT(r[0].num_out[k], 10);
        CHECK(!memcmp(r[0].out[k], r[1].out[k], 10 * sizeof(int32_t)));
    }
    CHECK(memcmp(r[0].out[0], r[0].out[1], 10 * sizeof(int32_t)));
}

static void test_limits(void)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = 8;
    c.max_model_len = 100;
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    lunar_engine_t *e = make_engine(&c, &fm);
    int32_t prompt[120] = {0};
    lunar_sampling_params_t p;
    lunar_sampling_params_default(&p);
    p.max_tokens = 50;
    lunar_request_t rq = {prompt, 60, &p, 0, NULL};
    uint64_t id;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), LUNAR_ERANGE);
    CHECK_STR(lunar_errmsg(), "This model's maximum context length is 100 tokens. However, you requested "
                              "110 tokens (60 in the messages, 50 in the completion). Please reduce the "
                              "length of the messages or completion.");
    rq.num_prompt_ids = 100;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), LUNAR_ERANGE);
    CHECK_CONTAINS(lunar_errmsg(), "However, your request has 100 input tokens.");
    p.max_tokens = 40;
    rq.num_prompt_ids = 60; /* 100 tokens > 8 blocks of 16 */
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), 0);
    p.max_tokens = 16;
    p.logprobs = 21;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "Requested sample logprobs of 21, which is greater than max allowed: 20");
    p.logprobs = -1;
    p.temperature = -1;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "temperature must be >= 0, got -1");
    p.temperature = 1;
    const char *stop[] = {"x"};
    p.stop = stop;
    p.num_stop = 1;
    p.detokenize = 0; /* stop strings need text */
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), LUNAR_EUNSUPPORTED);
    p.num_stop = 0;
    p.detokenize = 1;
    prompt[3] = VOCAB;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "out of vocabulary");
    lunar_engine_free(e);
    lunar_fake_model_free(fm);

    c.max_num_batched_tokens = 8;
    c.max_num_seqs = 16;
    CHECK_EQ_INT(lunar_engine_create(&c, &(lunar_forward_iface_t){NULL, 8, NULL, NULL}, NULL, &e), LUNAR_EINVAL);
    lunar_forward_iface_t f = {NULL, 8, (int (*)(void *, const lunar_batch_t *, float *))1, NULL};
    CHECK_EQ_INT(lunar_engine_create(&c, &f, NULL, &e), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "max_num_batched_tokens (8) must be greater than or equal to max_num_seqs (16)");
}

/* The fake model behind a recorder of each step's block-table width and longest context. */
typedef struct {
    lunar_forward_iface_t inner;
    int bs, steps, widest, too_wide;
} width_rec_t;

static int width_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    width_rec_t *w = ctx;
    int need = 1;
    for (int s = 0; s < b->num_seqs; s++) {
        int nb = (b->seq_lens[s] + w->bs - 1) / w->bs;
        if (nb > need) need = nb;
    }
    /* a scheduled sequence may hold one block ahead of its context, never more */
    if (b->max_blocks_per_seq > need + 1) w->too_wide = 1;
    if (b->max_blocks_per_seq > w->widest) w->widest = b->max_blocks_per_seq;
    w->steps++;
    return w->inner.forward(w->inner.ctx, b, logits);
}

/* Block tables are as wide as the step's longest context needs, not max_model_len: the CUDA
 * backend plans attention splits from the width and copies the tables every step. */
static void test_table_width(void)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.block_size = 4;
    c.num_blocks = 256;
    c.max_model_len = 4096; /* 1,024 blocks of 4 */
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    CHECK_EQ_INT(lunar_fake_model_create(VOCAB, c.num_blocks, c.block_size, EOS, 42, &fm), 0);
    width_rec_t w = {.bs = c.block_size};
    lunar_fake_model_iface(fm, &w.inner);
    lunar_forward_iface_t f = {&w, w.inner.vocab_size, width_forward, NULL};
    lunar_engine_t *e = NULL;
    CHECK_EQ_INT(lunar_engine_create(&c, &f, NULL, &e), 0);
    int32_t prompt[30];
    for (int i = 0; i < 30; i++) prompt[i] = 2 + i % 20;
    lunar_sampling_params_t p;
    lunar_sampling_params_default(&p);
    p.max_tokens = 12;
    p.ignore_eos = 1;
    p.detokenize = 0;
    uint64_t id;
    for (int k = 0; k < 3; k++) { /* contexts of 10, 20 and 30 prompt tokens, decoding together */
        lunar_request_t rq = {prompt, 10 * (k + 1), &p, 0, NULL};
        CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), 0);
    }
    for (int i = 0; i < 100 && lunar_engine_num_unfinished(e); i++) lunar_engine_step(e);
    CHECK_EQ_INT(lunar_engine_num_unfinished(e), 0);
    CHECK_MSG(w.steps > 0 && !w.too_wide, "block-table width beyond the longest context (widest %d)", w.widest);
    CHECK_MSG(w.widest <= (30 + 12 + 3) / 4 + 1, "widest table %d blocks for 42-token contexts", w.widest);
    lunar_engine_free(e);
    lunar_fake_model_free(fm);
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_WARN);
    test_limits();
    test_table_width();
    test_prefix_caching();
    test_n_shares_prompt();
    test_interleavings();
    return CHECK_DONE();
}
