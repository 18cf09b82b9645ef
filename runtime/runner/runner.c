/*
 * runner.c — the model forward for one engine step, and the state it runs in.
 *
 * lunar_runner_forward() is the whole decoder in one function that reads top to bottom
 * (llama2.c style): embed, then per layer attention and MLP, then the final norm and the
 * logits of the rows the engine asked for. Architecture differences are data in the config
 * and weights (q/k/v bias, q/k norm, sliding window, tied head, rope scaling); the batch is
 * flat and token-major, so prefill chunks and decodes of many sequences run as one. Every op
 * goes through the backend table (backend/backend.h), and so does every buffer: the same
 * function drives the CPU backend and, with its table filled, the CUDA one.
 */
#include "lunar/runner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lunar.h"
#include "core/error.h"
#include "backend/backend.h"
#include "runner/rope.h"

void dtype_convert(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n);

typedef struct layer_vecs {     /* small per-layer vectors, f32 in backend memory */
    float *attn_norm, *ffn_norm, *q_norm, *k_norm, *bq, *bk, *bv, *bo;
} layer_vecs_t;

struct lunar_runner {
    const lunar_model_t *model;
    const lunar_model_config_t *c;
    const lunar_weights_t *w;
    lunar_runner_options_t o;
    lunar_backend_t *be;

    layer_vecs_t *lv;
    int num_layers;                 /* lv's length, kept here: free() must not read the model,
                                     * which a Lua state closing may have freed first */
    float *final_norm;
    float *inv_freq, attn_factor;   /* [rot/2], host */
    /* a decode step padded to its batch-size bucket (see pad_decode): host arrays, grown */
    struct {
        int32_t *ids, *pos, *qs, *lens, *tables, *lidx;
        int64_t *slot;
        int cap, cap_tab;
        lunar_batch_t b;
    } pad;
    int rot;

    char *kcache, *vcache;          /* [layers][blocks][block_size][kv_heads][head_dim] kv_dtype */
    size_t layer_bytes;             /* bytes per layer in each cache */

    /* backend activations (act_dtype) for max_num_batched_tokens tokens */
    char *x, *xn, *q, *att, *proj, *gate; /* q also holds k and v; gate also holds up (see forward) */
    float *cs;                      /* RoPE table [T][rot] f32, backend memory */
    float *logits;                  /* [max_num_seqs][vocab] f32 when backend memory is not host */
    float *cs_host, *dyn_freq;      /* host staging of the RoPE table */
    uint64_t tokens, pad_tokens;

    /* the memory breakdown (lunar_runner_memory): exact counts, and device deltas */
    uint64_t weight_bytes, act_bytes;  /* the weights as held; the runner's step buffers */
    uint64_t prep_scratch;             /* device: what prepare() took beyond the weights */
    uint64_t prof_growth, prof_graphs; /* device: what the profiling steps added, graph step apart */
    uint64_t prof_other;               /* device: the residual at the profile's end */
    int prof_tokens, prof_seqs, prof_graph_seqs, profiled;
};

void lunar_runner_options_default(lunar_runner_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->block_size = 16;
    o->max_num_batched_tokens = 2048;
    o->max_num_seqs = 256;
}

uint64_t lunar_runner_kv_bytes_per_token(const lunar_model_t *m, const char *backend)
{
    /* the CPU backend keeps f32; the CUDA backend the model's dtype (cuda/backend.c) */
    const lunar_model_config_t *c = lunar_model_config(m);
    size_t esz = backend && !strcmp(backend, "cuda") ? lunar_dtype_size(lunar_model_dtype(m)) : sizeof(float);
    return 2ull * c->num_layers * c->num_kv_heads * c->head_dim * esz;
}

/* A small weight vector as f32 in backend memory. */
static float *vec_f32(lunar_backend_t *be, const lunar_tensor_t *t, int *err)
{
    if (!t || *err) return NULL;
    size_t n = t->nbytes / lunar_dtype_size(t->dtype);
    float *h = malloc(n * sizeof(float)), *v = be->alloc(be, n * sizeof(float));
    if (!h || !v) {
        *err = 1;
        free(h);
        if (v) be->dealloc(be, v);
        return NULL;
    }
    dtype_convert(LUNAR_DTYPE_F32, h, t->dtype, t->data, n);
    be->copy_in(be, v, h, n * sizeof(float));
    free(h);
    return v;
}

static void *xcalloc(size_t n, size_t sz, int *err)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) *err = 1;
    return p;
}

/* Zeroed backend memory. */
static void *balloc(lunar_backend_t *be, size_t n, size_t sz, int *err)
{
    void *p = *err ? NULL : be->alloc(be, (n ? n : 1) * sz);
    if (!p) *err = 1;
    return p;
}

static void bfree(lunar_backend_t *be, void *p)
{
    if (p) be->dealloc(be, p);
}

/* Bytes in use on the runner's device by every process (GPU 0, as the backend), or 0 when
 * backend memory is host memory or the device cannot be read. */
static uint64_t device_used(const lunar_runner_t *r, uint64_t *total)
{
    lunar_device_info_t di;
    if (total) *total = 0;
    if (r->be->host_memory || lunar_device_get_info(0, &di) != 0) return 0;
    if (total) *total = di.total_bytes;
    return di.total_bytes - di.free_bytes;
}

