/*
 * backend/cpu_ops.c — the CPU backend's ops (cpu_ops.h; their contract is backend.h): f32
 * math over f32/f16/bf16 weights.
 *
 * Parallel over the pool's threads; inner loops are written with GCC vector extensions so
 * they vectorise at -O2 on any x86-64 (SSE2) and, through target_clones, use AVX2+FMA where
 * the CPU has them. The clone is "arch=x86-64-v3", not "arch=haswell": GCC dispatches an
 * arch=<cpu> clone on the CPU model (__builtin_cpu_is), so AMD parts never got the AVX2 code
 * (measured: 2.5x slower GEMM on an EPYC), while an ISA level is checked by its features.
 * Each output element is computed by one thread in a fixed order, so a row's result never
 * depends on what else is in the batch: a sequence gives the same logits alone or batched,
 * bit for bit.
 */
#include "backend/cpu_ops.h"

#include <math.h>
#include <string.h>

void dtype_convert(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n);

typedef float v8f __attribute__((vector_size(32)));

/* Not under the sanitizers: the clones' IFUNC resolvers run during relocation, before
 * ThreadSanitizer (or ASan) has set up, and an instrumented resolver faults there. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

CLONES static float dot(const float *a, const float *b, int n)
{
    v8f s0 = {0}, s1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v8f a0, a1, b0, b1;
        memcpy(&a0, a + i, 32), memcpy(&a1, a + i + 8, 32);
        memcpy(&b0, b + i, 32), memcpy(&b1, b + i + 8, 32);
        s0 += a0 * b0;
        s1 += a1 * b1;
    }
    v8f s = s0 + s1;
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

CLONES static void axpy(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* ---- GEMM ----------------------------------------------------------------------------
 * A task is GEMM_NB weight rows x GEMM_TB tokens. Its rows are converted to f32 once (bf16 is
 * a 16-bit shift, done 8 at a time), then gemm_block walks the tokens in tiles of 3 tokens x 4
 * rows: 12 independent accumulators in registers, 7 vector loads per 12 multiply-adds, x and
 * the rows hot in L1/L2. The tile function is cloned for AVX2 and called once per task, not per
 * dot product. The loops of the tile carry `#pragma GCC unroll`: without it GCC -O2 kept the
 * accumulator array on the stack (a load and a store around every vector add; measured 2.2x
 * slower for the same arithmetic), and the 3x4 shape beats 4x2 by another 1.35x on this EPYC.
 *
 * Bit-identity: every output has one 8-lane accumulator over k in steps of 8, reduced by the
 * same tree (reduce8), then the k % 8 tail in order, in every tile shape (3x4, 1x4, 3x1,
 * 1x1). So y[t][n] does not depend on which tile, task or batch computed it. (-std=c11 turns
 * FP contraction off, so a multiply and an add stay two roundings in every clone.) */
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));

/* macros, not functions: passing a 32-byte vector by value changes the ABI between clones */
#define REDUCE8(s) (((s)[0] + (s)[1]) + ((s)[2] + (s)[3])) + (((s)[4] + (s)[5]) + ((s)[6] + (s)[7]))
#define LOAD8(v, p) memcpy(&(v), (p), 32)
#define TILE_T 3
#define TILE_N 4

/* MT tokens x NT rows: y[t][n] = x[t] . w[n] over K. MT, NT are constants at each call. */
static inline __attribute__((always_inline)) void micro(int MT, int NT, const float *x, size_t ldx, const float *w,
                                                        size_t ldw, int K, float *y, size_t ldy, const float *bias)
{
    v8f acc[TILE_T][TILE_N];
#pragma GCC unroll 4
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) acc[i][j] = (v8f){0};
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        v8f wv[TILE_N];
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) LOAD8(wv[j], w + j * ldw + k);
#pragma GCC unroll 4
        for (int i = 0; i < MT; i++) {
            v8f xv;
            LOAD8(xv, x + i * ldx + k);
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) acc[i][j] += xv * wv[j];
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) {
            float r = REDUCE8(acc[i][j]);
            for (int kk = k; kk < K; kk++) r += x[i * ldx + kk] * w[j * ldw + kk];
            y[i * ldy + j] = bias ? r + bias[j] : r;
        }
}

