/* The libFuzzer harnesses of tests/fuzz as a plain test: every input kept in
 * tests/fuzz/regress/<target>/ (past findings) and the shipped files run once
 * through the same code the fuzzers run (the real loaders; a bad input must
 * give a message naming the file, never a crash). Under the sanitizer build
 * this replays the findings with ASan + UBSan. */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

#include "tests/test_util.h"

#define LLVMFuzzerTestOneInput fz_safetensors
#include "tests/fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerInitialize fz_init_st_index
#define LLVMFuzzerTestOneInput fz_st_index
#include "tests/fuzz/fuzz_st_index.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_config
#include "tests/fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_tokenizer
#include "tests/fuzz/fuzz_tokenizer.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_tokenizer_piece
#include "tests/fuzz/fuzz_tokenizer_piece.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_gguf
#include "tests/fuzz/fuzz_gguf.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerInitialize fz_init_scenario
#define LLVMFuzzerTestOneInput fz_scenario
#include "tests/fuzz/fuzz_scenario.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_csv_trace
#include "tests/fuzz/fuzz_csv_trace.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_mahimahi
#include "tests/fuzz/fuzz_mahimahi.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_probs
#include "tests/fuzz/fuzz_probs.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_eval_text
#include "tests/fuzz/fuzz_eval_text.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerInitialize fz_init_eval_mmlu
#define LLVMFuzzerTestOneInput fz_eval_mmlu
#include "tests/fuzz/fuzz_eval_mmlu.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_eval_jsonl
#include "tests/fuzz/fuzz_eval_jsonl.c"
#undef LLVMFuzzerTestOneInput

typedef struct {
    const char *name;
    int (*init)(int *, char ***);
    int (*one)(const uint8_t *, size_t);
    const char *shipped[4]; /* relative to WD_SOURCE_DIR */
} target;

#define M "weights/models/stories260k/"
#define E "tests/data/eval/"
static const target targets[] = {
    {"safetensors", NULL, fz_safetensors, {M "sliced4-top4/model.safetensors"}},
    {"st_index", fz_init_st_index, fz_st_index, {0}},
    {"config", NULL, fz_config, {M "moe4-top2/config.json", M "sliced4-top4/config.json"}},
    {"tokenizer", NULL, fz_tokenizer, {M "moe4-top2/tokenizer.json"}},
    {"tokenizer_piece", NULL, fz_tokenizer_piece, {0}},
    {"gguf", NULL, fz_gguf, {M "moe4-top2.gguf"}},
    {"scenario", fz_init_scenario, fz_scenario,
     {"bench/scenarios/paper-cell.json", "bench/scenarios/att-lte-driving.json",
      "bench/scenarios/tmobile-lte-short.json"}},
    {"csv_trace", NULL, fz_csv_trace, {0}},
    {"mahimahi", NULL, fz_mahimahi, {"bench/traces/ATT-LTE-driving-2016.up"}},
    {"probs", NULL, fz_probs, {0}},
    {"eval_text", NULL, fz_eval_text, {E "hellaswag_20.txt", M "greedy-200.txt"}},
    {"eval_mmlu", fz_init_eval_mmlu, fz_eval_mmlu,
     {E "mmlu/test/high_school_geography_test.csv", E "mmlu/dev/high_school_geography_dev.csv"}},
    {"eval_jsonl", NULL, fz_eval_jsonl,
     {E "arc_easy_10.jsonl", E "piqa_10.jsonl", E "winogrande_10.jsonl", E "gsm8k_12.jsonl"}},
};

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - len, f);
        if (len < cap) break;
        uint8_t *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb, cap *= 2;
    }
    fclose(f);
    *n = len;
    return b;
}

static int run_file(const target *t, const char *path) {
    size_t n;
    uint8_t *d = slurp(path, &n);
    CHECKF(d != NULL, "cannot read %s", path);
    if (!d) return 0;
    t->one(d, n); /* aborts on a violation */
    free(d);
    return 1;
}

int main(void) {
    int total = 0;
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        const target *t = &targets[i];
        if (t->init) t->init(NULL, NULL);
        char dir[1024], path[1400];
        int ran = 0;
        snprintf(dir, sizeof dir, "%s/tests/fuzz/regress/%s", WD_SOURCE_DIR, t->name);
        DIR *dp = opendir(dir);
        if (dp) {
            struct dirent *e;
            while ((e = readdir(dp))) {
                if (e->d_name[0] == '.') continue;
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                ran += run_file(t, path);
            }
            closedir(dp);
        }
        for (int j = 0; j < 4 && t->shipped[j]; j++) {
            snprintf(path, sizeof path, "%s/%s", WD_SOURCE_DIR, t->shipped[j]);
            CHECKF(wd_test_file_exists(path), "%s: shipped seed %s absent", t->name, path);
            if (!wd_test_file_exists(path)) continue;
            ran += run_file(t, path);
        }
        printf("  %-12s %d inputs\n", t->name, ran);
        total += ran;
    }
    CHECK(total > 10);
    return wd_test_finish("test_fuzz_regress");
}
