/* Serving a cell: many users' requests through one BS with continuous
 * batching on the virtual clock.
 *
 * Each step is one batched forward pass (wd_forward_batch): every running
 * user in decode contributes its last token, users in prefill contribute the
 * next chunk of their prompt (at most prefill_chunk prompt tokens per step
 * over all users, in admission order), so prefill chunks interleave with the
 * decode steps of the others. Each user has its own KV cache (a session of
 * prompt + max_new tokens); a request is admitted (FIFO) when its whole KV
 * reservation fits the budget, else it waits. A request that arrives joins
 * at the next step; a finished one leaves, releasing its KV. When nobody runs
 * the clock jumps to the next arrival. One user arriving at 0 with a chunk
 * no shorter than its prompt is exactly `wdmoe generate`: one prefill pass,
 * then one decode pass per token (the last token is not fed back). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/host.h"

double wd_serve_kv_bytes_per_token(const wd_model *m) {
    const wd_config *c = &m->cfg;
    return 2.0 * 4.0 * c->n_layers * c->n_kv_heads * c->head_dim; /* fp32 K and V */
}

void wd_serve_result_free(wd_serve_result *r) {
    if (!r) return;
    if (r->users)
        for (int i = 0; i < r->n_users; i++) free(r->users[i].tokens);
    free(r->users);
    free(r->timeline);
    memset(r, 0, sizeof *r);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Summed busy time and queue wait of every device so far. */
static void device_totals(const wd_emu *emu, double *busy, double *queue) {
    *busy = *queue = 0;
    for (int d = 0; d < wd_emu_n_devices(emu); d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        *busy += ds.busy_s, *queue += ds.queue_wait_s;
    }
}

/* The scheduler's hooks, with the batched expert calls timed (wall clock,
 * for the emulator's own speed: GFLOP/s of the real expert GEMMs). */
typedef struct {
    wd_moe_hooks inner;
    wd_session *batch;
    const wd_model *m;
    double flops, wall;
} timed_hooks;

static int th_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    timed_hooks *h = ctx;
    return h->inner.select(h->inner.ctx, layer, pos0, probs, sel);
}

static int th_run(void *ctx, int layer, const float *u, const wd_selection *sel, float *out) {
    timed_hooks *h = ctx;
    long pairs = 0;
    for (int t = 0; t < sel->n_tokens; t++) pairs += sel->n[t];
    double t0 = now_s();
    int rc = wd_moe_run_selection(h->batch, layer, u, sel, out);
    h->wall += now_s() - t0;
    h->flops += 6.0 * h->m->cfg.hidden * h->m->cfg.ffn * (double)pairs;
    return rc;
}

typedef struct {
    wd_session *s;
    int done_prompt; /* prompt tokens already in the cache */
    int last;        /* last sampled token (decode input) */
    double last_t;   /* virtual time of the last output token */
    float *lp;       /* [max_new][vocab] policy log-probs (compare) */
    wd_rng rng;
} user_state;

/* Re-score the user's sequence with the model's own top-k (no hooks): token
 * agreement of the argmax and mean KL(top-k || policy) over its outputs. */
