/*
 * test_ops_cuda.c — every op of the CUDA backend's table against the CPU backend's, on the same
 * random inputs, at odd shapes (llama.cpp's test-backend-ops, with the CPU backend as the
 * reference: tests/c/test_backend.c holds that one to a naive double loop).
 *
 * Runs on a machine with a GPU (tests/gpu/run_backend.sh); built whenever CUDA is on so CI
 * compiles it, never registered with ctest (CI has no GPU). LUNAR_TEST_QUICK=1 runs a smaller
 * sweep (short sequences, fewer attention cases) for compute-sanitizer memcheck.
 *
 * Each mode (f32, bf16, f16: the CUDA backend's activations, KV and weights in that dtype; the
 * CPU backend always in f32) rounds every input to the mode's dtype first, so both backends see
 * the same values and only the ops' own arithmetic and output rounding differ. Error is
 * max |cuda - cpu| / max |cpu| per case, within backend.h's stated numerics:
 */
#define TOL_F32 1e-5      /* f32 elementwise ops, TF32 off */
#define TOL_F32_RED 1e-4  /* f32 GEMM, logits, attention: another reduction order */
#define TOL_BF16 2e-2     /* bf16 activations (8-bit mantissa) */
#define TOL_F16 1e-2      /* f16 activations (11-bit mantissa; output rounding ~5e-4) */
/*
 * The weights the GEMM, embed and logits ops take must be tensors of a model that prepare()
 * uploaded, so a tiny fixture model (tests/fixtures/runner/llama_gqa_tied) is loaded in the
 * mode's dtype and its layer matrices are swapped for the test's own tensors before prepare()
 * (restored before the model is freed).
 *
 * Attention sweep: head_dim 64/80/128 (80 takes the plain kernel, the others the vectorized
 * one), GQA ratios 1/4/8 over 2 KV heads, block sizes 16 and 13, sliding window off and 300;
 * one varlen batch mixing a one-token prompt, prefills, prefill chunks over cached prefixes and
 * decodes, contexts of 1, 15, 16, 17, 255, 1000, 4097 and 8192 tokens (crossing block
 * boundaries), every block table drawn from one shuffled pool of blocks.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "lunar.h"

#define MAX_TOKENS 2048
#define MAX_K 1031
#define MAX_HD 128

static lunar_backend_t *cpu, *gpu;
static lunar_dtype_t mode; /* the CUDA backend's act/KV/weight dtype */
static const char *mode_name;
static int quick;

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}
static int irand(int n) { return (int)((frand() * 0.5 + 0.5) * n) % n; }

/* ---- the 16-bit formats, round to nearest even (what the device conversions do) ---- */
static uint16_t f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
static float bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t f2h(float f) /* |f| < 65504 */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, m = u & 0x7fffff;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    if (e <= 0) { /* subnormal */
        if (e < -10) return (uint16_t)sign;
        m |= 0x800000;
        int shift = 14 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}
static float h2f(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (float)(h & 0x8000 ? -v : v);
}

/* v rounded to the mode's dtype, as f32 */
static float rnd(float v)
{
    return mode == LUNAR_DTYPE_BF16 ? bf2f(f2bf(v)) : mode == LUNAR_DTYPE_F16 ? h2f(f2h(v)) : v;
}
static float *rand_vec(size_t n, float scale)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = rnd(frand() * scale);
    return v;
}

/* Values of dtype dt in raw (malloc'd) from f32 h. */
static void *encode(lunar_dtype_t dt, const float *h, size_t n)
{
    size_t es = lunar_dtype_size(dt);
    void *raw = malloc(es * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        if (dt == LUNAR_DTYPE_BF16) ((uint16_t *)raw)[i] = f2bf(h[i]);
        else if (dt == LUNAR_DTYPE_F16) ((uint16_t *)raw)[i] = f2h(h[i]);
        else ((float *)raw)[i] = h[i];
    }
    return raw;
}

