/*
 * kernels/cuda_backend_ops.cu — the CUDA backend's ops other than attention (kernels/attention.cu)
 * and cuBLAS's GEMMs (see cuda_backend_ops.h).
 *
 * Correct first, tuned later: each kernel is the plainest mapping of the CPU op
 * (backend/cpu_ops.c) onto a grid, computing in f32 whatever the storage dtype, so that the
 * f32 mode agrees with the CPU backend to rounding. The attention kernel here is the fallback
 * for head_dim not a multiple of 8: one block per (token, query head) with an online softmax
 * over tiles of 128 keys read through the block table, a direct transcription of the CPU's
 * loop; the backend's attention is kernels/attention.cu (flash-decoding, tensor-core prefill).
 * Tuned where a decode step or prefill showed them: RMSNorm (k_be_rmsnorm_v), the 8-wide
 * silu_mul, split and RoPE, and the one-token GEMM (k_be_gemv). GEMMs of 2+ tokens are cuBLAS's.
 * An earlier GEMV of ours for up to 8 tokens, timed faster than cuBLAS one matrix at a time, made
 * the CUDA-graph decode step slower (b1 7.82 vs 6.98 ms) and was removed; k_be_gemv (one token
 * only, more loads in flight) made it faster (6.60 -> 6.43 ms). Both on an H100,
 * bench/results/cuda_bench_h100.txt and the commit messages.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "common.cuh"
#include "cuda_backend_ops.h"

namespace {

__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* Block-wide sum or max of one value per thread (blockDim.x a multiple of 32, <= 1024). */
template <bool MAX>
__device__ float block_reduce(float v)
{
    __shared__ float part[32];
    __shared__ float result;
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, u) : v + u;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? part[lane] : (MAX ? -INFINITY : 0.0f);
        for (int o = 16; o > 0; o >>= 1) {
            float u = __shfl_xor_sync(0xffffffffu, v, o);
            v = MAX ? fmaxf(v, u) : v + u;
        }
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}

template <typename T>
__global__ void k_be_embed(T *x, const T *E, const int32_t *ids, int dim)
{
    int t = blockIdx.x;
    const T *row = E + (size_t)ids[t] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) x[(size_t)t * dim + i] = row[i];
}

template <typename T>
__global__ void k_be_rmsnorm(T *out, const T *x, T *resid, const float *w, int dim, float eps)
{
    size_t r = blockIdx.x;
    const T *xr = x + r * dim;
    T *orow = out + r * dim;
    float ss = 0;
    if (resid) {
        T *rr = resid + r * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            st(&rr[i], ld(&rr[i]) + ld(&xr[i]));
            float v = ld(&rr[i]);
            ss += v * v;
        }
        xr = rr;
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = ld(&xr[i]);
            ss += v * v;
        }
    }
    ss = block_reduce<false>(ss);
    float inv = (float)(1.0 / sqrt((double)ss / dim + eps));
    for (int i = threadIdx.x; i < dim; i += blockDim.x) st(&orow[i], w[i] * (ld(&xr[i]) * inv));
}

/* one thread per (token, head, pair i < rot/2); heads 0..nq-1 are q, nq.. are k */
template <typename T>
__global__ void k_be_rope(T *q, T *k, const float *cs, int T_, int nq, int nk, int hd, int rot)
{
    int half = rot / 2;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x, total = (long)T_ * (nq + nk) * half;
    if (idx >= total) return;
    int i = (int)(idx % half);
    long th = idx / half;
    int h = (int)(th % (nq + nk));
    int t = (int)(th / (nq + nk));
    T *v = h < nq ? q + ((size_t)t * nq + h) * hd : k + ((size_t)t * nk + (h - nq)) * hd;
    float c = cs[(size_t)t * rot + i], s = cs[(size_t)t * rot + half + i];
    float a = ld(&v[i]), b = ld(&v[i + half]);
    st(&v[i], a * c - b * s);
    st(&v[i + half], b * c + a * s);
}

template <typename T>
__global__ void k_be_silu_mul(T *out, const T *gate, const T *up, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float g = ld(&gate[i]);
        st(&out[i], g / (1.0f + expf(-g)) * ld(&up[i]));
    }
}

template <typename T>
__global__ void k_be_add_bias(T *y, const float *bias, long total, int N)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x)
        st(&y[i], ld(&y[i]) + bias[i % N]);
}

