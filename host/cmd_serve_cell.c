/* wdmoe serve-cell: a cell with many users. Requests arrive at the BS
 * (Poisson or a trace), are batched continuously (host/serve.c) and their
 * experts run on the scenario's emulated devices; the run reports per-user
 * TTFT and TPOT percentiles, goodput under a TPOT SLO, Jain's fairness,
 * device utilisation and queues, energy per token and quality vs top-k. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cli.h"
#include "host/host.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: wdmoe serve-cell --model PATH --scenario FILE [options]\n\n"
            "Serve many users' requests through one base station with continuous batching:\n"
            "each step is one batched forward pass (decode tokens of the running users plus\n"
            "prompt chunks of the new ones), every device runs the tokens routed to it as one\n"
            "batched expert call, the links are shared by all transfers of the step. Options\n"
            "override the scenario's \"workload\" block.\n\n"
            "options:\n"
            "  --model PATH          model folder or .gguf\n"
            "  --scenario FILE       scenario JSON (devices, radio, policy, workload)\n"
            "  --policy P            override the scenario's policy\n"
            "  --users N             Poisson workload: N requests (default 8)\n"
            "  --rate R              Poisson arrival rate, requests per virtual second (default 10)\n"
            "  --trace FILE          request trace CSV: header arrival_s,max_new_tokens,prompt\n"
            "  --prompts FILE        prompts, one per line, cycled over the users (default: BOS only)\n"
            "  --max-new N           tokens per request (default 32; a trace gives its own)\n"
            "  --chunk N             prefill tokens per step over all users (default 64)\n"
            "  --kv-budget-mb M      BS KV-cache memory for all users (default: unlimited)\n"
            "  --max-batch N         running users at most (default: unlimited)\n"
            "  --micro-batches M     pipeline each step as M micro-batches through the layers\n"
            "                        (the BS runs one while another waits for its experts;\n"
            "                        devices queue jobs; default 1: the synchronous step)\n"
            "  --tpot-slo-ms X       goodput counts requests with TPOT <= X (default 50)\n"
            "  --ttft-slo-ms X       ... and TTFT <= X (default: not checked)\n"
            "  --seed S              seed of the channel, arrivals and sampling (default: the scenario's)\n"
            "  --temperature T       sampling temperature, 0 = greedy (default 0)\n"
            "  --top-p P             nucleus mass (default 0.9)\n"
            "  --threads N           CPU threads (default: all cores)\n"
            "  --no-compare          skip the quality comparison against top-k\n"
            "  --no-hugepages        read the weights from the file mapping (4 KB pages); by\n"
            "                        default they are copied into huge pages when the copy takes\n"
            "                        at most half of MemAvailable\n"
            "  --json FILE           result JSON (per user, per device, timeline), atomically\n"
            "  --users-table         print the per-user table too\n"
            "  -h, --help            this help\n");
}

/* ---- workload ------------------------------------------------------------ */
typedef struct {
    wd_serve_request *req;
    int n;
    int **owned; /* prompt arrays to free */
} workload;

static void workload_free(workload *w) {
    for (int i = 0; i < w->n; i++) free(w->owned[i]);
    free(w->owned);
    free(w->req);
}

static char *read_file(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return snprintf(err, errlen, "%.900s: cannot open", path), NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (n + 1 < cap) break;
        char *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b) return snprintf(err, errlen, "%.900s: out of memory", path), NULL;
    if (bad) return free(b), snprintf(err, errlen, "%.900s: read error", path), NULL;
    b[n] = 0;
    if (strlen(b) != n) return free(b), snprintf(err, errlen, "%.900s: contains a NUL byte", path), NULL;
    return b;
}

