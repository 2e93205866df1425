/* wd_matmul: y[t][r] = sum_c W[r][c] x[t][c] over mapped weights of any dtype.
 *
 * Two regimes:
 *  - n < WD_GEMM_MIN_N (decode): memory bound. Each thread takes one
 *    contiguous block of rows (a multiple of 16, so no two threads write the
 *    same cache line of y) and streams it once, converting weights in
 *    registers (vcvtph2ps for F16, a 16-bit shift for BF16) and accumulating
 *    in fp32 against x in L1: one row at a time for one token (a strictly
 *    sequential stream), 4 rows at a time for 2-7 tokens. Q8_0 runs on
 *    tokens quantised to Q8 blocks with integer dot products (gemv_q8.c).
 *  - n >= WD_GEMM_MIN_N (prefill): compute bound. Rows up to 2730 columns take
 *    the small-n GEMM (gemm_small.c: tokens in vector lanes, every dtype);
 *    longer ones a blocked GEMM: per K block
 *    of 256, x is packed into [k][14 tokens] tiles and each 32-row weight
 *    panel is converted to fp32 and packed into [k][32 rows] (a 16x16
 *    in-register transpose); a 14x32 register tile (28 zmm accumulators,
 *    broadcast x, two weight vectors per k) does the FMAs. Threads split
 *    the weight panels.
 * Without AVX-512, an AVX2+FMA+F16C build uses an 8-lane GEMV for every n
 * and anything else a scalar path (fp32, one row at a time). */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

#define GEMM_MR 14  /* tokens per register tile */
#define GEMM_NR 32  /* weight rows per register tile */
#define GEMM_KC 256 /* K block (a multiple of 32 for Q8_0) */
#define GEMM_MAXT 10 /* token tiles packed at once */

/* Below this many weight elements a matmul runs on the calling thread only. */
#define WD_MATMUL_SERIAL_ELEMS 32768

typedef struct {
    float *y;
    const float *x;
    const void *w;
    wd_dtype dt;
    int n, rows, cols;
    int unit; /* rows (GEMV) or panels (GEMM) are split in blocks of this many */
    int n_units;
} mm_ctx;

static void task_range(const mm_ctx *c, int task, int n_tasks, int *u0, int *u1) {
    *u0 = (int)((int64_t)c->n_units * task / n_tasks);
    *u1 = (int)((int64_t)c->n_units * (task + 1) / n_tasks);
}

/* ---- scalar reference path (also the tail path of no SIMD target) ------ */
static float dot_row_scalar(const float *x, const void *w, wd_dtype dt, int64_t r, int cols) {
    float s = 0;
    switch (dt) {
    case WD_DT_F32: {
        const float *p = (const float *)w + r * cols;
        for (int i = 0; i < cols; i++) s += p[i] * x[i];
        break;
    }
    case WD_DT_F16: {
        const uint16_t *p = (const uint16_t *)w + r * cols;
        for (int i = 0; i < cols; i++) s += wd_f16_to_f32(p[i]) * x[i];
        break;
    }
    case WD_DT_BF16: {
        const uint16_t *p = (const uint16_t *)w + r * cols;
        for (int i = 0; i < cols; i++) s += wd_bf16_to_f32(p[i]) * x[i];
        break;
    }
    case WD_DT_Q8_0: {
        const uint8_t *p = (const uint8_t *)w + (size_t)r * (size_t)(cols / 32) * WD_Q8_BYTES;
        for (int b = 0; b < cols / 32; b++, p += WD_Q8_BYTES) {
            const int8_t *q = (const int8_t *)(p + 2);
            float bs = 0;
            for (int i = 0; i < 32; i++) bs += q[i] * x[b * 32 + i];
            s += wd_q8_scale(p) * bs;
        }
        break;
    }
    default: break;
    }
    return s;
}

#ifdef WD_AVX512
/* ---- GEMV: 4 rows at a time ------------------------------------------- */
/* Software prefetch 1-4 KB ahead (by dtype) in each of the 4 row streams
 * (the hardware prefetchers alone leave a single core well short of DRAM
 * bandwidth with converted dtypes). Past the end of a row the prefetch moves
 * on to the same row of the next 4-row block, so a new block starts warm. */
