/* fuzz_seeds OUT: writes small valid inputs for every fuzz target into
 * OUT/<target>/ (run.sh adds the shipped files next to them). Small seeds
 * keep the fuzzers fast; the shipped files keep them realistic. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "emulation/emulation.h"
#include "tests/fuzz/fuzz_util.h"

static int put_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[1024];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        fprintf(stderr, "fuzz_seeds: %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static int copy_file(const char *from, const char *dir, const char *name) {
    FILE *f = fopen(from, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_seeds: %s: %s\n", from, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb, cap *= 2;
    }
    fclose(f);
    int rc = !b || put_file(dir, name, b, n);
    free(b);
    return rc;
}

/* ---- a minimal GGUF v3 writer (F32 tensors, SPM vocab) ------------------ */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} gbuf;
static void gput(gbuf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void g32(gbuf *b, uint32_t v) { gput(b, &v, 4); }
static void g64(gbuf *b, uint64_t v) { gput(b, &v, 8); }
static void gstr(gbuf *b, const char *s) {
    g64(b, strlen(s));
    gput(b, s, strlen(s));
}
enum { GU32 = 4, GI32 = 5, GF32 = 6, GSTR = 8, GARR = 9 };
static void kv_u32(gbuf *b, const char *k, uint32_t v) {
    gstr(b, k), g32(b, GU32), g32(b, v);
}
static void kv_f32(gbuf *b, const char *k, float v) {
    gstr(b, k), g32(b, GF32), gput(b, &v, 4);
}
static void kv_str(gbuf *b, const char *k, const char *v) {
    gstr(b, k), g32(b, GSTR), gstr(b, v);
}

#define GV 8
static int write_gguf(const char *dir) {
    enum { H = 16, NH = 2, NKV = 1, HD = 8, F = 8, E = 2, L = 1 };
    static const char *toks[GV] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b",
                                   ("\xE2\x96\x81" "a"), "ab"};
    struct {
        const char *name;
        int nd;
        uint64_t ne[3]; /* ggml order: innermost first */
    } t[] = {
        {"token_embd.weight", 2, {H, GV}},       {"output_norm.weight", 1, {H}},
        {"blk.0.attn_norm.weight", 1, {H}},      {"blk.0.ffn_norm.weight", 1, {H}},
        {"blk.0.attn_q.weight", 2, {H, NH * HD}}, {"blk.0.attn_k.weight", 2, {H, NKV * HD}},
        {"blk.0.attn_v.weight", 2, {H, NKV * HD}}, {"blk.0.attn_output.weight", 2, {NH * HD, H}},
        {"blk.0.ffn_gate_inp.weight", 2, {H, E}}, {"blk.0.ffn_gate_exps.weight", 3, {H, F, E}},
        {"blk.0.ffn_up_exps.weight", 3, {H, F, E}}, {"blk.0.ffn_down_exps.weight", 3, {F, H, E}},
    };
    int nt = (int)(sizeof t / sizeof t[0]);
    gbuf b = {0};
    gput(&b, "GGUF", 4);
    g32(&b, 3);
    g64(&b, (uint64_t)nt);
    g64(&b, 17);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "llama.embedding_length", H);
    kv_u32(&b, "llama.block_count", L);
    kv_u32(&b, "llama.attention.head_count", NH);
    kv_u32(&b, "llama.attention.head_count_kv", NKV);
    kv_u32(&b, "llama.feed_forward_length", F);
    kv_u32(&b, "llama.expert_count", E);
    kv_u32(&b, "llama.expert_used_count", 1);
    kv_u32(&b, "llama.context_length", 64);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_f32(&b, "llama.rope.freq_base", 10000.0f);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    gstr(&b, "tokenizer.ggml.tokens"), g32(&b, GARR), g32(&b, GSTR), g64(&b, GV);
    for (int i = 0; i < GV; i++) gstr(&b, toks[i]);
    gstr(&b, "tokenizer.ggml.scores"), g32(&b, GARR), g32(&b, GF32), g64(&b, GV);
    for (int i = 0; i < GV; i++) {
        float s = -(float)i;
        gput(&b, &s, 4);
    }
    gstr(&b, "tokenizer.ggml.token_type"), g32(&b, GARR), g32(&b, GI32), g64(&b, GV);
    for (int i = 0; i < GV; i++) g32(&b, i == 0 ? 2 : i < 3 ? 3 : 1);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        gstr(&b, t[i].name);
        g32(&b, (uint32_t)t[i].nd);
        uint64_t elems = 1;
        for (int d = 0; d < t[i].nd; d++) g64(&b, t[i].ne[d]), elems *= t[i].ne[d];
        g32(&b, 0); /* F32 */
        g64(&b, off);
        off += (elems * 4 + 31) & ~(uint64_t)31;
    }
    while (b.n % 32) gput(&b, "", 1);
    for (int i = 0; i < nt; i++) {
        uint64_t elems = 1;
        for (int d = 0; d < t[i].nd; d++) elems *= t[i].ne[d];
        for (uint64_t j = 0; j < elems; j++) {
            float v = (float)((j * 7 + (uint64_t)i) % 13) / 13.0f - 0.5f;
            gput(&b, &v, 4);
        }
        while (b.n % 32) gput(&b, "", 1);
    }
    int rc = put_file(dir, "tiny.gguf", b.p, b.n);
    free(b.p);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds OUT\n");
        return 2;
    }
    const char *out = argv[1];
    char d[1024], m[1024], p[1100], err[1024];
    mkdir(out, 0755);
    int rc = 0;
    wd_synth_spec s;
    /* a tiny single-file model: safetensors, config, tokenizer */
    fz_tiny_spec(&s);
    snprintf(m, sizeof m, "%s/tiny-model", out);
    if (wd_synth_write(m, &s, err, sizeof err)) {
        fprintf(stderr, "fuzz_seeds: %s\n", err);
        return 1;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", m);
    snprintf(d, sizeof d, "%s/safetensors", out);
    rc |= copy_file(p, d, "tiny.safetensors");
    snprintf(p, sizeof p, "%s/config.json", m);
    snprintf(d, sizeof d, "%s/config", out);
    rc |= copy_file(p, d, "tiny-config.json");
    snprintf(p, sizeof p, "%s/tokenizer.json", m);
    snprintf(d, sizeof d, "%s/tokenizer", out);
    rc |= copy_file(p, d, "tiny-tokenizer.json");
    /* the sharded form: its index (the fuzzer makes the same shards) */
    s.max_shard_bytes = 2048;
    snprintf(m, sizeof m, "%s/tiny-sharded", out);
    if (wd_synth_write(m, &s, err, sizeof err)) {
        fprintf(stderr, "fuzz_seeds: %s\n", err);
        return 1;
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", m);
    snprintf(d, sizeof d, "%s/st_index", out);
    rc |= copy_file(p, d, "tiny-index.json");
    snprintf(d, sizeof d, "%s/gguf", out);
    rc |= write_gguf(d);
    /* traces */
    static const char csv[] = "# a CSV rate trace\ntime_s,device,downlink_bps,uplink_bps\n"
                              "0,0,5e7,2e7\n0,1,4e7,1e7\n0.5,0,0,1e7\n0.5,1,3e7,5e6\n"
                              "1.25,0,8e7,3e7\n1.25,1,2e7,2e7\n";
    snprintf(d, sizeof d, "%s/csv_trace", out);
    rc |= put_file(d, "two-devices.csv", csv, sizeof csv - 1);
    static const char csv2[] = "time_s,downlink_bps\n0,1e6\n0.001,0\n0.002,3e6\n";
    rc |= put_file(d, "one-device.csv", csv2, sizeof csv2 - 1);
    static const char mm[] = "1\n1\n2\n5\n5\n5\n9\n14\n20\n20\n31\n";
    snprintf(d, sizeof d, "%s/mahimahi", out);
    rc |= put_file(d, "short.mahi", mm, sizeof mm - 1);
    /* scenarios using each feature (traces by relative path: fuzz_scenario
     * writes trace.csv and trace.mahi next to the scenario) */
    static const char *sc[] = {
        "{\"name\": \"const\", \"seed\": 2, \"device_count\": 3, \"device_defaults\": "
        "{\"downlink\": {\"model\": \"constant\", \"rate_mbps\": 50, \"latency_s\": 0.001}, "
        "\"uplink\": {\"model\": \"constant\", \"rate_mbps\": 20}, \"profile\": \"phone\"}, "
        "\"policy\": {\"name\": \"wdmoe\", \"gamma\": 1.1}, \"bandwidth_allocation\": \"minmax\", "
        "\"faults\": [{\"device\": 0, \"kind\": \"down\", \"from_s\": 0.01, \"to_s\": 0.02}, "
        "{\"device\": 1, \"kind\": \"link\", \"direction\": \"uplink\", \"scale\": 0}, "
        "{\"device\": 2, \"kind\": \"slow\", \"factor\": 3}]}",
        "{\"name\": \"synthetic\", \"radio\": {\"model\": \"UMi\", \"fading\": \"rician\", "
        "\"speed_mps\": 3, \"los\": \"nlos\"}, \"devices\": [{\"distance_m\": 50, \"experts\": "
        "[0, 1, 2]}, {\"position_m\": [100, 20], \"experts\": [1, 3], \"profile\": {\"preset\": "
        "\"laptop\", \"mem_gb\": 1}}], \"policy\": \"fastest\", \"bandwidth_allocation\": "
        "\"joint\"}",
        "{\"name\": \"traces\", \"devices\": [{\"downlink\": {\"model\": \"csv\", \"file\": "
        "\"trace.csv\", \"device\": 0}, \"uplink\": {\"model\": \"mahimahi\", \"file\": "
        "\"trace.mahi\", \"offset_s\": 0.01, \"window_s\": 0.005}}, {\"downlink\": {\"model\": "
        "\"constant\", \"rate_mbps\": 10}, \"uplink\": {\"model\": \"csv\", \"file\": "
        "\"trace.csv\", \"column\": \"uplink_bps\", \"device\": 1}}], \"policy\": \"wlr-drop\"}",
    };
    snprintf(d, sizeof d, "%s/scenario", out);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "tiny-%d.json", i);
        rc |= put_file(d, name, sc[i], strlen(sc[i]));
    }
    /* recorded router probabilities */
    snprintf(d, sizeof d, "%s/probs", out);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/tiny.wdpr", d);
    wd_probs shape = {2, 4, 2, 16, 8, 2, 1, 8, 32, 0, NULL, NULL};
    wd_probs_writer *w;
    if (wd_probs_write_open(&w, p, &shape, err, sizeof err)) {
        fprintf(stderr, "fuzz_seeds: %s\n", err);
        return 1;
    }
    for (int t = 0; t < 3; t++) {
        float pr[8] = {0.4f, 0.3f, 0.2f, 0.1f, 0.1f, 0.2f, 0.3f, 0.4f};
        if (wd_probs_write_token(w, pr, err, sizeof err)) {
            fprintf(stderr, "fuzz_seeds: %s\n", err);
            return 1;
        }
    }
    if (wd_probs_write_close(w, err, sizeof err)) {
        fprintf(stderr, "fuzz_seeds: %s\n", err);
        return 1;
    }
    return rc;
}
