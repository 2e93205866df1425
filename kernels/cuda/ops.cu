/* CUDA kernels and their launchers: conversion, embedding, RMSNorm, RoPE +
 * KV append, split-cache attention, router softmax + top-k, GEMV, the fused
 * expert FFN (small batch), combine, delay. Each kernel mirrors a CPU op of
 * kernels/kernels.h (tests/gpu compares them). */
#include <math.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

/* ---- runtime helpers ------------------------------------------------------ */
extern "C" int wd_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no device / no driver" error */
        return 0;
    }
    return n;
}

extern "C" const char *wd_cuda_error_string(int code) {
    return cudaGetErrorString((cudaError_t)code);
}

extern "C" int wd_cuda_device_info(int dev, char *buf, size_t len) {
    cudaDeviceProp p;
    WD_CU(cudaGetDeviceProperties(&p, dev));
    snprintf(buf, len, "%s, %d SMs, %.1f GiB, sm_%d%d", p.name, p.multiProcessorCount,
             p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.major, p.minor);
    return 0;
}

extern "C" int wd_cuda_sync(void) { return (int)cudaDeviceSynchronize(); }
extern "C" void *wd_cuda_malloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}
extern "C" void wd_cuda_free(void *p) {
    if (p) cudaFree(p);
}
extern "C" int wd_cuda_upload(void *d_dst, const void *src, size_t bytes) {
    return (int)cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice);
}
extern "C" int wd_cuda_download(void *dst, const void *d_src, size_t bytes) {
    return (int)cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost);
}
extern "C" int wd_cuda_poison(void *d_p, size_t bytes) {
    WD_CU(cudaMemset(d_p, 0xFF, bytes));
    return (int)cudaDeviceSynchronize();
}

/* ---- conversion, embedding --------------------------------------------------- */
template <typename S, typename D>
__global__ void convert_kernel(D *dst, const S *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        wd_st(dst + i, wd_ld(src + i));
}

template <typename S>
static int convert_from(void *dst, wd_dtype ddt, const S *src, size_t n, cudaStream_t s) {
    unsigned blocks = wd_blocks(n, 256);
    if (blocks > 65536) blocks = 65536;
    if (ddt == WD_DT_F32)
        convert_kernel<S, float><<<blocks, 256, 0, s>>>((float *)dst, src, n);
    else if (ddt == WD_DT_BF16)
        convert_kernel<S, __nv_bfloat16><<<blocks, 256, 0, s>>>((__nv_bfloat16 *)dst, src, n);
    else
        return (int)cudaErrorInvalidValue;
    return wd_launch_status();
}

extern "C" int wd_cuda_convert(void *d_dst, wd_dtype dst_dt, const void *d_src, wd_dtype src_dt,
                               size_t n, wd_cuda_stream_t s) {
    if (n == 0) return 0;
    switch (src_dt) {
    case WD_DT_F32: return convert_from(d_dst, dst_dt, (const float *)d_src, n, s);
    case WD_DT_BF16: return convert_from(d_dst, dst_dt, (const __nv_bfloat16 *)d_src, n, s);
    case WD_DT_F16: return convert_from(d_dst, dst_dt, (const __half *)d_src, n, s);
    default: return (int)cudaErrorInvalidValue;
    }
}

template <typename T>
__global__ void embed_kernel(float *x, const T *table, const int *tokens, int n, int dim) {
    for (int t = blockIdx.y; t < n; t += gridDim.y) {
        const T *row = table + (size_t)tokens[t] * dim;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < dim; i += gridDim.x * blockDim.x)
            x[(size_t)t * dim + i] = wd_ld(row + i);
    }
}

extern "C" int wd_cuda_embed(float *d_x, const void *d_table, wd_dtype dt, const int *d_tokens,
                             int n, int dim, wd_cuda_stream_t s) {
    if (n <= 0) return 0;
    if (wd_dtype_quantised(dt)) /* quant.cu */
        return wd_cuda_dequant_rows(d_x, WD_DT_F32, d_table, dt, d_tokens, n, dim, s);
    dim3 grid(wd_blocks(dim, 256), n < 65535 ? n : 65535); /* grid y <= 65535 */
    if (dt == WD_DT_F32)
        embed_kernel<<<grid, 256, 0, s>>>(d_x, (const float *)d_table, d_tokens, n, dim);
    else if (dt == WD_DT_BF16)
        embed_kernel<<<grid, 256, 0, s>>>(d_x, (const __nv_bfloat16 *)d_table, d_tokens, n, dim);
    else
        return (int)cudaErrorInvalidValue;
    return wd_launch_status();
}

