/* bench_kernels: CPU kernel figures for this machine.
 *
 *   bench_kernels [--threads N] [--quick] [--reps N] [--json FILE|-]
 *
 * Prints: measured read bandwidth (and a buffer-size sweep, to show where the
 * caches end); decode matmul (n = 1) GB/s and % of bandwidth per dtype and
 * shape, with weights cycled through a >= 1 GiB ring of copies so they come
 * from DRAM (in transparent huge pages, as the decode's weights), and per dtype
 * with one matrix that stays in the caches (the kernel's own speed); a
 * synthetic "mini" Mixtral decode step (hidden 512, 8 layers, 8 heads / 2 KV
 * heads, FFN 1792, 8 experts top-2 picked at random per token,
 * vocab 32000) as bytes of weights per token over time; prefill GEMM GFLOP/s
 * (n = 128) against the nominal FP32 peak; wd_pool_run overhead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench/bench_util.h"
#include "kernels/kernels.h"

static double now_s(void) { return wd_bench_now_s(); }

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 20);
}

/* Weights filled with byte 0x3c: finite in every dtype (f32 0.0115, f16/bf16
 * ~1.06 / 0.0115, Q8_0 scale 1.06 and quants 60). From 2 MB on, 2 MB aligned
 * and advised for transparent huge pages, as a decode's weights are copied
 * (wd_model_hugepages) and as the read-bandwidth probe reads its buffer: in
 * 4 KB pages the GEMVs would pay TLB misses that neither pays. */
static void *alloc_weights(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    size_t al = bytes >= huge ? huge : 64, sz = (bytes + al - 1) / al * al;
    void *p = aligned_alloc(al, sz);
#ifdef MADV_HUGEPAGE
    if (p && al == huge) madvise(p, sz, MADV_HUGEPAGE);
#endif
    if (p) memset(p, 0x3c, bytes);
    return p;
}

static void empty_task(void *ctx, int task, int n_tasks) { (void)ctx, (void)task, (void)n_tasks; }

/* ---- synthetic mini Mixtral decode ------------------------------------- */
enum { MH = 512, ML = 8, MNH = 8, MNKV = 2, MHD = 64, MF = 1792, ME = 8, MK = 2, MV = 32000, MCTX = 1024 };

typedef struct {
    wd_dtype dt;
    void *wq[ML], *wk[ML], *wv[ML], *wo[ML], *gate[ML], *w1[ML][ME], *w2[ML][ME], *w3[ML][ME];
    void *lm;
    float *kc, *vc, *x, *xn, *q, *att, *h, *logits, *probs, *norm, *scr;
    int pos;
    double bytes_per_token;
} mini_model;

static void mini_free(mini_model *m) {
    if (!m) return;
    for (int l = 0; l < ML; l++) {
        free(m->wq[l]), free(m->wk[l]), free(m->wv[l]), free(m->wo[l]), free(m->gate[l]);
        for (int e = 0; e < ME; e++) free(m->w1[l][e]), free(m->w2[l][e]), free(m->w3[l][e]);
    }
    free(m->lm), free(m->kc), free(m->vc), free(m->x), free(m->xn), free(m->q), free(m->att);
    free(m->h), free(m->logits), free(m->probs), free(m->norm), free(m->scr);
    free(m);
}

