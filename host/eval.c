/* Evaluation scoring: log-likelihood of choices with a shared prefix, greedy
 * generation (GSM8K), perplexity, agreement / KL against a reference model.
 * See host/eval.h and docs/eval.md. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/cli.h"
#include "host/eval.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* ---- the session as an lm ------------------------------------------------------ */
static int sess_forward(void *ctx, const int *tokens, int n, float *logits, int all, char *err,
                        size_t errlen) {
    return wd_forward(ctx, tokens, n, logits, all, err, errlen);
}
static int sess_get_pos(void *ctx) { return wd_session_pos(ctx); }
static void set_phase(const wd_eval_lm *lm, int decode) {
    if (lm->phase) lm->phase(lm->phase_ctx, decode);
}
static void sess_set_pos(void *ctx, int pos) { wd_session_set_pos(ctx, pos); }
static int sess_encode(void *ctx, const char *text, int add_bos, int **ids, int *n) {
    const wd_model *m = wd_session_model(ctx);
    if (!m->tok) return 1;
    return wd_tokenizer_encode(m->tok, text, add_bos, ids, n);
}
static char *sess_decode(void *ctx, const int *ids, int n) {
    const wd_model *m = wd_session_model(ctx);
    return m->tok ? wd_tokenizer_decode(m->tok, ids, n) : NULL;
}

void wd_eval_lm_session(wd_eval_lm *lm, wd_session *s) {
    const wd_model *m = wd_session_model(s);
    memset(lm, 0, sizeof(*lm));
    lm->ctx = s;
    lm->vocab = m->cfg.vocab;
    lm->max_ctx = wd_session_max_ctx(s);
    /* BOS in front of every text only when the model's tokenizer adds one */
    lm->bos = !m->tok ? m->cfg.bos_id : wd_tokenizer_add_bos(m->tok) ? wd_tokenizer_bos(m->tok) : -1;
    lm->eos = m->tok ? wd_tokenizer_eos(m->tok) : m->cfg.eos_id;
    lm->max_batch = 0;
    lm->rewind = 1;
    lm->forward = sess_forward;
    lm->get_pos = sess_get_pos;
    lm->set_pos = sess_set_pos;
    lm->encode = sess_encode;
    lm->decode = sess_decode;
}

void wd_eval_opts_default(wd_eval_opts *o) {
    memset(o, 0, sizeof(*o));
    o->shared_prefix = 1;
    o->max_new_tokens = 256;
}

/* ---- statistics ------------------------------------------------------------------ */
double wd_eval_binary_stderr(long k, long n) {
    if (n < 2) return NAN;
    double p = (double)k / n;
    double var = (double)n / (n - 1) * p * (1 - p); /* sample variance (ddof 1) */
    return sqrt(var / n);
}

void wd_eval_pick(int n, const double *ll, const int *norm_len, int *pred, int *pred_norm) {
    int a = 0, b = 0;
    double best_b = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (ll[i] > ll[a]) a = i;
        double v = ll[i] / (norm_len && norm_len[i] > 0 ? norm_len[i] : 1);
        if (i == 0 || v > best_b) {
            best_b = v;
            b = i;
        }
    }
    *pred = a;
    *pred_norm = b;
}

void wd_eval_result_finish(wd_eval_result *r) {
    long n = r->items;
    r->acc = n ? (double)r->correct / n : NAN;
    r->acc_norm = n ? (double)r->correct_norm / n : NAN;
    r->acc_stderr = wd_eval_binary_stderr(r->correct, n);
    r->acc_norm_stderr = wd_eval_binary_stderr(r->correct_norm, n);
    if (r->ppl_tokens > 0) {
        long t = r->ppl_tokens;
        r->nll_mean = r->nll_sum / t;
        double var = t > 1 ? (r->nll_sq_sum - t * r->nll_mean * r->nll_mean) / (t - 1) : NAN;
        if (var < 0) var = 0;
        r->nll_stderr = sqrt(var / t);
        r->ppl = exp(r->nll_mean);
        r->ppl_stderr = r->ppl * r->nll_stderr; /* delta method */
        r->bits_per_byte = r->ppl_bytes ? r->nll_sum / log(2.0) / r->ppl_bytes : NAN;
    } else {
        r->nll_mean = r->nll_stderr = r->ppl = r->ppl_stderr = r->bits_per_byte = NAN;
    }
    r->agreement = r->agree_positions ? (double)r->agree_count / r->agree_positions : NAN;
    r->kl_mean = r->agree_positions ? r->kl_sum / r->agree_positions : NAN;
}

