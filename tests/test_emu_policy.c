/* Policies on hand-built cases: ties, unreachable experts, all devices
 * down, the k = 1 floor, gamma never reached, the batch rule of wdmoe;
 * invariants on random inputs for every registered policy. */
#include "emulation/emulation.h"
#include "tests/test_util.h"

#define E 4

typedef struct {
    int n[8], ex[8 * E];
    float w[8 * E];
    double scratch[64];
} out_t;

static const double *energy_in; /* io.energy of the next run() (NULL: none) */

static void run(const char *name, const wd_policy_params *p, int n_tokens, int k,
                const float *probs, const double *tau, const unsigned char *avail, out_t *o) {
    const wd_policy *pol = wd_policy_find(name);
    CHECKF(pol != NULL, "policy %s", name);
    wd_policy_io io = {n_tokens, E, k,      probs,      tau,      avail,
                       o->n,     o->ex, o->w, o->scratch, energy_in, NULL};
    CHECK(pol->select(p, &io) == 0);
}

/* token t chose exactly the listed experts (in order) */
#define expect(o, t, n, e0, e1) expect_(o, t, n, e0, e1, __LINE__)
static void expect_(const out_t *o, int t, int n, int e0, int e1, int line) {
    CHECKF(o->n[t] == n, "line %d token %d: n %d, want %d", line, t, o->n[t], n);
    if (n > 0 && o->n[t] > 0)
        CHECKF(o->ex[t * E] == e0, "token %d: first %d, want %d", t, o->ex[t * E], e0);
    if (n > 1 && o->n[t] > 1)
        CHECKF(o->ex[t * E + 1] == e1, "token %d: second %d, want %d", t, o->ex[t * E + 1], e1);
}

static const unsigned char all[E] = {1, 1, 1, 1};
static const double flat[E] = {1, 1, 1, 1};

static void test_topk(wd_policy_params *p) {
    out_t o;
    float pr[E] = {0.1f, 0.4f, 0.3f, 0.2f};
    run("topk", p, 1, 2, pr, flat, all, &o);
    expect(&o, 0, 2, 1, 2);
    CHECK_NEAR(o.w[0], 0.4 / 0.7, 1e-6);
    CHECK_NEAR(o.w[1], 0.3 / 0.7, 1e-6);
    float tie[E] = {0.25f, 0.25f, 0.25f, 0.25f};
    run("topk", p, 1, 2, tie, flat, all, &o);
    expect(&o, 0, 2, 0, 1); /* ties: lower id */
    unsigned char one_down[E] = {1, 0, 1, 1}, both_down[E] = {1, 0, 0, 1}, none[E] = {0};
    /* outage: an unreachable expert of the top-k is replaced by the next most
       probable reachable one, so top-k stays k */
    run("topk", p, 1, 2, pr, flat, one_down, &o);
    expect(&o, 0, 2, 2, 3);
    CHECK_NEAR(o.w[0], 0.3 / 0.5, 1e-6);
    CHECK_NEAR(o.w[1], 0.2 / 0.5, 1e-6);
    run("topk", p, 1, 2, pr, flat, both_down, &o);
    expect(&o, 0, 2, 3, 0); /* both replaced: the two most probable reachable */
    unsigned char one_left[E] = {0, 0, 1, 0};
    run("topk", p, 1, 2, pr, flat, one_left, &o);
    expect(&o, 0, 1, 2, -1); /* fewer reachable than k: all of them */
    CHECK_NEAR(o.w[0], 1.0, 1e-7);
    run("topk", p, 1, 2, pr, flat, none, &o);
    expect(&o, 0, 0, -1, -1); /* all devices down: no expert */
    run("topk", p, 1, 4, pr, flat, all, &o);
    CHECK(o.n[0] == 4 && o.ex[0] == 1 && o.ex[1] == 2 && o.ex[2] == 3 && o.ex[3] == 0);
}

