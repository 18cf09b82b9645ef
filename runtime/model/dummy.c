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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct { lunar_model_t *m; uint64_t seed; bool fill, defer; } dctx_t;

/* The per-tensor stream of (seed, name): FNV-1a over the name from a seed-dependent start. */
static uint64_t tensor_hash(uint64_t seed, const char *name)
{
    uint64_t h = seed ^ 0x6c756e6172ull;
    for (const char *s = name; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int lunar_model_dummy_params(const lunar_model_t *m, const lunar_tensor_t *t, lunar_dummy_params_t *p)
{
    if (!m || !t || !m->dummy_deferred || t->data || t->ndim != 2) return 0;
    *p = (lunar_dummy_params_t){tensor_hash(m->dummy_seed, t->name), 1.0f / sqrtf((float)t->shape[1]), 0};
    return 1;
}

/* One tensor's fill job, split by element ranges across threads. Element i's value depends
 * only on (h, i): each 64-bit hash of i/4 yields four 16-bit uniforms, so the values do not
 * depend on how the range is split. */
typedef struct {
    void *buf;
    lunar_dtype_t dt;
    uint64_t h;
    size_t begin, end;   /* multiples of 4, except the tensor's end */
    bool is_norm;
    float scale;
} fill_t;

static void *fill_range(void *arg)
{
    const fill_t *f = arg;
    float chunk[1024];
    size_t es = lunar_dtype_size(f->dt);
    for (size_t k = f->begin; k < f->end; k += 1024) {
        size_t c = f->end - k < 1024 ? f->end - k : 1024;
        for (size_t j = 0; j < c; j += 4) {
            uint64_t r = splitmix64(f->h + (k + j) / 4);
            for (size_t q = 0; q < 4 && j + q < c; q++) {
                float u = ((float)((r >> (16 * q)) & 0xffff) + 0.5f) * (2.0f / 65536.0f) - 1.0f;   /* (-1, 1) */
                chunk[j + q] = f->is_norm ? 1.0f : u * f->scale;
            }
        }
        dtype_convert(f->dt, (char *)f->buf + k * es, LUNAR_DTYPE_F32, chunk, c);
    }
    return NULL;
}

static int add_dummy(void *ctx, const arch_tensor_t *t)
{
    dctx_t *d = ctx;
    lunar_model_t *m = d->m;
    if (t->optional) return 0;    /* tied lm_head: the embedding serves */
    lunar_dtype_t dt = m->dtype;
    int i = model_add_tensor(m, t->name, dt, t->ndim, t->shape, NULL, m->dir);
    if (i < 0) return i;
    if (!d->fill || (d->defer && t->ndim == 2)) return 0; /* deferred: lunar_model_dummy_params */
    lunar_tensor_t *T = &m->tensors[i];
    size_t n = T->nbytes / lunar_dtype_size(dt);
    void *buf = malloc(T->nbytes ? T->nbytes : 1);
    if (!buf || model_own(m, buf)) {
        free(buf);
        return lunar_error(LUNAR_ENOMEM, "%s: tensor %s: no memory for %zu dummy bytes", m->dir, t->name, T->nbytes);
    }
    T->data = buf;
    uint64_t h = tensor_hash(d->seed, t->name);
    fill_t base = { buf, dt, h, 0, n, t->ndim == 1 && strstr(t->name, "norm") != NULL,
                    t->ndim == 2 ? 1.0f / sqrtf((float)t->shape[1]) : 0.02f };
    /* big tensors are filled by up to 16 threads (an 8B model is ~8e9 values) */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = n < (1u << 22) ? 1 : cpus > 16 ? 16 : cpus < 1 ? 1 : (int)cpus;
    fill_t parts[16];
    pthread_t th[16];
    int started = 0;
    size_t per = (n / (size_t)nt + 1023) & ~(size_t)1023;
    for (int k = 0; k < nt; k++) {
        parts[k] = base;
        parts[k].begin = (size_t)k * per < n ? (size_t)k * per : n;
        parts[k].end = (size_t)(k + 1) * per < n ? (size_t)(k + 1) * per : n;
        if (k > 0 && pthread_create(&th[k], NULL, fill_range, &parts[k]) == 0) started |= 1 << k;
    }
    fill_range(&parts[0]);
    for (int k = 1; k < nt; k++) {
        if (started & (1 << k)) pthread_join(th[k], NULL);
        else fill_range(&parts[k]);   /* no thread: do it here */
    }
    return 0;
}

int dummy_load(lunar_model_t *m, uint64_t seed, bool fill, bool matrices_on_device)
{
    dctx_t d = { m, seed, fill, fill && matrices_on_device };
    m->dummy_seed = seed;
    m->dummy_deferred = d.defer;
    return arch_expected(&m->cfg, add_dummy, &d);
}
