/*
 * engine/output.c — what happens to a sampled token: stop checks in vLLM's order (min_tokens,
 * EOS, stop_token_ids, stop strings, length), incremental detokenization, and the event that
 * carries it to the consumer.
 *
 * Text: vLLM's prefix/read-offset scheme over any full decoder (the detokenizer interface),
 * so tokenizers whose pieces only make sense in context (SentencePiece spaces, byte-level BPE
 * splitting a character over tokens) still give exact deltas; a delta ending in an incomplete
 * character waits for the next token. Stop strings: the whole output text is kept, so a stop
 * string spanning tokens is found; while running, any tail of the text that could still grow
 * into a stop string is held back, so a stop string (when not included) never reaches the
 * stream, not even in part.
 *
 * Events: a sequence's outputs not yet polled are merged into one node, so a slow consumer
 * gets fewer, larger events instead of a growing queue.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "engine/engine_internal.h"

/* ---- event nodes -------------------------------------------------------------------------- */

int lunar_ev_list_push(lunar_node_list_t *l, lunar_ev_node_t *n)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        lunar_ev_node_t **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return lunar_error(LUNAR_ENOMEM, "engine: event queue of %d", cap);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = n;
    return LUNAR_OK;
}

void lunar_ev_node_free(lunar_ev_node_t *n)
{
    if (!n) return;
    free(n->ids);
    free(n->lp);
    free(n->top_ids);
    free(n->top_lp);
    free(n->text);
    free(n->plp);
    free(n->plp_ids);
    free(n->plp_top);
    free(n->stop_str);
    free(n);
}

/* Grows *p to hold `want` elements of `size` bytes (capacity in *cap, doubled). */
static int reserve(void **p, int *cap, int want, size_t size)
{
    if (want <= *cap) return 0;
    int c = *cap ? *cap : 16;
    while (c < want) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return lunar_error(LUNAR_ENOMEM, "engine: event buffer of %d", c);
    *p = q;
    *cap = c;
    return 0;
}

lunar_ev_node_t *lunar_ev_node_for(lunar_engine_t *e, lunar_seq_t *q)
{
    if (q->ev_node && q->ev_gen == e->gen) return q->ev_node;
    lunar_ev_node_t *n = e->pool.n ? e->pool.v[--e->pool.n] : calloc(1, sizeof *n);
    if (!n) return NULL;
    if (lunar_ev_list_push(&e->pending, n)) {
        lunar_ev_node_free(n);
        return NULL;
    }
    memset(&n->ev, 0, sizeof n->ev);
    n->ev.request_id = q->req->id;
    n->ev.user_data = q->req->user_data;
    n->ev.seq_index = q->seq_index;
    n->ev.num_top_logprobs = q->req->params.logprobs;
    n->ev.stop_token_id = -1;
    q->ev_node = n;
    q->ev_gen = e->gen;
    return n;
}

/* What one emission adds to the sequence's pending event. */
typedef struct emission {
    int32_t token;        /* -1: none */
    const lunar_token_lp_t *lp; /* its logprobs, or NULL */
    const char *text;
    int text_len;
} emission_t;