/* ---- RMSNorm (sum of squares in double, as the CPU op) ----------------------- */
__global__ void rmsnorm_kernel(float *y, const float *x, const float *w, int dim, float eps) {
    __shared__ double sh[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    double ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = wd_block_sum_d(ss, sh);
    float inv = 1.0f / sqrtf((float)(ss / dim) + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

extern "C" int wd_cuda_rmsnorm(float *d_y, const float *d_x, const float *d_w, int n, int dim,
                               float eps, wd_cuda_stream_t s) {
    if (n <= 0) return 0;
    rmsnorm_kernel<<<n, 256, 0, s>>>(d_y, d_x, d_w, dim, eps);
    return wd_launch_status();
}

/* ---- RoPE + KV append ----------------------------------------------------------- */
template <typename C>
__global__ void rope_kv_kernel(float *q, const float *k, const float *v, C *kc, C *vc, int n,
                               int pos0, const int *d_pos, int n_heads, int n_kv, int hd,
                               double theta) {
    if (d_pos) pos0 += *d_pos;
    int half = hd / 2;
    size_t total = (size_t)n * (n_heads + n_kv) * half;
    size_t id = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (id >= total) return;
    int i = (int)(id % half);
    int hh = (int)((id / half) % (n_heads + n_kv));
    int t = (int)(id / ((size_t)half * (n_heads + n_kv)));
    int pos = pos0 + t;
    double freq = pow(theta, -2.0 * i / hd);
    double ang = pos * freq;
    float c = (float)cos(ang), sn = (float)sin(ang);
    if (hh < n_heads) {
        float *p = q + (size_t)t * n_heads * hd + (size_t)hh * hd;
        float a = p[i], b = p[i + half];
        p[i] = a * c - b * sn;
        p[i + half] = b * c + a * sn;
    } else {
        int j = hh - n_heads, kvd = n_kv * hd;
        const float *kp = k + (size_t)t * kvd + (size_t)j * hd;
        const float *vp = v + (size_t)t * kvd + (size_t)j * hd;
        C *ko = kc + (size_t)pos * kvd + (size_t)j * hd;
        C *vo = vc + (size_t)pos * kvd + (size_t)j * hd;
        float a = kp[i], b = kp[i + half];
        wd_st(ko + i, a * c - b * sn);
        wd_st(ko + i + half, b * c + a * sn);
        wd_st(vo + i, vp[i]);
        wd_st(vo + i + half, vp[i + half]);
    }
}

int wd_cuda_rope_kv_at(float *d_q, const float *d_k, const float *d_v, void *d_kcache,
                       void *d_vcache, wd_dtype cache_dt, int n, int pos0, const int *d_pos,
                       int n_heads, int n_kv_heads, int head_dim, float theta, cudaStream_t s) {
    if (n <= 0) return 0;
    if (head_dim % 2) return (int)cudaErrorInvalidValue;
    size_t total = (size_t)n * (n_heads + n_kv_heads) * (head_dim / 2);
    unsigned blocks = wd_blocks(total, 256);
    if (cache_dt == WD_DT_F32)
        rope_kv_kernel<<<blocks, 256, 0, s>>>(d_q, d_k, d_v, (float *)d_kcache, (float *)d_vcache,
                                              n, pos0, d_pos, n_heads, n_kv_heads, head_dim, theta);
    else if (cache_dt == WD_DT_BF16)
        rope_kv_kernel<<<blocks, 256, 0, s>>>(d_q, d_k, d_v, (__nv_bfloat16 *)d_kcache,
                                              (__nv_bfloat16 *)d_vcache, n, pos0, d_pos, n_heads,
                                              n_kv_heads, head_dim, theta);
    else
        return (int)cudaErrorInvalidValue;
    return wd_launch_status();
}

extern "C" int wd_cuda_rope_kv(float *d_q, const float *d_k, const float *d_v, void *d_kcache,
                               void *d_vcache, wd_dtype cache_dt, int n, int pos0, int n_heads,
                               int n_kv_heads, int head_dim, float theta, wd_cuda_stream_t s) {
    return wd_cuda_rope_kv_at(d_q, d_k, d_v, d_kcache, d_vcache, cache_dt, n, pos0, NULL, n_heads,
                              n_kv_heads, head_dim, theta, s);
}

/* ---- attention split over the cache (flash-decoding) ---------------------------
 * Block (split sp, head h, query t) handles cache rows [sp*CH, min((sp+1)*CH, len_t))
 * with len_t = pos0 + t + 1: scores, local max m, sum l, unnormalised output o.
 * A second kernel merges the splits: O = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M). */
#define WD_ATT_CHUNK 256
#define WD_ATT_THREADS 128
#define WD_ATT_MAX_HD 512

static int att_splits(int ctx) { return (ctx + WD_ATT_CHUNK - 1) / WD_ATT_CHUNK; }

extern "C" size_t wd_cuda_attention_scratch_bytes(int n, int n_heads, int ctx, int head_dim) {
    size_t parts = (size_t)n * n_heads * att_splits(ctx);
    return parts * ((size_t)head_dim + 2) * sizeof(float);
}

template <typename C>
__global__ void __launch_bounds__(WD_ATT_THREADS)
attn_split_kernel(float *o_part, float *m_part, float *l_part, const float *q, const C *kc,
                  const C *vc, int pos0, const int *d_pos, int n_heads, int n_kv, int hd, int nsp,
                  float scale) {
    __shared__ float sc[WD_ATT_CHUNK];
    if (d_pos) pos0 += *d_pos;
    __shared__ float qs[WD_ATT_MAX_HD];
    __shared__ float red[32];
    int sp = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
    int len = pos0 + t + 1;
    int p0 = sp * WD_ATT_CHUNK;
    size_t part = ((size_t)t * n_heads + h) * nsp + sp;
    if (p0 >= len) { /* this split lies beyond query t's causal window */
        if (threadIdx.x == 0) {
            m_part[part] = -INFINITY;
            l_part[part] = 0.0f;
        }
        for (int i = threadIdx.x; i < hd; i += blockDim.x) o_part[part * hd + i] = 0.0f;
        return;
    }
    int p1 = min(p0 + WD_ATT_CHUNK, len), np = p1 - p0;
    int kvh = h / (n_heads / n_kv), kvd = n_kv * hd;
    const float *qv = q + (size_t)t * n_heads * hd + (size_t)h * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qv[i];
    __syncthreads();
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int j = w; j < np; j += nw) {
        const C *kp = kc + (size_t)(p0 + j) * kvd + (size_t)kvh * hd;
        float s = 0;
        for (int i = lane; i < hd; i += 32) s += qs[i] * wd_ld(kp + i);
        s = wd_warp_sum(s);
        if (lane == 0) sc[j] = s * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < np; j += blockDim.x) mx = fmaxf(mx, sc[j]);
    mx = wd_block_max(mx, red);
    float sum = 0;
    for (int j = threadIdx.x; j < np; j += blockDim.x) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = wd_block_sum(sum, red); /* ends with __syncthreads visible writes of sc */
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        const C *vp = vc + (size_t)p0 * kvd + (size_t)kvh * hd + i;
        float acc = 0;
        for (int j = 0; j < np; j++) acc += sc[j] * wd_ld(vp + (size_t)j * kvd);
        o_part[part * hd + i] = acc;
    }
    if (threadIdx.x == 0) {
        m_part[part] = mx;
        l_part[part] = sum;
    }
}

__global__ void attn_merge_kernel(float *out, const float *o_part, const float *m_part,
                                  const float *l_part, int n_heads, int hd, int nsp) {
    int h = blockIdx.x, t = blockIdx.y;
    size_t base = ((size_t)t * n_heads + h) * nsp;
    float M = -INFINITY;
    for (int s = 0; s < nsp; s++) M = fmaxf(M, m_part[base + s]);
    float L = 0;
    for (int s = 0; s < nsp; s++)
        if (l_part[base + s] > 0) L += l_part[base + s] * expf(m_part[base + s] - M);
    float inv = 1.0f / L;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0;
        for (int s = 0; s < nsp; s++)
            if (l_part[base + s] > 0)
                acc += o_part[(base + s) * hd + i] * expf(m_part[base + s] - M);
        out[(size_t)t * n_heads * hd + (size_t)h * hd + i] = acc * inv;
    }
}

