/* llama.cpp block quantisations on the CPU: exact dequantisation, and the
 * products straight on the quantised blocks.
 *
 * Block layouts (little-endian, as ggml-common.h):
 *   Q4_0  32 w, 18 B: f16 d | qs[16]; w[j] = d (lo(qs[j]) - 8), w[j+16] = d (hi(qs[j]) - 8)
 *   Q4_1  32 w, 20 B: f16 d | f16 m | qs[16]; w = d q + m (same nibble order)
 *   Q4_K 256 w, 144 B: f16 d | f16 dmin | scales[12] | qs[128]. Eight sub-blocks of
 *         32 with 6-bit scale sc and min mn packed in scales[12]; chunk c (64 w)
 *         reads qs[32c..32c+32): its low nibbles are sub-block 2c, high 2c+1;
 *         w = d sc q - dmin mn.
 *   Q5_K 256 w, 176 B: f16 d | f16 dmin | scales[12] | qh[32] | qs[128]; as Q4_K
 *         with a fifth bit: sub-block s takes bit s of qh[l] as 16.
 *   Q6_K 256 w, 210 B: ql[128] | qh[64] | int8 scales[16] | f16 d. Halves of 128:
 *         w[l + 32k] (k < 4, l < 32) = d sc[(32k + l)/16] (q - 32), q from
 *         ql[l + 32(k&1)] (nibble k>>1) and bits 2k of qh[l].
 * Every product d*sc*q is exact in fp32 (at most 24 significant bits), so the
 * dequantised values match llama.cpp's (and gguf-py's) to the bit whatever the
 * evaluation order or FMA contraction.
 *
 * GEMV (decode, n < 8): on tokens quantised to Q8 blocks with integer dot
 * products (gemv_q4.c, through wd_cpu_gemv_q8x); rows too long for its stack
 * buffer fall back to the scalar kernel on fp32 tokens.
 * GEMM (prefill, n >= 8): a tile of rows x 256 columns is dequantised to fp32
 * once and used by all n tokens: AVX-512, 32 rows transposed to [k][32] and a
 * 14-token x 32-row register tile (28 zmm accumulators, x broadcast); else
 * 16 rows and a 4-row x 2-token tile of dot products.
 * Threads split the rows in whole tiles: a result never depends on the split. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

#define QUANT_GEMM_MIN_N 8
#ifdef WD_AVX512
#define QUANT_TILE_ROWS 32 /* two zmm of rows in the register tile */
#define QUANT_MR 14        /* tokens per register tile */
#else
#define QUANT_TILE_ROWS 16
#endif
#define QUANT_KC 256
#define QUANT_SERIAL_ELEMS 32768


static size_t block_bytes(wd_dtype dt) {
    switch (dt) {
    case WD_DT_Q4_0: return WD_Q4_0_BYTES;
    case WD_DT_Q4_1: return WD_Q4_1_BYTES;
    case WD_DT_Q4_K: return WD_Q4_K_BYTES;
    case WD_DT_Q5_K: return WD_Q5_K_BYTES;
    case WD_DT_Q6_K: return WD_Q6_K_BYTES;
    default: return 0;
    }
}

/* ---- exact dequantisation (scalar) ---------------------------------------- */
static void deq_block(float *y, const uint8_t *b, wd_dtype dt) {
    switch (dt) {
    case WD_DT_Q4_0: {
        float d = wd_f16_at(b);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((b[2 + j] & 0xF) - 8);
            y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
        }
        break;
    }
    case WD_DT_Q4_1: {
        float d = wd_f16_at(b), m = wd_f16_at(b + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(b[4 + j] & 0xF) + m;
            y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
        }
        break;
    }
    case WD_DT_Q4_K:
    case WD_DT_Q5_K: {
        float d = wd_f16_at(b), dmin = wd_f16_at(b + 2);
        const uint8_t *scales = b + 4;
        const uint8_t *qh = b + 16, *ql = dt == WD_DT_Q4_K ? b + 16 : b + 48;
        for (int c = 0; c < 4; c++) {
            int sc, mn;
            wd_k4_scale_min(2 * c, scales, &sc, &mn);
            float d1 = d * (float)sc, m1 = dmin * (float)mn;
            wd_k4_scale_min(2 * c + 1, scales, &sc, &mn);
            float d2 = d * (float)sc, m2 = dmin * (float)mn;
            const uint8_t *q = ql + 32 * c;
            for (int l = 0; l < 32; l++) {
                int lo = q[l] & 0xF, hi = q[l] >> 4;
                if (dt == WD_DT_Q5_K) {
                    lo += ((qh[l] >> (2 * c)) & 1) << 4;
                    hi += ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                y[64 * c + l] = d1 * (float)lo - m1;
                y[64 * c + 32 + l] = d2 * (float)hi - m2;
            }
        }
        break;
    }
    case WD_DT_Q6_K: {
        float d = wd_f16_at(b + 208);
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    int e = 128 * h + 32 * k + l;
                    int q = ((ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF) |
                            (((qh[l] >> (2 * k)) & 3) << 4);
                    y[e] = d * (float)sc[e / 16] * (float)(q - 32);
                }
        }
        break;
    }
    default: memset(y, 0, sizeof(float) * (size_t)wd_dtype_block(dt)); break;
    }
}

