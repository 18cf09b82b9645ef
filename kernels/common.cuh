/*
 * kernels/common.cuh — what every kernel file shares: f32 <-> storage conversions, 8-wide
 * vector loads and stores (16 bytes for 2-byte types), warp/block reductions, the dtype
 * dispatch that instantiates each kernel once per activation type, and launch checking.
 */
#ifndef LUNAR_KERNELS_COMMON_CUH
#define LUNAR_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

typedef __nv_bfloat16 bf16_t;
typedef __half f16_t;

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<f16_t>(f16_t x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<bf16_t>(bf16_t x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ f16_t from_f<f16_t>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16_t from_f<bf16_t>(float x) { return __float2bfloat16_rn(x); }

/* x rounded to T and back: the value a T tensor would hold. */
template <typename T> __device__ __forceinline__ float round_to(float x) { return to_f<T>(from_f<T>(x)); }

/* 8 consecutive elements; p must be aligned to 8 elements. */
template <typename T> __device__ __forceinline__ void load8(const T *p, float *f)
{
    if constexpr (sizeof(T) == 4) {
        float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
        f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
        f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
    } else {
        uint4 u = *reinterpret_cast<const uint4 *>(p);
        const T *e = reinterpret_cast<const T *>(&u);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = to_f<T>(e[i]);
    }
}

template <typename T> __device__ __forceinline__ void store8(T *p, const float *f)
{
    if constexpr (sizeof(T) == 4) {
        reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
    } else {
        uint4 u;
        T *e = reinterpret_cast<T *>(&u);
#pragma unroll
        for (int i = 0; i < 8; i++) e[i] = from_f<T>(f[i]);
        *reinterpret_cast<uint4 *>(p) = u;
    }
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[w] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0f;
    return warp_sum(v);
}

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

#define LUNAR_CUDA_STREAM(s) ((cudaStream_t)(s))

/* Runs the statement with T bound to the storage type of dt; other dtypes return EARG. */
#define LUNAR_DISPATCH(dt, ...)                                                     \
    switch (dt) {                                                                   \
    case LUNAR_DTYPE_F32: { typedef float T; __VA_ARGS__; } break;                  \
    case LUNAR_DTYPE_F16: { typedef f16_t T; __VA_ARGS__; } break;                  \
    case LUNAR_DTYPE_BF16: { typedef bf16_t T; __VA_ARGS__; } break;                \
    default: return LUNAR_CUDA_EARG;                                                \
    }

static inline int launch_status(void) { return (int)cudaGetLastError(); }

#endif
