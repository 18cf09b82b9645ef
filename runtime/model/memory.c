/*
 * model/memory.c — parameter counts, tensor/pipeline-parallel validation and the memory plan
 * behind `lunar memory`: where a model's GPU memory goes, before anyone owns the GPU.
 *
 * Exact figures come from the architecture table (arch.c): weights are parameter bytes,
 * split as TP splits each tensor and PP splits the layers; KV bytes per token are
 * 2 (K and V) x layers x kv_heads x head_dim x dtype bytes, divided the same way.
 *
 * Estimates (stated as such wherever they are printed), per GPU, T = max_num_batched_tokens,
 * S = min(max_num_seqs, T) sequences, b = activation dtype bytes, tp-split sizes:
 *   activations = 2*T*hidden*b                      residual stream + normed input
 *               + T*(heads + 2*kv_heads)*head_dim*b  q, k, v
 *               + T*heads*head_dim*(b + 4)           attention output + f32 workspace
 *               + T*3*inter*b                        gate, up, act(gate)*up (dense MLP)
 *                 or T*k*3*moe_inter*b + T*experts*4  (MoE: top-k experts, f32 router logits)
 *               + 2*S*vocab*4                        f32 logits (all-gathered) + probabilities
 *   CUDA graphs = the activations above at T = S = G, the largest captured decode batch
 *                 (G = min(max_num_seqs, 512), vLLM's capture limit); the graphs share one pool
 *   cuBLAS      = 32 MiB workspace per GPU (cuBLAS's default on Hopper)
 *   NCCL        = 256 MiB per GPU when tp*pp > 1 (rough: channel buffers grow with peers)
 * KV cache sizing mirrors vLLM: available = total x utilization - weights - activations -
 * CUDA graphs - cuBLAS - NCCL (vLLM counts the last three as "non-torch" or leaves graphs to
 * the headroom; lunar reserves them up front so a start never runs out after the KV cache is
 * allocated); tokens = available / KV bytes per token, rounded down to whole blocks, the
 * smallest over the pipeline stages; max concurrency = tokens / max_model_len.
 */
#include "model/model_internal.h"

#include <stdio.h>
#include <string.h>

#define MIB (1024ull * 1024ull)

/* ---- parameter counts ------------------------------------------------------------------- */

typedef struct { lunar_param_count_t *out; const lunar_model_config_t *c; } countctx_t;

static int count_one(void *ctx, const void *row, const arch_tensor_t *t, int layer, int group)
{
    countctx_t *k = ctx;
    (void)row; (void)layer;
    if (t->optional) return 0;   /* tied lm_head: the embedding, counted once */
    uint64_t n = (uint64_t)model_numel(t->ndim, t->shape);
    k->out->group[group] += n;
    k->out->total += n;
    return 0;
}

int lunar_param_count(const lunar_model_config_t *c, lunar_param_count_t *out)
{
    memset(out, 0, sizeof *out);
    countctx_t k = { out, c };
    int rc = arch_params(c, count_one, &k);
    if (rc) return rc;
    out->active = out->total - out->group[LUNAR_PARAM_EXPERTS];
    if (c->num_experts > 0)
        out->active += out->group[LUNAR_PARAM_EXPERTS] / (uint64_t)c->num_experts * (uint64_t)c->num_experts_per_tok;
    return 0;
}

/* ---- parallel validation --------------------------------------------------------------- */

/* The divisors of n, as "1, 2, 4", for a message. */
static void divisors(int n, char *out, size_t cap)
{
    size_t k = 0;
    out[0] = 0;
    for (int d = 1; d <= n && d <= 64 && k < cap; d++)
        if (n % d == 0) k += (size_t)snprintf(out + k, cap - k, "%s%d", k ? ", " : "", d);
}

