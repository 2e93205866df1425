/* GGUF (llama.cpp) reader: versions 2 and 3, memory-mapped.
 *
 * File layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv;
 * n_kv x (string key, u32 type, value); n_tensors x (string name, u32 n_dims,
 * u64 ne[n_dims] (innermost first), u32 ggml type, u64 offset); padding to
 * general.alignment (default 32); tensor data (offsets relative to its start).
 * A string is u64 length + bytes; an array is u32 element type + u64 count +
 * elements.
 *
 * wd_gguf_open maps a llama-architecture file (Mixtral = llama with
 * expert_count) onto Hugging Face Mixtral names: Q/K rows are converted from
 * the interleaved order llama.cpp's convert script writes back to rotate-half
 * order (owned copies), stacked experts become per-expert views into the
 * mapping. Every length, count and offset is checked against the file size
 * with overflow-safe arithmetic before it is used. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weights/tensors_internal.h"
#include "weights/tokenizer_internal.h"

enum {
    GT_U8 = 0, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL,
    GT_STRING, GT_ARRAY, GT_U64, GT_I64, GT_F64, GT_COUNT
};

/* ggml tensor types this reader maps, and names of the others for messages */
enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q8_0 = 8, GGML_Q4_K = 12,
    GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_BF16 = 30
};

/* The wdmoe dtype of a ggml tensor type; 0 when supported. */
static int ggml_dtype(uint32_t t, wd_dtype *dt) {
    switch (t) {
    case GGML_F32: *dt = WD_DT_F32; return 0;
    case GGML_F16: *dt = WD_DT_F16; return 0;
    case GGML_BF16: *dt = WD_DT_BF16; return 0;
    case GGML_Q8_0: *dt = WD_DT_Q8_0; return 0;
    case GGML_Q4_0: *dt = WD_DT_Q4_0; return 0;
    case GGML_Q4_1: *dt = WD_DT_Q4_1; return 0;
    case GGML_Q4_K: *dt = WD_DT_Q4_K; return 0;
    case GGML_Q5_K: *dt = WD_DT_Q5_K; return 0;
    case GGML_Q6_K: *dt = WD_DT_Q6_K; return 0;
    default: return 1;
    }
}

static const char *ggml_type_name(uint32_t t) {
    static const char *names[] = {
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
        "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
        "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0",
        "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
    return t < sizeof(names) / sizeof(names[0]) ? names[t] : NULL;
}

#define MAX_NAME 256
#define MAX_DEPTH 4

typedef struct {
    const char *key;
    size_t klen;
    uint32_t type;
    size_t voff;    /* value (for arrays: the first element) */
    uint32_t atype; /* arrays */
    uint64_t alen;
} gguf_kv;

typedef struct {
    const char *name; /* NUL-terminated copy */
    int ndim;
    int64_t ne[4];
    uint32_t type;
    uint64_t offset;
    size_t nbytes;
} gguf_ti;

typedef struct {
    const char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    gguf_kv *kv;
    size_t n_kv;
    gguf_ti *ti;
    size_t n_ti;
    size_t align, data_start;
    char *names; /* tensor names */
} gguf_file;

typedef struct {
    const gguf_file *f;
    size_t off;
    char *err;
    size_t errlen;
} cursor;

/* ---- bounds-checked reading ------------------------------------------ */
static int need(cursor *c, size_t n, const char *what) {
    if (n > c->f->size || c->off > c->f->size - n) {
        snprintf(c->err, c->errlen, "%s: truncated file: %s at offset %zu needs %zu bytes, file has %zu",
                 c->f->path, what, c->off, n, c->f->size);
        return 1;
    }
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return 1;
    memcpy(v, c->f->map + c->off, 4);
    c->off += 4;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return 1;
    memcpy(v, c->f->map + c->off, 8);
    c->off += 8;
    return 0;
}

static int rd_str(cursor *c, const char **s, size_t *len, const char *what) {
    uint64_t n;
    if (rd_u64(c, &n, what)) return 1;
    if (n > c->f->size || c->off > c->f->size - n) {
        snprintf(c->err, c->errlen,
                 "%s: %s at offset %zu has length %llu, past the end of the file (%zu bytes)",
                 c->f->path, what, c->off - 8, (unsigned long long)n, c->f->size);
        return 1;
    }
    *s = (const char *)c->f->map + c->off;
    *len = (size_t)n;
    c->off += (size_t)n;
    return 0;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GT_U8: case GT_I8: case GT_BOOL: return 1;
    case GT_U16: case GT_I16: return 2;
    case GT_U32: case GT_I32: case GT_F32: return 4;
    case GT_U64: case GT_I64: case GT_F64: return 8;
    default: return 0;
    }
}

static const char *gt_name(uint32_t t) {
    static const char *n[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                              "bool", "string", "array", "uint64", "int64", "float64"};
    return t < GT_COUNT ? n[t] : "unknown";
}

