/*
 * bench/tokenizer_bench.c — encode throughput of lunar's tokenizer on a 10 MB mixed-language
 * corpus, single-threaded and on all cores; bench/tokenizer_hf.py measures Hugging Face's
 * `tokenizers` on the very same documents (written by --write-corpus) for the peer column.
 *
 *   bench/tokenizer.sh MODEL_DIR...            (builds this against build/liblunar.so)
 *   tokenizer_bench [--mb 10] [--write-corpus F] [--json] NAME=DIR...
 *
 * The corpus is deterministic: documents of about 4 KB stitched from the words and texts of
 * tests/fixtures/tokenizer/corpus.json (English, code, JSON, Chinese, Japanese, Korean,
 * Arabic, Hindi, emoji, digits, whitespace) with a fixed-seed PRNG, plus random numbers, so
 * every run and the HF peer see the same bytes.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lunar.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint32_t st = 2463534242u;
static uint32_t rnd(uint32_t n)
{
    st ^= st << 13;
    st ^= st >> 17;
    st ^= st << 5;
    return st % n;
}

typedef struct { const char *p; size_t n; } span;

int main(int argc, char **argv)
{
    double mb = 10;
    const char *write_corpus = NULL, *corpus_path = "tests/fixtures/tokenizer/corpus.json";
    int json = 0, first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--mb") && first + 1 < argc) mb = atof(argv[++first]);
        else if (!strcmp(argv[first], "--write-corpus") && first + 1 < argc) write_corpus = argv[++first];
        else if (!strcmp(argv[first], "--corpus") && first + 1 < argc) corpus_path = argv[++first];
        else if (!strcmp(argv[first], "--json")) json = 1;
        else { fprintf(stderr, "unknown option %s\n", argv[first]); return 2; }
    }
    FILE *f = fopen(corpus_path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s (run from the repository root)\n", corpus_path); return 1; }
    fseek(f, 0, SEEK_END);
    long fl = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *src = malloc((size_t)fl + 1);
    if (fread(src, 1, (size_t)fl, f) != (size_t)fl) return 1;
    src[fl] = 0;
    fclose(f);
    cJSON *c = cJSON_Parse(src);
    free(src);
    int nt = cJSON_GetArraySize(c);
    /* word pool: whitespace-separated pieces of every text, and the whole texts */
    span *words = malloc(sizeof *words * 200000);
    const char **texts = malloc(sizeof *texts * (size_t)nt);
    size_t nw = 0;
    for (int i = 0; i < nt; i++) {
        const char *t = cJSON_GetObjectItem(cJSON_GetArrayItem(c, i), "text")->valuestring;
        texts[i] = t;
        for (const char *p = t; *p;) {
            while (*p == ' ' || *p == '\n') p++;
            const char *s = p;
            while (*p && *p != ' ' && *p != '\n') p++;
            if (p > s && nw < 200000) words[nw++] = (span){ s, (size_t)(p - s) };
        }
    }
    size_t target = (size_t)(mb * 1e6), total = 0, ndocs = 0, cap = 4096;
    char **docs = malloc(cap * sizeof *docs);
    size_t *lens = malloc(cap * sizeof *lens);
    static const char *seps[] = { " ", " ", " ", " ", " ", "\n", "\n\n", ", ", ". ", "\t", "  " };
    while (total < target) {
        size_t want = 2000 + rnd(4000), n = 0;
        char *d = malloc(want + 8192);
        while (n < want) {
            const char *s;
            size_t k;
            char num[32];
            uint32_t r = rnd(100);
            if (r < 8) { s = texts[rnd((uint32_t)nt)]; k = strlen(s); }
            else if (r < 12) { k = (size_t)snprintf(num, sizeof num, "%u", rnd(1000000)); s = num; }
            else { span w = words[rnd((uint32_t)nw)]; s = w.p; k = w.n; }
            if (k > 4000) k = 4000;
            memcpy(d + n, s, k);
            n += k;
            const char *sep = seps[rnd(sizeof seps / sizeof *seps)];
            memcpy(d + n, sep, strlen(sep));
            n += strlen(sep);
        }
        if (ndocs == cap) {
            cap *= 2;
            docs = realloc(docs, cap * sizeof *docs);
            lens = realloc(lens, cap * sizeof *lens);
        }
        docs[ndocs] = d;
        lens[ndocs++] = n;
        total += n;
    }
    if (write_corpus) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < ndocs; i++) {
            char *z = malloc(lens[i] + 1);
            memcpy(z, docs[i], lens[i]);
            z[lens[i]] = 0;
            cJSON_AddItemToArray(arr, cJSON_CreateString(z));
            free(z);
        }
        char *s = cJSON_PrintUnformatted(arr);
        FILE *o = fopen(write_corpus, "wb");
        fputs(s, o);
        fclose(o);
        free(s);
        cJSON_Delete(arr);
    }
    char host[256] = "?";
    gethostname(host, sizeof host);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (!json)
        printf("# lunar tokenizer encode throughput: %.2f MB in %zu docs, %ld cores, host %s, lunar %s\n", total / 1e6, ndocs,
               cores, host, lunar_version());
    if (!json) printf("%-14s %12s %14s %14s %10s\n", "tokenizer", "tokens", "1 thread MB/s", "all cores MB/s", "load s");
    for (int a = first; a < argc; a++) {
        char name[128];
        const char *eq = strchr(argv[a], '='), *dir = eq ? eq + 1 : argv[a];
        snprintf(name, sizeof name, "%.*s", (int)(eq ? eq - argv[a] : (long)strlen(argv[a])), argv[a]);
        lunar_tokenizer_t *tok;
        double t0 = now();
        if (lunar_tokenizer_load(dir, &tok)) { fprintf(stderr, "%s: %s\n", name, lunar_errmsg()); continue; }
        double tload = now() - t0;
        size_t ntok = 0;
        uint64_t sum = 0; /* h = h*1000003 + id + 1 over all ids in order, as tokenizer_hf.py */
        double best1 = 1e30, bestn = 1e30;
        for (int rep = 0; rep < 3; rep++) { /* pass 0 warms caches; best of the rest */
            ntok = 0;
            sum = 0;
            t0 = now();
            for (size_t i = 0; i < ndocs; i++) {
                int32_t *ids;
                size_t n;
                if (lunar_tokenizer_encode(tok, docs[i], lens[i], 0, &ids, &n)) { fprintf(stderr, "%s\n", lunar_errmsg()); return 1; }
                ntok += n;
                for (size_t k = 0; k < n; k++) sum = sum * 1000003u + (uint64_t)ids[k] + 1;
                lunar_free(ids);
            }
            double t = now() - t0;
            if (rep && t < best1) best1 = t;
        }
        int32_t **ids = malloc(ndocs * sizeof *ids);
        size_t *ns = malloc(ndocs * sizeof *ns);
        for (int rep = 0; rep < 3; rep++) {
            t0 = now();
            if (lunar_tokenizer_encode_batch(tok, ndocs, (const char *const *)docs, lens, 0, 0, ids, ns)) return 1;
            double t = now() - t0;
            if (rep && t < bestn) bestn = t;
            for (size_t i = 0; i < ndocs; i++) lunar_free(ids[i]);
        }
        free(ids);
        free(ns);
        if (json)
            printf("{\"tokenizer\":\"%s\",\"bytes\":%zu,\"docs\":%zu,\"tokens\":%zu,\"checksum\":%llu,\"mbs_1\":%.3f,\"mbs_all\":%.3f,\"cores\":%ld,\"load_s\":%.3f}\n",
                   name, total, ndocs, ntok, (unsigned long long)sum, total / 1e6 / best1, total / 1e6 / bestn, cores, tload);
        else
            printf("%-14s %12zu %14.2f %14.2f %10.2f\n", name, ntok, total / 1e6 / best1, total / 1e6 / bestn, tload);
        fflush(stdout);
        lunar_tokenizer_free(tok);
    }
    for (size_t i = 0; i < ndocs; i++) free(docs[i]);
    free(docs);
    free(lens);
    free(words);
    free(texts);
    cJSON_Delete(c);
    return 0;
}
