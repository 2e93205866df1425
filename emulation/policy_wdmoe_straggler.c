/* wdmoe-straggler: the wdmoe rule (policy_wdmoe.c), but a token may drop its
 * least probable chosen expert only when that expert sets the layer's wait:
 * its predicted latency tau is the largest among the experts the batch's
 * tokens chose at the start (top-k). Dropping a faster expert shortens no
 * wait (its bandwidth share going to the others aside, which tau does not
 * show), so it costs quality for nothing; wdmoe drops it when the weight-to-
 * latency ratio says so. Thresholds, gamma and the batch rule as wdmoe. */
#include <math.h>

#include "emulation/emulation.h"

int wd_policy_wdmoe_straggler(const wd_policy_params *p, wd_policy_io *io) {
    int T = io->n_tokens, E = io->n_experts, droppable = 0;
    double *cosv = io->scratch, *full = cosv + T, *drop = full + T, w0 = 0, cmin = INFINITY;
    double wait = 0; /* the slowest expert chosen by any token */
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
        int straggler = n >= 2 && io->tau[ids[n - 1]] >= wait;
        cosv[t] = straggler && pp > 0 ? dot / sqrt(pp * tt) : INFINITY; /* INFINITY: keeps */
        if (cosv[t] < INFINITY) droppable++;
        if (cosv[t] < cmin) cmin = cosv[t];
        w0 += full[t];
    }
    double target = p->gamma * w0;
    int i = 0;
    while (p->alpha + i * p->dtheta < cmin && p->alpha + i * p->dtheta <= 1.0 + 1e-9) i++;
    if (i > 0 && w0 > target) droppable = 0;
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
        if (crossed == droppable) break;
    }
    for (int t = 0; t < T; t++) wd_policy_renorm(io, t);
    return 0;
}