int wd_cuda_attention_at(float *d_out, const float *d_q, const void *d_kcache,
                         const void *d_vcache, wd_dtype cache_dt, int n, int pos0,
                         const int *d_pos, int ctx, int n_heads, int n_kv_heads, int head_dim,
                         void *d_scratch, cudaStream_t s) {
    if (n <= 0) return 0;
    if (head_dim > WD_ATT_MAX_HD || n_kv_heads <= 0 || n_heads % n_kv_heads || ctx <= 0)
        return (int)cudaErrorInvalidValue;
    if (n > 65535) { /* grid z (and the merge's y) <= 65535: queries in chunks */
        size_t qd = (size_t)n_heads * head_dim;
        for (int t0 = 0; t0 < n; t0 += 65535)
            WD_CU((cudaError_t)wd_cuda_attention_at(
                d_out + t0 * qd, d_q + t0 * qd, d_kcache, d_vcache, cache_dt,
                n - t0 < 65535 ? n - t0 : 65535, pos0 + t0, d_pos, ctx, n_heads, n_kv_heads,
                head_dim, d_scratch, s));
        return 0;
    }
    int nsp = att_splits(ctx);
    size_t parts = (size_t)n * n_heads * nsp;
    float *o_part = (float *)d_scratch;
    float *m_part = o_part + parts * head_dim;
    float *l_part = m_part + parts;
    dim3 grid(nsp, n_heads, n);
    float scale = 1.0f / sqrtf((float)head_dim);
    if (cache_dt == WD_DT_F32)
        attn_split_kernel<<<grid, WD_ATT_THREADS, 0, s>>>(
            o_part, m_part, l_part, d_q, (const float *)d_kcache, (const float *)d_vcache, pos0,
            d_pos, n_heads, n_kv_heads, head_dim, nsp, scale);
    else if (cache_dt == WD_DT_BF16)
        attn_split_kernel<<<grid, WD_ATT_THREADS, 0, s>>>(
            o_part, m_part, l_part, d_q, (const __nv_bfloat16 *)d_kcache,
            (const __nv_bfloat16 *)d_vcache, pos0, d_pos, n_heads, n_kv_heads, head_dim, nsp,
            scale);
    else
        return (int)cudaErrorInvalidValue;
    WD_CU(cudaGetLastError());
    int threads = head_dim < 32 ? 32 : (head_dim > 1024 ? 1024 : head_dim);
    attn_merge_kernel<<<dim3(n_heads, n), threads, 0, s>>>(d_out, o_part, m_part, l_part, n_heads,
                                                          head_dim, nsp);
    return wd_launch_status();
}

