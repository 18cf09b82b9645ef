/*
 * test_backend.c — every op of the CPU backend's table (backend/backend.h) against a naive
 * double-precision loop written here, test-backend-ops style, at odd sizes (primes, sizes just
 * off the GEMM's 4x2 tiles, 8-lane vectors and 64-token tasks) as well as round ones:
 * embedding and GEMM over f32/f16/bf16 weights (with and without bias), RMSNorm (plain, per
 * head, fused with the residual add), RoPE (HF rotate_half, partial rotary), SiLU·mul, KV write
 * (the slots written and no other), paged attention (shuffled blocks, odd block size, GQA and
 * MQA, sliding window, cached prefixes plus new tokens of several sequences in one flat batch)
 * against dense attention over each sequence's contiguous K/V, and logits of chosen rows.
 * Also: a GEMM row is the same bits whatever the batch and thread count around it (what makes
 * a sequence's logits identical alone and batched). A CUDA backend is held to these references.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "lunar.h"

#define MAXK 300

static uint64_t rng = 88172645463325252ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}

/* Independent conversions: bf16 is the top half of an f32; f16 decoded field by field. */
static uint16_t to_bf16(float f, float *back)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t h = (uint16_t)(u >> 16); /* truncation: the reference reads back what is stored */
    u = (uint32_t)h << 16;
    memcpy(back, &u, 4);
    return h;
}

static double f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

static uint16_t to_f16(float f, float *back) /* |f| < 2: normal or subnormal, no inf */
{
    double a = fabs(f);
    uint16_t best = 0;
    double bd = 1e30;
    for (int e = 0; e < 31; e++) { /* the exponent whose range holds a, nearest mantissa */
        double step = e == 0 ? ldexp(1, -24) : ldexp(1, e - 25), lo = e == 0 ? 0 : ldexp(1024, e - 25);
        if (a < lo || a >= lo + 1024 * step) continue;
        int m = (int)floor((a - lo) / step + 0.5);
        if (m > 1023) m = 1023;
        uint16_t h = (uint16_t)((e << 10) | m | (f < 0 ? 0x8000 : 0));
        double d = fabs(f16_value(h) - f);
        if (d < bd) bd = d, best = h;
    }
    *back = (float)f16_value(best);
    return best;
}

/* Random weights [n] of dtype dt in raw; their exact f32 values in back. */
static void rand_weights(lunar_dtype_t dt, void *raw, float *back, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = frand(), b = v;
        if (dt == LUNAR_DTYPE_BF16) ((uint16_t *)raw)[i] = to_bf16(v, &b);
        else if (dt == LUNAR_DTYPE_F16) ((uint16_t *)raw)[i] = to_f16(v, &b);
        else ((float *)raw)[i] = v;
        back[i] = b;
    }
}

/* max |got - want| / (max |want| + 1e-30) */
static double rel_err(const float *got, const double *want, size_t n)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        e = d > e ? d : e;
        m = fabs(want[i]) > m ? fabs(want[i]) : m;
    }
    return e / (m + 1e-30);
}

static void test_gemm(lunar_backend_t *be, lunar_dtype_t dt, int T, int N, int K, int bias)
{
    float *x = malloc(sizeof(float) * T * K), *wf = malloc(sizeof(float) * N * K), *b = malloc(sizeof(float) * N);
    float *y = malloc(sizeof(float) * T * N), *y1 = malloc(sizeof(float) * N);
    double *ref = malloc(sizeof(double) * T * N);
    void *raw = malloc((size_t)N * K * 4);
    for (int i = 0; i < T * K; i++) x[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    rand_weights(dt, raw, wf, (size_t)N * K);
    lunar_tensor_t W = {"w", dt, 2, {N, K}, raw, (size_t)N * K * lunar_dtype_size(dt)};
    be->gemm(be, y, x, T, &W, bias ? b : NULL);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = bias ? b[n] : 0;
            for (int k = 0; k < K; k++) s += (double)x[t * K + k] * wf[n * K + k];
            ref[t * N + n] = s;
        }
    double e = rel_err(y, ref, (size_t)T * N);
    CHECK_MSG(e < 1e-5, "gemm %s T=%d N=%d K=%d bias=%d: relative error %g", lunar_dtype_name(dt), T, N, K, bias, e);
    /* the last row alone gives the same bits as inside the batch */
    be->gemm(be, y1, x + (size_t)(T - 1) * K, 1, &W, bias ? b : NULL);
    CHECK_MSG(!memcmp(y1, y + (size_t)(T - 1) * N, sizeof(float) * N), "gemm %s T=%d N=%d K=%d: row alone != batched",
              lunar_dtype_name(dt), T, N, K);
    free(x), free(wf), free(b), free(y), free(y1), free(ref), free(raw);
}

