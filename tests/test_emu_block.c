/* Block fading (radio.fading_block_s, docs/radio.md) against closed forms:
 * the scenario key and the coherence time 0.423 / f_D; wd_cos against libm's cos;
 * a block's fading is the sum of sinusoids at the block's start, whatever the order
 * of the queries; the time-average autocorrelation across blocks is J0 at the block
 * lags; a constant-SNR block channel gives the closed-form NR transfer times of
 * test_emu_air (docs/radio.md); a transfer across a block boundary takes each
 * block's bits at its own rate; the cached rate (memo, CQI band) equals the rate
 * computed from the block's SNR; and a small golden of paper-cell-block replays.
 *
 * tests/data/replay/golden-block.txt was written by this test (`--write FILE`) when
 * block fading was introduced: there is no outside reference for the emulator's
 * full output on a scenario, so it guards later speed-ups against changing a
 * result (the closed forms above check what the mode computes). */
#include <json-c/json.h>
#include <stdint.h>

#include "emulation/emulation.h"
#include "emulation/internal.h"
#include "tests/emu_test_util.h"
#include "tests/test_util.h"

#define PI 3.14159265358979323846
#define S (0.5e-3 / 14) /* OFDM symbol, numerology 1 */

static double j0_series(double x) { /* sum (-1)^k (x/2)^2k / (k!)^2 */
    double term = 1.0, sum = 1.0, q = x * x / 4.0;
    for (int k = 1; k < 80; k++) {
        term *= -q / ((double)k * k);
        sum += term;
    }
    return sum;
}

#define ONE_DEVICE "\"devices\": [{\"distance_m\": 100}]"

