/*
 * model/dummy.c — --load-format dummy: the tensors config.json implies, filled with
 * deterministic random values, so a benchmark of an 8B shape needs only its config.json.
 *
 * Each tensor's values depend only on (seed, tensor name, element index): the same model is
 * reproduced by any loader, in any order, on any machine, and a GPU kernel could regenerate
 * them on the device. Norm weights are 1 and matrices are uniform in ±1/sqrt(in_features),
 * so activations stay O(1) through many layers and a benchmark does not run on NaNs/denormals
 * (vLLM's dummy weights are uniform ±1e-3 for everything; its outputs are meaningless too,
 * but its activations shrink towards zero layer by layer).
 */
#include "model/model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct { lunar_model_t *m; uint64_t seed; bool fill; } dctx_t;

static int add_dummy(void *ctx, const arch_tensor_t *t)
{
    dctx_t *d = ctx;
    lunar_model_t *m = d->m;
    if (t->optional) return 0;    /* tied lm_head: the embedding serves */
    lunar_dtype_t dt = m->dtype;
    int i = model_add_tensor(m, t->name, dt, t->ndim, t->shape, NULL, m->dir);
    if (i < 0) return i;
    if (!d->fill) return 0;
    lunar_tensor_t *T = &m->tensors[i];
    size_t n = T->nbytes / lunar_dtype_size(dt);
    void *buf = malloc(T->nbytes ? T->nbytes : 1);
    if (!buf || model_own(m, buf)) {
        free(buf);
        return lunar_error(LUNAR_ENOMEM, "%s: tensor %s: no memory for %zu dummy bytes", m->dir, t->name, T->nbytes);
    }
    T->data = buf;
    bool is_norm = t->ndim == 1 && strstr(t->name, "norm") != NULL;
    float scale = t->ndim == 2 ? 1.0f / sqrtf((float)t->shape[1]) : 0.02f;
    uint64_t h = d->seed ^ 0x6c756e6172ull;
    for (const char *s = t->name; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    /* converting in chunks keeps one code path for every dtype */
    float chunk[1024];
    size_t es = lunar_dtype_size(dt);
    for (size_t k = 0; k < n; k += 1024) {
        size_t c = n - k < 1024 ? n - k : 1024;
        for (size_t j = 0; j < c; j++) {
            uint64_t r = splitmix64(h + k + j);
            float u = (float)(r >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;   /* [-1, 1) */
            chunk[j] = is_norm ? 1.0f : u * scale;
        }
        dtype_convert(dt, (char *)buf + k * es, LUNAR_DTYPE_F32, chunk, c);
    }
    return 0;
}

int dummy_load(lunar_model_t *m, uint64_t seed, bool fill)
{
    dctx_t d = { m, seed, fill };
    return arch_expected(&m->cfg, add_dummy, &d);
}
