/* The emulator: links, placement and the virtual clock; predict, select and
 * step one layer at a time (DESIGN.md, "One decode step, as data flows"). */
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

struct wd_emu {
    wd_scenario sc; /* deep copy */
    wd_emu_shape shape;
    int has_shape, nd, E, L, k;
    const wd_policy *pol;
    wd_policy_params par;
    wd_link **link; /* [nd * 2] */
    unsigned char *air_on; /* [nd * 2]: the link pays the air interface */
    unsigned char *split;  /* [nd * 2]: the link's capacity is the band shared by the active
                              devices (else the device's own: a trace, used whole) */
    int *c_active;         /* [nd] the devices sharing the band in allocate() */
    double *c_ready, *c_bits, *c_share;
    double air_mean[2], air_duty[2]; /* prediction: mean overhead of a small transfer, duty */
    wd_synth *syn;  /* [nd] */
    unsigned char *has_syn;
    int *los;
    int *rep_off, *rep_dev; /* expert e on devices rep_dev[rep_off[e] .. rep_off[e+1]) */
    int *rep;               /* [E] replica in use now (-1: none reachable) */
    double rep_time;
    double bits_tok, s0, bs_flops_tok, bs_bytes_step, bs1;
    int any_syn, rep_dirty; /* rep_dirty: recompute the best replicas */
    double *tc1;            /* [nd] compute time of one token through one expert */
    double *tau_dev, *tau_e, *tau_best;
    double *en_dev, *en_e;        /* predicted energy of one token through a device / expert */
    double p_bs_w, p_ue_w;        /* transmit powers (W) */
    struct dev_acc { /* per device over the run: busy time, energy, expert calls, queue */
        double busy, e_c, e_dl, e_ul, qwait;
        long calls, tokens;
        int max_q;
    } *dacc;
    double bs_busy, t_reset; /* BS busy time; clock at the last reset */
    double *tau_from, *tau_until; /* tau_dev[d] holds on [from, until) */
    double pred_lo, pred_hi;      /* all of them hold on [pred_lo, pred_hi) */
    double forget_t;              /* the synthetic channels drop nothing before */
    unsigned char *avail_e, *mark;
    /* step scratch */
    long gen, tok;
    long *dev_gen, *dev_tok, *exp_gen;
    int *cnt_e, *exp_dev, *exp_list, *active, *slot, n_active, n_exp;
    wd_emu_dev_time *dt;
    double *ready, *bits, *share;
    double *pscratch;
    size_t pscratch_n;
    double t;
    /* statistics, per phase (PH_PREFILL, PH_DECODE): one latency sample per
     * forward pass (prefill: time to first token; decode: time per output
     * token), sums of the critical-path terms per forward */
    wd_emu_phase phase_mode;
    struct phase_acc {
        double *lat;
        size_t n_lat, cap_lat;
        long forwards, tokens, replaced, dropped, nonstraggler;
        double bs, dl, c, ul, air, str, experts, token_layers, bits_dl, bits_ul;
        double e_dl, e_ul, e_c, e_bs; /* energy (J): radio, device compute, BS compute */
    } ph[2];
    long steps;
    int fwd_open, f_phase;
    int prefill_open; /* explicit prefill: later prefill passes join the open sample */
    int last_closed;  /* phase of the forward just closed (-1: none, or a step since) */
    int last_new;     /* it started a latency sample */
    double f_start, f_bs, f_dl, f_c, f_ul, f_air, f_str;
    long sel_replaced; /* of the last selection: top-k experts replaced (outage) */
    long sel_nonstraggler; /* of the last selection: drops of experts faster than the wait */
    /* faults and unreachable experts: per-token flags (FL_*) of the last
     * selection (sel_n tokens, -1: none pending) and of the open forward */
    unsigned char *sel_flag, *fwd_flag, *dev_flag;
    int *top_ids;
    int flag_cap, sel_n, fwd_n;
    long c_tok[5], c_steps[3];
};

enum { PH_PREFILL = 0, PH_DECODE = 1 };
enum { FL_REROUTED = 1, FL_FALLBACK = 2, FL_DROPPED = 4, FL_SLOWED = 8, FL_LINK = 16 };

/* ---- compute ------------------------------------------------------------------ */
static double expert_time(const wd_emu *emu, int d, int n) {
    double H = emu->shape.hidden, F = emu->shape.ffn;
    double flops = 6.0 * H * F * n;
    double bytes = 3.0 * H * F * emu->shape.weight_bytes + n * (2.0 * H + 3.0 * F) * 4.0;
    return wd_compute_time(&emu->sc.dev[d].profile, flops, bytes);
}

static double bs_time(const wd_emu *emu, int n) {
    return wd_compute_time(&emu->sc.bs, emu->bs_flops_tok * n,
                           emu->bs_bytes_step + n * 4.0 * emu->shape.hidden * 4.0);
}

static double slow_factor(const wd_emu *emu, int d, double t) {
    double s = 1.0;
    for (int i = 0; i < emu->sc.n_faults; i++) {
        const wd_fault *f = &emu->sc.faults[i];
        if (f->kind == WD_FAULT_SLOW && f->device == d && t >= f->from_s && t < f->to_s)
            s *= f->value;
    }
    return s;
}

/* ---- create / free ----------------------------------------------------------------- */
void wd_emu_free(wd_emu *emu) {
    if (!emu) return;
    if (emu->link)
        for (int i = 0; i < 2 * emu->nd; i++) wd_link_free(emu->link[i]);
    if (emu->syn)
        for (int d = 0; d < emu->nd; d++) wd_synth_free(&emu->syn[d]);
    wd_scenario_free(&emu->sc);
    void *p[] = {emu->link,      emu->syn,      emu->has_syn,  emu->los,     emu->rep_off,
                 emu->rep_dev,   emu->rep,      emu->tc1,      emu->tau_dev, emu->tau_from,
                 emu->tau_until, emu->tau_best, emu->tau_e,    emu->avail_e, emu->mark,
                 emu->dev_gen,   emu->dev_tok,  emu->exp_gen,  emu->cnt_e,   emu->exp_dev,
                 emu->exp_list,  emu->active,   emu->slot,     emu->dt,      emu->ready,
                 emu->bits,      emu->share,    emu->pscratch, emu->ph[0].lat, emu->sel_flag,
                 emu->fwd_flag,  emu->dev_flag, emu->top_ids, emu->ph[1].lat, emu->air_on,
                 emu->split, emu->c_active, emu->c_ready, emu->c_bits, emu->c_share, emu->en_dev,
                 emu->en_e,  emu->dacc};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    free(emu);
}

