/* Pipelined micro-batches (docs/serving.md, "Pipelined micro-batches"): the
 * BS splits a step's batch into n micro-batches and interleaves them through
 * the layers, so that while one waits for its experts the BS runs the
 * attention and routers of another (two-batch overlap, pipeline-parallel MoE
 * serving). The accounting is event-driven on the virtual clock: each
 * micro-batch has its own clock; the BS has busy intervals (a micro-batch's
 * work, attention + routers or the LM head, fills the earliest idle gap from
 * the time it can start); every device has busy intervals too (it serves
 * jobs, one per micro-batch layer step: a job takes the earliest idle gap
 * from its arrival that holds it, behind the jobs planned before); every link carries
 * its last transfers (the band is shared by all transfers in flight).
 * A micro-batch's next layer starts when all its chosen experts of this layer
 * are back and the BS is idle. The host runs the micro-batch with the
 * earliest clock next (wd_emu_pipeline_ready). emu.c plans a step with these
 * states (plan_pipelined, wd_emu_step_measured); this file keeps them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/emu_private.h"

/* The open forward pass of the emulator (stats.c) into / out of a micro-batch. */
static int save_fwd(wd_emu *emu, struct mb_ctx *c) {
    c->ready = emu->t;
    c->fwd_open = emu->fwd_open, c->f_phase = emu->f_phase, c->fwd_n = emu->fwd_n;
    c->last_closed = emu->last_closed, c->last_new = emu->last_new;
    c->f_start = emu->f_start, c->f_bs = emu->f_bs, c->f_dl = emu->f_dl, c->f_c = emu->f_c;
    c->f_ul = emu->f_ul, c->f_air = emu->f_air, c->f_str = emu->f_str;
    if (!c->fwd_open || c->fwd_n < 1) return 0;
    if (c->fwd_n > c->flag_cap) {
        unsigned char *p = realloc(c->flag, (size_t)c->fwd_n);
        if (!p) return 1;
        c->flag = p, c->flag_cap = c->fwd_n;
    }
    memcpy(c->flag, emu->fwd_flag, (size_t)c->fwd_n);
    return 0;
}

static void load_fwd(wd_emu *emu, const struct mb_ctx *c) {
    emu->fwd_open = c->fwd_open, emu->f_phase = c->f_phase, emu->fwd_n = c->fwd_n;
    emu->last_closed = c->last_closed, emu->last_new = c->last_new;
    emu->f_start = c->f_start, emu->f_bs = c->f_bs, emu->f_dl = c->f_dl, emu->f_c = c->f_c;
    emu->f_ul = c->f_ul, emu->f_air = c->f_air, emu->f_str = c->f_str;
    /* the flags of a forward are only counted when they are all there */
    if (c->fwd_open && c->fwd_n > 0) {
        if (wd_emu_reserve_flags(emu, c->fwd_n))
            emu->fwd_n = -1; /* no memory: this forward's fault flags are not counted */
        else
            memcpy(emu->fwd_flag, c->flag, (size_t)c->fwd_n);
    }
}