CLONES static void gemm_block(const float *x, int T, int K, const float *w, int nr, float *y, int N,
                              const float *bias)
{
    int t = 0;
    for (; t + TILE_T <= T; t += TILE_T) {
        int n = 0;
        for (; n + TILE_N <= nr; n += TILE_N)
            micro(TILE_T, TILE_N, x + (size_t)t * K, K, w + (size_t)n * K, K, K, y + (size_t)t * N + n, N,
                  bias ? bias + n : NULL);
        for (; n < nr; n++)
            micro(TILE_T, 1, x + (size_t)t * K, K, w + (size_t)n * K, K, K, y + (size_t)t * N + n, N, bias ? bias + n : NULL);
    }
    for (; t < T; t++) {
        int n = 0;
        for (; n + TILE_N <= nr; n += TILE_N)
            micro(1, TILE_N, x + (size_t)t * K, K, w + (size_t)n * K, K, K, y + (size_t)t * N + n, N, bias ? bias + n : NULL);
        for (; n < nr; n++)
            micro(1, 1, x + (size_t)t * K, K, w + (size_t)n * K, K, K, y + (size_t)t * N + n, N, bias ? bias + n : NULL);
    }
}

/* bf16 -> f32 is exact: the 16 bits become the high half. */
CLONES static void bf16_rows(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8u16 h;
        memcpy(&h, src + i, 16);
        v8u32 u = __builtin_convertvector(h, v8u32) << 16;
        memcpy(dst + i, &u, 32);
    }
    for (; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

typedef struct {
    ops_ctx_t *o;
    float *y;
    const float *x;
    int T, N, K, ntb;
    const lunar_tensor_t *W;
    const float *bias;
} gemm_job_t;

static void gemm_task(void *ctx, int task, int thread)
{
    gemm_job_t *j = ctx;
    int nb = task / j->ntb, tb = task % j->ntb;
    int n0 = nb * GEMM_NB, n1 = n0 + GEMM_NB < j->N ? n0 + GEMM_NB : j->N;
    int t0 = tb * GEMM_TB, t1 = t0 + GEMM_TB < j->T ? t0 + GEMM_TB : j->T;
    int K = j->K;
    const float *rows;
    if (j->W->dtype == LUNAR_DTYPE_F32) {
        rows = (const float *)j->W->data + (size_t)n0 * K;
    } else {
        float *buf = j->o->scratch[thread];
        size_t esz = lunar_dtype_size(j->W->dtype);
        const void *src = (const char *)j->W->data + (size_t)n0 * K * esz;
        if (j->W->dtype == LUNAR_DTYPE_BF16) bf16_rows(buf, src, (size_t)(n1 - n0) * K);
        else dtype_convert(LUNAR_DTYPE_F32, buf, j->W->dtype, src, (size_t)(n1 - n0) * K);
        rows = buf;
    }
    gemm_block(j->x + (size_t)t0 * K, t1 - t0, K, rows, n1 - n0, j->y + (size_t)t0 * j->N + n0, j->N,
               j->bias ? j->bias + n0 : NULL);
}

void op_gemm(ops_ctx_t *o, float *y, const float *x, int T, const lunar_tensor_t *W, const float *bias)
{
    gemm_job_t j = {o, y, x, T, (int)W->shape[0], (int)W->shape[1], (T + GEMM_TB - 1) / GEMM_TB, W, bias};
    int nnb = (j.N + GEMM_NB - 1) / GEMM_NB;
    pool_run(o->pool, gemm_task, &j, nnb * j.ntb, (double)T * j.N * j.K);
}

void op_logits(ops_ctx_t *o, float *out, const float *x, const int32_t *rows, int n, const lunar_tensor_t *W)
{
    int N = (int)W->shape[0], K = (int)W->shape[1];
    for (int i0 = 0; i0 < n; i0 += GEMM_TB) {
        int m = n - i0 < GEMM_TB ? n - i0 : GEMM_TB;
        for (int i = 0; i < m; i++) memcpy(o->gather + (size_t)i * K, x + (size_t)rows[i0 + i] * K, sizeof(float) * K);
        op_gemm(o, out + (size_t)i0 * N, o->gather, m, W, NULL);
    }
}

/* ---- elementwise and per-row ops ------------------------------------------------------ */
void op_embed(ops_ctx_t *o, float *x, const int32_t *ids, int T, const lunar_tensor_t *E)
{
    (void)o;
    int D = (int)E->shape[1];
    size_t esz = lunar_dtype_size(E->dtype);
    for (int t = 0; t < T; t++)
        dtype_convert(LUNAR_DTYPE_F32, x + (size_t)t * D, E->dtype, (const char *)E->data + (size_t)ids[t] * D * esz,
                      (size_t)D);
}

static void rmsnorm_row(float *out, const float *x, int dim, const float *w, float eps)
{
    double ss = 0; /* transformers accumulates in float32 through torch's mean; double is closer still */
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++) out[i] = w[i] * (x[i] * inv);
}

typedef struct {
    float *out, *resid;
    const float *x, *delta, *w;
    int dim;
    float eps;
} norm_job_t;