static int copy_scenario(wd_scenario *dst, const wd_scenario *src) {
    *dst = *src;
    dst->dev = calloc(src->n_devices, sizeof *dst->dev);
    dst->faults = calloc(src->n_faults ? src->n_faults : 1, sizeof *dst->faults);
    if (!dst->dev || !dst->faults) return 1;
    memcpy(dst->dev, src->dev, src->n_devices * sizeof *dst->dev);
    if (src->n_faults) memcpy(dst->faults, src->faults, src->n_faults * sizeof *dst->faults);
    for (int i = 0; i < src->n_devices; i++) {
        dst->dev[i].hosted = NULL;
        int n = src->dev[i].n_hosted;
        if (!n) continue;
        if (!(dst->dev[i].hosted = malloc(n * sizeof(int)))) return 1;
        memcpy(dst->dev[i].hosted, src->dev[i].hosted, n * sizeof(int));
    }
    return 0;
}

/* Prediction of the air interface: the mean overhead of a small transfer
 * over start times spread across one TDD period (expected HARQ rounds), and
 * the share of time each direction may send. */
static int air_prediction(wd_emu *emu, char *err, size_t errlen) {
    const wd_air *A = &emu->sc.radio.air;
    if (!A->enabled) return 0;
    wd_link_spec ideal = {.model = WD_LINK_CONSTANT, .rate_bps = 1e15, .rate_scale = 1.0};
    wd_link *l;
    if (wd_link_create(&l, &ideal, WD_DL, 0, 0, err, errlen)) return 1;
    int n = A->duplex == WD_DUPLEX_FDD ? 1 : (int)strlen(A->pattern), m = 56 * n;
    double period = n * wd_air_slot_s(A);
    for (int dir = 0; dir < 2; dir++) {
        double sum = 0, ov;
        for (int j = 0; j < m; j++)
            wd_air_tx_time(A, l, dir, (j + 0.5) * period / m, 1.0, 1.0, 0, 0, 1, &ov), sum += ov;
        emu->air_mean[dir] = sum / m;
        emu->air_duty[dir] = wd_air_duty(A, dir);
    }
    wd_link_free(l);
    return 0;
}

/* Transfer time of bits over device d's link dir from t; *air: its air-interface part. */
static double tx_time(wd_emu *emu, int d, int dir, double t, double bits, double share,
                      double *air) {
    wd_link *l = emu->link[2 * d + dir];
    *air = 0;
    if (!emu->air_on[2 * d + dir]) return wd_link_tx_time(l, t, bits, share);
    return wd_air_tx_time(&emu->sc.radio.air, l, dir, t, bits, share, emu->sc.seed, d, 0, air);
}

static int build_links(wd_emu *emu, char *err, size_t errlen) {
    const wd_scenario *sc = &emu->sc;
    const wd_radio *r = &sc->radio;
    const char *file = sc->path[0] ? sc->path : "scenario";
    for (int d = 0; d < emu->nd; d++) {
        const wd_device_spec *dv = &sc->dev[d];
        if (dv->link[WD_DL].model == WD_LINK_SYNTHETIC ||
            dv->link[WD_UL].model == WD_LINK_SYNTHETIC) {
            double d2 = hypot(dv->x_m, dv->y_m);
            int los = dv->los == WD_LOS_ALWAYS;
            if (dv->los == WD_LOS_PROBABILITY) {
                wd_erng g = {wd_stream_seed(sc->seed, d, 10)};
                los = wd_erng_uniform(&g) < wd_los_probability(r->model, d2, r->ue_height_m);
            }
            emu->los[d] = los;
            double pl =
                wd_pathloss_db(r->model, los, d2, r->carrier_ghz, r->bs_height_m, r->ue_height_m);
            wd_synth_init(&emu->syn[d], r, pl, wd_shadow_sigma_db(r->model, los),
                          wd_shadow_decorrelation_m(r->model, los), dv->speed_mps,
                          wd_stream_seed(sc->seed, d, 20));
            emu->has_syn[d] = 1;
            emu->any_syn = 1;
        }
        for (int k = 0; k < 2; k++) {
            const wd_link_spec *ls = &dv->link[k];
            wd_link **l = &emu->link[2 * d + k];
            if (ls->model == WD_LINK_SYNTHETIC) {
                *l = wd_link_new_synthetic(&emu->syn[d], k, d, ls->latency_s, ls->rate_scale,
                                           sc->max_wait_s);
                if (!*l) return wd_fail(err, errlen, "%s: out of memory", file);
            } else {
                char e2[768];
                if (wd_link_create_from(l, ls, k, d, sc->max_wait_s, emu->link, 2 * d + k, e2,
                                        sizeof e2))
                    return wd_fail(err, errlen, "%s: devices[%d].%s: %s", file, d,
                                   k == WD_DL ? "downlink" : "uplink", e2);
            }
        }
    }
    for (int i = 0; i < 2 * emu->nd; i++) {
        const wd_link_spec *ls = &sc->dev[i / 2].link[i % 2];
        emu->air_on[i] = r->air.enabled && (ls->air < 0 ? ls->model == WD_LINK_SYNTHETIC : ls->air);
        emu->split[i] = ls->shared < 0 ? ls->model == WD_LINK_SYNTHETIC ||
                                             ls->model == WD_LINK_CONSTANT
                                       : ls->shared;
    }
    if (air_prediction(emu, err, errlen)) return 1;
    for (int i = 0; i < sc->n_faults; i++) {
        const wd_fault *f = &sc->faults[i];
        if (f->kind == WD_FAULT_SLOW) continue;
        for (int k = 0; k < 2; k++) {
            if (f->kind == WD_FAULT_LINK && !(f->dir_mask & (1 << k))) continue;
            if (wd_link_add_window(emu->link[2 * f->device + k], f->from_s, f->to_s,
                                   f->kind == WD_FAULT_DOWN ? 0.0 : f->value))
                return wd_fail(err, errlen, "%s: out of memory", file);
        }
    }
    return 0;
}

