/* Byte-level BPE (GPT-2 style; GGUF tokenizer.ggml.model "gpt2", Hugging Face
 * ByteLevel): the text between literal tokens is cut into pieces by the
 * model's pre-tokenizer, every byte of a piece becomes its printable stand-in
 * character (GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes for U+0100..U+0143 in order), and each piece
 * is merged by rank (wd_tok_bpe_word).
 *
 * The pre-tokenizers are the regexes of llama.cpp (tokenizer.ggml.pre) and of
 * the Hugging Face tokenizer.json files, written out by hand as matchers over
 * code points (general category and White_Space from unicode.c). A
 * pre-tokenizer is a sequence of steps; each step splits every piece of the
 * previous one at its regex's matches, keeping the text between matches as
 * pieces too (tokenizers' Split "isolated"). Within a piece, a regex sees the
 * piece alone: `$` and the lookahead `(?!\S)` stop at its end.
 *   gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   smollm  \p{N}  then gpt2
 *   llama-bpe (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2   as llama-bpe with \p{N} (single digits)
 *   deepseek-llm  [\r\n] ; \s?[letters]+ ; \s?[punctuation]+ ; \s+$ ; [CJK]+ ; \p{N}+
 *           (the letter, punctuation and CJK sets are the explicit ranges below). */
#include <stdlib.h>
#include <string.h>

#include "weights/tokenizer_internal.h"
#include "weights/unicode.h"

