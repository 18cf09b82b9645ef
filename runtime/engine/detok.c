/*
 * engine/detok.c — the engine's detokenizer interface over lunar/tokenizer.h.
 *
 * The engine decodes short windows of ids (vLLM's prefix/read offsets), so a plain full decode
 * is all it needs; the tokenizer's own streaming detokenizer starts from nothing and would
 * lose the prompt context that decides, e.g., a SentencePiece word's leading space.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lunar/engine.h"
#include "lunar/tokenizer.h"

static int tok_decode(void *ctx, const int32_t *ids, int n, int skip, char *out, size_t cap)
{
    const lunar_tokenizer_t *tok = ctx;
    int32_t local[64], *kept = n <= 64 ? local : malloc((size_t)n * sizeof *kept);
    if (!kept) return lunar_error(LUNAR_ENOMEM, "detok: %d ids", n);
    size_t vocab = lunar_tokenizer_vocab_size(tok), k = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && (size_t)ids[i] < vocab) kept[k++] = ids[i];
    char *text = NULL;
    size_t len = 0;
    int rc = lunar_tokenizer_decode(tok, kept, k, skip, &text, &len);
    if (kept != local) free(kept);
    if (rc) return rc;
    if (cap) {
        size_t c = len < cap ? len : cap - 1;
        memcpy(out, text, c);
        out[c] = 0;
    }
    lunar_free(text);
    return (int)len;
}

void lunar_engine_detok_tokenizer(const struct lunar_tokenizer *tok, lunar_detok_iface_t *out)
{
    out->ctx = (void *)tok;
    out->decode = tok_decode;
}
