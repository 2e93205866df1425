/* Synthetic radio channel: 3GPP TR 38.901 path loss and LOS probability,
 * log-normal shadowing correlated over distance (Gudmundson AR(1)), and
 * Jakes-spectrum fading by a sum of sinusoids (after Zheng & Xiao 2003). */
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

#define PI 3.14159265358979323846
#define C_LIGHT 3.0e8

static double lg(double x) { return log10(x); }

/* Breakpoint distance d'BP = 4 h'BS h'UT fc / c with effective heights h - 1 m. */
static double breakpoint_m(double fc_ghz, double h_bs, double h_ut) {
    return 4.0 * (h_bs - 1.0) * (h_ut - 1.0) * fc_ghz * 1e9 / C_LIGHT;
}

double wd_pathloss_db(wd_pathloss_model m, int los, double d2d, double fc, double h_bs,
                      double h_ut) {
    if (m == WD_INH) {
        double d3 = sqrt(d2d * d2d + (h_bs - h_ut) * (h_bs - h_ut));
        if (d3 < 1.0) d3 = 1.0;
        double pl_los = 32.4 + 17.3 * lg(d3) + 20.0 * lg(fc);
        if (los) return pl_los;
        double pl_n = 38.3 * lg(d3) + 17.30 + 24.9 * lg(fc);
        return pl_n > pl_los ? pl_n : pl_los;
    }
    if (d2d < 10.0) d2d = 10.0;
    double dh = h_bs - h_ut, d3 = sqrt(d2d * d2d + dh * dh);
    double dbp = breakpoint_m(fc, h_bs, h_ut);
    double pl_los;
    if (m == WD_UMA) {
        pl_los = d2d <= dbp ? 28.0 + 22.0 * lg(d3) + 20.0 * lg(fc)
                            : 28.0 + 40.0 * lg(d3) + 20.0 * lg(fc) - 9.0 * lg(dbp * dbp + dh * dh);
        if (los) return pl_los;
        double pl_n = 13.54 + 39.08 * lg(d3) + 20.0 * lg(fc) - 0.6 * (h_ut - 1.5);
        return pl_n > pl_los ? pl_n : pl_los;
    }
    pl_los = d2d <= dbp ? 32.4 + 21.0 * lg(d3) + 20.0 * lg(fc)
                        : 32.4 + 40.0 * lg(d3) + 20.0 * lg(fc) - 9.5 * lg(dbp * dbp + dh * dh);
    if (los) return pl_los;
    double pl_n = 35.3 * lg(d3) + 22.4 + 21.3 * lg(fc) - 0.3 * (h_ut - 1.5);
    return pl_n > pl_los ? pl_n : pl_los;
}

double wd_los_probability(wd_pathloss_model m, double d2d, double h_ut) {
    if (m == WD_INH) { /* mixed office */
        if (d2d <= 1.2) return 1.0;
        if (d2d < 6.5) return exp(-(d2d - 1.2) / 4.7);
        return exp(-(d2d - 6.5) / 32.6) * 0.32;
    }
    if (d2d <= 18.0) return 1.0;
    if (m == WD_UMI) return 18.0 / d2d + exp(-d2d / 36.0) * (1.0 - 18.0 / d2d);
    double c = h_ut <= 13.0 ? 0.0 : pow((h_ut - 13.0) / 10.0, 1.5);
    return (18.0 / d2d + exp(-d2d / 63.0) * (1.0 - 18.0 / d2d)) *
           (1.0 + c * 1.25 * pow(d2d / 100.0, 3.0) * exp(-d2d / 150.0));
}

double wd_shadow_sigma_db(wd_pathloss_model m, int los) {
    static const double s[3][2] = {{6.0, 4.0}, {7.82, 4.0}, {8.03, 3.0}}; /* [model][los] */
    return s[m][los ? 1 : 0];
}

double wd_shadow_decorrelation_m(wd_pathloss_model m, int los) {
    static const double d[3][2] = {{50.0, 37.0}, {13.0, 10.0}, {6.0, 10.0}};
    return d[m][los ? 1 : 0];
}

