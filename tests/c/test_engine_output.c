/* test_engine_output.c — what a request gets back: text deltas (stop strings never reach the
 * stream, not even in part; UTF-8 never split), finish reasons and stop reasons, min_tokens,
 * logprobs and prompt_logprobs against log_softmax computed here, the logits hook, and the
 * threaded mode under concurrent submitters and aborts.
 *
 * A "script" model makes the expected output exact: at every position it puts logit 10 on the
 * next byte of a fixed script and 0 elsewhere, and the fake detokenizer maps ids 3..255 to
 * bytes, so the output text is the script. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lunar.h"

enum { V = 300 };
static const char *script;
static int script_len;

static int script_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    (void)ctx;
    for (int i = 0; i < b->num_logits; i++) {
        int next = b->positions[b->logits_indices[i]] + 1;
        float *row = logits + (size_t)i * V;
        for (int v = 0; v < V; v++) row[v] = 0;
        if (next < script_len) row[(unsigned char)script[next]] = 10;
    }
    return 0;
}

/* The script uses '#' for EOS (id 1) and '@' for id 290. */
static int32_t script_id(char c) { return c == '#' ? 1 : c == '@' ? 290 : (unsigned char)c; }
static int script_forward_ids(void *ctx, const lunar_batch_t *b, float *logits)
{
    (void)ctx;
    for (int i = 0; i < b->num_logits; i++) {
        int next = b->positions[b->logits_indices[i]] + 1;
        float *row = logits + (size_t)i * V;
        for (int v = 0; v < V; v++) row[v] = 0;
        if (next < script_len) row[script_id(script[next])] = 10;
    }
    return 0;
}

typedef struct {
    char text[512];
    int text_len, num_tokens, finish, stop_token, events, num_plp;
    char stop_str[32];
    char deltas[64][64]; /* per step, the text delta */
    float lp[64];
    int32_t top0[64], top1[64];
    float top0_lp[64], top1_lp[64];
    float plp[64];
    int32_t plp_top[64];
} result_t;

static lunar_engine_t *engine(int (*fwd)(void *, const lunar_batch_t *, float *))
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = 64;
    c.max_model_len = 256;
    c.eos_token_ids[0] = 1;
    c.num_eos_token_ids = 1;
    c.stats_interval_s = 0;
    lunar_forward_iface_t f = {NULL, V, fwd, NULL};
    lunar_detok_iface_t d;
    lunar_fake_detok_iface(1, &d);
    lunar_engine_t *e = NULL;
    CHECK_EQ_INT(lunar_engine_create(&c, &f, &d, &e), 0);
    return e;
}

static void collect(const lunar_event_t *ev, result_t *r, int step)
{
    for (int t = 0; t < ev->num_tokens; t++) {
        int k = r->num_tokens + t;
        if (k < 64 && ev->logprobs) {
            r->lp[k] = ev->logprobs[t];
            if (ev->num_top_logprobs >= 2) {
                r->top0[k] = ev->top_ids[t * ev->num_top_logprobs];
                r->top1[k] = ev->top_ids[t * ev->num_top_logprobs + 1];
                r->top0_lp[k] = ev->top_logprobs[t * ev->num_top_logprobs];
                r->top1_lp[k] = ev->top_logprobs[t * ev->num_top_logprobs + 1];
            }
        }
    }
    r->num_tokens += ev->num_tokens;
    CHECK_EQ_INT((int)strlen(ev->text), ev->text_len);
    if (step < 64) snprintf(r->deltas[step], sizeof r->deltas[step], "%s", ev->text);
    memcpy(r->text + r->text_len, ev->text, (size_t)ev->text_len);
    r->text_len += ev->text_len;
    r->text[r->text_len] = 0;
    r->events++;
    if (ev->num_prompt_logprobs) {
        r->num_plp = ev->num_prompt_logprobs;
        for (int j = 0; j < ev->num_prompt_logprobs && j < 64; j++) {
            r->plp[j] = ev->prompt_logprobs[j];
            r->plp_top[j] = ev->num_prompt_top ? ev->prompt_top_ids[j * ev->num_prompt_top] : -1;
        }
    }
    if (ev->finish_reason) {
        r->finish = ev->finish_reason;
        r->stop_token = ev->stop_token_id;
        snprintf(r->stop_str, sizeof r->stop_str, "%s", ev->stop_str ? ev->stop_str : "");
    }
}

