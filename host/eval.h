/* host/eval.h: the evaluation harness behind `wdmoe eval` (private to host/
 * and its tests; see docs/eval.md).
 *
 *   wd_eval_set    a task's items read from the shipped formats (HellaSwag in
 *                  llama.cpp's text format, MMLU CSV, ARC/PIQA/WinoGrande JSONL,
 *                  GSM8K JSONL, a plain text file for perplexity).
 *   wd_eval_lm     a language model as the scorer sees it: forward n tokens at
 *                  the current position, rewind, encode, decode. Filled from a
 *                  wd_session by wd_eval_lm_session; tests plug in synthetic
 *                  models whose logits are known.
 *   wd_eval_run    scores the items: multiple choice by log-likelihood of each
 *                  choice given the context (acc, acc_norm as
 *                  lm-evaluation-harness), greedy generation with exact match
 *                  (GSM8K), perplexity with a sliding window; optional agreement
 *                  and KL divergence against a reference (top-k) model fed the
 *                  same tokens.
 *
 * Shared-prefix scoring: the token prefix common to every choice of an item
 * (capped at the shortest context) is prefilled once; each choice rewinds to
 * its end and runs only its own tokens. The log-probability of token j comes
 * from the logits at position j - 1, so the prefill's last logits are kept.
 *
 * Errors: 0 on success, non-zero with "FILE: what is wrong" in err. */
#ifndef WD_EVAL_H
#define WD_EVAL_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "host/host.h"

struct json_object;

typedef enum {
    WD_EVAL_HELLASWAG = 0,
    WD_EVAL_MMLU,
    WD_EVAL_ARC_EASY,
    WD_EVAL_ARC_CHALLENGE,
    WD_EVAL_PIQA,
    WD_EVAL_WINOGRANDE,
    WD_EVAL_GSM8K,
    WD_EVAL_PERPLEXITY,
    WD_EVAL_N_TASKS
} wd_eval_task;

const char *wd_eval_task_name(wd_eval_task t);
/* Accepts the names above (hellaswag, mmlu, arc_easy, arc_challenge, piqa,
 * winogrande, gsm8k, perplexity) and the aliases arc-easy, arc-challenge,
 * arc_e, arc_c, ppl. Returns 0 when known. */
int wd_eval_task_parse(const char *name, wd_eval_task *t);
int wd_eval_task_is_mc(wd_eval_task t); /* multiple choice */

/* ---- data ------------------------------------------------------------------ */
typedef struct {
    char *context;     /* MC: text before the continuation; GSM8K: the prompt */
    int prefix;        /* index into set->prefixes prepended to context (-1: none) */
    int n_choices;
    char **cont;       /* per choice: the continuation scored (with its leading " ") */
    char **alt_context;/* WinoGrande: per-choice context (replaces context); else NULL */
    int *norm_len;     /* per choice: bytes used by acc_norm (the choice text) */
    int gold;          /* right choice (MC) */
    char *target;      /* GSM8K: the final number of the reference answer, normalised */
    char *answer;      /* GSM8K: the whole reference answer (few-shot exemplars) */
    int group;         /* MMLU: subject (index into set->groups); else 0 */
} wd_eval_item;

typedef struct {
    wd_eval_task task;
    char path[1024];
    int shots;         /* few-shot examples used (MMLU: from dev; GSM8K: head of the file) */
    int n_items, cap;
    wd_eval_item *items;
    int n_prefixes;
    char **prefixes;
    int n_groups;
    char **groups;
    char *text;        /* perplexity: the whole file */
    size_t text_len;
} wd_eval_set;

/* path: HellaSwag .txt; MMLU: the folder holding dev/ and test/ (all subjects)
 * or one <subject>_test.csv (its dev file is ../dev/<subject>_dev.csv);
 * ARC/PIQA/WinoGrande/GSM8K: .jsonl; perplexity: any UTF-8 text file.
 * shots < 0: the task's default (MMLU 5, GSM8K 5, others 0). GSM8K shots are
 * the first items of the file and are not evaluated. */
int wd_eval_load(wd_eval_set *set, wd_eval_task task, const char *path, int shots, char *err,
                 size_t errlen);
void wd_eval_set_free(wd_eval_set *set);

/* Final number of a GSM8K answer or generation: the number after "####" when
 * present, else the last number in the text; '$' and ',' removed, a trailing
 * '.' dropped. Writes "" when there is none. */
void wd_eval_gsm8k_extract(const char *text, char *out, size_t cap);

/* ---- the model as the scorer sees it ------------------------------------------- */
typedef struct {
    void *ctx;
    int vocab, max_ctx;
    int bos, eos;   /* -1: none */
    int max_batch;  /* most tokens one forward call takes (0: no limit) */
    int rewind;     /* 1: set_pos to any earlier position; 0: only to 0 (no shared prefix) */
    /* n tokens at the current position; logits [vocab] of the last (all = 0)
     * or [n][vocab] (all = 1), or NULL */
    int (*forward)(void *ctx, const int *tokens, int n, float *logits, int all, char *err,
                   size_t errlen);
    int (*get_pos)(void *ctx);
    void (*set_pos)(void *ctx, int pos); /* rewind (see `rewind`) */
    /* malloc'd ids; 0 on success */
    int (*encode)(void *ctx, const char *text, int add_bos, int **ids, int *n);
    char *(*decode)(void *ctx, const int *ids, int n); /* malloc'd */
    /* optional (NULL: none): told which phase the next forwards belong to,
     * decode 0: prefill (a prompt, a scored item, a perplexity window: one
     * latency sample each), 1: decode (generated tokens) */
    void (*phase)(void *phase_ctx, int decode);
    void *phase_ctx;
} wd_eval_lm;

