/*
 * bench/kernels_bench.c — memory roofline of the bandwidth-bound kernels: paged decode
 * attention (Llama-3-8B heads: 32 query, 8 kv, head_dim 128, bf16, block 16) and the fused
 * residual RMSNorm. Each row: bytes the kernel must move (every input read once, every output
 * written once), median time over 30 runs (CUDA events), GB/s, and that as a share of a
 * device-to-device copy measured in the same run (bytes read + written). Then the one
 * compute-bound kernel, causal prefill attention (k_fa_prefill), in TFLOP/s of the causal
 * product (4 hd per query-key pair kept: QK^T and PV) beside the H100 SXM's dense bf16 peak,
 * 989 TFLOP/s (NVIDIA H100 datasheet). Not a test: no timed assertions. Usage: bench_kernels
 * [commit]
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define CK(call)                                                                           \
    do {                                                                                   \
        int rc_ = (int)(call);                                                             \
        if (rc_) {                                                                         \
            fprintf(stderr, "%s:%d: %s -> %d\n", __FILE__, __LINE__, #call, rc_);          \
            exit(2);                                                                       \
        }                                                                                  \
    } while (0)

#define REPS 30

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

typedef void (*run_fn)(void *ctx, int rep);

/* median milliseconds of fn over REPS runs after 3 warm-ups */
static float time_ms(run_fn fn, void *ctx)
{
    cudaEvent_t a, b;
    float t[REPS];
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) fn(ctx, i);
    for (int i = 0; i < REPS; i++) {
        CK(cudaEventRecord(a, 0));
        fn(ctx, i);
        CK(cudaEventRecord(b, 0));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[i], a, b));
    }
    CK(cudaGetLastError());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    qsort(t, REPS, sizeof(float), cmp_f);
    return t[REPS / 2];
}

/* random bf16 in [-1, 1) without a conversion library: sign, exponent 126 or lower, mantissa */
static void fill_bf16(void *d, size_t n)
{
    uint16_t *h = malloc(n * 2);
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = (uint16_t)(((s >> 31) << 15) | ((120 + ((s >> 20) & 6)) << 7) | ((s >> 8) & 127));
    }
    CK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
}

typedef struct { void *a, *b; size_t bytes; } copy_ctx;
static void run_copy(void *c, int rep)
{
    copy_ctx *x = c;
    (void)rep;
    CK(cudaMemcpyAsync(x->b, x->a, x->bytes, cudaMemcpyDeviceToDevice, 0));
}

typedef struct { void *out, *x, *res, *w; int rows, hidden; } norm_ctx;
static void run_norm(void *c, int rep)
{
    norm_ctx *x = c;
    (void)rep;
    CK(lunar_cuda_rmsnorm(x->out, x->x, x->res, x->w, x->rows, x->hidden, 1e-5f, LUNAR_DTYPE_BF16, NULL));
}

typedef struct {
    void *out, *q, *kc, *vc, *ws;
    int32_t *qs, *lens, *bt;
    int mbps, B, T, L, nh, nkv, hd, bs;
} attn_ctx;
static void run_attn(void *c, int rep)
{
    attn_ctx *x = c;
    (void)rep;
    CK(lunar_cuda_attention(x->out, x->q, x->kc, x->vc, x->qs, x->lens, x->bt, x->mbps, x->B, x->T, x->L, x->nh,
                            x->nkv, x->hd, x->bs, 0.0883883f, 0, x->nh * x->hd, x->nh * x->hd, x->ws,
                            LUNAR_DTYPE_BF16, NULL));
}

