/* Rate processes and transfer times.
 *
 * Constant, CSV and synthetic links are piecewise constant in time: a walk
 * over pieces [a, b) of constant rate (split again at fault windows)
 * integrates the rate until the bits are delivered. Mahimahi links count
 * 1500-byte delivery opportunities. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

#define DEFAULT_MAX_WAIT 3600.0

static wd_link *link_alloc(wd_link_model model, int dir, int device, double latency, double scale,
                           double max_wait) {
    size_t size = (sizeof(wd_link) + 63) / 64 * 64; /* hot fields: three cache lines */
    wd_link *l = aligned_alloc(64, size);
    if (!l) return NULL;
    memset(l, 0, size);
    l->model = model, l->dir = dir, l->device = device;
    l->latency = latency, l->scale = scale;
    l->max_wait = max_wait > 0 ? max_wait : DEFAULT_MAX_WAIT;
    l->bin = -1;
    l->bin_end_x = NAN;
    l->memo_k[0] = l->memo_k[1] = LONG_MIN;
    l->pc_lo = INFINITY; /* no sample cached */
    return l;
}

/* Fold the prefix counts and the timestamps into one table (see
 * wd_mm_entry); timestamps as 32-bit integers (periods with the table are
 * at most 2^26 ms). */
static int mm_build_table(wd_link *l) {
    l->ms0 = l->ms[0];
    if (!l->pre) return 0;
    long P = (long)l->period_ms;
    l->tab = malloc((P + 2) * sizeof *l->tab);
    l->ms32 = malloc(l->n * sizeof *l->ms32);
    if (!l->tab || !l->ms32) return 1;
    for (long j = 0; j <= P + 1; j++) {
        uint32_t i = l->pre[j];
        l->tab[j].pre = i;
        l->tab[j].nxt = (long)i < l->n ? (uint32_t)l->ms[i] : WD_MM_WRAP;
    }
    for (long i = 0; i < l->n; i++) l->ms32[i] = (uint32_t)l->ms[i];
    free(l->pre), free(l->ms);
    l->pre = NULL, l->ms = NULL;
    return 0;
}

int wd_link_create(wd_link **out, const wd_link_spec *sp, int dir, int device, double max_wait,
                   char *err, size_t errlen) {
    return wd_link_create_from(out, sp, dir, device, max_wait, NULL, 0, err, errlen);
}

