/* The forward pass: one session = KV cache + scratch + position.
 * Each layer runs the BS part (attention, router), asks the expert selection
 * hook which experts every token uses, runs them and combines. A dense model
 * (no router) runs its FFN directly, as a dense engine does; with hooks (a
 * scenario) its FFN is expert 0 with probability 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"

struct wd_session {
    const wd_model *m;
    wd_pool *pool;
    int max_ctx, pos;
    float *k_cache, *v_cache; /* [layer][ctx][kv_dim] */
    wd_moe_hooks hooks;
    int have_hooks;
    int oracle; /* route to the experts with the largest output norm */
    /* scratch sized for `cap` tokens */
    int cap;
    float *x, *xb, *q, *k, *v, *att, *probs, *moe, *xg, *yg, *ffn_scratch, *att_scratch;
    float *rope; /* each token's RoPE cos/sin (wd_rope_cs), once for every layer */
    float *dec_scratch; /* one token through every expert at once: E x (2 F + H) */
    size_t att_scratch_len;
    wd_selection sel;
};

static void free_scratch(wd_session *s) {
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->probs);
    free(s->moe);
    free(s->xg);
    free(s->yg);
    free(s->ffn_scratch);
    free(s->att_scratch);
    free(s->dec_scratch);
    free(s->rope);
    free(s->sel.n);
    free(s->sel.expert);
    free(s->sel.weight);
    s->x = s->xb = s->q = s->k = s->v = s->att = s->probs = s->moe = NULL;
    s->xg = s->yg = s->ffn_scratch = s->att_scratch = s->dec_scratch = s->rope = NULL;
    s->att_scratch_len = 0;
    s->sel.n = NULL;
    s->sel.expert = NULL;
    s->sel.weight = NULL;
    s->cap = 0;
}

/* Grow the per-token scratch to hold n tokens. */
static int reserve(wd_session *s, int n) {
    if (n <= s->cap) return 0;
    free_scratch(s);
    const wd_config *c = &s->m->cfg;
    size_t H = c->hidden, Q = (size_t)c->n_heads * c->head_dim,
           KV = (size_t)c->n_kv_heads * c->head_dim, E = c->n_experts, F = c->ffn;
    size_t big = H > Q ? H : Q;
    s->x = malloc(n * H * 4);
    s->xb = malloc(n * big * 4);
    s->q = malloc(n * Q * 4);
    s->k = malloc(n * KV * 4);
    s->v = malloc(n * KV * 4);
    s->att = malloc(n * Q * 4);
    s->probs = malloc(n * E * 4);
    s->moe = malloc(n * H * 4);
    s->xg = malloc(n * H * 4);
    s->yg = malloc(n * H * 4);
    s->ffn_scratch = malloc(2 * n * F * 4);
    s->sel.n = malloc(n * sizeof(int));
    s->sel.expert = malloc(n * E * sizeof(int));
    s->sel.weight = malloc(n * E * sizeof(float));
    s->dec_scratch = malloc(E * (2 * F + H) * 4);
    s->rope = malloc(n * (size_t)c->head_dim * 4);
    if (!s->dec_scratch || !s->rope || !s->x || !s->xb || !s->q || !s->k || !s->v || !s->att || !s->probs || !s->moe ||
        !s->xg || !s->yg || !s->ffn_scratch || !s->sel.n || !s->sel.expert || !s->sel.weight) {
        free_scratch(s);
        return 1;
    }
    s->cap = n;
    return 0;
}

static double kv_elems(const wd_model *m, int max_ctx) {
    return (double)m->cfg.n_layers * max_ctx * m->cfg.n_kv_heads * m->cfg.head_dim;
}

double wd_session_bytes(const wd_model *m, int max_ctx) {
    const wd_config *c = &m->cfg;
    if (max_ctx <= 0 || max_ctx > c->max_pos) max_ctx = c->max_pos;
    double H = c->hidden, Q = (double)c->n_heads * c->head_dim,
           KV = (double)c->n_kv_heads * c->head_dim, big = H > Q ? H : Q;
    double scratch = 4 * (4 * H + big + 2 * Q + 2 * KV + 2.0 * c->ffn + 3.0 * c->n_experts + 1 +
                          c->head_dim +
                          c->n_experts * (2.0 * c->ffn + H));
    return 2 * 4 * kv_elems(m, max_ctx) + scratch;
}