static void test_wdmoe(wd_policy_params *p) {
    out_t o;
    /* one token, k = 2: drop the second exactly when (p1/t1) / (p2/t2) > gamma / (2 - gamma) */
    double thr = p->gamma / (2 - p->gamma);
    for (int side = -1; side <= 1; side += 2) {
        double ratio = thr * (1 + side * 0.01);
        float pr[E] = {0.6f, 0.4f, 0, 0};
        double tau[E] = {1, ratio * 0.4 / 0.6, 1, 1}; /* (0.6/1) / (0.4/tau1) = ratio */
        run("wdmoe", p, 1, 2, pr, tau, all, &o);
        if (side > 0)
            expect(&o, 0, 1, 0, -1);
        else
            expect(&o, 0, 2, 0, 1);
    }
    float pr[E] = {0.6f, 0.4f, 0, 0};
    double slow_top[E] = {3, 1, 1, 1}; /* dropping the fast one lowers WLR: keep */
    run("wdmoe", p, 1, 2, pr, slow_top, all, &o);
    expect(&o, 0, 2, 0, 1);
    float tie[E] = {0.5f, 0.5f, 0, 0};
    double t2[E] = {1, 10, 1, 1};
    run("wdmoe", p, 1, 2, tie, t2, all, &o);
    expect(&o, 0, 1, 0, -1);
    CHECK_NEAR(o.w[0], 1.0, 1e-7);
    /* gamma never reached: top-k stays */
    wd_policy_params g = *p;
    g.gamma = 10;
    run("wdmoe", &g, 1, 2, tie, t2, all, &o);
    expect(&o, 0, 2, 0, 1);
    /* k = 1 floor: nothing to drop */
    run("wdmoe", p, 1, 1, tie, t2, all, &o);
    expect(&o, 0, 1, 0, -1);
    unsigned char one_down[E] = {1, 0, 1, 1}, none[E] = {0};
    run("wdmoe", p, 1, 2, tie, t2, one_down, &o);
    expect(&o, 0, 1, 0, -1);
    run("wdmoe", p, 1, 2, tie, t2, none, &o);
    expect(&o, 0, 0, -1, -1);
    /* batch: at theta = alpha only token 0 (cosine 0.12) drops, and that is
     * enough, so token 1 (cosine 0.98, which alone would drop) keeps both */
    float b[2 * E] = {0.9f, 0.1f, 0, 0, 0, 0, 0.6f, 0.4f};
    double tb[E] = {0.1, 10, 1, 1};
    run("wdmoe", p, 2, 2, b, tb, all, &o);
    expect(&o, 0, 1, 0, -1);
    expect(&o, 1, 2, 2, 3);
    run("wdmoe", p, 1, 2, b + E, tb, all, &o);
    expect(&o, 0, 1, 2, -1);
}

/* wdmoe-straggler: drops only an expert that sets the wait. */
static void test_wdmoe_straggler(wd_policy_params *p) {
    out_t o;
    float tie[E] = {0.5f, 0.5f, 0, 0};
    double slow_second[E] = {1, 10, 1, 1}, fast_second[E] = {10, 1, 1, 1};
    run("wdmoe", p, 1, 2, tie, slow_second, all, &o);
    expect(&o, 0, 1, 0, -1);
    run("wdmoe-straggler", p, 1, 2, tie, slow_second, all, &o);
    expect(&o, 0, 1, 0, -1); /* expert 1 is the straggler: dropped as by wdmoe */
    /* the second expert is faster than the first: wdmoe drops it when p/tau says
       so (0.9/1 vs 0.1/0.2: ratio 1.8 > gamma / (2 - gamma)); the variant keeps it */
    float skew[E] = {0.9f, 0.1f, 0, 0};
    double faster[E] = {1, 0.2, 1, 1};
    run("wdmoe", p, 1, 2, skew, faster, all, &o);
    expect(&o, 0, 1, 0, -1);
    run("wdmoe-straggler", p, 1, 2, skew, faster, all, &o);
    expect(&o, 0, 2, 0, 1);
    /* batch: token 1's second expert (3) is the slowest of the step: it may drop;
       token 0's second (1) is not */
    float b[2 * E] = {0.5f, 0.5f, 0, 0, 0, 0, 0.5f, 0.5f};
    double tb[E] = {1, 5, 1, 10};
    run("wdmoe-straggler", p, 2, 2, b, tb, all, &o);
    expect(&o, 0, 2, 0, 1);
    expect(&o, 1, 1, 2, -1);
    run("wdmoe-straggler", p, 1, 2, tie, fast_second, all, &o);
    expect(&o, 0, 2, 0, 1); /* the less probable (1) is the fast one: kept */
}

