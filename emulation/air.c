/* The NR air interface of one transfer (docs/radio.md): scheduling
 * (scheduling request and grant on the uplink), slot alignment, processing,
 * TDD sharing of the carrier in time, HARQ retransmissions; and link
 * adaptation by the CQI table of 3GPP TS 38.214.
 *
 * Downlink, data ready at the BS at t0:
 *   gNB processing -> next slot with downlink symbols (PDCCH + PDSCH start
 *   at its first symbol) -> data over downlink symbols only -> UE decoding N1.
 * Uplink (dynamic grant), data ready at the device at t0:
 *   SR in the next uplink symbols -> gNB processing -> grant in the next
 *   slot with downlink symbols (PDCCH) -> UE preparation N2 -> data over
 *   uplink symbols only -> gNB decoding. Configured grant: straight to the
 *   next uplink symbols after N2.
 * HARQ: the transfer is one transport block per slot it spans; each
 *   transmission of a block fails with probability bler (independent), at
 *   most max_retx retransmissions (the largest count over the blocks is drawn
 *   directly from its distribution). A round: feedback (downlink: HARQ-ACK in
 *   the next uplink symbols after N1, then gNB processing; uplink: gNB
 *   decoding, then a new grant and N2) and the block sent again. The
 *   transfer waits for its slowest block. Draws are a hash of (seed, device,
 *   direction, start time, block, attempt): the same transfer gives the same
 *   outcome however often it is planned. */
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

/* 38.214 Table 5.2.2.1-3 (4-bit CQI table 2, up to 256-QAM): efficiency */
static const double cqi_se[WD_CQI_MAX + 1] = {0.0,    0.1523, 0.3770, 0.8770, 1.4766, 1.9141,
                                              2.4063, 2.7305, 3.3223, 3.9023, 4.5234, 5.1152,
                                              5.5547, 6.2266, 6.9141, 7.4063};

double wd_cqi_efficiency(int cqi) { return cqi >= 0 && cqi <= WD_CQI_MAX ? cqi_se[cqi] : 0.0; }

/* 2^se - 1 of CQI 1 .. 15: log2(1 + x) >= se exactly when x >= this, away from it */
static const double cqi_x[WD_CQI_MAX] = {
    0.1113398012441269, 0.29863860272988374, 0.83655232460184759, 1.7829210871251853,
    2.7687863189269302, 4.301130292631127,   5.6368561270305024,  9.002578182096638,
    13.952346479919388, 21.997418179080778,  33.660006020885206,  46.00362112036234,
    73.884747715121264, 119.60116220566179,  168.63616936419606};

/* The highest CQI whose efficiency is at most log2(1 + snr / gap): compared
 * in the SNR domain (no log2); within 1e-9 of a threshold, far above the
 * rounding of log2 and of the table, the log2 of the definition decides. */
int wd_cqi_from_snr(double snr, double gap) {
    if (!(snr > 0)) return 0;
    double x = snr / gap;
    int q = 0; /* thresholds ascend: the count below x (no branch per threshold) */
    for (int i = 0; i < WD_CQI_MAX; i++) q += cqi_x[i] <= x;
    if ((q > 0 && x - cqi_x[q - 1] < 1e-9 * cqi_x[q - 1]) ||
        (q < WD_CQI_MAX && cqi_x[q] - x < 1e-9 * cqi_x[q])) {
        double cap = log2(1.0 + x);
        for (q = 0; q < WD_CQI_MAX && cqi_se[q + 1] <= cap;) q++;
    }
    return q;
}

void wd_cqi_band(double snr, double gap, double *lo, double *hi, double *se) {
    int q = wd_cqi_from_snr(snr, gap);
    *se = cqi_se[q];
    *lo = q > 0 ? cqi_x[q - 1] * gap * (1 + 2e-9) : 0.0; /* snr > 0: outage SNRs are 0 */
    *hi = q < WD_CQI_MAX ? cqi_x[q] * gap * (1 - 2e-9) : INFINITY;
    if (q == 0) *lo = INFINITY; /* CQI 0 (and snr <= 0) always goes the long way */
}

double wd_link_se(wd_link_adaptation la, double snr, double gap) {
    if (la == WD_LA_SHANNON) return snr > 0 ? log2(1.0 + snr) : 0.0;
    return cqi_se[wd_cqi_from_snr(snr, gap)];
}