extern "C" int wd_cuda_attention(float *d_out, const float *d_q, const void *d_kcache,
                                  const void *d_vcache, wd_dtype cache_dt, int n, int pos0,
                                  int n_heads, int n_kv_heads, int head_dim, void *d_scratch,
                                  wd_cuda_stream_t s) {
    return wd_cuda_attention_at(d_out, d_q, d_kcache, d_vcache, cache_dt, n, pos0, NULL,
                                pos0 + n, n_heads, n_kv_heads, head_dim, d_scratch, s);
}

/* ---- router: softmax + top-k (one warp per token) -------------------------------- */
/* (a, ia) ranks before (b, ib) as in wd_topk: larger value first, NaN below every
 * number, ties (NaN included) to the lower index. */
__device__ __forceinline__ bool router_before(float a, int ia, float b, int ib) {
    bool an = isnan(a), bn = isnan(b);
    if (an != bn) return bn;
    if (!an && a != b) return a > b;
    return ia < ib;
}

__global__ void router_kernel(float *probs, int *idx, float *weights, const float *logits,
                              int E, int k) {
    extern __shared__ float p[]; /* [E] */
    int t = blockIdx.x, lane = threadIdx.x;
    const float *l = logits + (size_t)t * E;
    float mx = -INFINITY;
    for (int i = lane; i < E; i += 32) mx = fmaxf(mx, l[i]);
    mx = wd_warp_max(mx);
    double sum = 0;
    for (int i = lane; i < E; i += 32) {
        float e = expf(l[i] - mx);
        p[i] = e;
        sum += e;
    }
    sum = wd_warp_sum_d(sum);
    float inv = (float)(1.0 / sum);
    for (int i = lane; i < E; i += 32) {
        p[i] *= inv;
        probs[(size_t)t * E + i] = p[i];
    }
    __syncwarp();
    float wsum = 0;
    for (int j = 0; j < k; j++) {
        float best = NAN; /* with bi: "none yet", ranks after every candidate */
        int bi = 0x7fffffff;
        for (int i = lane; i < E; i += 32) {
            float v = p[i];
            if (v != -INFINITY && router_before(v, i, best, bi)) {
                best = v;
                bi = i;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (router_before(ov, oi, best, bi)) {
                best = ov;
                bi = oi;
            }
        }
        if (lane == 0) {
            idx[(size_t)t * k + j] = bi;
            weights[(size_t)t * k + j] = best;
            p[bi] = -INFINITY; /* probabilities are >= 0 or NaN: -inf marks the chosen */
        }
        wsum += best;
        __syncwarp();
    }
    if (lane == 0)
        for (int j = 0; j < k; j++) weights[(size_t)t * k + j] /= wsum;
}

extern "C" int wd_cuda_router(float *d_probs, int *d_idx, float *d_weights,
                              const float *d_logits, int n, int n_experts, int k,
                              wd_cuda_stream_t s) {
    if (n <= 0) return 0;
    if (n_experts <= 0 || n_experts > 1024 || k <= 0 || k > n_experts)
        return (int)cudaErrorInvalidValue;
    router_kernel<<<n, 32, n_experts * sizeof(float), s>>>(d_probs, d_idx, d_weights, d_logits,
                                                           n_experts, k);
    return wd_launch_status();
}

/* ---- warp-per-row dot products (GEMV, fused expert) -------------------------------
 * acc[m][t] += this lane's share of dot(w[m][0..cols), x[t][0..cols)) for NM
 * weight rows and N (<= WD_CUDA_GEMV_MAX_N) token vectors. vec: cols % 8 == 0
 * and 16-byte aligned rows: 16-byte weight loads, WD_UNROLL of them in flight. */
#define WD_UNROLL 4

template <typename T, int NM, int N>
__device__ __forceinline__ void wd_rowdot(float (&acc)[NM][N], const T *const (&w)[NM],
                                          const float *const (&x)[N], int n, int cols, bool vec,
                                          int lane) {
    if (vec) {
        int c = lane * 8;
        for (; c + (WD_UNROLL - 1) * 256 < cols; c += WD_UNROLL * 256) {
            wd_vec8<T> r[NM][WD_UNROLL];
#pragma unroll
            for (int u = 0; u < WD_UNROLL; u++)
#pragma unroll
                for (int m = 0; m < NM; m++) r[m][u].load(w[m] + c + u * 256);
#pragma unroll
            for (int u = 0; u < WD_UNROLL; u++) {
                float wf[NM][8];
#pragma unroll
                for (int m = 0; m < NM; m++) r[m][u].to_f32(wf[m]);
#pragma unroll
                for (int t = 0; t < N; t++) {
                    if (t < n) {
                        float xf[8];
                        wd_load8_f32(x[t] + c + u * 256, xf);
#pragma unroll
                        for (int m = 0; m < NM; m++)
#pragma unroll
                            for (int i = 0; i < 8; i++) acc[m][t] = fmaf(wf[m][i], xf[i], acc[m][t]);
                    }
                }
            }
        }
        for (; c < cols; c += 256) {
            float wf[NM][8];
#pragma unroll
            for (int m = 0; m < NM; m++) {
                wd_vec8<T> r;
                r.load(w[m] + c);
                r.to_f32(wf[m]);
            }
#pragma unroll
            for (int t = 0; t < N; t++) {
                if (t < n) {
                    float xf[8];
                    wd_load8_f32(x[t] + c, xf);
#pragma unroll
                    for (int m = 0; m < NM; m++)
#pragma unroll
                        for (int i = 0; i < 8; i++) acc[m][t] = fmaf(wf[m][i], xf[i], acc[m][t]);
                }
            }
        }
    } else {
        for (int c = lane; c < cols; c += 32) {
            float wv[NM];
#pragma unroll
            for (int m = 0; m < NM; m++) wv[m] = wd_ld(w[m] + c);
#pragma unroll
            for (int t = 0; t < N; t++)
                if (t < n) {
                    float xv = x[t][c];
#pragma unroll
                    for (int m = 0; m < NM; m++) acc[m][t] = fmaf(wv[m], xv, acc[m][t]);
                }
        }
    }
}

#define WD_ROWS_PER_BLOCK 8 /* 256 threads: one warp per row */

template <typename T, int N>
__global__ void __launch_bounds__(256)
gemv_kernel(float *y, const float *x, const T *w, int n, int rows, int cols, float beta,
            bool vec) {
    int row = blockIdx.x * WD_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T *const wm[1] = {w + (size_t)row * cols};
    const float *xp[N];
#pragma unroll
    for (int t = 0; t < N; t++) xp[t] = x + (size_t)(t < n ? t : 0) * cols;
    float acc[1][N];
#pragma unroll
    for (int t = 0; t < N; t++) acc[0][t] = 0.0f;
    wd_rowdot<T, 1, N>(acc, wm, xp, n, cols, vec, lane);
#pragma unroll
    for (int t = 0; t < N; t++) {
        if (t < n) {
            float v = wd_warp_sum(acc[0][t]);
            if (lane == 0) {
                float *o = y + (size_t)t * rows + row;
                *o = beta != 0.0f ? *o + v : v;
            }
        }
    }
}

template <typename T>
static int gemv_launch(float *y, const float *x, const T *w, int n, int rows, int cols, float beta,
                       cudaStream_t s) {
    bool vec = cols % 8 == 0 && wd_aligned16(x) && wd_aligned16(w);
    unsigned blocks = wd_blocks(rows, WD_ROWS_PER_BLOCK);
    if (n <= 1)
        gemv_kernel<T, 1><<<blocks, 256, 0, s>>>(y, x, w, n, rows, cols, beta, vec);
    else if (n <= 2)
        gemv_kernel<T, 2><<<blocks, 256, 0, s>>>(y, x, w, n, rows, cols, beta, vec);
    else if (n <= 4)
        gemv_kernel<T, 4><<<blocks, 256, 0, s>>>(y, x, w, n, rows, cols, beta, vec);
    else
        gemv_kernel<T, 8><<<blocks, 256, 0, s>>>(y, x, w, n, rows, cols, beta, vec);
    return wd_launch_status();
}

extern "C" int wd_cuda_gemv(float *d_y, const float *d_x, const void *d_w, wd_dtype dt, int n,
                            int rows, int cols, float beta, wd_cuda_stream_t s) {
    if (n <= 0 || rows <= 0) return 0;
    if (n > WD_CUDA_GEMV_MAX_N) return (int)cudaErrorInvalidValue;
    if (wd_dtype_quantised(dt)) return wd_cuda_gemv_quant(d_y, d_x, d_w, dt, n, rows, cols, beta, s);
    if (dt == WD_DT_F32) return gemv_launch(d_y, d_x, (const float *)d_w, n, rows, cols, beta, s);
    if (dt == WD_DT_BF16)
        return gemv_launch(d_y, d_x, (const __nv_bfloat16 *)d_w, n, rows, cols, beta, s);
    return (int)cudaErrorInvalidValue;
}

/* ---- the fused expert FFN, small batch ------------------------------------------------
 * gate_up: warp per row r of w1/w3: h[t][r] = silu(w1[r].x_t) * (w3[r].x_t), both rows
 *          streamed together (one pass over x).
 * down:    warp per row r of w2: out[rows[t]][r] (=|+=) scale[t] * (w2[r].h_t). */
template <typename T, int N>
__global__ void __launch_bounds__(256)
expert_gate_up_kernel(float *h, const float *x, const int *rows, const T *w1, const T *w3, int n,
                      int hidden, int ffn, bool vec) {
    int r = blockIdx.x * WD_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= ffn) return;
    const T *const wm[2] = {w1 + (size_t)r * hidden, w3 + (size_t)r * hidden};
    const float *xp[N];
#pragma unroll
    for (int t = 0; t < N; t++) {
        int tt = t < n ? t : 0;
        xp[t] = x + (size_t)(rows ? rows[tt] : tt) * hidden;
    }
    float acc[2][N];
#pragma unroll
    for (int t = 0; t < N; t++) acc[0][t] = acc[1][t] = 0.0f;
    wd_rowdot<T, 2, N>(acc, wm, xp, n, hidden, vec, lane);
#pragma unroll
    for (int t = 0; t < N; t++) {
        if (t < n) {
            float g = wd_warp_sum(acc[0][t]);
            float u = wd_warp_sum(acc[1][t]);
            if (lane == 0) h[(size_t)t * ffn + r] = wd_silu_mul(g, u);
        }
    }
}

