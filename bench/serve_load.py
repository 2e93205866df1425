#!/usr/bin/env python3
"""Latency vs load of a cell with many users, per policy (the serving knee),
with 95 % confidence intervals over seeds (channel, arrivals), and the
energy-vs-latency trade-off.

    bench/serve_load.py [--model DIR] [--scenario FILE] [--policies topk,wdmoe,...]
                        [--rates 50,100,...] [--seeds 1,2,3] [--users 64]
                        [--max-new 32] [--slo-ms 2] [--micro-batches 1,2] [--out DIR]
    bench/serve_load.py --merge A/serve_load.json B/serve_load.json [--out DIR]

Each (policy, rate, seed) is one `wdmoe serve-cell` run (Poisson arrivals,
prompts from bench/prompts/story-openers.txt, continuous batching). Writes
DIR/serve_load.{csv,json,md} and DIR/serve_load.png (p95 TPOT vs arrival
rate per policy with CIs and the SLO line; energy per output token vs p95
TPOT). The load at which each policy's p95 TPOT crosses the SLO is linearly
interpolated between the measured rates. --micro-batches 1,2 runs every
point with the synchronous step and with 2 pipelined micro-batches (a series
per policy and M; dashed in the plot). --merge runs nothing: it writes the
outputs from the rows of earlier outputs made with the same model, scenario,
policies, rates, seeds, users, tokens and SLO, a later file's rows replacing
an earlier one's of the same M (e.g. the pipelined rows rerun after a change
of the pipelined step over an output of M = 1 and 2). Not part of the
tests.
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import plot_common  # noqa: E402

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs):
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, T95.get(n - 1, 1.96) * sd / math.sqrt(n)


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "wdmoe"))
    ap.add_argument("--model", default=os.path.join(ROOT, "weights/models/stories260k/moe4-top2"))
    ap.add_argument("--scenario", default=os.path.join(HERE, "scenarios/paper-cell.json"))
    ap.add_argument("--prompts", default=os.path.join(HERE, "prompts/story-openers.txt"))
    ap.add_argument("--policies", default="topk,wdmoe,wdmoe-straggler,wlr-drop,fastest,energy")
    ap.add_argument("--rates", default="2,5,10,20,40,80")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--max-new", type=int, default=32)
    ap.add_argument("--slo-ms", type=float, default=35.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--micro-batches", default="1",
                    help="comma list of pipelined micro-batches per step (1: synchronous)")
    ap.add_argument("--out", default="results/serve_load")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="no runs: the rows of these serve_load.json (later ones replace an M)")
    a = ap.parse_args()
    if a.merge:
        merge(a)
        return
    os.makedirs(a.out, exist_ok=True)
    policies = a.policies.split(",")
    rates = [float(r) for r in a.rates.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    mbs = [int(m) for m in a.micro_batches.split(",")]
    series = [(pol, mb) for mb in mbs for pol in policies]
    label = {(p, m): p if m == 1 else f"{p} M={m}" for p, m in series}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pol, mb in series:
            for rate in rates:
                runs = []
                for seed in seeds:
                    out = os.path.join(tmp, "r.json")
                    cmd = [a.bin, "serve-cell", "--model", a.model, "--scenario", a.scenario,
                           "--prompts", a.prompts, "--users", str(a.users), "--rate", str(rate),
                           "--max-new", str(a.max_new), "--policy", pol, "--seed", str(seed),
                           "--tpot-slo-ms", str(a.slo_ms), "--threads", str(a.threads),
                           "--micro-batches", str(mb), "--no-compare", "--json", out]
                    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True)
                    if r.returncode:
                        sys.exit(f"serve_load: {' '.join(cmd)} failed:\n{r.stderr}")
                    with open(out) as f:
                        runs.append(json.load(f))
                s = [x["summary"] for x in runs]
                row = {"policy": pol, "micro_batches": mb, "rate": rate, "seeds": len(seeds)}
                for name, get in [
                    ("tpot_p50_ms", lambda x: x["tpot"]["p50_s"] * 1e3),
                    ("tpot_p95_ms", lambda x: x["tpot"]["p95_s"] * 1e3),
                    ("ttft_p95_ms", lambda x: x["ttft"]["p95_s"] * 1e3),
                    ("goodput_tok_s", lambda x: x["goodput_tok_s"]),
                    ("mean_batch", lambda x: x["mean_batch_users"]),
                    ("jain", lambda x: x["jain_fairness"]),
                    ("mj_per_token", lambda x: x["energy_per_output_token_j"] * 1e3),
                ]:
                    m, h = ci([get(x) for x in s])
                    row[name], row[name + "_ci"] = m, h
                row["_p95"] = [x["tpot"]["p95_s"] for x in s]  # per seed, for the paired ratio
                row["experts_per_token"] = sum(
                    x["latency"]["decode"]["experts_per_token"] for x in runs) / len(runs)
                row["device_util_pct"] = sum(
                    sum(d["utilisation"] for d in x["devices"]) / len(x["devices"])
                    for x in runs) / len(runs) * 100
                row["device_queue_ms"] = sum(sum(d["queue_wait_s"] for d in x["devices"])
                                             for x in runs) / len(runs) * 1e3
                rows.append(row)
                print(f"{label[pol, mb]:9s} rate {rate:7.3f}/s  TPOT p95 {row['tpot_p95_ms']:.3f} "
                      f"+- {row['tpot_p95_ms_ci']:.3f} ms  {row['mj_per_token']:.2f} mJ/tok",
                      file=sys.stderr)
    # paired by seed (same channel, same arrivals): p95 TPOT relative to topk
    for r in rows:
        base = next((b for b in rows if b["policy"] == "topk" and b["rate"] == r["rate"]
                     and b["micro_batches"] == r["micro_batches"]), None)
        if base is None:
            r["p95_vs_topk"] = r["p95_vs_topk_ci"] = float("nan")
        else:
            r["p95_vs_topk"], r["p95_vs_topk_ci"] = ci(
                [x / y for x, y in zip(r["_p95"], base["_p95"])])
    for r in rows:
        del r["_p95"]
    write_outputs(a, rows, series, label, policies, rates, seeds)


def merge(a):
    rows, conf = [], None
    keys = ("model", "scenario", "prompts", "policies", "rates", "seeds", "users", "max_new",
            "slo_ms")
    for path in a.merge:
        with open(path) as f:
            d = json.load(f)
        c = {k: str(d["config"][k]) for k in keys}
        if conf is not None and c != conf:
            sys.exit(f"serve_load: {path}: made with another configuration than {a.merge[0]}")
        conf = c
        new = {r["micro_batches"] for r in d["rows"]}
        rows = [r for r in rows if r["micro_batches"] not in new] + d["rows"]
    for k in keys:
        setattr(a, k, type(getattr(a, k))(conf[k]) if k in ("users", "max_new", "slo_ms")
                else conf[k])
    a.micro_batches = ",".join(str(m) for m in sorted({r["micro_batches"] for r in rows}))
    a.bin = a.threads = None  # those of the merged runs: in their own outputs
    policies = a.policies.split(",")
    rates = [float(r) for r in a.rates.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    mbs = [int(m) for m in a.micro_batches.split(",")]
    series = [(pol, mb) for mb in mbs for pol in policies]
    label = {(p, m): p if m == 1 else f"{p} M={m}" for p, m in series}
    os.makedirs(a.out, exist_ok=True)
    write_outputs(a, rows, series, label, policies, rates, seeds)


def write_outputs(a, rows, series, label, policies, rates, seeds):
    # the load at which p95 TPOT crosses the SLO
    knee = {}
    for pol, mb in series:
        pts = [(r["rate"], r["tpot_p95_ms"]) for r in rows
               if r["policy"] == pol and r["micro_batches"] == mb]
        k = label[pol, mb]
        knee[k] = None
        for (r0, y0), (r1, y1) in zip(pts, pts[1:]):
            if y0 <= a.slo_ms < y1:
                knee[k] = r0 + (a.slo_ms - y0) * (r1 - r0) / (y1 - y0)
                break
        if pts and pts[0][1] > a.slo_ms:
            knee[k] = 0.0
    keys = list(rows[0].keys())
    csv_path = os.path.join(a.out, "serve_load.csv")
    with tempfile.NamedTemporaryFile("w", dir=a.out, delete=False, newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(f.name, csv_path)
    write_atomic(os.path.join(a.out, "serve_load.json"),
                 json.dumps({"config": vars(a), "rows": rows, "slo_crossing_rate": knee},
                            indent=1))
    md = ["| policy | M | rate /s | TPOT p50 ms | TPOT p95 ms (95 % CI) | p95 / topk (paired) "
          "| TTFT p95 ms | goodput tok/s | batch | exp/tok | device util % | device queue ms "
          "| mJ/token |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['policy']} | {r['micro_batches']} | {r['rate']:g} | "
                  f"{r['tpot_p50_ms']:.1f} | "
                  f"{r['tpot_p95_ms']:.1f} ± {r['tpot_p95_ms_ci']:.1f} | "
                  f"{r['p95_vs_topk']:.3f} ± {r['p95_vs_topk_ci']:.3f} | {r['ttft_p95_ms']:.0f} | "
                  f"{r['goodput_tok_s']:.2f} | {r['mean_batch']:.1f} | "
                  f"{r['experts_per_token']:.2f} | {r['device_util_pct']:.2f} | "
                  f"{r['device_queue_ms']:.0f} | {r['mj_per_token']:.0f} |")
    md.append("")
    md.append(f"Load at which p95 TPOT crosses {a.slo_ms:g} ms: " + ", ".join(
        f"{p} {'beyond the rates' if k is None else 'below the rates' if k == 0 else f'{k:.3g}/s'}"
        for p, k in knee.items()))
    # condensed (docs/serving.md): p95 TPOT per rate, the ranges over rates, the crossing
    def span(xs, f):
        lo, hi = f.format(min(xs)), f.format(max(xs))
        return lo if lo == hi else f"{lo}-{hi}"
    md += ["", "| policy | M | " + " | ".join(f"{r:g}/s" for r in rates)
           + " | p95 / topk | exp/tok | SLO crossed at |",
           "|---|---:|" + "---:|" * (len(rates) + 3)]
    for pol, mb in series:
        rs = [r for r in rows if r["policy"] == pol and r["micro_batches"] == mb]
        k = knee[label[pol, mb]]
        md.append(f"| {pol} | {mb} | " + " | ".join(
            f"{r['tpot_p95_ms']:.0f} ± {r['tpot_p95_ms_ci']:.0f}" for r in rs)
            + f" | {'1' if pol == 'topk' else span([r['p95_vs_topk'] for r in rs], '{:.2f}')}"
            + f" | {span([r['experts_per_token'] for r in rs], '{:.2f}')} | "
            + ("beyond" if k is None else "below" if k == 0 else f"{k:.2g}/s") + " |")
    write_atomic(os.path.join(a.out, "serve_load.md"), "\n".join(md) + "\n")
    print("\n".join(md))
    plt = plot_common.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {p: f"C{i}" for i, p in enumerate(policies)}
    for pol, mb in series:
        rs = [r for r in rows if r["policy"] == pol and r["micro_batches"] == mb]
        ls = "-" if mb == 1 else "--"
        ax[0].errorbar([r["rate"] for r in rs], [r["tpot_p95_ms"] for r in rs],
                       yerr=[r["tpot_p95_ms_ci"] for r in rs], marker="o", capsize=3, ls=ls,
                       color=colors[pol], label=label[pol, mb])
        ax[1].plot([r["tpot_p95_ms"] for r in rs], [r["mj_per_token"] for r in rs], marker="o",
                   ls=ls, color=colors[pol], label=label[pol, mb])
    if min(rates) > 0 and max(rates) / min(rates) >= 20:
        ax[0].set_xscale("log")
    ax[0].axhline(a.slo_ms, color="gray", ls="--", lw=1, label=f"SLO {a.slo_ms:g} ms")
    ax[0].set_xlabel("arrival rate (requests / s)")
    ax[0].set_ylabel("p95 time per output token (ms)")
    ax[0].set_title(f"{a.users} users, {a.max_new} tokens each, {len(seeds)} seeds (95 % CI)")
    ax[1].set_xlabel("p95 time per output token (ms)")
    ax[1].set_ylabel("energy per output token (mJ)")
    ax[1].set_title("energy vs latency (means; each point one arrival rate)")
    for x in ax:
        x.grid(alpha=0.3)
        x.legend()
    plot_common.save(fig, os.path.join(a.out, "serve_load.png"))


if __name__ == "__main__":
    main()
