/* Every CUDA kernel against the CPU backend (kernels/kernels.h) on fresh
 * random inputs: relative L2 error within the dtype's bound, outputs poisoned
 * with NaN before each run (a kernel that skips an element fails), any NaN
 * fails. Skipped (exit 77) without a GPU. */
#include <stdint.h>
#include <string.h>

#include "tests/gpu/gpu_test_util.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(n * sizeof(float));
    if (!v) abort();
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}
/* n floats back from the device */
static float *down_f32(const void *d, size_t n) { return wd_gpu_down(d, n * sizeof(float)); }
/* Round an fp32 array to bf16 values (kept as fp32) and return its bf16 bits. */
static uint16_t *to_bf16(float *v, size_t n) {
    uint16_t *b = malloc(n * 2);
    if (!b) abort();
    for (size_t i = 0; i < n; i++) {
        b[i] = wd_f32_to_bf16(v[i]);
        v[i] = wd_bf16_to_f32(b[i]);
    }
    return b;
}

static void test_rmsnorm(void) {
    int n = 3, dim = 4101;
    float *x = rand_vec((size_t)n * dim, 3.0f), *w = rand_vec(dim, 1.0f);
    float *ref = malloc((size_t)n * dim * 4);
    for (int t = 0; t < n; t++) wd_rmsnorm(ref + (size_t)t * dim, x + (size_t)t * dim, w, dim, 1e-5f);
    float *dx = wd_gpu_up(x, (size_t)n * dim * 4), *dw = wd_gpu_up(w, dim * 4), *dy = wd_gpu_poisoned((size_t)n * dim * 4);
    CHECK(wd_cuda_rmsnorm(dy, dx, dw, n, dim, 1e-5f, NULL) == 0);
    float *y = down_f32(dy, (size_t)n * dim);
    WD_GPU_CHECK_ERR("rmsnorm", y, ref, (size_t)n * dim, 1e-6);
    free(x); free(w); free(ref); free(y);
    wd_cuda_free(dx); wd_cuda_free(dw); wd_cuda_free(dy);
}

static void test_rope_kv(wd_dtype cdt) {
    int n = 4, pos0 = 37, nh = 8, nkv = 2, hd = 64, ctx = 64;
    int qd = nh * hd, kvd = nkv * hd;
    float *q = rand_vec((size_t)n * qd, 1), *k = rand_vec((size_t)n * kvd, 1),
          *v = rand_vec((size_t)n * kvd, 1);
    float *dq = wd_gpu_up(q, (size_t)n * qd * 4), *dk = wd_gpu_up(k, (size_t)n * kvd * 4),
          *dv = wd_gpu_up(v, (size_t)n * kvd * 4);
    size_t es = wd_dtype_bytes(cdt, 1);
    void *kc = wd_gpu_poisoned((size_t)ctx * kvd * es), *vc = wd_gpu_poisoned((size_t)ctx * kvd * es);
    CHECK(wd_cuda_rope_kv(dq, dk, dv, kc, vc, cdt, n, pos0, nh, nkv, hd, 10000.0f, NULL) == 0);
    float *kc32 = wd_cuda_malloc((size_t)ctx * kvd * 4), *vc32 = wd_cuda_malloc((size_t)ctx * kvd * 4);
    CHECK(wd_cuda_convert(kc32, WD_DT_F32, kc, cdt, (size_t)ctx * kvd, NULL) == 0);
    CHECK(wd_cuda_convert(vc32, WD_DT_F32, vc, cdt, (size_t)ctx * kvd, NULL) == 0);
    float *gq = down_f32(dq, (size_t)n * qd);
    float *gk = down_f32(kc32 + (size_t)pos0 * kvd, (size_t)n * kvd);
    float *gv = down_f32(vc32 + (size_t)pos0 * kvd, (size_t)n * kvd);
    for (int t = 0; t < n; t++) {
        wd_rope(q + (size_t)t * qd, nh, hd, pos0 + t, 10000.0f);
        wd_rope(k + (size_t)t * kvd, nkv, hd, pos0 + t, 10000.0f);
    }
    double tol = cdt == WD_DT_F32 ? 1e-6 : 8e-3;
    WD_GPU_CHECK_ERR("rope q", gq, q, (size_t)n * qd, 1e-6);
    WD_GPU_CHECK_ERR(cdt == WD_DT_F32 ? "rope k -> f32 cache" : "rope k -> bf16 cache", gk, k,
              (size_t)n * kvd, tol);
    WD_GPU_CHECK_ERR(cdt == WD_DT_F32 ? "v -> f32 cache" : "v -> bf16 cache", gv, v, (size_t)n * kvd, tol);
    free(q); free(k); free(v); free(gq); free(gk); free(gv);
    wd_cuda_free(dq); wd_cuda_free(dk); wd_cuda_free(dv); wd_cuda_free(kc); wd_cuda_free(vc);
    wd_cuda_free(kc32); wd_cuda_free(vc32);
}