wd_session *wd_session_create(const wd_model *m, int max_ctx, wd_pool *pool) {
    if (max_ctx <= 0 || max_ctx > m->cfg.max_pos) max_ctx = m->cfg.max_pos;
    if (4 * kv_elems(m, max_ctx) > 0x1p62) return NULL; /* more than any address space */
    wd_session *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->m = m;
    s->pool = pool;
    s->max_ctx = max_ctx;
    size_t kv = (size_t)m->cfg.n_layers * max_ctx * m->cfg.n_kv_heads * m->cfg.head_dim;
    s->k_cache = calloc(kv, sizeof(float));
    s->v_cache = calloc(kv, sizeof(float));
    if (!s->k_cache || !s->v_cache || reserve(s, 1)) {
        wd_session_free(s);
        return NULL;
    }
    return s;
}

void wd_session_free(wd_session *s) {
    if (!s) return;
    free_scratch(s);
    free(s->k_cache);
    free(s->v_cache);
    free(s);
}

void wd_session_reset(wd_session *s) { s->pos = 0; }
int wd_session_pos(const wd_session *s) { return s->pos; }
void wd_session_set_pos(wd_session *s, int pos) {
    if (pos >= 0 && pos <= s->pos) s->pos = pos;
}
const wd_model *wd_session_model(const wd_session *s) { return s->m; }
int wd_session_max_ctx(const wd_session *s) { return s->max_ctx; }

void wd_session_set_oracle(wd_session *s, int on) { s->oracle = on; }

void wd_session_set_hooks(wd_session *s, const wd_moe_hooks *hooks) {
    s->have_hooks = hooks != NULL;
    if (hooks) s->hooks = *hooks;
}

/* ---- MoE -------------------------------------------------------------- */
void wd_select_topk(wd_selection *sel, const float *probs, int top_k) {
    int E = sel->n_experts;
    for (int t = 0; t < sel->n_tokens; t++) {
        const float *p = probs + (size_t)t * E;
        int *ex = sel->expert + (size_t)t * E;
        float *w = sel->weight + (size_t)t * E;
        int k = wd_topk(p, E, top_k, ex);
        float sum = 0;
        for (int j = 0; j < k; j++) sum += p[ex[j]];
        for (int j = 0; j < k; j++) w[j] = p[ex[j]] / sum;
        sel->n[t] = k;
    }
}

void wd_expert_run(const wd_model *m, int layer, int expert, const float *x, int n, float *y,
                   wd_pool *pool, float *scratch) {
    const wd_layer *L = &m->layers[layer];
    wd_expert_ffn(pool, y, x, n, L->w1[expert]->data, L->w3[expert]->data, L->w2[expert]->data,
                  L->w1[expert]->dtype, L->w2[expert]->dtype, m->cfg.hidden, m->cfg.ffn, scratch);
}

/* Prefill with a pool: the experts of a layer run as parallel tasks, each
 * whole on one thread (one pool run per layer instead of two or three per
 * expert, and the gathers and silu run in parallel too); an expert with
 * more than its share of the tokens runs first, split by rows over the
 * pool. A result never depends on which thread computed it (row splits do
 * not change bits), and the combine runs in expert order afterwards. */
typedef struct {
    wd_session *s;
    int layer;
    const float *u;
    const wd_selection *sel;
    const int *order, *cnt;
    const size_t *off; /* first gathered row of each expert */
    float *xbuf, *ybuf, *gu;
} moe_par_ctx;

static void moe_gather(const wd_selection *sel, const float *u, int e, int H, float *xg) {
    int E = sel->n_experts, cnt = 0;
    for (int t = 0; t < sel->n_tokens; t++)
        for (int j = 0; j < sel->n[t]; j++)
            if (sel->expert[(size_t)t * E + j] == e)
                memcpy(xg + (size_t)cnt++ * H, u + (size_t)t * H, (size_t)H * 4);
}

static void moe_par_task(void *arg, int task, int n_tasks) {
    (void)n_tasks;
    const moe_par_ctx *c = arg;
    const wd_model *m = c->s->m;
    int e = c->order[task], H = m->cfg.hidden;
    size_t o = c->off[e];
    moe_gather(c->sel, c->u, e, H, c->xbuf + o * H);
    wd_expert_run(m, c->layer, e, c->xbuf + o * H, c->cnt[e], c->ybuf + o * H, NULL,
                  c->gu + o * 2 * (size_t)m->cfg.ffn);
}

