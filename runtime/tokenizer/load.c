/*
 * tokenizer/load.c — reading a Hugging Face tokenizer folder into lunar_tokenizer_t.
 *
 * tokenizer.json is parsed once with cJSON into flat arrays (token strings in one blob, hash
 * maps for vocab and merges, the pipeline as small component arrays). Every component type is
 * matched against the list we implement; anything else fails the load with its name, because
 * a silently different tokenization is worse than none. Byte-level BPE vocabularies are also
 * indexed by their raw bytes, so encode runs BPE on the input bytes directly and never builds
 * the GPT-2 "Ġ" strings.
 */
#include "tokenizer/tok.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

/* ---- containers ---------------------------------------------------------------------- */
int tk_buf_reserve(tk_buf *b, size_t extra)
{
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    b->p = p;
    b->cap = cap;
    return 0;
}

int tk_buf_put(tk_buf *b, const void *s, size_t n)
{
    int rc = tk_buf_reserve(b, n + 1);
    if (rc) return rc;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int tk_ivec_push(tk_ivec *v, int32_t x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = x;
    return 0;
}

int tk_ivec_append(tk_ivec *v, const int32_t *x, size_t n)
{
    if (!n) return 0;
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 64;
        while (cap < v->n + n) cap *= 2;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        v->p = p;
        v->cap = cap;
    }
    memcpy(v->p + v->n, x, n * sizeof *x);
    v->n += n;
    return 0;
}

/* FNV-1a over 8-byte words then bytes, finished with a multiply-xorshift: cheap for the short
 * keys that dominate (tokens are mostly under 16 bytes) and well mixed for open addressing. */
uint64_t tk_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    while (n--) h = (h ^ (uint8_t)*s++) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

static int smap_grow(tk_smap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    tk_sent *e = calloc(cap, sizeof *e);
    if (!e) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].k) continue;
        size_t j = m->e[i].h & (cap - 1);
        while (e[j].k) j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
    return 0;
}

int tk_smap_put(tk_smap *m, const char *k, size_t n, int32_t v)
{
    if ((m->count + 1) * 2 > m->cap) {
        int rc = smap_grow(m);
        if (rc) return rc;
    }
    uint64_t h = tk_hash(k, n);
    size_t j = h & (m->cap - 1);
    while (m->e[j].k) {
        if (m->e[j].h == h && m->e[j].n == n && memcmp(m->e[j].k, k, n) == 0) return 0;
        j = (j + 1) & (m->cap - 1);
    }
    m->e[j] = (tk_sent){ h, k, (uint32_t)n, v };
    m->count++;
    return 0;
}

int32_t tk_smap_get(const tk_smap *m, const char *k, size_t n)
{
    if (!m->cap) return -1;
    uint64_t h = tk_hash(k, n);
    size_t j = h & (m->cap - 1);
    while (m->e[j].k) {
        if (m->e[j].h == h && m->e[j].n == n && memcmp(m->e[j].k, k, n) == 0) return m->e[j].v;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tk_smap_free(tk_smap *m)
{
    free(m->e);
    memset(m, 0, sizeof *m);
}

static inline uint64_t pkey(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static inline size_t phash(uint64_t k) { return (size_t)((k * 0x9e3779b97f4a7c15ull) >> 20); }

int tk_pmap_put(tk_pmap *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    if ((m->count + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        tk_pent *e = malloc(cap * sizeof *e);
        if (!e) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        for (size_t i = 0; i < cap; i++) e[i].key = UINT64_MAX;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->e[i].key == UINT64_MAX) continue;
            size_t j = phash(m->e[i].key) & (cap - 1);
            while (e[j].key != UINT64_MAX) j = (j + 1) & (cap - 1);
            e[j] = m->e[i];
        }
        free(m->e);
        m->e = e;
        m->cap = cap;
    }
    uint64_t k = pkey(a, b);
    size_t j = phash(k) & (m->cap - 1);
    while (m->e[j].key != UINT64_MAX) {
        if (m->e[j].key == k) return 0; /* the first (lowest-rank) merge of a pair wins */
        j = (j + 1) & (m->cap - 1);
    }
    m->e[j] = (tk_pent){ k, rank, id };
    m->count++;
    return 0;
}

const tk_pent *tk_pmap_get(const tk_pmap *m, int32_t a, int32_t b)
{
    uint64_t k = pkey(a, b);
    size_t j = phash(k) & (m->cap - 1);
    for (;;) {
        const tk_pent *e = &m->e[j];
        if (e->key == k) return e;
        if (e->key == UINT64_MAX) return NULL;
        j = (j + 1) & (m->cap - 1);
    }
}

int tk_trie_add(tk_trie *tr, const char *s, size_t n, int32_t tok)
{
    if (!n) return 0;
    if (!tr->count) {
        tr->cap = 64;
        tr->n = malloc(tr->cap * sizeof *tr->n);
        if (!tr->n) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        tr->n[0] = (tk_tnode){ -1, -1, -1, 0 };
        tr->count = 1;
    }
    tr->first[(uint8_t)s[0]] = 1;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t ch = tr->n[cur].child;
        while (ch >= 0 && tr->n[ch].byte != c) ch = tr->n[ch].sibling;
        if (ch < 0) {
            if (tr->count == tr->cap) {
                tk_tnode *p = realloc(tr->n, tr->cap * 2 * sizeof *p);
                if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
                tr->n = p;
                tr->cap *= 2;
            }
            ch = (int32_t)tr->count++;
            tr->n[ch] = (tk_tnode){ -1, tr->n[cur].child, -1, c };
            tr->n[cur].child = ch;
        }
        cur = ch;
    }
    if (tr->n[cur].tok < 0) tr->n[cur].tok = tok;
    return 0;
}

void tk_trie_free(tk_trie *tr)
{
    free(tr->n);
    memset(tr, 0, sizeof *tr);
}

/* ---- helpers ------------------------------------------------------------------------- */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)sz + 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[sz] = 0;
        if (len) *len = (size_t)sz;
    }
    return p;
}

