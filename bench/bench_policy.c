/* bench_policy: policy + latency decisions per second in a replay-like loop.
 *
 * One decision = one token through one layer: predict tau, run the policy,
 * step the emulator (transfer + compute times, wait, clock, statistics).
 * Mixtral-8x7B shape (H 4096, F 14336, 32 layers, 8 experts, top-2), 8
 * devices, random router probabilities (softmax of N(0, 1.5^2) logits).
 *
 * End to end: wd_probs_replay, what `wdmoe replay` runs for one scenario x
 * policy (every forward pass replayed, the summary; on a fresh emulator, whose
 * creation, reading trace files, is not timed), on the
 * same probabilities as one 512-token decode (or a recorded --probs file),
 * beside the goal of issue 14 (10 M decisions/s topk, 5 M wdmoe).
 *
 * usage: bench_policy [--scenario FILE ...] [--probs FILE.wdpr] [--seconds S] [--reps N]
 *                     [--evict MB] [--json FILE|-]
 * Without --scenario: the default 8-device cell (synthetic channel) and the
 * same cell on constant-rate links. Every figure is measured in --reps
 * interleaved rounds (default 3) and printed as median [min-max]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "emulation/emulation.h"

#define TOKENS 512
#define LAYERS 32
#define EXPERTS 8

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *make_probs(int n) { /* [n][E] */
    float *p = malloc((size_t)n * EXPERTS * sizeof(float));
    if (!p) return NULL;
    unsigned long long s = 42;
    for (int t = 0; t < n; t++) {
        float sum = 0;
        for (int e = 0; e < EXPERTS; e++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            double u2 = (s >> 11) / 9007199254740992.0;
            double g = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
            sum += p[t * EXPERTS + e] = (float)exp(1.5 * g);
        }
        for (int e = 0; e < EXPERTS; e++) p[t * EXPERTS + e] /= sum;
    }
    return p;
}

/* A fresh emulator of sc for shape sh running policy; exits with the message on failure. */
static wd_emu *emu_with(const wd_scenario *sc, const wd_emu_shape *sh, const char *policy) {
    char err[512];
    wd_emu *emu;
    if (wd_emu_create(&emu, sc, sh, err, sizeof err) ||
        wd_emu_set_policy(emu, policy, &sc->params, err, sizeof err)) {
        fprintf(stderr, "bench_policy: %s: %s\n", sc->name, err);
        exit(1);
    }
    return emu;
}

/* Decisions per second for one scenario x policy with batch tokens per step. */
static double bench(const wd_scenario *sc, const char *policy, int batch, const float *probs,
                    double seconds, double *lat_ms) {
    wd_emu_shape sh = {4096, 14336, LAYERS, EXPERTS, 2, 2.0, 32, 8, 128, 0, 0};
    char err[512];
    wd_emu *emu = emu_with(sc, &sh, policy);
    int *n = malloc(batch * sizeof(int)), *ex = malloc(batch * EXPERTS * sizeof(int));
    float *w = malloc(batch * EXPERTS * sizeof(float));
    long decisions = 0;
    double t0 = now(), t1 = t0;
    while (t1 - t0 < seconds) {
        for (int t = 0; t + batch <= TOKENS; t += batch)
            for (int l = 0; l < LAYERS; l++) {
                const float *p = probs + ((size_t)l * TOKENS + t) * EXPERTS;
                if (wd_emu_select(emu, batch, p, n, ex, w, err, sizeof err) ||
                    wd_emu_step(emu, l, batch, n, ex, NULL, err, sizeof err)) {
                    fprintf(stderr, "bench_policy: %s\n", err);
                    exit(1);
                }
                decisions += batch;
            }
        t1 = now();
    }
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    *lat_ms = (batch > 1 ? s.prefill.mean_s : s.decode.mean_s) * 1e3; /* per forward pass */
    wd_emu_free(emu);
    free(n), free(ex), free(w);
    return decisions / (t1 - t0);
}

/* End to end: whole replays of pr (wd_probs_replay, then the summary) on a
 * fresh emulator each, for about `seconds` of replaying; decisions = tokens x
 * layers per replay. Creating the emulator (it reads trace files) is not timed. */
