/* Trace files: CSV rate time series and Mahimahi delivery-opportunity files. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

static char *read_all(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = wd_open_input(path, WD_MAX_TEXT_INPUT, err, errlen);
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) free(buf);
        buf = nb, cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        snprintf(err, errlen, "%s: cannot read%s", path, bad ? "" : " (out of memory)");
        return NULL;
    }
    buf[n] = 0;
    if (strlen(buf) != n) { /* the line parser would stop there and drop the rest */
        snprintf(err, errlen, "%s: not a text file (NUL byte at offset %zu)", path, strlen(buf));
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Next line (in place, '\n' and '\r' stripped); NULL at the end. */
static char *next_line(char **p) {
    if (!**p) return NULL;
    char *s = *p, *e = strchr(s, '\n');
    if (e)
        *e = 0, *p = e + 1;
    else
        *p = s + strlen(s);
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

static int push(double **a, long *cap, long n, double v) {
    if (n == *cap) {
        long c = *cap ? *cap * 2 : 1024;
        double *b = realloc(*a, c * sizeof(double));
        if (!b) return 1;
        *a = b, *cap = c;
    }
    (*a)[n] = v;
    return 0;
}

#define MAX_COLS 64

/* Split on commas in place; fields trimmed. Returns the count (MAX_COLS + 1 when too many). */
static int split(char *s, char **f) {
    int n = 0;
    for (;;) {
        if (n == MAX_COLS) return MAX_COLS + 1;
        while (*s == ' ' || *s == '\t') s++;
        f[n++] = s;
        char *c = strchr(s, ',');
        char *e = c ? c : s + strlen(s);
        char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
        *t = 0;
        if (!c) return n;
        s = c + 1;
    }
}

static int parse_num(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return !*s || *end || errno || !isfinite(*v);
}

int wd_trace_load_csv(wd_link *l, const char *path, const char *column, int device, char *err,
                      size_t errlen) {
    size_t len;
    char *buf = read_all(path, &len, err, errlen);
    if (!buf) return 1;
    char *p = buf, *line, *f[MAX_COLS + 1];
    long lineno = 0, cap_t = 0, cap_r = 0, n = 0;
    int ncol = 0, c_time = -1, c_dev = -1, c_rate = -1, rc = 1;
    double t_first = 0, t_prev = 0, off_prev = 0;
    while ((line = next_line(&p))) {
        lineno++;
        if (!*line || *line == '#') continue;
        if (!ncol) { /* header */
            ncol = split(line, f);
            if (ncol > MAX_COLS) {
                snprintf(err, errlen, "%s:%ld: more than %d columns", path, lineno, MAX_COLS);
                goto out;
            }
            for (int i = 0; i < ncol; i++) {
                if (!strcmp(f[i], "time_s")) c_time = i;
                if (!strcmp(f[i], "device")) c_dev = i;
                if (!strcmp(f[i], column)) c_rate = i;
            }
            if (c_time < 0 || c_rate < 0) {
                snprintf(err, errlen,
                         "%s:%ld: no column '%s' (a header naming time_s and the rate "
                         "column is needed)",
                         path, lineno, c_time < 0 ? "time_s" : column);
                goto out;
            }
            continue;
        }
        int nf = split(line, f);
        if (nf != ncol) {
            snprintf(err, errlen, "%s:%ld: %d fields, the header has %d", path, lineno, nf, ncol);
            goto out;
        }
        double t, r, d;
        if (parse_num(f[c_time], &t) || t < 0) {
            snprintf(err, errlen, "%s:%ld: bad time_s '%s'", path, lineno, f[c_time]);
            goto out;
        }
        if (parse_num(f[c_rate], &r) || r < 0) {
            snprintf(err, errlen, "%s:%ld: bad %s '%s' (a rate >= 0 in bit/s)", path, lineno,
                     column, f[c_rate]);
            goto out;
        }
        if (c_dev >= 0) {
            if (parse_num(f[c_dev], &d) || d != floor(d)) {
                snprintf(err, errlen, "%s:%ld: bad device '%s'", path, lineno, f[c_dev]);
                goto out;
            }
            if (d != (double)device) continue; /* no int cast: d may be huge */
        }
        /* by differences: t_prev + 1e-6 == t_prev above about 1.7e10 s, and the
         * stored offsets from the first row must stay increasing too */
        if (n && !(t - t_prev >= 1e-6 && t - t_first > off_prev)) {
            snprintf(err, errlen,
                     "%s:%ld: time_s %.15g is not after the previous %.15g (by 1 us or "
                     "more)",
                     path, lineno, t, t_prev);
            goto out;
        }
        if (!n) t_first = t;
        if (push(&l->t, &cap_t, n, t - t_first) || push(&l->r, &cap_r, n, r)) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto out;
        }
        t_prev = t, off_prev = t - t_first;
        n++;
    }
    if (!ncol) {
        snprintf(err, errlen, "%s: empty CSV trace (no header)", path);
        goto out;
    }
    if (!n) {
        if (c_dev >= 0)
            snprintf(err, errlen, "%s: no rows for device %d", path, device);
        else
            snprintf(err, errlen, "%s: no data rows", path);
        goto out;
    }
    l->n = n;
    if (n == 1) { /* one sample: a constant link */
        l->model = WD_LINK_CONSTANT;
        l->rate = l->r[0];
    } else {
        l->period = l->t[n - 1] + (l->t[n - 1] - l->t[n - 2]);
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

int wd_trace_load_mahimahi(wd_link *l, const char *path, char *err, size_t errlen) {
    size_t len;
    char *buf = read_all(path, &len, err, errlen);
    if (!buf) return 1;
    char *p = buf, *line;
    long lineno = 0, cap = 0, n = 0;
    int rc = 1;
    while ((line = next_line(&p))) {
        lineno++;
        if (!*line) continue;
        char *end;
        errno = 0;
        long long v = strtoll(line, &end, 10);
        if (*end || errno || v < 0 || v > (1LL << 50)) {
            snprintf(err, errlen, "%s:%ld: not a millisecond timestamp: '%.40s'", path, lineno,
                     line);
            goto out;
        }
        if (n && (double)v < l->ms[n - 1]) {
            snprintf(err, errlen, "%s:%ld: timestamp %lld is before the previous one (%.0f)", path,
                     lineno, v, l->ms[n - 1]);
            goto out;
        }
        if (push(&l->ms, &cap, n, (double)v)) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto out;
        }
        n++;
    }
    if (!n) {
        snprintf(err, errlen, "%s: empty Mahimahi trace (no delivery opportunities)", path);
        goto out;
    }
    if (!(l->ms[n - 1] > 0)) {
        snprintf(err, errlen, "%s: the last timestamp (the loop period) must be > 0 ms", path);
        goto out;
    }
    l->n = n;
    l->period_ms = l->ms[n - 1];
    /* prefix counts: O(1) lookups, when the table is not much larger than the trace
     * (a few opportunities over hours would need a huge one: binary search then) */
    if (l->period_ms <= (double)(1 << 26) && n < (1L << 31) && l->period_ms <= 64.0 * n + 65536) {
        long P = (long)l->period_ms;
        l->pre = malloc((P + 2) * sizeof(uint32_t));
        if (!l->pre) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto out;
        }
        long i = 0;
        for (long j = 0; j <= P + 1; j++) {
            while (i < n && l->ms[i] < (double)j) i++;
            l->pre[j] = (uint32_t)i;
        }
    }
    rc = 0;
out:
    free(buf);
    return rc;
}
