/* libFuzzer: MMLU CSV (question,A,B,C,D,answer) through wd_eval_load, as the
 * test file (with a valid dev file for the 5 shots) and as the dev file. */
#include <sys/stat.h>

#include "host/eval.h"
#include "tests/fuzz/fuzz_util.h"

static const char VALID[] = "\"What is 1+1?\",1,2,3,4,1\nWhich is a colour?,red,\"car, or bus\","
                            "dog,sky,0\n\"Multi\nline\",a,b,c,d,3\nq4,a,b,c,d,2\nq5,a,b,c,d,1\n";
static char test_path[600], dev_path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char p[600];
    snprintf(p, sizeof p, "%s/test", fz_dir());
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/dev", fz_dir());
    mkdir(p, 0755);
    snprintf(test_path, sizeof test_path, "%s/test/subj_test.csv", fz_dir());
    snprintf(dev_path, sizeof dev_path, "%s/dev/subj_dev.csv", fz_dir());
    return 0;
}

static void put(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024];
    for (int k = 0; k < 2; k++) { /* k = 0: the input is the test file; 1: the dev file */
        put(test_path, k ? (const void *)VALID : data, k ? sizeof VALID - 1 : size);
        put(dev_path, k ? data : (const void *)VALID, k ? size : sizeof VALID - 1);
        wd_eval_set set;
        memset(&set, 0, sizeof set);
        err[0] = 0;
        if (wd_eval_load(&set, WD_EVAL_MMLU, test_path, -1, err, sizeof err)) {
            fz_check_err(err, "subj_");
            continue;
        }
        for (int i = 0; i < set.n_items; i++) {
            const wd_eval_item *it = &set.items[i];
            if (it->gold < 0 || it->gold >= it->n_choices || it->prefix >= set.n_prefixes) abort();
        }
        wd_eval_set_free(&set);
    }
    return 0;
}
