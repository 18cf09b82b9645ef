/*
 * test_backend_cuda.c — the CUDA backend end to end, against transformers and the CPU backend.
 *
 * Runs on a machine with a GPU (tests/gpu/run_backend.sh); built whenever CUDA is on so CI
 * compiles it, never registered with ctest (CI has no GPU). LUNAR_TEST_QUICK=1 runs a small
 * subset (one fixture, one mixed batch, the bf16 GEMMs) for compute-sanitizer.
 *
 *  1. The tiny HF fixtures (tests/fixtures/runner/<case>, f32): CUDA logits of every position,
 *     whole prompt, chunks of 7 and one token at a time, within test_runner_reference.c's
 *     tolerance of transformers (1e-4 + 1e-5 |ref|), and within the same of the CPU backend.
 *  2. Greedy ids of the shared models (loaded as float32) equal model.generate's
 *     (tests/fixtures/runner/greedy), as the CPU backend's do.
 *  3. Odd batch compositions: four sequences through three steps that mix whole prefills,
 *     chunked prefills, a one-token prefill and decodes, over scattered block tables, with the
 *     logits of every token, compared between CPU and CUDA backends on the same batches; once
 *     more with the plain attention kernel forced (LUNAR_CUDA_ATTN=generic); decode steps
 *     replayed from CUDA graphs equal eager ones bit for bit.
 *  4. The bf16 mode (activations, KV and weights in bfloat16) on the same fixtures: within a
 *     loose bound of the transformers logits (bf16 keeps 8 bits: about 1e-2 relative per value);
 *     and the bf16 GEMM/logits ops (cuBLAS; stacked q/k/v and gate/up groups) against a double
 *     product of the same bf16 values.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "runner_ref.h"
#include "lunar.h"
#include "lunar/runner.h"
#include "backend/backend.h"

/* Largest |a - ref|, counting elements over 1e-4 + 1e-5 |ref| (printing the first few). */
static double compare(const char *what, const float *a, const float *ref, size_t n, int V, int *bad)
{
    double worst = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= worst)) worst = d; /* NaN counts as worst */
        if (!(d <= 1e-4 + 1e-5 * fabs(ref[i])) && (*bad)++ < 3)
            fprintf(stderr, "  %s: row %zu token %zu: cuda %.7g, reference %.7g\n", what, i / V, i % V, a[i], ref[i]);
    }
    return worst;
}

static void ref_logits(const cJSON *rows, float *out, int T, int V)
{
    int t = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        if (t >= T) break;
        int v = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, row) if (v < V) out[(size_t)t * V + v++] = (float)e->valuedouble;
        t++;
    }
}

/* Every position's logits by one of three step patterns: 0 whole, 1 chunks of 7, 2 decode. */
static int run_pattern(lunar_runner_t *r, const int32_t *ids, int T, int V, int pattern, float *logits)
{
    int rc = 0;
    if (pattern == 0) return step(r, ids, 0, T, 1, logits);
    int chunk = pattern == 1 ? 7 : 1;
    for (int from = 0; from < T && !rc; from += chunk) {
        int to = from + chunk < T ? from + chunk : T;
        rc = step(r, ids, from, to, 1, logits + (size_t)from * V);
    }
    return rc;
}

