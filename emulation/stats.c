/* Fault accounting and statistics of the emulator: per-token flags, experts
 * replaced and dropped, and the latency samples of the two phases (prefill:
 * time to first token; decode: time per output token), summarised. */
#include <stdlib.h>
#include <string.h>

#include "emulation/emu_private.h"

/* ---- fault accounting ------------------------------------------------------------------ */
int wd_emu_reserve_flags(wd_emu *emu, int n) {
    if (n <= emu->flag_cap) return 0;
    unsigned char *a = realloc(emu->sel_flag, n), *b;
    if (!a) return 1;
    emu->sel_flag = a;
    if (!(b = realloc(emu->fwd_flag, n))) return 1;
    emu->fwd_flag = b;
    emu->flag_cap = n;
    return 0;
}

/* Per token of the selection just made: its own top-k held an unreachable
 * expert (rerouted), all of it was unreachable (fallback), or nothing was
 * reachable (dropped). */
void wd_emu_mark_selection(wd_emu *emu, int n_tokens, const float *probs, const int *n,
                           const int *expert) {
    int E = emu->E, reach = 0;
    for (int e = 0; e < E; e++) reach += emu->avail_e[e] != 0;
    emu->sel_replaced = emu->sel_nonstraggler = 0;
    /* drops of experts that would not have set the layer's wait: tau below the
       largest tau of the experts the tokens held before the policy dropped */
    int kk = emu->k < reach ? emu->k : reach, any_drop = 0;
    for (int t = 0; t < n_tokens && !any_drop; t++) any_drop = n[t] < kk;
    if (any_drop && (size_t)n_tokens * kk <= emu->base_cap) {
        /* the wait without the drops: the slowest of the chosen experts and of the
           top-k of the tokens that dropped some */
        double wait = 0;
        int *b = emu->base_ids;
        for (int t = 0; t < n_tokens; t++) {
            const int *c = expert + (size_t)t * E;
            for (int q = 0; q < n[t]; q++)
                if (emu->tau_e[c[q]] > wait) wait = emu->tau_e[c[q]];
            if (n[t] >= kk) continue;
            int m = wd_policy_top(probs + (size_t)t * E, emu->avail_e, E, kk, b + (size_t)t * kk);
            for (int j = m; j < kk; j++) b[(size_t)t * kk + j] = -1;
            for (int j = 0; j < m; j++)
                if (emu->tau_e[b[(size_t)t * kk + j]] > wait) wait = emu->tau_e[b[(size_t)t * kk + j]];
        }
        for (int t = 0; t < n_tokens; t++)
            for (int j = 0; j < kk && n[t] < kk; j++) {
                int e = b[(size_t)t * kk + j], kept = 0;
                if (e < 0 || !(emu->tau_e[e] < wait)) continue;
                for (int q = 0; q < n[t] && !kept; q++) kept = expert[(size_t)t * E + q] == e;
                emu->sel_nonstraggler += !kept;
            }
    }
    for (int t = 0; t < n_tokens; t++) {
        unsigned char f = n[t] == 0 ? FL_DROPPED : 0;
        if (reach < E) {
            int k = wd_policy_top(probs + (size_t)t * E, NULL, E, emu->k, emu->top_ids), gone = 0;
            for (int j = 0; j < k; j++) gone += !emu->avail_e[emu->top_ids[j]];
            if (gone) f |= FL_REROUTED;
            if (gone == k && n[t] > 0) f |= FL_FALLBACK;
            /* the unreachable ones that a reachable expert could stand in for */
            int kk = k < reach ? k : reach;
            emu->sel_replaced += kk - (k - gone);
        }
        emu->sel_flag[t] = f;
    }
    emu->sel_n = n_tokens;
}

