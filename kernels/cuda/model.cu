/* The GPU model runner: a host wd_model uploaded to one or several GPUs
 * (weights BF16 or F32, or GGUF blocks kept as they are; norms F32, KV cache in
 * the spec's dtype), decode and
 * prefill with the MoE split of host.h:
 *
 *  - the BS part of each layer (attention, router) runs on the BS stream of
 *    the BS GPU (the first GPU of rank 0);
 *  - the router probabilities come back to the host, where the selection hook
 *    (the emulator's policy) picks experts per token;
 *  - emulated device d runs on GPU d % G (G GPUs in all) on its own stream,
 *    timed with events, with link delays injected in real-time mode; expert e
 *    lives on device e % n_devices;
 *  - with several GPUs the expert inputs (normalised hidden rows and the
 *    selection) go from the BS GPU to every GPU in use, and each device's
 *    output comes back, with grouped ncclSend/ncclRecv (one communicator over
 *    all GPUs: ncclCommInitAll in one process, ncclCommInitRank per GPU when
 *    the GPUs belong to several processes, e.g. one per node);
 *  - the BS adds the device outputs into the residual in device order, so the
 *    result does not depend on the number of GPUs or on timing;
 *  - decode steps (one token) may run as CUDA graphs: one per layer for the
 *    BS part (positions read from device memory) and one per (layer, chosen
 *    expert set) for the experts, captured on first use.
 *
 * A multi-process run: rank 0 owns the BS and drives every step; the other
 * ranks hold experts only and follow rank 0's control message, sent with the
 * inputs of each layer (wd_cuda_model_serve). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef WD_HAVE_NCCL
#include <nccl.h>
#endif

#include "kernels/cuda/common.cuh"

#define WD_STAGE_BYTES (64u << 20)
#define WD_GRAPH_SETS 64 /* expert-part graphs cached per layer */

/* control message of a multi-process run, int64 words: op, layer, n, then
   tokens per expert [E], downlink ns [nd], uplink ns [nd] */
enum { CTL_QUIT = 0, CTL_RUN = 1, CTL_HEAD = 3 };

typedef struct {
    float *attn_norm, *ffn_norm;
    void *wq, *wk, *wv, *wo, *gate;
    wd_dtype wq_dt, wk_dt, wv_dt, wo_dt, gate_dt; /* the spec's dtype, or a GGUF block type */
    wd_cuda_expert *experts; /* [E]; weights NULL where the expert is on another process */
    void *kc, *vc;
} gpu_layer;

/* One GPU of this process. */
typedef struct {
    int ordinal;           /* CUDA device ordinal */
    int global;            /* index among all GPUs of the run; 0 holds the BS */
    cudaStream_t port;     /* transfers and uploads; on the BS GPU the BS stream */
    cudaEvent_t ev_ready;  /* the expert inputs on this GPU are ready */
    float *xb;             /* expert inputs [max_batch][H] (BS GPU: the BS buffer) */
    int *sbuf;             /* selection (BS GPU: the BS buffer) */
    void *stage_dev;       /* dtype conversion while uploading */
    wd_cuda_devset *devs;  /* the emulated devices on this GPU */
    int n_local;
    int *ids;              /* their global device numbers */
    int used;              /* some device here has tokens in this layer */
    int64_t *d_ctl, *h_ctl; /* control message (GPUs of ranks > 0) */
    double *d_tim, *h_tim;  /* expert seconds per local device (GPUs of ranks > 0) */
#ifdef WD_HAVE_NCCL
    ncclComm_t comm;
#endif
} gpu_part;

typedef struct {
    uint64_t key; /* chosen experts (bit e) */
    int delays;   /* 1: with link-delay nodes (real-time mode) */
    cudaGraphExec_t exec;
} expert_graph;

struct wd_cuda_model {
    wd_config cfg;
    wd_cuda_model_spec spec;
    wd_dtype dt;
    int pos;
    size_t weight_bytes;
    int G, L, rank; /* GPUs in the run, GPUs of this process, this process */
    int kmax;       /* most emulated devices on one GPU */
    gpu_part *parts; /* [L] */
    void *embed, *lm_head;
    wd_dtype embed_dt, lm_dt; /* the spec's dtype, or a GGUF block type */
    float *norm;
    gpu_layer *layers;
    /* BS activations [max_batch][...] (rank 0) */
    float *x, *xb, *q, *k, *v, *att, *h, *rlogits, *logits;
    float *rbuf;  /* router output [n][E] probs, [n][K] ids, [n][K] weights (one download) */
    int *tokens, *d_pos;
    int *sbuf;    /* selection: [E][n] rows, [E][n] scales, then [2][nd] delays (one upload) */
    float **ybuf;  /* per device: its output [max_batch][H] on its GPU (NULL: another process) */
    float **yrecv; /* per device not on the BS GPU (rank 0): its output received there */
    void *att_scratch;
    cudaStream_t bs;
    wd_cuda_blas *blas;
    int64_t *d_ctl, *h_ctl; /* rank 0: the control message sent to the other ranks */
    double *d_tim, *h_tim;  /* rank 0: [G][kmax] expert seconds from the other ranks */
    int *gpu_used;          /* [G] */
    /* CUDA graphs (decode) */
    int graphs;             /* 1: graphs in use (possible where bs_graph != NULL) */
    int cap_mode;           /* experts_layer mode while capturing (see there) */
    int broken;             /* an error left GPUs or ranks out of step: no more forwards */
    wd_cuda_profile prof;
    cudaGraphExec_t *bs_graph; /* [n_layers] */
    expert_graph *xg;       /* [n_layers][WD_GRAPH_SETS] */
    int *xg_n;              /* [n_layers] */
    /* host side */
    float *h_rbuf;  /* pinned mirrors of rbuf, sbuf, tokens, pos */
    int *h_sbuf, *h_tok, *h_pos;
    int *h_sel_n, *h_sel_expert, *h_count, *h_dev_tokens;
    float *h_sel_weight;
    double *h_seconds;
    uint64_t *h_dl, *h_ul;
    /* chunked upload */
    void *stage_host;
};

extern "C" void wd_cuda_model_spec_default(wd_cuda_model_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->dtype = WD_DT_BF16;
    spec->n_gpus = 1;
    spec->n_ranks = 1;
}

static int fail(char *err, size_t errlen, const char *what, int code) {
    if (code)
        snprintf(err, errlen, "kernels/cuda/model.cu: %s (%s)", what,
                 cudaGetErrorString((cudaError_t)code));
    else
        snprintf(err, errlen, "kernels/cuda/model.cu: %s", what);
    cudaGetLastError();
    return -1;
}

#ifdef WD_HAVE_NCCL
static int nccl_fail(char *err, size_t errlen, const char *what, ncclResult_t r) {
    snprintf(err, errlen, "kernels/cuda/model.cu: %s (NCCL: %s)", what, ncclGetErrorString(r));
    return -1;
}
/* An NCCL failure leaves the peers waiting: the model is marked broken (no
   more forwards; its communicators are aborted when freed). NKG: inside a
   group, which is closed first. */
#define NK(call, what)                                                                        \
    do {                                                                                      \
        ncclResult_t r_ = (call);                                                             \
        if (r_ != ncclSuccess) {                                                              \
            cm->broken = 1;                                                                   \
            return nccl_fail(err, errlen, what, r_);                                          \
        }                                                                                     \
    } while (0)
#define NKG(call, what)                                                                       \
    do {                                                                                      \
        ncclResult_t r_ = (call);                                                             \
        if (r_ != ncclSuccess) {                                                              \
            ncclGroupEnd();                                                                   \
            cm->broken = 1;                                                                   \
            return nccl_fail(err, errlen, what, r_);                                          \
        }                                                                                     \
    } while (0)
#endif

#define CK(call, what)                                                                        \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_) return fail(err, errlen, what, rc_);                                         \
    } while (0)

/* placement: expert e on device e % nd, device d on global GPU d % G, global
   GPU g on rank g / L as its local GPU g % L, device d is number d / G there */
static inline int dev_gpu(const wd_cuda_model *cm, int d) { return d % cm->G; }
static inline gpu_part *gpu_local(const wd_cuda_model *cm, int g) {
    return g / cm->L == cm->rank ? &cm->parts[g % cm->L] : NULL;
}
static inline int dev_index(const wd_cuda_model *cm, int d) { return d / cm->G; }

/* bytes of the selection upload for n tokens (rows, scales, delays) */
static size_t sel_bytes(const wd_cuda_model *cm, int n) {
    return (size_t)2 * cm->cfg.n_experts * n * 4 + (size_t)2 * cm->spec.n_devices * 8;
}
#ifdef WD_HAVE_NCCL
static size_t ctl_words(const wd_cuda_model *cm) {
    return CTL_HEAD + (size_t)cm->cfg.n_experts + 2 * (size_t)cm->spec.n_devices;
}
#endif

