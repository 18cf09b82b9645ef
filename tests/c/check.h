/*
 * check.h — the tiny test harness of tests/c: CHECK-style assertions that count and report
 * instead of aborting, so one run shows every failure; main() ends with CHECK_DONE(), which
 * prints "N passed, N failed" and returns nonzero on any failure.
 */
#ifndef LUNAR_TEST_CHECK_H
#define LUNAR_TEST_CHECK_H
#include <math.h>
#include <stdio.h>
#include <string.h>

static _Atomic int check_passed, check_failed; /* tests may check from several threads */

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (cond) check_passed++;                                                         \
        else {                                                                            \
            check_failed++;                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);     \
        }                                                                                 \
    } while (0)

#define CHECK_MSG(cond, ...)                                                              \
    do {                                                                                  \
        if (cond) check_passed++;                                                         \
        else {                                                                            \
            check_failed++;                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                \
    do {                                                                                  \
        long long va_ = (long long)(a), vb_ = (long long)(b);                             \
        CHECK_MSG(va_ == vb_, "%s = %lld, %s = %lld", #a, va_, #b, vb_);                  \
    } while (0)

#define CHECK_STR(a, b)                                                                   \
    do {                                                                                  \
        const char *sa_ = (a), *sb_ = (b);                                                \
        CHECK_MSG(sa_ && sb_ && strcmp(sa_, sb_) == 0, "%s = \"%s\", expected \"%s\"", #a, \
                  sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                            \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                       \
    do {                                                                                  \
        const char *h_ = (hay), *n_ = (needle);                                           \
        CHECK_MSG(h_ && strstr(h_, n_), "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                             \
    do {                                                                                  \
        double da_ = (a), db_ = (b);                                                      \
        CHECK_MSG(fabs(da_ - db_) <= (tol), "%s = %.9g, %s = %.9g (tol %g)", #a, da_, #b, db_, (double)(tol)); \
    } while (0)

#define CHECK_DONE()                                                                      \
    (printf("%d passed, %d failed\n", check_passed, check_failed), check_failed ? 1 : 0)

#endif
