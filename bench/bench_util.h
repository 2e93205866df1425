/* Shared by the bench binaries: repetition statistics (median, min, max,
 * spread), the machine's description, the bandwidth buffer size, and the
 * result JSON (the same conventions as wdmoe's result files: "command",
 * "version", the configuration echoed, then the figures; SI units named in
 * the keys; written to a temporary name and renamed, "-" for stdout). */
#ifndef WD_BENCH_UTIL_H
#define WD_BENCH_UTIL_H

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host/host.h"

typedef struct {
    double median, min, max;
    double spread; /* (max - min) / median, 0 when median is 0 */
    int n;
} wd_bstats;

static int wd_bcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline wd_bstats wd_bstats_of(const double *v, int n) {
    wd_bstats s = {0, 0, 0, 0, n};
    if (n <= 0) return s;
    double *c = malloc((size_t)n * sizeof(double));
    if (!c) return s;
    memcpy(c, v, (size_t)n * sizeof(double));
    qsort(c, (size_t)n, sizeof(double), wd_bcmp);
    s.median = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    s.min = c[0];
    s.max = c[n - 1];
    s.spread = s.median > 0 ? (s.max - s.min) / s.median : 0;
    free(c);
    return s;
}

/* {"median": .., "min": .., "max": .., "spread": .., "n": .., "samples": [..]} */
static inline json_object *wd_bstats_json(const double *v, int n) {
    wd_bstats s = wd_bstats_of(v, n);
    json_object *o = json_object_new_object(), *a = json_object_new_array();
    json_object_object_add(o, "median", json_object_new_double(s.median));
    json_object_object_add(o, "min", json_object_new_double(s.min));
    json_object_object_add(o, "max", json_object_new_double(s.max));
    json_object_object_add(o, "spread", json_object_new_double(s.spread));
    json_object_object_add(o, "n", json_object_new_int(s.n));
    for (int i = 0; i < n; i++) json_object_array_add(a, json_object_new_double(v[i]));
    json_object_object_add(o, "samples", a);
    return o;
}

/* The CPU model from /proc/cpuinfo ("unknown" elsewhere). */
static inline void wd_bench_cpu_model(char *out, size_t len) {
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ' || *c == '\t') c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(out, len, "%s", c);
            }
            break;
        }
    fclose(f);
}

static inline size_t wd_bench_llc_bytes(void) {
    long l3 = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    return l3 > 0 ? (size_t)l3 : 0;
}

/* Bandwidth buffer: 1 GiB, or 8x the last-level cache when that is larger. */
static inline size_t wd_bench_bw_bytes(void) {
    size_t b = (size_t)1 << 30, l3 = wd_bench_llc_bytes();
    return 8 * l3 > b ? 8 * l3 : b;
}

/* {"cpu": .., "cores_online": .., "llc_bytes": .., "date_utc": ..} */
static inline json_object *wd_bench_machine_json(void) {
    char cpu[256], date[32];
    wd_bench_cpu_model(cpu, sizeof cpu);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "cpu", json_object_new_string(cpu));
    json_object_object_add(o, "cores_online", json_object_new_int((int)sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_object_add(o, "llc_bytes", json_object_new_int64((int64_t)wd_bench_llc_bytes()));
    json_object_object_add(o, "date_utc", json_object_new_string(date));
    return o;
}

/* A bench binary's JSON document, started with the keys every one of them has:
 * "command", "version" ("wdmoe X.Y.Z") and "machine" (wd_bench_machine_json). */
static inline json_object *wd_bench_doc_json(const char *command) {
    char version[64];
    snprintf(version, sizeof version, "wdmoe %s", wd_version());
    json_object *doc = json_object_new_object();
    json_object_object_add(doc, "command", json_object_new_string(command));
    json_object_object_add(doc, "version", json_object_new_string(version));
    json_object_object_add(doc, "machine", wd_bench_machine_json());
    return doc;
}

/* Writes doc (pretty) to path ("-": stdout); takes ownership of doc. */
static inline int wd_bench_write_json(const char *path, json_object *doc, const char *prog) {
    const char *text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY |
                                                               JSON_C_TO_STRING_SPACED);
    int rc = 0;
    if (!strcmp(path, "-")) {
        printf("%s\n", text);
    } else {
        char err[1200];
        size_t len = strlen(text);
        char *buf = malloc(len + 1);
        if (!buf) {
            fprintf(stderr, "%s: out of memory writing %s\n", prog, path);
            rc = 1;
        } else {
            memcpy(buf, text, len);
            buf[len] = '\n';
            if (wd_emu_write_atomic(path, buf, len + 1, err, sizeof err)) {
                fprintf(stderr, "%s: %s\n", prog, err);
                rc = 1;
            }
            free(buf);
        }
    }
    json_object_put(doc);
    return rc;
}

static inline double wd_bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* The nominal clock from /proc/cpuinfo (MHz; 0 when unknown): the peak is
 * cores x 2 FMA units x 16 lanes x 2 flops x this. */
static inline double wd_bench_cpu_mhz(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    char line[256];
    double mhz = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "cpu MHz", 7)) {
            char *c = strchr(line, ':');
            if (c) mhz = atof(c + 1);
            break;
        }
    fclose(f);
    return mhz;
}

/* Best rate over ~3 ms sub-windows within `seconds`: on a shared machine
 * the best sub-window is the one where this process had the cores. */
#define WD_BENCH_SUB_WINDOW 0.003

/* GEMM GFLOP/s of y[n][rows] = x[n][cols] w^T in dtype dt (the prefill and
 * batched-expert kernel), the best sub-window within `seconds`. */
static inline double wd_bench_gemm_window(wd_pool *pool, wd_dtype dt, int n, int rows, int cols,
                                          const void *w, const float *x, float *y,
                                          double seconds) {
    double best = 0, start = wd_bench_now_s();
    while (wd_bench_now_s() - start < seconds) {
        long calls = 0;
        double t0 = wd_bench_now_s(), t;
        do {
            wd_matmul(pool, y, x, w, dt, n, rows, cols);
            calls++;
            t = wd_bench_now_s() - t0;
        } while (t < WD_BENCH_SUB_WINDOW);
        double g = 2.0 * n * rows * cols * calls / t / 1e9;
        if (g > best) best = g;
    }
    return best;
}

/* A positive integer option value, or -1 (with a message) when it is not one. */
static inline int wd_bench_posint(const char *prog, const char *opt, const char *v) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == 0 || *end != 0 || x < 1 || x > 1000000) {
        fprintf(stderr, "%s: %s wants a positive integer, got '%s'\n", prog, opt, v);
        return -1;
    }
    return (int)x;
}

#endif
