/* Private to kernels/cpu (and the white-box tests): llama.cpp's 4-6 bit block
 * quantisations Q4_0, Q4_1, Q4_K, Q5_K, Q6_K (quant.c). Q8_0 lives in matmul.c. */
#ifndef WD_KERNELS_CPU_QUANT_H
#define WD_KERNELS_CPU_QUANT_H

#include <stdint.h>

#include "kernels/kernels.h"

#define WD_Q4_0_BYTES 18  /* f16 d; u8 qs[16] */
#define WD_Q4_1_BYTES 20  /* f16 d, m; u8 qs[16] */
#define WD_Q4_K_BYTES 144 /* f16 d, dmin; u8 scales[12]; u8 qs[128] */
#define WD_Q5_K_BYTES 176 /* f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] */
#define WD_Q6_K_BYTES 210 /* u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d */

/* Whether quant.c runs matmuls of dt (Q4_0 .. Q6_K). */
static inline int wd_cpu_quant_owns(wd_dtype dt) { return dt >= WD_DT_Q4_0 && dt < WD_DT_COUNT; }

/* Scale and min of sub-block j (0..7) from the 12 packed bytes (Q4_K/Q5_K; ggml's get_scale_min_k4). */
static inline void wd_k4_scale_min(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* cols weights (a whole number of blocks) from src, exactly as llama.cpp's
 * dequantize_row_<type>. */
void wd_cpu_dequant_row(float *dst, const uint8_t *src, wd_dtype dt, int cols);

/* Rows [r0, r1) of y[t][r] = W[r] . x[t] for t < n (x fp32, W quantised), on
 * the calling thread: for n < 8 on x quantised to Q8 blocks (gemv_q4.c). */
void wd_cpu_quant_gemv_rows(float *y, const float *x, const void *w, wd_dtype dt, int n, int rows,
                            int cols, int r0, int r1);
/* The portable scalar kernel on fp32 x (dequantise a block, dot it), in every build. */
void wd_cpu_quant_gemv_rows_scalar(float *y, const float *x, const void *w, wd_dtype dt, int n,
                                   int rows, int cols, int r0, int r1);

/* wd_matmul for a dt that wd_cpu_quant_owns: decode (n < 8) by the GEMV
 * kernels, prefill by dequantising 16-row tiles and an fp32 register-tiled
 * product; threads split the rows in blocks of 16. */
void wd_cpu_quant_matmul(wd_pool *pool, float *y, const float *x, const void *w, wd_dtype dt,
                         int n, int rows, int cols);

/* Prefill (n >= 8) on tokens quantised to Q8 blocks, VNNI integer dots
 * (gemm_q8x.c; AVX-512 VNNI builds, elsewhere owns nothing): whether it runs
 * dt (Q4_0, Q4_K, Q5_K); its row tile for n tokens (the thread
 * split granule); rows [r0, r1) of y1 = W1 x and, if w2, y2 = W2 x, on the
 * calling thread, with a 64-byte aligned scratch of WD_SG_XT_FLOATS floats.
 * wd_matmul reaches it through wd_cpu_sg_* (matmul.c) when wd_cpu_sg_fits. */
int wd_cpu_q8x_gemm_owns(wd_dtype dt);
int wd_cpu_q8x_gemm_unit(int n);
void wd_cpu_q8x_gemm_rows2(float *y1, const void *w1, float *y2, const void *w2, wd_dtype dt,
                           const float *x, int n, int rows, int cols, int r0, int r1, void *scratch);

#endif
