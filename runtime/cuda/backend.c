/*
 * cuda/backend.c — the CUDA backend: backend.h's op table on one GPU.
 *
 * Activations and the KV cache are kept in the model's dtype (lunar_model_dtype: the --dtype
 * the model was loaded with, so f32 checkpoints run in bf16 on a GPU unless --dtype float32
 * is given). prepare() learns that dtype, uploads every matrix once (the loader has already
 * converted them), and later finds the device copy by the host tensor's pointer. GEMMs go to
 * cuBLAS (cublasGemmEx, f32 accumulation; in the f32 mode the pedantic f32 compute type, so
 * no TF32 and results compare tightly with the CPU backend); everything else is a kernel of
 * kernels/cuda_backend_ops.cu. All work is issued on one stream; the first failure is kept
 * with the op's name and reported by end_step(), as backend.h asks. The step's metadata is
 * packed into one pinned buffer and copied in one transfer per step.
 */
#include "backend/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cuda_backend_ops.h"


typedef struct dev_weight {
    const lunar_tensor_t *t;
    void *d;
} dev_weight_t;

#define MAX_GRAPHS 64       /* decode shapes kept (tokens x block-table width) */
#define GRAPH_MAX_TOKENS 64 /* decode steps up to this many sequences run from graphs */
#define BLAS_WS_BYTES (32u << 20)
enum { G_EAGER, G_PENDING, G_ARMED, G_CAPTURING, G_REPLAY };

typedef struct cuda_backend {
    lunar_backend_t be;   /* first: a lunar_backend_t* is a cuda_backend_t* */
    int device, max_k, max_tokens;
    cudaStream_t stream;
    cublasHandle_t blas;
    dev_weight_t *w;      /* uploaded matrices, looked up by host tensor */
    int nw, capw;
    size_t weight_bytes;

    /* this step's metadata: pinned host staging and its device copy, same layout */
    char *hmeta, *dmeta;
    size_t meta_cap;
    int32_t *ids, *pos, *seq_of, *tables, *lidx;  /* device pointers into dmeta */
    int64_t *slot;
    int max_blocks, num_logits;
    void *gather;         /* [max_tokens][max_k] act: rows picked for the logits */

    /* CUDA graphs of decode steps (see graph_enter): one per (tokens, table width) shape */
    int graphs_on;        /* off with --enforce-eager or LUNAR_CUDA_GRAPHS=0 */
    int mode, cur;        /* G_EAGER..G_REPLAY; the graph of this step */
    struct {
        int T, max_blocks, bad;
        cudaGraphExec_t exec;
    } graph[MAX_GRAPHS];
    int ngraphs;
    void *blas_ws;        /* cuBLAS workspace: fixed, so captured GEMMs allocate nothing */

    int gemv;             /* k_be_gemv for steps of few tokens in 16-bit modes (LUNAR_CUDA_GEMV=0: off) */
    int attn_generic;     /* LUNAR_CUDA_ATTN=generic: the plain attention kernel always (tests) */
    int err;              /* first failure of the step (sticky) */
    char errmsg[256];
} cuda_backend_t;

#define CB(be) ((cuda_backend_t *)(be))

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

static void cuda_free_all(lunar_backend_t *be)
{
    cuda_backend_t *c = CB(be);
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (int i = 0; i < c->nw; i++) cudaFree(c->w[i].d);
    free(c->w);
    if (c->hmeta) cudaFreeHost(c->hmeta);
    if (c->dmeta) cudaFree(c->dmeta);
    if (c->gather) cudaFree(c->gather);
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
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) fail(c, "copy_out", cudaGetErrorString(e));
}

static void *find_weight(cuda_backend_t *c, const lunar_tensor_t *t)
{
    for (int i = 0; i < c->nw; i++)
        if (c->w[i].t == t) return c->w[i].d;
    return NULL;
}

