/* wdmoe eval: accuracy / perplexity of a model on a task, optionally with
 * every forward through an emulated wireless system (scenario + policy),
 * agreement with the top-k baseline, throughput, latency statistics. */
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host/cli.h"
#include "host/eval.h"
#include "host/host.h"
#ifdef WD_HAVE_CUDA
#include "host/cuda_runner.h"
#endif

static void help(FILE *f) {
    fprintf(f,
            "usage: wdmoe eval --model PATH --task T --data PATH [options]\n\n"
            "Evaluate a Mixtral-architecture MoE model on a task; with --scenario or --policy\n"
            "every forward goes through the emulated wireless system.\n\n"
            "tasks (--data):\n"
            "  hellaswag       llama.cpp's hellaswag text file (6 lines per item)\n"
            "  mmlu            folder with dev/ and test/<subject>_test.csv, or one test CSV\n"
            "  arc_easy, arc_challenge, piqa, winogrande\n"
            "                  JSONL {\"question\", \"choices\": [...], \"answer\": index}\n"
            "  gsm8k           JSONL {\"question\", \"answer\": \"... #### N\"} (greedy generation)\n"
            "  perplexity      any text file\n\n"
            "options:\n"
            "  --model PATH         model folder (config.json, *.safetensors, tokenizer.json) or .gguf\n"
            "  --task T             one of the tasks above\n"
            "  --data PATH          the data set\n"
            "  --limit N            evaluate N items (default: all; perplexity: N windows)\n"
            "  --shuffle            take the N items at random (seeded) instead of the first N\n"
            "  --seed S             seed of --shuffle; also replaces the scenario's seed when given\n"
            "  --shots N            few-shot examples: mmlu from dev/ (default 5), gsm8k the first\n"
            "                       N items of the file, not evaluated (default 5)\n"
            "  --scenario FILE      emulated wireless system (scenario JSON)\n"
            "  --policy P           expert-selection policy (default: the scenario's; without\n"
            "                       --scenario a default cell with one device per expert is used)\n"
            "  --agreement          compare every next-token distribution with plain top-k\n"
            "                       (token agreement, KL); default on when the policy is not topk\n"
            "  --no-agreement       do not\n"
            "  --no-shared-prefix   score each choice from scratch (slower; for comparison)\n"
            "  --max-new-tokens N   gsm8k generation budget (default 256)\n"
            "  --window N           perplexity window in tokens (default: the context)\n"
            "  --stride N           perplexity stride (default: window / 2)\n"
            "  --ctx N              context length (default: the model's)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --top-k K            experts per token (default: the model's)\n"
            "  --router R           learned (default) or oracle (the K experts with the\n"
            "                       largest output norm; all experts run; CPU, no scenario)\n"
            "  --backend B          cpu (default) or cuda (when built with CUDA; agreement needs\n"
            "                       --agreement there)\n"
            "  --gpus N, --gpu I, --no-cuda-graphs\n"
            "                       GPUs for --backend cuda, as in `wdmoe generate --help`\n"
            "                       (one process: no --ranks)\n"
            "  --json FILE          result JSON (written atomically; - prints it to stdout\n"
            "                       instead of the table); also lm-evaluation-harness's\n"
            "                       results layout (results, n-shot, versions, config)\n"
            "  --out FILE           the same as --json FILE\n"
            "  --records FILE       one JSON line per item (written atomically)\n"
                        "  --quiet              no progress bar\n"
            "  -h, --help           this help\n\n"
            "Ctrl-C stops after the current item and writes the results of the items done\n"
            "(exit status 130).\n");
}

#ifdef WD_HAVE_CUDA
/* The GPU runner as an lm: rewinds to any earlier position (shared-prefix
 * scoring); batches of at most spec.max_batch tokens. */
typedef struct {
    wd_cuda_model *cm;
    const wd_model *m;
    const wd_moe_hooks *hooks; /* NULL: the model's top-k */
} cuda_lm;

