/* The tensor store shared by the safetensors and GGUF loaders: an array of
 * wd_tensor in load order, an open-addressing hash index on the names, and
 * the mappings/buffers the tensors point into. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "weights/tensors_internal.h"

typedef struct {
    void *base;
    size_t len;
} mapping;

struct wd_tensors {
    wd_tensor *t;
    int n, cap;
    int *slots; /* tensor index + 1, 0 = empty; n_slots is a power of two */
    size_t n_slots;
    mapping *maps;
    int n_maps, cap_maps;
    void **bufs;
    int n_bufs, cap_bufs;
};

static uint64_t name_hash(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

wd_tensors *wd_tensors_new(void) { return calloc(1, sizeof(wd_tensors)); }

int wd_tensors_add(wd_tensors *ts, const char *name, wd_dtype dt, int ndim,
                   const int64_t *shape, const void *data, size_t nbytes) {
    if (ndim < 0 || ndim > WD_MAX_DIMS) return -1;
    if (grow((void **)&ts->t, &ts->cap, ts->n + 1, sizeof(wd_tensor))) return -1;
    wd_tensor *t = &ts->t[ts->n];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (!t->name) return -1;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    ts->n++;
    return 0;
}

int wd_tensors_keep_mapping(wd_tensors *ts, void *base, size_t len) {
    if (grow((void **)&ts->maps, &ts->cap_maps, ts->n_maps + 1, sizeof(mapping))) return -1;
    ts->maps[ts->n_maps].base = base;
    ts->maps[ts->n_maps].len = len;
    ts->n_maps++;
    return 0;
}

int wd_tensors_keep_buffer(wd_tensors *ts, void *p) {
    if (grow((void **)&ts->bufs, &ts->cap_bufs, ts->n_bufs + 1, sizeof(void *))) return -1;
    ts->bufs[ts->n_bufs++] = p;
    return 0;
}

int wd_tensors_index(wd_tensors *ts, int *dup) {
    size_t ns = 16;
    while (ns < (size_t)ts->n * 2) ns *= 2;
    int *slots = calloc(ns, sizeof(int));
    if (!slots) return -1;
    free(ts->slots);
    ts->slots = slots;
    ts->n_slots = ns;
    for (int i = 0; i < ts->n; i++) {
        size_t s = (size_t)name_hash(ts->t[i].name) & (ns - 1);
        while (slots[s]) {
            if (strcmp(ts->t[slots[s] - 1].name, ts->t[i].name) == 0) {
                if (dup) *dup = i;
                return 1;
            }
            s = (s + 1) & (ns - 1);
        }
        slots[s] = i + 1;
    }
    return 0;
}

const wd_tensor *wd_tensors_find(const wd_tensors *ts, const char *name) {
    if (!ts || !name) return NULL;
    if (!ts->slots) { /* not indexed (a loader bug): fall back to a scan */
        for (int i = 0; i < ts->n; i++)
            if (strcmp(ts->t[i].name, name) == 0) return &ts->t[i];
        return NULL;
    }
    size_t s = (size_t)name_hash(name) & (ts->n_slots - 1);
    while (ts->slots[s]) {
        const wd_tensor *t = &ts->t[ts->slots[s] - 1];
        if (strcmp(t->name, name) == 0) return t;
        s = (s + 1) & (ts->n_slots - 1);
    }
    return NULL;
}

int wd_tensors_count(const wd_tensors *ts) { return ts ? ts->n : 0; }

const wd_tensor *wd_tensors_at(const wd_tensors *ts, int i) {
    return ts && i >= 0 && i < ts->n ? &ts->t[i] : NULL;
}

size_t wd_tensors_total_bytes(const wd_tensors *ts) {
    size_t s = 0;
    for (int i = 0; ts && i < ts->n; i++) s += ts->t[i].nbytes;
    return s;
}

size_t wd_tensors_mapped_bytes(const wd_tensors *ts) {
    size_t s = 0;
    for (int i = 0; ts && i < ts->n_maps; i++) s += ts->maps[i].len;
    return s;
}

void wd_tensors_free(wd_tensors *ts) {
    if (!ts) return;
    for (int i = 0; i < ts->n; i++) free(ts->t[i].name);
    free(ts->t);
    free(ts->slots);
    for (int i = 0; i < ts->n_maps; i++) munmap(ts->maps[i].base, ts->maps[i].len);
    free(ts->maps);
    for (int i = 0; i < ts->n_bufs; i++) free(ts->bufs[i]);
    free(ts->bufs);
    free(ts);
}

/* Copy every file mapping into anonymous memory advised for transparent huge
 * pages, 64 MiB at a time, dropping each copied chunk of the file mapping at
 * once (MADV_DONTNEED: the page cache keeps the file, this process no longer
 * maps it), so the resident size never holds much more than one copy. */
#define WD_HUGE (2u << 20)
#define WD_COPY_CHUNK ((size_t)64 << 20)

int wd_tensors_to_hugepages(wd_tensors *ts, char *err, size_t errlen) {
    for (int i = 0; ts && i < ts->n_maps; i++) {
        mapping *m = &ts->maps[i];
        size_t len = (m->len + 4095) / 4096 * 4096;
        unsigned char *raw = mmap(NULL, len + WD_HUGE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) {
            snprintf(err, errlen, "out of memory for a %.1f MB copy of the weights", m->len / 1e6);
            return 1;
        }
        unsigned char *a = (unsigned char *)(((uintptr_t)raw + WD_HUGE - 1) & ~(uintptr_t)(WD_HUGE - 1));
        if (a > raw) munmap(raw, (size_t)(a - raw));
        if (raw + len + WD_HUGE > a + len) munmap(a + len, (size_t)(raw + len + WD_HUGE - (a + len)));
#ifdef MADV_HUGEPAGE
        madvise(a, len, MADV_HUGEPAGE); /* advice only: without THP it is a plain copy */
#endif
        unsigned char *b = m->base;
        for (size_t o = 0; o < m->len; o += WD_COPY_CHUNK) {
            size_t c = m->len - o < WD_COPY_CHUNK ? m->len - o : WD_COPY_CHUNK;
            memcpy(a + o, b + o, c);
            size_t d0 = o / 4096 * 4096, d1 = (o + c) / 4096 * 4096;
            if (d1 > d0) madvise(b + d0, d1 - d0, MADV_DONTNEED);
        }
        mprotect(a, len, PROT_READ); /* weights stay read-only */
        for (int t = 0; t < ts->n; t++) {
            const unsigned char *d = ts->t[t].data;
            if (d >= b && d < b + m->len) ts->t[t].data = a + (d - b);
        }
        munmap(m->base, m->len);
        m->base = a;
        m->len = len;
    }
    return 0;
}
