/* Shared by the evaluation-data tests: the invariants every multiple-choice
 * item must hold. */
#ifndef WD_TEST_EVAL_CHECK_H
#define WD_TEST_EVAL_CHECK_H
#include "host/eval.h"
#include "test_util.h"

static inline void check_mc_invariants(const wd_eval_set *set) {
    int bad = 0;
    for (int i = 0; i < set->n_items; i++) {
        const wd_eval_item *it = &set->items[i];
        if (it->n_choices < 2 || it->gold < 0 || it->gold >= it->n_choices || !it->context)
            bad++;
        for (int c = 0; c < it->n_choices; c++)
            if (!it->cont[c] || it->cont[c][0] != ' ' || it->norm_len[c] < 0) bad++;
    }
    CHECKF(bad == 0, "%s: %d malformed items", set->path, bad);
}

#endif
