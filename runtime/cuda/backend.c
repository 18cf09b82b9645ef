/*
 * cuda/backend.c — the CUDA backend: backend.h's op table on one GPU.
 *
 * Activations and the KV cache are kept in the model's dtype (lunar_model_dtype: the --dtype
 * the model was loaded with, so f32 checkpoints run in bf16 on a GPU unless --dtype float32
 * is given). prepare() learns that dtype, uploads every matrix once (the loader has already
 * converted them, and checkpoints go through pinned staging), and later finds the device copy
 * by the host tensor's pointer. GEMMs go to cuBLAS (cublasGemmEx, f32 accumulation; in the f32
 * mode the pedantic f32 compute type, so no TF32 and results compare tightly with the CPU
 * backend), except one-token GEMMs in 16-bit modes (lunar_cuda_be_gemv); attention is
 * kernels/attention.cu, sampling kernels/sampling.cu, everything else a kernel of
 * kernels/cuda_backend_ops.cu. All work is issued on one stream; the first failure is kept
 * with the op's name and reported by end_step(), as backend.h asks. The step's metadata is
 * packed into one pinned buffer and copied in one transfer per step.
 */
#include "backend/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/pool.h"
#include "core/error.h"
#include "cuda_backend_ops.h"
#include "kernels.h"


typedef struct dev_weight {
    const lunar_tensor_t *t;
    void *d;
    int owner;            /* d is its allocation (the first tensor of a fused group) */
} dev_weight_t;

#define MAX_GRAPHS 64       /* decode shapes kept (tokens x block-table width) */
#define GRAPH_MAX_TOKENS 256 /* decode steps up to this many sequences run from graphs */
#define BLAS_WS_BYTES (32u << 20)
#define FUSE_MAX_T 256      /* gemm_multi fuses a group's GEMMs up to this many tokens */
enum { G_EAGER, G_PENDING, G_ARMED, G_CAPTURING, G_REPLAY };

typedef struct cuda_backend {
    lunar_backend_t be;   /* first: a lunar_backend_t* is a cuda_backend_t* */
    int device, max_k, max_tokens;
    cudaStream_t stream;
    cublasHandle_t blas;
    dev_weight_t *w;      /* uploaded matrices, looked up by host tensor */
    int nw, capw, w_sorted; /* w_sorted: w[] in tensor-pointer order (after prepare) */
    size_t weight_bytes;
    const lunar_model_t *model; /* the one prepare() uploaded (its dummy tensors' generators) */
    int dummy_made;       /* tensors generated in place rather than uploaded */
    size_t upload_total;  /* bytes prepare() will upload (the progress bar's 100%) */
    double upload_t0;
    int upload_pct;       /* last percentage drawn; -1: no bar (stderr not a terminal) */
    struct stage *stage;  /* during prepare(): pinned staging of checkpoint uploads (NULL: plain copies) */

    /* this step's metadata: pinned host staging and its device copy, same layout */
    char *hmeta, *dmeta;
    size_t meta_cap;
    int32_t *ids, *pos, *seq_of, *tables, *lidx;  /* device pointers into dmeta */
    int32_t *qstart, *lens;
    int64_t *slot;
    int max_blocks, num_logits, num_seqs;
    void *gather;         /* [max_tokens][max_k] act: rows picked for the logits */
    void *attn_ws;        /* lunar_cuda_attention's workspace, sized in prepare for any step */
    void *fuse;           /* [FUSE_MAX_T][widest stacked group] act: gemm_multi's output before its split */
    size_t fuse_elems;
    size_t attn_ws_bytes;

    /* CUDA graphs of decode steps (see graph_enter): one per (tokens, table width) shape */
    int graphs_on;        /* off with --enforce-eager or LUNAR_CUDA_GRAPHS=0 */
    int mode, cur;        /* G_EAGER..G_REPLAY; the graph of this step */
    struct {
        int T, max_blocks, bad;
        long used;        /* step count at the last replay: the least recent is replaced */
        cudaGraphExec_t exec;
    } graph[MAX_GRAPHS];
    int ngraphs, gslot;   /* graphs held; where the capture in progress goes */
    long steps;
    void *blas_ws;        /* cuBLAS workspace: fixed, so captured GEMMs allocate nothing */

    int attn_generic;     /* LUNAR_CUDA_ATTN=generic: the plain attention kernel always (tests) */
    int gemv_off;         /* LUNAR_CUDA_GEMV=0: cuBLAS for every GEMM */
    struct prof *prof;    /* LUNAR_CUDA_PROFILE=1 */
    struct {              /* the sample op (cuda_sample): buffers grown to the largest step seen */
        char *hin, *din;  /* pinned staging of the rows' params and penalty lists, and its device copy */
        char *hout, *dout;/* tokens and logprobs: device results and their pinned host copy */
        float *work;      /* [rows][vocab] the sampler's scratch */
        size_t in_cap, out_cap, work_cap;
    } smp;
    int err;              /* first failure of the step (sticky) */
    char errmsg[256];
} cuda_backend_t;

#define CB(be) ((cuda_backend_t *)(be))

/* LUNAR_CUDA_PROFILE=1: each op (and host copy) of every step is timed with CUDA events, CUDA
 * graphs off so each op is its own launches, and a table of time per op and shape, with the
 * bytes the op must move where that is known, goes to stderr when the backend is freed: where
 * a step's time goes, on machines without nsys. The interval of an op runs from its event to
 * the next op's, so host launch gaps are charged to the op that waited. */
#define PROF_EVENTS 4096
#define PROF_ROWS 96
typedef struct prof {
    cudaEvent_t ev[PROF_EVENTS + 1];
    short row_of[PROF_EVENTS];
    int n, created, nrows;
    long steps;
    struct {
        char key[56];
        double ms, bytes;
        long calls;
    } row[PROF_ROWS];
} prof_t;

static void prof_op(cuda_backend_t *c, double bytes, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void prof_op(cuda_backend_t *c, double bytes, const char *fmt, ...)
{
    prof_t *p = c->prof;
    if (!p || p->n >= PROF_EVENTS) return;
    char key[56];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    int r = 0;
    while (r < p->nrows && strcmp(p->row[r].key, key)) r++;
    if (r == p->nrows) {
        if (r == PROF_ROWS) return;
        snprintf(p->row[r].key, sizeof p->row[r].key, "%s", key);
        p->nrows++;
    }
    while (p->created <= p->n + 1 && p->created <= PROF_EVENTS)
        if (cudaEventCreate(&p->ev[p->created++]) != cudaSuccess) return;
    p->row[r].bytes += bytes;
    p->row_of[p->n] = (short)r;
    cudaEventRecord(p->ev[p->n++], c->stream);
}

static void prof_step_end(cuda_backend_t *c)
{
    prof_t *p = c->prof;
    if (!p || !p->n) return;
    cudaEventRecord(p->ev[p->n], c->stream);
    cudaEventSynchronize(p->ev[p->n]);
    for (int i = 0; i < p->n; i++) {
        float ms = 0;
        cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]);
        p->row[p->row_of[i]].ms += ms, p->row[p->row_of[i]].calls++;
    }
    p->n = 0, p->steps++;
}