/* Backend memory holding h in the backend's activation dtype (f32 when as_f32). */
static void *put(lunar_backend_t *be, const float *h, size_t n, int as_f32)
{
    lunar_dtype_t dt = as_f32 ? LUNAR_DTYPE_F32 : be->act_dtype;
    void *raw = encode(dt, h, n), *d = be->alloc(be, lunar_dtype_size(dt) * (n ? n : 1));
    CHECK_MSG(d != NULL, "%s: alloc of %zu elements", be->name, n);
    if (d) be->copy_in(be, d, raw, lunar_dtype_size(dt) * n);
    free(raw);
    return d;
}
static float *get(lunar_backend_t *be, const void *d, size_t n, int as_f32)
{
    lunar_dtype_t dt = as_f32 ? LUNAR_DTYPE_F32 : be->act_dtype;
    size_t es = lunar_dtype_size(dt);
    void *raw = malloc(es * (n ? n : 1));
    float *h = malloc(sizeof(float) * (n ? n : 1));
    be->copy_out(be, raw, d, es * n);
    for (size_t i = 0; i < n; i++)
        h[i] = dt == LUNAR_DTYPE_BF16 ? bf2f(((uint16_t *)raw)[i])
             : dt == LUNAR_DTYPE_F16  ? h2f(((uint16_t *)raw)[i])
                                      : ((float *)raw)[i];
    free(raw);
    return h;
}

/* One buffer on both backends. */
typedef struct { void *c, *g; } pair_t;
static pair_t put2(const float *h, size_t n, int as_f32) { return (pair_t){put(cpu, h, n, as_f32), put(gpu, h, n, as_f32)}; }
static void free2(pair_t p)
{
    if (p.c) cpu->dealloc(cpu, p.c);
    if (p.g) gpu->dealloc(gpu, p.g);
}

static double tol_for(int reduction)
{
    return mode == LUNAR_DTYPE_BF16 ? TOL_BF16 : mode == LUNAR_DTYPE_F16 ? TOL_F16 : reduction ? TOL_F32_RED : TOL_F32;
}

/* Compares the two copies of n outputs: max |cuda - cpu| / max |cpu|, printed and checked. */
static void compare(pair_t p, size_t n, int as_f32, int reduction, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int rc = gpu->end_step(gpu);
    CHECK_MSG(rc == 0, "%s %s: cuda: %s", mode_name, what, lunar_errmsg());
    float *c = get(cpu, p.c, n, as_f32), *g = get(gpu, p.g, n, as_f32);
    double worst = 0, top = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - c[i]);
        if (!(d <= worst)) worst = d; /* NaN counts as worst */
        if (fabs(c[i]) > top) top = fabs(c[i]);
    }
    double rel = worst / (top > 0 ? top : 1), tol = tol_for(reduction);
    CHECK_MSG(rel <= tol, "%s %s: max |cuda - cpu| / max |cpu| = %.3g over %.0e", mode_name, what, rel, tol);
    printf("%-5s %-64s rel err %.2e  (max |cpu| %.3g, tol %.0e)\n", mode_name, what, rel, top, tol);
    free(c), free(g);
}

/* A batch of one sequence of T tokens (ids < vocab) at slots 0..T-1, every row a logits row. */
typedef struct {
    int32_t *ids, *pos, qs[2], lens[1], bt[1], *li;
    int64_t *slots;
    lunar_batch_t b;
} onebatch_t;
static void one_batch(onebatch_t *o, int T, int vocab)
{
    o->ids = malloc(4 * (size_t)T), o->pos = malloc(4 * (size_t)T), o->li = malloc(4 * (size_t)T);
    o->slots = malloc(8 * (size_t)T);
    for (int t = 0; t < T; t++) o->ids[t] = irand(vocab), o->pos[t] = t, o->slots[t] = t, o->li[t] = t;
    o->bt[0] = 0, o->qs[0] = 0, o->qs[1] = T, o->lens[0] = T;
    o->b = (lunar_batch_t){T, 1, o->ids, o->pos, o->slots, o->qs, o->lens, o->bt, 1, o->li, T};
}
static void one_free(onebatch_t *o) { free(o->ids), free(o->pos), free(o->li), free(o->slots); }
static int begin2(const lunar_batch_t *b)
{
    int rc = cpu->begin_step(cpu, b);
    if (!rc) rc = gpu->begin_step(gpu, b);
    CHECK_MSG(rc == 0, "begin_step: %s", lunar_errmsg());
    return rc;
}
static void end2(void) { (void)cpu->end_step(cpu), (void)gpu->end_step(gpu); }

