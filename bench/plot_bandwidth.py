#!/usr/bin/env python3
"""Latency against bandwidth or distance, one line per policy, from
bench/repro_bandwidth.py's bandwidth.json / distance.json.

    bench/plot_bandwidth.py bandwidth.json bandwidth.png
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
    xkey = doc["columns"][0]
    rows = [r for r in doc["rows"] if r.get("mean_ms") is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r[xkey], r["mean_ms"]) for r in rows if r["policy"] == policy)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel({"bandwidth_mhz": "total bandwidth (MHz)",
                   "distance_scale": "device distance (x base)"}.get(xkey, xkey))
    ax.set_ylabel("mean per-token latency (ms, emulated)")
    if xkey == "distance_scale":
        snr = {}
        for r in rows:
            if r.get("mean_snr_db") is not None:
                snr[r[xkey]] = r["mean_snr_db"]
        if snr:
            sec = ax.secondary_xaxis("top")
            sec.set_xticks(sorted(snr))
            sec.set_xticklabels([f"{snr[k]:.0f} dB" for k in sorted(snr)], fontsize=7)
            sec.set_xlabel("mean SNR")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    pc.save(fig, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
