/* Channel model: 3GPP TR 38.901 path loss and LOS probability against the
 * formulas written out here; fading power and time correlation (J0);
 * shadowing statistics and the link budget through the emulator. */
#include "emulation/emulation.h"
#include "emulation/internal.h"
#include "tests/emu_test_util.h"
#include "tests/test_util.h"

#define PI 3.14159265358979323846

/* ---- 38.901 Table 7.4.1-1, written out independently ---- */
static double ref_pl(int model, int los, double d2, double fc, double hb, double hu) {
    double d3 = sqrt(d2 * d2 + (hb - hu) * (hb - hu));
    if (model == WD_INH) {
        double l = 32.4 + 17.3 * log10(d3) + 20 * log10(fc);
        double n = 17.30 + 38.3 * log10(d3) + 24.9 * log10(fc);
        return los ? l : fmax(l, n);
    }
    double dbp = 4 * (hb - 1) * (hu - 1) * fc * 1e9 / 3e8, l, n;
    if (model == WD_UMA) {
        l = d2 <= dbp ? 28.0 + 22 * log10(d3) + 20 * log10(fc)
                      : 28.0 + 40 * log10(d3) + 20 * log10(fc) -
                            9 * log10(dbp * dbp + (hb - hu) * (hb - hu));
        n = 13.54 + 39.08 * log10(d3) + 20 * log10(fc) - 0.6 * (hu - 1.5);
    } else {
        l = d2 <= dbp ? 32.4 + 21 * log10(d3) + 20 * log10(fc)
                      : 32.4 + 40 * log10(d3) + 20 * log10(fc) -
                            9.5 * log10(dbp * dbp + (hb - hu) * (hb - hu));
        n = 22.4 + 35.3 * log10(d3) + 21.3 * log10(fc) - 0.3 * (hu - 1.5);
    }
    return los ? l : fmax(l, n);
}

static double ref_plos(int model, double d2) {
    if (model == WD_INH)
        return d2 <= 1.2 ? 1 : d2 < 6.5 ? exp(-(d2 - 1.2) / 4.7) : 0.32 * exp(-(d2 - 6.5) / 32.6);
    if (d2 <= 18) return 1;
    double c = model == WD_UMA ? 63 : 36;
    return 18 / d2 + exp(-d2 / c) * (1 - 18 / d2); /* UMa with h_UT <= 13 m */
}

static double j0_series(double x) { /* sum (-1)^k (x/2)^2k / (k!)^2 */
    double s = 0, term = 1;
    for (int k = 0; k < 60; k++) {
        s += term;
        term *= -(x / 2) * (x / 2) / ((k + 1.0) * (k + 1.0));
    }
    return s;
}

static void test_pathloss(void) {
    const double hb[3] = {25, 10, 3}, hu[3] = {1.5, 1.5, 1.0};
    const double dist[3][6] = {
        {10, 35, 100, 300, 1000, 5000}, {10, 50, 200, 500, 1200, 5000}, {1.5, 5, 10, 40, 100, 150}};
    const double fcs[3] = {0.9, 3.5, 28};
    for (int m = 0; m < 3; m++)
        for (int los = 0; los < 2; los++)
            for (int i = 0; i < 6; i++)
                for (int f = 0; f < 3; f++) {
                    double d = dist[m][i];
                    CHECK_NEAR(wd_pathloss_db(m, los, d, fcs[f], hb[m], hu[m]),
                               ref_pl(m, los, d, fcs[f], hb[m], hu[m]), 1e-9);
                }
    /* spot values computed separately (Python) from the same table */
    CHECK_NEAR(wd_pathloss_db(WD_UMA, 1, 100, 3.5, 25, 1.5), 83.138157, 1e-5);
    CHECK_NEAR(wd_pathloss_db(WD_UMA, 1, 1000, 3.5, 25, 1.5), 109.411895, 1e-5); /* > d'BP */
    CHECK_NEAR(wd_pathloss_db(WD_UMA, 0, 300, 3.5, 25, 1.5), 121.279172, 1e-5);
    CHECK_NEAR(wd_pathloss_db(WD_UMI, 1, 50, 3.5, 10, 1.5), 79.089649, 1e-5);
    CHECK_NEAR(wd_pathloss_db(WD_UMI, 1, 500, 3.5, 10, 1.5), 107.113750, 1e-5);
    CHECK_NEAR(wd_pathloss_db(WD_UMI, 0, 200, 28, 10, 1.5), 134.464658, 1e-5);
    CHECK_NEAR(wd_pathloss_db(WD_INH, 1, 10, 3.5, 3, 1), 60.728699, 1e-5);
    CHECK_NEAR(wd_pathloss_db(WD_INH, 0, 40, 3.5, 3, 1), 92.226958, 1e-5);
    /* NLOS is never below LOS; path loss grows with distance */
    for (int m = 0; m < 3; m++)
        for (double d = 12; d < 140; d *= 1.3) {
            CHECK(wd_pathloss_db(m, 0, d, 3.5, hb[m], hu[m]) >=
                  wd_pathloss_db(m, 1, d, 3.5, hb[m], hu[m]));
            CHECK(wd_pathloss_db(m, 1, d * 1.3, 3.5, hb[m], hu[m]) >
                  wd_pathloss_db(m, 1, d, 3.5, hb[m], hu[m]));
        }
    for (int m = 0; m < 3; m++)
        for (double d = 0.5; d < 5000; d *= 1.7)
            CHECK_NEAR(wd_los_probability(m, d, hu[m]), ref_plos(m, d), 1e-12);
    CHECK_NEAR(wd_shadow_sigma_db(WD_UMA, 1), 4.0, 0);
    CHECK_NEAR(wd_shadow_sigma_db(WD_UMA, 0), 6.0, 0);
    CHECK_NEAR(wd_shadow_sigma_db(WD_UMI, 0), 7.82, 0);
    CHECK_NEAR(wd_shadow_sigma_db(WD_INH, 0), 8.03, 0);
}

