/* Serving a cell (host/serve.c) on the real stories260k model (sliced into
 * four experts, top-4) over four devices on constant links:
 *  - one user reproduces the single-request path of `wdmoe generate`
 *    exactly (tokens, the emulator's TTFT/TPOT summary, bit for bit);
 *  - two users with identical prompts get identical tokens, every device
 *    call serves both tokens at once and its compute time is the roofline
 *    for 2 tokens (not twice the time of one);
 *  - a KV budget that holds one request admits the others one after another
 *    (they queue, nobody fails) and they produce the solo run's tokens; a
 *    request larger than the whole budget is refused with a message;
 *  - chunked prefill never puts more than the chunk of prompt tokens in a
 *    step; the same seed gives the same run, bit for bit. */
#include <math.h>
#include <string.h>

#include <json-c/json.h>

#include "host/host.h"
#include "test_util.h"

#define MODEL WD_SOURCE_DIR "/weights/models/stories260k/sliced4-top4"

static void cell(wd_scenario *sc) {
    char err[256];
    CHECK(wd_scenario_default(sc, 4, err, sizeof err) == 0);
    for (int d = 0; d < 4; d++)
        for (int k = 0; k < 2; k++) {
            sc->dev[d].link[k].model = WD_LINK_CONSTANT;
            sc->dev[d].link[k].rate_bps = (k ? 20e6 : 50e6) / (d + 1);
            sc->dev[d].link[k].latency_s = 1e-4;
        }
}

static int *encode(const wd_model *m, const char *text, int *n) {
    int *ids = NULL;
    CHECK(wd_tokenizer_encode(m->tok, text, 1, &ids, n) == 0);
    return ids;
}

static char *summary_text(wd_emu *emu) {
    wd_emu_summary s;
    wd_emu_summarize(emu, &s);
    json_object *o = wd_emu_summary_json(&s);
    char *t = strdup(json_object_to_json_string(o));
    json_object_put(o);
    return t;
}

static wd_serve_opts opts(void) {
    wd_serve_opts o = {64, 0, 0, 0.0f, 0.9f, 42, 0, 1};
    return o;
}

/* generate's loop: prefill the prompt, then one decode pass per token but
 * the last; greedy */
static void test_one_user(const wd_model *m, wd_pool *pool, const wd_scenario *sc) {
    char err[512];
    int n_p, steps = 24;
    int *p = encode(m, "Once upon a time, there was a little girl", &n_p);
    wd_scheduler *ka, *kb;
    CHECKF(wd_scheduler_create(&ka, m, sc, err, sizeof err) == 0, "%s", err);
    CHECKF(wd_scheduler_create(&kb, m, sc, err, sizeof err) == 0, "%s", err);
    wd_serve_request rq = {0, steps, n_p, p};
    wd_serve_opts o = opts();
    wd_serve_result r;
    CHECKF(wd_serve_run(m, pool, ka, &rq, 1, &o, &r, err, sizeof err) == 0, "%s", err);
    /* the reference: generate's sequence of calls */
    wd_session *s = wd_session_create(m, 0, pool);
    wd_moe_hooks h;
    wd_scheduler_hooks(kb, &h);
    wd_session_set_hooks(s, &h);
    float *logits = malloc(m->cfg.vocab * sizeof(float));
    int *idx = malloc(m->cfg.vocab * sizeof(int)), out[64], n_out = 0;
    wd_rng rng;
    wd_rng_seed(&rng, 42);
    wd_emu_set_phase(wd_scheduler_emu(kb), WD_PHASE_PREFILL);
    CHECK(wd_forward(s, p, n_p, logits, 0, err, sizeof err) == 0);
    double ttft = wd_emu_time(wd_scheduler_emu(kb));
    wd_emu_set_phase(wd_scheduler_emu(kb), WD_PHASE_DECODE);
    for (int i = 0; i < steps; i++) {
        int t = wd_sample(logits, m->cfg.vocab, 0, 0.9f, &rng, idx);
        out[n_out++] = t;
        if (t == m->cfg.eos_id) break;
        if (i + 1 < steps) CHECK(wd_forward(s, &t, 1, logits, 0, err, sizeof err) == 0);
    }
    CHECK(r.n_users == 1 && r.users[0].n_out == n_out);
    CHECK(memcmp(r.users[0].tokens, out, n_out * sizeof(int)) == 0);
    char *a = summary_text(wd_scheduler_emu(ka)), *b = summary_text(wd_scheduler_emu(kb));
    CHECKF(strcmp(a, b) == 0, "summaries differ:\n%s\n%s", a, b);
    CHECK(r.users[0].ttft_s == ttft); /* bit for bit */
    wd_emu_summary sum;
    wd_emu_summarize(wd_scheduler_emu(kb), &sum);
    CHECK(sum.prefill.samples == 1 && r.users[0].ttft_s == sum.prefill.mean_s);
    CHECK_NEAR(r.users[0].tpot_s, sum.decode.mean_s, 1e-12 * sum.decode.mean_s);
    CHECK(r.makespan_s == wd_emu_time(wd_scheduler_emu(kb)));
    free(a), free(b), free(logits), free(idx), free(p);
    wd_session_free(s);
    wd_serve_result_free(&r);
    wd_scheduler_free(ka);
    wd_scheduler_free(kb);
}

