/* Tokenizers of the Llama / Mistral kind.
 *
 * Two encoders over one vocabulary structure:
 * - BPE (Hugging Face tokenizer.json, "model": {"type": "BPE"}): the input is
 *   split on added tokens (matched literally), each remaining segment is
 *   normalised (Prepend "▁" + Replace " " -> "▁", or the Metaspace
 *   pre-tokenizer), then merged by rank from the merges list exactly as
 *   tokenizers' Word::merge_all (lowest rank first, leftmost on ties);
 *   characters missing from the vocab fall back to <0xNN> byte tokens.
 * - SPM (the SentencePiece vocab inside GGUF files): the same splitting and
 *   normalisation, then llama.cpp's llm_tokenizer_spm: repeatedly merge the
 *   adjacent pair whose concatenation is a token with the highest score
 *   (leftmost on ties); leftover characters become byte tokens.
 * Decoding follows SentencePiece: "▁" -> " ", <0xNN> pieces -> raw bytes,
 * control/unknown tokens -> nothing, the leading space of the first piece
 * (or of the piece after BOS) stripped. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weights/tokenizer_internal.h"

#define MAX_VOCAB (1 << 24)

enum { KIND_BPE, KIND_SPM };
/* How "▁" is put in front of a segment. */
enum {
    PRE_NONE,
    PRE_ALWAYS,      /* Prepend normalizer / llama.cpp add_space_prefix: unconditionally */
    PRE_META_ALWAYS, /* Metaspace prepend_scheme "always": unless it starts with "▁" */
    PRE_META_FIRST   /* Metaspace prepend_scheme "first": only at offset 0 of the text */
};

static const char SPACE_MARK[] = "\xE2\x96\x81"; /* U+2581 "▁" */

typedef struct {
    int id;
    unsigned char lstrip, rstrip;
} added_tok;

typedef struct {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int rank, id;
} pair_slot;

struct wd_tokenizer {
    int kind, n;
    char *arena; /* token texts */
    size_t arena_len, arena_cap;
    size_t *off;
    int *len; /* -1: id not assigned */
    float *score;
    unsigned char *type;
    char *darena; /* decoded pieces */
    size_t *doff;
    int *dlen;
    unsigned char *dlead; /* decoded piece starts with a space that came from "▁" */
    int *vslots;          /* vocab hash: id + 1, 0 = empty */
    size_t vmask;
    pair_slot *pslots; /* merges (BPE) */
    size_t pmask, pcount;
    int byte_tok[256];    /* <0xNN> token of each byte, -1 if none */
    int byte_single[256]; /* SPM fallback: the one-byte token, -1 if none */
    int bos, eos, unk;
    int prepend, replace_space, meta_split, byte_fallback, fuse_unk, ignore_merges;
    added_tok *added; /* literal tokens, sorted by first byte, then longest first */
    int n_added;
    int added_start[257];
};

