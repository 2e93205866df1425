/* The plain-sum combine of MoEfied models on the GPU: a synthetic dense model
 * MoEfied into 4 experts (F32 and BF16); GPU logits against the CPU backend at
 * k = 2 (router top-k, weights 1) and k = 4 (all experts = the dense model),
 * prefill and decode. Skipped (exit 77) without a GPU. */
#include "host/host.h"
#include "host/cuda_runner.h"
#include "tests/gpu/gpu_test_util.h"

int main(void) {
    if (wd_cuda_device_count() <= 0) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    char dir[] = "/tmp/wd_test_gpu_moefy_XXXXXX", path[128], err[1024], log[8192];
    if (!mkdtemp(dir)) return 1;
    wd_pool *pool = wd_pool_create(2);
    enum { N = 10, NP = 6 };
    for (int v = 0; v < 2; v++) {
        wd_synth_spec s;
        wd_synth_default(&s);
        s.dense = 1;
        s.hidden = 64;
        s.ffn = 128;
        s.n_layers = 2;
        s.dtype = v ? WD_DT_BF16 : WD_DT_F32;
        s.seed = 11 + v;
        snprintf(path, sizeof path, "%s/dense%d", dir, v);
        CHECKF(wd_synth_write(path, &s, err, sizeof err) == 0, "%s", err);
        wd_model *d = NULL, *m = NULL;
        CHECKF(wd_model_load(&d, path, err, sizeof err) == 0, "%s", err);
        wd_moefy_opts o;
        wd_moefy_default(&o);
        o.n_experts = 4;
        o.calib_tokens = 64;
        o.seq_len = 16;
        snprintf(path, sizeof path, "%s/moe%d", dir, v);
        CHECKF(d && wd_moefy(d, path, &o, pool, err, sizeof err) == 0, "%s", err);
        CHECKF(wd_model_load(&m, path, err, sizeof err) == 0, "%s", err);
        if (!d || !m) break;
        int tok[N];
        for (int i = 0; i < N; i++) tok[i] = (i * 29 + 3) % m->cfg.vocab;
        size_t V = (size_t)m->cfg.vocab;
        float *cpu = malloc(N * V * 4), *gpu = malloc(N * V * 4), *dense = malloc(N * V * 4);
        wd_session *sd = wd_session_create(d, N + 1, pool);
        CHECK(wd_forward(sd, tok, N, dense, 1, err, sizeof err) == 0);
        wd_session_free(sd);
        for (int k = 2; k <= 4; k += 2) {
            m->cfg.top_k = k;
            wd_session *sc = wd_session_create(m, N + 1, pool);
            CHECK(wd_forward(sc, tok, N, cpu, 1, err, sizeof err) == 0);
            wd_session_free(sc);
            wd_cuda_model_spec spec;
            wd_cuda_model_spec_default(&spec);
            spec.dtype = WD_DT_F32;
            spec.max_ctx = 32;
            spec.max_batch = 16;
            spec.n_devices = 4;
            wd_cuda_model *cm = NULL;
            if (wd_cuda_model_create(&cm, m, &spec, log, sizeof log, err, sizeof err)) {
                CHECKF(0, "%s", err);
                continue;
            }
            CHECK(wd_cuda_model_forward(cm, tok, NP, gpu, 1, NULL, NULL, err, sizeof err) == 0);
            for (int i = NP; i < N; i++)
                CHECKF(wd_cuda_model_forward(cm, tok + i, 1, gpu + (size_t)i * V, 0, NULL, NULL, err,
                                             sizeof err) == 0, "%s", err);
            double r = wd_gpu_rel_err(gpu, cpu, N * V), rd = wd_gpu_rel_err(gpu, dense, N * V);
            printf("%s k=%d: GPU vs CPU rel L2 %.3g, vs dense %.3g\n", v ? "BF16" : "F32", k, r, rd);
            CHECKF(r < 1e-4, "k=%d: rel L2 %g", k, r);
            if (k == 4) CHECKF(rd < 1e-4, "all experts vs dense: rel L2 %g", rd);
            else CHECKF(rd > 1e-3, "k=2 equals dense (%g)", rd);
            wd_cuda_model_free(cm);
        }
        free(cpu);
        free(gpu);
        free(dense);
        wd_model_free(d);
        wd_model_free(m);
    }
    wd_pool_destroy(pool);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return wd_test_finish("test_gpu_moefy");
}