/* Runs the script with prompt = its first `P` bytes; one poll per step. */
static void run(lunar_engine_t *e, int P, lunar_sampling_params_t *p, result_t *r)
{
    memset(r, 0, sizeof *r);
    int32_t prompt[64];
    for (int i = 0; i < P; i++) prompt[i] = script_id(script[i]);
    lunar_request_t rq = {prompt, P, p, 0, r};
    uint64_t id;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), 0);
    for (int step = 0; lunar_engine_num_unfinished(e) && step < 1000; step++) {
        lunar_engine_step(e);
        const lunar_event_t *ev;
        int n = lunar_engine_poll(e, &ev);
        for (int i = 0; i < n; i++) collect(&ev[i], r, step);
    }
}

static void set_script(const char *s)
{
    script = s;
    script_len = (int)strlen(s);
}

static void test_stop_strings(void)
{
    lunar_engine_t *e = engine(script_forward);
    lunar_sampling_params_t p;
    result_t r;
    const char *stop[] = {"STOP", "never"};

    set_script("Q: Hello, world! STOP here and more");
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = 40;
    p.stop = stop;
    p.num_stop = 2;
    run(e, 3, &p, &r);
    CHECK_STR(r.text, "Hello, world! ");
    CHECK_EQ_INT(r.finish, LUNAR_FINISH_STOP);
    CHECK_STR(r.stop_str, "STOP");
    CHECK_EQ_INT(r.num_tokens, 18); /* through the P that completed "STOP" */
    p.include_stop_str_in_output = 1;
    run(e, 3, &p, &r);
    CHECK_STR(r.text, "Hello, world! STOP");

    /* a false start is held back, then released; the real one never shows */
    set_script("Q:ab STAR STOP");
    p.include_stop_str_in_output = 0;
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "ab STAR ");
    CHECK_STR(r.deltas[2], " ");   /* "ab " then ... */
    CHECK_STR(r.deltas[3], "");    /* "S" held */
    CHECK_STR(r.deltas[4], "");    /* "ST" held */
    CHECK_STR(r.deltas[5], "STA"); /* no longer a prefix of STOP */
    for (int i = 0; i < 64; i++)
        if (i != 5) CHECK(!strchr(r.deltas[i], 'S'));

    /* UTF-8: the first byte of é is held until the second arrives */
    set_script("Q:h\xC3\xA9llo");
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = 6;
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "h\xC3\xA9llo");
    CHECK_STR(r.deltas[1], "");
    CHECK_STR(r.deltas[2], "\xC3\xA9");
    CHECK_EQ_INT(r.finish, LUNAR_FINISH_LENGTH);
    lunar_engine_free(e);
}

static void test_stop_tokens_and_min_tokens(void)
{
    lunar_engine_t *e = engine(script_forward_ids);
    lunar_sampling_params_t p;
    result_t r;
    set_script("Q:abc@def#ghi");
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = 20;
    int32_t stop_ids[] = {290};
    p.stop_token_ids = stop_ids;
    p.num_stop_token_ids = 1;
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "abc");
    CHECK_EQ_INT(r.num_tokens, 4);
    CHECK_EQ_INT(r.finish, LUNAR_FINISH_STOP);
    CHECK_EQ_INT(r.stop_token, 290);
    p.include_stop_str_in_output = 1;
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "abc<290>");
    p.include_stop_str_in_output = 0;
    p.num_stop_token_ids = 0;
    run(e, 2, &p, &r); /* EOS: stop_token_id -1, as vLLM reports stop_reason None */
    CHECK_STR(r.text, "abc<290>def");
    CHECK_EQ_INT(r.finish, LUNAR_FINISH_STOP);
    CHECK_EQ_INT(r.stop_token, -1);
    p.ignore_eos = 1;
    p.max_tokens = 11;
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "abc<290>defghi");
    CHECK_EQ_INT(r.finish, LUNAR_FINISH_LENGTH);
    /* min_tokens masks EOS: the 8th token cannot be EOS, so the (tied) lowest id 0 wins */
    p.ignore_eos = 0;
    p.min_tokens = 9;
    p.max_tokens = 20;
    run(e, 2, &p, &r);
    CHECK(r.num_tokens >= 9);
    CHECK(r.finish == LUNAR_FINISH_LENGTH || r.finish == LUNAR_FINISH_STOP);
    lunar_engine_free(e);
}

