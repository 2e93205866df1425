/* cuBLAS: one handle per stream (with its own workspace, so kernels of
 * different streams never share one and graph capture allocates nothing),
 * GEMMs for the BS projections and prefill, and the large-batch expert path. */
#include <stdlib.h>

#include <cublas_v2.h>

#include "kernels/cuda/common.cuh"

#define WD_BLAS_WORKSPACE (32u << 20)

struct wd_cuda_blas {
    cublasHandle_t h;
    cudaStream_t s;
    void *xb;       /* activations converted to BF16 */
    size_t cap;     /* elements of xb */
    void *workspace;
};

extern "C" wd_cuda_blas *wd_cuda_blas_create(wd_cuda_stream_t s, size_t max_elems, char *err,
                                             size_t errlen) {
    wd_cuda_blas *b = (wd_cuda_blas *)calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "kernels/cuda/blas.cu: out of host memory");
        return NULL;
    }
    b->s = s;
    b->cap = max_elems ? max_elems : 1;
    cublasStatus_t st = cublasCreate(&b->h);
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "kernels/cuda/blas.cu: cublasCreate failed (%s)",
                 cublasGetStatusString(st));
        free(b);
        return NULL;
    }
    if (cudaMalloc(&b->xb, b->cap * sizeof(__nv_bfloat16)) != cudaSuccess ||
        cudaMalloc(&b->workspace, WD_BLAS_WORKSPACE) != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "kernels/cuda/blas.cu: out of GPU memory for the cuBLAS buffers");
        wd_cuda_blas_free(b);
        return NULL;
    }
    cublasSetStream(b->h, s);
    cublasSetWorkspace(b->h, b->workspace, WD_BLAS_WORKSPACE);
    /* fp32 GEMMs stay true fp32 (no TF32): the exact mode relies on it */
    cublasSetMathMode(b->h, CUBLAS_DEFAULT_MATH);
    return b;
}

extern "C" void wd_cuda_blas_free(wd_cuda_blas *b) {
    if (!b) return;
    if (b->h) cublasDestroy(b->h);
    if (b->xb) cudaFree(b->xb);
    if (b->workspace) cudaFree(b->workspace);
    free(b);
}

extern "C" wd_cuda_stream_t wd_cuda_blas_stream(const wd_cuda_blas *b) { return b->s; }

/* y[n][rows] = x[n][cols] W^T, x already of the weights' dtype. Column-major
 * view: W is [cols x rows] (lda = cols), used transposed; x is [cols x n];
 * y is [rows x n] (ldc = rows). */