/* ---- small helpers ---------------------------------------------------- */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Bytes of the UTF-8 character at s (n bytes left): the length its lead byte
 * announces (llama.cpp's unicode_len_utf8), or 1 when the continuation bytes
 * are not there (invalid UTF-8 then falls back byte by byte and round-trips;
 * llama.cpp would swallow the following bytes into the broken character). */
static int utf8_len(const char *s, int n) {
    static const int lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    int l = lookup[(unsigned char)s[0] >> 4];
    if (l > n) return 1;
    for (int i = 1; i < l; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) return 1;
    return l;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static const char *tok_text(const wd_tokenizer *t, int id) { return t->arena + t->off[id]; }

static int vocab_find(const wd_tokenizer *t, const char *s, size_t n) {
    if (!t->vslots) return -1;
    size_t i = (size_t)hash_bytes(s, n) & t->vmask;
    for (;;) {
        int v = t->vslots[i];
        if (!v) return -1;
        int id = v - 1;
        if ((size_t)t->len[id] == n && memcmp(tok_text(t, id), s, n) == 0) return id;
        i = (i + 1) & t->vmask;
    }
}

static const pair_slot *pair_find(const wd_tokenizer *t, int a, int b) {
    if (!t->pslots) return NULL;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = (size_t)hash_u64(key) & t->pmask;
    for (;;) {
        const pair_slot *s = &t->pslots[i];
        if (!s->key) return NULL;
        if (s->key == key) return s;
        i = (i + 1) & t->pmask;
    }
}

/* Insert or overwrite (a later duplicate merge wins, as in tokenizers' HashMap collect). */
static void pair_put(wd_tokenizer *t, int a, int b, int rank, int id) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = (size_t)hash_u64(key) & t->pmask;
    while (t->pslots[i].key && t->pslots[i].key != key) i = (i + 1) & t->pmask;
    if (!t->pslots[i].key) t->pcount++;
    t->pslots[i].key = key;
    t->pslots[i].rank = rank;
    t->pslots[i].id = id;
}

static size_t pow2_at_least(size_t n) {
    size_t p = 16;
    while (p < n) p *= 2;
    return p;
}

/* ---- construction ----------------------------------------------------- */
static wd_tokenizer *tok_new(int kind, int n) {
    if (n <= 0 || n > MAX_VOCAB) return NULL;
    wd_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->kind = kind;
    t->n = n;
    t->off = calloc((size_t)n, sizeof(size_t));
    t->len = malloc((size_t)n * sizeof(int));
    t->score = calloc((size_t)n, sizeof(float));
    t->type = calloc((size_t)n, 1);
    if (!t->off || !t->len || !t->score || !t->type) {
        wd_tokenizer_free(t);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        t->len[i] = -1;
        t->type[i] = WD_TOKT_NORMAL;
    }
    t->bos = t->eos = t->unk = -1;
    t->byte_fallback = 1;
    return t;
}

wd_tokenizer *wd_tok_new_spm(int n_vocab) {
    wd_tokenizer *t = tok_new(KIND_SPM, n_vocab);
    if (t) {
        t->prepend = PRE_ALWAYS;
        t->replace_space = 1;
    }
    return t;
}

int wd_tok_set(wd_tokenizer *t, int id, const char *text, size_t len, float score, int type) {
    if (id < 0 || id >= t->n || len > (size_t)1 << 30) return -1;
    if (t->arena_len + len + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 4096;
        while (cap < t->arena_len + len + 1) cap *= 2;
        char *p = realloc(t->arena, cap);
        if (!p) return -1;
        t->arena = p;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, text, len);
    t->arena[t->arena_len + len] = 0;
    t->off[id] = t->arena_len;
    t->len[id] = (int)len;
    t->arena_len += len + 1;
    t->score[id] = score;
    t->type[id] = (type >= WD_TOKT_NORMAL && type <= WD_TOKT_BYTE) ? (unsigned char)type
                                                                    : WD_TOKT_NORMAL;
    return 0;
}

void wd_tok_set_specials(wd_tokenizer *t, int bos, int eos, int unk, int add_space_prefix) {
    t->bos = bos >= 0 && bos < t->n ? bos : -1;
    t->eos = eos >= 0 && eos < t->n ? eos : -1;
    t->unk = unk >= 0 && unk < t->n ? unk : -1;
    if (t->kind == KIND_SPM) t->prepend = add_space_prefix ? PRE_ALWAYS : PRE_NONE;
}

/* Byte value of a "<0xNN>" piece, or -1. */
static int byte_piece(const char *s, int n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int added_cmp(const void *a, const void *b, void *ctx) {
    const wd_tokenizer *t = ctx;
    const added_tok *x = a, *y = b;
    unsigned char cx = (unsigned char)tok_text(t, x->id)[0], cy = (unsigned char)tok_text(t, y->id)[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    if (t->len[x->id] != t->len[y->id]) return t->len[x->id] > t->len[y->id] ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Insertion sort (qsort_r is not C11); the added-token list is short. */
static void sort_added(wd_tokenizer *t) {
    for (int i = 1; i < t->n_added; i++) {
        added_tok k = t->added[i];
        int j = i - 1;
        while (j >= 0 && added_cmp(&t->added[j], &k, t) > 0) {
            t->added[j + 1] = t->added[j];
            j--;
        }
        t->added[j + 1] = k;
    }
}

static int finish(wd_tokenizer *t, const char *path, char *err, size_t errlen) {
    /* assign an empty text to ids nobody named (holes) */
    for (int i = 0; i < t->n; i++)
        if (t->len[i] < 0) {
            if (wd_tok_set(t, i, "", 0, 0.0f, WD_TOKT_UNUSED)) goto oom;
        }
    /* vocab hash; a later id with the same text wins (llama.cpp token_to_id) */
    t->vmask = pow2_at_least((size_t)t->n * 2) - 1;
    t->vslots = calloc(t->vmask + 1, sizeof(int));
    if (!t->vslots) goto oom;
    for (int id = 0; id < t->n; id++) {
        if (t->len[id] == 0) continue;
        const char *s = tok_text(t, id);
        size_t n = (size_t)t->len[id];
        size_t i = (size_t)hash_bytes(s, n) & t->vmask;
        for (;;) {
            int v = t->vslots[i];
            if (!v) {
                t->vslots[i] = id + 1;
                break;
            }
            if ((size_t)t->len[v - 1] == n && memcmp(tok_text(t, v - 1), s, n) == 0) {
                t->vslots[i] = id + 1;
                break;
            }
            i = (i + 1) & t->vmask;
        }
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        t->byte_tok[b] = vocab_find(t, buf, 6);
        char one = (char)b;
        t->byte_single[b] = b ? vocab_find(t, &one, 1) : -1;
    }
    for (int id = 0; id < t->n; id++)
        if (t->type[id] == WD_TOKT_NORMAL && byte_piece(tok_text(t, id), t->len[id]) >= 0)
            t->type[id] = WD_TOKT_BYTE;
    if (t->unk >= 0 && t->type[t->unk] == WD_TOKT_NORMAL) t->type[t->unk] = WD_TOKT_UNKNOWN;
    /* decoded pieces */
    size_t dcap = 0;
    for (int id = 0; id < t->n; id++) dcap += (size_t)t->len[id] + 1;
    t->darena = malloc(dcap ? dcap : 1);
    size_t nv = (size_t)(unsigned)t->n;
    t->doff = calloc(nv, sizeof(size_t));
    t->dlen = calloc(nv, sizeof(int));
    t->dlead = calloc(nv, 1);
    if (!t->darena || !t->doff || !t->dlen || !t->dlead) goto oom;
    size_t dpos = 0;
    for (int id = 0; id < t->n; id++) {
        const char *s = tok_text(t, id);
        int n = t->len[id];
        char *d = t->darena + dpos;
        int dn = 0;
        switch (t->type[id]) {
        case WD_TOKT_BYTE: {
            int b = byte_piece(s, n);
            if (b >= 0) d[dn++] = (char)b;
            else { /* a BYTE-typed token that is not <0xNN>: its text */
                memcpy(d, s, (size_t)n);
                dn = n;
            }
            break;
        }
        case WD_TOKT_USER:
            memcpy(d, s, (size_t)n);
            dn = n;
            break;
        case WD_TOKT_NORMAL:
            for (int i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, SPACE_MARK, 3) == 0) {
                    if (i == 0) t->dlead[id] = 1;
                    d[dn++] = ' ';
                    i += 3;
                } else {
                    d[dn++] = s[i++];
                }
            }
            break;
        default: /* control, unknown, unused: nothing */
            break;
        }
        t->doff[id] = dpos;
        t->dlen[id] = dn;
        dpos += (size_t)dn;
    }
    /* literal (added / special) tokens */
    int na = 0;
    for (int id = 0; id < t->n; id++) {
        int ty = t->type[id];
        if ((ty == WD_TOKT_CONTROL || ty == WD_TOKT_USER || ty == WD_TOKT_UNKNOWN) &&
            t->len[id] > 0)
            na++;
    }
    if (t->kind == KIND_SPM || !t->added) { /* GGUF: from the token types */
        free(t->added);
        t->added = calloc((size_t)na + 1, sizeof(added_tok));
        if (!t->added) goto oom;
        t->n_added = 0;
        for (int id = 0; id < t->n; id++) {
            int ty = t->type[id];
            if ((ty == WD_TOKT_CONTROL || ty == WD_TOKT_USER || ty == WD_TOKT_UNKNOWN) &&
                t->len[id] > 0)
                t->added[t->n_added++].id = id;
        }
    }
    sort_added(t);
    for (int c = 0, k = 0; c <= 256; c++) {
        while (k < t->n_added && (unsigned char)tok_text(t, t->added[k].id)[0] < c) k++;
        t->added_start[c] = k;
    }
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory building the tokenizer", path);
    return 1;
}

int wd_tok_finish(wd_tokenizer *t, const char *path, char *err, size_t errlen) {
    return finish(t, path, err, errlen);
}

void wd_tokenizer_free(wd_tokenizer *t) {
    if (!t) return;
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->darena);
    free(t->doff);
    free(t->dlen);
    free(t->dlead);
    free(t->vslots);
    free(t->pslots);
    free(t->added);
    free(t);
}

int wd_tokenizer_vocab_size(const wd_tokenizer *t) { return t ? t->n : 0; }
int wd_tokenizer_bos(const wd_tokenizer *t) { return t ? t->bos : -1; }
int wd_tokenizer_eos(const wd_tokenizer *t) { return t ? t->eos : -1; }

/* ---- tokenizer.json --------------------------------------------------- */
static json_object *get_key(json_object *o, const char *k) {
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object)) return NULL;
    if (!json_object_object_get_ex(o, k, &v)) return NULL;
    if (json_object_is_type(v, json_type_null)) return NULL;
    return v;
}

