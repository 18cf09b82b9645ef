/*
 * test_gpu_sampling.c — sampling on the GPU through the engine (forward_sample: the CUDA
 * backend's sample op over kernels/sampling.cu) against sampling on the host (the same CUDA
 * runner with forward_sample off: logits copied out, the CPU sampler of runtime/sampler).
 *
 * Runs on a machine with a GPU (tests/gpu/run_backend.sh); built whenever CUDA is on so CI
 * compiles it, never registered with ctest. On the shared models (stories260K in float32,
 * TinyStories-656K in bfloat16) a mix of requests (greedy; seeded temperature, top-k, top-p,
 * min-p; repetition/frequency/presence penalties; min_tokens suppression of EOS and stop ids;
 * n = 2; logprobs 0..20) runs once each way on one runner. Every sequence must get the same
 * tokens and finish both ways; logprobs within 1e-4 and the same top ids (ties within 1e-4
 * aside). A second mix adds a prompt_logprobs request: its prefill step falls back to the
 * host, the others still sample on the GPU, and the results still agree. Also:
 * LUNAR_GPU_SAMPLING=0 takes forward_sample away. Then the backend's sample op alone at a
 * vocabulary of 128256: rows of every kind (and logprobs in runs of rows) against the CPU
 * sampler fed the raw prompt/output/suppressed ids, all-greedy rows (the argmax path), and a
 * view of rows from the middle of a batch (penalty offsets not starting at 0), growing the
 * op's buffers from call to call. LUNAR_TEST_QUICK=1 runs the first mix on stories260K only,
 * and the op checks (for compute-sanitizer).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "lunar.h"
#include "lunar/runner.h"
#include "backend/backend.h"
#include "sampler/sampler.h"

enum { NREQ = 16, MAXN = 2, MAXOUT = 48, TOPN = 20 };

static int quick; /* LUNAR_TEST_QUICK=1: stories260K, first mix only (for compute-sanitizer) */

typedef struct {
    lunar_forward_iface_t inner;
    int calls_forward, calls_sample;
} counted_t;

static int c_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    counted_t *c = ctx;
    c->calls_forward++;
    return c->inner.forward(c->inner.ctx, b, logits);
}

static int c_forward_sample(void *ctx, const lunar_batch_t *b, const lunar_sample_batch_t *s)
{
    counted_t *c = ctx;
    c->calls_sample++;
    return c->inner.forward_sample(c->inner.ctx, b, s);
}

typedef struct {
    int32_t prompt[64];
    int np;
    int32_t stop_ids[2];
    lunar_sampling_params_t p;
    int32_t out[MAXN][MAXOUT];
    float lp[MAXN][MAXOUT];
    int32_t top_ids[MAXN][MAXOUT * TOPN];
    float top_lp[MAXN][MAXOUT * TOPN];
    int n[MAXN], finish[MAXN];
} req_t;

static void drain(lunar_engine_t *e)
{
    const lunar_event_t *ev;
    int n = lunar_engine_poll(e, &ev);
    for (int i = 0; i < n; i++) {
        req_t *r = ev[i].user_data;
        int k = ev[i].seq_index, N = ev[i].num_top_logprobs;
        for (int t = 0; t < ev[i].num_tokens && r->n[k] < MAXOUT; t++) {
            int j = r->n[k]++;
            r->out[k][j] = ev[i].token_ids[t];
            if (N < 0) continue;
            r->lp[k][j] = ev[i].logprobs[t];
            for (int m = 0; m < N && m < TOPN; m++) {
                r->top_ids[k][j * TOPN + m] = ev[i].top_ids[t * N + m];
                r->top_lp[k][j * TOPN + m] = ev[i].top_logprobs[t * N + m];
            }
        }
        if (ev[i].finish_reason) r->finish[k] = ev[i].finish_reason;
    }
}

