/* CUDA kernels on quantised weights (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) against
 * the CPU backend, which tests/test_quant.c checks against gguf-py:
 *  - dequantisation (wd_cuda_dequant_rows to F32, gathered rows) bit-exact;
 *    to BF16 equal to the CPU values rounded to bf16;
 *  - the embedding lookup of a quantised table, bit-exact;
 *  - GEMV (n = 1..8, odd row counts, unaligned bases, beta 0 and 1) and the
 *    tiled GEMM (n = 9..133, rows and tokens off the 64-tiles) against
 *    wd_matmul: relative L2 <= 1e-5 (both accumulate fp32 in different orders);
 *  - the fused expert FFN (small batch and the large-batch path), rows
 *    gathered, scaled, written or accumulated, against wd_expert_ffn.
 * Outputs are poisoned with NaN first (a skipped element fails). Random blocks
 * with finite f16 scales: every other bit pattern is a valid block. One line
 * per case. Skipped (exit 77) without a GPU. */
#include <stdint.h>

#include "tests/gpu/gpu_test_util.h"

static const wd_dtype QT[] = {WD_DT_Q8_0, WD_DT_Q4_0, WD_DT_Q4_1, WD_DT_Q4_K, WD_DT_Q5_K, WD_DT_Q6_K};
#define NQT (int)(sizeof QT / sizeof QT[0])

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return (float)((rnd() >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(n * sizeof(float));
    if (!v) abort();
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

/* rows x cols of dt: random bytes, f16 scale fields finite; *deq gets the CPU values. */
static uint8_t *rand_quant(wd_dtype dt, int rows, int cols, float **deq) {
    size_t bytes = wd_dtype_bytes(dt, (int64_t)rows * cols);
    uint8_t *w = malloc(bytes);
    float *d = malloc((size_t)rows * cols * 4);
    if (!w || !d) abort();
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    int bs = wd_dtype_block(dt);
    size_t bb = wd_dtype_bytes(dt, bs);
    int offs[2] = {0, 2}, no = 2;
    if (dt == WD_DT_Q8_0 || dt == WD_DT_Q4_0) no = 1;
    if (dt == WD_DT_Q6_K) offs[0] = 208, no = 1;
    float amp = dt == WD_DT_Q8_0 ? 0.002f : 0.03f;
    for (size_t b = 0; b < bytes / bb; b++)
        for (int k = 0; k < no; k++) {
            uint16_t h = wd_f32_to_f16(amp * frand());
            memcpy(w + b * bb + offs[k], &h, 2);
        }
    for (int r = 0; r < rows; r++) wd_row_to_f32(d + (size_t)r * cols, w, dt, r, cols);
    *deq = d;
    return w;
}

/* Device copy of n bytes at `off` bytes past a fresh allocation (off 0..15). */
static void *up_at(const void *h, size_t n, size_t off, void **base) {
    char *d = wd_cuda_malloc(n + 16);
    if (!d || wd_cuda_upload(d + off, h, n)) {
        fprintf(stderr, "upload of %zu bytes failed\n", n);
        abort();
    }
    *base = d;
    return d + off;
}

static void test_dequant(wd_dtype dt, int rows, int cols) {
    float *deq;
    uint8_t *w = rand_quant(dt, rows, cols, &deq);
    size_t bytes = wd_dtype_bytes(dt, (int64_t)rows * cols);
    void *base;
    void *dw = up_at(w, bytes, 3, &base);
    /* all rows in order, then a gather (the embedding lookup) */
    float *df = wd_gpu_poisoned((size_t)rows * cols * 4);
    CHECK(wd_cuda_dequant_rows(df, WD_DT_F32, dw, dt, NULL, rows, cols, NULL) == 0);
    float *f = wd_gpu_down(df, (size_t)rows * cols * 4);
    int bad = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) bad += memcmp(&f[i], &deq[i], 4) != 0;
    CHECKF(bad == 0, "dequant %s %dx%d: %d values differ from the CPU", wd_dtype_name(dt), rows, cols, bad);
    printf("  dequant %-5s %4dx%-5d to F32: %s\n", wd_dtype_name(dt), rows, cols,
           bad ? "DIFFERS" : "bit-exact");
    uint16_t *hb = NULL;
    uint16_t *db = wd_gpu_poisoned((size_t)rows * cols * 2);
    CHECK(wd_cuda_dequant_rows(db, WD_DT_BF16, dw, dt, NULL, rows, cols, NULL) == 0);
    hb = wd_gpu_down(db, (size_t)rows * cols * 2);
    int badb = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) badb += hb[i] != wd_f32_to_bf16(deq[i]);
    CHECKF(badb == 0, "dequant %s to BF16: %d values differ", wd_dtype_name(dt), badb);
    printf("  dequant %-5s %4dx%-5d to BF16: %s\n", wd_dtype_name(dt), rows, cols,
           badb ? "DIFFERS" : "bit-exact");
    int n = 5, tok[5] = {rows - 1, 0, rows / 2, rows - 1, 1 % rows};
    int *dtok = wd_gpu_up(tok, sizeof tok);
    float *de = wd_gpu_poisoned((size_t)n * cols * 4);
    CHECK(wd_cuda_embed(de, dw, dt, dtok, n, cols, NULL) == 0);
    float *e = wd_gpu_down(de, (size_t)n * cols * 4);
    int bade = 0;
    for (int t = 0; t < n; t++) bade += memcmp(e + (size_t)t * cols, deq + (size_t)tok[t] * cols, (size_t)cols * 4) != 0;
    CHECKF(bade == 0, "embed %s: %d rows differ", wd_dtype_name(dt), bade);
    printf("  embed   %-5s %d tokens of %d: %s\n", wd_dtype_name(dt), n, cols,
           bade ? "DIFFERS" : "bit-exact");
    free(w); free(deq); free(f); free(hb); free(e);
    wd_cuda_free(base); wd_cuda_free(df); wd_cuda_free(db); wd_cuda_free(dtok); wd_cuda_free(de);
}

