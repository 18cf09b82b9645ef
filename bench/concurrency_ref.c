/*
 * bench/concurrency_ref.c — the concurrency benchmark of the engine with a stand-in CPU
 * forward: a plain f32 Llama (RMSNorm, RoPE, paged attention through the batch's block
 * tables, SwiGLU MLP, tied lm_head) with random weights of a ~110M shape
 * (bench/models/llama-100m: hidden 768, 12 layers, 12 heads, MLP 2048, vocab 32000).
 *
 * Why a stand-in: the engine's claim is that one step computes every running sequence with
 * one pass over the weights, so aggregate throughput grows with concurrency. That needs a
 * forward whose matrix products run over the whole flat batch, which this one does (each
 * weight row is read once per step and applied to all T tokens). It is not the CPU backend
 * of runtime/ (helper cpu's runner); bench/concurrency.lua runs that one once it exists.
 *
 *   bench/concurrency_ref.sh [levels] [seconds]      (builds with -O3 -fopenmp and runs)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar.h"

enum { HID = 768, LAYERS = 12, HEADS = 12, KVH = 12, HD = 64, INTER = 2048, VOCAB = 32000 };
enum { MAXT = 2048, BS = 16 };

typedef struct {
    float *wq, *wk, *wv, *wo, *wg, *wu, *wd, *an, *fn;
} layer_t;

typedef struct {
    float *embed, *final_norm;
    layer_t l[LAYERS];
    float *kc, *vc; /* [LAYERS][slots][KVH*HD] */
    int64_t slots;
    float *x, *h, *q, *k, *v, *att, *g, *u, *rows;
} model_t;

static uint64_t rng = 88172645463325252ull;
static float *rand_mat(size_t n, float scale)
{
    float *m = malloc(n * sizeof *m);
    for (size_t i = 0; i < n; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        m[i] = ((float)(rng >> 40) / 16777216.0f * 2 - 1) * scale;
    }
    return m;
}

static float *ones(size_t n)
{
    float *m = malloc(n * sizeof *m);
    for (size_t i = 0; i < n; i++) m[i] = 1;
    return m;
}

/* out[t][n] = sum_k x[t][k] w[n][k] (+= when acc). The whole step's tokens go through each
 * weight row while it is in cache: tiles of 4 weight rows x 4 tokens keep 16 sums in
 * registers (8 loads per 16 multiply-adds), so more tokens per step cost little more time
 * until the arithmetic runs out. */
static inline float dot(const float *a, const float *b, int K)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int k = 0; k < K; k++) s += a[k] * b[k];
    return s;
}

static void matmul(float *out, const float *x, const float *w, int T, int N, int K, int acc)
{
#pragma omp parallel for schedule(static)
    for (int n0 = 0; n0 < N; n0 += 4) {
        int nn = N - n0 < 4 ? N - n0 : 4;
        for (int t0 = 0; t0 < T; t0 += 4) {
            int nt = T - t0 < 4 ? T - t0 : 4;
            float s[4][4];
            if (nn == 4 && nt == 4) {
                const float *w0 = w + (size_t)n0 * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
                const float *x0 = x + (size_t)t0 * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
                float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
                float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)
                for (int k = 0; k < K; k++) {
                    float v0 = x0[k], v1 = x1[k], v2 = x2[k], v3 = x3[k];
                    a00 += v0 * w0[k], a01 += v0 * w1[k], a02 += v0 * w2[k], a03 += v0 * w3[k];
                    a10 += v1 * w0[k], a11 += v1 * w1[k], a12 += v1 * w2[k], a13 += v1 * w3[k];
                    a20 += v2 * w0[k], a21 += v2 * w1[k], a22 += v2 * w2[k], a23 += v2 * w3[k];
                    a30 += v3 * w0[k], a31 += v3 * w1[k], a32 += v3 * w2[k], a33 += v3 * w3[k];
                }
                s[0][0] = a00, s[0][1] = a01, s[0][2] = a02, s[0][3] = a03;
                s[1][0] = a10, s[1][1] = a11, s[1][2] = a12, s[1][3] = a13;
                s[2][0] = a20, s[2][1] = a21, s[2][2] = a22, s[2][3] = a23;
                s[3][0] = a30, s[3][1] = a31, s[3][2] = a32, s[3][3] = a33;
            } else {
                for (int j = 0; j < nt; j++)
                    for (int i = 0; i < nn; i++)
                        s[j][i] = dot(x + (size_t)(t0 + j) * K, w + (size_t)(n0 + i) * K, K);
            }
            for (int j = 0; j < nt; j++)
                for (int i = 0; i < nn; i++) {
                    float *o = out + (size_t)(t0 + j) * N + n0 + i;
                    *o = acc ? *o + s[j][i] : s[j][i];
                }
        }
    }
}