static void test_attention(wd_dtype cdt, int n, int pos0, int nh, int nkv, int hd) {
    int ctx = pos0 + n, qd = nh * hd, kvd = nkv * hd;
    float *q = rand_vec((size_t)n * qd, 1), *k = rand_vec((size_t)ctx * kvd, 2),
          *v = rand_vec((size_t)ctx * kvd, 1);
    void *kc, *vc;
    if (cdt == WD_DT_BF16) {
        uint16_t *kb = to_bf16(k, (size_t)ctx * kvd), *vb = to_bf16(v, (size_t)ctx * kvd);
        kc = wd_gpu_up(kb, (size_t)ctx * kvd * 2);
        vc = wd_gpu_up(vb, (size_t)ctx * kvd * 2);
        free(kb); free(vb);
    } else {
        kc = wd_gpu_up(k, (size_t)ctx * kvd * 4);
        vc = wd_gpu_up(v, (size_t)ctx * kvd * 4);
    }
    float *ref = malloc((size_t)n * qd * 4);
    float *scr = malloc(wd_attention_scratch(n, nh, ctx) * 4);
    wd_attention(NULL, ref, q, k, v, n, pos0, nh, nkv, hd, scr);
    float *dq = wd_gpu_up(q, (size_t)n * qd * 4), *dout = wd_gpu_poisoned((size_t)n * qd * 4);
    void *dscr = wd_cuda_malloc(wd_cuda_attention_scratch_bytes(n, nh, ctx, hd));
    CHECK(wd_cuda_attention(dout, dq, kc, vc, cdt, n, pos0, nh, nkv, hd, dscr, NULL) == 0);
    float *out = down_f32(dout, (size_t)n * qd);
    char name[96];
    snprintf(name, sizeof name, "attention %s n=%d pos0=%d hd=%d", wd_dtype_name(cdt), n, pos0, hd);
    WD_GPU_CHECK_ERR(name, out, ref, (size_t)n * qd, 2e-5);
    free(q); free(k); free(v); free(ref); free(scr); free(out);
    wd_cuda_free(kc); wd_cuda_free(vc); wd_cuda_free(dq); wd_cuda_free(dout); wd_cuda_free(dscr);
}

static void test_router(int n, int E, int k) {
    float *l = rand_vec((size_t)n * E, 4);
    float *dl = wd_gpu_up(l, (size_t)n * E * 4), *dp = wd_gpu_poisoned((size_t)n * E * 4),
          *dw = wd_gpu_poisoned((size_t)n * k * 4);
    int *di = wd_gpu_poisoned((size_t)n * k * 4);
    CHECK(wd_cuda_router(dp, di, dw, dl, n, E, k, NULL) == 0);
    float *p = down_f32(dp, (size_t)n * E), *w = down_f32(dw, (size_t)n * k);
    int *idx = malloc((size_t)n * k * 4);
    CHECK(wd_cuda_download(idx, di, (size_t)n * k * 4) == 0);
    int bad = 0;
    for (int t = 0; t < n; t++) {
        float *lt = l + (size_t)t * E;
        wd_softmax(lt, E);
        int ri[1024];
        wd_topk(lt, E, k, ri);
        double s = 0;
        for (int j = 0; j < k; j++) s += lt[ri[j]];
        for (int j = 0; j < k; j++) {
            if (idx[t * k + j] != ri[j]) bad++;
            CHECK_NEAR(w[t * k + j], lt[ri[j]] / s, 1e-6);
        }
    }
    CHECKF(bad == 0, "router: %d top-k indices differ", bad);
    char name[64];
    snprintf(name, sizeof name, "router softmax E=%d k=%d", E, k);
    WD_GPU_CHECK_ERR(name, p, l, (size_t)n * E, 1e-6);
    free(l); free(p); free(w); free(idx);
    wd_cuda_free(dl); wd_cuda_free(dp); wd_cuda_free(dw); wd_cuda_free(di);
}

