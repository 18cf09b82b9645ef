/*
 * tokenizer/encode.c — text to ids, in Hugging Face's order of operations:
 *
 *   validate UTF-8 -> split out added tokens that match raw text -> normalize each remaining
 *   segment -> split out added tokens that match normalized text -> pre-tokenize into pieces
 *   -> BPE each piece (word cache) -> post-processor's special tokens.
 *
 * Speed comes from working on raw bytes end to end (byte-level vocabularies are indexed by
 * raw bytes at load, so no GPT-2 character mapping happens here), PCRE2's JIT for the split
 * regexes, a quick check that skips Unicode normalization for text it cannot change, a
 * direct-mapped cache of word -> ids per scratch context, and a BPE that scans a short word's
 * pair ranks linearly and switches to a heap (HF's algorithm) for long ones. Scratch contexts
 * come from a pool, so many threads encode with one tokenizer and warm calls allocate nothing
 * but the returned array.
 */
#include "tokenizer/tok.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/error.h"

/* ---- scratch context ----------------------------------------------------------------- */
typedef struct { const char *p; uint32_t n; bool first; } tk_piece;
typedef struct { tk_piece *p; size_t n, cap; } tk_pvec;
typedef struct { uint32_t s, e; bool m; } tk_span;
typedef struct { int32_t id, prev, next, rank, nid; } tk_sym;
typedef struct { int32_t rank, pos, id, a, b; } tk_hent; /* a, b: the pair's ids when pushed */

/* word -> ids cache, direct-mapped; an entry is one malloc'd block (ids then word bytes),
 * replaced on collision. Words up to 256 bytes are cached, as in HF's BPE cache. */
#define CACHE_SLOTS 16384
#define CACHE_WORD 256
typedef struct {
    uint64_t h;
    uint32_t wn, nids;
    int32_t *data;
} tk_cslot;

typedef struct tk_chunk { struct tk_chunk *next; size_t used, cap; char data[]; } tk_chunk;

struct tk_ctx {
    pcre2_match_data *md;
    tk_buf norm, tmp;
    tk_chunk *arena;
    tk_pvec pa, pb;
    tk_span *sp; size_t nsp, capsp;
    tk_sym *sy; size_t capsy;
    tk_hent *hp; size_t caphp;
    tk_cslot *cache;
    tk_ivec ids;
    int flags; /* of the encode in progress: the normalized-token split needs split_special */
};

static void *arena_alloc(tk_ctx *c, size_t n)
{
    tk_chunk *k = c->arena;
    if (!k || k->used + n > k->cap) {
        size_t cap = n > 65536 ? n : 65536;
        tk_chunk *nk = malloc(sizeof *nk + cap);
        if (!nk) return NULL;
        nk->next = k;
        nk->used = 0;
        nk->cap = cap;
        c->arena = k = nk;
    }
    void *p = k->data + k->used;
    k->used += n;
    return p;
}

static void arena_reset(tk_ctx *c)
{
    /* keep the newest chunk only: steady state is one chunk, no frees */
    tk_chunk *k = c->arena;
    if (!k) return;
    tk_chunk *r = k->next;
    while (r) {
        tk_chunk *nx = r->next;
        free(r);
        r = nx;
    }
    k->next = NULL;
    k->used = 0;
}

void tk_ctx_free(tk_ctx *c)
{
    if (!c) return;
    pcre2_match_data_free(c->md);
    free(c->norm.p);
    free(c->tmp.p);
    arena_reset(c);
    free(c->arena);
    free(c->pa.p);
    free(c->pb.p);
    free(c->sp);
    free(c->sy);
    free(c->hp);
    if (c->cache)
        for (size_t i = 0; i < CACHE_SLOTS; i++) free(c->cache[i].data);
    free(c->cache);
    free(c->ids.p);
    free(c);
}

tk_ctx *tk_ctx_get(const lunar_tokenizer_t *tc)
{
    lunar_tokenizer_t *t = (lunar_tokenizer_t *)tc; /* the pool is the one mutable part */
    tk_ctx *c = NULL;
    pthread_mutex_lock(&t->pool_mu);
    if (t->n_pool) c = t->pool[--t->n_pool];
    pthread_mutex_unlock(&t->pool_mu);
    if (c) return c;
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->md = pcre2_match_data_create(16, NULL);
    c->cache = calloc(CACHE_SLOTS, sizeof *c->cache);
    if (!c->md || !c->cache) {
        tk_ctx_free(c);
        return NULL;
    }
    return c;
}

