/*
 * test_runner_memory.c — the start-up memory breakdown, the profiling forward and resizing the
 * KV cache, on the CPU backend: the calls the CUDA start-up makes (lua/lunar/runner.lua), so CI
 * runs them; tests/gpu/run_backend.sh checks the device figures.
 *
 * References: KV bytes per token from config.json's shapes (2 x 5 layers x 4 kv heads x 8
 * head_dim x 4 bytes of f32 for stories260K); the weights from the safetensors file's size less
 * its header (plus the runner's f32 norm copies); a runner resized after profiling must decode greedily token for token as a runner
 * created at that size, and its greedy text must be the published stories260K sample.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lunar.h"
#include "lunar/runner.h"

#define BS 16
#define GEN 40 /* BOS + 40 tokens: 3 blocks of 16 */

static char path[512];
static const char *model_file(const char *rel)
{
    const char *shared = getenv("LUNAR_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K%s", shared ? shared : "../shared", rel);
    return path;
}

static lunar_model_t *load_model(void)
{
    lunar_model_t *m = NULL;
    int rc = lunar_model_load(model_file(""), NULL, &m);
    CHECK_MSG(rc == 0, "load stories260K: %s", lunar_errmsg());
    return m;
}

static lunar_runner_t *make(lunar_model_t *m, int blocks, int max_tokens, int max_seqs)
{
    lunar_runner_options_t o;
    lunar_runner_options_default(&o);
    o.num_kv_blocks = blocks;
    o.block_size = BS;
    o.max_num_batched_tokens = max_tokens;
    o.max_num_seqs = max_seqs;
    o.num_threads = 2;
    lunar_runner_t *r = NULL;
    int rc = lunar_runner_create(m, &o, &r);
    CHECK_MSG(rc == 0, "runner_create: %s", lunar_errmsg());
    return r;
}

/* Greedy from BOS (id 1 in llama2.c's vocabulary) for GEN tokens, one decode step at a time,
 * the sequence in blocks first, first+1, first+2. Returns 0 or the forward's error. */
static int greedy(lunar_runner_t *r, int first, int32_t *ids)
{
    float logits[512];
    int32_t bt[3] = {first, first + 1, first + 2};
    ids[0] = 1;
    for (int32_t p = 0; p < GEN; p++) {
        int32_t qs[2] = {0, 1}, len = p + 1, li = 0;
        int64_t slot = (int64_t)bt[p / BS] * BS + p % BS;
        lunar_batch_t b = {1, 1, &ids[p], &p, &slot, qs, &len, bt, 3, &li, 1};
        int rc = lunar_runner_forward(r, &b, logits);
        if (rc) return rc;
        int best = 0;
        for (int i = 1; i < 512; i++)
            if (logits[i] > logits[best]) best = i;
        ids[p + 1] = best;
    }
    return 0;
}

static void test_breakdown_counts_exact_bytes(void)
{
    lunar_model_t *m = load_model();
    if (!m) return;
    lunar_runner_t *r = make(m, 10, 64, 4);
    lunar_runner_memory_t mem;
    CHECK_EQ_INT(lunar_runner_memory(r, &mem), 0);
    CHECK_EQ_INT((int)mem.kv_bytes_per_token, 2 * 5 * 4 * 8 * 4);
    CHECK_EQ_INT((int)mem.kv_bytes_per_token, (int)lunar_runner_kv_bytes_per_token(m, "cpu"));
    CHECK(mem.kv_cache == 10ull * BS * mem.kv_bytes_per_token);
    CHECK_EQ_INT(mem.num_kv_blocks, 10);
    CHECK_EQ_INT(mem.block_size, BS);

    /* the weights: every byte of the safetensors file after its 8-byte length and JSON header,
     * and the runner's f32 copies of the norm weights (5 layers x 2 x 64, and the final 64) */
    FILE *f = fopen(model_file("/model.safetensors"), "rb");
    CHECK_MSG(f != NULL, "open %s", path);
    if (f) {
        unsigned char h[8];
        CHECK_EQ_INT((int)fread(h, 1, 8, f), 8);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | h[i];
        fseek(f, 0, SEEK_END);
        uint64_t data = (uint64_t)ftell(f) - 8 - hlen + (5 * 2 * 64 + 64) * 4;
        fclose(f);
        CHECK_MSG(mem.weights == data, "weights %llu, file holds %llu", (unsigned long long)mem.weights,
                  (unsigned long long)data);
    }
    /* activations: at least x, xn, q, k, v, att, proj, gate, up for 64 tokens (f32) */
    uint64_t floor = 64ull * 4 * (64 + 64 + 64 + 32 + 32 + 64 + 64 + 172 + 172);
    CHECK_MSG(mem.activations >= floor, "activations %llu < %llu", (unsigned long long)mem.activations,
              (unsigned long long)floor);
    CHECK(mem.device_total == 0 && mem.device_used == 0 && mem.other == 0 && mem.cuda_graphs == 0);
    CHECK_EQ_INT(mem.profiled, 0);
    lunar_runner_free(r);
    lunar_model_free(m);
}

