/* Model loading: config + tensors (+ tokenizer) -> wd_model, with every tensor
 * name and shape checked. The tensor names of each supported layout live in
 * one table (wd_layout) so other layouts (Qwen-MoE, OLMoE) are one entry. A
 * dense Llama is a layout without a router: its FFN is expert 0 (gate NULL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/host.h"

typedef struct {
    const char *model_type;
    const char *embed, *norm, *lm_head;
    /* per layer: printf formats taking the layer index */
    const char *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *gate;
    /* per expert: formats taking the layer and the expert index */
    const char *w1, *w2, *w3;
} wd_layout;

static const wd_layout layouts[] = {
    {"mixtral", "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
     "model.layers.%d.input_layernorm.weight", "model.layers.%d.post_attention_layernorm.weight",
     "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.k_proj.weight",
     "model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.o_proj.weight",
     "model.layers.%d.block_sparse_moe.gate.weight",
     "model.layers.%d.block_sparse_moe.experts.%d.w1.weight",
     "model.layers.%d.block_sparse_moe.experts.%d.w2.weight",
     "model.layers.%d.block_sparse_moe.experts.%d.w3.weight"},
    /* dense Llama: one FFN (expert 0), no router */
    {"llama", "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
     "model.layers.%d.input_layernorm.weight", "model.layers.%d.post_attention_layernorm.weight",
     "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.k_proj.weight",
     "model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.o_proj.weight", NULL,
     "model.layers.%d.mlp.gate_proj.weight", "model.layers.%d.mlp.down_proj.weight",
     "model.layers.%d.mlp.up_proj.weight"},
};

typedef struct {
    const wd_model *m;
    const char *file; /* what to name in messages */
    char *err;
    size_t errlen;
} load_ctx;

/* Find a tensor and check its shape ([d0] when d1 == 0, else [d0, d1]). */
static const wd_tensor *need(load_ctx *c, const char *name, int64_t d0, int64_t d1) {
    const wd_tensor *t = wd_tensors_find(c->m->tensors, name);
    if (!t) {
        snprintf(c->err, c->errlen, "%s: missing tensor %s", c->file, name);
        return NULL;
    }
    int ndim = d1 ? 2 : 1;
    if (t->ndim != ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char got[96] = "", want[64];
        for (int i = 0; i < t->ndim && i < WD_MAX_DIMS; i++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof(got) - l, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        }
        if (d1)
            snprintf(want, sizeof(want), "%lld, %lld", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof(want), "%lld", (long long)d0);
        snprintf(c->err, c->errlen, "%s: tensor %s has shape [%s], expected [%s]", c->file, name,
                 got, want);
        return NULL;
    }
    if (wd_dtype_quantised(t->dtype) && t->ndim != 2) {
        snprintf(c->err, c->errlen, "%s: tensor %s: a %s vector (quantised tensors must be matrices)",
                 c->file, name, wd_dtype_name(t->dtype));
        return NULL;
    }
    if (wd_dtype_quantised(t->dtype) && t->shape[1] % wd_dtype_block(t->dtype)) {
        snprintf(c->err, c->errlen, "%s: tensor %s: %s rows must be a multiple of %d", c->file,
                 name, wd_dtype_name(t->dtype), wd_dtype_block(t->dtype));
        return NULL;
    }
    return t;
}

static float *to_f32(const wd_tensor *t, int n) {
    float *v = malloc((size_t)n * sizeof(float));
    if (v) wd_row_to_f32(v, t->data, t->dtype, 0, n);
    return v;
}

