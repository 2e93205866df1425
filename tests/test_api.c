/* libwdmoe's C API (emulation/wdmoe.h): a replay equals the emulator driven
 * directly (as `wdmoe replay` drives it), a caller's policy that reimplements
 * top-k equals the built-in one (with a device down, so rerouting counts
 * too), a one-expert policy gives exactly one expert per token, per-token
 * latencies agree with the summary, .wdpr round trips, and every bad input
 * (scenario, probabilities, a policy's choice) is one message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/emulation.h"
#include "emulation/wdmoe.h"
#include "test_util.h"

#define T 40
#define L 4
#define E 8

static float probs[T * L * E];

static void make_probs(void) {
    uint64_t s = 12345;
    for (int r = 0; r < T * L; r++) {
        double sum = 0, v[E];
        for (int e = 0; e < E; e++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            v[e] = exp(4.0 * ((double)(s >> 11) / 9007199254740992.0));
            sum += v[e];
        }
        for (int e = 0; e < E; e++) probs[r * E + e] = (float)(v[e] / sum);
    }
}

/* The emulator driven directly, as host/cmd_replay.c does. */
static void direct(const char *scen_path, const char *policy, wd_emu_summary *sum) {
    wd_scenario sc;
    char err[512];
    CHECKF(wd_scenario_load(&sc, scen_path, err, sizeof err) == 0, "%s", err);
    wd_probs pr = {L, E, 2, 4096, 14336, 0, 0, 0, 16, T, probs, NULL};
    wd_emu_shape shape = wd_probs_shape(&pr);
    wd_emu *emu = NULL;
    CHECKF(wd_emu_create(&emu, &sc, &shape, err, sizeof err) == 0, "%s", err);
    CHECK(wd_emu_set_policy(emu, policy, &sc.params, err, sizeof err) == 0);
    int n[1], ex[E];
    float w[E];
    for (int t = 0; t < T; t++)
        for (int l = 0; l < L; l++) {
            CHECK(wd_emu_select(emu, 1, probs + ((size_t)t * L + l) * E, n, ex, w, err,
                                sizeof err) == 0);
            CHECK(wd_emu_step(emu, l, 1, n, ex, NULL, err, sizeof err) == 0);
        }
    wd_emu_summarize(emu, sum);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
}

static double get(const wdmoe_result *r, const char *name) {
    double v = NAN;
    CHECKF(wdmoe_result_get(r, name, &v) == 0, "%s missing", name);
    return v;
}

/* ---- policies written by a caller ---- */
typedef struct {
    int calls, mode; /* 0 top-k, 1 best one, 2 unreachable, 3 out of range, 4 twice, 5 fail */
} pol_state;

static int my_policy(void *user, int layer, int n_tokens, int n_experts, int top_k,
                     const float *p, const double *tau, const unsigned char *avail, int *n,
                     int *expert) {
    pol_state *st = user;
    st->calls++;
    if (st->mode == 5) return 3;
    for (int t = 0; t < n_tokens; t++) {
        const float *q = p + (size_t)t * n_experts;
        int *ex = expert + (size_t)t * n_experts, k = 0;
        int want = st->mode == 1 ? 1 : top_k, top[64];
        /* top-k as the built-in policy: the `want` most probable reachable
         * experts (ties: lower id); an unreachable one is replaced by the next */
        for (int j = 0; j < want; j++) {
            int best = -1;
            for (int e = 0; e < n_experts; e++) {
                int used = 0;
                for (int i = 0; i < j; i++) used |= top[i] == e;
                if (!used && avail[e] && (best < 0 || q[e] > q[best])) best = e;
            }
            if (best < 0) break;
            top[j] = best, ex[k++] = best;
        }
        n[t] = k;
        if (st->mode == 2)
            for (int e = 0; e < n_experts; e++)
                if (!avail[e]) ex[0] = e;
        if (st->mode == 3) ex[0] = n_experts + layer;
        if (st->mode == 4 && k > 1) ex[1] = ex[0];
        (void)tau;
    }
    return 0;
}

static const char *down_json =
    "{\"name\": \"down\", \"seed\": 3, \"devices\": ["
    "{\"distance_m\": 60}, {\"distance_m\": 120}, {\"distance_m\": 180}, {\"distance_m\": 240},"
    "{\"distance_m\": 300}, {\"distance_m\": 360}, {\"distance_m\": 420}, {\"distance_m\": 480}],"
    "\"faults\": [{\"device\": 2, \"kind\": \"down\", \"from_s\": 0}],"
    "\"policy\": {\"name\": \"topk\"}}";

