/*
 * model/arch.c — the architecture table: which Hugging Face tensor names a model family
 * uses, which lunar_weights_t field each one fills, and the shape each must have.
 *
 * One table of name patterns serves three purposes, so they cannot disagree: binding loaded
 * tensors to weights (with a shape check per tensor), listing what a dummy model must hold,
 * and counting parameters for `lunar inspect` / `lunar memory` without any weight file.
 * Families differ only in data: which optional rows apply (bias, q/k norm, MoE experts) and
 * the few names that differ (Baichuan's fused W_pack, Mixtral's block_sparse_moe.w1/w2/w3).
 */
#include "model/model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { FAM_LLAMA, FAM_BAICHUAN, FAM_QWEN3_MOE, FAM_MIXTRAL } family_t;

static const struct { const char *arch, *model_type; family_t fam; } families[] = {
    { "LlamaForCausalLM", "llama", FAM_LLAMA },
    { "MistralForCausalLM", "mistral", FAM_LLAMA },
    { "Qwen2ForCausalLM", "qwen2", FAM_LLAMA },
    { "Qwen3ForCausalLM", "qwen3", FAM_LLAMA },
    { "BaiChuanForCausalLM", "baichuan", FAM_BAICHUAN },  /* Baichuan-7B */
    { "BaichuanForCausalLM", "baichuan", FAM_BAICHUAN },  /* Baichuan2-7B (13B is rejected: ALiBi) */
    { "Qwen3MoeForCausalLM", "qwen3_moe", FAM_QWEN3_MOE },
    { "MixtralForCausalLM", "mixtral", FAM_MIXTRAL },
};
#define NFAMILIES ((int)(sizeof families / sizeof families[0]))

/* The family by architectures[0], else by model_type; -1 if unknown. */
static int family_of(const lunar_model_config_t *c)
{
    for (int i = 0; i < NFAMILIES; i++)
        if (c->architecture[0] && strcmp(c->architecture, families[i].arch) == 0) return (int)families[i].fam;
    for (int i = 0; i < NFAMILIES; i++)
        if (!c->architecture[0] && strcmp(c->model_type, families[i].model_type) == 0) return (int)families[i].fam;
    return -1;
}

int arch_check(const lunar_model_config_t *c, const char *what)
{
    int fam = family_of(c);
    if (fam < 0) {
        char known[512] = "";
        for (int i = 0; i < NFAMILIES; i++) {
            if (i && strcmp(families[i].arch, families[i - 1].arch) == 0) continue;
            strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
            strncat(known, families[i].arch, sizeof known - strlen(known) - 1);
        }
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: architecture \"%s\" (model_type \"%s\") is not supported; known: %s",
                           what, c->architecture[0] ? c->architecture : "?", c->model_type[0] ? c->model_type : "?", known);
    }
    /* Baichuan-13B and Baichuan2-13B use ALiBi position bias instead of RoPE (40 layers,
     * hidden 5120); the 7B models use RoPE. vLLM tells them apart by hidden_size (4096 = RoPE);
     * we reject only the 13B shapes, so tiny test models of the 7B layout still load. */
    if (fam == FAM_BAICHUAN && (c->hidden_size == 5120 || c->num_layers == 40))
        return lunar_error(LUNAR_EUNSUPPORTED,
                           "%s: this Baichuan model (hidden_size %d, %d layers) is a 13B one, which uses ALiBi "
                           "position bias instead of RoPE; lunar supports Baichuan-7B and Baichuan2-7B only",
                           what, c->hidden_size, c->num_layers);
    if ((fam == FAM_QWEN3_MOE || fam == FAM_MIXTRAL) && c->num_experts <= 0)
        return lunar_error(LUNAR_EFORMAT, "%s: a %s model needs num_experts", what, c->model_type);
    return 0;
}

bool arch_layer_is_moe(const lunar_model_config_t *c, int layer)
{
    return c->num_experts > 0 && (layer + 1) % c->decoder_sparse_step == 0;
}

/* ---- the table -------------------------------------------------------------------------- */

