/* wd_measure_read_bandwidth: how fast this machine streams memory into the
 * cores, the yardstick for memory-bound decode.
 *
 * The buffer is filled first (in parallel, non-zero, so every page is really
 * mapped: reading untouched anonymous memory would read the shared zero page
 * from cache). Each pass then streams the whole buffer once in one pool run:
 * every pool thread sums its contiguous share as 4 prefetched streams with 8
 * independent accumulators of 64-byte loads (the access pattern of the 4-row
 * GEMV). A pass is timed from the start of the run to the end of the last
 * thread, so a descheduled thread shows up as a slow pass. The result is the
 * median pass: a long read of a buffer far larger than the last-level cache
 * (callers use >= 1 GiB, at least 8x the LLC), stable run to run, where the
 * old "best 64 MiB segment" rule swung 3x between runs on a shared VM. The
 * buffer is in transparent huge pages where the kernel gives them on request,
 * as the decode's weights are. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

typedef struct {
    float *buf;
    size_t n; /* floats, a multiple of 128 */
    float *sums; /* one per task, 16 floats apart */
    int fill;
} bw_ctx;

static void bw_task(void *arg, int task, int n_tasks) {
    bw_ctx *c = arg;
    size_t blocks = c->n / 128;
    size_t b0 = blocks * task / n_tasks, b1 = blocks * (task + 1) / n_tasks;
    float *p = c->buf + b0 * 128, *e = c->buf + b1 * 128;
    if (c->fill) {
        for (float *q = p; q < e; q++) *q = 1.0f;
        return;
    }
    float s = 0;
#ifdef WD_AVX512
    /* 4 streams over the quarters of this share, 128 bytes each per step,
     * software prefetch 1 KB ahead: one core reads DRAM ~25% faster this way
     * than with a single stream, as the 4-row GEMV does. */
    size_t q = (size_t)(e - p) / 4 / 32 * 32;
    const float *s0 = p, *s1 = p + q, *s2 = p + 2 * q, *s3 = p + 3 * q;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < q; i += 32) {
        _mm_prefetch((const char *)(s0 + i) + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)(s0 + i) + 1088, _MM_HINT_T0);
        _mm_prefetch((const char *)(s1 + i) + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)(s1 + i) + 1088, _MM_HINT_T0);
        _mm_prefetch((const char *)(s2 + i) + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)(s2 + i) + 1088, _MM_HINT_T0);
        _mm_prefetch((const char *)(s3 + i) + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)(s3 + i) + 1088, _MM_HINT_T0);
        a0 = _mm512_add_ps(a0, _mm512_load_ps(s0 + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(s0 + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(s1 + i));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(s1 + i + 16));
        a4 = _mm512_add_ps(a4, _mm512_load_ps(s2 + i));
        a5 = _mm512_add_ps(a5, _mm512_load_ps(s2 + i + 16));
        a6 = _mm512_add_ps(a6, _mm512_load_ps(s3 + i));
        a7 = _mm512_add_ps(a7, _mm512_load_ps(s3 + i + 16));
    }
    for (const float *l = s3 + q; l < e; l += 16) a0 = _mm512_add_ps(a0, _mm512_load_ps(l)); /* leftover */
    a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                       _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_reduce_add_ps(a0);
#else
    float a[8] = {0};
    for (; p < e; p += 8)
        for (int i = 0; i < 8; i++) a[i] += p[i];
    for (int i = 0; i < 8; i++) s += a[i];
#endif
    c->sums[(size_t)task * 16] = s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double wd_measure_read_bandwidth(wd_pool *pool, size_t bytes, int passes, double *rates) {
    size_t n = bytes / 4 / 128 * 128;
    if (n == 0 || passes <= 0) return 0;
    int nt = wd_pool_size(pool);
    /* 2 MB aligned and, where the kernel has transparent huge pages on request
       (THP mode "madvise"), in huge pages: the weights of a decode are (copied into
       huge pages by default), and 4 KB pages cost the probe TLB misses the decode
       does not pay (it read 47-50 GB/s on 2 threads where a decode streamed 60) */
    size_t al = (size_t)2 << 20, sz = (n * 4 + al - 1) / al * al;
    float *buf = aligned_alloc(al, sz);
#ifdef MADV_HUGEPAGE
    if (buf) madvise(buf, sz, MADV_HUGEPAGE);
#endif
    float *sums = aligned_alloc(64, (size_t)nt * 16 * sizeof(float));
    double *r = malloc((size_t)passes * sizeof(double));
    if (!buf || !sums || !r) {
        free(buf);
        free(sums);
        free(r);
        return 0;
    }
    bw_ctx c = {buf, n, sums, 1};
    wd_pool_run(pool, bw_task, &c, nt);
    c.fill = 0;
    wd_pool_run(pool, bw_task, &c, nt); /* one untimed pass: TLB and page tables warm */
    volatile float sink = 0;
    for (int p = 0; p < passes; p++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        wd_pool_run(pool, bw_task, &c, nt);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double dt = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        r[p] = dt > 0 ? (double)(n * 4) / dt : 0;
        if (rates) rates[p] = r[p];
        for (int i = 0; i < nt; i++) sink += sums[(size_t)i * 16];
    }
    (void)sink;
    qsort(r, (size_t)passes, sizeof(double), cmp_double);
    double med = passes % 2 ? r[passes / 2] : 0.5 * (r[passes / 2 - 1] + r[passes / 2]);
    free(buf);
    free(sums);
    free(r);
    return med;
}
