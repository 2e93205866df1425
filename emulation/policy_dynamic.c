/* dynamic: latency-blind, top-p style. From the top-k, drop every expert
 * whose renormalised weight is below theta; the most probable one stays. */
#include "emulation/emulation.h"

int wd_policy_dynamic(const wd_policy_params *p, wd_policy_io *io) {
    int E = io->n_experts;
    for (int t = 0; t < io->n_tokens; t++) {
        wd_policy_base(io, t, io->top_k);
        wd_policy_renorm(io, t);
        int *ids = io->expert + (size_t)t * E, m = 0;
        const float *w = io->weight + (size_t)t * E;
        for (int j = 0; j < io->n[t]; j++)
            if (j == 0 || w[j] >= p->theta) ids[m++] = ids[j];
        io->n[t] = m;
        wd_policy_renorm(io, t);
    }
    return 0;
}
