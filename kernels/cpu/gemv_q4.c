/* Decode GEMV for llama.cpp's 4-6 bit block quantisations (Q4_0, Q4_1, Q4_K,
 * Q5_K, Q6_K) on tokens quantised to Q8 blocks of 32 (wd_q8x, gemv_q8.c),
 * with integer dot products, as llama.cpp's vec_dot kernels do.
 *
 * Per 32 weights (one wd_q8x block b): the 4-6 bit codes are unpacked to
 * unsigned bytes u (0..15, 0..31, 0..63) and dotted exactly with the token's
 * int8 q: one vpdpbusd (AVX-512 VNNI) or vpmaddubsw + vpmaddwd (AVX2; pairs
 * stay below 63 * 127 * 2, no saturation). The int32 lanes are converted once
 * and scaled in fp32 by the weight's scale times the token's d[b]:
 *   Q4_0  d (u - 8):  the dot starts from -8 sum(q) (init >> 4), scale d d[b];
 *   Q4_1  d u + m:    scale d d[b], plus m xs[b] (xs = d[b] sum(q), per token);
 *   Q4_K  d sc u - dmin mn per sub-block of 32: scales d sc d[b] (8 at once
 *         per super-block, dots of 4 sub-blocks summed pairwise, one FMA per
 *         4), minus dmin mn xs[b] (one FMA of
 *         8 lanes per super-block);
 *   Q5_K  as Q4_K with the fifth bit from qh;
 *   Q6_K  d sc (u - 32), sc per 16: the dot's low 4 lanes hold the first 16
 *         products, the high 4 the second; 4 blocks' dots are summed pairwise
 *         to [g0 g2 g4 g6 | g1 g3 g5 g7] and scaled by one FMA; the -32
 *         offsets are -32 d sc d[b] s16 (two FMAs per super-block).
 * The token's quantisation (round to 1/254 of a 32-block's max|x|) is the
 * only difference from the fp32 product; docs/kernels.md gives the bound.
 *
 * Q4_0 and Q4_1 take 4 blocks per step: with VNNI the high nibbles are dotted in
 * place (16 u <= 240, exact), the 4 dots summed pairwise by vphaddd into
 * [b0..b3 | b0..b3], one conversion and one FMA with [S0..S3 | S0/16..S3/16];
 * the block scales are converted 8 at a time before (sc, sc8).
 *
 * With AVX-512 VBMI + VNNI (Q4_Z512) Q4_0, Q4_1, Q4_K, Q5_K and Q6_K use 512-bit
 * dots whose lanes each belong to one scale, scaled per lane by one FMA with
 * each scale repeated (sc4, vpermps): no horizontal adds (docs/kernels.md).
 *
 * Tiles of 4 rows (then single rows) share each token block load; a row's
 * arithmetic is the same in either, so thread splits never change a bit. The
 * 4 rows of a tile are adjacent in memory: one linear software prefetch
 * Q4_PF_BYTES (8 KB) ahead, as for Q8_0. Weights are read in place (mmapped GGUF
 * layout, no repacking). The scalar kernels are the portable path and the
 * reference of the tests. */
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

/* VNNI: u8 x s8 dots of up to 255 without saturation, so Q4_0/Q4_1's high
 * nibbles can be dotted in place (x16) instead of shifted down */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define Q4_NIB16 1
#else
#define Q4_NIB16 0
#endif
/* AVX-512 VBMI + VNNI: Q4_0/Q4_1 take 4 blocks per 512-bit step (see q4_quad) */
#if defined(__AVX512VBMI__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define Q4_Z512 1
#else
#define Q4_Z512 0
#endif
#define Q4_CHUNK 64 /* Q4_0/Q4_1 blocks whose scales are converted at once */
#ifndef Q4_PF_BYTES
#define Q4_PF_BYTES 8192
#endif

/* The 8 six-bit scales (bytes 0..7) and mins (bytes 8..15) of a K-quant super-block. */
static inline void k4_unpack(const uint8_t *scales, uint8_t out[16]) {
    uint32_t u[4];
    memcpy(u, scales, 12);
    const uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
    u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
    const uint32_t mins_lo = u[1] & m1;
    u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
    u[2] = mins_lo;
    u[0] &= m1;
    memcpy(out, u, 16);
}

/* ---- scalar kernels --------------------------------------------------------- */
static int dot32_s(const uint8_t *u, const int8_t *q, int off) {
    int s = 0;
    for (int i = 0; i < 32; i++) s += ((int)u[i] - off) * q[i];
    return s;
}

/* Weight codes of 32-block j of a row (u[32], unsigned), per type. */
static void codes_q4_0(const uint8_t *blk, uint8_t *u) {
    for (int i = 0; i < 16; i++) u[i] = blk[2 + i] & 0xF, u[i + 16] = blk[2 + i] >> 4;
}

static float row_scalar(const uint8_t *row, wd_dtype dt, const wd_q8x *x, int nb) {
    uint8_t u[32], sm[16];
    float acc = 0;
    switch (dt) {
    case WD_DT_Q4_0:
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * WD_Q4_0_BYTES;
            codes_q4_0(blk, u);
            acc += (float)dot32_s(u, x->q + 32 * b, 8) * (wd_f16_at(blk) * x->d[b]);
        }
        break;
    case WD_DT_Q4_1:
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * WD_Q4_1_BYTES;
            codes_q4_0(blk + 2, u);
            acc += (float)dot32_s(u, x->q + 32 * b, 0) * (wd_f16_at(blk) * x->d[b]) +
                   wd_f16_at(blk + 2) * x->xs[b];
        }
        break;
    case WD_DT_Q4_K:
    case WD_DT_Q5_K:
        for (int g = 0; g < nb / 8; g++) {
            const int q5 = dt == WD_DT_Q5_K;
            const uint8_t *blk = row + (size_t)g * (q5 ? WD_Q5_K_BYTES : WD_Q4_K_BYTES);
            const uint8_t *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
            const float d = wd_f16_at(blk), dmin = wd_f16_at(blk + 2);
            k4_unpack(blk + 4, sm);
            for (int j = 0; j < 8; j++) {
                const int b = 8 * g + j, c = j / 2, h = j & 1;
                for (int l = 0; l < 32; l++) {
                    u[l] = (qs[32 * c + l] >> (4 * h)) & 0xF;
                    if (q5) u[l] |= ((qh[l] >> j) & 1) << 4;
                }
                acc += (float)dot32_s(u, x->q + 32 * b, 0) * (d * (float)sm[j] * x->d[b]) -
                       dmin * (float)sm[8 + j] * x->xs[b];
            }
        }
        break;
    case WD_DT_Q6_K:
        for (int g = 0; g < nb / 8; g++) {
            const uint8_t *blk = row + (size_t)g * WD_Q6_K_BYTES;
            const int8_t *sc = (const int8_t *)(blk + 192);
            const float d = wd_f16_at(blk + 208);
            for (int j = 0; j < 8; j++) {
                const int b = 8 * g + j, h = j / 4, k = j & 3;
                const uint8_t *ql = blk + 64 * h + 32 * (k & 1), *qh = blk + 128 + 32 * h;
                for (int l = 0; l < 32; l++)
                    u[l] = (uint8_t)(((ql[l] >> (4 * (k >> 1))) & 0xF) | (((qh[l] >> (2 * k)) & 3) << 4));
                for (int half = 0; half < 2; half++) {
                    int s = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++) s += ((int)u[l] - 32) * x->q[32 * b + l];
                    acc += (float)s * (d * (float)sc[2 * j + half] * x->d[b]);
                }
            }
        }
        break;
    default: break;
    }
    return acc;
}