/* Runs reqs together on a fresh engine over the runner's iface; gpu = offer forward_sample. */
static double run(const lunar_forward_iface_t *f, int blocks, const lunar_model_config_t *mc, int gpu, req_t *reqs,
                  int n, counted_t *cnt)
{
    memset(cnt, 0, sizeof *cnt);
    cnt->inner = *f;
    lunar_forward_iface_t w = {cnt, f->vocab_size, c_forward, gpu ? c_forward_sample : NULL};
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = blocks;
    c.max_model_len = 256;
    c.max_num_seqs = 16;
    c.max_num_batched_tokens = 256;
    c.stats_interval_s = 0;
    for (int i = 0; i < mc->num_eos_token_ids && i < 8; i++) c.eos_token_ids[i] = mc->eos_token_ids[i];
    c.num_eos_token_ids = mc->num_eos_token_ids < 8 ? mc->num_eos_token_ids : 8;
    lunar_engine_t *e = NULL;
    CHECK_EQ_INT(lunar_engine_create(&c, &w, NULL, &e), 0);
    if (!e) return 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        req_t *r = &reqs[i];
        memset(r->n, 0, sizeof r->n);
        memset(r->finish, 0, sizeof r->finish);
        r->p.stop_token_ids = r->p.num_stop_token_ids ? r->stop_ids : NULL;
        lunar_request_t rq = {r->prompt, r->np, &r->p, 0, r};
        CHECK_EQ_INT(lunar_engine_submit(e, &rq, NULL), 0);
    }
    for (int guard = 0; lunar_engine_num_unfinished(e) && guard < 10000; guard++) {
        int rc = lunar_engine_step(e);
        CHECK_MSG(rc >= 0, "step failed: %s", lunar_errmsg());
        drain(e);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    lunar_engine_free(e);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
}

static void make_requests(req_t *reqs, int vocab, int with_plp)
{
    uint32_t st = 11;
#define RND(n) ((int)(((st = st * 1103515245u + 12345u) >> 16) % (uint32_t)(n)))
    for (int i = 0; i < NREQ; i++) {
        req_t *r = &reqs[i];
        memset(r, 0, sizeof *r);
        r->np = 8 + RND(50);
        r->prompt[0] = 1; /* BOS */
        for (int k = 1; k < r->np; k++) r->prompt[k] = 3 + RND(vocab - 3);
        lunar_sampling_params_t *p = &r->p;
        lunar_sampling_params_default(p);
        p->max_tokens = 24 + RND(MAXOUT - 24);
        p->has_seed = 1;
        p->seed = 7000 + (uint64_t)i * 131;
        switch (i % 8) {
        case 0: p->temperature = 0; break;
        case 1: p->temperature = 0.8f; break;
        case 2: p->temperature = 1.0f, p->top_k = 20; break;
        case 3: p->temperature = 0.9f, p->top_p = 0.9f; break;
        case 4: p->temperature = 1.2f, p->min_p = 0.1f; break;
        case 5:
            p->temperature = 0.7f, p->top_k = 50, p->top_p = 0.95f;
            p->repetition_penalty = 1.3f, p->frequency_penalty = 0.4f, p->presence_penalty = 0.3f;
            break;
        case 6: /* greedy with penalties and EOS/stop ids suppressed for 10 tokens */
            p->temperature = 0, p->repetition_penalty = 1.5f, p->min_tokens = 10;
            r->stop_ids[0] = 3 + RND(vocab - 3), r->stop_ids[1] = 3 + RND(vocab - 3);
            p->num_stop_token_ids = 2;
            break;
        default: p->temperature = 1.0f, p->n = 2, p->frequency_penalty = 0.5f; break;
        }
        p->logprobs = i % 3 == 0 ? 3 : i == 7 ? 5 : i == 10 ? TOPN : i == 13 ? 0 : -1;
        if (i % 4 == 1) p->ignore_eos = 1;
        if (with_plp && i == 4) p->prompt_logprobs = 2;
    }
#undef RND
}

