/* topk: the model's own routing, the baseline. */
#include "emulation/emulation.h"

int wd_policy_topk(const wd_policy_params *p, wd_policy_io *io) {
    for (int t = 0; t < io->n_tokens; t++) {
        wd_policy_base(io, t, io->top_k);
        wd_policy_renorm(io, t);
    }
    return 0;
}
