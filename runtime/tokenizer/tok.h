/*
 * tokenizer/tok.h — the tokenizer's private data structures, shared by its source files:
 *   load.c    tokenizer.json / configs -> this struct
 *   spm.c     sentencepiece tokenizer.model (protobuf) -> the same struct, sp-style BPE
 *   encode.c  added tokens, normalizers, pre-tokenizers, BPE, post-processor, batch threads
 *   decode.c  decoder chain, skip_special, streaming detokenizer
 *
 * Everything is built once at load and read-only afterwards; per-call scratch lives in a
 * tk_ctx taken from a mutex-guarded pool so encode never allocates on a warm path.
 */
#ifndef LUNAR_TOKENIZER_TOK_H
#define LUNAR_TOKENIZER_TOK_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lunar/tokenizer.h"

/* ---- small containers ---------------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; } tk_buf;
typedef struct { int32_t *p; size_t n, cap; } tk_ivec;

int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_put(tk_buf *b, const void *s, size_t n);
int tk_ivec_push(tk_ivec *v, int32_t x);
int tk_ivec_append(tk_ivec *v, const int32_t *x, size_t n);

/* string -> int32, keys point into memory the owner keeps alive */
typedef struct { uint64_t h; const char *k; uint32_t n; int32_t v; } tk_sent;
typedef struct { tk_sent *e; size_t cap, count; } tk_smap;
uint64_t tk_hash(const char *s, size_t n);
int tk_smap_put(tk_smap *m, const char *k, size_t n, int32_t v); /* keeps the first value */
int32_t tk_smap_get(const tk_smap *m, const char *k, size_t n);  /* -1 when absent */
void tk_smap_free(tk_smap *m);

/* (left id, right id) -> merge rank and merged id */
typedef struct { uint64_t key; int32_t rank, id; } tk_pent;
typedef struct { tk_pent *e; size_t cap, count; } tk_pmap;
int tk_pmap_put(tk_pmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tk_pent *tk_pmap_get(const tk_pmap *m, int32_t a, int32_t b);

/* ---- pipeline components ------------------------------------------------------------- */
enum { TK_N_NFC, TK_N_NFD, TK_N_NFKC, TK_N_NFKD, TK_N_LOWER, TK_N_REPLACE, TK_N_PREPEND, TK_N_STRIP };
typedef struct {
    int type;
    char *a; size_t an;   /* Replace pattern (string) / Prepend text */
    char *b; size_t bn;   /* Replace content */
    pcre2_code *re;       /* Replace with a Regex pattern */
    bool left, right;     /* Strip */
} tk_norm;

enum { TK_B_REMOVED, TK_B_ISOLATED, TK_B_PREV, TK_B_NEXT, TK_B_CONTIG };
enum { TK_P_SPLIT, TK_P_BYTELEVEL, TK_P_METASPACE };
enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };
typedef struct {
    int type;
    pcre2_code *re; bool jit;  /* Split (also Digits, Punctuation, Whitespace..., ByteLevel regex) */
    char *lit; size_t litn;    /* Split with a String pattern */
    int behavior; bool invert;
    bool add_prefix_space;     /* ByteLevel */
    char *repl; size_t repln;  /* Metaspace replacement (UTF-8) */
    int prepend_scheme; bool split;
} tk_pre;

enum { TK_D_BYTELEVEL, TK_D_METASPACE, TK_D_BYTEFALLBACK, TK_D_FUSE, TK_D_STRIP, TK_D_REPLACE };
typedef struct {
    int type;
    char *a; size_t an; char *b; size_t bn; /* Replace pattern/content, Metaspace replacement, Strip content */
    int start, stop;                        /* Strip */
    int prepend_scheme;                     /* Metaspace */
} tk_dec;

typedef struct {
    int32_t id;
    char *s; size_t n;         /* content as matched (normalized form for normalized tokens) */
    bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* byte trie for leftmost-longest matching of added tokens */
typedef struct { int32_t child, sibling, tok; uint8_t byte; } tk_tnode;
typedef struct { tk_tnode *n; size_t count, cap; uint8_t first[256]; } tk_trie;

/* ---- sentencepiece model (spm.c) ----------------------------------------------------- */
typedef struct tk_spm tk_spm;

/* ---- the tokenizer ------------------------------------------------------------------- */
typedef struct tk_ctx tk_ctx;

struct lunar_tokenizer {
    char desc[160];
    size_t n_ids, cap_ids;
    tk_buf strs;                       /* token strings, NUL-separated */
    uint32_t *str_off, *str_len;       /* per id */
    uint8_t *flags;                    /* per id: TK_F_* */
    tk_smap vocab;                     /* token string -> id (model vocab + added) */

    /* BPE model */
    tk_smap bpe;                       /* symbol -> id in BPE space (raw bytes when bytelevel) */
    tk_buf bpe_keys;                   /* storage for raw keys of `bpe` */
    tk_pmap merges;
    bool bytelevel, byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_model;                 /* model's unk_token id or -1 */
    int32_t byte_id[256];              /* bytelevel: id of each single byte; else <0xXX> ids */
    int32_t ascii_id[128];             /* not bytelevel: id of each one-character ASCII token */

    tk_added *added; size_t n_added;
    tk_trie trie_raw, trie_norm;

    tk_norm *norms; size_t n_norms;
    tk_pre *pres; size_t n_pres;
    tk_dec *decs; size_t n_decs; bool has_decoder;
    int32_t *post_pre, *post_suf; size_t n_post_pre, n_post_suf;

    tk_spm *spm;                       /* non-NULL for tokenizer.model */

    int32_t bos, eos, pad, unk;
    bool add_bos, add_eos;
    int32_t *eos_ids; size_t n_eos;
    char **tmpl_names, **tmpl_texts; size_t n_tmpl;

    pthread_mutex_t pool_mu;
    tk_ctx **pool; size_t n_pool, cap_pool;
};

/* TK_F_DECNORM: an added token with normalized=true whose content the normalizer changes
 * (TinyStories' "<unk>" is stored as "▁<unk>"). HF's decode uses that normalized string for it
 * and, since the string is not in its special set, never skips it; decode.c does the same. */
enum { TK_F_ADDED = 1, TK_F_SPECIAL = 2, TK_F_BYTE = 4, TK_F_DECNORM = 8 };

/* load.c */
int tk_load_json(lunar_tokenizer_t *t, const char *path);
int tk_load_configs(lunar_tokenizer_t *t, const char *dir);
int tk_set_token(lunar_tokenizer_t *t, int32_t id, const char *s, size_t n);
int tk_build_vocab_map(lunar_tokenizer_t *t);
int tk_build_tries(lunar_tokenizer_t *t);
int tk_compile(pcre2_code **re, bool *jit, const char *pat, size_t n, const char *where);
int tk_trie_add(tk_trie *tr, const char *s, size_t n, int32_t tok);
void tk_trie_free(tk_trie *tr);

/* spm.c */
int tk_spm_load(lunar_tokenizer_t *t, const char *path);
int tk_spm_encode(const lunar_tokenizer_t *t, tk_ctx *c, const char *s, size_t n, tk_ivec *out);
void tk_spm_free(tk_spm *s);

/* encode.c */
tk_ctx *tk_ctx_get(const lunar_tokenizer_t *t);
void tk_ctx_put(const lunar_tokenizer_t *t, tk_ctx *c);
void tk_ctx_free(tk_ctx *c);
int tk_utf8_check(const char *s, size_t n, size_t *bad);
int tk_normalize(const lunar_tokenizer_t *t, const char *s, size_t n, tk_buf *out);

#endif