template <typename T, typename KV>
__global__ void k_be_kv_write(KV *kc, KV *vc, const T *k, const T *v, const int64_t *slot, int row)
{
    int t = blockIdx.x;
    int64_t s = slot[t];
    if (s < 0) return;
    for (int i = threadIdx.x; i < row; i += blockDim.x) {
        st(&kc[s * row + i], ld(&k[(size_t)t * row + i]));
        st(&vc[s * row + i], ld(&v[(size_t)t * row + i]));
    }
}

#define ATT_TILE 128 /* keys per tile = threads per block */

template <typename T, typename KV>
__global__ void __launch_bounds__(ATT_TILE) k_be_attention(T *out, const T *q, const KV *kc, const KV *vc,
    const int32_t *seq_of, const int32_t *positions, const int32_t *block_tables, int max_blocks, int nq, int nk,
    int hd, int bs, int window, float scale)
{
    extern __shared__ float sh[];
    float *qs = sh, *ps = sh + hd; /* q of this head [hd]; a tile's weights [ATT_TILE] */
    int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    int kvh = h / (nq / nk), p = positions[t];
    const int32_t *tab = block_tables + (size_t)seq_of[t] * max_blocks;
    size_t row = (size_t)nk * hd;
    for (int d = tid; d < hd; d += ATT_TILE) qs[d] = ld(&q[((size_t)t * nq + h) * hd + d]);
    __syncthreads();
    int j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    float m = -INFINITY, l = 0, acc0 = 0, acc1 = 0; /* dims tid and tid + ATT_TILE */
    for (int base = j0; base <= p; base += ATT_TILE) {
        int j = base + tid;
        float sc = -INFINITY;
        if (j <= p) {
            const KV *kr = kc + ((size_t)tab[j / bs] * bs + j % bs) * row + (size_t)kvh * hd;
            float dot = 0;
            for (int d = 0; d < hd; d++) dot += qs[d] * ld(&kr[d]);
            sc = dot * scale;
        }
        float mnew = fmaxf(m, block_reduce<true>(sc));
        float pj = j <= p ? expf(sc - mnew) : 0.0f;
        ps[tid] = pj;
        float corr = expf(m - mnew); /* 0 on the first tile (m = -inf) */
        l = l * corr + block_reduce<false>(pj); /* its barriers also publish ps */
        int n = p - base + 1 < ATT_TILE ? p - base + 1 : ATT_TILE;
        acc0 *= corr, acc1 *= corr;
        for (int i = 0; i < n; i++) {
            int jj = base + i;
            const KV *vr = vc + ((size_t)tab[jj / bs] * bs + jj % bs) * row + (size_t)kvh * hd;
            float w = ps[i];
            if (tid < hd) acc0 += w * ld(&vr[tid]);
            if (tid + ATT_TILE < hd) acc1 += w * ld(&vr[tid + ATT_TILE]);
        }
        m = mnew;
        __syncthreads(); /* ps is rewritten by the next tile */
    }
    T *o = out + ((size_t)t * nq + h) * hd;
    if (tid < hd) st(&o[tid], acc0 / l);
    if (tid + ATT_TILE < hd) st(&o[tid + ATT_TILE], acc1 / l);
}

template <typename T>
__global__ void k_be_gather_rows(T *dst, const T *src, const int32_t *idx, int dim)
{
    int r = blockIdx.x;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[(size_t)r * dim + i] = src[(size_t)idx[r] * dim + i];
}

/* Columns [c, c + n_i) of src [T][Ntot] to segment i's [T][n_i] (+ bias): the split of a
 * stacked GEMM's output (k_be_split_cols_v when every n_i is a multiple of 8). */
