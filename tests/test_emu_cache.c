/* The emulator's caches and fast paths against the computations they stand for,
 * byte for byte (docs/performance.md, "Replay speed and the emulation's cost"):
 * - wd_floor_div (floor(x / d) from x * (1 / d) away from whole numbers) against
 *   floor(x / d) at whole multiples of d and a few ulps around them, 1e-12 off them
 *   (the air interface's AIR_EPS), and at random;
 * - a synthetic link's last sample (piece_start's cache, wd_link_piece_rate_last)
 *   against a link whose cache is emptied before every query: rates, their end,
 *   one-piece rates and transfer times, over walks forward, jumps back and times a
 *   few ulps around block boundaries, downlink and uplink, several shares;
 * - the bits of an interval spanning samples and the time to send part of them in one
 *   walk (wd_link_bits_tx) against the two walks it replaces;
 * - the air interface's geometry and its last answers (wd_air_tx_time_geo with one
 *   wd_air_geo kept over a run, as the emulator keeps it) against wd_air_tx_time (a
 *   fresh one per transfer): transfer time and overhead, for TDD patterns,
 *   numerologies, FDD, dynamic and configured grants, several devices starting at
 *   the same time (a layer step's downlinks) and starts around slot and pattern
 *   boundaries. */
#include <stdint.h>

#include "emulation/emulation.h"
#include "emulation/internal.h"
#include "tests/emu_test_util.h"
#include "tests/test_util.h"

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void test_floor_div(void) {
    const double ds[] = {1e-3, 0.5e-3, 0.25e-3, 0.125e-3, 0.0625e-3, 0.03626, 0.0362571,
                         1.0 / 3, 7e-4, 36.25e-3};
    wd_erng g = {11};
    long bad = 0, n = 0, fast = 0;
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        double d = ds[i], inv = 1 / d;
        for (long k = 0; k < 200000; k++) {
            double kk = k < 100000 ? (double)k : floor(wd_erng_uniform(&g) * 1e9);
            double base = kk * d, xs[9];
            int m = 0;
            xs[m++] = base, xs[m++] = base + 1e-12, xs[m++] = base - 1e-12;
            double up = base, dn = base;
            for (int u = 0; u < 3; u++) {
                up = nextafter(up, INFINITY), dn = nextafter(dn, -INFINITY);
                xs[m++] = up, xs[m++] = dn;
            }
            for (int j = 0; j < m; j++) {
                double got = wd_floor_div(xs[j], d, inv), want = floor(xs[j] / d);
                bad += !same_bits(got, want), n++;
            }
            double x = wd_erng_uniform(&g) * 1e4 * d;
            bad += !same_bits(wd_floor_div(x, d, inv), floor(x / d)), n++;
            double y = x * inv;
            fast += y - floor(y) > 1e-14 * (y + 1); /* the fast path answers most */
        }
    }
    const double odd[] = {0.0, -0.0, -1e-12, -5.0, 1e15, 1e300, INFINITY, -INFINITY, NAN};
    for (size_t j = 0; j < sizeof odd / sizeof odd[0]; j++)
        bad += !same_bits(wd_floor_div(odd[j], 0.5e-3, 1 / 0.5e-3), floor(odd[j] / 0.5e-3)), n++;
    CHECKF(bad == 0, "%ld of %ld floor divisions differ from floor(x / d)", bad, n);
    CHECK(fast > 1000000);
}

static wd_radio block_radio(void) {
    wd_radio r = wd_test_default_radio();
    r.fading = WD_FADING_RAYLEIGH;
    r.shadowing = 1;
    r.outage_snr_db = -10;
    r.fading_block_s = WD_FADING_BLOCK_COHERENCE;
    return r;
}

/* A time around a block boundary (a few ulps, 1e-12) or anywhere, mostly forward. */
static double next_time(wd_erng *g, double t, double ts) {
    double u = wd_erng_uniform(g);
    if (u < 0.05) return t * wd_erng_uniform(g); /* back */
    if (u < 0.5) {
        double b = (floor(t / ts) + 1 + floor(wd_erng_uniform(g) * 2)) * ts;
        int w = (int)(wd_erng_uniform(g) * 9) - 4;
        for (; w > 0; w--) b = nextafter(b, INFINITY);
        for (; w < 0; w++) b = nextafter(b, -INFINITY);
        return wd_erng_uniform(g) < 0.2 ? b + (wd_erng_uniform(g) < 0.5 ? 1e-12 : -1e-12) : b;
    }
    return t + wd_erng_uniform(g) * ts * 0.3;
}