void wd_eval_result_free(wd_eval_result *r) {
    if (!r) return;
    free(r->groups);
    r->groups = NULL;
    r->n_groups = 0;
}

/* ---- the scorer ------------------------------------------------------------------ */
typedef struct {
    const wd_eval_lm *lm, *ref;
    const wd_eval_opts *o;
    wd_eval_result *r;
    int vocab, chunk;
    float *logits, *ref_logits; /* [chunk][vocab] */
    float *last;                /* kept: the logits after the prefill [vocab] */
} scorer;

static void scorer_free(scorer *sc) {
    free(sc->logits);
    free(sc->ref_logits);
    free(sc->last);
}

static int scorer_init(scorer *sc, const wd_eval_lm *lm, const wd_eval_opts *o,
                       wd_eval_result *r, char *err, size_t errlen) {
    memset(sc, 0, sizeof(*sc));
    sc->lm = lm;
    sc->ref = o->ref;
    sc->o = o;
    sc->r = r;
    sc->vocab = lm->vocab;
    if (sc->ref && sc->ref->vocab != lm->vocab) {
        snprintf(err, errlen, "eval: reference vocab %d differs from the model's %d",
                 sc->ref->vocab, lm->vocab);
        return 1;
    }
    /* rows of logits per forward call: at most 256, and at most ~64 MiB */
    sc->chunk = (int)(((size_t)16 << 20) / (size_t)(lm->vocab > 0 ? lm->vocab : 1));
    if (sc->chunk > 256) sc->chunk = 256;
    if (lm->max_batch > 0 && sc->chunk > lm->max_batch) sc->chunk = lm->max_batch;
    if (o->ref && o->ref->max_batch > 0 && sc->chunk > o->ref->max_batch)
        sc->chunk = o->ref->max_batch;
    if (sc->chunk < 1) sc->chunk = 1;
    sc->logits = malloc((size_t)sc->chunk * lm->vocab * sizeof(float));
    sc->last = malloc((size_t)lm->vocab * sizeof(float));
    if (sc->ref) sc->ref_logits = malloc((size_t)sc->chunk * lm->vocab * sizeof(float));
    if (!sc->logits || !sc->last || (sc->ref && !sc->ref_logits)) {
        scorer_free(sc);
        snprintf(err, errlen, "eval: out of memory for logits (%d x %d)", sc->chunk, lm->vocab);
        return 1;
    }
    return 0;
}

static void set_pos(scorer *sc, int pos) {
    sc->lm->set_pos(sc->lm->ctx, pos);
    if (sc->ref) sc->ref->set_pos(sc->ref->ctx, pos);
}

/* log-sum-exp of a row, in double */
static double row_lse(const float *x, int n, int *argmax) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    double mx = x[a], s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    if (argmax) *argmax = a;
    return mx + log(s);
}

/* agreement and KL(ref || model) of one position */
static void compare_row(scorer *sc, const float *pol, const float *ref) {
    int V = sc->vocab, ap, ar;
    double lp = row_lse(pol, V, &ap), lr = row_lse(ref, V, &ar);
    double kl = 0;
    for (int i = 0; i < V; i++) {
        double a = (double)ref[i] - lr, b = (double)pol[i] - lp;
        double p = exp(a);
        if (p > 0) kl += p * (a - b);
    }
    if (kl < 0) kl = 0; /* rounding */
    sc->r->agree_positions++;
    sc->r->agree_count += ap == ar;
    sc->r->kl_sum += kl;
    if (kl > sc->r->kl_max) sc->r->kl_max = kl;
}

/* Called for row i (the logits after tokens[i]). */
typedef int (*row_fn)(void *ctx, int i, const float *logits);

/* Run tokens[0..n) at the current position, in chunks. Rows i >= rows_from are
 * handed to fn (rows_from >= n: no logits at all). */
