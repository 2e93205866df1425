/* Tokenizer (tokenizer.json, Llama/Mistral BPE with byte fallback) against
 * llama.cpp's ids for the stories260k vocab, decoding against llama2.c's
 * published greedy output, and bad-input handling. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/test_util.h"
#include "weights/weights.h"

#define MODEL_DIR WD_SOURCE_DIR "/weights/models/stories260k"
#define TOK_JSON MODEL_DIR "/moe4-top2/tokenizer.json"

/* Splits buf in place into lines (without '\n'); returns the count. */
static int split_lines(char *buf, char **lines, int max) {
    int n = 0;
    char *p = buf;
    while (*p && n < max) {
        char *nl = strchr(p, '\n');
        lines[n++] = p;
        if (!nl) break;
        *nl = 0;
        p = nl + 1;
    }
    return n;
}

static int parse_ids(const char *line, int *ids, int max) {
    int n = 0;
    char *end;
    for (const char *p = line; n < max;) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ids[n++] = (int)v;
        p = end;
    }
    return n;
}

typedef struct {
    int n_lines;
    char *lines[200];
    int n_ids[200];
    int *ids[200];
} cases;

static int load_cases(cases *c, char **tbuf, char **ibuf) {
    *tbuf = wd_test_read_file(MODEL_DIR "/tokenizer-cases.txt", NULL);
    *ibuf = wd_test_read_file(MODEL_DIR "/tokenizer-cases.ids", NULL);
    if (!*tbuf || !*ibuf) return 1;
    char *il[200];
    c->n_lines = split_lines(*tbuf, c->lines, 200);
    int ni = split_lines(*ibuf, il, 200);
    if (ni != c->n_lines) return 1;
    for (int i = 0; i < ni; i++) {
        c->ids[i] = malloc(4096 * sizeof(int));
        c->n_ids[i] = parse_ids(il[i], c->ids[i], 4096);
    }
    return 0;
}

/* Encodes every case with tok; returns the number of mismatching lines. */
static int run_cases(const wd_tokenizer *tok, const cases *c, int verbose) {
    int bad = 0;
    for (int i = 0; i < c->n_lines; i++) {
        int *ids, n;
        if (wd_tokenizer_encode(tok, c->lines[i], 1, &ids, &n)) {
            bad++;
            continue;
        }
        int same = n == c->n_ids[i] && memcmp(ids, c->ids[i], (size_t)n * sizeof(int)) == 0;
        if (!same) {
            bad++;
            if (verbose && bad <= 3) {
                fprintf(stderr, "case %d \"%.60s\": got", i + 1, c->lines[i]);
                for (int k = 0; k < n && k < 30; k++) fprintf(stderr, " %d", ids[k]);
                fprintf(stderr, "\n  want");
                for (int k = 0; k < c->n_ids[i] && k < 30; k++) fprintf(stderr, " %d", c->ids[i][k]);
                fprintf(stderr, "\n");
            }
        }
        free(ids);
    }
    return bad;
}

static int encode_eq(const wd_tokenizer *a, const char *ta, const wd_tokenizer *b,
                     const char *tb) {
    int *x, *y, nx, ny;
    if (wd_tokenizer_encode(a, ta, 0, &x, &nx)) return 0;
    if (wd_tokenizer_encode(b, tb, 0, &y, &ny)) {
        free(x);
        return 0;
    }
    int same = nx == ny && memcmp(x, y, (size_t)nx * sizeof(int)) == 0;
    free(x);
    free(y);
    return same;
}

/* Writes a modified copy of tokenizer.json; mod edits the parsed root. */
static int write_variant(const char *path, void (*mod)(json_object *root)) {
    json_object *root = json_object_from_file(TOK_JSON);
    if (!root) return 1;
    mod(root);
    int rc = json_object_to_file_ext(path, root, JSON_C_TO_STRING_PLAIN) != 0;
    json_object_put(root);
    return rc;
}

static json_object *model_of(json_object *root) {
    json_object *m = NULL;
    json_object_object_get_ex(root, "model", &m);
    return m;
}

static void mod_string_merges(json_object *root) {
    json_object *m = model_of(root), *merges;
    json_object_object_get_ex(m, "merges", &merges);
    json_object *out = json_object_new_array();
    for (size_t i = 0; i < json_object_array_length(merges); i++) {
        json_object *p = json_object_array_get_idx(merges, i);
        char buf[256];
        snprintf(buf, sizeof(buf), "%s %s", json_object_get_string(json_object_array_get_idx(p, 0)),
                 json_object_get_string(json_object_array_get_idx(p, 1)));
        json_object_array_add(out, json_object_new_string(buf));
    }
    json_object_object_add(m, "merges", out);
}

