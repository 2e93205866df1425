/* Quantised weights on the GPU (llama.cpp blocks: Q8_0, Q4_0, Q4_1, Q4_K, Q5_K,
 * Q6_K; layouts in kernels/cpu/quant.c and docs/formats.md), activations fp32.
 *
 *  - deq8<DT>: 8 consecutive weights of a block, dequantised exactly as the CPU
 *    (every d*sc*q product is exact in fp32, so the values are bit-identical).
 *  - GEMV (decode, n <= WD_CUDA_GEMV_MAX_N): a warp per row, each lane 8
 *    consecutive weights per step (a step covers 256 weights: one K-quant
 *    super-block or eight 32-blocks), fp32 FMAs against x, warp reduction.
 *  - GEMM (prefill): a direct tiled kernel, 64 rows x 64 tokens per block of
 *    256 threads, K step 32: each thread dequantises 8 weights of the tile into
 *    shared memory, then a 4x4 register tile of fp32 FMAs. No bf16 copy of the
 *    weights is made.
 *  - The fused expert FFN (gate+up+SiLU*mul, down+scale) for small batches,
 *    and the large-batch path (gather, GEMMs, SiLU*mul, scatter) on the tiled GEMM.
 *  - Embedding rows and whole-tensor dequantisation (to F32 or BF16). */
#include "kernels/cuda/common.cuh"

namespace {

template <int DT> struct qt;
template <> struct qt<WD_DT_Q8_0> { enum { BS = 32, BB = 34 }; };
template <> struct qt<WD_DT_Q4_0> { enum { BS = 32, BB = 18 }; };
template <> struct qt<WD_DT_Q4_1> { enum { BS = 32, BB = 20 }; };
template <> struct qt<WD_DT_Q4_K> { enum { BS = 256, BB = 144 }; };
template <> struct qt<WD_DT_Q5_K> { enum { BS = 256, BB = 176 }; };
template <> struct qt<WD_DT_Q6_K> { enum { BS = 256, BB = 210 }; };

__device__ __forceinline__ float f16_at(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

__device__ __forceinline__ void k4_scale_min(int j, const uint8_t *q, int &sc, int &mn) {
    if (j < 4) {
        sc = q[j] & 63;
        mn = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Weights j0 .. j0+7 of block b (j0 a multiple of 8). */
template <int DT> __device__ __forceinline__ void deq8(const uint8_t *b, int j0, float f[8]);

template <> __device__ __forceinline__ void deq8<WD_DT_Q8_0>(const uint8_t *b, int j0, float f[8]) {
    float d = f16_at(b);
    const int8_t *q = (const int8_t *)(b + 2) + j0;
#pragma unroll
    for (int i = 0; i < 8; i++) f[i] = d * (float)q[i];
}
template <> __device__ __forceinline__ void deq8<WD_DT_Q4_0>(const uint8_t *b, int j0, float f[8]) {
    float d = f16_at(b);
    const uint8_t *q = b + 2 + (j0 & 15);
    int sh = j0 >= 16 ? 4 : 0;
#pragma unroll
    for (int i = 0; i < 8; i++) f[i] = d * (float)(((q[i] >> sh) & 0xF) - 8);
}
template <> __device__ __forceinline__ void deq8<WD_DT_Q4_1>(const uint8_t *b, int j0, float f[8]) {
    float d = f16_at(b), m = f16_at(b + 2);
    const uint8_t *q = b + 4 + (j0 & 15);
    int sh = j0 >= 16 ? 4 : 0;
#pragma unroll
    for (int i = 0; i < 8; i++) f[i] = d * (float)((q[i] >> sh) & 0xF) + m;
}
template <int Q5> __device__ __forceinline__ void deq8_k45(const uint8_t *b, int j0, float f[8]) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    int c = j0 >> 6, i0 = j0 & 63, s = 2 * c + (i0 >> 5), l0 = i0 & 31;
    int sc, mn;
    k4_scale_min(s, b + 4, sc, mn);
    float d1 = d * (float)sc, m1 = dmin * (float)mn;
    const uint8_t *q = b + (Q5 ? 48 : 16) + 32 * c + l0;
    int sh = i0 >= 32 ? 4 : 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int v = (q[i] >> sh) & 0xF;
        if (Q5) v += ((b[16 + l0 + i] >> s) & 1) << 4;
        f[i] = d1 * (float)v - m1;
    }
}
template <> __device__ __forceinline__ void deq8<WD_DT_Q4_K>(const uint8_t *b, int j0, float f[8]) {
    deq8_k45<0>(b, j0, f);
}
template <> __device__ __forceinline__ void deq8<WD_DT_Q5_K>(const uint8_t *b, int j0, float f[8]) {
    deq8_k45<1>(b, j0, f);
}
template <> __device__ __forceinline__ void deq8<WD_DT_Q6_K>(const uint8_t *b, int j0, float f[8]) {
    float d = f16_at(b + 208);
    float ds = d * (float)((const int8_t *)(b + 192))[j0 >> 4];
    int h = j0 >> 7, k = (j0 & 127) >> 5, l0 = j0 & 31;
    const uint8_t *ql = b + 64 * h + 32 * (k & 1) + l0, *qh = b + 128 + 32 * h + l0;
    int sl = 4 * (k >> 1), shh = 2 * k;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int q = ((ql[i] >> sl) & 0xF) | (((qh[i] >> shh) & 3) << 4);
        f[i] = ds * (float)(q - 32);
    }
}

/* Weights e0 .. e0+7 of a row (e0 a multiple of 8). */
template <int DT>
__device__ __forceinline__ void row8(const uint8_t *row, int e0, float f[8]) {
    deq8<DT>(row + (size_t)(e0 / qt<DT>::BS) * qt<DT>::BB, e0 % qt<DT>::BS, f);
}
template <int DT> __host__ __device__ __forceinline__ size_t row_bytes(int cols) {
    return (size_t)(cols / qt<DT>::BS) * qt<DT>::BB;
}

/* acc[m][t] += row m . x[t] over the lane's weights (NM rows, N tokens). */
template <int DT, int NM, int N>
__device__ __forceinline__ void qrowdot(float (&acc)[NM][N], const uint8_t *const (&w)[NM],
                                        const float *const (&x)[N], int n, int cols, int lane) {
    for (int e0 = lane * 8; e0 < cols; e0 += 256) {
        float wf[NM][8];
#pragma unroll
        for (int m = 0; m < NM; m++) row8<DT>(w[m], e0, wf[m]);
#pragma unroll
        for (int t = 0; t < N; t++)
            if (t < n) {
                const float *xt = x[t] + e0;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float xv = xt[i];
#pragma unroll
                    for (int m = 0; m < NM; m++) acc[m][t] = fmaf(wf[m][i], xv, acc[m][t]);
                }
            }
    }
}