static void check_case(const char *name)
{
    static const char *pattern_name[] = {"prefill", "chunked", "decode"};
    char rel[256];
    snprintf(rel, sizeof rel, "%s/reference.json", name);
    cJSON *ref = read_json(fixture(rel));
    if (!ref) return;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", fixture(name));
    lunar_model_t *m = load(dir, "float32"), *mb = load(dir, "bfloat16");
    if (!m || !mb) {
        lunar_model_free(m), lunar_model_free(mb), cJSON_Delete(ref);
        return;
    }
    const lunar_model_config_t *c = lunar_model_config(m);
    int V = c->vocab_size;
    static int32_t ids[MAXT];
    int T = int_array(cJSON_GetObjectItem(ref, "input_ids"), ids, MAXT);
    size_t n = (size_t)T * V;
    float *hf = calloc(n, sizeof(float)), *cpu = calloc(n, sizeof(float)), *gpu = calloc(n, sizeof(float));
    ref_logits(cJSON_GetObjectItem(ref, "logits"), hf, T, V);

    /* dynamic NTK: only the one-step forward matches transformers (test_runner_reference.c) */
    int npatterns = c->rope.type == LUNAR_ROPE_DYNAMIC ? 1 : 3;
    for (int p = 0; p < npatterns; p++) {
        lunar_runner_t *rc_ = make_runner(m, "cpu"), *rg = make_runner(m, "cuda");
        if (!rc_ || !rg) {
            lunar_runner_free(rc_), lunar_runner_free(rg);
            continue;
        }
        CHECK_EQ_INT(run_pattern(rc_, ids, T, V, p, cpu), 0);
        for (size_t i = 0; i < n; i++) gpu[i] = NAN; /* poison: every row must be written */
        int rc = run_pattern(rg, ids, T, V, p, gpu);
        CHECK_MSG(rc == 0, "%s %s on cuda: %s", name, pattern_name[p], lunar_errmsg());
        int bad_hf, bad_cpu;
        double w_hf = compare(name, gpu, hf, n, V, &bad_hf), w_cpu = compare(name, gpu, cpu, n, V, &bad_cpu);
        CHECK_MSG(bad_hf == 0, "%s %s: cuda logits differ from transformers (%d values, worst %.3g)", name,
                  pattern_name[p], bad_hf, w_hf);
        CHECK_MSG(bad_cpu == 0, "%s %s: cuda logits differ from the cpu backend (%d values, worst %.3g)", name,
                  pattern_name[p], bad_cpu, w_cpu);
        printf("%-24s f32  %-8s max |cuda - transformers| = %.3g   max |cuda - cpu| = %.3g\n", name,
               pattern_name[p], w_hf, w_cpu);
        lunar_runner_free(rc_), lunar_runner_free(rg);
    }

    /* bf16: one whole-prompt step, relative to the largest f32 logit */
    lunar_runner_t *rb = make_runner(mb, "cuda");
    if (rb) {
        CHECK_EQ_INT(step(rb, ids, 0, T, 1, gpu), 0);
        double worst = 0, top = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)gpu[i] - hf[i]);
            if (!(d <= worst)) worst = d;
            if (fabs(hf[i]) > top) top = fabs(hf[i]);
        }
        CHECK_MSG(worst <= 5e-2 * top, "%s bf16: max |cuda - transformers| %.3g over 5%% of max |logit| %.3g", name,
                  worst, top);
        printf("%-24s bf16 prefill  max |cuda - transformers| = %.3g (max |logit| %.3g)\n", name, worst, top);
        lunar_runner_free(rb);
    }
    free(hf), free(cpu), free(gpu);
    lunar_model_free(m), lunar_model_free(mb);
    cJSON_Delete(ref);
}

/* Four sequences through three steps of mixed shapes, blocks scattered (sequence s owns blocks
 * s, s + 4, s + 8, ...), logits of every token; the same batches on cpu and cuda. */
/* The GEMM and logits ops in bf16 against a double-precision product of the same bf16 values,
 * for 1..9 rows over every matrix shape of a bf16 model.
 * Bound: bf16 output rounding (2^-8 of |y|) plus 1e-3 of the largest |y| for f32 accumulation
 * in another order; an indexing mistake is off by the size of y itself. */
void dtype_convert(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n);

