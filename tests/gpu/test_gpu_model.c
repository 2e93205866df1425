/* The GPU model runner against a CPU forward pass written here from the
 * kernels.h ops (so it depends on no host/ code):
 *  1. a synthetic Mixtral-layout model built in memory (BF16 and F16 tensors,
 *     GQA, 4 experts top-2, two layers): prefill of 13 tokens (cuBLAS paths)
 *     then 3 decode steps, all logits compared, in F32 (exact) and BF16 modes;
 *     also with a selection hook that keeps only the top-1 expert;
 *  2. the runner's modes give the same logits bit for bit as the plain run
 *     (F32, a hook changing the expert set per layer and position): CUDA
 *     graphs for decode, graphs with real-time delays and the timing hook,
 *     a rewind (set_pos) and re-decode, and two GPUs over NCCL (where two
 *     GPUs are present; said otherwise);
 *  3. stories260k (shared data, safetensors): greedy ids from BOS in F32 mode
 *     equal the published 201 ids exactly, also with CUDA graphs;
 *  4. the synthetic model with GGUF block-quantised weights (every matrix a
 *     different type of Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, embedding and LM
 *     head included, each expert's w2 another type than its w1/w3), kept
 *     quantised on the GPU: logits against the CPU.
 * Skipped (exit 77) without a GPU. */
#include <stdint.h>

#include "host/host.h"
#include "host/cuda_runner.h"
#include "tests/gpu/gpu_test_util.h"

#define MAXL 8
#define MAXP 64
#define MAXE 8

/* ---- selection recorder: the CPU reference follows the GPU's choices --------- */
typedef struct {
    int top1; /* 1: keep only the first expert, weight 1 */
    int n[MAXL][MAXP];
    int e[MAXL][MAXP][MAXE];
    float w[MAXL][MAXP][MAXE];
    float p[MAXL][MAXP][MAXE];
} recorder;

static int rec_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    recorder *r = ctx;
    for (int t = 0; t < sel->n_tokens; t++) {
        if (r->top1) {
            sel->n[t] = 1;
            sel->weight[t * sel->n_experts] = 1.0f;
        }
        int pos = pos0 + t;
        if (layer >= MAXL || pos >= MAXP) return 1;
        r->n[layer][pos] = sel->n[t];
        for (int j = 0; j < sel->n[t]; j++) {
            r->e[layer][pos][j] = sel->expert[t * sel->n_experts + j];
            r->w[layer][pos][j] = sel->weight[t * sel->n_experts + j];
        }
        for (int e = 0; e < sel->n_experts && e < MAXE; e++)
            r->p[layer][pos][e] = probs[t * sel->n_experts + e];
    }
    return 0;
}

/* ---- CPU reference forward (all logits), following recorded selections ------ */
typedef struct {
    const wd_model *m;
    float *kc, *vc; /* [L][ctx][kvd] */
    int ctx;
} cpu_ref;

static float *tensor_f32(const wd_tensor *t) { /* a converted copy (small models only) */
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    float *f = malloc((size_t)n * 4);
    wd_row_to_f32(f, t->data, t->dtype, 0, (int)n);
    return f;
}