void tk_ctx_put(const lunar_tokenizer_t *tc, tk_ctx *c)
{
    lunar_tokenizer_t *t = (lunar_tokenizer_t *)tc;
    pthread_mutex_lock(&t->pool_mu);
    if (t->n_pool == t->cap_pool) {
        size_t cap = t->cap_pool ? t->cap_pool * 2 : 8;
        tk_ctx **p = realloc(t->pool, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&t->pool_mu);
            tk_ctx_free(c);
            return;
        }
        t->pool = p;
        t->cap_pool = cap;
    }
    t->pool[t->n_pool++] = c;
    pthread_mutex_unlock(&t->pool_mu);
}

static int pv_push(tk_pvec *v, const char *p, size_t n, bool first)
{
    if (!n) return 0;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        tk_piece *q = realloc(v->p, cap * sizeof *q);
        if (!q) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        v->p = q;
        v->cap = cap;
    }
    v->p[v->n++] = (tk_piece){ p, (uint32_t)n, first };
    return 0;
}

static int span_push(tk_ctx *c, size_t s, size_t e, bool m)
{
    if (c->nsp == c->capsp) {
        size_t cap = c->capsp ? c->capsp * 2 : 64;
        tk_span *q = realloc(c->sp, cap * sizeof *q);
        if (!q) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        c->sp = q;
        c->capsp = cap;
    }
    c->sp[c->nsp++] = (tk_span){ (uint32_t)s, (uint32_t)e, m };
    return 0;
}

/* ---- UTF-8 --------------------------------------------------------------------------- */
int tk_utf8_check(const char *str, size_t n, size_t *bad)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; min = 0x10000; }
        else { *bad = i; return -1; }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) { *bad = i; return -1; }
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { *bad = i; return -1; }
        i += k + 1;
    }
    return 0;
}

static inline int u8len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static inline uint32_t u8cp(const char *str, int *len)
{
    const uint8_t *s = (const uint8_t *)str;
    uint8_t c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3F); }
    *len = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3F);
}

/* the last codepoint before s+n (n > 0) */
static uint32_t u8last(const char *s, size_t n, int *len)
{
    size_t i = n - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80) i--;
    return u8cp(s + i, len);
}

/* Rust's char::is_whitespace: the Unicode White_Space property. */
static bool is_ws(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Rust regex's \\w, which HF's single_word test uses: Alphabetic, marks, decimal digits,
 * connector punctuation and the joiners (letters and letter numbers stand for Alphabetic). */
static bool is_word(uint32_t c)
{
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_NL) || k == UTF8PROC_CATEGORY_PC;
}

/* ---- normalizers --------------------------------------------------------------------- */
/* Unicode normalization is local: a character that has no decomposition the form applies,
 * combining class 0 and cannot be the second half of a composition starts a stretch that
 * normalizes independently of what precedes it. So only the runs of "unsafe" characters, each
 * with the character before it (which may be the first half of a composition), go through
 * utf8proc; everything else is copied. Most CJK, kana, Hangul and Latin-1 text has no unsafe
 * character at all and is left untouched. */
static bool self_stable(uint32_t cp, int opt)
{
    utf8proc_int32_t buf[32];
    int last = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)cp, buf, 32, (utf8proc_option_t)((opt & ~UTF8PROC_COMPOSE) | UTF8PROC_DECOMPOSE), &last);
    if (n < 0 || n > 32) return false;
    if (opt & UTF8PROC_COMPOSE) n = utf8proc_normalize_utf32(buf, n, (utf8proc_option_t)opt);
    return n == 1 && (uint32_t)buf[0] == cp;
}

static bool unsafe_cp(uint32_t cp, int opt)
{
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
    if (p->combining_class) return true;
    if (p->comb_index != UINT16_MAX && p->comb_index >= 0x8000) return true; /* second half of a pair */
    if (cp >= 0x1160 && cp <= 0x11FF) return true;                              /* Hangul V/T jamo */
    if (cp >= 0xAC00 && cp <= 0xD7A3) return !(opt & UTF8PROC_COMPOSE);         /* syllables decompose */
    if (p->decomp_seqindex == UINT16_MAX) return false;
    if (p->decomp_type && !(opt & UTF8PROC_COMPAT)) return false;               /* compat mapping, NFC/NFD */
    return !self_stable(cp, opt);
}