static json_object *metaspace(const char *scheme, int split) {
    json_object *pt = json_object_new_object();
    json_object_object_add(pt, "type", json_object_new_string("Metaspace"));
    json_object_object_add(pt, "replacement", json_object_new_string("\xE2\x96\x81"));
    json_object_object_add(pt, "prepend_scheme", json_object_new_string(scheme));
    json_object_object_add(pt, "split", json_object_new_boolean(split));
    return pt;
}

static void mod_meta_first(json_object *root) {
    json_object_object_add(root, "normalizer", NULL);
    json_object_object_add(root, "pre_tokenizer", metaspace("first", 0));
}
static void mod_meta_always_split(json_object *root) {
    json_object_object_add(root, "normalizer", NULL);
    json_object_object_add(root, "pre_tokenizer", metaspace("always", 1));
}
static void mod_no_vocab(json_object *root) { json_object_object_del(model_of(root), "vocab"); }
static void mod_vocab_array(json_object *root) {
    json_object_object_add(model_of(root), "vocab", json_object_new_array());
}
static void mod_vocab_string_id(json_object *root) {
    json_object *v;
    json_object_object_get_ex(model_of(root), "vocab", &v);
    json_object_object_add(v, "he", json_object_new_string("12"));
}
static void mod_merges_object(json_object *root) {
    json_object_object_add(model_of(root), "merges", json_object_new_object());
}
static void mod_merge_unknown(json_object *root) {
    json_object *merges;
    json_object_object_get_ex(model_of(root), "merges", &merges);
    json_object_array_add(merges, json_object_new_string("zzz qqq"));
}
static void mod_merge_bad(json_object *root) {
    json_object *merges;
    json_object_object_get_ex(model_of(root), "merges", &merges);
    json_object_array_add(merges, json_object_new_int(7));
}
static void mod_added_bad(json_object *root) {
    json_object_object_add(root, "added_tokens", json_object_new_string("<s>"));
}
static void mod_added_noid(json_object *root) {
    json_object *a;
    json_object_object_get_ex(root, "added_tokens", &a);
    json_object_object_del(json_object_array_get_idx(a, 0), "id");
}
static void mod_model_wordpiece(json_object *root) {
    json_object_object_add(model_of(root), "type", json_object_new_string("WordPiece"));
}
static void mod_normalizer_nfkc(json_object *root) {
    json_object *n = json_object_new_object();
    json_object_object_add(n, "type", json_object_new_string("NFKC"));
    json_object_object_add(root, "normalizer", n);
}
static void mod_added_user(json_object *root) { /* a non-special added token "ball" with lstrip */
    json_object *a, *v;
    json_object_object_get_ex(root, "added_tokens", &a);
    json_object_object_get_ex(model_of(root), "vocab", &v);
    json_object *t = json_object_new_object();
    json_object_object_add(t, "id", json_object_new_int(512));
    json_object_object_add(t, "content", json_object_new_string("<tool>"));
    json_object_object_add(t, "special", json_object_new_boolean(0));
    json_object_object_add(t, "lstrip", json_object_new_boolean(1));
    json_object_array_add(a, t);
}

static void check_bad(const char *dir, const char *name, void (*mod)(json_object *),
                      const char *raw, const char *want) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof(path), "%s/%s.json", dir, name);
    if (mod) CHECK(write_variant(path, mod) == 0);
    else CHECK(wd_test_write_file(path, raw, strlen(raw)) == 0);
    wd_tokenizer *tok = (wd_tokenizer *)1;
    int rc = wd_tokenizer_load_json(&tok, path, err, sizeof(err));
    CHECKF(rc != 0, "%s loaded", name);
    CHECK(tok == NULL);
    CHECKF(strstr(err, path) != NULL && strstr(err, want) != NULL, "%s: error \"%s\" (want \"%s\")",
           name, err, want);
    if (rc == 0) wd_tokenizer_free(tok);
}

