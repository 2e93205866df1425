/* MoEfication: a dense Llama model -> a Mixtral-layout MoE whose experts are
 * the dense FFN's neurons split into E equal groups, with a learned router.
 *
 * 1. Calibration: the model generates its own text from a few neutral prompts
 *    (sampled, temperature 0.8, top-p 0.95, the given seed); the FFN input u
 *    of every layer is recorded for every token it processes.
 * 2. Experts: per layer, neuron i's activation a_i = silu(w1_i u) (w3_i u)
 *    over the calibration tokens; neurons are clustered by the cosine
 *    similarity of |a_i| (co-activation) with balanced k-means (capacity F/E
 *    per cluster, greedy assignment in order of similarity, k-means++ seeds).
 *    Expert e is w1/w3 rows and w2 columns of its neurons (ascending order).
 * 3. Router: the linear map W_g [E x H] (no bias, as Mixtral) whose softmax
 *    ranks experts by their output norm: ridge regression of the
 *    per-token-centred log ||y_e(u)|| on u, so softmax(W_g u)_e is the
 *    predicted share of ||y_e||. The ridge strength is chosen on held-out
 *    calibration sequences (top-k overlap with the oracle).
 * 4. Combine: the plain sum of the chosen experts' outputs (config
 *    "moe_combine": "sum"), so choosing all E gives the dense FFN. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "host/host.h"
#include "host/moefy_internal.h"

static const char *const calib_prompts[] = {
    "The",           "Once upon a time,",       "In this article, we",
    "Here are some", "The history of",          "My favorite",
    "Yesterday I",   "An important thing about",
};
#define N_PROMPTS ((int)(sizeof(calib_prompts) / sizeof(calib_prompts[0])))

const char *wd_moefy_prompt(int i) { return i >= 0 && i < N_PROMPTS ? calib_prompts[i] : NULL; }

void wd_moefy_default(wd_moefy_opts *o) {
    memset(o, 0, sizeof(*o));
    o->n_experts = 8;
    o->top_k = 0; /* 3/4 of n_experts, rounded up (docs/moefication.md) */
    o->calib_tokens = 1024;
    o->seq_len = 128;
    o->seed = 1;
    o->temperature = 0.8f;
    o->top_p = 0.95f;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---- phase 1: calibration text and the FFN inputs ------------------------ */
typedef struct {
    wd_session *s;
    float *u; /* [L][cap][H] */
    int cap, off, H;
} capture_ctx;

static int capture_run(void *ctx, int layer, const float *u, const wd_selection *sel,
                       float *out) {
    capture_ctx *c = ctx;
    int n = sel->n_tokens;
    if (c->off + n > c->cap) return 1;
    memcpy(c->u + ((size_t)layer * c->cap + c->off) * c->H, u, (size_t)n * c->H * 4);
    return wd_moe_run_selection(c->s, layer, u, sel, out);
}

/* Generates sequences until cap rows are recorded; seq[i] = first row of
 * sequence i (seq[n_seq] = rows). */
