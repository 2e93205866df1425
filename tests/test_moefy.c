/* MoEfication (host/moefy.c): balanced clustering recovers planted groups;
 * a MoEfied synthetic dense model (F32, BF16 tied) with all experts selected
 * gives the dense logits (rel L2 < 1e-4; the only difference is summation
 * order), with the learned and the oracle router; fewer experts change
 * them; the output is byte-identical across runs and thread counts; bad
 * inputs give one message. With SmolLM2-135M fetched (Q4_1 GGUF), the same
 * equality through the GGUF writer, gate/up kept in Q4_1. */
#include <sys/stat.h>

#include "host/host.h"
#include "test_util.h"

static char g_dir[] = "/tmp/wd_test_moefy_XXXXXX";

static void test_cluster(void) {
    enum { F = 64, T = 32, E = 4 };
    float *X = calloc((size_t)F * T, sizeof(float));
    int group[F], assign[F];
    wd_rng r;
    wd_rng_seed(&r, 5);
    for (int i = 0; i < F; i++) {
        group[i] = (i * 7) % E; /* interleaved, so order does not give it away */
        double q = 0;
        for (int t = 0; t < T; t++) {
            float v = (float)(0.05 * wd_rng_uniform(&r));
            if (t / (T / E) == group[i]) v += (float)(0.5 + wd_rng_uniform(&r));
            X[(size_t)i * T + t] = v;
            q += (double)v * v;
        }
        for (int t = 0; t < T; t++) X[(size_t)i * T + t] /= (float)sqrt(q);
    }
    int it = wd_moefy_cluster(X, F, T, E, 1, assign);
    CHECK(it >= 1);
    int cnt[E] = {0}, same = 1;
    for (int i = 0; i < F; i++) {
        CHECK(assign[i] >= 0 && assign[i] < E);
        if (assign[i] >= 0 && assign[i] < E) cnt[assign[i]]++;
        for (int j = 0; j < i; j++)
            if ((group[i] == group[j]) != (assign[i] == assign[j])) same = 0;
    }
    for (int e = 0; e < E; e++) CHECKF(cnt[e] == F / E, "cluster %d has %d points", e, cnt[e]);
    CHECK(same);
    /* identical points: still exactly F/E each */
    for (int i = 0; i < F; i++)
        for (int t = 0; t < T; t++) X[(size_t)i * T + t] = t == 0;
    CHECK(wd_moefy_cluster(X, F, T, E, 1, assign) >= 1);
    memset(cnt, 0, sizeof(cnt));
    for (int i = 0; i < F; i++)
        if (assign[i] >= 0 && assign[i] < E) cnt[assign[i]]++;
    for (int e = 0; e < E; e++) CHECK(cnt[e] == F / E);
    free(X);
}

static double rel_l2(const float *a, const float *b, size_t n) {
    double d = 0, q = 0;
    for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), q += (double)b[i] * b[i];
    return sqrt(d / (q > 0 ? q : 1));
}

