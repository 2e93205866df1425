/* GGUF reader: the shipped stories260k MoE GGUF against the same model's
 * safetensors (element-wise, which checks the Q/K un-permutation and the
 * expert split), its config, its SPM tokenizer against llama.cpp's ids; small
 * GGUF files written here (dtypes, layouts, closed-form row orders); and
 * malformed files (errors, never crashes). */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"
#include "tests/test_util.h"
#include "weights/weights.h"

#define MODEL_DIR WD_SOURCE_DIR "/weights/models/stories260k"

/* ---- a tiny single-file safetensors reader (F32 only) ------------------ */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    const float *data;
    size_t nbytes;
} st_tensor;

static int st_load(const char *path, char **file, st_tensor **out, int *n_out) {
    size_t len;
    char *buf = wd_test_read_file(path, &len);
    if (!buf || len < 8) return 1;
    uint64_t hl;
    memcpy(&hl, buf, 8);
    if (hl > len - 8) return 1;
    char *hdr = malloc(hl + 1);
    memcpy(hdr, buf + 8, hl);
    hdr[hl] = 0;
    json_object *root = json_tokener_parse(hdr);
    free(hdr);
    if (!root) return 1;
    int n = 0;
    st_tensor *ts = calloc(1024, sizeof(st_tensor));
    json_object_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0 || n >= 1024) continue;
        st_tensor *t = &ts[n++];
        snprintf(t->name, sizeof(t->name), "%s", key);
        json_object *dt, *sh, *off;
        json_object_object_get_ex(val, "dtype", &dt);
        json_object_object_get_ex(val, "shape", &sh);
        json_object_object_get_ex(val, "data_offsets", &off);
        if (!dt || strcmp(json_object_get_string(dt), "F32") != 0) return 1;
        t->ndim = (int)json_object_array_length(sh);
        for (int d = 0; d < t->ndim && d < 4; d++)
            t->shape[d] = json_object_get_int64(json_object_array_get_idx(sh, d));
        int64_t b = json_object_get_int64(json_object_array_get_idx(off, 0));
        int64_t e = json_object_get_int64(json_object_array_get_idx(off, 1));
        t->data = (const float *)(buf + 8 + hl + b);
        t->nbytes = (size_t)(e - b);
    }
    json_object_put(root);
    *file = buf;
    *out = ts;
    *n_out = n;
    return 0;
}

/* ---- test-case files ---------------------------------------------------- */
typedef struct {
    int n;
    char *lines[200];
    int n_ids[200];
    int ids[200][1024];
} cases;

static int load_cases(cases *c, char **tbuf, char **ibuf) {
    *tbuf = wd_test_read_file(MODEL_DIR "/tokenizer-cases.txt", NULL);
    *ibuf = wd_test_read_file(MODEL_DIR "/tokenizer-cases.ids", NULL);
    if (!*tbuf || !*ibuf) return 1;
    c->n = 0;
    char *p = *tbuf, *q = *ibuf;
    while (*p && c->n < 200) {
        char *nl = strchr(p, '\n'), *nq = strchr(q, '\n');
        if (!nl || !nq) return 1;
        *nl = *nq = 0;
        c->lines[c->n] = p;
        int k = 0;
        char *end;
        for (char *s = q; k < 1024;) {
            long v = strtol(s, &end, 10);
            if (end == s) break;
            c->ids[c->n][k++] = (int)v;
            s = end;
        }
        c->n_ids[c->n++] = k;
        p = nl + 1;
        q = nq + 1;
    }
    return 0;
}

/* ---- a GGUF writer for synthetic files ------------------------------------ */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_u32(buf *b, const char *k, uint32_t v) {
    put_str(b, k);
    put_u32(b, 4);
    put_u32(b, v);
}
static void kv_f32(buf *b, const char *k, float v) {
    put_str(b, k);
    put_u32(b, 6);
    put(b, &v, 4);
}
static void kv_str(buf *b, const char *k, const char *v) {
    put_str(b, k);
    put_u32(b, 8);
    put_str(b, v);
}

enum { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };

/* Model shape of the synthetic files */
#define SH 32 /* hidden */
#define SNH 2 /* heads */
#define SNKV 1
#define SHD 16 /* head_dim */
#define SF 32  /* ffn */
#define SE 2   /* experts */
#define SV 8   /* vocab */

typedef struct {
    const char *arch;
    uint32_t version;
    uint32_t align;
    int per_expert; /* blk.N.ffn_gate.E.weight instead of stacked */
    int with_output;
    int dense;
    int dup_key;
    int drop_tensor; /* index of a tensor to leave out, or -1 */
    int gate_experts; /* rows of ffn_gate_inp (SE normally) */
    uint32_t q_type, k_type, embd_type;
    uint32_t down_type; /* stacked ffn_down_exps (Q8_0 by default) */
    int q4_model; /* 1: every matrix Q4_0/Q4_1 (alternating); 2: F32 with the same values */
} spec;

/* Field positions recorded while writing, for targeted corruption. */
typedef struct {
    size_t first_key_len, first_kv_type, tokens_len, ti_start, t0_ndim, t0_type, t0_offset,
        data_start;
} marks;

