/* The NR air interface against closed forms worked out by hand (in OFDM
 * symbols S of numerology 1: slot 0.5 ms, S = 0.5 ms / 14; pattern DDDSU,
 * special slot 10 D : 2 guard : 2 U, so slot k starts at 14 k S and the
 * pattern repeats every 70 S): one transport block without HARQ takes
 * grant + slot alignment + airtime (+ processing); TDD airtime across a
 * pattern; HARQ rounds; FDD; CQI table edges; the emulator's breakdown. */
#include "emulation/emulation.h"
#include "emulation/internal.h"
#include "tests/test_util.h"

#define S (0.5e-3 / 14)
#define R 1e8 /* bit/s */

static wd_link *constant(void) {
    char err[256];
    wd_link_spec s = {.model = WD_LINK_CONSTANT, .rate_bps = R, .rate_scale = 1.0};
    wd_link *l = NULL;
    CHECKF(wd_link_create(&l, &s, WD_DL, 0, 0, err, sizeof err) == 0, "%s", err);
    return l;
}

static void test_tdd(void) {
    wd_air a;
    wd_air_defaults(&a, 1);
    a.bler = 0;
    CHECK(a.n1_sym == 10 && a.n2_sym == 12 && a.gnb_proc_sym == 10);
    CHECK_NEAR(wd_air_slot_s(&a), 0.5e-3, 0);
    CHECK_NEAR(wd_air_duty(&a, WD_DL), 52.0 / 70, 1e-15);
    CHECK_NEAR(wd_air_duty(&a, WD_UL), 16.0 / 70, 1e-15);
    wd_link *l = constant();
    double ov, t;
    /* downlink, one block: processing 10 S, alignment to slot 1 (14 - 12.8 =
       1.2 S), airtime 5 S, UE decoding N1 10 S */
    t = wd_air_tx_time(&a, l, WD_DL, 2.8 * S, R * 5 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, (10 + 1.2 + 5 + 10) * S, 1e-12);
    CHECK_NEAR(ov, t - 5 * S, 1e-12);
    /* the same at half the band: airtime 10 S */
    t = wd_air_tx_time(&a, l, WD_DL, 2.8 * S, R * 5 * S, 0.5, 1, 0, 0, &ov);
    CHECK_NEAR(t, (10 + 1.2 + 10 + 10) * S, 1e-12);
    /* TDD airtime: 60 S of data from 0 without processing: D D D and the 10
       downlink symbols of S (52 S), then the gap (2 guard, 2 U, U: 18 S),
       then 8 S in the next D; N1 after it: 78 + 10 = 88 S */
    wd_air z = a;
    z.gnb_proc_sym = 0;
    t = wd_air_tx_time(&z, l, WD_DL, 0, R * 60 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, 88 * S, 1e-12);
    CHECK_NEAR(ov, 28 * S, 1e-12);
    /* uplink, dynamic grant, one block: SR in the uplink symbols of slot 3
       (54 S; wait 51.2 S) + 1 S, gNB 10 S (65 S), grant in slot 5 (70 S),
       PDCCH 2 + N2 12 (84 S), alignment to the uplink symbols of slot 8
       (124 S), airtime 1 S, gNB decoding 10 S: 135 S, from 2.8 S */
    t = wd_air_tx_time(&a, l, WD_UL, 2.8 * S, R * 1 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, (135 - 2.8) * S, 1e-12);
    CHECK_NEAR(ov, (135 - 2.8 - 1) * S, 1e-12);
    /* configured grant: N2 (14.8 S), uplink symbols of slot 3 (54 S), 1 S, 10 S */
    wd_air cg = a;
    cg.ul_sched = WD_UL_CONFIGURED;
    t = wd_air_tx_time(&cg, l, WD_UL, 2.8 * S, R * 1 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, (65 - 2.8) * S, 1e-12);
    /* HARQ, every transmission fails, 2 retransmissions at most. Round 1:
       first pass ends at 19 S; HARQ-ACK after N1 in the uplink symbols of
       slot 3 (54 S) + 1 S, gNB 10 S (65 S), slot 5 (70 S), 5 S (75 S).
       Round 2: 85 S -> uplink of slot 8 (124 S) + 1 + 10 = 135 S, the next
       downlink slot is 10 (140 S), 5 S (145 S). N1: 155 S. */
    wd_air h = a;
    h.bler = 1.0, h.max_retx = 2;
    t = wd_air_tx_time(&h, l, WD_DL, 2.8 * S, R * 5 * S, 1.0, 1, 0, 0, &ov);
    CHECK_NEAR(t, (155 - 2.8) * S, 1e-12);
    CHECK_NEAR(ov, t - 5 * S, 1e-12);
    /* expected rounds (prediction): the first round (19 -> 75 S) times their
       expected number, 2 with bler 1: 19 + 112 + 10 = 141 S */
    CHECK_NEAR(wd_air_tx_time(&h, l, WD_DL, 2.8 * S, R * 5 * S, 1.0, 1, 0, 1, &ov),
               (141 - 2.8) * S, 1e-12);
    /* bler 0.1: rounds are 0 .. 3; a draw depends on the transfer only */
    h.bler = 0.1, h.max_retx = 3;
    double first = wd_air_tx_time(&h, l, WD_DL, 2.8 * S, R * 5 * S, 1.0, 7, 3, 0, &ov);
    CHECK_NEAR(wd_air_tx_time(&h, l, WD_DL, 2.8 * S, R * 5 * S, 1.0, 7, 3, 0, &ov), first, 0);
    int retx = 0, n = 20000;
    for (int i = 0; i < n; i++) { /* transfers at the start of slot 0 of pattern i */
        double t0 = i * 70 * S + 2.8 * S;
        retx += wd_air_tx_time(&h, l, WD_DL, t0, R * 5 * S, 1.0, 7, 3, 0, &ov) > 30 * S;
    }
    CHECKF(fabs(retx / (double)n - 0.1) < 0.01, "share of transfers with a retransmission %g",
           retx / (double)n);
    wd_link_free(l);
}