/* What a dimension is, so one row holds for every config. */
enum { D_NONE, D_VOCAB, D_HIDDEN, D_Q, D_KV, D_QKV, D_HEAD, D_INTER, D_MOE_INTER, D_EXPERTS };

/* Where a row applies. */
enum {
    W_ALWAYS = 0, W_QKV_BIAS = 1, W_O_BIAS = 2, W_QK_NORM = 4, W_DENSE = 8, W_MOE = 16,
    W_SPLIT_QKV = 32, W_FUSED_QKV = 64, W_EXPERT = 128, W_LM_HEAD = 256,
};

/* Where a tensor goes: an offset into lunar_layer_weights_t (or lunar_weights_t for
 * global rows), or an expert array. */
enum { F_GLOBAL_EMBED = 1000, F_GLOBAL_NORM, F_GLOBAL_LM_HEAD, F_WPACK, F_EXP_GATE, F_EXP_UP, F_EXP_DOWN };

typedef struct {
    const char *fmt;       /* printf pattern: %d = layer (then expert) */
    int where, field;
    int d0, d1;
} row_t;

#define LF(x) (int)offsetof(lunar_layer_weights_t, x)

static const row_t rows_common[] = {
    { "model.embed_tokens.weight", W_ALWAYS, F_GLOBAL_EMBED, D_VOCAB, D_HIDDEN },
    { "model.layers.%d.input_layernorm.weight", W_ALWAYS, LF(attn_norm), D_HIDDEN, D_NONE },
    { "model.layers.%d.self_attn.q_proj.weight", W_SPLIT_QKV, LF(wq), D_Q, D_HIDDEN },
    { "model.layers.%d.self_attn.k_proj.weight", W_SPLIT_QKV, LF(wk), D_KV, D_HIDDEN },
    { "model.layers.%d.self_attn.v_proj.weight", W_SPLIT_QKV, LF(wv), D_KV, D_HIDDEN },
    { "model.layers.%d.self_attn.W_pack.weight", W_FUSED_QKV, F_WPACK, D_QKV, D_HIDDEN },
    { "model.layers.%d.self_attn.q_proj.bias", W_QKV_BIAS, LF(bq), D_Q, D_NONE },
    { "model.layers.%d.self_attn.k_proj.bias", W_QKV_BIAS, LF(bk), D_KV, D_NONE },
    { "model.layers.%d.self_attn.v_proj.bias", W_QKV_BIAS, LF(bv), D_KV, D_NONE },
    { "model.layers.%d.self_attn.q_norm.weight", W_QK_NORM, LF(q_norm), D_HEAD, D_NONE },
    { "model.layers.%d.self_attn.k_norm.weight", W_QK_NORM, LF(k_norm), D_HEAD, D_NONE },
    { "model.layers.%d.self_attn.o_proj.weight", W_ALWAYS, LF(wo), D_HIDDEN, D_Q },
    { "model.layers.%d.self_attn.o_proj.bias", W_O_BIAS, LF(bo), D_HIDDEN, D_NONE },
    { "model.layers.%d.post_attention_layernorm.weight", W_ALWAYS, LF(ffn_norm), D_HIDDEN, D_NONE },
    { "model.layers.%d.mlp.gate_proj.weight", W_DENSE, LF(w_gate), D_INTER, D_HIDDEN },
    { "model.layers.%d.mlp.up_proj.weight", W_DENSE, LF(w_up), D_INTER, D_HIDDEN },
    { "model.layers.%d.mlp.down_proj.weight", W_DENSE, LF(w_down), D_HIDDEN, D_INTER },
    { NULL, 0, 0, 0, 0 },
};

static const row_t rows_qwen3_moe[] = {
    { "model.layers.%d.mlp.gate.weight", W_MOE, LF(router), D_EXPERTS, D_HIDDEN },
    { "model.layers.%d.mlp.experts.%d.gate_proj.weight", W_EXPERT, F_EXP_GATE, D_MOE_INTER, D_HIDDEN },
    { "model.layers.%d.mlp.experts.%d.up_proj.weight", W_EXPERT, F_EXP_UP, D_MOE_INTER, D_HIDDEN },
    { "model.layers.%d.mlp.experts.%d.down_proj.weight", W_EXPERT, F_EXP_DOWN, D_HIDDEN, D_MOE_INTER },
    { NULL, 0, 0, 0, 0 },
};

