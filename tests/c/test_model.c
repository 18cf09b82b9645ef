/*
 * test_model.c — the model loader: config.json parsing, safetensors (single and sharded),
 * the architecture table and its shape checks, --dtype conversion, dummy weights, and one
 * clean error (never a crash) for every kind of bad input, including a few hundred mutated
 * safetensors headers.
 *
 * References are independent of the loader: the shared real models' bytes are read here
 * with plain stdio at offsets computed from the header by hand, conversions are checked
 * against bit patterns numpy/torch produce, and tiny models are written by this file.
 */
#include "check.h"
#include "lunar.h"
#include "model/model_internal.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

/* ---- tiny model writer ------------------------------------------------------------------ */

typedef struct { const char *name; const char *dtype; int ndim; int64_t shape[4]; } spec_t;

static size_t esize(const char *dt) { return strcmp(dt, "F32") == 0 ? 4 : strcmp(dt, "U8") == 0 ? 1 : 2; }

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Writes a safetensors file of `n` tensors; element i of every tensor holds bytes of value
 * (tensor index + 1) so views can be checked. */
static void write_st(const char *path, const spec_t *t, int n)
{
    char hdr[65536];
    size_t h = 0, off = 0;
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        h += (size_t)snprintf(hdr + h, sizeof hdr - h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) {
            h += (size_t)snprintf(hdr + h, sizeof hdr - h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            numel *= (size_t)t[i].shape[d];
        }
        size_t nb = numel * esize(t[i].dtype);
        h += (size_t)snprintf(hdr + h, sizeof hdr - h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
    while ((h + 8) % 8) hdr[h++] = ' ';
    size_t total = 8 + h + off;
    unsigned char *buf = calloc(1, total);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, h);
    size_t o = 8 + h;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        size_t nb = numel * esize(t[i].dtype);
        /* tensor i: bf16/f32 value i+1 everywhere in its first half, i+1.5 in rows after */
        for (size_t k = 0; k < numel; k++) {
            float v = (float)(i + 1) + (float)k / (float)numel;
            if (esize(t[i].dtype) == 4) memcpy(buf + o + 4 * k, &v, 4);
            else { uint32_t u; memcpy(&u, &v, 4); uint16_t b = (uint16_t)(u >> 16); memcpy(buf + o + 2 * k, &b, 2); }
        }
        o += nb;
    }
    write_file(path, buf, total);
    free(buf);
}

static char *mkmodel(const char *name, const char *config)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir(dir, 0755);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_file(p, config, strlen(config));
    return dir;
}

/* The tensors of a tiny llama-layout model: hidden 8, 2 heads of 4 (q), 1 kv head, inter 16,
 * vocab 10, `layers` layers; W_pack instead of q/k/v when `wpack`. */
static int tiny_specs(spec_t *s, int layers, bool wpack, bool lm_head)
{
    int n = 0;
    static char names[64][96];
    s[n++] = (spec_t){ "model.embed_tokens.weight", "BF16", 2, { 10, 8 } };
    for (int l = 0; l < layers; l++) {
        const char *pats[] = { "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                               "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                               "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                               "self_attn.W_pack.weight" };
        int64_t shapes[][2] = { { 8, 0 }, { 8, 8 }, { 4, 8 }, { 4, 8 }, { 8, 8 }, { 8, 0 }, { 16, 8 }, { 16, 8 }, { 8, 16 }, { 16, 8 } };
        for (int k = 0; k < 10; k++) {
            if (wpack ? (k >= 1 && k <= 3) : k == 9) continue;
            snprintf(names[n], sizeof names[n], "model.layers.%d.%s", l, pats[k]);
            s[n] = (spec_t){ names[n], "BF16", shapes[k][1] ? 2 : 1, { shapes[k][0], shapes[k][1] } };
            n++;
        }
    }
    s[n++] = (spec_t){ "model.norm.weight", "BF16", 1, { 8 } };
    if (lm_head) s[n++] = (spec_t){ "lm_head.weight", "BF16", 2, { 10, 8 } };
    return n;
}

#define TINY_CFG(arch, type, extra)                                                                         \
    "{\"architectures\":[\"" arch "\"],\"model_type\":\"" type "\"" extra ",\"vocab_size\":10,"             \
    "\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":2,\"num_attention_heads\":2,"           \
    "\"num_key_value_heads\":1,\"torch_dtype\":\"bfloat16\"}"

/* ---- tests ------------------------------------------------------------------------------ */

static void test_config_fields_of_each_family(void)
{
    lunar_model_config_t c;
    const char *llama3 = "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":128256,"
        "\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,\"num_attention_heads\":32,"
        "\"num_key_value_heads\":8,\"rope_theta\":500000.0,\"rms_norm_eps\":1e-05,\"max_position_embeddings\":131072,"
        "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
        "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},\"bos_token_id\":128000,"
        "\"eos_token_id\":[128001,128008,128009],\"torch_dtype\":\"bfloat16\",\"tie_word_embeddings\":false}";
    CHECK_EQ_INT(lunar_config_parse(llama3, strlen(llama3), "llama3", &c), 0);
    CHECK_EQ_INT(c.head_dim, 128);
    CHECK_EQ_INT(c.num_kv_heads, 8);
    CHECK_EQ_INT(c.rope.type, LUNAR_ROPE_LLAMA3);
    CHECK_NEAR(c.rope.theta, 500000.0, 0);
    CHECK_NEAR(c.rope.factor, 8.0, 0);
    CHECK_NEAR(c.rope.high_freq_factor, 4.0, 0);
    CHECK_EQ_INT(c.rope.original_max_position, 8192);
    CHECK_EQ_INT(c.rope.rotary_dim, 128);
    CHECK_EQ_INT(c.num_eos_token_ids, 3);
    CHECK_EQ_INT(c.eos_token_ids[2], 128009);
    CHECK_EQ_INT(c.bos_token_id, 128000);
    CHECK_EQ_INT(c.torch_dtype, LUNAR_DTYPE_BF16);
    CHECK_EQ_INT(c.qkv_bias, 0);
    CHECK_EQ_INT(c.qk_norm, 0);

    const char *qwen2 = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",\"vocab_size\":152064,"
        "\"hidden_size\":3584,\"intermediate_size\":18944,\"num_hidden_layers\":28,\"num_attention_heads\":28,"
        "\"num_key_value_heads\":4,\"rope_theta\":1000000.0,\"sliding_window\":131072,\"use_sliding_window\":false,"
        "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":32768},"
        "\"max_position_embeddings\":32768,\"torch_dtype\":\"bfloat16\",\"eos_token_id\":151643}";
    CHECK_EQ_INT(lunar_config_parse(qwen2, strlen(qwen2), "qwen2", &c), 0);
    CHECK_EQ_INT(c.qkv_bias, 1);
    CHECK_EQ_INT(c.o_bias, 0);
    CHECK_EQ_INT(c.sliding_window, 0);
    CHECK_EQ_INT(c.rope.type, LUNAR_ROPE_YARN);
    CHECK_NEAR(c.rope.beta_fast, 32, 0);
    CHECK_NEAR(c.rope.beta_slow, 1, 0);
    CHECK_EQ_INT(c.head_dim, 128);

    const char *qwen3 = "{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"vocab_size\":151936,"
        "\"hidden_size\":4096,\"intermediate_size\":12288,\"num_hidden_layers\":36,\"num_attention_heads\":32,"
        "\"num_key_value_heads\":8,\"head_dim\":128,\"attention_bias\":false,\"torch_dtype\":\"bfloat16\","
        "\"rope_scaling\":null,\"tie_word_embeddings\":false}";
    CHECK_EQ_INT(lunar_config_parse(qwen3, strlen(qwen3), "qwen3", &c), 0);
    CHECK_EQ_INT(c.qk_norm, 1);
    CHECK_EQ_INT(c.qkv_bias, 0);
    CHECK_EQ_INT(c.rope.type, LUNAR_ROPE_DEFAULT);

    const char *mixtral = "{\"architectures\":[\"MixtralForCausalLM\"],\"model_type\":\"mixtral\",\"vocab_size\":32000,"
        "\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,\"num_attention_heads\":32,"
        "\"num_key_value_heads\":8,\"num_local_experts\":8,\"num_experts_per_tok\":2,\"sliding_window\":null,"
        "\"rope_theta\":1e6,\"torch_dtype\":\"bfloat16\"}";
    CHECK_EQ_INT(lunar_config_parse(mixtral, strlen(mixtral), "mixtral", &c), 0);
    CHECK_EQ_INT(c.num_experts, 8);
    CHECK_EQ_INT(c.moe_intermediate_size, 14336);
    CHECK_EQ_INT(c.norm_topk_prob, 1);
    CHECK_EQ_INT(c.sliding_window, 0);

    const char *linear = TINY_CFG("LlamaForCausalLM", "llama", ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0},\"max_position_embeddings\":4096");
    CHECK_EQ_INT(lunar_config_parse(linear, strlen(linear), "linear", &c), 0);
    CHECK_EQ_INT(c.rope.type, LUNAR_ROPE_LINEAR);
    CHECK_EQ_INT(c.rope.original_max_position, 4096);
    const char *dyn = TINY_CFG("LlamaForCausalLM", "llama", ",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0}");
    CHECK_EQ_INT(lunar_config_parse(dyn, strlen(dyn), "dyn", &c), 0);
    CHECK_EQ_INT(c.rope.type, LUNAR_ROPE_DYNAMIC);
}

