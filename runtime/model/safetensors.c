/*
 * model/safetensors.c — the safetensors format: an 8-byte little-endian header length, a
 * JSON header {name: {dtype, shape, data_offsets: [begin, end]}}, then the tensor bytes.
 *
 * The file is memory-mapped and never copied: tensors point into the mapping. Because the
 * header comes from the internet, every number in it is checked before use: the header
 * length against the file, each dtype against the known ones, shape products for overflow,
 * each byte range against the data section and against the tensor's own size, and no two
 * ranges may overlap. A failure names the file and the tensor.
 */
#include "model/model_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* A header larger than this is not a model we load (safetensors' own limit is 100 MB). */
#define ST_MAX_HEADER (100u << 20)

typedef struct { size_t begin, end; const char *name; } range_t;

static int cmp_range(const void *a, const void *b)
{
    const range_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* A JSON number that is a non-negative integer below 2^53 (exactly representable). */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static int parse_entry(const cJSON *e, const char *what, size_t datalen, lunar_dtype_t *dt,
                       int *ndim, int64_t shape[4], size_t *begin, size_t *end)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: entry is not an object", what, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd)) return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: no dtype", what, name);
    if (dtype_from_st(jd->valuestring, dt))
        return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: unknown dtype \"%.16s\"", what, name, jd->valuestring);
    if (!cJSON_IsArray(js)) return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: no shape", what, name);
    int n = cJSON_GetArraySize(js);
    if (n > 4) return lunar_error(LUNAR_EUNSUPPORTED, "%s: tensor %s: %d dimensions (at most 4 are supported)", what, name, n);
    *ndim = n;
    for (int i = 0; i < n; i++) {
        uint64_t d;
        if (!json_uint(cJSON_GetArrayItem(js, i), &d) || d > INT64_MAX / 2)
            return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer", what, name, i);
        shape[i] = (int64_t)d;
    }
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(cJSON_GetArrayItem(jo, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(jo, 1), &en))
        return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: data_offsets must be [begin, end]", what, name);
    if (b > en || en > datalen)
        return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: data_offsets [%llu, %llu] outside the %zu data bytes",
                           what, name, (unsigned long long)b, (unsigned long long)en, datalen);
    int64_t numel = model_numel(n, shape);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / lunar_dtype_size(*dt) ||
        (uint64_t)numel * lunar_dtype_size(*dt) != en - b)
        return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: %llu bytes do not hold its shape of %s",
                           what, name, (unsigned long long)(en - b), lunar_dtype_name(*dt));
    *begin = (size_t)b;
    *end = (size_t)en;
    return 0;
}

int st_parse(const uint8_t *buf, size_t len, const char *what, st_tensor_fn fn, void *ctx)
{
    if (len < 8) return lunar_error(LUNAR_EFORMAT, "%s: %zu bytes is too short for a safetensors file", what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > len - 8)
        return lunar_error(LUNAR_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                           what, (unsigned long long)hlen, len);
    if (hlen > ST_MAX_HEADER)
        return lunar_error(LUNAR_EFORMAT, "%s: header length %llu is over the 100 MB limit", what, (unsigned long long)hlen);
    if (hlen < 2 || buf[8] != '{')
        return lunar_error(LUNAR_EFORMAT, "%s: not a safetensors file (the header is not a JSON object)", what);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)buf + 8, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lunar_error(LUNAR_EFORMAT, "%s: the safetensors header is not valid JSON", what);
    }
    size_t datalen = len - 8 - (size_t)hlen;
    int count = cJSON_GetArraySize(root);
    range_t *ranges = calloc((size_t)count + 1, sizeof *ranges);
    if (!ranges) { cJSON_Delete(root); return lunar_error(LUNAR_ENOMEM, "%s: out of memory", what); }
    int nr = 0, rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) { rc = lunar_error(LUNAR_EFORMAT, "%s: __metadata__ is not an object", what); break; }
            continue;
        }
        lunar_dtype_t dt;
        int ndim;
        int64_t shape[4] = { 0 };
        size_t b, en;
        if ((rc = parse_entry(e, what, datalen, &dt, &ndim, shape, &b, &en))) break;
        ranges[nr++] = (range_t){ b, en, e->string };
    }
    if (!rc) {
        qsort(ranges, (size_t)nr, sizeof *ranges, cmp_range);
        for (int i = 1; i < nr; i++)
            if (ranges[i].begin < ranges[i - 1].end) {
                rc = lunar_error(LUNAR_EFORMAT, "%s: tensor %s: its bytes overlap those of tensor %s", what,
                                 ranges[i].name, ranges[i - 1].name);
                break;
            }
    }
    /* Second pass hands the tensors out in header order, now that the whole header is sound. */
    if (!rc && fn) {
        cJSON_ArrayForEach(e, root) {
            if (strcmp(e->string, "__metadata__") == 0) continue;
            lunar_dtype_t dt;
            int ndim;
            int64_t shape[4] = { 0 };
            size_t b, en;
            parse_entry(e, what, datalen, &dt, &ndim, shape, &b, &en);
            if ((rc = fn(ctx, e->string, dt, ndim, shape, 8 + (size_t)hlen + b, 8 + (size_t)hlen + en))) break;
        }
    }
    free(ranges);
    cJSON_Delete(root);
    return rc;
}

typedef struct { lunar_model_t *m; int fi; } stctx_t;

static int add_one(void *ctx, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape,
                   size_t begin, size_t end)
{
    stctx_t *c = ctx;
    model_file_t *f = &c->m->files[c->fi];
    (void)end;
    int rc = model_add_tensor(c->m, name, dt, ndim, shape, (char *)f->map + begin, f->path);
    return rc < 0 ? rc : 0;
}

int st_load(lunar_model_t *m, int fi)
{
    stctx_t c = { m, fi };
    return st_parse(m->files[fi].map, m->files[fi].size, m->files[fi].path, add_one, &c);
}
