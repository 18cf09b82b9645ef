/*
 * model/load.c — lunar_model_load(): find what a model folder holds and run the stages
 * (config, weight files, --dtype, architecture binding) in order.
 *
 * Weight files are memory-mapped read-only and stay mapped for the model's life, owned by
 * lunar_model_t; tensors point into the mappings, so loading a safetensors model costs no
 * copy and no read until a backend touches the bytes. Only --dtype conversion, misaligned
 * tensors and dummy weights allocate.
 */
#include "model/model_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int64_t model_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

int model_own(lunar_model_t *m, void *buf)
{
    if (m->nowned == m->capowned) {
        int cap = m->capowned ? 2 * m->capowned : 64;
        void **p = realloc(m->owned, (size_t)cap * sizeof *p);
        if (!p) return LUNAR_ENOMEM;
        m->owned = p;
        m->capowned = cap;
    }
    m->owned[m->nowned++] = buf;
    return 0;
}

int model_add_tensor(lunar_model_t *m, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape,
                     void *data, const char *file)
{
    if (m->ntensors == m->captensors) {
        int cap = m->captensors ? 2 * m->captensors : 256;
        lunar_tensor_t *p = realloc(m->tensors, (size_t)cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", file);
        m->tensors = p;
        m->captensors = cap;
    }
    lunar_tensor_t *t = &m->tensors[m->ntensors];
    memset(t, 0, sizeof *t);
    char *copy = strdup(name);
    if (!copy || model_own(m, copy)) {
        free(copy);
        return lunar_error(LUNAR_ENOMEM, "%s: out of memory", file);
    }
    t->name = copy;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = (size_t)model_numel(ndim, shape) * lunar_dtype_size(dt);
    t->data = data;
    /* A tensor at an address its element type cannot be read from (safetensors does not
     * promise alignment) gets an aligned copy, so backends may read it as float/uint16. */
    size_t es = lunar_dtype_size(dt);
    if (data && es > 1 && (uintptr_t)data % es) {
        void *buf = malloc(t->nbytes ? t->nbytes : 1);
        if (!buf || model_own(m, buf)) {
            free(buf);
            return lunar_error(LUNAR_ENOMEM, "%s: tensor %s: out of memory", file, name);
        }
        memcpy(buf, data, t->nbytes);
        t->data = buf;
    }
    return m->ntensors++;
}

int model_map_file(lunar_model_t *m, const char *path, int *index)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lunar_error(errno == ENOENT ? LUNAR_ENOENT : LUNAR_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lunar_error(LUNAR_EIO, "%s: not a regular file", path);
    }
    void *map = NULL;
    if (st.st_size > 0) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return lunar_error(LUNAR_EIO, "%s: mmap failed: %s", path, strerror(errno));
        }
    }
    close(fd);
    model_file_t *p = realloc(m->files, (size_t)(m->nfiles + 1) * sizeof *p);
    char *pcopy = strdup(path);
    if (!p || !pcopy) {
        if (p) m->files = p;
        free(pcopy);
        if (map) munmap(map, (size_t)st.st_size);
        return lunar_error(LUNAR_ENOMEM, "%s: out of memory", path);
    }
    m->files = p;
    m->files[m->nfiles] = (model_file_t){ pcopy, map, (size_t)st.st_size };
    *index = m->nfiles++;
    return 0;
}