static int run_tokens(scorer *sc, const int *tokens, int n, int rows_from, row_fn fn, void *ctx,
                      char *err, size_t errlen) {
    if (rows_from < 0) rows_from = 0;
    int cap = 4096; /* tokens per call without logits */
    if (sc->lm->max_batch > 0 && sc->lm->max_batch < cap) cap = sc->lm->max_batch;
    if (sc->ref && sc->ref->max_batch > 0 && sc->ref->max_batch < cap) cap = sc->ref->max_batch;
    int a = 0;
    while (a < n) {
        int b, want; /* want: 0 no logits, 1 every row of [a, b), 2 only the last row */
        if (a < rows_from && rows_from == n - 1 && n - a <= cap) {
            b = n; /* a prefill whose last row is needed: one call, last logits */
            want = 2;
        } else if (a < rows_from) { /* no logits needed up to rows_from */
            b = rows_from < n ? rows_from : n;
            if (b - a > cap) b = a + cap; /* keep the batch bounded */
            want = 0;
        } else {
            b = a + sc->chunk < n ? a + sc->chunk : n;
            want = 1;
        }
        int m = b - a, all = want == 1 && m > 1, rows = want == 2 ? 1 : want ? m : 0;
        int first = want == 2 ? n - 1 : a; /* token index of the first row returned */
        float *lg = want ? sc->logits : NULL;
        if (sc->lm->forward(sc->lm->ctx, tokens + a, m, lg, all, err, errlen)) return 1;
        sc->r->forwards++;
        sc->r->tokens_forwarded += m;
        if (sc->ref) {
            float *rl = want ? sc->ref_logits : NULL;
            if (sc->ref->forward(sc->ref->ctx, tokens + a, m, rl, all, err, errlen)) return 1;
            for (int k = 0; k < rows; k++)
                compare_row(sc, sc->logits + (size_t)k * sc->vocab,
                            sc->ref_logits + (size_t)k * sc->vocab);
        }
        for (int k = 0; k < rows; k++)
            if (fn(ctx, first + k, sc->logits + (size_t)k * sc->vocab)) return 1;
        a = b;
    }
    return 0;
}

static int keep_last(void *ctx, int i, const float *logits) {
    scorer *sc = ctx;
    memcpy(sc->last, logits, (size_t)sc->vocab * sizeof(float));
    return 0;
}

/* log p(token | row) and whether it is the argmax */
static double token_logp(const float *row, int V, int token, int *is_argmax) {
    int a;
    double lse = row_lse(row, V, &a);
    if (is_argmax) *is_argmax = a == token || row[token] == row[a];
    return (double)row[token] - lse;
}

typedef struct {
    scorer *sc;
    const int *seq;
    int base;    /* position of row 0 */
    int ctx_len; /* tokens at positions >= ctx_len are scored */
    double ll;
    int greedy;
    long scored;
} cont_acc;

static void score_at(cont_acc *c, int pos, const float *row) {
    /* row holds the logits after position pos: it scores token pos + 1 */
    if (pos + 1 < c->ctx_len) return;
    int g;
    c->ll += token_logp(row, c->sc->vocab, c->seq[pos + 1], &g);
    c->greedy &= g;
    c->scored++;
}

static int score_row(void *ctx, int i, const float *logits) {
    cont_acc *c = ctx;
    score_at(c, c->base + i, logits);
    return 0;
}

static int check_tokens(const int *seq, int len, int vocab, char *err, size_t errlen) {
    for (int j = 0; j < len; j++)
        if (seq[j] < 0 || seq[j] >= vocab) {
            snprintf(err, errlen, "eval: token id %d out of range [0, %d)", seq[j], vocab);
            return 1;
        }
    return 0;
}

static int score_seqs(scorer *sc, int n, const int *const *seq, const int *len,
                      const int *ctx_len, double *ll, int *greedy, char *err, size_t errlen) {
    int min_ctx = ctx_len[0];
    set_phase(sc->lm, 0); /* scoring an item is prefill: one latency sample for all of it */
    for (int i = 0; i < n; i++) {
        if (ctx_len[i] < 1 || len[i] <= ctx_len[i]) {
            snprintf(err, errlen,
                     "eval: choice %d: need a context of at least 1 token and a non-empty "
                     "continuation (context %d, total %d)",
                     i, ctx_len[i], len[i]);
            return 1;
        }
        if (len[i] - 1 > sc->lm->max_ctx) {
            snprintf(err, errlen, "eval: choice %d: %d tokens exceed the context of %d", i,
                     len[i], sc->lm->max_ctx);
            return 1;
        }
        if (check_tokens(seq[i], len[i], sc->vocab, err, errlen)) return 1;
        if (ctx_len[i] < min_ctx) min_ctx = ctx_len[i];
    }
    /* the common prefix, capped at the shortest context */
    int P = 0;
    if (sc->o->shared_prefix && sc->lm->rewind && (!sc->ref || sc->ref->rewind)) {
        P = min_ctx;
        for (int i = 1; i < n; i++) {
            int k = 0;
            while (k < P && seq[i][k] == seq[0][k]) k++;
            P = k;
        }
    }
    if (P >= 1) {
        set_pos(sc, 0);
        if (run_tokens(sc, seq[0], P, P - 1, keep_last, sc, err, errlen)) return 1;
    }
    for (int i = 0; i < n; i++) {
        cont_acc c = {sc, seq[i], 0, ctx_len[i], 0, 1, 0};
        if (P >= 1) {
            set_pos(sc, P);
            score_at(&c, P - 1, sc->last);
            c.base = P;
            if (run_tokens(sc, seq[i] + P, len[i] - 1 - P, ctx_len[i] - 1 - P, score_row, &c,
                           err, errlen))
                return 1;
        } else { /* from scratch: the whole sequence but its last token */
            set_pos(sc, 0);
            if (run_tokens(sc, seq[i], len[i] - 1, ctx_len[i] - 1, score_row, &c, err, errlen))
                return 1;
        }
        ll[i] = c.ll;
        if (greedy) greedy[i] = c.greedy;
        sc->r->tokens_scored += c.scored;
    }
    return 0;
}

