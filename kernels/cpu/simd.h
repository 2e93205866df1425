/* Private to kernels/cpu: SIMD helpers shared by the CPU kernel files.
 * The AVX-512 paths are compiled when the compiler targets AVX-512F
 * (-march=native on this machine); every kernel also has a portable
 * scalar path, so the library builds and passes its tests anywhere. */
#ifndef WD_KERNELS_CPU_SIMD_H
#define WD_KERNELS_CPU_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define WD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define WD_AVX2 1 /* GEMV only; the rest of an AVX2 build runs the scalar paths */
#endif

#if defined(__x86_64__) || defined(__i386__)
#define WD_CPU_RELAX() __builtin_ia32_pause()
#else
#define WD_CPU_RELAX() ((void)0)
#endif

/* Q8_0 block: f16 scale then 32 int8 quants. */
#define WD_Q8_BLOCK 32
#define WD_Q8_BYTES 34

/* An f16 stored at p (any alignment), as a float: block scales and mins. */
static inline float wd_f16_at(const uint8_t *p) {
    uint16_t d;
    memcpy(&d, p, 2);
#ifdef __F16C__
    return _cvtsh_ss(d);
#else
    return wd_f16_to_f32(d);
#endif
}
static inline float wd_q8_scale(const uint8_t *blk) { return wd_f16_at(blk); }

/* Token vectors quantised to blocks of 32 int8 (gemv_q8.c), for the dot
 * products of block-quantised weights: block b of token t is
 * x[32b..32b+31] ~ d[b] * q[32b..32b+31], |q| <= 127, d = max|x| / 127,
 * q = nearest-even(x * (1/d)) (0 where d is 0). init[8b] = -128 * sum(q of
 * block b), init[8b+1..8b+7] = 0 (the start of a VNNI u8 x s8 dot). The
 * block sums, once per token for the weights' offsets and mins (gemv_q4.c):
 * s16[2b], s16[2b+1] = sum of q over each half of block b (exact, as float),
 * xs[b] = d[b] * (s16[2b] + s16[2b+1]). Every part is 32-byte aligned. */
typedef struct {
    int8_t *q;
    float *d;
    int32_t *init;
    float *s16;
    float *xs;
} wd_q8x;
#define WD_Q8X_MAXT 8
/* y[t*ldy + r] for r in [r0, r1), t < n: row r of W (row_bytes apart, cols
 * wide) dotted with token t. Each row's arithmetic must not depend on r0/r1
 * (thread splits keep bits). */
typedef void (*wd_q8x_rows_fn)(float *y, int ldy, const wd_q8x *xq, int n, const void *w,
                               size_t row_bytes, int cols, int r0, int r1);
/* Whether rows of cols elements can be quantised (cols % 32 == 0, short enough for the stack). */
int wd_cpu_q8x_fits(int cols);
/* Quantises the n tokens x[n][cols] (in chunks of at most WD_Q8X_MAXT) and runs rows_fn. */
void wd_cpu_gemv_q8x(float *y, int ldy, const float *x, int n, int cols, const void *w,
                     size_t row_bytes, int r0, int r1, wd_q8x_rows_fn rows_fn);
/* The reference quantiser (scalar, the definition above; sum[b] = sum of q). */
void wd_q8x_quantize_ref(const float *x, int cols, int8_t *q, float *d, int32_t *sum);
/* Q8_0 weights on quantised tokens. */
void wd_cpu_q8_0_rows(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t row_bytes,
                      int cols, int r0, int r1);
/* Q4_0, Q4_1, Q4_K, Q5_K, Q6_K weights on quantised tokens (gemv_q4.c): the
 * kernel of this build (simd != 0: AVX-512 VNNI or AVX2 where compiled, else
 * scalar) or the portable scalar one; NULL for any other dtype. */
wd_q8x_rows_fn wd_cpu_q4x_rows_fn(wd_dtype dt, int simd);

#if defined(WD_AVX512) || defined(WD_AVX2)
/* Sum of the 8 lanes. */
static inline float wd_hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}
/* acc + the exact int32 dot of 32 u8 (<= 63) and 32 s8 (|s| <= 127), 4 products per lane. */
static inline __m256i wd_dp_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#else /* pairs: 63 * 127 * 2 < 32767, no saturation */
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}
#endif

/* Rows [r0, r1) of y[t][r] = W[r] . x[t] for t < n (matmul.c), on the calling thread. */
void wd_cpu_gemv_rows(float *y, const float *x, const void *w, wd_dtype dt, int n, int rows,
                      int cols, int r0, int r1);

/* wd_matmul runs n >= WD_GEMM_MIN_N tokens as a GEMM (prefill), fewer as GEMVs. */
#define WD_GEMM_MIN_N 8

/* Small-n GEMM, any dtype (gemm_small.c; AVX-512 builds only): whether wd_matmul
 * takes it for (dt, n, cols); its thread-split granule in rows; and rows
 * [r0, r1) of y1 = W1 x (and, if w2, y2 = W2 x, same dtype, sharing the packed
 * tokens), on the calling thread, with xt a 64-byte aligned scratch of
 * WD_SG_XT_FLOATS. */
#define WD_SG_XT_FLOATS 131072
int wd_cpu_sg_fits(wd_dtype dt, int n, int cols);
int wd_cpu_sg_unit(wd_dtype dt, int n);
/* Whether the small-n GEMM rounds the tokens to bf16 for BF16 weights
 * (vdpbf16ps; AVX-512 BF16 builds): then |y - y_fp32| <= 2^-8 sum |w x|
 * plus fp32 rounding. */