static void prof_report(cuda_backend_t *c)
{
    prof_t *p = c->prof;
    if (!p) return;
    if (p->steps) {
        double total = 0;
        for (int r = 0; r < p->nrows; r++) total += p->row[r].ms;
        fprintf(stderr, "# LUNAR_CUDA_PROFILE: %ld steps, %.3f ms per step\n%-56s %8s %9s %9s %8s %6s\n", p->steps,
                total / p->steps, "op", "calls/st", "ms/step", "us/call", "GB/s", "%");
        for (int k = 0; k < p->nrows; k++) { /* by time, a selection sort over a few rows */
            int best = -1;
            for (int r = 0; r < p->nrows; r++)
                if (p->row[r].calls >= 0 && (best < 0 || p->row[r].ms > p->row[best].ms)) best = r;
            if (best < 0 || !p->row[best].calls) break;
            double ms = p->row[best].ms;
            fprintf(stderr, "%-56s %8.1f %9.3f %9.1f %8.0f %6.1f\n", p->row[best].key,
                    (double)p->row[best].calls / p->steps, ms / p->steps, 1e3 * ms / p->row[best].calls,
                    p->row[best].bytes > 0 ? p->row[best].bytes / (ms * 1e6) : 0.0, 100 * ms / total);
            p->row[best].calls = -1;
        }
    }
    for (int i = 0; i < p->created; i++) cudaEventDestroy(p->ev[i]);
    free(p);
    c->prof = NULL;
}

static void fail(cuda_backend_t *c, const char *op, const char *what)
{
    if (c->err) return;
    c->err = 1;
    snprintf(c->errmsg, sizeof c->errmsg, "cuda backend: %s: %s", op, what);
}

static void check(cuda_backend_t *c, const char *op, int rc)
{
    if (!rc) return;
    fail(c, op, rc == LUNAR_CUDA_BE_EARG ? "arguments outside what the kernel supports"
                                          : cudaGetErrorString((cudaError_t)rc));
}

static void check_blas(cuda_backend_t *c, const char *op, cublasStatus_t st)
{
    if (st != CUBLAS_STATUS_SUCCESS) fail(c, op, cublasGetStatusString(st));
}

static void graph_flush(cuda_backend_t *c);
static void sample_free(cuda_backend_t *c);

static void stage_close(cuda_backend_t *c);

static void cuda_free_all(lunar_backend_t *be)
{
    cuda_backend_t *c = CB(be);
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    stage_close(c);
    prof_report(c);
    for (int i = 0; i < c->nw; i++)
        if (c->w[i].owner) cudaFree(c->w[i].d);
    free(c->w);
    if (c->hmeta) cudaFreeHost(c->hmeta);
    if (c->dmeta) cudaFree(c->dmeta);
    if (c->gather) cudaFree(c->gather);
    if (c->attn_ws) cudaFree(c->attn_ws);
    if (c->fuse) cudaFree(c->fuse);
    sample_free(c);
    for (int i = 0; i < c->ngraphs; i++) cudaGraphExecDestroy(c->graph[i].exec);
    if (c->blas_ws) cudaFree(c->blas_ws);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static void *cuda_alloc(lunar_backend_t *be, size_t bytes)
{
    cuda_backend_t *c = CB(be);
    graph_flush(c);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        lunar_log(LUNAR_LOG_ERROR, "cuda", "out of GPU memory allocating %.1f MiB (%.1f MiB free of %.1f MiB); "
                  "lower --max-model-len, --max-num-seqs, --max-num-batched-tokens or --kv-cache-memory-bytes",
                  bytes / 1048576.0, fr / 1048576.0, tot / 1048576.0);
        return NULL;
    }
    if (cudaMemsetAsync(p, 0, bytes, c->stream) != cudaSuccess || cudaStreamSynchronize(c->stream) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    be->alloc_bytes += bytes;
    return p;
}

static void graph_drop_all(cuda_backend_t *c);

static void cuda_dealloc(lunar_backend_t *be, void *p)
{
    graph_flush(CB(be));
    cudaStreamSynchronize(CB(be)->stream);
    /* a graph may read p (the KV cache a resize frees): none survives it (backend.h) */
    graph_drop_all(CB(be));
    cudaFree(p);
}

static void cuda_copy_in(lunar_backend_t *be, void *dst, const void *src, size_t bytes)
{
    cuda_backend_t *c = CB(be);
    if (!bytes) return;
    graph_flush(c);
    prof_op(c, (double)bytes, "copy_in");
    /* from pageable memory the call returns once the source is staged, so the caller may
     * reuse its buffer at once */
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) fail(c, "copy_in", cudaGetErrorString(e));
}

static void cuda_copy_out(lunar_backend_t *be, void *dst, const void *src, size_t bytes)
{
    cuda_backend_t *c = CB(be);
    if (!bytes) return;
    graph_flush(c);
    prof_op(c, (double)bytes, "copy_out");
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) fail(c, "copy_out", cudaGetErrorString(e));
}

static int by_tensor(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const dev_weight_t *)a)->t, y = (uintptr_t)((const dev_weight_t *)b)->t;
    return (x > y) - (x < y);
}

/* The device copy of t. Every eager GEMM and embed looks its weight up (7 x layers a step), so
 * after prepare the table is sorted and searched in log2(n) steps instead of scanned. */