/* Compares the GPU run (a) with the host run (b); returns sequences identical. */
static int compare(const char *name, const req_t *a, const req_t *b, int *seqs, int *tokens, double *lp_err)
{
    int same = 0;
    *seqs = 0, *tokens = 0, *lp_err = 0;
    for (int i = 0; i < NREQ; i++)
        for (int k = 0; k < a[i].p.n; k++) {
            (*seqs)++;
            int n = a[i].n[k] < b[i].n[k] ? a[i].n[k] : b[i].n[k], div = -1;
            for (int j = 0; j < n && div < 0; j++)
                if (a[i].out[k][j] != b[i].out[k][j]) div = j;
            int ok = div < 0 && a[i].n[k] == b[i].n[k] && a[i].finish[k] == b[i].finish[k];
            CHECK_MSG(ok, "%s request %d seq %d (kind %d): gpu %d tokens, host %d; first difference at %d (%d vs %d)",
                      name, i, k, i % 8, a[i].n[k], b[i].n[k], div, div >= 0 ? a[i].out[k][div] : -1,
                      div >= 0 ? b[i].out[k][div] : -1);
            same += ok;
            *tokens += n;
            int N = a[i].p.logprobs < TOPN ? a[i].p.logprobs : TOPN;
            for (int j = 0; j < n && a[i].p.logprobs >= 0 && (div < 0 || j < div); j++) {
                double d = fabs((double)a[i].lp[k][j] - b[i].lp[k][j]);
                if (!(d <= *lp_err)) *lp_err = d;
                for (int m = 0; m < N; m++) {
                    int ga = a[i].top_ids[k][j * TOPN + m], gb = b[i].top_ids[k][j * TOPN + m];
                    double dv = fabs((double)a[i].top_lp[k][j * TOPN + m] - b[i].top_lp[k][j * TOPN + m]);
                    if (!(dv <= *lp_err)) *lp_err = dv;
                    CHECK_MSG(ga == gb || dv <= 1e-4, "%s request %d token %d: top %d id %d vs %d", name, i, j, m, ga, gb);
                }
            }
        }
    CHECK_MSG(*lp_err <= 1e-4, "%s: logprobs differ by %.3g (1e-4 allowed)", name, *lp_err);
    return same;
}

static void test_model(const char *shared, const char *model, const char *dtype)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/%s", shared, model);
    lunar_load_options_t lo = {.dtype = dtype};
    lunar_model_t *m;
    if (lunar_model_load(dir, &lo, &m)) {
        CHECK_MSG(0, "%s: %s", model, lunar_errmsg());
        return;
    }
    const lunar_model_config_t *mc = lunar_model_config(m);
    lunar_runner_options_t o;
    lunar_runner_options_default(&o);
    o.backend = "cuda";
    o.num_kv_blocks = 512;
    o.max_num_batched_tokens = 256;
    o.max_num_seqs = 16;
    lunar_runner_t *rn = NULL;
    CHECK_EQ_INT(lunar_runner_create(m, &o, &rn), 0);
    if (!rn) {
        lunar_model_free(m);
        return;
    }
    setenv("LUNAR_GPU_SAMPLING", "0", 1);
    lunar_forward_iface_t f;
    lunar_runner_forward_iface(rn, &f);
    CHECK_MSG(f.forward_sample == NULL, "LUNAR_GPU_SAMPLING=0 left forward_sample on");
    unsetenv("LUNAR_GPU_SAMPLING");
    lunar_runner_forward_iface(rn, &f);
    CHECK_MSG(f.forward_sample != NULL, "the cuda runner offers no forward_sample");
    if (!f.forward_sample) {
        lunar_runner_free(rn);
        lunar_model_free(m);
        return;
    }
    static req_t gpu[NREQ], host[NREQ];
    for (int with_plp = 0; with_plp < (quick ? 1 : 2); with_plp++) {
        make_requests(gpu, mc->vocab_size, with_plp);
        memcpy(host, gpu, sizeof gpu);
        counted_t cg, ch;
        double tg = run(&f, o.num_kv_blocks, mc, 1, gpu, NREQ, &cg);
        double th = run(&f, o.num_kv_blocks, mc, 0, host, NREQ, &ch);
        CHECK_EQ_INT(ch.calls_sample, 0);
        CHECK_MSG(cg.calls_sample > 0, "forward_sample never ran");
        if (with_plp) CHECK_MSG(cg.calls_forward > 0, "the prompt_logprobs step did not fall back to the host");
        else CHECK_EQ_INT(cg.calls_forward, 0);
        char name[128];
        snprintf(name, sizeof name, "%s (%s)%s", model, dtype, with_plp ? " + prompt_logprobs" : "");
        int seqs, tokens;
        double lp_err;
        int same = compare(name, gpu, host, &seqs, &tokens, &lp_err);
        printf("gpu sampling %s: %d/%d sequences identical to host sampling (%d tokens), logprobs max |diff| %.2e; "
               "%d gpu-sampled steps, %d host steps; %.3f s gpu, %.3f s host\n",
               name, same, seqs, tokens, lp_err, cg.calls_sample, cg.calls_forward, tg, th);
    }
    lunar_runner_free(rn);
    lunar_model_free(m);
}

