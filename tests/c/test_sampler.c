/* test_sampler.c — the sampler against hand-computed distributions: greedy, temperature,
 * top-k/top-p/min-p filtering, penalties in vLLM's formulas, seeded reproducibility, and the
 * validation messages of SamplingParams. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lunar.h"
#include "sampler/sampler.h"

enum { V = 8 };

static void params(lunar_sampling_params_t *p, float temp)
{
    lunar_sampling_params_default(p);
    p->temperature = temp;
}

/* Empirical frequencies of `draws` samples (positions 0..draws-1 of one seed). */
static void frequencies(lunar_sampler_t *s, const float *row, const lunar_sampling_params_t *p,
                        int draws, double *freq)
{
    for (int v = 0; v < V; v++) freq[v] = 0;
    int32_t out[1] = {0};
    for (int i = 0; i < draws; i++) {
        lunar_sample_input_t in = {.params = p, .seed = 1234, .seq_index = 0, .output = out};
        /* the draw is keyed by num_output: vary it, with no penalties it changes nothing else */
        in.num_output = i;
        in.output = NULL;
        freq[lunar_sampler_sample(s, row, &in)] += 1.0 / draws;
    }
}

/* The reference sampler: sort every candidate, cut, draw — the textbook algorithm. */
static const float *ref_p;
static int ref_cmp(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (ref_p[i] != ref_p[j]) return ref_p[i] > ref_p[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static int ref_sample(const float *row, int n_vocab, const lunar_sampling_params_t *p, double u01)
{
    float *q = malloc((size_t)n_vocab * sizeof *q);
    int32_t *idx = malloc((size_t)n_vocab * sizeof *idx);
    float m = row[0];
    for (int v = 1; v < n_vocab; v++)
        if (row[v] > m) m = row[v];
    int n = 0;
    for (int v = 0; v < n_vocab; v++) {
        q[v] = expf((row[v] - m) * (1.0f / p->temperature));
        if (q[v] > 0 && q[v] >= p->min_p) idx[n++] = v;
    }
    double total = 0;
    if (p->top_k > 0 && p->top_k < n) {
        ref_p = q;
        qsort(idx, (size_t)n, sizeof *idx, ref_cmp);
        n = p->top_k;
        for (int i = 0; i < n; i++) total += q[idx[i]];
    } else {
        for (int i = 0; i < n; i++) total += q[idx[i]];
        ref_p = q;
        if (p->top_p < 1) qsort(idx, (size_t)n, sizeof *idx, ref_cmp); /* else: id order */
    }
    if (p->top_p < 1) {
        double cum = 0, want = p->top_p * total;
        int keep = 0;
        while (keep < n && (keep == 0 || cum < want)) cum += q[idx[keep++]];
        n = keep;
        total = cum;
    }
    double u = u01 * total, cum = 0;
    int tok = idx[n - 1];
    for (int i = 0; i < n; i++) {
        cum += q[idx[i]];
        if (u < cum) {
            tok = idx[i];
            break;
        }
    }
    free(q);
    free(idx);
    return tok;
}

/* top-k / top-p select only the best candidates; the draw must equal the full sort's. */
static void test_against_full_sort(void)
{
    enum { BIG = 5000 };
    lunar_sampler_t s;
    CHECK_EQ_INT(lunar_sampler_init(&s, BIG), 0);
    static float row[BIG];
    uint64_t st = 99;
    int mismatches = 0, cases = 0;
    const int ks[] = {-1, 1, 5, 50, 1000};
    const float ps[] = {1.0f, 0.3f, 0.9f, 0.99f};
    for (int r = 0; r < 200; r++) {
        for (int v = 0; v < BIG; v++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            row[v] = (float)((st >> 40) & 0xffff) / 4096.0f; /* 0..16, many ties */
        }
        lunar_sampling_params_t p;
        lunar_sampling_params_default(&p);
        p.temperature = r % 2 ? 0.7f : 1.3f;
        p.top_k = ks[r % 5];
        p.top_p = ps[(r / 5) % 4];
        p.min_p = r % 7 == 0 ? 0.05f : 0.0f;
        for (int pos = 0; pos < 5; pos++, cases++) {
            lunar_sample_input_t in = {.params = &p, .seed = (uint64_t)r, .num_output = pos};
            int got = lunar_sampler_sample(&s, row, &in);
            int want = ref_sample(row, BIG, &p, lunar_sampler_uniform((uint64_t)r, 0, pos));
            mismatches += got != want;
        }
    }
    CHECK_EQ_INT(mismatches, 0);
    printf("top-k/top-p against a full sort: %d draws, %d mismatches\n", cases, mismatches);
    lunar_sampler_destroy(&s);
}

/* Knuth's MMIX LCG, the high bits: the tests' reproducible random numbers. */
static uint32_t lcg(uint64_t *st)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*st >> 33);
}