int wd_eval_score(const wd_eval_lm *lm, const wd_eval_opts *o, int n, const int *const *seq,
                  const int *len, const int *ctx_len, double *ll, int *greedy,
                  wd_eval_result *r, char *err, size_t errlen) {
    scorer sc;
    if (scorer_init(&sc, lm, o, r, err, errlen)) return 1;
    int rc = score_seqs(&sc, n, seq, len, ctx_len, ll, greedy, err, errlen);
    scorer_free(&sc);
    return rc;
}

/* ---- items --------------------------------------------------------------------------- */
static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

typedef struct {
    int n;
    int **seq;
    int *len, *ctx_len;
} tokenized;

static void tokenized_free(tokenized *t) {
    if (t->seq)
        for (int i = 0; i < t->n; i++) free(t->seq[i]);
    free(t->seq);
    free(t->len);
    free(t->ctx_len);
    memset(t, 0, sizeof(*t));
}

/* lm-evaluation-harness's _encode_pair: trailing spaces of the context move to
 * the continuation; context tokens = encode(context); continuation tokens =
 * encode(context + continuation)[len(context tokens):]. BOS is prepended to
 * both encodings. */
static int encode_pair(const wd_eval_lm *lm, const char *prefix, const char *context,
                       const char *cont, int **out, int *out_len, int *out_ctx, char *err,
                       size_t errlen) {
    char *ctx = concat(prefix, context), *whole = NULL, *c2 = NULL;
    int *ci = NULL, *wi = NULL, nc = 0, nw = 0, rc = 1;
    if (!ctx) goto oom;
    size_t l = strlen(ctx), k = l;
    while (k && ctx[k - 1] == ' ') k--;
    if (!(c2 = concat(ctx + k, cont))) goto oom;
    ctx[k] = 0;
    if (!(whole = concat(ctx, c2))) goto oom;
    int bos = lm->bos >= 0;
    if (lm->encode(lm->ctx, ctx, bos, &ci, &nc) || lm->encode(lm->ctx, whole, bos, &wi, &nw)) {
        snprintf(err, errlen, "eval: cannot tokenize an item");
        goto done;
    }
    int *seq;
    if (nw > nc) {
        if (!(seq = malloc((size_t)nw * sizeof(int)))) goto oom;
        memcpy(seq, ci, (size_t)nc * sizeof(int));
        memcpy(seq + nc, wi + nc, (size_t)(nw - nc) * sizeof(int));
        *out_len = nw;
    } else { /* the whole encodes no longer than the context: encode the continuation alone */
        int *xi = NULL, nx = 0;
        if (lm->encode(lm->ctx, c2, 0, &xi, &nx) || nx == 0) {
            free(xi);
            snprintf(err, errlen, "eval: the continuation '%.40s' encodes to no tokens", c2);
            goto done;
        }
        if (!(seq = malloc((size_t)(nc + nx) * sizeof(int)))) {
            free(xi);
            goto oom;
        }
        memcpy(seq, ci, (size_t)nc * sizeof(int));
        memcpy(seq + nc, xi, (size_t)nx * sizeof(int));
        free(xi);
        *out_len = nc + nx;
    }
    if (nc == 0) { /* no BOS and an empty context: nothing to condition on */
        free(seq);
        snprintf(err, errlen, "eval: empty context and the model has no BOS token");
        goto done;
    }
    *out = seq;
    *out_ctx = nc;
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "eval: out of memory");
done:
    free(ctx);
    free(c2);
    free(whole);
    free(ci);
    free(wi);
    return rc;
}