static int build_placement(wd_emu *emu, char *err, size_t errlen) {
    const wd_scenario *sc = &emu->sc;
    const char *file = sc->path[0] ? sc->path : "scenario";
    int E = emu->E, nd = emu->nd, listed = 0, total = 0;
    for (int d = 0; d < nd; d++) listed |= sc->dev[d].n_hosted > 0;
    int *cnt = calloc(E, sizeof(int));
    if (!cnt) return wd_fail(err, errlen, "%s: out of memory", file);
    /* pass 0 counts, pass 1 fills */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            emu->rep_off[0] = 0;
            for (int e = 0; e < E; e++) emu->rep_off[e + 1] = emu->rep_off[e] + cnt[e];
            if (!(emu->rep_dev = malloc((total ? total : 1) * sizeof(int)))) {
                free(cnt);
                return wd_fail(err, errlen, "%s: out of memory", file);
            }
            memset(cnt, 0, E * sizeof(int));
        }
        for (int d = 0; d < nd; d++) {
            const wd_device_spec *dv = &sc->dev[d];
            int nh = listed ? dv->n_hosted : nd >= E ? 1 : (E - d + nd - 1) / nd;
            for (int j = 0; j < nh; j++) {
                int e = listed ? dv->hosted[j] : nd >= E ? d % E : d + j * nd;
                if (e >= E) {
                    free(cnt);
                    return wd_fail(err, errlen,
                                   "%s: devices[%d].experts: expert %d is out of "
                                   "range for a model with %d experts",
                                   file, d, e, E);
                }
                if (pass == 0)
                    total++;
                else
                    emu->rep_dev[emu->rep_off[e] + cnt[e]] = d;
                cnt[e]++;
            }
            double need = nh * (double)emu->L * 3.0 * emu->shape.hidden * emu->shape.ffn *
                          emu->shape.weight_bytes;
            if (pass == 0 && dv->profile.mem_capacity > 0 && need > dv->profile.mem_capacity) {
                free(cnt);
                return wd_fail(err, errlen,
                               "%s: devices[%d] (%s): %d experts x %d layers need "
                               "%.3g GB, more than its memory (%.3g GB)",
                               file, d, dv->name, nh, emu->L, need / 1e9,
                               dv->profile.mem_capacity / 1e9);
            }
        }
    }
    for (int e = 0; e < E; e++)
        if (!cnt[e]) {
            free(cnt);
            return wd_fail(err, errlen, "%s: expert %d is hosted by no device", file, e);
        }
    free(cnt);
    return 0;
}

int wd_emu_create(wd_emu **out, const wd_scenario *sc, const wd_emu_shape *shape, char *err,
                  size_t errlen) {
    *out = NULL;
    const char *file = sc->path[0] ? sc->path : "scenario";
    if (sc->n_devices < 1 || !sc->dev) return wd_fail(err, errlen, "%s: no devices", file);
    if (shape &&
        (shape->hidden < 1 || shape->ffn < 1 || shape->n_layers < 1 || shape->n_experts < 1 ||
         shape->top_k < 1 || shape->top_k > shape->n_experts || !(shape->weight_bytes > 0)))
        return wd_fail(err, errlen,
                       "%s: bad model shape (hidden %d, ffn %d, layers %d, experts "
                       "%d, top_k %d, weight bytes %g)",
                       file, shape->hidden, shape->ffn, shape->n_layers, shape->n_experts,
                       shape->top_k, shape->weight_bytes);
    const wd_policy *pol = wd_policy_find(sc->policy);
    if (!pol) return wd_fail(err, errlen, "%s: unknown policy '%s'", file, sc->policy);
    wd_emu *emu = calloc(1, sizeof *emu);
    if (!emu) return wd_fail(err, errlen, "%s: out of memory", file);
    if (copy_scenario(&emu->sc, sc)) goto oom;
    int nd = emu->nd = sc->n_devices;
    emu->pol = pol;
    emu->par = sc->params;
    emu->has_shape = shape != NULL;
    if (shape) emu->shape = *shape;
    int E = emu->E = shape ? shape->n_experts : 1;
    emu->L = shape ? shape->n_layers : 1;
    emu->k = shape ? shape->top_k : 1;
    emu->s0 = 1.0 / (emu->k < nd ? emu->k : nd);
    emu->rep_time = NAN;
    emu->rep_dirty = 1;
    emu->link = calloc(2 * nd, sizeof *emu->link);
    emu->air_on = calloc(2 * nd, 1);
    emu->split = calloc(2 * nd, 1);
    emu->c_active = calloc(nd, sizeof(int));
    emu->c_ready = calloc(nd, sizeof(double));
    emu->c_bits = calloc(nd, sizeof(double));
    emu->c_share = calloc(nd, sizeof(double));
    emu->syn = calloc(nd, sizeof *emu->syn);
    emu->has_syn = calloc(nd, 1);
    emu->los = calloc(nd, sizeof(int));
    emu->tc1 = calloc(nd, sizeof(double));
    emu->tau_dev = calloc(nd, sizeof(double));
    emu->en_dev = calloc(nd, sizeof(double));
    emu->dacc = calloc(nd, sizeof *emu->dacc);
    emu->en_e = calloc(E, sizeof(double));
    emu->p_bs_w = wd_dbm_to_watt(sc->radio.bs_tx_power_dbm);
    emu->p_ue_w = wd_dbm_to_watt(sc->radio.ue_tx_power_dbm);
    emu->tau_from = calloc(nd, sizeof(double));
    emu->tau_until = calloc(nd, sizeof(double)); /* [0, 0): empty, nothing cached */
    emu->mark = calloc(nd, 1);
    emu->dev_gen = calloc(nd, sizeof(long));
    emu->dev_tok = calloc(nd, sizeof(long));
    emu->active = calloc(nd, sizeof(int));
    emu->slot = calloc(nd, sizeof(int));
    emu->dt = calloc(nd, sizeof *emu->dt);
    emu->ready = calloc(nd, sizeof(double));
    emu->bits = calloc(nd, sizeof(double));
    emu->share = calloc(nd, sizeof(double));
    emu->rep_off = calloc(E + 1, sizeof(int));
    emu->rep = calloc(E, sizeof(int));
    emu->tau_e = calloc(E, sizeof(double));
    emu->tau_best = calloc(E, sizeof(double));
    emu->avail_e = calloc(E, 1);
    emu->exp_gen = calloc(E, sizeof(long));
    emu->cnt_e = calloc(E, sizeof(int));
    emu->exp_dev = calloc(E, sizeof(int));
    emu->exp_list = calloc(E, sizeof(int));
    emu->dev_flag = calloc(nd, 1);
    emu->top_ids = calloc(E, sizeof(int));
    emu->sel_n = -1;
    emu->last_closed = -1;
    if (!emu->en_dev || !emu->dacc || !emu->en_e || !emu->dev_flag || !emu->top_ids ||
        !emu->link || !emu->air_on || !emu->split || !emu->c_active || !emu->c_ready ||
        !emu->c_bits || !emu->c_share || !emu->syn || !emu->has_syn || !emu->los || !emu->tc1 ||
        !emu->tau_dev ||
        !emu->tau_from || !emu->tau_until || !emu->mark || !emu->dev_gen || !emu->dev_tok ||
        !emu->active || !emu->slot || !emu->dt || !emu->ready || !emu->bits || !emu->share ||
        !emu->rep_off || !emu->rep || !emu->tau_e || !emu->tau_best || !emu->avail_e ||
        !emu->exp_gen || !emu->cnt_e || !emu->exp_dev || !emu->exp_list)
        goto oom;
    if (build_links(emu, err, errlen)) goto fail;
    if (shape) {
        if (build_placement(emu, err, errlen)) goto fail;
        double H = shape->hidden,
               q = shape->n_heads > 0 ? (double)shape->n_heads * shape->head_dim : H,
               kv = shape->n_kv_heads > 0 ? (double)shape->n_kv_heads * shape->head_dim : H;
        double elems = H * q + 2.0 * H * kv + q * H + (double)E * H; /* q, k, v, o, router */
        emu->bs_flops_tok = shape->bs_layer_flops > 0 ? shape->bs_layer_flops : 2.0 * elems;
        emu->bs_bytes_step =
            shape->bs_layer_bytes > 0 ? shape->bs_layer_bytes : elems * shape->weight_bytes;
        emu->bits_tok = H * sc->activation_bits;
        for (int d = 0; d < nd; d++) emu->tc1[d] = expert_time(emu, d, 1);
        emu->bs1 = bs_time(emu, 1);
    }
    *out = emu;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", file);
fail:
    wd_emu_free(emu);
    return 1;
}