static cJSON *read_json(const char *path, int *rc)
{
    *rc = 0;
    char *s = read_file(path, NULL);
    if (!s) return NULL;
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j) *rc = lunar_error(LUNAR_EFORMAT, "%s: invalid JSON", path);
    return j;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

int tk_compile(pcre2_code **re, bool *jit, const char *pat, size_t n, const char *where)
{
    int err;
    PCRE2_SIZE off;
    *re = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lunar_error(LUNAR_EUNSUPPORTED, "tokenizer: %s: regex %.*s: %s at offset %zu", where,
                           (int)n, pat, (char *)msg, (size_t)off);
    }
    bool j = pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE) == 0;
    if (jit) *jit = j;
    return 0;
}

int tk_set_token(lunar_tokenizer_t *t, int32_t id, const char *s, size_t n)
{
    if (id < 0) return lunar_error(LUNAR_EFORMAT, "tokenizer: negative token id %d", id);
    if ((size_t)id >= t->cap_ids) {
        size_t cap = t->cap_ids ? t->cap_ids : 1024;
        while (cap <= (size_t)id) cap *= 2;
        uint32_t *o = realloc(t->str_off, cap * sizeof *o);
        if (o) t->str_off = o;
        uint32_t *l = realloc(t->str_len, cap * sizeof *l);
        if (l) t->str_len = l;
        uint8_t *f = realloc(t->flags, cap);
        if (f) t->flags = f;
        if (!o || !l || !f) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        for (size_t i = t->cap_ids; i < cap; i++) {
            t->str_off[i] = UINT32_MAX;
            t->str_len[i] = 0;
            t->flags[i] = 0;
        }
        t->cap_ids = cap;
    }
    if ((size_t)id >= t->n_ids) t->n_ids = (size_t)id + 1;
    t->str_off[id] = (uint32_t)t->strs.n;
    t->str_len[id] = (uint32_t)n;
    int rc = tk_buf_put(&t->strs, s, n);
    if (rc) return rc;
    t->strs.n++; /* keep the NUL as separator */
    return 0;
}

/* GPT-2's byte <-> printable character table (bytes_to_unicode in the original encoder.py):
 * printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte order. */
static void bytelevel_table(uint32_t cp_of[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp_of[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

/* decodes one UTF-8 char at s (valid input assumed), returns its length */
static int u8dec(const char *s, size_t n, uint32_t *cp)
{
    uint8_t c = (uint8_t)s[0];
    if (c < 0x80 || n < 2) { *cp = c; return 1; }
    if (c < 0xE0) { *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3F); return 2; }
    if (c < 0xF0 || n < 4) { *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3F); return 3; }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3F);
    return 4;
}

/* Maps a byte-level token ("Ġthe") to its raw bytes (" the"); false if a char is outside the table. */
static bool bytelevel_raw(const int16_t byte_of[324], const char *s, size_t n, char *out, size_t *outn)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)u8dec(s + i, n - i, &cp);
        if (cp >= 324 || byte_of[cp] < 0) return false;
        out[o++] = (char)byte_of[cp];
    }
    *outn = o;
    return true;
}

/* ---- tokenizer.json ------------------------------------------------------------------ */
static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *k, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

/* {"String": "x"} or {"Regex": "y"}: returns the text, *is_re set accordingly */
static const char *jpattern(const cJSON *o, bool *is_re)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s = jstr(p, "String");
    *is_re = false;
    if (s) return s;
    s = jstr(p, "Regex");
    if (s) *is_re = true;
    return s;
}

static int unsupported(const char *path, const char *what, const char *type)
{
    return lunar_error(LUNAR_EUNSUPPORTED, "%s: %s %s is not supported by lunar's tokenizer", path, what,
                       type ? type : "(no type)");
}