#ifdef WD_AVX512
/* The same values as deq_block, 16 at a time (the products are exact, so the
 * vector FMAs round exactly as the scalar code). */
static inline __m512 cvt16s(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)); }
static inline __m512 cvt16u(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q)); }
static inline __m128i ld16b(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }

static void deq_block512(float *y, const uint8_t *b, wd_dtype dt) {
    const __m128i m4 = _mm_set1_epi8(0xF);
    switch (dt) {
    case WD_DT_Q4_0: {
        const __m128i e8 = _mm_set1_epi8(8);
        __m512 d = _mm512_set1_ps(wd_f16_at(b));
        __m128i q = ld16b(b + 2);
        _mm512_storeu_ps(y, _mm512_mul_ps(d, cvt16s(_mm_sub_epi8(_mm_and_si128(q, m4), e8))));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, cvt16s(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8))));
        break;
    }
    case WD_DT_Q4_1: {
        __m512 d = _mm512_set1_ps(wd_f16_at(b)), m = _mm512_set1_ps(wd_f16_at(b + 2));
        __m128i q = ld16b(b + 4);
        _mm512_storeu_ps(y, _mm512_fmadd_ps(d, cvt16u(_mm_and_si128(q, m4)), m));
        _mm512_storeu_ps(y + 16, _mm512_fmadd_ps(d, cvt16u(_mm_and_si128(_mm_srli_epi16(q, 4), m4)), m));
        break;
    }
    case WD_DT_Q4_K:
    case WD_DT_Q5_K: {
        const int q5 = dt == WD_DT_Q5_K;
        const float d = wd_f16_at(b), dmin = wd_f16_at(b + 2);
        const uint8_t *qs = b + (q5 ? 48 : 16);
        const __m128i one = _mm_set1_epi8(1);
        __m128i ha = ld16b(b + 16), hb = ld16b(b + 32);
        for (int c = 0; c < 4; c++) {
            int sc, mn;
            __m128i qa = ld16b(qs + 32 * c), qb = ld16b(qs + 32 * c + 16);
            for (int h = 0; h < 2; h++) {
                __m128i va = _mm_and_si128(h ? _mm_srli_epi16(qa, 4) : qa, m4);
                __m128i vb = _mm_and_si128(h ? _mm_srli_epi16(qb, 4) : qb, m4);
                if (q5) {
                    __m128i sh = _mm_cvtsi32_si128(2 * c + h);
                    va = _mm_or_si128(va, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(ha, sh), one), 4));
                    vb = _mm_or_si128(vb, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(hb, sh), one), 4));
                }
                wd_k4_scale_min(2 * c + h, b + 4, &sc, &mn);
                __m512 d1 = _mm512_set1_ps(d * (float)sc), m1 = _mm512_set1_ps(dmin * (float)mn);
                _mm512_storeu_ps(y + 64 * c + 32 * h, _mm512_fmsub_ps(d1, cvt16u(va), m1));
                _mm512_storeu_ps(y + 64 * c + 32 * h + 16, _mm512_fmsub_ps(d1, cvt16u(vb), m1));
            }
        }
        break;
    }
    case WD_DT_Q6_K: {
        const __m128i m3 = _mm_set1_epi8(3), e32 = _mm_set1_epi8(32);
        const float d = wd_f16_at(b + 208);
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int g = 0; g < 8; g++) {
            const int h = g >> 2, k = g & 3;
            const uint8_t *ql = b + 64 * h + 32 * (k & 1), *qh = b + 128 + 32 * h;
            const __m128i sl = _mm_cvtsi32_si128(4 * (k >> 1)), shh = _mm_cvtsi32_si128(2 * k);
            for (int half = 0; half < 2; half++) {
                __m128i q = _mm_and_si128(_mm_srl_epi16(ld16b(ql + 16 * half), sl), m4);
                q = _mm_or_si128(q, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(ld16b(qh + 16 * half), shh), m3), 4));
                __m512 ds = _mm512_set1_ps(d * (float)sc[2 * g + half]);
                _mm512_storeu_ps(y + 32 * g + 16 * half, _mm512_mul_ps(ds, cvt16s(_mm_sub_epi8(q, e32))));
            }
        }
        break;
    }
    default: deq_block(y, b, dt); break;
    }
}
#endif