static int calibrate(const wd_model *m, const wd_moefy_opts *o, wd_pool *pool, float *u, int cap,
                     int *seq, int *n_seq, char *err, size_t errlen) {
    int V = m->cfg.vocab, rc = 1, *ids = NULL, *idx = malloc((size_t)V * sizeof(int));
    float *logits = malloc((size_t)V * sizeof(float));
    wd_session *s = wd_session_create(m, o->seq_len + 1, pool);
    if (!idx || !logits || !s) {
        snprintf(err, errlen, "moefy: out of memory for calibration");
        goto done;
    }
    capture_ctx cc = {s, u, cap, 0, m->cfg.hidden};
    wd_moe_hooks hooks = {&cc, NULL, capture_run};
    wd_session_set_hooks(s, &hooks);
    wd_rng rng;
    wd_rng_seed(&rng, o->seed);
    double t0 = now_s();
    int i = 0;
    for (; cc.off < cap; i++) {
        int n_ids = 0;
        free(ids);
        ids = NULL;
        const char *prompt = calib_prompts[i % N_PROMPTS];
        if (m->tok) {
            if (wd_tokenizer_encode(m->tok, prompt, 1, &ids, &n_ids) || n_ids < 1) {
                snprintf(err, errlen, "moefy: cannot encode the calibration prompt \"%s\"",
                         prompt);
                goto done;
            }
        } else {
            ids = malloc(sizeof(int));
            if (!ids) goto oom;
            ids[0] = m->cfg.bos_id;
            n_ids = 1;
        }
        if (n_ids > o->seq_len - 1) n_ids = o->seq_len - 1;
        if (n_ids > cap - cc.off) n_ids = cap - cc.off;
        seq[i] = cc.off;
        wd_session_reset(s);
        if (wd_forward(s, ids, n_ids, logits, 0, err, errlen)) goto done;
        cc.off += n_ids;
        for (int len = n_ids; len < o->seq_len - 1 && cc.off < cap; len++) {
            int tok = wd_sample(logits, V, o->temperature, o->top_p, &rng, idx);
            if (tok == m->cfg.eos_id) break;
            if (wd_forward(s, &tok, 1, logits, 0, err, errlen)) goto done;
            cc.off++;
        }
        if (o->progress)
            fprintf(o->progress, "\rmoefy: calibration %d/%d tokens (%d sequences, %.1f s)", cc.off,
                    cap, i + 1, now_s() - t0);
    }
    if (o->progress) fprintf(o->progress, "\n");
    seq[i] = cc.off;
    *n_seq = i;
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "moefy: out of memory for calibration");
done:
    wd_session_free(s);
    free(ids);
    free(idx);
    free(logits);
    return rc;
}

/* ---- phase 2: balanced clustering of neurons ----------------------------- */
typedef struct {
    float sim;
    int i, e;
} pair;

static int pair_cmp(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->sim != y->sim) return x->sim < y->sim ? 1 : -1;
    if (x->i != y->i) return x->i < y->i ? -1 : 1;
    return x->e < y->e ? -1 : x->e > y->e;
}

static void normalise(float *v, int n) {
    double q = 0;
    for (int i = 0; i < n; i++) q += (double)v[i] * v[i];
    if (q > 0) {
        float r = (float)(1 / sqrt(q));
        for (int i = 0; i < n; i++) v[i] *= r;
    }
}

