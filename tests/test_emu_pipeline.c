/* Pipelined micro-batches (wd_emu_pipeline_*) against timelines written out
 * by hand: constant links, known BS, transfer and compute times; two
 * micro-batches on one device (the BS's idle gaps, the device queue, the band
 * halved while the other's transfer is in flight), two micro-batches on two devices (the band shared with a transfer
 * still in flight), the LM head waiting for the BS, and one micro-batch
 * being the synchronous step; no barrier between steps (a micro-batch of
 * the next step queues behind one of the step before). */
#include "emulation/emulation.h"

#include <string.h>

#include "tests/test_util.h"

static const wd_compute_profile DEV = {1e9, 1e12, 0.5, 3e-4, 0, 1.0, 0, 0.5, 5.0};
static const wd_compute_profile BS = {1e13, 1e13, 1.0, 0, 0, 1.0, 0, 50.0, 300.0};
enum { H = 64, F = 128 };

static double roofline(const wd_compute_profile *p, double flops, double bytes) {
    return fmax(flops / p->peak_flops, bytes / p->mem_bw) / p->efficiency + p->overhead_s;
}

/* n devices, device e hosts expert e; dl 10 Mbit/s + 0.1 ms, ul 2 Mbit/s + 1 ms */
static wd_emu *make(int n, wd_scenario *sc) {
    char err[512];
    CHECK(wd_scenario_default(sc, n, err, sizeof err) == 0);
    sc->bs = BS;
    for (int d = 0; d < n; d++) {
        sc->dev[d].profile = DEV;
        for (int k = 0; k < 2; k++) {
            sc->dev[d].link[k].model = WD_LINK_CONSTANT;
            sc->dev[d].link[k].rate_bps = k ? 2e6 : 10e6;
            sc->dev[d].link[k].latency_s = k ? 1e-3 : 1e-4;
        }
    }
    wd_emu_shape sh = {H, F, 2, n, 1, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    CHECKF(wd_emu_create(&emu, sc, &sh, err, sizeof err) == 0, "%s", err);
    return emu;
}

static void step(wd_emu *emu, int layer, int expert, wd_emu_step_result *r) {
    char err[512];
    int n[1] = {1}, ex[1] = {expert};
    CHECKF(wd_emu_step(emu, layer, 1, n, ex, r, err, sizeof err) == 0, "%s", err);
}

/* one token through one device: BS, downlink, compute, uplink times */
static void times(double *b, double *d, double *c, double *u) {
    double attn = 4.0 * H * H + 1.0 * H; /* q, k, v, o as H x H; router of 1 expert */
    *b = roofline(&BS, 2 * attn, attn * 2.0 + 4.0 * H * 4);
    *d = 1e-4 + H * 16 / 10e6;
    *c = roofline(&DEV, 6.0 * H * F, 3.0 * H * F * 2.0 + (2.0 * H + 3.0 * F) * 4);
    *u = 1e-3 + H * 16 / 2e6;
}

static void test_one_device(void) {
    wd_scenario sc;
    wd_emu *emu = make(1, &sc);
    char err[256];
    double b, d, c, u, lm = 2e-5;
    times(&b, &d, &c, &u);
    double xd = H * 16 / 10e6, xu = H * 16 / 2e6; /* data airtime at the whole band */
    double d2 = 1e-4 + 2 * xd, u2 = 1e-3 + 2 * xu; /* at half of it */
    CHECKF(b + xd < c && c < u && lm < d, "the case needs b + xd < c < u (%g %g %g %g)", b, d, c, u);
    CHECK(wd_emu_pipeline_begin(emu, 2, NULL, err, sizeof err) == 0);
    wd_emu_step_result r;
    /* micro-batch 0, layer 0: nothing busy */
    wd_emu_pipeline_switch(emu, 0);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.t_start, 0, 0);
    CHECK_NEAR(r.t_bs, b, 1e-18);
    CHECK_NEAR(r.dev[0].t_dl, d, 1e-15);
    CHECK_NEAR(r.dev[0].t_c, c, 1e-15);
    CHECK_NEAR(r.dev[0].t_ul, u, 1e-15);
    CHECK_NEAR(r.dev[0].queue_s, 0, 0);
    double R0 = b + d + c + u;
    CHECK_NEAR(wd_emu_time(emu), R0, 1e-15);
    /* micro-batch 1, layer 0: the BS is free at b; its downlink starts at 2b
     * while micro-batch 0's (until b + d) is in flight: half the band; it
     * arrives at 2b + d2, the device computes until b + d + c: it queues; its
     * uplink starts at b + d + 2c, micro-batch 0's (until R0) in flight: half */
    wd_emu_pipeline_switch(emu, 1);
    CHECK_NEAR(wd_emu_time(emu), b, 1e-18);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.t_start, b, 1e-18);
    CHECK_NEAR(r.dev[0].share[WD_DL], 0.5, 0);
    CHECK_NEAR(r.dev[0].t_dl, d2, 1e-15);
    double q = (b + d + c) - (2 * b + d2);
    CHECK_NEAR(r.dev[0].queue_s, q, 1e-15);
    CHECK(r.dev[0].queue_ahead == 1);
    CHECK_NEAR(r.dev[0].share[WD_UL], 0.5, 0);
    CHECK_NEAR(r.dev[0].t_ul, u2, 1e-15);
    double R1 = b + d + 2 * c + u2;
    CHECK_NEAR(r.dev[0].t_back, R1, 1e-15);
    CHECK_NEAR(r.wait, R1 - 2 * b, 1e-15);
    CHECK_NEAR(wd_emu_time(emu), R1, 1e-15);
    /* micro-batch 0, layer 1: its clock R0 < R1 goes first; the downlink has
     * the band, the device is free, its uplink at R0 + b + d + c < R1 shares */
    CHECK(wd_emu_pipeline_ready(emu, 0) < wd_emu_pipeline_ready(emu, 1));
    wd_emu_pipeline_switch(emu, 0);
    CHECK_NEAR(wd_emu_time(emu), R0, 1e-15);
    step(emu, 1, 0, &r);
    CHECK_NEAR(r.dev[0].share[WD_DL], 1.0, 0);
    CHECK_NEAR(r.dev[0].queue_s, 0, 0);
    CHECK_NEAR(r.dev[0].share[WD_UL], 0.5, 0);
    double R2 = R0 + b + d + c + u2;
    CHECK(R0 + b + d + c < R1);
    CHECK_NEAR(wd_emu_time(emu), R2, 1e-15);
    wd_emu_finish_forward(emu, lm); /* its LM head: the BS is idle then */
    CHECK_NEAR(wd_emu_time(emu), R2 + lm, 1e-15);
    /* micro-batch 1, layer 1 at R1 (before R2: the BS is idle at R1, the LM
     * head of micro-batch 0 comes later); its uplink shares with micro-batch
     * 0's (until R2) */
    wd_emu_pipeline_switch(emu, 1);
    CHECK_NEAR(wd_emu_time(emu), R1, 1e-15);
    step(emu, 1, 0, &r);
    CHECK_NEAR(r.dev[0].queue_s, 0, 0);
    CHECK_NEAR(r.dev[0].share[WD_DL], 1.0, 0);
    CHECK(R1 + b + d + c < R2);
    CHECK_NEAR(r.dev[0].share[WD_UL], 0.5, 0);
    double R3 = R1 + b + d + c + u2;
    CHECK_NEAR(wd_emu_time(emu), R3, 1e-15);
    wd_emu_finish_forward(emu, lm);
    wd_emu_pipeline_end(emu);
    CHECK_NEAR(wd_emu_time(emu), R3 + lm, 1e-15);
    /* the device: 4 jobs, one queued, 1 call ahead of it */
    wd_emu_device_stats ds;
    CHECK(wd_emu_device_stats_get(emu, 0, &ds) == 0);
    CHECK(ds.jobs == 4 && ds.queued_jobs == 1 && ds.queue_ahead_sum == 1 && ds.max_queue == 1);
    CHECK_NEAR(ds.queue_wait_s, q, 1e-15);
    CHECK_NEAR(ds.busy_s, 4 * c, 1e-15);
    /* two forward passes of 2 layers: latency samples from each micro-batch's
     * first BS start to its LM head end */
    size_t nl;
    const double *lat = wd_emu_token_latencies(emu, &nl);
    CHECK(nl == 2);
    CHECK_NEAR(lat[0], R2 + lm, 1e-15);
    CHECK_NEAR(lat[1], R3 + lm - b, 1e-15);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* two devices: micro-batch 1's downlink to device 1 starts while micro-batch
 * 0's to device 0 is in flight: the band is split between the two */
