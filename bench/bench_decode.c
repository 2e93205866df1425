/* bench_decode: CPU engine throughput on a synthetic Mixtral (or a given
 * model): prefill tokens/s and GFLOP/s, decode tokens/s, measured memory read
 * bandwidth and decode's share of the bandwidth roofline, peak resident memory
 * against the weights' size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "host/host.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void help(void) {
    printf("usage: bench_decode [--model DIR] [--threads N] [--prompt N] [--decode N] [--dir DIR]\n"
           "                    [--scenario FILE]\n\n"
           "Without --model, writes (once, into --dir, default /tmp/wdmoe-bench-mini) the synthetic\n"
           "mini Mixtral: hidden 512, 8 layers, 8 heads, 2 KV heads, FFN 1792, 8 experts, top-2,\n"
           "vocab 32000, F32. Prints prefill tokens/s and GFLOP/s (--prompt tokens, default 128),\n"
           "decode tokens/s (--decode steps, default 64), the measured read bandwidth and decode's\n"
           "share of the roofline (active weight bytes per token / bandwidth), and peak RSS.\n"
           "With --scenario, decode runs again through the BS scheduler (policy + radio emulation\n"
           "on the virtual clock); the time spent in the scheduler is printed as a share of the\n"
           "rest of the decode step (the emulation's overhead).\n");
}

/* Times the BS scheduler's hook (policy + radio emulation) inside a real decode. */
typedef struct {
    wd_moe_hooks inner;
    double seconds;
} timed_hooks;

static int timed_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    timed_hooks *h = ctx;
    double t0 = now_s();
    int rc = h->inner.select(h->inner.ctx, layer, pos0, probs, sel);
    h->seconds += now_s() - t0;
    return rc;
}

