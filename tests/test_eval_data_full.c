/* Evaluation data readers on the full data sets of ../shared/data/datasets:
 * every item parses, item counts from its SOURCES.md. The data is not
 * shipped (9 MB); where it is absent the test is skipped, visibly (exit 77).
 * The copied subsets in tests/data/eval are checked by test_eval_data. */
#include <stdio.h>
#include <string.h>

#include "eval_check.h"

static void shipped(wd_eval_task task, const char *rel, int shots, int expect_items) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/datasets/%s", WD_SHARED_DATA, rel);
    wd_eval_set set;
    char err[1024];
    int rc = wd_eval_load(&set, task, path, shots, err, sizeof(err));
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    CHECKF(set.n_items == expect_items, "%s: %d items, expected %d", rel, set.n_items,
           expect_items);
    if (wd_eval_task_is_mc(task)) check_mc_invariants(&set);
    if (task == WD_EVAL_GSM8K) {
        int bad = 0;
        for (int i = 0; i < set.n_items; i++)
            if (!set.items[i].target || !set.items[i].target[0]) bad++;
        CHECKF(bad == 0, "gsm8k: %d items without a target", bad);
    }
    printf("%s: %d items\n", rel, set.n_items);
    wd_eval_set_free(&set);
}

int main(void) {
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/datasets/hellaswag_val_full.txt", WD_SHARED_DATA);
    if (!wd_test_file_exists(probe))
        WD_TEST_SKIP("the full data sets are absent (%s; set -DWD_SHARED_DATA=DIR)", probe);
    /* every item of the shipped data sets (counts from SOURCES.md) */
    shipped(WD_EVAL_HELLASWAG, "hellaswag_val_full.txt", -1, 10042);
    shipped(WD_EVAL_ARC_EASY, "arc_easy_test.jsonl", -1, 2376);
    shipped(WD_EVAL_ARC_CHALLENGE, "arc_challenge_test.jsonl", -1, 1172);
    shipped(WD_EVAL_PIQA, "piqa_valid.jsonl", -1, 1838);
    shipped(WD_EVAL_WINOGRANDE, "winogrande_dev.jsonl", -1, 1267);
    shipped(WD_EVAL_GSM8K, "gsm8k/test.jsonl", 0, 1319);
    shipped(WD_EVAL_GSM8K, "gsm8k/test.jsonl", 5, 1314);
    shipped(WD_EVAL_MMLU, "mmlu", 0, 14042);
    shipped(WD_EVAL_MMLU, "mmlu", 5, 14042);
    return wd_test_finish("test_eval_data_full");
}