static void test_matmul(wd_cuda_blas *blas, wd_dtype dt, int n, int rows, int cols, int beta1,
                        size_t woff) {
    float *deq;
    uint8_t *w = rand_quant(dt, rows, cols, &deq);
    float *x = rand_vec((size_t)n * cols, 1), *y0 = rand_vec((size_t)n * rows, 1);
    void *wbase;
    void *dw = up_at(w, wd_dtype_bytes(dt, (int64_t)rows * cols), woff, &wbase);
    float *dx = wd_gpu_up(x, (size_t)n * cols * 4);
    float *dy = beta1 ? wd_gpu_up(y0, (size_t)n * rows * 4) : wd_gpu_poisoned((size_t)n * rows * 4);
    float *ref = malloc((size_t)n * rows * 4);
    wd_matmul(NULL, ref, x, w, dt, n, rows, cols); /* the CPU kernel on the same blocks */
    int rc;
    if (beta1) {
        for (size_t i = 0; i < (size_t)n * rows; i++) ref[i] += y0[i];
        rc = wd_cuda_gemv(dy, dx, dw, dt, n, rows, cols, 1.0f, NULL);
    } else {
        rc = wd_cuda_matmul(blas, dy, dx, dw, dt, n, rows, cols);
    }
    CHECKF(rc == 0, "matmul %s: %s", wd_dtype_name(dt), wd_cuda_error_string(rc));
    float *y = wd_gpu_down(dy, (size_t)n * rows * 4);
    char name[96];
    snprintf(name, sizeof name, "%s %s n=%d %dx%d%s%s", n > WD_CUDA_GEMV_MAX_N ? "gemm" : "gemv",
             wd_dtype_name(dt), n, rows, cols, woff ? " unaligned" : "", beta1 ? " beta 1" : "");
    WD_GPU_CHECK_ERR(name, y, ref, (size_t)n * rows, 1e-5);
    free(w); free(deq); free(x); free(y0); free(ref); free(y);
    wd_cuda_free(wbase); wd_cuda_free(dx); wd_cuda_free(dy);
}