static int norm_unicode(const tk_norm *nm, const char *s, size_t n, tk_buf *out, bool *same)
{
    int opt = UTF8PROC_STABLE | (nm->type == TK_N_NFC || nm->type == TK_N_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
              (nm->type == TK_N_NFKC || nm->type == TK_N_NFKD ? UTF8PROC_COMPAT : 0);
    size_t i = 0, copied = 0, prev = 0;
    int rc = 0;
    while (i < n) {
        if ((uint8_t)s[i] < 0x80) { prev = i++; continue; }
        int l;
        uint32_t cp = u8cp(s + i, &l);
        if (!unsafe_cp(cp, opt)) { prev = i; i += (size_t)l; continue; }
        size_t rs = prev < i && prev >= copied ? prev : i, j = i + (size_t)l;
        while (j < n && (uint8_t)s[j] >= 0x80) {
            uint32_t c2 = u8cp(s + j, &l);
            if (!unsafe_cp(c2, opt)) break;
            j += (size_t)l;
        }
        if ((rc = tk_buf_put(out, s + copied, rs - copied))) return rc;
        utf8proc_uint8_t *r = NULL;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s + rs, (utf8proc_ssize_t)(j - rs), &r, (utf8proc_option_t)opt);
        if (m < 0) return lunar_error(LUNAR_EINVAL, "tokenizer: normalization failed: %s", utf8proc_errmsg(m));
        rc = tk_buf_put(out, r, (size_t)m);
        free(r);
        if (rc) return rc;
        copied = prev = i = j;
    }
    if (!copied) {
        *same = true;
        return 0;
    }
    return tk_buf_put(out, s + copied, n - copied);
}

static int put_cp(tk_buf *b, uint32_t cp)
{
    int rc = tk_buf_reserve(b, 5);
    if (rc) return rc;
    b->n += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)b->p + b->n);
    b->p[b->n] = 0;
    return 0;
}

/* one normalizer: s[0..n) -> out (cleared first). *same is set when out was not written because
 * the text is unchanged. */