static void cpu_forward(cpu_ref *r, const int *tokens, int n, int pos0, float *logits,
                        const recorder *rec, int *route_mismatch) {
    const wd_model *m = r->m;
    const wd_config *c = &m->cfg;
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int F = c->ffn, E = c->n_experts, V = c->vocab;
    float *x = malloc((size_t)n * H * 4), *xb = malloc((size_t)n * H * 4),
          *q = malloc((size_t)n * qd * 4), *att = malloc((size_t)n * qd * 4),
          *o = malloc((size_t)n * H * 4), *rl = malloc((size_t)n * E * 4),
          *y = malloc((size_t)H * 4), *scr = malloc((size_t)2 * F * 4),
          *ascr = malloc(wd_attention_scratch(n, c->n_heads, pos0 + n) * 4);
    for (int t = 0; t < n; t++) wd_row_to_f32(x + (size_t)t * H, m->embed->data, m->embed->dtype, tokens[t], H);
    for (int l = 0; l < c->n_layers; l++) {
        const wd_layer *L = &m->layers[l];
        float *an = tensor_f32(L->attn_norm), *fn = tensor_f32(L->ffn_norm);
        float *kc = r->kc + (size_t)l * r->ctx * kvd, *vc = r->vc + (size_t)l * r->ctx * kvd;
        for (int t = 0; t < n; t++) wd_rmsnorm(xb + (size_t)t * H, x + (size_t)t * H, an, H, c->rms_eps);
        wd_matmul(NULL, q, xb, L->wq->data, L->wq->dtype, n, qd, H);
        wd_matmul(NULL, kc + (size_t)pos0 * kvd, xb, L->wk->data, L->wk->dtype, n, kvd, H);
        wd_matmul(NULL, vc + (size_t)pos0 * kvd, xb, L->wv->data, L->wv->dtype, n, kvd, H);
        for (int t = 0; t < n; t++) {
            wd_rope(q + (size_t)t * qd, c->n_heads, hd, pos0 + t, c->rope_theta);
            wd_rope(kc + (size_t)(pos0 + t) * kvd, c->n_kv_heads, hd, pos0 + t, c->rope_theta);
        }
        wd_attention(NULL, att, q, kc, vc, n, pos0, c->n_heads, c->n_kv_heads, hd, ascr);
        wd_matmul(NULL, o, att, L->wo->data, L->wo->dtype, n, H, qd);
        for (size_t i = 0; i < (size_t)n * H; i++) x[i] += o[i];
        for (int t = 0; t < n; t++) wd_rmsnorm(xb + (size_t)t * H, x + (size_t)t * H, fn, H, c->rms_eps);
        wd_matmul(NULL, rl, xb, L->gate->data, L->gate->dtype, n, E, H);
        for (int t = 0; t < n; t++) {
            int pos = pos0 + t;
            float *p = rl + (size_t)t * E;
            wd_softmax(p, E);
            int idx[MAXE];
            wd_topk(p, E, c->top_k, idx);
            int nsel = rec->n[l][pos];
            if (!rec->top1)
                for (int j = 0; j < c->top_k; j++) *route_mismatch += idx[j] != rec->e[l][pos][j];
            for (int j = 0; j < nsel; j++) {
                int e = rec->e[l][pos][j];
                wd_expert_ffn(NULL, y, xb + (size_t)t * H, 1, L->w1[e]->data, L->w3[e]->data,
                              L->w2[e]->data, L->w1[e]->dtype, L->w2[e]->dtype, H, F, scr);
                for (int i = 0; i < H; i++) x[(size_t)t * H + i] += rec->w[l][pos][j] * y[i];
            }
        }
        free(an);
        free(fn);
    }
    float *nw = tensor_f32(m->norm);
    for (int t = 0; t < n; t++) wd_rmsnorm(xb + (size_t)t * H, x + (size_t)t * H, nw, H, c->rms_eps);
    wd_matmul(NULL, logits, xb, m->lm_head->data, m->lm_head->dtype, n, V, H);
    free(nw); free(x); free(xb); free(q); free(att); free(o); free(rl); free(y); free(scr); free(ascr);
}

/* ---- a synthetic model in memory ------------------------------------------------ */
typedef struct {
    wd_model m;
    wd_tensor *ts;
    int nt, cap;
    const wd_tensor **ptrs;
} synth;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static const wd_tensor *mk(synth *s, const char *name, wd_dtype dt, int64_t r, int64_t cols,
                           float scale, float offset) {
    wd_tensor *t = &s->ts[s->nt++];
    int64_t n = r * cols;
    t->name = (char *)name;
    t->dtype = dt;
    t->ndim = r > 1 ? 2 : 1;
    t->shape[0] = r > 1 ? r : cols;
    t->shape[1] = cols;
    t->nbytes = wd_dtype_bytes(dt, n);
    void *d = malloc(t->nbytes);
    if (wd_dtype_quantised(dt)) { /* random blocks, f16 scale fields sized for ~scale values */
        uint8_t *b = d;
        for (size_t i = 0; i < t->nbytes; i++) b[i] = (uint8_t)(frand() * 127.0f + 128.0f);
        int bs = wd_dtype_block(dt);
        size_t bb = wd_dtype_bytes(dt, bs);
        int offs[2] = {0, 2}, no = dt == WD_DT_Q8_0 || dt == WD_DT_Q4_0 || dt == WD_DT_Q6_K ? 1 : 2;
        if (dt == WD_DT_Q6_K) offs[0] = 208;
        float unit = dt == WD_DT_Q8_0 ? 64 : dt == WD_DT_Q4_0 ? 4.6f : dt == WD_DT_Q4_1 ? 8
                     : dt == WD_DT_Q6_K ? 1000 : 300;
        for (size_t k = 0; k < t->nbytes / bb; k++)
            for (int j = 0; j < no; j++) {
                uint16_t h = wd_f32_to_f16(scale / unit * frand());
                memcpy(b + k * bb + offs[j], &h, 2);
            }
        t->data = d;
        return t;
    }
    for (int64_t i = 0; i < n; i++) {
        float v = offset + scale * frand();
        if (dt == WD_DT_F32) ((float *)d)[i] = v;
        else if (dt == WD_DT_BF16) ((uint16_t *)d)[i] = wd_f32_to_bf16(v);
        else ((uint16_t *)d)[i] = wd_f32_to_f16(v);
    }
    t->data = d;
    return t;
}

