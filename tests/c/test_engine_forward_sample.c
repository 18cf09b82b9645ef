/* test_engine_forward_sample.c — the engine with a forward that samples (forward_sample, the
 * GPU path of lunar/engine.h) against the same engine sampling on the host.
 *
 * The fake forward_sample computes the fake model's logits, applies each row's penalty entries
 * the way kernels/sampling.cu does (count -1: -inf; else repetition penalty, then
 * frequency * count + presence for counts > 0), and draws with the CPU sampler on the penalized
 * row with every penalty off: so it gives the host path's tokens only if the engine hands over
 * the right rows, penalty lists, suppressed ids, seeds, sequence indices and positions.
 * Checked: seeded sampling with temperature/top-k/top-p/min-p and every penalty, min_tokens
 * suppression, greedy, n > 1 and logprobs give the same tokens and logprobs both ways; steps with
 * a prompt_logprobs row or a logits-hook request fall back to the host path (forward) and
 * others in the same run still sample on the forward; the first spec of a known request
 * exactly; a token outside the vocabulary finishes the step's sequences with "error". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lunar.h"
#include "sampler/sampler.h"

enum { VOCAB = 64, EOS = 1, MAXREQ = 24, MAXN = 2, MAXOUT = 40 };

typedef struct {
    lunar_forward_iface_t inner;
    float *logits;          /* [rows][VOCAB] */
    lunar_sampler_t smp;
    int calls_forward, calls_sample;
    int saw_first;          /* the first spec, kept for the exact check */
    lunar_sample_row_t first_row;
    int32_t first_ids[16], first_counts[16];
    int first_n;
} fake_t;

static int bad_token; /* forward_sample answers VOCAB + 3 */

static int fs_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    fake_t *f = ctx;
    f->calls_forward++;
    return f->inner.forward(f->inner.ctx, b, logits);
}

/* Row r's logits after its penalty entries, as the GPU kernel applies them. */
static void apply_entries(float *x, const lunar_sample_batch_t *s, int r)
{
    const lunar_sample_row_t *p = &s->rows[r];
    int freq = p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f, twice = -1;
    for (int e = s->pen_start[r]; e < s->pen_start[r + 1]; e++) {
        int t = s->pen_ids[e], c = s->pen_counts[e];
        for (int e2 = s->pen_start[r]; e2 < e; e2++)
            if (s->pen_ids[e2] == t) twice = t;
        if (t < 0 || t >= VOCAB) continue;
        if (c < 0) {
            x[t] = -INFINITY;
            continue;
        }
        if (p->repetition_penalty != 1.0f) x[t] = x[t] > 0 ? x[t] / p->repetition_penalty : x[t] * p->repetition_penalty;
        if (freq && c > 0) x[t] -= p->frequency_penalty * (float)c + p->presence_penalty;
    }
    CHECK_MSG(twice < 0, "row %d lists id %d twice", r, twice);
}

static int fs_forward_sample(void *ctx, const lunar_batch_t *b, const lunar_sample_batch_t *s)
{
    fake_t *f = ctx;
    f->calls_sample++;
    CHECK_EQ_INT(s->num_rows, b->num_logits);
    int rc = f->inner.forward(f->inner.ctx, b, f->logits);
    if (rc) return rc;
    if (!f->saw_first && s->num_rows == 1) {
        f->saw_first = 1;
        f->first_row = s->rows[0];
        f->first_n = s->pen_start ? s->pen_start[1] : 0;
        for (int e = 0; e < f->first_n && e < 16; e++) f->first_ids[e] = s->pen_ids[e], f->first_counts[e] = s->pen_counts[e];
    }
    float x[VOCAB];
    for (int r = 0; r < s->num_rows; r++) {
        const lunar_sample_row_t *p = &s->rows[r];
        const float *raw = f->logits + (size_t)r * VOCAB;
        memcpy(x, raw, sizeof x);
        if (s->pen_start) apply_entries(x, s, r);
        lunar_sampling_params_t sp;
        lunar_sampling_params_default(&sp);
        sp.temperature = p->temperature;
        sp.top_p = p->top_p;
        sp.top_k = p->top_k;
        sp.min_p = p->min_p;
        lunar_sample_input_t in = {.params = &sp, .num_output = p->position, .seed = p->seed, .seq_index = p->seq_index};
        s->tokens[r] = bad_token ? VOCAB + 3 : lunar_sampler_sample(&f->smp, x, &in);
        if (p->logprobs >= 0) {
            CHECK(s->logprobs && s->top_ids && s->top_logprobs && s->top_stride >= p->logprobs);
            lunar_sampler_logprobs(raw, VOCAB, s->tokens[r], p->logprobs, &s->logprobs[r],
                                   s->top_ids + (size_t)r * s->top_stride, s->top_logprobs + (size_t)r * s->top_stride);
        }
    }
    return 0;
}

