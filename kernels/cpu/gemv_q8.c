/* Decode GEMV for block-quantised weights on quantised activations.
 *
 * Converting int8 weights to fp32 per element (vpmovsxbd + vcvtdq2ps + FMA
 * per 16 weights) makes a Q8_0 GEMV compute bound on one core at about a
 * quarter of DRAM bandwidth. As llama.cpp does (its vec_dot_type), the token
 * vector x is quantised once per call to blocks of 32 int8 with one fp32
 * scale (wd_q8x), and each weight block then costs one integer dot product:
 *   AVX-512 VNNI: vpdpbusd(u8 = w ^ 0x80, s8 = xq), started from -128 * sum(xq)
 *                 (so the sum is exactly sum(w * xq)), one instruction per 32 weights;
 *   otherwise:    vpmaddubsw(|w|, sign(xq, w)) + vpmaddwd (no overflow: |w|, |xq| <= 127
 *                 ... or w = -128, whose |w| reads as u8 128: still exact).
 * The exact int32 block sum is converted once and scaled by d_w * d_x.
 *
 * Plugging a new type in (Q4_0 .. Q6_K are, in gemv_q4.c): write a
 * wd_q8x_rows_fn for it (rows [r0, r1), every token of the wd_q8x, each row's
 * arithmetic independent of r0/r1 so thread splits keep bits), and add one
 * line to wd_cpu_gemv_rows (matmul.c):
 *     case WD_DT_Q4_0: wd_cpu_gemv_q8x(y, rows, x, n, cols, w, row_bytes, r0, r1, q4_0_rows); return;
 * wd_cpu_gemv_q8x quantises x (per chunk of tokens, on the stack) and calls it.
 * Types whose blocks are 256 wide (K-quants) read 8 consecutive wd_q8x blocks. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

#ifndef Q8_PF_BYTES
#define Q8_PF_BYTES 8192 /* how far ahead of the 4 row streams, in matrix bytes */
#endif
/* Stack bytes for the quantised tokens of one chunk. */
#define Q8X_STACK 98304

void wd_q8x_quantize_ref(const float *x, int cols, int8_t *q, float *d, int32_t *sum) {
    for (int b = 0; b < cols / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        int s = 0;
        for (int i = 0; i < 32; i++) {
            float v = nearbyintf(xb[i] * id);
            int qi = v > 127 ? 127 : v < -127 ? -127 : (int)v; /* NaN -> 0 via the compares */
            if (!(v == v)) qi = 0;
            q[32 * b + i] = (int8_t)qi;
            s += qi;
        }
        d[b] = db;
        sum[b] = s;
    }
}

/* One token: x[cols] -> xq (cols a multiple of 32). */
static void q8x_quantize(const float *x, int cols, const wd_q8x *xq) {
    int8_t *q = xq->q;
    float *d = xq->d;
    int32_t *init = xq->init;
    const int nb = cols / 32;
#ifdef WD_AVX512
    const __m512 sgn = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int b = 0; b < nb; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        __m512 a = _mm512_max_ps(_mm512_and_ps(v0, sgn), _mm512_and_ps(v1, sgn));
        float amax = _mm512_reduce_max_ps(a);
        if (!(amax == amax)) amax = 0; /* NaN: quantise like the reference (fmaxf skips NaN) */
        float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        __m512 vid = _mm512_set1_ps(id), lim = _mm512_set1_ps(127.0f);
        /* nearest-even rounding (the MXCSR default), clamped, NaN -> 0 */
        __m512 r0 = _mm512_roundscale_ps(_mm512_mul_ps(v0, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r1 = _mm512_roundscale_ps(_mm512_mul_ps(v1, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r0, r0, _CMP_ORD_Q), r0);
        r1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r1, r1, _CMP_ORD_Q), r1);
        r0 = _mm512_max_ps(_mm512_min_ps(r0, lim), _mm512_sub_ps(_mm512_setzero_ps(), lim));
        r1 = _mm512_max_ps(_mm512_min_ps(r1, lim), _mm512_sub_ps(_mm512_setzero_ps(), lim));
        __m512i i0 = _mm512_cvtps_epi32(r0), i1 = _mm512_cvtps_epi32(r1);
        _mm_storeu_si128((__m128i *)(q + 32 * b), _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(q + 32 * b + 16), _mm512_cvtepi32_epi8(i1));
        int s0 = _mm512_reduce_add_epi32(i0), s1 = _mm512_reduce_add_epi32(i1);
        d[b] = db;
        memset(init + 8 * b, 0, 8 * sizeof(int32_t));
        init[8 * b] = -128 * (s0 + s1);
        xq->s16[2 * b] = (float)s0;
        xq->s16[2 * b + 1] = (float)s1;
        xq->xs[b] = db * (float)(s0 + s1);
    }