static float dot(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* X: [F][T] unit rows. assign[F] <- cluster of each point, every cluster
 * exactly F/E points. Returns the number of iterations, -1 out of memory. */
int wd_moefy_cluster(const float *X, int F, int T, int E, uint64_t seed, int *assign) {
    int cap = F / E, iters = 0;
    float *C = malloc((size_t)E * T * sizeof(float)), *best = malloc((size_t)F * sizeof(float));
    pair *pr = malloc((size_t)F * E * sizeof(pair));
    int *cnt = malloc((size_t)E * sizeof(int)), *prev = malloc((size_t)F * sizeof(int));
    if (!C || !best || !pr || !cnt || !prev) {
        iters = -1;
        goto done;
    }
    /* k-means++ seeds: the next centre with probability ~ 1 - best similarity */
    wd_rng rng;
    wd_rng_seed(&rng, seed);
    int first = (int)(wd_rng_uniform(&rng) * F);
    memcpy(C, X + (size_t)first * T, (size_t)T * 4);
    for (int i = 0; i < F; i++) best[i] = dot(X + (size_t)i * T, C, T);
    for (int e = 1; e < E; e++) {
        double tot = 0;
        for (int i = 0; i < F; i++) tot += 1.0 - best[i] > 0 ? 1.0 - best[i] : 0;
        double r = wd_rng_uniform(&rng) * tot, acc = 0;
        int pick = F - 1;
        for (int i = 0; i < F; i++) {
            acc += 1.0 - best[i] > 0 ? 1.0 - best[i] : 0;
            if (acc > r) {
                pick = i;
                break;
            }
        }
        memcpy(C + (size_t)e * T, X + (size_t)pick * T, (size_t)T * 4);
        for (int i = 0; i < F; i++) {
            float sm = dot(X + (size_t)i * T, C + (size_t)e * T, T);
            if (sm > best[i]) best[i] = sm;
        }
    }
    for (int i = 0; i < F; i++) prev[i] = -1;
    for (iters = 1; iters <= 50; iters++) {
        for (int i = 0; i < F; i++)
            for (int e = 0; e < E; e++)
                pr[(size_t)i * E + e] = (pair){dot(X + (size_t)i * T, C + (size_t)e * T, T), i, e};
        qsort(pr, (size_t)F * E, sizeof(pair), pair_cmp);
        for (int i = 0; i < F; i++) assign[i] = -1;
        memset(cnt, 0, (size_t)E * sizeof(int));
        for (size_t p = 0; p < (size_t)F * E; p++)
            if (assign[pr[p].i] < 0 && cnt[pr[p].e] < cap) assign[pr[p].i] = pr[p].e, cnt[pr[p].e]++;
        if (!memcmp(assign, prev, (size_t)F * sizeof(int))) break;
        memcpy(prev, assign, (size_t)F * sizeof(int));
        memset(C, 0, (size_t)E * T * sizeof(float));
        for (int i = 0; i < F; i++) {
            float *c = C + (size_t)assign[i] * T;
            const float *x = X + (size_t)i * T;
            for (int t = 0; t < T; t++) c[t] += x[t];
        }
        for (int e = 0; e < E; e++) normalise(C + (size_t)e * T, T);
    }
done:
    free(C);
    free(best);
    free(pr);
    free(cnt);
    free(prev);
    return iters;
}

/* ---- phase 3: the router -------------------------------------------------- */
/* Cholesky solve of (G + lambda I) w = b for nr right-hand sides b [H][nr]
 * (overwritten by w). G [H][H] symmetric positive semi-definite. */
static int ridge_solve(const double *G, int H, double lambda, double *b, int nr, double *L) {
    for (int i = 0; i < H; i++)
        for (int j = 0; j <= i; j++) {
            double s = G[(size_t)i * H + j] + (i == j ? lambda : 0);
            for (int k = 0; k < j; k++) s -= L[(size_t)i * H + k] * L[(size_t)j * H + k];
            if (i == j) {
                if (!(s > 0)) return 1;
                L[(size_t)i * H + i] = sqrt(s);
            } else {
                L[(size_t)i * H + j] = s / L[(size_t)j * H + j];
            }
        }
    for (int r = 0; r < nr; r++) {
        for (int i = 0; i < H; i++) { /* L y = b */
            double s = b[(size_t)i * nr + r];
            for (int k = 0; k < i; k++) s -= L[(size_t)i * H + k] * b[(size_t)k * nr + r];
            b[(size_t)i * nr + r] = s / L[(size_t)i * H + i];
        }
        for (int i = H - 1; i >= 0; i--) { /* L^T w = y */
            double s = b[(size_t)i * nr + r];
            for (int k = i + 1; k < H; k++) s -= L[(size_t)k * H + i] * b[(size_t)k * nr + r];
            b[(size_t)i * nr + r] = s / L[(size_t)i * H + i];
        }
    }
    return 0;
}

/* |topk(a) & topk(b)| / k for rows of E scores */
static double topk_overlap(const float *a, const float *b, int E, int k) {
    int ia[64], ib[64], n = 0;
    wd_topk(a, E, k, ia);
    wd_topk(b, E, k, ib);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) n += ia[i] == ib[j];
    return (double)n / k;
}

/* Fits W [E][H] (row-major, f32) to Z [T][E] from U [T][H]; val[t] marks
 * held-out rows used to pick lambda. Returns the held-out top-k overlap
 * (-1 when there are no held-out rows) in *overlap. */
