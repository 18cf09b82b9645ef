/*
 * sampler/params.c — vLLM's SamplingParams defaults and validation in C, so every entry
 * point (HTTP, Lua offline API, C callers) rejects the same values with the same words: the
 * message names the field and the value ("temperature must be >= 0, got -1").
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "lunar/engine.h"

void lunar_sampling_params_default(lunar_sampling_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->n = 1;
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = -1;
    p->min_p = 0.0f;
    p->max_tokens = 16; /* vLLM's SamplingParams default; the OpenAI routes pass their own */
    p->repetition_penalty = 1.0f;
    p->logprobs = -1;
    p->prompt_logprobs = -1;
    p->skip_special_tokens = 1;
    p->detokenize = 1;
}

#define BAD(...) return lunar_error(LUNAR_EINVAL, __VA_ARGS__)

int lunar_sampling_params_validate(const lunar_sampling_params_t *p)
{
    if (!p) BAD("sampling params missing");
    if (p->n < 1) BAD("n must be at least 1, got %d", p->n);
    if (p->n > LUNAR_MAX_N) BAD("n must be at most %d, got %d", LUNAR_MAX_N, p->n);
    if (!(p->temperature >= 0) || isinf(p->temperature))
        BAD("temperature must be >= 0, got %g", (double)p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1)) BAD("top_p must be in (0, 1], got %g", (double)p->top_p);
    if (p->top_k < -1) BAD("top_k must be -1 (disable), or at least 1, got %d", p->top_k);
    if (!(p->min_p >= 0 && p->min_p <= 1)) BAD("min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        BAD("presence_penalty must be in [-2, 2], got %g", (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        BAD("frequency_penalty must be in [-2, 2], got %g", (double)p->frequency_penalty);
    if (!(p->repetition_penalty > 0) || isinf(p->repetition_penalty))
        BAD("repetition_penalty must be greater than zero, got %g", (double)p->repetition_penalty);
    if (p->max_tokens != -1 && p->max_tokens < 1)
        BAD("max_tokens must be at least 1, got %d", p->max_tokens);
    if (p->min_tokens < 0) BAD("min_tokens must be greater than or equal to 0, got %d", p->min_tokens);
    if (p->max_tokens != -1 && p->min_tokens > p->max_tokens)
        BAD("min_tokens must be less than or equal to max_tokens=%d, got %d", p->max_tokens,
            p->min_tokens);
    if (p->logprobs < -1) BAD("logprobs must be non-negative, got %d", p->logprobs);
    if (p->prompt_logprobs < -1) BAD("prompt_logprobs must be non-negative, got %d", p->prompt_logprobs);
    if (p->num_stop < 0 || (p->num_stop > 0 && !p->stop)) BAD("stop: %d strings but no array", p->num_stop);
    for (int i = 0; i < p->num_stop; i++)
        if (!p->stop[i] || !p->stop[i][0]) BAD("stop cannot contain an empty string");
    if (p->num_stop_token_ids < 0 || (p->num_stop_token_ids > 0 && !p->stop_token_ids))
        BAD("stop_token_ids: %d ids but no array", p->num_stop_token_ids);
    for (int i = 0; i < p->num_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0)
            BAD("stop_token_ids must be non-negative, got %d", (int)p->stop_token_ids[i]);
    return LUNAR_OK;
}