/* ---- fading ---------------------------------------------------------------- */
void wd_fading_init(wd_fading *f, wd_fading_kind kind, double doppler_hz, double k_db,
                    uint64_t seed) {
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->doppler_hz = doppler_hz;
    f->k_linear = kind == WD_FADING_RICIAN ? wd_db_to_linear(k_db) : 0.0;
    wd_erng r = {seed};
    const int M = WD_FADING_SINUSOIDS;
    /* arrival angles at the midpoints alpha_n = (2 pi n - pi) / 4M: the mean of
     * cos(x cos alpha_n) is then the midpoint rule of J0(x), so every single
     * realisation's time-average autocorrelation is J0 (a random offset of
     * the angles, as in Zheng & Xiao, gives J0 only on average over
     * realisations); the randomness is in psi_n and the phases phi_n */
    for (int n = 1; n <= M; n++) {
        double alpha = (2.0 * PI * n - PI) / (4.0 * M);
        double psi = (2.0 * wd_erng_uniform(&r) - 1.0) * PI;
        f->w[n - 1] = 2.0 * PI * doppler_hz * cos(alpha);
        f->phase[n - 1] = (2.0 * wd_erng_uniform(&r) - 1.0) * PI;
        f->ci[n - 1] = sqrt(2.0 / M) * cos(psi);
        f->cq[n - 1] = sqrt(2.0 / M) * sin(psi);
    }
    f->theta0 = (2.0 * wd_erng_uniform(&r) - 1.0) * PI;
    f->phi0 = (2.0 * wd_erng_uniform(&r) - 1.0) * PI;
}

void wd_fading_at(const wd_fading *f, double t, double *re, double *im) {
    if (f->kind == WD_FADING_NONE) {
        *re = 1.0, *im = 0.0;
        return;
    }
    double x = 0.0, y = 0.0;
    for (int n = 0; n < WD_FADING_SINUSOIDS; n++) {
        double c = cos(f->w[n] * t + f->phase[n]);
        x += f->ci[n] * c;
        y += f->cq[n] * c;
    }
    if (f->kind == WD_FADING_RICIAN) {
        double K = f->k_linear, a = sqrt(1.0 / (K + 1.0)), b = sqrt(K / (K + 1.0));
        double ph = 2.0 * PI * f->doppler_hz * t * cos(f->theta0) + f->phi0;
        x = a * x + b * cos(ph);
        y = a * y + b * sin(ph);
    }
    *re = x, *im = y;
}

/* ---- block fading: the sum of sinusoids without libm ------------------------------- */
#define COS_FAST_MAX 1e6 /* |x| below this: q < 2^20, so q * PIO2_1 and q * PIO2_2 are exact */
#define PIO2_1 1.57079632673412561417e+00 /* pi / 2 in three parts (fdlibm), 33 bits each */
#define PIO2_2 6.07710050630396597660e-11
#define PIO2_3 2.02226624871116645580e-21

/* cos(x) (shift 0) or sin(x) = cos(x - pi/2) (shift 3) for |x| < COS_FAST_MAX:
 * x = q pi/2 + r, |r| <= pi/4, Taylor to r^16 / r^17 (the first omitted terms are
 * below 2e-18). */
static inline double trig_fast(double x, int shift) {
    /* q = round(2 x / pi) by the 1.5 2^52 trick (|2 x / pi| < 2^51): q sits in the low
       bits of the sum's representation, and every step vectorises */
    const double magic = 6755399441055744.0;
    double big = x * 0.63661977236758134308 + magic, qd = big - magic;
    uint64_t bits;
    memcpy(&bits, &big, sizeof bits);
    double r = ((x - qd * PIO2_1) - qd * PIO2_2) - qd * PIO2_3, z = r * r;
    double c = 1.0 + z * (-1.0 / 2 + z * (1.0 / 24 + z * (-1.0 / 720 + z * (1.0 / 40320 +
               z * (-1.0 / 3628800 + z * (1.0 / 479001600 + z * (-1.0 / 87178291200.0 +
               z * (1.0 / 20922789888000.0))))))));
    double sn = r * (1.0 + z * (-1.0 / 6 + z * (1.0 / 120 + z * (-1.0 / 5040 + z * (1.0 / 362880 +
                z * (-1.0 / 39916800 + z * (1.0 / 6227020800.0 + z * (-1.0 / 1307674368000.0 +
                z * (1.0 / 355687428096000.0)))))))));
    uint64_t m = (bits + (uint64_t)shift) & 3; /* cos, -sin, -cos, sin */
    double v = m & 1 ? sn : c;
    return m == 1 || m == 2 ? -v : v;
}