static int moe_run_parallel(wd_session *s, int layer, const float *u, const wd_selection *sel,
                            float *out) {
    const wd_model *m = s->m;
    int H = m->cfg.hidden, E = m->cfg.n_experts, n = sel->n_tokens, F = m->cfg.ffn;
    int nth = wd_pool_size(s->pool);
    int *cnt = calloc((size_t)E * 2, sizeof(int));
    size_t *off = malloc((size_t)E * sizeof(size_t));
    if (!cnt || !off) {
        free(cnt);
        free(off);
        return -1;
    }
    int *order = cnt + E;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < sel->n[t]; j++) {
            int e = sel->expert[(size_t)t * E + j];
            if (e >= 0 && e < E) cnt[e]++;
        }
    size_t total = 0;
    for (int e = 0; e < E; e++) off[e] = total, total += (size_t)cnt[e];
    float *buf = malloc(total * (2 * (size_t)H + 2 * (size_t)F) * sizeof(float) + 1);
    if (!buf) {
        free(cnt);
        free(off);
        return -1;
    }
    moe_par_ctx c = {s, layer, u, sel, order, cnt, off, buf, buf + total * H,
                     buf + 2 * total * H};
    /* big experts (more than a thread's share) on the whole pool, the rest as
     * tasks, largest first */
    int n_par = 0;
    for (int e = 0; e < E; e++) {
        if (!cnt[e]) continue;
        if ((size_t)cnt[e] * nth > total) {
            moe_gather(sel, u, e, H, c.xbuf + off[e] * H);
            wd_expert_run(m, layer, e, c.xbuf + off[e] * H, cnt[e], c.ybuf + off[e] * H, s->pool,
                          c.gu + off[e] * 2 * (size_t)F);
        } else {
            int i = n_par++;
            while (i > 0 && cnt[order[i - 1]] < cnt[e]) {
                order[i] = order[i - 1];
                i--;
            }
            order[i] = e;
        }
    }
    if (n_par) wd_pool_run(s->pool, moe_par_task, &c, n_par);
    for (int e = 0; e < E; e++) {
        int k = 0;
        for (int t = 0; t < n; t++)
            for (int j = 0; j < sel->n[t]; j++)
                if (sel->expert[(size_t)t * E + j] == e) {
                    float w = sel->weight[(size_t)t * E + j];
                    const float *y = c.ybuf + (off[e] + (size_t)k++) * H;
                    float *o = out + (size_t)t * H;
                    for (int i = 0; i < H; i++) o[i] += w * y[i];
                }
    }
    free(buf);
    free(cnt);
    free(off);
    return 0;
}

/* One token: the gate/up projections of all its experts in one pool run,
 * then their down projections in another (two barriers per layer, not two
 * per expert); the combine runs in expert order, as in the general path. */
static int moe_run_one_token(wd_session *s, int layer, const float *u, const wd_selection *sel,
                             float *out) {
    const wd_model *m = s->m;
    const wd_layer *L = &m->layers[layer];
    int H = m->cfg.hidden, E = m->cfg.n_experts, F = m->cfg.ffn, k = 0;
    int ex[64];
    float wt[64];
    if (sel->n[0] > 64 || sel->n[0] > E) return 1; /* the caller takes the general path */
    for (int e = 0; e < E; e++) /* the chosen experts, ascending */
        for (int j = 0; j < sel->n[0]; j++)
            if (sel->expert[j] == e) {
                ex[k] = e;
                wt[k++] = sel->weight[j];
            }
    if (k == 0) return 0;
    wd_mm_job job[64];
    float *g = s->dec_scratch, *uu = g + (size_t)k * F, *y = uu + (size_t)k * F;
    for (int i = 0; i < k; i++)
        job[i] = (wd_mm_job){g + (size_t)i * F, u, L->w1[ex[i]]->data, L->w3[ex[i]]->data,
                             uu + (size_t)i * F, L->w1[ex[i]]->dtype, F, H};
    wd_matmul_multi(s->pool, job, k, 1);
    for (int i = 0; i < k; i++)
        job[i] = (wd_mm_job){y + (size_t)i * H, g + (size_t)i * F, L->w2[ex[i]]->data, NULL, NULL,
                             L->w2[ex[i]]->dtype, H, F};
    wd_matmul_multi(s->pool, job, k, 1);
    for (int i = 0; i < k; i++)
        for (int h = 0; h < H; h++) out[h] += wt[i] * y[(size_t)i * H + h];
    return 0;
}