static void test_logprobs(void)
{
    lunar_engine_t *e = engine(script_forward);
    lunar_sampling_params_t p;
    result_t r;
    set_script("Q: logprobs!");
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = 5;
    p.logprobs = 2;
    p.prompt_logprobs = 1;
    run(e, 3, &p, &r);
    double lse = log(exp(10.0) + (V - 1)); /* one logit 10, the rest 0 */
    CHECK_STR(r.text, "logpr");
    for (int k = 0; k < 5; k++) {
        CHECK_NEAR(r.lp[k], 10 - lse, 1e-4);
        CHECK_EQ_INT(r.top0[k], (unsigned char)script[3 + k]);
        CHECK_NEAR(r.top0_lp[k], 10 - lse, 1e-4);
        CHECK_EQ_INT(r.top1[k], 0); /* ties at 0: the lowest id */
        CHECK_NEAR(r.top1_lp[k], -lse, 1e-4);
    }
    CHECK_EQ_INT(r.num_plp, 3);
    CHECK(isnan(r.plp[0]));
    CHECK_NEAR(r.plp[1], 10 - lse, 1e-4);
    CHECK_NEAR(r.plp[2], 10 - lse, 1e-4);
    CHECK_EQ_INT(r.plp_top[2], ' ');
    lunar_engine_free(e);
}

/* The hook sees the ids so far and rewrites the row: here it forces 'z' after 2 outputs. */
static int hook_calls;
static int force_z(void *arg, uint64_t id, int seq, const int32_t *prompt, int np,
                   const int32_t *out, int no, float *logits, int vocab)
{
    (void)arg, (void)id, (void)seq, (void)prompt, (void)out;
    hook_calls++;
    CHECK_EQ_INT(np, 2);
    if (no >= 2)
        for (int v = 0; v < vocab; v++) logits[v] = v == 'z' ? 100.0f : -100.0f;
    return 0;
}

static void test_logits_hook(void)
{
    lunar_engine_t *e = engine(script_forward);
    lunar_engine_set_logits_hook(e, force_z, NULL);
    lunar_sampling_params_t p;
    result_t r;
    set_script("Q:abcdef");
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = 5;
    p.logits_hook = 1;
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "abzzz");
    CHECK_EQ_INT(hook_calls, 5);
    p.logits_hook = 0; /* requests without one never reach it */
    run(e, 2, &p, &r);
    CHECK_STR(r.text, "abcde");
    CHECK_EQ_INT(hook_calls, 5);
    lunar_engine_free(e);
}

/* ---- threaded ---- */
enum { THREADS = 4, PER_THREAD = 30 };
typedef struct {
    lunar_engine_t *e;
    int t;
    uint64_t ids[PER_THREAD];
    int32_t prompts[PER_THREAD][24];
    int plen[PER_THREAD];
    int aborted[PER_THREAD];
} submitter_t;

static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv = PTHREAD_COND_INITIALIZER;
static int wakeups;
static void on_events(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wake_mu);
    wakeups++;
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

typedef struct {
    int32_t out[40];
    int n, finish, finishes;
} tres_t;
static tres_t results[THREADS][PER_THREAD];

static void *submit_many(void *arg)
{
    submitter_t *s = arg;
    lunar_sampling_params_t p;
    lunar_sampling_params_default(&p);
    p.max_tokens = 30;
    p.has_seed = 1;
    for (int i = 0; i < PER_THREAD; i++) {
        p.seed = (uint64_t)(s->t * 100 + i);
        lunar_request_t rq = {s->prompts[i], s->plen[i], &p, 0, &results[s->t][i]};
        CHECK_EQ_INT(lunar_engine_submit(s->e, &rq, &s->ids[i]), 0);
        if (i % 7 == 3) {
            s->aborted[i] = 1;
            lunar_engine_abort(s->e, s->ids[i]);
        }
    }
    return NULL;
}

