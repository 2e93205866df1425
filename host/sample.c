/* Random numbers (splitmix64 seeding a xorshift64*) and token sampling. */
#include <math.h>
#include <stdlib.h>

#include "host/host.h"

void wd_rng_seed(wd_rng *r, uint64_t seed) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull; /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    r->state = (z ^ (z >> 31)) | 1;
}

uint64_t wd_rng_next(wd_rng *r) {
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545f4914f6cdd1dull;
}

double wd_rng_uniform(wd_rng *r) { return (wd_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

static int cmp_desc(const void *a, const void *b, void *base) {
    const float *l = base;
    float x = l[*(const int *)a], y = l[*(const int *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}

int wd_sample(const float *logits, int vocab, float temperature, float top_p, wd_rng *rng,
              int *idx) {
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    /* probabilities at temperature T, in double for a stable sum */
    double mx = logits[best], sum = 0;
    for (int i = 0; i < vocab; i++) sum += exp((logits[i] - mx) / temperature);
    int n = vocab;
    for (int i = 0; i < vocab; i++) idx[i] = i;
    if (top_p > 0 && top_p < 1) {
        qsort_r(idx, (size_t)vocab, sizeof(int), cmp_desc, (void *)logits);
        double cum = 0;
        for (n = 0; n < vocab;) {
            cum += exp((logits[idx[n]] - mx) / temperature) / sum;
            n++;
            if (cum >= top_p) break;
        }
    }
    double mass = 0;
    for (int j = 0; j < n; j++) mass += exp((logits[idx[j]] - mx) / temperature);
    double r = wd_rng_uniform(rng) * mass, acc = 0;
    for (int j = 0; j < n; j++) {
        acc += exp((logits[idx[j]] - mx) / temperature);
        if (r < acc) return idx[j];
    }
    return idx[n - 1];
}
