/*
 * test_model_memory.c — parameter counts, tensor/pipeline-parallel validation and the memory
 * plan of `lunar memory`, on the real configs of bench/configs.
 *
 * Parameter counts are checked against transformers' own count (sum of numel over the
 * parameters of AutoModelForCausalLM built on the meta device; tests/fixtures/model/
 * reference.json, made by gen_pt_fixtures.py). Per-GPU and KV figures are checked against
 * sums written out by hand here from the published shapes.
 */
#include "check.h"
#include "lunar.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    if (b) b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int load_cfg(const char *name, lunar_model_config_t *c)
{
    char p[600];
    const char *src = getenv("LUNAR_SRC");
    snprintf(p, sizeof p, "%s/bench/configs/%s/config.json", src ? src : ".", name);
    size_t n;
    char *text = slurp(p, &n);
    if (!text) { fprintf(stderr, "cannot read %s\n", p); return -1; }
    int rc = lunar_config_parse(text, n, p, c);
    free(text);
    CHECK_MSG(rc == 0, "%s: %s", name, lunar_errmsg());
    return rc;
}

static void test_param_counts_match_transformers(void)
{
    char p[600];
    const char *src = getenv("LUNAR_SRC");
    snprintf(p, sizeof p, "%s/tests/fixtures/model/reference.json", src ? src : ".");
    size_t n;
    char *text = slurp(p, &n);
    cJSON *ref = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *counts = cJSON_GetObjectItem(ref, "param_counts"), *e;
    int seen = 0;
    cJSON_ArrayForEach(e, counts) {
        lunar_model_config_t c;
        if (load_cfg(e->string, &c)) continue;
        lunar_param_count_t pc;
        CHECK_EQ_INT(lunar_param_count(&c, &pc), 0);
        double want = cJSON_GetObjectItem(e, "total")->valuedouble;
        CHECK_MSG((double)pc.total == want, "%s: %llu parameters, transformers counts %.0f", e->string,
                  (unsigned long long)pc.total, want);
        CHECK_MSG((double)pc.group[LUNAR_PARAM_EMBED] == cJSON_GetObjectItem(e, "embed")->valuedouble, "%s embed", e->string);
        uint64_t sum = 0;
        for (int g = 0; g < LUNAR_PARAM_GROUPS; g++) sum += pc.group[g];
        CHECK_EQ_INT(sum, pc.total);
        seen++;
    }
    CHECK_EQ_INT(seen, 8);
    cJSON_Delete(ref);

    /* active parameters of the MoE models: Qwen3-30B-A3B reads ~3.3B per token, 235B-A22B ~22B */
    lunar_model_config_t c;
    lunar_param_count_t pc;
    if (load_cfg("Qwen3-30B-A3B", &c) == 0 && lunar_param_count(&c, &pc) == 0) {
        uint64_t experts = 48ull * 128 * 3 * 768 * 2048;
        CHECK_EQ_INT(pc.group[LUNAR_PARAM_EXPERTS], experts);
        CHECK_EQ_INT(pc.active, pc.total - experts + experts / 128 * 8);
        CHECK(pc.active > 3300000000ull && pc.active < 3400000000ull);
    }
}