static const row_t rows_mixtral[] = {
    { "model.layers.%d.block_sparse_moe.gate.weight", W_MOE, LF(router), D_EXPERTS, D_HIDDEN },
    { "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", W_EXPERT, F_EXP_GATE, D_MOE_INTER, D_HIDDEN },
    { "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", W_EXPERT, F_EXP_UP, D_MOE_INTER, D_HIDDEN },
    { "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", W_EXPERT, F_EXP_DOWN, D_HIDDEN, D_MOE_INTER },
    { NULL, 0, 0, 0, 0 },
};

static const row_t rows_final[] = {
    { "model.norm.weight", W_ALWAYS, F_GLOBAL_NORM, D_HIDDEN, D_NONE },
    { "lm_head.weight", W_LM_HEAD, F_GLOBAL_LM_HEAD, D_VOCAB, D_HIDDEN },
    { NULL, 0, 0, 0, 0 },
};

static int64_t dim(const lunar_model_config_t *c, int d)
{
    switch (d) {
    case D_VOCAB: return c->vocab_size;
    case D_HIDDEN: return c->hidden_size;
    case D_Q: return (int64_t)c->num_heads * c->head_dim;
    case D_KV: return (int64_t)c->num_kv_heads * c->head_dim;
    case D_QKV: return (int64_t)(c->num_heads + 2 * c->num_kv_heads) * c->head_dim;
    case D_HEAD: return c->head_dim;
    case D_INTER: return c->intermediate_size;
    case D_MOE_INTER: return c->moe_intermediate_size;
    case D_EXPERTS: return c->num_experts;
    default: return 0;
    }
}

/* Does a row apply to this layer of this config? */
static bool applies(const lunar_model_config_t *c, int fam, int where, int layer)
{
    if (where & W_QKV_BIAS) return c->qkv_bias;
    if (where & W_O_BIAS) return c->o_bias;
    if (where & W_QK_NORM) return c->qk_norm;
    if (where & W_DENSE) return !arch_layer_is_moe(c, layer);
    if (where & (W_MOE | W_EXPERT)) return arch_layer_is_moe(c, layer);
    if (where & W_SPLIT_QKV) return fam != FAM_BAICHUAN;
    if (where & W_FUSED_QKV) return fam == FAM_BAICHUAN;
    return true;
}

typedef int (*row_fn)(void *ctx, const row_t *r, const arch_tensor_t *t, int layer, int expert);

static int emit(const lunar_model_config_t *c, const row_t *r, int layer, int expert, row_fn fn, void *ctx)
{
    arch_tensor_t t;
    memset(&t, 0, sizeof t);
    if (expert >= 0) snprintf(t.name, sizeof t.name, r->fmt, layer, expert);
    else if (layer >= 0) snprintf(t.name, sizeof t.name, r->fmt, layer);
    else snprintf(t.name, sizeof t.name, "%s", r->fmt);
    t.ndim = r->d1 == D_NONE ? 1 : 2;
    t.shape[0] = dim(c, r->d0);
    t.shape[1] = r->d1 == D_NONE ? 0 : dim(c, r->d1);
    t.optional = (r->where & W_LM_HEAD) && c->tie_word_embeddings;
    return fn(ctx, r, &t, layer, expert);
}

static int walk(const lunar_model_config_t *c, row_fn fn, void *ctx)
{
    int fam = family_of(c);
    if (fam < 0) return arch_check(c, "config.json");
    const row_t *moe = fam == FAM_MIXTRAL ? rows_mixtral : rows_qwen3_moe;
    int rc;
    if ((rc = emit(c, &rows_common[0], -1, -1, fn, ctx))) return rc;
    for (int l = 0; l < c->num_layers; l++) {
        for (const row_t *r = rows_common + 1; r->fmt; r++)
            if (applies(c, fam, r->where, l) && (rc = emit(c, r, l, -1, fn, ctx))) return rc;
        if (!arch_layer_is_moe(c, l)) continue;
        for (const row_t *r = moe; r->fmt; r++) {
            if (!(r->where & W_EXPERT)) {
                if ((rc = emit(c, r, l, -1, fn, ctx))) return rc;
                continue;
            }
            for (int e = 0; e < c->num_experts; e++)
                if ((rc = emit(c, r, l, e, fn, ctx))) return rc;
        }
    }
    for (const row_t *r = rows_final; r->fmt; r++)
        if ((rc = emit(c, r, -1, -1, fn, ctx))) return rc;
    return 0;
}