template <typename T, int N>
__global__ void __launch_bounds__(256)
expert_down_kernel(float *out, const float *h, const int *rows, const float *scale, const T *w2,
                   int n, int hidden, int ffn, int accumulate, bool vec) {
    int r = blockIdx.x * WD_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= hidden) return;
    const T *const wm[1] = {w2 + (size_t)r * ffn};
    const float *hp[N];
#pragma unroll
    for (int t = 0; t < N; t++) hp[t] = h + (size_t)(t < n ? t : 0) * ffn;
    float acc[1][N];
#pragma unroll
    for (int t = 0; t < N; t++) acc[0][t] = 0.0f;
    wd_rowdot<T, 1, N>(acc, wm, hp, n, ffn, vec, lane);
#pragma unroll
    for (int t = 0; t < N; t++) {
        if (t < n) {
            float v = wd_warp_sum(acc[0][t]);
            if (lane == 0) {
                float a = scale ? scale[t] : 1.0f;
                float *o = out + (size_t)(rows ? rows[t] : t) * hidden + r;
                if (accumulate)
                    atomicAdd(o, a * v);
                else
                    *o = a * v;
            }
        }
    }
}

template <typename T, int N>
static int expert_small_n(const wd_cuda_expert *e, float *out, const float *x, const int *rows,
                          const float *scale, int n, int accumulate, float *h, cudaStream_t s) {
    const T *w1 = (const T *)e->w1, *w3 = (const T *)e->w3, *w2 = (const T *)e->w2;
    bool vec1 = e->hidden % 8 == 0 && wd_aligned16(w1) && wd_aligned16(w3) && wd_aligned16(x);
    bool vec2 = e->ffn % 8 == 0 && wd_aligned16(w2) && wd_aligned16(h);
    expert_gate_up_kernel<T, N><<<wd_blocks(e->ffn, WD_ROWS_PER_BLOCK), 256, 0, s>>>(
        h, x, rows, w1, w3, n, e->hidden, e->ffn, vec1);
    WD_CU(cudaGetLastError());
    expert_down_kernel<T, N><<<wd_blocks(e->hidden, WD_ROWS_PER_BLOCK), 256, 0, s>>>(
        out, h, rows, scale, w2, n, e->hidden, e->ffn, accumulate, vec2);
    return wd_launch_status();
}

