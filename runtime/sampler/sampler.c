/*
 * sampler/sampler.c — penalties, temperature, min-p, top-k, top-p and the seeded draw over one
 * f32 logits row (see sampler.h for why the generator is counter-based).
 *
 * Filters zero probabilities in place over a working copy; top-k/top-p sort only the surviving
 * candidates, in (probability desc, id asc) order, so ties break the same way everywhere. The
 * draw walks the kept candidates in a fixed order, so equal rows give equal tokens.
 */
#include "sampler/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int lunar_sampler_init(lunar_sampler_t *s, int vocab)
{
    memset(s, 0, sizeof *s);
    s->vocab = vocab;
    s->x = malloc((size_t)vocab * sizeof *s->x);
    s->idx = malloc((size_t)vocab * sizeof *s->idx);
    s->count = calloc((size_t)vocab, sizeof *s->count);
    s->mark = calloc((size_t)vocab, 1);
    s->pen_ids = malloc((size_t)vocab * sizeof *s->pen_ids);
    s->pen_counts = malloc((size_t)vocab * sizeof *s->pen_counts);
    if (!s->x || !s->idx || !s->count || !s->mark || !s->pen_ids || !s->pen_counts) {
        lunar_sampler_destroy(s);
        return lunar_error(LUNAR_ENOMEM, "sampler: no memory for vocab %d", vocab);
    }
    return LUNAR_OK;
}

