/* wlr-drop: from the top-k, take the chosen expert with the lowest weight-to-
 * latency ratio p/tau; drop it when its renormalised weight is below theta
 * and it alone is the slowest of the set (so dropping it shortens the wait). */
#include "emulation/emulation.h"

int wd_policy_wlr_drop(const wd_policy_params *p, wd_policy_io *io) {
    int E = io->n_experts;
    for (int t = 0; t < io->n_tokens; t++) {
        int n = wd_policy_base(io, t, io->top_k);
        wd_policy_renorm(io, t);
        if (n < 2) continue;
        int *ids = io->expert + (size_t)t * E;
        const float *pr = io->probs + (size_t)t * E, *w = io->weight + (size_t)t * E;
        int lo = 0; /* lowest p/tau; ties: the later (less probable) one */
        for (int j = 1; j < n; j++)
            if (pr[ids[j]] / io->tau[ids[j]] <= pr[ids[lo]] / io->tau[ids[lo]]) lo = j;
        double others = 0;
        for (int j = 0; j < n; j++)
            if (j != lo && io->tau[ids[j]] > others) others = io->tau[ids[j]];
        if (!(w[lo] < p->theta && io->tau[ids[lo]] > others)) continue;
        for (int j = lo; j + 1 < n; j++) ids[j] = ids[j + 1];
        io->n[t] = n - 1;
        wd_policy_renorm(io, t);
    }
    return 0;
}