#define GEMV_PF(T) (sizeof(T) == 4 ? 1024 : sizeof(T) == 2 ? 2048 : 4096)
#define GEMV_PREFETCH4(w0, w1, w2, w3, k, T, row_bytes)                                       \
    do {                                                                                      \
        size_t off_ = (size_t)(k) * sizeof(*(w0)) + GEMV_PF(T);                               \
        if (off_ >= (row_bytes)) off_ += 3 * (size_t)(row_bytes);                             \
        _mm_prefetch((const char *)(w0) + off_, _MM_HINT_T0);                                 \
        _mm_prefetch((const char *)(w1) + off_, _MM_HINT_T0);                                 \
        _mm_prefetch((const char *)(w2) + off_, _MM_HINT_T0);                                 \
        _mm_prefetch((const char *)(w3) + off_, _MM_HINT_T0);                                 \
    } while (0)

#define GEMV_FN(NAME, T, LOAD)                                                                \
    static void NAME(float *y, int ldy, const float *x, int n, int ldx, const T *w, int r0,   \
                     int r1, int cols) {                                                      \
        const int kmain = cols & ~15;                                                         \
        const __mmask16 mt = wd_tail_mask(cols - kmain);                                      \
        int r = r0;                                                                           \
        for (; r + 4 <= r1; r += 4) {                                                         \
            const T *w0 = w + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols,             \
                    *w3 = w2 + cols;                                                          \
            for (int t = 0; t < n; t++) {                                                     \
                const float *xt = x + (size_t)t * ldx;                                        \
                __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                   \
                int k = 0;                                                                    \
                const int kpair = sizeof(T) == 2 ? cols & ~31 : 0;                            \
                __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                    \
                for (; k < kpair; k += 32) { /* 16-bit weights: one 64-byte line per row */   \
                    if (t == 0) GEMV_PREFETCH4(w0, w1, w2, w3, k, T, (size_t)cols * sizeof(T));                         \
                    __m512 xv = _mm512_loadu_ps(xt + k), xw = _mm512_loadu_ps(xt + k + 16);   \
                    a0 = _mm512_fmadd_ps(LOAD(w0 + k, 0xffff), xv, a0);                       \
                    a1 = _mm512_fmadd_ps(LOAD(w1 + k, 0xffff), xv, a1);                       \
                    a2 = _mm512_fmadd_ps(LOAD(w2 + k, 0xffff), xv, a2);                       \
                    a3 = _mm512_fmadd_ps(LOAD(w3 + k, 0xffff), xv, a3);                       \
                    b0 = _mm512_fmadd_ps(LOAD(w0 + k + 16, 0xffff), xw, b0);                  \
                    b1 = _mm512_fmadd_ps(LOAD(w1 + k + 16, 0xffff), xw, b1);                  \
                    b2 = _mm512_fmadd_ps(LOAD(w2 + k + 16, 0xffff), xw, b2);                  \
                    b3 = _mm512_fmadd_ps(LOAD(w3 + k + 16, 0xffff), xw, b3);                  \
                }                                                                             \
                a0 = _mm512_add_ps(a0, b0), a1 = _mm512_add_ps(a1, b1);                       \
                a2 = _mm512_add_ps(a2, b2), a3 = _mm512_add_ps(a3, b3);                       \
                for (; k < kmain; k += 16) {                                                  \
                    if (t == 0) GEMV_PREFETCH4(w0, w1, w2, w3, k, T, (size_t)cols * sizeof(T));                         \
                    __m512 xv = _mm512_loadu_ps(xt + k);                                      \
                    a0 = _mm512_fmadd_ps(LOAD(w0 + k, 0xffff), xv, a0);                       \
                    a1 = _mm512_fmadd_ps(LOAD(w1 + k, 0xffff), xv, a1);                       \
                    a2 = _mm512_fmadd_ps(LOAD(w2 + k, 0xffff), xv, a2);                       \
                    a3 = _mm512_fmadd_ps(LOAD(w3 + k, 0xffff), xv, a3);                       \
                }                                                                             \
                if (k < cols) {                                                               \
                    __m512 xv = _mm512_maskz_loadu_ps(mt, xt + k);                            \
                    a0 = _mm512_fmadd_ps(LOAD(w0 + k, mt), xv, a0);                           \
                    a1 = _mm512_fmadd_ps(LOAD(w1 + k, mt), xv, a1);                           \
                    a2 = _mm512_fmadd_ps(LOAD(w2 + k, mt), xv, a2);                           \
                    a3 = _mm512_fmadd_ps(LOAD(w3 + k, mt), xv, a3);                           \
                }                                                                             \
                float *yt = y + (size_t)t * ldy + r;                                          \
                yt[0] = _mm512_reduce_add_ps(a0);                                             \
                yt[1] = _mm512_reduce_add_ps(a1);                                             \
                yt[2] = _mm512_reduce_add_ps(a2);                                             \
                yt[3] = _mm512_reduce_add_ps(a3);                                             \
            }                                                                                 \
        }                                                                                     \
        for (; r < r1; r++) {                                                                 \
            const T *w0 = w + (size_t)r * cols;                                               \
            for (int t = 0; t < n; t++) {                                                     \
                const float *xt = x + (size_t)t * ldx;                                        \
                __m512 a0 = _mm512_setzero_ps();                                              \
                int k = 0;                                                                    \
                for (; k < kmain; k += 16)                                                    \
                    a0 = _mm512_fmadd_ps(LOAD(w0 + k, 0xffff), _mm512_loadu_ps(xt + k), a0);  \
                if (k < cols)                                                                 \
                    a0 = _mm512_fmadd_ps(LOAD(w0 + k, mt), _mm512_maskz_loadu_ps(mt, xt + k), \
                                         a0);                                                 \
                y[(size_t)t * ldy + r] = _mm512_reduce_add_ps(a0);                            \
            }                                                                                 \
        }                                                                                     \
    }

