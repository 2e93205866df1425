/* wdmoe: latency-aware selection by weight-to-latency ratio (DESIGN.md).
 *
 * WLR of a set S = mean_{e in S} p_e / tau_e; WLR of the batch = mean over
 * its tokens. Start from top-k. For theta = alpha, alpha + dtheta, ... <= 1,
 * every token whose cosine similarity between its top-k weight vector and
 * latency vector is <= theta drops its least probable expert (once, never
 * below one); the first theta whose batch WLR exceeds gamma times the top-k
 * WLR is taken; when none does, the batch keeps top-k. */
#include <math.h>

#include "emulation/internal.h"

/* The rule; straggler_only (policy_wdmoe_straggler.c): a token may drop its
   expert only when that expert sets the layer's wait. */
int wd_policy_wdmoe_rule(const wd_policy_params *p, wd_policy_io *io, int straggler_only) {
    int T = io->n_tokens, E = io->n_experts, droppable = 0;
    double *cosv = io->scratch, *full = cosv + T, *drop = full + T, w0 = 0, cmin = INFINITY;
    double wait = 0; /* the slowest expert chosen by any token (straggler_only) */
    for (int t = 0; t < T; t++) {
        int n = wd_policy_base(io, t, io->top_k);
        for (int j = 0; j < n; j++) {
            double te = io->tau[io->expert[(size_t)t * E + j]];
            if (te > wait) wait = te;
        }
    }
    for (int t = 0; t < T; t++) {
        int n = io->n[t];
        const int *ids = io->expert + (size_t)t * E;
        const float *pr = io->probs + (size_t)t * E;
        double wl = 0, wl_last = 0, dot = 0, pp = 0, tt = 0;
        for (int j = 0; j < n; j++) {
            double pe = pr[ids[j]], te = io->tau[ids[j]] > 1e-12 ? io->tau[ids[j]] : 1e-12;
            wl_last = pe / te;
            wl += wl_last;
            dot += pe * te, pp += pe * pe, tt += te * te;
        }
        full[t] = n ? wl / n : 0.0;
        drop[t] = n >= 2 ? (wl - wl_last) / (n - 1) : full[t];
        int may = n >= 2 && (!straggler_only || io->tau[ids[n - 1]] >= wait);
        cosv[t] = may && pp > 0 ? dot / sqrt(pp * tt) : INFINITY; /* INFINITY: never drops */
        if (cosv[t] < INFINITY) droppable++;
        if (cosv[t] < cmin) cmin = cosv[t];
        w0 += full[t];
    }
    /* batch WLRs are compared as sums over the tokens (the means times T) */
    double target = p->gamma * w0;
    int i = 0;
    while (p->alpha + i * p->dtheta < cmin && p->alpha + i * p->dtheta <= 1.0 + 1e-9) i++;
    if (i > 0 && w0 > target) droppable = 0; /* taken at theta = alpha with nothing dropped */
    for (; droppable > 0; i++) {
        double th = p->alpha + i * p->dtheta, w = 0;
        if (th > 1.0 + 1e-9) break;
        int crossed = 0;
        for (int t = 0; t < T; t++) {
            int d = cosv[t] <= th;
            w += d ? drop[t] : full[t];
            crossed += d;
        }
        if (w > target) {
            for (int t = 0; t < T; t++)
                if (cosv[t] <= th) io->n[t]--;
            break;
        }
        if (crossed == droppable) break; /* larger thresholds change nothing */
    }
    for (int t = 0; t < T; t++) wd_policy_renorm(io, t);
    return 0;
}

int wd_policy_wdmoe(const wd_policy_params *p, wd_policy_io *io) {
    return wd_policy_wdmoe_rule(p, io, 0);
}