int wd_emu_pipeline_begin(wd_emu *emu, int n, const double *start, char *err, size_t errlen) {
    if (n < 1 || n > 4096)
        return wd_fail(err, errlen, "pipeline: %d micro-batches (1 to 4096)", n);
    if (emu->pipe_n) return wd_fail(err, errlen, "pipeline: already begun");
    if (n == 1 && !start) return 0; /* the synchronous step */
    /* carried over: the BS, devices and links busy from the previous
     * pipelined step (none since a synchronous step: free from now on) */
    int carry = start && emu->pipe_carry;
    double floor = carry ? emu->pipe_floor : emu->t;
    for (int m = 0; start && m < n; m++)
        if (!(start[m] >= floor) || !isfinite(start[m]))
            return wd_fail(err, errlen,
                           "pipeline: micro-batch %d starts at %.9g s, before %.9g s (the "
                           "earliest clock of the step before)",
                           m, start[m], floor);
    if (n > emu->mb_cap) {
        struct mb_ctx *p = realloc(emu->mb, (size_t)n * sizeof *p);
        if (!p) return wd_fail(err, errlen, "pipeline: out of memory");
        memset(p + emu->mb_cap, 0, (size_t)(n - emu->mb_cap) * sizeof *p);
        emu->mb = p, emu->mb_cap = n;
    }
    int nd = emu->nd;
    if (!emu->dev_free) emu->dev_free = malloc((size_t)nd * sizeof(double));
    if (!emu->link_free) emu->link_free = malloc((size_t)2 * nd * sizeof(double));
    if (!emu->jobs || !emu->xfers) emu->jobs_cap = 16;
    if (!emu->jobs) emu->jobs = malloc((size_t)nd * emu->jobs_cap * sizeof *emu->jobs);
    if (!emu->t_start_dir) emu->t_start_dir = malloc((size_t)3 * nd * sizeof(double));
    if (!emu->xfers) emu->xfers = malloc((size_t)2 * nd * emu->jobs_cap * sizeof *emu->xfers);
    if (!emu->dev_free || !emu->link_free || !emu->jobs || !emu->t_start_dir || !emu->xfers)
        return wd_fail(err, errlen, "pipeline: out of memory");
    if (!carry) { /* the synchronous steps before left nothing busy */
        for (int d = 0; d < nd; d++) {
            emu->dev_free[d] = emu->link_free[2 * d] = emu->link_free[2 * d + 1] = emu->t;
            for (int j = 0; j < emu->jobs_cap; j++)
                emu->jobs[d * emu->jobs_cap + j] = (struct dev_job){-INFINITY, -INFINITY, 0};
        }
        for (int j = 0; j < 2 * nd * emu->jobs_cap; j++)
            emu->xfers[j] = (struct xfer){-INFINITY, -INFINITY};
        emu->n_iv = 0;
    }
    if (start) emu->t = start[0];
    if (save_fwd(emu, &emu->mb[0])) return wd_fail(err, errlen, "pipeline: out of memory");
    for (int m = 1; m < n; m++) {
        struct mb_ctx *c = &emu->mb[m];
        unsigned char *flag = c->flag;
        int cap = c->flag_cap;
        memset(c, 0, sizeof *c);
        c->flag = flag, c->flag_cap = cap;
        c->ready = start ? start[m] : emu->t;
        c->last_closed = -1;
    }
    emu->pipe_n = n, emu->pipe_cur = 0, emu->pipe_carry = start != NULL;
    return 0;
}

void wd_emu_pipeline_switch(wd_emu *emu, int m) {
    if (!emu->pipe_n || m < 0 || m >= emu->pipe_n) return;
    if (m != emu->pipe_cur) {
        if (save_fwd(emu, &emu->mb[emu->pipe_cur])) emu->mb[emu->pipe_cur].fwd_n = -1;
        load_fwd(emu, &emu->mb[m]);
        emu->pipe_cur = m;
        emu->t = emu->mb[m].ready;
    }
    emu->t = wd_emu_pipe_bs_fit(emu, emu->t, 0);
}

double wd_emu_pipeline_ready(const wd_emu *emu, int m) {
    if (!emu->pipe_n || m < 0 || m >= emu->pipe_n) return emu->t;
    return m == emu->pipe_cur ? emu->t : emu->mb[m].ready;
}

double wd_emu_pipe_bs_fit(const wd_emu *emu, double t, double dur) {
    for (int i = 0; i < emu->n_iv; i++) {
        const double *iv = emu->bs_iv + 2 * i;
        if (t + dur <= iv[0] && t < iv[0]) break; /* the gap before it fits */
        if (iv[1] > t) t = iv[1];
    }
    return t;
}