static void test_llama3_8b_plan_is_exact(void)
{
    lunar_model_config_t c;
    if (load_cfg("Llama-3-8B", &c)) return;
    lunar_memory_options_t o = { .dtype = LUNAR_DTYPE_BF16, .kv_dtype = LUNAR_DTYPE_BF16 };
    lunar_memory_plan_t p;
    CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
    CHECK_EQ_INT(p.weight_bytes, 8030261248ull * 2);
    CHECK_EQ_INT(p.weight_bytes_total, 8030261248ull * 2);
    CHECK_EQ_INT(p.kv_bytes_per_token, 2 * 32 * 8 * 128 * 2);   /* 128 KiB */
    CHECK_EQ_INT(p.sized, 0);
    CHECK_EQ_INT(p.max_model_len, 8192);

    /* TP=2: q/gate/up/vocab rows, o/down columns, k/v heads halve; norms stay whole */
    o.tensor_parallel_size = 2;
    CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
    uint64_t H = 4096, I = 14336, V = 128256, KV = 1024;
    uint64_t layer = (H * H + 2 * KV * H + H * H + 3 * I * H) / 2 + 2 * H;
    CHECK_EQ_INT(p.weight_bytes, 2 * (V * H / 2 * 2 + 32 * layer + H));
    CHECK_EQ_INT(p.kv_bytes_per_token, 2 * 32 * 4 * 128 * 2);
    CHECK_EQ_INT(p.kv_bytes_per_token_total, 2 * 32 * 8 * 128 * 2);

    /* TP=16 > 8 kv heads: each GPU keeps one kv head (replicated twice) */
    char note[256];
    CHECK_EQ_INT(lunar_parallel_check(&c, 16, 1, note, sizeof note), 0);
    CHECK_CONTAINS(note, "replicated on 2 GPUs");
    o.tensor_parallel_size = 16;
    CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
    CHECK_EQ_INT(p.kv_heads_per_gpu, 1);
    CHECK_EQ_INT(p.kv_replicated, 1);
    CHECK_EQ_INT(p.kv_bytes_per_token, 2 * 32 * 1 * 128 * 2);

    /* TP=3: say what would work */
    CHECK_EQ_INT(lunar_parallel_check(&c, 3, 1, NULL, 0), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "use one of 1, 2, 4, 8, 16, 32");
    CHECK_EQ_INT(lunar_parallel_check(&c, 1, 33, NULL, 0), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "at most 32");

    /* PP=3 over 32 layers: vLLM's split is 11, 11, 10; embed on the first, head on the last */
    o.tensor_parallel_size = 1;
    o.pipeline_parallel_size = 3;
    CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
    CHECK_EQ_INT(p.stage_layers[0], 11);
    CHECK_EQ_INT(p.stage_layers[1], 11);
    CHECK_EQ_INT(p.stage_layers[2], 10);
    CHECK_EQ_INT(p.stage_first_layer[2], 22);
    uint64_t full_layer = 2 * H * H + 2 * KV * H + 3 * I * H + 2 * H;
    CHECK_EQ_INT(p.stage_weight_bytes[0], 2 * (V * H + 11 * full_layer));
    CHECK_EQ_INT(p.stage_weight_bytes[1], 2 * (11 * full_layer));
    CHECK_EQ_INT(p.stage_weight_bytes[2], 2 * (10 * full_layer + H + V * H));
    CHECK_EQ_INT(p.kv_bytes_per_token, 2 * 11 * 8 * 128 * 2);

    /* KV sizing: a 1 GiB cache holds 1 GiB / 128 KiB = 8192 tokens = 512 blocks */
    o.pipeline_parallel_size = 1;
    o.kv_cache_memory_bytes = 1ull << 30;
    CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
    CHECK_EQ_INT(p.kv_cache_tokens, 8192);
    CHECK_EQ_INT(p.kv_cache_blocks, 512);
    CHECK_NEAR(p.max_concurrency, 1.0, 1e-12);

    /* an 80 GiB GPU at 0.9: what is left after weights and the estimates, in whole blocks */
    o.kv_cache_memory_bytes = 0;
    o.gpu_memory_bytes = 80ull << 30;
    o.gpu_memory_utilization = 0.9;
    o.max_model_len = 4096;
    CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
    int64_t avail = (int64_t)((double)(80ull << 30) * 0.9) - (int64_t)(8030261248ull * 2) - (int64_t)p.activation_bytes -
                    (int64_t)p.cuda_graph_bytes - (int64_t)p.cublas_workspace_bytes - (int64_t)p.nccl_bytes;
    CHECK_EQ_INT(p.kv_cache_bytes, avail);
    CHECK_EQ_INT(p.kv_cache_tokens, (uint64_t)avail / 131072 / 16 * 16);
    CHECK_NEAR(p.max_concurrency, (double)p.kv_cache_tokens / 4096.0, 1e-9);
    CHECK_EQ_INT(p.nccl_bytes, 0);
    CHECK_EQ_INT(p.cublas_workspace_bytes, 32u << 20);
    /* the activation estimate at 8192 tokens, 256 sequences: the formula of memory.c spelled out */
    uint64_t T = 8192, S = 256;
    uint64_t act = 2 * T * H * 2 + T * (32 + 16) * 128 * 2 + T * 32 * 128 * (2 + 4) + T * 3 * I * 2 + 2 * S * V * 4;
    CHECK_EQ_INT(p.activation_bytes, act);
}

static void test_moe_and_odd_shapes(void)
{
    lunar_model_config_t c;
    lunar_memory_options_t o = { .dtype = LUNAR_DTYPE_BF16, .kv_dtype = LUNAR_DTYPE_BF16 };
    lunar_memory_plan_t p;
    if (load_cfg("Qwen3-235B-A22B", &c) == 0) {
        /* 4 kv heads, TP=8: kv replicated twice; 94 layers, head_dim 128 */
        o.tensor_parallel_size = 8;
        CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
        CHECK_EQ_INT(p.kv_bytes_per_token_total, 2 * 94 * 4 * 128 * 2);
        CHECK_EQ_INT(p.kv_bytes_per_token, 2 * 94 * 1 * 128 * 2);
        CHECK_EQ_INT(p.weight_bytes_total, 235093634560ull * 2);
        CHECK_EQ_INT(p.nccl_bytes, 256u << 20);
    }
    if (load_cfg("Qwen2.5-7B", &c) == 0) {
        /* 28 heads: TP=8 does not divide */
        CHECK_EQ_INT(lunar_parallel_check(&c, 8, 1, NULL, 0), LUNAR_EINVAL);
        CHECK_CONTAINS(lunar_errmsg(), "28 attention heads; use one of 1, 2, 4, 7, 14, 28");
        /* q/k/v biases split with their rows: TP=2 per-GPU = (total - replicated)/2 + replicated */
        o.tensor_parallel_size = 2;
        CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
        uint64_t replicated = 28ull * 2 * 3584 + 3584;   /* norms */
        CHECK_EQ_INT(p.weight_bytes, 2 * ((7615616512ull - replicated) / 2 + replicated));
    }
    if (load_cfg("Baichuan-7B", &c) == 0) {
        CHECK_EQ_INT(c.num_kv_heads, 32);
        CHECK_EQ_INT(c.torch_dtype, LUNAR_DTYPE_F32);
        o.tensor_parallel_size = 1;
        CHECK_EQ_INT(lunar_memory_plan(&c, &o, &p), 0);
        CHECK_EQ_INT(p.kv_bytes_per_token, 2 * 32 * 32 * 128 * 2);
    }
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_ERROR);
    test_param_counts_match_transformers();
    test_llama3_8b_plan_is_exact();
    test_moe_and_odd_shapes();
    return CHECK_DONE();
}
