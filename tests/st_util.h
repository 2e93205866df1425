/* Helpers for the safetensors tests: a scratch folder, raw file writers and
 * a tiny hand-rolled safetensors writer (independent of weights/synth.c). */
#ifndef WD_ST_UTIL_H
#define WD_ST_UTIL_H
#include <dirent.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline int st_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static inline void st_rm_rf(const char *dir) { nftw(dir, st_rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* A fresh scratch folder under WD_BINARY_DIR (or /tmp). */
static inline char *st_mkdtemp(const char *tag) {
    static char buf[4][1024];
    static int k = 0;
    char *p = buf[k++ % 4];
    const char *base = WD_BINARY_DIR;
    if (access(base, W_OK) != 0) base = "/tmp";
    snprintf(p, 1024, "%s/tmp_%s_XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        exit(1);
    }
    return p;
}

static inline void st_write_raw(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(buf, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* 8-byte little-endian header length `hlen` (may lie), header text, data. */
static inline void st_write_file(const char *path, uint64_t hlen, const char *header, const void *data,
                          size_t data_len) {
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, h);
    if (data_len) memcpy(buf + 8 + h, data, data_len);
    st_write_raw(path, buf, 8 + h + data_len);
    free(buf);
}

/* Header with its true length. */
static inline void st_write(const char *path, const char *header, const void *data, size_t data_len) {
    st_write_file(path, strlen(header), header, data, data_len);
}

/* Builds a contiguous safetensors file tensor by tensor. */
typedef struct {
    char *header;
    size_t hcap;
    unsigned char *data;
    size_t n, cap;
} st_builder;

static inline void stb_init(st_builder *b) {
    memset(b, 0, sizeof(*b));
    b->hcap = 1 << 16;
    b->header = malloc(b->hcap);
    strcpy(b->header, "{\"__metadata__\":{\"format\":\"pt\"}");
}

static inline void stb_add(st_builder *b, const char *name, const char *dtype, int ndim,
                    const int64_t *shape, const void *bytes, size_t nbytes) {
    char shp[256] = "";
    for (int i = 0; i < ndim; i++)
        snprintf(shp + strlen(shp), sizeof(shp) - strlen(shp), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
    size_t hl = strlen(b->header);
    if (hl + strlen(name) + 512 > b->hcap) {
        b->hcap *= 2;
        b->header = realloc(b->header, b->hcap);
    }
    snprintf(b->header + hl, sizeof(b->header) - hl,
             ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}", name, dtype,
             shp, b->n, b->n + nbytes);
    if (b->n + nbytes > b->cap) {
        b->cap = (b->n + nbytes) * 2 + 64;
        b->data = realloc(b->data, b->cap);
    }
    if (nbytes) memcpy(b->data + b->n, bytes, nbytes);
    b->n += nbytes;
}

/* The header is padded with spaces to a multiple of 8 bytes, as Hugging
 * Face's writer does, so that the data stays aligned. */
static inline void stb_write(st_builder *b, const char *path) {
    strcat(b->header, "}");
    while (strlen(b->header) % 8) strcat(b->header, " ");
    st_write(path, b->header, b->data, b->n);
    free(b->data);
    free(b->header);
    b->data = NULL;
    b->header = NULL;
}

static inline char *st_path(const char *dir, const char *name) {
    static char buf[8][1024];
    static int k = 0;
    char *p = buf[k++ % 8];
    snprintf(p, 1024, "%s/%s", dir, name);
    return p;
}

/* Number of open file descriptors of this process. */
static inline int st_count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* Number of lines of /proc/self/maps that mention `needle`. */
static inline int st_count_maps(const char *needle) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

/* Whether address p lies in a mapping of file `path` (per /proc/self/maps). */
static inline int st_addr_in_file_mapping(const void *p, const char *path) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        if ((unsigned long)p >= lo && (unsigned long)p < hi && strstr(line, path)) found = 1;
    }
    fclose(f);
    return found;
}
#endif