int wd_cpu_sg_bf16(void);
void wd_cpu_sg_rows2(float *y1, const void *w1, float *y2, const void *w2, wd_dtype dt,
                     const float *x, int n, int rows, int cols, int r0, int r1, float *xt);

/* g[i] = silu(g[i]) * u[i] for i < n (expert.c; the tail is masked, so the
 * result of an element never depends on where a range starts). */
void wd_cpu_silu_mul(float *g, const float *u, int n);

/* SiLU on a scalar (reference path). */
static inline float wd_silu_scalar(float g) { return g / (1.0f + expf(-g)); }

#ifdef WD_AVX512
/* exp(x) for 16 lanes, Cephes expf polynomial, ~1-2 ulp on [-87, 88];
 * large inputs give inf, very negative ones 0 (scalef handles the scaling). */
static inline __m512 wd_exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-103.0f), hi = _mm512_set1_ps(88.8f);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 wd_tail_mask(int n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

/* The epilogue of a register tile of 32-wide rows (GEMM tiles of matmul.c and
 * quant.c): rows i < mt of c written to y (row stride ldy), nr <= 32 columns,
 * added to what y holds when accumulate. */
static inline void wd_store_tile32(float *y, size_t ldy, const __m512 (*c)[2], int mt, int nr,
                                   int accumulate) {
    __mmask16 m0 = wd_tail_mask(nr), m1 = nr > 16 ? wd_tail_mask(nr - 16) : 0;
    for (int i = 0; i < mt; i++) {
        float *yr = y + (size_t)i * ldy;
        __m512 v0 = c[i][0], v1 = c[i][1];
        if (accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, yr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, yr + 16));
        }
        _mm512_mask_storeu_ps(yr, m0, v0);
        _mm512_mask_storeu_ps(yr + 16, m1, v1);
    }
}

/* The epilogue of a tokens-in-lanes tile (the small-n prefill GEMMs of
 * gemm_small.c and gemm_q8x.c): c[i * nv_max + v] holds row r0 + i, tokens
 * 16 v .. 16 v + 15; tokens t < n of rows i < R are written to y[t * ldy + r0 + i]. */
static inline __attribute__((always_inline)) void
wd_store_lane_tile(float *y, int ldy, int r0, int n, const __m512 *c, int R, int NV, int nv_max) {
    _Alignas(64) float tmp[16][64];
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_store_ps(&tmp[i][16 * v], c[i * nv_max + v]);
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * ldy + r0;
        for (int i = 0; i < R; i++) yt[i] = tmp[i][t];
    }
}

/* 16 converted weights of dtype-specific rows (masked: lanes >= n are 0). */
static inline __m512 wd_load_f16x16(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
static inline __m512 wd_load_bf16x16(const uint16_t *p, __mmask16 m) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline __m512 wd_load_q8x16(const int8_t *q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
}
/* 16 weights of row `row` from column k (k % 16 == 0) of an F32, F16, BF16 or
 * Q8_0 matrix (cols wide) as fp32, lanes outside m zero. */
static inline __m512 wd_load_w16(const void *w, wd_dtype dt, int64_t row, int cols, int k,
                                 __mmask16 m) {
    switch (dt) {
    case WD_DT_F32: return _mm512_maskz_loadu_ps(m, (const float *)w + row * cols + k);
    case WD_DT_F16: return wd_load_f16x16((const uint16_t *)w + row * cols + k, m);
    case WD_DT_BF16: return wd_load_bf16x16((const uint16_t *)w + row * cols + k, m);
    case WD_DT_Q8_0: {
        /* k is a multiple of 16 and cols of 32: always a full half block */
        const uint8_t *blk = (const uint8_t *)w + (size_t)row * (size_t)(cols / 32) * WD_Q8_BYTES +
                             (size_t)(k / 32) * WD_Q8_BYTES;
        return _mm512_mul_ps(_mm512_set1_ps(wd_q8_scale(blk)),
                             wd_load_q8x16((const int8_t *)blk + 2 + (k & 31)));
    }
    default: return _mm512_setzero_ps();
    }
}

/* In-register transpose of a 16x16 block: r[i][j] -> r[j][i]. */
static inline void wd_transpose16(__m512 r[16]) {
    __m512 a[16], b[16];
    for (int m = 0; m < 8; m++) {
        a[2 * m] = _mm512_unpacklo_ps(r[2 * m], r[2 * m + 1]);
        a[2 * m + 1] = _mm512_unpackhi_ps(r[2 * m], r[2 * m + 1]);
    }
    for (int q = 0; q < 4; q++) {
        __m512d s0 = _mm512_castps_pd(a[4 * q]), s1 = _mm512_castps_pd(a[4 * q + 1]);
        __m512d s2 = _mm512_castps_pd(a[4 * q + 2]), s3 = _mm512_castps_pd(a[4 * q + 3]);
        b[4 * q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(s0, s2));
        b[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(s0, s2));
        b[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(s1, s3));
        b[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(s1, s3));
    }
    /* b[4q+c] lane L holds column 4L+c, rows 4q..4q+3 */
    for (int c = 0; c < 4; c++) {
        __m512 t0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0x44);
        __m512 u0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0xee);
        __m512 t1 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0x44);
        __m512 u1 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0xee);
        r[0 + c] = _mm512_shuffle_f32x4(t0, t1, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(t0, t1, 0xdd);
        r[8 + c] = _mm512_shuffle_f32x4(u0, u1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(u0, u1, 0xdd);
    }
}
#endif /* WD_AVX512 */

#endif