int lunar_parallel_check(const lunar_model_config_t *c, int tp, int pp, char *note, size_t note_cap)
{
    char ok[256];
    if (note && note_cap) note[0] = 0;
    if (tp < 1 || pp < 1) return lunar_error(LUNAR_EINVAL, "--tensor-parallel-size and --pipeline-parallel-size must be at least 1");
    if (pp > LUNAR_MAX_PP) return lunar_error(LUNAR_EINVAL, "--pipeline-parallel-size %d: at most %d", pp, LUNAR_MAX_PP);
    if (c->num_heads % tp) {
        divisors(c->num_heads, ok, sizeof ok);
        return lunar_error(LUNAR_EINVAL, "--tensor-parallel-size %d does not divide the %d attention heads; use one of %s",
                           tp, c->num_heads, ok);
    }
    if (tp > c->num_kv_heads && tp % c->num_kv_heads) {
        return lunar_error(LUNAR_EINVAL, "--tensor-parallel-size %d is above the %d kv heads and not a multiple of them, "
                           "so kv heads cannot be replicated evenly; use a divisor or a multiple of %d that divides %d",
                           tp, c->num_kv_heads, c->num_kv_heads, c->num_heads);
    }
    if (c->num_kv_heads % tp && tp < c->num_kv_heads) {
        divisors(c->num_kv_heads, ok, sizeof ok);
        return lunar_error(LUNAR_EINVAL, "--tensor-parallel-size %d does not divide the %d kv heads; use one of %s",
                           tp, c->num_kv_heads, ok);
    }
    struct { const char *what; int n; } dims[] = {
        { "intermediate_size", c->num_experts > 0 && c->decoder_sparse_step == 1 ? 0 : c->intermediate_size },
        { "moe_intermediate_size", c->num_experts > 0 ? c->moe_intermediate_size : 0 },
        { "vocab_size", c->vocab_size },
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].n && dims[i].n % tp) {
            int best = 1;
            for (int d = 1; d <= tp; d++)
                if (c->num_heads % d == 0 && dims[i].n % d == 0 && (d <= c->num_kv_heads ? c->num_kv_heads % d == 0 : d % c->num_kv_heads == 0)) best = d;
            return lunar_error(LUNAR_EINVAL, "--tensor-parallel-size %d does not divide %s (%d); the largest size up to %d that "
                               "divides every split dimension is %d", tp, dims[i].what, dims[i].n, tp, best);
        }
    if (pp > c->num_layers)
        return lunar_error(LUNAR_EINVAL, "--pipeline-parallel-size %d is more than the %d layers; use at most %d",
                           pp, c->num_layers, c->num_layers);
    if (tp > c->num_kv_heads && note)
        snprintf(note, note_cap, "tensor parallel size %d is above the %d kv heads: each kv head is replicated on %d GPUs "
                 "(one kv head per GPU), as vLLM does", tp, c->num_kv_heads, tp / c->num_kv_heads);
    return 0;
}

/* ---- the plan --------------------------------------------------------------------------- */

/* vLLM's get_pp_indices: layers / pp each, the remainder one by one to the stages before
 * the last (counting back from the second-to-last). */
static void pp_split(int layers, int pp, int *first, int *count)
{
    for (int s = 0; s < pp; s++) count[s] = layers / pp;
    for (int i = 2; i < layers % pp + 2; i++) count[pp - i]++;
    for (int s = 0, f = 0; s < pp; s++) { first[s] = f; f += count[s]; }
}

typedef struct {
    const lunar_model_config_t *c;
    lunar_memory_plan_t *p;
    size_t bytes;
    uint64_t total_numel;
} planctx_t;

static int stage_of(const lunar_memory_plan_t *p, int layer)
{
    for (int s = 0; s < p->stages; s++)
        if (layer < p->stage_first_layer[s] + p->stage_layers[s]) return s;
    return p->stages - 1;
}

static int plan_one(void *ctx, const void *row, const arch_tensor_t *t, int layer, int group)
{
    planctx_t *k = ctx;
    lunar_memory_plan_t *p = k->p;
    uint64_t shard = (uint64_t)arch_shard_numel(k->c, row, p->tp) * k->bytes;
    if (!t->optional) k->total_numel += (uint64_t)model_numel(t->ndim, t->shape);
    if (layer >= 0) {
        p->stage_weight_bytes[stage_of(p, layer)] += shard;
    } else if (group == LUNAR_PARAM_EMBED) {
        p->stage_weight_bytes[0] += shard;
    } else if (group == LUNAR_PARAM_LM_HEAD) {
        /* tied: one tensor when a single stage holds both ends; with pp > 1 the last stage
         * holds its own copy of the embedding as lm_head (as vLLM does) */
        if (!t->optional || p->stages > 1) p->stage_weight_bytes[p->stages - 1] += shard;
    } else {
        p->stage_weight_bytes[p->stages - 1] += shard;   /* final norm */
    }
    return 0;
}

static uint64_t activations(const lunar_model_config_t *c, int tp, int kvpg, uint64_t T, uint64_t S, size_t b)
{
    uint64_t h = (uint64_t)c->hidden_size, d = (uint64_t)c->head_dim, heads = (uint64_t)(c->num_heads / tp);
    uint64_t x = 2 * T * h * b;
    x += T * (heads + 2 * (uint64_t)kvpg) * d * b;
    x += T * heads * d * (b + 4);
    uint64_t mlp = 0;
    bool any_dense = false, any_moe = false;
    for (int l = 0; l < c->num_layers; l++) {
        if (arch_layer_is_moe(c, l)) any_moe = true;
        else any_dense = true;
    }
    if (any_dense) mlp = T * 3 * (uint64_t)(c->intermediate_size / tp) * b;
    if (any_moe) {
        uint64_t m = T * (uint64_t)c->num_experts_per_tok * 3 * (uint64_t)(c->moe_intermediate_size / tp) * b +
                     T * (uint64_t)c->num_experts * 4;
        if (m > mlp) mlp = m;
    }
    x += mlp;
    x += 2 * S * (uint64_t)c->vocab_size * 4;
    return x;
}

