/*
 * tests/gpu/test_kernels.c — every CUDA kernel of kernels/ against its CPU reference (ref.c,
 * and the CPU backend's own sampler and RoPE tables), over odd shapes: head_dim 64/80/128,
 * GQA ratios 1/4/8, block sizes 16/32, contexts 1..8192 across block boundaries, mixed
 * prefill+decode batches, the three activation dtypes. Needs a GPU; run through
 * tests/gpu/run.sh. `--quick` keeps the shapes small (for compute-sanitizer).
 *
 * Tolerances (per element, |gpu - ref| <= tol), with why:
 *   embedding, kv_write, argmax, logprob top ids, sampled tokens: exact (copies / integer
 *     results; the sampler is the CPU sampler's algorithm on the same seed).
 *   rmsnorm: 2 eps(dt) |ref| + 1e-6 — f32 sum of squares vs double, then two roundings to dt
 *     (normalized value, product with the weight) that can each land one step apart.
 *   rope: eps(dt) (|a| + |b|) + 1e-5 — one rounding to dt of an f32 rotation (sincosf within
 *     a few f32 ulps), relative to the pair's magnitude since a*c - b*s can cancel.
 *   silu_and_mul: (eps(dt) + 8 * 2^-23) |ref| + 1e-6 — one rounding to dt plus expf, the
 *     division and the product in f32 (a few f32 ulps each; visible at F32).
 *   attention: eps(dt) |ref| + 2e-4 max|V| — one rounding to dt, plus f32 accumulation and
 *     exp2f over up to 8192 keys, bounded relative to the largest value since the output is
 *     a convex combination of V rows. In f16/bf16 with head_dim 64/80/96/128, tokens of
 *     sequences with 16+ queries go to the tensor-core prefill kernel and decode tokens of
 *     GQA groups of 2 to 8 to the tensor-core decode kernel; both round the softmax weights
 *     to dt before P.V (as FlashAttention does): each weight is off by up to eps(dt)/2
 *     relative, which moves the normalized mean by up to eps(dt) max|V|, so those tokens get
 *     eps(dt) max|V| more.
 *   logprobs: 2e-5 absolute — f32 logits minus an f32 log-sum-exp (double sum on both sides).
 * Outputs are poisoned (0xff bytes: NaN) before each launch so unwritten elements fail.
 */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "ref.h"
#include "runner/rope.h"
#include "sampler/sampler.h"

static int failures, quick;

#define CK(call)                                                                           \
    do {                                                                                   \
        int rc_ = (int)(call);                                                             \
        if (rc_) {                                                                         \
            fprintf(stderr, "%s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, rc_,       \
                    rc_ > 0 ? cudaGetErrorString((cudaError_t)rc_) : "bad arguments");       \
            exit(2);                                                                       \
        }                                                                                  \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float uni(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777216.0f; }

static const char *dt_name(lunar_dtype_t dt) { return lunar_dtype_name(dt); }

/* A host tensor: values as stored (rounded to dt) plus the storage bytes. */
typedef struct {
    lunar_dtype_t dt;
    size_t n;
    float *v;
    void *h;
    void *d;
} tens_t;

static tens_t tens_new(lunar_dtype_t dt, size_t n, float lo, float hi)
{
    tens_t t = {dt, n, malloc(n * sizeof(float) + 4), malloc(n * lunar_dtype_size(dt) + 4), NULL};
    for (size_t i = 0; i < n; i++) {
        ref_store(dt, t.h, i, uni(lo, hi));
        t.v[i] = ref_load(dt, t.h, i);
    }
    CK(cudaMalloc(&t.d, n * lunar_dtype_size(dt) + 16));
    CK(cudaMemcpy(t.d, t.h, n * lunar_dtype_size(dt), cudaMemcpyHostToDevice));
    return t;
}

/* Device output buffer poisoned with 0xff (NaN in every float format). */
static void *dev_poison(size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes + 16));
    CK(cudaMemset(d, 0xff, bytes + 16));
    return d;
}

static void *dev_copy(const void *h, size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes ? bytes : 1));
    if (bytes) CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}

/* Downloads n values of dt. */
static float *fetch(lunar_dtype_t dt, const void *d, size_t n)
{
    size_t es = lunar_dtype_size(dt);
    void *h = malloc(n * es + 4);
    float *v = malloc(n * sizeof(float) + 4);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d, n * es, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) v[i] = ref_load(dt, h, i);
    free(h);
    return v;
}

static void tens_free(tens_t *t)
{
    free(t->v);
    free(t->h);
    cudaFree(t->d);
}

