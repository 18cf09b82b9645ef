/*
 * tokenizer/spm.c — sentencepiece tokenizer.model (ModelProto, BPE type) for models that ship
 * no tokenizer.json (Baichuan-7B, the original Llama 2 release).
 *
 * The protobuf is read with a tiny hand-written wire-format reader (three messages, a dozen
 * fields: not worth a protobuf dependency). Encoding follows sentencepiece's bpe_model.cc:
 * whitespace escaped to U+2581 with the dummy prefix, user-defined pieces kept whole, then the
 * pair whose merged piece has the highest score merges first (leftmost on ties), and unknown
 * pieces fall back to <0xXX> byte pieces. The slow HF LlamaTokenizer feeds each stretch of
 * text between special tokens to sentencepiece separately; encode.c does the same split.
 * Only the "identity" normalization rule is implemented; a model with a precompiled
 * character map (nmt_nfkc) is refused by name.
 */
#include "tokenizer/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

enum { SP_NORMAL = 1, SP_UNKNOWN = 2, SP_CONTROL = 3, SP_USER = 4, SP_UNUSED = 5, SP_BYTE = 6 };

struct tk_spm {
    float *score;
    uint8_t *type;
    bool add_dummy_prefix, remove_extra_ws, byte_fallback;
    tk_trie user; /* user-defined pieces, matched longest-first */
    int32_t unk;
};

typedef struct { const uint8_t *p, *end; } pb;

static bool pb_varint(pb *b, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 64 && b->p < b->end; s += 7) {
        uint8_t c = *b->p++;
        *v |= (uint64_t)(c & 0x7F) << s;
        if (!(c & 0x80)) return true;
    }
    return false;
}

/* next field: number, wire type, and for length-delimited fields the sub-buffer */
static bool pb_field(pb *b, uint32_t *field, uint32_t *wt, uint64_t *val, pb *sub)
{
    uint64_t tag;
    if (!pb_varint(b, &tag)) return false;
    *field = (uint32_t)(tag >> 3);
    *wt = (uint32_t)(tag & 7);
    switch (*wt) {
    case 0: return pb_varint(b, val);
    case 1: if (b->end - b->p < 8) return false; memcpy(val, b->p, 8); b->p += 8; return true;
    case 5: {
        if (b->end - b->p < 4) return false;
        uint32_t x;
        memcpy(&x, b->p, 4);
        *val = x;
        b->p += 4;
        return true;
    }
    case 2: {
        uint64_t n;
        if (!pb_varint(b, &n) || n > (uint64_t)(b->end - b->p)) return false;
        sub->p = b->p;
        sub->end = b->p + n;
        b->p += n;
        return true;
    }
    default: return false;
    }
}

void tk_spm_free(tk_spm *s)
{
    if (!s) return;
    free(s->score);
    free(s->type);
    tk_trie_free(&s->user);
    free(s);
}