/* quant: every matrix one of the GGUF block types instead of BF16/F16 */
static void synth_build(synth *s, int quant) {
    memset(s, 0, sizeof *s);
    wd_config *c = &s->m.cfg;
    strcpy(c->model_type, "mixtral");
    c->hidden = 256; c->n_layers = 2; c->n_heads = 8; c->n_kv_heads = 2; c->head_dim = 32;
    c->ffn = 512; c->n_experts = 4; c->top_k = 2; c->vocab = 300; c->max_pos = 64;
    c->rms_eps = 1e-5f; c->rope_theta = 10000.0f; c->tie_embeddings = 0;
    int H = c->hidden, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int E = c->n_experts, F = c->ffn;
    s->cap = 4 + c->n_layers * (7 + 3 * E);
    s->ts = calloc((size_t)s->cap, sizeof(wd_tensor));
    s->m.layers = calloc((size_t)c->n_layers, sizeof(wd_layer));
    s->ptrs = calloc((size_t)c->n_layers * 3 * E, sizeof(wd_tensor *));
    float ws = 1.0f / sqrtf((float)H) * 1.7f;
    const wd_dtype Q[6] = {WD_DT_Q8_0, WD_DT_Q4_0, WD_DT_Q4_1, WD_DT_Q4_K, WD_DT_Q5_K, WD_DT_Q6_K};
#define MDT(plain, i) (quant ? Q[(i) % 6] : (plain))
    s->m.embed = mk(s, "model.embed_tokens.weight", MDT(WD_DT_F16, 5), c->vocab, H, 1.0f, 0);
    s->m.norm = mk(s, "model.norm.weight", WD_DT_F32, 1, H, 0.2f, 1.0f);
    s->m.lm_head = mk(s, "lm_head.weight", MDT(WD_DT_BF16, 0), c->vocab, H, ws, 0);
    for (int l = 0; l < c->n_layers; l++) {
        wd_layer *L = &s->m.layers[l];
        L->attn_norm = mk(s, "attn_norm", WD_DT_F32, 1, H, 0.2f, 1.0f);
        L->ffn_norm = mk(s, "ffn_norm", WD_DT_BF16, 1, H, 0.2f, 1.0f);
        L->wq = mk(s, "wq", MDT(WD_DT_BF16, l + 3), qd, H, ws, 0);
        L->wk = mk(s, "wk", MDT(WD_DT_BF16, l + 4), kvd, H, ws, 0);
        L->wv = mk(s, "wv", MDT(WD_DT_BF16, l + 1), kvd, H, ws, 0);
        L->wo = mk(s, "wo", MDT(WD_DT_BF16, l + 2), H, qd, ws, 0);
        L->gate = mk(s, "gate", MDT(WD_DT_BF16, l), E, H, ws * 3, 0);
        L->w1 = s->ptrs + (size_t)l * 3 * E;
        L->w3 = L->w1 + E;
        L->w2 = L->w3 + E;
        for (int e = 0; e < E; e++) {
            L->w1[e] = mk(s, "w1", MDT(WD_DT_BF16, l + e + 3), F, H, ws, 0);
            L->w3[e] = mk(s, "w3", MDT(WD_DT_BF16, l + e + 3), F, H, ws, 0);
            /* quantised: w2 another block type than w1/w3, as K-quant mixes store it */
            L->w2[e] = mk(s, "w2", MDT(WD_DT_BF16, l + e + 4), H, F, 1.0f / sqrtf((float)F) * 1.7f, 0);
        }
    }
#undef MDT
}

