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
 * then one decode pass per token (the last token is not fed back).
 *
 * With micro_batches M > 1 a step's sequences are split into M micro-batches
 * (contiguous, about equal in tokens) that run through the layers
 * interleaved on the virtual clock (wd_emu_pipeline_*): while one waits for
 * its experts, the BS runs the attention and routers of another, and the
 * devices queue jobs of several micro-batches. Each micro-batch's forward is
 * a thread that runs only when it is its turn (one at a time: the numbers do
 * not depend on the order, the clock does), at every layer's selection the
 * micro-batch with the earliest clock goes next. There is no barrier in
 * virtual time between steps: each sequence is ready when its previous token's
 * LM head is done (a new request: at its arrival, not before the step
 * boundary), a micro-batch starts when all its sequences are ready, and the
 * BS, devices and links stay busy from the step before (a micro-batch of step
 * s+1 may queue behind one of step s). The host still forms the steps one
 * after another (arrivals up to the end of the last micro-batch of step s
 * join step s+1); the step boundary is the earliest micro-batch end. */
#include <math.h>
#include <pthread.h>
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
    free(r->dev_queue_s);
    free(r->dev_busy_s);
    free(r->dev_queued);
    free(r->dev_ahead);
    memset(r, 0, sizeof *r);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Summed busy time and queue wait of every device so far; per device in
 * b[d], q[d], j[d] (queued jobs), a[d] (calls ahead of its jobs, summed) when
 * b is not NULL. */