/* ---- numerology and TDD pattern ------------------------------------------- */
void wd_air_defaults(wd_air *a, int mu) {
    static const double n1[4] = {8, 10, 17, 20}, n2[4] = {10, 12, 23, 36};
    int i = mu < 0 ? 0 : mu > 3 ? 3 : mu;
    memset(a, 0, sizeof *a);
    a->enabled = 1;
    a->numerology = mu;
    a->duplex = WD_DUPLEX_TDD;
    snprintf(a->pattern, sizeof a->pattern, "DDDSU");
    a->special[0] = 10, a->special[1] = 2, a->special[2] = 2;
    a->n1_sym = n1[i], a->n2_sym = n2[i], a->gnb_proc_sym = n1[i];
    a->pdcch_sym = 2;
    a->ul_sched = WD_UL_DYNAMIC;
    a->bler = 0.1;
    a->max_retx = 3;
}

int wd_air_check(const wd_air *a, char *err, size_t errlen) {
    if (a->numerology < 0 || a->numerology > 4)
        return wd_fail(err, errlen, "numerology %d is out of range [0, 4]", a->numerology);
    if (a->duplex == WD_DUPLEX_FDD) return 0;
    size_t n = strlen(a->pattern);
    int dl = 0, ul = 0;
    if (n < 1 || n > WD_TDD_MAX_SLOTS)
        return wd_fail(err, errlen, "tdd_pattern: 1 to %d slots", WD_TDD_MAX_SLOTS);
    for (size_t i = 0; i < n; i++) {
        char c = a->pattern[i];
        if (c != 'D' && c != 'U' && c != 'S')
            return wd_fail(err, errlen, "tdd_pattern: '%c' is not D, S or U", c);
        dl |= c == 'D' || (c == 'S' && a->special[0] > 0);
        ul |= c == 'U' || (c == 'S' && a->special[2] > 0);
    }
    if (a->special[0] < 0 || a->special[1] < 0 || a->special[2] < 0 ||
        a->special[0] + a->special[1] + a->special[2] != 14)
        return wd_fail(err, errlen, "special_slot_symbols: three counts summing to 14");
    if (!dl || !ul) return wd_fail(err, errlen, "tdd_pattern: needs downlink and uplink symbols");
    return 0;
}

double wd_air_slot_s(const wd_air *a) { return 1e-3 / (double)(1 << a->numerology); }

/* Symbols [lo, hi) of slot kind c that carry direction dir (hi = lo: none). */
static void slot_region(const wd_air *a, char c, int dir, int *lo, int *hi) {
    *lo = 0, *hi = 14;
    if (a->duplex == WD_DUPLEX_FDD) return;
    if (c == 'S') {
        if (dir == WD_DL)
            *hi = a->special[0];
        else
            *lo = 14 - a->special[2];
    } else if ((c == 'D') != (dir == WD_DL)) {
        *hi = 0;
    }
}

double wd_air_duty(const wd_air *a, int dir) {
    if (a->duplex == WD_DUPLEX_FDD) return 1.0;
    int n = (int)strlen(a->pattern), sym = 0, lo, hi;
    for (int i = 0; i < n; i++) slot_region(a, a->pattern[i], dir, &lo, &hi), sym += hi - lo;
    return sym / (14.0 * n);
}

/* Position of slot k (a whole number) in a pattern of n slots: fmod(k, n),
 * by integers where they hold k exactly (the same value, without the libm call). */
static long pattern_pos(double k, int n) {
    return fabs(k) < 4e18 ? (long)k % n : (long)fmod(k, n);
}

void wd_air_geo_init(wd_air_geo *g, const wd_air *A) {
    g->slot = wd_air_slot_s(A), g->sym = g->slot / 14, g->inv_slot = 1 / g->slot;
    g->n = A->duplex == WD_DUPLEX_FDD ? 1 : (int)strlen(A->pattern);
    for (int i = 0; i < WD_AIR_SITES; i++) g->ns_in[i] = NAN; /* equal to no time */
    g->oi_t[0] = g->oi_t[1] = NAN;
}

#define AIR_EPS 1e-12 /* s: times this close to a boundary are on it */

/* The first region of direction dir that ends after t: [*a, *b), merged with
 * the regions that follow it without a gap (a few slots at most); *a >= t. */
static void on_interval_calc(const wd_air *A, const wd_air_geo *g, int dir, double t, double *a,
                             double *b) {
    *a = t, *b = INFINITY;
    double slot = g->slot, sym = g->sym;
    int n = g->n, found = 0;
    double k = wd_floor_div(t + AIR_EPS, slot, g->inv_slot);
    long j = pattern_pos(k, n); /* then counted along */
    for (int guard = 0; guard < 8 * n + 8; k += 1, guard++, j = j + 1 == n ? 0 : j + 1) {
        int lo, hi;
        slot_region(A, A->pattern[j], dir, &lo, &hi);
        if (hi <= lo) {
            if (found) return;
            continue;
        }
        double s0 = k * slot + lo * sym, s1 = k * slot + hi * sym;
        if (!found) {
            if (s1 <= t + AIR_EPS) continue;
            *a = s0 > t ? s0 : t, *b = s1, found = 1;
        } else {
            if (s0 > *b + AIR_EPS) return;
            *b = s1;
        }
        if (hi < 14 || guard >= 2 * n) return; /* a gap follows, or long enough */
    }
}