/* Does a fault window of device d (down, or link in direction dir) overlap [a, b)? */
static int link_fault_in(const wd_emu *emu, int d, int dir, double a, double b) {
    for (int i = 0; i < emu->sc.n_faults; i++) {
        const wd_fault *f = &emu->sc.faults[i];
        if (f->device != d || f->kind == WD_FAULT_SLOW) continue;
        if (f->kind == WD_FAULT_LINK && (!(f->dir_mask & (1 << dir)) || f->value == 1.0))
            continue;
        if (a < f->to_s && b > f->from_s) return 1;
    }
    return 0;
}

/* ---- phases and latency samples ------------------------------------------------------------ */
static int push_lat(struct phase_acc *a, double v) {
    if (a->n_lat == a->cap_lat) {
        size_t c = a->cap_lat ? 2 * a->cap_lat : 1024;
        double *p = realloc(a->lat, c * sizeof(double));
        if (!p) return 1;
        a->lat = p, a->cap_lat = c;
    }
    a->lat[a->n_lat++] = v;
    return 0;
}

void wd_emu_set_phase(wd_emu *emu, wd_emu_phase p) {
    emu->phase_mode = p;
    emu->prefill_open = 0;
}

wd_emu_phase wd_emu_closed_phase(const wd_emu *emu, int *new_sample) {
    *new_sample = emu->last_closed >= 0 && emu->last_new;
    return emu->last_closed == PH_PREFILL  ? WD_PHASE_PREFILL
           : emu->last_closed == PH_DECODE ? WD_PHASE_DECODE
                                           : WD_PHASE_AUTO;
}

void wd_emu_finish_forward(wd_emu *emu, double seconds) {
    if (!(seconds > 0)) return;
    /* pipelined: the LM head waits for the BS busy with another micro-batch */
    double t0 = emu->pipe_n ? wd_emu_pipe_bs_fit(emu, emu->t, seconds) : emu->t, dt = t0 - emu->t;
    if (emu->pipe_n) wd_emu_pipe_bs_reserve(emu, t0, seconds); /* no memory: only the interval is lost */
    emu->t = t0 + seconds;
    emu->bs_busy += seconds;
    if (emu->last_closed < 0) return;
    struct phase_acc *a = &emu->ph[emu->last_closed];
    if (a->n_lat) a->lat[a->n_lat - 1] += seconds + dt, a->bs += seconds;
    a->e_bs += wd_energy_tx(emu->sc.bs.busy_w, seconds);
}

/* The phase of a forward pass that starts with n_tokens tokens. */
static int phase_of(const wd_emu *emu, int n_tokens) {
    if (emu->phase_mode == WD_PHASE_PREFILL) return PH_PREFILL;
    if (emu->phase_mode == WD_PHASE_DECODE) return PH_DECODE;
    return n_tokens > 1 ? PH_PREFILL : PH_DECODE;
}

/* ---- per step -------------------------------------------------------------------------------- */
/* faults: devices that ran slow or whose transfers met a fault window */
int wd_emu_account_faults(wd_emu *emu, int n_tokens, const int *n, const int *expert, double t1) {
    int na = emu->n_active;
    int any_slow = 0, any_link = 0, any_rerouted = 0;
    if (emu->sc.n_faults)
        for (int i = 0; i < na; i++) {
            const wd_emu_dev_time *x = &emu->dt[i];
            int d = x->device;
            double a = t1 + x->t_dl + x->t_c;
            unsigned char f = 0;
            if (wd_emu_slow_factor(emu, d, t1 + x->t_dl) != 1.0) f |= FL_SLOWED, any_slow = 1;
            if (link_fault_in(emu, d, WD_DL, t1, t1 + x->t_dl) ||
                link_fault_in(emu, d, WD_UL, a, a + x->t_ul))
                f |= FL_LINK, any_link = 1;
            emu->dev_flag[d] = f;
        }
    if (wd_emu_reserve_flags(emu, n_tokens)) return 1;
    int have_sel = emu->sel_n == n_tokens;
    emu->sel_n = -1;
    if (!have_sel) emu->sel_replaced = emu->sel_nonstraggler = 0; /* for record_step */
    for (int t = 0; t < n_tokens; t++) {
        unsigned char f = have_sel ? emu->sel_flag[t] : 0;
        if (n[t] == 0) f |= FL_DROPPED;
        if (any_slow || any_link)
            for (int j = 0; j < n[t]; j++) {
                int e = expert[(size_t)t * emu->E + j];
                f |= emu->dev_flag[emu->rep[e] >= 0 ? emu->rep[e] : emu->rep_dev[emu->rep_off[e]]];
            }
        any_rerouted |= (f & FL_REROUTED) != 0;
        emu->sel_flag[t] = f; /* this step's flags, merged into the forward's below */
    }
    emu->c_steps[0] += any_rerouted, emu->c_steps[1] += any_slow, emu->c_steps[2] += any_link;
    return 0;
}