/* Both KV caches for n blocks (every layer; see lunar/runner.h), or -1 with none allocated. */
/* One token's K (or V) in one layer, in the backend's KV dtype: the unit of every KV size. */
static uint64_t kv_row_bytes(const lunar_runner_t *r)
{
    return (uint64_t)r->c->num_kv_heads * r->c->head_dim * lunar_dtype_size(r->be->kv_dtype);
}

static int kv_alloc(lunar_runner_t *r, int n)
{
    lunar_backend_t *be = r->be;
    size_t L = (size_t)r->c->num_layers;
    r->layer_bytes = (size_t)n * r->o.block_size * kv_row_bytes(r);
    r->kcache = be->alloc(be, r->layer_bytes * L);
    r->vcache = r->kcache ? be->alloc(be, r->layer_bytes * L) : NULL;
    if (!r->vcache) {
        bfree(be, r->kcache);
        r->kcache = NULL, r->layer_bytes = 0, r->o.num_kv_blocks = 0;
        return -1;
    }
    r->o.num_kv_blocks = n;
    return 0;
}

int lunar_runner_create(const lunar_model_t *m, const lunar_runner_options_t *opt, lunar_runner_t **out)
{
    if (!m || !opt || !out) return lunar_error(LUNAR_EINVAL, "lunar_runner_create: NULL argument");
    *out = NULL;
    if (opt->num_kv_blocks < 1 || opt->block_size < 1 || opt->max_num_batched_tokens < 1 || opt->max_num_seqs < 1)
        return lunar_error(LUNAR_EINVAL, "runner: num_kv_blocks, block_size, max_num_batched_tokens and "
                                         "max_num_seqs must be >= 1");
    const lunar_model_config_t *c = lunar_model_config(m);
    const lunar_weights_t *w = lunar_model_weights(m);
    if (c->num_experts > 0)
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: mixture-of-experts models (%d experts) do not run yet",
                           c->model_type, c->num_experts);
    if (!w || !w->embed || !w->layers || !w->lm_head || !w->final_norm)
        return lunar_error(LUNAR_EINVAL, "runner: the model has no weights (loaded config-only?)");
    if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads != 0)
        return lunar_error(LUNAR_EFORMAT, "runner: %d heads do not divide into %d kv heads", c->num_heads, c->num_kv_heads);

    lunar_runner_t *r = calloc(1, sizeof *r);
    if (!r) return lunar_error(LUNAR_ENOMEM, "runner: out of memory");
    r->model = m;
    r->c = c;
    r->w = w;
    r->o = *opt;
    int L = c->num_layers, H = c->hidden_size, hd = c->head_dim, nq = c->num_heads, nk = c->num_kv_heads;
    int I = c->intermediate_size, T = opt->max_num_batched_tokens;
    int maxk = H > nq * hd ? H : nq * hd;
    if (I > maxk) maxk = I;
    lunar_backend_params_t bp = {opt->num_threads, maxk, T, hd, 0, opt->enforce_eager};
    int rc = lunar_backend_create(opt->backend ? opt->backend : "cpu", &bp, &r->be);
    if (rc) { free(r); return rc; }
    lunar_backend_t *be = r->be;
    r->o.backend = be->name;
    uint64_t used0 = device_used(r, NULL);
    rc = be->prepare(be, m);
    if (rc) { be->free(be); free(r); return rc; }
    r->weight_bytes = be->weight_bytes;
    if (!r->weight_bytes) /* read in place: the model's host tensors */
        for (int i = 0; i < lunar_model_tensor_count(m); i++) r->weight_bytes += lunar_model_tensor(m, i)->nbytes;
    uint64_t used1 = device_used(r, NULL);
    if (used1 > used0 + r->weight_bytes) r->prep_scratch = used1 - used0 - r->weight_bytes;
    uint64_t vec0 = be->alloc_bytes; /* the f32 norm/bias copies below count as weights */

    int err = 0;
    r->lv = xcalloc((size_t)L, sizeof *r->lv, &err);
    r->num_layers = L;
    for (int l = 0; l < L && !err; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        layer_vecs_t *v = &r->lv[l];
        v->attn_norm = vec_f32(be, lw->attn_norm, &err);
        v->ffn_norm = vec_f32(be, lw->ffn_norm, &err);
        v->q_norm = vec_f32(be, lw->q_norm, &err);
        v->k_norm = vec_f32(be, lw->k_norm, &err);
        v->bq = vec_f32(be, lw->bq, &err);
        v->bk = vec_f32(be, lw->bk, &err);
        v->bv = vec_f32(be, lw->bv, &err);
        v->bo = vec_f32(be, lw->bo, &err);
    }
    r->final_norm = vec_f32(be, w->final_norm, &err);
    r->rot = c->rope.rotary_dim > 0 && c->rope.rotary_dim <= hd ? c->rope.rotary_dim : hd;
    r->inv_freq = xcalloc((size_t)r->rot / 2 + 1, sizeof(float), &err);
    if (!err) rope_inv_freq(c, r->rot, r->inv_freq, &r->attn_factor);

    /* The KV cache is reserved (resident) at start-up, as on a GPU: memory use is what
     * `lunar memory` says from the first request on, not creeping up as blocks are reached. */
    size_t asz = lunar_dtype_size(be->act_dtype);
    r->weight_bytes += be->alloc_bytes - vec0;
    used1 += be->alloc_bytes - vec0;
    if (!err && kv_alloc(r, opt->num_kv_blocks)) err = 1;
    uint64_t act0 = be->alloc_bytes; /* the step buffers are what is allocated from here on */

    int wide = H > nq * hd ? H : nq * hd;
    r->x = balloc(be, (size_t)T * H, asz, &err);
    r->xn = balloc(be, (size_t)T * wide, asz, &err);
    /* q, k, v back to back (and gate, up): for one token the stacked projections of a backend's
     * gemm_multi land in them with one GEMM */
    r->q = balloc(be, (size_t)T * (nq + 2 * nk) * hd, asz, &err);
    r->att = balloc(be, (size_t)T * nq * hd, asz, &err);
    r->proj = balloc(be, (size_t)T * H, asz, &err);
    r->gate = balloc(be, (size_t)T * 2 * I, asz, &err);
    r->cs = balloc(be, (size_t)T * r->rot, sizeof(float), &err);
    /* logits in backend memory: for a device, a sample op, or the padding rows of graph steps */
    if (!be->host_memory || be->sample || be->graph_max_tokens > 0)
        r->logits = balloc(be, (size_t)opt->max_num_seqs * c->vocab_size, sizeof(float), &err);
    r->dyn_freq = xcalloc((size_t)r->rot / 2 + 1, sizeof(float), &err);
    r->cs_host = xcalloc((size_t)T * r->rot, sizeof(float), &err);
    r->act_bytes = be->alloc_bytes - act0;
    if (!err) { /* what the device spent beyond the exact counts (allocator rounding) is workspace */
        uint64_t used2 = device_used(r, NULL), counted = r->act_bytes + 2ull * L * r->layer_bytes;
        if (used2 > used1 + counted) r->prep_scratch += used2 - used1 - counted;
        lunar_log(LUNAR_LOG_DEBUG, "memory", "device in use: %llu B before the weights, %llu after, %llu after the "
                  "KV cache and step buffers", (unsigned long long)used0, (unsigned long long)used1,
                  (unsigned long long)used2);
    }
    if (err) {
        lunar_runner_free(r);
        return lunar_error(LUNAR_ENOMEM, "runner: out of memory for a KV cache of %d blocks and %d-token steps",
                           opt->num_kv_blocks, T);
    }
    *out = r;
    return 0;
}