#define LOAD_F32(p, m) _mm512_maskz_loadu_ps((__mmask16)(m), (p))
#define LOAD_F16(p, m) wd_load_f16x16((p), (__mmask16)(m))
#define LOAD_BF16(p, m) wd_load_bf16x16((p), (__mmask16)(m))
GEMV_FN(gemv_f32, float, LOAD_F32)
GEMV_FN(gemv_f16, uint16_t, LOAD_F16)
GEMV_FN(gemv_bf16, uint16_t, LOAD_BF16)

/* One token (n = 1): one row at a time, so the weights stream strictly
 * sequentially (the hardware prefetchers' best case: 5-10 % more DRAM
 * bandwidth per core than 4 interleaved row streams, measured per
 * CPU-second; software prefetch 2-4 KB ahead measured no better), four
 * accumulators per row. */
#define GEMV1_FN(NAME, T, LOAD)                                                               \
    static void NAME(float *y, const float *x, const T *w, int r0, int r1, int cols) {        \
        const int k64 = cols & ~63, kmain = cols & ~15;                                       \
        const __mmask16 mt = wd_tail_mask(cols - kmain);                                      \
        for (int r = r0; r < r1; r++) {                                                       \
            const T *wr = w + (size_t)r * cols;                                               \
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                       \
            int k = 0;                                                                        \
            for (; k < k64; k += 64) {                                                        \
                a0 = _mm512_fmadd_ps(LOAD(wr + k, 0xffff), _mm512_loadu_ps(x + k), a0);       \
                a1 = _mm512_fmadd_ps(LOAD(wr + k + 16, 0xffff), _mm512_loadu_ps(x + k + 16), a1); \
                a2 = _mm512_fmadd_ps(LOAD(wr + k + 32, 0xffff), _mm512_loadu_ps(x + k + 32), a2); \
                a3 = _mm512_fmadd_ps(LOAD(wr + k + 48, 0xffff), _mm512_loadu_ps(x + k + 48), a3); \
            }                                                                                 \
            for (; k < kmain; k += 16)                                                        \
                a0 = _mm512_fmadd_ps(LOAD(wr + k, 0xffff), _mm512_loadu_ps(x + k), a0);       \
            if (k < cols)                                                                     \
                a1 = _mm512_fmadd_ps(LOAD(wr + k, mt), _mm512_maskz_loadu_ps(mt, x + k), a1); \
            y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1),                  \
                                                      _mm512_add_ps(a2, a3)));                \
        }                                                                                     \
    }
GEMV1_FN(gemv1_f32, float, LOAD_F32)
GEMV1_FN(gemv1_f16, uint16_t, LOAD_F16)
GEMV1_FN(gemv1_bf16, uint16_t, LOAD_BF16)

/* Q8_0: per 32-block, s = q_lo.x_lo + q_hi.x_hi, acc += d * s. */
static inline __m512 q8_block(const uint8_t *blk, __m512 xlo, __m512 xhi, __m512 acc) {
    __m512 s = _mm512_mul_ps(wd_load_q8x16((const int8_t *)blk + 2), xlo);
    s = _mm512_fmadd_ps(wd_load_q8x16((const int8_t *)blk + 18), xhi, s);
    return _mm512_fmadd_ps(_mm512_set1_ps(wd_q8_scale(blk)), s, acc);
}

