/*
 * kernels/sampling.cu — logits to tokens on the GPU: argmax, the CPU sampler's algorithm
 * (runtime/sampler/sampler.c) and log-probabilities, one CTA per logits row.
 *
 * The sampler must give the same token as the CPU for the same seed, so it keeps the CPU's
 * definitions exactly: a total order (probability desc, id asc) expressed as a 64-bit key
 * (float bits of the probability above, the complemented id below) and the same
 * counter-based uniform (mix64 of seed, sequence index, position) in double. Top-k, top-p and
 * the draw first try the few best candidates, sorted in shared memory, over which the CPU's
 * own loops run (sample_sorted_fast); otherwise each is "the largest key whose upper set holds
 * enough count or mass", found by bisection over the key with a block reduction per step (no
 * per-row scratch beyond the work row). Remaining differences: expf may differ from glibc's by
 * an ulp, and the bisection's and top-p's total mass sums are added in another order, so a
 * draw that lands within rounding of a boundary may pick the neighbour.
 */
#include "common.cuh"

#define SAMPLE_THREADS 512

__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ double uniform01(uint64_t seed, int seq_index, int position)
{
    uint64_t z = mix64(seed ^ mix64((uint64_t)(uint32_t)seq_index << 32 | (uint32_t)position));
    return (double)(mix64(z) >> 11) * (1.0 / 9007199254740992.0);
}

/* Block reductions for SAMPLE_THREADS threads; every thread gets the result. */
__device__ __forceinline__ uint64_t block_max_u64(uint64_t v)
{
    __shared__ uint64_t part[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = 0;
    for (int i = 0; i < SAMPLE_THREADS / 32; i++) v = part[i] > v ? part[i] : v;
    return v;
}

__device__ __forceinline__ double block_sum_f64(double v)
{
    __shared__ double part[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = 0;
    for (int i = 0; i < SAMPLE_THREADS / 32; i++) v += part[i];
    return v;
}

/* Order-preserving map of a float to uint32 (NaN aside). */
__device__ __forceinline__ uint32_t f_ord(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Argmax as the largest key (value, complemented id): ties go to the lower id. */
__device__ __forceinline__ int row_argmax(const float *x, int vocab)
{
    uint64_t best = 0;
    for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) {
        uint64_t k = (uint64_t)f_ord(x[v]) << 32 | (0xffffffffu - (uint32_t)v);
        best = k > best ? k : best;
    }
    best = block_max_u64(best);
    return (int)(0xffffffffu - (uint32_t)best);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) k_argmax(int32_t *out, const float *logits, int vocab)
{
    int tok = row_argmax(logits + (size_t)blockIdx.x * vocab, vocab);
    if (threadIdx.x == 0) out[blockIdx.x] = tok;
}

extern "C" int lunar_cuda_argmax(int32_t *out, const float *logits, int rows, int vocab, void *stream)
{
    if (rows <= 0) return 0;
    if (vocab <= 0) return LUNAR_CUDA_EARG;
    k_argmax<<<rows, SAMPLE_THREADS, 0, LUNAR_CUDA_STREAM(stream)>>>(out, logits, vocab);
    return launch_status();
}

/* Key of a kept probability q at id v (0 = not kept). */
__device__ __forceinline__ uint64_t prob_key(float q, int v)
{
    return (uint64_t)__float_as_uint(q) << 32 | (0xffffffffu - (uint32_t)v);
}

/* The largest K in [lo, hi] with agg(key >= K) satisfying the predicate; pred(lo) is known true.
 * mode 0: count >= need; mode 1: mass >= need; mode 2: mass > need. */
__device__ uint64_t bisect_key(const float *q, int vocab, uint64_t lo, uint64_t hi, uint64_t floor_key,
                               int mode, double need)
{
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2;
        double agg = 0;
        for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) {
            uint64_t k = prob_key(q[v], v);
            if (k >= mid && k >= floor_key && q[v] > 0) agg += mode == 0 ? 1.0 : (double)q[v];
        }
        agg = block_sum_f64(agg);
        bool ok = mode == 0 ? agg >= need : mode == 1 ? agg >= need : agg > need;
        if (ok) lo = mid; else hi = mid - 1;
    }
    return lo;
}

