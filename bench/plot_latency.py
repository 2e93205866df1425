#!/usr/bin/env python3
"""Time per output token (decode) by policy and scenario, stacked breakdown with
the 95 % confidence interval over channel seeds as error bars, and the time to
first token (prefill) beside it, from bench/repro_latency.py's latency.json.

    bench/plot_latency.py latency.json latency.png
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
    rows = [r for r in doc["rows"] if r.get("tpot_ms") is not None]
    if not rows:
        print("plot_latency: no rows with a TPOT", file=sys.stderr)
        return 1
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    n = len(scenarios)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n + 1.5, 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]})
    parts = [("bs_ms", "BS compute"), ("downlink_ms", "downlink airtime"),
             ("compute_ms", "device compute"), ("uplink_ms", "uplink airtime"),
             ("air_ms", "air-interface overhead")]
    colors = ["0.6", "tab:blue", "tab:orange", "tab:green", "tab:red"]
    for j, sc in enumerate(scenarios):
        rs = [r for r in rows if r["scenario"] == sc]
        x = list(range(len(rs)))
        ax = axes[0][j]
        bottom = [0.0] * len(rs)
        for (key, label), c in zip(parts, colors):
            v = [r.get(key) or 0.0 for r in rs]
            ax.bar(x, v, bottom=bottom, label=label, color=c, width=0.7)
            bottom = [b + y for b, y in zip(bottom, v)]
        ax.errorbar(x, [r["tpot_ms"] for r in rs], yerr=[r.get("tpot_ms_ci") or 0 for r in rs],
                    fmt="none", ecolor="k", capsize=3, lw=1)
        top = max(r["tpot_ms"] + (r.get("tpot_ms_ci") or 0) for r in rs)
        for i, r in enumerate(rs):
            red = r.get("reduction_pct")
            if red is not None and r["policy"] != "topk":
                ax.annotate(f"{-red:+.1f}%", (i, r["tpot_ms"] + (r.get("tpot_ms_ci") or 0)),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7)
        ax.set_ylim(0, top * 1.15)
        ax.set_xticks(x)
        ax.set_xticklabels([])
        ax.set_title(sc, fontsize=9)
        if j == 0:
            ax.set_ylabel("TPOT, decode (ms)")
        ax.grid(axis="y", alpha=0.3)
        bx = axes[1][j]
        tt = [r.get("ttft_ms") or 0.0 for r in rs]
        bx.bar(x, tt, color="tab:purple", width=0.7)
        bx.errorbar(x, tt, yerr=[r.get("ttft_ms_ci") or 0 for r in rs], fmt="none", ecolor="k",
                    capsize=3, lw=1)
        bx.set_ylim(bottom=0)
        bx.set_xticks(x)
        bx.set_xticklabels([r["policy"] for r in rs], rotation=35, ha="right", fontsize=8)
        if j == 0:
            bx.set_ylabel("TTFT, prefill (ms)")
        bx.grid(axis="y", alpha=0.3)
    h, lab = axes[0][0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False)
    meta = doc.get("meta") or {}
    seeds = meta.get("seeds") or []
    fig.text(0.0, -0.02,
             f"model: {pc.model_label(meta)}; task "
             f"{meta.get('task', '?')}; {len(seeds)} channel seeds; bars: mean, error bars: 95 % "
             "CI of the mean (t); labels: TPOT change vs top-k",
             fontsize=7, ha="left", va="top")
    fig.tight_layout()
    pc.save(fig, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
