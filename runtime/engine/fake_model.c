/*
 * engine/fake_model.c — a deterministic stand-in for a model forward, for the engine's tests,
 * the server's tests and engine-only benchmarks (see lunar/engine.h).
 *
 * It behaves like a model in the one way the engine can get wrong: the logits of a token
 * depend on every earlier token of its sequence, read back from a KV "cache" (one int per slot)
 * through the block table. A wrong slot mapping, block table, prefix-cache hit or shared
 * block changes the output. The logits are a hash of (context, position, candidate id):
 * distinct enough that greedy decoding has one answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lunar/engine.h"

struct lunar_fake_model {
    int vocab, num_blocks, block_size, eos;
    uint64_t seed;
    int32_t *kv; /* [num_blocks * block_size] the token stored at each slot */
    uint64_t computed;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

int lunar_fake_model_create(int vocab_size, int num_blocks, int block_size, int eos_token_id,
                            uint64_t seed, lunar_fake_model_t **out)
{
    *out = NULL;
    if (vocab_size <= 0 || num_blocks <= 0 || block_size <= 0)
        return lunar_error(LUNAR_EINVAL, "fake model: vocab %d, blocks %d, block size %d", vocab_size,
                           num_blocks, block_size);
    lunar_fake_model_t *m = calloc(1, sizeof *m);
    if (!m) return lunar_error(LUNAR_ENOMEM, "fake model: no memory");
    m->kv = malloc((size_t)num_blocks * (size_t)block_size * sizeof *m->kv);
    if (!m->kv) {
        free(m);
        return lunar_error(LUNAR_ENOMEM, "fake model: no memory for %d blocks", num_blocks);
    }
    for (size_t i = 0; i < (size_t)num_blocks * (size_t)block_size; i++) m->kv[i] = -1;
    m->vocab = vocab_size;
    m->num_blocks = num_blocks;
    m->block_size = block_size;
    m->eos = eos_token_id;
    m->seed = seed;
    *out = m;
    return LUNAR_OK;
}

void lunar_fake_model_free(lunar_fake_model_t *m)
{
    if (!m) return;
    free(m->kv);
    free(m);
}

static int fake_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    lunar_fake_model_t *m = ctx;
    int64_t nslots = (int64_t)m->num_blocks * m->block_size;
    for (int t = 0; t < b->num_tokens; t++) {
        if (b->slot_mapping[t] < 0 || b->slot_mapping[t] >= nslots)
            return lunar_error(LUNAR_ERANGE, "fake model: slot %lld out of range", (long long)b->slot_mapping[t]);
        m->kv[b->slot_mapping[t]] = b->token_ids[t];
    }
    m->computed += (uint64_t)b->num_tokens;
    for (int i = 0; i < b->num_logits; i++) {
        int t = b->logits_indices[i], s = 0;
        while (b->query_start[s + 1] <= t) s++;
        int pos = b->positions[t];
        const int32_t *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
        uint64_t h = m->seed;
        for (int p = 0; p <= pos; p++) {
            int blk = bt[p / m->block_size];
            if (blk < 0 || blk >= m->num_blocks)
                return lunar_error(LUNAR_ERANGE, "fake model: position %d has no block", p);
            int32_t tok = m->kv[(int64_t)blk * m->block_size + p % m->block_size];
            if (tok < 0) return lunar_error(LUNAR_ESTATE, "fake model: position %d read before written", p);
            h = mix(h, (uint64_t)tok << 20 | (uint64_t)p);
        }
        float *row = logits + (size_t)i * m->vocab;
        for (int v = 0; v < m->vocab; v++)
            row[v] = (float)(mix(h, (uint64_t)v) >> 40) * (8.0f / 16777216.0f) - 4.0f;
        if (m->eos >= 0 && m->eos < m->vocab) row[m->eos] = -4.0f + (float)pos / 16.0f;
    }
    return LUNAR_OK;
}

void lunar_fake_model_iface(lunar_fake_model_t *m, lunar_forward_iface_t *out)
{
    out->ctx = m;
    out->vocab_size = m->vocab;
    out->forward = fake_forward;
    out->forward_sample = NULL;
}

uint64_t lunar_fake_model_tokens_computed(const lunar_fake_model_t *m) { return m->computed; }

static const char *fake_special[3] = {"<s>", "</s>", "<unk>"};

static int fake_decode(void *ctx, const int32_t *ids, int n, int skip, char *out, size_t cap)
{
    int bytes_mode = ctx != NULL;
    size_t len = 0;
    char piece[32];
    for (int i = 0; i < n; i++) {
        int k = ids[i], pl;
        if (k >= 0 && k < 3) {
            if (skip) continue;
            pl = (int)strlen(fake_special[k]);
            memcpy(piece, fake_special[k], (size_t)pl);
        } else if (bytes_mode && k < 256) {
            piece[0] = (char)k;
            pl = 1;
        } else {
            pl = snprintf(piece, sizeof piece, bytes_mode ? "<%d>" : "w%d ", k);
        }
        if (len + (size_t)pl < cap) memcpy(out + len, piece, (size_t)pl);
        len += (size_t)pl;
    }
    if (cap) out[len < cap ? len : cap - 1] = 0;
    return (int)len;
}

void lunar_fake_detok_iface(int bytes_mode, lunar_detok_iface_t *out)
{
    static int marker;
    out->ctx = bytes_mode ? &marker : NULL;
    out->decode = fake_decode;
}