/* the roofline of n tokens through one expert (DESIGN.md, "Compute time") */
static double roofline(const wd_compute_profile *pr, const wd_model *m, int n) {
    double H = m->cfg.hidden, F = m->cfg.ffn, wb = 4; /* F32 weights */
    return wd_compute_time(pr, 6 * H * F * n, 3 * H * F * wb + n * (2 * H + 3 * F) * 4.0);
}

static void test_two_users(const wd_model *m, wd_pool *pool, const wd_scenario *sc) {
    char err[512];
    int n_p;
    int *p = encode(m, "", &n_p); /* BOS only: every step holds exactly two tokens */
    CHECK(n_p == 1);
    wd_scheduler *k;
    CHECKF(wd_scheduler_create(&k, m, sc, err, sizeof err) == 0, "%s", err);
    wd_serve_request rq[2] = {{0, 20, n_p, p}, {0, 20, n_p, p}};
    wd_serve_opts o = opts();
    wd_serve_result r;
    CHECKF(wd_serve_run(m, pool, k, rq, 2, &o, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.users[0].n_out == 20 && r.users[1].n_out == 20);
    CHECK(memcmp(r.users[0].tokens, r.users[1].tokens, 20 * sizeof(int)) == 0);
    CHECK(r.users[0].ttft_s == r.users[1].ttft_s && r.users[0].tpot_s == r.users[1].tpot_s);
    for (long s = 0; s < r.n_timeline; s++) CHECK(r.timeline[s].tokens == 2);
    wd_emu *emu = wd_scheduler_emu(k);
    long calls = 0;
    for (int d = 0; d < 4; d++) {
        wd_emu_device_stats ds;
        CHECK(wd_emu_device_stats_get(emu, d, &ds) == 0);
        CHECKF(ds.tokens == 2 * ds.calls, "device %d: %ld tokens in %ld calls", d, ds.tokens,
               ds.calls);
        double t2 = roofline(&sc->dev[d].profile, m, 2), t1 = roofline(&sc->dev[d].profile, m, 1);
        CHECK(t2 < 2 * t1); /* batching pays: the weights are read once */
        CHECKF(fabs(ds.busy_s - ds.calls * t2) <= 1e-12 * ds.busy_s, "device %d: busy %.17g, "
               "%ld x roofline(2) %.17g", d, ds.busy_s, ds.calls, ds.calls * t2);
        calls += ds.calls;
    }
    CHECK(calls > 0);
    double busy = 0, from_timeline = 0; /* the timeline's utilisation adds up to the busy time */
    for (int d = 0; d < 4; d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        busy += ds.busy_s;
    }
    for (long s = 0; s < r.n_timeline; s++) {
        const wd_serve_step *st = &r.timeline[s];
        CHECK(st->device_util > 0 && st->device_util <= 1 && st->device_queue_s == 0);
        from_timeline += st->device_util * (st->t_end - st->t_start) * 4;
    }
    CHECK_NEAR(from_timeline, busy, 1e-12 * busy);
    free(p);
    wd_serve_result_free(&r);
    wd_scheduler_free(k);
}

static void test_kv_budget(const wd_model *m, wd_pool *pool, const wd_scenario *sc) {
    char err[512];
    int n_p;
    int *p = encode(m, "The cat", &n_p);
    double kvt = wd_serve_kv_bytes_per_token(m), one = (n_p + 8) * kvt;
    wd_serve_request rq[3] = {{0, 8, n_p, p}, {0, 8, n_p, p}, {1e-5, 8, n_p, p}};
    wd_serve_opts o = opts();
    o.kv_budget_bytes = 1.5 * one; /* one request at a time */
    wd_scheduler *k;
    wd_serve_result r, solo;
    CHECKF(wd_scheduler_create(&k, m, sc, err, sizeof err) == 0, "%s", err);
    CHECKF(wd_serve_run(m, pool, k, rq, 3, &o, &r, err, sizeof err) == 0, "%s", err);
    wd_scheduler_free(k);
    CHECKF(wd_scheduler_create(&k, m, sc, err, sizeof err) == 0, "%s", err);
    CHECKF(wd_serve_run(m, pool, k, rq, 1, &o, &solo, err, sizeof err) == 0, "%s", err);
    CHECK(r.max_kv_bytes <= o.kv_budget_bytes);
    CHECK(r.users[0].admit_s == 0);
    CHECK(r.users[1].admit_s == r.users[0].finish_s); /* queued, then admitted */
    CHECK(r.users[2].admit_s == r.users[1].finish_s);
    for (int i = 0; i < 3; i++) {
        CHECK(r.users[i].n_out == solo.users[0].n_out);
        CHECK(memcmp(r.users[i].tokens, solo.users[0].tokens, solo.users[0].n_out * sizeof(int)) ==
              0);
    }
    for (long s = 0; s < r.n_timeline; s++) CHECK(r.timeline[s].running == 1);
    CHECK(r.timeline[0].waiting == 1); /* the third has not arrived yet */
    wd_serve_result_free(&r);
    wd_serve_result_free(&solo);
    wd_scheduler_free(k);
    /* larger than the whole budget: refused up front */
    o.kv_budget_bytes = 0.5 * one;
    CHECKF(wd_scheduler_create(&k, m, sc, err, sizeof err) == 0, "%s", err);
    CHECK(wd_serve_run(m, pool, k, rq, 1, &o, &r, err, sizeof err) != 0);
    CHECKF(strstr(err, "request 0") && strstr(err, "KV budget"), "%s", err);
    wd_scheduler_free(k);
    free(p);
}

static void run_mixed(const wd_model *m, wd_pool *pool, const wd_scenario *sc, int *const *p,
                      const int *n_p, wd_serve_result *r) {
    char err[512];
    wd_serve_request rq[4] = {
        {0, 12, n_p[0], p[0]}, {3e-4, 10, n_p[1], p[1]}, {3e-4, 6, n_p[2], p[2]},
        {2e-3, 9, n_p[0], p[0]}};
    wd_serve_opts o = opts();
    o.prefill_chunk = 3, o.temperature = 0.8f, o.seed = 7, o.compare = 1;
    wd_scheduler *k;
    CHECKF(wd_scheduler_create(&k, m, sc, err, sizeof err) == 0, "%s", err);
    CHECKF(wd_serve_run(m, pool, k, rq, 4, &o, r, err, sizeof err) == 0, "%s", err);
    wd_scheduler_free(k);
}

static void test_chunks_and_determinism(const wd_model *m, wd_pool *pool, wd_scenario *sc) {
    int n_p[3];
    int *p[3] = {encode(m, "Once upon a time", &n_p[0]), encode(m, "The dog ran to the park", &n_p[1]),
                 encode(m, "Lily", &n_p[2])};
    snprintf(sc->policy, sizeof sc->policy, "wdmoe");
    wd_serve_result a, b;
    run_mixed(m, pool, sc, p, n_p, &a);
    run_mixed(m, pool, sc, p, n_p, &b);
    CHECK(a.steps == b.steps && a.n_timeline == b.n_timeline);
    CHECK(memcmp(a.timeline, b.timeline, a.n_timeline * sizeof *a.timeline) == 0);
    int interleaved = 0;
    for (long s = 0; s < a.n_timeline; s++) {
        CHECK(a.timeline[s].tokens <= 3 + a.timeline[s].running);
        interleaved |= a.timeline[s].tokens > 1 && a.timeline[s].seqs > 1;
    }
    CHECK(interleaved); /* a prompt chunk rode along with another user's decode */
    for (int i = 0; i < 4; i++) {
        const wd_serve_user *x = &a.users[i], *y = &b.users[i];
        CHECK(x->n_out == y->n_out && x->ttft_s == y->ttft_s && x->tpot_s == y->tpot_s);
        CHECK(x->energy_j == y->energy_j && x->energy_j > 0);
        CHECK(memcmp(x->tokens, y->tokens, x->n_out * sizeof(int)) == 0);
        CHECK(x->agreement >= 0 && x->agreement <= 1 && x->mean_kl >= 0);
        CHECK(x->first_s >= x->admit_s && x->admit_s >= x->arrival_s);
    }
    wd_serve_result_free(&a);
    wd_serve_result_free(&b);
    for (int i = 0; i < 3; i++) free(p[i]);
}

int main(void) {
    wd_model *m;
    char err[512];
    if (wd_model_load(&m, MODEL, err, sizeof err)) WD_TEST_SKIP("%s", err);
    wd_pool *pool = wd_pool_create(2);
    wd_scenario sc;
    cell(&sc);
    test_one_user(m, pool, &sc);
    test_two_users(m, pool, &sc);
    test_kv_budget(m, pool, &sc);
    test_chunks_and_determinism(m, pool, &sc);
    wd_scenario_free(&sc);
    wd_pool_destroy(pool);
    wd_model_free(m);
    return wd_test_finish("test_serve");
}