#define SCALAR_ROWS(NAME, DT)                                                                  \
    static void NAME(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t rb,     \
                     int cols, int r0, int r1) {                                               \
        for (int r = r0; r < r1; r++)                                                          \
            for (int t = 0; t < n; t++)                                                        \
                y[(size_t)t * ldy + r] =                                                       \
                    row_scalar((const uint8_t *)w + (size_t)r * rb, DT, &xq[t], cols / 32);    \
    }
SCALAR_ROWS(q4_0_rows_scalar, WD_DT_Q4_0)
SCALAR_ROWS(q4_1_rows_scalar, WD_DT_Q4_1)
SCALAR_ROWS(q4_k_rows_scalar, WD_DT_Q4_K)
SCALAR_ROWS(q5_k_rows_scalar, WD_DT_Q5_K)
SCALAR_ROWS(q6_k_rows_scalar, WD_DT_Q6_K)

#if defined(WD_AVX512) || defined(WD_AVX2)
/* ---- SIMD kernels (256-bit; VNNI where the build has it) --------------------- */
#define Q4_SIMD 1
#define LD256(p) _mm256_loadu_si256((const __m256i *)(p))

/* Prefetch the lines of the 4-row (or 1-row) stream that block o of each row
 * moves the tile over: R * bb bytes, Q4_PF_BYTES ahead. A macro: GCC finds a
 * helper function of prefetches alone "const" and drops its calls. */
#define PF_TILE(w0, o, bb, R)                                                                  \
    do {                                                                                       \
        const char *p_ = (const char *)(w0) + (size_t)(R) * (o) + Q4_PF_BYTES;                 \
        for (size_t k_ = 0; k_ < (size_t)(R) * (bb); k_ += 64) _mm_prefetch(p_ + k_, _MM_HINT_T0); \
    } while (0)

enum { T_Q4_0, T_Q4_1, T_Q4_K, T_Q5_K, T_Q6_K };

/* k4_unpack in a register (no store-to-load round trip): 16 bytes read at the
 * scales (the last 4 are the super-block's next bytes, unused); words
 * [sc0-3 | sc4-7 | mn0-3 | mn4-7] */
static inline __m128i k4_unpack_v(const uint8_t *scales) {
    const __m128i v = _mm_loadu_si128((const __m128i *)scales);
    const __m128i a = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
    return _mm_or_si128(_mm_and_si128(a, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f)),
                        _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030)));
}

#if Q4_Z512
/* The sums of a0..a3's 16 lanes, in that order: lane-wise adds only, so a
 * row's sum takes the same steps whatever the other three are (a single row
 * passes itself 4 times); 14 instructions for 4 rows instead of 4 reductions. */
static inline __m128 hsum4_z(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 t0 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    const __m512 t1 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(t0, t1, 0x88), _mm512_shuffle_f32x4(t0, t1, 0xDD));
    u = _mm512_add_ps(u, _mm512_permute_ps(u, 0x4E));
    u = _mm512_add_ps(u, _mm512_permute_ps(u, 0xB1));
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), u));
}

/* Gather indices for 4 Q4_0/Q4_1 blocks of bb bytes (codes at qo) loaded as a
 * pair of vectors (16 bytes at 0, 64 bytes at 4 bb - 64): bix[16 j + l] is byte l
 * of block j's codes; words 4j..4j+3 of dix / mix are block j's f16 scale d (at
 * j bb) / its min m (at j bb + 2); the upper 16 words are 0. */
static void q4_pair_index(int bb, int qo, uint8_t bix[64], uint16_t dix[32], uint16_t mix[32]) {
    const int base = 4 * bb - 64;
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) {
            const int off = j * bb + qo + l;
            bix[16 * j + l] = (uint8_t)(off >= base ? 64 + off - base : off);
        }
    for (int w = 0; w < 32; w++) dix[w] = mix[w] = 0;
    for (int w = 0; w < 16; w++) {
        const int od = w / 4 * bb, om = od + 2;
        dix[w] = (uint16_t)(od >= base ? 32 + (od - base) / 2 : od / 2);
        mix[w] = (uint16_t)(om >= base ? 32 + (om - base) / 2 : om / 2);
    }
}

/* One row's 4 Q4_0/Q4_1 blocks at p (bb bytes each; gathered by q4_pair_index's
 * bidx/didx/midx from an xmm and a zmm load that end where the 4th block ends)
 * against the token's xlo/xhi codes, block j in lanes 4j..4j+3: acc += (dot + iv)
 * d_w dx4 (iv: Q4_0's -8 sum(q) term), and for Q4_1 acc2 += m xs4. */
static inline __attribute__((always_inline)) void
q4_row_step(const uint8_t *p, size_t bb, __m512i bidx, __m512i didx, __m512i midx, __m512i m4z,
            __m512i iv, __m512i xlo, __m512i xhi, __m512 dx4, __m512 xs4, __m512 *acc, __m512 *acc2,
            const int T) {
    const __m512i A = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p)),
                  B = _mm512_loadu_si512(p + 4 * bb - 64);
    const __m512i q = _mm512_permutex2var_epi8(A, bidx, B);
    __m512i s = _mm512_dpbusd_epi32(iv, _mm512_and_si512(q, m4z), xlo);
    s = _mm512_dpbusd_epi32(s, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4z), xhi);
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(A, didx, B)));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx4), *acc);
    if (T == T_Q4_1) { /* the mins, m xs per block (lanes 4j) */
        const __m512i mh = _mm512_maskz_permutex2var_epi16(0x1111, A, midx, B);
        *acc2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(mh)), xs4, *acc2);
    }
}

/* y[0..R) = the lane sums of a[0..R) plus m[0..R) (R = 4 or 1, same bits per row). */
static inline void store_sums_z(float *y, const __m512 *a, const float *m, const int R) {
    if (R == 4) _mm_storeu_ps(y, _mm_add_ps(hsum4_z(a[0], a[1], a[2], a[3]), _mm_loadu_ps(m)));
    else _mm_store_ss(y, _mm_add_ss(hsum4_z(a[0], a[0], a[0], a[0]), _mm_load_ss(m)));
}
#endif

