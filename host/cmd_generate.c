/* wdmoe generate: text from a prompt, printed as it is produced, with a
 * prefill/decode throughput summary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/cli.h"
#include "host/host.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: wdmoe generate --model PATH [options]\n\n"
            "Generate text with a Mixtral-architecture MoE model (Hugging Face folder or .gguf).\n\n"
            "options:\n"
            "  --model PATH        model folder (config.json, *.safetensors, tokenizer.json) or .gguf\n"
            "  --prompt TEXT       prompt (default: empty, generation starts from BOS)\n"
            "  -n, --steps N       tokens to generate (default 128)\n"
            "  --temperature T     sampling temperature, 0 = greedy (default 0)\n"
            "  --top-p P           nucleus sampling mass in (0, 1] (default 0.9)\n"
            "  --seed S            random seed (default 42)\n"
            "  --threads N         CPU threads (default: all cores)\n"
            "  --ctx N             context length (default: model's max_position_embeddings)\n"
            "  --ids               also print the token ids (BOS first) after the text\n"
            "  -h, --help          this help\n");
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int wd_cmd_generate(int argc, char **argv) {
    const char *cmd = "generate", *model_path = NULL, *prompt = "";
    int steps = 128, threads = 0, ctx = 0, seed = 42, print_ids = 0;
    double temperature = 0, top_p = 0.9;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--ids")) {
            print_ids = 1;
        } else if (!strcmp(a, "--model")) {
            if (!(model_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--prompt")) {
            if (!(prompt = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--steps")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_int(cmd, a, v, 0, 1 << 20, &steps))
                return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!(v = wd_cli_value(cmd, argc, argv, &i)) ||
                wd_cli_int(cmd, a, v, 0, 1024, &threads))
                return 2;
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
    char err[1024];
    wd_model *m;
    if (wd_model_load(&m, model_path, err, sizeof(err))) {
        fprintf(stderr, "wdmoe generate: %s\n", err);
        return 1;
    }
    int rc = 1;
    wd_pool *pool = NULL;
    wd_session *s = NULL;
    int *ids = NULL, n_ids = 0, *all = NULL, *scratch = NULL;
    float *logits = NULL;
    if (!m->tok) {
        fprintf(stderr, "wdmoe generate: %s: no tokenizer.json\n", model_path);
        goto done;
    }
    if (wd_tokenizer_encode(m->tok, prompt, 1, &ids, &n_ids)) {
        fprintf(stderr, "wdmoe generate: cannot encode the prompt\n");
        goto done;
    }
    pool = wd_pool_create(threads);
    s = pool ? wd_session_create(m, ctx, pool) : NULL;
    logits = malloc((size_t)m->cfg.vocab * n_ids * sizeof(float));
    all = malloc((size_t)(n_ids + steps) * sizeof(int));
    scratch = malloc((size_t)m->cfg.vocab * sizeof(int));
    if (!s || !logits || !all || !scratch) {
        fprintf(stderr, "wdmoe generate: out of memory\n");
        goto done;
    }
    if (n_ids + steps > wd_session_max_ctx(s)) {
        steps = wd_session_max_ctx(s) - n_ids;
        if (steps < 0) {
            fprintf(stderr, "wdmoe generate: the prompt (%d tokens) exceeds the context (%d)\n",
                    n_ids, wd_session_max_ctx(s));
            goto done;
        }
        fprintf(stderr, "wdmoe generate: generating %d tokens to stay within the context\n",
                steps);
    }
    memcpy(all, ids, (size_t)n_ids * sizeof(int));
    wd_rng rng;
    wd_rng_seed(&rng, (uint64_t)seed);
    /* the prompt as given (decoded back so the printed text is what the model sees) */
    for (int i = 0; i < n_ids; i++) {
        char piece[256];
        int len = wd_tokenizer_piece(m->tok, i ? ids[i - 1] : -1, ids[i], piece, sizeof(piece));
        fwrite(piece, 1, (size_t)len, stdout);
    }
    fflush(stdout);
    double t0 = now_s();
    if (wd_forward(s, ids, n_ids, logits, 0, err, sizeof(err))) {
        fprintf(stderr, "\nwdmoe generate: %s\n", err);
        goto done;
    }
    double t_prefill = now_s() - t0;
    int n_all = n_ids, produced = 0, n_decode = 0;
    double t1 = now_s();
    for (int step = 0; step < steps; step++) {
        int next = wd_sample(logits, m->cfg.vocab, (float)temperature, (float)top_p, &rng, scratch);
        all[n_all++] = next;
        produced++;
        if (next == m->cfg.eos_id) break;
        char piece[256];
        int len = wd_tokenizer_piece(m->tok, all[n_all - 2], next, piece, sizeof(piece));
        fwrite(piece, 1, (size_t)len, stdout);
        fflush(stdout);
        if (step + 1 < steps) {
            if (wd_forward(s, &next, 1, logits, 0, err, sizeof(err))) {
                fprintf(stderr, "\nwdmoe generate: %s\n", err);
                goto done;
            }
            n_decode++;
        }
    }
    double t_decode = now_s() - t1;
    printf("\n");
    if (print_ids) {
        printf("ids:");
        for (int i = 0; i < n_all; i++) printf(" %d", all[i]);
        printf("\n");
    }
    fprintf(stderr,
            "prefill: %d tokens in %.2f ms (%.1f tok/s) | decode: %d steps in %.2f ms "
            "(%.1f tok/s) | threads %d\n",
            n_ids, t_prefill * 1e3, n_ids / (t_prefill > 0 ? t_prefill : 1e-9), n_decode,
            t_decode * 1e3, n_decode / (t_decode > 0 ? t_decode : 1e-9), wd_pool_size(pool));
    rc = 0;
done:
    free(ids);
    free(all);
    free(scratch);
    free(logits);
    wd_session_free(s);
    wd_pool_destroy(pool);
    wd_model_free(m);
    return rc;
}
