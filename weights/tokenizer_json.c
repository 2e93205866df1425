/* Hugging Face tokenizer.json: BPE models of the Llama / Mistral kind
 * (Prepend/Replace normalizers or Metaspace, byte fallback) and byte-level BPE
 * (ByteLevel pre-tokenizer, alone or after Digits / Split regexes that name one
 * of the pre-tokenizers tokenizer_bpe.c implements). */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weights/pretok_patterns.h"
#include "weights/tokenizer_internal.h"

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
            strcmp(json_object_get_string(p), WD_SPACE_MARK) != 0) {
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
            strcmp(json_object_get_string(content), WD_SPACE_MARK) != 0) {
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

/* Byte-level pre-tokenizer steps seen in a tokenizer.json, in order. */
enum { ST_DIGITS, ST_BYTELEVEL_RE, ST_BYTELEVEL, ST_SPLIT0 /* + index into split_pats */ };
typedef struct {
    int step[16], n;
} pt_steps;

static const char *const pat_llama3[] = WD_PAT_LLAMA3, *const pat_qwen2[] = WD_PAT_QWEN2,
                         *const pat_deepseek[] = WD_PAT_DEEPSEEK_LLM;
/* every known Split regex: llama3, qwen2, then deepseek-llm's six */
static const char *split_pat(int i) {
    return i == 0 ? pat_llama3[0] : i == 1 ? pat_qwen2[0] : pat_deepseek[i - 2];
}
#define N_SPLIT_PATS (2 + WD_PAT_DEEPSEEK_LLM_N)

/* a == b, where a regex escape "\r" / "\n" equals the character itself */
static int pat_eq(const char *a, const char *b) {
    for (;;) {
        char ca = *a, cb = *b;
        if (ca == '\\' && (a[1] == 'r' || a[1] == 'n')) ca = a[1] == 'r' ? '\r' : '\n', a++;
        if (cb == '\\' && (b[1] == 'r' || b[1] == 'n')) cb = b[1] == 'r' ? '\r' : '\n', b++;
        if (ca != cb) return 0;
        if (!ca) return 1;
        a++, b++;
    }
}

/* The steps as one of the pre-tokenizers tokenizer_bpe.c implements, or -1. */
static int pretok_of_steps(const pt_steps *s) {
    if (s->n == 1 && s->step[0] == ST_BYTELEVEL_RE) return WD_PRETOK_GPT2;
    if (s->n == 2 && s->step[0] == ST_DIGITS && s->step[1] == ST_BYTELEVEL_RE)
        return WD_PRETOK_SMOLLM;
    if (s->n == 2 && s->step[0] == ST_SPLIT0 && s->step[1] == ST_BYTELEVEL) return WD_PRETOK_LLAMA3;
    if (s->n == 2 && s->step[0] == ST_SPLIT0 + 1 && s->step[1] == ST_BYTELEVEL)
        return WD_PRETOK_QWEN2;
    if (s->n == 1 + WD_PAT_DEEPSEEK_LLM_N && s->step[s->n - 1] == ST_BYTELEVEL) {
        for (int i = 0; i < WD_PAT_DEEPSEEK_LLM_N; i++)
            if (s->step[i] != ST_SPLIT0 + 2 + i) return -1;
        return WD_PRETOK_DEEPSEEK_LLM;
    }
    return -1;
}

static int parse_pretokenizer(wd_tokenizer *t, json_object *pt, pt_steps *st, const char *path,
                              char *err, size_t errlen, int depth) {
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
            if (parse_pretokenizer(t, json_object_array_get_idx(arr, i), st, path, err, errlen,
                                   depth + 1))
                return 1;
        return 0;
    }
    if (type_is(pt, "Metaspace")) {
        json_object *rep = get_key(pt, "replacement");
        if (rep && (!json_object_is_type(rep, json_type_string) ||
                    strcmp(json_object_get_string(rep), WD_SPACE_MARK) != 0)) {
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
    if (st->n >= 16) {
        snprintf(err, errlen, "%s: pre_tokenizer: too many steps", path);
        return 1;
    }
    if (type_is(pt, "ByteLevel")) {
        if (get_bool(pt, "add_prefix_space", 1)) {
            snprintf(err, errlen, "%s: pre_tokenizer ByteLevel with add_prefix_space is not "
                     "supported", path);
            return 1;
        }
        st->step[st->n++] = get_bool(pt, "use_regex", 1) ? ST_BYTELEVEL_RE : ST_BYTELEVEL;
        return 0;
    }
    if (type_is(pt, "Digits")) {
        if (!get_bool(pt, "individual_digits", 0)) {
            snprintf(err, errlen, "%s: pre_tokenizer Digits without individual_digits is not "
                     "supported", path);
            return 1;
        }
        st->step[st->n++] = ST_DIGITS;
        return 0;
    }
    if (type_is(pt, "Split")) {
        json_object *re = get_key(get_key(pt, "pattern"), "Regex"), *beh = get_key(pt, "behavior");
        const char *b = beh && json_object_is_type(beh, json_type_string)
                            ? json_object_get_string(beh) : "";
        if (!re || !json_object_is_type(re, json_type_string) || strcmp(b, "Isolated") ||
            get_bool(pt, "invert", 0)) {
            snprintf(err, errlen, "%s: pre_tokenizer Split must be a Regex with behavior "
                     "Isolated", path);
            return 1;
        }
        for (int i = 0; i < N_SPLIT_PATS; i++)
            if (pat_eq(json_object_get_string(re), split_pat(i))) {
                st->step[st->n++] = ST_SPLIT0 + i;
                return 0;
            }
        snprintf(err, errlen, "%s: pre_tokenizer Split regex \"%.60s\" is not one of the "
                 "supported pre-tokenizers (smollm, llama-bpe, qwen2, deepseek-llm, gpt2)", path,
                 json_object_get_string(re));
        return 1;
    }
    snprintf(err, errlen, "%s: unsupported pre_tokenizer type \"%s\" (Metaspace, ByteLevel, "
             "Digits, Split)", path, type_of(pt));
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
    if (!v || json_object_is_type(v, json_type_null)) return wd_tok_find(t, def, strlen(def));
    if (json_object_is_type(v, json_type_object)) v = get_key(v, "content");
    if (!v || !json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "%s: \"%s\" must be a string or {\"content\": string}", cpath, key);
        return -2;
    }
    const char *s = json_object_get_string(v);
    int id = wd_tok_find(t, s, strlen(s));
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
    wd_tokenizer *t = wd_tok_new(KIND_BPE, n);
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
        if (t->len[id] < 0 || (size_t)t->len[id] != sl || memcmp(wd_tok_text(t, id), s, sl) != 0) {
            if (wd_tok_set(t, id, s, sl, 0.0f, WD_TOKT_NORMAL)) goto oom;
        }
        t->type[id] = special ? WD_TOKT_CONTROL : WD_TOKT_USER;
        added_tok *at = &t->added[t->n_added++];
        at->id = id;
        at->lstrip = (unsigned char)get_bool(a, "lstrip", 0);
        at->rstrip = (unsigned char)get_bool(a, "rstrip", 0);
    }
    t->byte_fallback = get_bool(model, "byte_fallback", 0);
    pt_steps steps = {{0}, 0};
    t->fuse_unk = get_bool(model, "fuse_unk", 0);
    t->ignore_merges = get_bool(model, "ignore_merges", 0);
    if (parse_normalizer(t, get_key(root, "normalizer"), path, err, errlen, 0) ||
        parse_pretokenizer(t, get_key(root, "pre_tokenizer"), &steps, path, err, errlen, 0))
        goto fail;
    if (steps.n) { /* byte-level BPE */
        int pt = pretok_of_steps(&steps);
        if (pt < 0 || t->replace_space || t->prepend != PRE_NONE) {
            snprintf(err, errlen, "%s: this pre_tokenizer sequence is not one of the supported "
                     "byte-level pre-tokenizers (smollm, llama-bpe, qwen2, deepseek-llm, gpt2)",
                     path);
            goto fail;
        }
        t->kind = KIND_BYTELEVEL;
        t->pretok = pt;
        t->byte_fallback = 0;
        t->add_bos = 0; /* tokenizer_config.json's add_bos_token may say otherwise */
    }
    json_object *unk = get_key(model, "unk_token");
    if (unk && !json_object_is_type(unk, json_type_string)) {
        snprintf(err, errlen, "%s: \"model.unk_token\" must be a string", path);
        goto fail;
    }
    if (wd_tok_finish(t, path, err, errlen)) goto fail;
    if (unk) {
        const char *s = json_object_get_string(unk);
        t->unk = wd_tok_find(t, s, strlen(s));
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
    t->pmask = wd_tok_pow2(nm * 2 + 1) - 1;
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
        int ia = wd_tok_find(t, a, al), ib = wd_tok_find(t, b, bl);
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
        int iab = wd_tok_find(t, cat, al + bl);
        if (ia < 0 || ib < 0 || iab < 0) {
            free(cat);
            snprintf(err, errlen, "%s: model.merges[%zu] (\"%.*s\" + \"%.*s\") refers to a token "
                     "missing from the vocab", path, i, (int)(al > 40 ? 40 : al), a,
                     (int)(bl > 40 ? 40 : bl), b);
            goto fail;
        }
        wd_tok_pair_put(t, ia, ib, (int)i, iab);
    }
    free(cat);
    /* BOS / EOS: tokenizer_config.json next to the file, else <s> and </s>; from
     * it also add_bos_token and chat_template */
    {
        json_object *cfg = NULL;
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path + 1) : 0;
        char *cp = malloc(dl + sizeof("tokenizer_config.json"));
        if (!cp) goto oom;
        memcpy(cp, path, dl);
        strcpy(cp + dl, "tokenizer_config.json");
        /* a tokenizer_config.json that is there must be readable, a JSON object,
           and name tokens of the vocab: else one message, not a silent default */
        int fd = access(cp, F_OK) ? -1 : wd_input_open(cp, WD_MAX_JSON_INPUT, err, errlen);
        int bad = fd < 0 && !access(cp, F_OK);
        if (fd >= 0) {
            cfg = json_object_from_fd(fd);
            close(fd);
            if (!cfg || !json_object_is_type(cfg, json_type_object)) {
                snprintf(err, errlen, "%s: %s", cp, cfg ? "not a JSON object" : "malformed JSON");
                bad = 1;
            }
        }
        if (!bad) {
            t->bos = config_token(t, cfg, "bos_token", "<s>", cp, err, errlen);
            t->eos = t->bos < -1 ? -2 : config_token(t, cfg, "eos_token", "</s>", cp, err, errlen);
            bad = t->eos < -1;
        }
        if (!bad) {
            json_object *ab = get_key(cfg, "add_bos_token"), *ct = get_key(cfg, "chat_template");
            if (ab && json_object_is_type(ab, json_type_boolean))
                t->add_bos = json_object_get_boolean(ab);
            if (ct && json_object_is_type(ct, json_type_string)) {
                size_t l = (size_t)json_object_get_string_len(ct);
                if ((t->chat_template = malloc(l + 1)))
                    memcpy(t->chat_template, json_object_get_string(ct), l + 1);
            }
        }
        if (cfg) json_object_put(cfg);
        free(cp);
        if (bad) goto fail;
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
    int fd = wd_input_open(path, WD_MAX_JSON_INPUT, err, errlen); /* no FIFO, no device */
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