static int upload(cuda_backend_t *c, const lunar_tensor_t *t)
{
    if (!t || find_weight(c, t)) return 0; /* absent, or already there (a tied lm_head) */
    if (t->dtype != c->be.act_dtype)
        return lunar_error(LUNAR_EUNSUPPORTED, "cuda backend: tensor %s is %s, the model runs in %s", t->name,
                           lunar_dtype_name(t->dtype), lunar_dtype_name(c->be.act_dtype));
    if (!t->data)
        return lunar_error(LUNAR_EINVAL, "cuda backend: tensor %s has no data (a config-only load?)", t->name);
    if (c->nw == c->capw) {
        int cap = c->capw ? 2 * c->capw : 64;
        dev_weight_t *w = realloc(c->w, sizeof *w * (size_t)cap);
        if (!w) return lunar_error(LUNAR_ENOMEM, "cuda backend: out of host memory");
        c->w = w, c->capw = cap;
    }
    void *d = NULL;
    if (cudaMalloc(&d, t->nbytes) != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return lunar_error(LUNAR_ENOMEM, "cuda backend: out of GPU memory uploading %s (%.2f GiB of weights "
                           "uploaded, %.2f GiB free of %.2f GiB): use --dtype bfloat16 or a smaller model",
                           t->name, c->weight_bytes / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0);
    }
    cudaError_t e = cudaMemcpy(d, t->data, t->nbytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        cudaFree(d);
        return lunar_error(LUNAR_EDEVICE, "cuda backend: uploading %s: %s", t->name, cudaGetErrorString(e));
    }
    c->w[c->nw++] = (dev_weight_t){t, d};
    c->weight_bytes += t->nbytes;
    return 0;
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
    int rc = upload(c, w->embed);
    if (!rc) rc = upload(c, w->lm_head);
    for (int l = 0; l < cfg->num_layers && !rc; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        const lunar_tensor_t *mats[] = {lw->wq, lw->wk, lw->wv, lw->wo, lw->w_gate, lw->w_up, lw->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof *mats && !rc; i++) rc = upload(c, mats[i]);
    }
    if (rc) return rc;
    be->weight_bytes = c->weight_bytes;
    c->gather = cuda_alloc(be, (size_t)c->max_tokens * c->max_k * lunar_dtype_size(dt));
    if (!c->gather) return lunar_error(LUNAR_ENOMEM, "cuda backend: out of GPU memory for the logits scratch");
    lunar_log(LUNAR_LOG_INFO, "cuda", "weights: %.2f GiB in %d tensors (%s)", c->weight_bytes / 1073741824.0, c->nw,
              lunar_dtype_name(dt));
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
        if (c->graph[i].T == b->num_tokens && c->graph[i].max_blocks == b->max_blocks_per_seq) {
            if (!c->graph[i].bad) c->mode = G_ARMED, c->cur = i;
            return;
        }
    if (c->ngraphs < MAX_GRAPHS) c->mode = G_PENDING;
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
        int i = c->ngraphs++;
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
    int T = b->num_tokens;
    size_t o_ids = 0, o_pos = align16(o_ids + 4 * (size_t)T), o_seq = align16(o_pos + 4 * (size_t)T);
    size_t o_slot = align16(o_seq + 4 * (size_t)T), o_lidx = align16(o_slot + 8 * (size_t)T);
    size_t o_tab = align16(o_lidx + 4 * (size_t)(b->num_logits > 0 ? b->num_logits : 1));
    size_t total = align16(o_tab + 4 * (size_t)b->num_seqs * b->max_blocks_per_seq);
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
    memcpy(h + o_tab, b->block_tables, 4 * (size_t)b->num_seqs * b->max_blocks_per_seq);
    cudaError_t e = cudaMemcpyAsync(c->dmeta, h, total, cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) return lunar_error(LUNAR_EDEVICE, "cuda backend: step metadata: %s", cudaGetErrorString(e));
    c->ids = (int32_t *)(c->dmeta + o_ids);
    c->pos = (int32_t *)(c->dmeta + o_pos);
    c->seq_of = (int32_t *)(c->dmeta + o_seq);
    c->slot = (int64_t *)(c->dmeta + o_slot);
    c->lidx = (int32_t *)(c->dmeta + o_lidx);
    c->tables = (int32_t *)(c->dmeta + o_tab);
    c->max_blocks = b->max_blocks_per_seq;
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
    if (c->err) return lunar_error(LUNAR_EDEVICE, "%s", c->errmsg);
    return 0;
}

static void cuda_embed(lunar_backend_t *be, void *x, const lunar_batch_t *b, const lunar_tensor_t *E)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter_op(c, 1)) return;
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
    check(CB(be), "rmsnorm", lunar_cuda_be_rmsnorm(out, x, NULL, w, R, dim, eps, be->act_dtype, CB(be)->stream));
}

static void cuda_add_rmsnorm(lunar_backend_t *be, void *resid, const void *delta, void *out, int R, int dim,
                             const float *w, float eps)
{
    if (graph_enter(CB(be))) return;
    check(CB(be), "add_rmsnorm",
          lunar_cuda_be_rmsnorm(out, delta, resid, w, R, dim, eps, be->act_dtype, CB(be)->stream));
}

static cudaDataType_t cuda_type(lunar_dtype_t dt)
{
    return dt == LUNAR_DTYPE_BF16 ? CUDA_R_16BF : dt == LUNAR_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* y[T][N] (ytype) = x[T][K] . W[N][K]^T: in cuBLAS's column-major terms y^T = W^T(op T) . x^T. */
static void gemm(cuda_backend_t *c, const char *op, void *y, cudaDataType_t ytype, const void *x, int T,
                 const lunar_tensor_t *W)
{
    const void *d = find_weight(c, W);
    if (!d) { fail(c, op, "weight not uploaded by prepare()"); return; }
    int N = (int)W->shape[0], K = (int)W->shape[1];
    float one = 1.0f, zero = 0.0f;
    cudaDataType_t at = cuda_type(c->be.act_dtype);
    cublasComputeType_t ct = c->be.act_dtype == LUNAR_DTYPE_F32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    check_blas(c, op, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, d, at, K, x, at, K, &zero, y,
                                   ytype, N, ct, CUBLAS_GEMM_DEFAULT));
}