void lunar_runner_free(lunar_runner_t *r)
{
    if (!r) return;
    lunar_backend_t *be = r->be;
    if (r->lv) {
        for (int l = 0; l < r->num_layers; l++) {
            layer_vecs_t *v = &r->lv[l];
            float *vecs[] = {v->attn_norm, v->ffn_norm, v->q_norm, v->k_norm, v->bq, v->bk, v->bv, v->bo};
            for (size_t i = 0; i < sizeof vecs / sizeof *vecs; i++) bfree(be, vecs[i]);
        }
        free(r->lv);
    }
    void *bufs[] = {r->final_norm, r->kcache, r->vcache, r->x, r->xn, r->q, r->att, r->proj, r->gate, r->cs,
                    r->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) bfree(be, bufs[i]);
    free(r->inv_freq), free(r->dyn_freq), free(r->cs_host);
    free(r->pad.ids), free(r->pad.pos), free(r->pad.qs), free(r->pad.lens), free(r->pad.tables), free(r->pad.lidx);
    free(r->pad.slot);
    be->free(be);
    free(r);
}

/* Every index the forward will follow, checked before any is used. */
static int check_batch(const lunar_runner_t *r, const lunar_batch_t *b)
{
    const lunar_model_config_t *c = r->c;
    if (b->num_tokens < 1 || b->num_tokens > r->o.max_num_batched_tokens)
        return lunar_error(LUNAR_ERANGE, "forward: %d tokens (1..%d allowed)", b->num_tokens, r->o.max_num_batched_tokens);
    if (b->num_seqs < 1 || b->query_start[0] != 0 || b->query_start[b->num_seqs] != b->num_tokens)
        return lunar_error(LUNAR_ERANGE, "forward: query_start does not cover the %d tokens", b->num_tokens);
    int64_t nslots = (int64_t)r->o.num_kv_blocks * r->o.block_size;
    for (int s = 0; s < b->num_seqs; s++) {
        int q0 = b->query_start[s], q1 = b->query_start[s + 1];
        if (q1 <= q0) return lunar_error(LUNAR_ERANGE, "forward: sequence %d has no tokens", s);
        int need = (b->seq_lens[s] + r->o.block_size - 1) / r->o.block_size;
        if (need > b->max_blocks_per_seq)
            return lunar_error(LUNAR_ERANGE, "forward: sequence %d needs %d blocks, table holds %d", s, need,
                               b->max_blocks_per_seq);
        for (int i = 0; i < need; i++) {
            int32_t blk = b->block_tables[(size_t)s * b->max_blocks_per_seq + i];
            if (blk < 0 || blk >= r->o.num_kv_blocks)
                return lunar_error(LUNAR_ERANGE, "forward: sequence %d block %d is %d (0..%d)", s, i, blk,
                                   r->o.num_kv_blocks - 1);
        }
        for (int t = q0; t < q1; t++) {
            if (b->token_ids[t] < 0 || b->token_ids[t] >= c->vocab_size)
                return lunar_error(LUNAR_ERANGE, "forward: token %d has id %d outside the vocabulary (%d)", t,
                                   b->token_ids[t], c->vocab_size);
            if (b->positions[t] < 0 || b->positions[t] >= b->seq_lens[s])
                return lunar_error(LUNAR_ERANGE, "forward: token %d at position %d past its sequence length %d", t,
                                   b->positions[t], b->seq_lens[s]);
            if (b->slot_mapping[t] < 0 || b->slot_mapping[t] >= nslots)
                return lunar_error(LUNAR_ERANGE, "forward: token %d slot %lld outside the cache", t,
                                   (long long)b->slot_mapping[t]);
        }
    }
    for (int i = 0; i < b->num_logits; i++)
        if (b->logits_indices[i] < 0 || b->logits_indices[i] >= b->num_tokens)
            return lunar_error(LUNAR_ERANGE, "forward: logits index %d is %d (0..%d)", i, b->logits_indices[i],
                               b->num_tokens - 1);
    return 0;
}

