/*
 * test_runner.c — the CPU model forward on real models.
 *
 * References: greedy decoding from BOS must reproduce the samples published with the models
 * (llama2.c's doc/stories260K.md for stories260K, the model card check for TinyStories-656K,
 * both quoted in ../shared/models/<name>/PROVENANCE.md); a sequence's logits must be the same
 * bits whether it runs alone, batched with others, or with its prompt split into chunks; and
 * bad batches are refused with errors that name the token.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lunar.h"
#include "lunar/runner.h"
#include "lunar/tokenizer.h"

#define BS 16
#define NBLOCKS 96

static char path[512];
static const char *model_dir(const char *name)
{
    const char *shared = getenv("LUNAR_SHARED");
    snprintf(path, sizeof path, "%s/models/%s", shared ? shared : "../shared", name);
    return path;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* One sequence in blocks [first_block, ...): runs tokens [from, to) of ids as one step. */
typedef struct {
    int32_t ids[512];
    int n;
    int first_block;
} seq_t;

static int table_width = 32; /* block-table entries per sequence in run_steps' batches */

static int run_steps(lunar_runner_t *r, seq_t **seqs, const int *from, const int *to, int nseq, float *logits)
{
    int32_t tok[1024], pos[1024], qs[17], lens[16], bt[16 * 32], li[16];
    int64_t slot[1024];
    int T = 0;
    qs[0] = 0;
    for (int s = 0; s < nseq; s++) {
        for (int p = from[s]; p < to[s]; p++, T++) {
            tok[T] = seqs[s]->ids[p];
            pos[T] = p;
            slot[T] = (int64_t)(seqs[s]->first_block + p / BS) * BS + p % BS;
        }
        qs[s + 1] = T;
        lens[s] = to[s];
        for (int b = 0; b < table_width; b++) bt[s * table_width + b] = seqs[s]->first_block + b;
        li[s] = T - 1;
    }
    lunar_batch_t b = {T, nseq, tok, pos, slot, qs, lens, bt, table_width, li, nseq};
    return lunar_runner_forward(r, &b, logits);
}

static lunar_runner_t *make_runner(lunar_model_t *m)
{
    lunar_runner_options_t o;
    lunar_runner_options_default(&o);
    o.num_kv_blocks = NBLOCKS;
    o.block_size = BS;
    o.max_num_batched_tokens = 1024;
    o.max_num_seqs = 16;
    o.num_threads = 2;
    lunar_runner_t *r = NULL;
    int rc = lunar_runner_create(m, &o, &r);
    CHECK_MSG(rc == 0, "runner_create: %s", lunar_errmsg());
    return r;
}

/* Greedy from BOS for n tokens, one decode step at a time; returns the decoded text. */
static char *greedy_text(const char *name, int n)
{
    lunar_model_t *m = NULL;
    lunar_tokenizer_t *tok = NULL;
    int rc = lunar_model_load(model_dir(name), NULL, &m);
    CHECK_MSG(rc == 0, "load %s: %s", name, lunar_errmsg());
    rc = lunar_tokenizer_load(model_dir(name), &tok);
    CHECK_MSG(rc == 0, "tokenizer %s: %s", name, lunar_errmsg());
    if (!m || !tok) return NULL;
    lunar_runner_t *r = make_runner(m);
    int V = lunar_model_config(m)->vocab_size;
    float *logits = malloc(sizeof(float) * V * 16);
    static seq_t s;
    memset(&s, 0, sizeof s);
    s.ids[0] = lunar_tokenizer_bos_id(tok);
    s.n = 1;
    for (int i = 0; i < n; i++) {
        seq_t *ss = &s;
        int from = s.n - 1, to = s.n;
        CHECK_EQ_INT(run_steps(r, &ss, &from, &to, 1, logits), 0);
        s.ids[s.n++] = argmax(logits, V);
    }
    char *text = NULL;
    size_t len = 0;
    CHECK_EQ_INT(lunar_tokenizer_decode(tok, s.ids, (size_t)s.n, 1, &text, &len), 0);
    free(logits);
    lunar_runner_free(r);
    lunar_tokenizer_free(tok);
    lunar_model_free(m);
    return text;
}

