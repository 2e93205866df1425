/* Tokenizers: the vocabulary and what every kind shares.
 *
 * Kinds (see tokenizer_internal.h for the files):
 * - BPE (Hugging Face tokenizer.json, "model": {"type": "BPE"}, Llama /
 *   Mistral style): the input is split on added tokens (matched literally),
 *   each remaining segment is normalised (Prepend "▁" + Replace " " -> "▁",
 *   or the Metaspace pre-tokenizer), then merged by rank from the merges list
 *   exactly as tokenizers' Word::merge_all (lowest rank first, leftmost on
 *   ties); characters missing from the vocab fall back to <0xNN> byte tokens.
 * - SPM (the SentencePiece vocab inside GGUF files): the same splitting and
 *   normalisation, then merges by score (tokenizer_spm.c).
 * - Byte-level BPE (GPT-2 style: GGUF tokenizer.ggml.model "gpt2", HF
 *   ByteLevel): split on added tokens, pre-tokenized by the model's regex,
 *   every byte of a piece mapped to its printable character, then merged by
 *   rank as BPE (tokenizer_bpe.c).
 * Decoding follows SentencePiece for SPM/BPE: "▁" -> " ", <0xNN> pieces -> raw
 * bytes, control/unknown tokens -> nothing, the leading space of the first
 * piece (or of the piece after BOS) stripped; byte-level pieces map their
 * characters back to bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights/tokenizer_internal.h"

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
int wd_tok_utf8_len(const char *s, int n) {
    static const int lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    int l = lookup[(unsigned char)s[0] >> 4];
    if (l > n) return 1;
    for (int i = 1; i < l; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) return 1;
    return l;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }


int wd_tok_find(const wd_tokenizer *t, const char *s, size_t n) {
    if (!t->vslots) return -1;
    size_t i = (size_t)hash_bytes(s, n) & t->vmask;
    for (;;) {
        int v = t->vslots[i];
        if (!v) return -1;
        int id = v - 1;
        if ((size_t)t->len[id] == n && memcmp(wd_tok_text(t, id), s, n) == 0) return id;
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
void wd_tok_pair_put(wd_tokenizer *t, int a, int b, int rank, int id) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = (size_t)hash_u64(key) & t->pmask;
    while (t->pslots[i].key && t->pslots[i].key != key) i = (i + 1) & t->pmask;
    if (!t->pslots[i].key) t->pcount++;
    t->pslots[i].key = key;
    t->pslots[i].rank = rank;
    t->pslots[i].id = id;
}


/* ---- construction ----------------------------------------------------- */
wd_tokenizer *wd_tok_new(int kind, int n) {
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
    t->add_bos = 1;
    return t;
}

int wd_tok_reserve_merges(wd_tokenizer *t, size_t n) {
    free(t->pslots);
    t->pcount = 0;
    t->pmask = wd_tok_pow2(n * 2 + 1) - 1;
    t->pslots = calloc(t->pmask + 1, sizeof(pair_slot));
    return t->pslots ? 0 : -1;
}

int wd_tok_add_merge(wd_tokenizer *t, const char *a, size_t al, const char *b, size_t bl, int rank,
                     char **cat, size_t *cat_cap) {
    if (al + bl > *cat_cap) {
        size_t cap = (al + bl) * 2 + 16;
        char *p = realloc(*cat, cap);
        if (!p) return -1;
        *cat = p;
        *cat_cap = cap;
    }
    memcpy(*cat, a, al);
    memcpy(*cat + al, b, bl);
    int ia = wd_tok_find(t, a, al), ib = wd_tok_find(t, b, bl), iab = wd_tok_find(t, *cat, al + bl);
    if (ia < 0 || ib < 0 || iab < 0) return 1;
    wd_tok_pair_put(t, ia, ib, rank, iab);
    return 0;
}