double wd_cos(double x) { return fabs(x) < COS_FAST_MAX ? trig_fast(x, 0) : cos(x); }
double wd_sin(double x) { return fabs(x) < COS_FAST_MAX ? trig_fast(x, 3) : sin(x); }

void wd_fading_fast(const wd_fading *f, double t, double *re, double *im) {
    if (f->kind == WD_FADING_NONE) {
        *re = 1.0, *im = 0.0;
        return;
    }
    enum { M = WD_FADING_SINUSOIDS };
    double c[M], x = 0.0, y = 0.0;
    /* |w_n| <= 2 pi f_D, |phase_n| <= pi */
    if (2.0 * PI * f->doppler_hz * fabs(t) + 4.0 < COS_FAST_MAX) {
        for (int n = 0; n < M; n++) c[n] = trig_fast(f->w[n] * t + f->phase[n], 0);
    } else {
        for (int n = 0; n < M; n++) c[n] = cos(f->w[n] * t + f->phase[n]); /* hours of time */
    }
    for (int n = 0; n < M; n++) x += f->ci[n] * c[n], y += f->cq[n] * c[n];
    if (f->kind == WD_FADING_RICIAN) {
        double K = f->k_linear, a = sqrt(1.0 / (K + 1.0)), b = sqrt(K / (K + 1.0));
        double p = 2.0 * PI * f->doppler_hz * t * cos(f->theta0) + f->phi0;
        x = a * x + b * wd_cos(p);
        y = a * y + b * wd_sin(p);
    }
    *re = x, *im = y;
}

double wd_synth_period(const wd_radio *rd, double speed) {
    if (rd->fading_block_s > 0) return rd->fading_block_s;
    if (rd->fading_block_s == WD_FADING_BLOCK_COHERENCE) {
        double fd = speed * rd->carrier_ghz * 1e9 / C_LIGHT;
        return fd > 0 && 0.423 / fd < WD_FADING_BLOCK_MAX_S ? 0.423 / fd : WD_FADING_BLOCK_MAX_S;
    }
    return rd->sample_period_s;
}

/* ---- synthetic channel generator -------------------------------------------- */
static void synth_restart(wd_synth *s);

int wd_synth_init(wd_synth *s, const wd_radio *rd, double pl_db, double sigma_db, double decorr_m,
                  double speed, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->ts = wd_synth_period(rd, speed);
    s->block = rd->fading_block_s != 0;
    double n0 = wd_dbm_to_watt(rd->noise_density_dbm_hz); /* W/Hz */
    double gain_db = rd->bs_antenna_gain_dbi + rd->ue_antenna_gain_dbi - pl_db;
    s->bw[WD_DL] = rd->bandwidth_hz[WD_DL];
    s->bw[WD_UL] = rd->bandwidth_hz[WD_UL];
    s->la = rd->link_adaptation;
    s->gap = wd_db_to_linear(rd->snr_gap_db);
    s->snr0[WD_DL] = wd_dbm_to_watt(rd->bs_tx_power_dbm) * wd_db_to_linear(gain_db) /
                     (n0 * s->bw[WD_DL] * wd_db_to_linear(rd->ue_noise_figure_db));
    s->snr0[WD_UL] = wd_dbm_to_watt(rd->ue_tx_power_dbm) * wd_db_to_linear(gain_db) /
                     (n0 * s->bw[WD_UL] * wd_db_to_linear(rd->bs_noise_figure_db));
    s->outage = wd_db_to_linear(rd->outage_snr_db);
    s->shadowing = rd->shadowing;
    s->sigma_db = rd->shadowing ? sigma_db : 0.0;
    /* the AR(1) runs on a grid of d_corr / 100 of travel (every sample when a
     * sample moves further), linearly interpolated in between */
    double step = speed * s->ts;
    s->grid = step > 0.0 && step < decorr_m / 100.0 ? (long)(decorr_m / 100.0 / step) : 1;
    s->rho = speed > 0.0 ? exp(-(double)s->grid * step / decorr_m) : 1.0;
    double fd = speed * rd->carrier_ghz * 1e9 / C_LIGHT;
    s->seed = seed;
    for (int d = 0; d < 2; d++) {
        wd_fading *f = &s->fad[d];
        wd_fading_init(f, rd->fading, fd, rd->rician_k_db, wd_stream_seed(seed, 0, 1 + d));
        for (int n = 0; n < WD_FADING_SINUSOIDS; n++) {
            s->rot_re[d][n] = cos(f->w[n] * s->ts);
            s->rot_im[d][n] = sin(f->w[n] * s->ts);
        }
        double w = 2.0 * PI * fd * cos(f->theta0);
        s->los_rot_re[d] = cos(w * s->ts);
        s->los_rot_im[d] = sin(w * s->ts);
        double K = f->k_linear;
        s->ric_a[d] = sqrt(1.0 / (K + 1.0)), s->ric_b[d] = sqrt(K / (K + 1.0));
    }
    synth_restart(s);
    return 0;
}

