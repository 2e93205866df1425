/* bench_kernels: CPU kernel figures for this machine.
 *
 *   bench_kernels [--threads N] [--quick]
 *
 * Prints: measured read bandwidth (and a buffer-size sweep, to show where the
 * caches end); decode matmul (n = 1) GB/s and % of bandwidth per dtype and
 * shape, with weights cycled through a >= 1 GiB ring of copies so they come
 * from DRAM; a synthetic "mini" Mixtral decode step (hidden 512, 8 layers,
 * 8 heads / 2 KV heads, FFN 1792, 8 experts top-2 picked at random per token,
 * vocab 32000) as bytes of weights per token over time; prefill GEMM GFLOP/s
 * (n = 128) against the nominal FP32 peak; wd_pool_run overhead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 20);
}

static double cpu_mhz(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    char line[256];
    double mhz = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "cpu MHz", 7)) {
            char *c = strchr(line, ':');
            if (c) mhz = atof(c + 1);
            break;
        }
    fclose(f);
    return mhz;
}

/* Weights filled with byte 0x3c: finite in every dtype (f32 0.0115, f16/bf16
 * ~1.06 / 0.0115, Q8_0 scale 1.06 and quants 60). */
static void *alloc_weights(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p) memset(p, 0x3c, bytes);
    return p;
}

static void empty_task(void *ctx, int task, int n_tasks) { (void)ctx, (void)task, (void)n_tasks; }