#else
    int32_t sum[1];
    for (int b = 0; b < nb; b++) {
        wd_q8x_quantize_ref(x + 32 * b, 32, q + 32 * b, d + b, sum);
        memset(init + 8 * b, 0, 8 * sizeof(int32_t));
        init[8 * b] = -128 * sum[0];
        int s0 = 0;
        for (int i = 0; i < 16; i++) s0 += q[32 * b + i];
        xq->s16[2 * b] = (float)s0;
        xq->s16[2 * b + 1] = (float)(sum[0] - s0);
        xq->xs[b] = d[b] * (float)sum[0];
    }
#endif
}

/* Bytes of one quantised token, 64-byte aligned parts: q [cols], d [nb],
 * xs [nb], s16 [2 nb], init [nb][8]. */
static size_t q8x_part_q(int cols) { return ((size_t)cols + 63) / 64 * 64; }
static size_t q8x_part_d(int cols) { return ((size_t)(cols / 32) * 4 + 63) / 64 * 64; }
static size_t q8x_token_bytes(int cols) {
    return q8x_part_q(cols) + 4 * q8x_part_d(cols) + (size_t)(cols / 32) * 32;
}

int wd_cpu_q8x_fits(int cols) { return cols % 32 == 0 && q8x_token_bytes(cols) <= Q8X_STACK; }

void wd_cpu_gemv_q8x(float *y, int ldy, const float *x, int n, int cols, const void *w,
                     size_t row_bytes, int r0, int r1, wd_q8x_rows_fn rows_fn) {
    _Alignas(64) unsigned char buf[Q8X_STACK];
    const size_t per = q8x_token_bytes(cols);
    int chunk = (int)(sizeof buf / per);
    if (chunk > WD_Q8X_MAXT) chunk = WD_Q8X_MAXT;
    wd_q8x xq[WD_Q8X_MAXT];
#if defined(WD_AVX512) || defined(WD_AVX2)
    { /* the kernels prefetch Q8_PF_BYTES ahead of their progress: the first
       * Q8_PF_BYTES of the rows here, requested all at once before the
       * token's quantisation (small matrices, e.g. attention's, are mostly this) */
        const char *p = (const char *)w + (size_t)r0 * row_bytes;
        size_t nbytes = (size_t)(r1 > r0 ? r1 - r0 : 0) * row_bytes;
        if (nbytes > Q8_PF_BYTES) nbytes = Q8_PF_BYTES;
        for (size_t k = 0; k < nbytes; k += 64) _mm_prefetch(p + k, _MM_HINT_T0);
    }
#endif
    for (int t = 0; t < chunk; t++) {
        unsigned char *p = buf + (size_t)t * per;
        xq[t].q = (int8_t *)p;
        xq[t].d = (float *)(p + q8x_part_q(cols));
        xq[t].xs = (float *)(p + q8x_part_q(cols) + q8x_part_d(cols));
        xq[t].s16 = (float *)(p + q8x_part_q(cols) + 2 * q8x_part_d(cols));
        xq[t].init = (int32_t *)(p + q8x_part_q(cols) + 4 * q8x_part_d(cols));
    }
    for (int t0 = 0; t0 < n; t0 += chunk) {
        int nt = n - t0 < chunk ? n - t0 : chunk;
        for (int t = 0; t < nt; t++)
            q8x_quantize(x + (size_t)(t0 + t) * cols, cols, &xq[t]);
        rows_fn(y + (size_t)t0 * ldy, ldy, xq, nt, w, row_bytes, cols, r0, r1);
    }
}