static int64_t numel(const wd_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Upload tensor t (F32/F16/BF16, mapped on the host) as n elements of dtype dt
 * into a new buffer on GPU p: chunks through the pinned staging buffer,
 * converted on the GPU. No full host copy is made. A quantised tensor (GGUF
 * blocks) is uploaded as it is and keeps its dtype: *out_dt says which. */
static int upload_tensor(wd_cuda_model *cm, gpu_part *p, void **out, wd_dtype *out_dt,
                         const wd_tensor *t, int64_t n, wd_dtype dt, char *err, size_t errlen) {
    if (!t) return fail(err, errlen, "a tensor the model needs is missing", 0);
    if (numel(t) != n) {
        snprintf(err, errlen, "kernels/cuda/model.cu: tensor %s has %lld elements, expected %lld",
                 t->name ? t->name : "?", (long long)numel(t), (long long)n);
        return -1;
    }
    const int quant = wd_dtype_quantised(t->dtype);
    if (t->dtype != WD_DT_F32 && t->dtype != WD_DT_F16 && t->dtype != WD_DT_BF16 && !quant) {
        snprintf(err, errlen, "kernels/cuda/model.cu: tensor %s: dtype %s not supported on the GPU",
                 t->name ? t->name : "?", wd_dtype_name(t->dtype));
        return -1;
    }
    if (quant && t->ndim != 2) { /* norms are vectors the kernels read as F32 */
        snprintf(err, errlen, "kernels/cuda/model.cu: tensor %s: a %s tensor of %d dimensions "
                 "(the GPU takes quantised matrices only)", t->name ? t->name : "?",
                 wd_dtype_name(t->dtype), t->ndim);
        return -1;
    }
    if (cudaSetDevice(p->ordinal) != cudaSuccess) return fail(err, errlen, "cudaSetDevice", 1);
    *out_dt = dt;
    if (quant) { /* the blocks as they are, through the staging buffer */
        void *d = wd_cuda_malloc(t->nbytes);
        if (!d) {
            snprintf(err, errlen, "kernels/cuda/model.cu: out of GPU memory on GPU %d for %s (%.1f MB)",
                     p->ordinal, t->name ? t->name : "?", t->nbytes / 1e6);
            return -1;
        }
        for (size_t o = 0; o < t->nbytes; o += WD_STAGE_BYTES) {
            size_t m = t->nbytes - o < WD_STAGE_BYTES ? t->nbytes - o : WD_STAGE_BYTES;
            memcpy(cm->stage_host, (const char *)t->data + o, m);
            int rc = (int)cudaMemcpyAsync((char *)d + o, cm->stage_host, m, cudaMemcpyHostToDevice,
                                          p->port);
            if (!rc) rc = (int)cudaStreamSynchronize(p->port); /* the staging buffer is reused */
            if (rc) {
                cudaFree(d);
                return fail(err, errlen, "upload failed", rc);
            }
        }
        *out = d;
        *out_dt = t->dtype;
        cm->weight_bytes += t->nbytes;
        return 0;
    }
    size_t esrc = wd_dtype_bytes(t->dtype, 1), edst = wd_dtype_bytes(dt, 1);
    void *d = wd_cuda_malloc((size_t)n * edst);
    if (!d) {
        snprintf(err, errlen, "kernels/cuda/model.cu: out of GPU memory on GPU %d for %s (%.1f MB)",
                 p->ordinal, t->name ? t->name : "?", n * (double)edst / 1e6);
        return -1;
    }
    size_t per = WD_STAGE_BYTES / esrc;
    const char *src = (const char *)t->data;
    for (int64_t i0 = 0; i0 < n; i0 += (int64_t)per) {
        size_t m = (size_t)(n - i0 < (int64_t)per ? n - i0 : (int64_t)per);
        memcpy(cm->stage_host, src + (size_t)i0 * esrc, m * esrc);
        int rc;
        if (t->dtype == dt) {
            rc = (int)cudaMemcpyAsync((char *)d + (size_t)i0 * edst, cm->stage_host, m * esrc,
                                      cudaMemcpyHostToDevice, p->port);
        } else {
            rc = (int)cudaMemcpyAsync(p->stage_dev, cm->stage_host, m * esrc,
                                      cudaMemcpyHostToDevice, p->port);
            if (!rc)
                rc = wd_cuda_convert((char *)d + (size_t)i0 * edst, dt, p->stage_dev, t->dtype, m,
                                     p->port);
        }
        if (!rc) rc = (int)cudaStreamSynchronize(p->port); /* the staging buffer is reused */
        if (rc) {
            cudaFree(d);
            return fail(err, errlen, "upload failed", rc);
        }
    }
    *out = d;
    cm->weight_bytes += (size_t)n * edst;
    return 0;
}

static void *dalloc(size_t bytes, int *ok) {
    void *p = wd_cuda_malloc(bytes);
    if (!p) *ok = 0;
    return p;
}
static void *halloc(size_t bytes, int *ok) { /* pinned, usable from every GPU */
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();
        *ok = 0;
        return NULL;
    }
    return p;
}
static void hfree(void *p) {
    if (p) cudaFreeHost(p);
}

static void send_quit(wd_cuda_model *cm);

extern "C" void wd_cuda_model_free(wd_cuda_model *cm) {
    if (!cm) return;
    if (!cm->broken) send_quit(cm);
    const wd_config *c = &cm->cfg;
    int nd = cm->spec.n_devices;
    for (int i = 0; cm->parts && i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        if (!p->port) continue;
        cudaSetDevice(p->ordinal);
        cudaStreamSynchronize(p->port);
    }
#ifdef WD_HAVE_NCCL
    /* several communicators of one thread: finalised together (or aborted) */
    int have_comm = 0;
    for (int i = 0; cm->parts && i < cm->L; i++) have_comm |= cm->parts[i].comm != NULL;
    if (have_comm && !cm->broken) {
        ncclGroupStart();
        for (int i = 0; i < cm->L; i++)
            if (cm->parts[i].comm) ncclCommFinalize(cm->parts[i].comm);
        ncclGroupEnd();
    }
    for (int i = 0; have_comm && i < cm->L; i++) {
        if (!cm->parts[i].comm) continue;
        if (cm->broken) ncclCommAbort(cm->parts[i].comm);
        else ncclCommDestroy(cm->parts[i].comm);
        cm->parts[i].comm = NULL;
    }
#endif
    /* graphs before the events their nodes record */
    if (cm->parts) cudaSetDevice(cm->parts[0].ordinal);
    for (int l = 0; cm->bs_graph && l < c->n_layers; l++)
        if (cm->bs_graph[l]) cudaGraphExecDestroy(cm->bs_graph[l]);
    for (int l = 0; cm->xg && cm->xg_n && l < c->n_layers; l++)
        for (int j = 0; j < cm->xg_n[l]; j++) cudaGraphExecDestroy(cm->xg[l * WD_GRAPH_SETS + j].exec);
    free(cm->bs_graph);
    free(cm->xg);
    free(cm->xg_n);
    for (int i = 0; cm->parts && i < cm->L; i++) {
        cudaSetDevice(cm->parts[i].ordinal);
        wd_cuda_devset_free(cm->parts[i].devs);
    }
    if (cm->parts) cudaSetDevice(cm->parts[0].ordinal);
    wd_cuda_blas_free(cm->blas);
    for (int l = 0; cm->layers && l < c->n_layers; l++) {
        gpu_layer *L = &cm->layers[l];
        void *w[] = {L->attn_norm, L->ffn_norm, L->wq, L->wk, L->wv, L->wo, L->gate, L->kc, L->vc};
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) cudaFree(w[i]);
        for (int e = 0; L->experts && e < c->n_experts; e++) {
            cudaFree((void *)L->experts[e].w1);
            cudaFree((void *)L->experts[e].w2);
            cudaFree((void *)L->experts[e].w3);
        }
        free(L->experts);
    }
    free(cm->layers);
    if (cm->lm_head != cm->embed) cudaFree(cm->lm_head);
    cudaFree(cm->embed);
    cudaFree(cm->norm);
    void *bufs[] = {cm->x,      cm->xb,     cm->q,     cm->k,      cm->v,
                    cm->att,    cm->h,      cm->rlogits, cm->rbuf, cm->logits,
                    cm->tokens, cm->d_pos,  cm->sbuf,  cm->att_scratch, cm->d_ctl,
                    cm->d_tim};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    for (int d = 0; cm->ybuf && d < nd; d++) cudaFree(cm->ybuf[d]);
    for (int d = 0; cm->yrecv && d < nd; d++) cudaFree(cm->yrecv[d]);
    free(cm->ybuf);
    free(cm->yrecv);
    for (int i = 0; cm->parts && i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        cudaSetDevice(p->ordinal);
        if (p->global) {
            cudaFree(p->xb);
            cudaFree(p->sbuf);
        }
        cudaFree(p->stage_dev);
        cudaFree(p->d_ctl);
        cudaFree(p->d_tim);
        hfree(p->h_ctl);
        hfree(p->h_tim);
        if (p->ev_ready) cudaEventDestroy(p->ev_ready);
        if (p->port) cudaStreamDestroy(p->port);
        free(p->ids);
    }
    free(cm->parts);
    void *pinned[] = {cm->stage_host, cm->h_rbuf, cm->h_sbuf, cm->h_tok,
                      cm->h_pos,      cm->h_ctl,  cm->h_tim};
    for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++) hfree(pinned[i]);
    free(cm->h_sel_n);
    free(cm->h_sel_expert);
    free(cm->h_sel_weight);
    free(cm->h_count);
    free(cm->h_dev_tokens);
    free(cm->h_seconds);
    free(cm->h_dl);
    free(cm->h_ul);
    free(cm->gpu_used);
    cudaGetLastError();
    free(cm);
}

/* Random weights generated on the GPU: uniform in offset +- scale, from a hash of
 * (seed, index), so no host memory or transfer is involved. */
template <typename T>
__global__ void random_fill_kernel(T *p, size_t n, uint64_t seed, float scale, float offset) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
        wd_st(p + i, offset + scale * u);
    }
}