int main(int argc, char **argv)
{
    struct cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("kernels_bench: memory-bound kernels vs device copy bandwidth | %s | commit %s\n", p.name,
           argc > 1 ? argv[1] : "?");
    /* the ceiling: a 2 GiB device-to-device copy */
    copy_ctx cc = {NULL, NULL, (size_t)1 << 31};
    CK(cudaMalloc(&cc.a, cc.bytes));
    CK(cudaMalloc(&cc.b, cc.bytes));
    CK(cudaMemset(cc.a, 1, cc.bytes));
    float ms = time_ms(run_copy, &cc);
    double copy_bw = 2.0 * cc.bytes / (ms * 1e-3) / 1e9;
    printf("%-44s %10s %12s %9s %8s\n", "case", "MB moved", "median us", "GB/s", "% copy");
    printf("%-44s %10.1f %12.1f %9.0f %8s\n", "device-to-device copy 2 GiB (read+write)", 2.0 * cc.bytes / 1e6,
           ms * 1e3, copy_bw, "100");
    cudaFree(cc.a);
    cudaFree(cc.b);

    int norms[][2] = {{1, 4096}, {256, 4096}, {4096, 4096}, {8192, 8192}};
    for (int i = 0; i < 4; i++) {
        norm_ctx nc = {NULL, NULL, NULL, NULL, norms[i][0], norms[i][1]};
        size_t n = (size_t)nc.rows * nc.hidden;
        CK(cudaMalloc(&nc.out, n * 2));
        CK(cudaMalloc(&nc.x, n * 2));
        CK(cudaMalloc(&nc.res, n * 2));
        CK(cudaMalloc(&nc.w, (size_t)nc.hidden * 2));
        fill_bf16(nc.x, n);
        fill_bf16(nc.res, n);
        fill_bf16(nc.w, nc.hidden);
        ms = time_ms(run_norm, &nc);
        double bytes = 4.0 * n * 2 + nc.hidden * 2; /* x, residual in; residual, out written */
        char name[64];
        snprintf(name, sizeof name, "rmsnorm+residual bf16 %dx%d", nc.rows, nc.hidden);
        double bw = bytes / (ms * 1e-3) / 1e9;
        printf("%-44s %10.1f %12.1f %9.0f %8.1f\n", name, bytes / 1e6, ms * 1e3, bw, 100 * bw / copy_bw);
        cudaFree(nc.out); cudaFree(nc.x); cudaFree(nc.res); cudaFree(nc.w);
    }

    /* B sequences of context L; prefill cases (P) take the whole context as queries */
    int cases[][5] = {{1, 8192, 8, 128, 0},  {8, 4096, 8, 128, 0}, {64, 2048, 8, 128, 0}, {256, 1024, 8, 128, 0},
                      {32, 8192, 8, 128, 0}, {64, 2048, 32, 128, 0}, {1, 512, 8, 128, 1}, {1, 4096, 8, 128, 1},
                      {1, 8192, 8, 128, 1},  {1, 4096, 8, 64, 1},  {1, 4096, 16, 80, 1}, {4, 1000, 8, 128, 1}};
    for (int i = 0; i < 12; i++) {
        attn_ctx a;
        memset(&a, 0, sizeof a);
        int prefill = cases[i][4];
        a.B = cases[i][0];
        a.L = cases[i][1];
        a.nkv = cases[i][2];
        a.nh = 32;
        a.hd = cases[i][3];
        a.bs = 16;
        a.T = prefill ? a.B * a.L : a.B;
        a.mbps = (a.L + a.bs - 1) / a.bs;
        size_t blocks = (size_t)a.B * a.mbps, cn = blocks * a.bs * a.nkv * a.hd;
        CK(cudaMalloc(&a.kc, cn * 2));
        CK(cudaMalloc(&a.vc, cn * 2));
        CK(cudaMalloc(&a.q, (size_t)a.T * a.nh * a.hd * 2));
        CK(cudaMalloc(&a.out, (size_t)a.T * a.nh * a.hd * 2));
        fill_bf16(a.kc, cn);
        fill_bf16(a.vc, cn);
        fill_bf16(a.q, (size_t)a.T * a.nh * a.hd);
        int32_t *qs = malloc(sizeof(int32_t) * (a.B + 1)), *lens = malloc(sizeof(int32_t) * a.B);
        int32_t *bt = malloc(sizeof(int32_t) * blocks);
        for (int s = 0; s <= a.B; s++) qs[s] = prefill ? s * a.L : s;
        for (int s = 0; s < a.B; s++) lens[s] = a.L;
        /* blocks in a scattered order, as a long-running cache holds them */
        for (size_t j = 0; j < blocks; j++) bt[j] = (int32_t)((j * 7919) % blocks);
        CK(cudaMalloc((void **)&a.qs, sizeof(int32_t) * (a.B + 1)));
        CK(cudaMalloc((void **)&a.lens, sizeof(int32_t) * a.B));
        CK(cudaMalloc((void **)&a.bt, sizeof(int32_t) * blocks));
        CK(cudaMemcpy(a.qs, qs, sizeof(int32_t) * (a.B + 1), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(a.lens, lens, sizeof(int32_t) * a.B, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(a.bt, bt, sizeof(int32_t) * blocks, cudaMemcpyHostToDevice));
        size_t ws = lunar_cuda_attention_workspace_size(a.T, a.B, a.nh, a.nkv, a.hd, a.L);
        CK(cudaMalloc(&a.ws, ws));
        ms = time_ms(run_attn, &a);
        char name[64];
        if (prefill) {
            double flop = 4.0 * a.B * a.nh * a.hd * ((double)a.L * (a.L + 1) / 2);
            double tf = flop / (ms * 1e-3) / 1e12;
            if (!cases[i - 1][4]) /* the first prefill case: its header */
                printf("%-44s %10s %12s %9s %8s\n", "causal prefill attention", "GFLOP", "median us", "TFLOP/s",
                       "% peak");
            snprintf(name, sizeof name, "prefill attn bf16 %dx%d h32/%d d%d", a.B, a.L, a.nkv, a.hd);
            printf("%-44s %10.1f %12.1f %9.1f %8.1f\n", name, flop / 1e9, ms * 1e3, tf, 100 * tf / 989.0);
        } else {
            double bytes = 2.0 * cn * 2 + 2.0 * a.B * a.nh * a.hd * 2 + 4.0 * blocks;
            double bw = bytes / (ms * 1e-3) / 1e9;
            snprintf(name, sizeof name, "decode attn bf16 B%d ctx%d h32/%d d128", a.B, a.L, a.nkv);
            printf("%-44s %10.1f %12.1f %9.0f %8.1f\n", name, bytes / 1e6, ms * 1e3, bw, 100 * bw / copy_bw);
        }
        cudaFree(a.kc); cudaFree(a.vc); cudaFree(a.q); cudaFree(a.out); cudaFree(a.ws);
        cudaFree(a.qs); cudaFree(a.lens); cudaFree(a.bt);
        free(qs); free(lens); free(bt);
    }
    return 0;
}