static void synth_free(synth *s) {
    for (int i = 0; i < s->nt; i++) free((void *)s->ts[i].data);
    free(s->ts);
    free(s->m.layers);
    free(s->ptrs);
}

static void run_synthetic(synth *s, wd_dtype dt, int top1) {
    const wd_config *c = &s->m.cfg;
    char err[512], log[2048] = "";
    wd_cuda_model_spec spec;
    wd_cuda_model_spec_default(&spec);
    spec.dtype = dt;
    spec.max_ctx = 32;
    spec.max_batch = 16;
    spec.n_devices = 3; /* 4 experts on 3 devices: device 0 serves experts 0 and 3 */
    wd_cuda_model *cm;
    if (wd_cuda_model_create(&cm, &s->m, &spec, log, sizeof log, err, sizeof err)) {
        CHECKF(0, "model create: %s", err);
        return;
    }
    printf("%s", log);
    recorder *rec = calloc(1, sizeof *rec);
    rec->top1 = top1;
    wd_moe_hooks hooks = {rec, rec_select, NULL};
    int V = c->vocab, toks[16];
    for (int i = 0; i < 16; i++) toks[i] = (i * 37 + 11) % V;
    int npre = 13, ndec = 3, total = npre + ndec;
    float *g = malloc((size_t)total * V * 4), *ref = malloc((size_t)total * V * 4);
    for (size_t i = 0; i < (size_t)total * V; i++) g[i] = NAN;
    CHECK(wd_cuda_model_forward(cm, toks, npre, g, 1, &hooks, NULL, err, sizeof err) == 0);
    for (int i = 0; i < ndec; i++)
        CHECKF(wd_cuda_model_forward(cm, toks + npre + i, 1, g + (size_t)(npre + i) * V, 0, &hooks,
                                     NULL, err, sizeof err) == 0, "%s", err);
    CHECK(wd_cuda_model_pos(cm) == total);
    /* CPU: the same prefill + decode, following the recorded selections */
    int kvd = c->n_kv_heads * c->head_dim, mismatch = 0;
    cpu_ref r = {&s->m, calloc((size_t)c->n_layers * 32 * kvd, 4),
                 calloc((size_t)c->n_layers * 32 * kvd, 4), 32};
    cpu_forward(&r, toks, npre, 0, ref, rec, &mismatch);
    for (int i = 0; i < ndec; i++)
        cpu_forward(&r, toks + npre + i, 1, npre + i, ref + (size_t)(npre + i) * V, rec, &mismatch);
    double e = wd_gpu_rel_err(g, ref, (size_t)total * V);
    double tol = dt == WD_DT_F32 ? 2e-5 : 3e-2;
    printf("  synthetic %s%s%s: logits rel L2 %.3g (tol %.3g), routing differs from CPU top-k in %d "
           "choices\n", wd_dtype_name(dt), top1 ? " top-1 hook" : "",
           wd_dtype_quantised(s->m.lm_head->dtype) ? ", GGUF block-quantised weights" : "", e, tol,
           mismatch);
    CHECKF(e <= tol, "synthetic model %s: logits rel L2 %.3g > %.3g", wd_dtype_name(dt), e, tol);
    if (dt == WD_DT_F32 && !top1) CHECKF(mismatch == 0, "F32 routing differs in %d choices", mismatch);
    if (top1)
        for (int l = 0; l < c->n_layers; l++)
            for (int p = 0; p < total; p++) CHECK(rec->n[l][p] == 1);
    /* the single decode logits row must also differ from a wrong position: sanity */
    free(g); free(ref); free(r.kc); free(r.vc); free(rec);
    wd_cuda_model_free(cm);
}

/* ---- runner modes: bit-identical to the plain run ------------------------------------ */
static int vary_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    (void)ctx;
    (void)probs;
    for (int t = 0; t < sel->n_tokens; t++)
        if ((pos0 + t + layer) % 3 == 0) { /* top-1 here: another expert set */
            sel->n[t] = 1;
            sel->weight[t * sel->n_experts] = 1.0f;
        }
    return 0;
}

