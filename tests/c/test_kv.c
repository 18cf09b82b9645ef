/* test_kv.c — the KV block pool: refcounts, the free list's LRU order (least recently freed
 * is reused first), cached blocks that survive freeing until their space is needed, hash
 * lookups that check the tokens, and double frees refused. */
#include "check.h"
#include "kv/kv.h"
#include "lunar.h"

int main(void)
{
    lunar_kv_pool_t p;
    CHECK_EQ_INT(lunar_kv_init(&p, 4, 2), 0);
    CHECK_EQ_INT(p.num_free, 4);
    int a = lunar_kv_alloc(&p), b = lunar_kv_alloc(&p), c = lunar_kv_alloc(&p);
    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(c, 2);
    CHECK_EQ_INT(lunar_kv_num_used(&p), 3);

    int32_t ta[2] = {5, 6}, tb[2] = {7, 8};
    uint64_t ha = lunar_kv_block_hash(0, ta, 2), hb = lunar_kv_block_hash(ha, tb, 2);
    CHECK(ha != hb);
    CHECK(lunar_kv_block_hash(1, ta, 2) != ha); /* the parent is part of the key */
    CHECK_EQ_INT(lunar_kv_register(&p, a, ha, 0, ta), 0);
    CHECK_EQ_INT(lunar_kv_register(&p, b, hb, ha, tb), 0);
    CHECK_EQ_INT(lunar_kv_register(&p, c, ha, 0, ta), 1); /* already cached elsewhere */
    CHECK_EQ_INT(lunar_kv_lookup(&p, ha, 0, ta), a);
    CHECK_EQ_INT(lunar_kv_lookup(&p, hb, ha, tb), b);
    CHECK_EQ_INT(lunar_kv_lookup(&p, hb, ha, ta), -1); /* same hash, other tokens: no hit */

    /* shared: two owners */
    lunar_kv_ref(&p, a);
    CHECK_EQ_INT(lunar_kv_unref(&p, a), 0);
    CHECK_EQ_INT(p.in_free[a], 0);
    /* free b then a (a request frees its tail first): free list 3, b, a */
    CHECK_EQ_INT(lunar_kv_unref(&p, b), 0);
    CHECK_EQ_INT(lunar_kv_unref(&p, a), 0);
    CHECK_EQ_INT(p.num_free, 3);
    CHECK_EQ_INT(p.num_cached_free, 2);
    CHECK_EQ_INT(lunar_kv_unref(&p, a), LUNAR_ESTATE); /* double free */
    CHECK_CONTAINS(lunar_errmsg(), "block 0 freed while not in use");
    /* a freed cached block is still found, and reviving it takes it off the free list */
    CHECK_EQ_INT(lunar_kv_lookup(&p, ha, 0, ta), a);
    lunar_kv_ref(&p, a);
    CHECK_EQ_INT(p.num_free, 2);
    CHECK_EQ_INT(p.num_cached_free, 1);
    CHECK_EQ_INT(lunar_kv_unref(&p, a), 0); /* free list: 3, b, a */
    /* allocation takes the least recently freed first: 3 (never used), then b (evicting it) */
    CHECK_EQ_INT(lunar_kv_alloc(&p), 3);
    CHECK_EQ_INT(lunar_kv_lookup(&p, hb, ha, tb), b);
    CHECK_EQ_INT(lunar_kv_alloc(&p), b);
    CHECK_EQ_INT(lunar_kv_lookup(&p, hb, ha, tb), -1);
    CHECK_EQ_INT(lunar_kv_lookup(&p, ha, 0, ta), a); /* a is still cached */
    CHECK_EQ_INT(p.num_cached_free, 1);
    CHECK_EQ_INT(lunar_kv_alloc(&p), a);
    CHECK_EQ_INT(lunar_kv_lookup(&p, ha, 0, ta), -1);
    CHECK_EQ_INT(lunar_kv_alloc(&p), -1); /* c is still held */
    CHECK_EQ_INT(p.num_free, 0);
    lunar_kv_destroy(&p);
    CHECK_EQ_INT(lunar_kv_init(&p, 0, 16), LUNAR_EINVAL);
    return CHECK_DONE();
}