#define Q_ROWS_PER_BLOCK 8 /* 256 threads: a warp per row */

template <int DT, int N>
__global__ void __launch_bounds__(256)
qgemv_kernel(float *y, const float *x, const uint8_t *w, int n, int rows, int cols, float beta) {
    int row = blockIdx.x * Q_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const uint8_t *const wm[1] = {w + (size_t)row * row_bytes<DT>(cols)};
    const float *xp[N];
#pragma unroll
    for (int t = 0; t < N; t++) xp[t] = x + (size_t)(t < n ? t : 0) * cols;
    float acc[1][N];
#pragma unroll
    for (int t = 0; t < N; t++) acc[0][t] = 0.0f;
    qrowdot<DT, 1, N>(acc, wm, xp, n, cols, lane);
#pragma unroll
    for (int t = 0; t < N; t++)
        if (t < n) {
            float v = wd_warp_sum(acc[0][t]);
            if (lane == 0) {
                float *o = y + (size_t)t * rows + row;
                *o = beta != 0.0f ? *o + v : v;
            }
        }
}

template <int DT>
int qgemv_launch(float *y, const float *x, const void *w, int n, int rows, int cols, float beta,
                 cudaStream_t s) {
    unsigned blocks = wd_blocks(rows, Q_ROWS_PER_BLOCK);
    const uint8_t *wb = (const uint8_t *)w;
    if (n <= 1) qgemv_kernel<DT, 1><<<blocks, 256, 0, s>>>(y, x, wb, n, rows, cols, beta);
    else if (n <= 2) qgemv_kernel<DT, 2><<<blocks, 256, 0, s>>>(y, x, wb, n, rows, cols, beta);
    else if (n <= 4) qgemv_kernel<DT, 4><<<blocks, 256, 0, s>>>(y, x, wb, n, rows, cols, beta);
    else qgemv_kernel<DT, 8><<<blocks, 256, 0, s>>>(y, x, wb, n, rows, cols, beta);
    return wd_launch_status();
}