int wd_link_create_from(wd_link **out, const wd_link_spec *sp, int dir, int device,
                        double max_wait, wd_link *const *prev, int n_prev, char *err,
                        size_t errlen) {
    *out = NULL;
    if (sp->model == WD_LINK_SYNTHETIC) {
        snprintf(err, errlen, "link: synthetic links are built by wd_emu_create");
        return 1;
    }
    wd_link *l = link_alloc(sp->model, dir, device, sp->latency_s, sp->rate_scale, max_wait);
    if (!l) {
        snprintf(err, errlen, "link: out of memory");
        return 1;
    }
    int rc = 0;
    if (sp->model == WD_LINK_CONSTANT) {
        l->rate = sp->rate_bps;
    } else if (sp->model == WD_LINK_CSV) {
        const char *col = sp->column[0] ? sp->column : dir == WD_DL ? "downlink_bps" : "uplink_bps";
        rc = wd_trace_load_csv(l, sp->file, col, sp->csv_device >= 0 ? sp->csv_device : device, err,
                               errlen);
        l->offset = sp->offset_s;
        for (long i = 0; !rc && l->model == WD_LINK_CSV && i < l->n; i++)
            l->period_bits += l->r[i] * ((i + 1 < l->n ? l->t[i + 1] : l->period) - l->t[i]);
    } else {
        const wd_link *d = NULL; /* a link that loaded the same file */
        for (int i = 0; i < n_prev && !d; i++)
            if (prev[i] && prev[i]->model == WD_LINK_MAHIMAHI && !strcmp(prev[i]->file, sp->file))
                d = prev[i];
        if (d) {
            l->n = d->n, l->period_ms = d->period_ms, l->ms0 = d->ms0;
            l->ms = d->ms, l->ms32 = d->ms32, l->tab = d->tab;
            l->borrowed = 1;
        } else {
            rc = wd_trace_load_mahimahi(l, sp->file, err, errlen);
            if (!rc && mm_build_table(l)) rc = wd_fail(err, errlen, "%s: out of memory", sp->file);
        }
        if (!rc && !(l->file = strdup(sp->file))) rc = wd_fail(err, errlen, "link: out of memory");
        l->offset = sp->offset_s;
        l->window = sp->window_s > 0 ? sp->window_s : 0.1;
    }
    if (rc) {
        wd_link_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

wd_link *wd_link_new_synthetic(wd_synth *syn, int dir, int device, double latency, double scale,
                               double max_wait) {
    wd_link *l = link_alloc(WD_LINK_SYNTHETIC, dir, device, latency, scale, max_wait);
    if (l) l->syn = syn;
    return l;
}

void wd_link_free(wd_link *l) {
    if (!l) return;
    if (!l->borrowed) free(l->ms), free(l->ms32), free(l->tab);
    free(l->t), free(l->r), free(l->pre), free(l->file), free(l->win);
    free(l);
}

int wd_link_add_window(wd_link *l, double from, double to, double scale) {
    wd_window *w = realloc(l->win, (l->n_win + 1) * sizeof *w);
    if (!w) return 1;
    l->win = w;
    l->win[l->n_win++] = (wd_window){from, to, scale};
    l->bin = -1;
    return 0;
}

int wd_link_fixed_se(const wd_link *l) {
    return !(l->model == WD_LINK_SYNTHETIC && l->dir == WD_UL);
}

/* Product of the window scales at t; *next: the next window boundary > t. */
static double win_scale(const wd_link *l, double t, double *next) {
    double s = 1.0, nx = INFINITY;
    for (int i = 0; i < l->n_win; i++) {
        const wd_window *w = &l->win[i];
        if (t >= w->a && t < w->b) s *= w->s;
        if (w->a > t && w->a < nx) nx = w->a;
        if (w->b > t && w->b < nx) nx = w->b;
    }
    *next = nx;
    return s;
}

/* ---- piecewise-constant walk ------------------------------------------------ */
typedef struct {
    double a, b; /* current piece (absolute time) */
    long k;      /* sample / segment index */
    double L;    /* loop count (csv); a double: the clock may be far past LONG_MAX periods */
} piece;

/* Rate of the current piece at a share, before windows and rate_scale. */
static double piece_rate(wd_link *l, const piece *p, double share) {
    if (l->model == WD_LINK_CONSTANT) return share * l->rate;
    if (l->model == WD_LINK_CSV)
        return share * (p->k < 0 ? l->period_bits / l->period : l->r[p->k]);
    /* downlink: the BS power spreads over the band, so the spectral
     * efficiency does not depend on the share (one memo entry for every
     * share); uplink: the device's full power in its share */
    wd_synth *s = l->syn;
    double key = l->dir == WD_DL ? 0.0 : share, b = share * s->bw[l->dir];
    if (p->k == l->memo_k[0] && key == l->memo_share[0]) return b * l->memo_se[0];
    if (p->k == l->memo_k[1] && key == l->memo_share[1]) return b * l->memo_se[1];
    long i = wd_synth_at(s, p->k);
    if (i < 0) return 0.0;
    double snr = s->snr[l->dir][i], x = l->dir == WD_DL ? snr : snr / share, se;
    if (s->la != WD_LA_CQI) {
        se = wd_link_se(s->la, x, s->gap);
    } else {
        /* the last CQI's band, 2e-9 inside its thresholds; else the CQI of x once,
           with its band (wd_cqi_band's se is wd_link_se's) */
        if (!(x >= l->cqi_lo && x < l->cqi_hi))
            wd_cqi_band(x, s->gap, &l->cqi_lo, &l->cqi_hi, &l->cqi_se);
        se = l->cqi_se;
    }
    int j = l->memo_next; /* samples never change: the memo needs no invalidation */
    l->memo_k[j] = p->k, l->memo_share[j] = key, l->memo_se[j] = se;
    l->memo_next = j ^ 1;
    return b * se;
}

/* Locate the csv segment holding trace time x (cursor first, then binary search). */
static long csv_find(wd_link *l, double x) {
    long i = l->cur;
    if (i >= 0 && i < l->n && x >= l->t[i] && (i + 1 == l->n ? x < l->period : x < l->t[i + 1]))
        return i;
    if (i + 1 < l->n && x >= l->t[i + 1] && (i + 2 == l->n ? x < l->period : x < l->t[i + 2]))
        return l->cur = i + 1;
    long lo = 0, hi = l->n - 1; /* last index with t[idx] <= x */
    while (lo < hi) {
        long mid = (lo + hi + 1) / 2;
        if (l->t[mid] <= x)
            lo = mid;
        else
            hi = mid - 1;
    }
    return l->cur = lo;
}

/* A csv clock so far past the trace's start (a billion loops) that doubles no
 * longer resolve its samples: one piece to the end at the trace's mean rate
 * (k = -1), never a walk that cannot advance. */
static int csv_far(const wd_link *l, piece *p, double t) {
    if (fabs(t + l->offset) <= l->period * 1e9) return 0;
    p->a = t, p->b = INFINITY, p->k = -1;
    return 1;
}

/* Skip `loops` whole loops from the start of one (k = 0): the caller counts
 * their bits as loops * period_bits. */
static void piece_skip(wd_link *l, piece *p, double loops) {
    p->L += loops;
    p->a = p->L * l->period - l->offset;
    if (csv_far(l, p, p->a)) return;
    p->b = p->a + l->t[1];
}

static void piece_start(wd_link *l, piece *p, double t) {
    if (l->model == WD_LINK_CONSTANT) {
        p->a = t, p->b = INFINITY;
    } else if (l->model == WD_LINK_CSV) {
        if (csv_far(l, p, t)) return;
        double x = t + l->offset;
        double L = floor(x / l->period), ph = x - L * l->period;
        if (ph < 0) ph = 0;
        p->L = L;
        p->k = csv_find(l, ph);
        double base = L * l->period - l->offset;
        p->a = t;
        p->b = base + (p->k + 1 < l->n ? l->t[p->k + 1] : l->period);
        if (p->b <= t) p->b = nextafter(t, INFINITY);
    } else if (t >= l->pc_lo && t < l->pc_safe) {
        /* the last sample found holds t: k(t) = floor(t / ts), one more where (k + 1) ts <= t,
           never decreases with t, so k(t) >= k(pc_lo) = pc_k; and t < pc_safe keeps t / ts
           rounded below pc_k + 1, so k(t) <= pc_k */
        p->k = l->pc_k, p->a = t, p->b = l->pc_b;
    } else {
        double ts = l->syn->ts;
        p->k = (long)floor(t / ts);
        p->a = t;
        p->b = (double)(p->k + 1) * ts;
        if (p->b <= t) p->k++, p->b = (double)(p->k + 1) * ts;
        if (p->b > 0 && p->b < 1e15) /* else no cache: pc_safe stays below pc_lo */
            l->pc_k = p->k, l->pc_lo = t, l->pc_b = p->b, l->pc_safe = p->b - p->b * 1e-12;
    }
}

static void piece_next(wd_link *l, piece *p) {
    p->a = p->b;
    if (l->model == WD_LINK_CSV) {
        if (++p->k == l->n) p->k = 0, p->L++;
        if (!p->k && csv_far(l, p, p->a)) return;
        l->cur = p->k;
        double base = p->L * l->period - l->offset;
        p->b = base + (p->k + 1 < l->n ? l->t[p->k + 1] : l->period);
        if (p->b <= p->a) p->b = nextafter(p->a, INFINITY); /* always advance */
    } else if (l->model == WD_LINK_SYNTHETIC) {
        p->k++;
        p->b = (double)(p->k + 1) * l->syn->ts;
    } else {
        p->b = INFINITY;
    }
}

/* Deliver *rem bits over [a, b) at rate r (windows applied); returns 1 and
 * the finish time when done within it. */
static int piece_send(const wd_link *l, double a, double b, double r, double *rem, double *done) {
    if (!l->n_win) {
        if (r > 0) {
            double cap = r * (b - a);
            if (cap >= *rem) return *done = a + *rem / r, 1;
            *rem -= cap;
        }
        return 0;
    }
    for (double t = a; t < b;) {
        double nx, rr = r * win_scale(l, t, &nx), e = nx < b ? nx : b;
        if (rr > 0) {
            double cap = rr * (e - t);
            if (cap >= *rem) return *done = t + *rem / rr, 1;
            *rem -= cap;
        }
        t = e;
    }
    return 0;
}

/* ---- mahimahi --------------------------------------------------------------- */
#define MM_EPS 1e-6 /* ms: tolerance when comparing times with opportunities */

/* First index with ms[i] >= x (n when none): the prefix table, or a binary search. */
static long mm_lower(const wd_link *l, double x) {
    if (l->tab) {
        double c = ceil(x); /* timestamps are whole ms: ms < x  <=>  ms < ceil(x) */
        return c <= 0 ? 0 : c > l->period_ms + 1 ? l->n : (long)l->tab[(long)c].pre;
    }
    long lo = 0, hi = l->n;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (l->ms[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Opportunities with trace time (ms) < x, counted from trace time 0 (none
 * before it: the trace starts at 0, no loop precedes the first). */
static double mm_count_before(const wd_link *l, double x) {
    if (x <= 0) return 0.0;
    double L = floor(x / l->period_ms);
    return L * (double)l->n + (double)mm_lower(l, x - L * l->period_ms);
}

/* Position of the first opportunity at or after time t (s): loop and index.
 * The last timestamp equals the period, so the end of loop L and the start
 * of loop L + 1 coincide: locate the loop from x - eps. */
static void mm_first(const wd_link *l, double t, double *L, long *i) {
    double x = (t + l->offset) * 1000.0 - MM_EPS;
    *L = floor(x / l->period_ms);
    if (*L < 0) *L = 0; /* the trace starts at 0: no loop before it */
    *i = mm_lower(l, x - *L * l->period_ms);
    if (*i == l->n) *L += 1, *i = 0;
}

static double mm_time(const wd_link *l, double L, long i) { /* s */
    return (L * l->period_ms + (l->ms32 ? (double)l->ms32[i] : l->ms[i])) / 1000.0 - l->offset;
}

/* mm_nth(l, t, 1) with the table: one lookup gives the time. */
static double mm_next(const wd_link *l, double t) {
    double x = (t + l->offset) * 1000.0 - MM_EPS;
    double L = floor(x / l->period_ms);
    if (L < 0) L = 0;
    double c = ceil(x - L * l->period_ms);
    uint32_t v = c <= 0 ? l->tab[0].nxt : c > l->period_ms + 1 ? WD_MM_WRAP : l->tab[(long)c].nxt;
    if (v == WD_MM_WRAP) return ((L + 1) * l->period_ms + l->ms0) / 1000.0 - l->offset;
    return (L * l->period_ms + (double)v) / 1000.0 - l->offset;
}

/* Time (s) of the k-th (k >= 1) opportunity at or after t. */
static double mm_nth(const wd_link *l, double t, double k) {
    double L;
    long i;
    mm_first(l, t, &L, &i);
    double j = (double)i + k - 1;
    double loops = floor(j / (double)l->n);
    return mm_time(l, L + loops, (long)(j - loops * (double)l->n));
}

/* Opportunities in [a, b) (closed: [a, b]). */
static double mm_count(const wd_link *l, double a, double b, int closed) {
    if (b < a) return 0.0;
    double xb = (b + l->offset) * 1000.0, xa = (a + l->offset) * 1000.0;
    return mm_count_before(l, xb + (closed ? MM_EPS : -MM_EPS)) - mm_count_before(l, xa - MM_EPS);
}

static double mm_tx_time(wd_link *l, double t0, double bits, double share) {
    double per = WD_MTU_BITS * share * l->scale, rem = bits;
    if (per <= 0) return INFINITY;
    /* walk the fault windows; inside each the scale is constant */
    for (double t = t0;;) {
        double nx = INFINITY, s = l->n_win ? win_scale(l, t, &nx) : 1.0;
        if (s > 0) {
            double k = ceil(rem / (per * s) - 1e-9);
            double tk = k <= 1 && l->tab ? mm_next(l, t) : mm_nth(l, t, k < 1 ? 1 : k);
            if (tk < nx) return tk - t0 + l->latency;
            rem -= per * s * mm_count(l, t, nx, 0);
        }
        if (nx == INFINITY || nx - t0 > l->max_wait) return INFINITY;
        t = nx;
    }
}

/* Bits deliverable at share 1 in [a, b] (closed) or [a, b) (windows optional). */
static double mm_bits(const wd_link *l, double a, double b, int closed, int windows) {
    double per = WD_MTU_BITS * l->scale;
    if (!windows || !l->n_win) return per * mm_count(l, a, b, closed);
    double bits = 0.0;
    for (double t = a; t <= b;) {
        double nx, s = win_scale(l, t, &nx);
        if (nx > b) return bits + per * s * mm_count(l, t, b, closed);
        bits += per * s * mm_count(l, t, nx, 0);
        t = nx;
    }
    return bits;
}

/* ---- public ------------------------------------------------------------------ */
static double tx_time(wd_link *l, double t0, double bits, double share);

/* One rule for every link kind: a transfer still running max_wait_s after it
 * started never completes (INFINITY). */
double wd_link_tx_time(wd_link *l, double t0, double bits, double share) {
    double d = tx_time(l, t0, bits, share);
    return d - l->latency > l->max_wait ? INFINITY : d;
}

static double tx_time(wd_link *l, double t0, double bits, double share) {
    if (bits <= 0) return 0.0;
    if (!(share > 0)) return INFINITY;
    if (l->model == WD_LINK_CONSTANT && !l->n_win) {
        double r = share * l->rate * l->scale;
        return r > 0 ? bits / r + l->latency : INFINITY;
    }
    if (l->model == WD_LINK_MAHIMAHI) {
        /* an opportunity in the millisecond holding t0 can come out a rounding error
           before t0 */
        double d = mm_tx_time(l, t0, bits, share);
        return d > 0 ? d : 0.0;
    }
    piece p;
    piece_start(l, &p, t0);
    double rem = bits, done;
    for (;;) {
        double r = piece_rate(l, &p, share) * l->scale;
        if (piece_send(l, p.a, p.b, r, &rem, &done)) return done - t0 + l->latency;
        if (p.b == INFINITY || p.b - t0 > l->max_wait) return INFINITY;
        piece_next(l, &p);
        if (l->model == WD_LINK_CSV && p.k == 0 && !l->n_win && l->period_bits > 0) {
            double per = share * l->period_bits * l->scale, loops = floor(rem / per) - 1;
            if (loops >= 1) { /* whole loops at once: bounded work for any trace */
                if (p.a + loops * l->period - t0 > l->max_wait) return INFINITY;
                rem -= loops * per;
                piece_skip(l, &p, loops);
            }
        }
    }
}

/* Bits deliverable in [a, b) at a share (windows optional). */
static double pw_bits(wd_link *l, double a, double b, double share, int windows) {
    if (!(b > a)) return 0.0;
    piece p;
    piece_start(l, &p, a);
    double bits = 0.0;
    for (;;) {
        double e = p.b < b ? p.b : b, r = piece_rate(l, &p, share) * l->scale;
        if (windows && l->n_win) {
            for (double t = p.a; t < e;) {
                double nx, s = win_scale(l, t, &nx), f = nx < e ? nx : e;
                bits += r * s * (f - t);
                t = f;
            }
        } else if (r > 0) {
            bits += r * (e - p.a);
        }
        if (p.b >= b) return bits;
        piece_next(l, &p);
        if (l->model == WD_LINK_CSV && p.k == 0 && !(windows && l->n_win)) {
            double loops = floor((b - p.a) / l->period) - 1;
            if (loops >= 1) { /* whole loops at once: bounded work for any interval */
                bits += loops * share * l->period_bits * l->scale;
                piece_skip(l, &p, loops);
            }
        }
    }
}

double wd_link_piece_rate(wd_link *l, double a, double b, double share) {
    if (l->model != WD_LINK_SYNTHETIC || l->n_win || !(b > a) || !(share > 0)) return -1.0;
    piece p;
    piece_start(l, &p, a);
    if (p.b < b) return -1.0;
    return piece_rate(l, &p, share) * l->scale;
}

double wd_link_bits_tx(wd_link *l, double a, double b, double share, double rem, double *d) {
    enum { NP = 16 };
    double pa[NP], pb[NP], pr[NP], bits = 0.0;
    int np = 0;
    if (l->model == WD_LINK_SYNTHETIC && !l->n_win && b > a) { /* pw_bits' walk, kept */
        piece p;
        piece_start(l, &p, a);
        for (;; np++) {
            double e = p.b < b ? p.b : b, r = piece_rate(l, &p, share) * l->scale;
            if (r > 0) bits += r * (e - p.a);
            if (np < NP) pa[np] = p.a, pb[np] = p.b, pr[np] = r;
            if (p.b >= b) break;
            piece_next(l, &p);
        }
        np = np + 1 > NP ? 0 : np + 1; /* pieces kept (0: too many, walk again) */
    } else {
        bits = wd_link_bits(l, a, b, share);
    }
    if (!(bits >= rem)) return bits;
    if (rem > 0 && share > 0 && np > 0) { /* tx_time's walk over the same pieces from a */
        double left = rem;
        for (int i = 0; i < np; i++) {
            double r = pr[i];
            if (r > 0) {
                double cap = r * (pb[i] - pa[i]);
                if (cap >= left) {
                    double t = pa[i] + left / r - a + l->latency;
                    *d = t - l->latency > l->max_wait ? INFINITY : t;
                    return bits;
                }
                left -= cap;
            }
            if (pb[i] == INFINITY || pb[i] - a > l->max_wait) {
                *d = INFINITY;
                return bits;
            }
        }
    }
    *d = wd_link_tx_time(l, a, rem, share); /* past the pieces kept: the walk itself */
    return bits;
}

double wd_link_bits(wd_link *l, double a, double b, double share) {
    if (l->model == WD_LINK_MAHIMAHI) return share * mm_bits(l, a, b, 0, 1);
    return pw_bits(l, a, b, share, 1);
}

double wd_link_mean_rate(wd_link *l, double a, double b) {
    if (!(b > a)) return wd_link_rate(l, a);
    double bits = l->model == WD_LINK_MAHIMAHI ? mm_bits(l, a, b, 0, 0) : pw_bits(l, a, b, 1.0, 0);
    return bits / (b - a);
}

double wd_link_rate_until(wd_link *l, double t, double share, double *until) {
    double nx = INFINITY, w = l->n_win ? win_scale(l, t, &nx) : 1.0, r;
    if (l->model == WD_LINK_MAHIMAHI) {
        long q = (long)floor((t + l->offset) / l->window);
        if (q != l->bin) { /* mm_bits(a, b, 0, 0); the next bin starts where this one ends */
            double a = (double)q * l->window - l->offset, b = (double)(q + 1) * l->window - l->offset;
            double xa = (a + l->offset) * 1000.0 - MM_EPS, xb = (b + l->offset) * 1000.0 - MM_EPS;
            double ca = xa == l->bin_end_x ? l->bin_end_cnt : mm_count_before(l, xa);
            double cb = mm_count_before(l, xb);
            l->bin_end_x = xb, l->bin_end_cnt = cb;
            l->bin_rate = WD_MTU_BITS * l->scale * (cb - ca) / l->window;
            l->bin = q;
        }
        double end = (double)(q + 1) * l->window - l->offset;
        if (end <= t) end = nextafter(t, INFINITY);
        *until = end < nx ? end : nx;
        return share * l->bin_rate * w;
    }
    piece p;
    piece_start(l, &p, t);
    r = piece_rate(l, &p, share) * l->scale * w;
    *until = p.b < nx ? p.b : nx;
    return r;
}

double wd_link_rate_share(wd_link *l, double t, double share) {
    double until;
    return wd_link_rate_until(l, t, share, &until);
}

double wd_link_rate(wd_link *l, double t) { return wd_link_rate_share(l, t, 1.0); }

double wd_link_share_needed(wd_link *l, double a, double bits, double deadline) {
    double b = deadline - l->latency;
    if (bits <= 0) return 0.0;
    if (!(b > a)) return INFINITY;
    if (l->model == WD_LINK_MAHIMAHI) {
        double cap = mm_bits(l, a, b, 1, 1);
        return cap > 0 ? bits / cap : INFINITY;
    }
    double cap1 = pw_bits(l, a, b, 1.0, 1);
    if (!(cap1 > 0)) return INFINITY;
    if (wd_link_fixed_se(l)) return bits / cap1;
    if (cap1 < bits) return bits / cap1; /* > 1: not enough even with the whole band */
    double lo = 0.0, hi = 1.0;           /* delivered bits grow with the share */
    for (int it = 0; it < 60 && hi - lo > 1e-13; it++) {
        double mid = 0.5 * (lo + hi);
        if (pw_bits(l, a, b, mid, 1) >= bits)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}
