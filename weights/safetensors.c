/* Hugging Face safetensors: one file, or a folder with model.safetensors or
 * model.safetensors.index.json + shards. Every file is memory-mapped read-only
 * (MAP_PRIVATE) and tensors point into the mapping; nothing is copied.
 *
 * File layout: u64 little-endian N, N bytes of JSON header
 *   {"__metadata__": {...}, "NAME": {"dtype": "F32", "shape": [r, c],
 *    "data_offsets": [begin, end]}, ...}
 * then the data; offsets are relative to the first byte after the header. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weights/tensors_internal.h"

#define MAX_HEADER_BYTES (100u << 20) /* the safetensors format's own limit */

typedef struct {
    const char *name; /* points into the parsed JSON */
    wd_dtype dt;
    int ndim;
    int64_t shape[WD_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int dtype_from_name(const char *s, wd_dtype *dt) {
    if (strcmp(s, "F32") == 0) *dt = WD_DT_F32;
    else if (strcmp(s, "F16") == 0) *dt = WD_DT_F16;
    else if (strcmp(s, "BF16") == 0) *dt = WD_DT_BF16;
    else return -1;
    return 0;
}

static size_t dtype_size(wd_dtype dt) { return dt == WD_DT_F32 ? 4 : 2; }

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A non-negative JSON integer; -1 when v is not an integer, -2 when negative. */
static int get_u64(json_object *v, uint64_t *out) {
    if (!v || !json_object_is_type(v, json_type_int)) return -1;
    int64_t s = json_object_get_int64(v);
    if (s < 0) return -2;
    if (s == INT64_MAX) *out = json_object_get_uint64(v); /* beyond int64 */
    else *out = (uint64_t)s;
    return 0;
}

static int parse_entry(entry *e, const char *name, json_object *v, uint64_t data_len,
                       const char *path, char *err, size_t errlen) {
    memset(e, 0, sizeof(*e));
    e->name = name;
    if (!json_object_is_type(v, json_type_object)) {
        snprintf(err, errlen, "%s: header entry is not a JSON object (tensor %s)", path, name);
        return 1;
    }
    json_object *jd, *js, *jo;
    if (!json_object_object_get_ex(v, "dtype", &jd)) {
        snprintf(err, errlen, "%s: missing \"dtype\" (tensor %s)", path, name);
        return 1;
    }
    if (!json_object_object_get_ex(v, "shape", &js)) {
        snprintf(err, errlen, "%s: missing \"shape\" (tensor %s)", path, name);
        return 1;
    }
    if (!json_object_object_get_ex(v, "data_offsets", &jo)) {
        snprintf(err, errlen, "%s: missing \"data_offsets\" (tensor %s)", path, name);
        return 1;
    }
    if (!json_object_is_type(jd, json_type_string)) {
        snprintf(err, errlen, "%s: \"dtype\" must be a string (tensor %s)", path, name);
        return 1;
    }
    if (dtype_from_name(json_object_get_string(jd), &e->dt)) {
        snprintf(err, errlen, "%s: unsupported dtype \"%s\" (need F32, F16 or BF16) (tensor %s)",
                 path, json_object_get_string(jd), name);
        return 1;
    }
    if (!json_object_is_type(js, json_type_array)) {
        snprintf(err, errlen, "%s: \"shape\" must be an array of integers (tensor %s)", path,
                 name);
        return 1;
    }
    size_t nd = json_object_array_length(js);
    if (nd > WD_MAX_DIMS) {
        snprintf(err, errlen, "%s: shape has %zu dims, at most %d supported (tensor %s)", path,
                 nd, WD_MAX_DIMS, name);
        return 1;
    }
    e->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        int r = get_u64(json_object_array_get_idx(js, i), &d);
        if (r == -1) {
            snprintf(err, errlen, "%s: \"shape\" must be an array of integers (tensor %s)", path,
                     name);
            return 1;
        }
        if (r == -2) {
            snprintf(err, errlen, "%s: negative dimension in shape (tensor %s)", path, name);
            return 1;
        }
        if (d > (uint64_t)INT64_MAX) overflow = 1;
        e->shape[i] = (int64_t)d;
        if (d && numel > (uint64_t)INT64_MAX / 4 / d) overflow = 1;
        else numel *= d;
    }
    if (overflow) {
        snprintf(err, errlen, "%s: shape overflows (tensor %s)", path, name);
        return 1;
    }
    if (!json_object_is_type(jo, json_type_array) || json_object_array_length(jo) != 2) {
        snprintf(err, errlen, "%s: \"data_offsets\" must be an array [begin, end] (tensor %s)",
                 path, name);
        return 1;
    }
    int rb = get_u64(json_object_array_get_idx(jo, 0), &e->begin);
    int re = get_u64(json_object_array_get_idx(jo, 1), &e->end);
    if (rb == -1 || re == -1) {
        snprintf(err, errlen, "%s: \"data_offsets\" must be an array [begin, end] (tensor %s)",
                 path, name);
        return 1;
    }
    if (rb == -2 || re == -2) {
        snprintf(err, errlen, "%s: negative data_offsets (tensor %s)", path, name);
        return 1;
    }
    if (e->end < e->begin) {
        snprintf(err, errlen, "%s: data_offsets end %llu before begin %llu (tensor %s)", path,
                 (unsigned long long)e->end, (unsigned long long)e->begin, name);
        return 1;
    }
    if (e->end > data_len) {
        snprintf(err, errlen,
                 "%s: data_offsets [%llu, %llu] past the end of the data (%llu bytes) (tensor %s)",
                 path, (unsigned long long)e->begin, (unsigned long long)e->end,
                 (unsigned long long)data_len, name);
        return 1;
    }
    uint64_t want = numel * dtype_size(e->dt);
    if (e->end - e->begin != want) {
        snprintf(err, errlen,
                 "%s: byte range size %llu does not match shape (%llu elements of %s = %llu "
                 "bytes) (tensor %s)",
                 path, (unsigned long long)(e->end - e->begin), (unsigned long long)numel,
                 wd_dtype_name(e->dt), (unsigned long long)want, name);
        return 1;
    }
    return 0;
}

/* A top-level key of the header, as raw JSON text (escapes not decoded). */
typedef struct {
    const char *s;
    size_t n;
} key_span;

static int cmp_span(const void *a, const void *b) {
    const key_span *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* json-c keeps the last of duplicate keys: scan the (valid) header text for a
 * top-level key given twice. Writes it (at most cap - 1 bytes) to dup; 0: none
 * (or out of memory: then json-c's view stands). */
static int duplicate_key(const char *h, size_t n, char *dup, size_t cap) {
    size_t cnt = 0, m = 0;
    key_span *ks = NULL;
    for (int pass = 0; pass < 2; pass++) {
        int depth = 0;
        char last = 0; /* last structural character outside strings */
        for (size_t i = 0; i < n; i++) {
            char c = h[i];
            if (c == '"') {
                size_t j = i + 1;
                while (j < n && h[j] != '"') j += h[j] == '\\' ? 2 : 1;
                if (depth == 1 && (last == '{' || last == ',')) {
                    if (pass) ks[m++] = (key_span){h + i + 1, j - i - 1};
                    else cnt++;
                }
                i = j, last = '"';
            } else if (c == '{' || c == '[') {
                depth++, last = c;
            } else if (c == '}' || c == ']') {
                depth--, last = c;
            } else if (c == ',' || c == ':') {
                last = c;
            }
        }
        if (!pass && !(ks = malloc((cnt ? cnt : 1) * sizeof *ks))) return 0;
    }
    qsort(ks, m, sizeof *ks, cmp_span);
    int found = 0;
    for (size_t i = 1; i < m && !found; i++)
        if (!cmp_span(&ks[i - 1], &ks[i])) {
            snprintf(dup, cap, "%.*s", (int)(ks[i].n < cap ? ks[i].n : cap - 1), ks[i].s);
            found = 1;
        }
    free(ks);
    return found;
}

/* Maps one safetensors file and appends its tensors (sorted by offset) to ts. */
static int load_file(wd_tensors *ts, const char *path, char *err, size_t errlen) {
    int fd = wd_input_open(path, 0, err, errlen); /* regular: a FIFO would block open */
    if (fd < 0) return 1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return 1;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        snprintf(err, errlen, "%s: file too short for a safetensors header (%llu bytes)", path,
                 (unsigned long long)size);
        close(fd);
        return 1;
    }
    unsigned char lb[8];
    if (pread(fd, lb, 8, 0) != 8) {
        snprintf(err, errlen, "%s: cannot read header length: %s", path, strerror(errno));
        close(fd);
        return 1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lb[i];
    if (hlen > size - 8) {
        snprintf(err, errlen, "%s: header length %llu runs past the end of the file (%llu bytes)",
                 path, (unsigned long long)hlen, (unsigned long long)size);
        close(fd);
        return 1;
    }
    if (hlen > MAX_HEADER_BYTES) {
        snprintf(err, errlen, "%s: header length %llu is over the 100 MB limit", path,
                 (unsigned long long)hlen);
        close(fd);
        return 1;
    }
    void *base = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(map_errno));
        return 1;
    }
    const char *hdr = (const char *)base + 8;
    const unsigned char *data = (const unsigned char *)base + 8 + hlen;
    uint64_t data_len = size - 8 - hlen;

    int rc = 1;
    entry *es = NULL;
    json_object *root = NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    root = json_tokener_parse_ex(tok, hdr, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root || jerr != json_tokener_success) {
        snprintf(err, errlen, "%s: malformed header JSON: %s", path,
                 jerr == json_tokener_continue ? "unexpected end of header"
                                               : json_tokener_error_desc(jerr));
        goto done;
    }
    for (size_t i = json_tokener_get_parse_end(tok); i < hlen; i++) {
        char c = hdr[i];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            snprintf(err, errlen, "%s: malformed header JSON: trailing bytes after the object",
                     path);
            goto done;
        }
    }
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "%s: malformed header JSON: not an object", path);
        goto done;
    }
    char dup[256];
    if (duplicate_key(hdr, (size_t)hlen, dup, sizeof dup)) {
        snprintf(err, errlen, "%s: the header names tensor %s twice", path, dup);
        goto done;
    }
    int n_obj = json_object_object_length(root);
    es = calloc(n_obj > 0 ? (size_t)n_obj : 1, sizeof(entry));
    if (!es) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    int n = 0;
    json_object_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (parse_entry(&es[n], key, val, data_len, path, err, errlen)) goto done;
        n++;
    }
    qsort(es, (size_t)n, sizeof(entry), cmp_entry);
    const entry *prev = NULL; /* last non-empty range */
    for (int i = 0; i < n; i++) {
        if (es[i].end == es[i].begin) continue;
        if (prev && es[i].begin < prev->end) {
            snprintf(err, errlen, "%s: byte ranges overlap (tensor %s and tensor %s)", path,
                     prev->name, es[i].name);
            goto done;
        }
        prev = &es[i];
    }
    for (int i = 0; i < n; i++) {
        if (wd_tensors_add(ts, es[i].name, es[i].dt, es[i].ndim, es[i].shape,
                           data + es[i].begin, (size_t)(es[i].end - es[i].begin))) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto done;
        }
    }
    if (wd_tensors_keep_mapping(ts, base, (size_t)size)) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    base = NULL; /* owned by ts now */
    rc = 0;