/* A one-sequence batch of T tokens at positions 0..T-1 in slots 0..T-1 (for the ops that only
 * read token_ids / slot_mapping / logits_indices). */
typedef struct {
    int32_t ids[160], pos[160], qs[2], lens[1], bt[64], li[160];
    int64_t slots[160];
    lunar_batch_t b;
} onebatch_t;

static void one_batch(onebatch_t *o, int T)
{
    for (int t = 0; t < T; t++) o->ids[t] = 0, o->pos[t] = t, o->slots[t] = t, o->li[t] = t;
    for (int i = 0; i < 64; i++) o->bt[i] = i;
    o->qs[0] = 0, o->qs[1] = T, o->lens[0] = T;
    o->b = (lunar_batch_t){T, 1, o->ids, o->pos, o->slots, o->qs, o->lens, o->bt, 64, o->li, T};
}

static void test_embed(lunar_backend_t *be, lunar_dtype_t dt)
{
    enum { V = 29, D = 37, T = 11 };
    uint16_t raw[V * D * 2];
    float back[V * D], x[T * D];
    double ref[T * D];
    rand_weights(dt, raw, back, V * D);
    lunar_tensor_t E = {"embed", dt, 2, {V, D}, raw, (size_t)V * D * lunar_dtype_size(dt)};
    onebatch_t ob;
    one_batch(&ob, T);
    for (int t = 0; t < T; t++) ob.ids[t] = (t * 17 + 5) % V;
    ob.ids[3] = V - 1, ob.ids[4] = 0;
    CHECK(be->begin_step(be, &ob.b) == 0);
    be->embed(be, x, &ob.b, &E);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) ref[t * D + i] = back[ob.ids[t] * D + i];
    CHECK_MSG(rel_err(x, ref, T * D) == 0, "embed %s: %g", lunar_dtype_name(dt), rel_err(x, ref, T * D));
}

static void test_norms(lunar_backend_t *be, int R, int D)
{
    float *x = malloc(sizeof(float) * R * D), *w = malloc(sizeof(float) * D), *out = malloc(sizeof(float) * R * D);
    float *resid = malloc(sizeof(float) * R * D), *delta = malloc(sizeof(float) * R * D);
    float *sum = malloc(sizeof(float) * R * D);
    double *ref = malloc(sizeof(double) * R * D);
    for (int i = 0; i < R * D; i++) x[i] = 3 * frand(), resid[i] = frand(), delta[i] = frand();
    for (int i = 0; i < D; i++) w[i] = 1 + 0.3f * frand();
    float eps = 1e-5f;
    be->rmsnorm(be, out, x, R, D, w, eps);
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[r * D + i] * x[r * D + i];
        for (int i = 0; i < D; i++) ref[r * D + i] = x[r * D + i] / sqrt(ss / D + eps) * w[i];
    }
    CHECK_MSG(rel_err(out, ref, (size_t)R * D) < 1e-6, "rmsnorm %dx%d: %g", R, D, rel_err(out, ref, (size_t)R * D));
    be->rmsnorm(be, x, x, R, D, w, eps); /* in place */
    CHECK_MSG(!memcmp(x, out, sizeof(float) * R * D), "rmsnorm in place (out == x) gives the same bits");

    for (int i = 0; i < R * D; i++) sum[i] = resid[i] + delta[i];
    be->add_rmsnorm(be, resid, delta, out, R, D, w, eps);
    CHECK_MSG(!memcmp(resid, sum, sizeof(float) * R * D), "add_rmsnorm leaves resid = resid + delta");
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)sum[r * D + i] * sum[r * D + i];
        for (int i = 0; i < D; i++) ref[r * D + i] = sum[r * D + i] / sqrt(ss / D + eps) * w[i];
    }
    CHECK_MSG(rel_err(out, ref, (size_t)R * D) < 1e-6, "add_rmsnorm %dx%d: %g", R, D, rel_err(out, ref, (size_t)R * D));
    free(x), free(w), free(out), free(resid), free(delta), free(sum), free(ref);
}