/* Cut tokens from the left so every sequence fits the context: a common
 * number from all choices (the shared prefix stays shared) when every context
 * keeps a token; otherwise each sequence on its own, and a continuation
 * longer than the context loses its first tokens (lm-evaluation-harness also
 * keeps only the last max_length + 1 tokens). */
static void fit_window(tokenized *t, int max_ctx, long *truncated) {
    int longest = 0;
    for (int i = 0; i < t->n; i++)
        if (t->len[i] > longest) longest = t->len[i];
    int drop = longest - 1 - max_ctx;
    if (drop <= 0) return;
    int common = 1;
    for (int i = 0; i < t->n; i++)
        if (t->ctx_len[i] - drop < 1) common = 0;
    for (int i = 0; i < t->n; i++) {
        int d = common ? drop : t->len[i] - 1 - max_ctx;
        if (d <= 0) continue;
        memmove(t->seq[i], t->seq[i] + d, (size_t)(t->len[i] - d) * sizeof(int));
        t->len[i] -= d;
        t->ctx_len[i] = t->ctx_len[i] - d < 1 ? 1 : t->ctx_len[i] - d;
    }
    (*truncated)++;
}

static int tokenize_item(const wd_eval_set *set, const wd_eval_item *it, const wd_eval_lm *lm,
                         tokenized *t, char *err, size_t errlen) {
    int n = it->n_choices;
    memset(t, 0, sizeof(*t));
    t->seq = calloc((size_t)n, sizeof(int *));
    t->len = calloc((size_t)n, sizeof(int));
    t->ctx_len = calloc((size_t)n, sizeof(int));
    if (!t->seq || !t->len || !t->ctx_len) {
        tokenized_free(t);
        snprintf(err, errlen, "eval: out of memory");
        return 1;
    }
    t->n = n;
    const char *prefix = it->prefix >= 0 ? set->prefixes[it->prefix] : "";
    for (int c = 0; c < n; c++) {
        const char *ctx = it->alt_context ? it->alt_context[c] : it->context;
        if (encode_pair(lm, prefix, ctx, it->cont[c], &t->seq[c], &t->len[c], &t->ctx_len[c], err,
                        errlen)) {
            tokenized_free(t);
            return 1;
        }
    }
    return 0;
}

static void records_line(FILE *f, json_object *o) {
    fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), f);
    fputc('\n', f);
    json_object_put(o);
}

static int eval_mc_item(scorer *sc, const wd_eval_set *set, int idx, double *ll, int *greedy,
                        char *err, size_t errlen) {
    const wd_eval_item *it = &set->items[idx];
    wd_eval_result *r = sc->r;
    tokenized t;
    if (tokenize_item(set, it, sc->lm, &t, err, errlen)) return 1;
    fit_window(&t, sc->lm->max_ctx, &r->truncated);
    int rc = score_seqs(sc, t.n, (const int *const *)t.seq, t.len, t.ctx_len, ll, greedy, err,
                        errlen);
    tokenized_free(&t);
    if (rc) {
        size_t l = strlen(err);
        snprintf(err + l, errlen > l ? errlen - l : 0, " (item %d)", idx);
        return 1;
    }
    int pred, pred_norm;
    wd_eval_pick(it->n_choices, ll, it->norm_len, &pred, &pred_norm);
    r->items++;
    r->correct += pred == it->gold;
    r->correct_norm += pred_norm == it->gold;
    if (r->groups && it->group < r->n_groups) {
        r->groups[it->group].items++;
        r->groups[it->group].correct += pred == it->gold;
    }
    if (sc->o->records) {
        json_object *o = json_object_new_object(), *a = json_object_new_array();
        json_object_object_add(o, "item", json_object_new_int(idx));
        json_object_object_add(o, "gold", json_object_new_int(it->gold));
        json_object_object_add(o, "pred", json_object_new_int(pred));
        json_object_object_add(o, "pred_norm", json_object_new_int(pred_norm));
        for (int c = 0; c < it->n_choices; c++) json_object_array_add(a, json_object_new_double(ll[c]));
        json_object_object_add(o, "loglik", a);
        a = json_object_new_array();
        for (int c = 0; c < it->n_choices; c++)
            json_object_array_add(a, json_object_new_boolean(greedy[c]));
        json_object_object_add(o, "is_greedy", a);
        records_line(sc->o->records, o);
    }
    return 0;
}

/* ---- GSM8K ----------------------------------------------------------------------------- */
static const char *gsm8k_stops[] = {"Question:", "</s>", "<|im_end|>", "\n\n"};

