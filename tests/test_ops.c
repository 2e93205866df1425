/* CPU kernels against plain double-precision references written here:
 * dtype conversions (exhaustive for f16/bf16 -> f32, every f16 rounding tie),
 * matmul for every dtype at decode and prefill shapes, RMSNorm, RoPE, softmax,
 * top-k (ties), causal GQA attention (prefill == per-position decode), the
 * SwiGLU expert FFN, and the thread pool (each task runs exactly once). */
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"
#include "tests/test_util.h"

/* ---- deterministic random numbers ---------------------------------------- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_uniform(void) { return (float)((rnd_u32() >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0); }

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- reference conversions, computed with ldexp ------------------------- */
static double ref_f16(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp(m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1024 + m, e - 25);
    return s ? -v : v;
}
static double ref_bf16(uint16_t h) {
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v;
    if (e == 0) v = ldexp(m, -133);
    else if (e == 255) v = m ? NAN : INFINITY;
    else v = ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static void test_conversions(void) {
    int bad16 = 0, badb = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        double r = ref_f16((uint16_t)h);
        float f = wd_f16_to_f32((uint16_t)h);
        if (isnan(r)) {
            /* NaN stays NaN with its payload in the top mantissa bits */
            if (!isnan(f) || ((f32_bits(f) >> 13) & 0x3ff) != (h & 0x3ff)) bad16++;
        } else if ((double)f != r || !!signbit(f) != !!signbit(r)) {
            bad16++;
        }
        r = ref_bf16((uint16_t)h);
        f = wd_bf16_to_f32((uint16_t)h);
        if (isnan(r) ? !isnan(f) : ((double)f != r || !!signbit(f) != !!signbit(r))) badb++;
    }
    CHECKF(bad16 == 0, "%d f16 patterns wrong", bad16);
    CHECKF(badb == 0, "%d bf16 patterns wrong", badb);

    /* the vectorised row conversion, over all patterns as one row */
    uint16_t *pat = malloc(65536 * sizeof(uint16_t));
    float *row = malloc(65536 * sizeof(float));
    if (pat && row) {
        for (uint32_t h = 0; h < 65536; h++) pat[h] = (uint16_t)h;
        for (int dt = WD_DT_F16; dt <= WD_DT_BF16; dt++) {
            wd_row_to_f32(row, pat, (wd_dtype)dt, 0, 65536);
            int bad = 0;
            for (uint32_t h = 0; h < 65536; h++) {
                double r = dt == WD_DT_F16 ? ref_f16((uint16_t)h) : ref_bf16((uint16_t)h);
                if (isnan(r) ? !isnan(row[h]) : ((double)row[h] != r || !!signbit(row[h]) != !!signbit(r)))
                    bad++;
            }
            CHECKF(bad == 0, "wd_row_to_f32 %s: %d of 65536 patterns wrong", wd_dtype_name(dt), bad);
        }
    } else {
        CHECK(!"allocation");
    }
    free(pat);
    free(row);

    /* f32 -> f16: every tie between neighbours (exact in float) rounds to the
     * even pattern; a hair above/below rounds away/towards. */
    int badt = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double lo = ref_f16((uint16_t)h), hi = ref_f16((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if ((double)mid != (lo + hi) / 2) badt++;
        if (wd_f32_to_f16(mid) != even) badt++;
        if (wd_f32_to_f16(-mid) != (0x8000 | even)) badt++;
        if (wd_f32_to_f16(nextafterf(mid, 1e9f)) != h + 1) badt++;
        if (wd_f32_to_f16(nextafterf(mid, 0)) != h) badt++;
        if (wd_f32_to_f16((float)lo) != h) badt++;
    }
    CHECKF(badt == 0, "%d f16 rounding ties wrong", badt);
    CHECK(wd_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(wd_f32_to_f16(65519.99f) == 0x7bff);
    CHECK(wd_f32_to_f16(65520.0f) == 0x7c00); /* tie with the next binade: even = inf */
    CHECK(wd_f32_to_f16(1e10f) == 0x7c00);
    CHECK(wd_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(wd_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(wd_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK((wd_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (wd_f32_to_f16(NAN) & 0x3ff) != 0);
    CHECK(wd_f32_to_f16(-0.0f) == 0x8000);
    CHECK(wd_f32_to_f16((float)ldexp(1, -25)) == 0);           /* half the smallest subnormal */
    CHECK(wd_f32_to_f16((float)ldexp(1.5, -25)) == 1);
    CHECK(wd_f32_to_f16((float)ldexp(3, -25)) == 2);           /* 1.5 ulp: tie to even */
    CHECK(wd_f32_to_f16(1e-30f) == 0);
    CHECK(wd_f32_to_f16(bits_f32(1)) == 0); /* f32 subnormal */

    /* f32 -> bf16: RNE on random floats against a reference from neighbours */
    int badr = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = rnd_u32() ^ (rnd_u32() << 16);
        float f = bits_f32(u);
        if (isnan(f) || isinf(f)) continue;
        uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
        /* IEEE rounding past the largest finite value uses 2^128 for inf */
        double vh = isinf(ref_bf16(hi)) ? copysign(ldexp(1, 128), f) : ref_bf16(hi);
        double dl = fabs(ref_bf16(lo) - f), dh = fabs(vh - f);
        uint16_t want = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo);
        if (wd_f32_to_bf16(f) != want) {
            badr++;
            fprintf(stderr, "bf16 %08x -> %04x want %04x\n", u, wd_f32_to_bf16(f), want);
        }
    }
    CHECKF(badr == 0, "%d random bf16 roundings wrong", badr);
    CHECK(wd_f32_to_bf16(bits_f32(0x3f808000)) == 0x3f80); /* halfway, even below */
    CHECK(wd_f32_to_bf16(bits_f32(0x3f818000)) == 0x3f82); /* halfway, even above */
    CHECK(wd_f32_to_bf16(bits_f32(0x3f808001)) == 0x3f81);
    CHECK(wd_f32_to_bf16(bits_f32(0x00008000)) == 0x0000); /* subnormal tie */
    CHECK(wd_f32_to_bf16(bits_f32(0x00018000)) == 0x0002);
    CHECK(wd_f32_to_bf16(bits_f32(0x00008001)) == 0x0001);
    CHECK(wd_f32_to_bf16(bits_f32(0x7f7fffff)) == 0x7f80); /* overflow to inf */
    CHECK(wd_f32_to_bf16(bits_f32(0x7f7f7fff)) == 0x7f7f);
    CHECK(wd_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(wd_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(isnan(wd_bf16_to_f32(wd_f32_to_bf16(NAN))));
    CHECK(isnan(wd_bf16_to_f32(wd_f32_to_bf16(bits_f32(0x7f800001))))); /* NaN, payload low */
    CHECK(wd_f32_to_bf16(-0.0f) == 0x8000);
}

/* ---- weights of every dtype ---------------------------------------------- */
/* Random [rows x cols] weights stored as dt; deq gets the exact dequantised values. */
static void *make_weights(wd_dtype dt, int rows, int cols, double *deq) {
    size_t bytes = wd_dtype_bytes(dt, (int64_t)rows * cols);
    uint8_t *w = malloc(bytes ? bytes : 1);
    if (!w) return NULL;
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            size_t i = (size_t)r * cols + c;
            float v = rnd_uniform();
            switch (dt) {
            case WD_DT_F32: ((float *)w)[i] = v; deq[i] = v; break;
            case WD_DT_F16: {
                uint16_t h = wd_f32_to_f16(v);
                ((uint16_t *)w)[i] = h;
                deq[i] = ref_f16(h);
                break;
            }
            case WD_DT_BF16: {
                uint16_t h = wd_f32_to_bf16(v);
                ((uint16_t *)w)[i] = h;
                deq[i] = ref_bf16(h);
                break;
            }
            default: break;
            }
        }
        if (dt == WD_DT_Q8_0) {
            uint8_t *row = w + (size_t)r * (cols / 32) * 34;
            for (int b = 0; b < cols / 32; b++) {
                uint16_t d = wd_f32_to_f16(0.001f + 0.02f * (rnd_uniform() + 1));
                memcpy(row + 34 * b, &d, 2);
                for (int i = 0; i < 32; i++) {
                    int8_t q = (int8_t)((int)(rnd_u32() % 255) - 127);
                    row[34 * b + 2 + i] = (uint8_t)q;
                    deq[(size_t)r * cols + 32 * b + i] = ref_f16(d) * q;
                }
            }
        }
    }
    return w;
}

static void ref_matmul(double *y, const double *x, const double *w, int n, int rows, int cols) {
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int c = 0; c < cols; c++) s += w[(size_t)r * cols + c] * x[(size_t)t * cols + c];
            y[(size_t)t * rows + r] = s;
        }
}

/* llama.cpp's quantize_row_q8_0 on activations (the definition the Q8_0
 * decode kernels use; fp32 arithmetic, nearest-even rounding): xq gets the
 * dequantised values d * q, dx the block scales. */
static void ref_q8x(double *xq, double *dx, const float *x, int cols) {
    for (int b = 0; b < cols / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * b + i]));
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; i++) xq[32 * b + i] = (double)d * nearbyintf(x[32 * b + i] * id);
        if (dx) dx[b] = d;
    }
}