template <typename T>
static int expert_small(const wd_cuda_expert *e, float *out, const float *x, const int *rows,
                        const float *scale, int n, int accumulate, float *h, cudaStream_t s) {
    if (n <= 1) return expert_small_n<T, 1>(e, out, x, rows, scale, n, accumulate, h, s);
    if (n <= 2) return expert_small_n<T, 2>(e, out, x, rows, scale, n, accumulate, h, s);
    if (n <= 4) return expert_small_n<T, 4>(e, out, x, rows, scale, n, accumulate, h, s);
    return expert_small_n<T, 8>(e, out, x, rows, scale, n, accumulate, h, s);
}

int wd_cuda_expert_small(const wd_cuda_expert *e, float *d_out, const float *d_x,
                         const int *d_rows, const float *d_scale, int n, int accumulate,
                         float *d_h, cudaStream_t s) {
    if (n <= 0) return 0;
    if (n > WD_CUDA_GEMV_MAX_N) return (int)cudaErrorInvalidValue;
    if (wd_dtype_quantised(e->dt))
        return wd_cuda_expert_small_quant(e, d_out, d_x, d_rows, d_scale, n, accumulate, d_h, s);
    if (e->dt == WD_DT_F32)
        return expert_small<float>(e, d_out, d_x, d_rows, d_scale, n, accumulate, d_h, s);
    if (e->dt == WD_DT_BF16)
        return expert_small<__nv_bfloat16>(e, d_out, d_x, d_rows, d_scale, n, accumulate, d_h, s);
    return (int)cudaErrorInvalidValue;
}

