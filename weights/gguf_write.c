/* GGUF rewriter: a new GGUF file from an existing one, for tools that change
 * some tensors of a model (MoEfication) and keep everything else bit for bit.
 *
 * The source's metadata is copied key by key (raw bytes) except the keys the
 * caller sets, which are written after it; its tensors are copied raw (same
 * ggml type, shape and bytes: quantised blocks and llama.cpp's interleaved
 * Q/K rows untouched) except the ones the caller drops; the caller's new
 * tensors follow. The file is written under "<dst>.tmp.<pid>" and renamed,
 * so a failure leaves no half-written file. Layout: see weights/gguf.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weights/weights.h"

enum { GT_U8 = 0, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STRING, GT_ARRAY,
       GT_U64, GT_I64, GT_F64, GT_COUNT };

static size_t scalar_size(uint32_t t) {
    static const size_t sz[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GT_COUNT ? sz[t] : 0;
}

typedef struct {
    const unsigned char *p;
    size_t n, off;
    int bad;
} rd;

static uint64_t rd_u64(rd *r) {
    uint64_t v = 0;
    if (r->off + 8 > r->n) r->bad = 1;
    else memcpy(&v, r->p + r->off, 8), r->off += 8;
    return v;
}

static uint32_t rd_u32(rd *r) {
    uint32_t v = 0;
    if (r->off + 4 > r->n) r->bad = 1;
    else memcpy(&v, r->p + r->off, 4), r->off += 4;
    return v;
}

static void rd_skip(rd *r, uint64_t n) {
    if (n > r->n - r->off) r->bad = 1;
    else r->off += n;
}

/* skip one value of type t (arrays of scalars or strings) */
static void rd_value(rd *r, uint32_t t) {
    if (t == GT_STRING) {
        rd_skip(r, rd_u64(r));
    } else if (t == GT_ARRAY) {
        uint32_t et = rd_u32(r);
        uint64_t cnt = rd_u64(r);
        if (et == GT_STRING) {
            for (uint64_t i = 0; i < cnt && !r->bad; i++) rd_skip(r, rd_u64(r));
        } else if (scalar_size(et) && cnt <= (r->n - r->off) / scalar_size(et)) {
            rd_skip(r, cnt * scalar_size(et));
        } else {
            r->bad = 1;
        }
    } else if (scalar_size(t)) {
        rd_skip(r, scalar_size(t));
    } else {
        r->bad = 1;
    }
}

typedef struct {
    FILE *f;
    uint64_t pos;
    int bad;
} wr;

static void w_bytes(wr *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) w->bad = 1;
    w->pos += n;
}
static void w_u32(wr *w, uint32_t v) { w_bytes(w, &v, 4); }
static void w_u64(wr *w, uint64_t v) { w_bytes(w, &v, 8); }
static void w_str(wr *w, const char *s) {
    w_u64(w, strlen(s));
    w_bytes(w, s, strlen(s));
}
static void w_pad(wr *w, uint64_t align) {
    static const unsigned char zero[64];
    while (w->pos % align) {
        uint64_t k = align - w->pos % align;
        w_bytes(w, zero, k > 64 ? 64 : (size_t)k);
    }
}

static int key_set(const wd_gguf_kv *kv, int n_kv, const unsigned char *key, uint64_t len) {
    for (int i = 0; i < n_kv; i++)
        if (strlen(kv[i].key) == len && !memcmp(kv[i].key, key, len)) return 1;
    return 0;
}

static int dropped(const char *const *drop, int n_drop, const unsigned char *name, uint64_t len) {
    for (int i = 0; i < n_drop; i++)
        if (strlen(drop[i]) == len && !memcmp(drop[i], name, len)) return 1;
    return 0;
}

typedef struct {
    uint64_t name_off, name_len, info_off, info_len, data_off, nbytes;
} src_tensor;

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