/* ---- the backend's sample op alone, at a real vocabulary size ------------------------------ */
static uint32_t rng = 99;
static uint32_t rnd(uint32_t n)
{
    rng = rng * 1664525u + 1013904223u;
    return (rng >> 8) % n;
}

enum { OP_ROWS = 37, OP_VOCAB = 128256, OP_TOP = 5, OP_IDS = 24 };

typedef struct {
    float *logits;                       /* [OP_ROWS][OP_VOCAB] host */
    lunar_sampling_params_t params[OP_ROWS];
    int32_t prompt[OP_ROWS][OP_IDS], output[OP_ROWS][OP_IDS], suppress[OP_ROWS][2];
    lunar_sample_row_t rows[OP_ROWS];
    int32_t pen_start[OP_ROWS + 1], pen_ids[OP_ROWS * 3 * OP_IDS], pen_counts[OP_ROWS * 3 * OP_IDS];
} op_case_t;

static lunar_sample_input_t op_input(const op_case_t *k, int r)
{
    return (lunar_sample_input_t){&k->params[r], k->prompt[r], OP_IDS, k->output[r], OP_IDS, k->suppress[r], 2,
                                  k->params[r].seed, r % 3, NULL};
}

/* Rows of every kind: greedy, temperature, top-k, top-p, min-p, penalties; logprobs on some
 * rows in runs (0..OP_TOP), off on others. all_greedy: temperature 0 and no entries. */
static void op_make(op_case_t *k, lunar_sampler_t *smp, int all_greedy)
{
    for (size_t i = 0; i < (size_t)OP_ROWS * OP_VOCAB; i++)
        k->logits[i] = (float)rnd(1 << 20) / (float)(1 << 17) - 4.0f + (rnd(1000) == 0 ? 5.0f : 0.0f);
    int np = 0;
    for (int r = 0; r < OP_ROWS; r++) {
        lunar_sampling_params_t *p = &k->params[r];
        lunar_sampling_params_default(p);
        int kind = all_greedy ? 0 : r % 7;
        p->temperature = kind == 0 ? 0.0f : 0.5f + 0.25f * (float)(r % 4);
        if (kind == 2 || kind == 6) p->top_k = 1 + (int)rnd(80);
        if (kind == 3 || kind == 6) p->top_p = 0.5f + 0.05f * (float)rnd(10);
        if (kind == 4) p->min_p = 0.05f;
        if (kind == 5 || kind == 6 || (kind == 0 && r % 2 && !all_greedy)) {
            p->repetition_penalty = 1.3f, p->frequency_penalty = 0.4f, p->presence_penalty = 0.2f;
        }
        p->seed = 555 + (uint64_t)r;
        p->logprobs = r % 5 < 3 ? (r * 7) % (OP_TOP + 1) : -1;
        for (int i = 0; i < OP_IDS; i++) {
            k->prompt[r][i] = (int32_t)rnd(OP_VOCAB);
            k->output[r][i] = (int32_t)rnd(300); /* repeats: counts above 1 */
        }
        k->suppress[r][0] = (int32_t)rnd(OP_VOCAB);
        k->suppress[r][1] = k->output[r][3];
        k->pen_start[r] = np;
        lunar_sample_input_t in = op_input(k, r);
        if (all_greedy) in.num_suppress = 0;
        np += lunar_sampler_penalty_list(smp, &in, k->pen_ids + np, k->pen_counts + np);
        k->rows[r] = (lunar_sample_row_t){p->temperature, p->top_p, p->min_p, p->presence_penalty,
                                          p->frequency_penalty, p->repetition_penalty, p->top_k, r % 3,
                                          OP_IDS, p->logprobs, p->seed};
    }
    k->pen_start[OP_ROWS] = np;
}