/* The f16 block scales of 16 consecutive blocks of one row (stride 34 bytes),
 * gathered and converted at once: the FMAs then broadcast them from memory,
 * which is ~20% faster than converting and broadcasting one scale per block. */
static inline void q8_scales16(float *dst, const uint8_t *row_blocks, int nblk) {
    const __m512i offs = _mm512_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238, 272, 306, 340, 374,
                                           408, 442, 476, 510);
    __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), wd_tail_mask(nblk), offs,
                                            (const void *)row_blocks, 1);
    _mm512_store_ps(dst, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)));
}

static void gemv_q8(float *y, int ldy, const float *x, int n, int ldx, const uint8_t *w, int r0,
                    int r1, int cols) {
    const int nb = cols / 32;
    const size_t rb = (size_t)nb * WD_Q8_BYTES;
    _Alignas(64) float scl[4][16];
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint8_t *w0 = w + (size_t)r * rb, *w1 = w0 + rb, *w2 = w1 + rb, *w3 = w2 + rb;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * ldx;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int b0 = 0; b0 < nb; b0 += 16) {
                int nblk = nb - b0 < 16 ? nb - b0 : 16;
                size_t o0 = (size_t)b0 * WD_Q8_BYTES;
                q8_scales16(scl[0], w0 + o0, nblk);
                q8_scales16(scl[1], w1 + o0, nblk);
                q8_scales16(scl[2], w2 + o0, nblk);
                q8_scales16(scl[3], w3 + o0, nblk);
                for (int bb = 0; bb < nblk; bb++) {
                    int b = b0 + bb;
                    size_t o = (size_t)b * WD_Q8_BYTES;
                    if (t == 0 && (b & 1) == 0) GEMV_PREFETCH4(w0, w1, w2, w3, o, uint8_t, rb);
                    __m512 xlo = _mm512_loadu_ps(xt + 32 * b), xhi = _mm512_loadu_ps(xt + 32 * b + 16);
#define Q8_ROW(wr, i, acc)                                                                    \
    {                                                                                         \
        __m512 s_ = _mm512_mul_ps(wd_load_q8x16((const int8_t *)(wr) + o + 2), xlo);          \
        s_ = _mm512_fmadd_ps(wd_load_q8x16((const int8_t *)(wr) + o + 18), xhi, s_);          \
        acc = _mm512_fmadd_ps(_mm512_set1_ps(scl[i][bb]), s_, acc);                           \
    }
                    Q8_ROW(w0, 0, a0)
                    Q8_ROW(w1, 1, a1)
                    Q8_ROW(w2, 2, a2)
                    Q8_ROW(w3, 3, a3)
#undef Q8_ROW
                }
            }
            float *yt = y + (size_t)t * ldy + r;
            yt[0] = _mm512_reduce_add_ps(a0);
            yt[1] = _mm512_reduce_add_ps(a1);
            yt[2] = _mm512_reduce_add_ps(a2);
            yt[3] = _mm512_reduce_add_ps(a3);
        }
    }
    for (; r < r1; r++) {
        const uint8_t *w0 = w + (size_t)r * rb;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * ldx;
            __m512 a0 = _mm512_setzero_ps();
            for (int b = 0; b < nb; b++)
                a0 = q8_block(w0 + (size_t)b * WD_Q8_BYTES, _mm512_loadu_ps(xt + 32 * b),
                              _mm512_loadu_ps(xt + 32 * b + 16), a0);
            y[(size_t)t * ldy + r] = _mm512_reduce_add_ps(a0);
        }
    }
}
#endif /* WD_AVX512 */


#ifdef WD_AVX2
/* ---- AVX2 GEMV (machines without AVX-512): 4 rows x 8 lanes ------------- */
static inline float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}
static inline __m256 avx2_load8(const void *w, wd_dtype dt, size_t i) {
    switch (dt) {
    case WD_DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    case WD_DT_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
    default: return _mm256_loadu_ps((const float *)w + i);
    }
}
static inline __m256 avx2_q8x8(const int8_t *q) {
    int64_t v;
    memcpy(&v, q, 8);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v)));
}

