/* weights/tokenizer_internal.h: the tokenizer's shared structure (private to
 * weights/). The tokenizer is split by kind:
 *   tokenizer.c       vocabulary, lookup tables, merges by rank (BPE), literal
 *                     (added/special) tokens, encode dispatch, decoding
 *   tokenizer_spm.c   SentencePiece by score (llama.cpp llm_tokenizer_spm)
 *   tokenizer_bpe.c   byte-level BPE (GPT-2 style): byte <-> character map and
 *                     the pre-tokenizers (regex splits written by hand)
 *   tokenizer_json.c  Hugging Face tokenizer.json
 * and GGUF's tokenizer.ggml.* is read by gguf.c through this interface:
 *
 *   wd_tokenizer *t = wd_tok_new_spm(n_vocab);        (or wd_tok_new_bytelevel)
 *   for each id: wd_tok_set(t, id, text, len, score, type);
 *   wd_tok_set_specials(t, bos, eos, unk, add_space_prefix);
 *   wd_tok_finish(t, path, err, errlen);   // builds the lookup tables
 *   (byte-level: then wd_tok_add_merge for each merge, rank = order) */
#ifndef WD_TOKENIZER_INTERNAL_H
#define WD_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "weights/weights.h"

/* Token types, numbered as SentencePiece / GGUF tokenizer.ggml.token_type. */
enum {
    WD_TOKT_NORMAL = 1,
    WD_TOKT_UNKNOWN = 2,
    WD_TOKT_CONTROL = 3,
    WD_TOKT_USER = 4, /* user-defined: matched literally in the input */
    WD_TOKT_UNUSED = 5,
    WD_TOKT_BYTE = 6 /* <0xNN> byte-fallback piece */
};

#define MAX_VOCAB (1 << 24)
#define WD_SPACE_MARK "\xE2\x96\x81" /* U+2581 "▁" */

enum { KIND_BPE, KIND_SPM, KIND_BYTELEVEL };
/* How "▁" is put in front of a segment (SPM and Llama BPE). */
enum {
    PRE_NONE,
    PRE_ALWAYS,      /* Prepend normalizer / llama.cpp add_space_prefix: unconditionally */
    PRE_META_ALWAYS, /* Metaspace prepend_scheme "always": unless it starts with "▁" */
    PRE_META_FIRST   /* Metaspace prepend_scheme "first": only at offset 0 of the text */
};
/* Byte-level pre-tokenizers (regex splits), as llama.cpp's tokenizer.ggml.pre names. */
enum {
    WD_PRETOK_GPT2,         /* GPT-2 ByteLevel regex */
    WD_PRETOK_SMOLLM,       /* digits one by one, then GPT-2 */
    WD_PRETOK_LLAMA3,       /* "llama-bpe": Llama-3 regex, digits in runs of <= 3 */
    WD_PRETOK_QWEN2,        /* Llama-3 regex with single digits */
    WD_PRETOK_DEEPSEEK_LLM, /* deepseek-llm: six splits by character classes */
    WD_PRETOK_COUNT
};

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
    int pretok;          /* byte-level: WD_PRETOK_* */
    int add_bos;         /* the model's own tokenizer adds BOS */
    char *chat_template; /* the model's chat template (Jinja text), or NULL */
    added_tok *added; /* literal tokens, sorted by first byte, then longest first */
    int n_added;
    int added_start[257];
};

/* ---- encoding state, shared by the encoders ---- */
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

static inline const char *wd_tok_text(const wd_tokenizer *t, int id) { return t->arena + t->off[id]; }
static inline size_t wd_tok_pow2(size_t n) {
    size_t p = 16;
    while (p < n) p *= 2;
    return p;
}

wd_tokenizer *wd_tok_new(int kind, int n); /* NULL on allocation failure */
wd_tokenizer *wd_tok_new_spm(int n_vocab);
/* Byte-level BPE with pre-tokenizer pretok (WD_PRETOK_*). */
wd_tokenizer *wd_tok_new_bytelevel(int n_vocab, int pretok);
/* Returns 0, or -1 on allocation failure. type: WD_TOKT_* (others: normal). */
int wd_tok_set(wd_tokenizer *t, int id, const char *text, size_t len, float score, int type);
/* Ids < 0 (or >= n_vocab) mean "none". */
void wd_tok_set_specials(wd_tokenizer *t, int bos, int eos, int unk, int add_space_prefix);
/* Builds the hash tables; returns 0, or 1 with "path: ..." in err. */
int wd_tok_finish(wd_tokenizer *t, const char *path, char *err, size_t errlen);
int wd_tok_find(const wd_tokenizer *t, const char *s, size_t n); /* id or -1 */
/* Room for n merges (after wd_tok_finish); returns 0 or -1 (out of memory). */
int wd_tok_reserve_merges(wd_tokenizer *t, size_t n);
/* Merge "a b" of rank `rank`: 0, or 1 when a token is missing from the vocab. */
int wd_tok_add_merge(wd_tokenizer *t, const char *a, size_t al, const char *b, size_t bl, int rank,
                     char **cat, size_t *cat_cap);
void wd_tok_pair_put(wd_tokenizer *t, int a, int b, int rank, int id);
/* Pre-tokenizer by llama.cpp name ("smollm", "llama-bpe", ...), or -1. */
int wd_tok_pretok_by_name(const char *name, size_t len);
const char *wd_tok_pretok_name(int pretok);

int wd_tok_utf8_len(const char *s, int n);
void wd_tok_push(enc_state *st, int id);
void wd_tok_heap_push(enc_state *st, heap_item it);
heap_item wd_tok_heap_pop(enc_state *st);
void wd_tok_add_sym(enc_state *st, int *ns, int start, int n, int id);
/* BPE merges by rank on one word w[0..len) (tokenizers' Word::merge_all). */
void wd_tok_bpe_word(const wd_tokenizer *t, enc_state *st, const char *w, int len);
/* SentencePiece by score on w[0..len). */
void wd_tok_spm_text(const wd_tokenizer *t, enc_state *st, const char *w, int len);
/* Byte-level: pre-tokenize text[s..e) and merge each piece. */
void wd_tok_bytelevel_segment(const wd_tokenizer *t, enc_state *st, const char *text, size_t s,
                              size_t e);
/* The pre-tokenizer's pieces of text[0..len): *ends (malloc'd) holds the byte
 * offset where each piece ends, ascending (the first starts at 0). 0 or 1. */
int wd_tok_pretokenize(int pretok, const char *text, size_t len, int **ends, int *n);
/* Byte-level decoding of a token's text into d (at most n bytes); returns the length. */
int wd_tok_bytelevel_decode(const char *s, int n, char *d);

#endif