static int random_tensor(wd_cuda_model *cm, gpu_part *p, void **out, int64_t n, wd_dtype dt,
                         float scale, float offset, uint64_t seed, char *err, size_t errlen) {
    if (cudaSetDevice(p->ordinal) != cudaSuccess) return fail(err, errlen, "cudaSetDevice", 1);
    size_t es = wd_dtype_bytes(dt, 1);
    void *d = wd_cuda_malloc((size_t)n * es);
    if (!d) {
        snprintf(err, errlen,
                 "kernels/cuda/model.cu: out of GPU memory on GPU %d (%.1f GB of weights so far)",
                 p->ordinal, cm->weight_bytes / 1e9);
        return -1;
    }
    unsigned blocks = wd_blocks((size_t)n, 256);
    if (blocks > 65536) blocks = 65536;
    if (dt == WD_DT_F32)
        random_fill_kernel<<<blocks, 256, 0, p->port>>>((float *)d, (size_t)n, seed, scale, offset);
    else
        random_fill_kernel<<<blocks, 256, 0, p->port>>>((__nv_bfloat16 *)d, (size_t)n, seed, scale,
                                                        offset);
    int rc = wd_launch_status();
    if (rc) {
        cudaFree(d);
        return fail(err, errlen, "random fill failed", rc);
    }
    *out = d;
    cm->weight_bytes += (size_t)n * es;
    return 0;
}

static int model_create(wd_cuda_model **out, const wd_config *cfg, const wd_model *m,
                        uint64_t seed, const wd_cuda_model_spec *spec_in, char *log,
                        size_t loglen, char *err, size_t errlen);

extern "C" int wd_cuda_model_create(wd_cuda_model **out, const wd_model *m,
                                    const wd_cuda_model_spec *spec_in, char *log, size_t loglen,
                                    char *err, size_t errlen) {
    return model_create(out, &m->cfg, m, 0, spec_in, log, loglen, err, errlen);
}

extern "C" int wd_cuda_model_create_random(wd_cuda_model **out, const wd_config *cfg,
                                           uint64_t seed, const wd_cuda_model_spec *spec,
                                           char *log, size_t loglen, char *err, size_t errlen) {
    return model_create(out, cfg, NULL, seed ? seed : 1, spec, log, loglen, err, errlen);
}

extern "C" int wd_cuda_nccl_unique_id(void *id, size_t len) {
#ifdef WD_HAVE_NCCL
    if (len < sizeof(ncclUniqueId)) return -1;
    ncclUniqueId u;
    if (ncclGetUniqueId(&u) != ncclSuccess) return -1;
    memcpy(id, &u, sizeof u);
    return (int)sizeof u;
#else
    (void)id;
    (void)len;
    return -1;
#endif
}

extern "C" int wd_cuda_have_nccl(void) {
#ifdef WD_HAVE_NCCL
    return 1;
#else
    return 0;
#endif
}

/* The GPUs of this process, their streams, staging buffers and communicators. */
static int setup_nccl(wd_cuda_model *cm, char *log, size_t loglen, char *err, size_t errlen);

static int setup_parts(wd_cuda_model *cm, char *log, size_t loglen, char *err, size_t errlen) {
    const wd_cuda_model_spec *s = &cm->spec;
    int ok = 1;
    cm->parts = (gpu_part *)calloc((size_t)cm->L, sizeof(gpu_part));
    if (!cm->parts) return fail(err, errlen, "out of host memory", 0);
    for (int i = 0; i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        p->ordinal = s->gpu + i;
        p->global = cm->rank * cm->L + i;
        if (cudaSetDevice(p->ordinal) != cudaSuccess) {
            snprintf(err, errlen, "kernels/cuda/model.cu: cannot use GPU %d", p->ordinal);
            cudaGetLastError();
            return -1;
        }
        /* the BS stream and the transfer streams go first when the GPU is shared
           with the device streams (their work gates every device) */
        int lo = 0, hi = 0;
        cudaDeviceGetStreamPriorityRange(&lo, &hi);
        CK((int)cudaStreamCreateWithPriority(&p->port, cudaStreamNonBlocking, hi), "stream");
        CK((int)cudaEventCreateWithFlags(&p->ev_ready, cudaEventDisableTiming), "event");
        p->stage_dev = dalloc(WD_STAGE_BYTES, &ok);
        if (!ok) return fail(err, errlen, "out of GPU memory for the staging buffer", 0);
    }
    cm->bs = cm->rank == 0 ? cm->parts[0].port : NULL;
    cm->stage_host = halloc(WD_STAGE_BYTES, &ok);
    if (!ok) return fail(err, errlen, "cannot allocate the pinned staging buffer", 0);
    if (cm->G > 1 && setup_nccl(cm, log, loglen, err, errlen)) return -1;
    s = &cm->spec; /* ranks > 0 took n_devices, max_batch, dtype, realtime from rank 0 */
    for (int i = 0; i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        int nl = 0;
        for (int d = p->global; d < s->n_devices; d += cm->G) nl++;
        p->n_local = nl;
        p->ids = (int *)malloc((size_t)(nl ? nl : 1) * sizeof(int));
        if (!p->ids) return fail(err, errlen, "out of host memory", 0);
        for (int k = 0; k < nl; k++) p->ids[k] = p->global + k * cm->G;
    }
    return 0;
}

#ifdef WD_HAVE_NCCL
/* Multi-process runs: rank 0 sends its model shape and runner settings to
 * every other GPU once; the other ranks check the model is the same and take
 * the settings (so `wdmoe serve` needs no options beyond the model). */
enum { CFG_WORDS = 10 };
#define WD_CFG_MAGIC 0x77646d6f65ll /* "wdmoe" */
static int exchange_config(wd_cuda_model *cm, int64_t *h, int64_t **d, char *err,
                           size_t errlen) {
    const wd_config *c = &cm->cfg;
    int64_t mine[CFG_WORDS] = {WD_CFG_MAGIC,          c->n_experts,         c->n_layers,
                               c->hidden,             c->ffn,               c->vocab,
                               cm->spec.n_devices,    cm->spec.max_batch,   (int64_t)cm->spec.dtype,
                               cm->spec.realtime};
    gpu_part *p0 = &cm->parts[0];
    if (cm->rank == 0) {
        memcpy(h, mine, sizeof mine);
        CK((int)cudaSetDevice(p0->ordinal), "cudaSetDevice");
        CK((int)cudaMemcpyAsync(d[0], h, sizeof mine, cudaMemcpyHostToDevice, p0->port), "copy");
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int g = cm->L; g < cm->G; g++)
            NKG(ncclSend(d[0], CFG_WORDS, ncclInt64, g, p0->comm, p0->port), "send (config)");
        NK(ncclGroupEnd(), "ncclGroupEnd (config)");
        CK((int)cudaStreamSynchronize(p0->port), "config");
        return 0;
    }
    NK(ncclGroupStart(), "ncclGroupStart");
    for (int i = 0; i < cm->L; i++)
        NKG(ncclRecv(d[i], CFG_WORDS, ncclInt64, 0, cm->parts[i].comm, cm->parts[i].port),
            "recv (config)");
    NK(ncclGroupEnd(), "ncclGroupEnd (config)");
    for (int i = 0; i < cm->L; i++) {
        CK((int)cudaSetDevice(cm->parts[i].ordinal), "cudaSetDevice");
        CK((int)cudaStreamSynchronize(cm->parts[i].port), "config");
    }
    CK((int)cudaSetDevice(p0->ordinal), "cudaSetDevice");
    CK((int)cudaMemcpy(h, d[0], sizeof mine, cudaMemcpyDeviceToHost), "copy");
    if (h[0] != WD_CFG_MAGIC) {
        cm->broken = 1;
        return fail(err, errlen, "rank 0 sent no wdmoe configuration (another program?)", 0);
    }
    for (int w = 1; w <= 5; w++)
        if (h[w] != mine[w]) {
            cm->broken = 1;
            snprintf(err, errlen,
                     "kernels/cuda/model.cu: rank 0 runs another model (experts %lld, layers %lld, "
                     "hidden %lld, ffn %lld, vocab %lld; here %lld, %lld, %lld, %lld, %lld)",
                     (long long)h[1], (long long)h[2], (long long)h[3], (long long)h[4],
                     (long long)h[5], (long long)mine[1], (long long)mine[2], (long long)mine[3],
                     (long long)mine[4], (long long)mine[5]);
            return -1;
        }
    if (h[6] < cm->G || h[6] > 64 || h[7] <= 0 || (h[8] != WD_DT_BF16 && h[8] != WD_DT_F32)) {
        cm->broken = 1;
        return fail(err, errlen, "rank 0 sent runner settings this rank cannot use", 0);
    }
    cm->spec.n_devices = (int)h[6];
    cm->spec.max_batch = (int)h[7];
    cm->spec.dtype = (wd_dtype)h[8];
    cm->spec.realtime = (int)h[9];
    return 0;
}
#endif

/* Communicators over all GPUs of the run; for multi-process runs also the
 * configuration exchange and the control-message buffers. */