int wd_moe_run_selection(wd_session *s, int layer, const float *u, const wd_selection *sel,
                         float *out) {
    const wd_model *m = s->m;
    int H = m->cfg.hidden, E = m->cfg.n_experts, n = sel->n_tokens;
    if (reserve(s, n)) return 1;
    if (n == 1 && moe_run_one_token(s, layer, u, sel, out) == 0) return 0;
    if (n >= 16 && wd_pool_size(s->pool) > 1 && moe_run_parallel(s, layer, u, sel, out) == 0)
        return 0;
    for (int e = 0; e < E; e++) {
        int cnt = 0;
        for (int t = 0; t < n; t++)
            for (int j = 0; j < sel->n[t]; j++)
                if (sel->expert[(size_t)t * E + j] == e)
                    memcpy(s->xg + (size_t)cnt++ * H, u + (size_t)t * H, (size_t)H * 4);
        if (!cnt) continue;
        wd_expert_run(m, layer, e, s->xg, cnt, s->yg, s->pool, s->ffn_scratch);
        cnt = 0;
        for (int t = 0; t < n; t++)
            for (int j = 0; j < sel->n[t]; j++)
                if (sel->expert[(size_t)t * E + j] == e) {
                    float w = sel->weight[(size_t)t * E + j];
                    const float *y = s->yg + (size_t)cnt++ * H;
                    float *o = out + (size_t)t * H;
                    for (int i = 0; i < H; i++) o[i] += w * y[i];
                }
    }
    return 0;
}

/* Oracle routing: every expert runs on every token; each token keeps the
 * top_k experts whose outputs have the largest L2 norm and adds them with
 * the combine weights of the model (1 for a plain sum, else the router's
 * probabilities renormalised over the chosen set). sel is overwritten. */
static int moe_oracle(wd_session *s, int layer, const float *u, const float *probs,
                      wd_selection *sel, float *out) {
    const wd_model *m = s->m;
    int H = m->cfg.hidden, E = m->cfg.n_experts, n = sel->n_tokens, k = m->cfg.top_k;
    float *y = malloc((size_t)E * n * H * sizeof(float));
    float *norm = malloc((size_t)E * sizeof(float));
    if (!y || !norm) {
        free(y);
        free(norm);
        return 1;
    }
    for (int e = 0; e < E; e++)
        wd_expert_run(m, layer, e, u, n, y + (size_t)e * n * H, s->pool, s->ffn_scratch);
    for (int t = 0; t < n; t++) {
        for (int e = 0; e < E; e++) {
            const float *ye = y + ((size_t)e * n + t) * H;
            double q = 0;
            for (int i = 0; i < H; i++) q += (double)ye[i] * ye[i];
            norm[e] = (float)q;
        }
        int *ex = sel->expert + (size_t)t * E;
        float *w = sel->weight + (size_t)t * E;
        int kk = wd_topk(norm, E, k, ex);
        float sum = 0;
        for (int j = 0; j < kk; j++) sum += probs[(size_t)t * E + ex[j]];
        for (int j = 0; j < kk; j++)
            w[j] = m->cfg.combine_sum ? 1.0f : probs[(size_t)t * E + ex[j]] / sum;
        sel->n[t] = kk;
        float *o = out + (size_t)t * H;
        for (int j = 0; j < kk; j++) {
            const float *ye = y + ((size_t)ex[j] * n + t) * H;
            for (int i = 0; i < H; i++) o[i] += w[j] * ye[i];
        }
    }
    free(y);
    free(norm);
    return 0;
}

/* ---- forward ---------------------------------------------------------- */
/* The pass itself: sequence i runs n[i] tokens at its positions with its KV
 * cache; the BS projections, routers and experts run once over all tokens,
 * attention per sequence. all_logits (one sequence only): every token's. */
