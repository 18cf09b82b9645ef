/*
 * engine/stats.c — the engine's counters, latency histograms and the periodic INFO line.
 *
 * The numbers are the ones vLLM exports (names beside the fields in lunar/engine.h) and the
 * histogram bounds are vLLM's, so /metrics and existing dashboards read them unchanged.
 */
#include <string.h>

#include "engine/engine_internal.h"
#include "lunar.h"

/* Bucket bounds from vLLM (vllm/v1/metrics/loggers.py, PrometheusStatLogger). */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                     20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
static const double tpot_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                     0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                     7.5,  10.0,  20.0, 40.0,  80.0};
static const double latency_bounds[] = {0.3,  0.5,  0.8,  1.0,   1.5,   2.0,   2.5,
                                        5.0,  10.0, 15.0, 20.0,  30.0,  40.0,  50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

static void hist_init(lunar_histogram_t *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    h->num_buckets = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
}

void lunar_stats_init(lunar_engine_stats_t *st)
{
    memset(st, 0, sizeof *st);
    hist_init(&st->ttft, ttft_bounds, (int)(sizeof ttft_bounds / sizeof *ttft_bounds));
    hist_init(&st->tpot, tpot_bounds, (int)(sizeof tpot_bounds / sizeof *tpot_bounds));
    hist_init(&st->e2e, latency_bounds, (int)(sizeof latency_bounds / sizeof *latency_bounds));
    hist_init(&st->queue, latency_bounds, (int)(sizeof latency_bounds / sizeof *latency_bounds));
}

void lunar_hist_observe(lunar_histogram_t *h, double v)
{
    for (int i = 0; i < h->num_buckets; i++)
        if (v <= h->bounds[i]) h->counts[i]++;
    h->count++;
    h->sum += v;
}

/* Called by the stepping thread; reads the stats under the lock. */
void lunar_stats_maybe_log(lunar_engine_t *e, double now)
{
    if (e->cfg.stats_interval_s <= 0) return;
    if (!e->last_log) {
        e->last_log = now;
        return;
    }
    double dt = now - e->last_log;
    if (dt < e->cfg.stats_interval_s) return;
    pthread_mutex_lock(&e->mu);
    lunar_engine_stats_t st = e->stats;
    pthread_mutex_unlock(&e->mu);
    uint64_t dp = st.prompt_tokens_total - e->last_log_prompt;
    uint64_t dg = st.generation_tokens_total - e->last_log_gen;
    e->last_log = now;
    e->last_log_prompt = st.prompt_tokens_total;
    e->last_log_gen = st.generation_tokens_total;
    if (!dp && !dg && !st.num_running && !st.num_waiting) return; /* idle: say nothing */
    double hit = st.prefix_cache_queries ? 100.0 * (double)st.prefix_cache_hits / (double)st.prefix_cache_queries : 0;
    lunar_log(LUNAR_LOG_INFO, "engine",
              "Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, "
              "Running: %d reqs, Waiting: %d reqs, Preempted: %d reqs (%llu total), "
              "KV cache usage: %.1f%%, Prefix cache hit rate: %.1f%%",
              (double)dp / dt, (double)dg / dt, st.num_running, st.num_waiting,
              st.num_preempted_waiting, (unsigned long long)st.num_preemptions_total,
              100.0 * st.kv_cache_usage, hit);
}
