/* The tensor store shared by the safetensors and GGUF loaders: an array of
 * wd_tensor in load order, an open-addressing hash index on the names, and
 * the mappings/buffers the tensors point into. */
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
