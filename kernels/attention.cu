/*
 * kernels/attention.cu — causal attention of a varlen batch over the paged KV cache: prefill,
 * chunked prefill and decode mixed in one call, GQA-aware, long contexts split (flash-decoding).
 *
 * Four kernels share the work by the query count of each sequence (see lunar_cuda_attention):
 *   k_fa_prefill   sequences of FA_MIN_Q+ queries in f16/bf16 with head_dim 64/80/96/128:
 *                  flash-attention tiling on tensor cores (mma.sync, operands in registers).
 *   k_attn_decode_tc  sequences of fewer queries (decode steps) of GQA models (groups of 2
 *                  to 8) in f16/bf16 with those head sizes: one CTA per (token, kv head,
 *                  partition), the group's queries as the rows of tensor-core MMAs.
 *   k_attn_decode  the other decode tokens: the same CTA layout on CUDA cores, a thread per
 *                  key for the scores.
 *   k_attn         everything else (f32, other head sizes, GQA groups over 8), on CUDA cores:
 *                  a CTA takes one kv head and a tile of up to 8 "rows", a row being one (query
 *                  token, query head) pair of the same sequence, so each K/V vector fetched is
 *                  used by all rows of the tile. Keys go to lane groups of TPK lanes (TPK =
 *                  head_dim/8 rounded up to a power of two, one 16-byte chunk per lane); each
 *                  row keeps an online softmax in registers, in base 2 (log2 e folded into the
 *                  scale); groups and warps are merged through shuffles and shared memory.
 * Long contexts split into partitions over blockIdx.z; the partial (max, sum, normalized
 * accumulator) of each partition goes to the workspace and k_attn_merge combines them.
 */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define ATTN_WARPS 4
#define ATTN_ROWS 8
#define ATTN_MAX_HD 256
#define ATTN_LOG2E 1.4426950408889634f

/* Exclusive scan of tiles per sequence: tile_start[s] = sum over s' < s of ceil(qlen/qt). */
/* only: 0 every sequence; 1 only those with qlen < minq; 2 only those with qlen >= minq (the
 * flash-prefill kernel's tiles and the CUDA-core kernel's tiles of one mixed batch). */
__global__ void k_attn_plan(int32_t *tile_start, const int32_t *qs, int num_seqs, int qt, int only, int minq)
{
    __shared__ int scan[1024];
    int base = 0;
    for (int s0 = 0; s0 < num_seqs; s0 += 1024) {
        int s = s0 + (int)threadIdx.x;
        int ql = s < num_seqs ? qs[s + 1] - qs[s] : 0;
        int n = (ql + qt - 1) / qt;
        if ((only == 1 && ql >= minq) || (only == 2 && ql < minq)) n = 0;
        scan[threadIdx.x] = n;
        __syncthreads();
        for (int off = 1; off < 1024; off <<= 1) {
            int v = (int)threadIdx.x >= off ? scan[threadIdx.x - off] : 0;
            __syncthreads();
            scan[threadIdx.x] += v;
            __syncthreads();
        }
        if (s < num_seqs) tile_start[s] = base + scan[threadIdx.x] - n;
        base += scan[1023];
        __syncthreads();
    }
    if (threadIdx.x == 0) tile_start[num_seqs] = base;
}

struct attn_args {
    const int32_t *qs, *seq_lens, *bt, *tile_start;
    int mbps, num_seqs, nh, nkv, hd, bs, window, q_stride, out_stride;
    int only, minq;   /* as k_attn_plan: k_attn's sequences (1: qlen < minq only, 2: >= minq only) */
    int merge_skip_long;  /* tokens of sequences with qlen >= minq are written by k_fa_prefill */
    int dec_short_only;   /* k_attn_decode takes only the sequences with qlen < minq */
    int gh, qt, hcn, tpk, part, nsplit;
    float scale;      /* softmax scale times log2(e) */
    float *ws_ml;     /* [T][nh][nsplit][2] */
    float *ws_acc;    /* [T][nh][nsplit][hd] */
};

/* Largest s with a[s] <= x (a non-decreasing, a[0] <= x). */
__device__ __forceinline__ int upper_index(const int32_t *a, int n, int x)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (a[mid] <= x) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <typename T, int ROWS>
__global__ void __launch_bounds__(ATTN_WARPS * 32, ROWS == 4 ? 4 : 2)
k_attn(T *out, const T *q, const T *kc, const T *vc, attn_args a)
{
    __shared__ float s_m[ATTN_WARPS][ROWS], s_l[ATTN_WARPS][ROWS];
    __shared__ float s_acc[ATTN_WARPS][ROWS][ATTN_MAX_HD];
    int tile = blockIdx.x;
    if (tile >= a.tile_start[a.num_seqs]) return;
    int s = upper_index(a.tile_start, a.num_seqs, tile);
    int qbeg = a.qs[s], qlen = a.qs[s + 1] - qbeg, slen = a.seq_lens[s];
    int q0 = (tile - a.tile_start[s]) * a.qt;
    int kvh = blockIdx.y / a.hcn, hc = blockIdx.y % a.hcn, G = a.nh / a.nkv;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int chunk = lane & (a.tpk - 1), grp = lane / a.tpk, ngrp = 32 / a.tpk;
    bool cact = chunk * 8 < a.hd;

    /* rows: position, first visible key, query head; pos < 0 marks an unused row */
    int rpos[ROWS], rlo[ROWS], rhead[ROWS];
    float qv[ROWS][8];
    int kend = 0, klo = 1 << 30;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        int qi = q0 + r / a.gh, hh = hc * a.gh + r % a.gh;
        bool valid = r < a.gh * a.qt && qi < qlen && hh < G;
        rpos[r] = valid ? slen - qlen + qi : -1;
        rlo[r] = valid && a.window > 0 ? max(0, rpos[r] - a.window + 1) : 0;
        rhead[r] = kvh * G + hh;
        if (valid) {
            kend = max(kend, rpos[r] + 1);
            klo = min(klo, rlo[r]);
        }
#pragma unroll
        for (int i = 0; i < 8; i++) qv[r][i] = 0.0f;
        if (valid && cact) {
            load8(q + (size_t)(qbeg + qi) * a.q_stride + (size_t)rhead[r] * a.hd + chunk * 8, qv[r]);
#pragma unroll
            for (int i = 0; i < 8; i++) qv[r][i] *= a.scale;
        }
    }
    int kbeg = max(klo, (int)blockIdx.z * a.part), kfin = min(kend, ((int)blockIdx.z + 1) * a.part);
    if (kbeg >= kfin) return; /* no row of this tile has keys in this partition */

    float m[ROWS], l[ROWS], acc[ROWS][8];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[r][i] = 0.0f;
    }
    const int32_t *btab = a.bt + (size_t)s * a.mbps;
    size_t row_elems = (size_t)a.nkv * a.hd;
    /* two keys per lane group per step, both loads issued before either is used */
    for (int j0 = kbeg + warp * ngrp * 2; j0 < kfin; j0 += ATTN_WARPS * ngrp * 2) {
        float kf[2][8], vf[2][8];
        int jj[2];
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int j = j0 + u * ngrp + grp;
            jj[u] = j;
            if (j < kfin && cact) {
                size_t slot = (size_t)btab[j / a.bs] * a.bs + j % a.bs;
                size_t off = slot * row_elems + (size_t)kvh * a.hd + chunk * 8;
                load8(kc + off, kf[u]);
                load8(vc + off, vf[u]);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) kf[u][i] = vf[u][i] = 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int j = jj[u];
            bool jv = j < kfin;
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                float d = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) d = fmaf(qv[r][i], kf[u][i], d);
                for (int o = a.tpk >> 1; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
                if (jv && j <= rpos[r] && j >= rlo[r]) {
                    float mn = fmaxf(m[r], d), corr = exp2f(m[r] - mn), p = exp2f(d - mn);
                    l[r] = l[r] * corr + p;
#pragma unroll
                    for (int i = 0; i < 8; i++) acc[r][i] = fmaf(p, vf[u][i], acc[r][i] * corr);
                    m[r] = mn;
                }
            }
        }
    }
    /* merge the lane groups of the warp (lanes tpk, 2tpk... apart hold the same dims) */
    for (int o = a.tpk; o < 32; o <<= 1) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            float mo = __shfl_xor_sync(0xffffffffu, m[r], o), lo = __shfl_xor_sync(0xffffffffu, l[r], o);
            float ao[8];
