/* Emulation for `wdmoe eval`: every forward of the session goes through the
 * BS scheduler (expert-selection policy + virtual clock of a scenario). */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/emulation.h"
#include "host/eval.h"

struct wd_eval_emu {
    wd_scenario sc;
    int have_sc;
    wd_scheduler *k;
    wd_moe_hooks hooks;
};

int wd_eval_emu_create(wd_eval_emu **out, const wd_model *m, const char *scenario,
                       const char *policy, long long seed, char *err, size_t errlen) {
    *out = NULL;
    wd_eval_emu *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "eval: out of memory");
        return 1;
    }
    if (scenario ? wd_scenario_load(&e->sc, scenario, err, errlen)
                 : wd_scenario_default(&e->sc, m->cfg.n_experts, err, errlen))
        goto fail;
    e->have_sc = 1;
    if (seed >= 0) e->sc.seed = (uint64_t)seed;
    if (wd_scheduler_create(&e->k, m, &e->sc, err, errlen)) goto fail;
    if (policy && wd_emu_set_policy(wd_scheduler_emu(e->k), policy, &e->sc.params, err, errlen))
        goto fail;
    wd_scheduler_hooks(e->k, &e->hooks);
    *out = e;
    return 0;
fail:
    wd_eval_emu_free(e);
    return 1;
}

const wd_moe_hooks *wd_eval_emu_hooks(const wd_eval_emu *e) { return &e->hooks; }

const char *wd_eval_emu_error(const wd_eval_emu *e) { return wd_scheduler_error(e->k); }

int wd_eval_emu_measured(const wd_eval_emu *e) { return e->sc.compute_measured; }

const char *wd_eval_emu_policy(const wd_eval_emu *e) {
    return wd_emu_policy_name(wd_scheduler_emu(e->k));
}

json_object *wd_eval_emu_latency_json(const wd_eval_emu *e) {
    wd_emu_summary sum;
    wd_emu_summarize(wd_scheduler_emu(e->k), &sum);
    json_object *o = wd_emu_summary_json(&sum);
    if (o) json_object_object_add(o, "devices", wd_emu_devices_json(wd_scheduler_emu(e->k)));
    return o;
}

void wd_eval_emu_phase(void *e, int decode) {
    wd_emu_set_phase(wd_scheduler_emu(((wd_eval_emu *)e)->k),
                     decode ? WD_PHASE_DECODE : WD_PHASE_PREFILL);
}

void wd_eval_emu_print(FILE *f, const wd_eval_emu *e) {
    wd_emu_summary sum;
    wd_emu_summarize(wd_scheduler_emu(e->k), &sum);
    wd_emu_summary_print(f, &sum);
    wd_emu_devices_print(f, wd_scheduler_emu(e->k));
}

void wd_eval_emu_free(wd_eval_emu *e) {
    if (!e) return;
    wd_scheduler_free(e->k);
    if (e->have_sc) wd_scenario_free(&e->sc);
    free(e);
}