/* The decode path of the 16-bit modes: k_be_gemv reads W once at near the memory roofline
 * where cuBLAS's tiled kernels do not (bench/cuda_decode.lua; LUNAR_CUDA_GEMV=0 turns it off
 * to compare). 1: done; 0: not applicable, use cuBLAS. */
static int try_gemv(cuda_backend_t *c, const char *op, void *y, int y_f32, const void *x, int T,
                    const lunar_tensor_t *W, const float *bias)
{
    if (!c->gemv || c->be.act_dtype == LUNAR_DTYPE_F32 || T > LUNAR_CUDA_BE_GEMV_ROWS || W->shape[1] % 8) return 0;
    const void *d = find_weight(c, W);
    if (!d) return 0;
    check(c, op, lunar_cuda_be_gemv(y, y_f32, x, d, bias, T, (int)W->shape[0], (int)W->shape[1], c->be.act_dtype,
                                    c->stream));
    return 1;
}

static void cuda_gemm(lunar_backend_t *be, void *y, const void *x, int T, const lunar_tensor_t *W, const float *bias)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    if (try_gemv(c, "gemm", y, 0, x, T, W, bias)) return;
    gemm(c, "gemm", y, cuda_type(be->act_dtype), x, T, W);
    if (bias)
        check(c, "gemm bias", lunar_cuda_be_add_bias(y, bias, T, (int)W->shape[0], be->act_dtype, c->stream));
}

static void cuda_rope(lunar_backend_t *be, void *q, void *k, int T, int nq, int nk, int hd, int rot, const float *cs)
{
    if (graph_enter(CB(be))) return;
    check(CB(be), "rope", lunar_cuda_be_rope(q, k, cs, T, nq, nk, hd, rot, be->act_dtype, CB(be)->stream));
}

static void cuda_silu_mul(lunar_backend_t *be, void *out, const void *gate, const void *up, long n)
{
    if (graph_enter(CB(be))) return;
    check(CB(be), "silu_mul", lunar_cuda_be_silu_mul(out, gate, up, n, be->act_dtype, CB(be)->stream));
}

static void cuda_kv_write(lunar_backend_t *be, void *kc, void *vc, const void *k, const void *v,
                          const lunar_batch_t *b, int nk, int hd)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    check(c, "kv_write", lunar_cuda_be_kv_write(kc, vc, k, v, c->slot, b->num_tokens, nk, hd, be->act_dtype,
                                                be->kv_dtype, c->stream));
}

static void cuda_attention(lunar_backend_t *be, void *out, const void *q, const void *kc, const void *vc,
                           const lunar_batch_t *b, int nq, int nk, int hd, int block_size, int window, float scale)
{
    cuda_backend_t *c = CB(be);
    if (graph_enter(c)) return;
    check(c, "attention", lunar_cuda_be_attention(out, q, kc, vc, c->seq_of, c->pos, c->tables, c->max_blocks,
                                                  b->num_tokens, nq, nk, hd, block_size, window, scale,
                                                  c->attn_generic, be->act_dtype, be->kv_dtype, c->stream));
}

static void cuda_logits(lunar_backend_t *be, float *out, const void *x, const lunar_batch_t *b, int i0, int n_rows,
                        const lunar_tensor_t *W)
{
    cuda_backend_t *c = CB(be);
    int dim = (int)W->shape[1];
    if (n_rows < 1) return;
    if (i0 + n_rows > c->num_logits) { fail(c, "logits", "rows past the step's logits_indices"); return; }
    if (!graph_enter(c)) {
        check(c, "logits gather", lunar_cuda_be_gather_rows(c->gather, x, c->lidx + i0, n_rows, dim, be->act_dtype,
                                                            c->stream));
        if (!try_gemv(c, "logits", out, 1, c->gather, n_rows, W, NULL))
            gemm(c, "logits", out, CUDA_R_32F, c->gather, n_rows, W);
    }
    graph_leave(c, i0 == 0 && n_rows == c->num_logits);
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
        .gemm = cuda_gemm, .rope = cuda_rope, .silu_mul = cuda_silu_mul, .kv_write = cuda_kv_write,
        .attention = cuda_attention, .logits = cuda_logits,
    };
    c->device = p->device;
    c->max_k = p->max_k;
    c->max_tokens = p->max_tokens;
    const char *g = getenv("LUNAR_CUDA_GEMV");
    c->gemv = !(g && !strcmp(g, "0"));
    const char *gr = getenv("LUNAR_CUDA_GRAPHS");
    c->graphs_on = !p->enforce_eager && !(gr && !strcmp(gr, "0"));
    c->be.graph_max_tokens = c->graphs_on ? GRAPH_MAX_TOKENS : 0;
    const char *a = getenv("LUNAR_CUDA_ATTN");
    c->attn_generic = a && !strcmp(a, "generic");
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
