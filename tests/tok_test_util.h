/* Shared by the tokenizer tests: JSON-lines golden files and the id check. */
#ifndef WD_TOK_TEST_UTIL_H
#define WD_TOK_TEST_UTIL_H
#include <json-c/json.h>

#include "test_util.h"
#include "weights/tokenizer_internal.h"

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

/* {"text", "ids"}: the ids of text (BOS as the tokenizer adds it), and the
 * text back from them (unless it holds special tokens). */
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

#endif