static void rmsnorm(float *out, const float *x, const float *w, int T)
{
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * HID;
        float ss = 0;
        for (int i = 0; i < HID; i++) ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss / HID + 1e-5f);
        for (int i = 0; i < HID; i++) out[(size_t)t * HID + i] = xr[i] * r * w[i];
    }
}

static void rope(float *v, int heads, int pos)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < HD / 2; i++) {
            float f = (float)pos * powf(10000.0f, -2.0f * i / HD), c = cosf(f), s = sinf(f);
            float *p = v + h * HD;
            float a = p[i], b = p[i + HD / 2];
            p[i] = a * c - b * s;
            p[i + HD / 2] = a * s + b * c;
        }
}

static int forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    model_t *m = ctx;
    int T = b->num_tokens;
    for (int t = 0; t < T; t++) memcpy(m->x + (size_t)t * HID, m->embed + (size_t)b->token_ids[t] * HID, HID * sizeof(float));
    for (int L = 0; L < LAYERS; L++) {
        layer_t *l = &m->l[L];
        float *kc = m->kc + (size_t)L * m->slots * KVH * HD, *vc = m->vc + (size_t)L * m->slots * KVH * HD;
        rmsnorm(m->h, m->x, l->an, T);
        matmul(m->q, m->h, l->wq, T, HEADS * HD, HID, 0);
        matmul(m->k, m->h, l->wk, T, KVH * HD, HID, 0);
        matmul(m->v, m->h, l->wv, T, KVH * HD, HID, 0);
        for (int t = 0; t < T; t++) {
            rope(m->q + (size_t)t * HEADS * HD, HEADS, b->positions[t]);
            rope(m->k + (size_t)t * KVH * HD, KVH, b->positions[t]);
            memcpy(kc + b->slot_mapping[t] * KVH * HD, m->k + (size_t)t * KVH * HD, KVH * HD * sizeof(float));
            memcpy(vc + b->slot_mapping[t] * KVH * HD, m->v + (size_t)t * KVH * HD, KVH * HD * sizeof(float));
        }
#pragma omp parallel for schedule(dynamic)
        for (int th = 0; th < T * HEADS; th++) {
            int t = th / HEADS, h = th % HEADS, s = 0;
            while (b->query_start[s + 1] <= t) s++;
            const int32_t *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
            int pos = b->positions[t], kvh = h / (HEADS / KVH);
            const float *q = m->q + (size_t)t * HEADS * HD + h * HD;
            float scores[2048], mx = -INFINITY, sum = 0;
            for (int j = 0; j <= pos; j++) {
                const float *kr = kc + ((int64_t)bt[j / BS] * BS + j % BS) * KVH * HD + kvh * HD;
                float d = 0;
                for (int i = 0; i < HD; i++) d += q[i] * kr[i];
                scores[j] = d / 8.0f; /* sqrt(64) */
                if (scores[j] > mx) mx = scores[j];
            }
            float *o = m->att + (size_t)t * HEADS * HD + h * HD;
            for (int i = 0; i < HD; i++) o[i] = 0;
            for (int j = 0; j <= pos; j++) {
                float p = expf(scores[j] - mx);
                sum += p;
                const float *vr = vc + ((int64_t)bt[j / BS] * BS + j % BS) * KVH * HD + kvh * HD;
                for (int i = 0; i < HD; i++) o[i] += p * vr[i];
            }
            for (int i = 0; i < HD; i++) o[i] /= sum;
        }
        matmul(m->x, m->att, l->wo, T, HID, HEADS * HD, 1);
        rmsnorm(m->h, m->x, l->fn, T);
        matmul(m->g, m->h, l->wg, T, INTER, HID, 0);
        matmul(m->u, m->h, l->wu, T, INTER, HID, 0);
        for (size_t i = 0; i < (size_t)T * INTER; i++) m->g[i] = m->g[i] / (1 + expf(-m->g[i])) * m->u[i];
        matmul(m->x, m->g, l->wd, T, HID, INTER, 1);
    }
    for (int r = 0; r < b->num_logits; r++)
        memcpy(m->rows + (size_t)r * HID, m->x + (size_t)b->logits_indices[r] * HID, HID * sizeof(float));
    rmsnorm(m->h, m->rows, m->final_norm, b->num_logits);
    matmul(logits, m->h, m->embed, b->num_logits, VOCAB, HID, 0); /* tied lm_head */
    return 0;
}

