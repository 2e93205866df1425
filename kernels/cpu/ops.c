/* CPU ops: matmul over mapped weights, RMSNorm, RoPE, softmax, top-k,
 * causal GQA attention, SwiGLU expert FFN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

/* ---- matmul ---------------------------------------------------------- */
typedef struct {
    float *y;
    const float *x;
    const void *w;
    wd_dtype dt;
    int n, rows, cols, chunk;
} matmul_ctx;

static void matmul_task(void *arg, int task, int n_tasks) {
    matmul_ctx *c = arg;
    int r0 = task * c->chunk, r1 = r0 + c->chunk;
    if (r1 > c->rows) r1 = c->rows;
    float row[8192];
    float *buf = c->cols <= 8192 ? row : malloc((size_t)c->cols * sizeof(float));
    if (!buf) return;
    for (int r = r0; r < r1; r++) {
        const float *wr;
        if (c->dt == WD_DT_F32) {
            wr = (const float *)c->w + (size_t)r * c->cols;
        } else {
            wd_row_to_f32(buf, c->w, c->dt, r, c->cols);
            wr = buf;
        }
        for (int t = 0; t < c->n; t++) {
            const float *xt = c->x + (size_t)t * c->cols;
            float s = 0;
            for (int i = 0; i < c->cols; i++) s += wr[i] * xt[i];
            c->y[(size_t)t * c->rows + r] = s;
        }
    }
    if (buf != row) free(buf);
}

void wd_matmul(wd_pool *pool, float *y, const float *x, const void *w, wd_dtype dt, int n,
               int rows, int cols) {
    int nt = wd_pool_size(pool) * 4;
    int chunk = (rows + nt - 1) / nt;
    if (chunk < 16) chunk = 16;
    matmul_ctx c = {y, x, w, dt, n, rows, cols, chunk};
    wd_pool_run(pool, matmul_task, &c, (rows + chunk - 1) / chunk);
}

/* ---- elementwise ----------------------------------------------------- */
void wd_rmsnorm(float *y, const float *x, const float *w, int dim, float eps) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(ss / dim) + eps);
    for (int i = 0; i < dim; i++) y[i] = x[i] * inv * w[i];
}

void wd_rope(float *v, int n_heads, int head_dim, int pos, float theta) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double freq = pow((double)theta, -2.0 * i / head_dim);
        double ang = pos * freq;
        float c = (float)cos(ang), s = (float)sin(ang);
        for (int h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * head_dim;
            float a = p[i], b = p[i + half];
            p[i] = a * c - b * s;
            p[i + half] = b * c + a * s;
        }
    }
}

void wd_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

int wd_topk(const float *x, int n, int k, int *idx) {
    if (k > n) k = n;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int used = 0;
            for (int q = 0; q < j; q++)
                if (idx[q] == i) used = 1;
            if (used) continue;
            if (best < 0 || x[i] > x[best]) best = i;
        }
        idx[j] = best;
    }
    return k;
}

/* ---- attention ------------------------------------------------------- */
typedef struct {
    float *out;
    const float *q, *k, *v;
    int n, pos0, n_heads, n_kv_heads, head_dim;
    float *scratch;
    int ctx_len;
} attn_ctx;

size_t wd_attention_scratch(int n, int n_heads, int ctx) {
    return (size_t)n * n_heads * ctx;
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
    for (int p = 0; p <= pos; p++) {
        const float *kp = c->k + (size_t)p * kvd + (size_t)kvh * hd;
        float s = 0;
        for (int i = 0; i < hd; i++) s += qv[i] * kp[i];
        att[p] = s * scale;
    }
    wd_softmax(att, pos + 1);
    float *o = c->out + (size_t)t * c->n_heads * hd + (size_t)h * hd;
    memset(o, 0, (size_t)hd * 4);
    for (int p = 0; p <= pos; p++) {
        const float *vp = c->v + (size_t)p * kvd + (size_t)kvh * hd;
        float a = att[p];
        for (int i = 0; i < hd; i++) o[i] += a * vp[i];
    }
}

void wd_attention(wd_pool *pool, float *out, const float *q, const float *k, const float *v,
                  int n, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    /* scratch holds one score row per (token, head) task */
    attn_ctx c = {out, q, k, v, n, pos0, n_heads, n_kv_heads, head_dim, scratch, pos0 + n};
    wd_pool_run(pool, attn_task, &c, n * n_heads);
}

/* ---- expert ---------------------------------------------------------- */
void wd_expert_ffn(wd_pool *pool, float *y, const float *x, int n, const void *w1,
                   const void *w3, const void *w2, wd_dtype dt, int hidden, int ffn,
                   float *scratch) {
    float *g = scratch, *u = scratch + (size_t)n * ffn;
    wd_matmul(pool, g, x, w1, dt, n, ffn, hidden);
    wd_matmul(pool, u, x, w3, dt, n, ffn, hidden);
    for (size_t i = 0; i < (size_t)n * ffn; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    wd_matmul(pool, y, g, w2, dt, n, hidden, ffn);
}

/* ---- bandwidth ------------------------------------------------------- */
#include <time.h>
typedef struct {
    const float *buf;
    size_t n;
    double *sums;
} bw_ctx;

static void bw_task(void *arg, int task, int n_tasks) {
    bw_ctx *c = arg;
    size_t per = c->n / n_tasks, i0 = per * task, i1 = task == n_tasks - 1 ? c->n : i0 + per;
    float s = 0;
    for (size_t i = i0; i < i1; i++) s += c->buf[i];
    c->sums[task] = s;
}

double wd_measure_read_bandwidth(wd_pool *pool, size_t bytes, int reps) {
    size_t n = bytes / 4;
    float *buf = malloc(n * 4);
    int nt = wd_pool_size(pool);
    double *sums = calloc((size_t)nt, sizeof(double));
    if (!buf || !sums) {
        free(buf);
        free(sums);
        return 0;
    }
    for (size_t i = 0; i < n; i++) buf[i] = 1.0f;
    bw_ctx c = {buf, n, sums};
    double best = 0;
    for (int r = 0; r < reps; r++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        wd_pool_run(pool, bw_task, &c, nt);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double dt = (b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec);
        if (dt > 0 && bytes / dt > best) best = bytes / dt;
    }
    free(buf);
    free(sums);
    return best;
}
