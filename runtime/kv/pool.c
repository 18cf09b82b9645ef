/*
 * kv/pool.c — the KV block pool of kv/kv.h: refcounts, LRU free list, prefix-cache map.
 *
 * Everything is arrays indexed by block id, sized once at init, so allocation, freeing and
 * lookups never touch malloc. The map is a chained table (bucket heads + a per-block `chain`
 * link): a block is in at most one bucket, so the links fit in one array and removal walks one
 * short chain. Tokens are stored beside the hash and compared on lookup: a 64-bit collision
 * can never hand a request somebody else's K/V.
 */
#include "kv/kv.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static void list_push_tail(lunar_kv_pool_t *p, int b)
{
    p->prev[b] = p->tail;
    p->next[b] = -1;
    if (p->tail >= 0) p->next[p->tail] = b;
    else p->head = b;
    p->tail = b;
    p->in_free[b] = 1;
    p->num_free++;
    if (p->hashed[b]) p->num_cached_free++;
}

static void list_remove(lunar_kv_pool_t *p, int b)
{
    if (p->prev[b] >= 0) p->next[p->prev[b]] = p->next[b];
    else p->head = p->next[b];
    if (p->next[b] >= 0) p->prev[p->next[b]] = p->prev[b];
    else p->tail = p->prev[b];
    p->prev[b] = p->next[b] = -1;
    p->in_free[b] = 0;
    p->num_free--;
    if (p->hashed[b]) p->num_cached_free--;
}

int lunar_kv_init(lunar_kv_pool_t *p, int num_blocks, int block_size)
{
    memset(p, 0, sizeof *p);
    if (num_blocks <= 0 || block_size <= 0)
        return lunar_error(LUNAR_EINVAL, "kv: num_blocks (%d) and block_size (%d) must be > 0",
                           num_blocks, block_size);
    p->num_blocks = num_blocks;
    p->block_size = block_size;
    size_t nb = (size_t)num_blocks;
    uint64_t nbuckets = 1;
    while (nbuckets < nb * 2) nbuckets <<= 1;
    p->bucket_mask = nbuckets - 1;
    p->ref = calloc(nb, sizeof *p->ref);
    p->prev = malloc(nb * sizeof *p->prev);
    p->next = malloc(nb * sizeof *p->next);
    p->in_free = calloc(nb, 1);
    p->hashed = calloc(nb, 1);
    p->hash = calloc(nb, sizeof *p->hash);
    p->parent = calloc(nb, sizeof *p->parent);
    p->tokens = malloc(nb * (size_t)block_size * sizeof *p->tokens);
    p->chain = malloc(nb * sizeof *p->chain);
    p->buckets = malloc(nbuckets * sizeof *p->buckets);
    if (!p->ref || !p->prev || !p->next || !p->in_free || !p->hashed || !p->hash || !p->parent ||
        !p->tokens || !p->chain || !p->buckets) {
        lunar_kv_destroy(p);
        return lunar_error(LUNAR_ENOMEM, "kv: no memory for %d blocks", num_blocks);
    }
    for (uint64_t i = 0; i < nbuckets; i++) p->buckets[i] = -1;
    p->head = p->tail = -1;
    for (int b = 0; b < num_blocks; b++) {
        p->chain[b] = -1;
        list_push_tail(p, b);
    }
    return LUNAR_OK;
}

void lunar_kv_destroy(lunar_kv_pool_t *p)
{
    free(p->ref);
    free(p->prev);
    free(p->next);
    free(p->in_free);
    free(p->hashed);
    free(p->hash);
    free(p->parent);
    free(p->tokens);
    free(p->chain);
    free(p->buckets);
    memset(p, 0, sizeof *p);
}

static void unhash(lunar_kv_pool_t *p, int b)
{
    int32_t *link = &p->buckets[p->hash[b] & p->bucket_mask];
    while (*link != b) link = &p->chain[*link];
    *link = p->chain[b];
    p->chain[b] = -1;
    p->hashed[b] = 0;
}

int lunar_kv_alloc(lunar_kv_pool_t *p)
{
    int b = p->head;
    if (b < 0) return -1;
    list_remove(p, b);
    if (p->hashed[b]) unhash(p, b);
    p->ref[b] = 1;
    return b;
}

void lunar_kv_ref(lunar_kv_pool_t *p, int b)
{
    if (p->ref[b] == 0) list_remove(p, b);
    p->ref[b]++;
}

int lunar_kv_unref(lunar_kv_pool_t *p, int b)
{
    if (b < 0 || b >= p->num_blocks || p->ref[b] <= 0)
        return lunar_error(LUNAR_ESTATE, "kv: block %d freed while not in use", b);
    if (--p->ref[b] == 0) list_push_tail(p, b);
    return LUNAR_OK;
}

/* FNV-1a over the parent hash and the ids, then a splitmix finalizer for good low bits. */
uint64_t lunar_kv_block_hash(uint64_t parent, const int32_t *tokens, int n)
{
    uint64_t h = 1469598103934665603ull ^ parent;
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)tokens[i];
        for (int k = 0; k < 4; k++) {
            h ^= (v >> (8 * k)) & 0xff;
            h *= 1099511628211ull;
        }
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

int lunar_kv_lookup(const lunar_kv_pool_t *p, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    size_t bs = (size_t)p->block_size;
    for (int b = p->buckets[hash & p->bucket_mask]; b >= 0; b = p->chain[b])
        if (p->hash[b] == hash && p->parent[b] == parent &&
            !memcmp(p->tokens + (size_t)b * bs, tokens, bs * sizeof *tokens))
            return b;
    return -1;
}

int lunar_kv_register(lunar_kv_pool_t *p, int b, uint64_t hash, uint64_t parent,
                      const int32_t *tokens)
{
    if (p->hashed[b] || lunar_kv_lookup(p, hash, parent, tokens) >= 0) return 1;
    size_t bs = (size_t)p->block_size;
    memcpy(p->tokens + (size_t)b * bs, tokens, bs * sizeof *tokens);
    p->hash[b] = hash;
    p->parent[b] = parent;
    p->hashed[b] = 1;
    int32_t *head = &p->buckets[hash & p->bucket_mask];
    p->chain[b] = *head;
    *head = b;
    if (p->in_free[b]) p->num_cached_free++;
    return 0;
}
