/*
 * runner_ref.h — driving the runner against the transformers fixtures of tests/fixtures/runner/,
 * shared by the CPU reference test (tests/c/test_runner_reference.c) and the CUDA backend's
 * (tests/gpu/test_backend_cuda.c), so both backends are held to the same checks: one sequence
 * stepped through an identity block table of small blocks, and greedy decoding compared token
 * for token with model.generate. Header-only; include after check.h.
 */
#ifndef LUNAR_TEST_RUNNER_REF_H
#define LUNAR_TEST_RUNNER_REF_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "fixture.h"
#include "lunar.h"
#include "lunar/runner.h"

#define BS 4 /* small blocks: a 20-token prompt spans several, so paging is exercised */
#define NBLOCKS 64
#define MAXT 512

static const char *fixture(const char *rel) { return fixture_path("runner", rel); }

/* A runner on `backend` (NULL: the default, the CPU) with NBLOCKS blocks of BS tokens. */
static lunar_runner_t *make_runner(lunar_model_t *m, const char *backend)
{
    lunar_runner_options_t o;
    lunar_runner_options_default(&o);
    if (backend) o.backend = backend;
    o.num_kv_blocks = NBLOCKS;
    o.block_size = BS;
    o.max_num_batched_tokens = MAXT;
    o.max_num_seqs = 4;
    o.num_threads = 2;
    lunar_runner_t *r = NULL;
    int rc = lunar_runner_create(m, &o, &r);
    CHECK_MSG(rc == 0, "runner_create(%s): %s", backend ? backend : "default", lunar_errmsg());
    return r;
}

/* Runs ids[from, to) of one sequence (blocks 0..) as one step; logits of rows [from, to)
 * go to logits[(p - from) * V] when all_rows, else only the last row to logits[0]. */
static int step(lunar_runner_t *r, const int32_t *ids, int from, int to, int all_rows, float *logits)
{
    static int32_t pos[MAXT], bt[NBLOCKS], li[MAXT], qs[2], lens[1];
    static int64_t slot[MAXT];
    int T = to - from;
    for (int i = 0; i < T; i++) {
        pos[i] = from + i;
        slot[i] = from + i; /* block b = slot / BS: blocks are the identity table */
        li[i] = i;
    }
    for (int b = 0; b < NBLOCKS; b++) bt[b] = b;
    qs[0] = 0, qs[1] = T, lens[0] = to;
    if (!all_rows) li[0] = T - 1;
    lunar_batch_t b = {T, 1, ids + from, pos, slot, qs, lens, bt, NBLOCKS, li, all_rows ? T : 1};
    return lunar_runner_forward(r, &b, logits);
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* The model in `dir` as `dtype` (NULL: the checkpoint's), or NULL after a failed check. */
static lunar_model_t *load(const char *dir, const char *dtype)
{
    lunar_load_options_t o = {dtype, NULL, 0, 0, 0};
    lunar_model_t *m = NULL;
    int rc = lunar_model_load(dir, &o, &m);
    CHECK_MSG(rc == 0, "load %s as %s: %s", dir, dtype ? dtype : "auto", lunar_errmsg());
    return m;
}

/* One of ../shared/models ($LUNAR_SHARED). */
static lunar_model_t *shared_model(const char *name, const char *dtype)
{
    const char *shared = getenv("LUNAR_SHARED");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/%s", shared ? shared : "../shared", name);
    return load(dir, dtype);
}

/* Greedy ids of a shared model on `backend` equal model.generate's (greedy/<name>.json: 4
 * prompts x 64 tokens), token for token. A flip is excused only where transformers' own top-2
 * margin is under 1e-4 (a tie at f32 rounding); none is. */
static void check_greedy(const char *name, const char *backend, const char *dtype)
{
    char rel[256];
    snprintf(rel, sizeof rel, "greedy/%s.json", name);
    cJSON *ref = read_json(fixture(rel));
    if (!ref) return;
    lunar_model_t *m = shared_model(name, dtype);
    if (!m) { cJSON_Delete(ref); return; }
    int V = lunar_model_config(m)->vocab_size;
    float *logits = malloc(sizeof(float) * V);
    const cJSON *cs;
    int ncase = 0;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItem(ref, "cases")) {
        static int32_t ids[MAXT], want[MAXT];
        static double margin[MAXT];
        int n = int_array(cJSON_GetObjectItem(cs, "prompt_ids"), ids, MAXT);
        int nw = int_array(cJSON_GetObjectItem(cs, "new_ids"), want, MAXT);
        int k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(cs, "margins")) if (k < MAXT) margin[k++] = e->valuedouble;
        lunar_runner_t *r = make_runner(m, backend);
        if (!r) break;
        CHECK_EQ_INT(step(r, ids, 0, n, 0, logits), 0);
        int same = 0;
        for (int i = 0; i < nw; i++) {
            int got = argmax(logits, V);
            if (got != want[i]) {
                CHECK_MSG(margin[i] < 1e-4, "%s prompt %d: token %d is %d, transformers %d (its margin %.3g)", name,
                          ncase, i, got, want[i], margin[i]);
                break;
            }
            same++;
            ids[n] = got;
            CHECK_EQ_INT(step(r, ids, n, n + 1, 0, logits), 0);
            n++;
        }
        printf("%-24s %s greedy prompt %d: %d/%d tokens equal to model.generate\n", name, backend ? backend : "cpu",
               ncase, same, nw);
        lunar_runner_free(r);
        ncase++;
    }
    CHECK_EQ_INT(ncase, 4);
    free(logits);
    lunar_model_free(m);
    cJSON_Delete(ref);
}

#endif