/* cos/sin of every batch token's position, shared by all layers of the step. */
static void rope_tables(lunar_runner_t *r, const lunar_batch_t *b)
{
    int half = r->rot / 2;
    for (int s = 0; s < b->num_seqs; s++) {
        const float *f = r->inv_freq;
        if (rope_dynamic_inv_freq(r->c, r->rot, b->seq_lens[s], r->dyn_freq)) f = r->dyn_freq;
        for (int t = b->query_start[s]; t < b->query_start[s + 1]; t++) {
            float *cs = r->cs_host + (size_t)t * r->rot;
            float pos = (float)b->positions[t];
            for (int i = 0; i < half; i++) {
                float ang = pos * f[i]; /* float32 product, as torch's position @ inv_freq */
                cs[i] = (float)cos((double)ang) * r->attn_factor;
                cs[half + i] = (float)sin((double)ang) * r->attn_factor;
            }
        }
    }
    r->be->copy_in(r->be, r->cs, r->cs_host, sizeof(float) * b->num_tokens * r->rot);
}

/* Projections sharing their input, through the backend's gemm_multi when it has one. */
static void gemm_multi(lunar_backend_t *be, void *const *ys, const void *x, int T, const lunar_tensor_t *const *Ws,
                       const float *const *biases, int n)
{
    if (be->gemm_multi) {
        be->gemm_multi(be, ys, x, T, Ws, biases, n);
        return;
    }
    for (int i = 0; i < n; i++) be->gemm(be, ys[i], x, T, Ws[i], biases[i]);
}

/* vLLM's decode batch sizes for CUDA graphs: 1, 2, 4, then multiples of 8. */
static int graph_bucket(int n) { return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : (n + 7) / 8 * 8; }

/* A decode step (one token per sequence, a logits row each, in order) on a backend with CUDA
 * graphs gets a graph's shape: its batch padded to the batch-size bucket with dummy sequences
 * (token 0 at position 0, no cache slot (-1: kv_write skips it), a one-token context in block 0
 * (read, never written), a logits row each; their logits are computed and dropped), and its
 * block-table width rounded up to a power of two (at least 8), the rows padded with block 0,
 * never read. A context grows by a block every block_size tokens and a server's batch wanders
 * over 1..256, so without both a graph would be captured nearly every step; with them a server
 * replays a few dozen shapes. Returns b itself when it already has its shape or is no graph
 * step, else the runner's padded copy. */
static const lunar_batch_t *pad_decode(lunar_runner_t *r, const lunar_batch_t *b)
{
    int T = b->num_tokens, limit = r->be->graph_max_tokens;
    if (limit > r->o.max_num_seqs) limit = r->o.max_num_seqs;
    if (limit > r->o.max_num_batched_tokens) limit = r->o.max_num_batched_tokens;
    if (T > limit || b->num_seqs != T || b->num_logits != T) return b;
    for (int i = 0; i < T; i++)
        if (b->logits_indices[i] != i) return b;
    int B = graph_bucket(T), W = b->max_blocks_per_seq, Wd = 8;
    if (B > limit) B = T;
    while (Wd < W) Wd *= 2;
    if (B == T && Wd == W) return b;
    if (B > r->pad.cap || B * Wd > r->pad.cap_tab) { /* grown to the largest seen */
        int cap = B > r->pad.cap ? B : r->pad.cap, cap_tab = B * Wd > r->pad.cap_tab ? B * Wd : r->pad.cap_tab;
        int32_t *p[6] = {realloc(r->pad.ids, 4 * (size_t)cap), realloc(r->pad.pos, 4 * (size_t)cap),
                         realloc(r->pad.qs, 4 * ((size_t)cap + 1)), realloc(r->pad.lens, 4 * (size_t)cap),
                         realloc(r->pad.tables, 4 * (size_t)cap_tab), realloc(r->pad.lidx, 4 * (size_t)cap)};
        int64_t *slot = realloc(r->pad.slot, 8 * (size_t)cap);
        r->pad.ids = p[0] ? p[0] : r->pad.ids, r->pad.pos = p[1] ? p[1] : r->pad.pos;
        r->pad.qs = p[2] ? p[2] : r->pad.qs, r->pad.lens = p[3] ? p[3] : r->pad.lens;
        r->pad.tables = p[4] ? p[4] : r->pad.tables, r->pad.lidx = p[5] ? p[5] : r->pad.lidx;
        r->pad.slot = slot ? slot : r->pad.slot;
        if (!p[0] || !p[1] || !p[2] || !p[3] || !p[4] || !p[5] || !slot) return b; /* unpadded: still correct */
        r->pad.cap = cap, r->pad.cap_tab = cap_tab;
    }
    memcpy(r->pad.ids, b->token_ids, 4 * (size_t)T);
    memcpy(r->pad.pos, b->positions, 4 * (size_t)T);
    memcpy(r->pad.slot, b->slot_mapping, 8 * (size_t)T);
    memcpy(r->pad.qs, b->query_start, 4 * ((size_t)T + 1));
    memcpy(r->pad.lens, b->seq_lens, 4 * (size_t)T);
    memset(r->pad.tables, 0, 4 * (size_t)B * Wd);
    for (int i = 0; i < T; i++) memcpy(r->pad.tables + (size_t)i * Wd, b->block_tables + (size_t)i * W, 4 * (size_t)W);
    for (int i = 0; i < B; i++) r->pad.lidx[i] = i;
    for (int i = T; i < B; i++) {
        r->pad.ids[i] = 0, r->pad.pos[i] = 0, r->pad.slot[i] = -1;
        r->pad.qs[i + 1] = i + 1, r->pad.lens[i] = 1;
    }
    r->pad.b = (lunar_batch_t){B, B, r->pad.ids, r->pad.pos, r->pad.slot, r->pad.qs, r->pad.lens, r->pad.tables, Wd,
                               r->pad.lidx, B};
    return &r->pad.b;
}

