#!/usr/bin/env python3
"""Accuracy-vs-latency Pareto curves from bench/repro_pareto.py's pareto.json.

    bench/plot_pareto.py pareto.json pareto.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_common as pc  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    doc = pc.load(sys.argv[1])
    plt = pc.pyplot()
    if plt is None:
        return 1
    metric = (doc.get("meta") or {}).get("metric", "acc")
    rows = [r for r in doc["rows"] if r.get("mean_ms") is not None and r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = {"topk": "*", "wdmoe": "o", "wlr-drop": "s", "dynamic": "^", "fastest": "D"}
    markers["wdmoe-straggler"] = "v"
    for policy in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r["mean_ms"], 100 * r[metric], r.get("mean_ms_ci") or 0.0,
                      100 * (r.get(metric + "_ci") or 0.0)) for r in rows if r["policy"] == policy)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], xerr=[p[2] for p in pts],
                    yerr=[p[3] for p in pts], marker=markers.get(policy, "o"),
                    ms=9 if policy == "topk" else 5, lw=1, capsize=2, label=policy)
    front = sorted((r["mean_ms"], 100 * r[metric]) for r in rows if r.get("pareto"))
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k",
                lw=1.5, ls="--", label="Pareto frontier")
    meta = doc.get("meta") or {}
    ax.set_xlabel((doc.get("meta") or {}).get("latency", "latency (ms)") + ", emulated")
    ax.set_ylabel(f"{meta.get('task', '')} {metric} (%)")
    ax.set_title(f"Accuracy vs latency: {os.path.basename(str(meta.get('scenario', '')))}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    bars = ("error bars: 95 % CI of the mean (t)" if not meta.get("items") else
            f"{meta['items']} items (accuracy: ± 1.96 standard errors over items, one channel "
            "seed); latency: 95 % CI of the mean over seeds (t)")
    fig.text(0.0, -0.04,
             f"model: {pc.model_label(meta)}; {len(meta.get('seeds') or [])} channel seeds; "
             + bars, fontsize=7, ha="left", va="top")
    pc.save(fig, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