/* Q8_0 decode (n < 8): y against the reference on quantised tokens (tight),
 * and against the exact product within the quantisation bound
 * sum_c |w_c| * d_x(block of c) / 2. */
static void check_q8_decode(const float *y, const float *x, const double *deq, const double *yd,
                            int n, int rows, int cols, const char *what) {
    double *xq = malloc(sizeof(double) * n * cols), *dx = malloc(sizeof(double) * n * (cols / 32));
    double *yq = malloc(sizeof(double) * n * rows);
    if (!xq || !dx || !yq) {
        CHECK(!"allocation");
        free(xq), free(dx), free(yq);
        return;
    }
    for (int t = 0; t < n; t++)
        ref_q8x(xq + (size_t)t * cols, dx + (size_t)t * (cols / 32), x + (size_t)t * cols, cols);
    ref_matmul(yq, xq, deq, n, rows, cols);
    double e = wd_rel_l2(y, yq, (size_t)n * rows);
    CHECKF(e <= 1e-5, "%s: rel l2 %.3g against the quantised-token reference", what, e);
    int bad = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double bound = 0;
            for (int c = 0; c < cols; c++)
                bound += fabs(deq[(size_t)r * cols + c]) * dx[(size_t)t * (cols / 32) + c / 32] / 2;
            bad += fabs(y[(size_t)t * rows + r] - yd[(size_t)t * rows + r]) > bound * 1.0001 + 1e-6;
        }
    CHECKF(bad == 0, "%s: %d outputs beyond the quantisation bound", what, bad);
    free(xq), free(dx), free(yq);
}