static int norm_one(const tk_norm *nm, tk_ctx *c, pcre2_match_data *md, const char *s, size_t n, tk_buf *out,
                    bool *same)
{
    int rc = 0;
    out->n = 0;
    *same = false;
    switch (nm->type) {
    case TK_N_NFC: case TK_N_NFD: case TK_N_NFKC: case TK_N_NFKD:
        return norm_unicode(nm, s, n, out, same);
    case TK_N_LOWER:
        for (size_t i = 0; i < n && !rc;) {
            uint8_t ch = (uint8_t)s[i];
            if (ch < 0x80) {
                char l = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
                rc = tk_buf_put(out, &l, 1);
                i++;
                continue;
            }
            int l;
            uint32_t cp = u8cp(s + i, &l);
            i += (size_t)l;
            /* Rust's char::to_lowercase: one-to-one except U+0130, whose lowercase is "i̇" */
            if (cp == 0x130) rc = tk_buf_put(out, "i\xcc\x87", 3);
            else rc = put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
        }
        return rc;
    case TK_N_PREPEND:
        if (!n) {
            *same = true;
            return 0;
        }
        if ((rc = tk_buf_put(out, nm->a, nm->an))) return rc;
        return tk_buf_put(out, s, n);
    case TK_N_STRIP: {
        size_t a = 0, e = n;
        int l;
        while (nm->left && a < e && is_ws(u8cp(s + a, &l))) a += (size_t)l;
        while (nm->right && e > a && is_ws(u8last(s + a, e - a, &l))) e -= (size_t)l;
        return tk_buf_put(out, s + a, e - a);
    }
    case TK_N_REPLACE: {
        size_t i = 0;
        if (!nm->re) {
            const char *hit;
            while ((hit = memmem(s + i, n - i, nm->a, nm->an))) {
                if ((rc = tk_buf_put(out, s + i, (size_t)(hit - (s + i)))) || (rc = tk_buf_put(out, nm->b, nm->bn))) return rc;
                i = (size_t)(hit - s) + nm->an;
            }
            return tk_buf_put(out, s + i, n - i);
        }
        size_t from = 0;
        while (from <= n) {
            int m = pcre2_match(nm->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
            if (m < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (ov[0] == ov[1]) { /* empty match: skip a character */
                from = ov[1] + (ov[1] < n ? (size_t)u8len((uint8_t)s[ov[1]]) : 1);
                continue;
            }
            if ((rc = tk_buf_put(out, s + i, ov[0] - i)) || (rc = tk_buf_put(out, nm->b, nm->bn))) return rc;
            i = from = ov[1];
        }
        (void)c;
        return tk_buf_put(out, s + i, n - i);
    }
    }
    return 0;
}

/* Runs the normalizer chain; the result is in *res / *resn (either `s` itself or c->norm). */
static int normalize_ctx(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, const char **res, size_t *resn)
{
    const char *cur = s;
    size_t curn = n;
    tk_buf *dst = &c->norm, *other = &c->tmp;
    for (size_t i = 0; i < t->n_norms; i++) {
        bool same;
        int rc = norm_one(&t->norms[i], c, c->md, cur, curn, dst, &same);
        if (rc) return rc;
        if (same) continue;
        cur = dst->p ? dst->p : "";
        curn = dst->n;
        tk_buf *x = dst;
        dst = other;
        other = x;
    }
    *res = cur;
    *resn = curn;
    return 0;
}

int tk_normalize(const lunar_tokenizer_t *t, const char *s, size_t n, tk_buf *out)
{
    tk_ctx *c = tk_ctx_get(t);
    if (!c) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    const char *r;
    size_t rn;
    int rc = normalize_ctx(t, c, s, n, &r, &rn);
    if (!rc) {
        out->n = 0;
        rc = tk_buf_put(out, r, rn);
    }
    tk_ctx_put(t, c);
    return rc;
}

/* ---- pre-tokenizers ------------------------------------------------------------------ */
static int find_spans(const tk_pre *pr, tk_ctx *c, const char *s, size_t n)
{
    c->nsp = 0;
    size_t prev = 0, from = 0;
    int rc;
    while (from < n) {
        size_t ms, me;
        if (pr->lit) {
            const char *hit = memmem(s + from, n - from, pr->lit, pr->litn);
            if (!hit) break;
            ms = (size_t)(hit - s);
            me = ms + pr->litn;
        } else {
            int m = pr->jit ? pcre2_jit_match(pr->re, (PCRE2_SPTR)s, n, from, 0, c->md, NULL)
                            : pcre2_match(pr->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, c->md, NULL);
            if (m == PCRE2_ERROR_NOMATCH) break;
            if (m < 0) return lunar_error(LUNAR_EINVAL, "tokenizer: regex match failed (%d)", m);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            ms = ov[0];
            me = ov[1];
            if (ms == me) { /* onig's find_iter steps over an empty match */
                from = me + (size_t)u8len((uint8_t)s[me]);
                continue;
            }
        }
        if (prev != ms && (rc = span_push(c, prev, ms, false))) return rc;
        if ((rc = span_push(c, ms, me, true))) return rc;
        prev = from = me;
    }
    if (prev != n && (rc = span_push(c, prev, n, false))) return rc;
    if (pr->invert)
        for (size_t i = 0; i < c->nsp; i++) c->sp[i].m = !c->sp[i].m;
    return 0;
}

/* HF's SplitDelimiterBehavior over the spans of one piece, appended to `out`. */
static int split_piece(const tk_pre *pr, tk_ctx *c, const tk_piece *pc, tk_pvec *out)
{
    int rc = find_spans(pr, c, pc->p, pc->n);
    if (rc) return rc;
    tk_span *sp = c->sp;
    size_t k = 0;
    switch (pr->behavior) {
    case TK_B_REMOVED:
        for (size_t i = 0; i < c->nsp; i++)
            if (!sp[i].m) sp[k++] = sp[i];
        break;
    case TK_B_ISOLATED:
        k = c->nsp;
        break;
    case TK_B_PREV: {
        bool prevm = false;
        for (size_t i = 0; i < c->nsp; i++) {
            if (sp[i].m && !prevm && k) sp[k - 1].e = sp[i].e;
            else sp[k++] = sp[i];
            prevm = sp[i].m;
        }
        break;
    }
    case TK_B_NEXT: {
        bool prevm = false;
        size_t w = c->nsp; /* fold from the right, writing leftwards */
        for (size_t i = c->nsp; i-- > 0;) {
            if (sp[i].m && !prevm && w < c->nsp) sp[w].s = sp[i].s;
            else sp[--w] = sp[i];
            prevm = sp[i].m;
        }
        memmove(sp, sp + w, (c->nsp - w) * sizeof *sp);
        k = c->nsp - w;
        break;
    }
    case TK_B_CONTIG: {
        bool prevm = false;
        for (size_t i = 0; i < c->nsp; i++) {
            if (sp[i].m == prevm && k) sp[k - 1].e = sp[i].e;
            else sp[k++] = sp[i];
            prevm = sp[i].m;
        }
        break;
    }
    }
    for (size_t i = 0; i < k; i++)
        if ((rc = pv_push(out, pc->p + sp[i].s, sp[i].e - sp[i].s, pc->first && sp[i].s == 0))) return rc;
    return 0;
}

static int metaspace_piece(const tk_pre *pr, tk_ctx *c, const tk_piece *pc, tk_pvec *out)
{
    size_t spaces = 0;
    for (size_t i = 0; i < pc->n; i++) spaces += pc->p[i] == ' ';
    bool starts = pc->n >= pr->repln && !memcmp(pc->p, pr->repl, pr->repln);
    bool prepend = false;
    if (pr->prepend_scheme == TK_PREPEND_ALWAYS) prepend = !(pc->n && pc->p[0] == ' ') && !starts;
    else if (pr->prepend_scheme == TK_PREPEND_FIRST) prepend = pc->first && !(pc->n && pc->p[0] == ' ') && !starts;
    size_t len = pc->n + spaces * (pr->repln - 1) + (prepend ? pr->repln : 0);
    char *d = arena_alloc(c, len ? len : 1), *w = d;
    if (!d) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    if (prepend) { memcpy(w, pr->repl, pr->repln); w += pr->repln; }
    for (size_t i = 0; i < pc->n; i++) {
        if (pc->p[i] == ' ') { memcpy(w, pr->repl, pr->repln); w += pr->repln; }
        else *w++ = pc->p[i];
    }
    if (!pr->split) return pv_push(out, d, len, pc->first);
    /* split on the replacement, each piece starting with it (MergedWithNext) */
    size_t start = 0;
    for (size_t i = 0; i + pr->repln <= len;) {
        if (i > start && !memcmp(d + i, pr->repl, pr->repln)) {
            int rc = pv_push(out, d + start, i - start, pc->first && start == 0);
            if (rc) return rc;
            start = i;
        }
        i += memcmp(d + i, pr->repl, pr->repln) ? (size_t)u8len((uint8_t)d[i]) : pr->repln;
    }
    return pv_push(out, d + start, len - start, pc->first && start == 0);
}

static int pretokenize(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, bool first, tk_pvec **res)
{
    tk_pvec *in = &c->pa, *out = &c->pb;
    in->n = 0;
    *res = in;
    int rc = pv_push(in, s, n, first);
    for (size_t k = 0; k < t->n_pres && !rc; k++) {
        const tk_pre *pr = &t->pres[k];
        out->n = 0;
        for (size_t i = 0; i < in->n && !rc; i++) {
            const tk_piece *pc = &in->p[i];
            if (pr->type == TK_P_SPLIT) rc = split_piece(pr, c, pc, out);
            else if (pr->type == TK_P_METASPACE) rc = metaspace_piece(pr, c, pc, out);
            else if (pr->add_prefix_space && pc->p[0] != ' ') {
                char *d = arena_alloc(c, pc->n + 1);
                if (!d) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
                d[0] = ' ';
                memcpy(d + 1, pc->p, pc->n);
                rc = pv_push(out, d, pc->n + 1, pc->first);
            } else {
                rc = pv_push(out, pc->p, pc->n, pc->first);
            }
        }
        tk_pvec *x = in;
        in = out;
        out = x;
    }
    *res = in;
    return rc;
}

/* ---- BPE ------------------------------------------------------------------------------ */
static int sym_reserve(tk_ctx *c, size_t n)
{
    if (n <= c->capsy) return 0;
    size_t cap = c->capsy ? c->capsy : 256;
    while (cap < n) cap *= 2;
    tk_sym *p = realloc(c->sy, cap * sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    c->sy = p;
    c->capsy = cap;
    return 0;
}

static inline bool hless(const tk_hent *a, const tk_hent *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(tk_ctx *c, size_t *n, tk_hent e)
{
    if (*n == c->caphp) {
        size_t cap = c->caphp ? c->caphp * 2 : 256;
        tk_hent *p = realloc(c->hp, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        c->hp = p;
        c->caphp = cap;
    }
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &c->hp[p])) break;
        c->hp[i] = c->hp[p];
        i = p;
    }
    c->hp[i] = e;
    return 0;
}

static tk_hent heap_pop(tk_ctx *c, size_t *n)
{
    tk_hent top = c->hp[0], last = c->hp[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n) break;
        if (l + 1 < *n && hless(&c->hp[l + 1], &c->hp[l])) l++;
        if (!hless(&c->hp[l], &last)) break;
        c->hp[i] = c->hp[l];
        i = l;
    }
    if (*n) c->hp[i] = last;
    return top;
}

static inline void pair_rank(const lunar_tokenizer_t *t, tk_sym *sy, int32_t i)
{
    int32_t j = sy[i].next;
    const tk_pent *e = j >= 0 ? tk_pmap_get(&t->merges, sy[i].id, sy[j].id) : NULL;
    sy[i].rank = e ? e->rank : INT32_MAX;
    sy[i].nid = e ? e->id : -1;
}

/* Merges symbols sy[0..n) (a linked list starting at 0) by rank, leftmost first on ties. */
static int bpe_merge(const lunar_tokenizer_t *t, tk_ctx *c, size_t n)
{
    tk_sym *sy = c->sy;
    if (n < 2) return 0;
    if (n <= 64) {
        for (int32_t i = 0; i >= 0; i = sy[i].next) pair_rank(t, sy, i);
        for (;;) {
            int32_t best = -1, br = INT32_MAX;
            for (int32_t i = 0; i >= 0; i = sy[i].next)
                if (sy[i].rank < br) { br = sy[i].rank; best = i; }
            if (best < 0) return 0;
            int32_t j = sy[best].next;
            sy[best].id = sy[best].nid;
            sy[best].next = sy[j].next;
            if (sy[j].next >= 0) sy[sy[j].next].prev = best;
            pair_rank(t, sy, best);
            if (sy[best].prev >= 0) pair_rank(t, sy, sy[best].prev);
        }
    }
    /* HF's heap: (rank, position) order, stale entries skipped on pop */
    size_t hn = 0;
    int rc;
    for (size_t i = 0; i + 1 < n; i++) {
        const tk_pent *e = tk_pmap_get(&t->merges, sy[i].id, sy[i + 1].id);
        if (e && (rc = heap_push(c, &hn, (tk_hent){ e->rank, (int32_t)i, e->id, sy[i].id, sy[i + 1].id }))) return rc;
    }
    for (size_t i = 0; i < n; i++) sy[i].rank = 1; /* rank reused as "alive" */
    while (hn) {
        tk_hent top = heap_pop(c, &hn);
        tk_sym *a = &sy[top.pos];
        if (!a->rank || a->next < 0) continue;
        int32_t j = a->next;
        const tk_pent *e;
        /* HF's staleness test: the pair now at pos still merges into top.id; when the pair is
         * unchanged since the push that holds without a lookup */
        if (a->id != top.a || sy[j].id != top.b) {
            e = tk_pmap_get(&t->merges, a->id, sy[j].id);
            if (!e || e->id != top.id) continue;
        }
        a->id = top.id;
        a->next = sy[j].next;
        sy[j].rank = 0;
        if (a->next >= 0) sy[a->next].prev = top.pos;
        if (a->prev >= 0) {
            e = tk_pmap_get(&t->merges, sy[a->prev].id, a->id);
            if (e && (rc = heap_push(c, &hn, (tk_hent){ e->rank, a->prev, e->id, sy[a->prev].id, a->id }))) return rc;
        }
        if (a->next >= 0) {
            e = tk_pmap_get(&t->merges, a->id, sy[a->next].id);
            if (e && (rc = heap_push(c, &hn, (tk_hent){ e->rank, top.pos, e->id, a->id, sy[a->next].id }))) return rc;
        }
    }
    return 0;
}

static inline void sym_add(tk_sym *sy, size_t *n, int32_t id)
{
    size_t i = (*n)++;
    sy[i] = (tk_sym){ id, (int32_t)i - 1, -1, 0, 0 };
    if (i) sy[i - 1].next = (int32_t)i;
}

/* One pre-tokenized piece through the BPE model, ids appended to out. */
static int bpe_word(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, tk_ivec *out)
{
    if (t->ignore_merges) {
        int32_t id = tk_smap_get(&t->bpe, s, n);
        if (id >= 0) return tk_ivec_push(out, id);
    }
    uint64_t h = 0;
    tk_cslot *slot = NULL;
    if (n <= CACHE_WORD) {
        h = tk_hash(s, n);
        slot = &c->cache[h & (CACHE_SLOTS - 1)];
        if (slot->h == h && slot->wn == n && slot->data && !memcmp(slot->data + slot->nids, s, n))
            return tk_ivec_append(out, slot->data, slot->nids);
    }
    int rc = sym_reserve(c, n + 1);
    if (rc) return rc;
    tk_sym *sy = c->sy;
    size_t ns = 0;
    bool unk = false;
    for (size_t i = 0; i < n;) {
        size_t cl = t->bytelevel ? 1 : (size_t)u8len((uint8_t)s[i]);
        int32_t id = t->bytelevel ? t->byte_id[(uint8_t)s[i]]
                     : cl == 1    ? t->ascii_id[(uint8_t)s[i]]
                                  : tk_smap_get(&t->bpe, s + i, cl);
        if (id >= 0) {
            if (unk) { sym_add(sy, &ns, t->unk_model); unk = false; }
            sym_add(sy, &ns, id);
        } else {
            bool bytes = t->byte_fallback;
            for (size_t k = 0; bytes && k < cl; k++) bytes = t->byte_id[(uint8_t)s[i + k]] >= 0;
            if (bytes) {
                for (size_t k = 0; k < cl; k++) sym_add(sy, &ns, t->byte_id[(uint8_t)s[i + k]]);
            } else if (t->unk_model >= 0) {
                if (unk && !t->fuse_unk) sym_add(sy, &ns, t->unk_model);
                unk = true;
            }
        }
        i += cl;
    }
    if (unk) sym_add(sy, &ns, t->unk_model);
    if ((rc = bpe_merge(t, c, ns))) return rc;
    size_t before = out->n;
    for (int32_t i = ns ? 0 : -1; i >= 0; i = c->sy[i].next)
        if ((rc = tk_ivec_push(out, c->sy[i].id))) return rc;
    size_t k = out->n - before;
    if (slot && k) {
        int32_t *d = realloc(slot->data, k * sizeof(int32_t) + n);
        if (d) {
            memcpy(d, out->p + before, k * sizeof(int32_t));
            memcpy(d + k, s, n);
            *slot = (tk_cslot){ h, (uint32_t)n, (uint32_t)k, d };
        }
    }
    return 0;
}

/* ---- added tokens ---------------------------------------------------------------------- */
static size_t trie_longest(const tk_trie *tr, const char *s, size_t n, int32_t *tok)
{
    int32_t cur = 0;
    size_t best = 0;
    *tok = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t ch = tr->n[cur].child;
        while (ch >= 0 && tr->n[ch].byte != b) ch = tr->n[ch].sibling;
        if (ch < 0) break;
        cur = ch;
        if (tr->n[cur].tok >= 0) {
            best = i + 1;
            *tok = tr->n[cur].tok;
        }
    }
    return best;
}

