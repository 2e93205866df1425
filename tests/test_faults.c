/* Device failures from the scenario, end to end through the runtime: the
 * real stories260k MoE (4 identical experts, top-2: any routing gives the
 * dense model's output, so the text must not change however the policy
 * routes) decodes through the BS scheduler while a device is unreachable
 * for a while, unreachable for good from mid-run, has a link at rate 0, runs
 * slower than its profile says, or all devices are down. Each run must
 * complete; the summary's fault counters are checked against counts made
 * here from the router probabilities and the selections themselves, and the
 * latency against the fault-free run. */
#include <json-c/json.h>

#include "host/host.h"
#include "tests/test_util.h"

#define MODEL WD_SOURCE_DIR "/weights/models/stories260k/moe4-top2"
#define STEPS 48

/* 4 phones, one expert each, constant links: 100 / 50 Mbit/s, 1 ms latency. */
static const char *BASE =
    "{\"name\": \"faults\", \"seed\": 1, \"device_count\": 4, \"device_defaults\": {"
    "\"profile\": \"phone\", \"downlink\": {\"model\": \"constant\", \"rate_mbps\": 100, "
    "\"latency_s\": 0.001}, \"uplink\": {\"model\": \"constant\", \"rate_mbps\": 50, "
    "\"latency_s\": 0.001}}, \"policy\": %s, \"faults\": [%s]}";

/* Wraps the scheduler's select hook: before each layer step, the clock (the
 * prediction time), after it the selection. */
typedef struct {
    wd_moe_hooks inner;
    wd_emu *emu;
    int decoding, top_k, n_experts, n_layers;
    double from, to;   /* window where `watched` is unreachable (or slow) */
    int watched;       /* expert (= device) under the fault, -1: all */
    int dead_chosen;   /* selections of an unreachable expert */
    long exp_rerouted; /* decode tokens whose top-k held an unreachable expert in some layer */
    long exp_dropped;
    long chose_watched_tokens, chose_watched_steps;
    int tok_flag_r, tok_flag_d, tok_flag_w;
    double first_use; /* clock before the first decode step that chose `watched` (-1: none) */
} spy;

/* Is e (any expert when e < 0) in the model's own top-k of p? (ties: lower id) */
static int topk_has(const float *p, int E, int k, int e) {
    for (int i = 0; i < E; i++) {
        if (e >= 0 && i != e) continue;
        int above = 0; /* experts ranked before i */
        for (int j = 0; j < E; j++) above += p[j] > p[i] || (p[j] == p[i] && j < i);
        if (above < k) return 1;
    }
    return 0;
}

static int spy_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    spy *s = ctx;
    double t = wd_emu_time(s->emu);
    int down = t >= s->from && t < s->to;
    int rc = s->inner.select(s->inner.ctx, layer, pos0, probs, sel);
    if (rc) return rc;
    if (layer == 0) s->tok_flag_r = s->tok_flag_d = s->tok_flag_w = 0;
    for (int j = 0; j < sel->n[0]; j++) {
        int e = sel->expert[j];
        if (down && (s->watched < 0 || e == s->watched)) s->dead_chosen++;
        if (e == s->watched) s->tok_flag_w = 1;
    }
    if (down && topk_has(probs, s->n_experts, s->top_k, s->watched)) s->tok_flag_r = 1;
    if (sel->n[0] == 0) s->tok_flag_d = 1;
    if (s->decoding) {
        for (int j = 0; j < sel->n[0]; j++)
            if (sel->expert[j] == s->watched) {
                s->chose_watched_steps++;
                if (s->first_use < 0) s->first_use = t;
                break;
            }
        if (layer == s->n_layers - 1) {
            s->exp_rerouted += s->tok_flag_r;
            s->exp_dropped += s->tok_flag_d;
            s->chose_watched_tokens += s->tok_flag_w;
        }
    }
    return 0;
}

typedef struct {
    int ok, tokens[STEPS + 1];
    wd_emu_summary sum;
    spy spy;
    char json[4096];
} run_result;

