/* Bad input for the safetensors loader, config.json and the synthetic
 * writer: every case must fail with one message naming the file and the
 * problem, never crash, and leave no file descriptor or mapping behind. */
#include <stdint.h>

#include "tests/st_util.h"
#include "tests/test_util.h"
#include "weights/weights.h"

static char err[2048];
static const char *dir;

/* Expect wd_safetensors_open(path) to fail with a message holding `file`
 * and each of up to three key words. */
static void expect_st_fail(int line, const char *path, const char *file, const char *k1,
                           const char *k2, const char *k3) {
    wd_tensors *ts = (wd_tensors *)(uintptr_t)1;
    strcpy(err, "(no message)");
    int rc = wd_safetensors_open(&ts, path, err, sizeof(err));
    CHECKF(rc != 0, "line %d: %s loaded", line, path);
    CHECKF(ts == NULL, "line %d: out not cleared", line);
    if (rc == 0) wd_tensors_free(ts);
    const char *keys[3] = {k1, k2, k3};
    CHECKF(strstr(err, file) != NULL, "line %d: message lacks file %s: %s", line, file, err);
    for (int i = 0; i < 3; i++)
        if (keys[i]) CHECKF(strstr(err, keys[i]) != NULL, "line %d: message lacks '%s': %s", line,
                            keys[i], err);
    CHECKF(strchr(err, '\n') == NULL, "line %d: message is not one line: %s", line, err);
}
#define ST_FAIL(path, file, k1, k2, k3) expect_st_fail(__LINE__, path, file, k1, k2, k3)

/* A one-tensor file with header `h` and `n` data bytes. */
static const char *one(const char *name, const char *h, size_t n) {
    static unsigned char zeros[256];
    char *p = st_path(dir, name);
    st_write(p, h, zeros, n);
    return p;
}