static void test_config_errors_name_the_key(void)
{
    lunar_model_config_t c;
    struct { const char *json; int rc; const char *needle; } cases[] = {
        { "{\"vocab_size\": 10,", LUNAR_EFORMAT, "invalid JSON" },
        { "[1,2]", LUNAR_EFORMAT, "not a JSON object" },
        { TINY_CFG("GPT2LMHeadModel", "gpt2", ""), LUNAR_EUNSUPPORTED, "GPT2LMHeadModel" },
        { TINY_CFG("LlamaForCausalLM", "llama", ",\"head_dim\":\"x\""), LUNAR_EFORMAT, "head_dim" },
        { TINY_CFG("LlamaForCausalLM", "llama", ",\"num_key_value_heads\":3"), LUNAR_EFORMAT, "num_key_value_heads" },
        { TINY_CFG("LlamaForCausalLM", "llama", ",\"rope_scaling\":{\"type\":\"su\"}"), LUNAR_EUNSUPPORTED, "su" },
        { TINY_CFG("LlamaForCausalLM", "llama", ",\"torch_dtype\":\"int8\""), LUNAR_EFORMAT, "torch_dtype" },
        { "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8}", LUNAR_EFORMAT, "vocab_size" },
        { "{\"architectures\":[\"BaichuanForCausalLM\"],\"model_type\":\"baichuan\",\"vocab_size\":64000,"
          "\"hidden_size\":5120,\"intermediate_size\":13696,\"num_hidden_layers\":40,\"num_attention_heads\":40}",
          LUNAR_EUNSUPPORTED, "ALiBi" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = lunar_config_parse(cases[i].json, strlen(cases[i].json), "cfg.json", &c);
        CHECK_MSG(rc == cases[i].rc, "case %zu: rc %d (%s)", i, rc, lunar_errmsg());
        CHECK_CONTAINS(lunar_errmsg(), cases[i].needle);
        CHECK_CONTAINS(lunar_errmsg(), "cfg.json");
    }
}

/* Reads `n` bytes of tensor `name` straight from a safetensors file, by hand. */
static int read_raw(const char *path, const char *name, void *out, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char len8[8];
    if (fread(len8, 1, 8, f) != 8) { fclose(f); return -1; }
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = (h << 8) | len8[i];
    char *hdr = calloc(1, h + 1);
    if (fread(hdr, 1, h, f) != h) { free(hdr); fclose(f); return -1; }
    char key[200];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *p = strstr(hdr, key);
    p = p ? strstr(p, "data_offsets") : NULL;
    unsigned long long b = 0;
    int ok = p && sscanf(p, "data_offsets\":[%llu", &b) == 1;
    free(hdr);
    if (!ok || fseek(f, (long)(8 + h + b), SEEK_SET) || fread(out, 1, n, f) != n) { fclose(f); return -1; }
    fclose(f);
    return 0;
}

static void test_loads_shared_models(void)
{
    const char *shared = getenv("LUNAR_SHARED");
    if (!shared) shared = "../shared";
    char dir[512], file[600];
    lunar_model_t *m = NULL;

    snprintf(dir, sizeof dir, "%s/models/TinyStories-656K", shared);
    int rc = lunar_model_load(dir, NULL, &m);
    CHECK_MSG(rc == 0, "%s", lunar_errmsg());
    if (rc) return;
    const lunar_model_config_t *c = lunar_model_config(m);
    const lunar_weights_t *w = lunar_model_weights(m);
    CHECK_STR(c->architecture, "LlamaForCausalLM");
    CHECK_EQ_INT(c->num_layers, 2);
    CHECK_EQ_INT(c->head_dim, 16);
    CHECK_EQ_INT(lunar_model_dtype(m), LUNAR_DTYPE_BF16);
    CHECK_EQ_INT(lunar_model_tensor_count(m), 21);
    CHECK_STR(lunar_model_format(m), "safetensors");
    CHECK_EQ_INT(lunar_model_file_count(m), 1);
    /* both embed and lm_head are stored: both are used, separately */
    CHECK(w->lm_head != w->embed);
    CHECK_STR(w->lm_head->name, "lm_head.weight");
    CHECK_EQ_INT(w->layers[1].wk->shape[0], 64);
    CHECK_EQ_INT(w->layers[1].wk->shape[1], 128);
    CHECK(w->layers[0].bq == NULL && w->layers[0].q_norm == NULL);
    uint16_t raw[4], *got = w->layers[1].w_down->data;
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    CHECK(read_raw(file, "model.layers.1.mlp.down_proj.weight", raw, sizeof raw) == 0);
    CHECK(memcmp(raw, got, sizeof raw) == 0);
    lunar_model_free(m);

    /* stories260K is float32 on disk: --dtype bfloat16 converts, rounding to nearest even */
    snprintf(dir, sizeof dir, "%s/models/stories260K", shared);
    lunar_load_options_t o = { .dtype = "bfloat16" };
    rc = lunar_model_load(dir, &o, &m);
    CHECK_MSG(rc == 0, "%s", lunar_errmsg());
    if (rc) return;
    w = lunar_model_weights(m);
    CHECK_EQ_INT(w->embed->dtype, LUNAR_DTYPE_BF16);
    CHECK_EQ_INT(w->embed->nbytes, 512 * 64 * 2);
    float f32[64];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    CHECK(read_raw(file, "model.embed_tokens.weight", f32, sizeof f32) == 0);
    int bad = 0;
    for (int i = 0; i < 64; i++) {
        uint32_t u;
        memcpy(&u, &f32[i], 4);
        uint16_t want = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        bad += ((uint16_t *)w->embed->data)[i] != want;
    }
    CHECK_EQ_INT(bad, 0);
    lunar_model_free(m);
}

static void test_dtype_conversion_rounds_like_torch(void)
{
    /* f32 -> f16: values with their IEEE half bit patterns (numpy.float16(x).view(uint16)) */
    struct { float f; uint16_t h; } f16[] = {
        { 1.0f, 0x3c00 }, { -2.0f, 0xc000 }, { 65504.0f, 0x7bff }, { 65519.0f, 0x7bff }, { 65520.0f, 0x7c00 },
        { 0.1f, 0x2e66 }, { 5.9604645e-08f, 0x0001 }, { 2.9802322e-08f, 0x0000 }, { 4.4703484e-08f, 0x0001 },
        { 6.1035156e-05f, 0x0400 }, { 1.00048828125f, 0x3c00 } /* tie -> even */, { 1.00146484375f, 0x3c02 },
        { 1e9f, 0x7c00 }, { -0.0f, 0x8000 }, { 3.0517578e-05f, 0x0200 },
    };
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
        uint16_t h;
        dtype_convert(LUNAR_DTYPE_F16, &h, LUNAR_DTYPE_F32, &f16[i].f, 1);
        CHECK_MSG(h == f16[i].h, "f16(%g) = 0x%04x, want 0x%04x", (double)f16[i].f, h, f16[i].h);
        float back;
        dtype_convert(LUNAR_DTYPE_F32, &back, LUNAR_DTYPE_F16, &f16[i].h, 1);
        uint16_t again;
        dtype_convert(LUNAR_DTYPE_F16, &again, LUNAR_DTYPE_F32, &back, 1);
        CHECK_EQ_INT(again, f16[i].h);
    }
    struct { float f; uint16_t b; } bf[] = {
        { 1.0f, 0x3f80 }, { 0.1f, 0x3dcd }, { 1.00390625f, 0x3f80 } /* tie -> even */, { 1.01171875f, 0x3f82 },
        { 3.4e38f, 0x7f80 }, { 3.3895314e38f, 0x7f7f }, { -1.5f, 0xbfc0 },
    };
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
        uint16_t b;
        dtype_convert(LUNAR_DTYPE_BF16, &b, LUNAR_DTYPE_F32, &bf[i].f, 1);
        CHECK_MSG(b == bf[i].b, "bf16(%g) = 0x%04x, want 0x%04x", (double)bf[i].f, b, bf[i].b);
    }
    float nan = NAN, inf = INFINITY;
    uint16_t h, b;
    dtype_convert(LUNAR_DTYPE_F16, &h, LUNAR_DTYPE_F32, &nan, 1);
    dtype_convert(LUNAR_DTYPE_BF16, &b, LUNAR_DTYPE_F32, &nan, 1);
    CHECK((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
    CHECK((b & 0x7f80) == 0x7f80 && (b & 0x7f));
    dtype_convert(LUNAR_DTYPE_F16, &h, LUNAR_DTYPE_F32, &inf, 1);
    CHECK_EQ_INT(h, 0x7c00);
    /* the threaded path gives the same bits as the plain one (5M values, split unevenly) */
    size_t big = 5000003;
    float *src = malloc(big * 4);
    uint16_t *a = malloc(big * 2), *b2 = malloc(big * 2);
    for (size_t i = 0; i < big; i++) src[i] = (float)i * 1.37e-3f - 3000.0f;
    dtype_convert(LUNAR_DTYPE_F16, a, LUNAR_DTYPE_F32, src, big);
    dtype_convert_parallel(LUNAR_DTYPE_F16, b2, LUNAR_DTYPE_F32, src, big);
    CHECK(memcmp(a, b2, big * 2) == 0);
    free(src);
    free(a);
    free(b2);
    /* f16 -> bf16 rounds once: 1 + 2^-10 (f16 0x3c01) -> bf16 1.0 (tie to even) */
    uint16_t one_ulp = 0x3c01;
    dtype_convert(LUNAR_DTYPE_BF16, &b, LUNAR_DTYPE_F16, &one_ulp, 1);
    CHECK_EQ_INT(b, 0x3f80);
}

static void test_tied_embedding_and_wpack_views(void)
{
    spec_t s[64];
    char p[700];
    /* tied, no lm_head.weight: lm_head is the embedding */
    char *dir = mkmodel("tied", TINY_CFG("LlamaForCausalLM", "llama", ",\"tie_word_embeddings\":true"));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, s, tiny_specs(s, 2, false, false));
    lunar_model_t *m;
    int rc = lunar_model_load(dir, NULL, &m);
    CHECK_MSG(rc == 0, "%s", lunar_errmsg());
    if (!rc) {
        CHECK(lunar_model_weights(m)->lm_head == lunar_model_weights(m)->embed);
        lunar_model_free(m);
    }
    /* untied without lm_head: error naming the tensor */
    dir = mkmodel("untied", TINY_CFG("LlamaForCausalLM", "llama", ""));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, s, tiny_specs(s, 2, false, false));
    CHECK_EQ_INT(lunar_model_load(dir, NULL, &m), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "lm_head.weight is missing");
    CHECK_CONTAINS(lunar_errmsg(), "model.safetensors");

    /* Baichuan-7B layout: W_pack [q; k; v] becomes three row views, no copy */
    dir = mkmodel("baichuan", TINY_CFG("BaiChuanForCausalLM", "baichuan", ""));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    int n = tiny_specs(s, 2, true, true);
    write_st(p, s, n);
    rc = lunar_model_load(dir, NULL, &m);
    CHECK_MSG(rc == 0, "%s", lunar_errmsg());
    if (!rc) {
        const lunar_layer_weights_t *L = &lunar_model_weights(m)->layers[1];
        const lunar_tensor_t *pack = NULL;
        for (int i = 0; i < lunar_model_tensor_count(m); i++)
            if (strcmp(lunar_model_tensor(m, i)->name, "model.layers.1.self_attn.W_pack.weight") == 0)
                pack = lunar_model_tensor(m, i);
        CHECK(pack != NULL);
        if (pack) {
            CHECK(L->wq->data == pack->data);
            CHECK((char *)L->wk->data == (char *)pack->data + 8 * 8 * 2);
            CHECK((char *)L->wv->data == (char *)pack->data + 12 * 8 * 2);
            CHECK_EQ_INT(L->wq->shape[0], 8);
            CHECK_EQ_INT(L->wk->shape[0], 4);
            CHECK_EQ_INT(L->wv->nbytes, 4 * 8 * 2);
        }
        lunar_model_free(m);
    }
}