static void run(const wd_model *m, wd_pool *pool, const char *policy, const char *faults,
                double from, double to, int watched, run_result *r) {
    memset(r, 0, sizeof *r);
    char text[2048], err[1024];
    snprintf(text, sizeof text, BASE, policy, faults);
    wd_scenario sc;
    if (wd_scenario_parse(&sc, text, "faults.json", err, sizeof err)) {
        CHECKF(0, "%s", err);
        return;
    }
    wd_scheduler *k = NULL;
    wd_session *s = wd_session_create(m, 128, pool);
    CHECK(s != NULL);
    if (!s || wd_scheduler_create(&k, m, &sc, err, sizeof err)) {
        CHECKF(0, "%s", err);
        wd_session_free(s);
        wd_scenario_free(&sc);
        return;
    }
    spy *sp = &r->spy;
    wd_scheduler_hooks(k, &sp->inner);
    sp->emu = wd_scheduler_emu(k);
    sp->from = from, sp->to = to, sp->watched = watched;
    sp->first_use = -1;
    sp->top_k = m->cfg.top_k, sp->n_experts = m->cfg.n_experts, sp->n_layers = m->cfg.n_layers;
    wd_moe_hooks h = {sp, spy_select, NULL};
    wd_session_set_hooks(s, &h);
    float *logits = malloc(m->cfg.vocab * sizeof(float));
    int tok = m->cfg.bos_id, rc = 0;
    r->tokens[0] = tok;
    rc = wd_forward(s, &tok, 1, logits, 0, err, sizeof err);
    wd_emu_reset_stats(sp->emu);
    sp->decoding = 1;
    for (int i = 0; i < STEPS && !rc; i++) {
        int best = 0;
        for (int v = 1; v < m->cfg.vocab; v++)
            if (logits[v] > logits[best]) best = v;
        r->tokens[i + 1] = tok = best;
        rc = wd_forward(s, &tok, 1, logits, 0, err, sizeof err);
    }
    CHECKF(rc == 0, "%s: %s", faults, err);
    r->ok = rc == 0;
    wd_emu_summarize(sp->emu, &r->sum);
    json_object *j = wd_emu_summary_json(&r->sum);
    snprintf(r->json, sizeof r->json, "%s", json_object_to_json_string(j));
    json_object_put(j);
    free(logits);
    wd_scheduler_free(k);
    wd_session_free(s);
    wd_scenario_free(&sc);
}