#pragma unroll
            for (int i = 0; i < 8; i++) ao[i] = __shfl_xor_sync(0xffffffffu, acc[r][i], o);
            float mn = fmaxf(m[r], mo);
            if (mn == -INFINITY) continue;
            float c1 = exp2f(m[r] - mn), c2 = exp2f(mo - mn);
            l[r] = l[r] * c1 + lo * c2;
#pragma unroll
            for (int i = 0; i < 8; i++) acc[r][i] = acc[r][i] * c1 + ao[i] * c2;
            m[r] = mn;
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            s_m[warp][r] = m[r];
            s_l[warp][r] = l[r];
        }
    }
    if (grp == 0 && cact) {
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int i = 0; i < 8; i++) s_acc[warp][r][chunk * 8 + i] = acc[r][i];
    }
    __syncthreads();
    /* merge the warps; one thread per (row, dim) */
    for (int idx = threadIdx.x; idx < ROWS * a.hd; idx += blockDim.x) {
        int r = idx / a.hd, d = idx % a.hd;
        int qi = q0 + r / a.gh, hh = hc * a.gh + r % a.gh;
        if (!(r < a.gh * a.qt && qi < qlen && hh < G)) continue;
        int head = kvh * G + hh, tok = qbeg + qi;
        float M = -INFINITY;
        for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, s_m[w][r]);
        float L = 0.0f, A = 0.0f;
        if (M != -INFINITY) {
            for (int w = 0; w < ATTN_WARPS; w++) {
                float c = exp2f(s_m[w][r] - M);
                L += s_l[w][r] * c;
                A += s_acc[w][r][d] * c;
            }
        }
        float o = L > 0.0f ? A / L : 0.0f;
        if (a.nsplit == 1) {
            out[(size_t)tok * a.out_stride + (size_t)head * a.hd + d] = from_f<T>(o);
        } else {
            size_t e = ((size_t)tok * a.nh + head) * a.nsplit + blockIdx.z;
            a.ws_acc[e * a.hd + d] = o;
            if (d == 0) {
                a.ws_ml[e * 2] = M;
                a.ws_ml[e * 2 + 1] = L;
            }
        }
    }
}

/* Combines the partitions of each (token, head): weights sum_z * 2^(max_z - max). */
template <typename T>
__global__ void k_attn_merge(T *out, attn_args a)
{
    int tok = blockIdx.x, head = blockIdx.y;
    int s = upper_index(a.qs, a.num_seqs, tok);
    int qlen = a.qs[s + 1] - a.qs[s];
    if (a.merge_skip_long && qlen >= a.minq) return; /* written by k_fa_prefill */
    int pos = a.seq_lens[s] - qlen + (tok - a.qs[s]);
    int lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
    int z0 = lo / a.part, z1 = pos / a.part;
    size_t e0 = ((size_t)tok * a.nh + head) * a.nsplit;
    float M = -INFINITY;
    for (int z = z0; z <= z1; z++) M = fmaxf(M, a.ws_ml[(e0 + z) * 2]);
    float L = 0.0f;
    for (int z = z0; z <= z1; z++) {
        float mz = a.ws_ml[(e0 + z) * 2];
        if (mz != -INFINITY) L += a.ws_ml[(e0 + z) * 2 + 1] * exp2f(mz - M);
    }
    for (int d = threadIdx.x; d < a.hd; d += blockDim.x) {
        float A = 0.0f;
        for (int z = z0; z <= z1; z++) {
            float mz = a.ws_ml[(e0 + z) * 2];
            if (mz != -INFINITY) A += a.ws_acc[(e0 + z) * a.hd + d] * a.ws_ml[(e0 + z) * 2 + 1] * exp2f(mz - M);
        }
        out[(size_t)tok * a.out_stride + (size_t)head * a.hd + d] = from_f<T>(L > 0.0f ? A / L : 0.0f);
    }
}

/* ---- PTX helpers: async copies, ldmatrix, m16n8k16 MMA ------------------------------- */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

/* d += a . b on one m16n8k16 tile, f32 accumulation */
template <typename T> __device__ __forceinline__ void mma16816(float *d, const uint32_t *a, const uint32_t *b);
template <> __device__ __forceinline__ void mma16816<bf16_t>(float *d, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma16816<f16_t>(float *d, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Two f32 rounded to T, packed low element first (the fragments' order), and their rounded
 * values added to *sum (the weights P V uses, so that O / l is their weighted mean). */
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi, float *sum)
{
    T l = from_f<T>(lo), h = from_f<T>(hi);
    *sum += to_f<T>(l) + to_f<T>(h);
    return (uint32_t)*(uint16_t *)&l | ((uint32_t)*(uint16_t *)&h << 16);
}

__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* ---- decode ------------------------------------------------------------------------------
 * The tokens of sequences with fewer than FA_MIN_Q queries (decode steps, short chunks). A CTA
 * takes one token, one kv head and one partition of its context, and serves the kv head's
 * whole GQA group (G <= 8 query heads), so every K and V row is read once. Keys go in chunks
 * of DEC_CHUNK, one per thread: a thread loads its key's whole row (head_dim/8 independent
 * 16-byte loads in flight) and scores it against the group's queries (in shared memory, read
 * as broadcasts), so no shuffle is needed per key; the chunk's softmax statistics are block
 * reductions. Then lane groups of head_dim/8 threads take every KG-th key of the chunk for
 * P.V, 16 bytes of V per thread per key. Per-thread accumulators are merged across lane
 * groups once, at the end of the partition. k_attn, which gives each lane group a key and
 * reduces every dot product with shuffles, reached 15-40% of copy bandwidth at decode.
 * VS (16-bit types, head_dim <= 128, GQA groups): each thread also starts its key's V row on its way into
 * shared memory by cp.async before it loads K, so V arrives while the scores and the softmax
 * are computed instead of being fetched only after them (a partition is often one chunk, and
 * then the two fetches were back to back). */