/* Time averages over one long realisation: power and lag-1 correlation. */
static void fading_stats(wd_fading_kind kind, double fd, double k_db, double ts, long n,
                         uint64_t seed, double *power, double *corr1, double *below01,
                         double *theta0) {
    wd_fading f;
    wd_fading_init(&f, kind, fd, k_db, seed);
    double pre, pim, p = 0, c = 0, b = 0;
    wd_fading_at(&f, 0, &pre, &pim);
    for (long i = 1; i <= n; i++) {
        double re, im;
        wd_fading_at(&f, i * ts, &re, &im);
        p += re * re + im * im;
        c += re * pre + im * pim; /* Re h(t) h*(t - ts) */
        b += re * re + im * im < 0.1;
        pre = re, pim = im;
    }
    *power = p / n, *corr1 = c / n / (p / n), *below01 = b / n, *theta0 = f.theta0;
}

static void test_fading(void) {
    double pw, c1, b, th;
    const double fds[2] = {50, 200};
    for (int i = 0; i < 2; i++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            fading_stats(WD_FADING_RAYLEIGH, fds[i], 0, 1e-3, 200000, seed, &pw, &c1, &b, &th);
            CHECK_NEAR(pw, 1.0, 0.03);
            CHECK_NEAR(c1, j0_series(2 * PI * fds[i] * 1e-3), 0.01);
            CHECK_NEAR(b, 1 - exp(-0.1), 0.02); /* Rayleigh: P(|h|^2 < x) = 1 - e^-x */
        }
    double K = pow(10, 0.9);
    fading_stats(WD_FADING_RICIAN, 100, 9, 1e-3, 200000, 7, &pw, &c1, &b, &th);
    double x = 2 * PI * 100 * 1e-3;
    CHECK_NEAR(pw, 1.0, 0.03);
    CHECK_NEAR(c1, (j0_series(x) + K * cos(x * cos(th))) / (K + 1), 0.01);
    /* no fading: exactly 1 */
    wd_fading f;
    wd_fading_init(&f, WD_FADING_NONE, 100, 0, 1);
    double re, im;
    wd_fading_at(&f, 0.123, &re, &im);
    CHECK(re == 1.0 && im == 0.0);
}

