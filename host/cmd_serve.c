/* wdmoe serve: ranks 1.. of a multi-process (multi-node) GPU run. Loads the
 * model, uploads the experts of the emulated devices on this process's GPUs
 * and serves rank 0's expert calls (inputs and outputs over NCCL) until rank
 * 0 finishes. Rank 0 is `wdmoe generate --backend cuda --ranks R --rank 0`. */
#include <stdio.h>
#include <string.h>

#include "host/cli.h"
#include "host/host.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: wdmoe serve --model PATH --ranks R --rank I --nccl-id FILE [options]\n\n"
            "Serve the experts of a multi-process GPU run (one process per node): rank 0 is\n"
            "`wdmoe generate --backend cuda --ranks R --rank 0 --nccl-id FILE ...`; every\n"
            "other rank runs this with the same model, --gpus and --nccl-id.\n\n"
            "options:\n"
            "  --model PATH          the model rank 0 runs (a path every node can read)\n");
    fputs(wd_cli_cuda_help, f);
    fprintf(f, "  -h, --help            this help\n");
}

int wd_cmd_serve(int argc, char **argv) {
    const char *cmd = "serve", *model_path = NULL;
    wd_cli_cuda gpu;
    wd_cli_cuda_init(&gpu);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int used = wd_cli_cuda_option(cmd, argc, argv, &i, &gpu);
        if (used < 0) return 2;
        if (used) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            if (!(model_path = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else {
            fprintf(stderr, "wdmoe serve: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "wdmoe serve: --model is required (see --help)\n");
        return 2;
    }
    if (wd_cli_cuda_check(cmd, &gpu, "cuda", 1)) return 2;
#ifndef WD_HAVE_CUDA
    return 2; /* said by wd_cli_cuda_check */
#else
    char err[2048];
    wd_model *m = NULL;
    if (wd_model_load(&m, model_path, err, sizeof(err))) {
        fprintf(stderr, "wdmoe serve: %s\n", err);
        return 1;
    }
    wd_cuda_model_spec spec;
    wd_cuda_model_spec_default(&spec);
    wd_cuda_model *cm = NULL;
    char log[8192] = "";
    int rc = 1, layers = 0;
    if (wd_cli_cuda_spec(cmd, &gpu, &spec)) goto done;
    if (wd_cuda_model_create(&cm, m, &spec, log, sizeof(log), err, sizeof(err))) {
        fprintf(stderr, "wdmoe serve: %s\n", err);
        goto done;
    }
    fprintf(stderr, "%s", log);
    fprintf(stderr, "wdmoe serve: rank %d of %d serving\n", gpu.rank, gpu.ranks);
    if (wd_cuda_model_serve(cm, &layers, err, sizeof(err))) {
        fprintf(stderr, "wdmoe serve: %s\n", err);
        goto done;
    }
    fprintf(stderr, "wdmoe serve: rank %d done: %d layer calls served\n", gpu.rank, layers);
    rc = 0;
done:
    wd_cuda_model_free(cm);
    wd_model_free(m);
    return rc;
#endif
}