typedef int (*seg_fn)(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, bool first, tk_ivec *out);

/* HF's AddedVocabulary::find_matches: leftmost-longest matches of the trie in s, honouring
 * single_word, lstrip and rstrip; the text between matches goes to `seg`. */
static int split_added(const lunar_tokenizer_t *t, tk_ctx *c, const tk_trie *tr, const char *s, size_t n, bool first,
                       int flags, seg_fn seg, tk_ivec *out)
{
    if (!tr->count) return seg(t, c, s, n, first, out);
    size_t start_off = 0, pos = 0;
    int rc;
    while (pos < n) {
        if (!tr->first[(uint8_t)s[pos]]) { pos++; continue; }
        int32_t ti;
        size_t len = trie_longest(tr, s + pos, n - pos, &ti);
        if (!len) { pos++; continue; }
        const tk_added *a = &t->added[ti];
        size_t ms = pos, me = pos + len;
        pos = me;
        if ((flags & LUNAR_TOK_SPLIT_SPECIAL) && a->special) continue;
        if (a->single_word) {
            int l;
            bool sw = ms == 0 || !is_word(u8last(s, ms, &l));
            bool ew = me == n || !is_word(u8cp(s + me, &l));
            if (!sw || !ew) continue;
        }
        if (a->lstrip) {
            int l;
            size_t ns = ms;
            while (ns > 0 && is_ws(u8last(s, ns, &l))) ns -= (size_t)l;
            ms = ns > start_off ? ns : start_off;
        }
        if (a->rstrip) {
            int l;
            while (me < n && is_ws(u8cp(s + me, &l))) me += (size_t)l;
            pos = me;
        }
        if (ms > start_off && (rc = seg(t, c, s + start_off, ms - start_off, first && start_off == 0, out))) return rc;
        if ((rc = tk_ivec_push(out, a->id))) return rc;
        start_off = me;
    }
    if (start_off < n) return seg(t, c, s + start_off, n - start_off, first && start_off == 0, out);
    return 0;
}