/* The decoder up to the final norm: on return r->xn holds the final-normed hidden state of
 * every batch token, and the step is open (begin_step ran; the caller issues the logits and
 * ends it). A step padded for a CUDA graph (*ran != real) has its logits already: every row's,
 * one chunk in r->logits (the graph's shape ends with them), the real rows first. */
static int run_decoder(lunar_runner_t *r, const lunar_batch_t *real, const lunar_batch_t **ran)
{
    int rc = check_batch(r, real);
    if (rc) return rc;
    const lunar_batch_t *b = *ran = pad_decode(r, real);
    const lunar_model_config_t *c = r->c;
    const lunar_weights_t *w = r->w;
    lunar_backend_t *be = r->be;
    int T = b->num_tokens, H = c->hidden_size, hd = c->head_dim, nq = c->num_heads, nk = c->num_kv_heads;
    int I = c->intermediate_size;
    float eps = (float)c->rms_norm_eps, scale = 1.0f / sqrtf((float)hd);

    /* q, k, v back to back for this step's T tokens (and gate, up): for one token the stacked
     * projections of a backend's gemm_multi land in them with one GEMM */
    size_t asz = lunar_dtype_size(be->act_dtype);
    char *q = r->q, *k = q + (size_t)T * nq * hd * asz, *v = k + (size_t)T * nk * hd * asz;
    char *gate = r->gate, *up = gate + (size_t)T * I * asz;
    rc = be->begin_step(be, b);
    if (rc) return rc;
    rope_tables(r, b);
    be->embed(be, r->x, b, w->embed);
    be->rmsnorm(be, r->xn, r->x, T, H, r->lv[0].attn_norm, eps);
    for (int l = 0; l < c->num_layers; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        const layer_vecs_t *lv = &r->lv[l];
        void *kc = r->kcache + l * r->layer_bytes, *vc = r->vcache + l * r->layer_bytes;

        /* attention: q/k/v projections, per-head q/k norm (qwen3), rotary, cache, attend */
        void *qkv[] = {q, k, v};
        const lunar_tensor_t *wqkv[] = {lw->wq, lw->wk, lw->wv};
        const float *bqkv[] = {lv->bq, lv->bk, lv->bv};
        gemm_multi(be, qkv, r->xn, T, wqkv, bqkv, 3);
        if (lv->q_norm) be->rmsnorm(be, q, q, T * nq, hd, lv->q_norm, eps);
        if (lv->k_norm) be->rmsnorm(be, k, k, T * nk, hd, lv->k_norm, eps);
        be->rope(be, q, k, T, nq, nk, hd, r->rot, r->cs);
        be->kv_write(be, kc, vc, k, v, b, nk, hd);
        be->attention(be, r->att, q, kc, vc, b, nq, nk, hd, r->o.block_size, c->sliding_window, scale);
        be->gemm(be, r->proj, r->att, T, lw->wo, lv->bo);
        be->add_rmsnorm(be, r->x, r->proj, r->xn, T, H, lv->ffn_norm, eps);

        /* MLP: down(silu(gate(x)) * up(x)) */
        void *gu[] = {gate, up};
        const lunar_tensor_t *wgu[] = {lw->w_gate, lw->w_up};
        const float *bgu[] = {NULL, NULL};
        gemm_multi(be, gu, r->xn, T, wgu, bgu, 2);
        be->silu_mul(be, gate, gate, up, (long)T * I);
        be->gemm(be, r->proj, gate, T, lw->w_down, NULL);
        const float *next_norm = l + 1 < c->num_layers ? r->lv[l + 1].attn_norm : r->final_norm;
        be->add_rmsnorm(be, r->x, r->proj, r->xn, T, H, next_norm, eps);
    }
    if (b != real) {
        r->pad_tokens += (uint64_t)(b->num_tokens - real->num_tokens);
        be->logits(be, r->logits, r->xn, b, 0, b->num_logits, w->lm_head);
    }
    return 0;
}