static int fit_router(wd_pool *pool, const float *U, const float *Z, const unsigned char *val,
                      int T, int H, int E, int k, float *W, double *overlap) {
    int rc = 1;
    int n_val = 0;
    for (int t = 0; t < T; t++) n_val += val[t];
    float *Ut = malloc((size_t)H * T * sizeof(float)), *Gf = malloc((size_t)H * H * sizeof(float));
    double *G = malloc((size_t)H * H * sizeof(double)), *Gv = malloc((size_t)H * H * sizeof(double));
    double *L = malloc((size_t)H * H * sizeof(double)), *b = malloc((size_t)H * E * sizeof(double));
    float *pred = malloc((size_t)E * sizeof(float));
    if (!Ut || !Gf || !G || !Gv || !L || !b || !pred) goto done;
    /* G = U^T U over the training rows, Gv over the held-out rows */
    for (int pass = 0; pass < 2; pass++) {
        memset(Ut, 0, (size_t)H * T * sizeof(float));
        for (int t = 0; t < T; t++)
            if (val[t] == pass)
                for (int i = 0; i < H; i++) Ut[(size_t)i * T + t] = U[(size_t)t * H + i];
        wd_matmul(pool, Gf, Ut, Ut, WD_DT_F32, H, H, T);
        double *dst = pass ? Gv : G;
        for (size_t i = 0; i < (size_t)H * H; i++) dst[i] = Gf[i];
    }
    double tr = 0;
    for (int i = 0; i < H; i++) tr += G[(size_t)i * H + i] + Gv[(size_t)i * H + i];
    double scale = tr > 0 ? tr / H : 1;
    static const double alphas[] = {1e-3, 1e-2, 1e-1, 1};
    double best_a = 1e-2, best_o = -1;
    if (n_val > 0 && n_val < T) {
        for (int a = 0; a < 4; a++) {
            for (int i = 0; i < H; i++)
                for (int e = 0; e < E; e++) {
                    double s = 0;
                    for (int t = 0; t < T; t++)
                        if (!val[t]) s += (double)U[(size_t)t * H + i] * Z[(size_t)t * E + e];
                    b[(size_t)i * E + e] = s;
                }
            if (ridge_solve(G, H, alphas[a] * scale, b, E, L)) continue;
            double ov = 0;
            for (int t = 0; t < T; t++) {
                if (!val[t]) continue;
                for (int e = 0; e < E; e++) {
                    double s = 0;
                    for (int i = 0; i < H; i++) s += U[(size_t)t * H + i] * b[(size_t)i * E + e];
                    pred[e] = (float)s;
                }
                ov += topk_overlap(pred, Z + (size_t)t * E, E, k);
            }
            ov /= n_val;
            if (ov > best_o) best_o = ov, best_a = alphas[a];
        }
    }
    *overlap = best_o;
    /* refit on every row */
    for (size_t i = 0; i < (size_t)H * H; i++) G[i] += Gv[i];
    for (int i = 0; i < H; i++)
        for (int e = 0; e < E; e++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += (double)U[(size_t)t * H + i] * Z[(size_t)t * E + e];
            b[(size_t)i * E + e] = s;
        }
    if (ridge_solve(G, H, best_a * scale, b, E, L)) goto done;
    for (int e = 0; e < E; e++)
        for (int i = 0; i < H; i++) W[(size_t)e * H + i] = (float)b[(size_t)i * E + e];
    rc = 0;
done:
    free(Ut);
    free(Gf);
    free(G);
    free(Gv);
    free(L);
    free(b);
    free(pred);
    return rc;
}

/* ---- per layer ----------------------------------------------------------- */
static float silu(float x) { return x / (1.0f + expf(-x)); }

/* Is every value exactly an F16? */
static int f16_exact(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float r;
        r = wd_f16_to_f32(wd_f32_to_f16(v[i]));
        if (r != v[i] && !(isnan(r) && isnan(v[i]))) return 0;
    }
    return 1;
}