/* on_interval_calc, the last answer per direction kept */
static void on_interval(const wd_air *A, wd_air_geo *g, int dir, double t, double *a, double *b) {
    if (t != g->oi_t[dir]) {
        on_interval_calc(A, g, dir, t, &g->oi_a[dir], &g->oi_b[dir]);
        g->oi_t[dir] = t;
    }
    *a = g->oi_a[dir], *b = g->oi_b[dir];
}

/* Start of the next region of dir at or after t that begins a slot's
 * region (a transmission starts at its first symbol). */
static double next_start_calc(const wd_air *A, const wd_air_geo *g, int dir, double t) {
    double slot = g->slot, sym = g->sym;
    int n = g->n;
    double k = wd_floor_div(t + AIR_EPS, slot, g->inv_slot);
    for (long j = pattern_pos(k, n);; k += 1, j = j + 1 == n ? 0 : j + 1) {
        int lo, hi;
        slot_region(A, A->pattern[j], dir, &lo, &hi);
        double s0 = k * slot + lo * sym;
        if (hi > lo && s0 >= t - AIR_EPS) return s0 > t ? s0 : t;
    }
}

/* next_start_calc, the last answer per call site kept (each site asks one direction) */
enum { NS_DL, NS_CG, NS_SR, NS_GRANT, NS_UL, NS_ACK, NS_RE_DL, NS_RE_GRANT, NS_RE_UL };
static double next_start(const wd_air *A, wd_air_geo *g, int site, int dir, double t) {
    if (t != g->ns_in[site]) g->ns_out[site] = next_start_calc(A, g, dir, t), g->ns_in[site] = t;
    return g->ns_out[site];
}

/* ---- one transfer ------------------------------------------------------------ */
/* Send bits from t over dir's regions; returns the finish time (INFINITY:
 * never within max_wait of t0), adds the time spent sending to *on and the
 * slots it spans to *slots. */
static double send(const wd_air *A, wd_air_geo *g, wd_link *l, int dir, double t0, double t,
                   double bits, double share, double *on, int *slots) {
    double rem = bits, slot = g->slot;
    while (rem > 0) {
        double a, b;
        on_interval(A, g, dir, t, &a, &b);
        /* one sample or block of a synthetic link holds [a, b): its rate r gives what
           wd_link_bits and wd_link_tx_time compute, the same operations in one step */
        double r = wd_link_piece_rate_last(l, a, b, share);
        double d = NAN; /* else [a, b) spans samples: their bits and, when they hold rem,
                           the time to send rem, in one walk */
        double cap = r > 0 ? r * (b - a) : r == 0 ? 0.0 : wd_link_bits_tx(l, a, b, share, rem, &d);
        if (cap >= rem) {
            if (r > 0) {
                d = a + rem / r - a + l->latency;
                d = d - l->latency > l->max_wait ? INFINITY : d;
            }
            d -= l->latency;
            double f = a + d;
            if (f > b) f = b; /* rounding */
            *on += f - a;
            *slots += (int)(wd_floor_div(f - AIR_EPS, slot, g->inv_slot) -
                            wd_floor_div(a + AIR_EPS, slot, g->inv_slot)) +
                      1;
            return f;
        }
        rem -= cap;
        *on += b - a;
        *slots += (int)(wd_floor_div(b - AIR_EPS, slot, g->inv_slot) -
                        wd_floor_div(a + AIR_EPS, slot, g->inv_slot)) +
                  1;
        if (b - t0 > l->max_wait) return INFINITY;
        t = b;
    }
    return t;
}

/* pow(x, n) for a whole n >= 1: pow itself, but x at n = 1 (what pow returns there) */
static double pow_1(double x, int n) { return n == 1 ? x : pow(x, n); }

/* llround(x) without the libm call where x >= 0 fits a long long (half away from zero: the
 * fraction x - trunc(x) is exact) */
static long long round_ns(double x) {
    if (!(x >= 0 && x < 9.2e18)) return llround(x);
    long long i = (long long)x;
    return x - (double)i >= 0.5 ? i + 1 : i;
}

