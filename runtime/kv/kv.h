/*
 * kv/kv.h — the paged KV block pool: refcounted fixed-size blocks, a free list kept in LRU
 * order, and the prefix-cache map from block hash to block.
 *
 * The pool only does bookkeeping; the K/V memory lives in the backend, addressed by block id.
 * A block with refcount 0 sits in the free list; if it still carries a hash it keeps its
 * contents and can be revived by a prefix hit until allocation reaches it (then its hash is
 * evicted). Freed blocks join the tail, allocation takes the head: least recently freed first.
 * Sharing (prefix hits, n > 1) is refcounting; a full block is never written again, so shared
 * blocks need no copy; a partially filled block is never shared.
 */
#ifndef LUNAR_KV_KV_H
#define LUNAR_KV_KV_H

#include <stdint.h>

typedef struct lunar_kv_pool {
    int num_blocks, block_size;
    int32_t *ref;            /* [num_blocks] refcount */
    int32_t *prev, *next;    /* free-list links, -1 at the ends */
    uint8_t *in_free;        /* [num_blocks] 1 when in the free list */
    int head, tail, num_free;
    int num_cached_free;     /* free blocks still carrying a hash */
    /* prefix cache: chained hash table over blocks */
    uint8_t *hashed;         /* [num_blocks] */
    uint64_t *hash, *parent; /* [num_blocks] the block's hash and its parent's */
    int32_t *tokens;         /* [num_blocks * block_size] the ids the hash covers */
    int32_t *chain;          /* [num_blocks] next block in the same bucket */
    int32_t *buckets;        /* [num_buckets] */
    uint64_t bucket_mask;
} lunar_kv_pool_t;

int lunar_kv_init(lunar_kv_pool_t *p, int num_blocks, int block_size);
void lunar_kv_destroy(lunar_kv_pool_t *p);

/* Takes the least recently freed block (evicting its hash), refcount 1; -1 when none. */
int lunar_kv_alloc(lunar_kv_pool_t *p);
/* One more owner: a free block leaves the free list (a prefix-cache revival). */
void lunar_kv_ref(lunar_kv_pool_t *p, int block);
/* One owner fewer; at 0 the block joins the free-list tail, keeping its hash. Returns 0, or
 * LUNAR_ESTATE on a double free. */
int lunar_kv_unref(lunar_kv_pool_t *p, int block);

/* The hash of a full block: its parent's hash (0 for the first) and its token ids. */
uint64_t lunar_kv_block_hash(uint64_t parent, const int32_t *tokens, int n);
/* The cached block with this hash, parent and tokens, or -1. */
int lunar_kv_lookup(const lunar_kv_pool_t *p, uint64_t hash, uint64_t parent, const int32_t *tokens);
/* Makes a just-filled block findable. Returns 0, or 1 when an equal block is already cached
 * (the block stays unhashed and is simply freed later). */
int lunar_kv_register(lunar_kv_pool_t *p, int block, uint64_t hash, uint64_t parent,
                      const int32_t *tokens);
/* Blocks in use (refcount > 0). */
static inline int lunar_kv_num_used(const lunar_kv_pool_t *p) { return p->num_blocks - p->num_free; }

#endif