/* Rows [r0, r1) through the op (a view when r0 > 0), against the CPU sampler and logprobs. */
static void op_check(lunar_backend_t *be, const op_case_t *k, lunar_sampler_t *smp, int r0, int r1, int all_greedy,
                     const char *what)
{
    int R = r1 - r0, np = k->pen_start[OP_ROWS];
    float *d = be->alloc(be, sizeof(float) * (size_t)R * OP_VOCAB);
    CHECK(d != NULL);
    if (!d) return;
    be->copy_in(be, d, k->logits + (size_t)r0 * OP_VOCAB, sizeof(float) * (size_t)R * OP_VOCAB);
    int32_t tokens[OP_ROWS], top_ids[OP_ROWS * OP_TOP];
    float lp[OP_ROWS], top_lp[OP_ROWS * OP_TOP];
    lunar_sample_batch_t s = {R, k->rows + r0, np ? k->pen_start + r0 : NULL, k->pen_ids, k->pen_counts, OP_TOP,
                              tokens, lp, top_ids, top_lp};
    be->sample(be, d, OP_VOCAB, &s);
    int rc = be->end_step(be);
    CHECK_MSG(rc == 0, "%s: %s", what, lunar_errmsg());
    be->dealloc(be, d);
    if (rc) return;
    int bad = 0, idbad = 0;
    double err = 0;
    for (int r = r0; r < r1; r++) {
        const float *row = k->logits + (size_t)r * OP_VOCAB;
        lunar_sample_input_t in = op_input(k, r);
        if (all_greedy) in.num_suppress = 0;
        int want = lunar_sampler_sample(smp, row, &in), got = tokens[r - r0];
        if (got != want && bad++ < 3) fprintf(stderr, "  %s row %d: gpu %d, cpu %d\n", what, r, got, want);
        int N = k->params[r].logprobs;
        if (N < 0) continue;
        float wlp, wtop[OP_TOP];
        int32_t wid[OP_TOP];
        lunar_sampler_logprobs(row, OP_VOCAB, got, N, &wlp, wid, wtop);
        err = fmax(err, fabs((double)lp[r - r0] - wlp));
        for (int m = 0; m < N; m++) {
            idbad += top_ids[(r - r0) * OP_TOP + m] != wid[m];
            err = fmax(err, fabs((double)top_lp[(r - r0) * OP_TOP + m] - wtop[m]));
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d tokens differ from the CPU sampler", what, bad, R);
    CHECK_MSG(idbad == 0 && err <= 1e-4, "%s: %d top ids differ, logprobs off by %.3g", what, idbad, err);
    printf("sample op %s: %d rows, vocab %d: %d/%d tokens as the CPU sampler, top ids %s, logprobs max |diff| %.2e\n",
           what, R, OP_VOCAB, R - bad, R, idbad ? "DIFFER" : "equal", err);
}

static void test_sample_op(void)
{
    lunar_backend_params_t bp = {0, 64, 64, 64, 0, 1};
    lunar_backend_t *be = NULL;
    int rc = lunar_backend_cuda_create(&bp, &be);
    CHECK_MSG(rc == 0, "cuda backend: %s", lunar_errmsg());
    if (rc) return;
    CHECK(be->sample != NULL);
    static op_case_t k;
    k.logits = malloc(sizeof(float) * (size_t)OP_ROWS * OP_VOCAB);
    lunar_sampler_t smp;
    CHECK_EQ_INT(lunar_sampler_init(&smp, OP_VOCAB), 0);
    op_make(&k, &smp, 1); /* small first, so the next calls grow the op's buffers */
    op_check(be, &k, &smp, 0, 5, 1, "all greedy (argmax)");
    op_make(&k, &smp, 0);
    op_check(be, &k, &smp, 0, OP_ROWS, 0, "every kind");
    op_check(be, &k, &smp, 11, OP_ROWS, 0, "a view from row 11");
    lunar_sampler_destroy(&smp);
    free(k.logits);
    be->free(be);
}

int main(void)
{
    const char *shared = getenv("LUNAR_SHARED");
    if (!shared) shared = "../shared";
    if (lunar_device_count() < 1) {
        printf("skipped: no CUDA device\n");
        return CHECK_DONE();
    }
    lunar_log_set_level(LUNAR_LOG_WARN);
    const char *q = getenv("LUNAR_TEST_QUICK");
    quick = q && !strcmp(q, "1");
    test_model(shared, "stories260K", "float32");
    if (!quick) test_model(shared, "TinyStories-656K", "bfloat16");
    test_sample_op();
    return CHECK_DONE();
}
