/* Evaluation on the real stories260k model (shipped in weights/models):
 *
 * - HellaSwag log-likelihoods from the scorer (shared prefix and from
 *   scratch) against a reference written here: each choice tokenized as
 *   lm-evaluation-harness does, run alone through a fresh session, log-softmax
 *   in double;
 * - the .gguf form of the model scores the same;
 * - two runs give identical records;
 * - agreement / KL against top-k through a selection hook: moe4-top2 has 4
 *   identical experts, so any selection gives the top-k distribution
 *   (agreement 1, KL ~ 0); sliced4-top4 with top-1 instead of top-4 loses
 *   quality (KL > 0), as a real degradation should. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "host/eval.h"
#include "test_util.h"

#define MODEL_DIR WD_SOURCE_DIR "/weights/models/stories260k"

static int load(wd_model **m, const char *path) {
    char err[1024];
    if (wd_model_load(m, path, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}

/* log-likelihood of whole[nc..nw) given whole[0..nc), one fresh forward */
static double reference_ll(const wd_model *m, wd_pool *pool, const int *seq, int n, int nc) {
    wd_session *s = wd_session_create(m, 0, pool);
    int V = m->cfg.vocab;
    float *lg = malloc((size_t)n * V * sizeof(float));
    char err[256];
    double ll = NAN;
    if (s && lg && !wd_forward(s, seq, n, lg, 1, err, sizeof(err))) {
        ll = 0;
        for (int j = nc; j < n; j++) {
            const float *row = lg + (size_t)(j - 1) * V;
            double mx = row[0], z = 0;
            for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
            ll += row[seq[j]] - mx - log(z);
        }
    }
    free(lg);
    wd_session_free(s);
    return ll;
}