static int compare_user(wd_session *plain, const wd_serve_request *rq, wd_serve_user *u,
                        const float *lp_pol, int vocab, char *err, size_t errlen) {
    int n_all = rq->n_prompt + u->n_out;
    if (u->n_out < 1) return 0;
    int *seq = malloc((size_t)n_all * sizeof(int));
    float *lp = malloc((size_t)n_all * vocab * sizeof(float));
    if (!seq || !lp) {
        free(seq);
        free(lp);
        snprintf(err, errlen, "out of memory for the top-k comparison");
        return 1;
    }
    memcpy(seq, rq->prompt, (size_t)rq->n_prompt * sizeof(int));
    memcpy(seq + rq->n_prompt, u->tokens, (size_t)u->n_out * sizeof(int));
    wd_session_reset(plain);
    int rc = wd_forward(plain, seq, n_all - 1, lp, 1, err, errlen);
    if (!rc) {
        double agree = 0, kl = 0;
        for (int i = 0; i < u->n_out; i++) {
            float *b = lp + (size_t)(rq->n_prompt - 1 + i) * vocab;
            const float *p = lp_pol + (size_t)i * vocab;
            wd_log_softmax(b, vocab);
            agree += wd_argmax(b, vocab) == wd_argmax(p, vocab);
            double k = 0;
            for (int v = 0; v < vocab; v++) k += exp((double)b[v]) * ((double)b[v] - p[v]);
            kl += k > 0 ? k : 0;
        }
        u->agreement = agree / u->n_out;
        u->mean_kl = kl / u->n_out;
    }
    free(seq);
    free(lp);
    return rc;
}


