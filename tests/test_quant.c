/* The quantised dtypes (Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) against gguf-py:
 *  - dequantisation bit-exact against tests/data/quant/<TYPE>.bin (written by
 *    tests/ref_quant.py from llama.cpp's gguf package), also from unaligned rows;
 *  - matmul (decode GEMV and prefill GEMM, serial and threaded), the SIMD and
 *    the scalar kernels against the golden float64 product;
 *  - random blocks of odd shapes (rows not a multiple of 4 or 16, an odd
 *    number of blocks, unaligned bases): matmul against a float64 product of
 *    the dequantised rows; thread splits never change a bit;
 *  - the SwiGLU expert FFN with quantised weights. */
#include <stdint.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"
#include "tests/test_util.h"

static const wd_dtype QTYPES[] = {WD_DT_Q4_0, WD_DT_Q4_1, WD_DT_Q4_K, WD_DT_Q5_K, WD_DT_Q6_K};
#define NQ (int)(sizeof QTYPES / sizeof QTYPES[0])

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint32_t rnd_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_uniform(void) { return (float)((rnd_u32() >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0); }

static double rel_l2(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- decode on quantised tokens ------------------------------------------------ */
/* Decode (n < 8) quantises each token to Q8 blocks of 32 (wd_q8x_quantize_ref,
 * llama.cpp's quantize_row_q8_0) and takes integer dot products. y is checked
 * (1) against the float64 product of the dequantised weights with the
 * dequantised tokens d * q: the L2 error over the L2 norm of the rows'
 * sum_c |w_c d q_c| at most 1e-5 (fp32 rounding of the per-block scaling and
 * of the sums, which grows with the size of the terms, not of their sum: a
 * Q4_1 row of one block sums d u x and m x terms that cancel), and (2) against the exact fp32-token product
 * yd within the quantisation bound sum_c |w_c| d_x(block of c) / 2 (each
 * token element moves by at most half a step). */
static void check_q8x(const float *y, const float *x, const float *deq, const double *yd, int n,
                      int rows, int cols, const char *what) {
    const int nb = cols / 32;
    int8_t *q = malloc((size_t)cols);
    float *d = malloc(4 * (size_t)nb);
    int32_t *sum = malloc(4 * (size_t)nb);
    double *xq = malloc(8 * (size_t)cols);
    if (!q || !d || !sum || !xq) {
        CHECK(!"allocation");
        free(q), free(d), free(sum), free(xq);
        return;
    }
    double worst = 0;
    int bad = 0;
    for (int t = 0; t < n; t++) {
        wd_q8x_quantize_ref(x + (size_t)t * cols, cols, q, d, sum);
        for (int c = 0; c < cols; c++) xq[c] = (double)d[c / 32] * q[c];
        double num = 0, den = 0;
        for (int r = 0; r < rows; r++) {
            const float *wr = deq + (size_t)r * cols;
            double s = 0, bound = 0, mag = 0;
            for (int c = 0; c < cols; c++) {
                s += (double)wr[c] * xq[c];
                mag += fabs((double)wr[c] * xq[c]);
                bound += fabs((double)wr[c]) * d[c / 32] / 2;
            }
            double v = y[(size_t)t * rows + r];
            num += (v - s) * (v - s), den += mag * mag;
            bad += !(fabs(v - yd[(size_t)t * rows + r]) <= bound * 1.0001 + 1e-6);
        }
        double e = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(e <= worst)) worst = e;
    }
    CHECKF(worst <= 1e-5, "%s: rel l2 %.3g against the quantised-token reference", what, worst);
    CHECKF(bad == 0, "%s: %d outputs beyond the token quantisation bound", what, bad);
    free(q), free(d), free(sum), free(xq);
}

/* ---- golden files ---------------------------------------------------------- */
static const int GGML_ID[] = {2, 3, 12, 13, 14}; /* ggml type ids of QTYPES */

static void test_golden(wd_pool *pool) {
    for (int qi = 0; qi < NQ; qi++) {
        wd_dtype dt = QTYPES[qi];
        char path[512];
        snprintf(path, sizeof path, "%s/tests/data/quant/%s.bin", WD_SOURCE_DIR, wd_dtype_name(dt));
        size_t len = 0;
        char *buf = wd_test_read_file(path, &len);
        CHECKF(buf != NULL, "cannot read %s", path);
        if (!buf) continue;
        uint32_t h[4];
        CHECK(len >= 20 && memcmp(buf, "WDQ1", 4) == 0);
        memcpy(h, buf + 4, 16);
        int rows = (int)h[1], cols = (int)h[2], n = (int)h[3];
        size_t rb = wd_dtype_bytes(dt, cols);
        size_t need = 20 + rows * rb + 4 * (size_t)rows * cols + 4 * (size_t)n * cols + 8 * (size_t)n * rows;
        CHECKF(h[0] == (uint32_t)GGML_ID[qi] && len == need, "%s: header %u %d %d %d, %zu bytes",
               path, h[0], rows, cols, n, len);
        if (h[0] != (uint32_t)GGML_ID[qi] || len != need) {
            free(buf);
            continue;
        }
        const uint8_t *q = (const uint8_t *)buf + 20;
        float *deq = malloc(4 * (size_t)rows * cols), *x = malloc(4 * (size_t)n * cols);
        double *yref = malloc(8 * (size_t)n * rows);
        float *row = malloc(4 * (size_t)cols), *y = malloc(4 * (size_t)n * rows);
        uint8_t *odd = malloc(rows * rb + 3);
        if (!deq || !x || !yref || !row || !y || !odd) {
            CHECK(!"allocation");
            free(deq), free(x), free(yref), free(row), free(y), free(odd), free(buf);
            continue;
        }
        memcpy(deq, q + rows * rb, 4 * (size_t)rows * cols);
        memcpy(x, q + rows * rb + 4 * (size_t)rows * cols, 4 * (size_t)n * cols);
        memcpy(yref, q + rows * rb + 4 * (size_t)rows * cols + 4 * (size_t)n * cols, 8 * (size_t)n * rows);
        /* dequantisation: bit-exact, from the file and from a base 3 bytes off */
        memcpy(odd + 3, q, rows * rb);
        int bad = 0, bad_odd = 0;
        for (int r = 0; r < rows; r++) {
            wd_row_to_f32(row, q, dt, r, cols);
            bad += memcmp(row, deq + (size_t)r * cols, 4 * (size_t)cols) != 0;
            wd_row_to_f32(row, odd + 3, dt, r, cols);
            bad_odd += memcmp(row, deq + (size_t)r * cols, 4 * (size_t)cols) != 0;
        }
        CHECKF(bad == 0 && bad_odd == 0, "%s: %d rows (%d unaligned) differ from gguf-py's dequantize",
               wd_dtype_name(dt), bad, bad_odd);
        printf("  %-5s golden %dx%d: dequantisation bit-exact (%d rows)\n", wd_dtype_name(dt), rows, cols, rows);
        /* products: every n up to the file's, serial, threaded, scalar kernel */
        for (int nn = 1; nn <= n; nn++) {
            double *yr = malloc(8 * (size_t)nn * rows);
            if (!yr) continue;
            memcpy(yr, yref, 8 * (size_t)nn * rows);
            for (int p = 0; p < 4; p++) {
                for (int i = 0; i < nn * rows; i++) y[i] = NAN;
                if (p == 2) wd_cpu_quant_gemv_rows_scalar(y, x, odd + 3, dt, nn, rows, cols, 0, rows);
                else if (p == 3)
                    wd_cpu_gemv_q8x(y, rows, x, nn, cols, odd + 3, rb, 0, rows, wd_cpu_q4x_rows_fn(dt, 0));
                else wd_matmul(p ? pool : NULL, y, x, odd + 3, dt, nn, rows, cols);
                const char *what = p == 3 ? "q8x scalar" : p == 2 ? "scalar" : p ? "pool" : "serial";
                /* prefill of Q8_0/Q4_0/Q4_1/Q4_K/Q5_K runs on quantised tokens where the
                 * build has VNNI (gemm_q8x.c), as decode does */
                if (p == 3 || (p < 2 && (nn < 8 || wd_cpu_q8x_gemm_owns(dt)))) {
                    char msg[96];
                    snprintf(msg, sizeof msg, "%s golden n %d %s", wd_dtype_name(dt), nn, what);
                    check_q8x(y, x, deq, yr, nn, rows, cols, msg);
                    continue;
                }
                double e = rel_l2(y, yr, (size_t)nn * rows);
                CHECKF(e <= 2e-6, "%s golden n %d %s: rel l2 %.3g", wd_dtype_name(dt), nn, what, e);
            }
            free(yr);
        }
        free(deq), free(x), free(yref), free(row), free(y), free(odd), free(buf);
    }
}

/* ---- random blocks ----------------------------------------------------------- */
/* Random bytes with finite f16 scale fields (every other bit pattern is a valid block). */
static void fill_random(uint8_t *w, wd_dtype dt, int rows, int cols) {
    size_t bytes = wd_dtype_bytes(dt, (int64_t)rows * cols);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd_u32();
    int bs = wd_dtype_block(dt);
    size_t bb = wd_dtype_bytes(dt, bs);
    int offs[2] = {0, 2}, no = dt == WD_DT_Q4_0 ? 1 : dt == WD_DT_Q6_K ? 1 : 2;
    if (dt == WD_DT_Q6_K) offs[0] = 208;
    for (size_t b = 0; b < bytes / bb; b++)
        for (int k = 0; k < no; k++) {
            uint16_t h = wd_f32_to_f16(0.03f * rnd_uniform());
            memcpy(w + b * bb + offs[k], &h, 2);
        }
}

/* y = deq x in float64; mag (unless NULL) = the sum of |products|, the scale of an fp32
 * sum's rounding error */
static void ref_product(double *y, double *mag, const float *x, const float *deq, int n, int rows,
                        int cols) {
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double s = 0, m = 0;
            for (int c = 0; c < cols; c++) {
                double p = (double)deq[(size_t)r * cols + c] * x[(size_t)t * cols + c];
                s += p, m += fabs(p);
            }
            y[(size_t)t * rows + r] = s;
            if (mag) mag[(size_t)t * rows + r] = m;
        }
}