static mini_model *mini_create(wd_dtype dt) {
    mini_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->dt = dt;
    int ok = 1;
    for (int l = 0; l < ML; l++) {
        ok &= !!(m->wq[l] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MNH * MHD * MH)));
        ok &= !!(m->wk[l] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MNKV * MHD * MH)));
        ok &= !!(m->wv[l] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MNKV * MHD * MH)));
        ok &= !!(m->wo[l] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MH * MNH * MHD)));
        ok &= !!(m->gate[l] = alloc_weights(wd_dtype_bytes(dt, (int64_t)ME * MH)));
        for (int e = 0; e < ME; e++) {
            ok &= !!(m->w1[l][e] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MF * MH)));
            ok &= !!(m->w2[l][e] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MH * MF)));
            ok &= !!(m->w3[l][e] = alloc_weights(wd_dtype_bytes(dt, (int64_t)MF * MH)));
        }
    }
    ok &= !!(m->lm = alloc_weights(wd_dtype_bytes(dt, (int64_t)MV * MH)));
    ok &= !!(m->kc = calloc((size_t)ML * MCTX * MNKV * MHD, 4));
    ok &= !!(m->vc = calloc((size_t)ML * MCTX * MNKV * MHD, 4));
    ok &= !!(m->x = calloc(MH, 4)) && !!(m->xn = calloc(MH, 4)) && !!(m->h = calloc(MH, 4));
    ok &= !!(m->q = calloc(MNH * MHD, 4)) && !!(m->att = calloc(MNH * MHD, 4));
    ok &= !!(m->logits = calloc(MV, 4)) && !!(m->probs = calloc(ME, 4)) && !!(m->norm = calloc(MH, 4));
    ok &= !!(m->scr = calloc(wd_attention_scratch(1, MNH, MCTX) + 2 * MF, 4));
    if (!ok) {
        mini_free(m);
        return NULL;
    }
    for (int i = 0; i < MH; i++) m->x[i] = 0.01f * (i % 7), m->norm[i] = 1;
    m->pos = 64; /* a short context already in the cache */
    m->bytes_per_token =
        (double)ML * (wd_dtype_bytes(dt, (int64_t)(2 * MNH * MHD + 2 * MNKV * MHD) * MH) +
                      wd_dtype_bytes(dt, (int64_t)ME * MH) + MK * 3 * wd_dtype_bytes(dt, (int64_t)MF * MH)) +
        (double)wd_dtype_bytes(dt, (int64_t)MV * MH);
    return m;
}

/* One decode token; returns its seconds. */
static double mini_token(wd_pool *pool, mini_model *m) {
    wd_dtype dt = m->dt;
    int pos = m->pos < MCTX - 1 ? m->pos++ : m->pos;
    double t0 = now_s();
    for (int l = 0; l < ML; l++) {
        float *kl = m->kc + (size_t)l * MCTX * MNKV * MHD, *vl = m->vc + (size_t)l * MCTX * MNKV * MHD;
        float *kp = kl + (size_t)pos * MNKV * MHD, *vp = vl + (size_t)pos * MNKV * MHD;
        wd_rmsnorm(m->xn, m->x, m->norm, MH, 1e-5f);
        wd_matmul(pool, m->q, m->xn, m->wq[l], dt, 1, MNH * MHD, MH);
        wd_matmul(pool, kp, m->xn, m->wk[l], dt, 1, MNKV * MHD, MH);
        wd_matmul(pool, vp, m->xn, m->wv[l], dt, 1, MNKV * MHD, MH);
        wd_rope(m->q, MNH, MHD, pos, 1e6f);
        wd_rope(kp, MNKV, MHD, pos, 1e6f);
        wd_attention(pool, m->att, m->q, kl, vl, 1, pos, MNH, MNKV, MHD, m->scr);
        wd_matmul(pool, m->h, m->att, m->wo[l], dt, 1, MH, MNH * MHD);
        for (int i = 0; i < MH; i++) m->x[i] += 1e-3f * m->h[i];
        wd_rmsnorm(m->xn, m->x, m->norm, MH, 1e-5f);
        wd_matmul(pool, m->probs, m->xn, m->gate[l], dt, 1, ME, MH);
        wd_softmax(m->probs, ME);
        /* synthetic weights route uniformly: pick two experts at random, as
         * real routing spreads tokens over all experts */
        int e0 = (int)(rnd() % ME), e1 = (int)(rnd() % (ME - 1));
        if (e1 >= e0) e1++;
        int es[MK] = {e0, e1};
        for (int j = 0; j < MK; j++) {
            int e = es[j];
            wd_expert_ffn(pool, m->h, m->xn, 1, m->w1[l][e], m->w3[l][e], m->w2[l][e], dt, dt, MH, MF,
                          m->scr + wd_attention_scratch(1, MNH, MCTX));
            for (int i = 0; i < MH; i++) m->x[i] += 0.5f * 1e-3f * m->h[i];
        }
    }
    wd_rmsnorm(m->xn, m->x, m->norm, MH, 1e-5f);
    wd_matmul(pool, m->logits, m->xn, m->lm, dt, 1, MV, MH);
    return now_s() - t0;
}

