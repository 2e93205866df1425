/* Mutation fuzzing of the emulation's parsers (scenario JSON, CSV and
 * Mahimahi traces, .wdpr files): never a crash, and every failure is one
 * message that starts with the file name. Deterministic, a few seconds. */
#include <sys/stat.h>

#include "emulation/emulation.h"
#include "tests/test_util.h"

static unsigned long long rs = 0x9e3779b97f4a7c15ULL;
static unsigned rnd(unsigned n) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (unsigned)(rs % n);
}

/* A few random edits: flip, delete, insert, duplicate a span. */
static size_t mutate(char *buf, size_t len, size_t cap) {
    static const char pool[] = "{}[]\",:-0123456789.eE \n#abcxyz\\";
    int edits = 1 + rnd(4);
    for (int k = 0; k < edits && len > 0; k++) {
        size_t i = rnd((unsigned)len);
        switch (rnd(4)) {
        case 0:
            buf[i] = pool[rnd(sizeof pool - 1)];
            break;
        case 1:
            memmove(buf + i, buf + i + 1, len - i - 1), len--;
            break;
        case 2:
            if (len + 1 < cap)
                memmove(buf + i + 1, buf + i, len - i), buf[i] = pool[rnd(sizeof pool - 1)], len++;
            break;
        default: {
            size_t n = 1 + rnd(16);
            if (i + n <= len && len + n < cap) memmove(buf + i + n, buf + i, len - i), len += n;
        }
        }
    }
    buf[len] = 0;
    return len;
}

static void write_file(const char *p, const char *s, size_t n) {
    FILE *f = fopen(p, "wb");
    fwrite(s, 1, n, f);
    fclose(f);
}

int main(void) {
    char dir[512], path[700], err[1024], *buf = malloc(1 << 16);
    snprintf(dir, sizeof dir, "%s/test_emu_fuzz.tmp", WD_BINARY_DIR);
    mkdir(dir, 0755);
    const char *seed_json =
        "{\"name\": \"f\", \"seed\": 3, \"radio\": {\"model\": \"UMi\", \"fading\": \"rician\", "
        "\"speed_mps\": 3},"
        " \"policy\": {\"name\": \"wdmoe\", \"gamma\": 1.1}, \"bandwidth_allocation\": \"minmax\","
        " \"devices\": [{\"distance_m\": 40, \"profile\": \"phone\", \"experts\": [0, 1]},"
        "  {\"position_m\": [30, 40], \"experts\": [1, 2, 3], \"uplink\": {\"model\": "
        "\"constant\", \"rate_mbps\": 20}}],"
        " \"faults\": [{\"kind\": \"slow\", \"device\": 1, \"factor\": 2, \"from_s\": 0.001}]}";
    const char *seed_block = /* block fading (radio.fading_block_s) */
        "{\"name\": \"b\", \"seed\": 4, \"radio\": {\"fading_block_s\": \"coherence\", "
        "\"speed_mps\": 30}, \"policy\": {\"name\": \"topk\"},"
        " \"devices\": [{\"distance_m\": 400, \"experts\": [0, 1]},"
        "  {\"distance_m\": 90, \"speed_mps\": 0, \"experts\": [2, 3]}]}";
    wd_emu_shape sh = {64, 128, 2, 4, 2, 2.0, 0, 0, 0, 0, 0};
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        const char *seed = it % 4 == 3 ? seed_block : seed_json;
        size_t n = strlen(seed);
        memcpy(buf, seed, n + 1);
        n = mutate(buf, n, 1 << 16);
        wd_scenario sc;
        if (wd_scenario_parse(&sc, buf, "fz.json", err, sizeof err) == 0) {
            ok++;
            wd_emu *emu;
            if (wd_emu_create(&emu, &sc, &sh, err, sizeof err) == 0) {
                float p[4] = {0.4f, 0.3f, 0.2f, 0.1f}, w[4];
                int nn[1], ex[4];
                for (int l = 0; l < 2; l++)
                    if (wd_emu_select(emu, 1, p, nn, ex, w, err, sizeof err) == 0)
                        wd_emu_step(emu, l, 1, nn, ex, NULL, err, sizeof err);
                wd_emu_free(emu);
            }
            wd_scenario_free(&sc);
        } else {
            CHECKF(!strncmp(err, "fz.json", 7), "message '%s'", err);
        }
    }
    printf("scenario: %d of 20000 mutants parsed\n", ok);
    const char *seeds[2] = {
        "time_s,device,downlink_bps,uplink_bps\n0,0,1e6,2e6\n0.5,0,3e6,1e6\n1,0,0,5e5\n",
        "0\n0\n3\n7\n7\n7\n12\n40\n"};
    for (int kind = 0; kind < 2; kind++)
        for (int it = 0; it < 5000; it++) {
            size_t n = strlen(seeds[kind]);
            memcpy(buf, seeds[kind], n + 1);
            n = mutate(buf, n, 1 << 16);
            snprintf(path, sizeof path, "%s/t%d", dir, kind);
            write_file(path, buf, n);
            wd_link_spec s = {0};
            s.model = kind ? WD_LINK_MAHIMAHI : WD_LINK_CSV;
            s.rate_scale = 1, s.csv_device = 0, s.window_s = 0.1;
            snprintf(s.file, sizeof s.file, "%s", path);
            wd_link *l;
            if (wd_link_create(&l, &s, WD_DL, 0, 10, err, sizeof err) == 0) {
                double t = wd_link_tx_time(l, 0.3, 1e5, 0.5);
                CHECK(t >= 0);
                wd_link_rate(l, 0.7);
                wd_link_mean_rate(l, 0, 2);
                wd_link_free(l);
            } else {
                CHECKF(!strncmp(err, path, strlen(path)), "message '%s'", err);
            }
        }
    /* .wdpr: a valid file with random byte edits */
    wd_probs shape = {2, 4, 2, 8, 16, 0, 0, 0, 16, 0, NULL, NULL};
    wd_probs_writer *w;
    snprintf(path, sizeof path, "%s/p.wdpr", dir);
    CHECK(wd_probs_write_open(&w, path, &shape, err, sizeof err) == 0);
    float tok[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.25f, 0.25f, 0.25f, 0.25f};
    for (int t = 0; t < 3; t++) wd_probs_write_token(w, tok, err, sizeof err);
    CHECK(wd_probs_write_close(w, err, sizeof err) == 0);
    FILE *f = fopen(path, "rb");
    size_t n = fread(buf, 1, 1 << 16, f);
    fclose(f);
    for (int it = 0; it < 3000; it++) {
        char copy[256];
        memcpy(copy, buf, n);
        size_t m = n;
        for (int k = 0; k < 1 + (int)rnd(3); k++) copy[rnd((unsigned)n)] = (char)rnd(256);
        if (rnd(4) == 0) m = rnd((unsigned)n);
        snprintf(path, sizeof path, "%s/q.wdpr", dir);
        write_file(path, copy, m);
        wd_probs p;
        if (wd_probs_read(&p, path, err, sizeof err) == 0)
            wd_probs_free(&p);
        else
            CHECKF(!strncmp(err, path, strlen(path)), "message '%s'", err);
    }
    free(buf);
    return wd_test_finish("test_emu_fuzz");
}