static size_t type_row_bytes(uint32_t type, int64_t cols) {
    switch (type) {
    case F32: return (size_t)cols * 4;
    case F16: case BF16: return (size_t)cols * 2;
    case Q4_0: return (size_t)(cols / 32) * 18;
    case Q4_1: return (size_t)(cols / 32) * 20;
    default: return (size_t)(cols / 32) * 34;
    }
}

typedef struct {
    char name[64];
    int ndim;
    uint64_t ne[3];
    uint32_t type;
} tdesc;

/* Value of element (row r, col c) of tensor k: exactly representable in F16,
 * BF16 and Q8_0 (scale 1, |v| <= 127). */
static float elem_value(int k, int64_t r, int64_t c) {
    return (float)((k * 7 + r * 3 + c) % 61 - 30);
}
/* Q4_0 / Q4_1 tensors hold 4-bit values instead: q - 8 with scale 1 (and min -8). */
static int q4_value(int k, int64_t r, int64_t c) { return (int)((k * 7 + r * 3 + c) % 16); }
static float type_value(uint32_t type, int k, int64_t r, int64_t c) {
    return type == Q4_0 || type == Q4_1 ? (float)(q4_value(k, r, c) - 8) : elem_value(k, r, c);
}

static void fill_tensor(buf *b, int k, const tdesc *t, int q4_values) {
    int64_t cols = (int64_t)t->ne[0];
    int64_t rows = (int64_t)(t->ne[1] ? t->ne[1] : 1) * (int64_t)(t->ndim == 3 ? t->ne[2] : 1);
    if (t->ndim == 1) rows = 1;
    if (q4_values && t->type == F32) { /* the values a Q4 tensor of this index holds */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float v = (float)(q4_value(k, r, c) - 8);
                put(b, &v, 4);
            }
        return;
    }
    if (t->type == Q4_0 || t->type == Q4_1) {
        const uint16_t one = wd_f32_to_f16(1.0f), m8 = wd_f32_to_f16(-8.0f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c0 = 0; c0 < cols; c0 += 32) {
                put(b, &one, 2);
                if (t->type == Q4_1) put(b, &m8, 2);
                for (int j = 0; j < 16; j++) {
                    uint8_t v = (uint8_t)(q4_value(k, r, c0 + j) | q4_value(k, r, c0 + j + 16) << 4);
                    put(b, &v, 1);
                }
            }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            float v = elem_value(k, r, c);
            if (t->type == F32) put(b, &v, 4);
            else if (t->type == F16) {
                uint16_t h = wd_f32_to_f16(v);
                put(b, &h, 2);
            } else if (t->type == BF16) {
                uint16_t h = wd_f32_to_bf16(v);
                put(b, &h, 2);
            } else if (t->type == Q8_0) {
                if (c % 32 == 0) {
                    uint16_t d = wd_f32_to_f16(1.0f);
                    put(b, &d, 2);
                }
                int8_t q = (int8_t)v;
                put(b, &q, 1);
            }
        }
    }
}

static int make_tdescs(const spec *s, tdesc *t) {
    int n = 0;
#define T(nm, nd, a, b_, c_, ty)                                   \
    do {                                                           \
        snprintf(t[n].name, sizeof(t[n].name), "%s", nm);          \
        t[n].ndim = nd;                                            \
        t[n].ne[0] = a;                                            \
        t[n].ne[1] = b_;                                           \
        t[n].ne[2] = c_;                                           \
        t[n].type = ty;                                            \
        if (s->q4_model && nd > 1) /* gate and up share a type (w1, w3) */             \
            t[n].type = s->q4_model == 2 ? F32 : n % 2 && !strstr(t[n].name, "_up") ? Q4_0 : Q4_1; \
        n++;                                                       \
    } while (0)
    T("token_embd.weight", 2, SH, SV, 0, s->embd_type);
    T("output_norm.weight", 1, SH, 0, 0, F32);
    if (s->with_output) T("output.weight", 2, SH, SV, 0, F16);
    T("blk.0.attn_norm.weight", 1, SH, 0, 0, F32);
    T("blk.0.attn_q.weight", 2, SH, SNH * SHD, 0, s->q_type);
    T("blk.0.attn_k.weight", 2, SH, SNKV * SHD, 0, s->k_type);
    T("blk.0.attn_v.weight", 2, SH, SNKV * SHD, 0, F32);
    T("blk.0.attn_output.weight", 2, SNH * SHD, SH, 0, F32);
    T("blk.0.ffn_norm.weight", 1, SH, 0, 0, F32);
    if (s->dense) {
        T("blk.0.ffn_gate.weight", 2, SH, SF, 0, F32);
        T("blk.0.ffn_up.weight", 2, SH, SF, 0, F32);
        T("blk.0.ffn_down.weight", 2, SF, SH, 0, F32);
    } else {
        T("blk.0.ffn_gate_inp.weight", 2, SH, (uint64_t)s->gate_experts, 0, F32);
        if (s->per_expert) {
            for (int e = 0; e < SE; e++) {
                char nm[64];
                snprintf(nm, sizeof(nm), "blk.0.ffn_gate.%d.weight", e);
                T(nm, 2, SH, SF, 0, F32);
                snprintf(nm, sizeof(nm), "blk.0.ffn_down.%d.weight", e);
                T(nm, 2, SF, SH, 0, Q8_0);
                snprintf(nm, sizeof(nm), "blk.0.ffn_up.%d.weight", e);
                T(nm, 2, SH, SF, 0, BF16);
            }
        } else {
            T("blk.0.ffn_gate_exps.weight", 3, SH, SF, SE, F32);
            T("blk.0.ffn_up_exps.weight", 3, SH, SF, SE, BF16);
            T("blk.0.ffn_down_exps.weight", 3, SF, SH, SE, s->down_type);
        }
    }
#undef T
    return n;
}