static void test_baichuan2_head_is_normalized(void)
{
    spec_t s[64];
    char p[700];
    char *dir = mkmodel("baichuan2", TINY_CFG("BaichuanForCausalLM", "baichuan", ""));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, s, tiny_specs(s, 2, true, true));
    lunar_model_t *m;
    lunar_load_options_t o = { .dtype = "float32" };
    int rc = lunar_model_load(dir, &o, &m);
    CHECK_MSG(rc == 0, "%s", lunar_errmsg());
    if (rc) return;
    const lunar_tensor_t *h = lunar_model_weights(m)->lm_head;
    for (int r = 0; r < 10; r += 3) {
        double ss = 0;
        for (int k = 0; k < 8; k++) ss += (double)((float *)h->data)[r * 8 + k] * ((float *)h->data)[r * 8 + k];
        CHECK_NEAR(ss, 1.0, 1e-5);
    }
    lunar_model_free(m);
}

static void test_bad_folders_give_one_line_errors(void)
{
    spec_t s[64];
    char p[700];
    lunar_model_t *m = (lunar_model_t *)1;
    CHECK_EQ_INT(lunar_model_load("/nonexistent/model", NULL, &m), LUNAR_ENOENT);
    CHECK(m == NULL);
    CHECK_CONTAINS(lunar_errmsg(), "/nonexistent/model");

    char *dir = mkmodel("noweights", TINY_CFG("LlamaForCausalLM", "llama", ""));
    CHECK_EQ_INT(lunar_model_load(dir, NULL, &m), LUNAR_ENOENT);
    CHECK_CONTAINS(lunar_errmsg(), "dummy");

    dir = mkmodel("badjson", "{\"architectures\": [\"LlamaForCausalLM\"");
    CHECK_EQ_INT(lunar_model_load(dir, NULL, &m), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "config.json");

    /* a shape that disagrees with config.json */
    dir = mkmodel("badshape", TINY_CFG("LlamaForCausalLM", "llama", ",\"tie_word_embeddings\":true"));
    int n = tiny_specs(s, 2, false, false);
    s[3].shape[0] = 6;   /* model.layers.0.self_attn.k_proj.weight */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, s, n);
    CHECK_EQ_INT(lunar_model_load(dir, NULL, &m), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "model.layers.0.self_attn.k_proj.weight: shape [6, 8], but config.json implies [4, 8]");

    /* missing tensor in the second shard of a sharded model */
    dir = mkmodel("sharded", TINY_CFG("LlamaForCausalLM", "llama", ",\"tie_word_embeddings\":true"));
    n = tiny_specs(s, 2, false, false);
    int half = n / 2;
    char idx[8192];
    size_t k = (size_t)snprintf(idx, sizeof idx, "{\"metadata\":{},\"weight_map\":{");
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(idx + k, sizeof idx - k, "%s\"%s\":\"model-%05d-of-00002.safetensors\"", i ? "," : "",
                              s[i].name, i < half ? 1 : 2);
    snprintf(idx + k, sizeof idx - k, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_file(p, idx, strlen(idx));
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p, s, half);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(p, s + half, n - half);
    int rc = lunar_model_load(dir, NULL, &m);
    CHECK_MSG(rc == 0, "%s", lunar_errmsg());
    if (!rc) {
        CHECK_EQ_INT(lunar_model_file_count(m), 2);
        CHECK_EQ_INT(lunar_model_tensor_count(m), n);
        lunar_model_free(m);
    }
    write_st(p, s + half, n - half - 1);   /* drop model.norm.weight */
    CHECK_EQ_INT(lunar_model_load(dir, NULL, &m), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "model.norm.weight is missing");
}