static int setup_nccl(wd_cuda_model *cm, char *log, size_t loglen, char *err, size_t errlen) {
#ifdef WD_HAVE_NCCL
    const wd_cuda_model_spec *s = &cm->spec;
    if (s->n_ranks <= 1) {
        ncclComm_t comms[64];
        int devs[64];
        for (int i = 0; i < cm->L; i++) devs[i] = cm->parts[i].ordinal;
        NK(ncclCommInitAll(comms, cm->L, devs), "ncclCommInitAll");
        for (int i = 0; i < cm->L; i++) cm->parts[i].comm = comms[i];
    } else {
        ncclUniqueId id;
        memcpy(&id, s->nccl_id, sizeof id);
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int i = 0; i < cm->L; i++) {
            cudaSetDevice(cm->parts[i].ordinal);
            ncclResult_t r = ncclCommInitRank(&cm->parts[i].comm, cm->G, id, cm->parts[i].global);
            if (r != ncclSuccess) {
                ncclGroupEnd();
                return nccl_fail(err, errlen, "ncclCommInitRank", r);
            }
        }
        NK(ncclGroupEnd(), "ncclCommInitRank");
    }
    int ver = 0;
    ncclGetVersion(&ver);
    wd_cuda_log(log, loglen, "cuda: NCCL %d: %d GPUs in %d process(es), this is rank %d\n", ver,
               cm->G, s->n_ranks, cm->rank);
    if (cm->G == cm->L) return 0;
    /* several processes: configuration, then the control buffers (allocated
       now, so that rank 0 can tell the others to stop whatever fails later) */
    int ok = 1, rc;
    int64_t *h = (int64_t *)halloc(CFG_WORDS * 8, &ok), *d[64] = {0};
    for (int i = 0; ok && i < cm->L; i++) {
        cudaSetDevice(cm->parts[i].ordinal);
        d[i] = (int64_t *)dalloc(CFG_WORDS * 8, &ok);
    }
    rc = ok ? exchange_config(cm, h, d, err, errlen) : fail(err, errlen, "out of memory", 0);
    hfree(h);
    for (int i = 0; i < cm->L; i++) cudaFree(d[i]);
    if (rc) return -1;
    cm->kmax = (cm->spec.n_devices + cm->G - 1) / cm->G;
    if (cm->rank == 0) {
        cudaSetDevice(cm->parts[0].ordinal);
        cm->d_ctl = (int64_t *)dalloc(ctl_words(cm) * 8, &ok);
        cm->d_tim = (double *)dalloc((size_t)cm->G * cm->kmax * 8, &ok);
        cm->h_ctl = (int64_t *)halloc(ctl_words(cm) * 8, &ok);
        cm->h_tim = (double *)halloc((size_t)cm->G * cm->kmax * 8, &ok);
    }
    for (int i = 0; cm->rank != 0 && i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        cudaSetDevice(p->ordinal);
        p->d_ctl = (int64_t *)dalloc(ctl_words(cm) * 8, &ok);
        p->d_tim = (double *)dalloc((size_t)cm->kmax * 8, &ok);
        p->h_ctl = (int64_t *)halloc(ctl_words(cm) * 8, &ok);
        p->h_tim = (double *)halloc((size_t)cm->kmax * 8, &ok);
    }
    if (!ok) return fail(err, errlen, "out of memory for the control buffers", 0);
    return 0;
#else
    (void)log;
    (void)loglen;
    return fail(err, errlen, "several GPUs need NCCL, which this build does not have", 0);
#endif
}