void wd_cpu_dequant_row(float *dst, const uint8_t *src, wd_dtype dt, int cols) {
    const int bs = wd_dtype_block(dt);
    const size_t bb = block_bytes(dt);
    for (int b = 0; b < cols / bs; b++)
#ifdef WD_AVX512
        deq_block512(dst + (size_t)b * bs, src + (size_t)b * bb, dt);
#else
        deq_block(dst + (size_t)b * bs, src + (size_t)b * bb, dt);
#endif
}

/* ---- scalar GEMV ------------------------------------------------------------ */
static float dot_row_scalar(const uint8_t *w, const float *x, wd_dtype dt, int cols) {
    const int bs = wd_dtype_block(dt);
    const size_t bb = block_bytes(dt);
    float tmp[256], s = 0;
    for (int b = 0; b < cols / bs; b++) {
        deq_block(tmp, w + (size_t)b * bb, dt);
        float bsum = 0;
        for (int i = 0; i < bs; i++) bsum += tmp[i] * x[b * bs + i];
        s += bsum;
    }
    return s;
}

void wd_cpu_quant_gemv_rows_scalar(float *y, const float *x, const void *w, wd_dtype dt, int n,
                                   int rows, int cols, int r0, int r1) {
    const size_t rb = wd_dtype_bytes(dt, cols);
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n; t++)
            y[(size_t)t * rows + r] =
                dot_row_scalar((const uint8_t *)w + (size_t)r * rb, x + (size_t)t * cols, dt, cols);
}

#ifdef WD_AVX2 /* AVX2 without AVX-512 */
#define QUANT_AVX2 1
#endif

void wd_cpu_quant_gemv_rows(float *y, const float *x, const void *w, wd_dtype dt, int n, int rows,
                            int cols, int r0, int r1) {
    /* integer dot products on the tokens quantised to Q8 blocks (gemv_q4.c) */
    wd_q8x_rows_fn fn = wd_cpu_q4x_rows_fn(dt, 1);
    if (fn && n < QUANT_GEMM_MIN_N && wd_cpu_q8x_fits(cols)) {
        wd_cpu_gemv_q8x(y, rows, x, n, cols, w, wd_dtype_bytes(dt, cols), r0, r1, fn);
        return;
    }
    wd_cpu_quant_gemv_rows_scalar(y, x, w, dt, n, rows, cols, r0, r1);
}