static void gemv_avx2(float *y, const float *x, const void *w, wd_dtype dt, int n, int rows,
                      int cols, int r0, int r1) {
    const int k8 = cols & ~7;
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * cols;
            __m256 a = _mm256_setzero_ps(), b = a;
            float s = 0;
            if (dt == WD_DT_Q8_0) {
                const uint8_t *p = (const uint8_t *)w + (size_t)r * (size_t)(cols / 32) * WD_Q8_BYTES;
                for (int blk = 0; blk < cols / 32; blk++, p += WD_Q8_BYTES) {
                    const int8_t *q = (const int8_t *)(p + 2);
                    __m256 sb = _mm256_mul_ps(avx2_q8x8(q), _mm256_loadu_ps(xt + 32 * blk));
                    sb = _mm256_fmadd_ps(avx2_q8x8(q + 8), _mm256_loadu_ps(xt + 32 * blk + 8), sb);
                    sb = _mm256_fmadd_ps(avx2_q8x8(q + 16), _mm256_loadu_ps(xt + 32 * blk + 16), sb);
                    sb = _mm256_fmadd_ps(avx2_q8x8(q + 24), _mm256_loadu_ps(xt + 32 * blk + 24), sb);
                    a = _mm256_fmadd_ps(_mm256_set1_ps(wd_q8_scale(p)), sb, a);
                }
            } else {
                size_t base = (size_t)r * cols;
                int k = 0;
                for (; k + 16 <= k8; k += 16) {
                    a = _mm256_fmadd_ps(avx2_load8(w, dt, base + k), _mm256_loadu_ps(xt + k), a);
                    b = _mm256_fmadd_ps(avx2_load8(w, dt, base + k + 8), _mm256_loadu_ps(xt + k + 8), b);
                }
                for (; k < k8; k += 8)
                    a = _mm256_fmadd_ps(avx2_load8(w, dt, base + k), _mm256_loadu_ps(xt + k), a);
                for (; k < cols; k++) {
                    float wv = dt == WD_DT_F32    ? ((const float *)w)[base + k]
                               : dt == WD_DT_F16  ? wd_f16_to_f32(((const uint16_t *)w)[base + k])
                                                  : wd_bf16_to_f32(((const uint16_t *)w)[base + k]);
                    s += wv * xt[k];
                }
            }
            y[(size_t)t * rows + r] = hsum8(_mm256_add_ps(a, b)) + s;
        }
}
#endif /* WD_AVX2 */

/* Rows [r0, r1) of y for all n tokens. */
void wd_cpu_gemv_rows(float *y, const float *x, const void *w, wd_dtype dt, int n, int rows,
                      int cols, int r0, int r1) {
    if (wd_cpu_quant_owns(dt)) { /* Q4_0 .. Q6_K: quant.c */
        wd_cpu_quant_gemv_rows(y, x, w, dt, n, rows, cols, r0, r1);
        return;
    }
    /* block-quantised weights, decode: integer dot products on quantised tokens
     * (gemv_q8.c). Only below WD_GEMM_MIN_N tokens, in every build: prefill keeps
     * fp32 tokens also where (without AVX-512) its matmuls run through here. */
    if (dt == WD_DT_Q8_0 && n < WD_GEMM_MIN_N && wd_cpu_q8x_fits(cols)) {
        wd_cpu_gemv_q8x(y, rows, x, n, cols, w, (size_t)(cols / 32) * WD_Q8_BYTES, r0, r1,
                        wd_cpu_q8_0_rows);
        return;
    }
#ifdef WD_AVX512
    if (n == 1) switch (dt) {
        case WD_DT_F32: gemv1_f32(y, x, (const float *)w, r0, r1, cols); return;
        case WD_DT_F16: gemv1_f16(y, x, (const uint16_t *)w, r0, r1, cols); return;
        case WD_DT_BF16: gemv1_bf16(y, x, (const uint16_t *)w, r0, r1, cols); return;
        default: break;
        }
    switch (dt) {
    case WD_DT_F32: gemv_f32(y, rows, x, n, cols, (const float *)w, r0, r1, cols); return;
    case WD_DT_F16: gemv_f16(y, rows, x, n, cols, (const uint16_t *)w, r0, r1, cols); return;
    case WD_DT_BF16: gemv_bf16(y, rows, x, n, cols, (const uint16_t *)w, r0, r1, cols); return;
    case WD_DT_Q8_0: gemv_q8(y, rows, x, n, cols, (const uint8_t *)w, r0, r1, cols); return;
    default: break;
    }
#elif defined(WD_AVX2)
    if ((unsigned)dt < WD_DT_COUNT) {
        gemv_avx2(y, x, w, dt, n, rows, cols, r0, r1);
        return;
    }
#endif
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n; t++)
            y[(size_t)t * rows + r] = dot_row_scalar(x + (size_t)t * cols, w, dt, r, cols);
}

