/* Causal GQA attention over a KV cache. One task per (query position, head):
 * scores q.k_p for p <= pos (AVX-512 dot products over head_dim), softmax
 * (vector exp), then out = sum_p a_p v_p. Query head h reads KV head
 * h / (n_heads / n_kv_heads). */
#include <math.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

typedef struct {
    float *out;
    const float *q, *k, *v;
    int n, pos0, n_heads, n_kv_heads, head_dim;
    float *scratch;
    int ctx_len;
} attn_ctx;

size_t wd_attention_scratch(int n, int n_heads, int ctx) { return (size_t)n * n_heads * ctx; }

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
    float *att = c->scratch + (size_t)task * c->ctx_len;
    const float *qv = c->q + (size_t)t * c->n_heads * hd + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    const float *kb = c->k + (size_t)kvh * hd, *vb = c->v + (size_t)kvh * hd;
    for (int p = 0; p <= pos; p++) att[p] = dot(qv, kb + (size_t)p * kvd, hd) * scale;
    wd_softmax(att, pos + 1);
    float *o = c->out + (size_t)t * c->n_heads * hd + (size_t)h * hd;
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int p = 0; p <= pos; p++) axpy(o, att[p], vb + (size_t)p * kvd, hd);
}

void wd_attention(wd_pool *pool, float *out, const float *q, const float *k, const float *v,
                  int n, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    if (n <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    attn_ctx c = {out, q, k, v, n, pos0, n_heads, n_kv_heads, head_dim, scratch, pos0 + n};
    /* tiny decode contexts are cheaper than a pool hand-off */
    if ((int64_t)n * n_heads * (pos0 + n) * head_dim < 16384) {
        for (int t = 0; t < n * n_heads; t++) attn_task(&c, t, n * n_heads);
        return;
    }
    wd_pool_run(pool, attn_task, &c, n * n_heads);
}