/* ---- folder discovery ----------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool exists(const char *dir, const char *name)
{
    char *p = path_join(dir, name);
    struct stat st;
    bool ok = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return ok;
}

/* Reads a whole small file (config.json, an index) into a NUL-terminated buffer. */
static int read_text(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return lunar_error(errno == ENOENT ? LUNAR_ENOENT : LUNAR_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            if (cap > (64u << 20)) { free(buf); fclose(f); return lunar_error(LUNAR_EFORMAT, "%s: larger than 64 MB", path); }
            char *p = realloc(buf, cap);
            if (!p) { free(buf); fclose(f); return lunar_error(LUNAR_ENOMEM, "%s: out of memory", path); }
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return lunar_error(LUNAR_EIO, "%s: read failed", path); }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Files named in an index's weight_map, each once, sorted; every one must lie beside it. */
static int index_files(const char *dir, const char *index_name, char ***out, int *count)
{
    char *path = path_join(dir, index_name), *text = NULL;
    size_t len;
    if (!path) return lunar_error(LUNAR_ENOMEM, "out of memory");
    int rc = read_text(path, &text, &len);
    if (rc) { free(path); return rc; }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        rc = lunar_error(LUNAR_EFORMAT, "%s: no \"weight_map\" object", path);
        free(path);
        return rc;
    }
    int n = 0, cap = cJSON_GetArraySize(map);
    char **files = calloc((size_t)cap + 1, sizeof *files);
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!files) break;
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || e->valuestring[0] == '.' || !e->valuestring[0]) {
            rc = lunar_error(LUNAR_EFORMAT, "%s: tensor %s: file name must be a plain name in this folder", path, e->string);
            break;
        }
        bool seen = false;
        for (int i = 0; i < n && !seen; i++) seen = strcmp(files[i], e->valuestring) == 0;
        if (!seen && !(files[n++] = strdup(e->valuestring))) break;
    }
    if (!files || (n && !files[n - 1] && !rc)) rc = lunar_error(LUNAR_ENOMEM, "out of memory");
    if (!rc && n == 0) rc = lunar_error(LUNAR_EFORMAT, "%s: weight_map is empty", path);
    cJSON_Delete(root);
    free(path);
    if (rc) {
        for (int i = 0; files && i < n; i++) free(files[i]);
        free(files);
        return rc;
    }
    qsort(files, (size_t)n, sizeof *files, cmp_str);
    *out = files;
    *count = n;
    return 0;
}

