/* wdmoe generate: text from a prompt, printed as it is produced. With a
 * scenario, every layer step goes through the BS scheduler (policy + radio
 * emulation on the virtual clock) and the run reports latency and quality
 * side by side: quality is measured against the model's own top-k routing by
 * re-scoring the produced sequence with plain top-k (token agreement, KL). */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "host/cli.h"
#include "host/host.h"
#ifdef WD_HAVE_CUDA
#include "host/cuda_runner.h"
#endif

static void help(FILE *f) {
    fprintf(f,
            "usage: wdmoe generate --model PATH [options]\n\n"
            "Generate text with a Mixtral-architecture MoE model or a dense Llama (Hugging Face\n"
            "folder or .gguf), optionally with its experts on emulated wireless devices\n"
            "(--scenario).\n\n"
            "options:\n"
            "  --model PATH          model folder (config.json, *.safetensors, tokenizer.json) or .gguf\n"
            "  --prompt TEXT         prompt (default: empty, generation starts from BOS); BOS is\n"
            "                        put first when the model's tokenizer adds one\n"
            "  -f, --prompt-file F   the prompt from a file (one trailing newline dropped)\n"
            "  --chat                apply the model's chat template to the prompt (a user turn)\n"
            "  --prompt-ids LIST     the prompt as token ids, e.g. 1,2,3 (no tokenizer, no BOS)\n"
            "  --logits FILE         write the F32 logits of every prompt position (row-major,\n"
            "                        positions x vocab, host byte order) atomically; with -n 0\n"
            "                        nothing is generated\n"
            "  -n, --steps N         tokens to generate (default 128)\n"
            "  --temperature T       sampling temperature, 0 = greedy (default 0)\n"
            "  --top-p P             nucleus sampling mass in (0, 1] (default 0.9)\n"
            "  --seed S              random seed for sampling (default 42)\n"
            "  --threads N           CPU threads (default: all cores)\n"
            "  --hugepages           copy the weights into transparent huge pages when the copy\n"
            "                        takes at most half of MemAvailable (CPU decode reads them\n"
            "                        5-15 %% faster; the copy costs time at load and anonymous RSS)\n"
            "  --ctx N               context length (default: model's max_position_embeddings)\n"
            "  --backend B           cpu (default) or cuda (when built with CUDA)\n"
            "  --ids                 also print the token ids (BOS first) after the text\n"
            "emulation:\n"
            "  --scenario FILE       scenario JSON (devices, radio, policy; see bench/scenarios)\n"
            "  --policy P            override the scenario's policy (topk, wdmoe, wlr-drop, dynamic, fastest,\n"
            "                        wdmoe-straggler)\n"
            "  --json FILE           write the result JSON (config echo, latency, quality) atomically\n"
            "                        (-: to stdout, and the generated text to stderr)\n"
            "  --records FILE        per layer step JSON lines: experts, weights, t_dl, t_c, t_ul, bits\n"
            "  --record-probs FILE   router probabilities of every token (.wdpr, for `wdmoe replay`)\n"
            "  --no-compare          skip the quality comparison against top-k\n"
            "  --realtime            (--backend cuda) inject each layer step's emulated downlink\n"
            "                        and uplink times as delay kernels around the experts on the\n"
            "                        GPU, so the GPU timeline is the emulated system\n"
            "  -h, --help            this help\n"
            "GPU (--backend cuda):\n");
    fputs(wd_cli_route_help, f);
    fputs(wd_cli_cuda_help, f);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* One forward engine: the CPU session, or the GPU runner. */
typedef struct {
    wd_session *s;
#ifdef WD_HAVE_CUDA
    struct wd_cuda_model *cm;
    const wd_cuda_timing_hooks *timing; /* with the scheduler's hooks only */
#endif
    const wd_moe_hooks *hooks; /* NULL: the model's top-k */
} engine;

#ifdef WD_HAVE_CUDA
/* The GPU runner's timing hooks on the BS scheduler: one runner stream per
 * expert, so runner device e is expert e. */
static void gpu_link_delays(void *ctx, int layer, int device, int n_tokens, uint64_t *dl,
                            uint64_t *ul) {
    (void)n_tokens;
    wd_scheduler_link_delays(ctx, layer, device, dl, ul);
}
static int gpu_expert_times(void *ctx, int layer, const double *seconds, int n_devices) {
    return wd_scheduler_expert_times(ctx, layer, seconds, n_devices);
}
#endif

static int eng_forward(engine *e, const int *tokens, int n, float *logits, int all, char *err,
                       size_t errlen) {
#ifdef WD_HAVE_CUDA
    if (e->cm)
        return wd_cuda_model_forward(e->cm, tokens, n, logits, all, e->hooks,
                                     e->hooks ? e->timing : NULL, err, errlen);
#endif
    wd_session_set_hooks(e->s, e->hooks);
    return wd_forward(e->s, tokens, n, logits, all, err, errlen);
}

static void eng_reset(engine *e) {
#ifdef WD_HAVE_CUDA
    if (e->cm) {
        wd_cuda_model_reset(e->cm);
        return;
    }
#endif
    wd_session_reset(e->s);
}

typedef struct {
    int steps;
    double agreement, mean_kl, ppl_policy, ppl_topk;
} quality;

/* Re-score the sequence with plain top-k: lp_policy holds the policy run's
 * log-probabilities at each of the `steps` predicted positions (the first at
 * index n_prompt - 1 of the sequence). */
static int compare_topk(engine *e, const int *seq, int n_seq, int n_prompt, const float *lp_policy,
                        int steps, int vocab, quality *q, char *err, size_t errlen) {
    memset(q, 0, sizeof(*q));
    if (steps <= 0) return 0;
    float *lp = malloc((size_t)n_seq * vocab * sizeof(float));
    if (!lp) {
        snprintf(err, errlen, "out of memory for the top-k comparison");
        return 1;
    }
    eng_reset(e);
    const wd_moe_hooks *saved = e->hooks;
    e->hooks = NULL;
    int rc = eng_forward(e, seq, n_seq - 1, lp, 1, err, errlen);
    e->hooks = saved;
    if (rc) {
        free(lp);
        return 1;
    }
    double agree = 0, kl = 0, nll_p = 0, nll_b = 0;
    for (int i = 0; i < steps; i++) {
        int pos = n_prompt - 1 + i; /* logits at pos predict seq[pos + 1] */
        float *b = lp + (size_t)pos * vocab;
        const float *p = lp_policy + (size_t)i * vocab;
        wd_log_softmax(b, vocab);
        agree += wd_argmax(b, vocab) == wd_argmax(p, vocab);
        double k = 0;
        for (int v = 0; v < vocab; v++) k += exp((double)b[v]) * ((double)b[v] - p[v]);
        kl += k > 0 ? k : 0;
        nll_p -= p[seq[pos + 1]];
        nll_b -= b[seq[pos + 1]];
    }
    q->steps = steps;
    q->agreement = agree / steps;
    q->mean_kl = kl / steps;
    q->ppl_policy = exp(nll_p / steps);
    q->ppl_topk = exp(nll_b / steps);
    free(lp);
    return 0;
}

/* One token's bytes to f, whatever its length (pieces can be long). */
static void put_piece(FILE *f, const wd_tokenizer *tok, int prev, int id) {
    if (!tok) return; /* a model without a tokenizer, run on --prompt-ids: ids only (--ids) */
    char buf[256], *p = buf;
    int len = wd_tokenizer_piece(tok, prev, id, buf, (int)sizeof buf);
    if (len > (int)sizeof buf && (p = malloc((size_t)len)))
        len = wd_tokenizer_piece(tok, prev, id, p, len);
    if (p) fwrite(p, 1, (size_t)len, f);
    if (p != buf) free(p);
}

/* The text of a prompt file (at most 64 MiB, NUL bytes refused), one trailing
   newline dropped; NULL with "PATH: ..." in err. */
static char *read_prompt(const char *path, char *err, size_t errlen) {
    const long long cap = 64LL << 20;
    int fd = wd_input_open(path, cap, err, errlen);
    if (fd < 0) return NULL;
    char *buf = malloc((size_t)cap + 1);
    size_t len = 0;
    ssize_t got = 0;
    while (buf && (got = read(fd, buf + len, (size_t)cap - len)) > 0) len += (size_t)got;
    close(fd);
    if (!buf || got < 0) {
        snprintf(err, errlen, "%s: %s", path, buf ? "cannot read" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    if (strlen(buf) != len) {
        snprintf(err, errlen, "%s: the prompt holds a NUL byte", path);
        free(buf);
        return NULL;
    }
    if (len && buf[len - 1] == '\n') buf[--len] = 0;
    return buf;
}

int wd_cmd_generate(int argc, char **argv) {
    const char *cmd = "generate", *model_path = NULL, *prompt = "", *scenario_path = NULL;
    const char *policy = NULL, *json_path = NULL, *records_path = NULL, *probs_path = NULL;
    const char *backend = "cpu", *prompt_file = NULL, *prompt_ids = NULL, *logits_path = NULL;
    char *prompt_buf = NULL;
    int chat = 0;
    int steps = 128, threads = 0, hugepages = 0, ctx = 0, seed = 42, print_ids = 0, compare = 1;
    double temperature = 0, top_p = 0.9;
    int realtime = 0;
    wd_cli_cuda gpu;
    wd_cli_cuda_init(&gpu);
    wd_cli_route route = {0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int used = wd_cli_cuda_option(cmd, argc, argv, &i, &gpu);
        if (!used) used = wd_cli_route_option(cmd, argc, argv, &i, &route);
        if (used < 0) return 2;
        if (used) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--ids")) {
            print_ids = 1;
        } else if (!strcmp(a, "--chat")) {
            chat = 1;
        } else if (!strcmp(a, "--prompt-ids")) {
            if (!(prompt_ids = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--logits")) {
            if (!(logits_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--no-compare")) {
            compare = 0;
        } else if (!strcmp(a, "--realtime")) {
            realtime = 1;
        } else if (!strcmp(a, "--model")) {
            if (!(model_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--prompt-file")) {
            if (!(prompt_file = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--prompt")) {
            if (!(prompt = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--scenario")) {
            if (!(scenario_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--policy")) {
            if (!(policy = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--json")) {
            if (!(json_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--records")) {
            if (!(records_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--record-probs")) {
            if (!(probs_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--backend")) {
            if (!(backend = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--steps")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_int(cmd, a, v, 0, 1 << 20, &steps))
                return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_int(cmd, a, v, 0, 1024, &threads))
                return 2;
        } else if (!strcmp(a, "--hugepages")) {
            hugepages = 1;
        } else if (!strcmp(a, "--ctx")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) || wd_cli_int(cmd, a, v, 1, 1 << 24, &ctx))
                return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_int(cmd, a, v, 0, 2147483647, &seed))
                return 2;
        } else if (!strcmp(a, "--temperature")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_double(cmd, a, v, 0, 100, &temperature))
                return 2;
        } else if (!strcmp(a, "--top-p")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_double(cmd, a, v, 1e-9, 1, &top_p))
                return 2;
        } else {
            fprintf(stderr, "wdmoe generate: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "wdmoe generate: --model is required (see --help)\n");
        return 2;
    }
    if (wd_cli_cuda_check(cmd, &gpu, backend, 0)) return 2;
    if (prompt_ids && (chat || strcmp(prompt, "") || prompt_file)) {
        fprintf(stderr, "wdmoe generate: --prompt-ids replaces --prompt, --prompt-file and --chat\n");
        return 2;
    }
    if (realtime && (strcmp(backend, "cuda") || !scenario_path)) {
        fprintf(stderr, "wdmoe generate: --realtime needs --backend cuda and --scenario\n");
        return 2;
    }
    if ((policy || json_path || records_path || probs_path) && !scenario_path) {
        fprintf(stderr, "wdmoe generate: --policy, --json, --records and --record-probs need "
                        "--scenario\n");
        return 2;
    }
    wd_cli_io io; /* nothing read may be written over; every output can be written */
    wd_cli_io_init(&io, cmd);
    wd_cli_io_model(&io, model_path);
    wd_cli_io_scenario(&io, scenario_path);
    wd_cli_io_input(&io, prompt_file, "the prompt");
    int json_stdout = json_path && !strcmp(json_path, "-"); /* never a file named "-" */
    FILE *text_out = json_stdout ? stderr : stdout; /* stdout holds the JSON alone then */
    wd_cli_io_output(&io, "--json", json_stdout ? NULL : json_path);
    wd_cli_io_output(&io, "--records", records_path);
    wd_cli_io_output(&io, "--record-probs", probs_path);
    wd_cli_io_output(&io, "--logits", logits_path);
    int io_rc = wd_cli_io_check(&io);
    wd_cli_io_free(&io);
    if (io_rc) return io_rc;
    char err[1024];
    if (prompt_file) { /* read whole, as llama.cpp's -f does */
        if (strcmp(prompt, "")) {
            fprintf(stderr, "wdmoe generate: --prompt and --prompt-file exclude each other\n");
            return 2;
        }
        if (!(prompt_buf = read_prompt(prompt_file, err, sizeof err))) {
            fprintf(stderr, "wdmoe generate: %s\n", err);
            return 1;
        }
        prompt = prompt_buf;
    }
    wd_scenario sc;
    int have_sc = 0;
    if (scenario_path) {
        if (wd_scenario_load(&sc, scenario_path, err, sizeof(err))) {
            fprintf(stderr, "wdmoe generate: %s\n", err);
            return 1;
        }
        have_sc = 1;
        if (sc.compute_measured && realtime) {
            fprintf(stderr,
                    "wdmoe generate: %s: measured compute cannot run in real time (a device's "
                    "uplink starts after its measured compute; use \"compute\": \"modeled\")\n",
                    scenario_path);
            wd_scenario_free(&sc);
            return 2;
        }
        if (sc.compute_measured && strcmp(backend, "cuda"))
            fprintf(stderr,
                    "wdmoe generate: %s asks for measured compute, which needs --backend cuda: "
                    "using the modeled compute times\n",
                    scenario_path);
    }
    wd_model *m = NULL;
    if (wd_model_load(&m, model_path, err, sizeof(err))) {
        fprintf(stderr, "wdmoe generate: %s%s%s\n", m ? model_path : "", m ? ": " : "", err);
        wd_model_free(m);
        if (have_sc) wd_scenario_free(&sc);
        return 1;
    }
    char note[512];
    if (hugepages && !wd_model_hugepages(m, note, sizeof note) && note[0])
        fprintf(stderr, "wdmoe generate: %s: %s\n", model_path, note);
    int rc = 1, vocab = m->cfg.vocab;
    if (wd_cli_route_apply(cmd, &route, m->cfg.n_experts, &m->cfg.top_k, !strcmp(backend, "cuda"),
                           have_sc)) {
        wd_model_free(m);
        if (have_sc) wd_scenario_free(&sc);
        return 2;
    }
    wd_pool *pool = NULL;
    engine eng = {0};
    wd_scheduler *sched = NULL;
    wd_moe_hooks hooks;
#ifdef WD_HAVE_CUDA
    wd_cuda_timing_hooks gpu_timing = {NULL, NULL, NULL};
#endif
    int *gpu_sms = NULL;
    FILE *records = NULL;
    wd_atomic_file records_file = {0};
    int *ids = NULL, n_ids = 0, *all = NULL, *scratch = NULL;
    float *logits = NULL, *lp_policy = NULL, *all_logits = NULL;
    if (!m->tok && !prompt_ids) {
        fprintf(stderr,
                "wdmoe generate: %s: no tokenizer.json (give the prompt as --prompt-ids)\n",
                model_path);
        goto done;
    }
    if (!m->tok) print_ids = 1; /* nothing can be decoded: the ids are the output */
    if (prompt_ids) {
        if (wd_cli_parse_ids(cmd, prompt_ids, vocab, &ids, &n_ids)) {
            rc = 2;
            goto done;
        }
    } else {
        char *text = chat ? wd_tokenizer_apply_chat(m->tok, prompt, err, sizeof(err)) : NULL;
        if (chat && !text) {
            fprintf(stderr, "wdmoe generate: --chat: %s: %s\n", model_path, err);
            goto done;
        }
        int bad = wd_tokenizer_encode(m->tok, text ? text : prompt, wd_tokenizer_add_bos(m->tok),
                                      &ids, &n_ids);
        free(text);
        if (bad) {
            fprintf(stderr, "wdmoe generate: cannot encode the prompt\n");
            goto done;
        }
        if (n_ids == 0 && wd_tokenizer_bos(m->tok) >= 0) ids[n_ids++] = wd_tokenizer_bos(m->tok);
        if (n_ids == 0) {
            fprintf(stderr, "wdmoe generate: the prompt is empty and the model has no BOS\n");
            goto done;
        }
    }
    int max_ctx = ctx > 0 && ctx < m->cfg.max_pos ? ctx : m->cfg.max_pos;
    if (n_ids > max_ctx) {
        fprintf(stderr, "wdmoe generate: the prompt (%d tokens) exceeds the context (%d)\n", n_ids,
                max_ctx);
        goto done;
    }
    if (n_ids + steps > max_ctx) {
        steps = max_ctx - n_ids;
        fprintf(stderr, "wdmoe generate: generating %d tokens to stay within the context of %d\n",
                steps, max_ctx);
    }
    pool = wd_pool_create(threads);
    if (!pool) goto oom;
    if (!strcmp(backend, "cuda")) {
#ifdef WD_HAVE_CUDA
        wd_cuda_model_spec spec;
        wd_cuda_model_spec_default(&spec);
        spec.max_ctx = max_ctx;
        spec.n_devices = m->cfg.n_experts; /* one stream per expert (see gpu_expert_times) */
        spec.realtime = realtime;
        if (have_sc) { /* green contexts: the SM count of the device hosting each expert */
            if (!(gpu_sms = calloc((size_t)m->cfg.n_experts, sizeof(int)))) goto oom;
            int any = 0;
            for (int e = 0; e < m->cfg.n_experts; e++) {
                int d = wd_scenario_expert_home(&sc, m->cfg.n_experts, e);
                gpu_sms[e] = d >= 0 ? sc.dev[d].profile.gpu_sms : 0;
                any |= gpu_sms[e] > 0;
            }
            if (any) spec.sm_count = gpu_sms;
        }
        if (wd_cli_cuda_spec(cmd, &gpu, &spec)) goto done;
        char log[8192] = "";
        int crc = wd_cuda_model_create(&eng.cm, m, &spec, log, sizeof(log), err, sizeof(err));
        wd_cli_cuda_bootstrap_done(&gpu); /* every rank has joined (or the run failed) */
        if (crc) {
            fprintf(stderr, "wdmoe generate: %s\n", err);
            goto done;
        }
        if (log[0]) fprintf(stderr, "%s", log);
#endif
    } else if ((eng.s = wd_session_create(m, max_ctx, pool))) {
        wd_session_set_oracle(eng.s, route.oracle);
    } else {
        char need[32];
        wd_cli_format_bytes(need, sizeof need, wd_session_bytes(m, max_ctx));
        fprintf(stderr,
                "wdmoe generate: out of memory: a context of %d tokens needs %s for the KV "
                "cache of %s (lower --ctx)\n",
                max_ctx, need, model_path);
        goto done;
    }
    /* from here on a first SIGINT/SIGTERM stops after the current token and writes
     * what is complete; a second one quits at once, removing temporary files */
    wd_cli_install_signals();
    if (!json_stdout) wd_cli_remove_on_quit(json_path);
    wd_cli_remove_on_quit(records_path);
    wd_cli_remove_on_quit(probs_path);
    if (have_sc) {
        if (wd_scheduler_create(&sched, m, &sc, err, sizeof(err)) ||
            (policy && wd_emu_set_policy(wd_scheduler_emu(sched), policy, &sc.params, err,
                                         sizeof(err))) ||
            (probs_path && wd_scheduler_record_probs(sched, probs_path, err, sizeof(err)))) {
            fprintf(stderr, "wdmoe generate: %s\n", err);
            goto done;
        }
        if (records_path) {
            if (wd_atomic_open(&records_file, records_path, err, sizeof(err))) {
                fprintf(stderr, "wdmoe generate: %s\n", err);
                goto done;
            }
            records = records_file.f;
            wd_scheduler_record_steps(sched, records);
        }
        wd_scheduler_hooks(sched, &hooks);
        eng.hooks = &hooks;
#ifdef WD_HAVE_CUDA
        if (eng.cm) {
            wd_scheduler_set_measured(sched, sc.compute_measured);
            gpu_timing.ctx = sched;
            gpu_timing.link_delays = realtime ? gpu_link_delays : NULL;
            gpu_timing.expert_times = sc.compute_measured ? gpu_expert_times : NULL;
            eng.timing = &gpu_timing;
        }
#endif
    }
    logits = malloc((size_t)vocab * sizeof(float));
    all = malloc((size_t)(n_ids + steps + 1) * sizeof(int));
    scratch = malloc((size_t)vocab * sizeof(int));
    if (have_sc && compare) lp_policy = malloc((size_t)vocab * (steps + 1) * sizeof(float));
    if (!logits || !all || !scratch || (have_sc && compare && !lp_policy)) goto oom;
    memcpy(all, ids, (size_t)n_ids * sizeof(int));
    wd_rng rng;
    wd_rng_seed(&rng, (uint64_t)seed);
    for (int i = 0; i < n_ids; i++) /* the prompt as the model sees it */
        put_piece(text_out, m->tok, i ? ids[i - 1] : -1, ids[i]);
    fflush(text_out);
    double t0 = now_s();
    if (sched) wd_emu_set_phase(wd_scheduler_emu(sched), WD_PHASE_PREFILL);
    if (logits_path && !(all_logits = malloc((size_t)n_ids * vocab * sizeof(float)))) goto oom;
    if (eng_forward(&eng, ids, n_ids, all_logits ? all_logits : logits, all_logits != NULL, err,
                    sizeof(err))) {
        fprintf(stderr, "\nwdmoe generate: %s\n",
                sched && wd_scheduler_error(sched)[0] ? wd_scheduler_error(sched) : err);
        goto done;
    }
    if (all_logits) {
        memcpy(logits, all_logits + (size_t)(n_ids - 1) * vocab, (size_t)vocab * sizeof(float));
        if (wd_emu_write_atomic(logits_path, all_logits, (size_t)n_ids * vocab * sizeof(float),
                                err, sizeof(err))) {
            fprintf(stderr, "\nwdmoe generate: %s\n", err);
            goto done;
        }
        fprintf(stderr, "wrote %s (%d x %d F32 logits)\n", logits_path, n_ids, vocab);
    }
    double t_prefill = now_s() - t0, virt_prefill = sched ? wd_emu_time(wd_scheduler_emu(sched)) : 0;
    if (sched) wd_emu_set_phase(wd_scheduler_emu(sched), WD_PHASE_DECODE);
    int n_all = n_ids, produced = 0, n_decode = 0;
    double t1 = now_s();
    for (int step = 0; step < steps && !wd_cli_interrupted(); step++) {
        if (lp_policy) {
            memcpy(lp_policy + (size_t)produced * vocab, logits, (size_t)vocab * sizeof(float));
            wd_log_softmax(lp_policy + (size_t)produced * vocab, vocab);
        }
        int next = wd_sample(logits, vocab, (float)temperature, (float)top_p, &rng, scratch);
        all[n_all++] = next;
        produced++;
        if (next == m->cfg.eos_id) break;
        put_piece(text_out, m->tok, all[n_all - 2], next);
        fflush(text_out);
        if (step + 1 < steps) {
            if (eng_forward(&eng, &next, 1, logits, 0, err, sizeof(err))) {
                fprintf(stderr, "\nwdmoe generate: %s\n",
                        wd_scheduler_error(sched)[0] ? wd_scheduler_error(sched) : err);
                goto done;
            }
            n_decode++;
        }
    }
    double t_decode = now_s() - t1;
    fputc('\n', text_out);
    fflush(text_out);
    if (print_ids) {
        fprintf(text_out, "ids:");
        for (int i = 0; i < n_all; i++) fprintf(text_out, " %d", all[i]);
        fputc('\n', text_out);
    }
    fprintf(stderr,
            "prefill: %d tokens in %.2f ms (%.1f tok/s) | decode: %d steps in %.2f ms "
            "(%.1f tok/s) | %s, threads %d\n",
            n_ids, t_prefill * 1e3, n_ids / (t_prefill > 0 ? t_prefill : 1e-9), n_decode,
            t_decode * 1e3, n_decode / (t_decode > 0 ? t_decode : 1e-9), backend,
            wd_pool_size(pool));
    if (sched) {
        wd_emu *emu = wd_scheduler_emu(sched);
        wd_emu_summary sum;
        wd_emu_summarize(emu, &sum);
        quality q = {0};
        if (lp_policy && compare_topk(&eng, all, n_all, n_ids, lp_policy, produced, vocab, &q, err,
                                      sizeof(err))) {
            fprintf(stderr, "wdmoe generate: %s\n", err);
            goto done;
        }
        fprintf(stderr, "\nemulated: %s, policy %s, %d devices; prefill %.3f ms virtual\n",
                sc.name[0] ? sc.name : scenario_path, wd_emu_policy_name(emu), sc.n_devices,
                virt_prefill * 1e3);
        wd_emu_summary_print(stderr, &sum);
        wd_emu_devices_print(stderr, emu);
        if (lp_policy)
            fprintf(stderr,
                    "%-28s %10.2f %%\n%-28s %10.4g nats\n%-28s %10.3f (top-k: %.3f)\n",
                    "agreement with top-k", 100 * q.agreement, "mean KL(top-k || policy)",
                    q.mean_kl, "perplexity of the output", q.ppl_policy, q.ppl_topk);
        if (wd_scheduler_finish(sched, err, sizeof(err))) {
            fprintf(stderr, "wdmoe generate: %s\n", err);
            goto done;
        }
        if (records) {
            records = NULL;
            if (wd_atomic_commit(&records_file, err, sizeof(err))) {
                fprintf(stderr, "wdmoe generate: %s\n", err);
                goto done;
            }
        }
        if (json_path) {
            json_object *root = json_object_new_object();
            json_object_object_add(root, "command", json_object_new_string("generate"));
            static const char *const seed_names[] = {"sampling", "scenario"};
            long long seeds[] = {seed, (long long)sc.seed};
            wd_cli_provenance(root, "generate", argc, argv, seed_names, seeds, 2);
            json_object *jm = json_object_new_object();
            json_object_object_add(jm, "path", json_object_new_string(model_path));
            json_object_object_add(jm, "layers", json_object_new_int(m->cfg.n_layers));
            json_object_object_add(jm, "hidden", json_object_new_int(m->cfg.hidden));
            json_object_object_add(jm, "experts", json_object_new_int(m->cfg.n_experts));
            json_object_object_add(jm, "top_k", json_object_new_int(m->cfg.top_k));
            json_object_object_add(root, "model", jm);
            json_object_object_add(root, "scenario", json_object_new_string(scenario_path));
            json_object_object_add(root, "scenario_seed", json_object_new_int64((int64_t)sc.seed));
            json_object_object_add(root, "policy", json_object_new_string(wd_emu_policy_name(emu)));
            json_object_object_add(root, "sampling_seed", json_object_new_int(seed));
            json_object_object_add(root, "temperature", json_object_new_double(temperature));
            char *u = wd_cli_utf8(prompt); /* JSON is UTF-8; generated bytes need not be */
            json_object_object_add(root, "prompt", json_object_new_string(u ? u : ""));
            free(u);
            json_object_object_add(root, "prompt_tokens", json_object_new_int(n_ids));
            json_object *jt = json_object_new_array();
            for (int i = 0; i < n_all; i++) json_object_array_add(jt, json_object_new_int(all[i]));
            json_object_object_add(root, "tokens", jt);
            char *text = wd_tokenizer_decode(m->tok, all, n_all);
            u = text ? wd_cli_utf8(text) : NULL;
            json_object_object_add(root, "text", json_object_new_string(u ? u : ""));
            free(u);
            free(text);
            json_object_object_add(root, "interrupted", json_object_new_boolean(wd_cli_interrupted()));
            json_object_object_add(root, "virtual_prefill_s", json_object_new_double(virt_prefill));
            json_object_object_add(root, "latency", wd_emu_summary_json(&sum));
            json_object_object_add(root, "devices", wd_emu_devices_json(emu));
            if (lp_policy) {
                json_object *jq = json_object_new_object();
                json_object_object_add(jq, "steps", json_object_new_int(q.steps));
                json_object_object_add(jq, "agreement_topk", json_object_new_double(q.agreement));
                json_object_object_add(jq, "mean_kl_topk", json_object_new_double(q.mean_kl));
                json_object_object_add(jq, "perplexity", json_object_new_double(q.ppl_policy));
                json_object_object_add(jq, "perplexity_topk", json_object_new_double(q.ppl_topk));
                json_object_object_add(root, "quality", jq);
            }
            const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                                     JSON_C_TO_STRING_NOSLASHESCAPE);
            int wrc = json_stdout ? (printf("%s\n", s) < 0)
                                  : wd_emu_write_atomic(json_path, s, strlen(s), err, sizeof(err));
            json_object_put(root);
            if (wrc) {
                fprintf(stderr, "wdmoe generate: %s\n", json_stdout ? "cannot write stdout" : err);
                goto done;
            }
            if (!json_stdout) fprintf(stderr, "wrote %s\n", json_path);
        }
    }
    rc = wd_cli_interrupted() ? 130 : 0;
    goto done;
oom:
    fprintf(stderr, "wdmoe generate: out of memory\n");
done:
    if (records) wd_atomic_abort(&records_file);
    free(prompt_buf);
    free(ids);
    free(gpu_sms);
    free(all);
    free(scratch);
    free(logits);
    free(all_logits);
    free(lp_policy);
    wd_scheduler_free(sched);
    wd_session_free(eng.s);
#ifdef WD_HAVE_CUDA
    wd_cuda_model_free(eng.cm);
#endif
    wd_pool_destroy(pool);
    wd_model_free(m);
    if (have_sc) wd_scenario_free(&sc);
    return rc;
}
