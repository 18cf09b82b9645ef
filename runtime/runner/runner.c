/*
 * runner.c — the model forward for one engine step, and the state it runs in.
 *
 * lunar_runner_forward() is the whole decoder in one function that reads top to bottom
 * (llama2.c style): embed, then per layer attention and MLP, then the final norm and the
 * logits of the rows the engine asked for. Architecture differences are data in the config
 * and weights (q/k/v bias, q/k norm, sliding window, tied head, rope scaling); the batch is
 * flat and token-major, so prefill chunks and decodes of many sequences run as one.
 */
#include "lunar/runner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "runner/ops.h"
#include "runner/pool.h"
#include "runner/rope.h"

void dtype_convert(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n);

typedef struct layer_vecs {     /* small per-layer vectors kept as f32 */
    float *attn_norm, *ffn_norm, *q_norm, *k_norm, *bq, *bk, *bv, *bo;
} layer_vecs_t;

struct lunar_runner {
    const lunar_model_t *model;
    const lunar_model_config_t *c;
    const lunar_weights_t *w;
    lunar_runner_options_t o;
    ops_ctx_t ops;
    int nthreads;

    layer_vecs_t *lv;
    float *final_norm;
    float *inv_freq, attn_factor;   /* [rot/2] */
    int rot;

    float *kcache, *vcache;         /* [layers][blocks][block_size][kv_heads][head_dim] */
    size_t layer_stride;            /* floats per layer in each cache */

    /* scratch for max_num_batched_tokens */
    float *x, *xn, *q, *k, *v, *att, *proj, *gate, *up, *cs, *dyn_freq;
    int32_t *seq_of;
    uint64_t tokens;
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
    (void)backend;
    const lunar_model_config_t *c = lunar_model_config(m);
    return 2ull * c->num_layers * c->num_kv_heads * c->head_dim * sizeof(float);
}

static float *vec_f32(const lunar_tensor_t *t, int *err)
{
    if (!t) return NULL;
    size_t n = t->nbytes / lunar_dtype_size(t->dtype);
    float *v = malloc(n * sizeof(float));
    if (!v) { *err = 1; return NULL; }
    dtype_convert(LUNAR_DTYPE_F32, v, t->dtype, t->data, n);
    return v;
}

static void *xcalloc(size_t n, size_t sz, int *err)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) *err = 1;
    return p;
}