/* Skips one value of type t (validating it); depth limits nested arrays. */
static int skip_value(cursor *c, uint32_t t, int depth, const char *key) {
    if (t >= GT_COUNT) {
        snprintf(c->err, c->errlen, "%s: metadata \"%s\": unknown value type %u", c->f->path, key, t);
        return 1;
    }
    if (t == GT_STRING) {
        const char *s;
        size_t l;
        return rd_str(c, &s, &l, "metadata string");
    }
    if (t != GT_ARRAY) {
        size_t n = scalar_size(t);
        if (need(c, n, "metadata value")) return 1;
        c->off += n;
        return 0;
    }
    if (depth >= MAX_DEPTH) {
        snprintf(c->err, c->errlen, "%s: metadata \"%s\": arrays nested too deep", c->f->path, key);
        return 1;
    }
    uint32_t at;
    uint64_t n;
    if (rd_u32(c, &at, "array type") || rd_u64(c, &n, "array length")) return 1;
    if (at >= GT_COUNT) {
        snprintf(c->err, c->errlen, "%s: metadata \"%s\": unknown array element type %u",
                 c->f->path, key, at);
        return 1;
    }
    /* each element takes at least this many bytes: reject impossible counts up front */
    size_t min = at == GT_STRING ? 8 : at == GT_ARRAY ? 12 : scalar_size(at);
    size_t left = c->f->size - c->off;
    if (n > left / min) {
        snprintf(c->err, c->errlen,
                 "%s: metadata \"%s\": array of %llu %s elements runs past the end of the file",
                 c->f->path, key, (unsigned long long)n, gt_name(at));
        return 1;
    }
    if (at != GT_STRING && at != GT_ARRAY) {
        c->off += (size_t)n * min;
        return 0;
    }
    for (uint64_t i = 0; i < n; i++)
        if (skip_value(c, at, depth + 1, key)) return 1;
    return 0;
}

static uint64_t hash_key(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void gguf_close(gguf_file *f) {
    if (f->map) munmap((void *)f->map, f->size);
    free(f->kv);
    free(f->ti);
    free(f->names);
    memset(f, 0, sizeof(*f));
}

static const gguf_kv *find_kv(const gguf_file *f, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].klen == kl && memcmp(f->kv[i].key, key, kl) == 0) return &f->kv[i];
    return NULL;
}

static int check_dup_keys(gguf_file *f, char *err, size_t errlen) {
    size_t ns = 16;
    while (ns < f->n_kv * 2) ns *= 2;
    size_t *slots = calloc(ns, sizeof(size_t));
    if (!slots) {
        snprintf(err, errlen, "%s: out of memory", f->path);
        return 1;
    }
    for (size_t i = 0; i < f->n_kv; i++) {
        size_t s = (size_t)hash_key(f->kv[i].key, f->kv[i].klen) & (ns - 1);
        while (slots[s]) {
            const gguf_kv *o = &f->kv[slots[s] - 1];
            if (o->klen == f->kv[i].klen && memcmp(o->key, f->kv[i].key, o->klen) == 0) {
                snprintf(err, errlen, "%s: duplicate metadata key \"%.*s\"", f->path,
                         (int)(o->klen > 100 ? 100 : o->klen), o->key);
                free(slots);
                return 1;
            }
            s = (s + 1) & (ns - 1);
        }
        slots[s] = i + 1;
    }
    free(slots);
    return 0;
}

/* Maps and parses the whole header; validates every tensor's byte range
 * (tensors = 0: only the metadata is wanted, tensor types are not checked). */
