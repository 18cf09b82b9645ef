/*
 * fixture.h — reading the JSON fixtures under tests/fixtures/ in C tests (the CPU runner's
 * transformers references and the GPU tests that reuse them). Header-only: each test is one
 * program, and check.h's CHECK_MSG reports a missing or malformed file as a failed check.
 */
#ifndef LUNAR_TEST_FIXTURE_H
#define LUNAR_TEST_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "check.h"

/* $LUNAR_SRC/tests/fixtures/<dir>/<rel> in a static buffer (valid until the next call). */
static const char *fixture_path(const char *dir, const char *rel)
{
    static char path[1024];
    const char *src = getenv("LUNAR_SRC");
    snprintf(path, sizeof path, "%s/tests/fixtures/%s/%s", src ? src : ".", dir, rel);
    return path;
}

/* The parsed file (free with cJSON_Delete), or NULL after a failed check. */
static cJSON *read_json(const char *file)
{
    FILE *f = fopen(file, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", file);
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    CHECK_MSG(j != NULL, "%s: bad JSON", file);
    return j;
}

/* A JSON array of integers into out[0..cap); returns how many were stored. */
static int int_array(const cJSON *a, int32_t *out, int cap)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) if (n < cap) out[n++] = (int32_t)e->valuedouble;
    return n;
}

#endif
