/* wdmoe: the command-line entry point. One table of subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cli.h"
#include "host/host.h"

static const wd_command commands[] = {
    {"generate", "generate text from a prompt (optionally over an emulated wireless scenario)",
     wd_cmd_generate},
    {"eval", "accuracy (multiple choice, GSM8K, perplexity) and latency of a policy on a dataset",
     wd_cmd_eval},
    {"tokenize", "print the token ids of a text with the model's tokenizer", wd_cmd_tokenize},
    {"trace", "write per-device channel rate traces (CSV) of a scenario", wd_cmd_trace},
    {"replay", "re-run only the emulation on recorded router probabilities, for sweeps",
     wd_cmd_replay},
    {"serve-cell", "many users through one BS: continuous batching, device queues, energy",
     wd_cmd_serve_cell},
    {"moefy", "turn a dense Llama model into a Mixtral-layout MoE (experts, learned routers)",
     wd_cmd_moefy},
    {"serve", "serve the experts of ranks 1.. of a multi-node GPU run", wd_cmd_serve},
};
static const int n_commands = (int)(sizeof(commands) / sizeof(commands[0]));

static void usage(FILE *f) {
    fprintf(f,
            "wdmoe: emulator of wireless distributed Mixture-of-Experts LLM inference\n\n"
            "usage: wdmoe COMMAND [options]    (wdmoe COMMAND --help for its options)\n\n"
            "commands:\n");
    for (int i = 0; i < n_commands; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("wdmoe %s (%s)\n", wd_version(), wd_git_commit());
        return 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            int n;
            char **args = wd_cli_normalize(commands[i].name, argc - 1, argv + 1, &n);
            if (!args) {
                fprintf(stderr, "wdmoe: out of memory\n");
                return 1;
            }
            int rc = commands[i].run(n, args);
            free(args);
            return rc;
        }
    fprintf(stderr, "wdmoe: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