static void test_rope(lunar_backend_t *be, int T, int NQ, int NK, int HD, int ROT)
{
    size_t nqv = (size_t)T * NQ * HD, nkv = (size_t)T * NK * HD;
    float *q = malloc(sizeof(float) * nqv), *k = malloc(sizeof(float) * nkv), *q0 = malloc(sizeof(float) * nqv);
    float *k0 = malloc(sizeof(float) * nkv), *cs = malloc(sizeof(float) * T * ROT);
    double *rq = malloc(sizeof(double) * nqv), *rk = malloc(sizeof(double) * nkv);
    for (size_t i = 0; i < nqv; i++) q[i] = q0[i] = frand();
    for (size_t i = 0; i < nkv; i++) k[i] = k0[i] = frand();
    for (int t = 0; t < T; t++)
        for (int i = 0; i < ROT / 2; i++) {
            double ang = (t * 7 + 3) * pow(10000.0, -2.0 * i / ROT);
            cs[t * ROT + i] = (float)cos(ang) * 1.1f, cs[t * ROT + ROT / 2 + i] = (float)sin(ang) * 1.1f;
        }
    be->rope(be, q, k, T, NQ, NK, HD, ROT, cs);
    for (int pass = 0; pass < 2; pass++) {
        int nh = pass ? NK : NQ;
        const float *src = pass ? k0 : q0;
        double *dst = pass ? rk : rq;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                const float *v = src + ((size_t)t * nh + h) * HD;
                double *o = dst + ((size_t)t * nh + h) * HD;
                for (int i = 0; i < HD; i++) {
                    if (i >= ROT) { o[i] = v[i]; continue; }
                    int j = i % (ROT / 2);
                    double c = cs[t * ROT + j], s = cs[t * ROT + ROT / 2 + j];
                    /* rotate_half: x*cos + [-x2, x1]*sin */
                    o[i] = i < ROT / 2 ? v[i] * c - v[i + ROT / 2] * s : v[i] * c + v[i - ROT / 2] * s;
                }
            }
    }
    CHECK_MSG(rel_err(q, rq, nqv) < 1e-6, "rope q T=%d hd=%d rot=%d: %g", T, HD, ROT, rel_err(q, rq, nqv));
    CHECK_MSG(rel_err(k, rk, nkv) < 1e-6, "rope k T=%d hd=%d rot=%d: %g", T, HD, ROT, rel_err(k, rk, nkv));
    free(q), free(k), free(q0), free(k0), free(cs), free(rq), free(rk);
}

static void test_silu_mul(lunar_backend_t *be, int n)
{
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
    double *r = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) g[i] = 8 * frand(), u[i] = frand(), r[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    be->silu_mul(be, o, g, u, n);
    CHECK_MSG(rel_err(o, r, n) < 1e-6, "silu_mul n=%d: %g", n, rel_err(o, r, n));
    be->silu_mul(be, g, g, u, n); /* out == gate */
    CHECK_MSG(!memcmp(g, o, sizeof(float) * n), "silu_mul in place gives the same bits");
    free(g), free(u), free(o), free(r);
}