static int eval_gsm8k_item(scorer *sc, const wd_eval_set *set, int idx, char *err,
                           size_t errlen) {
    const wd_eval_item *it = &set->items[idx];
    const wd_eval_lm *lm = sc->lm;
    wd_eval_result *r = sc->r;
    char *prompt = concat(it->prefix >= 0 ? set->prefixes[it->prefix] : "", it->context);
    int *ids = NULL, n = 0, rc = 1, max_new = sc->o->max_new_tokens;
    int *gen = NULL, ng = 0;
    char *text = NULL;
    if (!prompt) goto oom;
    if (lm->encode(lm->ctx, prompt, lm->bos >= 0, &ids, &n) || n == 0) {
        snprintf(err, errlen, "eval: cannot tokenize item %d", idx);
        goto done;
    }
    if (max_new < 1) max_new = 1;
    if (max_new > lm->max_ctx / 2) max_new = lm->max_ctx / 2 > 0 ? lm->max_ctx / 2 : 1;
    if (n + max_new > lm->max_ctx) { /* keep the end of the prompt */
        int drop = n + max_new - lm->max_ctx;
        memmove(ids, ids + drop, (size_t)(n - drop) * sizeof(int));
        n -= drop;
        r->truncated++;
    }
    if (check_tokens(ids, n, sc->vocab, err, errlen)) goto done;
    if (!(gen = malloc((size_t)max_new * sizeof(int)))) goto oom;
    set_pos(sc, 0);
    set_phase(lm, 0); /* the prompt: time to first token */
    if (run_tokens(sc, ids, n, n - 1, keep_last, sc, err, errlen)) goto done;
    set_phase(lm, 1); /* generated tokens: time per output token */
    for (int step = 0; step < max_new; step++) {
        if (sc->o->stop && *sc->o->stop) { /* interrupted: the item does not count */
            rc = 0;
            goto done;
        }
        int next = 0;
        for (int v = 1; v < sc->vocab; v++)
            if (sc->last[v] > sc->last[next]) next = v;
        if (next == lm->eos) break;
        gen[ng++] = next;
        r->tokens_generated++;
        free(text);
        if (!(text = lm->decode(lm->ctx, gen, ng))) goto oom;
        char *cut = NULL;
        for (size_t s = 0; s < sizeof(gsm8k_stops) / sizeof(gsm8k_stops[0]); s++) {
            char *p = strstr(text, gsm8k_stops[s]);
            if (p && (!cut || p < cut)) cut = p;
        }
        if (cut) {
            *cut = 0;
            break;
        }
        if (step + 1 == max_new || lm->get_pos(lm->ctx) >= lm->max_ctx) break;
        if (run_tokens(sc, &next, 1, 0, keep_last, sc, err, errlen)) goto done;
    }
    if (!text && !(text = lm->decode(lm->ctx, gen, ng))) goto oom;
    char pred[128];
    wd_eval_gsm8k_extract(text, pred, sizeof(pred));
    int ok = pred[0] && !strcmp(pred, it->target);
    r->items++;
    r->correct += ok;
    r->correct_norm += ok;
    if (sc->o->records) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "item", json_object_new_int(idx));
        json_object_object_add(o, "target", json_object_new_string(it->target));
        json_object_object_add(o, "pred", json_object_new_string(pred));
        json_object_object_add(o, "correct", json_object_new_boolean(ok));
        char *u = wd_cli_utf8(text); /* JSON is UTF-8; generated bytes need not be */
        json_object_object_add(o, "output", json_object_new_string(u ? u : ""));
        free(u);
        records_line(sc->o->records, o);
    }
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "eval: out of memory");
done:
    free(prompt);
    free(ids);
    free(gen);
    free(text);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------------------- */
typedef struct {
    scorer *sc;
    const int *ids;
    int begin, first; /* tokens at positions >= first are scored */
    double nll, nll_sq;
    long count;
} ppl_acc;

static int ppl_row(void *ctx, int i, const float *logits) {
    ppl_acc *p = ctx;
    int pos = p->begin + i;
    if (pos + 1 < p->first) return 0;
    double nll = -token_logp(logits, p->sc->vocab, p->ids[pos + 1], NULL);
    p->nll += nll;
    p->nll_sq += nll * nll;
    p->count++;
    return 0;
}

