/*
 * tokenizer/decode.c — ids back to text, and the streaming detokenizer.
 *
 * decode runs HF's decoder chain on the list of token strings (special tokens dropped first
 * when asked), each decoder a list -> list step exactly as in tokenizers' decode_chain.
 * tokenizer_config's clean_up_tokenization_spaces is not applied: transformers 5 ignores it
 * for BPE tokenizers (it deletes real spaces before punctuation), and so do tokenizers and
 * vLLM's detokenizer.
 *
 * The stream keeps an open window of ids and decodes only that window. A window is closed
 * (its text final) when its bytes end on a whole UTF-8 character (ByteLevel) or on a non-byte
 * token (ByteFallback, whose runs are judged whole by HF: a later bad byte turns the whole run
 * into U+FFFD). Effects that belong to the start of the text (Metaspace's first token, Strip
 * of the fused string) apply only while nothing has been committed. That is what makes
 * concat(pushes) + flush == decode(all ids) exact rather than approximately true.
 */
#include "tokenizer/tok.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* ---- string lists ---------------------------------------------------------------------- */
typedef struct { tk_buf d; size_t *off, *len; size_t n, cap; } slist;

static int sl_add(slist *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *o = realloc(l->off, cap * sizeof *o);
        if (o) l->off = o;
        size_t *k = realloc(l->len, cap * sizeof *k);
        if (k) l->len = k;
        if (!o || !k) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        l->cap = cap;
    }
    l->off[l->n] = l->d.n;
    l->len[l->n] = n;
    l->n++;
    return tk_buf_put(&l->d, s, n);
}

/* appends to the last string of the list (which must be the last thing written) */
static int sl_cat(slist *l, const char *s, size_t n)
{
    l->len[l->n - 1] += n;
    return tk_buf_put(&l->d, s, n);
}

static void sl_clear(slist *l) { l->n = 0; l->d.n = 0; }

/* Buffers one decode needs; a stream keeps its own so that pushing an id allocates nothing
 * once they have grown. */
typedef struct { slist a, b; tk_buf bytes, txt, run; } dscratch;
static void sl_free(slist *l) { free(l->d.p); free(l->off); free(l->len); }
#define SL_S(l, i) ((l)->d.p + (l)->off[i])

/* ---- UTF-8 helpers ---------------------------------------------------------------------- */
static const char REPL[] = "\xef\xbf\xbd"; /* U+FFFD */

/* length of the maximal valid prefix of a UTF-8 sequence at s (1..4), and whether it is complete */
static size_t u8_subpart(const uint8_t *s, size_t n, bool *complete)
{
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    *complete = false;
    if (c < 0x80) { *complete = true; return 1; }
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 1;
    size_t i = 1;
    for (; i <= need && i < n; i++) {
        uint8_t x = s[i];
        if (i == 1 ? (x < lo || x > hi) : (x & 0xC0) != 0x80) return i;
    }
    *complete = i == need + 1;
    return i;
}

/* Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
 * *open is set when the bytes end in an unfinished (but so far valid) character. */
static int lossy(tk_buf *out, const char *s, size_t n, bool *open)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, run = 0;
    int rc = 0;
    if (open) *open = false;
    while (i < n && !rc) {
        bool complete;
        size_t k = u8_subpart(u + i, n - i, &complete);
        if (complete) { i += k; continue; }
        if (i + k == n && k > 0 && open && u[i] >= 0xC2 && u[i] <= 0xF4) *open = true;
        if ((rc = tk_buf_put(out, s + run, i - run))) return rc;
        rc = tk_buf_put(out, REPL, 3);
        i += k;
        run = i;
    }
    return rc ? rc : tk_buf_put(out, s + run, n - run);
}

static bool valid_utf8(const char *s, size_t n)
{
    size_t bad;
    return tk_utf8_check(s, n, &bad) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xAB>" -> 0xAB, else -1 (HF's ByteFallback accepts exactly this form) */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int a = hexval(s[3]), b = hexval(s[4]);
    return a < 0 || b < 0 ? -1 : a * 16 + b;
}

/* byte-level char -> byte (GPT-2 table), -1 outside it */
static int bl_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp > 323) return -1;
    int k = (int)cp - 256;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (!keep && k-- == 0) return b;
    }
    return -1;
}