static void check_gemm_bf16(const char *name)
{
    lunar_model_t *m = shared_model(name, "bfloat16");
    if (!m) return;
    const lunar_weights_t *w = lunar_model_weights(m);
    const lunar_model_config_t *c = lunar_model_config(m);
    int maxk = c->hidden_size > c->intermediate_size ? c->hidden_size : c->intermediate_size;
    lunar_backend_params_t bp = {1, maxk, 16, c->head_dim, 0, 0};
    lunar_backend_t *be = NULL;
    int rc = lunar_backend_create("cuda", &bp, &be);
    CHECK_MSG(rc == 0, "cuda backend: %s", lunar_errmsg());
    if (rc) { lunar_model_free(m); return; }
    CHECK_EQ_INT(be->prepare(be, m), 0);
    const lunar_tensor_t *mats[] = {w->layers[0].wq, w->layers[0].wk, w->layers[0].w_gate, w->layers[0].w_down,
                                    w->lm_head};
    size_t cap = (size_t)16 * c->vocab_size;
    float *xf = malloc(sizeof(float) * 16 * maxk), *yf = malloc(sizeof(float) * cap), *wf = NULL;
    double *ref64 = malloc(sizeof(double) * cap);
    uint16_t *xb = malloc(2 * (size_t)16 * maxk), *yb = malloc(2 * cap);
    void *dx = be->alloc(be, 2 * (size_t)16 * maxk), *dy = be->alloc(be, 4 * cap);
    static int32_t zeros[16], li[16], qs[2] = {0, 0}, lens[1], bt[1];
    static int64_t slots[16];
    for (size_t i = 0; i < sizeof mats / sizeof *mats; i++) {
        const lunar_tensor_t *W = mats[i];
        int N = (int)W->shape[0], K = (int)W->shape[1], logits = W == w->lm_head;
        wf = realloc(wf, sizeof(float) * (size_t)N * K);
        dtype_convert(LUNAR_DTYPE_F32, wf, W->dtype, W->data, (size_t)N * K);
        for (int T = 1; T <= 9; T++) {
            for (int k = 0; k < T * K; k++) xf[k] = (float)sin(0.37 * k + T) * 2.0f;
            dtype_convert(LUNAR_DTYPE_BF16, xb, LUNAR_DTYPE_F32, xf, (size_t)T * K);
            dtype_convert(LUNAR_DTYPE_F32, xf, LUNAR_DTYPE_BF16, xb, (size_t)T * K);
            be->copy_in(be, dx, xb, 2 * (size_t)T * K);
            for (int t = 0; t < T; t++) li[t] = t;
            qs[1] = T, lens[0] = T;
            lunar_batch_t b = {T, 1, zeros, zeros, slots, qs, lens, bt, 1, li, T};
            CHECK_EQ_INT(be->begin_step(be, &b), 0);
            if (logits) be->logits(be, dy, dx, &b, 0, T, W);
            else be->gemm(be, dy, dx, T, W, NULL);
            if (logits) be->copy_out(be, yf, dy, 4 * (size_t)T * N);
            else {
                be->copy_out(be, yb, dy, 2 * (size_t)T * N);
                dtype_convert(LUNAR_DTYPE_F32, yf, LUNAR_DTYPE_BF16, yb, (size_t)T * N);
            }
            rc = be->end_step(be);
            CHECK_MSG(rc == 0, "%s gemm: %s", name, lunar_errmsg());
            double worst = 0, top = 1e-30;
            int bad = 0;
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++) {
                    double ref = 0;
                    for (int k = 0; k < K; k++) ref += (double)xf[t * K + k] * wf[(size_t)n * K + k];
                    ref64[(size_t)t * N + n] = ref;
                    if (fabs(ref) > top) top = fabs(ref);
                }
            for (size_t j = 0; j < (size_t)T * N; j++) {
                double d = fabs(yf[j] - ref64[j]);
                if (!(d <= worst)) worst = d;
                if (!(d <= (logits ? 1e-5 : 8e-3) * fabs(ref64[j]) + 1e-3 * top)) bad++;
            }
            CHECK_MSG(bad == 0, "%s bf16 %s %s, %d rows: %d values off (worst %.3g, max |y| %.3g)", name,
                      logits ? "logits" : "gemm", W->name, T, bad, worst, top);
            if (T == 1 || T == 9)
                printf("%-24s bf16 %-6s %-40s T=%d max |cuda - f64| = %.3g (max |y| %.3g)\n", name,
                       logits ? "logits" : "gemm", W->name, T, worst, top);
        }
    }
    be->dealloc(be, dx), be->dealloc(be, dy);
    free(xf), free(yf), free(wf), free(xb), free(yb), free(ref64);
    be->free(be);
    lunar_model_free(m);
}