static void test_profile_spreads_the_largest_step_over_few_sequences(void)
{
    lunar_model_t *m = load_model();
    if (!m) return;
    lunar_runner_t *r = make(m, 10, 64, 4); /* 160 slots: one sequence carries all 64 tokens */
    lunar_runner_memory_t mem;
    CHECK_EQ_INT(lunar_runner_profile(r, 0, &mem), 0);
    CHECK_EQ_INT(mem.profiled, 1);
    CHECK_EQ_INT(mem.profile_tokens, 64);
    CHECK_EQ_INT(mem.profile_seqs, 1);
    CHECK_EQ_INT(mem.graph_seqs, 0); /* no CUDA graphs on the cpu */
    CHECK_EQ_INT(lunar_runner_profile(r, 20, &mem), 0); /* max_model_len 20: 20+20+20+4 */
    CHECK_EQ_INT(mem.profile_tokens, 64);
    CHECK_EQ_INT(mem.profile_seqs, 4);
    CHECK_EQ_INT(lunar_runner_profile(r, 10, &mem), 0); /* max_num_seqs 4 x 10 tokens */
    CHECK_EQ_INT(mem.profile_tokens, 40);
    CHECK_EQ_INT(mem.profile_seqs, 4);
    CHECK_EQ_INT((int)lunar_runner_tokens_computed(r), 0); /* the profile is not the engine's work */
    lunar_runner_free(r);

    r = make(m, 10, 8, 16); /* max_num_seqs past the step's tokens: decodes of 8 */
    CHECK_EQ_INT(lunar_runner_profile(r, 0, &mem), 0);
    CHECK_EQ_INT(mem.profile_tokens, 8);
    lunar_runner_free(r);

    r = make(m, 2, 64, 8); /* 32 slots: the cache, not the step, bounds a sequence */
    CHECK_EQ_INT(lunar_runner_profile(r, 0, NULL), 0);
    CHECK_EQ_INT(lunar_runner_memory(r, &mem), 0);
    CHECK_EQ_INT(mem.profile_tokens, 64);
    CHECK_EQ_INT(mem.profile_seqs, 2);
    lunar_runner_free(r);
    lunar_model_free(m);
}

static void test_resized_cache_decodes_as_one_created_at_that_size(void)
{
    lunar_model_t *m = load_model();
    if (!m) return;
    lunar_runner_t *fresh = make(m, 40, 64, 4), *r = make(m, 3, 64, 4);
    int32_t want[GEN + 1], got[GEN + 1];
    CHECK_EQ_INT(greedy(fresh, 37, want), 0);

    CHECK_EQ_INT(lunar_runner_profile(r, 0, NULL), 0);
    CHECK_EQ_INT(greedy(r, 37, got), LUNAR_ERANGE); /* block 37 is past the 3-block cache */
    CHECK_EQ_INT(lunar_runner_set_kv_blocks(r, 40), 0);
    lunar_runner_memory_t mem;
    CHECK_EQ_INT(lunar_runner_memory(r, &mem), 0);
    CHECK_EQ_INT(mem.num_kv_blocks, 40);
    CHECK(mem.kv_cache == 40ull * BS * mem.kv_bytes_per_token);
    memset(got, 0, sizeof got);
    CHECK_EQ_INT(greedy(r, 37, got), 0);
    CHECK_MSG(!memcmp(want, got, sizeof want), "resized 3 -> 40 blocks decodes differently");

    CHECK_EQ_INT(lunar_runner_set_kv_blocks(r, 3), 0); /* and back down: a fresh, zeroed cache */
    memset(got, 0, sizeof got);
    CHECK_EQ_INT(greedy(r, 0, got), 0);
    CHECK_MSG(!memcmp(want, got, sizeof want), "resized 40 -> 3 blocks decodes differently");

    /* the published sample (llama2.c doc/stories260K.md): "Once upon a time, there was a
     * little girl named Lily." — its first tokens, as the tokenizer encodes them */
    lunar_tokenizer_t *tok = NULL;
    CHECK_EQ_INT(lunar_tokenizer_load(model_file(""), &tok), 0);
    if (tok) {
        char *text = NULL;
        size_t len = 0;
        CHECK_EQ_INT(lunar_tokenizer_decode(tok, got, GEN + 1, 1, &text, &len), 0);
        CHECK_CONTAINS(text, "Once upon a time, there was a little girl named Lily.");
        lunar_free(text);
        lunar_tokenizer_free(tok);
    }
    lunar_runner_free(fresh);
    lunar_runner_free(r);
    lunar_model_free(m);
}

static void test_bad_sizes_are_refused_and_the_cache_kept(void)
{
    lunar_model_t *m = load_model();
    if (!m) return;
    lunar_runner_t *r = make(m, 3, 64, 4);
    CHECK_EQ_INT(lunar_runner_set_kv_blocks(r, 0), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "num_kv_blocks 0");
    CHECK_EQ_INT(lunar_runner_set_kv_blocks(r, -5), LUNAR_EINVAL);
    CHECK_EQ_INT(lunar_runner_set_kv_blocks(NULL, 3), LUNAR_EINVAL);
    CHECK_EQ_INT(lunar_runner_memory(r, NULL), LUNAR_EINVAL);
    CHECK_EQ_INT(lunar_runner_profile(NULL, 0, NULL), LUNAR_EINVAL);
    int32_t ids[GEN + 1];
    CHECK_EQ_INT(greedy(r, 0, ids), 0); /* still runs on its 3 blocks */
    lunar_runner_free(r);
    lunar_model_free(m);
}

int main(void)
{
    test_breakdown_counts_exact_bytes();
    test_profile_spreads_the_largest_step_over_few_sequences();
    test_resized_cache_decodes_as_one_created_at_that_size();
    test_bad_sizes_are_refused_and_the_cache_kept();
    return CHECK_DONE();
}
