/* The CUDA options shared by `wdmoe generate`, `wdmoe eval` and `wdmoe serve`:
 * GPUs, CUDA graphs, and the multi-process (multi-node) bootstrap, where rank
 * 0 writes a fresh NCCL unique id into a file that the other ranks read. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host/cli.h"
#ifdef WD_HAVE_CUDA
#include "host/cuda_runner.h"
#endif

const char *const wd_cli_cuda_help =
    "  --gpus N              GPUs of this process (default 1); emulated device d runs on GPU\n"
    "                        d mod (GPUs of all ranks), the BS on the first GPU of rank 0;\n"
    "                        GPUs exchange hidden states with NCCL\n"
    "  --gpu I               first CUDA device ordinal (default 0)\n"
    "  --no-cuda-graphs      decode launch by launch (default: CUDA graphs on one GPU)\n"
    "  --ranks R             processes of a multi-node run (default 1; see README)\n"
    "  --rank I              this process (0 drives the run; `wdmoe serve` runs the others)\n"
    "  --nccl-id FILE        multi-node bootstrap: rank 0 writes its NCCL id there, the\n"
    "                        other ranks wait for it (a shared path, new for every run)\n";

void wd_cli_cuda_init(wd_cli_cuda *o) {
    memset(o, 0, sizeof *o);
    o->gpus = 1;
    o->ranks = 1;
    o->graphs = 1;
}

int wd_cli_cuda_option(const char *cmd, int argc, char **argv, int *i, wd_cli_cuda *o) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--no-cuda-graphs")) {
        o->graphs = 0;
        return 1;
    }
    int *target = !strcmp(a, "--gpus")    ? &o->gpus
                  : !strcmp(a, "--gpu")   ? &o->gpu
                  : !strcmp(a, "--ranks") ? &o->ranks
                  : !strcmp(a, "--rank")  ? &o->rank
                                          : NULL;
    if (target) {
        int lo = target == &o->gpus || target == &o->ranks ? 1 : 0;
        if (!(v = wd_cli_value(cmd, argc, argv, i)) || wd_cli_int(cmd, a, v, lo, 64, target))
            return -1;
        return 1;
    }
    if (!strcmp(a, "--nccl-id")) {
        if (!(o->nccl_id_path = wd_cli_value(cmd, argc, argv, i))) return -1;
        return 1;
    }
    return 0;
}

int wd_cli_cuda_check(const char *cmd, const wd_cli_cuda *o, const char *backend, int serving) {
    if (o->rank >= o->ranks) {
        fprintf(stderr, "wdmoe %s: --rank %d is outside 0..%d (--ranks %d)\n", cmd, o->rank,
                o->ranks - 1, o->ranks);
        return 2;
    }
    if (o->ranks > 1 && !o->nccl_id_path) {
        fprintf(stderr, "wdmoe %s: --ranks %d needs --nccl-id FILE\n", cmd, o->ranks);
        return 2;
    }
    if (!serving && o->rank != 0) {
        fprintf(stderr, "wdmoe %s: runs as rank 0; the other ranks run `wdmoe serve`\n", cmd);
        return 2;
    }
    if (serving && (o->ranks < 2 || o->rank == 0)) {
        fprintf(stderr, "wdmoe %s: serves ranks 1.. of a multi-process run (--ranks R, --rank I)\n",
                cmd);
        return 2;
    }
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        fprintf(stderr, "wdmoe %s: unknown backend '%s' (cpu or cuda)\n", cmd, backend);
        return 2;
    }
#ifndef WD_HAVE_CUDA
    if (!strcmp(backend, "cuda")) {
        fprintf(stderr, "wdmoe %s: this build has no CUDA backend (nvcc was not found)\n", cmd);
        return 2;
    }
#endif
    return 0;
}

#ifdef WD_HAVE_CUDA
/* Rank 0: a fresh id, written atomically. Others: wait (up to 10 minutes) for
 * the file, which must hold exactly one id. */
static int exchange_id(const char *cmd, wd_cli_cuda *o) {
    const char *path = o->nccl_id_path;
    if (o->rank == 0) {
        int len = wd_cuda_nccl_unique_id(o->nccl_id, sizeof o->nccl_id);
        if (len <= 0) {
            fprintf(stderr, "wdmoe %s: no NCCL unique id (built without NCCL, or NCCL failed)\n",
                    cmd);
            return 1;
        }
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
        FILE *f = fopen(tmp, "wb");
        int ok = f && fwrite(o->nccl_id, 1, (size_t)len, f) == (size_t)len;
        if (f && fclose(f)) ok = 0;
        if (!ok || rename(tmp, path)) {
            fprintf(stderr, "wdmoe %s: %s: cannot write the NCCL id (%s)\n", cmd, path,
                    strerror(errno));
            remove(tmp);
            return 1;
        }
        return 0;
    }
    for (int tries = 0; tries < 6000; tries++) {
        if (tries == 20) fprintf(stderr, "wdmoe %s: rank %d waiting for %s\n", cmd, o->rank, path);
        FILE *f = fopen(path, "rb");
        if (f) {
            size_t got = fread(o->nccl_id, 1, sizeof o->nccl_id, f);
            int extra = fgetc(f) != EOF;
            fclose(f);
            if (got != sizeof o->nccl_id || extra) {
                fprintf(stderr, "wdmoe %s: %s: not an NCCL id (%zu bytes, expected %zu)\n", cmd,
                        path, got + (size_t)extra, sizeof o->nccl_id);
                return 1;
            }
            return 0;
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "wdmoe %s: %s: no NCCL id from rank 0 after 10 minutes\n", cmd, path);
    return 1;
}

void wd_cli_cuda_bootstrap_done(const wd_cli_cuda *o) {
    if (o->ranks > 1 && o->rank == 0 && o->nccl_id_path) remove(o->nccl_id_path);
}

int wd_cli_cuda_spec(const char *cmd, wd_cli_cuda *o, wd_cuda_model_spec *spec) {
    spec->gpu = o->gpu;
    spec->n_gpus = o->gpus;
    spec->n_ranks = o->ranks;
    spec->rank = o->rank;
    spec->use_graphs = o->graphs;
    if (o->ranks > 1) {
        if (exchange_id(cmd, o)) return 1;
        spec->nccl_id = o->nccl_id;
    }
    return 0;
}
#endif
