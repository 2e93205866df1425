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
 *    context with its own SM count, events to time expert calls, NVTX ranges;
 *  - a GPU model runner: uploads a host wd_model (chunked pinned staging, no
 *    full host copy) and runs decode/prefill with the MoE split of host.h, on
 *    one GPU or spread over several (NCCL; one process, or one per node with
 *    wd_cuda_model_serve on ranks > 0), decode steps as CUDA graphs.
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

#include "host/host.h"
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

/* Spin on the global timer for ns nanoseconds (one thread). */
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
                            about that many SMs (CUDA 12.4+ driver); else a plain stream */
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

/* ---- the GPU model runner ----------------------------------------------------- */
typedef struct wd_cuda_model wd_cuda_model;

typedef struct {
    wd_dtype dtype;       /* WD_DT_BF16 (default use) or WD_DT_F32 (exact mode) */
    int max_ctx;          /* KV cache length (0: the model's max_pos) */
    int max_batch;        /* largest n of one forward call (0: 512) */
    int n_devices;        /* emulated devices (0: one per expert); expert e runs on
                             device e % n_devices, device d on GPU d % (all GPUs) */
    const int *sm_count;  /* per device, may be NULL (see wd_cuda_devset_spec) */
    int gpu;              /* first CUDA device ordinal of this process */
    int n_gpus;           /* GPUs of this process: gpu .. gpu+n_gpus-1 (0: 1); the BS
                             (embedding, attention, routers, LM head, KV cache) lives on
                             the first GPU of rank 0; several GPUs need NCCL */
    int n_ranks, rank;    /* processes of a multi-node run (0/1: one) and this one;
                             each has n_gpus GPUs; rank 0 drives, the others serve */
    const void *nccl_id;  /* n_ranks > 1: rank 0's ncclUniqueId (wd_cuda_nccl_unique_id) */
    int realtime;         /* 1: inject dl/ul delays on the device streams */
    int use_graphs;       /* 1: decode steps (n == 1) as CUDA graphs: one per layer for
                             the BS part, one per (layer, chosen expert set) for the
                             experts (at most 64 sets per layer; more run launch by
                             launch). One GPU, plain streams and <= 64 experts only;
                             otherwise the log says why they are off */
} wd_cuda_model_spec;

void wd_cuda_model_spec_default(wd_cuda_model_spec *spec);

/* Per expert call: downlink and uplink delays (real-time mode) for device d
 * in layer l; may be NULL (no delays). */
typedef struct {
    void *ctx;
    void (*link_delays)(void *ctx, int layer, int device, int n_tokens, uint64_t *dl_ns,
                        uint64_t *ul_ns);
    /* Called after each layer's experts with the measured expert seconds per
       device (< 0: device unused); may be NULL. Non-zero aborts the forward. */
    int (*expert_times)(void *ctx, int layer, const double *seconds, int n_devices);
} wd_cuda_timing_hooks;

/* Uploads the weights of m (which stays owned by the caller and may be freed
 * after this returns). F32/F16/BF16 tensors are streamed through a pinned
 * staging buffer in chunks and converted on the GPU. */
int wd_cuda_model_create(wd_cuda_model **out, const wd_model *m, const wd_cuda_model_spec *spec,
                         char *log, size_t loglen, char *err, size_t errlen);
/* A model of configuration cfg with random weights generated on the GPU
 * (benchmarks: a Mixtral-8x7B-shaped model without any download). */
int wd_cuda_model_create_random(wd_cuda_model **out, const wd_config *cfg, uint64_t seed,
                                const wd_cuda_model_spec *spec, char *log, size_t loglen,
                                char *err, size_t errlen);
/* Where the host time of forward calls goes (seconds, summed since the last
 * reset), to see what separates decode from the bandwidth roofline:
 *   launch_bs      enqueueing each layer's BS part (kernels or one graph)
 *   wait_router    waiting for the router output: the GPU running the previous
 *                  layer's experts and this layer's BS part, plus the copy
 *   select         the selection hook (policy, emulator) and grouping by expert
 *   launch_experts enqueueing the expert part (kernels, NCCL, or one graph)
 *   timing         the timing hook (measured compute) and its waits
 *   tail           embedding/LM head enqueue and the final wait */
typedef struct {
    long forwards, layers;
    double launch_bs, wait_router, select, launch_experts, timing, tail;
} wd_cuda_profile;
void wd_cuda_model_profile(const wd_cuda_model *cm, wd_cuda_profile *out);
void wd_cuda_model_profile_reset(wd_cuda_model *cm);

/* Rank 0 of a multi-process run also tells the other ranks to stop. */
void wd_cuda_model_free(wd_cuda_model *cm);
size_t wd_cuda_model_weight_bytes(const wd_cuda_model *cm); /* on the GPU */
void wd_cuda_model_reset(wd_cuda_model *cm);                /* pos = 0 */
/* Rewind to an earlier position (0 <= pos <= current); -1 otherwise. */
int wd_cuda_model_set_pos(wd_cuda_model *cm, int pos);
int wd_cuda_model_pos(const wd_cuda_model *cm);
/* The emulated devices on GPU i (0 .. n_gpus-1) of this process. */
wd_cuda_devset *wd_cuda_model_devices(wd_cuda_model *cm, int i);
int wd_cuda_model_graphs(const wd_cuda_model *cm); /* 1 when decode uses CUDA graphs */
/* Turn CUDA-graph decode on or off (graphs stay cached); -1 where this model
 * cannot use them (several GPUs, green contexts, > 64 experts). */
int wd_cuda_model_set_graphs(wd_cuda_model *cm, int on);

/* Run n tokens at pos..pos+n-1, as wd_forward: the BS part on the BS stream,
 * router probabilities copied to the host, hooks->select (may be NULL: the
 * model's top-k) picks experts per token, hooks->run_experts is ignored (the
 * experts run on the device streams), combine, next layer. logits: NULL, or
 * host [vocab] (last token) or [n][vocab] (all_logits). */
int wd_cuda_model_forward(wd_cuda_model *cm, const int *tokens, int n, float *logits,
                          int all_logits, const wd_moe_hooks *hooks,
                          const wd_cuda_timing_hooks *timing, char *err, size_t errlen);

/* Ranks > 0 of a multi-process run: serve rank 0's expert calls until it
 * frees its model (returns 0) or something fails (-1, err). layers_served:
 * may be NULL. */
int wd_cuda_model_serve(wd_cuda_model *cm, int *layers_served, char *err, size_t errlen);

/* ---- several GPUs ----------------------------------------------------------------- */
int wd_cuda_have_nccl(void); /* 1 when built with NCCL */
/* A fresh ncclUniqueId (rank 0 of a multi-process run) written into id[len];
 * returns its size (128), -1 without NCCL or on failure. */
int wd_cuda_nccl_unique_id(void *id, size_t len);

#ifdef __cplusplus
}
#endif
#endif