static const char *tok_strs[SV] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b",
                                   "\xE2\x96\x81\x61", "ab"};

static buf build(const spec *s, marks *m, float score_a_pref, float score_ab) {
    buf b = {0};
    tdesc t[32];
    int nt = make_tdescs(s, t);
    int keep[32], nk = 0;
    for (int i = 0; i < nt; i++)
        if (i != s->drop_tensor) keep[nk++] = i;
    put(&b, "GGUF", 4);
    put_u32(&b, s->version);
    put_u64(&b, (uint64_t)nk);
    int nkv = 17 + (s->align ? 1 : 0) + (s->dup_key ? 1 : 0) + (s->dense ? -2 : 0);
    put_u64(&b, (uint64_t)nkv);
    m->first_key_len = b.n;
    put_str(&b, "general.architecture");
    m->first_kv_type = b.n;
    put_u32(&b, 8);
    put_str(&b, s->arch);
    if (s->align) kv_u32(&b, "general.alignment", s->align);
    kv_u32(&b, "llama.context_length", 256);
    kv_u32(&b, "llama.embedding_length", SH);
    kv_u32(&b, "llama.block_count", 1);
    kv_u32(&b, "llama.feed_forward_length", SF);
    kv_u32(&b, "llama.attention.head_count", SNH);
    kv_u32(&b, "llama.attention.head_count_kv", SNKV);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    kv_f32(&b, "llama.rope.freq_base", 500000.0f);
    if (!s->dense) {
        kv_u32(&b, "llama.expert_count", SE);
        kv_u32(&b, "llama.expert_used_count", 1);
    }
    if (s->dup_key) kv_u32(&b, "llama.block_count", 1);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, 9);
    put_u32(&b, 8);
    m->tokens_len = b.n;
    put_u64(&b, SV);
    for (int i = 0; i < SV; i++) put_str(&b, tok_strs[i]);
    put_str(&b, "tokenizer.ggml.scores");
    put_u32(&b, 9);
    put_u32(&b, 6);
    put_u64(&b, SV);
    float scores[SV] = {0, 0, 0, -1, -2, -3, score_a_pref, score_ab};
    put(&b, scores, sizeof(scores));
    put_str(&b, "tokenizer.ggml.token_type");
    put_u32(&b, 9);
    put_u32(&b, 5);
    put_u64(&b, SV);
    int32_t types[SV] = {2, 3, 3, 1, 1, 1, 1, 1};
    put(&b, types, sizeof(types));
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    /* tensor infos */
    uint32_t align = s->align ? s->align : 32;
    uint64_t off = 0;
    uint64_t offs[32];
    m->ti_start = b.n;
    for (int j = 0; j < nk; j++) {
        const tdesc *d = &t[keep[j]];
        put_str(&b, d->name);
        if (j == 0) m->t0_ndim = b.n;
        put_u32(&b, (uint32_t)d->ndim);
        for (int k = 0; k < d->ndim; k++) put_u64(&b, d->ne[k]);
        if (j == 0) m->t0_type = b.n;
        put_u32(&b, d->type);
        if (j == 0) m->t0_offset = b.n;
        put_u64(&b, off);
        offs[j] = off;
        size_t rows = d->ndim == 1 ? 1 : (size_t)d->ne[1] * (d->ndim == 3 ? d->ne[2] : 1);
        off += type_row_bytes(d->type, (int64_t)d->ne[0]) * rows;
        off = (off + align - 1) / align * align;
    }
    while (b.n % align) put(&b, "", 1);
    m->data_start = b.n;
    for (int j = 0; j < nk; j++) {
        while (b.n < m->data_start + offs[j]) put(&b, "", 1);
        fill_tensor(&b, keep[j], &t[keep[j]], s->q4_model != 0);
    }
    return b;
}

static spec default_spec(void) {
    spec s = {"llama", 3, 0, 0, 0, 0, 0, -1, SE, F16, Q8_0, BF16, Q8_0, 0};
    return s;
}

static char g_dir[] = "/tmp/wd_test_gguf_XXXXXX";

static const char *tmp_path(const char *name) {
    static char p[256];
    snprintf(p, sizeof(p), "%s/%s.gguf", g_dir, name);
    return p;
}

