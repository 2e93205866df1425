/* The emulator end to end: one layer step against the formulas written out
 * here, replicas and multi-expert devices, faults, prediction, statistics,
 * determinism, the .wdpr file, and the `trace` / `replay` commands. */
#include <sys/stat.h>

#include "emulation/emulation.h"
#include <json-c/json.h>

#include "tests/test_util.h"

int wd_cmd_trace(int argc, char **argv);
int wd_cmd_replay(int argc, char **argv);

static char tmpdir[512];
static char *tmp(const char *name) {
    static char p[8][640];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 640, "%s/%s", tmpdir, name);
    return s;
}

static const wd_compute_profile DEV = {1e12, 1e10, 0.5, 1e-4, 0, 1.0, 0, 0.5, 5.0};
static const wd_compute_profile BS = {1e13, 1e11, 1.0, 0, 0, 1.0, 0, 50.0, 300.0};

/* n devices on constant links: dl 100 Mbit/s, ul 50 Mbit/s, 1 ms latency. */
static void const_scenario(wd_scenario *sc, int n) {
    char err[256];
    CHECK(wd_scenario_default(sc, n, err, sizeof err) == 0);
    sc->bs = BS;
    for (int d = 0; d < n; d++) {
        sc->dev[d].profile = DEV;
        for (int k = 0; k < 2; k++) {
            sc->dev[d].link[k].model = WD_LINK_CONSTANT;
            sc->dev[d].link[k].rate_bps = k ? 50e6 : 100e6;
            sc->dev[d].link[k].latency_s = 1e-3;
        }
    }
}

static double roofline(const wd_compute_profile *p, double flops, double bytes) {
    return fmax(flops / p->peak_flops, bytes / p->mem_bw) / p->efficiency + p->overhead_s;
}