static int emit(lunar_engine_t *e, lunar_seq_t *q, const emission_t *m)
{
    const lunar_req_t *r = q->req;
    int N = r->params.logprobs, rc = LUNAR_OK;
    pthread_mutex_lock(&e->mu);
    /* the request's last final event: whoever polls it sees the request count drop with it */
    if (q->finish_reason && r->num_unfinished == 1)
        __atomic_sub_fetch(&e->num_unfinished, 1, __ATOMIC_RELAXED);
    lunar_ev_node_t *n = lunar_ev_node_for(e, q);
    if (!n) {
        rc = lunar_error(LUNAR_ENOMEM, "engine: no memory for an event");
        goto out;
    }
    lunar_event_t *ev = &n->ev;
    if (m->token >= 0) {
        int k = ev->num_tokens, w = (k + 1) * (N > 0 ? N : 1);
        if ((rc = reserve((void **)&n->ids, &n->cap_ids, k + 1, sizeof *n->ids))) goto out;
        n->ids[k] = m->token;
        if (N >= 0) {
            if ((rc = reserve((void **)&n->lp, &n->cap_lp, k + 1, sizeof *n->lp)) ||
                (rc = reserve((void **)&n->top_ids, &n->cap_top_ids, w, sizeof *n->top_ids)) ||
                (rc = reserve((void **)&n->top_lp, &n->cap_top_lp, w, sizeof *n->top_lp)))
                goto out;
            if (m->lp->row) {
                lunar_sampler_logprobs(m->lp->row, e->fwd.vocab_size, m->token, N, &n->lp[k],
                                       n->top_ids + (size_t)k * N, n->top_lp + (size_t)k * N);
            } else {
                n->lp[k] = m->lp->lp;
                if (N > 0) {
                    memcpy(n->top_ids + (size_t)k * N, m->lp->top_ids, (size_t)N * sizeof *n->top_ids);
                    memcpy(n->top_lp + (size_t)k * N, m->lp->top_lp, (size_t)N * sizeof *n->top_lp);
                }
            }
        }
        ev->num_tokens = k + 1;
    }
    if (m->text_len > 0) {
        if ((rc = reserve((void **)&n->text, &n->cap_text, ev->text_len + m->text_len + 1, 1))) goto out;
        memcpy(n->text + ev->text_len, m->text, (size_t)m->text_len);
        ev->text_len += m->text_len;
        n->text[ev->text_len] = 0;
    }
    int P = r->num_prompt, NP = r->params.prompt_logprobs;
    if (q->plp && m->token >= 0 && q->num_tokens - P == 1) { /* the first output carries them */
        int w = P * (NP > 0 ? NP : 1);
        if ((rc = reserve((void **)&n->plp, &n->cap_plp, P, sizeof *n->plp)) ||
            (rc = reserve((void **)&n->plp_ids, &n->cap_plp_ids, w, sizeof *n->plp_ids)) ||
            (rc = reserve((void **)&n->plp_top, &n->cap_plp_top, w, sizeof *n->plp_top)))
            goto out;
        memcpy(n->plp, q->plp, (size_t)P * sizeof *n->plp);
        memcpy(n->plp_ids, q->plp_ids, (size_t)P * NP * sizeof *n->plp_ids);
        memcpy(n->plp_top, q->plp_top, (size_t)P * NP * sizeof *n->plp_top);
        ev->num_prompt_logprobs = P;
        ev->num_prompt_top = NP;
    }
    if (q->finish_reason) {
        ev->finish_reason = q->finish_reason;
        ev->stop_token_id = q->stop_token;
        if (q->stop_str_index >= 0) {
            const char *s = r->stop[q->stop_str_index];
            int len = (int)strlen(s);
            if ((rc = reserve((void **)&n->stop_str, &n->cap_stop, len + 1, 1))) goto out;
            memcpy(n->stop_str, s, (size_t)len + 1);
            ev->stop_str = n->stop_str;
        }
    }
    ev->num_prompt_tokens = P;
    ev->num_cached_tokens = q->num_cached_tokens;
    ev->num_output_tokens = q->num_tokens - P;
    ev->arrival_time = r->arrival_time;
    ev->first_scheduled_time = q->first_scheduled;
    ev->first_token_time = q->first_token;
    ev->last_token_time = q->last_token;
out:
    pthread_mutex_unlock(&e->mu);
    e->events_this_step = 1;
    return rc;
}

/* ---- detokenization ----------------------------------------------------------------------- */

static int decode(lunar_engine_t *e, const int32_t *ids, int n, int skip, char **buf, int *cap)
{
    for (;;) {
        int len = e->detok.decode(e->detok.ctx, ids, n, skip, *buf, (size_t)*cap);
        if (len < 0) return len;
        if (len < *cap) return len;
        if (reserve((void **)buf, cap, len + 1, 1)) return LUNAR_ENOMEM;
    }
}

/* True when s ends inside a UTF-8 character or with U+FFFD (a decoder's stand-in for one). */
static int incomplete_utf8(const char *s, int len)
{
    if (len >= 3 && !memcmp(s + len - 3, "\xEF\xBF\xBD", 3)) return 1;
    int i = len - 1, cont = 0;
    while (i >= 0 && cont < 4 && ((unsigned char)s[i] & 0xC0) == 0x80) i--, cont++;
    if (i < 0) return 0;
    unsigned char c = (unsigned char)s[i];
    int need = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    return need > cont;
}

void lunar_output_detok_init(lunar_engine_t *e, lunar_seq_t *q)
{
    (void)e;
    /* vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET: a few prompt ids give the first
     * output token its context (a SentencePiece word start decodes differently at BOS). */
    q->prefix_off = q->req->num_prompt > 5 ? q->req->num_prompt - 5 : 0;
    q->read_off = q->req->num_prompt;
}

/* Appends the text the newest token completes to q->text. */
static int detok_step(lunar_engine_t *e, lunar_seq_t *q)
{
    int skip = q->req->params.skip_special_tokens;
    int a = decode(e, q->tokens + q->prefix_off, q->read_off - q->prefix_off, skip, &e->dec, &e->cap_dec);
    if (a < 0) return a;
    int b = decode(e, q->tokens + q->prefix_off, q->num_tokens - q->prefix_off, skip, &e->dec2, &e->cap_dec2);
    if (b < 0) return b;
    if (b <= a || incomplete_utf8(e->dec2, b)) return 0;
    int add = b - a;
    if (reserve((void **)&q->text, &q->text_cap, q->text_len + add + 1, 1)) return LUNAR_ENOMEM;
    memcpy(q->text + q->text_len, e->dec2 + a, (size_t)add);
    q->text_len += add;
    q->text[q->text_len] = 0;
    q->prefix_off = q->read_off;
    q->read_off = q->num_tokens;
    return 0;
}