typedef struct { int (*fn)(void *, const arch_tensor_t *); void *ctx; } expctx_t;

static int expected_row(void *ctx, const row_t *r, const arch_tensor_t *t, int layer, int expert)
{
    expctx_t *e = ctx;
    (void)r; (void)layer; (void)expert;
    return e->fn(e->ctx, t);
}

int arch_expected(const lunar_model_config_t *c, int (*fn)(void *ctx, const arch_tensor_t *t), void *ctx)
{
    expctx_t e = { fn, ctx };
    return walk(c, expected_row, &e);
}

/* ---- binding ------------------------------------------------------------------------------ */

/* Open-addressing hash of tensor names -> index into m->tensors. */
typedef struct {
    int *slots;
    size_t cap;
    lunar_model_t *m;
    unsigned char *used;   /* per tensor: bound to a weight */
} bindctx_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int find(const bindctx_t *b, const char *name)
{
    for (size_t i = hash_str(name) & (b->cap - 1);; i = (i + 1) & (b->cap - 1)) {
        int v = b->slots[i];
        if (v < 0) return -1;
        if (strcmp(b->m->tensors[v].name, name) == 0) return v;
    }
}

static bool shape_is(const lunar_tensor_t *t, const arch_tensor_t *want)
{
    if (t->ndim != want->ndim) return false;
    for (int i = 0; i < want->ndim; i++)
        if (t->shape[i] != want->shape[i]) return false;
    return true;
}

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

/* The file a tensor came from, for error messages: tensors keep no file, so search. */
static const char *origin(const lunar_model_t *m) { return m->nfiles == 1 ? m->files[0].path : m->dir; }

static int bind_row(void *ctx, const row_t *r, const arch_tensor_t *want, int layer, int expert)
{
    bindctx_t *b = ctx;
    lunar_model_t *m = b->m;
    int i = find(b, want->name);
    if (i < 0) {
        if (want->optional) return 0;
        return lunar_error(LUNAR_EFORMAT, "%s: tensor %s is missing (a %s with these settings needs it)",
                           origin(m), want->name, m->cfg.architecture);
    }
    lunar_tensor_t *t = &m->tensors[i];
    if (!shape_is(t, want)) {
        char got[96], exp[96];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(exp, sizeof exp, want->ndim, want->shape);
        return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: shape %s, but config.json implies %s", origin(m),
                           want->name, got, exp);
    }
    if (!dtype_is_float(t->dtype))
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: tensor %s: dtype %s (quantized weights are not supported yet)",
                           origin(m), want->name, lunar_dtype_name(t->dtype));
    b->used[i] = 1;
    lunar_layer_weights_t *L = layer >= 0 ? &m->layers[layer] : NULL;
    switch (r->field) {
    case F_GLOBAL_EMBED: m->w.embed = t; break;
    case F_GLOBAL_NORM: m->w.final_norm = t; break;
    case F_GLOBAL_LM_HEAD: m->w.lm_head = t; break;
    case F_EXP_GATE: L->expert_gate[expert] = t; break;
    case F_EXP_UP: L->expert_up[expert] = t; break;
    case F_EXP_DOWN: L->expert_down[expert] = t; break;
    case F_WPACK: {
        /* q, k, v are consecutive row ranges of W_pack: views, no copy */
        const lunar_model_config_t *c = &m->cfg;
        int64_t rows[3] = { dim(c, D_Q), dim(c, D_KV), dim(c, D_KV) };
        lunar_tensor_t **dst[3] = { &L->wq, &L->wk, &L->wv };
        size_t off = 0, es = lunar_dtype_size(t->dtype);
        for (int k = 0; k < 3; k++) {
            lunar_tensor_t *v = &m->views[3 * layer + k];
            *v = *t;
            v->shape[0] = rows[k];
            v->data = t->data ? (char *)t->data + off : NULL;
            v->nbytes = (size_t)(rows[k] * t->shape[1]) * es;
            off += v->nbytes;
            *dst[k] = v;
        }
        break;
    }
    default: *(lunar_tensor_t **)((char *)L + r->field) = t; break;
    }
    return 0;
}

