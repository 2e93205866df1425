/* Min-max bandwidth allocation (FDMA): shares that equalise finish times. */
#include <math.h>

#include "emulation/emulation.h"

double wd_alloc_minmax_solve(int n, double (*need)(void *ctx, int i, double T), void *ctx,
                             double lo, double hi, double *share) {
    for (int it = 0; it < 200 && hi - lo > 1e-13 * fabs(hi); it++) {
        double mid = 0.5 * (lo + hi), s = 0;
        for (int i = 0; i < n && s <= 1.0; i++) s += need(ctx, i, mid);
        if (s <= 1.0)
            hi = mid;
        else
            lo = mid;
    }
    double s = 0;
    for (int i = 0; i < n; i++) s += share[i] = need(ctx, i, hi);
    for (int i = 0; i < n; i++) share[i] = s > 0 && isfinite(s) ? share[i] / s : 1.0 / n;
    return hi;
}

typedef struct {
    const double *rate, *bits, *ready;
} const_ctx;

static double const_need(void *c, int i, double T) {
    const const_ctx *k = c;
    double dt = T - k->ready[i];
    return dt > 0 ? k->bits[i] / (k->rate[i] * dt) : INFINITY;
}

double wd_alloc_minmax_const(int n, const double *rate, const double *bits, const double *ready,
                             double *share, int force_bisection) {
    if (n <= 0) return 0.0;
    int equal = 1;
    for (int i = 1; i < n; i++) equal &= ready[i] == ready[0];
    if (equal && !force_bisection) { /* s_i = X_i / sum X, T = ready + sum X, X = bits / rate */
        double sum = 0;
        for (int i = 0; i < n; i++) sum += bits[i] / rate[i];
        for (int i = 0; i < n; i++) share[i] = sum > 0 ? bits[i] / rate[i] / sum : 1.0 / n;
        return ready[0] + sum;
    }
    double lo = -INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (ready[i] > lo) lo = ready[i];
        double t = ready[i] + n * bits[i] / rate[i]; /* finish with an equal share */
        if (t > hi) hi = t;
    }
    const_ctx c = {rate, bits, ready};
    return wd_alloc_minmax_solve(n, const_need, &c, lo, hi, share);
}