int main(void) {
    char err[512], path[1024];
    make_probs();
    CHECK(wdmoe_api_version() == WDMOE_API_VERSION);
    CHECKF(strcmp(wdmoe_version(), "unknown") && strchr(wdmoe_version(), '.'), "version %s",
           wdmoe_version());

    wdmoe_probs *pr = NULL;
    CHECKF(wdmoe_probs_create(&pr, T, L, E, 2, 4096, 14336, probs, err, sizeof err) == 0, "%s",
           err);
    if (!pr) return wd_test_finish("test_api");
    CHECK(wdmoe_probs_dim(pr, "n_tokens") == T && wdmoe_probs_dim(pr, "n_layers") == L &&
          wdmoe_probs_dim(pr, "n_experts") == E && wdmoe_probs_dim(pr, "top_k") == 2 &&
          wdmoe_probs_dim(pr, "hidden") == 4096 && wdmoe_probs_dim(pr, "weight_bits") == 16);
    CHECK(wdmoe_probs_dim(pr, "nosuch") == -1);
    CHECK(!memcmp(wdmoe_probs_data(pr), probs, sizeof probs));

    /* replay == the emulator driven directly, for every built-in policy */
    snprintf(path, sizeof path, "%s/bench/scenarios/paper-cell.json", WD_SOURCE_DIR);
    wdmoe_scenario *sc = NULL;
    CHECKF(wdmoe_scenario_load(&sc, path, err, sizeof err) == 0, "%s", err);
    if (!sc) return wd_test_finish("test_api");
    CHECK(!strcmp(wdmoe_scenario_name(sc), "paper-cell") && wdmoe_scenario_n_devices(sc) == 8 &&
          !strcmp(wdmoe_scenario_policy(sc), "wdmoe"));
    for (int i = 0; i < wd_policy_count(); i++) {
        const char *pol = wd_policy_at(i)->name;
        wd_emu_summary want;
        direct(path, pol, &want);
        wdmoe_result *r = NULL;
        CHECKF(wdmoe_replay(&r, sc, pr, pol, 0, err, sizeof err) == 0, "%s", err);
        if (!r) continue;
        CHECKF(get(r, "decode.mean_s") == want.decode.mean_s &&
                   get(r, "decode.p99_s") == want.decode.p99_s &&
                   get(r, "decode.experts_per_token") == want.decode.experts_per_token &&
                   get(r, "tokens") == (double)want.tokens,
               "%s: %g vs %g", pol, get(r, "decode.mean_s"), want.decode.mean_s);
        double lat[T + 1], s = 0;
        CHECK(wdmoe_result_latencies(r, NULL, 0) == T);
        CHECK(wdmoe_result_latencies(r, lat, T + 1) == T);
        for (int t = 0; t < T; t++) s += lat[t];
        CHECK_NEAR(s / T, want.decode.mean_s, 1e-12 * want.decode.mean_s);
        char *js = wdmoe_result_json(r);
        char want_pol[64];
        snprintf(want_pol, sizeof want_pol, "\"policy\":\"%s\"", pol);
        CHECKF(js && strstr(js, want_pol) && strstr(js, "\"scenario\":\"paper-cell\"") &&
                   strstr(js, "\"summary\"") && !strstr(js, "\\/"),
               "%s", js ? js : "(null)");
        wdmoe_free(js);
        wdmoe_result_free(r);
    }
    /* NULL policy: the scenario's own (wdmoe); max_tokens */
    wdmoe_result *r = NULL, *r2 = NULL;
    CHECK(wdmoe_replay(&r, sc, pr, NULL, 7, err, sizeof err) == 0);
    CHECK(r && get(r, "tokens") == 7);
    char *js = r ? wdmoe_result_json(r) : NULL;
    CHECK(js && strstr(js, "\"policy\":\"wdmoe\""));
    wdmoe_free(js);
    int k = 0;
    while (r && wdmoe_result_name(r, k)) k++;
    CHECK(k >= 20 && r && !strcmp(wdmoe_result_name(r, 0), "tokens"));
    CHECK(r && wdmoe_result_get(r, "nosuch", &(double){0}) == -1);
    wdmoe_result_free(r);
    CHECK(wdmoe_replay(&r, sc, pr, "nosuch", 0, err, sizeof err) != 0 && !r);
    CHECKF(strstr(err, "unknown policy 'nosuch'"), "%s", err);
    wdmoe_scenario_free(sc);

    /* a caller's top-k == the built-in top-k, with device 2 down (rerouting) */
    CHECKF(wdmoe_scenario_parse(&sc, down_json, "down.json", err, sizeof err) == 0, "%s", err);
    pol_state st = {0, 0};
    CHECKF(wdmoe_replay(&r, sc, pr, "topk", 0, err, sizeof err) == 0, "%s", err);
    CHECKF(wdmoe_replay_fn(&r2, sc, pr, "py-topk", my_policy, &st, 0, err, sizeof err) == 0,
           "%s", err);
    if (r && r2) {
        const char *names[] = {"decode.mean_s",       "decode.p50_s",    "decode.max_s",
                               "decode.downlink_s",   "decode.uplink_s", "decode.experts_per_token",
                               "tokens",              "tokens_rerouted", "steps_rerouted",
                               "decode.experts_replaced"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            CHECKF(get(r, names[i]) == get(r2, names[i]), "%s: %g vs %g", names[i],
                   get(r, names[i]), get(r2, names[i]));
        CHECK(get(r, "tokens_rerouted") > 0);
        CHECK(st.calls >= T * L);
        js = wdmoe_result_json(r2);
        CHECK(js && strstr(js, "\"policy\":\"py-topk\""));
        wdmoe_free(js);
    }
    wdmoe_result_free(r2), r2 = NULL;
    /* one expert per token: exactly 1, and never slower than top-k */
    st.mode = 1;
    CHECK(wdmoe_replay_fn(&r2, sc, pr, "one", my_policy, &st, 0, err, sizeof err) == 0);
    if (r && r2) {
        CHECK(get(r2, "decode.experts_per_token") == 1.0);
        CHECK(get(r2, "decode.mean_s") <= get(r, "decode.mean_s"));
    }
    wdmoe_result_free(r), wdmoe_result_free(r2), r = r2 = NULL;
    /* bad choices: one message naming the policy, the layer and the token */
    const char *want[] = {"", "", "policy bad: layer 0 token 0: expert 2 is unreachable",
                          "policy bad: layer 0 token 0: expert id 8 out of range",
                          "chosen twice", "policy bad failed"};
    for (int m = 2; m <= 5; m++) {
        st.mode = m;
        CHECK(wdmoe_replay_fn(&r, sc, pr, "bad", my_policy, &st, 0, err, sizeof err) != 0 && !r);
        CHECKF(strstr(err, want[m]), "mode %d: %s", m, err);
    }
    CHECK(wdmoe_replay_fn(&r, sc, pr, "x", NULL, NULL, 0, err, sizeof err) != 0);
    CHECK(wdmoe_replay_fn(&r, sc, pr, "x", my_policy, &st, 0, NULL, 0) != 0); /* err NULL */
    wdmoe_scenario_free(sc);

    /* .wdpr round trip */
    char dir[] = "/tmp/wd_test_api_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/p.wdpr", dir);
    CHECKF(wdmoe_probs_save(pr, path, err, sizeof err) == 0, "%s", err);
    wdmoe_probs *pr2 = NULL;
    CHECKF(wdmoe_probs_load(&pr2, path, err, sizeof err) == 0, "%s", err);
    CHECK(pr2 && wdmoe_probs_dim(pr2, "n_tokens") == T && wdmoe_probs_dim(pr2, "ffn") == 14336 &&
          !memcmp(wdmoe_probs_data(pr2), probs, sizeof probs));
    wdmoe_probs_free(pr2);
    remove(path);
    rmdir(dir);

    /* bad input: one message */
    CHECK(wdmoe_scenario_parse(&sc, "{\"devices\": 3}", "b.json", err, sizeof err) != 0 && !sc);
    CHECKF(strstr(err, "b.json") && strstr(err, "devices"), "%s", err);
    CHECK(wdmoe_scenario_load(&sc, "/nonexistent/s.json", err, sizeof err) != 0);
    CHECKF(strstr(err, "/nonexistent/s.json"), "%s", err);
    CHECK(wdmoe_scenario_load(&sc, NULL, err, sizeof err) != 0);
    CHECK(wdmoe_probs_load(&pr2, "/nonexistent/p.wdpr", err, sizeof err) != 0 && !pr2);
    CHECKF(strstr(err, "/nonexistent/p.wdpr: cannot open"), "%s", err);
    float bad[E] = {0.5f, 0.6f};
    CHECK(wdmoe_probs_create(&pr2, 1, 1, E, 2, 64, 128, bad, err, sizeof err) != 0 && !pr2);
    CHECKF(strstr(err, "sum to 1.1"), "%s", err);
    bad[1] = -0.5f;
    CHECK(wdmoe_probs_create(&pr2, 1, 1, E, 2, 64, 128, bad, err, sizeof err) != 0);
    CHECKF(strstr(err, "expert 1: -0.5 is not in [0, 1]"), "%s", err);
    CHECK(wdmoe_probs_create(&pr2, 1, 1, E, 9, 64, 128, probs, err, sizeof err) != 0);
    CHECKF(strstr(err, "bad shape"), "%s", err);
    wdmoe_probs_free(pr);
    return wd_test_finish("test_api");
}