/* R rows (4 or 1; the same arithmetic per row either way) x n tokens. */
static inline __attribute__((always_inline)) void
q4_tile(float *y, int ldy, const wd_q8x *xq, int n, const uint8_t *w, size_t rb, int nb, int r,
        const int R, const int T) {
    const uint8_t *wr[4];
    for (int i = 0; i < R; i++) wr[i] = w + (size_t)(r + i) * rb;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int t = 0; t < n; t++) {
        const int8_t *xqt = xq[t].q;
        const float *xd = xq[t].d, *xs = xq[t].xs;
        __m256 acc[4], acc2[4];
        float macc[4];
        for (int i = 0; i < R; i++) acc[i] = acc2[i] = _mm256_setzero_ps(), macc[i] = 0;
#if Q4_Z512
        __m512 accz[4], accz2[4];
        for (int i = 0; i < R; i++) accz[i] = accz2[i] = _mm512_setzero_ps();
#endif
        if (T == T_Q4_0 || T == T_Q4_1) {
            const size_t bb = T == T_Q4_0 ? WD_Q4_0_BYTES : WD_Q4_1_BYTES;
            const int qo = T == T_Q4_0 ? 2 : 4;
            const __m256i nshift = _mm256_setr_epi64x(0, 0, 4, 4);
            const __m256i nib16 = _mm256_setr_epi64x(0x0f0f0f0f0f0f0f0f, 0x0f0f0f0f0f0f0f0f,
                                                     (long long)0xf0f0f0f0f0f0f0f0ull, (long long)0xf0f0f0f0f0f0f0f0ull);
            (void)nib16;
#if Q4_Z512
            _Alignas(64) uint8_t bix[64];
            _Alignas(64) uint16_t dix[32], mix[32];
            q4_pair_index((int)bb, qo, bix, dix, mix);
            const __m512i didx = _mm512_load_si512(dix), midx = _mm512_load_si512(mix);
            const __m512i rep4 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
            const __m512i bidx = _mm512_load_si512(bix), m4z = _mm512_set1_epi8(0xF);
            const __m512i gidx = _mm512_setr_epi32(0, 0, 0, 0, 8, 0, 0, 0, 16, 0, 0, 0, 24, 0, 0, 0);
#endif
            for (int b0 = 0; b0 < nb; b0 += Q4_CHUNK) {
                const int nc = nb - b0 < Q4_CHUNK ? nb - b0 : Q4_CHUNK, n8 = nc & ~7;
                (void)n8;
                /* the chunk's block scales d_w d_x per row, 8 at a time: the f16
                 * fields are copied by the scalar units, converted by one vcvtph2ps
                 * per 8 blocks; the main loops load them from L1 */
#if !Q4_Z512
                _Alignas(32) uint16_t dh[Q4_CHUNK];
#endif
                _Alignas(32) float sc[4][Q4_CHUNK];
#if Q4_NIB16 && !Q4_Z512
                _Alignas(32) float sc8[4][2 * Q4_CHUNK];
#endif
#if Q4_Z512
                /* the 4-block steps convert their scales in place; the tail's here */
                for (int i = 0; i < R; i++)
                    for (int k = nc & ~3; k < nc; k++) sc[i][k] = wd_f16_at(wr[i] + (size_t)(b0 + k) * bb) * xd[b0 + k];
#else
                for (int i = 0; i < R; i++) {
                    const uint8_t *p = wr[i] + (size_t)b0 * bb;
                    for (int k = 0; k < nc; k++, p += bb) memcpy(&dh[k], p, 2);
                    for (int k = 0; k < n8; k += 8) {
                        __m256 d = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(dh + k)));
                        __m256 S = _mm256_mul_ps(d, _mm256_loadu_ps(xd + b0 + k));
                        _mm256_store_ps(&sc[i][k], S);
#if Q4_NIB16
                        /* per 4 blocks [S0..S3 | S0/16..S3/16] (see the 4-block loop) */
                        const __m256 sixteenth = _mm256_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f);
                        _mm256_store_ps(&sc8[i][2 * k], _mm256_mul_ps(_mm256_permute2f128_ps(S, S, 0x00), sixteenth));
                        _mm256_store_ps(&sc8[i][2 * k + 8], _mm256_mul_ps(_mm256_permute2f128_ps(S, S, 0x11), sixteenth));
#endif
                    }
                    for (int k = n8; k < nc; k++) sc[i][k] = wd_f16_to_f32(dh[k]) * xd[b0 + k];
                }
#endif
                int k = 0;
                /* 4 blocks at a time: their int32 dots summed pairwise (3 vphaddd) to
                 * [b0 b1 b2 b3 | b0 b1 b2 b3] halves, one conversion and one FMA with
                 * the 4 scales in both halves (half the multiply-pipe work) */
#if Q4_Z512
                /* 4 blocks per 512-bit step: their 4 x 16 code bytes gathered by one
                 * vpermi2b from an xmm and a zmm load that end where the 4th block
                 * ends (never past the row); the low nibbles dotted with the tokens'
                 * first 16 values of each block, the high ones with the last 16 (xlo,
                 * xhi: one shuffle each, shared by the tile's rows); block j's dot
                 * lies in lanes 4j..4j+3, converted and scaled by one FMA with each
                 * scale 4 times (its f16 words gathered from the same two loads by one
                 * vpermi2w, Q4_1's mins likewise): no horizontal adds */
                for (; k + 4 <= nc; k += 4) {
                    const int b = b0 + k;
                    const size_t o = (size_t)b * bb;
                    if (t == 0) PF_TILE(wr[0], o, 4 * bb, R);
                    const __m512i X0 = _mm512_loadu_si512(xqt + 32 * b), X1 = _mm512_loadu_si512(xqt + 32 * b + 64);
                    const __m512i xlo = _mm512_shuffle_i64x2(X0, X1, 0x88), xhi = _mm512_shuffle_i64x2(X0, X1, 0xDD);
                    __m512i iv = _mm512_setzero_si512();
                    if (T == T_Q4_0) { /* -8 sum(q) = init >> 4 of each block, at lane 4j */
                        const __m512i I0 = _mm512_loadu_si512(xq[t].init + 8 * b),
                                      I1 = _mm512_loadu_si512(xq[t].init + 8 * b + 16);
                        iv = _mm512_srai_epi32(_mm512_maskz_permutex2var_epi32(0x1111, I0, gidx, I1), 4);
                    }
                    const __m512 dx4 = _mm512_permutexvar_ps(rep4, _mm512_castps128_ps512(_mm_loadu_ps(xd + b)));
                    const __m512 xs4 = T == T_Q4_1 ? _mm512_permutexvar_ps(rep4, _mm512_castps128_ps512(_mm_loadu_ps(xs + b)))
                                                   : _mm512_setzero_ps();
                    _Pragma("GCC unroll 4") for (int i = 0; i < R; i++)
                        q4_row_step(wr[i] + o, bb, bidx, didx, midx, m4z, iv, xlo, xhi, dx4, xs4,
                                    &accz[i], &accz2[i], T);
                }