static int model_create(wd_cuda_model **out, const wd_config *cfg, const wd_model *m,
                        uint64_t seed, const wd_cuda_model_spec *spec_in, char *log,
                        size_t loglen, char *err, size_t errlen) {
    *out = NULL;
    int ngpu = wd_cuda_device_count();
    if (ngpu <= 0) return fail(err, errlen, "no CUDA device", 0);
    wd_cuda_model_spec spec;
    if (spec_in)
        spec = *spec_in;
    else
        wd_cuda_model_spec_default(&spec);
    if (spec.dtype != WD_DT_BF16 && spec.dtype != WD_DT_F32)
        return fail(err, errlen, "GPU weights must be BF16 or F32", 0);
    const wd_config *c = cfg;
    if (c->hidden <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->n_heads % c->n_kv_heads || c->head_dim <= 0 || c->head_dim % 2 || c->ffn <= 0 ||
        c->n_experts <= 0 || c->top_k <= 0 || c->top_k > c->n_experts || c->vocab <= 0)
        return fail(err, errlen, "invalid model configuration", 0);
    if (c->n_experts > 1024) return fail(err, errlen, "more than 1024 experts", 0);
    if (m && m->layers && !m->layers[0].gate)
        return fail(err, errlen, "dense models (no router) run on the CPU backend only", 0);
    if (spec.max_ctx <= 0) spec.max_ctx = c->max_pos > 0 ? c->max_pos : 2048;
    if (spec.max_batch <= 0) spec.max_batch = 512;
    if (spec.n_devices <= 0) spec.n_devices = c->n_experts;
    if (spec.n_gpus <= 0) spec.n_gpus = 1;
    if (spec.n_ranks <= 0) spec.n_ranks = 1;
    if (spec.n_devices > 64) return fail(err, errlen, "at most 64 emulated devices", 0);
    if (spec.rank < 0 || spec.rank >= spec.n_ranks)
        return fail(err, errlen, "rank outside 0 .. n_ranks-1", 0);
    if (spec.n_ranks > 1 && !spec.nccl_id)
        return fail(err, errlen, "a multi-process run needs the NCCL unique id of rank 0", 0);
    if (spec.gpu < 0 || spec.gpu + spec.n_gpus > ngpu) {
        snprintf(err, errlen, "kernels/cuda/model.cu: GPUs %d..%d asked, %d present", spec.gpu,
                 spec.gpu + spec.n_gpus - 1, ngpu);
        return -1;
    }
    if (spec.n_gpus * spec.n_ranks > 64) return fail(err, errlen, "at most 64 GPUs", 0);
    if (spec.n_devices < spec.n_gpus * spec.n_ranks) {
        snprintf(err, errlen,
                 "kernels/cuda/model.cu: %d emulated devices cannot spread over %d GPUs "
                 "(a GPU would have none)",
                 spec.n_devices, spec.n_gpus * spec.n_ranks);
        return -1;
    }

    wd_cuda_model *cm = (wd_cuda_model *)calloc(1, sizeof *cm);
    if (!cm) return fail(err, errlen, "out of host memory", 0);
    cm->cfg = *c;
    cm->spec = spec;
    cm->dt = spec.dtype;
    cm->L = spec.n_gpus;
    cm->G = spec.n_gpus * spec.n_ranks;
    cm->rank = spec.rank;
    cm->kmax = (spec.n_devices + cm->G - 1) / cm->G;
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int F = c->ffn, E = c->n_experts, B = spec.max_batch, V = c->vocab, nd = spec.n_devices;
    int is_bs = cm->rank == 0;
/* a rank > 0 that fails aborts its communicators; rank 0 tells the others to stop */
#define BAIL(...)                                                                             \
    do {                                                                                      \
        __VA_ARGS__;                                                                          \
        if (cm->rank != 0) cm->broken = 1;                                                    \
        wd_cuda_model_free(cm);                                                               \
        return -1;                                                                            \
    } while (0)
    if (setup_parts(cm, log, loglen, err, errlen)) BAIL();
    spec = cm->spec; /* ranks > 0: settings from rank 0 */
    cm->dt = spec.dtype;
    B = spec.max_batch;
    nd = spec.n_devices;
    gpu_part *bsp = is_bs ? &cm->parts[0] : NULL;

    /* weights */
    wd_dtype dt = cm->dt;
    cm->layers = (gpu_layer *)calloc((size_t)c->n_layers, sizeof(gpu_layer));
    if (!cm->layers) BAIL(fail(err, errlen, "out of host memory", 0));
    /* UP: upload a host tensor onto GPU part `where` (NULL: another process
       holds it), or (m == NULL) generate it there with uniform values of the
       given scale (norm weights: 1 +- 0.1); the seed depends on the tensor
       only, so every placement builds the same model */
    uint64_t seq = 0;
    wd_dtype got_dt = dt; /* the dtype the last UP left on the GPU */
#define UP(where, dst, t, n, dty, rscale, roff)                                               \
    do {                                                                                      \
        uint64_t s_ = seed + 7919 * ++seq;                                                    \
        gpu_part *w_ = (where);                                                               \
        got_dt = (dty);                                                                       \
        if (!w_) break;                                                                       \
        void *p_ = NULL;                                                                      \
        int rc_ = m ? upload_tensor(cm, w_, &p_, &got_dt, m ? (t) : NULL, (n), (dty), err,    \
                                    errlen)                                                   \
                    : random_tensor(cm, w_, &p_, (n), (dty), (rscale), (roff), s_, err,       \
                                    errlen);                                                  \
        if (rc_) BAIL();                                                                      \
        dst = (decltype(dst))p_;                                                              \
    } while (0)
    float sH = 1.7f / sqrtf((float)H), sQ = 1.7f / sqrtf((float)qd), sF = 1.7f / sqrtf((float)F);
    UP(bsp, cm->embed, m->embed, (int64_t)V * H, dt, 1.0f, 0.0f);
    cm->embed_dt = cm->lm_dt = got_dt;
    if (m ? (!m->lm_head || m->lm_head == m->embed) : c->tie_embeddings) {
        cm->lm_head = cm->embed;
    } else {
        UP(bsp, cm->lm_head, m->lm_head, (int64_t)V * H, dt, sH, 0.0f);
        cm->lm_dt = got_dt;
    }
    UP(bsp, cm->norm, m->norm, H, WD_DT_F32, 0.1f, 1.0f);
    for (int l = 0; l < c->n_layers; l++) {
        const wd_layer *hl = m ? &m->layers[l] : NULL;
        gpu_layer *L = &cm->layers[l];
        UP(bsp, L->attn_norm, hl->attn_norm, H, WD_DT_F32, 0.1f, 1.0f);
        UP(bsp, L->ffn_norm, hl->ffn_norm, H, WD_DT_F32, 0.1f, 1.0f);
        UP(bsp, L->wq, hl->wq, (int64_t)qd * H, dt, sH, 0.0f);
        L->wq_dt = got_dt;
        UP(bsp, L->wk, hl->wk, (int64_t)kvd * H, dt, sH, 0.0f);
        L->wk_dt = got_dt;
        UP(bsp, L->wv, hl->wv, (int64_t)kvd * H, dt, sH, 0.0f);
        L->wv_dt = got_dt;
        UP(bsp, L->wo, hl->wo, (int64_t)H * qd, dt, sQ, 0.0f);
        L->wo_dt = got_dt;
        UP(bsp, L->gate, hl->gate, (int64_t)E * H, dt, 3 * sH, 0.0f);
        L->gate_dt = got_dt;
        L->experts = (wd_cuda_expert *)calloc((size_t)E, sizeof(wd_cuda_expert));
        if (!L->experts) BAIL(fail(err, errlen, "out of host memory", 0));
        for (int e = 0; e < E; e++) {
            wd_cuda_expert *x = &L->experts[e];
            gpu_part *at = gpu_local(cm, dev_gpu(cm, e % nd));
            x->dt = dt;
            x->hidden = H;
            x->ffn = F;
            UP(at, x->w1, hl->w1[e], (int64_t)F * H, dt, sH, 0.0f);
            x->dt = got_dt;
            UP(at, x->w3, hl->w3[e], (int64_t)F * H, dt, sH, 0.0f);
            wd_dtype dt3 = got_dt;
            UP(at, x->w2, hl->w2[e], (int64_t)H * F, dt, sF, 0.0f);
            x->dt2 = got_dt;
            /* w2 may be another block type than w1/w3 (K-quant mixes), nothing else */
            if (dt3 != x->dt || (got_dt != x->dt && !(wd_dtype_quantised(got_dt) &&
                                                       wd_dtype_quantised(x->dt)))) {
                snprintf(err, errlen, "kernels/cuda/model.cu: layer %d expert %d: w1 %s, w3 %s, w2 %s: "
                         "the GPU expert kernels want w1 and w3 of one dtype, and w2 of the same "
                         "or (all quantised) another block type", l, e,
                         wd_dtype_name(x->dt), wd_dtype_name(dt3), wd_dtype_name(got_dt));
                BAIL();
            }
        }
        if (is_bs) {
            int ok = 1;
            cudaSetDevice(bsp->ordinal);
            size_t cache = (size_t)spec.max_ctx * kvd * wd_dtype_bytes(dt, 1);
            L->kc = dalloc(cache, &ok);
            L->vc = dalloc(cache, &ok);
            if (!ok) BAIL(fail(err, errlen, "out of GPU memory for the KV cache", 0));
        }
    }
#undef UP
    for (int i = 0; i < cm->L; i++) {
        cudaSetDevice(cm->parts[i].ordinal);
        cudaFree(cm->parts[i].stage_dev);
        cm->parts[i].stage_dev = NULL;
    }
    hfree(cm->stage_host);
    cm->stage_host = NULL;

    /* activations and transfer buffers */
    int ok = 1;
    int wide = qd > H ? qd : H;
    size_t sel_max = sel_bytes(cm, B);
    if (is_bs) {
        cudaSetDevice(bsp->ordinal);
        cm->x = (float *)dalloc((size_t)B * H * 4, &ok);
        cm->xb = (float *)dalloc((size_t)B * H * 4, &ok);
        cm->q = (float *)dalloc((size_t)B * qd * 4, &ok);
        cm->k = (float *)dalloc((size_t)B * kvd * 4, &ok);
        cm->v = (float *)dalloc((size_t)B * kvd * 4, &ok);
        cm->att = (float *)dalloc((size_t)B * qd * 4, &ok);
        cm->h = (float *)dalloc((size_t)B * wide * 4, &ok);
        cm->rlogits = (float *)dalloc((size_t)B * E * 4, &ok);
        cm->rbuf = (float *)dalloc((size_t)B * 3 * E * 4, &ok);
        cm->logits = (float *)dalloc((size_t)B * V * 4, &ok);
        cm->tokens = (int *)dalloc((size_t)B * 4, &ok);
        cm->d_pos = (int *)dalloc(sizeof(int), &ok);
        cm->sbuf = (int *)dalloc(sel_max, &ok);
        cm->att_scratch =
            dalloc(wd_cuda_attention_scratch_bytes(B, c->n_heads, spec.max_ctx, hd), &ok);
        bsp->xb = cm->xb;
        bsp->sbuf = cm->sbuf;
        cm->yrecv = (float **)calloc((size_t)nd, sizeof(float *));
        if (!cm->yrecv) ok = 0;
        for (int d = 0; ok && d < nd; d++)
            if (dev_gpu(cm, d) != 0) cm->yrecv[d] = (float *)dalloc((size_t)B * H * 4, &ok);
        cm->h_rbuf = (float *)halloc((size_t)B * 3 * E * 4, &ok);
        cm->h_sbuf = (int *)halloc(sel_max, &ok);
        cm->h_tok = (int *)halloc((size_t)B * 4, &ok);
        cm->h_pos = (int *)halloc(sizeof(int), &ok);
    }
    for (int i = 0; ok && i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        cudaSetDevice(p->ordinal);
        if (p->global) {
            p->xb = (float *)dalloc((size_t)B * H * 4, &ok);
            p->sbuf = (int *)dalloc(sel_max, &ok);
        }
    }
    cm->ybuf = (float **)calloc((size_t)nd, sizeof(float *));
    if (!cm->ybuf) ok = 0;
    for (int d = 0; ok && d < nd; d++) {
        gpu_part *p = gpu_local(cm, dev_gpu(cm, d));
        if (!p) continue;
        cudaSetDevice(p->ordinal);
        cm->ybuf[d] = (float *)dalloc((size_t)B * H * 4, &ok);
    }
    if (!ok) BAIL(fail(err, errlen, "out of GPU or pinned host memory for activations", 0));
    cm->h_sel_n = (int *)malloc((size_t)B * 4);
    cm->h_sel_expert = (int *)malloc((size_t)B * E * 4);
    cm->h_sel_weight = (float *)malloc((size_t)B * E * 4);
    cm->h_count = (int *)malloc((size_t)E * 4);
    cm->h_dev_tokens = (int *)malloc((size_t)nd * 4);
    cm->h_seconds = (double *)malloc((size_t)nd * sizeof(double));
    cm->h_dl = (uint64_t *)calloc((size_t)nd, 8);
    cm->h_ul = (uint64_t *)calloc((size_t)nd, 8);
    cm->gpu_used = (int *)calloc((size_t)cm->G, sizeof(int));
    if (!cm->h_sel_n || !cm->h_sel_expert || !cm->h_sel_weight || !cm->h_count ||
        !cm->h_dev_tokens || !cm->h_seconds || !cm->h_dl || !cm->h_ul || !cm->gpu_used)
        BAIL(fail(err, errlen, "out of host memory", 0));
    if (is_bs) {
        char berr[256];
        size_t maxel = (size_t)B * (size_t)(F > wide ? F : wide);
        cudaSetDevice(bsp->ordinal);
        cm->blas = wd_cuda_blas_create(cm->bs, maxel, berr, sizeof berr);
        if (!cm->blas) BAIL(snprintf(err, errlen, "%s", berr));
    }
    int green = 0;
    for (int i = 0; i < cm->L; i++) {
        gpu_part *p = &cm->parts[i];
        int sm[64];
        wd_cuda_devset_spec ds;
        memset(&ds, 0, sizeof ds);
        for (int k = 0; k < p->n_local; k++) sm[k] = spec.sm_count ? spec.sm_count[p->ids[k]] : 0;
        ds.n_devices = p->n_local;
        ds.sm_count = sm;
        ds.ids = p->ids;
        ds.gpu = p->ordinal;
        ds.max_tokens = (size_t)B;
        ds.hidden = H;
        ds.ffn = F;
        p->devs = wd_cuda_devset_create(&ds, log, loglen, err, errlen);
        if (!p->devs) BAIL();
        for (int k = 0; k < p->n_local; k++) green |= wd_cuda_devset_green(p->devs, k);
    }
    /* CUDA graphs for decode: one GPU, one process, plain streams, <= 64 experts */
    if (is_bs) {
        const char *why = cm->G > 1 ? "several GPUs"
                          : green   ? "green contexts"
                          : E > 64  ? "more than 64 experts"
                                    : NULL;
        if (why) {
            if (spec.use_graphs)
                wd_cuda_log(log, loglen,
                           "cuda: CUDA graphs off (%s): decode launches kernel by kernel\n", why);
        } else {
            cm->bs_graph = (cudaGraphExec_t *)calloc((size_t)c->n_layers, sizeof(cudaGraphExec_t));
            cm->xg = (expert_graph *)calloc((size_t)c->n_layers * WD_GRAPH_SETS,
                                            sizeof(expert_graph));
            cm->xg_n = (int *)calloc((size_t)c->n_layers, sizeof(int));
            if (!cm->bs_graph || !cm->xg || !cm->xg_n)
                BAIL(fail(err, errlen, "out of host memory", 0));
            cm->graphs = spec.use_graphs != 0;
        }
    }
    for (int i = 0; i < cm->L; i++) {
        cudaSetDevice(cm->parts[i].ordinal);
        int rc = (int)cudaDeviceSynchronize();
        if (rc) BAIL(fail(err, errlen, "setup failed", rc));
    }
    if (is_bs) cudaSetDevice(bsp->ordinal);
    wd_cuda_log(log, loglen,
               "cuda: rank %d: %.2f GB of %s weights on GPU%s %d..%d, %d emulated devices over %d "
               "GPU(s)%s%s\n",
               cm->rank, cm->weight_bytes / 1e9, wd_dtype_name(dt), cm->L > 1 ? "s" : "",
               spec.gpu, spec.gpu + cm->L - 1, nd, cm->G,
               is_bs ? ", BS and KV cache on the first" : "", cm->graphs ? ", CUDA graphs" : "");
#undef BAIL
    *out = cm;
    return 0;
}

extern "C" size_t wd_cuda_model_weight_bytes(const wd_cuda_model *cm) { return cm->weight_bytes; }
extern "C" void wd_cuda_model_reset(wd_cuda_model *cm) { cm->pos = 0; }
/* The cache rows from pos on are stale but never read: the next forward
   overwrites them before attention reaches them. */
