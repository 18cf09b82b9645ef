/*
 * runner/rope.h — rotary embedding frequencies for every rope_scaling variant.
 *
 * Computed on the host once (and per sequence for "dynamic") and handed to the backend's
 * rope op as an inv_freq table of rotary_dim/2 floats plus an attention factor that scales
 * cos and sin (yarn). The formulas follow transformers' modeling_rope_utils.py
 * (_compute_default/linear/dynamic_ntk/yarn/llama3_parameters), computed in float32 as
 * torch does, so our rotations match Hugging Face's to the last bits we can check.
 */
#ifndef LUNAR_RUNNER_ROPE_H
#define LUNAR_RUNNER_ROPE_H

#include "lunar/model.h"

/* inv_freq[rot/2] for sequences no longer than the original context; *attn_factor gets the
 * cos/sin scale (1 except yarn). */
void rope_inv_freq(const lunar_model_config_t *c, int rot, float *inv_freq, float *attn_factor);
/* "dynamic" (NTK) for a sequence of seq_len tokens: transformers recomputes the base once
 * the sequence outgrows the original context. Returns 0 when the plain table applies. */
int rope_dynamic_inv_freq(const lunar_model_config_t *c, int rot, int seq_len, float *inv_freq);

#endif
