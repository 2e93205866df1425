/* kernels: compute for the CPU backend (and the dtype vocabulary shared by all modules).
 *
 * Everything a model needs to run one layer lives here: dtype conversion,
 * a thread pool, matmul over mapped weights of any supported dtype, RMSNorm,
 * rotate-half RoPE, causal GQA attention over a KV cache, softmax, top-k and
 * the SwiGLU expert FFN. Activations are fp32; weights are converted in the
 * inner loop (never copied). */
#ifndef WD_KERNELS_H
#define WD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- dtypes ---------------------------------------------------------- */
typedef enum {
    WD_DT_F32 = 0,
    WD_DT_F16,
    WD_DT_BF16,
    WD_DT_Q8_0, /* llama.cpp Q8_0: blocks of 32 int8 with one f16 scale (34 bytes) */
    /* llama.cpp's 4-6 bit block quantisations (layouts in docs/formats.md) */
    WD_DT_Q4_0, /* 32 weights: f16 d, 16 bytes of nibbles; w = d (q - 8) (18 bytes) */
    WD_DT_Q4_1, /* 32 weights: f16 d, f16 m, nibbles; w = d q + m (20 bytes) */
    WD_DT_Q4_K, /* 256 weights: 8 x 32 with 6-bit scales and mins (144 bytes) */
    WD_DT_Q5_K, /* 256 weights: Q4_K plus one high bit per weight (176 bytes) */
    WD_DT_Q6_K, /* 256 weights: 16 x 16 with int8 scales, 6-bit quants (210 bytes) */
    WD_DT_COUNT
} wd_dtype;

const char *wd_dtype_name(wd_dtype dt);
/* Elements per block: 1 for F32/F16/BF16, 32 for Q8_0/Q4_0/Q4_1, 256 for the K-quants.
 * A row of a quantised matrix holds a whole number of blocks. */
int wd_dtype_block(wd_dtype dt);
/* Bytes taken by n consecutive elements (n must be a multiple of wd_dtype_block). */
size_t wd_dtype_bytes(wd_dtype dt, int64_t n);
/* Whether dt is one of the block-quantised dtypes (Q8_0 and the Q4/Q5/Q6 kinds). */
int wd_dtype_quantised(wd_dtype dt);

float wd_bf16_to_f32(uint16_t h);
uint16_t wd_f32_to_bf16(float f); /* round to nearest even, NaN kept NaN */
float wd_f16_to_f32(uint16_t h);
uint16_t wd_f32_to_f16(float f); /* round to nearest even, overflow -> inf */

/* Row `row` of a row-major [rows x cols] matrix of dtype dt, converted to fp32
 * (quantised rows dequantised bit-exactly as llama.cpp's dequantize_row_*). */
void wd_row_to_f32(float *dst, const void *w, wd_dtype dt, int64_t row, int cols);

/* ---- thread pool ----------------------------------------------------- */
typedef struct wd_pool wd_pool;
typedef void (*wd_task_fn)(void *ctx, int task, int n_tasks);

wd_pool *wd_pool_create(int n_threads); /* n_threads <= 0: number of online CPUs */
void wd_pool_destroy(wd_pool *pool);
int wd_pool_size(const wd_pool *pool);
/* Run fn(ctx, i, n_tasks) for i in [0, n_tasks) on the pool's threads (the
 * caller is one of them) and return when all are done. pool may be NULL
 * (runs serially). Not reentrant: do not call from inside a task. */
void wd_pool_run(wd_pool *pool, wd_task_fn fn, void *ctx, int n_tasks);

/* ---- ops ------------------------------------------------------------- */
/* y[t*rows + r] = sum_c W[r*cols + c] * x[t*cols + c], for t < n, r < rows.
 * W is row-major [rows x cols] of dtype dt (mapped weights). */
void wd_matmul(wd_pool *pool, float *y, const float *x, const void *w, wd_dtype dt,
               int n, int rows, int cols);