/* Expects wd_gguf_open on bytes to fail with an error naming the file and containing want. */
static void expect_fail(const char *name, const void *bytes, size_t n, const char *want) {
    const char *path = tmp_path(name);
    CHECK(wd_test_write_file(path, bytes, n) == 0);
    wd_tensors *ts = (wd_tensors *)1;
    wd_tokenizer *tok = (wd_tokenizer *)1;
    wd_config cfg;
    char err[512] = "";
    int rc = wd_gguf_open(&ts, &cfg, &tok, path, err, sizeof(err));
    CHECKF(rc != 0, "%s: opened", name);
    CHECK(ts == NULL && tok == NULL);
    CHECKF(strstr(err, path) && (!want || strstr(err, want)), "%s: error \"%s\" (want \"%s\")",
           name, err, want ? want : "");
    if (rc == 0) {
        wd_tensors_free(ts);
        wd_tokenizer_free(tok);
    }
}

/* Element (r, c) of a 2-D wd_tensor as float. */
static float tget(const wd_tensor *t, int64_t r, int64_t c) {
    float row[256];
    wd_row_to_f32(row, t->data, t->dtype, r, (int)t->shape[1]);
    return row[c];
}

static void test_shipped(void) {
    char err[512] = "";
    wd_tensors *ts = NULL;
    wd_tokenizer *tok = NULL;
    wd_config g, h;
    int rc = wd_gguf_open(&ts, &g, &tok, MODEL_DIR "/moe4-top2.gguf", err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    rc = wd_config_load(&h, MODEL_DIR "/moe4-top2/config.json", err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    CHECK(strcmp(g.model_type, h.model_type) == 0);
    CHECK(g.hidden == h.hidden && g.n_layers == h.n_layers && g.n_heads == h.n_heads);
    CHECK(g.n_kv_heads == h.n_kv_heads && g.head_dim == h.head_dim && g.ffn == h.ffn);
    CHECK(g.n_experts == h.n_experts && g.top_k == h.top_k && g.vocab == h.vocab);
    CHECK(g.max_pos == h.max_pos && g.tie_embeddings == h.tie_embeddings);
    CHECK(g.bos_id == h.bos_id && g.eos_id == h.eos_id);
    CHECK(g.rms_eps == h.rms_eps && g.rope_theta == h.rope_theta);

    /* every tensor equals the safetensors tensor of the same name, and vice versa */
    char *stfile = NULL;
    st_tensor *st = NULL;
    int nst = 0;
    CHECK(st_load(MODEL_DIR "/moe4-top2/model.safetensors", &stfile, &st, &nst) == 0);
    CHECK(nst == wd_tensors_count(ts));
    CHECK(nst == 2 + g.n_layers * (7 + 3 * g.n_experts));
    int bad = 0;
    for (int i = 0; i < nst; i++) {
        const wd_tensor *t = wd_tensors_find(ts, st[i].name);
        if (!t) {
            fprintf(stderr, "GGUF lacks %s\n", st[i].name);
            bad++;
            continue;
        }
        int same = t->dtype == WD_DT_F32 && t->ndim == st[i].ndim && t->nbytes == st[i].nbytes;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == st[i].shape[d];
        if (same) same = memcmp(t->data, st[i].data, t->nbytes) == 0;
        if (!same) {
            fprintf(stderr, "GGUF tensor %s differs from the safetensors one\n", st[i].name);
            bad++;
        }
    }
    CHECKF(bad == 0, "%d tensors differ", bad);
    /* stacked experts are views into the mapping (consecutive), Q/K are copies */
    const wd_tensor *e0 = wd_tensors_find(ts, "model.layers.2.block_sparse_moe.experts.0.w2.weight");
    const wd_tensor *e1 = wd_tensors_find(ts, "model.layers.2.block_sparse_moe.experts.1.w2.weight");
    CHECK(e0 && e1 && (const char *)e1->data == (const char *)e0->data + e0->nbytes);
    CHECK(wd_tensors_find(ts, "lm_head.weight") == NULL);

    /* the GGUF vocab encodes llama.cpp's cases and decodes llama2.c's greedy output */
    CHECK(tok && wd_tokenizer_vocab_size(tok) == 512 && wd_tokenizer_bos(tok) == 1 &&
          wd_tokenizer_eos(tok) == 2);
    static cases c;
    char *tb = NULL, *ib = NULL;
    CHECK(load_cases(&c, &tb, &ib) == 0 && c.n == 119);
    int badc = 0;
    for (int i = 0; tok && i < c.n; i++) {
        int *ids, n;
        CHECK(wd_tokenizer_encode(tok, c.lines[i], 1, &ids, &n) == 0);
        if (n != c.n_ids[i] || memcmp(ids, c.ids[i], (size_t)n * sizeof(int)) != 0) {
            if (badc++ < 3) fprintf(stderr, "GGUF vocab: case %d \"%.50s\" differs\n", i + 1, c.lines[i]);
        }
        free(ids);
    }
    CHECKF(badc == 0, "%d cases differ", badc);
    json_object *gj = json_object_from_file(MODEL_DIR "/greedy_tokens.json");
    size_t wl = 0;
    char *want = wd_test_read_file(MODEL_DIR "/greedy-200.txt", &wl);
    CHECK(gj && want);
    if (gj && want && tok) {
        int n = (int)json_object_array_length(gj);
        int *ids = malloc((size_t)n * sizeof(int));
        for (int i = 0; i < n; i++) ids[i] = json_object_get_int(json_object_array_get_idx(gj, i));
        char *s = wd_tokenizer_decode(tok, ids, n);
        CHECK(s && strlen(s) == wl && memcmp(s, want, wl) == 0);
        free(s);
        free(ids);
    }
    if (gj) json_object_put(gj);
    free(want);
    free(tb);
    free(ib);
    free(st);
    free(stfile);
    wd_tokenizer_free(tok);
    wd_tensors_free(ts);

    /* the vocab alone; and without a tokenizer pointer */
    CHECK(wd_gguf_load_tokenizer(&tok, MODEL_DIR "/moe4-top2.gguf", err, sizeof(err)) == 0);
    CHECK(tok && wd_tokenizer_vocab_size(tok) == 512);
    wd_tokenizer_free(tok);
    CHECK(wd_gguf_open(&ts, &g, NULL, MODEL_DIR "/moe4-top2.gguf", err, sizeof(err)) == 0);
    wd_tensors_free(ts);
}

static void test_synthetic(void) {
    char err[512];
    marks m;
    spec s = default_spec();
    /* 1. stacked experts, mixed dtypes: closed-form element checks */
    for (int variant = 0; variant < 5; variant++) {
        s = default_spec();
        if (variant == 1) {
            s.per_expert = 1;
            s.with_output = 1;
            s.align = 64;
            s.version = 2;
        }
        if (variant == 2) {
            s.q_type = Q8_0;
            s.k_type = F32;
            s.embd_type = F32;
        }
        if (variant == 3) s.dense = 1;
        if (variant == 4) { /* 4-bit quantised tensors (row offsets, Q/K unpermute, expert views) */
            s.q_type = Q4_0;
            s.k_type = Q4_1;
            s.embd_type = Q4_1;
            s.down_type = Q4_0;
        }
        buf b = build(&s, &m, -1.5f, -1.0f);
        const char *path = tmp_path("synth");
        CHECK(wd_test_write_file(path, b.p, b.n) == 0);
        free(b.p);
        wd_tensors *ts = NULL;
        wd_tokenizer *tok = NULL;
        wd_config cfg;
        int rc = wd_gguf_open(&ts, &cfg, &tok, path, err, sizeof(err));
        CHECKF(rc == 0, "variant %d: %s", variant, err);
        if (rc) continue;
        CHECK(cfg.hidden == SH && cfg.n_layers == 1 && cfg.n_heads == SNH && cfg.n_kv_heads == SNKV);
        CHECK(cfg.head_dim == SHD && cfg.ffn == SF && cfg.vocab == SV && cfg.max_pos == 256);
        CHECK(cfg.n_experts == (s.dense ? 1 : SE) && cfg.top_k == 1);
        CHECK(cfg.rms_eps == 1e-6f && cfg.rope_theta == 500000.0f);
        CHECK(cfg.tie_embeddings == !s.with_output && cfg.bos_id == 1 && cfg.eos_id == 2);
        CHECK(strcmp(cfg.model_type, s.dense ? "llama" : "mixtral") == 0);
        tdesc td[32];
        int nt = make_tdescs(&s, td);
        /* index of each GGUF tensor in td (the value generator's k) */
        int kq = -1, kk = -1, kemb = 0, kg = -1, ku = -1, kd = -1, kout = -1, kgi = -1;
        for (int i = 0; i < nt; i++) {
            if (!strcmp(td[i].name, "blk.0.attn_q.weight")) kq = i;
            if (!strcmp(td[i].name, "blk.0.attn_k.weight")) kk = i;
            if (!strcmp(td[i].name, "blk.0.ffn_gate_exps.weight")) kg = i;
            if (!strcmp(td[i].name, "blk.0.ffn_up_exps.weight")) ku = i;
            if (!strcmp(td[i].name, "blk.0.ffn_down_exps.weight")) kd = i;
            if (!strcmp(td[i].name, "output.weight")) kout = i;
            if (!strcmp(td[i].name, "blk.0.ffn_gate_inp.weight")) kgi = i;
        }
        int nbad = 0;
        /* Q/K: HF row h*hd + j*hd/2 + i is GGUF row h*hd + 2i + j */
        const wd_tensor *q = wd_tensors_find(ts, "model.layers.0.self_attn.q_proj.weight");
        const wd_tensor *k = wd_tensors_find(ts, "model.layers.0.self_attn.k_proj.weight");
        CHECK(q && k && q->shape[0] == SNH * SHD && q->shape[1] == SH && k->shape[0] == SNKV * SHD);
        for (int w = 0; q && k && w < 2; w++) {
            const wd_tensor *t = w ? k : q;
            int nh = w ? SNKV : SNH;
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < SHD / 2; i++)
                        for (int c = 0; c < SH; c++) {
                            int64_t hf = h * SHD + j * (SHD / 2) + i, gg = h * SHD + 2 * i + j;
                            nbad += tget(t, hf, c) != type_value(w ? s.k_type : s.q_type,
                                                                 w ? kk : kq, gg, c);
                        }
        }
        const wd_tensor *emb = wd_tensors_find(ts, "model.embed_tokens.weight");
        CHECK(emb && emb->shape[0] == SV && emb->shape[1] == SH);
        for (int r = 0; emb && r < SV; r++)
            for (int c = 0; c < SH; c++) nbad += tget(emb, r, c) != type_value(s.embd_type, kemb, r, c);
        if (s.with_output) {
            const wd_tensor *o = wd_tensors_find(ts, "lm_head.weight");
            CHECK(o && o->dtype == WD_DT_F16);
            for (int r = 0; o && r < SV; r++)
                for (int c = 0; c < SH; c++) nbad += tget(o, r, c) != elem_value(kout, r, c);
        } else {
            CHECK(wd_tensors_find(ts, "lm_head.weight") == NULL);
        }
        if (!s.dense && !s.per_expert) {
            const int kk3[3] = {kg, kd, ku};
            const char *wn[3] = {"w1", "w2", "w3"};
            const wd_dtype dts[3] = {WD_DT_F32, s.down_type == Q4_0 ? WD_DT_Q4_0 : WD_DT_Q8_0, WD_DT_BF16};
            const uint32_t gtypes[3] = {F32, s.down_type, BF16};
            for (int e = 0; e < SE; e++)
                for (int x = 0; x < 3; x++) {
                    char nm[128];
                    snprintf(nm, sizeof(nm), "model.layers.0.block_sparse_moe.experts.%d.%s.weight", e, wn[x]);
                    const wd_tensor *t = wd_tensors_find(ts, nm);
                    CHECK(t && t->dtype == dts[x] && t->ndim == 2);
                    int64_t rows = x == 1 ? SH : SF;
                    for (int64_t r = 0; t && r < rows; r++)
                        for (int c = 0; c < t->shape[1]; c++)
                            nbad += tget(t, r, c) != type_value(gtypes[x], kk3[x], e * rows + r, c);
                }
            const wd_tensor *gi = wd_tensors_find(ts, "model.layers.0.block_sparse_moe.gate.weight");
            CHECK(gi && gi->shape[0] == SE && gi->shape[1] == SH);
            for (int r = 0; gi && r < SE; r++)
                for (int c = 0; c < SH; c++) nbad += tget(gi, r, c) != elem_value(kgi, r, c);
        }
        if (s.per_expert) {
            for (int e = 0; e < SE; e++) {
                char nm[128];
                snprintf(nm, sizeof(nm), "model.layers.0.block_sparse_moe.experts.%d.w2.weight", e);
                const wd_tensor *t = wd_tensors_find(ts, nm);
                CHECK(t && t->dtype == WD_DT_Q8_0 && t->shape[0] == SH && t->shape[1] == SF);
            }
        }
        if (s.dense) {
            /* a dense llama has no router: HF Llama names for its one FFN */
            CHECK(!wd_tensors_find(ts, "model.layers.0.block_sparse_moe.gate.weight"));
            const wd_tensor *w2 = wd_tensors_find(ts, "model.layers.0.mlp.down_proj.weight");
            CHECK(w2 && w2->shape[0] == SH && w2->shape[1] == SF);
            CHECK(wd_tensors_find(ts, "model.layers.0.mlp.gate_proj.weight"));
            CHECK(wd_tensors_find(ts, "model.layers.0.mlp.up_proj.weight"));
        }
        CHECKF(nbad == 0, "variant %d: %d elements differ", variant, nbad);
        CHECK(wd_tensors_count(ts) ==
              2 + (s.with_output ? 1 : 0) + 6 + (s.dense ? 0 : 1) + 3 * cfg.n_experts);
        /* SPM by score: "ab a" -> "▁ab▁a" */
        int *ids, n;
        CHECK(tok && wd_tokenizer_encode(tok, "ab a", 0, &ids, &n) == 0);
        if (tok) {
            /* "ab" (-1.0) outranks "▁a" (-1.5): ▁ ab ▁a */
            CHECK(n == 3 && ids[0] == 3 && ids[1] == 7 && ids[2] == 6);
            free(ids);
            /* unknown characters without byte tokens become <unk>; specials literal */
            CHECK(wd_tokenizer_encode(tok, "a c</s>", 1, &ids, &n) == 0);
            CHECK(n == 5 && ids[0] == 1 && ids[1] == 6 && ids[2] == 3 && ids[3] == 0 && ids[4] == 2);
            free(ids);
        }
        wd_tokenizer_free(tok);
        wd_tensors_free(ts);
    }
    /* score order reversed: "▁a" (-0.5) first; and equal scores: leftmost first */
    for (int tie = 0; tie < 2; tie++) {
        s = default_spec();
        buf b = build(&s, &m, tie ? -1.0f : -0.5f, -1.0f);
        const char *path = tmp_path("synth2");
        CHECK(wd_test_write_file(path, b.p, b.n) == 0);
        free(b.p);
        wd_tokenizer *tok = NULL;
        CHECKF(wd_gguf_load_tokenizer(&tok, path, err, sizeof(err)) == 0, "%s", err);
        int *ids, n;
        CHECK(tok && wd_tokenizer_encode(tok, "ab a", 0, &ids, &n) == 0);
        if (tok) {
            CHECK(n == 3 && ids[0] == 6 && ids[1] == 5 && ids[2] == 6);
            free(ids);
        }
        wd_tokenizer_free(tok);
    }

    /* 2. malformed files */
    s = default_spec();
    buf good = build(&s, &m, -1.5f, -1.0f);
    uint8_t *x = malloc(good.n);
#define MUTATE(name, want, code)                  \
    do {                                          \
        memcpy(x, good.p, good.n);                \
        size_t xn = good.n;                       \
        code;                                     \
        expect_fail(name, x, xn, want);           \
    } while (0)
    MUTATE("magic", "bad magic", x[0] = 'X');
    MUTATE("version99", "unknown GGUF version 99", { uint32_t v = 99; memcpy(x + 4, &v, 4); });
    MUTATE("version1", "version 1", { uint32_t v = 1; memcpy(x + 4, &v, 4); });
    MUTATE("bigendian", "big-endian", { uint32_t v = 3u << 24; memcpy(x + 4, &v, 4); });
    MUTATE("empty", "truncated", xn = 0);
    MUTATE("cut10", "truncated", xn = 10);
    MUTATE("cut30", "", xn = 30);
    MUTATE("cut_kv", "", xn = m.tokens_len + 20);
    MUTATE("cut_ti", "", xn = m.ti_start + 9);
    MUTATE("cut_data", "past the end", xn = m.data_start + 100);
    MUTATE("cut_last", "past the end", xn = good.n - 1);
    MUTATE("keylen", "past the end", { uint64_t v = (uint64_t)1 << 62; memcpy(x + m.first_key_len, &v, 8); });
    MUTATE("kvtype", "unknown value type 77", { uint32_t v = 77; memcpy(x + m.first_kv_type, &v, 4); });
    MUTATE("hugearray", "runs past the end", { uint64_t v = (uint64_t)1 << 62; memcpy(x + m.tokens_len, &v, 8); });
    MUTATE("array_1", "", { uint64_t v = SV + 1; memcpy(x + m.tokens_len, &v, 8); });
    MUTATE("ndims5", "5 dimensions", { uint32_t v = 5; memcpy(x + m.t0_ndim, &v, 4); });
    MUTATE("ndims0", "0 dimensions", { uint32_t v = 0; memcpy(x + m.t0_ndim, &v, 4); });
    MUTATE("type999", "unknown ggml type 999", { uint32_t v = 999; memcpy(x + m.t0_type, &v, 4); });
    MUTATE("typeq2k", "type Q2_K, which is not supported", { uint32_t v = 10; memcpy(x + m.t0_type, &v, 4); });
    /* token_embd has rows of 32: not a whole Q4_K block of 256 */
    MUTATE("typeq4k", "Q4_K tensor \"token_embd.weight\" has a row of 32 (not a multiple of 256)",
           { uint32_t v = 12; memcpy(x + m.t0_type, &v, 4); });
    MUTATE("offset_far", "past the end", { uint64_t v = (uint64_t)1 << 40; memcpy(x + m.t0_offset, &v, 8); });
    MUTATE("offset_wrap", "", { uint64_t v = UINT64_MAX - 31; memcpy(x + m.t0_offset, &v, 8); });
    MUTATE("offset_end", "past the end", {
        uint64_t v = (uint64_t)(good.n - m.data_start + 31) / 32 * 32;
        memcpy(x + m.t0_offset, &v, 8);
    });
    MUTATE("offset_misaligned", "alignment", { uint64_t v = 4; memcpy(x + m.t0_offset, &v, 8); });
    free(x);
    free(good.p);
    /* semantic errors */
    struct {
        const char *name, *want;
        spec s;
    } sem[8];
    int ns = 0;
    sem[ns].name = "arch", sem[ns].want = "architecture \"gpt2\"", sem[ns].s = default_spec(), sem[ns].s.arch = "gpt2", ns++;
    sem[ns].name = "dupkey", sem[ns].want = "duplicate metadata key", sem[ns].s = default_spec(), sem[ns].s.dup_key = 1, ns++;
    sem[ns].name = "missing", sem[ns].want = "missing tensor", sem[ns].s = default_spec(), sem[ns].s.drop_tensor = 5, ns++;
    sem[ns].name = "gateshape", sem[ns].want = "has shape [3, 32]", sem[ns].s = default_spec(), sem[ns].s.gate_experts = 3, ns++;
    sem[ns].name = "align3", sem[ns].want = "not a power of two", sem[ns].s = default_spec(), sem[ns].s.align = 48, ns++;
    for (int i = 0; i < ns; i++) {
        buf b = build(&sem[i].s, &m, -1.5f, -1.0f);
        expect_fail(sem[i].name, b.p, b.n, sem[i].want);
        free(b.p);
    }
    /* the vocab-only GGUF path on a file without a tokenizer */
    {
        buf b = {0};
        put(&b, "GGUF", 4);
        put_u32(&b, 3);
        put_u64(&b, 0);
        put_u64(&b, 1);
        kv_str(&b, "general.architecture", "llama");
        const char *path = tmp_path("notok");
        CHECK(wd_test_write_file(path, b.p, b.n) == 0);
        wd_tokenizer *tok = (wd_tokenizer *)1;
        CHECK(wd_gguf_load_tokenizer(&tok, path, err, sizeof(err)) != 0 && tok == NULL);
        CHECKF(strstr(err, "tokenizer.ggml.model"), "%s", err);
        free(b.p);
        CHECK(wd_gguf_load_tokenizer(&tok, tmp_path("does-not-exist"), err, sizeof(err)) != 0);
        CHECKF(strstr(err, "cannot open"), "%s", err);
    }

    /* 3. random corruption: never a crash (run under WDMOE_SANITIZE to catch more) */
    {
        s = default_spec();
        good = build(&s, &m, -1.5f, -1.0f);
        x = malloc(good.n);
        uint64_t rng = 12345;
        int opened = 0;
        for (int it = 0; it < 400; it++) {
            memcpy(x, good.p, good.n);
            size_t xn = good.n;
            int flips = 1 + it % 4;
            for (int f = 0; f < flips; f++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                size_t pos = (size_t)(rng >> 33) % m.data_start; /* the header */
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                x[pos] = (uint8_t)(rng >> 56);
            }
            if (it % 5 == 0) xn = (size_t)(rng >> 20) % good.n;
            const char *path = tmp_path("fuzz");
            wd_test_write_file(path, x, xn);
            wd_tensors *ts = NULL;
            wd_tokenizer *tok = NULL;
            wd_config cfg;
            if (wd_gguf_open(&ts, &cfg, &tok, path, err, sizeof(err)) == 0) {
                opened++;
                int *ids, n;
                if (wd_tokenizer_encode(tok, "ab a </s> b", 1, &ids, &n) == 0) free(ids);
                wd_tensors_free(ts);
                wd_tokenizer_free(tok);
            } else {
                CHECK(err[0] != 0);
            }
        }
        printf("fuzz: %d of 400 corrupted files still opened\n", opened);
        free(x);
        free(good.p);
    }
}

/* A whole model through wd_model_load and wd_forward with every matrix Q4_0 or
 * Q4_1 (embedding lookup, Q/K row order, experts, LM head on the blocks)
 * against the same model stored as F32. Every matmul with fewer than 8 tokens
 * (all of them here: 3 prompt tokens, 2 decode steps, experts on their share)
 * runs the Q4 weights on tokens quantised to Q8 blocks, the F32 model on fp32
 * tokens: logits rel L2 measured 0.0127, checked <= 0.05 (a wrong row order
 * or block layout is O(1)); the kernels themselves: test_quant. */
static void test_quantised_model(void) {
    char err[512];
    float *lg[2] = {NULL, NULL};
    const int toks[5] = {1, 4, 7, 3, 5}, n = 5;
    for (int v = 0; v < 2; v++) {
        spec s = default_spec();
        s.with_output = 1;
        s.q4_model = v ? 2 : 1;
        marks m;
        buf b = build(&s, &m, -1.5f, -1.0f);
        const char *path = tmp_path(v ? "model_f32" : "model_q4");
        CHECK(wd_test_write_file(path, b.p, b.n) == 0);
        free(b.p);
        wd_model *md = NULL;
        int rc = wd_model_load(&md, path, err, sizeof err);
        CHECKF(rc == 0, "%s", err);
        if (rc) continue;
        CHECK(md->embed->dtype == (v ? WD_DT_F32 : WD_DT_Q4_1) && md->layers[0].wq->dtype == (v ? WD_DT_F32 : WD_DT_Q4_1));
        CHECK(md->layers[0].wk->dtype == (v ? WD_DT_F32 : WD_DT_Q4_0) && md->lm_head->dtype == (v ? WD_DT_F32 : WD_DT_Q4_1));
        wd_pool *pool = wd_pool_create(2);
        wd_session *ses = wd_session_create(md, 16, pool);
        lg[v] = malloc(sizeof(float) * n * SV);
        CHECK(ses && lg[v]);
        if (ses && lg[v]) {
            rc = wd_forward(ses, toks, 3, lg[v], 1, err, sizeof err); /* prefill 3, decode 2 */
            for (int t = 3; !rc && t < n; t++) rc = wd_forward(ses, toks + t, 1, lg[v] + t * SV, 0, err, sizeof err);
            CHECKF(rc == 0, "%s", err);
        }
        wd_session_free(ses);
        wd_pool_destroy(pool);
        wd_model_free(md);
    }
    if (lg[0] && lg[1]) {
        double num = 0, den = 0;
        int finite = 1;
        for (int i = 0; i < n * SV; i++) {
            finite &= isfinite(lg[0][i]) && isfinite(lg[1][i]);
            num += ((double)lg[0][i] - lg[1][i]) * ((double)lg[0][i] - lg[1][i]);
            den += (double)lg[1][i] * lg[1][i];
        }
        double e = sqrt(num / (den > 0 ? den : 1));
        CHECKF(finite && den > 0 && e <= 0.05, "Q4 model vs F32 model: logits rel L2 %.3g", e);
        printf("  Q4_0/Q4_1 model vs the same values in F32: logits rel L2 %.2g (%d positions)\n", e, n);
    }
    free(lg[0]);
    free(lg[1]);
}

int main(void) {
    CHECK(mkdtemp(g_dir) != NULL);
    test_shipped();
    test_synthetic();
    test_quantised_model();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return wd_test_finish("test_gguf");
}