/* Per kernel: the worst ratio err/tol seen and the worst absolute error. */
typedef struct { const char *name; double worst_ratio, worst_err; int cases; } stat_t;
static stat_t stats[16];
static int nstats;

static void report(const char *kernel, const char *what, double err, double ratio, int nonfinite)
{
    int ok = ratio <= 1.0 && !nonfinite;
    if (!ok) failures++;
    printf("%-4s %-14s %-58s max_err %.3g  err/tol %.3f%s\n", ok ? "ok" : "FAIL", kernel, what, err,
           ratio, nonfinite ? "  NON-FINITE/UNWRITTEN" : "");
    stat_t *s = NULL;
    for (int i = 0; i < nstats; i++)
        if (!strcmp(stats[i].name, kernel)) s = &stats[i];
    if (!s) {
        s = &stats[nstats++];
        s->name = kernel;
    }
    if (ratio > s->worst_ratio) s->worst_ratio = ratio;
    if (err > s->worst_err) s->worst_err = err;
    s->cases++;
}

/* ---- embedding --------------------------------------------------------------------------- */
static void test_embedding(lunar_dtype_t dt, int vocab, int hidden, int T)
{
    tens_t E = tens_new(dt, (size_t)vocab * hidden, -1, 1);
    int32_t *ids = malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) ids[t] = t == 1 ? vocab : (int)(rnd() % vocab); /* one out of range */
    int32_t *dids = dev_copy(ids, sizeof(int32_t) * T);
    void *out = dev_poison((size_t)T * hidden * lunar_dtype_size(dt));
    CK(lunar_cuda_embedding(out, E.d, dids, T, hidden, vocab, dt, NULL));
    float *o = fetch(dt, out, (size_t)T * hidden);
    double err = 0;
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hidden; i++) {
            float want = ids[t] < vocab ? E.v[(size_t)ids[t] * hidden + i] : 0.0f;
            float got = o[(size_t)t * hidden + i];
            if (!isfinite(got)) bad = 1;
            err = fmax(err, fabs(got - want));
        }
    char what[128];
    snprintf(what, sizeof what, "%s vocab %d hidden %d T %d", dt_name(dt), vocab, hidden, T);
    report("embedding", what, err, err > 0 ? INFINITY : 0, bad);
    free(o); free(ids); cudaFree(dids); cudaFree(out); tens_free(&E);
}

/* ---- rmsnorm ----------------------------------------------------------------------------- */
static void test_rmsnorm(lunar_dtype_t dt, int rows, int hidden, int fused)
{
    tens_t x = tens_new(dt, (size_t)rows * hidden, -2, 2), r = tens_new(dt, (size_t)rows * hidden, -2, 2);
    tens_t w = tens_new(dt, hidden, 0.5f, 1.5f);
    size_t n = (size_t)rows * hidden;
    void *out = dev_poison(n * lunar_dtype_size(dt));
    float eps = 1e-5f;
    CK(lunar_cuda_rmsnorm(out, x.d, fused ? r.d : NULL, w.d, rows, hidden, eps, dt, NULL));
    float *o = fetch(dt, out, n), *ro = fused ? fetch(dt, r.d, n) : NULL;
    float *want = malloc(n * sizeof(float)), *rwant = malloc(n * sizeof(float));
    ref_rmsnorm(dt, x.v, fused ? r.v : NULL, w.v, rows, hidden, eps, want, rwant);
    double err = 0, ratio = 0, e2 = ref_eps(dt);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(o[i] - want[i]), tol = 2 * e2 * fabs(want[i]) + 1e-6;
        if (!isfinite(o[i])) bad = 1;
        err = fmax(err, d);
        ratio = fmax(ratio, d / tol);
        if (fused) { /* the residual sum is rounded once: exact */
            double dr = fabs(ro[i] - rwant[i]);
            if (dr > 0) ratio = INFINITY;
        }
    }
    char what[128];
    snprintf(what, sizeof what, "%s rows %d hidden %d%s", dt_name(dt), rows, hidden, fused ? " +residual" : "");
    report("rmsnorm", what, err, ratio, bad);
    free(o); free(ro); free(want); free(rwant); cudaFree(out);
    tens_free(&x); tens_free(&r); tens_free(&w);
}

