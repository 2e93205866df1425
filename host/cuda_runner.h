/* host/cuda_runner.h: the GPU model runner (host/cuda_runner.cu), the host's
 * CUDA backend: a host wd_model uploaded to one or several GPUs, forward
 * passes with the MoE split of host.h (the BS part on the BS stream, the
 * router output to the host, the selection hook, each emulated device's
 * experts on its own stream), CUDA graphs for decode, several GPUs and
 * several processes over NCCL. It is host logic built on the kernels of
 * kernels/cuda/cuda_backend.h; only host/ includes this header. Built when
 * the CUDA backend is (WD_HAVE_CUDA). */
#ifndef WD_CUDA_RUNNER_H
#define WD_CUDA_RUNNER_H

#include "host/host.h"
#include "kernels/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

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
 *   tail           embedding/LM head enqueue and the final wait
 *   capture        CUDA-graph captures and instantiations (first use of a
 *                  layer's BS graph or of a chosen expert set), not counted
 *                  in launch_bs/launch_experts; captures is their number
 *   delays_clamped real-time link delays cut to WD_CUDA_DELAY_MAX_NS */
typedef struct {
    long forwards, layers, captures, delays_clamped;
    double launch_bs, wait_router, select, launch_experts, timing, tail, capture;
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
