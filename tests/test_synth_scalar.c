/* The fading generator's vector form (GCC vector extensions: the 16 phasors'
 * rotation and the sums as two vectors of 8, AVX-512 or AVX2 or SSE2 as the build
 * allows) against its scalar fallback (WD_SYNTH_SCALAR, what a compiler without
 * vector extensions builds), byte for byte: the same channel.c compiled here a
 * second time with WD_SYNTH_SCALAR and its public names renamed, both with
 * -ffp-contract=off (CMakeLists.txt), queried in the same orders (walking sample by
 * sample, jumping ahead within and across anchor intervals, back into samples
 * stepped over, after a forget), Rayleigh and Rician, shadowing on. */
#include <string.h>

#include "emulation/emulation.h"
#include "emulation/internal.h"
#include "tests/emu_test_util.h"
#include "tests/test_util.h"

#define WD_SYNTH_SCALAR
#define wd_pathloss_db sc_pathloss_db
#define wd_los_probability sc_los_probability
#define wd_shadow_sigma_db sc_shadow_sigma_db
#define wd_shadow_decorrelation_m sc_shadow_decorrelation_m
#define wd_fading_init sc_fading_init
#define wd_fading_at sc_fading_at
#define wd_cos sc_cos
#define wd_sin sc_sin
#define wd_fading_fast sc_fading_fast
#define wd_synth_period sc_synth_period
#define wd_synth_init sc_synth_init
#define wd_synth_free sc_synth_free
#define wd_synth_at sc_synth_at
#define wd_synth_forget_time sc_synth_forget_time
#define wd_synth_forget sc_synth_forget
#include "emulation/channel.c"
#undef wd_synth_init
#undef wd_synth_free
#undef wd_synth_at
#undef wd_synth_forget

/* Both generators' SNRs of sample k, both directions, byte for byte. */
static int same_at(wd_synth *v, wd_synth *s, long k) {
    long iv = wd_synth_at(v, k), is = sc_synth_at(s, k);
    if (iv < 0 || is < 0) return 0;
    for (int d = 0; d < 2; d++)
        if (memcmp(&v->snr[d][iv], &s->snr[d][is], sizeof(double))) return 0;
    return 1;
}

int main(void) {
    const wd_radio base = wd_test_default_radio();
    for (int kind = WD_FADING_RAYLEIGH; kind <= WD_FADING_RICIAN; kind++) {
        wd_radio r = base;
        r.fading = (wd_fading_kind)kind;
        r.rician_k_db = 6;
        r.outage_snr_db = -200; /* no outage: every sample's fading counts */
        wd_synth v, s;
        CHECK(wd_synth_init(&v, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        CHECK(sc_synth_init(&s, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        const long n = 3 * WD_SYNTH_ANCHOR * 16 + 17;
        long bad = -1;
        for (long k = 0; k < n && bad < 0; k++) /* walking: generated 64 ahead */
            if (!same_at(&v, &s, k)) bad = k;
        CHECKF(bad < 0, "fading kind %d, walking: sample %ld differs", kind, bad);
        /* fresh generators: jumps ahead (rotated without the sums), back into the
           samples stepped over (recomputed from their anchor), a restart, a forget */
        wd_synth_free(&v), sc_synth_free(&s);
        CHECK(wd_synth_init(&v, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        CHECK(sc_synth_init(&s, &r, 90.0, 4.0, 37.0, 30.0, 77) == 0);
        const long order[] = {3,    40,   41,    300, 255,   256, 1000, 1012, 1013, 1030,
                              1005, 4095, 4096,  700, n - 1, 5000, 2,   n - 300, n - 310};
        bad = -1;
        for (size_t j = 0; j < sizeof order / sizeof order[0] && bad < 0; j++) {
            if (j == 14) wd_synth_forget(&v, 4000 * r.sample_period_s),
                         sc_synth_forget(&s, 4000 * r.sample_period_s);
            if (!same_at(&v, &s, order[j])) bad = order[j];
        }
        CHECKF(bad < 0, "fading kind %d, jumping: sample %ld differs", kind, bad);
        bad = -1;
        for (long k = 6000; k < 6000 + 3 * WD_SYNTH_ANCHOR && bad < 0; k += 13) /* steps */
            if (!same_at(&v, &s, k)) bad = k;
        CHECKF(bad < 0, "fading kind %d, in steps of 13: sample %ld differs", kind, bad);
        wd_synth_free(&v), sc_synth_free(&s);
    }
    return wd_test_finish("test_synth_scalar");
}