int lunar_memory_plan(const lunar_model_config_t *c, const lunar_memory_options_t *opt, lunar_memory_plan_t *p)
{
    lunar_memory_options_t o = *opt;
    memset(p, 0, sizeof *p);
    if (o.tensor_parallel_size <= 0) o.tensor_parallel_size = 1;
    if (o.pipeline_parallel_size <= 0) o.pipeline_parallel_size = 1;
    int rc = lunar_parallel_check(c, o.tensor_parallel_size, o.pipeline_parallel_size, NULL, 0);
    if (rc) return rc;
    if (!dtype_is_float(o.dtype) || !dtype_is_float(o.kv_dtype))
        return lunar_error(LUNAR_EINVAL, "memory plan: dtype must be float32, float16 or bfloat16");
    p->tp = o.tensor_parallel_size;
    p->pp = p->stages = o.pipeline_parallel_size;
    p->max_model_len = o.max_model_len > 0 ? o.max_model_len : c->max_position_embeddings;
    p->max_num_seqs = o.max_num_seqs > 0 ? o.max_num_seqs : 256;
    /* vLLM's default for `vllm serve` with chunked prefill */
    p->max_num_batched_tokens = o.max_num_batched_tokens > 0 ? o.max_num_batched_tokens : 8192;
    p->block_size = o.block_size > 0 ? o.block_size : 16;
    p->kv_replicated = p->tp > c->num_kv_heads;
    p->kv_heads_per_gpu = p->kv_replicated ? 1 : c->num_kv_heads / p->tp;
    pp_split(c->num_layers, p->pp, p->stage_first_layer, p->stage_layers);

    size_t b = lunar_dtype_size(o.dtype), kb = lunar_dtype_size(o.kv_dtype);
    planctx_t k = { c, p, b, 0 };
    if ((rc = arch_params(c, plan_one, &k))) return rc;
    p->params_total = k.total_numel;
    p->weight_bytes_total = k.total_numel * b;
    int maxlayers = 0;
    for (int s = 0; s < p->stages; s++) {
        if (p->stage_weight_bytes[s] > p->weight_bytes) p->weight_bytes = p->stage_weight_bytes[s];
        if (p->stage_layers[s] > maxlayers) maxlayers = p->stage_layers[s];
    }
    uint64_t per_layer_total = 2ull * (uint64_t)c->num_kv_heads * (uint64_t)c->head_dim * kb;
    uint64_t per_layer_gpu = 2ull * (uint64_t)p->kv_heads_per_gpu * (uint64_t)c->head_dim * kb;
    p->kv_bytes_per_token_total = per_layer_total * (uint64_t)c->num_layers;
    p->kv_bytes_per_token = per_layer_gpu * (uint64_t)maxlayers;

    uint64_t T = (uint64_t)p->max_num_batched_tokens, S = (uint64_t)p->max_num_seqs < T ? (uint64_t)p->max_num_seqs : T;
    p->activation_bytes = activations(c, p->tp, p->kv_heads_per_gpu, T, S, b);
    if (!o.enforce_eager) {
        uint64_t G = p->max_num_seqs < 512 ? (uint64_t)p->max_num_seqs : 512;
        p->cuda_graph_bytes = activations(c, p->tp, p->kv_heads_per_gpu, G, G, b);
    }
    p->cublas_workspace_bytes = 32 * MIB;
    p->nccl_bytes = p->tp * p->pp > 1 ? 256 * MIB : 0;

    p->gpu_memory_bytes = o.gpu_memory_bytes;
    p->gpu_memory_utilization = o.gpu_memory_utilization > 0 ? o.gpu_memory_utilization : 0.9;
    if (o.gpu_memory_bytes == 0 && o.kv_cache_memory_bytes == 0) return 0;
    p->sized = 1;
    uint64_t overhead = p->activation_bytes + p->cuda_graph_bytes + p->cublas_workspace_bytes + p->nccl_bytes;
    uint64_t tokens = UINT64_MAX;
    int64_t worst = INT64_MAX;
    for (int s = 0; s < p->stages; s++) {
        int64_t avail;
        if (o.kv_cache_memory_bytes) avail = (int64_t)o.kv_cache_memory_bytes;
        else avail = (int64_t)((double)o.gpu_memory_bytes * p->gpu_memory_utilization) -
                     (int64_t)p->stage_weight_bytes[s] - (int64_t)overhead;
        uint64_t per_tok = per_layer_gpu * (uint64_t)p->stage_layers[s];
        uint64_t t = avail > 0 ? (uint64_t)avail / per_tok : 0;
        if (t < tokens) tokens = t;
        if (avail < worst) worst = avail;
    }
    p->kv_cache_bytes = worst;
    p->kv_cache_blocks = tokens / (uint64_t)p->block_size;
    p->kv_cache_tokens = p->kv_cache_blocks * (uint64_t)p->block_size;
    p->max_concurrency = (double)p->kv_cache_tokens / (double)p->max_model_len;
    return 0;
}
