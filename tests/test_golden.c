/* Real model, golden: greedy decoding from BOS of stories260k (both MoE forms,
 * and the GGUF file) reproduces llama2.c's published 201 ids exactly, and the
 * decoded text equals greedy-200.txt byte for byte. */
#include <json-c/json.h>

#include "host/host.h"
#include "test_util.h"

#define MODELS WD_SOURCE_DIR "/weights/models/stories260k"

static int load_golden(int *ids, int cap) {
    json_object *a = json_object_from_file(MODELS "/greedy_tokens.json");
    if (!a || !json_object_is_type(a, json_type_array)) return -1;
    int n = (int)json_object_array_length(a);
    for (int i = 0; i < n && i < cap; i++)
        ids[i] = json_object_get_int(json_object_array_get_idx(a, i));
    json_object_put(a);
    return n;
}

static void check_model(const char *path, const int *golden, int n_golden, const char *text,
                        int threads) {
    char err[512];
    wd_model *m;
    if (wd_model_load(&m, path, err, sizeof(err))) {
        CHECKF(0, "load %s: %s", path, err);
        return;
    }
    wd_pool *pool = wd_pool_create(threads);
    wd_session *s = wd_session_create(m, 0, pool);
    float *logits = malloc((size_t)m->cfg.vocab * sizeof(float));
    int ids[512], n = 0, mismatch = -1;
    ids[n++] = m->cfg.bos_id;
    while (n < n_golden) {
        if (wd_forward(s, &ids[n - 1], 1, logits, 0, err, sizeof(err))) {
            CHECKF(0, "%s: %s", path, err);
            break;
        }
        ids[n] = wd_sample(logits, m->cfg.vocab, 0, 1, NULL, NULL);
        if (ids[n] != golden[n] && mismatch < 0) mismatch = n;
        n++;
    }
    CHECKF(mismatch < 0, "%s (%d threads): first mismatch at position %d", path, threads,
           mismatch);
    CHECK(ids[0] == golden[0]);
    if (m->tok) {
        char *dec = wd_tokenizer_decode(m->tok, ids, n);
        CHECKF(dec && text && !strcmp(dec, text), "%s: decoded text differs from greedy-200.txt",
               path);
        free(dec);
    }
    printf("%s (%d threads): %d/%d ids match\n", path, threads,
           mismatch < 0 ? n : mismatch, n_golden);
    free(logits);
    wd_session_free(s);
    wd_pool_destroy(pool);
    wd_model_free(m);
}

int main(void) {
    int golden[512];
    int n = load_golden(golden, 512);
    CHECK(n == 201);
    if (n != 201) return wd_test_finish("test_golden");
    char *text = wd_test_read_file(MODELS "/greedy-200.txt", NULL);
    CHECK(text != NULL);
    check_model(MODELS "/moe4-top2", golden, n, text, 1);
    check_model(MODELS "/moe4-top2", golden, n, text, 2);
    check_model(MODELS "/sliced4-top4", golden, n, text, 2);
    check_model(MODELS "/moe4-top2.gguf", golden, n, text, 2);
    free(text);
    return wd_test_finish("test_golden");
}
