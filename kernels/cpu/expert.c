/* SwiGLU expert FFN: y = w2( silu(w1 x) * (w3 x) ).
 * Decode (n < 8): one pool run computes, per contiguous block of ffn rows,
 * the w1 and w3 dot products and silu(g)*u in place (x stays in L1; the
 * block's results never leave the thread), then a second run does w2.
 * Prefill: two GEMMs, a vectorised silu*mul, one GEMM; with F32 weights
 * (AVX-512) the two GEMMs and silu*mul run fused per block of ffn rows. */
#include <math.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

typedef struct {
    float *g, *u;
    const float *x;
    const void *w1, *w3;
    wd_dtype dt;
    int n, hidden, ffn, n_units;
} ffn_ctx;

void wd_cpu_silu_mul(float *g, const float *u, int n) {
    int i = 0;
#ifdef WD_AVX512
    const __m512 one = _mm512_set1_ps(1.0f);
    /* every element takes the vector path (the tail masked), so how the
     * rows are split between threads never changes a result */
    for (; i < n; i += 16) {
        __mmask16 m = wd_tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = wd_exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
#endif
    for (; i < n; i++) g[i] = wd_silu_scalar(g[i]) * u[i];
}

static void gate_up_task(void *arg, int task, int n_tasks) {
    const ffn_ctx *c = arg;
    int r0 = (int)((int64_t)c->n_units * task / n_tasks) * 16;
    int r1 = (int)((int64_t)c->n_units * (task + 1) / n_tasks) * 16;
    if (r1 > c->ffn) r1 = c->ffn;
    if (r0 >= r1) return;
    wd_cpu_gemv_rows(c->g, c->x, c->w1, c->dt, c->n, c->ffn, c->hidden, r0, r1);
    wd_cpu_gemv_rows(c->u, c->x, c->w3, c->dt, c->n, c->ffn, c->hidden, r0, r1);
    for (int t = 0; t < c->n; t++)
        wd_cpu_silu_mul(c->g + (size_t)t * c->ffn + r0, c->u + (size_t)t * c->ffn + r0, r1 - r0);
}

#ifdef WD_AVX512
/* Prefill: one run computes a block of rows of both g = w1 x and
 * u = w3 x from one packing of the tokens, then silu(g)*u on that block. */
static void gate_up_sg_task(void *arg, int task, int n_tasks) {
    const ffn_ctx *c = arg;
    int unit = wd_cpu_sg_unit(c->dt, c->n);
    int r0 = (int)((int64_t)c->n_units * task / n_tasks) * unit;
    int r1 = (int)((int64_t)c->n_units * (task + 1) / n_tasks) * unit;
    if (r1 > c->ffn) r1 = c->ffn;
    if (r0 >= r1) return;
    _Alignas(64) float xt[WD_SG_XT_FLOATS];
    wd_cpu_sg_rows2(c->g, c->w1, c->u, c->w3, c->dt, c->x, c->n, c->ffn, c->hidden, r0, r1, xt);
    for (int t = 0; t < c->n; t++)
        wd_cpu_silu_mul(c->g + (size_t)t * c->ffn + r0, c->u + (size_t)t * c->ffn + r0, r1 - r0);
}
#endif

void wd_expert_ffn(wd_pool *pool, float *y, const float *x, int n, const void *w1,
                   const void *w3, const void *w2, wd_dtype dt, wd_dtype dt2, int hidden,
                   int ffn, float *scratch) {
    if (n <= 0) return;
    float *g = scratch, *u = scratch + (size_t)n * ffn;
    if (n < 8) {
        ffn_ctx c = {g, u, x, w1, w3, dt, n, hidden, ffn, (ffn + 15) / 16};
        int nt = wd_pool_size(pool);
        if (nt > c.n_units) nt = c.n_units;
        if ((int64_t)ffn * hidden * 2 < 32768) nt = 1;
        if (nt <= 1) gate_up_task(&c, 0, 1);
        else wd_pool_run(pool, gate_up_task, &c, nt);
    }
#ifdef WD_AVX512
    else if (wd_cpu_sg_fits(dt, n, hidden)) {
        int unit = wd_cpu_sg_unit(dt, n);
        ffn_ctx c = {g, u, x, w1, w3, dt, n, hidden, ffn, (ffn + unit - 1) / unit};
        int nt = wd_pool_size(pool);
        if (nt > c.n_units) nt = c.n_units;
        if ((int64_t)ffn * hidden * 2 * n < 32768) nt = 1;
        if (nt <= 1) gate_up_sg_task(&c, 0, 1);
        else wd_pool_run(pool, gate_up_sg_task, &c, nt);
    }
#endif
    else {
        wd_matmul(pool, g, x, w1, dt, n, ffn, hidden);
        wd_matmul(pool, u, x, w3, dt, n, ffn, hidden);
        wd_cpu_silu_mul(g, u, n * ffn);
    }
    wd_matmul(pool, y, g, w2, dt2, n, hidden, ffn);
}