int lunar_runner_forward(lunar_runner_t *r, const lunar_batch_t *b, float *logits)
{
    const lunar_batch_t *ran = b;
    int rc = run_decoder(r, b, &ran);
    if (rc) return rc;
    lunar_backend_t *be = r->be;
    const lunar_weights_t *w = r->w;
    /* logits only for the rows asked for (xn is final-normed now); straight into the caller's
     * buffer when backend memory is host memory, else in chunks of max_num_seqs rows. A padded
     * step (ran != b) has them in r->logits already (run_decoder): b's rows are copied out. */
    int V = r->c->vocab_size, chunk = be->host_memory ? b->num_logits : r->o.max_num_seqs;
    if (ran != b) be->copy_out(be, logits, r->logits, sizeof(float) * (size_t)b->num_logits * V);
    for (int i0 = 0; ran == b && i0 < b->num_logits; i0 += chunk) {
        int n = b->num_logits - i0 < chunk ? b->num_logits - i0 : chunk;
        float *dst = be->host_memory ? logits + (size_t)i0 * V : r->logits;
        be->logits(be, dst, r->xn, b, i0, n, w->lm_head);
        if (!be->host_memory) be->copy_out(be, logits + (size_t)i0 * V, r->logits, sizeof(float) * n * V);
    }
    rc = be->end_step(be);
    if (rc) return rc;
    r->tokens += (uint64_t)b->num_tokens;
    return 0;
}

int lunar_runner_forward_sample(lunar_runner_t *r, const lunar_batch_t *b, const lunar_sample_batch_t *s)
{
    lunar_backend_t *be = r->be;
    if (!be->sample)
        return lunar_error(LUNAR_EUNSUPPORTED, "forward_sample: the %s backend does not sample", be->name);
    if (!s || s->num_rows != b->num_logits)
        return lunar_error(LUNAR_EINVAL, "forward_sample: %d sample rows for %d logits rows", s ? s->num_rows : -1,
                           b->num_logits);
    const lunar_batch_t *ran = b;
    int rc = run_decoder(r, b, &ran);
    if (rc) return rc;
    /* the logits stay in backend memory and are sampled there, max_num_seqs rows at a time; a
     * padded step's (run_decoder made them, all its rows) are sampled for b's rows only */
    int chunk = r->o.max_num_seqs;
    for (int i0 = 0; i0 < b->num_logits; i0 += chunk) {
        int n = b->num_logits - i0 < chunk ? b->num_logits - i0 : chunk;
        size_t t = (size_t)i0 * (size_t)s->top_stride;
        lunar_sample_batch_t part = {
            .num_rows = n, .rows = s->rows + i0, .pen_start = s->pen_start ? s->pen_start + i0 : NULL,
            .pen_ids = s->pen_ids, .pen_counts = s->pen_counts, .top_stride = s->top_stride,
            .tokens = s->tokens + i0, .logprobs = s->logprobs ? s->logprobs + i0 : NULL,
            .top_ids = s->top_ids ? s->top_ids + t : NULL, .top_logprobs = s->top_logprobs ? s->top_logprobs + t : NULL,
        };
        if (ran == b) be->logits(be, r->logits, r->xn, b, i0, n, r->w->lm_head);
        be->sample(be, r->logits, r->c->vocab_size, &part);
    }
    rc = be->end_step(be);
    if (rc) return rc;
    r->tokens += (uint64_t)b->num_tokens;
    return 0;
}

static int iface_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    return lunar_runner_forward((lunar_runner_t *)ctx, b, logits);
}

static int iface_forward_sample(void *ctx, const lunar_batch_t *b, const lunar_sample_batch_t *s)
{
    return lunar_runner_forward_sample((lunar_runner_t *)ctx, b, s);
}

void lunar_runner_forward_iface(lunar_runner_t *r, lunar_forward_iface_t *out)
{
    out->ctx = r;
    out->vocab_size = r->c->vocab_size;
    out->forward = iface_forward;
    /* LUNAR_GPU_SAMPLING=0 keeps sampling on the host, to compare (tests, benchmarks) */
    const char *env = getenv("LUNAR_GPU_SAMPLING");
    int off = env && !strcmp(env, "0");
    out->forward_sample = r->be->sample && !off ? iface_forward_sample : NULL;
}

uint64_t lunar_runner_tokens_computed(const lunar_runner_t *r) { return r->tokens; }
uint64_t lunar_runner_padding_tokens(const lunar_runner_t *r) { return r->pad_tokens; }

/* ---- memory: the start-up breakdown, the profiling forward, resizing the KV cache ---- */