static int gemm_typed(wd_cuda_blas *b, float *y, const void *x, const void *w, wd_dtype dt,
                      int n, int rows, int cols, float beta) {
    const float alpha = 1.0f;
    cudaDataType_t t = dt == WD_DT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasStatus_t st =
        cublasGemmEx(b->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &alpha, w, t, cols, x, t, cols,
                     &beta, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : (int)cudaErrorUnknown;
}

extern "C" int wd_cuda_gemm(wd_cuda_blas *b, float *d_y, const float *d_x, const void *d_w,
                            wd_dtype dt, int n, int rows, int cols) {
    if (n <= 0 || rows <= 0) return 0;
    if (!b) return (int)cudaErrorInvalidValue;
    if (wd_dtype_quantised(dt)) return wd_cuda_gemm_quant(d_y, d_x, d_w, dt, n, rows, cols, b->s);
    if (dt == WD_DT_F32) return gemm_typed(b, d_y, d_x, d_w, dt, n, rows, cols, 0.0f);
    if (dt != WD_DT_BF16) return (int)cudaErrorInvalidValue;
    if ((size_t)n * cols > b->cap) return (int)cudaErrorMemoryAllocation;
    WD_CU((cudaError_t)wd_cuda_convert(b->xb, WD_DT_BF16, d_x, WD_DT_F32, (size_t)n * cols, b->s));
    return gemm_typed(b, d_y, b->xb, d_w, dt, n, rows, cols, 0.0f);
}

extern "C" int wd_cuda_matmul(wd_cuda_blas *b, float *d_y, const float *d_x, const void *d_w,
                              wd_dtype dt, int n, int rows, int cols) {
    if (n <= WD_CUDA_GEMV_MAX_N || !b)
        return wd_cuda_gemv(d_y, d_x, d_w, dt, n, rows, cols, 0.0f, b ? b->s : NULL);
    return wd_cuda_gemm(b, d_y, d_x, d_w, dt, n, rows, cols);
}

/* ---- expert FFN ------------------------------------------------------------------ */
static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

extern "C" size_t wd_cuda_expert_scratch_bytes(int n, int hidden, int ffn) {
    size_t xs = align256((size_t)n * hidden * 4);  /* gathered x (weights' dtype) */
    size_t gs = align256((size_t)n * ffn * 4);     /* gate / h */
    size_t us = align256((size_t)n * ffn * 4);     /* up */
    size_t hs = align256((size_t)n * ffn * 4);     /* silu(g)*u in the weights' dtype */
    size_t ys = align256((size_t)n * hidden * 4);  /* down output */
    return xs + gs + us + hs + ys;
}

extern "C" int wd_cuda_expert_ffn(wd_cuda_blas *b, const wd_cuda_expert *e, float *d_out,
                                  const float *d_x, const int *d_rows, const float *d_scale,
                                  int n, int accumulate, void *d_scratch, wd_cuda_stream_t s) {
    if (n <= 0) return 0;
    const int quant = wd_dtype_quantised(e->dt);
    if (e->dt != WD_DT_F32 && e->dt != WD_DT_BF16 && !quant) return (int)cudaErrorInvalidValue;
    int H = e->hidden, F = e->ffn;
    if (n <= WD_CUDA_GEMV_MAX_N || !b) {
        /* small batch: fused kernels, in chunks of WD_CUDA_GEMV_MAX_N tokens */
        for (int t0 = 0; t0 < n; t0 += WD_CUDA_GEMV_MAX_N) {
            int m = n - t0 < WD_CUDA_GEMV_MAX_N ? n - t0 : WD_CUDA_GEMV_MAX_N;
            const float *x = d_rows ? d_x : d_x + (size_t)t0 * H;
            float *out = d_rows ? d_out : d_out + (size_t)t0 * H;
            WD_CU((cudaError_t)wd_cuda_expert_small(e, out, x, d_rows ? d_rows + t0 : NULL,
                                                    d_scale ? d_scale + t0 : NULL, m,
                                                    accumulate, (float *)d_scratch, s));
        }
        return 0;
    }
    if (b->s != s) cublasSetStream(b->h, s); /* s: cuBLAS's default workspace pool */
    char *p = (char *)d_scratch;
    void *xg = p;
    p += align256((size_t)n * H * 4);
    float *g = (float *)p;
    p += align256((size_t)n * F * 4);
    float *u = (float *)p;
    p += align256((size_t)n * F * 4);
    void *hh = p;
    p += align256((size_t)n * F * 4);
    float *y = (float *)p;
    int rc;
    if (quant) { /* activations stay fp32: the tiled kernel on the blocks */
        rc = wd_cuda_gather_cast(xg, WD_DT_F32, d_x, d_rows, n, H, s);
        if (!rc) rc = wd_cuda_gemm_quant(g, (const float *)xg, e->w1, e->dt, n, F, H, s);
        if (!rc) rc = wd_cuda_gemm_quant(u, (const float *)xg, e->w3, e->dt, n, F, H, s);
        if (!rc) rc = wd_cuda_silu_mul_cast(hh, WD_DT_F32, g, u, (size_t)n * F, s);
        if (!rc) rc = wd_cuda_gemm_quant(y, (const float *)hh, e->w2, wd_cuda_expert_dt2(e), n, H, F, s);
    } else {
        rc = wd_cuda_gather_cast(xg, e->dt, d_x, d_rows, n, H, s);
        if (!rc) rc = gemm_typed(b, g, xg, e->w1, e->dt, n, F, H, 0.0f);
        if (!rc) rc = gemm_typed(b, u, xg, e->w3, e->dt, n, F, H, 0.0f);
        if (!rc) rc = wd_cuda_silu_mul_cast(hh, e->dt, g, u, (size_t)n * F, s);
        if (!rc) rc = gemm_typed(b, y, hh, e->w2, e->dt, n, H, F, 0.0f);
    }
    if (!rc) rc = wd_cuda_scatter(d_out, y, d_rows, d_scale, n, H, accumulate, s);
    if (b->s != s) { /* cublasSetStream resets the workspace to the default pool */
        cublasSetStream(b->h, b->s);
        cublasSetWorkspace(b->h, b->workspace, WD_BLAS_WORKSPACE);
    }
    return rc;
}