double wd_emu_time(const wd_emu *emu) { return emu->t; }
void wd_emu_advance(wd_emu *emu, double s) {
    if (s > 0) emu->t += s;
}
int wd_emu_n_devices(const wd_emu *emu) { return emu->nd; }
const wd_scenario *wd_emu_scenario(const wd_emu *emu) { return &emu->sc; }

/* the same rule as build_placement */
int wd_scenario_expert_home(const wd_scenario *sc, int n_experts, int e) {
    int nd = sc->n_devices, E = n_experts, listed = 0;
    if (e < 0 || e >= E) return -1;
    for (int d = 0; d < nd; d++) listed |= sc->dev[d].n_hosted > 0;
    for (int d = 0; d < nd; d++) {
        int nh = listed ? sc->dev[d].n_hosted : nd >= E ? 1 : (E - d + nd - 1) / nd;
        for (int j = 0; j < nh; j++)
            if ((listed ? sc->dev[d].hosted[j] : nd >= E ? d % E : d + j * nd) == e) return d;
    }
    return -1;
}
int wd_emu_expert_device(const wd_emu *emu, int e) {
    if (e < 0 || e >= emu->E) return -1;
    return emu->rep && !isnan(emu->rep_time) && emu->rep[e] >= 0 ? emu->rep[e]
                                                         : emu->rep_dev[emu->rep_off[e]];
}
int wd_emu_device_los(const wd_emu *emu, int d) { return d >= 0 && d < emu->nd ? emu->los[d] : 0; }
const char *wd_emu_policy_name(const wd_emu *emu) { return emu->pol->name; }

wd_link *wd_emu_link(wd_emu *emu, int d, int dir) {
    return d >= 0 && d < emu->nd && (dir == WD_DL || dir == WD_UL) ? emu->link[2 * d + dir] : NULL;
}

int wd_emu_set_policy(wd_emu *emu, const char *name, const wd_policy_params *p, char *err,
                      size_t errlen) {
    const wd_policy *pol = wd_policy_find(name);
    if (!pol) return wd_fail(err, errlen, "unknown policy '%s'", name);
    emu->pol = pol;
    if (p) emu->par = *p;
    return 0;
}

/* ---- predict ---------------------------------------------------------------------- */
/* One token through device d at time t with band shares (s_dl, s_ul);
 * *until: the value holds on [t, until) (rates and faults unchanged). */
static double device_tau(wd_emu *emu, int d, double t, double s_dl, double s_ul, double *until) {
    wd_link *dl = emu->link[2 * d], *ul = emu->link[2 * d + 1];
    double u1, u2, tc = emu->tc1[d];
    *until = INFINITY;
    emu->en_dev[d] = INFINITY;
    for (int i = 0; i < emu->sc.n_faults; i++) { /* device faults: the next change */
        const wd_fault *f = &emu->sc.faults[i];
        if (f->device != d || f->kind == WD_FAULT_LINK) continue;
        if (f->from_s > t && f->from_s < *until) *until = f->from_s;
        if (f->to_s > t && f->to_s < *until) *until = f->to_s;
        if (t >= f->from_s && t < f->to_s) {
            if (f->kind == WD_FAULT_DOWN) return INFINITY;
            tc *= f->value;
        }
    }
    double rd = wd_link_rate_until(dl, t, s_dl, &u1), ru = wd_link_rate_until(ul, t, s_ul, &u2);
    if (u1 < *until) *until = u1;
    if (u2 < *until) *until = u2;
    if (!(rd > 0) || !(ru > 0)) return INFINITY;
    double a[2] = {0, 0}, f[2] = {1, 1};
    for (int k = 0; k < 2; k++)
        if (emu->air_on[2 * d + k]) a[k] = emu->air_mean[k], f[k] = emu->air_duty[k];
    /* energy: the radio sends only during the data airtime (not while it waits
     * for a grant, a slot or the other direction's TDD slots) */
    emu->en_dev[d] = wd_energy_tx(emu->p_bs_w * s_dl, emu->bits_tok / rd) +
                     wd_energy_tx(emu->p_ue_w, emu->bits_tok / ru) +
                     wd_energy_tx(emu->sc.dev[d].profile.busy_w, tc);
    return dl->latency + a[0] + emu->bits_tok / (rd * f[0]) + tc + ul->latency + a[1] +
           emu->bits_tok / (ru * f[1]);
}