static const uint32_t ds_letters[][2] = { /* sorted, merged */
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
    {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377},
    {0x37B, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C},
    {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
    {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
    {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
    {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787},
    {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
static const uint32_t ds_punct[][2] = { /* sorted, merged */
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F},
    {0xFF1A, 0xFF5E},
};
static const uint32_t ds_cjk[][2] = { /* sorted, merged */
    {0x800, 0x9FA5}, {0xAC00, 0xD7FF},
};

static int in_set(const uint32_t (*r)[2], size_t n, uint32_t c) { /* r sorted, disjoint */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c > r[mid][1]) lo = mid + 1;
        else if (c < r[mid][0]) hi = mid;
        else return 1;
    }
    return 0;
}
#define IN(set, c) in_set(set, sizeof(set) / sizeof(set[0]), c)

static int is_l(uint32_t c) { return wd_uc_class(c) == WD_UC_L; }
static int is_n(uint32_t c) { return wd_uc_class(c) == WD_UC_N; }
static int is_s(uint32_t c) { return wd_uc_space(c); }
static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }
static int is_other(uint32_t c) { return !is_s(c) && !is_l(c) && !is_n(c); } /* [^\s\p{L}\p{N}] */

static int run(const uint32_t *c, int i, int end, int (*pred)(uint32_t)) {
    int j = i;
    while (j < end && pred(c[j])) j++;
    return j - i;
}

/* \s+(?!\S)|\s+ at pos (c[pos] is white space): all of the run when it ends
 * the piece or is one character long, else all but its last character. */
static int ws_tail(const uint32_t *c, int pos, int end) {
    int r = pos + run(c, pos, end, is_s);
    return (r < end && r - pos > 1) ? r - pos - 1 : r - pos;
}

/* Matchers: the length of the regex's match at pos (0: none), within [pos, end). */
static int m_gpt2(const uint32_t *c, int pos, int end) {
    uint32_t c0 = c[pos];
    if (c0 == '\'' && pos + 1 < end) {
        uint32_t c1 = c[pos + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
        if (pos + 2 < end) {
            uint32_t c2 = c[pos + 2];
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
                return 3;
        }
    }
    int off = c0 == ' ' && pos + 1 < end ? 1 : 0;
    uint32_t d = c[pos + off];
    if (is_l(d)) return off + run(c, pos + off, end, is_l);
    if (is_n(d)) return off + run(c, pos + off, end, is_n);
    if (is_other(d)) return off + run(c, pos + off, end, is_other);
    return is_s(c0) ? ws_tail(c, pos, end) : 1;
}

static uint32_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int m_llama3(const uint32_t *c, int pos, int end, int max_digits) {
    uint32_t c0 = c[pos];
    if (c0 == '\'' && pos + 1 < end) { /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
        uint32_t c1 = lower_ascii(c[pos + 1]);
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
        if (pos + 2 < end) {
            uint32_t c2 = lower_ascii(c[pos + 2]);
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
                return 3;
        }
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_crlf(c0) && !is_l(c0) && !is_n(c0) && pos + 1 < end && is_l(c[pos + 1]))
        return 1 + run(c, pos + 1, end, is_l);
    if (is_l(c0)) return run(c, pos, end, is_l);
    if (is_n(c0)) { /* \p{N}{1,max} */
        int n = run(c, pos, end, is_n);
        return n < max_digits ? n : max_digits;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    int off = c0 == ' ' && pos + 1 < end ? 1 : 0;
    if (is_other(c[pos + off])) {
        int i = pos + off + run(c, pos + off, end, is_other);
        return i + run(c, i, end, is_crlf) - pos;
    }
    /* \s*[\r\n]+ : up to the last line break of the white-space run */
    int last = -1;
    for (int i = pos; i < end && is_s(c[i]); i++)
        if (is_crlf(c[i])) last = i;
    if (last >= 0) return last + 1 - pos;
    return is_s(c0) ? ws_tail(c, pos, end) : 1;
}

static int m_llama3_3(const uint32_t *c, int pos, int end) { return m_llama3(c, pos, end, 3); }
static int m_qwen2(const uint32_t *c, int pos, int end) { return m_llama3(c, pos, end, 1); }
static int m_digit(const uint32_t *c, int pos, int end) {
    (void)end;
    return is_n(c[pos]);
}
static int m_digits(const uint32_t *c, int pos, int end) { return run(c, pos, end, is_n); }
static int m_crlf(const uint32_t *c, int pos, int end) {
    (void)end;
    return is_crlf(c[pos]);
}
static int is_ds_letter(uint32_t c) { return IN(ds_letters, c); }
static int is_ds_punct(uint32_t c) { return IN(ds_punct, c); }
static int is_ds_cjk(uint32_t c) { return IN(ds_cjk, c); }
/* \s?[set]+ */
static int ws_opt_run(const uint32_t *c, int pos, int end, int (*pred)(uint32_t)) {
    if (is_s(c[pos]) && pos + 1 < end && pred(c[pos + 1])) return 1 + run(c, pos + 1, end, pred);
    return run(c, pos, end, pred);
}
static int m_ds_letters(const uint32_t *c, int pos, int end) {
    return ws_opt_run(c, pos, end, is_ds_letter);
}
static int m_ds_punct(const uint32_t *c, int pos, int end) {
    return ws_opt_run(c, pos, end, is_ds_punct);
}
static int m_ds_cjk(const uint32_t *c, int pos, int end) { return run(c, pos, end, is_ds_cjk); }
/* \s+$ : only the white space that ends the piece (handled by split_step) */
#define M_TRAILING_WS NULL

typedef int (*matcher)(const uint32_t *c, int pos, int end);

typedef struct {
    const char *name;
    int n_steps;
    matcher steps[6];
} pretok_def;

static const pretok_def pretoks[WD_PRETOK_COUNT] = {
    [WD_PRETOK_GPT2] = {"gpt2", 1, {m_gpt2}},
    [WD_PRETOK_SMOLLM] = {"smollm", 2, {m_digit, m_gpt2}},
    [WD_PRETOK_LLAMA3] = {"llama-bpe", 1, {m_llama3_3}},
    [WD_PRETOK_QWEN2] = {"qwen2", 1, {m_qwen2}},
    [WD_PRETOK_DEEPSEEK_LLM] = {"deepseek-llm", 6,
                                {m_crlf, m_ds_letters, m_ds_punct, M_TRAILING_WS, m_ds_cjk,
                                 m_digits}},
};

static const struct {
    const char *name;
    int pretok;
} pretok_names[] = {
    {"gpt2", WD_PRETOK_GPT2},           {"gpt-2", WD_PRETOK_GPT2},
    {"smollm", WD_PRETOK_SMOLLM},       {"starcoder", WD_PRETOK_SMOLLM},
    {"refact", WD_PRETOK_SMOLLM},       {"command-r", WD_PRETOK_SMOLLM},
    {"codeshell", WD_PRETOK_SMOLLM},    {"exaone", WD_PRETOK_SMOLLM},
    {"minerva-7b", WD_PRETOK_SMOLLM},   {"llama-bpe", WD_PRETOK_LLAMA3},
    {"llama3", WD_PRETOK_LLAMA3},       {"llama-v3", WD_PRETOK_LLAMA3},
    {"qwen2", WD_PRETOK_QWEN2},         {"deepseek-llm", WD_PRETOK_DEEPSEEK_LLM},
};

int wd_tok_pretok_by_name(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof(pretok_names) / sizeof(pretok_names[0]); i++)
        if (strlen(pretok_names[i].name) == len && !memcmp(pretok_names[i].name, name, len))
            return pretok_names[i].pretok;
    return -1;
}

const char *wd_tok_pretok_name(int pretok) {
    return pretok >= 0 && pretok < WD_PRETOK_COUNT ? pretoks[pretok].name : "?";
}

wd_tokenizer *wd_tok_new_bytelevel(int n_vocab, int pretok) {
    wd_tokenizer *t = wd_tok_new(KIND_BYTELEVEL, n_vocab);
    if (t) {
        t->pretok = pretok;
        t->byte_fallback = 0;
        /* as llama.cpp: Llama-3 adds BOS and takes a piece that is a token whole
         * (GGUF tokenizer.ggml.add_bos_token overrides the former) */
        t->add_bos = pretok == WD_PRETOK_LLAMA3;
        t->ignore_merges = pretok == WD_PRETOK_LLAMA3;
    }
    return t;
}

/* ---- byte <-> character ------------------------------------------------ */
static uint32_t byte_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256 + b;
    if (b <= 160) return 289 + (b - 127);
    return 323; /* 173 */
}

static int cp_byte(uint32_t cp) {
    if (cp < 256) return byte_cp(cp) == cp ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 127);
    return cp == 323 ? 173 : -1;
}

