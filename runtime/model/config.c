/*
 * model/config.c — config.json -> lunar_model_config_t.
 *
 * One parser for every supported family; what differs (q/k/v bias for qwen2, q/k norm for
 * qwen3, the expert counts of qwen3_moe and mixtral, Baichuan's missing kv-head count) is
 * read into plain fields here, so nothing downstream branches on model_type. Missing optional
 * keys take the defaults of the matching transformers config class; a key of the wrong JSON
 * type is an error naming the key, not a silent default.
 */
#include "model/model_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const cJSON *root;
    const char *what;
} cfgctx_t;

/* Integer key: *out untouched when absent or null. */
static int get_int(const cJSON *obj, const char *what, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < -1 ||
        v->valuedouble > 2147483647.0)
        return lunar_error(LUNAR_EFORMAT, "%s: \"%s\" must be a non-negative integer", what, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_num(const cJSON *obj, const char *what, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return lunar_error(LUNAR_EFORMAT, "%s: \"%s\" must be a number", what, key);
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *obj, const char *what, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v))
        return lunar_error(LUNAR_EFORMAT, "%s: \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_str(const cJSON *obj, const char *what, const char *key, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v))
        return lunar_error(LUNAR_EFORMAT, "%s: \"%s\" must be a string", what, key);
    if (strlen(v->valuestring) >= cap)
        return lunar_error(LUNAR_EFORMAT, "%s: \"%s\" is too long", what, key);
    strcpy(out, v->valuestring);
    return 0;
}

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

static int parse_rope(const cJSON *root, const char *what, lunar_model_config_t *c)
{
    lunar_rope_t *r = &c->rope;
    r->type = LUNAR_ROPE_DEFAULT;
    r->theta = 10000.0;
    r->factor = 1.0;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    TRY(get_num(root, what, "rope_theta", &r->theta));
    double partial = 1.0;
    TRY(get_num(root, what, "partial_rotary_factor", &partial));
    /* transformers 5 moves rope_theta and the scaling into "rope_parameters" */
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && cJSON_IsObject(rp)) {
        TRY(get_num(rp, what, "rope_theta", &r->theta));
        if (!rs || cJSON_IsNull(rs)) rs = rp;
    }
    if (!(r->theta > 0)) return lunar_error(LUNAR_EFORMAT, "%s: \"rope_theta\" must be positive", what);
    r->rotary_dim = (int)(c->head_dim * partial);
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs))
        return lunar_error(LUNAR_EFORMAT, "%s: \"rope_scaling\" must be an object or null", what);
    char type[32] = "default";
    TRY(get_str(rs, what, "type", type, sizeof type));
    TRY(get_str(rs, what, "rope_type", type, sizeof type));
    static const struct { const char *name; lunar_rope_type_t t; } types[] = {
        { "default", LUNAR_ROPE_DEFAULT }, { "linear", LUNAR_ROPE_LINEAR },
        { "dynamic", LUNAR_ROPE_DYNAMIC }, { "yarn", LUNAR_ROPE_YARN }, { "llama3", LUNAR_ROPE_LLAMA3 },
    };
    size_t i;
    for (i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(type, types[i].name) == 0) break;
    if (i == sizeof types / sizeof types[0])
        return lunar_error(LUNAR_EUNSUPPORTED,
                           "%s: rope_scaling type \"%s\" is not supported (default, linear, dynamic, yarn, llama3 are)",
                           what, type);
    r->type = types[i].t;
    TRY(get_num(rs, what, "factor", &r->factor));
    TRY(get_int(rs, what, "original_max_position_embeddings", &r->original_max_position));
    TRY(get_num(rs, what, "low_freq_factor", &r->low_freq_factor));
    TRY(get_num(rs, what, "high_freq_factor", &r->high_freq_factor));
    TRY(get_num(rs, what, "beta_fast", &r->beta_fast));
    TRY(get_num(rs, what, "beta_slow", &r->beta_slow));
    TRY(get_num(rs, what, "mscale", &r->mscale));
    TRY(get_num(rs, what, "mscale_all_dim", &r->mscale_all_dim));
    TRY(get_num(rs, what, "attention_factor", &r->attention_factor));
    if (r->type != LUNAR_ROPE_DEFAULT && !(r->factor > 0))
        return lunar_error(LUNAR_EFORMAT, "%s: rope_scaling.factor must be positive", what);
    if (r->type == LUNAR_ROPE_LLAMA3 && (r->original_max_position <= 0 || r->low_freq_factor <= 0 ||
                                          r->high_freq_factor <= r->low_freq_factor))
        return lunar_error(LUNAR_EFORMAT,
                           "%s: llama3 rope_scaling needs original_max_position_embeddings and "
                           "high_freq_factor > low_freq_factor > 0", what);
    if (r->original_max_position == 0 && r->type != LUNAR_ROPE_DEFAULT)
        r->original_max_position = c->max_position_embeddings;
    return 0;
}