static void test_fdd(void) {
    wd_air a;
    wd_air_defaults(&a, 1);
    a.bler = 0, a.duplex = WD_DUPLEX_FDD;
    CHECK(wd_air_duty(&a, WD_UL) == 1.0);
    wd_link *l = constant();
    double ov;
    /* SR at slot 1 (14 S) + 1, gNB 10 (25 S), grant at slot 2 (28 S),
       + 14 (42 S: a slot start), 1 S, gNB 10: 53 S */
    CHECK_NEAR(wd_air_tx_time(&a, l, WD_UL, 2.8 * S, R * S, 1.0, 1, 0, 0, &ov), (53 - 2.8) * S,
               1e-12);
    /* data longer than the pattern: airtime unbroken */
    a.gnb_proc_sym = 0;
    CHECK_NEAR(wd_air_tx_time(&a, l, WD_DL, 0, R * 200 * S, 1.0, 1, 0, 0, &ov), 210 * S, 1e-12);
    wd_link_free(l);
}

static void test_cqi(void) {
    CHECK(wd_cqi_from_snr(0, 1) == 0 && wd_cqi_from_snr(-1, 1) == 0);
    double t1 = pow(2, 0.1523) - 1, t15 = pow(2, 7.4063) - 1; /* thresholds at gap 0 dB */
    CHECK(wd_cqi_from_snr(t1 * (1 - 1e-9), 1) == 0);
    CHECK(wd_cqi_from_snr(t1 * (1 + 1e-9), 1) == 1);
    CHECK(wd_cqi_from_snr(t15 * (1 - 1e-9), 1) == 14);
    CHECK(wd_cqi_from_snr(t15 * (1 + 1e-9), 1) == 15);
    CHECK(wd_cqi_from_snr(1e12, 1) == 15);
    CHECK(wd_cqi_from_snr(2 * t15 * (1 - 1e-9), 2) == 14); /* a 3 dB gap: thresholds x 2 */
    CHECK(wd_cqi_from_snr(2 * t15 * (1 + 1e-9), 2) == 15);
    CHECK_NEAR(wd_cqi_efficiency(0), 0.0, 0);
    CHECK_NEAR(wd_cqi_efficiency(1), 0.1523, 0);
    CHECK_NEAR(wd_cqi_efficiency(15), 7.4063, 0);
    CHECK_NEAR(wd_link_se(WD_LA_CQI, 1e12, 1), 7.4063, 0); /* the table's maximum */
    CHECK_NEAR(wd_link_se(WD_LA_SHANNON, 1e12, 1), log2(1 + 1e12), 1e-12); /* uncapped */
    CHECK_NEAR(wd_link_se(WD_LA_CQI, 10.0, 1), 3.3223, 0); /* log2(11) = 3.46: CQI 8 */
    /* the SNR-domain thresholds give the definition's CQI (highest q with
       se_q <= log2(1 + snr / gap)) everywhere: log-spaced SNRs over -20..30 dB,
       and the doubles next to every threshold on either side */
    int bad = 0;
    for (int q = 1; q <= WD_CQI_MAX; q++) {
        double th = pow(2, wd_cqi_efficiency(q)) - 1, x = th;
        for (int i = 0; i < 64; i++) x = nextafter(x, 0);
        for (int i = 0; i < 128; i++, x = nextafter(x, INFINITY))
            for (int g = 0; g < 2; g++) {
                double gap = g ? 1.9952623149688795 : 1.0, snr = x * gap, cap = log2(1 + snr / gap);
                int want = 0;
                while (want < WD_CQI_MAX && wd_cqi_efficiency(want + 1) <= cap) want++;
                bad += wd_cqi_from_snr(snr, gap) != want;
            }
    }
    for (int i = 0; i <= 200000; i++) {
        double snr = pow(10, -2 + 5.0 * i / 200000), cap = log2(1 + snr);
        int want = 0;
        while (want < WD_CQI_MAX && wd_cqi_efficiency(want + 1) <= cap) want++;
        bad += wd_cqi_from_snr(snr, 1.0) != want;
    }
    CHECKF(bad == 0, "%d SNRs with another CQI than the log2 definition", bad);
    /* the band a link keeps (wd_cqi_band): every SNR in it, its ends included, has the
       CQI it was made from; it is empty for CQI 0 */
    bad = 0;
    for (int i = 0; i <= 20000; i++)
        for (int g = 0; g < 2; g++) {
            double gap = g ? 1.9952623149688795 : 1.0, snr = pow(10, -2 + 5.0 * i / 20000), lo, hi, se;
            wd_cqi_band(snr, gap, &lo, &hi, &se);
            int q = wd_cqi_from_snr(snr, gap);
            bad += se != wd_cqi_efficiency(q) || (q == 0) != !(lo < hi);
            if (!(lo < hi)) continue;
            double xs[4] = {lo, nextafter(hi, 0), lo + (hi - lo) * 0.37, lo + (hi - lo) * 0.999999};
            for (int j = 0; j < 4; j++) bad += wd_cqi_from_snr(xs[j], gap) != q;
        }
    CHECKF(bad == 0, "%d CQI bands with an SNR of another CQI", bad);
}