#else
                for (; k + 4 <= n8; k += 4) { /* sc8 covers the whole 8-groups */
                    const int b = b0 + k;
                    const size_t o = (size_t)b * bb;
                    if (t == 0) PF_TILE(wr[0], o, 4 * bb, R);
                    __m256i xv4[4], iv4[4];
                    for (int j = 0; j < 4; j++) {
                        xv4[j] = _mm256_load_si256((const __m256i *)(xqt + 32 * (b + j)));
                        /* the dot of (u - 8) starts from -8 sum(q) = init >> 4 (lane 0,
                         * in the low half: scaled by S, not S/16) */
                        iv4[j] = T == T_Q4_0 ? _mm256_srai_epi32(_mm256_load_si256((const __m256i *)(xq[t].init + 8 * (b + j))), 4)
                                             : _mm256_setzero_si256();
                    }
                    for (int i = 0; i < R; i++) {
                        __m256i sj[4];
                        for (int j = 0; j < 4; j++) {
                            __m256i q = _mm256_broadcastsi128_si256(
                                _mm_loadu_si128((const __m128i *)(wr[i] + o + (size_t)j * bb + qo)));
#if Q4_NIB16
                            /* high nibbles in place (16 u), no shift: their dot is 16x,
                             * undone by the S/16 of the upper half of sc8 */
                            sj[j] = wd_dp_u8s8(iv4[j], _mm256_and_si256(q, nib16), xv4[j]);
#else
                            sj[j] = wd_dp_u8s8(iv4[j], _mm256_and_si256(_mm256_srlv_epi64(q, nshift), m4), xv4[j]);
#endif
                        }
                        __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(sj[0], sj[1]), _mm256_hadd_epi32(sj[2], sj[3]));
#if Q4_NIB16
                        __m256 S = _mm256_load_ps(&sc8[i][2 * k]);
#else
                        __m256 S = _mm256_broadcast_ps((const __m128 *)&sc[i][k]);
#endif
                        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), S, acc[i]);
                        if (T == T_Q4_1) /* the mins, m xs per block */
                            for (int j = 0; j < 4; j++) macc[i] += wd_f16_at(wr[i] + o + (size_t)j * bb + 2) * xs[b + j];
                    }
                }
#endif
                for (; k < nc; k++) {
                    const int b = b0 + k;
                    const size_t o = (size_t)b * bb;
                    if (t == 0) PF_TILE(wr[0], o, bb, R);
                    const __m256i xv = _mm256_load_si256((const __m256i *)(xqt + 32 * b));
                    const __m256i iv = T == T_Q4_0 ? _mm256_srai_epi32(_mm256_load_si256((const __m256i *)(xq[t].init + 8 * b)), 4)
                                                   : _mm256_setzero_si256();
                    for (int i = 0; i < R; i++) {
                        /* 16 bytes in both halves, the high half shifted by 4: the
                         * low nibbles (weights 0-15), then the high ones (16-31) */
                        __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(wr[i] + o + qo)));
                        __m256i u = _mm256_and_si256(_mm256_srlv_epi64(q, nshift), m4);
                        __m256i s = wd_dp_u8s8(iv, u, xv);
                        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_broadcast_ss(&sc[i][k]), acc[i]);
                        if (T == T_Q4_1) macc[i] += wd_f16_at(wr[i] + o + 2) * xs[b];
                    }
                }
            }
#if Q4_Z512
        } else if (T == T_Q4_K || T == T_Q5_K) {
            /* 512-bit: 64 code bytes (chunks c, c+1) per load; their low nibbles are
             * sub-blocks 2c, 2c+2, the high ones 2c+1, 2c+3, dotted with the tokens'
             * sub-blocks in that order (x02, x13, x46, x57: shuffles shared by the
             * rows); each sub-block's dot in 8 lanes, converted and scaled by one
             * FMA per 2 sub-blocks with each scale 8 times: no horizontal adds */
            const __m512i m4z = _mm512_set1_epi8(0xF);
            const __m512i rep = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
            const __m512i rA = rep, rB = _mm512_add_epi32(rep, _mm512_set1_epi32(1)),
                          rC = _mm512_add_epi32(rep, _mm512_set1_epi32(4)),
                          rD = _mm512_add_epi32(rep, _mm512_set1_epi32(5));
            /* Q5_K's fifth bits: bit j of qh for sub-block j, to bit 4 by one
             * 16-bit shift per 256-bit half ([4|2] for 2c, 2c+2, [3|1] for 2c+1,
             * 2c+3, after qh >> 4 for c = 2) and a mask */
            const int q5 = T == T_Q5_K;
            const size_t bb = q5 ? WD_Q5_K_BYTES : WD_Q4_K_BYTES;
            const __m512i m10z = _mm512_set1_epi8(0x10);
            const __m512i shl = _mm512_setr_epi64(0x0004000400040004, 0x0004000400040004, 0x0004000400040004, 0x0004000400040004,
                                                  0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0x0002000200020002);
            const __m512i shh = _mm512_sub_epi16(shl, _mm512_set1_epi16(1));
            for (int g = 0; g < nb / 8; g++) {
                const size_t o = (size_t)g * bb;
                if (t == 0) PF_TILE(wr[0], o, bb, R);
                const __m256 dx = _mm256_load_ps(xd + 8 * g), xsv = _mm256_load_ps(xs + 8 * g);
                const int8_t *xb = xqt + 256 * g;
                const __m512i X0 = _mm512_loadu_si512(xb), X1 = _mm512_loadu_si512(xb + 64),
                              X2 = _mm512_loadu_si512(xb + 128), X3 = _mm512_loadu_si512(xb + 192);
                const __m512i x02 = _mm512_shuffle_i64x2(X0, X1, 0x44), x13 = _mm512_shuffle_i64x2(X0, X1, 0xEE);
                const __m512i x46 = _mm512_shuffle_i64x2(X2, X3, 0x44), x57 = _mm512_shuffle_i64x2(X2, X3, 0xEE);
                _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {
                    const uint8_t *blk = wr[i] + o, *qs = blk + (q5 ? 48 : 16);
                    const __m128i smv = k4_unpack_v(blk + 4);
                    __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(smv));
                    __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(smv, 8)));
                    __m256 S = _mm256_mul_ps(_mm256_mul_ps(scf, _mm256_set1_ps(wd_f16_at(blk))), dx);
                    acc2[i] = _mm256_fnmadd_ps(_mm256_mul_ps(mnf, _mm256_set1_ps(wd_f16_at(blk + 2))),
                                               xsv, acc2[i]);
                    const __m512 S5 = _mm512_castps256_ps512(S);
                    const __m512i q0 = _mm512_loadu_si512(qs), q1 = _mm512_loadu_si512(qs + 64);
                    const __m512i z = _mm512_setzero_si512();
                    __m512i u0 = _mm512_and_si512(q0, m4z), u1 = _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4z);
                    __m512i u2 = _mm512_and_si512(q1, m4z), u3 = _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4z);
                    if (q5) {
                        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16)));
                        const __m512i qh4 = _mm512_srli_epi16(qh, 4);
                        u0 = _mm512_or_si512(u0, _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m10z));
                        u1 = _mm512_or_si512(u1, _mm512_and_si512(_mm512_sllv_epi16(qh, shh), m10z));
                        u2 = _mm512_or_si512(u2, _mm512_and_si512(_mm512_sllv_epi16(qh4, shl), m10z));
                        u3 = _mm512_or_si512(u3, _mm512_and_si512(_mm512_sllv_epi16(qh4, shh), m10z));
                    }
                    __m512i d0 = _mm512_dpbusd_epi32(z, u0, x02), d1 = _mm512_dpbusd_epi32(z, u1, x13);
                    __m512i d2 = _mm512_dpbusd_epi32(z, u2, x46), d3 = _mm512_dpbusd_epi32(z, u3, x57);
                    accz[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(rA, S5), accz[i]);
                    accz2[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(rB, S5), accz2[i]);
                    accz[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d2), _mm512_permutexvar_ps(rC, S5), accz[i]);
                    accz2[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d3), _mm512_permutexvar_ps(rD, S5), accz2[i]);
                }
            }