static void test_key(void) {
    wd_scenario sc;
    char err[512];
    const char *coh = "{" ONE_DEVICE ", \"radio\": {\"fading_block_s\": \"coherence\"}}";
    int rc = wd_scenario_parse(&sc, coh, "b.json", err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECK(sc.radio.fading_block_s == WD_FADING_BLOCK_COHERENCE);
    /* f_D = v f_c / c = 1 * 3.5e9 / 3e8 = 11.67 Hz: T_c = 0.423 / f_D = 36.26 ms */
    CHECK_NEAR(wd_synth_period(&sc.radio, 1.0), 0.423 * 3e8 / 3.5e9, 1e-15);
    CHECK_NEAR(wd_synth_period(&sc.radio, 0.0), WD_FADING_BLOCK_MAX_S, 0); /* no Doppler */
    wd_scenario_free(&sc);
    rc = wd_scenario_parse(&sc, "{" ONE_DEVICE ", \"radio\": {\"fading_block_s\": 0.01}}", "b.json",
                           err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECK_NEAR(wd_synth_period(&sc.radio, 1.0), 0.01, 0);
    wd_scenario_free(&sc);
    rc = wd_scenario_parse(&sc, "{" ONE_DEVICE "}", "b.json", err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECK(sc.radio.fading_block_s == 0); /* default: samples of sample_period_s */
    CHECK_NEAR(wd_synth_period(&sc.radio, 1.0), sc.radio.sample_period_s, 0);
    wd_scenario_free(&sc);
    CHECK(wd_scenario_parse(&sc, "{\"radio\": {\"fading_block_s\": \"often\"}}", "b.json", err,
                            sizeof err) != 0);
    CHECKF(strstr(err, "b.json") && strstr(err, "radio.fading_block_s") && strstr(err, "often"),
           "%s", err);
    CHECK(wd_scenario_parse(&sc, "{" ONE_DEVICE ", \"radio\": {\"fading_block_s\": 0}}", "b.json",
                            err, sizeof err) != 0);
    CHECKF(strstr(err, "radio.fading_block_s"), "%s", err);
    CHECK(wd_scenario_parse(&sc, "{" ONE_DEVICE ", \"radio\": {\"fading_block_s\": 2}}", "b.json",
                            err, sizeof err) != 0);
    CHECKF(strstr(err, "radio.fading_block_s") && strstr(err, "out of range"), "%s", err);
}

static void test_cos(void) { /* and wd_sin */
    wd_erng r = {42};
    double worst = 0;
    for (int i = 0; i < 200000; i++) {
        double m = i % 3 == 0 ? 10.0 : i % 3 == 1 ? 1e3 : 9.9e5;
        double x = (2.0 * wd_erng_uniform(&r) - 1.0) * m, e = fabs(wd_cos(x) - cos(x));
        e = fmax(e, fabs(wd_sin(x) - sin(x)));
        if (e > worst) worst = e;
    }
    const double at[] = {0, PI / 4, PI / 2, PI, 3 * PI / 2, -PI / 4, 1e6, -3e7, 1e12};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        double e = fmax(fabs(wd_cos(at[i]) - cos(at[i])), fabs(wd_sin(at[i]) - sin(at[i])));
        if (e > worst) worst = e;
    }
    CHECKF(worst < 1e-15, "wd_cos, wd_sin differ from cos, sin by %.3g", worst);
}

static wd_radio block_radio(wd_fading_kind kind, double block_s) {
    wd_radio r = wd_test_default_radio();
    r.fading = kind;
    r.rician_k_db = 6;
    r.shadowing = 0;
    r.outage_snr_db = -200; /* no outage: snr / snr0 = |h|^2 */
    r.fading_block_s = block_s;
    return r;
}

/* A block's |h|^2 is the sum of sinusoids at its start (wd_fading_at, libm), and
 * depends on the block only, not on the order of the queries. */
static void test_block_values(void) {
    for (int kind = WD_FADING_RAYLEIGH; kind <= WD_FADING_RICIAN; kind++) {
        wd_radio r = block_radio((wd_fading_kind)kind, WD_FADING_BLOCK_COHERENCE);
        wd_synth a, b;
        CHECK(wd_synth_init(&a, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        CHECK(wd_synth_init(&b, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        CHECK_NEAR(a.ts, 0.423 / (30.0 * 3.5e9 / 3e8), 1e-15);
        double worst = 0;
        const long n = 20000;
        for (long k = 0; k < n; k++) {
            long i = wd_synth_at(&a, k);
            CHECK(i >= 0);
            if (i < 0) break;
            for (int d = 0; d < 2; d++) {
                double re, im;
                wd_fading_at(&a.fad[d], (double)k * a.ts, &re, &im);
                double e = fabs(a.snr[d][i] / a.snr0[d] - (re * re + im * im));
                if (e > worst) worst = e;
            }
        }
        CHECKF(worst < 1e-12, "fading kind %d: a block's |h|^2 differs from the sum by %.3g",
               kind, worst);
        const long order[] = {n - 1, 5000, 3, n - 300, 700, 710, 705, 0, 100, 80, n - 2, 40};
        int same = 1;
        for (size_t j = 0; j < sizeof order / sizeof order[0]; j++) {
            long k = order[j], ia = wd_synth_at(&a, k), ib = wd_synth_at(&b, k);
            if (j == 9) wd_synth_forget(&b, (double)(n - 1) * b.ts);
            for (int d = 0; d < 2; d++) same &= ia >= 0 && ib >= 0 && a.snr[d][ia] == b.snr[d][ib];
        }
        CHECKF(same, "fading kind %d: a block's value depends on the query order", kind);
        wd_synth_free(&a);
        wd_synth_free(&b);
    }
}

/* The time average of Re h_k h*_{k+m} over one realisation is J0(2 pi f_D m T_b). */
static void test_block_j0(void) {
    double fd = 3.5e9 / 3e8, tb = 0.423 / fd; /* 1 m/s at 3.5 GHz */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        wd_fading f;
        wd_fading_init(&f, WD_FADING_RAYLEIGH, fd, 0, seed);
        enum { N = 100000, LAGS = 4 };
        static double re[N + LAGS], im[N + LAGS];
        for (long k = 0; k < N + LAGS; k++) wd_fading_fast(&f, (double)k * tb, &re[k], &im[k]);
        for (int m = 0; m < LAGS; m++) {
            double c = 0;
            for (long k = 0; k < N; k++) c += re[k] * re[k + m] + im[k] * im[k + m];
            CHECKF(fabs(c / N - j0_series(2 * PI * fd * m * tb)) < 0.015,
                   "seed %d lag %d: %.4f vs J0 %.4f", (int)seed, m, c / N,
                   j0_series(2 * PI * fd * m * tb));
        }
    }
}

/* Without fading and shadowing a block channel has one SNR: its rate is band x CQI
 * efficiency, and the air interface gives test_emu_air's closed forms (docs/radio.md,
 * in symbols S: 26.2 S, 88 S, 132.2 S) at that rate. */
static void test_constant_block(void) {
    wd_radio r = block_radio(WD_FADING_NONE, 0.002); /* blocks of 2 ms: transfers cross them */
    wd_synth s;
    CHECK(wd_synth_init(&s, &r, 80.0, 4.0, 37.0, 1.0, 5) == 0);
    wd_link *l = wd_link_new_synthetic(&s, WD_DL, 0, 0.0, 1.0, 0);
    CHECK(l != NULL);
    if (!l) return;
    double rate = r.bandwidth_hz[WD_DL] * wd_link_se(r.link_adaptation, s.snr0[WD_DL], 1.0);
    CHECK(rate > 0);
    CHECK_NEAR(wd_link_rate(l, 0.0123) / rate, 1.0, 1e-15);
    wd_air a;
    wd_air_defaults(&a, 1);
    a.bler = 0;
    double ov, t;
    t = wd_air_tx_time(&a, l, WD_DL, 2.8 * S, rate * 5 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, (10 + 1.2 + 5 + 10) * S, 1e-12);
    wd_air z = a;
    z.gnb_proc_sym = 0;
    t = wd_air_tx_time(&z, l, WD_DL, 0, rate * 60 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, 88 * S, 1e-12);
    l->dir = WD_UL; /* the uplink's SNR, the same closed form */
    double rate_ul = r.bandwidth_hz[WD_UL] * wd_link_se(r.link_adaptation, s.snr0[WD_UL], 1.0);
    t = wd_air_tx_time(&a, l, WD_UL, 2.8 * S, rate_ul * 1 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, (135 - 2.8) * S, 1e-12);
    wd_link_free(l);
    wd_synth_free(&s);
}

/* A transfer that starts 0.3 into block k and ends 0.4 into block k + 1 carries
 * r_k 0.7 T_b + r_{k+1} 0.4 T_b bits (r from each block's SNR), on both directions
 * (uplink at share 1/2: the device's power in half the band). */
static void test_boundary(void) {
    wd_radio r = block_radio(WD_FADING_RAYLEIGH, 0.005);
    wd_synth s;
    CHECK(wd_synth_init(&s, &r, 125.0, 4.0, 37.0, 3.0, 9) == 0); /* SNR 21 / 2 dB */
    int tested = 0;
    for (int dir = 0; dir < 2; dir++) {
        wd_link *l = wd_link_new_synthetic(&s, dir, 0, 0.0, 1.0, 0);
        CHECK(l != NULL);
        if (!l) break;
        double share = dir == WD_DL ? 1.0 : 0.5, tb = s.ts;
        for (long k = 10; k < 400; k += 7) {
            long i0 = wd_synth_at(&s, k);
            double x0 = s.snr[dir][i0] / (dir == WD_UL ? share : 1.0);
            long i1 = wd_synth_at(&s, k + 1);
            double x1 = s.snr[dir][i1] / (dir == WD_UL ? share : 1.0);
            double r0 = share * r.bandwidth_hz[dir] * wd_link_se(r.link_adaptation, x0, 1.0);
            double r1 = share * r.bandwidth_hz[dir] * wd_link_se(r.link_adaptation, x1, 1.0);
            if (!(r0 > 0 && r1 > 0) || r0 == r1) continue;
            double a = (k + 0.3) * tb, bits = r0 * 0.7 * tb + r1 * 0.4 * tb;
            CHECK_NEAR(wd_link_tx_time(l, a, bits, share) / (1.1 * tb), 1.0, 1e-12);
            CHECK_NEAR(wd_link_bits(l, a, (k + 1.4) * tb, share) / bits, 1.0, 1e-12);
            tested++;
        }
        wd_link_free(l);
    }
    CHECKF(tested > 20, "only %d block pairs with two different non-zero rates", tested);
    wd_synth_free(&s);
}

/* The link's caches (the last two efficiencies by block and share, the CQI band of
 * the last SNR) give the rate computed from the block's SNR, queried out of order. */
static void test_cache(void) {
    wd_radio r = block_radio(WD_FADING_RAYLEIGH, WD_FADING_BLOCK_COHERENCE);
    r.shadowing = 1;
    r.outage_snr_db = -10;
    wd_synth s;
    CHECK(wd_synth_init(&s, &r, 100.0, 6.0, 50.0, 1.0, 3) == 0);
    wd_erng g = {7};
    long bad = 0;
    for (int dir = 0; dir < 2; dir++) {
        wd_link *l = wd_link_new_synthetic(&s, dir, 0, 0.0, 1.0, 0);
        CHECK(l != NULL);
        if (!l) break;
        for (int q = 0; q < 20000; q++) {
            double t = wd_erng_uniform(&g) * 60.0, share = 1.0 / (1 + q % 8);
            if (q % 3) t = (double)(q / 3) * 0.01; /* mostly forward, as a replay */
            double got = wd_link_rate_share(l, t, share);
            long i = wd_synth_at(&s, (long)floor(t / s.ts));
            double x = s.snr[dir][i] / (dir == WD_UL ? share : 1.0);
            double want = share * r.bandwidth_hz[dir] * wd_link_se(r.link_adaptation, x, 1.0);
            bad += got != want;
        }
        wd_link_free(l);
    }
    CHECKF(bad == 0, "%ld cached rates differ from the block's", bad);
    wd_synth_free(&s);
}

/* ---- golden ----------------------------------------------------------------------- */
static void fnv_add(uint64_t *h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) *h = (*h ^ c[i]) * 0x100000001b3ULL;
}

/* paper-cell-block at the Mixtral-8x7B width: a hash of every step and the summary. */
static int golden_line(const wd_scenario *sc, const char *file, const char *policy,
                       const wd_probs *pr, char *out, size_t outlen, char *err, size_t errlen) {
    wd_emu_shape shape = wd_probs_shape(pr);
    wd_emu *emu;
    if (wd_emu_create(&emu, sc, &shape, err, errlen)) return 1;
    int E = pr->n_experts, L = pr->n_layers, n[1], ex[64], rc = 0;
    float w[64];
    uint64_t h = 0xcbf29ce484222325ULL;
    rc = wd_emu_set_policy(emu, policy, &sc->params, err, errlen);
    for (long t = 0; !rc && t < pr->n_tokens; t++)
        for (int l = 0; l < L && !rc; l++) {
            wd_emu_step_result r;
            const float *p = pr->probs + ((size_t)t * L + l) * E;
            rc = wd_emu_select(emu, 1, p, n, ex, w, err, errlen) ||
                 wd_emu_step(emu, l, 1, n, ex, &r, err, errlen);
            if (rc) break;
            fnv_add(&h, n, sizeof n[0]);
            fnv_add(&h, ex, n[0] * sizeof ex[0]);
            fnv_add(&h, w, n[0] * sizeof w[0]);
            fnv_add(&h, &r.wait, sizeof r.wait);
            for (int i = 0; i < r.n_active; i++) {
                const wd_emu_dev_time *x = &r.dev[i];
                double v[5] = {x->t_dl, x->t_c, x->t_ul, x->air[0], x->air[1]};
                fnv_add(&h, &x->device, sizeof x->device);
                fnv_add(&h, v, sizeof v);
            }
        }
    double clock = wd_emu_time(emu);
    wd_emu_free(emu);
    if (rc) return rc;
    if (wd_emu_create(&emu, sc, &shape, err, errlen)) return 1;
    rc = wd_emu_set_policy(emu, policy, &sc->params, err, errlen) ||
         wd_probs_replay(emu, pr, 0, NULL, NULL, err, errlen);
    if (!rc) {
        wd_emu_summary s;
        wd_emu_summarize(emu, &s);
        snprintf(out, outlen, "%s %s steps %016llx clock %a tpot_mean %a tpot_p95 %a\n", file,
                 policy, (unsigned long long)h, clock, s.decode.mean_s, s.decode.p95_s);
    }
    wd_emu_free(emu);
    return rc;
}

static void test_golden(const char *write_path) {
    static const char *files[] = {"stories260k-moe4", "smollm2-moe8"};
    static const char *pols[] = {"topk", "wdmoe"};
    char out[4096] = "", line[512], err[1024], path[1024];
    wd_scenario sc;
    snprintf(path, sizeof path, "%s/bench/scenarios/paper-cell-block.json", WD_SOURCE_DIR);
    int rc = wd_scenario_load(&sc, path, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    for (int fi = 0; fi < 2; fi++) {
        wd_probs pr;
        snprintf(path, sizeof path, "%s/tests/data/replay/%s.wdpr", WD_SOURCE_DIR, files[fi]);
        rc = wd_probs_read(&pr, path, err, sizeof err);
        CHECKF(rc == 0, "%s", err);
        if (rc) continue;
        pr.hidden = 4096, pr.ffn = 14336, pr.n_heads = 32, pr.n_kv_heads = 8, pr.head_dim = 128;
        pr.weight_bits = 16;
        for (int pi = 0; pi < 2; pi++) {
            rc = golden_line(&sc, files[fi], pols[pi], &pr, line, sizeof line, err, sizeof err);
            CHECKF(rc == 0, "%s %s: %s", files[fi], pols[pi], err);
            if (!rc) snprintf(out + strlen(out), sizeof out - strlen(out), "%s", line);
        }
        wd_probs_free(&pr);
    }
    wd_scenario_free(&sc);
    snprintf(path, sizeof path, "%s/tests/data/replay/golden-block.txt", WD_SOURCE_DIR);
    if (write_path) {
        FILE *f = fopen(write_path, "w");
        CHECK(f && fputs(out, f) >= 0 && fclose(f) == 0);
        return;
    }
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "%s: cannot open", path);
    if (!f) return;
    char want[4096];
    size_t n = fread(want, 1, sizeof want - 1, f);
    fclose(f);
    want[n] = 0;
    CHECKF(!strcmp(want, out), "paper-cell-block replays differ from %s:\n%s", path, out);
}

int main(int argc, char **argv) {
    const char *write_path = argc == 3 && !strcmp(argv[1], "--write") ? argv[2] : NULL;
    if (!write_path) {
        test_key();
        test_cos();
        test_block_values();
        test_block_j0();
        test_constant_block();
        test_boundary();
        test_cache();
    }
    test_golden(write_path);
    return wd_test_finish("test_emu_block");
}
