/*
 * kernels/elementwise.cu — the row-wise ops of a decoder layer: embedding gather, RMSNorm with
 * the fused residual add, RoPE, SiLU-and-mul and the KV-cache write by slot mapping.
 *
 * All are memory-bound: one block per token row, 16-byte accesses where rows allow (the common
 * case: sizes that are multiples of 8), a scalar loop otherwise. Arithmetic is f32 and each
 * output is rounded once, except where HF rounds in between (RMSNorm: normalized value, then
 * times the weight) so that bf16 results match the reference implementation's.
 */
#include "common.cuh"

/* ---- row copies (embedding, KV write) ------------------------------------------------- */
/* Copies `bytes` bytes; 16-byte words when both ends and the size allow, else 2-byte words
 * (every supported dtype is a multiple of 2 bytes). */
__device__ __forceinline__ void copy_row(void *dst, const void *src, size_t bytes, bool vec)
{
    if (vec) {
        uint4 *d = (uint4 *)dst;
        const uint4 *s = (const uint4 *)src;
        for (size_t i = threadIdx.x; i < bytes / 16; i += blockDim.x) d[i] = s[i];
    } else {
        uint16_t *d = (uint16_t *)dst;
        const uint16_t *s = (const uint16_t *)src;
        for (size_t i = threadIdx.x; i < bytes / 2; i += blockDim.x) d[i] = s[i];
    }
}

__global__ void k_embedding(char *out, const char *table, const int32_t *ids, size_t row_bytes,
                            int vocab, bool vec)
{
    int t = blockIdx.x, id = ids[t];
    char *dst = out + (size_t)t * row_bytes;
    if (id < 0 || id >= vocab) {
        for (size_t i = threadIdx.x; i < row_bytes / 2; i += blockDim.x) ((uint16_t *)dst)[i] = 0;
        return;
    }
    copy_row(dst, table + (size_t)id * row_bytes, row_bytes, vec);
}

extern "C" int lunar_cuda_embedding(void *out, const void *table, const int32_t *ids,
                                    int num_tokens, int hidden, int vocab, lunar_dtype_t dt,
                                    void *stream)
{
    if (dt != LUNAR_DTYPE_F32 && dt != LUNAR_DTYPE_F16 && dt != LUNAR_DTYPE_BF16) return LUNAR_CUDA_EARG;
    if (num_tokens <= 0) return 0;
    size_t row = (size_t)hidden * lunar_dtype_size(dt);
    bool vec = row % 16 == 0 && aligned16(out) && aligned16(table);
    k_embedding<<<num_tokens, 256, 0, LUNAR_CUDA_STREAM(stream)>>>((char *)out, (const char *)table,
                                                                   ids, row, vocab, vec);
    return launch_status();
}

/* ---- RMSNorm (+ residual) ------------------------------------------------------------- */
template <typename T>
__global__ void k_rmsnorm(T *out, const T *x, T *res, const T *w, int hidden, float eps, bool vec)
{
    size_t base = (size_t)blockIdx.x * hidden;
    const T *xr = x + base;
    T *rr = res ? res + base : nullptr;
    T *orow = out + base;
    float ss = 0.0f;
    /* pass 1: the (rounded) sum with the residual, written back; sum of squares */
    if (vec) {
        for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
            float a[8];
            load8(xr + i, a);
            if (rr) {
                float b[8];
                load8(rr + i, b);
#pragma unroll
                for (int j = 0; j < 8; j++) a[j] = round_to<T>(a[j] + b[j]);
                store8(rr + i, a);
            }
#pragma unroll
            for (int j = 0; j < 8; j++) ss += a[j] * a[j];
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            float a = to_f(xr[i]);
            if (rr) {
                a = round_to<T>(a + to_f(rr[i]));
                rr[i] = from_f<T>(a);
            }
            ss += a * a;
        }
    }
    float rs = rsqrtf(block_sum(ss) / (float)hidden + eps);
    /* pass 2: each thread re-reads the elements it wrote or read itself */
    const T *src = rr ? rr : xr;
    if (vec) {
        for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
            float a[8], g[8];
            load8(src + i, a);
            load8(w + i, g);
#pragma unroll
            for (int j = 0; j < 8; j++) a[j] = round_to<T>(a[j] * rs) * g[j];
            store8(orow + i, a);
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x)
            orow[i] = from_f<T>(round_to<T>(to_f(src[i]) * rs) * to_f(w[i]));
    }
}

extern "C" int lunar_cuda_rmsnorm(void *out, const void *x, void *residual, const void *weight,
                                  int rows, int hidden, float eps, lunar_dtype_t dt, void *stream)
{
    if (rows <= 0) return 0;
    bool vec = hidden % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(weight) &&
               (!residual || aligned16(residual));
    int threads = hidden >= 4096 ? 512 : hidden >= 1024 ? 256 : 128;
    LUNAR_DISPATCH(dt, k_rmsnorm<T><<<rows, threads, 0, LUNAR_CUDA_STREAM(stream)>>>(
                           (T *)out, (const T *)x, (T *)residual, (const T *)weight, hidden, eps, vec));
    return launch_status();
}