static int eval_perplexity(scorer *sc, const wd_eval_set *set, int limit, char *err,
                           size_t errlen) {
    const wd_eval_lm *lm = sc->lm;
    wd_eval_result *r = sc->r;
    int *ids = NULL, n = 0;
    if (lm->encode(lm->ctx, set->text, lm->bos >= 0, &ids, &n)) {
        snprintf(err, errlen, "%s: cannot tokenize", set->path);
        return 1;
    }
    if (n < 2) {
        free(ids);
        snprintf(err, errlen, "%s: the text is %d token(s), need at least 2", set->path, n);
        return 1;
    }
    if (check_tokens(ids, n, sc->vocab, err, errlen)) {
        free(ids);
        return 1;
    }
    int W = sc->o->ppl_window > 0 ? sc->o->ppl_window : lm->max_ctx;
    if (W > lm->max_ctx + 1) W = lm->max_ctx + 1; /* the last token of a window is not run */
    if (W < 2) W = 2;
    int S = sc->o->ppl_stride > 0 ? sc->o->ppl_stride : W / 2;
    if (S < 1) S = 1;
    if (S > W - 1) S = W - 1;
    long windows = 1;
    for (long b = 0; b + W < n; b += S) windows++;
    if (limit > 0 && limit < windows) windows = limit;
    r->items_total = windows;
    r->ppl_bytes = 0;
    int begin = 0, prev_end = 0, rc = 0;
    for (long w = 0; w < windows; w++) {
        if (sc->o->stop && *sc->o->stop) {
            r->interrupted = 1;
            break;
        }
        int end = begin + W < n ? begin + W : n;
        ppl_acc p = {sc, ids, begin, prev_end > begin + 1 ? prev_end : begin + 1, 0, 0, 0};
        set_pos(sc, 0);
        set_phase(lm, 0);
        if (run_tokens(sc, ids + begin, end - 1 - begin, p.first - 1 - begin, ppl_row, &p, err,
                       errlen)) {
            rc = 1;
            break;
        }
        r->nll_sum += p.nll;
        r->nll_sq_sum += p.nll_sq;
        r->ppl_tokens += p.count;
        r->tokens_scored += p.count;
        r->items++;
        if (sc->o->records) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "window", json_object_new_int((int)w));
            json_object_object_add(o, "begin", json_object_new_int(begin));
            json_object_object_add(o, "end", json_object_new_int(end));
            json_object_object_add(o, "scored", json_object_new_int64(p.count));
            json_object_object_add(o, "nll", json_object_new_double(p.nll));
            records_line(sc->o->records, o);
        }
        if (sc->o->progress) sc->o->progress(sc->o->progress_ctx, r->items, windows);
        prev_end = end;
        if (end == n) break;
        begin += S;
    }
    /* bytes of the scored text (all of it when every window ran) */
    if (r->items == windows && prev_end == n) {
        r->ppl_bytes = set->text_len;
    } else if (prev_end > 0) {
        char *t = lm->decode(lm->ctx, ids, prev_end);
        r->ppl_bytes = t ? strlen(t) : 0;
        free(t);
    }
    free(ids);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------------ */
int wd_eval_run(const wd_eval_set *set, const int *order, int n, const wd_eval_lm *lm,
                const wd_eval_opts *o, wd_eval_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof(*r));
    r->task = set->task;
    scorer sc;
    if (scorer_init(&sc, lm, o, r, err, errlen)) return 1;
    double t0 = now_s();
    int rc = 0;
    if (set->task == WD_EVAL_PERPLEXITY) {
        rc = eval_perplexity(&sc, set, n, err, errlen);
    } else {
        if (n <= 0 || n > set->n_items) n = set->n_items;
        r->items_total = n;
        if (set->n_groups > 0) {
            r->groups = calloc((size_t)set->n_groups, sizeof(wd_eval_group));
            if (!r->groups) {
                snprintf(err, errlen, "eval: out of memory");
                scorer_free(&sc);
                return 1;
            }
            r->n_groups = set->n_groups;
            for (int g = 0; g < set->n_groups; g++)
                snprintf(r->groups[g].name, sizeof(r->groups[g].name), "%s", set->groups[g]);
        }
        int maxc = 1;
        for (int i = 0; i < set->n_items; i++)
            if (set->items[i].n_choices > maxc) maxc = set->items[i].n_choices;
        double *ll = malloc((size_t)maxc * sizeof(double));
        int *greedy = malloc((size_t)maxc * sizeof(int));
        if (!ll || !greedy) {
            snprintf(err, errlen, "eval: out of memory");
            rc = 1;
        }
        for (int k = 0; k < n && !rc; k++) {
            if (o->stop && *o->stop) {
                r->interrupted = 1;
                break;
            }
            int idx = order ? order[k] : k;
            if (idx < 0 || idx >= set->n_items) {
                snprintf(err, errlen, "eval: item index %d out of range", idx);
                rc = 1;
                break;
            }
            rc = set->task == WD_EVAL_GSM8K
                     ? eval_gsm8k_item(&sc, set, idx, err, errlen)
                     : eval_mc_item(&sc, set, idx, ll, greedy, err, errlen);
            if (!rc && o->progress) o->progress(o->progress_ctx, r->items, n);
        }
        /* a GSM8K item cut short by the stop flag is not counted */
        if (o->stop && *o->stop && r->items < n) r->interrupted = 1;
        free(ll);
        free(greedy);
    }
    r->seconds = now_s() - t0;
    scorer_free(&sc);
    wd_eval_result_finish(r);
    return rc;
}

