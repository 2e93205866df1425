/* The policy table and the helpers every policy shares. A new policy is one
 * file emulation/policy_<name>.c defining its select function, plus one line
 * in the table below. */
#include <math.h>
#include <string.h>

#include "emulation/emulation.h"

int wd_policy_topk(const wd_policy_params *p, wd_policy_io *io);
int wd_policy_wdmoe(const wd_policy_params *p, wd_policy_io *io);
int wd_policy_wlr_drop(const wd_policy_params *p, wd_policy_io *io);
int wd_policy_dynamic(const wd_policy_params *p, wd_policy_io *io);
int wd_policy_fastest(const wd_policy_params *p, wd_policy_io *io);
int wd_policy_wdmoe_straggler(const wd_policy_params *p, wd_policy_io *io);
int wd_policy_energy(const wd_policy_params *p, wd_policy_io *io);

static const wd_policy table[] = {
    {"topk", "the model's own top-k (baseline)", wd_policy_topk},
    {"wdmoe", "latency-aware drop by weight-to-latency ratio (alpha, dtheta, gamma)",
     wd_policy_wdmoe},
    {"wlr-drop", "drop the lowest p/tau expert when its weight < theta and it is the slowest",
     wd_policy_wlr_drop},
    {"dynamic", "latency-blind: drop experts whose weight < theta", wd_policy_dynamic},
    {"fastest", "the k fastest among the m most probable", wd_policy_fastest},
    {"wdmoe-straggler", "wdmoe, dropping only an expert that sets the layer's wait",
     wd_policy_wdmoe_straggler},
    {"energy", "drop the expert of highest energy per gate weight while the kept top-k mass >= quality",
     wd_policy_energy},
};

int wd_policy_count(void) { return (int)(sizeof table / sizeof table[0]); }
const wd_policy *wd_policy_at(int i) { return i >= 0 && i < wd_policy_count() ? &table[i] : NULL; }

const char *wd_policy_names(char *buf, size_t cap) {
    if (!cap) return buf;
    buf[0] = 0;
    for (int i = 0; i < wd_policy_count(); i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", table[i].name);
    }
    return buf;
}

const wd_policy *wd_policy_find(const char *name) {
    for (int i = 0; i < wd_policy_count(); i++)
        if (!strcmp(table[i].name, name)) return &table[i];
    return NULL;
}

void wd_policy_defaults(wd_policy_params *p) {
    p->alpha = 0.5, p->dtheta = 0.05, p->gamma = 1.05, p->theta = 0.3, p->m = 0;
    p->quality = 0.8;
}

/* m <= 2 (top-k of Mixtral-like models): one pass, no data-dependent branches. */
static int top2(const float *p, const unsigned char *avail, int E, int m, int *ids) {
    float v1 = -INFINITY, v2 = -INFINITY;
    int i1 = -1, i2 = -1;
    for (int e = 0; e < E; e++) {
        float v = avail && !avail[e] ? -INFINITY : p[e];
        int gt1 = v > v1, gt2 = v > v2; /* strict: equal p keeps the lower id first */
        i2 = gt1 ? i1 : gt2 ? e : i2;
        v2 = gt1 ? v1 : gt2 ? v : v2;
        i1 = gt1 ? e : i1;
        v1 = gt1 ? v : v1;
    }
    ids[0] = i1;
    if (m == 2) ids[1] = i2;
    return (i1 >= 0) + (m == 2 && i2 >= 0);
}

int wd_policy_top(const float *p, const unsigned char *avail, int E, int m, int *ids) {
    if (m <= 0) return 0;
    if (m <= 2) return top2(p, avail, E, m, ids);
    int n = 0;
    for (int e = 0; e < E; e++) {
        if (avail && !avail[e]) continue;
        if (n == m && !(p[e] > p[ids[m - 1]])) continue; /* not better than the last kept */
        int j = n < m ? n++ : m - 1;
        while (j > 0 && p[e] > p[ids[j - 1]]) { /* equal p: the lower id stays first */
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = e;
    }
    return n;
}

int wd_policy_base(wd_policy_io *io, int t, int k) {
    int E = io->n_experts, *ids = io->expert + (size_t)t * E;
    if (k > E) k = E;
    /* the k most probable reachable experts: an unreachable one of the
       model's top-k is replaced by the next most probable reachable one */
    return io->n[t] = wd_policy_top(io->probs + (size_t)t * E, io->available, E, k, ids);
}

void wd_policy_renorm(wd_policy_io *io, int t) {
    int E = io->n_experts, n = io->n[t];
    const int *ids = io->expert + (size_t)t * E;
    const float *p = io->probs + (size_t)t * E;
    float *w = io->weight + (size_t)t * E;
    double s = 0;
    for (int j = 0; j < n; j++) s += p[ids[j]];
    if (!(s > 0)) {
        for (int j = 0; j < n; j++) w[j] = 1.0f / (float)n;
        return;
    }
    double inv = 1.0 / s;
    for (int j = 0; j < n; j++) w[j] = (float)(p[ids[j]] * inv);
}