static int moefy_layer(const wd_model *m, int l, const wd_moefy_opts *o, wd_pool *pool,
                       const float *U, int T, const unsigned char *val, wd_moefy_layer *out,
                       char *err, size_t errlen) {
    const wd_layer *Ld = &m->layers[l];
    int H = m->cfg.hidden, F = m->cfg.ffn, E = o->n_experts, Fe = F / E, k = o->top_k;
    int rc = 1;
    float *g = malloc((size_t)T * F * sizeof(float)), *a = malloc((size_t)T * F * sizeof(float));
    float *X = malloc((size_t)F * T * sizeof(float)), *W2 = malloc((size_t)H * F * sizeof(float));
    float *Ae = malloc((size_t)T * Fe * sizeof(float)), *W2e = malloc((size_t)H * Fe * sizeof(float));
    float *Y = malloc((size_t)T * H * sizeof(float)), *Z = malloc((size_t)T * E * sizeof(float));
    float *P = malloc((size_t)E * sizeof(float));
    int *assign = malloc((size_t)F * sizeof(int)), *idx = malloc((size_t)E * sizeof(int));
    if (!g || !a || !X || !W2 || !Ae || !W2e || !Y || !Z || !P || !assign || !idx) goto oom;
    /* activations */
    wd_matmul(pool, g, U, Ld->w1[0]->data, Ld->w1[0]->dtype, T, F, H);
    wd_matmul(pool, a, U, Ld->w3[0]->data, Ld->w3[0]->dtype, T, F, H);
    for (size_t i = 0; i < (size_t)T * F; i++) a[i] *= silu(g[i]);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < F; i++) X[(size_t)i * T + t] = fabsf(a[(size_t)t * F + i]);
    for (int i = 0; i < F; i++) normalise(X + (size_t)i * T, T);
    out->iters = wd_moefy_cluster(X, F, T, E, o->seed + 1000003ull * (uint64_t)(l + 1), assign);
    if (out->iters < 0) goto oom;
    for (int e = 0, p = 0; e < E; e++)
        for (int i = 0; i < F; i++)
            if (assign[i] == e) out->perm[p++] = i;
    /* each expert's output norm on every token */
    for (int r = 0; r < H; r++) wd_row_to_f32(W2 + (size_t)r * F, Ld->w2[0]->data, Ld->w2[0]->dtype, r, F);
    for (int e = 0; e < E; e++) {
        const int *pe = out->perm + (size_t)e * Fe;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < Fe; j++) Ae[(size_t)t * Fe + j] = a[(size_t)t * F + pe[j]];
        for (int r = 0; r < H; r++)
            for (int j = 0; j < Fe; j++) W2e[(size_t)r * Fe + j] = W2[(size_t)r * F + pe[j]];
        wd_matmul(pool, Y, Ae, W2e, WD_DT_F32, T, H, Fe);
        for (int t = 0; t < T; t++) {
            double q = 0;
            for (int i = 0; i < H; i++) q += (double)Y[(size_t)t * H + i] * Y[(size_t)t * H + i];
            Z[(size_t)t * E + e] = (float)(0.5 * log(q + 1e-30));
        }
    }
    for (int t = 0; t < T; t++) { /* centre per token: softmax is shift-invariant */
        double mean = 0;
        for (int e = 0; e < E; e++) mean += Z[(size_t)t * E + e];
        mean /= E;
        for (int e = 0; e < E; e++) Z[(size_t)t * E + e] -= (float)mean;
    }
    if (fit_router(pool, U, Z, val, T, H, E, k, out->router, &out->heldout_overlap)) {
        snprintf(err, errlen, "moefy: layer %d: the router fit failed (singular system)", l);
        goto done;
    }
    /* how often each expert is in the router's and the oracle's top-k */
    memset(out->router_freq, 0, (size_t)E * sizeof(double));
    memset(out->oracle_freq, 0, (size_t)E * sizeof(double));
    for (int t = 0; t < T; t++) {
        wd_matmul(NULL, P, U + (size_t)t * H, out->router, WD_DT_F32, 1, E, H);
        wd_topk(P, E, k, idx);
        for (int j = 0; j < k; j++) out->router_freq[idx[j]] += 1.0 / T;
        wd_topk(Z + (size_t)t * E, E, k, idx);
        for (int j = 0; j < k; j++) out->oracle_freq[idx[j]] += 1.0 / T;
    }
    /* the down projection, columns permuted: as read when it is F32/F16/BF16,
     * else (a quantised block would be split) F16 when every value is exactly
     * an F16, else F32 */
    wd_dtype dt2 = Ld->w2[0]->dtype;
    if (wd_dtype_quantised(dt2)) dt2 = f16_exact(W2, (size_t)H * F) ? WD_DT_F16 : WD_DT_F32;
    out->down_dtype = dt2;
    size_t es = wd_dtype_bytes(dt2, 1);
    out->down = malloc((size_t)H * F * es);
    if (!out->down) goto oom;
    for (int e = 0; e < E; e++)
        for (int r = 0; r < H; r++)
            for (int j = 0; j < Fe; j++) {
                unsigned char *dst = out->down + (((size_t)e * H + r) * Fe + j) * es;
                int col = out->perm[(size_t)e * Fe + j];
                if (wd_dtype_quantised(Ld->w2[0]->dtype)) {
                    float v = W2[(size_t)r * F + col];
                    if (dt2 == WD_DT_F32) memcpy(dst, &v, 4);
                    else {
                        uint16_t h = wd_f32_to_f16(v);
                        memcpy(dst, &h, 2);
                    }
                } else {
                    memcpy(dst, (const unsigned char *)Ld->w2[0]->data + ((size_t)r * F + col) * es,
                           es);
                }
            }
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "moefy: out of memory at layer %d", l);
done:
    free(g);
    free(a);
    free(X);
    free(W2);
    free(Ae);
    free(W2e);
    free(Y);
    free(Z);
    free(P);
    free(assign);
    free(idx);
    return rc;
}