/* ---- rope -------------------------------------------------------------------------------- */
static void test_rope(lunar_dtype_t dt, lunar_rope_type_t type, int hd, int rot, int nq, int nk, int T,
                      int max_pos)
{
    lunar_model_config_t c;
    memset(&c, 0, sizeof c);
    c.max_position_embeddings = 8192;
    c.rope.type = type;
    c.rope.theta = type == LUNAR_ROPE_LLAMA3 ? 500000 : 10000;
    c.rope.factor = type == LUNAR_ROPE_LLAMA3 ? 8 : type == LUNAR_ROPE_YARN ? 4 : 2;
    c.rope.original_max_position = type == LUNAR_ROPE_LLAMA3 ? 8192 : 2048;
    c.rope.low_freq_factor = 1;
    c.rope.high_freq_factor = 4;
    float *inv = malloc(sizeof(float) * (size_t)rot), af = 1;
    rope_inv_freq(&c, rot, inv, &af);
    if (type == LUNAR_ROPE_DYNAMIC) rope_dynamic_inv_freq(&c, rot, max_pos, inv);
    int qs = nq * hd + 8, ks = nk * hd + 8; /* padded rows: strides are honoured */
    tens_t q = tens_new(dt, (size_t)T * qs, -2, 2), k = tens_new(dt, (size_t)T * ks, -2, 2);
    int32_t *pos = malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) pos[t] = t == 0 ? 0 : t == 1 ? max_pos - 1 : (int)(rnd() % max_pos);
    int32_t *dpos = dev_copy(pos, sizeof(int32_t) * T);
    float *dinv = dev_copy(inv, sizeof(float) * (size_t)rot / 2);
    CK(lunar_cuda_rope(q.d, k.d, dpos, dinv, T, nq, nk, hd, rot, qs, ks, af, dt, NULL));
    float *oq = fetch(dt, q.d, (size_t)T * qs), *ok = fetch(dt, k.d, (size_t)T * ks);
    float *wq = malloc(sizeof(float) * (size_t)T * qs), *wk = malloc(sizeof(float) * (size_t)T * ks);
    memcpy(wq, q.v, sizeof(float) * (size_t)T * qs);
    memcpy(wk, k.v, sizeof(float) * (size_t)T * ks);
    ref_rope(wq, wk, pos, inv, T, nq, nk, hd, rot, qs, ks, af);
    double err = 0, ratio = 0, e = ref_eps(dt);
    int bad = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *o = pass ? ok : oq, *w = pass ? wk : wq, *in = pass ? k.v : q.v;
        int nh = pass ? nk : nq, st = pass ? ks : qs;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < hd; i++) {
                    size_t ix = (size_t)t * st + (size_t)h * hd + i;
                    int pair = i < rot / 2 ? i + rot / 2 : i < rot ? i - rot / 2 : -1;
                    double mag = pair < 0 ? 0 : (fabs(in[ix]) + fabs(in[(size_t)t * st + (size_t)h * hd + pair])) * af;
                    double d = fabs(o[ix] - w[ix]), tol = pair < 0 ? 0 : e * mag + 1e-5;
                    if (!isfinite(o[ix])) bad = 1;
                    err = fmax(err, d);
                    ratio = fmax(ratio, pair < 0 ? (d > 0 ? INFINITY : 0) : d / tol);
                }
    }
    static const char *names[] = {"default", "linear", "dynamic", "yarn", "llama3"};
    char what[128];
    snprintf(what, sizeof what, "%s %s hd %d rot %d q%d k%d T %d pos<%d", dt_name(dt), names[type], hd, rot,
             nq, nk, T, max_pos);
    report("rope", what, err, ratio, bad);
    free(inv); free(pos); free(oq); free(ok); free(wq); free(wk);
    cudaFree(dpos); cudaFree(dinv); tens_free(&q); tens_free(&k);
}

/* ---- silu_and_mul ------------------------------------------------------------------------ */
static void test_silu(lunar_dtype_t dt, int T, int inter)
{
    tens_t x = tens_new(dt, (size_t)T * 2 * inter, -6, 6);
    size_t n = (size_t)T * inter;
    void *out = dev_poison(n * lunar_dtype_size(dt));
    CK(lunar_cuda_silu_and_mul(out, x.d, T, inter, dt, NULL));
    float *o = fetch(dt, out, n), *w = malloc(n * sizeof(float));
    ref_silu_and_mul(x.v, T, inter, w);
    double err = 0, ratio = 0, e = ref_eps(dt);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(o[i] - w[i]);
        if (!isfinite(o[i])) bad = 1;
        err = fmax(err, d);
        ratio = fmax(ratio, d / ((e + 8 * ldexp(1, -23)) * fabs(w[i]) + 1e-6));
    }
    char what[128];
    snprintf(what, sizeof what, "%s T %d inter %d", dt_name(dt), T, inter);
    report("silu_and_mul", what, err, ratio, bad);
    free(o); free(w); cudaFree(out); tens_free(&x);
}

