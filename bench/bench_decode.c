/* bench_decode: CPU engine throughput on a synthetic Mixtral (or a given
 * model): prefill tokens/s and GFLOP/s, decode tokens/s, measured memory read
 * bandwidth and decode's share of the bandwidth roofline, peak resident memory
 * against the weights' size. Every figure is measured --reps times and
 * reported as median, min, max and spread; --json writes them all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "bench/bench_util.h"
#include "host/host.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* CPU seconds of the whole process (every thread): on a shared machine the
 * wall time includes the time slices other processes took, this does not. */
static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void help(void) {
    printf("usage: bench_decode [--model DIR|FILE.gguf] [--threads N] [--prompt N] [--decode N]\n"
           "                    [--reps N] [--bw-passes N] [--dir DIR] [--dtype f32|f16|bf16]\n"
           "                    [--no-hugepages] [--scenario FILE] [--json FILE|-]\n\n"
           "Without --model, writes (once, into --dir, default /tmp/wdmoe-bench-mini[-DTYPE]) the\n"
           "synthetic mini Mixtral: hidden 512, 8 layers, 8 heads, 2 KV heads, FFN 1792, 8 experts,\n"
           "top-2, vocab 32000, --dtype (default f32).\n"
           "After one untimed warm-up, each of --reps repetitions (default 5) times a prefill of\n"
           "--prompt tokens (default 128) and --decode greedy steps (default 64). Prints median,\n"
           "min, max and spread ((max-min)/median) of prefill tok/s and GFLOP/s and decode tok/s;\n"
           "the read bandwidth (median of --bw-passes whole passes, default 7, 0 for none, over a buffer of\n"
           "max(1 GiB, 8x the last-level cache) with the run's threads) and the roofline it gives\n"
           "(bandwidth / active weight bytes per token); peak RSS against the weights' size.\n"
           "With --scenario, decode runs again through the BS scheduler (policy + radio emulation\n"
           "on the virtual clock); the time spent in the scheduler is printed as a share of the\n"
           "rest of the decode step (the emulation's overhead).\n"
           "The weights are copied into memory advised for transparent huge pages\n"
           "(wd_model_hugepages, as serve-cell and generate --hugepages do) when the copy takes\n"
           "at most half of MemAvailable (the copy's time is printed); --no-hugepages reads the\n"
           "4 KB pages of the file mapping.\n"
           "--json FILE writes every figure and its samples as JSON (\"-\": stdout).\n");
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

static void print_row(FILE *out, const char *name, const char *unit, const double *v, int n,
                      double scale, const char *note) {
    wd_bstats s = wd_bstats_of(v, n);
    fprintf(out, "%-18s %10.2f %10.2f %10.2f %7.1f%%  %-7s %s\n", name, s.median * scale, s.min * scale,
           s.max * scale, 100 * s.spread, unit, note);
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *dir = NULL, *scenario = NULL, *json_path = NULL;
    int threads = 0, prompt = 128, decode = 64, reps = 5, bw_passes = 7, hugepages = 1;
    wd_dtype dtype = WD_DT_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *iopt = !strcmp(a, "--threads") ? &threads
                    : !strcmp(a, "--prompt") ? &prompt
                    : !strcmp(a, "--decode") ? &decode
                    : !strcmp(a, "--reps") ? &reps
                    : !strcmp(a, "--bw-passes") ? &bw_passes
                                                : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help();
            return 0;
        } else if (iopt && v) {
            if (iopt == &bw_passes && !strcmp(v, "0")) *iopt = 0; /* 0: no bandwidth probe */
            else if ((*iopt = wd_bench_posint("bench_decode", a, v)) < 0) return 2;
            i++;
        } else if (!strcmp(a, "--hugepages")) { /* the default; kept for old scripts */
            hugepages = 1;
        } else if (!strcmp(a, "--no-hugepages")) {
            hugepages = 0;
        } else if (!strcmp(a, "--model") && v) {
            model_dir = argv[++i];
        } else if (!strcmp(a, "--scenario") && v) {
            scenario = argv[++i];
        } else if (!strcmp(a, "--dir") && v) {
            dir = argv[++i];
        } else if (!strcmp(a, "--json") && v) {
            json_path = argv[++i];
        } else if (!strcmp(a, "--dtype") && v) {
            i++;
            if (!strcmp(v, "f32")) dtype = WD_DT_F32;
            else if (!strcmp(v, "f16")) dtype = WD_DT_F16;
            else if (!strcmp(v, "bf16")) dtype = WD_DT_BF16;
            else {
                fprintf(stderr, "bench_decode: --dtype wants f32, f16 or bf16, got '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "bench_decode: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    char err[1024], defdir[256];
    if (!model_dir) {
        if (!dir) {
            snprintf(defdir, sizeof defdir, "/tmp/wdmoe-bench-mini%s%s",
                     dtype == WD_DT_F32 ? "" : "-", dtype == WD_DT_F32 ? "" : wd_dtype_name(dtype));
            dir = defdir;
        }
        char cfg[1100];
        snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
        struct stat st;
        if (stat(cfg, &st) != 0) {
            wd_synth_spec spec;
            wd_synth_default(&spec);
            spec.hidden = 512; spec.n_layers = 8; spec.n_heads = 8; spec.n_kv_heads = 2;
            spec.head_dim = 64; spec.ffn = 1792; spec.n_experts = 8; spec.top_k = 2;
            spec.vocab = 32000; spec.dtype = dtype; spec.tied = 0; spec.max_pos = 4096;
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
    char hp_note[512] = "";
    double copy_s = now_s();
    int copied = hugepages && wd_model_hugepages(m, hp_note, sizeof hp_note);
    copy_s = copied ? now_s() - copy_s : 0;
    if (hp_note[0]) fprintf(stderr, "bench_decode: %s: %s\n", model_dir, hp_note);
    const wd_config *c = &m->cfg;
    if (prompt + decode > c->max_pos) {
        fprintf(stderr, "bench_decode: prompt + decode exceeds the context %d\n", c->max_pos);
        wd_model_free(m);
        return 2;
    }
    wd_pool *pool = wd_pool_create(threads);
    wd_session *s = pool ? wd_session_create(m, prompt + decode + 1, pool) : NULL;
    float *logits = malloc((size_t)c->vocab * sizeof(float));
    int *toks = malloc(sizeof(int) * (size_t)prompt);
    double *pf = malloc(sizeof(double) * 5 * (size_t)reps), *dec = pf + reps,
           *emu_tps = pf + 2 * (size_t)reps, *emu_share = pf + 3 * (size_t)reps,
           *dec_cpu = pf + 4 * (size_t)reps;
    double *bw = malloc(sizeof(double) * (size_t)(bw_passes + 1));
    if (!pool || !s || !logits || !toks || !pf || !bw) {
        fprintf(stderr, "bench_decode: out of memory\n");
        return 1;
    }
    for (int i = 0; i < prompt; i++) toks[i] = (i * 7919 + 1) % c->vocab;
    int nt = wd_pool_size(pool);

    /* warm-up: touches every expert's pages once (a prompt routes to all experts) */
    if (wd_forward(s, toks, prompt, logits, 0, err, sizeof(err))) goto fail;
    for (int rep = 0; rep < reps; rep++) {
        wd_session_reset(s);
        double t0 = now_s();
        if (wd_forward(s, toks, prompt, logits, 0, err, sizeof(err))) goto fail;
        pf[rep] = prompt / (now_s() - t0);
        int next;
        t0 = now_s();
        double c0 = cpu_s();
        for (int i = 0; i < decode; i++) {
            next = wd_sample(logits, c->vocab, 0, 1, NULL, NULL);
            if (wd_forward(s, &next, 1, logits, 0, err, sizeof(err))) goto fail;
        }
        dec[rep] = decode / (now_s() - t0);
        dec_cpu[rep] = decode * nt / (cpu_s() - c0);
    }
    struct rusage ru; /* peak RSS before the bandwidth probe allocates its buffer */
    getrusage(RUSAGE_SELF, &ru);
    size_t bw_bytes = wd_bench_bw_bytes();
    if (bw_passes && wd_measure_read_bandwidth(pool, bw_bytes, bw_passes, bw) <= 0) {
        fprintf(stderr, "bench_decode: out of memory for the %zu MiB bandwidth buffer\n",
                bw_bytes >> 20);
        return 1;
    }
    double active = wd_model_active_bytes(m, c->top_k);
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
        for (int rep = 0; rep < reps; rep++) { /* decode with the scheduler on */
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
            emu_tps[rep] = decode / td;
            emu_share[rep] = th.seconds / (td - th.seconds);
        }
        wd_session_set_hooks(s, NULL);
        wd_scheduler_free(k);
        wd_scenario_free(&sc);
    }
    wd_bstats bws = wd_bstats_of(bw, bw_passes), ds = wd_bstats_of(dec, reps);
    double roof_tps = bw_passes ? bws.median / active : 0;
    double flops = forward_flops(c, prompt, 0);
    double *pflops = malloc(sizeof(double) * (size_t)reps);
    if (!pflops) {
        fprintf(stderr, "bench_decode: out of memory\n");
        return 1;
    }
    for (int i = 0; i < reps; i++) pflops[i] = pf[i] * flops / prompt;
    double rss = ru.ru_maxrss * 1024.0, wbytes = (double)wd_tensors_total_bytes(m->tensors);
    const char *wdt = wd_dtype_name(m->layers[0].w1[0]->dtype);
    char cpu[256];
    wd_bench_cpu_model(cpu, sizeof cpu);

    /* the table goes to stderr when the JSON goes to stdout */
    FILE *out = json_path && !strcmp(json_path, "-") ? stderr : stdout;
    fprintf(out, "model            %s\n", model_dir);
    fprintf(out, "shape            hidden %d, layers %d, heads %d/%d, head_dim %d, ffn %d, experts %d top-%d, vocab %d, %s\n",
           c->hidden, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn, c->n_experts,
           c->top_k, c->vocab, wdt);
    fprintf(out, "machine          %s, %ld cores online; %d threads; %d reps\n", cpu,
           sysconf(_SC_NPROCESSORS_ONLN), nt, reps);
    fprintf(out, "%-18s %10s %10s %10s %8s\n", "", "median", "min", "max", "spread");
    char note[256];
    snprintf(note, sizeof note, "(%zu MiB buffer, %d whole passes, %d threads)", bw_bytes >> 20,
             bw_passes, nt);
    if (bw_passes) {
        print_row(out, "read bandwidth", "GB/s", bw, bw_passes, 1e-9, note);
        snprintf(note, sizeof note, "= %.1f %% of the roofline %.1f tok/s (%.1f GB/s / %.1f MB per token)",
                 100 * ds.median / roof_tps, roof_tps, bws.median / 1e9, active / 1e6);
    } else {
        snprintf(note, sizeof note, "(no bandwidth probe: --bw-passes 0; %.1f MB per token)", active / 1e6);
    }
    print_row(out, "decode", "tok/s", dec, reps, 1, note);
    print_row(out, "decode, CPU time", "tok/s", dec_cpu, reps, 1,
              "(tokens x threads / process CPU seconds: without the time slices other processes took)");
    snprintf(note, sizeof note, "(%d-token prompt)", prompt);
    print_row(out, "prefill", "tok/s", pf, reps, 1, note);
    print_row(out, "prefill", "GFLOP/s", pflops, reps, 1e-9, "");
    fprintf(out, "%-18s %10.1f MB = %.2fx the weights (%.1f MB, %s)\n", "peak RSS", rss / 1e6,
            rss / wbytes, wbytes / 1e6, copied ? "copied into huge pages" : "mapped");
    if (copied)
        fprintf(out, "%-18s %10.2f s   (%.2f s per GB, once at load)\n", "huge-page copy", copy_s,
                copy_s / (wd_tensors_mapped_bytes(m->tensors) / 1e9));
    if (scenario) {
        print_row(out, "decode+emulation", "tok/s", emu_tps, reps, 1, "");
        snprintf(note, sizeof note, "time in the BS scheduler / rest of the step (policy %s, %s)",
                 emu_policy, scenario);
        print_row(out, "emulation share", "%", emu_share, reps, 100, note);
    }
    int rc = 0;
    if (json_path) {
        json_object *doc = wd_bench_doc_json("bench_decode");
        json_object_object_add(doc, "model", json_object_new_string(model_dir));
        json_object_object_add(doc, "weight_dtype", json_object_new_string(wdt));
        json_object_object_add(doc, "threads", json_object_new_int(nt));
        json_object_object_add(doc, "hugepages", json_object_new_boolean(copied));
        json_object_object_add(doc, "reps", json_object_new_int(reps));
        json_object_object_add(doc, "prompt_tokens", json_object_new_int(prompt));
        json_object_object_add(doc, "decode_tokens", json_object_new_int(decode));
        json_object_object_add(doc, "scenario", scenario ? json_object_new_string(scenario) : NULL);
        json_object_object_add(doc, "read_bandwidth_bytes_per_s",
                               bw_passes ? wd_bstats_json(bw, bw_passes) : NULL);
        json_object_object_add(doc, "bandwidth_buffer_bytes",
                               bw_passes ? json_object_new_int64((int64_t)bw_bytes) : NULL);
        json_object_object_add(doc, "active_bytes_per_token", json_object_new_double(active));
        json_object_object_add(doc, "roofline_tok_per_s", bw_passes ? json_object_new_double(roof_tps) : NULL);
        json_object_object_add(doc, "decode_roofline_fraction",
                               bw_passes ? json_object_new_double(ds.median / roof_tps) : NULL);
        json_object_object_add(doc, "decode_tok_per_s", wd_bstats_json(dec, reps));
        json_object_object_add(doc, "decode_tok_per_cpu_s", wd_bstats_json(dec_cpu, reps));
        json_object_object_add(doc, "prefill_tok_per_s", wd_bstats_json(pf, reps));
        json_object_object_add(doc, "prefill_flop_per_s", wd_bstats_json(pflops, reps));
        json_object_object_add(doc, "peak_rss_bytes", json_object_new_double(rss));
        json_object_object_add(doc, "weights_bytes", json_object_new_double(wbytes));
        json_object_object_add(doc, "hugepages_copy_s", json_object_new_double(copy_s));
        if (scenario) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "policy", json_object_new_string(emu_policy));
            json_object_object_add(e, "decode_tok_per_s", wd_bstats_json(emu_tps, reps));
            json_object_object_add(e, "scheduler_share", wd_bstats_json(emu_share, reps));
            json_object_object_add(doc, "emulation", e);
        }
        rc = wd_bench_write_json(json_path, doc, "bench_decode");
    }
    free(pflops);
    free(pf);
    free(bw);
    free(logits);
    free(toks);
    wd_session_free(s);
    wd_pool_destroy(pool);
    wd_model_free(m);
    return rc;
fail:
    fprintf(stderr, "bench_decode: %s\n", err);
    return 1;
}
