/* Min-max bandwidth allocation: closed form vs bisection, equal finish
 * times, and through the emulator on constant and synthetic links. */
#include "emulation/emulation.h"
#include "tests/test_util.h"

static double frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffff) / 65536.0;
}

static void test_const(void) {
    unsigned seed = 7;
    for (int trial = 0; trial < 50; trial++) {
        int n = 1 + trial % 8;
        double rate[8], bits[8], ready[8], s1[8], s2[8];
        for (int i = 0; i < n; i++) {
            rate[i] = 1e6 + 1e9 * frand(&seed);
            bits[i] = 1e3 + 1e6 * frand(&seed);
            ready[i] = 2.5;
        }
        double tc = wd_alloc_minmax_const(n, rate, bits, ready, s1, 0);
        double tb = wd_alloc_minmax_const(n, rate, bits, ready, s2, 1);
        CHECK_NEAR(tc, tb, 1e-6 * tc);
        double sum = 0, x = 0;
        for (int i = 0; i < n; i++) {
            CHECK_NEAR(s1[i], s2[i], 1e-6);
            sum += s2[i];
            x += bits[i] / rate[i];
            CHECK_NEAR(ready[i] + bits[i] / (s1[i] * rate[i]), tc, 1e-9 * tc);
            CHECK_NEAR(ready[i] + bits[i] / (s2[i] * rate[i]), tc, 1e-6 * tc);
        }
        CHECK_NEAR(sum, 1.0, 1e-12);
        CHECK_NEAR(tc, 2.5 + x, 1e-12 * tc); /* T = ready + sum bits / rate */
        /* different ready times: bisection still equalises */
        for (int i = 0; i < n; i++) ready[i] = 1.0 + 0.01 * frand(&seed);
        double t = wd_alloc_minmax_const(n, rate, bits, ready, s1, 0);
        for (int i = 0; i < n; i++) CHECK_NEAR(ready[i] + bits[i] / (s1[i] * rate[i]), t, 1e-9 * t);
    }
}

/* Four devices, E = 4, top_k = 4: every token uses every device. */
static wd_emu *make(wd_scenario *sc, int synthetic, wd_alloc_mode mode) {
    char err[512];
    CHECK(wd_scenario_default(sc, 4, err, sizeof err) == 0);
    sc->alloc = mode;
    sc->radio.outage_snr_db = -60;
    sc->radio.air.enabled = 0; /* the allocation alone: no slot alignment or HARQ */
    if (!synthetic)
        for (int d = 0; d < 4; d++)
            for (int k = 0; k < 2; k++) {
                sc->dev[d].link[k].model = WD_LINK_CONSTANT;
                sc->dev[d].link[k].rate_bps = (k ? 20e6 : 80e6) * (1 + d);
                sc->dev[d].link[k].latency_s = 0.001;
            }
    wd_emu_shape sh = {1024, 4096, 2, 4, 4, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu = NULL;
    CHECKF(wd_emu_create(&emu, sc, &sh, err, sizeof err) == 0, "%s", err);
    return emu;
}

static double step_all(wd_emu *emu, int n_tokens, wd_emu_step_result *r) {
    int n[8], ex[32];
    char err[512];
    for (int t = 0; t < n_tokens; t++) {
        n[t] = t % 2 ? 4 : 2 + t % 3;
        for (int j = 0; j < 4; j++) ex[t * 4 + j] = (t + j) % 4;
    }
    CHECKF(wd_emu_step(emu, 0, n_tokens, n, ex, r, err, sizeof err) == 0, "%s", err);
    return r->wait;
}

static void test_emu(int synthetic) {
    wd_scenario sc;
    wd_emu_step_result r;
    wd_emu *eq = make(&sc, synthetic, WD_ALLOC_EQUAL);
    wd_scenario_free(&sc);
    wd_emu *mm = make(&sc, synthetic, WD_ALLOC_MINMAX);
    double w_eq = step_all(eq, 5, &r);
    double w_mm = step_all(mm, 5, &r);
    CHECK(r.n_active == 4);
    double s_dl = 0, s_ul = 0;
    for (int i = 0; i < r.n_active; i++) {
        const wd_emu_dev_time *x = &r.dev[i];
        s_dl += x->share[WD_DL], s_ul += x->share[WD_UL];
        CHECK_NEAR(x->t_dl, r.dev[0].t_dl, 1e-6 * r.dev[0].t_dl);      /* downlinks end together */
        CHECK_NEAR(x->t_dl + x->t_c + x->t_ul, r.wait, 1e-6 * r.wait); /* so do the devices */
    }
    CHECK_NEAR(s_dl, 1.0, 1e-9);
    CHECK_NEAR(s_ul, 1.0, 1e-9);
    CHECKF(w_mm <= w_eq * (1 + 1e-9), "minmax %g > equal %g", w_mm, w_eq);
    if (!synthetic) { /* closed form of the downlink: latency + sum bits / rate */
        double x = 0;
        for (int i = 0; i < r.n_active; i++)
            x += r.dev[i].bits[WD_DL] / (80e6 * (1 + r.dev[i].device));
        CHECK_NEAR(r.dev[0].t_dl, 0.001 + x, 1e-12);
    }
    wd_emu_free(eq);
    wd_emu_free(mm);
    wd_scenario_free(&sc);
}

int main(void) {
    test_const();
    test_emu(0);
    test_emu(1);
    return wd_test_finish("test_emu_alloc");
}