/* ---- kv write ---------------------------------------------------------------------------- */
static void test_kv_write(lunar_dtype_t dt, int T, int nkv, int hd, int bs, int num_blocks)
{
    int row = nkv * hd, stride = row * 3; /* k and v as views into a fused qkv-like buffer */
    tens_t src = tens_new(dt, (size_t)T * stride, -1, 1);
    size_t cn = (size_t)num_blocks * bs * row, es = lunar_dtype_size(dt);
    void *kc = dev_poison(cn * es), *vc = dev_poison(cn * es);
    int64_t *slots = malloc(sizeof(int64_t) * T);
    int nslots = num_blocks * bs;
    int *perm = malloc(sizeof(int) * nslots);
    for (int i = 0; i < nslots; i++) perm[i] = i;
    for (int i = nslots - 1; i > 0; i--) {
        int j = (int)(rnd() % (i + 1)), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int t = 0; t < T; t++) slots[t] = t % 7 == 3 ? -1 : perm[t]; /* some padding tokens */
    int64_t *dslots = dev_copy(slots, sizeof(int64_t) * T);
    char *k = (char *)src.d, *v = k + (size_t)row * es;
    CK(lunar_cuda_kv_write(kc, vc, k, v, dslots, T, nkv, hd, stride, stride, dt, NULL));
    float *ok = fetch(dt, kc, cn), *ov = fetch(dt, vc, cn);
    double err = 0;
    int bad = 0;
    char *written = calloc((size_t)nslots, 1);
    for (int t = 0; t < T; t++) {
        if (slots[t] < 0) continue;
        written[slots[t]] = 1;
        for (int i = 0; i < row; i++) {
            err = fmax(err, fabs(ok[(size_t)slots[t] * row + i] - src.v[(size_t)t * stride + i]));
            err = fmax(err, fabs(ov[(size_t)slots[t] * row + i] - src.v[(size_t)t * stride + row + i]));
            if (!isfinite(ok[(size_t)slots[t] * row + i])) bad = 1;
        }
    }
    for (int s = 0; s < nslots; s++) /* untouched slots keep the poison */
        if (!written[s] && !isnan(ok[(size_t)s * row])) bad = 1;
    char what[128];
    snprintf(what, sizeof what, "%s T %d kv_heads %d hd %d block %d", dt_name(dt), T, nkv, hd, bs);
    report("kv_write", what, err, err > 0 ? INFINITY : 0, bad);
    free(ok); free(ov); free(slots); free(perm); free(written);
    cudaFree(dslots); cudaFree(kc); cudaFree(vc); tens_free(&src);
}

/* ---- attention --------------------------------------------------------------------------- */
typedef struct { int ctx, qlen; } seq_spec_t;

