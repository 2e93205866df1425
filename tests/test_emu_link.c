/* Links: constant S/r, Mahimahi "1" = 12 Mbit/s, delays on the shared
 * Mahimahi traces against a direct count, CSV integration by hand, fault
 * windows, and bad trace files. */
#include <errno.h>
#include <sys/stat.h>

#include "emulation/emulation.h"
#include "emulation/internal.h"
#include "tests/test_util.h"

static char tmpdir[256];

static wd_link *make(wd_link_model m, const char *file, double rate, double lat, double offset,
                     char *err, size_t errlen) {
    wd_link_spec s = {0};
    s.model = m, s.rate_bps = rate, s.latency_s = lat, s.offset_s = offset;
    s.rate_scale = 1, s.csv_device = -1, s.window_s = 0.1;
    if (file) snprintf(s.file, sizeof s.file, "%s", file);
    wd_link *l = NULL;
    if (wd_link_create(&l, &s, WD_DL, 1, 0, err, errlen)) return NULL;
    return l;
}

static void test_constant(void) {
    char err[512];
    wd_link *l = make(WD_LINK_CONSTANT, NULL, 50e6, 0.002, 0, err, sizeof err);
    CHECK(l != NULL);
    const double S[4] = {1, 65536, 1e6, 3.3e9};
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(wd_link_tx_time(l, 0.7, S[i], 1.0), S[i] / 50e6 + 0.002, 1e-12);
        CHECK_NEAR(wd_link_tx_time(l, 3.1, S[i], 0.25), S[i] / (0.25 * 50e6) + 0.002, 1e-12);
    }
    CHECK(wd_link_tx_time(l, 1.0, 0, 1.0) == 0.0);
    CHECK_NEAR(wd_link_rate(l, 5), 50e6, 0);
    /* a window at zero rate [1, 2): 0.1 s of bits before it, 0.1 s after */
    CHECK(wd_link_add_window(l, 1.0, 2.0, 0.0) == 0);
    CHECK_NEAR(wd_link_tx_time(l, 0.9, 0.2 * 50e6, 1.0), 1.2 + 0.002, 1e-12);
    CHECK(wd_link_rate(l, 1.5) == 0.0);
    CHECK(wd_link_add_window(l, 10.0, INFINITY, 0.0) == 0); /* down for good */
    CHECK(isinf(wd_link_tx_time(l, 9.0, 1e9, 1.0)));
    wd_link_free(l);
    l = make(WD_LINK_CONSTANT, NULL, 0.0, 0, 0, err, sizeof err); /* a dead link */
    CHECK(isinf(wd_link_tx_time(l, 0, 1, 1.0)));
    wd_link_free(l);
}

static void test_mahimahi_one(void) {
    char err[512];
    wd_link *l = make(WD_LINK_MAHIMAHI, wd_test_write_tmp(tmpdir, "one.mm", "1\n"), 0, 0, 0, err, sizeof err);
    CHECK(l != NULL);
    if (!l) return;
    CHECK_NEAR(wd_link_tx_time(l, 0, 12e6, 1.0), 1.0, 1e-12); /* 12 Mbit/s */
    CHECK_NEAR(wd_link_mean_rate(l, 0, 10), 12e6 * 9999 / 10000, 1e-3); /* first at 1 ms */
    CHECK_NEAR(wd_link_rate(l, 3.05), 12e6, 1e-3);
    CHECK_NEAR(wd_link_tx_time(l, 0.0005, 12000, 1.0), 0.0005, 1e-12); /* next at 1 ms */
    CHECK_NEAR(wd_link_tx_time(l, 0.0005, 12001, 1.0), 0.0015, 1e-12); /* two packets */
    CHECK_NEAR(wd_link_tx_time(l, 0, 65536, 1.0), 0.006, 1e-12);       /* ceil(5.46) = 6 */
    CHECK_NEAR(wd_link_tx_time(l, 0, 65536, 0.5), 0.011, 1e-12);       /* ceil(10.9) = 11 */
    /* half rate in [5, 6): 100 full packets from 4.9 s, then 6000 bits each */
    CHECK(wd_link_add_window(l, 5.0, 6.0, 0.5) == 0);
    CHECK_NEAR(wd_link_tx_time(l, 4.9, 1.2e6 + 60001, 1.0), 0.110, 1e-9);
    CHECK_NEAR(wd_link_tx_time(l, 4.9, 1.2e6 + 60000, 1.0), 0.109, 1e-9);
    CHECK_NEAR(wd_link_rate(l, 5.5), 6e6, 1e-3);
    wd_link_free(l);
}