static void *find_weight(cuda_backend_t *c, const lunar_tensor_t *t)
{
    if (!c->w_sorted) {
        for (int i = 0; i < c->nw; i++)
            if (c->w[i].t == t) return c->w[i].d;
        return NULL;
    }
    int lo = 0, hi = c->nw;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if ((uintptr_t)c->w[mid].t < (uintptr_t)t) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->nw && c->w[lo].t == t ? c->w[lo].d : NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The upload progress bar, on stderr when it is a terminal (vLLM's loading bar's place):
 * percentage, GiB so far and the transfer rate, redrawn each whole percent. */
static void upload_progress(cuda_backend_t *c)
{
    if (c->upload_pct < 0 || !c->upload_total) return;
    int pct = (int)(100.0 * c->weight_bytes / c->upload_total);
    if (pct == c->upload_pct) return;
    c->upload_pct = pct;
    double dt = now_s() - c->upload_t0;
    char bar[41];
    for (int i = 0; i < 40; i++) bar[i] = i < pct * 40 / 100 ? '#' : ' ';
    bar[40] = 0;
    fprintf(stderr, "\rUploading weights to GPU %d: %3d%% |%s| %.2f/%.2f GiB, %.1f GiB/s%s", c->device, pct, bar,
            c->weight_bytes / 1073741824.0, c->upload_total / 1073741824.0,
            dt > 0 ? c->weight_bytes / 1073741824.0 / dt : 0.0, pct >= 100 ? "\n" : "");
    fflush(stderr);
}

/* Checkpoint tensors reach the GPU through two pinned staging buffers: while the DMA of one
 * runs, a few threads copy the next piece of the tensor (mmap'd file pages, touched here for
 * the first time, or the loader's converted copy) into the other. A plain cudaMemcpy from
 * pageable memory stages through the driver's buffers one piece at a time on the calling
 * thread: 6.8 GiB/s for a Llama-3-8B in bf16 from the page cache (H100, 2.2 s for 15 GiB). */
#define STAGE_BYTES (64u << 20)
#define STAGE_THREADS 8
typedef struct stage {
    char *buf[2];
    cudaEvent_t done[2];  /* the DMA out of buf[i] finished */
    int next;
    pool_t *pool;
} stage_t;

static void stage_close(cuda_backend_t *c)
{
    stage_t *s = c->stage;
    if (!s) return;
    for (int i = 0; i < 2; i++) {
        if (s->done[i]) cudaEventSynchronize(s->done[i]), cudaEventDestroy(s->done[i]);
        if (s->buf[i]) cudaFreeHost(s->buf[i]);
    }
    if (s->pool) pool_free(s->pool);
    free(s);
    c->stage = NULL;
}

/* Staging for prepare(); when pinned memory, events or threads cannot be had the uploads fall
 * back to plain copies (slower, not wrong). */
static void stage_open(cuda_backend_t *c)
{
    stage_t *s = calloc(1, sizeof *s);
    if (!(c->stage = s)) return;
    int ok = 1;
    for (int i = 0; i < 2 && ok; i++)
        ok = cudaHostAlloc((void **)&s->buf[i], STAGE_BYTES, cudaHostAllocDefault) == cudaSuccess &&
             cudaEventCreateWithFlags(&s->done[i], cudaEventDisableTiming) == cudaSuccess;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (ok) ok = !pool_create(cores > STAGE_THREADS ? STAGE_THREADS : cores > 0 ? (int)cores : 1, &s->pool);
    if (!ok) {
        (void)cudaGetLastError();
        stage_close(c);
        lunar_log(LUNAR_LOG_DEBUG, "cuda", "no pinned staging for the weight upload: plain copies");
    }
}

typedef struct { char *dst; const char *src; size_t n; int parts; } stage_copy_t;
static void stage_part(void *ctx, int i, int thread)
{
    stage_copy_t *t = ctx;
    (void)thread;
    size_t a = t->n * (size_t)i / (size_t)t->parts, b = t->n * (size_t)(i + 1) / (size_t)t->parts;
    memcpy(t->dst + a, t->src + a, b - a);
}

/* n bytes from host src to device dst, on the stream; complete once stage_close() returns or
 * the stream is synchronized. */
static cudaError_t stage_upload(cuda_backend_t *c, char *dst, const char *src, size_t n)
{
    stage_t *s = c->stage;
    if (!s) return cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
    for (size_t off = 0; off < n; off += STAGE_BYTES) {
        size_t len = n - off < STAGE_BYTES ? n - off : STAGE_BYTES;
        int b = s->next;
        s->next ^= 1;
        cudaError_t e = cudaEventSynchronize(s->done[b]); /* its previous DMA is done */
        if (e != cudaSuccess) return e;
        stage_copy_t t = {s->buf[b], src + off, len, 4 * pool_threads(s->pool)};
        pool_run(s->pool, stage_part, &t, t.parts, 1e12);
        e = cudaMemcpyAsync(dst + off, s->buf[b], len, cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) e = cudaEventRecord(s->done[b], c->stream);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

/* Uploads tensors ts[0..n) (NULLs skipped) into ONE allocation, back to back in that order, so
 * that a group with the same input (q/k/v, gate/up) is one [sum N][K] matrix for a single
 * GEMM while each tensor is still found alone by its pointer. */
static int upload_group(cuda_backend_t *c, const lunar_tensor_t *const *ts, int n)
{
    size_t total = 0;
    int count = 0;
    for (int i = 0; i < n; i++) {
        const lunar_tensor_t *t = ts[i];
        if (!t || find_weight(c, t)) continue; /* absent, or already there (a tied lm_head) */
        if (t->dtype != c->be.act_dtype)
            return lunar_error(LUNAR_EUNSUPPORTED, "cuda backend: tensor %s is %s, the model runs in %s", t->name,
                               lunar_dtype_name(t->dtype), lunar_dtype_name(c->be.act_dtype));
        lunar_dummy_params_t dp;
        if (!t->data && !lunar_model_dummy_params(c->model, t, &dp))
            return lunar_error(LUNAR_EINVAL, "cuda backend: tensor %s has no data (a config-only load?)", t->name);
        total += t->nbytes, count++;
    }
    if (!count) return 0;
    while (c->nw + count > c->capw) {
        int cap = c->capw ? 2 * c->capw : 64;
        dev_weight_t *w = realloc(c->w, sizeof *w * (size_t)cap);
        if (!w) return lunar_error(LUNAR_ENOMEM, "cuda backend: out of host memory");
        c->w = w, c->capw = cap;
    }
    char *d = NULL;
    if (cudaMalloc((void **)&d, total) != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return lunar_error(LUNAR_ENOMEM, "cuda backend: out of GPU memory uploading %s (%.2f GiB of weights "
                           "uploaded, %.2f GiB free of %.2f GiB): use --dtype bfloat16 or a smaller model",
                           ts[0] ? ts[0]->name : "weights", c->weight_bytes / 1073741824.0, fr / 1073741824.0,
                           tot / 1073741824.0);
    }
    size_t off = 0;
    int first = 1;
    for (int i = 0; i < n; i++) {
        const lunar_tensor_t *t = ts[i];
        if (!t || find_weight(c, t)) continue;
        lunar_dummy_params_t dp;
        cudaError_t e = cudaSuccess;
        if (t->data) {
            e = stage_upload(c, d + off, (const char *)t->data, t->nbytes);
        } else if (lunar_model_dummy_params(c->model, t, &dp)) { /* made here, not uploaded */
            int rc = lunar_cuda_be_dummy_fill(d + off, t->dtype, dp.hash, t->nbytes / lunar_dtype_size(t->dtype),
                                              dp.scale, dp.is_norm, c->stream);
            e = rc == LUNAR_CUDA_BE_EARG ? cudaErrorInvalidValue : (cudaError_t)rc;
            c->dummy_made++;
            if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        }
        if (e != cudaSuccess) {
            if (first) cudaFree(d);
            return lunar_error(LUNAR_EDEVICE, "cuda backend: uploading %s: %s", t->name, cudaGetErrorString(e));
        }
        c->w[c->nw++] = (dev_weight_t){t, d + off, first};
        c->weight_bytes += t->nbytes;
        upload_progress(c);
        off += t->nbytes, first = 0;
    }
    return 0;
}

static int upload(cuda_backend_t *c, const lunar_tensor_t *t) { return upload_group(c, &t, 1); }

static cudaDataType_t cuda_type(lunar_dtype_t dt)
{
    return dt == LUNAR_DTYPE_BF16 ? CUDA_R_16BF : dt == LUNAR_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* y[T][N] (ytype) = x[T][K] . W[N][K]^T with W's device copy d: in cuBLAS's column-major terms
 * y^T = W^T(op T) . x^T. */
static void gemm_w(cuda_backend_t *c, const char *op, void *y, cudaDataType_t ytype, const void *x, int T,
                   const lunar_tensor_t *W, const void *d)
{
    int N = (int)W->shape[0], K = (int)W->shape[1];
    float one = 1.0f, zero = 0.0f;
    /* one token (decode at batch 1): the weight-streaming kernel, where it applies */
    if (T == 1 && !c->gemv_off && c->be.act_dtype != LUNAR_DTYPE_F32) {
        int rc = lunar_cuda_be_gemv(y, ytype == CUDA_R_32F, x, d, N, K, c->be.act_dtype, c->stream);
        if (rc != LUNAR_CUDA_BE_EARG) {
            check(c, op, rc);
            return;
        }
    }
    cudaDataType_t at = cuda_type(c->be.act_dtype);
    cublasComputeType_t ct = c->be.act_dtype == LUNAR_DTYPE_F32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    check_blas(c, op, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, d, at, K, x, at, K, &zero, y,
                                   ytype, N, ct, CUBLAS_GEMM_DEFAULT));
}

static void gemm(cuda_backend_t *c, const char *op, void *y, cudaDataType_t ytype, const void *x, int T,
                 const lunar_tensor_t *W)
{
    const void *d = find_weight(c, W);
    if (!d) { fail(c, op, "weight not uploaded by prepare()"); return; }
    gemm_w(c, op, y, ytype, x, T, W, d);
}

static int cuda_prepare(lunar_backend_t *be, const lunar_model_t *m)
{
    cuda_backend_t *c = CB(be);
    lunar_dtype_t dt = lunar_model_dtype(m);
    if (dt != LUNAR_DTYPE_F32 && dt != LUNAR_DTYPE_F16 && dt != LUNAR_DTYPE_BF16)
        return lunar_error(LUNAR_EUNSUPPORTED, "cuda backend: weights in %s (float32, float16 or bfloat16 run)",
                           lunar_dtype_name(dt));
    if (c->nw)
        return lunar_error(LUNAR_ESTATE, "cuda backend: prepare() runs once per backend");
    be->act_dtype = be->kv_dtype = dt;
    cudaSetDevice(c->device);
    const lunar_model_config_t *cfg = lunar_model_config(m);
    const lunar_weights_t *w = lunar_model_weights(m);
    c->upload_total = w->embed->nbytes + (w->lm_head && w->lm_head != w->embed ? w->lm_head->nbytes : 0);
    for (int l = 0; l < cfg->num_layers; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        const lunar_tensor_t *mats[] = {lw->wq, lw->wk, lw->wv, lw->wo, lw->w_gate, lw->w_up, lw->w_down};
        for (int i = 0; i < 7; i++) c->upload_total += mats[i] ? mats[i]->nbytes : 0;
    }
    c->upload_pct = isatty(2) && lunar_log_get_level() <= LUNAR_LOG_INFO ? 0 : -1;
    c->model = m;
    c->upload_t0 = now_s();
    if (w->embed->data) stage_open(c); /* a checkpoint to copy (dummy weights are made on the GPU) */
    int rc = upload(c, w->embed);
    if (!rc) rc = upload(c, w->lm_head);
    for (int l = 0; l < cfg->num_layers && !rc; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        /* fused at load: one [q+k+v][dim] and one [gate+up][dim] matrix (see cuda_gemm_multi) */
        const lunar_tensor_t *qkv[] = {lw->wq, lw->wk, lw->wv}, *gu[] = {lw->w_gate, lw->w_up};
        rc = upload_group(c, qkv, 3);
        if (!rc) rc = upload_group(c, gu, 2);
        if (!rc) rc = upload(c, lw->wo);
        if (!rc) rc = upload(c, lw->w_down);
    }
    stage_close(c); /* waits for the last staged copies */
    if (!rc) {
        cudaError_t e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess)
            rc = lunar_error(LUNAR_EDEVICE, "cuda backend: uploading the weights: %s", cudaGetErrorString(e));
    }
    if (rc) return rc;
    qsort(c->w, (size_t)c->nw, sizeof *c->w, by_tensor);
    c->w_sorted = 1;
    be->weight_bytes = c->weight_bytes;
    c->gather = cuda_alloc(be, (size_t)c->max_tokens * c->max_k * lunar_dtype_size(dt));
    if (!c->gather) return lunar_error(LUNAR_ENOMEM, "cuda backend: out of GPU memory for the logits scratch");
    /* the attention workspace for the worst step: its split count only falls as steps grow
     * past the GPU's fill, so the largest need over every token count bounds any context */
    for (int T = 1; T <= c->max_tokens; T++) {
        size_t n = lunar_cuda_attention_workspace_size(T, T, cfg->num_heads, cfg->num_kv_heads, cfg->head_dim,
                                                       1 << 30);
        if (n > c->attn_ws_bytes) c->attn_ws_bytes = n;
    }
    c->attn_ws = cuda_alloc(be, c->attn_ws_bytes);
    size_t widest = 0; /* the stacked groups' widths, as uploaded */
    for (int l = 0; l < cfg->num_layers; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        size_t g3 = 0, g2 = 0;
        const lunar_tensor_t *q3[] = {lw->wq, lw->wk, lw->wv}, *g[] = {lw->w_gate, lw->w_up};
        for (int i = 0; i < 3; i++) g3 += q3[i] ? (size_t)q3[i]->shape[0] : 0;
        for (int i = 0; i < 2; i++) g2 += g[i] ? (size_t)g[i]->shape[0] : 0;
        if (g3 > widest) widest = g3;
        if (g2 > widest) widest = g2;
    }
    c->fuse_elems = (size_t)(c->max_tokens < FUSE_MAX_T ? c->max_tokens : FUSE_MAX_T) * widest;
    if (c->attn_ws) c->fuse = cuda_alloc(be, c->fuse_elems * lunar_dtype_size(dt));
    if (!c->fuse) c->fuse_elems = 0;
    if (!c->attn_ws) return lunar_error(LUNAR_ENOMEM, "cuda backend: out of GPU memory for the attention workspace");
    double dt_s = now_s() - c->upload_t0;
    lunar_log(LUNAR_LOG_INFO, "cuda", "weights: %.2f GiB in %d tensors (%s) %s in %.2f s (%.1f GiB/s)",
              c->weight_bytes / 1073741824.0, c->nw, lunar_dtype_name(dt),
              c->dummy_made ? "made on the GPU (--load-format dummy)" : "uploaded", dt_s,
              dt_s > 0 ? c->weight_bytes / 1073741824.0 / dt_s : 0.0);
    return 0;
}

/* CUDA graphs. A decode step (one token per sequence) issues the same ~13 launches per layer
 * with the same arguments whenever its shape is the same: every buffer is the runner's, fixed
 * since start-up, and the step's metadata sits at fixed device addresses (dmeta). So the first
 * step of a shape is captured, from its first op to its logits, and later steps of that shape
 * replay the graph: one launch instead of ~420, which is most of what separated decode from
 * the memory roofline. Host work between ops (the RoPE table, the metadata copy) happens before
 * the first op and stays outside the graph. Only a step that starts with embed (the runner's
 * order) is captured or replayed; any other use of the table between begin_step and end_step
 * runs eagerly, and a copy in the middle of a capture launches what was captured so far. */
static void graph_drop_all(cuda_backend_t *c)
{
    for (int i = 0; i < c->ngraphs; i++) cudaGraphExecDestroy(c->graph[i].exec);
    c->ngraphs = 0;
}

static void graph_choose(cuda_backend_t *c, const lunar_batch_t *b)
{
    c->mode = G_EAGER;
    if (!c->graphs_on || b->num_tokens != b->num_seqs || b->num_tokens > GRAPH_MAX_TOKENS ||
        b->num_logits != b->num_tokens)
        return;
    for (int i = 0; i < c->ngraphs; i++)
        if (c->graph[i].T == b->num_tokens && c->graph[i].max_blocks == c->max_blocks) {
            if (!c->graph[i].bad) c->mode = G_ARMED, c->cur = i, c->graph[i].used = c->steps;
            return;
        }
    /* a new shape: a free slot, else the least recently replayed graph makes room */
    c->gslot = c->ngraphs;
    if (c->gslot == MAX_GRAPHS) {
        c->gslot = 0;
        for (int i = 1; i < MAX_GRAPHS; i++)
            if (c->graph[i].used < c->graph[c->gslot].used) c->gslot = i;
    }
    c->mode = G_PENDING;
}

/* At the top of every op: 1 when the op is to be skipped (a graph will replay it). */
static int graph_enter_op(cuda_backend_t *c, int is_embed)
{
    if (c->mode == G_REPLAY) return 1;
    if (c->mode == G_ARMED) {
        c->mode = is_embed ? G_REPLAY : G_EAGER;
        return c->mode == G_REPLAY;
    }
    if (c->mode == G_PENDING) {
        cudaError_t e = is_embed ? cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal)
                                 : cudaErrorNotReady;
        c->mode = e == cudaSuccess ? G_CAPTURING : G_EAGER;
        if (e != cudaSuccess) (void)cudaGetLastError();
    }
    return 0;
}
#define graph_enter(c) graph_enter_op((c), 0)

/* After the logits op: ends a capture (keeping the graph only when the whole step was one
 * logits call, as the key assumes) and launches the step's graph. */
static void graph_leave(cuda_backend_t *c, int whole)
{
    cudaGraphExec_t exec = NULL;
    if (c->mode == G_CAPTURING) {
        cudaGraph_t g = NULL;
        cudaError_t e = cudaStreamEndCapture(c->stream, &g);
        if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, g, 0);
        if (g) cudaGraphDestroy(g);
        if (e != cudaSuccess) {
            fail(c, "graph capture", cudaGetErrorString(e));
            c->mode = G_EAGER;
            return;
        }
        int i = c->gslot;
        if (i == c->ngraphs) c->ngraphs++;
        else cudaGraphExecDestroy(c->graph[i].exec);
        c->graph[i].used = c->steps;
        c->graph[i].T = c->num_logits;
        c->graph[i].max_blocks = c->max_blocks;
        c->graph[i].bad = !whole || c->err;
        c->graph[i].exec = exec;
    } else if (c->mode == G_REPLAY) {
        exec = c->graph[c->cur].exec;
    } else {
        return;
    }
    c->mode = G_EAGER;
    cudaError_t e = cudaGraphLaunch(exec, c->stream);
    if (e != cudaSuccess) fail(c, "graph launch", cudaGetErrorString(e));
}