/* A NaN logit (an overflowed router) makes every probability NaN: the GPU must
 * still pick in-range experts as wd_topk does (NaN ties to the lower index)
 * and not fault; the other token's row stays exact. */
static void test_router_nan(void) {
    int n = 2, E = 8, k = 2;
    float *l = rand_vec((size_t)n * E, 4);
    l[3] = NAN;
    float *dl = wd_gpu_up(l, (size_t)n * E * 4), *dp = wd_gpu_poisoned((size_t)n * E * 4),
          *dw = wd_gpu_poisoned((size_t)n * k * 4);
    int *di = wd_gpu_poisoned((size_t)n * k * 4);
    CHECK(wd_cuda_router(dp, di, dw, dl, n, E, k, NULL) == 0);
    int rc = wd_cuda_sync();
    CHECKF(rc == 0, "router with a NaN logit: %s", wd_cuda_error_string(rc));
    if (rc) return; /* the context is gone */
    int idx[4];
    CHECK(wd_cuda_download(idx, di, sizeof idx) == 0);
    for (int t = 0; t < n; t++) {
        wd_softmax(l + (size_t)t * E, E);
        int ri[8];
        wd_topk(l + (size_t)t * E, E, k, ri);
        for (int j = 0; j < k; j++)
            CHECKF(idx[t * k + j] == ri[j], "router NaN: token %d pick %d: %d, CPU %d", t, j,
                   idx[t * k + j], ri[j]);
    }
    printf("  %-40s ok\n", "router with a NaN logit");
    free(l);
    wd_cuda_free(dl); wd_cuda_free(dp); wd_cuda_free(dw); wd_cuda_free(di);
}

/* GEMV on pointers off 16-byte alignment (cols % 8 == 0, so only the launcher's
 * alignment check keeps the kernel off 16-byte loads), beta = 1 (add into y). */
static void test_gemv_unaligned(wd_dtype dt) {
    int n = 3, rows = 70, cols = 264;
    size_t es = wd_dtype_bytes(dt, 1);
    float *w = rand_vec((size_t)rows * cols, 0.05f), *x = rand_vec((size_t)n * cols, 1),
          *y0 = rand_vec((size_t)n * rows, 1);
    char *dw = wd_cuda_malloc(((size_t)rows * cols + 1) * es);
    float *dx = wd_cuda_malloc(((size_t)n * cols + 1) * 4);
    void *hw = w;
    uint16_t *wb = NULL;
    if (dt == WD_DT_BF16) hw = wb = to_bf16(w, (size_t)rows * cols);
    CHECK(wd_cuda_upload(dw + es, hw, (size_t)rows * cols * es) == 0);
    CHECK(wd_cuda_upload(dx + 1, x, (size_t)n * cols * 4) == 0);
    float *dy = wd_gpu_up(y0, (size_t)n * rows * 4);
    float *ref = malloc((size_t)n * rows * 4);
    wd_matmul(NULL, ref, x, w, WD_DT_F32, n, rows, cols);
    for (size_t i = 0; i < (size_t)n * rows; i++) ref[i] += y0[i];
    CHECK(wd_cuda_gemv(dy, dx + 1, dw + es, dt, n, rows, cols, 1.0f, NULL) == 0);
    float *y = down_f32(dy, (size_t)n * rows);
    char name[96];
    snprintf(name, sizeof name, "gemv %s unaligned, beta 1", wd_dtype_name(dt));
    WD_GPU_CHECK_ERR(name, y, ref, (size_t)n * rows, 1e-5);
    free(w); free(x); free(y0); free(wb); free(ref); free(y);
    wd_cuda_free(dw); wd_cuda_free(dx); wd_cuda_free(dy);
}

/* W as both dtypes: w32 holds the bf16-rounded values when dt is BF16. */
static void *weights(float *w32, size_t n, wd_dtype dt) {
    if (dt == WD_DT_F32) return wd_gpu_up(w32, n * 4);
    uint16_t *b = to_bf16(w32, n);
    void *d = wd_gpu_up(b, n * 2);
    free(b);
    return d;
}