/* A synthetic link's rate: band x CQI efficiency of its SNR, capped. */
static void test_synthetic_rate(void) {
    wd_scenario sc;
    char err[512];
    CHECK(wd_scenario_default(&sc, 1, err, sizeof err) == 0);
    sc.radio.fading = WD_FADING_NONE, sc.radio.shadowing = 0;
    sc.dev[0].los = WD_LOS_ALWAYS, sc.dev[0].x_m = 20, sc.dev[0].y_m = 0;
    wd_emu *emu;
    CHECKF(wd_emu_create(&emu, &sc, NULL, err, sizeof err) == 0, "%s", err);
    CHECK_NEAR(wd_link_rate(wd_emu_link(emu, 0, WD_DL), 0.01), 100e6 * 7.4063, 1e-3);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* Through the emulator: the air interface is its own term of the breakdown. */
static void test_emulator(void) {
    const char *json =
        "{\"radio\": {\"air_interface\": {\"harq_bler\": 0}},"
        " \"bs\": {\"peak_tflops\": 1000, \"mem_bw_gbs\": 100000, \"efficiency\": 1},"
        " \"devices\": [{\"profile\": {\"peak_tflops\": 1000, \"mem_bw_gbs\": 100000,"
        "   \"efficiency\": 1, \"overhead_us\": 0},"
        "   \"downlink\": {\"model\": \"constant\", \"rate_mbps\": 100, \"air_interface\": true},"
        "   \"uplink\": {\"model\": \"constant\", \"rate_mbps\": 100, \"air_interface\": true}}]}";
    wd_scenario sc;
    char err[512];
    CHECKF(wd_scenario_parse(&sc, json, "air.json", err, sizeof err) == 0, "%s", err);
    wd_emu_shape sh = {64, 128, 1, 1, 1, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    int n[1] = {1}, ex[1] = {0};
    wd_emu_step_result r;
    CHECKF(wd_emu_step(emu, 0, 1, n, ex, &r, err, sizeof err) == 0, "%s", err);
    double bits = 64 * 16, air_t = bits / R;
    const wd_emu_dev_time *x = &r.dev[0];
    CHECK_NEAR(x->t_dl - x->air[WD_DL], air_t, 1e-12);
    CHECK_NEAR(x->t_ul - x->air[WD_UL], air_t, 1e-12);
    CHECK(x->air[WD_DL] >= 20 * S && x->air[WD_UL] >= 20 * S); /* at least the processing */
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    CHECK_NEAR(s.decode.air_s, x->air[WD_DL] + x->air[WD_UL], 1e-15);
    CHECK_NEAR(s.decode.dl_s + s.decode.ul_s, 2 * air_t, 1e-12);
    CHECK_NEAR(s.decode.bs_s + s.decode.dl_s + s.decode.comp_s + s.decode.ul_s + s.decode.air_s,
               s.decode.mean_s, 1e-12);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
    /* bad keys name the path */
    CHECK(wd_scenario_parse(&sc, "{\"radio\": {\"air_interface\": {\"tdd_pattern\": \"DDX\"}}}",
                            "bad.json", err, sizeof err) != 0);
    CHECKF(strstr(err, "radio.air_interface") && strstr(err, "'X'"), "%s", err);
    CHECK(wd_scenario_parse(&sc,
                            "{\"radio\": {\"air_interface\": {\"special_slot_symbols\": [10, 2, 3]}}}",
                            "bad.json", err, sizeof err) != 0);
    CHECKF(strstr(err, "sum"), "%s", err);
    CHECK(wd_scenario_parse(&sc, "{\"radio\": {\"link_adaptation\": \"magic\"}}", "bad.json", err,
                            sizeof err) != 0);
}

int main(void) {
    test_tdd();
    test_fdd();
    test_cqi();
    test_synthetic_rate();
    test_emulator();
    return wd_test_finish("test_emu_air");
}
