/* libFuzzer: a safetensors file (header JSON + byte ranges) through wd_safetensors_open. */
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "model.safetensors", data, size);
    wd_tensors *ts = NULL;
    if (wd_safetensors_open(&ts, path, err, sizeof err)) {
        fz_check_err(err, "model.safetensors");
        return 0;
    }
    /* every accepted tensor lies inside the mapping: touch its first and last byte */
    volatile unsigned char sink = 0;
    for (int i = 0; i < wd_tensors_count(ts); i++) {
        const wd_tensor *t = wd_tensors_at(ts, i);
        if (!wd_tensors_find(ts, t->name)) abort();
        if (t->nbytes) sink ^= ((const unsigned char *)t->data)[0] ^
                              ((const unsigned char *)t->data)[t->nbytes - 1];
    }
    (void)sink;
    wd_tensors_free(ts);
    return 0;
}