static void model_init(model_t *m, int num_blocks)
{
    m->embed = rand_mat((size_t)VOCAB * HID, 0.05f);
    m->final_norm = ones(HID);
    for (int L = 0; L < LAYERS; L++) {
        layer_t *l = &m->l[L];
        l->wq = rand_mat((size_t)HEADS * HD * HID, 0.04f);
        l->wk = rand_mat((size_t)KVH * HD * HID, 0.04f);
        l->wv = rand_mat((size_t)KVH * HD * HID, 0.04f);
        l->wo = rand_mat((size_t)HID * HEADS * HD, 0.02f);
        l->wg = rand_mat((size_t)INTER * HID, 0.04f);
        l->wu = rand_mat((size_t)INTER * HID, 0.04f);
        l->wd = rand_mat((size_t)HID * INTER, 0.02f);
        l->an = ones(HID);
        l->fn = ones(HID);
    }
    m->slots = (int64_t)num_blocks * BS;
    m->kc = calloc((size_t)LAYERS * m->slots * KVH * HD, sizeof(float));
    m->vc = calloc((size_t)LAYERS * m->slots * KVH * HD, sizeof(float));
    m->x = malloc((size_t)MAXT * HID * sizeof(float));
    m->h = malloc((size_t)MAXT * HID * sizeof(float));
    m->q = malloc((size_t)MAXT * HEADS * HD * sizeof(float));
    m->k = malloc((size_t)MAXT * KVH * HD * sizeof(float));
    m->v = malloc((size_t)MAXT * KVH * HD * sizeof(float));
    m->att = malloc((size_t)MAXT * HEADS * HD * sizeof(float));
    m->g = malloc((size_t)MAXT * INTER * sizeof(float));
    m->u = malloc((size_t)MAXT * INTER * sizeof(float));
    m->rows = malloc((size_t)MAXT * HID * sizeof(float));
}

static void model_free(model_t *m)
{
    free(m->embed);
    free(m->final_norm);
    for (int L = 0; L < LAYERS; L++) {
        layer_t *l = &m->l[L];
        free(l->wq), free(l->wk), free(l->wv), free(l->wo), free(l->wg), free(l->wu), free(l->wd);
        free(l->an), free(l->fn);
    }
    free(m->kc), free(m->vc), free(m->x), free(m->h), free(m->q), free(m->k), free(m->v);
    free(m->att), free(m->g), free(m->u), free(m->rows);
}

