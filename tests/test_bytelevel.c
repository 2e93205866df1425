/* Byte-level BPE against Hugging Face `tokenizers`, no model needed:
 * - smollm2/pretok_cases.jsonl (tests/ref_smollm2.py): the pieces of the
 *   smollm, llama-bpe, qwen2 and deepseek-llm pre-tokenizers (tokenizers'
 *   Split(Regex, isolated)) on 354 strings;
 * - bytelevel/<name>.json + .ids.jsonl (tests/ref_bytelevel.py): a small BPE
 *   trained by tokenizers with each pre-tokenizer, read as tokenizer.json, and
 *   its ids of the same strings (decoding round-trips);
 * - tokenizer_config.json keys; unsupported tokenizer.json pre-tokenizers.
 * SmolLM2's own vocabulary: test_smollm2_tok. */
#include "tok_test_util.h"

#define DATA WD_SOURCE_DIR "/tests/data/smollm2/"

static int pretok_of(const char *name) {
    return wd_tok_pretok_by_name(name, strlen(name));
}

static void check_pretok(json_object *o, void *ctx) {
    int *counts = ctx;
    json_object *pre, *text, *ends;
    json_object_object_get_ex(o, "pre", &pre);
    json_object_object_get_ex(o, "text", &text);
    json_object_object_get_ex(o, "ends", &ends);
    int p = pretok_of(json_object_get_string(pre));
    CHECKF(p >= 0, "pre-tokenizer %s unknown", json_object_get_string(pre));
    if (p < 0) return;
    const char *s = json_object_get_string(text);
    int *e = NULL, n = 0;
    CHECK(wd_tok_pretokenize(p, s, (size_t)json_object_get_string_len(text), &e, &n) == 0);
    int want = (int)json_object_array_length(ends), same = n == want;
    for (int i = 0; same && i < n; i++)
        same = e[i] == json_object_get_int(json_object_array_get_idx(ends, i));
    CHECKF(same, "%s on \"%s\": %d pieces, want %d %s", json_object_get_string(pre), s, n, want,
           json_object_to_json_string(ends));
    counts[p]++;
    free(e);
}

static void check_json_tokenizers(void) {
    const char *names[] = {"gpt2", "smollm", "llama-bpe", "qwen2", "deepseek-llm"};
    for (int i = 0; i < 5; i++) {
        char path[512], err[512];
        snprintf(path, sizeof(path), WD_SOURCE_DIR "/tests/data/bytelevel/%s.json", names[i]);
        wd_tokenizer *tok = NULL;
        CHECKF(wd_tokenizer_load_json(&tok, path, err, sizeof(err)) == 0, "%s", err);
        if (!tok) continue;
        CHECKF(!strcmp(wd_tokenizer_kind(tok), names[i]), "%s: kind %s", path,
               wd_tokenizer_kind(tok));
        CHECK(!wd_tokenizer_add_bos(tok));
        snprintf(path, sizeof(path), WD_SOURCE_DIR "/tests/data/bytelevel/%s.ids.jsonl", names[i]);
        int n = for_lines(path, check_ids, tok);
        CHECKF(n >= 300, "%s: %d cases", path, n);
        wd_tokenizer_free(tok);
    }
    /* tokenizer_config.json beside it: bos_token, add_bos_token, chat_template */
    {
        char dir[512], path[600], err[512];
        snprintf(dir, sizeof(dir), WD_BINARY_DIR "/tmp_bytelevel_cfg");
        snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
        char cmd[1400];
        snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp " WD_SOURCE_DIR
                 "/tests/data/bytelevel/smollm.json %s/tokenizer.json", dir, dir);
        CHECK(system(cmd) == 0);
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (f) {
            fputs("{\"bos_token\": \"<|im_start|>\", \"add_bos_token\": true, \"chat_template\": "
                  "\"{{'<|im_start|>system\\nBe brief.<|im_end|>\\n'}}{% for m in messages %}"
                  "{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
                  "{% endfor %}\"}", f);
            fclose(f);
        }
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        wd_tokenizer *tok = NULL;
        CHECKF(wd_tokenizer_load_json(&tok, path, err, sizeof(err)) == 0, "%s", err);
        if (tok) {
            CHECK(wd_tokenizer_add_bos(tok) && wd_tokenizer_bos(tok) == 1);
            char *c = wd_tokenizer_apply_chat(tok, "hi", err, sizeof(err));
            CHECKF(c && !strcmp(c, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi"
                                  "<|im_end|>\n<|im_start|>assistant\n"), "chat: %s", c ? c : err);
            free(c);
            wd_tokenizer_free(tok);
        }
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
    }
    /* tokenizer.json pre-tokenizers outside the supported set are refused: one line naming file and key */
    const struct {
        const char *pre, *want;
    } bad[] = {
        {"{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", "add_prefix_space"},
        {"{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", "
         "\"add_prefix_space\": false, \"use_regex\": false}]}",
         "Split regex"},
        {"{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", "
         "\"individual_digits\": true}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
         "\"use_regex\": false}]}",
         "pre_tokenizer sequence"},
        {"{\"type\": \"Whitespace\"}", "Whitespace"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[512], err[512] = "";
        snprintf(path, sizeof(path), WD_BINARY_DIR "/tmp_bytelevel_bad.json");
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (!f) return;
        fprintf(f, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                   "\"merges\": [\"a b\"]}, \"pre_tokenizer\": %s}", bad[i].pre);
        fclose(f);
        wd_tokenizer *tok = NULL;
        CHECK(wd_tokenizer_load_json(&tok, path, err, sizeof(err)) != 0 && !tok);
        CHECKF(strstr(err, path) && strstr(err, bad[i].want), "message \"%s\" lacks \"%s\"", err,
               bad[i].want);
        wd_tokenizer_free(tok);
        remove(path);
    }
}

int main(void) {
    int counts[WD_PRETOK_COUNT] = {0};
    check_json_tokenizers();
    for_lines(DATA "pretok_cases.jsonl", check_pretok, counts);
    const char *names[] = {"smollm", "llama-bpe", "qwen2", "deepseek-llm"};
    for (int i = 0; i < 4; i++)
        CHECKF(counts[pretok_of(names[i])] >= 300, "%s: only %d cases", names[i],
               counts[pretok_of(names[i])]);
    CHECK(wd_tok_pretok_by_name("no-such", 7) < 0);
    return wd_test_finish("test_bytelevel");
}