/* ---- tiled GEMM: y[t][r] = W[r] . x[t] ----------------------------------------------- */
#define QG_TR 64 /* rows per block */
#define QG_TT 64 /* tokens per block */
#define QG_K 32

template <int DT>
__global__ void __launch_bounds__(256)
qgemm_kernel(float *y, const float *x, const uint8_t *w, int n, int rows, int cols) {
    __shared__ float ws[QG_K][QG_TR + 1];
    __shared__ float xs[QG_K][QG_TT + 1];
    const int r0 = blockIdx.x * QG_TR, t0 = blockIdx.y * QG_TT, tid = threadIdx.x;
    const int tr = (tid & 15) * 4, tt = (tid >> 4) * 4; /* this thread's 4 rows x 4 tokens */
    const size_t rb = row_bytes<DT>(cols);
    float acc[4][4] = {};
    for (int k0 = 0; k0 < cols; k0 += QG_K) {
        { /* 64 rows x 32 weights: 8 per thread */
            int r = tid >> 2, j = (tid & 3) * 8;
            float f[8];
            if (r0 + r < rows) row8<DT>(w + (size_t)(r0 + r) * rb, k0 + j, f);
            else
#pragma unroll
                for (int i = 0; i < 8; i++) f[i] = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) ws[j + i][r] = f[i];
        }
#pragma unroll
        for (int i = 0; i < 8; i++) { /* 64 tokens x 32 columns: 8 per thread */
            int id = tid + 256 * i, t = id >> 5, c = id & 31;
            xs[c][t] = t0 + t < n ? x[(size_t)(t0 + t) * cols + k0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < QG_K; k++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = ws[k][tr + i], b[i] = xs[k][tt + i];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int t = t0 + tt + j;
        if (t >= n) continue;
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (r0 + tr + i < rows) y[(size_t)t * rows + r0 + tr + i] = acc[i][j];
    }
}

template <int DT>
int qgemm_launch(float *y, const float *x, const void *w, int n, int rows, int cols,
                 cudaStream_t s) {
    dim3 grid(wd_blocks(rows, QG_TR), wd_blocks(n, QG_TT));
    if (grid.y > 65535) return (int)cudaErrorInvalidValue;
    qgemm_kernel<DT><<<grid, 256, 0, s>>>(y, x, (const uint8_t *)w, n, rows, cols);
    return wd_launch_status();
}

/* ---- fused expert FFN, small batch -------------------------------------------------- */
template <int DT, int N>
__global__ void __launch_bounds__(256)
qexpert_gate_up_kernel(float *h, const float *x, const int *rows, const uint8_t *w1,
                       const uint8_t *w3, int n, int hidden, int ffn) {
    int r = blockIdx.x * Q_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= ffn) return;
    const size_t rb = row_bytes<DT>(hidden);
    const uint8_t *const wm[2] = {w1 + (size_t)r * rb, w3 + (size_t)r * rb};
    const float *xp[N];
#pragma unroll
    for (int t = 0; t < N; t++) {
        int tt = t < n ? t : 0;
        xp[t] = x + (size_t)(rows ? rows[tt] : tt) * hidden;
    }
    float acc[2][N];
#pragma unroll
    for (int t = 0; t < N; t++) acc[0][t] = acc[1][t] = 0.0f;
    qrowdot<DT, 2, N>(acc, wm, xp, n, hidden, lane);
#pragma unroll
    for (int t = 0; t < N; t++)
        if (t < n) {
            float g = wd_warp_sum(acc[0][t]), u = wd_warp_sum(acc[1][t]);
            if (lane == 0) h[(size_t)t * ffn + r] = wd_silu_mul(g, u);
        }
}

template <int DT, int N>
__global__ void __launch_bounds__(256)
qexpert_down_kernel(float *out, const float *h, const int *rows, const float *scale,
                    const uint8_t *w2, int n, int hidden, int ffn, int accumulate) {
    int r = blockIdx.x * Q_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= hidden) return;
    const uint8_t *const wm[1] = {w2 + (size_t)r * row_bytes<DT>(ffn)};
    const float *hp[N];