/* Files in `dir` whose names end in `suffix` (and, for .bin, start with pytorch_model), sorted. */
static int list_files(const char *dir, const char *suffix, char ***out, int *count)
{
    DIR *d = opendir(dir);
    if (!d) return lunar_error(LUNAR_ENOENT, "%s: cannot open folder: %s", dir, strerror(errno));
    char **files = NULL;
    int n = 0;
    struct dirent *de;
    size_t sl = strlen(suffix);
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l <= sl || strcmp(de->d_name + l - sl, suffix) != 0 || de->d_name[0] == '.') continue;
        if (strcmp(suffix, ".bin") == 0 && strncmp(de->d_name, "pytorch_model", 13) != 0) continue;
        char **p = realloc(files, (size_t)(n + 1) * sizeof *p);
        if (!p) break;
        files = p;
        if (!(files[n] = strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(files, (size_t)n, sizeof *files, cmp_str);
    *out = files;
    *count = n;
    return 0;
}

static void free_list(char **list, int n)
{
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}

/* Maps and parses each listed file with `parse` (st_load or pt_load). */
static int load_files(lunar_model_t *m, char **names, int n, int (*parse)(lunar_model_t *, int))
{
    for (int i = 0; i < n; i++) {
        char *p = path_join(m->dir, names[i]);
        int fi, rc = p ? model_map_file(m, p, &fi) : lunar_error(LUNAR_ENOMEM, "out of memory");
        free(p);
        if (rc) return rc;
        if ((rc = parse(m, fi))) return rc;
    }
    return 0;
}

static int load_weights(lunar_model_t *m, const char *format)
{
    bool any = strcmp(format, "auto") == 0;
    char **names = NULL;
    int n = 0, rc;
    if (any || strcmp(format, "safetensors") == 0) {
        if (exists(m->dir, "model.safetensors.index.json")) rc = index_files(m->dir, "model.safetensors.index.json", &names, &n);
        else rc = list_files(m->dir, ".safetensors", &names, &n);
        if (rc) return rc;
        if (n) {
            m->format = "safetensors";
            rc = load_files(m, names, n, st_load);
            free_list(names, n);
            return rc;
        }
        free_list(names, n);
        if (!any) return lunar_error(LUNAR_ENOENT, "%s: no *.safetensors files (--load-format safetensors)", m->dir);
    }
    if (exists(m->dir, "pytorch_model.bin.index.json")) rc = index_files(m->dir, "pytorch_model.bin.index.json", &names, &n);
    else rc = list_files(m->dir, ".bin", &names, &n);
    if (rc) return rc;
    if (n) {
        m->format = "pt";
        rc = load_files(m, names, n, pt_load);
        free_list(names, n);
        return rc;
    }
    free_list(names, n);
    return lunar_error(LUNAR_ENOENT, "%s: no weights found (*.safetensors or pytorch_model*.bin); "
                       "--load-format dummy makes random ones from config.json", m->dir);
}

static int resolve_dtype(const char *s, lunar_dtype_t torch_dtype, lunar_dtype_t *out)
{
    if (!s || !*s || strcmp(s, "auto") == 0) { *out = torch_dtype; return 0; }
    if (dtype_from_torch(s, out) || !dtype_is_float(*out))
        return lunar_error(LUNAR_EINVAL, "--dtype %s: expected auto, float16, bfloat16 or float32", s);
    return 0;
}

const char *lunar_model_resolve_dtype(const char *flag, const lunar_model_config_t *c, int on_gpu)
{
    lunar_dtype_t t;
    if (!flag || !*flag || strcmp(flag, "auto") == 0) {
        if (c->torch_dtype == LUNAR_DTYPE_F32 && on_gpu) {
            lunar_log(LUNAR_LOG_INFO, "model", "config.json says float32: running in bfloat16 on the GPU "
                      "(--dtype float32 keeps float32)");
            return "bfloat16";
        }
        t = c->torch_dtype;
    } else if (dtype_from_torch(flag, &t) || !dtype_is_float(t)) {
        return NULL;
    }
    return t == LUNAR_DTYPE_F32 ? "float32" : t == LUNAR_DTYPE_F16 ? "float16" : "bfloat16";
}

int lunar_model_load(const char *dir, const lunar_load_options_t *opts, lunar_model_t **out)
{
    lunar_load_options_t o = { 0 };
    if (opts) o = *opts;
    const char *format = o.load_format && *o.load_format ? o.load_format : "auto";
    *out = NULL;
    if (!dir) return lunar_error(LUNAR_EINVAL, "no model folder given");
    struct stat st;
    if (stat(dir, &st) != 0) return lunar_error(LUNAR_ENOENT, "%s: no such model folder", dir);
    if (!S_ISDIR(st.st_mode)) return lunar_error(LUNAR_ENOENT, "%s: not a folder (a model is a folder with config.json)", dir);
    if (strcmp(format, "auto") && strcmp(format, "safetensors") && strcmp(format, "pt") && strcmp(format, "dummy"))
        return lunar_error(LUNAR_EINVAL, "--load-format %s: expected auto, safetensors, pt or dummy", format);

    lunar_model_t *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return lunar_error(LUNAR_ENOMEM, "out of memory");
    }
    char *cpath = path_join(dir, "config.json"), *text = NULL;
    size_t len;
    int rc = cpath ? read_text(cpath, &text, &len) : LUNAR_ENOMEM;
    if (rc == LUNAR_ENOENT) rc = lunar_error(LUNAR_ENOENT, "%s: config.json is missing", dir);
    if (!rc) rc = lunar_config_parse(text, len, cpath, &m->cfg);
    free(text);
    free(cpath);
    if (!rc) rc = resolve_dtype(o.dtype, m->cfg.torch_dtype, &m->dtype);
    if (!rc) {
        if (strcmp(format, "dummy") == 0) {
            m->format = "dummy";
            rc = dummy_load(m, o.seed, !o.config_only, o.dummy_on_device != 0);
        } else {
            rc = load_weights(m, format);
        }
    }
    if (!rc && !o.config_only) rc = model_convert(m, m->dtype);
    if (!rc) rc = arch_bind(m);
    if (rc) {
        lunar_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void lunar_model_free(lunar_model_t *m)
{
    if (!m) return;
    for (int i = 0; i < m->nfiles; i++) {
        if (m->files[i].map) munmap(m->files[i].map, m->files[i].size);
        free(m->files[i].path);
    }
    free(m->files);
    for (int i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    if (m->layers)
        for (int l = 0; l < m->cfg.num_layers; l++) {
            free(m->layers[l].expert_gate);
            free(m->layers[l].expert_up);
            free(m->layers[l].expert_down);
        }
    free(m->layers);
    free(m->views);
    free(m->tensors);
    free(m->dir);
    free(m);
}

const lunar_model_config_t *lunar_model_config(const lunar_model_t *m) { return &m->cfg; }
const lunar_weights_t *lunar_model_weights(const lunar_model_t *m) { return &m->w; }
int lunar_model_tensor_count(const lunar_model_t *m) { return m->ntensors; }
lunar_dtype_t lunar_model_dtype(const lunar_model_t *m) { return m->dtype; }

const lunar_tensor_t *lunar_model_tensor(const lunar_model_t *m, int i)
{
    return i >= 0 && i < m->ntensors ? &m->tensors[i] : NULL;
}

int lunar_model_file_count(const lunar_model_t *m) { return m->nfiles; }

const char *lunar_model_file(const lunar_model_t *m, int i, uint64_t *size)
{
    if (i < 0 || i >= m->nfiles) return NULL;
    if (size) *size = m->files[i].size;
    return m->files[i].path;
}

const char *lunar_model_format(const lunar_model_t *m) { return m->format; }