/* ---- synthetic mini Mixtral decode ------------------------------------- */
typedef struct {
    void *wq, *wk, *wv, *wo, *gate, *w1[8], *w2[8], *w3[8];
} mini_layer;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Returns the median seconds per token; *best gets the fastest token. */
static double bench_mini(wd_pool *pool, wd_dtype dt, int tokens, double *bytes_per_tok,
                         double *best) {
    enum { H = 512, L = 8, NH = 8, NKV = 2, HD = 64, F = 1792, E = 8, K = 2, V = 32000, CTX = 512 };
    mini_layer lay[L];
    memset(lay, 0, sizeof lay);
    int ok = 1;
    for (int l = 0; l < L; l++) {
        ok &= !!(lay[l].wq = alloc_weights(wd_dtype_bytes(dt, (int64_t)NH * HD * H)));
        ok &= !!(lay[l].wk = alloc_weights(wd_dtype_bytes(dt, (int64_t)NKV * HD * H)));
        ok &= !!(lay[l].wv = alloc_weights(wd_dtype_bytes(dt, (int64_t)NKV * HD * H)));
        ok &= !!(lay[l].wo = alloc_weights(wd_dtype_bytes(dt, (int64_t)H * NH * HD)));
        ok &= !!(lay[l].gate = alloc_weights(wd_dtype_bytes(dt, (int64_t)E * H)));
        for (int e = 0; e < E; e++) {
            ok &= !!(lay[l].w1[e] = alloc_weights(wd_dtype_bytes(dt, (int64_t)F * H)));
            ok &= !!(lay[l].w2[e] = alloc_weights(wd_dtype_bytes(dt, (int64_t)H * F)));
            ok &= !!(lay[l].w3[e] = alloc_weights(wd_dtype_bytes(dt, (int64_t)F * H)));
        }
    }
    void *lm = alloc_weights(wd_dtype_bytes(dt, (int64_t)V * H));
    float *kc = calloc((size_t)L * CTX * NKV * HD, 4), *vc = calloc((size_t)L * CTX * NKV * HD, 4);
    float *x = calloc(H, 4), *xn = calloc(H, 4), *q = calloc(NH * HD, 4), *att = calloc(NH * HD, 4);
    float *h = calloc(H, 4), *logits = calloc(V, 4), *probs = calloc(E, 4), *norm = calloc(H, 4);
    float *scr = calloc(wd_attention_scratch(1, NH, CTX) + 2 * F, 4);
    double t = -1;
    double *tt = calloc((size_t)tokens, sizeof(double));
    if (ok && tt && lm && kc && vc && x && xn && q && att && h && logits && probs && norm && scr) {
        for (int i = 0; i < H; i++) x[i] = 0.01f * (i % 7), norm[i] = 1;
        double per_tok = (double)L * (wd_dtype_bytes(dt, (int64_t)(2 * NH * HD + 2 * NKV * HD) * H) +
                                      wd_dtype_bytes(dt, (int64_t)E * H) +
                                      K * 3 * wd_dtype_bytes(dt, (int64_t)F * H)) +
                         (double)wd_dtype_bytes(dt, (int64_t)V * H);
        *bytes_per_tok = per_tok;
        int pos0 = 64; /* a short context already in the cache */
        for (int tok = -2; tok < tokens; tok++) { /* two warm-up tokens */
            double t0 = now_s();
            int pos = pos0 + (tok < 0 ? 0 : tok);
            for (int l = 0; l < L; l++) {
                float *kl = kc + (size_t)l * CTX * NKV * HD, *vl = vc + (size_t)l * CTX * NKV * HD;
                wd_rmsnorm(xn, x, norm, H, 1e-5f);
                wd_matmul(pool, q, xn, lay[l].wq, dt, 1, NH * HD, H);
                wd_matmul(pool, kl + (size_t)pos * NKV * HD, xn, lay[l].wk, dt, 1, NKV * HD, H);
                wd_matmul(pool, vl + (size_t)pos * NKV * HD, xn, lay[l].wv, dt, 1, NKV * HD, H);
                wd_rope(q, NH, HD, pos, 1e6f);
                wd_rope(kl + (size_t)pos * NKV * HD, NKV, HD, pos, 1e6f);
                wd_attention(pool, att, q, kl, vl, 1, pos, NH, NKV, HD, scr);
                wd_matmul(pool, h, att, lay[l].wo, dt, 1, H, NH * HD);
                for (int i = 0; i < H; i++) x[i] += 1e-3f * h[i];
                wd_rmsnorm(xn, x, norm, H, 1e-5f);
                wd_matmul(pool, probs, xn, lay[l].gate, dt, 1, E, H);
                wd_softmax(probs, E);
                /* synthetic weights route uniformly: pick two experts at random,
                 * as real routing spreads tokens over all experts */
                int e0 = (int)(rnd() % E), e1 = (int)(rnd() % (E - 1));
                if (e1 >= e0) e1++;
                int es[2] = {e0, e1};
                for (int j = 0; j < K; j++) {
                    int e = es[j];
                    wd_expert_ffn(pool, h, xn, 1, lay[l].w1[e], lay[l].w3[e], lay[l].w2[e], dt, H,
                                  F, scr + wd_attention_scratch(1, NH, CTX));
                    for (int i = 0; i < H; i++) x[i] += 0.5f * 1e-3f * h[i];
                }
            }
            wd_rmsnorm(xn, x, norm, H, 1e-5f);
            wd_matmul(pool, logits, xn, lm, dt, 1, V, H);
            if (tok >= 0) tt[tok] = now_s() - t0;
        }
        qsort(tt, (size_t)tokens, sizeof(double), cmp_double);
        t = tt[tokens / 2];
        *best = tt[0];
    }
    free(tt);
    for (int l = 0; l < L; l++) {
        free(lay[l].wq), free(lay[l].wk), free(lay[l].wv), free(lay[l].wo), free(lay[l].gate);
        for (int e = 0; e < E; e++) free(lay[l].w1[e]), free(lay[l].w2[e]), free(lay[l].w3[e]);
    }
    free(lm), free(kc), free(vc), free(x), free(xn), free(q), free(att), free(h), free(logits);
    free(probs), free(norm), free(scr);
    return t;
}