/* ---- the test's weight tensors, swapped into the fixture model's layer matrices ---- */
enum { W_EMBED, W_LM, W_GEMM0 };
#define NGEMM 6
/* N, K of layer 0's wq, wk, wv (one K: the stacked q/k/v group), wo, w_gate, w_up (the
 * gate/up group); K 129 is not a multiple of 8 and takes cuBLAS even for one token */
static const int gemm_nk[NGEMM][2] = {{67, 96}, {1031, 96}, {256, 96}, {40, 129}, {1027, 1000}, {333, 1000}};
static lunar_tensor_t *slot_t[W_GEMM0 + NGEMM], saved[W_GEMM0 + NGEMM];

static int swap_in(lunar_model_t *m)
{
    const lunar_weights_t *w = lunar_model_weights(m);
    int n = 0;
    for (int l = 0; l < lunar_model_config(m)->num_layers; l++) {
        lunar_layer_weights_t *lw = &w->layers[l];
        lunar_tensor_t *mats[] = {lw->wq, lw->wk, lw->wv, lw->wo, lw->w_gate, lw->w_up, lw->w_down};
        for (int i = 0; i < 7 && n < W_GEMM0 + NGEMM; i++) slot_t[n++] = mats[i];
    }
    CHECK_MSG(n == W_GEMM0 + NGEMM, "the fixture model has %d layer matrices", n);
    if (n != W_GEMM0 + NGEMM) return -1;
    for (int i = 0; i < n; i++) {
        int N = i == W_EMBED ? 301 : i == W_LM ? 1001 : gemm_nk[i - W_GEMM0][0];
        int K = i == W_EMBED ? 129 : i == W_LM ? 96 : gemm_nk[i - W_GEMM0][1];
        float *h = rand_vec((size_t)N * K, 1);
        saved[i] = *slot_t[i];
        *slot_t[i] = (lunar_tensor_t){"test", mode, 2, {N, K}, encode(mode, h, (size_t)N * K),
                                      (size_t)N * K * lunar_dtype_size(mode)};
        free(h);
    }
    return 0;
}
static void swap_out(void)
{
    for (int i = 0; i < W_GEMM0 + NGEMM; i++)
        if (slot_t[i]) free(slot_t[i]->data), *slot_t[i] = saved[i], slot_t[i] = NULL;
}

/* ---- the ops ---- */
static void test_embed(void)
{
    const lunar_tensor_t *E = slot_t[W_EMBED];
    int T = 37, D = (int)E->shape[1];
    onebatch_t o;
    one_batch(&o, T, (int)E->shape[0]);
    float *z = calloc((size_t)T * D, sizeof(float));
    pair_t x = put2(z, (size_t)T * D, 0);
    if (!begin2(&o.b)) {
        cpu->embed(cpu, x.c, &o.b, E), gpu->embed(gpu, x.g, &o.b, E);
        compare(x, (size_t)T * D, 0, 0, "embed T=%d vocab=%d dim=%d", T, (int)E->shape[0], D);
    }
    end2(), free2(x), free(z), one_free(&o);
}