#endif
        } else if (T == T_Q4_K || T == T_Q5_K) {
            const int q5 = T == T_Q5_K;
            const size_t bb = q5 ? WD_Q5_K_BYTES : WD_Q4_K_BYTES;
            for (int g = 0; g < nb / 8; g++) {
                const size_t o = (size_t)g * bb;
                if (t == 0) PF_TILE(wr[0], o, bb, R);
                const __m256 dx = _mm256_load_ps(xd + 8 * g), xsv = _mm256_load_ps(xs + 8 * g);
                for (int i = 0; i < R; i++) {
                    const uint8_t *blk = wr[i] + o, *qs = blk + (q5 ? 48 : 16);
                    const __m128i smv = k4_unpack_v(blk + 4);
                    __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(smv));
                    __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(smv, 8)));
                    __m256 S = _mm256_mul_ps(_mm256_mul_ps(scf, _mm256_set1_ps(wd_f16_at(blk))), dx);
                    acc2[i] = _mm256_fnmadd_ps(_mm256_mul_ps(mnf, _mm256_set1_ps(wd_f16_at(blk + 2))),
                                               xsv, acc2[i]);
                    __m256i qh = q5 ? LD256(blk + 16) : _mm256_setzero_si256();
                    __m256i sd[8];
                    for (int c = 0; c < 4; c++) {
                        const __m256i q = LD256(qs + 32 * c);
                        __m256i lo = _mm256_and_si256(q, m4);
                        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                        if (q5) {
                            const __m256i one = _mm256_set1_epi8(1);
                            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
                            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
                            qh = _mm256_srli_epi16(qh, 2);
                        }
                        const int8_t *xb = xqt + 32 * (8 * g + 2 * c);
                        sd[2 * c] = wd_dp_u8s8(_mm256_setzero_si256(), lo, _mm256_load_si256((const __m256i *)xb));
                        sd[2 * c + 1] = wd_dp_u8s8(_mm256_setzero_si256(), hi, _mm256_load_si256((const __m256i *)(xb + 32)));
                    }
                    /* 4 sub-blocks' dots summed pairwise to [j0..j3 | j0..j3] (lanes 0-3
                     * and 4-7 of each), one conversion and one FMA with their scales */
                    for (int h = 0; h < 2; h++) {
                        __m256i hh = _mm256_hadd_epi32(_mm256_hadd_epi32(sd[4 * h], sd[4 * h + 1]),
                                                       _mm256_hadd_epi32(sd[4 * h + 2], sd[4 * h + 3]));
                        __m256 Sp = _mm256_permutevar8x32_ps(
                            S, _mm256_setr_epi32(4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3, 4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3));
                        if (h) acc2[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hh), Sp, acc2[i]);
                        else acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hh), Sp, acc[i]);
                    }
                }
            }
#if Q4_Z512
        } else if (T == T_Q6_K) {
            /* 512-bit: per half h, the 64 ql bytes once and qh in both 256-bit
             * halves; sub-blocks 4h, 4h+1 (low nibbles, qh bits 0-1 / 2-3) and 4h+2,
             * 4h+3 (high nibbles, bits 4-5 / 6-7) are two u vectors dotted with 64
             * contiguous token bytes each; lanes 4q..4q+3 of a dot are one 16-group,
             * scaled per lane by one FMA (each of the 16 scales 4 times: S16 by
             * vpermps); the -32 offsets one FMA of 16 lanes */
            const __m512i m4z = _mm512_set1_epi8(0xF), m30z = _mm512_set1_epi8(0x30);
            const __m512i sh01 = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2), sh23 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
            const __m512i shw01 = _mm512_or_si512(sh01, _mm512_slli_epi64(sh01, 16)),
                          shw23 = _mm512_or_si512(sh23, _mm512_slli_epi64(sh23, 16));
            const __m512i sw01 = _mm512_or_si512(shw01, _mm512_slli_epi64(shw01, 32)),
                          sw23 = _mm512_or_si512(shw23, _mm512_slli_epi64(shw23, 32));
            const __m512i rep = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
            const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            const __m512i four = _mm512_set1_epi32(4);
            for (int g = 0; g < nb / 8; g++) {
                const size_t o = (size_t)g * WD_Q6_K_BYTES;
                if (t == 0) PF_TILE(wr[0], o, WD_Q6_K_BYTES, R);
                /* per 16-group: d[b] of its block; 32 s16 */
                const __m512 dx16 = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_load_ps(xd + 8 * g)));
                const __m512 s32 = _mm512_mul_ps(_mm512_loadu_ps(xq[t].s16 + 16 * g), _mm512_set1_ps(32.0f));
                const int8_t *xb = xqt + 256 * g;
                _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {
                    const uint8_t *blk = wr[i] + o;
                    const __m512 S16 = _mm512_mul_ps(
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 192)))),
                                      _mm512_set1_ps(wd_f16_at(blk + 208))),
                        dx16);
                    accz2[i] = _mm512_fnmadd_ps(S16, s32, accz2[i]);
                    for (int h = 0; h < 2; h++) {
                        const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
                        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h)));
                        const __m512i u01 = _mm512_or_si512(_mm512_and_si512(ql, m4z),
                                                            _mm512_and_si512(_mm512_sllv_epi16(qh, sw01), m30z));
                        const __m512i u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4z),
                                                            _mm512_and_si512(_mm512_srlv_epi16(qh, sw23), m30z));
                        const __m512i d01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u01, _mm512_loadu_si512(xb + 128 * h));
                        const __m512i d23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u23, _mm512_loadu_si512(xb + 128 * h + 64));
                        const __m512i r0 = _mm512_add_epi32(rep, _mm512_set1_epi32(8 * h));
                        accz[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d01), _mm512_permutexvar_ps(r0, S16), accz[i]);
                        accz2[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d23),
                                                   _mm512_permutexvar_ps(_mm512_add_epi32(r0, four), S16), accz2[i]);
                    }
                }
            }