static int parse_normalizer(lunar_tokenizer_t *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return unsupported(path, "normalizer", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            int rc = parse_normalizer(t, it, path);
            if (rc) return rc;
        }
        return 0;
    }
    tk_norm nm = { 0 };
    if (!strcmp(type, "NFC")) nm.type = TK_N_NFC;
    else if (!strcmp(type, "NFD")) nm.type = TK_N_NFD;
    else if (!strcmp(type, "NFKC")) nm.type = TK_N_NFKC;
    else if (!strcmp(type, "NFKD")) nm.type = TK_N_NFKD;
    else if (!strcmp(type, "Lowercase")) nm.type = TK_N_LOWER;
    else if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p) return lunar_error(LUNAR_EFORMAT, "%s: Prepend without prepend", path);
        nm.type = TK_N_PREPEND;
        nm.an = strlen(p);
        nm.a = dupn(p, nm.an);
    } else if (!strcmp(type, "Strip")) {
        nm.type = TK_N_STRIP;
        nm.left = jbool(n, "strip_left", true);
        nm.right = jbool(n, "strip_right", true);
    } else if (!strcmp(type, "Replace")) {
        bool is_re;
        const char *p = jpattern(n, &is_re), *c = jstr(n, "content");
        if (!p || !c) return lunar_error(LUNAR_EFORMAT, "%s: Replace normalizer without pattern/content", path);
        nm.type = TK_N_REPLACE;
        nm.an = strlen(p);
        nm.a = dupn(p, nm.an);
        nm.bn = strlen(c);
        nm.b = dupn(c, nm.bn);
        if (is_re) {
            int rc = tk_compile(&nm.re, NULL, p, nm.an, "Replace normalizer");
            if (rc) return rc;
        } else if (!nm.an) {
            return lunar_error(LUNAR_EFORMAT, "%s: Replace normalizer with an empty pattern", path);
        }
    } else {
        return unsupported(path, "normalizer", type);
    }
    tk_norm *p = realloc(t->norms, (t->n_norms + 1) * sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    t->norms = p;
    t->norms[t->n_norms++] = nm;
    return 0;
}

static int add_pre(lunar_tokenizer_t *t, tk_pre *pr)
{
    tk_pre *p = realloc(t->pres, (t->n_pres + 1) * sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    t->pres = p;
    t->pres[t->n_pres++] = *pr;
    return 0;
}

static int regex_pre(lunar_tokenizer_t *t, const char *re, int behavior, bool invert, const char *where)
{
    tk_pre pr = { .type = TK_P_SPLIT, .behavior = behavior, .invert = invert };
    int rc = tk_compile(&pr.re, &pr.jit, re, strlen(re), where);
    return rc ? rc : add_pre(t, &pr);
}

static int parse_behavior(const cJSON *o, int dflt, const char *path)
{
    const char *b = jstr(o, "behavior");
    if (!b) return dflt;
    if (!strcmp(b, "Removed")) return TK_B_REMOVED;
    if (!strcmp(b, "Isolated")) return TK_B_ISOLATED;
    if (!strcmp(b, "MergedWithPrevious")) return TK_B_PREV;
    if (!strcmp(b, "MergedWithNext")) return TK_B_NEXT;
    if (!strcmp(b, "Contiguous")) return TK_B_CONTIG;
    return lunar_error(LUNAR_EUNSUPPORTED, "%s: split behavior %s is not supported", path, b);
}

static int parse_prepend_scheme(const cJSON *o)
{
    const char *s = jstr(o, "prepend_scheme");
    if (s) {
        if (!strcmp(s, "first")) return TK_PREPEND_FIRST;
        if (!strcmp(s, "never")) return TK_PREPEND_NEVER;
        return TK_PREPEND_ALWAYS;
    }
    return jbool(o, "add_prefix_space", true) ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
}

#define RUST_W_INNER "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"
#define RUST_W "[" RUST_W_INNER "]"
#define RUST_WS_INNER "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* The GPT-2 pattern the ByteLevel pre-tokenizer splits with when use_regex is true. */
static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pre(lunar_tokenizer_t *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return unsupported(path, "pre_tokenizer", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "pretokenizers")) {
            int rc = parse_pre(t, it, path);
            if (rc) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        bool is_re;
        const char *p = jpattern(n, &is_re);
        int beh = parse_behavior(n, TK_B_ISOLATED, path);
        if (!p) return lunar_error(LUNAR_EFORMAT, "%s: Split without pattern", path);
        if (beh < 0) return beh;
        tk_pre pr = { .type = TK_P_SPLIT, .behavior = beh, .invert = jbool(n, "invert", false) };
        if (is_re) {
            int rc = tk_compile(&pr.re, &pr.jit, p, strlen(p), "Split pre-tokenizer");
            if (rc) return rc;
        } else {
            pr.litn = strlen(p);
            pr.lit = dupn(p, pr.litn);
            if (!pr.litn) return lunar_error(LUNAR_EFORMAT, "%s: Split with an empty string", path);
        }
        return add_pre(t, &pr);
    }
    if (!strcmp(type, "ByteLevel")) {
        tk_pre pr = { .type = TK_P_BYTELEVEL, .add_prefix_space = jbool(n, "add_prefix_space", true) };
        t->bytelevel = true;
        int rc = add_pre(t, &pr);
        if (rc || !jbool(n, "use_regex", true)) return rc;
        return regex_pre(t, GPT2_RE, TK_B_ISOLATED, false, "ByteLevel pre-tokenizer");
    }
    if (!strcmp(type, "Digits"))
        /* Rust's char::is_numeric: Unicode Nd, Nl and No */
        return regex_pre(t, jbool(n, "individual_digits", false) ? "\\p{N}" : "\\p{N}+", TK_B_ISOLATED, false,
                         "Digits pre-tokenizer");
    if (!strcmp(type, "Punctuation")) {
        int beh = parse_behavior(n, TK_B_ISOLATED, path);
        if (beh < 0) return beh;
        return regex_pre(t, "[\\p{P}!-/:-@\\[-`{-~]", beh, false, "Punctuation pre-tokenizer");
    }
    /* HF writes these with Rust's regex crate / char::is_whitespace, whose \\w holds marks and
     * whose whitespace is White_Space: PCRE2's \\w and \\s differ, so the classes are spelled out */
    if (!strcmp(type, "Whitespace")) return regex_pre(t, RUST_W "+|[^" RUST_W_INNER RUST_WS_INNER "]+", TK_B_REMOVED, true, "Whitespace");
    if (!strcmp(type, "WhitespaceSplit")) return regex_pre(t, "[" RUST_WS_INNER "]+", TK_B_REMOVED, false, "WhitespaceSplit");
    if (!strcmp(type, "Metaspace")) {
        const char *r = jstr(n, "replacement");
        tk_pre pr = { .type = TK_P_METASPACE, .prepend_scheme = parse_prepend_scheme(n),
                      .split = jbool(n, "split", true) };
        if (!r) r = "\xe2\x96\x81";
        pr.repln = strlen(r);
        pr.repl = dupn(r, pr.repln);
        return add_pre(t, &pr);
    }
    return unsupported(path, "pre_tokenizer", type);
}

