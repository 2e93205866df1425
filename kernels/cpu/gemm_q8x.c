/* Prefill GEMM (n >= 8 tokens) of block-quantised weights on tokens quantised
 * to Q8 blocks, with VNNI integer dot products (AVX-512 VNNI builds).
 *
 * The small-n layout of matmul.c (tokens in vector lanes, weight rows
 * streamed) with integers: per pass of at most 48 tokens, each token is
 * quantised per block of 32 exactly as wd_q8x_quantize_ref (d = max|x| / 127,
 * q = nearest-even(x / d)) and packed as u = q + 128 into xq[k/4][16 tokens][4]
 * (NV = 1..3 vectors of 16 tokens), with d and xs = d sum(q) per block and
 * token. Per chunk of 256 columns, a tile of R rows is unpacked to signed int8
 * codes c (Q4_0: nibble - 8; Q4_K: nibble; Q5_K: 5 bits) with per-32 scales
 * A (d, d sc) and offsets B (0, -dmin mn) and -128 sum(c). Then per block of 32, row and token vector: 8 `vpdpbusd` of u
 * with the row's codes broadcast 4 at a time (started from -128 sum(c), so the
 * int32 lanes hold sum c q exactly), one conversion, and
 * acc += A (d_x sum c q) + B xs. Each output's arithmetic does not depend on
 * the tile or thread split.
 *
 * Accuracy: exact products on the quantised tokens, so, as for decode on Q8
 * tokens, |y - y_fp32| <= sum_c |w_c| d_x(c) / 2 plus fp32 rounding. Only the
 * types whose fp32 prefill (matmul.c) trails llama.cpp's use it: Q8_0 and
 * Q4_1 keep fp32 tokens (exact products; SmolLM2's Q4_1 + Q8_0 prefill
 * stays within 1e-3 of its reference logits). */
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"

#if defined(WD_AVX512) && defined(__AVX512VNNI__)
#define QX_KB 256  /* columns per converted chunk: a multiple of every block size */
#define QX_MAXN 48 /* tokens per pass */

typedef struct {
    _Alignas(64) int8_t q[12][QX_KB]; /* codes */
    int32_t s[12][QX_KB / 32];        /* -128 * sum of a block's codes */
    float a[12][QX_KB / 32], b[12][QX_KB / 32];
} qx_tile;

int wd_cpu_q8x_gemm_owns(wd_dtype dt) {
    return dt == WD_DT_Q4_0 || dt == WD_DT_Q4_K || dt == WD_DT_Q5_K;
}

static int qx_rows_per_tile(int nv) { return nv == 1 ? 12 : nv == 2 ? 6 : 4; }

static int qx_pass_tokens(int n) {
    const int passes = (n + QX_MAXN - 1) / QX_MAXN;
    return ((n + passes - 1) / passes + 15) & ~15;
}

int wd_cpu_q8x_gemm_unit(int n) { return qx_rows_per_tile((qx_pass_tokens(n) + 15) / 16); }

/* -128 * the sum of 32 int8 codes. */
static inline int32_t neg128_sum32(const int8_t *p) {
    __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p), _mm256_set1_epi8((char)0x80));
    __m256i s = _mm256_sad_epu8(v, _mm256_setzero_si256());
    __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi64(t, _mm_unpackhi_epi64(t, t));
    return -128 * ((int32_t)_mm_cvtsi128_si64(t) - 32 * 128);
}