/* ---- Q8_0 weights ------------------------------------------------------- */
#if defined(WD_AVX512) || defined(WD_AVX2)
/* The exact int32 dot of 32 int8 weights and 32 int8 activations, spread over
 * 8 lanes (init: the block's -128 * sum(xq) in lane 0, used by VNNI only). */
static inline __m256i q8_dot32(__m256i w, __m256i xq, __m256i init) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(init, _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80)), xq);
#else
    (void)init;
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

/* R rows (R = 4 or 1; each row's arithmetic is the same either way) x n tokens.
 * The R rows of a tile are contiguous in memory, so the matrix is prefetched
 * as one linear stream Q8_PF_BYTES ahead of the tile's progress (measured on
 * one core from DRAM: 2.3x the per-row-stream prefetch for 1904-byte rows). */
static inline __attribute__((always_inline)) void
q8_0_tile(float *y, int ldy, const wd_q8x *xq, int n, const uint8_t *w, size_t rb, int nb, int r,
          const int R) {
    const uint8_t *wr[4];
    for (int i = 0; i < R; i++) wr[i] = w + (size_t)(r + i) * rb;
    for (int t = 0; t < n; t++) {
        __m256 acc[4];
        for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
        const int8_t *xqt = xq[t].q;
        const int32_t *xi = xq[t].init;
        const float *xd = xq[t].d;
        for (int b = 0; b < nb; b++) {
            const size_t o = (size_t)b * WD_Q8_BYTES;
            if (t == 0) {
                const char *p = (const char *)wr[0] + (size_t)R * o + Q8_PF_BYTES;
                _mm_prefetch(p, _MM_HINT_T0);
                _mm_prefetch(p + 64, _MM_HINT_T0);
                if (R == 4) _mm_prefetch(p + 128, _MM_HINT_T0);
            }
            const __m256i xv = _mm256_load_si256((const __m256i *)(xqt + 32 * b));
            const __m256i iv = _mm256_load_si256((const __m256i *)(xi + 8 * b));
            for (int i = 0; i < R; i++) {
                __m256i s = q8_dot32(_mm256_loadu_si256((const __m256i *)(wr[i] + o + 2)), xv, iv);
                float sc = wd_q8_scale(wr[i] + o) * xd[b];
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(sc), acc[i]);
            }
        }
        for (int i = 0; i < R; i++) y[(size_t)t * ldy + r + i] = wd_hsum8(acc[i]);
    }
}

static void q8_0_tile4(float *y, int ldy, const wd_q8x *xq, int n, const uint8_t *w, size_t rb,
                       int nb, int r) {
    q8_0_tile(y, ldy, xq, n, w, rb, nb, r, 4);
}
static void q8_0_tile1(float *y, int ldy, const wd_q8x *xq, int n, const uint8_t *w, size_t rb,
                       int nb, int r) {
    q8_0_tile(y, ldy, xq, n, w, rb, nb, r, 1);
}
#endif

void wd_cpu_q8_0_rows(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t row_bytes,
                      int cols, int r0, int r1) {
    const int nb = cols / 32;
    const uint8_t *wb = w;
    int r = r0;
#if defined(WD_AVX512) || defined(WD_AVX2)
    for (; r + 4 <= r1; r += 4) q8_0_tile4(y, ldy, xq, n, wb, row_bytes, nb, r);
    for (; r < r1; r++) q8_0_tile1(y, ldy, xq, n, wb, row_bytes, nb, r);
#else
    for (; r < r1; r++)
        for (int t = 0; t < n; t++) {
            const uint8_t *row = wb + (size_t)r * row_bytes;
            float acc = 0;
            for (int b = 0; b < nb; b++) {
                const int8_t *q = (const int8_t *)(row + (size_t)b * WD_Q8_BYTES + 2);
                int s = 0;
                for (int i = 0; i < 32; i++) s += q[i] * xq[t].q[32 * b + i];
                acc += (float)s * (wd_q8_scale(row + (size_t)b * WD_Q8_BYTES) * xq[t].d[b]);
            }
            y[(size_t)t * ldy + r] = acc;
        }
#endif
}