static int add_dec(lunar_tokenizer_t *t, tk_dec *d)
{
    tk_dec *p = realloc(t->decs, (t->n_decs + 1) * sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    t->decs = p;
    t->decs[t->n_decs++] = *d;
    return 0;
}

static int parse_decoder(lunar_tokenizer_t *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n)) return 0;
    t->has_decoder = true;
    const char *type = jstr(n, "type");
    if (!type) return unsupported(path, "decoder", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "decoders")) {
            int rc = parse_decoder(t, it, path);
            if (rc) return rc;
        }
        return 0;
    }
    tk_dec d = { 0 };
    if (!strcmp(type, "ByteLevel")) d.type = TK_D_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) d.type = TK_D_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d.type = TK_D_FUSE;
    else if (!strcmp(type, "Metaspace")) {
        const char *r = jstr(n, "replacement");
        if (!r) r = "\xe2\x96\x81";
        d.type = TK_D_METASPACE;
        d.an = strlen(r);
        d.a = dupn(r, d.an);
        d.prepend_scheme = parse_prepend_scheme(n);
    } else if (!strcmp(type, "Strip")) {
        const char *c = jstr(n, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(n, "start"), *sp = cJSON_GetObjectItemCaseSensitive(n, "stop");
        d.type = TK_D_STRIP;
        if (!c) c = " ";
        d.an = strlen(c);
        d.a = dupn(c, d.an);
        d.start = cJSON_IsNumber(st) ? st->valueint : 0;
        d.stop = cJSON_IsNumber(sp) ? sp->valueint : 0;
    } else if (!strcmp(type, "Replace")) {
        bool is_re;
        const char *p = jpattern(n, &is_re), *c = jstr(n, "content");
        if (!p || !c) return lunar_error(LUNAR_EFORMAT, "%s: Replace decoder without pattern/content", path);
        if (is_re || !*p) return unsupported(path, "decoder", "Replace with a Regex pattern");
        d.type = TK_D_REPLACE;
        d.an = strlen(p);
        d.a = dupn(p, d.an);
        d.bn = strlen(c);
        d.b = dupn(c, d.bn);
    } else {
        return unsupported(path, "decoder", type);
    }
    return add_dec(t, &d);
}

static int post_add(int32_t **v, size_t *n, const int32_t *x, size_t k, bool front)
{
    int32_t *p = realloc(*v, (*n + k + 1) * sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    if (front) {
        memmove(p + k, p, *n * sizeof *p);
        memcpy(p, x, k * sizeof *p);
    } else {
        memcpy(p + *n, x, k * sizeof *p);
    }
    *v = p;
    *n += k;
    return 0;
}

static int parse_post(lunar_tokenizer_t *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return unsupported(path, "post_processor", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "processors")) {
            int rc = parse_post(t, it, path);
            if (rc) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    int32_t pre[64], suf[64];
    size_t npre = 0, nsuf = 0;
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(n, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(n, "sep");
        const cJSON *ci = cJSON_GetArrayItem(cls, 1), *si = cJSON_GetArrayItem(sep, 1);
        if (!cJSON_IsNumber(ci) || !cJSON_IsNumber(si)) return lunar_error(LUNAR_EFORMAT, "%s: %s without cls/sep", path, type);
        pre[npre++] = ci->valueint;
        suf[nsuf++] = si->valueint;
    } else if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(n, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(n, "special_tokens");
        const cJSON *it;
        bool seen_seq = false;
        cJSON_ArrayForEach(it, single) {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
                seen_seq = true;
                continue;
            }
            const char *name = jstr(sp, "id");
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name ? name : ""), "ids");
            if (!name || !cJSON_IsArray(ids))
                return lunar_error(LUNAR_EFORMAT, "%s: TemplateProcessing names special token %s without ids", path,
                                   name ? name : "?");
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) {
                if (npre >= 64 || nsuf >= 64) return lunar_error(LUNAR_EFORMAT, "%s: template too long", path);
                if (seen_seq) suf[nsuf++] = x->valueint;
                else pre[npre++] = x->valueint;
            }
        }
    } else {
        return unsupported(path, "post_processor", type);
    }
    int rc = post_add(&t->post_pre, &t->n_post_pre, pre, npre, true);
    return rc ? rc : post_add(&t->post_suf, &t->n_post_suf, suf, nsuf, false);
}