static uint32_t cp_at(const char *str, size_t n, size_t *len)
{
    const uint8_t *s = (const uint8_t *)str;
    uint8_t c = s[0];
    if (c < 0x80 || n < 2) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0 || n < 4) { *len = 3; return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3F); }
    *len = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3F);
}

/* ---- the decoder chain ------------------------------------------------------------------ */
enum { DF_FIRST_TOKEN = 1, DF_TEXT_START = 2, DF_TEXT_END = 4 };

static int dec_step(const tk_dec *d, dscratch *x, slist *in, slist *out, int fl, bool fused, bool *open)
{
    int rc = 0;
    sl_clear(out);
    switch (d->type) {
    case TK_D_BYTELEVEL: {
        tk_buf *bytes = &x->bytes;
        bytes->n = 0;
        for (size_t i = 0; i < in->n && !rc; i++) {
            const char *s = SL_S(in, i);
            size_t n = in->len[i], start = bytes->n;
            bool all = true;
            for (size_t k = 0; k < n && all;) {
                size_t l;
                int b = bl_byte(cp_at(s + k, n - k, &l));
                if (b < 0) all = false;
                else { char c = (char)b; rc = tk_buf_put(bytes, &c, 1); }
                k += l;
            }
            if (!all) {
                bytes->n = start;
                rc = tk_buf_put(bytes, s, n);
            }
        }
        if (!rc) rc = sl_add(out, "", 0);
        if (!rc) {
            x->txt.n = 0;
            rc = lossy(&x->txt, bytes->p ? bytes->p : "", bytes->n, open);
            if (!rc) rc = sl_cat(out, x->txt.p ? x->txt.p : "", x->txt.n);
        }
        return rc;
    }
    case TK_D_BYTEFALLBACK: {
        tk_buf *run = &x->run;
        run->n = 0;
        size_t nrun = 0;
        for (size_t i = 0; i <= in->n && !rc; i++) {
            int b = i < in->n ? byte_token(SL_S(in, i), in->len[i]) : -1;
            if (b >= 0) {
                char c = (char)b;
                rc = tk_buf_put(run, &c, 1);
                nrun++;
                continue;
            }
            if (nrun) {
                if (valid_utf8(run->p, run->n)) rc = sl_add(out, run->p, run->n);
                else
                    for (size_t k = 0; k < nrun && !rc; k++) rc = sl_add(out, REPL, 3);
                run->n = 0;
                nrun = 0;
            }
            if (i < in->n && !rc) rc = sl_add(out, SL_S(in, i), in->len[i]);
        }
        if (open && in->n && byte_token(SL_S(in, in->n - 1), in->len[in->n - 1]) >= 0) *open = true;
        return rc;
    }
    case TK_D_FUSE:
        rc = sl_add(out, "", 0);
        for (size_t i = 0; i < in->n && !rc; i++) rc = sl_cat(out, SL_S(in, i), in->len[i]);
        return rc;
    case TK_D_METASPACE:
        for (size_t i = 0; i < in->n && !rc; i++) {
            const char *s = SL_S(in, i);
            size_t n = in->len[i];
            bool drop = i == 0 && (fl & DF_FIRST_TOKEN) && d->prepend_scheme != TK_PREPEND_NEVER;
            rc = sl_add(out, "", 0);
            for (size_t k = 0; k < n && !rc;) {
                if (k + d->an <= n && !memcmp(s + k, d->a, d->an)) {
                    if (!drop) rc = sl_cat(out, " ", 1);
                    k += d->an;
                } else {
                    size_t l;
                    cp_at(s + k, n - k, &l);
                    rc = sl_cat(out, s + k, l);
                    k += l;
                }
            }
        }
        return rc;
    case TK_D_REPLACE:
        for (size_t i = 0; i < in->n && !rc; i++) {
            const char *s = SL_S(in, i);
            size_t n = in->len[i], k = 0;
            rc = sl_add(out, "", 0);
            const char *hit;
            while (!rc && (hit = memmem(s + k, n - k, d->a, d->an))) {
                if (!(rc = sl_cat(out, s + k, (size_t)(hit - (s + k))))) rc = sl_cat(out, d->b, d->bn);
                k = (size_t)(hit - s) + d->an;
            }
            if (!rc) rc = sl_cat(out, s + k, n - k);
        }
        return rc;
    case TK_D_STRIP:
        for (size_t i = 0; i < in->n && !rc; i++) {
            const char *s = SL_S(in, i);
            size_t a = 0, e = in->len[i];
            /* after a Fuse the one string is the whole text: its start and end are the text's */
            bool at_start = !(fused && i == 0 && !(fl & DF_TEXT_START));
            bool at_end = !(fused && i + 1 == in->n && !(fl & DF_TEXT_END));
            for (int k = 0; at_start && k < d->start && a + d->an <= e && !memcmp(s + a, d->a, d->an); k++) a += d->an;
            for (int k = 0; at_end && k < d->stop && e >= a + d->an && !memcmp(s + e - d->an, d->a, d->an); k++) e -= d->an;
            rc = sl_add(out, s + a, e - a);
        }
        return rc;
    }
    return 0;
}