static int gguf_parse(gguf_file *f, const char *path, int tensors, char *err, size_t errlen) {
    memset(f, 0, sizeof(*f));
    f->path = path;
    int fd = wd_input_open(path, 0, err, errlen); /* regular: a FIFO would block open */
    if (fd < 0) return 1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return 1;
    }
    if (sb.st_size < 24) {
        snprintf(err, errlen, "%s: truncated file: %lld bytes is shorter than a GGUF header",
                 path, (long long)sb.st_size);
        close(fd);
        return 1;
    }
    f->size = (size_t)sb.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
        f->size = 0;
        return 1;
    }
    f->map = m;
    cursor c = {f, 0, err, errlen};
    if (memcmp(f->map, "GGUF", 4) != 0) {
        snprintf(err, errlen, "%s: not a GGUF file (bad magic)", path);
        goto fail;
    }
    c.off = 4;
    uint64_t n_ti, n_kv;
    if (rd_u32(&c, &f->version, "version")) goto fail;
    if (f->version != 2 && f->version != 3) {
        if (f->version == 1)
            snprintf(err, errlen, "%s: GGUF version 1 is not supported (need 2 or 3)", path);
        else
            snprintf(err, errlen, "%s: unknown GGUF version %u (need 2 or 3%s)", path, f->version,
                     (f->version & 0xFFFF) == 0 ? "; a big-endian file?" : "");
        goto fail;
    }
    if (rd_u64(&c, &n_ti, "tensor count") || rd_u64(&c, &n_kv, "metadata count")) goto fail;
    /* a key-value pair takes >= 13 bytes, a tensor info >= 24 */
    if (n_kv > (f->size - c.off) / 13 || n_ti > (f->size - c.off) / 24) {
        snprintf(err, errlen, "%s: %llu metadata entries and %llu tensors cannot fit in %zu bytes",
                 path, (unsigned long long)n_kv, (unsigned long long)n_ti, f->size);
        goto fail;
    }
    f->kv = calloc((size_t)n_kv + 1, sizeof(gguf_kv));
    f->ti = calloc((size_t)n_ti + 1, sizeof(gguf_ti));
    if (!f->kv || !f->ti) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        if (rd_str(&c, &kv->key, &kv->klen, "metadata key") ||
            rd_u32(&c, &kv->type, "metadata value type"))
            goto fail;
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(kv->klen > 100 ? 100 : kv->klen), kv->key);
        if (kv->type == GT_ARRAY) {
            size_t at = c.off;
            if (rd_u32(&c, &kv->atype, "array type") || rd_u64(&c, &kv->alen, "array length"))
                goto fail;
            kv->voff = c.off;
            c.off = at;
        } else {
            kv->voff = c.off;
        }
        if (skip_value(&c, kv->type, 0, key)) goto fail;
        f->n_kv++;
    }
    if (check_dup_keys(f, err, errlen)) goto fail;
    /* alignment */
    f->align = 32;
    const gguf_kv *al = find_kv(f, "general.alignment");
    if (al) {
        uint32_t a = 0;
        if (al->type != GT_U32) {
            snprintf(err, errlen, "%s: general.alignment must be uint32, not %s", path,
                     gt_name(al->type));
            goto fail;
        }
        memcpy(&a, f->map + al->voff, 4);
        if (a == 0 || (a & (a - 1)) || a > (1u << 20)) {
            snprintf(err, errlen, "%s: general.alignment %u is not a power of two", path, a);
            goto fail;
        }
        f->align = a;
    }
    /* tensor infos */
    size_t names_len = 0;
    size_t ti_start = c.off;
    for (size_t pass = 0; pass < 2; pass++) { /* pass 0: sizes; pass 1: copy names */
        c.off = ti_start;
        size_t npos = 0;
        for (size_t i = 0; i < n_ti; i++) {
            gguf_ti *t = &f->ti[i];
            const char *name;
            size_t nl;
            uint32_t nd;
            if (rd_str(&c, &name, &nl, "tensor name")) goto fail;
            if (nl == 0 || nl >= MAX_NAME || memchr(name, 0, nl)) {
                snprintf(err, errlen, "%s: tensor %zu has an invalid name (length %zu)", path, i, nl);
                goto fail;
            }
            if (pass == 0) {
                names_len += nl + 1;
            } else {
                memcpy(f->names + npos, name, nl);
                f->names[npos + nl] = 0;
                t->name = f->names + npos;
                npos += nl + 1;
            }
            if (rd_u32(&c, &nd, "tensor dimension count")) goto fail;
            if (nd < 1 || nd > 4) {
                snprintf(err, errlen, "%s: tensor \"%.*s\" has %u dimensions (1 to 4 supported)",
                         path, (int)nl, name, nd);
                goto fail;
            }
            t->ndim = (int)nd;
            for (uint32_t d = 0; d < nd; d++) {
                uint64_t ne;
                if (rd_u64(&c, &ne, "tensor dimension")) goto fail;
                if (ne == 0 || ne > ((uint64_t)1 << 40)) {
                    snprintf(err, errlen, "%s: tensor \"%.*s\" has dimension %u = %llu", path,
                             (int)nl, name, d, (unsigned long long)ne);
                    goto fail;
                }
                t->ne[d] = (int64_t)ne;
            }
            if (rd_u32(&c, &t->type, "tensor type") || rd_u64(&c, &t->offset, "tensor offset"))
                goto fail;
        }
        if (pass == 0) {
            f->names = malloc(names_len + 1);
            if (!f->names) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
        }
    }
    f->n_ti = (size_t)n_ti;
    /* data section */
    size_t hdr_end = c.off;
    f->data_start = (hdr_end + f->align - 1) / f->align * f->align;
    for (size_t i = 0; tensors && i < f->n_ti; i++) {
        gguf_ti *t = &f->ti[i];
        wd_dtype dt;
        if (ggml_dtype(t->type, &dt)) {
            const char *tn = ggml_type_name(t->type);
            if (tn)
                snprintf(err, errlen, "%s: tensor \"%s\" has type %s, which is not supported "
                         "(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)", path, t->name, tn);
            else
                snprintf(err, errlen, "%s: tensor \"%s\" has unknown ggml type %u", path, t->name,
                         t->type);
            goto fail;
        }
        if (t->ne[0] % wd_dtype_block(dt)) {
            snprintf(err, errlen, "%s: %s tensor \"%s\" has a row of %lld (not a multiple of %d)",
                     path, wd_dtype_name(dt), t->name, (long long)t->ne[0], wd_dtype_block(dt));
            goto fail;
        }
        size_t nbytes = wd_dtype_bytes(dt, t->ne[0]); /* ne[0] <= 2^40: no overflow */
        for (int d = 1; d < t->ndim; d++) {
            if ((size_t)t->ne[d] > SIZE_MAX / nbytes) {
                nbytes = SIZE_MAX;
                break;
            }
            nbytes *= (size_t)t->ne[d];
        }
        if (t->offset % f->align) {
            snprintf(err, errlen, "%s: tensor \"%s\" offset %llu is not a multiple of the "
                     "alignment %zu", path, t->name, (unsigned long long)t->offset, f->align);
            goto fail;
        }
        if (f->data_start > f->size || nbytes > f->size - f->data_start ||
            t->offset > f->size - f->data_start - nbytes) {
            snprintf(err, errlen, "%s: tensor \"%s\" data (offset %llu, %zu bytes) runs past the "
                     "end of the file", path, t->name, (unsigned long long)t->offset, nbytes);
            goto fail;
        }
        t->nbytes = nbytes;
    }
    return 0;
fail:
    gguf_close(f);
    return 1;
}

/* ---- typed metadata access ------------------------------------------- */
static int kv_int(const gguf_file *f, const gguf_kv *kv, int64_t *out) {
    const uint8_t *p = f->map + kv->voff;
    switch (kv->type) {
    case GT_U8: *out = p[0]; return 0;
    case GT_I8: *out = (int8_t)p[0]; return 0;
    case GT_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; return 0; }
    case GT_I16: { int16_t v; memcpy(&v, p, 2); *out = v; return 0; }
    case GT_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; return 0; }
    case GT_I32: { int32_t v; memcpy(&v, p, 4); *out = v; return 0; }
    case GT_U64: { uint64_t v; memcpy(&v, p, 8); if (v > INT64_MAX) return 1; *out = (int64_t)v; return 0; }
    case GT_I64: { int64_t v; memcpy(&v, p, 8); *out = v; return 0; }
    default: return 1;
    }
}