/* Before a copy or an allocation, which cannot join a graph: a capture in progress is ended and
 * what it holds runs now (the shape is not kept); a replayed step must not be interrupted. */
static void graph_flush(cuda_backend_t *c)
{
    if (c->mode == G_CAPTURING) {
        graph_leave(c, 0);
    } else if (c->mode == G_REPLAY) {
        fail(c, "graph", "a copy between the ops of a step replayed from a CUDA graph");
        c->mode = G_EAGER;
    }
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

static int cuda_begin_step(lunar_backend_t *be, const lunar_batch_t *b)
{
    cuda_backend_t *c = CB(be);
    if (c->err) return lunar_error(LUNAR_EDEVICE, "%s", c->errmsg);
    if (b->num_tokens > c->max_tokens)
        return lunar_error(LUNAR_ERANGE, "cuda backend: %d tokens in a step sized for %d", b->num_tokens,
                           c->max_tokens);
    if (b->num_logits > c->max_tokens)
        return lunar_error(LUNAR_ERANGE, "cuda backend: %d logits rows in a step sized for %d", b->num_logits,
                           c->max_tokens);
    cudaSetDevice(c->device);
    /* a decode step comes with its graph shape: batch bucket and block-table width (the
     * runner's pad_decode) */
    int T = b->num_tokens, W = b->max_blocks_per_seq;
    c->steps++;
    size_t o_ids = 0, o_pos = align16(o_ids + 4 * (size_t)T), o_seq = align16(o_pos + 4 * (size_t)T);
    size_t o_slot = align16(o_seq + 4 * (size_t)T), o_lidx = align16(o_slot + 8 * (size_t)T);
    size_t o_tab = align16(o_lidx + 4 * (size_t)(b->num_logits > 0 ? b->num_logits : 1));
    size_t o_qs = align16(o_tab + 4 * (size_t)b->num_seqs * W);
    size_t o_lens = align16(o_qs + 4 * (size_t)(b->num_seqs + 1));
    size_t total = align16(o_lens + 4 * (size_t)b->num_seqs);
    if (total > c->meta_cap) {
        /* grows to the largest step seen; the previous step's copy is done (end_step waited) */
        if (c->hmeta) cudaFreeHost(c->hmeta);
        if (c->dmeta) cudaFree(c->dmeta);
        c->hmeta = NULL, c->dmeta = NULL, c->meta_cap = 0;
        graph_drop_all(c); /* they read the old metadata addresses */
        size_t cap = total * 2;
        if (cudaMallocHost((void **)&c->hmeta, cap) != cudaSuccess || cudaMalloc((void **)&c->dmeta, cap) != cudaSuccess) {
            (void)cudaGetLastError();
            return lunar_error(LUNAR_ENOMEM, "cuda backend: out of memory for %zu bytes of step metadata", cap);
        }
        c->meta_cap = cap;
    }
    char *h = c->hmeta;
    memcpy(h + o_ids, b->token_ids, 4 * (size_t)T);
    memcpy(h + o_pos, b->positions, 4 * (size_t)T);
    int32_t *seq_of = (int32_t *)(h + o_seq);
    for (int s = 0; s < b->num_seqs; s++)
        for (int t = b->query_start[s]; t < b->query_start[s + 1]; t++) seq_of[t] = s;
    memcpy(h + o_slot, b->slot_mapping, 8 * (size_t)T);
    if (b->num_logits > 0) memcpy(h + o_lidx, b->logits_indices, 4 * (size_t)b->num_logits);
    memcpy(h + o_tab, b->block_tables, 4 * (size_t)b->num_seqs * W);
    memcpy(h + o_qs, b->query_start, 4 * (size_t)(b->num_seqs + 1));
    memcpy(h + o_lens, b->seq_lens, 4 * (size_t)b->num_seqs);
    cudaError_t e = cudaMemcpyAsync(c->dmeta, h, total, cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) return lunar_error(LUNAR_EDEVICE, "cuda backend: step metadata: %s", cudaGetErrorString(e));
    c->ids = (int32_t *)(c->dmeta + o_ids);
    c->pos = (int32_t *)(c->dmeta + o_pos);
    c->seq_of = (int32_t *)(c->dmeta + o_seq);
    c->slot = (int64_t *)(c->dmeta + o_slot);
    c->lidx = (int32_t *)(c->dmeta + o_lidx);
    c->tables = (int32_t *)(c->dmeta + o_tab);
    c->qstart = (int32_t *)(c->dmeta + o_qs);
    c->lens = (int32_t *)(c->dmeta + o_lens);
    c->num_seqs = b->num_seqs;
    c->max_blocks = W;
    c->num_logits = b->num_logits;
    graph_choose(c, b);
    return 0;
}

static int cuda_end_step(lunar_backend_t *be)
{
    cuda_backend_t *c = CB(be);
    graph_flush(c); /* a step that never reached its logits */
    c->mode = G_EAGER;
    /* the pinned staging is rewritten by the next begin_step: wait for this step first */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) fail(c, "end_step", cudaGetErrorString(e));
    prof_step_end(c);
    if (c->err) return lunar_error(LUNAR_EDEVICE, "%s", c->errmsg);
    return 0;
}

