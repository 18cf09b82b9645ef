/* test_engine_text.c — text deltas through a real tokenizer (stories260K: SentencePiece-style
 * BPE with byte fallback, so "é" or "日" spans several byte tokens). A script model emits the
 * ids of a known continuation; the streamed deltas must add up to the tokenizer's own decode
 * of prompt + output minus that of the prompt (vLLM's text), never split a character, and
 * stop at a stop string without showing any part of it. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lunar.h"

static int32_t *script_ids;
static int script_n, script_vocab;

static int script_forward(void *ctx, const lunar_batch_t *b, float *logits)
{
    (void)ctx;
    for (int i = 0; i < b->num_logits; i++) {
        int next = b->positions[b->logits_indices[i]] + 1;
        float *row = logits + (size_t)i * script_vocab;
        for (int v = 0; v < script_vocab; v++) row[v] = 0;
        if (next < script_n) row[script_ids[next]] = 10;
    }
    return 0;
}

static int valid_utf8(const char *s, int n)
{
    for (int i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (!k || i + k > n) return 0;
        for (int j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

static void run(lunar_engine_t *e, int P, const lunar_sampling_params_t *p, char *text, int *finish)
{
    lunar_request_t rq = {script_ids, P, p, 0, NULL};
    uint64_t id;
    CHECK_EQ_INT(lunar_engine_submit(e, &rq, &id), 0);
    text[0] = 0;
    int len = 0;
    while (lunar_engine_num_unfinished(e)) {
        lunar_engine_step(e);
        const lunar_event_t *ev;
        int n = lunar_engine_poll(e, &ev);
        for (int i = 0; i < n; i++) {
            CHECK_MSG(valid_utf8(ev[i].text, ev[i].text_len), "delta \"%s\" splits a character", ev[i].text);
            memcpy(text + len, ev[i].text, (size_t)ev[i].text_len);
            len += ev[i].text_len;
            text[len] = 0;
            if (ev[i].finish_reason) *finish = ev[i].finish_reason;
        }
    }
}

int main(void)
{
    const char *shared = getenv("LUNAR_SHARED");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/stories260K", shared ? shared : "../shared");
    lunar_tokenizer_t *tok;
    if (lunar_tokenizer_load(dir, &tok)) {
        printf("skipped: %s\n", lunar_errmsg());
        return CHECK_DONE();
    }
    const char *prompt = "Once upon a time";
    const char *cont = " there was a caf\xC3\xA9 named \xC2\xABUber\xC2\xBB \xE6\x97\xA5\xE6\x9C\xAC and a dog.";
    char all[256];
    snprintf(all, sizeof all, "%s%s", prompt, cont);
    int32_t *pids, *aids;
    size_t np, na;
    CHECK_EQ_INT(lunar_tokenizer_encode(tok, prompt, strlen(prompt), LUNAR_TOK_ADD_SPECIAL, &pids, &np), 0);
    CHECK_EQ_INT(lunar_tokenizer_encode(tok, all, strlen(all), LUNAR_TOK_ADD_SPECIAL, &aids, &na), 0);
    CHECK(na > np && !memcmp(pids, aids, np * sizeof *pids)); /* the prompt's ids prefix the whole */
    script_ids = aids;
    script_n = (int)na;
    script_vocab = (int)lunar_tokenizer_vocab_size(tok);

    /* the reference: decode(prompt + output) minus decode(prompt) */
    char *full, *ptext;
    size_t flen, plen;
    CHECK_EQ_INT(lunar_tokenizer_decode(tok, aids, na, 1, &full, &flen), 0);
    CHECK_EQ_INT(lunar_tokenizer_decode(tok, pids, np, 1, &ptext, &plen), 0);
    CHECK(flen > plen && !strncmp(full, ptext, plen));
    const char *want = full + plen;

    lunar_engine_config_t c;
    lunar_engine_config_default(&c);
    c.num_blocks = 32;
    c.max_model_len = 256;
    c.stats_interval_s = 0;
    lunar_forward_iface_t f = {NULL, script_vocab, script_forward, NULL};
    lunar_detok_iface_t d;
    lunar_engine_detok_tokenizer(tok, &d);
    lunar_engine_t *e;
    CHECK_EQ_INT(lunar_engine_create(&c, &f, &d, &e), 0);
    lunar_sampling_params_t p;
    lunar_sampling_params_default(&p);
    p.temperature = 0;
    p.max_tokens = (int)(na - np);
    char text[512];
    int finish = 0;
    run(e, (int)np, &p, text, &finish);
    CHECK_STR(text, want);
    CHECK_EQ_INT(finish, LUNAR_FINISH_LENGTH);
    printf("streamed: \"%s\"\n", text);

    const char *stop[] = {"\xC2\xABUb"};
    p.stop = stop;
    p.num_stop = 1;
    run(e, (int)np, &p, text, &finish);
    CHECK_STR(text, " there was a caf\xC3\xA9 named ");
    CHECK_EQ_INT(finish, LUNAR_FINISH_STOP);

    lunar_engine_free(e);
    lunar_free(pids);
    lunar_free(aids);
    lunar_free(full);
    lunar_free(ptext);
    lunar_tokenizer_free(tok);
    return CHECK_DONE();
}