/* An integer key in [lo, 2^30]; absent -> def (or an error when required). */
static int get_int(const gguf_file *f, const char *key, int required, int def, int lo, int *out,
                   char *err, size_t errlen) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv) {
        if (required) {
            snprintf(err, errlen, "%s: missing metadata \"%s\"", f->path, key);
            return 1;
        }
        *out = def;
        return 0;
    }
    int64_t v;
    if (kv_int(f, kv, &v)) {
        snprintf(err, errlen, "%s: metadata \"%s\" must be an integer, not %s", f->path, key,
                 kv->type == GT_ARRAY ? "an array" : gt_name(kv->type));
        return 1;
    }
    if (v < lo || v > (1 << 30)) {
        snprintf(err, errlen, "%s: metadata \"%s\" out of range: %lld", f->path, key, (long long)v);
        return 1;
    }
    *out = (int)v;
    return 0;
}

static int get_float(const gguf_file *f, const char *key, float def, float *out, char *err,
                     size_t errlen) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv) {
        *out = def;
        return 0;
    }
    double v;
    if (kv->type == GT_F32) {
        float x;
        memcpy(&x, f->map + kv->voff, 4);
        v = x;
    } else if (kv->type == GT_F64) {
        memcpy(&v, f->map + kv->voff, 8);
    } else {
        int64_t i;
        if (kv_int(f, kv, &i)) {
            snprintf(err, errlen, "%s: metadata \"%s\" must be a number, not %s", f->path, key,
                     gt_name(kv->type));
            return 1;
        }
        v = (double)i;
    }
    if (!(v > 0) || v > 1e30) {
        snprintf(err, errlen, "%s: metadata \"%s\" must be positive (got %g)", f->path, key, v);
        return 1;
    }
    *out = (float)v;
    return 0;
}

/* A string value (not NUL-terminated). */
static int get_str(const gguf_file *f, const char *key, const char **s, size_t *len) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv || kv->type != GT_STRING) return 1;
    uint64_t n;
    memcpy(&n, f->map + kv->voff, 8);
    *s = (const char *)f->map + kv->voff + 8;
    *len = (size_t)n;
    return 0;
}

static int str_is(const char *s, size_t len, const char *want) {
    return len == strlen(want) && memcmp(s, want, len) == 0;
}

/* ---- tokenizer.ggml.* -------------------------------------------------- */
static int load_tokenizer(const gguf_file *f, wd_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    const char *model;
    size_t ml;
    if (get_str(f, "tokenizer.ggml.model", &model, &ml)) {
        snprintf(err, errlen, "%s: no tokenizer (string \"tokenizer.ggml.model\" missing)", f->path);
        return 1;
    }
    int bytelevel = str_is(model, ml, "gpt2"), pretok = -1;
    if (!str_is(model, ml, "llama") && !bytelevel) {
        snprintf(err, errlen, "%s: tokenizer.ggml.model \"%.*s\" is not supported (\"llama\": "
                 "SentencePiece, \"gpt2\": byte-level BPE)", f->path, (int)(ml > 40 ? 40 : ml),
                 model);
        return 1;
    }
    if (bytelevel) {
        const char *pre = "default";
        size_t pl = 7;
        if (find_kv(f, "tokenizer.ggml.pre") && get_str(f, "tokenizer.ggml.pre", &pre, &pl)) {
            snprintf(err, errlen, "%s: tokenizer.ggml.pre must be a string", f->path);
            return 1;
        }
        if ((pretok = wd_tok_pretok_by_name(pre, pl)) < 0) {
            snprintf(err, errlen, "%s: tokenizer.ggml.pre \"%.*s\" is not supported (smollm, "
                     "llama-bpe, qwen2, deepseek-llm, gpt2)", f->path, (int)(pl > 40 ? 40 : pl),
                     pre);
            return 1;
        }
    }
    const gguf_kv *tk = find_kv(f, "tokenizer.ggml.tokens");
    if (!tk || tk->type != GT_ARRAY || tk->atype != GT_STRING || tk->alen == 0 ||
        tk->alen > (1u << 24)) {
        snprintf(err, errlen, "%s: \"tokenizer.ggml.tokens\" must be a non-empty array of strings",
                 f->path);
        return 1;
    }
    int n = (int)tk->alen;
    const gguf_kv *sc = find_kv(f, "tokenizer.ggml.scores");
    const gguf_kv *ty = find_kv(f, "tokenizer.ggml.token_type");
    if (sc && (sc->type != GT_ARRAY || sc->atype != GT_F32 || sc->alen != tk->alen)) {
        snprintf(err, errlen, "%s: \"tokenizer.ggml.scores\" must be %d float32 values", f->path, n);
        return 1;
    }
    if (ty && (ty->type != GT_ARRAY || (ty->atype != GT_I32 && ty->atype != GT_U32) ||
               ty->alen != tk->alen)) {
        snprintf(err, errlen, "%s: \"tokenizer.ggml.token_type\" must be %d int32 values", f->path, n);
        return 1;
    }
    const gguf_kv *mg = find_kv(f, "tokenizer.ggml.merges");
    if (bytelevel && (!mg || mg->type != GT_ARRAY || mg->atype != GT_STRING)) {
        snprintf(err, errlen, "%s: tokenizer.ggml.merges (an array of strings) is missing for the "
                 "byte-level BPE tokenizer", f->path);
        return 1;
    }
    wd_tokenizer *t = bytelevel ? wd_tok_new_bytelevel(n, pretok) : wd_tok_new_spm(n);
    if (!t) {
        snprintf(err, errlen, "%s: out of memory", f->path);
        return 1;
    }
    size_t off = tk->voff; /* strings were validated by gguf_parse */
    for (int i = 0; i < n; i++) {
        uint64_t l;
        memcpy(&l, f->map + off, 8);
        const char *s = (const char *)f->map + off + 8;
        off += 8 + (size_t)l;
        float score = 0;
        int32_t type = WD_TOKT_NORMAL;
        if (sc) memcpy(&score, f->map + sc->voff + 4 * (size_t)i, 4);
        if (ty) memcpy(&type, f->map + ty->voff + 4 * (size_t)i, 4);
        if (wd_tok_set(t, i, s, (size_t)l, score, type)) {
            wd_tokenizer_free(t);
            snprintf(err, errlen, "%s: out of memory", f->path);
            return 1;
        }
    }
    int bos, eos, unk;
    const gguf_kv *asp = find_kv(f, "tokenizer.ggml.add_space_prefix");
    int add_space = 1;
    if (asp && asp->type == GT_BOOL) add_space = f->map[asp->voff] != 0;
    if (get_int(f, "tokenizer.ggml.bos_token_id", 0, 1, 0, &bos, err, errlen) ||
        get_int(f, "tokenizer.ggml.eos_token_id", 0, 2, 0, &eos, err, errlen) ||
        get_int(f, "tokenizer.ggml.unknown_token_id", 0, 0, 0, &unk, err, errlen)) {
        wd_tokenizer_free(t);
        return 1;
    }
    if (bos >= n || eos >= n || unk >= n) {
        snprintf(err, errlen, "%s: a special token id (bos %d, eos %d, unk %d) is outside the "
                 "vocabulary of %d", f->path, bos, eos, unk, n);
        wd_tokenizer_free(t);
        return 1;
    }
    wd_tok_set_specials(t, bos, eos, unk, add_space);
    const gguf_kv *ab = find_kv(f, "tokenizer.ggml.add_bos_token");
    if (ab && ab->type == GT_BOOL) t->add_bos = f->map[ab->voff] != 0;
    const char *tpl;
    size_t tl;
    if (!get_str(f, "tokenizer.chat_template", &tpl, &tl) && tl < ((size_t)1 << 24)) {
        if (!(t->chat_template = malloc(tl + 1))) {
            wd_tokenizer_free(t);
            snprintf(err, errlen, "%s: out of memory", f->path);
            return 1;
        }
        memcpy(t->chat_template, tpl, tl);
        t->chat_template[tl] = 0;
    }
    if (wd_tok_finish(t, f->path, err, errlen)) {
        wd_tokenizer_free(t);
        return 1;
    }
    if (bytelevel) { /* merges "a b", rank = position */
        char *cat = NULL;
        size_t cat_cap = 0, moff = mg->voff;
        if (mg->alen > (uint64_t)MAX_VOCAB * 4 || wd_tok_reserve_merges(t, (size_t)mg->alen)) {
            wd_tokenizer_free(t);
            snprintf(err, errlen, "%s: out of memory for %llu merges", f->path,
                     (unsigned long long)mg->alen);
            return 1;
        }
        for (uint64_t i = 0; i < mg->alen; i++) {
            uint64_t l;
            memcpy(&l, f->map + moff, 8);
            const char *m = (const char *)f->map + moff + 8;
            moff += 8 + (size_t)l;
            const char *sp = memchr(m, ' ', (size_t)l);
            int rc = sp ? wd_tok_add_merge(t, m, (size_t)(sp - m), sp + 1,
                                           (size_t)l - (size_t)(sp - m) - 1, (int)i, &cat, &cat_cap)
                        : 1;
            if (rc) {
                free(cat);
                wd_tokenizer_free(t);
                if (rc < 0)
                    snprintf(err, errlen, "%s: out of memory", f->path);
                else
                    snprintf(err, errlen, "%s: tokenizer.ggml.merges[%llu] \"%.*s\" is not two "
                             "tokens of the vocab separated by a space", f->path,
                             (unsigned long long)i, (int)(l > 60 ? 60 : l), m);
                return 1;
            }
        }
        free(cat);
    }
    *out = t;
    return 0;
}

