/* The small-n GEMM of prefill (n >= 8 tokens, rows up to 2730 columns), every
 * dtype, AVX-512 builds: tokens in vector lanes, weight rows streamed. F32
 * rows are read in place, BF16 (with AVX-512 BF16) multiplied in place on
 * bf16 tokens, Q4_0/Q4_K/Q5_K (with VNNI) run on Q8 token tiles
 * (gemm_q8x.c), and the other dtypes are converted exactly to fp32 per 256
 * columns of a row tile. wd_matmul (matmul.c) and wd_expert_ffn (expert.c,
 * fused gate/up) call it through wd_cpu_sg_*. */
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

#ifdef WD_AVX512
#ifndef SG_SMALL_N
#define SG_SMALL_N 4096 /* GEMMs up to this many tokens use the small-n path */
#endif

/* ---- small-n GEMM: tokens in vector lanes, weights streamed ------------ */
/* For n <= SG_MAXN tokens per pass (an expert's share of a prompt), repacking
 * each weight panel costs as much as the few FMAs it feeds. Here the tokens
 * are packed once per task as xt[k][NV*16] (NV = ceil(n/16) vectors, zero
 * padded) and a tile of R rows x NV token vectors keeps R*NV accumulators;
 * per k it loads NV token vectors and broadcasts W[r][k]. F32 rows are read
 * in place; other dtypes are converted exactly to fp32, SG_KB columns of the
 * tile's R rows at a time, into an L1 buffer wb[R][SG_KB] (F16 vcvtph2ps,
 * BF16 a shift, Q8_0 d * q, Q4_0 .. Q6_K as llama.cpp's dequantize_row), and
 * broadcast from there. Each output is one fp32 FMA chain over
 * k = 0..cols-1 whatever R, so tails and thread splits give identical bits. */
#define SG_MAXN 48 /* tokens per pass (3 vectors; a 4th spills the packed tokens to L2) */
#define SG_KB 256  /* converted columns per chunk: a multiple of every block size */
#if defined(__AVX512BF16__) && !defined(WD_NO_SG_BF16)
/* BF16 weights: tokens rounded to bf16 once per pass, pairs of columns
 * multiplied exactly and summed in fp32 by vdpbf16ps (llama.cpp's BF16 does
 * the same); the weights are broadcast in place, 2 columns at a time. */
#define SG_BF16 1
#endif

static int sg_rows_per_tile(int nv) { return nv == 1 ? 16 : nv == 2 ? 14 : 9; }

/* Rows [r0, r0+R) x columns [k0, k0+kc) of w (not F32) -> wb[i][0..kc) fp32;
 * prefetches the same columns of the next tile's rows into L2. kc is a whole
 * number of blocks (k0 a multiple of SG_KB). */
static void sg_convert(float *wb, const void *w, wd_dtype dt, int cols, int r0, int R, int k0,
                       int kc) {
    const size_t rb = wd_dtype_bytes(dt, cols), off = wd_dtype_bytes(dt, k0);
    const size_t cb = wd_dtype_bytes(dt, kc);
    for (int i = 0; i < R; i++) {
        const uint8_t *src = (const uint8_t *)w + (size_t)(r0 + i) * rb + off;
        const char *pf = (const char *)src + (size_t)R * rb;
        for (size_t b = 0; b < cb; b += 64) _mm_prefetch(pf + b, _MM_HINT_T1);
        float *d = wb + (size_t)i * SG_KB;
        if (wd_cpu_quant_owns(dt)) {
            wd_cpu_dequant_row(d, src, dt, kc);
            continue;
        }
        for (int kk = 0; kk < kc; kk += 16) {
            __mmask16 m = wd_tail_mask(kc - kk);
            _mm512_mask_store_ps(d + kk, m, wd_load_w16(w, dt, r0 + i, cols, k0 + kk, m));
        }
    }
}