typedef struct {
    int32_t prompt[24];
    int num_prompt;
    int32_t stop_ids[2];
    lunar_sampling_params_t p;
    uint64_t id;
    int32_t out[MAXN][MAXOUT];
    float lp[MAXN][MAXOUT], top_lp[MAXN][MAXOUT * 4];
    int32_t top_ids[MAXN][MAXOUT * 4];
    int num_out[MAXN], finish[MAXN];
    float plp[24];
    int num_plp;
} req_t;

static void drain(lunar_engine_t *e)
{
    const lunar_event_t *ev;
    int n = lunar_engine_poll(e, &ev);
    for (int i = 0; i < n; i++) {
        req_t *r = ev[i].user_data;
        int k = ev[i].seq_index, N = ev[i].num_top_logprobs;
        for (int t = 0; t < ev[i].num_tokens && r->num_out[k] < MAXOUT; t++) {
            int j = r->num_out[k]++;
            r->out[k][j] = ev[i].token_ids[t];
            if (N >= 0) {
                r->lp[k][j] = ev[i].logprobs[t];
                for (int m = 0; m < N && m < 4; m++) {
                    r->top_ids[k][j * 4 + m] = ev[i].top_ids[t * N + m];
                    r->top_lp[k][j * 4 + m] = ev[i].top_logprobs[t * N + m];
                }
            }
        }
        if (ev[i].num_prompt_logprobs) {
            r->num_plp = ev[i].num_prompt_logprobs;
            memcpy(r->plp + 1, ev[i].prompt_logprobs + 1, (size_t)(r->num_plp - 1) * sizeof(float));
        }
        if (ev[i].finish_reason) r->finish[k] = ev[i].finish_reason;
    }
}

/* A logits hook that bans every id divisible by 5 (so the host path's rows differ from the
 * model's, and the hook's requests cannot be sampled on the forward). */
static int ban_fives(void *arg, uint64_t id, int seq_index, const int32_t *prompt, int np, const int32_t *out,
                     int no, float *logits, int vocab)
{
    for (int v = 0; v < vocab; v += 5) logits[v] = -INFINITY;
    return 0;
}

/* Runs reqs[0..n) together on an engine over the fake model; with_sample offers forward_sample. */
static void run(req_t *reqs, int n, int with_sample, fake_t *f, int *step_rc)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.block_size = 4;
    c.num_blocks = 256;
    c.max_model_len = 80;
    c.max_num_seqs = 8;
    c.max_num_batched_tokens = 32;
    c.eos_token_ids[0] = EOS;
    c.num_eos_token_ids = 1;
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    CHECK_EQ_INT(lunar_fake_model_create(VOCAB, c.num_blocks, c.block_size, EOS, 7, &fm), 0);
    memset(f, 0, sizeof *f);
    lunar_fake_model_iface(fm, &f->inner);
    f->logits = malloc(sizeof(float) * VOCAB * 64);
    CHECK_EQ_INT(lunar_sampler_init(&f->smp, VOCAB), 0);
    lunar_forward_iface_t fw = {f, VOCAB, fs_forward, with_sample ? fs_forward_sample : NULL};
    lunar_engine_t *e = NULL;
    CHECK_EQ_INT(lunar_engine_create(&c, &fw, NULL, &e), 0);
    lunar_engine_set_logits_hook(e, ban_fives, NULL);
    for (int i = 0; i < n; i++) {
        req_t *r = &reqs[i];
        memset(r->out, 0, sizeof r->out);
        memset(r->num_out, 0, sizeof r->num_out);
        memset(r->finish, 0, sizeof r->finish);
        r->num_plp = 0;
        r->p.stop_token_ids = r->p.num_stop_token_ids ? r->stop_ids : NULL;
        lunar_request_t rq = {r->prompt, r->num_prompt, &r->p, 0, r};
        CHECK_EQ_INT(lunar_engine_submit(e, &rq, &r->id), 0);
    }
    *step_rc = 0;
    for (int guard = 0; lunar_engine_num_unfinished(e) && guard < 1000; guard++) {
        int rc = lunar_engine_step(e);
        if (rc < 0) *step_rc = rc;
        drain(e);
    }
    CHECK_EQ_INT(lunar_engine_num_unfinished(e), 0);
    lunar_engine_free(e);
    lunar_fake_model_free(fm);
    lunar_sampler_destroy(&f->smp);
    free(f->logits);
}