#pragma unroll
    for (int t = 0; t < N; t++) hp[t] = h + (size_t)(t < n ? t : 0) * ffn;
    float acc[1][N];
#pragma unroll
    for (int t = 0; t < N; t++) acc[0][t] = 0.0f;
    qrowdot<DT, 1, N>(acc, wm, hp, n, ffn, lane);
#pragma unroll
    for (int t = 0; t < N; t++)
        if (t < n) {
            float v = wd_warp_sum(acc[0][t]);
            if (lane == 0) {
                float a = scale ? scale[t] : 1.0f;
                float *o = out + (size_t)(rows ? rows[t] : t) * hidden + r;
                if (accumulate) atomicAdd(o, a * v);
                else *o = a * v;
            }
        }
}

/* The two halves launched separately: w2 may be another block type (dt2). */
template <int DT, int N>
int qexpert_gate_up(const wd_cuda_expert *e, const float *x, const int *rows, int n, float *h,
                    cudaStream_t s) {
    qexpert_gate_up_kernel<DT, N><<<wd_blocks(e->ffn, Q_ROWS_PER_BLOCK), 256, 0, s>>>(
        h, x, rows, (const uint8_t *)e->w1, (const uint8_t *)e->w3, n, e->hidden, e->ffn);
    return wd_launch_status();
}
template <int DT, int N>
int qexpert_down(const wd_cuda_expert *e, float *out, const int *rows, const float *scale, int n,
                 int accumulate, const float *h, cudaStream_t s) {
    qexpert_down_kernel<DT, N><<<wd_blocks(e->hidden, Q_ROWS_PER_BLOCK), 256, 0, s>>>(
        out, h, rows, scale, (const uint8_t *)e->w2, n, e->hidden, e->ffn, accumulate);
    return wd_launch_status();
}

template <int DT>
int qexpert_gate_up_n(const wd_cuda_expert *e, const float *x, const int *rows, int n, float *h,
                      cudaStream_t s) {
    if (n <= 1) return qexpert_gate_up<DT, 1>(e, x, rows, n, h, s);
    if (n <= 2) return qexpert_gate_up<DT, 2>(e, x, rows, n, h, s);
    if (n <= 4) return qexpert_gate_up<DT, 4>(e, x, rows, n, h, s);
    return qexpert_gate_up<DT, 8>(e, x, rows, n, h, s);
}
template <int DT>
int qexpert_down_n(const wd_cuda_expert *e, float *out, const int *rows, const float *scale, int n,
                   int accumulate, const float *h, cudaStream_t s) {
    if (n <= 1) return qexpert_down<DT, 1>(e, out, rows, scale, n, accumulate, h, s);
    if (n <= 2) return qexpert_down<DT, 2>(e, out, rows, scale, n, accumulate, h, s);
    if (n <= 4) return qexpert_down<DT, 4>(e, out, rows, scale, n, accumulate, h, s);
    return qexpert_down<DT, 8>(e, out, rows, scale, n, accumulate, h, s);
}

/* ---- embedding rows, whole-tensor dequantisation ------------------------------------ */
template <int DT, typename D>
__global__ void qrows_kernel(D *dst, const uint8_t *w, const int *idx, int n, int cols) {
    const size_t rb = row_bytes<DT>(cols);
    const int groups = cols / 8;
    for (int t = blockIdx.y; t < n; t += gridDim.y) {
        const uint8_t *row = w + (size_t)(idx ? idx[t] : t) * rb;
        for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += gridDim.x * blockDim.x) {
            float f[8];
            row8<DT>(row, 8 * g, f);
#pragma unroll
            for (int i = 0; i < 8; i++) wd_st(dst + (size_t)t * cols + 8 * g + i, f[i]);
        }
    }
}

