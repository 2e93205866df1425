/* SentencePiece encoding (the vocab inside GGUF files): llama.cpp's
 * llm_tokenizer_spm: repeatedly merge the adjacent pair whose concatenation is
 * a token with the highest score (leftmost on ties); leftover characters
 * become byte tokens. */
#include "weights/tokenizer_internal.h"

static void spm_try_bigram(const wd_tokenizer *t, enc_state *st, const char *w, int l, int r) {
    if (l < 0 || r < 0) return;
    int size = st->sym[l].n + st->sym[r].n;
    int id = wd_tok_find(t, w + st->sym[l].start, (size_t)size);
    if (id < 0) return;
    wd_tok_heap_push(st, (heap_item){(double)t->score[id], l, size});
}

/* llama.cpp llm_tokenizer_spm_session::tokenize on w[0..len). */
void wd_tok_spm_text(const wd_tokenizer *t, enc_state *st, const char *w, int len) {
    if (len <= 0) return;
    int ns = 0;
    for (int i = 0; i < len;) {
        int cl = wd_tok_utf8_len(w + i, len - i);
        wd_tok_add_sym(st, &ns, i, cl, -1);
        i += cl;
    }
    st->sym[ns - 1].next = -1;
    st->nheap = 0;
    for (int i = 1; i < ns; i++) spm_try_bigram(t, st, w, i - 1, i);
    while (st->nheap && !st->oom) {
        heap_item top = wd_tok_heap_pop(st);
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
        int id = wd_tok_find(t, w + s->start, (size_t)s->n);
        if (id >= 0) {
            wd_tok_push(st, id);
            continue;
        }
        for (int k = 0; k < s->n; k++) {
            unsigned char b = (unsigned char)w[s->start + k];
            int bid = t->byte_tok[b] >= 0 ? t->byte_tok[b] : t->byte_single[b];
            if (bid < 0) bid = t->unk;
            if (bid >= 0) wd_tok_push(st, bid);
        }
    }
}