template <typename T>
__global__ void k_be_split_cols(lunar_cuda_be_segs_t o, const T *src, int T_, int Ntot)
{
    long total = (long)T_ * Ntot;
    for (long e = (long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        int t = (int)(e / Ntot), n = (int)(e % Ntot), seg = 0;
        while (seg < o.count - 1 && n >= o.n[seg]) n -= o.n[seg++];
        float v = ld(&src[e]) + (o.bias[seg] ? o.bias[seg][n] : 0.0f);
        st(&((T *)o.y[seg])[(size_t)t * o.n[seg] + n], v);
    }
}

/* RMSNorm of rows of dim <= 8192, dim % 8 == 0: one thread per 8 elements, 16-byte loads and
 * stores, the row held in registers between the sum of squares and the scaling (k_be_rmsnorm
 * re-reads it and loops with dependent loads: ~18 us for one row of 4096, most of a decode
 * step's non-GEMM time; this is a few). Same arithmetic as k_be_rmsnorm per element. */

template <typename T>
__global__ void __launch_bounds__(1024) k_be_rmsnorm_v(T *out, const T *x, T *resid, const float *w, int dim, float eps)
{
    size_t r = blockIdx.x;
    int c = threadIdx.x * 8;
    bool on = c < dim;
    float v[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ss = 0;
    if (on) {
        load8(x + r * dim + c, v);
        if (resid) {
            float a[8];
            load8(resid + r * dim + c, a);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                T s;
                st(&s, a[i] + v[i]);
                v[i] = ld(&s); /* the residual as stored */
            }
            store8(resid + r * dim + c, v);
        }
#pragma unroll
        for (int i = 0; i < 8; i++) ss += v[i] * v[i];
    }
    ss = block_reduce<false>(ss);
    float inv = (float)(1.0 / sqrt((double)ss / dim + eps));
    if (on) {
        float wf[8], o[8];
        load8(w + c, wf);
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] = wf[i] * (v[i] * inv);
        store8(out + r * dim + c, o);
    }
}

/* 8-wide forms of silu_mul, the stacked-GEMM split and RoPE, taken when sizes and pointers
 * allow 16-byte accesses; each element's arithmetic is the scalar kernel's. The scalar ones
 * moved 2-byte elements one per thread: at a 4,096-token prefill silu_mul ran at ~1.2 TB/s
 * (288 us a layer) and RoPE at under half the copy bandwidth (H100, LUNAR_CUDA_PROFILE). */
template <typename T>
__global__ void k_be_silu_mul_v(T *out, const T *gate, const T *up, long n8)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += (long)gridDim.x * blockDim.x) {
        float g[8], u[8];
        load8(gate + i * 8, g);
        load8(up + i * 8, u);
#pragma unroll
        for (int e = 0; e < 8; e++) g[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
        store8(out + i * 8, g);
    }
}

