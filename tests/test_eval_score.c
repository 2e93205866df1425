/* Scoring with synthetic models whose answers are known from their logits:
 *
 * - "bigram": byte tokens (id = byte + 3, BOS 1, EOS 2); after token a the
 *   logits are L for token a + 1 and 0 elsewhere, so a continuation of n
 *   tokens with h "hits" has log-likelihood h L - n log(V - 1 + e^L), a closed
 *   form computed here independently of the scorer;
 * - "hash": logits depend on the whole prefix (a hash), so any mistake in
 *   positions, rewinds or the kept prefill logits changes the scores.
 *
 * Checks: log-likelihoods against the closed form; acc / acc_norm on a fixed
 * tiny set against values worked out by hand (and lm-evaluation-harness's
 * standard error); shared-prefix scoring equals scoring from scratch while
 * forwarding fewer tokens; WinoGrande-style per-choice contexts; agreement
 * and KL against a reference (closed form); GSM8K exact match on a scripted
 * generation; perplexity with sliding windows; interruption. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "host/eval.h"
#include "test_util.h"

#define V 259
#define MAXT 4096

typedef struct {
    int mode;       /* 0 bigram, 1 hash, 2 scripted generation */
    int max_batch;  /* > 0: forward refuses larger calls */
    double L;       /* bigram: logit of the successor */
    int shift;      /* bigram: successor = token + shift */
    int hist[MAXT];
    int pos, max_ctx;
    long calls;
    int prompt_len; /* scripted: length of the last encoding */
    const char *script;
} fake;

static uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

static void fake_row(fake *f, int p, float *row) {
    for (int v = 0; v < V; v++) row[v] = 0;
    if (f->mode == 0) {
        int nxt = f->hist[p] + f->shift;
        if (nxt >= 0 && nxt < V) row[nxt] = (float)f->L;
    } else if (f->mode == 1) {
        uint64_t h = 1469598103934665603ull;
        for (int i = 0; i <= p; i++) h = mix(h ^ (uint64_t)f->hist[i] * 0x9e3779b97f4a7c15ull);
        for (int v = 0; v < V; v++)
            row[v] = (float)((double)(mix(h + (uint64_t)v) >> 11) / 9007199254740992.0 * 6 - 3);
    } else {
        int k = p + 1 - f->prompt_len; /* index of the character to produce next */
        int len = (int)strlen(f->script);
        int next = k >= 0 && k < len ? (unsigned char)f->script[k] + 3 : 2;
        row[next] = 10;
    }
}

static int fake_forward(void *ctx, const int *tokens, int n, float *logits, int all, char *err,
                        size_t errlen) {
    fake *f = ctx;
    if (f->pos + n > f->max_ctx) {
        snprintf(err, errlen, "fake: context overflow");
        return 1;
    }
    if (f->max_batch > 0 && n > f->max_batch) {
        snprintf(err, errlen, "fake: batch of %d > %d", n, f->max_batch);
        return 1;
    }
    f->calls++;
    for (int i = 0; i < n; i++) f->hist[f->pos + i] = tokens[i];
    if (logits) {
        if (all)
            for (int i = 0; i < n; i++) fake_row(f, f->pos + i, logits + (size_t)i * V);
        else
            fake_row(f, f->pos + n - 1, logits);
    }
    f->pos += n;
    return 0;
}
static int fake_get_pos(void *ctx) { return ((fake *)ctx)->pos; }
static void fake_set_pos(void *ctx, int pos) {
    fake *f = ctx;
    if (pos <= f->pos) f->pos = pos;
}
static int fake_encode(void *ctx, const char *text, int add_bos, int **ids, int *n) {
    fake *f = ctx;
    int len = (int)strlen(text), k = 0;
    *ids = malloc((size_t)(len + 1) * sizeof(int));
    if (add_bos) (*ids)[k++] = 1;
    for (int i = 0; i < len; i++) (*ids)[k++] = (unsigned char)text[i] + 3;
    *n = k;
    f->prompt_len = k;
    return 0;
}
static char *fake_decode(void *ctx, const int *ids, int n) {
    char *s = malloc((size_t)n + 1);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 3) s[k++] = (char)(ids[i] - 3);
    s[k] = 0;
    return s;
}