static void test_attention(lunar_dtype_t dt, int hd, int nh, int nkv, int bs, int window,
                           const seq_spec_t *spec, int num_seqs, const char *label)
{
    int T = 0, max_len = 0, mbps = 0, blocks = 0;
    int32_t *qs = malloc(sizeof(int32_t) * (num_seqs + 1)), *lens = malloc(sizeof(int32_t) * num_seqs);
    qs[0] = 0;
    for (int s = 0; s < num_seqs; s++) {
        lens[s] = spec[s].ctx;
        qs[s + 1] = qs[s] + spec[s].qlen;
        T += spec[s].qlen;
        if (lens[s] > max_len) max_len = lens[s];
        int nb = (lens[s] + bs - 1) / bs;
        if (nb > mbps) mbps = nb;
        blocks += nb;
    }
    blocks += 3; /* spare blocks nobody owns */
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)num_seqs * mbps), *perm = malloc(sizeof(int32_t) * blocks);
    for (int i = 0; i < blocks; i++) perm[i] = i;
    for (int i = blocks - 1; i > 0; i--) {
        int j = (int)(rnd() % (i + 1)), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    int used = 0;
    for (int s = 0; s < num_seqs; s++)
        for (int i = 0; i < mbps; i++)
            bt[(size_t)s * mbps + i] = i < (lens[s] + bs - 1) / bs ? perm[used++] : -1;
    size_t row = (size_t)nkv * hd, cn = (size_t)blocks * bs * row;
    int qstride = nh * hd + 2 * (int)row; /* q as a view into a fused qkv row */
    tens_t q = tens_new(dt, (size_t)T * qstride, -1, 1);
    tens_t kc = tens_new(dt, cn, -1, 1), vc = tens_new(dt, cn, -1, 1);
    float scale = 1.0f / sqrtf((float)hd) * 2.0f; /* sharper than usual: exercises the softmax */
    size_t ws_bytes = lunar_cuda_attention_workspace_size(T, num_seqs, nh, nkv, hd, max_len);
    void *ws = dev_poison(ws_bytes);
    int ostride = nh * hd;
    void *out = dev_poison((size_t)T * ostride * lunar_dtype_size(dt));
    int32_t *dqs = dev_copy(qs, sizeof(int32_t) * (num_seqs + 1)), *dlens = dev_copy(lens, sizeof(int32_t) * num_seqs);
    int32_t *dbt = dev_copy(bt, sizeof(int32_t) * (size_t)num_seqs * mbps);
    CK(lunar_cuda_attention(out, q.d, kc.d, vc.d, dqs, dlens, dbt, mbps, num_seqs, T, max_len, nh, nkv, hd, bs,
                            scale, window, qstride, ostride, ws, dt, NULL));
    float *o = fetch(dt, out, (size_t)T * ostride);
    /* check every token of short batches, a sample plus each sequence's last token of long ones */
    int32_t *chk = malloc(sizeof(int32_t) * T);
    int nchk = 0, stride = T > 600 ? 37 : 1;
    for (int s = 0; s < num_seqs; s++)
        for (int t = qs[s]; t < qs[s + 1]; t++)
            if ((t - qs[s]) % stride == 0 || t == qs[s + 1] - 1) chk[nchk++] = t;
    float *want = malloc(sizeof(float) * (size_t)nchk * ostride);
    ref_attention(want, q.v, kc.v, vc.v, qs, lens, bt, mbps, num_seqs, nh, nkv, hd, bs, scale, window, qstride,
                  ostride, chk, nchk);
    double err = 0, ratio = 0, e = ref_eps(dt);
    int bad = 0;
    for (int c = 0; c < nchk; c++) {
        int s = 0;
        while (qs[s + 1] <= chk[c]) s++;
        int G = nh / nkv, tc_hd = hd == 64 || hd == 80 || hd == 96 || hd == 128;
        int tc = dt != LUNAR_DTYPE_F32 && tc_hd && (qs[s + 1] - qs[s] >= 16 || (G >= 2 && G <= 8));
        double extra = tc ? e * 1.0 /* max|V| */ : 0.0;
        for (int i = 0; i < ostride; i++) {
            float g = o[(size_t)chk[c] * ostride + i], w = want[(size_t)c * ostride + i];
            double d = fabs(g - w);
            if (!isfinite(g)) bad = 1;
            err = fmax(err, d);
            ratio = fmax(ratio, d / (e * fabs(w) + 2e-4 + extra));
        }
    }
    for (size_t i = 0; i < (size_t)T * ostride; i++) /* every output written */
        if (!isfinite(o[i])) bad = 1;
    char what[160];
    snprintf(what, sizeof what, "%s hd %d heads %d/%d bs %d%s %s (T %d, ctx<=%d)", dt_name(dt), hd, nh, nkv, bs,
             window ? " window" : "", label, T, max_len);
    report("attention", what, err, ratio, bad);
    free(qs); free(lens); free(bt); free(perm); free(o); free(chk); free(want);
    cudaFree(ws); cudaFree(out); cudaFree(dqs); cudaFree(dlens); cudaFree(dbt);
    tens_free(&q); tens_free(&kc); tens_free(&vc);
}