static void test_piece_cache(void) {
    wd_radio r = block_radio();
    wd_synth s;
    CHECK(wd_synth_init(&s, &r, 100.0, 6.0, 50.0, 1.0, 3) == 0);
    const double shares[] = {1.0, 0.5, 1.0 / 6, 1.0 / 3, 0.125};
    long bad = 0, n = 0;
    for (int dir = 0; dir < 2; dir++) {
        wd_link *a = wd_link_new_synthetic(&s, dir, 0, 0.0, 1.0, 0);
        wd_link *b = wd_link_new_synthetic(&s, dir, 0, 0.0, 1.0, 0);
        CHECK(a && b);
        if (!a || !b) break;
        wd_erng g = {(uint64_t)(5 + dir)};
        double t = 0;
        for (int q = 0; q < 200000; q++) {
            t = next_time(&g, t, s.ts);
            double share = shares[q % 5], ua, ub, w = t + wd_erng_uniform(&g) * 3e-3;
            double bits = 1000 + wd_erng_uniform(&g) * 1e5;
            b->pc_lo = INFINITY; /* the uncached path */
            double ra = wd_link_rate_until(a, t, share, &ua);
            double rb = wd_link_rate_until(b, t, share, &ub);
            bad += !same_bits(ra, rb) || !same_bits(ua, ub);
            b->pc_lo = INFINITY;
            bad += !same_bits(wd_link_piece_rate(a, t, w, share),
                              wd_link_piece_rate(b, t, w, share));
            b->pc_lo = INFINITY;
            bad += !same_bits(wd_link_tx_time(a, t, bits, share),
                              wd_link_tx_time(b, t, bits, share));
            b->pc_lo = INFINITY; /* the inline one-sample rate (send's) */
            bad += !same_bits(wd_link_piece_rate_last(a, t, w, share),
                              wd_link_piece_rate(b, t, w, share));
            n += 4;
        }
        wd_link_free(a);
        wd_link_free(b);
    }
    CHECKF(bad == 0, "%ld of %ld cached link answers differ from the uncached ones", bad, n);
    wd_synth_free(&s);
}

/* wd_link_bits_tx against wd_link_bits and wd_link_tx_time (two walks), on 1 ms samples
 * and on blocks, intervals of one to a few dozen samples, rem below and above the bits. */
static void test_bits_tx(void) {
    long bad = 0, n = 0, both = 0, never = 0;
    for (int block = 0; block < 2; block++) {
        wd_radio r = block_radio();
        if (!block) r.fading_block_s = 0;
        wd_synth s;
        CHECK(wd_synth_init(&s, &r, 105.0, 6.0, 50.0, 3.0, 8) == 0);
        for (int dir = 0; dir < 2; dir++) {
            /* a latency, a rate scale, and a max_wait that some transfers pass */
            wd_link *a = wd_link_new_synthetic(&s, dir, 0, 1.7e-3, 0.9, 0.05);
            wd_link *b = wd_link_new_synthetic(&s, dir, 0, 1.7e-3, 0.9, 0.05);
            CHECK(a && b);
            if (!a || !b) break;
            wd_erng g = {(uint64_t)(21 + 2 * block + dir)};
            double t = 0;
            for (int q = 0; q < 40000; q++) {
                t = next_time(&g, t, s.ts);
                double len = s.ts * (wd_erng_uniform(&g) < 0.8 ? 3 * wd_erng_uniform(&g)
                                                               : 40 * wd_erng_uniform(&g));
                double share = 1.0 / (1 + q % 6), w = t + len;
                b->pc_lo = INFINITY;
                double want = wd_link_bits(b, t, w, share);
                double rem = want * (0.01 + 1.2 * wd_erng_uniform(&g)), d = NAN, dw = NAN;
                if (q % 17 == 0) rem = want; /* exactly all of it */
                double got = wd_link_bits_tx(a, t, w, share, rem, &d);
                if (want >= rem) dw = wd_link_tx_time(b, t, rem, share), both++;
                never += isinf(dw);
                bad += !same_bits(got, want) || !same_bits(d, dw), n++;
            }
            wd_link_free(a);
            wd_link_free(b);
        }
        wd_synth_free(&s);
    }
    CHECKF(bad == 0, "%ld of %ld one-walk bits and times differ from the two walks", bad, n);
    CHECK(both > 10000 && never > 0);
}

