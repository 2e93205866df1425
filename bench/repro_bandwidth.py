#!/usr/bin/env python3
"""Paper experiment: latency against the radio: total bandwidth, and device
distance (with the resulting SNR), for top-k and the latency-aware policies.

    bench/repro_bandwidth.py MODEL [--scenario FILE] [--bandwidths 5,10,20,50,100]
                             [--distance-scales 0.25,0.5,1,2,4] [--out DIR]

Variants of the base scenario (default bench/scenarios/paper-cell.json) are
written to DIR/scenarios/: downlink and uplink bandwidth set to each value
(MHz); every device's distance multiplied by each scale. The SNR column is
the mean over devices of the Shannon-equivalent full-band SNR of the
emulator's own channel, 2^(mean rate / bandwidth) - 1, sampled with
`wdmoe trace` (left empty when that command is absent).

Writes DIR/bandwidth.{md,csv,json}, DIR/distance.{md,csv,json} (atomically)
and PNGs (bench/plot_bandwidth.py, when matplotlib is available).
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as rc  # noqa: E402


def floats(s):
    return [float(x) for x in s.split(",") if x]


def mean_snr_db(runner, scen_path, radio, tmp_csv):
    rates = runner.trace(scen_path, tmp_csv, duration=0.5)
    if not rates:
        return None, None
    bw_dl = radio.get("downlink_bandwidth_mhz", 100) * 1e6
    bw_ul = radio.get("uplink_bandwidth_mhz", 100) * 1e6
    snr = []
    for dl, ul in rates.values():
        for r, b in ((dl, bw_dl), (ul, bw_ul)):
            s = 2 ** (r / b) - 1
            snr.append(10 * math.log10(s) if s > 0 else -float("inf"))
    finite = [s for s in snr if math.isfinite(s)]
    mean_rate = sum(dl + ul for dl, ul in rates.values()) / (2 * len(rates))
    return (sum(finite) / len(finite) if finite else None), mean_rate / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--scenario", default=rc.default_scenario())
    ap.add_argument("--bandwidths", default="5,10,20,50,100", help="MHz, comma-separated")
    ap.add_argument("--distance-scales", default="0.25,0.5,1,2,4")
    ap.add_argument("--policies", default="topk,wdmoe")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(rc.REPO, "bench", "results", "bandwidth"))
    ap.add_argument("--wdmoe", default=None)
    a = ap.parse_args()
    if not a.scenario:
        sys.exit("repro_bandwidth: pass --scenario FILE")
    data = a.data or rc.dataset_path(rc.default_data_dir(), a.task)
    if not data:
        sys.exit(f"repro_bandwidth: no data for {a.task} (pass --data)")
    base = rc.load_scenario(a.scenario)
    policies = [p for p in a.policies.split(",") if p]
    runner = rc.Runner(rc.find_wdmoe(a.wdmoe), a.model, a.threads)
    scen_dir = os.path.join(a.out, "scenarios")
    runs = os.path.join(a.out, "runs")
    os.makedirs(runs, exist_ok=True)
    extra = ["--quiet", "--limit", str(a.limit), "--no-agreement"]
    if a.task in ("gsm8k", "mmlu"):
        extra += ["--shots", "0"]
    if a.task == "gsm8k":
        extra += ["--max-new-tokens", str(a.max_new_tokens)]

    def sweep(kind, values, make):
        rows = []
        for v in values:
            doc = make(v)
            path = rc.write_scenario(doc, a.scenario, os.path.join(scen_dir, f"{kind}_{v:g}.json"))
            snr, rate = mean_snr_db(runner, path, doc.get("radio", {}),
                                    os.path.join(scen_dir, f"{kind}_{v:g}_trace.csv"))
            base_mean = None
            for p in policies:
                res = runner.eval(a.task, data, os.path.join(runs, f"{kind}_{v:g}_{p}.json"),
                                  extra + ["--scenario", path, "--policy", p])
                lat = rc.latency(res)
                mean = lat.get("latency_mean_s")
                if p == policies[0]:
                    base_mean = mean
                rows.append({
                    kind: v, "policy": p,
                    "mean_ms": None if mean is None else 1e3 * mean,
                    "p95_ms": None if lat.get("latency_p95_s") is None else 1e3 * lat["latency_p95_s"],
                    "reduction_pct": (None if not base_mean or mean is None
                                      else 100 * (1 - mean / base_mean)),
                    "experts_per_token": lat.get("experts_per_token"),
                    "mean_snr_db": snr, "mean_rate_mbps": rate,
                })
        return rows

    def with_bandwidth(mhz):
        d = rc.load_scenario(a.scenario)
        r = d.setdefault("radio", {})
        r["downlink_bandwidth_mhz"] = mhz
        r["uplink_bandwidth_mhz"] = mhz
        return d

    def with_distance(scale):
        d = rc.load_scenario(a.scenario)
        devs = list(d.get("devices", [])) + ([d["device_defaults"]] if "device_defaults" in d else [])
        for dev in devs:
            if "distance_m" in dev:
                dev["distance_m"] = dev["distance_m"] * scale
            if "position_m" in dev:
                dev["position_m"] = [x * scale for x in dev["position_m"]]
        return d

    bw_rows, dist_rows = [], []
    try:
        bw_rows = sweep("bandwidth_mhz", floats(a.bandwidths), with_bandwidth)
        dist_rows = sweep("distance_scale", floats(a.distance_scales), with_distance)
    except rc.Interrupted:
        pass
    common = [("policy", "policy", 0), ("mean_ms", "mean ms/token", 3), ("p95_ms", "p95", 3),
              ("reduction_pct", f"reduction vs {policies[0]} %", 1),
              ("experts_per_token", "experts/token", 3), ("mean_snr_db", "mean SNR dB", 1),
              ("mean_rate_mbps", "mean rate Mbit/s", 1)]
    notes = [f"model: {a.model}; base scenario: {a.scenario}; task: {a.task}, {a.limit} items",
             "SNR: Shannon-equivalent of the emulated channel's mean full-band rate, "
             "averaged over devices and both directions"]
    if runner.stop:
        notes.append("interrupted: the rows above are the runs that completed")
    distances = [dev.get("distance_m") for dev in base.get("devices", [])]
    rc.write_tables(a.out, "bandwidth", "Latency against total bandwidth",
                    [("bandwidth_mhz", "bandwidth MHz", 0)] + common, bw_rows, notes,
                    {"scenario": a.scenario, "policies": policies})
    rc.write_tables(a.out, "distance", "Latency against device distance",
                    [("distance_scale", "distance x", 2)] + common, dist_rows,
                    notes + [f"base distances (m): {distances}"],
                    {"scenario": a.scenario, "policies": policies})
    rc.plot("plot_bandwidth.py", os.path.join(a.out, "bandwidth.json"),
            os.path.join(a.out, "bandwidth.png"))
    rc.plot("plot_bandwidth.py", os.path.join(a.out, "distance.json"),
            os.path.join(a.out, "distance.png"))
    return 130 if runner.stop else 0


if __name__ == "__main__":
    sys.exit(main())
