/* kernels/cuda: the CUDA backend (built when nvcc is found).
 *
 * A C API over:
 *  - kernels (async on a stream): RMSNorm, RoPE + KV-cache append, causal GQA
 *    attention split over the cache (flash-decoding; also used for prefill),
 *    fused router softmax + top-k, small-batch GEMV, the fused expert FFN
 *    (gate/up + SiLU*mul in one kernel; down projection scaled by the routing
 *    weight, written or added into the output rows), combine, embedding,
 *    dtype conversion, and a delay kernel spinning on the GPU global timer;
 *  - cuBLAS (one handle per stream) for the BS projections and prefill GEMMs;
 *  - emulated devices: one stream each (with a priority), optionally a green
 *    context with its own SM count, events to time expert calls, NVTX ranges.
 *
 * The model runner that drives these for a whole model (the MoE split, CUDA
 * graphs, NCCL) is host logic: host/cuda_runner.h. This header includes
 * nothing of host/.
 *
 * Weights on the GPU are BF16 (fp32 accumulate) or F32 (the exact mode);
 * activations are fp32. Pointers named d_* or documented "device" are device
 * memory. Functions return 0 on success; kernel launchers return a cudaError_t
 * value (wd_cuda_error_string names it); functions with err/errlen write one
 * line "FILE: what is wrong". Nothing here exits or keeps global state.
 *
 * Without a GPU or driver every entry point fails cleanly (wd_cuda_device_count
 * returns 0); the library never links libcuda directly. */
#ifndef WD_CUDA_BACKEND_H
#define WD_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Same layout as cudaStream_t (struct CUstream_st *), without CUDA headers. */
typedef struct CUstream_st *wd_cuda_stream_t;

/* ---- runtime -------------------------------------------------------------- */
/* Number of usable CUDA devices; 0 when there is no GPU or no driver. */
int wd_cuda_device_count(void);
const char *wd_cuda_error_string(int code);
/* error codes from WD_CUDA_CUBLAS_ERROR up are cuBLAS failures (call and
   status, named by wd_cuda_error_string) */
#define WD_CUDA_CUBLAS_ERROR 100000
/* One line describing device `dev` (name, SMs, memory, compute capability). */
int wd_cuda_device_info(int dev, char *buf, size_t len);
/* Synchronises the current device; returns the first pending error. */
int wd_cuda_sync(void);
void *wd_cuda_malloc(size_t bytes); /* NULL on failure */
void wd_cuda_free(void *p);
int wd_cuda_upload(void *d_dst, const void *src, size_t bytes);
int wd_cuda_download(void *dst, const void *d_src, size_t bytes);
/* Fill device memory with 0xFF bytes (fp32 NaN): tests poison outputs. */
int wd_cuda_poison(void *d_p, size_t bytes);

/* ---- kernels --------------------------------------------------------------
 * Weight/cache dtypes: WD_DT_BF16 or WD_DT_F32; weights (GEMV, GEMM, fused
 * expert, embedding) may also be llama.cpp blocks (Q8_0, Q4_0, Q4_1, Q4_K,
 * Q5_K, Q6_K: kernels/cuda/quant.cu), used in place, never expanded. All take
 * a stream (NULL: the legacy default stream). */

/* Largest token count the GEMV / fused-expert kernels take in one launch. */
#define WD_CUDA_GEMV_MAX_N 8

/* dst[i] = convert(src[i]) for n elements; src F32/F16/BF16, dst F32/BF16. */
int wd_cuda_convert(void *d_dst, wd_dtype dst_dt, const void *d_src, wd_dtype src_dt,
                    size_t n, wd_cuda_stream_t s);

/* dst[t][:] = W[idx ? idx[t] : t][:] dequantised (exactly as the CPU) to dst_dt
 * (F32 or BF16); W of quantised dtype dt with rows of cols weights. */
int wd_cuda_dequant_rows(void *d_dst, wd_dtype dst_dt, const void *d_w, wd_dtype dt,
                         const int *d_idx, int n, int cols, wd_cuda_stream_t s);