/* The earliest stop string in q->text at or after `from`; sets the finish and truncates. */
static void check_stop_strings(lunar_seq_t *q, int from)
{
    const lunar_req_t *r = q->req;
    int best = -1, best_pos = q->text_len;
    if (!q->text) return; /* no text yet */
    for (int i = 0; i < r->params.num_stop; i++) {
        const char *s = r->stop[i];
        size_t L = strlen(s);
        const char *hit = memmem(q->text + from, (size_t)(q->text_len - from), s, L);
        if (hit && (int)(hit - q->text) < best_pos) {
            best_pos = (int)(hit - q->text);
            best = i;
        }
    }
    if (best < 0) return;
    q->finish_reason = LUNAR_FINISH_STOP;
    q->stop_str_index = best;
    q->text_len = r->params.include_stop_str_in_output ? best_pos + (int)strlen(r->stop[best]) : best_pos;
    q->text[q->text_len] = 0;
}

/* Bytes at the end of the text that could be the start of a stop string. */
static int holdback(const lunar_seq_t *q)
{
    const lunar_req_t *r = q->req;
    int hb = 0, avail = q->text_len - q->text_sent;
    for (int i = 0; i < r->params.num_stop; i++) {
        const char *s = r->stop[i];
        int L = (int)strlen(s);
        for (int k = (L - 1 < avail ? L - 1 : avail); k > hb; k--)
            if (!memcmp(q->text + q->text_len - k, s, (size_t)k)) {
                hb = k;
                break;
            }
    }
    return hb;
}

static int is_eos(const lunar_engine_t *e, int32_t t)
{
    for (int i = 0; i < e->cfg.num_eos_token_ids; i++)
        if (e->cfg.eos_token_ids[i] == t) return 1;
    return 0;
}

int lunar_output_token(lunar_engine_t *e, lunar_seq_t *q, int32_t token, const lunar_token_lp_t *lp)
{
    lunar_req_t *r = q->req;
    const lunar_sampling_params_t *p = &r->params;
    q->tokens[q->num_tokens++] = token;
    int num_output = q->num_tokens - r->num_prompt;
    double now = lunar_engine_now();
    pthread_mutex_lock(&e->mu);
    if (!q->first_token) {
        q->first_token = now;
        lunar_hist_observe(&e->stats.ttft, now - r->arrival_time);
        e->stats.prompt_tokens_total += (uint64_t)r->num_prompt;
    } else {
        lunar_hist_observe(&e->stats.tpot, now - q->last_token);
    }
    e->stats.generation_tokens_total++;
    pthread_mutex_unlock(&e->mu);
    q->last_token = now;

    int stop_terminated = 0;
    if (num_output >= p->min_tokens) {
        if (!p->ignore_eos && is_eos(e, token)) {
            stop_terminated = 1;
        } else {
            for (int i = 0; i < p->num_stop_token_ids; i++)
                if (r->stop_ids[i] == token) {
                    stop_terminated = 1;
                    q->stop_token = token;
                }
        }
        if (stop_terminated) q->finish_reason = LUNAR_FINISH_STOP;
    }
    int rc = 0;
    if (e->has_detok && p->detokenize && !(stop_terminated && !p->include_stop_str_in_output)) {
        int old_len = q->text_len;
        rc = detok_step(e, q);
        if (!rc && !q->finish_reason && p->num_stop > 0 && num_output >= p->min_tokens) {
            int maxl = 0;
            for (int i = 0; i < p->num_stop; i++) {
                int L = (int)strlen(r->stop[i]);
                if (L > maxl) maxl = L;
            }
            int from = old_len - maxl + 1;
            if (from > q->text_sent) from = q->text_sent;
            if (from < 0) from = 0;
            check_stop_strings(q, from);
        }
    }
    if (!q->finish_reason && (num_output >= r->max_tokens || q->num_tokens >= e->cfg.max_model_len))
        q->finish_reason = LUNAR_FINISH_LENGTH;
    if (rc) q->finish_reason = LUNAR_FINISH_ERROR;

    int end = q->text_len;
    if (!q->finish_reason && !p->include_stop_str_in_output) end -= holdback(q);
    if (end < q->text_sent) end = q->text_sent;
    emission_t m = {token, p->logprobs >= 0 ? lp : NULL, q->text + q->text_sent, end - q->text_sent};
    int erc = emit(e, q, &m);
    q->text_sent = end;
    if (q->finish_reason) lunar_engine_seq_done(e, q);
    return rc ? rc : erc;
}

int lunar_output_finish(lunar_engine_t *e, lunar_seq_t *q, int reason)
{
    q->finish_reason = reason;
    emission_t m = {-1, NULL, NULL, 0};
    int rc = emit(e, q, &m);
    lunar_engine_seq_done(e, q);
    return rc;
}