static void test_band_shared(void) {
    wd_scenario sc;
    wd_emu *emu = make(2, &sc);
    char err[256];
    double b, d, c, u;
    times(&b, &d, &c, &u);
    CHECK(wd_emu_pipeline_begin(emu, 2, NULL, err, sizeof err) == 0);
    wd_emu_step_result r;
    wd_emu_pipeline_switch(emu, 0);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.dev[0].share[WD_DL], 1.0, 0);
    wd_emu_pipeline_switch(emu, 1);
    step(emu, 0, 1, &r);
    CHECK(r.dev[0].device == 1);
    CHECK_NEAR(r.dev[0].share[WD_DL], 0.5, 0);
    CHECK_NEAR(r.dev[0].t_dl, 1e-4 + H * 16 / (0.5 * 10e6), 1e-15);
    CHECK_NEAR(r.dev[0].queue_s, 0, 0); /* another device: no queue */
    /* its uplink starts at 2b + d2 + c, while device 0's (from b + d + c to
     * R0) is in flight: half the band too */
    CHECK_NEAR(r.dev[0].share[WD_UL], 0.5, 0);
    wd_emu_pipeline_end(emu);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* one micro-batch is the synchronous step; bad counts are refused */
static void test_one_is_sync(void) {
    wd_scenario sc, sc2;
    wd_emu *a = make(2, &sc), *p = make(2, &sc2);
    char err[256];
    CHECK(wd_emu_pipeline_begin(p, 0, NULL, err, sizeof err) != 0 && strstr(err, "micro-batches"));
    CHECK(wd_emu_pipeline_begin(p, 1, NULL, err, sizeof err) == 0);
    wd_emu_pipeline_switch(p, 0);
    wd_emu_step_result r;
    for (int l = 0; l < 2; l++) step(a, l, l, &r), step(p, l, l, &r);
    wd_emu_finish_forward(a, 1e-5);
    wd_emu_finish_forward(p, 1e-5);
    wd_emu_pipeline_end(p);
    CHECK(wd_emu_time(a) == wd_emu_time(p));
    wd_emu_free(a), wd_emu_free(p);
    wd_scenario_free(&sc), wd_scenario_free(&sc2);
    /* two micro-batches of which one runs: its layers one after another, as
     * the synchronous step (to rounding) */
    a = make(2, &sc), p = make(2, &sc2);
    CHECK(wd_emu_pipeline_begin(p, 2, NULL, err, sizeof err) == 0);
    for (int l = 0; l < 2; l++) {
        wd_emu_pipeline_switch(p, 0);
        step(a, l, l, &r), step(p, l, l, &r);
        CHECK_NEAR(wd_emu_time(a), wd_emu_time(p), 1e-15);
    }
    wd_emu_pipeline_end(p);
    wd_emu_free(a), wd_emu_free(p);
    wd_scenario_free(&sc), wd_scenario_free(&sc2);
}

