/*
 * sched/sched.c — the scheduler of sched/sched.h: admission with prefix-cache reuse, the token
 * budget, preemption by recompute, and the flat lunar_batch_t of each step.
 *
 * All buffers are sized at init from the config (max_num_batched_tokens tokens, max_num_seqs
 * sequences, max_model_len / block_size blocks each); a step allocates nothing except when the
 * waiting queue outgrows its array.
 */
#include "sched/sched.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int lunar_sched_init(lunar_sched_t *s, const lunar_engine_config_t *cfg)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    int rc = lunar_kv_init(&s->pool, cfg->num_blocks, cfg->block_size);
    if (rc) return rc;
    s->max_blocks_per_seq = (cfg->max_model_len + cfg->block_size - 1) / cfg->block_size;
    size_t T = (size_t)cfg->max_num_batched_tokens, S = (size_t)cfg->max_num_seqs;
    size_t B = (size_t)s->max_blocks_per_seq;
    s->running = calloc(S, sizeof *s->running);
    s->sched = calloc(S, sizeof *s->sched);
    s->cap_waiting = 64;
    s->waiting = calloc((size_t)s->cap_waiting, sizeof *s->waiting);
    s->token_ids = malloc(T * sizeof *s->token_ids);
    s->positions = malloc(T * sizeof *s->positions);
    s->slots = malloc(T * sizeof *s->slots);
    s->query_start = malloc((S + 1) * sizeof *s->query_start);
    s->seq_lens = malloc(S * sizeof *s->seq_lens);
    s->block_tables = malloc(S * B * sizeof *s->block_tables);
    s->logits_indices = malloc(T * sizeof *s->logits_indices);
    s->row_seq = malloc(T * sizeof *s->row_seq);
    s->row_pos = malloc(T * sizeof *s->row_pos);
    s->hit_blocks = malloc(B * sizeof *s->hit_blocks);
    if (!s->running || !s->sched || !s->waiting || !s->token_ids || !s->positions || !s->slots ||
        !s->query_start || !s->seq_lens || !s->block_tables || !s->logits_indices ||
        !s->row_seq || !s->row_pos || !s->hit_blocks) {
        lunar_sched_destroy(s);
        return lunar_error(LUNAR_ENOMEM, "sched: no memory for %zu tokens x %zu seqs", T, S);
    }
    return LUNAR_OK;
}

void lunar_sched_destroy(lunar_sched_t *s)
{
    lunar_kv_destroy(&s->pool);
    free(s->running);
    free(s->sched);
    free(s->waiting);
    free(s->token_ids);
    free(s->positions);
    free(s->slots);
    free(s->query_start);
    free(s->seq_lens);
    free(s->block_tables);
    free(s->logits_indices);
    free(s->row_seq);
    free(s->row_pos);
    free(s->hit_blocks);
    memset(s, 0, sizeof *s);
}

/* Policy order: priority (PRIORITY policy only), then arrival, then sequence index. */
static int before(const lunar_sched_t *s, const lunar_seq_t *a, const lunar_seq_t *b)
{
    if (s->cfg.policy == LUNAR_SCHED_PRIORITY && a->req->priority != b->req->priority)
        return a->req->priority < b->req->priority;
    if (a->req->arrival_seq != b->req->arrival_seq) return a->req->arrival_seq < b->req->arrival_seq;
    return a->seq_index < b->seq_index;
}

static int waiting_insert(lunar_sched_t *s, lunar_seq_t *q, int at)
{
    if (s->num_waiting == s->cap_waiting) {
        int cap = s->cap_waiting * 2;
        lunar_seq_t **w = realloc(s->waiting, (size_t)cap * sizeof *w);
        if (!w) return lunar_error(LUNAR_ENOMEM, "sched: waiting queue of %d", cap);
        s->waiting = w;
        s->cap_waiting = cap;
    }
    memmove(s->waiting + at + 1, s->waiting + at, (size_t)(s->num_waiting - at) * sizeof *s->waiting);
    s->waiting[at] = q;
    s->num_waiting++;
    q->state = LUNAR_SEQ_WAITING;
    return LUNAR_OK;
}