#define DEC_THREADS 128
#define DEC_CHUNK DEC_THREADS

#define DEC_LDV(hd) ((hd) + 8) /* staged V rows (elements): 16 bytes of skew */

template <typename T, int GM, bool VS>
__global__ void __launch_bounds__(DEC_THREADS) k_attn_decode(T *out, const T *q, const T *kc, const T *vc, attn_args a)
{
    extern __shared__ __align__(16) float dsh[];
    int G = a.nh / a.nkv, hd = a.hd;
    float *s_q = dsh;                        /* [G][hd], scaled */
    float *s_p = s_q + GM * hd;              /* [G][DEC_CHUNK] scores, then weights */
    float *s_red = s_p + GM * DEC_CHUNK;     /* [4 warps][GM] */
    float *s_m = s_red + 4 * GM, *s_l = s_m + GM, *s_c = s_l + GM;
    size_t *s_off = (size_t *)(s_c + GM + (GM & 1)); /* [DEC_CHUNK] cache offsets of the chunk's keys */
    float *s_acc = (float *)(s_off + DEC_CHUNK);     /* [4 warps][GM][hd] */
    /* VS: [DEC_CHUNK][DEC_LDV(hd)] the chunk's V rows, 16-byte aligned for cp.async */
    T *s_v = (T *)(((uintptr_t)(s_acc + 4 * GM * hd) + 15) & ~(uintptr_t)15);

    int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int s = upper_index(a.qs, a.num_seqs, t);
    int qbeg = a.qs[s], qlen = a.qs[s + 1] - qbeg;
    if (a.dec_short_only && qlen >= a.minq) return;
    int pos = a.seq_lens[s] - qlen + (t - qbeg);
    int lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
    int kbeg = max(lo, z * a.part), kfin = min(pos + 1, (z + 1) * a.part);
    if (kbeg >= kfin) return; /* the merge reads only partitions that hold keys */

    for (int i = tid; i < G * hd; i += DEC_THREADS)
        s_q[i] = to_f<T>(q[(size_t)t * a.q_stride + (size_t)(kvh * G) * hd + i]) * a.scale;
    if (tid < GM) s_m[tid] = -INFINITY, s_l[tid] = 0.0f;
    int tpk = a.tpk, kg = tid / tpk, KG = DEC_THREADS / tpk, c8 = (tid % tpk) * 8;
    bool cact = c8 < hd;
    float acc[GM][8];
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.0f;
    const int32_t *btab = a.bt + (size_t)s * a.mbps;
    size_t row_elems = (size_t)a.nkv * hd;
    __syncthreads();
    for (int c0 = kbeg; c0 < kfin; c0 += DEC_CHUNK) {
        int j = c0 + tid;
        float sc[GM];
#pragma unroll
        for (int g = 0; g < GM; g++) sc[g] = 0.0f;
        if (j < kfin) {
            size_t off = ((size_t)btab[j / a.bs] * a.bs + j % a.bs) * row_elems + (size_t)kvh * hd;
            s_off[tid] = off;
            if constexpr (VS) {
                for (int c = 0; c < hd; c += 8) cp_async16(s_v + tid * DEC_LDV(hd) + c, vc + off + c, true);
                cp_async_commit();
            }
            for (int d0 = 0; d0 < hd; d0 += 64) { /* up to 8 loads in flight per thread */
                uint4 kv[8];
#pragma unroll
                for (int u = 0; u < 8; u++)
                    if (d0 + 8 * u < hd) kv[u] = *(const uint4 *)(kc + off + d0 + 8 * u);
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    if (d0 + 8 * u >= hd) break;
                    float kf[8];
                    const T *e = (const T *)&kv[u];
                    if constexpr (sizeof(T) == 4) {
                        /* f32: a uint4 is 4 elements; load the other 4 */
                        load8(kc + off + d0 + 8 * u, kf);
                    } else {
#pragma unroll
                        for (int i = 0; i < 8; i++) kf[i] = to_f<T>(e[i]);
                    }
#pragma unroll
                    for (int g = 0; g < GM; g++) {
                        if (g >= G) break;
                        const float *qg = s_q + g * hd + d0 + 8 * u;
#pragma unroll
                        for (int i = 0; i < 8; i++) sc[g] = fmaf(qg[i], kf[i], sc[g]);
                    }
                }
            }
        }
        /* chunk max per head, then the running max and the rescale of what came before */
#pragma unroll
        for (int g = 0; g < GM; g++) {
            float v = j < kfin && g < G ? sc[g] : -INFINITY;
            s_p[g * DEC_CHUNK + tid] = v;
            for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
            if (lane == 0) s_red[warp * GM + g] = v;
        }
        __syncthreads();
        if (tid < G) {
            float mc = fmaxf(fmaxf(s_red[tid], s_red[GM + tid]), fmaxf(s_red[2 * GM + tid], s_red[3 * GM + tid]));
            float mold = s_m[tid], mnew = fmaxf(mold, mc);
            s_c[tid] = mnew == -INFINITY ? 1.0f : exp2f(mold - mnew);
            s_m[tid] = mnew;
        }
        __syncthreads();
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g >= G) break;
            float v = s_p[g * DEC_CHUNK + tid], m = s_m[g];
            float pw = v == -INFINITY ? 0.0f : exp2f(v - m);
            s_p[g * DEC_CHUNK + tid] = pw;
            for (int o = 16; o > 0; o >>= 1) pw += __shfl_xor_sync(0xffffffffu, pw, o);
            if (lane == 0) s_red[warp * GM + g] = pw;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] *= s_c[g];
        }
        if constexpr (VS) cp_async_wait<0>(); /* this thread's V row; the barrier publishes all */
        __syncthreads();
        if (tid < G) s_l[tid] = s_l[tid] * s_c[tid] + s_red[tid] + s_red[GM + tid] + s_red[2 * GM + tid] + s_red[3 * GM + tid];
        int n = min(DEC_CHUNK, kfin - c0);
        if (cact && kg < KG) {
#pragma unroll 4
            for (int i = kg; i < n; i += KG) {
                float vf[8];
                if constexpr (VS)
                    load8(s_v + i * DEC_LDV(hd) + c8, vf);
                else
                    load8(vc + s_off[i] + c8, vf);
#pragma unroll
                for (int g = 0; g < GM; g++) {
                    if (g >= G) break;
                    float pw = s_p[g * DEC_CHUNK + i];
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[g][e] = fmaf(pw, vf[e], acc[g][e]);
                }
            }
        }
        __syncthreads(); /* s_p, s_off and s_red are rewritten by the next chunk */
    }
    /* lane groups of a warp hold the same dims: shuffle them together, then the warps via smem */
    for (int o = tpk; o < 32; o <<= 1)