static double cpu_now(void) { /* this thread's CPU time */
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ... and *per_cpu_s: decisions per CPU-second of the thread (without the
 * time slices other processes took). */
static double bench_replay(const wd_scenario *sc, const char *policy, const wd_probs *pr,
                           double seconds, double *per_cpu_s) {
    wd_emu_shape sh = wd_probs_shape(pr);
    char err[512];
    long decisions = 0;
    double busy = 0, cpu = 0;
    while (busy < seconds) {
        wd_emu *emu = emu_with(sc, &sh, policy);
        wd_emu_summary sum;
        double t0 = now(), c0 = cpu_now();
        if (wd_probs_replay(emu, pr, 0, NULL, NULL, err, sizeof err)) {
            fprintf(stderr, "bench_policy: replay: %s\n", err);
            exit(1);
        }
        wd_emu_summarize(emu, &sum);
        busy += now() - t0, cpu += cpu_now() - c0;
        wd_emu_free(emu);
        decisions += pr->n_tokens * pr->n_layers;
    }
    *per_cpu_s = cpu > 0 ? decisions / cpu : 0;
    return decisions / busy;
}

/* Nanoseconds per decision of the decode loop (select, step, per layer of each token of pr,
 * the LM head after the last; one emulator, its creation not timed) for about `seconds`,
 * with `evict` bytes of buf read between two layer steps (untimed: what a decode's forward
 * pass does to the core's caches between two calls of the BS scheduler; then one pass over
 * pr only, the reads take far longer than the decisions). */
static double bench_decode_loop(const wd_scenario *sc, const char *policy, const wd_probs *pr,
                                const double *buf, size_t evict, double seconds) {
    wd_emu_shape sh = wd_probs_shape(pr);
    char err[512];
    wd_emu *emu = emu_with(sc, &sh, policy);
    int E = pr->n_experts, L = pr->n_layers, n[1];
    int *ex = malloc(E * sizeof(int));
    float *w = malloc(E * sizeof(float));
    if (!ex || !w) {
        fprintf(stderr, "bench_policy: out of memory\n");
        exit(1);
    }
    long decisions = 0;
    double busy = 0, sink = 0;
    for (int pass = 0; pass == 0 || (!evict && busy < seconds); pass++) /* evicted: one pass */
        for (long t = 0; t < pr->n_tokens; t++)
            for (int l = 0; l < L; l++) {
                for (size_t i = 0; i < evict / sizeof(double); i += 8) sink += buf[i];
                double t0 = now();
                if (wd_emu_select(emu, 1, pr->probs + ((size_t)t * L + l) * E, n, ex, w, err,
                                  sizeof err) ||
                    wd_emu_step(emu, l, 1, n, ex, NULL, err, sizeof err)) {
                    fprintf(stderr, "bench_policy: %s\n", err);
                    exit(1);
                }
                if (l == L - 1) wd_emu_finish_forward(emu, 1e-3);
                busy += now() - t0;
                decisions++;
            }
    if (sink == 42) printf(" ");
    wd_emu_free(emu);
    free(ex), free(w);
    return busy / decisions * 1e9;
}

static double bench_policy_only(const char *policy, const float *probs, double seconds) {
    const wd_policy *pol = wd_policy_find(policy);
    wd_policy_params par;
    wd_policy_defaults(&par);
    double tau[EXPERTS] = {3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3, 9e-3, 10e-3}, scratch[64];
    unsigned char av[EXPERTS] = {1, 1, 1, 1, 1, 1, 1, 1};
    int n[1], ex[EXPERTS];
    float w[EXPERTS];
    long decisions = 0, sink = 0;
    double t0 = now(), t1 = t0;
    while (t1 - t0 < seconds) {
        for (int i = 0; i < TOKENS * LAYERS; i++) {
            wd_policy_io io = {1,  EXPERTS, 2,      probs + (size_t)i * EXPERTS, tau, av, n,
                               ex, w,       scratch, NULL, NULL};
            pol->select(&par, &io);
            sink += n[0];
        }
        decisions += TOKENS * LAYERS;
        t1 = now();
    }
    if (sink == 42) printf(" ");
    return decisions / (t1 - t0);
}

static void help(void) {
    printf("usage: bench_policy [--scenario FILE ...] [--probs FILE.wdpr] [--seconds S] [--reps N]\n"
           "                    [--evict MB] [--json FILE|-]\n\n"
           "Decisions per second of policy + latency model (one token through one layer:\n"
           "predict tau, select, step the emulator) on the Mixtral-8x7B shape (32 layers,\n"
           "8 experts, top-2), one core, batch 1 and 64, policies topk and wdmoe; then each\n"
           "policy function alone. Without --scenario: the default 8-device cell (synthetic\n"
           "channel) and the same cell on constant-rate links. Each figure runs --seconds\n"
           "(default 0.5) per round, in --reps interleaved rounds (default 3), and is printed\n"
           "as median [min-max]; --json writes every figure with its samples (\"-\": stdout).\n\n"
           "End to end: whole replays as `wdmoe replay` runs them (every forward pass and\n"
           "the summary, each on a fresh emulator whose creation, reading trace files, is\n"
           "not timed) per scenario, topk and wdmoe,\n"
           "beside the goal (10 M decisions/s topk, 5 M wdmoe), also per CPU-second of the\n"
           "thread (without the time slices other processes took). Probabilities: the same\n"
           "as above as one 512-token decode, or --probs FILE.wdpr (recorded by\n"
           "`wdmoe generate --record-probs`, read once before timing).\n\n"
           "--evict MB: also the decode loop (select and step per layer of those probabilities,\n"
           "the model's shape, one emulator) in ns per decision, without and with MB megabytes\n"
           "read between two layer steps (untimed), as a decode's forward pass streams the\n"
           "weights through the caches between two calls of the BS scheduler.\n");
}

int main(int argc, char **argv) {
    double seconds = 0.5;
    const char *files[16], *json_path = NULL, *probs_path = NULL;
    int nf = 0, reps = 3, evict_mb = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
            if (!(seconds > 0 && seconds <= 3600)) {
                fprintf(stderr, "bench_policy: --seconds wants a number in (0, 3600]\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if ((reps = wd_bench_posint("bench_policy", "--reps", argv[++i])) < 0) return 2;
        } else if (!strcmp(argv[i], "--evict") && i + 1 < argc) {
            if ((evict_mb = wd_bench_posint("bench_policy", "--evict", argv[++i])) < 0) return 2;
            if (evict_mb > 4096) {
                fprintf(stderr, "bench_policy: --evict wants at most 4096 (MB)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json_path = argv[++i];
        } else if (!strcmp(argv[i], "--probs") && i + 1 < argc) {
            probs_path = argv[++i];
        } else if (!strcmp(argv[i], "--scenario") && i + 1 < argc && nf < 16) {
            files[nf++] = argv[++i];
        } else {
            fprintf(stderr, "bench_policy: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    float *probs = make_probs(TOKENS * LAYERS); /* [layer][token][E] */
    char err[512];
    /* end to end: a recorded file, or the same probabilities as a 512-token decode */
    wd_probs pr = {LAYERS, EXPERTS, 2, 4096, 14336, 32, 8, 128, 16, TOKENS, NULL, NULL};
    if (probs_path) {
        if (wd_probs_read(&pr, probs_path, err, sizeof err)) {
            fprintf(stderr, "bench_policy: %s\n", err);
            free(probs);
            return 1;
        }
    } else if (probs && (pr.probs = malloc((size_t)TOKENS * LAYERS * EXPERTS * sizeof(float)))) {
        for (int t = 0; t < TOKENS; t++) /* [token][layer][E] */
            for (int l = 0; l < LAYERS; l++)
                memcpy(pr.probs + ((size_t)t * LAYERS + l) * EXPERTS,
                       probs + ((size_t)l * TOKENS + t) * EXPERTS, EXPERTS * sizeof(float));
    }
    int ns = nf ? nf : 2;
    wd_scenario *sc = calloc(ns, sizeof *sc);
    for (int i = 0; sc && i < ns; i++) {
        int rc = nf ? wd_scenario_load(&sc[i], files[i], err, sizeof err)
                    : wd_scenario_default(&sc[i], 8, err, sizeof err);
        if (rc) {
            fprintf(stderr, "bench_policy: %s\n", err);
            for (int j = 0; j < i; j++) wd_scenario_free(&sc[j]);
            free(sc), free(probs);
            if (probs_path)
                wd_probs_free(&pr);
            else
                free(pr.probs);
            return 1;
        }
        if (!nf && i == 1) {
            snprintf(sc[i].name, sizeof sc[i].name, "default-8-constant");
            for (int d = 0; d < 8; d++)
                for (int k = 0; k < 2; k++) {
                    sc[i].dev[d].link[k].model = WD_LINK_CONSTANT;
                    sc[i].dev[d].link[k].rate_bps = (k ? 50e6 : 200e6) * (1 + d % 3);
                }
        }
    }
    const char *pols[2] = {"topk", "wdmoe"};
    const int batches[2] = {1, 64};
    const int np = wd_policy_count();
    /* samples: [scenario][batch][policy][rep], then [policy][rep] for the policies alone */
    double *r = calloc((size_t)ns * 4 * reps, sizeof(double)), *lat = calloc((size_t)ns * 4, sizeof(double));
    double *alone = calloc((size_t)np * reps, sizeof(double));
    double *e2e = calloc((size_t)ns * 2 * reps, sizeof(double)); /* [scenario][policy][rep] */
    double *e2c = calloc((size_t)ns * 2 * reps, sizeof(double)); /* the same per CPU-second */
    /* decode loop: [scenario][policy][without, with eviction][rep] (--evict) */
    double *dl = calloc((size_t)ns * 4 * reps, sizeof(double));
    size_t evict = (size_t)evict_mb << 20;
    double *ebuf = evict ? malloc(evict) : NULL;
    for (size_t i = 0; ebuf && i < evict / sizeof(double); i++) ebuf[i] = 1; /* real pages */
    if (!probs || !sc || !r || !lat || !alone || !e2e || !e2c || !pr.probs || !dl ||
        (evict && !ebuf)) {
        fprintf(stderr, "bench_policy: out of memory\n");
        return 1;
    }
    for (int rep = 0; rep < reps; rep++) {
        for (int i = 0; i < ns; i++)
            for (int b = 0; b < 2; b++)
                for (int p = 0; p < 2; p++) {
                    size_t k = ((size_t)i * 4 + b * 2 + p);
                    r[k * reps + rep] = bench(&sc[i], pols[p], batches[b], probs, seconds, &lat[k]);
                }
        for (int p = 0; p < np; p++)
            alone[(size_t)p * reps + rep] = bench_policy_only(wd_policy_at(p)->name, probs, seconds);
        for (int i = 0; i < ns; i++)
            for (int p = 0; p < 2; p++)
                e2e[((size_t)i * 2 + p) * reps + rep] = bench_replay(
                    &sc[i], pols[p], &pr, seconds, &e2c[((size_t)i * 2 + p) * reps + rep]);
        for (int i = 0; evict && i < ns; i++)
            for (int p = 0; p < 2; p++)
                for (int v = 0; v < 2; v++)
                    dl[(((size_t)i * 2 + p) * 2 + v) * reps + rep] =
                        bench_decode_loop(&sc[i], pols[p], &pr, ebuf, v ? evict : 0, seconds);
    }
    FILE *out = json_path && !strcmp(json_path, "-") ? stderr : stdout;
    fprintf(out, "bench_policy: Mixtral-8x7B shape, %d layers, %d experts, top-2, one core, %d rounds\n\n",
            LAYERS, EXPERTS, reps);
    fprintf(out, "%-22s %-9s %6s %14s %27s %12s\n", "scenario", "policy", "batch", "decisions/s",
            "[min-max]", "latency ms");
    json_object *doc = wd_bench_doc_json("bench_policy"), *jr = json_object_new_array(),
                *ja = json_object_new_array();
    for (int i = 0; i < ns; i++)
        for (int b = 0; b < 2; b++)
            for (int p = 0; p < 2; p++) {
                size_t k = ((size_t)i * 4 + b * 2 + p);
                wd_bstats st = wd_bstats_of(r + k * reps, reps);
                fprintf(out, "%-22.22s %-9s %6d %14.0f  [%11.0f-%11.0f] %12.3f\n", sc[i].name, pols[p],
                        batches[b], st.median, st.min, st.max, lat[k]);
                json_object *o = json_object_new_object();
                json_object_object_add(o, "scenario", json_object_new_string(sc[i].name));
                json_object_object_add(o, "policy", json_object_new_string(pols[p]));
                json_object_object_add(o, "batch", json_object_new_int(batches[b]));
                json_object_object_add(o, "decisions_per_s", wd_bstats_json(r + k * reps, reps));
                json_object_object_add(o, "latency_mean_s", json_object_new_double(lat[k] * 1e-3));
                json_object_array_add(jr, o);
            }
    fprintf(out, "\npolicy function alone (no latency model):\n");
    for (int p = 0; p < np; p++) {
        wd_bstats st = wd_bstats_of(alone + (size_t)p * reps, reps);
        fprintf(out, "  %-10s %16.0f decisions/s  [%.0f-%.0f]\n", wd_policy_at(p)->name, st.median,
                st.min, st.max);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "policy", json_object_new_string(wd_policy_at(p)->name));
        json_object_object_add(o, "decisions_per_s", wd_bstats_json(alone + (size_t)p * reps, reps));
        json_object_array_add(ja, o);
    }
    static const double goal[2] = {10e6, 5e6}; /* issue 14: topk, wdmoe */
    json_object *je = json_object_new_array();
    fprintf(out,
            "\nend to end, whole replays as `wdmoe replay` runs them (%ld tokens x %d layers, %s;\n"
            "a fresh emulator each, its creation not timed):\n",
            pr.n_tokens, pr.n_layers, probs_path ? probs_path : "the probabilities above as a decode");
    fprintf(out, "%-22s %-9s %14s %27s %7s %14s %12s %8s\n", "scenario", "policy", "decisions/s",
            "[min-max]", "spread", "per CPU-s", "goal", "of goal");
    for (int i = 0; i < ns; i++)
        for (int p = 0; p < 2; p++) {
            const double *v = e2e + ((size_t)i * 2 + p) * reps, *vc = e2c + ((size_t)i * 2 + p) * reps;
            wd_bstats st = wd_bstats_of(v, reps), sc2 = wd_bstats_of(vc, reps);
            fprintf(out, "%-22.22s %-9s %14.0f  [%11.0f-%11.0f] %6.1f%% %14.0f %12.0f %7.1f%%\n",
                    sc[i].name, pols[p], st.median, st.min, st.max, 100 * st.spread, sc2.median,
                    goal[p], 100 * st.median / goal[p]);
            json_object *o = json_object_new_object();
            json_object_object_add(o, "scenario", json_object_new_string(sc[i].name));
            json_object_object_add(o, "policy", json_object_new_string(pols[p]));
            json_object_object_add(o, "tokens", json_object_new_int64(pr.n_tokens));
            json_object_object_add(o, "layers", json_object_new_int(pr.n_layers));
            json_object_object_add(o, "decisions_per_s", wd_bstats_json(v, reps));
            json_object_object_add(o, "decisions_per_cpu_s", wd_bstats_json(vc, reps));
            json_object_object_add(o, "goal_decisions_per_s", json_object_new_double(goal[p]));
            json_object_array_add(je, o);
        }
    if (evict) {
        json_object *jd = json_object_new_array();
        fprintf(out,
                "\ndecode loop (select and step per layer, one emulator), ns per decision, without\n"
                "and with %d MB read between two layer steps (as a decode's forward pass evicts\n"
                "the caches):\n",
                evict_mb);
        fprintf(out, "%-22s %-9s %22s %26s\n", "scenario", "policy", "ns, median [min-max]",
                "evicted, median [min-max]");
        for (int i = 0; i < ns; i++)
            for (int p = 0; p < 2; p++) {
                const double *v0 = dl + (((size_t)i * 2 + p) * 2) * reps, *v1 = v0 + reps;
                wd_bstats a = wd_bstats_of(v0, reps), b = wd_bstats_of(v1, reps);
                fprintf(out, "%-22.22s %-9s %8.0f [%5.0f-%5.0f] %12.0f [%5.0f-%5.0f]\n",
                        sc[i].name, pols[p], a.median, a.min, a.max, b.median, b.min, b.max);
                json_object *o = json_object_new_object();
                json_object_object_add(o, "scenario", json_object_new_string(sc[i].name));
                json_object_object_add(o, "policy", json_object_new_string(pols[p]));
                json_object_object_add(o, "evict_mb", json_object_new_int(evict_mb));
                json_object_object_add(o, "ns_per_decision", wd_bstats_json(v0, reps));
                json_object_object_add(o, "ns_per_decision_evicted", wd_bstats_json(v1, reps));
                json_object_array_add(jd, o);
            }
        json_object_object_add(doc, "decode_loop", jd);
    }
    int rc = 0;
    json_object_object_add(doc, "replay_end_to_end", je);
    json_object_object_add(doc, "probs_file",
                           probs_path ? json_object_new_string(probs_path) : NULL);
    json_object_object_add(doc, "with_latency_model", jr);
    json_object_object_add(doc, "policy_alone", ja);
    if (json_path) {
        json_object_object_add(doc, "seconds_per_round", json_object_new_double(seconds));
        json_object_object_add(doc, "reps", json_object_new_int(reps));
        rc = wd_bench_write_json(json_path, doc, "bench_policy");
    } else {
        json_object_put(doc);
    }
    for (int i = 0; i < ns; i++) wd_scenario_free(&sc[i]);
    free(sc);
    free(probs);
    free(r), free(lat), free(alone), free(e2e), free(e2c), free(dl), free(ebuf);
    if (probs_path)
        wd_probs_free(&pr);
    else
        free(pr.probs);
    return rc;
}