/* No barrier between steps: two micro-batches A and B of one layer on one
 * slow device (compute c > b + d + u + lm), two steps. Step 2's micro-batches
 * start at their own step-1 ends (A's before B's), the busy state carries
 * over: A's step-2 job arrives while the device still computes B's step-1
 * job and waits c - (b + d + u + lm); B's step-2 job then waits as long
 * behind A's. */
/* one slow device of one expert and one layer: compute c > b + d + u + lm;
 * dl 10 Mbit/s + 0.1 ms, ul 100 Mbit/s + 0.1 ms */
static wd_emu *make_slow(wd_scenario *sc, double *b, double *d, double *c, double *u) {
    char err[256];
    CHECK(wd_scenario_default(sc, 1, err, sizeof err) == 0);
    sc->bs = BS;
    wd_compute_profile slow = DEV;
    slow.peak_flops = 1e7;
    sc->dev[0].profile = slow;
    for (int k = 0; k < 2; k++) {
        sc->dev[0].link[k].model = WD_LINK_CONSTANT;
        sc->dev[0].link[k].rate_bps = k ? 100e6 : 10e6;
        sc->dev[0].link[k].latency_s = 1e-4;
    }
    wd_emu_shape sh = {H, F, 1, 1, 1, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    CHECKF(wd_emu_create(&emu, sc, &sh, err, sizeof err) == 0, "%s", err);
    double c0;
    times(b, d, &c0, u);
    *c = roofline(&slow, 6.0 * H * F, 3.0 * H * F * 2.0 + (2.0 * H + 3.0 * F) * 4);
    *u = 1e-4 + H * 16 / 100e6;
    return emu;
}

static void test_across_steps(void) {
    wd_scenario sc;
    char err[256];
    double b, d, c, u, lm = 2e-5;
    wd_emu *emu = make_slow(&sc, &b, &d, &c, &u);
    double d2 = 1e-4 + 2 * H * 16 / 10e6; /* B's step-1 downlink: A's in flight */
    CHECKF(b + d + u + lm < c && b < d, "the case needs b + d + u + lm < c (%g %g %g %g)", b, d,
           c, u);
    wd_emu_step_result r;
    /* step 1 (the first: starts now, nothing busy) */
    double s1[2] = {0, 0};
    CHECK(wd_emu_pipeline_begin(emu, 2, s1, err, sizeof err) == 0);
    wd_emu_pipeline_switch(emu, 0);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.dev[0].queue_s, 0, 0);
    wd_emu_finish_forward(emu, lm);
    double EA = b + d + c + u + lm;
    CHECK_NEAR(wd_emu_time(emu), EA, 1e-15);
    wd_emu_pipeline_switch(emu, 1);
    step(emu, 0, 0, &r);
    double q1 = (b + d + c) - (2 * b + d2);
    CHECK_NEAR(r.dev[0].t_dl, d2, 1e-15);
    CHECK_NEAR(r.dev[0].queue_s, q1, 1e-15);
    CHECK_NEAR(r.dev[0].share[WD_UL], 1.0, 0); /* A's uplink ended */
    wd_emu_finish_forward(emu, lm);
    double EB = b + d + 2 * c + u + lm;
    CHECK_NEAR(wd_emu_time(emu), EB, 1e-15);
    wd_emu_pipeline_end(emu);
    CHECK_NEAR(wd_emu_time(emu), EB, 1e-15);
    /* step 2 may not start before A's end (the earliest clock) */
    double early[2] = {EA - 1e-6, EB};
    CHECK(wd_emu_pipeline_begin(emu, 2, early, err, sizeof err) != 0 && strstr(err, "before"));
    double s2[2] = {EA, EB};
    CHECK(wd_emu_pipeline_begin(emu, 2, s2, err, sizeof err) == 0);
    /* A at EA (not EB): BS, its downlink alone, then the device is still busy
     * with B's step-1 job until b + d + 2c: the cross-step queue */
    wd_emu_pipeline_switch(emu, 0);
    CHECK_NEAR(wd_emu_time(emu), EA, 1e-15);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.t_start, EA, 1e-15);
    CHECK_NEAR(r.dev[0].t_dl, d, 1e-15);
    double q2 = c - (b + d + u + lm);
    CHECK_NEAR(r.dev[0].queue_s, q2, 1e-15);
    CHECK(r.dev[0].queue_ahead == 1);
    CHECK_NEAR(r.dev[0].t_back, b + d + 3 * c + u, 1e-15);
    wd_emu_finish_forward(emu, lm);
    double EA2 = b + d + 3 * c + u + lm;
    CHECK_NEAR(wd_emu_time(emu), EA2, 1e-15);
    /* B at EB: behind A's step-2 job, as long */
    CHECK(wd_emu_pipeline_ready(emu, 1) < EA2);
    wd_emu_pipeline_switch(emu, 1);
    CHECK_NEAR(wd_emu_time(emu), EB, 1e-15);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.dev[0].queue_s, q2, 1e-15);
    CHECK(r.dev[0].queue_ahead == 1);
    wd_emu_finish_forward(emu, lm);
    wd_emu_pipeline_end(emu);
    CHECK_NEAR(wd_emu_time(emu), b + d + 4 * c + u + lm, 1e-15);
    wd_emu_device_stats ds;
    CHECK(wd_emu_device_stats_get(emu, 0, &ds) == 0);
    CHECK(ds.jobs == 4 && ds.queued_jobs == 3 && ds.queue_ahead_sum == 3);
    CHECK_NEAR(ds.queue_wait_s, q1 + 2 * q2, 1e-15);
    CHECK_NEAR(ds.busy_s, 4 * c, 1e-15);
    /* latency samples: A's step-2 forward is 2c long (its wait included) */
    size_t nl;
    const double *lat = wd_emu_token_latencies(emu, &nl);
    CHECK(nl == 4);
    CHECK_NEAR(lat[2], 2 * c, 1e-15);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* A job takes an idle gap of the device before a job planned earlier but
 * later in virtual time: B of step 1 starts at T = 10c; A's step-2 job
 * arrives long before B's step-1 job and fits before it (no wait); a job
 * that does not fit in the gap goes after it. */