static void attention_suite(void)
{
    /* decode: one query per sequence, contexts across block boundaries up to 8192 */
    seq_spec_t dec[] = {{1, 1}, {15, 1}, {16, 1}, {17, 1}, {100, 1}, {257, 1}, {1000, 1}, {8192, 1}};
    seq_spec_t dec_q[] = {{1, 1}, {15, 1}, {16, 1}, {17, 1}, {100, 1}, {257, 1}, {600, 1}};
    /* mixed: a whole prefill, a chunked prefill continuing a cached prefix, decodes */
    seq_spec_t mix[] = {{300, 300}, {17, 1}, {500, 77}, {1, 1}, {33, 33}, {2000, 1}, {129, 5}};
    seq_spec_t mix_q[] = {{70, 70}, {17, 1}, {100, 33}, {1, 1}, {33, 33}, {300, 1}};
    seq_spec_t longp[] = {{8192, 8192}};
    seq_spec_t longc[] = {{8192, 700}, {3000, 1}};
    const seq_spec_t *d = quick ? dec_q : dec, *m = quick ? mix_q : mix;
    int nd = quick ? 7 : 8, nm = quick ? 6 : 7;
    struct { int hd, nh, nkv, bs; } shp[] = {{128, 32, 8, 16}, {64, 8, 8, 32}, {80, 16, 2, 16}, {128, 8, 1, 16}};
    for (int i = 0; i < 4; i++) {
        test_attention(LUNAR_DTYPE_BF16, shp[i].hd, shp[i].nh, shp[i].nkv, shp[i].bs, 0, d, nd, "decode");
        test_attention(LUNAR_DTYPE_BF16, shp[i].hd, shp[i].nh, shp[i].nkv, shp[i].bs, 0, m, nm, "mixed");
    }
    test_attention(LUNAR_DTYPE_F16, 128, 32, 8, 16, 0, m, nm, "mixed");
    test_attention(LUNAR_DTYPE_BF16, 96, 12, 4, 16, 0, m, nm, "mixed"); /* tensor-core prefill, hd 96, G 3 */
    test_attention(LUNAR_DTYPE_BF16, 128, 4, 2, 16, 0, d, nd, "decode");  /* GQA group of 2 */
    test_attention(LUNAR_DTYPE_F32, 256, 8, 1, 16, 0, d, nd, "decode");   /* hd 256, group of 8 */
    test_attention(LUNAR_DTYPE_BF16, 72, 8, 2, 16, 0, m, nm, "mixed");  /* hd 72: CUDA-core prefill */
    test_attention(LUNAR_DTYPE_F16, 80, 16, 2, 13, 33, m, nm, "mixed"); /* odd block, window, hd 80 */
    test_attention(LUNAR_DTYPE_F32, 80, 16, 2, 32, 0, m, nm, "mixed");
    test_attention(LUNAR_DTYPE_BF16, 64, 8, 2, 16, 48, m, nm, "mixed");
    if (!quick) {
        test_attention(LUNAR_DTYPE_BF16, 128, 32, 8, 16, 0, longp, 1, "prefill 8192");
        test_attention(LUNAR_DTYPE_BF16, 80, 16, 16, 32, 0, longc, 2, "chunk of 700 after 7492");
        test_attention(LUNAR_DTYPE_BF16, 64, 16, 2, 16, 1000, longc, 2, "chunk + window 1000");
    }
}