static int get_bool(json_object *o, const char *k, int def) {
    json_object *v = get_key(o, k);
    if (!v) return def;
    return json_object_get_boolean(v);
}

static int type_is(json_object *o, const char *name) {
    json_object *ty = get_key(o, "type");
    return ty && json_object_is_type(ty, json_type_string) &&
           strcmp(json_object_get_string(ty), name) == 0;
}

static const char *type_of(json_object *o) {
    json_object *ty = get_key(o, "type");
    return ty && json_object_is_type(ty, json_type_string) ? json_object_get_string(ty) : "?";
}

static int parse_normalizer(wd_tokenizer *t, json_object *nz, const char *path, char *err,
                            size_t errlen, int depth) {
    if (!nz) return 0;
    if (!json_object_is_type(nz, json_type_object) || depth > 8) {
        snprintf(err, errlen, "%s: \"normalizer\" must be an object", path);
        return 1;
    }
    if (type_is(nz, "Sequence")) {
        json_object *arr = get_key(nz, "normalizers");
        if (!arr || !json_object_is_type(arr, json_type_array)) {
            snprintf(err, errlen, "%s: normalizer Sequence without a \"normalizers\" array", path);
            return 1;
        }
        for (size_t i = 0; i < json_object_array_length(arr); i++)
            if (parse_normalizer(t, json_object_array_get_idx(arr, i), path, err, errlen,
                                 depth + 1))
                return 1;
        return 0;
    }
    if (type_is(nz, "Prepend")) {
        json_object *p = get_key(nz, "prepend");
        if (!p || !json_object_is_type(p, json_type_string) ||
            strcmp(json_object_get_string(p), SPACE_MARK) != 0) {
            snprintf(err, errlen, "%s: unsupported Prepend normalizer (only \"\u2581\")", path);
            return 1;
        }
        t->prepend = PRE_ALWAYS;
        return 0;
    }
    if (type_is(nz, "Replace")) {
        json_object *pat = get_key(nz, "pattern");
        json_object *str = get_key(pat, "String");
        json_object *content = get_key(nz, "content");
        if (!str || !content || !json_object_is_type(str, json_type_string) ||
            !json_object_is_type(content, json_type_string) ||
            strcmp(json_object_get_string(str), " ") != 0 ||
            strcmp(json_object_get_string(content), SPACE_MARK) != 0) {
            snprintf(err, errlen,
                     "%s: unsupported Replace normalizer (only String \" \" -> \"\u2581\")", path);
            return 1;
        }
        t->replace_space = 1;
        return 0;
    }
    snprintf(err, errlen, "%s: unsupported normalizer type \"%s\"", path, type_of(nz));
    return 1;
}

