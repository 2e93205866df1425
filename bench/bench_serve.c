/* bench_serve: the emulator's own speed with many users (docs/serving.md).
 *
 *   bench_serve --model PATH --scenario FILE [--users 1,8,32,128] [--max-new N]
 *               [--prompt N] [--micro-batches M] [--reps N] [--threads N] [--json FILE|-]
 *
 * For each user count, --reps runs of a cell where every user arrives at 0
 * (prompt of --prompt tokens, --max-new outputs, prefill chunk 256, the
 * scenario's policy): wall time per emulated step and per output token, and
 * the GFLOP/s of the batched expert calls (6 H F per token and expert over the
 * wall time of wd_moe_run_selection). In the same run, the reference rates of
 * the expert's matmul on this machine: the GEMM at 128 rows (the kernel's
 * throughput, as bench_kernels measures it: the best 3 ms window of 0.3 s per
 * round) and at 1 row (weights in cache), in the expert weights' dtype and
 * shape. The first user count's rate is the per-token path when it is 1 (one
 * token per expert call). Median and min-max
 * over reps. No figure is checked against a threshold. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "kernels/kernels.h"

typedef struct {
    double *step_s, *tok_s, *gflops, *batch;
} per_users;

static int run_once(const wd_model *m, wd_pool *pool, const wd_scenario *sc, int users,
                    int prompt, int max_new, int n_mb, double *step_s, double *tok_s,
                    double *gflops, double *batch, char *err, size_t errlen) {
    wd_scheduler *k = NULL;
    if (wd_scheduler_create(&k, m, sc, err, errlen)) return 1;
    int *ids = malloc((size_t)prompt * sizeof(int));
    wd_serve_request *rq = calloc((size_t)users, sizeof *rq);
    if (!ids || !rq) {
        free(ids), free(rq);
        wd_scheduler_free(k);
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    ids[0] = m->cfg.bos_id >= 0 ? m->cfg.bos_id : 1;
    for (int i = 1; i < prompt; i++) ids[i] = 3 + (i * 7) % (m->cfg.vocab - 3);
    for (int u = 0; u < users; u++) rq[u] = (wd_serve_request){0, max_new, prompt, ids};
    wd_serve_opts o = {256, 0, 0, 0.0f, 0.9f, 1, 0, n_mb};
    wd_serve_result r;
    int rc = wd_serve_run(m, pool, k, rq, users, &o, &r, err, errlen);
    if (!rc) {
        long out = 0;
        for (int u = 0; u < r.n_users; u++) out += r.users[u].n_out;
        double b = 0, span = 0;
        for (long s = 0; s < r.n_timeline; s++) {
            double dt = r.timeline[s].t_end - r.timeline[s].t_start;
            b += r.timeline[s].seqs * dt, span += dt;
        }
        *step_s = r.wall_s / (double)r.steps;
        *tok_s = r.wall_s / (double)out;
        *gflops = r.expert_wall_s > 0 ? r.expert_flops / r.expert_wall_s / 1e9 : 0;
        *batch = span > 0 ? b / span : 0;
        wd_serve_result_free(&r);
    }
    free(ids), free(rq);
    wd_scheduler_free(k);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_serve --model PATH --scenario FILE [--users 1,8,32,128] [--max-new N]\n"
               "                   [--prompt N] [--micro-batches M] [--reps N] [--threads N]\n"
               "                   [--json FILE|-]\n"
               "  --users LIST        user counts, all arriving at 0 (default 1,8,32,128)\n"
               "  --max-new N         output tokens per user (default 16)\n"
               "  --prompt N          prompt tokens per user (default 8)\n"
               "  --micro-batches M   pipelined micro-batches per step (default 1)\n"
               "  --reps N            runs per user count (default 3): median, min-max\n"
               "  --threads N         pool threads (default: online CPUs)\n"
               "  --json FILE         every figure with its samples as JSON (\"-\": stdout)\n"
               "Prints wall time per emulated step and per output token and the GFLOP/s of\n"
               "the batched expert calls, beside the expert matmul's GEMM (128 rows) and\n"
               "GEMV (1 row) rates measured in the same run.\n");
}

int main(int argc, char **argv) {
    const char *prog = "bench_serve", *model = NULL, *scen = NULL, *json_path = NULL;
    const char *users_s = "1,8,32,128";
    int reps = 3, threads = 0, max_new = 16, prompt = 8, n_mb = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: unknown argument or missing value '%s' (try --help)\n", prog, a);
            return 2;
        }
        const char *v = argv[++i];
        int *ip = !strcmp(a, "--reps") ? &reps : !strcmp(a, "--threads") ? &threads
                  : !strcmp(a, "--max-new") ? &max_new : !strcmp(a, "--prompt") ? &prompt
                  : !strcmp(a, "--micro-batches") ? &n_mb : NULL;
        if (ip) {
            if ((*ip = wd_bench_posint(prog, a, v)) < 0) return 2;
        } else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--scenario")) scen = v;
        else if (!strcmp(a, "--users")) users_s = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else {
            fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", prog, a);
            return 2;
        }
    }
    if (!model || !scen) {
        fprintf(stderr, "%s: --model and --scenario are required (try --help)\n", prog);
        return 2;
    }
    int users[32], nu = 0;
    for (const char *p = users_s; *p && nu < 32;) {
        char *end;
        long u = strtol(p, &end, 10);
        if (end == p || u < 1 || u > 100000 || (*end && *end != ',')) {
            fprintf(stderr, "%s: --users wants a comma list of counts >= 1, got '%s'\n", prog, users_s);
            return 2;
        }
        users[nu++] = (int)u;
        p = *end ? end + 1 : end;
    }
    char err[1024];
    wd_scenario sc;
    if (wd_scenario_load(&sc, scen, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 1;
    }
    wd_model *m = NULL;
    wd_pool *pool = NULL;
    double *v = NULL;
    float *x = NULL, *y = NULL;
    void *w = NULL;
    int rc = 1;
    if (wd_model_load(&m, model, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        goto done;
    }
    if (m->cfg.n_experts < 1 || !m->layers[0].w1 || !m->layers[0].w1[0]) {
        fprintf(stderr, "%s: %s: not a mixture-of-experts model\n", prog, model);
        goto done;
    }
    if (prompt + max_new > m->cfg.max_pos) {
        fprintf(stderr, "%s: --prompt + --max-new exceed the model's context (%d)\n", prog,
                m->cfg.max_pos);
        goto done;
    }
    if (!(pool = wd_pool_create(threads))) {
        fprintf(stderr, "%s: cannot create the thread pool\n", prog);
        goto done;
    }
    int nth = wd_pool_size(pool), H = m->cfg.hidden, F = m->cfg.ffn;
    wd_dtype dt = m->layers[0].w1[0]->dtype;
    /* reference rates of the expert's up projection (F x H) in its dtype */
    size_t wb = wd_dtype_bytes(dt, (int64_t)F * H);
    w = aligned_alloc(64, (wb + 63) / 64 * 64);
    x = malloc(sizeof(float) * 128 * (size_t)H), y = malloc(sizeof(float) * 128 * (size_t)F);
    v = calloc((size_t)reps * (2 + 4 * nu), sizeof(double));
    if (!w || !x || !y || !v) {
        fprintf(stderr, "%s: out of memory\n", prog);
        goto done;
    }
    memset(w, 0x3c, wb); /* finite in every dtype (bench_kernels) */
    for (int i = 0; i < 128 * H; i++) x[i] = 1.0f / (1 + i % 5);
    double *gemm = v, *gemv = v + reps;
    per_users pu[32];
    for (int j = 0; j < nu; j++) {
        double *b = v + (size_t)reps * (2 + 4 * j);
        pu[j] = (per_users){b, b + reps, b + 2 * reps, b + 3 * reps};
    }
    fprintf(stderr, "%s: %d thread%s, %s, %d reps\n", prog, nth, nth > 1 ? "s" : "", model, reps);
    for (int r = 0; r < reps; r++) { /* interleaved: each round samples every figure */
        gemm[r] = wd_bench_gemm_window(pool, dt, 128, F, H, w, x, y, 0.3);
        gemv[r] = wd_bench_gemm_window(pool, dt, 1, F, H, w, x, y, 0.3);
        for (int j = 0; j < nu; j++)
            if (run_once(m, pool, &sc, users[j], prompt, max_new, n_mb, &pu[j].step_s[r],
                         &pu[j].tok_s[r], &pu[j].gflops[r], &pu[j].batch[r], err, sizeof err)) {
                fprintf(stderr, "%s: %d users: %s\n", prog, users[j], err);
                goto done;
            }
    }
    wd_bstats g = wd_bstats_of(gemm, reps), g1 = wd_bstats_of(gemv, reps);
    double mhz = wd_bench_cpu_mhz(), peak = nth * 2.0 * 16 * 2 * mhz * 1e-3;
    FILE *o = json_path && !strcmp(json_path, "-") ? stderr : stdout;
    fprintf(o, "expert matmul %s %dx%d on %d thread%s, median [min-max] of %d rounds:\n",
            wd_dtype_name(dt), F, H, nth, nth > 1 ? "s" : "", reps);
    fprintf(o, "  GEMM, 128 rows (the kernel's throughput)   %7.1f GFLOP/s [%.1f-%.1f]\n", g.median,
            g.min, g.max);
    fprintf(o, "  GEMV, 1 row (weights in cache)              %7.1f GFLOP/s [%.1f-%.1f]\n", g1.median,
            g1.min, g1.max);
    if (peak > 0)
        fprintf(o, "  nominal peak (cores x 2 FMA x 16 lanes x 2 x %.0f MHz) %.1f GFLOP/s\n", mhz,
                peak);
    fprintf(o, "\n%6s %7s %22s %22s %26s %8s %9s\n", "users", "batch", "wall ms / step",
            "wall ms / out token", "expert calls GFLOP/s", "% GEMM", "x 1 user");
    double one = nu > 0 ? wd_bstats_of(pu[0].gflops, reps).median : 0;
    for (int j = 0; j < nu; j++) {
        wd_bstats a = wd_bstats_of(pu[j].step_s, reps), b = wd_bstats_of(pu[j].tok_s, reps),
                  c = wd_bstats_of(pu[j].gflops, reps), d = wd_bstats_of(pu[j].batch, reps);
        fprintf(o, "%6d %7.1f %8.3f [%5.2f-%5.2f] %8.3f [%5.2f-%5.2f] %10.1f [%5.1f-%5.1f] %7.1f%% %8.2fx\n",
                users[j], d.median, a.median * 1e3, a.min * 1e3, a.max * 1e3, b.median * 1e3,
                b.min * 1e3, b.max * 1e3, c.median, c.min, c.max,
                g.median > 0 ? 100 * c.median / g.median : 0.0, one > 0 ? c.median / one : 0.0);
    }
    rc = 0;
    if (json_path) {
        json_object *doc = wd_bench_doc_json("bench_serve"), *ja = json_object_new_array();
        json_object_object_add(doc, "model", json_object_new_string(model));
        json_object_object_add(doc, "scenario", json_object_new_string(scen));
        json_object_object_add(doc, "threads", json_object_new_int(nth));
        json_object_object_add(doc, "reps", json_object_new_int(reps));
        json_object_object_add(doc, "prompt_tokens", json_object_new_int(prompt));
        json_object_object_add(doc, "max_new_tokens", json_object_new_int(max_new));
        json_object_object_add(doc, "micro_batches", json_object_new_int(n_mb));
        json_object_object_add(doc, "expert_dtype", json_object_new_string(wd_dtype_name(dt)));
        json_object_object_add(doc, "expert_rows", json_object_new_int(F));
        json_object_object_add(doc, "expert_cols", json_object_new_int(H));
        json_object_object_add(doc, "nominal_peak_flop_per_s", json_object_new_double(peak * 1e9));
        double s[64];
        int nr = reps < 64 ? reps : 64;
        for (int r = 0; r < nr; r++) s[r] = gemm[r] * 1e9;
        json_object_object_add(doc, "gemm128_flop_per_s", wd_bstats_json(s, nr));
        for (int r = 0; r < nr; r++) s[r] = gemv[r] * 1e9;
        json_object_object_add(doc, "gemv_flop_per_s", wd_bstats_json(s, nr));
        for (int j = 0; j < nu; j++) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "users", json_object_new_int(users[j]));
            json_object_object_add(e, "mean_batch", wd_bstats_json(pu[j].batch, nr));
            json_object_object_add(e, "wall_s_per_step", wd_bstats_json(pu[j].step_s, nr));
            json_object_object_add(e, "wall_s_per_output_token", wd_bstats_json(pu[j].tok_s, nr));
            for (int r = 0; r < nr; r++) s[r] = pu[j].gflops[r] * 1e9;
            json_object_object_add(e, "expert_calls_flop_per_s", wd_bstats_json(s, nr));
            json_object_array_add(ja, e);
        }
        json_object_object_add(doc, "runs", ja);
        rc = wd_bench_write_json(json_path, doc, prog);
    }
done:
    free(v), free(x), free(y), free(w);
    wd_pool_destroy(pool);
    wd_model_free(m);
    wd_scenario_free(&sc);
    return rc;
}
