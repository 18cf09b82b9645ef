/* test_engine_model.c — the engine over the real CPU runner and a real model (stories260K,
 * f32): with a KV pool so small that requests preempt each other, chunked prefill and shared
 * prefixes, every request's tokens (greedy and seeded) equal those it gets alone on a big pool
 * with nothing shared; and a request sharing a prefix with an earlier one runs only its
 * suffix through the forward (the runner's own token count). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lunar.h"
#include "lunar/runner.h"

enum { NREQ = 12, MAXOUT = 64 };

typedef struct {
    int32_t prompt[80];
    int np;
    lunar_sampling_params_t p;
    int32_t out[MAXOUT];
    int n, finish, cached;
} req_t;

static lunar_runner_t *runner(lunar_model_t *m, int blocks, lunar_forward_iface_t *f)
{
    lunar_runner_options_t o;
    lunar_runner_options_default(&o);
    o.num_kv_blocks = blocks;
    o.block_size = 16;
    o.max_num_batched_tokens = 256;
    o.max_num_seqs = 16;
    o.num_threads = 2;
    lunar_runner_t *r = NULL;
    CHECK_EQ_INT(lunar_runner_create(m, &o, &r), 0);
    lunar_runner_forward_iface(r, f);
    return r;
}

static lunar_engine_t *engine(lunar_forward_iface_t *f, int blocks, int budget, int prefix)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = blocks;
    c.max_model_len = 256;
    c.max_num_seqs = 8;
    c.max_num_batched_tokens = budget;
    c.enable_prefix_caching = prefix;
    c.stats_interval_s = 0;
    c.eos_token_ids[0] = 2;
    c.num_eos_token_ids = 1;
    lunar_engine_t *e = NULL;
    CHECK_EQ_INT(lunar_engine_create(&c, f, NULL, &e), 0);
    return e;
}

static void drain_all(lunar_engine_t *e)
{
    while (lunar_engine_num_unfinished(e)) {
        CHECK(lunar_engine_step(e) >= 0);
        const lunar_event_t *ev;
        int n = lunar_engine_poll(e, &ev);
        for (int i = 0; i < n; i++) {
            req_t *r = ev[i].user_data;
            for (int k = 0; k < ev[i].num_tokens && r->n < MAXOUT; k++) r->out[r->n++] = ev[i].token_ids[k];
            r->cached = ev[i].num_cached_tokens;
            if (ev[i].finish_reason) r->finish = ev[i].finish_reason;
        }
    }
}

static void submit(lunar_engine_t *e, req_t *r)
{
    lunar_request_t rq = {r->prompt, r->np, &r->p, 0, r};
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, NULL), 0);
}

int main(void)
{
    const char *shared = getenv("LUNAR_SHARED");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/stories260K", shared ? shared : "../shared");
    lunar_model_t *m;
    if (lunar_model_load(dir, NULL, &m)) {
        printf("skipped: %s\n", lunar_errmsg());
        return CHECK_DONE();
    }
    lunar_log_set_level(LUNAR_LOG_WARN);
    static req_t reqs[NREQ], alone[NREQ];
    uint32_t st = 7;
    int32_t prefix[48];
    for (int i = 0; i < 48; i++) prefix[i] = 3 + (int)((st = st * 1103515245u + 12345u) >> 16) % 500;
    for (int i = 0; i < NREQ; i++) {
        req_t *r = &reqs[i];
        r->np = 10 + (int)((st = st * 1103515245u + 12345u) >> 16) % 60;
        for (int k = 0; k < r->np; k++)
            r->prompt[k] = i % 2 && k < 48 ? prefix[k] : 3 + (int)((st = st * 1103515245u + 12345u) >> 16) % 500;
        r->prompt[0] = 1; /* BOS */
        lunar_sampling_params_default(&r->p);
        r->p.max_tokens = 30 + i * 2;
        if (i % 3 == 2) {
            r->p.temperature = 0.8f;
            r->p.has_seed = 1;
            r->p.seed = (uint64_t)i;
        } else {
            r->p.temperature = 0;
        }
        alone[i] = *r;
    }

    /* alone: a big pool, no prefix cache, one request at a time */
    lunar_forward_iface_t fa;
    lunar_runner_t *ra = runner(m, 64, &fa);
    for (int i = 0; i < NREQ; i++) {
        lunar_engine_t *e = engine(&fa, 64, 256, 0);
        submit(e, &alone[i]);
        drain_all(e);
        lunar_engine_free(e);
    }
    lunar_runner_free(ra);

    /* together: 14 blocks (224 slots) for 12 requests of up to 130 tokens: preemption */
    lunar_forward_iface_t fb;
    lunar_runner_t *rb = runner(m, 14, &fb);
    lunar_engine_t *e = engine(&fb, 14, 24, 1);
    for (int i = 0; i < NREQ; i++) submit(e, &reqs[i]);
    drain_all(e);
    lunar_engine_stats_t stats;
    lunar_engine_get_stats(e, &stats);
    int same = 0;
    for (int i = 0; i < NREQ; i++) {
        int ok = reqs[i].n == alone[i].n && !memcmp(reqs[i].out, alone[i].out, (size_t)reqs[i].n * sizeof(int32_t)) &&
                 reqs[i].finish == alone[i].finish;
        CHECK_MSG(ok, "request %d: %d tokens together, %d alone", i, reqs[i].n, alone[i].n);
        same += ok;
    }
    printf("stories260K: %d/%d requests identical to alone; %llu preemptions, %llu prefix-hit tokens\n", same,
           NREQ, (unsigned long long)stats.num_preemptions_total, (unsigned long long)stats.prefix_cache_hits);
    CHECK(stats.num_preemptions_total > 0);
    CHECK(stats.prefix_cache_hits > 0);
    lunar_engine_free(e);
    lunar_runner_free(rb);

    /* prefix caching: a second request sharing 48 tokens (3 blocks) computes only the rest */
    lunar_forward_iface_t fc;
    lunar_runner_t *rc = runner(m, 64, &fc);
    e = engine(&fc, 64, 256, 1);
    static req_t a, b;
    a = reqs[1];
    b = reqs[1];
    a.n = b.n = 0;
    a.np = b.np = 70;
    for (int k = 0; k < 70; k++) {
        a.prompt[k] = k < 48 ? prefix[k] : 3 + k;
        b.prompt[k] = k < 48 ? prefix[k] : 400 - k;
    }
    a.prompt[0] = b.prompt[0] = 1;
    static req_t b_alone;
    b_alone = b;
    lunar_engine_t *e1 = engine(&fc, 64, 256, 0);
    submit(e1, &b_alone);
    drain_all(e1);
    lunar_engine_free(e1);
    submit(e, &a);
    drain_all(e);
    uint64_t before = lunar_runner_tokens_computed(rc);
    submit(e, &b);
    drain_all(e);
    uint64_t computed = lunar_runner_tokens_computed(rc) - before;
    CHECK_EQ_INT(b.cached, 48);
    CHECK_EQ_INT(computed, (uint64_t)(b.np - 48 + b.n - 1));
    CHECK_EQ_INT(b.n, b_alone.n);
    CHECK(!memcmp(b.out, b_alone.out, (size_t)b.n * sizeof(int32_t)));
    printf("prefix caching: second request computed %llu tokens (prompt 70, %d cached, %d decodes)\n",
           (unsigned long long)computed, b.cached, b.n - 1);
    lunar_engine_free(e);
    lunar_runner_free(rc);
    lunar_model_free(m);
    return CHECK_DONE();
}