extern "C" int wd_cuda_model_set_pos(wd_cuda_model *cm, int pos) {
    if (pos < 0 || pos > cm->pos) return -1;
    cm->pos = pos;
    return 0;
}
extern "C" int wd_cuda_model_pos(const wd_cuda_model *cm) { return cm->pos; }
extern "C" wd_cuda_devset *wd_cuda_model_devices(wd_cuda_model *cm, int gpu) {
    return gpu >= 0 && gpu < cm->L ? cm->parts[gpu].devs : NULL;
}
extern "C" int wd_cuda_model_graphs(const wd_cuda_model *cm) { return cm->graphs; }
extern "C" int wd_cuda_model_set_graphs(wd_cuda_model *cm, int on) {
    if (on && !cm->bs_graph) return -1; /* not possible for this model (see the log) */
    cm->graphs = on != 0;
    return 0;
}

/* ---- the BS part of layer l: attention, router, router output to the host ----
 * d_pos != NULL: positions come from device memory (*d_pos + t) and attention
 * is launched for the whole cache (CUDA graphs); else pos0. */
static int bs_layer(wd_cuda_model *cm, int l, int n, int pos0, const int *d_pos, char *err,
                    size_t errlen) {
    const wd_config *c = &cm->cfg;
    gpu_layer *L = &cm->layers[l];
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int E = c->n_experts, K = c->top_k;
    cudaStream_t bs = cm->bs;
    wd_dtype dt = cm->dt;
    char name[48];
    snprintf(name, sizeof name, "L%d/bs/attention", l);
    wd_cuda_nvtx_push(name);
    CK(wd_cuda_rmsnorm(cm->xb, cm->x, L->attn_norm, n, H, c->rms_eps, bs), "rmsnorm");
    CK(wd_cuda_matmul(cm->blas, cm->q, cm->xb, L->wq, L->wq_dt, n, qd, H), "q projection");
    CK(wd_cuda_matmul(cm->blas, cm->k, cm->xb, L->wk, L->wk_dt, n, kvd, H), "k projection");
    CK(wd_cuda_matmul(cm->blas, cm->v, cm->xb, L->wv, L->wv_dt, n, kvd, H), "v projection");
    CK(wd_cuda_rope_kv_at(cm->q, cm->k, cm->v, L->kc, L->vc, dt, n, pos0, d_pos, c->n_heads,
                          c->n_kv_heads, hd, c->rope_theta, bs),
       "rope");
    CK(wd_cuda_attention_at(cm->att, cm->q, L->kc, L->vc, dt, n, pos0, d_pos,
                            d_pos ? cm->spec.max_ctx : pos0 + n, c->n_heads, c->n_kv_heads, hd,
                            cm->att_scratch, bs),
       "attention");
    CK(wd_cuda_matmul(cm->blas, cm->h, cm->att, L->wo, L->wo_dt, n, H, qd), "o projection");
    CK(wd_cuda_add(cm->x, cm->h, (size_t)n * H, bs), "residual");
    wd_cuda_nvtx_pop();
    snprintf(name, sizeof name, "L%d/bs/router", l);
    wd_cuda_nvtx_push(name);
    CK(wd_cuda_rmsnorm(cm->xb, cm->x, L->ffn_norm, n, H, c->rms_eps, bs), "rmsnorm");
    CK(wd_cuda_matmul(cm->blas, cm->rlogits, cm->xb, L->gate, L->gate_dt, n, E, H), "router");
    CK(wd_cuda_router(cm->rbuf, (int *)(cm->rbuf + (size_t)n * E), cm->rbuf + (size_t)n * (E + K),
                      cm->rlogits, n, E, K, bs),
       "top-k");
    CK((int)cudaMemcpyAsync(cm->h_rbuf, cm->rbuf, (size_t)n * (E + 2 * K) * 4,
                            cudaMemcpyDeviceToHost, bs),
       "router download");
    wd_cuda_nvtx_pop();
    return 0;
}

/* How the expert part is enqueued: launch by launch (link delays are values,
   a zero one adds no kernel), or captured into a graph without delays, or
   with delay kernels reading their nanoseconds from the selection upload. */
enum { XM_DIRECT = 0, XM_GRAPH = 1, XM_GRAPH_DELAYS = 2 };

/* Enqueue the experts of the devices of GPU p for layer l (n tokens, tokens
 * per expert in count, rows/scales in p->sbuf, inputs in p->xb): each used
 * device waits for p->ev_ready, clears its output, runs its experts (link
 * delays before the first and after the last, timing events around all of
 * them), and records its done event. */
static int run_part(wd_cuda_model *cm, gpu_part *p, int l, int n, const int *count,
                    const uint64_t *dl, const uint64_t *ul, int mode, char *err, size_t errlen) {
    int E = cm->cfg.n_experts, nd = cm->spec.n_devices;
    const int *rows = p->sbuf;
    const float *scales = (const float *)(p->sbuf + (size_t)E * n);
    const uint64_t *d_delay = (const uint64_t *)(p->sbuf + (size_t)2 * E * n);
    CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
    for (int k = 0; k < p->n_local; k++) {
        int d = p->ids[k], tokens = 0;
        for (int e = d; e < E; e += nd) tokens += count[e];
        if (!tokens) continue;
        cudaStream_t ds = (cudaStream_t)wd_cuda_devset_stream(p->devs, k);
        CK((int)cudaStreamWaitEvent(ds, p->ev_ready, 0), "stream wait");
        CK((int)cudaMemsetAsync(cm->ybuf[d], 0, (size_t)n * cm->cfg.hidden * 4, ds), "memset");
        int first = 1, remaining = tokens;
        for (int e = d; e < E; e += nd) {
            if (!count[e]) continue;
            remaining -= count[e];
            wd_cuda_link_delay down = {0, NULL}, up = {0, NULL};
            if (mode == XM_GRAPH_DELAYS) { /* read on the device at replay */
                if (first) down.d_ns = d_delay + d;
                if (!remaining) up.d_ns = d_delay + nd + d;
            } else if (mode == XM_DIRECT) { /* zero: no delay kernel */
                down.ns = first ? dl[d] : 0;
                up.ns = remaining ? 0 : ul[d];
            }
            int timing = (first ? WD_TIME_START : 0) | (remaining ? 0 : WD_TIME_END);
            CK(wd_cuda_devset_expert_call_at(p->devs, k, l, &cm->layers[l].experts[e], cm->ybuf[d],
                                             p->xb, rows + (size_t)e * n, scales + (size_t)e * n,
                                             count[e], 1, down, up, timing),
               "expert");
            first = 0;
        }
        CK((int)cudaEventRecord(wd_cuda_devset_done_event(p->devs, k), ds), "event");
    }
    return 0;
}

/* the devices of GPU g (global) with tokens in this layer */
static int gpu_has_tokens(const wd_cuda_model *cm, int g) {
    for (int d = g; d < cm->spec.n_devices; d += cm->G)
        if (cm->h_dev_tokens[d]) return 1;
    return 0;
}

/* ---- the expert part of layer l on rank 0: selection upload, inputs to the
 * other GPUs, experts, outputs back, combine into the residual ---- */
static int experts_layer(wd_cuda_model *cm, int l, int n, int mode, char *err, size_t errlen) {
    int H = cm->cfg.hidden, nd = cm->spec.n_devices, G = cm->G;
    cudaStream_t bs = cm->bs;
    gpu_part *bsp = &cm->parts[0];
    CK((int)cudaMemcpyAsync(cm->sbuf, cm->h_sbuf, sel_bytes(cm, n), cudaMemcpyHostToDevice, bs),
       "selection upload");
    CK((int)cudaEventRecord(bsp->ev_ready, bs), "event");
    for (int g = 0; g < G; g++) cm->gpu_used[g] = gpu_has_tokens(cm, g);
#ifdef WD_HAVE_NCCL
    size_t sel_ints = sel_bytes(cm, n) / 4;
    if (G > 1) {
        int E = cm->cfg.n_experts;
        if (G > cm->L) { /* the control message for the other processes */
            int64_t *c = cm->h_ctl;
            c[0] = CTL_RUN;
            c[1] = l;
            c[2] = n;
            for (int e = 0; e < E; e++) c[CTL_HEAD + e] = cm->h_count[e];
            for (int d = 0; d < nd; d++) {
                c[CTL_HEAD + E + d] = (int64_t)cm->h_dl[d];
                c[CTL_HEAD + E + nd + d] = (int64_t)cm->h_ul[d];
            }
            CK((int)cudaMemcpyAsync(cm->d_ctl, c, ctl_words(cm) * 8, cudaMemcpyHostToDevice, bs),
               "control upload");
        }
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int g = 1; g < G; g++) {
            gpu_part *p = gpu_local(cm, g);
            if (!p) NKG(ncclSend(cm->d_ctl, ctl_words(cm), ncclInt64, g, bsp->comm, bs), "send");
            if (!cm->gpu_used[g]) continue;
            NKG(ncclSend(cm->xb, (size_t)n * H, ncclFloat32, g, bsp->comm, bs), "send");
            NKG(ncclSend(cm->sbuf, sel_ints, ncclInt32, g, bsp->comm, bs), "send");
            if (p) {
                NKG(ncclRecv(p->xb, (size_t)n * H, ncclFloat32, 0, p->comm, p->port), "recv");
                NKG(ncclRecv(p->sbuf, sel_ints, ncclInt32, 0, p->comm, p->port), "recv");
            }
        }
        NK(ncclGroupEnd(), "ncclGroupEnd (inputs)");
        for (int i = 1; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            if (!cm->gpu_used[p->global]) continue;
            CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
            CK((int)cudaEventRecord(p->ev_ready, p->port), "event");
        }
    }