wd_tokenizer *wd_tok_new_spm(int n_vocab) {
    wd_tokenizer *t = wd_tok_new(KIND_SPM, n_vocab);
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
    unsigned char cx = (unsigned char)wd_tok_text(t, x->id)[0], cy = (unsigned char)wd_tok_text(t, y->id)[0];
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
    t->vmask = wd_tok_pow2((size_t)t->n * 2) - 1;
    t->vslots = calloc(t->vmask + 1, sizeof(int));
    if (!t->vslots) goto oom;
    for (int id = 0; id < t->n; id++) {
        if (t->len[id] == 0) continue;
        const char *s = wd_tok_text(t, id);
        size_t n = (size_t)t->len[id];
        size_t i = (size_t)hash_bytes(s, n) & t->vmask;
        for (;;) {
            int v = t->vslots[i];
            if (!v) {
                t->vslots[i] = id + 1;
                break;
            }
            if ((size_t)t->len[v - 1] == n && memcmp(wd_tok_text(t, v - 1), s, n) == 0) {
                t->vslots[i] = id + 1;
                break;
            }
            i = (i + 1) & t->vmask;
        }
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        t->byte_tok[b] = wd_tok_find(t, buf, 6);
        char one = (char)b;
        t->byte_single[b] = b ? wd_tok_find(t, &one, 1) : -1;
    }
    for (int id = 0; id < t->n && t->kind != KIND_BYTELEVEL; id++)
        if (t->type[id] == WD_TOKT_NORMAL && byte_piece(wd_tok_text(t, id), t->len[id]) >= 0)
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
        const char *s = wd_tok_text(t, id);
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
            if (t->kind == KIND_BYTELEVEL) {
                dn = wd_tok_bytelevel_decode(s, n, d);
                break;
            }
            for (int i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, WD_SPACE_MARK, 3) == 0) {
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
        while (k < t->n_added && (unsigned char)wd_tok_text(t, t->added[k].id)[0] < c) k++;
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
    free(t->chat_template);
    free(t);
}

int wd_tokenizer_vocab_size(const wd_tokenizer *t) { return t ? t->n : 0; }
int wd_tokenizer_bos(const wd_tokenizer *t) { return t ? t->bos : -1; }
int wd_tokenizer_eos(const wd_tokenizer *t) { return t ? t->eos : -1; }
int wd_tokenizer_add_bos(const wd_tokenizer *t) { return t && t->add_bos && t->bos >= 0; }
const char *wd_tokenizer_kind(const wd_tokenizer *t) {
    if (!t) return "none";
    if (t->kind == KIND_SPM) return "spm";
    if (t->kind == KIND_BPE) return "bpe";
    return wd_tok_pretok_name(t->pretok);
}