/* Added tokens. As in HF's AddedVocabulary::add_tokens, a token whose content is already in
 * the model's vocab takes that id (the file's "id" is only what it expects). */
static int parse_added(lunar_tokenizer_t *t, const cJSON *arr, const cJSON *vocab)
{
    const cJSON *it;
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    tk_smap model = { 0 }; /* keys are the cJSON strings, alive until the load ends */
    cJSON_ArrayForEach(it, vocab) {
        int rc = tk_smap_put(&model, it->string, strlen(it->string), it->valueint);
        if (rc) {
            tk_smap_free(&model);
            return rc;
        }
    }
    cJSON_ArrayForEach(it, arr) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *c = jstr(it, "content");
        if (!cJSON_IsNumber(id) || !c) {
            tk_smap_free(&model);
            return lunar_error(LUNAR_EFORMAT, "tokenizer.json: added token without id/content");
        }
        tk_added *a = &t->added[t->n_added++];
        int32_t in_model = tk_smap_get(&model, c, strlen(c));
        a->id = in_model >= 0 ? in_model : id->valueint;
        a->n = strlen(c);
        a->s = dupn(c, a->n);
        a->special = jbool(it, "special", false);
        a->lstrip = jbool(it, "lstrip", false);
        a->rstrip = jbool(it, "rstrip", false);
        a->single_word = jbool(it, "single_word", false);
        a->normalized = jbool(it, "normalized", !a->special);
        int rc = tk_set_token(t, a->id, c, a->n);
        if (rc) {
            tk_smap_free(&model);
            return rc;
        }
        t->flags[a->id] |= TK_F_ADDED | (a->special ? TK_F_SPECIAL : 0);
    }
    tk_smap_free(&model);
    return 0;
}

/* Builds the tries the encoder matches added tokens with; normalized tokens are matched in
 * normalized text, so their content is normalized first (as HF's AddedVocabulary does). */
int tk_build_tries(lunar_tokenizer_t *t)
{
    for (size_t i = 0; i < t->n_added; i++) {
        tk_added *a = &t->added[i];
        if (a->normalized && t->n_norms) {
            tk_buf b = { 0 };
            int rc = tk_normalize(t, a->s, a->n, &b);
            if (rc) {
                free(b.p);
                return rc;
            }
            if (b.n != a->n || memcmp(b.p, a->s, a->n)) t->flags[a->id] |= TK_F_DECNORM;
            free(a->s);
            a->s = b.p ? b.p : dupn("", 0);
            a->n = b.n;
        }
        int rc = tk_trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, a->s, a->n, (int32_t)i);
        if (rc) return rc;
    }
    return 0;
}

/* The vocab map over every id; added tokens first, as HF's token_to_id looks there first. */
int tk_build_vocab_map(lunar_tokenizer_t *t)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t id = 0; id < t->n_ids; id++) {
            if (t->str_off[id] == UINT32_MAX || !!(t->flags[id] & TK_F_ADDED) != (pass == 0)) continue;
            int rc = tk_smap_put(&t->vocab, t->strs.p + t->str_off[id], t->str_len[id], (int32_t)id);
            if (rc) return rc;
        }
    return 0;
}

static int parse_vocab(lunar_tokenizer_t *t, const cJSON *m, const char *path)
{
    const char *type = jstr(m, "type");
    if (!type && cJSON_GetObjectItemCaseSensitive(m, "merges")) type = "BPE";
    if (!type || strcmp(type, "BPE")) return unsupported(path, "model", type);
    const char *cp = jstr(m, "continuing_subword_prefix"), *ew = jstr(m, "end_of_word_suffix");
    if ((cp && *cp) || (ew && *ew)) return unsupported(path, "model", "BPE with continuing_subword_prefix/end_of_word_suffix");
    t->byte_fallback = jbool(m, "byte_fallback", false);
    t->fuse_unk = jbool(m, "fuse_unk", false);
    t->ignore_merges = jbool(m, "ignore_merges", false);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab"), *it;
    if (!cJSON_IsObject(vocab)) return lunar_error(LUNAR_EFORMAT, "%s: model.vocab missing", path);
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it)) return lunar_error(LUNAR_EFORMAT, "%s: vocab entry %s is not a number", path, it->string);
        int rc = tk_set_token(t, it->valueint, it->string, strlen(it->string));
        if (rc) return rc;
    }
    return 0;
}

/* The BPE side: symbol map (raw bytes for byte-level vocabularies), byte ids, unk, merges.
 * Runs after every token string is in the blob, since map keys point into it. */