#endif
    for (int i = 0; i < cm->L; i++)
        if (cm->gpu_used[cm->parts[i].global] &&
            run_part(cm, &cm->parts[i], l, n, cm->h_count, cm->h_dl, cm->h_ul, mode, err, errlen))
            return -1;
    /* join: the BS waits for its own devices, every other GPU's port for its */
    for (int d = 0; d < nd; d++) {
        if (!cm->h_dev_tokens[d]) continue;
        gpu_part *p = gpu_local(cm, dev_gpu(cm, d));
        if (!p) continue;
        CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
        CK((int)cudaStreamWaitEvent(p->port, wd_cuda_devset_done_event(p->devs, dev_index(cm, d)), 0),
           "stream wait");
    }
    CK((int)cudaSetDevice(bsp->ordinal), "cudaSetDevice");
#ifdef WD_HAVE_NCCL
    if (G > 1) {
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int d = 0; d < nd; d++) {
            int g = dev_gpu(cm, d);
            if (!cm->h_dev_tokens[d] || g == 0) continue;
            gpu_part *p = gpu_local(cm, g);
            if (p) NKG(ncclSend(cm->ybuf[d], (size_t)n * H, ncclFloat32, 0, p->comm, p->port), "send");
            NKG(ncclRecv(cm->yrecv[d], (size_t)n * H, ncclFloat32, g, bsp->comm, bs), "recv");
        }
        NK(ncclGroupEnd(), "ncclGroupEnd (outputs)");
    }
#endif
    const float *srcs[64];
    int n_src = 0;
    for (int d = 0; d < nd; d++)
        if (cm->h_dev_tokens[d]) srcs[n_src++] = dev_gpu(cm, d) == 0 ? cm->ybuf[d] : cm->yrecv[d];
    CK(wd_cuda_combine(cm->x, srcs, n_src, n, H, bs), "combine");
#ifdef WD_HAVE_NCCL
    if (G > cm->L) { /* expert seconds measured by the other processes */
        int any = 0;
        for (int g = cm->L; g < G; g++) any |= cm->gpu_used[g];
        if (any) {
            NK(ncclGroupStart(), "ncclGroupStart");
            for (int g = cm->L; g < G; g++)
                if (cm->gpu_used[g])
                    NKG(ncclRecv(cm->d_tim + (size_t)g * cm->kmax, cm->kmax, ncclFloat64, g,
                                bsp->comm, bs),
                       "recv");
            NK(ncclGroupEnd(), "ncclGroupEnd (timing)");
            CK((int)cudaMemcpyAsync(cm->h_tim, cm->d_tim, (size_t)G * cm->kmax * 8,
                                    cudaMemcpyDeviceToHost, bs),
               "timing download");
        }
    }
#endif
    return 0;
}

/* Capture fn's work on the BS stream into an executable graph. */
typedef int (*capture_fn)(wd_cuda_model *cm, int l, char *err, size_t errlen);
static int capture(wd_cuda_model *cm, int l, capture_fn fn, cudaGraphExec_t *exec, char *err,
                   size_t errlen) {
    cudaGraph_t g = NULL;
    CK((int)cudaStreamBeginCapture(cm->bs, cudaStreamCaptureModeThreadLocal), "begin capture");
    int rc = fn(cm, l, err, errlen);
    cudaError_t e = cudaStreamEndCapture(cm->bs, &g);
    if (rc) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        return -1;
    }
    if (e != cudaSuccess) return fail(err, errlen, "graph capture", (int)e);
    e = cudaGraphInstantiate(exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return fail(err, errlen, "graph instantiation", (int)e);
    return 0;
}
static int bs_capture(wd_cuda_model *cm, int l, char *err, size_t errlen) {
    return bs_layer(cm, l, 1, 0, cm->d_pos, err, errlen);
}
static int experts_capture(wd_cuda_model *cm, int l, char *err, size_t errlen) {
    return experts_layer(cm, l, 1, cm->cap_mode, err, errlen);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

extern "C" void wd_cuda_model_profile(const wd_cuda_model *cm, wd_cuda_profile *out) {
    *out = cm->prof;
}
extern "C" void wd_cuda_model_profile_reset(wd_cuda_model *cm) {
    memset(&cm->prof, 0, sizeof cm->prof);
}

/* One chunk of at most max_batch tokens. */
static int forward_chunk(wd_cuda_model *cm, const int *tokens, int n, float *logits,
                         int all_logits, const wd_moe_hooks *hooks,
                         const wd_cuda_timing_hooks *timing, char *err, size_t errlen) {
    const wd_config *c = &cm->cfg;
    int H = c->hidden, E = c->n_experts, V = c->vocab, K = c->top_k, nd = cm->spec.n_devices;
    int pos0 = cm->pos;
    cudaStream_t bs = cm->bs;
    int graph = cm->graphs && n == 1;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= V) {
            snprintf(err, errlen, "kernels/cuda/model.cu: token id %d outside the vocab (%d)",
                     tokens[t], V);
            return -1;
        }
    CK((int)cudaSetDevice(cm->parts[0].ordinal), "cudaSetDevice");
    memcpy(cm->h_tok, tokens, (size_t)n * 4);
    *cm->h_pos = pos0;
    CK((int)cudaMemcpyAsync(cm->tokens, cm->h_tok, (size_t)n * 4, cudaMemcpyHostToDevice, bs),
       "token upload");
    CK((int)cudaMemcpyAsync(cm->d_pos, cm->h_pos, sizeof(int), cudaMemcpyHostToDevice, bs),
       "position upload");
    CK(wd_cuda_embed(cm->x, cm->embed, cm->embed_dt, cm->tokens, n, H, bs), "embedding");
    wd_cuda_profile *pf = &cm->prof;
    double t_prev, t_now;
#define LAP(field) (t_now = now_s(), pf->field += t_now - t_prev, t_prev = t_now)
    for (int l = 0; l < c->n_layers; l++) {
        t_prev = now_s();
        if (graph) {
            if (!cm->bs_graph[l] && capture(cm, l, bs_capture, &cm->bs_graph[l], err, errlen))
                return -1;
            CK((int)cudaGraphLaunch(cm->bs_graph[l], bs), "graph launch");
        } else if (bs_layer(cm, l, n, pos0, NULL, err, errlen)) {
            return -1;
        }
        LAP(launch_bs);
        CK((int)cudaStreamSynchronize(bs), "router");
        LAP(wait_router);
        const float *h_probs = cm->h_rbuf;
        const int *h_ridx = (const int *)(cm->h_rbuf + (size_t)n * E);
        const float *h_rweights = cm->h_rbuf + (size_t)n * (E + K);
        int *h_rows = cm->h_sbuf;
        float *h_scales = (float *)(cm->h_sbuf + (size_t)E * n);
        uint64_t *h_delay = (uint64_t *)(cm->h_sbuf + (size_t)2 * E * n);

        /* selection: the model's top-k, then the hook */
        wd_selection sel = {n, E, cm->h_sel_n, cm->h_sel_expert, cm->h_sel_weight};
        for (int t = 0; t < n; t++) {
            sel.n[t] = K;
            for (int j = 0; j < K; j++) {
                sel.expert[t * E + j] = h_ridx[t * K + j];
                sel.weight[t * E + j] = h_rweights[t * K + j];
            }
        }
        if (hooks && hooks->select && hooks->select(hooks->ctx, l, pos0, h_probs, &sel))
            return fail(err, errlen, "the selection hook aborted", 0);
        /* group tokens by expert: rows/scales of expert e at [e*n ...] */
        memset(cm->h_count, 0, (size_t)E * 4);
        uint64_t mask = 0;
        for (int t = 0; t < n; t++) {
            if (sel.n[t] < 0 || sel.n[t] > E)
                return fail(err, errlen, "the selection hook chose an invalid expert count", 0);
            for (int j = 0; j < sel.n[t]; j++) {
                int e = sel.expert[t * E + j];
                if (e < 0 || e >= E)
                    return fail(err, errlen, "the selection hook chose an invalid expert", 0);
                int i = cm->h_count[e]++;
                if (i >= n) return fail(err, errlen, "the selection hook repeated an expert", 0);
                h_rows[e * n + i] = t;
                h_scales[e * n + i] = sel.weight[t * E + j];
                if (e < 64) mask |= 1ull << e;
            }
        }
        for (int d = 0; d < nd; d++) {
            cm->h_dev_tokens[d] = 0;
            cm->h_dl[d] = cm->h_ul[d] = 0;
        }
        for (int e = 0; e < E; e++) cm->h_dev_tokens[e % nd] += cm->h_count[e];
        for (int d = 0; d < nd; d++)
            if (cm->spec.realtime && timing && timing->link_delays && cm->h_dev_tokens[d])
                timing->link_delays(timing->ctx, l, d, cm->h_dev_tokens[d], &cm->h_dl[d],
                                    &cm->h_ul[d]);
        for (int d = 0; d < nd; d++) {
            h_delay[d] = cm->h_dl[d];
            h_delay[nd + d] = cm->h_ul[d];
        }
        LAP(select);
        /* experts: a cached graph for this chosen set, or launch by launch */
        cudaGraphExec_t xexec = NULL;
        if (graph) {
            int delays = cm->spec.realtime && timing && timing->link_delays;
            expert_graph *xg = cm->xg + (size_t)l * WD_GRAPH_SETS;
            for (int j = 0; j < cm->xg_n[l] && !xexec; j++)
                if (xg[j].key == mask && xg[j].delays == delays) xexec = xg[j].exec;
            if (!xexec && cm->xg_n[l] < WD_GRAPH_SETS) {
                cm->cap_mode = delays ? XM_GRAPH_DELAYS : XM_GRAPH;
                if (capture(cm, l, experts_capture, &xg[cm->xg_n[l]].exec, err, errlen))
                    return -1;
                xg[cm->xg_n[l]].key = mask;
                xg[cm->xg_n[l]].delays = delays;
                xexec = xg[cm->xg_n[l]++].exec;
            }
        }
        if (xexec) {
            CK((int)cudaGraphLaunch(xexec, bs), "graph launch");
        } else if (experts_layer(cm, l, n, XM_DIRECT, err, errlen)) {
            if (cm->G > 1) cm->broken = 1; /* the other GPUs may be mid-exchange */
            return -1;
        }
        LAP(launch_experts);
        if (timing && timing->expert_times) {
            if (cm->G > cm->L) CK((int)cudaStreamSynchronize(bs), "timing");
            for (int d = 0; d < nd; d++) {
                cm->h_seconds[d] = -1.0;
                if (!cm->h_dev_tokens[d]) continue;
                int g = dev_gpu(cm, d);
                gpu_part *p = gpu_local(cm, g);
                cm->h_seconds[d] =
                    p ? wd_cuda_devset_last_expert_seconds(p->devs, dev_index(cm, d))
                      : cm->h_tim[(size_t)g * cm->kmax + dev_index(cm, d)];
            }
            if (timing->expert_times(timing->ctx, l, cm->h_seconds, nd))
                return fail(err, errlen, "the timing hook aborted", 0);
        }
        LAP(timing);
        pf->layers++;
    }
    double t_layers_end = now_s();
    if (logits) {
        int n_out = all_logits ? n : 1;
        const float *xin = all_logits ? cm->x : cm->x + (size_t)(n - 1) * H;
        CK(wd_cuda_rmsnorm(cm->xb, xin, cm->norm, n_out, H, c->rms_eps, bs), "final norm");
        CK(wd_cuda_matmul(cm->blas, cm->logits, cm->xb, cm->lm_head, cm->lm_dt, n_out, V, H),
           "lm head");
        CK((int)cudaMemcpyAsync(logits, cm->logits, (size_t)n_out * V * 4, cudaMemcpyDeviceToHost,
                                bs),
           "logits download");
    }
    CK((int)cudaStreamSynchronize(bs), "forward");
#undef LAP
    double t_end = now_s();
    pf->tail += t_end - t_layers_end;
    pf->forwards++;
    cm->pos += n;
    return 0;
}