/* ---- sampling, logprobs, argmax ----------------------------------------------------------- */
static void test_sampling(int rows, int vocab)
{
    float *logits = malloc(sizeof(float) * (size_t)rows * vocab);
    for (size_t i = 0; i < (size_t)rows * vocab; i++) logits[i] = uni(-4, 4) + (rnd() % 500 == 0 ? 6 : 0);
    for (int r = 0; r < rows; r++) /* ties: repeat a row's max at another id, and some equal values */
        if (r % 3 == 0) {
            float *x = logits + (size_t)r * vocab;
            int b = 0;
            for (int v = 1; v < vocab; v++) if (x[v] > x[b]) b = v;
            x[(b + vocab / 2) % vocab] = x[b];
            for (int i = 0; i < 50; i++) x[rnd() % vocab] = x[rnd() % vocab];
        }
    lunar_sample_row_t *gp = calloc((size_t)rows, sizeof *gp);
    lunar_sampling_params_t *cp = calloc((size_t)rows, sizeof *cp);
    int32_t *pstart = malloc(sizeof(int32_t) * (rows + 1));
    int cap = rows * 64;
    int32_t *pids = malloc(sizeof(int32_t) * cap), *pcnt = malloc(sizeof(int32_t) * cap);
    int32_t *prompts = malloc(sizeof(int32_t) * rows * 20), *outs = malloc(sizeof(int32_t) * rows * 20);
    int32_t *sup = malloc(sizeof(int32_t) * rows * 2);
    int *cnt = calloc((size_t)vocab, sizeof(int));
    char *mark = calloc((size_t)vocab, 1);
    int np = 0;
    for (int r = 0; r < rows; r++) {
        lunar_sampling_params_default(&cp[r]);
        int kind = r % 9;
        cp[r].temperature = kind == 0 ? 0.0f : kind == 1 ? 1.0f : 0.3f + (float)(r % 5) * 0.3f;
        cp[r].top_k = kind == 2 || kind == 5 ? 1 + (int)(rnd() % 60) : kind == 8 ? vocab + 5 : -1;
        cp[r].top_p = kind == 3 || kind == 5 ? 0.5f + (float)(rnd() % 50) / 100.0f : 1.0f;
        cp[r].min_p = kind == 4 || kind == 5 ? 0.02f * (float)(1 + r % 4) : 0.0f;
        if (kind == 6 || kind == 7 || kind == 0) {
            cp[r].presence_penalty = 0.5f;
            cp[r].frequency_penalty = 0.3f;
            cp[r].repetition_penalty = 1.3f;
        }
        cp[r].seed = 1000 + (uint64_t)r * 77;
        gp[r].temperature = cp[r].temperature;
        gp[r].top_p = cp[r].top_p;
        gp[r].top_k = cp[r].top_k;
        gp[r].min_p = cp[r].min_p;
        gp[r].presence_penalty = cp[r].presence_penalty;
        gp[r].frequency_penalty = cp[r].frequency_penalty;
        gp[r].repetition_penalty = cp[r].repetition_penalty;
        gp[r].seed = cp[r].seed;
        gp[r].seq_index = r % 4;
        gp[r].position = 20;
        /* prompt/output/suppress lists with repeats, as the engine would hold them */
        int32_t *pr = prompts + r * 20, *ou = outs + r * 20, *su = sup + r * 2;
        for (int i = 0; i < 20; i++) {
            pr[i] = (int)(rnd() % 200);
            ou[i] = (int)(rnd() % 200);
        }
        su[0] = (int)(rnd() % vocab);
        su[1] = r % 2 ? (int)(rnd() % 200) : su[0];
        /* penalty entries: unique tokens of prompt ∪ output ∪ suppress */
        pstart[r] = np;
        for (int i = 0; i < 20; i++) cnt[ou[i]]++;
        for (int pass = 0; pass < 3; pass++) {
            const int32_t *ids = pass == 0 ? pr : pass == 1 ? ou : su;
            int n = pass == 2 ? 2 : 20;
            for (int i = 0; i < n; i++) {
                int t = ids[i];
                if (mark[t]) continue;
                mark[t] = 1;
                pids[np] = t;
                pcnt[np] = cnt[t];
                np++;
            }
        }
        for (int i = 0; i < 2; i++) /* suppressed: count -1 */
            for (int e = pstart[r]; e < np; e++)
                if (pids[e] == su[i]) pcnt[e] = -1;
        for (int e = pstart[r]; e < np; e++) mark[pids[e]] = 0;
        for (int i = 0; i < 20; i++) cnt[ou[i]] = 0;
    }
    pstart[rows] = np;
    float *dl = dev_copy(logits, sizeof(float) * (size_t)rows * vocab), *dwork = dev_poison(sizeof(float) * (size_t)rows * vocab);
    void *dgp = dev_copy(gp, sizeof *gp * rows);
    int32_t *dps = dev_copy(pstart, sizeof(int32_t) * (rows + 1)), *dpi = dev_copy(pids, sizeof(int32_t) * np);
    int32_t *dpc = dev_copy(pcnt, sizeof(int32_t) * np), *dtok = dev_poison(sizeof(int32_t) * rows);
    CK(lunar_cuda_sample(dtok, dl, dwork, rows, vocab, dgp, dps, dpi, dpc, NULL));
    int32_t *tok = malloc(sizeof(int32_t) * rows);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(tok, dtok, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost));
    lunar_sampler_t smp;
    CK(lunar_sampler_init(&smp, vocab));
    int mism = 0;
    for (int r = 0; r < rows; r++) {
        lunar_sample_input_t in = {&cp[r], prompts + r * 20, 20, outs + r * 20, 20, sup + r * 2, 2,
                                   cp[r].seed, r % 4, NULL};
        int want = lunar_sampler_sample(&smp, logits + (size_t)r * vocab, &in);
        if (want != tok[r]) {
            mism++;
            if (mism < 5) fprintf(stderr, "  sample row %d (kind %d): gpu %d cpu %d\n", r, r % 9, tok[r], want);
        }
    }
    char what[128];
    snprintf(what, sizeof what, "rows %d vocab %d (vs CPU sampler)", rows, vocab);
    report("sample", what, mism, mism ? INFINITY : 0, 0);

    /* logprobs of the raw rows for the sampled tokens, top 5 */
    int topn = 5;
    float *dlp = dev_poison(sizeof(float) * rows), *dtlp = dev_poison(sizeof(float) * rows * topn);
    int32_t *dtid = dev_poison(sizeof(int32_t) * rows * topn);
    CK(lunar_cuda_logprobs(dlp, dtid, dtlp, dl, dtok, rows, vocab, topn, NULL));
    float *lp = malloc(sizeof(float) * rows), *tlp = malloc(sizeof(float) * rows * topn);
    int32_t *tid = malloc(sizeof(int32_t) * rows * topn);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(lp, dlp, sizeof(float) * rows, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(tlp, dtlp, sizeof(float) * rows * topn, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(tid, dtid, sizeof(int32_t) * rows * topn, cudaMemcpyDeviceToHost));
    double err = 0;
    int idbad = 0, bad = 0;
    for (int r = 0; r < rows; r++) {
        float wlp, wtlp[5];
        int32_t wtid[5];
        lunar_sampler_logprobs(logits + (size_t)r * vocab, vocab, tok[r], topn, &wlp, wtid, wtlp);
        if (!isfinite(lp[r])) bad = 1;
        err = fmax(err, fabs(lp[r] - wlp));
        for (int i = 0; i < topn; i++) {
            if (tid[r * topn + i] != wtid[i]) idbad++;
            err = fmax(err, fabs(tlp[r * topn + i] - wtlp[i]));
        }
    }
    snprintf(what, sizeof what, "rows %d vocab %d top 5 (ids %s)", rows, vocab, idbad ? "DIFFER" : "equal");
    report("logprobs", what, err, idbad ? INFINITY : err / 2e-5, bad);

    /* argmax of the raw rows */
    CK(lunar_cuda_argmax(dtok, dl, rows, vocab, NULL));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(tok, dtok, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost));
    int amis = 0;
    for (int r = 0; r < rows; r++) {
        const float *x = logits + (size_t)r * vocab;
        int b = 0;
        for (int v = 1; v < vocab; v++) if (x[v] > x[b]) b = v;
        if (b != tok[r]) amis++;
    }
    snprintf(what, sizeof what, "rows %d vocab %d (first index of ties)", rows, vocab);
    report("argmax", what, amis, amis ? INFINITY : 0, 0);

    lunar_sampler_destroy(&smp);
    free(logits); free(gp); free(cp); free(pstart); free(pids); free(pcnt); free(prompts); free(outs);
    free(sup); free(cnt); free(mark); free(tok); free(lp); free(tlp); free(tid);
    cudaFree(dl); cudaFree(dwork); cudaFree(dgp); cudaFree(dps); cudaFree(dpi); cudaFree(dpc); cudaFree(dtok);
    cudaFree(dlp); cudaFree(dtlp); cudaFree(dtid);
}