#pragma unroll
        for (int g = 0; g < GM; g++)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
    if (lane < tpk && cact)
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g >= G) break;
#pragma unroll
            for (int e = 0; e < 8; e++) s_acc[(warp * GM + g) * hd + c8 + e] = acc[g][e];
        }
    __syncthreads();
    for (int i = tid; i < G * hd; i += DEC_THREADS) {
        int g = i / hd, d = i % hd, head = kvh * G + g;
        float A = s_acc[g * hd + d] + s_acc[(GM + g) * hd + d] + s_acc[(2 * GM + g) * hd + d] +
                  s_acc[(3 * GM + g) * hd + d];
        float L = s_l[g], o = L > 0.0f ? A / L : 0.0f;
        if (a.nsplit == 1) {
            out[(size_t)t * a.out_stride + (size_t)head * hd + d] = from_f<T>(o);
        } else {
            size_t e = ((size_t)t * a.nh + head) * a.nsplit + z;
            a.ws_acc[e * hd + d] = o;
            if (d == 0) a.ws_ml[e * 2] = s_m[g], a.ws_ml[e * 2 + 1] = L;
        }
    }
}

static size_t dec_smem(int GM, int hd, bool vs)
{
    size_t f = (size_t)GM * hd + (size_t)GM * DEC_CHUNK + 4 * GM + 3 * GM + (GM & 1);
    return f * sizeof(float) + DEC_CHUNK * sizeof(size_t) + (size_t)4 * GM * hd * sizeof(float) +
           (vs ? 16 + (size_t)DEC_CHUNK * DEC_LDV(hd) * 2 : 0);
}

template <typename T>
static int dec_launch(T *out, const T *q, const T *kc, const T *vc, const attn_args &a, int num_tokens, int nsplit,
                      cudaStream_t st)
{
    int G = a.nh / a.nkv, GM = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
    /* V staged through shared memory for 16-bit types up to head_dim 128 (f32 or head_dim 256
     * would need 64-128 KiB a CTA) and GQA groups of 2+. Without a group (G = 1, MHA models)
     * the staging's 34 KiB cost more in resident CTAs than the overlap gave back (H100,
     * bench_kernels, B64 ctx2048 h32/32: 2636 GB/s without, 2169 with; h32/8: 1566 without,
     * 1694 with). */
    bool vs = sizeof(T) == 2 && a.hd <= 128 && GM >= 2;
    size_t shm = dec_smem(GM, a.hd, vs);
    dim3 grid(num_tokens, a.nkv, nsplit);
#define DEC_CASE(N, V)                                                                                     \
    {                                                                                                      \
        static bool ready = false;                                                                         \
        if (!ready) {                                                                                      \
            cudaError_t e = cudaFuncSetAttribute(k_attn_decode<T, N, V>,                                   \
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,               \
                                                 (int)dec_smem(N, V ? 128 : ATTN_MAX_HD, V));               \
            if (e != cudaSuccess) return (int)e;                                                           \
            ready = true;                                                                                  \
        }                                                                                                  \
        k_attn_decode<T, N, V><<<grid, DEC_THREADS, shm, st>>>(out, q, kc, vc, a);                         \
        break;                                                                                             \
    }
    switch (GM * 2 + vs) {
    case 2: DEC_CASE(1, false)
    case 4: DEC_CASE(2, false)
    case 5: DEC_CASE(2, true)
    case 8: DEC_CASE(4, false)
    case 9: DEC_CASE(4, true)
    case 16: DEC_CASE(8, false)
    case 17: DEC_CASE(8, true)
    }
#undef DEC_CASE
    return launch_status();
}

/* ---- prefill on tensor cores ------------------------------------------------------------
 * Flash-attention tiling as FlashAttention-2 lays it out (Dao, arXiv 2307.08691: Q tile
 * resident, K/V tiles streamed, online softmax, the 1/l division once at the end) for the
 * sequences of a step with at least FA_MIN_Q query tokens. A CTA takes FA_BQ consecutive
 * queries of one query head; its 4 warps own 16 rows each. Everything a warp computes stays in
 * registers in the layouts of the m16n8k16 MMA instruction (PTX ISA, "Matrix fragments for
 * mma.m16n8k16"): Q as A fragments, loaded once; S = Q K^T into accumulators, whose layout
 * (row lane/4 and lane/4 + 8, two adjacent columns per 8-column tile) is that of an A fragment
 * once rounded to 16 bits, so P feeds P V without leaving the registers; O in accumulators,
 * each thread rescaling its own two rows. The row max and sum are reduced over the 4 lanes that
 * share a row. K/V tiles are gathered through the block table with cp.async into a double
 * buffer (the next tile lands while this one is computed) and read with ldmatrix (.trans for
 * V, which P V needs key-major). Rows are padded by 16 bytes so ldmatrix's 8 row reads fall in
 * distinct banks. Masks (causal, sliding window, the tile's end) are computed per element only
 * for the tiles that need them. The CTA grid runs query heads fastest and a sequence's last
 * (longest, under the causal mask) tiles first, so the long CTAs start early and the short ones
 * fill the tail. 16-bit types and head_dim 64/80/96/128 only; everything else stays on k_attn. */
#define FA_BQ 64
#define FA_BK 64
#define FA_WARPS 4
#define FA_MIN_Q 16

template <int HD> struct fa_layout {
    static constexpr int LDQ = HD + 8; /* Q, K, V rows (elements): 16 bytes of skew */
    static constexpr size_t Q = (size_t)FA_BQ * LDQ * 2, KV = (size_t)FA_BK * LDQ * 2;
    static constexpr size_t BYTES = Q + 4 * KV; /* Q, then K and V twice (double buffer) */
    /* k_attn_decode_tc: 16 query rows, the same K/V buffers; at the end the warps' O, max and
     * sum for their merge reuse it all */
    static constexpr size_t QD = (size_t)16 * LDQ * 2, DEC_BYTES = QD + 4 * KV;
    static_assert(DEC_BYTES >= (size_t)FA_WARPS * 16 * ((HD + 4) + 2) * 4, "merge space");
};

/* Shared by k_fa_prefill and k_attn_decode_tc. */

/* K/V tile of FA_BK keys from k0 (keys from kend on zero-filled) into kv (its K rows, then its
 * V rows), gathered through the block table btab by cp.async; the caller commits the group. */
template <typename T, int HD>
__device__ __forceinline__ void fa_fetch(T *kv, const T *kc, const T *vc, const int32_t *btab, int bs, int nkv,
                                         int kvh, int k0, int kend)
{
    constexpr int CH = HD / 8, NT = FA_WARPS * 32, PF = FA_BK * CH / NT, LDQ = fa_layout<HD>::LDQ;
    size_t row_elems = (size_t)nkv * HD;
#pragma unroll
    for (int u = 0; u < PF; u++) {
        int i = (int)threadIdx.x + u * NT, r = i / CH, c = (i % CH) * 8, j = k0 + r;
        bool ok = j < kend;
        int jj = ok ? j : k0; /* a readable address even when nothing is read */
        size_t off = ((size_t)btab[jj / bs] * bs + jj % bs) * row_elems + (size_t)kvh * HD + c;
        cp_async16(kv + r * LDQ + c, kc + off, ok);
        cp_async16(kv + (FA_BK + r) * LDQ + c, vc + off, ok);
    }
}

