#!/usr/bin/env python3
"""Paper experiment: accuracy against per-token latency, as Pareto curves over
policies and their parameters.

    bench/repro_pareto.py MODEL [--scenario FILE] [--task hellaswag --limit 100] [--out DIR]

For each point (top-k; wdmoe over gamma; wlr-drop and dynamic over theta;
fastest over m) a variant of the scenario with that policy block is written
to DIR/scenarios/ and evaluated with `wdmoe eval`: the accuracy of the task
and the emulated mean per-token latency of the same run. Points on the
Pareto frontier (no other point is both faster and at least as accurate)
are marked.

Writes DIR/pareto.{md,csv,json} (atomically) and DIR/pareto.png
(bench/plot_pareto.py, when matplotlib is available).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as rc  # noqa: E402


def points(a):
    pts = [("topk", {})]
    pts += [("wdmoe", {"gamma": g}) for g in a.gammas]
    pts += [("wlr-drop", {"theta": t}) for t in a.thetas]
    pts += [("dynamic", {"theta": t}) for t in a.thetas]
    pts += [("fastest", {"m": m}) for m in a.ms]
    return pts


def pareto(rows, acc_key):
    for r in rows:
        r["pareto"] = not any(
            o is not r and o["mean_ms"] is not None and r["mean_ms"] is not None and
            o[acc_key] is not None and r[acc_key] is not None and
            o["mean_ms"] <= r["mean_ms"] and o[acc_key] >= r[acc_key] and
            (o["mean_ms"] < r["mean_ms"] or o[acc_key] > r[acc_key])
            for o in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--scenario", default=rc.default_scenario())
    ap.add_argument("--task", default="hellaswag")
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--gammas", default="1.0,1.02,1.05,1.1,1.2,1.5,2.0")
    ap.add_argument("--thetas", default="0.1,0.2,0.3,0.4,0.5")
    ap.add_argument("--ms", default="2,3,4", help="fastest: candidates by weight")
    rc.seed_args(ap)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(rc.REPO, "bench", "results", "pareto"))
    ap.add_argument("--wdmoe", default=None)
    a = ap.parse_args()
    a.gammas = [float(x) for x in a.gammas.split(",") if x]
    a.thetas = [float(x) for x in a.thetas.split(",") if x]
    a.ms = [int(x) for x in a.ms.split(",") if x]
    if not a.scenario:
        sys.exit("repro_pareto: pass --scenario FILE")
    data = a.data or rc.dataset_path(rc.default_data_dir(), a.task)
    if not data:
        sys.exit(f"repro_pareto: no data for {a.task} (pass --data)")
    acc_key = rc.TASKS.get(a.task, ("", "acc"))[1]
    runner = rc.Runner(rc.find_wdmoe(a.wdmoe), a.model, a.threads)
    scen_dir = os.path.join(a.out, "scenarios")
    runs = os.path.join(a.out, "runs")
    os.makedirs(runs, exist_ok=True)
    extra = ["--quiet", "--limit", str(a.limit), "--agreement"]
    if a.task == "mmlu":
        extra += ["--shots", "0"]
    rows = []
    # multiple-choice scoring is prefill (one sample per item); generation: decode
    ph = "decode" if a.task == "gsm8k" else "prefill"
    lat_label = "TPOT ms (decode)" if ph == "decode" else "scoring ms/item (prefill)"
    seeds = rc.seeds_list(a.seeds, a.first_seed)
    jobs, keys, pts = [], [], points(a)
    for policy, params in pts:
        tag = policy + "".join(f"_{k}{v:g}" for k, v in params.items())
        doc = rc.load_scenario(a.scenario)
        block = doc.get("policy") if isinstance(doc.get("policy"), dict) else {}
        block = {k: v for k, v in block.items() if k in ("alpha", "dtheta", "gamma", "theta", "m")}
        block.update(params)
        block["name"] = policy
        doc["policy"] = block
        path = rc.write_scenario(doc, a.scenario, os.path.join(scen_dir, tag + ".json"))
        for s in seeds:
            jobs.append((a.task, data, os.path.join(runs, f"{tag}_seed{s}.json"),
                         extra + ["--scenario", path, "--seed", str(s)]))
            keys.append((tag, s))
    try:
        docs = dict(zip(keys, runner.eval_many(jobs, a.jobs)))
    except rc.Interrupted:
        docs = {k: rc.reuse(j[2]) for k, j in zip(keys, jobs)}
    for policy, params in pts:
        tag = policy + "".join(f"_{k}{v:g}" for k, v in params.items())
        per = [d for d in (docs.get((tag, s)) for s in seeds) if d is not None]
        if not per:
            continue
        lat = [rc.phase(d, ph) for d in per]
        agr = [d.get("agreement") or {} for d in per]
        row = {"policy": policy, "param": ", ".join(f"{k}={v:g}" for k, v in params.items()),
               "seeds": len(per)}
        row[acc_key], row[acc_key + "_ci"] = rc.ci95([rc.metric(d, acc_key)[0] for d in per])
        row["mean_ms"], row["mean_ms_ci"] = rc.ci95(
            [None if x.get("mean_s") is None else 1e3 * x["mean_s"] for x in lat])
        for col, key in (("experts_per_token", "experts_per_token"),
                         ("replaced", "experts_replaced"), ("dropped", "experts_dropped")):
            row[col] = rc.ci95([x.get(key) for x in lat])[0]
        row["agreement"] = rc.ci95([g.get("token_agreement", 1.0 if policy == "topk" else None)
                                    for g in agr])[0]
        row["kl"] = rc.ci95([g.get("kl_mean", 0.0 if policy == "topk" else None) for g in agr])[0]
        rows.append(row)
    pareto(rows, acc_key)
    base = next((r["mean_ms"] for r in rows if r["policy"] == "topk"), None)
    for r in rows:
        r["reduction_pct"] = (None if not base or r["mean_ms"] is None
                              else 100 * (1 - r["mean_ms"] / base))
    columns = [("policy", "policy", 0), ("param", "parameter", 0),
               (acc_key, f"{a.task} {acc_key}", 4),
               ("mean_ms", lat_label, 3), ("reduction_pct", "reduction vs top-k %", 1),
               ("experts_per_token", "experts/token", 3),
               ("replaced", "experts replaced (outage)", 0), ("dropped", "experts dropped", 0),
               ("agreement", "token agreement", 4),
               ("kl", "KL(top-k‖policy)", 5), ("pareto", "Pareto", 0), ("seeds", "seeds", 0)]
    notes = [f"model: {a.model}; scenario: {a.scenario}; task: {a.task}, {a.limit} items; "
             f"latency: {lat_label}; {len(seeds)} channel seeds, mean ± half-width of the 95 % "
             "CI (t-distribution); the frontier is taken on the means",
             "Pareto: no other point is both at most as slow and at least as accurate "
             "(and better in one)"]
    if runner.stop:
        notes.append("interrupted: the rows above are the runs that completed")
    rc.write_tables(a.out, "pareto", "Accuracy against latency", columns, rows, notes,
                    {"model": a.model, "scenario": a.scenario, "task": a.task,
                     "limit": a.limit, "metric": acc_key, "latency": lat_label, "seeds": seeds})
    rc.plot("plot_pareto.py", os.path.join(a.out, "pareto.json"),
            os.path.join(a.out, "pareto.png"))
    return 130 if runner.stop else 0


if __name__ == "__main__":
    sys.exit(main())