/* records -> lls of item k (4 choices) */
static int parse_ll(const char *rec, int k, double *ll) {
    const char *p = rec;
    for (int i = 0; i < k && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (!p) return 1;
    p = strstr(p, "\"loglik\":[");
    if (!p) return 1;
    return sscanf(p, "\"loglik\":[%lf,%lf,%lf,%lf]", &ll[0], &ll[1], &ll[2], &ll[3]) != 4;
}

static char *run_records(const wd_model *m, wd_pool *pool, const wd_eval_set *set, int n,
                         int shared, wd_eval_result *r, const wd_moe_hooks *hooks,
                         int with_ref) {
    wd_session *s = wd_session_create(m, 0, pool), *rs = NULL;
    if (hooks) wd_session_set_hooks(s, hooks);
    wd_eval_lm lm, ref;
    wd_eval_lm_session(&lm, s);
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    o.shared_prefix = shared;
    if (with_ref) {
        rs = wd_session_create(m, 0, pool);
        wd_eval_lm_session(&ref, rs);
        o.ref = &ref;
    }
    char *rec = NULL, err[1024];
    size_t len = 0;
    o.records = open_memstream(&rec, &len);
    int rc = wd_eval_run(set, NULL, n, &lm, &o, r, err, sizeof(err));
    fclose(o.records);
    CHECKF(rc == 0, "%s", err);
    wd_session_free(s);
    wd_session_free(rs);
    return rec;
}

/* hooks: replace the selection */
typedef struct {
    int mode; /* 0: experts reversed (moe4: same output), 1: top-1 only */
} hook_ctx;

static int select_hook(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    hook_ctx *h = ctx;
    int E = sel->n_experts;
    for (int t = 0; t < sel->n_tokens; t++) {
        if (h->mode == 0) { /* the other experts, same weights */
            for (int j = 0; j < sel->n[t]; j++)
                sel->expert[t * E + j] = E - 1 - sel->expert[t * E + j];
        } else {
            sel->n[t] = 1;
            sel->weight[t * E] = 1;
        }
    }
    return 0;
}

int main(void) {
    char path[1024], err[1024];
    snprintf(path, sizeof(path), "%s/moe4-top2", MODEL_DIR);
    if (!wd_test_file_exists(path)) WD_TEST_SKIP("%s absent", path);
    wd_model *m, *mg, *ms;
    if (load(&m, path)) return 1;
    wd_pool *pool = wd_pool_create(2);
    wd_eval_set set;
    snprintf(path, sizeof(path), "%s/tests/data/eval/hellaswag_20.txt", WD_SOURCE_DIR);
    if (wd_eval_load(&set, WD_EVAL_HELLASWAG, path, -1, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const int N = 8;
    wd_eval_result rs, rn, r2;
    char *shared = run_records(m, pool, &set, N, 1, &rs, NULL, 0);
    char *scratch = run_records(m, pool, &set, N, 0, &rn, NULL, 0);
    char *again = run_records(m, pool, &set, N, 1, &r2, NULL, 0);
    CHECK(rs.items == N && rn.items == N);
    CHECK(rs.correct == rn.correct && rs.correct_norm == rn.correct_norm);
    CHECKF(rs.tokens_forwarded < rn.tokens_forwarded, "%ld vs %ld", rs.tokens_forwarded,
           rn.tokens_forwarded);
    CHECK(rs.tokens_scored == rn.tokens_scored);
    CHECK(again && shared && !strcmp(again, shared)); /* deterministic */
    CHECK(r2.correct == rs.correct && r2.tokens_forwarded == rs.tokens_forwarded);
    double max_diff = 0;
    for (int k = 0; k < N; k++) {
        double a[4], b[4];
        CHECK(parse_ll(shared, k, a) == 0 && parse_ll(scratch, k, b) == 0);
        const wd_eval_item *it = &set.items[k];
        for (int c = 0; c < 4; c++) {
            /* lm-evaluation-harness: ctx tokens, then the suffix of the whole encoding */
            char whole[4096];
            snprintf(whole, sizeof(whole), "%s%s", it->context, it->cont[c]);
            int *ci, nc, *wi, nw;
            wd_tokenizer_encode(m->tok, it->context, 1, &ci, &nc);
            wd_tokenizer_encode(m->tok, whole, 1, &wi, &nw);
            int *seq = malloc((size_t)nw * sizeof(int));
            memcpy(seq, ci, (size_t)nc * sizeof(int));
            memcpy(seq + nc, wi + nc, (size_t)(nw - nc) * sizeof(int));
            double ref = reference_ll(m, pool, seq, nw, nc);
            double d = fmax(fabs(a[c] - ref), fabs(b[c] - ref));
            if (d > max_diff) max_diff = d;
            CHECKF(d < 2e-3 + 1e-4 * fabs(ref), "item %d choice %d: %.6f / %.6f vs %.6f", k, c,
                   a[c], b[c], ref);
            free(ci);
            free(wi);
            free(seq);
        }
    }
    printf("max |ll - reference| = %.3g\n", max_diff);

    /* the GGUF form scores the same */
    snprintf(path, sizeof(path), "%s/moe4-top2.gguf", MODEL_DIR);
    if (!load(&mg, path)) {
        wd_eval_result rg;
        char *g = run_records(mg, pool, &set, N, 1, &rg, NULL, 0);
        CHECK(rg.correct == rs.correct && rg.correct_norm == rs.correct_norm);
        for (int k = 0; k < N; k++) {
            double a[4], b[4];
            CHECK(parse_ll(shared, k, a) == 0 && parse_ll(g, k, b) == 0);
            for (int c = 0; c < 4; c++) CHECK_NEAR(a[c], b[c], 2e-3);
        }
        free(g);
        wd_eval_result_free(&rg);
        wd_model_free(mg);
    } else {
        CHECK(0);
    }

    /* agreement with top-k: identical experts -> same distribution */
    hook_ctx hc = {0};
    wd_moe_hooks hooks = {&hc, select_hook, NULL};
    wd_eval_result ra;
    char *x = run_records(m, pool, &set, 4, 1, &ra, &hooks, 1);
    CHECK(ra.agree_positions > 0);
    CHECKF(ra.agreement == 1.0, "agreement %.4f", ra.agreement);
    CHECKF(ra.kl_max < 1e-6, "KL max %.3g", ra.kl_max);
    free(x);
    wd_eval_result_free(&ra);
    /* sliced experts, top-1 instead of top-4: the distribution moves */
    snprintf(path, sizeof(path), "%s/sliced4-top4", MODEL_DIR);
    if (!load(&ms, path)) {
        hc.mode = 1;
        x = run_records(ms, pool, &set, 4, 1, &ra, &hooks, 1);
        CHECKF(ra.kl_mean > 1e-3, "KL %.3g", ra.kl_mean);
        CHECK(ra.agreement < 1.0);
        printf("sliced4 top-1 vs top-4: agreement %.3f, KL %.4f over %ld positions\n",
               ra.agreement, ra.kl_mean, ra.agree_positions);
        free(x);
        wd_eval_result_free(&ra);
        wd_model_free(ms);
    } else {
        CHECK(0);
    }

    free(shared);
    free(scratch);
    free(again);
    wd_eval_result_free(&rs);
    wd_eval_result_free(&rn);
    wd_eval_result_free(&r2);
    wd_eval_set_free(&set);
    wd_pool_destroy(pool);
    wd_model_free(m);
    return wd_test_finish("test_eval_model");
}