/* New sequences join at the end (FCFS) or at their policy position; preempted ones at the
 * front (FCFS: they are older than everything waiting) or their policy position. */
static int waiting_place(lunar_sched_t *s, lunar_seq_t *q, int preempted)
{
    int at = s->num_waiting;
    if (s->cfg.policy == LUNAR_SCHED_PRIORITY) {
        at = 0;
        while (at < s->num_waiting && before(s, s->waiting[at], q)) at++;
    } else if (preempted) {
        at = 0;
    }
    return waiting_insert(s, q, at);
}

int lunar_sched_add(lunar_sched_t *s, lunar_seq_t *q)
{
    q->num_computed = 0;
    return waiting_place(s, q, 0);
}

static void remove_at(lunar_seq_t **list, int *n, int i)
{
    memmove(list + i, list + i + 1, (size_t)(*n - i - 1) * sizeof *list);
    (*n)--;
}

static int free_blocks(lunar_sched_t *s, lunar_seq_t *q)
{
    int rc = LUNAR_OK;
    for (int i = q->num_blocks - 1; i >= 0; i--) {
        int r = lunar_kv_unref(&s->pool, q->blocks[i]);
        if (r) rc = r;
    }
    q->num_blocks = 0;
    q->num_registered = 0;
    q->num_computed = 0;
    return rc;
}

int lunar_sched_finish(lunar_sched_t *s, lunar_seq_t *q)
{
    for (int i = 0; i < s->num_running; i++)
        if (s->running[i] == q) remove_at(s->running, &s->num_running, i);
    for (int i = 0; i < s->num_waiting; i++)
        if (s->waiting[i] == q) remove_at(s->waiting, &s->num_waiting, i);
    q->state = LUNAR_SEQ_FINISHED;
    return free_blocks(s, q);
}

/* The hash of full block i of q (memoized: tokens of a full block never change). */
static uint64_t block_hash(lunar_sched_t *s, lunar_seq_t *q, int i)
{
    int bs = s->cfg.block_size;
    while (q->num_hashes <= i) {
        int k = q->num_hashes;
        uint64_t parent = k ? q->hashes[k - 1] : 0;
        q->hashes[k] = lunar_kv_block_hash(parent, q->tokens + (size_t)k * bs, bs);
        q->num_hashes++;
    }
    return q->hashes[i];
}

/* Grows q's blocks to hold `tokens` tokens; 0 when the pool has too few free blocks. */
static int grow(lunar_sched_t *s, lunar_seq_t *q, int tokens)
{
    int need = lunar_sched_blocks_for(s, tokens) - q->num_blocks;
    if (need <= 0) return 1;
    if (need > s->pool.num_free) return 0;
    for (int i = 0; i < need; i++) q->blocks[q->num_blocks++] = lunar_kv_alloc(&s->pool);
    return 1;
}

static void preempt(lunar_sched_t *s, int running_index)
{
    lunar_seq_t *q = s->running[running_index];
    remove_at(s->running, &s->num_running, running_index);
    free_blocks(s, q);
    q->preempted = 1;
    s->num_preemptions++;
    waiting_place(s, q, 1);
}

/* The running sequence to preempt: the newest (FCFS), or the lowest priority, newest among
 * equals (PRIORITY) — which may be one already scheduled this step. */
static int victim(const lunar_sched_t *s)
{
    int v = s->num_running - 1;
    if (s->cfg.policy == LUNAR_SCHED_PRIORITY)
        for (int i = 0; i < s->num_running; i++)
            if (before(s, s->running[v], s->running[i])) v = i;
    return v;
}

/* Takes q out of this step's batch; returns the tokens it had been given. */
static int unschedule(lunar_sched_t *s, const lunar_seq_t *q)
{
    for (int k = 0; k < s->num_sched; k++)
        if (s->sched[k] == q) {
            remove_at(s->sched, &s->num_sched, k);
            return q->step_new;
        }
    return 0;
}

/* The sequence's first admission computes the whole prompt when its prompt logprobs are
 * wanted; otherwise every cached full block is reused. At least one token is always left to
 * compute, since its logits are needed. */