typedef struct {
    int calls, used, bad;
} timing_log;
static void small_delays(void *ctx, int layer, int device, int n_tokens, uint64_t *dl,
                         uint64_t *ul) {
    (void)ctx;
    *dl = 3000 + 1000 * (uint64_t)((layer + device) % 2);
    *ul = 2000 + (uint64_t)n_tokens;
}
static int check_times(void *ctx, int layer, const double *seconds, int n_devices) {
    timing_log *t = ctx;
    (void)layer;
    t->calls++;
    for (int d = 0; d < n_devices; d++) {
        if (seconds[d] >= 0) t->used++;
        if (seconds[d] > 10 || (seconds[d] < 0 && seconds[d] != -1.0)) t->bad++;
    }
    return 0;
}

/* prefill npre tokens, then ndec decode steps: every row of logits */
static int run_mode(synth *s, const wd_cuda_model_spec *spec, const int *toks, int npre, int ndec,
                    float *out, const wd_cuda_timing_hooks *th, wd_cuda_model **keep) {
    char err[512], log[4096] = "";
    wd_cuda_model *cm;
    int V = s->m.cfg.vocab;
    if (wd_cuda_model_create(&cm, &s->m, spec, log, sizeof log, err, sizeof err)) {
        CHECKF(0, "model create: %s", err);
        return -1;
    }
    wd_moe_hooks hooks = {NULL, vary_select, NULL};
    for (size_t i = 0; i < (size_t)(npre + ndec) * V; i++) out[i] = NAN;
    int rc = wd_cuda_model_forward(cm, toks, npre, out, 1, &hooks, th, err, sizeof err);
    for (int i = 0; !rc && i < ndec; i++)
        rc = wd_cuda_model_forward(cm, toks + npre + i, 1, out + (size_t)(npre + i) * V, 0, &hooks,
                                   th, err, sizeof err);
    CHECKF(rc == 0, "forward: %s", err);
    if (spec->use_graphs && spec->n_gpus <= 1)
        CHECKF(wd_cuda_model_graphs(cm) == 1, "CUDA graphs asked but off: %s", log);
    if (keep) *keep = cm;
    else wd_cuda_model_free(cm);
    return rc;
}