void wd_synth_free(wd_synth *s) {
    free(s->snr[WD_DL]), free(s->snr[WD_UL]);
    memset(s, 0, sizeof *s);
}

_Static_assert(WD_FADING_SINUSOIDS == 16, "fade_sum_rotate sums 16 sinusoids as 8 pairs");

static double synth_gauss(wd_synth *s) { /* both Box-Muller normals, in order */
    if (s->has_spare) return s->has_spare = 0, s->spare;
    double u = 1.0 - wd_erng_uniform(&s->rng), v = wd_erng_uniform(&s->rng),
           r = sqrt(-2.0 * log(u));
    s->spare = r * sin(2.0 * PI * v), s->has_spare = 1;
    return r * cos(2.0 * PI * v);
}

static double synth_ar(wd_synth *s, double prev) {
    if (!s->shadowing || s->rho >= 1.0) return prev;
    return s->rho * prev + sqrt(1.0 - s->rho * s->rho) * s->sigma_db * synth_gauss(s);
}

#define DB_TO_LN (-0.2302585092994046) /* loss in dB -> gain: exp(-S ln10 / 10) */

/* Gains at a grid point: exact there, geometric (linear in dB) to the next. */
static void synth_grid_gain(wd_synth *s) {
    s->sh_g = exp(DB_TO_LN * s->sh_cur);
    s->sh_r = exp(DB_TO_LN * (s->sh_next - s->sh_cur) / (double)s->grid);
}

/* Restart the generator at sample 0 (also: a query went before the kept samples). */
static void synth_restart(wd_synth *s) {
    s->rng.s = wd_stream_seed(s->seed, 0, 3);
    s->has_spare = 0;
    s->sh_cur = s->sigma_db * synth_gauss(s);
    s->sh_next = synth_ar(s, s->sh_cur);
    synth_grid_gain(s);
    s->next_k = 0;
    s->sh_left = s->grid;
}

/* Shadowing gain (linear) at sample next_k, then advance next_k. */
static double synth_shadow_next(wd_synth *s) {
    double g = s->sh_g;
    s->next_k++;
    if (--s->sh_left == 0) { /* next_k is a grid point */
        s->sh_left = s->grid;
        s->sh_cur = s->sh_next;
        s->sh_next = synth_ar(s, s->sh_cur);
        synth_grid_gain(s);
    } else {
        s->sh_g *= s->sh_r;
    }
    return g;
}

/* ---- fading phasors: 16 sinusoids as two vectors of 8 ----------------------------------
 * The arithmetic is the same in the vector and the scalar form (no
 * contraction in ISO C mode), so both give the same bits. */
#if defined(__GNUC__) && !defined(WD_SYNTH_SCALAR)
typedef double v8d __attribute__((vector_size(64)));
typedef double v8d_u __attribute__((vector_size(64), aligned(8))); /* unaligned access */
#define LD8(p) (*(const v8d_u *)(p))
#define ST8(p, v) (*(v8d_u *)(p) = (v))
typedef long long v8l __attribute__((vector_size(64)));

/* ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)) of a v8d (a macro: no
 * vector-argument ABI) */
#if defined(__clang__)
#define TREE8(v, out)                                                                      \
    do {                                                                                   \
        v8d a_ = (v) + __builtin_shufflevector((v), (v), 1, 0, 3, 2, 5, 4, 7, 6);          \
        v8d b_ = a_ + __builtin_shufflevector(a_, a_, 2, 3, 0, 1, 6, 7, 4, 5);             \
        (out) = b_[0] + b_[4];                                                             \
    } while (0)