/* ---- the fast path of top-k / top-p: the few best candidates, sorted in shared memory ----
 * Bisection over the 64-bit key costs a pass over the vocabulary per bit (up to ~190 passes
 * for top-k, top-p and the draw: ~3 ms a row for a 128k vocabulary on an H100). Usually the
 * candidates that matter are few: the top-k, or a nucleus of a few hundred. So a radix select
 * on the probability's float bits (8 bits a pass, at most 4) finds a threshold tau with at
 * most SAMPLE_CAP probabilities >= tau that include the k-th best (top-k) or the best
 * SAMPLE_TOPP_HEAD (top-p alone); those are gathered, sorted by key in shared memory, and
 * thread 0 runs the CPU sampler's own loops over them in the same order: its cumulative
 * sums in double, one element after another, are then the CPU's sums exactly. A nucleus that
 * does not fit (a flat distribution) or more than SAMPLE_CAP ties leaves it to the bisection. */
#define SAMPLE_CAP 2048
#define SAMPLE_TOPP_HEAD 1024

struct sample_smem {
    uint64_t keys[SAMPLE_CAP];
    int hist[256];
    int n, fallback, tok;
    uint32_t tau;
};

/* tau (float bits) with count(q >= tau) in [target, SAMPLE_CAP]; false when none exists. */
__device__ bool sample_threshold(const float *x, int vocab, int target, int n_kept, sample_smem &sh)
{
    if (n_kept <= SAMPLE_CAP) { /* every kept probability is a candidate */
        if (threadIdx.x == 0) sh.tau = 1u, sh.n = n_kept;
        __syncthreads();
        return true;
    }
    uint32_t prefix = 0, mask = 0;
    int above = 0; /* kept probabilities whose fixed high bits exceed prefix's */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += SAMPLE_THREADS) sh.hist[i] = 0;
        __syncthreads();
        for (int base = 0; base < vocab; base += SAMPLE_THREADS) {
            int v = base + (int)threadIdx.x, bin = -1;
            if (v < vocab) {
                float q = x[v];
                uint32_t u = __float_as_uint(q);
                if (q > 0 && (u & mask) == prefix) bin = (int)((u >> shift) & 255u);
            }
            /* lanes of one bin add once: most probabilities share a few exponents */
            unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin >= 0 && (int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], __popc(peers));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int cum = above, b = 255;
            while (b > 0 && cum + sh.hist[b] < target) cum += sh.hist[b--];
            sh.n = cum + sh.hist[b]; /* count(q >= prefix | b << shift) */
            sh.hist[0] = cum;        /* handed to every thread below */
            sh.tau = prefix | (uint32_t)b << shift;
        }
        __syncthreads();
        above = sh.hist[0];
        prefix = sh.tau;
        mask |= 255u << shift;
        bool done = sh.n <= SAMPLE_CAP;
        __syncthreads(); /* hist is cleared by the next pass */
        if (done) return sh.n >= target;
    }
    return false; /* more than SAMPLE_CAP probabilities tie with the target-th */
}

/* The sorted case (top-k and/or top-p) when its candidates fit; true when the token is in
 * sh.tok. total_all: the mass of every kept probability (what top-p alone starts from). */
__device__ bool sample_sorted_fast(const float *x, int vocab, const lunar_sample_row_t &p, bool topk, int n_kept,
                                   double total_all, double u01, sample_smem &sh)
{
    int target = topk ? p.top_k : SAMPLE_TOPP_HEAD;
    if (target > SAMPLE_CAP || !sample_threshold(x, vocab, target < n_kept ? target : n_kept, n_kept, sh))
        return false;
    uint32_t tau = sh.tau;
    int C = sh.n;
    __syncthreads();
    if (threadIdx.x == 0) sh.n = 0;
    __syncthreads();
    for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) {
        float q = x[v];
        if (q > 0 && __float_as_uint(q) >= tau) sh.keys[atomicAdd(&sh.n, 1)] = prob_key(q, v);
    }
    __syncthreads();
    int P = 1;
    while (P < C) P <<= 1;
    for (int i = C + (int)threadIdx.x; i < P; i += SAMPLE_THREADS) sh.keys[i] = 0; /* below every key */
    __syncthreads();
    /* bitonic sort, descending */
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < P; i += SAMPLE_THREADS) {
                int l = i ^ j;
                if (l > i) {
                    uint64_t a = sh.keys[i], b = sh.keys[l];
                    if ((i & k) == 0 ? a < b : a > b) sh.keys[i] = b, sh.keys[l] = a;
                }
            }
            __syncthreads();
        }
    if (threadIdx.x == 0) {
        /* runtime/sampler/sampler.c's loops, over the same sequence */
        int n = topk ? p.top_k : n_kept, fallback = 0;
        double total = total_all;
        if (topk) {
            total = 0;
            for (int i = 0; i < n; i++) total += __uint_as_float((uint32_t)(sh.keys[i] >> 32));
        }
        if (p.top_p < 1.0f) {
            double cum = 0, want = (double)p.top_p * total;
            int keep = 0;
            while (keep < n && keep < C && (keep == 0 || cum < want))
                cum += __uint_as_float((uint32_t)(sh.keys[keep++] >> 32));
            if (keep == C && keep < n && cum < want) fallback = 1; /* the nucleus reaches past the candidates */
            n = keep;
            total = cum;
        }
        if (!fallback) {
            double u = u01 * total, cum = 0;
            int i = 0;
            for (; i < n; i++) {
                cum += __uint_as_float((uint32_t)(sh.keys[i] >> 32));
                if (u < cum) break;
            }
            sh.tok = (int)(0xffffffffu - (uint32_t)sh.keys[i < n ? i : n - 1]);
        }
        sh.fallback = fallback;
    }
    __syncthreads();
    return !sh.fallback;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