template <int DT>
int qrows_launch(void *dst, wd_dtype ddt, const void *w, const int *idx, int n, int cols,
                 cudaStream_t s) {
    dim3 grid(wd_blocks(cols / 8, 256), n < 65535 ? n : 65535);
    if (ddt == WD_DT_F32)
        qrows_kernel<DT, float><<<grid, 256, 0, s>>>((float *)dst, (const uint8_t *)w, idx, n, cols);
    else if (ddt == WD_DT_BF16)
        qrows_kernel<DT, __nv_bfloat16>
            <<<grid, 256, 0, s>>>((__nv_bfloat16 *)dst, (const uint8_t *)w, idx, n, cols);
    else
        return (int)cudaErrorInvalidValue;
    return wd_launch_status();
}

} // namespace

/* One switch from the runtime dtype to the templated kernels. */
#define WD_QUANT_DISPATCH(dt, CALL)                                                           \
    switch (dt) {                                                                             \
    case WD_DT_Q8_0: return CALL(WD_DT_Q8_0);                                                 \
    case WD_DT_Q4_0: return CALL(WD_DT_Q4_0);                                                 \
    case WD_DT_Q4_1: return CALL(WD_DT_Q4_1);                                                 \
    case WD_DT_Q4_K: return CALL(WD_DT_Q4_K);                                                 \
    case WD_DT_Q5_K: return CALL(WD_DT_Q5_K);                                                 \
    case WD_DT_Q6_K: return CALL(WD_DT_Q6_K);                                                 \
    default: return (int)cudaErrorInvalidValue;                                               \
    }

static int bad_shape(wd_dtype dt, int cols) {
    return !wd_dtype_quantised(dt) || cols <= 0 || cols % wd_dtype_block(dt);
}

int wd_cuda_gemv_quant(float *d_y, const float *d_x, const void *d_w, wd_dtype dt, int n, int rows,
                       int cols, float beta, cudaStream_t s) {
    if (n <= 0 || rows <= 0) return 0;
    if (n > WD_CUDA_GEMV_MAX_N || bad_shape(dt, cols)) return (int)cudaErrorInvalidValue;
#define CALL(DT) qgemv_launch<DT>(d_y, d_x, d_w, n, rows, cols, beta, s)
    WD_QUANT_DISPATCH(dt, CALL)
#undef CALL
}

int wd_cuda_gemm_quant(float *d_y, const float *d_x, const void *d_w, wd_dtype dt, int n, int rows,
                       int cols, cudaStream_t s) {
    if (n <= 0 || rows <= 0) return 0;
    if (bad_shape(dt, cols)) return (int)cudaErrorInvalidValue;
#define CALL(DT) qgemm_launch<DT>(d_y, d_x, d_w, n, rows, cols, s)
    WD_QUANT_DISPATCH(dt, CALL)
#undef CALL
}

wd_dtype wd_cuda_expert_dt2(const wd_cuda_expert *e) {
    return wd_dtype_quantised(e->dt) && wd_dtype_quantised(e->dt2) ? e->dt2 : e->dt;
}

int wd_cuda_expert_small_quant(const wd_cuda_expert *e, float *d_out, const float *d_x,
                               const int *d_rows, const float *d_scale, int n, int accumulate,
                               float *d_h, cudaStream_t s) {
    if (n <= 0) return 0;
    const wd_dtype dt2 = wd_cuda_expert_dt2(e);
    if (n > WD_CUDA_GEMV_MAX_N || bad_shape(e->dt, e->hidden) || bad_shape(dt2, e->ffn))
        return (int)cudaErrorInvalidValue;
    int rc;
    {
#define CALL(DT) qexpert_gate_up_n<DT>(e, d_x, d_rows, n, d_h, s)
        rc = [&]() -> int { WD_QUANT_DISPATCH(e->dt, CALL) }();
#undef CALL
    }
    if (rc) return rc;
#define CALL(DT) qexpert_down_n<DT>(e, d_out, d_rows, d_scale, n, accumulate, d_h, s)
    WD_QUANT_DISPATCH(dt2, CALL)
#undef CALL
}

extern "C" int wd_cuda_dequant_rows(void *d_dst, wd_dtype dst_dt, const void *d_w, wd_dtype dt,
                                    const int *d_idx, int n, int cols, wd_cuda_stream_t s) {
    if (n <= 0) return 0;
    if (bad_shape(dt, cols)) return (int)cudaErrorInvalidValue;
#define CALL(DT) qrows_launch<DT>(d_dst, dst_dt, d_w, d_idx, n, cols, s)
    WD_QUANT_DISPATCH(dt, CALL)
#undef CALL
}
