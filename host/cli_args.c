/* One option convention for every `wdmoe` command, applied before the
 * command parses its arguments (GNU getopt_long's conventions):
 *
 *   --name VALUE and --name=VALUE are the same;
 *   llama.cpp's short aliases where the meaning is the same: -m (--model),
 *   -p (--prompt), -f (--prompt-file), -t (--threads), -c (--ctx),
 *   -s (--seed), --temp (--temperature); -h is --help everywhere.
 *
 * (-n, generate's own spelling of --steps, is the command's.) A command's
 * table says which of its options take a value, so a value is
 * never mistaken for an option (`--prompt -p` keeps "-p" as the prompt).
 * tests/test_cli_options.sh checks every table against the command's --help. */
#include <stdlib.h>
#include <string.h>

#include "host/cli.h"

typedef struct {
    const char *cmd;
    const char *const *value_opts; /* options that take a value */
} cmd_opts;

#define CUDA_VALUE_OPTS "--gpus", "--gpu", "--ranks", "--rank", "--nccl-id"

static const char *const generate_v[] = {
    "--model", "--prompt", "--prompt-file", "--prompt-ids", "--logits", "--top-k", "--router",
    "-n", "--steps", "--temperature", "--top-p", "--seed", "--threads", "--ctx",
    "--backend", "--scenario", "--policy", "--json", "--records", "--record-probs",
    CUDA_VALUE_OPTS, NULL};
static const char *const eval_v[] = {
    "--model", "--task", "--data", "--limit", "--seed", "--shots", "--scenario", "--policy",
    "--max-new-tokens", "--window", "--stride", "--ctx", "--threads", "--backend", "--out",
    "--json", "--records", "--top-k", "--router", CUDA_VALUE_OPTS, NULL};
static const char *const trace_v[] = {"--scenario", "--duration", "--out", "--period", "--seed",
                                      NULL};
static const char *const replay_v[] = {"--probs", "--scenario", "--policy", "--tokens", "--out",
                                       "--json",  "--seed",     NULL};
static const char *const serve_v[] = {"--model", CUDA_VALUE_OPTS, NULL};
static const char *const serve_cell_v[] = {
    "--model",       "--scenario",    "--policy", "--users",       "--rate",   "--trace",
    "--prompts",     "--max-new",     "--chunk",  "--kv-budget-mb", "--max-batch",
    "--tpot-slo-ms", "--ttft-slo-ms", "--seed",   "--temperature", "--top-p",  "--threads",
    "--json",        "--micro-batches", NULL};

static const char *const moefy_v[] = {"--model",        "--out",     "--experts", "--top-k",
                                      "--calib-tokens", "--seq-len", "--seed",    "--threads",
                                      NULL};
static const char *const tokenize_v[] = {"--model", "--text", "-f", NULL};

static const cmd_opts tables[] = {
    {"generate", generate_v}, {"eval", eval_v}, {"trace", trace_v},
    {"replay", replay_v},     {"serve", serve_v}, {"serve-cell", serve_cell_v},
    {"moefy", moefy_v},       {"tokenize", tokenize_v},
};

static const struct {
    const char *alias, *name;
} aliases[] = {
    {"-m", "--model"},   {"-p", "--prompt"}, {"-f", "--prompt-file"},
    {"-t", "--threads"}, {"-c", "--ctx"},    {"-s", "--seed"}, {"--temp", "--temperature"},
};

static int in_list(const char *const *list, const char *name, size_t len) {
    for (; list && *list; list++)
        if (strlen(*list) == len && !strncmp(*list, name, len)) return 1;
    return 0;
}

static const char *const *table_of(const char *cmd) {
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (!strcmp(tables[i].cmd, cmd)) return tables[i].value_opts;
    return NULL;
}

/* the long name of an alias when the command has that option (or the alias
   stays itself: a command's own short options, -n of generate, keep working) */
static const char *unalias(const char *const *v, const char *tok) {
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(tok, aliases[i].alias) && in_list(v, aliases[i].name, strlen(aliases[i].name)))
            return aliases[i].name;
    return tok;
}

char **wd_cli_normalize(const char *cmd, int argc, char **argv, int *out_argc) {
    const char *const *v = table_of(cmd);
    /* each argument becomes at most two */
    char **out = calloc((size_t)2 * argc + 1, sizeof *out);
    if (!out) return NULL;
    int n = 0;
    for (int i = 0; i < argc; i++) {
        char *tok = argv[i];
        if (i == 0 || !v) { /* the command name; a command without a table is left alone */
            out[n++] = tok;
            continue;
        }
        char *eq = tok[0] == '-' && tok[1] == '-' ? strchr(tok, '=') : NULL;
        if (eq) { /* --name=VALUE (or --alias=VALUE) of an option that takes a value */
            *eq = '\0'; /* argv's strings are the program's to modify */
            const char *name = unalias(v, tok);
            if (in_list(v, name, strlen(name))) {
                out[n++] = (char *)name;
                out[n++] = eq + 1;
                continue;
            }
            *eq = '='; /* not one: the command reports it as it stands */
        }
        const char *name = unalias(v, tok);
        out[n++] = (char *)name;
        if (in_list(v, name, strlen(name)) && i + 1 < argc) out[n++] = argv[++i]; /* its value */
    }
    out[n] = NULL;
    *out_argc = n;
    return out;
}