#endif
        } else { /* Q6_K */
            const __m256i m30 = _mm256_set1_epi8(0x30);
            const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            const __m256i dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
            for (int g = 0; g < nb / 8; g++) {
                const size_t o = (size_t)g * WD_Q6_K_BYTES;
                if (t == 0) PF_TILE(wr[0], o, WD_Q6_K_BYTES, R);
                const __m256 dx = _mm256_load_ps(xd + 8 * g);
                /* per 16-group: d[b] of its block; s16 */
                const __m256 dxl = _mm256_permutevar8x32_ps(dx, dup_lo), dxh = _mm256_permutevar8x32_ps(dx, dup_hi);
                const __m256 s16l = _mm256_load_ps(xq[t].s16 + 16 * g), s16h = _mm256_load_ps(xq[t].s16 + 16 * g + 8);
                for (int i = 0; i < R; i++) {
                    const uint8_t *blk = wr[i] + o;
                    const __m256 d = _mm256_set1_ps(wd_f16_at(blk + 208));
                    __m128i sc = _mm_loadu_si128((const __m128i *)(blk + 192));
                    __m256 Sl = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)), d), dxl);
                    __m256 Sh = _mm256_mul_ps(
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))), d), dxh);
                    /* the -32 offsets: -32 sum_g S_g s16_g */
                    acc2[i] = _mm256_fnmadd_ps(_mm256_mul_ps(Sl, _mm256_set1_ps(32.0f)), s16l, acc2[i]);
                    acc2[i] = _mm256_fnmadd_ps(_mm256_mul_ps(Sh, _mm256_set1_ps(32.0f)), s16h, acc2[i]);
                    for (int h = 0; h < 2; h++) {
                        const __m256i qh = LD256(blk + 128 + 32 * h);
                        const __m256i qa = LD256(blk + 64 * h), qb = LD256(blk + 64 * h + 32);
                        const __m256 S = h ? Sh : Sl;
                        __m256i s4[4];
                        for (int k = 0; k < 4; k++) {
                            const __m256i ql = k & 1 ? qb : qa;
                            __m256i u = _mm256_and_si256(k >> 1 ? _mm256_srli_epi16(ql, 4) : ql, m4);
                            /* bits 2k, 2k+1 of qh to bits 4, 5: one shift and a mask */
                            __m256i hs = k < 2 ? _mm256_slli_epi16(qh, 4 - 2 * k)
                                               : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
                            u = _mm256_or_si256(u, _mm256_and_si256(hs, m30));
                            const int j = 4 * h + k;
                            s4[k] = wd_dp_u8s8(_mm256_setzero_si256(), u,
                                               _mm256_load_si256((const __m256i *)(xqt + 32 * (8 * g + j))));
                        }
                        /* lanes 0-3 of s4[k] are group 2k, 4-7 group 2k+1: summed
                         * pairwise to [g0 g2 g4 g6 | g1 g3 g5 g7], one conversion, one
                         * FMA with the scales in that order */
                        __m256i hh = _mm256_hadd_epi32(_mm256_hadd_epi32(s4[0], s4[1]),
                                                       _mm256_hadd_epi32(s4[2], s4[3]));
                        __m256 Sp = _mm256_permutevar8x32_ps(S, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
                        if (h) acc2[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hh), Sp, acc2[i]);
                        else acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hh), Sp, acc[i]);
                    }
                }
            }
        }
#if Q4_Z512
        __m512 az[4];
        for (int i = 0; i < R; i++)
            az[i] = _mm512_add_ps(_mm512_add_ps(accz[i], accz2[i]),
                                  _mm512_zextps256_ps512(_mm256_add_ps(acc[i], acc2[i])));
        store_sums_z(y + (size_t)t * ldy + r, az, macc, R);
#else
        for (int i = 0; i < R; i++)
            y[(size_t)t * ldy + r + i] = wd_hsum8(_mm256_add_ps(acc[i], acc2[i])) + macc[i];
#endif
    }
}

#if Q4_Z512
/* ---- Q4_K, 512-bit, one sub-block per 128-bit lane --------------------------
 * Per super-block the 128 code bytes (4 chunks of 32: low nibbles sub-block
 * 2c, high 2c+1) are loaded as two zmm and regrouped by two vshufi64x2 into
 * V0 = the first 16 bytes of each chunk, V1 = the last 16: lane L of both
 * holds sub-blocks 2L (low nibbles) and 2L+1 (high). The token is regrouped
 * to match once per call (kq: xA, xB for the low nibbles of V0, V1; xC, xD
 * for the high), so one chain of two vpdpbusd per nibble half leaves each
 * 128-bit lane with one sub-block's dot: Dl = sub-blocks 0 2 4 6, Dh = 16 x
 * sub-blocks 1 3 5 7 (the high nibbles dotted in place, 16 u <= 240). The
 * 16 scales and mins of the row are converted once, F = [sc mn] [d dmin]
 * kw, kw = [dx_j (odd j: dx_j / 16) | 1] of the token; two vpermps spread
 * F's scales over Dl's and Dh's lanes, and the mins are one FMA of F with
 * [0 | -xs_j]: per super-block and row 2 + 4 + 4 vector ops on codes and
 * dots, 2 conversions and 3 FMAs. */
/* Bytes of regrouped tokens per call (Q4_K 1.5, Q4_0/Q4_1 2 per column and
 * token): wd_cpu_gemv_q8x's chunks of quantised tokens take more than 2 bytes
 * per column and token of its 98304, so any chunk it passes fits; a direct
 * call with more takes q4_tile. */
#define KQ_STACK 98304