static uint64_t rng = 12345;
static uint32_t rnd(uint32_t n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33) % n;
}

static void random_request(req_t *r, int i, int host_only)
{
    memset(r, 0, sizeof *r);
    r->num_prompt = 1 + (int)rnd(20);
    for (int t = 0; t < r->num_prompt; t++) r->prompt[t] = 2 + (int)rnd(VOCAB - 2);
    lunar_sampling_params_t *p = &r->p;
    lunar_sampling_params_default(p);
    p->has_seed = 1;
    p->seed = 1000 + (uint64_t)i * 7919;
    p->max_tokens = 4 + (int)rnd(MAXOUT - 4);
    p->n = 1 + (int)rnd(MAXN);
    int kind = i % 8;
    p->temperature = kind == 0 ? 0.0f : 0.4f + 0.3f * (float)rnd(4);
    if (kind == 1 || kind == 5) p->top_k = 1 + (int)rnd(12);
    if (kind == 2 || kind == 5) p->top_p = 0.3f + 0.1f * (float)rnd(7);
    if (kind == 3) p->min_p = 0.05f * (float)(1 + rnd(4));
    if (kind == 4 || kind == 6 || kind == 0) {
        p->repetition_penalty = 1.0f + 0.2f * (float)(1 + rnd(3));
        p->frequency_penalty = 0.25f * (float)rnd(3);
        p->presence_penalty = 0.5f * (float)rnd(2);
    }
    if (kind == 7) p->frequency_penalty = 0.7f; /* output ids only, no prompt entries */
    if (rnd(3) == 0) p->min_tokens = 1 + (int)rnd(6);
    if (rnd(2)) {
        r->stop_ids[0] = 2 + (int)rnd(VOCAB - 2);
        r->stop_ids[1] = 2 + (int)rnd(VOCAB - 2);
        p->num_stop_token_ids = 2;
    }
    p->logprobs = rnd(3) == 0 ? -1 : (int)rnd(5);
    if (host_only) {
        if (rnd(2)) p->prompt_logprobs = (int)rnd(3);
        else p->logits_hook = 1;
    }
}

static int same_outputs(const req_t *a, const req_t *b)
{
    int ok = 1;
    for (int k = 0; k < a->p.n; k++) {
        ok &= a->num_out[k] == b->num_out[k] && a->finish[k] == b->finish[k];
        ok &= !memcmp(a->out[k], b->out[k], sizeof a->out[k]);
        if (a->p.logprobs >= 0)
            for (int j = 0; j < a->num_out[k] && ok; j++) {
                ok &= a->lp[k][j] == b->lp[k][j];
                for (int m = 0; m < a->p.logprobs && m < 4; m++)
                    ok &= a->top_ids[k][j * 4 + m] == b->top_ids[k][j * 4 + m] &&
                          a->top_lp[k][j * 4 + m] == b->top_lp[k][j * 4 + m];
            }
    }
    ok &= a->num_plp == b->num_plp && !memcmp(a->plp, b->plp, sizeof a->plp);
    return ok;
}

/* Same tokens and logprobs with and without forward_sample, over random request mixes. */
static void test_same_tokens_as_host_sampling(void)
{
    static req_t host[MAXREQ], dev[MAXREQ];
    for (int scenario = 0; scenario < 6; scenario++) {
        int n = 4 + (int)rnd(MAXREQ - 4), mixed = scenario >= 3;
        for (int i = 0; i < n; i++) random_request(&host[i], scenario * 100 + i, mixed && rnd(4) == 0);
        memcpy(dev, host, sizeof(req_t) * (size_t)n);
        fake_t fh, fd;
        int rch, rcd;
        run(host, n, 0, &fh, &rch);
        run(dev, n, 1, &fd, &rcd);
        CHECK_EQ_INT(rch, 0);
        CHECK_EQ_INT(rcd, 0);
        CHECK_EQ_INT(fh.calls_sample, 0);
        CHECK_MSG(fd.calls_sample > 0, "scenario %d: forward_sample never called", scenario);
        if (!mixed) CHECK_MSG(fd.calls_forward == 0, "scenario %d: %d host steps without a reason", scenario, fd.calls_forward);
        int tokens = 0;
        for (int i = 0; i < n; i++) {
            CHECK_MSG(same_outputs(&host[i], &dev[i]), "scenario %d request %d (kind %d): outputs differ", scenario, i,
                      (scenario * 100 + i) % 8);
            for (int k = 0; k < host[i].p.n; k++) tokens += host[i].num_out[k];
        }
        CHECK(tokens > n); /* the runs did generate */
    }
}