/* n = 1 matmul throughput from DRAM: cycle through a ring of copies. */
static double bench_gemv(wd_pool *pool, wd_dtype dt, int rows, int cols, double ring_bytes,
                         double seconds) {
    size_t one = wd_dtype_bytes(dt, (int64_t)rows * cols);
    int copies = (int)(ring_bytes / one) + 1;
    if (copies < 2) copies = 2;
    char *ring = alloc_weights(one * copies);
    float *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows);
    double gbs = -1;
    if (ring && x && y) {
        for (int i = 0; i < cols; i++) x[i] = 1.0f / (1 + i % 5);
        for (int c = 0; c < copies; c++) wd_matmul(pool, y, x, ring + one * c, dt, 1, rows, cols);
        /* best of 10 windows: other processes on a shared machine only slow a window */
        long next = 0;
        for (int win = 0; win < 10; win++) {
            long calls = 0;
            double t0 = now_s(), t;
            do {
                wd_matmul(pool, y, x, ring + one * (size_t)(next++ % copies), dt, 1, rows, cols);
                calls++;
                t = now_s() - t0;
            } while (t < seconds / 10);
            double g = (double)one * calls / t / 1e9;
            if (g > gbs) gbs = g;
        }
    }
    free(ring), free(x), free(y);
    return gbs;
}

static double bench_gemm(wd_pool *pool, wd_dtype dt, int n, int rows, int cols, double seconds) {
    size_t wb = wd_dtype_bytes(dt, (int64_t)rows * cols);
    void *w = alloc_weights(wb);
    float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows);
    double gf = -1;
    if (w && x && y) {
        for (int i = 0; i < n * cols; i++) x[i] = 1.0f / (1 + i % 5);
        wd_matmul(pool, y, x, w, dt, n, rows, cols);
        for (int win = 0; win < 10; win++) { /* best of 10 windows */
            long calls = 0;
            double t0 = now_s(), t;
            do {
                wd_matmul(pool, y, x, w, dt, n, rows, cols);
                calls++;
                t = now_s() - t0;
            } while (t < seconds / 10);
            double g = 2.0 * n * rows * cols * calls / t / 1e9;
            if (g > gf) gf = g;
        }
    }
    free(w), free(x), free(y);
    return gf;
}