static void test_wlr_drop(wd_policy_params *p) {
    out_t o;
    float pr[E] = {0.8f, 0.2f, 0, 0};
    double t1[E] = {1, 2, 1, 1}, t2[E] = {2, 1, 1, 1};
    run("wlr-drop", p, 1, 2, pr, t1, all, &o);
    expect(&o, 0, 1, 0, -1); /* low weight, lowest p/tau, slowest: dropped */
    run("wlr-drop", p, 1, 2, pr, t2, all, &o);
    expect(&o, 0, 2, 0, 1); /* dropping it would not shorten the wait */
    run("wlr-drop", p, 1, 2, pr, flat, all, &o);
    expect(&o, 0, 2, 0, 1); /* tie in tau: not shorter either */
    float even[E] = {0.6f, 0.4f, 0, 0};
    double t3[E] = {1, 5, 1, 1};
    run("wlr-drop", p, 1, 2, even, t3, all, &o);
    expect(&o, 0, 2, 0, 1); /* weight 0.4 >= theta */
    run("wlr-drop", p, 1, 1, pr, t1, all, &o);
    expect(&o, 0, 1, 0, -1);
}

static void test_dynamic(wd_policy_params *p) {
    out_t o;
    float a[E] = {0.8f, 0.2f, 0, 0}, b[E] = {0.6f, 0.4f, 0, 0}, c[E] = {0.4f, 0.3f, 0.2f, 0.1f};
    run("dynamic", p, 1, 2, a, flat, all, &o);
    expect(&o, 0, 1, 0, -1);
    run("dynamic", p, 1, 2, b, flat, all, &o);
    expect(&o, 0, 2, 0, 1);
    run("dynamic", p, 1, 4, c, flat, all, &o);
    expect(&o, 0, 2, 0, 1);
    CHECK_NEAR(o.w[0], 4.0 / 7, 1e-6);
    wd_policy_params hi = *p;
    hi.theta = 0.95; /* floor: the most probable stays */
    run("dynamic", &hi, 1, 4, c, flat, all, &o);
    expect(&o, 0, 1, 0, -1);
}

static void test_fastest(wd_policy_params *p) {
    out_t o;
    float c[E] = {0.4f, 0.3f, 0.2f, 0.1f};
    double tau[E] = {5, 1, 2, 0.5};
    wd_policy_params q = *p;
    q.m = 4;
    run("fastest", &q, 1, 2, c, tau, all, &o);
    expect(&o, 0, 2, 1, 3);
    CHECK_NEAR(o.w[0], 0.75, 1e-6);
    q.m = 2;
    run("fastest", &q, 1, 2, c, tau, all, &o);
    expect(&o, 0, 2, 0, 1);
    q.m = 4;
    run("fastest", &q, 1, 2, c, flat, all, &o);
    expect(&o, 0, 2, 0, 1); /* ties in tau: the more probable */
    unsigned char d3[E] = {1, 1, 1, 0}, none[E] = {0};
    run("fastest", &q, 1, 2, c, tau, d3, &o);
    expect(&o, 0, 2, 1, 2);
    run("fastest", &q, 1, 2, c, tau, none, &o);
    expect(&o, 0, 0, -1, -1);
    q.m = 0; /* default 2k = 4 */
    run("fastest", &q, 1, 2, c, tau, all, &o);
    expect(&o, 0, 2, 1, 3);
}

