/*
 * model/model_internal.h — what the loader's files share: the model struct behind the
 * opaque lunar_model_t, the tensor list they append to, and each part's entry point.
 *
 * The loader runs in stages, one file each: config.c (config.json -> lunar_model_config_t),
 * safetensors.c / pickle.c + zip.c (weight files -> tensor list), dummy.c (tensor list from
 * the architecture alone), dtype.c (--dtype conversion), arch.c (HF names -> lunar_weights_t,
 * shape checks), load.c (folder discovery and the order of the stages). Tensors are appended
 * to one growable array; lunar_weights_t points into it only after every stage is done, so
 * reallocations never leave a dangling pointer.
 */
#ifndef LUNAR_MODEL_INTERNAL_H
#define LUNAR_MODEL_INTERNAL_H

#include "lunar.h"
#include "core/error.h"

#include <stdbool.h>

/* A weight file: mapped read-only (or NULL for a folder that has none, e.g. dummy). */
typedef struct model_file {
    char *path;
    void *map;
    size_t size;
} model_file_t;

struct lunar_model {
    lunar_model_config_t cfg;
    char *dir;
    const char *format;          /* "safetensors", "pt", "dummy" (static strings) */
    uint64_t dummy_seed;         /* dummy: the seed; dummy_deferred: matrices left to the device */
    bool dummy_deferred;
    lunar_dtype_t dtype;         /* weights' dtype after --dtype */

    lunar_tensor_t *tensors;     /* every tensor, in file order */
    int ntensors, captensors;
    lunar_tensor_t *views;       /* W_pack row views: 3 per layer, not in `tensors` */

    model_file_t *files;
    int nfiles;

    void **owned;                /* buffers the model frees: converted copies, dummy data */
    int nowned, capowned;

    lunar_weights_t w;
    lunar_layer_weights_t *layers;
};

/* Appends a tensor (name copied). Returns its index or a negative status. */
int model_add_tensor(lunar_model_t *m, const char *name, lunar_dtype_t dt, int ndim,
                     const int64_t *shape, void *data, const char *file);
/* Takes ownership of a malloc'd buffer, freed by lunar_model_free. */
int model_own(lunar_model_t *m, void *buf);
/* Element count of a shape, or -1 when it overflows int64 / size_t. */
int64_t model_numel(int ndim, const int64_t *shape);
/* Maps `path` read-only and adds it to m->files; *index gets its slot. */
int model_map_file(lunar_model_t *m, const char *path, int *index);

/* safetensors.c: parses the mapped file m->files[fi] and appends its tensors. */
int st_load(lunar_model_t *m, int fi);
/* Validates a safetensors buffer and calls `fn` per tensor; the parser behind st_load,
 * exposed for the fuzz test. */
typedef int (*st_tensor_fn)(void *ctx, const char *name, lunar_dtype_t dt, int ndim,
                            const int64_t *shape, size_t begin, size_t end);
int st_parse(const uint8_t *buf, size_t len, const char *what, st_tensor_fn fn, void *ctx);

/* pickle.c: a PyTorch zip checkpoint (pytorch_model.bin) mapped as m->files[fi]. */
int pt_load(lunar_model_t *m, int fi);
typedef int (*pt_tensor_fn)(void *ctx, const char *name, lunar_dtype_t dt, int ndim,
                            const int64_t *shape, const void *data, size_t nbytes);
int pt_parse(const uint8_t *buf, size_t len, const char *what, pt_tensor_fn fn, void *ctx);
int pt_run_pickle_for_test(const uint8_t *buf, size_t len, const char *what);

/* zip.c: the stored (uncompressed) entries of a zip archive, pointing into `buf`. */
typedef struct zip_entry {
    const char *name;   /* not NUL-terminated */
    size_t name_len;
    const uint8_t *data;
    uint64_t size;
} zip_entry_t;
int zip_open(const uint8_t *buf, size_t len, const char *what, zip_entry_t **entries, int *count);
/* The entry named prefix + name, or NULL. */
const zip_entry_t *zip_find(const zip_entry_t *e, int n, const char *prefix, size_t plen, const char *name);

/* dtype.c */
int dtype_from_st(const char *s, lunar_dtype_t *out);      /* "BF16" */
int dtype_from_torch(const char *s, lunar_dtype_t *out);   /* "bfloat16", "float" */
bool dtype_is_float(lunar_dtype_t t);
/* Converts n elements between F32/F16/BF16, rounding to nearest even. */
void dtype_convert(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n);
/* The same, split over up to 16 threads when n is large. */
void dtype_convert_parallel(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n);
int model_convert(lunar_model_t *m, lunar_dtype_t to);

/* arch.c */
typedef struct arch_tensor {
    char name[128];
    int ndim;
    int64_t shape[4];
    bool optional;          /* lm_head of a tied model */
} arch_tensor_t;
/* Checks that lunar runs this config (architecture known, no ALiBi...). */
int arch_check(const lunar_model_config_t *c, const char *what);
/* Calls fn for every tensor the architecture expects, in a stable order. */
int arch_expected(const lunar_model_config_t *c, int (*fn)(void *ctx, const arch_tensor_t *t), void *ctx);
/* Fills m->w from m->tensors, checking every shape. */
int arch_bind(lunar_model_t *m);
bool arch_layer_is_moe(const lunar_model_config_t *c, int layer);
/* Every expected tensor with its row of the table (opaque here), its layer (-1 = global)
 * and its LUNAR_PARAM_* group; arch_shard_numel() says how many of its elements one GPU
 * holds under tensor parallelism `tp` (validated by lunar_parallel_check first). */
typedef int (*arch_param_fn)(void *ctx, const void *row, const arch_tensor_t *t, int layer, int group);
int arch_params(const lunar_model_config_t *c, arch_param_fn fn, void *ctx);
int64_t arch_shard_numel(const lunar_model_config_t *c, const void *row, int tp);

/* dummy.c: the expected tensors with deterministic random data (or none when !fill). */
int dummy_load(lunar_model_t *m, uint64_t seed, bool fill, bool matrices_on_device);

#endif