#define NSEQ 4
static void check_mixed(const char *name)
{
    lunar_model_t *m = shared_model(name, "float32");
    if (!m) return;
    int V = lunar_model_config(m)->vocab_size;
    /* tokens each sequence computes in each step (0 = absent): A whole prefill then decodes,
     * B chunked prefill 5 + 4 then a decode, C arrives in step 2, D (one token) in step 2 */
    static const int sched[3][NSEQ] = {{11, 5, 0, 0}, {1, 4, 3, 1}, {1, 1, 1, 1}};
    int32_t toks[NSEQ][32];
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < 32; i++) toks[s][i] = (int32_t)((7 + 31 * s + 13 * i + (i * i) % 17) % V);
    lunar_runner_t *rc_ = make_runner(m, "cpu"), *rg = make_runner(m, "cuda");
    int done[NSEQ] = {0};
    static int32_t ids[64], pos[64], qs[NSEQ + 1], lens[NSEQ], tabs[NSEQ * 8], li[64];
    static int64_t slot[64];
    float *cpu = malloc(sizeof(float) * 64 * V), *gpu = malloc(sizeof(float) * 64 * V);
    for (int st = 0; rc_ && rg && st < 3; st++) {
        int T = 0, ns = 0;
        qs[0] = 0;
        for (int s = 0; s < NSEQ; s++) {
            int k = sched[st][s];
            if (!k) continue;
            for (int i = 0; i < 8; i++) tabs[ns * 8 + i] = s + NSEQ * i;
            for (int i = 0; i < k; i++) {
                int p = done[s] + i;
                ids[T] = toks[s][p], pos[T] = p;
                slot[T] = (int64_t)tabs[ns * 8 + p / BS] * BS + p % BS;
                li[T] = T;
                T++;
            }
            done[s] += k;
            lens[ns] = done[s];
            qs[++ns] = T;
        }
        lunar_batch_t b = {T, ns, ids, pos, slot, qs, lens, tabs, 8, li, T};
        CHECK_EQ_INT(lunar_runner_forward(rc_, &b, cpu), 0);
        for (size_t i = 0; i < (size_t)T * V; i++) gpu[i] = NAN;
        int rc = lunar_runner_forward(rg, &b, gpu);
        CHECK_MSG(rc == 0, "%s mixed step %d: %s", name, st, lunar_errmsg());
        int bad;
        double worst = compare(name, gpu, cpu, (size_t)T * V, V, &bad);
        CHECK_MSG(bad == 0, "%s mixed step %d (%d tokens, %d sequences): cuda differs from cpu (%d values, worst "
                  "%.3g)", name, st, T, ns, bad, worst);
        printf("%-24s mixed step %d: %2d tokens of %d sequences, max |cuda - cpu| = %.3g\n", name, st, T, ns, worst);
    }
    free(cpu), free(gpu);
    lunar_runner_free(rc_), lunar_runner_free(rg);
    lunar_model_free(m);
}

/* Decode steps replayed from CUDA graphs equal eager ones: greedy decoding of the shared model
 * with graphs (the default) and with LUNAR_CUDA_GRAPHS=0 gives the same logits bit for bit. */
static void check_graphs(const char *name)
{
    lunar_model_t *m = shared_model(name, "float32");
    if (!m) return;
    int V = lunar_model_config(m)->vocab_size, n0 = 5, steps = 24;
    float *a = malloc(sizeof(float) * V * steps), *b = malloc(sizeof(float) * V * steps);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) setenv("LUNAR_CUDA_GRAPHS", "0", 1);
        lunar_runner_t *r = make_runner(m, "cuda");
        unsetenv("LUNAR_CUDA_GRAPHS");
        if (!r) break;
        int32_t ids[64] = {1, 403, 407, 261, 378};
        float *out = pass ? b : a;
        CHECK_EQ_INT(step(r, ids, 0, n0, 0, out), 0);
        for (int i = 0; i < steps - 1; i++) {
            ids[n0 + i] = argmax(out + (size_t)i * V, V);
            CHECK_EQ_INT(step(r, ids, n0 + i, n0 + i + 1, 0, out + (size_t)(i + 1) * V), 0);
        }
        lunar_runner_free(r);
    }
    CHECK_MSG(memcmp(a, b, sizeof(float) * V * steps) == 0, "%s: decode from CUDA graphs differs from eager", name);
    printf("%-24s %d decode steps from CUDA graphs equal eager bit for bit\n", name, steps - 1);
    free(a), free(b);
    lunar_model_free(m);
}

/* Decode steps of 3 sequences are padded to the batch-size bucket 4 for their CUDA graph (the
 * runner's pad_decode): the real rows' logits must match an eager run's (no graphs, no padding)
 * to GEMM reduction order, with the same greedy tokens, over steps that cross block boundaries. */