static void dscratch_free(dscratch *x)
{
    sl_free(&x->a);
    sl_free(&x->b);
    free(x->bytes.p);
    free(x->txt.p);
    free(x->run.p);
}

static int decode_impl(const lunar_tokenizer_t *t, dscratch *x, const int32_t *ids, size_t n, bool skip, int fl,
                       tk_buf *out, bool *open)
{
    slist *a = &x->a;
    sl_clear(&x->a);
    sl_clear(&x->b);
    int rc = 0;
    if (open) *open = false;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || t->str_off[id] == UINT32_MAX) {
            rc = lunar_error(LUNAR_ERANGE, "tokenizer: id %d is outside the vocabulary (%zu ids)", id, t->n_ids);
            break;
        }
        if (t->flags[id] & TK_F_DECNORM) { /* see TK_F_DECNORM in tok.h */
            for (size_t k = 0; k < t->n_added; k++)
                if (t->added[k].id == id) {
                    rc = sl_add(a, t->added[k].s, t->added[k].n);
                    break;
                }
            continue;
        }
        if (skip && (t->flags[id] & TK_F_SPECIAL)) continue;
        rc = sl_add(a, t->strs.p + t->str_off[id], t->str_len[id]);
    }
    slist *in = &x->a, *tmp = &x->b;
    bool fused = false;
    if (!t->has_decoder && !rc) {
        for (size_t i = 0; i < in->n && !rc; i++) {
            if ((i || !(fl & DF_FIRST_TOKEN)) && (rc = tk_buf_put(out, " ", 1))) break;
            rc = tk_buf_put(out, SL_S(in, i), in->len[i]);
        }
        goto done;
    }
    for (size_t k = 0; k < t->n_decs && !rc; k++) {
        bool o = false;
        rc = dec_step(&t->decs[k], x, in, tmp, fl, fused, &o);
        if (o && open) *open = true;
        if (t->decs[k].type == TK_D_FUSE || t->decs[k].type == TK_D_BYTELEVEL) fused = true;
        slist *sw = in;
        in = tmp;
        tmp = sw;
    }
    for (size_t i = 0; i < in->n && !rc; i++) rc = tk_buf_put(out, SL_S(in, i), in->len[i]);
done:
    if (!rc && !out->p) rc = tk_buf_put(out, "", 0);
    return rc;
}

int lunar_tokenizer_decode(const lunar_tokenizer_t *t, const int32_t *ids, size_t n, int skip_special, char **text,
                           size_t *len)
{
    tk_buf out = { 0 };
    *text = NULL;
    if (len) *len = 0;
    dscratch x = { 0 };
    int rc = decode_impl(t, &x, ids, n, skip_special != 0, DF_FIRST_TOKEN | DF_TEXT_START | DF_TEXT_END, &out, NULL);
    dscratch_free(&x);
    if (rc) {
        free(out.p);
        return rc;
    }
    *text = out.p;
    if (len) *len = out.n;
    return 0;
}

/* ---- streaming ---------------------------------------------------------------------------- */
struct lunar_detok {
    const lunar_tokenizer_t *t;
    bool skip, first_tok, first_text;
    tk_ivec win;   /* ids whose text is not final yet */
    tk_buf raw;    /* final text not yet handed out */
    tk_buf out;    /* what the last call returned */
    tk_buf tmp, pre;
    dscratch x;
};