int main(int argc, char **argv)
{
    quick = argc > 1 && !strcmp(argv[1], "--quick");
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("test_kernels on %s (sm_%d%d)%s\n", prop.name, prop.major, prop.minor, quick ? " --quick" : "");
    lunar_dtype_t dts[3] = {LUNAR_DTYPE_BF16, LUNAR_DTYPE_F16, LUNAR_DTYPE_F32};
    for (int i = 0; i < 3; i++) {
        test_embedding(dts[i], 1000, 4096, 33);
        test_embedding(dts[i], 77, 100, 9); /* row of 200 bytes: the unaligned path */
        test_rmsnorm(dts[i], 7, 4096, 1);
        test_rmsnorm(dts[i], 5, 4096, 0);
        test_rmsnorm(dts[i], 3, 1000, 1);  /* not a multiple of 8: scalar path */
        test_rmsnorm(dts[i], 2, 8192, 1);
        test_silu(dts[i], 5, 11008);
        test_silu(dts[i], 3, 1001);
        test_kv_write(dts[i], 40, 8, 128, 16, 4);
        test_kv_write(dts[i], 13, 2, 80, 32, 1);
        test_kv_write(dts[i], 9, 1, 36, 16, 1); /* 72-byte rows: unaligned path */
    }
    for (int ty = LUNAR_ROPE_DEFAULT; ty <= LUNAR_ROPE_LLAMA3; ty++)
        test_rope(LUNAR_DTYPE_BF16, (lunar_rope_type_t)ty, 128, 128, 32, 8, 17, 8192);
    test_rope(LUNAR_DTYPE_F16, LUNAR_ROPE_DEFAULT, 64, 64, 8, 8, 9, 4096);
    test_rope(LUNAR_DTYPE_F32, LUNAR_ROPE_YARN, 80, 80, 16, 2, 9, 8192);
    test_rope(LUNAR_DTYPE_BF16, LUNAR_ROPE_DEFAULT, 128, 64, 8, 2, 9, 2048); /* partial rotary */
    attention_suite();
    test_sampling(quick ? 40 : 300, quick ? 5003 : 128256);
    if (!quick) test_sampling(90, 32000);
    printf("\nsummary (worst err/tol per kernel; <= 1 passes):\n");
    for (int i = 0; i < nstats; i++)
        printf("  %-14s cases %3d  worst max_err %.3g  worst err/tol %.3f\n", stats[i].name, stats[i].cases,
               stats[i].worst_err, stats[i].worst_ratio);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
