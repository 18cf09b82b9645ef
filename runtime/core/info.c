/*
 * info.c — what this build is and which GPUs it sees (for `lunar version` and start-up logs).
 *
 * Without a CUDA driver or GPU every query answers "none" instead of failing: a CUDA build
 * must run its CPU backend on machines like CI's.
 */
#include "lunar.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

#ifdef LUNAR_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif
#ifdef LUNAR_HAVE_NCCL
#include <nccl.h>
#endif

const char *lunar_version(void) { return LUNAR_VERSION; }

const char *lunar_build_info(void)
{
    static char buf[512];
    char cuda_rt[32] = "null", cublas[32] = "null", nccl[32] = "null";
#ifdef LUNAR_HAVE_CUDA
    int v = 0;
    if (cudaRuntimeGetVersion(&v) == cudaSuccess)
        snprintf(cuda_rt, sizeof cuda_rt, "\"%d.%d\"", v / 1000, (v % 1000) / 10);
    int ma = 0, mi = 0, pa = 0;
    if (cublasGetProperty(MAJOR_VERSION, &ma) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(MINOR_VERSION, &mi) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(PATCH_LEVEL, &pa) == CUBLAS_STATUS_SUCCESS)
        snprintf(cublas, sizeof cublas, "\"%d.%d.%d\"", ma, mi, pa);
#endif
#ifdef LUNAR_HAVE_NCCL
    int nv = 0;
    if (ncclGetVersion(&nv) == ncclSuccess)
        snprintf(nccl, sizeof nccl, "\"%d.%d.%d\"", nv / 10000, (nv / 100) % 100, nv % 100);
#endif
    snprintf(buf, sizeof buf,
             "{\"version\":\"%s\",\"build_type\":\"%s\",\"cuda\":%s,\"cuda_runtime\":%s,"
             "\"cublas\":%s,\"nccl\":%s,\"compiler\":\"gcc %d.%d\"}",
             LUNAR_VERSION, LUNAR_BUILD_TYPE,
#ifdef LUNAR_HAVE_CUDA
             "true",
#else
             "false",
#endif
             cuda_rt, cublas, nccl, __GNUC__, __GNUC_MINOR__);
    return buf;
}

int lunar_cuda_driver_version(void)
{
#ifdef LUNAR_HAVE_CUDA
    int v = 0;
    if (cudaDriverGetVersion(&v) == cudaSuccess) return v;
#endif
    return 0;
}

int lunar_device_count(void)
{
#ifdef LUNAR_HAVE_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver or no GPU: not an error for a CPU run */
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

int lunar_device_get_info(int index, lunar_device_info_t *out)
{
    if (!out) return lunar_error(LUNAR_EINVAL, "lunar_device_get_info: out is NULL");
    memset(out, 0, sizeof *out);
    if (index < 0 || index >= lunar_device_count())
        return lunar_error(LUNAR_ERANGE, "no CUDA device %d (%d visible)", index, lunar_device_count());
#ifdef LUNAR_HAVE_CUDA
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, index) != cudaSuccess)
        return lunar_error(LUNAR_EDEVICE, "cudaGetDeviceProperties(%d) failed", index);
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->index = index;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->total_bytes = p.totalGlobalMem;
    out->multiprocessors = p.multiProcessorCount;
    int prev = 0;
    cudaGetDevice(&prev);
    size_t fr = 0, tot = 0;
    if (cudaSetDevice(index) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
        out->free_bytes = fr;
    cudaSetDevice(prev);
    return LUNAR_OK;
#else
    return lunar_error(LUNAR_EUNSUPPORTED, "built without CUDA");
#endif
}
