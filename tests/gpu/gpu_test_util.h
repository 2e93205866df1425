/* What the GPU tests share: device copies that abort on failure, outputs
 * poisoned with NaN before a kernel runs, downloads after a synchronise that
 * reports the kernel's error, and the relative L2 error with NaN as +inf.
 * Header-only (static functions), next to tests/test_util.h. */
#ifndef WD_GPU_TEST_UTIL_H
#define WD_GPU_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_backend.h"
#include "tests/test_util.h"

static inline void *wd_gpu_up(const void *h, size_t bytes) {
    void *d = wd_cuda_malloc(bytes);
    if (!d || wd_cuda_upload(d, h, bytes)) {
        fprintf(stderr, "upload of %zu bytes failed\n", bytes);
        abort();
    }
    return d;
}

/* bytes on the device, every float of them NaN */
static inline void *wd_gpu_poisoned(size_t bytes) {
    void *d = wd_cuda_malloc(bytes);
    if (!d || wd_cuda_poison(d, bytes)) abort();
    return d;
}

/* synchronise (a kernel's error shows here), then copy bytes back */
static inline void *wd_gpu_down(const void *d, size_t bytes) {
    void *h = malloc(bytes);
    int rc = wd_cuda_sync();
    if (!h || rc || wd_cuda_download(h, d, bytes)) {
        fprintf(stderr, "kernel or download failed: %s\n", wd_cuda_error_string(rc));
        abort();
    }
    return h;
}

/* Relative L2 error of a against b; NaN anywhere gives +inf. */
static inline double wd_gpu_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

#define WD_GPU_CHECK_ERR(name, a, b, n, tol)                                                   \
    do {                                                                                       \
        double e_ = wd_gpu_rel_err((a), (b), (n));                                             \
        CHECKF(e_ <= (tol), "%s: relative L2 error %.3g > %.3g", name, e_, (double)(tol));     \
        printf("  %-44s rel L2 %.3g\n", name, e_);                                             \
    } while (0)
#endif