int main(int argc, char **argv)
{
    const char *levels = argc > 1 ? argv[1] : "1,2,4,8,16,32,64";
    double seconds = argc > 2 ? atof(argv[2]) : 20;
    const char *commit = argc > 3 ? argv[3] : "?";
    int prompt = 64, gen = 64, maxc = 0, lv[16], nl = 0;
    for (const char *p = levels; *p && nl < 16;) {
        lv[nl] = atoi(p);
        if (lv[nl] > maxc) maxc = lv[nl];
        nl++;
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
    }
    int num_blocks = maxc * ((prompt + gen + BS - 1) / BS) + 16;
    static model_t m;
    model_init(&m, num_blocks);
    lunar_log_set_level(LUNAR_LOG_WARN);
    printf("# bench/concurrency_ref: stand-in f32 Llama forward (bench/concurrency_ref.c), ~110M params "
           "(hidden %d, %d layers, MLP %d, vocab %d), random weights; prompt %d, gen %d, greedy, "
           "closed loop; %s; commit %s\n", HID, LAYERS, INTER, VOCAB, prompt, gen,
           getenv("BENCH_MACHINE") ? getenv("BENCH_MACHINE") : "", commit);
    printf("%-11s %9s %11s %9s %14s %12s %9s\n", "concurrency", "finished", "gen tokens", "seconds",
           "aggregate t/s", "per-req t/s", "tok/step");
    for (int li = 0; li < nl; li++) {
        int c = lv[li];
        lunar_engine_config_t cfg;
        lunar_engine_config_default(&cfg);
        cfg.block_size = BS;
        cfg.num_blocks = num_blocks;
        cfg.max_model_len = prompt + gen;
        cfg.max_num_seqs = maxc;
        cfg.max_num_batched_tokens = MAXT;
        cfg.enable_prefix_caching = 0; /* distinct users: every prompt computed */
        cfg.stats_interval_s = 0;
        lunar_forward_iface_t f = {&m, VOCAB, forward};
        lunar_engine_t *e;
        if (lunar_engine_create(&cfg, &f, NULL, &e)) {
            fprintf(stderr, "%s\n", lunar_errmsg());
            return 1;
        }
        lunar_sampling_params_t p;
        lunar_sampling_params_default(&p);
        p.temperature = 0;
        p.max_tokens = gen;
        p.ignore_eos = 1;
        int32_t ids[64];
        int seq = 0;
        for (int i = 0; i < c; i++, seq++) {
            for (int k = 0; k < prompt; k++) ids[k] = 3 + (seq * 131 + k * 7919) % (VOCAB - 3);
            lunar_request_t rq = {ids, prompt, &p, 0, NULL};
            lunar_engine_submit(e, &rq, NULL);
        }
        double t0 = 0;
        long gen_tokens = 0, finished = 0, tokens = 0;
        lunar_engine_stats_t s0, s1;
        for (;;) {
            lunar_engine_step(e);
            const lunar_event_t *ev;
            int n = lunar_engine_poll(e, &ev);
            for (int i = 0; i < n; i++) {
                tokens += ev[i].num_tokens;
                if (t0) gen_tokens += ev[i].num_tokens;
                if (ev[i].finish_reason) {
                    if (t0) finished++;
                    for (int k = 0; k < prompt; k++) ids[k] = 3 + (seq * 131 + k * 7919) % (VOCAB - 3);
                    seq++;
                    lunar_request_t rq = {ids, prompt, &p, 0, NULL};
                    lunar_engine_submit(e, &rq, NULL);
                }
            }
            if (!t0 && tokens >= c) { /* warm: every first request has its first token */
                t0 = lunar_engine_now();
                lunar_engine_get_stats(e, &s0);
            }
            if (t0 && lunar_engine_now() - t0 >= seconds && finished >= c) break;
        }
        double dt = lunar_engine_now() - t0;
        lunar_engine_get_stats(e, &s1);
        double steps = (double)(s1.num_steps - s0.num_steps);
        printf("%-11d %9ld %11ld %9.2f %14.1f %12.2f %9.1f\n", c, finished, gen_tokens, dt,
               gen_tokens / dt, gen_tokens / dt / c,
               (double)(s1.forward_tokens_total - s0.forward_tokens_total) / (steps > 0 ? steps : 1));
        fflush(stdout);
        lunar_engine_free(e);
    }
    model_free(&m);
    return 0;
}
