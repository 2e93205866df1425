/* Byte-level BPE against Hugging Face `tokenizers` (golden files written by
 * tests/ref_smollm2.py):
 * - pretok_cases.jsonl: the pieces of the smollm, llama-bpe, qwen2 and
 *   deepseek-llm pre-tokenizers (tokenizers' Split(Regex, isolated)) on a few
 *   hundred strings; needs no model, always runs.
 * - tokenizer_cases.jsonl: SmolLM2's ids of the same strings, with the
 *   tokenizer read from the GGUF (skipped, visibly, without the model file:
 *   bash weights/models/fetch_smollm2.sh).
 * - bytelevel/<name>.json + .ids.jsonl (tests/ref_bytelevel.py): a small BPE
 *   trained by tokenizers with each pre-tokenizer, read as tokenizer.json.
 * Also decoding (ids -> text round-trips) and the ChatML chat template
 * (prompt.json: the GGUF's template rendered by jinja2). */
#include <json-c/json.h>

#include "test_util.h"
#include "weights/tokenizer_internal.h"

#define DATA WD_SOURCE_DIR "/tests/data/smollm2/"
#define MODEL WD_SOURCE_DIR "/weights/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"

static int pretok_of(const char *name) {
    return wd_tok_pretok_by_name(name, strlen(name));
}

/* Each line of a JSON-lines file, parsed; returns the number of lines. */
static int for_lines(const char *path, void (*fn)(json_object *o, void *ctx), void *ctx) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        CHECKF(0, "%s: cannot open", path);
        return 0;
    }
    static char line[1 << 16];
    int n = 0;
    while (fgets(line, sizeof(line), f)) {
        json_object *o = json_tokener_parse(line);
        CHECKF(o != NULL, "%s: line %d is not JSON", path, n + 1);
        if (!o) continue;
        fn(o, ctx);
        json_object_put(o);
        n++;
    }
    fclose(f);
    return n;
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

static void check_ids(json_object *o, void *ctx) {
    const wd_tokenizer *tok = ctx;
    json_object *text, *want;
    json_object_object_get_ex(o, "text", &text);
    json_object_object_get_ex(o, "ids", &want);
    const char *s = json_object_get_string(text);
    int *ids = NULL, n = 0;
    CHECK(wd_tokenizer_encode(tok, s, wd_tokenizer_add_bos(tok), &ids, &n) == 0);
    int nw = (int)json_object_array_length(want), same = n == nw;
    for (int i = 0; same && i < n; i++)
        same = ids[i] == json_object_get_int(json_object_array_get_idx(want, i));
    if (!same) {
        fprintf(stderr, "  got:");
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    CHECKF(same, "ids of \"%s\": want %s", s, json_object_to_json_string(want));
    /* decoding gives the text back (control tokens decode to nothing) */
    if (same && !strstr(s, "<|")) {
        char *d = wd_tokenizer_decode(tok, ids, n);
        CHECKF(d && !strcmp(d, s), "decode of \"%s\" gave \"%s\"", s, d ? d : "(null)");
        free(d);
    }
    free(ids);
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
    /* tokenizer.json pre-tokenizers that are not implemented: one line naming file and key */
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
    /* the byte <-> character map covers all 256 bytes and round-trips */
    CHECK(wd_tok_pretok_by_name("no-such", 7) < 0);
    if (access(MODEL, R_OK) != 0) {
        printf("pre-tokenizers checked; %s absent\n", MODEL);
        if (wd_test_failures) return wd_test_finish("test_bytelevel");
        WD_TEST_SKIP("SmolLM2 ids: %s absent (bash weights/models/fetch_smollm2.sh)", MODEL);
    }
    char err[512];
    wd_tokenizer *tok = NULL;
    CHECKF(wd_gguf_load_tokenizer(&tok, MODEL, err, sizeof(err)) == 0, "%s", err);
    if (!tok) return wd_test_finish("test_bytelevel");
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
    return wd_test_finish("test_bytelevel");
}