void lunar_sampler_destroy(lunar_sampler_t *s)
{
    free(s->x);
    free(s->idx);
    free(s->count);
    free(s->mark);
    free(s->pen_ids);
    free(s->pen_counts);
    memset(s, 0, sizeof *s);
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double lunar_sampler_uniform(uint64_t seed, int seq_index, int position)
{
    uint64_t z = mix64(seed ^ mix64((uint64_t)(uint32_t)seq_index << 32 | (uint32_t)position));
    return (double)(mix64(z) >> 11) * (1.0 / 9007199254740992.0);
}

static int rep_on(const lunar_sampling_params_t *p) { return p->repetition_penalty != 1.0f; }
static int freq_on(const lunar_sampling_params_t *p)
{
    return p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

/* One entry of the penalty list (below) on its logit: -inf when suppressed, else vLLM's
 * repetition penalty (divide a positive logit, multiply a negative one) and then the
 * frequency/presence penalties by the count in the output. k_sample (kernels/sampling.cu)
 * applies the same rule to the same list, with the same roundings. */
static float penalize(float y, int32_t count, const lunar_sampling_params_t *p)
{
    if (count < 0) return -INFINITY;
    if (rep_on(p)) y = y > 0 ? y / p->repetition_penalty : y * p->repetition_penalty;
    if (count > 0 && freq_on(p)) {
        float f = p->frequency_penalty * (float)count;
        y -= f + p->presence_penalty;
    }
    return y;
}

static void apply_penalties(lunar_sampler_t *s, const lunar_sample_input_t *in)
{
    int n = lunar_sampler_penalty_list(s, in, s->pen_ids, s->pen_counts);
    for (int k = 0; k < n; k++) s->x[s->pen_ids[k]] = penalize(s->x[s->pen_ids[k]], s->pen_counts[k], in->params);
}

/* Candidates are ordered by (probability desc, id asc): a total order, so every way of
 * sorting or selecting gives the same sequence. qsort has no context argument in C11 and the
 * sampler runs on one thread per engine, so the probabilities go through a thread-local. */
static _Thread_local const float *tl_probs;
static int by_prob_desc(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float pi = tl_probs[i], pj = tl_probs[j];
    if (pi != pj) return pi > pj ? -1 : 1;
    return (i > j) - (i < j);
}

static int better(const float *x, int32_t i, int32_t j) { return x[i] > x[j] || (x[i] == x[j] && i < j); }

/* Quickselect: afterwards idx[0..m) are the m best candidates, in no particular order. */
static void select_best(const float *x, int32_t *idx, int n, int m)
{
    int lo = 0, hi = n - 1, k = m - 1;
    while (lo < hi) {
        int32_t pivot = idx[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (better(x, idx[i], pivot)) i++;
            while (better(x, pivot, idx[j])) j--;
            if (i <= j) {
                int32_t t = idx[i];
                idx[i++] = idx[j];
                idx[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
}

/* Sorts the m best of idx[0..n) to the front; the top-k/top-p filters need only those, and
 * m is usually tiny next to a 32k-150k vocabulary. */
static void sort_best(const float *x, int32_t *idx, int n, int m)
{
    if (m < n) select_best(x, idx, n, m);
    tl_probs = x;
    qsort(idx, (size_t)(m < n ? m : n), sizeof *idx, by_prob_desc);
}

int lunar_sampler_sample(lunar_sampler_t *s, const float *row, const lunar_sample_input_t *in)
{
    const lunar_sampling_params_t *p = in->params;
    int V = s->vocab;
    float *x = s->x;
    memcpy(x, row, (size_t)V * sizeof *x);
    apply_penalties(s, in);

    int best = 0;
    for (int v = 1; v < V; v++)
        if (x[v] > x[best]) best = v;
    if (p->temperature < 1e-5f) return best;

    /* probabilities relative to the best (unnormalized; its value is 1) */
    float inv_t = 1.0f / p->temperature, m = x[best];
    int n = 0;
    float floor_p = p->min_p > 0 ? p->min_p : 0.0f;
    for (int v = 0; v < V; v++) {
        float q = expf((x[v] - m) * inv_t);
        if (q > 0 && q >= floor_p) s->idx[n++] = v;
        x[v] = q;
    }
    int sorted = 0;
    if (p->top_k > 0 && p->top_k < n) {
        sort_best(x, s->idx, n, p->top_k);
        n = p->top_k;
        sorted = 1;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += x[s->idx[i]];
    if (p->top_p < 1.0f) {
        double cum = 0, want = (double)p->top_p * total;
        /* sort only as many of the best as it takes to reach top_p of the mass */
        for (int h = 64; !sorted; h *= 4) {
            if (h >= n) {
                sort_best(x, s->idx, n, n);
                break;
            }
            select_best(x, s->idx, n, h);
            double head = 0;
            for (int i = 0; i < h; i++) head += x[s->idx[i]];
            if (head >= want) {
                sort_best(x, s->idx, h, h);
                break;
            }
        }
        int keep = 0;
        while (keep < n && (keep == 0 || cum < want)) cum += x[s->idx[keep++]];
        n = keep;
        total = cum;
    }
    double u = lunar_sampler_uniform(in->seed, in->seq_index, in->num_output) * total, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += x[s->idx[i]];
        if (u < cum) return s->idx[i];
    }
    return s->idx[n - 1];
}

int lunar_sampler_penalty_max(const lunar_sample_input_t *in)
{
    int rep = rep_on(in->params), any = rep || freq_on(in->params);
    return in->num_suppress + (any ? in->num_output : 0) + (rep ? in->num_prompt : 0);
}

static int by_id(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    return (i > j) - (i < j);
}

/* Index of id t in the sorted ids[0..n), or -(insertion point) - 1. */
static int find_id(const int32_t *ids, int n, int32_t t)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ids[mid] < t) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && ids[lo] == t ? lo : -lo - 1;
}

static int pen_reserve(lunar_pen_cache_t *c, int want)
{
    if (want <= c->cap) return 0;
    int cap = c->cap ? c->cap : 64;
    while (cap < want) cap *= 2;
    int32_t *ids = realloc(c->ids, (size_t)cap * sizeof *ids);
    if (ids) c->ids = ids;
    int32_t *counts = ids ? realloc(c->counts, (size_t)cap * sizeof *counts) : NULL;
    if (counts) c->counts = counts;
    if (!counts) return -1;
    c->cap = cap;
    return 0;
}

void lunar_pen_cache_free(lunar_pen_cache_t *c)
{
    free(c->ids);
    free(c->counts);
    memset(c, 0, sizeof *c);
}

/* Brings c up to date with in: built from the distinct prompt ids (repetition penalty), then
 * each output id not yet counted. -1 when it cannot grow (c is then marked unbuilt). */
static int pen_update(lunar_sampler_t *s, lunar_pen_cache_t *c, const lunar_sample_input_t *in)
{
    int rep = rep_on(in->params), any = rep || freq_on(in->params), V = s->vocab;
    if (!any) return 0;
    if (!c->built || c->num_output > in->num_output) {
        c->n = 0, c->num_output = 0, c->built = 1;
        if (rep) {
            if (pen_reserve(c, in->num_prompt)) return c->built = 0, -1;
            for (int i = 0; i < in->num_prompt; i++) {
                int t = in->prompt[i];
                if (t < 0 || t >= V || s->mark[t]) continue;
                s->mark[t] = 1;
                c->ids[c->n++] = t;
            }
            for (int k = 0; k < c->n; k++) s->mark[c->ids[k]] = 0, c->counts[k] = 0;
            if (c->n > 1) qsort(c->ids, (size_t)c->n, sizeof *c->ids, by_id);
        }
    }
    for (int i = c->num_output; i < in->num_output; i++) {
        int32_t t = in->output[i];
        if (t < 0 || t >= V) continue;
        int k = find_id(c->ids, c->n, t);
        if (k >= 0) {
            c->counts[k]++;
            continue;
        }
        if (pen_reserve(c, c->n + 1)) return c->built = 0, -1;
        k = -k - 1;
        memmove(c->ids + k + 1, c->ids + k, (size_t)(c->n - k) * sizeof *c->ids);
        memmove(c->counts + k + 1, c->counts + k, (size_t)(c->n - k) * sizeof *c->counts);
        c->ids[k] = t, c->counts[k] = 1, c->n++;
    }
    c->num_output = in->num_output;
    return 0;
}

/* The list from the cache: its entries, then the suppressed ids (-1; an id already listed is
 * marked in place). */
static int pen_emit(lunar_sampler_t *s, const lunar_pen_cache_t *c, const lunar_sample_input_t *in, int32_t *ids,
                    int32_t *counts)
{
    int any = rep_on(in->params) || freq_on(in->params), n = any ? c->n : 0, V = s->vocab;
    if (n) { /* an unbuilt cache has no arrays */
        memcpy(ids, c->ids, (size_t)n * sizeof *ids);
        memcpy(counts, c->counts, (size_t)n * sizeof *counts);
    }
    int listed = n;
    for (int i = 0; i < in->num_suppress; i++) {
        int32_t t = in->suppress[i];
        if (t < 0 || t >= V || s->mark[t]) continue;
        s->mark[t] = 1;
        int k = find_id(ids, listed, t);
        if (k >= 0) {
            counts[k] = -1;
        } else {
            ids[n] = t;
            counts[n++] = -1;
        }
    }
    for (int i = 0; i < in->num_suppress; i++)
        if (in->suppress[i] >= 0 && in->suppress[i] < V) s->mark[in->suppress[i]] = 0;
    return n;
}

int lunar_sampler_penalty_list(lunar_sampler_t *s, const lunar_sample_input_t *in, int32_t *ids, int32_t *counts)
{
    if (in->pen && pen_update(s, in->pen, in) == 0) return pen_emit(s, in->pen, in, ids, counts);
    int rep = rep_on(in->params), any = rep || freq_on(in->params), V = s->vocab, n = 0;
    if (any)
        for (int i = 0; i < in->num_output; i++)
            if (in->output[i] >= 0 && in->output[i] < V) s->count[in->output[i]]++;
    /* s->idx[t] = t's entry, for marking the suppressed ones afterwards */
    for (int pass = rep ? 0 : any ? 1 : 2; pass < 3; pass++) {
        const int32_t *list = pass == 0 ? in->prompt : pass == 1 ? in->output : in->suppress;
        int len = pass == 0 ? in->num_prompt : pass == 1 ? in->num_output : in->num_suppress;
        for (int i = 0; i < len; i++) {
            int t = list[i];
            if (t < 0 || t >= V || s->mark[t]) continue;
            s->mark[t] = 1;
            s->idx[t] = n;
            ids[n] = t;
            counts[n++] = (int32_t)s->count[t];
        }
    }
    for (int i = 0; i < in->num_suppress; i++)
        if (in->suppress[i] >= 0 && in->suppress[i] < V) counts[s->idx[in->suppress[i]]] = -1;
    for (int k = 0; k < n; k++) s->mark[ids[k]] = 0, s->count[ids[k]] = 0;
    return n;
}

void lunar_sampler_logprobs(const float *row, int vocab, int token, int top_n, float *lp,
                            int32_t *top_ids, float *top_lp)
{
    float m = row[0];
    for (int v = 1; v < vocab; v++)
        if (row[v] > m) m = row[v];
    double sum = 0;
    for (int v = 0; v < vocab; v++) sum += exp((double)(row[v] - m));
    float lse = m + (float)log(sum);
    if (token >= 0 && lp) *lp = row[token] - lse;
    if (top_n <= 0) return;
    if (top_n > vocab) top_n = vocab;
    int have = 0; /* insertion into a short sorted list: top_n is at most max_logprobs */
    for (int v = 0; v < vocab; v++) {
        float r = row[v];
        if (have == top_n && r <= row[top_ids[have - 1]]) continue;
        int k = have < top_n ? have++ : have - 1;
        while (k > 0 && row[top_ids[k - 1]] < r) {
            top_ids[k] = top_ids[k - 1];
            k--;
        }
        top_ids[k] = v;
    }
    for (int i = 0; i < top_n; i++) top_lp[i] = row[top_ids[i]] - lse;
}