static void test_matmul(wd_cuda_blas *blas, wd_dtype dt, int n, int rows, int cols) {
    float *w = rand_vec((size_t)rows * cols, 0.05f), *x = rand_vec((size_t)n * cols, 1);
    void *dw = weights(w, (size_t)rows * cols, dt);
    float *dx = wd_gpu_up(x, (size_t)n * cols * 4), *dy = wd_gpu_poisoned((size_t)n * rows * 4);
    float *ref = malloc((size_t)n * rows * 4);
    wd_matmul(NULL, ref, x, w, WD_DT_F32, n, rows, cols);
    CHECK(wd_cuda_matmul(blas, dy, dx, dw, dt, n, rows, cols) == 0);
    float *y = down_f32(dy, (size_t)n * rows);
    char name[96];
    int gemm = n > WD_CUDA_GEMV_MAX_N;
    snprintf(name, sizeof name, "%s %s n=%d %dx%d", gemm ? "gemm" : "gemv", wd_dtype_name(dt), n,
             rows, cols);
    /* cuBLAS BF16 rounds the activations to bf16 (2^-9 relative) */
    WD_GPU_CHECK_ERR(name, y, ref, (size_t)n * rows, gemm && dt == WD_DT_BF16 ? 1e-2 : 1e-5);
    free(w); free(x); free(ref); free(y);
    wd_cuda_free(dw); wd_cuda_free(dx); wd_cuda_free(dy);
}

/* Expert on a subset of rows of x, scaled, written or added into out. */
static void test_expert(wd_cuda_blas *blas, wd_dtype dt, int n, int H, int F, int accumulate) {
    int total = 2 * n + 3; /* x and out have more rows than the expert gets */
    float *x = rand_vec((size_t)total * H, 1), *base = rand_vec((size_t)total * H, 1);
    float *w1 = rand_vec((size_t)F * H, 0.05f), *w3 = rand_vec((size_t)F * H, 0.05f),
          *w2 = rand_vec((size_t)H * F, 0.05f);
    wd_cuda_expert e = {weights(w1, (size_t)F * H, dt), weights(w3, (size_t)F * H, dt),
                        weights(w2, (size_t)H * F, dt), dt, H, F, dt};
    int *rows = malloc((size_t)n * 4);
    float *scale = malloc((size_t)n * 4);
    for (int t = 0; t < n; t++) {
        rows[t] = 2 * t + 1; /* distinct, < total, every other row untouched */
        scale[t] = 0.25f + 0.5f * (frand() + 1);
    }
    /* CPU reference */
    float *ref = malloc((size_t)total * H * 4), *xs = malloc((size_t)n * H * 4),
          *ys = malloc((size_t)n * H * 4), *scr = malloc((size_t)2 * n * F * 4);
    for (int t = 0; t < n; t++) memcpy(xs + (size_t)t * H, x + (size_t)rows[t] * H, (size_t)H * 4);
    wd_expert_ffn(NULL, ys, xs, n, w1, w3, w2, WD_DT_F32, WD_DT_F32, H, F, scr);
    float *dout;
    if (accumulate) {
        memcpy(ref, base, (size_t)total * H * 4);
        dout = wd_gpu_up(base, (size_t)total * H * 4);
    } else {
        for (size_t i = 0; i < (size_t)total * H; i++) ref[i] = NAN; /* untouched rows */
        dout = wd_gpu_poisoned((size_t)total * H * 4);
    }
    for (int t = 0; t < n; t++)
        for (int i = 0; i < H; i++)
            ref[(size_t)rows[t] * H + i] =
                (accumulate ? ref[(size_t)rows[t] * H + i] : 0.0f) + scale[t] * ys[(size_t)t * H + i];
    float *dx = wd_gpu_up(x, (size_t)total * H * 4), *dsc = wd_gpu_up(scale, (size_t)n * 4);
    int *drows = wd_gpu_up(rows, (size_t)n * 4);
    void *dscr = wd_cuda_malloc(wd_cuda_expert_scratch_bytes(n, H, F));
    CHECK(wd_cuda_expert_ffn(blas, &e, dout, dx, drows, dsc, n, accumulate, dscr,
                             wd_cuda_blas_stream(blas)) == 0);
    float *out = down_f32(dout, (size_t)total * H);
    /* compare the rows the expert wrote; untouched rows must stay as they were */
    float *a = malloc((size_t)n * H * 4), *b = malloc((size_t)n * H * 4);
    for (int t = 0; t < n; t++) {
        memcpy(a + (size_t)t * H, out + (size_t)rows[t] * H, (size_t)H * 4);
        memcpy(b + (size_t)t * H, ref + (size_t)rows[t] * H, (size_t)H * 4);
    }
    int gemm = n > WD_CUDA_GEMV_MAX_N;
    char name[96];
    snprintf(name, sizeof name, "expert %s %s n=%d H=%d F=%d %s", gemm ? "cublas" : "fused",
             wd_dtype_name(dt), n, H, F, accumulate ? "add" : "write");
    WD_GPU_CHECK_ERR(name, a, b, (size_t)n * H, gemm && dt == WD_DT_BF16 ? 1.5e-2 : 2e-5);
    if (accumulate) {
        int changed = 0;
        for (int r = 0; r < total; r++) {
            int used = 0;
            for (int t = 0; t < n; t++) used |= rows[t] == r;
            if (!used && memcmp(out + (size_t)r * H, base + (size_t)r * H, (size_t)H * 4)) changed++;
        }
        CHECKF(changed == 0, "%s: %d rows not chosen were modified", name, changed);
    }
    free(x); free(base); free(w1); free(w2); free(w3); free(rows); free(scale); free(ref);
    free(xs); free(ys); free(scr); free(out); free(a); free(b);
    wd_cuda_free((void *)e.w1); wd_cuda_free((void *)e.w2); wd_cuda_free((void *)e.w3);
    wd_cuda_free(dout); wd_cuda_free(dx); wd_cuda_free(dsc); wd_cuda_free(drows);
    wd_cuda_free(dscr);
}