int main(int argc, char **argv) {
    int threads = 0, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_kernels [--threads N] [--quick]\n"
                   "  --threads N  pool threads (default: online CPUs)\n"
                   "  --quick      shorter timings and a 256 MiB bandwidth buffer\n"
                   "Prints read bandwidth, decode matmul GB/s (%% of bandwidth) per dtype,\n"
                   "a synthetic mini-Mixtral decode step, prefill GEMM GFLOP/s and the\n"
                   "thread pool's per-run overhead.\n");
            return 0;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
            if (threads <= 0) {
                fprintf(stderr, "bench_kernels: --threads wants a positive number\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else {
            fprintf(stderr, "bench_kernels: unknown argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    wd_pool *pool = wd_pool_create(threads);
    if (!pool) {
        fprintf(stderr, "bench_kernels: cannot create the thread pool\n");
        return 1;
    }
    int nth = wd_pool_size(pool);
    double secs = quick ? 0.15 : 0.5;
    size_t bw_bytes = quick ? (size_t)256 << 20 : (size_t)1 << 30;
    printf("bench_kernels: %d thread%s\n\n", nth, nth > 1 ? "s" : "");

    /* pool overhead: back-to-back runs (workers spinning) and after idling */
    for (int i = 0; i < 1000; i++) wd_pool_run(pool, empty_task, NULL, nth);
    int reps = 200000;
    double t0 = now_s();
    for (int i = 0; i < reps; i++) wd_pool_run(pool, empty_task, NULL, nth);
    double hot_us = (now_s() - t0) / reps * 1e6;
    double cold_us = 0;
    for (int i = 0; i < 20; i++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        double a = now_s();
        wd_pool_run(pool, empty_task, NULL, nth);
        cold_us += (now_s() - a) / 20 * 1e6;
    }
    printf("wd_pool_run overhead (empty tasks, %d tasks): %.2f us back-to-back, %.1f us after 2 ms idle\n\n",
           nth, hot_us, cold_us);

    printf("read bandwidth by buffer size (best of reps):\n");
    size_t sweep[] = {(size_t)8 << 20, (size_t)64 << 20, (size_t)256 << 20, bw_bytes};
    double bw = 0;
    for (int i = quick ? 3 : 0; i < 4; i++) {
        double b = wd_measure_read_bandwidth(pool, sweep[i], sweep[i] < ((size_t)256 << 20) ? 20 : 5);
        printf("  %6zu MiB: %6.1f GB/s\n", sweep[i] >> 20, b / 1e9);
        if (i == 3) bw = b;
    }
    printf("measured read bandwidth (%zu MiB buffer): %.1f GB/s\n\n", bw_bytes >> 20, bw / 1e9);

    printf("decode matmul, n = 1, weights from a %s ring of copies (DRAM):\n",
           quick ? "256 MiB" : "1 GiB");
    printf("  %-6s %-11s %9s %8s\n", "dtype", "rows x cols", "GB/s", "% of bw");
    static const int shapes[][2] = {{512, 512}, {1792, 512}, {512, 1792}, {32000, 512}};
    for (int dt = 0; dt < WD_DT_COUNT; dt++)
        for (int s = 0; s < 4; s++) {
            double g = bench_gemv(pool, (wd_dtype)dt, shapes[s][0], shapes[s][1],
                                  quick ? 256e6 : 1.07e9, secs);
            char shape[32];
            snprintf(shape, sizeof shape, "%dx%d", shapes[s][0], shapes[s][1]);
            printf("  %-6s %-11s %9.1f %7.1f%%\n", wd_dtype_name(dt), shape, g, 100 * g * 1e9 / bw);
        }

    printf("\nsynthetic mini Mixtral decode (H 512, 8 layers, 8/2 heads, F 1792, 8 experts top-2\n"
           "at random, vocab 32000), kernels only:\n");
    for (int dt = 0; dt < WD_DT_COUNT; dt++) {
        if (quick && dt != WD_DT_F32) continue;
        double bpt = 0, best = 0;
        double t = bench_mini(pool, (wd_dtype)dt, quick ? 10 : 40, &bpt, &best);
        if (t <= 0) {
            printf("  %-5s: allocation failed\n", wd_dtype_name(dt));
            continue;
        }
        printf("  %-5s: %6.1f MB/token; median %6.2f ms/token = %5.1f GB/s = %5.1f%% of bw;"
               " best %6.2f ms = %5.1f%%\n",
               wd_dtype_name(dt), bpt / 1e6, t * 1e3, bpt / t / 1e9, 100 * bpt / t / bw,
               best * 1e3, 100 * bpt / best / bw);
    }

    double mhz = cpu_mhz();
    double peak = nth * 2.0 * 16 * 2 * mhz * 1e6;
    printf("\nprefill GEMM, n = 128 (peak = %d cores x 2 FMA units x 16 lanes x 2 flops x %.0f MHz\n"
           "nominal from /proc/cpuinfo = %.1f GFLOP/s; turbo may differ):\n",
           nth, mhz, peak / 1e9);
    printf("  %-6s %-11s %9s %8s\n", "dtype", "rows x cols", "GFLOP/s", "% peak");
    static const int gshapes[][2] = {{1792, 512}, {512, 1792}};
    for (int dt = 0; dt < WD_DT_COUNT; dt++)
        for (int s = 0; s < 2; s++) {
            double g = bench_gemm(pool, (wd_dtype)dt, 128, gshapes[s][0], gshapes[s][1], secs);
            char shape[32];
            snprintf(shape, sizeof shape, "%dx%d", gshapes[s][0], gshapes[s][1]);
            printf("  %-6s %-11s %9.1f %7.1f%%\n", wd_dtype_name(dt), shape, g,
                   peak > 0 ? 100 * g * 1e9 / peak : 0.0);
        }
    if (!quick) {
        double bw2 = wd_measure_read_bandwidth(pool, bw_bytes, 5);
        printf("\nread bandwidth measured again at the end: %.1f GB/s (%s)\n", bw2 / 1e9,
               bw2 > 1.1 * bw || bw2 < 0.9 * bw
                   ? "differs by >10%: other load on this machine skews the percentages"
                   : "stable");
    }
    wd_pool_destroy(pool);
    return 0;
}