static inline __m128i ld16(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline void st16(int8_t *p, __m128i v) { _mm_storeu_si128((__m128i *)p, v); }

/* Rows [r0, r0+R) x columns [k0, k0+kc) -> t (kc whole blocks); prefetches
 * the same columns of the next tile's rows into L2. */
static void qx_convert(qx_tile *t, const uint8_t *w, wd_dtype dt, int cols, int r0, int R, int k0,
                       int kc) {
    const size_t rb = wd_dtype_bytes(dt, cols), off = wd_dtype_bytes(dt, k0);
    const size_t cb = wd_dtype_bytes(dt, kc);
    const __m128i m4 = _mm_set1_epi8(0xF), e8 = _mm_set1_epi8(8), one = _mm_set1_epi8(1);
    for (int i = 0; i < R; i++) {
        const uint8_t *src = w + (size_t)(r0 + i) * rb + off;
        const char *pf = (const char *)src + (size_t)R * rb;
        for (size_t b = 0; b < cb; b += 64) _mm_prefetch(pf + b, _MM_HINT_T1);
        int8_t *q = t->q[i];
        switch (dt) {
        case WD_DT_Q4_0:
            for (int b = 0; b < kc / 32; b++, src += WD_Q4_0_BYTES) {
                __m128i v = ld16(src + 2);
                st16(q + 32 * b, _mm_sub_epi8(_mm_and_si128(v, m4), e8));
                st16(q + 32 * b + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m4), e8));
                t->a[i][b] = wd_f16_at(src), t->b[i][b] = 0;
            }
            break;
        default: { /* Q4_K, Q5_K: kc is one super-block (QX_KB = 256) */
            const int q5 = dt == WD_DT_Q5_K;
            const float d = wd_f16_at(src), dmin = wd_f16_at(src + 2);
            const uint8_t *qs = src + (q5 ? 48 : 16);
            __m128i ha = ld16(src + 16), hb = ld16(src + 32);
            for (int c = 0; c < 4; c++) {
                __m128i qa = ld16(qs + 32 * c), qb = ld16(qs + 32 * c + 16);
                for (int h = 0; h < 2; h++) {
                    __m128i va = _mm_and_si128(h ? _mm_srli_epi16(qa, 4) : qa, m4);
                    __m128i vb = _mm_and_si128(h ? _mm_srli_epi16(qb, 4) : qb, m4);
                    if (q5) {
                        __m128i sh = _mm_cvtsi32_si128(2 * c + h);
                        va = _mm_or_si128(va, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(ha, sh), one), 4));
                        vb = _mm_or_si128(vb, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(hb, sh), one), 4));
                    }
                    const int j = 2 * c + h;
                    st16(q + 32 * j, va), st16(q + 32 * j + 16, vb);
                    int s, m;
                    wd_k4_scale_min(j, src + 4, &s, &m);
                    t->a[i][j] = d * (float)s, t->b[i][j] = -(dmin * (float)m);
                }
            }
            break;
        }
        }
        for (int b = 0; b < kc / 32; b++) t->s[i][b] = neg128_sum32(q + 32 * b);
    }
}

static inline __attribute__((always_inline)) void
qx_kernel(float *y, int ldy, const uint8_t *xq, const float *xd, const float *xs, int n,
          const uint8_t *w, wd_dtype dt, int cols, int r0, qx_tile *tl, const int NV, const int R) {
    __m512 c[12][3];
    const int has_b = dt != WD_DT_Q4_0;
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_ps();
    for (int k0 = 0; k0 < cols; k0 += QX_KB) {
        const int kc = cols - k0 < QX_KB ? cols - k0 : QX_KB;
        qx_convert(tl, w, dt, cols, r0, R, k0, kc);
        for (int b = 0; b < kc / 32; b++) {
            const int gb = k0 / 32 + b; /* block index in the row */
            const uint8_t *xb = xq + (size_t)gb * 8 * NV * 64;
            __m512i s[12][3];
#pragma GCC unroll 12
            for (int i = 0; i < R; i++) {
                __m512i s0 = _mm512_set1_epi32(tl->s[i][b]);
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++) s[i][v] = s0;
            }
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                __m512i xv[3];
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++) xv[v] = _mm512_load_si512(xb + (size_t)(g * NV + v) * 64);
#pragma GCC unroll 12
                for (int i = 0; i < R; i++) {
                    int32_t wq;
                    memcpy(&wq, &tl->q[i][32 * b + 4 * g], 4);
                    __m512i wv = _mm512_set1_epi32(wq);
#pragma GCC unroll 3
                    for (int v = 0; v < NV; v++) s[i][v] = _mm512_dpbusd_epi32(s[i][v], xv[v], wv);
                }
            }
            __m512 dv[3], sv[3];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) {
                dv[v] = _mm512_load_ps(xd + (size_t)(gb * NV + v) * 16);
                sv[v] = _mm512_load_ps(xs + (size_t)(gb * NV + v) * 16);
            }
#pragma GCC unroll 12
            for (int i = 0; i < R; i++) {
                __m512 a = _mm512_set1_ps(tl->a[i][b]);
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++)
                    c[i][v] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[i][v]), dv[v]), a, c[i][v]);
                if (has_b) {
                    __m512 bb = _mm512_set1_ps(tl->b[i][b]);
#pragma GCC unroll 3
                    for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(sv[v], bb, c[i][v]);
                }
            }
        }
    }
    wd_store_lane_tile(y, ldy, r0, n, &c[0][0], R, NV, 3);
}

#define QX_CASE(NV, R)                                                                        \
    static void qx_kernel_##NV##_##R(float *y, int ldy, const uint8_t *xq, const float *xd,   \
                                     const float *xs, int n, const uint8_t *w, wd_dtype dt,   \
                                     int cols, int r0, qx_tile *tl) {                         \
        qx_kernel(y, ldy, xq, xd, xs, n, w, dt, cols, r0, tl, NV, R);                         \
    }
QX_CASE(1, 12)
QX_CASE(1, 1)
QX_CASE(2, 6)
QX_CASE(2, 1)
QX_CASE(3, 4)
QX_CASE(3, 1)

