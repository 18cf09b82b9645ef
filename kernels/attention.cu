/*
 * kernels/attention.cu — causal attention of a varlen batch over the paged KV cache, one kernel
 * for prefill, chunked prefill and decode (flash-decoding split-K, GQA-aware).
 *
 * Work unit: a CTA takes one kv head and a tile of up to 8 "rows", a row being one (query
 * token, query head) pair of the same sequence: the GQA group's heads of one token (ratio 8:
 * 1 token x 8 heads), or several consecutive tokens of a prefill (ratio 1: 8 tokens x 1 head).
 * Each K/V vector fetched from the cache is used by all rows of the tile, so a GQA decode reads
 * the cache once per kv head instead of once per query head, and a prefill reads it once per
 * 8 queries. Keys go to lane groups of TPK lanes (TPK = head_dim/8 rounded up to a power of
 * two, one 16-byte chunk per lane); a warp holds 32/TPK keys at a time, each row keeps an
 * online softmax (running max, sum, accumulator) in registers, in base 2 (log2 e folded into
 * the scale). Groups and warps are merged at the end through shuffles and shared memory.
 * Long contexts split into partitions over blockIdx.z; the partial (max, sum, normalized
 * accumulator) of each partition goes to the workspace and k_attn_merge combines them.
 * CUDA cores only (no tensor cores): correct for every shape; a tensor-core prefill is the next
 * step for long prompts.
 */
#include "common.cuh"

#define ATTN_WARPS 4
#define ATTN_ROWS 8
#define ATTN_MAX_HD 256
#define ATTN_LOG2E 1.4426950408889634f

/* Exclusive scan of tiles per sequence: tile_start[s] = sum over s' < s of ceil(qlen/qt). */
__global__ void k_attn_plan(int32_t *tile_start, const int32_t *qs, int num_seqs, int qt)
{
    __shared__ int scan[1024];
    int base = 0;
    for (int s0 = 0; s0 < num_seqs; s0 += 1024) {
        int s = s0 + (int)threadIdx.x;
        int n = s < num_seqs ? (qs[s + 1] - qs[s] + qt - 1) / qt : 0;
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
    size_t n = align256((size_t)(num_seqs + 1) * sizeof(int32_t));
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
    char *ws = (char *)workspace;
    a.tile_start = (int32_t *)ws;
    ws += align256((size_t)(num_seqs + 1) * sizeof(int32_t));
    size_t e = (size_t)num_tokens * num_heads * p.nsplit;
    a.ws_ml = p.nsplit > 1 ? (float *)ws : nullptr;
    a.ws_acc = p.nsplit > 1 ? (float *)(ws + align256(e * 2 * sizeof(float))) : nullptr;
    k_attn_plan<<<1, 1024, 0, st>>>((int32_t *)a.tile_start, query_start, num_seqs, p.qt);
    int rc = launch_status();
    if (rc) return rc;
    dim3 grid(p.max_tiles, num_kv_heads * p.hcn, p.nsplit);
    LUNAR_DISPATCH(dt, {
        if (p.rows == 4)
            k_attn<T, 4><<<grid, ATTN_WARPS * 32, 0, st>>>((T *)out, (const T *)q, (const T *)k_cache,
                                                           (const T *)v_cache, a);
        else
            k_attn<T, ATTN_ROWS><<<grid, ATTN_WARPS * 32, 0, st>>>((T *)out, (const T *)q,
                                                                   (const T *)k_cache, (const T *)v_cache, a);
        rc = launch_status();
        if (rc) return rc;
        if (p.nsplit > 1)
            k_attn_merge<T><<<dim3(num_tokens, num_heads), 64, 0, st>>>((T *)out, a);
    });
    return launch_status();
}