/* dt2: w2's type (K-quant mixes: Q6_K down beside Q4_K gate/up) */
static void test_expert(wd_cuda_blas *blas, wd_dtype dt, wd_dtype dt2, int n, int H, int F,
                        int accumulate) {
    int total = 2 * n + 3;
    float *x = rand_vec((size_t)total * H, 1), *base = rand_vec((size_t)total * H, 1);
    float *d1, *d3, *d2;
    uint8_t *w1 = rand_quant(dt, F, H, &d1), *w3 = rand_quant(dt, F, H, &d3), *w2 = rand_quant(dt2, H, F, &d2);
    size_t b13 = wd_dtype_bytes(dt, (int64_t)F * H), b2 = wd_dtype_bytes(dt2, (int64_t)H * F);
    wd_cuda_expert e = {wd_gpu_up(w1, b13), wd_gpu_up(w3, b13), wd_gpu_up(w2, b2), dt, H, F, dt2};
    int *rows = malloc((size_t)n * 4);
    float *scale = malloc((size_t)n * 4);
    for (int t = 0; t < n; t++) {
        rows[t] = 2 * t + 1;
        scale[t] = 0.25f + 0.5f * (frand() + 1);
    }
    float *ref = malloc((size_t)total * H * 4), *xs = malloc((size_t)n * H * 4),
          *ys = malloc((size_t)n * H * 4), *scr = malloc((size_t)2 * n * F * 4);
    for (int t = 0; t < n; t++) memcpy(xs + (size_t)t * H, x + (size_t)rows[t] * H, (size_t)H * 4);
    wd_expert_ffn(NULL, ys, xs, n, w1, w3, w2, dt, dt2, H, F, scr);
    float *dout;
    if (accumulate) {
        memcpy(ref, base, (size_t)total * H * 4);
        dout = wd_gpu_up(base, (size_t)total * H * 4);
    } else {
        dout = wd_gpu_poisoned((size_t)total * H * 4);
    }
    for (int t = 0; t < n; t++)
        for (int i = 0; i < H; i++)
            ref[(size_t)rows[t] * H + i] =
                (accumulate ? ref[(size_t)rows[t] * H + i] : 0.0f) + scale[t] * ys[(size_t)t * H + i];
    float *dx = wd_gpu_up(x, (size_t)total * H * 4), *dsc = wd_gpu_up(scale, (size_t)n * 4);
    int *drows = wd_gpu_up(rows, (size_t)n * 4);
    void *dscr = wd_cuda_malloc(wd_cuda_expert_scratch_bytes(n, H, F));
    int rc = wd_cuda_expert_ffn(blas, &e, dout, dx, drows, dsc, n, accumulate, dscr,
                                wd_cuda_blas_stream(blas));
    CHECKF(rc == 0, "expert %s: %s", wd_dtype_name(dt), wd_cuda_error_string(rc));
    float *out = wd_gpu_down(dout, (size_t)total * H * 4);
    float *a = malloc((size_t)n * H * 4), *b = malloc((size_t)n * H * 4);
    for (int t = 0; t < n; t++) {
        memcpy(a + (size_t)t * H, out + (size_t)rows[t] * H, (size_t)H * 4);
        memcpy(b + (size_t)t * H, ref + (size_t)rows[t] * H, (size_t)H * 4);
    }
    char name[96];
    snprintf(name, sizeof name, "expert %s %s%s%s n=%d H %d F %d%s",
             n > WD_CUDA_GEMV_MAX_N ? "gemm" : "fused", wd_dtype_name(dt), dt2 != dt ? "/" : "",
             dt2 != dt ? wd_dtype_name(dt2) : "", n, H, F, accumulate ? " +=" : "");
    WD_GPU_CHECK_ERR(name, a, b, (size_t)n * H, 2e-5);
    /* rows the expert does not own: untouched (accumulate) */
    if (accumulate) {
        int bad = 0;
        for (int r = 0; r < total; r++)
            if (r % 2 == 0 || r >= 2 * n)
                bad += memcmp(out + (size_t)r * H, base + (size_t)r * H, (size_t)H * 4) != 0;
        CHECKF(bad == 0, "%s: %d rows it does not own changed", name, bad);
    }
    free(x); free(base); free(w1); free(w3); free(w2); free(d1); free(d3); free(d2);
    free(rows); free(scale); free(ref); free(xs); free(ys); free(scr); free(out); free(a); free(b);
    wd_cuda_free((void *)e.w1); wd_cuda_free((void *)e.w3); wd_cuda_free((void *)e.w2);
    wd_cuda_free(dout); wd_cuda_free(dx); wd_cuda_free(dsc); wd_cuda_free(drows); wd_cuda_free(dscr);
}