static void run_modes(synth *s) {
    const wd_config *c = &s->m.cfg;
    int V = c->vocab, npre = 5, ndec = 20, total = npre + ndec, toks[25];
    for (int i = 0; i < total; i++) toks[i] = (i * 53 + 7) % V;
    size_t nl = (size_t)total * V;
    float *ref = malloc(nl * 4), *got = malloc(nl * 4);
    wd_cuda_model_spec spec;
    wd_cuda_model_spec_default(&spec);
    spec.dtype = WD_DT_F32;
    spec.max_ctx = 600; /* three attention chunks: graphs launch all of them */
    spec.max_batch = 16;
    spec.n_devices = 3;
    wd_cuda_model *cm = NULL;
    if (run_mode(s, &spec, toks, npre, ndec, ref, NULL, &cm)) goto out;
    /* rewind to the end of the prefill and decode again */
    CHECK(wd_cuda_model_set_pos(cm, total + 1) != 0);
    CHECK(wd_cuda_model_set_pos(cm, npre) == 0);
    {
        char err[512];
        wd_moe_hooks hooks = {NULL, vary_select, NULL};
        float *row = malloc((size_t)V * 4);
        int same = 1;
        for (int i = 0; i < ndec; i++) {
            if (wd_cuda_model_forward(cm, toks + npre + i, 1, row, 0, &hooks, NULL, err,
                                      sizeof err)) {
                CHECKF(0, "forward after set_pos: %s", err);
                same = 0;
                break;
            }
            same &= !memcmp(row, ref + (size_t)(npre + i) * V, (size_t)V * 4);
        }
        CHECKF(same, "decode after set_pos(%d) differs from the first decode", npre);
        printf("  set_pos: rewind and re-decode of %d steps bit-identical: %s\n", ndec,
               same ? "yes" : "NO");
        free(row);
    }
    wd_cuda_model_free(cm);

    spec.use_graphs = 1;
    if (!run_mode(s, &spec, toks, npre, ndec, got, NULL, NULL)) {
        int same = !memcmp(got, ref, nl * 4);
        CHECKF(same, "CUDA graphs: logits differ from the plain run (rel L2 %.3g)",
               wd_gpu_rel_err(got, ref, nl));
        printf("  CUDA graphs: %d decode steps bit-identical: %s\n", ndec, same ? "yes" : "NO");
    }
    spec.realtime = 1;
    timing_log tl = {0, 0, 0};
    wd_cuda_timing_hooks th = {&tl, small_delays, check_times};
    if (!run_mode(s, &spec, toks, npre, ndec, got, &th, NULL)) {
        int same = !memcmp(got, ref, nl * 4);
        CHECKF(same, "CUDA graphs + real-time delays: logits differ");
        CHECKF(tl.calls == (1 + ndec) * c->n_layers, "expert_times called %d times, expected %d",
               tl.calls, (1 + ndec) * c->n_layers);
        CHECKF(tl.used > 0 && tl.bad == 0, "expert seconds: %d used, %d implausible", tl.used,
               tl.bad);
        printf("  CUDA graphs + real-time delays + timing hook: bit-identical: %s, %d device "
               "timings\n", same ? "yes" : "NO", tl.used);
    }
    spec.realtime = 0;
    spec.use_graphs = 0;
    if (wd_cuda_device_count() >= 2 && wd_cuda_have_nccl()) {
        spec.n_gpus = 2;
        if (!run_mode(s, &spec, toks, npre, ndec, got, NULL, NULL)) {
            int same = !memcmp(got, ref, nl * 4);
            CHECKF(same, "two GPUs: logits differ from one GPU (rel L2 %.3g)", wd_gpu_rel_err(got, ref, nl));
            printf("  two GPUs (NCCL): bit-identical to one GPU: %s\n", same ? "yes" : "NO");
        }
    } else {
        printf("  two GPUs: NOT TESTED here (%d GPU(s), NCCL %s)\n", wd_cuda_device_count(),
               wd_cuda_have_nccl() ? "built" : "not built");
    }
out:
    free(ref);
    free(got);
}