/* O += P V for one 16-key block: P from the scores s0 (keys 0-7) and s1 (keys 8-15) of this
 * thread's rows (lane/4 and lane/4 + 8), exp2(s scale - b), rounded to T, its rounded values
 * added to l0/l1; V's 16 rows start at V. */
template <typename T, int HD>
__device__ __forceinline__ void fa_pv16(float (*o)[4], const float *s0, const float *s1, float scale, float b0,
                                        float b1, float &l0, float &l1, const T *V, int lane)
{
    constexpr int LDQ = fa_layout<HD>::LDQ;
    uint32_t pa[4];
    pa[0] = pack2<T>(fast_exp2(fmaf(s0[0], scale, -b0)), fast_exp2(fmaf(s0[1], scale, -b0)), &l0);
    pa[1] = pack2<T>(fast_exp2(fmaf(s0[2], scale, -b1)), fast_exp2(fmaf(s0[3], scale, -b1)), &l1);
    pa[2] = pack2<T>(fast_exp2(fmaf(s1[0], scale, -b0)), fast_exp2(fmaf(s1[1], scale, -b0)), &l0);
    pa[3] = pack2<T>(fast_exp2(fmaf(s1[2], scale, -b1)), fast_exp2(fmaf(s1[3], scale, -b1)), &l1);
#pragma unroll
    for (int d = 0; d < HD / 8; d += 2) {
        uint32_t b[4];
        ldsm_x4_t(b, V + ((lane & 7) + ((lane >> 3) & 1) * 8) * LDQ + d * 8 + (lane >> 4) * 8);
        mma16816<T>(o[d], pa, b);
        mma16816<T>(o[d + 1], pa, b + 2);
    }
}

/* The double buffer's step: starts the fetch of the tile after k0 into the other buffer (when
 * there is one) and waits until tile k0 has landed, for every thread. */