static inline __attribute__((always_inline)) void
sg_kernel(float *y, int ldy, const float *xt, int n, const void *w, wd_dtype dt, int cols, int r0,
          float *wb, const int NV, const int R) {
    __m512 c[16][4];
    const float *wr[16];
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_ps();
    const int ld = NV * 16;
#ifdef SG_BF16
    if (dt == WD_DT_BF16) { /* xt: bf16 pairs [cols/2 rounded up][NV*16] */
        const uint32_t *xp = (const uint32_t *)xt;
        const uint16_t *w16[16];
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) w16[i] = (const uint16_t *)w + (size_t)(r0 + i) * cols;
        const size_t pf = (size_t)R * cols;
        const int np = cols / 2;
        int k = 0;
        for (; k < np; k++) {
            if ((k & 31) == 0)
#pragma GCC unroll 16
                for (int i = 0; i < R; i++) _mm_prefetch((const char *)(w16[i] + pf + 2 * k), _MM_HINT_T1);
            __m512bh xv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) xv[v] = (__m512bh)_mm512_load_si512(xp + (size_t)k * ld + 16 * v);
#pragma GCC unroll 16
            for (int i = 0; i < R; i++) {
                uint32_t pr;
                memcpy(&pr, w16[i] + 2 * k, 4);
                __m512bh b = (__m512bh)_mm512_set1_epi32((int)pr);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) c[i][v] = _mm512_dpbf16_ps(c[i][v], b, xv[v]);
            }
        }
        if (cols & 1) { /* the last column alone: its pair's other half is 0 */
            __m512bh xv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) xv[v] = (__m512bh)_mm512_load_si512(xp + (size_t)k * ld + 16 * v);
#pragma GCC unroll 16
            for (int i = 0; i < R; i++) {
                __m512bh b = (__m512bh)_mm512_set1_epi32((int)w16[i][cols - 1]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) c[i][v] = _mm512_dpbf16_ps(c[i][v], b, xv[v]);
            }
        }
        (void)wb, (void)wr;
        goto store;
    }
#endif
    const int f32 = dt == WD_DT_F32;
    const int kb = f32 ? cols : SG_KB;
    for (int k0 = 0; k0 < cols; k0 += kb) {
        const int kc = cols - k0 < kb ? cols - k0 : kb;
        const float *xk = xt + (size_t)k0 * ld;
        if (f32) {
#pragma GCC unroll 16
            for (int i = 0; i < R; i++) wr[i] = (const float *)w + (size_t)(r0 + i) * cols;
        } else {
            sg_convert(wb, w, dt, cols, r0, R, k0, kc);
#pragma GCC unroll 16
            for (int i = 0; i < R; i++) wr[i] = wb + (size_t)i * SG_KB;
        }
        /* F32: the same columns of the next tile's rows (prefetching ahead in
         * a row would mostly hit the next row of this tile when rows are short) */
        const size_t pf = (size_t)R * cols;
        int k = 0;
        for (; k + 16 <= kc; k += 16) {
            if (f32)
#pragma GCC unroll 16
                for (int i = 0; i < R; i++) _mm_prefetch((const char *)(wr[i] + pf + k), _MM_HINT_T1);
            for (int kk = k; kk < k + 16; kk++) {
                __m512 xv[4];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) xv[v] = _mm512_load_ps(xk + (size_t)kk * ld + 16 * v);
#pragma GCC unroll 16
                for (int i = 0; i < R; i++) {
                    __m512 b = _mm512_set1_ps(wr[i][kk]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(b, xv[v], c[i][v]);
                }
            }
        }
        for (; k < kc; k++) {
            __m512 xv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) xv[v] = _mm512_load_ps(xk + (size_t)k * ld + 16 * v);
#pragma GCC unroll 16
            for (int i = 0; i < R; i++) {
                __m512 b = _mm512_set1_ps(wr[i][k]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(b, xv[v], c[i][v]);
            }
        }
    }
#ifdef SG_BF16
store:;
#endif
    wd_store_lane_tile(y, ldy, r0, n, &c[0][0], R, NV, 4);
}

#define SG_CASE(NV, R)                                                                        \
    static void sg_kernel_##NV##_##R(float *y, int ldy, const float *xt, int n,               \
                                     const void *w, wd_dtype dt, int cols, int r0,            \
                                     float *wb) {                                             \
        sg_kernel(y, ldy, xt, n, w, dt, cols, r0, wb, NV, R);                                 \
    }
SG_CASE(1, 16)
SG_CASE(1, 1)
SG_CASE(2, 14)
SG_CASE(2, 1)
SG_CASE(3, 9)
SG_CASE(3, 1)

/* x[t][k] (t < n) -> xt[k][nv*16], zero padded tokens. */
static void sg_pack_x(float *xt, const float *x, int n, int cols, int nv) {
    const int ld = nv * 16;
    for (int v = 0; v < nv; v++) {
        int nt = n - 16 * v < 16 ? n - 16 * v : 16;
        int k = 0;
        for (; k + 16 <= cols; k += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < nt ? _mm512_loadu_ps(x + (size_t)(16 * v + i) * cols + k)
                              : _mm512_setzero_ps();
            wd_transpose16(r);
            for (int j = 0; j < 16; j++) _mm512_store_ps(xt + (size_t)(k + j) * ld + 16 * v, r[j]);
        }
        for (; k < cols; k++)
            for (int i = 0; i < 16; i++)
                xt[(size_t)k * ld + 16 * v + i] = i < nt ? x[(size_t)(16 * v + i) * cols + k] : 0.0f;
    }
}