/* Link budget and shadowing through the emulator (fading off). */
static void test_budget_and_shadowing(void) {
    char err[512];
    wd_scenario sc;
    CHECK(wd_scenario_default(&sc, 1, err, sizeof err) == 0);
    sc.radio.fading = WD_FADING_NONE;
    sc.radio.shadowing = 0;
    sc.radio.outage_snr_db = -60;
    sc.radio.link_adaptation = WD_LA_SHANNON; /* the formula below; the CQI table: test_emu_air */
    sc.dev[0].x_m = 200, sc.dev[0].y_m = 0;
    sc.dev[0].los = WD_LOS_NEVER;
    wd_emu *emu;
    CHECK(wd_emu_create(&emu, &sc, NULL, err, sizeof err) == 0);
    const wd_radio *r = &sc.radio;
    double pl = ref_pl(WD_UMA, 0, 200, 3.5, 25, 1.5);
    for (int dir = 0; dir < 2; dir++) {
        double p = dir == WD_DL ? r->bs_tx_power_dbm : r->ue_tx_power_dbm;
        double nf = dir == WD_DL ? r->ue_noise_figure_db : r->bs_noise_figure_db;
        double b = r->bandwidth_hz[dir];
        double snr_db =
            p + r->bs_antenna_gain_dbi + r->ue_antenna_gain_dbi - pl - (-174 + 10 * log10(b) + nf);
        double want = b * log2(1 + pow(10, snr_db / 10));
        CHECK_NEAR(wd_link_rate(wd_emu_link(emu, 0, dir), 0.5) / want, 1.0, 1e-12);
    }
    wd_emu_free(emu);

    /* shadowing: AR(1) over distance, std sigma, lag-1 correlation exp(-v Ts / d_corr) */
    sc.radio.shadowing = 1;
    sc.radio.sample_period_s = 0.01;
    sc.dev[0].speed_mps = 30;
    sc.dev[0].los = WD_LOS_ALWAYS;
    CHECK(wd_emu_create(&emu, &sc, NULL, err, sizeof err) == 0);
    CHECK(wd_emu_device_los(emu, 0) == 1);
    pl = ref_pl(WD_UMA, 1, 200, 3.5, 25, 1.5);
    double b = r->bandwidth_hz[WD_DL];
    double snr0 = r->bs_tx_power_dbm + r->bs_antenna_gain_dbi - pl -
                  (-174 + 10 * log10(b) + r->ue_noise_figure_db);
    long n = 200000;
    double m = 0, v = 0, c = 0, prev = 0;
    for (long k = 0; k < n; k++) {
        double rate = wd_link_rate(wd_emu_link(emu, 0, WD_DL), (k + 0.5) * 0.01);
        double s = snr0 - 10 * log10(pow(2, rate / b) - 1); /* shadow loss in dB */
        m += s, v += s * s;
        if (k) c += s * prev;
        prev = s;
    }
    m /= n;
    double var = v / n - m * m, rho = (c / (n - 1) - m * m) / var;
    CHECK_NEAR(m, 0.0, 0.8);
    CHECK_NEAR(sqrt(var), 4.0, 0.35);
    CHECK_NEAR(rho, exp(-30 * 0.01 / 37.0), 0.003);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* The emulator's fading generator (phasors rotated sample by sample from
 * exact anchors, vectorised) against the direct sum of sinusoids
 * wd_fading_at, and its values depending on the sample index only (not on
 * the order of the queries). */
static void test_synth_generator(void) {
    const wd_radio base = wd_test_default_radio();
    for (int kind = WD_FADING_RAYLEIGH; kind <= WD_FADING_RICIAN; kind++) {
        wd_radio r = base;
        r.fading = (wd_fading_kind)kind;
        r.rician_k_db = 6;
        r.shadowing = 0;
        r.outage_snr_db = -200; /* no outage: snr / snr0 = |h|^2 */
        wd_synth a, b;
        CHECK(wd_synth_init(&a, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        CHECK(wd_synth_init(&b, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        const long n = 3 * WD_SYNTH_ANCHOR * 16 + 17;
        double worst = 0;
        int same = 1;
        for (long k = 0; k < n; k++) {
            long i = wd_synth_at(&a, k);
            CHECK(i >= 0);
            if (i < 0) break;
            for (int d = 0; d < 2; d++) {
                double re, im;
                wd_fading_at(&a.fad[d], (double)k * r.sample_period_s, &re, &im);
                double e = fabs(a.snr[d][i] / a.snr0[d] - (re * re + im * im));
                if (e > worst) worst = e;
            }
        }
        CHECKF(worst < 1e-9, "fading kind %d: |h|^2 differs from the direct sum by %.3g", kind,
               worst);
        /* b: far ahead first, back to the start (restart), jumps ahead and
         * back into the samples jumped over (in a later anchor interval and
         * in the same one), dropped and asked again */
        const long order[] = {n - 1, 5000, 3,   n - 300, n - 310, 700,  710,  705,   0,
                              100,   80,   300, 255,     256,     4095, 4096, n - 2, 40};
        for (size_t j = 0; j < sizeof order / sizeof order[0]; j++) {
            long k = order[j], ia = wd_synth_at(&a, k), ib = wd_synth_at(&b, k);
            if (j == 16) wd_synth_forget(&b, (double)(n - 1) * r.sample_period_s);
            for (int d = 0; d < 2; d++) same &= ia >= 0 && ib >= 0 && a.snr[d][ia] == b.snr[d][ib];
        }
        CHECKF(same, "fading kind %d: a sample's value depends on the query order", kind);
        wd_synth_free(&a);
        wd_synth_free(&b);
    }
}

int main(void) {
    test_pathloss();
    test_fading();
    test_budget_and_shadowing();
    test_synth_generator();
    return wd_test_finish("test_emu_channel");
}