/* Several decode matmuls (n < 8 tokens) in one pool run: the rows of all
 * jobs are split between the threads at once, in blocks of 16 rows balanced
 * by bytes, so e.g. a layer's q/k/v projections or the gate/up and down
 * projections of its selected experts cost one barrier instead of one per
 * matrix. A job with w3 set is a fused SwiGLU gate/up: y = silu(W x) * (W3 x),
 * with u (rows floats per token) as scratch for W3 x. Every output has the
 * bits wd_matmul (or wd_expert_ffn's gate/up) gives it. For n >= 8 the jobs
 * run one after another. */
typedef struct {
    float *y;        /* [n][rows] */
    const float *x;  /* [n][cols] */
    const void *w;   /* [rows x cols] of dtype dt */
    const void *w3;  /* NULL, or the up projection of a fused gate/up */
    float *u;        /* scratch [n][rows] when w3 is set */
    wd_dtype dt;
    int rows, cols;
} wd_mm_job;
void wd_matmul_multi(wd_pool *pool, const wd_mm_job *jobs, int n_jobs, int n);

/* y = x / sqrt(mean(x^2) + eps) * w, over dim elements (y may alias x). */
void wd_rmsnorm(float *y, const float *x, const float *w, int dim, float eps);

/* Rotate-half RoPE in place on n_heads vectors of head_dim at position pos:
 * for i < head_dim/2, (v[i], v[i+half]) rotated by pos * theta^(-2i/head_dim). */
void wd_rope(float *v, int n_heads, int head_dim, int pos, float theta);
/* The same in two steps, so a prefill computes a position's angles once for
 * every layer, q and k: cs[2i], cs[2i+1] = cos, sin of the angle of pair i
 * (head_dim floats), then the rotation; the same bits as wd_rope. */
void wd_rope_cs(float *cs, int head_dim, int pos, float theta);
void wd_rope_apply(float *v, int n_heads, int head_dim, const float *cs);

void wd_softmax(float *x, int n);
/* x[i] -= log(sum_j exp(x[j])) in place (the sum in double); the index of the
   largest x[i] (the first on ties) */
void wd_log_softmax(float *x, int n);
int wd_argmax(const float *x, int n);

/* Indices of the k largest values of x[0..n), largest first; ties go to the
 * lower index. Returns k (clamped to n). */
int wd_topk(const float *x, int n, int k, int *idx);

/* Causal GQA attention for n query positions pos0..pos0+n-1.
 *   q:   [n][n_heads*head_dim] (RoPE applied)
 *   k,v: caches [ctx][n_kv_heads*head_dim], filled for positions 0..pos0+n-1
 *   out: [n][n_heads*head_dim]
 * Query head h reads KV head h / (n_heads/n_kv_heads); scores scaled by
 * 1/sqrt(head_dim). scratch: at least wd_attention_scratch(n, n_heads, pos0+n) floats. */
size_t wd_attention_scratch(int n, int n_heads, int ctx);
void wd_attention(wd_pool *pool, float *out, const float *q, const float *k, const float *v,
                  int n, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch);

/* SwiGLU expert on n token vectors: y = w2( silu(w1 x) * (w3 x) ).
 * w1, w3: [ffn x hidden] of dtype dt; w2: [hidden x ffn] of dtype dt2 (GGUF
 * K-quant mixes often store w2 with more bits, e.g. Q6_K beside Q4_K).
 * scratch: at least 2*n*ffn floats. */
void wd_expert_ffn(wd_pool *pool, float *y, const float *x, int n, const void *w1,
                   const void *w3, const void *w2, wd_dtype dt, wd_dtype dt2, int hidden,
                   int ffn, float *scratch);

/* Measured memory read bandwidth in bytes/s: the median of `passes` timed
 * whole-buffer reads of `bytes` with all the pool's threads (use a buffer far
 * larger than the last-level cache). rates: NULL, or `passes` doubles that
 * receive each pass's bytes/s in order. Returns 0 when out of memory. */
double wd_measure_read_bandwidth(wd_pool *pool, size_t bytes, int passes, double *rates);

#ifdef __cplusplus
}
#endif
#endif
