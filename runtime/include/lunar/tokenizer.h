/*
 * lunar/tokenizer.h — text <-> token ids, exactly as the model was trained.
 *
 * One tokenizer reads a Hugging Face folder: tokenizer.json (BPE model with its normalizers,
 * pre-tokenizers, post-processor and decoders) or, when there is none, a sentencepiece
 * tokenizer.model (BPE type), plus tokenizer_config.json, special_tokens_map.json and
 * generation_config.json for the special tokens, eos ids and chat templates. A component the
 * runtime does not implement is a LUNAR_EUNSUPPORTED error at load time that names it, never
 * a silent difference from Hugging Face.
 *
 * Thread safety: a loaded tokenizer is immutable; encode/decode may run on any number of
 * threads at once (scratch buffers come from an internal pool). A detokenizer stream belongs
 * to one thread at a time.
 *
 * Ownership: every buffer returned through an out-parameter (ids, text) is malloc'd for the
 * caller and freed with lunar_free(). Strings returned as `const char *` (tokens, templates)
 * belong to the tokenizer and live as long as it does.
 */
#ifndef LUNAR_TOKENIZER_H
#define LUNAR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lunar_tokenizer lunar_tokenizer_t;
typedef struct lunar_detok lunar_detok_t;

/* Frees a buffer that liblunar returned through an out-parameter (NULL is fine). */
void lunar_free(void *p);

/* Flags of lunar_tokenizer_encode. */
enum {
    LUNAR_TOK_ADD_SPECIAL = 1,   /* add the post-processor's special tokens, and bos/eos where
                                  * tokenizer_config's add_bos_token/add_eos_token ask (as
                                  * transformers does, e.g. DeepSeek-V3's bos) */
    LUNAR_TOK_SPLIT_SPECIAL = 2, /* treat special-token strings in the text as plain text */
};

/* Loads the tokenizer in folder `dir`. On success *out owns it; free with lunar_tokenizer_free. */
int lunar_tokenizer_load(const char *dir, lunar_tokenizer_t **out);
void lunar_tokenizer_free(lunar_tokenizer_t *tok);

/* Encodes `len` bytes of UTF-8 `text`. *ids (caller frees with lunar_free) receives *n ids.
 * Invalid UTF-8 is LUNAR_EINVAL with the byte offset in lunar_errmsg(). */
int lunar_tokenizer_encode(const lunar_tokenizer_t *tok, const char *text, size_t len, int flags,
                           int32_t **ids, size_t *n);

/* Encodes `count` texts on `nthreads` threads (0 = all cores; the threads live for the call
 * and share the work through an atomic counter). ids[i]/n[i] as in encode, each freed by the
 * caller with lunar_free. On failure nothing is returned (all freed) and the message names
 * the failing text's index. */
int lunar_tokenizer_encode_batch(const lunar_tokenizer_t *tok, size_t count, const char *const *texts,
                                 const size_t *lens, int flags, int nthreads, int32_t **ids, size_t *n);

/* Decodes ids to UTF-8 *text (NUL-terminated, caller frees with lunar_free), *len bytes, as
 * Python tokenizers' decode does: skip_special drops special added tokens; invalid UTF-8 from
 * byte tokens becomes U+FFFD; clean_up_tokenization_spaces is not applied (transformers 5
 * ignores it for BPE tokenizers). Unknown ids are LUNAR_ERANGE. */
int lunar_tokenizer_decode(const lunar_tokenizer_t *tok, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *len);

/* ---- vocabulary and special tokens -------------------------------------------------- */
/* Number of ids (model vocabulary plus added tokens): every id in [0, size) may be decoded. */
size_t lunar_tokenizer_vocab_size(const lunar_tokenizer_t *tok);
/* The token string of `id` as written in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>"),
 * owned by the tokenizer; NULL if out of range. *len gets its length when len is not NULL. */
const char *lunar_tokenizer_id_to_token(const lunar_tokenizer_t *tok, int32_t id, size_t *len);
/* The id of a token string, or -1. */
int32_t lunar_tokenizer_token_to_id(const lunar_tokenizer_t *tok, const char *token, size_t len);
/* 1 if `id` is a special added token (skipped by skip_special), else 0. */
int lunar_tokenizer_is_special(const lunar_tokenizer_t *tok, int32_t id);
/* Special ids from the configs, -1 when the model has none. */
int32_t lunar_tokenizer_bos_id(const lunar_tokenizer_t *tok);
int32_t lunar_tokenizer_eos_id(const lunar_tokenizer_t *tok);
int32_t lunar_tokenizer_pad_id(const lunar_tokenizer_t *tok);
int32_t lunar_tokenizer_unk_id(const lunar_tokenizer_t *tok);
/* All ids that end generation: eos_token of tokenizer_config plus generation_config's
 * eos_token_id (int or list), deduplicated. *ids points into the tokenizer. Returns the count. */
size_t lunar_tokenizer_eos_ids(const lunar_tokenizer_t *tok, const int32_t **ids);
/* 1 when encode with LUNAR_TOK_ADD_SPECIAL puts bos first. */
int lunar_tokenizer_add_bos(const lunar_tokenizer_t *tok);
/* The chat template called `name` (NULL or "default": the default one) from
 * tokenizer_config.json, string or list form; NULL when absent. */
const char *lunar_tokenizer_chat_template(const lunar_tokenizer_t *tok, const char *name);
/* The name of the i-th chat template (a string-form template is called "default"); NULL past the end. */
const char *lunar_tokenizer_chat_template_name(const lunar_tokenizer_t *tok, size_t i);
/* What was loaded, e.g. "tokenizer.json (BPE, byte-level)". Owned by the tokenizer. */
const char *lunar_tokenizer_describe(const lunar_tokenizer_t *tok);

/* ---- incremental detokenizer (streaming) -------------------------------------------- */
/* Fed ids one at a time, a stream hands out text only once it is final: never half a UTF-8
 * character, and the concatenation of everything push and flush return equals
 * lunar_tokenizer_decode(all ids, skip_special). The tokenizer must outlive the stream. */
int lunar_detok_create(const lunar_tokenizer_t *tok, int skip_special, lunar_detok_t **out);
/* Adds `id`; *text and *len receive the newly final text (possibly empty), owned by the stream
 * and valid until its next call. */
int lunar_detok_push(lunar_detok_t *d, int32_t id, const char **text, size_t *len);
/* Feeds the prompt's ids without handing out their text, so the first generated id decodes in
 * context (a sentencepiece word's leading space, a character split across the boundary).
 * Afterwards pushes + flush return exactly the part of decode(prompt + generated ids) that
 * follows the prompt's final text. Call before the first push. */
int lunar_detok_prime(lunar_detok_t *d, const int32_t *ids, size_t n);
/* Ends the stream: returns whatever is still held back. The stream can be reused afterwards
 * as a fresh one. */
int lunar_detok_flush(lunar_detok_t *d, const char **text, size_t *len);
void lunar_detok_free(lunar_detok_t *d);

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_TOKENIZER_H */