int lunar_runner_create(const lunar_model_t *m, const lunar_runner_options_t *opt, lunar_runner_t **out)
{
    if (!m || !opt || !out) return lunar_error(LUNAR_EINVAL, "lunar_runner_create: NULL argument");
    *out = NULL;
    const char *be = opt->backend ? opt->backend : "cpu";
    if (strcmp(be, "cpu") != 0)
        return lunar_error(LUNAR_EUNSUPPORTED, "backend \"%s\" is not available in this runner (cpu is)", be);
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
    r->o.backend = "cpu";
    int rc = pool_create(opt->num_threads, (pool_t **)&r->ops.pool);
    if (rc) { free(r); return rc; }
    r->nthreads = pool_threads(r->ops.pool);

    int err = 0;
    int L = c->num_layers, H = c->hidden_size, hd = c->head_dim, nq = c->num_heads, nk = c->num_kv_heads;
    int I = c->intermediate_size, T = opt->max_num_batched_tokens;
    r->lv = xcalloc((size_t)L, sizeof *r->lv, &err);
    for (int l = 0; l < L && !err; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        layer_vecs_t *v = &r->lv[l];
        v->attn_norm = vec_f32(lw->attn_norm, &err);
        v->ffn_norm = vec_f32(lw->ffn_norm, &err);
        v->q_norm = vec_f32(lw->q_norm, &err);
        v->k_norm = vec_f32(lw->k_norm, &err);
        v->bq = vec_f32(lw->bq, &err);
        v->bk = vec_f32(lw->bk, &err);
        v->bv = vec_f32(lw->bv, &err);
        v->bo = vec_f32(lw->bo, &err);
    }
    r->final_norm = vec_f32(w->final_norm, &err);
    r->rot = c->rope.rotary_dim > 0 && c->rope.rotary_dim <= hd ? c->rope.rotary_dim : hd;
    r->inv_freq = xcalloc((size_t)r->rot / 2 + 1, sizeof(float), &err);
    if (!err) rope_inv_freq(c, r->rot, r->inv_freq, &r->attn_factor);

    r->layer_stride = (size_t)opt->num_kv_blocks * opt->block_size * nk * hd;
    /* Touched now, not lazily: the cache is reserved at start-up as on a GPU, so resident
     * memory is what `lunar memory` says from the first request on and does not creep up as
     * the allocator reaches blocks it had not used yet. */
    r->kcache = malloc(r->layer_stride * L * sizeof(float));
    r->vcache = malloc(r->layer_stride * L * sizeof(float));
    if (!r->kcache || !r->vcache) err = 1;
    else {
        /* written through a volatile pointer: the compiler turns malloc + memset(0) into
         * calloc, which would leave the pages untouched again */
        size_t n = r->layer_stride * L;
        volatile float *kv[2] = {r->kcache, r->vcache};
        for (int half = 0; half < 2; half++)
            for (size_t i = 0; i < n; i += 1024) kv[half][i] = 0.0f;
        memset(r->kcache, 0, n * sizeof(float));
        memset(r->vcache, 0, n * sizeof(float));
    }

    int maxk = H > nq * hd ? H : nq * hd;
    if (I > maxk) maxk = I;
    r->ops.max_k = maxk;
    r->ops.scratch = xcalloc((size_t)r->nthreads, sizeof(float *), &err);
    for (int i = 0; i < r->nthreads && !err; i++)
        r->ops.scratch[i] = xcalloc((size_t)GEMM_NB * maxk + hd, sizeof(float), &err);

    int wide = H > nq * hd ? H : nq * hd;
    r->x = xcalloc((size_t)T * H, sizeof(float), &err);
    r->xn = xcalloc((size_t)T * wide, sizeof(float), &err);
    r->q = xcalloc((size_t)T * nq * hd, sizeof(float), &err);
    r->k = xcalloc((size_t)T * nk * hd, sizeof(float), &err);
    r->v = xcalloc((size_t)T * nk * hd, sizeof(float), &err);
    r->att = xcalloc((size_t)T * nq * hd, sizeof(float), &err);
    r->proj = xcalloc((size_t)T * H, sizeof(float), &err);
    r->gate = xcalloc((size_t)T * I, sizeof(float), &err);
    r->up = xcalloc((size_t)T * I, sizeof(float), &err);
    r->cs = xcalloc((size_t)T * r->rot, sizeof(float), &err);
    r->dyn_freq = xcalloc((size_t)r->rot / 2 + 1, sizeof(float), &err);
    r->seq_of = xcalloc((size_t)T, sizeof(int32_t), &err);
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
    if (r->ops.pool) pool_free(r->ops.pool);
    if (r->lv) {
        for (int l = 0; l < r->c->num_layers; l++) {
            layer_vecs_t *v = &r->lv[l];
            free(v->attn_norm), free(v->ffn_norm), free(v->q_norm), free(v->k_norm);
            free(v->bq), free(v->bk), free(v->bv), free(v->bo);
        }
        free(r->lv);
    }
    if (r->ops.scratch)
        for (int i = 0; i < r->nthreads; i++) free(r->ops.scratch[i]);
    free(r->ops.scratch);
    free(r->final_norm), free(r->inv_freq), free(r->kcache), free(r->vcache);
    free(r->x), free(r->xn), free(r->q), free(r->k), free(r->v), free(r->att), free(r->proj);
    free(r->gate), free(r->up), free(r->cs), free(r->dyn_freq), free(r->seq_of);
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
            float *cs = r->cs + (size_t)t * r->rot;
            float pos = (float)b->positions[t];
            for (int i = 0; i < half; i++) {
                float ang = pos * f[i]; /* float32 product, as torch's position @ inv_freq */
                cs[i] = (float)cos((double)ang) * r->attn_factor;
                cs[half + i] = (float)sin((double)ang) * r->attn_factor;
            }
            r->seq_of[t] = s;
        }
    }
}