static int cu_forward(void *ctx, const int *tokens, int n, float *logits, int all, char *err,
                      size_t errlen) {
    cuda_lm *c = ctx;
    return wd_cuda_model_forward(c->cm, tokens, n, logits, all, c->hooks, NULL, err, errlen);
}
static int cu_get_pos(void *ctx) { return wd_cuda_model_pos(((cuda_lm *)ctx)->cm); }
static void cu_set_pos(void *ctx, int pos) { wd_cuda_model_set_pos(((cuda_lm *)ctx)->cm, pos); }
static int cu_encode(void *ctx, const char *text, int add_bos, int **ids, int *n) {
    return wd_tokenizer_encode(((cuda_lm *)ctx)->m->tok, text, add_bos, ids, n);
}
static char *cu_decode(void *ctx, const int *ids, int n) {
    return wd_tokenizer_decode(((cuda_lm *)ctx)->m->tok, ids, n);
}

static int cuda_lm_create(cuda_lm *c, wd_eval_lm *lm, const wd_model *m, int ctx,
                          wd_cli_cuda *gpu, const wd_moe_hooks *hooks, char *err,
                          size_t errlen) {
    wd_cuda_model_spec spec;
    wd_cuda_model_spec_default(&spec);
    spec.max_ctx = ctx;
    if (wd_cli_cuda_spec("eval", gpu, &spec)) {
        snprintf(err, errlen, "GPU options");
        return 1;
    }
    char log[4096] = "";
    memset(c, 0, sizeof(*c));
    if (wd_cuda_model_create(&c->cm, m, &spec, log, sizeof(log), err, errlen)) return 1;
    c->m = m;
    c->hooks = hooks;
    memset(lm, 0, sizeof(*lm));
    lm->ctx = c;
    lm->vocab = m->cfg.vocab;
    lm->max_ctx = ctx > 0 && ctx < m->cfg.max_pos ? ctx : m->cfg.max_pos;
    lm->bos = wd_tokenizer_add_bos(m->tok) ? wd_tokenizer_bos(m->tok) : -1;
    lm->eos = wd_tokenizer_eos(m->tok);
    lm->max_batch = spec.max_batch > 0 ? spec.max_batch : 512;
    lm->rewind = 1;
    lm->forward = cu_forward;
    lm->get_pos = cu_get_pos;
    lm->set_pos = cu_set_pos;
    lm->encode = cu_encode;
    lm->decode = cu_decode;
    return 0;
}
#endif

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* ---- progress bar (stderr, only on a terminal) ------------------------------------ */
typedef struct {
    const char *label;
    double t0, last;
} progress;

static void fmt_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 360000) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%02ld:%02ld", t / 60, t % 60);
}

static void progress_cb(void *ctx, long done, long total) {
    progress *p = ctx;
    double t = now_s();
    if (done < total && t - p->last < 0.1) return;
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? done / el : 0;
    char eta[32], elapsed[32];
    fmt_time(eta, sizeof(eta), rate > 0 ? (total - done) / rate : -1);
    fmt_time(elapsed, sizeof(elapsed), el);
    int width = 28, fill = total > 0 ? (int)(width * done / total) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s [%s] %ld/%ld %5.1f%% %.2f it/s %s ETA %s  ", p->label, bar, done,
            total, total > 0 ? 100.0 * done / total : 0.0, rate, elapsed, eta);
    fflush(stderr);
}

/* ---- output ------------------------------------------------------------------------- */
static json_object *str_or_null(const char *s) { return s ? json_object_new_string(s) : NULL; }

static void print_pm(FILE *f, const char *name, double v, double se) {
    if (se == se)
        fprintf(f, "%-22s %.4f +- %.4f\n", name, v, se);
    else
        fprintf(f, "%-22s %.4f\n", name, v);
}