/* Whether wd_matmul rounds the tokens to bf16 (BF16 weights, prefill on the
 * small-n GEMM with vdpbf16ps). */
static int bf16_tokens(int dt, int n, int cols) {
#ifdef WD_AVX512
    return dt == WD_DT_BF16 && wd_cpu_sg_bf16() && wd_cpu_sg_fits(WD_DT_BF16, n, cols);
#else
    (void)dt, (void)n, (void)cols;
    return 0;
#endif
}

/* x rounded to bf16 (nearest even), as double. */
static double round_bf16(float x) { return ref_bf16(wd_f32_to_bf16(x)); }

/* BF16 prefill on bf16 tokens: y against the float64 product on the rounded
 * tokens (only fp32 accumulation apart: rel l2 <= 1e-5), and against the
 * exact product within the rounding bound 2^-8 sum_c |w_c x_c| (bf16 keeps 8
 * significant bits, round to nearest) plus fp32 accumulation, cols 2^-23 sum. */
static void check_bf16_tokens(const float *y, const float *x, const double *deq, const double *yd,
                              int n, int rows, int cols, const char *what) {
    double *xq = malloc(sizeof(double) * n * cols), *yq = malloc(sizeof(double) * n * rows);
    if (!xq || !yq) {
        CHECK(!"allocation");
        free(xq), free(yq);
        return;
    }
    for (int i = 0; i < n * cols; i++) xq[i] = round_bf16(x[i]);
    ref_matmul(yq, xq, deq, n, rows, cols);
    double e = wd_rel_l2(y, yq, (size_t)n * rows);
    CHECKF(e <= 1e-5, "%s: rel l2 %.3g against the bf16-token reference", what, e);
    int bad = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double mag = 0;
            for (int c = 0; c < cols; c++)
                mag += fabs(deq[(size_t)r * cols + c] * x[(size_t)t * cols + c]);
            double bound = mag * (1.0 / 256 + cols * 0x1p-23) * 1.0001 + 1e-30;
            bad += !(fabs(y[(size_t)t * rows + r] - yd[(size_t)t * rows + r]) <= bound);
        }
    CHECKF(bad == 0, "%s: %d outputs beyond the bf16 rounding bound", what, bad);
    free(xq), free(yq);
}

static void test_matmul(wd_pool *pool) {
    static const int shapes[][2] = {{43, 172}, {172, 43}, {64, 64}, {32, 96}, {96, 160},
                                    {512, 512}, {45, 512}, {1, 300}, {130, 1792},
                                    {20, 3000} /* F32: too long for the small-n path */,
                                    {7, 2816} /* Q8_0 too (cols % 32 == 0) */};
    /* 150: two packed token chunks; F32 small-n path: 8..16 one token vector,
     * 33 three, 49 two passes of 32 and 17, 97 three passes */
    static const int ns[] = {1, 3, 7, 8, 16, 33, 37, 49, 97, 128, 150};
    for (int dt = 0; dt <= WD_DT_Q8_0; dt++) /* Q4_0 .. Q6_K: test_quant */ {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0], cols = shapes[s][1];
            if (dt == WD_DT_Q8_0 && cols % 32) continue;
            double *deq = malloc(sizeof(double) * rows * cols);
            void *w = deq ? make_weights((wd_dtype)dt, rows, cols, deq) : NULL;
            CHECK(w != NULL);
            if (!w) {
                free(deq);
                continue;
            }
            /* wd_row_to_f32 gives exactly the dequantised values */
            float *row = malloc(sizeof(float) * cols);
            int badrow = 0;
            for (int r = 0; r < rows; r++) {
                wd_row_to_f32(row, w, (wd_dtype)dt, r, cols);
                for (int c = 0; c < cols; c++) badrow += (double)row[c] != deq[(size_t)r * cols + c];
            }
            CHECKF(badrow == 0, "wd_row_to_f32 %s %dx%d: %d wrong", wd_dtype_name(dt), rows, cols, badrow);
            free(row);
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                int n = ns[ni];
                if ((size_t)n * rows * cols > 40u * 1000 * 1000) continue;
                float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows);
                double *xd = malloc(sizeof(double) * n * cols), *yd = malloc(sizeof(double) * n * rows);
                if (!x || !y || !xd || !yd) {
                    CHECK(!"allocation");
                    free(x), free(y), free(xd), free(yd);
                    continue;
                }
                for (int i = 0; i < n * cols; i++) xd[i] = x[i] = rnd_uniform();
                ref_matmul(yd, xd, deq, n, rows, cols);
                float *y1 = malloc(sizeof(float) * n * rows);
                for (int p = 0; p < 2; p++) {
                    for (int i = 0; i < n * rows; i++) y[i] = NAN;
                    wd_matmul(p ? pool : NULL, y, x, w, (wd_dtype)dt, n, rows, cols);
                    /* Q8_0 runs on quantised tokens in decode and, with VNNI, in prefill */
                    if (dt == WD_DT_Q8_0 && (n < 8 || wd_cpu_q8x_gemm_owns(WD_DT_Q8_0))) {
                        char what[96];
                        snprintf(what, sizeof what, "matmul Q8_0 n=%d %dx%d pool=%d", n, rows, cols, p);
                        check_q8_decode(y, x, deq, yd, n, rows, cols, what);
                    } else if (bf16_tokens(dt, n, cols)) {
                        char what[96];
                        snprintf(what, sizeof what, "matmul BF16 n=%d %dx%d pool=%d", n, rows, cols, p);
                        check_bf16_tokens(y, x, deq, yd, n, rows, cols, what);
                    } else {
                        double e = wd_rel_l2(y, yd, (size_t)n * rows);
                        CHECKF(e <= 1e-5, "matmul %s n=%d %dx%d pool=%d: rel l2 %.3g",
                               wd_dtype_name(dt), n, rows, cols, p, e);
                    }
                    if (!y1) continue;
                    if (!p) memcpy(y1, y, sizeof(float) * n * rows);
                    else /* thread splits never change a result's bits */
                        CHECKF(!memcmp(y1, y, sizeof(float) * n * rows),
                               "matmul %s n=%d %dx%d: pool result differs from serial",
                               wd_dtype_name(dt), n, rows, cols);
                }
                free(y1);
                free(x), free(y), free(xd), free(yd);
            }
            free(w);
            free(deq);
        }
    }
}