#else
#define TREE8(v, out)                                                                      \
    do {                                                                                   \
        v8d a_ = (v) + __builtin_shuffle((v), (v8l){1, 0, 3, 2, 5, 4, 7, 6});              \
        v8d b_ = a_ + __builtin_shuffle(a_, (v8l){2, 3, 0, 1, 6, 7, 4, 5});                \
        (out) = b_[0] + b_[4];                                                             \
    } while (0)
#endif

/* Rotate the 16 phasors by one sample. */
static inline void rotate16(double *pr, double *pi, const double *rr, const double *ri) {
    v8d p0 = LD8(pr), p1 = LD8(pr + 8), q0 = LD8(pi), q1 = LD8(pi + 8);
    v8d r0 = LD8(rr), r1 = LD8(rr + 8), i0 = LD8(ri), i1 = LD8(ri + 8);
    ST8(pr, p0 * r0 - q0 * i0);
    ST8(pr + 8, p1 * r1 - q1 * i1);
    ST8(pi, p0 * i0 + q0 * r0);
    ST8(pi + 8, p1 * i1 + q1 * r1);
}

/* x = sum ci_n Re p_n, y = sum cq_n Re p_n (8 pairs, then the tree); rotate by one sample. */
static inline void fade_sum_rotate(const double *ci, const double *cq, double *pr, double *pi,
                                   const double *rr, const double *ri, double *x, double *y) {
    v8d p0 = LD8(pr), p1 = LD8(pr + 8);
    v8d xs = LD8(ci) * p0 + LD8(ci + 8) * p1, ys = LD8(cq) * p0 + LD8(cq + 8) * p1;
    TREE8(xs, *x);
    TREE8(ys, *y);
    rotate16(pr, pi, rr, ri);
}
#else
static inline void rotate16(double *pr, double *pi, const double *rr, const double *ri) {
    for (int n = 0; n < 16; n++) {
        double re = pr[n], im = pi[n];
        pr[n] = re * rr[n] - im * ri[n];
        pi[n] = re * ri[n] + im * rr[n];
    }
}

static inline void fade_sum_rotate(const double *ci, const double *cq, double *pr, double *pi,
                                   const double *rr, const double *ri, double *x, double *y) {
    double xs[8], ys[8];
    for (int n = 0; n < 8; n++) {
        xs[n] = ci[n] * pr[n] + ci[n + 8] * pr[n + 8];
        ys[n] = cq[n] * pr[n] + cq[n + 8] * pr[n + 8];
    }
    *x = ((xs[0] + xs[1]) + (xs[2] + xs[3])) + ((xs[4] + xs[5]) + (xs[6] + xs[7]));
    *y = ((ys[0] + ys[1]) + (ys[2] + ys[3])) + ((ys[4] + ys[5]) + (ys[6] + ys[7]));
    rotate16(pr, pi, rr, ri);
}
#endif

static inline void rotate1(double *re, double *im, double rr, double ri) {
    double a = *re, b = *im;
    *re = a * rr - b * ri;
    *im = a * ri + b * rr;
}

/* Phasors exp(j (w_n t + phi_n)) at sample k from the anchor at or before k:
 * exact at anchors, then one rotation per sample, so every sample's value
 * depends on k only (not on which samples were generated or queried). */
typedef struct { /* phasors of both directions at one sample */
    double re[2][WD_FADING_SINUSOIDS], im[2][WD_FADING_SINUSOIDS], los_re[2], los_im[2];
} phasors;

static void anchor_into(const wd_synth *s, long k, double (*pr)[WD_FADING_SINUSOIDS],
                        double (*pi)[WD_FADING_SINUSOIDS], double *lr, double *li) {
    long ka = k - k % WD_SYNTH_ANCHOR;
    double t = (double)ka * s->ts;
    for (int d = 0; d < 2; d++) {
        const wd_fading *f = &s->fad[d];
        if (f->kind == WD_FADING_NONE) continue; /* the phasors are never read */
        for (int n = 0; n < WD_FADING_SINUSOIDS; n++) {
            double ph = f->w[n] * t + f->phase[n];
            pr[d][n] = cos(ph), pi[d][n] = sin(ph);
        }
        int los = f->kind == WD_FADING_RICIAN; /* else the LOS ray is never read */
        if (los) {
            double ph = 2.0 * PI * f->doppler_hz * t * cos(f->theta0) + f->phi0;
            lr[d] = cos(ph), li[d] = sin(ph);
        } else {
            lr[d] = 1.0, li[d] = 0.0;
        }
        for (long j = ka; j < k; j++) {
            rotate16(pr[d], pi[d], s->rot_re[d], s->rot_im[d]);
            if (los) rotate1(&lr[d], &li[d], s->los_rot_re[d], s->los_rot_im[d]);
        }
    }
}