static int find_hits(lunar_sched_t *s, lunar_seq_t *q)
{
    int bs = s->cfg.block_size, max_full = (q->num_tokens - 1) / bs, n = 0;
    if (q->plp && q->plp_next < q->req->num_prompt) return 0;
    if (s->cfg.enable_prefix_caching) {
        for (; n < max_full; n++) {
            uint64_t parent = n ? block_hash(s, q, n - 1) : 0;
            int b = lunar_kv_lookup(&s->pool, block_hash(s, q, n), parent, q->tokens + (size_t)n * bs);
            if (b < 0) break;
            s->hit_blocks[n] = b;
        }
        return n;
    }
    /* n > 1 without the prefix cache: share the prompt's full blocks of sequence 0 */
    lunar_seq_t *donor = &q->req->seqs[0];
    if (q == donor || donor->state != LUNAR_SEQ_RUNNING || q->admitted) return 0;
    int shared = (q->req->num_prompt - 1) / bs;
    if (shared > max_full) shared = max_full;
    if (donor->num_computed < shared * bs) return 0;
    for (; n < shared; n++) s->hit_blocks[n] = donor->blocks[n];
    return n;
}

/* Sibling sequences of an n > 1 request wait while sequence 0 computes the shared prompt,
 * then reuse its blocks instead of computing the same prompt n times. */
static int waits_for_sibling(const lunar_seq_t *q)
{
    const lunar_seq_t *donor = &q->req->seqs[0];
    return q != donor && !q->admitted && donor->state == LUNAR_SEQ_RUNNING &&
           donor->num_computed < q->req->num_prompt;
}

static int admit(lunar_sched_t *s, int waiting_index, int budget)
{
    lunar_seq_t *q = s->waiting[waiting_index];
    int bs = s->cfg.block_size;
    int hits = find_hits(s, q);
    int computed = hits * bs;
    int new_tokens = q->num_tokens - computed;
    if (new_tokens > budget) {
        if (!s->cfg.enable_chunked_prefill) return 0;
        new_tokens = budget;
    }
    int revived = 0; /* hit blocks now free: taking them shrinks the free list */
    for (int i = 0; i < hits; i++) revived += s->pool.ref[s->hit_blocks[i]] == 0;
    int need = lunar_sched_blocks_for(s, computed + new_tokens) - hits;
    if (need > s->pool.num_free - revived) return 0;
    for (int i = 0; i < hits; i++) {
        lunar_kv_ref(&s->pool, s->hit_blocks[i]);
        q->blocks[i] = s->hit_blocks[i];
    }
    q->num_blocks = hits;
    q->num_registered = s->cfg.enable_prefix_caching ? hits : 0;
    q->num_computed = computed;
    grow(s, q, computed + new_tokens);
    if (!q->admitted) {
        q->admitted = 1;
        q->num_cached_tokens = computed < q->req->num_prompt ? computed : q->req->num_prompt;
        s->prefix_queries += (uint64_t)q->req->num_prompt;
        s->prefix_hits += (uint64_t)q->num_cached_tokens;
    }
    q->preempted = 0;
    q->state = LUNAR_SEQ_RUNNING;
    q->step_new = new_tokens;
    remove_at(s->waiting, &s->num_waiting, waiting_index);
    s->running[s->num_running++] = q;
    s->sched[s->num_sched++] = q;
    return new_tokens;
}

/* The step's block tables are as wide as its longest context needs, not --max-model-len:
 * every consumer indexes them by the batch's max_blocks_per_seq, the CUDA backend plans its
 * attention splits from that width (a table 8,192 tokens wide made a 600-token decode one
 * partition per kv head), and the tables are copied to the device every step. The runner
 * rounds the width up for CUDA graphs' sake itself (pad_decode). */