int wd_emu_predict(wd_emu *emu, double *tau, unsigned char *avail) {
    double t = emu->t;
    int changed = emu->rep_dirty;
    if (changed || !(t >= emu->pred_lo && t < emu->pred_hi)) {
        double lo = -INFINITY, hi = INFINITY;
        for (int d = 0; d < emu->nd; d++) {
            if (!(t >= emu->tau_from[d] && t < emu->tau_until[d])) {
                double old = emu->tau_dev[d];
                emu->tau_dev[d] = device_tau(emu, d, t, emu->split[2 * d] ? emu->s0 : 1.0,
                                             emu->split[2 * d + 1] ? emu->s0 : 1.0,
                                             &emu->tau_until[d]);
                emu->tau_from[d] = t;
                changed |= emu->tau_dev[d] != old;
            }
            if (emu->tau_from[d] > lo) lo = emu->tau_from[d];
            if (emu->tau_until[d] < hi) hi = emu->tau_until[d];
        }
        emu->pred_lo = lo, emu->pred_hi = hi;
    }
    emu->rep_time = t;
    emu->rep_dirty = 0;
    if (changed) /* best replica of every expert */
        for (int e = 0; e < emu->E; e++) {
            int best = -1;
            double bt = INFINITY;
            for (int i = emu->rep_off[e]; i < emu->rep_off[e + 1]; i++) {
                int d = emu->rep_dev[i];
                if (emu->tau_dev[d] < bt) bt = emu->tau_dev[d], best = d;
            }
            emu->rep[e] = best;
            emu->tau_best[e] = bt;
            emu->en_e[e] = best >= 0 ? emu->en_dev[best] : INFINITY;
        }
    int reach = 0;
    for (int e = 0; e < emu->E; e++) {
        if (tau) tau[e] = emu->tau_best[e];
        if (avail) avail[e] = emu->rep[e] >= 0;
        reach += emu->rep[e] >= 0;
    }
    return reach;
}

/* ---- plan: the times of one layer step (no clock change) ---------------------------- */
typedef struct {
    wd_emu *emu;
    int dir;
} need_ctx;

static double need_fn(void *c, int i, double T) {
    need_ctx *k = c;
    wd_emu *emu = k->emu;
    int j = 2 * emu->active[i] + k->dir;
    if (emu->air_on[j]) /* approximately: the mean overhead off the deadline, data in the
                           direction's share of time */
        return wd_link_share_needed(emu->link[j], emu->ready[i],
                                    emu->bits[i] / emu->air_duty[k->dir],
                                    T - emu->air_mean[k->dir]);
    return wd_link_share_needed(emu->link[2 * emu->active[i] + k->dir], emu->ready[i], emu->bits[i],
                                T);
}

/* Shares of one direction for the active devices (ready[], bits[] set). */
static void allocate_set(wd_emu *emu, int dir, int minmax) {
    int na = emu->n_active;
    for (int i = 0; i < na; i++) emu->share[i] = 1.0 / na;
    if (!minmax || na < 2) return;
    int closed = 1;
    double lo = -INFINITY, hi = -INFINITY, sum = 0;
    for (int i = 0; i < na; i++) {
        wd_link *l = emu->link[2 * emu->active[i] + dir];
        closed &= l->model == WD_LINK_CONSTANT && !l->n_win && l->rate * l->scale > 0 &&
                  !emu->air_on[2 * emu->active[i] + dir] &&
                  emu->ready[i] + l->latency ==
                      emu->ready[0] + emu->link[2 * emu->active[0] + dir]->latency;
        if (closed) sum += emu->bits[i] / (l->rate * l->scale);
        double a = emu->ready[i] + l->latency;
        double air, f = emu->ready[i] + tx_time(emu, emu->active[i], dir, emu->ready[i],
                                                emu->bits[i], 1.0 / na, &air);
        if (a > lo) lo = a;
        if (f > hi) hi = f;
    }
    if (closed) { /* constant rates, common start: s_i = X_i / sum X, X = bits / rate */
        for (int i = 0; i < na; i++) {
            wd_link *l = emu->link[2 * emu->active[i] + dir];
            emu->share[i] = emu->bits[i] / (l->rate * l->scale) / sum;
        }
        return;
    }
    if (!isfinite(hi)) return; /* someone never finishes: keep the equal split */
    need_ctx c = {emu, dir};
    wd_alloc_minmax_solve(na, need_fn, &c, lo, hi, emu->share);
}

/* Shares of one direction: the devices whose links share the band split it
 * (equal or min-max); a device on a link of its own (a trace) uses it whole. */
static void allocate(wd_emu *emu, int dir, int minmax) {
    int na = emu->n_active, ns = 0;
    for (int i = 0; i < na; i++) ns += emu->split[2 * emu->active[i] + dir];
    if (ns == na) {
        allocate_set(emu, dir, minmax);
        return;
    }
    int *act = emu->active;
    double *ready = emu->ready, *bits = emu->bits, *share = emu->share;
    for (int i = 0, j = 0; i < na; i++)
        if (emu->split[2 * act[i] + dir])
            emu->c_active[j] = act[i], emu->c_ready[j] = ready[i], emu->c_bits[j++] = bits[i];
    /* the subset in place of the active set, then back */
    emu->active = emu->c_active, emu->ready = emu->c_ready, emu->bits = emu->c_bits;
    emu->share = emu->c_share, emu->n_active = ns;
    if (ns) allocate_set(emu, dir, minmax);
    emu->active = act, emu->ready = ready, emu->bits = bits, emu->share = share;
    emu->n_active = na;
    for (int i = 0, j = 0; i < na; i++)
        share[i] = emu->split[2 * act[i] + dir] ? emu->c_share[j++] : 1.0;
}