static void test_convert_embed_combine(void) {
    size_t n = 10007;
    float *x = rand_vec(n, 100);
    float *dx = wd_gpu_up(x, n * 4);
    uint16_t *db = wd_gpu_poisoned(n * 2);
    CHECK(wd_cuda_convert(db, WD_DT_BF16, dx, WD_DT_F32, n, NULL) == 0);
    uint16_t *hb = malloc(n * 2);
    CHECK(wd_cuda_sync() == 0 && wd_cuda_download(hb, db, n * 2) == 0);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += hb[i] != wd_f32_to_bf16(x[i]);
    CHECKF(bad == 0, "f32 -> bf16: %d values differ from wd_f32_to_bf16", bad);
    uint16_t *hh = malloc(n * 2);
    for (size_t i = 0; i < n; i++) hh[i] = wd_f32_to_f16(x[i]);
    void *dh = wd_gpu_up(hh, n * 2);
    float *df = wd_gpu_poisoned(n * 4);
    CHECK(wd_cuda_convert(df, WD_DT_F32, dh, WD_DT_F16, n, NULL) == 0);
    float *f = down_f32(df, n);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += f[i] != wd_f16_to_f32(hh[i]);
    CHECKF(bad == 0, "f16 -> f32: %d values differ from wd_f16_to_f32", bad);
    /* embedding rows */
    int V = 50, dim = 96, toks[4] = {3, 49, 0, 3};
    float *tab = rand_vec((size_t)V * dim, 1);
    uint16_t *tb = to_bf16(tab, (size_t)V * dim);
    void *dtab = wd_gpu_up(tb, (size_t)V * dim * 2);
    int *dtok = wd_gpu_up(toks, sizeof toks);
    float *demb = wd_gpu_poisoned(4 * dim * 4);
    CHECK(wd_cuda_embed(demb, dtab, WD_DT_BF16, dtok, 4, dim, NULL) == 0);
    float *emb = down_f32(demb, 4 * dim), ref[4 * 96];
    for (int t = 0; t < 4; t++) memcpy(ref + t * dim, tab + (size_t)toks[t] * dim, dim * 4);
    WD_GPU_CHECK_ERR("embed bf16", emb, ref, 4 * dim, 0);
    /* more tokens than a grid's y dimension takes (65535) */
    int nt = 70000, d8 = 8;
    int *many = malloc((size_t)nt * 4);
    for (int t = 0; t < nt; t++) many[t] = (t * 7) % V;
    float *tab32 = rand_vec((size_t)V * d8, 1), *dtab32 = wd_gpu_up(tab32, (size_t)V * d8 * 4);
    int *dmany = wd_gpu_up(many, (size_t)nt * 4);
    float *dembm = wd_gpu_poisoned((size_t)nt * d8 * 4);
    CHECK(wd_cuda_embed(dembm, dtab32, WD_DT_F32, dmany, nt, d8, NULL) == 0);
    float *embm = down_f32(dembm, (size_t)nt * d8), *refm = malloc((size_t)nt * d8 * 4);
    for (int t = 0; t < nt; t++) memcpy(refm + (size_t)t * d8, tab32 + (size_t)many[t] * d8, d8 * 4);
    WD_GPU_CHECK_ERR("embed f32, 70000 tokens", embm, refm, (size_t)nt * d8, 0);
    free(many); free(tab32); free(embm); free(refm);
    wd_cuda_free(dtab32); wd_cuda_free(dmany); wd_cuda_free(dembm);
    /* combine: out += s0 + s1 + s2 */
    int m = 3, d = 1000;
    float *o = rand_vec((size_t)m * d, 1), *s[3], *ds[3];
    float *dout = wd_gpu_up(o, (size_t)m * d * 4);
    for (int j = 0; j < 3; j++) {
        s[j] = rand_vec((size_t)m * d, 1);
        ds[j] = wd_gpu_up(s[j], (size_t)m * d * 4);
    }
    CHECK(wd_cuda_combine(dout, (const float *const *)ds, 3, m, d, NULL) == 0);
    float *go = down_f32(dout, (size_t)m * d);
    for (size_t i = 0; i < (size_t)m * d; i++) o[i] = ((o[i] + s[0][i]) + s[1][i]) + s[2][i];
    WD_GPU_CHECK_ERR("combine", go, o, (size_t)m * d, 0);
    for (int j = 0; j < 3; j++) { free(s[j]); wd_cuda_free(ds[j]); }
    free(o); free(go); wd_cuda_free(dout);
    free(x); free(hb); free(hh); free(f); free(tab); free(tb); free(emb);
    wd_cuda_free(dx); wd_cuda_free(db); wd_cuda_free(dh); wd_cuda_free(df); wd_cuda_free(dtab);
    wd_cuda_free(dtok); wd_cuda_free(demb);
}