/* x[t][:] = table[tokens[t]][:] as fp32; tokens: device [n]. */
int wd_cuda_embed(float *d_x, const void *d_table, wd_dtype dt, const int *d_tokens, int n,
                  int dim, wd_cuda_stream_t s);

/* y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, n rows of dim (y may alias x). */
int wd_cuda_rmsnorm(float *d_y, const float *d_x, const float *d_w, int n, int dim, float eps,
                    wd_cuda_stream_t s);

/* Rotate-half RoPE on q [n][n_heads*hd] (in place) and k [n][n_kv*hd] for
 * positions pos0..pos0+n-1; rotated k and (unrotated) v [n][n_kv*hd] are
 * written into the caches [max_ctx][n_kv*hd] (dtype cache_dt) at rows pos0+t. */
int wd_cuda_rope_kv(float *d_q, const float *d_k, const float *d_v, void *d_kcache,
                    void *d_vcache, wd_dtype cache_dt, int n, int pos0, int n_heads,
                    int n_kv_heads, int head_dim, float theta, wd_cuda_stream_t s);

/* Causal GQA attention (same semantics as wd_attention) for n queries at
 * pos0..pos0+n-1 over the caches, split into chunks of the cache processed by
 * separate blocks and merged (flash-decoding). scratch: device, at least
 * wd_cuda_attention_scratch_bytes(n, n_heads, pos0+n, head_dim) bytes. */
size_t wd_cuda_attention_scratch_bytes(int n, int n_heads, int ctx, int head_dim);
int wd_cuda_attention(float *d_out, const float *d_q, const void *d_kcache,
                      const void *d_vcache, wd_dtype cache_dt, int n, int pos0, int n_heads,
                      int n_kv_heads, int head_dim, void *d_scratch, wd_cuda_stream_t s);

/* Router: probs[t] = softmax(logits[t]) over E experts (fp32), idx[t][0..k)
 * the top-k (largest first, ties to the lower index), weights[t][0..k) the
 * chosen probabilities renormalised to sum to 1. E <= 1024. */
int wd_cuda_router(float *d_probs, int *d_idx, float *d_weights, const float *d_logits, int n,
                   int n_experts, int k, wd_cuda_stream_t s);

/* y[t][r] = sum_c W[r][c] x[t][c] for n <= WD_CUDA_GEMV_MAX_N tokens (warp
 * per row, 16-byte weight loads). beta: 0 overwrite y, 1 add into y. */
int wd_cuda_gemv(float *d_y, const float *d_x, const void *d_w, wd_dtype dt, int n, int rows,
                 int cols, float beta, wd_cuda_stream_t s);

/* out[t][:] += sum over j < n_src of src[j][t][:], j in order (deterministic).
 * src: a host array of n_src device pointers to [n][dim]; n_src <= 64. */
int wd_cuda_combine(float *d_out, const float *const *src, int n_src, int n, int dim,
                    wd_cuda_stream_t s);
/* x[i] += y[i] */
int wd_cuda_add(float *d_x, const float *d_y, size_t n, wd_cuda_stream_t s);

/* Spin on the global timer for ns nanoseconds (one thread), at most
 * WD_CUDA_DELAY_MAX_NS: a wrong value cannot burn minutes of GPU time. */
#define WD_CUDA_DELAY_MAX_NS 1000000000ull
int wd_cuda_delay(uint64_t ns, wd_cuda_stream_t s);
/* Same, writing the kernel's own start/end global timer into d_t[0..1]. */
int wd_cuda_delay_timed(uint64_t ns, unsigned long long *d_t, wd_cuda_stream_t s);

/* ---- cuBLAS ---------------------------------------------------------------- */
typedef struct wd_cuda_blas wd_cuda_blas;
/* One handle bound to stream s; max_elems: largest activation matrix
 * (n*cols) converted to BF16 for a GEMM. */
wd_cuda_blas *wd_cuda_blas_create(wd_cuda_stream_t s, size_t max_elems, char *err,
                                  size_t errlen);
void wd_cuda_blas_free(wd_cuda_blas *b);
wd_cuda_stream_t wd_cuda_blas_stream(const wd_cuda_blas *b);

