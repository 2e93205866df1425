/* wdmoe tokenize: the token ids of a text with the model's own tokenizer, one
 * line of space-separated ids per input line (BOS only when the model's
 * tokenizer adds one), for checking wdmoe against another engine. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cli.h"
#include "weights/weights.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: wdmoe tokenize --model PATH (--text STRING | -f FILE) [options]\n\n"
            "Print the token ids of each input line (space-separated, one output line per\n"
            "input line; an empty line gives an empty line). BOS comes first only when the\n"
            "model's tokenizer adds one (GGUF tokenizer.ggml.add_bos_token; SentencePiece\n"
            "and Llama tokenizer.json: yes; byte-level BPE: no).\n\n"
            "options:\n"
            "  --model PATH      .gguf file (its tokenizer.ggml.* vocab) or a model folder\n"
            "                    with tokenizer.json\n"
            "  --text STRING     the text (split at newlines)\n"
            "  -f FILE           read the text from FILE (- for standard input)\n"
            "  --chat            wrap each line in the model's chat template as a user turn\n"
            "  --info            print the tokenizer kind, vocabulary size and BOS/EOS to stderr\n"
            "  -h, --help        this help\n");
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int emit(const wd_tokenizer *tok, const char *line, int chat, const char *name) {
    char err[512];
    char *wrapped = NULL;
    if (chat && !(wrapped = wd_tokenizer_apply_chat(tok, line, err, sizeof(err)))) {
        fprintf(stderr, "wdmoe tokenize: %s: %s\n", name, err);
        return 1;
    }
    int *ids = NULL, n = 0;
    if (wd_tokenizer_encode(tok, wrapped ? wrapped : line, wd_tokenizer_add_bos(tok), &ids, &n)) {
        fprintf(stderr, "wdmoe tokenize: out of memory encoding a line of %zu bytes\n",
                strlen(line));
        free(wrapped);
        return 1;
    }
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    free(wrapped);
    return 0;
}

int wd_cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize", *model = NULL, *text = NULL, *file = NULL;
    int chat = 0, info = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            if (!(model = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--text")) {
            if (!(text = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(file = wd_cli_value(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--chat")) {
            chat = 1;
        } else if (!strcmp(a, "--info")) {
            info = 1;
        } else {
            fprintf(stderr, "wdmoe tokenize: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || (!text) == (!file)) {
        fprintf(stderr, "wdmoe tokenize: need --model and exactly one of --text or -f\n");
        return 2;
    }
    char err[1024];
    wd_tokenizer *tok = NULL;
    int rc;
    if (ends_with(model, ".gguf")) {
        rc = wd_gguf_load_tokenizer(&tok, model, err, sizeof(err));
    } else {
        size_t l = strlen(model) + sizeof("/tokenizer.json");
        char *p = malloc(l);
        if (!p) return 1;
        snprintf(p, l, "%s/tokenizer.json", model);
        rc = wd_tokenizer_load_json(&tok, p, err, sizeof(err));
        free(p);
    }
    if (rc) {
        fprintf(stderr, "wdmoe tokenize: %s\n", err);
        return 1;
    }
    if (info)
        fprintf(stderr, "tokenizer: %s, %d tokens, bos %d (%s), eos %d\n", wd_tokenizer_kind(tok),
                wd_tokenizer_vocab_size(tok), wd_tokenizer_bos(tok),
                wd_tokenizer_add_bos(tok) ? "added" : "not added", wd_tokenizer_eos(tok));
    rc = 0;
    if (text) {
        char *copy = strdup(text);
        if (!copy) rc = 1;
        for (char *line = copy, *nl; !rc && line; line = nl ? nl + 1 : NULL) {
            if ((nl = strchr(line, '\n'))) *nl = 0;
            rc = emit(tok, line, chat, "--text");
        }
        free(copy);
    } else {
        FILE *f = strcmp(file, "-") ? fopen(file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "wdmoe tokenize: %s: cannot open: %s\n", file, strerror(errno));
            wd_tokenizer_free(tok);
            return 1;
        }
        char *line = NULL;
        size_t cap = 0, len = 0;
        int c;
        for (;;) { /* getline without POSIX: lines of any length */
            c = getc(f);
            if (c == EOF || c == '\n') {
                if (c == EOF && len == 0) break;
                if (!line && !(line = malloc(cap = 256))) {
                    rc = 1;
                    break;
                }
                line[len] = 0;
                if (strlen(line) != len) {
                    fprintf(stderr, "wdmoe tokenize: %s: a line holds a NUL byte\n", file);
                    rc = 1;
                    break;
                }
                if ((rc = emit(tok, line, chat, file))) break;
                len = 0;
                if (c == EOF) break;
                continue;
            }
            if (len + 2 > cap) {
                size_t nc = cap ? cap * 2 : 256;
                char *p = realloc(line, nc);
                if (!p) {
                    fprintf(stderr, "wdmoe tokenize: %s: out of memory\n", file);
                    rc = 1;
                    break;
                }
                line = p;
                cap = nc;
            }
            line[len++] = (char)c;
        }
        if (!rc && ferror(f)) {
            fprintf(stderr, "wdmoe tokenize: %s: read error\n", file);
            rc = 1;
        }
        free(line);
        if (f != stdin) fclose(f);
    }
    if (fflush(stdout) != 0) rc = 1;
    wd_tokenizer_free(tok);
    return rc;
}