static void build_batch(lunar_sched_t *s)
{
    int bs = s->cfg.block_size, B = 1, t = 0, rows = 0;
    for (int k = 0; k < s->num_sched; k++)
        if (s->sched[k]->num_blocks > B) B = s->sched[k]->num_blocks;
    s->query_start[0] = 0;
    for (int k = 0; k < s->num_sched; k++) {
        lunar_seq_t *q = s->sched[k];
        int c = q->num_computed, m = q->step_new;
        int want_plp = q->plp && q->plp_next < q->req->num_prompt;
        for (int j = 0; j < m; j++, t++) {
            int pos = c + j;
            s->token_ids[t] = q->tokens[pos];
            s->positions[t] = pos;
            s->slots[t] = (int64_t)q->blocks[pos / bs] * bs + pos % bs;
            /* row for prompt token pos + 1's logprob */
            if (want_plp && pos + 1 >= q->plp_next && pos + 1 < q->req->num_prompt) {
                s->logits_indices[rows] = t;
                s->row_seq[rows] = k;
                s->row_pos[rows++] = pos;
            }
        }
        if (c + m == q->num_tokens) { /* reaches the end: sample */
            s->logits_indices[rows] = t - 1;
            s->row_seq[rows] = k;
            s->row_pos[rows++] = c + m - 1;
        }
        s->query_start[k + 1] = t;
        s->seq_lens[k] = c + m;
        int32_t *bt = s->block_tables + (size_t)k * B;
        memcpy(bt, q->blocks, (size_t)q->num_blocks * sizeof *bt);
        for (int i = q->num_blocks; i < B; i++) bt[i] = -1;
    }
    lunar_batch_t *b = &s->batch;
    b->num_tokens = t;
    b->num_seqs = s->num_sched;
    b->token_ids = s->token_ids;
    b->positions = s->positions;
    b->slot_mapping = s->slots;
    b->query_start = s->query_start;
    b->seq_lens = s->seq_lens;
    b->block_tables = s->block_tables;
    b->max_blocks_per_seq = B;
    b->logits_indices = s->logits_indices;
    b->num_logits = rows;
}

int lunar_sched_schedule(lunar_sched_t *s)
{
    int budget = s->cfg.max_num_batched_tokens, preempted = 0;
    s->num_sched = 0;
    for (int i = 0; i < s->num_running && budget > 0; i++) {
        lunar_seq_t *q = s->running[i];
        int new_tokens = q->num_tokens - q->num_computed;
        if (new_tokens > budget) {
            if (!s->cfg.enable_chunked_prefill) continue;
            new_tokens = budget;
        }
        int fits = 1;
        while (!grow(s, q, q->num_computed + new_tokens)) {
            int v = victim(s);
            lunar_seq_t *vq = s->running[v];
            budget += unschedule(s, vq);
            preempt(s, v);
            preempted = 1;
            if (vq == q) {
                fits = 0;
                break;
            }
            if (v < i) i--; /* running[] shifted left under q */
        }
        if (!fits) { /* q itself went back to waiting; running[i] is now the next one */
            i--;
            continue;
        }
        q->step_new = new_tokens;
        s->sched[s->num_sched++] = q;
        budget -= new_tokens;
    }
    if (!preempted) {
        int w = 0;
        while (w < s->num_waiting && s->num_running < s->cfg.max_num_seqs && budget > 0) {
            if (waits_for_sibling(s->waiting[w])) {
                w++;
                continue;
            }
            int got = admit(s, w, budget);
            if (!got) break;
            budget -= got;
        }
    }
    build_batch(s);
    return s->batch.num_tokens;
}

void lunar_sched_computed(lunar_sched_t *s)
{
    int bs = s->cfg.block_size;
    for (int k = 0; k < s->num_sched; k++) {
        lunar_seq_t *q = s->sched[k];
        q->num_computed += q->step_new;
        if (!s->cfg.enable_prefix_caching) continue;
        int full = q->num_computed / bs;
        for (int i = q->num_registered; i < full; i++) {
            uint64_t parent = i ? block_hash(s, q, i - 1) : 0;
            lunar_kv_register(&s->pool, q->blocks[i], block_hash(s, q, i), parent,
                              q->tokens + (size_t)i * bs);
        }
        if (full > q->num_registered) q->num_registered = full;
    }
}
