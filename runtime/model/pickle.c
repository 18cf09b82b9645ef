/*
 * model/pickle.c — placeholder until the restricted pickle reader lands.
 */
#include "model/model_internal.h"

int pt_parse(const uint8_t *buf, size_t len, const char *what, pt_tensor_fn fn, void *ctx)
{
    (void)buf; (void)len; (void)fn; (void)ctx;
    return lunar_error(LUNAR_EUNSUPPORTED, "%s: pytorch_model.bin files are not supported yet", what);
}

int pt_load(lunar_model_t *m, int fi)
{
    return pt_parse(m->files[fi].map, m->files[fi].size, m->files[fi].path, NULL, NULL);
}