/* A prompt_logprobs request samples on the host only in its prefill step; a logits-hook request
 * never samples on the forward. */
static void test_fallback_steps(void)
{
    req_t r;
    fake_t f;
    int rc;
    memset(&r, 0, sizeof r);
    r.num_prompt = 6;
    for (int t = 0; t < 6; t++) r.prompt[t] = 10 + t;
    lunar_sampling_params_default(&r.p);
    r.p.max_tokens = 5;
    r.p.ignore_eos = 1;
    r.p.has_seed = 1;
    r.p.seed = 99;
    r.p.prompt_logprobs = 2;
    req_t ref = r;
    run(&r, 1, 1, &f, &rc);
    CHECK_EQ_INT(f.calls_forward, 1);
    CHECK_EQ_INT(f.calls_sample, 4);
    fake_t fh;
    run(&ref, 1, 0, &fh, &rc);
    CHECK(same_outputs(&r, &ref));
    CHECK_EQ_INT(r.num_plp, 6);

    r.p.prompt_logprobs = -1;
    r.p.logits_hook = 1;
    run(&r, 1, 1, &f, &rc);
    CHECK_EQ_INT(f.calls_forward, 5);
    CHECK_EQ_INT(f.calls_sample, 0);
    for (int j = 0; j < r.num_out[0]; j++) CHECK_MSG(r.out[0][j] % 5 != 0, "the hook's ban was ignored");
}

/* The spec of a known first step: prompt ∪ suppressed ids once each, suppressed at -1. */
static void test_first_spec(void)
{
    req_t r;
    fake_t f;
    int rc;
    memset(&r, 0, sizeof r);
    int32_t prompt[] = {5, 6, 5, 7, 9};
    memcpy(r.prompt, prompt, sizeof prompt);
    r.num_prompt = 5;
    lunar_sampling_params_default(&r.p);
    r.p.max_tokens = 2;
    r.p.has_seed = 1;
    r.p.seed = 4242;
    r.p.temperature = 0.7f;
    r.p.top_k = 9;
    r.p.top_p = 0.8f;
    r.p.min_p = 0.1f;
    r.p.repetition_penalty = 1.3f;
    r.p.logprobs = 2;
    r.p.min_tokens = 2;
    r.stop_ids[0] = 9;
    r.p.num_stop_token_ids = 1;
    run(&r, 1, 1, &f, &rc);
    CHECK(f.saw_first);
    const lunar_sample_row_t *p = &f.first_row;
    CHECK(p->temperature == 0.7f && p->top_k == 9 && p->top_p == 0.8f && p->min_p == 0.1f);
    CHECK(p->repetition_penalty == 1.3f && p->seed == 4242 && p->seq_index == 0 && p->position == 0);
    CHECK_EQ_INT(p->logprobs, 2);
    int32_t want_ids[] = {5, 6, 7, 9, EOS}, want_counts[] = {0, 0, 0, -1, -1};
    CHECK_EQ_INT(f.first_n, 5);
    for (int e = 0; e < 5 && f.first_n == 5; e++) {
        CHECK_EQ_INT(f.first_ids[e], want_ids[e]);
        CHECK_EQ_INT(f.first_counts[e], want_counts[e]);
    }
}

/* A token outside the vocabulary from forward_sample: the step fails, its sequences end in error. */
static void test_bad_token_is_an_error(void)
{
    req_t r;
    memset(&r, 0, sizeof r);
    r.num_prompt = 3;
    r.prompt[0] = 4, r.prompt[1] = 5, r.prompt[2] = 6;
    lunar_sampling_params_default(&r.p);
    r.p.max_tokens = 3;
    r.p.n = 2;
    fake_t f;
    int rc;
    bad_token = 1;
    run(&r, 1, 1, &f, &rc);
    bad_token = 0;
    CHECK_EQ_INT(rc, LUNAR_ERANGE);
    CHECK_CONTAINS(lunar_errmsg(), "forward_sample drew token 67");
    CHECK(f.calls_sample >= 1);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(r.finish[k], LUNAR_FINISH_ERROR);
        CHECK_EQ_INT(r.num_out[k], 0);
    }
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_OFF);
    test_same_tokens_as_host_sampling();
    test_fallback_steps();
    test_first_spec();
    test_bad_token_is_an_error();
    return CHECK_DONE();
}
