/* energy: energy-aware selection in the spirit of SiftMoE.
 *
 * Start from top-k. Each token drops, one at a time, its chosen expert with
 * the highest energy per unit of gate weight, E_e / p_e (E_e: the predicted
 * energy of one token through expert e: downlink and uplink transmit energy
 * plus the device's compute energy), as long as the gate mass it keeps is at
 * least quality x the mass of its top-k (never below one expert). Without
 * energy estimates (io->energy NULL) every token keeps its top-k. */
#include <math.h>

#include "emulation/emulation.h"

int wd_policy_energy(const wd_policy_params *p, wd_policy_io *io) {
    int E = io->n_experts;
    for (int t = 0; t < io->n_tokens; t++) {
        int n = wd_policy_base(io, t, io->top_k);
        int *ids = io->expert + (size_t)t * E;
        const float *pr = io->probs + (size_t)t * E;
        double full = 0, kept;
        for (int j = 0; j < n; j++) full += pr[ids[j]];
        kept = full;
        while (io->energy && n > 1) {
            int worst = -1;
            double wr = -INFINITY;
            for (int j = 0; j < n; j++) {
                double pe = pr[ids[j]] > 1e-30 ? pr[ids[j]] : 1e-30, r = io->energy[ids[j]] / pe;
                if (r > wr) wr = r, worst = j;
            }
            if (kept - pr[ids[worst]] < p->quality * full) break;
            kept -= pr[ids[worst]];
            for (int j = worst; j + 1 < n; j++) ids[j] = ids[j + 1]; /* keeps the order */
            n--;
        }
        io->n[t] = n;
        wd_policy_renorm(io, t);
    }
    return 0;
}