static int logits_of(const wd_model *m, wd_pool *pool, int oracle, const int *tok, int n,
                     float *out) {
    wd_session *s = wd_session_create(m, n + 1, pool);
    if (!s) return 1;
    wd_session_set_oracle(s, oracle);
    char err[256];
    int rc = wd_forward(s, tok, n, out, 1, err, sizeof err);
    if (rc) fprintf(stderr, "forward: %s\n", err);
    wd_session_free(s);
    return rc;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* MoEfy dense model `dense` into out (E experts), check the all-experts
 * equality; returns the MoE's path in moe_path. */
static void check_equal(const char *dense, const char *out, const char *moe_path, int E,
                        int calib, wd_pool *pool, int check_differs) {
    char err[1024];
    wd_model *d = NULL, *m = NULL;
    if (wd_model_load(&d, dense, err, sizeof err)) {
        CHECKF(0, "%s", err);
        return;
    }
    wd_moefy_opts o;
    wd_moefy_default(&o);
    o.n_experts = E;
    o.calib_tokens = calib;
    o.seq_len = 24;
    int rc = wd_moefy(d, out, &o, pool, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc || wd_model_load(&m, moe_path, err, sizeof err)) {
        CHECKF(0, "%s", rc ? "moefy failed" : err);
        wd_model_free(d);
        return;
    }
    CHECK(m->cfg.n_experts == E);
    CHECK(m->cfg.combine_sum == 1);
    CHECK(m->cfg.top_k == (3 * E + 3) / 4);
    CHECK(m->cfg.ffn * E == d->cfg.ffn);
    CHECK(m->layers[0].gate != NULL);
    CHECK(m->layers[0].w1[0]->dtype == d->layers[0].w1[0]->dtype);
    enum { N = 12 };
    int tok[N];
    for (int i = 0; i < N; i++) tok[i] = (i * 37 + 5) % d->cfg.vocab;
    size_t nl = (size_t)N * d->cfg.vocab;
    float *ld = malloc(nl * 4), *lm = malloc(nl * 4), *lo = malloc(nl * 4);
    CHECK(logits_of(d, pool, 0, tok, N, ld) == 0);
    m->cfg.top_k = E;
    CHECK(logits_of(m, pool, 0, tok, N, lm) == 0);
    CHECK(logits_of(m, pool, 1, tok, N, lo) == 0);
    double r1 = rel_l2(lm, ld, nl), r2 = rel_l2(lo, ld, nl);
    printf("%s: all %d experts: logits rel L2 %.3g (router), %.3g (oracle)\n", out, E, r1, r2);
    CHECKF(r1 < 1e-4, "rel L2 %g", r1);
    CHECKF(r2 < 1e-4, "rel L2 %g", r2);
    if (check_differs) {
        m->cfg.top_k = 1;
        CHECK(logits_of(m, pool, 0, tok, N, lm) == 0);
        double r3 = rel_l2(lm, ld, nl);
        printf("%s: top-1: logits rel L2 %.3g\n", out, r3);
        CHECKF(r3 > 1e-3, "top-1 equals dense (rel L2 %g)", r3);
    }
    free(ld);
    free(lm);
    free(lo);
    wd_model_free(m);
    wd_model_free(d);
}

static void test_synthetic(wd_pool *pool, wd_pool *pool1) {
    char dense[256], out[256], out2[256], a[300], b[300], err[1024];
    for (int v = 0; v < 2; v++) {
        wd_synth_spec s;
        wd_synth_default(&s);
        s.dense = 1;
        s.hidden = 48;
        s.n_heads = 4;
        s.n_kv_heads = 2;
        s.head_dim = 12;
        s.ffn = 128;
        s.n_layers = 2;
        s.dtype = v ? WD_DT_BF16 : WD_DT_F32;
        s.tied = v;
        s.seed = 3 + v;
        snprintf(dense, sizeof dense, "%s/dense%d", g_dir, v);
        snprintf(out, sizeof out, "%s/moe%d", g_dir, v);
        CHECKF(wd_synth_write(dense, &s, err, sizeof err) == 0, "%s", err);
        check_equal(dense, out, out, 8, 96, pool, 1);
    }
    /* deterministic: same bytes again, on one thread */
    wd_model *d = NULL;
    snprintf(dense, sizeof dense, "%s/dense0", g_dir);
    snprintf(out2, sizeof out2, "%s/moe0-again", g_dir);
    CHECK(wd_model_load(&d, dense, err, sizeof err) == 0);
    if (!d) return;
    wd_moefy_opts o;
    wd_moefy_default(&o);
    o.calib_tokens = 96;
    o.seq_len = 24;
    CHECK(wd_moefy(d, out2, &o, pool1, err, sizeof err) == 0);
    static const char *const files[] = {"model.safetensors", "config.json", "moefy.json",
                                        "tokenizer.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/moe0/%s", g_dir, files[i]);
        snprintf(b, sizeof b, "%s/%s", out2, files[i]);
        CHECKF(same_file(a, b), "%s differs between runs", files[i]);
    }
    /* bad inputs: E does not divide the FFN; too few calibration tokens */
    o.n_experts = 5;
    snprintf(out2, sizeof out2, "%s/bad", g_dir);
    CHECK(wd_moefy(d, out2, &o, pool, err, sizeof err) != 0);
    CHECKF(strstr(err, "divide the FFN width 128") != NULL, "%s", err);
    struct stat st;
    CHECK(stat(out2, &st) != 0); /* nothing written */
    wd_model_free(d);
    /* a MoE is refused */
    wd_model *m = NULL;
    snprintf(out, sizeof out, "%s/moe0", g_dir);
    CHECK(wd_model_load(&m, out, err, sizeof err) == 0);
    if (m) {
        wd_moefy_default(&o);
        CHECK(wd_moefy(m, out2, &o, pool, err, sizeof err) != 0);
        CHECKF(strstr(err, "needs a dense model") != NULL, "%s", err);
        wd_model_free(m);
    }
}

static void test_smollm2(wd_pool *pool) {
#ifdef WD_SOURCE_DIR
    const char *src = WD_SOURCE_DIR;
#else
    const char *src = getenv("WD_SOURCE_DIR");
#endif
    char path[1024], out[256], moe[300], err[1024];
    snprintf(path, sizeof path, "%s/weights/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
             src ? src : ".");
    wd_model *d = NULL;
    if (access(path, R_OK) != 0 || wd_model_load(&d, path, err, sizeof err)) {
        printf("SmolLM2 part skipped: %s\n", access(path, R_OK) ? "model not fetched" : err);
        return;
    }
    wd_model_free(d);
    snprintf(out, sizeof out, "%s/smol", g_dir);
    snprintf(moe, sizeof moe, "%s/model.gguf", out);
    check_equal(path, out, moe, 8, 48, pool, 0);
    wd_model *m = NULL;
    if (!wd_model_load(&m, moe, err, sizeof err)) {
        CHECK(m->layers[3].w1[2]->dtype == WD_DT_Q4_1);
        CHECK(m->layers[3].w2[2]->dtype == WD_DT_F32 || m->layers[3].w2[2]->dtype == WD_DT_F16);
        wd_model_free(m);
    }
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    test_cluster();
    wd_pool *pool = wd_pool_create(2), *pool1 = wd_pool_create(1);
    test_synthetic(pool, pool1);
    test_smollm2(pool);
    wd_pool_destroy(pool);
    wd_pool_destroy(pool1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return wd_test_finish("test_moefy");
}