static void print_table(FILE *f, const wd_eval_result *r, const char *task, const char *policy,
                        const wd_eval_emu *emu) {
    fprintf(f, "%-22s %s\n", "task", task);
    fprintf(f, "%-22s %s\n", "policy", policy);
    fprintf(f, "%-22s %ld / %ld%s\n", "items", r->items, r->items_total,
            r->interrupted ? " (interrupted)" : "");
    if (r->truncated) fprintf(f, "%-22s %ld\n", "truncated contexts", r->truncated);
    if (r->task == WD_EVAL_PERPLEXITY) {
        print_pm(f, "perplexity", r->ppl, r->ppl_stderr);
        print_pm(f, "nll / token", r->nll_mean, r->nll_stderr);
        fprintf(f, "%-22s %.4f\n", "bits / byte", r->bits_per_byte);
        fprintf(f, "%-22s %ld\n", "tokens scored", r->ppl_tokens);
    } else if (r->task == WD_EVAL_GSM8K) {
        print_pm(f, "exact_match", r->acc, r->acc_stderr);
    } else {
        print_pm(f, "acc", r->acc, r->acc_stderr);
        print_pm(f, "acc_norm", r->acc_norm, r->acc_norm_stderr);
    }
    if (r->agree_positions) {
        fprintf(f, "%-22s %.4f (%ld positions)\n", "agreement with topk", r->agreement,
                r->agree_positions);
        fprintf(f, "%-22s %.6f (max %.6f)\n", "KL(topk || policy)", r->kl_mean, r->kl_max);
    }
    double s = r->seconds > 0 ? r->seconds : 1e-12;
    fprintf(f, "%-22s %.3f s\n", "wall time", r->seconds);
    fprintf(f, "%-22s %.2f\n", "items / s", r->items / s);
    fprintf(f, "%-22s %.1f (%ld tokens, %ld forwards)\n", "tokens / s", r->tokens_forwarded / s,
            r->tokens_forwarded, r->forwards);
    if (emu) {
        fprintf(f, "emulated latency (%s):\n",
                r->task == WD_EVAL_GSM8K
                    ? "prefill: one sample per prompt; decode: per generated token"
                : r->task == WD_EVAL_PERPLEXITY
                    ? "prefill: one sample per scored window; no decode"
                    : "multiple-choice scoring is prefill: one sample per item; no decode");
        wd_eval_emu_print(f, emu);
    }
}