/* every n_i and Ntot multiples of 8: 8 columns of one segment per thread */
template <typename T>
__global__ void k_be_split_cols_v(lunar_cuda_be_segs_t o, const T *src, int T_, int Ntot)
{
    long total = (long)T_ * (Ntot / 8);
    for (long e = (long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        int t = (int)(e / (Ntot / 8)), n = (int)(e % (Ntot / 8)) * 8, seg = 0;
        while (seg < o.count - 1 && n >= o.n[seg]) n -= o.n[seg++];
        float v[8];
        load8(src + (size_t)t * Ntot + (e % (Ntot / 8)) * 8, v);
        if (o.bias[seg])
#pragma unroll
            for (int i = 0; i < 8; i++) v[i] += o.bias[seg][n + i];
        store8(&((T *)o.y[seg])[(size_t)t * o.n[seg] + n], v);
    }
}

/* one thread per (token, head, 8 consecutive pairs); rot/2 and head_dim multiples of 8 */
template <typename T>
__global__ void k_be_rope_v(T *q, T *k, const float *cs, int T_, int nq, int nk, int hd, int rot)
{
    int half = rot / 2, groups = half / 8;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x, total = (long)T_ * (nq + nk) * groups;
    if (idx >= total) return;
    int i = (int)(idx % groups) * 8;
    long th = idx / groups;
    int h = (int)(th % (nq + nk));
    int t = (int)(th / (nq + nk));
    T *v = h < nq ? q + ((size_t)t * nq + h) * hd : k + ((size_t)t * nk + (h - nq)) * hd;
    const float *c = cs + (size_t)t * rot + i, *sn = c + half;
    float a[8], b[8], ra[8], rb[8];
    load8(v + i, a);
    load8(v + i + half, b);
#pragma unroll
    for (int e = 0; e < 8; e++) ra[e] = a[e] * c[e] - b[e] * sn[e], rb[e] = b[e] * c[e] + a[e] * sn[e];
    store8(v + i, ra);
    store8(v + i + half, rb);
}

/* The decode GEMM of one token: a warp per weight row, each lane streaming 16-byte chunks of
 * the row GV_U at a time (GV_U loads in flight per lane before any use: 4 KB a warp, and some
 * 46 warps an SM for q/k/v), x through the read-only cache (every warp of an SM reads it), the
 * dot product reduced by shuffles. cuBLAS's kernels for one token read q/k/v [6144][4096] at
 * ~1.5-1.7 TB/s and o [4096][4096] at ~1.6 TB/s on an H100; this one 1.9 and 2.2 (bench/
 * gemm_bench.c), and the batch-1 decode step of Llama-3-8B went from 6.60 to 6.43 ms. For 2
 * tokens it was faster alone on every shape yet slower in the CUDA-graph step (6.86 vs 6.77 ms),
 * for 4 much slower (8.02 vs 6.90; x re-read per token): those stay on cuBLAS. */
#define GV_U 8
template <typename T, typename Y>
__global__ void __launch_bounds__(256) k_be_gemv(Y *y, const T *x, const T *W, int N, int K)
{
    int lane = threadIdx.x & 31;
    int row = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), rows = (int)((gridDim.x * blockDim.x) >> 5);
    for (; row < N; row += rows) {
        const T *w = W + (size_t)row * K;
        float acc = 0.0f;
        for (int k0 = lane * 8; k0 < K; k0 += 32 * 8 * GV_U) {
            uint4 wv[GV_U];
#pragma unroll
            for (int u = 0; u < GV_U; u++) {
                int k = k0 + u * 256;
                wv[u] = k < K ? __ldcs((const uint4 *)(w + k)) : make_uint4(0, 0, 0, 0); /* streamed once */
            }
#pragma unroll
            for (int u = 0; u < GV_U; u++) {
                int k = k0 + u * 256;
                if (k >= K) break;
                uint4 xv = __ldg((const uint4 *)(x + k));
                const T *we = (const T *)&wv[u], *xe = (const T *)&xv;
#pragma unroll
                for (int e = 0; e < 8; e++) acc = fmaf(ld(&we[e]), ld(&xe[e]), acc);
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) st(&y[row], acc);
    }
}

/* --load-format dummy made on the device: model/dummy.c's values (lunar_model_dummy_params),
 * bit for bit (the f32 arithmetic is exact up to the one product by scale, then one rounding
 * to nearest even as the host's conversion), without 16 GB of host memory and its copy. */
__device__ __forceinline__ uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

template <typename T>
__global__ void k_be_dummy_fill(T *dst, uint64_t h, size_t n, float scale, int is_norm)
{
    for (size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x; g * 4 < n; g += (size_t)gridDim.x * blockDim.x) {
        uint64_t r = splitmix64(h + g);
#pragma unroll
        for (int q = 0; q < 4; q++) {
            size_t i = g * 4 + q;
            if (i >= n) break;
            float u = __fsub_rn(__fmul_rn((float)((r >> (16 * q)) & 0xffff) + 0.5f, 2.0f / 65536.0f), 1.0f);
            st(&dst[i], is_norm ? 1.0f : __fmul_rn(u, scale));
        }
    }
}

int launched(void) { return (int)cudaGetLastError(); }

int grid_for(long n, int threads)
{
    long g = (n + threads - 1) / threads;
    return (int)(g < 65535 * 16 ? (g > 0 ? g : 1) : 65535 * 16);
}

} /* namespace */

/* Calls F<type>(args) for the activation dtype, or returns LUNAR_CUDA_BE_EARG. */
#define DISPATCH(dt, CALL)                                              \
    do {                                                                \
        if ((dt) == LUNAR_DTYPE_F32) { typedef float A; CALL; }         \
        else if ((dt) == LUNAR_DTYPE_F16) { typedef __half A; CALL; }   \
        else if ((dt) == LUNAR_DTYPE_BF16) { typedef __nv_bfloat16 A; CALL; } \
        else return LUNAR_CUDA_BE_EARG;                                 \
    } while (0)

#define S(stream) ((cudaStream_t)(stream))

extern "C" int lunar_cuda_be_embed(void *x, const void *E, const int32_t *ids, int T, int dim, lunar_dtype_t dt,
                                   void *stream)
{
    DISPATCH(dt, (k_be_embed<A><<<T, 256, 0, S(stream)>>>((A *)x, (const A *)E, ids, dim)));
    return launched();
}

