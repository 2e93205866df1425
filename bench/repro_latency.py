#!/usr/bin/env python3
"""Paper experiment: latency and latency reduction against top-k for every
expert-selection policy, in one or more emulated cells, over several channel
seeds.

    bench/repro_latency.py MODEL [--scenario FILE ...] [--policies topk,wdmoe,...]
                           [--task gsm8k --limit 5] [--seeds 10] [--jobs N] [--out DIR]

Each (scenario, policy, seed) is one `wdmoe eval` run on the same inputs
(default: GSM8K 0-shot greedy generation). Two latencies, never mixed: the
time to first token (TTFT: the prompt's prefill, one sample per prompt) and
the time per output token (TPOT: decode steps only), with the TPOT breakdown
along the critical path (BS compute, downlink and uplink airtime, device
compute, air-interface overhead, straggler wait), the experts replaced on
outage and dropped by the policy, and the run's agreement / KL against top-k.
Every figure is the mean over the channel seeds with its 95 % confidence
interval (t-distribution); the reduction against top-k is paired by seed.
Runs go in parallel (--jobs) and a rerun reuses the finished ones in DIR/runs.

Writes DIR/latency.{md,csv,json} (atomically) and DIR/latency.png
(bench/plot_latency.py, when matplotlib is available).
"""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as rc  # noqa: E402

POLICIES = "topk,wdmoe,wdmoe-straggler,wlr-drop,dynamic,fastest"


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
    rc.seed_args(ap)
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
    seeds = rc.seeds_list(a.seeds, a.first_seed)
    acc_name = "exact_match" if a.task == "gsm8k" else (
        "ppl" if a.task == "perplexity" else rc.TASKS.get(a.task, ("", "acc"))[1])
    jobs, keys = [], []
    for sc in scenarios:
        name = os.path.splitext(os.path.basename(sc))[0]
        for p in policies:
            for s in seeds:
                jobs.append((a.task, data, os.path.join(runs, f"{name}_{p}_seed{s}.json"),
                             extra + ["--scenario", sc, "--policy", p, "--seed", str(s)]))
                keys.append((name, p, s))
    docs = {}
    try:
        for k, d in zip(keys, runner.eval_many(jobs, a.jobs)):
            docs[k] = d
    except rc.Interrupted:
        for k, j in zip(keys, jobs):
            d = rc.reuse(j[2])
            if d is not None:
                docs[k] = d
    parts = [("ttft_ms", "prefill", "mean_s"), ("tpot_ms", "decode", "mean_s"),
             ("tpot_p95_ms", "decode", "p95_s"), ("bs_ms", "decode", "bs_s"),
             ("downlink_ms", "decode", "downlink_s"), ("compute_ms", "decode", "device_compute_s"),
             ("uplink_ms", "decode", "uplink_s"), ("air_ms", "decode", "air_interface_s"),
             ("wait_ms", "decode", "straggler_wait_s")]
    rows = []
    for sc in scenarios:
        name = os.path.splitext(os.path.basename(sc))[0]
        for p in policies:
            per = [(s, docs.get((name, p, s))) for s in seeds]
            per = [(s, d) for s, d in per if d is not None]
            if not per:
                continue
            row = {"scenario": name, "policy": p, "seeds": len(per)}
            for col, ph, key in parts:
                v = [rc.phase(d, ph).get(key) for _, d in per]
                row[col], row[col + "_ci"] = rc.ci95([None if x is None else 1e3 * x for x in v])
            red = []
            for s, d in per:
                base = docs.get((name, "topk", s))
                t, b = rc.phase(d, "decode").get("mean_s"), base and rc.phase(base, "decode").get(
                    "mean_s")
                red.append(100 * (1 - t / b) if t is not None and b else None)
            row["reduction_pct"], row["reduction_pct_ci"] = rc.ci95(red)
            for col, key in (("experts_per_token", "experts_per_token"),
                             ("replaced", "experts_replaced"), ("dropped", "experts_dropped"),
                             ("nonstraggler", "experts_dropped_nonstraggler")):
                row[col], row[col + "_ci"] = rc.ci95([rc.phase(d, "decode").get(key)
                                                      for _, d in per])
            agr = [(d.get("agreement") or {}) for _, d in per]
            row["agreement"] = rc.ci95([g.get("token_agreement", 1.0 if p == "topk" else None)
                                        for g in agr])[0]
            row["kl"] = rc.ci95([g.get("kl_mean", 0.0 if p == "topk" else None) for g in agr])[0]
            row[acc_name] = rc.ci95([rc.metric(d, acc_name)[0] for _, d in per])[0]
            row["tokens"] = sum(rc.phase(d, "decode").get("tokens") or 0 for _, d in per)
            rows.append(row)
    columns = [("scenario", "scenario", 0), ("policy", "policy", 0),
               ("ttft_ms", "TTFT ms (prefill)", 3), ("tpot_ms", "TPOT ms (decode)", 3),
               ("tpot_p95_ms", "TPOT p95", 3), ("reduction_pct", "TPOT reduction vs top-k %", 1),
               ("bs_ms", "BS", 3), ("downlink_ms", "downlink", 3),
               ("compute_ms", "device compute", 3), ("uplink_ms", "uplink", 3),
               ("air_ms", "air interface", 3), ("wait_ms", "straggler wait", 3),
               ("experts_per_token", "experts/token", 3),
               ("replaced", "experts replaced (outage)", 1),
               ("dropped", "experts dropped", 1),
               ("nonstraggler", "dropped, not the straggler", 1),
               ("agreement", "token agreement", 4),
               ("kl", "KL(top-k‖policy)", 5), (acc_name, a.task + " " + acc_name, 4),
               ("seeds", "seeds", 0), ("tokens", "decode tokens", 0)]
    notes = [f"model: {a.model}; task: {a.task}, {a.limit} items; channel seeds "
             f"{seeds[0]}..{seeds[-1]} ({len(seeds)}); mean ± half-width of the 95 % confidence "
             "interval over seeds (t-distribution)",
             "TTFT: the prompt's prefill (one sample per prompt); TPOT: decode steps only; the "
             "two are never averaged together. Breakdown of TPOT along the critical path: BS + "
             "downlink + device compute + uplink + air interface = TPOT; straggler wait: how "
             "long the other selected devices wait for the slowest",
             "reduction: 1 - TPOT / TPOT(top-k) per seed, then mean ± CI",
             "experts replaced: per decode run, top-k experts on unreachable devices replaced "
             "by the next most probable reachable one; dropped: top-k slots left empty; not "
             "the straggler: dropped experts whose predicted latency was below the step's "
             "slowest top-k expert (the drop set no wait)"]
    if runner.stop:
        notes.append("interrupted: the rows above are the runs that completed")
    rc.write_tables(a.out, "latency", "Latency by policy: TTFT and TPOT", columns, rows, notes,
                    {"model": a.model, "task": a.task, "limit": a.limit, "seeds": seeds,
                     "scenarios": scenarios, "policies": policies})
    rc.plot("plot_latency.py", os.path.join(a.out, "latency.json"),
            os.path.join(a.out, "latency.png"))
    return 130 if runner.stop else 0


if __name__ == "__main__":
    sys.exit(main())
