/* CPU elementwise ops: RMSNorm, rotate-half RoPE, softmax, top-k. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

void wd_rmsnorm(float *y, const float *x, const float *w, int dim, float eps) {
    double ss = 0;
    int i = 0;
#ifdef WD_AVX512
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    for (; i + 16 <= dim; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
    }
    ss = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
    for (; i < dim; i++) ss += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(ss / dim) + eps);
    i = 0;
#ifdef WD_AVX512
    __m512 vi = _mm512_set1_ps(inv);
    for (; i + 16 <= dim; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vi),
                                              _mm512_loadu_ps(w + i)));
#endif
    for (; i < dim; i++) y[i] = x[i] * inv * w[i];
}

/* Angles in double: freq_i = theta^(-2i/head_dim), angle = pos * freq_i, so
 * positions in the thousands keep full float accuracy in cos/sin. */
void wd_rope_cs(float *cs, int head_dim, int pos, float theta) {
    int half = head_dim / 2;
    double lt = log((double)theta);
    for (int i = 0; i < half; i++) {
        double ang = pos * exp(-2.0 * i / head_dim * lt);
        cs[2 * i] = (float)cos(ang);
        cs[2 * i + 1] = (float)sin(ang);
    }
}

void wd_rope_apply(float *v, int n_heads, int head_dim, const float *cs) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        for (int h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * head_dim;
            float a = p[i], b = p[i + half];
            p[i] = a * c - b * s;
            p[i + half] = b * c + a * s;
        }
    }
}

void wd_rope(float *v, int n_heads, int head_dim, int pos, float theta) {
    int half = head_dim / 2;
    double lt = log((double)theta);
    for (int i = 0; i < half; i++) {
        double ang = pos * exp(-2.0 * i / head_dim * lt);
        float c = (float)cos(ang), s = (float)sin(ang);
        for (int h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * head_dim;
            float a = p[i], b = p[i + half];
            p[i] = a * c - b * s;
            p[i + half] = b * c + a * s;
        }
    }
}

void wd_log_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    float lse = (float)(mx + log(sum));
    for (int i = 0; i < n; i++) x[i] -= lse;
}

int wd_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

void wd_softmax(float *x, int n) {
    if (n <= 0) return;
    int i = 0;
    float mx = x[0];
#ifdef WD_AVX512
    if (n >= 16) {
        __m512 m = _mm512_loadu_ps(x);
        for (i = 16; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
        mx = _mm512_reduce_max_ps(m);
    }
#endif
    for (; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0;
    i = 0;
#ifdef WD_AVX512
    __m512 vm = _mm512_set1_ps(mx), vs = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m512 e = wd_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        vs = _mm512_add_ps(vs, e);
    }
    sum = _mm512_reduce_add_ps(vs);
#endif
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    i = 0;
#ifdef WD_AVX512
    __m512 vi = _mm512_set1_ps(inv);
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vi));
#endif
    for (; i < n; i++) x[i] *= inv;
}

/* a ranks before b: larger value; NaN ranks below every number. */
static inline int ranks_before(float a, float b) { return a > b || (!isnan(a) && isnan(b)); }

/* One pass keeping a sorted list of the k best seen so far: O(n k) worst,
 * O(n) typical. An element enters only by strictly beating the k-th, and is
 * placed after the equal ones already there, so ties keep the lower index. */
int wd_topk(const float *x, int n, int k, int *idx) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        float v = x[i];
        if (m == k && !ranks_before(v, x[idx[k - 1]])) continue;
        int j = m < k ? m++ : k - 1;
        while (j > 0 && ranks_before(v, x[idx[j - 1]])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    return k;
}