static void plan(wd_emu *emu, int n_tokens, const int *n, const int *expert, double t1, int minmax,
                 const double *measured) {
    int E = emu->E;
    long gen = ++emu->gen;
    emu->n_active = emu->n_exp = 0;
    for (int t = 0; t < n_tokens; t++) {
        long tok = ++emu->tok;
        for (int j = 0; j < n[t]; j++) {
            int e = expert[(size_t)t * E + j];
            int d = emu->rep[e] >= 0 ? emu->rep[e] : emu->rep_dev[emu->rep_off[e]];
            if (emu->dev_gen[d] != gen) {
                emu->dev_gen[d] = gen;
                emu->slot[d] = emu->n_active;
                emu->active[emu->n_active] = d;
                emu->dt[emu->n_active++] = (wd_emu_dev_time){.device = d};
            }
            wd_emu_dev_time *x = &emu->dt[emu->slot[d]];
            if (emu->dev_tok[d] != tok) emu->dev_tok[d] = tok, x->tokens++;
            x->pairs++;
            if (emu->exp_gen[e] != gen) {
                emu->exp_gen[e] = gen;
                emu->cnt_e[e] = 0;
                emu->exp_dev[e] = d;
                emu->exp_list[emu->n_exp++] = e;
                emu->dt[emu->slot[d]].calls++;
            }
            emu->cnt_e[e]++;
        }
    }
    for (int i = 0; i < emu->n_exp; i++) {
        int e = emu->exp_list[i], d = emu->exp_dev[e];
        emu->dt[emu->slot[d]].t_c +=
            emu->cnt_e[e] == 1 ? emu->tc1[d] : expert_time(emu, d, emu->cnt_e[e]);
    }
    int na = emu->n_active;
    if (measured)
        for (int i = 0; i < na; i++)
            if (!isnan(measured[emu->dt[i].device])) emu->dt[i].t_c = measured[emu->dt[i].device];
    for (int i = 0; i < na; i++) { /* downlink: all start at t1 */
        wd_emu_dev_time *x = &emu->dt[i];
        x->bits[WD_DL] = x->tokens * emu->bits_tok;
        x->bits[WD_UL] = x->pairs * emu->bits_tok;
        emu->ready[i] = t1;
        emu->bits[i] = x->bits[WD_DL];
    }
    allocate(emu, WD_DL, minmax);
    for (int i = 0; i < na; i++) {
        wd_emu_dev_time *x = &emu->dt[i];
        x->share[WD_DL] = emu->share[i];
        x->t_dl = tx_time(emu, x->device, WD_DL, t1, x->bits[WD_DL], x->share[WD_DL],
                          &x->air[WD_DL]);
        if (emu->sc.n_faults) x->t_c *= slow_factor(emu, x->device, t1 + x->t_dl);
        emu->ready[i] = t1 + x->t_dl + x->t_c; /* uplink: each when its compute is done */
        emu->bits[i] = x->bits[WD_UL];
    }
    allocate(emu, WD_UL, minmax);
    for (int i = 0; i < na; i++) {
        wd_emu_dev_time *x = &emu->dt[i];
        x->share[WD_UL] = emu->share[i];
        x->t_ul = isfinite(emu->ready[i]) ? tx_time(emu, x->device, WD_UL, emu->ready[i],
                                                    x->bits[WD_UL], x->share[WD_UL], &x->air[WD_UL])
                                          : INFINITY;
    }
}