int main(void) {
    char err[512] = "";
    wd_tokenizer *tok = NULL;
    int rc = wd_tokenizer_load_json(&tok, TOK_JSON, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return wd_test_finish("test_tokenizer");
    CHECK(wd_tokenizer_vocab_size(tok) == 512);
    CHECK(wd_tokenizer_bos(tok) == 1);
    CHECK(wd_tokenizer_eos(tok) == 2);

    /* 1. llama.cpp's ids for the 119 cases, exactly */
    cases c;
    char *tbuf, *ibuf;
    CHECK(load_cases(&c, &tbuf, &ibuf) == 0);
    CHECK(c.n_lines == 119);
    for (int i = 0; i < c.n_lines; i++) CHECK(c.n_ids[i] >= 2 && c.ids[i][0] == 1);
    int bad = run_cases(tok, &c, 1);
    CHECKF(bad == 0, "%d of %d cases differ", bad, c.n_lines);

    /* 2. round trip: decode(encode(x)) == x */
    int rt_bad = 0;
    for (int i = 0; i < c.n_lines; i++) {
        int *ids, n;
        if (wd_tokenizer_encode(tok, c.lines[i], 1, &ids, &n)) {
            rt_bad++;
            continue;
        }
        char *s = wd_tokenizer_decode(tok, ids, n);
        if (!s || strcmp(s, c.lines[i]) != 0) {
            if (rt_bad++ < 3) fprintf(stderr, "round trip: \"%s\" -> \"%s\"\n", c.lines[i], s);
        }
        free(s);
        free(ids);
    }
    CHECKF(rt_bad == 0, "%d round trips differ", rt_bad);

    /* 3. decoding llama2.c's greedy tokens gives its published text byte for byte */
    {
        json_object *g = json_object_from_file(MODEL_DIR "/greedy_tokens.json");
        CHECK(g && json_object_is_type(g, json_type_array));
        size_t want_len = 0;
        char *want = wd_test_read_file(MODEL_DIR "/greedy-200.txt", &want_len);
        CHECK(want != NULL);
        if (g && want) {
            int n = (int)json_object_array_length(g);
            CHECK(n == 201);
            int *ids = malloc((size_t)n * sizeof(int));
            for (int i = 0; i < n; i++) ids[i] = json_object_get_int(json_object_array_get_idx(g, i));
            CHECK(ids[0] == 1);
            char *s = wd_tokenizer_decode(tok, ids, n);
            CHECK(s && strlen(s) == want_len && memcmp(s, want, want_len) == 0);
            /* streaming with wd_tokenizer_piece gives the same bytes */
            char *acc = calloc(want_len + 64, 1);
            size_t pos = 0;
            for (int i = 0; i < n && pos < want_len + 32; i++) {
                char buf[64];
                int l = wd_tokenizer_piece(tok, i ? ids[i - 1] : -1, ids[i], buf, sizeof(buf));
                CHECK(l >= 0 && l < 64);
                memcpy(acc + pos, buf, (size_t)l);
                pos += (size_t)l;
            }
            CHECK(pos == want_len && memcmp(acc, want, want_len) == 0);
            /* encoding the text back gives the same ids (greedy output is canonical here) */
            int *e, ne;
            CHECK(wd_tokenizer_encode(tok, want, 1, &e, &ne) == 0);
            CHECK(ne == n && memcmp(e, ids, (size_t)n * sizeof(int)) == 0);
            free(e);
            free(acc);
            free(s);
            free(ids);
        }
        free(want);
        if (g) json_object_put(g);
    }

    /* 4. pieces: specials, bytes, the first-piece space, truncation */
    {
        char buf[16];
        CHECK(wd_tokenizer_piece(tok, -1, 1, buf, sizeof(buf)) == 0); /* <s> */
        CHECK(wd_tokenizer_piece(tok, 5, 2, buf, sizeof(buf)) == 0);  /* </s> */
        CHECK(wd_tokenizer_piece(tok, 5, 0, buf, sizeof(buf)) == 0);  /* <unk> */
        CHECK(wd_tokenizer_piece(tok, 5, 3 + 0x41, buf, sizeof(buf)) == 1 && buf[0] == 'A');
        CHECK(wd_tokenizer_piece(tok, 5, 3 + 0xE2, buf, sizeof(buf)) == 1 && buf[0] == (char)0xE2);
        /* 265 = "▁the": " the" mid-text, "the" first or after BOS */
        CHECK(wd_tokenizer_piece(tok, 300, 265, buf, sizeof(buf)) == 4 && memcmp(buf, " the", 4) == 0);
        CHECK(wd_tokenizer_piece(tok, -1, 265, buf, sizeof(buf)) == 3 && memcmp(buf, "the", 3) == 0);
        CHECK(wd_tokenizer_piece(tok, 1, 265, buf, sizeof(buf)) == 3);
        CHECK(wd_tokenizer_piece(tok, 300, 265, buf, 2) == 4 && memcmp(buf, " t", 2) == 0);
        CHECK(wd_tokenizer_piece(tok, 300, 512, buf, sizeof(buf)) == 0);
        CHECK(wd_tokenizer_piece(tok, 300, -3, buf, sizeof(buf)) == 0);
    }

    /* 5. empty text; literal specials split the text, each segment gets "▁" (HF Prepend) */
    {
        int *ids, n;
        CHECK(wd_tokenizer_encode(tok, "", 1, &ids, &n) == 0 && n == 1 && ids[0] == 1);
        free(ids);
        CHECK(wd_tokenizer_encode(tok, "", 0, &ids, &n) == 0 && n == 0);
        free(ids);
        CHECK(wd_tokenizer_encode(tok, "<s>", 0, &ids, &n) == 0 && n == 1 && ids[0] == 1);
        free(ids);
        int *a, na, *b, nb;
        CHECK(wd_tokenizer_encode(tok, "Hello</s>world", 0, &ids, &n) == 0);
        CHECK(wd_tokenizer_encode(tok, "Hello", 0, &a, &na) == 0);
        CHECK(wd_tokenizer_encode(tok, "world", 0, &b, &nb) == 0);
        CHECK(n == na + 1 + nb && memcmp(ids, a, (size_t)na * sizeof(int)) == 0 &&
              ids[na] == 2 && memcmp(ids + na + 1, b, (size_t)nb * sizeof(int)) == 0);
        free(ids);
        free(a);
        free(b);
    }

    /* 5b. random bytes (invalid UTF-8 included): byte fallback makes every string round-trip */
    {
        uint64_t rng = 42;
        int rt = 0, tried = 0;
        char text[301];
        for (int it = 0; it < 300; it++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int len = (int)((rng >> 33) % 300);
            for (int i = 0; i < len; i++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                unsigned v = (unsigned)(rng >> 56);
                /* mostly text-like, some high bytes */
                text[i] = (char)(v < 128 ? "ab <s>/\xE2\x96\x81 \n"[v % 12] : v < 200 ? (int)('a' + v % 26) : (int)v);
            }
            text[len] = 0;
            for (int i = 0; i < len; i++)
                if (!text[i]) text[i] = 'x';
            if (strstr(text, "<s>") || strstr(text, "</s>") || strstr(text, "\xE2\x96\x81")) continue;
            tried++;
            int *ids, n;
            if (wd_tokenizer_encode(tok, text, it % 2, &ids, &n)) continue;
            char *d = wd_tokenizer_decode(tok, ids, n);
            rt += d && strcmp(d, text) == 0;
            free(d);
            free(ids);
        }
        CHECKF(rt == tried && tried > 100, "%d of %d random strings round-trip", rt, tried);
    }

    /* 6. other tokenizer.json forms give the same tokenisation */
    char dir[] = "/tmp/wd_test_tokenizer_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[1024];
    {
        snprintf(path, sizeof(path), "%s/string_merges.json", dir);
        CHECK(write_variant(path, mod_string_merges) == 0);
        wd_tokenizer *t2 = NULL;
        CHECKF(wd_tokenizer_load_json(&t2, path, err, sizeof(err)) == 0, "%s", err);
        if (t2) CHECK(run_cases(t2, &c, 0) == 0);
        wd_tokenizer_free(t2);
    }
    {
        /* Metaspace(prepend_scheme first, split false): same as Prepend+Replace except that a
         * leading "▁" is not doubled and a segment after a special gets none */
        snprintf(path, sizeof(path), "%s/meta_first.json", dir);
        CHECK(write_variant(path, mod_meta_first) == 0);
        wd_tokenizer *t2 = NULL;
        CHECKF(wd_tokenizer_load_json(&t2, path, err, sizeof(err)) == 0, "%s", err);
        if (t2) {
            int same = 0;
            for (int i = 0; i < c.n_lines; i++)
                same += c.lines[i][0] != ' ' && encode_eq(t2, c.lines[i], tok, c.lines[i]);
            int lead = 0;
            for (int i = 0; i < c.n_lines; i++) lead += c.lines[i][0] == ' ';
            CHECK(same == c.n_lines - lead);
            CHECK(encode_eq(t2, " Hello world", tok, "Hello world"));
            CHECK(encode_eq(t2, "  leading", tok, " leading"));
            int *x, nx;
            CHECK(wd_tokenizer_encode(t2, "<s>Hi", 0, &x, &nx) == 0);
            CHECK(nx >= 2 && x[0] == 1 && x[1] != 410); /* 410 = "▁" */
            int *y, ny;
            CHECK(wd_tokenizer_encode(tok, "<s>Hi", 0, &y, &ny) == 0);
            CHECK(ny >= 2 && y[0] == 1 && !(nx == ny && memcmp(x, y, (size_t)nx * sizeof(int)) == 0));
            free(x);
            free(y);
        }
        wd_tokenizer_free(t2);
    }
    {
        /* Metaspace(always, split true): words start at each "▁"; "▁▁" cannot merge */
        snprintf(path, sizeof(path), "%s/meta_split.json", dir);
        CHECK(write_variant(path, mod_meta_always_split) == 0);
        wd_tokenizer *t2 = NULL;
        CHECKF(wd_tokenizer_load_json(&t2, path, err, sizeof(err)) == 0, "%s", err);
        if (t2) {
            CHECK(encode_eq(t2, "Once upon a time", tok, "Once upon a time"));
            int *x, nx, *a, na, *b, nb;
            CHECK(wd_tokenizer_encode(t2, "Hello  world", 0, &x, &nx) == 0);
            CHECK(wd_tokenizer_encode(tok, "Hello", 0, &a, &na) == 0);
            CHECK(wd_tokenizer_encode(tok, "world", 0, &b, &nb) == 0);
            CHECK(nx == na + 1 + nb && memcmp(x, a, (size_t)na * sizeof(int)) == 0 &&
                  x[na] == 410 && memcmp(x + na + 1, b, (size_t)nb * sizeof(int)) == 0);
            free(x);
            free(a);
            free(b);
        }
        wd_tokenizer_free(t2);
    }
    {
        /* a non-special added token with lstrip swallows the spaces before it and
         * decodes to its content */
        snprintf(path, sizeof(path), "%s/added_user.json", dir);
        CHECK(write_variant(path, mod_added_user) == 0);
        wd_tokenizer *t2 = NULL;
        CHECKF(wd_tokenizer_load_json(&t2, path, err, sizeof(err)) == 0, "%s", err);
        if (t2) {
            CHECK(wd_tokenizer_vocab_size(t2) == 513);
            int *x, nx, *a, na;
            CHECK(wd_tokenizer_encode(t2, "Hi   <tool>", 0, &x, &nx) == 0);
            CHECK(wd_tokenizer_encode(tok, "Hi", 0, &a, &na) == 0);
            CHECK(nx == na + 1 && memcmp(x, a, (size_t)na * sizeof(int)) == 0 && x[na] == 512);
            char *s = wd_tokenizer_decode(t2, x, nx);
            CHECK(s && strcmp(s, "Hi<tool>") == 0);
            free(s);
            free(x);
            free(a);
        }
        wd_tokenizer_free(t2);
    }

    /* 7. bad files: one clear error, no crash */
    {
        char missing[1100];
        snprintf(missing, sizeof(missing), "%s/does-not-exist.json", dir);
        wd_tokenizer *t2 = (wd_tokenizer *)1;
        CHECK(wd_tokenizer_load_json(&t2, missing, err, sizeof(err)) != 0 && t2 == NULL);
        CHECKF(strstr(err, missing) && strstr(err, "cannot open"), "%s", err);
    }
    check_bad(dir, "malformed", NULL, "{\"model\": {\"vocab\": {\"a\": 0,", "malformed JSON");
    check_bad(dir, "empty", NULL, "", "malformed JSON");
    check_bad(dir, "toplevel", NULL, "[1, 2]", "not a JSON object");
    check_bad(dir, "nomodel", NULL, "{\"version\": \"1.0\"}", "\"model\"");
    check_bad(dir, "novocab", mod_no_vocab, NULL, "missing \"model.vocab\"");
    check_bad(dir, "vocabarray", mod_vocab_array, NULL, "must be an object");
    check_bad(dir, "vocabstr", mod_vocab_string_id, NULL, "is not an id");
    check_bad(dir, "mergesobj", mod_merges_object, NULL, "\"model.merges\" must be an array");
    check_bad(dir, "mergeunk", mod_merge_unknown, NULL, "missing from the vocab");
    check_bad(dir, "mergebad", mod_merge_bad, NULL, "model.merges[");
    check_bad(dir, "addedbad", mod_added_bad, NULL, "\"added_tokens\" must be an array");
    check_bad(dir, "addednoid", mod_added_noid, NULL, "added_tokens[0]");
    check_bad(dir, "wordpiece", mod_model_wordpiece, NULL, "not supported");
    check_bad(dir, "nfkc", mod_normalizer_nfkc, NULL, "unsupported normalizer type \"NFKC\"");
    check_bad(dir, "hugeid", NULL, "{\"model\": {\"vocab\": {\"a\": 99999999999}}}", "is not an id");
    check_bad(dir, "emptyvocab", NULL, "{\"model\": {\"vocab\": {}}}", "empty");

    /* clean up */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    for (int i = 0; i < c.n_lines; i++) free(c.ids[i]);
    free(tbuf);
    free(ibuf);
    wd_tokenizer_free(tok);
    return wd_test_finish("test_tokenizer");
}