/* ||a - b|| / ||mag||: an fp32 sum's error relative to its terms' magnitudes, which
 * (unlike rel_l2) does not grow when a single row's sum happens to cancel */
static double rel_l2_mag(const float *a, const double *b, const double *mag, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += mag[i] * mag[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_random(wd_pool *pool) {
    static const int rows_list[] = {1, 5, 17, 35, 67};
    /* 45 and 67 blocks (32-block types only): Q4_0/Q4_1's 4-block steps, their
     * tails within a chunk of 64 blocks and past it */
    /* 68 (32-block types), 4 (K-quants): whole groups of 4 blocks or 1024 columns */
    static const int nblk_list[] = {1, 3, 7, 45, 67, 68};
    /* 8..16: one token vector per pass, 21: two, 49: passes of 32 and 17, 97: three */
    static const int ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 21, 49, 97};
    const int NN = (int)(sizeof ns / sizeof ns[0]);
    for (int qi = 0; qi < NQ; qi++) {
        wd_dtype dt = QTYPES[qi];
        int worst_bad = 0, simd_scalar = 0;
        double worst = 0;
        for (int ri = 0; ri < 5; ri++)
            for (int bi = 0; bi < (wd_dtype_block(dt) == 32 ? 6 : 4); bi++) {
                int rows = rows_list[ri];
                int cols = (wd_dtype_block(dt) == 32 || bi < 3 ? nblk_list[bi] : 4) * wd_dtype_block(dt);
                size_t bytes = wd_dtype_bytes(dt, (int64_t)rows * cols);
                uint8_t *mem = malloc(bytes + 5);
                float *deq = malloc(4 * (size_t)rows * cols), *x = malloc(4 * (size_t)97 * cols);
                float *y = malloc(4 * (size_t)97 * rows), *y1 = malloc(4 * (size_t)97 * rows);
                double *yd = malloc(8 * (size_t)97 * rows), *ym = malloc(8 * (size_t)97 * rows);
                if (!mem || !deq || !x || !y || !y1 || !yd || !ym) {
                    CHECK(!"allocation");
                    free(mem), free(deq), free(x), free(y), free(y1), free(yd), free(ym);
                    continue;
                }
                uint8_t *w = mem + 1 + ri % 4; /* unaligned bases */
                fill_random(w, dt, rows, cols);
                for (int r = 0; r < rows; r++) wd_row_to_f32(deq + (size_t)r * cols, w, dt, r, cols);
                for (int i = 0; i < 21 * cols; i++) x[i] = rnd_uniform();
                /* tokens 21..96 derived from the first 21 (the random stream, and with it
                 * every other shape's data, stays as it was with 21 tokens) */
                for (int i = 21 * cols; i < 97 * cols; i++) x[i] = -0.75f * x[i - 21 * cols];
                for (int ni = 0; ni < NN; ni++) {
                    int n = ns[ni];
                    char msg[96];
                    snprintf(msg, sizeof msg, "%s %dx%d n %d", wd_dtype_name(dt), rows, cols, n);
                    ref_product(yd, ym, x, deq, n, rows, cols);
                    wd_matmul(NULL, y1, x, w, dt, n, rows, cols);
                    if (n < 8) {
                        check_q8x(y1, x, deq, yd, n, rows, cols, msg);
                        /* the portable scalar kernel on the same quantised tokens */
                        wd_cpu_gemv_q8x(y, rows, x, n, cols, w, wd_dtype_bytes(dt, cols), 0, rows,
                                        wd_cpu_q4x_rows_fn(dt, 0));
                        snprintf(msg, sizeof msg, "%s %dx%d n %d q8x scalar", wd_dtype_name(dt), rows, cols, n);
                        check_q8x(y, x, deq, yd, n, rows, cols, msg);
                        simd_scalar += wd_cpu_q4x_rows_fn(dt, 0) != wd_cpu_q4x_rows_fn(dt, 1);
                        /* rows [s, rows): every row in another tile of 4 (or alone) than
                         * in the whole run above, the same bits */
                        for (int s = 1; s < 4 && s < rows; s++) {
                            memcpy(y, y1, 4 * (size_t)n * rows);
                            for (int t = 0; t < n; t++)
                                for (int r = s; r < rows; r++) y[(size_t)t * rows + r] = NAN;
                            wd_cpu_gemv_q8x(y, rows, x, n, cols, w, wd_dtype_bytes(dt, cols), s, rows,
                                            wd_cpu_q4x_rows_fn(dt, 1));
                            CHECKF(!memcmp(y, y1, 4 * (size_t)n * rows), "%s %dx%d n %d: rows from %d differ in other tiles",
                                   wd_dtype_name(dt), rows, cols, n, s);
                        }
                    } else if (wd_cpu_q8x_gemm_owns(dt)) {
                        check_q8x(y1, x, deq, yd, n, rows, cols, msg);
                    } else {
                        double e = rel_l2_mag(y1, yd, ym, (size_t)n * rows);
                        if (e > worst) worst = e;
                        CHECKF(e <= 2e-6, "%s: l2 error / l2 magnitude %.3g", msg, e);
                    }
                    wd_matmul(pool, y, x, w, dt, n, rows, cols);
                    int same = !memcmp(y, y1, 4 * (size_t)n * rows);
                    worst_bad += !same;
                    CHECKF(same, "%s %dx%d n %d: threaded result differs from serial",
                           wd_dtype_name(dt), rows, cols, n);
                    if (n < 8) { /* the fp32-token scalar kernel (the fallback for long rows) */
                        wd_cpu_quant_gemv_rows_scalar(y, x, w, dt, n, rows, cols, 0, rows);
                        double e = rel_l2_mag(y, yd, ym, (size_t)n * rows);
                        CHECKF(e <= 2e-6, "%s %dx%d n %d scalar: l2 error / l2 magnitude %.3g", wd_dtype_name(dt), rows,
                               cols, n, e);
                    }
                }
                free(mem), free(deq), free(x), free(y), free(y1), free(yd), free(ym);
            }
        { /* rows too long for the small-n GEMM (2816 > 2730 columns): quant.c's GEMM, fp32 tokens */
            const int rows = 5, cols = 2816, n = 9;
            uint8_t *mem = malloc(wd_dtype_bytes(dt, (int64_t)rows * cols) + 3);
            float *deq = malloc(4 * (size_t)rows * cols), *x = malloc(4 * (size_t)n * cols);
            float *y = malloc(4 * (size_t)n * rows), *y1 = malloc(4 * (size_t)n * rows);
            double *yd = malloc(8 * (size_t)n * rows), *ym = malloc(8 * (size_t)n * rows);
            if (mem && deq && x && y && y1 && yd && ym) {
                uint8_t *w = mem + 3;
                fill_random(w, dt, rows, cols);
                for (int r = 0; r < rows; r++) wd_row_to_f32(deq + (size_t)r * cols, w, dt, r, cols);
                for (int i = 0; i < n * cols; i++) x[i] = rnd_uniform();
                ref_product(yd, ym, x, deq, n, rows, cols);
                wd_matmul(NULL, y1, x, w, dt, n, rows, cols);
                wd_matmul(pool, y, x, w, dt, n, rows, cols);
                double e = rel_l2_mag(y1, yd, ym, (size_t)n * rows);
                CHECKF(e <= 2e-6, "%s %dx%d n %d (long rows): l2 error / l2 magnitude %.3g", wd_dtype_name(dt), rows,
                       cols, n, e);
                CHECKF(!memcmp(y, y1, 4 * (size_t)n * rows), "%s long rows: threaded differs from serial",
                       wd_dtype_name(dt));
            } else {
                CHECK(!"allocation");
            }
            free(mem), free(deq), free(x), free(y), free(y1), free(yd), free(ym);
        }
        if (wd_cpu_q8x_gemm_owns(dt))
            printf("  %-5s random shapes: prefill on Q8 tokens (within the quantisation bound), "
                   "%d thread-split mismatches; decode on Q8 tokens, %d SIMD-vs-scalar checks\n",
                   wd_dtype_name(dt), worst_bad, simd_scalar);
        else
            printf("  %-5s random shapes: prefill worst rel l2 %.2g vs float64, %d thread-split "
                   "mismatches; decode on Q8 tokens, %d SIMD-vs-scalar checks\n",
                   wd_dtype_name(dt), worst, worst_bad, simd_scalar);
    }
}

/* x[n][cols] -> the values decode's quantised tokens stand for, d * q (as float). */
static void q8x_values(float *out, const float *x, int n, int cols) {
    int8_t q[32];
    float d;
    int32_t sum;
    for (int t = 0; t < n; t++)
        for (int b = 0; b < cols / 32; b++) {
            size_t o = (size_t)t * cols + 32 * (size_t)b;
            wd_q8x_quantize_ref(x + o, 32, q, &d, &sum);
            for (int i = 0; i < 32; i++) out[o + i] = d * (float)q[i];
        }
}

static void test_expert(wd_pool *pool) {
    for (int qi = 0; qi < NQ; qi++) {
        /* w2 of another type, as K-quant mixes store it (Q4_K with Q6_K down) */
        wd_dtype dt = QTYPES[qi], dt2 = QTYPES[(qi + 4) % NQ];
        const int H = 512, F = 768;
        uint8_t *w1 = malloc(wd_dtype_bytes(dt, (int64_t)F * H)), *w3 = malloc(wd_dtype_bytes(dt, (int64_t)F * H));
        uint8_t *w2 = malloc(wd_dtype_bytes(dt2, (int64_t)H * F));
        float *d1 = malloc(4 * (size_t)F * H), *d3 = malloc(4 * (size_t)F * H), *d2 = malloc(4 * (size_t)H * F);
        float *x = malloc(4 * (size_t)9 * H), *y = malloc(4 * (size_t)9 * H), *scr = malloc(4 * (size_t)18 * F);
        double *g = malloc(8 * (size_t)9 * F), *u = malloc(8 * (size_t)9 * F), *yd = malloc(8 * (size_t)9 * H);
        float *hf = malloc(4 * (size_t)9 * F);
        if (w1 && w3 && w2 && d1 && d3 && d2 && x && y && scr && g && u && yd && hf) {
            fill_random(w1, dt, F, H), fill_random(w3, dt, F, H), fill_random(w2, dt2, H, F);
            for (int r = 0; r < F; r++) {
                wd_row_to_f32(d1 + (size_t)r * H, w1, dt, r, H);
                wd_row_to_f32(d3 + (size_t)r * H, w3, dt, r, H);
            }
            for (int r = 0; r < H; r++) wd_row_to_f32(d2 + (size_t)r * F, w2, dt2, r, F);
            for (int i = 0; i < 9 * H; i++) x[i] = 4 * rnd_uniform();
            static const int ns[] = {1, 3, 9};
            for (int ni = 0; ni < 3; ni++) {
                int n = ns[ni];
                /* decode runs on tokens quantised to Q8 blocks (x, then silu(g)*u), and
                 * so does prefill of the types gemm_q8x.c runs (where the build has VNNI) */
                const int q8 = n < 8 || wd_cpu_q8x_gemm_owns(dt);
                const int q8b = n < 8 || wd_cpu_q8x_gemm_owns(dt2);
                float *xr = x;
                if (q8) {
                    q8x_values(scr, x, n, H);
                    xr = scr;
                }
                ref_product(g, NULL, xr, d1, n, F, H);
                ref_product(u, NULL, xr, d3, n, F, H);
                for (int i = 0; i < n * F; i++) hf[i] = (float)(g[i] / (1 + exp(-g[i])) * u[i]);
                if (q8b) {
                    memcpy(scr, hf, 4 * (size_t)n * F);
                    q8x_values(hf, scr, n, F);
                }
                ref_product(yd, NULL, hf, d2, n, H, F);
                wd_expert_ffn(pool, y, x, n, w1, w3, w2, dt, dt2, H, F, scr);
                double e = rel_l2(y, yd, (size_t)n * H);
                /* decode: silu(g)*u in fp32 by the kernel and here can quantise one
                 * level apart in a few elements (as for Q8_0 in test_ops) */
                CHECKF(e <= (q8 || q8b ? 2e-4 : 1e-5), "expert_ffn %s/%s n %d: rel l2 %.3g",
                       wd_dtype_name(dt), wd_dtype_name(dt2), n, e);
            }
        } else {
            CHECK(!"allocation");
        }
        free(w1), free(w3), free(w2), free(d1), free(d3), free(d2), free(x), free(y), free(scr);
        free(g), free(u), free(yd), free(hf);
    }
}

static void test_sizes(void) {
    CHECK(wd_dtype_bytes(WD_DT_Q4_0, 64) == 36 && wd_dtype_block(WD_DT_Q4_0) == 32);
    CHECK(wd_dtype_bytes(WD_DT_Q4_1, 64) == 40 && wd_dtype_block(WD_DT_Q4_1) == 32);
    CHECK(wd_dtype_bytes(WD_DT_Q4_K, 512) == 288 && wd_dtype_block(WD_DT_Q4_K) == 256);
    CHECK(wd_dtype_bytes(WD_DT_Q5_K, 512) == 352 && wd_dtype_block(WD_DT_Q5_K) == 256);
    CHECK(wd_dtype_bytes(WD_DT_Q6_K, 512) == 420 && wd_dtype_block(WD_DT_Q6_K) == 256);
    CHECK(!strcmp(wd_dtype_name(WD_DT_Q4_K), "Q4_K") && !strcmp(wd_dtype_name(WD_DT_Q6_K), "Q6_K"));
    CHECK(wd_dtype_quantised(WD_DT_Q8_0) && wd_dtype_quantised(WD_DT_Q5_K) && !wd_dtype_quantised(WD_DT_BF16));
}

int main(void) {
    wd_pool *pool = wd_pool_create(3);
    CHECK(pool != NULL);
    test_sizes();
    test_golden(pool);
    test_random(pool);
    test_expert(pool);
    wd_pool_destroy(pool);
    return wd_test_finish("test_quant");
}