int wd_gguf_load_tokenizer(wd_tokenizer **tok, const char *path, char *err, size_t errlen) {
    *tok = NULL;
    gguf_file f;
    if (gguf_parse(&f, path, 0, err, errlen)) return 1;
    int rc = load_tokenizer(&f, tok, err, errlen);
    gguf_close(&f);
    return rc;
}

/* ---- llama / Mixtral model -------------------------------------------- */
static int load_config(const gguf_file *f, wd_config *cfg, int *dense, char *err, size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
    const char *arch;
    size_t al;
    if (get_str(f, "general.architecture", &arch, &al)) {
        snprintf(err, errlen, "%s: missing string \"general.architecture\"", f->path);
        return 1;
    }
    if (!str_is(arch, al, "llama")) {
        snprintf(err, errlen, "%s: architecture \"%.*s\" is not supported (need \"llama\"; "
                 "Mixtral files are llama with expert_count)", f->path, (int)(al > 40 ? 40 : al), arch);
        return 1;
    }
    int ffn_dense = 0;
    if (get_int(f, "llama.embedding_length", 1, 0, 1, &cfg->hidden, err, errlen) ||
        get_int(f, "llama.block_count", 1, 0, 1, &cfg->n_layers, err, errlen) ||
        get_int(f, "llama.attention.head_count", 1, 0, 1, &cfg->n_heads, err, errlen) ||
        get_int(f, "llama.attention.head_count_kv", 0, cfg->n_heads, 1, &cfg->n_kv_heads, err,
                errlen) ||
        get_int(f, "llama.feed_forward_length", 0, 0, 1, &ffn_dense, err, errlen) ||
        get_int(f, "llama.expert_feed_forward_length", 0, ffn_dense, 1, &cfg->ffn, err, errlen) ||
        get_int(f, "llama.expert_count", 0, 0, 0, &cfg->n_experts, err, errlen) ||
        get_int(f, "llama.context_length", 0, 4096, 1, &cfg->max_pos, err, errlen) ||
        get_int(f, "llama.attention.key_length", 0, cfg->hidden / cfg->n_heads, 1, &cfg->head_dim,
                err, errlen) ||
        get_int(f, "tokenizer.ggml.bos_token_id", 0, 1, 0, &cfg->bos_id, err, errlen) ||
        get_int(f, "tokenizer.ggml.eos_token_id", 0, 2, 0, &cfg->eos_id, err, errlen) ||
        get_float(f, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &cfg->rms_eps, err, errlen) ||
        get_float(f, "llama.rope.freq_base", 10000.0f, &cfg->rope_theta, err, errlen))
        return 1;
    if (cfg->ffn <= 0) {
        snprintf(err, errlen, "%s: missing metadata \"llama.feed_forward_length\"", f->path);
        return 1;
    }
    *dense = cfg->n_experts == 0;
    /* a dense llama: one FFN, no router (expert count 1 for the emulator) */
    snprintf(cfg->model_type, sizeof(cfg->model_type), *dense ? "llama" : "mixtral");
    if (*dense) {
        cfg->n_experts = 1;
        cfg->top_k = 1;
    } else if (get_int(f, "llama.expert_used_count", 1, 0, 1, &cfg->top_k, err, errlen)) {
        return 1;
    }
    const gguf_kv *vt = find_kv(f, "tokenizer.ggml.tokens");
    if (vt && vt->type == GT_ARRAY && vt->alen > 0 && vt->alen <= (1u << 30)) {
        cfg->vocab = (int)vt->alen;
    } else if (get_int(f, "llama.vocab_size", 0, 0, 1, &cfg->vocab, err, errlen)) {
        return 1;
    }
    const char *rs;
    size_t rl;
    if (!get_str(f, "llama.rope.scaling.type", &rs, &rl) && !str_is(rs, rl, "none")) {
        snprintf(err, errlen, "%s: RoPE scaling \"%.*s\" is not supported", f->path,
                 (int)(rl > 40 ? 40 : rl), rs);
        return 1;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        snprintf(err, errlen, "%s: head_count %d is not a multiple of head_count_kv %d", f->path,
                 cfg->n_heads, cfg->n_kv_heads);
        return 1;
    }
    if (cfg->head_dim < 1) {
        snprintf(err, errlen, "%s: head dimension is 0 (embedding_length %d < head_count %d)",
                 f->path, cfg->hidden, cfg->n_heads);
        return 1;
    }
    if (cfg->bos_id >= cfg->vocab || cfg->eos_id >= cfg->vocab) {
        snprintf(err, errlen, "%s: bos %d / eos %d outside the vocabulary of %d", f->path,
                 cfg->bos_id, cfg->eos_id, cfg->vocab);
        return 1;
    }
    int n_rot = 0;
    if (get_int(f, "llama.rope.dimension_count", 0, cfg->head_dim, 1, &n_rot, err, errlen))
        return 1;
    if (n_rot != cfg->head_dim) {
        snprintf(err, errlen, "%s: partial RoPE (rope.dimension_count %d < head dimension %d) is "
                 "not supported", f->path, n_rot, cfg->head_dim);
        return 1;
    }
    if (cfg->head_dim % 2) {
        snprintf(err, errlen, "%s: head dimension %d must be even for RoPE", f->path, cfg->head_dim);
        return 1;
    }
    const char *cs;
    size_t cl;
    if (!get_str(f, "wdmoe.moe_combine", &cs, &cl)) {
        if (!str_is(cs, cl, "sum") && !str_is(cs, cl, "renormalize")) {
            snprintf(err, errlen, "%s: \"wdmoe.moe_combine\" must be \"sum\" or \"renormalize\"",
                     f->path);
            return 1;
        }
        cfg->combine_sum = str_is(cs, cl, "sum");
    }
    if (cfg->top_k > cfg->n_experts) {
        snprintf(err, errlen, "%s: expert_used_count %d exceeds expert_count %d", f->path,
                 cfg->top_k, cfg->n_experts);
        return 1;
    }
    return 0;
}