int wd_emu_record_step(wd_emu *emu, int layer, int n_tokens, const int *n, double t0, double tbs,
                       double wait, double sum, int crit) {
    int na = emu->n_active;
    if (layer == 0) {
        emu->fwd_open = 1, emu->f_start = t0, emu->f_phase = phase_of(emu, n_tokens);
        emu->f_bs = emu->f_dl = emu->f_c = emu->f_ul = emu->f_air = emu->f_str = 0;
        emu->fwd_n = n_tokens;
        memset(emu->fwd_flag, 0, n_tokens);
    }
    struct phase_acc *a = &emu->ph[emu->fwd_open ? emu->f_phase : phase_of(emu, n_tokens)];
    emu->steps++;
    emu->last_closed = -1;
    for (int t = 0; t < n_tokens; t++) a->experts += n[t], a->dropped += emu->k - n[t];
    a->replaced += emu->sel_replaced, a->nonstraggler += emu->sel_nonstraggler;
    a->token_layers += n_tokens;
    for (int i = 0; i < na; i++)
        a->bits_dl += emu->dt[i].bits[WD_DL], a->bits_ul += emu->dt[i].bits[WD_UL];
    wd_emu_account_energy(emu, a, tbs);
    if (emu->fwd_open && emu->fwd_n == n_tokens)
        for (int t = 0; t < n_tokens; t++) emu->fwd_flag[t] |= emu->sel_flag[t];
    if (emu->fwd_open) {
        emu->f_bs += tbs;
        if (crit >= 0) {
            const wd_emu_dev_time *x = &emu->dt[crit];
            double air = x->air[WD_DL] + x->air[WD_UL];
            emu->f_dl += x->t_dl - x->air[WD_DL], emu->f_c += x->t_c;
            emu->f_ul += x->t_ul - x->air[WD_UL], emu->f_air += air;
            emu->f_str += wait - sum / na;
        }
        if (layer == emu->L - 1) { /* one sample per forward pass (or explicit prefill) */
            double lat = emu->t - emu->f_start;
            int join = emu->f_phase == PH_PREFILL && emu->phase_mode == WD_PHASE_PREFILL;
            emu->last_new = !(join && emu->prefill_open && a->n_lat);
            if (!emu->last_new)
                a->lat[a->n_lat - 1] += lat;
            else if (push_lat(a, lat))
                return 1;
            emu->prefill_open |= join;
            emu->last_closed = emu->f_phase;
            a->tokens += n_tokens, a->forwards++;
            a->bs += emu->f_bs, a->dl += emu->f_dl, a->c += emu->f_c, a->ul += emu->f_ul;
            a->air += emu->f_air, a->str += emu->f_str;
            emu->fwd_open = 0;
            if (emu->fwd_n == n_tokens)
                for (int t = 0; t < n_tokens; t++)
                    for (int b = 0; b < 5; b++) emu->c_tok[b] += (emu->fwd_flag[t] >> b) & 1;
        }
    }
    return 0;
}

