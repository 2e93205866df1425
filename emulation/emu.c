/* The emulator: links, placement and the virtual clock; predict, select and
 * step one layer at a time (DESIGN.md, "One decode step, as data flows"). */
#include <stdlib.h>
#include <string.h>

#include "emulation/emu_private.h"

/* ---- compute ------------------------------------------------------------------ */
double wd_emu_expert_time(const wd_emu *emu, int d, int n) {
    double H = emu->shape.hidden, F = emu->shape.ffn;
    double flops = 6.0 * H * F * n;
    double bytes = 3.0 * H * F * emu->shape.weight_bytes + n * (2.0 * H + 3.0 * F) * 4.0;
    return wd_compute_time(&emu->sc.dev[d].profile, flops, bytes);
}

static double bs_time(const wd_emu *emu, int n) {
    return wd_compute_time(&emu->sc.bs, emu->bs_flops_tok * n,
                           emu->bs_bytes_step + n * 4.0 * emu->shape.hidden * 4.0);
}

double wd_emu_slow_factor(const wd_emu *emu, int d, double t) {
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
    wd_emu_pipe_free(emu);
    void *p[] = {emu->link,      emu->syn,      emu->has_syn,  emu->los,     emu->rep_off,
                 emu->rep_dev,   emu->rep,      emu->tc1,      emu->tau_dev, emu->tau_from,
                 emu->tau_until, emu->tau_best, emu->tau_e,    emu->avail_e, emu->mark,
                 emu->dev_gen,   emu->dev_tok,  emu->exp_gen,  emu->cnt_e,   emu->exp_dev,
                 emu->exp_list,  emu->active,   emu->slot,     emu->dt,      emu->ready,
                 emu->bits,      emu->share,    emu->pscratch, emu->ph[0].lat, emu->sel_flag,
                 emu->fwd_flag,  emu->dev_flag, emu->top_ids, emu->ph[1].lat, emu->air_on,
                 emu->split, emu->c_active, emu->c_ready, emu->c_bits, emu->c_share,
                 emu->base_ids, emu->en_dev, emu->en_e, emu->dacc, emu->planned_sel};
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
    wd_air_geo_init(&emu->air_geo, A);
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
    return wd_air_tx_time_geo(&emu->sc.radio.air, &emu->air_geo, l, dir, t, bits, share,
                              emu->sc.seed, d, 0, air);
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
                wd_link_spec s2 = *ls; /* a start drawn from the seed: the channel seed
                                          moves each device within its trace */
                if (ls->offset_jitter_s > 0) {
                    wd_erng g = {wd_stream_seed(sc->seed, d, 30)}; /* both directions alike */
                    s2.offset_s += ls->offset_jitter_s * wd_erng_uniform(&g);
                }
                if (wd_link_create_from(l, &s2, k, d, sc->max_wait_s, emu->link, 2 * d + k, e2,
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
    char known[256];
    if (!pol)
        return wd_fail(err, errlen, "%s: unknown policy '%s' (known: %s)", file, sc->policy,
                       wd_policy_names(known, sizeof known));
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
    emu->may_stall = sc->n_faults > 0;
    for (int d = 0; d < emu->nd; d++)
        for (int k = 0; k < 2; k++) emu->may_stall |= sc->dev[d].link[k].model != WD_LINK_CONSTANT;
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
        for (int d = 0; d < nd; d++) emu->tc1[d] = wd_emu_expert_time(emu, d, 1);
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
    char known[256];
    if (!pol)
        return wd_fail(err, errlen, "unknown policy '%s' (known: %s)", name,
                       wd_policy_names(known, sizeof known));
    emu->pol = pol;
    emu->pol_user = NULL;
    if (p) emu->par = *p;
    return 0;
}

void wd_emu_set_policy_fn(wd_emu *emu, const char *name, wd_policy_fn fn, void *user,
                          const wd_policy_params *p) {
    emu->custom = (wd_policy){name, "a caller's policy", fn};
    emu->pol = &emu->custom;
    emu->pol_user = user;
    if (p) emu->par = *p;
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

/* The transfers and compute of a planned step's active devices when micro-batches
 * are pipelined (pipeline.c): the downlinks start when the BS is done (t1), each
 * with its share of the step's allocation scaled by the transfers of other
 * micro-batches still in flight then (wd_emu_pipe_scale; a transfer keeps the
 * share it started with); the device computes when the job has arrived and it
 * is free of earlier jobs (the queue); the uplink starts when the compute is
 * done. t_start_dir[i]: the downlink start of slot i, [nd + i]: its compute
 * end, [2 nd + i]: its compute start. */
static void plan_pipelined(wd_emu *emu, double t1, int minmax) {
    int na = emu->n_active, nd = emu->nd;
    double *t_dl0 = emu->t_start_dir, *end_c = emu->t_start_dir + nd;
    for (int i = 0; i < na; i++) {
        wd_emu_dev_time *x = &emu->dt[i];
        x->bits[WD_DL] = x->tokens * emu->bits_tok;
        x->bits[WD_UL] = x->pairs * emu->bits_tok;
        t_dl0[i] = emu->ready[i] = t1;
        emu->bits[i] = x->bits[WD_DL];
    }
    allocate(emu, WD_DL, minmax);
    for (int i = 0; i < na; i++) {
        wd_emu_dev_time *x = &emu->dt[i];
        int d = x->device;
        x->share[WD_DL] = emu->share[i] * wd_emu_pipe_scale(emu, d, WD_DL, t1);
        x->t_dl = tx_time(emu, d, WD_DL, t1, x->bits[WD_DL], x->share[WD_DL], &x->air[WD_DL]);
        double arrive = t1 + x->t_dl;
        if (emu->sc.n_faults) x->t_c *= wd_emu_slow_factor(emu, d, arrive);
        double start = wd_emu_pipe_dev_fit(emu, d, arrive, x->t_c);
        x->queue_s = start - arrive;
        x->queue_ahead = x->queue_s > 0 ? wd_emu_pipe_ahead(emu, d, arrive, start) : 0;
        end_c[i] = emu->ready[i] = start + x->t_c;
        end_c[nd + i] = start;
        emu->bits[i] = x->bits[WD_UL];
    }
    allocate(emu, WD_UL, minmax);
    for (int i = 0; i < na; i++) {
        wd_emu_dev_time *x = &emu->dt[i];
        int d = x->device;
        double u0 = end_c[i];
        x->share[WD_UL] = emu->share[i] * wd_emu_pipe_scale(emu, d, WD_UL, u0);
        x->t_ul = isfinite(u0) ? tx_time(emu, d, WD_UL, u0, x->bits[WD_UL], x->share[WD_UL], &x->air[WD_UL])
                               : INFINITY;
        x->t_back = u0 + x->t_ul;
    }
}

static void plan(wd_emu *emu, int n_tokens, const int *n, const int *expert, double t1, int minmax,
                 const double *measured) {
    int E = emu->E;
    long gen = ++emu->gen;
    emu->planned_valid = 0;
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
            emu->cnt_e[e] == 1 ? emu->tc1[d] : wd_emu_expert_time(emu, d, emu->cnt_e[e]);
    }
    int na = emu->n_active;
    if (measured)
        for (int i = 0; i < na; i++)
            if (!isnan(measured[emu->dt[i].device])) emu->dt[i].t_c = measured[emu->dt[i].device];
    if (emu->pipe_n) {
        plan_pipelined(emu, t1, minmax);
        return;
    }
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
        if (emu->sc.n_faults) x->t_c *= wd_emu_slow_factor(emu, x->device, t1 + x->t_dl);
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

/* The selection of a plan, n[t] then each token's expert row, kept so that the
 * step can tell whether select's last plan is the one it needs. */
static size_t sel_len(const wd_emu *emu, int n_tokens) {
    return (size_t)n_tokens * (1 + (size_t)emu->E);
}

static int sel_same(const wd_emu *emu, int n_tokens, const int *n, const int *expert) {
    if (!emu->planned_valid || emu->planned_tokens != n_tokens) return 0;
    const int *k = emu->planned_sel;
    if (memcmp(k, n, (size_t)n_tokens * sizeof(int))) return 0;
    for (int t = 0; t < n_tokens; t++)
        if (memcmp(k + n_tokens + (size_t)t * emu->E, expert + (size_t)t * emu->E,
                   (size_t)n[t] * sizeof(int)))
            return 0;
    return 1;
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
    if (wd_emu_reserve_flags(emu, n_tokens)) return wd_fail(err, errlen, "select: out of memory");
    if (sel_len(emu, n_tokens) > emu->planned_cap) {
        int *b = realloc(emu->planned_sel, sel_len(emu, n_tokens) * sizeof(int));
        if (!b) return wd_fail(err, errlen, "select: out of memory");
        emu->planned_sel = b, emu->planned_cap = sel_len(emu, n_tokens);
    }
    if ((size_t)n_tokens * emu->k > emu->base_cap) {
        int *b = realloc(emu->base_ids, (size_t)n_tokens * emu->k * sizeof(int));
        if (!b) return wd_fail(err, errlen, "select: out of memory");
        emu->base_ids = b, emu->base_cap = (size_t)n_tokens * emu->k;
    }
    wd_emu_predict(emu, emu->tau_e, emu->avail_e);
    wd_policy_io io = {n_tokens,     emu->E, emu->k, probs,  emu->tau_e,
                       emu->avail_e, n,      expert, weight, emu->pscratch, emu->en_e,
                       emu->pol_user};
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
                                  : device_tau(emu, d, emu->t, emu->split[2 * d] ? s : 1.0,
                                               emu->split[2 * d + 1] ? s : 1.0, &u);
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
    /* A device that goes down (a fault) or whose link drops to rate 0 (a fade
     * below the outage SNR, a gap in a trace) during this step and stays so
     * past max_wait_s would never return its result: the BS treats its experts
     * as unreachable for this step and selects again (the time a real BS would
     * spend detecting the loss is not modeled). The prediction above saw the
     * rates at the step's start only. */
    for (int it = 0; emu->may_stall && it < emu->nd; it++) {
        plan(emu, n_tokens, n, expert, t1, emu->sc.alloc != WD_ALLOC_EQUAL, NULL);
        int lost = 0;
        for (int i = 0; i < emu->n_active; i++) {
            const wd_emu_dev_time *x = &emu->dt[i];
            if (isfinite(x->t_dl + x->t_c + x->t_ul)) continue;
            for (int e = 0; e < emu->E; e++)
                if (emu->rep[e] == x->device && emu->avail_e[e])
                    emu->avail_e[e] = 0, emu->tau_e[e] = INFINITY, lost = 1;
        }
        if (!lost) { /* dt is the plan of the final set: the step may reuse it */
            int *k = emu->planned_sel;
            memcpy(k, n, (size_t)n_tokens * sizeof(int));
            for (int t = 0; t < n_tokens; t++)
                memcpy(k + n_tokens + (size_t)t * emu->E, expert + (size_t)t * emu->E,
                       (size_t)n[t] * sizeof(int));
            emu->planned_valid = 1, emu->planned_tokens = n_tokens, emu->planned_t1 = t1;
            break;
        }
        int any = 0; /* nothing left to choose: keep the set, the step says why it fails */
        for (int e = 0; e < emu->E && !any; e++) any = emu->avail_e[e];
        if (!any) break;
        if (emu->pol->select(&emu->par, &io))
            return wd_fail(err, errlen, "policy %s failed", emu->pol->name);
    }
    wd_emu_mark_selection(emu, n_tokens, probs, n, expert);
    return 0;
}

/* ---- step ----------------------------------------------------------------------------- */
int wd_emu_step(wd_emu *emu, int layer, int n_tokens, const int *n, const int *expert,
                wd_emu_step_result *res, char *err, size_t errlen) {
    return wd_emu_step_measured(emu, layer, n_tokens, n, expert, NULL, res, err, errlen);
}

/* One message for a transfer that never completes, whatever the link kind:
 * which device, which link, and what to change. */
static int never_completes(const wd_emu *emu, int layer, const wd_emu_dev_time *x, char *err,
                           size_t errlen) {
    int d = x->device, dir = isfinite(x->t_dl) ? WD_UL : WD_DL;
    const wd_link_spec *ls = &emu->sc.dev[d].link[dir];
    char what[1100];
    if (!isfinite(x->t_dl + x->t_c) && isfinite(x->t_dl))
        return wd_fail(err, errlen,
                       "%s: layer %d: device %d (%s) never completes: it is down (a fault) past "
                       "max_wait_s = %g s",
                       emu->sc.path[0] ? emu->sc.path : "scenario", layer, d, emu->sc.dev[d].name,
                       emu->sc.max_wait_s);
    if (ls->model == WD_LINK_CONSTANT)
        snprintf(what, sizeof what, "constant %g bit/s", ls->rate_bps);
    else if (ls->model == WD_LINK_SYNTHETIC)
        snprintf(what, sizeof what, "synthetic");
    else
        snprintf(what, sizeof what, "trace %s", ls->file);
    return wd_fail(err, errlen,
                   "%s: layer %d: device %d (%s) never completes: its %s (%s) does not deliver "
                   "%.0f bits within max_wait_s = %g s (the link is down or too slow: raise "
                   "its rate, or max_wait_s up to 3600)",
                   emu->sc.path[0] ? emu->sc.path : "scenario", layer, d, emu->sc.dev[d].name,
                   dir == WD_DL ? "downlink" : "uplink", what, x->bits[dir], emu->sc.max_wait_s);
}

int wd_emu_step_measured(wd_emu *emu, int layer, int n_tokens, const int *n, const int *expert,
                         const double *t_c, wd_emu_step_result *res, char *err, size_t errlen) {
    if (!emu->has_shape) return wd_fail(err, errlen, "emulator: no model shape");
    if (layer < 0 || layer >= emu->L)
        return wd_fail(err, errlen, "step: layer %d out of range [0, %d)", layer, emu->L);
    if (n_tokens < 1) return wd_fail(err, errlen, "step: n_tokens %d < 1", n_tokens);
    if (check_sel(emu, n_tokens, n, expert, err, errlen)) return 1;
    if (emu->rep_time != emu->t) wd_emu_predict(emu, NULL, NULL);
    double tbs = n_tokens == 1 ? emu->bs1 : bs_time(emu, n_tokens);
    double t0 = emu->pipe_n ? wd_emu_pipe_bs_fit(emu, emu->t, tbs) : emu->t, t1 = t0 + tbs;
    if (t_c || emu->pipe_n || emu->planned_t1 != t1 || !sel_same(emu, n_tokens, n, expert))
        plan(emu, n_tokens, n, expert, t1, emu->sc.alloc != WD_ALLOC_EQUAL, t_c);
    emu->planned_valid = 0;
    double wait = 0, sum = 0, back = t1;
    int crit = -1, na = emu->n_active;
    for (int i = 0; i < na; i++) {
        const wd_emu_dev_time *x = &emu->dt[i];
        /* pipelined: the queues' waits count (the result is back at t_back) */
        double f = emu->pipe_n ? x->t_back - t1 : x->t_dl + x->t_c + x->t_ul;
        if (!isfinite(f)) return never_completes(emu, layer, x, err, errlen);
        if (f > wait) wait = f, crit = i;
        if (emu->pipe_n && x->t_back > back) back = x->t_back;
        sum += f;
    }
    if (crit < 0 && na) crit = 0;
    if (wd_emu_account_faults(emu, n_tokens, n, expert, t1))
        return wd_fail(err, errlen, "step: out of memory");
    if (!emu->pipe_n) emu->pipe_carry = 0; /* a synchronous step: nothing busy after it */
    if (emu->pipe_n) {
        if (wd_emu_pipe_commit(emu) || wd_emu_pipe_bs_reserve(emu, t0, tbs))
            return wd_fail(err, errlen, "step: out of memory");
    }
    emu->t = emu->pipe_n ? back : t1 + wait;
    /* pipelined: no micro-batch starts a step before the earliest clock */
    double keep = emu->pipe_n ? wd_emu_pipe_keep(emu) : emu->t;
    if (emu->pipe_n && t0 < keep) keep = t0;
    if (emu->any_syn && keep >= emu->forget_t) {
        double ft = INFINITY;
        for (int d = 0; d < emu->nd; d++)
            if (emu->has_syn[d]) {
                wd_synth_forget(&emu->syn[d], keep);
                double f = wd_synth_forget_time(&emu->syn[d]);
                if (f < ft) ft = f;
            }
        emu->forget_t = ft;
    }
    if (wd_emu_record_step(emu, layer, n_tokens, n, t0, tbs, wait, sum, crit))
        return wd_fail(err, errlen, "step: out of memory");
    if (res)
        *res = (wd_emu_step_result){layer, n_tokens, na, t0, tbs, wait, tbs + wait, crit, emu->dt};
    return 0;
}