static int add_request(workload *w, const wd_tokenizer *tok, double arrival, int max_new,
                       const char *text, char *err, size_t errlen) {
    int *ids = NULL, n = 0;
    if (wd_tokenizer_encode(tok, text, 1, &ids, &n) || n < 1)
        return free(ids), snprintf(err, errlen, "cannot encode the prompt of request %d", w->n), 1;
    w->owned[w->n] = ids;
    w->req[w->n++] = (wd_serve_request){arrival, max_new, n, ids};
    return 0;
}

/* Lines of a text (CR LF accepted); modifies text. */
static int split_lines(char *text, char ***out) {
    int n = 0, cap = 16;
    char **v = malloc(cap * sizeof *v);
    for (char *p = text; v && *p;) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        size_t L = strlen(p);
        if (L && p[L - 1] == '\r') p[L - 1] = 0;
        if (n == cap) {
            char **nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) free(v);
            v = nv;
            if (!v) break;
        }
        v[n++] = p;
        if (!e) break;
        p = e + 1;
    }
    *out = v;
    return v ? n : -1;
}

static int load_trace(workload *w, const wd_tokenizer *tok, const char *path, char *err,
                      size_t errlen) {
    char *text = read_file(path, err, errlen), **lines = NULL;
    if (!text) return 1;
    int n = split_lines(text, &lines), rc = 1, rows = 0;
    if (n < 0) {
        snprintf(err, errlen, "%.900s: out of memory", path);
        goto out;
    }
    if (n < 1 || strcmp(lines[0], "arrival_s,max_new_tokens,prompt")) {
        snprintf(err, errlen, "%.900s: line 1: expected the header arrival_s,max_new_tokens,prompt",
                 path);
        goto out;
    }
    w->req = calloc((size_t)n, sizeof *w->req);
    w->owned = calloc((size_t)n, sizeof *w->owned);
    if (!w->req || !w->owned) {
        snprintf(err, errlen, "%.900s: out of memory", path);
        goto out;
    }
    double last = 0;
    for (int i = 1; i < n; i++) {
        char *l = lines[i], *end;
        if (!*l) continue;
        double t = strtod(l, &end);
        if (end == l || *end != ',' || !isfinite(t) || t < 0) {
            snprintf(err, errlen, "%.900s: line %d: arrival_s is not a number >= 0", path, i + 1);
            goto out;
        }
        if (t < last) {
            snprintf(err, errlen, "%.900s: line %d: arrival times must not decrease", path, i + 1);
            goto out;
        }
        last = t;
        char *m = end + 1;
        long mx = strtol(m, &end, 10);
        if (end == m || *end != ',' || mx < 1 || mx > (1 << 24)) {
            snprintf(err, errlen, "%.900s: line %d: max_new_tokens is not an integer >= 1", path, i + 1);
            goto out;
        }
        if (add_request(w, tok, t, (int)mx, end + 1, err, errlen)) goto out;
        rows++;
    }
    if (!rows) {
        snprintf(err, errlen, "%.900s: no requests", path);
        goto out;
    }
    rc = 0;
out:
    free(lines);
    free(text);
    return rc;
}

static int load_poisson(workload *w, const wd_tokenizer *tok, int users, double rate, int max_new,
                        const char *prompts_path, uint64_t seed, char *err, size_t errlen) {
    char *text = NULL, **lines = NULL;
    int n_lines = 0, rc = 1;
    if (prompts_path) {
        if (!(text = read_file(prompts_path, err, errlen))) return 1;
        n_lines = split_lines(text, &lines);
        int k = 0; /* non-empty lines only */
        for (int i = 0; i < n_lines; i++)
            if (lines[i][0]) lines[k++] = lines[i];
        n_lines = k;
        if (n_lines < 1) {
            snprintf(err, errlen, "%.900s: no prompts (one per line)", prompts_path);
            goto out;
        }
    }
    w->req = calloc((size_t)users, sizeof *w->req);
    w->owned = calloc((size_t)users, sizeof *w->owned);
    if (!w->req || !w->owned) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    wd_rng rng;
    wd_rng_seed(&rng, seed ^ 0x5eed5eedULL);
    double t = 0;
    for (int i = 0; i < users; i++) {
        if (i) t += -log(1.0 - wd_rng_uniform(&rng)) / rate; /* exponential gaps */
        if (add_request(w, tok, t, max_new, n_lines ? lines[i % n_lines] : "", err, errlen))
            goto out;
    }
    rc = 0;
out:
    free(lines);
    free(text);
    return rc;
}