void wd_moefy_result_free(wd_moefy_result *r) {
    if (!r) return;
    if (r->layers)
        for (int l = 0; l < r->n_layers; l++) {
            free(r->layers[l].perm);
            free(r->layers[l].router);
            free(r->layers[l].router_freq);
            free(r->layers[l].oracle_freq);
            free(r->layers[l].down);
        }
    free(r->layers);
    memset(r, 0, sizeof(*r));
}

int wd_moefy_build(const wd_model *m, const wd_moefy_opts *opt, wd_pool *pool,
                   wd_moefy_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof(*res));
    wd_moefy_opts o = *opt;
    const wd_config *c = &m->cfg;
    int H = c->hidden, L = c->n_layers, E = o.n_experts;
    if (m->layers[0].gate || c->n_experts != 1) {
        snprintf(err, errlen, "%s: moefy needs a dense model (model_type llama, one FFN); this "
                 "one has %d experts", m->path, c->n_experts);
        return 1;
    }
    if (E < 2 || E > 64 || c->ffn % E) {
        snprintf(err, errlen, "moefy: --experts %d must be in [2, 64] and divide the FFN width %d",
                 E, c->ffn);
        return 1;
    }
    if (!o.top_k) o.top_k = (3 * E + 3) / 4;
    if (o.top_k < 1 || o.top_k > E) {
        snprintf(err, errlen, "moefy: --top-k %d must be in [1, %d]", o.top_k, E);
        return 1;
    }
    if (o.seq_len < 2 || o.calib_tokens < 2 * E) {
        snprintf(err, errlen, "moefy: need at least %d calibration tokens and sequences of 2",
                 2 * E);
        return 1;
    }
    if (o.seq_len > c->max_pos) o.seq_len = c->max_pos;
    int T = o.calib_tokens, max_seq = T + 1, n_seq = 0, rc = 1;
    float *U = malloc((size_t)L * T * H * sizeof(float));
    int *seq = malloc((size_t)(max_seq + 1) * sizeof(int));
    unsigned char *val = calloc((size_t)T, 1);
    res->layers = calloc((size_t)L, sizeof(wd_moefy_layer));
    if (!U || !seq || !val || !res->layers) goto oom;
    res->n_layers = L;
    res->opts = o;
    double t0 = now_s();
    if (calibrate(m, &o, pool, U, T, seq, &n_seq, err, errlen)) goto done;
    res->t_calib = now_s() - t0;
    res->n_seq = n_seq;
    /* every 8th sequence is held out for the router's ridge strength */
    for (int i = 0; i < n_seq; i++)
        if (i % 8 == 7 || (n_seq > 1 && n_seq < 8 && i == n_seq - 1))
            for (int t = seq[i]; t < seq[i + 1]; t++) val[t] = 1;
    t0 = now_s();
    for (int l = 0; l < L; l++) {
        wd_moefy_layer *ly = &res->layers[l];
        ly->perm = malloc((size_t)c->ffn * sizeof(int));
        ly->router = malloc((size_t)E * H * sizeof(float));
        ly->router_freq = malloc((size_t)E * sizeof(double));
        ly->oracle_freq = malloc((size_t)E * sizeof(double));
        if (!ly->perm || !ly->router || !ly->router_freq || !ly->oracle_freq) goto oom;
        double tl = now_s();
        if (moefy_layer(m, l, &o, pool, U + (size_t)l * T * H, T, val, ly, err, errlen))
            goto done;
        if (o.progress)
            fprintf(o.progress, "moefy: layer %d/%d: clusters in %d iterations, router top-%d "
                    "overlap with the oracle on held-out text %.1f %%, %.2f s\n", l + 1, L,
                    ly->iters, o.top_k, ly->heldout_overlap < 0 ? 0 : 100 * ly->heldout_overlap,
                    now_s() - tl);
    }
    res->t_layers = now_s() - t0;
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "moefy: out of memory");
done:
    free(U);
    free(seq);
    free(val);
    if (rc) wd_moefy_result_free(res);
    return rc;
}