int main(void) {
    char err[1024];
    wd_model *m = NULL;
    if (!wd_test_file_exists(MODEL "/model.safetensors")) WD_TEST_SKIP("%s absent", MODEL);
    CHECKF(wd_model_load(&m, MODEL, err, sizeof err) == 0, "%s", err);
    if (!m) return wd_test_finish("test_faults");
    wd_pool *pool = wd_pool_create(1);
    static run_result base, r;

    /* 0. no faults: nothing counted, the reference text and latency */
    run(m, pool, "\"topk\"", "", 0, 0, 0, &base);
    const wd_emu_summary *b = &base.sum;
    CHECK(base.ok && b->tokens == STEPS);
    CHECK(b->tokens_rerouted == 0 && b->tokens_dropped == 0 && b->tokens_slowed == 0 &&
          b->tokens_link_fault == 0 && b->n_faults == 0);
    double T = b->virtual_time_s; /* the decode's span of virtual time */
    CHECK(T > 0);
    printf("  no faults: %ld tokens, mean %.3f ms, virtual %.3f s\n", b->tokens, b->decode.mean_s * 1e3, T);

    /* 1. device 0 unreachable in the middle third of the run */
    double t1 = T / 3, t2 = 2 * T / 3;
    char f[512];
    snprintf(f, sizeof f, "{\"device\": 0, \"kind\": \"down\", \"from_s\": %.9g, \"to_s\": %.9g}",
             t1, t2);
    run(m, pool, "\"topk\"", f, t1, t2, 0, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens)); /* same text: routed around */
    CHECKF(r.spy.dead_chosen == 0, "%d selections of the down device", r.spy.dead_chosen);
    CHECKF(r.sum.tokens_rerouted == r.spy.exp_rerouted && r.spy.exp_rerouted > 0,
           "rerouted %ld, counted here %ld", r.sum.tokens_rerouted, r.spy.exp_rerouted);
    CHECK(r.sum.tokens_fallback == 0 && r.sum.tokens_dropped == 0);
    CHECK(r.sum.steps_rerouted > 0 && r.sum.steps_rerouted <= r.sum.steps);
    CHECK(r.sum.n_faults == 1);
    CHECK(strstr(r.json, "\"tokens_rerouted\":") != NULL);
    printf("  down [%.3f, %.3f): rerouted %ld tokens (%ld steps), on a faulty link %ld, mean %.3f ms\n", t1,
           t2, r.sum.tokens_rerouted, r.sum.steps_rerouted, r.sum.tokens_link_fault,
           r.sum.decode.mean_s * 1e3);

    /* 2. device 1 down for good from mid-run (to_s = inf): completes, never chosen after */
    snprintf(f, sizeof f, "{\"device\": 1, \"kind\": \"down\", \"from_s\": %.9g}", T / 2);
    run(m, pool, "\"topk\"", f, T / 2, INFINITY, 1, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens));
    CHECK(r.spy.dead_chosen == 0);
    CHECK(r.sum.tokens_rerouted >= r.spy.exp_rerouted && r.spy.exp_rerouted > 0);
    printf("  down from %.3f s: rerouted %ld tokens\n", T / 2, r.sum.tokens_rerouted);

    /* 3. device 2's uplink at rate 0 from the start: unreachable, never chosen */
    run(m, pool, "\"wdmoe\"",
        "{\"device\": 2, \"kind\": \"link\", \"direction\": \"uplink\", \"scale\": 0}", 0,
        INFINITY, 2, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens));
    CHECK(r.spy.dead_chosen == 0 && r.spy.chose_watched_steps == 0);
    CHECKF(r.sum.tokens_rerouted == r.spy.exp_rerouted && r.spy.exp_rerouted > 0,
           "rerouted %ld, counted here %ld", r.sum.tokens_rerouted, r.spy.exp_rerouted);
    printf("  uplink of device 2 at rate 0: rerouted %ld tokens\n", r.sum.tokens_rerouted);

    /* 4. device 3 ten times slower than its profile: top-k keeps using it (slowed
     * tokens = tokens that chose it, latency up); fastest routes around it */
    const char *slow = "{\"device\": 3, \"kind\": \"slow\", \"factor\": 10}";
    run(m, pool, "\"topk\"", slow, INFINITY, INFINITY, 3, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens));
    CHECKF(r.sum.tokens_slowed == r.spy.chose_watched_tokens && r.sum.tokens_slowed > 0,
           "slowed %ld, counted here %ld", r.sum.tokens_slowed, r.spy.chose_watched_tokens);
    CHECKF(r.sum.steps_slowed == r.spy.chose_watched_steps, "slowed steps %ld vs %ld",
           r.sum.steps_slowed, r.spy.chose_watched_steps);
    CHECK(r.sum.tokens_rerouted == 0);
    CHECK(r.sum.decode.mean_s > b->decode.mean_s && r.sum.decode.comp_s > b->decode.comp_s);
    double slow_topk = r.sum.decode.mean_s;
    printf("  device 3 slow x10, topk: slowed %ld tokens, mean %.3f ms (no fault %.3f)\n",
           r.sum.tokens_slowed, r.sum.decode.mean_s * 1e3, b->decode.mean_s * 1e3);
    run(m, pool, "{\"name\": \"fastest\", \"m\": 4}", slow, INFINITY, INFINITY, 3, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens));
    CHECK(r.spy.chose_watched_steps == 0 && r.sum.tokens_slowed == 0);
    CHECK(r.sum.decode.mean_s < slow_topk);
    printf("  device 3 slow x10, fastest: slowed %ld tokens, mean %.3f ms\n", r.sum.tokens_slowed,
           r.sum.decode.mean_s * 1e3);

    /* 5. device 0's downlink at a tenth of its rate: still chosen by top-k, each
     * token that uses it counted, latency up */
    run(m, pool, "\"topk\"",
        "{\"device\": 0, \"kind\": \"link\", \"direction\": \"downlink\", \"scale\": 0.1}", 0,
        0, 0, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens));
    CHECKF(r.sum.tokens_link_fault == r.spy.chose_watched_tokens && r.sum.tokens_link_fault > 0,
           "link_fault %ld, counted here %ld", r.sum.tokens_link_fault, r.spy.chose_watched_tokens);
    CHECK(r.sum.steps_link_fault == r.spy.chose_watched_steps);
    CHECK(r.sum.decode.mean_s > b->decode.mean_s && r.sum.decode.dl_s > b->decode.dl_s);
    printf("  downlink of device 0 at 10%%: %ld tokens on it, mean %.3f ms\n",
           r.sum.tokens_link_fault, r.sum.decode.mean_s * 1e3);

    /* 6. a device goes down just after a step chose it: its transfer waits for
     * the end of the 50 ms window (the step's latency shows it), later steps
     * inside the window avoid it */
    run(m, pool, "\"topk\"", "", 0, 0, 0, &base);
    double t_use = base.spy.first_use;
    CHECK(t_use >= 0);
    double w0 = t_use + 1e-7, w1 = w0 + 0.05; /* during that step's BS compute */
    snprintf(f, sizeof f, "{\"device\": 0, \"kind\": \"down\", \"from_s\": %.12g, \"to_s\": %.12g}",
             w0, w1);
    run(m, pool, "\"topk\"", f, w0, w1, 0, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(!memcmp(r.tokens, base.tokens, sizeof r.tokens));
    CHECK(r.spy.dead_chosen == 0);
    CHECKF(r.sum.decode.max_s >= 0.05 && r.sum.decode.max_s < 0.05 + 2 * b->decode.max_s, "max %.6f s", r.sum.decode.max_s);
    CHECK(r.sum.decode.mean_s > b->decode.mean_s);
    CHECK(r.sum.tokens_link_fault >= 1 && r.sum.steps_link_fault >= 1);
    printf("  device 0 down for 50 ms while in use: max latency %.3f ms (no fault %.3f), "
           "%ld tokens waited\n", r.sum.decode.max_s * 1e3, b->decode.max_s * 1e3, r.sum.tokens_link_fault);

    /* 7. every device down for a while: tokens in the window are dropped */
    snprintf(f, sizeof f,
             "{\"device\": 0, \"kind\": \"down\", \"from_s\": %.9g, \"to_s\": %.9g},"
             "{\"device\": 1, \"kind\": \"down\", \"from_s\": %.9g, \"to_s\": %.9g},"
             "{\"device\": 2, \"kind\": \"down\", \"from_s\": %.9g, \"to_s\": %.9g},"
             "{\"device\": 3, \"kind\": \"down\", \"from_s\": %.9g, \"to_s\": %.9g}",
             t1, t2, t1, t2, t1, t2, t1, t2);
    run(m, pool, "\"topk\"", f, t1, t2, -1, &r);
    CHECK(r.ok && r.sum.tokens == STEPS);
    CHECK(r.spy.dead_chosen == 0);
    CHECKF(r.sum.tokens_dropped == r.spy.exp_dropped && r.sum.tokens_dropped > 0,
           "dropped %ld, counted here %ld", r.sum.tokens_dropped, r.spy.exp_dropped);
    CHECK(r.sum.tokens_fallback == 0);
    printf("  all devices down [%.3f, %.3f): dropped %ld tokens\n", t1, t2, r.sum.tokens_dropped);

    wd_pool_destroy(pool);
    wd_model_free(m);
    return wd_test_finish("test_faults");
}