/* ---- GEMM: dequantised tiles ------------------------------------------------ */
#ifndef WD_AVX512
/* y[t][r0 + i] (+)= wt[i][0..kc) . x[t][k0..k0+kc) for i < nr, t < n. */
static void tile_product(float *y, int ldy, const float *x, int ldx, int n, const float *wt,
                         int nr, int kc, int accumulate) {
#ifdef QUANT_AVX2
    int i = 0;
    for (; i + 4 <= nr; i += 4) {
        const float *w0 = wt + (size_t)i * kc, *w1 = w0 + kc, *w2 = w1 + kc, *w3 = w2 + kc;
        int t = 0;
        for (; t + 2 <= n; t += 2) {
            const float *xa = x + (size_t)t * ldx, *xb = xa + ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
                   b3 = a0;
            for (int k = 0; k < kc; k += 8) {
                __m256 xv = _mm256_loadu_ps(xa + k), xw = _mm256_loadu_ps(xb + k);
                __m256 v0 = _mm256_load_ps(w0 + k), v1 = _mm256_load_ps(w1 + k);
                __m256 v2 = _mm256_load_ps(w2 + k), v3 = _mm256_load_ps(w3 + k);
                a0 = _mm256_fmadd_ps(v0, xv, a0), b0 = _mm256_fmadd_ps(v0, xw, b0);
                a1 = _mm256_fmadd_ps(v1, xv, a1), b1 = _mm256_fmadd_ps(v1, xw, b1);
                a2 = _mm256_fmadd_ps(v2, xv, a2), b2 = _mm256_fmadd_ps(v2, xw, b2);
                a3 = _mm256_fmadd_ps(v3, xv, a3), b3 = _mm256_fmadd_ps(v3, xw, b3);
            }
            float *ya = y + (size_t)t * ldy + i, *yb = ya + ldy;
            float s[8] = {wd_hsum8(a0), wd_hsum8(a1), wd_hsum8(a2), wd_hsum8(a3),
                          wd_hsum8(b0), wd_hsum8(b1), wd_hsum8(b2), wd_hsum8(b3)};
            for (int j = 0; j < 4; j++) {
                ya[j] = accumulate ? ya[j] + s[j] : s[j];
                yb[j] = accumulate ? yb[j] + s[4 + j] : s[4 + j];
            }
        }
        for (; t < n; t++) {
            const float *xa = x + (size_t)t * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int k = 0; k < kc; k += 8) {
                __m256 xv = _mm256_loadu_ps(xa + k);
                a0 = _mm256_fmadd_ps(_mm256_load_ps(w0 + k), xv, a0);
                a1 = _mm256_fmadd_ps(_mm256_load_ps(w1 + k), xv, a1);
                a2 = _mm256_fmadd_ps(_mm256_load_ps(w2 + k), xv, a2);
                a3 = _mm256_fmadd_ps(_mm256_load_ps(w3 + k), xv, a3);
            }
            float *ya = y + (size_t)t * ldy + i;
            float s[4] = {wd_hsum8(a0), wd_hsum8(a1), wd_hsum8(a2), wd_hsum8(a3)};
            for (int j = 0; j < 4; j++) ya[j] = accumulate ? ya[j] + s[j] : s[j];
        }
    }
    for (; i < nr; i++) {
        const float *w0 = wt + (size_t)i * kc;
        for (int t = 0; t < n; t++) {
            const float *xa = x + (size_t)t * ldx;
            __m256 a0 = _mm256_setzero_ps();
            for (int k = 0; k < kc; k += 8)
                a0 = _mm256_fmadd_ps(_mm256_load_ps(w0 + k), _mm256_loadu_ps(xa + k), a0);
            float *ya = y + (size_t)t * ldy + i;
            *ya = accumulate ? *ya + wd_hsum8(a0) : wd_hsum8(a0);
        }
    }
#else
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < n; t++) {
            const float *xa = x + (size_t)t * ldx, *wr = wt + (size_t)i * kc;
            float s = 0;
            for (int k = 0; k < kc; k++) s += wr[k] * xa[k];
            float *ya = y + (size_t)t * ldy + i;
            *ya = accumulate ? *ya + s : s;
        }
#endif
}
#endif

#ifdef WD_AVX512
/* y[t][0..nr) (+)= wp[k][0..32) . x[t][k] for t < mt <= 14, k < kc: a 14 x 32 register
 * tile (28 zmm), x broadcast from its rows (rows past mt repeat the last one). */
static void tile_product512(float *y, int ldy, const float *x, int ldx, int mt, const float *wp,
                            int nr, int kc, int accumulate) {
    const float *xr[QUANT_MR];
    for (int i = 0; i < QUANT_MR; i++) xr[i] = x + (size_t)(i < mt ? i : mt - 1) * ldx;
    __m512 c[QUANT_MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < QUANT_MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++, wp += 32) {
        __m512 b0 = _mm512_load_ps(wp), b1 = _mm512_load_ps(wp + 16);
#pragma GCC unroll 14
        for (int i = 0; i < QUANT_MR; i++) {
            __m512 a = _mm512_set1_ps(xr[i][k]);
            c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
        }
    }
    wd_store_tile32(y, (size_t)ldy, (const __m512(*)[2])c, mt, nr, accumulate);
}

/* Rows [rt, rt+nr) x columns [k0, k0+kc) dequantised, transposed to wp[kc][32]
 * (rows past nr zero); tmp: [32][QUANT_KC]. */