int wd_emu_pipe_bs_reserve(wd_emu *emu, double start, double dur) {
    if (!(dur > 0)) return 0;
    /* drop what ended before any micro-batch can start again */
    double keep = wd_emu_pipe_keep(emu);
    int j = 0;
    for (int i = 0; i < emu->n_iv; i++)
        if (emu->bs_iv[2 * i + 1] > keep || i == emu->n_iv - 1)
            emu->bs_iv[2 * j] = emu->bs_iv[2 * i], emu->bs_iv[2 * j + 1] = emu->bs_iv[2 * i + 1], j++;
    emu->n_iv = j;
    if (emu->n_iv == emu->cap_iv) {
        int c = emu->cap_iv ? 2 * emu->cap_iv : 64;
        double *p = realloc(emu->bs_iv, (size_t)2 * c * sizeof(double));
        if (!p) return 1;
        emu->bs_iv = p, emu->cap_iv = c;
    }
    int at = emu->n_iv;
    while (at > 0 && emu->bs_iv[2 * (at - 1)] > start) at--;
    memmove(emu->bs_iv + 2 * (at + 1), emu->bs_iv + 2 * at, (size_t)2 * (emu->n_iv - at) * sizeof(double));
    emu->bs_iv[2 * at] = start, emu->bs_iv[2 * at + 1] = start + dur;
    emu->n_iv++;
    return 0;
}

double wd_emu_pipe_keep(const wd_emu *emu) {
    double k = emu->t;
    for (int m = 0; m < emu->pipe_n; m++)
        if (m != emu->pipe_cur && emu->mb[m].ready < k) k = emu->mb[m].ready;
    return k;
}

void wd_emu_pipeline_end(wd_emu *emu) {
    if (!emu->pipe_n) return;
    emu->mb[emu->pipe_cur].ready = emu->t;
    double t = emu->t, lo = emu->t;
    for (int m = 0; m < emu->pipe_n; m++) {
        if (emu->mb[m].ready > t) t = emu->mb[m].ready;
        if (emu->mb[m].ready < lo) lo = emu->mb[m].ready;
    }
    emu->t = t; /* the last micro-batch's LM head is done */
    emu->pipe_floor = lo; /* no micro-batch of the next step starts before */
    emu->pipe_n = 0;
}

/* A transfer on link k (2 d + dir) in flight at t. */
static int link_busy(const wd_emu *emu, int k, double t) {
    if (emu->link_free[k] > t) return 1;
    const struct xfer *x = &emu->xfers[(size_t)k * emu->jobs_cap];
    for (int j = 0; j < emu->jobs_cap; j++)
        if (x[j].start <= t && x[j].end > t) return 1;
    return 0;
}

/* The slot of the earliest end (a free one: -inf) of link k, of device d. */
static struct xfer *oldest_xfer(wd_emu *emu, int k) {
    struct xfer *x = &emu->xfers[(size_t)k * emu->jobs_cap], *old = x;
    for (int j = 1; j < emu->jobs_cap; j++)
        if (x[j].end < old->end) old = &x[j];
    return old;
}

static struct dev_job *oldest_job(wd_emu *emu, int d) {
    struct dev_job *jb = &emu->jobs[(size_t)d * emu->jobs_cap], *old = jb;
    for (int j = 1; j < emu->jobs_cap; j++)
        if (jb[j].end < old->end) old = &jb[j];
    return old;
}

/* Twice the slots per device and link (1: no memory). */
static int grow_slots(wd_emu *emu) {
    int nd = emu->nd, c = emu->jobs_cap, c2 = 2 * c;
    struct dev_job *jb = malloc((size_t)nd * c2 * sizeof *jb);
    struct xfer *xf = malloc((size_t)2 * nd * c2 * sizeof *xf);
    if (!jb || !xf) {
        free(jb), free(xf);
        return 1;
    }
    for (int d = 0; d < nd; d++)
        for (int j = 0; j < c2; j++)
            jb[(size_t)d * c2 + j] = j < c ? emu->jobs[(size_t)d * c + j]
                                           : (struct dev_job){-INFINITY, -INFINITY, 0};
    for (int k = 0; k < 2 * nd; k++)
        for (int j = 0; j < c2; j++)
            xf[(size_t)k * c2 + j] = j < c ? emu->xfers[(size_t)k * c + j]
                                           : (struct xfer){-INFINITY, -INFINITY};
    free(emu->jobs), free(emu->xfers);
    emu->jobs = jb, emu->xfers = xf, emu->jobs_cap = c2;
    return 0;
}