static int parse_eos(const cJSON *root, const char *what, lunar_model_config_t *c)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    c->num_eos_token_ids = 0;
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) {
        c->eos_token_ids[c->num_eos_token_ids++] = (int)v->valuedouble;
        return 0;
    }
    if (!cJSON_IsArray(v)) return lunar_error(LUNAR_EFORMAT, "%s: \"eos_token_id\" must be an integer or a list", what);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e)) return lunar_error(LUNAR_EFORMAT, "%s: \"eos_token_id\" holds a non-integer", what);
        if (c->num_eos_token_ids < 8) c->eos_token_ids[c->num_eos_token_ids++] = (int)e->valuedouble;
    }
    return 0;
}

static int parse(const cJSON *root, const char *what, lunar_model_config_t *c)
{
    if (!cJSON_IsObject(root)) return lunar_error(LUNAR_EFORMAT, "%s: not a JSON object", what);
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (archs && cJSON_IsArray(archs) && cJSON_GetArraySize(archs) > 0) {
        const cJSON *a0 = cJSON_GetArrayItem(archs, 0);
        if (!cJSON_IsString(a0) || strlen(a0->valuestring) >= sizeof c->architecture)
            return lunar_error(LUNAR_EFORMAT, "%s: \"architectures\" must list strings", what);
        strcpy(c->architecture, a0->valuestring);
    } else if (archs && !cJSON_IsNull(archs) && !cJSON_IsArray(archs)) {
        return lunar_error(LUNAR_EFORMAT, "%s: \"architectures\" must be a list", what);
    }
    TRY(get_str(root, what, "model_type", c->model_type, sizeof c->model_type));
    if (!c->model_type[0] && !c->architecture[0])
        return lunar_error(LUNAR_EFORMAT, "%s: neither \"model_type\" nor \"architectures\" is set", what);

    static const char *required[] = { "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads" };
    int *dst[] = { &c->vocab_size, &c->hidden_size, &c->num_layers, &c->num_heads };
    for (int i = 0; i < 4; i++) {
        TRY(get_int(root, what, required[i], dst[i]));
        if (*dst[i] <= 0) return lunar_error(LUNAR_EFORMAT, "%s: \"%s\" is missing or not positive", what, required[i]);
    }
    TRY(get_int(root, what, "intermediate_size", &c->intermediate_size));
    c->num_kv_heads = c->num_heads;
    TRY(get_int(root, what, "num_key_value_heads", &c->num_kv_heads));
    if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads)
        return lunar_error(LUNAR_EFORMAT, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                           what, c->num_heads, c->num_kv_heads);
    c->head_dim = 0;
    TRY(get_int(root, what, "head_dim", &c->head_dim));
    if (c->head_dim == 0) {
        if (c->hidden_size % c->num_heads)
            return lunar_error(LUNAR_EFORMAT, "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d) and no head_dim is given",
                               what, c->hidden_size, c->num_heads);
        c->head_dim = c->hidden_size / c->num_heads;
    }
    if (c->head_dim <= 0 || c->head_dim % 2)
        return lunar_error(LUNAR_EFORMAT, "%s: head_dim (%d) must be positive and even", what, c->head_dim);
    c->max_position_embeddings = 0;
    TRY(get_int(root, what, "model_max_length", &c->max_position_embeddings)); /* Baichuan-13B */
    TRY(get_int(root, what, "max_position_embeddings", &c->max_position_embeddings));
    if (c->max_position_embeddings <= 0) c->max_position_embeddings = 2048;
    c->rms_norm_eps = 1e-6;
    TRY(get_num(root, what, "rms_norm_eps", &c->rms_norm_eps));
    TRY(parse_rope(root, what, c));

    char act[32] = "silu";
    TRY(get_str(root, what, "hidden_act", act, sizeof act));
    if (strcmp(act, "silu") == 0 || strcmp(act, "swish") == 0) c->hidden_act = LUNAR_ACT_SILU;
    else if (strcmp(act, "gelu") == 0) c->hidden_act = LUNAR_ACT_GELU;
    else if (strcmp(act, "gelu_pytorch_tanh") == 0 || strcmp(act, "gelu_new") == 0) c->hidden_act = LUNAR_ACT_GELU_TANH;
    else return lunar_error(LUNAR_EUNSUPPORTED, "%s: hidden_act \"%s\" is not supported (silu, gelu, gelu_pytorch_tanh are)", what, act);

    TRY(get_bool(root, what, "tie_word_embeddings", &c->tie_word_embeddings));
    /* Qwen2's attention always has q/k/v bias; Llama-family configs say so with attention_bias,
     * which also puts a bias on o_proj. */
    int attention_bias = 0, mlp_bias = 0;
    TRY(get_bool(root, what, "attention_bias", &attention_bias));
    TRY(get_bool(root, what, "mlp_bias", &mlp_bias));
    if (mlp_bias) return lunar_error(LUNAR_EUNSUPPORTED, "%s: mlp_bias is not supported", what);
    bool qwen2 = strcmp(c->model_type, "qwen2") == 0 || strcmp(c->architecture, "Qwen2ForCausalLM") == 0;
    bool qwen3 = strncmp(c->model_type, "qwen3", 5) == 0 || strncmp(c->architecture, "Qwen3", 5) == 0;
    c->qkv_bias = qwen2 || attention_bias;
    c->o_bias = !qwen2 && attention_bias;
    c->qk_norm = qwen3;

    c->sliding_window = 0;
    int use_sw = strcmp(c->model_type, "mistral") == 0 || strcmp(c->model_type, "mixtral") == 0;
    TRY(get_bool(root, what, "use_sliding_window", &use_sw));
    if (use_sw) TRY(get_int(root, what, "sliding_window", &c->sliding_window));
    if (c->sliding_window >= c->max_position_embeddings) c->sliding_window = 0;

    c->bos_token_id = -1;
    TRY(get_int(root, what, "bos_token_id", &c->bos_token_id));
    TRY(parse_eos(root, what, c));

    char dt[32] = "";
    TRY(get_str(root, what, "torch_dtype", dt, sizeof dt));
    TRY(get_str(root, what, "dtype", dt, sizeof dt));   /* transformers 5 renamed it */
    c->torch_dtype = LUNAR_DTYPE_BF16;
    if (dt[0] && (dtype_from_torch(dt, &c->torch_dtype) || !dtype_is_float(c->torch_dtype)))
        return lunar_error(LUNAR_EFORMAT, "%s: torch_dtype \"%s\" is not float32, float16 or bfloat16", what, dt);

    /* MoE: qwen3_moe says num_experts, mixtral num_local_experts (its intermediate_size is
     * the expert's). */
    TRY(get_int(root, what, "num_experts", &c->num_experts));
    TRY(get_int(root, what, "num_local_experts", &c->num_experts));
    TRY(get_int(root, what, "num_experts_per_tok", &c->num_experts_per_tok));
    TRY(get_int(root, what, "moe_intermediate_size", &c->moe_intermediate_size));
    TRY(get_int(root, what, "shared_expert_intermediate_size", &c->shared_expert_intermediate_size));
    c->decoder_sparse_step = 1;
    TRY(get_int(root, what, "decoder_sparse_step", &c->decoder_sparse_step));
    c->norm_topk_prob = strcmp(c->model_type, "mixtral") == 0;  /* mixtral renormalizes its top-k */
    TRY(get_bool(root, what, "norm_topk_prob", &c->norm_topk_prob));
    if (c->num_experts > 0) {
        if (c->moe_intermediate_size == 0) c->moe_intermediate_size = c->intermediate_size;
        if (c->num_experts_per_tok <= 0 || c->num_experts_per_tok > c->num_experts)
            return lunar_error(LUNAR_EFORMAT, "%s: num_experts_per_tok must be in 1..num_experts (%d)", what, c->num_experts);
        if (c->decoder_sparse_step <= 0)
            return lunar_error(LUNAR_EFORMAT, "%s: decoder_sparse_step must be positive", what);
        const cJSON *only = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
        if (only && cJSON_IsArray(only) && cJSON_GetArraySize(only) > 0)
            return lunar_error(LUNAR_EUNSUPPORTED, "%s: mlp_only_layers is not supported", what);
    }
    if (c->intermediate_size <= 0 && c->num_experts == 0)
        return lunar_error(LUNAR_EFORMAT, "%s: \"intermediate_size\" is missing or not positive", what);
    return arch_check(c, what);
}

int lunar_config_parse(const char *json, size_t len, const char *what, lunar_model_config_t *out)
{
    if (!what) what = "config.json";
    memset(out, 0, sizeof *out);
    if (!json) return lunar_error(LUNAR_EINVAL, "%s: no text", what);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return lunar_error(LUNAR_EFORMAT, "%s: invalid JSON near byte %zu", what, at);
    }
    int rc = parse(root, what, out);
    cJSON_Delete(root);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}
