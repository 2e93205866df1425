#!/usr/bin/env python3
"""Paper experiment: latency against the radio and the cell: total bandwidth,
device distance (with the resulting SNR), number of devices, device mix and
device transmit power, for top-k and the latency-aware policies.

    bench/repro_bandwidth.py MODEL [--scenario FILE] [--bandwidths 5,10,20,50,100]
                             [--distance-scales 0.25,0.5,1,2,4] [--devices 4,8,16,32]
                             [--orin-shares 0,0.25,0.5,0.75,1] [--tx-powers 10,17,23,26]
                             [--sweeps bandwidth,distance,devices,mix,power] [--out DIR]

Number of devices: n devices 50 .. 500 m from the BS (evenly spread), the base
scenario's profiles in turn; experts are placed on them by the default rule
(several per device when there are fewer devices than experts, replicas when
there are more). Device mix: the share of Jetson AGX Orin devices, the rest
phones (the Orins the farthest). Transmit power: every device's uplink power
(dBm).

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


# Scenario variants of the sweeps: each takes the base scenario's path and the
# x value and returns the variant document (bench/repro_smollm2.py uses them too).
def with_bandwidth(path, mhz):
    d = rc.load_scenario(path)
    r = d.setdefault("radio", {})
    r["downlink_bandwidth_mhz"] = mhz
    r["uplink_bandwidth_mhz"] = mhz
    return d

def with_distance(path, scale):
    d = rc.load_scenario(path)
    devs = list(d.get("devices", [])) + ([d["device_defaults"]] if "device_defaults" in d else [])
    for dev in devs:
        if "distance_m" in dev:
            dev["distance_m"] = dev["distance_m"] * scale
        if "position_m" in dev:
            dev["position_m"] = [x * scale for x in dev["position_m"]]
    return d

def with_devices(path, n):
    d = rc.load_scenario(path)
    base_devs = d.get("devices") or [{}]
    n = int(n)
    d["devices"] = []
    for i in range(n):
        dev = {k: v for k, v in base_devs[i % len(base_devs)].items()
               if k in ("profile", "downlink", "uplink", "los", "speed_mps")}
        dev["name"] = f"dev{i}"
        dev["distance_m"] = 50 + (450 * i / (n - 1) if n > 1 else 0)
        d["devices"].append(dev)
    d.pop("device_count", None)
    return d

def with_mix(path, share):
    d = rc.load_scenario(path)
    devs = d.get("devices") or []
    n_orin = round(share * len(devs))
    order = sorted(range(len(devs)), key=lambda i: devs[i].get("distance_m", 0))
    for rank, i in enumerate(order):
        devs[i]["profile"] = "jetson-agx-orin" if rank >= len(devs) - n_orin else "phone"
    return d

def with_power(path, dbm):
    d = rc.load_scenario(path)
    d.setdefault("radio", {})["ue_tx_power_dbm"] = dbm
    return d


SWEEPS = {"bandwidth": ("bandwidth_mhz", with_bandwidth, "bandwidth MHz",
                         "Latency against total bandwidth"),
          "distance": ("distance_scale", with_distance, "distance x",
                        "Latency against device distance"),
          "devices": ("devices", with_devices, "devices", "Latency against the number of devices"),
          "mix": ("orin_share", with_mix, "share of AGX Orin",
                  "Latency against the device mix (phones .. Jetson AGX Orin)"),
          "power": ("ue_tx_power_dbm", with_power, "UE power dBm",
                    "Latency against device transmit power")}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--scenario", default=rc.default_scenario())
    ap.add_argument("--bandwidths", default="5,10,20,50,100", help="MHz, comma-separated")
    ap.add_argument("--distance-scales", default="0.25,0.5,1,2,4")
    ap.add_argument("--devices", default="4,8,16,32")
    ap.add_argument("--orin-shares", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--tx-powers", default="10,17,23,26", help="device uplink power, dBm")
    ap.add_argument("--sweeps", default="bandwidth,distance,devices,mix,power")
    ap.add_argument("--policies", default="topk,wdmoe")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    rc.seed_args(ap)
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

    seeds = rc.seeds_list(a.seeds, a.first_seed)

    def sweep(kind, values, make):
        jobs, keys, info = [], [], {}
        for v in values:
            doc = make(a.scenario, v)
            path = rc.write_scenario(doc, a.scenario, os.path.join(scen_dir, f"{kind}_{v:g}.json"))
            info[v] = mean_snr_db(runner, path, doc.get("radio", {}),
                                  os.path.join(scen_dir, f"{kind}_{v:g}_trace.csv"))
            for p in policies:
                for s in seeds:
                    jobs.append((a.task, data, os.path.join(runs, f"{kind}_{v:g}_{p}_seed{s}.json"),
                                 extra + ["--scenario", path, "--policy", p, "--seed", str(s)]))
                    keys.append((v, p, s))
        try:
            docs = dict(zip(keys, runner.eval_many(jobs, a.jobs)))
        except rc.Interrupted:
            docs = {k: rc.reuse(j[2]) for k, j in zip(keys, jobs)}
        rows = []
        for v in values:
            for p in policies:
                per = [(s, docs.get((v, p, s))) for s in seeds]
                per = [(s, d) for s, d in per if d is not None]
                if not per:
                    continue
                tpot = [rc.phase(d, "decode").get("mean_s") for _, d in per]
                red = []
                for (s, d), t in zip(per, tpot):
                    b = docs.get((v, policies[0], s))
                    b = b and rc.phase(b, "decode").get("mean_s")
                    red.append(100 * (1 - t / b) if t is not None and b else None)
                row = {kind: v, "policy": p, "seeds": len(per),
                       "mean_snr_db": info[v][0], "mean_rate_mbps": info[v][1]}
                row["tpot_ms"], row["tpot_ms_ci"] = rc.ci95([None if t is None else 1e3 * t
                                                            for t in tpot])
                row["ttft_ms"], row["ttft_ms_ci"] = rc.ci95(
                    [None if rc.phase(d, "prefill").get("mean_s") is None
                     else 1e3 * rc.phase(d, "prefill")["mean_s"] for _, d in per])
                row["air_ms"], row["air_ms_ci"] = rc.ci95(
                    [None if rc.phase(d, "decode").get("air_interface_s") is None
                     else 1e3 * rc.phase(d, "decode")["air_interface_s"] for _, d in per])
                row["reduction_pct"], row["reduction_pct_ci"] = rc.ci95(red)
                for col, key in (("experts_per_token", "experts_per_token"),
                                 ("replaced", "experts_replaced"), ("dropped", "experts_dropped")):
                    row[col], row[col + "_ci"] = rc.ci95([rc.phase(d, "decode").get(key)
                                                          for _, d in per])
                rows.append(row)
        return rows

    sweeps = [s for s in a.sweeps.split(",") if s]
    values = {"bandwidth": a.bandwidths, "distance": a.distance_scales, "devices": a.devices,
              "mix": a.orin_shares, "power": a.tx_powers}
    table = {k: (kind, floats(values[k]), make, head, title)
             for k, (kind, make, head, title) in SWEEPS.items()}
    for s in sweeps:
        if s not in table:
            sys.exit(f"repro_bandwidth: unknown sweep {s} (one of {', '.join(table)})")
    results = {}
    try:
        for s in sweeps:
            kind, values, make = table[s][:3]
            results[s] = sweep(kind, values, make)
    except rc.Interrupted:
        pass
    common = [("policy", "policy", 0), ("tpot_ms", "TPOT ms (decode)", 3),
              ("ttft_ms", "TTFT ms (prefill)", 3), ("air_ms", "air interface ms", 3),
              ("reduction_pct", f"TPOT reduction vs {policies[0]} %", 1),
              ("experts_per_token", "experts/token", 3),
              ("replaced", "experts replaced (outage)", 1), ("dropped", "experts dropped", 1),
              ("mean_snr_db", "mean SNR dB", 1), ("mean_rate_mbps", "mean rate Mbit/s", 1),
              ("seeds", "seeds", 0)]
    notes = [f"model: {a.model}; base scenario: {a.scenario}; task: {a.task}, {a.limit} items; "
             f"{len(seeds)} channel seeds, mean ± half-width of the 95 % CI (t-distribution)",
             "TPOT: decode steps only; TTFT: the prompt's prefill; never averaged together",
             "SNR: Shannon-equivalent of the emulated channel's mean full-band rate, "
             "averaged over devices and both directions"]
    if runner.stop:
        notes.append("interrupted: the rows above are the runs that completed")
    distances = [dev.get("distance_m") for dev in base.get("devices", [])]
    for s in sweeps:
        if s not in results:
            continue
        kind, _, _, head, title = table[s]
        extra_notes = [f"base distances (m): {distances}"] if s == "distance" else []
        digits = 2 if s in ("distance", "mix") else 0
        rc.write_tables(a.out, s, title, [(kind, head, digits)] + common, results[s],
                        notes + extra_notes,
                        {"model": a.model, "scenario": a.scenario, "policies": policies,
                         "seeds": seeds})
        rc.plot("plot_bandwidth.py", os.path.join(a.out, s + ".json"),
                os.path.join(a.out, s + ".png"))
    return 130 if runner.stop else 0


if __name__ == "__main__":
    sys.exit(main())