static int forward_core(wd_session *s, wd_session *const *seqs, const int *const *tokens,
                        const int *n_seq_tok, int n_seq, float *logits, int all_logits, char *err,
                        size_t errlen) {
    const wd_model *m = s->m;
    const wd_config *c = &m->cfg;
    int n = 0;
    size_t att_need = 0;
    for (int i = 0; i < n_seq; i++) {
        wd_session *q = seqs[i];
        int ni = n_seq_tok[i];
        if (q->m != m) {
            snprintf(err, errlen, "forward: sequence %d belongs to another model", i);
            return 1;
        }
        if (ni <= 0) {
            snprintf(err, errlen, "forward: no tokens");
            return 1;
        }
        if (q->pos + ni > q->max_ctx) {
            snprintf(err, errlen, "forward: sequence of %d tokens exceeds the context of %d",
                     q->pos + ni, q->max_ctx);
            return 1;
        }
        for (int t = 0; t < ni; t++)
            if (tokens[i][t] < 0 || tokens[i][t] >= c->vocab) {
                snprintf(err, errlen, "forward: token id %d out of range [0, %d)", tokens[i][t],
                         c->vocab);
                return 1;
            }
        size_t need = wd_attention_scratch(ni, c->n_heads, q->pos + ni);
        if (need > att_need) att_need = need;
        n += ni;
    }
    if (reserve(s, n)) {
        snprintf(err, errlen, "forward: out of memory for %d tokens", n);
        return 1;
    }
    if (att_need > s->att_scratch_len) {
        free(s->att_scratch);
        s->att_scratch = malloc(att_need * sizeof(float));
        s->att_scratch_len = s->att_scratch ? att_need : 0;
        if (!s->att_scratch) {
            snprintf(err, errlen, "forward: out of memory for attention");
            return 1;
        }
    }
    int H = c->hidden, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    int E = c->n_experts, pos0 = seqs[0]->pos;
    wd_pool *pool = s->pool;

    for (int i = 0, r = 0; i < n_seq; i++)
        for (int t = 0; t < n_seq_tok[i]; t++, r++)
            wd_row_to_f32(s->x + (size_t)r * H, m->embed->data, m->embed->dtype, tokens[i][t], H);
    for (int i = 0, r = 0; i < n_seq; i++)
        for (int t = 0; t < n_seq_tok[i]; t++, r++)
            wd_rope_cs(s->rope + (size_t)r * hd, hd, seqs[i]->pos + t, c->rope_theta);

    for (int l = 0; l < c->n_layers; l++) {
        const wd_layer *L = &m->layers[l];
        /* attention (BS) */
        for (int t = 0; t < n; t++)
            wd_rmsnorm(s->xb + (size_t)t * H, s->x + (size_t)t * H, L->attn_norm_f32, H,
                       c->rms_eps);
        const wd_mm_job qkv[3] = {{s->q, s->xb, L->wq->data, NULL, NULL, L->wq->dtype, Q, H},
                                  {s->k, s->xb, L->wk->data, NULL, NULL, L->wk->dtype, KV, H},
                                  {s->v, s->xb, L->wv->data, NULL, NULL, L->wv->dtype, KV, H}};
        wd_matmul_multi(pool, qkv, 3, n); /* one pool run in decode */
        for (int i = 0, r = 0; i < n_seq; i++) { /* each sequence: its positions and cache */
            wd_session *q = seqs[i];
            int ni = n_seq_tok[i], p0 = q->pos;
            size_t cache_off = (size_t)l * q->max_ctx * KV;
            float *kc = q->k_cache + cache_off, *vc = q->v_cache + cache_off;
            for (int t = 0; t < ni; t++) {
                const float *cs = s->rope + (size_t)(r + t) * hd;
                wd_rope_apply(s->q + (size_t)(r + t) * Q, c->n_heads, hd, cs);
                wd_rope_apply(s->k + (size_t)(r + t) * KV, c->n_kv_heads, hd, cs);
            }
            memcpy(kc + (size_t)p0 * KV, s->k + (size_t)r * KV, (size_t)ni * KV * 4);
            memcpy(vc + (size_t)p0 * KV, s->v + (size_t)r * KV, (size_t)ni * KV * 4);
            wd_attention(pool, s->att + (size_t)r * Q, s->q + (size_t)r * Q, kc, vc, ni, p0,
                         c->n_heads, c->n_kv_heads, hd, s->att_scratch);
            r += ni;
        }
        wd_matmul(pool, s->xb, s->att, L->wo->data, L->wo->dtype, n, H, Q);
        for (size_t i = 0; i < (size_t)n * H; i++) s->x[i] += s->xb[i];

        /* router (BS); a dense model has none: its FFN runs at the BS unless
         * hooks (a scenario) place it on an emulated device as expert 0 */
        for (int t = 0; t < n; t++)
            wd_rmsnorm(s->xb + (size_t)t * H, s->x + (size_t)t * H, L->ffn_norm_f32, H,
                       c->rms_eps);
        if (!L->gate && !s->have_hooks) {
            wd_expert_run(m, l, 0, s->xb, n, s->moe, pool, s->ffn_scratch);
            for (size_t i = 0; i < (size_t)n * H; i++) s->x[i] += s->moe[i];
            continue;
        }
        if (L->gate) {
            wd_matmul(pool, s->probs, s->xb, L->gate->data, L->gate->dtype, n, E, H);
            for (int t = 0; t < n; t++) wd_softmax(s->probs + (size_t)t * E, E);
        } else {
            for (int t = 0; t < n * E; t++) s->probs[t] = 1.0f;
        }
        s->sel.n_tokens = n;
        s->sel.n_experts = E;
        wd_select_topk(&s->sel, s->probs, c->top_k);
        if (s->have_hooks && s->hooks.select &&
            s->hooks.select(s->hooks.ctx, l, pos0, s->probs, &s->sel)) {
            snprintf(err, errlen, "forward: expert selection failed at layer %d", l);
            return 1;
        }
        /* a MoEfied model adds its chosen experts' outputs (plain sum) */
        if (c->combine_sum)
            for (int t = 0; t < n; t++)
                for (int j = 0; j < s->sel.n[t]; j++) s->sel.weight[(size_t)t * E + j] = 1.0f;
        /* experts (devices; one batched call per expert over all its tokens) and combine (BS) */
        memset(s->moe, 0, (size_t)n * H * 4);
        int rc = s->oracle && L->gate ? moe_oracle(s, l, s->xb, s->probs, &s->sel, s->moe)
                 : s->have_hooks && s->hooks.run_experts
                     ? s->hooks.run_experts(s->hooks.ctx, l, s->xb, &s->sel, s->moe)
                     : wd_moe_run_selection(s, l, s->xb, &s->sel, s->moe);
        if (rc) {
            snprintf(err, errlen, "forward: expert execution failed at layer %d", l);
            return 1;
        }
        for (size_t i = 0; i < (size_t)n * H; i++) s->x[i] += s->moe[i];
    }
    for (int i = 0; i < n_seq; i++) seqs[i]->pos += n_seq_tok[i];
    if (!logits) return 0;
    int rows = 0;
    if (all_logits && n_seq == 1) {
        for (int t = 0; t < n; t++, rows++)
            wd_rmsnorm(s->xb + (size_t)t * H, s->x + (size_t)t * H, m->norm_f32, H, c->rms_eps);
    } else {
        for (int i = 0, r = 0; i < n_seq; i++, rows++) { /* each sequence's last token */
            r += n_seq_tok[i];
            wd_rmsnorm(s->xb + (size_t)i * H, s->x + (size_t)(r - 1) * H, m->norm_f32, H,
                       c->rms_eps);
        }
    }
    wd_matmul(pool, logits, s->xb, m->lm_head->data, m->lm_head->dtype, rows, c->vocab, H);
    return 0;
}

int wd_forward(wd_session *s, const int *tokens, int n, float *logits, int all_logits,
               char *err, size_t errlen) {
    if (n <= 0) {
        snprintf(err, errlen, "forward: no tokens");
        return 1;
    }
    return forward_core(s, &s, &tokens, &n, 1, logits, all_logits, err, errlen);
}

int wd_forward_batch(wd_session *batch, wd_session *const *seqs, const int *const *tokens,
                     const int *n, int n_seq, float *logits, char *err, size_t errlen) {
    if (n_seq < 1) {
        snprintf(err, errlen, "forward: no sequences");
        return 1;
    }
    for (int i = 0; i < n_seq; i++)
        for (int j = 0; j < i; j++)
            if (seqs[i] == seqs[j]) {
                snprintf(err, errlen, "forward: sequence %d appears twice in the batch", i);
                return 1;
            }
    return forward_core(batch, seqs, tokens, n, n_seq, logits, 0, err, errlen);
}