/* ---- RoPE ----------------------------------------------------------------------------- */
template <typename T>
__global__ void k_rope(T *q, T *k, const int32_t *pos, const float *inv_freq, int nq, int nk,
                       int hd, int rot, int q_stride, int k_stride, float af)
{
    int t = blockIdx.x, half = rot / 2;
    float p = (float)pos[t];
    int total = (nq + (k ? nk : 0)) * half;
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
        int h = e / half, i = e % half;
        T *v = h < nq ? q + (size_t)t * q_stride + (size_t)h * hd
                      : k + (size_t)t * k_stride + (size_t)(h - nq) * hd;
        float s, c;
        sincosf(p * inv_freq[i], &s, &c);
        c *= af;
        s *= af;
        float a = to_f(v[i]), b = to_f(v[i + half]);
        v[i] = from_f<T>(a * c - b * s);
        v[i + half] = from_f<T>(b * c + a * s);
    }
}

extern "C" int lunar_cuda_rope(void *q, void *k, const int32_t *positions, const float *inv_freq,
                               int num_tokens, int num_heads, int num_kv_heads, int head_dim,
                               int rotary_dim, int q_stride, int k_stride, float attn_factor,
                               lunar_dtype_t dt, void *stream)
{
    if (rotary_dim <= 0 || rotary_dim % 2 || rotary_dim > head_dim) return LUNAR_CUDA_EARG;
    if (num_tokens <= 0) return 0;
    LUNAR_DISPATCH(dt, k_rope<T><<<num_tokens, 256, 0, LUNAR_CUDA_STREAM(stream)>>>(
                           (T *)q, (T *)k, positions, inv_freq, num_heads, num_kv_heads, head_dim,
                           rotary_dim, q_stride, k_stride, attn_factor));
    return launch_status();
}

/* ---- SiLU and mul --------------------------------------------------------------------- */
template <typename T> __global__ void k_silu_and_mul(T *out, const T *x, int inter, bool vec)
{
    const T *g = x + (size_t)blockIdx.x * 2 * inter, *u = g + inter;
    T *o = out + (size_t)blockIdx.x * inter;
    if (vec) {
        for (int i = threadIdx.x * 8; i < inter; i += blockDim.x * 8) {
            float a[8], b[8];
            load8(g + i, a);
            load8(u + i, b);
#pragma unroll
            for (int j = 0; j < 8; j++) a[j] = a[j] / (1.0f + expf(-a[j])) * b[j];
            store8(o + i, a);
        }
    } else {
        for (int i = threadIdx.x; i < inter; i += blockDim.x) {
            float a = to_f(g[i]);
            o[i] = from_f<T>(a / (1.0f + expf(-a)) * to_f(u[i]));
        }
    }
}

extern "C" int lunar_cuda_silu_and_mul(void *out, const void *x, int num_tokens, int inter,
                                       lunar_dtype_t dt, void *stream)
{
    if (num_tokens <= 0) return 0;
    bool vec = inter % 8 == 0 && aligned16(out) && aligned16(x);
    LUNAR_DISPATCH(dt, k_silu_and_mul<T><<<num_tokens, 256, 0, LUNAR_CUDA_STREAM(stream)>>>(
                           (T *)out, (const T *)x, inter, vec));
    return launch_status();
}

/* ---- KV-cache write ------------------------------------------------------------------- */
__global__ void k_kv_write(char *kc, char *vc, const char *k, const char *v, const int64_t *slots,
                           size_t row_bytes, size_t k_pitch, size_t v_pitch, bool vec)
{
    int t = blockIdx.x;
    int64_t slot = slots[t];
    if (slot < 0) return;
    copy_row(kc + (size_t)slot * row_bytes, k + (size_t)t * k_pitch, row_bytes, vec);
    copy_row(vc + (size_t)slot * row_bytes, v + (size_t)t * v_pitch, row_bytes, vec);
}

extern "C" int lunar_cuda_kv_write(void *k_cache, void *v_cache, const void *k, const void *v,
                                   const int64_t *slot_mapping, int num_tokens, int num_kv_heads,
                                   int head_dim, int k_stride, int v_stride, lunar_dtype_t dt,
                                   void *stream)
{
    if (dt != LUNAR_DTYPE_F32 && dt != LUNAR_DTYPE_F16 && dt != LUNAR_DTYPE_BF16) return LUNAR_CUDA_EARG;
    if (num_tokens <= 0) return 0;
    size_t es = lunar_dtype_size(dt), row = (size_t)num_kv_heads * head_dim * es;
    size_t kp = (size_t)k_stride * es, vp = (size_t)v_stride * es;
    bool vec = row % 16 == 0 && kp % 16 == 0 && vp % 16 == 0 && aligned16(k_cache) &&
               aligned16(v_cache) && aligned16(k) && aligned16(v);
    k_kv_write<<<num_tokens, 128, 0, LUNAR_CUDA_STREAM(stream)>>>(
        (char *)k_cache, (char *)v_cache, (const char *)k, (const char *)v, slot_mapping, row, kp,
        vp, vec);
    return launch_status();
}