/* y[n][rows] = x[n][cols] W^T (W row-major [rows x cols], dtype dt).
 * n <= WD_CUDA_GEMV_MAX_N uses the GEMV kernel; larger n uses cuBLAS
 * (BF16: x converted to BF16, fp32 accumulate and output; F32: SGEMM), or
 * for quantised W a tiled fp32 kernel dequantising tiles in shared memory. */
int wd_cuda_matmul(wd_cuda_blas *b, float *d_y, const float *d_x, const void *d_w,
                   wd_dtype dt, int n, int rows, int cols);
/* Always cuBLAS (benchmarks, tests). */
int wd_cuda_gemm(wd_cuda_blas *b, float *d_y, const float *d_x, const void *d_w, wd_dtype dt,
                 int n, int rows, int cols);
/* The same GEMM with x already in the weights' dtype (no conversion). */
int wd_cuda_gemm_typed_input(wd_cuda_blas *b, float *d_y, const void *d_x, const void *d_w,
                             wd_dtype dt, int n, int rows, int cols);

/* ---- the fused expert FFN ---------------------------------------------------
 * For t < n, with r = rows ? rows[t] : t and a = scale ? scale[t] : 1:
 *   f = w2( silu(w1 x[r]) * (w3 x[r]) )
 *   accumulate == 0: out[r] = a * f;  accumulate != 0: out[r] += a * f (atomic).
 * w1, w3: [ffn x hidden]; w2: [hidden x ffn]; of dtype dt (w2: see dt2).
 * n <= WD_CUDA_GEMV_MAX_N: two fused kernels (gate+up+SiLU*mul; down+scale+
 * write). Larger n: cuBLAS GEMMs (b must be non-NULL) with the same epilogue.
 * scratch: device, wd_cuda_expert_scratch_bytes(n, hidden, ffn) bytes. */
typedef struct {
    const void *w1, *w3, *w2;
    wd_dtype dt;
    int hidden, ffn;
    /* w2's dtype where dt and it are both block types (K-quant mixes: Q6_K beside
     * Q4_K); otherwise (e.g. 0 from a zeroed or shorter initialiser) w2 is dt */
    wd_dtype dt2;
} wd_cuda_expert;

size_t wd_cuda_expert_scratch_bytes(int n, int hidden, int ffn);
int wd_cuda_expert_ffn(wd_cuda_blas *b, const wd_cuda_expert *e, float *d_out,
                       const float *d_x, const int *d_rows, const float *d_scale, int n,
                       int accumulate, void *d_scratch, wd_cuda_stream_t s);

/* ---- emulated devices ------------------------------------------------------- */
typedef struct wd_cuda_devset wd_cuda_devset;

typedef struct {
    int n_devices;       /* emulated devices */
    const int *sm_count; /* per device, or NULL; > 0 asks for a green context with
                            that many SMs, rounded up to the GPU's SM group size (CUDA
                            12.4+ driver); else a plain stream. The partitions are split
                            one after another from the GPU's SMs, so they never overlap;
                            requests beyond the GPU's SMs make creation fail */
    const int *priority; /* per device, or NULL (0 = default); lower = higher priority */
    const int *ids;      /* per device, or NULL: its number in logs and NVTX names */
    int gpu;             /* CUDA device ordinal */
    size_t max_tokens;   /* largest n one expert call gets (sizes per-device scratch) */
    int hidden, ffn;     /* expert shape (scratch) */
} wd_cuda_devset_spec;

/* Creates the streams (green contexts where asked and available; what was
 * done is written as lines into log, may be NULL), a cuBLAS handle and
 * scratch per device, and timing events. */
wd_cuda_devset *wd_cuda_devset_create(const wd_cuda_devset_spec *spec, char *log, size_t loglen,
                                      char *err, size_t errlen);
void wd_cuda_devset_free(wd_cuda_devset *ds);
int wd_cuda_devset_size(const wd_cuda_devset *ds);
wd_cuda_stream_t wd_cuda_devset_stream(const wd_cuda_devset *ds, int d);
wd_cuda_blas *wd_cuda_devset_blas(const wd_cuda_devset *ds, int d);
void *wd_cuda_devset_scratch(const wd_cuda_devset *ds, int d);
int wd_cuda_devset_green(const wd_cuda_devset *ds, int d); /* 1 when a green context */
int wd_cuda_devset_sm_count(const wd_cuda_devset *ds, int d); /* its SMs (0: plain stream) */
/* The SMs (%smid) that a kernel of `blocks` blocks on device d's stream ran
 * on, as a bitmap over 0..255 (uint32_t[8]); 0 on success. Tests use it to
 * check that green contexts do not overlap. */