/* Weights and tokens at addresses off every alignment (rows then start
 * anywhere within a cache line; Q8_0 at any byte): the same bits as aligned. */
static void test_matmul_unaligned(wd_pool *pool) {
    static const int shapes[][2] = {{37, 96}, {5, 160}, {67, 224}}; /* Q8_0 needs cols % 32 */
    static const int ns[] = {1, 3, 7, 9};
    for (int dt = 0; dt <= WD_DT_Q8_0; dt++) /* Q4_0 .. Q6_K: test_quant */
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0], cols = shapes[s][1] + (dt == WD_DT_Q8_0 ? 0 : 3);
            double *deq = malloc(sizeof(double) * rows * cols);
            void *w = deq ? make_weights((wd_dtype)dt, rows, cols, deq) : NULL;
            size_t bytes = wd_dtype_bytes((wd_dtype)dt, (int64_t)rows * cols);
            unsigned char *buf = aligned_alloc(64, (bytes + 128) / 64 * 64);
            float *xbuf = aligned_alloc(64, (sizeof(float) * (9 * cols + 16) + 63) / 64 * 64);
            float *y0 = malloc(sizeof(float) * 9 * rows), *y1 = malloc(sizeof(float) * 9 * rows);
            if (!w || !buf || !xbuf || !y0 || !y1) {
                CHECK(!"allocation");
            } else {
                size_t esz = dt == WD_DT_F32 ? 4 : dt == WD_DT_Q8_0 ? 1 : 2;
                for (int i = 0; i < 9 * cols + 16; i++) xbuf[i] = rnd_uniform();
                for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                    int n = ns[ni];
                    memcpy(buf, w, bytes);
                    wd_matmul(NULL, y0, xbuf, buf, (wd_dtype)dt, n, rows, cols);
                    for (size_t off = esz; off < 64; off += esz * 13) {
                        memmove(buf + off, w, bytes);
                        float *xu = xbuf + 1;
                        float *tmp = malloc(sizeof(float) * (size_t)n * cols);
                        if (!tmp) continue;
                        memcpy(tmp, xbuf, sizeof(float) * (size_t)n * cols);
                        memmove(xu, tmp, sizeof(float) * (size_t)n * cols);
                        for (int p = 0; p < 2; p++) {
                            wd_matmul(p ? pool : NULL, y1, xu, buf + off, (wd_dtype)dt, n, rows, cols);
                            CHECKF(!memcmp(y0, y1, sizeof(float) * (size_t)n * rows),
                                   "matmul %s n=%d %dx%d pool=%d: weights at +%zu bytes, tokens at "
                                   "+4: bits differ from aligned", wd_dtype_name(dt), n, rows, cols,
                                   p, off);
                        }
                        memcpy(xbuf, tmp, sizeof(float) * (size_t)n * cols);
                        free(tmp);
                    }
                }
            }
            free(w), free(deq), free(buf), free(xbuf), free(y0), free(y1);
        }
}

/* wd_matmul_multi: every output has the bits of wd_matmul (and of a fused
 * gate/up: silu(W x) * (W3 x) as wd_expert_ffn computes it), whatever the
 * mix of dtypes, odd row counts and the thread split. */