extern "C" int lunar_cuda_be_rmsnorm(void *out, const void *x, void *resid, const float *w, int R, int dim, float eps,
                                     lunar_dtype_t dt, void *stream)
{
    if (R < 1) return 0;
    if (dim % 8 == 0 && dim <= 8 * 1024 && !(((uintptr_t)out | (uintptr_t)x | (uintptr_t)resid | (uintptr_t)w) % 16)) {
        int threads = 32 * ((dim / 8 + 31) / 32);
        DISPATCH(dt, (k_be_rmsnorm_v<A><<<R, threads, 0, S(stream)>>>((A *)out, (const A *)x, (A *)resid, w, dim,
                                                                       eps)));
        return launched();
    }
    DISPATCH(dt, (k_be_rmsnorm<A><<<R, dim >= 256 ? 256 : 32 * ((dim + 31) / 32), 0, S(stream)>>>(
                     (A *)out, (const A *)x, (A *)resid, w, dim, eps)));
    return launched();
}

extern "C" int lunar_cuda_be_rope(void *q, void *k, const float *cs, int T, int nq, int nk, int hd, int rot,
                                  lunar_dtype_t dt, void *stream)
{
    long n = (long)T * (nq + nk) * (rot / 2);
    if (n < 1) return 0;
    if ((rot / 2) % 8 == 0 && hd % 8 == 0 && !(((uintptr_t)q | (uintptr_t)k | (uintptr_t)cs) % 16)) {
        DISPATCH(dt, (k_be_rope_v<A><<<grid_for(n / 8, 256), 256, 0, S(stream)>>>((A *)q, (A *)k, cs, T, nq, nk, hd,
                                                                                 rot)));
        return launched();
    }
    DISPATCH(dt, (k_be_rope<A><<<grid_for(n, 256), 256, 0, S(stream)>>>((A *)q, (A *)k, cs, T, nq, nk, hd, rot)));
    return launched();
}

extern "C" int lunar_cuda_be_silu_mul(void *out, const void *gate, const void *up, long n, lunar_dtype_t dt,
                                      void *stream)
{
    if (n < 1) return 0;
    if (n % 8 == 0 && !(((uintptr_t)out | (uintptr_t)gate | (uintptr_t)up) % 16)) {
        DISPATCH(dt, (k_be_silu_mul_v<A><<<grid_for(n / 8, 256), 256, 0, S(stream)>>>((A *)out, (const A *)gate,
                                                                                      (const A *)up, n / 8)));
        return launched();
    }
    DISPATCH(dt, (k_be_silu_mul<A><<<grid_for(n, 256), 256, 0, S(stream)>>>((A *)out, (const A *)gate,
                                                                            (const A *)up, n)));
    return launched();
}

extern "C" int lunar_cuda_be_add_bias(void *y, const float *bias, int T, int N, lunar_dtype_t dt, void *stream)
{
    long n = (long)T * N;
    if (n < 1) return 0;
    DISPATCH(dt, (k_be_add_bias<A><<<grid_for(n, 256), 256, 0, S(stream)>>>((A *)y, bias, n, N)));
    return launched();
}

#define DISPATCH_KV(kv_dt, CALL)                                            \
    do {                                                                    \
        if ((kv_dt) == LUNAR_DTYPE_F32) { typedef float K; CALL; }          \
        else if ((kv_dt) == LUNAR_DTYPE_F16) { typedef __half K; CALL; }    \
        else if ((kv_dt) == LUNAR_DTYPE_BF16) { typedef __nv_bfloat16 K; CALL; } \
        else return LUNAR_CUDA_BE_EARG;                                     \
    } while (0)

extern "C" int lunar_cuda_be_kv_write(void *kc, void *vc, const void *k, const void *v, const int64_t *slot, int T,
                                      int nk, int hd, lunar_dtype_t dt, lunar_dtype_t kv_dt, void *stream)
{
    if (T < 1) return 0;
    DISPATCH(dt, DISPATCH_KV(kv_dt, (k_be_kv_write<A, K><<<T, 128, 0, S(stream)>>>((K *)kc, (K *)vc, (const A *)k,
                                                                                  (const A *)v, slot, nk * hd))));
    return launched();
}