static int bind_tensors(wd_model *m, const wd_layout *lay, const char *file, char *err,
                        size_t errlen) {
    const wd_config *c = &m->cfg;
    load_ctx lc = {m, file, err, errlen};
    int H = c->hidden; /* shapes in 64 bits: a product of config fields may pass int range */
    int64_t Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    char name[256];
    if (!(m->embed = need(&lc, lay->embed, c->vocab, H))) return 1;
    if (!(m->norm = need(&lc, lay->norm, H, 0))) return 1;
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if (!(m->lm_head = need(&lc, lay->lm_head, c->vocab, H))) {
        return 1;
    }
    if (!(m->norm_f32 = to_f32(m->norm, H))) goto oom;
    m->layers = calloc((size_t)c->n_layers, sizeof(wd_layer));
    if (!m->layers) goto oom;
    for (int l = 0; l < c->n_layers; l++) {
        wd_layer *L = &m->layers[l];
#define NEED(field, fmt, d0, d1)                                                               \
    do {                                                                                       \
        snprintf(name, sizeof(name), fmt, l);                                                  \
        if (!(L->field = need(&lc, name, d0, d1))) return 1;                                   \
    } while (0)
        NEED(attn_norm, lay->attn_norm, H, 0);
        NEED(ffn_norm, lay->ffn_norm, H, 0);
        NEED(wq, lay->wq, Q, H);
        NEED(wk, lay->wk, KV, H);
        NEED(wv, lay->wv, KV, H);
        NEED(wo, lay->wo, H, Q);
        if (lay->gate) NEED(gate, lay->gate, c->n_experts, H);
#undef NEED
        if (!(L->attn_norm_f32 = to_f32(L->attn_norm, H))) goto oom;
        if (!(L->ffn_norm_f32 = to_f32(L->ffn_norm, H))) goto oom;
        L->w1 = calloc((size_t)c->n_experts, sizeof(*L->w1));
        L->w2 = calloc((size_t)c->n_experts, sizeof(*L->w2));
        L->w3 = calloc((size_t)c->n_experts, sizeof(*L->w3));
        if (!L->w1 || !L->w2 || !L->w3) goto oom;
        for (int e = 0; e < c->n_experts; e++) {
            snprintf(name, sizeof(name), lay->w1, l, e);
            if (!(L->w1[e] = need(&lc, name, c->ffn, H))) return 1;
            snprintf(name, sizeof(name), lay->w2, l, e);
            if (!(L->w2[e] = need(&lc, name, H, c->ffn))) return 1;
            snprintf(name, sizeof(name), lay->w3, l, e);
            if (!(L->w3[e] = need(&lc, name, c->ffn, H))) return 1;
            if (L->w1[e]->dtype != L->w3[e]->dtype) {
                snprintf(err, errlen, "%s: layer %d expert %d: w1 (%s) and w3 (%s) differ in dtype",
                         file, l, e, wd_dtype_name(L->w1[e]->dtype), wd_dtype_name(L->w3[e]->dtype));
                return 1;
            }
        }
    }
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory while loading", file);
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

int wd_model_load(wd_model **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    wd_model *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "%s: out of memory", path);
        return 1;
    }
    snprintf(m->path, sizeof(m->path), "%s", path);
    char file[1200];
    const char *named = path;
    if (ends_with(path, ".gguf")) {
        if (wd_gguf_open(&m->tensors, &m->cfg, &m->tok, path, err, errlen)) goto fail;
    } else {
        struct stat st;
        if (stat(path, &st) != 0) {
            snprintf(err, errlen, "%s: no such model folder or file", path);
            goto fail;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s: not a model folder (expected config.json + *.safetensors) "
                                  "or a .gguf file", path);
            goto fail;
        }
        snprintf(file, sizeof(file), "%s/config.json", path);
        if (wd_config_load(&m->cfg, file, err, errlen)) goto fail;
        if (wd_safetensors_open(&m->tensors, path, err, errlen)) goto fail;
        snprintf(file, sizeof(file), "%s/tokenizer.json", path);
        if (access(file, F_OK) == 0 && wd_tokenizer_load_json(&m->tok, file, err, errlen))
            goto fail;
    }
    const wd_layout *lay = NULL;
    for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++)
        if (!strcmp(layouts[i].model_type, m->cfg.model_type)) lay = &layouts[i];
    if (!lay) {
        snprintf(err, errlen, "%s: model_type \"%s\" is not supported", named, m->cfg.model_type);
        goto fail;
    }
    if (bind_tensors(m, lay, named, err, errlen)) goto fail;
    if (m->tok && wd_tokenizer_vocab_size(m->tok) > m->cfg.vocab) {
        snprintf(err, errlen, "%s: tokenizer has %d tokens but vocab_size is %d", named,
                 wd_tokenizer_vocab_size(m->tok), m->cfg.vocab);
        goto fail;
    }
    *out = m;
    return 0;
fail:
    wd_model_free(m);
    return 1;
}

void wd_model_free(wd_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            wd_layer *L = &m->layers[l];
            free(L->attn_norm_f32);
            free(L->ffn_norm_f32);
            free(L->w1);
            free(L->w2);
            free(L->w3);
        }
        free(m->layers);
    }
    free(m->norm_f32);
    wd_tokenizer_free(m->tok);
    wd_tensors_free(m->tensors);
    free(m);
}

static double tbytes(const wd_tensor *t) { return t ? (double)t->nbytes : 0; }

double wd_model_active_bytes(const wd_model *m, int k) {
    const wd_config *c = &m->cfg;
    double b = tbytes(m->lm_head) + (double)wd_dtype_bytes(m->embed->dtype, c->hidden); /* one row */
    for (int l = 0; l < c->n_layers; l++) {
        const wd_layer *L = &m->layers[l];
        b += tbytes(L->wq) + tbytes(L->wk) + tbytes(L->wv) + tbytes(L->wo) + tbytes(L->gate);
        b += k * (tbytes(L->w1[0]) + tbytes(L->w2[0]) + tbytes(L->w3[0]));
    }
    return b;
}

size_t wd_mem_available(void) {
    const char *e = getenv("WDMOE_MEM_AVAILABLE_MB");
    if (e && *e) {
        char *end;
        unsigned long long mb = strtoull(e, &end, 10);
        if (!*end) return (size_t)mb << 20;
    }
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb << 10;
}

int wd_model_hugepages(wd_model *m, char *note, size_t notelen) {
    if (notelen) note[0] = 0;
    size_t need = wd_tensors_mapped_bytes(m->tensors), avail = wd_mem_available();
    if (need == 0) return 0;
    if (need > avail / 2) {
        snprintf(note, notelen,
                 "the weights stay file-mapped (4 KB pages): their huge-page copy (%.1f MB) would "
                 "take more than half of the available memory (%.1f MB)",
                 need / 1e6, avail / 1e6);
        return 0;
    }
    char e[512];
    if (wd_tensors_to_hugepages(m->tensors, e, sizeof e)) {
        snprintf(note, notelen, "the weights stay file-mapped (4 KB pages): %s", e);
        return 0;
    }
    return 1;
}