static void test_matmul_multi(wd_pool *pool) {
    static const int shapes[][2] = {{37, 64}, {5, 96}, {130, 160}, {16, 32}, {1, 64}};
    static const int ns[] = {1, 3, 9};
    enum { NJ = 5 };
    for (int dt = 0; dt <= WD_DT_Q8_0; dt++) /* Q4_0 .. Q6_K: test_quant */
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            int n = ns[ni];
            wd_mm_job jobs[NJ];
            void *w[NJ] = {0}, *w3[NJ] = {0};
            float *x[NJ] = {0}, *y[NJ] = {0}, *u[NJ] = {0}, *ref[NJ] = {0}, *ru[NJ] = {0};
            int ok = 1;
            for (int j = 0; j < NJ; j++) {
                int rows = shapes[j][0], cols = shapes[j][1];
                double *deq = malloc(sizeof(double) * rows * cols);
                w[j] = deq ? make_weights((wd_dtype)(j == 3 ? WD_DT_F32 : dt), rows, cols, deq) : NULL;
                if (j % 2 == 0 && deq) w3[j] = make_weights((wd_dtype)dt, rows, cols, deq);
                free(deq);
                x[j] = malloc(sizeof(float) * n * cols);
                y[j] = malloc(sizeof(float) * n * rows), u[j] = malloc(sizeof(float) * n * rows);
                ref[j] = malloc(sizeof(float) * n * rows), ru[j] = malloc(sizeof(float) * n * rows);
                ok &= w[j] && (j % 2 || w3[j]) && x[j] && y[j] && u[j] && ref[j] && ru[j];
                if (!ok) break;
                for (int i = 0; i < n * cols; i++) x[j][i] = rnd_uniform();
                jobs[j] = (wd_mm_job){y[j], x[j], w[j], w3[j], w3[j] ? u[j] : NULL,
                                      (wd_dtype)(j == 3 ? WD_DT_F32 : dt), rows, cols};
                wd_matmul(NULL, ref[j], x[j], w[j], jobs[j].dt, n, rows, cols);
                if (w3[j]) {
                    wd_matmul(NULL, ru[j], x[j], w3[j], jobs[j].dt, n, rows, cols);
                    for (int i = 0; i < n * rows; i++) {
                        float g = ref[j][i]; /* the reference: silu in double, then checked loosely */
                        ref[j][i] = (float)(g / (1 + exp(-(double)g)) * ru[j][i]);
                    }
                }
            }
            CHECK(ok);
            for (int p = 0; p < 2 && ok; p++) {
                wd_matmul_multi(p ? pool : NULL, jobs, NJ, n);
                for (int j = 0; j < NJ; j++) {
                    size_t m = (size_t)n * shapes[j][0];
                    if (!w3[j]) {
                        CHECKF(!memcmp(y[j], ref[j], m * sizeof(float)),
                               "matmul_multi %s n=%d job %d pool=%d: bits differ from wd_matmul",
                               wd_dtype_name(dt), n, j, p);
                    } else {
                        double e = 0, nrm = 0;
                        for (size_t i = 0; i < m; i++)
                            e += (y[j][i] - ref[j][i]) * (double)(y[j][i] - ref[j][i]),
                                nrm += (double)ref[j][i] * ref[j][i];
                        CHECKF(e <= 1e-10 * nrm, "matmul_multi %s n=%d gate/up job %d pool=%d: rel %.3g",
                               wd_dtype_name(dt), n, j, p, sqrt(e / (nrm + 1e-300)));
                    }
                }
                if (p == 0) /* pool and serial: the same bits */
                    for (int j = 0; j < NJ; j++) memcpy(ru[j], y[j], sizeof(float) * n * shapes[j][0]);
                else
                    for (int j = 0; j < NJ; j++)
                        CHECKF(!memcmp(ru[j], y[j], sizeof(float) * n * shapes[j][0]),
                               "matmul_multi %s n=%d job %d: pool differs from serial",
                               wd_dtype_name(dt), n, j);
            }
            for (int j = 0; j < NJ; j++)
                free(w[j]), free(w3[j]), free(x[j]), free(y[j]), free(u[j]), free(ref[j]), free(ru[j]);
        }
}

static void test_rmsnorm(void) {
    static const int dims[] = {1, 43, 512, 1000};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        int n = dims[d];
        float x[1000], w[1000], y[1000];
        double ref[1000], ss = 0;
        for (int i = 0; i < n; i++) {
            x[i] = 3 * rnd_uniform();
            w[i] = 1 + rnd_uniform() / 2;
            ss += (double)x[i] * x[i];
        }
        double inv = 1 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++) ref[i] = x[i] * inv * w[i];
        wd_rmsnorm(y, x, w, n, 1e-5f);
        CHECKF(wd_rel_l2(y, ref, n) <= 1e-6, "rmsnorm dim %d: %.3g", n, wd_rel_l2(y, ref, n));
        wd_rmsnorm(x, x, w, n, 1e-5f); /* in place */
        CHECK(wd_rel_l2(x, ref, n) <= 1e-6);
    }
}

