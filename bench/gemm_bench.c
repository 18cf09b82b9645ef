/*
 * bench/gemm_bench.c — the decode and prefill GEMMs of a Llama-3-8B-shaped model on this GPU:
 * cublasGemmEx with CUBLAS_GEMM_DEFAULT (what the CUDA backend calls) beside cuBLASLt's own
 * heuristic's first pick and the fastest of its first 16 candidates, timed here. Each row: the
 * weight shape N x K, the token count T, median microseconds over 30 runs (CUDA events), and
 * weight bytes / time (the bound at small T) or TFLOP/s (at large T), beside the device copy
 * bandwidth measured in the same run. bf16 in, f32 accumulation; bf16 out, or f32 for the
 * vocabulary projection as the backend's logits. Layout as the backend's gemm_w: y[T][N] =
 * x[T][K] . W[N][K]^T, i.e. column-major y^T = op_T(W) . x^T. At one token, the backend's own
 * weight-streaming kernel (lunar_cuda_be_gemv) too. Not a test. Usage: bench_gemm [commit]
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend_ops.h"

#define CK(call)                                                                           \
    do {                                                                                   \
        long rc_ = (long)(call);                                                           \
        if (rc_) {                                                                         \
            fprintf(stderr, "%s:%d: %s -> %ld\n", __FILE__, __LINE__, #call, rc_);         \
            exit(2);                                                                       \
        }                                                                                  \
    } while (0)

#define REPS 30
#define WS_BYTES (32u << 20) /* the backend's cuBLAS workspace */
#define CANDIDATES 16

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