static void qx_rows(float *y, int ldy, const uint8_t *xq, const float *xd, const float *xs, int n,
                    int nv, const uint8_t *w, wd_dtype dt, int cols, int r0, int r1, qx_tile *tl) {
    int r = r0;
    switch (nv) {
#define QX_RUN(NV, RR)                                                                        \
    for (; r + RR <= r1; r += RR) qx_kernel_##NV##_##RR(y, ldy, xq, xd, xs, n, w, dt, cols, r, tl); \
    for (; r < r1; r++) qx_kernel_##NV##_1(y, ldy, xq, xd, xs, n, w, dt, cols, r, tl);        \
    break;
    case 1: QX_RUN(1, 12)
    case 2: QX_RUN(2, 6)
    default: QX_RUN(3, 4)
#undef QX_RUN
    }
}

/* Tokens x[t][cols] (t < n <= 16 nv) -> xq (u = q + 128, zero-padded tokens
 * are u = 128), xd = d, xs = d sum(q), each [block][nv][16]. */
static void qx_pack(uint8_t *xq, float *xd, float *xs, const float *x, int n, int cols, int nv) {
    const int nb = cols / 32;
    memset(xq, 0x80, (size_t)cols * nv * 16);
    memset(xd, 0, sizeof(float) * (size_t)nb * nv * 16);
    memset(xs, 0, sizeof(float) * (size_t)nb * nv * 16);
    const __m512 sgn = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    const __m512i off = _mm512_set1_epi32(128);
    for (int t = 0; t < n; t++) {
        const int v = t / 16, l = t % 16;
        const float *xt = x + (size_t)t * cols;
        for (int b = 0; b < nb; b++) {
            __m512 v0 = _mm512_loadu_ps(xt + 32 * b), v1 = _mm512_loadu_ps(xt + 32 * b + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(v0, sgn), _mm512_and_ps(v1, sgn)));
            if (!(amax == amax)) amax = 0;
            float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
            __m512 vid = _mm512_set1_ps(id);
            __m512 f0 = _mm512_roundscale_ps(_mm512_mul_ps(v0, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512 f1 = _mm512_roundscale_ps(_mm512_mul_ps(v1, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            f0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(f0, f0, _CMP_ORD_Q), f0);
            f1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(f1, f1, _CMP_ORD_Q), f1);
            __m512i i0 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(f0, lim), nlim));
            __m512i i1 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(f1, lim), nlim));
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
            _Alignas(16) uint32_t u[8];
            _mm_store_si128((__m128i *)u, _mm512_cvtepi32_epi8(_mm512_add_epi32(i0, off)));
            _mm_store_si128((__m128i *)(u + 4), _mm512_cvtepi32_epi8(_mm512_add_epi32(i1, off)));
            for (int g = 0; g < 8; g++)
                memcpy(xq + ((size_t)(8 * b + g) * nv + v) * 64 + 4 * l, &u[g], 4);
            xd[((size_t)b * nv + v) * 16 + l] = db;
            xs[((size_t)b * nv + v) * 16 + l] = db * (float)sum;
        }
    }
}

void wd_cpu_q8x_gemm_rows2(float *y1, const void *w1, float *y2, const void *w2, wd_dtype dt,
                           const float *x, int n, int rows, int cols, int r0, int r1, void *scratch) {
    const int per = qx_pass_tokens(n), nb = cols / 32;
    /* cols * 60 bytes: within WD_SG_XT_FLOATS floats for every cols that
     * wd_cpu_sg_fits (cols * 48 <= WD_SG_XT_FLOATS) */
    uint8_t *xq = scratch;
    float *xd = (float *)(xq + (size_t)cols * QX_MAXN); /* cols * 48 is a multiple of 64 */
    float *xs = xd + (size_t)nb * QX_MAXN;
    qx_tile tl;
    for (int t0 = 0; t0 < n; t0 += per) {
        int nt = n - t0 < per ? n - t0 : per;
        int nv = (nt + 15) / 16;
        qx_pack(xq, xd, xs, x + (size_t)t0 * cols, nt, cols, nv);
        qx_rows(y1 + (size_t)t0 * rows, rows, xq, xd, xs, nt, nv, w1, dt, cols, r0, r1, &tl);
        if (w2) qx_rows(y2 + (size_t)t0 * rows, rows, xq, xd, xs, nt, nv, w2, dt, cols, r0, r1, &tl);
    }
}
#else
int wd_cpu_q8x_gemm_owns(wd_dtype dt) {
    (void)dt;
    return 0;
}
int wd_cpu_q8x_gemm_unit(int n) {
    (void)n;
    return 16;
}
void wd_cpu_q8x_gemm_rows2(float *y1, const void *w1, float *y2, const void *w2, wd_dtype dt,
                           const float *x, int n, int rows, int cols, int r0, int r1, void *scratch) {
    (void)y1, (void)w1, (void)y2, (void)w2, (void)dt, (void)x, (void)n, (void)rows, (void)cols;
    (void)r0, (void)r1, (void)scratch;
}
#endif