static void gemv_task(void *arg, int task, int n_tasks) {
    const mm_ctx *c = arg;
    int u0, u1;
    task_range(c, task, n_tasks, &u0, &u1);
    int r0 = u0 * c->unit, r1 = u1 * c->unit;
    if (r1 > c->rows) r1 = c->rows;
    if (r0 < r1) wd_cpu_gemv_rows(c->y, c->x, c->w, c->dt, c->n, c->rows, c->cols, r0, r1);
}

#ifdef WD_AVX512
/* ---- GEMM ------------------------------------------------------------- */
/* Weight panel rows [r0, r0+32) x cols [k0, k0+kc) -> wp[kc16][32], fp32, zero padded. */
static void pack_w(float *wp, const void *w, wd_dtype dt, int rows, int cols, int r0, int k0,
                   int kc) {
    for (int kk = 0; kk < kc; kk += 16) {
        __mmask16 m = wd_tail_mask(kc - kk);
        for (int h = 0; h < 2; h++) {
            __m512 v[16];
            for (int i = 0; i < 16; i++) {
                int row = r0 + 16 * h + i;
                v[i] = row < rows ? wd_load_w16(w, dt, row, cols, k0 + kk, m) : _mm512_setzero_ps();
            }
            wd_transpose16(v);
            for (int j = 0; j < 16; j++) _mm512_store_ps(wp + (size_t)(kk + j) * GEMM_NR + 16 * h, v[j]);
        }
    }
}

/* Tokens [t0, t0+nt) x cols [k0, k0+kc) -> tiles of GEMM_MR tokens, each [kc16][MR]. */
static void pack_x(float *xp, const float *x, int cols, int t0, int nt, int k0, int kc, int kc16) {
    for (int j = 0; j * GEMM_MR < nt; j++) {
        float *dst = xp + (size_t)j * kc16 * GEMM_MR;
        int nv = nt - j * GEMM_MR;
        if (nv > GEMM_MR) nv = GEMM_MR;
        for (int kk = 0; kk < kc; kk += 16) {
            __mmask16 m = wd_tail_mask(kc - kk);
            __m512 v[16];
            for (int i = 0; i < 16; i++)
                v[i] = i < nv ? _mm512_maskz_loadu_ps(
                                    m, x + (size_t)(t0 + j * GEMM_MR + i) * cols + k0 + kk)
                              : _mm512_setzero_ps();
            wd_transpose16(v);
            for (int q = 0; q < 16; q++)
                _mm512_mask_storeu_ps(dst + (size_t)(kk + q) * GEMM_MR, (__mmask16)0x3fff, v[q]);
        }
    }
}

/* C[mt x nr] (+)= xp-tile [kc16][14] x wp [kc16][32]; C row i at y + i*ldy. */
static void ukernel(int kc16, const float *xp, const float *wp, float *y, int ldy, int mt,
                    int nr, int accumulate) {
    __m512 c[GEMM_MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < GEMM_MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc16; k++) {
        __m512 b0 = _mm512_load_ps(wp), b1 = _mm512_load_ps(wp + 16);
#pragma GCC unroll 14
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 a = _mm512_set1_ps(xp[i]);
            c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
        }
        xp += GEMM_MR;
        wp += GEMM_NR;
    }
    wd_store_tile32(y, (size_t)ldy, (const __m512(*)[2])c, mt, nr, accumulate);
}