static int popcount8(const uint32_t *m) {
    int c = 0;
    for (int i = 0; i < 8; i++) c += __builtin_popcount(m[i]);
    return c;
}

/* Green contexts: requests split one after another from the GPU's SMs, so the
 * SMs a kernel on each partition reaches (%smid) are disjoint across devices
 * and no more than the partition holds; a plain stream reaches more; requests
 * beyond the GPU's SMs are refused with a message. */
static void test_green_contexts(void) {
    int req[4] = {16, 16, 32, 0};
    wd_cuda_devset_spec spec = {0};
    spec.n_devices = 4;
    spec.sm_count = req;
    spec.max_tokens = 4;
    spec.hidden = 64;
    spec.ffn = 172;
    char log[2048] = "", err[256] = "";
    wd_cuda_devset *ds = wd_cuda_devset_create(&spec, log, sizeof log, err, sizeof err);
    CHECKF(ds != NULL, "devset with green contexts: %s", err);
    if (!ds) return;
    if (!wd_cuda_devset_green(ds, 0)) {
        printf("  green contexts: NOT TESTED (%s)\n", log);
        wd_cuda_devset_free(ds);
        return;
    }
    uint32_t maps[4][8];
    int total = 0;
    for (int d = 0; d < 4; d++) {
        CHECK(wd_cuda_devset_sms_used(ds, d, 1024, maps[d]) == 0);
        int used = popcount8(maps[d]), have = wd_cuda_devset_sm_count(ds, d);
        if (d < 3) {
            CHECKF(wd_cuda_devset_green(ds, d), "device %d has no green context", d);
            CHECKF(have >= req[d], "device %d: %d SMs < %d asked", d, have, req[d]);
            CHECKF(used > 0 && used <= have, "device %d: kernel ran on %d SMs, partition %d", d,
                   used, have);
            total += have;
            printf("  green context %d: asked %d SMs, got %d, a kernel reached %d\n", d, req[d],
                   have, used);
        } else {
            CHECK(!wd_cuda_devset_green(ds, d));
            printf("  plain stream: a kernel reached %d SMs\n", used);
        }
    }
    int overlap = 0;
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            for (int i = 0; i < 8; i++) overlap += __builtin_popcount(maps[a][i] & maps[b][i]);
    CHECKF(overlap == 0, "green partitions share %d SMs", overlap);
    printf("  green contexts disjoint: %s (%d SMs in 3 partitions)\n", overlap ? "NO" : "yes",
           total);
    wd_cuda_devset_free(ds);
    /* more than the GPU has: refused, with a message naming gpu_sms */
    int big[2] = {4096, 8};
    spec.n_devices = 2;
    spec.sm_count = big;
    err[0] = 0;
    ds = wd_cuda_devset_create(&spec, NULL, 0, err, sizeof err);
    CHECKF(ds == NULL && strstr(err, "gpu_sms"), "a request beyond the GPU was not refused (%s)",
           err);
    if (ds) wd_cuda_devset_free(ds);
    else printf("  request beyond the GPU refused: %s\n", err);
}