static void test_files(void) {
    const char *p;
    ST_FAIL(st_path(dir, "nope.safetensors"), "nope.safetensors", "cannot open", NULL, NULL);
    char *empty = st_path(dir, "emptydir");
    mkdir(empty, 0755);
    ST_FAIL(empty, "emptydir", "no model.safetensors", NULL, NULL);

    p = st_path(dir, "zero.safetensors");
    st_write_raw(p, "", 0);
    ST_FAIL(p, "zero.safetensors", "too short", NULL, NULL);
    p = st_path(dir, "five.safetensors");
    st_write_raw(p, "\x10\0\0\0\0", 5);
    ST_FAIL(p, "five.safetensors", "too short", NULL, NULL);

    p = st_path(dir, "hlen.safetensors");
    st_write_file(p, 1000, "{}", NULL, 0);
    ST_FAIL(p, "hlen.safetensors", "header length", "past the end", NULL);
    st_write_file(p, UINT64_MAX, "{}", NULL, 0);
    ST_FAIL(p, "hlen.safetensors", "header length", "past the end", NULL);
    st_write_file(p, 1ull << 63, "{}", NULL, 0);
    ST_FAIL(p, "hlen.safetensors", "header length", NULL, NULL);

    ST_FAIL(one("m1.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0), "m1.safetensors",
            "malformed", NULL, NULL);
    ST_FAIL(one("m2.safetensors", "not json at all", 0), "m2.safetensors", "malformed", NULL,
            NULL);
    ST_FAIL(one("m3.safetensors", "[1,2,3]", 0), "m3.safetensors", "malformed", "object", NULL);
    ST_FAIL(one("m4.safetensors", "{} trailing", 0), "m4.safetensors", "malformed", NULL, NULL);
    ST_FAIL(one("m5.safetensors", "{\"a\":1,}", 0), "m5.safetensors", "malformed", NULL, NULL);
    {
        /* a NUL byte inside the header */
        const char h[] = "{\"a\":{\"dtype\":\"F32\"\0,\"shape\":[1],\"data_offsets\":[0,4]}}";
        unsigned char buf[8 + sizeof(h) + 4];
        memset(buf, 0, sizeof(buf));
        buf[0] = (unsigned char)(sizeof(h) - 1);
        memcpy(buf + 8, h, sizeof(h) - 1);
        p = st_path(dir, "nul.safetensors");
        st_write_raw(p, buf, 8 + sizeof(h) - 1 + 4);
        ST_FAIL(p, "nul.safetensors", "malformed", NULL, NULL);
    }

    ST_FAIL(one("e1.safetensors", "{\"w\":5}", 0), "e1.safetensors", "not a JSON object",
            "(tensor w)", NULL);
    ST_FAIL(one("e2.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
            "e2.safetensors", "missing", "dtype", "(tensor w)");
    ST_FAIL(one("e3.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4),
            "e3.safetensors", "missing", "shape", "(tensor w)");
    ST_FAIL(one("e4.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4),
            "e4.safetensors", "missing", "data_offsets", "(tensor w)");
    ST_FAIL(one("t1.safetensors", "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
            "t1.safetensors", "dtype", "string", "(tensor w)");
    ST_FAIL(one("t2.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4),
            "t2.safetensors", "shape", "(tensor w)", NULL);
    ST_FAIL(one("t3.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4),
            "t3.safetensors", "shape", "integer", "(tensor w)");
    ST_FAIL(one("t4.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8),
            "t4.safetensors", "data_offsets", "(tensor w)", NULL);
    ST_FAIL(one("t5.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":0}}}", 4),
            "t5.safetensors", "data_offsets", "(tensor w)", NULL);
    ST_FAIL(one("t6.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4),
            "t6.safetensors", "data_offsets", "(tensor w)", NULL);

    static const char *bad_dtypes[] = {"I8", "F64", "U8", "I32", "BOOL", "F8_E4M3", "f32", ""};
    for (size_t i = 0; i < sizeof(bad_dtypes) / sizeof(*bad_dtypes); i++) {
        char h[256];
        snprintf(h, sizeof(h),
                 "{\"w\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,8]}}", bad_dtypes[i]);
        ST_FAIL(one("dt.safetensors", h, 8), "dt.safetensors", "unsupported dtype", "(tensor w)",
                NULL);
    }

    ST_FAIL(one("s1.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4),
            "s1.safetensors", "negative", "(tensor w)", NULL);
    ST_FAIL(one("s2.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                "\"data_offsets\":[0,0]}}", 0),
            "s2.safetensors", "overflow", "(tensor w)", NULL);
    ST_FAIL(one("s3.safetensors",
                "{\"w\":{\"dtype\":\"BF16\",\"shape\":[9223372036854775807],"
                "\"data_offsets\":[0,2]}}", 2),
            "s3.safetensors", "overflow", "(tensor w)", NULL);
    ST_FAIL(one("s4.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615],"
                "\"data_offsets\":[0,4]}}", 4),
            "s4.safetensors", "overflow", "(tensor w)", NULL);
    ST_FAIL(one("s5.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4),
            "s5.safetensors", "dims", "(tensor w)", NULL);
    ST_FAIL(one("s6.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[65536,65536,65536,65536],"
                "\"data_offsets\":[0,4]}}", 4),
            "s6.safetensors", "overflow", "(tensor w)", NULL);

    ST_FAIL(one("r1.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16),
            "r1.safetensors", "does not match", "(tensor w)", NULL);
    ST_FAIL(one("r2.safetensors",
                "{\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,12]}}", 16),
            "r2.safetensors", "does not match", "(tensor w)", NULL);
    ST_FAIL(one("r3.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12),
            "r3.safetensors", "past the end of the data", "(tensor w)", NULL);
    ST_FAIL(one("r4.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8),
            "r4.safetensors", "before begin", "(tensor w)", NULL);
    ST_FAIL(one("r5.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8),
            "r5.safetensors", "negative", "(tensor w)", NULL);
    ST_FAIL(one("r6.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
                "\"data_offsets\":[18446744073709551612,18446744073709551615]}}", 8),
            "r6.safetensors", "(tensor w)", NULL, NULL);
    ST_FAIL(one("o1.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16),
            "o1.safetensors", "overlap", "tensor a", "tensor b");
    ST_FAIL(one("o2.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]}}", 16),
            "o2.safetensors", "overlap", "tensor a", "tensor b");
    /* not an error: empty tensors share offsets; gaps between tensors */
    p = one("ok.safetensors",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"c\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
            "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16);
    wd_tensors *ts;
    int rc = wd_safetensors_open(&ts, p, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (!rc) {
        CHECK(wd_tensors_count(ts) == 4);
        wd_tensors_free(ts);
    }
}

/* A sharded folder: shard 1 {a, b}, shard 2 {c}, and an index text. */
static char *shard_dir(const char *name, const char *index, int dup_in_2) {
    char *d = st_path(dir, name);
    mkdir(d, 0755);
    static float v[4] = {1, 2, 3, 4};
    st_builder b;
    stb_init(&b);
    stb_add(&b, "a", "F32", 1, (int64_t[]){2}, v, 8);
    stb_add(&b, "b", "F32", 1, (int64_t[]){2}, v, 8);
    char p[1100];
    snprintf(p, sizeof(p), "%s/model-00001-of-00002.safetensors", d);
    stb_write(&b, p);
    stb_init(&b);
    stb_add(&b, "c", "F32", 1, (int64_t[]){1}, v, 4);
    if (dup_in_2) stb_add(&b, "a", "F32", 1, (int64_t[]){1}, v, 4);
    snprintf(p, sizeof(p), "%s/model-00002-of-00002.safetensors", d);
    stb_write(&b, p);
    if (index) {
        snprintf(p, sizeof(p), "%s/model.safetensors.index.json", d);
        st_write_raw(p, index, strlen(index));
    }
    return d;
}

#define S1 "\"model-00001-of-00002.safetensors\""
#define S2 "\"model-00002-of-00002.safetensors\""

static void test_shards(void) {
    const char *good = "{\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}}";
    char *d = shard_dir("sh_ok", good, 0);
    wd_tensors *ts;
    int rc = wd_safetensors_open(&ts, d, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (!rc) wd_tensors_free(ts);

    d = shard_dir("sh_dup", "{\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}}", 1);
    ST_FAIL(d, "model-0000", "duplicate", "(tensor a)", NULL);

    d = shard_dir("sh_missing",
                  "{\"weight_map\":{\"a\":" S1 ",\"c\":\"model-00003-of-00003.safetensors\"}}", 0);
    ST_FAIL(d, "model-00003-of-00003.safetensors", "missing shard", NULL, NULL);

    d = shard_dir("sh_nomap", "{\"metadata\":{\"total_size\":20}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "weight_map", "missing", NULL);
    d = shard_dir("sh_mapnotobj", "{\"weight_map\":[\"a\"]}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "weight_map", "not an object", NULL);
    d = shard_dir("sh_mapempty", "{\"weight_map\":{}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "weight_map", "empty", NULL);
    d = shard_dir("sh_valnotstr", "{\"weight_map\":{\"a\":1}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "weight_map", "(tensor a)", NULL);
    d = shard_dir("sh_badjson", "{\"weight_map\":{\"a\":" S1, 0);
    ST_FAIL(d, "model.safetensors.index.json", "malformed", NULL, NULL);
    d = shard_dir("sh_toplist", "[1]", 0);
    ST_FAIL(d, "model.safetensors.index.json", "weight_map", NULL, NULL);
    d = shard_dir("sh_traversal", "{\"weight_map\":{\"a\":\"../sh_ok/" "model-00001-of-00002.safetensors\"}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "plain file name", "(tensor a)", NULL);
    d = shard_dir("sh_notthere", "{\"weight_map\":{\"a\":" S1 ",\"zz\":" S2 "}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "missing from", "(tensor zz)", NULL);
    d = shard_dir("sh_wrongshard", "{\"weight_map\":{\"a\":" S2 ",\"b\":" S1 ",\"c\":" S2 "}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "(tensor a)", "is in model-00001-of-00002", NULL);
    d = shard_dir("sh_unlisted", "{\"weight_map\":{\"a\":" S2 ",\"c\":" S2 "}}", 0);
    ST_FAIL(d, "model.safetensors.index.json", "(tensor a)", "missing from", NULL);
    /* a broken shard: the message names the shard */
    d = shard_dir("sh_badshard", good, 0);
    char p[1100];
    snprintf(p, sizeof(p), "%s/model-00002-of-00002.safetensors", d);
    st_write_file(p, 99, "{}", NULL, 0);
    ST_FAIL(d, "sh_badshard/model-00002-of-00002.safetensors", "header length", NULL, NULL);
}

/* ---- config.json ---------------------------------------------------------- */
static const char *good_cfg =
    "{\"model_type\":\"mixtral\",\"hidden_size\":64,\"intermediate_size\":96,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":2,"
    "\"num_local_experts\":4,\"num_experts_per_tok\":2,\"vocab_size\":320,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":1000000.0,\"tie_word_embeddings\":false}";

/* good_cfg with `from` replaced by `to` */
static const char *cfg_edit(const char *from, const char *to) {
    static char buf[4096];
    const char *at = strstr(good_cfg, from);
    if (!at) {
        fprintf(stderr, "cfg_edit: '%s' not in the config\n", from);
        exit(1);
    }
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - good_cfg), good_cfg, to,
             at + strlen(from));
    return buf;
}

static void expect_cfg_fail(int line, const char *text, const char *k1, const char *k2) {
    char *p = st_path(dir, "config.json");
    if (text) st_write_raw(p, text, strlen(text));
    else p = st_path(dir, "no-such-config.json");
    wd_config c;
    strcpy(err, "(no message)");
    int rc = wd_config_load(&c, p, err, sizeof(err));
    CHECKF(rc != 0, "line %d: config loaded", line);
    const char *file = text ? "config.json" : "no-such-config.json";
    CHECKF(strstr(err, file) != NULL, "line %d: message lacks %s: %s", line, file, err);
    if (k1) CHECKF(strstr(err, k1) != NULL, "line %d: message lacks '%s': %s", line, k1, err);
    if (k2) CHECKF(strstr(err, k2) != NULL, "line %d: message lacks '%s': %s", line, k2, err);
    CHECKF(strchr(err, '\n') == NULL, "line %d: message is not one line: %s", line, err);
}
#define CFG_FAIL(text, k1, k2) expect_cfg_fail(__LINE__, text, k1, k2)

static void test_config(void) {
    char *p = st_path(dir, "config.json");
    st_write_raw(p, good_cfg, strlen(good_cfg));
    wd_config c;
    int rc = wd_config_load(&c, p, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    CHECK(c.head_dim == 8 && c.max_pos > 0 && c.bos_id == 1 && c.eos_id == 2);
    CHECK(c.n_kv_heads == 2 && c.tie_embeddings == 0);
    /* eos_token_id as a list: the first id */
    st_write_raw(p, cfg_edit("\"vocab_size\":320", "\"vocab_size\":320,\"eos_token_id\":[7,9]"),
                 strlen(cfg_edit("\"vocab_size\":320", "\"vocab_size\":320,\"eos_token_id\":[7,9]")));
    rc = wd_config_load(&c, p, err, sizeof(err));
    CHECKF(rc == 0 && c.eos_id == 7, "%s", err);

    CFG_FAIL(NULL, "cannot open", NULL);
    CFG_FAIL("{\"model_type\":\"mixtral\",", "malformed", NULL);
    CFG_FAIL("", "malformed", NULL);
    CFG_FAIL("[1,2]", "not a JSON object", NULL);
    CFG_FAIL(cfg_edit("\"model_type\":\"mixtral\",", ""), "missing", "model_type");
    CFG_FAIL(cfg_edit("\"mixtral\"", "\"qwen2_moe\""), "model_type", "mixtral");
    CFG_FAIL(cfg_edit("\"mixtral\"", "5"), "model_type", "string");
    CFG_FAIL(cfg_edit("\"hidden_size\":64,", ""), "missing", "hidden_size");
    CFG_FAIL(cfg_edit("\"intermediate_size\":96,", ""), "missing", "intermediate_size");
    CFG_FAIL(cfg_edit("\"num_hidden_layers\":2,", ""), "missing", "num_hidden_layers");
    CFG_FAIL(cfg_edit("\"num_local_experts\":4,", ""), "missing", "num_local_experts");
    CFG_FAIL(cfg_edit("\"num_experts_per_tok\":2,", ""), "missing", "num_experts_per_tok");
    CFG_FAIL(cfg_edit("\"vocab_size\":320,", ""), "missing", "vocab_size");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":\"64\""), "hidden_size", "integer");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":64.5"), "hidden_size", "integer");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":[64]"), "hidden_size", "integer");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":-64"), "hidden_size", "range");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":0"), "hidden_size", "range");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":99999999999"), "hidden_size",
             "range");
    CFG_FAIL(cfg_edit("\"num_key_value_heads\":2", "\"num_key_value_heads\":3"),
             "num_key_value_heads", "multiple");
    CFG_FAIL(cfg_edit("\"num_key_value_heads\":2", "\"num_key_value_heads\":16"),
             "num_key_value_heads", "multiple");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":64,\"head_dim\":7"), "head_dim",
             "even");
    CFG_FAIL(cfg_edit("\"hidden_size\":64", "\"hidden_size\":4"), "head_dim", NULL);
    CFG_FAIL(cfg_edit("\"num_experts_per_tok\":2", "\"num_experts_per_tok\":5"),
             "num_experts_per_tok", "num_local_experts");
    CFG_FAIL(cfg_edit("\"rope_theta\":1000000.0", "\"rope_theta\":\"big\""), "rope_theta",
             "number");
    CFG_FAIL(cfg_edit("\"rms_norm_eps\":1e-5", "\"rms_norm_eps\":0"), "rms_norm_eps",
             "positive");
    CFG_FAIL(cfg_edit("\"rms_norm_eps\":1e-5", "\"rms_norm_eps\":1e300"), "rms_norm_eps",
             "finite");
    CFG_FAIL(cfg_edit("\"tie_word_embeddings\":false", "\"tie_word_embeddings\":\"false\""),
             "tie_word_embeddings", "true or false");
    CFG_FAIL(cfg_edit("\"vocab_size\":320", "\"vocab_size\":320,\"bos_token_id\":400"),
             "bos_token_id", "vocab_size");
}

/* ---- the synthetic writer's spec checks ------------------------------------ */
static void expect_synth_fail(int line, const wd_synth_spec *s, const char *key) {
    char *d = st_path(dir, "synth_bad");
    strcpy(err, "(no message)");
    int rc = wd_synth_write(d, s, err, sizeof(err));
    CHECKF(rc != 0, "line %d: bad spec written", line);
    CHECKF(strstr(err, "synth_bad") && strstr(err, key), "line %d: message lacks '%s': %s", line,
           key, err);
}

static void test_synth_spec(void) {
    wd_synth_spec s;
#define SYNTH_FAIL(field, value, key)          \
    wd_synth_default(&s);                      \
    s.field = value;                           \
    expect_synth_fail(__LINE__, &s, key)
    SYNTH_FAIL(vocab, 258, "vocab");
    SYNTH_FAIL(hidden, 0, "hidden");
    SYNTH_FAIL(n_layers, -1, "layers");
    SYNTH_FAIL(n_kv_heads, 3, "kv-heads");
    SYNTH_FAIL(head_dim, 15, "head-dim");
    SYNTH_FAIL(top_k, 9, "top-k");
    SYNTH_FAIL(dtype, WD_DT_Q8_0, "dtype");
    SYNTH_FAIL(rms_eps, 0.0f, "rms_eps");
#undef SYNTH_FAIL
    /* the output folder is a file */
    char *f = st_path(dir, "a_file");
    st_write_raw(f, "x", 1);
    char sub[1100];
    snprintf(sub, sizeof(sub), "%s/sub", f);
    wd_synth_default(&s);
    int rc = wd_synth_write(sub, &s, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, "a_file"));
}

/* ---- corrupted headers: no crash, a clean result either way --------------- */
static void test_mutations(void) {
    static float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    st_builder b;
    stb_init(&b);
    stb_add(&b, "model.layers.0.w", "F32", 2, (int64_t[]){2, 2}, v, 16);
    stb_add(&b, "model.layers.1.w", "BF16", 1, (int64_t[]){4}, v, 8);
    stb_add(&b, "x", "F16", 1, (int64_t[]){4}, v + 6, 8);
    char *p = st_path(dir, "mut.safetensors");
    stb_write(&b, p);
    FILE *f = fopen(p, "rb");
    unsigned char orig[4096];
    size_t n = fread(orig, 1, sizeof(orig), f);
    fclose(f);
    uint64_t x = 12345;
    int loaded = 0, failed = 0, unlabeled = 0;
    for (int it = 0; it < 3000; it++) {
        unsigned char buf[4096];
        memcpy(buf, orig, n);
        size_t len = n;
        int edits = 1 + (int)(it % 3);
        for (int e = 0; e < edits; e++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(x >> 33) % len;
            unsigned char c = (unsigned char)(x >> 20);
            static const char interesting[] = "{}[]\",:-0123456789e.FBI ";
            buf[pos] = (x >> 28) & 1 ? (unsigned char)interesting[c % (sizeof(interesting) - 1)] : c;
        }
        if (it % 7 == 0) len = (size_t)(x >> 40) % (n + 1); /* truncation */
        st_write_raw(p, buf, len);
        wd_tensors *ts = NULL;
        int rc = wd_safetensors_open(&ts, p, err, sizeof(err));
        if (rc == 0) {
            loaded++;
            /* whatever loaded lies inside the file */
            for (int i = 0; i < wd_tensors_count(ts); i++) {
                const wd_tensor *t = wd_tensors_at(ts, i);
                volatile unsigned char sink = 0;
                for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const unsigned char *)t->data)[k];
                (void)sink;
            }
            wd_tensors_free(ts);
        } else {
            failed++;
            if (!strstr(err, "mut.safetensors")) unlabeled++;
        }
    }
    CHECK(loaded + failed == 3000 && failed > 0);
    CHECKF(unlabeled == 0, "%d messages without the file name", unlabeled);
}

int main(void) {
    dir = st_mkdtemp("st_bad");
    int fds0 = st_count_fds();
    test_files();
    test_shards();
    test_config();
    test_synth_spec();
    test_mutations();
    CHECKF(st_count_fds() == fds0, "file descriptors leaked: %d -> %d", fds0, st_count_fds());
    CHECKF(st_count_maps(dir) == 0, "mappings of test files left: %d", st_count_maps(dir));
    st_rm_rf(dir);
    return wd_test_finish("test_bad_weights");
}