int lunar_runner_memory(const lunar_runner_t *r, lunar_runner_memory_t *out)
{
    if (!r || !out) return lunar_error(LUNAR_EINVAL, "lunar_runner_memory: NULL argument");
    memset(out, 0, sizeof *out);
    out->block_size = r->o.block_size;
    out->num_kv_blocks = r->o.num_kv_blocks;
    out->kv_bytes_per_token = 2ull * r->num_layers * kv_row_bytes(r);
    out->kv_cache = 2ull * r->num_layers * r->layer_bytes;
    out->weights = r->weight_bytes;
    out->activations = r->act_bytes + r->prep_scratch + r->prof_growth;
    out->cuda_graphs = r->prof_graphs;
    out->device_used = device_used(r, &out->device_total);
    uint64_t known = out->weights + out->activations + out->cuda_graphs + out->kv_cache;
    if (r->profiled) out->other = r->prof_other; /* graphs dropped by a resize are captured again */
    else if (out->device_used > known) out->other = out->device_used - known;
    out->profiled = r->profiled;
    out->profile_tokens = r->prof_tokens;
    out->profile_seqs = r->prof_seqs;
    out->graph_seqs = r->prof_graph_seqs;
    return 0;
}

/* A synthetic step of the profile, in buffers sized for its largest shape. */
typedef struct pstep {
    int32_t *tok, *pos, *qs, *lens, *bt, *li;
    int64_t *slot;
    float *logits;
    int width;  /* block-table width: blocks of the longest sequence */
} pstep_t;

enum { P_PREFILL, P_DECODE, P_DECODE_ONE_ROW };

/* Sequence s of `nseq` holds len(s) tokens in blocks (first(s) + j) % num_kv_blocks. P_PREFILL:
 * nseq sequences of L tokens but the last, `tokens` in all, every token in the step; P_DECODE:
 * the last token of each, over bps blocks each when the cache has a block per sequence, else
 * one shared block at distinct offsets, so no two tokens write one slot while the cache holds a
 * slot per token. Logits of every sequence's last token, or of the first sequence only with
 * P_DECODE_ONE_ROW (a step the CUDA backend runs eagerly: its graphs need a row per token). */
static int pstep_run(lunar_runner_t *r, pstep_t *p, int nseq, int tokens, int L, int kind,
                     const lunar_sample_batch_t *sb)
{
    int decode = kind != P_PREFILL;
    int bs = r->o.block_size, nb = r->o.num_kv_blocks, V = r->c->vocab_size;
    int bps = (L + bs - 1) / bs;
    if (decode) bps = nb >= nseq ? (nb / nseq < bps ? nb / nseq : bps) : 1;
    int T = 0;
    p->qs[0] = 0;
    for (int s = 0; s < nseq; s++) {
        int len, first;
        if (!decode) {
            len = tokens - s * L < L ? tokens - s * L : L;
            first = s * bps;
        } else if (nb >= nseq) {
            len = bps * bs < L ? bps * bs : L;
            first = s * bps;
        } else {
            len = (s / nb) % bs + 1;
            first = s % nb;
        }
        for (int j = 0; j < p->width; j++) p->bt[(size_t)s * p->width + j] = (first + (j < bps ? j : 0)) % nb;
        for (int i = decode ? len - 1 : 0; i < len; i++, T++) {
            p->tok[T] = (s + i) % V;
            p->pos[T] = i;
            p->slot[T] = (int64_t)p->bt[(size_t)s * p->width + i / bs] * bs + i % bs;
        }
        p->qs[s + 1] = T;
        p->lens[s] = len;
        p->li[s] = T - 1;
    }
    lunar_batch_t b = {T, nseq, p->tok, p->pos, p->slot, p->qs, p->lens, p->bt, p->width, p->li,
                       kind == P_DECODE_ONE_ROW ? 1 : nseq};
    return sb ? lunar_runner_forward_sample(r, &b, sb) : lunar_runner_forward(r, &b, p->logits);
}

