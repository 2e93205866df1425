/* libFuzzer: a Hugging Face tokenizer.json through wd_tokenizer_load_json;
 * an accepted vocab then encodes and decodes a few texts. */
#include "tests/fuzz/fuzz_util.h"

static void exercise(const wd_tokenizer *tok, const char *text) {
    int *ids = NULL, n = 0;
    if (wd_tokenizer_encode(tok, text, 1, &ids, &n)) return;
    int V = wd_tokenizer_vocab_size(tok);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) abort();
    char *s = wd_tokenizer_decode(tok, ids, n);
    free(s);
    char piece[64];
    for (int i = 0; i < n; i++) wd_tokenizer_piece(tok, i ? ids[i - 1] : -1, ids[i], piece, 64);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "tokenizer.json", data, size);
    wd_tokenizer *tok = NULL;
    if (wd_tokenizer_load_json(&tok, path, err, sizeof err)) {
        fz_check_err(err, "tokenizer.json");
        return 0;
    }
    exercise(tok, "Once upon a time, there was a little girl.");
    exercise(tok, "  tabs\tand\nnewlines  \xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80 <s></s>");
    exercise(tok, "\xFF\xFE invalid UTF-8 \xC3");
    exercise(tok, "");
    char piece[64];
    int V = wd_tokenizer_vocab_size(tok);
    for (int id = 0; id < V && id < 1024; id++) wd_tokenizer_piece(tok, -1, id, piece, 64);
    wd_tokenizer_free(tok);
    return 0;
}
