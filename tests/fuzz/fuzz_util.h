/* Shared by the libFuzzer targets (tests/fuzz/fuzz_*.c): a private temporary
 * folder per process, removed at exit, and a writer for the input file. The
 * real loaders read from paths, so each input is written to a file there.
 * Process-wide state is fine here: these are test programs, not libraries. */
#ifndef WD_FUZZ_UTIL_H
#define WD_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weights/weights.h"

static char fz_dir_buf[512];

static int fz_rm(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}
static void fz_cleanup(void) {
    if (fz_dir_buf[0]) nftw(fz_dir_buf, fz_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* The folder (created on first use). */
static const char *fz_dir(void) {
    if (!fz_dir_buf[0]) {
        /* memory-backed when possible: rewriting a file on ext4 flushes it */
        const char *t = getenv("TMPDIR");
        if (!t || !*t) t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fz_dir_buf, sizeof fz_dir_buf, "%s/wdmoe_fuzz_XXXXXX", t);
        if (!mkdtemp(fz_dir_buf)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fz_cleanup);
    }
    return fz_dir_buf;
}

/* fz_dir()/name, written with the input; returns the path (static buffer per call site). */
__attribute__((unused)) static const char *fz_write(char *path, size_t cap, const char *name, const uint8_t *data,
                            size_t size) {
    snprintf(path, cap, "%s/%s", fz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
    return path;
}

/* A loader's message must name the file. (Not checked: that it is one line;
 * messages quote names and keys from the input, which may hold newlines.) */
__attribute__((unused)) static void fz_check_err(const char *err, const char *must_contain) {
    if (!err[0] || (must_contain && !strstr(err, must_contain))) {
        fprintf(stderr, "bad error message: '%s' (must name '%s')\n", err,
                must_contain ? must_contain : "");
        abort();
    }
}

/* The tiny model the seeds and fixtures are made of. */
__attribute__((unused)) static void fz_tiny_spec(wd_synth_spec *s) {
    wd_synth_default(s);
    s->hidden = 16, s->n_layers = 1, s->n_heads = 2, s->n_kv_heads = 1, s->head_dim = 8;
    s->ffn = 8, s->n_experts = 2, s->top_k = 1, s->vocab = 260, s->max_pos = 64, s->tied = 1;
    s->seed = 7;
}

#endif