static void cuda_embed(lunar_backend_t *be, void *x, const lunar_batch_t *b, const lunar_tensor_t *E)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter_op(c, 1)) return;
    prof_op(c, 0, "embed");
    const void *d = find_weight(c, E);
    if (!d) {
        fail(c, "embed", "embedding table not uploaded by prepare()");
        return;
    }
    check(c, "embed", lunar_cuda_be_embed(x, d, c->ids, b->num_tokens, (int)E->shape[1], be->act_dtype, c->stream));
}

static void cuda_rmsnorm(lunar_backend_t *be, void *out, const void *x, int R, int dim, const float *w, float eps)
{
    if (graph_enter(CB(be))) return;
    prof_op(CB(be), 4.0 * R * dim, "rmsnorm %dx%d", R, dim);
    check(CB(be), "rmsnorm", lunar_cuda_be_rmsnorm(out, x, NULL, w, R, dim, eps, be->act_dtype, CB(be)->stream));
}

static void cuda_add_rmsnorm(lunar_backend_t *be, void *resid, const void *delta, void *out, int R, int dim,
                             const float *w, float eps)
{
    if (graph_enter(CB(be))) return;
    prof_op(CB(be), 8.0 * R * dim, "add_rmsnorm %dx%d", R, dim);
    check(CB(be), "add_rmsnorm",
          lunar_cuda_be_rmsnorm(out, delta, resid, w, R, dim, eps, be->act_dtype, CB(be)->stream));
}