static int parse_pretokenizer(wd_tokenizer *t, json_object *pt, const char *path, char *err,
                              size_t errlen, int depth) {
    if (!pt) return 0;
    if (!json_object_is_type(pt, json_type_object) || depth > 8) {
        snprintf(err, errlen, "%s: \"pre_tokenizer\" must be an object", path);
        return 1;
    }
    if (type_is(pt, "Sequence")) {
        json_object *arr = get_key(pt, "pretokenizers");
        if (!arr || !json_object_is_type(arr, json_type_array)) {
            snprintf(err, errlen, "%s: pre_tokenizer Sequence without a \"pretokenizers\" array",
                     path);
            return 1;
        }
        for (size_t i = 0; i < json_object_array_length(arr); i++)
            if (parse_pretokenizer(t, json_object_array_get_idx(arr, i), path, err, errlen,
                                   depth + 1))
                return 1;
        return 0;
    }
    if (type_is(pt, "Metaspace")) {
        json_object *rep = get_key(pt, "replacement");
        if (rep && (!json_object_is_type(rep, json_type_string) ||
                    strcmp(json_object_get_string(rep), SPACE_MARK) != 0)) {
            snprintf(err, errlen, "%s: unsupported Metaspace replacement (only \"\u2581\")", path);
            return 1;
        }
        t->replace_space = 1;
        json_object *scheme = get_key(pt, "prepend_scheme");
        if (scheme) {
            const char *s = json_object_is_type(scheme, json_type_string)
                                ? json_object_get_string(scheme) : "";
            if (strcmp(s, "always") == 0) t->prepend = PRE_META_ALWAYS;
            else if (strcmp(s, "first") == 0) t->prepend = PRE_META_FIRST;
            else if (strcmp(s, "never") == 0) t->prepend = PRE_NONE;
            else {
                snprintf(err, errlen, "%s: unknown Metaspace prepend_scheme \"%s\"", path, s);
                return 1;
            }
        } else {
            t->prepend = get_bool(pt, "add_prefix_space", 1) ? PRE_META_ALWAYS : PRE_NONE;
        }
        t->meta_split = get_bool(pt, "split", 1);
        return 0;
    }
    snprintf(err, errlen, "%s: unsupported pre_tokenizer type \"%s\" (only Metaspace)", path,
             type_of(pt));
    return 1;
}

/* Integer id in [0, MAX_VOCAB). */
static int json_id(json_object *v, int *id) {
    if (!v || !json_object_is_type(v, json_type_int)) return 1;
    int64_t x = json_object_get_int64(v);
    if (x < 0 || x >= MAX_VOCAB) return 1;
    *id = (int)x;
    return 0;
}

/* bos_token / eos_token of tokenizer_config.json (cpath): a string, an object
 * with a string "content", or null / absent (then def, -1 when not in the
 * vocab). -2 with a message when it is of another type or names no token. */
static int config_token(const wd_tokenizer *t, json_object *cfg, const char *key, const char *def,
                        const char *cpath, char *err, size_t errlen) {
    json_object *v = get_key(cfg, key);
    if (!v || json_object_is_type(v, json_type_null)) return vocab_find(t, def, strlen(def));
    if (json_object_is_type(v, json_type_object)) v = get_key(v, "content");
    if (!v || !json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "%s: \"%s\" must be a string or {\"content\": string}", cpath, key);
        return -2;
    }
    const char *s = json_object_get_string(v);
    int id = vocab_find(t, s, strlen(s));
    if (id < 0)
        snprintf(err, errlen, "%s: %s \"%.80s\" is not a token of the vocab", cpath, key, s);
    return id < 0 ? -2 : id;
}