static void synth_anchor(wd_synth *s, long k) {
    anchor_into(s, k, s->ph_re, s->ph_im, s->los_re, s->los_im);
}

/* Rotate the generator's phasors by m samples without reading them (both
 * directions together, in locals: see synth_gen). */
static void synth_rotate(wd_synth *s, long m) {
    enum { M = WD_FADING_SINUSOIDS };
    double pr[2][M], pi[2][M], rr[2][M], ri[2][M];
    int kind[2];
    for (int d = 0; d < 2; d++) {
        kind[d] = s->fad[d].kind;
        memcpy(pr[d], s->ph_re[d], sizeof pr[d]), memcpy(pi[d], s->ph_im[d], sizeof pi[d]);
        memcpy(rr[d], s->rot_re[d], sizeof rr[d]), memcpy(ri[d], s->rot_im[d], sizeof ri[d]);
    }
    for (long j = 0; j < m; j++)
        for (int d = 0; d < 2; d++)
            if (kind[d] != WD_FADING_NONE) rotate16(pr[d], pi[d], rr[d], ri[d]);
    for (int d = 0; d < 2; d++) {
        memcpy(s->ph_re[d], pr[d], sizeof pr[d]), memcpy(s->ph_im[d], pi[d], sizeof pi[d]);
        if (kind[d] == WD_FADING_RICIAN)
            for (long j = 0; j < m; j++)
                rotate1(&s->los_re[d], &s->los_im[d], s->los_rot_re[d], s->los_rot_im[d]);
    }
}

/* |h|^2 of direction d from phasors pr, pi, (lr, li), then rotate them one sample. */
static double fade_next(const wd_synth *s, int d, double *pr, double *pi, double *lr, double *li) {
    const wd_fading *f = &s->fad[d];
    if (f->kind == WD_FADING_NONE) return 1.0; /* the phasors are never read */
    double x, y;
    fade_sum_rotate(f->ci, f->cq, pr, pi, s->rot_re[d], s->rot_im[d], &x, &y);
    if (f->kind == WD_FADING_RICIAN) {
        double a = s->ric_a[d], b = s->ric_b[d];
        x = a * x + b * *lr;
        y = a * y + b * *li;
        rotate1(lr, li, s->los_rot_re[d], s->los_rot_im[d]);
    }
    return x * x + y * y;
}

/* Samples stepped over (see wd_synth_at) hold NaN in snr[WD_DL] and their
 * shadowing gain in snr[WD_UL]; asked for later, their fading is computed
 * from the anchor, as the generator would have (same bits). */
static void synth_fill(wd_synth *s, long k, long i) {
    phasors p;
    anchor_into(s, k, p.re, p.im, p.los_re, p.los_im);
    double g = s->snr[WD_UL][i];
    for (int d = 0; d < 2; d++) {
        double snr = s->snr0[d] * g * fade_next(s, d, p.re[d], p.im[d], &p.los_re[d], &p.los_im[d]);
        s->snr[d][i] = snr < s->outage ? 0.0 : snr;
    }
}

/* m calls of synth_shadow_next into g, the state in locals between grid points. */
static void synth_shadow_run(wd_synth *s, double *g, long m) {
    for (long j = 0; j < m;) {
        double sg = s->sh_g, sr = s->sh_r;
        long run = s->sh_left - 1; /* calls before the one that reaches a grid point */
        if (run > m - j) run = m - j;
        for (long q = 0; q < run; q++) g[j + q] = sg, sg *= sr;
        j += run, s->next_k += run, s->sh_left -= run, s->sh_g = sg;
        if (j < m) g[j++] = synth_shadow_next(s);
    }
}

