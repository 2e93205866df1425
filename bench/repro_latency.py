#!/usr/bin/env python3
"""Paper experiment: per-token latency and latency reduction against top-k,
for every expert-selection policy, in one or more emulated cells.

    bench/repro_latency.py MODEL [--scenario FILE ...] [--policies topk,wdmoe,...]
                           [--task gsm8k --limit 5] [--out DIR]

Each (scenario, policy) pair is one `wdmoe eval` run on the same inputs
(default: GSM8K 0-shot greedy generation, so most forwards are decode
steps); the emulator's virtual clock gives the per-token latency statistics
(mean, p50/p95/p99, breakdown), and the run's agreement / KL against top-k
says what the latency costs in quality.

Writes DIR/latency.{md,csv,json} (atomically) and DIR/latency.png
(bench/plot_latency.py, when matplotlib is available).
"""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as rc  # noqa: E402

POLICIES = "topk,wdmoe,wlr-drop,dynamic,fastest"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--scenario", action="append", default=None,
                    help="scenario JSON (repeatable; default: every bench/scenarios/*.json)")
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--data", default=None, help="data for --task (default: the shipped set)")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(rc.REPO, "bench", "results", "latency"))
    ap.add_argument("--wdmoe", default=None)
    a = ap.parse_args()

    scenarios = a.scenario or sorted(glob.glob(os.path.join(rc.REPO, "bench", "scenarios",
                                                            "*.json")))
    if not scenarios:
        sys.exit("repro_latency: no scenarios (pass --scenario FILE)")
    data = a.data or rc.dataset_path(rc.default_data_dir(), a.task)
    if not data:
        sys.exit(f"repro_latency: no data for {a.task} (pass --data)")
    policies = [p for p in a.policies.split(",") if p]
    runner = rc.Runner(rc.find_wdmoe(a.wdmoe), a.model, a.threads)
    runs = os.path.join(a.out, "runs")
    os.makedirs(runs, exist_ok=True)
    extra = ["--quiet", "--limit", str(a.limit), "--agreement"]
    if a.task in ("gsm8k", "mmlu"):
        extra += ["--shots", str(a.shots)]
    if a.task == "gsm8k":
        extra += ["--max-new-tokens", str(a.max_new_tokens)]
    if a.seed is not None:
        extra += ["--seed", str(a.seed)]
    rows = []
    try:
        for sc in scenarios:
            name = os.path.splitext(os.path.basename(sc))[0]
            base_mean = None
            for p in policies:
                doc = runner.eval(a.task, data, os.path.join(runs, f"{name}_{p}.json"),
                                  extra + ["--scenario", sc, "--policy", p])
                lat = rc.latency(doc)
                mean = lat.get("latency_mean_s")
                if p == "topk":
                    base_mean = mean
                agr = doc.get("agreement") or {}
                acc_name = "exact_match" if a.task == "gsm8k" else (
                    "ppl" if a.task == "perplexity" else rc.TASKS.get(a.task, ("", "acc"))[1])
                acc, _ = rc.metric(doc, acc_name)
                ms = lambda k: None if lat.get(k) is None else 1e3 * lat[k]  # noqa: E731
                rows.append({
                    "scenario": name, "policy": p,
                    "mean_ms": ms("latency_mean_s"), "p50_ms": ms("latency_p50_s"),
                    "p95_ms": ms("latency_p95_s"), "p99_ms": ms("latency_p99_s"),
                    "reduction_pct": (None if (base_mean is None or mean is None or not base_mean)
                                      else 100 * (1 - mean / base_mean)),
                    "downlink_ms": ms("downlink_s"), "compute_ms": ms("device_compute_s"),
                    "uplink_ms": ms("uplink_s"), "wait_ms": ms("straggler_wait_s"),
                    "experts_per_token": lat.get("experts_per_token"),
                    "tokens": lat.get("tokens"),
                    "agreement": agr.get("token_agreement", 1.0 if p == "topk" else None),
                    "kl": agr.get("kl_mean", 0.0 if p == "topk" else None),
                    acc_name: acc,
                })
    except rc.Interrupted:
        pass
    acc_name = "exact_match" if a.task == "gsm8k" else (
        "ppl" if a.task == "perplexity" else rc.TASKS.get(a.task, ("", "acc"))[1])
    columns = [("scenario", "scenario", 0), ("policy", "policy", 0),
               ("mean_ms", "mean ms/token", 3), ("p50_ms", "p50", 3), ("p95_ms", "p95", 3),
               ("p99_ms", "p99", 3), ("reduction_pct", "reduction vs top-k %", 1),
               ("downlink_ms", "downlink", 3), ("compute_ms", "device compute", 3),
               ("uplink_ms", "uplink", 3), ("wait_ms", "straggler wait", 3),
               ("experts_per_token", "experts/token", 3), ("agreement", "token agreement", 4),
               ("kl", "KL(top-k‖policy)", 5), (acc_name, a.task + " " + acc_name, 4),
               ("tokens", "tokens", 0)]
    notes = [f"model: {a.model}; task: {a.task}, {a.limit} items; latency from the emulator's "
             "virtual clock (per token: BS compute + the slowest selected device's downlink, "
             "compute and uplink, summed over layers)",
             "reduction: 1 - mean / mean(top-k) in the same scenario"]
    if runner.stop:
        notes.append("interrupted: the rows above are the runs that completed")
    rc.write_tables(a.out, "latency", "Per-token latency by policy", columns, rows, notes,
                    {"model": a.model, "task": a.task, "limit": a.limit,
                     "scenarios": scenarios, "policies": policies})
    rc.plot("plot_latency.py", os.path.join(a.out, "latency.json"),
            os.path.join(a.out, "latency.png"))
    return 130 if runner.stop else 0


if __name__ == "__main__":
    sys.exit(main())