static void test_dummy_weights_are_deterministic(void)
{
    char *dir = mkmodel("dummy", TINY_CFG("Qwen3ForCausalLM", "qwen3", ",\"head_dim\":4,\"tie_word_embeddings\":true"));
    lunar_load_options_t o = { .load_format = "dummy", .seed = 7 };
    lunar_model_t *a, *b;
    CHECK_EQ_INT(lunar_model_load(dir, &o, &a), 0);
    o.dtype = "float32";
    CHECK_EQ_INT(lunar_model_load(dir, &o, &b), 0);
    if (!a || !b) return;
    const lunar_weights_t *wa = lunar_model_weights(a), *wb = lunar_model_weights(b);
    CHECK(wa->layers[1].q_norm != NULL);
    CHECK_EQ_INT(wa->layers[1].q_norm->shape[0], 4);
    CHECK(wa->lm_head == wa->embed);
    /* bf16 dummy == f32 dummy rounded: same values, any dtype */
    uint16_t want;
    dtype_convert(LUNAR_DTYPE_BF16, &want, LUNAR_DTYPE_F32, (float *)wb->layers[1].w_up->data + 5, 1);
    CHECK_EQ_INT(((uint16_t *)wa->layers[1].w_up->data)[5], want);
    CHECK(((float *)wb->final_norm->data)[3] == 1.0f);
    float mx = 0;
    for (int i = 0; i < 16 * 8; i++) mx = fmaxf(mx, fabsf(((float *)wb->layers[0].w_gate->data)[i]));
    CHECK(mx > 0.1f && mx <= 1.0f / sqrtf(8.0f));
    lunar_model_free(a);
    lunar_model_free(b);
}