static void test_norms(int R, int D)
{
    float *x = rand_vec((size_t)R * D, 2), *d = rand_vec((size_t)R * D, 1), *w = rand_vec((size_t)D, 1);
    pair_t px = put2(x, (size_t)R * D, 0), pd = put2(d, (size_t)R * D, 0), pw = put2(w, (size_t)D, 1);
    pair_t po = put2(d, (size_t)R * D, 0);
    cpu->rmsnorm(cpu, po.c, px.c, R, D, pw.c, 1e-6f), gpu->rmsnorm(gpu, po.g, px.g, R, D, pw.g, 1e-6f);
    compare(po, (size_t)R * D, 0, 0, "rmsnorm R=%d dim=%d", R, D);
    cpu->add_rmsnorm(cpu, px.c, pd.c, po.c, R, D, pw.c, 1e-5f);
    gpu->add_rmsnorm(gpu, px.g, pd.g, po.g, R, D, pw.g, 1e-5f);
    compare(px, (size_t)R * D, 0, 0, "add_rmsnorm R=%d dim=%d: residual", R, D);
    compare(po, (size_t)R * D, 0, 0, "add_rmsnorm R=%d dim=%d: normed", R, D);
    free2(px), free2(pd), free2(pw), free2(po), free(x), free(d), free(w);
}

static void test_gemm(int T, int wi, int bias)
{
    const lunar_tensor_t *W = slot_t[W_GEMM0 + wi];
    int N = (int)W->shape[0], K = (int)W->shape[1];
    float *x = rand_vec((size_t)T * K, 1), *b = rand_vec((size_t)N, 1);
    float *z = calloc((size_t)T * N, sizeof(float));
    pair_t px = put2(x, (size_t)T * K, 0), pb = put2(b, (size_t)N, 1), py = put2(z, (size_t)T * N, 0);
    cpu->gemm(cpu, py.c, px.c, T, W, bias ? pb.c : NULL), gpu->gemm(gpu, py.g, px.g, T, W, bias ? pb.g : NULL);
    compare(py, (size_t)T * N, 0, 1, "gemm %s weights T=%d N=%d K=%d bias=%d", lunar_dtype_name(W->dtype), T, N, K,
            bias);
    free2(px), free2(pb), free2(py), free(x), free(b), free(z);
}

/* gemm_multi over the weights first..first+n-1 (stacked by prepare) against one CPU gemm each. */
static void test_gemm_multi(int T, int first, int n, int bias)
{
    const lunar_tensor_t *Ws[3];
    int K = (int)slot_t[W_GEMM0 + first]->shape[1];
    float *x = rand_vec((size_t)T * K, 1), *b[3], *z[3];
    pair_t px = put2(x, (size_t)T * K, 0), pb[3], py[3];
    void *yg[3];
    const float *bg[3];
    for (int i = 0; i < n; i++) {
        Ws[i] = slot_t[W_GEMM0 + first + i];
        int N = (int)Ws[i]->shape[0];
        b[i] = rand_vec((size_t)N, 1), z[i] = calloc((size_t)T * N, sizeof(float));
        pb[i] = put2(b[i], (size_t)N, 1), py[i] = put2(z[i], (size_t)T * N, 0);
        yg[i] = py[i].g, bg[i] = bias ? pb[i].g : NULL;
        cpu->gemm(cpu, py[i].c, px.c, T, Ws[i], bias ? pb[i].c : NULL);
    }
    gpu->gemm_multi(gpu, yg, px.g, T, Ws, bg, n);
    for (int i = 0; i < n; i++) {
        compare(py[i], (size_t)T * Ws[i]->shape[0], 0, 1, "gemm_multi %s, matrix %d of %d: T=%d N=%d K=%d bias=%d",
                lunar_dtype_name(Ws[i]->dtype), i, n, T, (int)Ws[i]->shape[0], K, bias);
        free2(pb[i]), free2(py[i]), free(b[i]), free(z[i]);
    }
    free2(px), free(x);
}

static void test_rope(int T, int nq, int nk, int hd, int rot)
{
    float *q = rand_vec((size_t)T * nq * hd, 1), *k = rand_vec((size_t)T * nk * hd, 1);
    float *cs = malloc(sizeof(float) * T * rot);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < rot / 2; i++) {
            double a = (t * 7 + 3) * pow(10000.0, -2.0 * i / rot);
            cs[t * rot + i] = (float)cos(a), cs[t * rot + rot / 2 + i] = (float)sin(a);
        }
    pair_t pq = put2(q, (size_t)T * nq * hd, 0), pk = put2(k, (size_t)T * nk * hd, 0), pc = put2(cs, (size_t)T * rot, 1);
    cpu->rope(cpu, pq.c, pk.c, T, nq, nk, hd, rot, pc.c), gpu->rope(gpu, pq.g, pk.g, T, nq, nk, hd, rot, pc.g);
    compare(pq, (size_t)T * nq * hd, 0, 0, "rope q T=%d nq=%d hd=%d rot=%d", T, nq, hd, rot);
    compare(pk, (size_t)T * nk * hd, 0, 0, "rope k T=%d nk=%d hd=%d rot=%d", T, nk, hd, rot);
    free2(pq), free2(pk), free2(pc), free(q), free(k), free(cs);
}