/* ---- helpers of the large-batch (cuBLAS) expert path -------------------------------- */
template <typename D>
__global__ void gather_cast_kernel(D *dst, const float *x, const int *rows, int n, int dim) {
    size_t total = (size_t)n * dim;
    for (size_t id = blockIdx.x * (size_t)blockDim.x + threadIdx.x; id < total;
         id += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(id / dim), i = (int)(id % dim);
        wd_st(dst + id, x[(size_t)(rows ? rows[t] : t) * dim + i]);
    }
}

int wd_cuda_gather_cast(void *d_dst, wd_dtype dt, const float *d_x, const int *d_rows, int n,
                        int dim, cudaStream_t s) {
    unsigned blocks = wd_blocks((size_t)n * dim, 256);
    if (blocks > 65536) blocks = 65536;
    if (dt == WD_DT_F32)
        gather_cast_kernel<<<blocks, 256, 0, s>>>((float *)d_dst, d_x, d_rows, n, dim);
    else if (dt == WD_DT_BF16)
        gather_cast_kernel<<<blocks, 256, 0, s>>>((__nv_bfloat16 *)d_dst, d_x, d_rows, n, dim);
    else
        return (int)cudaErrorInvalidValue;
    return wd_launch_status();
}

template <typename D>
__global__ void silu_mul_cast_kernel(D *dst, const float *g, const float *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        wd_st(dst + i, wd_silu_mul(g[i], u[i]));
}