/* Multiply-add flops of one forward over n tokens starting at pos0 (logits for the last). */
static double forward_flops(const wd_config *c, int n, int pos0) {
    double H = c->hidden, Q = (double)c->n_heads * c->head_dim,
           KV = (double)c->n_kv_heads * c->head_dim;
    double per_tok = 2 * H * (Q + 2 * KV) + 2 * Q * H + 2 * H * c->n_experts +
                     c->top_k * 6.0 * H * c->ffn;
    double attn = 0;
    for (int t = 0; t < n; t++) attn += 4.0 * Q * (pos0 + t + 1);
    return c->n_layers * (n * per_tok + attn) + 2.0 * H * c->vocab;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *dir = "/tmp/wdmoe-bench-mini", *scenario = NULL;
    int threads = 0, prompt = 128, decode = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model_dir = argv[++i];
        } else if (!strcmp(argv[i], "--scenario") && i + 1 < argc) {
            scenario = argv[++i];
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) {
            prompt = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--decode") && i + 1 < argc) {
            decode = atoi(argv[++i]);
        } else {
            fprintf(stderr, "bench_decode: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (prompt < 1 || decode < 1) {
        fprintf(stderr, "bench_decode: --prompt and --decode must be >= 1\n");
        return 2;
    }
    char err[1024];
    if (!model_dir) {
        char cfg[1100];
        snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
        struct stat st;
        if (stat(cfg, &st) != 0) {
            wd_synth_spec spec;
            wd_synth_default(&spec);
            spec.hidden = 512; spec.n_layers = 8; spec.n_heads = 8; spec.n_kv_heads = 2;
            spec.head_dim = 64; spec.ffn = 1792; spec.n_experts = 8; spec.top_k = 2;
            spec.vocab = 32000; spec.dtype = WD_DT_F32; spec.tied = 0; spec.max_pos = 4096;
            spec.seed = 1;
            fprintf(stderr, "bench_decode: writing the synthetic mini Mixtral to %s ...\n", dir);
            if (wd_synth_write(dir, &spec, err, sizeof(err))) {
                fprintf(stderr, "bench_decode: %s\n", err);
                return 1;
            }
        }
        model_dir = dir;
    }
    wd_model *m;
    if (wd_model_load(&m, model_dir, err, sizeof(err))) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return 1;
    }
    const wd_config *c = &m->cfg;
    if (prompt + decode > c->max_pos) {
        fprintf(stderr, "bench_decode: prompt + decode exceeds the context %d\n", c->max_pos);
        wd_model_free(m);
        return 2;
    }
    wd_pool *pool = wd_pool_create(threads);
    wd_session *s = wd_session_create(m, prompt + decode + 1, pool);
    float *logits = malloc((size_t)c->vocab * sizeof(float));
    int *toks = malloc(sizeof(int) * (size_t)prompt);
    if (!pool || !s || !logits || !toks) {
        fprintf(stderr, "bench_decode: out of memory\n");
        return 1;
    }
    for (int i = 0; i < prompt; i++) toks[i] = (i * 7919 + 1) % c->vocab;
    int nt = wd_pool_size(pool);

    /* warm-up: touches every expert's pages once (a prompt routes to all experts) */
    if (wd_forward(s, toks, prompt, logits, 0, err, sizeof(err))) goto fail;
    double best_prefill = 1e30, best_decode = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        wd_session_reset(s);
        double t0 = now_s();
        if (wd_forward(s, toks, prompt, logits, 0, err, sizeof(err))) goto fail;
        double tp = now_s() - t0;
        if (tp < best_prefill) best_prefill = tp;
        int next = toks[prompt - 1];
        t0 = now_s();
        for (int i = 0; i < decode; i++) {
            next = wd_sample(logits, c->vocab, 0, 1, NULL, NULL);
            if (wd_forward(s, &next, 1, logits, 0, err, sizeof(err))) goto fail;
        }
        double td = now_s() - t0;
        if (td < best_decode) best_decode = td;
    }
    struct rusage ru; /* peak RSS before the bandwidth probe allocates its buffer */
    getrusage(RUSAGE_SELF, &ru);
    double bw = wd_measure_read_bandwidth(pool, (size_t)1 << 30, 5);
    double active = wd_model_active_bytes(m, c->top_k);
    double emu_decode = 0, emu_hook = 0;
    char emu_policy[64] = "";
    if (scenario) {
        wd_scenario sc;
        wd_scheduler *k = NULL;
        if (wd_scenario_load(&sc, scenario, err, sizeof(err)) ||
            wd_scheduler_create(&k, m, &sc, err, sizeof(err)))
            goto fail;
        timed_hooks th = {{0}, 0};
        wd_scheduler_hooks(k, &th.inner);
        wd_moe_hooks hooks = {&th, timed_select, NULL};
        snprintf(emu_policy, sizeof(emu_policy), "%s", wd_emu_policy_name(wd_scheduler_emu(k)));
        emu_decode = 1e30;
        for (int rep = 0; rep < 3; rep++) { /* decode with the scheduler on */
            wd_session_set_hooks(s, NULL);
            wd_session_reset(s);
            if (wd_forward(s, toks, prompt, logits, 0, err, sizeof(err))) goto fail;
            wd_session_set_hooks(s, &hooks);
            int next;
            th.seconds = 0;
            double t0 = now_s();
            for (int i = 0; i < decode; i++) {
                next = wd_sample(logits, c->vocab, 0, 1, NULL, NULL);
                if (wd_forward(s, &next, 1, logits, 0, err, sizeof(err))) goto fail;
            }
            double td = now_s() - t0;
            if (td < emu_decode) {
                emu_decode = td;
                emu_hook = th.seconds;
            }
        }
        wd_session_set_hooks(s, NULL);
        wd_scheduler_free(k);
        wd_scenario_free(&sc);
    }
    double dec_tps = decode / best_decode;
    double roof_tps = bw / active;
    double pf_flops = forward_flops(c, prompt, 0) / best_prefill;
    double rss = ru.ru_maxrss * 1024.0, wbytes = (double)wd_tensors_total_bytes(m->tensors);

    printf("model            %s\n", model_dir);
    printf("shape            hidden %d, layers %d, heads %d/%d, head_dim %d, ffn %d, experts %d top-%d, vocab %d, %s\n",
           c->hidden, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn, c->n_experts,
           c->top_k, c->vocab, wd_dtype_name(m->layers[0].w1[0]->dtype));
    printf("threads          %d\n", nt);
    printf("%-16s %12s %14s\n", "", "measured", "vs limit");
    printf("%-16s %9.2f GB/s %14s\n", "read bandwidth", bw / 1e9, "(the limit)");
    printf("%-16s %8.1f tok/s %13.1f%%  (roofline %.1f tok/s = %.1f GB/s / %.1f MB active per token)\n",
           "decode", dec_tps, 100 * dec_tps / roof_tps, roof_tps, bw / 1e9, active / 1e6);
    printf("%-16s %8.1f tok/s %9.1f GFLOP/s  (%d-token prompt)\n", "prefill",
           prompt / best_prefill, pf_flops / 1e9, prompt);
    printf("%-16s %9.1f MB %13.2fx  (weights %.1f MB, mapped)\n", "peak RSS", rss / 1e6,
           rss / wbytes, wbytes / 1e6);
    if (scenario)
        printf("%-16s %8.1f tok/s %13.2f%%  (time in the BS scheduler: %.2f us/token of %.1f us/token;"
               " policy %s, %s)\n",
               "decode+emulation", decode / emu_decode, 100 * emu_hook / (emu_decode - emu_hook),
               1e6 * emu_hook / decode, 1e6 * emu_decode / decode, emu_policy, scenario);
    free(logits);
    free(toks);
    wd_session_free(s);
    wd_pool_destroy(pool);
    wd_model_free(m);
    return 0;
fail:
    fprintf(stderr, "bench_decode: %s\n", err);
    return 1;
}