static void test_kv_write(lunar_backend_t *be)
{
    enum { NK = 3, HD = 5, BS = 3, NB = 7, T = 6 };
    size_t row = NK * HD, n = (size_t)NB * BS * row;
    float *kc = be->alloc(be, n * 4), *vc = be->alloc(be, n * 4), k[T * NK * HD], v[T * NK * HD];
    CHECK(kc && vc);
    int zero = 1;
    for (size_t i = 0; i < n; i++) zero &= kc[i] == 0 && vc[i] == 0;
    CHECK_MSG(zero, "alloc hands out zeroed memory");
    for (int i = 0; i < T * NK * HD; i++) k[i] = frand(), v[i] = frand();
    onebatch_t ob;
    one_batch(&ob, T);
    const int64_t slots[T] = {20, 0, 7, 8, 13, 2}; /* scattered over blocks, out of order */
    memcpy(ob.slots, slots, sizeof slots);
    CHECK(be->begin_step(be, &ob.b) == 0);
    be->kv_write(be, kc, vc, k, v, &ob.b, NK, HD);
    int ok = 1;
    for (int s = 0; s < NB * BS; s++) {
        int t = -1;
        for (int i = 0; i < T; i++) t = slots[i] == s ? i : t;
        for (size_t i = 0; i < row; i++) {
            float wk = t >= 0 ? k[t * row + i] : 0, wv = t >= 0 ? v[t * row + i] : 0;
            ok &= kc[s * row + i] == wk && vc[s * row + i] == wv;
        }
    }
    CHECK_MSG(ok, "kv_write puts each token's K/V rows at its slot and touches no other");
    be->dealloc(be, kc), be->dealloc(be, vc);
}

/* Three sequences, blocks handed out in a shuffled order; each has `cached` tokens from
 * earlier steps (written by kv_write in a first step) and `fresh` new ones now. */