static void test_bad_shape(void) {
    /* rows that are not whole blocks are refused, not read past */
    float *dy = wd_gpu_poisoned(64 * 4), *dx = wd_gpu_poisoned(300 * 4);
    void *dw = wd_gpu_poisoned(4096);
    CHECK(wd_cuda_gemv(dy, dx, dw, WD_DT_Q4_K, 1, 4, 300, 0.0f, NULL) != 0);
    CHECK(wd_cuda_dequant_rows(dy, WD_DT_F32, dw, WD_DT_Q4_0, NULL, 1, 40, NULL) != 0);
    CHECK(wd_cuda_sync() == 0);
    printf("  %-44s refused\n", "Q4_K rows of 300, Q4_0 rows of 40");
    wd_cuda_free(dy); wd_cuda_free(dx); wd_cuda_free(dw);
}

int main(void) {
    int ndev = wd_cuda_device_count();
    if (ndev <= 0) WD_TEST_SKIP("no CUDA device");
    char info[256];
    wd_cuda_device_info(0, info, sizeof info);
    printf("GPU 0: %s\n", info);
    char err[256];
    wd_cuda_blas *blas = wd_cuda_blas_create(NULL, 1 << 22, err, sizeof err);
    if (!blas) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int q = 0; q < NQT; q++) {
        wd_dtype dt = QT[q];
        int bs = wd_dtype_block(dt);
        printf("%s (block %d, %zu bytes):\n", wd_dtype_name(dt), bs, wd_dtype_bytes(dt, bs));
        test_dequant(dt, 37, 3 * bs);
        test_dequant(dt, 5, 4096);
        test_matmul(blas, dt, 1, 1, bs, 0, 0);          /* one block */
        test_matmul(blas, dt, 1, 301, 4096, 0, 0);      /* decode, rows % 8 != 0 */
        test_matmul(blas, dt, 3, 37, 7 * bs, 0, 5);     /* odd block count, unaligned base */
        test_matmul(blas, dt, 8, 64, 1536, 1, 1);       /* n at the GEMV limit, beta 1 */
        test_matmul(blas, dt, 9, 70, 3 * bs, 0, 0);     /* smallest GEMM */
        test_matmul(blas, dt, 133, 129, 1024, 0, 3);    /* tokens and rows off the tiles */
        test_matmul(blas, dt, 64, 576, 1536, 0, 0);     /* SmolLM2 ffn_down shape */
        test_expert(blas, dt, dt, 1, 512, 1536, 0);
        test_expert(blas, dt, dt, 5, 256, 768, 1);
        test_expert(blas, dt, dt, 40, 512, 768, 1);     /* large batch: tiled GEMM path */
    }
    /* K-quant mixes: w2 of another block type */
    test_expert(blas, WD_DT_Q4_K, WD_DT_Q6_K, 3, 512, 768, 1);
    test_expert(blas, WD_DT_Q4_K, WD_DT_Q6_K, 24, 512, 768, 0);
    test_expert(blas, WD_DT_Q5_K, WD_DT_Q8_0, 1, 256, 512, 0);
    test_bad_shape();
    wd_cuda_blas_free(blas);
    return wd_test_finish("test_gpu_quant");
}