/* Tensors a checkpoint may carry that no forward reads (old Llama/Baichuan exports save
 * RoPE's inverse frequencies). */
static bool ignorable(const char *name)
{
    size_t n = strlen(name);
    static const char suffix[] = "rotary_emb.inv_freq";
    return n >= sizeof suffix - 1 && strcmp(name + n - (sizeof suffix - 1), suffix) == 0;
}

/* Baichuan2's NormHead divides each lm_head row by its L2 norm at every forward; doing it
 * once here (into an owned copy, as vLLM does at load) leaves a plain lm_head for backends. */
static int normalize_head(lunar_model_t *m)
{
    lunar_tensor_t *t = m->w.lm_head;
    if (!t->data || t == m->w.embed) return 0;
    int64_t rows = t->shape[0], cols = t->shape[1];
    size_t es = lunar_dtype_size(t->dtype);
    void *out = malloc(t->nbytes);
    float *row = malloc((size_t)cols * sizeof *row);
    if (!out || !row || model_own(m, out)) {
        free(out);
        free(row);
        return lunar_error(LUNAR_ENOMEM, "%s: out of memory", m->dir);
    }
    for (int64_t r = 0; r < rows; r++) {
        dtype_convert(LUNAR_DTYPE_F32, row, t->dtype, (char *)t->data + (size_t)(r * cols) * es, (size_t)cols);
        double ss = 0;
        for (int64_t k = 0; k < cols; k++) ss += (double)row[k] * row[k];
        double norm = sqrt(ss);
        float inv = (float)(1.0 / (norm > 1e-12 ? norm : 1e-12));   /* F.normalize's eps */
        for (int64_t k = 0; k < cols; k++) row[k] *= inv;
        dtype_convert(t->dtype, (char *)out + (size_t)(r * cols) * es, LUNAR_DTYPE_F32, row, (size_t)cols);
    }
    free(row);
    t->data = out;
    lunar_log(LUNAR_LOG_INFO, "model", "Baichuan2: lm_head rows normalized (NormHead)");
    return 0;
}

int arch_bind(lunar_model_t *m)
{
    const lunar_model_config_t *c = &m->cfg;
    bindctx_t b = { NULL, 16, m, NULL };
    while (b.cap < (size_t)m->ntensors * 2) b.cap *= 2;
    b.slots = malloc(b.cap * sizeof *b.slots);
    b.used = calloc((size_t)m->ntensors + 1, 1);
    m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    m->views = calloc((size_t)c->num_layers * 3, sizeof *m->views);
    if (!b.slots || !b.used || !m->layers || !m->views) {
        free(b.slots);
        free(b.used);
        return lunar_error(LUNAR_ENOMEM, "%s: out of memory", m->dir);
    }
    m->w.layers = m->layers;
    int rc = 0;
    memset(b.slots, 0xff, b.cap * sizeof *b.slots);
    for (int i = 0; i < m->ntensors && !rc; i++) {
        if (find(&b, m->tensors[i].name) >= 0) {
            rc = lunar_error(LUNAR_EFORMAT, "%s: tensor %s appears twice", origin(m), m->tensors[i].name);
            break;
        }
        size_t s = hash_str(m->tensors[i].name) & (b.cap - 1);
        while (b.slots[s] >= 0) s = (s + 1) & (b.cap - 1);
        b.slots[s] = i;
    }
    for (int l = 0; l < c->num_layers && !rc && c->num_experts > 0; l++) {
        if (!arch_layer_is_moe(c, l)) continue;
        lunar_layer_weights_t *L = &m->layers[l];
        L->expert_gate = calloc((size_t)c->num_experts, sizeof(lunar_tensor_t *));
        L->expert_up = calloc((size_t)c->num_experts, sizeof(lunar_tensor_t *));
        L->expert_down = calloc((size_t)c->num_experts, sizeof(lunar_tensor_t *));
        if (!L->expert_gate || !L->expert_up || !L->expert_down)
            rc = lunar_error(LUNAR_ENOMEM, "%s: out of memory", m->dir);
    }
    if (!rc) rc = walk(c, bind_row, &b);
    if (!rc && !m->w.lm_head) m->w.lm_head = m->w.embed;   /* tied */
    if (!rc && family_of(c) == FAM_BAICHUAN && strcmp(c->architecture, "BaichuanForCausalLM") == 0)
        rc = normalize_head(m);
    if (!rc) {
        int unused = 0;
        const char *first = NULL;
        for (int i = 0; i < m->ntensors; i++)
            if (!b.used[i] && !ignorable(m->tensors[i].name)) {
                if (!first) first = m->tensors[i].name;
                unused++;
            }
        if (unused)
            lunar_log(LUNAR_LOG_WARN, "model", "%s: %d tensors are not used by %s (first: %s)", m->dir, unused,
                      c->architecture, first);
    }
    free(b.slots);
    free(b.used);
    return rc;
}