/* ---- JSON ------------------------------------------------------------------------------------ */
static json_object *num(double v) { return isfinite(v) ? json_object_new_double(v) : NULL; }

json_object *wd_eval_metrics_json(const wd_eval_result *r) {
    json_object *m = json_object_new_object();
    if (r->task == WD_EVAL_PERPLEXITY) {
        json_object_object_add(m, "ppl", num(r->ppl));
        json_object_object_add(m, "ppl_stderr", num(r->ppl_stderr));
        json_object_object_add(m, "nll", num(r->nll_mean));
        json_object_object_add(m, "nll_stderr", num(r->nll_stderr));
        json_object_object_add(m, "bits_per_byte", num(r->bits_per_byte));
        json_object_object_add(m, "tokens", json_object_new_int64(r->ppl_tokens));
        json_object_object_add(m, "bytes", json_object_new_int64((int64_t)r->ppl_bytes));
    } else if (r->task == WD_EVAL_GSM8K) {
        json_object_object_add(m, "exact_match", num(r->acc));
        json_object_object_add(m, "exact_match_stderr", num(r->acc_stderr));
        json_object_object_add(m, "correct", json_object_new_int64(r->correct));
    } else {
        json_object_object_add(m, "acc", num(r->acc));
        json_object_object_add(m, "acc_stderr", num(r->acc_stderr));
        json_object_object_add(m, "acc_norm", num(r->acc_norm));
        json_object_object_add(m, "acc_norm_stderr", num(r->acc_norm_stderr));
        json_object_object_add(m, "correct", json_object_new_int64(r->correct));
        json_object_object_add(m, "correct_norm", json_object_new_int64(r->correct_norm));
    }
    return m;
}

json_object *wd_eval_groups_json(const wd_eval_result *r) {
    if (!r->n_groups) return NULL;
    json_object *g = json_object_new_object();
    for (int i = 0; i < r->n_groups; i++) {
        const wd_eval_group *x = &r->groups[i];
        if (!x->items) continue;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "items", json_object_new_int64(x->items));
        json_object_object_add(o, "acc", num((double)x->correct / x->items));
        json_object_object_add(o, "acc_stderr", num(wd_eval_binary_stderr(x->correct, x->items)));
        json_object_object_add(g, x->name, o);
    }
    return g;
}

json_object *wd_eval_agreement_json(const wd_eval_result *r) {
    if (!r->agree_positions) return NULL;
    json_object *a = json_object_new_object();
    json_object_object_add(a, "reference", json_object_new_string("topk"));
    json_object_object_add(a, "positions", json_object_new_int64(r->agree_positions));
    json_object_object_add(a, "token_agreement", num(r->agreement));
    json_object_object_add(a, "kl_mean", num(r->kl_mean));
    json_object_object_add(a, "kl_max", num(r->kl_max));
    return a;
}

json_object *wd_eval_throughput_json(const wd_eval_result *r) {
    json_object *t = json_object_new_object();
    double s = r->seconds > 0 ? r->seconds : 1e-12;
    json_object_object_add(t, "seconds", num(r->seconds));
    json_object_object_add(t, "items_per_s", num(r->items / s));
    json_object_object_add(t, "tokens_per_s", num(r->tokens_forwarded / s));
    json_object_object_add(t, "forwards", json_object_new_int64(r->forwards));
    json_object_object_add(t, "tokens_forwarded", json_object_new_int64(r->tokens_forwarded));
    json_object_object_add(t, "tokens_scored", json_object_new_int64(r->tokens_scored));
    json_object_object_add(t, "tokens_generated", json_object_new_int64(r->tokens_generated));
    return t;
}