int lunar_runner_forward(lunar_runner_t *r, const lunar_batch_t *b, float *logits)
{
    int rc = check_batch(r, b);
    if (rc) return rc;
    const lunar_model_config_t *c = r->c;
    const lunar_weights_t *w = r->w;
    ops_ctx_t *o = &r->ops;
    int T = b->num_tokens, H = c->hidden_size, hd = c->head_dim, nq = c->num_heads, nk = c->num_kv_heads;
    int I = c->intermediate_size;
    float eps = (float)c->rms_norm_eps, scale = 1.0f / sqrtf((float)hd);

    rope_tables(r, b);
    op_embed(o, r->x, b->token_ids, T, w->embed);
    op_rmsnorm(o, r->xn, r->x, T, H, r->lv[0].attn_norm, eps);
    for (int l = 0; l < c->num_layers; l++) {
        const lunar_layer_weights_t *lw = &w->layers[l];
        const layer_vecs_t *lv = &r->lv[l];
        float *kc = r->kcache + l * r->layer_stride, *vc = r->vcache + l * r->layer_stride;

        /* attention: q/k/v projections, per-head q/k norm (qwen3), rotary, cache, attend */
        op_gemm(o, r->q, r->xn, T, lw->wq, lv->bq);
        op_gemm(o, r->k, r->xn, T, lw->wk, lv->bk);
        op_gemm(o, r->v, r->xn, T, lw->wv, lv->bv);
        if (lv->q_norm) op_rmsnorm(o, r->q, r->q, T * nq, hd, lv->q_norm, eps);
        if (lv->k_norm) op_rmsnorm(o, r->k, r->k, T * nk, hd, lv->k_norm, eps);
        op_rope(o, r->q, r->k, T, nq, nk, hd, r->rot, r->cs);
        op_kv_write(o, kc, vc, r->k, r->v, T, nk, hd, b->slot_mapping);
        op_attention(o, r->att, r->q, kc, vc, b, r->seq_of, nq, nk, hd, r->o.block_size, c->sliding_window, scale);
        op_gemm(o, r->proj, r->att, T, lw->wo, lv->bo);
        op_add_rmsnorm(o, r->x, r->proj, r->xn, T, H, lv->ffn_norm, eps);

        /* MLP: down(silu(gate(x)) * up(x)) */
        op_gemm(o, r->gate, r->xn, T, lw->w_gate, NULL);
        op_gemm(o, r->up, r->xn, T, lw->w_up, NULL);
        op_silu_mul(o, r->gate, r->gate, r->up, (long)T * I);
        op_gemm(o, r->proj, r->gate, T, lw->w_down, NULL);
        const float *next_norm = l + 1 < c->num_layers ? r->lv[l + 1].attn_norm : r->final_norm;
        op_add_rmsnorm(o, r->x, r->proj, r->xn, T, H, next_norm, eps);
    }
    /* logits only for the rows asked for: gather the final-normed rows, then the head */
    for (int i = 0; i < b->num_logits; i++)
        memcpy(r->proj + (size_t)i * H, r->xn + (size_t)b->logits_indices[i] * H, sizeof(float) * H);
    if (b->num_logits > 0) op_gemm(o, logits, r->proj, b->num_logits, w->lm_head, NULL);
    r->tokens += (uint64_t)T;
    return 0;
}

static int iface_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    return lunar_runner_forward((lunar_runner_t *)ctx, b, logits);
}

void lunar_runner_forward_iface(lunar_runner_t *r, lunar_forward_iface_t *out)
{
    out->ctx = r;
    out->vocab_size = r->c->vocab_size;
    out->forward = iface_forward;
}

uint64_t lunar_runner_tokens_computed(const lunar_runner_t *r) { return r->tokens; }
