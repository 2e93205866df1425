/* libFuzzer: a recorded router-probability file (.wdpr) through wd_probs_read. */
#include "emulation/emulation.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "probs.wdpr", data, size);
    wd_probs p;
    if (wd_probs_read(&p, path, err, sizeof err)) {
        fz_check_err(err, "probs.wdpr");
        return 0;
    }
    size_t n = (size_t)p.n_tokens * p.n_layers * p.n_experts;
    volatile float sink = 0;
    if (n) sink += p.probs[0] + p.probs[n - 1];
    (void)sink;
    wd_emu_shape sh = wd_probs_shape(&p);
    (void)sh;
    wd_probs_free(&p);
    return 0;
}