/* A session (and its model's tokenizer, which must be present). */
void wd_eval_lm_session(wd_eval_lm *lm, wd_session *s);

/* ---- running ------------------------------------------------------------------- */
typedef struct {
    int shared_prefix;        /* 1: prefill the common prefix once (default) */
    int max_new_tokens;       /* GSM8K (default 256) */
    int ppl_window;           /* perplexity window in tokens (0: the lm's max_ctx) */
    int ppl_stride;           /* perplexity stride (0: window / 2) */
    const wd_eval_lm *ref;    /* optional reference (top-k) for agreement / KL */
    const volatile sig_atomic_t *stop; /* set asynchronously: stop after the current item */
    void (*progress)(void *ctx, long done, long total);
    void *progress_ctx;
    FILE *records;            /* optional: one JSON line per item */
} wd_eval_opts;

void wd_eval_opts_default(wd_eval_opts *o);

typedef struct {
    char name[128];
    long items, correct;
} wd_eval_group;

typedef struct {
    wd_eval_task task;
    long items_total;   /* items selected */
    long items;         /* items completed */
    int interrupted;
    long truncated;     /* items whose context was cut from the left to fit */
    /* multiple choice / GSM8K (exact match is acc) */
    long correct, correct_norm;
    double acc, acc_stderr, acc_norm, acc_norm_stderr;
    /* perplexity */
    long ppl_tokens;
    double nll_sum, nll_sq_sum, ppl, ppl_stderr, nll_mean, nll_stderr, bits_per_byte;
    size_t ppl_bytes;
    /* work and time */
    long forwards, tokens_forwarded, tokens_scored, tokens_generated;
    double seconds;
    /* agreement with the reference (positions where both produced logits) */
    long agree_positions, agree_count;
    double kl_sum, kl_max, agreement, kl_mean;
    /* MMLU subjects */
    int n_groups;
    wd_eval_group *groups;
} wd_eval_result;

/* Score items [0, n) of order (NULL: 0..n-1 in file order). */
int wd_eval_run(const wd_eval_set *set, const int *order, int n, const wd_eval_lm *lm,
                const wd_eval_opts *o, wd_eval_result *r, char *err, size_t errlen);
void wd_eval_result_free(wd_eval_result *r);
/* Recompute acc, stderr, ppl, agreement from the counts. */
void wd_eval_result_finish(wd_eval_result *r);
/* Sample standard error of the mean of n Bernoulli outcomes with k successes,
 * as lm-evaluation-harness (stddev with n - 1, divided by sqrt(n)); NAN when n < 2. */
double wd_eval_binary_stderr(long k, long n);

/* Log-likelihoods of n token sequences: ll[i] = sum over j >= ctx_len[i] of
 * log p(seq[i][j] | seq[i][0..j)); greedy[i] (may be NULL) = 1 when every
 * such token is the argmax. Shared prefix per opts; counts work into r. */
int wd_eval_score(const wd_eval_lm *lm, const wd_eval_opts *o, int n, const int *const *seq,
                  const int *len, const int *ctx_len, double *ll, int *greedy,
                  wd_eval_result *r, char *err, size_t errlen);
/* Parts of the result JSON (json-c objects, deterministic key order; the
 * caller owns them). metrics: acc/acc_norm (+ stderr) for multiple choice,
 * exact_match for GSM8K, ppl/nll/bits_per_byte for perplexity. groups and
 * agreement are NULL when there are none. Non-finite values are null. */
struct json_object *wd_eval_metrics_json(const wd_eval_result *r);
struct json_object *wd_eval_groups_json(const wd_eval_result *r);
struct json_object *wd_eval_agreement_json(const wd_eval_result *r);
struct json_object *wd_eval_throughput_json(const wd_eval_result *r);

/* ---- emulation (host/eval_emu.c) ----------------------------------------------- */
/* The BS scheduler of a scenario (NULL: the default cell with one device per
 * expert) for model m; policy NULL keeps the scenario's; seed >= 0 replaces
 * the scenario's seed. Its hooks route every forward through the policy and
 * the virtual clock (wd_session_set_hooks, or a GPU runner's forward). */
typedef struct wd_eval_emu wd_eval_emu;
int wd_eval_emu_create(wd_eval_emu **out, const wd_model *m, const char *scenario,
                       const char *policy, long long seed, char *err, size_t errlen);
const wd_moe_hooks *wd_eval_emu_hooks(const wd_eval_emu *e);
const char *wd_eval_emu_policy(const wd_eval_emu *e);
int wd_eval_emu_measured(const wd_eval_emu *e); /* the scenario asks for measured compute */
struct json_object *wd_eval_emu_latency_json(const wd_eval_emu *e); /* prefill/decode latency */
void wd_eval_emu_phase(void *e, int decode); /* for wd_eval_lm.phase (phase_ctx: the wd_eval_emu) */
void wd_eval_emu_print(FILE *f, const wd_eval_emu *e);
void wd_eval_emu_free(wd_eval_emu *e); /* after the sessions using its hooks stop */

/* acc / acc_norm choice: argmax of ll (first on ties) and of ll / norm_len. */
void wd_eval_pick(int n, const double *ll, const int *norm_len, int *pred, int *pred_norm);

/* The `wdmoe eval` subcommand (host/cmd_eval.c); argv[0] is "eval". */
int wd_cmd_eval(int argc, char **argv);

#endif
