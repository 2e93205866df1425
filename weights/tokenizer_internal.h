/* weights/tokenizer_internal.h: building a wd_tokenizer from a vocabulary that
 * is not a tokenizer.json (private to weights/; the GGUF loader uses it).
 *
 *   wd_tokenizer *t = wd_tok_new_spm(n_vocab);
 *   for each id: wd_tok_set(t, id, text, len, score, type);
 *   wd_tok_set_specials(t, bos, eos, unk, add_space_prefix);
 *   wd_tok_finish(t, path, err, errlen);   // builds the lookup tables
 *
 * SPM: SentencePiece BPE by score, as llama.cpp's llm_tokenizer_spm. */
#ifndef WD_TOKENIZER_INTERNAL_H
#define WD_TOKENIZER_INTERNAL_H

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

wd_tokenizer *wd_tok_new_spm(int n_vocab); /* NULL on allocation failure */
/* Returns 0, or -1 on allocation failure. type: WD_TOKT_* (others: normal). */
int wd_tok_set(wd_tokenizer *t, int id, const char *text, size_t len, float score, int type);
/* Ids < 0 (or >= n_vocab) mean "none". */
void wd_tok_set_specials(wd_tokenizer *t, int bos, int eos, int unk, int add_space_prefix);
/* Builds the hash tables; returns 0, or 1 with "path: ..." in err. */
int wd_tok_finish(wd_tokenizer *t, const char *path, char *err, size_t errlen);

#endif
