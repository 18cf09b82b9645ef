/*
 * model/dtype.c — element types: their names and sizes, and the f32/f16/bf16 conversions
 * behind --dtype.
 *
 * Conversions round to nearest, ties to even, as PyTorch's .to() does, so a checkpoint
 * converted here holds the same bits as one converted by torch. f16 <-> bf16 goes through
 * f32, which holds both exactly, so it too rounds once. Subnormals, infinities and NaNs keep
 * their meaning (a NaN stays a quiet NaN).
 */
#include "model/model_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct { const char *st, *name; size_t size; } dtypes[LUNAR_DTYPE_COUNT] = {
    [LUNAR_DTYPE_F32] = { "F32", "float32", 4 },
    [LUNAR_DTYPE_F16] = { "F16", "float16", 2 },
    [LUNAR_DTYPE_BF16] = { "BF16", "bfloat16", 2 },
    [LUNAR_DTYPE_I32] = { "I32", "int32", 4 },
    [LUNAR_DTYPE_U8] = { "U8", "uint8", 1 },
    [LUNAR_DTYPE_I8] = { "I8", "int8", 1 },
    [LUNAR_DTYPE_I64] = { "I64", "int64", 8 },
    [LUNAR_DTYPE_F64] = { "F64", "float64", 8 },
    [LUNAR_DTYPE_BOOL] = { "BOOL", "bool", 1 },
};

size_t lunar_dtype_size(lunar_dtype_t t)
{
    return (unsigned)t < LUNAR_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *lunar_dtype_name(lunar_dtype_t t)
{
    return (unsigned)t < LUNAR_DTYPE_COUNT ? dtypes[t].st : "?";
}

int dtype_from_st(const char *s, lunar_dtype_t *out)
{
    for (int i = 0; i < LUNAR_DTYPE_COUNT; i++)
        if (strcmp(s, dtypes[i].st) == 0) { *out = (lunar_dtype_t)i; return 0; }
    return LUNAR_EFORMAT;
}

int dtype_from_torch(const char *s, lunar_dtype_t *out)
{
    static const struct { const char *alias; lunar_dtype_t t; } aliases[] = {
        { "float", LUNAR_DTYPE_F32 }, { "half", LUNAR_DTYPE_F16 }, { "bf16", LUNAR_DTYPE_BF16 },
        { "fp16", LUNAR_DTYPE_F16 }, { "fp32", LUNAR_DTYPE_F32 },
    };
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    for (int i = 0; i < LUNAR_DTYPE_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) { *out = (lunar_dtype_t)i; return 0; }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(s, aliases[i].alias) == 0) { *out = aliases[i].t; return 0; }
    return LUNAR_EFORMAT;
}

bool dtype_is_float(lunar_dtype_t t)
{
    return t == LUNAR_DTYPE_F32 || t == LUNAR_DTYPE_F16 || t == LUNAR_DTYPE_BF16;
}

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));   /* inf, NaN */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: man * 2^-24 is exact in f32 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static uint16_t f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* result is subnormal (or zero): value / 2^-24, rounded to nearest even */
        if (a < 0x33000000u) return (uint16_t)sign;          /* < 2^-25: rounds to 0 */
        uint32_t e = a >> 23, man = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                              /* 14..24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);                /* round mantissa to 10 bits */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

void dtype_convert(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n)
{
    if (to == from) { memcpy(dst, src, n * lunar_dtype_size(to)); return; }
    /* through f32, 256 elements at a time; the type switches stay outside the inner loops */
    float tmp[256];
    const uint16_t *s16 = src;
    uint16_t *d16 = dst;
    for (size_t k = 0; k < n; k += 256) {
        size_t c = n - k < 256 ? n - k : 256;
        const float *f = tmp;
        if (from == LUNAR_DTYPE_F32) f = (const float *)src + k;
        else if (from == LUNAR_DTYPE_F16) for (size_t i = 0; i < c; i++) tmp[i] = f16_to_f32(s16[k + i]);
        else for (size_t i = 0; i < c; i++) tmp[i] = bf16_to_f32(s16[k + i]);
        if (to == LUNAR_DTYPE_F32) memcpy((float *)dst + k, f, c * 4);
        else if (to == LUNAR_DTYPE_F16) for (size_t i = 0; i < c; i++) d16[k + i] = f32_to_f16(f[i]);
        else for (size_t i = 0; i < c; i++) d16[k + i] = f32_to_bf16(f[i]);
    }
}

typedef struct { lunar_dtype_t to, from; void *dst; const void *src; size_t n; } convjob_t;

static void *conv_job(void *arg)
{
    convjob_t *j = arg;
    dtype_convert(j->to, j->dst, j->from, j->src, j->n);
    return NULL;
}

/* dtype_convert over up to 16 threads for big tensors (a 7B checkpoint is 7e9 values). */
void dtype_convert_parallel(lunar_dtype_t to, void *dst, lunar_dtype_t from, const void *src, size_t n)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = n < (1u << 22) ? 1 : cpus > 16 ? 16 : cpus < 1 ? 1 : (int)cpus;
    convjob_t jobs[16];
    pthread_t th[16];
    bool started[16] = { false };
    size_t per = n / (size_t)nt + 1, ts = lunar_dtype_size(to), fs = lunar_dtype_size(from);
    for (int k = 0; k < nt; k++) {
        size_t b = (size_t)k * per < n ? (size_t)k * per : n, e = b + per < n ? b + per : n;
        jobs[k] = (convjob_t){ to, from, (char *)dst + b * ts, (const char *)src + b * fs, e - b };
        if (k > 0) started[k] = pthread_create(&th[k], NULL, conv_job, &jobs[k]) == 0;
    }
    conv_job(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(th[k], NULL);
        else conv_job(&jobs[k]);
    }
}

/* Gives every float tensor an owned copy in `to` (tensors already in `to` stay mapped).
 * Integer tensors (quantized formats later) are left as they are. */
int model_convert(lunar_model_t *m, lunar_dtype_t to)
{
    size_t converted = 0;
    for (int i = 0; i < m->ntensors; i++) {
        lunar_tensor_t *t = &m->tensors[i];
        if (!dtype_is_float(t->dtype) || t->dtype == to) continue;
        size_t n = t->nbytes / lunar_dtype_size(t->dtype);
        void *buf = malloc(n * lunar_dtype_size(to) + 1);
        if (!buf || model_own(m, buf) != 0) {
            free(buf);
            return lunar_error(LUNAR_ENOMEM, "%s: tensor %s: no memory to convert %zu bytes to %s",
                               m->dir, t->name, n * lunar_dtype_size(to), lunar_dtype_name(to));
        }
        if (t->data) dtype_convert_parallel(to, buf, t->dtype, t->data, n);
        t->data = buf;
        t->dtype = to;
        t->nbytes = n * lunar_dtype_size(to);
        converted++;
    }
    if (converted)
        lunar_log(LUNAR_LOG_INFO, "model", "converted %zu tensors to %s", converted,
                  lunar_dtype_name(to));
    return 0;
}