int wd_cuda_silu_mul_cast(void *d_dst, wd_dtype dt, const float *d_g, const float *d_u,
                          size_t n, cudaStream_t s) {
    unsigned blocks = wd_blocks(n, 256);
    if (blocks > 65536) blocks = 65536;
    if (dt == WD_DT_F32)
        silu_mul_cast_kernel<<<blocks, 256, 0, s>>>((float *)d_dst, d_g, d_u, n);
    else if (dt == WD_DT_BF16)
        silu_mul_cast_kernel<<<blocks, 256, 0, s>>>((__nv_bfloat16 *)d_dst, d_g, d_u, n);
    else
        return (int)cudaErrorInvalidValue;
    return wd_launch_status();
}

__global__ void scatter_kernel(float *out, const float *y, const int *rows, const float *scale,
                               int n, int dim, int accumulate) {
    size_t total = (size_t)n * dim;
    for (size_t id = blockIdx.x * (size_t)blockDim.x + threadIdx.x; id < total;
         id += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(id / dim), i = (int)(id % dim);
        float v = (scale ? scale[t] : 1.0f) * y[id];
        float *o = out + (size_t)(rows ? rows[t] : t) * dim + i;
        if (accumulate)
            atomicAdd(o, v);
        else
            *o = v;
    }
}

int wd_cuda_scatter(float *d_out, const float *d_y, const int *d_rows, const float *d_scale,
                    int n, int dim, int accumulate, cudaStream_t s) {
    unsigned blocks = wd_blocks((size_t)n * dim, 256);
    if (blocks > 65536) blocks = 65536;
    scatter_kernel<<<blocks, 256, 0, s>>>(d_out, d_y, d_rows, d_scale, n, dim, accumulate);
    return wd_launch_status();
}

/* ---- combine, add ------------------------------------------------------------------- */
#define WD_COMBINE_MAX 64
struct wd_src_list {
    const float *p[WD_COMBINE_MAX];
};

__global__ void combine_kernel(float *out, wd_src_list src, int n_src, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        float acc = out[i];
        for (int j = 0; j < n_src; j++) acc += src.p[j][i];
        out[i] = acc;
    }
}

extern "C" int wd_cuda_combine(float *d_out, const float *const *src, int n_src, int n, int dim,
                               wd_cuda_stream_t s) {
    if (n_src <= 0 || n <= 0) return 0;
    if (n_src > WD_COMBINE_MAX) return (int)cudaErrorInvalidValue;
    wd_src_list l;
    memset(&l, 0, sizeof l);
    for (int j = 0; j < n_src; j++) l.p[j] = src[j];
    size_t total = (size_t)n * dim;
    unsigned blocks = wd_blocks(total, 256);
    if (blocks > 65536) blocks = 65536;
    combine_kernel<<<blocks, 256, 0, s>>>(d_out, l, n_src, total);
    return wd_launch_status();
}

__global__ void add_kernel(float *x, const float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

extern "C" int wd_cuda_add(float *d_x, const float *d_y, size_t n, wd_cuda_stream_t s) {
    if (n == 0) return 0;
    unsigned blocks = wd_blocks(n, 256);
    if (blocks > 65536) blocks = 65536;
    add_kernel<<<blocks, 256, 0, s>>>(d_x, d_y, n);
    return wd_launch_status();
}

/* ---- delay: spin on the global timer ------------------------------------------------ */
__global__ void delay_kernel(unsigned long long ns, const uint64_t *d_ns, unsigned long long *t) {
    if (d_ns) ns = *d_ns;
    unsigned long long t0 = wd_globaltimer(), t1 = t0;
    while (t1 - t0 < ns) {
        __nanosleep(200);
        t1 = wd_globaltimer();
    }
    if (t) {
        t[0] = t0;
        t[1] = t1;
    }
}

extern "C" int wd_cuda_delay(uint64_t ns, wd_cuda_stream_t s) {
    delay_kernel<<<1, 1, 0, s>>>((unsigned long long)ns, NULL, NULL);
    return wd_launch_status();
}

int wd_cuda_delay_at(const uint64_t *d_ns, cudaStream_t s) {
    delay_kernel<<<1, 1, 0, s>>>(0ull, d_ns, NULL);
    return wd_launch_status();
}

extern "C" int wd_cuda_delay_timed(uint64_t ns, unsigned long long *d_t, wd_cuda_stream_t s) {
    delay_kernel<<<1, 1, 0, s>>>((unsigned long long)ns, NULL, d_t);
    return wd_launch_status();
}