static int seg_model(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, bool first, tk_ivec *out)
{
    tk_pvec *pv;
    int rc = pretokenize(t, c, s, n, first, &pv);
    for (size_t i = 0; i < pv->n && !rc; i++) rc = bpe_word(t, c, pv->p[i].p, pv->p[i].n, out);
    return rc;
}

static int seg_normalized(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, bool first, tk_ivec *out)
{
    const char *ns;
    size_t nn;
    int rc = normalize_ctx(t, c, s, n, &ns, &nn);
    if (rc) return rc;
    /* ns may live in c->norm: nothing below normalizes again before this segment is done */
    return split_added(t, c, &t->trie_norm, ns, nn, first, c->flags, seg_model, out);
}

static int seg_spm(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, bool first, tk_ivec *out)
{
    (void)first;
    return tk_spm_encode(t, c, s, n, out);
}

/* ---- public ---------------------------------------------------------------------------- */
static int encode_into(const lunar_tokenizer_t *t, tk_ctx *c, const char *text, size_t len, int flags)
{
    size_t bad;
    c->ids.n = 0;
    c->flags = flags;
    if (!text && len) return lunar_error(LUNAR_EINVAL, "tokenizer: NULL text");
    if (len > UINT32_MAX / 2) return lunar_error(LUNAR_ERANGE, "tokenizer: text of %zu bytes is too long", len);
    if (tk_utf8_check(text, len, &bad))
        return lunar_error(LUNAR_EINVAL, "tokenizer: invalid UTF-8 at byte offset %zu", bad);
    arena_reset(c);
    int rc = 0;
    if (flags & LUNAR_TOK_ADD_SPECIAL) rc = tk_ivec_append(&c->ids, t->post_pre, t->n_post_pre);
    if (!rc) rc = split_added(t, c, &t->trie_raw, text ? text : "", len, true, flags, t->spm ? seg_spm : seg_normalized, &c->ids);
    if (!rc && (flags & LUNAR_TOK_ADD_SPECIAL)) rc = tk_ivec_append(&c->ids, t->post_suf, t->n_post_suf);
    return rc;
}

