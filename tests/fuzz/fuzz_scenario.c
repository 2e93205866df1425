/* libFuzzer: a scenario JSON through wd_scenario_parse, then wd_emu_create
 * (links, traces, placement, memory check) and a few emulated layer steps.
 * Relative trace paths resolve next to the scenario: trace.csv and
 * trace.mahi are small valid traces written there. */
#include "emulation/emulation.h"
#include "tests/fuzz/fuzz_util.h"

static char sc_path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static const char csv[] = "time_s,device,downlink_bps,uplink_bps\n0,0,5e7,2e7\n0,1,4e7,1e7\n"
                              "0.5,0,0,1e7\n0.5,1,3e7,5e6\n";
    static const char mm[] = "1\n1\n2\n5\n9\n14\n20\n";
    char p[600];
    fz_write(p, sizeof p, "trace.csv", (const uint8_t *)csv, sizeof csv - 1);
    fz_write(p, sizeof p, "trace.mahi", (const uint8_t *)mm, sizeof mm - 1);
    snprintf(sc_path, sizeof sc_path, "%s/scenario.json", fz_dir());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024] = "";
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    wd_scenario sc;
    int rc = wd_scenario_parse(&sc, text, sc_path, err, sizeof err);
    free(text);
    if (rc) {
        fz_check_err(err, "scenario.json");
        return 0;
    }
    wd_emu_shape shape = {64, 128, 2, 4, 2, 2.0, 4, 2, 16, 0, 0};
    wd_emu *emu = NULL;
    if (wd_emu_create(&emu, &sc, &shape, err, sizeof err)) {
        fz_check_err(err, "scenario.json");
    } else {
        float probs[2 * 4] = {0.4f, 0.3f, 0.2f, 0.1f, 0.05f, 0.15f, 0.5f, 0.3f};
        int n[2], ex[2 * 4];
        float w[2 * 4];
        for (int step = 0; step < 4; step++) {
            int nt = 1 + step % 2;
            if (wd_emu_select(emu, nt, probs, n, ex, w, err, sizeof err) ||
                wd_emu_step(emu, step % 2, nt, n, ex, NULL, err, sizeof err))
                break; /* e.g. a link that never delivers: an error, not a crash */
        }
        wd_emu_summary s;
        wd_emu_summarize(emu, &s);
        wd_emu_free(emu);
    }
    wd_scenario_free(&sc);
    return 0;
}
