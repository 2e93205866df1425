/* fastest: among the m most probable experts (m = 2k when unset), the k
 * with the lowest predicted latency (ties: the more probable). */
#include "emulation/emulation.h"

int wd_policy_fastest(const wd_policy_params *p, wd_policy_io *io) {
    int E = io->n_experts, k = io->top_k, m = p->m > 0 ? p->m : 2 * k;
    if (m < k) m = k;
    for (int t = 0; t < io->n_tokens; t++) {
        int n = wd_policy_base(io, t, m); /* reachable, by descending p */
        int *ids = io->expert + (size_t)t * E;
        /* keep the k fastest, preserving the probability order among them */
        while (n > k) {
            int worst = 0;
            for (int j = 1; j < n; j++)
                if (io->tau[ids[j]] >= io->tau[ids[worst]]) worst = j;
            for (int j = worst; j + 1 < n; j++) ids[j] = ids[j + 1];
            n--;
        }
        io->n[t] = n;
        wd_policy_renorm(io, t);
    }
    return 0;
}
