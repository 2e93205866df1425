/* Emulation for `wdmoe eval`: placeholder until the BS scheduler
 * (wd_scheduler_*, host/host.h) is on main; replaced by the real glue then. */
#include <stdlib.h>

#include "host/eval.h"

int wd_eval_emu_attach(wd_eval_emu **out, wd_session *s, const char *scenario, const char *policy,
                       long long seed, char *err, size_t errlen) {
    *out = NULL;
    snprintf(err, errlen, "%s: emulation is not available in this build (no BS scheduler yet)",
             scenario ? scenario : "eval");
    return 1;
}
const char *wd_eval_emu_policy(const wd_eval_emu *e) { return "topk"; }
struct json_object *wd_eval_emu_latency_json(const wd_eval_emu *e) { return NULL; }
void wd_eval_emu_print(FILE *f, const wd_eval_emu *e) {}
void wd_eval_emu_free(wd_eval_emu *e) {}
