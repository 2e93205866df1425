/* libFuzzer: a Mahimahi trace (one ms timestamp per delivery opportunity)
 * through wd_link_create, then rates and transfer times on it. */
#include <math.h>

#include "emulation/emulation.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "trace.down", data, size);
    wd_link_spec sp = {0};
    sp.model = WD_LINK_MAHIMAHI;
    snprintf(sp.file, sizeof sp.file, "%s", path);
    sp.offset_s = 0.003;
    sp.window_s = 0.01;
    sp.rate_scale = 1;
    wd_link *l = NULL;
    if (wd_link_create(&l, &sp, WD_DL, 0, 5.0, err, sizeof err)) {
        fz_check_err(err, "trace.down");
        return 0;
    }
    wd_link_add_window(l, 0.05, 0.06, 0);
    double t = 0;
    for (int i = 0; i < 6; i++) {
        double r = wd_link_rate(l, t), m = wd_link_mean_rate(l, t, t + 0.02);
        double d = wd_link_tx_time(l, t, 12000.0 * (1 + i * 7), i % 2 ? 0.3 : 1.0);
        if (r < 0 || m < 0 || !(d >= 0)) abort();
        t += isfinite(d) ? d : 1.3;
    }
    wd_link_free(l);
    return 0;
}