k_sample(int32_t *tokens, const float *logits, float *work, int vocab,
         const lunar_sample_row_t *params, const int32_t *pen_start,
         const int32_t *pen_ids, const int32_t *pen_counts)
{
    __shared__ double s_scan[SAMPLE_THREADS];
    int row = blockIdx.x;
    const lunar_sample_row_t p = params[row];
    const float *raw = logits + (size_t)row * vocab;
    float *x = work + (size_t)row * vocab;
    for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) x[v] = raw[v];
    __syncthreads();
    if (pen_start) {
        bool freq = p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
        for (int e = pen_start[row] + threadIdx.x; e < pen_start[row + 1]; e += SAMPLE_THREADS) {
            int t = pen_ids[e], c = pen_counts[e];
            if (t < 0 || t >= vocab) continue;
            float y = x[t];
            if (c < 0) {
                y = -INFINITY;
            } else {
                if (p.repetition_penalty != 1.0f)
                    y = y > 0 ? __fdiv_rn(y, p.repetition_penalty) : __fmul_rn(y, p.repetition_penalty);
                if (freq && c > 0)
                    y = __fsub_rn(y, __fadd_rn(__fmul_rn(p.frequency_penalty, (float)c), p.presence_penalty));
            }
            x[t] = y;
        }
    }
    __syncthreads();
    int best = row_argmax(x, vocab);
    if (p.temperature < 1e-5f) {
        if (threadIdx.x == 0) tokens[row] = best;
        return;
    }
    float inv_t = 1.0f / p.temperature, m = x[best];
    float floor_p = p.min_p > 0 ? p.min_p : 0.0f;
    __syncthreads(); /* everyone has read x[best] */
    double n_kept = 0;
    for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) {
        float q = expf(__fmul_rn(__fsub_rn(x[v], m), inv_t));
        bool kept = q > 0 && q >= floor_p;
        x[v] = kept ? q : 0.0f;
        n_kept += kept;
    }
    n_kept = block_sum_f64(n_kept);
    __syncthreads();
    uint64_t top = prob_key(x[best], best), thr = 1;
    bool topk = p.top_k > 0 && p.top_k < n_kept, sorted = topk || p.top_p < 1.0f;
    if (sorted) {
        __shared__ sample_smem sh;
        double total_all = 0;
        if (!topk) { /* top-p alone starts from the mass of every kept probability */
            for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) total_all += x[v];
            total_all = block_sum_f64(total_all);
        }
        if (sample_sorted_fast(x, vocab, p, topk, (int)n_kept, total_all, uniform01(p.seed, p.seq_index, p.position),
                               sh)) {
            if (threadIdx.x == 0) tokens[row] = sh.tok;
            return;
        }
    }
    if (topk) thr = bisect_key(x, vocab, 1, top, 1, 0, (double)p.top_k);
    double total = 0;
    for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS)
        if (x[v] > 0 && prob_key(x[v], v) >= thr) total += x[v];
    total = block_sum_f64(total);
    if (p.top_p < 1.0f) {
        thr = bisect_key(x, vocab, thr, top, thr, 1, (double)p.top_p * total);
        total = 0;
        for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS)
            if (x[v] > 0 && prob_key(x[v], v) >= thr) total += x[v];
        total = block_sum_f64(total);
    }
    double u = uniform01(p.seed, p.seq_index, p.position) * total;
    int tok;
    if (sorted) {
        /* first in order with cumulative mass > u: the largest K with mass(>= K) > u */
        double all = total;
        uint64_t k = all > u ? bisect_key(x, vocab, thr, top, thr, 2, u) : thr;
        tok = (int)(0xffffffffu - (uint32_t)k);
    } else {
        /* id order: each thread owns a contiguous range; scan the range sums */
        int per = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
        int b = threadIdx.x * per, e = min(vocab, b + per);
        double own = 0;
        for (int v = b; v < e; v++) own += x[v];
        s_scan[threadIdx.x] = own;
        __syncthreads();
        if (threadIdx.x == 0) {
            double cum = 0;
            int owner = -1;
            for (int i = 0; i < SAMPLE_THREADS; i++) {
                if (u < cum + s_scan[i]) { owner = i; break; }
                cum += s_scan[i];
            }
            int found = -1, last = -1;
            if (owner >= 0) {
                int ob = owner * per, oe = min(vocab, ob + per);
                for (int v = ob; v < oe && found < 0; v++) {
                    cum += x[v];
                    if (x[v] > 0 && u < cum) found = v;
                }
            }
            if (found < 0) /* rounding past the end: the last kept id, as the CPU does */
                for (int v = vocab - 1; v >= 0 && last < 0; v--)
                    if (x[v] > 0) last = v;
            tokens[row] = found >= 0 ? found : last;
        }
        return;
    }
    if (threadIdx.x == 0) tokens[row] = tok;
}