static void check_graph_buckets(const char *name)
{
    lunar_model_t *m = shared_model(name, "float32");
    if (!m) return;
    enum { NS = 3, PER = 16, STEPS = 12 }; /* sequence s owns blocks [s*PER, (s+1)*PER) */
    int V = lunar_model_config(m)->vocab_size;
    float *out[2] = {malloc(sizeof(float) * V * NS * STEPS), malloc(sizeof(float) * V * NS * STEPS)};
    float *last = malloc(sizeof(float) * V);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) setenv("LUNAR_CUDA_GRAPHS", "0", 1);
        lunar_runner_t *r = make_runner(m, "cuda");
        unsetenv("LUNAR_CUDA_GRAPHS");
        if (!r) break;
        int32_t ids[NS][PER * BS], len[NS] = {5, 9, 2}, bt[NS * PER], pos[NS], qs[NS + 1], lens[NS], li[NS];
        int64_t slot[NS];
        for (int i = 0; i < NS * PER; i++) bt[i] = i;
        for (int sq = 0; sq < NS; sq++) { /* prefill each alone */
            for (int i = 0; i < len[sq]; i++) ids[sq][i] = 1 + (sq * 97 + i * 31) % (V - 1);
            int32_t p[16], l[1] = {len[sq] - 1}, q[2] = {0, len[sq]}, n[1] = {len[sq]};
            int64_t sl[16];
            for (int i = 0; i < len[sq]; i++) p[i] = i, sl[i] = (int64_t)sq * PER * BS + i;
            lunar_batch_t b = {len[sq], 1, ids[sq], p, sl, q, n, bt + sq * PER, PER, l, 1};
            CHECK_EQ_INT(lunar_runner_forward(r, &b, last), 0);
            ids[sq][len[sq]] = argmax(last, V);
        }
        for (int st = 0; st < STEPS; st++) { /* then decode all three together */
            int32_t tok[NS];
            qs[0] = 0;
            for (int sq = 0; sq < NS; sq++) {
                tok[sq] = ids[sq][len[sq]], pos[sq] = len[sq], slot[sq] = (int64_t)sq * PER * BS + len[sq];
                qs[sq + 1] = sq + 1, lens[sq] = len[sq] + 1, li[sq] = sq;
            }
            lunar_batch_t b = {NS, NS, tok, pos, slot, qs, lens, bt, PER, li, NS};
            float *o = out[pass] + (size_t)st * NS * V;
            CHECK_EQ_INT(lunar_runner_forward(r, &b, o), 0);
            for (int sq = 0; sq < NS; sq++) ids[sq][++len[sq]] = argmax(o + (size_t)sq * V, V);
        }
        lunar_runner_free(r);
    }
    double maxd = 0, maxr = 0;
    int same = 0;
    for (size_t i = 0; i < (size_t)V * NS * STEPS; i++) {
        maxd = fmax(maxd, fabs(out[0][i] - out[1][i]));
        maxr = fmax(maxr, fabs(out[1][i]));
    }
    for (int row = 0; row < NS * STEPS; row++)
        same += argmax(out[0] + (size_t)row * V, V) == argmax(out[1] + (size_t)row * V, V);
    CHECK_MSG(maxd <= 1e-4 * maxr, "%s: padded graph decode vs eager: max |d| %g of max %g", name, maxd, maxr);
    CHECK_MSG(same == NS * STEPS, "%s: padded graph decode: %d/%d greedy tokens as eager", name, same, NS * STEPS);
    printf("%-24s 3-sequence decode padded to a graph of 4: %d/%d tokens as eager, max |d| %.2g (max %.3g)\n", name,
           same, NS * STEPS, maxd, maxr);
    free(out[0]), free(out[1]), free(last);
    lunar_model_free(m);
}

/* --load-format dummy with the matrices made on the GPU (dummy_on_device) gives the same model
 * as the host's dummy weights uploaded: the same logits, bit for bit, over a prefill and a few
 * decode steps, in bf16 and f16 (the generator's rounding includes f16 subnormals). */
