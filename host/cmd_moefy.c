/* wdmoe moefy: a dense Llama model -> a Mixtral-layout MoE (host/moefy.c). */
#include <stdio.h>
#include <string.h>

#include "host/cli.h"
#include "host/host.h"

int wd_cmd_moefy(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: wdmoe moefy --model DENSE --out DIR [options]\n\n"
            "Turns a dense Llama model (GGUF or Hugging Face folder) into a Mixtral-layout\n"
            "MoE: each layer's FFN neurons split into E equal experts by balanced clustering\n"
            "of their co-activation on text the model generates itself from a few neutral\n"
            "prompts, a learned linear router per layer (ranks experts by output norm), and\n"
            "the plain sum of the chosen experts as the combine: with all E experts the\n"
            "output is the dense model's. A GGUF gives DIR/model.gguf; a folder gives\n"
            "DIR/config.json, model.safetensors, tokenizer.json. DIR/moefy.json describes\n"
            "the run. See docs/moefication.md.\n\n"
            "  --model PATH          the dense model (.gguf or folder)\n"
            "  --out DIR             output folder (created if needed)\n"
            "  --experts E           experts per layer (default 8; must divide the FFN width)\n"
            "  --top-k K             experts per token written into the config (default 3E/4\n                        rounded up: 6 of 8)\n"
            "  --calib-tokens N      calibration tokens (default 1024)\n"
            "  --seq-len N           tokens per calibration sequence (default 128)\n"
            "  --seed S              sampling and clustering seed (default 1)\n"
            "  --threads N           worker threads (default: all CPUs)\n"
            "  --quiet               no progress\n"
            "  --help\n");
}

int wd_cmd_moefy(int argc, char **argv) {
    const char *C = "moefy", *model = NULL, *out = NULL, *v;
    wd_moefy_opts o;
    wd_moefy_default(&o);
    o.progress = stderr;
    int threads = 0, seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (!strcmp(a, "--quiet")) {
            o.progress = NULL;
        } else if (!strcmp(a, "--model")) {
            if (!(model = wd_cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--out")) {
            if (!(out = wd_cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--experts")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 2, 64, &o.n_experts))
                return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 1, 64, &o.top_k))
                return 2;
        } else if (!strcmp(a, "--calib-tokens")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) ||
                wd_cli_int(C, a, v, 16, 1 << 20, &o.calib_tokens))
                return 2;
        } else if (!strcmp(a, "--seq-len")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 2, 1 << 16, &o.seq_len))
                return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 0, 2147483647, &seed))
                return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 1, 1024, &threads))
                return 2;
        } else {
            fprintf(stderr, "wdmoe moefy: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !out) {
        fprintf(stderr, "wdmoe moefy: --model and --out are required (see --help)\n");
        return 2;
    }
    o.seed = (uint64_t)seed;
    char err[1024];
    wd_model *m = NULL;
    if (wd_model_load(&m, model, err, sizeof err)) {
        fprintf(stderr, "wdmoe moefy: %s\n", err);
        return 1;
    }
    wd_pool *pool = wd_pool_create(threads);
    if (!pool) {
        fprintf(stderr, "wdmoe moefy: cannot create the thread pool\n");
        wd_model_free(m);
        return 1;
    }
    int rc = wd_moefy(m, out, &o, pool, err, sizeof err);
    if (rc) fprintf(stderr, "wdmoe moefy: %s\n", err);
    else if (o.progress) fprintf(o.progress, "moefy: wrote %s\n", out);
    wd_pool_destroy(pool);
    wd_model_free(m);
    return rc ? 1 : 0;
}