/* Direct count over the file: the k-th opportunity (looping) at or after t0. */
static double direct_count(const long *ms, long n, double t0, double bits, double share) {
    long need = (long)ceil(bits / (12000.0 * share) - 1e-9), period = ms[n - 1], got = 0;
    for (long loop = 0;; loop++)
        for (long i = 0; i < n; i++) {
            double t = (double)(loop * period + ms[i]) / 1000.0;
            if (t < t0 - 1e-12) continue;
            if (++got == need) return t - t0;
        }
}

static void test_shared_traces(void) {
    const char *names[4] = {"ATT-LTE-driving-2016.down", "ATT-LTE-driving-2016.up",
                            "TMobile-LTE-short.down", "TMobile-LTE-short.up"};
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/traces/%s", WD_SHARED_DATA, names[0]);
    if (!wd_test_file_exists(path)) {
        printf("SKIPPED part: shared Mahimahi traces absent (%s)\n", path);
        return;
    }
    for (int f = 0; f < 4; f++) {
        snprintf(path, sizeof path, "%s/traces/%s", WD_SHARED_DATA, names[f]);
        FILE *fp = fopen(path, "r");
        long cap = 1 << 20, n = 0, v;
        long *ms = malloc(cap * sizeof(long));
        while (fscanf(fp, "%ld", &v) == 1) ms[n++] = v;
        fclose(fp);
        wd_link *l = make(WD_LINK_MAHIMAHI, path, 0, 0.004, 0, err, sizeof err);
        CHECK(l != NULL);
        if (!l) continue;
        const double t0s[6] = {0, 0.0301, 7.5, 59.9999, 119.99, 300.123};
        const double bits[4] = {1, 65536, 1.2e6, 40e6};
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 4; j++)
                for (int s = 0; s < 2; s++) {
                    double share = s ? 0.5 : 1.0;
                    CHECK_NEAR(wd_link_tx_time(l, t0s[i], bits[j], share),
                               direct_count(ms, n, t0s[i], bits[j], share) + 0.004, 1e-9);
                }
        /* mean rate over a whole loop: opportunities x 12000 bits / period */
        double period = ms[n - 1] / 1000.0;
        for (int b = 1; b <= 2;
             b++) /* exactly at a loop boundary: end of one loop, start of the next */
            for (int j = 0; j < 4; j++)
                CHECK_NEAR(wd_link_tx_time(l, b * period, bits[j], 1.0),
                           direct_count(ms, n, b * period, bits[j], 1.0) + 0.004, 1e-9);
        CHECK_NEAR(wd_link_mean_rate(l, 0, period) / (n * 12000.0 / period), 1.0, 0.001);
        /* the 100 ms rate estimate, bin after bin and jumping, against a count */
        int j = 0;
        for (double t = 59.87; t < 64.0; t += j++ % 5 == 4 ? 0.31 : 0.037) {
            double q = floor(t / 0.1 + 1e-9), got = 0;
            for (long i = 0; i < n; i++) got += ms[i] >= q * 100 && ms[i] < q * 100 + 100;
            CHECK_NEAR(wd_link_rate(l, t), got * 12000.0 / 0.1, 1e-6);
        }
        wd_link_free(l);
        /* an offset shifts the trace */
        l = make(WD_LINK_MAHIMAHI, path, 0, 0, 15.0, err, sizeof err);
        CHECK_NEAR(wd_link_tx_time(l, 2.0, 65536, 1.0), direct_count(ms, n, 17.0, 65536, 1.0),
                   1e-9);
        /* a zero window [20, 30) at the trace's time: opportunities in it carry nothing */
        wd_link_add_window(l, 5.0, 15.0, 0.0);
        double t = wd_link_tx_time(l, 4.999, 65536, 1.0);
        CHECK_NEAR(t, 15.0 - 4.999 + direct_count(ms, n, 30.0, 65536, 1.0), 1e-9);
        wd_link_free(l);
        free(ms);
    }
}

