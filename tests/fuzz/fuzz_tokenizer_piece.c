/* libFuzzer: long and odd tokens through the piece/decode path. The input,
 * split at '\n' (at most 32 parts), gives the added tokens of a byte-fallback
 * vocab (any length: a piece is not bounded by a caller's buffer); the whole
 * input is then encoded. Checked: every id in range; the pieces, each read
 * through a 16-byte buffer and again at its full length, concatenate to
 * wd_tokenizer_decode's bytes (which may hold NUL bytes: <0x00>), then its
 * terminating NUL. */
#include <json-c/json.h>

#include "tests/fuzz/fuzz_util.h"

#define FZ_MAX_ADDED 32

static void fz_piece_check(const wd_tokenizer *tok, const int *ids, int n) {
    char *dec = wd_tokenizer_decode(tok, ids, n);
    if (!dec) return; /* out of memory */
    size_t pos = 0; /* decode allocates 1 + the tokens' lengths: pieces are no longer */
    for (int i = 0; i < n; i++) {
        char small[16];
        int prev = i ? ids[i - 1] : -1, len = wd_tokenizer_piece(tok, prev, ids[i], small, 16);
        if (len < 0) abort();
        char *full = malloc((size_t)len + 1);
        if (!full) break;
        if (wd_tokenizer_piece(tok, prev, ids[i], full, len) != len) abort();
        if (memcmp(full, small, (size_t)(len < 16 ? len : 16)) != 0) abort();
        if (memcmp(full, dec + pos, (size_t)len) != 0) abort();
        pos += (size_t)len;
        free(full);
    }
    if (dec[pos] != 0) abort();
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_object *root = json_object_new_object(), *model = json_object_new_object();
    json_object *vocab = json_object_new_object(), *added = json_object_new_array();
    const char *special[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) {
        json_object_object_add(vocab, special[i], json_object_new_int(i));
        json_object *a = json_object_new_object();
        json_object_object_add(a, "id", json_object_new_int(i));
        json_object_object_add(a, "content", json_object_new_string(special[i]));
        json_object_object_add(a, "special", json_object_new_boolean(1));
        json_object_array_add(added, a);
    }
    for (int b = 0; b < 256; b++) {
        char k[8];
        snprintf(k, sizeof k, "<0x%02X>", b);
        json_object_object_add(vocab, k, json_object_new_int(3 + b));
    }
    int id = 259;
    for (size_t i = 0; i < size && id < 259 + FZ_MAX_ADDED;) {
        const uint8_t *e = memchr(data + i, '\n', size - i);
        size_t len = e ? (size_t)(e - (data + i)) : size - i;
        if (len) {
            json_object *a = json_object_new_object();
            json_object_object_add(a, "id", json_object_new_int(id++));
            json_object_object_add(a, "content",
                                   json_object_new_string_len((const char *)data + i, (int)len));
            json_object_object_add(a, "special", json_object_new_boolean(data[i] == '<'));
            json_object_array_add(added, a);
        }
        i += len + 1;
    }
    json_object_object_add(model, "type", json_object_new_string("BPE"));
    json_object_object_add(model, "byte_fallback", json_object_new_boolean(1));
    json_object_object_add(model, "vocab", vocab);
    json_object_object_add(model, "merges", json_object_new_array());
    json_object_object_add(root, "model", model);
    json_object_object_add(root, "added_tokens", added);
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "tokenizer.json", (const uint8_t *)js, strlen(js));
    json_object_put(root);
    wd_tokenizer *tok = NULL;
    if (wd_tokenizer_load_json(&tok, path, err, sizeof err)) {
        fz_check_err(err, "tokenizer.json");
        return 0;
    }
    char *text = malloc(size + 1);
    if (text) {
        memcpy(text, data, size);
        text[size] = 0; /* up to the first NUL */
        int *ids = NULL, n = 0;
        if (!wd_tokenizer_encode(tok, text, 1, &ids, &n)) {
            int V = wd_tokenizer_vocab_size(tok);
            for (int i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= V) abort();
            fz_piece_check(tok, ids, n);
        }
        free(ids);
        free(text);
    }
    int all[FZ_MAX_ADDED + 4], na = 0; /* every added token, after BOS */
    for (int i = 1; i < id && na < FZ_MAX_ADDED + 4; i = i == 2 ? 259 : i + 1) all[na++] = i;
    fz_piece_check(tok, all, na);
    wd_tokenizer_free(tok);
    return 0;
}