void wd_tok_push(enc_state *st, int id) {
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

void wd_tok_heap_push(enc_state *st, heap_item it) {
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

heap_item wd_tok_heap_pop(enc_state *st) {
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

void wd_tok_add_sym(enc_state *st, int *ns, int start, int n, int id) {
    symbol *s = &st->sym[*ns];
    s->start = start;
    s->n = n;
    s->id = id;
    s->prev = *ns - 1;
    s->next = *ns + 1;
    (*ns)++;
}

/* tokenizers' BPE::merge_word + Word::merge_all on one word w[0..len). */
void wd_tok_bpe_word(const wd_tokenizer *t, enc_state *st, const char *w, int len) {
    if (len <= 0) return;
    if (t->ignore_merges) {
        int id = wd_tok_find(t, w, (size_t)len);
        if (id >= 0) {
            wd_tok_push(st, id);
            return;
        }
    }
    int ns = 0;
    int unk_start = -1, unk_n = 0;
    for (int i = 0; i < len;) {
        int cl = wd_tok_utf8_len(w + i, len - i);
        int id = wd_tok_find(t, w + i, (size_t)cl);
        if (id >= 0) {
            if (unk_start >= 0) {
                wd_tok_add_sym(st, &ns, unk_start, unk_n, t->unk);
                unk_start = -1;
            }
            wd_tok_add_sym(st, &ns, i, cl, id);
        } else {
            int all = t->byte_fallback;
            for (int k = 0; all && k < cl; k++) all = t->byte_tok[(unsigned char)w[i + k]] >= 0;
            if (all) {
                /* tokenizers does not flush a pending unk here */
                for (int k = 0; k < cl; k++)
                    wd_tok_add_sym(st, &ns, i + k, 1, t->byte_tok[(unsigned char)w[i + k]]);
            } else if (t->unk >= 0 && t->kind != KIND_BYTELEVEL) { /* byte-level: dropped */
                if (unk_start >= 0 && t->fuse_unk) {
                    unk_n += cl;
                } else {
                    if (unk_start >= 0) wd_tok_add_sym(st, &ns, unk_start, unk_n, t->unk);
                    unk_start = i;
                    unk_n = cl;
                }
            }
        }
        i += cl;
    }
    if (unk_start >= 0) wd_tok_add_sym(st, &ns, unk_start, unk_n, t->unk);
    if (ns == 0) return;
    st->sym[ns - 1].next = -1;
    st->nheap = 0;
    for (int i = 0; i + 1 < ns; i++) {
        const pair_slot *m = pair_find(t, st->sym[i].id, st->sym[i + 1].id);
        if (m) wd_tok_heap_push(st, (heap_item){-(double)m->rank, i, m->id});
    }
    while (st->nheap && !st->oom) {
        heap_item top = wd_tok_heap_pop(st);
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
            if (pm) wd_tok_heap_push(st, (heap_item){-(double)pm->rank, cur->prev, pm->id});
        }
        if (cur->next >= 0) {
            const pair_slot *nm = pair_find(t, cur->id, st->sym[cur->next].id);
            if (nm) wd_tok_heap_push(st, (heap_item){-(double)nm->rank, top.pos, nm->id});
        }
    }
    for (int i = 0; i >= 0; i = st->sym[i].next) wd_tok_push(st, st->sym[i].id);
}

/* Normalise text[s..e) (a segment between literal tokens) and run the model. */
static void encode_segment(const wd_tokenizer *t, enc_state *st, const char *text, size_t s,
                           size_t e) {
    if (e <= s) return;
    if (t->kind == KIND_BYTELEVEL) {
        wd_tok_bytelevel_segment(t, st, text, s, e);
        return;
    }
    char *b = st->buf;
    int n = 0;
    for (size_t i = s; i < e; i++) {
        if (text[i] == ' ' && t->replace_space) {
            memcpy(b + n, WD_SPACE_MARK, 3);
            n += 3;
        } else {
            b[n++] = text[i];
        }
    }
    int starts = n >= 3 && memcmp(b, WD_SPACE_MARK, 3) == 0;
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
        memcpy(b - 3, WD_SPACE_MARK, 3);
        n += 3;
    }
    if (t->kind == KIND_SPM) {
        wd_tok_spm_text(t, st, w, n);
    } else if (!t->meta_split) {
        wd_tok_bpe_word(t, st, w, n);
    } else { /* Metaspace split: "▁" starts a new word (merged with next) */
        int ws = 0;
        for (int i = 3; i + 3 <= n; i++)
            if (memcmp(w + i, WD_SPACE_MARK, 3) == 0) {
                wd_tok_bpe_word(t, st, w + ws, i - ws);
                ws = i;
                i += 2;
            }
        wd_tok_bpe_word(t, st, w + ws, n - ws);
    }
}

/* Longest literal token starting at text + i, or -1. */
static int match_added(const wd_tokenizer *t, const char *text, size_t i, size_t len, int *k_out) {
    unsigned char c = (unsigned char)text[i];
    for (int k = t->added_start[c]; k < t->added_start[c + 1]; k++) {
        int id = t->added[k].id;
        size_t l = (size_t)t->len[id];
        if (l <= len - i && memcmp(text + i, wd_tok_text(t, id), l) == 0) {
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
    if (add_bos && t->bos >= 0) wd_tok_push(&st, t->bos);
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
        wd_tok_push(&st, id);
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