static void test_published_samples(void)
{
    char *t = greedy_text("stories260K", 48);
    CHECK_CONTAINS(t, "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
                      "park. One day, she saw a big, red ball.");
    lunar_free(t);
    t = greedy_text("TinyStories-656K", 40);
    CHECK_CONTAINS(t, "Once upon a time, there was a little girl named Lily. She had a toy car that she loved "
                      "very much.");
    lunar_free(t);
}

/* Alone, batched and chunked: the same bits. */
/* stories260K, and three sequences of lens[k] made-up prompt ids (varied by salt) in blocks
 * k*8.. of the cache. NULL when the model does not load. */
static lunar_model_t *three_sequences(seq_t s[3], const int lens[3], int salt)
{
    lunar_model_t *m = NULL;
    CHECK_EQ_INT(lunar_model_load(model_dir("stories260K"), NULL, &m), 0);
    if (!m) return NULL;
    int V = lunar_model_config(m)->vocab_size;
    for (int k = 0; k < 3; k++) {
        s[k].n = lens[k];
        s[k].first_block = k * 8;
        for (int i = 0; i < lens[k]; i++) s[k].ids[i] = (int32_t)((i * 37 + k * 101 + 7 + salt) % (V - 3) + 3);
    }
    return m;
}

static void test_batch_invariance(void)
{
    static seq_t s[3];
    int lens[3] = {37, 5, 21};
    lunar_model_t *m = three_sequences(s, lens, 0);
    if (!m) return;
    int V = lunar_model_config(m)->vocab_size;
    float *alone = malloc(sizeof(float) * V * 3), *batched = malloc(sizeof(float) * V * 3),
          *chunked = malloc(sizeof(float) * V * 3);
    lunar_runner_t *r = make_runner(m);
    for (int k = 0; k < 3; k++) {
        seq_t *p = &s[k];
        int from = 0, to = lens[k];
        CHECK_EQ_INT(run_steps(r, &p, &from, &to, 1, alone + (size_t)k * V), 0);
    }
    lunar_runner_free(r);
    r = make_runner(m);
    seq_t *all[3] = {&s[0], &s[1], &s[2]};
    int from[3] = {0, 0, 0};
    CHECK_EQ_INT(run_steps(r, all, from, lens, 3, batched), 0);
    CHECK_MSG(memcmp(alone, batched, sizeof(float) * V * 3) == 0, "batched logits differ from alone");
    lunar_runner_free(r);
    /* chunked prefill: first part in one step, the rest (mixed with others' chunks) in the next */
    r = make_runner(m);
    int cut[3] = {13, 2, 20};
    CHECK_EQ_INT(run_steps(r, all, from, cut, 3, chunked), 0);
    CHECK_EQ_INT(run_steps(r, all, cut, lens, 3, chunked), 0);
    CHECK_MSG(memcmp(alone, chunked, sizeof(float) * V * 3) == 0, "chunked logits differ from alone");
    lunar_runner_free(r);
    free(alone), free(batched), free(chunked);
    lunar_model_free(m);
}

/* Decode steps given a CUDA graph's shape by the runner (LUNAR_CPU_GRAPH_MAX_TOKENS makes the
 * CPU backend claim graphs): the batch padded to its bucket with dummy sequences, the block
 * tables widened from 5 to 8. The real rows' logits must be the same bits as unpadded, step
 * after step: the padding writes no cache and reads nothing it could change. */
