/* libFuzzer: a Hugging Face config.json through wd_config_load. */
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "config.json", data, size);
    wd_config c;
    if (wd_config_load(&c, path, err, sizeof err)) {
        fz_check_err(err, "config.json");
        return 0;
    }
    /* what the runtime relies on */
    if (c.hidden < 1 || c.n_layers < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.head_dim < 1 ||
        c.ffn < 1 || c.n_experts < 1 || c.top_k < 1 || c.top_k > c.n_experts || c.vocab < 1 ||
        c.max_pos < 1 || c.n_heads % c.n_kv_heads) {
        fprintf(stderr, "config accepted with an unusable shape\n");
        abort();
    }
    return 0;
}