int wd_cmd_eval(int argc, char **argv) {
    const char *cmd = "eval", *model_path = NULL, *task_name = NULL, *data = NULL;
    const char *scenario = NULL, *policy = NULL, *out = NULL, *records = NULL, *backend = "cpu";
    int limit = 0, shuffle = 0, shots = -1, agreement = -1, shared = 1, max_new = 256;
    int window = 0, stride = 0, ctx = 0, threads = 0, json_stdout = 0, quiet = 0, seed = 42;
    int seed_given = 0;
    wd_cli_cuda gpu;
    wd_cli_cuda_init(&gpu);
    wd_cli_route route = {0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int used = wd_cli_cuda_option(cmd, argc, argv, &i, &gpu);
        if (!used) used = wd_cli_route_option(cmd, argc, argv, &i, &route);
        if (used < 0) return 2;
        if (used) continue;
#define VAL(var)                                                                               \
    do {                                                                                       \
        if (!((var) = wd_cli_value(cmd, argc, argv, &i))) return 2;                            \
    } while (0)
#define INT(var, lo, hi)                                                                       \
    do {                                                                                       \
        if (!(v = wd_cli_value(cmd, argc, argv, &i)) || wd_cli_int(cmd, a, v, lo, hi, &(var))) \
            return 2;                                                                          \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) VAL(model_path);
        else if (!strcmp(a, "--task")) VAL(task_name);
        else if (!strcmp(a, "--data")) VAL(data);
        else if (!strcmp(a, "--scenario")) VAL(scenario);
        else if (!strcmp(a, "--policy")) VAL(policy);
        else if (!strcmp(a, "--out") || !strcmp(a, "--json")) VAL(out);
        else if (!strcmp(a, "--records")) VAL(records);
        else if (!strcmp(a, "--backend")) VAL(backend);
        else if (!strcmp(a, "--limit")) INT(limit, 0, 1 << 30);
        else if (!strcmp(a, "--shots")) INT(shots, 0, 64);
        else if (!strcmp(a, "--max-new-tokens")) INT(max_new, 1, 1 << 20);
        else if (!strcmp(a, "--window")) INT(window, 2, 1 << 24);
        else if (!strcmp(a, "--stride")) INT(stride, 1, 1 << 24);
        else if (!strcmp(a, "--ctx")) INT(ctx, 2, 1 << 24);
        else if (!strcmp(a, "--threads")) INT(threads, 0, 1024);
        else if (!strcmp(a, "--seed")) {
            INT(seed, 0, 2147483647);
            seed_given = 1;
        } else if (!strcmp(a, "--shuffle")) shuffle = 1;
        else if (!strcmp(a, "--agreement")) agreement = 1;
        else if (!strcmp(a, "--no-agreement")) agreement = 0;
        else if (!strcmp(a, "--no-shared-prefix")) shared = 0;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else {
            fprintf(stderr, "wdmoe eval: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef VAL
#undef INT
    }
    if (!model_path || !task_name || !data) {
        fprintf(stderr, "wdmoe eval: --model, --task and --data are required (see --help)\n");
        return 2;
    }
    if (wd_cli_cuda_check(cmd, &gpu, backend, 0)) return 2;
    if (gpu.ranks > 1) {
        fprintf(stderr, "wdmoe eval: --ranks is for `wdmoe generate` (eval runs in one process)\n");
        return 2;
    }
    if (out && !strcmp(out, "-")) { /* stdout: never a file named "-" */
        json_stdout = 1;
        out = NULL;
    }
    int use_cuda = !strcmp(backend, "cuda");
    wd_eval_task task;
    if (wd_eval_task_parse(task_name, &task)) {
        fprintf(stderr,
                "wdmoe eval: unknown task '%s' (hellaswag, mmlu, arc_easy, arc_challenge, piqa, "
                "winogrande, gsm8k, perplexity)\n",
                task_name);
        return 2;
    }
    wd_cli_io io; /* nothing read may be written over; every output can be written */
    wd_cli_io_init(&io, cmd);
    wd_cli_io_model(&io, model_path);
    wd_cli_io_scenario(&io, scenario);
    wd_cli_io_eval_data(&io, data);
    wd_cli_io_output(&io, "--out", out);
    wd_cli_io_output(&io, "--records", records);
    int io_rc = wd_cli_io_check(&io);
    wd_cli_io_free(&io);
    if (io_rc) return io_rc;
    char err[2048];
    wd_eval_set set;
    if (wd_eval_load(&set, task, data, shots, err, sizeof(err))) {
        fprintf(stderr, "wdmoe eval: %s\n", err);
        return 1;
    }
    wd_model *m = NULL;
    wd_pool *pool = NULL;
    wd_session *s = NULL, *ref_s = NULL;
    wd_eval_emu *emu = NULL;
#ifdef WD_HAVE_CUDA
    cuda_lm cu = {0}, cu_ref = {0};
#endif
    int *order = NULL, rc = 1;
    char *rec_buf = NULL;
    size_t rec_len = 0;
    FILE *rec = NULL;
    json_object *doc = NULL;
    wd_eval_result r;
    memset(&r, 0, sizeof(r));
    if (wd_model_load(&m, model_path, err, sizeof(err))) {
        fprintf(stderr, "wdmoe eval: %s\n", err);
        goto done;
    }
    if (!m->tok) {
        fprintf(stderr, "wdmoe eval: %s: no tokenizer (tokenizer.json or GGUF vocab)\n",
                model_path);
        goto done;
    }
    if (wd_cli_route_apply(cmd, &route, m->cfg.n_experts, &m->cfg.top_k, use_cuda,
                           scenario || policy)) {
        rc = 2;
        goto done;
    }
    const char *policy_name = "topk";
    if (scenario || policy) {
        if (wd_eval_emu_create(&emu, m, scenario, policy, seed_given ? seed : -1, err,
                               sizeof(err))) {
            fprintf(stderr, "wdmoe eval: %s\n", err);
            goto done;
        }
        policy_name = wd_eval_emu_policy(emu);
        if (wd_eval_emu_measured(emu))
            fprintf(stderr,
                    "wdmoe eval: %s asks for measured compute, which `wdmoe generate --backend "
                    "cuda` provides: using the modeled compute times\n",
                    scenario ? scenario : "the scenario");
    }
    /* agreement: default on when the policy is not top-k (CPU; on the GPU it
     * needs a second copy of the model, so it is asked for explicitly) */
    if (agreement < 0) agreement = emu && strcmp(policy_name, "topk") != 0 && !use_cuda;
    pool = wd_pool_create(threads);
    if (!pool) {
        fprintf(stderr, "wdmoe eval: out of memory for the thread pool\n");
        goto done;
    }
    wd_eval_lm lm, ref_lm;
    if (use_cuda) {
#ifdef WD_HAVE_CUDA
        if (cuda_lm_create(&cu, &lm, m, ctx, &gpu, emu ? wd_eval_emu_hooks(emu) : NULL, err,
                           sizeof(err)) ||
            (agreement && cuda_lm_create(&cu_ref, &ref_lm, m, ctx, &gpu, NULL, err, sizeof(err)))) {
            fprintf(stderr, "wdmoe eval: %s\n", err);
            goto done;
        }
#endif
    } else {
        s = wd_session_create(m, ctx, pool);
        if (!s || (agreement && !(ref_s = wd_session_create(m, ctx, pool)))) {
            char need[32];
            wd_cli_format_bytes(need, sizeof need, (agreement ? 2 : 1) * wd_session_bytes(m, ctx));
            fprintf(stderr,
                    "wdmoe eval: out of memory: a context of %d tokens needs %s for the KV "
                    "cache%s of %s (lower --ctx)\n",
                    ctx > 0 && ctx < m->cfg.max_pos ? ctx : m->cfg.max_pos, need,
                    agreement ? "s (policy and top-k reference)" : "", model_path);
            goto done;
        }
        if (emu) wd_session_set_hooks(s, wd_eval_emu_hooks(emu));
        wd_session_set_oracle(s, route.oracle);
        if (ref_s) wd_session_set_oracle(ref_s, route.oracle);
        wd_eval_lm_session(&lm, s);
        if (ref_s) wd_eval_lm_session(&ref_lm, ref_s);
    }
    int n = task == WD_EVAL_PERPLEXITY ? limit
                                       : (limit > 0 && limit < set.n_items ? limit : set.n_items);
    if (shuffle && task != WD_EVAL_PERPLEXITY) {
        if (!(order = malloc((size_t)set.n_items * sizeof(int)))) {
            fprintf(stderr, "wdmoe eval: out of memory\n");
            goto done;
        }
        for (int i = 0; i < set.n_items; i++) order[i] = i;
        wd_rng rng;
        wd_rng_seed(&rng, (uint64_t)seed);
        for (int i = set.n_items - 1; i > 0; i--) {
            int j = (int)(wd_rng_next(&rng) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    if (records && !(rec = open_memstream(&rec_buf, &rec_len))) {
        fprintf(stderr, "wdmoe eval: out of memory\n");
        goto done;
    }
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    o.shared_prefix = shared;
    o.max_new_tokens = max_new;
    o.ppl_window = window;
    o.ppl_stride = stride;
    o.ref = agreement ? &ref_lm : NULL;
    o.stop = wd_cli_interrupt_flag();
    o.records = rec;
    char label[64];
    snprintf(label, sizeof(label), "%s", wd_eval_task_name(task));
    progress prog = {label, now_s(), 0};
    if (!quiet && isatty(2)) {
        o.progress = progress_cb;
        o.progress_ctx = &prog;
    }
    /* a first SIGINT/SIGTERM stops after the current item and writes the items
     * done; a second one quits at once, removing temporary files */
    wd_cli_install_signals();
    wd_cli_remove_on_quit(out);
    wd_cli_remove_on_quit(records);
    if (emu) lm.phase = wd_eval_emu_phase, lm.phase_ctx = emu;
    int run_rc = wd_eval_run(&set, order, n, &lm, &o, &r, err, sizeof(err));
    if (o.progress) fputc('\n', stderr);
    if (run_rc) {
        fprintf(stderr, "wdmoe eval: %s\n",
                emu && *wd_eval_emu_error(emu) ? wd_eval_emu_error(emu) : err);
        if (!r.items) goto done;
        fprintf(stderr, "wdmoe eval: writing the results of the %ld items done\n", r.items);
        r.interrupted = 1;
    }
    if (r.interrupted) fprintf(stderr, "wdmoe eval: stopped after %ld items\n", r.items);

    /* the result document: configuration, then results (deterministic order) */
    doc = json_object_new_object();
    json_object_object_add(doc, "command", json_object_new_string("eval"));
    {
        static const char *const seed_names[] = {"seed"};
        long long seeds[] = {seed};
        wd_cli_provenance(doc, "eval", argc, argv, seed_names, seeds, 1);
        json_object *jm = json_object_new_object(); /* the same shape as generate's */
        json_object_object_add(jm, "path", json_object_new_string(model_path));
        json_object_object_add(jm, "layers", json_object_new_int(m->cfg.n_layers));
        json_object_object_add(jm, "hidden", json_object_new_int(m->cfg.hidden));
        json_object_object_add(jm, "experts", json_object_new_int(m->cfg.n_experts));
        json_object_object_add(jm, "top_k", json_object_new_int(m->cfg.top_k));
        json_object_object_add(doc, "model", jm);
    }
    json_object_object_add(doc, "task", json_object_new_string(wd_eval_task_name(task)));
    json_object_object_add(doc, "data", json_object_new_string(data));
    json_object_object_add(doc, "shots", json_object_new_int(set.shots));
    json_object_object_add(doc, "limit", json_object_new_int(limit));
    json_object_object_add(doc, "shuffle", json_object_new_boolean(shuffle));
    json_object_object_add(doc, "seed", json_object_new_int(seed));
    json_object_object_add(doc, "shared_prefix", json_object_new_boolean(shared && lm.rewind));
    json_object_object_add(doc, "scenario", str_or_null(scenario));
    json_object_object_add(doc, "policy", json_object_new_string(policy_name));
    json_object_object_add(doc, "backend", json_object_new_string(backend));
    json_object_object_add(doc, "ctx", json_object_new_int(lm.max_ctx));
    json_object_object_add(doc, "threads", json_object_new_int(wd_pool_size(pool)));
    if (task == WD_EVAL_PERPLEXITY) {
        json_object_object_add(doc, "window", json_object_new_int(window));
        json_object_object_add(doc, "stride", json_object_new_int(stride));
    }
    if (task == WD_EVAL_GSM8K)
        json_object_object_add(doc, "max_new_tokens", json_object_new_int(max_new));
    json_object_object_add(doc, "items", json_object_new_int64(r.items));
    json_object_object_add(doc, "items_total", json_object_new_int64(r.items_total));
    json_object_object_add(doc, "interrupted", json_object_new_boolean(r.interrupted));
    json_object_object_add(doc, "truncated", json_object_new_int64(r.truncated));
    json_object_object_add(doc, "metrics", wd_eval_metrics_json(&r));
    json_object *groups = wd_eval_groups_json(&r);
    if (groups) json_object_object_add(doc, "groups", groups);
    json_object_object_add(doc, "agreement", wd_eval_agreement_json(&r));
    json_object_object_add(doc, "latency", emu ? wd_eval_emu_latency_json(emu) : NULL);
    json_object_object_add(doc, "throughput", wd_eval_throughput_json(&r));
    wd_eval_add_lm_eval(doc, &r, wd_eval_task_name(task), model_path, set.shots, limit,
                        wd_version());
    const char *text = json_object_to_json_string_ext(
        doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (json_stdout)
        printf("%s\n", text);
    else
        print_table(stdout, &r, wd_eval_task_name(task), policy_name, emu);
    fflush(stdout);
    int write_failed = 0;
    if (out) {
        size_t len = strlen(text);
        char *buf = malloc(len + 2);
        if (!buf) {
            fprintf(stderr, "wdmoe eval: out of memory\n");
            write_failed = 1;
        } else {
            memcpy(buf, text, len);
            buf[len] = '\n';
            if (wd_emu_write_atomic(out, buf, len + 1, err, sizeof(err))) {
                fprintf(stderr, "wdmoe eval: %s\n", err);
                write_failed = 1;
            }
            free(buf);
        }
    }
    if (rec) {
        fclose(rec);
        rec = NULL;
        if (wd_emu_write_atomic(records, rec_buf ? rec_buf : "", rec_len, err, sizeof(err))) {
            fprintf(stderr, "wdmoe eval: %s\n", err);
            write_failed = 1;
        }
    }
    rc = write_failed ? 1 : run_rc ? 1 : r.interrupted ? 130 : 0;
done:
    if (rec) fclose(rec);
    free(rec_buf);
    json_object_put(doc);
    wd_eval_result_free(&r);
    free(order);
    wd_session_free(ref_s);
    wd_session_free(s);
#ifdef WD_HAVE_CUDA
    wd_cuda_model_free(cu.cm);
    wd_cuda_model_free(cu_ref.cm);
#endif
    wd_eval_emu_free(emu); /* after the sessions that use its hooks */
    wd_pool_destroy(pool);
    wd_model_free(m);
    wd_eval_set_free(&set);
    return rc;
}