/* ---- stories260k greedy ------------------------------------------------------------ */
static void run_stories(void) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/weights/models/stories260k/moe4-top2", WD_SOURCE_DIR);
    wd_model *mp;
    if (wd_model_load(&mp, path, err, sizeof err)) {
        CHECKF(0, "stories260k: %s", err);
        return;
    }
    const wd_config *c = &mp->cfg;
    /* expected ids */
    char jp[1100];
    snprintf(jp, sizeof jp, "%s/weights/models/stories260k/greedy_tokens.json", WD_SOURCE_DIR);
    FILE *f = fopen(jp, "r");
    int want[256], nwant = 0;
    if (f) {
        int ch;
        while ((ch = fgetc(f)) != EOF && nwant < 256) {
            if (ch >= '0' && ch <= '9') {
                ungetc(ch, f);
                if (fscanf(f, "%d", &want[nwant]) == 1) nwant++;
            }
        }
        fclose(f);
    }
    CHECKF(nwant == 201, "%s: expected 201 ids, read %d", jp, nwant);
    /* whole-model logits against the CPU backend (host wd_forward): prefill of
       the first 24 published ids (all logits) then 8 decode steps */
    if (nwant == 201) {
        enum { NP = 24, ND = 8 };
        int V = c->vocab;
        wd_pool *pool = wd_pool_create(1);
        wd_session *ses = pool ? wd_session_create(mp, 64, pool) : NULL;
        float *cpu = malloc((size_t)(NP + ND) * V * 4), *gpu = malloc((size_t)(NP + ND) * V * 4);
        int ok = ses && cpu && gpu &&
                 wd_forward(ses, want, NP, cpu, 1, err, sizeof err) == 0;
        for (int i = 0; ok && i < ND; i++)
            ok = wd_forward(ses, want + NP + i, 1, cpu + (size_t)(NP + i) * V, 0, err,
                            sizeof err) == 0;
        CHECKF(ok, "stories260k on the CPU backend: %s", err);
        for (int mode = 0; ok && mode < 2; mode++) {
            wd_cuda_model_spec spec;
            wd_cuda_model_spec_default(&spec);
            spec.dtype = mode ? WD_DT_BF16 : WD_DT_F32;
            spec.max_ctx = 64;
            spec.max_batch = 16; /* the prefill runs as two chunks, 16 + 8 */
            spec.use_graphs = 1;
            wd_cuda_model *cm;
            if (wd_cuda_model_create(&cm, mp, &spec, NULL, 0, err, sizeof err)) {
                CHECKF(0, "stories260k: %s", err);
                break;
            }
            for (size_t i = 0; i < (size_t)(NP + ND) * V; i++) gpu[i] = NAN;
            int rc = wd_cuda_model_forward(cm, want, NP, gpu, 1, NULL, NULL, err, sizeof err);
            for (int i = 0; !rc && i < ND; i++)
                rc = wd_cuda_model_forward(cm, want + NP + i, 1, gpu + (size_t)(NP + i) * V, 0,
                                           NULL, NULL, err, sizeof err);
            CHECKF(rc == 0, "stories260k forward: %s", err);
            double e = wd_gpu_rel_err(gpu, cpu, (size_t)(NP + ND) * V);
            double tol = mode ? 3e-2 : 2e-5;
            CHECKF(e <= tol, "stories260k %s logits vs the CPU backend: rel L2 %.3g > %.3g",
                   mode ? "BF16" : "F32", e, tol);
            printf("  stories260k %s: logits vs the CPU backend (%d prefill + %d decode): rel L2 "
                   "%.3g (tol %.3g)\n", mode ? "BF16" : "F32", NP, ND, e, tol);
            wd_cuda_model_free(cm);
        }
        free(cpu);
        free(gpu);
        wd_session_free(ses);
        wd_pool_destroy(pool);
    }
    for (int mode = 0; mode < 3 && nwant == 201; mode++) { /* F32, BF16, F32 + graphs */
        wd_cuda_model_spec spec;
        wd_cuda_model_spec_default(&spec);
        spec.dtype = mode == 1 ? WD_DT_BF16 : WD_DT_F32;
        spec.use_graphs = mode == 2;
        spec.max_ctx = 256;
        spec.max_batch = 8;
        wd_cuda_model *cm;
        if (wd_cuda_model_create(&cm, mp, &spec, NULL, 0, err, sizeof err)) {
            CHECKF(0, "stories260k: %s", err);
            break;
        }
        float *logits = malloc((size_t)c->vocab * 4);
        int tok = want[0], same = 0;
        for (int i = 1; i < nwant; i++) {
            if (wd_cuda_model_forward(cm, &tok, 1, logits, 0, NULL, NULL, err, sizeof err)) {
                CHECKF(0, "stories260k: %s", err);
                break;
            }
            int best = 0;
            for (int v = 1; v < c->vocab; v++)
                if (logits[v] > logits[best]) best = v;
            if (best == want[i]) same++;
            else if (mode != 1) break; /* exact mode: first divergence ends it */
            tok = mode != 1 ? best : want[i]; /* BF16: teacher forcing, agreement rate */
        }
        if (mode != 1)
            CHECKF(same == nwant - 1, "stories260k F32%s greedy: %d of %d ids before divergence",
                   mode == 2 ? " + CUDA graphs" : "", same, nwant - 1);
        printf("  stories260k %s: %d/%d greedy ids agree\n",
               mode == 1 ? "BF16 (teacher forced)" : mode == 2 ? "F32 + CUDA graphs" : "F32",
               same, nwant - 1);
        free(logits);
        wd_cuda_model_free(cm);
    }
    wd_model_free(mp);
}

int main(void) {
    if (wd_cuda_device_count() <= 0) WD_TEST_SKIP("no CUDA device");
    synth s;
    synth_build(&s, 0);
    run_synthetic(&s, WD_DT_F32, 0);
    run_synthetic(&s, WD_DT_BF16, 0);
    run_synthetic(&s, WD_DT_F32, 1);
    run_modes(&s);
    synth_free(&s);
    synth_build(&s, 1); /* GGUF block types, uploaded as they are */
    run_synthetic(&s, WD_DT_F32, 0);
    run_synthetic(&s, WD_DT_BF16, 0);
    synth_free(&s);
    run_stories();
    return wd_test_finish("test_gpu_model");
}