static double harq_u(uint64_t seed, int device, int dir, double t0, int blocks, int attempt) {
    uint64_t x = seed ^ wd_mix64((uint64_t)round_ns(t0 * 1e9) + 0x9e3779b97f4a7c15ULL);
    x = wd_mix64(x ^ ((uint64_t)device << 32) ^ ((uint64_t)dir << 31) ^
                 ((uint64_t)blocks << 8) ^ (uint64_t)attempt);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

double wd_air_tx_time(const wd_air *A, wd_link *l, int dir, double t0, double bits, double share,
                      uint64_t seed, int device, int expected, double *overhead) {
    wd_air_geo g;
    wd_air_geo_init(&g, A);
    return wd_air_tx_time_geo(A, &g, l, dir, t0, bits, share, seed, device, expected, overhead);
}

double wd_air_tx_time_geo(const wd_air *A, wd_air_geo *g, wd_link *l, int dir, double t0,
                          double bits, double share, uint64_t seed, int device, int expected,
                          double *overhead) {
    *overhead = 0;
    if (bits <= 0) return 0.0;
    if (!(share > 0)) return INFINITY;
    double sym = g->sym, gnb = A->gnb_proc_sym * sym, t;
    if (dir == WD_DL) {
        t = next_start(A, g, NS_DL, WD_DL, t0 + gnb);
    } else if (A->ul_sched == WD_UL_CONFIGURED) {
        t = next_start(A, g, NS_CG, WD_UL, t0 + A->n2_sym * sym);
    } else {
        double sr = next_start(A, g, NS_SR, WD_UL, t0);                   /* SR, one symbol */
        double grant = next_start(A, g, NS_GRANT, WD_DL, sr + sym + gnb); /* PDCCH */
        t = next_start(A, g, NS_UL, WD_UL, grant + (A->pdcch_sym + A->n2_sym) * sym);
    }
    double on = 0;
    int slots = 0;
    double te = send(A, g, l, dir, t0, t, bits, share, &on, &slots);
    if (!isfinite(te)) return INFINITY;
    /* HARQ rounds: the most retransmissions any block needed */
    double rounds = 0;
    if (A->bler > 0 && A->max_retx > 0) {
        if (expected) { /* E[max over blocks] = sum_r P(some block needs >= r) */
            for (int r = 1; r <= A->max_retx; r++)
                rounds += 1.0 - pow(1.0 - pow(A->bler, r), slots > 0 ? slots : 1);
        } else {
            /* the largest of the blocks' retransmission counts, drawn at once by
               inverting P(max <= r) = (1 - bler^(r+1))^blocks */
            int blocks = slots > 0 ? slots : 1, r = 0;
            double u = harq_u(seed, device, dir, t0, slots, 0);
            if (blocks <= WD_HARQ_CACHE) { /* the same pow calls, once per link */
                if (l->harq_bler != A->bler || l->harq_retx != A->max_retx)
                    l->harq_have = 0, l->harq_bler = A->bler, l->harq_retx = A->max_retx;
                double *thr = l->harq_thr[blocks - 1];
                if (!(l->harq_have >> (blocks - 1) & 1)) {
                    for (int q = 0; q < A->max_retx; q++)
                        thr[q] = pow_1(1.0 - pow_1(A->bler, q + 1), blocks);
                    l->harq_have |= 1u << (blocks - 1);
                }
                while (r < A->max_retx && !(u < thr[r])) r++;
            } else {
                while (r < A->max_retx && !(u < pow_1(1.0 - pow_1(A->bler, r + 1), blocks))) r++;
            }
            rounds = r;
        }
    }
    /* each round: feedback, then the block again (its airtime is overhead too) */
    double block = bits / (slots > 0 ? slots : 1), spare = 0;
    for (int r = 0; r < (int)ceil(rounds); r++) {
        double start = te, t1;
        if (dir == WD_DL) {
            /* HARQ-ACK */
            double ack = next_start(A, g, NS_ACK, WD_UL, te + A->n1_sym * sym) + sym;
            t1 = next_start(A, g, NS_RE_DL, WD_DL, ack + gnb);
        } else {
            double grant = next_start(A, g, NS_RE_GRANT, WD_DL, te + gnb);
            t1 = next_start(A, g, NS_RE_UL, WD_UL, grant + (A->pdcch_sym + A->n2_sym) * sym);
        }
        int s2 = 0;
        te = send(A, g, l, dir, t0, t1, block, share, &spare, &s2);
        if (!isfinite(te)) return INFINITY;
        if (expected) { /* a fractional number of rounds: the first one, scaled */
            te = start + rounds * (te - start);
            break;
        }
    }
    double done = te + (dir == WD_DL ? A->n1_sym * sym : gnb);
    double total = done - t0 + l->latency;
    *overhead = total - l->latency - on;
    if (*overhead < 0) *overhead = 0;
    return total;
}