#ifdef SG_BF16
/* x[t][k] (t < n) -> xt as bf16 pairs (round to nearest even):
 * dword [k/2][16 v + t] = (bf16 x[t][k], bf16 x[t][k+1]), zero padded. */
static void sg_pack_x_bf16(float *xt, const float *x, int n, int cols, int nv) {
    const int ld = nv * 16;
    for (int v = 0; v < nv; v++) {
        int nt = n - 16 * v < 16 ? n - 16 * v : 16;
        for (int k = 0; k < cols; k += 32) {
            const int rem = cols - k;
            const __mmask16 m0 = wd_tail_mask(rem), m1 = rem > 16 ? wd_tail_mask(rem - 16) : 0;
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                const float *xi = x + (size_t)(16 * v + i) * cols + k;
                r[i] = i < nt ? (__m512)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, xi + 16),
                                                            _mm512_maskz_loadu_ps(m0, xi))
                              : _mm512_setzero_ps();
            }
            wd_transpose16(r);
            const int np = rem >= 32 ? 16 : (rem + 1) / 2;
            for (int j = 0; j < np; j++) _mm512_store_ps(xt + (size_t)(k / 2 + j) * ld + 16 * v, r[j]);
        }
    }
}
#endif

static void sg_rows(float *y, int ldy, const float *xt, int n, int nv, const void *w, wd_dtype dt,
                    int cols, int r0, int r1, float *wb) {
    int r = r0;
    switch (nv) {
#define SG_RUN(NV, RR)                                                                        \
    for (; r + RR <= r1; r += RR) sg_kernel_##NV##_##RR(y, ldy, xt, n, w, dt, cols, r, wb);   \
    for (; r < r1; r++) sg_kernel_##NV##_1(y, ldy, xt, n, w, dt, cols, r, wb);                \
    break;
    case 1: SG_RUN(1, 16)
    case 2: SG_RUN(2, 14)
    default: SG_RUN(3, 9)
#undef SG_RUN
    }
}

/* Passes of at most SG_MAXN tokens, all but the last a multiple of 16. */
static int sg_pass_tokens(int n) {
    const int passes = (n + SG_MAXN - 1) / SG_MAXN;
    return ((n + passes - 1) / passes + 15) & ~15;
}

int wd_cpu_sg_fits(wd_dtype dt, int n, int cols) {
    return (unsigned)dt < WD_DT_COUNT && n >= WD_GEMM_MIN_N && n <= SG_SMALL_N &&
           (int64_t)cols * SG_MAXN <= WD_SG_XT_FLOATS && cols % wd_dtype_block(dt) == 0;
}

int wd_cpu_sg_bf16(void) {
#ifdef SG_BF16
    return 1;
#else
    return 0;
#endif
}

int wd_cpu_sg_unit(wd_dtype dt, int n) {
    if (wd_cpu_q8x_gemm_owns(dt)) return wd_cpu_q8x_gemm_unit(n);
    return sg_rows_per_tile((sg_pass_tokens(n) + 15) / 16);
}

void wd_cpu_sg_rows2(float *y1, const void *w1, float *y2, const void *w2, wd_dtype dt,
                     const float *x, int n, int rows, int cols, int r0, int r1, float *xt) {
    if (wd_cpu_q8x_gemm_owns(dt)) { /* integer dots on quantised tokens: gemm_q8x.c */
        wd_cpu_q8x_gemm_rows2(y1, w1, y2, w2, dt, x, n, rows, cols, r0, r1, xt);
        return;
    }
    const int per = sg_pass_tokens(n);
    _Alignas(64) float wb[16 * SG_KB];
    for (int t0 = 0; t0 < n; t0 += per) {
        int nt = n - t0 < per ? n - t0 : per;
        int nv = (nt + 15) / 16;
#ifdef SG_BF16
        if (dt == WD_DT_BF16) sg_pack_x_bf16(xt, x + (size_t)t0 * cols, nt, cols, nv);
        else
#endif
            sg_pack_x(xt, x + (size_t)t0 * cols, nt, cols, nv);
        sg_rows(y1 + (size_t)t0 * rows, rows, xt, nt, nv, w1, dt, cols, r0, r1, wb);
        if (w2) sg_rows(y2 + (size_t)t0 * rows, rows, xt, nt, nv, w2, dt, cols, r0, r1, wb);
    }
}
#endif /* WD_AVX512 */