typedef struct {
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *ws;
    const void *w, *x;
    void *y;
    int N, K, T, f32_out;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_t;

static void run_ex(gemm_t *g)
{
    float one = 1.0f, zero = 0.0f;
    CK(cublasGemmEx(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, g->N, g->T, g->K, &one, g->w, CUDA_R_16BF, g->K, g->x,
                    CUDA_R_16BF, g->K, &zero, g->y, g->f32_out ? CUDA_R_32F : CUDA_R_16BF, g->N, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
}

static void run_lt(gemm_t *g)
{
    float one = 1.0f, zero = 0.0f;
    CK(cublasLtMatmul(g->lt, g->op, &one, g->w, g->la, g->x, g->lb, &zero, g->y, g->lc, g->y, g->lc, &g->algo, g->ws,
                      WS_BYTES, 0));
}

static void run_gemv(gemm_t *g)
{
    CK(lunar_cuda_be_gemv(g->y, g->f32_out, g->x, g->w, g->N, g->K, LUNAR_DTYPE_BF16, NULL));
}

static float time_us(void (*fn)(gemm_t *), gemm_t *g)
{
    cudaEvent_t a, b;
    float t[REPS];
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) fn(g);
    for (int i = 0; i < REPS; i++) {
        CK(cudaEventRecord(a, 0));
        fn(g);
        CK(cudaEventRecord(b, 0));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[i], a, b));
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    qsort(t, REPS, sizeof(float), cmp_f);
    return t[REPS / 2] * 1000.0f;
}

int main(int argc, char **argv)
{
    struct cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    gemm_t g;
    memset(&g, 0, sizeof g);
    CK(cublasCreate(&g.blas));
    CK(cublasLtCreate(&g.lt));
    CK(cudaMalloc(&g.ws, WS_BYTES));
    CK(cublasSetWorkspace(g.blas, g.ws, WS_BYTES));
    /* buffers for the largest shape: W up to 128256 x 4096, x and y up to 4096 tokens */
    size_t wmax = (size_t)128256 * 4096, xmax = (size_t)4096 * 14336, ymax = (size_t)4096 * 28672;
    void *w, *x, *y, *copy;
    CK(cudaMalloc(&w, wmax * 2));
    CK(cudaMalloc(&x, xmax * 2));
    CK(cudaMalloc(&y, ymax * 4));
    CK(cudaMalloc(&copy, wmax * 2));
    CK(cudaMemset(w, 0x3c, wmax * 2)); /* bf16 ~0.01: finite products */
    CK(cudaMemset(x, 0x3c, xmax * 2));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float cms = 0;
    CK(cudaMemcpy(copy, w, wmax * 2, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0, 0));
    CK(cudaMemcpy(copy, w, wmax * 2, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&cms, e0, e1));
    double copy_gbs = 2.0 * wmax * 2 / (cms * 1e-3) / 1e9;
    printf("# bench_gemm: cublasGemmEx default vs cuBLASLt (heuristic first, best of %d timed) | %s | device copy %.0f "
           "GB/s | commit %s\n", CANDIDATES, p.name, copy_gbs, argc > 1 ? argv[1] : "?");
    printf("%-22s %5s %10s %10s %10s %9s %9s %7s %s\n", "weight N x K", "T", "ex us", "lt1 us", "ltbest us", "ex GB/s",
           "best GB/s", "ex/best", "(TFLOP/s ex -> best) [gemv us, GB/s]");
    static const struct { const char *name; int N, K, f32; } shp[] = {
        {"q/k/v 6144x4096", 6144, 4096, 0},       {"gate/up 28672x4096", 28672, 4096, 0},
        {"o 4096x4096", 4096, 4096, 0},           {"down 4096x14336", 4096, 14336, 0},
        {"lm_head 128256x4096", 128256, 4096, 1},
    };
    static const int Ts[] = {1, 2, 8, 16, 32, 64, 128, 256, 512, 4096};
    g.w = w, g.x = x, g.y = y;
    for (size_t si = 0; si < sizeof shp / sizeof *shp; si++)
        for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
            g.N = shp[si].N, g.K = shp[si].K, g.T = Ts[ti], g.f32_out = shp[si].f32;
            if (g.f32_out && g.T > 256) continue; /* logits rows are at most max_num_seqs */
            float ex = time_us(run_ex, &g);
            cudaDataType_t yt = g.f32_out ? CUDA_R_32F : CUDA_R_16BF;
            CK(cublasLtMatmulDescCreate(&g.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t tr = CUBLAS_OP_T;
            CK(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof tr));
            CK(cublasLtMatrixLayoutCreate(&g.la, CUDA_R_16BF, g.K, g.N, g.K));
            CK(cublasLtMatrixLayoutCreate(&g.lb, CUDA_R_16BF, g.K, g.T, g.K));
            CK(cublasLtMatrixLayoutCreate(&g.lc, yt, g.N, g.T, g.N));
            cublasLtMatmulPreference_t pref;
            CK(cublasLtMatmulPreferenceCreate(&pref));
            size_t wsb = WS_BYTES;
            CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
            cublasLtMatmulHeuristicResult_t res[CANDIDATES];
            int nres = 0;
            CK(cublasLtMatmulAlgoGetHeuristic(g.lt, g.op, g.la, g.lb, g.lc, g.lc, pref, CANDIDATES, res, &nres));
            float lt1 = -1, best = 1e30f;
            for (int i = 0; i < nres; i++) {
                if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
                g.algo = res[i].algo;
                float us = time_us(run_lt, &g);
                if (i == 0) lt1 = us;
                if (us < best) best = us;
            }
            double wbytes = (double)g.N * g.K * 2, flop = 2.0 * g.N * g.K * g.T;
            char row[64];
            snprintf(row, sizeof row, "%s", shp[si].name);
            printf("%-22s %5d %10.1f %10.1f %10.1f %9.0f %9.0f %7.2f (%.0f -> %.0f)", row, g.T, ex, lt1, best,
                   wbytes / (ex * 1e-6) / 1e9, wbytes / (best * 1e-6) / 1e9, ex / best, flop / (ex * 1e-6) / 1e12,
                   flop / (best * 1e-6) / 1e12);
            if (g.T == 1) {
                float gv = time_us(run_gemv, &g);
                printf(" [%.1f, %.0f]", gv, wbytes / (gv * 1e-6) / 1e9);
            }
            printf("\n");
            fflush(stdout);
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(g.la);
            cublasLtMatrixLayoutDestroy(g.lb);
            cublasLtMatrixLayoutDestroy(g.lc);
            cublasLtMatmulDescDestroy(g.op);
        }
    cudaFree(w), cudaFree(x), cudaFree(y), cudaFree(copy), cudaFree(g.ws);
    cublasLtDestroy(g.lt);
    cublasDestroy(g.blas);
    return 0;
}
