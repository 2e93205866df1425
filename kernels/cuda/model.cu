/* The GPU model runner: a host wd_model uploaded to one GPU (weights BF16 or
 * F32, norms F32, KV cache in the weights' dtype), decode and prefill with the
 * MoE split of host.h: the BS part of each layer (attention, router) on the BS
 * stream, router probabilities copied to the host where the selection hook
 * picks experts per token, experts on the emulated devices' streams (timed
 * with events; link delays injected in real-time mode), then a deterministic
 * combine on the BS stream. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

#define WD_STAGE_BYTES (64u << 20)

typedef struct {
    float *attn_norm, *ffn_norm;
    void *wq, *wk, *wv, *wo, *gate;
    wd_cuda_expert *experts;
    void *kc, *vc;
} gpu_layer;

struct wd_cuda_model {
    wd_config cfg;
    wd_cuda_model_spec spec;
    wd_dtype dt;
    int pos;
    size_t weight_bytes;
    void *embed, *lm_head;
    float *norm;
    gpu_layer *layers;
    /* activations [max_batch][...] */
    float *x, *xb, *q, *k, *v, *att, *h, *rlogits, *logits;
    float *rbuf; /* router output [n][E] probs, [n][K] ids, [n][K] weights (one download) */
    int *tokens;
    int *sbuf;   /* selection: [E][n] rows, [E][n] scales (one upload) */
    float **ybuf; /* per device [max_batch][H] */
    void *att_scratch;
    cudaStream_t bs;
    cudaEvent_t ev_ready;  /* BS: inputs of the experts are ready */
    cudaEvent_t *ev_done;  /* per device: its experts are done */
    wd_cuda_blas *blas;
    wd_cuda_devset *devs;
    /* host side */
    float *h_rbuf; /* pinned mirrors of rbuf, sbuf */
    int *h_sbuf;
    int *h_sel_n, *h_sel_expert, *h_count, *h_dev_tokens;
    float *h_sel_weight;
    double *h_seconds;
    /* chunked upload */
    void *stage_host, *stage_dev;
};