int tk_spm_load(lunar_tokenizer_t *t, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return lunar_error(LUNAR_ENOENT, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(sz > 0 ? (size_t)sz : 1);
    if (!data || fread(data, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(data);
        return lunar_error(LUNAR_EIO, "%s: read failed", path);
    }
    fclose(f);
    tk_spm *sp = calloc(1, sizeof *sp);
    t->spm = sp;
    if (!sp) {
        free(data);
        return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    }
    sp->add_dummy_prefix = sp->remove_extra_ws = true; /* proto defaults */
    int model_type = 1, rc = 0;
    bool ws_suffix = false;
    size_t cap = 0, n = 0;
    char rule[64] = "";
    size_t charsmap = 0;
    pb b = { data, data + sz }, sub, s2;
    uint32_t fld, wt;
    uint64_t v;
    while (b.p < b.end && !rc) {
        if (!pb_field(&b, &fld, &wt, &v, &sub)) { rc = lunar_error(LUNAR_EFORMAT, "%s: not a sentencepiece model", path); break; }
        if (fld == 1 && wt == 2) { /* SentencePiece */
            const char *piece = NULL;
            size_t plen = 0;
            float score = 0;
            int type = SP_NORMAL;
            while (sub.p < sub.end) {
                if (!pb_field(&sub, &fld, &wt, &v, &s2)) { rc = lunar_error(LUNAR_EFORMAT, "%s: bad piece %zu", path, n); break; }
                if (fld == 1 && wt == 2) { piece = (const char *)s2.p; plen = (size_t)(s2.end - s2.p); }
                else if (fld == 2 && wt == 5) { uint32_t x = (uint32_t)v; memcpy(&score, &x, 4); }
                else if (fld == 3 && wt == 0) type = (int)v;
            }
            if (rc) break;
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                float *fs = realloc(sp->score, cap * sizeof *fs);
                if (fs) sp->score = fs;
                uint8_t *ty = realloc(sp->type, cap);
                if (ty) sp->type = ty;
                if (!fs || !ty) { rc = lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory"); break; }
            }
            sp->score[n] = score;
            sp->type[n] = (uint8_t)type;
            if ((rc = tk_set_token(t, (int32_t)n, piece ? piece : "", plen))) break;
            if (type == SP_CONTROL || type == SP_UNKNOWN) t->flags[n] |= TK_F_SPECIAL;
            if (type == SP_BYTE) t->flags[n] |= TK_F_BYTE;
            if (type == SP_UNKNOWN) sp->unk = (int32_t)n;
            n++;
        } else if (fld == 2 && wt == 2) { /* TrainerSpec */
            while (sub.p < sub.end && pb_field(&sub, &fld, &wt, &v, &s2)) {
                if (fld == 3 && wt == 0) model_type = (int)v;
                else if (fld == 24 && wt == 0) ws_suffix = v != 0;
                else if (fld == 35 && wt == 0) sp->byte_fallback = v != 0;
            }
        } else if (fld == 3 && wt == 2) { /* NormalizerSpec */
            while (sub.p < sub.end && pb_field(&sub, &fld, &wt, &v, &s2)) {
                if (fld == 1 && wt == 2) snprintf(rule, sizeof rule, "%.*s", (int)(s2.end - s2.p), (const char *)s2.p);
                else if (fld == 2 && wt == 2) charsmap = (size_t)(s2.end - s2.p);
                else if (fld == 3 && wt == 0) sp->add_dummy_prefix = v != 0;
                else if (fld == 4 && wt == 0) sp->remove_extra_ws = v != 0;
            }
        }
    }
    free(data);
    if (rc) return rc;
    if (!n) return lunar_error(LUNAR_EFORMAT, "%s: no pieces", path);
    if (model_type != 2)
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: sentencepiece model type %s is not supported (only BPE)", path,
                           model_type == 1 ? "UNIGRAM" : model_type == 3 ? "WORD" : model_type == 4 ? "CHAR" : "?");
    if (ws_suffix) return lunar_error(LUNAR_EUNSUPPORTED, "%s: treat_whitespace_as_suffix is not supported", path);
    if (charsmap && strcmp(rule, "identity"))
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: sentencepiece normalization rule %s (precompiled charsmap) is not supported",
                           path, rule[0] ? rule : "?");
    if ((rc = tk_build_vocab_map(t))) return rc;
    for (size_t i = 0; i < n; i++) {
        if (sp->type[i] == SP_USER) {
            if ((rc = tk_trie_add(&sp->user, t->strs.p + t->str_off[i], t->str_len[i], (int32_t)i))) return rc;
        }
    }
    for (int bt = 0; bt < 256; bt++) {
        char k[8];
        snprintf(k, sizeof k, "<0x%02X>", bt);
        int32_t id = tk_smap_get(&t->vocab, k, 6);
        t->byte_id[bt] = id >= 0 && sp->type[id] == SP_BYTE ? id : -1;
    }
    t->unk = t->unk_model = sp->type[sp->unk] == SP_UNKNOWN ? sp->unk : -1;
    t->byte_fallback = sp->byte_fallback;
    /* decoding as HF's converted LlamaTokenizerFast does it */
    static const char U2581[] = "\xe2\x96\x81";
    tk_dec d[4] = {
        { .type = TK_D_REPLACE, .a = strdup(U2581), .an = 3, .b = strdup(" "), .bn = 1 },
        { .type = TK_D_BYTEFALLBACK },
        { .type = TK_D_FUSE },
        { .type = TK_D_STRIP, .a = strdup(" "), .an = 1, .start = 1, .stop = 0 },
    };
    size_t nd = sp->add_dummy_prefix ? 4 : 3;
    t->decs = calloc(4, sizeof *t->decs);
    if (!t->decs) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
    memcpy(t->decs, d, nd * sizeof *d);
    if (nd == 3) free(d[3].a);
    t->n_decs = nd;
    t->has_decoder = true;
    snprintf(t->desc, sizeof t->desc, "tokenizer.model (sentencepiece BPE%s, %zu pieces)",
             sp->byte_fallback ? ", byte_fallback" : "", n);
    return 0;
}

/* ---- encode ---------------------------------------------------------------------------- */
typedef struct { uint32_t start, len; int32_t prev, next; bool freeze; } sp_sym;
typedef struct { float score; int32_t left, right; uint32_t size; } sp_pair;

static bool pair_before(const sp_pair *a, const sp_pair *b) /* a pops before b */
{
    return a->score != b->score ? a->score > b->score : a->left < b->left;
}

typedef struct { sp_pair *h; size_t n, cap; } sp_heap;

static int hpush(sp_heap *q, sp_pair e)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        sp_pair *p = realloc(q->h, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory");
        q->h = p;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i && pair_before(&e, &q->h[(i - 1) / 2])) {
        q->h[i] = q->h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    q->h[i] = e;
    return 0;
}