static void test_rope(void) {
    static const int hds[] = {8, 64, 128};
    static const float thetas[] = {10000.0f, 1e6f};
    static const int poss[] = {0, 1, 7, 100, 1000, 2047, 4095, 4096};
    const int nh = 3;
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 2; b++)
            for (size_t c = 0; c < sizeof poss / sizeof poss[0]; c++) {
                int hd = hds[a], half = hd / 2, pos = poss[c];
                float v[3 * 128];
                double ref[3 * 128];
                for (int i = 0; i < nh * hd; i++) v[i] = rnd_uniform();
                for (int h = 0; h < nh; h++)
                    for (int i = 0; i < half; i++) {
                        long double ang = (long double)pos *
                                          powl((long double)thetas[b], -2.0L * i / hd);
                        double cs = (double)cosl(ang), sn = (double)sinl(ang);
                        double x0 = v[h * hd + i], x1 = v[h * hd + i + half];
                        ref[h * hd + i] = x0 * cs - x1 * sn;
                        ref[h * hd + i + half] = x1 * cs + x0 * sn;
                    }
                float w[3 * 128], cs[128];
                memcpy(w, v, sizeof(float) * nh * hd);
                wd_rope(v, nh, hd, pos, thetas[b]);
                wd_rope_cs(cs, hd, pos, thetas[b]); /* the two-step form: same bits */
                wd_rope_apply(w, nh, hd, cs);
                CHECKF(memcmp(v, w, sizeof(float) * nh * hd) == 0,
                       "rope hd %d pos %d: wd_rope_cs + wd_rope_apply differ from wd_rope", hd, pos);
                double e = wd_rel_l2(v, ref, (size_t)nh * hd);
                CHECKF(e <= 1e-6, "rope hd %d theta %g pos %d: %.3g", hd, thetas[b], pos, e);
            }
    /* pos 0 is the identity; rotate-half pairs (i, i+half), not (2i, 2i+1) */
    float v[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    wd_rope(v, 1, 8, 1, 10000.0f);
    CHECK_NEAR(v[0], cos(1.0), 1e-6);
    CHECK_NEAR(v[4], sin(1.0), 1e-6);
    CHECK(v[1] == 0 && v[5] == 0);
}

static void test_softmax(void) {
    static const int ns[] = {1, 2, 5, 16, 37, 1000, 4097};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        int n = ns[i];
        float *x = malloc(sizeof(float) * n);
        double *ref = malloc(sizeof(double) * n);
        if (!x || !ref) {
            free(x), free(ref);
            CHECK(!"allocation");
            continue;
        }
        for (int off = 0; off < 2; off++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < n; j++) {
                x[j] = 20 * rnd_uniform() + (off ? 80.0f : 0.0f); /* exp(100) overflows */
                if (x[j] > mx) mx = x[j];
            }
            for (int j = 0; j < n; j++) sum += ref[j] = exp(x[j] - mx);
            for (int j = 0; j < n; j++) ref[j] /= sum;
            wd_softmax(x, n);
            double e = wd_rel_l2(x, ref, n), s = 0;
            for (int j = 0; j < n; j++) s += x[j];
            CHECKF(e <= 1e-6, "softmax n %d: %.3g", n, e);
            CHECK_NEAR(s, 1.0, 1e-5);
        }
        free(x), free(ref);
    }
    float t[3] = {-INFINITY, 0, -INFINITY}; /* masked entries */
    wd_softmax(t, 3);
    CHECK(t[0] == 0 && t[1] == 1 && t[2] == 0);
}

static const float *cmp_vals;
static int cmp_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (cmp_vals[i] != cmp_vals[j]) return cmp_vals[i] > cmp_vals[j] ? -1 : 1;
    return i - j;
}

static void test_topk(void) {
    for (int it = 0; it < 400; it++) {
        int n = 1 + (int)(rnd_u32() % 70), k = 1 + (int)(rnd_u32() % (n + 2));
        if (it % 5 == 0) k = n;
        float x[70];
        int idx[72], order[70];
        int levels = it % 2 ? 4 : 1000; /* few levels: many ties */
        for (int i = 0; i < n; i++) {
            x[i] = (float)(rnd_u32() % levels) - levels / 2;
            order[i] = i;
        }
        cmp_vals = x;
        qsort(order, n, sizeof(int), cmp_desc);
        int got = wd_topk(x, n, k, idx);
        int want = k < n ? k : n, bad = got != want;
        for (int j = 0; j < want && !bad; j++) bad = idx[j] != order[j];
        CHECKF(!bad, "topk n %d k %d", n, k);
    }
    float t[5] = {1, 3, 3, 2, 3};
    int idx[5];
    CHECK(wd_topk(t, 5, 2, idx) == 2 && idx[0] == 1 && idx[1] == 2);
    CHECK(wd_topk(t, 5, 5, idx) == 5 && idx[2] == 4 && idx[3] == 3 && idx[4] == 0);
    float u[4] = {NAN, 1, NAN, 0};
    CHECK(wd_topk(u, 4, 3, idx) == 3 && idx[0] == 1 && idx[1] == 3 && idx[2] == 0);
}

/* ---- attention ----------------------------------------------------------- */
static void ref_attention(double *out, const float *q, const float *k, const float *v, int n,
                          int pos0, int nh, int nkv, int hd) {
    int kvd = nkv * hd;
    double *s = malloc(sizeof(double) * (pos0 + n));
    if (!s) return;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nh; h++) {
            int kh = h / (nh / nkv), pos = pos0 + t;
            const float *qv = q + (size_t)t * nh * hd + h * hd;
            double mx = -1e300, sum = 0;
            for (int p = 0; p <= pos; p++) {
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)qv[i] * k[(size_t)p * kvd + kh * hd + i];
                s[p] = d / sqrt((double)hd);
                if (s[p] > mx) mx = s[p];
            }
            for (int p = 0; p <= pos; p++) sum += s[p] = exp(s[p] - mx);
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int p = 0; p <= pos; p++) o += s[p] * v[(size_t)p * kvd + kh * hd + i];
                out[(size_t)t * nh * hd + h * hd + i] = o / sum;
            }
        }
    free(s);
}