static int build_bpe(lunar_tokenizer_t *t, const cJSON *m, const char *path)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab"), *it;
    int16_t byte_of[324];
    uint32_t cp_of[256];
    bytelevel_table(cp_of);
    for (int i = 0; i < 324; i++) byte_of[i] = -1;
    for (int b = 0; b < 256; b++) byte_of[cp_of[b]] = (int16_t)b;
    if (t->bytelevel) {
        t->bpe_keys.p = malloc(t->strs.n + 1);
        t->bpe_keys.cap = t->strs.n + 1;
        if (!t->bpe_keys.p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    }
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = it->valueint;
        const char *s = t->strs.p + t->str_off[id];
        size_t n = t->str_len[id];
        int rc;
        if (t->bytelevel) {
            char *dst = t->bpe_keys.p + t->bpe_keys.n;
            size_t rn;
            if (!bytelevel_raw(byte_of, s, n, dst, &rn)) continue;
            t->bpe_keys.n += rn;
            rc = tk_smap_put(&t->bpe, dst, rn, id);
        } else {
            rc = tk_smap_put(&t->bpe, s, n, id);
        }
        if (rc) return rc;
    }
    for (int b = 0; b < 256; b++) {
        char k[8];
        if (t->bytelevel) {
            k[0] = (char)b;
            t->byte_id[b] = tk_smap_get(&t->bpe, k, 1);
        } else {
            snprintf(k, sizeof k, "<0x%02X>", b);
            t->byte_id[b] = tk_smap_get(&t->bpe, k, 6);
            if (t->byte_id[b] >= 0) t->flags[t->byte_id[b]] |= TK_F_BYTE;
        }
    }
    for (int b = 0; b < 128; b++) {
        char k = (char)b;
        t->ascii_id[b] = tk_smap_get(&t->bpe, &k, 1);
    }
    const char *unk = jstr(m, "unk_token");
    t->unk_model = unk ? tk_smap_get(&t->vocab, unk, strlen(unk)) : -1;

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    int32_t rank = 0;
    tk_buf tmp = { 0 };
    int rc = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL;
        size_t an = 0, bn = 0;
        if (cJSON_IsString(it)) {
            a = it->valuestring;
            const char *sp = strchr(a, ' ');
            if (sp) {
                an = (size_t)(sp - a);
                b = sp + 1;
                bn = strlen(b);
            }
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            if (a && b) {
                an = strlen(a);
                bn = strlen(b);
            }
        }
        if (!a || !b) {
            rc = lunar_error(LUNAR_EFORMAT, "%s: merge %d is neither \"a b\" nor [a, b]", path, rank);
            break;
        }
        tmp.n = 0;
        if ((rc = tk_buf_put(&tmp, a, an)) || (rc = tk_buf_put(&tmp, b, bn))) break;
        int32_t ia = tk_smap_get(&t->vocab, a, an), ib = tk_smap_get(&t->vocab, b, bn);
        int32_t im = tk_smap_get(&t->vocab, tmp.p, tmp.n);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = lunar_error(LUNAR_EFORMAT, "%s: merge %d (%.*s %.*s) uses a token not in the vocab", path, rank,
                             (int)an, a, (int)bn, b);
            break;
        }
        if ((rc = tk_pmap_put(&t->merges, ia, ib, rank++, im))) break;
    }
    free(tmp.p);
    if (!rc && !t->merges.cap) rc = tk_pmap_put(&t->merges, -2, -2, 0, -1); /* lookups need a table */
    return rc;
}

int tk_load_json(lunar_tokenizer_t *t, const char *path)
{
    int rc;
    cJSON *j = read_json(path, &rc);
    if (!j) return rc ? rc : lunar_error(LUNAR_ENOENT, "%s: cannot read", path);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!(rc = parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(j, "normalizer"), path)) &&
        !(rc = parse_pre(t, cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), path)) &&
        !(rc = parse_decoder(t, cJSON_GetObjectItemCaseSensitive(j, "decoder"), path)) &&
        !(rc = parse_post(t, cJSON_GetObjectItemCaseSensitive(j, "post_processor"), path)) &&
        !(rc = parse_vocab(t, m, path)) &&
        !(rc = parse_added(t, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"),
                           cJSON_GetObjectItemCaseSensitive(m, "vocab"))) &&
        !(rc = tk_build_vocab_map(t)) && !(rc = build_bpe(t, m, path)))
        rc = tk_build_tries(t);
    if (!rc)
        snprintf(t->desc, sizeof t->desc, "tokenizer.json (BPE%s%s, %zu ids, %zu merges, %zu added)",
                 t->bytelevel ? ", byte-level" : "", t->byte_fallback ? ", byte_fallback" : "", t->n_ids,
                 t->merges.count, t->n_added);
    cJSON_Delete(j);
    return rc;
}

/* ---- configs ------------------------------------------------------------------------- */
/* "bos_token": "<s>" or {"content": "<s>", ...} */
static const char *token_content(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    return jstr(v, "content");
}

static int32_t special_id(const lunar_tokenizer_t *t, const cJSON *cfg, const cJSON *map, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(map, key);
    const char *c = token_content(v);
    return c ? tk_smap_get(&t->vocab, c, strlen(c)) : -2; /* -2: not named at all */
}