static void test_csv(void) {
    char err[512];
    const char *p = wd_test_write_tmp(tmpdir, "rates.csv", "# a comment\n"
                                           "time_s,device,downlink_bps,uplink_bps\n"
                                           "10,0,9,9\n"
                                           "10,1,1e6,5\n"
                                           "11,1,2e6,5\n"
                                           "13,1,4e6,5\n");
    wd_link *l = make(WD_LINK_CSV, p, 0, 0, 0, err, sizeof err); /* device 1, downlink_bps */
    CHECK(l != NULL);
    if (!l) return;
    /* [0,1): 1e6, [1,3): 2e6, [3,5): 4e6, then loops (times shifted to start at 0) */
    CHECK_NEAR(wd_link_tx_time(l, 0.5, 6e6, 1.0), 2.875, 1e-12);
    CHECK_NEAR(wd_link_tx_time(l, 4.5, 6e6, 1.0), 3.0, 1e-12);
    CHECK_NEAR(wd_link_tx_time(l, 0.5, 3e6, 0.5), 2.875, 1e-12); /* = 6e6 bits at share 1 */
    CHECK_NEAR(wd_link_rate(l, 2.0), 2e6, 0);
    CHECK_NEAR(wd_link_rate(l, 7.0), 2e6, 0);
    CHECK_NEAR(wd_link_mean_rate(l, 0, 5), (1e6 + 4e6 + 8e6) / 5, 1e-6);
    wd_link_free(l);
    l = make(WD_LINK_CSV, p, 0, 0, 1.0, err, sizeof err); /* offset 1 s into the trace */
    CHECK_NEAR(wd_link_tx_time(l, 0.0, 4e6, 1.0), 2.0, 1e-12);
    wd_link_free(l);
}

/* Links of one emulator on the same Mahimahi file share its tables: the
 * same answers as a link that loaded the file itself. */
static void test_shared_tables(void) {
    char err[512];
    const char *p = wd_test_write_tmp(tmpdir, "shared.mm", "3\n3\n7\n8\n8\n8\n20\n31\n40\n");
    wd_link_spec s = {0};
    s.model = WD_LINK_MAHIMAHI, s.rate_scale = 1, s.csv_device = -1, s.window_s = 0.01;
    snprintf(s.file, sizeof s.file, "%s", p);
    wd_link *first = NULL, *shared = NULL, *own = NULL;
    CHECK(wd_link_create(&first, &s, WD_DL, 0, 0, err, sizeof err) == 0);
    s.offset_s = 0.013, s.latency_s = 0.002;
    wd_link *prev[3] = {NULL, first, NULL};
    CHECK(wd_link_create_from(&shared, &s, WD_UL, 1, 0, prev, 3, err, sizeof err) == 0);
    CHECK(wd_link_create(&own, &s, WD_UL, 1, 0, err, sizeof err) == 0);
    if (!first || !shared || !own) return;
    CHECK(shared->borrowed && shared->tab == first->tab && !own->borrowed);
    int same = 1;
    for (double t = 0; t < 0.3; t += 0.0007) {
        for (double bits = 1; bits < 2e5; bits *= 7.3)
            same &= wd_link_tx_time(shared, t, bits, 0.5) == wd_link_tx_time(own, t, bits, 0.5);
        same &= wd_link_rate(shared, t) == wd_link_rate(own, t);
        same &= wd_link_mean_rate(shared, t, t + 0.05) == wd_link_mean_rate(own, t, t + 0.05);
        same &= wd_link_share_needed(shared, t, 5e4, t + 0.03) ==
                wd_link_share_needed(own, t, 5e4, t + 0.03);
    }
    CHECK(same);
    /* first opportunity at or after 0.013 s + 5 ms = trace 18 ms: 20 ms, then 2 ms latency */
    CHECK_NEAR(wd_link_tx_time(shared, 0.005, 1, 1.0), 0.002 + 0.002, 1e-12);
    /* after the last one (40 ms, the period) the loop restarts: 40 + 3 ms */
    CHECK_NEAR(wd_link_tx_time(first, 0.0405, 1, 1.0), 0.043 - 0.0405, 1e-12);
    wd_link_free(shared);
    wd_link_free(own);
    wd_link_free(first);
}

static void expect_error(wd_link_model m, const char *name, const char *text, const char *want) {
    char err[512] = "";
    wd_link *l = make(m, wd_test_write_tmp(tmpdir, name, text), 0, 0, 0, err, sizeof err);
    CHECKF(l == NULL, "%s accepted", name);
    CHECKF(strstr(err, want) && strstr(err, name), "%s: message '%s' lacks '%s'", name, err, want);
    wd_link_free(l);
}

