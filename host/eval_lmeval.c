/* The result of `wdmoe eval` in lm-evaluation-harness's layout, beside wdmoe's
 * own keys, so existing lm-eval tooling reads it:
 *
 *   "results": {TASK: {"alias": TASK, "acc,none": .., "acc_stderr,none": ..,
 *                      "acc_norm,none": .., "acc_norm_stderr,none": ..}},
 *   "n-samples": {TASK: {"original": N, "effective": n}},
 *   "n-shot": {TASK: shots}, "versions": {TASK: "wdmoe-" VERSION},
 *   "config": {"model": "wdmoe", "model_args": "pretrained=PATH,...", "limit": ..}
 *
 * Task names are lm-eval's (hellaswag, arc_easy, arc_challenge, piqa,
 * winogrande, mmlu with mmlu_SUBJECT groups, gsm8k, and wikitext-style
 * word/byte perplexity for perplexity). Standard errors are the sample
 * standard error of the mean, as lm-eval reports them. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "host/eval.h"

static json_object *num(double v) { return isfinite(v) ? json_object_new_double(v) : NULL; }

static json_object *task_metrics(const wd_eval_result *r, const char *name) {
    json_object *t = json_object_new_object();
    json_object_object_add(t, "alias", json_object_new_string(name));
    if (r->task == WD_EVAL_PERPLEXITY) {
        /* per token and per byte; lm-eval's perplexity tasks use ",none" too */
        json_object_object_add(t, "token_perplexity,none", num(r->ppl));
        json_object_object_add(t, "token_perplexity_stderr,none", num(r->ppl_stderr));
        json_object_object_add(t, "bits_per_byte,none", num(r->bits_per_byte));
        json_object_object_add(t, "bits_per_byte_stderr,none", json_object_new_string("N/A"));
    } else if (r->task == WD_EVAL_GSM8K) {
        /* the "#### N" answer when the generation has one, else its last number */
        json_object_object_add(t, "exact_match,flexible-extract", num(r->acc));
        json_object_object_add(t, "exact_match_stderr,flexible-extract", num(r->acc_stderr));
    } else {
        json_object_object_add(t, "acc,none", num(r->acc));
        json_object_object_add(t, "acc_stderr,none", num(r->acc_stderr));
        json_object_object_add(t, "acc_norm,none", num(r->acc_norm));
        json_object_object_add(t, "acc_norm_stderr,none", num(r->acc_norm_stderr));
    }
    return t;
}

void wd_eval_add_lm_eval(json_object *doc, const wd_eval_result *r, const char *task,
                         const char *model_path, int shots, int limit, const char *version) {
    char vtag[64];
    snprintf(vtag, sizeof vtag, "wdmoe-%s", version);
    json_object *res = json_object_new_object(), *ns = json_object_new_object();
    json_object *nshot = json_object_new_object(), *ver = json_object_new_object();
    json_object_object_add(res, task, task_metrics(r, task));
    json_object *cnt = json_object_new_object();
    json_object_object_add(cnt, "original", json_object_new_int64(r->items_total));
    json_object_object_add(cnt, "effective", json_object_new_int64(r->items));
    json_object_object_add(ns, task, cnt);
    json_object_object_add(nshot, task, json_object_new_int(shots));
    json_object_object_add(ver, task, json_object_new_string(vtag));
    for (int i = 0; i < r->n_groups; i++) { /* mmlu subjects: mmlu_<subject> */
        const wd_eval_group *g = &r->groups[i];
        if (!g->items) continue;
        char name[160];
        snprintf(name, sizeof name, "%s_%s", task, g->name);
        json_object *t = json_object_new_object();
        json_object_object_add(t, "alias", json_object_new_string(name));
        json_object_object_add(t, "acc,none", num((double)g->correct / g->items));
        json_object_object_add(t, "acc_stderr,none",
                               num(wd_eval_binary_stderr(g->correct, g->items)));
        json_object_object_add(res, name, t);
        json_object_object_add(nshot, name, json_object_new_int(shots));
    }
    json_object_object_add(doc, "results", res);
    json_object_object_add(doc, "n-samples", ns);
    json_object_object_add(doc, "n-shot", nshot);
    json_object_object_add(doc, "versions", ver);
    json_object *cfg = json_object_new_object();
    char args[1200];
    snprintf(args, sizeof args, "pretrained=%s", model_path);
    json_object_object_add(cfg, "model", json_object_new_string("wdmoe"));
    json_object_object_add(cfg, "model_args", json_object_new_string(args));
    json_object_object_add(cfg, "limit", limit > 0 ? json_object_new_int(limit) : NULL);
    json_object_object_add(doc, "config", cfg);
}