static int push_eos(lunar_tokenizer_t *t, int32_t id)
{
    if (id < 0) return 0;
    for (size_t i = 0; i < t->n_eos; i++)
        if (t->eos_ids[i] == id) return 0;
    int32_t *p = realloc(t->eos_ids, (t->n_eos + 1) * sizeof *p);
    if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    t->eos_ids = p;
    t->eos_ids[t->n_eos++] = id;
    return 0;
}

static int add_template(lunar_tokenizer_t *t, const char *name, const char *text)
{
    char **n = realloc(t->tmpl_names, (t->n_tmpl + 1) * sizeof *n);
    if (n) t->tmpl_names = n;
    char **x = realloc(t->tmpl_texts, (t->n_tmpl + 1) * sizeof *x);
    if (x) t->tmpl_texts = x;
    if (!n || !x) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    t->tmpl_names[t->n_tmpl] = dupn(name, strlen(name));
    t->tmpl_texts[t->n_tmpl] = dupn(text, strlen(text));
    t->n_tmpl++;
    return 0;
}

/* sentencepiece folders: the strings the slow HF tokenizer never splits (added_tokens_decoder,
 * else the control and unknown pieces) are matched before sentencepiece sees the text. */
static int spm_added(lunar_tokenizer_t *t, const cJSON *cfg)
{
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder"), *it;
    size_t n = 0;
    cJSON_ArrayForEach(it, dec) n++;
    t->added = calloc(n + t->n_ids + 1, sizeof *t->added);
    if (!t->added) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    cJSON_ArrayForEach(it, dec) {
        const char *c = jstr(it, "content");
        int32_t id = (int32_t)strtol(it->string, NULL, 10);
        if (!c || id < 0 || (size_t)id >= t->n_ids) continue;
        tk_added *a = &t->added[t->n_added++];
        *a = (tk_added){ .id = id, .n = strlen(c), .special = jbool(it, "special", true),
                         .lstrip = jbool(it, "lstrip", false), .rstrip = jbool(it, "rstrip", false),
                         .single_word = jbool(it, "single_word", false) };
        a->s = dupn(c, a->n);
        t->flags[id] |= TK_F_ADDED | (a->special ? TK_F_SPECIAL : 0);
    }
    if (!t->n_added)
        for (size_t id = 0; id < t->n_ids; id++) {
            if (!(t->flags[id] & TK_F_SPECIAL)) continue; /* spm.c marks control and unknown pieces */
            tk_added *a = &t->added[t->n_added++];
            *a = (tk_added){ .id = (int32_t)id, .n = t->str_len[id], .special = true };
            a->s = dupn(t->strs.p + t->str_off[id], a->n);
            t->flags[id] |= TK_F_ADDED;
        }
    return tk_build_tries(t);
}

int tk_load_configs(lunar_tokenizer_t *t, const char *dir)
{
    char path[4096];
    int rc = 0;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    cJSON *cfg = read_json(path, &rc);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    cJSON *map = read_json(path, &rc);
    if (rc) {
        cJSON_Delete(cfg);
        return rc;
    }
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    cJSON *gen = read_json(path, &rc);
    if (rc) {
        cJSON_Delete(cfg);
        cJSON_Delete(map);
        return rc;
    }
    if (t->spm && (rc = spm_added(t, cfg))) goto out;

    int32_t v;
    if ((v = special_id(t, cfg, map, "bos_token")) != -2) t->bos = v;
    if ((v = special_id(t, cfg, map, "eos_token")) != -2) t->eos = v;
    if ((v = special_id(t, cfg, map, "pad_token")) != -2) t->pad = v;
    if ((v = special_id(t, cfg, map, "unk_token")) != -2) t->unk = v;
    if (t->unk < 0) t->unk = t->unk_model;
    const cJSON *gb = cJSON_GetObjectItemCaseSensitive(gen, "bos_token_id");
    if (t->bos < 0 && cJSON_IsNumber(gb)) t->bos = gb->valueint;

    /* add_bos_token / add_eos_token: transformers rebuilds the post-processor from them
     * (update_post_processor), so they win over tokenizer.json's template when present. */
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    bool add_bos = cJSON_IsBool(ab) ? cJSON_IsTrue(ab) : (t->spm != NULL);
    bool add_eos = cJSON_IsBool(ae) && cJSON_IsTrue(ae);
    if (add_bos && t->bos >= 0 && !(t->n_post_pre && t->post_pre[0] == t->bos))
        if ((rc = post_add(&t->post_pre, &t->n_post_pre, &t->bos, 1, true))) goto out;
    if (add_eos && t->eos >= 0 && !(t->n_post_suf && t->post_suf[t->n_post_suf - 1] == t->eos))
        if ((rc = post_add(&t->post_suf, &t->n_post_suf, &t->eos, 1, false))) goto out;
    if (cJSON_IsBool(ab) && !add_bos && t->n_post_pre && t->post_pre[0] == t->bos) {
        memmove(t->post_pre, t->post_pre + 1, (t->n_post_pre - 1) * sizeof *t->post_pre);
        t->n_post_pre--;
    }
    t->add_bos = t->n_post_pre && t->post_pre[0] == t->bos && t->bos >= 0;
    t->add_eos = add_eos;

    if ((rc = push_eos(t, t->eos))) goto out;
    const cJSON *ge = cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"), *it;
    if (cJSON_IsNumber(ge)) rc = push_eos(t, ge->valueint);
    else cJSON_ArrayForEach(it, ge) if (!rc && cJSON_IsNumber(it)) rc = push_eos(t, it->valueint);
    if (rc) goto out;

    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(ct)) rc = add_template(t, "default", ct->valuestring);
    else cJSON_ArrayForEach(it, ct) {
        const char *n = jstr(it, "name"), *x = jstr(it, "template");
        if (!rc && n && x) rc = add_template(t, n, x);
    }
out:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    cJSON_Delete(gen);
    return rc;
}

/* ---- public: load, free, accessors --------------------------------------------------- */
void lunar_free(void *p) { free(p); }

int lunar_tokenizer_load(const char *dir, lunar_tokenizer_t **out)
{
    *out = NULL;
    if (!dir) return lunar_error(LUNAR_EINVAL, "tokenizer: no folder given");
    lunar_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    pthread_mutex_init(&t->pool_mu, NULL);
    t->bos = t->eos = t->pad = t->unk = t->unk_model = -1;
    char path[4096];
    struct stat st;
    int rc;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (stat(path, &st) == 0) {
        rc = tk_load_json(t, path);
    } else {
        snprintf(path, sizeof path, "%s/tokenizer.model", dir);
        if (stat(path, &st) == 0) rc = tk_spm_load(t, path);
        else if (stat(dir, &st) != 0) rc = lunar_error(LUNAR_ENOENT, "%s: no such folder", dir);
        else rc = lunar_error(LUNAR_ENOENT, "%s: neither tokenizer.json nor tokenizer.model found", dir);
    }
    if (!rc) rc = tk_load_configs(t, dir);
    if (rc) {
        lunar_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void lunar_tokenizer_free(lunar_tokenizer_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_pool; i++) tk_ctx_free(t->pool[i]);
    free(t->pool);
    pthread_mutex_destroy(&t->pool_mu);
    free(t->strs.p);
    free(t->str_off);
    free(t->str_len);
    free(t->flags);
    tk_smap_free(&t->vocab);
    tk_smap_free(&t->bpe);
    free(t->bpe_keys.p);
    free(t->merges.e);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].s);
    free(t->added);
    tk_trie_free(&t->trie_raw);
    tk_trie_free(&t->trie_norm);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].a);
        free(t->norms[i].b);
        pcre2_code_free(t->norms[i].re);
    }
    free(t->norms);
    for (size_t i = 0; i < t->n_pres; i++) {
        pcre2_code_free(t->pres[i].re);
        free(t->pres[i].lit);
        free(t->pres[i].repl);
    }
    free(t->pres);
    for (size_t i = 0; i < t->n_decs; i++) {
        free(t->decs[i].a);
        free(t->decs[i].b);
    }
    free(t->decs);
    free(t->post_pre);
    free(t->post_suf);
    tk_spm_free(t->spm);
    free(t->eos_ids);
    for (size_t i = 0; i < t->n_tmpl; i++) {
        free(t->tmpl_names[i]);
        free(t->tmpl_texts[i]);
    }
    free(t->tmpl_names);
    free(t->tmpl_texts);
    free(t);
}

size_t lunar_tokenizer_vocab_size(const lunar_tokenizer_t *t) { return t->n_ids; }

const char *lunar_tokenizer_id_to_token(const lunar_tokenizer_t *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->n_ids || t->str_off[id] == UINT32_MAX) return NULL;
    if (len) *len = t->str_len[id];
    return t->strs.p + t->str_off[id];
}

int32_t lunar_tokenizer_token_to_id(const lunar_tokenizer_t *t, const char *s, size_t n)
{
    return tk_smap_get(&t->vocab, s, n);
}

int lunar_tokenizer_is_special(const lunar_tokenizer_t *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_ids && (t->flags[id] & TK_F_SPECIAL) ? 1 : 0;
}

int32_t lunar_tokenizer_bos_id(const lunar_tokenizer_t *t) { return t->bos; }
int32_t lunar_tokenizer_eos_id(const lunar_tokenizer_t *t) { return t->eos; }
int32_t lunar_tokenizer_pad_id(const lunar_tokenizer_t *t) { return t->pad; }
int32_t lunar_tokenizer_unk_id(const lunar_tokenizer_t *t) { return t->unk; }
int lunar_tokenizer_add_bos(const lunar_tokenizer_t *t) { return t->add_bos; }
const char *lunar_tokenizer_describe(const lunar_tokenizer_t *t) { return t->desc; }

size_t lunar_tokenizer_eos_ids(const lunar_tokenizer_t *t, const int32_t **ids)
{
    *ids = t->eos_ids;
    return t->n_eos;
}

const char *lunar_tokenizer_chat_template(const lunar_tokenizer_t *t, const char *name)
{
    if (!name) name = "default";
    for (size_t i = 0; i < t->n_tmpl; i++)
        if (!strcmp(t->tmpl_names[i], name)) return t->tmpl_texts[i];
    return NULL;
}

const char *lunar_tokenizer_chat_template_name(const lunar_tokenizer_t *t, size_t i)
{
    return i < t->n_tmpl ? t->tmpl_names[i] : NULL;
}