static wd_dtype ti_dtype(const gguf_ti *t) {
    wd_dtype dt = WD_DT_F32;
    ggml_dtype(t->type, &dt); /* gguf_parse accepted only supported types */
    return dt;
}

/* Parses "blk.N.<rest>"; returns rest or NULL. */
static const char *blk_name(const char *name, int *layer) {
    if (strncmp(name, "blk.", 4) != 0) return NULL;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return NULL;
    long v = 0;
    while (*p >= '0' && *p <= '9' && v < 1000000) v = v * 10 + (*p++ - '0');
    if (*p != '.') return NULL;
    *layer = (int)v;
    return p + 1;
}

/* "<stem>.E.weight" -> E, or -1. */
static int expert_suffix(const char *rest, const char *stem) {
    size_t sl = strlen(stem);
    if (strncmp(rest, stem, sl) != 0 || rest[sl] != '.') return -1;
    const char *p = rest + sl + 1;
    if (*p < '0' || *p > '9') return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9' && v < 1000000) v = v * 10 + (*p++ - '0');
    return strcmp(p, ".weight") == 0 ? (int)v : -1;
}

/* Rows of a [rows x row_bytes] matrix from llama.cpp's interleaved order (per head:
 * (head_dim/2, 2)) back to rotate-half order (per head: (2, head_dim/2)). */
static void unpermute_rows(uint8_t *dst, const uint8_t *src, int64_t rows, size_t row_bytes,
                           int n_head) {
    int64_t hd = rows / n_head, half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t j = 0; j < 2; j++)
            for (int64_t i = 0; i < half; i++) {
                int64_t hf = h * hd + j * half + i, gg = h * hd + 2 * i + j;
                memcpy(dst + (size_t)hf * row_bytes, src + (size_t)gg * row_bytes, row_bytes);
            }
}

static int add_tensor(wd_tensors *ts, const char *name, wd_dtype dt, int ndim,
                      const int64_t *shape, const void *data, size_t nbytes, const char *path,
                      char *err, size_t errlen) {
    if (wd_tensors_add(ts, name, dt, ndim, shape, data, nbytes)) {
        snprintf(err, errlen, "%s: out of memory", path);
        return 1;
    }
    return 0;
}

