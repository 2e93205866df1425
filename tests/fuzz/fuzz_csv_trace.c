/* libFuzzer: a CSV rate trace through wd_link_create (both directions, a
 * device filter), then rates and transfer times on it. */
#include <math.h>

#include "emulation/emulation.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600];
    fz_write(path, sizeof path, "trace.csv", data, size);
    for (int k = 0; k < 2; k++) {
        wd_link_spec sp = {0};
        sp.model = WD_LINK_CSV;
        snprintf(sp.file, sizeof sp.file, "%s", path);
        sp.csv_device = k ? 1 : -1;
        sp.offset_s = k ? 0.25 : 0;
        sp.rate_scale = 1;
        sp.latency_s = 0.001;
        wd_link *l = NULL;
        char err[1024] = "";
        if (wd_link_create(&l, &sp, k ? WD_UL : WD_DL, 0, 5.0, err, sizeof err)) {
            fz_check_err(err, "trace.csv");
            continue;
        }
        wd_link_add_window(l, 0.1, 0.2, 0.5);
        double t = 0;
        for (int i = 0; i < 6; i++) {
            double r = wd_link_rate(l, t), m = wd_link_mean_rate(l, t, t + 0.3);
            double d = wd_link_tx_time(l, t, 1e3 * (1 + i * 100), i % 2 ? 0.5 : 1.0);
            if (r < 0 || m < 0 || !(d >= 0)) abort();
            t += isfinite(d) ? d : 0.7;
        }
        wd_link_free(l);
    }
    return 0;
}