/* n = 1 matmul GB/s, weights cycled through copies laid consecutively in a
 * shared ring (so they come from DRAM); a ring of one copy keeps the matrix in
 * the caches (the kernel's own speed, the ceiling streaming cannot pass). */
static double gemv_window(wd_pool *pool, wd_dtype dt, int rows, int cols, const char *ring,
                          size_t ring_bytes, const float *x, float *y, double seconds) {
    size_t one = wd_dtype_bytes(dt, (int64_t)rows * cols);
    long copies = (long)(ring_bytes / one);
    static long next = 0; /* bench-only: where the ring walk continues */
    double best = 0, start = now_s();
    while (now_s() - start < seconds) {
        long calls = 0;
        double t0 = now_s(), t;
        do {
            wd_matmul(pool, y, x, ring + one * (size_t)(next++ % copies), dt, 1, rows, cols);
            calls++;
            t = now_s() - t0;
        } while (t < WD_BENCH_SUB_WINDOW);
        double g = (double)one * calls / t / 1e9;
        if (g > best) best = g;
    }
    return best;
}

/* The statistics of n samples, each times k, as JSON. */
static json_object *json_scaled(const double *a, int n, double k) {
    double *v = malloc((size_t)n * sizeof(double));
    if (!v) return NULL;
    for (int i = 0; i < n; i++) v[i] = a[i] * k;
    json_object *o = wd_bstats_json(v, n);
    free(v);
    return o;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int threads = 0, quick = 0, reps = 0;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_kernels [--threads N] [--quick] [--reps N] [--json FILE|-]\n"
                   "  --threads N  pool threads (default: online CPUs)\n"
                   "  --quick      shorter timings and 2 rounds\n"
                   "  --reps N     interleaved rounds (default 8; --quick: 2)\n"
                   "  --json FILE  every figure with its per-round samples as JSON (\"-\": stdout)\n"
                   "Prints read bandwidth, decode matmul GB/s (%% of bandwidth) per dtype,\n"
                   "streamed from DRAM and with one matrix in the caches (the kernel's own speed),\n"
                   "a synthetic mini-Mixtral decode step, prefill GEMM GFLOP/s and the\n"
                   "thread pool's per-run overhead. Each figure is measured once per round\n"
                   "(the best ~3 ms window of the round) and printed as the median over\n"
                   "rounds with min-max; the bandwidth is the median of whole passes over a\n"
                   "buffer of max(1 GiB, 8x the last-level cache).\n");
            return 0;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
            if (threads <= 0) {
                fprintf(stderr, "bench_kernels: --threads wants a positive number\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if ((reps = wd_bench_posint("bench_kernels", "--reps", argv[++i])) < 0) return 2;
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json_path = argv[++i];
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
    size_t bw_bytes = wd_bench_bw_bytes();
    printf("bench_kernels: %d thread%s\n\n", nth, nth > 1 ? "s" : "");

    /* pool overhead: back-to-back runs (workers spinning) and after idling */
    for (int i = 0; i < 1000; i++) wd_pool_run(pool, empty_task, NULL, nth);
    const int runs = 200000;
    double t0 = now_s();
    for (int i = 0; i < runs; i++) wd_pool_run(pool, empty_task, NULL, nth);
    double hot_us = (now_s() - t0) / runs * 1e6;
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

    printf("read bandwidth by buffer size (best of reps; shows where the caches end):\n");
    size_t sweep[] = {(size_t)8 << 20, (size_t)64 << 20, (size_t)256 << 20};
    for (int i = 0; i < 3 && !quick; i++)
        printf("  %6zu MiB: %6.1f GB/s\n", sweep[i] >> 20,
               wd_measure_read_bandwidth(pool, sweep[i], 10, NULL) / 1e9);

    /* Everything below runs in interleaved rounds and keeps the best (and,
     * for decode tokens, the median) over rounds and ~3 ms sub-windows: on a
     * shared machine other processes slow some moments, and rounds sample
     * each figure at different moments. */
    const int rounds = reps ? reps : quick ? 2 : 8, tok_per_round = quick ? 3 : 6;
    const double win = quick ? 0.03 : 0.06;
    size_t ring_bytes = bw_bytes; /* far larger than the LLC, as the bandwidth buffer */
    static const int shapes[][2] = {{512, 512}, {1792, 512}, {512, 1792}, {32000, 512}};
    static const int gshapes[][2] = {{1792, 512}, {512, 1792}};
    char *ring = alloc_weights(ring_bytes);
    float *x = malloc(sizeof(float) * 128 * 1792), *y = malloc(sizeof(float) * 128 * 32000);
    void *gw[WD_DT_COUNT][2] = {{0}};
    mini_model *mm[WD_DT_COUNT] = {0};
    double *tt[WD_DT_COUNT] = {0};
    int ok = ring && x && y;
    for (int dt = 0; dt < WD_DT_COUNT && ok; dt++) {
        for (int s = 0; s < 2; s++)
            ok &= !!(gw[dt][s] = alloc_weights(wd_dtype_bytes(dt, (int64_t)gshapes[s][0] * gshapes[s][1])));
        if (!quick || dt == WD_DT_F32) {
            ok &= !!(mm[dt] = mini_create((wd_dtype)dt));
            ok &= !!(tt[dt] = calloc((size_t)rounds * tok_per_round, sizeof(double)));
        }
    }
    if (!ok) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
    for (int i = 0; i < 128 * 1792; i++) x[i] = 1.0f / (1 + i % 5);
    /* per-round samples: [round] for the bandwidth, [dt][shape][round] for the kernels */
    double *bws = calloc((size_t)rounds, sizeof(double));
    double *gv = calloc((size_t)WD_DT_COUNT * 4 * rounds, sizeof(double));
    double *gm = calloc((size_t)WD_DT_COUNT * 2 * rounds, sizeof(double));
    double *gc = calloc((size_t)WD_DT_COUNT * rounds, sizeof(double));
    if (!bws || !gv || !gm || !gc) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
#define GV(dt, s) (gv + ((size_t)(dt) * 4 + (s)) * rounds)
#define GM(dt, s) (gm + ((size_t)(dt) * 2 + (s)) * rounds)
#define GC(dt) (gc + (size_t)(dt) * rounds)
    enum { CACHED_ROWS = 1792, CACHED_COLS = 512 }; /* gw[dt][0]: an expert's gate or up shape */
    double bw, gemv[WD_DT_COUNT][4] = {{0}}, gemm[WD_DT_COUNT][2] = {{0}};
    for (int r = 0; r < rounds; r++) {
        bws[r] = wd_measure_read_bandwidth(pool, bw_bytes, 3, NULL);
        for (int dt = 0; dt < WD_DT_COUNT; dt++)
            for (int s = 0; s < 4; s++)
                GV(dt, s)[r] = gemv_window(pool, (wd_dtype)dt, shapes[s][0], shapes[s][1], ring,
                                           ring_bytes, x, y, win);
        for (int dt = 0; dt < WD_DT_COUNT; dt++)
            GC(dt)[r] = gemv_window(pool, (wd_dtype)dt, CACHED_ROWS, CACHED_COLS, gw[dt][0],
                                    wd_dtype_bytes(dt, (int64_t)CACHED_ROWS * CACHED_COLS), x, y,
                                    win); /* a ring of one copy */
        for (int dt = 0; dt < WD_DT_COUNT; dt++) {
            if (!mm[dt]) continue;
            if (r == 0) mini_token(pool, mm[dt]); /* warm-up */
            for (int k = 0; k < tok_per_round; k++)
                tt[dt][r * tok_per_round + k] = mini_token(pool, mm[dt]);
        }
        for (int dt = 0; dt < WD_DT_COUNT; dt++)
            for (int s = 0; s < 2; s++)
                GM(dt, s)[r] = wd_bench_gemm_window(pool, (wd_dtype)dt, 128, gshapes[s][0], gshapes[s][1],
                                           gw[dt][s], x, y, win);
    }
    wd_bstats bst = wd_bstats_of(bws, rounds);
    bw = bst.median;
    for (int dt = 0; dt < WD_DT_COUNT; dt++) {
        for (int s = 0; s < 4; s++) gemv[dt][s] = wd_bstats_of(GV(dt, s), rounds).median;
        for (int s = 0; s < 2; s++) gemm[dt][s] = wd_bstats_of(GM(dt, s), rounds).median;
    }
    printf("read bandwidth (%zu MiB buffer, %d threads, median of 3 whole passes per round, %d rounds):\n"
           "  median %.1f GB/s, min %.1f, max %.1f, spread %.1f%%\n\n",
           bw_bytes >> 20, nth, rounds, bw / 1e9, bst.min / 1e9, bst.max / 1e9, 100 * bst.spread);

    printf("decode matmul, n = 1, weights cycled through a %zu MiB ring (DRAM, huge pages), best 3 ms window per round,\n"
           "median [min-max] of %d rounds:\n",
           ring_bytes >> 20, rounds);
    printf("  %-6s %-11s %9s %15s %8s\n", "dtype", "rows x cols", "GB/s", "[min-max]", "% of bw");
    for (int dt = 0; dt < WD_DT_COUNT; dt++)
        for (int s = 0; s < 4; s++) {
            char shape[32];
            wd_bstats g = wd_bstats_of(GV(dt, s), rounds);
            snprintf(shape, sizeof shape, "%dx%d", shapes[s][0], shapes[s][1]);
            printf("  %-6s %-11s %9.1f  [%5.1f-%5.1f] %7.1f%%\n", wd_dtype_name(dt), shape,
                   gemv[dt][s], g.min, g.max, 100 * gemv[dt][s] * 1e9 / bw);
        }
    printf("\ndecode matmul, n = 1, one %dx%d matrix in the caches (L2 or L3 by its size; the same weights every call: the\n"
           "kernel's own speed, which streaming from DRAM cannot pass), median [min-max] of %d rounds:\n",
           CACHED_ROWS, CACHED_COLS, rounds);
    printf("  %-6s %9s %15s %9s\n", "dtype", "GB/s", "[min-max]", "x bw");
    for (int dt = 0; dt < WD_DT_COUNT; dt++) {
        wd_bstats g = wd_bstats_of(GC(dt), rounds);
        printf("  %-6s %9.1f  [%5.1f-%5.1f] %8.2fx\n", wd_dtype_name(dt), g.median, g.min, g.max,
               g.median * 1e9 / bw);
    }

    printf("\nsynthetic mini Mixtral decode step (H 512, 8 layers, 8/2 heads, F 1792, 8 experts,\n"
           "top-2 at random per token, vocab 32000), kernels only, %d tokens:\n",
           rounds * tok_per_round);
    for (int dt = 0; dt < WD_DT_COUNT; dt++) {
        if (!mm[dt]) continue;
        int nt = rounds * tok_per_round;
        qsort(tt[dt], (size_t)nt, sizeof(double), cmp_double);
        double bpt = mm[dt]->bytes_per_token, med = tt[dt][nt / 2], best = tt[dt][0];
        printf("  %-5s %6.1f MB/token: median %6.2f ms = %5.1f GB/s = %5.1f%% of bw;"
               " best %6.2f ms = %5.1f%%\n",
               wd_dtype_name(dt), bpt / 1e6, med * 1e3, bpt / med / 1e9, 100 * bpt / med / bw,
               best * 1e3, 100 * bpt / best / bw);
    }

    double mhz = wd_bench_cpu_mhz();
    double peak = nth * 2.0 * 16 * 2 * mhz * 1e6;
    printf("\nprefill GEMM, n = 128, median of %d rounds (best 3 ms window each) (peak = %d cores x 2 FMA units x 16 lanes\n"
           "x 2 flops x %.0f MHz = %.1f GFLOP/s; the MHz is the nominal /proc/cpuinfo figure,\n"
           "the cores turbo above it):\n",
           rounds, nth, mhz, peak / 1e9);
    printf("  %-6s %-11s %9s %8s\n", "dtype", "rows x cols", "GFLOP/s", "% peak");
    for (int dt = 0; dt < WD_DT_COUNT; dt++)
        for (int s = 0; s < 2; s++) {
            char shape[32];
            snprintf(shape, sizeof shape, "%dx%d", gshapes[s][0], gshapes[s][1]);
            printf("  %-6s %-11s %9.1f %7.1f%%\n", wd_dtype_name(dt), shape, gemm[dt][s],
                   peak > 0 ? 100 * gemm[dt][s] * 1e9 / peak : 0.0);
        }
    int rc = 0;
    if (json_path) {
        json_object *doc = wd_bench_doc_json("bench_kernels"), *jg = json_object_new_array(),
                    *jm = json_object_new_array(), *jd = json_object_new_array(),
                    *jc = json_object_new_array();
        json_object_object_add(doc, "threads", json_object_new_int(nth));
        json_object_object_add(doc, "rounds", json_object_new_int(rounds));
        json_object_object_add(doc, "pool_overhead_s", json_object_new_double(hot_us * 1e-6));
        json_object_object_add(doc, "bandwidth_buffer_bytes", json_object_new_int64((int64_t)bw_bytes));
        json_object_object_add(doc, "read_bandwidth_bytes_per_s", wd_bstats_json(bws, rounds));
        for (int dt = 0; dt < WD_DT_COUNT; dt++) {
            for (int s = 0; s < 4; s++) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "dtype", json_object_new_string(wd_dtype_name(dt)));
                json_object_object_add(o, "rows", json_object_new_int(shapes[s][0]));
                json_object_object_add(o, "cols", json_object_new_int(shapes[s][1]));
                json_object_object_add(o, "bytes_per_s", json_scaled(GV(dt, s), rounds, 1e9));
                json_object_array_add(jg, o);
            }
            for (int s = 0; s < 2; s++) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "dtype", json_object_new_string(wd_dtype_name(dt)));
                json_object_object_add(o, "n", json_object_new_int(128));
                json_object_object_add(o, "rows", json_object_new_int(gshapes[s][0]));
                json_object_object_add(o, "cols", json_object_new_int(gshapes[s][1]));
                json_object_object_add(o, "flop_per_s", json_scaled(GM(dt, s), rounds, 1e9));
                json_object_array_add(jm, o);
            }
            json_object *o = json_object_new_object();
            json_object_object_add(o, "dtype", json_object_new_string(wd_dtype_name(dt)));
            json_object_object_add(o, "rows", json_object_new_int(CACHED_ROWS));
            json_object_object_add(o, "cols", json_object_new_int(CACHED_COLS));
            json_object_object_add(o, "bytes_per_s", json_scaled(GC(dt), rounds, 1e9));
            json_object_array_add(jc, o);
            if (mm[dt]) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "dtype", json_object_new_string(wd_dtype_name(dt)));
                json_object_object_add(o, "bytes_per_token", json_object_new_double(mm[dt]->bytes_per_token));
                json_object_object_add(o, "token_s", wd_bstats_json(tt[dt], rounds * tok_per_round));
                json_object_array_add(jd, o);
            }
        }
        json_object_object_add(doc, "gemv", jg);
        json_object_object_add(doc, "gemv_cached", jc);
        json_object_object_add(doc, "gemm", jm);
        json_object_object_add(doc, "mini_decode", jd);
        rc = wd_bench_write_json(json_path, doc, "bench_kernels");
    }
    free(bws), free(gv), free(gm), free(gc);
    for (int dt = 0; dt < WD_DT_COUNT; dt++) {
        mini_free(mm[dt]);
        free(tt[dt]);
        free(gw[dt][0]), free(gw[dt][1]);
    }
    free(ring), free(x), free(y);
    wd_pool_destroy(pool);
    return rc;
}