done:
    free(es);
    if (root) json_object_put(root);
    if (tok) json_tokener_free(tok);
    if (base) munmap(base, (size_t)size);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static char *join_path(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (k && p[k - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Index of the file (0..n_files-1) holding tensor i, given start offsets. */
static int file_of(const int *start, int n_files, int i) {
    int f = 0;
    while (f + 1 < n_files && start[f + 1] <= i) f++;
    return f;
}

static int load_index(wd_tensors *ts, const char *idx_path, const char *dir, char *err,
                      size_t errlen) {
    int rc = 1;
    const char **shards = NULL;
    char **shard_paths = NULL;
    int *start = NULL;
    int n_shards = 0;
    int fd = wd_input_open(idx_path, WD_MAX_JSON_INPUT, err, errlen);
    if (fd < 0) return 1;
    json_object *root = json_object_from_fd(fd);
    close(fd);
    if (!root) {
        snprintf(err, errlen, "%s: malformed JSON: %s", idx_path, json_util_get_last_err());
        char *nl = strchr(err, '\n'); /* json-c's message ends with a newline */
        if (nl) *nl = 0;
        return 1;
    }
    json_object *wm;
    if (!json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "weight_map", &wm)) {
        snprintf(err, errlen, "%s: missing \"weight_map\"", idx_path);
        goto done;
    }
    if (!json_object_is_type(wm, json_type_object)) {
        snprintf(err, errlen, "%s: \"weight_map\" is not an object", idx_path);
        goto done;
    }
    int n_map = json_object_object_length(wm);
    if (n_map == 0) {
        snprintf(err, errlen, "%s: \"weight_map\" is empty", idx_path);
        goto done;
    }
    shards = calloc((size_t)n_map, sizeof(*shards));
    if (!shards) {
        snprintf(err, errlen, "%s: out of memory", idx_path);
        goto done;
    }
    json_object_object_foreach(wm, tname, tval) {
        if (!json_object_is_type(tval, json_type_string)) {
            snprintf(err, errlen, "%s: weight_map value must be a file name (tensor %s)",
                     idx_path, tname);
            goto done;
        }
        const char *s = json_object_get_string(tval);
        if (!*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
            snprintf(err, errlen, "%s: shard name \"%s\" is not a plain file name (tensor %s)",
                     idx_path, s, tname);
            goto done;
        }
        shards[n_shards++] = s;
    }
    qsort(shards, (size_t)n_shards, sizeof(*shards), cmp_str);
    int u = 0;
    for (int i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_shards = u;
    shard_paths = calloc((size_t)n_shards, sizeof(char *));
    start = calloc((size_t)n_shards + 1, sizeof(int));
    if (!shard_paths || !start) {
        snprintf(err, errlen, "%s: out of memory", idx_path);
        goto done;
    }
    for (int i = 0; i < n_shards; i++) {
        shard_paths[i] = join_path(dir, shards[i]);
        if (!shard_paths[i]) {
            snprintf(err, errlen, "%s: out of memory", idx_path);
            goto done;
        }
        struct stat st;
        if (stat(shard_paths[i], &st) != 0) {
            snprintf(err, errlen, "%s: missing shard named in %s: %s", shard_paths[i], idx_path,
                     strerror(errno));
            goto done;
        }
    }
    for (int i = 0; i < n_shards; i++) {
        start[i] = wd_tensors_count(ts);
        if (load_file(ts, shard_paths[i], err, errlen)) goto done;
    }
    start[n_shards] = wd_tensors_count(ts);
    int dup = -1;
    int r = wd_tensors_index(ts, &dup);
    if (r < 0) {
        snprintf(err, errlen, "%s: out of memory", idx_path);
        goto done;
    }
    if (r > 0) {
        const char *name = wd_tensors_at(ts, dup)->name;
        int first = 0;
        while (strcmp(wd_tensors_at(ts, first)->name, name) != 0) first++;
        snprintf(err, errlen, "%s: duplicate tensor, also in %s (tensor %s)",
                 shard_paths[file_of(start, n_shards, dup)],
                 shard_paths[file_of(start, n_shards, first)], name);
        goto done;
    }
    const wd_tensor *t0 = wd_tensors_at(ts, 0);
    json_object_object_foreach(wm, mname, mval) {
        const char *s = json_object_get_string(mval);
        const wd_tensor *t = wd_tensors_find(ts, mname);
        if (!t) {
            snprintf(err, errlen, "%s: weight_map names a tensor missing from %s (tensor %s)",
                     idx_path, s, mname);
            goto done;
        }
        int f = file_of(start, n_shards, (int)(t - t0));
        if (strcmp(shards[f], s) != 0) {
            snprintf(err, errlen, "%s: weight_map says %s but the tensor is in %s (tensor %s)",
                     idx_path, s, shards[f], mname);
            goto done;
        }
    }
    rc = 0;
done:
    if (shard_paths)
        for (int i = 0; i < n_shards; i++) free(shard_paths[i]);
    free(shard_paths);
    free(shards);
    free(start);
    json_object_put(root);
    return rc;
}

int wd_safetensors_open(wd_tensors **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    if (errlen) err[0] = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    wd_tensors *ts = wd_tensors_new();
    if (!ts) {
        snprintf(err, errlen, "%s: out of memory", path);
        return 1;
    }
    int rc = 1;
    char *idx = NULL, *single = NULL, *dir = NULL;
    if (S_ISDIR(st.st_mode)) {
        idx = join_path(path, "model.safetensors.index.json");
        single = join_path(path, "model.safetensors");
        if (!idx || !single) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto done;
        }
        if (access(idx, F_OK) == 0) {
            rc = load_index(ts, idx, path, err, errlen);
            goto done;
        }
        if (access(single, F_OK) != 0) {
            snprintf(err, errlen,
                     "%s: no model.safetensors or model.safetensors.index.json in this folder",
                     path);
            goto done;
        }
        if (load_file(ts, single, err, errlen)) goto done;
    } else if (ends_with(path, ".json")) { /* an index file given directly */
        dir = strdup(path);
        if (!dir) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto done;
        }
        char *slash = strrchr(dir, '/');
        if (slash) slash[1] = 0;
        else strcpy(dir, ".");
        rc = load_index(ts, path, dir, err, errlen);
        goto done;
    } else {
        if (load_file(ts, path, err, errlen)) goto done;
    }
    /* single file: names within one JSON object are unique; index them */
    int dup = -1;
    int r = wd_tensors_index(ts, &dup);
    if (r) {
        snprintf(err, errlen, "%s: %s", path, r < 0 ? "out of memory" : "duplicate tensor name");
        goto done;
    }
    rc = 0;
done:
    free(idx);
    free(single);
    free(dir);
    if (rc) wd_tensors_free(ts);
    else *out = ts;
    return rc;
}