static void gemm_one(cuda_backend_t *c, void *y, const void *x, int T, const lunar_tensor_t *W, const float *bias)
{
    gemm(c, "gemm", y, cuda_type(c->be.act_dtype), x, T, W);
    if (bias)
        check(c, "gemm bias", lunar_cuda_be_add_bias(y, bias, T, (int)W->shape[0], c->be.act_dtype, c->stream));
}

static void cuda_gemm(lunar_backend_t *be, void *y, const void *x, int T, const lunar_tensor_t *W, const float *bias)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    prof_op(c, (double)W->nbytes, "gemm T=%d %dx%d", T, (int)W->shape[0], (int)W->shape[1]);
    gemm_one(c, y, x, T, W, bias);
}

/* The q/k/v and gate/up groups. When prepare() stacked the group's matrices (back to back in
 * one allocation, as upload_group leaves them) one GEMM reads them all: for one token straight
 * into the outputs when those are back to back too (the runner allocates them so), else into
 * a scratch [T][sum N] split into the outputs by one kernel; past FUSE_MAX_T tokens the GEMMs
 * are compute-bound and big, and run one per matrix. Small N is where fusing pays: cuBLAS
 * reads k's and v's [1024][4096] (Llama-3-8B) at a third of the bandwidth it gets on q's. At a
 * 4,096-token prefill, q/k/v fused in two chunks of 2,048 tokens and split took 634 us a layer
 * against 559 for the three GEMMs (H100, LUNAR_CUDA_PROFILE), so there they stay apart. */
static void cuda_gemm_multi(lunar_backend_t *be, void *const *ys, const void *x, int T,
                            const lunar_tensor_t *const *Ws, const float *const *biases, int n)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    if (c->prof) {
        double bytes = 0;
        int N = 0;
        for (int i = 0; i < n; i++) bytes += (double)Ws[i]->nbytes, N += (int)Ws[i]->shape[0];
        prof_op(c, bytes, "gemm_multi(%d) T=%d %dx%d", n, T, N, (int)Ws[0]->shape[1]);
    }
    const char *d0 = find_weight(c, Ws[0]);
    size_t esz = lunar_dtype_size(be->act_dtype), off = 0;
    int K = (int)Ws[0]->shape[1], Ntot = 0, stacked = d0 && n <= LUNAR_CUDA_BE_SEGS, adjacent = 1, any_bias = 0;
    lunar_cuda_be_segs_t o = {{0}, {0}, {0}, n};
    for (int i = 0; i < n && stacked; i++) {
        /* each matrix right after the previous one, as upload_group leaves a group */
        stacked = Ws[i]->shape[1] == K && find_weight(c, Ws[i]) == d0 + off;
        off += Ws[i]->nbytes;
        if (i && (char *)ys[i] != (char *)ys[i - 1] + (size_t)T * Ws[i - 1]->shape[0] * esz) adjacent = 0;
        o.y[i] = ys[i], o.bias[i] = biases[i], o.n[i] = (int)Ws[i]->shape[0];
        Ntot += o.n[i], any_bias |= biases[i] != NULL;
    }
    if (stacked && T == 1 && adjacent) {
        lunar_tensor_t all = *Ws[0];
        all.shape[0] = Ntot;
        gemm_w(c, "gemm", ys[0], cuda_type(be->act_dtype), x, T, &all, d0);
        for (int i = 0; i < n && any_bias; i++)
            if (biases[i])
                check(c, "gemm bias", lunar_cuda_be_add_bias(ys[i], biases[i], 1, o.n[i], be->act_dtype, c->stream));
        return;
    }
    if (stacked && T <= FUSE_MAX_T && (size_t)T * Ntot <= c->fuse_elems) {
        lunar_tensor_t all = *Ws[0];
        all.shape[0] = Ntot;
        gemm_w(c, "gemm", c->fuse, cuda_type(be->act_dtype), x, T, &all, d0);
        check(c, "gemm split", lunar_cuda_be_split_cols(&o, c->fuse, T, Ntot, be->act_dtype, c->stream));
        return;
    }
    for (int i = 0; i < n; i++) gemm_one(c, ys[i], x, T, Ws[i], biases[i]);
}

static void cuda_rope(lunar_backend_t *be, void *q, void *k, int T, int nq, int nk, int hd, int rot, const float *cs)
{
    if (graph_enter(CB(be))) return;
    prof_op(CB(be), 0, "rope");
    check(CB(be), "rope", lunar_cuda_be_rope(q, k, cs, T, nq, nk, hd, rot, be->act_dtype, CB(be)->stream));
}

static void cuda_silu_mul(lunar_backend_t *be, void *out, const void *gate, const void *up, long n)
{
    if (graph_enter(CB(be))) return;
    prof_op(CB(be), 6.0 * n, "silu_mul");
    check(CB(be), "silu_mul", lunar_cuda_be_silu_mul(out, gate, up, n, be->act_dtype, CB(be)->stream));
}

static void cuda_kv_write(lunar_backend_t *be, void *kc, void *vc, const void *k, const void *v,
                          const lunar_batch_t *b, int nk, int hd)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    prof_op(c, 0, "kv_write");
    check(c, "kv_write", lunar_cuda_be_kv_write(kc, vc, k, v, c->slot, b->num_tokens, nk, hd, be->act_dtype,
                                                be->kv_dtype, c->stream));
}