static void test_bad_input(void) {
    expect_error(WD_LINK_MAHIMAHI, "empty.mm", "", "empty");
    expect_error(WD_LINK_MAHIMAHI, "blank.mm", "\n\n", "empty");
    expect_error(WD_LINK_MAHIMAHI, "decr.mm", "1\n5\n3\n", ":3: timestamp 3 is before");
    expect_error(WD_LINK_MAHIMAHI, "text.mm", "1\nabc\n", ":2: not a millisecond");
    expect_error(WD_LINK_MAHIMAHI, "neg.mm", "-4\n", ":1:");
    expect_error(WD_LINK_MAHIMAHI, "zero.mm", "0\n0\n", "loop period");
    expect_error(WD_LINK_CSV, "nocol.csv", "time_s,device,uplink_bps\n0,1,5\n",
                 ":1: no column 'downlink_bps'");
    expect_error(WD_LINK_CSV, "notime.csv", "t,downlink_bps\n0,5\n", "no column 'time_s'");
    expect_error(WD_LINK_CSV, "short.csv", "time_s,downlink_bps\n0,5\n1\n",
                 ":3: 1 fields, the header has 2");
    expect_error(WD_LINK_CSV, "decr.csv", "time_s,downlink_bps\n0,5\n2,5\n1,5\n",
                 ":4: time_s 1 is not after");
    expect_error(WD_LINK_CSV, "negrate.csv", "time_s,downlink_bps\n0,-5\n", ":2: bad downlink_bps");
    expect_error(WD_LINK_CSV, "nan.csv", "time_s,downlink_bps\n0,x\n", ":2: bad downlink_bps");
    expect_error(WD_LINK_CSV, "nodev.csv", "time_s,device,downlink_bps\n0,0,5\n",
                 "no rows for device 1");
    expect_error(WD_LINK_CSV, "empty.csv", "", "empty CSV");
    char err[512] = "";
    CHECK(make(WD_LINK_MAHIMAHI, "/nonexistent/x.mm", 0, 0, 0, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/x.mm: cannot open") != NULL);
}

/* The first window of an offset-0 link: opportunities at 3, 7 and 10 ms,
 * looping every 10 ms. Nothing precedes time 0 (the previous loop's 10 ms
 * opportunity is not at time 0 of this one). */
static void test_mahimahi_first_window(void) {
    char err[512];
    const char *p = wd_test_write_tmp(tmpdir, "first.mm", "3\n7\n10\n");
    wd_link_spec s = {0};
    s.model = WD_LINK_MAHIMAHI, s.rate_scale = 1, s.csv_device = -1, s.window_s = 0.005;
    snprintf(s.file, sizeof s.file, "%s", p);
    wd_link *l = NULL;
    CHECKF(wd_link_create(&l, &s, WD_DL, 0, 0, err, sizeof err) == 0, "%s", err);
    if (!l) return;
    CHECK_NEAR(wd_link_mean_rate(l, 0, 0.002), 0.0, 0);          /* none in [0, 2 ms) */
    CHECK_NEAR(wd_link_mean_rate(l, 0, 0.010), 2 * 12000 / 0.010, 1e-6); /* 3 and 7 ms */
    CHECK_NEAR(wd_link_rate(l, 0.001), 12000 / 0.005, 1e-6);      /* window [0, 5 ms): 3 ms */
    CHECK_NEAR(wd_link_rate(l, 0.006), 12000 / 0.005, 1e-6);      /* [5, 10 ms): 7 ms */
    CHECK_NEAR(wd_link_rate(l, 0.011), 2 * 12000 / 0.005, 1e-6);  /* [10, 15 ms): 10, 13 ms */
    CHECK_NEAR(wd_link_tx_time(l, 0, 12000, 1.0), 0.003, 1e-12);
    CHECK(isinf(wd_link_share_needed(l, 0, 12000, 0.0025))); /* nothing by then */
    wd_link_free(l);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/test_emu_link.tmp", WD_BINARY_DIR);
    mkdir(tmpdir, 0755);
    test_constant();
    test_mahimahi_one();
    test_mahimahi_first_window();
    test_csv();
    test_shared_traces();
    test_shared_tables();
    test_bad_input();
    return wd_test_finish("test_emu_link");
}