static void gemm_task(void *arg, int task, int n_tasks) {
    const mm_ctx *c = arg;
    int p0, p1;
    task_range(c, task, n_tasks, &p0, &p1);
    if (p0 >= p1) return;
    _Alignas(64) float wp[GEMM_KC * GEMM_NR];
    _Alignas(64) float xp[GEMM_MAXT * GEMM_MR * GEMM_KC];
    const int n = c->n, rows = c->rows, cols = c->cols;
    const int tiles = (n + GEMM_MR - 1) / GEMM_MR;
    const int chunks = (tiles + GEMM_MAXT - 1) / GEMM_MAXT;
    const int tiles_per_chunk = (tiles + chunks - 1) / chunks;
    for (int k0 = 0; k0 < cols; k0 += GEMM_KC) {
        int kc = cols - k0 < GEMM_KC ? cols - k0 : GEMM_KC;
        int kc16 = (kc + 15) & ~15;
        for (int t0 = 0; t0 < n; t0 += tiles_per_chunk * GEMM_MR) {
            int nt = n - t0 < tiles_per_chunk * GEMM_MR ? n - t0 : tiles_per_chunk * GEMM_MR;
            pack_x(xp, c->x, cols, t0, nt, k0, kc, kc16);
            for (int p = p0; p < p1; p++) {
                int r0 = p * GEMM_NR;
                pack_w(wp, c->w, c->dt, rows, cols, r0, k0, kc);
                int nr = rows - r0 < GEMM_NR ? rows - r0 : GEMM_NR;
                for (int j = 0; j * GEMM_MR < nt; j++) {
                    int mt = nt - j * GEMM_MR < GEMM_MR ? nt - j * GEMM_MR : GEMM_MR;
                    ukernel(kc16, xp + (size_t)j * kc16 * GEMM_MR, wp,
                            c->y + (size_t)(t0 + j * GEMM_MR) * rows + r0, rows, mt, nr, k0 > 0);
                }
            }
        }
    }
}

static void sg_task(void *arg, int task, int n_tasks) {
    const mm_ctx *c = arg;
    int u0, u1;
    task_range(c, task, n_tasks, &u0, &u1);
    int r0 = u0 * c->unit, r1 = u1 * c->unit;
    if (r1 > c->rows) r1 = c->rows;
    if (r0 >= r1) return;
    _Alignas(64) float xt[WD_SG_XT_FLOATS];
    wd_cpu_sg_rows2(c->y, c->w, NULL, NULL, c->dt, c->x, c->n, c->rows, c->cols, r0, r1, xt);
}
#endif /* WD_AVX512 */

void wd_matmul(wd_pool *pool, float *y, const float *x, const void *w, wd_dtype dt, int n,
               int rows, int cols) {
    if (n <= 0 || rows <= 0) return;
    if (cols <= 0) {
        memset(y, 0, (size_t)n * rows * sizeof(float));
        return;
    }
    int nth = wd_pool_size(pool);
    if ((int64_t)rows * cols * n < WD_MATMUL_SERIAL_ELEMS) nth = 1;
    mm_ctx c = {y, x, w, dt, n, rows, cols, 16, 0};
#ifdef WD_AVX512
    if (wd_cpu_sg_fits(dt, n, cols)) { /* every dtype */
        c.unit = wd_cpu_sg_unit(dt, n);
        c.n_units = (rows + c.unit - 1) / c.unit;
        int nt = nth < c.n_units ? nth : c.n_units;
        if (nt <= 1) sg_task(&c, 0, 1);
        else wd_pool_run(pool, sg_task, &c, nt);
        return;
    }
#endif
    if (wd_cpu_quant_owns(dt)) { /* Q4_0 .. Q6_K: quant.c */
        wd_cpu_quant_matmul(pool, y, x, w, dt, n, rows, cols);
        return;
    }
#ifdef WD_AVX512
    if (n >= WD_GEMM_MIN_N) {
        c.unit = GEMM_NR;
        c.n_units = (rows + GEMM_NR - 1) / GEMM_NR;
        int nt = nth < c.n_units ? nth : c.n_units;
        if (nt <= 1) gemm_task(&c, 0, 1);
        else wd_pool_run(pool, gemm_task, &c, nt);
        return;
    }
#endif
    c.n_units = (rows + c.unit - 1) / c.unit;
    int nt = nth < c.n_units ? nth : c.n_units;
    if (nt <= 1) gemv_task(&c, 0, 1);
    else wd_pool_run(pool, gemv_task, &c, nt);
}

/* ---- several decode matmuls in one pool run ------------------------------ */
#define MULTI_MAX_JOBS 64

typedef struct {
    const wd_mm_job *jobs;
    int n_jobs, n;
    int64_t unit0[MULTI_MAX_JOBS + 1]; /* first 16-row unit of each job */
    double cost0[MULTI_MAX_JOBS + 1];  /* bytes before each job's first unit */
} multi_ctx;

