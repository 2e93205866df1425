#!/usr/bin/env python3
"""Per-token latency by policy and scenario (stacked breakdown) from
bench/repro_latency.py's latency.json.

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
    rows = [r for r in doc["rows"] if r.get("mean_ms") is not None]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(scenarios)), figsize=(4.2 * max(1, len(scenarios)), 4),
                             squeeze=False)
    parts = [("downlink_ms", "downlink"), ("compute_ms", "device compute"), ("uplink_ms", "uplink")]
    for ax, sc in zip(axes[0], scenarios):
        rs = [r for r in rows if r["scenario"] == sc]
        x = range(len(rs))
        bottom = [0.0] * len(rs)
        for key, label in parts:
            v = [r.get(key) or 0.0 for r in rs]
            ax.bar(x, v, bottom=bottom, label=label)
            bottom = [b + y for b, y in zip(bottom, v)]
        rest = [max(0.0, r["mean_ms"] - b) for r, b in zip(rs, bottom)]
        ax.bar(x, rest, bottom=bottom, label="BS", color="0.7")
        for i, r in enumerate(rs):
            red = r.get("reduction_pct")
            if red is not None and r["policy"] != "topk":
                ax.annotate(f"{-red:+.0f}%" if abs(red) >= 0.5 else "±0%", (i, r["mean_ms"]),
                            ha="center", va="bottom",
                            fontsize=8)
        ax.set_xticks(list(x))
        ax.set_xticklabels([r["policy"] for r in rs], rotation=30, ha="right")
        ax.set_title(sc, fontsize=10)
        ax.set_ylabel("ms per token (emulated)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    pc.save(fig, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