static sp_pair hpop(sp_heap *q)
{
    sp_pair top = q->h[0], last = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= q->n) break;
        if (l + 1 < q->n && pair_before(&q->h[l + 1], &q->h[l])) l++;
        if (!pair_before(&q->h[l], &last)) break;
        q->h[i] = q->h[l];
        i = l;
    }
    if (q->n) q->h[i] = last;
    return top;
}

static int maybe_pair(const lunar_tokenizer_t *t, const char *s, sp_sym *sy, int32_t l, int32_t r, sp_heap *q)
{
    if (l < 0 || r < 0 || sy[l].freeze || sy[r].freeze) return 0;
    int32_t id = tk_smap_get(&t->vocab, s + sy[l].start, sy[l].len + sy[r].len);
    if (id < 0) return 0;
    uint8_t ty = t->spm->type[id];
    if (ty != SP_NORMAL && ty != SP_USER && ty != SP_UNUSED) return 0;
    return hpush(q, (sp_pair){ t->spm->score[id], l, r, sy[l].len + sy[r].len });
}

int tk_spm_encode(const lunar_tokenizer_t *t, tk_ctx *c, const char *in, size_t n, tk_ivec *out)
{
    (void)c;
    const tk_spm *sp = t->spm;
    static const char WS[] = "\xe2\x96\x81";
    tk_buf s = { 0 };
    sp_sym *sy = NULL;
    sp_heap q = { 0 };
    int rc = 0;
    /* normalize: identity rule, spaces -> U+2581, dummy prefix, optional whitespace squeeze */
    size_t i = 0, e = n;
    if (sp->remove_extra_ws) {
        while (i < e && in[i] == ' ') i++;
        while (e > i && in[e - 1] == ' ') e--;
    }
    if (i == e) return 0;
    if (sp->add_dummy_prefix && (rc = tk_buf_put(&s, WS, 3))) goto out;
    for (bool prev_sp = false; i < e && !rc; i++) {
        if (in[i] == ' ') {
            if (!(sp->remove_extra_ws && prev_sp)) rc = tk_buf_put(&s, WS, 3);
            prev_sp = true;
        } else {
            rc = tk_buf_put(&s, in + i, 1);
            prev_sp = false;
        }
    }
    if (rc) goto out;
    sy = malloc((s.n + 1) * sizeof *sy);
    if (!sy) { rc = lunar_error(LUNAR_ENOMEM, "tokenizer: out of memory"); goto out; }
    size_t ns = 0;
    for (size_t p = 0; p < s.n;) {
        uint32_t len = 0;
        bool freeze = false;
        if (sp->user.count && sp->user.first[(uint8_t)s.p[p]]) { /* longest user-defined piece */
            int32_t cur = 0;
            for (size_t k = p; k < s.n; k++) {
                int32_t ch = sp->user.n[cur].child;
                while (ch >= 0 && sp->user.n[ch].byte != (uint8_t)s.p[k]) ch = sp->user.n[ch].sibling;
                if (ch < 0) break;
                cur = ch;
                if (sp->user.n[cur].tok >= 0) len = (uint32_t)(k + 1 - p);
            }
            freeze = len > 0;
        }
        if (!len) {
            uint8_t b = (uint8_t)s.p[p];
            len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        }
        sy[ns] = (sp_sym){ (uint32_t)p, len, (int32_t)ns - 1, -1, freeze };
        if (ns) sy[ns - 1].next = (int32_t)ns;
        ns++;
        p += len;
    }
    for (size_t k = 0; k + 1 < ns && !rc; k++) rc = maybe_pair(t, s.p, sy, (int32_t)k, (int32_t)k + 1, &q);
    while (q.n && !rc) {
        sp_pair top = hpop(&q);
        sp_sym *l = &sy[top.left], *r = &sy[top.right];
        if (!l->len || !r->len || l->len + r->len != top.size) continue;
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) sy[r->next].prev = top.left;
        r->len = 0;
        if ((rc = maybe_pair(t, s.p, sy, l->prev, top.left, &q))) break;
        rc = maybe_pair(t, s.p, sy, top.left, l->next, &q);
    }
    bool prev_unk = false;
    for (int32_t k = ns ? 0 : -1; k >= 0 && !rc; k = sy[k].next) {
        int32_t id = tk_smap_get(&t->vocab, s.p + sy[k].start, sy[k].len);
        if (id >= 0 && sp->type[id] != SP_UNKNOWN) {
            rc = tk_ivec_push(out, id);
            prev_unk = false;
            continue;
        }
        if (sp->byte_fallback) {
            for (uint32_t b = 0; b < sy[k].len && !rc; b++) {
                int32_t bid = t->byte_id[(uint8_t)s.p[sy[k].start + b]];
                rc = tk_ivec_push(out, bid >= 0 ? bid : sp->unk);
            }
            continue;
        }
        if (!prev_unk) rc = tk_ivec_push(out, sp->unk); /* runs of unknowns become one <unk> */
        prev_unk = true;
    }
out:
    free(s.p);
    free(sy);
    free(q.h);
    return rc;
}