template <typename F>
__device__ __forceinline__ void fa_next_tile(F &fetch, int t, int ntiles, int k0, int buf)
{
    if (t + 1 < ntiles) {
        fetch(k0 + FA_BK, buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

/* The max (or sum) of the 4 lanes that share a row. */
__device__ __forceinline__ float quad_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <typename T, int HD>
__global__ void __launch_bounds__(FA_WARPS * 32, 2)
k_fa_prefill(T *out, const T *q, const T *kc, const T *vc, attn_args a, const int32_t *tile_start)
{
    typedef fa_layout<HD> L;
    constexpr int CH = HD / 8, NT = FA_WARPS * 32, KT = HD / 16, NB = FA_BK / 8, DB = HD / 8;
    extern __shared__ __align__(128) unsigned char fa_sh[];
    T *sQ = (T *)fa_sh; /* then buffer b: K at Q + 2b KV, V right after it */

    int tile = (int)(gridDim.y - 1 - blockIdx.y); /* the longest tiles first */
    if (tile >= tile_start[a.num_seqs]) return;
    int s = upper_index(tile_start, a.num_seqs, tile);
    int qbeg = a.qs[s], qlen = a.qs[s + 1] - qbeg;
    int q0 = (tile - tile_start[s]) * FA_BQ, nq = min(FA_BQ, qlen - q0);
    int pos0 = a.seq_lens[s] - qlen + q0; /* position of the tile's first query */
    int head = blockIdx.x, kvh = head / (a.nh / a.nkv);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    for (int i = tid; i < FA_BQ * CH; i += NT) {
        int r = i / CH, c = (i % CH) * 8;
        cp_async16(sQ + r * L::LDQ + c, q + (size_t)(qbeg + q0 + min(r, nq - 1)) * a.q_stride + (size_t)head * HD + c,
                   r < nq);
    }
    int kend = pos0 + nq, klo = a.window > 0 ? max(0, pos0 - a.window + 1) : 0;
    const int32_t *btab = a.bt + (size_t)s * a.mbps;
    auto fetch = [&](int k0, int buf) {
        fa_fetch<T, HD>((T *)(fa_sh + L::Q + buf * 2 * L::KV), kc, vc, btab, a.bs, a.nkv, kvh, k0, kend);
    };
    fetch(klo, 0);
    cp_async_commit();

    /* this thread's two rows of the warp's 16, and their positions */
    int r0 = warp * 16 + (lane >> 2), cq = (lane & 3) * 2;
    int p0 = pos0 + r0, p1 = p0 + 8;
    int wfirst = pos0 + warp * 16, wlast = wfirst + 15;
    uint32_t qa[KT][4];
    float o[DB][4], m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
#pragma unroll
    for (int d = 0; d < DB; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;

    int ntiles = (kend - klo + FA_BK - 1) / FA_BK;
    for (int t = 0; t < ntiles; t++) {
        int k0 = klo + t * FA_BK, buf = t & 1;
        fa_next_tile(fetch, t, ntiles, k0, buf);
        if (t == 0) {
#pragma unroll
            for (int k = 0; k < KT; k++)
                ldsm_x4(qa[k], sQ + (warp * 16 + (lane & 15)) * L::LDQ + k * 16 + (lane >> 4) * 8);
        }
        /* a warp whose queries all precede the tile (the causal diagonal's last tile) or all
         * fall past the window sees only masked keys, and one past the sequence's last query
         * has no row to write: it skips the tile */
        bool skip = k0 > wlast || warp * 16 >= nq || (a.window > 0 && k0 + FA_BK - 1 < wfirst - a.window + 1);
        if (!skip) {
            const T *K = (const T *)(fa_sh + L::Q + buf * 2 * L::KV), *V = K + FA_BK * L::LDQ;
            float sc[NB][4];
#pragma unroll
            for (int n = 0; n < NB; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
#pragma unroll
            for (int k = 0; k < KT; k++)
#pragma unroll
                for (int n = 0; n < NB; n += 2) {
                    uint32_t b[4];
                    ldsm_x4(b, K + (n * 8 + (lane & 7) + (lane >> 4) * 8) * L::LDQ + k * 16 + ((lane >> 3) & 1) * 8);
                    mma16816<T>(sc[n], qa[k], b);
                    mma16816<T>(sc[n + 1], qa[k], b + 2);
                }
            bool mask = k0 + FA_BK - 1 > wfirst || k0 + FA_BK > kend ||
                        (a.window > 0 && k0 < wlast - a.window + 1);
            if (mask) {
#pragma unroll
                for (int n = 0; n < NB; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int j = k0 + n * 8 + cq + (e & 1), p = e < 2 ? p0 : p1;
                        bool ok = j <= p && j < kend && (a.window <= 0 || j > p - a.window);
                        if (!ok) sc[n][e] = -INFINITY;
                    }
            }
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int n = 0; n < NB; n++) {
                mx0 = fmaxf(mx0, fmaxf(sc[n][0], sc[n][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[n][2], sc[n][3]));
            }
            mx0 = quad_max(mx0), mx1 = quad_max(mx1);
            /* scores stay unscaled; the scale (log2 e folded in) enters each exponent */
            float b0 = mx0 == -INFINITY ? 0.0f : mx0 * a.scale, b1 = mx1 == -INFINITY ? 0.0f : mx1 * a.scale;
            float c0 = fast_exp2(m0 * a.scale - b0), c1 = fast_exp2(m1 * a.scale - b1); /* exp2(-inf) = 0 */
            m0 = mx0, m1 = mx1;
            l0 *= c0, l1 *= c1;
#pragma unroll
            for (int d = 0; d < DB; d++) o[d][0] *= c0, o[d][1] *= c0, o[d][2] *= c1, o[d][3] *= c1;
#pragma unroll
            for (int k = 0; k < FA_BK / 16; k++)
                fa_pv16<T, HD>(o, sc[2 * k], sc[2 * k + 1], a.scale, b0, b1, l0, l1, V + k * 16 * L::LDQ, lane);
        }
        __syncthreads(); /* this buffer is refilled by the next iteration's fetch */
    }
    l0 = quad_sum(l0), l1 = quad_sum(l1);
    float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    T *o0 = out + (size_t)(qbeg + q0 + r0) * a.out_stride + (size_t)head * HD + cq;
    T *o1 = o0 + (size_t)8 * a.out_stride;
#pragma unroll
    for (int d = 0; d < DB; d++) {
        float dummy = 0.0f;
        if (r0 < nq) *(uint32_t *)(o0 + d * 8) = pack2<T>(o[d][0] * i0, o[d][1] * i0, &dummy);
        if (r0 + 8 < nq) *(uint32_t *)(o1 + d * 8) = pack2<T>(o[d][2] * i1, o[d][3] * i1, &dummy);
    }
}

template <typename T, int HD>
static int fa_launch(T *out, const T *q, const T *kc, const T *vc, const attn_args &a, const int32_t *tile_start,
                     int max_tiles, cudaStream_t st)
{
    static bool ready = false; /* the >48 KiB shared-memory opt-in, once per instantiation */
    if (!ready) {
        cudaError_t e = cudaFuncSetAttribute(k_fa_prefill<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)fa_layout<HD>::BYTES);
        if (e != cudaSuccess) return (int)e;
        ready = true;
    }
    k_fa_prefill<T, HD><<<dim3(a.nh, max_tiles), FA_WARPS * 32, fa_layout<HD>::BYTES, st>>>(out, q, kc, vc, a,
                                                                                           tile_start);
    return launch_status();
}

/* ---- decode on tensor cores ---------------------------------------------------------------
 * The decode tokens of GQA models (groups of 2 to 16 query heads per kv head) in f16/bf16 with
 * head_dim 64/80/96/128: a CTA takes one token, one kv head and one partition of its context,
 * as k_attn_decode does, but the group's queries are the 16 rows of m16n8k16 MMAs (zero rows
 * past G), so scores, softmax and P V happen in registers as in k_fa_prefill and the CTA's
 * instruction count per key is a small fraction of the CUDA-core kernel's, which (4 query
 * heads, head_dim 128) spends ~1,500 thread instructions per key and stayed near half the
 * copy bandwidth. K/V tiles of FA_BK keys are gathered by cp.async into a double buffer
 * shared by the CTA; warp w scores and accumulates keys [16w, 16w + 16) of every tile with its
 * own online softmax, and the four warps' (max, sum, O) are merged through shared memory at
 * the end. The partition's bounds already hold the causal and window limits, so the only mask
 * is the context's end in the last tile. */
template <typename T, int HD>
__global__ void __launch_bounds__(FA_WARPS * 32)
k_attn_decode_tc(T *out, const T *q, const T *kc, const T *vc, attn_args a)
{
    typedef fa_layout<HD> L;
    constexpr int CH = HD / 8, NT = FA_WARPS * 32, KT = HD / 16, DB = HD / 8;
    constexpr int LDO = HD + 4; /* the merge's O rows (floats) */
    extern __shared__ __align__(128) unsigned char fa_sh[];
    T *sQ = (T *)fa_sh; /* 16 rows; K/V buffer b at QD + 2b KV, V right after K */

    int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z;
    int s = upper_index(a.qs, a.num_seqs, t);
    int qbeg = a.qs[s], qlen = a.qs[s + 1] - qbeg;
    if (a.dec_short_only && qlen >= a.minq) return;
    int G = a.nh / a.nkv;
    int pos = a.seq_lens[s] - qlen + (t - qbeg);
    int lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
    int kbeg = max(lo, z * a.part), kend = min(pos + 1, (z + 1) * a.part);
    if (kbeg >= kend) return; /* the merge reads only partitions that hold keys */
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    for (int i = tid; i < 16 * CH; i += NT) {
        int r = i / CH, c = (i % CH) * 8;
        cp_async16(sQ + r * L::LDQ + c, q + (size_t)t * a.q_stride + (size_t)(kvh * G + min(r, G - 1)) * HD + c, r < G);
    }
    const int32_t *btab = a.bt + (size_t)s * a.mbps;
    auto fetch = [&](int k0, int buf) {
        fa_fetch<T, HD>((T *)(fa_sh + L::QD + buf * 2 * L::KV), kc, vc, btab, a.bs, a.nkv, kvh, k0, kend);
    };
    fetch(kbeg, 0);
    cp_async_commit();

    int cq = (lane & 3) * 2;
    uint32_t qa[KT][4];
    float o[DB][4], m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
#pragma unroll
    for (int d = 0; d < DB; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    int ntiles = (kend - kbeg + FA_BK - 1) / FA_BK;
    for (int it = 0; it < ntiles; it++) {
        int k0 = kbeg + it * FA_BK, buf = it & 1;
        fa_next_tile(fetch, it, ntiles, k0, buf);
        if (it == 0) {
#pragma unroll
            for (int k = 0; k < KT; k++) ldsm_x4(qa[k], sQ + (lane & 15) * L::LDQ + k * 16 + (lane >> 4) * 8);
        }
        int kw = k0 + warp * 16; /* this warp's 16 keys */
        if (kw < kend) {
            const T *K = (const T *)(fa_sh + L::QD + buf * 2 * L::KV) + warp * 16 * L::LDQ, *V = K + FA_BK * L::LDQ;
            float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
            for (int k = 0; k < KT; k++) {
                uint32_t b[4];
                ldsm_x4(b, K + ((lane & 7) + (lane >> 4) * 8) * L::LDQ + k * 16 + ((lane >> 3) & 1) * 8);
                mma16816<T>(sc[0], qa[k], b);
                mma16816<T>(sc[1], qa[k], b + 2);
            }
            if (kw + 16 > kend) {
#pragma unroll
                for (int n = 0; n < 2; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (kw + n * 8 + cq + (e & 1) >= kend) sc[n][e] = -INFINITY;
            }
            float mx0 = fmaxf(m0, fmaxf(fmaxf(sc[0][0], sc[0][1]), fmaxf(sc[1][0], sc[1][1])));
            float mx1 = fmaxf(m1, fmaxf(fmaxf(sc[0][2], sc[0][3]), fmaxf(sc[1][2], sc[1][3])));
            mx0 = quad_max(mx0), mx1 = quad_max(mx1);
            float b0 = mx0 * a.scale, b1 = mx1 * a.scale; /* finite: each warp's first key is valid */
            float c0 = fast_exp2(m0 * a.scale - b0), c1 = fast_exp2(m1 * a.scale - b1);
            m0 = mx0, m1 = mx1;
            l0 *= c0, l1 *= c1;
#pragma unroll
            for (int d = 0; d < DB; d++) o[d][0] *= c0, o[d][1] *= c0, o[d][2] *= c1, o[d][3] *= c1;
            fa_pv16<T, HD>(o, sc[0], sc[1], a.scale, b0, b1, l0, l1, V, lane);
        }
        __syncthreads(); /* this buffer is refilled by the next iteration's fetch */
    }
    /* merge the warps: rows are query heads, only the first G are real */
    l0 = quad_sum(l0), l1 = quad_sum(l1);
    float *sO = (float *)fa_sh, *sM = sO + FA_WARPS * 16 * LDO, *sL = sM + FA_WARPS * 16;
    int r0 = lane >> 2;
    if (r0 < G) {
#pragma unroll
        for (int d = 0; d < DB; d++) {
            sO[(warp * 16 + r0) * LDO + d * 8 + cq] = o[d][0];
            sO[(warp * 16 + r0) * LDO + d * 8 + cq + 1] = o[d][1];
        }
        if ((lane & 3) == 0) sM[warp * 16 + r0] = m0, sL[warp * 16 + r0] = l0;
    }
    if (r0 + 8 < G) {
#pragma unroll
        for (int d = 0; d < DB; d++) {
            sO[(warp * 16 + r0 + 8) * LDO + d * 8 + cq] = o[d][2];
            sO[(warp * 16 + r0 + 8) * LDO + d * 8 + cq + 1] = o[d][3];
        }
        if ((lane & 3) == 0) sM[warp * 16 + r0 + 8] = m1, sL[warp * 16 + r0 + 8] = l1;
    }
    __syncthreads();
    for (int i = tid; i < G * HD; i += NT) {
        int g = i / HD, d = i % HD, head = kvh * G + g;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < FA_WARPS; w++) M = fmaxf(M, sM[w * 16 + g]);
        float A = 0.0f, Ls = 0.0f;
#pragma unroll
        for (int w = 0; w < FA_WARPS; w++) {
            float mw = sM[w * 16 + g];
            if (mw == -INFINITY) continue; /* a warp that saw no key */
            float f = fast_exp2((mw - M) * a.scale);
            A += sO[(w * 16 + g) * LDO + d] * f;
            Ls += sL[w * 16 + g] * f;
        }
        float ov = Ls > 0.0f ? A / Ls : 0.0f;
        if (a.nsplit == 1) {
            out[(size_t)t * a.out_stride + (size_t)head * HD + d] = from_f<T>(ov);
        } else {
            size_t e = ((size_t)t * a.nh + head) * a.nsplit + z;
            a.ws_acc[e * HD + d] = ov;
            if (d == 0) a.ws_ml[e * 2] = M * a.scale, a.ws_ml[e * 2 + 1] = Ls;
        }
    }
}

template <typename T, int HD>
static int dec_tc_launch(T *out, const T *q, const T *kc, const T *vc, const attn_args &a, int num_tokens,
                         cudaStream_t st)
{
    static bool ready = false; /* the >48 KiB shared-memory opt-in, once per instantiation */
    if (!ready) {
        cudaError_t e = cudaFuncSetAttribute(k_attn_decode_tc<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)fa_layout<HD>::DEC_BYTES);
        if (e != cudaSuccess) return (int)e;
        ready = true;
    }
    k_attn_decode_tc<T, HD><<<dim3(num_tokens, a.nkv, a.nsplit), FA_WARPS * 32, fa_layout<HD>::DEC_BYTES, st>>>(
        out, q, kc, vc, a);
    return launch_status();
}

/* The flash kernel takes this step's long sequences when the type and head_dim allow it. */
static bool fa_eligible(lunar_dtype_t dt, int hd, int num_tokens)
{
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("LUNAR_CUDA_FLASH");
        off = e && !strcmp(e, "0");
    }
    return !off && num_tokens >= FA_MIN_Q && (dt == LUNAR_DTYPE_BF16 || dt == LUNAR_DTYPE_F16) &&
           (hd == 64 || hd == 80 || hd == 96 || hd == 128);
}

/* k_attn_decode_tc takes the decode tokens when the type, head_dim and GQA group allow it. */
static bool dec_tc_eligible(lunar_dtype_t dt, int hd, int G)
{
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("LUNAR_CUDA_DECODE_TC");
        off = e && !strcmp(e, "0");
    }
    return !off && G >= 2 && G <= 16 && (dt == LUNAR_DTYPE_BF16 || dt == LUNAR_DTYPE_F16) &&
           (hd == 64 || hd == 80 || hd == 96 || hd == 128);
}

/* The launch shape, shared by the workspace size and the launch so that both agree. */
struct attn_shape {
    int rows, gh, qt, hcn, tpk, max_tiles, nsplit, part;
};

static attn_shape attn_plan_shape(int num_tokens, int num_seqs, int nh, int nkv, int hd, int max_seq_len)
{
    attn_shape p;
    int G = nh / nkv;
    /* 4 rows when the group fits: half the registers, twice the resident warps */
    p.rows = G <= 4 ? 4 : ATTN_ROWS;
    p.gh = G < p.rows ? G : p.rows;
    p.qt = p.rows / p.gh;
    p.hcn = (G + p.gh - 1) / p.gh;
    int chunks = hd / 8;
    p.tpk = 1;
    while (p.tpk < chunks) p.tpk <<= 1;
    p.max_tiles = num_seqs + (num_tokens + p.qt - 1) / p.qt;
    /* split long contexts only while the grid is too small to fill the GPU (~8 CTAs per SM
     * on 132 SMs): prefills of many tokens need no split and no workspace */
    long ctas = (long)((num_tokens + p.qt - 1) / p.qt) * nkv * p.hcn;
    int by_len = (max_seq_len + LUNAR_ATTN_PARTITION - 1) / LUNAR_ATTN_PARTITION;
    int by_fill = (int)((1056 + ctas - 1) / ctas);
    p.nsplit = by_len < by_fill ? by_len : by_fill;
    if (p.nsplit < 1) p.nsplit = 1;
    p.part = (max_seq_len + p.nsplit - 1) / p.nsplit;
    if (p.part < 1) p.part = 1;
    return p;
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

extern "C" size_t lunar_cuda_attention_workspace_size(int num_tokens, int num_seqs, int num_heads,
                                                      int num_kv_heads, int head_dim, int max_seq_len)
{
    if (num_kv_heads <= 0 || num_heads % num_kv_heads) return 0;
    attn_shape p = attn_plan_shape(num_tokens, num_seqs, num_heads, num_kv_heads, head_dim, max_seq_len);
    /* two tile plans (k_attn's and k_fa_prefill's), then the split partials */
    size_t n = 2 * align256((size_t)(num_seqs + 1) * sizeof(int32_t));
    if (p.nsplit > 1) {
        size_t e = (size_t)num_tokens * num_heads * p.nsplit;
        n += align256(e * 2 * sizeof(float)) + align256(e * head_dim * sizeof(float));
    }
    return n;
}

extern "C" int lunar_cuda_attention(void *out, const void *q, const void *k_cache, const void *v_cache,
                                    const int32_t *query_start, const int32_t *seq_lens,
                                    const int32_t *block_tables, int max_blocks_per_seq, int num_seqs,
                                    int num_tokens, int max_seq_len, int num_heads, int num_kv_heads,
                                    int head_dim, int block_size, float scale, int sliding_window,
                                    int q_stride, int out_stride, void *workspace, lunar_dtype_t dt,
                                    void *stream)
{
    if (num_kv_heads <= 0 || num_heads % num_kv_heads || head_dim % 8 || head_dim > ATTN_MAX_HD ||
        head_dim <= 0 || block_size <= 0 || max_seq_len <= 0 || q_stride % 8 || out_stride % 8 ||
        !aligned16(q) || !aligned16(out) || !aligned16(k_cache) || !aligned16(v_cache) || !workspace)
        return LUNAR_CUDA_EARG;
    if (num_tokens <= 0 || num_seqs <= 0) return 0;
    cudaStream_t st = LUNAR_CUDA_STREAM(stream);
    attn_shape p = attn_plan_shape(num_tokens, num_seqs, num_heads, num_kv_heads, head_dim, max_seq_len);
    if (p.nsplit > 65535) return LUNAR_CUDA_EARG;
    attn_args a;
    a.qs = query_start;
    a.seq_lens = seq_lens;
    a.bt = block_tables;
    a.mbps = max_blocks_per_seq;
    a.num_seqs = num_seqs;
    a.nh = num_heads;
    a.nkv = num_kv_heads;
    a.hd = head_dim;
    a.bs = block_size;
    a.window = sliding_window;
    a.q_stride = q_stride;
    a.out_stride = out_stride;
    a.gh = p.gh;
    a.qt = p.qt;
    a.hcn = p.hcn;
    a.tpk = p.tpk;
    a.part = p.part;
    a.nsplit = p.nsplit;
    a.scale = scale * ATTN_LOG2E;
    /* who takes which tokens: sequences of FA_MIN_Q+ queries go to k_fa_prefill where it
     * applies, else k_attn; shorter ones to k_attn_decode (GQA groups up to 8), else k_attn */
    static int dec_off = -1;
    if (dec_off < 0) {
        const char *ev = getenv("LUNAR_CUDA_DECODE_ATTN");
        dec_off = ev && !strcmp(ev, "0");
    }
    /* a sequence of FA_MIN_Q queries needs FA_MIN_Q - 1 tokens more than one per sequence */
    bool long_possible = num_tokens - num_seqs >= FA_MIN_Q - 1;
    bool fa = long_possible && fa_eligible(dt, head_dim, num_tokens), dec = !dec_off && num_heads / num_kv_heads <= 8;
    /* k_attn for the long sequences only when there can be one (a step of single-token
     * sequences has none) */
    bool use_attn = !dec || (!fa && long_possible);
    a.only = fa ? 1 : dec ? 2 : 0;
    a.minq = FA_MIN_Q;
    a.merge_skip_long = fa;
    a.dec_short_only = 1;
    char *ws = (char *)workspace;
    a.tile_start = (int32_t *)ws;
    ws += align256((size_t)(num_seqs + 1) * sizeof(int32_t));
    int32_t *fa_tiles = (int32_t *)ws;
    ws += align256((size_t)(num_seqs + 1) * sizeof(int32_t));
    size_t e = (size_t)num_tokens * num_heads * p.nsplit;
    a.ws_ml = p.nsplit > 1 ? (float *)ws : nullptr;
    a.ws_acc = p.nsplit > 1 ? (float *)(ws + align256(e * 2 * sizeof(float))) : nullptr;
    int rc = 0;
    if (fa) {
        k_attn_plan<<<1, 1024, 0, st>>>(fa_tiles, query_start, num_seqs, FA_BQ, 2, FA_MIN_Q);
        if ((rc = launch_status())) return rc;
        /* an upper bound on the long sequences' tiles; the extra CTAs return at once */
        int fa_seqs = num_seqs < num_tokens / FA_MIN_Q ? num_seqs : num_tokens / FA_MIN_Q;
        int max_tiles = (num_tokens + FA_BQ - 1) / FA_BQ + fa_seqs;
#define FA_CALL(TT, HD) \
    fa_launch<TT, HD>((TT *)out, (const TT *)q, (const TT *)k_cache, (const TT *)v_cache, a, fa_tiles, max_tiles, st)
#define FA_HD(TT) \
    (head_dim == 64 ? FA_CALL(TT, 64) : head_dim == 80 ? FA_CALL(TT, 80) : head_dim == 96 ? FA_CALL(TT, 96) \
                                                                         : FA_CALL(TT, 128))
        rc = dt == LUNAR_DTYPE_BF16 ? FA_HD(bf16_t) : FA_HD(f16_t);
#undef FA_HD
#undef FA_CALL
        if (rc) return rc;
    }
    bool dec_tc = dec && dec_tc_eligible(dt, head_dim, num_heads / num_kv_heads);
    if (dec_tc) {
#define TC_CALL(TT, HD) \
    dec_tc_launch<TT, HD>((TT *)out, (const TT *)q, (const TT *)k_cache, (const TT *)v_cache, a, num_tokens, st)
#define TC_HD(TT) \
    (head_dim == 64 ? TC_CALL(TT, 64) : head_dim == 80 ? TC_CALL(TT, 80) : head_dim == 96 ? TC_CALL(TT, 96) \
                                                                         : TC_CALL(TT, 128))
        rc = dt == LUNAR_DTYPE_BF16 ? TC_HD(bf16_t) : TC_HD(f16_t);
#undef TC_HD
#undef TC_CALL
        if (rc) return rc;
    }
    if (use_attn) {
        k_attn_plan<<<1, 1024, 0, st>>>((int32_t *)a.tile_start, query_start, num_seqs, p.qt, a.only, FA_MIN_Q);
        if ((rc = launch_status())) return rc;
    }
    dim3 grid(p.max_tiles, num_kv_heads * p.hcn, p.nsplit);
    LUNAR_DISPATCH(dt, {
        if (dec && !dec_tc) {
            rc = dec_launch<T>((T *)out, (const T *)q, (const T *)k_cache, (const T *)v_cache, a, num_tokens,
                               p.nsplit, st);
            if (rc) return rc;
        }
        if (use_attn) {
            if (p.rows == 4)
                k_attn<T, 4><<<grid, ATTN_WARPS * 32, 0, st>>>((T *)out, (const T *)q, (const T *)k_cache,
                                                               (const T *)v_cache, a);
            else
                k_attn<T, ATTN_ROWS><<<grid, ATTN_WARPS * 32, 0, st>>>((T *)out, (const T *)q,
                                                                       (const T *)k_cache, (const T *)v_cache, a);
            rc = launch_status();
            if (rc) return rc;
        }
        if (p.nsplit > 1)
            k_attn_merge<T><<<dim3(num_tokens, num_heads), 64, 0, st>>>((T *)out, a);
    });
    return launch_status();
}
