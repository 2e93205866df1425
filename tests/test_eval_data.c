/* Evaluation data readers: the copied subsets in tests/data/eval (the full
 * data sets: test_eval_data_full), prompts as lm-evaluation-harness
 * builds them, GSM8K answer extraction, and bad input (one message naming
 * the file and the line). */
#include <stdio.h>
#include <string.h>

#include "host/eval.h"
#include "test_util.h"
#include "eval_check.h"

static char tmpdir[256];

/* loading fails and the message names the file and contains `what` */
static void expect_error(wd_eval_task task, const char *name, const char *text, int shots,
                         const char *what) {
    const char *path = wd_test_write_tmp(tmpdir, name, text);
    wd_eval_set set;
    char err[1024] = "";
    int rc = wd_eval_load(&set, task, path, shots, err, sizeof(err));
    CHECKF(rc != 0, "%s: bad input accepted", name);
    CHECKF(strstr(err, name) != NULL, "message does not name the file: %s", err);
    CHECKF(strstr(err, what) != NULL, "message '%s' lacks '%s'", err, what);
}


static void subsets(void) {
    char path[1024];
    wd_eval_set set;
    char err[1024];
    snprintf(path, sizeof(path), "%s/tests/data/eval/hellaswag_20.txt", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_HELLASWAG, path, -1, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 20);
    /* first item: context line, gold 3, endings as " " + line; acc_norm length = bytes */
    CHECK(!strcmp(set.items[0].context, "Roof shingle removal: A man is sitting on a roof. he"));
    CHECK(set.items[0].gold == 3);
    CHECK(!strcmp(set.items[0].cont[3], " starts pulling up roofing on a roof."));
    CHECK(set.items[0].norm_len[3] == (int)strlen("starts pulling up roofing on a roof."));
    check_mc_invariants(&set);
    wd_eval_set_free(&set);

    snprintf(path, sizeof(path), "%s/tests/data/eval/arc_easy_10.jsonl", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_ARC_EASY, path, -1, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 10);
    CHECK(!strcmp(set.items[0].context,
                  "Question: Which statement best explains why photosynthesis is the foundation "
                  "of most food webs?\nAnswer:"));
    CHECK(!strcmp(set.items[0].cont[0], " Sunlight is the source of energy for nearly all ecosystems."));
    CHECK(set.items[0].gold == 0 && set.items[1].gold == 1);
    wd_eval_set_free(&set);

    snprintf(path, sizeof(path), "%s/tests/data/eval/winogrande_10.jsonl", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_WINOGRANDE, path, -1, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 10);
    /* "Sarah was a much better surgeon than Maria so _ always got the easier cases." */
    CHECK(set.items[0].alt_context != NULL);
    CHECK(!strcmp(set.items[0].alt_context[0], "Sarah was a much better surgeon than Maria so Sarah"));
    CHECK(!strcmp(set.items[0].alt_context[1], "Sarah was a much better surgeon than Maria so Maria"));
    CHECK(!strcmp(set.items[0].cont[0], " always got the easier cases."));
    CHECK(!strcmp(set.items[0].cont[1], " always got the easier cases."));
    CHECK(set.items[0].gold == 1);
    wd_eval_set_free(&set);

    snprintf(path, sizeof(path), "%s/tests/data/eval/piqa_10.jsonl", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_PIQA, path, -1, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 10 && set.items[1].n_choices == 2);
    CHECK(!strcmp(set.items[1].context, "Question: dresser\nAnswer:"));
    wd_eval_set_free(&set);

    snprintf(path, sizeof(path), "%s/tests/data/eval/arc_challenge_10.jsonl", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_ARC_CHALLENGE, path, -1, err, sizeof(err)) == 0, "%s",
           err);
    CHECK(set.n_items == 10);
    check_mc_invariants(&set);
    wd_eval_set_free(&set);

    /* GSM8K: 12 items, 5-shot by default: 7 evaluated, exemplars with full answers */
    snprintf(path, sizeof(path), "%s/tests/data/eval/gsm8k_12.jsonl", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_GSM8K, path, -1, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 7 && set.shots == 5 && set.n_prefixes == 1);
    CHECK(set.n_prefixes == 1 && !strncmp(set.prefixes[0], "Question: Janet\xe2\x80\x99s ducks", 25));
    CHECK(strstr(set.prefixes[0], "#### 18\n\nQuestion: A robe") != NULL);
    CHECK(set.items[0].prefix == 0);
    wd_eval_set_free(&set);
    CHECKF(wd_eval_load(&set, WD_EVAL_GSM8K, path, 0, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 12 && !strcmp(set.items[0].target, "18"));
    CHECK(!strcmp(set.items[0].context, "Question: Janet\xe2\x80\x99s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?\nAnswer:"));
    wd_eval_set_free(&set);

    /* MMLU: one subject file, 0-shot and 5-shot (dev found at ../dev/) */
    snprintf(path, sizeof(path), "%s/tests/data/eval/mmlu/test/high_school_geography_test.csv",
             WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_MMLU, path, 0, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 10 && set.n_groups == 1 && set.n_prefixes == 1);
    CHECK(!strcmp(set.prefixes[0], "The following are multiple choice questions (with answers) "
                                   "about high school geography.\n\n"));
    CHECK(!strcmp(set.items[0].context,
                  "The main factor preventing subsistence economies from advancing economically "
                  "is the lack of\nA. a currency.\nB. a well-connected transportation "
                  "infrastructure.\nC. government activity.\nD. a banking service.\nAnswer:"));
    CHECK(!strcmp(set.items[0].cont[0], " A") && !strcmp(set.items[0].cont[3], " D"));
    CHECK(set.items[0].gold == 1 && set.items[1].gold == 3);
    wd_eval_set_free(&set);
    CHECKF(wd_eval_load(&set, WD_EVAL_MMLU, path, 5, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 10);
    /* 5 exemplars "question\nA. ..\nAnswer: X\n\n" after the description */
    int shots = 0;
    for (const char *p = set.prefixes[0]; (p = strstr(p, "\nAnswer: ")); p++) shots++;
    CHECK(shots == 5);
    CHECK(strstr(set.prefixes[0], "about high school geography.\n\n") != NULL);
    size_t pl = strlen(set.prefixes[0]);
    CHECK(pl > 2 && !strcmp(set.prefixes[0] + pl - 2, "\n\n"));
    wd_eval_set_free(&set);
    /* the folder form */
    snprintf(path, sizeof(path), "%s/tests/data/eval/mmlu", WD_SOURCE_DIR);
    CHECKF(wd_eval_load(&set, WD_EVAL_MMLU, path, 5, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 10 && set.n_groups == 1 && !strcmp(set.groups[0], "high_school_geography"));
    wd_eval_set_free(&set);
}

static void gsm8k_extract(void) {
    static const char *cases[][2] = {
        {"so 9 * 2 = 18.\n#### 18", "18"},
        {"#### 1,234", "1234"},
        {"#### -5", "-5"},
        {"#### $70000", "70000"},
        {"The answer is 42.", "42"},
        {"She pays $1,200.50 in total.", "1200.50"},
        {"first 3 then 4 then 12", "12"},
        {"it costs -$5 now", "-5"},
        {"no number here", ""},
        {"3.5 apples. 7.", "7"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        wd_eval_gsm8k_extract(cases[i][0], out, sizeof(out));
        CHECKF(!strcmp(out, cases[i][1]), "'%s' -> '%s', expected '%s'", cases[i][0], out,
               cases[i][1]);
    }
}

static void bad_inputs(void) {
    expect_error(WD_EVAL_HELLASWAG, "hs_gold.txt", "ctx\n7\na\nb\nc\nd\n", -1, "line 2");
    expect_error(WD_EVAL_HELLASWAG, "hs_short.txt", "ctx\n1\na\nb\nc\nd\nctx2\n0\na\n", -1,
                 "incomplete");
    expect_error(WD_EVAL_HELLASWAG, "hs_empty.txt", "\n\n", -1, "no tasks");
    expect_error(WD_EVAL_ARC_EASY, "arc_json.jsonl",
                 "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n{\"question\": \n",
                 -1, "line 2");
    expect_error(WD_EVAL_ARC_EASY, "arc_answer.jsonl",
                 "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n", -1,
                 "answer");
    expect_error(WD_EVAL_ARC_EASY, "arc_choices.jsonl",
                 "{\"question\": \"q\", \"choices\": \"ab\", \"answer\": 0}\n", -1, "choices");
    expect_error(WD_EVAL_PIQA, "piqa_choice.jsonl",
                 "{\"question\": \"q\", \"choices\": [\"a\", 3], \"answer\": 0}\n", -1,
                 "choice 1");
    expect_error(WD_EVAL_PIQA, "piqa_trailing.jsonl",
                 "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0} x\n", -1,
                 "line 1");
    expect_error(WD_EVAL_PIQA, "piqa_array.jsonl", "[1, 2]\n", -1, "object");
    expect_error(WD_EVAL_WINOGRANDE, "wino_blank.jsonl",
                 "{\"question\": \"no blank here\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n",
                 -1, "blank");
    expect_error(WD_EVAL_GSM8K, "gsm_hash.jsonl",
                 "{\"question\": \"q\", \"answer\": \"no final answer\"}\n", 0, "####");
    expect_error(WD_EVAL_GSM8K, "gsm_shots.jsonl",
                 "{\"question\": \"q\", \"answer\": \"#### 1\"}\n", 5, "5-shot");
    expect_error(WD_EVAL_MMLU, "x_test.csv", "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c\n",
                 0, "line 2");
    expect_error(WD_EVAL_MMLU, "y_test.csv", "q,a,b,c,d,E\n", 0, "answer");
    expect_error(WD_EVAL_MMLU, "z_test.csv", "\"q,a,b,c,d,1\n", 0, "unterminated");
    expect_error(WD_EVAL_MMLU, "w_test.csv", "q,a,b,c,d,1\n", 5, "w_dev.csv");
    expect_error(WD_EVAL_ARC_EASY, "arc_shots.jsonl",
                 "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n", 3, "few-shot");
    expect_error(WD_EVAL_PERPLEXITY, "empty.txt", "", -1, "empty");
    /* a missing file */
    wd_eval_set set;
    char err[512];
    CHECK(wd_eval_load(&set, WD_EVAL_HELLASWAG, "/nonexistent/hs.txt", -1, err, sizeof(err)) != 0);
    CHECK(strstr(err, "/nonexistent/hs.txt") != NULL);
    /* CSV with quotes, escaped quotes, a newline inside a field, CRLF, letter answers */
    const char *path = wd_test_write_tmp(tmpdir, "q_test.csv",
                                 "\"What is \"\"x\"\"?\",\"a, b\",\"line1\nline2\",c,d,B\r\n"
                                 "second,a,b,c,d,3\r\n");
    CHECKF(wd_eval_load(&set, WD_EVAL_MMLU, path, 0, err, sizeof(err)) == 0, "%s", err);
    CHECK(set.n_items == 2);
    if (set.n_items == 2) {
        CHECK(!strcmp(set.items[0].context,
                      "What is \"x\"?\nA. a, b\nB. line1\nline2\nC. c\nD. d\nAnswer:"));
        CHECK(set.items[0].gold == 1 && set.items[1].gold == 3);
        CHECK(!strcmp(set.prefixes[0], "The following are multiple choice questions (with "
                                       "answers) about q.\n\n"));
    }
    wd_eval_set_free(&set);
}

int main(void) {
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/wd_test_eval_data_XXXXXX");
    if (!mkdtemp(tmpdir)) WD_TEST_SKIP("cannot create a temporary folder");
    subsets();
    gsm8k_extract();
    bad_inputs();
    /* tasks by name */
    wd_eval_task t;
    CHECK(wd_eval_task_parse("arc-challenge", &t) == 0 && t == WD_EVAL_ARC_CHALLENGE);
    CHECK(wd_eval_task_parse("ppl", &t) == 0 && t == WD_EVAL_PERPLEXITY);
    CHECK(wd_eval_task_parse("squad", &t) != 0);
    for (int i = 0; i < WD_EVAL_N_TASKS; i++)
        CHECK(wd_eval_task_parse(wd_eval_task_name((wd_eval_task)i), &t) == 0 && (int)t == i);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return wd_test_finish("test_eval_data");
}