static int load_json(wd_tokenizer **out, json_object *root, const char *path, char *err,
                     size_t errlen) {
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "%s: top level is not a JSON object", path);
        return 1;
    }
    json_object *model = get_key(root, "model");
    if (!model || !json_object_is_type(model, json_type_object)) {
        snprintf(err, errlen, "%s: missing object \"model\"", path);
        return 1;
    }
    json_object *mtype = get_key(model, "type");
    if (mtype && (!json_object_is_type(mtype, json_type_string) ||
                  strcmp(json_object_get_string(mtype), "BPE") != 0)) {
        snprintf(err, errlen, "%s: model type \"%s\" is not supported (only BPE)", path,
                 json_object_get_string(mtype));
        return 1;
    }
    json_object *vocab = get_key(model, "vocab");
    if (!vocab) {
        snprintf(err, errlen, "%s: missing \"model.vocab\"", path);
        return 1;
    }
    if (!json_object_is_type(vocab, json_type_object)) {
        snprintf(err, errlen, "%s: \"model.vocab\" must be an object {token: id}", path);
        return 1;
    }
    json_object *added = get_key(root, "added_tokens");
    if (added && !json_object_is_type(added, json_type_array)) {
        snprintf(err, errlen, "%s: \"added_tokens\" must be an array", path);
        return 1;
    }
    size_t n_added = added ? json_object_array_length(added) : 0;
    /* vocabulary size: one past the largest id */
    int n = 0;
    json_object_object_foreach(vocab, key, val) {
        int id;
        if (json_id(val, &id)) {
            snprintf(err, errlen, "%s: model.vocab[\"%.40s\"] is not an id in [0, %d)", path, key,
                     MAX_VOCAB);
            return 1;
        }
        if (id + 1 > n) n = id + 1;
    }
    for (size_t i = 0; i < n_added; i++) {
        json_object *a = json_object_array_get_idx(added, i);
        int id;
        json_object *content = get_key(a, "content");
        if (!a || !json_object_is_type(a, json_type_object) || json_id(get_key(a, "id"), &id) ||
            !content || !json_object_is_type(content, json_type_string) ||
            json_object_get_string_len(content) == 0) {
            snprintf(err, errlen,
                     "%s: added_tokens[%zu] needs an integer \"id\" and a non-empty string "
                     "\"content\"",
                     path, i);
            return 1;
        }
        if (id + 1 > n) n = id + 1;
    }
    if (n == 0) {
        snprintf(err, errlen, "%s: \"model.vocab\" is empty", path);
        return 1;
    }
    wd_tokenizer *t = tok_new(KIND_BPE, n);
    if (!t) {
        snprintf(err, errlen, "%s: out of memory", path);
        return 1;
    }
    json_object_object_foreach(vocab, key2, val2) {
        int id = (int)json_object_get_int64(val2);
        if (t->len[id] >= 0) {
            snprintf(err, errlen, "%s: id %d appears twice in model.vocab", path, id);
            goto fail;
        }
        if (wd_tok_set(t, id, key2, strlen(key2), 0.0f, WD_TOKT_NORMAL)) goto oom;
    }
    t->added = calloc(n_added + 1, sizeof(added_tok));
    if (!t->added) goto oom;
    for (size_t i = 0; i < n_added; i++) {
        json_object *a = json_object_array_get_idx(added, i);
        int id = (int)json_object_get_int64(get_key(a, "id"));
        json_object *content = get_key(a, "content");
        const char *s = json_object_get_string(content);
        size_t sl = (size_t)json_object_get_string_len(content);
        int special = get_bool(a, "special", 0);
        if (t->len[id] < 0 || (size_t)t->len[id] != sl || memcmp(tok_text(t, id), s, sl) != 0) {
            if (wd_tok_set(t, id, s, sl, 0.0f, WD_TOKT_NORMAL)) goto oom;
        }
        t->type[id] = special ? WD_TOKT_CONTROL : WD_TOKT_USER;
        added_tok *at = &t->added[t->n_added++];
        at->id = id;
        at->lstrip = (unsigned char)get_bool(a, "lstrip", 0);
        at->rstrip = (unsigned char)get_bool(a, "rstrip", 0);
    }
    t->byte_fallback = get_bool(model, "byte_fallback", 0);
    t->fuse_unk = get_bool(model, "fuse_unk", 0);
    t->ignore_merges = get_bool(model, "ignore_merges", 0);
    if (parse_normalizer(t, get_key(root, "normalizer"), path, err, errlen, 0) ||
        parse_pretokenizer(t, get_key(root, "pre_tokenizer"), path, err, errlen, 0))
        goto fail;
    json_object *unk = get_key(model, "unk_token");
    if (unk && !json_object_is_type(unk, json_type_string)) {
        snprintf(err, errlen, "%s: \"model.unk_token\" must be a string", path);
        goto fail;
    }
    if (finish(t, path, err, errlen)) goto fail;
    if (unk) {
        const char *s = json_object_get_string(unk);
        t->unk = vocab_find(t, s, strlen(s));
        if (t->unk < 0) {
            snprintf(err, errlen, "%s: model.unk_token \"%.40s\" is not in the vocab", path, s);
            goto fail;
        }
        if (t->type[t->unk] == WD_TOKT_NORMAL) t->type[t->unk] = WD_TOKT_UNKNOWN;
        t->dlen[t->unk] = 0;
    }
    /* merges: "a b" strings or [a, b] pairs; rank = position */
    json_object *merges = get_key(model, "merges");
    if (merges && !json_object_is_type(merges, json_type_array)) {
        snprintf(err, errlen, "%s: \"model.merges\" must be an array", path);
        goto fail;
    }
    size_t nm = merges ? json_object_array_length(merges) : 0;
    if (nm > (size_t)MAX_VOCAB * 4) {
        snprintf(err, errlen, "%s: too many merges (%zu)", path, nm);
        goto fail;
    }
    t->pmask = pow2_at_least(nm * 2 + 1) - 1;
    t->pslots = calloc(t->pmask + 1, sizeof(pair_slot));
    if (!t->pslots) goto oom;
    char *cat = NULL;
    size_t cat_cap = 0;
    for (size_t i = 0; i < nm; i++) {
        json_object *m = json_object_array_get_idx(merges, i);
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (m && json_object_is_type(m, json_type_string)) {
            const char *s = json_object_get_string(m);
            const char *sp = strchr(s, ' ');
            if (sp) {
                a = s;
                al = (size_t)(sp - s);
                b = sp + 1;
                bl = strlen(b);
            }
        } else if (m && json_object_is_type(m, json_type_array) &&
                   json_object_array_length(m) == 2) {
            json_object *x = json_object_array_get_idx(m, 0), *y = json_object_array_get_idx(m, 1);
            if (x && y && json_object_is_type(x, json_type_string) &&
                json_object_is_type(y, json_type_string)) {
                a = json_object_get_string(x);
                al = (size_t)json_object_get_string_len(x);
                b = json_object_get_string(y);
                bl = (size_t)json_object_get_string_len(y);
            }
        }
        if (!a) {
            free(cat);
            snprintf(err, errlen, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
                     path, i);
            goto fail;
        }
        int ia = vocab_find(t, a, al), ib = vocab_find(t, b, bl);
        if (al + bl > cat_cap) {
            cat_cap = (al + bl) * 2 + 16;
            char *p = realloc(cat, cat_cap);
            if (!p) {
                free(cat);
                goto oom;
            }
            cat = p;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int iab = vocab_find(t, cat, al + bl);
        if (ia < 0 || ib < 0 || iab < 0) {
            free(cat);
            snprintf(err, errlen, "%s: model.merges[%zu] (\"%.*s\" + \"%.*s\") refers to a token "
                     "missing from the vocab", path, i, (int)(al > 40 ? 40 : al), a,
                     (int)(bl > 40 ? 40 : bl), b);
            goto fail;
        }
        pair_put(t, ia, ib, (int)i, iab);
    }
    free(cat);
    /* BOS / EOS: tokenizer_config.json next to the file, else <s> and </s> */
    {
        json_object *cfg = NULL;
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path + 1) : 0;
        char *cp = malloc(dl + sizeof("tokenizer_config.json"));
        if (cp) {
            memcpy(cp, path, dl);
            strcpy(cp + dl, "tokenizer_config.json");
            int fd = access(cp, F_OK) ? -1 : wd_input_open(cp, WD_MAX_JSON_INPUT, err, errlen);
            int bad = fd < 0 && !access(cp, F_OK);
            if (fd >= 0) {
                cfg = json_object_from_fd(fd);
                close(fd);
                if (!cfg || !json_object_is_type(cfg, json_type_object)) {
                    snprintf(err, errlen, "%s: %s", cp,
                             cfg ? "not a JSON object" : "malformed JSON");
                    bad = 1;
                }
            }
            if (!bad) {
                t->bos = config_token(t, cfg, "bos_token", "<s>", cp, err, errlen);
                t->eos = t->bos < -1 ? -2
                                     : config_token(t, cfg, "eos_token", "</s>", cp, err, errlen);
                bad = t->eos < -1;
            }
            if (cfg) json_object_put(cfg);
            free(cp);
            if (bad) goto fail;
        } else {
            goto oom;
        }
    }
    *out = t;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