static void test_device_gap(void) {
    wd_scenario sc;
    char err[256];
    double b, d, c, u, lm = 2e-5;
    wd_emu *emu = make_slow(&sc, &b, &d, &c, &u);
    double T = 10 * c;
    wd_emu_step_result r;
    double s1[2] = {0, T};
    CHECK(wd_emu_pipeline_begin(emu, 2, s1, err, sizeof err) == 0);
    wd_emu_pipeline_switch(emu, 0);
    step(emu, 0, 0, &r);
    wd_emu_finish_forward(emu, lm);
    double EA = b + d + c + u + lm;
    CHECK_NEAR(wd_emu_time(emu), EA, 1e-15);
    wd_emu_pipeline_switch(emu, 1);
    CHECK_NEAR(wd_emu_time(emu), T, 1e-15);
    step(emu, 0, 0, &r); /* its job computes [T + b + d, T + b + d + c) */
    CHECK_NEAR(r.dev[0].queue_s, 0, 0);
    wd_emu_finish_forward(emu, lm);
    double EB = T + b + d + c + u + lm;
    wd_emu_pipeline_end(emu);
    /* step 2: A's job arrives at EA + b + d and is done by EA + b + d + c,
     * before B's step-1 job starts: no queue */
    double s2[2] = {EA, EB};
    CHECK(wd_emu_pipeline_begin(emu, 2, s2, err, sizeof err) == 0);
    wd_emu_pipeline_switch(emu, 0);
    step(emu, 0, 0, &r);
    CHECK(EA + b + d + c < T + b + d);
    CHECK_NEAR(r.dev[0].queue_s, 0, 0);
    CHECK_NEAR(r.dev[0].t_back, EA + b + d + c + u, 1e-15);
    wd_emu_finish_forward(emu, lm);
    wd_emu_pipeline_end(emu);
    /* step 3: A's job now arrives at EA2 + b + d; the gap until B's
     * step-1 job (T + b + d) is shorter than c: it waits for its end */
    double EA2 = EA + b + d + c + u + lm;
    double s3[1] = {EA2 + 7 * c};
    CHECK(s3[0] + b + d < T + b + d && s3[0] + b + d + c > T + b + d);
    CHECK(wd_emu_pipeline_begin(emu, 1, s3, err, sizeof err) == 0);
    wd_emu_pipeline_switch(emu, 0);
    step(emu, 0, 0, &r);
    CHECK_NEAR(r.dev[0].queue_s, (T + b + d + c) - (s3[0] + b + d), 1e-15);
    CHECK(r.dev[0].queue_ahead == 1);
    wd_emu_pipeline_end(emu);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* 20 micro-batches at once on one slow device: every job arrives before the
 * first ends, so they run back to back and job k has all k before it ahead:
 * more busy intervals than the first 16 slots hold are all kept. */
static void test_many_jobs(void) {
    wd_scenario sc;
    char err[256];
    double b, d, c, u;
    wd_emu *emu = make_slow(&sc, &b, &d, &c, &u);
    enum { N = 20 };
    double s0[N] = {0};
    CHECK(wd_emu_pipeline_begin(emu, N, s0, err, sizeof err) == 0);
    wd_emu_step_result r;
    double first = 0;
    for (int k = 0; k < N; k++) {
        wd_emu_pipeline_switch(emu, k);
        step(emu, 0, 0, &r);
        double arrive = r.t_start + r.t_bs + r.dev[0].t_dl;
        if (k == 0) first = arrive;
        CHECKF(arrive < first + c, "job %d arrives after the first ends", k);
        CHECK_NEAR(arrive + r.dev[0].queue_s, first + k * c, 1e-12);
        CHECKF(r.dev[0].queue_ahead == k, "job %d: %d ahead", k, r.dev[0].queue_ahead);
    }
    wd_emu_pipeline_end(emu);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

int main(void) {
    test_one_device();
    test_band_shared();
    test_one_is_sync();
    test_across_steps();
    test_device_gap();
    test_many_jobs();
    return wd_test_finish("test_emu_pipeline");
}