const double *wd_emu_token_latencies(const wd_emu *emu, size_t *n) {
    *n = emu->ph[PH_DECODE].n_lat;
    return emu->ph[PH_DECODE].lat;
}

/* ---- statistics ------------------------------------------------------------------------- */
void wd_emu_reset_stats(wd_emu *emu) {
    for (int p = 0; p < 2; p++) {
        double *lat = emu->ph[p].lat;
        size_t cap = emu->ph[p].cap_lat;
        memset(&emu->ph[p], 0, sizeof emu->ph[p]);
        emu->ph[p].lat = lat, emu->ph[p].cap_lat = cap;
    }
    emu->steps = 0;
    wd_emu_energy_reset(emu);
    emu->fwd_open = 0, emu->prefill_open = 0, emu->last_closed = -1;
    memset(emu->c_tok, 0, sizeof emu->c_tok);
    memset(emu->c_steps, 0, sizeof emu->c_steps);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *s, size_t n, double q) { /* linear, as numpy */
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) return s[n - 1];
    return s[i] + (pos - (double)i) * (s[i + 1] - s[i]);
}

static void summarize_phase(const struct phase_acc *a, wd_emu_phase_summary *s) {
    s->forwards = a->forwards, s->samples = (long)a->n_lat, s->tokens = a->tokens;
    s->experts_replaced = a->replaced, s->experts_dropped = a->dropped;
    s->experts_dropped_nonstraggler = a->nonstraggler;
    if (a->token_layers > 0) {
        s->experts_per_token = a->experts / a->token_layers;
    }
    if (a->tokens > 0) {
        s->dl_bits_per_token = a->bits_dl / (double)a->tokens;
        s->ul_bits_per_token = a->bits_ul / (double)a->tokens;
    }
    if (!a->n_lat) return;
    double sum = 0, F = (double)a->n_lat;
    for (size_t i = 0; i < a->n_lat; i++) sum += a->lat[i];
    s->mean_s = sum / (double)a->n_lat;
    double *v = malloc(a->n_lat * sizeof(double));
    if (v) {
        memcpy(v, a->lat, a->n_lat * sizeof(double));
        qsort(v, a->n_lat, sizeof(double), cmp_double);
        s->p50_s = quantile(v, a->n_lat, 0.50);
        s->p95_s = quantile(v, a->n_lat, 0.95);
        s->p99_s = quantile(v, a->n_lat, 0.99);
        s->max_s = v[a->n_lat - 1];
        free(v);
    }
    s->bs_s = a->bs / F, s->dl_s = a->dl / F, s->comp_s = a->c / F, s->ul_s = a->ul / F;
    s->air_s = a->air / F, s->straggle_s = a->str / F;
}

void wd_emu_summarize(const wd_emu *emu, wd_emu_summary *s) {
    memset(s, 0, sizeof *s);
    summarize_phase(&emu->ph[PH_PREFILL], &s->prefill);
    summarize_phase(&emu->ph[PH_DECODE], &s->decode);
    s->tokens = s->prefill.tokens + s->decode.tokens;
    s->forwards = s->prefill.forwards + s->decode.forwards;
    s->steps = emu->steps;
    s->experts_replaced = s->prefill.experts_replaced + s->decode.experts_replaced;
    s->experts_dropped = s->prefill.experts_dropped + s->decode.experts_dropped;
    s->virtual_time_s = emu->t;
    s->tokens_rerouted = emu->c_tok[0], s->tokens_fallback = emu->c_tok[1];
    s->tokens_dropped = emu->c_tok[2], s->tokens_slowed = emu->c_tok[3];
    s->tokens_link_fault = emu->c_tok[4];
    s->steps_rerouted = emu->c_steps[0], s->steps_slowed = emu->c_steps[1];
    s->steps_link_fault = emu->c_steps[2];
    s->n_faults = emu->sc.n_faults;
    wd_emu_energy_summarize(emu, s);
}