fail:
    wd_tokenizer_free(t);
    return 1;
}

int wd_tokenizer_load_json(wd_tokenizer **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    int fd = wd_input_open(path, WD_MAX_JSON_INPUT, err, errlen);
    if (fd < 0) return 1;
    json_object *root = json_object_from_fd(fd);
    close(fd);
    if (!root) {
        snprintf(err, errlen, "%s: malformed JSON: %s", path, json_util_get_last_err());
        size_t l = strlen(err);
        if (l && err[l - 1] == '\n') err[l - 1] = 0;
        return 1;
    }
    int rc = load_json(out, root, path, err, errlen);
    json_object_put(root);
    return rc;
}

/* ---- encoding --------------------------------------------------------- */
typedef struct {
    int start, n, prev, next, id;
} symbol;

typedef struct {
    double key; /* larger first: -rank (BPE) or score (SPM) */
    int pos;    /* left symbol; smaller first on ties */
    int aux;    /* new id (BPE) or merged byte size (SPM) */
} heap_item;

typedef struct {
    int *ids;
    size_t n, cap;
    int oom;
    symbol *sym;
    size_t sym_cap;
    heap_item *heap;
    size_t nheap, heap_cap;
    char *buf; /* normalised segment */
} enc_state;

static void push_id(enc_state *st, int id) {
    if (st->oom) return;
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 64;
        int *p = realloc(st->ids, cap * sizeof(int));
        if (!p) {
            st->oom = 1;
            return;
        }
        st->ids = p;
        st->cap = cap;
    }
    st->ids[st->n++] = id;
}

static int heap_before(const heap_item *a, const heap_item *b) {
    return a->key > b->key || (a->key == b->key && a->pos < b->pos);
}

static void heap_push(enc_state *st, heap_item it) {
    if (st->nheap == st->heap_cap) {
        size_t cap = st->heap_cap ? st->heap_cap * 2 : 256;
        heap_item *p = realloc(st->heap, cap * sizeof(heap_item));
        if (!p) { /* give up merging: the caller sees oom */
            st->oom = 1;
            return;
        }
        st->heap = p;
        st->heap_cap = cap;
    }
    size_t i = st->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&it, &st->heap[p])) break;
        st->heap[i] = st->heap[p];
        i = p;
    }
    st->heap[i] = it;
}

static heap_item heap_pop(enc_state *st) {
    heap_item top = st->heap[0];
    heap_item last = st->heap[--st->nheap];
    size_t i = 0, n = st->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&st->heap[c + 1], &st->heap[c])) c++;
        if (!heap_before(&st->heap[c], &last)) break;
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n) st->heap[i] = last;
    return top;
}