/* Checks that a tensor exists with the given dims (outermost first). */
static int expect(const wd_tensors *ts, const char *name, int ndim, int64_t d0, int64_t d1,
                  const char *path, char *err, size_t errlen) {
    const wd_tensor *t = wd_tensors_find(ts, name);
    if (!t) {
        snprintf(err, errlen, "%s: missing tensor for \"%s\"", path, name);
        return 1;
    }
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char want[64], got[96];
        if (ndim == 1) snprintf(want, sizeof(want), "[%lld]", (long long)d0);
        else snprintf(want, sizeof(want), "[%lld, %lld]", (long long)d0, (long long)d1);
        int o = snprintf(got, sizeof(got), "[");
        for (int i = 0; i < t->ndim && o < 80; i++)
            o += snprintf(got + o, sizeof(got) - (size_t)o, "%s%lld", i ? ", " : "",
                          (long long)t->shape[i]);
        snprintf(got + o, sizeof(got) - (size_t)o, "]");
        snprintf(err, errlen, "%s: tensor \"%s\" has shape %s, expected %s from the metadata", path,
                 name, got, want);
        return 1;
    }
    return 0;
}

static int check_shapes(const wd_tensors *ts, const wd_config *c, const char *path, char *err,
                        size_t errlen) {
    int64_t H = c->hidden, q = (int64_t)c->n_heads * c->head_dim,
            kv = (int64_t)c->n_kv_heads * c->head_dim;
    char n[160];
    if (expect(ts, "model.embed_tokens.weight", 2, c->vocab, H, path, err, errlen) ||
        expect(ts, "model.norm.weight", 1, H, 0, path, err, errlen))
        return 1;
    if (!c->tie_embeddings && expect(ts, "lm_head.weight", 2, c->vocab, H, path, err, errlen))
        return 1;
    for (int l = 0; l < c->n_layers; l++) {
#define EXPECT(fmt, nd, a, b)                                                  \
    do {                                                                       \
        snprintf(n, sizeof(n), "model.layers.%d." fmt, l);                     \
        if (expect(ts, n, nd, a, b, path, err, errlen)) return 1;              \
    } while (0)
        EXPECT("input_layernorm.weight", 1, H, 0);
        EXPECT("post_attention_layernorm.weight", 1, H, 0);
        EXPECT("self_attn.q_proj.weight", 2, q, H);
        EXPECT("self_attn.k_proj.weight", 2, kv, H);
        EXPECT("self_attn.v_proj.weight", 2, kv, H);
        EXPECT("self_attn.o_proj.weight", 2, H, q);
        if (!strcmp(c->model_type, "llama")) {
            EXPECT("mlp.gate_proj.weight", 2, c->ffn, H);
            EXPECT("mlp.up_proj.weight", 2, c->ffn, H);
            EXPECT("mlp.down_proj.weight", 2, H, c->ffn);
            continue;
        }
        EXPECT("block_sparse_moe.gate.weight", 2, c->n_experts, H);
#undef EXPECT
        for (int e = 0; e < c->n_experts; e++) {
            const char *w[3] = {"w1", "w2", "w3"};
            for (int k = 0; k < 3; k++) {
                snprintf(n, sizeof(n), "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l,
                         e, w[k]);
                if (expect(ts, n, 2, k == 1 ? H : c->ffn, k == 1 ? c->ffn : H, path, err, errlen))
                    return 1;
            }
        }
    }
    return 0;
}