static uint64_t splitmix64_ref(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* dummy_on_device leaves the matrices without data and publishes their generator, which
 * reproduces every element the host makes (what a GPU fills in is checked against this
 * formula's host output by tests/gpu/test_backend_cuda.c). */
static void test_dummy_on_device_publishes_the_host_generator(void)
{
    char *dir = mkmodel("dummy_dev", TINY_CFG("LlamaForCausalLM", "llama", ""));
    lunar_load_options_t o = { .load_format = "dummy", .seed = 9, .dtype = "float32" };
    lunar_model_t *host = NULL, *dev = NULL;
    CHECK_EQ_INT(lunar_model_load(dir, &o, &host), 0);
    o.dummy_on_device = 1;
    CHECK_EQ_INT(lunar_model_load(dir, &o, &dev), 0);
    if (!host || !dev) return;
    int n = lunar_model_tensor_count(dev), matrices = 0;
    for (int i = 0; i < n; i++) {
        const lunar_tensor_t *t = lunar_model_tensor(dev, i), *h = lunar_model_tensor(host, i);
        lunar_dummy_params_t p;
        int deferred = lunar_model_dummy_params(dev, t, &p);
        CHECK_EQ_INT(deferred, t->ndim == 2);
        CHECK_EQ_INT(lunar_model_dummy_params(host, h, &p) == 0 || !deferred, 1);
        if (!deferred) {
            CHECK(t->data != NULL && memcmp(t->data, h->data, t->nbytes) == 0);
            continue;
        }
        lunar_model_dummy_params(dev, t, &p);
        CHECK(t->data == NULL);
        matrices++;
        size_t ne = t->nbytes / 4, bad = 0;
        for (size_t e = 0; e < ne; e++) {
            uint64_t r = splitmix64_ref(p.hash + e / 4);
            float u = ((float)((r >> (16 * (e % 4))) & 0xffff) + 0.5f) * (2.0f / 65536.0f) - 1.0f;
            float v = p.is_norm ? 1.0f : u * p.scale;
            if (memcmp(&v, (const float *)h->data + e, 4)) bad++;
        }
        CHECK_MSG(bad == 0, "%s: %zu of %zu elements differ from the published generator", t->name, bad, ne);
    }
    CHECK(matrices > 0);
    lunar_model_free(host);
    lunar_model_free(dev);
}

/* Builds a safetensors buffer from a header string and `data` zero bytes. */
static size_t st_buf(unsigned char *buf, const char *hdr, size_t data)
{
    size_t h = strlen(hdr);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, h);
    memset(buf + 8 + h, 0, data);
    return 8 + h + data;
}

static void test_hostile_safetensors_headers_are_named(void)
{
    static unsigned char buf[4096];
    struct { const char *hdr; size_t data; const char *needle; } cases[] = {
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "tensor b: its bytes overlap those of tensor a" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "tensor w: data_offsets [0, 16] outside the 8 data bytes" },
        { "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "tensor w: unknown dtype \"Q4_K\"" },
        { "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "tensor w: 16 bytes do not hold its shape of F16" },
        { "{\"w\":{\"dtype\":\"F16\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}", 16, "tensor w: 16 bytes do not hold" },
        { "{\"w\":{\"dtype\":\"F16\",\"shape\":[-4],\"data_offsets\":[0,8]}}", 8, "tensor w: shape[0] is not a non-negative integer" },
        { "{\"w\":[1,2]}", 0, "tensor w: entry is not an object" },
        { "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[8,0]}}", 8, "tensor w: data_offsets [8, 0]" },
        { "[]", 0, "not a safetensors file" },
        { "{\"w\":", 0, "not valid JSON" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = st_buf(buf, cases[i].hdr, cases[i].data);
        CHECK_EQ_INT(st_parse(buf, n, "h.safetensors", NULL, NULL), LUNAR_EFORMAT);
        CHECK_CONTAINS(lunar_errmsg(), cases[i].needle);
        CHECK_CONTAINS(lunar_errmsg(), "h.safetensors: ");
    }
    /* a header length past the end of the file, and a file shorter than the length field */
    size_t n = st_buf(buf, "{}", 0);
    buf[0] = 200;
    CHECK_EQ_INT(st_parse(buf, n, "h.safetensors", NULL, NULL), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "header length 200 runs past the end of the file (10 bytes)");
    CHECK_EQ_INT(st_parse(buf, 5, "h.safetensors", NULL, NULL), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "too short");

    /* the same through lunar_model_load: a truncated weight file is named */
    spec_t s[64];
    char p[700];
    char *dir = mkmodel("truncated", TINY_CFG("LlamaForCausalLM", "llama", ",\"tie_word_embeddings\":true"));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, s, tiny_specs(s, 2, false, false));
    CHECK(truncate(p, 700) == 0);
    lunar_model_t *m;
    CHECK_EQ_INT(lunar_model_load(dir, NULL, &m), LUNAR_EFORMAT);
    CHECK_CONTAINS(lunar_errmsg(), "truncated/model.safetensors: ");
}

static void test_transformers5_rope_parameters(void)
{
    lunar_model_config_t c;
    const char *f32 = TINY_CFG("LlamaForCausalLM", "llama", ",\"torch_dtype\":\"float32\"");
    CHECK_EQ_INT(lunar_config_parse(f32, strlen(f32), "f32", &c), 0);
    CHECK_STR(lunar_model_resolve_dtype("auto", &c, 1), "bfloat16");   /* float32 on a GPU: bf16 */
    CHECK_STR(lunar_model_resolve_dtype("auto", &c, 0), "float32");
    CHECK_STR(lunar_model_resolve_dtype("float32", &c, 1), "float32");
    CHECK_STR(lunar_model_resolve_dtype("half", &c, 1), "float16");
    CHECK(lunar_model_resolve_dtype("int8", &c, 1) == NULL);
    const char *j = TINY_CFG("LlamaForCausalLM", "llama", ",\"rope_parameters\":{\"rope_theta\":500000.0,"
                             "\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                             "\"original_max_position_embeddings\":8192},\"dtype\":\"float16\"");
    CHECK_EQ_INT(lunar_config_parse(j, strlen(j), "v5", &c), 0);
    CHECK_NEAR(c.rope.theta, 500000.0, 0);
    CHECK_EQ_INT(c.rope.type, LUNAR_ROPE_LLAMA3);
    CHECK_EQ_INT(c.rope.original_max_position, 8192);
}

/* ---- fuzz ----------------------------------------------------------------------------- */

static int fuzz_seen(void *ctx, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape, size_t begin,
                     size_t end)
{
    size_t *len = ctx;
    (void)name; (void)dt; (void)ndim; (void)shape;
    if (begin > end || end > *len) return LUNAR_EINVAL;   /* would be a parser bug */
    return 0;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void test_mutated_safetensors_headers_never_crash(void)
{
    spec_t s[64];
    char p[700];
    snprintf(p, sizeof p, "%s/fuzz.safetensors", tmpdir);
    write_st(p, s, tiny_specs(s, 1, false, true));
    FILE *f = fopen(p, "rb");
    static unsigned char orig[16384], buf[16384];
    size_t len = fread(orig, 1, sizeof orig, f);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | orig[i];
    int accepted = 0, rejected = 0, bogus = 0;
    static const char *tokens[] = { "\"F32\"", "\"Q4\"", "-1", "99999999999", "1e400", "[", "]", "{", "}", ",", "\"",
                                    "0", "18446744073709551615", "null", "\"data_offsets\"", "\"shape\"" };
    for (int iter = 0; iter < 400; iter++) {
        memcpy(buf, orig, len);
        size_t n = len;
        int kind = iter % 5;
        if (kind == 0) {            /* random bytes in the header */
            for (int k = 0; k < 1 + (int)(next() % 4); k++) buf[8 + next() % hlen] = (unsigned char)next();
        } else if (kind == 1) {     /* a digit changed: offsets/shapes out of range or overlapping */
            for (size_t k = 8 + next() % hlen; k < 8 + hlen; k++)
                if (buf[k] >= '0' && buf[k] <= '9') { buf[k] = (unsigned char)('0' + next() % 10); break; }
        } else if (kind == 2) {     /* truncated file */
            n = next() % len;
        } else if (kind == 3) {     /* header length field corrupted */
            uint64_t v = next() % 3 == 0 ? next() : hlen + (next() % 64) - 32;
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
        } else {                    /* a token spliced in */
            const char *t = tokens[next() % (sizeof tokens / sizeof tokens[0])];
            size_t at = 8 + next() % hlen, tl = strlen(t);
            memcpy(buf + at, t, at + tl <= 8 + hlen ? tl : 8 + hlen - at);
        }
        int rc = st_parse(buf, n, "fuzz.safetensors", fuzz_seen, &n);
        if (rc == 0) accepted++;
        else if (rc == LUNAR_EINVAL) bogus++;
        else {
            rejected++;
            CHECK_MSG(strstr(lunar_errmsg(), "fuzz.safetensors") && !strchr(lunar_errmsg(), '\n'), "%s", lunar_errmsg());
        }
    }
    CHECK_EQ_INT(bogus, 0);
    CHECK(rejected > 200);
    printf("fuzz: %d mutated safetensors accepted, %d rejected\n", accepted, rejected);
}


/* ---- pytorch_model.bin ----------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static const char *fixtures(void)
{
    static char p[512];
    const char *src = getenv("LUNAR_SRC");
    snprintf(p, sizeof p, "%s/tests/fixtures/model", src ? src : ".");
    return p;
}

/* A reference file's tensors, through the safetensors parser, by name. */
typedef struct { const unsigned char *base; const char *name; const void *data; size_t nbytes; lunar_dtype_t dt; } ref_t;
static int ref_find(void *ctx, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape, size_t b, size_t e)
{
    ref_t *r = ctx;
    (void)ndim; (void)shape;
    if (strcmp(name, r->name) == 0) { r->data = r->base + b; r->nbytes = e - b; r->dt = dt; }
    return 0;
}

/* Every tensor of model `dir` (pytorch_model*.bin) equals the same-named tensor that
 * safetensors' own writer stored in `ref` from the same torch state dict. */
static void check_same_as_safetensors(const char *dir, const char *ref, int want_tensors)
{
    lunar_model_t *m;
    lunar_load_options_t o = { .config_only = 1 };   /* bytes as stored: no --dtype conversion */
    int rc = lunar_model_load(dir, &o, &m);
    CHECK_MSG(rc == 0, "%s: %s", dir, lunar_errmsg());
    if (rc) return;
    CHECK_STR(lunar_model_format(m), "pt");
    CHECK_EQ_INT(lunar_model_tensor_count(m), want_tensors);
    size_t len;
    unsigned char *buf = slurp(ref, &len);
    CHECK(buf != NULL);
    int same = 0;
    for (int i = 0; buf && i < lunar_model_tensor_count(m); i++) {
        const lunar_tensor_t *t = lunar_model_tensor(m, i);
        ref_t r = { buf, t->name, NULL, 0, 0 };
        CHECK_EQ_INT(st_parse(buf, len, ref, ref_find, &r), 0);
        CHECK_MSG(r.data && r.nbytes == t->nbytes && r.dt == t->dtype && memcmp(r.data, t->data, t->nbytes) == 0,
                  "%s: tensor %s differs from %s", dir, t->name, ref);
        same += r.data && r.nbytes == t->nbytes && memcmp(r.data, t->data, t->nbytes) == 0;
    }
    CHECK_EQ_INT(same, want_tensors);
    free(buf);
    lunar_model_free(m);
}

static void test_pytorch_bin_matches_safetensors(void)
{
    char dir[600], ref[600];
    snprintf(dir, sizeof dir, "%s/baichuan-tiny-pt", fixtures());
    snprintf(ref, sizeof ref, "%s/baichuan-tiny.safetensors", fixtures());
    check_same_as_safetensors(dir, ref, 2 * 8 + 3);
    snprintf(dir, sizeof dir, "%s/llama-sharded-pt", fixtures());
    snprintf(ref, sizeof ref, "%s/llama-sharded.safetensors", fixtures());
    check_same_as_safetensors(dir, ref, 2 * 9 + 3);

    /* stories260K saved by torch.save (lm_head sharing embed's storage) == the shared safetensors */
    const char *shared = getenv("LUNAR_SHARED");
    snprintf(dir, sizeof dir, "%s/stories260K-pt", fixtures());
    snprintf(ref, sizeof ref, "%s/models/stories260K/model.safetensors", shared ? shared : "../shared");
    check_same_as_safetensors(dir, ref, 48);

    /* Baichuan W_pack through the pickle path: q/k/v views of the fused rows */
    lunar_model_t *m;
    snprintf(dir, sizeof dir, "%s/baichuan-tiny-pt", fixtures());
    if (lunar_model_load(dir, NULL, &m) == 0) {
        const lunar_layer_weights_t *L = &lunar_model_weights(m)->layers[0];
        CHECK_EQ_INT(L->wk->shape[0], 16);
        CHECK((char *)L->wv->data == (char *)L->wq->data + 2 * 16 * 16 * 2);
        CHECK_EQ_INT(lunar_model_dtype(m), LUNAR_DTYPE_F16);
        lunar_model_free(m);
    }
}

typedef struct { int n; const char *names[8]; const void *data[8]; size_t nbytes[8]; int ndim[8]; lunar_dtype_t dt[8]; } seen_t;
static int pt_seen(void *ctx, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    seen_t *s = ctx;
    (void)shape;
    if (s->n < 8) {
        s->names[s->n] = strdup(name);
        s->data[s->n] = data;
        s->nbytes[s->n] = nbytes;
        s->ndim[s->n] = ndim;
        s->dt[s->n] = dt;
    }
    s->n++;
    return 0;
}

static void test_pickle_views_dtypes_and_refusals(void)
{
    char p[600];
    size_t len;
    snprintf(p, sizeof p, "%s/views.bin", fixtures());
    unsigned char *buf = slurp(p, &len);
    CHECK(buf != NULL);
    if (!buf) return;
    seen_t s = { 0 };
    CHECK_EQ_INT(pt_parse(buf, len, "views.bin", pt_seen, &s), 0);
    CHECK_EQ_INT(s.n, 6);
    if (s.n == 6) {
        /* {"slice": base[2:6], "whole": base, "scalar": 3.5, "ids": arange(4), "mask": [T,F,T], "half": f16 base[1:3]} */
        CHECK_STR(s.names[0], "slice");
        CHECK((const char *)s.data[0] == (const char *)s.data[1] + 8);   /* same storage, offset 2 floats */
        CHECK(((const float *)s.data[0])[0] == 2.0f && ((const float *)s.data[0])[3] == 5.0f);
        CHECK_EQ_INT(s.nbytes[0], 16);
        CHECK_EQ_INT(s.ndim[2], 0);
        CHECK(*(const float *)s.data[2] == 3.5f);
        CHECK_EQ_INT(s.dt[3], LUNAR_DTYPE_I64);
        CHECK_EQ_INT(((const int64_t *)s.data[3])[3], 3);
        CHECK_EQ_INT(s.dt[4], LUNAR_DTYPE_BOOL);
        CHECK_EQ_INT(((const unsigned char *)s.data[4])[2], 1);
        CHECK_EQ_INT(s.dt[5], LUNAR_DTYPE_F16);
        CHECK_EQ_INT(((const uint16_t *)s.data[5])[0], 0x3c00);   /* 1.0 */
    }
    for (int i = 0; i < s.n && i < 8; i++) free((void *)s.names[i]);

    /* torch.save(model.state_dict()): OrderedDict by REDUCE, items, then BUILD with _metadata;
     * a Parameter through _rebuild_parameter (gen_ordereddict_bin.py) */
    snprintf(p, sizeof p, "%s/ordereddict.bin", fixtures());
    size_t olen;
    unsigned char *ob = slurp(p, &olen);
    seen_t so = { 0 };
    CHECK(ob && pt_parse(ob, olen, "ordereddict.bin", pt_seen, &so) == 0);
    CHECK_EQ_INT(so.n, 2);
    if (so.n == 2) {
        CHECK_STR(so.names[0], "a.weight");
        float v[3];   /* Python's zipfile does not align entries: copy before reading */
        memcpy(v, (const char *)so.data[0] + 20, 4);
        CHECK(v[0] == 6.0f);
        CHECK_STR(so.names[1], "b.bias");
        memcpy(v, so.data[1], 12);
        CHECK(v[0] == 11.0f && v[2] == 13.0f);
    }
    for (int i = 0; i < so.n && i < 8; i++) free((void *)so.names[i]);
    free(ob);

    /* a compressed entry (method 8 written into the central directory) is refused by name */
    for (size_t i = len - 22; i-- > 0;)
        if (buf[i] == 'P' && buf[i + 1] == 'K' && buf[i + 2] == 1 && buf[i + 3] == 2) { buf[i + 10] = 8; break; }
    CHECK_EQ_INT(pt_parse(buf, len, "views.bin", NULL, NULL), LUNAR_EUNSUPPORTED);
    CHECK_CONTAINS(lunar_errmsg(), "is compressed");
    free(buf);

    snprintf(p, sizeof p, "%s/noncontig.bin", fixtures());
    buf = slurp(p, &len);
    CHECK(buf && pt_parse(buf, len, "noncontig.bin", NULL, NULL) == LUNAR_EUNSUPPORTED);
    CHECK_CONTAINS(lunar_errmsg(), "not contiguous");
    free(buf);
    snprintf(p, sizeof p, "%s/legacy.bin", fixtures());
    buf = slurp(p, &len);
    CHECK(buf && pt_parse(buf, len, "legacy.bin", NULL, NULL) == LUNAR_EUNSUPPORTED);
    CHECK_CONTAINS(lunar_errmsg(), "legacy");
    free(buf);

    /* a pickle that would run code: GLOBAL os.system + REDUCE */
    static const unsigned char evil[] = "\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00id" "\x85R.";
    CHECK_EQ_INT(pt_run_pickle_for_test(evil, sizeof evil - 1, "evil.pkl"), LUNAR_EUNSUPPORTED);
    CHECK_CONTAINS(lunar_errmsg(), "os.system");
}

static int pt_count(void *ctx, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    (void)name; (void)dt; (void)ndim; (void)shape;
    volatile unsigned char sink = 0;
    /* touch the first and last byte: ASan/valgrind flag any range outside the buffer */
    if (nbytes) sink ^= ((const unsigned char *)data)[0] ^ ((const unsigned char *)data)[nbytes - 1];
    (void)sink;
    (*(int *)ctx)++;
    return 0;
}

static void test_mutated_pickles_never_crash(void)
{
    char p[600];
    size_t len;
    snprintf(p, sizeof p, "%s/views.bin", fixtures());
    unsigned char *orig = slurp(p, &len);
    CHECK(orig != NULL);
    if (!orig) return;
    /* where data.pkl's bytes are (the first entry) */
    zip_entry_t *ents;
    int nents;
    CHECK_EQ_INT(zip_open(orig, len, "views.bin", &ents, &nents), 0);
    size_t pkl = (size_t)(ents[0].data - orig), pkl_len = (size_t)ents[0].size;
    free(ents);
    static const unsigned char ops[] = { '(', 't', 'R', 'Q', 'h', 'q', 'u', 's', '.', 'N', ')', '}', 0x85, 0x86, 'b', 'e', 'a', 0x93, 0x94, 'X', 'K', 0x8a };
    int rejected = 0, accepted = 0;
    for (int iter = 0; iter < 400; iter++) {
        unsigned char *buf = malloc(len);
        memcpy(buf, orig, len);
        size_t n = len;
        int kind = iter % 4;
        if (kind == 0) {
            for (int k = 0; k < 1 + (int)(next() % 3); k++) buf[pkl + next() % pkl_len] = (unsigned char)next();
        } else if (kind == 1) {
            buf[pkl + next() % pkl_len] = ops[next() % sizeof ops];
        } else if (kind == 2) {
            buf[next() % len] ^= (unsigned char)(1u << (next() % 8));     /* anywhere: zip structure too */
        } else {
            n = next() % len;                                                /* truncated */
        }
        int count = 0;
        int rc = pt_parse(buf, n, "mutated.bin", pt_count, &count);
        if (rc == 0) accepted++;
        else {
            rejected++;
            CHECK_MSG(strstr(lunar_errmsg(), "mutated.bin") && !strchr(lunar_errmsg(), '\n'), "%s", lunar_errmsg());
        }
        free(buf);
    }
    CHECK(rejected > 150);
    printf("fuzz: %d mutated pickles accepted, %d rejected\n", accepted, rejected);
    free(orig);
}

/* ---- models saved by transformers itself -------------------------------------------- */

static int count_expected(void *ctx, const arch_tensor_t *t)
{
    if (!t->optional) (*(int *)ctx)++;
    return 0;
}

static void test_transformers_saved_models_load_completely(void)
{
    char p[600];
    size_t n;
    snprintf(p, sizeof p, "%s/hf_tiny.json", fixtures());
    unsigned char *text = slurp(p, &n);
    cJSON *ref = text ? cJSON_ParseWithLength((char *)text, n) : NULL;
    free(text);
    const cJSON *tiny = cJSON_GetObjectItem(ref, "tiny"), *e;
    int seen = 0;
    cJSON_ArrayForEach(e, tiny) {
        char dir[700];
        snprintf(dir, sizeof dir, "%s/hf-%s", fixtures(), e->string);
        lunar_model_t *m;
        int rc = lunar_model_load(dir, NULL, &m);
        CHECK_MSG(rc == 0, "%s: %s", e->string, lunar_errmsg());
        if (rc) continue;
        const cJSON *saved = cJSON_GetObjectItem(e, "saved");
        /* every tensor transformers saved is one the table expects, with its shape */
        int expected = 0;
        arch_expected(lunar_model_config(m), count_expected, &expected);
        CHECK_MSG(expected == cJSON_GetArraySize(saved), "%s: table expects %d tensors, transformers saved %d",
                  e->string, expected, cJSON_GetArraySize(saved));
        CHECK_EQ_INT(lunar_model_tensor_count(m), cJSON_GetArraySize(saved));
        for (int i = 0; i < lunar_model_tensor_count(m); i++) {
            const lunar_tensor_t *t = lunar_model_tensor(m, i);
            const cJSON *shape = cJSON_GetObjectItem(saved, t->name);
            CHECK_MSG(shape && cJSON_GetArraySize(shape) == t->ndim, "%s: %s", e->string, t->name);
            for (int d = 0; shape && d < t->ndim; d++) CHECK_EQ_INT(cJSON_GetArrayItem(shape, d)->valuedouble, t->shape[d]);
        }
        lunar_param_count_t pc;
        CHECK_EQ_INT(lunar_param_count(lunar_model_config(m), &pc), 0);
        CHECK_MSG((double)pc.total == cJSON_GetObjectItem(e, "params")->valuedouble, "%s: %llu parameters", e->string,
                  (unsigned long long)pc.total);
        const lunar_model_config_t *c = lunar_model_config(m);
        const lunar_weights_t *w = lunar_model_weights(m);
        if (strcmp(e->string, "qwen2") == 0) CHECK(w->layers[1].bk != NULL && w->layers[1].bo == NULL);
        if (strcmp(e->string, "qwen3") == 0) CHECK(w->layers[1].k_norm != NULL && w->lm_head == w->embed);
        if (strcmp(e->string, "mistral") == 0) CHECK_EQ_INT(c->sliding_window, 32);
        if (strcmp(e->string, "llama") == 0) CHECK_EQ_INT(c->rope.type, LUNAR_ROPE_LLAMA3);
        if (strcmp(e->string, "mixtral") == 0) CHECK(w->layers[1].expert_down[3] != NULL && w->layers[1].router != NULL);
        if (strcmp(e->string, "qwen3_moe") == 0) CHECK(w->layers[0].expert_up[0] != NULL && w->layers[0].w_up == NULL);
        lunar_model_free(m);
        seen++;
    }
    CHECK_EQ_INT(seen, 6);
    cJSON_Delete(ref);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lunar-test-model-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    lunar_log_set_level(LUNAR_LOG_ERROR);
    test_config_fields_of_each_family();
    test_config_errors_name_the_key();
    test_dtype_conversion_rounds_like_torch();
    test_loads_shared_models();
    test_tied_embedding_and_wpack_views();
    test_baichuan2_head_is_normalized();
    test_bad_folders_give_one_line_errors();
    test_dummy_weights_are_deterministic();
    test_dummy_on_device_publishes_the_host_generator();
    test_hostile_safetensors_headers_are_named();
    test_transformers5_rope_parameters();
    test_mutated_safetensors_headers_never_crash();
    test_pytorch_bin_matches_safetensors();
    test_pickle_views_dtypes_and_refusals();
    test_mutated_pickles_never_crash();
    test_transformers_saved_models_load_completely();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return CHECK_DONE();
}
