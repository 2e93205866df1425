/* Tiny test harness shared by the ctest suites: CHECK macros that count and
 * report, a skip exit code (77) that ctest shows as "Skipped". */
#ifndef WD_TEST_UTIL_H
#define WD_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int wd_test_failures = 0;
static int wd_test_checks = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        wd_test_checks++;                                                              \
        if (!(cond)) {                                                                 \
            wd_test_failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                              \
    } while (0)

#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        wd_test_checks++;                                                              \
        if (!(cond)) {                                                                 \
            wd_test_failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECKF(fabs((double)(a) - (double)(b)) <= (tol), \
                                     "%.9g vs %.9g (tol %.3g)", (double)(a), (double)(b), (double)(tol))

/* Exit with the summary; call at the end of main. */
static inline int wd_test_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, wd_test_checks, wd_test_failures);
    return wd_test_failures ? 1 : 0;
}

/* Skip visibly (ctest SKIP_RETURN_CODE 77). */
#define WD_TEST_SKIP(...)                                                              \
    do {                                                                               \
        printf("SKIPPED: ");                                                           \
        printf(__VA_ARGS__);                                                           \
        printf("\n");                                                                  \
        exit(77);                                                                      \
    } while (0)

/* Whole file, NUL-terminated, malloc'd (NULL when unreadable); *len its size. */
static inline char *wd_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) s[n] = 0;
    if (s && len) *len = (size_t)n;
    return s;
}

/* Returns 0 when all n bytes were written. */
static inline int wd_test_write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    size_t w = fwrite(p, 1, n, f);
    return (fclose(f) != 0) | (w != n);
}

/* Writes text to dir/name and returns the path (one of 8 rotating buffers, so a
 * few paths can be used together). */
static inline const char *wd_test_write_tmp(const char *dir, const char *name, const char *text) {
    static char path[8][512];
    static int k = 0;
    char *p = path[k++ % 8];
    if (snprintf(p, 512, "%s/%s", dir, name) >= 512)
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
    else if (wd_test_write_file(p, text, strlen(text)))
        fprintf(stderr, "cannot write %s\n", p);
    return p;
}

static inline int wd_test_file_exists(const char *p) { return access(p, R_OK) == 0; }

/* Max relative L2 error ||a-b|| / max(||b||, tiny). */
static inline double wd_rel_l2(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return sqrt(num) / (den > 1e-300 ? sqrt(den) : 1.0);
}
#endif