static void test_step_formulas(void) {
    wd_scenario sc;
    const_scenario(&sc, 2);
    sc.dev[1].profile.peak_flops = 1e9; /* device 1 is compute-bound and slow */
    const double H = 512, F = 1024, wb = 2;
    wd_emu_shape sh = {512, 1024, 2, 2, 2, wb, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    double tau[2];
    unsigned char av[2];
    CHECK(wd_emu_predict(emu, tau, av) == 2);
    int n[1] = {2}, ex[2] = {0, 1};
    wd_emu_step_result r;
    CHECKF(wd_emu_step(emu, 0, 1, n, ex, &r, err, sizeof err) == 0, "%s", err);
    double attn = 4 * H * H + 2 * H; /* q, k, v, o as H x H, router E x H */
    double t_bs = roofline(&BS, 2 * attn, attn * wb + 4 * H * 4);
    double bits = H * 16, t_dl = 1e-3 + bits / (0.5 * 100e6), t_ul = 1e-3 + bits / (0.5 * 50e6);
    double bytes = 3 * H * F * wb + (2 * H + 3 * F) * 4;
    double tc0 = roofline(&DEV, 6 * H * F, bytes),
           tc1 = roofline(&sc.dev[1].profile, 6 * H * F, bytes);
    CHECK_NEAR(r.t_bs, t_bs, 1e-15);
    CHECK(r.n_active == 2 && r.critical == 1 && r.dev[1].device == 1);
    for (int i = 0; i < 2; i++) {
        CHECK_NEAR(r.dev[i].t_dl, t_dl, 1e-15);
        CHECK_NEAR(r.dev[i].t_ul, t_ul, 1e-15);
        CHECK_NEAR(r.dev[i].bits[WD_DL], bits, 0);
        CHECK_NEAR(r.dev[i].share[WD_UL], 0.5, 0);
        CHECK_NEAR(tau[i], t_dl + (i ? tc1 : tc0) + t_ul, 1e-15); /* prediction = this step */
    }
    CHECK_NEAR(r.dev[0].t_c, tc0, 1e-15);
    CHECK_NEAR(r.dev[1].t_c, tc1, 1e-15);
    CHECK_NEAR(r.wait, t_dl + tc1 + t_ul, 1e-15);
    CHECK_NEAR(wd_emu_time(emu), t_bs + r.wait, 1e-15);
    /* layer 1 with one expert closes the forward: one token recorded */
    n[0] = 1, ex[0] = 0;
    CHECK(wd_emu_step(emu, 1, 1, n, ex, &r, err, sizeof err) == 0);
    CHECK_NEAR(r.dev[0].t_dl, 1e-3 + bits / 100e6, 1e-15); /* alone: the whole band */
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    CHECK(s.tokens == 1 && s.steps == 2 && s.forwards == 1);
    CHECK_NEAR(s.decode.mean_s, wd_emu_time(emu), 1e-15);
    CHECK_NEAR(s.decode.bs_s + s.decode.dl_s + s.decode.comp_s + s.decode.ul_s, s.decode.mean_s, 1e-12);
    CHECK_NEAR(s.decode.bs_s, 2 * t_bs, 1e-15);
    CHECK_NEAR(s.decode.comp_s, tc1 + tc0, 1e-15);
    CHECK_NEAR(s.decode.straggle_s, (tc1 - tc0) / 2, 1e-12);
    CHECK_NEAR(s.decode.experts_per_token, 1.5, 0);
    CHECK_NEAR(s.decode.dl_bits_per_token, 3 * bits, 0);
    /* measured mode: device 0's compute time given, device 1's modeled */
    double meas[2] = {0.125, NAN};
    n[0] = 2, ex[0] = 0, ex[1] = 1;
    CHECK(wd_emu_step_measured(emu, 0, 1, n, ex, meas, &r, err, sizeof err) == 0);
    CHECK_NEAR(r.dev[0].t_c, 0.125, 0);
    CHECK_NEAR(r.dev[1].t_c, tc1, 1e-15);
    CHECK(r.critical == 0);
    /* bad selections are refused */
    ex[0] = 7;
    CHECK(wd_emu_step(emu, 0, 1, n, ex, NULL, err, sizeof err) != 0 && strstr(err, "expert id 7"));
    CHECK(wd_emu_step(emu, 5, 1, n, ex, NULL, err, sizeof err) != 0 && strstr(err, "layer 5"));
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

static void test_placement(void) {
    wd_scenario sc;
    const_scenario(&sc, 2);
    int h0[2] = {0, 1}, h1[3] = {1, 2, 3};
    sc.dev[0].n_hosted = 2, sc.dev[0].hosted = malloc(sizeof h0),
    memcpy(sc.dev[0].hosted, h0, sizeof h0);
    sc.dev[1].n_hosted = 3, sc.dev[1].hosted = malloc(sizeof h1),
    memcpy(sc.dev[1].hosted, h1, sizeof h1);
    sc.dev[0].profile.peak_flops = 1e9; /* device 0 slow: expert 1 goes to device 1 */
    wd_emu_shape sh = {256, 512, 1, 4, 2, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    double tau[4];
    unsigned char av[4];
    wd_emu_predict(emu, tau, av);
    CHECK(tau[1] == tau[2] && tau[0] > tau[1]);
    int n[2] = {2, 2}, ex[8] = {0, 1, 0, 0, 2, 3, 0, 0};
    wd_emu_step_result r;
    CHECK(wd_emu_step(emu, 0, 2, n, ex, &r, err, sizeof err) == 0);
    CHECK(r.n_active == 2);
    const wd_emu_dev_time *d1 = r.dev[0].device == 1 ? &r.dev[0] : &r.dev[1];
    const wd_emu_dev_time *d0 = r.dev[0].device == 0 ? &r.dev[0] : &r.dev[1];
    CHECK(d0->tokens == 1 && d0->pairs == 1);
    CHECK(d1->tokens == 2 && d1->pairs == 3); /* token 0: expert 1; token 1: experts 2 and 3 */
    CHECK_NEAR(d1->bits[WD_DL], 2 * 256 * 16, 0);
    CHECK_NEAR(d1->bits[WD_UL], 3 * 256 * 16, 0);
    double one = roofline(&DEV, 6.0 * 256 * 512, 3.0 * 256 * 512 * 2 + (2 * 256 + 3 * 512) * 4);
    CHECK_NEAR(d1->t_c, 3 * one, 1e-15); /* three experts, one token each, one after another */
    wd_emu_free(emu);
    wd_scenario_free(&sc);
    /* default placement with fewer devices than experts: expert e on device e mod n */
    const_scenario(&sc, 3);
    sh.n_experts = 8;
    CHECK(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0);
    int one_n[1] = {1}, e7[1] = {7};
    CHECK(wd_emu_step(emu, 0, 1, one_n, e7, &r, err, sizeof err) == 0);
    CHECK(r.n_active == 1 && r.dev[0].device == 1);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

static void test_faults(void) {
    wd_scenario sc;
    const_scenario(&sc, 3);
    wd_fault f[4] = {{0, WD_FAULT_DOWN, 3, 0.0, 1.0, 0},
                     {1, WD_FAULT_SLOW, 3, 0.0, INFINITY, 3.0},
                     {2, WD_FAULT_LINK, 1 << WD_DL, 0.0, INFINITY, 0.5},
                     {2, WD_FAULT_DOWN, 3, 5.0, INFINITY, 0}};
    sc.faults = malloc(sizeof f);
    memcpy(sc.faults, f, sizeof f);
    sc.n_faults = 4;
    wd_emu_shape sh = {512, 1024, 1, 3, 1, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    double tau[3];
    unsigned char av[3];
    CHECK(wd_emu_predict(emu, tau, av) == 2);
    CHECK(av[0] == 0 && isinf(tau[0]) && av[1] && av[2]);
    double bits = 512 * 16,
           tc = roofline(&DEV, 6.0 * 512 * 1024, 3.0 * 512 * 1024 * 2 + (2 * 512 + 3 * 1024) * 4);
    CHECK_NEAR(tau[1], 2e-3 + bits / 100e6 + 3 * tc + bits / 50e6, 1e-15);
    CHECK_NEAR(tau[2], 2e-3 + bits / 50e6 + tc + bits / 50e6, 1e-15);
    float p[3] = {0.5f, 0.3f, 0.2f};
    int n[1], ex[3];
    float w[3];
    CHECK(wd_emu_select(emu, 1, p, n, ex, w, err, sizeof err) == 0);
    CHECK(n[0] == 1 && ex[0] == 1); /* expert 0 is down: the most probable reachable */
    wd_emu_advance(emu, 1.5);
    CHECK(wd_emu_select(emu, 1, p, n, ex, w, err, sizeof err) == 0);
    CHECK(n[0] == 1 && ex[0] == 0); /* back up */
    wd_emu_advance(emu, 3.4999);    /* t = 4.9999: device 2 goes down for good mid-transfer */
    n[0] = 1, ex[0] = 2;
    CHECK(wd_emu_step(emu, 0, 1, n, ex, NULL, err, sizeof err) != 0);
    CHECKF(strstr(err, "device 2") && strstr(err, "never completes"), "%s", err);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* Prefill and decode with constant times: 2 devices, both experts chosen,
 * constant links. TTFT and TPOT are the closed forms written out here. */
static double layer_time(int n_tok) {
    const double H = 512, F = 1024, wb = 2, bits = H * 16;
    double attn = 4 * H * H + 2 * H;
    double t_bs = roofline(&BS, n_tok * 2 * attn, attn * wb + n_tok * 4 * H * 4);
    double t_dl = 1e-3 + n_tok * bits / (0.5 * 100e6), t_ul = 1e-3 + n_tok * bits / (0.5 * 50e6);
    double t_c = roofline(&DEV, 6 * H * F * n_tok, 3 * H * F * wb + n_tok * (2 * H + 3 * F) * 4);
    return t_bs + t_dl + t_c + t_ul;
}

static void forward(wd_emu *emu, int n_tok, double lm_head) {
    int n[8], ex[8 * 2];
    char err[256];
    for (int t = 0; t < n_tok; t++) n[t] = 2, ex[2 * t] = 0, ex[2 * t + 1] = 1;
    for (int l = 0; l < 2; l++)
        CHECKF(wd_emu_step(emu, l, n_tok, n, ex, NULL, err, sizeof err) == 0, "%s", err);
    wd_emu_finish_forward(emu, lm_head);
}

static void test_phases(void) {
    wd_scenario sc;
    const_scenario(&sc, 2);
    wd_emu_shape sh = {512, 1024, 2, 2, 2, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    const double lm = 2.5e-4;
    double ttft = 2 * layer_time(5) + lm, tpot = 2 * layer_time(1) + lm;
    /* a prompt of 5 tokens (one pass), then 4 decode steps */
    wd_emu_set_phase(emu, WD_PHASE_PREFILL);
    forward(emu, 5, lm);
    wd_emu_set_phase(emu, WD_PHASE_DECODE);
    for (int i = 0; i < 4; i++) forward(emu, 1, lm);
    /* a second prompt of 1 token split nowhere, and a third in two chunks (3 + 2):
       one sample each */
    wd_emu_set_phase(emu, WD_PHASE_PREFILL);
    forward(emu, 1, lm);
    wd_emu_set_phase(emu, WD_PHASE_PREFILL);
    forward(emu, 3, 0);
    forward(emu, 2, lm);
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    CHECK(s.prefill.samples == 3 && s.prefill.forwards == 4 && s.prefill.tokens == 11);
    CHECK(s.decode.samples == 4 && s.decode.forwards == 4 && s.decode.tokens == 4);
    double chunked = 2 * layer_time(3) + 2 * layer_time(2) + lm;
    CHECK_NEAR(s.prefill.mean_s, (ttft + tpot + chunked) / 3, 1e-15);
    CHECK_NEAR(s.prefill.max_s, ttft > chunked ? ttft : chunked, 1e-15);
    CHECK_NEAR(s.decode.mean_s, tpot, 1e-15);
    CHECK_NEAR(s.decode.p50_s, tpot, 1e-15);
    CHECK_NEAR(s.decode.max_s, tpot, 1e-15);
    CHECK_NEAR(s.decode.bs_s + s.decode.dl_s + s.decode.comp_s + s.decode.ul_s + s.decode.air_s,
               tpot, 1e-15);
    CHECK(s.decode.experts_dropped == 0 && s.decode.experts_per_token == 2);
    /* AUTO: a pass of several tokens is prefill, of one token decode */
    wd_emu_reset_stats(emu);
    wd_emu_set_phase(emu, WD_PHASE_AUTO);
    forward(emu, 5, lm);
    forward(emu, 1, lm);
    forward(emu, 1, lm);
    wd_emu_summarize(emu, &s);
    CHECK(s.prefill.samples == 1 && s.decode.samples == 2);
    CHECK_NEAR(s.prefill.mean_s, ttft, 1e-15);
    CHECK_NEAR(s.decode.mean_s, tpot, 1e-15);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* Outage through the emulator: device 1 down; top-2 of 4 experts keeps 2
 * experts (the unreachable one replaced), counted per token-layer. */
static void test_outage_replacement(void) {
    wd_scenario sc;
    const_scenario(&sc, 4);
    wd_fault f = {1, WD_FAULT_DOWN, 3, 0.0, INFINITY, 0};
    sc.faults = malloc(sizeof f);
    memcpy(sc.faults, &f, sizeof f);
    sc.n_faults = 1;
    wd_emu_shape sh = {512, 1024, 2, 4, 2, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    /* token 0: top-2 {1, 2}, 1 down -> {2, 3}; token 1: top-2 {0, 3}, untouched */
    float p[8] = {0.1f, 0.4f, 0.3f, 0.2f, 0.4f, 0.1f, 0.2f, 0.3f};
    int n[2], ex[8];
    float w[8];
    for (int l = 0; l < 2; l++) {
        CHECK(wd_emu_select(emu, 2, p, n, ex, w, err, sizeof err) == 0);
        CHECK(n[0] == 2 && ex[0] == 2 && ex[1] == 3 && n[1] == 2 && ex[4] == 0 && ex[5] == 3);
        CHECK(wd_emu_step(emu, l, 2, n, ex, NULL, err, sizeof err) == 0);
    }
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    CHECK(s.prefill.experts_replaced == 2 && s.prefill.experts_dropped == 0);
    CHECK(s.experts_replaced == 2 && s.tokens_rerouted == 1 && s.prefill.experts_per_token == 2);
    /* a policy may drop on top: dropped counts what it leaves out of k */
    CHECK(wd_emu_set_policy(emu, "dynamic", NULL, err, sizeof err) == 0);
    wd_emu_reset_stats(emu);
    float q[4] = {0.03f, 0.8f, 0.12f, 0.05f}; /* 1 down -> {2, 3}; weight of 3 < theta: dropped */
    for (int l = 0; l < 2; l++) {
        CHECK(wd_emu_select(emu, 1, q, n, ex, w, err, sizeof err) == 0);
        CHECK(n[0] == 1 && ex[0] == 2);
        CHECK(wd_emu_step(emu, l, 1, n, ex, NULL, err, sizeof err) == 0);
    }
    wd_emu_summarize(emu, &s);
    CHECK(s.decode.experts_replaced == 2 && s.decode.experts_dropped == 2);
    struct json_object *j = wd_emu_summary_json(&s);
    struct json_object *d = json_object_object_get(j, "decode");
    CHECK(json_object_get_int(json_object_object_get(j, "experts_replaced")) == 2 &&
          json_object_get_int(json_object_object_get(d, "experts_dropped")) == 2);
    json_object_put(j);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* Drops of an expert that sets no wait are counted: expert 0 (fast device)
 * holds weight 0.1, expert 1 (slow device) 0.9. dynamic drops expert 0 although
 * the step waits for device 1 anyway; wdmoe-straggler keeps it. */
static void test_nonstraggler_drops(void) {
    wd_scenario sc;
    const_scenario(&sc, 2);
    sc.dev[1].profile.peak_flops = 1e9;
    wd_emu_shape sh = {512, 1024, 2, 2, 2, 2.0, 0, 0, 0, 0, 0};
    const char *pol[2] = {"dynamic", "wdmoe-straggler"};
    for (int i = 0; i < 2; i++) {
        wd_emu *emu;
        char err[512];
        CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
        CHECK(wd_emu_set_policy(emu, pol[i], NULL, err, sizeof err) == 0);
        float p[2] = {0.1f, 0.9f}, w[2];
        int n[1], ex[2];
        for (int l = 0; l < 2; l++) {
            CHECK(wd_emu_select(emu, 1, p, n, ex, w, err, sizeof err) == 0);
            CHECK(wd_emu_step(emu, l, 1, n, ex, NULL, err, sizeof err) == 0);
        }
        wd_emu_summary s;
        wd_emu_summarize(emu, &s);
        CHECKF(s.decode.experts_dropped == (i ? 0 : 2) &&
                   s.decode.experts_dropped_nonstraggler == (i ? 0 : 2),
               "%s: dropped %ld, not the straggler %ld", pol[i], s.decode.experts_dropped,
               s.decode.experts_dropped_nonstraggler);
        wd_emu_free(emu);
    }
    wd_scenario_free(&sc);
}

/* offset_jitter_s: the channel seed moves each device within its trace (the
 * shipped trace scenarios), so runs over several seeds see different channels. */
static void test_trace_seed(void) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/bench/scenarios/att-lte-driving.json", WD_SOURCE_DIR);
    wd_scenario sc;
    CHECKF(wd_scenario_load(&sc, path, err, sizeof err) == 0, "%s", err);
    CHECK(sc.dev[0].link[WD_DL].offset_jitter_s == 15);
    double r[3][2];
    for (int i = 0; i < 3; i++) {
        sc.seed = i < 2 ? 1 : 2;
        wd_emu *emu;
        CHECKF(wd_emu_create(&emu, &sc, NULL, err, sizeof err) == 0, "%s", err);
        for (int d = 0; d < 2; d++) r[i][d] = wd_link_mean_rate(wd_emu_link(emu, d, WD_DL), 0, 2.0);
        wd_emu_free(emu);
    }
    CHECK(r[0][0] == r[1][0] && r[0][1] == r[1][1]);  /* same seed, same channel */
    CHECK(r[0][0] != r[2][0] || r[0][1] != r[2][1]);  /* another seed, another start */
    wd_scenario_free(&sc);
}

/* A link that fades to rate 0 after the selection saw it up (no fault in the
 * scenario: a fade below the outage SNR, a gap in a trace) and stays down past
 * max_wait_s: the expert is replaced for that step as for a device fault, and
 * the step completes (before, the run stopped with "never completes"). */
static void test_stall_without_fault(void) {
    const char *csv = wd_test_write_tmp(tmpdir, "fade.csv",
                                        "time_s,uplink_bps\n0,50e6\n0.0005,0\n100,0\n");
    wd_scenario sc;
    const_scenario(&sc, 3);
    sc.max_wait_s = 1.0;
    wd_link_spec *ul = &sc.dev[2].link[WD_UL];
    ul->model = WD_LINK_CSV;
    snprintf(ul->file, sizeof ul->file, "%s", csv);
    wd_emu_shape sh = {512, 1024, 1, 3, 1, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    double tau[3];
    unsigned char av[3];
    CHECK(wd_emu_predict(emu, tau, av) == 3 && av[2] && isfinite(tau[2])); /* up at t = 0 */
    float p[3] = {0.3f, 0.2f, 0.5f};
    int n[1], ex[3];
    float w[3];
    /* its uplink would start after the 1 ms downlink latency: rate 0 until 100 s */
    CHECKF(wd_emu_select(emu, 1, p, n, ex, w, err, sizeof err) == 0, "%s", err);
    CHECK(n[0] == 1 && ex[0] == 0); /* expert 2 replaced by the next most probable */
    wd_emu_step_result r;
    CHECKF(wd_emu_step(emu, 0, 1, n, ex, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.n_active == 1 && r.dev[0].device == 0);
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    CHECK(s.experts_replaced == 1 && s.tokens_rerouted == 1);
    /* chosen by hand, the same expert still never completes: the step says so */
    n[0] = 1, ex[0] = 2;
    CHECK(wd_emu_step(emu, 0, 1, n, ex, NULL, err, sizeof err) != 0);
    CHECKF(strstr(err, "device 2") && strstr(err, "never completes"), "%s", err);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* A Mahimahi trace is one user's delivery schedule: two devices on the same
 * trace (12 Mbit/s: one 1500-byte opportunity every ms) each get all of it,
 * unless the scenario asks for the capacity to be shared. */
static void test_trace_capacity(void) {
    const char *mm = wd_test_write_tmp(tmpdir, "one.mm", "1\n");
    for (int shared = 0; shared < 2; shared++) {
        char json[2048], err[512];
        snprintf(json, sizeof json,
                 "{\"devices\": [{}, {}], \"device_defaults\": {"
                 " \"profile\": {\"peak_tflops\": 1e3, \"mem_bw_gbs\": 1e5, \"overhead_us\": 0},"
                 " \"downlink\": {\"model\": \"mahimahi\", \"file\": \"%s\"%s},"
                 " \"uplink\": {\"model\": \"mahimahi\", \"file\": \"%s\"%s}}}",
                 mm, shared ? ", \"shared_capacity\": true" : "", mm,
                 shared ? ", \"shared_capacity\": true" : "");
        wd_scenario sc;
        CHECKF(wd_scenario_parse(&sc, json, "trace.json", err, sizeof err) == 0, "%s", err);
        wd_emu_shape sh = {1500, 64, 1, 2, 2, 2.0, 0, 0, 0, 0, 0}; /* 24000 bits a token */
        wd_emu *emu;
        CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
        int n[1] = {2}, ex[2] = {0, 1};
        wd_emu_step_result r;
        wd_emu_advance(emu, 0.0105);
        CHECKF(wd_emu_step(emu, 0, 1, n, ex, &r, err, sizeof err) == 0, "%s", err);
        CHECK(r.n_active == 2);
        for (int i = 0; i < 2; i++) {
            CHECK_NEAR(r.dev[i].share[WD_DL], shared ? 0.5 : 1.0, 0);
            /* 2 opportunities whole, 4 at half: from 10.5 ms + BS time */
            double start = 0.0105 + r.t_bs, want = shared ? 0.014 : 0.012;
            CHECK_NEAR(start + r.dev[i].t_dl, want, 1e-9);
        }
        wd_emu_free(emu);
        wd_scenario_free(&sc);
    }
}

/* Replay-like loop over a scenario: the JSON summary as a string. */
static char *run_json(const wd_scenario *sc, const char *policy, uint64_t seed) {
    wd_scenario s = *sc;
    s.seed = seed;
    wd_emu_shape sh = {4096, 14336, 32, 8, 2, 2.0, 32, 8, 128, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &s, &sh, err, sizeof err) == 0, "%s", err);
    CHECK(wd_emu_set_policy(emu, policy, NULL, err, sizeof err) == 0);
    unsigned st = 99;
    float p[8], w[8];
    int n[1], ex[8];
    for (int t = 0; t < 10; t++)
        for (int l = 0; l < 32; l++) {
            float sum = 0;
            for (int e = 0; e < 8; e++)
                st = st * 1664525u + 1013904223u, sum += p[e] = (st >> 9) / 8388608.0f;
            for (int e = 0; e < 8; e++) p[e] /= sum;
            CHECK(wd_emu_select(emu, 1, p, n, ex, w, err, sizeof err) == 0);
            CHECKF(wd_emu_step(emu, l, 1, n, ex, NULL, err, sizeof err) == 0, "%s", err);
        }
    wd_emu_summary su;
    wd_emu_summarize(emu, &su);
    CHECK(su.tokens == 10 && su.decode.mean_s > 0 && su.decode.p50_s <= su.decode.p95_s && su.decode.p95_s <= su.decode.p99_s &&
          su.decode.p99_s <= su.decode.max_s);
    struct json_object *j = wd_emu_summary_json(&su);
    char *out = strdup(json_object_to_json_string(j));
    json_object_put(j);
    wd_emu_free(emu);
    return out;
}

static void test_determinism(void) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/bench/scenarios/paper-cell.json", WD_SOURCE_DIR);
    wd_scenario sc;
    CHECKF(wd_scenario_load(&sc, path, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < wd_policy_count(); i++) {
        char *a = run_json(&sc, wd_policy_at(i)->name, 1),
             *b = run_json(&sc, wd_policy_at(i)->name, 1);
        CHECKF(!strcmp(a, b), "policy %s not deterministic", wd_policy_at(i)->name);
        char *c = run_json(&sc, wd_policy_at(i)->name, 2);
        CHECK(strcmp(a, c) != 0); /* another seed, another channel */
        free(a), free(b), free(c);
    }
    wd_scenario_free(&sc);
}

static void test_probs_file(void) {
    char err[512];
    wd_probs shape = {3, 4, 2, 64, 128, 8, 4, 8, 16, 0, NULL, NULL};
    wd_probs_writer *w;
    CHECKF(wd_probs_write_open(&w, tmp("p.wdpr"), &shape, err, sizeof err) == 0, "%s", err);
    float tok[12];
    /* a prompt of 3 tokens in two passes (2 + 1), then 2 decode steps */
    const unsigned fl[5] = {WD_PROBS_PREFILL | WD_PROBS_FORWARD | WD_PROBS_SAMPLE, WD_PROBS_PREFILL,
                            WD_PROBS_PREFILL | WD_PROBS_FORWARD, WD_PROBS_FORWARD | WD_PROBS_SAMPLE,
                            WD_PROBS_FORWARD | WD_PROBS_SAMPLE};
    for (int t = 0; t < 5; t++) {
        for (int i = 0; i < 12; i++) tok[i] = (float)((t * 12 + i) % 7) / 7.0f;
        CHECK(t < 3 ? wd_probs_write_token_flags(w, tok, fl[t], err, sizeof err) == 0
                    : wd_probs_write_token(w, tok, err, sizeof err) == 0);
    }
    CHECK(wd_probs_write_close(w, err, sizeof err) == 0);
    wd_probs p;
    CHECKF(wd_probs_read(&p, tmp("p.wdpr"), err, sizeof err) == 0, "%s", err);
    CHECK(p.n_tokens == 5 && p.n_layers == 3 && p.n_experts == 4 && p.top_k == 2 &&
          p.hidden == 64 && p.ffn == 128 && p.n_heads == 8 && p.n_kv_heads == 4 &&
          p.head_dim == 8 && p.weight_bits == 16);
    int same = 1;
    for (int i = 0; i < 60; i++) same &= p.probs[i] == (float)(i % 7) / 7.0f;
    CHECK(same);
    for (int t = 0; t < 5; t++) CHECK(p.flags[t] == fl[t]);
    wd_emu_shape sh = wd_probs_shape(&p);
    CHECK(sh.hidden == 64 && sh.weight_bytes == 2.0 && sh.n_layers == 3);
    wd_probs_free(&p);
    /* version 1 (no flags): every token a decode step */
    FILE *f1 = fopen(tmp("p.wdpr"), "rb"), *f2 = fopen(tmp("v1.wdpr"), "wb");
    unsigned char buf[48 + 60 * 4];
    CHECK(f1 && f2 && fread(buf, 1, sizeof buf, f1) == sizeof buf);
    buf[4] = 1;
    CHECK(fwrite(buf, 1, sizeof buf, f2) == sizeof buf);
    fclose(f1), fclose(f2);
    CHECKF(wd_probs_read(&p, tmp("v1.wdpr"), err, sizeof err) == 0, "%s", err);
    for (int t = 0; t < 5; t++) CHECK(p.flags[t] == (WD_PROBS_FORWARD | WD_PROBS_SAMPLE));
    wd_probs_free(&p);
    /* flags that break a pass: a continuation changing phase */
    f2 = fopen(tmp("flags.wdpr"), "wb");
    buf[4] = 2;
    const unsigned char badf[5] = {7, 1, 3, 6, 0 /* decode continuation of a decode pass */};
    const unsigned char worse[5] = {7, 1, 0, 6, 6}; /* token 2: leaves the prefill mid-pass */
    CHECK(fwrite(buf, 1, sizeof buf, f2) == sizeof buf && fwrite(badf, 1, 5, f2) == 5);
    fclose(f2);
    CHECKF(wd_probs_read(&p, tmp("flags.wdpr"), err, sizeof err) == 0, "%s", err);
    wd_probs_free(&p);
    f2 = fopen(tmp("flags.wdpr"), "wb");
    CHECK(fwrite(buf, 1, sizeof buf, f2) == sizeof buf && fwrite(worse, 1, 5, f2) == 5);
    fclose(f2);
    CHECK(wd_probs_read(&p, tmp("flags.wdpr"), err, sizeof err) != 0 &&
          strstr(err, "token 2: bad phase flags"));
    /* bad files */
    FILE *f = fopen(tmp("bad.wdpr"), "wb");
    fputs("WDPX0000000000000000000000000000000000000000000000", f);
    fclose(f);
    CHECK(wd_probs_read(&p, tmp("bad.wdpr"), err, sizeof err) != 0 && strstr(err, "magic WDPR"));
    f = fopen(tmp("p.wdpr"), "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK(truncate(tmp("p.wdpr"), size - 4) == 0);
    CHECK(wd_probs_read(&p, tmp("p.wdpr"), err, sizeof err) != 0 && strstr(err, "does not match"));
}

/* trace -> CSV scenario -> the same channel: identical latencies (share 1). */
static void test_trace_and_replay(void) {
    char err[512], scen[1024];
    snprintf(scen, sizeof scen, "%s/bench/scenarios/paper-cell.json", WD_SOURCE_DIR);
    char *targv[] = {"trace", "--scenario",    scen, "--duration", "6",
                     "--out", tmp("cell.csv"), NULL};
    CHECK(wd_cmd_trace(7, targv) == 0);
    char *hargv[] = {"trace", "--help", NULL};
    CHECK(wd_cmd_trace(2, hargv) == 0);
    char *bargv[] = {"trace", "--scenario", scen, NULL};
    CHECK(wd_cmd_trace(3, bargv) == 2);
    /* a copy of the scenario reading its links from the CSV */
    wd_scenario a, b;
    CHECK(wd_scenario_load(&a, scen, err, sizeof err) == 0);
    CHECK(wd_scenario_load(&b, scen, err, sizeof err) == 0);
    for (int d = 0; d < b.n_devices; d++)
        for (int k = 0; k < 2; k++) {
            wd_link_spec *l = &b.dev[d].link[k];
            l->model = WD_LINK_CSV;
            l->air = 1; /* the same air interface as the synthetic links */
            snprintf(l->file, sizeof l->file, "%s", tmp("cell.csv"));
        }
    /* top_k = 1: one device per step owns the whole band (the synthetic
     * uplink's spectral efficiency depends on the share, a trace's does not) */
    wd_emu_shape sh = {256, 512, 4, 8, 1, 2.0, 0, 0, 0, 0, 0};
    wd_emu *ea, *eb;
    CHECKF(wd_emu_create(&ea, &a, &sh, err, sizeof err) == 0, "%s", err);
    CHECKF(wd_emu_create(&eb, &b, &sh, err, sizeof err) == 0, "%s", err);
    wd_probs ps = {4, 8, 1, 256, 512, 0, 0, 0, 16, 0, NULL, NULL};
    wd_probs_writer *w;
    CHECK(wd_probs_write_open(&w, tmp("r.wdpr"), &ps, err, sizeof err) == 0);
    unsigned st = 5;
    int maxdiff_ok = 1;
    for (int t = 0; t < 200; t++) {
        float p[32];
        for (int l = 0; l < 4; l++) {
            float s = 0;
            for (int e = 0; e < 8; e++)
                st = st * 1664525u + 1013904223u, s += p[l * 8 + e] = (st >> 9) / 8388608.0f;
            for (int e = 0; e < 8; e++) p[l * 8 + e] /= s;
            int na[1], xa[8], nb[1], xb[8];
            float wa[8], wb[8];
            wd_emu_step_result ra, rb;
            CHECK(wd_emu_select(ea, 1, p + l * 8, na, xa, wa, err, sizeof err) == 0);
            CHECK(wd_emu_select(eb, 1, p + l * 8, nb, xb, wb, err, sizeof err) == 0);
            CHECK(na[0] == nb[0] && (!na[0] || xa[0] == xb[0]));
            CHECK(wd_emu_step(ea, l, 1, na, xa, &ra, err, sizeof err) == 0);
            CHECK(wd_emu_step(eb, l, 1, nb, xb, &rb, err, sizeof err) == 0);
            maxdiff_ok &= fabs(ra.total - rb.total) <= 1e-9 * ra.total;
        }
        CHECK(wd_probs_write_token(w, p, err, sizeof err) == 0);
    }
    CHECK(maxdiff_ok);
    CHECK(wd_emu_time(ea) < 6.0); /* inside the traced span */
    CHECK_NEAR(wd_emu_time(ea), wd_emu_time(eb), 1e-9 * wd_emu_time(ea));
    CHECK(wd_probs_write_close(w, err, sizeof err) == 0);
    wd_emu_free(ea), wd_emu_free(eb);
    wd_scenario_free(&a), wd_scenario_free(&b);

    /* replay: two runs give byte-identical JSON from "runs" on (before it: the
       date and the command line, which names the output) */
    char *rargv[] = {"replay", "--probs",  tmp("r.wdpr"), "--scenario", scen,           "--policy",
                     "wdmoe",  "--policy", "fastest",     "--out",      tmp("r1.json"), NULL};
    CHECK(wd_cmd_replay(11, rargv) == 0);
    rargv[10] = tmp("r2.json");
    CHECK(wd_cmd_replay(11, rargv) == 0);
    FILE *f1 = fopen(tmp("r1.json"), "rb"), *f2 = fopen(tmp("r2.json"), "rb");
    CHECK(f1 && f2);
    if (f1 && f2) {
        static char b1[1 << 16], b2[1 << 16];
        size_t n1 = fread(b1, 1, sizeof b1, f1), n2 = fread(b2, 1, sizeof b2, f2);
        b1[n1 < sizeof b1 ? n1 : sizeof b1 - 1] = 0, b2[n2 < sizeof b2 ? n2 : sizeof b2 - 1] = 0;
        const char *r1 = strstr(b1, "\"runs\""), *r2 = strstr(b2, "\"runs\"");
        CHECK(n1 > 100 && r1 && r2 && !strcmp(r1, r2));
        CHECK(strstr(b1, "\"policy\":\"fastest\"") || strstr(b1, "\"policy\": \"fastest\""));
        CHECK(strstr(b1, "latency_reduction_vs_topk") != NULL);
    }
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    char *h2[] = {"replay", "--help", NULL};
    CHECK(wd_cmd_replay(2, h2) == 0);
    char *m2[] = {"replay", "--probs", tmp("r.wdpr"), NULL};
    CHECK(wd_cmd_replay(3, m2) == 2);
    char *p2[] = {"replay", "--probs", tmp("r.wdpr"), "--scenario", scen, "--policy", "nope", NULL};
    CHECK(wd_cmd_replay(7, p2) == 2);
    char *e2[] = {"replay", "--probs", tmp("missing.wdpr"), "--scenario", scen, NULL};
    CHECK(wd_cmd_replay(5, e2) == 1);
}

/* Energy: a transfer with known power and airtime (constant link, no
 * latency, alone on the band) costs exactly power x airtime; device and BS
 * compute at their busy watts; idle watts fill the rest of the virtual time;
 * a device serving two experts queues the second behind the first. */
static void test_energy(void) {
    wd_scenario sc;
    const_scenario(&sc, 2);
    sc.radio.bs_tx_power_dbm = 30, sc.radio.ue_tx_power_dbm = 20; /* 1 W, 0.1 W */
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < 2; k++) sc.dev[d].link[k].latency_s = 0;
    const double H = 512, F = 1024, wb = 2;
    wd_emu_shape sh = {512, 1024, 1, 2, 2, wb, 0, 0, 0, 0, 0};
    wd_emu *emu;
    char err[512];
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    int n[1] = {1}, ex[1] = {1};
    wd_emu_step_result r;
    CHECKF(wd_emu_step(emu, 0, 1, n, ex, &r, err, sizeof err) == 0, "%s", err);
    double bits = H * 16, p_dl = wd_dbm_to_watt(30), p_ul = wd_dbm_to_watt(20);
    double bytes = 3 * H * F * wb + (2 * H + 3 * F) * 4, tc = roofline(&DEV, 6 * H * F, bytes);
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    CHECK(s.decode.energy_dl_j == p_dl * (bits / 100e6)); /* exact */
    CHECK(s.decode.energy_ul_j == p_ul * (bits / 50e6));
    CHECK(s.decode.energy_device_j == 5.0 * tc);
    CHECK(s.decode.energy_bs_j == 300.0 * r.t_bs);
    double active = p_dl * bits / 100e6 + p_ul * bits / 50e6 + 5.0 * tc + 300.0 * r.t_bs;
    CHECK_NEAR(s.decode.energy_per_token_j, active, 1e-15);
    double T = wd_emu_time(emu), idle = 0.5 * T + 0.5 * (T - tc) + 50.0 * (T - r.t_bs);
    CHECK_NEAR(s.energy_idle_j, idle, 1e-12);
    CHECK_NEAR(s.energy_total_j, active + idle, 1e-12);
    wd_emu_device_stats ds;
    CHECK(wd_emu_device_stats_get(emu, 1, &ds) == 0);
    CHECK(ds.busy_s == tc && ds.calls == 1 && ds.tokens == 1 && ds.max_queue == 0);
    CHECK_NEAR(ds.utilisation, tc / T, 1e-15);
    CHECK(wd_emu_device_stats_get(emu, 0, &ds) == 0 && ds.busy_s == 0 && ds.calls == 0);
    wd_emu_free(emu);
    /* one device hosting both experts: the second call waits for the first */
    wd_scenario_free(&sc);
    const_scenario(&sc, 1);
    CHECKF(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0, "%s", err);
    int n2[1] = {2}, ex2[2] = {0, 1};
    CHECKF(wd_emu_step(emu, 0, 1, n2, ex2, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.n_active == 1 && r.dev[0].calls == 2);
    CHECK(wd_emu_device_stats_get(emu, 0, &ds) == 0);
    CHECK(ds.calls == 2 && ds.max_queue == 1);
    CHECK_NEAR(ds.queue_wait_s, tc, 1e-15);
    CHECK_NEAR(ds.busy_s, 2 * tc, 1e-15);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/test_emu_run.tmp", WD_BINARY_DIR);
    mkdir(tmpdir, 0755);
    test_step_formulas();
    test_energy();
    test_placement();
    test_faults();
    test_phases();
    test_outage_replacement();
    test_stall_without_fault();
    test_trace_capacity();
    test_trace_seed();
    test_nonstraggler_drops();
    test_determinism();
    test_probs_file();
    test_trace_and_replay();
    return wd_test_finish("test_emu_run");
}