static void pack_tile512(float *wp, float *tmp, const uint8_t *w, size_t rb, wd_dtype dt, int rt,
                         int nr, int k0, int kc) {
    size_t off = wd_dtype_bytes(dt, k0);
    for (int i = 0; i < 32; i++) {
        if (i < nr) wd_cpu_dequant_row(tmp + (size_t)i * QUANT_KC, w + (size_t)(rt + i) * rb + off, dt, kc);
        else memset(tmp + (size_t)i * QUANT_KC, 0, sizeof(float) * (size_t)kc);
    }
    for (int kk = 0; kk < kc; kk += 16) /* kc is a multiple of 32 */
        for (int h = 0; h < 2; h++) {
            __m512 v[16];
            for (int i = 0; i < 16; i++) v[i] = _mm512_loadu_ps(tmp + (size_t)(16 * h + i) * QUANT_KC + kk);
            wd_transpose16(v);
            for (int j = 0; j < 16; j++) _mm512_store_ps(wp + (size_t)(kk + j) * 32 + 16 * h, v[j]);
        }
}
#endif

typedef struct {
    float *y;
    const float *x;
    const uint8_t *w;
    wd_dtype dt;
    int n, rows, cols, n_units;
} qmm_ctx;

static void qmm_task(void *arg, int task, int n_tasks) {
    const qmm_ctx *c = arg;
    int r0 = (int)((int64_t)c->n_units * task / n_tasks) * QUANT_TILE_ROWS;
    int r1 = (int)((int64_t)c->n_units * (task + 1) / n_tasks) * QUANT_TILE_ROWS;
    if (r1 > c->rows) r1 = c->rows;
    if (r0 >= r1) return;
    if (c->n < QUANT_GEMM_MIN_N) {
        wd_cpu_quant_gemv_rows(c->y, c->x, c->w, c->dt, c->n, c->rows, c->cols, r0, r1);
        return;
    }
    _Alignas(64) float wt[QUANT_TILE_ROWS * QUANT_KC];
    const size_t rb = wd_dtype_bytes(c->dt, c->cols);
    /* K chunks are whole blocks: QUANT_KC is a multiple of every block size */
#ifdef WD_AVX512
    _Alignas(64) float tmp[32 * QUANT_KC];
    for (int rt = r0; rt < r1; rt += 32) {
        int nr = r1 - rt < 32 ? r1 - rt : 32;
        for (int k0 = 0; k0 < c->cols; k0 += QUANT_KC) {
            int kc = c->cols - k0 < QUANT_KC ? c->cols - k0 : QUANT_KC;
            pack_tile512(wt, tmp, c->w, rb, c->dt, rt, nr, k0, kc);
            for (int t0 = 0; t0 < c->n; t0 += QUANT_MR) {
                int mt = c->n - t0 < QUANT_MR ? c->n - t0 : QUANT_MR;
                tile_product512(c->y + (size_t)t0 * c->rows + rt, c->rows,
                                c->x + (size_t)t0 * c->cols + k0, c->cols, mt, wt, nr, kc, k0 > 0);
            }
        }
    }
#else
    for (int rt = r0; rt < r1; rt += QUANT_TILE_ROWS) {
        int nr = r1 - rt < QUANT_TILE_ROWS ? r1 - rt : QUANT_TILE_ROWS;
        for (int k0 = 0; k0 < c->cols; k0 += QUANT_KC) {
            int kc = c->cols - k0 < QUANT_KC ? c->cols - k0 : QUANT_KC;
            size_t off = wd_dtype_bytes(c->dt, k0);
            for (int i = 0; i < nr; i++)
                wd_cpu_dequant_row(wt + (size_t)i * kc, c->w + (size_t)(rt + i) * rb + off, c->dt, kc);
            tile_product(c->y + rt, c->rows, c->x + k0, c->cols, c->n, wt, nr, kc, k0 > 0);
        }
    }
#endif
}

void wd_cpu_quant_matmul(wd_pool *pool, float *y, const float *x, const void *w, wd_dtype dt,
                         int n, int rows, int cols) {
    qmm_ctx c = {y, x, (const uint8_t *)w, dt, n, rows, cols,
                 (rows + QUANT_TILE_ROWS - 1) / QUANT_TILE_ROWS};
    int nt = wd_pool_size(pool);
    if ((int64_t)rows * cols * n < QUANT_SERIAL_ELEMS) nt = 1;
    if (nt > c.n_units) nt = c.n_units;
    if (nt <= 1) qmm_task(&c, 0, 1);
    else wd_pool_run(pool, qmm_task, &c, nt);
}