static void test_threaded(void)
{
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.block_size = 4;
    c.num_blocks = 40; /* small: preemption under concurrency too */
    c.max_model_len = 64;
    c.max_num_seqs = 8;
    c.max_num_batched_tokens = 32;
    c.eos_token_ids[0] = 1;
    c.num_eos_token_ids = 1;
    c.stats_interval_s = 0;
    lunar_fake_model_t *fm;
    CHECK_EQ_INT(lunar_fake_model_create(64, c.num_blocks, c.block_size, 1, 9, &fm), 0);
    lunar_forward_iface_t f;
    lunar_fake_model_iface(fm, &f);
    lunar_engine_t *e;
    CHECK_EQ_INT(lunar_engine_create(&c, &f, NULL, &e), 0);
    lunar_engine_set_notify(e, on_events, NULL);
    CHECK_EQ_INT(lunar_engine_start(e), 0);
    CHECK_EQ_INT(lunar_engine_step(e), LUNAR_ESTATE);
    static submitter_t subs[THREADS];
    pthread_t th[THREADS];
    uint32_t seed = 5;
    for (int t = 0; t < THREADS; t++) {
        subs[t].e = e;
        subs[t].t = t;
        for (int i = 0; i < PER_THREAD; i++) {
            subs[t].plen[i] = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 24;
            for (int j = 0; j < subs[t].plen[i]; j++)
                subs[t].prompts[i][j] = 3 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 61;
        }
        pthread_create(&th[t], NULL, submit_many, &subs[t]);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    /* the consumer: sleep until notified, then poll */
    int done = 0;
    while (done < THREADS * PER_THREAD) {
        pthread_mutex_lock(&wake_mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        while (!wakeups) {
            if (pthread_cond_timedwait(&wake_cv, &wake_mu, &ts)) break;
        }
        int woke = wakeups;
        wakeups = 0;
        pthread_mutex_unlock(&wake_mu);
        if (!woke) break; /* 5 s without events: something is stuck */
        const lunar_event_t *ev;
        int n = lunar_engine_poll(e, &ev);
        for (int i = 0; i < n; i++) {
            tres_t *r = ev[i].user_data;
            for (int k = 0; k < ev[i].num_tokens && r->n < 40; k++) r->out[r->n++] = ev[i].token_ids[k];
            if (ev[i].finish_reason) {
                r->finish = ev[i].finish_reason;
                r->finishes++;
                done++;
            }
        }
    }
    CHECK_EQ_INT(done, THREADS * PER_THREAD);
    CHECK_EQ_INT(lunar_engine_num_unfinished(e), 0);
    lunar_engine_free(e);

    /* each non-aborted request equals itself run alone, synchronously */
    int mismatches = 0, aborted = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            tres_t *r = &results[t][i];
            CHECK_EQ_INT(r->finishes, 1);
            if (subs[t].aborted[i]) {
                aborted += r->finish == LUNAR_FINISH_ABORT;
                continue;
            }
            c.num_blocks = 40;
            lunar_fake_model_t *fm2;
            lunar_fake_model_create(64, c.num_blocks, c.block_size, 1, 9, &fm2);
            lunar_fake_model_iface(fm2, &f);
            lunar_engine_t *e2;
            lunar_engine_create(&c, &f, NULL, &e2);
            lunar_sampling_params_t p;
            lunar_sampling_params_default(&p);
            p.max_tokens = 30;
            p.has_seed = 1;
            p.seed = (uint64_t)(t * 100 + i);
            tres_t alone = {0};
            lunar_request_t rq = {subs[t].prompts[i], subs[t].plen[i], &p, 0, &alone};
            uint64_t id;
            lunar_engine_submit(e2, &rq, &id);
            while (lunar_engine_num_unfinished(e2)) {
                lunar_engine_step(e2);
                const lunar_event_t *ev;
                int n = lunar_engine_poll(e2, &ev);
                for (int k = 0; k < n; k++)
                    for (int j = 0; j < ev[k].num_tokens; j++) alone.out[alone.n++] = ev[k].token_ids[j];
            }
            if (alone.n != r->n || memcmp(alone.out, r->out, (size_t)r->n * sizeof(int32_t))) mismatches++;
            lunar_engine_free(e2);
            lunar_fake_model_free(fm2);
        }
    printf("threaded: %d requests from %d threads, %d aborted in flight, %d mismatches\n",
           THREADS * PER_THREAD, THREADS, aborted, mismatches);
    CHECK_EQ_INT(mismatches, 0);
    lunar_fake_model_free(fm);
}

/* PRIORITY: lower values run first; FCFS: arrival order. One sequence at a time. */
static void test_policy_order(void)
{
    for (int policy = 0; policy < 2; policy++) {
        lunar_engine_config_t c;
        lunar_engine_config_default(&c);
        c.num_blocks = 16;
        c.max_model_len = 64;
        c.max_num_seqs = 1;
        c.max_num_batched_tokens = 16;
        c.policy = policy;
        c.stats_interval_s = 0;
        set_script("Q:abcdefgh");
        lunar_forward_iface_t f = {NULL, V, script_forward, NULL};
        lunar_engine_t *e;
        CHECK_EQ_INT(lunar_engine_create(&c, &f, NULL, &e), 0);
        lunar_sampling_params_t p;
        lunar_sampling_params_default(&p);
        p.max_tokens = 3;
        int32_t prompt[] = {'Q', ':'};
        int prio[3] = {2, 0, 1}, order[3], done = 0;
        uint64_t ids[3];
        for (int i = 0; i < 3; i++) {
            lunar_request_t rq = {prompt, 2, &p, prio[i], NULL};
            CHECK_EQ_INT(lunar_engine_submit(e, &rq, &ids[i]), 0);
        }
        while (lunar_engine_num_unfinished(e)) {
            lunar_engine_step(e);
            const lunar_event_t *ev;
            int n = lunar_engine_poll(e, &ev);
            for (int i = 0; i < n; i++)
                if (ev[i].finish_reason && done < 3) order[done++] = (int)(ev[i].request_id - ids[0]);
        }
        CHECK_EQ_INT(done, 3);
        CHECK_EQ_INT(order[0], policy ? 1 : 0);
        CHECK_EQ_INT(order[1], policy ? 2 : 1);
        CHECK_EQ_INT(order[2], policy ? 0 : 2);
        lunar_engine_free(e);
    }
}

/* The INFO line every stats_interval_s, with vLLM's wording. */
static void test_stats_log(void)
{
    char path[] = "/tmp/lunar-stats-XXXXXX";
    int fd = mkstemp(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    lunar_log_set_level(LUNAR_LOG_INFO);
    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = 16;
    c.max_model_len = 64;
    c.stats_interval_s = 1e-9;
    set_script("Q:abcdefgh");
    lunar_forward_iface_t f = {NULL, V, script_forward, NULL};
    lunar_engine_t *e;
    CHECK_EQ_INT(lunar_engine_create(&c, &f, NULL, &e), 0);
    lunar_sampling_params_t p;
    lunar_sampling_params_default(&p);
    p.max_tokens = 4;
    int32_t prompt[] = {'Q', ':'};
    lunar_request_t rq = {prompt, 2, &p, 0, NULL};
    uint64_t id;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), 0);
    while (lunar_engine_num_unfinished(e)) lunar_engine_step(e);
    lunar_engine_stats_t st;
    lunar_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.generation_tokens_total, 4);
    CHECK_EQ_INT(st.prompt_tokens_total, 2);
    CHECK_EQ_INT(st.request_success_length, 1);
    CHECK_EQ_INT(st.ttft.count, 1);
    CHECK_EQ_INT(st.tpot.count, 3);
    CHECK_EQ_INT(st.e2e.count, 1);
    CHECK_EQ_INT(st.kv_cache_usage == 0.0, 1);
    lunar_engine_free(e);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lunar_log_set_level(LUNAR_LOG_WARN);
    char buf[4096] = {0};
    lseek(fd, 0, SEEK_SET);
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    unlink(path);
    CHECK(got > 0);
    CHECK_CONTAINS(buf, "INFO");
    CHECK_CONTAINS(buf, "[engine] Avg prompt throughput: ");
    CHECK_CONTAINS(buf, "tokens/s, Running: ");
    CHECK_CONTAINS(buf, "KV cache usage: ");
    CHECK_CONTAINS(buf, "Prefix cache hit rate: ");
}

int main(void)
{
    lunar_log_set_level(LUNAR_LOG_WARN);
    test_stop_strings();
    test_stop_tokens_and_min_tokens();
    test_logprobs();
    test_logits_hook();
    test_threaded();
    test_policy_order();
    test_stats_log();
    return CHECK_DONE();
}
