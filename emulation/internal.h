/* Private to emulation/: the RNG, the synthetic channel generator and the
 * link internals. Other modules include emulation/emulation.h only. */
#ifndef WD_EMU_INTERNAL_H
#define WD_EMU_INTERNAL_H

#include <math.h>
#include <stdarg.h>

#include "emulation/emulation.h"

/* Write the message into err and return 1 (the error convention). */
__attribute__((format(printf, 3, 4))) static inline int wd_fail(char *err, size_t errlen,
                                                                const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return 1;
}

/* A regular input file of at most max_bytes (0: any size), opened for
 * reading; NULL with "PATH: ..." in err (FIFOs and devices are refused before
 * they can block or read without end). emulation/input.c */
FILE *wd_open_input(const char *path, long long max_bytes, char *err, size_t errlen);
#define WD_MAX_TEXT_INPUT (1LL << 30) /* scenarios and traces */

#define WD_MTU_BITS 12000.0 /* one Mahimahi delivery opportunity: 1500 bytes */

/* ---- rng: splitmix64, deterministic streams per (seed, device, purpose) ---- */
typedef struct {
    uint64_t s;
} wd_erng;
static inline uint64_t wd_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline uint64_t wd_erng_next(wd_erng *r) {
    r->s += 0x9e3779b97f4a7c15ULL;
    return wd_mix64(r->s);
}
static inline double wd_erng_uniform(wd_erng *r) { /* [0, 1) */
    return (double)(wd_erng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}
static inline double wd_erng_gauss(wd_erng *r) { /* N(0, 1), Box-Muller */
    double u = 1.0 - wd_erng_uniform(r), v = wd_erng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static inline uint64_t wd_stream_seed(uint64_t seed, int device, int purpose) {
    return wd_mix64(seed ^ wd_mix64(0x5eedULL + (uint64_t)device * 1315423911ULL +
                                    (uint64_t)purpose * 0x632be59bd9b4e019ULL));
}

/* ---- synthetic channel of one device (both directions) ------------------- */
#define WD_SYNTH_ANCHOR 256 /* fading phasors are recomputed exactly every this many samples */
typedef struct {
    /* read by every rate query: first */
    double ts;    /* sample period (block fading: the block length) */
    double bw[2]; /* Hz */
    wd_link_adaptation la;
    double gap; /* CQI: SNR gap (linear) */
    /* samples [k0, k0 + n): full-band SNR (0 in outage) per direction */
    long k0, n;
    double *snr[2];
    long cap;
    double snr0[2]; /* mean SNR (linear) without shadowing and fading, full band */
    double outage;  /* linear SNR threshold */
    double sigma_db, rho; /* shadowing std, AR(1) coefficient per grid step */
    long grid;            /* samples per shadowing grid step (d_corr / 100 of travel) */
    int shadowing;
    int block; /* block fading: sample k's fading is the sum of sinusoids at k ts, computed
                  when the sample is first read (no phasors) */
    wd_fading fad[2];
    uint64_t seed;
    /* generator state: sample next_k is generated next */
    wd_erng rng;
    double sh_cur, sh_next; /* AR(1) values at grid points j and j + 1 (dB) */
    double sh_g, sh_r;      /* linear shadowing gain at next_k; per-sample ratio */
    double spare;           /* second Box-Muller normal */
    int has_spare;
    long next_k;
    long sh_left; /* samples from next_k to the next shadowing grid point */
    /* per direction: phasors exp(j (w_n t + phi_n)) of the sinusoids at
     * next_k and their one-sample rotations (WD_FADING_SINUSOIDS each, for
     * vector loads), then the same for the Rician LOS ray */
    double ph_re[2][WD_FADING_SINUSOIDS], ph_im[2][WD_FADING_SINUSOIDS];
    double rot_re[2][WD_FADING_SINUSOIDS], rot_im[2][WD_FADING_SINUSOIDS];
    double los_re[2], los_im[2], los_rot_re[2], los_rot_im[2];
    double ric_a[2], ric_b[2]; /* Rician: sqrt(1 / (K + 1)), sqrt(K / (K + 1)) */
} wd_synth;

int wd_synth_init(wd_synth *s, const wd_radio *radio, double pl_db, double sigma_db,
                  double decorr_m, double speed_mps, uint64_t seed);
/* The channel's sample period for a radio and a device speed: sample_period_s, or the
 * block of block fading (the coherence time 0.423 / f_D, at most WD_FADING_BLOCK_MAX_S). */
double wd_synth_period(const wd_radio *radio, double speed_mps);
/* wd_fading_at with wd_cos instead of libm's cos (block fading). */
void wd_fading_fast(const wd_fading *f, double t, double *re, double *im);
/* cos(x) without libm (libm's for |x| >= 1e6): quadrant reduction and Taylor polynomials
 * on [-pi/4, pi/4] (absolute error below 1e-15 for |x| < 1e6); the same bits with any
 * compiler (plain arithmetic, the library compiled with -ffp-contract=off). */
double wd_cos(double x);
double wd_sin(double x); /* the same for sin(x) */
void wd_synth_free(wd_synth *s);
/* Make sample k available; returns its offset in the buffers or -1 (no memory). */
long wd_synth_at(wd_synth *s, long k);
void wd_synth_forget(wd_synth *s, double t); /* samples before t are no longer needed */
/* A time before which wd_synth_forget(s, t) drops nothing (as long as no query went back). */
double wd_synth_forget_time(const wd_synth *s);

/* ---- links ---------------------------------------------------------------- */
typedef struct {
    double a, b, s;
} wd_window;

/* Mahimahi lookup table, one entry per whole millisecond j of the loop:
 * pre = opportunities before j ms, nxt = time (ms) of the first one at or
 * after j ms (WD_MM_WRAP: none left in this loop). One cache line answers
 * both a count and "the next opportunity". */
typedef struct {
    uint32_t pre, nxt;
} wd_mm_entry;
#define WD_HARQ_CACHE 4 /* transport blocks per transfer whose HARQ thresholds a link keeps */
#define WD_MM_WRAP UINT32_MAX

/* Fields in the order the per-step paths read them: the first three cache
 * lines hold everything a rate or transfer-time query of a synthetic link needs
 * (allocated 64-byte aligned; the forward pass between two layer steps evicts them). */
struct wd_link {
    wd_link_model model;
    int dir, device, n_win;
    double latency, scale, max_wait;
    double offset;  /* csv, mahimahi */
    wd_synth *syn;  /* synthetic */
    double rate;    /* constant */
    /* synthetic: the last spectral efficiencies by sample and share (the
     * rate is share x band x efficiency; downlink: share 0 stands for every
     * share); two entries, since prediction and transfers use different
     * shares */
    long memo_k[2];
    double memo_share[2], memo_se[2];
    int memo_next;
    /* synthetic, CQI: SNRs in [cqi_lo, cqi_hi) have efficiency cqi_se (the
       last CQI's band, empty at first) */
    double cqi_lo, cqi_hi, cqi_se;
    /* synthetic: the sample (block) pc_k = (k + 1) ts = pc_b holds every t in
       [pc_lo, pc_safe) (pc_lo: a time found in it; pc_safe: pc_b less 1e-12 of it) */
    long pc_k;
    double pc_lo, pc_safe, pc_b;
    /* air interface: the HARQ draw's thresholds P(max <= r) = (1 - bler^(r+1))^blocks,
       r < max_retx, for blocks 1 .. WD_HARQ_CACHE (bit b - 1 of harq_have: computed)
       at (harq_bler, harq_retx); harq_thr below */
    unsigned harq_have;
    int harq_retx;
    double harq_bler;
    /* mahimahi: loop period and opportunity count, lookup table (NULL for
     * huge periods: binary search on ms), first timestamp */
    double period_ms;
    long n; /* also csv: samples */
    wd_mm_entry *tab;
    double ms0, window;
    long bin; /* cached estimate bin and value */
    double bin_rate;
    double bin_end_x, bin_end_cnt; /* count of opportunities before bin_end_x (ms) */
    /* csv: start times t[i] (t[0] = 0), rates r[i], loops with period */
    double *t, *r, period, period_bits; /* period_bits: bits of one loop at share 1 */
    long cur; /* cursor: last segment used */
    /* mahimahi: opportunity times in ms (sorted), loop period in ms;
     * pre[j] = opportunities before j ms (j = 0 .. period + 1; NULL for huge
     * periods), folded into tab after loading */
    double *ms;
    uint32_t *pre;
    uint32_t *ms32; /* ms as integers, with tab (ms itself is freed then) */
    char *file;     /* mahimahi: the trace file */
    int borrowed;   /* ms, ms32, tab belong to another link of the same emulator */
    /* fault windows */
    wd_window *win;
    double harq_thr[WD_HARQ_CACHE][33];
};

/* wd_link_create, but a Mahimahi link whose file one of prev[0 .. n_prev)
 * (entries may be NULL) already loaded shares that link's tables: prev
 * must outlive it (the links of one emulator are freed together). */
int wd_link_create_from(wd_link **out, const wd_link_spec *spec, int dir, int device,
                        double max_wait_s, wd_link *const *prev, int n_prev, char *err,
                        size_t errlen);
wd_link *wd_link_new_synthetic(wd_synth *syn, int dir, int device, double latency, double scale,
                               double max_wait);
/* Rate (bit/s) at t with a share, windows and rate_scale included; *until:
 * the rate stays the same on [t, until). */
double wd_link_rate_until(wd_link *l, double t, double share, double *until);
double wd_link_rate_share(wd_link *l, double t, double share);
/* Least share (may exceed 1, INFINITY when none) with which bits sent from a
 * finish by deadline (latency included). */
double wd_link_share_needed(wd_link *l, double a, double bits, double deadline);
int wd_link_fixed_se(const wd_link *l); /* rate proportional to the share */
/* Bits deliverable in [a, b) at a share, fault windows included. */
double wd_link_bits(wd_link *l, double a, double b, double share);
/* wd_link_bits(l, a, b, share) and, where that is at least rem, *d = wd_link_tx_time(l, a,
 * rem, share): for a synthetic link without fault windows one walk over the samples of
 * [a, b) (each one's rate once) instead of two. */
double wd_link_bits_tx(wd_link *l, double a, double b, double share, double rem, double *d);
/* A synthetic link without fault windows whose rate is one sample's (one block's) on
 * all of [a, b): that rate at the share (rate_scale included); else -1. */
double wd_link_piece_rate(wd_link *l, double a, double b, double share);
/* wd_link_piece_rate where [a, b) lies in the link's last sample and its efficiency at
 * this share is remembered (the same operations, without the calls); else that. */
static inline double wd_link_piece_rate_last(wd_link *l, double a, double b, double share) {
    if (l->model == WD_LINK_SYNTHETIC && !l->n_win && b > a && share > 0 && a >= l->pc_lo &&
        a < l->pc_safe && !(l->pc_b < b)) {
        double key = l->dir == WD_DL ? 0.0 : share;
        for (int j = 0; j < 2; j++)
            if (l->memo_k[j] == l->pc_k && key == l->memo_share[j])
                return share * l->syn->bw[l->dir] * l->memo_se[j] * l->scale;
    }
    return wd_link_piece_rate(l, a, b, share);
}

/* ---- air interface (air.c) ------------------------------------------------------ */
/* The SNRs [*lo, *hi) around snr whose CQI at this gap is snr's for certain
 * (2e-9 inside its thresholds; empty near one), and its efficiency. */
void wd_cqi_band(double snr, double gap, double *lo, double *hi, double *se);
/* floor(x / d) given inv = 1 / d: from x * inv where that is far enough from a whole
 * number that the quotient's rounding cannot cross it (the same value, without the
 * division); else floor(x / d) itself. */
static inline double wd_floor_div(double x, double d, double inv) {
    double y = x * inv, k = floor(y), f = y - k, m = 1e-14 * (y + 1);
    return y >= 0 && y < 1e15 && f > m && 1 - f > m ? k : floor(x / d);
}

/* The air interface's geometry, once per emulator: slot and symbol lengths (the same
 * divisions as wd_air_slot_s and slot / 14), 1 / slot, the pattern's slot count; and the
 * last answer of each slot-alignment question a transfer asks (by the time asked: the
 * same time gives the same answer), e.g. the downlink start of the devices of one step. */
#define WD_AIR_SITES 9
typedef struct {
    double slot, sym, inv_slot;
    int n;
    double ns_in[WD_AIR_SITES], ns_out[WD_AIR_SITES]; /* next_start by call site */
    double oi_t[2], oi_a[2], oi_b[2];                 /* on_interval by direction */
} wd_air_geo;
void wd_air_geo_init(wd_air_geo *g, const wd_air *a);
/* wd_air_tx_time with the geometry g of a (the same result) */
double wd_air_tx_time_geo(const wd_air *a, wd_air_geo *g, wd_link *l, int dir, double t0,
                          double bits, double share, uint64_t seed, int device, int expected,
                          double *overhead);
/* Time (s) to deliver bits from t0 over link l (direction dir) through the
 * air interface: scheduling, slot alignment, TDD regions, processing, HARQ
 * (drawn from seed, device, dir, t0; expected 1: the expected number of
 * rounds instead of a draw), plus the link latency. *overhead: the part of
 * it that is neither data airtime nor the link latency. */
double wd_air_tx_time(const wd_air *a, wd_link *l, int dir, double t0, double bits, double share,
                      uint64_t seed, int device, int expected, double *overhead);

/* ---- trace files ------------------------------------------------------------ */
int wd_trace_load_csv(wd_link *l, const char *path, const char *column, int device, char *err,
                      size_t errlen);
int wd_trace_load_mahimahi(wd_link *l, const char *path, char *err, size_t errlen);

/* The wdmoe rule (policy_wdmoe.c) for wdmoe and wdmoe-straggler */
int wd_policy_wdmoe_rule(const wd_policy_params *p, wd_policy_io *io, int straggler_only);

#endif