static void test_invariants(wd_policy_params *p) {
    unsigned s = 12345;
    for (int trial = 0; trial < 2000; trial++) {
        float pr[8 * E];
        double tau[E];
        unsigned char av[E];
        int T = 1 + trial % 8, k = 1 + trial % E, any = 0;
        for (int i = 0; i < T * E; i++)
            s = s * 1664525u + 1013904223u, pr[i] = (s >> 9) / 8388608.0f;
        for (int t = 0; t < T; t++) {
            float sum = 0;
            for (int e = 0; e < E; e++) sum += pr[t * E + e];
            for (int e = 0; e < E; e++) pr[t * E + e] /= sum;
        }
        for (int e = 0; e < E; e++) {
            s = s * 1664525u + 1013904223u;
            av[e] = (s >> 20) % 5 != 0;
            any |= av[e];
            tau[e] = av[e] ? 0.001 + (s >> 12) % 1000 * 1e-4 : INFINITY;
        }
        for (int i = 0; i < wd_policy_count(); i++) {
            out_t o;
            run(wd_policy_at(i)->name, p, T, k, pr, tau, av, &o);
            int n_av = 0;
            for (int e = 0; e < E; e++) n_av += av[e];
            for (int t = 0; t < T && i == 0; t++) /* topk: k stays k while k are reachable */
                CHECK(o.n[t] == (k < n_av ? k : n_av));
            for (int t = 0; t < T; t++) {
                CHECK(o.n[t] >= (any ? 1 : 0) && o.n[t] <= k);
                double ws = 0;
                for (int j = 0; j < o.n[t]; j++) {
                    int e = o.ex[t * E + j];
                    CHECK(e >= 0 && e < E && av[e]);
                    if (j) CHECK(pr[t * E + e] <= pr[t * E + o.ex[t * E + j - 1]]);
                    for (int q = 0; q < j; q++) CHECK(o.ex[t * E + q] != e);
                    ws += o.w[t * E + j];
                }
                if (o.n[t]) CHECK_NEAR(ws, 1.0, 1e-5);
            }
        }
    }
}

/* Joint selection + allocation through the emulator gives a valid selection. */
static void test_joint(void) {
    char err[512];
    wd_scenario sc;
    CHECK(wd_scenario_default(&sc, 4, err, sizeof err) == 0);
    sc.alloc = WD_ALLOC_JOINT;
    snprintf(sc.policy, sizeof sc.policy, "wdmoe");
    wd_emu_shape sh = {256, 512, 2, 4, 2, 2.0, 0, 0, 0, 0, 0};
    wd_emu *emu;
    CHECK(wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0);
    float pr[3 * E] = {0.5f, 0.3f, 0.1f, 0.1f, 0.1f, 0.1f, 0.2f, 0.6f, 0.25f, 0.25f, 0.25f, 0.25f};
    int n[3], ex[3 * E];
    float w[3 * E];
    for (int l = 0; l < 2; l++) {
        CHECKF(wd_emu_select(emu, 3, pr, n, ex, w, err, sizeof err) == 0, "%s", err);
        for (int t = 0; t < 3; t++) CHECK(n[t] >= 1 && n[t] <= 2);
        CHECKF(wd_emu_step(emu, l, 3, n, ex, NULL, err, sizeof err) == 0, "%s", err);
    }
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

/* energy: drop the highest E/p expert while the kept top-k mass >= quality */
static void test_energy(wd_policy_params *p) {
    out_t o;
    float pr[E] = {0.1f, 0.5f, 0.3f, 0.1f};
    double en[E] = {1, 1, 4, 1}; /* E/p: expert 1: 2, expert 2: 13.3 */
    energy_in = NULL;            /* no estimates: top-k */
    run("energy", p, 1, 2, pr, flat, all, &o);
    expect(&o, 0, 2, 1, 2);
    energy_in = en;
    p->quality = 0.6; /* 0.5 / 0.8 = 0.625 >= 0.6: expert 2 goes */
    run("energy", p, 1, 2, pr, flat, all, &o);
    expect(&o, 0, 1, 1, -1);
    CHECK(o.w[0] == 1.0f);
    p->quality = 0.7; /* 0.625 < 0.7: keeps both */
    run("energy", p, 1, 2, pr, flat, all, &o);
    expect(&o, 0, 2, 1, 2);
    en[1] = 100, en[2] = 1; /* now expert 1 has the highest E/p (200): the only drop left */
    p->quality = 0.3;       /* 0.3 / 0.8 = 0.375 >= 0.3 */
    run("energy", p, 1, 2, pr, flat, all, &o);
    expect(&o, 0, 1, 2, -1);
    energy_in = NULL;
    wd_policy_defaults(p);
}

int main(void) {
    wd_policy_params p;
    wd_policy_defaults(&p);
    CHECK(wd_policy_find("nope") == NULL);
    CHECK(wd_policy_count() == 7);
    test_energy(&p);
    test_topk(&p);
    test_wdmoe(&p);
    test_wdmoe_straggler(&p);
    test_wlr_drop(&p);
    test_dynamic(&p);
    test_fastest(&p);
    test_invariants(&p);
    test_joint();
    return wd_test_finish("test_emu_policy");
}