static void test_attention(wd_pool *pool) {
    static const int cfg[][5] = {/* n, pos0, n_heads, n_kv, head_dim */
                                 {1, 0, 8, 2, 24},  {9, 0, 8, 2, 24},  {9, 5, 8, 2, 24},
                                 {1, 300, 8, 2, 64}, {17, 40, 8, 2, 64}, {5, 3, 4, 4, 16},
                                 {3, 2, 6, 1, 7},   {2, 700, 4, 2, 32}, {1, 1000, 8, 8, 128},
                                 /* several tiles of 64 rows and key blocks of 64, odd
                                  * lengths; head_dim past one chunk of 256 */
                                 {33, 0, 8, 2, 64}, {513, 0, 8, 2, 64}, {7, 60, 8, 2, 40},
                                 {70, 3, 3, 3, 18}, {20, 50, 4, 1, 300}, {65, 129, 16, 2, 8},
                                 /* decode (n = 1, keys in lanes): positions around the key
                                  * blocks of 64 and the 16-key steps, odd head dims, MHA,
                                  * GQA 4:1, 6:1, 8:1, 16:1 (two passes of 8 heads) */
                                 {1, 1, 8, 2, 64},  {1, 2, 8, 8, 7},   {1, 17, 8, 1, 33},
                                 {1, 63, 8, 2, 64}, {1, 64, 4, 4, 24}, {1, 65, 16, 2, 40},
                                 {1, 600, 8, 2, 64}, {1, 1500, 8, 2, 64}, {1, 1500, 16, 16, 17},
                                 {1, 600, 32, 2, 64}, {1, 300, 12, 2, 96}, {1, 77, 10, 1, 300},
                                 /* prefills whose rows the decode path must reproduce bit for
                                  * bit (checked below, one decode call per position) */
                                 {66, 0, 8, 2, 64}, {3, 598, 8, 2, 64}, {2, 1499, 8, 1, 33},
                                 {17, 48, 40, 4, 20}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        int n = cfg[c][0], pos0 = cfg[c][1], nh = cfg[c][2], nkv = cfg[c][3], hd = cfg[c][4];
        int ctx = pos0 + n, qd = nh * hd, kvd = nkv * hd;
        float *q = malloc(sizeof(float) * n * qd), *k = malloc(sizeof(float) * ctx * kvd);
        float *v = malloc(sizeof(float) * ctx * kvd), *out = malloc(sizeof(float) * n * qd);
        float *one = malloc(sizeof(float) * n * qd);
        float *scr = malloc(sizeof(float) * wd_attention_scratch(n, nh, ctx));
        double *ref = malloc(sizeof(double) * n * qd);
        if (!q || !k || !v || !out || !one || !scr || !ref) {
            CHECK(!"allocation");
        } else {
            /* large q in some cases: sharp softmax, the running max moves a lot */
            float qs = c % 2 ? 8.0f : 2.0f;
            for (int i = 0; i < n * qd; i++) q[i] = qs * rnd_uniform();
            for (int i = 0; i < ctx * kvd; i++) k[i] = 2 * rnd_uniform(), v[i] = rnd_uniform();
            ref_attention(ref, q, k, v, n, pos0, nh, nkv, hd);
            for (int p = 0; p < 2; p++) {
                wd_attention(p ? pool : NULL, p ? out : one, q, k, v, n, pos0, nh, nkv, hd, scr);
                double e = wd_rel_l2(p ? out : one, ref, (size_t)n * qd);
                CHECKF(e <= 1e-5, "attention cfg %zu pool %d: %.3g", c, p, e);
            }
            CHECKF(memcmp(one, out, sizeof(float) * n * qd) == 0,
                   "attention cfg %zu: pool and serial differ", c);
            /* prefill == one decode call per position (KV beyond pos untouched) */
            for (int t = 0; t < n; t++)
                wd_attention(pool, one + (size_t)t * qd, q + (size_t)t * qd, k, v, 1, pos0 + t, nh,
                             nkv, hd, scr);
            int same = memcmp(one, out, sizeof(float) * n * qd) == 0;
            CHECKF(same, "attention cfg %zu: prefill differs from per-position decode", c);
        }
        free(q), free(k), free(v), free(out), free(one), free(scr), free(ref);
    }
}