static void test_attention(lunar_backend_t *be, int NQ, int NK, int HD, int BS, int window)
{
    enum { S = 3, MAXB = 12, MAXP = 32 };
    const int NB = S * MAXB;
    const int cached[S] = {0, 9, 17}, fresh[S] = {7, 1, 3};
    int32_t perm[S * MAXB];
    for (int i = 0; i < NB; i++) perm[i] = i;
    for (int i = NB - 1; i > 0; i--) {
        int j = (int)((frand() + 1) / 2 * (i + 1)) % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t bt[S * MAXB];
    for (int i = 0; i < S * MAXB; i++) bt[i] = perm[i];
    size_t row = (size_t)NK * HD, cache_n = (size_t)NB * BS * row;
    float *kc = be->alloc(be, cache_n * 4), *vc = be->alloc(be, cache_n * 4);
    /* full K/V/Q of each sequence, contiguous, for the reference */
    float *K = malloc(sizeof(float) * S * MAXP * row), *Vv = malloc(sizeof(float) * S * MAXP * row);
    float *Q = malloc(sizeof(float) * S * MAXP * NQ * HD);
#define KV(a, s, p) ((a) + ((size_t)(s) * MAXP + (p)) * row)
#define QQ(s, p) (Q + ((size_t)(s) * MAXP + (p)) * NQ * HD)
    for (int s = 0; s < S; s++)
        for (int p = 0; p < cached[s] + fresh[s]; p++) {
            for (size_t i = 0; i < row; i++) KV(K, s, p)[i] = frand(), KV(Vv, s, p)[i] = frand();
            for (int i = 0; i < NQ * HD; i++) QQ(s, p)[i] = 2 * frand();
        }
    float *kbuf = malloc(sizeof(float) * 64 * row), *vbuf = malloc(sizeof(float) * 64 * row);
    float *qbuf = malloc(sizeof(float) * 64 * NQ * HD), *out = malloc(sizeof(float) * 64 * NQ * HD);
    double *ref = malloc(sizeof(double) * 64 * NQ * HD);
    int32_t ids[64] = {0}, pos[64], qs[S + 1], lens[S], seq_of[64];
    int64_t slots[64];
    /* step 1: the cached prefixes (as earlier steps would have written them) */
    int T = 0, ns = 0;
    qs[0] = 0;
    for (int s = 0; s < S; s++) {
        for (int p = 0; p < cached[s]; p++, T++) {
            memcpy(kbuf + T * row, KV(K, s, p), row * 4), memcpy(vbuf + T * row, KV(Vv, s, p), row * 4);
            slots[T] = (int64_t)bt[s * MAXB + p / BS] * BS + p % BS;
            pos[T] = p;
        }
        if (cached[s]) lens[ns] = cached[s], qs[++ns] = T;
    }
    lunar_batch_t b1 = {T, ns, ids, pos, slots, qs, lens, bt + (S - ns) * MAXB, MAXB, NULL, 0};
    CHECK(be->begin_step(be, &b1) == 0);
    be->kv_write(be, kc, vc, kbuf, vbuf, &b1, NK, HD);
    /* step 2: the new tokens of all three in one flat batch */
    T = 0;
    qs[0] = 0;
    for (int s = 0; s < S; s++) {
        for (int p = cached[s]; p < cached[s] + fresh[s]; p++, T++) {
            memcpy(kbuf + T * row, KV(K, s, p), row * 4), memcpy(vbuf + T * row, KV(Vv, s, p), row * 4);
            memcpy(qbuf + (size_t)T * NQ * HD, QQ(s, p), sizeof(float) * NQ * HD);
            slots[T] = (int64_t)bt[s * MAXB + p / BS] * BS + p % BS;
            pos[T] = p, seq_of[T] = s;
        }
        qs[s + 1] = T, lens[s] = cached[s] + fresh[s];
    }
    lunar_batch_t b = {T, S, ids, pos, slots, qs, lens, bt, MAXB, NULL, 0};
    CHECK(be->begin_step(be, &b) == 0);
    be->kv_write(be, kc, vc, kbuf, vbuf, &b, NK, HD);
    float scale = 1.0f / sqrtf((float)HD);
    be->attention(be, out, qbuf, kc, vc, &b, NQ, NK, HD, BS, window, scale);
    for (int t = 0; t < T; t++) {
        int s = seq_of[t], p = pos[t], lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        for (int h = 0; h < NQ; h++) {
            int kh = h / (NQ / NK);
            double sc[MAXP], m = -1e300, l = 0;
            for (int j = lo; j <= p; j++) {
                double d = 0;
                for (int i = 0; i < HD; i++) d += (double)QQ(s, p)[h * HD + i] * KV(K, s, j)[kh * HD + i];
                sc[j] = d * scale;
                m = sc[j] > m ? sc[j] : m;
            }
            for (int j = lo; j <= p; j++) l += sc[j] = exp(sc[j] - m);
            for (int i = 0; i < HD; i++) {
                double a = 0;
                for (int j = lo; j <= p; j++) a += sc[j] * KV(Vv, s, j)[kh * HD + i];
                ref[((size_t)t * NQ + h) * HD + i] = a / l;
            }
        }
    }
    double e = rel_err(out, ref, (size_t)T * NQ * HD);
    CHECK_MSG(e < 1e-5, "paged attention nq=%d nk=%d hd=%d block=%d window=%d vs dense: relative error %g", NQ, NK, HD,
              BS, window, e);
#undef KV
#undef QQ
    be->dealloc(be, kc), be->dealloc(be, vc);
    free(K), free(Vv), free(Q), free(kbuf), free(vbuf), free(qbuf), free(out), free(ref);
}

/* Logits of chosen rows (repeated, out of order, more than one 64-row chunk). */
static void test_logits(lunar_backend_t *be, lunar_dtype_t dt)
{
    enum { T = 150, D = 23, V = 41, NL = 97 };
    float *x = malloc(sizeof(float) * T * D), *wf = malloc(sizeof(float) * V * D), *out = malloc(sizeof(float) * NL * V);
    void *raw = malloc((size_t)V * D * 4);
    double *ref = malloc(sizeof(double) * NL * V);
    for (int i = 0; i < T * D; i++) x[i] = frand();
    rand_weights(dt, raw, wf, (size_t)V * D);
    lunar_tensor_t W = {"lm_head", dt, 2, {V, D}, raw, (size_t)V * D * lunar_dtype_size(dt)};
    onebatch_t ob;
    one_batch(&ob, T);
    for (int i = 0; i < NL + 3; i++) ob.li[i] = (i * 37 + 11) % T;
    ob.b.num_logits = NL + 3;
    CHECK(be->begin_step(be, &ob.b) == 0);
    be->logits(be, out, x, &ob.b, 3, NL, &W); /* rows li[3 .. 3 + NL) */
    for (int i = 0; i < NL; i++)
        for (int n = 0; n < V; n++) {
            double s = 0;
            for (int k = 0; k < D; k++) s += (double)x[ob.li[3 + i] * D + k] * wf[n * D + k];
            ref[i * V + n] = s;
        }
    CHECK_MSG(rel_err(out, ref, NL * V) < 1e-5, "logits %s: %g", lunar_dtype_name(dt), rel_err(out, ref, NL * V));
    free(x), free(wf), free(out), free(raw), free(ref);
}

/* The same GEMM and attention on 1 and 3 threads give the same bits: each output is computed
 * by one task in a fixed order, whichever thread runs it (and small ops run on the caller). */
static void test_threads_same_bits(lunar_backend_t *be1, lunar_backend_t *be3)
{
    enum { T = 67, N = 45, K = 263 };
    float *x = malloc(sizeof(float) * T * K), *w = malloc(sizeof(float) * N * K), *bias = malloc(sizeof(float) * N);
    float *y1 = malloc(sizeof(float) * T * N), *y3 = malloc(sizeof(float) * T * N);
    for (int i = 0; i < T * K; i++) x[i] = frand();
    for (int i = 0; i < N * K; i++) w[i] = frand();
    for (int i = 0; i < N; i++) bias[i] = frand();
    lunar_tensor_t W = {"w", LUNAR_DTYPE_F32, 2, {N, K}, w, (size_t)N * K * 4};
    be1->gemm(be1, y1, x, T, &W, bias);
    be3->gemm(be3, y3, x, T, &W, bias);
    CHECK_MSG(!memcmp(y1, y3, sizeof(float) * T * N), "gemm: 1 and 3 threads give the same bits");

    enum { NQ = 8, NK = 2, HD = 64, BS = 5, S = 2, MAXB = 8 };
    const int len[S] = {23, 31};
    size_t row = (size_t)NK * HD, cache = (size_t)S * MAXB * BS * row;
    float *kc = malloc(sizeof(float) * cache), *vc = malloc(sizeof(float) * cache);
    float *q = malloc(sizeof(float) * 64 * NQ * HD), *o1 = malloc(sizeof(float) * 64 * NQ * HD);
    float *o3 = malloc(sizeof(float) * 64 * NQ * HD);
    for (size_t i = 0; i < cache; i++) kc[i] = frand(), vc[i] = frand();
    for (int i = 0; i < 64 * NQ * HD; i++) q[i] = frand();
    int32_t ids[64] = {0}, pos[64], qs[S + 1] = {0}, bt[S * MAXB];
    int64_t slots[64];
    int T2 = 0;
    for (int i = 0; i < S * MAXB; i++) bt[i] = S * MAXB - 1 - i;
    for (int s = 0; s < S; s++) { /* a whole prompt: every position attends */
        for (int p = 0; p < len[s]; p++, T2++) pos[T2] = p, slots[T2] = (int64_t)bt[s * MAXB + p / BS] * BS + p % BS;
        qs[s + 1] = T2;
    }
    lunar_batch_t b = {T2, S, ids, pos, slots, qs, len, bt, MAXB, NULL, 0};
    CHECK(be1->begin_step(be1, &b) == 0 && be3->begin_step(be3, &b) == 0);
    be1->attention(be1, o1, q, kc, vc, &b, NQ, NK, HD, BS, 0, 0.125f);
    be3->attention(be3, o3, q, kc, vc, &b, NQ, NK, HD, BS, 0, 0.125f);
    CHECK_MSG(!memcmp(o1, o3, sizeof(float) * T2 * NQ * HD), "attention: 1 and 3 threads give the same bits");
    free(x), free(w), free(bias), free(y1), free(y3), free(kc), free(vc), free(q), free(o1), free(o3);
}

static void run_all(lunar_backend_t *be)
{
    lunar_dtype_t dts[3] = {LUNAR_DTYPE_F32, LUNAR_DTYPE_F16, LUNAR_DTYPE_BF16};
    for (int d = 0; d < 3; d++) {
        test_gemm(be, dts[d], 1, 13, 35, 1);    /* decode row; N and K off the tiling */
        test_gemm(be, dts[d], 70, 19, 64, 0);   /* more tokens than one 64-token task */
        test_gemm(be, dts[d], 3, 8, MAXK, 1);   /* K = max_k */
        test_gemm(be, dts[d], 5, 1, 7, 0);      /* one output row, K under one vector */
        test_gemm(be, dts[d], 131, 17, 257, 1); /* primes everywhere, 3 token tasks */
        test_gemm(be, dts[d], 4, 2, 8, 0);      /* exactly one 4x2 tile of one vector */
        test_embed(be, dts[d]);
        test_logits(be, dts[d]);
    }
    test_norms(be, 7, 40);
    test_norms(be, 1, 3);
    test_norms(be, 67, 129);
    test_norms(be, 301, 131); /* enough work to run on every thread */
    test_rope(be, 5, 4, 2, 16, 12); /* partial rotary */
    test_rope(be, 3, 5, 1, 18, 18);
    test_rope(be, 1, 3, 3, 10, 6);
    test_silu_mul(be, 37);
    test_silu_mul(be, 1);
    test_kv_write(be);
    test_attention(be, 4, 2, 8, 4, 0);
    test_attention(be, 4, 2, 8, 4, 5);   /* sliding window */
    test_attention(be, 6, 2, 12, 5, 0);  /* GQA 3:1, odd block size */
    test_attention(be, 3, 1, 13, 3, 7);  /* MQA, odd head_dim, window */
    test_attention(be, 5, 5, 9, 16, 0);  /* MHA, contexts within few blocks */
    test_attention(be, 8, 2, 64, 4, 0);  /* enough work to run on every thread */
}

int main(void)
{
    lunar_backend_t *be = NULL;
    lunar_backend_params_t p = {2, MAXK, 160, 64, 0, 0};
    CHECK(lunar_backend_create("nope", &p, &be) == LUNAR_EUNSUPPORTED);
    lunar_backend_t *bes[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        p.num_threads = i ? 3 : 1;
        int rc = lunar_backend_create("cpu", &p, &bes[i]);
        CHECK_MSG(rc == 0, "cpu backend: %s", lunar_errmsg());
        if (rc) return CHECK_DONE();
        be = bes[i];
        CHECK_STR(be->name, "cpu");
        CHECK(be->act_dtype == LUNAR_DTYPE_F32 && be->kv_dtype == LUNAR_DTYPE_F32 && be->host_memory);
        CHECK(be->prepare(be, NULL) == 0);
        run_all(be);
        CHECK(be->end_step(be) == 0);
    }
    test_threads_same_bits(bes[0], bes[1]);
    bes[0]->free(bes[0]), bes[1]->free(bes[1]);
    return CHECK_DONE();
}