extern "C" void wd_cuda_model_spec_default(wd_cuda_model_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->dtype = WD_DT_BF16;
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

static int64_t numel(const wd_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Upload tensor t (F32/F16/BF16, mapped on the host) as n elements of dtype dt
 * into a new device buffer: chunks through the pinned staging buffer, converted
 * on the GPU. No full host copy is made. */
static int upload_tensor(wd_cuda_model *cm, void **out, const wd_tensor *t, int64_t n, wd_dtype dt,
                         char *err, size_t errlen) {
    if (!t) return fail(err, errlen, "a tensor the model needs is missing", 0);
    if (numel(t) != n) {
        snprintf(err, errlen, "kernels/cuda/model.cu: tensor %s has %lld elements, expected %lld",
                 t->name ? t->name : "?", (long long)numel(t), (long long)n);
        return -1;
    }
    if (t->dtype != WD_DT_F32 && t->dtype != WD_DT_F16 && t->dtype != WD_DT_BF16) {
        snprintf(err, errlen, "kernels/cuda/model.cu: tensor %s: dtype %s not supported on the GPU",
                 t->name ? t->name : "?", wd_dtype_name(t->dtype));
        return -1;
    }
    size_t esrc = wd_dtype_bytes(t->dtype, 1), edst = wd_dtype_bytes(dt, 1);
    void *d = wd_cuda_malloc((size_t)n * edst);
    if (!d) {
        snprintf(err, errlen, "kernels/cuda/model.cu: out of GPU memory for %s (%.1f MB)",
                 t->name ? t->name : "?", n * (double)edst / 1e6);
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
                                      cudaMemcpyHostToDevice, cm->bs);
        } else {
            rc = (int)cudaMemcpyAsync(cm->stage_dev, cm->stage_host, m * esrc,
                                      cudaMemcpyHostToDevice, cm->bs);
            if (!rc)
                rc = wd_cuda_convert((char *)d + (size_t)i0 * edst, dt, cm->stage_dev, t->dtype, m,
                                     cm->bs);
        }
        if (!rc) rc = (int)cudaStreamSynchronize(cm->bs); /* the staging buffer is reused */
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

extern "C" void wd_cuda_model_free(wd_cuda_model *cm) {
    if (!cm) return;
    if (cm->bs) cudaStreamSynchronize(cm->bs);
    wd_cuda_devset_free(cm->devs);
    wd_cuda_blas_free(cm->blas);
    const wd_config *c = &cm->cfg;
    for (int l = 0; cm->layers && l < c->n_layers; l++) {
        gpu_layer *L = &cm->layers[l];
        cudaFree(L->attn_norm);
        cudaFree(L->ffn_norm);
        cudaFree(L->wq);
        cudaFree(L->wk);
        cudaFree(L->wv);
        cudaFree(L->wo);
        cudaFree(L->gate);
        cudaFree(L->kc);
        cudaFree(L->vc);
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
    void *bufs[] = {cm->x,     cm->xb,     cm->q,      cm->k,      cm->v,           cm->att,
                    cm->h,     cm->rlogits, cm->rbuf, cm->logits, cm->tokens, cm->sbuf,
                    cm->att_scratch, cm->stage_dev};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    for (int d = 0; cm->ybuf && d < cm->spec.n_devices; d++) cudaFree(cm->ybuf[d]);
    free(cm->ybuf);
    if (cm->stage_host) cudaFreeHost(cm->stage_host);
    if (cm->bs) cudaStreamDestroy(cm->bs);
    if (cm->h_rbuf) cudaFreeHost(cm->h_rbuf);
    if (cm->h_sbuf) cudaFreeHost(cm->h_sbuf);
    if (cm->ev_ready) cudaEventDestroy(cm->ev_ready);
    for (int d = 0; cm->ev_done && d < cm->spec.n_devices; d++)
        if (cm->ev_done[d]) cudaEventDestroy(cm->ev_done[d]);
    free(cm->ev_done);
    free(cm->h_sel_n);
    free(cm->h_sel_expert);
    free(cm->h_sel_weight);
    free(cm->h_count);
    free(cm->h_dev_tokens);
    free(cm->h_seconds);
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

static int random_tensor(wd_cuda_model *cm, void **out, int64_t n, wd_dtype dt, float scale,
                         float offset, uint64_t seed, char *err, size_t errlen) {
    size_t es = wd_dtype_bytes(dt, 1);
    void *d = wd_cuda_malloc((size_t)n * es);
    if (!d) {
        snprintf(err, errlen, "kernels/cuda/model.cu: out of GPU memory (%.1f GB of weights so far)",
                 cm->weight_bytes / 1e9);
        return -1;
    }
    unsigned blocks = wd_blocks((size_t)n, 256);
    if (blocks > 65536) blocks = 65536;
    if (dt == WD_DT_F32)
        random_fill_kernel<<<blocks, 256, 0, cm->bs>>>((float *)d, (size_t)n, seed, scale, offset);
    else
        random_fill_kernel<<<blocks, 256, 0, cm->bs>>>((__nv_bfloat16 *)d, (size_t)n, seed, scale,
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

static int model_create(wd_cuda_model **out, const wd_config *cfg, const wd_model *m,
                        uint64_t seed, const wd_cuda_model_spec *spec_in, char *log,
                        size_t loglen, char *err, size_t errlen) {
    *out = NULL;
    if (wd_cuda_device_count() <= 0) return fail(err, errlen, "no CUDA device", 0);
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
    if (spec.max_ctx <= 0) spec.max_ctx = c->max_pos > 0 ? c->max_pos : 2048;
    if (spec.max_batch <= 0) spec.max_batch = 512;
    if (spec.n_devices <= 0) spec.n_devices = c->n_experts;
    if (spec.n_devices > 64) return fail(err, errlen, "at most 64 emulated devices", 0);
    if (cudaSetDevice(spec.gpu) != cudaSuccess) return fail(err, errlen, "cudaSetDevice failed", 1);

    wd_cuda_model *cm = (wd_cuda_model *)calloc(1, sizeof *cm);
    if (!cm) return fail(err, errlen, "out of host memory", 0);
    cm->cfg = *c;
    cm->spec = spec;
    cm->dt = spec.dtype;
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int F = c->ffn, E = c->n_experts, B = spec.max_batch, V = c->vocab;
    int rc = (int)cudaStreamCreateWithPriority(&cm->bs, cudaStreamNonBlocking, 0);
    if (rc) {
        wd_cuda_model_free(cm);
        return fail(err, errlen, "cannot create the BS stream", rc);
    }
    if (cudaMallocHost(&cm->stage_host, WD_STAGE_BYTES) != cudaSuccess) {
        cm->stage_host = NULL;
        wd_cuda_model_free(cm);
        return fail(err, errlen, "cannot allocate the pinned staging buffer", 1);
    }
    int ok = 1;
    cm->stage_dev = dalloc(WD_STAGE_BYTES, &ok);
    if (!ok) {
        wd_cuda_model_free(cm);
        return fail(err, errlen, "out of GPU memory", 0);
    }

    /* weights */
    wd_dtype dt = cm->dt;
    cm->layers = (gpu_layer *)calloc((size_t)c->n_layers, sizeof(gpu_layer));
    if (!cm->layers) {
        wd_cuda_model_free(cm);
        return fail(err, errlen, "out of host memory", 0);
    }
    /* UP: upload a host tensor, or (m == NULL) generate it on the GPU with
       uniform values of the given scale (norm weights: 1 +- 0.1) */
    uint64_t seq = 0;
#define UP(dst, t, n, dty, rscale, roff)                                                      \
    do {                                                                                      \
        void *p_ = NULL;                                                                      \
        int rc_ = m ? upload_tensor(cm, &p_, m ? (t) : NULL, (n), (dty), err, errlen)         \
                    : random_tensor(cm, &p_, (n), (dty), (rscale), (roff), seed + 7919 * ++seq, \
                                    err, errlen);                                             \
        if (rc_) {                                                                            \
            wd_cuda_model_free(cm);                                                           \
            return -1;                                                                        \
        }                                                                                     \
        dst = (decltype(dst))p_;                                                              \
    } while (0)
    float sH = 1.7f / sqrtf((float)H), sQ = 1.7f / sqrtf((float)qd), sF = 1.7f / sqrtf((float)F);
    UP(cm->embed, m->embed, (int64_t)V * H, dt, 1.0f, 0.0f);
    if (m ? (!m->lm_head || m->lm_head == m->embed) : c->tie_embeddings)
        cm->lm_head = cm->embed;
    else
        UP(cm->lm_head, m->lm_head, (int64_t)V * H, dt, sH, 0.0f);
    UP(cm->norm, m->norm, H, WD_DT_F32, 0.1f, 1.0f);
    for (int l = 0; l < c->n_layers; l++) {
        const wd_layer *hl = m ? &m->layers[l] : NULL;
        gpu_layer *L = &cm->layers[l];
        UP(L->attn_norm, hl->attn_norm, H, WD_DT_F32, 0.1f, 1.0f);
        UP(L->ffn_norm, hl->ffn_norm, H, WD_DT_F32, 0.1f, 1.0f);
        UP(L->wq, hl->wq, (int64_t)qd * H, dt, sH, 0.0f);
        UP(L->wk, hl->wk, (int64_t)kvd * H, dt, sH, 0.0f);
        UP(L->wv, hl->wv, (int64_t)kvd * H, dt, sH, 0.0f);
        UP(L->wo, hl->wo, (int64_t)H * qd, dt, sQ, 0.0f);
        UP(L->gate, hl->gate, (int64_t)E * H, dt, 3 * sH, 0.0f);
        L->experts = (wd_cuda_expert *)calloc((size_t)E, sizeof(wd_cuda_expert));
        if (!L->experts) {
            wd_cuda_model_free(cm);
            return fail(err, errlen, "out of host memory", 0);
        }
        for (int e = 0; e < E; e++) {
            wd_cuda_expert *x = &L->experts[e];
            x->dt = dt;
            x->hidden = H;
            x->ffn = F;
            UP(x->w1, hl->w1[e], (int64_t)F * H, dt, sH, 0.0f);
            UP(x->w3, hl->w3[e], (int64_t)F * H, dt, sH, 0.0f);
            UP(x->w2, hl->w2[e], (int64_t)H * F, dt, sF, 0.0f);
        }
        size_t cache = (size_t)spec.max_ctx * kvd * wd_dtype_bytes(dt, 1);
        L->kc = dalloc(cache, &ok);
        L->vc = dalloc(cache, &ok);
        if (!ok) {
            wd_cuda_model_free(cm);
            return fail(err, errlen, "out of GPU memory for the KV cache", 0);
        }
    }
#undef UP
    cudaFree(cm->stage_dev);
    cm->stage_dev = NULL;
    cudaFreeHost(cm->stage_host);
    cm->stage_host = NULL;

    /* activations */
    int wide = qd > H ? qd : H;
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
    cm->sbuf = (int *)dalloc((size_t)2 * E * B * 4, &ok);
    cm->att_scratch =
        dalloc(wd_cuda_attention_scratch_bytes(B, c->n_heads, spec.max_ctx, hd), &ok);
    int nd = spec.n_devices;
    cm->ybuf = (float **)calloc((size_t)nd, sizeof(float *));
    if (!cm->ybuf) ok = 0;
    for (int d = 0; ok && d < nd; d++) cm->ybuf[d] = (float *)dalloc((size_t)B * H * 4, &ok);
    if (!ok) {
        wd_cuda_model_free(cm);
        return fail(err, errlen, "out of GPU memory for activations", 0);
    }
    if (cudaMallocHost(&cm->h_rbuf, (size_t)B * 3 * E * 4) != cudaSuccess) cm->h_rbuf = NULL;
    if (cudaMallocHost(&cm->h_sbuf, (size_t)2 * E * B * 4) != cudaSuccess) cm->h_sbuf = NULL;
    cm->ev_done = (cudaEvent_t *)calloc((size_t)nd, sizeof(cudaEvent_t));
    int evok = cm->ev_done && cudaEventCreateWithFlags(&cm->ev_ready, cudaEventDisableTiming) == cudaSuccess;
    for (int d = 0; evok && d < nd; d++)
        evok = cudaEventCreateWithFlags(&cm->ev_done[d], cudaEventDisableTiming) == cudaSuccess;
    cm->h_sel_n = (int *)malloc((size_t)B * 4);
    cm->h_sel_expert = (int *)malloc((size_t)B * E * 4);
    cm->h_sel_weight = (float *)malloc((size_t)B * E * 4);
    cm->h_count = (int *)malloc((size_t)E * 4);
    cm->h_dev_tokens = (int *)malloc((size_t)nd * 4);
    cm->h_seconds = (double *)malloc((size_t)nd * sizeof(double));
    if (!evok || !cm->h_rbuf || !cm->h_sbuf ||
        !cm->h_sel_n || !cm->h_sel_expert || !cm->h_sel_weight || !cm->h_count ||
        !cm->h_dev_tokens || !cm->h_seconds) {
        wd_cuda_model_free(cm);
        return fail(err, errlen, "out of host memory", 0);
    }
    char berr[256];
    size_t maxel = (size_t)B * (size_t)(F > wide ? F : wide);
    cm->blas = wd_cuda_blas_create(cm->bs, maxel, berr, sizeof berr);
    if (!cm->blas) {
        wd_cuda_model_free(cm);
        snprintf(err, errlen, "%s", berr);
        return -1;
    }
    wd_cuda_devset_spec ds;
    memset(&ds, 0, sizeof ds);
    ds.n_devices = nd;
    ds.sm_count = spec.sm_count;
    ds.gpu = spec.gpu;
    ds.max_tokens = (size_t)B;
    ds.hidden = H;
    ds.ffn = F;
    cm->devs = wd_cuda_devset_create(&ds, log, loglen, err, errlen);
    if (!cm->devs) {
        wd_cuda_model_free(cm);
        return -1;
    }
    rc = (int)cudaDeviceSynchronize();
    if (rc) {
        wd_cuda_model_free(cm);
        return fail(err, errlen, "setup failed", rc);
    }
    if (log) {
        size_t used = strnlen(log, loglen);
        if (used + 1 < loglen)
            snprintf(log + used, loglen - used,
                     "cuda: model on GPU %d: %.2f GB of %s weights, KV cache %d positions, %d "
                     "emulated devices\n",
                     spec.gpu, cm->weight_bytes / 1e9, wd_dtype_name(dt), spec.max_ctx, nd);
    }
    *out = cm;
    return 0;
}

extern "C" size_t wd_cuda_model_weight_bytes(const wd_cuda_model *cm) { return cm->weight_bytes; }
extern "C" void wd_cuda_model_reset(wd_cuda_model *cm) { cm->pos = 0; }
extern "C" int wd_cuda_model_pos(const wd_cuda_model *cm) { return cm->pos; }
extern "C" wd_cuda_devset *wd_cuda_model_devices(wd_cuda_model *cm) { return cm->devs; }

#define CK(call, what)                                                                        \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_) return fail(err, errlen, what, rc_);                                         \
    } while (0)

/* One chunk of at most max_batch tokens. */
static int forward_chunk(wd_cuda_model *cm, const int *tokens, int n, float *logits,
                         int all_logits, const wd_moe_hooks *hooks,
                         const wd_cuda_timing_hooks *timing, char *err, size_t errlen) {
    const wd_config *c = &cm->cfg;
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int E = c->n_experts, V = c->vocab, K = c->top_k, nd = cm->spec.n_devices;
    int pos0 = cm->pos;
    cudaStream_t bs = cm->bs;
    wd_dtype dt = cm->dt;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= V) {
            snprintf(err, errlen, "kernels/cuda/model.cu: token id %d outside the vocab (%d)",
                     tokens[t], V);
            return -1;
        }
    CK((int)cudaMemcpyAsync(cm->tokens, tokens, (size_t)n * 4, cudaMemcpyHostToDevice, bs),
       "token upload");
    CK(wd_cuda_embed(cm->x, cm->embed, dt, cm->tokens, n, H, bs), "embedding");
    for (int l = 0; l < c->n_layers; l++) {
        gpu_layer *L = &cm->layers[l];
        char name[48];
        snprintf(name, sizeof name, "L%d/bs/attention", l);
        wd_cuda_nvtx_push(name);
        CK(wd_cuda_rmsnorm(cm->xb, cm->x, L->attn_norm, n, H, c->rms_eps, bs), "rmsnorm");
        CK(wd_cuda_matmul(cm->blas, cm->q, cm->xb, L->wq, dt, n, qd, H), "q projection");
        CK(wd_cuda_matmul(cm->blas, cm->k, cm->xb, L->wk, dt, n, kvd, H), "k projection");
        CK(wd_cuda_matmul(cm->blas, cm->v, cm->xb, L->wv, dt, n, kvd, H), "v projection");
        CK(wd_cuda_rope_kv(cm->q, cm->k, cm->v, L->kc, L->vc, dt, n, pos0, c->n_heads,
                           c->n_kv_heads, hd, c->rope_theta, bs),
           "rope");
        CK(wd_cuda_attention(cm->att, cm->q, L->kc, L->vc, dt, n, pos0, c->n_heads, c->n_kv_heads,
                             hd, cm->att_scratch, bs),
           "attention");
        CK(wd_cuda_matmul(cm->blas, cm->h, cm->att, L->wo, dt, n, H, qd), "o projection");
        CK(wd_cuda_add(cm->x, cm->h, (size_t)n * H, bs), "residual");
        wd_cuda_nvtx_pop();
        snprintf(name, sizeof name, "L%d/bs/router", l);
        wd_cuda_nvtx_push(name);
        CK(wd_cuda_rmsnorm(cm->xb, cm->x, L->ffn_norm, n, H, c->rms_eps, bs), "rmsnorm");
        CK(wd_cuda_matmul(cm->blas, cm->rlogits, cm->xb, L->gate, dt, n, E, H), "router");
        CK(wd_cuda_router(cm->rbuf, (int *)(cm->rbuf + (size_t)n * E),
                          cm->rbuf + (size_t)n * (E + K), cm->rlogits, n, E, K, bs),
           "top-k");
        CK((int)cudaMemcpyAsync(cm->h_rbuf, cm->rbuf, (size_t)n * (E + 2 * K) * 4,
                                cudaMemcpyDeviceToHost, bs),
           "router download");
        const float *h_probs = cm->h_rbuf;
        const int *h_ridx = (const int *)(cm->h_rbuf + (size_t)n * E);
        const float *h_rweights = cm->h_rbuf + (size_t)n * (E + K);
        int *h_rows = cm->h_sbuf;
        float *h_scales = (float *)(cm->h_sbuf + (size_t)E * n);
        CK((int)cudaStreamSynchronize(bs), "router");
        wd_cuda_nvtx_pop();

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
            }
        }
        CK((int)cudaMemcpyAsync(cm->sbuf, cm->h_sbuf, (size_t)2 * E * n * 4,
                                cudaMemcpyHostToDevice, bs),
           "selection upload");
        CK((int)cudaEventRecord(cm->ev_ready, bs), "event");
        const int *d_rows = cm->sbuf;
        const float *d_scales = (const float *)(cm->sbuf + (size_t)E * n);
        /* experts on the device streams */
        for (int d = 0; d < nd; d++) cm->h_dev_tokens[d] = 0;
        for (int e = 0; e < E; e++) cm->h_dev_tokens[e % nd] += cm->h_count[e];
        const float *srcs[64];
        int n_src = 0;
        for (int d = 0; d < nd; d++) {
            cm->h_seconds[d] = -1.0;
            if (!cm->h_dev_tokens[d]) continue;
            cudaStream_t ds = (cudaStream_t)wd_cuda_devset_stream(cm->devs, d);
            CK((int)cudaStreamWaitEvent(ds, cm->ev_ready, 0), "stream wait");
            CK((int)cudaMemsetAsync(cm->ybuf[d], 0, (size_t)n * H * 4, ds), "memset");
            uint64_t dl = 0, ul = 0;
            if (cm->spec.realtime && timing && timing->link_delays)
                timing->link_delays(timing->ctx, l, d, cm->h_dev_tokens[d], &dl, &ul);
            int first = 1, remaining = cm->h_dev_tokens[d];
            for (int e = d; e < E; e += nd) {
                if (!cm->h_count[e]) continue;
                remaining -= cm->h_count[e];
                CK(wd_cuda_devset_expert_call(cm->devs, d, l, &L->experts[e], cm->ybuf[d], cm->xb,
                                              d_rows + (size_t)e * n,
                                              d_scales + (size_t)e * n, cm->h_count[e], 1,
                                              first ? dl : 0, remaining == 0 ? ul : 0),
                   "expert");
                first = 0;
            }
            srcs[n_src++] = cm->ybuf[d];
            CK((int)cudaEventRecord(cm->ev_done[d], ds), "event");
            CK((int)cudaStreamWaitEvent(bs, cm->ev_done[d], 0), "stream wait");
        }
        CK(wd_cuda_combine(cm->x, srcs, n_src, n, H, bs), "combine");
        if (timing && timing->expert_times) {
            for (int d = 0; d < nd; d++)
                if (cm->h_dev_tokens[d])
                    cm->h_seconds[d] = wd_cuda_devset_last_expert_seconds(cm->devs, d);
            timing->expert_times(timing->ctx, l, cm->h_seconds, nd);
        }
    }
    if (logits) {
        int n_out = all_logits ? n : 1;
        const float *xin = all_logits ? cm->x : cm->x + (size_t)(n - 1) * H;
        CK(wd_cuda_rmsnorm(cm->xb, xin, cm->norm, n_out, H, c->rms_eps, bs), "final norm");
        CK(wd_cuda_matmul(cm->blas, cm->logits, cm->xb, cm->lm_head, dt, n_out, V, H), "lm head");
        CK((int)cudaMemcpyAsync(logits, cm->logits, (size_t)n_out * V * 4, cudaMemcpyDeviceToHost,
                                bs),
           "logits download");
    }
    CK((int)cudaStreamSynchronize(bs), "forward");
    cm->pos += n;
    return 0;
}

extern "C" int wd_cuda_model_forward(wd_cuda_model *cm, const int *tokens, int n, float *logits,
                                     int all_logits, const wd_moe_hooks *hooks,
                                     const wd_cuda_timing_hooks *timing, char *err,
                                     size_t errlen) {
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