static void norm_task(void *ctx, int t, int thread)
{
    (void)thread;
    norm_job_t *j = ctx;
    size_t off = (size_t)t * j->dim;
    if (j->resid) {
        for (int i = 0; i < j->dim; i++) j->resid[off + i] += j->delta[off + i];
        rmsnorm_row(j->out + off, j->resid + off, j->dim, j->w, j->eps);
    } else {
        rmsnorm_row(j->out + off, j->x + off, j->dim, j->w, j->eps);
    }
}

void op_rmsnorm(ops_ctx_t *o, float *out, const float *x, int T, int dim, const float *w, float eps)
{
    norm_job_t j = {out, NULL, x, NULL, w, dim, eps};
    pool_run(o->pool, norm_task, &j, T, 2.0 * T * dim);
}

void op_add_rmsnorm(ops_ctx_t *o, float *resid, const float *delta, float *out, int T, int dim,
                    const float *w, float eps)
{
    norm_job_t j = {out, resid, NULL, delta, w, dim, eps};
    pool_run(o->pool, norm_task, &j, T, 2.0 * T * dim);
}

void op_rope(ops_ctx_t *o, float *q, float *k, int T, int nq, int nk, int hd, int rot, const float *cs)
{
    (void)o;
    int half = rot / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cs + (size_t)t * rot, *s = c + half;
        for (int h = 0; h < nq + nk; h++) {
            float *v = h < nq ? q + ((size_t)t * nq + h) * hd : k + ((size_t)t * nk + (h - nq)) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void op_silu_mul(ops_ctx_t *o, float *out, const float *gate, const float *up, long n)
{
    (void)o;
    for (long i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void op_kv_write(ops_ctx_t *o, float *kc, float *vc, const float *k, const float *v, int T, int nk,
                 int hd, const int64_t *slots)
{
    (void)o;
    size_t row = (size_t)nk * hd;
    for (int t = 0; t < T; t++) {
        if (slots[t] < 0) continue; /* a padding token: no cache slot */
        memcpy(kc + (size_t)slots[t] * row, k + (size_t)t * row, row * sizeof(float));
        memcpy(vc + (size_t)slots[t] * row, v + (size_t)t * row, row * sizeof(float));
    }
}

/* ---- attention over the paged KV cache ------------------------------------------------ */
typedef struct {
    float *out;
    const float *q, *kc, *vc;
    const lunar_batch_t *b;
    const int32_t *seq_of;
    int nq, nk, hd, bs, window;
    float scale;
    float **scratch;
} attn_job_t;

static void attn_task(void *ctx, int task, int thread)
{
    attn_job_t *j = ctx;
    int t = task / j->nq, h = task % j->nq;
    int s = j->seq_of[t];
    int pos = j->b->positions[t];
    int kvh = h / (j->nq / j->nk);
    int hd = j->hd;
    const float *q = j->q + ((size_t)t * j->nq + h) * hd;
    float *acc = j->scratch[thread];
    memset(acc, 0, sizeof(float) * hd);
    const int32_t *bt = j->b->block_tables + (size_t)s * j->b->max_blocks_per_seq;
    int lo = j->window > 0 && pos - j->window + 1 > 0 ? pos - j->window + 1 : 0;
    float m = -INFINITY, l = 0;
    size_t row = (size_t)j->nk * hd;
    for (int p = lo; p <= pos; p++) {
        size_t slot = (size_t)bt[p / j->bs] * j->bs + p % j->bs;
        const float *kp = j->kc + slot * row + (size_t)kvh * hd;
        float sc = dot(q, kp, hd) * j->scale;
        if (sc > m) {
            float corr = expf(m - sc);
            for (int i = 0; i < hd; i++) acc[i] *= corr;
            l *= corr;
            m = sc;
        }
        float w = expf(sc - m);
        l += w;
        axpy(acc, w, j->vc + slot * row + (size_t)kvh * hd, hd);
    }
    float *o = j->out + ((size_t)t * j->nq + h) * hd;
    for (int i = 0; i < hd; i++) o[i] = acc[i] / l;
}

/* multiply-adds of the step's attention: 2 per position per head dim (q.k and p.v) */
static double attn_work(const lunar_batch_t *b, int nq, int hd, int window)
{
    double ctx = 0;
    for (int t = 0; t < b->num_tokens; t++) {
        int n = b->positions[t] + 1;
        ctx += window > 0 && n > window ? window : n;
    }
    return 2.0 * ctx * nq * hd;
}

void op_attention(ops_ctx_t *o, float *out, const float *q, const float *kc, const float *vc,
                  const lunar_batch_t *b, const int32_t *seq_of, int nq, int nk, int hd,
                  int block_size, int window, float scale)
{
    attn_job_t j = {out, q, kc, vc, b, seq_of, nq, nk, hd, block_size, window, scale, o->scratch};
    pool_run(o->pool, attn_task, &j, b->num_tokens * nq, attn_work(b, nq, hd, window));
}
