/* kernels/cuda internal helpers (not a public header): dtype loads, warp and
 * block reductions, the global timer. */
#ifndef WD_CUDA_COMMON_CUH
#define WD_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/cuda/cuda_backend.h"

#define WD_CU(x)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) return (int)e_;                                                \
    } while (0)

static inline int wd_launch_status(void) { return (int)cudaGetLastError(); }

static inline unsigned wd_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : (b ? b : 1));
}

__device__ __forceinline__ float wd_ld(const float *p) { return *p; }
__device__ __forceinline__ float wd_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float wd_ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ void wd_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void wd_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* 8 consecutive elements, raw (one or two 16-byte loads) and converted. */
template <typename T> struct wd_vec8;
template <> struct wd_vec8<__nv_bfloat16> {
    uint4 r;
    __device__ __forceinline__ void load(const __nv_bfloat16 *p) {
        r = __ldg(reinterpret_cast<const uint4 *>(p));
    }
    __device__ __forceinline__ void to_f32(float f[8]) const {
        const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&r);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 v = __bfloat1622float2(h[i]);
            f[2 * i] = v.x;
            f[2 * i + 1] = v.y;
        }
    }
};
template <> struct wd_vec8<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float *p) {
        a = __ldg(reinterpret_cast<const float4 *>(p));
        b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
    }
    __device__ __forceinline__ void to_f32(float f[8]) const {
        f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
        f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
    }
};

__device__ __forceinline__ void wd_load8_f32(const float *p, float f[8]) {
    float4 a = __ldg(reinterpret_cast<const float4 *>(p));
    float4 b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
    f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}

__device__ __forceinline__ float wd_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double wd_warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float wd_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide reductions (blockDim.x a multiple of 32, <= 1024); every thread
 * gets the result. sh: at least 32 elements of shared memory. */
__device__ __forceinline__ float wd_block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = wd_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return wd_warp_max(v);
}
__device__ __forceinline__ float wd_block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = wd_warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return wd_warp_sum(v);
}
__device__ __forceinline__ double wd_block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = wd_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return wd_warp_sum_d(v);
}

__device__ __forceinline__ unsigned long long wd_globaltimer(void) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ float wd_silu_mul(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

static inline int wd_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Append one printf-style line to a caller's log buffer (log may be NULL). */
void wd_cuda_log(char *log, size_t len, const char *fmt, ...);

/* Internal launchers shared between files. */
int wd_cuda_expert_small(const wd_cuda_expert *e, float *d_out, const float *d_x,
                         const int *d_rows, const float *d_scale, int n, int accumulate,
                         float *d_h, cudaStream_t s);
int wd_cuda_silu_mul_cast(void *d_dst, wd_dtype dt, const float *d_g, const float *d_u,
                          size_t n, cudaStream_t s);
int wd_cuda_gather_cast(void *d_dst, wd_dtype dt, const float *d_x, const int *d_rows, int n,
                        int dim, cudaStream_t s);
int wd_cuda_scatter(float *d_out, const float *d_y, const int *d_rows, const float *d_scale,
                    int n, int dim, int accumulate, cudaStream_t s);
/* Quantised weights (quant.cu): the GEMV, the tiled GEMM and the small-batch fused
 * expert on the blocks; rows must be whole blocks (else cudaErrorInvalidValue). */
int wd_cuda_gemv_quant(float *d_y, const float *d_x, const void *d_w, wd_dtype dt, int n, int rows,
                       int cols, float beta, cudaStream_t s);
int wd_cuda_gemm_quant(float *d_y, const float *d_x, const void *d_w, wd_dtype dt, int n, int rows,
                       int cols, cudaStream_t s);
/* The dtype of an expert's w2 (dt2 where it applies, else dt). */
wd_dtype wd_cuda_expert_dt2(const wd_cuda_expert *e);
int wd_cuda_expert_small_quant(const wd_cuda_expert *e, float *d_out, const float *d_x,
                               const int *d_rows, const float *d_scale, int n, int accumulate,
                               float *d_h, cudaStream_t s);


/* Variants for CUDA graphs: positions pos0 + *d_pos (d_pos may be NULL) read
 * on the device; attention covers ctx cache rows (ctx >= every query's
 * length; chunks past a query's causal window are skipped). */
int wd_cuda_rope_kv_at(float *d_q, const float *d_k, const float *d_v, void *d_kcache,
                       void *d_vcache, wd_dtype cache_dt, int n, int pos0, const int *d_pos,
                       int n_heads, int n_kv_heads, int head_dim, float theta, cudaStream_t s);
int wd_cuda_attention_at(float *d_out, const float *d_q, const void *d_kcache,
                         const void *d_vcache, wd_dtype cache_dt, int n, int pos0,
                         const int *d_pos, int ctx, int n_heads, int n_kv_heads, int head_dim,
                         void *d_scratch, cudaStream_t s);
/* The delay kernel reading its nanoseconds from device memory. */
int wd_cuda_delay_at(const uint64_t *d_ns, cudaStream_t s);

/* A link delay of an expert call: ns, or (d_ns != NULL) read on the device. */
typedef struct {
    uint64_t ns;
    const uint64_t *d_ns;
} wd_cuda_link_delay;
/* An event of device d (created in its stream's context, no timing) for
   other streams to wait on its work. */
cudaEvent_t wd_cuda_devset_done_event(const wd_cuda_devset *ds, int d);

/* timing: WD_TIME_START records the device's start event before the expert,
   WD_TIME_END its end event after it; a device running several experts in a
   layer passes START with the first and END with the last, so
   wd_cuda_devset_last_expert_seconds covers all of them. */
#define WD_TIME_START 1
#define WD_TIME_END 2
int wd_cuda_devset_expert_call_at(wd_cuda_devset *ds, int d, int layer, const wd_cuda_expert *e,
                                  float *d_out, const float *d_x, const int *d_rows,
                                  const float *d_scale, int n, int accumulate,
                                  wd_cuda_link_delay down, wd_cuda_link_delay up, int timing);

#endif
