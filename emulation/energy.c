/* Energy and per-device accounting of the emulator (docs/serving.md,
 * "Energy"): per layer step, radio transmit energy (downlink: the BS's power
 * x its band share x airtime; uplink: the UE's power x airtime; airtime
 * excludes the fixed link latency and the air-interface overhead), device
 * compute energy (busy watts x compute time), BS compute energy (busy watts
 * x BS time); idle watts fill the rest of the virtual time. Per device: busy
 * time, expert calls, tokens and the queue of calls served one after another
 * in a layer step. */
#include <string.h>

#include "emulation/emu_private.h"

void wd_emu_account_energy(wd_emu *emu, struct phase_acc *a, double tbs) {
    a->e_bs += wd_energy_tx(emu->sc.bs.busy_w, tbs);
    emu->bs_busy += tbs;
    int na = emu->n_active;
    for (int i = 0; i < na; i++) {
        const wd_emu_dev_time *x = &emu->dt[i];
        int d = x->device;
        struct dev_acc *v = &emu->dacc[d];
        const wd_link *dl = emu->link[2 * d], *ul = emu->link[2 * d + 1];
        double air_dl = x->t_dl - x->air[WD_DL] - dl->latency;
        double air_ul = x->t_ul - x->air[WD_UL] - ul->latency;
        double e_dl = wd_energy_tx(emu->p_bs_w * x->share[WD_DL], air_dl > 0 ? air_dl : 0);
        double e_ul = wd_energy_tx(emu->p_ue_w, air_ul > 0 ? air_ul : 0);
        double e_c = wd_energy_tx(emu->sc.dev[d].profile.busy_w, x->t_c);
        a->e_dl += e_dl, a->e_ul += e_ul, a->e_c += e_c;
        v->e_dl += e_dl, v->e_ul += e_ul, v->e_c += e_c, v->busy += x->t_c;
        v->calls += x->calls, v->tokens += x->tokens;
        if (x->calls - 1 > v->max_q) v->max_q = x->calls - 1;
        emu->ready[i] = 0; /* scratch: the device's time taken by its earlier calls */
    }
    /* queue: a device serving several experts runs them in the order they were
     * first chosen; each call waits for the earlier ones (their share of the
     * device's possibly slowed or measured time) */
    for (int j = 0; j < emu->n_exp; j++) {
        int e = emu->exp_list[j], d = emu->exp_dev[e], i = emu->slot[d];
        const wd_emu_dev_time *x = &emu->dt[i];
        if (x->calls < 2) continue;
        double modeled = 0;
        for (int q = 0; q < emu->n_exp; q++) {
            int e2 = emu->exp_list[q];
            if (emu->exp_dev[e2] == d) modeled += wd_emu_expert_time(emu, d, emu->cnt_e[e2]);
        }
        double tc = modeled > 0 ? x->t_c * wd_emu_expert_time(emu, d, emu->cnt_e[e]) / modeled : 0;
        emu->dacc[d].qwait += emu->ready[i];
        emu->ready[i] += tc;
    }
}

void wd_emu_energy_reset(wd_emu *emu) {
    memset(emu->dacc, 0, emu->nd * sizeof *emu->dacc);
    emu->bs_busy = 0, emu->t_reset = emu->t;
}

double wd_emu_energy_active_j(const wd_emu *emu) {
    double e = 0;
    for (int p = 0; p < 2; p++)
        e += emu->ph[p].e_dl + emu->ph[p].e_ul + emu->ph[p].e_c + emu->ph[p].e_bs;
    return e;
}

int wd_emu_device_stats_get(const wd_emu *emu, int d, wd_emu_device_stats *o) {
    memset(o, 0, sizeof *o);
    if (d < 0 || d >= emu->nd) return 1;
    const struct dev_acc *v = &emu->dacc[d];
    double span = emu->t - emu->t_reset, idle = span - v->busy;
    o->busy_s = v->busy;
    o->utilisation = span > 0 ? v->busy / span : 0;
    o->energy_compute_j = v->e_c;
    o->energy_idle_j = wd_energy_tx(emu->sc.dev[d].profile.idle_w, idle > 0 ? idle : 0);
    o->energy_dl_j = v->e_dl, o->energy_ul_j = v->e_ul;
    o->queue_wait_s = v->qwait;
    o->calls = v->calls, o->tokens = v->tokens, o->max_queue = v->max_q;
    o->jobs = v->jobs, o->queued_jobs = v->queued_jobs, o->queue_ahead_sum = v->ahead_sum;
    return 0;
}

static void phase_energy(const struct phase_acc *a, wd_emu_phase_summary *s) {
    s->energy_dl_j = a->e_dl, s->energy_ul_j = a->e_ul;
    s->energy_device_j = a->e_c, s->energy_bs_j = a->e_bs;
    double sum = a->e_dl + a->e_ul + a->e_c + a->e_bs;
    s->energy_per_token_j = a->tokens > 0 ? sum / (double)a->tokens : 0;
}

void wd_emu_energy_summarize(const wd_emu *emu, wd_emu_summary *s) {
    phase_energy(&emu->ph[PH_PREFILL], &s->prefill);
    phase_energy(&emu->ph[PH_DECODE], &s->decode);
    s->energy_active_j = wd_emu_energy_active_j(emu);
    s->energy_idle_j = 0;
    for (int d = 0; d < emu->nd; d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        s->energy_idle_j += ds.energy_idle_j;
    }
    double bs_idle = emu->t - emu->t_reset - emu->bs_busy;
    s->energy_idle_j += wd_energy_tx(emu->sc.bs.idle_w, bs_idle > 0 ? bs_idle : 0);
    s->energy_total_j = s->energy_active_j + s->energy_idle_j;
    s->energy_per_token_j = s->tokens > 0 ? s->energy_total_j / (double)s->tokens : 0;
}
