/*
 * rope.c — see rope.h. Each variant is transformers' function of the same name transcribed
 * as formulas (modeling_rope_utils.py, transformers 4.4x/5.x); float32 where torch computes
 * in float32.
 */
#include "runner/rope.h"

#include <math.h>

static void default_freq(double base, int rot, float *f)
{
    /* 1 / base ** (arange(0, dim, 2).float() / dim), the power taken in float32 */
    for (int i = 0; i < rot / 2; i++)
        f[i] = 1.0f / powf((float)base, (float)(2 * i) / (float)rot);
}

static double yarn_mscale(double scale, double mscale)
{
    if (scale <= 1) return 1.0;
    return 0.1 * mscale * log(scale) + 1.0;
}

static double yarn_correction_dim(double rotations, int dim, double base, double max_pos)
{
    return (dim * log(max_pos / (rotations * 2 * M_PI))) / (2 * log(base));
}

void rope_inv_freq(const lunar_model_config_t *c, int rot, float *f, float *attn_factor)
{
    const lunar_rope_t *r = &c->rope;
    *attn_factor = 1.0f;
    default_freq(r->theta, rot, f);
    switch (r->type) {
    case LUNAR_ROPE_DEFAULT:
    case LUNAR_ROPE_DYNAMIC: /* plain until a sequence outgrows the original context */
        break;
    case LUNAR_ROPE_LINEAR:
        for (int i = 0; i < rot / 2; i++) f[i] /= (float)r->factor;
        break;
    case LUNAR_ROPE_LLAMA3: {
        double old = r->original_max_position, lf = r->low_freq_factor, hf = r->high_freq_factor;
        double low_wavelen = old / lf, high_wavelen = old / hf;
        for (int i = 0; i < rot / 2; i++) {
            double inv = f[i];
            double wavelen = 2 * M_PI / inv;
            double v = wavelen > low_wavelen ? inv / r->factor : inv;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                double smooth = (old / wavelen - lf) / (hf - lf);
                v = (1 - smooth) * v / r->factor + smooth * v;
            }
            f[i] = (float)v;
        }
        break;
    }
    case LUNAR_ROPE_YARN: {
        double factor = r->factor;
        double orig = r->original_max_position > 0 ? r->original_max_position : c->max_position_embeddings;
        double af = r->attention_factor;
        if (!(af > 0)) {
            if (r->mscale > 0 && r->mscale_all_dim > 0)
                af = yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim);
            else
                af = yarn_mscale(factor, 1.0);
        }
        double beta_fast = r->beta_fast > 0 ? r->beta_fast : 32, beta_slow = r->beta_slow > 0 ? r->beta_slow : 1;
        double low = floor(yarn_correction_dim(beta_fast, rot, r->theta, orig));
        double high = ceil(yarn_correction_dim(beta_slow, rot, r->theta, orig));
        if (low < 0) low = 0;
        if (high > rot - 1) high = rot - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < rot / 2; i++) {
            float pos_freq = powf((float)r->theta, (float)(2 * i) / (float)rot);
            float extra = 1.0f / pos_freq, inter = 1.0f / ((float)factor * pos_freq);
            float ramp = (float)((i - low) / (high - low));
            if (ramp < 0) ramp = 0;
            if (ramp > 1) ramp = 1;
            float extra_factor = 1.0f - ramp;
            f[i] = inter * (1 - extra_factor) + extra * extra_factor;
        }
        *attn_factor = (float)af;
        break;
    }
    }
}

int rope_dynamic_inv_freq(const lunar_model_config_t *c, int rot, int seq_len, float *f)
{
    const lunar_rope_t *r = &c->rope;
    int orig = r->original_max_position > 0 ? r->original_max_position : c->max_position_embeddings;
    if (r->type != LUNAR_ROPE_DYNAMIC || seq_len <= orig) return 0;
    double base = r->theta * pow(r->factor * seq_len / orig - (r->factor - 1), (double)rot / (rot - 2));
    default_freq(base, rot, f);
    return 1;
}