/* ---- fault accounting ------------------------------------------------------------------ */
static int reserve_flags(wd_emu *emu, int n) {
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
static void mark_selection(wd_emu *emu, int n_tokens, const float *probs, const int *n,
                           const int *expert) {
    int E = emu->E, reach = 0;
    for (int e = 0; e < E; e++) reach += emu->avail_e[e] != 0;
    emu->sel_replaced = emu->sel_nonstraggler = 0;
    /* drops of experts that would not have set the layer's wait: tau below the
       largest tau of the experts the tokens held before the policy dropped */
    int kk = emu->k < reach ? emu->k : reach, any_drop = 0;
    for (int t = 0; t < n_tokens && !any_drop; t++) any_drop = n[t] < kk;
    if (any_drop) {
        double wait = 0;
        for (int t = 0; t < n_tokens; t++) {
            int m = wd_policy_top(probs + (size_t)t * E, emu->avail_e, E, kk, emu->top_ids);
            for (int j = 0; j < m; j++)
                if (emu->tau_e[emu->top_ids[j]] > wait) wait = emu->tau_e[emu->top_ids[j]];
        }
        for (int t = 0; t < n_tokens; t++) {
            int m = wd_policy_top(probs + (size_t)t * E, emu->avail_e, E, kk, emu->top_ids);
            for (int j = 0; j < m; j++) {
                int e = emu->top_ids[j], kept = 0;
                for (int q = 0; q < n[t] && !kept; q++) kept = expert[(size_t)t * E + q] == e;
                emu->sel_nonstraggler += !kept && emu->tau_e[e] < wait;
            }
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

/* ---- select ------------------------------------------------------------------------- */
static int check_sel(const wd_emu *emu, int n_tokens, const int *n, const int *expert, char *err,
                     size_t errlen) {
    for (int t = 0; t < n_tokens; t++) {
        if (n[t] < 0 || n[t] > emu->E)
            return wd_fail(err, errlen, "selection: token %d has %d experts (max %d)", t, n[t],
                           emu->E);
        for (int j = 0; j < n[t]; j++) {
            int e = expert[(size_t)t * emu->E + j];
            if (e < 0 || e >= emu->E)
                return wd_fail(err, errlen, "selection: token %d: expert id %d out of range", t, e);
        }
    }
    return 0;
}

int wd_emu_select(wd_emu *emu, int n_tokens, const float *probs, int *n, int *expert, float *weight,
                  char *err, size_t errlen) {
    if (!emu->has_shape) return wd_fail(err, errlen, "emulator: no model shape");
    if (n_tokens < 1) return wd_fail(err, errlen, "select: n_tokens %d < 1", n_tokens);
    size_t need = WD_POLICY_SCRATCH(n_tokens, emu->E);
    if (need > emu->pscratch_n) {
        double *p = realloc(emu->pscratch, need * sizeof(double));
        if (!p) return wd_fail(err, errlen, "select: out of memory");
        emu->pscratch = p, emu->pscratch_n = need;
    }
    if (reserve_flags(emu, n_tokens)) return wd_fail(err, errlen, "select: out of memory");
    wd_emu_predict(emu, emu->tau_e, emu->avail_e);
    wd_policy_io io = {n_tokens,     emu->E, emu->k, probs,  emu->tau_e,
                       emu->avail_e, n,      expert, weight, emu->pscratch, emu->en_e};
    if (emu->pol->select(&emu->par, &io))
        return wd_fail(err, errlen, "policy %s failed", emu->pol->name);
    double t1 = emu->t + bs_time(emu, n_tokens);
    for (int it = 0; emu->sc.alloc == WD_ALLOC_JOINT && it < 8; it++) {
        /* joint: re-predict with the min-max shares of the chosen set, re-select,
         * until the set of devices stops changing */
        plan(emu, n_tokens, n, expert, t1, 1, NULL);
        memset(emu->mark, 0, emu->nd);
        int na = emu->n_active;
        for (int i = 0; i < na; i++) emu->mark[emu->active[i]] = 1;
        for (int d = 0; d < emu->nd; d++) {
            double s = 1.0 / (na + 1), u;
            emu->tau_dev[d] = emu->mark[d]
                                  ? device_tau(emu, d, emu->t, emu->dt[emu->slot[d]].share[WD_DL],
                                               emu->dt[emu->slot[d]].share[WD_UL], &u)
                                  : device_tau(emu, d, emu->t, s, s, &u);
            emu->tau_until[d] = 0; /* not the predict shares: drop the cache */
            emu->rep_dirty = 1;
        }
        for (int e = 0; e < emu->E; e++) {
            int d = emu->rep[e];
            emu->tau_e[e] = d >= 0 ? emu->tau_dev[d] : INFINITY;
            emu->en_e[e] = d >= 0 ? emu->en_dev[d] : INFINITY;
            emu->avail_e[e] = d >= 0 && isfinite(emu->tau_e[e]);
        }
        if (emu->pol->select(&emu->par, &io))
            return wd_fail(err, errlen, "policy %s failed", emu->pol->name);
        int same = 1, cnt = 0;
        long gen = ++emu->gen; /* mark the new set with dev_gen */
        for (int t = 0; t < n_tokens; t++)
            for (int j = 0; j < n[t]; j++) {
                int e = expert[(size_t)t * emu->E + j];
                int d = emu->rep[e] >= 0 ? emu->rep[e] : emu->rep_dev[emu->rep_off[e]];
                if (emu->dev_gen[d] != gen) emu->dev_gen[d] = gen, cnt++, same &= emu->mark[d];
            }
        if (same && cnt == na) break;
    }
    /* A device that goes down (or whose link drops to rate 0) during this
     * step and stays so past max_wait_s would never return its result: the
     * BS treats its experts as unreachable for this step and selects again
     * (the time a real BS would spend detecting the loss is not modeled). */
    for (int it = 0; emu->sc.n_faults && it < emu->nd; it++) {
        plan(emu, n_tokens, n, expert, t1, emu->sc.alloc != WD_ALLOC_EQUAL, NULL);
        int lost = 0;
        for (int i = 0; i < emu->n_active; i++) {
            const wd_emu_dev_time *x = &emu->dt[i];
            if (isfinite(x->t_dl + x->t_c + x->t_ul)) continue;
            for (int e = 0; e < emu->E; e++)
                if (emu->rep[e] == x->device && emu->avail_e[e])
                    emu->avail_e[e] = 0, emu->tau_e[e] = INFINITY, lost = 1;
        }
        if (!lost) break;
        if (emu->pol->select(&emu->par, &io))
            return wd_fail(err, errlen, "policy %s failed", emu->pol->name);
    }
    mark_selection(emu, n_tokens, probs, n, expert);
    return 0;
}

/* ---- step ----------------------------------------------------------------------------- */
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
    emu->t += seconds;
    emu->bs_busy += seconds;
    if (emu->last_closed < 0) return;
    struct phase_acc *a = &emu->ph[emu->last_closed];
    if (a->n_lat) a->lat[a->n_lat - 1] += seconds, a->bs += seconds;
    a->e_bs += wd_energy_tx(emu->sc.bs.busy_w, seconds);
}

/* Energy and device accounting of the step just planned (t1: the BS is
 * done; tbs: BS compute). A device serving several experts runs them one
 * after another in the order they were first chosen: each call waits for
 * the earlier ones (its queue). emu->ready serves as per-device scratch. */
static void account_energy(wd_emu *emu, struct phase_acc *a, double t1, double tbs) {
    (void)t1;
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
        emu->ready[i] = 0;
    }
    for (int j = 0; j < emu->n_exp; j++) { /* queue: each call waits for the earlier ones */
        int e = emu->exp_list[j], d = emu->exp_dev[e], i = emu->slot[d];
        const wd_emu_dev_time *x = &emu->dt[i];
        if (x->calls < 2) continue;
        double modeled = 0; /* the call's share of the device's (possibly slowed) time */
        for (int q = 0; q < emu->n_exp; q++) {
            int e2 = emu->exp_list[q];
            if (emu->exp_dev[e2] == d) modeled += expert_time(emu, d, emu->cnt_e[e2]);
        }
        double tc = modeled > 0 ? x->t_c * expert_time(emu, d, emu->cnt_e[e]) / modeled : 0;
        emu->dacc[d].qwait += emu->ready[i];
        emu->ready[i] += tc;
    }
}

double wd_emu_energy_active_j(const wd_emu *emu) {
    double e = 0;
    for (int p = 0; p < 2; p++) e += emu->ph[p].e_dl + emu->ph[p].e_ul + emu->ph[p].e_c + emu->ph[p].e_bs;
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
    return 0;
}

/* The phase of a forward pass that starts with n_tokens tokens. */
static int phase_of(const wd_emu *emu, int n_tokens) {
    if (emu->phase_mode == WD_PHASE_PREFILL) return PH_PREFILL;
    if (emu->phase_mode == WD_PHASE_DECODE) return PH_DECODE;
    return n_tokens > 1 ? PH_PREFILL : PH_DECODE;
}

int wd_emu_step(wd_emu *emu, int layer, int n_tokens, const int *n, const int *expert,
                wd_emu_step_result *res, char *err, size_t errlen) {
    return wd_emu_step_measured(emu, layer, n_tokens, n, expert, NULL, res, err, errlen);
}

int wd_emu_step_measured(wd_emu *emu, int layer, int n_tokens, const int *n, const int *expert,
                         const double *t_c, wd_emu_step_result *res, char *err, size_t errlen) {
    if (!emu->has_shape) return wd_fail(err, errlen, "emulator: no model shape");
    if (layer < 0 || layer >= emu->L)
        return wd_fail(err, errlen, "step: layer %d out of range [0, %d)", layer, emu->L);
    if (n_tokens < 1) return wd_fail(err, errlen, "step: n_tokens %d < 1", n_tokens);
    if (check_sel(emu, n_tokens, n, expert, err, errlen)) return 1;
    if (emu->rep_time != emu->t) wd_emu_predict(emu, NULL, NULL);
    double t0 = emu->t, tbs = n_tokens == 1 ? emu->bs1 : bs_time(emu, n_tokens), t1 = t0 + tbs;
    plan(emu, n_tokens, n, expert, t1, emu->sc.alloc != WD_ALLOC_EQUAL, t_c);
    double wait = 0, sum = 0;
    int crit = -1, na = emu->n_active;
    for (int i = 0; i < na; i++) {
        const wd_emu_dev_time *x = &emu->dt[i];
        double f = x->t_dl + x->t_c + x->t_ul;
        if (!isfinite(f))
            return wd_fail(err, errlen,
                           "layer %d: device %d (%s) never completes: its link "
                           "stays down past max_wait_s",
                           layer, x->device, emu->sc.dev[x->device].name);
        if (f > wait) wait = f, crit = i;
        sum += f;
    }
    if (crit < 0 && na) crit = 0;
    /* faults: devices that ran slow or whose transfers met a fault window */
    int any_slow = 0, any_link = 0, any_rerouted = 0;
    if (emu->sc.n_faults)
        for (int i = 0; i < na; i++) {
            const wd_emu_dev_time *x = &emu->dt[i];
            int d = x->device;
            double a = t1 + x->t_dl + x->t_c;
            unsigned char f = 0;
            if (slow_factor(emu, d, t1 + x->t_dl) != 1.0) f |= FL_SLOWED, any_slow = 1;
            if (link_fault_in(emu, d, WD_DL, t1, t1 + x->t_dl) ||
                link_fault_in(emu, d, WD_UL, a, a + x->t_ul))
                f |= FL_LINK, any_link = 1;
            emu->dev_flag[d] = f;
        }
    if (reserve_flags(emu, n_tokens)) return wd_fail(err, errlen, "step: out of memory");
    int have_sel = emu->sel_n == n_tokens;
    emu->sel_n = -1;
    long replaced = have_sel ? emu->sel_replaced : 0;
    long nonstraggler = have_sel ? emu->sel_nonstraggler : 0;
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
    emu->t = t1 + wait;
    if (emu->any_syn && emu->t >= emu->forget_t) {
        double ft = INFINITY;
        for (int d = 0; d < emu->nd; d++)
            if (emu->has_syn[d]) {
                wd_synth_forget(&emu->syn[d], emu->t);
                double f = wd_synth_forget_time(&emu->syn[d]);
                if (f < ft) ft = f;
            }
        emu->forget_t = ft;
    }
    /* statistics */
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
    a->replaced += replaced, a->nonstraggler += nonstraggler;
    a->token_layers += n_tokens;
    for (int i = 0; i < na; i++)
        a->bits_dl += emu->dt[i].bits[WD_DL], a->bits_ul += emu->dt[i].bits[WD_UL];
    account_energy(emu, a, t1, tbs);
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
                return wd_fail(err, errlen, "step: out of memory");
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
    if (res)
        *res = (wd_emu_step_result){layer, n_tokens, na, t0, tbs, wait, tbs + wait, crit, emu->dt};
    return 0;
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
    memset(emu->dacc, 0, emu->nd * sizeof *emu->dacc);
    emu->bs_busy = 0, emu->t_reset = emu->t;
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

static void phase_energy(const struct phase_acc *a, wd_emu_phase_summary *s) {
    s->energy_dl_j = a->e_dl, s->energy_ul_j = a->e_ul;
    s->energy_device_j = a->e_c, s->energy_bs_j = a->e_bs;
    double sum = a->e_dl + a->e_ul + a->e_c + a->e_bs;
    s->energy_per_token_j = a->tokens > 0 ? sum / (double)a->tokens : 0;
}

void wd_emu_summarize(const wd_emu *emu, wd_emu_summary *s) {
    memset(s, 0, sizeof *s);
    summarize_phase(&emu->ph[PH_PREFILL], &s->prefill);
    summarize_phase(&emu->ph[PH_DECODE], &s->decode);
    phase_energy(&emu->ph[PH_PREFILL], &s->prefill);
    phase_energy(&emu->ph[PH_DECODE], &s->decode);
    const wd_emu_phase_summary *P = &s->prefill, *D = &s->decode;
    s->energy_active_j = P->energy_dl_j + P->energy_ul_j + P->energy_device_j + P->energy_bs_j +
                         D->energy_dl_j + D->energy_ul_j + D->energy_device_j + D->energy_bs_j;
    for (int d = 0; d < emu->nd; d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        s->energy_idle_j += ds.energy_idle_j;
    }
    double bs_idle = emu->t - emu->t_reset - emu->bs_busy;
    s->energy_idle_j += wd_energy_tx(emu->sc.bs.idle_w, bs_idle > 0 ? bs_idle : 0);
    s->energy_total_j = s->energy_active_j + s->energy_idle_j;
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
    s->energy_per_token_j = s->tokens > 0 ? s->energy_total_j / (double)s->tokens : 0;
}
