/* libFuzzer: evaluation data in text form through wd_eval_load: HellaSwag
 * (llama.cpp's 6-lines-per-item file) and a perplexity text file. */
#include "host/eval.h"
#include "tests/fuzz/fuzz_util.h"

static void check_set(const wd_eval_set *s) {
    for (int i = 0; i < s->n_items; i++) {
        const wd_eval_item *it = &s->items[i];
        if (it->prefix >= s->n_prefixes || it->group >= (s->n_groups ? s->n_groups : 1)) abort();
        if (it->n_choices > 0 && (it->gold < 0 || it->gold >= it->n_choices)) abort();
        for (int c = 0; c < it->n_choices; c++)
            if (!it->cont[c]) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    fz_write(path, sizeof path, "hellaswag.txt", data, size);
    wd_eval_set set;
    const wd_eval_task tasks[] = {WD_EVAL_HELLASWAG, WD_EVAL_PERPLEXITY};
    for (int k = 0; k < 2; k++) {
        memset(&set, 0, sizeof set);
        err[0] = 0;
        if (wd_eval_load(&set, tasks[k], path, -1, err, sizeof err)) {
            fz_check_err(err, "hellaswag.txt");
        } else {
            check_set(&set);
            wd_eval_set_free(&set);
        }
    }
    return 0;
}
