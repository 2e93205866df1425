/* safetensors loading (hand-written files, sharded folders, the shipped
 * stories260k model) and the synthetic-model writer (round trips through
 * wd_config_load and wd_safetensors_open, values, dtypes, sharding). */
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "tests/st_util.h"
#include "tests/test_util.h"
#include "weights/weights.h"

static char err[2048];

static int shape_is(const wd_tensor *t, int ndim, int64_t d0, int64_t d1) {
    if (!t || t->ndim != ndim) return 0;
    if (ndim >= 1 && t->shape[0] != d0) return 0;
    if (ndim >= 2 && t->shape[1] != d1) return 0;
    return 1;
}

/* ---- hand-written files ------------------------------------------------- */
static void test_single_file(void) {
    char *dir = st_mkdtemp("st_single");
    /* references: IEEE binary32 / binary16 / bfloat16 bit patterns */
    float f32[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -1e30f};
    uint16_t f16[4] = {0x3C00, 0xC000, 0x3555, 0x7BFF}; /* 1, -2, 0.333251953125, 65504 */
    uint16_t bf16[4] = {0x3F80, 0x4049, 0xC2F7, 0x0001}; /* 1, 3.140625, -123.5, 2^-133 */
    float scalar = 42.0f;
    st_builder b;
    stb_init(&b);
    stb_add(&b, "a.f32", "F32", 2, (int64_t[]){2, 3}, f32, sizeof(f32));
    stb_add(&b, "b.f16", "F16", 1, (int64_t[]){4}, f16, sizeof(f16));
    stb_add(&b, "c.bf16", "BF16", 2, (int64_t[]){2, 2}, bf16, sizeof(bf16));
    stb_add(&b, "d.scalar", "F32", 0, NULL, &scalar, 4);
    stb_add(&b, "e.empty", "F32", 2, (int64_t[]){0, 5}, NULL, 0);
    char *path = st_path(dir, "x.safetensors");
    stb_write(&b, path);

    wd_tensors *ts = NULL;
    int rc = wd_safetensors_open(&ts, path, err, sizeof(err));
    CHECKF(rc == 0 && ts, "%s", err);
    if (!ts) return;
    CHECK(wd_tensors_count(ts) == 5);
    CHECK(wd_tensors_total_bytes(ts) == sizeof(f32) + sizeof(f16) + sizeof(bf16) + 4);
    const wd_tensor *a = wd_tensors_find(ts, "a.f32"), *f = wd_tensors_find(ts, "b.f16"),
                    *c = wd_tensors_find(ts, "c.bf16"), *d = wd_tensors_find(ts, "d.scalar"),
                    *e = wd_tensors_find(ts, "e.empty");
    CHECK(a && f && c && d && e);
    CHECK(!wd_tensors_find(ts, "a.f3") && !wd_tensors_find(ts, "") && !wd_tensors_find(ts, "zz"));
    if (!(a && f && c && d && e)) return;
    CHECK(a->dtype == WD_DT_F32 && shape_is(a, 2, 2, 3) && a->nbytes == 24);
    CHECK(f->dtype == WD_DT_F16 && shape_is(f, 1, 4, 0) && f->nbytes == 8);
    CHECK(c->dtype == WD_DT_BF16 && shape_is(c, 2, 2, 2) && c->nbytes == 8);
    CHECK(d->ndim == 0 && d->nbytes == 4 && ((const float *)d->data)[0] == 42.0f);
    CHECK(e->nbytes == 0 && shape_is(e, 2, 0, 5));
    CHECK(memcmp(a->data, f32, sizeof(f32)) == 0);
    const uint16_t *hf = f->data, *hb = c->data;
    CHECK(wd_f16_to_f32(hf[0]) == 1.0f && wd_f16_to_f32(hf[1]) == -2.0f);
    CHECK(wd_f16_to_f32(hf[2]) == 0.333251953125f && wd_f16_to_f32(hf[3]) == 65504.0f);
    CHECK(wd_bf16_to_f32(hb[0]) == 1.0f && wd_bf16_to_f32(hb[1]) == 3.140625f);
    CHECK(wd_bf16_to_f32(hb[2]) == -123.5f && wd_bf16_to_f32(hb[3]) == ldexpf(1.0f, -133));
    /* data points into a mapping of the file: nothing copied */
    char real[PATH_MAX];
    if (realpath(path, real)) {
        CHECK(st_addr_in_file_mapping(a->data, real) == 1);
        CHECK(st_addr_in_file_mapping(c->data, real) == 1);
    }
    /* wd_tensors_at: in file order (by data offset) */
    CHECK(wd_tensors_at(ts, 0) && wd_tensors_at(ts, 4) && !wd_tensors_at(ts, 5) &&
          !wd_tensors_at(ts, -1));
    CHECK(strcmp(wd_tensors_at(ts, 0)->name, "a.f32") == 0);
    wd_tensors_free(ts);
    if (realpath(path, real)) CHECK(st_count_maps(real) == 0); /* unmapped */

    /* trailing spaces after the header object are padding */
    st_write(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}       ",
             f32, 8);
    rc = wd_safetensors_open(&ts, path, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (!rc) {
        CHECK(wd_tensors_count(ts) == 1 && wd_tensors_find(ts, "w"));
        wd_tensors_free(ts);
    }
    /* a folder with model.safetensors */
    st_write(st_path(dir, "model.safetensors"),
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}}", f32, 8);
    rc = wd_safetensors_open(&ts, dir, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (!rc) {
        CHECK(wd_tensors_count(ts) == 1 && shape_is(wd_tensors_find(ts, "w"), 2, 2, 1));
        wd_tensors_free(ts);
    }
    /* hash lookup over many names */
    stb_init(&b);
    static float one = 1.0f;
    for (int i = 0; i < 1500; i++) {
        char nm[64];
        snprintf(nm, sizeof(nm), "model.layers.%d.w", i);
        stb_add(&b, nm, "F32", 1, (int64_t[]){1}, &one, 4);
    }
    stb_write(&b, path);
    rc = wd_safetensors_open(&ts, path, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (!rc) {
        int found = 0;
        for (int i = 0; i < 1500; i++) {
            char nm[64];
            snprintf(nm, sizeof(nm), "model.layers.%d.w", i);
            const wd_tensor *t = wd_tensors_find(ts, nm);
            found += t && strcmp(t->name, nm) == 0;
        }
        CHECK(found == 1500 && wd_tensors_count(ts) == 1500);
        CHECK(!wd_tensors_find(ts, "model.layers.1500.w"));
        wd_tensors_free(ts);
    }
    st_rm_rf(dir);
}

static void test_sharded(void) {
    char *dir = st_mkdtemp("st_shard");
    float v1[4] = {1, 2, 3, 4}, v2[2] = {5, 6}, v3[3] = {7, 8, 9};
    st_builder b;
    stb_init(&b);
    stb_add(&b, "x.a", "F32", 2, (int64_t[]){2, 2}, v1, sizeof(v1));
    stb_add(&b, "x.b", "F32", 1, (int64_t[]){2}, v2, sizeof(v2));
    stb_write(&b, st_path(dir, "model-00001-of-00002.safetensors"));
    stb_init(&b);
    stb_add(&b, "y.c", "F32", 1, (int64_t[]){3}, v3, sizeof(v3));
    stb_write(&b, st_path(dir, "model-00002-of-00002.safetensors"));
    const char *idx = "{\"metadata\":{\"total_size\":36},\"weight_map\":{"
                      "\"x.a\":\"model-00001-of-00002.safetensors\","
                      "\"y.c\":\"model-00002-of-00002.safetensors\","
                      "\"x.b\":\"model-00001-of-00002.safetensors\"}}";
    st_write_raw(st_path(dir, "model.safetensors.index.json"), idx, strlen(idx));
    /* a stray model.safetensors is ignored when there is an index */
    st_write_raw(st_path(dir, "model.safetensors"), "junk", 4);
    const char *paths[2] = {dir, st_path(dir, "model.safetensors.index.json")};
    for (int k = 0; k < 2; k++) {
        wd_tensors *ts = NULL;
        int rc = wd_safetensors_open(&ts, paths[k], err, sizeof(err));
        CHECKF(rc == 0, "%s: %s", paths[k], err);
        if (rc) continue;
        CHECK(wd_tensors_count(ts) == 3);
        CHECK(wd_tensors_total_bytes(ts) == 36);
        const wd_tensor *a = wd_tensors_find(ts, "x.a"), *c = wd_tensors_find(ts, "y.c");
        CHECK(shape_is(a, 2, 2, 2) && shape_is(c, 1, 3, 0));
        if (a && c) {
            CHECK(memcmp(a->data, v1, 16) == 0);
            CHECK(memcmp(c->data, v3, 12) == 0);
        }
        wd_tensors_free(ts);
    }
    st_rm_rf(dir);
}

/* ---- the shipped stories260k model ---------------------------------------- */
static void check_stories(const char *variant, int ffn, int n_exp, int top_k, int moe4) {
    char dir[1024], cfgp[1100];
    snprintf(dir, sizeof(dir), "%s/weights/models/stories260k/%s", WD_SOURCE_DIR, variant);
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    wd_config cfg;
    int rc = wd_config_load(&cfg, cfgp, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    CHECK(cfg.hidden == 64 && cfg.n_layers == 5 && cfg.n_heads == 8 && cfg.n_kv_heads == 4);
    CHECK(cfg.head_dim == 8 && cfg.ffn == ffn && cfg.n_experts == n_exp && cfg.top_k == top_k);
    CHECK(cfg.vocab == 512 && cfg.max_pos == 512 && cfg.tie_embeddings == 1);
    CHECK(cfg.bos_id == 1 && cfg.eos_id == 2);
    CHECK_NEAR(cfg.rms_eps, 1e-5, 1e-12);
    CHECK_NEAR(cfg.rope_theta, 10000.0, 0);
    CHECK(strcmp(cfg.model_type, "mixtral") == 0);

    wd_tensors *ts = NULL;
    rc = wd_safetensors_open(&ts, dir, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    int per_layer = 2 + 4 + 1 + 3 * n_exp;
    CHECK(wd_tensors_count(ts) == 1 + 5 * per_layer + 1); /* tied: no lm_head */
    CHECK(!wd_tensors_find(ts, "lm_head.weight"));
    CHECK(shape_is(wd_tensors_find(ts, "model.embed_tokens.weight"), 2, 512, 64));
    CHECK(shape_is(wd_tensors_find(ts, "model.norm.weight"), 1, 64, 0));
    size_t total = 0;
    int all_f32 = 1;
    for (int i = 0; i < wd_tensors_count(ts); i++) {
        const wd_tensor *t = wd_tensors_at(ts, i);
        all_f32 &= t->dtype == WD_DT_F32;
        size_t numel = 1;
        for (int k = 0; k < t->ndim; k++) numel *= (size_t)t->shape[k];
        CHECK(t->nbytes == numel * 4);
        total += t->nbytes;
    }
    CHECK(all_f32);
    CHECK(total == wd_tensors_total_bytes(ts));
    for (int l = 0; l < 5; l++) {
        char nm[128];
#define SHAPE(fmt, nd, a, b)                                                  \
    snprintf(nm, sizeof(nm), fmt, l);                                         \
    CHECKF(shape_is(wd_tensors_find(ts, nm), nd, a, b), "%s", nm)
        SHAPE("model.layers.%d.input_layernorm.weight", 1, 64, 0);
        SHAPE("model.layers.%d.post_attention_layernorm.weight", 1, 64, 0);
        SHAPE("model.layers.%d.self_attn.q_proj.weight", 2, 64, 64);
        SHAPE("model.layers.%d.self_attn.k_proj.weight", 2, 32, 64);
        SHAPE("model.layers.%d.self_attn.v_proj.weight", 2, 32, 64);
        SHAPE("model.layers.%d.self_attn.o_proj.weight", 2, 64, 64);
        SHAPE("model.layers.%d.block_sparse_moe.gate.weight", 2, n_exp, 64);
#undef SHAPE
        for (int e = 0; e < n_exp; e++) {
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
            CHECKF(shape_is(wd_tensors_find(ts, nm), 2, ffn, 64), "%s", nm);
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
            CHECKF(shape_is(wd_tensors_find(ts, nm), 2, 64, ffn), "%s", nm);
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
            CHECKF(shape_is(wd_tensors_find(ts, nm), 2, ffn, 64), "%s", nm);
        }
        if (moe4) { /* SOURCES.md: the 4 experts are identical copies of the dense FFN */
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.0.w2.weight", l);
            const wd_tensor *e0 = wd_tensors_find(ts, nm);
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.3.w2.weight", l);
            const wd_tensor *e3 = wd_tensors_find(ts, nm);
            CHECK(e0 && e3 && memcmp(e0->data, e3->data, e0->nbytes) == 0);
        }
    }
    wd_tensors_free(ts);
}

/* ---- the synthetic writer ------------------------------------------------- */
static wd_tensors *load_synth(const char *dir, wd_config *cfg) {
    wd_tensors *ts = NULL;
    char p[1100];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    int rc = wd_config_load(cfg, p, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return NULL;
    rc = wd_safetensors_open(&ts, dir, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    return rc ? NULL : ts;
}

/* Every Mixtral tensor, with shapes derived from the spec here. */
static void check_synth_layout(const wd_tensors *ts, const wd_synth_spec *s) {
    int64_t H = s->hidden, Q = (int64_t)s->n_heads * s->head_dim,
            KV = (int64_t)s->n_kv_heads * s->head_dim;
    int expect = 1 + s->n_layers * (7 + 3 * s->n_experts) + 1 + (s->tied ? 0 : 1);
    CHECKF(wd_tensors_count(ts) == expect, "%d tensors, expected %d", wd_tensors_count(ts), expect);
    CHECK(shape_is(wd_tensors_find(ts, "model.embed_tokens.weight"), 2, s->vocab, H));
    CHECK(shape_is(wd_tensors_find(ts, "model.norm.weight"), 1, H, 0));
    if (s->tied) CHECK(!wd_tensors_find(ts, "lm_head.weight"));
    else CHECK(shape_is(wd_tensors_find(ts, "lm_head.weight"), 2, s->vocab, H));
    char nm[128];
    int bad = 0;
    for (int l = 0; l < s->n_layers; l++) {
#define EXPECT(nd, a, b, ...)                                       \
    snprintf(nm, sizeof(nm), __VA_ARGS__);                          \
    if (!shape_is(wd_tensors_find(ts, nm), nd, a, b)) {             \
        bad++;                                                      \
        fprintf(stderr, "bad or missing %s\n", nm);                 \
    }
        EXPECT(1, H, 0, "model.layers.%d.input_layernorm.weight", l);
        EXPECT(1, H, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        EXPECT(2, Q, H, "model.layers.%d.self_attn.q_proj.weight", l);
        EXPECT(2, KV, H, "model.layers.%d.self_attn.k_proj.weight", l);
        EXPECT(2, KV, H, "model.layers.%d.self_attn.v_proj.weight", l);
        EXPECT(2, H, Q, "model.layers.%d.self_attn.o_proj.weight", l);
        EXPECT(2, s->n_experts, H, "model.layers.%d.block_sparse_moe.gate.weight", l);
        for (int e = 0; e < s->n_experts; e++) {
            EXPECT(2, s->ffn, H, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
            EXPECT(2, H, s->ffn, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
            EXPECT(2, s->ffn, H, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
        }
#undef EXPECT
    }
    CHECK(bad == 0);
    for (int i = 0; i < wd_tensors_count(ts); i++) {
        const wd_tensor *t = wd_tensors_at(ts, i);
        CHECKF(t->dtype == s->dtype, "%s", t->name);
        CHECKF(((uintptr_t)t->data & 7) == 0, "%s not 8-byte aligned", t->name);
    }
}

static void check_synth_config(const wd_config *c, const wd_synth_spec *s) {
    CHECK(strcmp(c->model_type, "mixtral") == 0);
    CHECK(c->hidden == s->hidden && c->n_layers == s->n_layers && c->n_heads == s->n_heads);
    CHECK(c->n_kv_heads == s->n_kv_heads && c->head_dim == s->head_dim && c->ffn == s->ffn);
    CHECK(c->n_experts == s->n_experts && c->top_k == s->top_k && c->vocab == s->vocab);
    CHECK(c->max_pos == s->max_pos && c->tie_embeddings == s->tied);
    CHECK(c->rms_eps == s->rms_eps && c->rope_theta == s->rope_theta); /* exact float round trip */
    CHECK(c->bos_id == 1 && c->eos_id == 2);
}

static float elem_f32(const wd_tensor *t, size_t i) {
    if (t->dtype == WD_DT_F32) return ((const float *)t->data)[i];
    uint16_t h = ((const uint16_t *)t->data)[i];
    return t->dtype == WD_DT_BF16 ? wd_bf16_to_f32(h) : wd_f16_to_f32(h);
}

static size_t numel(const wd_tensor *t) {
    size_t n = 1;
    for (int k = 0; k < t->ndim; k++) n *= (size_t)t->shape[k];
    return n;
}

/* Sample mean and std of a tensor against N(mu, sd^2). */
static void check_moments(const wd_tensor *t, double mu, double sd) {
    size_t n = numel(t);
    double m = 0, v = 0;
    for (size_t i = 0; i < n; i++) m += elem_f32(t, i);
    m /= (double)n;
    for (size_t i = 0; i < n; i++) v += (elem_f32(t, i) - m) * (elem_f32(t, i) - m);
    double s = sqrt(v / (double)(n - 1));
    CHECKF(fabs(m - mu) < 6 * sd / sqrt((double)n), "%s mean %g, expected %g", t->name, m, mu);
    /* std of the sample std ~ sd / sqrt(2n) */
    CHECKF(fabs(s - sd) < 6 * sd / sqrt(2.0 * (double)n) + 1e-3 * sd, "%s std %g, expected %g",
           t->name, s, sd);
}

static void check_tokenizer_json(const char *dir, int vocab) {
    char p[1100];
    snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
    json_object *root = json_object_from_file(p);
    CHECKF(root != NULL, "%s does not parse", p);
    if (!root) return;
    json_object *model, *v, *merges, *norm, *dec, *added;
    CHECK(json_object_object_get_ex(root, "model", &model));
    CHECK(json_object_object_get_ex(root, "normalizer", &norm));
    CHECK(json_object_object_get_ex(root, "decoder", &dec));
    CHECK(json_object_object_get_ex(root, "added_tokens", &added) &&
          json_object_array_length(added) == 3);
    if (!json_object_object_get_ex(model, "vocab", &v) ||
        !json_object_object_get_ex(model, "merges", &merges)) {
        CHECK(0);
        json_object_put(root);
        return;
    }
    json_object *ty, *bf;
    CHECK(json_object_object_get_ex(model, "type", &ty) &&
          strcmp(json_object_get_string(ty), "BPE") == 0);
    CHECK(json_object_object_get_ex(model, "byte_fallback", &bf) && json_object_get_boolean(bf));
    CHECK(json_object_object_length(v) == vocab);
    char *seen = calloc((size_t)vocab, 1);
    int ids_ok = 1;
    json_object_object_foreach(v, piece, idv) {
        int id = json_object_get_int(idv);
        if (id < 0 || id >= vocab || seen[id]) ids_ok = 0;
        else seen[id] = 1;
        (void)piece;
    }
    CHECK(ids_ok);
    free(seen);
    json_object *x;
    CHECK(json_object_object_get_ex(v, "<unk>", &x) && json_object_get_int(x) == 0);
    CHECK(json_object_object_get_ex(v, "<s>", &x) && json_object_get_int(x) == 1);
    CHECK(json_object_object_get_ex(v, "</s>", &x) && json_object_get_int(x) == 2);
    CHECK(json_object_object_get_ex(v, "<0x00>", &x) && json_object_get_int(x) == 3);
    CHECK(json_object_object_get_ex(v, "<0x41>", &x) && json_object_get_int(x) == 3 + 0x41);
    CHECK(json_object_object_get_ex(v, "<0xFF>", &x) && json_object_get_int(x) == 258);
    if (vocab > 259)
        CHECK(json_object_object_get_ex(v, "\xe2\x96\x81", &x) && json_object_get_int(x) == 259);
    /* every merge: both parts and their concatenation are tokens, the result
     * has a larger id than its parts */
    int merges_ok = 1;
    size_t nm = json_object_array_length(merges);
    for (size_t i = 0; i < nm; i++) {
        json_object *pair = json_object_array_get_idx(merges, i), *a, *b, *ab;
        if (!json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2) {
            merges_ok = 0;
            break;
        }
        const char *sa = json_object_get_string(json_object_array_get_idx(pair, 0));
        const char *sb = json_object_get_string(json_object_array_get_idx(pair, 1));
        char cat[256];
        snprintf(cat, sizeof(cat), "%s%s", sa, sb);
        if (!json_object_object_get_ex(v, sa, &a) || !json_object_object_get_ex(v, sb, &b) ||
            !json_object_object_get_ex(v, cat, &ab) ||
            json_object_get_int(ab) <= json_object_get_int(a) ||
            json_object_get_int(ab) <= json_object_get_int(b))
            merges_ok = 0;
    }
    CHECK(merges_ok);
    CHECK(vocab <= 290 || nm > 0);
    json_object_put(root);
}

static void write_or_fail(const char *dir, const wd_synth_spec *s) {
    int rc = wd_synth_write(dir, s, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
}

static void test_synth(void) {
    char *base = st_mkdtemp("st_synth");
    char d_f32[1100], d_bf16[1100], d_f16[1100], d_again[1100], d_seed2[1100], d_shard[1100],
        d_tied[1100], d_odd[1100];
    snprintf(d_f32, sizeof(d_f32), "%s/f32", base);
    snprintf(d_bf16, sizeof(d_bf16), "%s/bf16", base);
    snprintf(d_f16, sizeof(d_f16), "%s/f16", base);
    snprintf(d_again, sizeof(d_again), "%s/again/nested", base); /* mkdir -p */
    snprintf(d_seed2, sizeof(d_seed2), "%s/seed2", base);
    snprintf(d_shard, sizeof(d_shard), "%s/shard", base);
    snprintf(d_tied, sizeof(d_tied), "%s/tied", base);
    snprintf(d_odd, sizeof(d_odd), "%s/odd", base);

    wd_synth_spec s;
    wd_synth_default(&s);
    CHECK(s.vocab >= 259 && s.n_heads % s.n_kv_heads == 0 && s.dtype == WD_DT_F32 && !s.tied);
    /* head_dim != hidden / heads */
    s.hidden = 48;
    s.n_heads = 4;
    s.n_kv_heads = 2;
    s.head_dim = 16;
    s.ffn = 40;
    s.n_experts = 4;
    s.seed = 7;
    s.rope_theta = 1e6f;
    s.rms_eps = 1e-6f;
    write_or_fail(d_f32, &s);
    wd_synth_spec sb = s;
    sb.dtype = WD_DT_BF16;
    write_or_fail(d_bf16, &sb);
    wd_synth_spec sh = s;
    sh.dtype = WD_DT_F16;
    write_or_fail(d_f16, &sh);
    write_or_fail(d_again, &s);
    wd_synth_spec s2 = s;
    s2.seed = 8;
    write_or_fail(d_seed2, &s2);

    wd_config c32, cb, ch, ca, c2;
    wd_tensors *t32 = load_synth(d_f32, &c32), *tb = load_synth(d_bf16, &cb),
               *th = load_synth(d_f16, &ch), *ta = load_synth(d_again, &ca),
               *t2 = load_synth(d_seed2, &c2);
    if (!t32 || !tb || !th || !ta || !t2) goto out;
    check_synth_config(&c32, &s);
    check_synth_config(&cb, &sb);
    check_synth_config(&ch, &sh);
    check_synth_layout(t32, &s);
    check_synth_layout(tb, &sb);
    check_synth_layout(th, &sh);
    check_tokenizer_json(d_f32, s.vocab);

    int same = 1, conv_bf = 1, conv_h = 1, differs = 0;
    for (int i = 0; i < wd_tensors_count(t32); i++) {
        const wd_tensor *a = wd_tensors_at(t32, i);
        const wd_tensor *x = wd_tensors_find(ta, a->name), *b = wd_tensors_find(tb, a->name),
                        *h = wd_tensors_find(th, a->name), *y = wd_tensors_find(t2, a->name);
        if (!x || !b || !h || !y) {
            same = 0;
            continue;
        }
        same &= x->nbytes == a->nbytes && memcmp(x->data, a->data, a->nbytes) == 0;
        differs += memcmp(y->data, a->data, a->nbytes) != 0;
        const float *f = a->data;
        const uint16_t *hb = b->data, *hh = h->data;
        for (size_t k = 0; k < numel(a); k++) {
            conv_bf &= hb[k] == wd_f32_to_bf16(f[k]);
            conv_h &= hh[k] == wd_f32_to_f16(f[k]);
        }
    }
    CHECKF(same, "same seed, different values");
    CHECKF(differs == wd_tensors_count(t32), "another seed gave equal tensors");
    CHECK(conv_bf);
    CHECK(conv_h);

    /* distribution: N(0, 1/fan_in) for matrices, 1 + N(0, 0.02^2) for norms */
    check_moments(wd_tensors_find(t32, "model.embed_tokens.weight"), 0, 1 / sqrt(48.0));
    check_moments(wd_tensors_find(t32, "model.layers.1.self_attn.o_proj.weight"), 0,
                  1 / sqrt(64.0));
    check_moments(wd_tensors_find(t32, "model.layers.0.block_sparse_moe.experts.2.w2.weight"), 0,
                  1 / sqrt(40.0));
    check_moments(wd_tensors_find(t32, "lm_head.weight"), 0, 1 / sqrt(48.0));
    check_moments(wd_tensors_find(t32, "model.layers.0.input_layernorm.weight"), 1, 0.02);
    CHECK(memcmp(wd_tensors_find(t32, "model.embed_tokens.weight")->data,
                 wd_tensors_find(t32, "lm_head.weight")->data, 64) != 0);
    {
        /* a large tensor: moments and a pooled normality check (4th moment) */
        wd_synth_spec big;
        wd_synth_default(&big);
        big.n_layers = 1;
        big.n_experts = 2;
        big.vocab = 4096;
        big.hidden = 256;
        big.n_heads = 4;
        big.n_kv_heads = 4;
        big.head_dim = 64;
        big.init_std = 0.5f;
        char d_big[1100];
        snprintf(d_big, sizeof(d_big), "%s/big", base);
        write_or_fail(d_big, &big);
        wd_config cbig;
        wd_tensors *tbig = load_synth(d_big, &cbig);
        if (tbig) {
            const wd_tensor *e = wd_tensors_find(tbig, "model.embed_tokens.weight");
            check_moments(e, 0, 0.5);
            double m2 = 0, m4 = 0;
            size_t n = numel(e);
            for (size_t i = 0; i < n; i++) {
                double z = elem_f32(e, i) / 0.5;
                m2 += z * z;
                m4 += z * z * z * z;
            }
            m2 /= (double)n;
            m4 /= (double)n;
            CHECK_NEAR(m4 / (m2 * m2), 3.0, 0.05); /* Gaussian kurtosis; sd of estimate ~0.005 */
            wd_tensors_free(tbig);
        }
    }

    /* sharded: same values as the single file, every shard within the limit */
    {
        wd_synth_spec ss = s;
        ss.max_shard_bytes = 64 * 1024;
        write_or_fail(d_shard, &ss);
        char p[1200];
        snprintf(p, sizeof(p), "%s/model.safetensors", d_shard);
        CHECK(!wd_test_file_exists(p));
        snprintf(p, sizeof(p), "%s/model.safetensors.index.json", d_shard);
        CHECK(wd_test_file_exists(p));
        wd_config cs;
        wd_tensors *ts = load_synth(d_shard, &cs);
        if (ts) {
            int eq = wd_tensors_count(ts) == wd_tensors_count(t32);
            for (int i = 0; i < wd_tensors_count(t32); i++) {
                const wd_tensor *a = wd_tensors_at(t32, i), *b = wd_tensors_find(ts, a->name);
                eq &= b && b->nbytes == a->nbytes && memcmp(a->data, b->data, a->nbytes) == 0;
            }
            CHECK(eq);
            wd_tensors_free(ts);
        }
        /* count the shards and their sizes; the index names them all */
        int n_shards = 0, total_shards = 0, sizes_ok = 1;
        for (int i = 1; i < 100; i++) {
            snprintf(p, sizeof(p), "%s/model-%05d-of-", d_shard, i);
            DIR *dd = opendir(d_shard);
            struct dirent *de;
            int found = 0;
            while (dd && (de = readdir(dd))) {
                char pre[64];
                snprintf(pre, sizeof(pre), "model-%05d-of-", i);
                if (strncmp(de->d_name, pre, strlen(pre)) == 0) {
                    found = 1;
                    total_shards = atoi(de->d_name + strlen(pre));
                    char fp[1400];
                    snprintf(fp, sizeof(fp), "%s/%s", d_shard, de->d_name);
                    wd_tensors *one = NULL;
                    if (wd_safetensors_open(&one, fp, err, sizeof(err)) == 0) {
                        /* a shard's data is within the limit unless it is one big tensor */
                        if (wd_tensors_total_bytes(one) > ss.max_shard_bytes &&
                            wd_tensors_count(one) > 1)
                            sizes_ok = 0;
                        wd_tensors_free(one);
                    } else {
                        sizes_ok = 0;
                    }
                }
            }
            if (dd) closedir(dd);
            if (!found) break;
            n_shards++;
        }
        CHECKF(n_shards > 1 && n_shards == total_shards, "%d shards, names say %d", n_shards,
               total_shards);
        CHECK(sizes_ok);
        /* writing again unsharded into the same folder removes the stale index */
        write_or_fail(d_shard, &s);
        CHECK(!wd_test_file_exists(p));
        wd_tensors *t1 = load_synth(d_shard, &cs);
        if (t1) {
            CHECK(wd_tensors_count(t1) == wd_tensors_count(t32));
            wd_tensors_free(t1);
        }
    }

    /* tied, BF16, default shape */
    {
        wd_synth_spec st;
        wd_synth_default(&st);
        st.tied = 1;
        st.dtype = WD_DT_BF16;
        write_or_fail(d_tied, &st);
        wd_config ct;
        wd_tensors *tt = load_synth(d_tied, &ct);
        if (tt) {
            check_synth_config(&ct, &st);
            check_synth_layout(tt, &st);
            check_tokenizer_json(d_tied, st.vocab);
            wd_tensors_free(tt);
        }
    }
    /* odd sizes (padding between tensors keeps 8-byte alignment), smallest vocab */
    {
        wd_synth_spec so;
        wd_synth_default(&so);
        so.hidden = 5;
        so.n_heads = 1;
        so.n_kv_heads = 1;
        so.head_dim = 2;
        so.ffn = 3;
        so.n_experts = 3;
        so.top_k = 3;
        so.vocab = 259;
        so.dtype = WD_DT_F16;
        write_or_fail(d_odd, &so);
        wd_config co;
        wd_tensors *to = load_synth(d_odd, &co);
        if (to) {
            check_synth_config(&co, &so);
            check_synth_layout(to, &so);
            check_tokenizer_json(d_odd, so.vocab);
            wd_tensors_free(to);
        }
    }
    /* no temporary files left behind */
    {
        DIR *dd = opendir(d_f32);
        struct dirent *de;
        int tmp = 0, n = 0;
        while (dd && (de = readdir(dd))) {
            if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp")) tmp++;
            if (de->d_name[0] != '.') n++;
        }
        if (dd) closedir(dd);
        CHECK(tmp == 0 && n == 3);
    }
out:
    wd_tensors_free(t32);
    wd_tensors_free(tb);
    wd_tensors_free(th);
    wd_tensors_free(ta);
    wd_tensors_free(t2);
    st_rm_rf(base);
}

int main(void) {
    test_single_file();
    test_sharded();
    check_stories("moe4-top2", 172, 4, 2, 1);
    check_stories("sliced4-top4", 43, 4, 4, 0);
    test_synth();
    return wd_test_finish("test_safetensors");
}
