/*
 * test_runner_reference.c — the CPU forward against Hugging Face transformers.
 *
 * Fixtures (tests/fixtures/runner/, made by make_fixtures.py with transformers 5.17 / torch
 * 2.11, float32, eager attention):
 *   greedy/<model>.json  model.generate(do_sample=False) of 64 tokens from 4 prompts of the
 *                        shared models; our greedy ids must match token for token.
 *   <case>/              a random tiny model per architecture and rope variant (llama GQA + tied
 *                        + head_dim != hidden/heads, rope linear / dynamic / llama3, mistral
 *                        sliding window, qwen2 q/k/v bias + yarn, qwen3 q/k norm, Baichuan W_pack)
 *                        with the logits of every position of a fixed prompt.
 *
 * Tolerance: both sides compute in f32, but in different orders (torch's blocked GEMM and
 * softmax vs our per-row dots and online softmax), so each logit carries a few ulps of rounding
 * per op. Through 2 layers the error stays near 1e-6 relative; logits here reach |56| (tied
 * models with unit-variance embeddings), where one f32 ulp is 4e-6. Measured worst errors:
 * 1.9e-5 where logits reach |56|, under 2e-6 where they stay under |4| (the test prints them).
 * We allow 1e-4 + 1e-5 * |ref| (6.6e-4 at |56|, 1.4e-4 at |4|): some 30-70x the measured error,
 * yet far below any real mistake (a wrong rope angle, bias or mask moves logits by 1e-2 or more).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "runner_ref.h"
#include "lunar.h"
#include "lunar/runner.h"

/* Largest |ours - ref| over T x V, and whether every element is within tolerance. */
static double compare(const char *what, const float *ours, const cJSON *ref_rows, int T, int V, int *ok)
{
    double worst = 0;
    int bad = 0, t = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, ref_rows) {
        if (t >= T) break;
        int v = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, row) {
            double ref = e->valuedouble, d = fabs((double)ours[(size_t)t * V + v] - ref);
            if (d > worst) worst = d;
            if (d > 1e-4 + 1e-5 * fabs(ref) && bad++ < 3)
                fprintf(stderr, "  %s: position %d token %d: ours %.7g, transformers %.7g\n", what, t, v,
                        ours[(size_t)t * V + v], ref);
            v++;
        }
        t++;
    }
    *ok = bad == 0 && t == T;
    return worst;
}

static void check_config_forms(const char *name, const lunar_model_config_t *hub)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/config.v5.json", name);
    FILE *f = fopen(fixture(rel), "rb");
    if (!f) return; /* Baichuan has no transformers 5 form */
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    lunar_model_config_t v5;
    memset(&v5, 0, sizeof v5);
    int rc = lunar_config_parse(buf, n, rel, &v5);
    CHECK_MSG(rc == 0, "%s: %s", rel, lunar_errmsg());
    CHECK_MSG(v5.rope.type == hub->rope.type && v5.rope.theta == hub->rope.theta && v5.rope.factor == hub->rope.factor &&
                  v5.rope.original_max_position == hub->rope.original_max_position &&
                  v5.head_dim == hub->head_dim && v5.num_kv_heads == hub->num_kv_heads &&
                  v5.tie_word_embeddings == hub->tie_word_embeddings && v5.sliding_window == hub->sliding_window &&
                  v5.qkv_bias == hub->qkv_bias && v5.qk_norm == hub->qk_norm,
              "%s: transformers 5's config.json reads differently from the hub form", name);
}

/* Every position's logits: whole prompt in one step, in chunks of 7, and one token at a time. */
static void check_case(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/reference.json", name);
    cJSON *ref = read_json(fixture(rel));
    if (!ref) return;
    snprintf(rel, sizeof rel, "%s", name);
    lunar_model_t *m = NULL;
    int rc = lunar_model_load(fixture(rel), NULL, &m);
    CHECK_MSG(rc == 0, "load %s: %s", name, lunar_errmsg());
    if (!m) { cJSON_Delete(ref); return; }
    const lunar_model_config_t *c = lunar_model_config(m);
    check_config_forms(name, c);
    int V = c->vocab_size;
    static int32_t ids[MAXT];
    int T = int_array(cJSON_GetObjectItem(ref, "input_ids"), ids, MAXT);
    const cJSON *rows = cJSON_GetObjectItem(ref, "logits");
    float *logits = calloc((size_t)T * V, sizeof(float));
    int ok;

    lunar_runner_t *r = make_runner(m, NULL);
    CHECK_EQ_INT(step(r, ids, 0, T, 1, logits), 0);
    double worst = compare(name, logits, rows, T, V, &ok);
    CHECK_MSG(ok, "%s: prefill logits differ from transformers (worst %.3g)", name, worst);
    printf("%-24s prefill      max |ours - transformers| = %.3g\n", name, worst);
    lunar_runner_free(r);

    /* dynamic NTK recomputes the frequencies from the running length, so a cached prefix was
     * rotated with other angles than a full forward uses: only the one-step forward matches
     * transformers' full-sequence logits (as its own cached decode would not either) */
    if (c->rope.type != LUNAR_ROPE_DYNAMIC) {
        r = make_runner(m, NULL);
        for (int from = 0; from < T; from += 7) {
            int to = from + 7 < T ? from + 7 : T;
            CHECK_EQ_INT(step(r, ids, from, to, 1, logits + (size_t)from * V), 0);
        }
        worst = compare(name, logits, rows, T, V, &ok);
        CHECK_MSG(ok, "%s: chunked-prefill logits differ from transformers (worst %.3g)", name, worst);
        lunar_runner_free(r);
        r = make_runner(m, NULL);
        for (int p = 0; p < T; p++) CHECK_EQ_INT(step(r, ids, p, p + 1, 1, logits + (size_t)p * V), 0);
        worst = compare(name, logits, rows, T, V, &ok);
        CHECK_MSG(ok, "%s: decode logits differ from transformers (worst %.3g)", name, worst);
        printf("%-24s decode       max |ours - transformers| = %.3g\n", name, worst);
        lunar_runner_free(r);
    }
    free(logits);
    lunar_model_free(m);
    cJSON_Delete(ref);
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_WARN);
    static const char *cases[] = {"llama_gqa_tied", "llama_rope_linear", "llama_rope_dynamic", "llama_rope_llama3",
                                  "mistral_sliding_window", "qwen2_bias_yarn", "qwen3_qk_norm", "baichuan"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(cases[i]);
    check_greedy("stories260K", NULL, NULL);
    check_greedy("TinyStories-656K", NULL, NULL);
    return CHECK_DONE();
}