int wd_tok_bytelevel_decode(const char *s, int n, char *d) {
    int dn = 0;
    for (int i = 0; i < n;) {
        uint32_t cp;
        int l = wd_utf8_next(s + i, (size_t)(n - i), &cp);
        int b = cp_byte(cp);
        if (b >= 0) {
            d[dn++] = (char)b;
        } else { /* not a byte stand-in: keep the text */
            memcpy(d + dn, s + i, (size_t)l);
            dn += l;
        }
        i += l;
    }
    return dn;
}

/* ---- splitting ---------------------------------------------------------- */
typedef struct {
    int *a; /* piece ends (code point indices), ascending; the first starts at 0 */
    int n, cap;
} ends;

static int push_end(ends *e, int v) {
    if (e->n == e->cap) {
        int cap = e->cap ? e->cap * 2 : 64;
        int *p = realloc(e->a, (size_t)cap * sizeof(int));
        if (!p) return 1;
        e->a = p;
        e->cap = cap;
    }
    e->a[e->n++] = v;
    return 0;
}

/* One step: every piece [s, e) of in is split at the matches of m. */
static int split_step(const uint32_t *c, const ends *in, matcher m, ends *out) {
    out->n = 0;
    for (int k = 0, s = 0; k < in->n; s = in->a[k++]) {
        int e = in->a[k];
        if (!m) { /* \s+$ */
            int ts = e;
            while (ts > s && is_s(c[ts - 1])) ts--;
            if (ts > s && ts < e && push_end(out, ts)) return 1;
            if (push_end(out, e)) return 1;
            continue;
        }
        int last = s;
        for (int pos = s; pos < e;) {
            int len = m(c, pos, e);
            if (len <= 0) {
                pos++;
                continue;
            }
            if (pos > last && push_end(out, pos)) return 1;
            pos += len;
            if (push_end(out, pos)) return 1;
            last = pos;
        }
        if (last < e && push_end(out, e)) return 1;
    }
    return 0;
}

int wd_tok_pretokenize(int pretok, const char *text, size_t nb, int **ends_out, int *n_out) {
    *ends_out = NULL;
    *n_out = 0;
    if (pretok < 0 || pretok >= WD_PRETOK_COUNT || nb > (size_t)1 << 28) return 1;
    uint32_t *cp = malloc((nb + 1) * sizeof(uint32_t));
    int *boff = malloc((nb + 1) * sizeof(int));
    ends a = {0}, b = {0};
    int rc = 1;
    if (!cp || !boff) goto done;
    int n = 0;
    for (size_t i = 0; i < nb;) {
        boff[n] = (int)i;
        i += (size_t)wd_utf8_next(text + i, nb - i, &cp[n++]);
    }
    boff[n] = (int)nb;
    if (n > 0 && push_end(&a, n)) goto done;
    const pretok_def *pd = &pretoks[pretok];
    for (int k = 0; k < pd->n_steps; k++) {
        if (split_step(cp, &a, pd->steps[k], &b)) goto done;
        ends tmp = a;
        a = b;
        b = tmp;
    }
    for (int k = 0; k < a.n; k++) a.a[k] = boff[a.a[k]]; /* code points -> bytes */
    *ends_out = a.a;
    *n_out = a.n;
    a.a = NULL;
    rc = 0;
done:
    free(cp);
    free(boff);
    free(a.a);
    free(b.a);
    return rc;
}

void wd_tok_bytelevel_segment(const wd_tokenizer *t, enc_state *st, const char *text, size_t s,
                              size_t e) {
    int *pe = NULL, np = 0;
    size_t nb = e - s;
    if (wd_tok_pretokenize(t->pretok, text + s, nb, &pe, &np)) {
        st->oom = 1;
        return;
    }
    /* symbols: one per byte at most */
    if (nb + 4 > st->sym_cap) {
        symbol *p = realloc(st->sym, (nb + 4) * sizeof(symbol));
        if (!p) {
            free(pe);
            st->oom = 1;
            return;
        }
        st->sym = p;
        st->sym_cap = nb + 4;
    }
    for (int k = 0, b0 = 0; k < np; b0 = pe[k++]) {
        int m = 0;
        for (int i = b0; i < pe[k]; i++) { /* bytes -> stand-in characters (UTF-8) */
            uint32_t c = byte_cp((unsigned char)text[s + (size_t)i]);
            if (c < 0x80) {
                st->buf[m++] = (char)c;
            } else {
                st->buf[m++] = (char)(0xC0 | (c >> 6));
                st->buf[m++] = (char)(0x80 | (c & 0x3F));
            }
        }
        wd_tok_bpe_word(t, st, st->buf, m);
    }
    free(pe);
}
