/* libFuzzer: JSONL evaluation data through wd_eval_load as each JSONL task:
 * ARC (easy), PIQA, WinoGrande ({"question", "choices", "answer"}) and GSM8K
 * ({"question", "answer": "... #### N"}). */
#include "host/eval.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024];
    fz_write(path, sizeof path, "items.jsonl", data, size);
    const wd_eval_task tasks[] = {WD_EVAL_ARC_EASY, WD_EVAL_PIQA, WD_EVAL_WINOGRANDE,
                                  WD_EVAL_GSM8K};
    for (int k = 0; k < 4; k++) {
        wd_eval_set set;
        memset(&set, 0, sizeof set);
        err[0] = 0;
        if (wd_eval_load(&set, tasks[k], path, k == 3 ? 1 : -1, err, sizeof err)) {
            fz_check_err(err, "items.jsonl");
            continue;
        }
        for (int i = 0; i < set.n_items; i++) {
            const wd_eval_item *it = &set.items[i];
            if (tasks[k] == WD_EVAL_GSM8K) {
                if (!it->context || !it->target) abort();
                char out[64];
                wd_eval_gsm8k_extract(it->answer ? it->answer : "", out, sizeof out);
            } else if (it->gold < 0 || it->gold >= it->n_choices) {
                abort();
            }
        }
        wd_eval_set_free(&set);
    }
    return 0;
}