static void cuda_attention(lunar_backend_t *be, void *out, const void *q, const void *kc, const void *vc,
                           const lunar_batch_t *b, int nq, int nk, int hd, int block_size, int window, float scale)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    if (c->prof) { /* K and V bytes the step's queries read, each context once per kv head */
        double kv = 0;
        for (int s = 0; s < b->num_seqs; s++) kv += (double)b->seq_lens[s];
        prof_op(c, kv * 2 * nk * hd * lunar_dtype_size(be->kv_dtype), "attention T=%d seqs=%d", b->num_tokens,
                b->num_seqs);
    }
    /* kernels/attention.cu: flash-decoding split over the context with the GQA group sharing
     * each K/V read, and tensor-core flash attention for the prefills of the step; the plain
     * per-head kernel remains for head_dim not a multiple of 8 (and LUNAR_CUDA_ATTN=generic) */
    if (!c->attn_generic && hd % 8 == 0 && hd <= 256 && be->kv_dtype == be->act_dtype) {
        int qstride = nq * hd;
        /* prepare() sized the workspace for the model's heads; a caller with other shapes (the op
         * tests) grows it here, which ends a capture in progress (the step then runs eagerly) */
        size_t need = lunar_cuda_attention_workspace_size(b->num_tokens, c->num_seqs, nq, nk, hd,
                                                          c->max_blocks * block_size);
        if (need > c->attn_ws_bytes) {
            void *ws = cuda_alloc(be, need);
            if (!ws) { fail(c, "attention", "out of GPU memory for the attention workspace"); return; }
            cuda_dealloc(be, c->attn_ws);
            c->attn_ws = ws, c->attn_ws_bytes = need;
        }
        check(c, "attention", lunar_cuda_attention(out, q, kc, vc, c->qstart, c->lens, c->tables, c->max_blocks,
                                                   c->num_seqs, b->num_tokens, c->max_blocks * block_size, nq, nk,
                                                   hd, block_size, scale, window, qstride, qstride, c->attn_ws,
                                                   be->act_dtype, c->stream));
        return;
    }
    check(c, "attention", lunar_cuda_be_attention(out, q, kc, vc, c->seq_of, c->pos, c->tables, c->max_blocks,
                                                  b->num_tokens, nq, nk, hd, block_size, window, scale,
                                                  be->act_dtype, be->kv_dtype, c->stream));
}

static void cuda_logits(lunar_backend_t *be, float *out, const void *x, const lunar_batch_t *b, int i0, int n_rows,
                        const lunar_tensor_t *W)
{
    cuda_backend_t *c = CB(be);
    int dim = (int)W->shape[1];
    if (n_rows < 1) return;
    if (i0 + n_rows > c->num_logits) { fail(c, "logits", "rows past the step's logits_indices"); return; }
    if (!graph_enter(c)) {
        prof_op(c, (double)W->nbytes, "logits rows=%d %dx%d", n_rows, (int)W->shape[0], dim);
        check(c, "logits gather", lunar_cuda_be_gather_rows(c->gather, x, c->lidx + i0, n_rows, dim, be->act_dtype,
                                                            c->stream));
        gemm(c, "logits", out, CUDA_R_32F, c->gather, n_rows, W);
    }
    graph_leave(c, i0 == 0 && n_rows == c->num_logits);
}

/* ---- sampling (the sample op) ----------------------------------------------------------------
 * The logits never leave the GPU: the rows' settings and penalty lists go up in one copy from
 * pinned staging (like begin_step's metadata), lunar_cuda_sample (or lunar_cuda_argmax when every
 * row is greedy without penalty entries: the same token, no scratch) draws the tokens,
 * lunar_cuda_logprobs runs over each run of consecutive rows that asked for logprobs, and one
 * copy brings tokens and logprobs back: about 4 + 8 * top_n bytes a row instead of a vocab row. */
static void sample_free(cuda_backend_t *c)
{
    if (c->smp.hin) cudaFreeHost(c->smp.hin);
    if (c->smp.hout) cudaFreeHost(c->smp.hout);
    if (c->smp.din) cudaFree(c->smp.din);
    if (c->smp.dout) cudaFree(c->smp.dout);
    if (c->smp.work) cudaFree(c->smp.work);
    memset(&c->smp, 0, sizeof c->smp);
}

/* Grows a pinned host buffer and its device twin (h NULL: device only) to `need` bytes, with
 * room to spare when `slack`. The old buffers are idle: the previous sample op waited for its
 * copies and kernels. */
static int sample_grow(cuda_backend_t *c, char **h, char **d, size_t *cap, size_t need, int slack)
{
    if (need <= *cap) return 0;
    size_t n = slack ? need + need / 2 : need;
    if (h && *h) cudaFreeHost(*h);
    if (*d) cudaFree(*d);
    if (h) *h = NULL;
    *d = NULL, *cap = 0;
    if ((h && cudaMallocHost((void **)h, n) != cudaSuccess) || cudaMalloc((void **)d, n) != cudaSuccess) {
        (void)cudaGetLastError();
        fail(c, "sample", "out of memory for the sampler's buffers");
        return -1;
    }
    *cap = n;
    return 0;
}

static void check_k(cuda_backend_t *c, const char *op, int rc)
{
    check(c, op, rc == LUNAR_CUDA_EARG ? LUNAR_CUDA_BE_EARG : rc);
}