/* Penalties in vLLM's formulas, written out directly: the repetition penalty once per distinct
 * id of prompt and output, then frequency x count + presence per distinct output id, and -inf
 * for the suppressed. Random rows, ids with many repeats, every combination of the three. */
static void test_penalties_against_formulas(void)
{
    enum { PV = 64 };
    lunar_sampler_t s;
    CHECK_EQ_INT(lunar_sampler_init(&s, PV), 0);
    uint64_t st = 7;
    const float reps[] = {1.0f, 1.3f, 0.8f}, freqs[] = {0.0f, 0.5f, -0.4f}, press[] = {0.0f, 0.7f, -0.3f};
    int mismatches = 0, cases = 0;
    for (int r = 0; r < 600; r++) {
        float row[PV], want_row[PV];
        int32_t prompt[20], output[30], sup[2];
        for (int v = 0; v < PV; v++) row[v] = (float)(lcg(&st) % 8001) / 1000.0f - 4.0f;
        int np = (int)(lcg(&st) % 21), no = (int)(lcg(&st) % 31), ns = (int)(lcg(&st) % 3);
        for (int i = 0; i < np; i++) prompt[i] = (int32_t)(lcg(&st) % 16);
        for (int i = 0; i < no; i++) output[i] = (int32_t)(lcg(&st) % 16);
        for (int i = 0; i < ns; i++) sup[i] = (int32_t)(lcg(&st) % 20);
        lunar_sampling_params_t p;
        params(&p, r % 2 ? 0.9f : 0.0f);
        p.repetition_penalty = reps[r % 3];
        p.frequency_penalty = freqs[(r / 3) % 3];
        p.presence_penalty = press[(r / 9) % 3];
        for (int v = 0; v < PV; v++) {
            int in_prompt = 0, count = 0, suppressed = 0;
            for (int i = 0; i < np; i++) in_prompt |= prompt[i] == v;
            for (int i = 0; i < no; i++) count += output[i] == v;
            for (int i = 0; i < ns; i++) suppressed |= sup[i] == v;
            float y = row[v];
            if ((in_prompt || count) && p.repetition_penalty != 1.0f)
                y = y > 0 ? y / p.repetition_penalty : y * p.repetition_penalty;
            if (count) {
                float f = p.frequency_penalty * (float)count;
                y -= f + p.presence_penalty;
            }
            want_row[v] = suppressed ? -INFINITY : y;
        }
        lunar_sample_input_t in = {.params = &p, .prompt = prompt, .num_prompt = np, .output = output,
                                   .num_output = no, .suppress = sup, .num_suppress = ns, .seed = (uint64_t)r};
        int got = lunar_sampler_sample(&s, row, &in), want = 0;
        if (p.temperature == 0.0f) {
            for (int v = 1; v < PV; v++)
                if (want_row[v] > want_row[want]) want = v;
        } else {
            want = ref_sample(want_row, PV, &p, lunar_sampler_uniform((uint64_t)r, 0, no));
        }
        mismatches += got != want;
        cases++;
    }
    CHECK_EQ_INT(mismatches, 0);
    printf("penalties against vLLM's formulas: %d rows, %d mismatches\n", cases, mismatches);
    lunar_sampler_destroy(&s);
}