static int encode_ctx(const lunar_tokenizer_t *t, tk_ctx *c, const char *text, size_t len, int flags, int32_t **ids,
                      size_t *n)
{
    int rc = encode_into(t, c, text, len, flags);
    if (rc) return rc;
    *ids = malloc((c->ids.n ? c->ids.n : 1) * sizeof **ids);
    if (!*ids) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    if (c->ids.n) memcpy(*ids, c->ids.p, c->ids.n * sizeof **ids); /* p is NULL while empty */
    *n = c->ids.n;
    return 0;
}

int lunar_tokenizer_encode(const lunar_tokenizer_t *t, const char *text, size_t len, int flags, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    tk_ctx *c = tk_ctx_get(t);
    if (!c) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    int rc = encode_ctx(t, c, text, len, flags, ids, n);
    tk_ctx_put(t, c);
    return rc;
}

typedef struct {
    const lunar_tokenizer_t *t;
    const char *const *texts;
    const size_t *lens;
    size_t count;
    int flags;
    int32_t **ids;
    size_t *n;
    size_t next; /* atomic work counter */
    int rc;
    size_t failed;
    char err[512];
    pthread_mutex_t mu;
} tk_batch;

static void *batch_worker(void *arg)
{
    tk_batch *b = arg;
    tk_ctx *c = tk_ctx_get(b->t);
    for (;;) {
        size_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->count) break;
        int rc = c ? encode_ctx(b->t, c, b->texts[i], b->lens ? b->lens[i] : strlen(b->texts[i]), b->flags, &b->ids[i], &b->n[i])
                   : lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        if (rc) {
            pthread_mutex_lock(&b->mu);
            if (!b->rc || i < b->failed) {
                b->rc = rc;
                b->failed = i;
                snprintf(b->err, sizeof b->err, "text %zu: %s", i, lunar_errmsg());
            }
            pthread_mutex_unlock(&b->mu);
        }
    }
    if (c) tk_ctx_put(b->t, c);
    return NULL;
}

int lunar_tokenizer_encode_batch(const lunar_tokenizer_t *t, size_t count, const char *const *texts, const size_t *lens,
                                 int flags, int nthreads, int32_t **ids, size_t *n)
{
    for (size_t i = 0; i < count; i++) {
        ids[i] = NULL;
        n[i] = 0;
    }
    if (nthreads <= 0) nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 1) nthreads = 1;
    if ((size_t)nthreads > count) nthreads = (int)(count ? count : 1);
    tk_batch b = { .t = t, .texts = texts, .lens = lens, .count = count, .flags = flags, .ids = ids, .n = n };
    pthread_mutex_init(&b.mu, NULL);
    pthread_t th[256];
    if (nthreads > 256) nthreads = 256;
    int started = 0;
    for (int i = 1; i < nthreads; i++)
        if (pthread_create(&th[started], NULL, batch_worker, &b) == 0) started++;
    batch_worker(&b);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&b.mu);
    if (b.rc) {
        for (size_t i = 0; i < count; i++) {
            free(ids[i]);
            ids[i] = NULL;
            n[i] = 0;
        }
        return lunar_error(b.rc, "%s", b.err);
    }
    return 0;
}