static void check_dummy_on_device(const char *dtype)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/TinyStories-656K", getenv("LUNAR_SHARED") ? getenv("LUNAR_SHARED") : "../shared");
    lunar_model_t *m[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        lunar_load_options_t o = {.dtype = dtype, .load_format = "dummy", .seed = 11, .dummy_on_device = k};
        CHECK_MSG(lunar_model_load(dir, &o, &m[k]) == 0, "dummy load (%s, on device %d): %s", dtype, k,
                  lunar_errmsg());
    }
    if (m[0] && m[1]) {
        const lunar_weights_t *w = lunar_model_weights(m[1]);
        lunar_dummy_params_t p;
        CHECK_MSG(w->layers[0].wq->data == NULL && lunar_model_dummy_params(m[1], w->layers[0].wq, &p),
                  "dummy_on_device leaves the matrices to the device");
        CHECK_MSG(w->final_norm->data != NULL && !lunar_model_dummy_params(m[1], w->final_norm, &p),
                  "dummy_on_device makes 1-D tensors on the host");
        int V = lunar_model_config(m[0])->vocab_size, n0 = 7, steps = 6;
        float *out[2] = {malloc(sizeof(float) * V * steps), malloc(sizeof(float) * V * steps)};
        for (int k = 0; k < 2; k++) {
            lunar_runner_t *r = make_runner(m[k], "cuda");
            if (!r) break;
            int32_t ids[64] = {1, 403, 407, 261, 378, 90, 17};
            CHECK_EQ_INT(step(r, ids, 0, n0, 0, out[k]), 0);
            for (int i = 0; i < steps - 1; i++) {
                ids[n0 + i] = argmax(out[k] + (size_t)i * V, V);
                CHECK_EQ_INT(step(r, ids, n0 + i, n0 + i + 1, 0, out[k] + (size_t)(i + 1) * V), 0);
            }
            lunar_runner_free(r);
        }
        CHECK_MSG(memcmp(out[0], out[1], sizeof(float) * V * steps) == 0,
                  "%s: dummy weights made on the GPU give other logits than the host's", dtype);
        printf("dummy weights made on the GPU (%s): %d steps' logits equal the host-made weights' bit for bit\n",
               dtype, steps);
        lunar_backend_params_t bp = {1, 1024, 64, 64, 0, 1};
        lunar_backend_t *cpu = NULL;
        CHECK_EQ_INT(lunar_backend_create("cpu", &bp, &cpu), 0);
        if (cpu) {
            CHECK_MSG(cpu->prepare(cpu, m[1]) != 0, "the CPU backend refuses matrices left to the GPU");
            cpu->free(cpu);
        }
        free(out[0]), free(out[1]);
    }
    lunar_model_free(m[0]), lunar_model_free(m[1]);
}

/* The mixed batches again with the plain attention kernel (head_dims not a multiple of 8 use
 * it instead of kernels/attention.cu; the models here would not reach it otherwise). */
static void check_generic_attention(const char *name)
{
    setenv("LUNAR_CUDA_ATTN", "generic", 1);
    printf("(LUNAR_CUDA_ATTN=generic: the plain attention kernel)\n");
    check_mixed(name);
    unsetenv("LUNAR_CUDA_ATTN");
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_WARN);
    if (lunar_device_count() < 1) {
        fprintf(stderr, "test_backend_cuda: no CUDA device visible\n");
        return 1;
    }
    if (getenv("LUNAR_TEST_QUICK")) { /* a small subset, for compute-sanitizer */
        check_case("qwen3_qk_norm");
        check_mixed("stories260K");
        check_generic_attention("stories260K");
        check_graphs("stories260K");
        check_graph_buckets("stories260K");
        check_gemm_bf16("stories260K");
        return CHECK_DONE();
    }
    static const char *cases[] = {"llama_gqa_tied", "llama_rope_linear", "llama_rope_dynamic", "llama_rope_llama3",
                                  "mistral_sliding_window", "qwen2_bias_yarn", "qwen3_qk_norm", "baichuan"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(cases[i]);
    check_greedy("stories260K", "cuda", "float32");
    check_greedy("TinyStories-656K", "cuda", "float32");
    check_mixed("stories260K");
    check_mixed("TinyStories-656K");
    check_generic_attention("TinyStories-656K");
    check_graphs("TinyStories-656K");
    check_gemm_bf16("TinyStories-656K");
    check_gemm_bf16("stories260K");
    check_dummy_on_device("bfloat16");
    check_dummy_on_device("float16");
    check_graph_buckets("TinyStories-656K");
    check_graph_buckets("stories260K");
    return CHECK_DONE();
}