int wd_gguf_rewrite(const char *src, const char *dst, const wd_gguf_kv *kv, int n_kv,
                    const char *const *drop, int n_drop, const wd_gguf_out_tensor *add,
                    int n_add, char *err, size_t errlen) {
    int rc = 1;
    unsigned char *buf = NULL;
    src_tensor *ts = NULL;
    FILE *in = fopen(src, "rb"), *out = NULL;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", dst, (long)getpid());
    if (!in) {
        snprintf(err, errlen, "%s: cannot open: %s", src, strerror(errno));
        return 1;
    }
    /* the header and tensor infos: read a growing prefix until they parse */
    size_t cap = 1 << 20, got = 0;
    rd r;
    uint64_t n_t = 0, n_src_kv = 0, align = 32, kv_start = 0, kv_end = 0, infos_end = 0;
    for (;;) {
        unsigned char *nb = realloc(buf, cap);
        if (!nb) goto oom;
        buf = nb;
        got += fread(buf + got, 1, cap - got, in);
        r = (rd){buf, got, 0, 0};
        if (rd_u32(&r) != 0x46554747u) { /* "GGUF" */
            snprintf(err, errlen, "%s: not a GGUF file", src);
            goto done;
        }
        uint32_t version = rd_u32(&r);
        if (version < 2 || version > 3) {
            snprintf(err, errlen, "%s: GGUF version %u is not supported", src, version);
            goto done;
        }
        n_t = rd_u64(&r);
        n_src_kv = rd_u64(&r);
        kv_start = r.off;
        for (uint64_t i = 0; i < n_src_kv && !r.bad; i++) {
            uint64_t kl = rd_u64(&r);
            size_t ko = r.off;
            rd_skip(&r, kl);
            uint32_t t = rd_u32(&r);
            if (!r.bad && t == GT_U32 && kl == 17 && !memcmp(buf + ko, "general.alignment", 17) &&
                r.off + 4 <= r.n) {
                uint32_t a;
                memcpy(&a, buf + r.off, 4);
                if (a && !(a & (a - 1))) align = a;
            }
            rd_value(&r, t);
        }
        kv_end = r.off;
        free(ts);
        ts = n_t <= (1u << 24) ? calloc(n_t ? n_t : 1, sizeof(*ts)) : NULL;
        if (!ts) {
            if (n_t > (1u << 24)) {
                snprintf(err, errlen, "%s: %llu tensors is not plausible", src,
                         (unsigned long long)n_t);
                goto done;
            }
            goto oom;
        }
        for (uint64_t i = 0; i < n_t && !r.bad; i++) {
            src_tensor *t = &ts[i];
            t->info_off = r.off;
            t->name_len = rd_u64(&r);
            t->name_off = r.off;
            rd_skip(&r, t->name_len);
            uint32_t nd = rd_u32(&r);
            if (nd > 4) r.bad = 1;
            for (uint32_t d = 0; d < nd && !r.bad; d++) rd_u64(&r);
            rd_u32(&r);
            t->data_off = rd_u64(&r);
            t->info_len = r.off - t->info_off;
        }
        infos_end = r.off;
        if (!r.bad) break;
        if (got < cap) { /* the whole file is read and still does not parse */
            snprintf(err, errlen, "%s: truncated or malformed GGUF header", src);
            goto done;
        }
        if (cap > ((size_t)1 << 34)) {
            snprintf(err, errlen, "%s: GGUF header larger than 16 GiB", src);
            goto done;
        }
        cap *= 2;
    }
    if (fseek(in, 0, SEEK_END) != 0) goto io_in;
    long fsize = ftell(in);
    if (fsize < 0) goto io_in;
    uint64_t data_start = align_up(infos_end, align);
    /* each tensor's size: up to the next offset (sorted), the last to the end */
    for (uint64_t i = 0; i < n_t; i++) {
        uint64_t end = (uint64_t)fsize - data_start, o = ts[i].data_off;
        for (uint64_t j = 0; j < n_t; j++)
            if (ts[j].data_off > o && ts[j].data_off < end) end = ts[j].data_off;
        if (o > (uint64_t)fsize - data_start) {
            snprintf(err, errlen, "%s: tensor data offset past the end of the file", src);
            goto done;
        }
        ts[i].nbytes = end - o;
    }

    out = fopen(tmp, "wb");
    if (!out) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    wr w = {out, 0, 0};
    uint64_t n_keep_t = 0, n_keep_kv = 0;
    for (uint64_t i = 0; i < n_t; i++)
        n_keep_t += !dropped(drop, n_drop, buf + ts[i].name_off, ts[i].name_len);
    /* metadata: the source's (minus keys we set), then ours */
    r = (rd){buf, got, kv_start, 0};
    for (uint64_t i = 0; i < n_src_kv; i++) {
        uint64_t kl = rd_u64(&r);
        n_keep_kv += !key_set(kv, n_kv, buf + r.off, kl);
        rd_skip(&r, kl);
        rd_value(&r, rd_u32(&r));
    }
    w_u32(&w, 0x46554747u);
    w_u32(&w, 3);
    w_u64(&w, n_keep_t + (uint64_t)n_add);
    w_u64(&w, n_keep_kv + (uint64_t)n_kv);
    r = (rd){buf, got, kv_start, 0};
    for (uint64_t i = 0; i < n_src_kv; i++) {
        size_t o = r.off;
        uint64_t kl = rd_u64(&r);
        int skip = key_set(kv, n_kv, buf + r.off, kl);
        rd_skip(&r, kl);
        rd_value(&r, rd_u32(&r));
        if (!skip) w_bytes(&w, buf + o, r.off - o);
    }
    (void)kv_end;
    for (int i = 0; i < n_kv; i++) {
        w_str(&w, kv[i].key);
        w_u32(&w, kv[i].type);
        if (kv[i].type == GT_STRING) w_str(&w, kv[i].str ? kv[i].str : "");
        else if (kv[i].type == GT_U32) w_u32(&w, kv[i].u32);
        else {
            snprintf(err, errlen, "%s: metadata key %s: only uint32 and string values are written",
                     dst, kv[i].key);
            goto done;
        }
    }
    /* tensor infos: kept source tensors (raw info, new offset), then ours */
    uint64_t off = 0;
    for (uint64_t i = 0; i < n_t; i++) {
        if (dropped(drop, n_drop, buf + ts[i].name_off, ts[i].name_len)) continue;
        w_bytes(&w, buf + ts[i].info_off, ts[i].info_len - 8);
        w_u64(&w, off);
        off = align_up(off + ts[i].nbytes, align);
    }
    for (int i = 0; i < n_add; i++) {
        const wd_gguf_out_tensor *t = &add[i];
        w_str(&w, t->name);
        w_u32(&w, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) w_u64(&w, (uint64_t)t->ne[d]);
        w_u32(&w, t->ggml_type);
        w_u64(&w, off);
        off = align_up(off + t->nbytes, align);
    }
    w_pad(&w, align);
    /* data */
    unsigned char *chunk = malloc(1 << 20);
    if (!chunk) goto oom;
    for (uint64_t i = 0; i < n_t && !w.bad; i++) {
        if (dropped(drop, n_drop, buf + ts[i].name_off, ts[i].name_len)) continue;
        if (fseek(in, (long)(data_start + ts[i].data_off), SEEK_SET) != 0) {
            free(chunk);
            goto io_in;
        }
        uint64_t left = ts[i].nbytes;
        while (left) {
            size_t k = left > (1 << 20) ? (1 << 20) : (size_t)left;
            if (fread(chunk, 1, k, in) != k) {
                free(chunk);
                goto io_in;
            }
            w_bytes(&w, chunk, k);
            left -= k;
        }
        w_pad(&w, align);
    }
    free(chunk);
    for (int i = 0; i < n_add; i++) {
        w_bytes(&w, add[i].data, add[i].nbytes);
        w_pad(&w, align);
    }
    if (w.bad || fflush(out) != 0 || fsync(fileno(out)) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (fclose(out) != 0) {
        out = NULL;
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    out = NULL;
    if (rename(tmp, dst) != 0) {
        snprintf(err, errlen, "%s: cannot rename into place: %s", dst, strerror(errno));
        goto done;
    }
    rc = 0;
    goto done;
io_in:
    snprintf(err, errlen, "%s: read failed", src);
    goto done;
oom:
    snprintf(err, errlen, "%s: out of memory", src);
done:
    if (out) fclose(out);
    if (rc) unlink(tmp);
    fclose(in);
    free(buf);
    free(ts);
    return rc;
}

int wd_gguf_type(wd_dtype dt, uint32_t *ggml_type) {
    static const struct {
        wd_dtype dt;
        uint32_t t;
    } map[] = {{WD_DT_F32, 0},  {WD_DT_F16, 1},   {WD_DT_Q4_0, 2},  {WD_DT_Q4_1, 3},
               {WD_DT_Q8_0, 8}, {WD_DT_Q4_K, 12}, {WD_DT_Q5_K, 13}, {WD_DT_Q6_K, 14},
               {WD_DT_BF16, 30}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].dt == dt) return *ggml_type = map[i].t, 0;
    return 1;
}
