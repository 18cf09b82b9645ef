/*
 * tests/gpu/ref.c — the CPU references of tests/gpu/ref.h. Straightforward loops in double,
 * rounding to the storage dtype exactly where the kernels' contract says (and HF does).
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static uint16_t f2bf(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float bf2f(uint16_t h) { return u2f((uint32_t)h << 16); }

/* _Float16 conversions round to nearest even (x86-64 gcc >= 12, clang) */
static float h2f(uint16_t h)
{
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}

static uint16_t f2h(float f)
{
    _Float16 v = (_Float16)f;
    uint16_t h;
    memcpy(&h, &v, 2);
    return h;
}

void ref_store(lunar_dtype_t dt, void *dst, size_t i, float v)
{
    if (dt == LUNAR_DTYPE_F32) ((float *)dst)[i] = v;
    else if (dt == LUNAR_DTYPE_F16) ((uint16_t *)dst)[i] = f2h(v);
    else ((uint16_t *)dst)[i] = f2bf(v);
}

float ref_load(lunar_dtype_t dt, const void *src, size_t i)
{
    if (dt == LUNAR_DTYPE_F32) return ((const float *)src)[i];
    if (dt == LUNAR_DTYPE_F16) return h2f(((const uint16_t *)src)[i]);
    return bf2f(((const uint16_t *)src)[i]);
}

float ref_round(lunar_dtype_t dt, float v)
{
    if (dt == LUNAR_DTYPE_F32) return v;
    if (dt == LUNAR_DTYPE_F16) return h2f(f2h(v));
    return bf2f(f2bf(v));
}

double ref_eps(lunar_dtype_t dt)
{
    return dt == LUNAR_DTYPE_F32 ? ldexp(1, -23) : dt == LUNAR_DTYPE_F16 ? ldexp(1, -10) : ldexp(1, -7);
}

void ref_rmsnorm(lunar_dtype_t dt, const float *x, const float *res, const float *w, int rows,
                 int hidden, float eps, float *out, float *res_out)
{
    float *r = malloc(sizeof(float) * (size_t)hidden);
    for (int t = 0; t < rows; t++) {
        double ss = 0;
        for (int i = 0; i < hidden; i++) {
            size_t k = (size_t)t * hidden + i;
            r[i] = res ? ref_round(dt, x[k] + res[k]) : x[k];
            if (res_out) res_out[k] = r[i];
            ss += (double)r[i] * r[i];
        }
        double rs = 1.0 / sqrt(ss / hidden + eps);
        for (int i = 0; i < hidden; i++)
            out[(size_t)t * hidden + i] = (float)((double)ref_round(dt, (float)(r[i] * rs)) * w[i]);
    }
    free(r);
}

void ref_rope(float *q, float *k, const int32_t *pos, const float *inv_freq, int T, int nq, int nk,
              int hd, int rot, int q_stride, int k_stride, float af)
{
    int half = rot / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nq + (k ? nk : 0); h++) {
            float *v = h < nq ? q + (size_t)t * q_stride + (size_t)h * hd
                              : k + (size_t)t * k_stride + (size_t)(h - nq) * hd;
            for (int i = 0; i < half; i++) {
                float ang = (float)pos[t] * inv_freq[i]; /* f32 product, as HF and the kernel */
                double c = cos(ang) * af, s = sin(ang) * af;
                double a = v[i], b = v[i + half];
                v[i] = (float)(a * c - b * s);
                v[i + half] = (float)(b * c + a * s);
            }
        }
}

void ref_silu_and_mul(const float *x, int T, int inter, float *out)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < inter; i++) {
            double g = x[(size_t)t * 2 * inter + i], u = x[(size_t)t * 2 * inter + inter + i];
            out[(size_t)t * inter + i] = (float)(g / (1.0 + exp(-g)) * u);
        }
}

void ref_attention(float *out, const float *q, const float *kc, const float *vc, const int32_t *qs,
                   const int32_t *seq_lens, const int32_t *bt, int mbps, int num_seqs, int nh, int nkv,
                   int hd, int bs, float scale, int window, int q_stride, int out_stride,
                   const int32_t *check_tokens, int num_check)
{
    int G = nh / nkv;
    double *sc = NULL, *acc = malloc(sizeof(double) * (size_t)hd);
    int cap = 0;
    for (int c = 0; c < num_check; c++) {
        int t = check_tokens[c], s = 0;
        while (s + 1 < num_seqs + 1 && qs[s + 1] <= t) s++;
        int qlen = qs[s + 1] - qs[s], pos = seq_lens[s] - qlen + (t - qs[s]);
        int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        if (pos + 1 > cap) {
            cap = pos + 1;
            sc = realloc(sc, sizeof(double) * (size_t)cap);
        }
        for (int h = 0; h < nh; h++) {
            int kvh = h / G;
            const float *qv = q + (size_t)t * q_stride + (size_t)h * hd;
            double mx = -INFINITY;
            for (int j = lo; j <= pos; j++) {
                size_t slot = (size_t)bt[(size_t)s * mbps + j / bs] * bs + j % bs;
                const float *kv = kc + (slot * nkv + kvh) * hd;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)qv[i] * kv[i];
                sc[j] = d * scale;
                if (sc[j] > mx) mx = sc[j];
            }
            double sum = 0;
            memset(acc, 0, sizeof(double) * (size_t)hd);
            for (int j = lo; j <= pos; j++) {
                size_t slot = (size_t)bt[(size_t)s * mbps + j / bs] * bs + j % bs;
                const float *vv = vc + (slot * nkv + kvh) * hd;
                double p = exp(sc[j] - mx);
                sum += p;
                for (int i = 0; i < hd; i++) acc[i] += p * vv[i];
            }
            for (int i = 0; i < hd; i++) out[(size_t)c * out_stride + (size_t)h * hd + i] = (float)(acc[i] / sum);
        }
    }
    free(sc);
    free(acc);
}