static void test_expert_ffn(wd_pool *pool) {
    static const int shapes[][2] = {{64, 160}, {96, 64}, {128, 352}}; /* hidden, ffn */
    static const int ns[] = {1, 3, 8, 37};
    for (int dt = 0; dt <= WD_DT_Q8_0; dt++) /* Q4_0 .. Q6_K: test_quant */
        for (int s = 0; s < 3; s++) {
            int H = shapes[s][0], F = shapes[s][1];
            double *d1 = malloc(sizeof(double) * F * H), *d3 = malloc(sizeof(double) * F * H);
            double *d2 = malloc(sizeof(double) * H * F);
            void *w1 = d1 ? make_weights((wd_dtype)dt, F, H, d1) : NULL;
            void *w3 = d3 ? make_weights((wd_dtype)dt, F, H, d3) : NULL;
            void *w2 = d2 ? make_weights((wd_dtype)dt, H, F, d2) : NULL;
            for (int ni = 0; ni < 4 && w1 && w2 && w3; ni++) {
                int n = ns[ni];
                float *x = malloc(sizeof(float) * n * H), *y = malloc(sizeof(float) * n * H);
                float *scr = malloc(sizeof(float) * 2 * n * F);
                double *xd = malloc(sizeof(double) * n * H), *g = malloc(sizeof(double) * n * F);
                double *u = malloc(sizeof(double) * n * F), *yd = malloc(sizeof(double) * n * H);
                if (x && y && scr && xd && g && u && yd) {
                    for (int i = 0; i < n * H; i++) xd[i] = x[i] = 2 * rnd_uniform();
                    /* Q8_0 decode runs on tokens quantised to Q8 blocks (x, then silu(g)*u),
                     * and so does its prefill where the build has VNNI (gemm_q8x.c) */
                    const int q8 = dt == WD_DT_Q8_0 && (n < 8 || wd_cpu_q8x_gemm_owns(WD_DT_Q8_0));
                    /* BF16 prefill rounds its tokens (x, then silu(g)*u) to bf16 */
                    const int b16 = bf16_tokens(dt, n, H), b16b = bf16_tokens(dt, n, F);
                    if (q8)
                        for (int t = 0; t < n; t++) ref_q8x(xd + (size_t)t * H, NULL, x + (size_t)t * H, H);
                    if (b16)
                        for (int i = 0; i < n * H; i++) xd[i] = round_bf16(x[i]);
                    ref_matmul(g, xd, d1, n, F, H);
                    ref_matmul(u, xd, d3, n, F, H);
                    for (int i = 0; i < n * F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
                    if (q8) {
                        float *gf = malloc(sizeof(float) * n * F);
                        if (gf) {
                            for (int i = 0; i < n * F; i++) gf[i] = (float)g[i];
                            for (int t = 0; t < n; t++) ref_q8x(g + (size_t)t * F, NULL, gf + (size_t)t * F, F);
                        }
                        free(gf);
                    }
                    if (b16b)
                        for (int i = 0; i < n * F; i++) g[i] = round_bf16((float)g[i]);
                    ref_matmul(yd, g, d2, n, H, F);
                    wd_expert_ffn(pool, y, x, n, w1, w3, w2, (wd_dtype)dt, (wd_dtype)dt, H, F, scr);
                    double e = wd_rel_l2(y, yd, (size_t)n * H);
                    /* Q8_0 decode: silu(g)*u computed in fp32 by the kernel and in double
                     * here can quantise one level apart in a few elements */
                    /* (bf16: likewise one rounding step apart in a few elements) */
                    CHECKF(e <= (q8 || b16 || b16b ? 2e-4 : 1e-5), "expert_ffn %s n %d H %d F %d: %.3g",
                           wd_dtype_name(dt), n, H, F, e);
                } else {
                    CHECK(!"allocation");
                }
                free(x), free(y), free(scr), free(xd), free(g), free(u), free(yd);
            }
            free(w1), free(w2), free(w3), free(d1), free(d2), free(d3);
        }
}

/* ---- thread pool ----------------------------------------------------------- */
typedef struct {
    atomic_int count[64];
    atomic_int bad_n;
    int expect_n;
} pool_probe;

static void probe_task(void *arg, int task, int n_tasks) {
    pool_probe *p = arg;
    if (n_tasks != p->expect_n || task < 0 || task >= n_tasks) atomic_fetch_add(&p->bad_n, 1);
    else atomic_fetch_add(&p->count[task], 1);
}

static void test_pool(void) {
    CHECK(wd_pool_size(NULL) == 1);
    for (int nt = 1; nt <= 3; nt++) {
        wd_pool *pool = wd_pool_create(nt);
        CHECK(pool != NULL);
        if (!pool) continue;
        CHECK(wd_pool_size(pool) == nt);
        int bad = 0;
        pool_probe pr;
        for (int run = 0; run < 20000; run++) {
            int n = 1 + run % 50;
            for (int i = 0; i < 64; i++) atomic_init(&pr.count[i], 0);
            atomic_init(&pr.bad_n, 0);
            pr.expect_n = n;
            if (run % 2000 == 1999) { /* let the workers fall asleep: the wake-up path */
                struct timespec ts = {0, 2000000};
                nanosleep(&ts, NULL);
            }
            wd_pool_run(run % 7 == 3 ? NULL : pool, probe_task, &pr, n);
            for (int i = 0; i < 64; i++) bad += atomic_load(&pr.count[i]) != (i < n);
            bad += atomic_load(&pr.bad_n);
        }
        CHECKF(bad == 0, "pool of %d: %d tasks run wrongly", nt, bad);
        wd_pool_destroy(pool);
    }
    wd_pool_destroy(NULL);
}

int main(void) {
    wd_pool *pool = wd_pool_create(2);
    CHECK(pool != NULL);
    test_pool();
    test_conversions();
    test_matmul(pool);
    test_matmul_unaligned(pool);
    test_matmul_multi(pool);
    test_rmsnorm();
    test_rope();
    test_softmax();
    test_topk();
    test_attention(pool);
    test_expert_ffn(pool);
    {
        double rates[3] = {0};
        double med = wd_measure_read_bandwidth(pool, 1 << 20, 3, rates);
        CHECK(med > 0 && rates[0] > 0 && rates[2] > 0);
        int below = 0, above = 0; /* the median of 3: one pass at or below it, one at or above */
        for (int i = 0; i < 3; i++) below += rates[i] <= med, above += rates[i] >= med;
        CHECK(below >= 2 && above >= 2);
    }
    wd_pool_destroy(pool);
    return wd_test_finish("test_ops");
}