int lunar_detok_create(const lunar_tokenizer_t *t, int skip_special, lunar_detok_t **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    (*out)->t = t;
    (*out)->skip = skip_special != 0;
    (*out)->first_tok = (*out)->first_text = true;
    return 0;
}

void lunar_detok_free(lunar_detok_t *d)
{
    if (!d) return;
    free(d->win.p);
    free(d->raw.p);
    free(d->out.p);
    free(d->tmp.p);
    free(d->pre.p);
    dscratch_free(&d->x);
    free(d);
}

/* A Strip with stop > 0 after a Fuse removes content at the end of the whole text, which a
 * stream only knows at flush: until then that many trailing copies of it are held back. */
static size_t end_strip(const lunar_detok_t *d, const tk_buf *r, int max)
{
    const tk_dec *st = NULL;
    bool fused = false;
    for (size_t k = 0; k < d->t->n_decs; k++) {
        const tk_dec *x = &d->t->decs[k];
        if (x->type == TK_D_FUSE || x->type == TK_D_BYTELEVEL) fused = true;
        if (x->type == TK_D_STRIP && fused && x->stop > 0) st = x;
    }
    size_t e = r->n;
    for (int k = 0; st && k < (max < 0 ? st->stop : max) && e >= st->an && !memcmp(r->p + e - st->an, st->a, st->an); k++)
        e -= st->an;
    return r->n - e;
}

static int emit(lunar_detok_t *d, bool final, const char **text, size_t *len)
{
    size_t hold = end_strip(d, &d->raw, -1);
    d->out.n = 0;
    int rc = tk_buf_put(&d->out, d->raw.p ? d->raw.p : "", d->raw.n - hold);
    if (rc) return rc;
    if (final) hold = 0; /* stripped: decode(all) ends without them */
    if (hold) memmove(d->raw.p, d->raw.p + d->raw.n - hold, hold);
    d->raw.n = hold;
    *text = d->out.p;
    *len = d->out.n;
    return 0;
}

static int commit(lunar_detok_t *d, bool final)
{
    bool open = false;
    d->tmp.n = 0;
    int fl = (d->first_tok ? DF_FIRST_TOKEN : 0) | (d->first_text ? DF_TEXT_START : 0);
    int rc = decode_impl(d->t, &d->x, d->win.p, d->win.n, d->skip, fl, &d->tmp, &open);
    if (rc) return rc;
    if (open && !final) return 0;
    if ((rc = tk_buf_put(&d->raw, d->tmp.p, d->tmp.n))) return rc;
    if (d->first_text && d->win.n) {
        /* the text has started once the window holds text before the start-only strip: a
         * Strip that ate the window's only character has still done its work */
        d->pre.n = 0;
        rc = decode_impl(d->t, &d->x, d->win.p, d->win.n, d->skip, fl & ~DF_TEXT_START, &d->pre, NULL);
        if (rc) return rc;
        if (d->pre.n) d->first_text = false;
    }
    if (d->win.n) d->first_tok = false;
    d->win.n = 0;
    return 0;
}

int lunar_detok_push(lunar_detok_t *d, int32_t id, const char **text, size_t *len)
{
    const lunar_tokenizer_t *t = d->t;
    *text = "";
    *len = 0;
    if (id < 0 || (size_t)id >= t->n_ids || t->str_off[id] == UINT32_MAX)
        return lunar_error(LUNAR_ERANGE, "tokenizer: id %d is outside the vocabulary (%zu ids)", id, t->n_ids);
    if (d->skip && (t->flags[id] & (TK_F_SPECIAL | TK_F_DECNORM)) == TK_F_SPECIAL) return 0;
    int rc = tk_ivec_push(&d->win, id);
    if (!rc) rc = commit(d, false);
    if (!rc) rc = emit(d, false, text, len);
    return rc;
}

int lunar_detok_prime(lunar_detok_t *d, const int32_t *ids, size_t n)
{
    const char *text;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        int rc = lunar_detok_push(d, ids[i], &text, &len);
        if (rc) return rc;
    }
    return 0;
}

int lunar_detok_flush(lunar_detok_t *d, const char **text, size_t *len)
{
    int rc = commit(d, true);
    if (!rc) rc = emit(d, true, text, len);
    d->win.n = 0;
    d->raw.n = 0;
    d->first_tok = d->first_text = true;
    return rc;
}