extern "C" int lunar_cuda_be_attention(void *out, const void *q, const void *kc, const void *vc,
                                       const int32_t *seq_of, const int32_t *positions, const int32_t *block_tables,
                                       int max_blocks, int T, int nq, int nk, int hd, int block_size, int window,
                                       float scale, lunar_dtype_t dt, lunar_dtype_t kv_dt, void *stream)
{
    if (T < 1) return 0;
    if (hd > 2 * ATT_TILE || nk < 1 || nq % nk) return LUNAR_CUDA_BE_EARG;
    dim3 grid(T, nq);
    size_t shm = sizeof(float) * (hd + ATT_TILE);
    DISPATCH(dt, DISPATCH_KV(kv_dt, (k_be_attention<A, K><<<grid, ATT_TILE, shm, S(stream)>>>(
                                        (A *)out, (const A *)q, (const K *)kc, (const K *)vc, seq_of, positions,
                                        block_tables, max_blocks, nq, nk, hd, block_size, window, scale))));
    return launched();
}

extern "C" int lunar_cuda_be_gather_rows(void *dst, const void *src, const int32_t *idx, int n, int dim,
                                         lunar_dtype_t dt, void *stream)
{
    if (n < 1) return 0;
    DISPATCH(dt, (k_be_gather_rows<A><<<n, 256, 0, S(stream)>>>((A *)dst, (const A *)src, idx, dim)));
    return launched();
}

extern "C" int lunar_cuda_be_split_cols(const lunar_cuda_be_segs_t *out, const void *src, int T, int Ntot,
                                        lunar_dtype_t dt, void *stream)
{
    long n = (long)T * Ntot;
    if (out->count < 1 || out->count > LUNAR_CUDA_BE_SEGS) return LUNAR_CUDA_BE_EARG;
    if (n < 1) return 0;
    int vec = Ntot % 8 == 0 && !((uintptr_t)src % 16);
    for (int i = 0; i < out->count; i++) vec &= out->n[i] % 8 == 0 && !((uintptr_t)out->y[i] % 16);
    if (vec) {
        DISPATCH(dt, (k_be_split_cols_v<A><<<grid_for(n / 8, 256), 256, 0, S(stream)>>>(*out, (const A *)src, T,
                                                                                        Ntot)));
        return launched();
    }
    DISPATCH(dt, (k_be_split_cols<A><<<grid_for(n, 256), 256, 0, S(stream)>>>(*out, (const A *)src, T, Ntot)));
    return launched();
}

template <typename T, typename Y>
static void gemv_launch(Y *y, const T *x, const T *W, int N, int K, cudaStream_t st)
{
    /* a warp per row, at most 8 CTAs of 8 warps per SM (132 SMs) at a time; rows loop past that */
    int blocks = (N + 7) / 8;
    if (blocks > 132 * 8) blocks = 132 * 8;
    k_be_gemv<T, Y><<<blocks, 256, 0, st>>>(y, x, W, N, K);
}

extern "C" int lunar_cuda_be_gemv(void *y, int y_f32, const void *x, const void *W, int N, int K, lunar_dtype_t dt,
                                  void *stream)
{
    if (N < 1 || K < 8 || K % 8 || ((uintptr_t)x | (uintptr_t)W) % 16 ||
        (dt != LUNAR_DTYPE_BF16 && dt != LUNAR_DTYPE_F16))
        return LUNAR_CUDA_BE_EARG;
    cudaStream_t st = S(stream);
    if (dt == LUNAR_DTYPE_BF16) {
        if (y_f32) gemv_launch((float *)y, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)W, N, K, st);
        else gemv_launch((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)W, N, K, st);
    } else {
        if (y_f32) gemv_launch((float *)y, (const __half *)x, (const __half *)W, N, K, st);
        else gemv_launch((__half *)y, (const __half *)x, (const __half *)W, N, K, st);
    }
    return launched();
}

extern "C" int lunar_cuda_be_dummy_fill(void *dst, lunar_dtype_t dt, uint64_t hash, size_t n, float scale, int is_norm,
                                        void *stream)
{
    if (!n) return 0;
    DISPATCH(dt, (k_be_dummy_fill<A><<<grid_for((long)((n + 3) / 4), 256), 256, 0, S(stream)>>>((A *)dst, hash, n, scale,
                                                                                                is_norm)));
    return launched();
}