int wd_cuda_devset_sms_used(wd_cuda_devset *ds, int d, int blocks, uint32_t *bitmap);

/* One expert call on device d, as the emulated system sees it:
 *   [delay dl_ns] [event] expert [event] [delay ul_ns]
 * (delays only when > 0: real-time mode), inside NVTX ranges
 * "L{layer}/dev{d}/downlink|expert|uplink". The caller makes d's stream wait
 * for its inputs first (wd_cuda_stream_wait). */
int wd_cuda_devset_expert_call(wd_cuda_devset *ds, int d, int layer, const wd_cuda_expert *e,
                               float *d_out, const float *d_x, const int *d_rows,
                               const float *d_scale, int n, int accumulate, uint64_t dl_ns,
                               uint64_t ul_ns);
/* Seconds between the events of device d's last expert call (synchronises on
 * the end event); < 0 when none was recorded. */
double wd_cuda_devset_last_expert_seconds(wd_cuda_devset *ds, int d);

/* Make stream `waiter` wait for all work enqueued so far on `signaler`. */
int wd_cuda_stream_wait(wd_cuda_stream_t waiter, wd_cuda_stream_t signaler);
int wd_cuda_stream_create(wd_cuda_stream_t *s, int priority);
void wd_cuda_stream_destroy(wd_cuda_stream_t s);
int wd_cuda_stream_sync(wd_cuda_stream_t s);

/* NVTX (no-ops unless a tool such as Nsight Systems is attached). */
void wd_cuda_nvtx_push(const char *name);
void wd_cuda_nvtx_pop(void);

/* ---- for the model runner (host/cuda_runner.cu) ------------------------------- */
/* Same layout as cudaEvent_t (struct CUevent_st *), without CUDA headers. */
typedef struct CUevent_st *wd_cuda_event_t;
/* Append one printf-style line to a caller's log buffer (log may be NULL). */
void wd_cuda_log(char *log, size_t len, const char *fmt, ...);
/* Variants for CUDA graphs: positions pos0 + *d_pos (d_pos may be NULL) read
 * on the device; attention covers ctx cache rows (ctx >= every query's
 * length; chunks past a query's causal window are skipped). */
int wd_cuda_rope_kv_at(float *d_q, const float *d_k, const float *d_v, void *d_kcache,
                       void *d_vcache, wd_dtype cache_dt, int n, int pos0, const int *d_pos,
                       int n_heads, int n_kv_heads, int head_dim, float theta,
                       wd_cuda_stream_t s);
int wd_cuda_attention_at(float *d_out, const float *d_q, const void *d_kcache,
                         const void *d_vcache, wd_dtype cache_dt, int n, int pos0,
                         const int *d_pos, int ctx, int n_heads, int n_kv_heads, int head_dim,
                         void *d_scratch, wd_cuda_stream_t s);
/* The delay kernel reading its nanoseconds from device memory. */
int wd_cuda_delay_at(const uint64_t *d_ns, wd_cuda_stream_t s);
/* Random weights on the GPU (benchmarks): F32 or BF16, uniform in offset +- scale,
 * from a hash of (seed, index). */
int wd_cuda_fill_random(void *d, wd_dtype dt, size_t n, uint64_t seed, float scale, float offset,
                        wd_cuda_stream_t s);

/* A link delay of an expert call: ns, or (d_ns != NULL) read on the device. */
typedef struct {
    uint64_t ns;
    const uint64_t *d_ns;
} wd_cuda_link_delay;
/* An event of device d (created in its stream's context, no timing) for
   other streams to wait on its work. */
wd_cuda_event_t wd_cuda_devset_done_event(const wd_cuda_devset *ds, int d);

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

#ifdef __cplusplus
}
#endif
#endif