static void fake_lm(wd_eval_lm *lm, fake *f, int mode, double L, int max_ctx) {
    memset(f, 0, sizeof(*f));
    f->mode = mode;
    f->L = L;
    f->shift = 1;
    f->max_ctx = max_ctx;
    memset(lm, 0, sizeof(*lm));
    lm->ctx = f;
    lm->vocab = V;
    lm->max_ctx = max_ctx;
    lm->bos = 1;
    lm->eos = 2;
    lm->rewind = 1;
    lm->forward = fake_forward;
    lm->get_pos = fake_get_pos;
    lm->set_pos = fake_set_pos;
    lm->encode = fake_encode;
    lm->decode = fake_decode;
}

/* closed form: log-likelihood of cont after ctx under the bigram model */
static double bigram_ll(const char *ctx, const char *cont, double L) {
    double lz = log(V - 1 + exp(L));
    int prev = ctx[0] ? (unsigned char)ctx[strlen(ctx) - 1] + 3 : 1;
    double ll = 0;
    for (const char *c = cont; *c; c++) {
        int t = (unsigned char)*c + 3;
        ll += (t == prev + 1 ? L : 0) - lz;
        prev = t;
    }
    return ll;
}

static char tmpdir[256];

/* ---- acc / acc_norm on a fixed tiny set, by hand ------------------------------------ */
static void tiny_set(void) {
    /* ARC format: context "Question: q\nAnswer:", continuations " choice".
     * Under the bigram model (L = 5) runs of consecutive bytes score high.
     *   1: "ab" (1 hit / 3 tokens) vs "abcdefgh" (7 / 9): acc picks "ab"
     *      (-13.0 > -19.1), acc_norm "abcdefgh" (-2.38/byte > -6.51)   gold 1
     *   2: "xyz" (2/4) vs "qq" (0/3): both pick "xyz"                   gold 0
     *   3: "mn" (1/3) vs "k" (0/2): acc "k" (-12.0 > -13.0),
     *      acc_norm "mn" (-6.51 > -12.0)                                 gold 0
     *   4: "abc" (2/4) vs "zz" (0/3) vs "abcdef" (5/7): acc "zz"?  no:
     *      "abc" -14.03, "zz" -18.02, "abcdef" -17.05 -> acc "abc";
     *      per byte -4.68, -9.01, -2.84 -> acc_norm "abcdef"               gold 2
     * acc = (item 2) = 1/4... worked out: item1 acc wrong, norm right;
     * item2 both right; item3 acc wrong, norm right; item4 acc wrong, norm right.
     * acc = 1/4, acc_norm = 4/4. */
    const char *text =
        "{\"question\": \"one\", \"choices\": [\"ab\", \"abcdefgh\"], \"answer\": 1}\n"
        "{\"question\": \"two\", \"choices\": [\"xyz\", \"qq\"], \"answer\": 0}\n"
        "{\"question\": \"three\", \"choices\": [\"mn\", \"k\"], \"answer\": 0}\n"
        "{\"question\": \"four\", \"choices\": [\"abc\", \"zz\", \"abcdef\"], \"answer\": 2}\n";
    const char *path = wd_test_write_tmp(tmpdir, "tiny.jsonl", text);
    wd_eval_set set;
    char err[512];
    CHECKF(wd_eval_load(&set, WD_EVAL_ARC_EASY, path, -1, err, sizeof(err)) == 0, "%s", err);
    fake f;
    wd_eval_lm lm;
    fake_lm(&lm, &f, 0, 5.0, 256);
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    char *rec = NULL;
    size_t rec_len = 0;
    o.records = open_memstream(&rec, &rec_len);
    wd_eval_result r;
    CHECKF(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
    fclose(o.records);
    CHECK(r.items == 4 && r.items_total == 4 && !r.interrupted);
    CHECK(r.correct == 1 && r.correct_norm == 4);
    CHECK_NEAR(r.acc, 0.25, 1e-15);
    CHECK_NEAR(r.acc_norm, 1.0, 1e-15);
    /* lm-eval: sqrt(p (1 - p) / (n - 1)) */
    CHECK_NEAR(r.acc_stderr, sqrt(0.25 * 0.75 / 3), 1e-12);
    CHECK_NEAR(r.acc_norm_stderr, 0.0, 1e-15);
    /* the records hold the log-likelihoods of the closed form */
    double want[] = {bigram_ll("Question: one\nAnswer:", " ab", 5),
                     bigram_ll("Question: one\nAnswer:", " abcdefgh", 5)};
    double got[2] = {0, 0};
    CHECK(rec && sscanf(rec, "{\"item\":0,\"gold\":1,\"pred\":0,\"pred_norm\":1,\"loglik\":[%lf,%lf]",
                        &got[0], &got[1]) == 2);
    CHECK_NEAR(got[0], want[0], 1e-9);
    CHECK_NEAR(got[1], want[1], 1e-9);
    /* by hand: " ab" = 3 tokens, 1 hit; " abcdefgh" = 9 tokens, 7 hits */
    double lz = log(258 + exp(5.0));
    CHECK_NEAR(want[0], 5 - 3 * lz, 1e-12);
    CHECK_NEAR(want[1], 35 - 9 * lz, 1e-12);
    free(rec);
    wd_eval_result_free(&r);
    wd_eval_set_free(&set);

    /* wd_eval_pick: ties go to the first */
    double ll[3] = {-2, -1, -1};
    int norm[3] = {1, 1, 2}, p, pn; /* per byte: -2, -1, -0.5 */
    wd_eval_pick(3, ll, norm, &p, &pn);
    CHECK(p == 1 && pn == 2);
    CHECK(isnan(wd_eval_binary_stderr(1, 1)));
    CHECK_NEAR(wd_eval_binary_stderr(5, 10), sqrt(0.25 / 9), 1e-15);
}

/* ---- closed form and shared prefix on token sequences ------------------------------- */
static void token_level(void) {
    fake f;
    wd_eval_lm lm;
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    char err[512];
    /* bigram: one choice, log-likelihood = h L - n log Z */
    fake_lm(&lm, &f, 0, 3.0, 64);
    int s0[] = {1, 10, 11, 12, 20, 21};
    const int *seqs[] = {s0};
    int len[] = {6}, ctx[] = {3};
    double ll;
    int greedy;
    wd_eval_result r;
    memset(&r, 0, sizeof(r));
    CHECKF(wd_eval_score(&lm, &o, 1, seqs, len, ctx, &ll, &greedy, &r, err, sizeof(err)) == 0,
           "%s", err);
    /* scored: 12 after 11 (hit), 20 after 12 (miss), 21 after 20 (hit) */
    double lz = log(V - 1 + exp(3.0));
    CHECK_NEAR(ll, 2 * 3.0 - 3 * lz, 1e-9);
    CHECK(greedy == 0);
    CHECK(r.tokens_scored == 3);

    /* hash model: shared prefix == from scratch, for choices sharing the context,
     * with different contexts (WinoGrande) and continuations of 1 token */
    int a[] = {1, 40, 41, 42, 43, 50, 51, 52};
    int b[] = {1, 40, 41, 42, 43, 60};
    int c[] = {1, 40, 41, 99, 98, 50, 51}; /* context differs from position 3 */
    int d[] = {1, 40, 41, 42, 43, 50, 70, 71, 72, 73};
    const int *all[] = {a, b, c, d};
    int lens[] = {8, 6, 7, 10}, ctxs[] = {5, 5, 5, 6};
    double ll_shared[4], ll_scratch[4];
    int g1[4], g2[4];
    fake_lm(&lm, &f, 1, 0, 64);
    wd_eval_result rs, rn;
    memset(&rs, 0, sizeof(rs));
    memset(&rn, 0, sizeof(rn));
    CHECKF(wd_eval_score(&lm, &o, 4, all, lens, ctxs, ll_shared, g1, &rs, err, sizeof(err)) == 0,
           "%s", err);
    o.shared_prefix = 0;
    CHECKF(wd_eval_score(&lm, &o, 4, all, lens, ctxs, ll_scratch, g2, &rn, err, sizeof(err)) == 0,
           "%s", err);
    o.shared_prefix = 1;
    for (int i = 0; i < 4; i++) {
        CHECKF(ll_shared[i] == ll_scratch[i], "choice %d: %.17g vs %.17g", i, ll_shared[i],
               ll_scratch[i]);
        CHECK(g1[i] == g2[i]);
    }
    CHECK(rs.tokens_scored == rn.tokens_scored && rs.tokens_scored == 3 + 1 + 2 + 4);
    CHECKF(rs.tokens_forwarded < rn.tokens_forwarded, "%ld vs %ld", rs.tokens_forwarded,
           rn.tokens_forwarded);
    /* reference: each choice alone in a fresh model, row by row */
    for (int i = 0; i < 4; i++) {
        fake g;
        wd_eval_lm lm2;
        fake_lm(&lm2, &g, 1, 0, 64);
        float row[V];
        double ref = 0;
        for (int j = 0; j < lens[i] - 1; j++) {
            fake_forward(&g, &all[i][j], 1, row, 0, err, sizeof(err));
            if (j + 1 >= ctxs[i]) {
                double mx = row[0], s = 0;
                for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
                for (int v = 0; v < V; v++) s += exp((double)row[v] - mx);
                ref += row[all[i][j + 1]] - mx - log(s);
            }
        }
        CHECK_NEAR(ll_shared[i], ref, 1e-9);
    }
    /* an lm that rewinds only to 0 and takes at most 2 tokens per call (a GPU
     * runner): same scores, from scratch */
    {
        fake h;
        wd_eval_lm lh;
        fake_lm(&lh, &h, 1, 0, 64);
        h.max_batch = 2;
        lh.max_batch = 2;
        lh.rewind = 0;
        double ll_b[4];
        wd_eval_result rb;
        memset(&rb, 0, sizeof(rb));
        CHECKF(wd_eval_score(&lh, &o, 4, all, lens, ctxs, ll_b, NULL, &rb, err, sizeof(err)) == 0,
               "%s", err);
        for (int i = 0; i < 4; i++) CHECK(ll_b[i] == ll_shared[i]);
        CHECK(rb.tokens_forwarded == rn.tokens_forwarded);
    }
    /* greedy: a continuation that follows the bigram chain is greedy */
    fake_lm(&lm, &f, 0, 3.0, 64);
    int gs[] = {1, 30, 31, 32, 33};
    const int *gss[] = {gs};
    int gl[] = {5}, gc[] = {2};
    memset(&r, 0, sizeof(r));
    CHECK(wd_eval_score(&lm, &o, 1, gss, gl, gc, &ll, &greedy, &r, err, sizeof(err)) == 0);
    CHECK(greedy == 1);
    CHECK_NEAR(ll, 3 * (3.0 - lz), 1e-9);
    /* bad input: empty continuation, too long for the context */
    int bad_ctx[] = {5};
    CHECK(wd_eval_score(&lm, &o, 1, gss, gl, bad_ctx, &ll, NULL, &r, err, sizeof(err)) != 0);
    fake_lm(&lm, &f, 0, 3.0, 3);
    CHECK(wd_eval_score(&lm, &o, 1, gss, gl, gc, &ll, NULL, &r, err, sizeof(err)) != 0);
    CHECK(strstr(err, "context") != NULL);
}

/* ---- text items: WinoGrande contexts, HellaSwag, truncation ---------------------------- */
static void text_items(void) {
    char err[512];
    /* WinoGrande: the option fills the blank; the continuation after it is scored */
    const char *path = wd_test_write_tmp(tmpdir, "wino.jsonl",
                                 "{\"question\": \"xyz _ abc\", \"choices\": [\"vw\", \"qq\"], "
                                 "\"answer\": 0}\n");
    wd_eval_set set;
    CHECKF(wd_eval_load(&set, WD_EVAL_WINOGRANDE, path, -1, err, sizeof(err)) == 0, "%s", err);
    fake f;
    wd_eval_lm lm;
    fake_lm(&lm, &f, 0, 4.0, 256);
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    wd_eval_result r;
    char *rec = NULL;
    size_t rl = 0;
    o.records = open_memstream(&rec, &rl);
    CHECKF(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
    fclose(o.records);
    double got[2];
    CHECK(sscanf(rec, "{\"item\":0,\"gold\":0,\"pred\":%*d,\"pred_norm\":%*d,\"loglik\":[%lf,%lf]",
                 &got[0], &got[1]) == 2);
    /* contexts "xyz vw" / "xyz qq", continuation " abc" (the text after the blank) */
    CHECK_NEAR(got[0], bigram_ll("xyz vw", " abc", 4.0), 1e-9);
    CHECK_NEAR(got[1], bigram_ll("xyz qq", " abc", 4.0), 1e-9);
    CHECK(r.correct + (r.items - r.correct) == 1);
    free(rec);
    wd_eval_result_free(&r);
    wd_eval_set_free(&set);

    /* a context longer than the window is cut from the left (and counted) */
    char hs[2048];
    char ctx[600];
    for (int i = 0; i < 300; i++) ctx[i] = (char)('a' + i % 26);
    ctx[300] = 0;
    snprintf(hs, sizeof(hs), "%s\n2\nab\ncd\nxyz\nmmmm\nshort ctx\n0\nab\ncd\nef\ngh\n", ctx);
    path = wd_test_write_tmp(tmpdir, "hs.txt", hs);
    CHECKF(wd_eval_load(&set, WD_EVAL_HELLASWAG, path, -1, err, sizeof(err)) == 0, "%s", err);
    fake_lm(&lm, &f, 0, 4.0, 128);
    wd_eval_opts_default(&o);
    CHECKF(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
    CHECK(r.items == 2 && r.truncated == 1);
    /* item 1: the bigram model prefers the run " xyz"... ' '->x miss, x->y, y->z hits */
    wd_eval_result_free(&r);
    wd_eval_set_free(&set);
    /* a continuation longer than the window: its first tokens are cut */
    char longer[1024];
    for (int i = 0; i < 200; i++) longer[i] = (char)('a' + i % 26);
    longer[200] = 0;
    snprintf(hs, sizeof(hs), "ctx\n1\nab\n%s\nxyz\nmmmm\n", longer);
    path = wd_test_write_tmp(tmpdir, "hs2.txt", hs);
    CHECKF(wd_eval_load(&set, WD_EVAL_HELLASWAG, path, -1, err, sizeof(err)) == 0, "%s", err);
    char *rec2 = NULL;
    size_t rl2 = 0;
    o.records = open_memstream(&rec2, &rl2);
    CHECKF(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
    fclose(o.records);
    o.records = NULL;
    CHECK(r.items == 1 && r.truncated == 1);
    double lls[4];
    CHECK(sscanf(rec2, "{\"item\":0,\"gold\":1,\"pred\":%*d,\"pred_norm\":%*d,\"loglik\":[%lf,%lf,%lf,%lf]",
                 &lls[0], &lls[1], &lls[2], &lls[3]) == 4);
    /* choice 1 keeps its last 129 tokens, the first of them as context: 128 scored */
    {
        const char *kept = longer + 200 - 129;
        char c1[2] = {kept[0], 0};
        CHECK_NEAR(lls[1], bigram_ll(c1, kept + 1, 4.0), 1e-9);
        CHECK_NEAR(lls[0], bigram_ll("ctx", " ab", 4.0), 1e-9);
    }
    free(rec2);
    wd_eval_result_free(&r);
    wd_eval_set_free(&set);
    CHECKF(wd_eval_load(&set, WD_EVAL_HELLASWAG, wd_test_write_tmp(tmpdir, "hs3.txt", "short ctx\n0\nab\ncd\nef\ngh\n"), -1,
                        err, sizeof(err)) == 0, "%s", err);
    /* order: only item 0 */
    int order[] = {0};
    CHECKF(wd_eval_run(&set, order, 1, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
    CHECK(r.items == 1 && r.truncated == 0);
    wd_eval_result_free(&r);
    wd_eval_set_free(&set);
}

/* ---- agreement and KL against a reference --------------------------------------------- */
static void agreement(void) {
    char err[512];
    fake fp, fr;
    wd_eval_lm pol, ref;
    fake_lm(&pol, &fp, 0, 2.0, 64);
    fake_lm(&ref, &fr, 0, 3.0, 64);
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    o.ref = &ref;
    int s0[] = {1, 10, 11, 12, 20, 21};
    const int *seqs[] = {s0};
    int len[] = {6}, ctx[] = {3};
    double ll;
    wd_eval_result r;
    memset(&r, 0, sizeof(r));
    CHECKF(wd_eval_score(&pol, &o, 1, seqs, len, ctx, &ll, NULL, &r, err, sizeof(err)) == 0,
           "%s", err);
    wd_eval_result_finish(&r);
    /* rows compared: the prefill's last (position 2) and positions 3, 4 */
    CHECK(r.agree_positions == 3 && r.agree_count == 3);
    /* KL(ref || pol) of two rows that put L1 / L2 on the same token */
    double z1 = V - 1 + exp(3.0), z2 = V - 1 + exp(2.0);
    double a1 = exp(3.0) / z1, b1 = 1 / z1, a2 = exp(2.0) / z2, b2 = 1 / z2;
    double kl = a1 * log(a1 / a2) + (V - 1) * b1 * log(b1 / b2);
    CHECK_NEAR(r.kl_mean, kl, 1e-9);
    CHECK_NEAR(r.kl_max, kl, 1e-9);
    CHECK_NEAR(r.agreement, 1.0, 0);
    /* a reference with another successor: no agreement */
    fake_lm(&ref, &fr, 0, 3.0, 64);
    fr.shift = 2;
    memset(&r, 0, sizeof(r));
    CHECK(wd_eval_score(&pol, &o, 1, seqs, len, ctx, &ll, NULL, &r, err, sizeof(err)) == 0);
    wd_eval_result_finish(&r);
    CHECK(r.agree_positions == 3 && r.agree_count == 0);
    /* identical models: KL 0 */
    fake_lm(&ref, &fr, 0, 2.0, 64);
    memset(&r, 0, sizeof(r));
    CHECK(wd_eval_score(&pol, &o, 1, seqs, len, ctx, &ll, NULL, &r, err, sizeof(err)) == 0);
    wd_eval_result_finish(&r);
    CHECK(r.agree_count == 3 && r.kl_max < 1e-12);
}

/* ---- GSM8K ----------------------------------------------------------------------------- */
static void gsm8k(void) {
    char err[512];
    const char *path = wd_test_write_tmp(tmpdir, 
        "gsm.jsonl",
        "{\"question\": \"How many?\", \"answer\": \"3 + 4 = 7\\n#### 7\"}\n"
        "{\"question\": \"How much?\", \"answer\": \"it is 1,250\\n#### 1,250\"}\n");
    wd_eval_set set;
    CHECKF(wd_eval_load(&set, WD_EVAL_GSM8K, path, 0, err, sizeof(err)) == 0, "%s", err);
    fake f;
    wd_eval_lm lm;
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    wd_eval_result r;
    /* the fake emits the same script after every prompt; it is cut at the
     * first stop sequence ("\n\n", "Question:") and its final number compared */
    const char *scripts[] = {" 3 + 4 = 7.\n\nQuestion: ignored 99", " It is $1,250.",
                             " 1250 #### 12"};
    const long want_correct[] = {1 /* "7": item 0 */, 1 /* "1250": item 1 */,
                                 0 /* "#### 12" wins over the last number */};
    for (int k = 0; k < 3; k++) {
        fake_lm(&lm, &f, 2, 0, 512);
        f.script = scripts[k];
        char *rec = NULL;
        size_t rl = 0;
        o.records = open_memstream(&rec, &rl);
        CHECKF(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
        fclose(o.records);
        o.records = NULL;
        CHECKF(r.correct == want_correct[k], "script %d: %ld correct", k, r.correct);
        CHECK(r.items == 2 && r.tokens_generated > 0);
        if (k == 0) {
            CHECK(strstr(rec, "\"output\":\" 3 + 4 = 7.\"") != NULL);
            CHECK(strstr(rec, "ignored") == NULL);
        }
        free(rec);
        wd_eval_result_free(&r);
    }
    /* generation stops at EOS and at the budget */
    fake_lm(&lm, &f, 2, 0, 512);
    f.script = " 7";
    CHECK(wd_eval_run(&set, NULL, 1, &lm, &o, &r, err, sizeof(err)) == 0);
    CHECK(r.correct == 1 && r.tokens_generated == 2);
    wd_eval_result_free(&r);
    f.script = " 17";
    o.max_new_tokens = 2;
    CHECK(wd_eval_run(&set, NULL, 1, &lm, &o, &r, err, sizeof(err)) == 0);
    CHECK(r.correct == 0 && r.tokens_generated == 2);
    wd_eval_result_free(&r);
    wd_eval_set_free(&set);
}

/* ---- perplexity -------------------------------------------------------------------------- */
static void perplexity(void) {
    char err[512];
    const char *text = "abcdefghijklmnopqrstuvwxyz0123456789 the end";
    const char *path = wd_test_write_tmp(tmpdir, "ppl.txt", text);
    wd_eval_set set;
    CHECKF(wd_eval_load(&set, WD_EVAL_PERPLEXITY, path, -1, err, sizeof(err)) == 0, "%s", err);
    int n = (int)strlen(text);
    /* closed form: BOS then n bytes; every byte scored once */
    double want = -bigram_ll("", text, 2.5);
    int windows[][2] = {{0, 0}, {8, 4}, {5, 1}, {12, 11}, {2, 1}};
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        fake f;
        wd_eval_lm lm;
        fake_lm(&lm, &f, 0, 2.5, 64);
        wd_eval_opts o;
        wd_eval_opts_default(&o);
        o.ppl_window = windows[w][0];
        o.ppl_stride = windows[w][1];
        wd_eval_result r;
        CHECKF(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0, "%s", err);
        CHECKF(r.ppl_tokens == n, "window %d stride %d: %ld tokens scored, want %d",
               windows[w][0], windows[w][1], r.ppl_tokens, n);
        CHECK_NEAR(r.nll_sum, want, 1e-9);
        CHECK_NEAR(r.ppl, exp(want / n), 1e-9 * exp(want / n));
        CHECK_NEAR(r.bits_per_byte, want / log(2.0) / n, 1e-12);
        CHECK(r.items == r.items_total);
        wd_eval_result_free(&r);
    }
    wd_eval_set_free(&set);
}

/* ---- stop flag ------------------------------------------------------------------------- */
static volatile sig_atomic_t stop_flag;
static void stop_after_two(void *ctx, long done, long total) {
    if (done == 2) stop_flag = 1;
}

static void interruption(void) {
    char err[512];
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/data/eval/hellaswag_20.txt", WD_SOURCE_DIR);
    wd_eval_set set;
    CHECKF(wd_eval_load(&set, WD_EVAL_HELLASWAG, path, -1, err, sizeof(err)) == 0, "%s", err);
    fake f;
    wd_eval_lm lm;
    fake_lm(&lm, &f, 1, 0, 512);
    wd_eval_opts o;
    wd_eval_opts_default(&o);
    stop_flag = 0;
    o.stop = &stop_flag;
    o.progress = stop_after_two;
    wd_eval_result r;
    CHECK(wd_eval_run(&set, NULL, 0, &lm, &o, &r, err, sizeof(err)) == 0);
    CHECK(r.items == 2 && r.interrupted && r.items_total == 20);
    wd_eval_result_free(&r);
    /* two runs give identical results */
    o.stop = NULL;
    o.progress = NULL;
    wd_eval_result r1, r2;
    CHECK(wd_eval_run(&set, NULL, 0, &lm, &o, &r1, err, sizeof(err)) == 0);
    CHECK(wd_eval_run(&set, NULL, 0, &lm, &o, &r2, err, sizeof(err)) == 0);
    CHECK(r1.items == 20 && r1.correct == r2.correct && r1.correct_norm == r2.correct_norm &&
          r1.tokens_forwarded == r2.tokens_forwarded);
    wd_eval_set_free(&set);
}

int main(void) {
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/wd_test_eval_score_XXXXXX");
    if (!mkdtemp(tmpdir)) WD_TEST_SKIP("cannot create a temporary folder");
    tiny_set();
    token_level();
    text_items();
    agreement();
    gsm8k();
    perplexity();
    interruption();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return wd_test_finish("test_eval_score");
}