static double job_unit_bytes(const wd_mm_job *j) {
    return 16.0 * (double)wd_dtype_bytes(j->dt, j->cols) * (j->w3 ? 2 : 1);
}

/* Unit index where the cumulative bytes reach `target` (units are never split). */
static int64_t multi_unit_at(const multi_ctx *c, double target) {
    for (int j = 0; j < c->n_jobs; j++) {
        if (target >= c->cost0[j + 1]) continue;
        double ub = job_unit_bytes(&c->jobs[j]);
        int64_t k = (int64_t)((target - c->cost0[j]) / ub + 0.5);
        int64_t units = c->unit0[j + 1] - c->unit0[j];
        return c->unit0[j] + (k < units ? k : units);
    }
    return c->unit0[c->n_jobs];
}

static void multi_task(void *arg, int task, int n_tasks) {
    const multi_ctx *c = arg;
    const double total = c->cost0[c->n_jobs];
    int64_t u0 = multi_unit_at(c, total * task / n_tasks);
    int64_t u1 = task + 1 == n_tasks ? c->unit0[c->n_jobs] : multi_unit_at(c, total * (task + 1) / n_tasks);
    for (int j = 0; j < c->n_jobs && u0 < u1; j++) {
        if (u0 >= c->unit0[j + 1]) continue;
        const wd_mm_job *jb = &c->jobs[j];
        int64_t e = u1 < c->unit0[j + 1] ? u1 : c->unit0[j + 1];
        int r0 = (int)((u0 - c->unit0[j]) * 16), r1 = (int)((e - c->unit0[j]) * 16);
        if (r1 > jb->rows) r1 = jb->rows;
        wd_cpu_gemv_rows(jb->y, jb->x, jb->w, jb->dt, c->n, jb->rows, jb->cols, r0, r1);
        if (jb->w3) {
            wd_cpu_gemv_rows(jb->u, jb->x, jb->w3, jb->dt, c->n, jb->rows, jb->cols, r0, r1);
            for (int t = 0; t < c->n; t++)
                wd_cpu_silu_mul(jb->y + (size_t)t * jb->rows + r0, jb->u + (size_t)t * jb->rows + r0,
                                r1 - r0);
        }
        u0 = e;
    }
}

void wd_matmul_multi(wd_pool *pool, const wd_mm_job *jobs, int n_jobs, int n) {
    if (n <= 0 || n_jobs <= 0) return;
    if (n >= WD_GEMM_MIN_N || n_jobs > MULTI_MAX_JOBS) {
        for (int j = 0; j < n_jobs; j++) {
            const wd_mm_job *jb = &jobs[j];
            wd_matmul(pool, jb->y, jb->x, jb->w, jb->dt, n, jb->rows, jb->cols);
            if (jb->w3) {
                wd_matmul(pool, jb->u, jb->x, jb->w3, jb->dt, n, jb->rows, jb->cols);
                wd_cpu_silu_mul(jb->y, jb->u, n * jb->rows);
            }
        }
        return;
    }
    multi_ctx c;
    c.jobs = jobs;
    c.n_jobs = n_jobs;
    c.n = n;
    c.unit0[0] = 0;
    c.cost0[0] = 0;
    int64_t elems = 0;
    for (int j = 0; j < n_jobs; j++) {
        const wd_mm_job *jb = &jobs[j];
        int64_t units = jb->rows > 0 && jb->cols > 0 ? (jb->rows + 15) / 16 : 0;
        if (jb->rows > 0 && jb->cols <= 0) /* empty rows: zeros, as wd_matmul */
            for (int t = 0; t < n; t++) memset(jb->y + (size_t)t * jb->rows, 0, (size_t)jb->rows * 4);
        c.unit0[j + 1] = c.unit0[j] + units;
        c.cost0[j + 1] = c.cost0[j] + (double)units * job_unit_bytes(jb);
        elems += (int64_t)jb->rows * (jb->cols > 0 ? jb->cols : 0) * (jb->w3 ? 2 : 1);
    }
    int64_t units = c.unit0[n_jobs];
    if (units == 0) return;
    int nt = wd_pool_size(pool);
    if (elems * n < WD_MATMUL_SERIAL_ELEMS) nt = 1;
    if (nt > units) nt = (int)units;
    if (nt <= 1) multi_task(&c, 0, 1);
    else wd_pool_run(pool, multi_task, &c, nt);
}