extern "C" int lunar_cuda_sample(int32_t *tokens, const float *logits, float *work, int rows, int vocab,
                                 const lunar_sample_row_t *params, const int32_t *pen_start,
                                 const int32_t *pen_ids, const int32_t *pen_counts, void *stream)
{
    if (rows <= 0) return 0;
    if (vocab <= 0 || (pen_start && (!pen_ids || !pen_counts))) return LUNAR_CUDA_EARG;
    k_sample<<<rows, SAMPLE_THREADS, 0, LUNAR_CUDA_STREAM(stream)>>>(tokens, logits, work, vocab, params,
                                                                     pen_start, pen_ids, pen_counts);
    return launch_status();
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
k_logprobs(float *lp, int32_t *top_ids, float *top_lp, const float *logits, const int32_t *tokens,
           int vocab, int top_n)
{
    int row = blockIdx.x;
    const float *x = logits + (size_t)row * vocab;
    int best = row_argmax(x, vocab);
    float m = x[best];
    double sum = 0;
    for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) sum += exp((double)(x[v] - m));
    sum = block_sum_f64(sum);
    float lse = m + (float)log(sum);
    if (threadIdx.x == 0 && lp && tokens) {
        int t = tokens[row];
        lp[row] = t >= 0 && t < vocab ? x[t] - lse : -INFINITY;
    }
    uint64_t below = ~(uint64_t)0;
    for (int i = 0; i < top_n && i < vocab; i++) {
        uint64_t k = 0;
        for (int v = threadIdx.x; v < vocab; v += SAMPLE_THREADS) {
            uint64_t kv = (uint64_t)f_ord(x[v]) << 32 | (0xffffffffu - (uint32_t)v);
            if (kv < below && kv > k) k = kv;
        }
        k = block_max_u64(k);
        below = k;
        if (threadIdx.x == 0) {
            int id = (int)(0xffffffffu - (uint32_t)k);
            top_ids[(size_t)row * top_n + i] = id;
            top_lp[(size_t)row * top_n + i] = x[id] - lse;
        }
    }
}

extern "C" int lunar_cuda_logprobs(float *lp, int32_t *top_ids, float *top_lp, const float *logits,
                                   const int32_t *tokens, int rows, int vocab, int top_n, void *stream)
{
    if (rows <= 0) return 0;
    if (vocab <= 0 || (top_n > 0 && (!top_ids || !top_lp))) return LUNAR_CUDA_EARG;
    k_logprobs<<<rows, SAMPLE_THREADS, 0, LUNAR_CUDA_STREAM(stream)>>>(lp, top_ids, top_lp, logits, tokens,
                                                                       vocab, top_n > 0 ? top_n : 0);
    return launch_status();
}
