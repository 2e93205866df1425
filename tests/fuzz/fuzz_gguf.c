/* libFuzzer: a GGUF file through wd_gguf_open (tensors, config, SPM vocab)
 * and wd_gguf_load_tokenizer; an accepted vocab encodes a text. */
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "model.gguf", data, size);
    wd_tensors *ts = NULL;
    wd_tokenizer *tok = NULL;
    wd_config cfg;
    if (wd_gguf_open(&ts, &cfg, &tok, path, err, sizeof err)) {
        fz_check_err(err, "model.gguf");
    } else {
        volatile unsigned char sink = 0;
        for (int i = 0; i < wd_tensors_count(ts); i++) {
            const wd_tensor *t = wd_tensors_at(ts, i);
            if (t->nbytes) sink ^= ((const unsigned char *)t->data)[t->nbytes - 1];
        }
        (void)sink;
        wd_tensors_free(ts);
        wd_tokenizer_free(tok);
    }
    err[0] = 0;
    if (wd_gguf_load_tokenizer(&tok, path, err, sizeof err)) {
        fz_check_err(err, "model.gguf");
        return 0;
    }
    int *ids = NULL, n = 0;
    if (!wd_tokenizer_encode(tok, "Hello world, \xC3\xA9t\xC3\xA9 ab", 1, &ids, &n)) {
        char *s = wd_tokenizer_decode(tok, ids, n);
        free(s);
        free(ids);
    }
    wd_tokenizer_free(tok);
    return 0;
}