double wd_emu_pipe_scale(const wd_emu *emu, int d, int dir, double t) {
    if (!emu->split[2 * d + dir]) /* its own link: halved while another transfer is on it */
        return link_busy(emu, 2 * d + dir, t) ? 0.5 : 1.0;
    int n = 0, busy = 0;
    for (int i = 0; i < emu->n_active; i++) n += emu->split[2 * emu->active[i] + dir];
    for (int e = 0; e < emu->nd; e++)
        busy += emu->split[2 * e + dir] && link_busy(emu, 2 * e + dir, t);
    return n > 0 ? (double)n / (n + busy) : 1.0;
}

double wd_emu_pipe_dev_fit(const wd_emu *emu, int d, double t, double dur) {
    const struct dev_job *jb = &emu->jobs[(size_t)d * emu->jobs_cap];
    if (emu->dev_free[d] > t) t = emu->dev_free[d];
    /* a job overlapping [t, t + dur) rules out every start before its end */
    for (int moved = 1; moved;) {
        moved = 0;
        for (int j = 0; j < emu->jobs_cap; j++)
            if (jb[j].end > t && jb[j].start < t + dur) t = jb[j].end, moved = 1;
    }
    return t;
}

int wd_emu_pipe_ahead(const wd_emu *emu, int d, double t, double start) {
    const struct dev_job *jb = &emu->jobs[(size_t)d * emu->jobs_cap];
    int a = 0;
    for (int j = 0; j < emu->jobs_cap; j++)
        if (jb[j].end > t && jb[j].start < start) a += jb[j].calls;
    return a;
}

/* The step just planned (dt; t_start_dir[i], [nd + i], [2 nd + i]: the
 * downlink start, compute end and compute start of slot i): its transfers and
 * jobs into the links' and devices' busy intervals (a slot is reused only
 * when its interval ended before any micro-batch's clock: nothing later can
 * meet it; else the slots double); the device's queue statistics. */
int wd_emu_pipe_commit(wd_emu *emu) {
    double keep = wd_emu_pipe_keep(emu);
    for (int i = 0; i < emu->n_active; i++) {
        const wd_emu_dev_time *x = &emu->dt[i];
        int d = x->device;
        while (oldest_job(emu, d)->end > keep || oldest_xfer(emu, 2 * d)->end > keep ||
               oldest_xfer(emu, 2 * d + 1)->end > keep)
            if (grow_slots(emu)) return 1;
        double end_c = emu->t_start_dir[emu->nd + i];
        double dl0 = emu->t_start_dir[i];
        *oldest_xfer(emu, 2 * d) = (struct xfer){dl0, dl0 + x->t_dl};
        *oldest_xfer(emu, 2 * d + 1) = (struct xfer){end_c, x->t_back};
        *oldest_job(emu, d) = (struct dev_job){emu->t_start_dir[2 * emu->nd + i], end_c, x->calls};
        struct dev_acc *v = &emu->dacc[d];
        v->jobs++;
        v->queued_jobs += x->queue_s > 0;
        v->ahead_sum += x->queue_ahead;
        v->qwait += x->queue_s;
        if (x->queue_ahead + x->calls - 1 > v->max_q) v->max_q = x->queue_ahead + x->calls - 1;
    }
    return 0;
}

void wd_emu_pipe_free(wd_emu *emu) {
    for (int m = 0; m < emu->mb_cap; m++) free(emu->mb[m].flag);
    free(emu->mb);
    free(emu->dev_free);
    free(emu->link_free);
    free(emu->xfers);
    free(emu->jobs);
    free(emu->t_start_dir);
    free(emu->bs_iv);
}