static void device_totals(const wd_emu *emu, double *busy, double *queue, double *b, double *q,
                          long *j, long *a) {
    *busy = *queue = 0;
    for (int d = 0; d < wd_emu_n_devices(emu); d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        *busy += ds.busy_s, *queue += ds.queue_wait_s;
        if (b) b[d] = ds.busy_s, q[d] = ds.queue_wait_s, j[d] = ds.queued_jobs;
        if (b) a[d] = ds.queue_ahead_sum;
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

/* ---- pipelined micro-batches: one thread per micro-batch, one runs at a time ---- */
typedef struct pipe_ctl pipe_ctl;
typedef struct {
    timed_hooks th; /* its own batch session */
    pipe_ctl *ctl;
    int m, started, rc;
    wd_session *const *seqs;
    const int *const *toks;
    const int *ntok;
    int n;
    float *logits;
    char err[1024];
} mb_run;

struct pipe_ctl {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int turn, n;
    int *done;
    mb_run *runs;
    wd_emu *emu;
};

/* The next to run: not done, the earliest clock (ties: the lowest index). */
static int pick_next(pipe_ctl *c) {
    int best = -1;
    double bt = INFINITY;
    for (int m = 0; m < c->n; m++) {
        if (c->done[m]) continue;
        double r = wd_emu_pipeline_ready(c->emu, m);
        if (best < 0 || r < bt) best = m, bt = r;
    }
    return best;
}

static void wait_turn(pipe_ctl *c, int m) {
    while (c->turn != m) pthread_cond_wait(&c->cv, &c->mu);
}

static int mb_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    mb_run *r = ctx;
    pipe_ctl *c = r->ctl;
    if (r->started) { /* another micro-batch may be earlier now */
        pthread_mutex_lock(&c->mu);
        c->turn = pick_next(c);
        pthread_cond_broadcast(&c->cv);
        wait_turn(c, r->m);
        pthread_mutex_unlock(&c->mu);
    }
    r->started = 1;
    wd_emu_pipeline_switch(c->emu, r->m);
    return th_select(&r->th, layer, pos0, probs, sel);
}

static void *mb_thread(void *arg) {
    mb_run *r = arg;
    pipe_ctl *c = r->ctl;
    pthread_mutex_lock(&c->mu);
    wait_turn(c, r->m);
    pthread_mutex_unlock(&c->mu);
    wd_moe_hooks hooks = {r, mb_select, th_run};
    wd_session_set_hooks(r->th.batch, &hooks);
    r->rc = wd_forward_batch(r->th.batch, r->seqs, r->toks, r->ntok, r->n, r->logits, r->err,
                             sizeof r->err);
    pthread_mutex_lock(&c->mu);
    c->done[r->m] = 1;
    c->turn = pick_next(c);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* One step as n_mb pipelined micro-batches of the nb sequences (about equal
 * in tokens). Sessions mbs[0..n_mb) are the micro-batches' batch sessions. */
static int forward_pipelined(wd_emu *emu, const timed_hooks *proto, wd_session **mbs, int n_mb,
                             wd_session *const *seqs, const int *const *toks, const int *ntok,
                             int nb, int n_tok, const double *ready, double floor_t, double *end,
                             float *logits, int vocab, double *flops, double *wall, char *err,
                             size_t errlen) {
    mb_run *runs = calloc((size_t)n_mb, sizeof *runs);
    int *done = calloc((size_t)n_mb, sizeof(int));
    pthread_t *tid = calloc((size_t)n_mb, sizeof *tid);
    double *start = malloc((size_t)n_mb * sizeof(double));
    int rc = 1, started = 0;
    if (!runs || !done || !tid || !start) {
        snprintf(err, errlen, "serve: out of memory for the micro-batches");
        goto out;
    }
    pipe_ctl c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, n_mb, done, runs, emu};
    /* contiguous groups: micro-batch m ends where the running token count
     * reaches (m + 1) / n_mb of the step's, each at least one sequence */
    int at = 0, acc = 0;
    for (int m = 0; m < n_mb; m++) {
        int first = at;
        while (at < nb && (at == first || (double)(acc + ntok[at]) * n_mb <= (double)n_tok * (m + 1)) &&
               nb - at > n_mb - m - 1)
            acc += ntok[at++];
        if (m == n_mb - 1)
            while (at < nb) acc += ntok[at++];
        runs[m] = (mb_run){*proto, &c, m, 0, 0, seqs + first, toks + first, ntok + first,
                           at - first, logits + (size_t)first * vocab, ""};
        runs[m].th.batch = mbs[m];
        runs[m].th.flops = runs[m].th.wall = 0;
        /* it starts when all its sequences are ready, not before the boundary */
        start[m] = floor_t;
        for (int i = first; i < at; i++)
            if (ready[i] > start[m]) start[m] = ready[i];
    }
    if (wd_emu_pipeline_begin(emu, n_mb, start, err, errlen)) goto out;
    for (; started < n_mb; started++)
        if (pthread_create(&tid[started], NULL, mb_thread, &runs[started])) {
            snprintf(err, errlen, "serve: cannot start a micro-batch thread");
            pthread_mutex_lock(&c.mu); /* the ones started: let them run to their end */
            for (int m = started; m < n_mb; m++) done[m] = 1;
            if (c.turn >= started) c.turn = pick_next(&c);
            pthread_cond_broadcast(&c.cv);
            pthread_mutex_unlock(&c.mu);
            break;
        }
    for (int m = 0; m < started; m++) pthread_join(tid[m], NULL);
    for (int m = 0; m < n_mb; m++) /* each sequence's output: its micro-batch's LM head end */
        for (int i = 0; i < runs[m].n; i++)
            end[runs[m].seqs - seqs + i] = wd_emu_pipeline_ready(emu, m);
    wd_emu_pipeline_end(emu);
    if (started < n_mb) goto out;
    for (int m = 0; m < n_mb; m++) {
        *flops += runs[m].th.flops, *wall += runs[m].th.wall;
        if (runs[m].rc) {
            snprintf(err, errlen, "%s", runs[m].err);
            goto out;
        }
    }
    rc = 0;
out:
    free(runs), free(done), free(tid), free(start);
    return rc;
}

typedef struct {
    wd_session *s;
    int done_prompt; /* prompt tokens already in the cache */
    int last;        /* last sampled token (decode input) */
    double last_t;   /* virtual time of the last output token */
    double ready;    /* virtual time its next tokens may start (pipelined) */
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
    double *rdy = malloc((size_t)n_req * sizeof(double));
    double *end = malloc((size_t)n_req * sizeof(double));
    res->users = calloc((size_t)n_req, sizeof *res->users);
    res->n_users = n_req;
    wd_session *batch = wd_session_create(m, 1, pool), *plain = NULL;
    int n_mbs = o->micro_batches > 1 ? o->micro_batches : 1, nd = 0;
    wd_session **mbs = calloc((size_t)n_mbs, sizeof *mbs);
    double *b0d = NULL, *q0d = NULL;
    long *j0d = NULL, *a0d = NULL;
    int *scratch_idx = malloc((size_t)vocab * sizeof(int));
    if (!order || !running || !waiting || !us || !seqs || !toks || !ntok || !who || !logits ||
        !res->users || !batch || !scratch_idx || !mbs || !rdy || !end) {
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
    nd = wd_emu_n_devices(emu);
    res->n_devices = nd;
    b0d = malloc((size_t)nd * sizeof(double)), q0d = malloc((size_t)nd * sizeof(double));
    j0d = malloc((size_t)nd * sizeof(long)), a0d = malloc((size_t)nd * sizeof(long));
    if (!b0d || !q0d || !j0d || !a0d) {
        snprintf(err, errlen, "serve: out of memory");
        goto done;
    }
    for (int i = 0; i < n_mbs && n_mbs > 1; i++)
        if (!(mbs[i] = wd_session_create(m, 1, pool))) {
            snprintf(err, errlen, "serve: out of memory for the micro-batches");
            goto done;
        }
    timed_hooks th = {{0}, batch, m, 0, 0};
    wd_scheduler_hooks(k, &th.inner);
    wd_moe_hooks hooks = {&th, th_select, th_run};
    wd_session_set_hooks(batch, &hooks);
    double kv_used = 0, wall0 = now_s();
    /* the step boundary: the earliest micro-batch end of the step before (the
     * synchronous step: its end); nothing of the next step starts earlier */
    double floor_t = wd_emu_time(emu);
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
            /* admitted at the step boundary, or at its arrival if later */
            us[id].ready = req[id].arrival_s > floor_t ? req[id].arrival_s : floor_t;
            res->users[id].admit_s = us[id].ready;
            running[n_run++] = id;
            memmove(waiting, waiting + 1, (size_t)(--n_wait) * sizeof(int));
        }
        if (n_run == 0) { /* idle until the next arrival */
            if (next >= n_req) {
                snprintf(err, errlen, "serve: nothing runs and nothing arrives (internal)");
                goto done;
            }
            wd_emu_advance(emu, req[order[next]].arrival_s - t);
            floor_t = wd_emu_time(emu);
            continue;
        }
        /* the batch: decode tokens of every user past its prompt, then prompt
         * chunks in admission order within the chunk budget */
        int nb = 0, budget = chunk, pre = 0, n_tok = 0;
        for (int i = 0; i < n_run; i++) {
            int id = running[i];
            user_state *u = &us[id];
            if (u->done_prompt < req[id].n_prompt) continue;
            rdy[nb] = u->ready, seqs[nb] = u->s, toks[nb] = &u->last, ntok[nb] = 1, who[nb++] = id;
        }
        for (int i = 0; i < n_run && budget > 0; i++) {
            int id = running[i];
            user_state *u = &us[id];
            int left = req[id].n_prompt - u->done_prompt;
            if (left <= 0) continue;
            int take = left < budget ? left : budget;
            rdy[nb] = u->ready, seqs[nb] = u->s, toks[nb] = req[id].prompt + u->done_prompt;
            ntok[nb] = take;
            who[nb++] = id;
            budget -= take, pre = 1;
        }
        for (int i = 0; i < nb; i++) n_tok += ntok[i];
        int ph = pre ? WD_PHASE_PREFILL : WD_PHASE_DECODE;
        if (ph != phase) wd_emu_set_phase(emu, (wd_emu_phase)ph), phase = ph;
        double e0 = wd_emu_energy_active_j(emu), b0, q0, b1, q1;
        device_totals(emu, &b0, &q0, b0d, q0d, j0d, a0d);
        int n_mb = n_mbs < nb ? n_mbs : nb;
        if (n_mbs > 1) { /* pipelined, also a step of one sequence (devices may be busy) */
            if (forward_pipelined(emu, &th, mbs, n_mb, seqs, toks, ntok, nb, n_tok, rdy, floor_t,
                                  end, logits, vocab, &th.flops, &th.wall, err, errlen))
                goto done;
        } else if (wd_forward_batch(batch, seqs, toks, ntok, nb, logits, err, errlen))
            goto done;
        double t1 = wd_emu_time(emu), e_step = wd_emu_energy_active_j(emu) - e0;
        floor_t = t1;
        for (int i = 0; i < nb; i++) {
            if (n_mbs <= 1) end[i] = t1;
            if (end[i] < floor_t) floor_t = end[i];
        }
        if (res->n_timeline == tl_cap) {
            long cap = tl_cap ? 2 * tl_cap : 256;
            wd_serve_step *p = realloc(res->timeline, (size_t)cap * sizeof *p);
            double *pq = realloc(res->dev_queue_s, (size_t)cap * nd * sizeof(double));
            if (pq) res->dev_queue_s = pq;
            double *pb = realloc(res->dev_busy_s, (size_t)cap * nd * sizeof(double));
            if (pb) res->dev_busy_s = pb;
            long *pj = realloc(res->dev_queued, (size_t)cap * nd * sizeof(long));
            if (pj) res->dev_queued = pj;
            long *pa = realloc(res->dev_ahead, (size_t)cap * nd * sizeof(long));
            if (pa) res->dev_ahead = pa;
            if (p) res->timeline = p;
            if (!p || !pq || !pb || !pj || !pa) {
                snprintf(err, errlen, "serve: out of memory");
                goto done;
            }
            tl_cap = cap;
        }
        {
            size_t o0 = (size_t)res->n_timeline * nd;
            device_totals(emu, &b1, &q1, res->dev_busy_s + o0, res->dev_queue_s + o0,
                          res->dev_queued + o0, res->dev_ahead + o0);
            for (int d = 0; d < nd; d++) {
                res->dev_busy_s[o0 + d] -= b0d[d];
                res->dev_queue_s[o0 + d] -= q0d[d];
                res->dev_queued[o0 + d] -= j0d[d];
                res->dev_ahead[o0 + d] -= a0d[d];
            }
        }
        double span = (t1 - t) * wd_emu_n_devices(emu);
        res->timeline[res->n_timeline++] =
            (wd_serve_step){t,       t1,     n_tok,  n_run, n_wait, nb,
                            kv_used, e_step, span > 0 ? (b1 - b0) / span : 0, q1 - q0};
        /* outputs: a user whose prompt is complete samples its next token */
        for (int i = 0; i < nb; i++) {
            int id = who[i];
            user_state *u = &us[id];
            wd_serve_user *r = &res->users[id];
            r->energy_j += e_step * ntok[i] / n_tok;
            double te = end[i];
            u->ready = te;
            int in_prefill = u->done_prompt < req[id].n_prompt;
            if (in_prefill) {
                u->done_prompt += ntok[i];
                if (u->done_prompt < req[id].n_prompt) continue;
                r->first_s = te;
            } else {
                double gap = te - u->last_t;
                if (gap > r->max_gap_s) r->max_gap_s = gap;
            }
            const float *lg = logits + (size_t)i * vocab;
            if (u->lp) {
                memcpy(u->lp + (size_t)r->n_out * vocab, lg, (size_t)vocab * sizeof(float));
                wd_log_softmax(u->lp + (size_t)r->n_out * vocab, vocab);
            }
            int tok = wd_sample(lg, vocab, o->temperature, o->top_p, &u->rng, scratch_idx);
            r->tokens[r->n_out++] = tok;
            u->last = tok, u->last_t = te;
            if (tok == c->eos_id || r->n_out >= req[id].max_new) { /* leaves the batch */
                r->finish_s = te;
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
    if (mbs)
        for (int i = 0; i < n_mbs; i++) wd_session_free(mbs[i]);
    free(mbs), free(b0d), free(q0d), free(j0d), free(a0d);
    wd_session_free(plain);
    free(order), free(running), free(waiting), free(us), free(seqs), free(toks), free(ntok);
    free(who), free(logits), free(scratch_idx), free(rdy), free(end);
    return rc;
}
