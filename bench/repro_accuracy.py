#!/usr/bin/env python3
"""Paper experiment: accuracy per dataset, top-k (the model's own routing) vs
WDMoE (latency-aware selection in an emulated cell), with Llama-2-70B's
published figures as a constant column.

    bench/repro_accuracy.py MODEL [--limit N] [--scenario FILE] [--out DIR]

MODEL: a Mixtral-8x7B Hugging Face folder or GGUF (GPU host), or the shipped
weights/models/stories260k/sliced4-top4 (a laptop: near-chance accuracy, but
dropping experts there is a real degradation) or .../moe4-top2 (identical
experts: WDMoE equals top-k exactly).

Writes DIR/accuracy.{md,csv,json} (atomically); per-run result JSONs in
DIR/runs/. The reported metric per task: acc_norm for ARC-E/ARC-C/PIQA/
HellaSwag, acc for WinoGrande/MMLU, exact match for GSM8K (all runs hold both
acc and acc_norm).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as rc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data-dir", default=rc.default_data_dir())
    ap.add_argument("--tasks", default=",".join(rc.TASKS), help="comma-separated")
    ap.add_argument("--limit", type=int, default=0, help="items per task (0: all)")
    ap.add_argument("--gsm8k-limit", type=int, default=None,
                    help="items for GSM8K (default: --limit)")
    ap.add_argument("--mmlu-shots", type=int, default=5)
    ap.add_argument("--gsm8k-shots", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--scenario", default=rc.default_scenario(),
                    help="emulated cell for the WDMoE runs (default bench/scenarios/paper-cell.json)")
    ap.add_argument("--policy", default="wdmoe")
    rc.seed_args(ap)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(rc.REPO, "bench", "results", "accuracy"))
    ap.add_argument("--wdmoe", default=None)
    a = ap.parse_args()

    runner = rc.Runner(rc.find_wdmoe(a.wdmoe), a.model, a.threads)
    runs = os.path.join(a.out, "runs")
    os.makedirs(runs, exist_ok=True)
    rows = []
    tasks = [t for t in a.tasks.split(",") if t]
    for t in tasks:
        if t not in rc.TASKS:
            sys.exit(f"repro_accuracy: unknown task {t} (one of {', '.join(rc.TASKS)})")
    try:
        for t in tasks:
            data = rc.dataset_path(a.data_dir, t)
            if not data:
                print(f"repro_accuracy: no data for {t}, skipped", file=sys.stderr)
                continue
            limit = a.gsm8k_limit if (t == "gsm8k" and a.gsm8k_limit is not None) else a.limit
            extra = ["--quiet", "--limit", str(limit)]
            if t == "mmlu":
                extra += ["--shots", str(a.mmlu_shots)]
            if t == "gsm8k":
                extra += ["--shots", str(a.gsm8k_shots), "--max-new-tokens", str(a.max_new_tokens)]
            metric = rc.TASKS[t][1]
            # top-k without emulation: its routing does not depend on the channel
            base = rc.reuse(os.path.join(runs, f"{t}_topk.json")) or runner.eval(
                t, data, os.path.join(runs, f"{t}_topk.json"), extra)
            emu_extra = list(extra) + ["--policy", a.policy]
            if a.scenario:
                emu_extra += ["--scenario", a.scenario]
            seeds = rc.seeds_list(a.seeds, a.first_seed)
            wds = runner.eval_many(
                [(t, data, os.path.join(runs, f"{t}_{a.policy}_seed{s}.json"),
                  emu_extra + ["--seed", str(s)]) for s in seeds], a.jobs)
            b, bse = rc.metric(base, metric)
            ws = [rc.metric(wd, metric)[0] for wd in wds]
            agr = [wd.get("agreement") or {} for wd in wds]
            row = {
                "dataset": rc.TASK_LABELS[t], "task": t, "metric": metric,
                "items": base.get("items"), "seeds": len(wds),
                "topk": None if b is None else 100 * b,
                "topk_se": None if bse is None else 100 * bse,
                "agreement": rc.ci95([g.get("token_agreement") for g in agr])[0],
                "kl": rc.ci95([g.get("kl_mean") for g in agr])[0],
                "llama2_70b": rc.LLAMA2_70B.get(t),
            }
            row["wdmoe"], row["wdmoe_ci"] = rc.ci95([None if w is None else 100 * w for w in ws])
            row["delta"], row["delta_ci"] = rc.ci95(
                [None if (b is None or w is None) else 100 * (w - b) for w in ws])
            # multiple-choice scoring is prefill; GSM8K generation is decode
            ph = "decode" if t == "gsm8k" else "prefill"
            row["latency_ms"], row["latency_ms_ci"] = rc.ci95(
                [None if rc.phase(wd, ph).get("mean_s") is None else 1e3 * rc.phase(wd, ph)["mean_s"]
                 for wd in wds])
            rows.append(row)
    except rc.Interrupted:
        pass
    columns = [("dataset", "dataset", 0), ("metric", "metric", 0), ("items", "items", 0),
               ("topk", "top-k acc %", 2), ("topk_se", "± se", 2),
               ("wdmoe", f"{a.policy} acc %", 2),
               ("delta", "Δ (points)", 2), ("agreement", "token agreement", 4),
               ("kl", "KL(top-k‖policy)", 5), ("latency_ms", f"{a.policy} latency ms*", 3),
               ("llama2_70b", "Llama-2-70B % (published)", 1), ("seeds", "seeds", 0)]
    notes = [
        f"model: {a.model}; scenario: {a.scenario or 'default cell (one device per expert)'}; "
        f"policy: {a.policy}; limit: {a.limit or 'all'} items per task",
        "top-k: the model's own routing (Mixtral: top-2), no emulation; ± se: standard error "
        "as lm-evaluation-harness (sample stddev / sqrt(n) over items)",
        f"{a.policy}: over channel seeds {a.first_seed}..{a.first_seed + a.seeds - 1}, mean ± "
        "half-width of the 95 % CI over seeds (t-distribution): the channel's effect, not "
        "the items' sampling error",
        rc.LLAMA2_70B_SOURCE,
        "token agreement / KL: next-token distributions of the policy vs top-k on the same inputs",
        "* latency: multiple-choice scoring is prefill (time to score one item); GSM8K: time per "
        "output token (decode steps only)",
    ]
    if runner.stop:
        notes.append("interrupted: the rows above are the runs that completed")
    meta = {"model": a.model, "scenario": a.scenario, "policy": a.policy, "limit": a.limit,
            "mmlu_shots": a.mmlu_shots, "gsm8k_shots": a.gsm8k_shots}
    rc.write_tables(a.out, "accuracy", "Accuracy per dataset: top-k vs " + a.policy,
                    columns, rows, notes, meta)
    return 130 if runner.stop else 0


if __name__ == "__main__":
    sys.exit(main())
