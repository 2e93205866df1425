/* Causal GQA attention over a KV cache. One task per (query position, head).
 * Keys are taken in blocks of WD_ATTN_BLOCK: scores q.k_p (AVX-512 dot
 * products over head_dim) go to a block buffer on the stack, and an online
 * softmax (running max and sum; the output is rescaled when the max grows)
 * accumulates sum_p exp(s_p - max) v_p, so no context-sized scratch is
 * needed. Query head h reads KV head h / (n_heads / n_kv_heads). Each
 * (position, head) result is computed the same way whatever n is, so a
 * prefill gives bit-identical results to one decode call per position. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

typedef struct {
    float *out;
    const float *q, *k, *v;
    int n, pos0, n_heads, n_kv_heads, head_dim;
} attn_ctx;

#define WD_ATTN_BLOCK 256

/* The scratch argument is no longer used (scores live in a stack block); the
 * function stays for API compatibility and asks for a token amount. */
size_t wd_attention_scratch(int n, int n_heads, int ctx) {
    (void)n, (void)n_heads, (void)ctx;
    return 16;
}

/* x[i] = exp(x[i] - m) for i < n; returns the sum. */
static float exp_shift_sum(float *x, int n, float m) {
    int i = 0;
    float s = 0;
#ifdef WD_AVX512
    __m512 vm = _mm512_set1_ps(m), vs = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m512 e = wd_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        vs = _mm512_add_ps(vs, e);
    }
    s = _mm512_reduce_add_ps(vs);
#endif
    for (; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    return s;
}

static void scale_vec(float *y, float a, int n) {
    int i = 0;
#ifdef WD_AVX512
    __m512 va = _mm512_set1_ps(a);
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(va, _mm512_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] *= a;
}

static inline float dot(const float *a, const float *b, int n) {
    int i = 0;
    float s = 0;
#ifdef WD_AVX512
    __m512 acc = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = wd_tail_mask(n - i);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
        i = n;
    }
    s = _mm512_reduce_add_ps(acc);
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int n) {
    int i = 0;
#ifdef WD_AVX512
    __m512 va = _mm512_set1_ps(a);
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = wd_tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
        i = n;
    }
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

static void attn_task(void *arg, int task, int n_tasks) {
    attn_ctx *c = arg;
    int t = task / c->n_heads, h = task % c->n_heads;
    int pos = c->pos0 + t;
    int hd = c->head_dim, kvd = c->n_kv_heads * hd;
    int kvh = h / (c->n_heads / c->n_kv_heads);
    const float *qv = c->q + (size_t)t * c->n_heads * hd + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    const float *kb = c->k + (size_t)kvh * hd, *vb = c->v + (size_t)kvh * hd;
    float *o = c->out + (size_t)t * c->n_heads * hd + (size_t)h * hd;
    float sc[WD_ATTN_BLOCK];
    float m = -INFINITY, l = 0;
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int p0 = 0; p0 <= pos; p0 += WD_ATTN_BLOCK) {
        int nb = pos + 1 - p0 < WD_ATTN_BLOCK ? pos + 1 - p0 : WD_ATTN_BLOCK;
        float bm = -INFINITY;
        for (int j = 0; j < nb; j++) {
            sc[j] = dot(qv, kb + (size_t)(p0 + j) * kvd, hd) * scale;
            if (sc[j] > bm) bm = sc[j];
        }
        if (bm > m) { /* new running max: rescale what was accumulated */
            if (l > 0) {
                float r = expf(m - bm);
                l *= r;
                scale_vec(o, r, hd);
            }
            m = bm;
        }
        l += exp_shift_sum(sc, nb, m);
        for (int j = 0; j < nb; j++) axpy(o, sc[j], vb + (size_t)(p0 + j) * kvd, hd);
    }
    scale_vec(o, 1.0f / l, hd);
}

void wd_attention(wd_pool *pool, float *out, const float *q, const float *k, const float *v,
                  int n, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    if (n <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    (void)scratch;
    attn_ctx c = {out, q, k, v, n, pos0, n_heads, n_kv_heads, head_dim};
    /* tiny decode contexts are cheaper than a pool hand-off */
    if ((int64_t)n * n_heads * (pos0 + n) * head_dim < 16384) {
        for (int t = 0; t < n * n_heads; t++) attn_task(&c, t, n * n_heads);
        return;
    }
    wd_pool_run(pool, attn_task, &c, n * n_heads);
}