extern "C" int wd_cuda_model_forward(wd_cuda_model *cm, const int *tokens, int n, float *logits,
                                     int all_logits, const wd_moe_hooks *hooks,
                                     const wd_cuda_timing_hooks *timing, char *err,
                                     size_t errlen) {
    if (cm->rank != 0) return fail(err, errlen, "forward runs on rank 0 (others serve)", 0);
    if (cm->broken)
        return fail(err, errlen, "an earlier GPU or NCCL error left the GPUs out of step; free the model", 0);
    if (n <= 0) return fail(err, errlen, "no tokens", 0);
    if (cm->pos + n > cm->spec.max_ctx) {
        snprintf(err, errlen, "kernels/cuda/model.cu: %d tokens at position %d exceed the KV cache (%d)",
                 n, cm->pos, cm->spec.max_ctx);
        return -1;
    }
    int B = cm->spec.max_batch, V = cm->cfg.vocab;
    for (int t0 = 0; t0 < n; t0 += B) {
        int m = n - t0 < B ? n - t0 : B;
        int last = t0 + m == n;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)t0 * V;
        else if (logits && last) lg = logits;
        if (forward_chunk(cm, tokens + t0, m, lg, all_logits, hooks, timing, err, errlen))
            return -1;
    }
    return 0;
}

/* ---- the other ranks of a multi-process run ---------------------------------------- */
static void send_quit(wd_cuda_model *cm) {
#ifdef WD_HAVE_NCCL
    if (cm->rank != 0 || cm->G <= cm->L || !cm->h_ctl || !cm->d_ctl || !cm->parts ||
        !cm->parts[0].comm)
        return;
    cudaSetDevice(cm->parts[0].ordinal);
    memset(cm->h_ctl, 0, ctl_words(cm) * 8);
    cm->h_ctl[0] = CTL_QUIT;
    if (cudaMemcpyAsync(cm->d_ctl, cm->h_ctl, ctl_words(cm) * 8, cudaMemcpyHostToDevice, cm->bs))
        return;
    if (ncclGroupStart() != ncclSuccess) return;
    for (int g = cm->L; g < cm->G; g++)
        ncclSend(cm->d_ctl, ctl_words(cm), ncclInt64, g, cm->parts[0].comm, cm->bs);
    ncclGroupEnd();
    cudaStreamSynchronize(cm->bs);
#else
    (void)cm;
#endif
}

static int serve_loop(wd_cuda_model *cm, int *layers_served, char *err, size_t errlen);

extern "C" int wd_cuda_model_serve(wd_cuda_model *cm, int *layers_served, char *err,
                                   size_t errlen) {
    if (layers_served) *layers_served = 0;
    if (cm->rank == 0) return fail(err, errlen, "rank 0 drives the run; serve is for the others", 0);
    if (cm->broken) return fail(err, errlen, "an earlier error left this rank out of step", 0);
    int rc = serve_loop(cm, layers_served, err, errlen);
    if (rc) cm->broken = 1;
    return rc;
}

static int serve_loop(wd_cuda_model *cm, int *layers_served, char *err, size_t errlen) {
#ifdef WD_HAVE_NCCL
    int E = cm->cfg.n_experts, H = cm->cfg.hidden, nd = cm->spec.n_devices;
    size_t cw = ctl_words(cm);
    for (;;) {
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int i = 0; i < cm->L; i++)
            NKG(ncclRecv(cm->parts[i].d_ctl, cw, ncclInt64, 0, cm->parts[i].comm, cm->parts[i].port),
               "recv");
        NK(ncclGroupEnd(), "ncclGroupEnd (control)");
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
            CK((int)cudaMemcpyAsync(p->h_ctl, p->d_ctl, cw * 8, cudaMemcpyDeviceToHost, p->port),
               "control download");
            CK((int)cudaStreamSynchronize(p->port), "control");
        }
        const int64_t *c = cm->parts[0].h_ctl;
        if (c[0] == CTL_QUIT) return 0;
        int l = (int)c[1], n = (int)c[2];
        if (c[0] != CTL_RUN || l < 0 || l >= cm->cfg.n_layers || n <= 0 || n > cm->spec.max_batch)
            return fail(err, errlen, "a control message from rank 0 is not valid", 0);
        for (int e = 0; e < E; e++) {
            if (c[CTL_HEAD + e] < 0 || c[CTL_HEAD + e] > n)
                return fail(err, errlen, "a control message from rank 0 is not valid", 0);
            cm->h_count[e] = (int)c[CTL_HEAD + e];
        }
        for (int d = 0; d < nd; d++) {
            cm->h_dl[d] = (uint64_t)c[CTL_HEAD + E + d];
            cm->h_ul[d] = (uint64_t)c[CTL_HEAD + E + nd + d];
            cm->h_dev_tokens[d] = 0;
        }
        for (int e = 0; e < E; e++) cm->h_dev_tokens[e % nd] += cm->h_count[e];
        size_t sel_ints = sel_bytes(cm, n) / 4;
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            p->used = gpu_has_tokens(cm, p->global);
            if (!p->used) continue;
            NKG(ncclRecv(p->xb, (size_t)n * H, ncclFloat32, 0, p->comm, p->port), "recv");
            NKG(ncclRecv(p->sbuf, sel_ints, ncclInt32, 0, p->comm, p->port), "recv");
        }
        NK(ncclGroupEnd(), "ncclGroupEnd (inputs)");
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            if (!p->used) continue;
            CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
            CK((int)cudaEventRecord(p->ev_ready, p->port), "event");
            if (run_part(cm, p, l, n, cm->h_count, cm->h_dl, cm->h_ul, XM_DIRECT, err, errlen))
                return -1;
            for (int k = 0; k < p->n_local; k++)
                if (cm->h_dev_tokens[p->ids[k]])
                    CK((int)cudaStreamWaitEvent(p->port, wd_cuda_devset_done_event(p->devs, k), 0),
                       "stream wait");
        }
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            for (int k = 0; p->used && k < p->n_local; k++)
                if (cm->h_dev_tokens[p->ids[k]])
                    NKG(ncclSend(cm->ybuf[p->ids[k]], (size_t)n * H, ncclFloat32, 0, p->comm,
                                p->port),
                       "send");
        }
        NK(ncclGroupEnd(), "ncclGroupEnd (outputs)");
        /* the measured expert seconds follow the outputs */
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            if (!p->used) continue;
            for (int k = 0; k < cm->kmax; k++)
                p->h_tim[k] = k < p->n_local && cm->h_dev_tokens[p->ids[k]]
                                  ? wd_cuda_devset_last_expert_seconds(p->devs, k)
                                  : -1.0;
            CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
            CK((int)cudaMemcpyAsync(p->d_tim, p->h_tim, (size_t)cm->kmax * 8,
                                    cudaMemcpyHostToDevice, p->port),
               "timing upload");
        }
        NK(ncclGroupStart(), "ncclGroupStart");
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            if (p->used)
                NKG(ncclSend(p->d_tim, cm->kmax, ncclFloat64, 0, p->comm, p->port), "send");
        }
        NK(ncclGroupEnd(), "ncclGroupEnd (timing)");
        for (int i = 0; i < cm->L; i++) {
            gpu_part *p = &cm->parts[i];
            if (!p->used) continue;
            CK((int)cudaSetDevice(p->ordinal), "cudaSetDevice");
            CK((int)cudaStreamSynchronize(p->port), "layer");
        }
        if (layers_served) ++*layers_served;
    }
#else
    (void)cm;
    (void)layers_served;
    return fail(err, errlen, "a multi-process run needs NCCL, which this build does not have", 0);
#endif
}