static inline __attribute__((always_inline)) void
q4k_tile(float *y, int ldy, const int8_t *kq, const float *kw, int n, int nb8, const uint8_t *w, size_t rb,
         int r, const int R, int cols) {
    const uint8_t *wr[4];
    for (int i = 0; i < R; i++) wr[i] = w + (size_t)(r + i) * rb;
    const __m512i mlo = _mm512_set1_epi8(0x0F), mhi = _mm512_set1_epi8((char)0xF0);
    const __m512i iL = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    const __m512i iH = _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7);
    const __m512i iD = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int t = 0; t < n; t++) {
        const int8_t *xt = kq + (size_t)t * cols;
        const float *wt = kw + (size_t)t * 32 * nb8;
        __m512 acc[4], acc2[4], accm[4];
        for (int i = 0; i < R; i++) acc[i] = acc2[i] = accm[i] = _mm512_setzero_ps();
        for (int g = 0; g < nb8; g++) {
            const size_t o = (size_t)g * WD_Q4_K_BYTES;
            if (t == 0) PF_TILE(wr[0], o, WD_Q4_K_BYTES, R);
            const int8_t *xb = xt + 256 * g;
            const __m512i xA = _mm512_load_si512(xb), xB = _mm512_load_si512(xb + 64),
                          xC = _mm512_load_si512(xb + 128), xD = _mm512_load_si512(xb + 192);
            const __m512 kwg = _mm512_load_ps(wt + 32 * g), xsm = _mm512_load_ps(wt + 32 * g + 16);
            _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {
                const uint8_t *blk = wr[i] + o;
                const __m512i q0 = _mm512_loadu_si512(blk + 16), q1 = _mm512_loadu_si512(blk + 80);
                const __m512i v0 = _mm512_shuffle_i64x2(q0, q1, 0x88), v1 = _mm512_shuffle_i64x2(q0, q1, 0xDD);
                __m512i dl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v0, mlo), xA);
                dl = _mm512_dpbusd_epi32(dl, _mm512_and_si512(v1, mlo), xB);
                __m512i dh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v0, mhi), xC);
                dh = _mm512_dpbusd_epi32(dh, _mm512_and_si512(v1, mhi), xD);
                uint32_t dm;
                memcpy(&dm, blk, 4);
                const __m512 dd = _mm512_permutexvar_ps(iD, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dm))));
                const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(k4_unpack_v(blk + 4))),
                                               _mm512_mul_ps(dd, kwg));
                accm[i] = _mm512_fmadd_ps(f, xsm, accm[i]);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dl), _mm512_permutexvar_ps(iL, f), acc[i]);
                acc2[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dh), _mm512_permutexvar_ps(iH, f), acc2[i]);
            }
        }
        for (int i = 0; i < R; i++) acc[i] = _mm512_add_ps(_mm512_add_ps(acc[i], acc2[i]), accm[i]);
        const float zero4[4] = {0, 0, 0, 0};
        store_sums_z(y + (size_t)t * ldy + r, acc, zero4, R);
    }
}

static void q4k_tile4(float *y, int ldy, const int8_t *kq, const float *kw, int n, int nb8, const uint8_t *w,
                      size_t rb, int r, int cols) {
    q4k_tile(y, ldy, kq, kw, n, nb8, w, rb, r, 4, cols);
}
static void q4k_tile1(float *y, int ldy, const int8_t *kq, const float *kw, int n, int nb8, const uint8_t *w,
                      size_t rb, int r, int cols) {
    q4k_tile(y, ldy, kq, kw, n, nb8, w, rb, r, 1, cols);
}

/* The tokens regrouped for q4k_tile: kq[t][256 g ..] = xA xB xC xD of
 * super-block g; kw[t][32 g ..] = [dx_j (odd j / 16), 1 x 8 | 0 x 8, -xs_j]. */
static void q4k_regroup(int8_t *kq, float *kw, const wd_q8x *xq, int n, int nb8, int cols) {
    for (int t = 0; t < n; t++)
        for (int g = 0; g < nb8; g++) {
            int8_t *o = kq + (size_t)t * cols + 256 * g;
            const int8_t *x = xq[t].q + 256 * g;
            for (int part = 0; part < 4; part++) /* xA: j even, bytes 0-15; xB: j even, 16-31; xC, xD: j odd */
                for (int L = 0; L < 4; L++)
                    memcpy(o + 64 * part + 16 * L, x + 32 * (2 * L + (part >> 1)) + 16 * (part & 1), 16);
            float *f = kw + (size_t)t * 32 * nb8 + 32 * g;
            for (int j = 0; j < 8; j++) {
                f[j] = xq[t].d[8 * g + j] * (j & 1 ? 0.0625f : 1.0f);
                f[8 + j] = 1.0f;
                f[16 + j] = 0.0f;
                f[24 + j] = -xq[t].xs[8 * g + j];
            }
        }
}

/* ---- Q4_0 / Q4_1, 512-bit, the token regrouped once per call -------------
 * q4_tile's 4-block steps (lanes 4j..4j+3 = block j) with everything that
 * depends on the token alone precomputed per group of 4 blocks (q4x_regroup:
 * the low and high halves of the 4 blocks, the 4 d_x and Q4_1's xs or Q4_0's
 * -8 sum(q) spread over their lanes), so a row's step is 2 loads, one
 * vpermi2b, 3 mask/shift ops, 2 vpdpbusd, one vpermi2w + conversion of its
 * scales (Q4_1: and its mins), one conversion and 1-2 FMAs. Rows whose block
 * count is not a multiple of 4 take q4_tile. */
#define Q4G_BYTES 256 /* per token and 4 blocks: xlo, xhi, dx4, iv (Q4_0) or xs4 (Q4_1) */

static void q4x_regroup(uint8_t *kx, const wd_q8x *xq, int n, int ng, const int T) {
    for (int t = 0; t < n; t++)
        for (int g = 0; g < ng; g++) {
            uint8_t *o = kx + ((size_t)t * ng + g) * Q4G_BYTES;
            const int8_t *x = xq[t].q + 128 * g;
            for (int j = 0; j < 4; j++) {
                memcpy(o + 16 * j, x + 32 * j, 16);
                memcpy(o + 64 + 16 * j, x + 32 * j + 16, 16);
            }
            float *dx4 = (float *)(o + 128), *xs4 = (float *)(o + 192);
            int32_t *iv = (int32_t *)(o + 192);
            for (int l = 0; l < 16; l++) {
                const int b = 4 * g + l / 4;
                dx4[l] = xq[t].d[b];
                if (T == T_Q4_1) xs4[l] = xq[t].xs[b];
                else iv[l] = l % 4 ? 0 : xq[t].init[8 * b] >> 4;
            }
        }
}

static inline __attribute__((always_inline)) void
q4x_tile(float *y, int ldy, const uint8_t *kx, int n, int ng, const uint8_t *w, size_t rb, int r, const int R,
         const int T) {
    const size_t bb = T == T_Q4_0 ? WD_Q4_0_BYTES : WD_Q4_1_BYTES;
    const int qo = T == T_Q4_0 ? 2 : 4;
    const uint8_t *wr[4];
    for (int i = 0; i < R; i++) wr[i] = w + (size_t)(r + i) * rb;
    _Alignas(64) uint8_t bix[64];
    _Alignas(64) uint16_t dix[32], mix[32];
    q4_pair_index((int)bb, qo, bix, dix, mix);
    const __m512i didx = _mm512_load_si512(dix), midx = _mm512_load_si512(mix);
    const __m512i bidx = _mm512_load_si512(bix), m4z = _mm512_set1_epi8(0xF);
    for (int t = 0; t < n; t++) {
        __m512 acc[4], acc2[4];
        for (int i = 0; i < R; i++) acc[i] = acc2[i] = _mm512_setzero_ps();
        for (int g = 0; g < ng; g++) {
            const uint8_t *xg = kx + ((size_t)t * ng + g) * Q4G_BYTES;
            const size_t o = (size_t)g * 4 * bb;
            if (t == 0) PF_TILE(wr[0], o, 4 * bb, R);
            const __m512i xlo = _mm512_load_si512(xg), xhi = _mm512_load_si512(xg + 64);
            const __m512 dx4 = _mm512_load_ps(xg + 128);
            const __m512i iv = T == T_Q4_0 ? _mm512_load_si512(xg + 192) : _mm512_setzero_si512();
            const __m512 xs4 = T == T_Q4_1 ? _mm512_load_ps(xg + 192) : _mm512_setzero_ps();
            _Pragma("GCC unroll 4") for (int i = 0; i < R; i++)
                q4_row_step(wr[i] + o, bb, bidx, didx, midx, m4z, iv, xlo, xhi, dx4, xs4, &acc[i],
                            &acc2[i], T);
        }
        for (int i = 0; i < R; i++) acc[i] = _mm512_add_ps(acc[i], acc2[i]);
        const float zero4[4] = {0, 0, 0, 0};
        store_sums_z(y + (size_t)t * ldy + r, acc, zero4, R);
    }
}