static void test_graph_padding(void)
{
    static seq_t s[3];
    int lens[3] = {37, 5, 21};
    lunar_model_t *m = three_sequences(s, lens, 1);
    if (!m) return;
    int V = lunar_model_config(m)->vocab_size;
    table_width = 5;
    lunar_runner_t *r = make_runner(m);
    setenv("LUNAR_CPU_GRAPH_MAX_TOKENS", "256", 1);
    lunar_runner_t *rp = make_runner(m);
    unsetenv("LUNAR_CPU_GRAPH_MAX_TOKENS");
    float *a = malloc(sizeof(float) * V * 3), *b = malloc(sizeof(float) * V * 3);
    seq_t *all[3] = {&s[0], &s[1], &s[2]};
    int from[3] = {0, 0, 0}, to[3];
    CHECK_EQ_INT(run_steps(r, all, from, lens, 3, a), 0);
    CHECK_EQ_INT(run_steps(rp, all, from, lens, 3, b), 0);
    int same = 1;
    for (int step = 0; step < 14 && same; step++) {
        /* three sequences (bucket 4), then only the middle one (bucket 1) every third step */
        int solo = step % 3 == 2, n = solo ? 1 : 3;
        seq_t **seqs = solo ? &all[1] : all;
        for (int k = 0; k < n; k++) from[k] = seqs[k]->n - 1, to[k] = seqs[k]->n;
        CHECK_EQ_INT(run_steps(r, seqs, from, to, n, a), 0);
        CHECK_EQ_INT(run_steps(rp, seqs, from, to, n, b), 0);
        same = memcmp(a, b, sizeof(float) * V * (size_t)n) == 0;
        CHECK_MSG(same, "step %d: padded logits differ from unpadded", step);
        for (int k = 0; k < n; k++) seqs[k]->ids[seqs[k]->n++] = argmax(a + (size_t)k * V, V);
    }
    CHECK_EQ_INT((int)lunar_runner_padding_tokens(r), 0);
    CHECK_EQ_INT((int)lunar_runner_padding_tokens(rp), 10); /* 10 steps of 3 tokens, one dummy each */
    table_width = 32;
    free(a), free(b);
    lunar_runner_free(r);
    lunar_runner_free(rp);
    lunar_model_free(m);
}

static void test_bad_batches(void)
{
    lunar_model_t *m = NULL;
    CHECK_EQ_INT(lunar_model_load(model_dir("stories260K"), NULL, &m), 0);
    if (!m) return;
    lunar_runner_t *r = make_runner(m);
    float logits[512];
    int32_t tok[2] = {1, 5000}, pos[2] = {0, 1}, qs[2] = {0, 2}, lens[1] = {2}, bt[2] = {0, -1}, li[1] = {1};
    int64_t slot[2] = {0, 1};
    lunar_batch_t b = {2, 1, tok, pos, slot, qs, lens, bt, 2, li, 1};
    CHECK_EQ_INT(lunar_runner_forward(r, &b, logits), LUNAR_ERANGE);
    CHECK_CONTAINS(lunar_errmsg(), "outside the vocabulary");
    tok[1] = 7;
    slot[1] = (int64_t)NBLOCKS * BS;
    CHECK_EQ_INT(lunar_runner_forward(r, &b, logits), LUNAR_ERANGE);
    CHECK_CONTAINS(lunar_errmsg(), "outside the cache");
    slot[1] = 1;
    bt[0] = NBLOCKS;
    CHECK_EQ_INT(lunar_runner_forward(r, &b, logits), LUNAR_ERANGE);
    CHECK_CONTAINS(lunar_errmsg(), "block 0 is");
    bt[0] = 0;
    CHECK_EQ_INT(lunar_runner_forward(r, &b, logits), 0);
    /* the CPU backend has no sample op: the engine gets no forward_sample and samples itself */
    lunar_forward_iface_t f;
    lunar_runner_forward_iface(r, &f);
    CHECK(f.forward != NULL && f.forward_sample == NULL);
    lunar_sample_row_t row = {.temperature = 0};
    int32_t out;
    lunar_sample_batch_t s = {.num_rows = 1, .rows = &row, .tokens = &out};
    CHECK_EQ_INT(lunar_runner_forward_sample(r, &b, &s), LUNAR_EUNSUPPORTED);
    CHECK_CONTAINS(lunar_errmsg(), "the cpu backend does not sample");
    lunar_runner_free(r);
    lunar_model_free(m);
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_WARN);
    test_published_samples();
    test_batch_invariance();
    test_graph_padding();
    test_bad_batches();
    return CHECK_DONE();
}