int lunar_runner_profile(lunar_runner_t *r, int max_seq_len, lunar_runner_memory_t *out)
{
    if (!r) return lunar_error(LUNAR_EINVAL, "lunar_runner_profile: NULL runner");
    if (r->o.num_kv_blocks < 1) return lunar_error(LUNAR_ESTATE, "runner: no KV cache (a failed resize)");
    int T = r->o.max_num_batched_tokens, bs = r->o.block_size;
    int S = r->o.max_num_seqs < T ? r->o.max_num_seqs : T; /* a decode step is a step too */
    int cap = r->o.num_kv_blocks * bs;
    int L = T;
    if (max_seq_len > 0 && max_seq_len < L) L = max_seq_len;
    if (cap < L) L = cap;
    int nseq = (T + L - 1) / L;
    if (nseq > S) nseq = S;
    int tokens = (int64_t)nseq * L < T ? nseq * L : T;
    int G = r->be->graph_max_tokens < S ? r->be->graph_max_tokens : S;

    int maxT = tokens > S ? tokens : S, maxS = nseq > S ? nseq : S;
    pstep_t p = {0};
    p.width = (L + bs - 1) / bs;
    p.tok = calloc((size_t)maxT, sizeof *p.tok);
    p.pos = calloc((size_t)maxT, sizeof *p.pos);
    p.slot = calloc((size_t)maxT, sizeof *p.slot);
    p.qs = calloc((size_t)maxS + 1, sizeof *p.qs);
    p.lens = calloc((size_t)maxS, sizeof *p.lens);
    p.li = calloc((size_t)maxS, sizeof *p.li);
    p.bt = calloc((size_t)maxS * p.width, sizeof *p.bt);
    p.logits = malloc((size_t)maxS * r->c->vocab_size * sizeof(float));
    int rc = 0;
    if (!p.tok || !p.pos || !p.slot || !p.qs || !p.lens || !p.li || !p.bt || !p.logits)
        rc = lunar_error(LUNAR_ENOMEM, "runner: out of host memory for the profiling step");

    /* the largest step and an eager decode of max_num_seqs (what they create lazily is
     * workspace), the graph step twice (capture, replay: what it adds is the graph's), then a
     * decode of max_num_seqs with all its logits rows when the graph step was not that */
    uint64_t tokens_before = r->tokens, growth = 0, graphs = 0;
    uint64_t u0 = device_used(r, NULL), u1 = u0, u2 = u0;
    if (!rc) rc = pstep_run(r, &p, nseq, tokens, L, P_PREFILL, NULL);
    if (!rc) rc = pstep_run(r, &p, S, S, L, P_DECODE_ONE_ROW, NULL);
    if (!rc) u1 = device_used(r, NULL);
    for (int i = 0; i < 2 && G > 0 && !rc; i++) rc = pstep_run(r, &p, G, G, L, P_DECODE, NULL);
    if (!rc) u2 = device_used(r, NULL);
    if (!rc && S != G) rc = pstep_run(r, &p, S, S, L, P_DECODE, NULL);
    if (!rc && r->be->sample) {
        /* the sample op's scratch, which it grows on first use: a decode of max_num_seqs rows
         * with top-k/top-p draws, a penalty entry and logprobs, its largest kind of step */
        lunar_sample_row_t *rows = calloc((size_t)S, sizeof *rows);
        int32_t *tokens_out = calloc((size_t)S, 4), *pen = calloc((size_t)S + 1, 4), *ids = calloc((size_t)S, 4);
        int32_t *cnt = calloc((size_t)S, 4), *top = calloc((size_t)S * 5, 4);
        float *lp = calloc((size_t)S, 4), *tlp = calloc((size_t)S * 5, 4);
        if (!rows || !tokens_out || !pen || !ids || !cnt || !top || !lp || !tlp) {
            rc = lunar_error(LUNAR_ENOMEM, "runner: out of host memory for the profiling step");
        } else {
            for (int i = 0; i < S; i++) {
                rows[i] = (lunar_sample_row_t){.temperature = 1.0f, .top_p = 0.9f, .top_k = 50, .seq_index = i,
                                               .repetition_penalty = 1.1f, .logprobs = 5, .seed = 1};
                pen[i + 1] = i + 1, ids[i] = i % r->c->vocab_size, cnt[i] = 1;
            }
            lunar_sample_batch_t sb = {S, rows, pen, ids, cnt, 5, tokens_out, lp, top, tlp};
            rc = pstep_run(r, &p, S, S, L, P_DECODE, &sb);
        }
        free(rows), free(tokens_out), free(pen), free(ids), free(cnt), free(top), free(lp), free(tlp);
    }
    free(p.tok), free(p.pos), free(p.slot), free(p.qs), free(p.lens), free(p.li), free(p.bt), free(p.logits);
    r->tokens = tokens_before; /* not the engine's work */
    if (rc) return rc;
    uint64_t u3 = device_used(r, NULL);
    lunar_log(LUNAR_LOG_DEBUG, "memory", "profile: device in use %llu B before, %llu after the %d-token step and an "
              "eager decode of %d, %llu after the graph step of %d, %llu at the end", (unsigned long long)u0,
              (unsigned long long)u1, tokens, S, (unsigned long long)u2, G, (unsigned long long)u3);
    growth = (u1 > u0 ? u1 - u0 : 0) + (u3 > u2 ? u3 - u2 : 0);
    graphs = u2 > u1 ? u2 - u1 : 0;
    r->prof_growth = growth;
    r->prof_graphs = graphs;
    r->prof_tokens = tokens;
    r->prof_seqs = nseq;
    r->prof_graph_seqs = G > 0 ? G : 0;
    r->profiled = 0;
    lunar_runner_memory_t m;
    lunar_runner_memory(r, &m); /* the residual, once, as the profile left the device */
    r->prof_other = m.other;
    r->profiled = 1;
    if (out) lunar_runner_memory(r, out);
    return 0;
}

int lunar_runner_set_kv_blocks(lunar_runner_t *r, int num_kv_blocks)
{
    if (!r) return lunar_error(LUNAR_EINVAL, "lunar_runner_set_kv_blocks: NULL runner");
    if (num_kv_blocks < 1) return lunar_error(LUNAR_EINVAL, "runner: num_kv_blocks %d (>= 1 needed)", num_kv_blocks);
    int old = r->o.num_kv_blocks;
    bfree(r->be, r->kcache), bfree(r->be, r->vcache); /* the backend drops graphs that read them */
    r->kcache = r->vcache = NULL;
    if (!kv_alloc(r, num_kv_blocks)) return 0;
    uint64_t per_block = 2ull * r->num_layers * r->o.block_size * kv_row_bytes(r);
    int back = old > 0 && !kv_alloc(r, old);
    return lunar_error(LUNAR_ENOMEM, "runner: out of %s memory for a KV cache of %d blocks (%.2f GiB)%s",
                       r->be->host_memory ? "host" : "device", num_kv_blocks,
                       (double)per_block * num_kv_blocks / 1073741824.0,
                       back ? "; the previous size is kept" : "; the previous size could not be restored either");
}