static void test_delay(void) {
    unsigned long long *dt = wd_cuda_malloc(16), t[2];
    CHECK(wd_cuda_delay_timed(100000, dt, NULL) == 0);
    CHECK(wd_cuda_sync() == 0 && wd_cuda_download(t, dt, 16) == 0);
    CHECKF(t[1] - t[0] >= 100000, "delay kernel spun %llu ns < 100000", t[1] - t[0]);
    printf("  delay 100 us: kernel spun %.2f us\n", (t[1] - t[0]) / 1e3);
    /* a wrong value cannot spin for minutes: clamped to WD_CUDA_DELAY_MAX_NS */
    CHECK(wd_cuda_delay_timed(600ull * 1000000000ull, dt, NULL) == 0);
    CHECK(wd_cuda_sync() == 0 && wd_cuda_download(t, dt, 16) == 0);
    CHECKF(t[1] - t[0] >= WD_CUDA_DELAY_MAX_NS && t[1] - t[0] < WD_CUDA_DELAY_MAX_NS + 200000000ull,
           "a 600 s delay spun %.3f s, clamp %.3f s", (t[1] - t[0]) / 1e9,
           WD_CUDA_DELAY_MAX_NS / 1e9);
    printf("  delay 600 s asked: clamped, spun %.3f s\n", (t[1] - t[0]) / 1e9);
    wd_cuda_free(dt);
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
    test_rmsnorm();
    test_rope_kv(WD_DT_F32);
    test_rope_kv(WD_DT_BF16);
    test_attention(WD_DT_F32, 1, 700, 8, 2, 64);   /* decode over 3 cache splits */
    test_attention(WD_DT_BF16, 1, 1000, 32, 8, 128);
    test_attention(WD_DT_F32, 5, 300, 8, 4, 8);    /* prefill chunk, stories260k heads */
    test_attention(WD_DT_F32, 37, 0, 4, 4, 32);    /* prefill from position 0 */
    /* prefill across a split boundary: the first queries' second split is empty */
    test_attention(WD_DT_BF16, 20, 240, 6, 3, 24);
    test_attention(WD_DT_F32, 9, 250, 4, 1, 40);
    test_router(5, 8, 2);
    test_router(3, 64, 6);
    test_router(2, 4, 4);
    test_router(4, 1024, 8);
    test_router_nan();
    for (int dti = 0; dti < 2; dti++) {
        wd_dtype dt = dti ? WD_DT_BF16 : WD_DT_F32;
        test_matmul(blas, dt, 1, 300, 4096);
        test_matmul(blas, dt, 3, 257, 1032);
        test_matmul(blas, dt, 8, 64, 100); /* cols % 8 != 0: scalar path */
        test_matmul(blas, dt, 33, 200, 512);
        test_gemv_unaligned(dt);
        test_expert(blas, dt, 1, 512, 1376, 0);
        test_expert(blas, dt, 5, 512, 1376, 1);
        test_expert(blas, dt, 2, 64, 172, 1); /* stories260k shape: scalar path */
        test_expert(blas, dt, 40, 256, 704, 1);
        test_expert(blas, dt, 12, 64, 172, 0);
    }
    test_convert_embed_combine();
    test_delay();
    test_green_contexts();
    /* a cuBLAS failure names the call and the cuBLAS status (lda = 0 is invalid) */
    {
        float *dy = wd_cuda_malloc(64 * 4);
        int rc = wd_cuda_gemm_typed_input(blas, dy, dy, dy, WD_DT_F32, 2, 4, 0);
        const char *msg = wd_cuda_error_string(rc);
        CHECKF(rc >= WD_CUDA_CUBLAS_ERROR && strstr(msg, "cublasGemmEx"),
               "cuBLAS failure reported as %d: %s", rc, msg);
        printf("  cuBLAS failure reported as: %s\n", msg);
        wd_cuda_free(dy);
    }
    wd_cuda_blas_free(blas);
    return wd_test_finish("test_gpu_ops");
}