/* (id, count) pairs sorted by id, for comparing penalty lists as sets */
static int by_pair(const void *a, const void *b)
{
    const int32_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

static void sorted_pairs(const int32_t *ids, const int32_t *counts, int n, int32_t *pairs)
{
    for (int k = 0; k < n; k++) pairs[2 * k] = ids[k], pairs[2 * k + 1] = counts[k];
    qsort(pairs, (size_t)n, 2 * sizeof *pairs, by_pair);
}

/* A sequence's cached penalty list, updated one sampled id at a time (as the engine does), must
 * hold the entries a full scan of prompt and output makes at every step: random prompts with
 * repeats and out-of-vocabulary ids, every penalty combination, suppressed ids listed or not. */
static void test_pen_cache(void)
{
    enum { PV = 40 };
    lunar_sampler_t s;
    CHECK_EQ_INT(lunar_sampler_init(&s, PV), 0);
    uint64_t st = 11;
    const float reps[] = {1.0f, 1.2f}, freqs[] = {0.0f, 0.4f}, press[] = {0.0f, -0.5f};
    int bad = 0, steps = 0;
    for (int r = 0; r < 300; r++) {
        int32_t prompt[40], output[25], sup[3], ids_a[PV + 3], cnt_a[PV + 3], ids_b[PV + 3], cnt_b[PV + 3];
        int32_t pa[2 * (PV + 3)], pb[2 * (PV + 3)];
        int np = (int)(lcg(&st) % 41), ns = (int)(lcg(&st) % 4);
        for (int i = 0; i < np; i++) prompt[i] = (int32_t)(lcg(&st) % 45) - 2; /* -2..42: some out of vocab */
        for (int i = 0; i < ns; i++) sup[i] = (int32_t)(lcg(&st) % 42);
        lunar_sampling_params_t p;
        params(&p, 1.0f);
        p.repetition_penalty = reps[r % 2];
        p.frequency_penalty = freqs[(r / 2) % 2];
        p.presence_penalty = press[(r / 4) % 2];
        lunar_pen_cache_t cache = {0};
        for (int no = 0; no <= 25; no++, steps++) {
            lunar_sample_input_t in = {.params = &p, .prompt = prompt, .num_prompt = np, .output = output,
                                       .num_output = no, .suppress = sup, .num_suppress = no % 3 ? ns : 0};
            int na = lunar_sampler_penalty_list(&s, &in, ids_a, cnt_a);
            in.pen = &cache;
            int nb = lunar_sampler_penalty_list(&s, &in, ids_b, cnt_b);
            sorted_pairs(ids_a, cnt_a, na, pa);
            sorted_pairs(ids_b, cnt_b, nb, pb);
            bad += na != nb || memcmp(pa, pb, 2 * sizeof *pa * (size_t)na) != 0;
            if (no < 25) output[no] = (int32_t)(lcg(&st) % 44) - 1;
        }
        lunar_pen_cache_free(&cache);
    }
    CHECK_EQ_INT(bad, 0);
    printf("cached penalty lists against full scans: %d steps, %d differ\n", steps, bad);
    lunar_sampler_destroy(&s);
}

int main(void)
{
    test_against_full_sort();
    test_penalties_against_formulas();
    test_pen_cache();
    lunar_sampler_t s;
    CHECK_EQ_INT(lunar_sampler_init(&s, V), 0);
    float row[V];
    /* probabilities 0.5, 0.3, 0.2 on ids 0..2; others impossible */
    for (int v = 0; v < V; v++) row[v] = -INFINITY;
    row[0] = logf(0.5f);
    row[1] = logf(0.3f);
    row[2] = logf(0.2f);
    lunar_sampling_params_t p;
    double f[V];

    params(&p, 0.0f);
    lunar_sample_input_t in = {.params = &p, .seed = 7};
    CHECK_EQ_INT(lunar_sampler_sample(&s, row, &in), 0); /* greedy = argmax */

    params(&p, 1.0f);
    frequencies(&s, row, &p, 40000, f);
    CHECK_NEAR(f[0], 0.5, 0.015);
    CHECK_NEAR(f[1], 0.3, 0.015);
    CHECK_NEAR(f[2], 0.2, 0.015);

    /* temperature 0.5 squares the odds: 0.25 : 0.09 : 0.04 */
    params(&p, 0.5f);
    frequencies(&s, row, &p, 40000, f);
    CHECK_NEAR(f[0], 0.25 / 0.38, 0.015);
    CHECK_NEAR(f[2], 0.04 / 0.38, 0.015);

    params(&p, 1.0f);
    p.top_k = 2; /* 0.5 : 0.3 renormalized */
    frequencies(&s, row, &p, 40000, f);
    CHECK_NEAR(f[0], 0.625, 0.015);
    CHECK_NEAR(f[2], 0.0, 1e-12);

    params(&p, 1.0f);
    p.top_p = 0.6f; /* 0.5 alone < 0.6, so 0 and 1 are kept */
    frequencies(&s, row, &p, 40000, f);
    CHECK_NEAR(f[1], 0.375, 0.015);
    CHECK_NEAR(f[2], 0.0, 1e-12);
    p.top_p = 0.5f; /* 0.5 reaches it: only 0 */
    frequencies(&s, row, &p, 2000, f);
    CHECK_NEAR(f[0], 1.0, 1e-12);

    params(&p, 1.0f);
    p.min_p = 0.5f; /* keeps p >= 0.25 */
    frequencies(&s, row, &p, 40000, f);
    CHECK_NEAR(f[0], 0.625, 0.015);
    CHECK_NEAR(f[2], 0.0, 1e-12);

    params(&p, 3.0f);
    p.top_k = 1; /* top_k 1 is greedy at any temperature */
    frequencies(&s, row, &p, 500, f);
    CHECK_NEAR(f[0], 1.0, 1e-12);

    /* penalties, greedy: logits 2.0 (id 3), 1.5 (id 4), -1 (id 5) */
    float r2[V];
    for (int v = 0; v < V; v++) r2[v] = -5;
    r2[3] = 2.0f;
    r2[4] = 1.5f;
    params(&p, 0.0f);
    int32_t prompt[] = {3};
    p.repetition_penalty = 1.5f; /* 2/1.5 = 1.33 < 1.5: id 4 wins */
    lunar_sample_input_t pin = {.params = &p, .prompt = prompt, .num_prompt = 1};
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &pin), 4);
    p.repetition_penalty = 1.2f; /* 2/1.2 = 1.67 > 1.5: id 3 */
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &pin), 3);
    params(&p, 0.0f);
    int32_t outs[] = {3, 3};
    p.frequency_penalty = 0.2f; /* 2 - 0.4 = 1.6 > 1.5 */
    lunar_sample_input_t oin = {.params = &p, .output = outs, .num_output = 2};
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &oin), 3);
    p.frequency_penalty = 0.3f; /* 2 - 0.6 = 1.4 < 1.5 */
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &oin), 4);
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.6f; /* once per token: 1.4 */
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &oin), 4);
    /* suppression (min_tokens) */
    params(&p, 0.0f);
    int32_t sup[] = {3};
    lunar_sample_input_t sin = {.params = &p, .suppress = sup, .num_suppress = 1};
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &sin), 4);
    /* the scratch arrays are clean after penalties (a second call is unaffected) */
    CHECK_EQ_INT(lunar_sampler_sample(&s, r2, &in), 3);

    /* seeded: same (seed, seq, position) same number; different seeds differ */
    CHECK(lunar_sampler_uniform(5, 0, 3) == lunar_sampler_uniform(5, 0, 3));
    CHECK(lunar_sampler_uniform(5, 0, 3) != lunar_sampler_uniform(6, 0, 3));
    CHECK(lunar_sampler_uniform(5, 0, 3) != lunar_sampler_uniform(5, 1, 3));
    double mean = 0;
    for (int i = 0; i < 10000; i++) mean += lunar_sampler_uniform(99, 0, i) / 10000;
    CHECK_NEAR(mean, 0.5, 0.01);

    /* logprobs: log_softmax against a direct double computation */
    float lp, tlp[3];
    int32_t tid[3];
    lunar_sampler_logprobs(r2, V, 4, 3, &lp, tid, tlp);
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((double)r2[v]);
    CHECK_NEAR(lp, 1.5 - log(z), 1e-5);
    CHECK_EQ_INT(tid[0], 3);
    CHECK_EQ_INT(tid[1], 4);
    CHECK_EQ_INT(tid[2], 0); /* ties (-5) break to the lowest id */
    CHECK_NEAR(tlp[0], 2.0 - log(z), 1e-5);

    /* validation names the field */
    lunar_sampling_params_default(&p);
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), 0);
    p.temperature = -1;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_STR(lunar_errmsg(), "temperature must be >= 0, got -1");
    lunar_sampling_params_default(&p);
    p.top_p = 0;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "top_p must be in (0, 1], got 0");
    lunar_sampling_params_default(&p);
    p.top_k = -2;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "top_k");
    lunar_sampling_params_default(&p);
    p.min_tokens = 20;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "min_tokens must be less than or equal to max_tokens=16, got 20");
    lunar_sampling_params_default(&p);
    const char *stops[] = {"ok", ""};
    p.stop = stops;
    p.num_stop = 2;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "stop cannot contain an empty string");
    lunar_sampling_params_default(&p);
    p.presence_penalty = 3;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "presence_penalty must be in [-2, 2], got 3");
    lunar_sampling_params_default(&p);
    p.n = 0;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "n must be at least 1, got 0");
    p.n = LUNAR_MAX_N; /* vLLM's VLLM_MAX_N_SEQUENCES default, 16384, is allowed; one more is not */
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_OK);
    p.n = LUNAR_MAX_N + 1;
    CHECK_EQ_INT(lunar_sampling_params_validate(&p), LUNAR_EINVAL);
    CHECK_CONTAINS(lunar_errmsg(), "n must be at most 16384, got 16385");

    lunar_sampler_destroy(&s);
    return CHECK_DONE();
}