int wd_serve_run(const wd_model *m, wd_pool *pool, wd_scheduler *k, const wd_serve_request *req,
                 int n_req, const wd_serve_opts *o, wd_serve_result *res, char *err,
                 size_t errlen) {
    memset(res, 0, sizeof *res);
    const wd_config *c = &m->cfg;
    int vocab = c->vocab, chunk = o->prefill_chunk > 0 ? o->prefill_chunk : 1 << 30;
    double kvt = wd_serve_kv_bytes_per_token(m);
    if (n_req < 1) return snprintf(err, errlen, "workload: no requests"), 1;
    for (int i = 0; i < n_req; i++) {
        const wd_serve_request *q = &req[i];
        if (q->n_prompt < 1 || q->max_new < 1 || !(q->arrival_s >= 0) || !isfinite(q->arrival_s))
            return snprintf(err, errlen,
                            "request %d: needs a prompt of >= 1 token, max_new >= 1 and a "
                            "finite arrival time >= 0",
                            i),
                   1;
        if (q->n_prompt + q->max_new > c->max_pos)
            return snprintf(err, errlen,
                            "request %d: %d prompt + %d new tokens exceed the model's context "
                            "of %d",
                            i, q->n_prompt, q->max_new, c->max_pos),
                   1;
        if (o->kv_budget_bytes > 0 && (q->n_prompt + q->max_new) * kvt > o->kv_budget_bytes)
            return snprintf(err, errlen,
                            "request %d: its KV cache (%d tokens, %.0f bytes) is larger than "
                            "the whole KV budget (%.0f bytes): it could never be admitted",
                            i, q->n_prompt + q->max_new, (q->n_prompt + q->max_new) * kvt,
                            o->kv_budget_bytes),
                   1;
    }
    int rc = 1, n_run = 0, n_wait = 0, next = 0, finished = 0, max_prompt = 1;
    long tl_cap = 0;
    int *order = malloc((size_t)n_req * sizeof(int)), *running = malloc((size_t)n_req * sizeof(int));
    int *waiting = malloc((size_t)n_req * sizeof(int));
    user_state *us = calloc((size_t)n_req, sizeof *us);
    wd_session **seqs = malloc((size_t)n_req * sizeof *seqs);
    const int **toks = malloc((size_t)n_req * sizeof *toks);
    int *ntok = malloc((size_t)n_req * sizeof(int)), *who = malloc((size_t)n_req * sizeof(int));
    float *logits = malloc((size_t)n_req * vocab * sizeof(float));
    res->users = calloc((size_t)n_req, sizeof *res->users);
    res->n_users = n_req;
    wd_session *batch = wd_session_create(m, 1, pool), *plain = NULL;
    int *scratch_idx = malloc((size_t)vocab * sizeof(int));
    if (!order || !running || !waiting || !us || !seqs || !toks || !ntok || !who || !logits ||
        !res->users || !batch || !scratch_idx) {
        snprintf(err, errlen, "serve: out of memory");
        goto done;
    }
    for (int i = 0; i < n_req; i++) {
        order[i] = i;
        if (req[i].n_prompt + req[i].max_new > max_prompt)
            max_prompt = req[i].n_prompt + req[i].max_new;
        res->users[i].arrival_s = req[i].arrival_s;
        res->users[i].n_prompt = req[i].n_prompt;
        res->users[i].agreement = res->users[i].mean_kl = NAN;
        if (!(res->users[i].tokens = malloc((size_t)req[i].max_new * sizeof(int)))) {
            snprintf(err, errlen, "serve: out of memory");
            goto done;
        }
    }
    for (int i = 1; i < n_req; i++) /* stable insertion sort by arrival */
        for (int j = i; j > 0 && req[order[j]].arrival_s < req[order[j - 1]].arrival_s; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    if (o->compare && !(plain = wd_session_create(m, max_prompt, pool))) {
        snprintf(err, errlen, "serve: out of memory for the top-k comparison session");
        goto done;
    }
    wd_emu *emu = wd_scheduler_emu(k);
    timed_hooks th = {{0}, batch, m, 0, 0};
    wd_scheduler_hooks(k, &th.inner);
    wd_moe_hooks hooks = {&th, th_select, th_run};
    wd_session_set_hooks(batch, &hooks);
    double kv_used = 0, wall0 = now_s();
    int phase = -1;
    while (finished < n_req) {
        double t = wd_emu_time(emu);
        while (next < n_req && req[order[next]].arrival_s <= t) waiting[n_wait++] = order[next++];
        /* admission: FIFO while the KV reservation fits */
        while (n_wait > 0 && (o->max_batch <= 0 || n_run < o->max_batch)) {
            int id = waiting[0];
            double need = (req[id].n_prompt + req[id].max_new) * kvt;
            if (o->kv_budget_bytes > 0 && kv_used + need > o->kv_budget_bytes) break;
            if (!(us[id].s = wd_session_create(m, req[id].n_prompt + req[id].max_new, pool))) {
                snprintf(err, errlen, "serve: out of memory for the KV cache of request %d", id);
                goto done;
            }
            if (o->compare &&
                !(us[id].lp = malloc((size_t)req[id].max_new * vocab * sizeof(float)))) {
                snprintf(err, errlen, "serve: out of memory");
                goto done;
            }
            wd_rng_seed(&us[id].rng, o->seed + (uint64_t)id);
            kv_used += need;
            res->users[id].admit_s = t;
            running[n_run++] = id;
            memmove(waiting, waiting + 1, (size_t)(--n_wait) * sizeof(int));
        }
        if (n_run == 0) { /* idle until the next arrival */
            if (next >= n_req) {
                snprintf(err, errlen, "serve: nothing runs and nothing arrives (internal)");
                goto done;
            }
            wd_emu_advance(emu, req[order[next]].arrival_s - t);
            continue;
        }
        /* the batch: decode tokens of every user past its prompt, then prompt
         * chunks in admission order within the chunk budget */
        int nb = 0, budget = chunk, pre = 0, n_tok = 0;
        for (int i = 0; i < n_run; i++) {
            int id = running[i];
            user_state *u = &us[id];
            if (u->done_prompt < req[id].n_prompt) continue;
            seqs[nb] = u->s, toks[nb] = &u->last, ntok[nb] = 1, who[nb++] = id;
        }
        for (int i = 0; i < n_run && budget > 0; i++) {
            int id = running[i];
            user_state *u = &us[id];
            int left = req[id].n_prompt - u->done_prompt;
            if (left <= 0) continue;
            int take = left < budget ? left : budget;
            seqs[nb] = u->s, toks[nb] = req[id].prompt + u->done_prompt, ntok[nb] = take;
            who[nb++] = id;
            budget -= take, pre = 1;
        }
        for (int i = 0; i < nb; i++) n_tok += ntok[i];
        int ph = pre ? WD_PHASE_PREFILL : WD_PHASE_DECODE;
        if (ph != phase) wd_emu_set_phase(emu, (wd_emu_phase)ph), phase = ph;
        double e0 = wd_emu_energy_active_j(emu), b0, q0, b1, q1;
        device_totals(emu, &b0, &q0);
        if (wd_forward_batch(batch, seqs, toks, ntok, nb, logits, err, errlen)) goto done;
        double t1 = wd_emu_time(emu), e_step = wd_emu_energy_active_j(emu) - e0;
        device_totals(emu, &b1, &q1);
        double span = (t1 - t) * wd_emu_n_devices(emu);
        if (res->n_timeline == tl_cap) {
            long cap = tl_cap ? 2 * tl_cap : 256;
            wd_serve_step *p = realloc(res->timeline, (size_t)cap * sizeof *p);
            if (!p) {
                snprintf(err, errlen, "serve: out of memory");
                goto done;
            }
            res->timeline = p, tl_cap = cap;
        }
        res->timeline[res->n_timeline++] =
            (wd_serve_step){t,       t1,     n_tok,  n_run, n_wait, nb,
                            kv_used, e_step, span > 0 ? (b1 - b0) / span : 0, q1 - q0};
        /* outputs: a user whose prompt is complete samples its next token */
        for (int i = 0; i < nb; i++) {
            int id = who[i];
            user_state *u = &us[id];
            wd_serve_user *r = &res->users[id];
            r->energy_j += e_step * ntok[i] / n_tok;
            int in_prefill = u->done_prompt < req[id].n_prompt;
            if (in_prefill) {
                u->done_prompt += ntok[i];
                if (u->done_prompt < req[id].n_prompt) continue;
                r->first_s = t1;
            } else {
                double gap = t1 - u->last_t;
                if (gap > r->max_gap_s) r->max_gap_s = gap;
            }
            const float *lg = logits + (size_t)i * vocab;
            if (u->lp) {
                memcpy(u->lp + (size_t)r->n_out * vocab, lg, (size_t)vocab * sizeof(float));
                wd_log_softmax(u->lp + (size_t)r->n_out * vocab, vocab);
            }
            int tok = wd_sample(lg, vocab, o->temperature, o->top_p, &u->rng, scratch_idx);
            r->tokens[r->n_out++] = tok;
            u->last = tok, u->last_t = t1;
            if (tok == c->eos_id || r->n_out >= req[id].max_new) { /* leaves the batch */
                r->finish_s = t1;
                r->ttft_s = r->first_s - r->arrival_s;
                r->tpot_s = r->n_out > 1 ? (r->finish_s - r->first_s) / (r->n_out - 1) : 0;
                if (u->lp && compare_user(plain, &req[id], r, u->lp, vocab, err, errlen))
                    goto done;
                free(u->lp), u->lp = NULL;
                wd_session_free(u->s), u->s = NULL;
                kv_used -= (req[id].n_prompt + req[id].max_new) * kvt;
                for (int j = 0; j < n_run; j++)
                    if (running[j] == id) {
                        memmove(running + j, running + j + 1, (size_t)(n_run - j - 1) * sizeof(int));
                        n_run--;
                        break;
                    }
                finished++;
            }
        }
        res->steps++;
        if (kv_used > res->max_kv_bytes) res->max_kv_bytes = kv_used;
    }
    res->makespan_s = wd_emu_time(emu);
    res->wall_s = now_s() - wall0;
    res->expert_flops = th.flops, res->expert_wall_s = th.wall;
    rc = 0;
done:
    if (us)
        for (int i = 0; i < n_req; i++) wd_session_free(us[i].s), free(us[i].lp);
    if (rc) wd_serve_result_free(res);
    wd_session_free(batch);
    wd_session_free(plain);
    free(order), free(running), free(waiting), free(us), free(seqs), free(toks), free(ntok);
    free(who), free(logits), free(scratch_idx);
    return rc;
}