/* ---- parameter counts and tensor-parallel shards ---------------------------------------- */

/* How tensor parallelism splits a tensor follows from what its dimensions are (as in vLLM's
 * column/row-parallel linears): rows of q/gate/up/vocab and columns of o/down are split
 * tp ways; k/v rows hold max(1, kv_heads/tp) heads (replicated when tp > kv_heads); norms,
 * the o_proj bias and the MoE router are whole on every GPU. */
static int64_t shard_dim(const lunar_model_config_t *c, int d, int tp, bool *split)
{
    int64_t kvpg = c->num_kv_heads >= tp ? c->num_kv_heads / tp : 1;
    *split = true;
    switch (d) {
    case D_VOCAB: return c->vocab_size / tp;
    case D_Q: return (int64_t)c->num_heads / tp * c->head_dim;
    case D_KV: return kvpg * c->head_dim;
    case D_QKV: return ((int64_t)c->num_heads / tp + 2 * kvpg) * c->head_dim;
    case D_INTER: return c->intermediate_size / tp;
    case D_MOE_INTER: return c->moe_intermediate_size / tp;
    default: *split = false; return dim(c, d);
    }
}

static int group_of(const row_t *r)
{
    if (r->where & W_EXPERT) return LUNAR_PARAM_EXPERTS;
    if (r->where & W_MOE) return LUNAR_PARAM_ROUTER;
    if (r->where & W_DENSE) return LUNAR_PARAM_MLP;
    if (r->field == F_GLOBAL_EMBED) return LUNAR_PARAM_EMBED;
    if (r->field == F_GLOBAL_LM_HEAD) return LUNAR_PARAM_LM_HEAD;
    if (r->d1 == D_NONE && strstr(r->fmt, "norm")) return LUNAR_PARAM_NORM;
    return LUNAR_PARAM_ATTENTION;
}

typedef struct { arch_param_fn fn; void *ctx; } shardctx_t;

static int shard_row(void *ctx, const row_t *r, const arch_tensor_t *t, int layer, int expert)
{
    shardctx_t *s = ctx;
    (void)expert;
    return s->fn(s->ctx, r, t, layer, group_of(r));
}

int arch_params(const lunar_model_config_t *c, arch_param_fn fn, void *ctx)
{
    shardctx_t s = { fn, ctx };
    return walk(c, shard_row, &s);
}

int64_t arch_shard_numel(const lunar_model_config_t *c, const void *row, int tp)
{
    const row_t *r = row;
    bool s0, s1;
    int64_t a = shard_dim(c, r->d0, tp, &s0);
    if (r->d1 == D_NONE) return a;
    int64_t b = shard_dim(c, r->d1, tp, &s1);
    /* a matrix is split along one dimension only: rows when the first is split, else columns */
    return s0 ? a * dim(c, r->d1) : dim(c, r->d0) * b;
}