static void test_silu_mul(long n)
{
    float *g = rand_vec((size_t)n, 6), *u = rand_vec((size_t)n, 2);
    pair_t pg = put2(g, (size_t)n, 0), pu = put2(u, (size_t)n, 0), po = put2(u, (size_t)n, 0);
    cpu->silu_mul(cpu, po.c, pg.c, pu.c, n), gpu->silu_mul(gpu, po.g, pg.g, pu.g, n);
    compare(po, (size_t)n, 0, 0, "silu_mul n=%ld", n);
    cpu->silu_mul(cpu, pg.c, pg.c, pu.c, n), gpu->silu_mul(gpu, pg.g, pg.g, pu.g, n);
    compare(pg, (size_t)n, 0, 0, "silu_mul n=%ld in place", n);
    free2(pg), free2(pu), free2(po), free(g), free(u);
}

/* T rows written to scattered slots of a 40-block cache; the whole cache compared (so a write
 * to any other slot shows too). */
static void test_kv_write(int T, int nk, int hd, int bs)
{
    int nslots = 40 * bs, row = nk * hd;
    onebatch_t o;
    one_batch(&o, T, 1);
    int *perm = malloc(sizeof(int) * nslots);
    for (int i = 0; i < nslots; i++) perm[i] = i;
    for (int i = nslots - 1; i > 0; i--) {
        int j = irand(i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int t = 0; t < T; t++) o.slots[t] = perm[t];
    float *k = rand_vec((size_t)T * row, 1), *v = rand_vec((size_t)T * row, 1), *z = calloc((size_t)nslots * row, 4);
    pair_t pk = put2(k, (size_t)T * row, 0), pv = put2(v, (size_t)T * row, 0);
    pair_t kc = put2(z, (size_t)nslots * row, 0), vc = put2(z, (size_t)nslots * row, 0);
    if (!begin2(&o.b)) {
        cpu->kv_write(cpu, kc.c, vc.c, pk.c, pv.c, &o.b, nk, hd);
        gpu->kv_write(gpu, kc.g, vc.g, pk.g, pv.g, &o.b, nk, hd);
        compare(kc, (size_t)nslots * row, 0, 0, "kv_write K T=%d nk=%d hd=%d block=%d, scattered slots", T, nk, hd, bs);
        compare(vc, (size_t)nslots * row, 0, 0, "kv_write V T=%d nk=%d hd=%d block=%d, scattered slots", T, nk, hd, bs);
    }
    end2(), free2(pk), free2(pv), free2(kc), free2(vc), free(k), free(v), free(z), free(perm), one_free(&o);
}

/* (cached, new) tokens per sequence: a one-token prompt, whole prefills, prefill chunks over
 * cached prefixes, decodes; contexts 1, 15, 16, 17, 255, 1000, 4097, 8192, 8192. */
static const int seqs_full[][2] = {{0, 1}, {0, 15}, {1, 15}, {16, 1}, {200, 55}, {0, 1000}, {4000, 97}, {8191, 1},
                                   {8100, 92}};
static const int seqs_quick[][2] = {{0, 1}, {0, 15}, {1, 15}, {16, 1}, {200, 55}, {990, 10}};

static void test_attention(int hd, int ratio, int bs, int window)
{
    const int(*seqs)[2] = quick ? seqs_quick : seqs_full;
    int ns = quick ? 6 : 9, nk = 2, nq = nk * ratio, T = 0, maxlen = 0, nblocks = 0;
    for (int s = 0; s < ns; s++) {
        int len = seqs[s][0] + seqs[s][1];
        T += seqs[s][1], nblocks += (len + bs - 1) / bs;
        if (len > maxlen) maxlen = len;
    }
    int mb = (maxlen + bs - 1) / bs + 1;
    nblocks += 3; /* some blocks nobody reads */
    int *pool = malloc(sizeof(int) * nblocks);
    for (int i = 0; i < nblocks; i++) pool[i] = i;
    for (int i = nblocks - 1; i > 0; i--) {
        int j = irand(i + 1), t = pool[i];
        pool[i] = pool[j], pool[j] = t;
    }
    int32_t *ids = calloc((size_t)T, 4), *pos = malloc(4 * (size_t)T), *qs = malloc(4 * (size_t)(ns + 1));
    int32_t *lens = malloc(4 * (size_t)ns), *tabs = malloc(4 * (size_t)ns * mb), *li = malloc(4 * (size_t)T);
    int64_t *slot = malloc(8 * (size_t)T);
    int t = 0, next = 0;
    qs[0] = 0;
    for (int s = 0; s < ns; s++) {
        int cached = seqs[s][0], len = cached + seqs[s][1];
        for (int i = 0; i < mb; i++) tabs[s * mb + i] = i < (len + bs - 1) / bs ? pool[next++] : -1;
        for (int p = cached; p < len; p++, t++)
            pos[t] = p, li[t] = t, slot[t] = (int64_t)tabs[s * mb + p / bs] * bs + p % bs;
        lens[s] = len, qs[s + 1] = t;
    }
    lunar_batch_t b = {T, ns, ids, pos, slot, qs, lens, tabs, mb, li, T};
    size_t ncache = (size_t)nblocks * bs * nk * hd, nqv = (size_t)T * nq * hd;
    float *kh = rand_vec(ncache, 1), *vh = rand_vec(ncache, 1), *qh = rand_vec(nqv, 1);
    pair_t kc = put2(kh, ncache, 0), vc = put2(vh, ncache, 0), q = put2(qh, nqv, 0), out = put2(qh, nqv, 0);
    float scale = (float)(1 / sqrt(hd));
    if (!begin2(&b)) {
        cpu->attention(cpu, out.c, q.c, kc.c, vc.c, &b, nq, nk, hd, bs, window, scale);
        gpu->attention(gpu, out.g, q.g, kc.g, vc.g, &b, nq, nk, hd, bs, window, scale);
        compare(out, nqv, 0, 1, "attention hd=%d nq/nk=%d/%d block=%d window=%d, %d seqs %d tokens", hd, nq, nk, bs,
                window, ns, T);
    }
    end2();
    free2(kc), free2(vc), free2(q), free2(out), free(kh), free(vh), free(qh);
    free(pool), free(ids), free(pos), free(qs), free(lens), free(tabs), free(li), free(slot);
}

/* Rows [i0, i0 + n) of the step's logits_indices (chosen rows, out of order) against lm_head. */
static void test_logits(int T, int nl, int i0, int n)
{
    const lunar_tensor_t *W = slot_t[W_LM];
    int V = (int)W->shape[0], D = (int)W->shape[1];
    onebatch_t o;
    one_batch(&o, T, 1);
    for (int i = 0; i < nl; i++) o.li[i] = (i * 7 + 3) % T;
    o.b.num_logits = nl;
    float *x = rand_vec((size_t)T * D, 1), *z = calloc((size_t)n * V, 4);
    pair_t px = put2(x, (size_t)T * D, 0), po = put2(z, (size_t)n * V, 1);
    if (!begin2(&o.b)) {
        cpu->logits(cpu, po.c, px.c, &o.b, i0, n, W), gpu->logits(gpu, po.g, px.g, &o.b, i0, n, W);
        compare(po, (size_t)n * V, 1, 1, "logits rows %d..%d of %d, vocab=%d dim=%d", i0, i0 + n - 1, nl, V, D);
    }
    end2(), free2(px), free2(po), free(x), free(z), one_free(&o);
}

static void run_mode(lunar_dtype_t dt, const char *dtype)
{
    char dir[1024];
    const char *src = getenv("LUNAR_SRC");
    snprintf(dir, sizeof dir, "%s/tests/fixtures/runner/llama_gqa_tied", src ? src : ".");
    mode = dt, mode_name = dt == LUNAR_DTYPE_F32 ? "f32" : dt == LUNAR_DTYPE_BF16 ? "bf16" : "f16";
    lunar_load_options_t lo = {dtype, NULL, 0, 0, 0};
    lunar_model_t *m = NULL;
    int rc = lunar_model_load(dir, &lo, &m);
    CHECK_MSG(rc == 0, "load the fixture model as %s: %s", dtype, lunar_errmsg());
    if (rc) return;
    lunar_backend_params_t p = {0, MAX_K, MAX_TOKENS, MAX_HD, 0, 1};
    rc = swap_in(m);
    if (!rc) rc = lunar_backend_create("cpu", &p, &cpu);
    if (!rc) rc = lunar_backend_cuda_create(&p, &gpu);
    if (!rc) rc = cpu->prepare(cpu, m);
    if (!rc) rc = gpu->prepare(gpu, m);
    CHECK_MSG(rc == 0, "%s: backends: %s", mode_name, lunar_errmsg());
    if (!rc) {
        test_embed();
        test_norms(33, 129);
        test_norms(7 * 4, 80); /* qwen3's per-head q/k norm */
        static const int Ts[] = {1, 7, 33, 513};
        for (int wi = 0; wi < NGEMM; wi++)
            for (int i = 0; i < 4; i++) test_gemm(Ts[i], wi, (wi + i) & 1);
        /* one token, through the scratch, and past FUSE_MAX_T (one GEMM per matrix). The outputs
         * here are separate allocations, so the one-token path straight into adjacent outputs
         * (every batch-1 decode) is not reached: test_backend_cuda covers it end to end. */
        static const int Tm[] = {1, 3, 8, 9, 33, 513};
        for (int i = 0; i < 6; i++) {
            test_gemm_multi(Tm[i], 0, 3, i & 1); /* q/k/v */
            test_gemm_multi(Tm[i], 4, 2, 0);     /* gate/up */
        }
        test_rope(33, 8, 2, 64, 64);
        test_rope(17, 4, 4, 80, 40); /* partial rotary */
        test_rope(5, 16, 2, 128, 32);
        test_silu_mul(100003);
        test_silu_mul(8 * 4099); /* the 8-wide kernel */
        test_kv_write(37, 2, 80, 13);
        test_kv_write(16, 8, 128, 16);
        test_logits(40, 24, 0, 24);
        test_logits(40, 24, 3, 5);
        static const int hds[] = {64, 72, 80, 128}, ratios[] = {1, 4, 8};
        for (int h = 0; h < (int)(sizeof hds / sizeof *hds); h++)
            for (int r = 0; r < 3; r++)
                for (int bsi = 0; bsi < 2; bsi++)
                    for (int w = 0; w < 2; w++) {
                        /* f16 and the quick run: every head_dim and ratio, not every block/window */
                        if ((dt == LUNAR_DTYPE_F16 || quick) && bsi != w) continue;
                        test_attention(hds[h], ratios[r], bsi ? 13 : 16, w ? 300 : 0);
                    }
    }
    if (gpu) gpu->free(gpu), gpu = NULL;
    if (cpu) cpu->free(cpu), cpu = NULL;
    swap_out();
    lunar_model_free(m);
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_WARN);
    if (lunar_device_count() < 1) {
        fprintf(stderr, "test_ops_cuda: no CUDA device visible\n");
        return 1;
    }
    quick = getenv("LUNAR_TEST_QUICK") != NULL;
    run_mode(LUNAR_DTYPE_F32, "float32");
    run_mode(LUNAR_DTYPE_BF16, "bfloat16");
    run_mode(LUNAR_DTYPE_F16, "float16");
    return CHECK_DONE();
}