static void add_sym(enc_state *st, int *ns, int start, int n, int id) {
    symbol *s = &st->sym[*ns];
    s->start = start;
    s->n = n;
    s->id = id;
    s->prev = *ns - 1;
    s->next = *ns + 1;
    (*ns)++;
}

/* tokenizers' BPE::merge_word + Word::merge_all on one word w[0..len). */
static void bpe_word(const wd_tokenizer *t, enc_state *st, const char *w, int len) {
    if (len <= 0) return;
    if (t->ignore_merges) {
        int id = vocab_find(t, w, (size_t)len);
        if (id >= 0) {
            push_id(st, id);
            return;
        }
    }
    int ns = 0;
    int unk_start = -1, unk_n = 0;
    for (int i = 0; i < len;) {
        int cl = utf8_len(w + i, len - i);
        int id = vocab_find(t, w + i, (size_t)cl);
        if (id >= 0) {
            if (unk_start >= 0) {
                add_sym(st, &ns, unk_start, unk_n, t->unk);
                unk_start = -1;
            }
            add_sym(st, &ns, i, cl, id);
        } else {
            int all = t->byte_fallback;
            for (int k = 0; all && k < cl; k++) all = t->byte_tok[(unsigned char)w[i + k]] >= 0;
            if (all) {
                /* tokenizers does not flush a pending unk here */
                for (int k = 0; k < cl; k++)
                    add_sym(st, &ns, i + k, 1, t->byte_tok[(unsigned char)w[i + k]]);
            } else if (t->unk >= 0) {
                if (unk_start >= 0 && t->fuse_unk) {
                    unk_n += cl;
                } else {
                    if (unk_start >= 0) add_sym(st, &ns, unk_start, unk_n, t->unk);
                    unk_start = i;
                    unk_n = cl;
                }
            }
        }
        i += cl;
    }
    if (unk_start >= 0) add_sym(st, &ns, unk_start, unk_n, t->unk);
    if (ns == 0) return;
    st->sym[ns - 1].next = -1;
    st->nheap = 0;
    for (int i = 0; i + 1 < ns; i++) {
        const pair_slot *m = pair_find(t, st->sym[i].id, st->sym[i + 1].id);
        if (m) heap_push(st, (heap_item){-(double)m->rank, i, m->id});
    }
    while (st->nheap && !st->oom) {
        heap_item top = heap_pop(st);
        symbol *cur = &st->sym[top.pos];
        if (cur->n == 0 || cur->next < 0) continue;
        symbol *right = &st->sym[cur->next];
        const pair_slot *m = pair_find(t, cur->id, right->id);
        if (!m || m->id != top.aux) continue; /* expired entry */
        cur->id = top.aux;
        cur->n += right->n;
        right->n = 0;
        cur->next = right->next;
        if (cur->next >= 0) st->sym[cur->next].prev = top.pos;
        if (cur->prev >= 0) {
            const pair_slot *pm = pair_find(t, st->sym[cur->prev].id, cur->id);
            if (pm) heap_push(st, (heap_item){-(double)pm->rank, cur->prev, pm->id});
        }
        if (cur->next >= 0) {
            const pair_slot *nm = pair_find(t, cur->id, st->sym[cur->next].id);
            if (nm) heap_push(st, (heap_item){-(double)nm->rank, top.pos, nm->id});
        }
    }
    for (int i = 0; i >= 0; i = st->sym[i].next) push_id(st, st->sym[i].id);
}

static void spm_try_bigram(const wd_tokenizer *t, enc_state *st, const char *w, int l, int r) {
    if (l < 0 || r < 0) return;
    int size = st->sym[l].n + st->sym[r].n;
    int id = vocab_find(t, w + st->sym[l].start, (size_t)size);
    if (id < 0) return;
    heap_push(st, (heap_item){(double)t->score[id], l, size});
}

/* llama.cpp llm_tokenizer_spm_session::tokenize on w[0..len). */
static void spm_text(const wd_tokenizer *t, enc_state *st, const char *w, int len) {
    if (len <= 0) return;
    int ns = 0;
    for (int i = 0; i < len;) {
        int cl = utf8_len(w + i, len - i);
        add_sym(st, &ns, i, cl, -1);
        i += cl;
    }
    st->sym[ns - 1].next = -1;
    st->nheap = 0;
    for (int i = 1; i < ns; i++) spm_try_bigram(t, st, w, i - 1, i);
    while (st->nheap && !st->oom) {
        heap_item top = heap_pop(st);
        symbol *left = &st->sym[top.pos];
        if (left->n == 0 || left->next < 0) continue;
        symbol *right = &st->sym[left->next];
        if (right->n == 0 || left->n + right->n != top.aux) continue;
        left->n += right->n;
        right->n = 0;
        left->next = right->next;
        if (left->next >= 0) st->sym[left->next].prev = top.pos;
        spm_try_bigram(t, st, w, left->prev, top.pos);
        spm_try_bigram(t, st, w, top.pos, left->next);
    }
    for (int i = 0; i >= 0; i = st->sym[i].next) {
        const symbol *s = &st->sym[i];
        int id = vocab_find(t, w + s->start, (size_t)s->n);
        if (id >= 0) {
            push_id(st, id);
            continue;
        }
        for (int k = 0; k < s->n; k++) {
            unsigned char b = (unsigned char)w[s->start + k];
            int bid = t->byte_tok[b] >= 0 ? t->byte_tok[b] : t->byte_single[b];
            if (bid < 0) bid = t->unk;
            if (bid >= 0) push_id(st, bid);
        }
    }
}