int wd_gguf_open(wd_tensors **out, wd_config *cfg, wd_tokenizer **tok, const char *path,
                 char *err, size_t errlen) {
    *out = NULL;
    if (tok) *tok = NULL;
    gguf_file f;
    if (gguf_parse(&f, path, 1, err, errlen)) return 1;
    int dense = 0;
    wd_tensors *ts = NULL;
    wd_tokenizer *tk = NULL;
    if (load_config(&f, cfg, &dense, err, errlen)) goto fail;
    if (tok && load_tokenizer(&f, &tk, err, errlen)) goto fail;
    ts = wd_tensors_new();
    if (!ts || wd_tensors_keep_mapping(ts, (void *)f.map, f.size)) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    const uint8_t *data = f.data_start <= f.size ? f.map + f.data_start : f.map;
    f.map = NULL; /* the store owns the mapping now */
    cfg->tie_embeddings = 1;
    for (size_t i = 0; i < f.n_ti; i++) {
        const gguf_ti *t = &f.ti[i];
        const uint8_t *p;
        wd_dtype dt = ti_dtype(t);
        /* GGUF dims are innermost first; wd_tensor shapes outermost first */
        int64_t shape[4];
        for (int d = 0; d < t->ndim; d++) shape[d] = t->ne[t->ndim - 1 - d];
        char name[200];
        const char *rest;
        int layer = -1, e;
        int view_experts = 0, unpermute = 0;
        const char *w = NULL;
        if (strcmp(t->name, "token_embd.weight") == 0) {
            snprintf(name, sizeof(name), "model.embed_tokens.weight");
        } else if (strcmp(t->name, "output_norm.weight") == 0) {
            snprintf(name, sizeof(name), "model.norm.weight");
        } else if (strcmp(t->name, "output.weight") == 0) {
            snprintf(name, sizeof(name), "lm_head.weight");
            cfg->tie_embeddings = 0;
        } else if ((rest = blk_name(t->name, &layer)) != NULL) {
            const char *hf = NULL;
            if (layer >= cfg->n_layers) {
                snprintf(err, errlen, "%s: tensor \"%s\": layer %d but block_count is %d", path,
                         t->name, layer, cfg->n_layers);
                goto fail;
            }
            if (strcmp(rest, "attn_norm.weight") == 0) hf = "input_layernorm.weight";
            else if (strcmp(rest, "ffn_norm.weight") == 0) hf = "post_attention_layernorm.weight";
            else if (strcmp(rest, "attn_q.weight") == 0) { hf = "self_attn.q_proj.weight"; unpermute = cfg->n_heads; }
            else if (strcmp(rest, "attn_k.weight") == 0) { hf = "self_attn.k_proj.weight"; unpermute = cfg->n_kv_heads; }
            else if (strcmp(rest, "attn_v.weight") == 0) hf = "self_attn.v_proj.weight";
            else if (strcmp(rest, "attn_output.weight") == 0) hf = "self_attn.o_proj.weight";
            else if (!dense && strcmp(rest, "ffn_gate_inp.weight") == 0) hf = "block_sparse_moe.gate.weight";
            else if (!dense && strcmp(rest, "ffn_gate_exps.weight") == 0) { view_experts = 1; w = "w1"; }
            else if (!dense && strcmp(rest, "ffn_up_exps.weight") == 0) { view_experts = 1; w = "w3"; }
            else if (!dense && strcmp(rest, "ffn_down_exps.weight") == 0) { view_experts = 1; w = "w2"; }
            else if (dense && strcmp(rest, "ffn_gate.weight") == 0) hf = "mlp.gate_proj.weight";
            else if (dense && strcmp(rest, "ffn_up.weight") == 0) hf = "mlp.up_proj.weight";
            else if (dense && strcmp(rest, "ffn_down.weight") == 0) hf = "mlp.down_proj.weight";
            if (!hf && !view_experts && !dense) {
                const char *stems[3] = {"ffn_gate", "ffn_down", "ffn_up"};
                const char *ws[3] = {"w1", "w2", "w3"};
                for (int k = 0; k < 3 && !w; k++)
                    if ((e = expert_suffix(rest, stems[k])) >= 0) {
                        if (e >= cfg->n_experts) {
                            snprintf(err, errlen, "%s: tensor \"%s\": expert %d but expert_count "
                                     "is %d", path, t->name, e, cfg->n_experts);
                            goto fail;
                        }
                        w = ws[k];
                        snprintf(name, sizeof(name),
                                 "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", layer, e, w);
                    }
                if (w) hf = "";
            }
            if (!hf && !view_experts) {
                snprintf(err, errlen, "%s: unexpected tensor \"%s\" for a llama/Mixtral model",
                         path, t->name);
                goto fail;
            }
            if (hf && *hf) snprintf(name, sizeof(name), "model.layers.%d.%s", layer, hf);
        } else {
            snprintf(err, errlen, "%s: unexpected tensor \"%s\" for a llama/Mixtral model%s", path,
                     t->name,
                     strcmp(t->name, "rope_freqs.weight") == 0 ? " (RoPE frequency factors are "
                                                                 "not supported)" : "");
            goto fail;
        }
        p = data + t->offset;
        if (view_experts) {
            if (t->ndim != 3 || t->ne[2] != cfg->n_experts) {
                snprintf(err, errlen, "%s: tensor \"%s\" should have 3 dims with %d experts "
                         "outermost", path, t->name, cfg->n_experts);
                goto fail;
            }
            size_t per = t->nbytes / (size_t)t->ne[2];
            int64_t sh[2] = {t->ne[1], t->ne[0]};
            for (int x = 0; x < cfg->n_experts; x++) {
                snprintf(name, sizeof(name), "model.layers.%d.block_sparse_moe.experts.%d.%s.weight",
                         layer, x, w);
                if (add_tensor(ts, name, dt, 2, sh, p + (size_t)x * per, per, path, err, errlen))
                    goto fail;
            }
            continue;
        }
        if (unpermute) {
            int64_t rows = shape[0];
            if (t->ndim != 2 || rows % (2 * unpermute)) {
                snprintf(err, errlen, "%s: tensor \"%s\": %lld rows cannot be split into %d heads "
                         "of even size", path, t->name, (long long)rows, unpermute);
                goto fail;
            }
            uint8_t *buf = malloc(t->nbytes ? t->nbytes : 1);
            if (!buf || wd_tensors_keep_buffer(ts, buf)) {
                free(buf);
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            unpermute_rows(buf, p, rows, t->nbytes / (size_t)rows, unpermute);
            p = buf;
        }
        if (add_tensor(ts, name, dt, t->ndim, shape, p, t->nbytes, path, err, errlen)) goto fail;
    }
    int dup = -1;
    int irc = wd_tensors_index(ts, &dup);
    if (irc < 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if (irc > 0) {
        snprintf(err, errlen, "%s: two tensors map to \"%s\"", path, wd_tensors_at(ts, dup)->name);
        goto fail;
    }
    const wd_tensor *emb = wd_tensors_find(ts, "model.embed_tokens.weight");
    if (emb && emb->ndim == 2 && emb->shape[0] != cfg->vocab) {
        snprintf(err, errlen, "%s: token_embd.weight has %lld rows but the vocabulary "
                 "(tokenizer.ggml.tokens) has %d tokens", path, (long long)emb->shape[0],
                 cfg->vocab);
        goto fail;
    }
    if (check_shapes(ts, cfg, path, err, errlen)) goto fail;
    if (tk && wd_tokenizer_vocab_size(tk) != cfg->vocab) {
        snprintf(err, errlen, "%s: tokenizer.ggml.tokens has %d tokens but the model %d", path,
                 wd_tokenizer_vocab_size(tk), cfg->vocab);
        goto fail;
    }
    gguf_close(&f);
    *out = ts;
    if (tok) *tok = tk;
    return 0;
fail:
    wd_tensors_free(ts);
    wd_tokenizer_free(tk);
    gguf_close(&f);
    return 1;
}