static void cuda_sample(lunar_backend_t *be, const float *logits, int vocab, const lunar_sample_batch_t *s)
{
    cuda_backend_t *c = CB(be);
    int R = s->num_rows, N = s->top_stride > 0 ? s->top_stride : 0;
    int base = s->pen_start && R > 0 ? s->pen_start[0] : 0, np = s->pen_start && R > 0 ? s->pen_start[R] - base : 0;
    if (R < 1 || c->err) return;
    graph_flush(c);
    prof_op(c, 4.0 * R * vocab, "sample rows=%d", R);
    int greedy = np == 0, any_lp = 0;
    for (int i = 0; i < R; i++) {
        if (s->rows[i].temperature >= 1e-5f) greedy = 0;
        if (s->rows[i].logprobs >= 0) any_lp = 1;
        if (s->rows[i].logprobs > N) {
            fail(c, "sample", "a row asks more top logprobs than top_stride");
            return;
        }
    }
    if (any_lp && (!s->logprobs || (N > 0 && (!s->top_ids || !s->top_logprobs)))) {
        fail(c, "sample", "logprobs asked without output arrays");
        return;
    }
    /* in: params [R], pen_start [R+1], pen_ids [np], pen_counts [np]; out: tokens [R], lp [R],
     * top_ids [R*N], top_lp [R*N] */
    size_t o_start = align16(sizeof(lunar_sample_row_t) * (size_t)R);
    size_t o_ids = align16(o_start + 4 * ((size_t)R + 1)), o_cnt = align16(o_ids + 4 * (size_t)np);
    size_t in_bytes = o_cnt + 4 * (size_t)np;
    size_t o_lp = align16(4 * (size_t)R), o_tid = align16(o_lp + 4 * (size_t)R);
    size_t o_tlp = align16(o_tid + 4 * (size_t)R * N), out_bytes = any_lp ? o_tlp + 4 * (size_t)R * N : 4 * (size_t)R;
    if ((!greedy && sample_grow(c, &c->smp.hin, &c->smp.din, &c->smp.in_cap, in_bytes, 1)) ||
        sample_grow(c, &c->smp.hout, &c->smp.dout, &c->smp.out_cap, out_bytes, 1))
        return;
    int32_t *dtok = (int32_t *)c->smp.dout;
    if (greedy) {
        check_k(c, "sample argmax", lunar_cuda_argmax(dtok, logits, R, vocab, c->stream));
    } else {
        /* in steps of 16 rows, not 1.5x: memory.c budgets one [max_num_seqs][vocab] f32 buffer for it */
        size_t work = sizeof(float) * (size_t)((R + 15) / 16 * 16) * vocab;
        char *w = (char *)c->smp.work;
        if (sample_grow(c, NULL, &w, &c->smp.work_cap, work, 0)) return;
        c->smp.work = (float *)w;
        memcpy(c->smp.hin, s->rows, sizeof *s->rows * (size_t)R); /* the kernel reads the rows as they are */
        if (np) { /* rebased: a view of rows from the middle of a batch starts past entry 0 */
            int32_t *st = (int32_t *)(c->smp.hin + o_start);
            for (int i = 0; i <= R; i++) st[i] = s->pen_start[i] - base;
            memcpy(c->smp.hin + o_ids, s->pen_ids + base, 4 * (size_t)np);
            memcpy(c->smp.hin + o_cnt, s->pen_counts + base, 4 * (size_t)np);
        }
        cudaError_t e = cudaMemcpyAsync(c->smp.din, c->smp.hin, np ? in_bytes : o_start, cudaMemcpyHostToDevice,
                                        c->stream);
        if (e != cudaSuccess) { fail(c, "sample", cudaGetErrorString(e)); return; }
        check_k(c, "sample", lunar_cuda_sample(dtok, logits, c->smp.work, R, vocab,
                                                (const lunar_sample_row_t *)c->smp.din,
                                                np ? (const int32_t *)(c->smp.din + o_start) : NULL,
                                                (const int32_t *)(c->smp.din + o_ids),
                                                (const int32_t *)(c->smp.din + o_cnt), c->stream));
    }
    for (int i0 = 0; any_lp && i0 < R;) { /* each run of rows with logprobs, in one launch */
        if (s->rows[i0].logprobs < 0) { i0++; continue; }
        int i1 = i0 + 1;
        while (i1 < R && s->rows[i1].logprobs >= 0) i1++;
        float *lp = (float *)(c->smp.dout + o_lp);
        check_k(c, "sample logprobs",
                lunar_cuda_logprobs(lp + i0, (int32_t *)(c->smp.dout + o_tid) + (size_t)i0 * N,
                                    (float *)(c->smp.dout + o_tlp) + (size_t)i0 * N, logits + (size_t)i0 * vocab,
                                    dtok + i0, i1 - i0, vocab, N, c->stream));
        i0 = i1;
    }
    cudaError_t e = cudaMemcpyAsync(c->smp.hout, c->smp.dout, out_bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) { fail(c, "sample", cudaGetErrorString(e)); return; }
    if (c->err) return;
    memcpy(s->tokens, c->smp.hout, 4 * (size_t)R);
    for (int i = 0; any_lp && i < R; i++) {
        int n = s->rows[i].logprobs;
        if (n < 0) continue;
        s->logprobs[i] = ((const float *)(c->smp.hout + o_lp))[i];
        if (n > 0) {
            memcpy(s->top_ids + (size_t)i * s->top_stride, c->smp.hout + o_tid + 4 * (size_t)i * N, 4 * (size_t)n);
            memcpy(s->top_logprobs + (size_t)i * s->top_stride, c->smp.hout + o_tlp + 4 * (size_t)i * N, 4 * (size_t)n);
        }
    }
}

int lunar_backend_cuda_create(const lunar_backend_params_t *p, lunar_backend_t **out)
{
    *out = NULL;
    if (p->max_k < 1 || p->head_dim < 1 || p->max_tokens < 1)
        return lunar_error(LUNAR_EINVAL, "cuda backend: max_k %d, max_tokens %d and head_dim %d must be >= 1", p->max_k,
                           p->max_tokens, p->head_dim);
    int n = lunar_device_count();
    if (p->device < 0 || p->device >= n)
        return lunar_error(LUNAR_EDEVICE, "cuda backend: no CUDA device %d (%d visible); use --device cpu", p->device,
                           n);
    if (p->head_dim > 256)
        return lunar_error(LUNAR_EUNSUPPORTED, "cuda backend: head_dim %d (at most 256 runs)", p->head_dim);
    cuda_backend_t *c = calloc(1, sizeof *c);
    if (!c) return lunar_error(LUNAR_ENOMEM, "cuda backend: out of memory");
    c->be = (lunar_backend_t){
        .name = "cuda", .act_dtype = LUNAR_DTYPE_F32, .kv_dtype = LUNAR_DTYPE_F32, .host_memory = 0,
        .free = cuda_free_all, .alloc = cuda_alloc, .dealloc = cuda_dealloc, .copy_in = cuda_copy_in,
        .copy_out = cuda_copy_out, .prepare = cuda_prepare, .begin_step = cuda_begin_step,
        .end_step = cuda_end_step, .embed = cuda_embed, .rmsnorm = cuda_rmsnorm, .add_rmsnorm = cuda_add_rmsnorm,
        .gemm = cuda_gemm, .gemm_multi = cuda_gemm_multi, .rope = cuda_rope, .silu_mul = cuda_silu_mul,
        .kv_write = cuda_kv_write, .attention = cuda_attention, .logits = cuda_logits, .sample = cuda_sample,
    };
    c->device = p->device;
    c->max_k = p->max_k;
    c->max_tokens = p->max_tokens;
    const char *gr = getenv("LUNAR_CUDA_GRAPHS");
    c->graphs_on = !p->enforce_eager && !(gr && !strcmp(gr, "0"));
    const char *pr = getenv("LUNAR_CUDA_PROFILE");
    if (pr && strcmp(pr, "0") && (c->prof = calloc(1, sizeof *c->prof))) c->graphs_on = 0;
    c->be.graph_max_tokens = c->graphs_on ? GRAPH_MAX_TOKENS : 0;
    const char *a = getenv("LUNAR_CUDA_ATTN");
    c->attn_generic = a && !strcmp(a, "generic");
    const char *gv = getenv("LUNAR_CUDA_GEMV");
    c->gemv_off = gv && !strcmp(gv, "0");
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cuda_free_all(&c->be);
        return lunar_error(LUNAR_EDEVICE, "cuda backend: device %d: %s", p->device, cudaGetErrorString(e));
    }
    cublasStatus_t st = cublasCreate(&c->blas);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(c->blas, c->stream);
    /* no TF32 behind our back: the f32 mode must match the CPU backend to rounding */
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
    if (st == CUBLAS_STATUS_SUCCESS) {
        if (cudaMalloc(&c->blas_ws, BLAS_WS_BYTES) != cudaSuccess) {
            (void)cudaGetLastError();
            cuda_free_all(&c->be);
            return lunar_error(LUNAR_ENOMEM, "cuda backend: out of GPU memory for the cuBLAS workspace");
        }
        st = cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WS_BYTES);
    }
    if (st != CUBLAS_STATUS_SUCCESS) {
        cuda_free_all(&c->be);
        return lunar_error(LUNAR_EDEVICE, "cuda backend: cuBLAS: %s", cublasGetStatusString(st));
    }
    *out = &c->be;
    return 0;
}