/* ---- statistics ------------------------------------------------------------ */
static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int n;
    double mean, p50, p95, p99, max;
} dist;

static dist distribution(double *v, int n) { /* sorts v; linear quantiles as numpy */
    dist d = {n, 0, 0, 0, 0, 0};
    if (n < 1) return d;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    d.mean = s / n, d.max = v[n - 1];
    double q[3] = {0.5, 0.95, 0.99}, *o[3] = {&d.p50, &d.p95, &d.p99};
    for (int k = 0; k < 3; k++) {
        double pos = q[k] * (n - 1);
        int i = (int)pos;
        *o[k] = i + 1 >= n ? v[n - 1] : v[i] + (pos - i) * (v[i + 1] - v[i]);
    }
    return d;
}

static json_object *dist_json(dist d) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "n", json_object_new_int(d.n));
    json_object_object_add(o, "mean_s", json_object_new_double(d.mean));
    json_object_object_add(o, "p50_s", json_object_new_double(d.p50));
    json_object_object_add(o, "p95_s", json_object_new_double(d.p95));
    json_object_object_add(o, "p99_s", json_object_new_double(d.p99));
    json_object_object_add(o, "max_s", json_object_new_double(d.max));
    return o;
}

int wd_cmd_serve_cell(int argc, char **argv) {
    const char *cmd = "serve-cell", *model_path = NULL, *scenario_path = NULL, *policy = NULL;
    const char *trace = NULL, *prompts = NULL, *json_path = NULL;
    int users = -1, max_new = -1, chunk = -1, max_batch = -1, threads = 0, compare = 1, n_mb = -1,
        users_table = 0, seed = -1, hugepages = 1;
    double rate = -1, kv_mb = -1, tpot_slo_ms = -1, ttft_slo_ms = -1, temperature = 0, top_p = 0.9;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        }
