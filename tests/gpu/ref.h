/*
 * tests/gpu/ref.h — plain C11 references for the CUDA kernels (double precision where the
 * kernel accumulates in f32), and the storage conversions the tests use to build inputs.
 */
#ifndef LUNAR_TESTS_GPU_REF_H
#define LUNAR_TESTS_GPU_REF_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/model.h"

/* storage <-> float for F32/F16/BF16, round to nearest even */
void ref_store(lunar_dtype_t dt, void *dst, size_t i, float v);
float ref_load(lunar_dtype_t dt, const void *src, size_t i);
float ref_round(lunar_dtype_t dt, float v);
/* unit roundoff-ish step of the dtype: 2^-23, 2^-10, 2^-7 (one ulp at 1.0) */
double ref_eps(lunar_dtype_t dt);

/* residual may be NULL; values are the stored (rounded) ones; out/res_out are values */
void ref_rmsnorm(lunar_dtype_t dt, const float *x, const float *res, const float *w, int rows,
                 int hidden, float eps, float *out, float *res_out);
void ref_rope(float *q, float *k, const int32_t *pos, const float *inv_freq, int T, int nq, int nk,
              int hd, int rot, int q_stride, int k_stride, float af);
void ref_silu_and_mul(const float *x, int T, int inter, float *out);
/* out for the listed tokens only (rows = tokens to check); layouts as in kernels.h */
void ref_attention(float *out, const float *q, const float *kc, const float *vc, const int32_t *qs,
                   const int32_t *seq_lens, const int32_t *bt, int mbps, int num_seqs, int nh, int nkv,
                   int hd, int bs, float scale, int window, int q_stride, int out_stride,
                   const int32_t *check_tokens, int num_check);

#endif