/* Generate m >= 1 samples from next_k into the buffers at n, without
 * crossing an anchor after the first sample: the shadowing gains first (in
 * the uplink buffer), then both directions together with their phasors in local
 * variables (the buffer stores cannot alias them, and the two directions'
 * rotations overlap): the same arithmetic as fade_next sample by sample. */
static void synth_gen(wd_synth *s, long m) {
    long n0 = s->n;
    double *g = s->snr[WD_UL] + n0;
    if (s->next_k % WD_SYNTH_ANCHOR == 0) synth_anchor(s, s->next_k);
    synth_shadow_run(s, g, m);
    enum { M = WD_FADING_SINUSOIDS };
    double pr[2][M], pi[2][M], rr[2][M], ri[2][M], ci[2][M], cq[2][M];
    double lr[2], li[2], lrr[2], lri[2], a[2], b[2], snr0[2], outage = s->outage;
    int kind[2];
    for (int d = 0; d < 2; d++) {
        const wd_fading *f = &s->fad[d];
        kind[d] = f->kind;
        memcpy(pr[d], s->ph_re[d], sizeof pr[d]), memcpy(pi[d], s->ph_im[d], sizeof pi[d]);
        memcpy(rr[d], s->rot_re[d], sizeof rr[d]), memcpy(ri[d], s->rot_im[d], sizeof ri[d]);
        memcpy(ci[d], f->ci, sizeof ci[d]), memcpy(cq[d], f->cq, sizeof cq[d]);
        lr[d] = s->los_re[d], li[d] = s->los_im[d], lrr[d] = s->los_rot_re[d];
        lri[d] = s->los_rot_im[d], a[d] = s->ric_a[d], b[d] = s->ric_b[d], snr0[d] = s->snr0[d];
    }
    double *out[2] = {s->snr[WD_DL] + n0, s->snr[WD_UL] + n0};
    for (long j = 0; j < m; j++) {
        double gj = g[j]; /* read before the uplink buffer's slot j is overwritten */
        for (int d = 0; d < 2; d++) {
            double h2 = 1.0; /* WD_FADING_NONE: the phasors are never read */
            if (kind[d] != WD_FADING_NONE) {
                double x, y;
                fade_sum_rotate(ci[d], cq[d], pr[d], pi[d], rr[d], ri[d], &x, &y);
                if (kind[d] == WD_FADING_RICIAN) {
                    x = a[d] * x + b[d] * lr[d];
                    y = a[d] * y + b[d] * li[d];
                    rotate1(&lr[d], &li[d], lrr[d], lri[d]);
                }
                h2 = x * x + y * y;
            }
            double snr = snr0[d] * gj * h2;
            out[d][j] = snr < outage ? 0.0 : snr;
        }
    }
    for (int d = 0; d < 2; d++) {
        memcpy(s->ph_re[d], pr[d], sizeof pr[d]), memcpy(s->ph_im[d], pi[d], sizeof pi[d]);
        s->los_re[d] = lr[d], s->los_im[d] = li[d];
    }
    s->n += m;
}

static int synth_reserve(wd_synth *s, long need) {
    if (need <= s->cap) return 0;
    long cap = s->cap ? s->cap : s->block ? 512 : 4096;
    while (cap < need) cap *= 2;
    for (int d = 0; d < 2; d++) {
        double *a = realloc(s->snr[d], cap * sizeof(double));
        if (!a) return -1;
        s->snr[d] = a;
    }
    s->cap = cap;
    return 0;
}

#define SYNTH_WALK 64 /* samples generated ahead when the queries walk sample by sample */
#define SYNTH_JUMP 1  /* ... when they jump ahead */

/* Step the generator over samples [next_k, k), keeping only their
 * shadowing gains: the phasors are rotated without being read, or (k in a
 * later anchor interval) recomputed at k. */
static void synth_skip(wd_synth *s, long k) {
    long m = k - s->next_k;
    int jump = s->next_k < k - k % WD_SYNTH_ANCHOR;
    if (!jump) { /* [next_k, k) lies in k's anchor interval: only next_k can be its anchor */
        if (s->next_k % WD_SYNTH_ANCHOR == 0) synth_anchor(s, s->next_k);
        synth_rotate(s, m);
    }
    synth_shadow_run(s, s->snr[WD_UL] + s->n, m);
    for (long j = 0; j < m; j++) s->snr[WD_DL][s->n + j] = NAN;
    s->n += m;
    if (jump) synth_anchor(s, k);
}