#define VAL() if (!(v = wd_cli_value(cmd, argc, argv, &i))) return 2
        if (!strcmp(a, "--model")) { VAL(); model_path = v; }
        else if (!strcmp(a, "--scenario")) { VAL(); scenario_path = v; }
        else if (!strcmp(a, "--policy")) { VAL(); policy = v; }
        else if (!strcmp(a, "--trace")) { VAL(); trace = v; }
        else if (!strcmp(a, "--prompts")) { VAL(); prompts = v; }
        else if (!strcmp(a, "--json")) { VAL(); json_path = v; }
        else if (!strcmp(a, "--users")) { VAL(); if (wd_cli_int(cmd, a, v, 1, 1000000, &users)) return 2; }
        else if (!strcmp(a, "--max-new")) { VAL(); if (wd_cli_int(cmd, a, v, 1, 1 << 24, &max_new)) return 2; }
        else if (!strcmp(a, "--chunk")) { VAL(); if (wd_cli_int(cmd, a, v, 1, 1 << 24, &chunk)) return 2; }
        else if (!strcmp(a, "--max-batch")) { VAL(); if (wd_cli_int(cmd, a, v, 0, 1 << 24, &max_batch)) return 2; }
        else if (!strcmp(a, "--micro-batches")) { VAL(); if (wd_cli_int(cmd, a, v, 1, 4096, &n_mb)) return 2; }
        else if (!strcmp(a, "--threads")) { VAL(); if (wd_cli_int(cmd, a, v, 0, 1024, &threads)) return 2; }
        else if (!strcmp(a, "--seed")) { VAL(); if (wd_cli_int(cmd, a, v, 0, 2147483647, &seed)) return 2; }
        else if (!strcmp(a, "--rate")) { VAL(); if (wd_cli_double(cmd, a, v, 1e-9, 1e9, &rate)) return 2; }
        else if (!strcmp(a, "--kv-budget-mb")) { VAL(); if (wd_cli_double(cmd, a, v, 0, 1e9, &kv_mb)) return 2; }
        else if (!strcmp(a, "--tpot-slo-ms")) { VAL(); if (wd_cli_double(cmd, a, v, 0, 1e9, &tpot_slo_ms)) return 2; }
        else if (!strcmp(a, "--ttft-slo-ms")) { VAL(); if (wd_cli_double(cmd, a, v, 0, 1e9, &ttft_slo_ms)) return 2; }
        else if (!strcmp(a, "--temperature")) { VAL(); if (wd_cli_double(cmd, a, v, 0, 100, &temperature)) return 2; }
        else if (!strcmp(a, "--top-p")) { VAL(); if (wd_cli_double(cmd, a, v, 1e-6, 1, &top_p)) return 2; }
        else if (!strcmp(a, "--no-compare")) compare = 0;
        else if (!strcmp(a, "--no-hugepages")) hugepages = 0;
        else if (!strcmp(a, "--users-table")) users_table = 1;
        else {
            fprintf(stderr, "wdmoe serve-cell: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef VAL
    }
    if (!model_path || !scenario_path) {
        fprintf(stderr, "wdmoe serve-cell: --model and --scenario are required (see --help)\n");
        return 2;
    }
    int json_stdout = json_path && !strcmp(json_path, "-"); /* never a file named "-" */
    wd_cli_io io; /* nothing read may be written over; the output can be written */
    wd_cli_io_init(&io, cmd);
    wd_cli_io_model(&io, model_path);
    wd_cli_io_scenario(&io, scenario_path);
    wd_cli_io_input(&io, trace, "the request trace");
    wd_cli_io_input(&io, prompts, "the prompts");
    wd_cli_io_output(&io, "--json", json_stdout ? NULL : json_path);
    int io_rc = wd_cli_io_check(&io);
    wd_cli_io_free(&io);
    if (io_rc) return io_rc;
    char err[1024];
    int rc = 1;
    wd_scenario sc;
    wd_model *m = NULL;
    wd_pool *pool = NULL;
    wd_scheduler *k = NULL;
    workload w = {0};
    wd_serve_result res = {0};
    json_object *root = NULL;
    double *buf = NULL;
    if (wd_scenario_load(&sc, scenario_path, err, sizeof err)) {
        fprintf(stderr, "wdmoe serve-cell: %s\n", err);
        return 1;
    }
    const wd_workload *wl = &sc.workload;
    if (users < 0) users = wl->users > 0 ? wl->users : 8;
    if (rate < 0) rate = wl->rate_per_s > 0 ? wl->rate_per_s : 10;
    if (max_new < 0) max_new = wl->max_new_tokens > 0 ? wl->max_new_tokens : 32;
    if (chunk < 0) chunk = wl->prefill_chunk > 0 ? wl->prefill_chunk : 64;
    if (max_batch < 0) max_batch = wl->max_batch;
    if (n_mb < 0) n_mb = wl->micro_batches > 0 ? wl->micro_batches : 1;
    double kv_budget = kv_mb >= 0 ? kv_mb * 1e6 : wl->kv_budget_bytes;
    double tpot_slo = tpot_slo_ms >= 0 ? tpot_slo_ms * 1e-3 : wl->tpot_slo_s > 0 ? wl->tpot_slo_s : 0.05;
    double ttft_slo = ttft_slo_ms >= 0 ? ttft_slo_ms * 1e-3 : wl->ttft_slo_s;
    if (!trace && wl->trace[0]) trace = wl->trace;
    if (!prompts && wl->prompts[0]) prompts = wl->prompts;
    uint64_t run_seed = seed >= 0 ? (uint64_t)seed : sc.seed;
    sc.seed = run_seed;
    char note[512];
    if (wd_model_load(&m, model_path, err, sizeof err)) {
        fprintf(stderr, "wdmoe serve-cell: %s\n", err);
        goto done;
    }
    if (hugepages && !wd_model_hugepages(m, note, sizeof note) && note[0])
        fprintf(stderr, "wdmoe serve-cell: %s: %s\n", model_path, note);
    if (!m->tok) {
        fprintf(stderr, "wdmoe serve-cell: %s: no tokenizer.json\n", model_path);
        goto done;
    }
    if (trace ? load_trace(&w, m->tok, trace, err, sizeof err)
              : load_poisson(&w, m->tok, users, rate, max_new, prompts, run_seed, err, sizeof err)) {
        fprintf(stderr, "wdmoe serve-cell: %s\n", err);
        goto done;
    }
    if (!(pool = wd_pool_create(threads))) {
        fprintf(stderr, "wdmoe serve-cell: cannot create the thread pool\n");
        goto done;
    }
    if (wd_scheduler_create(&k, m, &sc, err, sizeof err) ||
        (policy && wd_emu_set_policy(wd_scheduler_emu(k), policy, &sc.params, err, sizeof err))) {
        fprintf(stderr, "wdmoe serve-cell: %s\n", err);
        goto done;
    }
    wd_serve_opts o = {chunk, kv_budget, max_batch, (float)temperature, (float)top_p, run_seed,
                       compare, n_mb};
    if (wd_serve_run(m, pool, k, w.req, w.n, &o, &res, err, sizeof err)) {
        fprintf(stderr, "wdmoe serve-cell: %s\n", err);
        goto done;
    }
    /* statistics */
    wd_emu *emu = wd_scheduler_emu(k);
    wd_emu_summary sum;
    wd_emu_summarize(emu, &sum);
    int n = res.n_users, n_tp = 0, n_good = 0, n_cmp = 0;
    long outputs = 0, good_tokens = 0;
    double jsum = 0, jsq = 0, agree = 0, kl = 0;
    if (!(buf = malloc(4 * (size_t)n * sizeof(double)))) goto oom;
    double *ttft = buf, *tpot = buf + n, *queue = buf + 2 * n, *ept = buf + 3 * n;
    for (int i = 0; i < n; i++) {
        const wd_serve_user *u = &res.users[i];
        ttft[i] = u->ttft_s, queue[i] = u->admit_s - u->arrival_s;
        ept[i] = u->n_out ? u->energy_j / u->n_out : 0;
        outputs += u->n_out;
        if (u->n_out > 1) {
            tpot[n_tp++] = u->tpot_s;
            jsum += 1.0 / u->tpot_s, jsq += 1.0 / (u->tpot_s * u->tpot_s);
        }
        if ((u->n_out < 2 || u->tpot_s <= tpot_slo) && (ttft_slo <= 0 || u->ttft_s <= ttft_slo))
            n_good++, good_tokens += u->n_out;
        if (!isnan(u->agreement)) n_cmp++, agree += u->agreement, kl += u->mean_kl;
    }
    double jain = n_tp && jsq > 0 ? jsum * jsum / (n_tp * jsq) : 1.0;
    double span = res.makespan_s > 0 ? res.makespan_s : 1e-300;
    double goodput = good_tokens / span, thr = outputs / span;
    double e_out = outputs ? sum.energy_total_j / outputs : 0;
    dist d_ttft = distribution(ttft, n), d_tpot = distribution(tpot, n_tp),
         d_queue = distribution(queue, n), d_ept = distribution(ept, n);
    double mean_batch = 0, mean_wait = 0;
    for (long s = 0; s < res.n_timeline; s++) {
        double dt = res.timeline[s].t_end - res.timeline[s].t_start;
        mean_batch += res.timeline[s].seqs * dt, mean_wait += res.timeline[s].waiting * dt;
    }
    mean_batch /= span, mean_wait /= span;
    /* tables */
    printf("%s, policy %s, %d devices: %d requests, %ld steps, %.4f s virtual", sc.name,
           wd_emu_policy_name(emu), sc.n_devices, n, res.steps, res.makespan_s);
    printf(n_mb > 1 ? ", %d pipelined micro-batches per step\n" : "\n", n_mb);
    printf("  %-36s %10s %10s %10s %10s\n", "", "mean", "p50", "p95", "p99");
    const struct {
        const char *name;
        dist d;
        double scale;
    } rows[] = {{"TTFT (ms)", d_ttft, 1e3},
                {"TPOT per user (ms)", d_tpot, 1e3},
                {"queue wait before admission (ms)", d_queue, 1e3},
                {"active energy per output token (mJ)", d_ept, 1e3}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        printf("  %-36s %10.3f %10.3f %10.3f %10.3f\n", rows[i].name, rows[i].d.mean * rows[i].scale,
               rows[i].d.p50 * rows[i].scale, rows[i].d.p95 * rows[i].scale,
               rows[i].d.p99 * rows[i].scale);
    printf("  %-36s %10.2f tok/s\n", "throughput", thr);
    printf("  %-36s %10.2f tok/s (%d of %d requests meet TPOT <= %g ms%s)\n", "goodput", goodput,
           n_good, n, tpot_slo * 1e3, ttft_slo > 0 ? " and the TTFT SLO" : "");
    printf("  %-36s %10.4f\n", "Jain fairness (1/TPOT)", jain);
    printf("  %-36s %10.2f users, %.2f waiting\n", "mean batch", mean_batch, mean_wait);
    printf("  %-36s %10.4g J (%.4g active, %.4g idle); %.4g mJ per output token\n",
           "energy of the cell", sum.energy_total_j, sum.energy_active_j, sum.energy_idle_j,
           e_out * 1e3);
    if (n_cmp)
        printf("  %-36s %10.2f %% agreement, mean KL %.4g nats\n", "quality vs top-k",
               100 * agree / n_cmp, kl / n_cmp);
    printf("\n");
    fflush(stdout);
    wd_emu_devices_print(stdout, emu);
    if (users_table) {
        printf("\n  %5s %10s %10s %10s %10s %6s %10s\n", "user", "arrive ms", "queue ms",
               "TTFT ms", "TPOT ms", "out", "mJ/token");
        for (int i = 0; i < n; i++) {
            const wd_serve_user *u = &res.users[i];
            printf("  %5d %10.3f %10.3f %10.3f %10.3f %6d %10.4f\n", i, u->arrival_s * 1e3,
                   (u->admit_s - u->arrival_s) * 1e3, u->ttft_s * 1e3, u->tpot_s * 1e3, u->n_out,
                   u->n_out ? u->energy_j / u->n_out * 1e3 : 0);
        }
    }
    fprintf(stderr,
            "emulator speed: %.3f s wall, %.3f ms per step, %.3f ms per output token; batched "
            "expert calls %.2f GFLOP/s\n",
            res.wall_s, res.steps ? res.wall_s / res.steps * 1e3 : 0,
            outputs ? res.wall_s / outputs * 1e3 : 0,
            res.expert_wall_s > 0 ? res.expert_flops / res.expert_wall_s * 1e-9 : 0);
    if (json_path) {
        root = json_object_new_object();
        json_object *cfg = json_object_new_object(), *ju = json_object_new_array(),
                    *jt = json_object_new_object();
        json_object_object_add(root, "command", json_object_new_string("serve-cell"));
        static const char *const seed_names[] = {"run"};
        long long seeds[] = {(long long)run_seed};
        wd_cli_provenance(root, "serve-cell", argc, argv, seed_names, seeds, 1);
        json_object *jm = json_object_new_object(); /* the same shape as generate's */
        json_object_object_add(jm, "path", json_object_new_string(model_path));
        json_object_object_add(jm, "layers", json_object_new_int(m->cfg.n_layers));
        json_object_object_add(jm, "hidden", json_object_new_int(m->cfg.hidden));
        json_object_object_add(jm, "experts", json_object_new_int(m->cfg.n_experts));
        json_object_object_add(jm, "top_k", json_object_new_int(m->cfg.top_k));
        json_object_object_add(root, "model", jm);
        json_object_object_add(cfg, "scenario", json_object_new_string(scenario_path));
        json_object_object_add(cfg, "policy", json_object_new_string(wd_emu_policy_name(emu)));
        json_object_object_add(cfg, "seed", json_object_new_int64((int64_t)run_seed));
        json_object_object_add(cfg, "workload", json_object_new_string(trace ? "trace" : "poisson"));
        if (trace) json_object_object_add(cfg, "trace", json_object_new_string(trace));
        else {
            json_object_object_add(cfg, "users", json_object_new_int(users));
            json_object_object_add(cfg, "rate_per_s", json_object_new_double(rate));
            json_object_object_add(cfg, "max_new_tokens", json_object_new_int(max_new));
        }
        json_object_object_add(cfg, "prefill_chunk", json_object_new_int(chunk));
        json_object_object_add(cfg, "kv_budget_bytes", json_object_new_double(kv_budget));
        json_object_object_add(cfg, "max_batch", json_object_new_int(max_batch));
        json_object_object_add(cfg, "micro_batches", json_object_new_int(n_mb));
        json_object_object_add(cfg, "tpot_slo_s", json_object_new_double(tpot_slo));
        json_object_object_add(cfg, "ttft_slo_s", json_object_new_double(ttft_slo));
        json_object_object_add(cfg, "temperature", json_object_new_double(temperature));
        json_object_object_add(root, "config", cfg);
        json_object *js = json_object_new_object();
        json_object_object_add(js, "requests", json_object_new_int(n));
        json_object_object_add(js, "steps", json_object_new_int64(res.steps));
        json_object_object_add(js, "makespan_s", json_object_new_double(res.makespan_s));
        json_object_object_add(js, "ttft", dist_json(d_ttft));
        json_object_object_add(js, "tpot", dist_json(d_tpot));
        json_object_object_add(js, "queue_wait", dist_json(d_queue));
        json_object_object_add(js, "output_tokens", json_object_new_int64(outputs));
        json_object_object_add(js, "throughput_tok_s", json_object_new_double(thr));
        json_object_object_add(js, "goodput_tok_s", json_object_new_double(goodput));
        json_object_object_add(js, "requests_meeting_slo", json_object_new_int(n_good));
        json_object_object_add(js, "jain_fairness", json_object_new_double(jain));
        json_object_object_add(js, "mean_batch_users", json_object_new_double(mean_batch));
        json_object_object_add(js, "mean_waiting_users", json_object_new_double(mean_wait));
        json_object_object_add(js, "max_kv_bytes", json_object_new_double(res.max_kv_bytes));
        json_object_object_add(js, "energy_per_output_token_j", json_object_new_double(e_out));
        if (n_cmp) {
            json_object_object_add(js, "agreement", json_object_new_double(agree / n_cmp));
            json_object_object_add(js, "mean_kl", json_object_new_double(kl / n_cmp));
        }
        json_object_object_add(root, "summary", js);
        json_object_object_add(root, "latency", wd_emu_summary_json(&sum));
        for (int i = 0; i < n; i++) {
            const wd_serve_user *u = &res.users[i];
            json_object *o1 = json_object_new_object(), *tk = json_object_new_array();
            const double f[] = {u->arrival_s, u->admit_s, u->first_s, u->finish_s, u->ttft_s,
                                u->tpot_s, u->max_gap_s, u->energy_j};
            const char *names[] = {"arrival_s", "admit_s", "first_token_s", "finish_s",
                                   "ttft_s", "tpot_s", "max_gap_s", "energy_j"};
            json_object_object_add(o1, "prompt_tokens", json_object_new_int(u->n_prompt));
            for (int j = 0; j < 8; j++)
                json_object_object_add(o1, names[j], json_object_new_double(f[j]));
            if (!isnan(u->agreement)) {
                json_object_object_add(o1, "agreement", json_object_new_double(u->agreement));
                json_object_object_add(o1, "mean_kl", json_object_new_double(u->mean_kl));
            }
            for (int j = 0; j < u->n_out; j++) json_object_array_add(tk, json_object_new_int(u->tokens[j]));
            json_object_object_add(o1, "tokens", tk);
            json_object_array_add(ju, o1);
        }
        json_object_object_add(root, "users", ju);
        json_object_object_add(root, "devices", wd_emu_devices_json(emu));
        const char *tn[] = {"t_s",      "tokens",   "users",       "waiting",
                            "kv_bytes", "energy_j", "device_util", "device_queue_s"};
        json_object *ta[8];
        for (int j = 0; j < 8; j++) ta[j] = json_object_new_array();
        for (long s = 0; s < res.n_timeline; s++) {
            const wd_serve_step *st = &res.timeline[s];
            json_object_array_add(ta[0], json_object_new_double(st->t_start));
            json_object_array_add(ta[1], json_object_new_int(st->tokens));
            json_object_array_add(ta[2], json_object_new_int(st->running));
            json_object_array_add(ta[3], json_object_new_int(st->waiting));
            json_object_array_add(ta[4], json_object_new_double(st->kv_bytes));
            json_object_array_add(ta[5], json_object_new_double(st->energy_j));
            json_object_array_add(ta[6], json_object_new_double(st->device_util));
            json_object_array_add(ta[7], json_object_new_double(st->device_queue_s));
        }
        for (int j = 0; j < 8; j++) json_object_object_add(jt, tn[j], ta[j]);
        /* per step and device: compute time, queue wait, jobs that found it busy,
         * the calls ahead of its jobs (summed) */
        const char *dn[] = {"device_busy_s", "device_queue_wait_s", "device_queued_jobs",
                            "device_queue_ahead"};
        for (int j = 0; j < 4; j++) {
            json_object *a = json_object_new_array();
            for (long s = 0; s < res.n_timeline; s++) {
                json_object *row = json_object_new_array();
                for (int d = 0; d < res.n_devices; d++) {
                    size_t x = (size_t)s * res.n_devices + d;
                    json_object_array_add(
                        row, j == 3   ? json_object_new_int64(res.dev_ahead[x])
                             : j == 2 ? json_object_new_int64(res.dev_queued[x])
                                      : json_object_new_double(j ? res.dev_queue_s[x]
                                                                 : res.dev_busy_s[x]));
                }
                json_object_array_add(a, row);
            }
            json_object_object_add(jt, dn[j], a);
        }
        json_object_object_add(root, "timeline", jt);
        const char *txt = json_object_to_json_string_ext(
            root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!txt || (json_stdout ? printf("%s\n", txt) < 0
                                 : wd_emu_write_atomic(json_path, txt, strlen(txt), err, sizeof err))) {
            fprintf(stderr, "wdmoe serve-cell: %s\n",
                    !txt ? "out of memory" : json_stdout ? "cannot write stdout" : err);
            goto done;
        }
    }
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "wdmoe serve-cell: out of memory\n");
done:
    if (root) json_object_put(root);
    free(buf);
    wd_serve_result_free(&res);
    workload_free(&w);
    wd_scheduler_free(k);
    wd_pool_destroy(pool);
    wd_model_free(m);
    wd_scenario_free(&sc);
    return rc;
}