static void test_air_memo(void) {
    wd_radio r = block_radio();
    wd_synth s;
    CHECK(wd_synth_init(&s, &r, 110.0, 6.0, 50.0, 1.0, 4) == 0);
    const char *patterns[] = {"DDDSU", "DDSU", "DSUUU", "DDDDDDDSUU", "SU", "DDDSUDDSUU"};
    long bad = 0, n = 0, retx = 0;
    for (int c = 0; c < 16; c++) {
        wd_air A;
        wd_air_defaults(&A, c % 4);
        snprintf(A.pattern, sizeof A.pattern, "%s", patterns[c % 6]);
        if (c % 5 == 4) A.special[0] = 6, A.special[1] = 4, A.special[2] = 4;
        if (c % 7 == 6) A.duplex = WD_DUPLEX_FDD;
        if (c % 3 == 2) A.ul_sched = WD_UL_CONFIGURED;
        if (c % 8 == 5) A.bler = 0.4, A.max_retx = 4;
        char err[256];
        CHECKF(wd_air_check(&A, err, sizeof err) == 0, "%s", err);
        wd_air_geo geo;
        wd_air_geo_init(&geo, &A);
        wd_link *l[2] = {wd_link_new_synthetic(&s, WD_DL, 0, 0.0, 1.0, 0),
                         wd_link_new_synthetic(&s, WD_UL, 0, 0.0, 1.0, 0)};
        CHECK(l[0] && l[1]);
        if (!l[0] || !l[1]) break;
        wd_erng g = {(uint64_t)(100 + c)};
        double slot = wd_air_slot_s(&A), t = 0;
        for (int q = 0; q < 20000; q++) {
            /* a step's transfers: several devices from one start, then from starts near it */
            double u = wd_erng_uniform(&g);
            if (u < 0.3)
                t = next_time(&g, t, slot);
            else if (u < 0.4)
                t = next_time(&g, t, slot * geo.n);
            else if (u < 0.45)
                t = t * wd_erng_uniform(&g);
            double bits = wd_erng_uniform(&g) < 0.7 ? 9216 : 1000 + wd_erng_uniform(&g) * 4e5;
            double share = 1.0 / (1 + q % 6);
            int dir = (q / 3) % 2, dev = q % 6;
            double ova, ovb;
            double ta = wd_air_tx_time_geo(&A, &geo, l[dir], dir, t, bits, share, 9, dev, 0, &ova);
            double tb = wd_air_tx_time(&A, l[dir], dir, t, bits, share, 9, dev, 0, &ovb);
            bad += !same_bits(ta, tb) || !same_bits(ova, ovb), n++;
            retx += ta > 4 * slot * geo.n;
            if (q % 50 == 0) { /* the expected number of rounds too */
                ta = wd_air_tx_time_geo(&A, &geo, l[dir], dir, t, bits, share, 9, dev, 1, &ova);
                tb = wd_air_tx_time(&A, l[dir], dir, t, bits, share, 9, dev, 1, &ovb);
                bad += !same_bits(ta, tb) || !same_bits(ova, ovb), n++;
            }
        }
        wd_link_free(l[0]);
        wd_link_free(l[1]);
    }
    CHECKF(bad == 0, "%ld of %ld transfers differ with the geometry kept", bad, n);
    CHECK(retx > 0); /* HARQ rounds and long transfers were among them */
    wd_synth_free(&s);
}

int main(void) {
    test_floor_div();
    test_piece_cache();
    test_bits_tx();
    test_air_memo();
    return wd_test_finish("test_emu_cache");
}