/* Block fading: sample k's SNRs from its shadowing gain (kept in the uplink buffer)
 * and the sum of sinusoids at k ts. */
static void block_fill(wd_synth *s, long k, long i) {
    double g = s->snr[WD_UL][i], t = (double)k * s->ts;
    for (int d = 0; d < 2; d++) {
        double x, y;
        wd_fading_fast(&s->fad[d], t, &x, &y);
        double snr = s->snr0[d] * g * (x * x + y * y);
        s->snr[d][i] = snr < s->outage ? 0.0 : snr;
    }
}

/* wd_synth_at for block fading: the shadowing is generated in order (its AR(1)),
 * the fading of a sample only when it is read. */
static long block_at(wd_synth *s, long k) {
    if (k < s->k0) { /* rare: regenerate from the start, keep from k */
        synth_restart(s);
        s->k0 = s->n = 0;
    }
    if (s->n == 0) { /* empty buffer: skip ahead to k without storing */
        while (s->next_k < k) synth_shadow_next(s);
        s->k0 = s->next_k;
    }
    if (k >= s->k0 + s->n) {
        long m = k + 1 - s->next_k;
        if (synth_reserve(s, s->n + m)) return -1;
        synth_shadow_run(s, s->snr[WD_UL] + s->n, m);
        for (long j = 0; j < m; j++) s->snr[WD_DL][s->n + j] = NAN;
        s->n += m;
    }
    long i = k - s->k0;
    if (isnan(s->snr[WD_DL][i])) block_fill(s, k, i);
    return i;
}

long wd_synth_at(wd_synth *s, long k) {
    if (k < 0) k = 0;
    if (s->block) return block_at(s, k);
    if (k >= s->k0 && k < s->k0 + s->n) {
        long i = k - s->k0;
        if (isnan(s->snr[WD_DL][i])) synth_fill(s, k, i); /* stepped over before */
        return i;
    }
    if (k < s->k0) { /* rare: regenerate from the start, keep from k */
        synth_restart(s);
        s->k0 = s->n = 0;
    }
    if (s->n == 0) { /* empty buffer: skip ahead to k without storing */
        while (s->next_k < k) synth_shadow_next(s);
        s->k0 = s->next_k;
        synth_anchor(s, s->k0);
    }
    /* the generator is at next_k = k0 + n <= k: samples before k nobody has
     * asked for yet are only stepped over */
    long want = k - s->k0 + (k == s->next_k ? SYNTH_WALK : SYNTH_JUMP);
    if (synth_reserve(s, want)) return -1;
    if (k > s->next_k) synth_skip(s, k);
    while (s->n < want) { /* in runs that end at the next anchor */
        long m = want - s->n, to_anchor = WD_SYNTH_ANCHOR - s->next_k % WD_SYNTH_ANCHOR;
        synth_gen(s, m < to_anchor ? m : to_anchor);
    }
    return k - s->k0;
}

/* drop only this many samples or more at once (and at least half the buffer): the
 * memmove stays O(1) per sample, and a buffer of samples stays within its first 4096
 * (in the cache, never reallocated; with 8192, a fresh emulator replaying 11 s of
 * virtual time grew its 16 buffers to 16384 samples, and realloc, copies and page
 * faults took a fifth of the replay) */
#define FORGET_MIN 1024
#define FORGET_MIN_BLOCK 256
#define FORGET_AT(s) ((s)->block ? FORGET_MIN_BLOCK : FORGET_MIN)

double wd_synth_forget_time(const wd_synth *s) {
    /* t < (k0 + F) ts: floor(t / ts) <= k0 + F, drop <= F - 1 (F = FORGET_AT) */
    return (double)(s->k0 + FORGET_AT(s)) * s->ts;
}

void wd_synth_forget(wd_synth *s, double t) {
    long k = (long)floor(t / s->ts) - 1;
    long drop = k - s->k0;
    if (drop < FORGET_AT(s) || drop < s->n / 2) return;
    if (drop > s->n) drop = s->n;
    if (drop <= 0) return; /* nothing kept yet (the buffers may not exist) */
    long keep = s->n - drop;
    for (int d = 0; d < 2; d++) memmove(s->snr[d], s->snr[d] + drop, keep * sizeof(double));
    s->k0 += drop;
    s->n = keep;
}