/* Normalise text[s..e) (a segment between literal tokens) and run the model. */
static void encode_segment(const wd_tokenizer *t, enc_state *st, const char *text, size_t s,
                           size_t e) {
    if (e <= s) return;
    char *b = st->buf;
    int n = 0;
    for (size_t i = s; i < e; i++) {
        if (text[i] == ' ' && t->replace_space) {
            memcpy(b + n, SPACE_MARK, 3);
            n += 3;
        } else {
            b[n++] = text[i];
        }
    }
    int starts = n >= 3 && memcmp(b, SPACE_MARK, 3) == 0;
    int pre = t->prepend == PRE_ALWAYS || (t->prepend == PRE_META_ALWAYS && !starts) ||
              (t->prepend == PRE_META_FIRST && !starts && s == 0);
    if ((size_t)n + 4 > st->sym_cap) {
        size_t cap = (size_t)n + 4;
        symbol *p = realloc(st->sym, cap * sizeof(symbol));
        if (!p) {
            st->oom = 1;
            return;
        }
        st->sym = p;
        st->sym_cap = cap;
    }
    const char *w = b;
    if (pre) { /* buf has 3 spare bytes in front */
        w = b - 3;
        memcpy(b - 3, SPACE_MARK, 3);
        n += 3;
    }
    if (t->kind == KIND_SPM) {
        spm_text(t, st, w, n);
    } else if (!t->meta_split) {
        bpe_word(t, st, w, n);
    } else { /* Metaspace split: "▁" starts a new word (merged with next) */
        int ws = 0;
        for (int i = 3; i + 3 <= n; i++)
            if (memcmp(w + i, SPACE_MARK, 3) == 0) {
                bpe_word(t, st, w + ws, i - ws);
                ws = i;
                i += 2;
            }
        bpe_word(t, st, w + ws, n - ws);
    }
}

/* Longest literal token starting at text + i, or -1. */
static int match_added(const wd_tokenizer *t, const char *text, size_t i, size_t len, int *k_out) {
    unsigned char c = (unsigned char)text[i];
    for (int k = t->added_start[c]; k < t->added_start[c + 1]; k++) {
        int id = t->added[k].id;
        size_t l = (size_t)t->len[id];
        if (l <= len - i && memcmp(text + i, tok_text(t, id), l) == 0) {
            *k_out = k;
            return id; /* sorted longest first */
        }
    }
    return -1;
}

int wd_tokenizer_encode(const wd_tokenizer *t, const char *text, int add_bos, int **ids,
                        int *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!t || !text) return 1;
    size_t len = strlen(text);
    if (len > (size_t)1 << 28) return 1; /* symbol positions are int */
    enc_state st = {0};
    size_t cap = 3 * len + 8;
    char *buf = malloc(cap);
    if (!buf) {
        st.oom = 1;
        goto done;
    }
    st.buf = buf + 3;
    if (add_bos && t->bos >= 0) push_id(&st, t->bos);
    size_t seg = 0, i = 0;
    while (i < len) {
        int k;
        int id = t->n_added ? match_added(t, text, i, len, &k) : -1;
        if (id < 0) {
            i++;
            continue;
        }
        size_t s = i, e = i + (size_t)t->len[id];
        if (t->added[k].lstrip)
            while (s > seg && is_ws((unsigned char)text[s - 1])) s--;
        if (t->added[k].rstrip)
            while (e < len && is_ws((unsigned char)text[e])) e++;
        encode_segment(t, &st, text, seg, s);
        push_id(&st, id);
        seg = i = e;
    }
    encode_segment(t, &st, text, seg, len);
done:
    free(st.sym);
    free(st.heap);
    free(buf);
    if (st.oom) {
        free(st.ids);
        return 1;
    }
    if (!st.ids) { /* empty result: still hand back a valid pointer */
        st.ids = malloc(sizeof(int));
        if (!st.ids) return 1;
    }
    *ids = st.ids;
    *n_ids = (int)st.n;
    return 0;
}

/* ---- decoding --------------------------------------------------------- */
int wd_tokenizer_piece(const wd_tokenizer *t, int prev, int id, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n) return 0;
    const char *p = t->darena + t->doff[id];
    int n = t->dlen[id];
    if (t->dlead[id] && (prev < 0 || prev == t->bos)) {
        p++;
        n--;
    }
    if (buf && cap > 0) memcpy(buf, p, (size_t)(n < cap ? n : cap));
    return n;
}

char *wd_tokenizer_decode(const wd_tokenizer *t, const int *ids, int n_ids) {
    if (!t) return NULL;
    size_t total = 1;
    for (int i = 0; i < n_ids; i++)
        if (ids[i] >= 0 && ids[i] < t->n) total += (size_t)t->dlen[ids[i]];
    char *s = malloc(total);
    if (!s) return NULL;
    size_t pos = 0;
    for (int i = 0; i < n_ids; i++) {
        int n = wd_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], s + pos, (int)(total - pos));
        pos += (size_t)n;
    }
    s[pos] = 0;
    return s;
}
