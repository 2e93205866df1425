#!/usr/bin/env python3
"""Time per output token (decode) against bandwidth or distance, one line per
policy with the 95 % CI over channel seeds as error bars, from
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
    rows = [r for r in doc["rows"] if r.get("tpot_ms") is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r[xkey], r["tpot_ms"], r.get("tpot_ms_ci") or 0.0) for r in rows
                     if r["policy"] == policy)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    marker="o", ms=4, capsize=3, label=policy)
    if xkey in ("bandwidth_mhz", "distance_scale", "devices"):
        ax.set_xscale("log")
        xs = sorted({r[xkey] for r in rows})
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel({"bandwidth_mhz": "total bandwidth (MHz)",
                   "distance_scale": "device distance (x base)",
                   "devices": "number of devices",
                   "orin_share": "share of Jetson AGX Orin devices (rest: phones)",
                   "ue_tx_power_dbm": "device transmit power (dBm)"}.get(xkey, xkey))
    ax.set_ylabel("TPOT, decode (ms, emulated)")
    if xkey == "distance_scale":
        snr = {}
        for r in rows:
            if r.get("mean_snr_db") is not None:
                snr[r[xkey]] = r["mean_snr_db"]
        if snr:
            sec = ax.secondary_xaxis("top")
            sec.set_xticks(sorted(snr))
            sec.set_xticklabels([f"{snr[k]:.0f} dB" for k in sorted(snr)], fontsize=7)
            sec.minorticks_off()  # the log scale's minor labels would overlap these
            sec.set_xlabel("mean SNR")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    meta = doc.get("meta") or {}
    fig.text(0.0, -0.04,
             f"model: {pc.model_label(meta)}; scenario: "
             f"{os.path.basename(str(meta.get('scenario', '?')))}; "
             f"{len(meta.get('seeds') or [])} channel seeds; error bars: 95 % CI of the mean (t)",
             fontsize=7, ha="left", va="top")
    pc.save(fig, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
