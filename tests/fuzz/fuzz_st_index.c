/* libFuzzer: model.safetensors.index.json of a sharded model folder. The
 * folder holds the shards of a tiny synthetic model (as fuzz_seeds writes
 * them); the input replaces its index. */
#include "tests/fuzz/fuzz_util.h"

static char model_dir[600];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    wd_synth_spec s;
    char err[1024];
    fz_tiny_spec(&s);
    s.max_shard_bytes = 2048;
    snprintf(model_dir, sizeof model_dir, "%s/m", fz_dir());
    if (wd_synth_write(model_dir, &s, err, sizeof err)) {
        fprintf(stderr, "fuzz_st_index: %s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[700], err[1024] = "";
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", model_dir);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) abort();
    wd_tensors *ts = NULL;
    if (wd_safetensors_open(&ts, model_dir, err, sizeof err)) {
        fz_check_err(err, fz_dir());
        return 0;
    }
    for (int i = 0; i < wd_tensors_count(ts); i++)
        if (!wd_tensors_find(ts, wd_tensors_at(ts, i)->name)) abort();
    wd_tensors_free(ts);
    return 0;
}
