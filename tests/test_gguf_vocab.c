/* The Llama 32000-token SentencePiece vocab (vocab-only GGUF) reproduces
 * llama.cpp's tokenizer test vectors exactly (copied into tests/data/vocab,
 * MIT, see its LICENSE.md). Inputs are separated by "\n__ggml_vocab_test__\n"; .out has
 * one line of ids per input, without BOS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "weights/weights.h"

#define VOCAB WD_SOURCE_DIR "/tests/data/vocab/ggml-vocab-llama-spm.gguf"

int main(void) {
    char err[512] = "";
    wd_tokenizer *tok = NULL;
    int rc = wd_gguf_load_tokenizer(&tok, VOCAB, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return wd_test_finish("test_gguf_vocab");
    CHECK(wd_tokenizer_vocab_size(tok) == 32000);
    CHECK(wd_tokenizer_bos(tok) == 1 && wd_tokenizer_eos(tok) == 2);

    char *inp = wd_test_read_file(VOCAB ".inp", NULL), *out = wd_test_read_file(VOCAB ".out", NULL);
    CHECK(inp && out);
    const char *sep = "\n__ggml_vocab_test__\n";
    int n_cases = 0, bad = 0, rt_bad = 0;
    char *p = inp, *q = out;
    for (;;) {
        char *next = strstr(p, sep);
        if (!next) break;
        *next = 0;
        char *nl = strchr(q, '\n');
        CHECK(nl != NULL);
        if (!nl) break;
        *nl = 0;
        int want[512], nw = 0;
        char *end;
        for (char *s = q; nw < 512;) {
            long v = strtol(s, &end, 10);
            if (end == s) break;
            want[nw++] = (int)v;
            s = end;
        }
        int *ids, n;
        CHECK(wd_tokenizer_encode(tok, p, 0, &ids, &n) == 0);
        if (n != nw || memcmp(ids, want, (size_t)n * sizeof(int)) != 0) {
            if (bad++ < 3) {
                fprintf(stderr, "case %d \"%.40s\": got", n_cases, p);
                for (int i = 0; i < n && i < 20; i++) fprintf(stderr, " %d", ids[i]);
                fprintf(stderr, "\n  want %s\n", q);
            }
        }
        /* SentencePiece decoding gives the text back (no unknown characters here) */
        char *d = wd_tokenizer_decode(tok, ids, n);
        if (!d || strcmp(d, p) != 0) {
            if (rt_bad++ < 3) fprintf(stderr, "round trip: \"%s\" -> \"%s\"\n", p, d);
        }
        free(d);
        free(ids);
        n_cases++;
        p = next + strlen(sep);
        q = nl + 1;
    }
    CHECK(n_cases == 46);
    CHECKF(bad == 0, "%d of %d cases differ", bad, n_cases);
    CHECKF(rt_bad == 0, "%d round trips differ", rt_bad);

    /* a vocab-only file is not a model */
    wd_tensors *ts = NULL;
    wd_config cfg;
    CHECK(wd_gguf_open(&ts, &cfg, NULL, VOCAB, err, sizeof(err)) != 0 && ts == NULL);
    CHECKF(strstr(err, "missing tensor"), "%s", err);
    free(inp);
    free(out);
    wd_tokenizer_free(tok);
    return wd_test_finish("test_gguf_vocab");
}