#define Q4X_ROWS(NAME, T)                                                                      \
    static void NAME##_4(float *y, int ldy, const uint8_t *kx, int n, int ng, const uint8_t *w, \
                         size_t rb, int r) {                                                   \
        q4x_tile(y, ldy, kx, n, ng, w, rb, r, 4, T);                                           \
    }                                                                                          \
    static void NAME##_1(float *y, int ldy, const uint8_t *kx, int n, int ng, const uint8_t *w, \
                         size_t rb, int r) {                                                   \
        q4x_tile(y, ldy, kx, n, ng, w, rb, r, 1, T);                                           \
    }                                                                                          \
    static int NAME(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t rb,      \
                    int cols, int r0, int r1) {                                                \
        _Alignas(64) uint8_t buf[KQ_STACK];                                                    \
        const int ng = cols / 128;                                                             \
        if (cols % 128 || (size_t)n * ng * Q4G_BYTES > sizeof buf) return 0;                   \
        q4x_regroup(buf, xq, n, ng, T);                                                        \
        int r = r0;                                                                            \
        for (; r + 4 <= r1; r += 4) NAME##_4(y, ldy, buf, n, ng, w, rb, r);                    \
        for (; r < r1; r++) NAME##_1(y, ldy, buf, n, ng, w, rb, r);                            \
        return 1;                                                                              \
    }
Q4X_ROWS(q4_0_rows_z512, T_Q4_0)
Q4X_ROWS(q4_1_rows_z512, T_Q4_1)

static int q4k_rows_z512(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t rb, int cols,
                         int r0, int r1) {
    _Alignas(64) unsigned char buf[KQ_STACK];
    const int nb8 = cols / 256;
    if ((size_t)n * (size_t)cols * 3 / 2 > sizeof buf) return 0;
    int8_t *kq = (int8_t *)buf;
    float *kw = (float *)(buf + (size_t)n * cols);
    q4k_regroup(kq, kw, xq, n, nb8, cols);
    int r = r0;
    for (; r + 4 <= r1; r += 4) q4k_tile4(y, ldy, kq, kw, n, nb8, w, rb, r, cols);
    for (; r < r1; r++) q4k_tile1(y, ldy, kq, kw, n, nb8, w, rb, r, cols);
    return 1;
}
#endif

#define SIMD_ROWS(NAME, T, BB)                                                                 \
    static void NAME##_4(float *y, int ldy, const wd_q8x *xq, int n, const uint8_t *w,         \
                         size_t rb, int nb, int r) {                                           \
        q4_tile(y, ldy, xq, n, w, rb, nb, r, 4, T);                                            \
    }                                                                                          \
    static void NAME##_1(float *y, int ldy, const wd_q8x *xq, int n, const uint8_t *w,         \
                         size_t rb, int nb, int r) {                                           \
        q4_tile(y, ldy, xq, n, w, rb, nb, r, 1, T);                                            \
    }                                                                                          \
    static void NAME(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t rb,     \
                     int cols, int r0, int r1) {                                               \
        int r = r0;                                                                            \
        for (; r + 4 <= r1; r += 4) NAME##_4(y, ldy, xq, n, w, rb, cols / 32, r);              \
        for (; r < r1; r++) NAME##_1(y, ldy, xq, n, w, rb, cols / 32, r);                      \
    }
/* NAME: the 512-bit kernel Z where it takes the shape (it returns 0 where not), else BASE */
#if Q4_Z512
#define Z512_FIRST(NAME, Z, BASE)                                                              \
    static void NAME(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t rb,     \
                     int cols, int r0, int r1) {                                               \
        if (!Z(y, ldy, xq, n, w, rb, cols, r0, r1)) BASE(y, ldy, xq, n, w, rb, cols, r0, r1);   \
    }
#else
#define Z512_FIRST(NAME, Z, BASE)                                                              \
    static void NAME(float *y, int ldy, const wd_q8x *xq, int n, const void *w, size_t rb,     \
                     int cols, int r0, int r1) {                                               \
        BASE(y, ldy, xq, n, w, rb, cols, r0, r1);                                              \
    }
#endif
SIMD_ROWS(q4_0_rows_simd0, T_Q4_0, WD_Q4_0_BYTES)
SIMD_ROWS(q4_1_rows_simd0, T_Q4_1, WD_Q4_1_BYTES)
SIMD_ROWS(q4_k_rows_simd0, T_Q4_K, WD_Q4_K_BYTES)
Z512_FIRST(q4_0_rows_simd, q4_0_rows_z512, q4_0_rows_simd0)
Z512_FIRST(q4_1_rows_simd, q4_1_rows_z512, q4_1_rows_simd0)
Z512_FIRST(q4_k_rows_simd, q4k_rows_z512, q4_k_rows_simd0)
SIMD_ROWS(q5_k_rows_simd, T_Q5_K, WD_Q5_K_BYTES)
SIMD_ROWS(q6_k_rows_simd, T_Q6_K, WD_Q6_K_BYTES)
#endif

wd_q8x_rows_fn wd_cpu_q4x_rows_fn(wd_dtype dt, int simd) {
#ifdef Q4_SIMD
    if (simd) switch (dt) {
        case WD_DT_Q4_0: return q4_0_rows_simd;
        case WD_DT_Q4_1: return q4_1_rows_simd;
        case WD_DT_Q4_K: return q4_k_rows_simd;
        case WD_DT_Q5_K: return q5_k_rows_simd;
        case WD_DT_Q6_K: return q6_k_rows_simd;
        default: return NULL;
        }
#else
    (void)simd;
#endif
    switch (dt) {
    case WD_DT_Q4_0: return q4_0_rows_scalar;
    case WD_DT_Q4_1: return q4_1_rows_scalar;
    case WD_DT_Q4_K: return q4_k_rows_scalar;
    case WD_DT_Q5_K: return q5_k_rows_scalar;
    case WD_DT_Q6_K: return q6_k_rows_scalar;
    default: return NULL;
    }
}
