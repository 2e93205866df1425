/* SmolLM2's tokenizer, read from its GGUF, against Hugging Face `tokenizers`
 * (tests/ref_smollm2.py): the ids of 354 strings (code, Unicode, numbers,
 * whitespace runs, contractions, special tokens) and their decoding, single
 * bytes, and the ChatML chat template against jinja2's rendering of the GGUF's
 * tokenizer.chat_template. Skipped, visibly, without the model file
 * (bash weights/models/fetch_smollm2.sh). */
#include "tok_test_util.h"

#define DATA WD_SOURCE_DIR "/tests/data/smollm2/"
#define MODEL WD_SOURCE_DIR "/weights/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"

int main(void) {
    if (access(MODEL, R_OK) != 0)
        WD_TEST_SKIP("%s absent (bash weights/models/fetch_smollm2.sh)", MODEL);
    char err[512];
    wd_tokenizer *tok = NULL;
    CHECKF(wd_gguf_load_tokenizer(&tok, MODEL, err, sizeof(err)) == 0, "%s", err);
    if (!tok) return wd_test_finish("test_smollm2_tok");
    CHECK(!strcmp(wd_tokenizer_kind(tok), "smollm"));
    CHECK(wd_tokenizer_vocab_size(tok) == 49152 && !wd_tokenizer_add_bos(tok));
    int n = for_lines(DATA "tokenizer_cases.jsonl", check_ids, tok);
    CHECKF(n >= 300, "only %d tokenizer cases", n);
    /* a byte alone is its own token, which decodes to it (SmolLM2's vocab
     * lacks a few bytes, e.g. 0xC0 and 0xF5..0xFF: no token, as in tokenizers) */
    int n_bytes = 0;
    for (int b = 1; b < 256; b++) {
        char s[2] = {(char)b, 0};
        int *ids = NULL, ni = 0;
        CHECK(wd_tokenizer_encode(tok, s, 0, &ids, &ni) == 0 && ni <= 1);
        n_bytes += ni;
        char *d = wd_tokenizer_decode(tok, ids, ni);
        CHECKF(d && (ni == 0 || (d[0] == (char)b && d[1] == 0)), "byte 0x%02x", b);
        free(d);
        free(ids);
    }
    CHECKF(n_bytes >= 230, "only %d single-byte tokens", n_bytes);
    /* chat template: the GGUF's own, as jinja2 renders it */
    json_object *pr = json_object_from_file(DATA "prompt.json"), *text, *msgs;
    CHECK(pr && json_object_object_get_ex(pr, "text", &text) &&
          json_object_object_get_ex(pr, "messages", &msgs));
    if (pr) {
        json_object *m0 = json_object_array_get_idx(msgs, 0), *content;
        json_object_object_get_ex(m0, "content", &content);
        char *chat = wd_tokenizer_apply_chat(tok, json_object_get_string(content), err,
                                             sizeof(err));
        CHECKF(chat && !strcmp(chat, json_object_get_string(text)), "chat: \"%s\" vs \"%s\"",
               chat ? chat : err, json_object_get_string(text));
        json_object *pids;
        json_object_object_get_ex(pr, "ids", &pids);
        int *ids = NULL, ni = 0;
        CHECK(chat && wd_tokenizer_encode(tok, chat, 0, &ids, &ni) == 0);
        int same = ni == (int)json_object_array_length(pids);
        for (int i = 0; same && i < ni; i++)
            same = ids[i] == json_object_get_int(json_object_array_get_idx(pids, i));
        CHECKF(same, "ids of the chat prompt");
        free(ids);
        free(chat);
        json_object_put(pr);
    }
    wd_tokenizer_free(tok);
    return wd_test_finish("test_smollm2_tok");
}
