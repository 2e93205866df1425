/* Recorded router probabilities (.wdpr): header + float32 [token][layer][E]. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

#define HEADER_WORDS 11
#define HEADER_BYTES (4 + 4 * HEADER_WORDS)

struct wd_probs_writer {
    wd_atomic_file a;
    wd_probs shape;
    long n_tokens;
    unsigned char *flags; /* [cap] */
    long cap;
};

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = v & 255, p[1] = (v >> 8) & 255, p[2] = (v >> 16) & 255, p[3] = v >> 24;
}
static uint32_t get_u32(const unsigned char *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int host_is_le(void) {
    uint32_t x = 1;
    unsigned char c;
    memcpy(&c, &x, 1);
    return c == 1;
}

static void header(unsigned char *h, const wd_probs *s, long n_tokens) {
    memcpy(h, "WDPR", 4);
    uint32_t w[HEADER_WORDS] = {2,           s->n_layers,    s->n_experts,      s->top_k,
                                s->hidden,   s->ffn,         s->n_heads,        s->n_kv_heads,
                                s->head_dim, s->weight_bits, (uint32_t)n_tokens};
    for (int i = 0; i < HEADER_WORDS; i++) put_u32(h + 4 + 4 * i, w[i]);
}

int wd_probs_write_open(wd_probs_writer **out, const char *path, const wd_probs *s, char *err,
                        size_t errlen) {
    *out = NULL;
    if (!host_is_le()) return wd_fail(err, errlen, "%s: big-endian hosts are not supported", path);
    if (s->n_layers < 1 || s->n_experts < 1 || s->top_k < 1 || s->top_k > s->n_experts ||
        s->hidden < 1 || s->ffn < 1)
        return wd_fail(err, errlen, "%s: bad shape for a probability file", path);
    wd_probs_writer *w = calloc(1, sizeof *w);
    if (!w) return wd_fail(err, errlen, "%s: out of memory", path);
    w->shape = *s;
    w->shape.probs = NULL;
    if (wd_atomic_open(&w->a, path, err, errlen)) return free(w), 1;
    unsigned char h[HEADER_BYTES];
    header(h, s, 0);
    if (fwrite(h, 1, sizeof h, w->a.f) != sizeof h) {
        wd_probs_write_abort(w);
        return wd_fail(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    }
    *out = w;
    return 0;
}

int wd_probs_write_token_flags(wd_probs_writer *w, const float *probs, unsigned flags, char *err,
                               size_t errlen) {
    size_t n = (size_t)w->shape.n_layers * w->shape.n_experts;
    if (w->n_tokens == w->cap) {
        long c = w->cap ? 2 * w->cap : 1024;
        unsigned char *f = realloc(w->flags, (size_t)c);
        if (!f) return wd_fail(err, errlen, "%s: out of memory", w->a.path);
        w->flags = f, w->cap = c;
    }
    if (fwrite(probs, sizeof(float), n, w->a.f) != n)
        return wd_fail(err, errlen, "%s: cannot write: %s", w->a.path, strerror(errno));
    w->flags[w->n_tokens++] = (unsigned char)flags;
    return 0;
}

int wd_probs_write_token(wd_probs_writer *w, const float *probs, char *err, size_t errlen) {
    return wd_probs_write_token_flags(w, probs, WD_PROBS_FORWARD | WD_PROBS_SAMPLE, err, errlen);
}

int wd_probs_write_close(wd_probs_writer *w, char *err, size_t errlen) {
    unsigned char h[HEADER_BYTES];
    header(h, &w->shape, w->n_tokens);
    if (w->n_tokens && fwrite(w->flags, 1, (size_t)w->n_tokens, w->a.f) != (size_t)w->n_tokens) {
        snprintf(err, errlen, "%s: cannot write: %s", w->a.path, strerror(errno));
        wd_probs_write_abort(w);
        return 1;
    }
    if (fseek(w->a.f, 0, SEEK_SET) || fwrite(h, 1, sizeof h, w->a.f) != sizeof h) {
        snprintf(err, errlen, "%s: cannot write: %s", w->a.path, strerror(errno));
        wd_probs_write_abort(w);
        return 1;
    }
    int rc = wd_atomic_commit(&w->a, err, errlen);
    free(w->flags);
    free(w);
    return rc;
}

void wd_probs_write_abort(wd_probs_writer *w) {
    if (!w) return;
    wd_atomic_abort(&w->a);
    free(w->flags);
    free(w);
}

int wd_probs_read(wd_probs *p, const char *path, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (!host_is_le()) return wd_fail(err, errlen, "%s: big-endian hosts are not supported", path);
    FILE *f = fopen(path, "rb");
    if (!f) return wd_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    unsigned char h[HEADER_BYTES];
    int rc = 1;
    if (fread(h, 1, sizeof h, f) != sizeof h || memcmp(h, "WDPR", 4)) {
        snprintf(err, errlen, "%s: not a router-probability file (magic WDPR)", path);
        goto out;
    }
    uint32_t w[HEADER_WORDS];
    for (int i = 0; i < HEADER_WORDS; i++) w[i] = get_u32(h + 4 + 4 * i);
    if (w[0] != 1 && w[0] != 2) {
        snprintf(err, errlen, "%s: version %u (this build reads 1 and 2)", path, w[0]);
        goto out;
    }
    p->n_layers = (int)w[1], p->n_experts = (int)w[2], p->top_k = (int)w[3];
    p->hidden = (int)w[4], p->ffn = (int)w[5], p->n_heads = (int)w[6], p->n_kv_heads = (int)w[7];
    p->head_dim = (int)w[8], p->weight_bits = (int)w[9], p->n_tokens = (long)w[10];
    if (p->n_layers < 1 || p->n_layers > 4096 || p->n_experts < 1 || p->n_experts > 4096 ||
        p->top_k < 1 || p->top_k > p->n_experts || p->hidden < 1 || p->ffn < 1 ||
        p->hidden > (1 << 24) || p->ffn > (1 << 26) || p->weight_bits > 64) {
        snprintf(err, errlen, "%s: bad header (layers %d, experts %d, top_k %d, hidden %d, ffn %d)",
                 path, p->n_layers, p->n_experts, p->top_k, p->hidden, p->ffn);
        goto out;
    }
    size_t per = (size_t)p->n_layers * p->n_experts, n = per * (size_t)p->n_tokens;
    if (fseek(f, 0, SEEK_END)) goto io;
    long size = ftell(f);
    if (size < 0) goto io;
    size_t nflags = w[0] == 2 ? (size_t)p->n_tokens : 0;
    if ((size_t)size != HEADER_BYTES + n * sizeof(float) + nflags) {
        snprintf(err, errlen,
                 "%s: size %ld does not match %ld tokens x %d layers x %d experts "
                 "(truncated or not closed?)",
                 path, size, p->n_tokens, p->n_layers, p->n_experts);
        goto out;
    }
    if (fseek(f, HEADER_BYTES, SEEK_SET)) goto io;
    p->probs = malloc((n ? n : 1) * sizeof(float));
    if (!p->probs) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (fread(p->probs, sizeof(float), n, f) != n) goto io;
    if (!(p->flags = malloc(p->n_tokens ? (size_t)p->n_tokens : 1))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (nflags && fread(p->flags, 1, nflags, f) != nflags) goto io;
    for (long t = 0; t < p->n_tokens; t++) {
        if (!nflags) p->flags[t] = WD_PROBS_FORWARD | WD_PROBS_SAMPLE;
        unsigned char g = p->flags[t];
        int fwd = (g & WD_PROBS_FORWARD) != 0, smp = (g & WD_PROBS_SAMPLE) != 0;
        /* a pass starts at the first token; inside a pass the phase stays and no
           sample starts; a decode pass is a sample of its own */
        if (g > 7 || (t == 0 && !fwd) ||
            (!fwd && (smp || ((g ^ p->flags[t - 1]) & WD_PROBS_PREFILL))) ||
            (fwd && !(g & WD_PROBS_PREFILL) && !smp)) {
            snprintf(err, errlen, "%s: token %ld: bad phase flags %u", path, t, g);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!(p->probs[i] >= 0.0f && p->probs[i] <= 1.0f)) {
            snprintf(err, errlen, "%s: token %zu layer %zu: probability %g is not in [0, 1]", path,
                     i / per, i % per / p->n_experts, p->probs[i]);
            goto out;
        }
    rc = 0;
    goto out;
io:
    snprintf(err, errlen, "%s: cannot read", path);
out:
    fclose(f);
    if (rc) wd_probs_free(p);
    return rc;
}

void wd_probs_free(wd_probs *p) {
    free(p->probs), free(p->flags);
    p->probs = NULL, p->flags = NULL;
}

wd_emu_shape wd_probs_shape(const wd_probs *p) {
    wd_emu_shape s = {p->hidden,
                      p->ffn,
                      p->n_layers,
                      p->n_experts,
                      p->top_k,
                      p->weight_bits > 0 ? p->weight_bits / 8.0 : 2.0,
                      p->n_heads,
                      p->n_kv_heads,
                      p->head_dim,
                      0,
                      0};
    return s;
}
